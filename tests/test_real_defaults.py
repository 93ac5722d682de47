"""Integration: the defaults learn a small fact set nobody tuned them on, and the verdict agrees.

A fact set is invented here (`adapters.data.synthetic`, wording set "b" and a seed that the
calibration in benchmarks/calibrate_proof.py did not use: new names, new facts, new sentences):
35 facts, each asked 4 ways. With no flags (auto held-out size, auto schedule), one variant
trains on the embedded SmolLM2-135M; the held-out rows are new wordings of trained facts. A
second variant takes 2 steps at a tiny learning rate: its loss moves, its answers do not.
"""

from __future__ import annotations

import json
import time

import pytest

from adapters.data.synthetic import invented_facts
from adapters.dataspec import DataSpec, start_run
from adapters.loading import cpu_has_fast_bf16, load_model
from adapters.runs import run_queue, run_split
from adapters.variants import Hyper, Variant
from evals.proof import evaluate_run
from evals.report import power_line

pytestmark = pytest.mark.integration

SEED = 20261130  # not a seed the calibration used


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh-facts")
    data = root / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in invented_facts(SEED, "b", facts=35, ways=4)))
    precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    base = load_model(None, precision)
    run = root / "run"
    start_run(run, DataSpec(str(data)), [Variant("defaults", "uniform", Hyper()),
                                         Variant("nudge", "uniform", Hyper(max_steps=2, learning_rate=1e-4))],
              model=None, precision=precision)
    started = time.perf_counter()
    results = run_queue(run, base=base)
    assert [r["status"] for r in results] == ["done", "done"], results
    report = evaluate_run(run, base=base)
    variants = {v["name"]: v for v in json.loads((run / "report.json").read_text())["variants"]}
    seconds = {r["name"]: r["seconds"] for r in results}
    return run, base, report, variants, seconds, time.perf_counter() - started


def _has_fact(answers: list[str], keys: list[str]) -> float:
    return sum(k.lower() in a.lower() for a, k in zip(answers, keys)) / len(keys)


def test_no_flags_learn_the_facts_and_answer_new_wordings(fresh):
    run, _, report, v, seconds, _ = fresh
    heldout = run_split(run, "heldout").examples
    trained = {e.meta["fact_id"] for e in run_split(run, "train").examples}
    assert 30 <= len(heldout) <= 50 and all(e.meta["fact_id"] in trained for e in heldout)  # auto held-out size
    keys = [e.meta["answer_key"] for e in heldout]
    d = v["defaults"]
    right = _has_fact(d["per_example"]["answers"], keys)
    right_base = _has_fact(report.base_answers, keys)
    assert right >= 0.5 and right_base <= 0.1, (right, right_base, d["verdict_line"])
    assert d["verdict"] == "learned", d["verdict_line"]
    assert min(d["p_value"], d["matches"]["p_value"]) < 0.01
    assert d["headline"].startswith("answers held-out questions like the reference ")
    assert seconds["defaults"] < 300
    schedule = json.loads((run / "defaults" / "variant.json").read_text())["schedule"]
    assert schedule.startswith("auto: ") and "because " in schedule


def test_two_tiny_steps_move_the_loss_not_the_verdict(fresh):
    _, _, _, v, _, _ = fresh
    n = v["nudge"]
    assert n["steps"] == 2 and n["heldout_loss"] != n["heldout_loss_base"]
    assert n["verdict"] != "learned", n["verdict_line"]


def test_the_report_says_when_the_heldout_set_is_too_small(fresh):
    run, base, _, _, _, _ = fresh
    small = evaluate_run(run, base=base, limit=8, write=False).to_json()
    assert small["heldout_rows"] == 8 and small["heldout_too_small"]
    assert power_line(small).startswith("The held-out set (8 rows) is too small to detect a similarity gain of +0.05")
    held = json.loads((run / "report.json").read_text())
    assert held["variants"][0]["heldout_curve"], "held-out loss measured during training"
