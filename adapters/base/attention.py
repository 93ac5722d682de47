"""Attention for one new token at a time: transformers' `sdpa`, with the query heads of a
grouped-query model packed per key/value head.

To decode a token, a grouped-query model (SmolLM2: 9 query heads over 3 key/value heads) attends
with one query row per head. transformers packs those rows per key/value head (the heads that
share a key/value head become that head's rows) only when there is a padding mask; without one it
asks SDPA for `enable_gqa`, which on this CPU took 4.5 times as long for 5 rows and 3 times as
long for 1 (per layer at 100 positions: 188 against 41 us for 5 rows, 46 against 14 for 1). Here a
model loaded by LoRA EQ always packs them: every decode (the compare columns, the proof, eval sets,
and a plain `generate` on that model) takes the packed path, so they all agree with one another
token for token. Anything else (a prompt, training, a model without grouped queries, dropout,
position biases) is transformers' own `sdpa` function, untouched. The choice is not saved with
the model: a config's attention implementation is not written to disk.

This is the `packed_attention` fast path (fastpath.py), chosen when a model is loaded: `applies`
says why it would not be (switched off by LORAEQ_FAST_PATHS, a transformers release it was not
tested on, a model not on `sdpa`, an attention registry this release does not have), and the model
then keeps transformers' `sdpa`. `install` returns the `Patch` that sets `sdpa` back.
"""

from __future__ import annotations

import torch

from adapters.fastpath import PACKED_ATTENTION, Patch, note, off_reason

PACKED = "loraeq_packed_sdpa"


def packed_gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                         is_causal=None, **kwargs):
    """An `AttentionInterface` function: transformers' `sdpa_attention_forward`, except for one new
    token of a grouped-query model, whose query heads go in packed (see the module doc)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    plain = (query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("position_bias") is not None
             or kwargs.get("softcap") is not None or kwargs.get("output_attentions"))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    note(PACKED_ATTENTION, None)
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


def _registries():
    """transformers' attention and mask registries and its `sdpa` mask, or None where this release
    has them elsewhere."""
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401 (called per step)
        from transformers.masking_utils import sdpa_mask
    except ImportError:
        return None
    return AttentionInterface, AttentionMaskInterface, sdpa_mask


def applies(model) -> str | None:
    """None when `install` would switch `model` to the packed decode; else why not."""
    off = off_reason(PACKED_ATTENTION)
    if off:
        return off
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if implementation != "sdpa":
        return f"the model's attention is {implementation!r}, not sdpa"
    if not hasattr(model, "set_attn_implementation") or _registries() is None:
        return "this transformers release has no attention registry to add it to"
    return None


def install(model) -> Patch:
    """Switch a model on transformers' `sdpa` to the packed decode where the fast path applies; the
    returned Patch's `restore` sets `sdpa` back."""
    patch = Patch(PACKED_ATTENTION)
    reason = applies(model)
    if reason:
        note(PACKED_ATTENTION, reason)
        return patch
    attention, masks, sdpa_mask = _registries()
    attention.register(PACKED, packed_gqa_attention)
    masks.register(PACKED, sdpa_mask)
    model.set_attn_implementation(PACKED)
    patch.on_restore(lambda: model.set_attn_implementation("sdpa"))
    return patch
