"""ZeroGPU: with a `spaces` package present (a stand-in that records its calls) generation, the
suggestion, training and the proof run inside `spaces.GPU` functions in this process; without it
nothing is decorated and jobs stay in worker processes."""

from __future__ import annotations

import inspect
import os
import threading
import time
import types

import pytest

from adapters.limits import Limits
from playground import gpu, tab_compare, tab_data, tab_proof, tab_train
from playground.app import make_shared
from playground.sessions import Session


class StandInSpaces(types.ModuleType):
    """What `spaces` offers the app (`spaces.GPU(duration=...)`), recording each decoration and
    each call with the process and thread it ran in."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated: list[tuple[str, int]] = []
        self.calls: list[tuple[str, int, str]] = []

    def GPU(self, duration: int = 60):  # noqa: N802 (the package's name)
        def decorate(fn):
            self.decorated.append((fn.__name__, duration))
            if inspect.isgeneratorfunction(fn):

                def wrapper(*args, **kwargs):
                    self.calls.append((fn.__name__, os.getpid(), threading.current_thread().name))
                    yield from fn(*args, **kwargs)
            else:

                def wrapper(*args, **kwargs):
                    self.calls.append((fn.__name__, os.getpid(), threading.current_thread().name))
                    return fn(*args, **kwargs)

            return wrapper

        return decorate


@pytest.fixture
def spaces(monkeypatch):
    module = StandInSpaces()
    monkeypatch.setitem(__import__("sys").modules, "spaces", module)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    return module


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(variants=2))


def _wait(shared, key: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = shared.jobs.get(key)
        if job and job.state not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {key} still running after {timeout:.0f} s")


def _names(spaces) -> list[str]:
    return [name for name, _, _ in spaces.calls]


def test_every_kind_of_gpu_work_goes_through_spaces_gpu(spaces, shared):
    assert gpu.zero_gpu() and gpu.prepare()
    assert {name for name, _ in spaces.decorated} == {"gpu_generate", "gpu_suggest", "gpu_train", "gpu_proof",
                                                      "gpu_evalset", "gpu_generate_stream", "gpu_search"}
    assert dict(spaces.decorated)["gpu_train"] == gpu.DURATIONS["train"]
    state = Session()
    tab_data.validate(shared, None, "autumn-voice.jsonl", "auto", "", 64, state)

    tab_train.suggest(shared, state, progress=lambda *a, **k: None)
    assert _names(spaces) == ["gpu_suggest"]

    tab_train.add_variant(shared, "v", 4, 1e-3, 2, 4, state)
    tab_train.start_training(shared, state)
    run = shared.run_path(state)
    job = _wait(shared, str(run))
    assert job.state == "finished" and job.process is None, job  # no worker process: it ran here
    assert "done" in tab_train.progress_markdown(shared, state)  # the same progress files the page follows
    assert (run / "v" / "train_log.jsonl").read_text().strip()
    name, pid, thread = spaces.calls[-1]
    assert (name, pid, thread) == ("gpu_train", os.getpid(), "loraeq-jobs")

    tab_compare.load_variants(shared, state)
    frames = list(tab_compare.ask(shared, "w1 w2", "", ["v"], 0.0, 1.0, 4, 0, None, None, "", state))
    assert len(frames) >= 2 and state.chat.labels == ["base", "v"] and state.chat.last.replies["v"].done
    assert _names(spaces)[-1] == "gpu_generate_stream"

    tab_proof.run_proof(shared, 4, state)
    job = _wait(shared, tab_proof.job_key(run))
    assert job.state == "finished", job.failure(shared.jobs.memory_limit)
    assert _names(spaces)[-1] == "gpu_proof" and job.process is None
    assert "No report yet" not in tab_proof.report_view(shared, state)[0]
    assert _names(spaces) == ["gpu_suggest", "gpu_train", "gpu_generate_stream", "gpu_proof"]


def test_a_failing_job_in_process_says_why(spaces, shared):
    job = shared.jobs.submit("bad", ["train", "--resume", "/nonexistent/run"], kind="train")
    job = _wait(shared, "bad", timeout=30)
    assert job.state == "failed" and _names(spaces) == ["gpu_train"]
    assert "exit code 2" in job.failure(shared.jobs.memory_limit) and "nonexistent" in job.failure(0)


def test_without_zero_gpu_nothing_is_decorated_and_jobs_use_workers(monkeypatch, shared):
    module = StandInSpaces()
    monkeypatch.setitem(__import__("sys").modules, "spaces", module)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)  # `spaces` installed, but not a ZeroGPU Space
    assert not gpu.zero_gpu() and not gpu.prepare()
    assert gpu.run_on_gpu("train", lambda x: x + 1, 1) == 2
    engine = object()
    assert gpu.on_gpu(engine) is engine and list(gpu.stream_on_gpu("generate", iter, [1, 2])) == [1, 2]
    job = shared.jobs.submit("bad", ["train", "--resume", "/nonexistent/run"], kind="train")
    job = _wait(shared, "bad", timeout=60)
    assert job.process is not None and job.returncode == 2  # a worker process ran it
    assert module.decorated == [] and module.calls == []


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="'render'"):
        gpu.gpu_decorator("render")
