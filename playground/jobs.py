"""Long jobs for the web app: each runs the `loraeq` CLI in its own worker process.

The web server never trains in its request threads. A job is a `loraeq` command line (the same
one a user could type), started by one background thread, one job at a time; later jobs wait in
line and can tell their position. The job's progress lives in its run folder (train_log.jsonl,
status.json), which the page polls, so a page reload loses nothing. This file holds no training
logic and imports no gradio.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from adapters.runtime import allocator_env


@dataclass
class Job:
    key: str  # the run folder: one job per run at a time
    argv: list[str]
    state: str = "queued"  # queued | running | finished | failed
    returncode: int | None = None
    stderr_tail: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)


class JobQueue:
    """Runs `python -m adapters.cli ARGV` jobs one after another in worker processes."""

    def __init__(self, max_waiting: int = 16):
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loraeq-jobs", daemon=True)
        self._thread.start()

    def submit(self, key: str, argv: list[str]) -> Job:
        with self._lock:
            current = self._jobs.get(key)
            if current and current.state in ("queued", "running"):
                return current
            if len(self._waiting) >= self.max_waiting:
                raise RuntimeError(f"{len(self._waiting)} jobs are already waiting; try again later")
            job = Job(key, list(argv))
            self._jobs[key] = job
            self._waiting.append(job)
        self._wake.set()
        return job

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def position(self, key: str) -> int | None:
        """1 for the next job to start, 2 for the one after, ...; None when not waiting."""
        with self._lock:
            for i, job in enumerate(self._waiting, 1):
                if job.key == key:
                    return i
        return None

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                job = self._waiting.popleft() if self._waiting else None
                if job is None:
                    self._wake.clear()
                    continue
                job.state = "running"
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            job.process = subprocess.Popen(
                [sys.executable, "-m", "adapters.cli", *job.argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=allocator_env(),
                cwd=str(Path(__file__).resolve().parents[1]),
            )
            _, err = job.process.communicate()
            job.returncode = job.process.returncode
            job.stderr_tail = (err or "")[-2000:]
            job.state = "finished" if job.returncode in (0, 1) else "failed"
        except OSError as e:
            job.state, job.stderr_tail = "failed", str(e)
