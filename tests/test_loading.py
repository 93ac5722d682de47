"""Model sources, precision choice and loading, on tiny models saved the way users keep them."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import tiny_causal_lm, tiny_tokenizer

from adapters.base import loading
from adapters.base.analysis import analyze_loaded
from adapters.base.loading import choose_precision, load_model
from adapters.base.models import fingerprint, resolve_source
from adapters.errors import LoraEqError


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_folder_loads_frozen_and_is_never_written(tiny_model_dir, cache_home):
    before = _digest(tiny_model_dir)
    loaded = load_model(str(tiny_model_dir), "fp32")
    assert loaded.precision == "fp32" and loaded.source.kind == "folder"
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training
    weights = sum(p.numel() * 4 for p in loaded.model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in loaded.model.buffers())
    assert loaded.memory_bytes == weights + buffers
    analyze_loaded(loaded)
    assert _digest(tiny_model_dir) == before


def test_bf16_halves_the_footprint(tiny_model_dir, cache_home):
    fp32 = load_model(str(tiny_model_dir), "fp32")
    bf16 = load_model(str(tiny_model_dir), "bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert 0.49 * fp32.memory_bytes < bf16.memory_bytes < 0.51 * fp32.memory_bytes


def test_nf4_quantizes_the_layers_and_keeps_their_statistics(tiny_model_dir, cache_home):
    fp32 = analyze_loaded(load_model(str(tiny_model_dir), "fp32"))
    nf4_model = load_model(str(tiny_model_dir), "nf4")
    nf4 = analyze_loaded(nf4_model)
    assert type(nf4_model.model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert nf4.total_params == fp32.total_params  # counted unpacked, not as packed bytes
    assert [c["params"] for c in nf4.cells] == [c["params"] for c in fp32.cells]
    assert nf4.memory_bytes < fp32.memory_bytes
    for a, b in zip(fp32.cells, nf4.cells):
        assert b["kind"] == "Linear4bit"
        # NF4 is lossy: the dequantized weight is measured, close to but not equal to fp32.
        assert b["frobenius"] == pytest.approx(a["frobenius"], rel=0.1)
        assert b["frobenius"] != a["frobenius"]


def test_analysis_is_cached_per_fingerprint_and_precision(tiny_model_dir, cache_home):
    loaded = load_model(str(tiny_model_dir), "fp32")
    first = analyze_loaded(loaded)
    second = analyze_loaded(loaded)
    assert (first.cached, second.cached) == (False, True)
    assert second.cells == first.cells
    assert len(list((cache_home / "analysis").glob(f"{loaded.fingerprint}-fp32-*.json"))) == 1


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    source = resolve_source(str(tiny_model_dir))
    before = fingerprint(source)
    assert fingerprint(source) == before
    other = tmp_path / "other"
    tiny_causal_lm("llama", seed=1).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    assert fingerprint(resolve_source(str(other))) != before


def test_auto_picks_nf4_when_full_precision_does_not_fit(monkeypatch):
    monkeypatch.setattr(loading, "free_memory_bytes", lambda device: 1_000_000)
    choice = choose_precision("auto", 10_000_000, "cpu")
    assert choice.precision == "nf4" and "free" in choice.reason


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_picks_the_fastest_full_precision(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(loading, "free_memory_bytes", lambda device: 1 << 40)
    monkeypatch.setattr(loading, "cpu_has_fast_bf16", lambda: fast_bf16)
    choice = choose_precision("auto", 1000, "cpu")
    assert choice.precision == expected and choice.reason


def test_auto_on_cuda_is_nf4():
    assert choose_precision("auto", 1000, "cuda").precision == "nf4"


def test_unknown_precision_names_the_value():
    with pytest.raises(LoraEqError, match="'fp8'"):
        choose_precision("fp8", 1000, "cpu")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(LoraEqError, match="no such file or folder"):
        resolve_source(str(tmp_path / "nope"))


def test_hub_ids_are_recognised_without_touching_the_network():
    source = resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct@main")
    assert (source.kind, source.id, source.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")


def test_unreachable_hub_id_is_a_one_line_error(cache_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoraEqError, match="Hugging Face Hub") as err:
        load_model("no-such-owner/no-such-model", "fp32")
    assert "\n" not in str(err.value)


def test_garbage_gguf_is_a_clear_error(tmp_path, cache_home):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"\x00not a gguf file" * 100)
    with pytest.raises(LoraEqError, match="cannot read this GGUF file"):
        load_model(str(bad), "fp32")


def test_a_file_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LoraEqError, match="not a model folder or a .gguf file"):
        resolve_source(str(text))


def test_an_encoder_is_not_loaded_as_a_causal_lm(tmp_path, cache_home):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    with pytest.raises(LoraEqError, match=r"'bert' encoder, not a causal language model; .*--task classification"):
        load_model(str(folder), "fp32")


def test_pickle_weights_are_refused(tiny_model_dir, cache_home):
    model = tiny_causal_lm("llama")
    for f in tiny_model_dir.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), tiny_model_dir / "pytorch_model.bin")
    with pytest.raises(LoraEqError, match="only safetensors"):
        load_model(str(tiny_model_dir), "fp32")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoraEqError, match="no config.json"):
        load_model(str(tmp_path / "empty"), "fp32")


def test_remote_code_needs_the_flag(tiny_model_dir, cache_home):
    import json

    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["model_type"] = "my-own-lm"
    config["auto_map"] = {"AutoConfig": "custom.MyConfig", "AutoModelForCausalLM": "custom.MyModel"}
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoraEqError, match="--trust-remote-code"):
        load_model(str(tiny_model_dir), "fp32")
