"""The space a search for the tuning set samples: hyperparameters and equalizer shapes.

Hyperparameters are `Hyper` fields: each range lies within the field's declared bounds
(`variants.check_value`), so a value the search draws is one `loraeq train` would take. Equalizer
shapes have five dimensions a person can read: the strength of the early, middle and late thirds
of the depth, and of the attention and MLP role groups. A cell's strength is its depth third's
strength times its role group's (a role in neither group takes the mean of the two), so the
presets are points of the space (`preset_point`), and the grid keeps the run's bands and roles.

`SearchSpace.parse` takes a user's settings, `name=value` (fixed) or `name=low:high` (narrowed),
and refuses what cannot be searched in one line naming the setting. `sample` draws one point
through anything with Optuna's `suggest_int` / `suggest_float` (an Optuna trial); `variant_for`
turns a point into the variant to train. Nothing here trains or scores.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from adapters.errors import LoraEqError
from adapters.limits import finite_number

from .equalizer import PRESETS, Equalizer, _band_curve, role_families
from .variants import Hyper, Variant, check_value, hyper_params

DEPTH = ("depth_early", "depth_middle", "depth_late")
GROUPS = ("attention", "mlp")
SHAPE = DEPTH + GROUPS
SHAPE_MAX = 2.0  # strength 2 doubles a place's rank and alpha (equalizer.cell_rank_alpha)


@dataclass(frozen=True)
class Range:
    """A closed range of one setting; `low == high` fixes it. `log`: sampled on a log scale."""

    low: float
    high: float
    log: bool = False
    whole: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def text(self) -> str:
        return f"{self.low:g}" if self.fixed else f"{self.low:g}:{self.high:g}"


# What a search tries unless told otherwise: wide enough to hold what works on small fact sets
# (the auto schedule's rank 16, learning rates 1e-3 to 2e-3, 3-12 epochs) and what does not.
DEFAULT_RANGES: dict[str, Range] = {
    "rank": Range(4, 64, log=True, whole=True),
    "learning_rate": Range(1e-4, 5e-3, log=True),
    "epochs": Range(2, 16, log=True),
    "alpha": Range(4, 64, log=True),
    "dropout": Range(0.0, 0.2),
    **{name: Range(0.0, SHAPE_MAX) for name in SHAPE},
}
SEARCHABLE = tuple(DEFAULT_RANGES)


@dataclass(frozen=True)
class SearchSpace:
    ranges: dict[str, Range]

    @classmethod
    def default(cls) -> SearchSpace:
        return cls(dict(DEFAULT_RANGES))

    @classmethod
    def parse(cls, settings: list[str] | dict | None = None, limits=None) -> SearchSpace:
        """The default space with the user's settings: `name=value` fixes a setting, `name=low:high`
        narrows (or widens, within its declared bounds) its range. A dict maps names to a value or a
        (low, high) pair."""
        items = settings.items() if isinstance(settings, dict) else (_split(s) for s in settings or [])
        ranges = dict(DEFAULT_RANGES)
        for name, value in items:
            if name not in DEFAULT_RANGES:
                raise LoraEqError(f"unknown search setting {name!r} (known: {', '.join(SEARCHABLE)})")
            low, high = _bounds(name, value)
            ranges[name] = _checked(name, replace(DEFAULT_RANGES[name], low=low, high=high), limits)
        return cls(ranges)

    @property
    def searched(self) -> list[str]:
        """The settings the search varies (not fixed)."""
        return [name for name, r in self.ranges.items() if not r.fixed]

    def to_json(self) -> dict:
        return {name: r.text() for name, r in self.ranges.items()}

    def sample(self, trial) -> dict[str, float]:
        """One point: fixed settings as given, the others drawn by `trial` (an Optuna trial)."""
        point = {}
        for name, r in self.ranges.items():
            if r.fixed:
                point[name] = int(r.low) if r.whole else r.low
            elif r.whole:
                point[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
            else:
                point[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        return point


def _split(setting: str) -> tuple[str, str]:
    name, sep, value = str(setting).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise LoraEqError(f"search setting {setting!r}: write name=value or name=low:high")
    return name.strip(), value.strip()


def _number(name: str, text) -> float:
    return finite_number(f"search setting {name}", text)


def _bounds(name: str, value) -> tuple[float, float]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise LoraEqError(f"search setting {name}={list(value)!r}: give a value or [low, high]")
        return _number(name, value[0]), _number(name, value[1])
    if isinstance(value, str) and ":" in value:
        low, _, high = value.partition(":")
        return _number(name, low), _number(name, high)
    v = _number(name, value)
    return v, v


def _checked(name: str, r: Range, limits) -> Range:
    text = f"search setting {name}={r.text()}"
    if r.low > r.high:
        raise LoraEqError(f"{text}: an empty range (its low end is above its high end)")
    if r.whole and (r.low != int(r.low) or r.high != int(r.high)):
        raise LoraEqError(f"{text}: must be whole numbers")
    if r.log and r.low <= 0:
        raise LoraEqError(f"{text}: a range searched on a log scale must stay above 0")
    if name in SHAPE:
        if not 0 <= r.low <= r.high <= SHAPE_MAX:
            raise LoraEqError(f"{text}: an equalizer strength lies in 0:{SHAPE_MAX:g}")
    else:
        for end in (r.low, r.high):
            try:
                check_value(name, int(end) if r.whole else end, limits)
            except LoraEqError as e:
                raise LoraEqError(f"{text}: {e}") from None
    return r


def shape_grid(point: dict, roles, bands: list[list[int]]) -> Equalizer:
    """The equalizer of a point's five shape dimensions over these bands and roles (a TuningMap
    or role names): cell = its depth third's strength x its role group's."""
    families = role_families(roles)
    layers = bands[-1][-1] + 1
    group = {"attention": point["attention"], "mlp": point["mlp"]}
    other = (group["attention"] + group["mlp"]) / 2
    rows = []
    for band in bands:
        middle = (band[0] + band[-1]) / 2
        depth = point[DEPTH[min(2, int(3 * middle / layers))]]
        rows.append([round(depth * group.get(families[r], other), 3) for r in families])
    grid = Equalizer(list(families), [list(b) for b in bands], rows)
    if grid.is_zero():
        raise LoraEqError("this equalizer shape sets every place to 0: there is nothing to train")
    return grid


def preset_point(name: str) -> dict[str, float]:
    """The shape dimensions of a preset (uniform, attention, mlp, early, middle, late, ramp-up, ramp-down):
    a search's starting points."""
    if name not in PRESETS:
        raise LoraEqError(f"equalizer preset {name!r}: choose one of {', '.join(PRESETS)}")
    if name in GROUPS:
        return {**dict.fromkeys(DEPTH, 1.0), "attention": float(name == "attention"), "mlp": float(name == "mlp")}
    curve = _band_curve(name, 3)
    return {**dict(zip(DEPTH, curve)), "attention": 1.0, "mlp": 1.0}


def variant_for(name: str, point: dict, roles, bands: list[list[int]], base: Hyper | None = None) -> Variant:
    """The variant to train for a point: its shape as the equalizer grid, its hyperparameters over
    `base` (the settings the search does not vary, as the user gave them)."""
    values = {f.name: getattr(base or Hyper(), f.name) for f in fields(Hyper)}
    hyper_names = {n for n, _ in hyper_params()}
    values.update({k: v for k, v in point.items() if k in hyper_names})
    if values.get("epochs") is not None:
        values["max_steps"] = None  # the point's length of training, not a step count given elsewhere
    return Variant(name, shape_grid(point, roles, bands).to_json(), Hyper(**values))
