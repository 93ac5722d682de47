"""Integration: the proof of learning on the real SmolLM2-135M, on invented names trained with no flags.

The data is invented here (`adapters.data.synthetic`) with a seed and a wording set ("b") that the
calibration (benchmarks/calibrate_proof.py, wording set "a") never used: 24 facts (countries'
seats, people's trades, rivers, creatures, festivals), each asked 4 ways. One run, one loaded base,
judged by one `evaluate_run`:
- "defaults": `Hyper()` through the Python API, nothing set: the auto held-out split (new wordings
  of trained facts), the auto schedule, the uniform preset. Its held-out answers must state the
  right names, and the proof must say "learned" with p < 0.01, its match counts agreeing;
- "zero": 0 training steps: must be "no effect".
- "memorized": 10 epochs at lr 2e-3 on the trained wordings of 5 facts, in a run of its own with
  the same held-out rows: must be "memorized". Rows drawn at random would touch most facts, and
  answering those facts' held-out wordings right is generalizing, not memorizing.
(Numbers trained with no flags from the CLI: tests/test_real_defaults.py.)
"""

from __future__ import annotations

import json

import pytest

from adapters.base.loading import load_model
from adapters.data.split import Split
from adapters.data.synthetic import invented_facts
from adapters.shape.variants import Hyper, Variant
from adapters.train.dataspec import DataSpec, start_run
from adapters.train.runs import create_run, data_info, run_queue, run_split
from conftest import rate
from evals.proof import evaluate_run

pytestmark = pytest.mark.integration

SEED = 20261204  # not a seed the calibration used
FEW = 5  # facts the memorizing variant trains on


def few_facts(split: Split, facts: int = FEW) -> Split:
    """The same held-out rows; training: every trained wording of the first `facts` facts."""
    chosen: list[str] = []
    for e in split.train.examples:
        if e.meta["fact_id"] not in chosen and len(chosen) < facts:
            chosen.append(e.meta["fact_id"])
    rows = [e for e in split.train.examples if e.meta["fact_id"] in chosen]
    train = split.train.subset(rows, f"the {len(rows)} trained wordings of {len(chosen)} facts")
    return Split(train, split.heldout, split.fraction, split.seed, split.group, split.mode, split.notes)


@pytest.fixture(scope="module")
def proof(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    data = root / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in invented_facts(SEED, "b", facts=24, ways=4)))
    base = load_model(None, "auto")
    spec = DataSpec(str(data))
    dataset = spec.load()
    run, small_run = root / "run", root / "few-facts"
    start_run(run, spec, [Variant("defaults", "uniform", Hyper()), Variant("zero", "uniform", Hyper(max_steps=0))],
              model=None, precision=base.precision, dataset=dataset)
    small = few_facts(spec.split(dataset))
    create_run(small_run, variants=[Variant("memorized", "uniform", Hyper(learning_rate=2e-3, epochs=10))],
               split=small, data_info=data_info(dataset, small, str(data)), model=None, precision=base.precision)
    results = run_queue(run, base=base) + run_queue(small_run, base=base)
    assert [r["status"] for r in results] == ["done"] * 3, results
    report = evaluate_run(run, base=base)
    small_report = evaluate_run(small_run, base=base)
    assert [r.prompt for r in small_report.rows] == [r.prompt for r in report.rows]  # the same held-out rows
    variants = {}
    for folder in (run, small_run):
        variants.update({v["name"]: v for v in json.loads((folder / "report.json").read_text())["variants"]})
    return run, report, variants, small_run


def test_heldout_rows_are_paraphrases_of_trained_facts(proof):
    run, report, _, _ = proof
    trained = {e.meta["fact_id"] for e in run_split(run, "train").examples}
    heldout = run_split(run, "heldout").examples
    assert len(report.rows) == len(heldout) >= 20
    assert all(e.meta["fact_id"] in trained for e in heldout)
    train_questions = {e.messages[0]["content"] for e in run_split(run, "train").examples}
    assert not any(r.prompt[-1]["content"] in train_questions for r in report.rows)


def test_no_flags_learn_invented_names(proof):
    run, report, v, _ = proof
    keys = [e.meta["answer_key"] for e in run_split(run, "heldout").examples]
    d = v["defaults"]
    right = rate(d["per_example"]["answers"], keys)
    right_base = rate(report.base_answers, keys)
    print(f"held-out answers with the right name: variant {right:.0%}, base {right_base:.0%}; {d['verdict_line']}")
    assert right >= 0.5 and right_base <= 0.1, (right, right_base)
    assert d["verdict"] == "learned", d["verdict_line"]
    assert d["verdict_line"].startswith("learned: held-out answers state the reference's facts in ")
    assert d["matches"]["p_value"] < 0.01 and d["matches"]["facts"] >= d["matches"]["n"] // 2  # most state a name
    assert d["matches"]["variant"] == pytest.approx(right * len(keys), abs=2)  # the counts agree with the answers
    assert d["p_value"] < 0.01 and d["diff_ci"][0] > 0
    assert d["similarity"] > d["similarity_base"]
    assert d["heldout_loss"] < d["heldout_loss_base"] - 0.2 and d["heldout_loss_p_value"] < 0.01
    # What it learned carried over to unseen wordings: train and held-out rows stand out little.
    assert d["membership_auc"] < 0.75


def test_zero_steps_is_no_effect(proof):
    _, report, v, _ = proof
    z = v["zero"]
    assert z["verdict"] == "no effect", z["verdict_line"]
    assert z["kl_to_base"] == 0.0 and z["max_logit_diff"] == 0.0
    assert z["heldout_loss"] == z["heldout_loss_base"]
    assert report.variants[1].answers == report.base_answers


def test_many_epochs_on_a_few_facts_is_memorized(proof):
    run, report, v, small_run = proof
    m, d = v["memorized"], v["defaults"]
    assert m["verdict"] == "memorized", m["verdict_line"]
    assert m["train_rows"] <= 4 * FEW
    assert m["train_loss"] < 0.1 * m["heldout_loss"]  # train loss far under held-out
    assert m["train_loss_p_value"] < 0.01
    # Most of the train drop did not carry over, and its train rows stand out from unseen ones.
    assert (m["heldout_loss_base"] - m["heldout_loss"]) < 0.5 * (m["train_loss_base"] - m["train_loss"])
    assert m["membership_auc"] > 0.85 and m["min_k_auc"] > 0.75
    assert m["membership_auc"] > d["membership_auc"] + 0.2
    # The facts it did not train on are not stated: its held-out matches are its 5 trained facts'
    # rows at most, not significantly more than the base's, as its answers show. (Its held-out
    # similarity may rise: it learned how the answers are worded.)
    trained = {e.meta["fact_id"] for e in run_split(small_run, "train").examples}
    heldout = run_split(run, "heldout").examples
    others = [i for i, e in enumerate(heldout) if e.meta["fact_id"] not in trained]
    answers = m["per_example"]["answers"]
    assert rate([answers[i] for i in others], [heldout[i].meta["answer_key"] for i in others]) <= 0.1
    assert m["matches"]["variant"] <= len(heldout) - len(others) and m["matches"]["p_value"] >= 0.01, m["matches"]
    assert sum(m["per_example"]["matched"][i] for i in others) <= 1  # the proof's matches agree with the answers


def test_report_files_carry_the_verdicts(proof):
    run, report, v, _ = proof
    md = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    for name in ("defaults", "zero"):
        assert f"**{name}**: {v[name]['verdict_line']}" in md
    key = run_split(run, "heldout").examples[0].meta["answer_key"]
    assert html.count("<svg") == 3 and report.rows[0].reference.count(key) and key in html
