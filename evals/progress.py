"""How far a running proof is: the stages `evaluate_run` reports, kept in the run folder for followers.

`evaluate_run(progress=...)` calls its callback with (done, total) after each stage it has
measured. `ProofProgress(run_dir)` is such a callback: it writes one line per call to
RUN/proof_progress.jsonl (and a first one when it is made, while the base loads), each with the
time since the start. `proof_status` reads the latest line back and says it in words: the stage
now running by name (`STAGES`, in the order the proof measures; a different count is shown as
"stage k of n"), time elapsed and, when the run's previous proof recorded its stage times
(report.json's "seconds"), about how long is left. This module measures nothing itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from adapters.train.runfolder import RunFolder, read_log

PROGRESS_FILE = "proof_progress.jsonl"
# What runs between two of the proof's calls (the first while the models load), in its order, with
# the names its stages' times have in report.json's "seconds".
STAGES = (("loading the models, then held-out losses", ("load", "heldout_loss")),
          ("losses on training rows", ("train_loss",)), ("answers to the held-out prompts", ("generate",)),
          ("answers to training questions", ("train_facts",)), ("statistics and the report", ("statistics",)))


class ProofProgress:
    """The callback `evaluate_run(progress=...)` takes, writing where the proof is (see the module doc)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / PROGRESS_FILE
        self.started = time.time()
        self.path.unlink(missing_ok=True)
        self._write(0, len(STAGES) - 1)  # before the first call: the models load

    def __call__(self, done: int, total: int) -> None:
        self._write(done, total)

    def _write(self, done: int, total: int) -> None:
        record = {"done": done, "total": total, "started": self.started, "time": time.time()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def proof_status(run_dir: str | Path, now: float | None = None) -> str:
    """The running proof in words: stage k of n by name, elapsed, about how long is left; '' before
    the worker has written anything."""
    records = read_log(Path(run_dir) / PROGRESS_FILE)
    if not records:
        return ""
    last = records[-1]
    done, total = int(last.get("done", 0)), int(last.get("total", 0))
    elapsed = (now or time.time()) - float(last.get("started", time.time()))
    named = total == len(STAGES) - 1  # the proof's calls, then its statistics
    stage = f": {STAGES[min(done, total)][0]}" if named else ""
    line = f"Measuring, stage {min(done, total) + 1} of {total + 1}{stage} · {elapsed:.0f} s so far"
    left = _time_left(run_dir, done, elapsed) if named else None
    return line + (f" · about {left:.0f} s left (as the last proof of this run took)" if left else "")


def _time_left(run_dir: str | Path, done: int, elapsed: float) -> float | None:
    """From the run's previous proof: the time its remaining stages took, less what this one has
    spent in the current stage; None without a previous proof's stage times."""
    run = RunFolder.read(run_dir)
    laps = (run.report().get("seconds") or {}) if run else {}
    if not all(key in laps for _, keys in STAGES for key in keys):
        return None
    took = [sum(laps[key] for key in keys) for _, keys in STAGES]
    remaining = sum(took[done:]) - max(0.0, elapsed - sum(took[:done]))  # less what this stage has run
    return max(1.0, remaining)
