"""Hyperparameters as a form sends them -> a checked `Hyper`, and back.

A form (the web app's Train tab) sends text for the values the auto schedule may choose
("auto" or blank: chosen from the data when training starts), numbers for the others and a
checkbox. `hyper_from_form` checks every value against its limit (`limits.py`) and names the
bad one; `form_from_hyper` gives a variant's values back to fill the form ("copy a variant's
settings"). This module knows no UI toolkit and trains nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import LoraEqError
from .limits import Limits, check_number
from .variants import Hyper

AUTO = "auto"


@dataclass(frozen=True)
class Field:
    name: str  # the Hyper field
    label: str  # how messages (and the form) name it
    whole: bool
    minimum: float
    maximum: object  # a number, or the name of a `Limits` field
    auto: bool = False  # blank / "auto" leaves it to the auto schedule


# In the form's order. The CLI's flags set the same fields (`loraeq train --help`).
FIELDS = (
    Field("rank", "rank", True, 1, "rank", auto=True),
    Field("learning_rate", "learning rate", False, 1e-12, 1.0, auto=True),
    Field("epochs", "epochs", False, 0, "epochs", auto=True),
    Field("max_steps", "max steps", True, 0, "steps", auto=True),
    Field("alpha", "alpha", False, 1e-6, 65536.0),
    Field("batch_size", "batch size", True, 1, "batch_size"),
    Field("grad_accum", "gradient accumulation", True, 1, 1024),
    Field("max_length", "max length", True, 8, "max_length"),
    Field("dropout", "dropout", False, 0, 0.99),
    Field("warmup_ratio", "warmup ratio", False, 0, 0.99),
    Field("weight_decay", "weight decay", False, 0, 10.0),
    Field("save_steps", "save steps", True, 1, "steps"),
    Field("seed", "seed", True, 0, 2**31 - 1),
)
NAMES = tuple(f.name for f in FIELDS) + ("early_stopping",)


def is_auto(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTO))


def _limit(field: Field, limits: Limits) -> float:
    return getattr(limits, field.maximum) if isinstance(field.maximum, str) else field.maximum


def _value(field: Field, raw, limits: Limits):
    if field.auto and is_auto(raw):
        return None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return getattr(Hyper(), field.name)  # a cleared number field: the default
    raw = raw.strip() if isinstance(raw, str) else raw
    return check_number(field.label, raw, _limit(field, limits), minimum=field.minimum, whole=field.whole)


def hyper_from_form(values: dict, limits: Limits) -> Hyper:
    """A `Hyper` from {field name: what the form sent}; missing fields keep their defaults."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise LoraEqError(f"unknown hyperparameter {unknown[0]!r} (known: {', '.join(NAMES)})")
    chosen = {f.name: _value(f, values[f.name], limits) for f in FIELDS if f.name in values}
    if "early_stopping" in values:
        flag = values["early_stopping"]
        if not isinstance(flag, bool):
            raise LoraEqError(f"early stopping={flag!r}: must be true or false")
        chosen["early_stopping"] = flag
    return Hyper(**chosen)


def form_from_hyper(hyper: Hyper | dict) -> dict:
    """The form's values for a variant's hyperparameters: "auto" where the schedule chooses."""
    data = asdict(hyper) if isinstance(hyper, Hyper) else dict(hyper)
    out = {}
    for f in FIELDS:
        value = data.get(f.name)
        out[f.name] = (AUTO if value is None else str(value)) if f.auto else value
    out["early_stopping"] = bool(data.get("early_stopping", False))
    return out
