"""Variants: a name, an equalizer, hyperparameters and a data mix; sweep files that list them.

A variant says everything needed to train one adapter. This module only describes variants
(dataclasses, JSON/YAML sweep files, a preset x grid generator, safe folder names); training
them is `training.py`. The equalizer may be given as a preset name, resolved against the base
model's roles and bands when the run starts.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from adapters.errors import LoraEqError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"", ".", "..", "data", "checkpoints"}


@dataclass(frozen=True)
class Param:
    """How a hyperparameter meets its users: its label in messages and forms, its help, its bounds
    (`maximum` a number or the name of a `limits.Limits` field), whether it is a whole number,
    whether the auto schedule may choose it, and its command-line flag. Declared once, on `Hyper`'s
    fields; the CLI's flags, the Train tab's form, sweep files and the checks are made from it."""

    label: str
    help: str
    minimum: float = 0
    maximum: float | str = math.inf
    whole: bool = False
    auto: bool = False
    flag: str | None = None  # default: --name-with-dashes
    switch: bool = False  # a true/false setting (a flag without a value)

    def option(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def _param(default, label: str, help: str, **kw):
    return field(default=default, metadata={"param": Param(label, help, **kw)})


@dataclass
class Hyper:
    """Training hyperparameters of one variant. rank, learning_rate and epochs left as None are
    chosen from the data by the auto schedule (`auto_schedule`) when training starts. Each field
    declares how users give it (`Param`); `hyper_from_values` checks a user's values."""

    rank: int | None = _param(None, "rank", "LoRA rank of a cell at strength 1", minimum=1, maximum="rank",
                              whole=True, auto=True)
    learning_rate: float | None = _param(None, "learning rate", "AdamW's peak learning rate", minimum=1e-12,
                                         maximum=1.0, auto=True, flag="--lr")
    epochs: float | None = _param(None, "epochs", "passes over the training stream, unless max steps is set",
                                  maximum="epochs", auto=True)
    max_steps: int | None = _param(None, "max steps", "optimizer steps; overrides epochs when set", maximum="steps",
                                   whole=True, auto=True)
    alpha: float = _param(16.0, "alpha", "LoRA alpha of a cell at strength 1 (scaling alpha / rank)", minimum=1e-6,
                          maximum=65536.0)
    batch_size: int = _param(8, "batch size", "examples per optimizer step (before accumulation)", minimum=1,
                             maximum="batch_size", whole=True)
    grad_accum: int = _param(1, "gradient accumulation", "batches summed into one optimizer step", minimum=1,
                             maximum=1024, whole=True)
    max_length: int = _param(512, "max length", "tokens per example; longer ones are cut (and reported)", minimum=8,
                             maximum="max_length", whole=True)
    dropout: float = _param(0.05, "dropout", "LoRA dropout", maximum=0.99)
    warmup_ratio: float = _param(0.03, "warmup ratio", "share of the steps spent warming up", maximum=0.99)
    weight_decay: float = _param(0.0, "weight decay", "AdamW weight decay", maximum=10.0)
    save_steps: int = _param(25, "save steps", "checkpoint interval in steps, for resume after a crash", minimum=1,
                             maximum="steps", whole=True)
    seed: int = _param(0, "training seed", "seed of the LoRA initialization, the dropout masks and the batch order",
                       maximum=2**31 - 1, whole=True)
    early_stopping: bool = _param(False, "early stopping", "stop when the held-out loss (measured during training) "
                                  "stops improving; keep the best weights", switch=True)

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "grad_accum", "max_length", "save_steps")
        if self.rank is not None:
            _positive(self, "rank")
        for name in ("alpha", "learning_rate"):
            value = getattr(self, name)
            if (value is not None or name == "alpha") and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoraEqError(f"{name}={value!r}: must be a positive number")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and self.epochs >= 0):
            raise LoraEqError(f"epochs={self.epochs!r}: must be >= 0")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 0):
            raise LoraEqError(f"max_steps={self.max_steps!r}: must be a whole number >= 0")
        if not 0 <= self.dropout < 1:
            raise LoraEqError(f"dropout={self.dropout!r}: must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise LoraEqError(f"warmup_ratio={self.warmup_ratio!r}: must be in [0, 1)")
        if not isinstance(self.early_stopping, bool):
            raise LoraEqError(f"early_stopping={self.early_stopping!r}: must be true or false")


    @property
    def is_auto(self) -> bool:
        return self.rank is None or self.learning_rate is None or (self.epochs is None and self.max_steps is None)


def hyper_params() -> list[tuple[str, Param]]:
    """Every hyperparameter of `Hyper` with its declaration, in declaration order."""
    return [(f.name, f.metadata["param"]) for f in fields(Hyper)]


def check_value(name: str, value, limits=None):
    """One hyperparameter's value as given (a number, True/False, None for auto), checked against
    its declaration and `limits`; the message names its label and the bound."""
    from adapters.limits import Limits, check_number

    param = dict(hyper_params()).get(name)
    if param is None:
        known = ", ".join(n for n, _ in hyper_params())
        raise LoraEqError(f"unknown hyperparameter {name!r} (known: {known})")
    if param.switch:
        if not isinstance(value, bool):
            raise LoraEqError(f"{param.label}={value!r}: must be true or false")
        return value
    if value is None and param.auto:
        return None
    limits = limits or Limits()
    maximum = getattr(limits, param.maximum) if isinstance(param.maximum, str) else param.maximum
    return check_number(param.label, value, maximum, minimum=param.minimum, whole=param.whole)


def hyper_from_values(values: dict, limits=None) -> Hyper:
    """A checked `Hyper` from {field name: value} as a user gave it (CLI flags, a sweep file's
    `hyper`, the form once its text is read); missing fields keep their defaults. The CLI, the form
    and a sweep file give the same message for the same bad value."""
    return Hyper(**{name: check_value(name, value, limits) for name, value in values.items()})


# The auto schedule, measured on invented catalogs and fact sets (numbers, years, dates, codes,
# names) and the shipped samples (benchmarks/calibrate_proof.py, wording set "a"): a small set's
# facts show in answers to new wordings only after every row was seen about a dozen times at a
# high learning rate (96 rows of prices and years: 8 passes at 1e-3 stated 17-58% of the held-out
# numbers, 12 passes at 2e-3 all of them); a large set is learned in one pass at the usual rate
# and overfits with more. Between 500 and 5,000 rows both fall log-linearly.
AUTO_TARGET_STEPS = 100  # optimizer steps a small set gets at least (as many whole epochs as come closest)
AUTO_EPOCHS_SMALL = 12  # passes over a set of <= 500 rows (at least; more for a tiny set, up to AUTO_MAX_EPOCHS)
AUTO_MAX_EPOCHS = 16
AUTO_MAX_STEPS = 300  # no more optimizer steps than this from the epochs rule (a large set's one epoch may be more)
AUTO_RANK = 16
AUTO_LR_SMALL, AUTO_LR_LARGE = 2e-3, 2e-4  # at <= 500 rows, and at >= 5,000 (log-linear between)
_SMALL_ROWS, _LARGE_ROWS = 500, 5000


def _between(rows: int, small: float, large: float) -> float:
    """`small` at <= 500 rows, `large` at >= 5,000, log-linear in the rows between."""
    if rows <= _SMALL_ROWS:
        return small
    if rows >= _LARGE_ROWS:
        return large
    share = math.log(rows / _SMALL_ROWS) / math.log(_LARGE_ROWS / _SMALL_ROWS)
    return small * (large / small) ** share


def auto_learning_rate(rows: int) -> float:
    return float(f"{_between(rows, AUTO_LR_SMALL, AUTO_LR_LARGE):.2g}")


def auto_epochs(rows: int, per_epoch: int) -> float:
    """Whole passes over `rows` training rows (`per_epoch` optimizer steps each): about a dozen for a
    small set (more for a tiny one, to reach AUTO_TARGET_STEPS), one for a large one, and no more
    than AUTO_MAX_STEPS steps' worth."""
    least = max(1, round(_between(rows, AUTO_EPOCHS_SMALL, 1)))
    epochs = min(AUTO_MAX_EPOCHS, max(least, round(AUTO_TARGET_STEPS / per_epoch)))
    return float(max(1, min(epochs, AUTO_MAX_STEPS // per_epoch)))


def auto_schedule(hyper: Hyper, rows: int) -> tuple[Hyper, str | None]:
    """`hyper` with its unset values chosen for `rows` training examples, and the reason in words
    (None when nothing was left to choose)."""
    if not hyper.is_auto:
        return hyper, None
    rows = max(1, int(rows))
    chosen: dict = {}
    if hyper.rank is None:
        chosen["rank"] = AUTO_RANK
    if hyper.learning_rate is None:
        chosen["learning_rate"] = auto_learning_rate(rows)
    per_epoch = math.ceil(rows / (hyper.batch_size * hyper.grad_accum))
    if hyper.epochs is None and hyper.max_steps is None:
        chosen["epochs"] = auto_epochs(rows, per_epoch)
    resolved = Hyper(**{**asdict(hyper), **chosen})
    if resolved.max_steps is not None:
        length = f"{resolved.max_steps} steps"
    else:
        plural = "" if resolved.epochs == 1 else "s"
        length = f"{resolved.epochs:g} epoch{plural} = {math.ceil(resolved.epochs * per_epoch)} steps"
    return resolved, (f"auto: {length}, lr {resolved.learning_rate:g}, rank {resolved.rank}, "
                      f"because {rows} training rows")


@dataclass
class DataMix:
    """How the training stream is drawn from the categories of the data."""

    weights: dict[str, float] | None = None  # category -> proportion (normalized)
    quotas: dict[str, int] | None = None  # category -> at least N per 1000 examples
    size: int | None = None  # stream length; default: the training split's size
    seed: int = 0

    def __post_init__(self) -> None:
        for name, mapping in (("weights", self.weights), ("quotas", self.quotas)):
            for key, value in (mapping or {}).items():
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                    raise LoraEqError(f"{name}[{key!r}]={value!r}: must be a number >= 0")
        if sum((self.quotas or {}).values()) > 1000:
            raise LoraEqError(f"quotas add up to {sum(self.quotas.values())} per 1000: more than 1000")
        if self.size is not None and not (isinstance(self.size, int) and self.size > 0):
            raise LoraEqError(f"size={self.size!r}: must be a whole number > 0")

    @property
    def active(self) -> bool:
        return bool(self.weights or self.quotas or self.size)


@dataclass
class Variant:
    """One adapter to train: a name, an equalizer (preset name or grid JSON), hyperparameters, a mix."""

    name: str
    equalizer: str | dict = "uniform"
    hyper: Hyper = field(default_factory=Hyper)
    mix: DataMix = field(default_factory=DataMix)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise LoraEqError(f"variant name {self.name!r}: must be a non-empty string")
        if isinstance(self.hyper, dict):
            self.hyper = _build(Hyper, self.hyper, f"variant {self.name!r} hyper")
        if isinstance(self.mix, dict):
            self.mix = _build(DataMix, self.mix, f"variant {self.name!r} mix")
        if not isinstance(self.equalizer, (str, dict)):
            raise LoraEqError(f"variant {self.name!r}: equalizer must be a preset name or a grid object")

    def to_json(self) -> dict:
        return asdict(self)

    def scheduled(self, rows: int) -> tuple["Variant", str | None]:
        """This variant with its hyperparameters resolved for `rows` training examples (see `auto_schedule`)."""
        hyper, reason = auto_schedule(self.hyper, rows)
        return Variant(self.name, self.equalizer, hyper, self.mix), reason

    @classmethod
    def from_json(cls, data: dict) -> "Variant":
        if not isinstance(data, dict):
            raise LoraEqError(f"a variant must be an object, got {type(data).__name__}")
        return _build(cls, data, f"variant {data.get('name', '?')!r}")


def _positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise LoraEqError(f"{name}={value!r}: must be a whole number > 0")


def _build(cls, data: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LoraEqError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        return cls(**data)
    except TypeError as e:
        raise LoraEqError(f"{where}: {e}") from None


def safe_name(name: str, taken: set[str] | None = None) -> str:
    """A folder name for a variant: no path separators or traversal, unique among `taken`."""
    base = _SAFE.sub("-", name.strip()).strip(".-")[:64] or "variant"
    if base.lower() in _RESERVED:
        base = f"variant-{base}".strip(".-")
    candidate, n = base, 2
    while taken is not None and candidate.lower() in {t.lower() for t in taken}:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def load_sweep(path: str | Path) -> list[Variant]:
    """Variants from a YAML or JSON file: a list, or an object with `variants` (and optional
    `defaults` merged into each variant's `hyper`), each variant's hyperparameters checked as the
    CLI's flags and the Train tab's form are (`hyper_from_values`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LoraEqError(f"{path}: cannot read the sweep file ({e})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            from adapters.files.yamlfile import load_yaml

            data = load_yaml(text, str(path))
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise different error types
        raise LoraEqError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({str(e).splitlines()[0]})") from None
    defaults = {}
    if isinstance(data, dict):
        defaults = data.get("defaults") or {}
        data = data.get("variants")
    if not isinstance(data, list) or not data:
        raise LoraEqError(f"{path}: expected a non-empty list of variants (or an object with 'variants')")
    variants = []
    for i, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise LoraEqError(f"{path}: variant {i} must be an object")
        hyper = {**defaults, **(item.get("hyper") or {})}
        if not isinstance(hyper, dict):
            raise LoraEqError(f"{path}: variant {i}: hyper must be an object of hyperparameters")
        try:
            checked = hyper_from_values(hyper)  # the CLI's and the form's checks, with their messages
        except LoraEqError as e:
            raise LoraEqError(f"{path}: variant {i} {item.get('name', '')!r}: {e}") from None
        variants.append(Variant.from_json({**item, "hyper": asdict(checked)}))
    return variants


def sweep_from_presets(presets: list[str], grid: dict[str, list] | None = None, base: Hyper | None = None) -> list[Variant]:
    """Every preset x every combination of the hyperparameter grid, named after both."""
    grid = grid or {}
    keys = sorted(grid)
    base_json = asdict(base or Hyper())
    variants = []
    for preset in presets:
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            hyper = {**base_json, **dict(zip(keys, values))}
            suffix = "".join(f"-{k}{v}" for k, v in zip(keys, values))
            variants.append(Variant(name=f"{preset}{suffix}", equalizer=preset, hyper=Hyper(**hyper)))
    return variants
