"""The direct call of bitsandbytes' CPU 4-bit kernel gives the layer's own bits, or the layer's own path."""

from __future__ import annotations

import logging
import weakref

import pytest
import torch
from conftest import fast_path, load_nf4_bf16, tiny_causal_lm, tiny_tokenizer

from adapters.fastpath import PACKED4BIT
from adapters.infer.adapter_rows import FusedRouter, PeftRouter
from adapters.infer.packed4bit import _Kernel, direct_forward

pytestmark = fast_path(PACKED4BIT)


def _nf4_base(tmp_path, model_type: str):
    folder = tmp_path / model_type
    tiny_causal_lm(model_type, hidden_size=128, intermediate_size=256).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    base = load_nf4_bf16(folder)
    with torch.no_grad():
        base.model(torch.tensor([[1, 2, 3]]))  # a first forward packs the weights where the CPU allows
    return base


def _layers(model):
    return [m for m in model.modules() if type(m).__name__ == "Linear4bit"]


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])  # qwen2: q, k and v have a bias
def test_the_direct_call_is_bit_identical_for_every_shape(tmp_path, model_type):
    base = _nf4_base(tmp_path, model_type)
    layers = _layers(base.model)
    assert len(layers) == 14 and any(layer.bias is not None for layer in layers) == (model_type == "qwen2")
    generator = torch.Generator().manual_seed(0)
    packed = 0
    with torch.no_grad():
        for layer in layers:
            direct = direct_forward(layer)
            assert isinstance(direct, _Kernel)
            for shape in [(5, 1), (1, 1), (2, 7)]:
                x = torch.randn((*shape, layer.in_features), generator=generator).to(torch.bfloat16)
                assert torch.equal(direct(x), layer(x))
            assert direct.same in (True, None)
            packed += direct.ready
    # On a CPU with AVX512-BF16 (this one) every layer is packed and called directly.
    if getattr(layers[0], "support_avx512bf16_for_cpu", False):
        assert packed == len(layers)


def test_where_the_direct_call_does_not_apply_the_layer_runs_its_own_forward(tmp_path):
    base = _nf4_base(tmp_path, "llama")
    layer = _layers(base.model)[0]
    direct = direct_forward(layer)
    x = torch.randn(3, 1, layer.in_features)
    with torch.no_grad():
        assert torch.equal(direct(x), layer(x))  # float32 input: the layer casts it itself
    needs_grad = x.to(torch.bfloat16).requires_grad_()
    assert direct(needs_grad).grad_fn is not None  # a gradient wanted: the autograd path
    assert direct_forward(torch.nn.Linear(4, 4)) is None


def test_a_direct_call_that_differed_would_be_dropped_for_the_layers_own(tmp_path, monkeypatch, caplog):
    base = _nf4_base(tmp_path, "llama")
    layer = _layers(base.model)[1]
    if not getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
        pytest.skip("this CPU has no packed 4-bit kernel")
    monkeypatch.setattr("adapters.infer.packed4bit._checked", weakref.WeakKeyDictionary())
    monkeypatch.setattr(_Kernel, "_call", lambda self, x: torch.zeros(*x.shape[:-1], self.n, dtype=torch.bfloat16))
    direct = direct_forward(layer)
    x = torch.randn(2, 1, layer.in_features).to(torch.bfloat16)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="loraeq"):
        assert torch.equal(direct(x), layer(x)) and direct.same is False
        assert torch.equal(direct(x), layer(x))
    assert "differs from the layer's own forward" in caplog.text


@pytest.mark.parametrize("router_class", [FusedRouter, PeftRouter])
def test_either_router_routes_4bit_layers_to_the_direct_call_and_puts_them_back(tmp_path, router_class):
    base = _nf4_base(tmp_path, "llama")
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        expected = base.model(ids).logits[:, -1].float()
        router = router_class(base.model, ["__base__", "__base__"])
        assert all(isinstance(m.__dict__.get("forward"), _Kernel) for m in _layers(base.model))
        got = router.forward(input_ids=ids, attention_mask=torch.ones_like(ids))
        router.close()
    assert torch.equal(got, expected)
    assert not any("forward" in m.__dict__ for m in _layers(base.model))
