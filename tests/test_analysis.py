"""Tuning-point analysis on tiny seeded models of many families, and the statistics' math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_causal_lm

from adapters.base.analysis import dense_weight, short_role_names, tuning_map, weight_stats
from adapters.base.bands import layer_bands
from adapters.errors import LoraEqError

LLAMA_ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILIES = {
    "llama": ({}, LLAMA_ROLES),
    "mistral": ({}, LLAMA_ROLES),
    "qwen2": ({}, LLAMA_ROLES),
    "qwen3": ({"head_dim": 16}, LLAMA_ROLES),
    "gemma": ({"head_dim": 16}, LLAMA_ROLES),
    "gpt2": ({"n_embd": 64, "n_layer": 3, "n_head": 4}, ["c_attn", "c_proj", "c_fc", "mlp.c_proj"]),
    "gpt_neox": ({}, ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
    "falcon": ({}, ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
    "phi": ({}, ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]),
    "opt": ({"ffn_dim": 128, "word_embed_proj_dim": 64}, ["k_proj", "v_proj", "q_proj", "out_proj", "fc1", "fc2"]),
    "gptj": ({"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8},
             ["k_proj", "v_proj", "q_proj", "out_proj", "fc_in", "fc_out"]),
    "starcoder2": ({}, ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]),
}


def _linear_weights_in_layers(model, layers_path: str) -> int:
    """Ground truth, counted independently: every Linear/Conv1D weight+bias under the layer stack."""
    total = 0
    for name, mod in model.named_modules():
        if name.startswith(layers_path + ".") and (
            isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"
        ):
            total += mod.weight.numel() + (mod.bias.numel() if mod.bias is not None else 0)
    return total


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grid_is_layers_by_roles_for_each_family(family):
    overrides, roles = FAMILIES[family]
    model = tiny_causal_lm(family, **overrides)
    tmap = tuning_map(model)
    n_layers = model.config.num_hidden_layers
    assert tmap.layers == n_layers
    assert tmap.roles == roles
    assert len(tmap.cells) == n_layers * len(roles)
    assert {(c.layer, c.role) for c in tmap.cells} == {(l, r) for l in range(n_layers) for r in roles}
    assert sum(c.params for c in tmap.cells) == _linear_weights_in_layers(model, tmap.layers_path)
    for cell in tmap.cells:
        module = model.get_submodule(cell.name)
        assert cell.lora_params_per_rank == cell.in_features + cell.out_features
        assert dense_weight(module).shape == (cell.out_features, cell.in_features)
    assert tmap.total_params == sum(p.numel() for p in model.parameters())
    assert any(o["kind"] == "Embedding" for o in tmap.other)
    assert not any(o["name"].startswith(tmap.layers_path + ".") for o in tmap.other)


def test_gpt2_conv1d_features_are_read_transposed():
    model = tiny_causal_lm("gpt2", n_embd=64, n_layer=2, n_head=4)
    cell = tuning_map(model).cell(0, "c_fc")
    assert (cell.kind, cell.in_features, cell.out_features) == ("Conv1D", 64, 256)
    proj = tuning_map(model).cell(1, "mlp.c_proj")
    assert proj.name == "transformer.h.1.mlp.c_proj" and (proj.in_features, proj.out_features) == (256, 64)


def test_tied_lm_head_is_listed_outside_layers_and_marked_tied():
    model = tiny_causal_lm("llama", tie_word_embeddings=True)
    other = {o["name"]: o for o in tuning_map(model).other}
    assert other["lm_head"]["tied_to"] == "model.embed_tokens"
    assert other["model.embed_tokens"]["tied_to"] is None


def test_role_names_take_the_shortest_free_suffix():
    names = short_role_names(["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"])
    assert names == {"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc", "mlp.c_proj": "mlp.c_proj"}
    assert len(set(short_role_names(["a.x", "b.x", "x"]).values())) == 3


def test_weight_stats_match_numpy_svd():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(48, 20, generator=g)
    s = np.linalg.svd(w.numpy().astype(np.float64), compute_uv=False)
    stats = weight_stats(w)
    assert stats["frobenius"] == pytest.approx(np.linalg.norm(w.numpy()), rel=1e-5)
    assert stats["spectral"] == pytest.approx(s[0], rel=1e-5)
    assert stats["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-4)
    p = s / s.sum()
    assert stats["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-4)


def test_effective_and_stable_rank_of_known_matrices():
    identity = weight_stats(torch.eye(16))
    assert identity["effective_rank"] == pytest.approx(16, rel=1e-5)
    assert identity["stable_rank"] == pytest.approx(16, rel=1e-5)
    rank_one = weight_stats(torch.outer(torch.arange(1.0, 9.0), torch.ones(5)))
    assert rank_one["effective_rank"] == pytest.approx(1, abs=1e-3)
    assert rank_one["stable_rank"] == pytest.approx(1, abs=1e-4)
    assert weight_stats(torch.zeros(4, 4))["spectral"] == 0.0


@pytest.mark.parametrize(
    ("layers", "bands", "sizes"),
    [(30, 4, [8, 8, 7, 7]), (2, 4, [1, 1]), (12, 3, [4, 4, 4]), (5, 1, [5])],
)
def test_layer_bands_cover_every_layer_once(layers, bands, sizes):
    groups = layer_bands(layers, bands)
    assert [len(g) for g in groups] == sizes
    assert [l for g in groups for l in g] == list(range(layers))


def test_zero_bands_is_an_error():
    with pytest.raises(LoraEqError, match="bands=0"):
        layer_bands(10, 0)


def test_model_without_layer_stack_is_rejected():
    with pytest.raises(LoraEqError, match="no stack of decoder layers"):
        tuning_map(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_numbered_sub_modules_share_a_cell_within_their_layer():
    class Expert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = torch.nn.Linear(8, 16)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = torch.nn.Linear(8, 8)
            self.experts = torch.nn.ModuleList([Expert() for _ in range(3)])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Block() for _ in range(2)])

    from adapters.base.analysis import _measure

    model = Model()
    with torch.no_grad():
        model.layers[1].experts[2].w1.weight.mul_(100)
    tmap = tuning_map(model)
    assert tmap.roles == ["q", "w1"]
    cell = tmap.cell(1, "w1")
    assert cell.name == "layers.1.experts.*.w1" and cell.params == 3 * (8 * 16 + 16)
    measured = {(c["layer"], c["role"]): c for c in _measure(tmap, model, None)}
    # Layer 1's experts carry the scaled weight; layer 0's average must not include it.
    assert measured[(1, "w1")]["frobenius"] > 10 * measured[(0, "w1")]["frobenius"]
