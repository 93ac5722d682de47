"""From a data spec to a run folder: the one place that decides how a run's data is read and split.

A `DataSpec` says where the data is and how to read it (file, row format, column mapping), how
to hold rows out for the proof (fraction, grouping, seed) and which mix every variant draws
(unless a variant brings its own). `start_run` turns a spec and variants into a run folder.
`loraeq train` and the web app's Train tab both call it, so a flag and a form field mean the
same thing. This module does not train (that is `runs.run_queue`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from adapters.base.bands import DEFAULT_BANDS
from adapters.errors import LoraEqError
from adapters.shape.variants import DataMix, Variant

AUTO = "auto"
AUTO_GROUP = AUTO
FACT_FIELD = "fact_id"  # rows that are wordings of one fact carry it (the fictional-facts sample does)
# The auto held-out size: 10% of the rows, but at least 50 (at most a quarter of the data). The
# proof's power statement needs about 50 rows to detect a similarity gain of +0.05 at the spread
# measured on held-out fact answers (sd of paired differences ~0.10); 12 rows (10% of 120) can
# only detect gains above ~+0.10, and need at least 8 rows whose match changed for McNemar.
HELDOUT_SHARE, HELDOUT_ROWS, HELDOUT_MAX_SHARE = 0.1, 50, 0.25
TASKS = ("causal", "classification")  # chat data for a causal LM; text -> label rows for an encoder


def heldout_fraction(rows: int) -> float:
    """The auto held-out fraction for a dataset of `rows` valid rows."""
    rows = max(1, rows)
    held = max(HELDOUT_SHARE * rows, min(HELDOUT_ROWS, HELDOUT_MAX_SHARE * rows))
    return min(HELDOUT_MAX_SHARE, held / rows)


@dataclass
class DataSpec:
    """A training data file, how to read it, how to split it, and the mix every variant draws."""

    path: str
    format: str | None = None  # row shape; None recognizes it
    mapping: dict[str, str] = field(default_factory=dict)  # {their column: our field}
    max_length: int | None = None  # tokens: longer rows are reported (needs a tokenizer to count)
    heldout: float | str = AUTO  # fraction of each category held out for the proof; auto: `heldout_fraction`
    group: str | None = AUTO_GROUP  # a field whose rows stay together; auto: fact_id when every row has it
    seed: int = 0
    mix: DataMix = field(default_factory=DataMix)  # for variants without a mix of their own
    task: str = "causal"  # classification: rows of text (+ text_pair) and label, for an encoder

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise LoraEqError("the data spec needs a file path")
        if self.task not in TASKS:
            raise LoraEqError(f"task {self.task!r}: choose one of {', '.join(TASKS)}")
        if isinstance(self.mix, dict):
            self.mix = DataMix(**self.mix)
        if self.heldout != AUTO and (isinstance(self.heldout, bool) or not isinstance(self.heldout, (int, float))
                                     or not 0 < self.heldout < 1):
            raise LoraEqError(f"held-out fraction {self.heldout!r}: a number between 0 and 1, or auto")
        self.mapping = dict(self.mapping or {})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DataSpec:
        return cls(**data)

    def load(self, tokenizer=None):
        """The validated dataset (token counts too when a tokenizer is given)."""
        from adapters.data import load_dataset

        if self.task == "classification":
            from adapters.data.classes import load_classification

            return load_classification(self.path, self.mapping)

        counted = tokenizer is not None and self.max_length is not None
        return load_dataset(self.path, format=self.format, mapping=self.mapping,
                            max_length=self.max_length if counted else None, tokenizer=tokenizer if counted else None)

    def group_for(self, dataset) -> str | None:
        if self.group != AUTO_GROUP:
            return self.group
        examples = dataset.examples
        return FACT_FIELD if examples and all(FACT_FIELD in e.meta for e in examples) else None

    def fraction_for(self, dataset) -> float:
        return self.fraction_of(len(dataset.examples))

    def fraction_of(self, rows: int) -> float:
        return heldout_fraction(rows) if self.heldout == AUTO else float(self.heldout)

    def train_rows(self, dataset) -> int:
        """About how many rows training gets (before a mix), for the auto schedule's choice."""
        return self.train_rows_of(len(dataset.examples))

    def train_rows_of(self, rows: int) -> int:
        return max(1, round(rows * (1 - self.fraction_of(rows))))

    def split(self, dataset):
        from adapters.data import split_heldout

        return split_heldout(dataset, fraction=self.fraction_for(dataset), seed=self.seed,
                             group=self.group_for(dataset))


def with_mix(variants: list[Variant], mix: DataMix) -> list[Variant]:
    """The spec's mix for every variant that does not bring one of its own."""
    return [v if v.mix.active or not mix.active else replace(v, mix=mix) for v in variants]


def start_run(run_dir: str | Path, spec: DataSpec, variants: list[Variant], *, model: str | None, precision: str,
              bands: int = DEFAULT_BANDS, dataset=None) -> dict:
    """Read (or take) the dataset, split it, and write the run folder; returns the run plan."""
    from .runs import create_run, data_info

    dataset = dataset if dataset is not None else spec.load()
    if not dataset.examples:
        raise LoraEqError(f"{Path(spec.path).name}: no valid row to train on ({dataset.rows_rejected} rejected)")
    split = spec.split(dataset)
    info = {**data_info(dataset, split, spec.path), "spec": spec.to_json()}
    if spec.task == "classification":
        from adapters.data.classes import label_set

        from .runfolder import PROBE

        if any(v.name == PROBE for v in variants):
            raise LoraEqError(f"variant name {PROBE!r}: taken by the linear probe of a classification run")

        info["labels"] = label_set(dataset)  # fewer than 2 classes is refused here, before any model loads
    return create_run(run_dir, variants=with_mix(variants, spec.mix), split=split, data_info=info, model=model,
                      precision=precision, bands=bands, task=spec.task)
