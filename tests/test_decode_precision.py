"""What a 4-bit base decodes with: the plan (auto, a user's choice, memory), and the copy's weights."""

from __future__ import annotations

import pytest
import torch
from conftest import fast_path, load_nf4_bf16, tiny_causal_lm, tiny_tokenizer
from test_engine import _random_adapters

from adapters.base.loading import load_model
from adapters.errors import LoraEqError
from adapters.fastpath import FUSED_ROUTER
from adapters.infer.decode_precision import copy_bytes, dequantize, four_bit_layers, plan
from adapters.infer.engine import CompareEngine

MESSAGE = "w1 w2 w3"


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny"
    tiny_causal_lm("qwen2", hidden_size=128, intermediate_size=256).save_pretrained(folder)  # q, k, v with a bias
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_auto_on_a_cpu_keeps_the_nf4_weights_and_a_full_precision_base_is_never_copied(tiny_folder):
    nf4 = load_model(str(tiny_folder), "nf4")
    auto = plan(nf4, "auto")
    assert (auto.precision, auto.copied) == ("nf4", False) and "bytes read" in auto.reason
    assert plan(nf4, "as-loaded").precision == "nf4"
    full = load_model(str(tiny_folder), "fp32")
    assert (plan(full, "auto").precision, plan(full, "auto").copied) == ("fp32", False)
    with pytest.raises(LoraEqError, match="loaded in fp32, not 4-bit; load it in bf16"):
        plan(full, "bf16")
    with pytest.raises(LoraEqError, match="decode precision 'fast': choose one of auto, as-loaded"):
        plan(nf4, "fast")


def test_a_copy_that_would_not_fit_is_refused_with_its_size(tiny_folder):
    nf4 = load_model(str(tiny_folder), "nf4")
    need = copy_bytes(nf4.model, "fp32")
    assert need == sum(l.in_features * l.out_features * 4 for _, _, l in four_bit_layers(nf4.model)) > 0
    chosen = plan(nf4, "fp32", free_bytes=4 * need)
    assert chosen.copied and chosen.extra_bytes == need
    with pytest.raises(LoraEqError, match=r"a fp32 copy of the 4-bit weights needs \d+ MiB, more than half"):
        plan(nf4, "fp32", free_bytes=need)


def test_the_copy_multiplies_by_the_weights_the_4bit_layers_use(tiny_folder):
    nf4 = load_model(str(tiny_folder), "nf4")
    layers = [(name, layer) for _, name, layer in four_bit_layers(nf4.model)]
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, layer.in_features, generator=generator) for _, layer in layers]
    with torch.no_grad():
        expected = [layer(x.to(layer.compute_dtype or torch.float32)).float() for (_, layer), x in zip(layers, inputs)]
    assert dequantize(nf4.model, "fp32") == len(layers) == 14 and four_bit_layers(nf4.model) == []
    copies = {n: m for n, m in nf4.model.named_modules() if isinstance(m, torch.nn.Linear) and n.split(".")[-1] != "lm_head"}
    assert len(copies) == 14 and all(m.weight.dtype == torch.float32 for m in copies.values())
    with torch.no_grad():
        for (_, layer), x, want, copy in zip(layers, inputs, expected, copies.values()):
            assert copy.bias is not None if layer.bias is not None else copy.bias is None
            # The same weights; only the matmul's rounding differs (the 4-bit layer computes in its own dtype).
            torch.testing.assert_close(copy(x), want, rtol=2e-2, atol=2e-2)


@fast_path(FUSED_ROUTER)
def test_the_engine_decodes_with_a_copy_when_asked_and_says_so(tiny_folder, tmp_path):
    from adapters.infer.decoding import Sampling

    base = load_nf4_bf16(tiny_folder)  # the copy's dtype, so that only the copy differs
    folders = _random_adapters(base, tmp_path, ["uniform"])
    engine = CompareEngine(base, folders, decode_precision="bf16")
    try:
        info = engine.info()["decode_precision"]
        assert info == {"precision": "bf16", "copy": True, "reason": info["reason"]} and "asked for" in info["reason"]
        assert not four_bit_layers(engine.model) and engine.backend == "fused"
        copied = {a.label: a.token_ids for a in engine.answer(MESSAGE, sampling=Sampling(max_new_tokens=6))}
    finally:
        engine.close()
    nf4_engine = CompareEngine(load_nf4_bf16(tiny_folder), folders)
    try:
        assert nf4_engine.info()["decode_precision"]["precision"] == "nf4" and four_bit_layers(nf4_engine.model)
        nf4 = {a.label: a.token_ids for a in nf4_engine.answer(MESSAGE, sampling=Sampling(max_new_tokens=6))}
    finally:
        nf4_engine.close()
    assert copied == nf4  # the same weights: on this tiny model not one greedy token differs


def test_cli_and_compare_tab_choose_the_decoding_and_show_it(tmp_path, capsys, monkeypatch):
    import json

    from conftest import write_tiny_model
    from test_outside_adapters import make_adapter

    from loraeq.main import main
    from playground import tab_compare
    from playground.app import make_shared
    from playground.sessions import Session

    monkeypatch.setenv("LORAEQ_CACHE", str(tmp_path / "cache"))
    model = write_tiny_model(tmp_path / "tiny-llama")
    adapter = make_adapter(tmp_path / "plain-adapter")
    common = ["compare", "--model", str(model), "--adapter", f"plain={adapter}", "--prompt", MESSAGE,
              "--max-new-tokens", "4"]
    assert main([*common, "--precision", "nf4", "--decode-precision", "bf16", "--json"]) == 0
    decoding = json.loads(capsys.readouterr().out)["decode_precision"]
    assert decoding["precision"] == "bf16" and decoding["copy"] and "asked for" in decoding["reason"]
    assert main([*common, "--precision", "nf4"]) == 0
    text = capsys.readouterr().out
    assert "(nf4, decoding with nf4: " in text and "decoding is bound by the bytes read" in text
    assert main([*common, "--precision", "fp32", "--decode-precision", "bf16"]) == 2
    assert "loaded in fp32, not 4-bit" in capsys.readouterr().err

    shared = make_shared(str(model), "nf4", str(tmp_path / "runs"))
    state = Session(adapters={"plain": str(adapter)}, precision="nf4")
    line, state = tab_compare.set_decode_precision(shared, "fp32", state)
    assert state.decode_precision == "fp32" and "decoding with a fp32 copy of the NF4 base" in line
    assert tab_compare.decode_precision_line(shared, state) == line  # the same engine, kept
    with pytest.raises(LoraEqError, match="decode precision 'fast'"):
        tab_compare.set_decode_precision(shared, "fast", state)
    assert state.decode_precision == "fp32"
    full = make_shared(str(model), "fp32", str(tmp_path / "runs-fp32"))
    other = Session(adapters={"plain": str(adapter)}, precision="fp32")
    with pytest.raises(LoraEqError, match="not 4-bit"):
        tab_compare.set_decode_precision(full, "bf16", other)
    assert other.decode_precision == "auto"  # a refused copy leaves the columns as they were
    # No run, no adapter: the base alone is a column, and says what it decodes with.
    assert tab_compare.decode_precision_line(shared, Session()).startswith("*decoding with ")


def test_engines_are_kept_per_decoding_and_without_a_run_per_base(monkeypatch):
    """A session without a run that switches its model, precision or decoding gets a new engine;
    the same request again gets the kept one; a run's engine does not depend on the session's base."""
    from playground import shared as shared_module

    built = []

    class Engine:
        def __init__(self, *args):
            self.args = args
            built.append(args)

        def close(self):
            pass

    monkeypatch.setattr(shared_module, "_build_engine", lambda *args: Engine(*args))
    engines = shared_module.EngineRegistry(capacity=8)
    adapters = {"plain": "/runs/s/adapters/plain"}
    first = engines.get(None, adapters, model=None, precision="nf4")
    assert engines.get(None, adapters, model=None, precision="nf4") is first
    assert engines.get(None, adapters, model=None, precision="fp32") is not first
    assert engines.get(None, adapters, model="other/model", precision="nf4") is not first
    assert engines.get(None, adapters, model=None, precision="nf4", decode_precision="bf16") is not first
    run = engines.get("/runs/s/run-1", {}, model=None, precision="nf4")
    assert engines.get("/runs/s/run-1", {}, model="other/model", precision="fp32") is run
    assert len(built) == 5
