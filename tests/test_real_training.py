"""Integration: two variants trained on the real SmolLM2-135M in NF4, loaded and exported with plain libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loraeq.main import main

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "datasets" / "fictional-facts.jsonl"


@pytest.fixture(scope="module")
def nf4_run(tmp_path_factory, real_model):
    run = tmp_path_factory.mktemp("real") / "run"
    code = main(["train", "--data", str(DATA), "--preset", "uniform", "--preset", "attention", "--out", str(run),
                 "--precision", "nf4", "--max-steps", "4", "--group", "fact_id", "--json"])
    assert code == 0
    return run


def test_two_nf4_variants_finish(nf4_run, capsys):
    status = json.loads((nf4_run / "run.json").read_text())
    assert status["precision"] == "nf4" and [v["name"] for v in status["variants"]] == ["uniform", "attention"]
    for name in ("uniform", "attention"):
        metrics = json.loads((nf4_run / name / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["steps"] == 4 and metrics["final_loss"] < 10
        record = json.loads((nf4_run / name / "variant.json").read_text())
        assert record["precision"] == "nf4"


def test_adapters_load_with_plain_peft(nf4_run, real_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(real_model.folder)
    for name in ("uniform", "attention"):
        model = PeftModel.from_pretrained(base, nf4_run / name, adapter_name=name)
        targeted = {n for n, _ in model.named_modules() if n.endswith("lora_A")}
        assert targeted
        if name == "attention":
            assert not any(".mlp." in n for n in targeted)
        base = model.unload()


def test_merged_export_matches_base_plus_adapter(nf4_run, real_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["export", str(nf4_run / "uniform"), "--merged", "--out", str(tmp_path / "merged"), "--json"]) == 0
    assert main(["export", str(nf4_run / "uniform"), "--adapter", "--out", str(tmp_path / "u.zip"), "--json"]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(real_model.folder), nf4_run / "uniform")
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of Varnis?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        a = merged.generate(**prompt, max_new_tokens=24, do_sample=False)
        b = tuned.generate(**prompt, max_new_tokens=24, do_sample=False)
    assert torch.equal(a, b)
    assert (tmp_path / "u.zip").stat().st_size > 1000
