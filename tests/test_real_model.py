"""Integration: the embedded SmolLM2-135M-Instruct, loaded offline from the wheel's GGUF."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.base.analysis import analyze_loaded
from adapters.base.models import embedded_gguf
from loraeq.main import main

pytestmark = pytest.mark.integration

LLAMA_ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _greedy(loaded, question: str, tokens: int = 16) -> str:
    tok = loaded.tokenizer
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(loaded.device)
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_the_default_model_is_the_embedded_gguf(real_model):
    assert embedded_gguf() is not None
    assert real_model.source.kind == "gguf" and "SmolLM2-135M-Instruct" in real_model.source.id
    assert (real_model.folder / "model.safetensors").is_file()  # the dequantized cache copy


def test_analyze_json_on_the_default_model(real_model, capsys):
    assert main(["analyze", "--precision", "fp32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == 30 and data["roles"] == LLAMA_ROLES
    assert len(data["cells"]) == 30 * 7
    assert data["total_params"] == 134_515_008
    decoder_linear = sum(
        m.weight.numel()
        for name, m in real_model.model.named_modules()
        if name.startswith("model.layers.") and isinstance(m, torch.nn.Linear)
    )
    assert sum(c["params"] for c in data["cells"]) == decoder_linear
    assert data["model"]["fingerprint"] == real_model.fingerprint
    assert [len(b) for b in data["bands"]] == [8, 8, 7, 7]
    assert all(c["effective_rank"] > 1 and c["stable_rank"] >= 1 for c in data["cells"])


def test_second_analysis_comes_from_the_cache(real_model, tmp_path, monkeypatch):
    import os

    from adapters.cache import cache_dir

    fresh = tmp_path / "cache"
    fresh.mkdir()
    os.symlink(cache_dir("models"), fresh / "models")  # reuse the converted model, not the analysis
    monkeypatch.setenv("LORAEQ_CACHE", str(fresh))
    first = analyze_loaded(real_model)
    second = analyze_loaded(real_model)
    assert (first.cached, second.cached) == (False, True)
    assert second.analysis_seconds < first.analysis_seconds / 10
    assert second.cells == first.cells


def test_nf4_is_small_and_still_knows_paris(real_model, real_model_nf4):
    assert real_model_nf4.memory_bytes < 0.40 * real_model.memory_bytes
    assert "Paris" in _greedy(real_model_nf4, "What is the capital of France?")
    assert "Paris" in _greedy(real_model, "What is the capital of France?")


def test_nf4_analysis_has_the_same_grid(real_model_nf4):
    result = analyze_loaded(real_model_nf4, use_cache=False)
    assert result.total_params == 134_515_008
    assert {c["kind"] for c in result.cells} == {"Linear4bit"}
    assert len(result.cells) == 210
