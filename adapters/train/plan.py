"""What a variant will be before it trains: its schedule and its size, in numbers and words.

The schedule is what the deciders decide, read from them: the auto schedule's choice
(`Variant.scheduled`) and the Trainer's step arithmetic (`training.planned_steps`). The size is
counted from the variant's compiled `LoraConfig` (`equalizer.compile_lora_config` on the base's
`TuningMap`), module by module as PEFT matches them, and set against the uniform preset at the
same rank, so a grid that makes the adapter much smaller or larger says so. The time is an
estimate only when a measured speed is given. Nothing here trains, and nothing here chooses a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adapters.shape.variants import Variant

SIZE_WARNING = 2.0  # a grid whose adapter is over 2x (or under 1/2) the uniform preset's size is flagged


@dataclass(frozen=True)
class AdapterSize:
    """How big an adapter is: trainable LoRA parameters, the sum of its modules' ranks, its modules."""

    params: int
    total_rank: int
    modules: int

    @property
    def mean_rank(self) -> float:
        return self.total_rank / self.modules if self.modules else 0.0


def adapter_size(config, tmap) -> AdapterSize:
    """The size of the adapter `config` (a compiled `LoraConfig`) puts on the model `tmap` describes:
    each tuning point PEFT's own matching targets counts its rank x (in + out) features."""
    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.other import get_pattern_key

    params = total = modules = 0
    for cell in tmap.cells:
        name = _member(tmap, cell)
        if not check_target_module_exists(config, name):
            continue
        rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
        params += rank * cell.lora_params_per_rank
        total += rank
        modules += 1
    return AdapterSize(params, total, modules)


def _member(tmap, cell) -> str:
    """A real module name for a tuning point: a grouped one (experts.*.w1) stands for its first member."""
    depth = len(tmap.layers_path.split("."))
    parts = cell.name.split(".")
    return ".".join(str(cell.layer) if i == depth and p == "*" else "0" if p == "*" else p
                    for i, p in enumerate(parts))


@dataclass(frozen=True)
class Plan:
    """One variant as it will train on a given number of rows."""

    name: str
    steps: int
    epochs: float | None  # None when max_steps decides
    learning_rate: float
    rank: int
    auto: tuple[str, ...]  # which of steps / learning_rate / rank the auto schedule chose
    reason: str | None  # the auto schedule's reason, None when everything was given
    size: AdapterSize
    uniform: AdapterSize  # the uniform preset at the same rank, for comparison
    seconds: float | None  # an estimate at a measured speed; None without one

    @property
    def size_ratio(self) -> float:
        return self.size.params / self.uniform.params if self.uniform.params else 1.0

    @property
    def size_warning(self) -> str | None:
        """Words for a grid that makes the adapter much smaller or larger than the uniform preset."""
        ratio = self.size_ratio
        if 1 / SIZE_WARNING <= ratio <= SIZE_WARNING:
            return None
        return f"{ratio:.2g}x the uniform preset's size (mean rank {self.size.mean_rank:.1f} of {self.rank})"


def plan_variant(variant: Variant, base, rows: int, bands: int, examples_per_s: float | None = None) -> Plan:
    """The plan of `variant` on the loaded `base` (a `loading.LoadedModel`) for `rows` training rows
    (the stream is the variant's mix size when it sets one); `examples_per_s`, a speed measured on
    this machine, gives the time estimate."""
    from adapters.shape.equalizer import compile_lora_config, preset

    from .training import planned_steps, resolve_equalizer

    scheduled, reason = variant.scheduled(rows)
    h, given = scheduled.hyper, variant.hyper
    eq, tmap = resolve_equalizer(base, scheduled, bands)
    size = adapter_size(compile_lora_config(eq, tmap, rank=h.rank, alpha=h.alpha, dropout=h.dropout), tmap)
    flat = preset("uniform", tmap, eq.bands)
    uniform = adapter_size(compile_lora_config(flat, tmap, rank=h.rank, alpha=h.alpha, dropout=h.dropout), tmap)
    steps = planned_steps(h, variant.mix.size or rows)
    auto = tuple(k for k, v in (("steps", given.epochs is None and given.max_steps is None),
                                ("learning_rate", given.learning_rate is None), ("rank", given.rank is None)) if v)
    examples = steps * h.batch_size * h.grad_accum
    seconds = examples / examples_per_s if examples_per_s else None
    return Plan(variant.name, steps, None if h.max_steps is not None else h.epochs, h.learning_rate, h.rank, auto,
                reason, size, uniform, seconds)


def human_count(n: int) -> str:
    """1234567 -> '1.2 M' (parameters as people say them)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---- what may train here -----------------------------------------------------------------------


def check_variant(base, variant: Variant, rows: int, limits=None, longest: int | None = None) -> None:
    """A variant within the limits on this base (a `loading.LoadedModel`) for `rows` training rows:
    its hyperparameters, each place's rank against that module's size, and the training memory
    (with `longest`, the longest example in tokens). The CLI and the web app both run it before a
    run starts or grows."""
    from dataclasses import asdict

    from adapters.limits import Limits, check_hyper, check_ranks, check_training_memory, training_memory

    from .training import resolve_equalizer

    limits = limits or Limits()
    hyper = variant.scheduled(rows)[0].hyper
    check_hyper(hyper, limits)
    eq, tmap = resolve_equalizer(base, variant)
    cells = [asdict(c) for c in tmap.cells]
    check_ranks(cells, eq, hyper.rank)
    estimate = training_memory(cells, eq, hyper, base.memory_bytes, base.model.config, longest)
    check_training_memory(estimate, limits)


def check_run_size(held: int, adding: int, limits=None, what: str = "the run", then: str = "") -> None:
    """A run holds at most `limits.variants` variants: `held` already there (or listed), `adding`
    more; `then` ends the refusal with what to do instead."""
    from adapters.errors import LoraEqError
    from adapters.limits import Limits

    limits = limits or Limits()
    if held + adding > limits.variants:
        raise LoraEqError(f"{what} would hold {held + adding} variants: {limits.variants} variants is the limit "
                          f"for one run{then}")


def extend_run(run_dir, variants: list[Variant], base, limits=None) -> list[str]:
    """Add `variants` to an existing run, checked as a new run's are (limits, ranks, memory, the
    number of variants), each drawing the run's data mix unless it has its own; their folder names."""
    from adapters.train.dataspec import DataSpec, with_mix
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import add_variants

    folder = RunFolder.open(run_dir)
    check_run_size(len(folder.variants), len(variants), limits, folder.path.name)
    rows = folder.data.get("train_rows") or 1
    for v in variants:
        check_variant(base, v, rows, limits)
    return add_variants(folder.path, with_mix(variants, DataSpec.from_json(folder.data["spec"]).mix))
