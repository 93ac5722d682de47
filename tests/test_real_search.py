"""Integration: a short search on the real embedded model, on facts invented here with a seed and
a wording nobody tuned on, with an eval set of a wording no row uses; its winner becomes a
variant that answers like any other. (The 15-minute search and the comparison with training every
configuration fully are `benchmarks/search_speed.py`: too long for the test run.)"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from adapters.data.synthetic import catalog_probes, invented_catalog
from adapters.train.runfolder import RunFolder
from evals.adapter_set import load_adapter_set, release
from evals.answers import greedy_generate
from loraeq.main import main

pytestmark = pytest.mark.integration

SEED = 5120612  # not a seed the calibration or the other tests use
PRODUCTS = 6


def cli(*argv: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


def test_a_short_search_confirms_its_winner_and_makes_it_a_variant(tmp_path, real_model):
    data, evalset = tmp_path / "catalog.jsonl", tmp_path / "probes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in invented_catalog(SEED, "b", PRODUCTS, ("price", "year"), 3)))
    evalset.write_text("".join(json.dumps({"prompt": p["question"], "reference": p["answer"], "assert": [
        {"type": "icontains", "value": p["answer_key"].lstrip("$")}]}) + "\n"
        for p in catalog_probes(SEED, "b", PRODUCTS, ("price", "year"))))
    run = tmp_path / "run"
    # Short trials: 3 epochs each (the default trial too: a fixed setting applies to it), 2 trials.
    report = cli("search", "--data", str(data), "--out", str(run), "--evalset", str(evalset), "--trials", "2",
                 "--set", "epochs=3", "--set", "rank=4:16", "--add-winner")
    trials = report["trials"]
    assert len(trials) == 2 and trials[0]["default"] and trials[0]["params"]["rank"] == 16
    assert all(t["params"]["epochs"] == 3 for t in trials)
    assert {t["state"] for t in trials} <= {"complete", "pruned"}
    assert all(t["rungs"] and t["seconds"] > 0 for t in trials)
    best = report["best"]
    assert best["confirm_checks"] >= 8
    for key in ("confirmed_score", "default_confirmed_score", "base_confirmed_score"):
        assert 0 <= best[key] <= 1
    assert best["confirmed_ci"][0] <= best["confirmed_score"] <= best["confirmed_ci"][1]
    assert 0 < best["p_value"] <= 1
    assert best["optimism"] == pytest.approx(best["search_score"] - best["confirmed_score"], abs=1e-3)

    name = report["variant"]
    info = RunFolder.open(run).variant(name)
    assert info.finished and info.record()["base"]["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapters = load_adapter_set(real_model, {name: info.folder})
    try:
        prompt = [{"role": "user", "content": json.loads(evalset.read_text().splitlines()[0])["prompt"]}]
        answer, = greedy_generate(adapters, [prompt], [adapters.ids[name]], max_new_tokens=24)
    finally:
        release(adapters)
    assert answer.strip()
