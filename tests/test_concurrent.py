"""Eight visitors at once on one served app (a tiny model), through gradio_client: each uploads its
own data, trains a variant, asks and votes. Nobody sees another's runs or answers, no vote is
lost, and past the queue's limits a client is told the queue is full instead of an error."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.limits import Limits
from evals.votes import VoteStore
from playground import queueing
from playground.app import build_app, launch_settings, make_shared

SESSIONS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(shared, settings: queueing.QueueSettings):
    demo = build_app(shared)
    queueing.apply(demo, settings)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_settings(shared))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(upload_bytes=20_000))


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _data(tmp_path, k: int):
    """Session k's own rows: every prompt starts with the word w{k}."""
    path = tmp_path / f"visitor-{k}.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"w{k} w{20 + i}"},
                          {"role": "assistant", "content": f"w{k} w{40 + i} w{60 + i}"}]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ask_and_vote(client, prompt: str, variant: str) -> list:
    """The Compare tab's part (one place to adapt when it changes): load the run's variants, ask,
    vote pass on the base column and on the variant's; returns the leaderboard rows."""
    grid = client.predict(api_name="/load_variants")[2]
    client.predict(prompt, "", [variant], 0.0, 1.0, 4, 0, None, grid, "", api_name="/ask")
    client.predict("", api_name="/pass_0")
    board, _ = client.predict("", api_name="/pass_1")  # the leaderboard and the reply's line
    return [dict(zip(board["headers"], row)) for row in board["data"]]


def _train(client, path, timeout: float = 600.0) -> str:
    from gradio_client import handle_file

    report = client.predict(handle_file(str(path)), None, "auto", "", 64, api_name="/validate")[0]
    assert "valid **12**" in report, report
    client.predict("mine", 2, 1e-3, 2, 2, api_name="/add_variant")
    progress = client.predict(api_name="/start_training")
    deadline = time.monotonic() + timeout
    while "**mine** done" not in progress:
        assert time.monotonic() < deadline and "failed" not in progress, progress
        time.sleep(2.0)
        progress = client.predict(api_name="/training_progress")[0]
    return progress


def _visitor(url, tmp_path, k: int) -> dict:
    client = _client(url)
    progress = _train(client, _data(tmp_path, k))
    board = _ask_and_vote(client, f"w{k} w30", "mine")
    return {"k": k, "progress": progress, "board": board}


def test_eight_sessions_at_once_keep_their_work_apart(shared, tmp_path):
    demo, url = _serve(shared, queueing.QueueSettings())
    try:
        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(lambda k: _visitor(url, tmp_path, k), range(SESSIONS)))
    finally:
        demo.close()
    sessions = [p for p in shared.runs_dir.iterdir() if p.is_dir()]
    assert len(sessions) == SESSIONS
    seen = set()
    for folder in sessions:
        uploads = [f.name for f in (folder / "uploads").iterdir()]
        assert len(uploads) == 1, uploads  # its own upload only
        k = int(uploads[0].removeprefix("visitor-").removesuffix(".jsonl"))
        seen.add(k)
        runs = list(folder.glob("run-*"))
        assert len(runs) == 1, runs
        rows = [json.loads(line) for line in (runs[0] / "data" / "train.jsonl").read_text().splitlines()]
        assert rows and all(r["messages"][0]["content"].startswith(f"w{k} ") for r in rows)
        votes = VoteStore(runs[0]).votes()
        assert len(votes) == 2 and {v.prompt for v in votes} == {f"w{k} w30"}, votes  # no vote lost or mixed in
        assert sorted(v.verdict for v in votes) == ["pass", "pass"]
    assert seen == set(range(SESSIONS))
    for r in results:  # each leaderboard shows its own two votes, nobody else's
        assert sorted((row["variant"], row["votes"], row["passes"]) for row in r["board"]) == \
               [("base", 1, 1), ("mine", 1, 1)], r["board"]


def test_a_full_queue_is_answered_with_a_queue_message(shared, tmp_path):
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError, Status

    demo, url = _serve(shared, queueing.QueueSettings(size=1, generation=1))
    try:
        owner = _client(url)
        _train(owner, _data(tmp_path, 1))
        grid = owner.predict(api_name="/load_variants")[2]
        run = next(p for p in shared.runs_dir.iterdir() if p.is_dir()).glob("run-*").__next__()
        engine = shared.engines.get(run, {}, model=shared.default_model, precision="fp32")
        args = ("w1 w30", "", ["mine"], 0.0, 1.0, 4, 0, None, grid, "")
        with engine._lock:  # the one generation slot stays busy until this block ends
            first = owner.submit(*args, api_name="/ask")
            _wait_for(lambda: first.status().code == Status.PROCESSING, "the first question to start")
            second = owner.submit(*args, api_name="/ask")
            _wait_for(lambda: second.status().code == Status.IN_QUEUE, "the second question to wait")
            with pytest.raises((QueueError, AppError), match="Queue is full"):
                _client(url).predict(*args, api_name="/ask")
            body = json.dumps({"data": list(args), "fn_index": _fn_index(demo, "ask"), "session_hash": "x" * 11})
            request = urllib.request.Request(url + "gradio_api/queue/join", body.encode(),
                                             {"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 503
            assert json.loads(refused.value.read())["detail"] == "Queue is full. Max size is 1 and size is 1."
        assert first.result() and second.result()  # the ones let in are answered
    finally:
        demo.close()


def test_an_upload_over_the_limit_is_refused_with_its_size(shared, tmp_path):
    """The client is told before sending; a sender that ignores the limit is stopped by the server."""
    import httpx
    from gradio_client import handle_file

    demo, url = _serve(shared, queueing.QueueSettings())
    big = tmp_path / "big.jsonl"
    big.write_text(_data(tmp_path, 2).read_text() * 100)  # over the 20,000 bytes of this server
    try:
        with pytest.raises(Exception, match="exceeds the maximum file size of 20000 bytes"):
            _client(url).predict(handle_file(str(big)), None, "auto", "", 64, api_name="/validate")
        with big.open("rb") as f:
            answer = httpx.post(url + "gradio_api/upload", files={"files": ("big.jsonl", f)}, timeout=60)
    finally:
        demo.close()
    assert answer.status_code == 413 and "File size exceeded maximum allowed size of 20000 bytes" in answer.text
    assert not any(shared.runs_dir.glob("*/uploads/big.jsonl"))


def _fn_index(demo, api_name: str) -> int:
    return next(i for i, fn in demo.fns.items() if fn.api_name == api_name)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    threading.Event().wait(0.2)  # let the server settle the event's place in the queue
