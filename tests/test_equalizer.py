"""The equalizer grid, its presets, and the LoraConfig it compiles to, applied with PEFT to tiny models."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import tiny_causal_lm
from peft import LoraConfig, get_peft_model

from adapters.base.analysis import TuningMap, TuningPoint, tuning_map
from adapters.base.bands import layer_bands
from adapters.errors import LoraEqError
from adapters.shape.equalizer import (
    PRESETS,
    Equalizer,
    cell_rank_alpha,
    compile_lora_config,
    equalizer_table,
    preset,
    role_families,
    verify_lora_config,
)

LLAMA_ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GPT2_ROLES = ["c_attn", "c_proj", "c_fc", "mlp.c_proj"]


def _lora_layers(peft_model) -> dict[str, dict]:
    """Every module that got a LoRA layer: its rank, scaling and A / B shapes, by base module name."""
    found = {}
    for name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            found[name] = {
                "r": module.r["default"],
                "scaling": module.scaling["default"],
                "A": tuple(module.lora_A["default"].weight.shape),
                "B": tuple(module.lora_B["default"].weight.shape),
            }
    return found


def _apply(model, eq: Equalizer, rank: int = 8, alpha: float = 16):
    tmap = tuning_map(model)
    config = compile_lora_config(eq, tmap, rank=rank, alpha=alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = get_peft_model(model, config)
    peft_warnings = [str(w.message) for w in caught if "pattern" in str(w.message) or "fan_in" in str(w.message)]
    assert peft_warnings == []  # PEFT warns about keys that matched nothing and flipped fan_in_fan_out
    return tmap, _lora_layers(peft_model)


def _assert_lora_follows_grid(tmap: TuningMap, eq: Equalizer, layers: dict, rank: int = 8, alpha: float = 16):
    expected = {c.name: c for c in tmap.cells if eq.strength(c.layer, c.role) > 0}
    assert set(layers) == set(expected)
    for name, cell in expected.items():
        s = eq.strength(cell.layer, cell.role)
        r = max(1, math.floor(rank * s + 0.5))
        got = layers[name]
        assert got["r"] == r, name
        assert got["A"] == (r, cell.in_features) and got["B"] == (cell.out_features, r), name
        assert got["scaling"] == pytest.approx(alpha / rank * s, rel=1e-6), name


# --- the grid ------------------------------------------------------------------------------


def test_json_round_trip_is_exact():
    eq = Equalizer(["q_proj", "mlp.c_proj"], [[0, 1, 2], [3], [4, 5]], [[0.1, 1 / 3], [0, 2.5], [1e-7, 1]])
    data = json.loads(json.dumps(eq.to_json()))
    again = Equalizer.from_json(data)
    assert again == eq
    assert again.to_json() == eq.to_json()
    assert again.strengths[0][1] == 1 / 3 and again.layers == 6


def test_grid_lookup_and_with_cell_copy():
    eq = Equalizer.uniform(["a", "b"], [[0, 1], [2, 3, 4]], value=0.5)
    assert eq.layers == 5 and eq.band_of(2) == 1
    changed = eq.with_cell(1, "b", 2.0)
    assert [changed.strength(layer, "b") for layer in range(5)] == [0.5, 0.5, 2.0, 2.0, 2.0]
    assert changed.strength(4, "a") == 0.5
    assert eq.strength(3, "b") == 0.5  # the original is untouched
    with pytest.raises(LoraEqError, match="layer 5"):
        eq.strength(5, "a")
    with pytest.raises(LoraEqError, match="'c'"):
        eq.strength(0, "c")
    with pytest.raises(LoraEqError, match="band 2"):
        eq.with_cell(2, "a", 1.0)
    with pytest.raises(LoraEqError, match="-1.0"):
        eq.with_cell(0, "a", -1.0)


@pytest.mark.parametrize(
    "roles, bands, strengths, named",
    [
        (["a"], [[0], [1]], [[1.0], [-0.5]], "-0.5"),
        (["a"], [[0]], [[float("nan")]], "nan"),
        (["a"], [[0]], [[float("inf")]], "inf"),
        (["a"], [[0]], [["high"]], "'high'"),
        (["a"], [[0]], [[True]], "True"),
        (["a", "b"], [[0]], [[1.0]], "[1.0]"),
        (["a"], [[0], [1]], [[1.0]], "2 rows"),
        (["a"], [[0, 1], [3]], [[1.0], [1.0]], "layer 3"),
        (["a"], [[0, 1], [1, 2]], [[1.0], [1.0]], "layer 1"),
        (["a"], [[1, 2]], [[1.0]], "layer 1"),
        (["a"], [[0], []], [[1.0], [1.0]], "[]"),
        (["a", "a"], [[0]], [[1.0, 1.0]], "['a']"),
        ([], [[0]], [[]], "[]"),
    ],
)
def test_validation_errors_name_the_bad_value(roles, bands, strengths, named):
    with pytest.raises(LoraEqError) as err:
        Equalizer(roles, bands, strengths)
    assert named in str(err.value)


def test_from_json_rejects_missing_and_unknown_keys():
    with pytest.raises(LoraEqError, match="strengths"):
        Equalizer.from_json({"roles": ["a"], "bands": [[0]]})
    with pytest.raises(LoraEqError, match="gain"):
        Equalizer.from_json({"roles": ["a"], "bands": [[0]], "strengths": [[1.0]], "gain": 2})


def test_equalizer_table_rows():
    eq = Equalizer(["q", "v"], [[0, 1, 2], [3]], [[1.0, 0.0], [0.5, 0.25]])
    assert equalizer_table(eq) == [
        {"band": 0, "layers": "0-2", "q": 1.0, "v": 0.0},
        {"band": 1, "layers": "3", "q": 0.5, "v": 0.25},
    ]


# --- presets and role families ---------------------------------------------------------------


FAMILIES = {
    "llama": ({}, {**dict.fromkeys(LLAMA_ROLES[:4], "attention"), **dict.fromkeys(LLAMA_ROLES[4:], "mlp")}),
    "gpt2": ({"n_embd": 64, "n_head": 4}, {"c_attn": "attention", "c_proj": "attention", "c_fc": "mlp", "mlp.c_proj": "mlp"}),
    "gpt_neox": ({}, {"query_key_value": "attention", "dense": "attention", "dense_h_to_4h": "mlp", "dense_4h_to_h": "mlp"}),
    "falcon": ({}, {"query_key_value": "attention", "dense": "attention", "dense_h_to_4h": "mlp", "dense_4h_to_h": "mlp"}),
    "phi": ({}, {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "dense": "attention", "fc1": "mlp", "fc2": "mlp"}),
    "opt": ({"ffn_dim": 128, "word_embed_proj_dim": 64},
            {"k_proj": "attention", "v_proj": "attention", "q_proj": "attention", "out_proj": "attention", "fc1": "mlp", "fc2": "mlp"}),
    "gptj": ({"n_embd": 64, "n_head": 4, "rotary_dim": 8},
             {"k_proj": "attention", "v_proj": "attention", "q_proj": "attention", "out_proj": "attention", "fc_in": "mlp", "fc_out": "mlp"}),
    "starcoder2": ({}, {**dict.fromkeys(["q_proj", "k_proj", "v_proj", "o_proj"], "attention"), "c_fc": "mlp", "c_proj": "mlp"}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_role_families_from_module_paths_and_from_names(family):
    overrides, expected = FAMILIES[family]
    tmap = tuning_map(tiny_causal_lm(family, **overrides))
    assert role_families(tmap) == expected
    assert role_families(tmap.roles) == expected  # the names alone suffice for these families


def test_module_path_settles_names_that_mislead_alone():
    # BERT-style blocks: attention.output.dense is attention, output.dense is the MLP's output.
    tmap = TuningMap("encoder.layer", 1, ["dense", "output.dense"], [
        TuningPoint(0, "dense", "encoder.layer.0.attention.output.dense", "Linear", 4, 4, 20, 8),
        TuningPoint(0, "output.dense", "encoder.layer.0.output.dense", "Linear", 4, 4, 20, 8),
    ], [], 40)
    assert role_families(tmap) == {"dense": "attention", "output.dense": "mlp"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_grid_over_the_roles_and_bands(name):
    tmap = tuning_map(tiny_causal_lm("llama", num_hidden_layers=8))
    bands = layer_bands(8, 4)
    eq = preset(name, tmap, bands)
    assert eq.roles == tmap.roles and eq.bands == bands
    values = [v for row in eq.strengths for v in row]
    assert len(eq.strengths) == 4 and all(len(row) == 7 for row in eq.strengths)
    assert all(0 <= v <= 1 for v in values) and max(values) == 1.0
    assert preset(name, tmap.roles, bands) == eq  # names alone give the same grid for Llama


def _band_values(name: str, n: int) -> list[float]:
    eq = preset(name, LLAMA_ROLES, layer_bands(n, n))
    assert all(len(set(row)) == 1 for row in eq.strengths)  # depth presets treat roles alike
    return [row[0] for row in eq.strengths]


def test_depth_presets_have_their_shape():
    up, down = _band_values("ramp-up", 4), _band_values("ramp-down", 4)
    assert up == [0.25, 0.5, 0.75, 1.0] and down == up[::-1]
    early, late = _band_values("early", 4), _band_values("late", 4)
    assert early == sorted(early, reverse=True) and len(set(early)) == 4 and early[0] == 1.0
    assert late == early[::-1]
    middle = _band_values("middle", 5)
    assert middle[2] == 1.0 and middle[0] == middle[4] < middle[1] == middle[3] < 1.0
    assert _band_values("uniform", 3) == [1.0, 1.0, 1.0]
    assert _band_values("early", 1) == [1.0]


def test_attention_and_mlp_presets_split_the_roles():
    tmap = tuning_map(tiny_causal_lm("gpt2", n_embd=64, n_head=4))
    bands = layer_bands(tmap.layers, 2)
    attention = preset("attention", tmap, bands)
    mlp = preset("mlp", tmap, bands)
    for row in attention.strengths:
        assert dict(zip(GPT2_ROLES, row)) == {"c_attn": 1.0, "c_proj": 1.0, "c_fc": 0.0, "mlp.c_proj": 0.0}
    for a_row, m_row in zip(attention.strengths, mlp.strengths):
        assert [a + m for a, m in zip(a_row, m_row)] == [1.0] * 4


def test_preset_errors_name_the_problem():
    with pytest.raises(LoraEqError, match="'loud'"):
        preset("loud", LLAMA_ROLES, [[0]])
    with pytest.raises(LoraEqError, match="attention"):
        preset("attention", ["gate_proj", "up_proj"], [[0]])


# --- compiling to a LoraConfig and applying it with PEFT ------------------------------------


def test_llama_cells_at_zero_are_not_targeted_and_ranks_follow_strength():
    model = tiny_causal_lm("llama", num_hidden_layers=4)
    eq = Equalizer(LLAMA_ROLES, [[0, 1], [2, 3]], [
        [1.0, 0.0, 0.5, 2.0, 0.0, 0.3, 1.0],
        [0.0, 0.06, 1.0, 0.0, 0.75, 1.0, 0.25],
    ])
    tmap, layers = _apply(model, eq)
    _assert_lora_follows_grid(tmap, eq, layers)
    assert layers["model.layers.0.self_attn.o_proj"]["r"] == 16  # strength 2: double rank
    assert layers["model.layers.2.self_attn.k_proj"]["r"] == 1  # 0.06 * 8 rounds to 0: floor of 1
    assert "model.layers.0.mlp.gate_proj" not in layers and "lm_head" not in layers


def test_gpt2_twelve_layers_keep_c_proj_and_layer_indices_apart():
    model = tiny_causal_lm("gpt2", n_embd=64, n_head=4, num_hidden_layers=12)
    bands = layer_bands(12, 12)  # one band per layer: layer 1 must not be confused with 10 or 11
    grid = [[0.0] * 4 for _ in range(12)]
    grid[1] = [1.0, 0.0, 0.0, 0.5]  # attn.c_proj off, mlp.c_proj on
    grid[10] = [0.0, 2.0, 0.0, 0.0]  # attn.c_proj only
    grid[11] = [0.25, 0.0, 1.0, 0.0]
    eq = Equalizer(GPT2_ROLES, bands, grid)
    tmap, layers = _apply(model, eq)
    _assert_lora_follows_grid(tmap, eq, layers)
    assert set(layers) == {
        "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_proj",
        "transformer.h.10.attn.c_proj", "transformer.h.11.attn.c_attn", "transformer.h.11.mlp.c_fc",
    }


def test_a_role_left_out_of_the_grid_is_not_targeted():
    model = tiny_causal_lm("llama")
    eq = Equalizer.uniform(["q_proj", "v_proj"], layer_bands(2, 2))
    tmap, layers = _apply(model, eq)
    assert set(layers) == {f"model.layers.{i}.self_attn.{r}" for i in (0, 1) for r in ("q_proj", "v_proj")}


def test_config_stays_small_and_keys_are_anchored():
    tmap = tuning_map(tiny_causal_lm("llama", num_hidden_layers=8))
    uniform = compile_lora_config(preset("uniform", tmap, layer_bands(8, 4)), tmap)
    assert (uniform.r, uniform.lora_alpha, uniform.rank_pattern, uniform.alpha_pattern) == (8, 16, {}, {})
    ramp = compile_lora_config(preset("ramp-up", tmap, layer_bands(8, 4)), tmap)
    assert len(ramp.rank_pattern) == 3 and len(ramp.alpha_pattern) == 3  # one key per non-default value
    for key in [ramp.target_modules, *ramp.rank_pattern, *ramp.alpha_pattern]:
        assert key.startswith("^") and key.endswith("$")
    assert ramp.task_type == "CAUSAL_LM" and ramp.lora_dropout == 0.05


def test_compiled_config_survives_save_and_reload(tmp_path):
    model = tiny_causal_lm("llama", num_hidden_layers=4)
    tmap = tuning_map(model)
    config = compile_lora_config(preset("middle", tmap, layer_bands(4, 4)), tmap, rank=4, alpha=8)
    config.save_pretrained(tmp_path)
    again = LoraConfig.from_pretrained(tmp_path)
    assert (again.target_modules, again.rank_pattern, again.alpha_pattern) == (
        config.target_modules, config.rank_pattern, config.alpha_pattern,
    )
    layers = _lora_layers(get_peft_model(model, again))
    assert {name: v["r"] for name, v in layers.items()} == {
        c.name: cell_rank_alpha(preset("middle", tmap, layer_bands(4, 4)).strength(c.layer, c.role), 4, 8)[0]
        for c in tmap.cells
    }


def test_cell_rank_alpha_keeps_scaling_proportional_to_strength():
    for strength in (0.01, 0.25, 1 / 3, 0.5, 1.0, 1.5, 3.0):
        r, a = cell_rank_alpha(strength, 8, 16)
        assert r == max(1, math.floor(8 * strength + 0.5))
        assert a / r == pytest.approx(2.0 * strength, rel=1e-6)
    assert cell_rank_alpha(1.0, 8, 16) == (8, 16)
    assert cell_rank_alpha(0.3125, 8, 16)[0] == 3  # 2.5 rounds half up, not to even


def test_all_zero_and_mismatched_grids_raise():
    tmap = tuning_map(tiny_causal_lm("llama"))
    with pytest.raises(LoraEqError, match="nothing to adapt"):
        compile_lora_config(Equalizer.uniform(tmap.roles, layer_bands(2, 2), 0.0), tmap)
    with pytest.raises(LoraEqError, match="3 layers"):
        compile_lora_config(Equalizer.uniform(tmap.roles, layer_bands(3, 3)), tmap)
    with pytest.raises(LoraEqError, match="c_attn"):
        compile_lora_config(Equalizer.uniform(["q_proj", "c_attn"], layer_bands(2, 2)), tmap)
    eq = Equalizer.uniform(tmap.roles, layer_bands(2, 2))
    with pytest.raises(LoraEqError, match="rank=0"):
        compile_lora_config(eq, tmap, rank=0)
    with pytest.raises(LoraEqError, match="rank_pattern"):
        compile_lora_config(eq, tmap, rank_pattern={"q_proj": 2})
    with pytest.raises(LoraEqError, match="no_such_option"):
        compile_lora_config(eq, tmap, no_such_option=1)


def test_a_pattern_that_matches_no_module_raises():
    model = tiny_causal_lm("llama")
    tmap = tuning_map(model)
    good = compile_lora_config(preset("ramp-up", tmap, layer_bands(2, 2)), tmap)
    expected = {c.name: (4, 4) if c.layer == 0 else (8, 16) for c in tmap.cells}  # strengths 0.5 and 1
    verify_lora_config(good, tmap, expected)  # the real config passes
    with pytest.raises(LoraEqError, match="rank 4, alpha 4"):
        verify_lora_config(good, tmap, {**expected, "model.layers.0.self_attn.q_proj": (4, 8)})
    stray = LoraConfig(
        r=8, lora_alpha=16, target_modules=good.target_modules,
        rank_pattern={**good.rank_pattern, r"^model\.layers\.7\.self_attn\.q_proj$": 2},
        alpha_pattern=good.alpha_pattern,
    )
    with pytest.raises(LoraEqError, match=r"layers\\\\.7"):
        verify_lora_config(stray, tmap, expected)
    # A map whose cell says layer 1 but names a module of layer 0: the pattern built for layer 1 misses it.
    cells = [c if (c.layer, c.role) != (0, "q_proj") else TuningPoint(
        1, "q_proj", c.name, c.kind, c.in_features, c.out_features, c.params, c.lora_params_per_rank)
        for c in tmap.cells if (c.layer, c.role) != (1, "q_proj")]
    broken = TuningMap(tmap.layers_path, tmap.layers, tmap.roles, cells, tmap.other, tmap.total_params)
    with pytest.raises(LoraEqError, match="pattern"):
        compile_lora_config(Equalizer.uniform(tmap.roles, layer_bands(2, 2)), broken)


@pytest.mark.integration
def test_real_model_grid_compiles_and_targets_exactly_its_cells(real_model):
    from peft.tuners.tuners_utils import check_target_module_exists

    tmap = tuning_map(real_model.model)
    eq = preset("ramp-up", tmap, layer_bands(tmap.layers, 4)).with_cell(0, "v_proj", 0.0)
    config = compile_lora_config(eq, tmap, rank=16, alpha=32)
    targeted = {n for n, _ in real_model.model.named_modules() if check_target_module_exists(config, n)}
    assert targeted == {c.name for c in tmap.cells if eq.strength(c.layer, c.role) > 0}
    assert len(targeted) == 30 * 7 - len(eq.bands[0])
    assert len(config.rank_pattern) <= 3


class _ToyMoE(torch.nn.Module):
    """Three blocks, each with an attention projection and two experts of Linear modules (grouped cells)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.layers = torch.nn.ModuleList()
        for _ in range(3):
            block = torch.nn.Module()
            block.attn = torch.nn.Module()
            block.attn.q_proj = torch.nn.Linear(8, 8)
            block.moe = torch.nn.Module()
            block.moe.experts = torch.nn.ModuleList()
            for _ in range(2):
                expert = torch.nn.Module()
                expert.w1 = torch.nn.Linear(8, 16)
                block.moe.experts.append(expert)
            self.layers.append(block)


def test_grouped_expert_cells_compile_per_layer():
    from peft import inject_adapter_in_model

    model = _ToyMoE()
    tmap = tuning_map(model)
    assert tmap.roles == ["q_proj", "w1"] and tmap.cell(1, "w1").name == "layers.1.moe.experts.*.w1"
    assert role_families(tmap) == {"q_proj": "attention", "w1": "mlp"}
    eq = Equalizer(["q_proj", "w1"], [[0], [1], [2]], [[1.0, 0.0], [0.0, 0.5], [0.0, 2.0]])
    config = compile_lora_config(eq, tmap)
    inject_adapter_in_model(config, model)
    ranks = {n: m.r["default"] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert ranks == {
        "layers.0.attn.q_proj": 8,
        "layers.1.moe.experts.0.w1": 4, "layers.1.moe.experts.1.w1": 4,
        "layers.2.moe.experts.0.w1": 16, "layers.2.moe.experts.1.w1": 16,
    }
