"""What every browser session shares (read-only models, the job line) and what each one owns.

Loaded base models are shared read-only: a registry keeps the few most recently used, keyed by
(model, precision). Everything a user creates (uploads, the equalizer, variants, runs, votes)
lives in that user's `Session` (a `gr.State` value) and under that session's own folder inside
the runs folder, so two users never see each other's work.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from adapters.analysis import Analysis, analyze_loaded
from adapters.loading import LoadedModel, load_model
from playground.jobs import JobQueue

_SESSION_ID = re.compile(r"^[a-f0-9]{16}$")


@dataclass
class Loaded:
    model: LoadedModel
    analysis: Analysis


class ModelRegistry:
    """Loaded bases by (model, precision); at most `capacity` stay in memory."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[tuple, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: str | None, precision: str) -> Loaded:
        key = (spec or "default", precision)
        with self._lock:  # one load at a time: two users asking for one model share one copy
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            model = load_model(spec, precision)
            loaded = Loaded(model, analyze_loaded(model))
            self._items[key] = loaded
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return loaded

    def put(self, spec: str | None, precision: str, loaded: Loaded) -> None:
        with self._lock:
            self._items[(spec or "default", precision)] = loaded


@dataclass
class Shared:
    """Process-wide, read-only after start (the registry and job line lock themselves)."""

    registry: ModelRegistry
    jobs: JobQueue
    runs_dir: Path
    default_model: str | None
    default_precision: str
    engines: "EngineRegistry" = field(default_factory=lambda: EngineRegistry())

    def session_dir(self, session: "Session") -> Path:
        """The session's own folder (uploads, runs); a session gets its id on first use."""
        if session.id is None:
            session.id = secrets.token_hex(8)
        if not _SESSION_ID.match(session.id):
            raise ValueError(f"bad session id {session.id!r}")
        path = self.runs_dir / session.id
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Session:
    """One browser session's own work."""

    id: str | None = None  # set on first use: the initial State value is one copy shared by all
    model: str | None = None
    precision: str = "auto"
    data_path: str | None = None
    equalizer: dict | None = None
    mix: dict = field(default_factory=dict)  # {"weights": ..., "quotas": ...} from the Data tab
    variants: list[dict] = field(default_factory=list)
    run_dir: str | None = None
    last: dict | None = None  # the last comparison's answers, for votes on them


class EngineRegistry:
    """Side-by-side engines (a base with a run's adapters loaded) by run folder; at most `capacity`."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_dir: str):
        from adapters.engine import CompareEngine

        with self._lock:
            if run_dir in self._items:
                self._items.move_to_end(run_dir)
                return self._items[run_dir]
            engine = CompareEngine.from_run(run_dir)
            self._items[run_dir] = engine
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)[1].close()
            return engine

    def forget(self, run_dir: str) -> None:
        """Drop a run's engine (its variants changed: new ones finished training)."""
        with self._lock:
            engine = self._items.pop(run_dir, None)
        if engine is not None:
            engine.close()
