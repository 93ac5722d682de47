"""Judges (evals/judge.py) on a tiny trained run: judged checks ruled by an OpenAI-compatible
endpoint (`loraeq serve` itself, and small HTTP servers that answer as a judge would), replies
parsed so that an unreadable one is never a pass, the judge's reliability against the user's own
decisions (agreement, Cohen's kappa with its interval, position bias), the proof counting a judge
only where it agrees with the user better than chance, battles judged in both orders, and
one-line errors."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_engine import engine, tiny_run  # noqa: F401  (module fixtures: a run with two trained variants)
from test_evalset_run import _hash_embed, _write_set

from adapters.infer.decoding import Sampling
from evals.evalrun import run_evalset
from evals.evalset import load_evalset
from evals.judge import (
    NO_VERDICT,
    TOO_FEW,
    UrlJudge,
    count_judged,
    pairwise_many,
    parse_index,
    parse_letter,
    parse_pass,
    reliability,
    rule,
)
from evals.matrix import EvalFolder, apply_votes, evalset_dir, evalset_results
from evals.votes import VoteStore
from loraeq.main import main

SAMPLING = Sampling(max_new_tokens=6)
PROMPTS = [f"w{i} w{i + 1} ?" for i in range(1, 21, 2)]  # 10 prompts x 3 columns: 30 cells


class Endpoint:
    """A small OpenAI-style chat endpoint whose reply to a judge prompt is `answer(prompt)`."""

    def __init__(self, answer):
        asked = self.asked = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                asked.append(prompt)
                said = answer(prompt)
                if isinstance(said, int):  # an HTTP status: the endpoint refuses this prompt
                    error = json.dumps({"error": {"message": "prompt too long", "type": "invalid_request_error"}})
                    self.send_response(said)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error.encode())
                    return
                reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                          "content": said}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def _taste(answer: str) -> bool:
    """A user's taste, as a rule both the synthetic user and the good judge follow."""
    return sum(map(ord, answer)) % 2 == 0


def _answer_in(prompt: str) -> str:
    return re.search(r"\nAnswer: (.*)\nDoes the answer", prompt, re.S).group(1)


def _rubric_set(tmp_path: Path, name: str, extra: list | None = None) -> Path:
    return _write_set(tmp_path / f"{name}.jsonl", [
        {"prompt": p, "assert": [{"type": "llm-rubric", "value": "answers in w-words"}, *(extra or [])]}
        for p in PROMPTS])


def _vote_by_taste(run, cells: list[dict], n: int = 20) -> list[dict]:
    """The user's own decisions on the first `n` cells: pass where the answer is to their taste."""
    store = VoteStore(run)
    for cell in cells[:n]:
        store.cast(cell["prompt"], cell["column"], "pass" if _taste(cell["text"]) else "fail", settings=cell["settings"])
    return cells[:n]


# ---- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,verdict", [
    ("PASS. It answers in w-words.", True), ("fail: no", False), ("Yes, it does", True), ("N", False),
    ('{"reason": "fits", "pass": true, "score": 1}', True), ('{"pass": "maybe"}', None),
    ("The answer seems fine", None), ("", None), ("Passable", None),
    ("The answer does not meet the rubric.", False), ("The answer satisfies the rubric: it is polite.", True),
    ("The answer doesn't satisfy it", False), ("The answer is not a PASS or FAIL, but meets it", None),
    ("The answer is not a perfect fit for the rubric.", None),
])
def test_a_reply_is_a_verdict_only_when_it_says_one(raw, verdict):
    assert parse_pass(raw) is verdict
    ruled = rule("llm-rubric", "p", raw)
    assert ruled.verdict is verdict and (ruled.why == NO_VERDICT) == (verdict is None)
    assert rule("llm-rubric", "p", raw, negate=True).verdict is (None if verdict is None else not verdict)


def test_factuality_fails_only_a_disagreement_and_select_best_needs_a_number_in_range():
    assert [rule("factuality", "p", r).verdict for r in ("(A) subset", "B", "(C)", "D. they disagree", "E")] == \
        [True, True, True, False, True]
    assert rule("factuality", "p", "F").verdict is None and rule("factuality", "p", "Definitely").verdict is None
    assert parse_letter("Answer: B", ("A", "B", "TIE")) == "B" and parse_letter("tie", ("A", "B", "TIE")) == "TIE"
    assert parse_letter("T", ("A", "B", "TIE")) is None
    assert [parse_index(r, 3) for r in ("1", "Output 2 is best", "3", "none")] == [1, 2, None, None]


# ---- reliability --------------------------------------------------------------------------------


def test_an_always_pass_judge_has_kappa_zero_and_does_not_count():
    user = [True] * 12 + [False] * 8
    always = reliability([(True, u) for u in user])
    assert always["n"] == 20 and always["agreement"] == 0.6 and always["kappa"] == 0.0
    assert always["kappa_ci"][0] < 0 < always["kappa_ci"][1] and not always["counted"]
    good = reliability([(u if i else not u, u) for i, u in enumerate(user)])  # one disagreement in 20
    assert good["kappa"] > 0.8 and good["kappa_ci"][0] > 0 and good["counted"]
    few = reliability([(u, u) for u in user[6:15]])  # perfect, but 9 decisions
    assert few["kappa"] == 1.0 and not few["counted"] and few["note"] == TOO_FEW
    one_label = reliability([(True, True)] * 12)
    assert one_label["kappa"] is None and not one_label["counted"]


def test_count_judged_recomputes_verdicts_without_a_judge_that_does_not_count():
    def cell(judged, plain, override):
        return {"checks": [{"name": "llm-rubric", "passed": judged}, {"name": "contains", "passed": plain}],
                "passed": judged and plain, "override": override}

    cells = [cell(True, i % 3 > 0, "pass" if i % 2 else "fail") for i in range(12)]
    counted, (judge,) = count_judged(cells)
    assert judge["check"] == "llm-rubric" and judge["kappa"] == 0.0 and not judge["counted"]
    assert [c["passed"] for c in counted] == [i % 3 > 0 for i in range(12)]  # the plain check alone


# ---- judged eval sets ---------------------------------------------------------------------------


def test_an_always_pass_judge_is_shown_with_kappa_zero_and_not_counted_by_the_proof(engine, tiny_run,  # noqa: F811
                                                                                    tmp_path):
    from evals.proof import evaluate_run

    evalset = load_evalset(_rubric_set(tmp_path, "always"))
    folder = evalset_dir(tiny_run, evalset.name)
    with Endpoint(lambda prompt: "PASS") as endpoint:
        summary = run_evalset(engine, evalset, folder, sampling=SAMPLING, embed_fn=_hash_embed,
                              judge_model=UrlJudge(endpoint.url, "always-pass"))
    assert len(endpoint.asked) == 30 and summary["judges"][0]["n"] == 0 and not summary["judges"][0]["counted"]
    cells = EvalFolder(folder).cells()
    assert all(c["checks"][0]["passed"] is True and c["checks"][0]["judge"]["raw"] == "PASS" for c in cells)
    assert all(c["checks"][0]["judge"]["prompt"].startswith("You grade an answer") for c in cells)
    voted = _vote_by_taste(tiny_run, cells)
    assert {_taste(c["text"]) for c in voted} == {True, False}  # the user passes some and fails others

    (result,) = [es for es in evalset_results(tiny_run) if es["name"] == evalset.name]
    (judge,) = result["judges"]
    assert judge["n"] == 20 and judge["kappa"] == 0.0 and not judge["counted"]
    by_column = {c["name"]: c for c in result["columns"]}
    for name in ("base", "uniform", "early"):  # only the user's own decisions are left to count
        mine = [c for c in voted if c["column"] == name]
        assert by_column[name]["total"] == len(mine)
        assert by_column[name]["passed"] == sum(_taste(c["text"]) for c in mine)
    report = evaluate_run(tiny_run, limit=4, seed=0).to_json()
    shown = next(es for es in report["evalsets"] if es["name"] == evalset.name)
    assert {c["name"]: c["passed"] for c in shown["columns"]} == {n: c["passed"] for n, c in by_column.items()}
    md = (Path(tiny_run) / "report.md").read_text()
    assert "kappa 0.00" in md and "not counted in pass rates or the proof" in md


def test_a_judge_that_shares_the_users_taste_is_counted(engine, tiny_run, tmp_path):  # noqa: F811
    evalset = load_evalset(_rubric_set(tmp_path, "taste"))
    folder = tmp_path / "taste"
    with Endpoint(lambda prompt: "PASS" if _taste(_answer_in(prompt)) else "FAIL") as endpoint:
        run_evalset(engine, evalset, folder, sampling=SAMPLING, embed_fn=_hash_embed,
                    judge_model=UrlJudge(endpoint.url, "taste"))
    cells = EvalFolder(folder).cells()
    voted = _vote_by_taste(tiny_run, cells)
    overridden = apply_votes(cells, VoteStore(tiny_run))
    counted, (judge,) = count_judged(overridden)
    assert judge["n"] == len(voted) == 20 and judge["agreement"] == 1.0 and judge["counted"]
    assert [c["passed"] for c in counted] == [_taste(c["text"]) for c in cells]  # the judge's verdicts count


def test_a_judge_url_that_does_not_answer_is_named_and_the_other_checks_run(engine, tmp_path):  # noqa: F811
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()  # nothing listens there now
    evalset = load_evalset(_rubric_set(tmp_path, "down", [{"type": "contains", "value": "w"}]))
    summary = run_evalset(engine, evalset, tmp_path / "down", sampling=SAMPLING, embed_fn=_hash_embed,
                          judge_model=UrlJudge(url, "judge", timeout=5))
    assert any(note.startswith(f"judge {url} does not answer") for note in summary["notes"])
    cells = EvalFolder(tmp_path / "down").cells()
    assert all(c["checks"][0]["passed"] is None and url in c["checks"][0]["detail"] for c in cells)
    assert all(isinstance(c["checks"][1]["passed"], bool) for c in cells)  # contains ran
    assert all(c["passed"] is (None if c["checks"][1]["passed"] else False) for c in cells)


def test_a_prompt_the_judge_refuses_has_no_verdict_and_the_rest_are_ruled(engine, tmp_path):  # noqa: F811
    evalset = load_evalset(_rubric_set(tmp_path, "refused"))
    with Endpoint(lambda prompt: 400 if "Question: w1 w2 ?" in prompt else "FAIL") as endpoint:
        summary = run_evalset(engine, evalset, tmp_path / "refused", sampling=SAMPLING, embed_fn=_hash_embed,
                              judge_model=UrlJudge(endpoint.url, "picky"))
    assert any("refused 3 of 30 prompts (first: HTTP 400: prompt too long)" in n for n in summary["notes"])
    verdicts = [(c["prompt"], c["checks"][0]["passed"]) for c in EvalFolder(tmp_path / "refused").cells()]
    assert all((v is None) == (p == "w1 w2 ?") for p, v in verdicts) and (PROMPTS[1], False) in verdicts


def test_loraeq_serve_itself_can_judge_and_every_cell_keeps_prompt_reply_and_verdict(engine, tmp_path):  # noqa: F811
    import uvicorn

    from adapters.base.loading import load_model
    from adapters.infer.engine import CompareEngine
    from loraeq.serve import build_app

    from conftest import tiny_causal_lm, tiny_tokenizer

    folder = tmp_path / "judge-model"  # a tiny model that reads a judge's prompt (512 positions)
    tiny_causal_lm("llama", max_position_embeddings=512).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    judge_engine = CompareEngine(load_model(str(folder), "fp32"), {})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(build_app(judge_engine, api_key="k"), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        thread.join(0.05)
    rows = [{"prompt": p, "assert": [{"type": "factuality", "value": "w1"},
                                     {"type": "select-best", "value": "the shortest"}]} for p in PROMPTS[:3]]
    evalset = load_evalset(_write_set(tmp_path / "served.jsonl", rows))
    try:
        summary = run_evalset(engine, evalset, tmp_path / "served", sampling=SAMPLING, embed_fn=_hash_embed,
                              judge_model=UrlJudge(f"http://127.0.0.1:{port}/v1", "base", api_key="k"))
    finally:
        srv.should_exit = True
        thread.join(10)
        judge_engine.close()
    cells = EvalFolder(tmp_path / "served").cells()
    assert len(cells) == 9 and not summary["notes"]
    for cell in cells:
        for result in cell["checks"]:
            assert set(result["judge"]) == {"name", "prompt", "raw", "parsed"} and result["judge"]["raw"] is not None
            assert (result["passed"] is None) == (result["detail"] == NO_VERDICT)  # a tiny model's words: no verdict
    assert [j["check"] for j in summary["judges"]] == ["factuality", "select-best"]


def test_without_a_judge_the_judged_checks_are_listed_as_not_run(engine, tmp_path):  # noqa: F811
    evalset = load_evalset(_rubric_set(tmp_path, "none", [{"type": "contains", "value": "w"}]))
    summary = run_evalset(engine, evalset, tmp_path / "none", sampling=SAMPLING, embed_fn=_hash_embed)
    assert len(summary["unsupported"]) == 10 and summary["unsupported"][0]["type"] == "llm-rubric"
    assert "--judge MODEL" in summary["unsupported"][0]["reason"] and summary["judges"] == []
    assert all([r["name"] for r in c["checks"]] == ["contains"] for c in EvalFolder(tmp_path / "none").cells())


# ---- battles ----------------------------------------------------------------------------------


def _battles(run, n: int) -> list[int]:
    from evals.arena import BattleStore

    store, ids = BattleStore(run), []
    for i in range(n):
        a, b = ("uniform", "early") if i % 2 else ("early", "base")
        good_first = i % 3 > 0
        conversation = {"system": None,
                        "a": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "good" if good_first else "meh"}],
                        "b": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "meh" if good_first else "good"}]}
        ids.append(store.record(a, b, "a" if good_first else "b", conversation=conversation, settings={}))
    return ids


def test_a_pairwise_judge_asks_both_orders_and_counts_a_flip_as_a_tie_and_position_bias(tiny_run, capsys):  # noqa: F811
    from evals.arena import BattleStore

    ids = _battles(tiny_run, 12)
    store = BattleStore(tiny_run)
    with Endpoint(lambda prompt: "A") as first:  # always the first answer shown: pure position bias
        picks = store.ask_judge(UrlJudge(first.url, "first"), ids)
        assert len(first.asked) == 24 and {p.winner for p in picks.values()} == {"tie"}
        assert all(p.position_bias for p in picks.values())
    biased = store.judge_reliability("first at " + first.url)
    assert biased["position_bias"] == 1.0 and not biased["counted"]

    def content(prompt: str) -> str:
        return "A" if "Answer A: good" in prompt else "B"

    with Endpoint(content) as fair:
        assert main(["arena", str(tiny_run), "--judge-url", fair.url, "--judge-model", "fair", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert len(fair.asked) == 2 * len(BattleStore(tiny_run).battles())
        assert main(["arena", str(tiny_run), "--judge-url", fair.url, "--judge-model", "fair"]) == 0
        assert len(fair.asked) == 2 * len(BattleStore(tiny_run).battles())  # judged battles are not asked again
    text = capsys.readouterr().out
    fair_judge = next(j for j in data["judges"] if j["judge"].startswith("fair"))
    assert fair_judge["agreement"] == 1.0 and fair_judge["position_bias"] == 0.0 and fair_judge["counted"]
    assert "battle judge pairwise (judge fair at" in text and "position bias 0%" in text


def test_pairwise_many_without_a_readable_pick_gives_no_verdict():
    class Words:
        name = "words"

        def replies(self, prompts):
            return ["I think so"] * len(prompts)

    (pick,) = pairwise_many(Words(), [("q", "x", "y")])
    assert pick.winner is None and not pick.position_bias and pick.rulings[0].why == NO_VERDICT


# ---- the CLI's errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--judge-model", "x"], "--judge-model names the model at --judge-url: give --judge-url too"),
    (["--judge-url", "ftp://host", "--judge-model", "x"], "--judge-url 'ftp://host': give an http(s) URL"),
    (["--judge-url", "http://127.0.0.1:9/v1"], "--judge-model: name the model the endpoint serves"),
    (["--judge", "/no/such/judge"], "/no/such/judge"),
], ids=["model-without-url", "bad-url", "url-without-model", "missing-model"])
def test_bad_judge_flags_get_one_line_and_exit_2(tiny_run, tmp_path, capsys, flags, message):  # noqa: F811
    path = _rubric_set(tmp_path, "flags")
    assert main(["evalset", str(tiny_run), "--set", str(path), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
