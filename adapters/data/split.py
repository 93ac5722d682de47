"""The held-out split that the proof of learning is measured on.

Stratified by category (each category gives about `fraction` of its rows), seeded, and disjoint
from training by content hash: rows with the same conversation always land on the same side, so no
duplicate leaks across. With `group` (a metadata field such as `fact_id`) rows are grouped:
- mode "paraphrase" (default): rows of one group say the same thing in different words; held-out
  rows are taken round-robin across groups and every group keeps at least one row in training, so
  each held-out row is a paraphrase of something trained ("did it learn the fact, not the words?").
- mode "disjoint": whole groups are held out ("does it generalize to unseen groups?"), taken
  round-robin across categories until the held-out size is nearest `fraction` of all rows.
This file does not decide what is measured on the split (see evals/).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from adapters.errors import LoraEqError

from .records import Dataset, Example

MODES = ("paraphrase", "disjoint")


@dataclass
class Split:
    """Training and held-out datasets; unpacks as `train, heldout = split`."""

    train: Dataset
    heldout: Dataset
    fraction: float
    seed: int
    group: str | None = None
    mode: str = "paraphrase"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        leaked = {e.content_hash for e in self.train.examples} & {e.content_hash for e in self.heldout.examples}
        if leaked:
            raise ValueError(f"{len(leaked)} conversations are on both sides of the split")

    def __iter__(self):
        return iter((self.train, self.heldout))

    def categories(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for side, ds in (("train", self.train), ("heldout", self.heldout)):
            for name, n in ds.categories().items():
                out.setdefault(name, {"train": 0, "heldout": 0})[side] = n
        return dict(sorted(out.items()))

    def to_json(self) -> dict:
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "group": self.group,
            "mode": self.mode,
            "train_rows": self.train.rows_valid,
            "heldout_rows": self.heldout.rows_valid,
            "categories": self.categories(),
            "notes": self.notes,
        }


def split_heldout(
    dataset: Dataset, fraction: float = 0.1, seed: int = 0, group: str | None = None, mode: str = "paraphrase"
) -> Split:
    """Hold out about `fraction` of each category (see the module docstring for `group` and `mode`)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise LoraEqError(f"fraction {fraction!r}: must be between 0 and 1 (e.g. 0.1)")
    if mode not in MODES:
        raise LoraEqError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if not dataset.examples:
        raise LoraEqError("no valid rows to split")
    notes: list[str] = []
    by_category: dict[str, list[Example]] = {}
    for e in dataset.examples:
        by_category.setdefault(e.category, []).append(e)
    if group and mode == "disjoint":
        chosen = _disjoint_groups(dataset.examples, by_category, fraction, seed, group, notes)
    else:
        chosen = []
        for name, rows in sorted(by_category.items()):
            units = _units(rows, group, notes)
            target = min(int(fraction * len(rows) + 0.5), len(rows) - 1)
            rng = random.Random(f"{seed}:{name}")
            pick = _paraphrase_pick if group else _whole_units
            chosen += pick(units, target, rng)
    held = {id(e) for e in chosen}
    train = [e for e in dataset.examples if id(e) not in held]
    heldout = [e for e in dataset.examples if id(e) in held]
    if not heldout:
        notes.append(f"no category has enough rows to hold out {fraction:g} of them")
    return Split(
        dataset.subset(train, f"training side of a {fraction:g} held-out split (seed {seed})"),
        dataset.subset(heldout, f"held-out side of a {fraction:g} split (seed {seed})"),
        fraction,
        seed,
        group,
        mode,
        sorted(set(notes)),
    )


def _units(rows: list[Example], group: str | None, notes: list[str] | None) -> list[list[Example]]:
    """Rows that must stay on one side together: same content (always), same group (with `group`)."""
    units: dict[object, list[Example]] = {}
    missing = 0
    for e in rows:
        if group is None:
            key = e.content_hash
        elif group in e.meta and e.meta[group] is not None:
            key = ("group", repr(e.meta[group]))
        else:
            missing += 1
            key = e.content_hash  # a row without the field is a group of its own
        units.setdefault(key, []).append(e)
    if missing and notes is not None:
        notes.append(f"{missing} rows have no {group!r}: each is a group of its own")
    # Identical content must not straddle the split, even when its group values differ.
    return _merge_same_content(list(units.values())) if group is not None else list(units.values())


def _merge_same_content(units: list[list[Example]]) -> list[list[Example]]:
    owner: dict[str, int] = {}
    merged: list[list[Example]] = []
    for unit in units:
        homes = {owner[e.content_hash] for e in unit if e.content_hash in owner}
        if homes:
            home = min(homes)
            for h in sorted(homes - {home}, reverse=True):
                merged[home].extend(merged[h])
                merged[h] = []
            merged[home].extend(unit)
        else:
            home = len(merged)
            merged.append(list(unit))
        for e in merged[home]:
            owner[e.content_hash] = home
    return [u for u in merged if u]


def _whole_units(units: list[list[Example]], target: int, rng: random.Random) -> list[Example]:
    """Whole units in seeded order until `target` rows, never all of them."""
    order = sorted(units, key=lambda u: u[0].row)
    rng.shuffle(order)
    chosen: list[Example] = []
    for unit in order[:-1]:  # the last unit stays in training: no category is held out whole
        if len(chosen) + len(unit) <= target:
            chosen.extend(unit)
    return chosen


def _disjoint_groups(
    examples: list[Example],
    by_category: dict[str, list[Example]],
    fraction: float,
    seed: int,
    group: str,
    notes: list[str],
) -> list[Example]:
    """Whole groups, taken round-robin across categories until the held-out size is nearest `fraction`.

    Groups are formed over the whole dataset (a group never straddles the split, even across
    categories); each category keeps at least one group in training.
    """
    queues: dict[str, list[list[Example]]] = {name: [] for name in sorted(by_category)}
    for unit in sorted(_units(examples, group, notes), key=lambda u: u[0].row):
        queues[unit[0].category].append(unit)
    lanes = []
    for name, units in queues.items():
        random.Random(f"{seed}:{name}").shuffle(units)
        lanes.append(units[:-1])
    random.Random(seed).shuffle(lanes)
    target = int(fraction * len(examples) + 0.5)
    chosen: list[Example] = []
    moved = True
    while moved:
        moved = False
        for lane in lanes:
            if lane and abs(len(chosen) + len(lane[0]) - target) < abs(len(chosen) - target):
                chosen.extend(lane.pop(0))
                moved = True
    return chosen


def _paraphrase_pick(units: list[list[Example]], target: int, rng: random.Random) -> list[Example]:
    """Rows taken one group at a time, round-robin, each group keeping at least one in training."""
    pools = []
    for unit in sorted(units, key=lambda u: u[0].row):
        by_content: dict[str, list[Example]] = {}
        for e in unit:
            by_content.setdefault(e.content_hash, []).append(e)
        pieces = list(by_content.values())
        rng.shuffle(pieces)
        pools.append(pieces)
    rng.shuffle(pools)
    chosen: list[Example] = []
    while len(chosen) < target:
        progress = False
        for pieces in pools:
            if len(chosen) >= target:
                break
            if len(pieces) >= 2:  # the last piece stays in training
                chosen.extend(pieces.pop())
                progress = True
        if not progress:
            break
    return chosen
