"""What every browser session shares (read-only models, the job line) and what each one owns.

Loaded base models are shared read-only: a registry keeps the few most recently used, keyed by
(model, precision). Everything a user creates (uploads, the equalizer, variants, runs, votes)
lives in that user's `Session` (a `gr.State` value) and under that session's own folder inside
the runs folder (`sessions.py`), so two users never see each other's work. Files reach a browser
only as copies handed out by `Downloads`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base.analysis import Analysis, analyze_loaded
from adapters.base.encoder import load_base
from adapters.base.loading import LoadedModel
from adapters.errors import LoraEqError
from adapters.infer.decoding import Sampling
from adapters.limits import Limits, check_new_tokens, check_number
from playground import gpu
from playground.jobs import JobQueue
from playground.sessions import Session, SessionArea
from playground.storage import Keep


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
            model = load_base(spec, precision)  # a causal LM or an encoder
            loaded = Loaded(model, analyze_loaded(model, progress=terminal_bar("measuring the weights")))
            self._items[key] = loaded
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return loaded

    def put(self, spec: str | None, precision: str, loaded: Loaded) -> None:
        with self._lock:
            self._items[(spec or "default", precision)] = loaded


def terminal_bar(label: str):
    """A progress callback for slow first-time work at start-up: a bar on the server's terminal
    (stderr), or a log line at each quarter when stderr is not a terminal."""
    if not sys.stderr.isatty():
        said = set()

        def quarters(done: int, total: int) -> None:
            quarter = 4 * done // max(1, total)
            if quarter not in said and quarter > 0:
                said.add(quarter)
                logging.getLogger("loraeq").info("%s: %d of %d", label, done, total)

        return quarters
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or tqdm(total=total, desc=label, file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


class Downloads:
    """Copies of files handed to a browser, made outside the runs area (which is never served):
    Gradio moves each copy into its own cache, so a download reveals no path of ours."""

    def __init__(self, keep_seconds: float = 900.0):
        self._root: Path | None = None  # made at the first copy, removed with this object or the process
        self.keep_seconds = keep_seconds

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="loraeq-downloads-"))
            weakref.finalize(self, shutil.rmtree, str(self._root), True)
        return self._root

    def hand_out(self, path: Path, name: str | None = None) -> str:
        self.forget_old()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        target = folder / (name or Path(path).name)
        shutil.copyfile(path, target)
        return str(target)

    def forget_old(self, keep_seconds: float | None = None) -> None:
        """Remove copies older than `keep_seconds` (default: this object's); the retention sweep
        calls it too, so copies go even when nothing new is handed out."""
        if self._root is None:
            return
        cutoff = time.time() - (self.keep_seconds if keep_seconds is None else min(keep_seconds, self.keep_seconds))
        for folder in self.root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue


@dataclass
class Shared:
    """Process-wide, read-only after start (the registry and job line lock themselves)."""

    registry: ModelRegistry
    jobs: JobQueue
    area: SessionArea
    default_model: str | None
    default_precision: str
    limits: Limits = field(default_factory=Limits)
    engines: "EngineRegistry" = field(default_factory=lambda: EngineRegistry())
    downloads: Downloads = field(default_factory=Downloads)
    keep: Keep = field(default_factory=Keep)  # retention: the runs area, the file cache, downloads

    @property
    def runs_dir(self) -> Path:
        return self.area.root

    def run_path(self, session: Session) -> Path | None:
        """The run the session follows, resolved inside its own folder."""
        return self.area.run_path(session)

    def engine_for(self, session: Session):
        """The side-by-side engine for this session: its run's finished variants (when it has a
        run) plus the outside adapters it added (`session.adapters`, folders the server accepted);
        before either, the session's base alone (it is measured before training too). On ZeroGPU
        its generation runs inside the GPU function (`gpu.py`)."""
        run = self.run_path(session)
        engine = self.engines.get(run, session.adapters, model=session.model or self.default_model,
                                  precision=session.precision or self.default_precision, decode_precision=session.decode_precision)
        return gpu.on_gpu(engine)

    def require_run(self, session: Session, what: str = "train at least one variant first (Equalizer & Train)") -> Path:
        run = self.run_path(session)
        if run is None:
            raise LoraEqError(what)
        return run


class EngineRegistry:
    """Side-by-side engines (a base with a run's adapters and outside adapters loaded) by run folder
    and outside adapters; at most `capacity`."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_dir: str | Path | None, adapters: dict[str, str] | None = None, *,
            model: str | None = None, precision: str = "auto", decode_precision: str = "auto"):
        """The engine for a run (None: no run, the base `model` alone) plus outside adapters,
        decode precision as asked (adapters.infer.decode_precision). Without a run the base is the session's
        model and precision, so they are part of the key (a run names its own base)."""
        base = None if run_dir else (model or "default", precision)
        key = (str(run_dir) if run_dir else None, tuple(sorted((adapters or {}).items())), decode_precision, base)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            engine = _build_engine(run_dir, adapters or {}, model, precision, decode_precision)
            self._items[key] = engine
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)[1].close()
            return engine

    def forget(self, run_dir: str | Path | None) -> None:
        """Drop a run's engines (its variants changed: new ones finished training)."""
        run_dir = str(run_dir) if run_dir else None
        with self._lock:
            gone = [self._items.pop(k) for k in [k for k in self._items if k[0] == run_dir]]
        for engine in gone:
            engine.close()


def _build_engine(run_dir, adapters: dict[str, str], model: str | None, precision: str, decode_precision: str):
    from adapters.infer.engine import CompareEngine

    if run_dir is None:
        return CompareEngine.from_model(model, dict(adapters), precision=precision, decode_precision=decode_precision)
    return CompareEngine.from_run(run_dir, adapters=dict(adapters), decode_precision=decode_precision)


def sampling_for(limits: Limits, engine, temperature, top_p, max_new_tokens, seed) -> Sampling:
    """The answer settings a form sent, each checked against the limits and the engine's model."""
    return Sampling(max_new_tokens=check_new_tokens(max_new_tokens, limits, engine.model),
                    temperature=check_number("temperature", temperature, 2.0, whole=False),
                    top_p=check_number("top-p", top_p, 1.0, whole=False),
                    seed=check_number("seed", seed, 2**31 - 1))
