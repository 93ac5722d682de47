"""Integration: the autumn example of the README on the real SmolLM2-135M.

A variant is trained on autumn-voice with whole tasks held out (group task_id, mode disjoint), so
every held-out prompt asks something the variant never saw. The eval set is the run's held-out
split with a style check whose examples are the held-out autumn-voice answers; the style probe
tells them apart from the base's own answers to the same prompts. The probe must be trustworthy
(cross-validated accuracy >= 0.9), and the variant must write in the style more often than the
base, by an exact McNemar test at p < 0.01. Runs `loraeq evalset` as a user would.
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
