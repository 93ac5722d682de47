"""Run folders and the training queue.

A run folder `runs/<run>/` holds `run.json` (base model, precision, data, the variants in order),
`data/train.jsonl` and `data/heldout.jsonl` (the split every variant and the proof use), and one
folder per variant with `variant.json`, `status.json`, `train_log.jsonl`, the PEFT adapter and
`metrics.json`. A variant counts as finished only when `metrics.json` says `done`, and that file
is written last, so a killed job never leaves a finished-looking half adapter. `run_queue` trains
the variants one after another on one loaded base; a failed variant is marked with its error and
the queue goes on; a rerun resumes from the last checkpoint and skips finished variants.
Reading a run folder is runfolder.py's job; this module writes one and trains its variants.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from adapters.base.bands import DEFAULT_BANDS
from adapters.cache import write_json_atomic
from adapters.errors import LoraEqError
from adapters.runtime import is_main_process, process_rank
from adapters.shape.variants import Variant, safe_name

from .runfolder import CANCEL_FILE, PROBE, RUN_FILE, RunFolder, VariantInfo, split_path

STATUSES = ("queued", "running", "done", "failed", "cancelled")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("loraeq", "torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def create_run(
    run_dir: Path,
    *,
    variants: list[Variant],
    split,
    data_info: dict,
    model: str | None,
    precision: str,
    bands: int = DEFAULT_BANDS,
    task: str = "causal",
) -> dict:
    """Write a new run folder, or check that an existing one is this same run (to resume it).
    `task` is `causal` (chat data, a causal LM) or `classification` (labels, an encoder: classify.py)."""
    run_dir = Path(run_dir)
    names: set[str] = set()
    folders = []
    for v in variants:
        folder = safe_name(v.name, names)
        names.add(folder)
        folders.append(folder)
    plan = {
        "model": model,
        "precision": precision,
        "bands": bands,
        "task": task,
        "data": data_info,
        "variants": [{"name": v.name, "folder": f, "config": v.to_json()} for v, f in zip(variants, folders)],
    }
    if not is_main_process():
        return _wait_for_plan(run_dir)
    existing = RunFolder.read(run_dir)
    if existing:
        same = existing.data.get("fingerprint") == data_info.get("fingerprint") and [
            v.config for v in existing.variants
        ] == [x["config"] for x in plan["variants"]]
        if not same:
            raise LoraEqError(f"{run_dir}: already holds a different run (other data or variants); choose a new --out")
        return existing.plan
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LoraEqError(f"{run_dir}: exists and is not a LoRA EQ run folder")
    from adapters.data import write_jsonl

    write_jsonl(split.train.examples, split_path(run_dir, "train"))
    write_jsonl(split.heldout.examples, split_path(run_dir, "heldout"))
    for entry in plan["variants"]:
        set_status(run_dir / entry["folder"], "queued")
    plan["created"] = time.time()
    write_json_atomic(run_dir / RUN_FILE, plan)
    return plan


def add_variants(run_dir: Path, variants: list[Variant]) -> list[str]:
    """Append variants to an existing run (they train when it is resumed), each named apart from
    the run's own; returns their names. Refused while a queue trains the run."""
    run = RunFolder.open(run_dir)
    with run_lock(run.path):
        plan = dict(run.plan)
        taken = {e["folder"] for e in plan["variants"]} | {e["name"] for e in plan["variants"]}
        if run.task == "classification":
            taken.add(PROBE)  # the linear probe's column and folder
        added = []
        for v in variants:
            name = safe_name(v.name, taken)
            taken.add(name)
            added.append({"name": name, "folder": name, "config": Variant(name, v.equalizer, v.hyper, v.mix).to_json()})
        for entry in added:
            set_status(run.path / entry["folder"], "queued")
        plan["variants"] = [*plan["variants"], *added]
        write_json_atomic(run.path / RUN_FILE, plan)
    return [e["name"] for e in added]


def adopt_trained(run_dir: Path, variant: Variant, source: Path, base, schedule: str | None = None,
                  extra: dict | None = None) -> str:
    """A variant trained outside the run's queue (a search's trial, trained on this run's training
    split) joins the run as finished: its adapter files, training log and metrics are copied into a
    folder of its own, with the variant.json a queue would write. Returns its name in the run."""
    from .training import ADAPTER_FILES, resolve_equalizer

    missing = [n for n in ADAPTER_FILES if not (Path(source) / n).is_file()]
    if missing:
        raise LoraEqError(f"{source}: no trained adapter to add ({missing[0]} is missing)")
    name = add_variants(run_dir, [variant])[0]
    run = RunFolder.open(run_dir)
    info = run.variant(name)
    eq, _ = resolve_equalizer(base, variant, run.bands)
    record = _variant_record(run, info, base, eq.to_json(), variant, schedule)
    record.update(extra or {})
    for n in (*ADAPTER_FILES, "train_log.jsonl", "metrics.json"):
        if (Path(source) / n).is_file():
            shutil.copyfile(Path(source) / n, info.folder / n)
    write_json_atomic(info.folder / "variant.json", record)
    set_status(info.folder, "done")
    return name


def _wait_for_plan(run_dir: Path, timeout: float = 600.0) -> dict:
    """Other ranks wait for the main process to write run.json."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = RunFolder.read(run_dir)
        if run:
            return run.plan
        time.sleep(0.5)
    raise LoraEqError(f"{run_dir}: the main process did not create {RUN_FILE} in {timeout:.0f} s")


def set_status(folder: Path, status: str, **extra) -> None:
    assert status in STATUSES, status
    if not is_main_process():
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "status.json", {"status": status, "updated": time.time(), **extra})


@contextmanager
def run_lock(run_dir: Path):
    """One queue per run folder at a time; the OS drops the lock if the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = ".lock" if is_main_process() else f".lock-rank{process_rank()}"
    with open(run_dir / name, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoraEqError(f"{run_dir}: another training job is running on this run") from None
        yield


def request_cancel(run_dir: Path) -> None:
    """Ask the running queue to stop after its current step (it checkpoints nothing more)."""
    (Path(run_dir) / CANCEL_FILE).touch()


def _variant_record(run: RunFolder, info: VariantInfo, base, eq_json: dict | None, variant: Variant,
                    schedule: str | None) -> dict:
    return {
        **info.config,
        "name": info.name,
        "hyper": variant.to_json()["hyper"],  # as trained: the auto schedule's choices filled in
        "schedule": schedule or "as given",
        "equalizer_grid": eq_json,
        "precision": base.precision,
        "base": {
            "spec": run.model,
            "id": base.source.id,
            "hub_id": base.source.hub_id,
            "kind": base.source.kind,
            "fingerprint": base.fingerprint,
            "folder": str(base.folder),
        },
        "data": run.data,
        "versions": library_versions(),
        "run": str(run.path),
    }


def run_queue(run_dir: Path, base=None, on_event=None) -> list[dict]:
    """Train every unfinished variant of the run, in order, on one loaded base."""
    from adapters.base.loading import load_model

    from .training import CancelledError, VariantResult, resolve_equalizer, train_variant, write_metrics

    run = RunFolder.read(run_dir)
    if run is None:
        raise LoraEqError(f"{run_dir}: no {RUN_FILE}; create the run first")
    emit = on_event or (lambda record: None)
    with run_lock(run.path):
        if is_main_process():
            run.cancel_path.unlink(missing_ok=True)
        base = base or load_model(run.model, run.precision)
        train = run_split(run.path, "train")
        heldout = [e.messages for e in run_split(run.path, "heldout").examples]
        results = []
        for info in run.variants:
            folder = info.folder
            variant = Variant.from_json(info.config)
            if info.finished:
                results.append({**info.metrics(), "path": str(folder)})
                emit({"variant": variant.name, "status": "done", "skipped": True})
                continue
            if run.cancel_path.exists():
                set_status(folder, "cancelled")
                results.append({"name": variant.name, "status": "cancelled", "path": str(folder)})
                continue
            set_status(folder, "running", pid=os.getpid())
            emit({"variant": variant.name, "status": "running"})
            try:
                eq, _ = resolve_equalizer(base, variant, run.bands)
                conversations = training_stream(train, variant)
                variant, schedule = variant.scheduled(len(conversations))
                if is_main_process():
                    record = _variant_record(run, info, base, eq.to_json(), variant, schedule)
                    write_json_atomic(folder / "variant.json", record)
                result = train_variant(base, variant, conversations, folder, bands=run.bands,
                                       cancel_path=run.cancel_path, heldout=heldout)
            except CancelledError as e:
                set_status(folder, "cancelled", error=str(e))
                results.append({"name": variant.name, "status": "cancelled", "path": str(folder)})
                emit({"variant": variant.name, "status": "cancelled"})
                continue
            except Exception as e:  # one variant's failure must not stop the queue
                message = str(e) if isinstance(e, LoraEqError) else f"{type(e).__name__}: {e}"
                set_status(folder, "failed", error=message, traceback=traceback.format_exc(limit=8))
                results.append(VariantResult(variant.name, "failed", 0, None, 0.0, 0, 0.0, 0, message).to_json()
                               | {"path": str(folder)})
                emit({"variant": variant.name, "status": "failed", "error": message})
                continue
            if is_main_process():
                write_metrics(folder, result)
            set_status(folder, "done")
            results.append({**result.to_json(), "path": str(folder)})
            emit({"variant": variant.name, "status": "done", "final_loss": result.final_loss})
        return results


def training_stream(train, variant: Variant) -> list[list[dict]]:
    """The conversations one variant trains on: the training split, or its mix when one is set."""
    if not variant.mix.active:
        return [e.messages for e in train.examples]
    from adapters.data import build_mixture

    m = variant.mix
    mixture = build_mixture(train, weights=m.weights, quotas=m.quotas, size=m.size, seed=m.seed)
    return [e.messages for e in mixture.stream]


def run_split(run_dir: Path, side: str):
    """The run's training or held-out rows as a validated Dataset."""
    from adapters.data import load_dataset

    return load_dataset(split_path(run_dir, side), format="chat")


def data_info(dataset, split, path: str) -> dict:
    """What variant.json and the model card say about the data."""
    digest = hashlib.sha256()
    for e in dataset.examples:
        digest.update(e.content_hash.encode())
    return {
        "file": str(path),
        "fingerprint": digest.hexdigest()[:16],
        "format": dataset.format,
        "rows_in": dataset.rows_in,
        "rows_valid": dataset.rows_valid,
        "rows_rejected": dataset.rows_rejected,
        "train_rows": split.train.rows_valid,
        "heldout_rows": split.heldout.rows_valid,
        "categories": dataset.categories(),
        "split": split.to_json(),
    }


def run_status(run_dir: Path) -> dict:
    """Where every variant of a run stands, with its last progress record (for UIs that poll)."""
    run = RunFolder.open(run_dir)
    variants = []
    for v in run.columns():
        log = v.log()
        steps = [r for r in log if "loss" in r]
        variants.append(
            {
                "name": v.name,
                "folder": v.folder.name,
                "status": v.status(),
                "error": v.error(),
                "last": steps[-1] if steps else None,
                "losses": [[r["step"], r["loss"]] for r in steps],
                "heldout_losses": [[r["step"], r["heldout_loss"]] for r in log if "heldout_loss" in r],
                "metrics": v.metrics() or None,
            }
        )
    return {"run_dir": str(run.path), "model": run.model, "precision": run.precision, "variants": variants}
