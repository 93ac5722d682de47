"""Integration: the proof of learning on the real SmolLM2-135M with the fictional-facts sample.

One run, one loaded base, three variants trained in one queue and judged by one `evaluate_run`:
- "default": 3 epochs at lr 1e-3, rank 16, batch 8 (pinned, so this test's time does not follow the
  auto schedule; tests/test_real_defaults.py trains with no flags): must be "learned" with p < 0.01 on
  held-out paraphrases of the trained facts, its answers stating the facts (the invented names);
- "zero": 0 training steps: must be "no effect";
- "memorized": 10 epochs at lr 2e-3 on 20 rows: must be "memorized".
The split is by `fact_id` in paraphrase mode, so each held-out question asks a trained fact in words
the variants never saw (67 facts, 5 wordings each: 4 trained, 1 held out). The 20 rows of the
memorizing variant are the 4 trained wordings of 5 geography facts, in a run of their own with
the same held-out rows: 20 rows drawn at random would touch about 18 facts, and answering those
facts' held-out wordings right is generalizing, not memorizing.
Full precision (bf16 where the CPU computes it natively): faster than NF4 on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base.loading import cpu_has_fast_bf16, load_model
from adapters.data import load_dataset, split_heldout
from adapters.data.split import Split
from adapters.shape.variants import Hyper, Variant
from adapters.train.runs import create_run, data_info, run_queue, run_split
from evals.proof import evaluate_run

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "datasets" / "fictional-facts.jsonl"


def few_facts(split: Split, category: str = "geography", facts: int = 5) -> Split:
    """The same held-out rows; training: every trained wording of the first `facts` facts of `category`."""
    chosen: list[str] = []
    for e in split.train.examples:
        if e.category == category and e.meta["fact_id"] not in chosen and len(chosen) < facts:
            chosen.append(e.meta["fact_id"])
    rows = [e for e in split.train.examples if e.meta["fact_id"] in chosen]
    train = split.train.subset(rows, f"the {len(rows)} trained wordings of {len(chosen)} {category} facts")
    return Split(train, split.heldout, split.fraction, split.seed, split.group, split.mode, split.notes)


@pytest.fixture(scope="module")
def proof(tmp_path_factory):
    precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    dataset = load_dataset(DATA)
    split = split_heldout(dataset, fraction=0.2, seed=0, group="fact_id")
    small = few_facts(split)
    assert small.train.rows_valid == 20
    root = tmp_path_factory.mktemp("real-proof")
    run, small_run = root / "run", root / "few-facts"
    create_run(run, variants=[
        Variant("default", "uniform", Hyper(epochs=3, learning_rate=1e-3, rank=16)),
        Variant("zero", "uniform", Hyper(max_steps=0)),
    ], split=split, data_info=data_info(dataset, split, str(DATA)), model=None, precision=precision)
    create_run(small_run, variants=[Variant("memorized", "uniform", Hyper(learning_rate=2e-3, epochs=10))],
               split=small, data_info=data_info(dataset, small, str(DATA)), model=None, precision=precision)
    base = load_model(None, precision)
    results = run_queue(run, base=base) + run_queue(small_run, base=base)
    assert [r["status"] for r in results] == ["done"] * 3, results
    report = evaluate_run(run, base=base)
    small_report = evaluate_run(small_run, base=base)
    assert [r.prompt for r in small_report.rows] == [r.prompt for r in report.rows]  # the same held-out rows
    variants = {}
    for folder in (run, small_run):
        variants.update({v["name"]: v for v in json.loads((folder / "report.json").read_text())["variants"]})
    return run, report, variants


def test_heldout_rows_are_paraphrases_of_trained_facts(proof):
    run, report, _ = proof
    trained = {e.meta["fact_id"] for e in run_split(run, "train").examples}
    heldout = run_split(run, "heldout").examples
    assert len(report.rows) == len(heldout) >= 60
    assert all(e.meta["fact_id"] in trained for e in heldout)
    train_questions = {e.messages[0]["content"] for e in run_split(run, "train").examples}
    assert not any(r.prompt[-1]["content"] in train_questions for r in report.rows)


def test_default_settings_learn(proof):
    _, _, v = proof
    d = v["default"]
    assert d["verdict"] == "learned", d["verdict_line"]
    assert d["p_value"] < 0.01 and d["diff_ci"][0] > 0
    assert d["similarity"] > d["similarity_base"]
    assert d["heldout_loss"] < d["heldout_loss_base"] - 0.2 and d["heldout_loss_p_value"] < 0.01
    assert d["verdict_line"].startswith("learned: held-out answers state the reference's facts in ")
    assert d["matches"]["p_value"] < 0.01 and d["matches"]["facts"] >= d["matches"]["n"] // 2  # most state a name
    # What it learned carried over to unseen wordings: train and held-out dropped alike.
    assert d["membership_auc"] < 0.75


def test_zero_steps_is_no_effect(proof):
    _, report, v = proof
    z = v["zero"]
    assert z["verdict"] == "no effect", z["verdict_line"]
    assert z["kl_to_base"] == 0.0 and z["max_logit_diff"] == 0.0
    assert z["heldout_loss"] == z["heldout_loss_base"]
    assert report.variants[1].answers == report.base_answers


def test_many_epochs_on_20_rows_is_memorized(proof):
    _, _, v = proof
    m, d = v["memorized"], v["default"]
    assert m["verdict"] == "memorized", m["verdict_line"]
    assert m["train_rows"] <= 20
    assert m["train_loss"] < 0.1 * m["heldout_loss"]  # train loss far under held-out
    assert m["train_loss_p_value"] < 0.01
    # Most of the train drop did not carry over, and its train rows stand out from unseen ones.
    assert (m["heldout_loss_base"] - m["heldout_loss"]) < 0.5 * (m["train_loss_base"] - m["train_loss"])
    assert m["membership_auc"] > 0.85 and m["min_k_auc"] > 0.75
    assert m["membership_auc"] > d["membership_auc"] + 0.2
    # Held-out similarity no better than the base's: not significantly up.
    assert not (m["diff_ci"][0] > 0 and m["p_value"] < 0.01), m["verdict_line"]


def test_report_files_carry_the_verdicts(proof):
    run, _, v = proof
    md = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    for name in ("default", "zero"):
        assert f"**{name}**: {v[name]['verdict_line']}" in md
    assert html.count("<svg") == 3 and "Teskel" in html
