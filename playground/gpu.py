"""Where the web app's GPU work runs: as before on an ordinary machine, inside `@spaces.GPU` on ZeroGPU.

On a ZeroGPU Space (the `spaces` package is installed and SPACES_ZERO_GPU is set) a process gets
a GPU only while a function decorated with `spaces.GPU` runs, and a worker subprocess started by
the app never gets one. There, generation (Compare), the data-suggested equalizer, and the
jobs (training, the proof, eval sets) run in the app's process inside such a function; the jobs
still run on the job line's thread and write the same progress files the page follows. Anywhere
else nothing changes: the decorator is not applied and jobs stay in worker processes.

`gpu_decorator` is the one place the decorator is looked up, so a test can put a stand-in
`spaces` module in `sys.modules`. This module decides where work runs; it does no work itself
and imports neither torch nor gradio (on ZeroGPU `spaces` must be imported before torch).
"""

from __future__ import annotations

import importlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
# Seconds of GPU one call may hold (ZeroGPU refuses a call whose duration is over the quota left;
# training and the proof ask for more). Each can be changed with LORAEQ_GPU_SECONDS_<KIND>.
DURATIONS = {"generate": 120, "suggest": 120, "train": 1200, "proof": 900, "evalset": 900,
             "search": 1200}
KINDS = tuple(DURATIONS)

# What a decorated call is to run, handed over by a token: ZeroGPU may run the call in a forked
# process, which inherits this table but could not receive a model through pickled arguments.
_handover: dict[str, tuple[Callable, tuple, dict]] = {}
_decorated: dict[tuple, Callable] = {}
_lock = threading.Lock()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "t", "true", "yes")


def spaces_module():
    """The `spaces` package, or None where it is not installed."""
    try:
        return importlib.import_module("spaces")
    except ImportError:
        return None


def zero_gpu() -> bool:
    """True on a ZeroGPU Space: `spaces` is installed and the Space says it is ZeroGPU."""
    return _truthy(os.environ.get(ZERO_GPU_ENV)) and spaces_module() is not None


def duration(kind: str) -> int:
    raw = os.environ.get(f"LORAEQ_GPU_SECONDS_{kind.upper()}")
    return int(float(raw)) if raw else DURATIONS[kind]


def gpu_decorator(kind: str) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` for this kind of work on ZeroGPU; elsewhere a decorator that
    changes nothing."""
    if kind not in DURATIONS:
        raise ValueError(f"GPU work kind {kind!r}: one of {', '.join(KINDS)}")
    spaces = spaces_module() if zero_gpu() else None
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration(kind))


def _function(kind: str, streaming: bool) -> Callable:
    """The decorated function for `kind`, made once per `spaces` module (ZeroGPU wants its GPU
    functions decorated at start-up: `prepare` makes them all)."""
    key = (kind, streaming, id(spaces_module()))
    with _lock:
        if key not in _decorated:
            _decorated[key] = gpu_decorator(kind)(_stream_body(kind) if streaming else _call_body(kind))
        return _decorated[key]


def _call_body(kind: str) -> Callable:
    def body(token: str):
        fn, args, kwargs = _handover[token]
        return fn(*args, **kwargs)

    body.__name__ = body.__qualname__ = f"gpu_{kind}"
    return body


def _stream_body(kind: str) -> Callable:
    def body(token: str):
        fn, args, kwargs = _handover[token]
        yield from fn(*args, **kwargs)

    body.__name__ = body.__qualname__ = f"gpu_{kind}_stream"
    return body


def prepare() -> bool:
    """Decorate every GPU function now (call before the app starts); True on ZeroGPU."""
    if not zero_gpu():
        return False
    for kind in KINDS:
        _function(kind, False)
    _function("generate", True)
    return True


def run_on_gpu(kind: str, fn: Callable, *args, **kwargs):
    """`fn(*args, **kwargs)`, inside the GPU function of `kind` on ZeroGPU; a plain call elsewhere."""
    if not zero_gpu():
        return fn(*args, **kwargs)
    token = secrets.token_hex(8)
    _handover[token] = (fn, args, kwargs)
    try:
        return _function(kind, False)(token)
    finally:
        _handover.pop(token, None)


def stream_on_gpu(kind: str, fn: Callable[..., Iterator], *args, **kwargs) -> Iterator:
    """The items of the generator `fn(*args, **kwargs)`, produced inside the GPU function of
    `kind` on ZeroGPU (the GPU is held until the generator ends); the generator itself elsewhere."""
    if not zero_gpu():
        yield from fn(*args, **kwargs)
        return
    token = secrets.token_hex(8)
    _handover[token] = (fn, args, kwargs)
    try:
        yield from _function(kind, True)(token)
    finally:
        _handover.pop(token, None)


class _Finished:
    """The last item of a generation stream run on the GPU: the finished answers."""

    def __init__(self, answers):
        self.answers = answers


def _deltas_then_answers(stream) -> Iterator:
    yield from stream
    yield _Finished(stream.answers)


class GpuStream:
    """An engine's answer stream read inside the GPU function (deltas as they come, then
    `answers`), for a caller that only iterates it and reads `answers`."""

    def __init__(self, stream):
        self._stream = stream
        self._answers = None

    def __iter__(self) -> Iterator:
        for item in stream_on_gpu("generate", _deltas_then_answers, self._stream):
            if isinstance(item, _Finished):
                self._answers = item.answers
            else:
                yield item

    @property
    def answers(self):
        if self._answers is None:
            return self._stream.answers  # raises the engine's own "read it to its end" error
        return self._answers


class GpuEngine:
    """A side-by-side engine whose generation runs inside the GPU function; everything else is
    the engine's own."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs) -> GpuStream:
        return GpuStream(self._engine.stream(*args, **kwargs))

    def answer(self, *args, **kwargs):
        return run_on_gpu("generate", self._engine.answer, *args, **kwargs)

    def answer_many(self, *args, **kwargs):
        return run_on_gpu("generate", self._engine.answer_many, *args, **kwargs)


def on_gpu(engine):
    """The engine as callers should use it: wrapped on ZeroGPU, itself elsewhere."""
    return GpuEngine(engine) if zero_gpu() else engine
