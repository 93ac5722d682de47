"""Where runs are kept, how long anonymous sessions' folders live (with a clock the test controls),
and the My runs tab's handlers: list, open, resume, delete, never another user's run."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from adapters.errors import LoraEqError
from playground.jobs import JobQueue
from playground.sessions import Session, SessionArea
from playground.shared import ModelRegistry, Shared
from playground.storage import GB, Janitor, Keep, anonymous_folders, plan_removals, runs_location, sweep

DAY = 86400.0
NOW = 1_800_000_000.0


# ---- where the runs go ---------------------------------------------------------------------------

def test_runs_location_flag_then_env_then_space_storage_then_default(tmp_path):
    data = tmp_path / "data"
    assert runs_location("mine", {"LORAEQ_RUNS_DIR": "/x"}, data) == (Path("mine"), "--runs-dir")
    assert runs_location(None, {"LORAEQ_RUNS_DIR": "/x", "SPACE_ID": "u/s"}, data) == (Path("/x"), "$LORAEQ_RUNS_DIR")
    where, why = runs_location(None, {"SPACE_ID": "u/s"}, data)  # a Space without persistent storage
    assert where == Path("runs") and "lost when the Space restarts" in why
    data.mkdir()
    where, why = runs_location(None, {"SPACE_ID": "u/s"}, data)
    assert where == data / "loraeq-runs" and "persistent storage" in why
    data.chmod(0o500)
    try:
        if not os.access(data, os.W_OK):  # root can write anywhere: the check means nothing then
            assert runs_location(None, {"SPACE_ID": "u/s"}, data)[0] == Path("runs")
    finally:
        data.chmod(0o700)
    assert runs_location(None, {}, data) == (Path("runs"), "the default")  # not a Space: /data is not ours


def test_the_app_prints_where_runs_are_kept(tmp_path, monkeypatch, capsys):
    """`main` says where and why before anything else (a bad users file stops it right after)."""
    from playground import app

    monkeypatch.setenv("LORAEQ_RUNS_DIR", str(tmp_path / "kept"))
    monkeypatch.setattr(app, "_log_to_stdout", lambda: None)  # leave this process's logging as it is
    with pytest.raises(SystemExit, match="users file"):
        app.main(["--users", str(tmp_path / "missing.txt")])
    assert f"runs are kept in {tmp_path / 'kept'} ($LORAEQ_RUNS_DIR)" in capsys.readouterr().out


def test_keep_from_env_and_its_checks():
    assert Keep.from_env({}) == Keep(7.0, 20.0)
    assert Keep.from_env({"LORAEQ_KEEP_DAYS": "0.5", "LORAEQ_KEEP_GB": "2"}) == Keep(0.5, 2.0)
    with pytest.raises(LoraEqError, match=r"\$LORAEQ_KEEP_DAYS='soon'"):
        Keep.from_env({"LORAEQ_KEEP_DAYS": "soon"})
    with pytest.raises(LoraEqError, match="gb=0.0"):
        Keep.from_env({"LORAEQ_KEEP_GB": "0"})


# ---- retention -----------------------------------------------------------------------------------

def _session_folder(area: SessionArea, user: str | None = None, *, age_days: float, size: int = 1000) -> Path:
    """A session's folder with a run holding `size` bytes, every file last touched `age_days` before NOW."""
    session = Session(user=user)
    _, run = area.new_run(session)
    (run / "adapter.bin").write_bytes(b"x" * size)
    stamp = NOW - age_days * DAY
    for path in [*area.folder(session).rglob("*"), area.folder(session)]:
        os.utime(path, (stamp, stamp))
    return area.folder(session)


def test_expired_anonymous_folders_go_and_logged_in_users_runs_stay(tmp_path, caplog):
    area = SessionArea(tmp_path / "runs")
    old = _session_folder(area, age_days=8)
    fresh = _session_folder(area, age_days=6)
    ann = _session_folder(area, "ann", age_days=400)
    with caplog.at_level(logging.INFO, logger="loraeq.storage"):
        removed = sweep(area.root, NOW, Keep(days=7, gb=20))
    assert removed == [old] and not old.exists()
    assert fresh.is_dir() and ann.is_dir() and any(ann.glob("run-*/adapter.bin"))
    assert (area.root / ".session-secret").is_file()  # the server's key is not a session folder
    [line] = [r.getMessage() for r in caplog.records]
    assert old.name in line and "unused for 8.0 days (keep 7)" in line
    assert sweep(area.root, NOW + 1.5 * DAY, Keep(days=7, gb=20)) == [fresh]  # the clock moved on


def test_the_size_cap_removes_the_least_recently_used_first(tmp_path, caplog):
    area = SessionArea(tmp_path / "runs")
    mb = 1 << 20
    oldest = _session_folder(area, age_days=3, size=mb)
    middle = _session_folder(area, age_days=2, size=mb)
    newest = _session_folder(area, age_days=1, size=mb)
    user = _session_folder(area, "ann", age_days=5, size=5 * mb)  # users' bytes do not count
    keep = Keep(days=7, gb=2.5 * mb / GB)
    with caplog.at_level(logging.INFO, logger="loraeq.storage"):
        assert sweep(area.root, NOW, keep) == [oldest]
    assert middle.is_dir() and newest.is_dir() and user.is_dir()
    assert "over the cap" in caplog.records[0].getMessage() and oldest.name in caplog.records[0].getMessage()
    # a busy folder stays however old; it still counts toward the cap, so the next one goes instead
    folders = anonymous_folders(area.root)
    plan = plan_removals(folders, NOW + 30 * DAY, Keep(days=7, gb=1.5 * mb / GB), busy=frozenset({middle.name}))
    assert [f.path for f, _ in plan] == [newest]


def test_a_folder_with_a_running_job_is_never_swept(tmp_path):
    area = SessionArea(tmp_path / "runs")
    old = _session_folder(area, age_days=30)
    assert sweep(area.root, NOW, Keep(), busy=lambda sid: sid == old.name) == []
    assert old.is_dir()


def test_the_janitor_sweeps_at_start_with_its_clock(tmp_path):
    area = SessionArea(tmp_path / "runs")
    old = _session_folder(area, age_days=10)
    janitor = Janitor(area.root, Keep(days=7, every_s=3600), busy=lambda sid: False, clock=lambda: NOW).start()
    try:
        deadline = time.monotonic() + 10
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not old.exists()
    finally:
        janitor.stop()


def test_jobs_busy_tells_a_sessions_queued_or_running_job():
    jobs = JobQueue()
    assert not jobs.busy("s1")
    job = jobs.submit("k", ["--version-that-does-not-exist"], owner="s1", kind="train")
    assert jobs.busy("s1") or job.state in ("finished", "failed")
    deadline = time.monotonic() + 60
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "failed" and not jobs.busy("s1") and not jobs.busy("s2")


# ---- My runs -------------------------------------------------------------------------------------

@pytest.fixture
def shared(tmp_path, cache_home):
    return Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32")


def _planned_run(shared: Shared, session: Session, model_dir, tmp_path, steps: int = 2) -> str:
    """A run written as the Train tab writes it (its plan and data), not trained yet."""
    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} w{i + 2} ?"},
                                                     {"role": "assistant", "content": f"paris w{i}"}]}) + "\n"
                            for i in range(20)))
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.2, seed=0)
    name, path = shared.area.new_run(session)
    create_run(path, variants=[Variant("v", "uniform", Hyper(max_steps=steps, batch_size=4))], split=split,
               data_info=data_info(dataset, split, str(data)), model=str(model_dir), precision="fp32", bands=2)
    return name


def test_my_runs_lists_opens_and_deletes_only_the_sessions_own(shared, tiny_model_dir, tmp_path):
    from playground import tab_runs

    mine, other = Session(), Session()
    name = _planned_run(shared, mine, tiny_model_dir, tmp_path)
    empty, _ = shared.area.new_run(mine)  # reserved, its plan never written
    table, choices = tab_runs.listing(shared, mine)
    assert list(table["run"]) == sorted([name, empty], reverse=True)
    row = table.set_index("run").loc[name]
    assert row["model"] == str(tiny_model_dir) and row["variants finished"] == "0/1"
    assert row["size"].endswith(" KB") and float(row["size"].split()[0]) > 0
    assert row["created"] == time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(name[4:19], "%Y%m%d-%H%M%S"))

    assert tab_runs.listing(shared, other)[0].empty
    for action in (tab_runs.open_run, tab_runs.delete_run, tab_runs.resume_run):
        with pytest.raises(LoraEqError, match="this session has no run"):
            action(shared, name, other)
        with pytest.raises(LoraEqError, match="not a run name"):
            action(shared, "../" + shared.area.ensure_id(mine) + "/" + name, other)
    assert (shared.area.folder(mine) / name).is_dir()

    message, state = tab_runs.open_run(shared, name, mine)
    assert state.run == name and name in message and shared.run_path(mine) == shared.area.folder(mine) / name
    table, _, message, state = tab_runs.delete_run(shared, name, mine)
    assert not (shared.area.folder(mine) / name).exists() and state.run is None
    assert list(table["run"]) == [empty]


def test_a_logged_in_users_runs_are_theirs_from_any_browser(shared, tiny_model_dir, tmp_path):
    from playground import tab_runs

    first_browser, second_browser = Session(user="ann"), Session(user="ann")
    name = _planned_run(shared, first_browser, tiny_model_dir, tmp_path)
    assert shared.area.folder(first_browser) == shared.area.root / "users" / "ann"
    assert list(tab_runs.listing(shared, second_browser)[0]["run"]) == [name]
    assert tab_runs.listing(shared, Session(user="bob"))[0].empty
    assert tab_runs.listing(shared, Session())[0].empty
    with pytest.raises(LoraEqError, match="this session has no run"):
        tab_runs.delete_run(shared, name, Session(user="bob"))


def test_resume_trains_the_unfinished_variants_as_a_job(shared, tiny_model_dir, tmp_path):
    from adapters.train.runs import run_status
    from playground import tab_runs

    session = Session()
    name = _planned_run(shared, session, tiny_model_dir, tmp_path)
    message, state = tab_runs.resume_run(shared, name, session)
    assert "Resuming" in message and state.run == name
    with pytest.raises(LoraEqError, match="already training"):
        tab_runs.resume_run(shared, name, session)
    with pytest.raises(LoraEqError, match="is training"):
        tab_runs.delete_run(shared, name, session)
    path = shared.area.folder(session) / name
    job = shared.jobs.get(str(path))
    deadline = time.monotonic() + 300
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.state == "finished", job.stderr_tail[-1000:]
    assert [v["status"] for v in run_status(path)["variants"]] == ["done"]
    assert tab_runs.listing(shared, session)[0].iloc[0]["variants finished"] == "1/1"
    with pytest.raises(LoraEqError, match="nothing to resume"):
        tab_runs.resume_run(shared, name, session)
