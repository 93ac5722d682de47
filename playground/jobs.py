"""Long jobs for the web app: each runs the `loraeq` CLI in its own worker process.

The web server never trains in its request threads. A job is a `loraeq` command line (the same
one a user could type), started by one background thread, one job at a time. Waiting jobs form
one line per user (a session, or a login) and the lines are served in turn, one job each round,
not in arrival order; a user may have at most `Limits.jobs_waiting` jobs waiting, and a user's
first job is always taken, whatever others have queued. `position` says where a job stands. The
job's progress lives in its run folder (train_log.jsonl, status.json), which the page polls, so a
page reload loses nothing.

A worker must not take the server down with it, nor outlive it: it runs in its own process
group with the kernel's out-of-memory killer pointed at it first (oom_score_adj), it asks the
kernel to kill it when the app's process ends (`adapters.runtime.die_with_parent`), and a
watchdog stops its whole group once its memory passes the worker limit, once it runs past its
kind's wall-clock limit (`Limits.job_seconds`), or `CANCEL_GRACE_S` after a cancel it did not
obey (a cancel asks first through the job's cancel file, which the tabs write; what a job
finished stays). Each worker is listed under `workers_dir` (`workers_folder`: in the temporary
folder, one per runs area) while it runs; a job line that starts stops the workers a previous
server left behind. When a worker dies the job says why in
words. This file holds no training logic and imports no gradio.

On a ZeroGPU Space a subprocess never gets the GPU, so there a job runs the same command in
this process, inside the `spaces.GPU` function of its kind (`gpu.py`), on the job line's
thread; it writes the same progress files. The watchdog (memory, time, cancel) does not apply
there: the GPU function's own duration bounds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.limits import Limits, env_name
from adapters.runtime import PARENT_ENV, allocator_env, share_cpu
from playground import gpu

GB = 1 << 30
POLL_SECONDS = 0.1
CANCEL_GRACE_S = 3.0  # a worker that has not stopped by itself this long after a cancel is killed
ACTIVE = ("queued", "running")
log = logging.getLogger("loraeq.jobs")


@dataclass
class Job:
    key: str  # the run folder (+ "#proof" ...): one job per key at a time
    argv: list[str]
    owner: str = ""  # the session (or login) that started it
    kind: str = "train"  # train | proof | evalset | search
    state: str = "queued"  # queued | running | finished | failed | cancelled
    returncode: int | None = None
    stderr_tail: str = ""
    peak_bytes: int = 0
    out_of_memory: bool = False
    limit_s: float = 0.0  # its wall-clock limit
    timed_out: bool = False
    cancel_at: float | None = None  # monotonic time after which a cancelled worker is killed
    process: subprocess.Popen | None = field(default=None, repr=False)

    def failure(self, limit: int) -> str:
        """Why the worker failed, in one line; '' when it did not."""
        if self.state != "failed":
            return ""
        if self.timed_out:
            return (f"the job ran past its time limit of {_duration(self.limit_s)} "
                    f"({env_name(self.kind + '_seconds')}) and was stopped")
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
    """Runs `python -m loraeq ARGV` jobs one after another in worker processes, serving
    users' lines in turn."""

    def __init__(self, max_waiting: int = 64, memory_limit: int = 8 * GB, limits: Limits | None = None,
                 workers_dir: str | Path | None = None):
        self.max_waiting = max_waiting  # all users' waiting jobs; past it, only a user's first job is taken
        self.memory_limit = memory_limit
        self.limits = limits or Limits()
        self.workers_dir = Path(workers_dir) if workers_dir else None
        if self.workers_dir is not None:
            stop_leftover_workers(self.workers_dir)
        self._lock = threading.Lock()
        self._lines: OrderedDict[str, deque[Job]] = OrderedDict()  # owner -> waiting jobs, in serving order
        self._jobs: dict[str, Job] = {}
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loraeq-jobs", daemon=True)
        self._thread.start()

    # ---- the line -------------------------------------------------------------------------------

    def submit(self, key: str, argv: list[str], owner: str = "", kind: str = "train") -> Job:
        with self._lock:
            current = self._jobs.get(key)
            if current and current.state in ACTIVE:
                return current
            self._refuse_if_over(owner)
            job = Job(key, list(argv), owner, kind, limit_s=self.limits.job_seconds(kind))
            self._jobs[key] = job
            self._lines.setdefault(owner, deque()).append(job)
        self._wake.set()
        return job

    def _refuse_if_over(self, owner: str) -> None:
        mine = len(self._lines.get(owner, ()))
        if mine >= self.limits.jobs_waiting:
            raise LoraEqError(f"you have {mine} jobs waiting, the limit per user ({env_name('jobs_waiting')}): "
                              "wait for one to start, or cancel one")
        waiting = sum(len(line) for line in self._lines.values())
        first = not any(j.owner == owner and j.state in ACTIVE for j in self._jobs.values())
        if waiting >= self.max_waiting and not first:
            raise LoraEqError(f"the job line is full: {waiting} jobs are waiting (the limit); "
                              "try again when your job has started")

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def active(self, owner: str, kind: str) -> Job | None:
        """The owner's queued or running job of this kind, if any."""
        with self._lock:
            return next((j for j in self._jobs.values()
                         if j.owner == owner and j.kind == kind and j.state in ACTIVE), None)

    def keys(self, owner: str) -> list[str]:
        """The keys of the owner's queued and running jobs."""
        with self._lock:
            return [j.key for j in self._jobs.values() if j.owner == owner and j.state in ACTIVE]

    def busy(self, owner: str) -> bool:
        """Whether the owner has any queued or running job (its folder must stay)."""
        with self._lock:
            return any(j.owner == owner and j.state in ACTIVE for j in self._jobs.values())

    def position(self, key: str) -> int | None:
        """1 for the next job to start, 2 for the one after, ...; None when not waiting. The line
        serves each user's first waiting job in turn, then each one's second, and so on."""
        with self._lock:
            lines = [list(line) for line in self._lines.values()]
        place = 0
        for depth in range(max(map(len, lines), default=0)):
            for line in lines:
                if depth < len(line):
                    place += 1
                    if line[depth].key == key:
                        return place
        return None

    def cancel(self, key: str) -> bool:
        """Stop a job: a waiting one leaves the line now; a running one is killed if it has not
        stopped by itself (through its cancel file) within CANCEL_GRACE_S. False: no such job."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.state not in ACTIVE:
                return False
            if job.state == "queued":
                line = self._lines.get(job.owner)
                if line is not None and job in line:
                    line.remove(job)
                    if not line:
                        del self._lines[job.owner]
                job.state = "cancelled"
                return True
            job.cancel_at = time.monotonic() + CANCEL_GRACE_S
            return True

    def _next(self) -> Job | None:
        """The first waiting job of the user whose turn it is; that user goes to the back."""
        with self._lock:
            if not self._lines:
                self._wake.clear()
                return None
            owner, line = self._lines.popitem(last=False)
            job = line.popleft()
            if line:
                self._lines[owner] = line
            job.state = "running"
            return job

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            job = self._next()
            if job is not None:
                self._run(job)

    # ---- running one job ------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        if gpu.zero_gpu():
            self._run_here(job)
        else:
            self._run_worker(job)

    def _run_here(self, job: Job) -> None:
        """The job's command in this process, inside the GPU function of its kind (ZeroGPU)."""
        from loraeq.main import call

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
                [sys.executable, "-m", "loraeq", *job.argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env={**share_cpu(allocator_env()), **self.limits.to_env(), PARENT_ENV: str(os.getpid())},
                cwd=str(Path(__file__).resolve().parents[1]),
                start_new_session=True,  # its own process group: stopping it stops what it started
            )
        except OSError as e:
            job.state, job.stderr_tail = "failed", str(e)
            return
        record = remember_worker(self.workers_dir, job.process.pid) if self.workers_dir else None
        try:
            _first_to_go(job.process.pid)
            watchdog = threading.Thread(target=self._watch, args=(job,), daemon=True)
            watchdog.start()
            _, err = job.process.communicate()
            watchdog.join()
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
        job.returncode = job.process.returncode
        job.stderr_tail = (err or "")[-2000:]
        job.state = _final_state(job)

    def _watch(self, job: Job) -> None:
        """Stop the worker's group once its memory passes the limit, its time runs out, or a
        cancel was not obeyed in time (checked every POLL_SECONDS)."""
        process, started = job.process, time.monotonic()
        while process.poll() is None:
            used = resident_bytes(process.pid)
            job.peak_bytes = max(job.peak_bytes, used)
            now = time.monotonic()
            if used > self.memory_limit:
                job.out_of_memory = True
            elif job.limit_s and now - started > job.limit_s:
                job.timed_out = True
            elif not (job.cancel_at is not None and now > job.cancel_at):
                time.sleep(POLL_SECONDS)
                continue
            stop_group(process.pid)
            return


def _final_state(job: Job) -> str:
    if job.cancel_at is not None:
        return "cancelled"
    if job.out_of_memory or job.timed_out:
        return "failed"
    return "finished" if job.returncode in (0, 1) else "failed"


def stop_group(pid: int) -> None:
    """Kill a worker and every process it started (its process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ---- workers a previous server left behind ------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid
    it names one process, never a later one that reused the pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def workers_folder(runs_root: str | Path) -> Path:
    """Where the workers of the app serving `runs_root` are listed: in the temporary folder (a
    worker cannot outlive a reboot, which empties it), one folder per runs area."""
    key = hashlib.sha256(str(Path(runs_root).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"loraeq-workers-{key}"


def remember_worker(folder: Path, pid: int) -> Path | None:
    """List a running worker (its pid, start time and server) so that a later server can find it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{pid}.json"
        path.write_text(json.dumps({"pid": pid, "start": _start_time(pid), "server": os.getpid()}))
        return path
    except OSError:
        log.warning("jobs: cannot list worker %s in %s", pid, folder)
        return None


def stop_leftover_workers(folder: Path) -> list[int]:
    """Stop every listed worker whose server is gone (a worker of a live server is left alone);
    returns the pids stopped. Each stop is logged."""
    stopped = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            record = json.loads(path.read_text())
            pid, start, server = int(record["pid"]), record.get("start"), int(record.get("server", 0))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        alive = start is not None and _start_time(pid) == start
        if alive and _parent(pid) == server and _start_time(server) is not None:
            continue  # its server still runs it
        if alive:
            stop_group(pid)
            stopped.append(pid)
            log.warning("jobs: stopped worker %s, left behind by a server that is gone", pid)
        path.unlink(missing_ok=True)
    return stopped


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


def limit_line(limits: Limits, kind: str) -> str:
    """What the page says about a job kind's limits."""
    return (f"a job stops after {_duration(limits.job_seconds(kind))}; at most {limits.jobs_waiting} jobs "
            "of yours wait in line, served in turn with other users'")


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
