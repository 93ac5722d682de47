"""Reading a run folder: one typed view of what `loraeq train` (runs.py) wrote.

    RUN_DIR/run.json                  the plan: base spec, precision, bands, data, variants in order
    RUN_DIR/data/{train,heldout}.jsonl the split every variant and the proof use
    RUN_DIR/VARIANT/variant.json      the resolved config it was trained with (base fingerprint, grid)
    RUN_DIR/VARIANT/status.json       queued | running (with the pid) | failed (with the error) | cancelled
    RUN_DIR/VARIANT/metrics.json      written last: status "done" is what makes a variant finished
    RUN_DIR/VARIANT/train_log.jsonl   progress records
    RUN_DIR/report.{json,md,html}     the proof (evals/report.py)

`RunFolder.open` reads run.json once; the per-variant files are read when asked, so a UI that
polls sees them change. This module only reads, and imports no torch or transformers: the web
app, the vote store and the CLI's `status` read runs cheaply. Writing stays in runs.py and
training.py; nothing here decides how to train or evaluate.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from adapters.base.bands import DEFAULT_BANDS
from adapters.cache import read_json
from adapters.errors import LoraEqError

RUN_FILE = "run.json"
CANCEL_FILE = "cancel"
SPLITS = ("train", "heldout")
REPORT_FILES = ("report.json", "report.md", "report.html")
BASE_COLUMN = "base"  # the label of the original model's column (answers, votes)
PROBE = "probe"  # a classification run's base: the frozen encoder with only its head trained


def derived_seed(seed: int, label: str) -> int:
    """The sampling seed of a column labelled `label` under the settings' `seed` (engine.column_seed),
    so a column keeps its text whichever other columns are shown next to it."""
    return (seed * 1_000_003 + zlib.crc32(label.encode("utf-8"))) % 2**63


def read_log(path: Path) -> list[dict]:
    """The progress records of a variant, skipping a last line still being written."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def split_path(run_dir: str | Path, side: str) -> Path:
    """Where a run keeps its training or held-out rows."""
    if side not in SPLITS:
        raise LoraEqError(f"split {side!r}: choose {' or '.join(SPLITS)}")
    return Path(run_dir) / "data" / f"{side}.jsonl"


def report_paths(run_dir: str | Path) -> dict[str, Path]:
    """Where a run's proof report goes: report.json, report.md and report.html."""
    return {name: Path(run_dir) / name for name in REPORT_FILES}


def variant_status(folder: Path) -> str:
    """done only when metrics.json says so; a 'running' whose process is gone is 'interrupted'."""
    if read_json(Path(folder) / "metrics.json").get("status") == "done":
        return "done"
    status = read_json(Path(folder) / "status.json")
    state = status.get("status", "queued")
    if state == "running" and not process_alive(status.get("pid")):
        return "interrupted"
    return state


def process_alive(pid) -> bool:
    """Whether a process with this id runs on this machine (False for no id)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def config_fingerprint(variant_dir: Path) -> str:
    """A hash of a variant's adapter_config.json and variant.json: what trained this adapter."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "variant.json"):
        path = Path(variant_dir) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class VariantInfo:
    """One variant of a run: its planned config and, read on each call, the files in its folder."""

    name: str
    folder: Path
    config: dict  # the variant as planned (`Variant.to_json()`)

    @classmethod
    def at(cls, folder: str | Path) -> VariantInfo:
        """A variant folder on its own (as `loraeq export` is given one): its name and config from variant.json."""
        record = read_json(Path(folder) / "variant.json")
        return cls(record.get("name", Path(folder).name), Path(folder), record)

    def record(self) -> dict:
        """variant.json ({} before training started)."""
        return read_json(self.folder / "variant.json")

    def metrics(self) -> dict:
        """metrics.json ({} until the variant has finished or failed)."""
        return read_json(self.folder / "metrics.json")

    def status(self) -> str:
        return variant_status(self.folder)

    def error(self) -> str | None:
        return read_json(self.folder / "status.json").get("error")

    def log(self) -> list[dict]:
        return read_log(self.folder / "train_log.jsonl")

    @property
    def finished(self) -> bool:
        return self.status() == "done"

    @property
    def has_adapter(self) -> bool:
        return (self.folder / "adapter_model.safetensors").is_file()

    def base_fingerprint(self) -> str | None:
        """The fingerprint of the base it was trained on (None before training or in old folders)."""
        return self.record().get("base", {}).get("fingerprint")

    def grid(self) -> dict | None:
        """The equalizer grid it was trained with (Equalizer JSON), when variant.json says."""
        return self.record().get("equalizer_grid")

    def fingerprint(self) -> str:
        return config_fingerprint(self.folder)


@dataclass(frozen=True)
class RunFolder:
    """A run folder and its plan (run.json); see the module doc."""

    path: Path
    plan: dict

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """The run in `path`; a LoraEqError when it holds no readable run.json."""
        run = cls.read(path)
        if run is None:
            raise LoraEqError(f"{path}: not a LoRA EQ run folder (no {RUN_FILE})")
        return run

    @classmethod
    def read(cls, path: str | Path) -> RunFolder | None:
        """The run in `path`, or None when there is none (yet)."""
        plan = read_json(Path(path) / RUN_FILE)
        return cls(Path(path), plan) if plan else None

    @property
    def model(self) -> str | None:
        return self.plan.get("model")

    @property
    def precision(self) -> str:
        return self.plan.get("precision", "auto")

    @property
    def bands(self) -> int:
        return self.plan.get("bands", DEFAULT_BANDS)

    @property
    def task(self) -> str:
        """`causal` (chat data, a causal LM) or `classification` (labels, an encoder)."""
        return self.plan.get("task", "causal")

    @property
    def labels(self) -> list[str]:
        """A classification run's labels, in the classifier's output order ([] for a causal run)."""
        return list(self.data.get("labels") or [])

    @property
    def data(self) -> dict:
        return self.plan.get("data", {})

    @property
    def variants(self) -> list[VariantInfo]:
        """Every planned variant, in the run's order."""
        return [VariantInfo(e["name"], self.path / e["folder"], e["config"]) for e in self.plan.get("variants", [])]

    def columns(self) -> list[VariantInfo]:
        """What trains, in order: a classification run's linear probe (its base) first, then the variants."""
        if self.task != "classification":
            return self.variants
        return [VariantInfo(PROBE, self.path / PROBE, {"name": PROBE})] + self.variants

    def variant(self, name: str) -> VariantInfo:
        for v in self.variants:
            if v.name == name:
                return v
        raise LoraEqError(f"{self.path}: no variant named {name!r}")

    def finished(self) -> list[VariantInfo]:
        """The variants whose training is done, in order."""
        return [v for v in self.variants if v.finished]

    def adapters(self) -> dict[str, Path]:
        """Finished variants that hold their adapter: name -> folder, in the run's order."""
        return {v.name: v.folder for v in self.finished() if v.has_adapter}

    def split_path(self, side: str) -> Path:
        return split_path(self.path, side)

    @property
    def cancel_path(self) -> Path:
        return self.path / CANCEL_FILE

    def base_fingerprint(self) -> str:
        """The base model's fingerprint as the run's variants recorded it (or a hash of its spec
        and precision, before any variant has started)."""
        for v in self.variants:
            fingerprint = v.base_fingerprint()
            if fingerprint:
                return fingerprint
        return hashlib.sha256(f"{self.model}|{self.precision}".encode()).hexdigest()[:16]

    def report_paths(self) -> dict[str, Path]:
        return report_paths(self.path)

    def report_file(self, kind: str = "html") -> Path | None:
        """The proof report as `kind` (json, md or html), or None when it has not been written."""
        name = f"report.{kind}"
        if name not in REPORT_FILES:
            raise LoraEqError(f"report kind {kind!r}: choose json, md or html")
        path = self.path / name
        return path if path.is_file() else None

    def report(self) -> dict:
        """The proof's report.json ({} before `loraeq eval` has run)."""
        return read_json(self.path / "report.json")
