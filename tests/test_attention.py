"""The packed decode attention of models loaded by LoRA EQ (adapters/base/attention.py)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fast_path, tiny_causal_lm, tiny_tokenizer

from adapters.base.attention import PACKED, packed_gqa_attention
from adapters.base.loading import load_model
from adapters.fastpath import PACKED_ATTENTION

pytestmark = fast_path(PACKED_ATTENTION)


@pytest.fixture
def gqa_model_dir(tmp_path):
    """A tiny Llama with grouped queries: 4 query heads over 2 key/value heads."""
    folder = tmp_path / "gqa"
    tiny_causal_lm("llama", num_attention_heads=4, num_key_value_heads=2).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_packed_attention_agrees_with_transformers_sdpa(dtype, masked):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Layer(torch.nn.Module):
        num_key_value_groups = 3
        is_causal = True

    g = torch.Generator().manual_seed(0)
    query = torch.randn(5, 1, 9, 16, generator=g).to(dtype).transpose(1, 2)  # as the model lays it out
    key, value = (torch.randn(5, 3, 11, 16, generator=g).to(dtype) for _ in range(2))
    mask = None
    if masked:  # left padding: row 0 does not see its first 4 positions
        mask = torch.ones(5, 1, 1, 11, dtype=torch.bool)
        mask[0, ..., :4] = False
    ours, _ = packed_gqa_attention(Layer(), query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(Layer(), query, key, value, mask, scaling=0.25)
    assert ours.shape == theirs.shape == (5, 1, 9, 16) and ours.dtype == dtype
    torch.testing.assert_close(ours, theirs, **({"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}))
    if masked:  # the masked positions really are left out
        hidden = value.clone()
        hidden[0, :, :4] = 1e4
        again, _ = packed_gqa_attention(Layer(), query, key, hidden, mask, scaling=0.25)
        assert torch.equal(again, ours)


def test_a_loaded_model_decodes_through_it_and_saves_no_trace_of_it(gqa_model_dir, tmp_path, monkeypatch):
    import adapters.base.attention as attention

    base = load_model(str(gqa_model_dir), "fp32")
    assert base.model.config._attn_implementation == PACKED
    calls = []
    original = attention.packed_gqa_attention

    def counting(module, query, *args, **kwargs):
        calls.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    from transformers import AttentionInterface

    AttentionInterface.register(PACKED, counting)
    try:
        ids = base.tokenizer("w1 w2 w3", return_tensors="pt")
        packed = base.model.generate(**ids, max_new_tokens=4, do_sample=False)
    finally:
        AttentionInterface.register(PACKED, original)
    assert calls and set(calls) == {3, 1}  # the prompt (3 tokens), then one token at a time
    base.model.set_attn_implementation("sdpa")
    stock = base.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(packed, stock)  # the same greedy tokens as transformers' own attention
    base.model.set_attn_implementation(PACKED)
    base.model.save_pretrained(tmp_path / "saved")
    assert PACKED not in (tmp_path / "saved" / "config.json").read_text()
    assert json.loads((tmp_path / "saved" / "config.json").read_text()).get("attn_implementation") in (None, "sdpa")
