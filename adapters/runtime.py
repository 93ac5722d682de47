"""Process set-up for fast CPU training: a better malloc, preloaded before Python starts.

glibc's malloc makes PyTorch CPU training 1.5-1.9x slower through allocation churn; tcmalloc (or
jemalloc) removes most of that. A library can only be preloaded at process start, so the
training command re-executes itself once with LD_PRELOAD set when such a library is installed
(Debian: libgoogle-perftools4 / libtcmalloc-minimal4, or libjemalloc2). It changes nothing on
CUDA machines, or when LORAEQ_NO_PRELOAD=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Best first: tcmalloc measured ~1.65x faster than glibc for LoRA training here; jemalloc less.
CANDIDATES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libjemalloc.so.2")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def allocator_library() -> str | None:
    """Path of the best installed malloc replacement, or None."""
    for name in CANDIDATES:
        for folder in LIB_DIRS:
            path = Path(folder) / name
            if path.is_file():
                return str(path)
    return None


def allocator_env(env: dict | None = None) -> dict:
    """`env` (default: this process's) with the fast allocator preloaded, for a child process."""
    env = dict(os.environ if env is None else env)
    lib = allocator_library()
    if lib and env.get("LORAEQ_NO_PRELOAD") != "1" and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
        # tcmalloc otherwise prints a line for every allocation over 1 GiB.
        env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return env


def active_allocator() -> str:
    """The allocator this process runs with: a preloaded library's name, or glibc."""
    for lib in os.environ.get("LD_PRELOAD", "").split(":"):
        if any(c in lib for c in CANDIDATES):
            return Path(lib).name
    return "glibc"


def reexec_with_allocator(module: str, argv: list[str]) -> None:
    """Replace this process with `python -m module argv` under the fast allocator, once."""
    if os.environ.get("LORAEQ_NO_PRELOAD") == "1" or active_allocator() != "glibc":
        return
    if _cuda_present():
        return
    env = allocator_env()
    if "LD_PRELOAD" in env and env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def _cuda_present() -> bool:
    return Path("/dev/nvidia0").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def process_rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)


def is_main_process() -> bool:
    """Only the main process writes run files; every process trains its share of the batches."""
    return process_rank() == 0


# OpenMP threads that spin only briefly (2,000 turns) before they sleep, instead of OpenMP's default
# 300,000. The web app and its workers share the cores (a chat answers while a job trains); with
# long spinning, two torch processes on 2 cores slowed each other down 2-5x. Measured on short fact
# rows, 24 steps of `loraeq train` on 2 cores (tokens/s): alone, default 320, this 320-333, fully
# passive (OMP_WAIT_POLICY=PASSIVE) 267; two at once, default 64 each, this 148, passive 180.
# Training alone is the common case, so the web app keeps its full speed. The CLI keeps the default.
SHARED_CPU_ENV = {"GOMP_SPINCOUNT": "2000"}


def share_cpu(env: dict | None = None) -> dict:
    """`env` (default: this process's) with SHARED_CPU_ENV unless the user has set OpenMP's waiting
    (OMP_WAIT_POLICY or GOMP_SPINCOUNT): for the web app's process (before torch is imported) and
    the workers it starts."""
    env = os.environ if env is None else env
    if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & env.keys():
        env.update(SHARED_CPU_ENV)
    return env


PARENT_ENV = "LORAEQ_PARENT_PID"  # set by the web app's job line for the workers it starts
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a worker the web app started (its pid in LORAEQ_PARENT_PID): ask the kernel to kill this
    process when the app's process ends (Linux PR_SET_PDEATHSIG, kept across the allocator's
    re-exec), and exit at once if the app is already gone. The variable is removed, so that
    processes this worker starts are not tied to the app's pid."""
    raw = os.environ.pop(PARENT_ENV, None)
    if not raw or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != raw:  # the app ended before the signal was asked for
        os._exit(1)
