"""Running eval sets on a tiny trained run: several prompts x columns in one batch (token-identical
to one prompt at a time), cells and summary in the run folder, style probes on the base's own
answers, votes as overrides, cancel, and `loraeq evalset` with its named errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_engine import engine, tiny_run  # noqa: F401  (module fixtures: a run with two trained variants)

from adapters.infer.decoding import Sampling
from adapters.infer.engine import conversation
from evals.evalrun import run_evalset
from evals.evalset import load_evalset
from evals.matrix import EvalFolder, apply_votes, evalset_dir, summarize
from evals.votes import VoteStore
from loraeq.main import main

HERE = Path(__file__).resolve().parent
PROMPTS = ["w1 w2 ?", "w3 ?", "w4 w5 w6 w7 w8 ?", "hello", "w9 w10 w11 ?"]


def _hash_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for MiniLM: bag of words hashed into 32 dimensions, unit length."""
    out = np.zeros((len(texts), 32))
    for i, t in enumerate(texts):
        for w in t.split():
            out[i, hash(w) % 32] += 1.0
        out[i, -1] += 0.1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("sampling", [Sampling(max_new_tokens=10), Sampling(max_new_tokens=10, temperature=0.9,
                                                                            top_p=0.9, seed=3)],
                         ids=["greedy", "sampled"])
def test_several_prompts_in_one_batch_answer_as_one_prompt_at_a_time(engine, sampling):  # noqa: F811
    many = engine.answer_many([conversation(p, None, None) for p in PROMPTS], sampling=sampling)
    for prompt, answers in zip(PROMPTS, many):
        alone = engine.answer(prompt, sampling=sampling)
        assert [a.label for a in answers] == ["base", "uniform", "early"]
        assert [a.token_ids for a in answers] == [a.token_ids for a in alone], prompt
    assert len({tuple(a.token_ids) for a in many[0]}) > 1  # the variants answer differently from the base


def _write_set(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_promptfoo_config_runs_every_prompt_x_test_x_column(engine, tmp_path):  # noqa: F811
    evalset = load_evalset(HERE / "promptfoo_getting_started.yaml")
    folder = tmp_path / "out"
    summary = run_evalset(engine, evalset, folder, sampling=Sampling(max_new_tokens=6), batch_prompts=3,
                          embed_fn=_hash_embed)
    cells = EvalFolder(folder).cells()
    assert summary["cells"] == len(cells) == 2 * 2 * 3
    assert [c["name"] for c in summary["columns"]] == ["base", "uniform", "early"]
    assert summary["columns"][0]["mcnemar_p"] is None and summary["columns"][1]["mcnemar_p"] is not None
    assert {c["checks"][0]["name"] for c in cells} == {"contains", "icontains"}
    assert all(c["passed"] is False for c in cells)  # a word-level tiny model never writes "Bonjour le monde"
    assert any("providers ignored" in n for n in summary["notes"])
    assert EvalFolder(folder).status()["status"] == "done"
    progress = EvalFolder(folder).progress()
    assert progress["done"] == progress["total"] == 4 and progress["eta_s"] == 0


def test_checks_pass_where_the_answer_has_them_and_votes_override_cells(engine, tiny_run, tmp_path):  # noqa: F811
    sampling = Sampling(max_new_tokens=6)
    base_answer = engine.answer("w1 w2 ?", ["base"], sampling=sampling)[0].text
    first_word = base_answer.split()[0]
    rows = [{"prompt": "w1 w2 ?", "reference": base_answer,
             "assert": [{"type": "starts-with", "value": first_word}, {"type": "similar", "threshold": 0.99}]},
            {"prompt": "w3 ?", "assert": [{"type": "not-contains", "value": "zzz"}, {"type": "is-json"}]}]
    evalset = load_evalset(_write_set(tmp_path / "mine.jsonl", rows))
    folder = evalset_dir(tiny_run, evalset.name)
    summary = run_evalset(engine, evalset, folder, sampling=sampling, embed_fn=_hash_embed)
    cells = EvalFolder(folder).cells()
    base_cell = next(c for c in cells if c["column"] == "base" and c["prompt"] == "w1 w2 ?")
    assert base_cell["passed"] is True and base_cell["similarity_reference"] == pytest.approx(1.0)
    assert summary["unsupported"] == [{"test": "row 2", "type": "is-json",
                                       "reason": "promptfoo's 'is-json' is not run by LoRA EQ"}]
    failing = next(c for c in cells if c["passed"] is False)
    VoteStore(tiny_run).cast(failing["prompt"], failing["column"], "pass", settings=failing["settings"])
    overridden = apply_votes(cells, VoteStore(tiny_run))
    assert [c["override"] for c in overridden].count("pass") == 1
    before = {c["name"]: c["passed"] for c in summarize(cells)}
    after = {c["name"]: c["passed"] for c in summarize(overridden)}
    assert after[failing["column"]] == before[failing["column"]] + 1


def test_the_proof_report_carries_the_runs_eval_sets_with_overrides(engine, tiny_run, tmp_path):  # noqa: F811
    from evals.proof import evaluate_run
    from evals.report import evalset_lines

    sampling = Sampling(max_new_tokens=6)
    base_answer = engine.answer("w3 ?", ["base"], sampling=sampling)[0].text
    rows = [{"prompt": "w3 ?", "assert": [{"type": "starts-with", "value": base_answer.split()[0]}]},
            {"prompt": "w1 w2 ?", "assert": [{"type": "contains", "value": "zzz-never"}]},
            {"prompt": "w4 w5 w6 w7 w8 ?", "assert": [{"type": "contains", "value": "zzz-never"}]}]
    evalset = load_evalset(_write_set(tmp_path / "report-set.jsonl", rows))
    folder = evalset_dir(tiny_run, evalset.name)
    run_evalset(engine, evalset, folder, sampling=sampling, embed_fn=_hash_embed)
    (evalset_dir(tiny_run, "unfinished") / "x").parent.mkdir(parents=True, exist_ok=True)  # no status: left out
    failing = next(c for c in EvalFolder(folder).cells() if c["column"] == "early" and c["passed"] is False)
    VoteStore(tiny_run).cast(failing["prompt"], "early", "pass", settings=failing["settings"])
    expected = {c["name"]: c["passed"] for c in summarize(apply_votes(EvalFolder(folder).cells(),
                                                                      VoteStore(tiny_run)))}

    report = evaluate_run(tiny_run, limit=4, seed=0).to_json()
    shown = [es for es in report["evalsets"] if es["name"] == evalset.name]
    assert len(shown) == 1 and "unfinished" not in [es["name"] for es in report["evalsets"]]
    assert {c["name"]: c["passed"] for c in shown[0]["columns"]} == expected  # the user's override counts
    assert shown[0]["columns"][0]["name"] == "base" and shown[0]["prompts"] == 3
    md = (Path(tiny_run) / "report.md").read_text()
    html = (Path(tiny_run) / "report.html").read_text()
    assert "## Eval sets" in md and f"### {evalset.name}" in md and "<h2>Eval sets</h2>" in html
    early = next(line for line in evalset_lines(report) if line.startswith(f"eval set {evalset.name}: early"))
    assert f"passes {expected['early']}/3" in early and f"vs the base's {expected['base']}/3" in early
    assert early in md


def test_a_style_probe_against_the_bases_own_answers(engine, tmp_path):  # noqa: F811
    sampling = Sampling(max_new_tokens=6)
    examples = [{"prompt": f"w{i} ?", "text": f"w{40 + i % 3} w{41 + i % 3} w42 w43"} for i in range(12)]
    rows = [{"prompt": p, "assert": [{"type": "style", "value": examples}]} for p in PROMPTS]
    evalset = load_evalset(_write_set(tmp_path / "style.jsonl", rows))
    summary = run_evalset(engine, evalset, tmp_path / "style", sampling=sampling, embed_fn=_hash_embed)
    assert len(summary["probes"]) == 1 and summary["probes"][0]["contrast"] == 12
    assert summary["probes"][0]["cv_accuracy"] >= 0.9
    cells = EvalFolder(tmp_path / "style").cells()
    assert all(c["checks"][0]["name"] == "style" and 0 <= c["checks"][0]["score"] <= 1 for c in cells)
    progress = EvalFolder(tmp_path / "style").progress()
    assert progress["done"] == progress["total"] == len(PROMPTS) + 11  # the base answered the examples'
    # prompts too, but "w3 ?" only once: the set asked it already


def test_cancel_stops_before_the_next_batch_and_keeps_earlier_results(engine, tmp_path, monkeypatch):  # noqa: F811
    evalset = load_evalset(_write_set(tmp_path / "c.jsonl", [{"prompt": p} for p in PROMPTS]))
    folder = tmp_path / "c"
    run_evalset(engine, evalset, folder, sampling=Sampling(max_new_tokens=3), embed_fn=_hash_embed)
    kept = (folder / "cells.jsonl").read_text()
    real = engine.answer_many

    def answer_then_cancel(*args, **kwargs):
        EvalFolder(folder).request_cancel()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "answer_many", answer_then_cancel)
    out = run_evalset(engine, evalset, folder, sampling=Sampling(max_new_tokens=3), batch_prompts=2,
                      embed_fn=_hash_embed)
    assert out["status"] == "cancelled" and EvalFolder(folder).status()["status"] == "cancelled"
    assert EvalFolder(folder).progress()["done"] == 2
    assert (folder / "cells.jsonl").read_text() == kept


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_runs_the_promptfoo_example_with_the_real_embedder(tiny_run, capsys):  # noqa: F811
    code = main(["evalset", str(tiny_run), "--set", str(HERE / "promptfoo_getting_started.yaml"),
                 "--columns", "uniform", "--max-new-tokens", "4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["cells"] == 2 * 2 * 2 and data["unsupported"] == []
    base, uniform = data["columns"]
    assert base["name"] == "base" and base["mcnemar_p"] is None and base["total"] == 4
    assert set(uniform) >= {"name", "passed", "total", "pass_rate", "ci", "mean_similarity", "mcnemar_p"}
    assert any("providers ignored" in n for n in data["notes"])
    assert Path(data["folder"]) == evalset_dir(tiny_run, "promptfoo_getting_started")
    assert (Path(data["folder"]) / "summary.json").is_file()


@pytest.mark.parametrize("content,suffix,message", [
    ('{"prompt": "ok"}\n{"reference": "no prompt"}\n', ".jsonl", "row 2: needs a prompt"),
    ('{"prompt": "ok", "assert": [{"type": "contians", "value": "x"}]}\n', ".jsonl", "unknown check type 'contians'"),
    ("prompts: ['a'\ntests: [\n", ".yaml", "not valid YAML at line"),
], ids=["bad-row", "unknown-check", "broken-yaml"])
def test_cli_names_a_bad_row_an_unknown_check_and_broken_yaml_and_exits_2(tiny_run, tmp_path, capsys,  # noqa: F811
                                                                          content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    out = tmp_path / "results"
    assert main(["evalset", str(tiny_run), "--set", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # nothing was started, nothing overwritten


def test_cli_skip_bad_rows_runs_the_rest_and_lists_them(tiny_run, tmp_path, capsys):  # noqa: F811
    path = _write_set(tmp_path / "mixed.jsonl", [{"prompt": "w1 ?"}, {"tags": ["x"]}])
    code = main(["evalset", str(tiny_run), "--set", str(path), "--out", str(tmp_path / "o"), "--skip-bad-rows",
                 "--max-new-tokens", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["prompts"] == 1 and data["rejected"][0]["row"] == "row 2"


# ---- the web tab's handlers (no server) -------------------------------------------------------


def test_the_tab_runs_a_set_as_a_job_shows_the_matrix_opens_cells_takes_overrides_and_downloads(
        tiny_run, tmp_path, monkeypatch):  # noqa: F811
    import shutil
    import time
    from types import SimpleNamespace

    from adapters.errors import LoraEqError
    from adapters.limits import Limits
    from playground import tab_evalsets
    from playground.jobs import JobQueue
    from playground.sessions import Session, SessionArea
    from playground.shared import ModelRegistry, Shared

    shared = Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32", Limits())
    state = Session()
    shared.area.ensure_id(state)
    state.run, run = shared.area.new_run(state)
    shutil.copytree(tiny_run, run, dirs_exist_ok=True, ignore=shutil.ignore_patterns("evalsets", "votes.sqlite*"))
    bad = _write_set(tmp_path / "bad.jsonl", [{"prompt": "w1 ?"}, {"reference": "x"}])
    with pytest.raises(LoraEqError, match="1 bad rows \\(row 2: needs a prompt"):
        tab_evalsets.start(shared, str(bad), False, None, False, ["uniform"], 4, False, "no judge", state)
    good = _write_set(tmp_path / "small.jsonl", [{"prompt": p, "assert": [{"type": "contains", "value": "w"}]}
                                                for p in PROMPTS[:3]])
    shown, _ = tab_evalsets.start(shared, str(good), False, None, False, ["uniform"], 4, False, "no judge", state)
    assert shown.value == "small"
    job = shared.jobs.get(tab_evalsets.job_key(run, "small"))
    deadline = time.monotonic() + 300
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.state == "finished", job.stderr_tail
    status, matrix, table, figure, notes = tab_evalsets.view(shared, "small", state)
    assert status == "Done." and list(table["name"]) == ["base", "uniform"] and figure is not None
    assert matrix.data.shape == (3, 3) and list(matrix.data.columns) == ["prompt", "base", "uniform"]
    detail, selected = tab_evalsets.open_cell(shared, "small", SimpleNamespace(index=[0, 2]), state)
    assert "**uniform**" in detail and "contains: w" in detail and selected["column"] == "uniform"
    flipped = "fail" if matrix.data.iloc[0, 2].startswith("✓") else "pass"
    _, matrix, table, _, _ = tab_evalsets.override(shared, flipped, "small", selected, state)
    assert matrix.data.iloc[0, 2].endswith("(you)") and table["overrides"].tolist() == [0, 1]
    from evals.votes import VoteStore

    assert [v.voter for v in VoteStore(run).votes()] == [shared.area.voter(state)]  # "anonymous:<hash>"
    for kind in ("cells.csv", "cells.jsonl", "summary.csv"):
        assert Path(tab_evalsets.download(shared, kind, "small", state)).stat().st_size > 0
    assert tab_evalsets.choices(shared, state)[1].value == "small"  # after a reload, the results are listed


JUDGE = "always at http://127.0.0.1:9/v1"  # a judge's name as evals.judge names an endpoint


def test_the_tab_offers_only_the_operators_judges_and_puts_the_chosen_ones_flags_on_the_job(monkeypatch):
    from adapters.errors import LoraEqError
    from playground import tab_evalsets

    monkeypatch.setenv("LORAEQ_JUDGES", "fair@http://127.0.0.1:9/v1")
    assert tab_evalsets.judge_labels() == ["no judge", "the built-in model", "fair at http://127.0.0.1:9/v1"]
    argv = tab_evalsets.job_argv(Path("RUN"), "set.jsonl", ["uniform"], 8, False, None, {},
                                 "fair at http://127.0.0.1:9/v1")
    assert argv[-4:] == ["--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "fair"]
    built_in = tab_evalsets.job_argv(Path("RUN"), "set.jsonl", [], 8, False, None, {}, "the built-in model")
    assert built_in[-2:] == ["--judge", "embedded"]
    for none in ("no judge", None):
        argv = tab_evalsets.job_argv(Path("RUN"), "s", [], 8, False, None, {}, none)
        assert not {"--judge", "--judge-url"} & set(argv)
    for typed in ("http://10.0.0.1/v1", "fair@http://10.0.0.1/v1", "--judge", ["the built-in model"]):
        with pytest.raises(LoraEqError, match="choose one of the judges offered") as refused:
            tab_evalsets.job_argv(Path("RUN"), "s", [], 8, False, None, {}, typed)
        assert "\n" not in str(refused.value) and "10.0.0.1" not in str(refused.value).split("(")[-1]


def _judged_cells(n: int = 12) -> list[dict]:
    """One column's cells: a `contains` check that passes, an llm-rubric that an always-fail judge
    failed, and on the last cell a rubric with no verdict (an unreadable reply)."""
    cells = []
    for i in range(n):
        raw = "I am not sure " * 40 if i == n - 1 else "FAIL. It does not."
        judge = {"name": JUDGE, "prompt": f"grade {i}", "raw": raw, "parsed": None if i == n - 1 else "fail"}
        checks = [{"name": "contains", "label": "contains: w", "passed": True, "score": None, "detail": "found",
                   "timed_out": False},
                  {"name": "llm-rubric", "label": "llm-rubric: is kind", "passed": None if i == n - 1 else False,
                   "score": None, "detail": "judge gave no verdict" if i == n - 1 else "judge: fail",
                   "timed_out": False, "judge": judge}]
        cells.append({"case": f"row {i + 1}", "prompt": f"w{i} ?", "history": None, "system": None, "reference": None,
                      "tags": [], "column": "uniform", "variant": "uniform", "text": f"w{i} answer", "tokens": 3,
                      "finish_reason": "stop", "similarity_reference": None, "similarity_base": None,
                      "checks": checks, "passed": None if i == n - 1 else False, "settings": {"temperature": 0.0}})
    return cells


def test_a_judged_check_without_a_verdict_reads_no_verdict_with_the_judges_reply():
    from playground.tab_evalsets import cell_markdown, notes_markdown

    cells = _judged_cells()
    unsure = cell_markdown({**cells[-1], "passed": None})
    rubric = next(line for line in unsure.splitlines() if "llm-rubric" in line)
    assert rubric.startswith("- · no verdict `llm-rubric: is kind`") and "✗" not in rubric
    reply = next(line for line in unsure.splitlines() if "replied:" in line)
    assert reply.startswith(f"  - judge {JUDGE} replied: I am not sure I am")
    assert len(reply) < 300 + 80 and reply.endswith("…")  # the start of a long reply, not all of it
    failed = cell_markdown(cells[0])
    assert "- ✗ `llm-rubric: is kind` judge: fail" in failed and "replied: FAIL. It does not." in failed
    assert "- ✓ `contains: w` found" in failed and "replied" not in failed.split("contains: w")[1].split("\n")[0]
    refused = {**cells[0]["checks"][1], "passed": None, "judge": {**cells[0]["checks"][1]["judge"], "raw": None}}
    assert f"judge {JUDGE} gave no reply" in cell_markdown({**cells[0], "checks": [refused]})
    summary = {"judges": [{"check": "llm-rubric", "judge": JUDGE, "n": 0, "agreement": None, "kappa": None,
                           "kappa_ci": None, "position_bias": None, "counted": False, "note": "too few"}]}
    assert notes_markdown(summary).splitlines()[0].startswith(
        f"- judged check llm-rubric (judge {JUDGE}): no decisions of yours on its cells yet")


def test_the_tab_counts_a_judge_only_where_it_agrees_with_the_users_overrides(tmp_path):
    import shutil

    from test_votes import run_dir as make_run

    from adapters.limits import Limits
    from evals.matrix import write_cells
    from playground import tab_evalsets
    from playground.jobs import JobQueue
    from playground.sessions import Session, SessionArea
    from playground.shared import ModelRegistry, Shared

    shared = Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32", Limits())
    state = Session()
    shared.area.ensure_id(state)
    state.run, run = shared.area.new_run(state)
    shutil.copytree(make_run.__wrapped__(tmp_path), run, dirs_exist_ok=True)
    cells, folder = _judged_cells(), evalset_dir(run, "judged")
    write_cells(cells, folder / "cells.jsonl")
    (folder / "summary.json").write_text(json.dumps({"name": "judged", "judges": [], "columns": []}))
    _, matrix, table, _, notes = tab_evalsets.view(shared, "judged", state)
    # The raw verdicts fail every cell the judge failed; its judge is not calibrated (no decision of
    # the user's yet), so the shown pass rate counts the contains check alone.
    assert summarize(cells)[0]["pass_rate"] == 0.0 and list(table["pass_rate"]) == [1.0]
    assert f"- judged check llm-rubric (judge {JUDGE}): no decisions of yours" in notes
    store = VoteStore(run)
    for cell in cells[:10]:  # the user agrees with the judge on half of them: no better than chance
        store.cast(cell["prompt"], cell["column"], "fail" if int(cell["case"].split()[1]) % 2 else "pass",
                   settings=cell["settings"])
    _, _, table, _, notes = tab_evalsets.view(shared, "judged", state)
    assert f"judge {JUDGE}): agrees with 50% of your 10 decisions" in notes and "not counted" in notes
    # 5 of the 10 overridden cells pass (the user's word), and the two others pass their contains check
    assert list(table["pass_rate"]) == [pytest.approx(7 / 12, abs=1e-4)] and list(table["overrides"]) == [10]
    assert summarize(apply_votes(cells, store))[0]["pass_rate"] == pytest.approx(5 / 11)  # the judge counted
    with open(tab_evalsets.download(shared, "summary.csv", "judged", state), newline="") as f:
        [row] = list(__import__("csv").DictReader(f))
    assert float(row["pass_rate"]) == pytest.approx(7 / 12)  # the download counts as the table does


def test_the_tab_sends_the_chosen_judge_only_with_a_set_that_has_judged_checks(tmp_path, monkeypatch):
    import shutil

    from test_votes import run_dir as make_run

    from adapters.errors import LoraEqError
    from adapters.limits import Limits
    from playground import tab_evalsets
    from playground.sessions import Session, SessionArea
    from playground.shared import ModelRegistry, Shared

    class Line:  # the job line, holding the command lines it is given
        def __init__(self):
            self.argv = {}

        def submit(self, key, argv, owner="", kind="train"):
            self.argv[key] = argv

        def keys(self, owner):
            return list(self.argv)

        def get(self, key):
            return None

        def position(self, key):
            return 1

    monkeypatch.setenv("LORAEQ_JUDGES", "fair@http://127.0.0.1:9/v1")
    shared = Shared(ModelRegistry(), Line(), SessionArea(tmp_path / "runs"), None, "fp32", Limits())
    state = Session()
    shared.area.ensure_id(state)
    state.run, run = shared.area.new_run(state)
    shutil.copytree(make_run.__wrapped__(tmp_path), run, dirs_exist_ok=True)
    judged = _write_set(tmp_path / "judged.jsonl",
                        [{"prompt": "w1 ?", "assert": [{"type": "llm-rubric", "value": "kind"}]}])
    plain = _write_set(tmp_path / "plain.jsonl", [{"prompt": "w1 ?", "assert": [{"type": "contains", "value": "w"}]}])
    label = "fair at http://127.0.0.1:9/v1"
    for path in (judged, plain):
        tab_evalsets.start(shared, str(path), False, None, False, ["uniform"], 4, False, label, state)
    argv = {key.rsplit(":", 1)[-1]: a for key, a in shared.jobs.argv.items()}
    assert argv["judged"][-4:] == ["--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "fair"]
    assert "--judge-url" not in argv["plain"]  # no judged check: no judge is loaded for nothing
    with pytest.raises(LoraEqError, match="choose one of the judges offered"):
        tab_evalsets.start(shared, str(judged), False, None, False, ["uniform"], 4, False, "http://evil/v1", state)
