"""Run folders and the training queue.

A run folder `runs/<run>/` holds `run.json` (base model, precision, data, the variants in order),
`data/train.jsonl` and `data/heldout.jsonl` (the split every variant and the proof use), and one
folder per variant with `variant.json`, `status.json`, `train_log.jsonl`, the PEFT adapter and
`metrics.json`. A variant counts as finished only when `metrics.json` says `done`, and that file
is written last, so a killed job never leaves a finished-looking half adapter. `run_queue` trains
the variants one after another on one loaded base; a failed variant is marked with its error and
the queue goes on; a rerun resumes from the last checkpoint and skips finished variants.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from .cache import write_json_atomic
from .errors import LoraEqError
from .runtime import is_main_process, process_rank
from .variants import Variant, safe_name

RUN_FILE = "run.json"
CANCEL_FILE = "cancel"
STATUSES = ("queued", "running", "done", "failed", "cancelled")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("loraeq", "torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate"):
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
    bands: int = 4,
) -> dict:
    """Write a new run folder, or check that an existing one is this same run (to resume it)."""
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
        "data": data_info,
        "variants": [{"name": v.name, "folder": f, "config": v.to_json()} for v, f in zip(variants, folders)],
    }
    if not is_main_process():
        return _wait_for_plan(run_dir)
    existing = _read(run_dir / RUN_FILE)
    if existing:
        same = existing.get("data", {}).get("fingerprint") == data_info.get("fingerprint") and [
            x["config"] for x in existing.get("variants", [])
        ] == [x["config"] for x in plan["variants"]]
        if not same:
            raise LoraEqError(f"{run_dir}: already holds a different run (other data or variants); choose a new --out")
        return existing
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LoraEqError(f"{run_dir}: exists and is not a LoRA EQ run folder")
    from .data import write_jsonl

    write_jsonl(split.train.examples, run_dir / "data" / "train.jsonl")
    write_jsonl(split.heldout.examples, run_dir / "data" / "heldout.jsonl")
    for entry in plan["variants"]:
        set_status(run_dir / entry["folder"], "queued")
    plan["created"] = time.time()
    write_json_atomic(run_dir / RUN_FILE, plan)
    return plan


def _wait_for_plan(run_dir: Path, timeout: float = 600.0) -> dict:
    """Other ranks wait for the main process to write run.json."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        plan = _read(run_dir / RUN_FILE)
        if plan:
            return plan
        time.sleep(0.5)
    raise LoraEqError(f"{run_dir}: the main process did not create {RUN_FILE} in {timeout:.0f} s")


def set_status(folder: Path, status: str, **extra) -> None:
    assert status in STATUSES, status
    if not is_main_process():
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "status.json", {"status": status, "updated": time.time(), **extra})


def variant_status(folder: Path) -> str:
    """done only when metrics.json says so; a 'running' whose process is gone is 'interrupted'."""
    if _read(folder / "metrics.json").get("status") == "done":
        return "done"
    status = _read(folder / "status.json")
    state = status.get("status", "queued")
    if state == "running" and not _alive(status.get("pid")):
        return "interrupted"
    return state


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _variant_record(run_dir: Path, plan: dict, entry: dict, base, eq_json: dict | None) -> dict:
    return {
        "name": entry["name"],
        **entry["config"],
        "equalizer_grid": eq_json,
        "precision": base.precision,
        "base": {
            "spec": plan.get("model"),
            "id": base.source.id,
            "hub_id": base.source.hub_id,
            "kind": base.source.kind,
            "fingerprint": base.fingerprint,
            "folder": str(base.folder),
        },
        "data": plan.get("data", {}),
        "versions": library_versions(),
        "run": str(run_dir),
    }


def run_queue(run_dir: Path, base=None, on_event=None) -> list[dict]:
    """Train every unfinished variant of the run, in order, on one loaded base."""
    from .loading import load_model
    from .training import CancelledError, VariantResult, resolve_equalizer, train_variant, write_metrics

    run_dir = Path(run_dir)
    plan = _read(run_dir / RUN_FILE)
    if not plan:
        raise LoraEqError(f"{run_dir}: no {RUN_FILE}; create the run first")
    emit = on_event or (lambda record: None)
    with run_lock(run_dir):
        if is_main_process():
            (run_dir / CANCEL_FILE).unlink(missing_ok=True)
        base = base or load_model(plan.get("model"), plan.get("precision", "auto"))
        train = run_split(run_dir, "train")
        results = []
        for entry in plan["variants"]:
            folder = run_dir / entry["folder"]
            variant = Variant.from_json(entry["config"])
            if variant_status(folder) == "done":
                results.append({**_read(folder / "metrics.json"), "path": str(folder)})
                emit({"variant": variant.name, "status": "done", "skipped": True})
                continue
            if (run_dir / CANCEL_FILE).exists():
                set_status(folder, "cancelled")
                results.append({"name": variant.name, "status": "cancelled", "path": str(folder)})
                continue
            set_status(folder, "running", pid=os.getpid())
            emit({"variant": variant.name, "status": "running"})
            try:
                eq, _ = resolve_equalizer(base, variant, plan.get("bands", 4))
                if is_main_process():
                    write_json_atomic(folder / "variant.json", _variant_record(run_dir, plan, entry, base, eq.to_json()))
                conversations = training_stream(train, variant)
                result = train_variant(
                    base, variant, conversations, folder, bands=plan.get("bands", 4), cancel_path=run_dir / CANCEL_FILE
                )
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
    from .data import build_mixture

    m = variant.mix
    mixture = build_mixture(train, weights=m.weights, quotas=m.quotas, size=m.size, seed=m.seed)
    return [e.messages for e in mixture.stream]


def run_split(run_dir: Path, side: str):
    """The run's training or held-out rows as a validated Dataset."""
    from .data import load_dataset

    return load_dataset(Path(run_dir) / "data" / f"{side}.jsonl", format="chat")


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
    from .training import read_log

    run_dir = Path(run_dir)
    plan = _read(run_dir / RUN_FILE)
    if not plan:
        raise LoraEqError(f"{run_dir}: not a LoRA EQ run folder (no {RUN_FILE})")
    variants = []
    for entry in plan["variants"]:
        folder = run_dir / entry["folder"]
        log = read_log(folder / "train_log.jsonl")
        steps = [r for r in log if "loss" in r]
        variants.append(
            {
                "name": entry["name"],
                "folder": entry["folder"],
                "status": variant_status(folder),
                "error": _read(folder / "status.json").get("error"),
                "last": steps[-1] if steps else None,
                "losses": [[r["step"], r["loss"]] for r in steps],
                "metrics": _read(folder / "metrics.json") or None,
            }
        )
    return {"run_dir": str(run_dir), "model": plan.get("model"), "precision": plan.get("precision"), "variants": variants}
