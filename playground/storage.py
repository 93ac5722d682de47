"""Where the web app keeps its runs, and how long it keeps anonymous sessions' work.

The runs area is chosen once at start (`runs_location`): `--runs-dir`, else `$LORAEQ_RUNS_DIR`,
else `/data/loraeq-runs` on a Hugging Face Space with persistent storage (`SPACE_ID` set and
`/data` writable), else `./runs`; the app prints the choice and why, since a Space's own disk
is lost on every restart.

Retention removes anonymous session folders (`ROOT/<session id>/`) that were last used more
than `days` ago, then, while the anonymous folders together pass `gb`, the least recently used
ones first. A logged-in user's folder (`ROOT/users/<login>/`) is never removed, and neither is
a session's folder while one of its jobs is queued or running. `plan_removals` is the policy
(pure: it is handed the clock); `sweep` applies it and logs each removal with its reason;
`Janitor` sweeps at start and then every `every_s` seconds, and each time also removes handed-out
downloads older than `cache_s`; Gradio's file cache (uploads, and the copies it serves) is
cleaned by Gradio itself on the schedule `gradio_cache` gives (app.py). Nothing here decides who
owns a folder (`sessions.py`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from adapters.errors import LoraEqError
from playground.sessions import SESSION_ID

log = logging.getLogger("loraeq.storage")

RUNS_ENV = "LORAEQ_RUNS_DIR"
DAYS_ENV = "LORAEQ_KEEP_DAYS"
GB_ENV = "LORAEQ_KEEP_GB"
CACHE_ENV = "LORAEQ_KEEP_CACHE_S"
SPACE_DATA = Path("/data")
GB = 1 << 30
DAY = 86400.0


def runs_location(flag: str | None, env: Mapping[str, str] | None = None,
                  data: Path = SPACE_DATA) -> tuple[Path, str]:
    """(the runs folder, why it was chosen): see the module doc. `data` is the Space's persistent
    storage mount (a parameter so that a test can point it elsewhere)."""
    env = os.environ if env is None else env
    if flag:
        return Path(flag), "--runs-dir"
    if env.get(RUNS_ENV):
        return Path(env[RUNS_ENV]), f"${RUNS_ENV}"
    if env.get("SPACE_ID"):
        if data.is_dir() and os.access(data, os.W_OK):
            return data / "loraeq-runs", f"a Space with persistent storage ({data} is writable)"
        return Path("runs"), (f"a Space without persistent storage ({data} is not writable): "
                              "runs are lost when the Space restarts")
    return Path("runs"), "the default"


@dataclass(frozen=True)
class Keep:
    """How long anonymous sessions' folders are kept."""

    days: float = 7.0  # removed once unused for this long
    gb: float = 20.0  # anonymous folders together stay under this size (least recently used go first)
    every_s: float = 3600.0  # how often the app sweeps
    cache_s: float = 3600.0  # uploads in Gradio's file cache and handed-out downloads are removed after this

    def __post_init__(self):
        for name in ("days", "gb", "every_s", "cache_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"keep {name}={value!r}: must be a number > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Keep:
        env = os.environ if env is None else env
        values = {}
        for name, var in (("days", DAYS_ENV), ("gb", GB_ENV), ("cache_s", CACHE_ENV)):
            if env.get(var):
                try:
                    values[name] = float(env[var])
                except ValueError:
                    raise LoraEqError(f"${var}={env[var]!r}: not a number") from None
        try:
            return cls(**values)
        except ValueError as e:
            raise LoraEqError(str(e)) from None


    @property
    def gradio_cache(self) -> tuple[int, int]:
        """Gradio's `delete_cache` (how often, how old, in whole seconds) for this retention."""
        age = max(1, int(self.cache_s))
        return max(1, min(600, age // 4)), age


@dataclass(frozen=True)
class FolderUse:
    path: Path
    last_used: float  # the newest modification time of anything in it (epoch seconds)
    size: int  # bytes


def folder_use(path: Path) -> FolderUse:
    newest, size = path.stat().st_mtime, 0
    for entry in path.rglob("*"):
        try:
            st = entry.lstat()
        except OSError:
            continue  # removed while we looked
        newest = max(newest, st.st_mtime)
        size += st.st_size if entry.is_file() else 0
    return FolderUse(path, newest, size)


def anonymous_folders(root: Path) -> list[FolderUse]:
    """Every anonymous session folder under the runs root (never `users/`, never anything else)."""
    return [folder_use(p) for p in Path(root).iterdir() if p.is_dir() and SESSION_ID.match(p.name)]


def plan_removals(folders: list[FolderUse], now: float, keep: Keep,
                  busy: frozenset[str] = frozenset()) -> list[tuple[FolderUse, str]]:
    """Which anonymous folders go, each with why, oldest first (see the module doc). `busy`
    names folders that stay whatever their age (a job of theirs is running); they still count
    toward the size cap."""
    out, kept = [], []
    for f in sorted(folders, key=lambda f: f.last_used):
        age = (now - f.last_used) / DAY
        if f.path.name not in busy and age > keep.days:
            out.append((f, f"unused for {age:.1f} days (keep {keep.days:g})"))
        else:
            kept.append(f)
    total, cap = sum(f.size for f in kept), keep.gb * GB
    for f in kept:
        if total <= cap:
            break
        if f.path.name in busy:
            continue
        out.append((f, f"anonymous folders hold {total / GB:.2f} GB, over the cap of {keep.gb:g} GB "
                       f"(least recently used first)"))
        total -= f.size
    return out


def sweep(root: Path, now: float, keep: Keep, busy: Callable[[str], bool] = lambda sid: False) -> list[Path]:
    """Apply `plan_removals` to the runs root; each removal is logged with its reason."""
    folders = anonymous_folders(root)
    held = frozenset(f.path.name for f in folders if busy(f.path.name))
    removed = []
    for f, why in plan_removals(folders, now, keep, held):
        shutil.rmtree(f.path, ignore_errors=True)
        log.info("retention: removed anonymous session folder %s (%.1f MB): %s", f.path.name, f.size / 2**20, why)
        removed.append(f.path)
    return removed


class Janitor:
    """Sweeps the runs root at start and every `keep.every_s` seconds on a daemon thread."""

    def __init__(self, root: Path, keep: Keep, busy: Callable[[str], bool], clock: Callable[[], float] = time.time,
                 downloads=None):
        self.root, self.keep, self.busy, self.clock = Path(root), keep, busy, clock
        self.downloads = downloads  # shared.Downloads: its copies older than keep.cache_s go too
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loraeq-retention", daemon=True)

    def start(self) -> Janitor:
        log.info("retention: anonymous session folders are kept %g days and %g GB in all; logged-in users' "
                 "folders are kept", self.keep.days, self.keep.gb)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            try:
                sweep(self.root, self.clock(), self.keep, self.busy)
                if self.downloads is not None:
                    self.downloads.forget_old(self.keep.cache_s)
            except OSError:
                log.exception("retention: the sweep failed")
            if self._stop.wait(self.keep.every_s):
                return
