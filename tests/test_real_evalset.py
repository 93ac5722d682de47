"""Integration: the autumn example of the README on the real SmolLM2-135M.

A variant is trained on autumn-voice with whole tasks held out (group task_id, mode disjoint), so
every held-out prompt asks something the variant never saw. The eval set is the run's held-out
split with a style check whose examples are the held-out autumn-voice answers; the style probe
tells them apart from the base's own answers to the same prompts. The probe must be trustworthy
(cross-validated accuracy >= 0.9), and the variant must write in the style more often than the
base, by an exact McNemar test at p < 0.01. Runs `loraeq evalset` as a user would; and once
more with the embedded model as the judge of an llm-rubric check, calibrated on 20 decisions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base.loading import cpu_has_fast_bf16
from adapters.data import load_dataset, split_heldout
from adapters.shape.variants import Hyper, Variant
from adapters.train.runs import create_run, data_info, run_queue
from loraeq.main import main

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "datasets" / "autumn-voice.jsonl"


@pytest.fixture(scope="module")
def autumn_run(tmp_path_factory):
    precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    dataset = load_dataset(DATA)
    split = split_heldout(dataset, fraction=0.15, seed=0, group="task_id", mode="disjoint")
    run = tmp_path_factory.mktemp("autumn") / "run"
    hyper = Hyper(max_steps=40, learning_rate=1e-3, batch_size=8, max_length=256)
    create_run(run, variants=[Variant("autumn", "uniform", hyper)], split=split,
               data_info=data_info(dataset, split, str(DATA)), model=None, precision=precision)
    assert [r["status"] for r in run_queue(run)] == ["done"]
    return run


def test_the_autumn_variant_writes_in_the_style_more_often_than_the_base(autumn_run, capsys):
    code = main(["evalset", str(autumn_run), "--set", "heldout", "--style", "heldout", "--max-new-tokens", "48",
                 "--batch-prompts", "16", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    probe = data["probes"][0]
    assert probe["cv_accuracy"] >= 0.9, probe
    base, autumn = data["columns"]
    assert base["name"] == "base" and autumn["name"] == "autumn"
    style_base, style_autumn = base["by_check"]["style"], autumn["by_check"]["style"]
    assert style_autumn["pass_rate"] > style_base["pass_rate"], (style_base, style_autumn)
    assert style_autumn["mcnemar_p"] < 0.01, style_autumn
    print(f"style rate base {style_base['pass_rate']:.2f}, autumn {style_autumn['pass_rate']:.2f}, "
          f"McNemar p {style_autumn['mcnemar_p']:.2g}, probe accuracy {probe['cv_accuracy']:.2f}")


AUTUMN_WORDS = ("autumn", "leaves", "leaf", "harvest", "amber", "golden", "fall", "crisp", "season")
QUESTIONS = ["How do I make tea?", "What is a good name for a cat?", "Describe a quiet street.",
             "How should I start my morning?", "What is a library for?", "Tell me about rivers.",
             "Why do people keep diaries?", "What makes a good friend?", "Describe a walk in a park.",
             "How do birds find their way?"]


def test_the_embedded_model_judges_a_rubric_and_its_agreement_with_20_decisions_is_reported(autumn_run, tmp_path,
                                                                                          capsys):
    from evals.matrix import evalset_results
    from evals.votes import VoteStore

    path = tmp_path / "rubric.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "assert": [
        {"type": "llm-rubric", "value": "The answer speaks of autumn: falling leaves, harvest or cool air."}]}) + "\n"
        for q in QUESTIONS))
    code = main(["evalset", str(autumn_run), "--set", str(path), "--judge", "embedded", "--max-new-tokens", "32",
                 "--batch-prompts", "10", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    cells = [json.loads(line) for line in (Path(data["folder"]) / "cells.jsonl").read_text().splitlines()]
    assert len(cells) == 20
    for cell in cells:
        (result,) = cell["checks"]
        assert result["judge"]["prompt"] and result["judge"]["raw"] is not None
        assert (result["passed"] is None) == (result["judge"]["parsed"] is None)  # a verdict, or no verdict
    store = VoteStore(autumn_run)
    for cell in cells:  # 20 synthetic decisions: the user passes the answers that speak of autumn
        said = any(w in cell["text"].lower() for w in AUTUMN_WORDS)
        store.cast(cell["prompt"], cell["column"], "pass" if said else "fail", settings=cell["settings"])
    (judge,) = next(es for es in evalset_results(autumn_run) if es["name"] == "rubric")["judges"]
    assert judge["n"] == sum(c["checks"][0]["passed"] is not None for c in cells) and judge["agreement"] is not None
    assert judge["note"] and judge["counted"] == (judge["n"] >= 10 and judge["kappa_ci"] is not None
                                                  and judge["kappa_ci"][0] > 0)
    verdicts = [c["checks"][0]["passed"] for c in cells]
    print(f"embedded judge: {verdicts.count(True)} pass, {verdicts.count(False)} fail, {verdicts.count(None)} "
          f"no verdict; against 20 decisions: agreement {judge['agreement']}, kappa {judge['kappa']} "
          f"{judge['kappa_ci']}, counted {judge['counted']}")
