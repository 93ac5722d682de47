"""Long jobs for the web app: each runs the `loraeq` CLI in its own worker process.

The web server never trains in its request threads. A job is a `loraeq` command line (the same
one a user could type), started by one background thread, one job at a time; later jobs wait in
line and can tell their position. The job's progress lives in its run folder (train_log.jsonl,
status.json), which the page polls, so a page reload loses nothing.

A worker must not take the server down with it: it runs with the kernel's out-of-memory killer
pointed at it first (oom_score_adj), and a watchdog stops it once its memory passes the
worker limit. When a worker dies the job says why in words (out of memory, a signal, an exit
code with the last line it printed). This file holds no training logic and imports no gradio.

On a ZeroGPU Space a subprocess never gets the GPU, so there a job runs the same command in
this process, inside the `spaces.GPU` function of its kind (`gpu.py`), on the job line's
thread; it writes the same progress files. The memory watchdog does not apply there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.runtime import allocator_env
from playground import gpu

GB = 1 << 30
POLL_SECONDS = 0.1


@dataclass
class Job:
    key: str  # the run folder (+ "#proof" ...): one job per key at a time
    argv: list[str]
    owner: str = ""  # the session that started it
    kind: str = "train"  # train | proof | evalset
    state: str = "queued"  # queued | running | finished | failed
    returncode: int | None = None
    stderr_tail: str = ""
    peak_bytes: int = 0
    out_of_memory: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    def failure(self, limit: int) -> str:
        """Why the worker failed, in one line; '' when it did not."""
        if self.state != "failed":
            return ""
        if self.out_of_memory:
            return (f"the worker ran out of memory: it used {self.peak_bytes / GB:.2f} GB, "
                    f"over the worker limit of {limit / GB:.2f} GB")
        code = self.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (usually the machine running out of memory)" if -code == signal.SIGKILL else ""
            return f"the worker was stopped by signal {name}{hint}"
        last = next((ln for ln in reversed(self.stderr_tail.strip().splitlines()) if ln.strip()), "")
        return f"the worker failed with exit code {code}" + (f": {last.strip()}" if last else "")


class JobQueue:
    """Runs `python -m adapters.cli ARGV` jobs one after another in worker processes."""

    def __init__(self, max_waiting: int = 16, memory_limit: int = 8 * GB):
        self.max_waiting = max_waiting
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loraeq-jobs", daemon=True)
        self._thread.start()

    def submit(self, key: str, argv: list[str], owner: str = "", kind: str = "train") -> Job:
        with self._lock:
            current = self._jobs.get(key)
            if current and current.state in ("queued", "running"):
                return current
            if len(self._waiting) >= self.max_waiting:
                raise LoraEqError(f"the job line is full: {len(self._waiting)} jobs are waiting (the limit); "
                                  "try again in a few minutes")
            job = Job(key, list(argv), owner, kind)
            self._jobs[key] = job
            self._waiting.append(job)
        self._wake.set()
        return job

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def active(self, owner: str, kind: str) -> Job | None:
        """The owner's queued or running job of this kind, if any."""
        with self._lock:
            return next((j for j in self._jobs.values()
                         if j.owner == owner and j.kind == kind and j.state in ("queued", "running")), None)

    def busy(self, owner: str) -> bool:
        """Whether the owner has any queued or running job (its folder must stay)."""
        with self._lock:
            return any(j.owner == owner and j.state in ("queued", "running") for j in self._jobs.values())

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
        if gpu.zero_gpu():
            self._run_here(job)
        else:
            self._run_worker(job)

    def _run_here(self, job: Job) -> None:
        """The job's command in this process, inside the GPU function of its kind (ZeroGPU)."""
        from adapters.cli.main import call

        try:
            job.returncode, job.stderr_tail = gpu.run_on_gpu(job.kind, call, list(job.argv))
        except Exception as e:  # the job fails, the app keeps serving
            job.returncode, job.stderr_tail = 1, f"{type(e).__name__}: {e}"
            job.state = "failed"
            return
        job.state = "finished" if job.returncode in (0, 1) else "failed"

    def _run_worker(self, job: Job) -> None:
        try:
            job.process = subprocess.Popen(
                [sys.executable, "-m", "adapters.cli", *job.argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=allocator_env(),
                cwd=str(Path(__file__).resolve().parents[1]),
            )
            _first_to_go(job.process.pid)
            watchdog = threading.Thread(target=self._watch, args=(job,), daemon=True)
            watchdog.start()
            _, err = job.process.communicate()
            watchdog.join()
            job.returncode = job.process.returncode
            job.stderr_tail = (err or "")[-2000:]
            job.state = "finished" if job.returncode in (0, 1) and not job.out_of_memory else "failed"
        except OSError as e:
            job.state, job.stderr_tail = "failed", str(e)

    def _watch(self, job: Job) -> None:
        """Stop the worker once its memory passes the limit (checked every POLL_SECONDS)."""
        process = job.process
        while process.poll() is None:
            used = resident_bytes(process.pid)
            job.peak_bytes = max(job.peak_bytes, used)
            if used > self.memory_limit:
                job.out_of_memory = True
                process.kill()
                return
            time.sleep(POLL_SECONDS)


def resident_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _first_to_go(pid: int) -> None:
    """If the machine runs out of memory, the kernel takes the worker, not the app."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")
    except OSError:
        pass
