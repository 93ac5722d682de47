"""Limits on every size a user controls, checked before any work starts.

A server shared by several people must refuse a request that would take all of its memory or
time (a mixture stream of 10^9 examples, LoRA rank 100,000, 10^9 steps, 10^7 new tokens, a file
of 10^6 rows, a YAML alias bomb) at once, with a message that names the limit, instead of
starting it and dying. The time a job, a check or the reading of an upload may take is declared
here too; the job line, the eval-set run and the app apply those. `Limits` holds the
numbers (defaults fit a 16 GB machine; each can be changed through the environment); the
`check_*` functions raise `LoraEqError` naming the value and the limit. Training memory is an
estimate (weights, LoRA parameters with their optimizer state, activations per token) compared
with the memory a worker may use. This module does not enforce anything at run time (the web
app's job runner watches its workers' memory).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from .errors import LoraEqError

GB = 1 << 30
MB = 1 << 20
ENV_PREFIX = "LORAEQ_LIMIT_"


def total_memory() -> int:
    """Physical memory of this machine in bytes (16 GB when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * GB


def available_memory() -> int:
    """Memory the kernel says can be used now without swapping (MemAvailable), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return total_memory() // 2


@dataclass(frozen=True)
class Limits:
    """The largest value a user may ask for, per kind of request."""

    stream_size: int = 100_000  # examples in a previewed or trained mixture stream
    steps: int = 20_000  # optimizer steps of one variant
    epochs: float = 50.0  # passes over the training data
    rank: int = 512  # LoRA rank at strength 1 (also at most each module's smaller dimension)
    batch_size: int = 64
    max_length: int = 8192  # tokens per training example
    variants: int = 8  # variants in one training run
    columns: int = 8  # columns answering side by side (the base included)
    new_tokens: int = 2048  # tokens generated per answer
    prompt_chars: int = 20_000  # characters of one message
    text_chars: int = 2_000  # a name, a model id, a mapping, a note
    upload_bytes: int = 200 * MB  # one uploaded file
    session_bytes: int = 1 * GB  # everything one session has uploaded (and one client's uploads in the file cache)
    cache_bytes: int = 10 * GB  # all uploads waiting in the web app's file cache together
    adapter_bytes: int = 512 * MB  # one outside adapter (a zip, and what it unpacks to)
    adapter_members: int = 64  # files in one adapter zip (an adapter has a handful)
    worker_bytes: int = 0  # memory a worker process may use; 0: 80% of this machine's memory
    rows: int = 100_000  # rows in one user file: data, eval sets, sweeps, users files
    yaml_bytes: int = 2 * MB  # one YAML file (an eval set's promptfoo config, a sweep)
    yaml_nodes: int = 100_000  # YAML nodes once aliases are expanded (an alias bomb has billions)
    parse_seconds: float = 120.0  # reading and validating one upload, off the request thread
    parse_bytes: int = 4 * GB  # memory that reading one upload may use
    check_seconds: float = 2.0  # one eval-set check on one answer (a runaway regex fails its cell)
    train_seconds: float = 12 * 3600.0  # wall clock of one training job
    proof_seconds: float = 6 * 3600.0  # wall clock of one proof job
    evalset_seconds: float = 3 * 3600.0  # wall clock of one eval-set job
    search_seconds: float = 12 * 3600.0  # wall clock of one search job (its trials and the confirmation)
    jobs_waiting: int = 2  # jobs one user (a session or a login) may have waiting in the job line
    login_failures: int = 5  # wrong passwords (per user name, and per client address) before a lockout
    login_lockout_s: float = 60.0  # the first lockout; each further one in a row doubles it (at most an hour)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> Limits:
        """Defaults, then LORAEQ_LIMIT_<NAME> variables (e.g. LORAEQ_LIMIT_WORKER_BYTES=4e9), then overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw:
                try:
                    number = float(raw)
                except ValueError:
                    raise LoraEqError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: must be a number") from None
                values[f.name] = number if f.type == "float" else int(number)
        return cls(**{**values, **overrides})

    def to_env(self) -> dict[str, str]:
        """These limits as LORAEQ_LIMIT_<NAME> variables: a worker process the app starts reads them
        back with `from_env`, so it runs under the app's limits."""
        return {env_name(f.name): repr(getattr(self, f.name)) for f in fields(self)}

    @property
    def worker_memory(self) -> int:
        return self.worker_bytes or int(0.8 * total_memory())

    def job_seconds(self, kind: str) -> float:
        """The wall-clock limit of a job of `kind` (train, proof, evalset, search)."""
        return float(getattr(self, f"{kind}_seconds", self.train_seconds))


def env_name(limit: str) -> str:
    """The variable that sets a limit, named in refusals (`rows` -> LORAEQ_LIMIT_ROWS)."""
    return ENV_PREFIX + limit.upper()


def check_rows(count: int, limit: int, where: str) -> None:
    """Refuse a file of more than `limit` rows (`count` may stop at limit + 1: the reader stops there)."""
    if count > limit:
        raise LoraEqError(f"{where}: more than {limit:,} rows, over the limit of {limit:,} rows "
                          f"({env_name('rows')})")


def finite_number(name: str, value) -> float:
    """`value` (a number or its text) as a finite float, or a LoraEqError naming `name` and the value."""
    if isinstance(value, bool):
        raise LoraEqError(f"{name}={value!r}: not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LoraEqError(f"{name}={value!r}: not a number") from None
    if not math.isfinite(number):
        raise LoraEqError(f"{name}={value!r}: not a finite number")
    return number


def check_number(name: str, value, limit: float, *, minimum: float = 0, whole: bool = True):
    """`value` as a number within [minimum, limit], or a LoraEqError naming the value and the limit."""
    if value is None or isinstance(value, bool):
        raise LoraEqError(f"{name}: a number is needed (got {value!r})")
    number = finite_number(name, value)
    if whole and number != int(number):
        raise LoraEqError(f"{name}={value!r}: must be a whole number")
    if number < minimum:
        raise LoraEqError(f"{name}={_show(number)}: must be at least {_show(minimum)}")
    if number > limit:
        raise LoraEqError(f"{name}={_show(number)}: over the limit of {_show(limit)}")
    return int(number) if whole else number


def check_text(name: str, value, limit: int, *, required: bool = False) -> str:
    """`value` as a string of at most `limit` characters ('' for None unless required)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise LoraEqError(f"{name}: text is needed (got {type(value).__name__})")
    if len(value) > limit:
        raise LoraEqError(f"{name}: {len(value):,} characters, over the limit of {limit:,}")
    if required and not value.strip():
        raise LoraEqError(f"{name}: must not be empty")
    return value


def context_length(model) -> int | None:
    """How many tokens the model reads at most (prompt + answer), when its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_new_tokens(value, limits: Limits, model=None) -> int:
    """Max new tokens within the server's limit and the model's context."""
    limit = limits.new_tokens
    context = context_length(model) if model is not None else None
    if context:
        limit = min(limit, context - 1)
    return check_number("max new tokens", value, limit, minimum=1)


def check_hyper(hyper, limits: Limits) -> None:
    """Steps, epochs, rank, batch size and example length of a variant within the limits."""
    if hyper.rank is not None:
        check_number("rank", hyper.rank, limits.rank, minimum=1)
    check_number("batch size", hyper.batch_size, limits.batch_size, minimum=1)
    check_number("max length", hyper.max_length, limits.max_length, minimum=8)
    if hyper.epochs is not None:
        check_number("epochs", hyper.epochs, limits.epochs, whole=False)
    if hyper.max_steps is not None:
        check_number("max steps", hyper.max_steps, limits.steps)


def check_ranks(cells: list[dict], equalizer, rank: int) -> None:
    """Each place's rank (rank x its strength) at most the smaller side of its weight matrix:
    a larger rank adds parameters that cannot add anything."""
    for cell in cells:
        strength = equalizer.strength(cell["layer"], cell["role"])
        if strength <= 0:
            continue
        r = max(1, round(rank * strength))
        side = min(cell["in_features"], cell["out_features"])
        if r > side:
            raise LoraEqError(f"rank {rank} x strength {strength:g} = {r} at layer {cell['layer']} {cell['role']}: "
                              f"over that module's smaller dimension ({side}); choose rank <= {int(side / strength)}")


@dataclass(frozen=True)
class MemoryEstimate:
    base: int
    lora: int
    activations: int

    @property
    def total(self) -> int:
        return self.base + self.lora + self.activations


ACTIVATION_BUDGET_ENV = "LORAEQ_ACTIVATION_BUDGET_GB"
ACTIVATION_BUDGET_GB = 2.5  # above this estimate, training recomputes each layer's activations instead
LOSS_CHUNK = 512  # labelled positions whose logits exist at once (label_loss.py)


def _sizes(config) -> tuple[int, int, int, int]:
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1024)
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    return hidden, inner, layers, getattr(config, "vocab_size", 32_000)


def activation_bytes(config, tokens: int, checkpointing: bool | int = False, value_bytes: int = 4) -> int:
    """Activations kept for the backward pass of one batch of `tokens` tokens, for LoRA layers that
    compute through `lora_train` (on SmolLM2-135M in bf16 the backward keeps 27 KB per token and
    layer, this rule says 34 KB; tests/test_training_memory.py checks the margin). Per token, a
    decoder layer keeps ~8 hidden-sized and ~5 MLP-sized values of `value_bytes` each (2 under
    bf16, 4 in fp32), its two norms' fp32 inputs, and a byte per value of each LoRA layer's input
    for its dropout mask. A layer that recomputes them (`checkpointing`:
    True for every layer, or how many) keeps only its input, plus one layer's worth while it is
    recomputed; the output layer's logits exist for one chunk of labelled positions at a time, 3
    fp32 vocabulary-sized values each."""
    hidden, inner, layers, vocab = _sizes(config)
    layer = value_bytes * (8 * hidden + 5 * inner) + 4 * 2 * hidden + (6 * hidden + inner)
    recomputed = layers if checkpointing is True else min(int(checkpointing), layers)
    kept = tokens * ((layers - recomputed) * layer + recomputed * value_bytes * hidden + (layer if recomputed else 0))
    return kept + min(tokens, LOSS_CHUNK) * 12 * vocab


def activation_budget() -> float:
    raw = os.environ.get(ACTIVATION_BUDGET_ENV)
    if raw is None:
        return ACTIVATION_BUDGET_GB * GB
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise LoraEqError(f"{ACTIVATION_BUDGET_ENV}={raw!r}: give the activation budget in GB, e.g. 2 or 0.5")
    return value * GB


def layers_to_recompute(config, tokens: int, value_bytes: int = 4) -> int:
    """How many decoder layers recompute their activations for a batch of `tokens` tokens: none when
    its activations fit the budget, else the fewest that make them fit (every layer at most). Each
    recomputed layer costs its forward pass again, so the fewer the faster."""
    budget = activation_budget()
    layers = _sizes(config)[2]
    return next((k for k in range(layers + 1) if activation_bytes(config, tokens, k, value_bytes) <= budget), layers)


def needs_checkpointing(config, tokens: int, value_bytes: int = 4) -> bool:
    """Whether a batch of `tokens` tokens trains with activation checkpointing (in some layers)."""
    return layers_to_recompute(config, tokens, value_bytes) > 0


def training_memory(cells: list[dict], equalizer, hyper, base_bytes: int, config, longest: int | None = None
                    ) -> MemoryEstimate:
    """A rough upper estimate of a training worker's memory: the base, the LoRA parameters with
    their gradients and Adam state (16 bytes each), and activations for a batch of the longest
    example (`activation_bytes`, with checkpointing where training would use it)."""
    params = 0
    for cell in cells:
        strength = equalizer.strength(cell["layer"], cell["role"])
        if strength > 0:
            params += max(1, round(hyper.rank * strength)) * (cell["in_features"] + cell["out_features"])
    tokens = hyper.batch_size * min(hyper.max_length, longest or hyper.max_length)
    activations = activation_bytes(config, tokens, layers_to_recompute(config, tokens))
    return MemoryEstimate(base=int(base_bytes), lora=16 * params, activations=activations)


def check_training_memory(estimate: MemoryEstimate, limits: Limits, available: int | None = None) -> None:
    """Refuse a training whose estimated memory exceeds what a worker may use or what is free."""
    allowed = min(limits.worker_memory, available if available is not None else available_memory())
    if estimate.total > allowed:
        raise LoraEqError(
            f"training would need about {estimate.total / GB:.1f} GB (base {estimate.base / GB:.1f}, "
            f"LoRA + optimizer {estimate.lora / GB:.1f}, activations {estimate.activations / GB:.1f}); "
            f"the limit here is {allowed / GB:.1f} GB: lower the rank, the batch size or max length")


def _show(number: float) -> str:
    return f"{int(number):,}" if number == int(number) and abs(number) < 1e15 else f"{number:g}"
