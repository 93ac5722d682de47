"""Hyperparameters as a form sends them -> a checked `Hyper`, and back.

A form (the web app's Train tab) sends text for the values the auto schedule may choose
("auto" or blank: chosen from the data when training starts), numbers for the others and a
checkbox. `hyper_from_form` checks every value against its limit (`limits.py`) and names the
bad one; `form_from_hyper` gives a variant's values back to fill the form ("copy a variant's
settings"). This module knows no UI toolkit and trains nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adapters.errors import LoraEqError
from adapters.limits import Limits

from .variants import Hyper, Param, check_value, hyper_params

AUTO = "auto"



@dataclass(frozen=True)
class Field:
    """A form field: a `Hyper` field's name with its declaration (`variants.Param`)."""

    name: str
    param: Param

    label = property(lambda self: self.param.label)
    help = property(lambda self: self.param.help)
    whole = property(lambda self: self.param.whole)
    auto = property(lambda self: self.param.auto)


# In the form's order, Hyper's: the number fields, then the true/false ones (a checkbox each).
FIELDS = tuple(Field(name, p) for name, p in hyper_params() if not p.switch)
SWITCHES = tuple(Field(name, p) for name, p in hyper_params() if p.switch)
NAMES = tuple(f.name for f in FIELDS + SWITCHES)


def is_auto(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTO))


def _value(name: str, param: Param, raw, limits: Limits):
    if param.switch:
        return check_value(name, raw, limits)
    if param.auto and is_auto(raw):
        return None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return getattr(Hyper(), name)  # a cleared number field: the default
    return check_value(name, raw.strip() if isinstance(raw, str) else raw, limits)


def hyper_from_form(values: dict, limits: Limits) -> Hyper:
    """A `Hyper` from {field name: what the form sent}; missing fields keep their defaults."""
    params = dict(hyper_params())
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise LoraEqError(f"unknown hyperparameter {unknown[0]!r} (known: {', '.join(NAMES)})")
    return Hyper(**{name: _value(name, params[name], raw, limits) for name, raw in values.items()})


def form_from_hyper(hyper: Hyper | dict) -> dict:
    """The form's values for a variant's hyperparameters: "auto" where the schedule chooses."""
    data = asdict(hyper) if isinstance(hyper, Hyper) else dict(hyper)
    out = {}
    for name, param in hyper_params():
        value = data.get(name, getattr(Hyper(), name))
        if param.switch:
            out[name] = bool(value)
        else:
            out[name] = (AUTO if value is None else str(value)) if param.auto else value
    return out
