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
"""

from __future__ import annotations

import torch

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
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> bool:
    """Switch a model on transformers' `sdpa` to the packed decode; True when it was switched."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    AttentionInterface.register(PACKED, packed_gqa_attention)
    AttentionMaskInterface.register(PACKED, sdpa_mask)
    model.set_attn_implementation(PACKED)
    return True
