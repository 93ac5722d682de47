"""The training stream: per-category weights (proportions) and quotas ("at least N per 1000").

How the stream is built, and why each quota holds in *every* window of `window` consecutive
examples (not only on average):
1. Shares: the category weights, normalized. Weights may name only some categories: then they are
   proportions (adding up to at most 1) and the categories left out share the rest in proportion to
   their row counts. No weights: every category keeps its natural share.
2. Places: each window of `window` examples gets an integer number of places per category, at
   least its quota (the other categories give up room in proportion to their shares).
3. Pattern: those places are spread evenly over one window (smooth weighted round-robin, ties in a
   seeded order) and the pattern repeats. Any `window` consecutive positions of a periodic
   sequence cover exactly one period, so every window holds exactly each category's places.
4. Rows: each category's places are filled by drawing its rows in proportion to their `weight`
   (systematic sampling), in seeded shuffled rounds, so every row is used once before any row
   repeats. A category with fewer rows than places is oversampled with replacement; the report
   says so.
This file does not read or validate data (`load.py`) and does not split it (`split.py`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from adapters.errors import LoraEqError

from .records import Dataset, Example


@dataclass(frozen=True)
class MixSpec:
    """What the user asks of the stream; each value is checked on creation."""

    weights: dict[str, float] | None = None  # category -> relative weight (0 leaves it out)
    quotas: dict[str, int] | None = None  # category -> at least this many in every window
    size: int | None = None  # examples in the stream (default: the number of rows)
    seed: int = 0
    window: int = 1000  # the quota's "per N"

    def __post_init__(self) -> None:
        if not _is_int(self.window) or self.window < 1:
            raise LoraEqError(f"window {self.window!r}: must be a positive integer")
        if self.size is not None and (not _is_int(self.size) or self.size < 1):
            raise LoraEqError(f"size {self.size!r}: must be a positive integer")
        if not _is_int(self.seed):
            raise LoraEqError(f"seed {self.seed!r}: must be an integer")
        for name, w in (self.weights or {}).items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise LoraEqError(f"weight {w!r} for {name!r}: must be a number >= 0")
        for name, q in (self.quotas or {}).items():
            if not _is_int(q) or q < 0:
                raise LoraEqError(f"quota {q!r} for {name!r}: must be an integer >= 0")
            if q > self.window:
                raise LoraEqError(f"quota {q} for {name!r}: more than the window of {self.window}")
        total = sum((self.quotas or {}).values())
        if total > self.window:
            raise LoraEqError(f"quotas add up to {total} per {self.window}: more than fits in a window")


@dataclass(frozen=True)
class CategoryMix:
    """What one category got: asked-for share and quota, places per window, realized count."""

    name: str
    rows: int  # valid rows available
    target: float  # share asked for by the weights (the natural share without weights)
    quota: int | None
    places: int  # places in every window
    count: int  # examples in the stream
    share: float  # count / stream size
    repeats: int  # most times one row appears in the stream
    oversampled: bool  # fewer rows than places in the stream: rows are repeated
    min_window: int | None  # fewest in any full window of the stream (None: shorter than a window)


@dataclass
class Mixture:
    stream: list[Example]
    categories: list[CategoryMix]
    spec: MixSpec
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if sum(c.count for c in self.categories) != len(self.stream):
            raise ValueError("category counts do not add up to the stream size")

    def quotas_hold(self) -> bool:
        """True when each quota holds in every full window of the stream."""
        return all(c.min_window is None or c.quota is None or c.min_window >= c.quota for c in self.categories)

    def to_json(self, stream: bool = False) -> dict:
        out = {
            "size": len(self.stream),
            "seed": self.spec.seed,
            "window": self.spec.window,
            "categories": [asdict(c) for c in self.categories],
            "quotas_hold": self.quotas_hold(),
            "notes": self.notes,
        }
        if stream:
            out["stream"] = [e.id for e in self.stream]
        return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def target_shares(counts: dict[str, int], weights: dict[str, float] | None) -> dict[str, float]:
    """Each category's share of the stream (adding up to 1) from the weights and the row counts."""
    total_rows = sum(counts.values())
    if not weights:
        return {c: n / total_rows for c, n in counts.items()}
    _known(weights, counts, "weight")
    rest = [c for c in counts if c not in weights]
    listed = sum(weights.values())
    if rest and listed > 1 + 1e-9:
        raise LoraEqError(
            f"weights add up to {listed:g}: with categories left out ({', '.join(rest[:5])}) they are "
            "proportions and must add up to at most 1"
        )
    if not rest:
        if listed <= 0:
            raise LoraEqError("weights are all 0: nothing would be drawn")
        return {c: weights[c] / listed for c in counts}
    rest_rows = sum(counts[c] for c in rest)
    room = max(0.0, 1.0 - listed)
    shares = {c: (weights[c] if c in weights else room * counts[c] / rest_rows) for c in counts}
    if sum(shares.values()) <= 0:
        raise LoraEqError("weights are all 0: nothing would be drawn")
    return {c: s / sum(shares.values()) for c, s in shares.items()}


def _known(asked: dict[str, object], counts: dict[str, int], what: str) -> None:
    for name in asked:
        if name not in counts:
            have = ", ".join(sorted(counts)[:12])
            raise LoraEqError(f"{what} for {name!r}: no such category (categories: {have})")


def allocate_places(shares: dict[str, float], quotas: dict[str, int], window: int) -> dict[str, int]:
    """Integer places per window: at least each quota, the rest by share (largest remainder)."""
    fixed: dict[str, float] = {}
    free = dict(shares)
    while True:
        room = window - sum(fixed.values())
        total = sum(free.values())
        ideal = {c: room * s / total if total > 0 else 0.0 for c, s in free.items()}
        raised = [c for c in free if quotas.get(c, 0) > ideal[c]]
        if not raised:
            break
        for c in raised:
            fixed[c] = float(quotas[c])
            del free[c]
    if sum(free.values()) <= 0 and fixed:
        # Only quota categories have any share: they split the room left over by their quotas.
        spare = window - sum(fixed.values())
        fixed = {c: q + spare * q / sum(fixed.values()) for c, q in fixed.items()}
        ideal = dict.fromkeys(free, 0.0)
    exact = {**fixed, **ideal}
    places = {c: math.floor(x + 1e-9) for c, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (-(exact[c] - places[c]), c))
    for c in by_remainder[: window - sum(places.values())]:
        places[c] += 1
    return places


def _give_a_place(places: dict[str, int], shares: dict[str, float], quotas: dict[str, int]) -> list[str]:
    """A category with a share but no place (its share rounds to 0) gets one, from the largest."""
    starved = [c for c in sorted(places) if shares[c] > 0 and places[c] == 0]
    for c in starved:
        donor = max(sorted(places), key=lambda d: places[d] - quotas.get(d, 0))
        if places[donor] - quotas.get(donor, 0) < 2:
            break
        places[donor] -= 1
        places[c] = 1
    return [c for c in starved if places[c]]


def spread(places: dict[str, int], window: int, rng: random.Random) -> list[str]:
    """One window's pattern: each category `places[c]` times, spread evenly (smooth weighted round-robin)."""
    order = sorted(c for c, n in places.items() if n > 0)
    rng.shuffle(order)
    credit = dict.fromkeys(order, 0)
    pattern = []
    for _ in range(window):
        for c in order:
            credit[c] += places[c]
        best = max(order, key=credit.__getitem__)  # the first of equals, in the seeded order
        credit[best] -= window
        pattern.append(best)
    turn = rng.randrange(window)  # rotating a periodic pattern keeps every window's counts
    return pattern[turn:] + pattern[:turn]


def draw_rows(examples: list[Example], k: int, rng: random.Random) -> list[Example]:
    """`k` rows in proportion to their weights, in shuffled rounds: no row twice before all once."""
    order = list(examples)
    rng.shuffle(order)
    total = sum(e.weight for e in order)
    offset, cum, counts = rng.random(), 0.0, []
    for i, e in enumerate(order):
        nxt = float(k) if i == len(order) - 1 else cum + k * e.weight / total
        counts.append(math.floor(nxt + offset) - math.floor(cum + offset))
        cum = nxt
    ranked = sorted(zip(counts, range(len(order))), reverse=True)
    out: list[Example] = []
    for round_ in range(ranked[0][0] if ranked else 0):
        batch = [order[i] for n, i in ranked if n > round_]  # a prefix of `ranked`
        rng.shuffle(batch)
        out.extend(batch)
    return out


def window_minimum(labels: list[str], name: str, window: int) -> int | None:
    """Fewest `name` labels in any `window` consecutive positions; None when there is no full window."""
    if len(labels) < window:
        return None
    hits = np.fromiter((label == name for label in labels), dtype=np.int64, count=len(labels))
    sums = np.concatenate(([0], np.cumsum(hits)))
    return int((sums[window:] - sums[:-window]).min())


def build_mixture(
    dataset: Dataset | list[Example],
    weights: dict[str, float] | None = None,
    quotas: dict[str, int] | None = None,
    size: int | None = None,
    seed: int = 0,
    window: int = 1000,
) -> Mixture:
    """A seeded training stream of `size` examples with the asked-for mix; same seed, same stream."""
    examples = dataset.examples if isinstance(dataset, Dataset) else list(dataset)
    if not examples:
        raise LoraEqError("no valid rows to mix")
    spec = MixSpec(dict(weights or {}) or None, dict(quotas or {}) or None, size, seed, window)
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.category, []).append(e)
    counts = {c: len(rows) for c, rows in sorted(groups.items())}
    quotas = spec.quotas or {}
    _known(quotas, counts, "quota")
    shares = target_shares(counts, spec.weights)
    places = allocate_places(shares, quotas, window)
    bumped = _give_a_place(places, shares, quotas)
    rng = random.Random(seed)
    pattern = spread(places, window, rng)
    n = spec.size or len(examples)
    labels = [pattern[i % window] for i in range(n)]
    need = Counter(labels)
    drawn = {c: draw_rows(groups[c], need[c], random.Random(f"{seed}:{c}")) for c in counts if need[c]}
    taken = dict.fromkeys(drawn, 0)
    stream = []
    for c in labels:
        stream.append(drawn[c][taken[c]])
        taken[c] += 1
    report = [
        _category_report(c, counts[c], places[c], shares[c], quotas.get(c), labels, drawn.get(c, []), window)
        for c in counts
    ]
    return Mixture(stream, report, spec, _notes(report, bumped, n, window))


def _category_report(
    name: str, rows: int, places: int, target: float, quota: int | None, labels: list[str], drawn: list[Example], window: int
) -> CategoryMix:
    """What one category asked for and got, measured on the stream itself."""
    return CategoryMix(
        name=name,
        rows=rows,
        target=round(target, 6),
        quota=quota,
        places=places,
        count=len(drawn),
        share=round(len(drawn) / len(labels), 6),
        repeats=max(Counter(id(e) for e in drawn).values(), default=0),
        oversampled=len(drawn) > rows,
        min_window=window_minimum(labels, name, window),
    )


def _notes(report: list[CategoryMix], bumped: list[str], n: int, window: int) -> list[str]:
    notes = []
    for c in report:
        if c.oversampled:
            notes.append(
                f"{c.name}: {c.rows} rows for {c.count} places: "
                f"oversampled with replacement (a row up to {c.repeats} times)"
            )
        if c.places == 0:
            notes.append(f"{c.name}: weight 0, left out of the stream")
    notes += [f"{c}: its share rounds to 0 of {window}; given 1 place per window" for c in bumped]
    if n < window:
        notes.append(f"the stream ({n}) is shorter than one window ({window}): no full window to check quotas on")
    return notes
