"""The queue's numbers: read from the environment, checked, and given to the right events; the job
line's refusals say what is full, and it serves users in turn."""

from __future__ import annotations

import time

import pytest

from adapters.errors import LoraEqError
from adapters.limits import Limits
from playground import queueing
from playground.app import build_app, make_shared
from playground.jobs import JobQueue


def test_settings_come_from_the_environment_and_are_checked():
    assert queueing.QueueSettings.from_env({}) == queueing.QueueSettings(size=64, default=4, generation=1, heavy=1)
    env = {"LORAEQ_QUEUE_SIZE": "5", "LORAEQ_GENERATION_CONCURRENCY": "2", "LORAEQ_CONCURRENCY": "3"}
    assert queueing.QueueSettings.from_env(env) == queueing.QueueSettings(size=5, default=3, generation=2)
    with pytest.raises(LoraEqError, match="LORAEQ_GENERATION_CONCURRENCY='two': must be a whole number"):
        queueing.QueueSettings.from_env({"LORAEQ_GENERATION_CONCURRENCY": "two"})
    with pytest.raises(LoraEqError, match="size=0: must be a whole number >= 1"):
        queueing.QueueSettings(size=0)


def test_events_get_their_group_limits(tiny_model_dir, cache_home, tmp_path, monkeypatch):
    monkeypatch.setenv("LORAEQ_GENERATION_CONCURRENCY", "2")
    monkeypatch.setenv("LORAEQ_QUEUE_SIZE", "7")
    demo = build_app(make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs")))
    queueing.apply(demo, queueing.QueueSettings.from_env())
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert (fns["ask"].concurrency_id, fns["ask"].concurrency_limit) == ("generation", 2)
    assert {fns[n].concurrency_id for n in ("suggest", "load_model", "export_merged")} == {"heavy"}
    assert fns["suggest"].concurrency_limit == 1
    assert fns["validate"].concurrency_limit == "default" and fns["validate"].concurrency_id != "generation"
    assert demo._queue.max_size == 7 and demo._queue.default_concurrency_limit == 4


SLOW = ["status", "/nowhere"]  # a real worker: seconds to start, then a refusal


def test_the_line_serves_users_in_turn_and_caps_each_users_waiting_jobs():
    jobs = JobQueue(max_waiting=3, limits=Limits(jobs_waiting=2))
    jobs.submit("first", SLOW, owner="a")
    deadline = time.monotonic() + 30
    while jobs.get("first").state == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.get("first").state == "running"
    jobs.submit("a1", SLOW, owner="a")
    jobs.submit("a2", SLOW, owner="a")
    with pytest.raises(LoraEqError, match="you have 2 jobs waiting, the limit per user"):
        jobs.submit("a3", SLOW, owner="a")
    jobs.submit("b1", SLOW, owner="b")
    jobs.submit("c1", SLOW, owner="c")  # the line is full, but c's first job is always taken
    with pytest.raises(LoraEqError, match="the job line is full: 4 jobs are waiting"):
        jobs.submit("b2", SLOW, owner="b")
    assert [jobs.position(k) for k in ("a1", "b1", "c1", "a2")] == [1, 2, 3, 4]  # in turn, not by arrival
    assert jobs.cancel("b1") and jobs.get("b1").state == "cancelled" and jobs.position("c1") == 2
    for key in ("a1", "a2", "c1", "first"):
        jobs.cancel(key)
    deadline = time.monotonic() + 10
    while (jobs.busy("a") or jobs.busy("c")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not jobs.busy("a") and not jobs.busy("c")


def test_a_job_past_its_kinds_wall_clock_limit_is_stopped_and_says_so():
    jobs = JobQueue(limits=Limits(evalset_seconds=0.5))
    job = jobs.submit("slow", SLOW, owner="a", kind="evalset")  # a worker takes seconds just to start
    deadline = time.monotonic() + 30
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "failed" and job.timed_out, job
    assert job.failure(0) == ("the job ran past its time limit of 0.5 s (LORAEQ_LIMIT_EVALSET_SECONDS) "
                              "and was stopped")
