"""Progress that a follower (the web app's Eval sets and Proof tabs) reads while a job runs: an eval
set says the total, the stage and the batch under way before its prompts finish; the proof says its
stage by name, the time so far and, after an earlier proof of the run, about how long is left."""

from __future__ import annotations

import json

import numpy as np
from test_engine import engine, tiny_run  # noqa: F401  (module fixtures: a run with two trained variants)

from adapters.infer.decoding import Sampling
from evals.evalrun import run_evalset, starting
from evals.evalset import load_evalset
from evals.matrix import PROGRESS, EvalFolder
from evals.progress import PROGRESS_FILE, STAGES, proof_status
from loraeq.main import main
from playground.tab_evalsets import progress_line


def test_an_eval_set_says_what_is_under_way_before_a_batch_finishes(engine, tmp_path, monkeypatch):  # noqa: F811
    rows = tmp_path / "set.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}"}) + "\n" for i in range(5)))
    folder = tmp_path / "out"
    starting(folder, 5)
    assert progress_line(EvalFolder(folder).progress()).startswith("Running `░") and "0/5 prompts · loading" in \
        progress_line(EvalFolder(folder).progress())
    seen, real = [], engine.answer_many

    def answer(*args, **kwargs):  # what a follower reads while this batch is decoding
        seen.append(EvalFolder(folder).progress())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "answer_many", answer)
    run_evalset(engine, load_evalset(rows), folder, sampling=Sampling(max_new_tokens=3), batch_prompts=3,
                embed_fn=lambda texts: np.ones((len(texts), 4)))
    assert [(p["done"], p["total"], p["working"], p["stage"]) for p in seen] == [(0, 5, 3, "answers"),
                                                                                 (3, 5, 2, "answers")]
    assert "0/5 prompts · answering prompts 1-3" in progress_line(seen[0])
    assert "3/5 prompts" in progress_line(seen[1]) and "s left" in progress_line(seen[1])
    assert (folder / PROGRESS).is_file() and EvalFolder(folder).progress()["done"] == 5


def test_the_proof_says_its_stage_by_name_and_after_an_earlier_proof_how_long_is_left(tiny_run, capsys):  # noqa: F811
    assert main(["eval", str(tiny_run), "--json"]) == 0
    records = [json.loads(line) for line in (tiny_run / PROGRESS_FILE).read_text().splitlines()]
    assert [r["done"] for r in records] == list(range(len(STAGES))) and records[-1]["total"] == len(STAGES) - 1
    started = records[0]["started"]
    # As a follower reads it mid-way: the answers stage, 2 s after the start.
    (tiny_run / PROGRESS_FILE).write_text(json.dumps({**records[2], "time": started + 1}) + "\n")
    line = proof_status(tiny_run, now=started + 2)
    assert line.startswith(f"Measuring, stage 3 of {len(STAGES)}: answers to the held-out prompts · 2 s so far")
    assert "s left (as the last proof of this run took)" in line  # the finished proof's stage times
    (tiny_run / PROGRESS_FILE).unlink()
    assert proof_status(tiny_run) == ""
