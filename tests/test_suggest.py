"""The data-suggested equalizer: gradient sensitivity on tiny seeded models (fp32, GPT-2, NF4) and the real one."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_causal_lm, tiny_tokenizer

from adapters.base.analysis import dense_weight, tuning_map
from adapters.base.bands import layer_bands
from adapters.base.tokenize import encode_chat
from adapters.errors import LoraEqError
from adapters.shape.equalizer import Equalizer, compile_lora_config
from adapters.shape.suggest import _spread, autocast_dtype, normalized, suggest_equalizer

WORDS = [f"w{i}" for i in range(40)] + ["hello", "paris", "?"]


def _chats(seed: int, n: int, words: list[str] = WORDS) -> list[list[dict]]:
    """n seeded conversations of random tiny-vocabulary words, of varied lengths."""
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    return [[{"role": "user", "content": text(2, 8)}, {"role": "assistant", "content": text(2, 10)}] for _ in range(n)]


def _tiny(model_type: str = "llama", **overrides) -> SimpleNamespace:
    """A frozen tiny base with the tiny tokenizer, shaped like a LoadedModel."""
    model = tiny_causal_lm(model_type, **overrides)
    model.requires_grad_(False)
    return SimpleNamespace(model=model, tokenizer=tiny_tokenizer())


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _reference_per_cell(loaded, conversations: list[list[dict]]) -> dict[tuple[int, str], float]:
    """mean |dL/dW * W| per cell from plain autograd on the weights and the model's own loss (one batch)."""
    model, tok = loaded.model, loaded.tokenizer
    encoded = [encode_chat(tok, c, 256) for c in conversations]
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.tensor([e.input_ids + [tok.pad_token_id] * (width - len(e.input_ids)) for e in encoded])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded])
    labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in encoded])
    tmap = tuning_map(model)
    modules = [model.get_submodule(c.name) for c in tmap.cells]
    for m in modules:
        m.weight.requires_grad_(True)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    out = {}
    for cell, m in zip(tmap.cells, modules):
        grad = m.weight.grad.T if cell.kind == "Conv1D" else m.weight.grad
        out[(cell.layer, cell.role)] = float((grad * dense_weight(m)).abs().mean())
        m.weight.grad = None
        m.weight.requires_grad_(False)
    return out


@pytest.mark.parametrize("model_type, overrides", [
    ("llama", {"num_hidden_layers": 4}),
    ("gpt2", {"n_embd": 64, "n_head": 4, "num_hidden_layers": 3}),
])
def test_sensitivity_equals_autograd_weight_gradients(model_type, overrides):
    loaded = _tiny(model_type, **overrides)
    chats = _chats(1, 6)
    suggestion = suggest_equalizer(loaded, chats, bands=2, batch_size=6, exact=True)  # one batch, with padding
    reference = _reference_per_cell(loaded, chats)
    got = {(c["layer"], c["role"]): c["sensitivity"] for c in suggestion.per_cell}
    assert set(got) == set(reference)
    for key, value in reference.items():
        assert value > 0
        assert got[key] == pytest.approx(value, rel=1e-4), key


def test_bf16_autocast_keeps_the_suggestion_of_the_exact_run():
    loaded = _tiny(num_hidden_layers=4)
    if autocast_dtype(loaded.model, exact=False) is None:
        pytest.skip("this machine has no native bf16: the autocast path is not taken")
    assert autocast_dtype(loaded.model, exact=True) is None
    chats = _chats(11, 8)
    fast = suggest_equalizer(loaded, chats, bands=2)
    exact = suggest_equalizer(loaded, chats, bands=2, exact=True)
    assert fast.sensitivity != exact.sensitivity  # the fast run really ran in bf16
    for f_row, e_row in zip(fast.sensitivity, exact.sensitivity):
        assert f_row == pytest.approx(e_row, rel=0.05)
    for f_row, e_row in zip(fast.equalizer.strengths, exact.equalizer.strengths):
        assert f_row == pytest.approx(e_row, abs=0.03)


def test_grid_shape_values_and_band_means():
    loaded = _tiny(num_hidden_layers=4)
    s = suggest_equalizer(loaded, _chats(2, 10), bands=2, batch_size=4)
    roles = tuning_map(loaded.model).roles
    assert s.equalizer.roles == roles and s.equalizer.bands == [[0, 1], [2, 3]]
    assert len(s.sensitivity) == 2 and all(len(row) == len(roles) for row in s.sensitivity)
    assert all(math.isfinite(v) and v > 0 for row in s.sensitivity for v in row)
    per_cell = {(c["layer"], c["role"]): c["sensitivity"] for c in s.per_cell}
    assert len(per_cell) == 4 * len(roles)
    for b, layers in enumerate(s.equalizer.bands):
        for r, role in enumerate(roles):
            assert s.sensitivity[b][r] == pytest.approx(sum(per_cell[(l, role)] for l in layers) / len(layers))
    strengths = [v for row in s.equalizer.strengths for v in row]
    # [floor, 1] linear in sensitivity, then one factor keeps the uniform preset's size.
    # (A cell that would pass MAX_STRENGTH stops there.)
    assert max(strengths) == pytest.approx(min(s.scale, 2.0), abs=2e-3)
    assert min(strengths) >= min(0.25 * s.scale, 2.0) - 2e-3
    assert (s.examples, s.skipped, s.floor) == (10, 0, 0.25) and s.tokens > s.trained_tokens > 0
    assert 3 < s.loss < 6  # a random 128-token model: near ln(128) = 4.85


def test_same_data_same_suggestion_and_other_data_another():
    loaded = _tiny()
    first = suggest_equalizer(loaded, _chats(3, 8), batch_size=3)
    again = suggest_equalizer(loaded, _chats(3, 8), batch_size=3)
    assert again.sensitivity == first.sensitivity and again.equalizer == first.equalizer
    other = suggest_equalizer(loaded, _chats(4, 8, words=["hello", "paris", "?", "w1"]), batch_size=3)
    assert other.sensitivity != first.sensitivity
    ratios = [o / f for o_row, f_row in zip(other.sensitivity, first.sensitivity) for o, f in zip(o_row, f_row)]
    assert max(ratios) / min(ratios) > 1.05  # not just a rescaled copy


def test_base_weights_flags_and_mode_are_left_as_they_were():
    loaded = _tiny()
    model = loaded.model
    before = _snapshot(model)
    suggest_equalizer(loaded, _chats(5, 6), batch_size=4)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # A model someone left trainable (and in train mode) is handed back that way, gradients untouched.
    model.train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    suggest_equalizer(loaded, _chats(5, 6), batch_size=4)
    assert model.training and model.model.layers[0].mlp.up_proj.weight.requires_grad
    assert model.model.layers[0].mlp.up_proj.weight.grad is None


def test_progress_per_batch_and_examples_spread_over_the_data():
    loaded = _tiny()
    calls = []
    s = suggest_equalizer(loaded, _chats(6, 40), max_examples=5, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and s.examples == 5
    assert _spread(40, 5) == [0, 8, 16, 24, 32] and _spread(3, 32) == [0, 1, 2]


def test_normalization_maps_linearly_onto_floor_to_one():
    assert normalized([[0.0, 1.0], [2.0, 4.0]], 0.25) == [[0.25, 0.438], [0.625, 1.0]]
    assert normalized([[1.0, 2.0]], 0.0) == [[0.5, 1.0]]
    with pytest.raises(LoraEqError, match="no gradient"):
        normalized([[0.0, 0.0]], 0.25)
    s = suggest_equalizer(_tiny(), _chats(7, 4), floor=0.5)
    assert min(v for row in s.equalizer.strengths for v in row) >= 0.5


def test_bad_input_is_named():
    loaded = _tiny()
    with pytest.raises(LoraEqError, match="max_length=3"):
        suggest_equalizer(loaded, _chats(8, 4), max_length=3)  # the user turn alone fills 3 tokens
    long_prompt = [[{"role": "user", "content": " ".join(["w1"] * 40)}, {"role": "assistant", "content": "w2"}]]
    s = suggest_equalizer(loaded, _chats(8, 4) + long_prompt, max_length=30)
    assert (s.examples, s.skipped) == (4, 1)
    with pytest.raises(LoraEqError, match="batch_size=0"):
        suggest_equalizer(loaded, _chats(8, 4), batch_size=0)
    with pytest.raises(LoraEqError, match="floor=2"):
        suggest_equalizer(loaded, _chats(8, 4), floor=2)
    with pytest.raises(LoraEqError, match="no conversations"):
        suggest_equalizer(loaded, [])


def test_suggestion_json_round_trips_and_compiles():
    loaded = _tiny()
    s = suggest_equalizer(loaded, _chats(9, 6))
    data = json.loads(json.dumps(s.to_json()))
    assert Equalizer.from_json(data["equalizer"]) == s.equalizer
    assert data["sensitivity"] == s.sensitivity and data["examples"] == 6
    config = compile_lora_config(s.equalizer, tuning_map(loaded.model))
    assert config.target_modules.startswith("^")


def test_nf4_base_gives_nearly_the_fp32_suggestion_and_stays_untouched(tiny_model_dir, cache_home):
    from adapters.base.loading import load_model

    chats = _chats(10, 6)
    nf4 = load_model(str(tiny_model_dir), "nf4")
    assert type(nf4.model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    packed = _snapshot(nf4.model)
    quantized = suggest_equalizer(nf4, chats, bands=2)
    assert all(torch.equal(packed[k], v) for k, v in nf4.model.state_dict().items())
    assert not any(p.requires_grad for p in nf4.model.parameters())
    full = suggest_equalizer(load_model(str(tiny_model_dir), "fp32"), chats, bands=2)
    # 4-bit weights (and a bf16 compute dtype on some CPUs) move each value a little, not the shape.
    for q_row, f_row in zip(quantized.sensitivity, full.sensitivity):
        for q, f in zip(q_row, f_row):
            assert q == pytest.approx(f, rel=0.15)
    assert quantized.equalizer.strengths != Equalizer.uniform(quantized.equalizer.roles, quantized.equalizer.bands).strengths


@pytest.mark.integration
def test_real_model_suggestion(real_model):
    chats = [
        [{"role": "user", "content": "Name three autumn fruits."},
         {"role": "assistant", "content": "Apples, pears and quinces are at their best in autumn."}],
        [{"role": "user", "content": "Describe a rainy October evening in one sentence."},
         {"role": "assistant", "content": "Rain taps on the window while the streetlights glow amber through falling leaves."}],
        [{"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "The capital of France is Paris."}],
        [{"role": "user", "content": "Give me a short tip for baking bread."},
         {"role": "assistant", "content": "Let the dough rise somewhere warm until it has doubled in size."}],
    ]
    before = real_model.model.model.layers[5].mlp.down_proj.weight.detach().clone()
    s = suggest_equalizer(real_model, chats, bands=4, batch_size=2)
    assert len(s.sensitivity) == 4 and all(len(row) == 7 for row in s.sensitivity)
    assert all(math.isfinite(v) and v > 0 for row in s.sensitivity for v in row)
    assert 0.5 < s.loss < 5  # an instruct model on plain chat: far below ln(49152) = 10.8
    assert torch.equal(before, real_model.model.model.layers[5].mlp.down_proj.weight)
    compile_lora_config(s.equalizer, tuning_map(real_model.model))


def test_grouped_cells_measure_their_own_layer_members_only():
    from test_equalizer import _ToyMoE

    from adapters.shape.suggest import _cell_modules

    model = _ToyMoE()
    modules = _cell_modules(model, tuning_map(model))
    assert modules[(1, "w1")] == [model.layers[1].moe.experts[0].w1, model.layers[1].moe.experts[1].w1]
    assert modules[(2, "q_proj")] == [model.layers[2].attn.q_proj]


def test_the_suggestion_keeps_the_uniform_presets_parameter_count_unless_asked_otherwise():
    from adapters.shape.equalizer import MAX_STRENGTH, cell_rank_alpha
    from adapters.shape.suggest import keep_size

    loaded = _tiny()
    tmap = tuning_map(loaded.model)

    def params(eq, rank=16):
        return sum(cell_rank_alpha(eq.strength(c.layer, c.role), rank, 16)[0] * c.lora_params_per_rank
                   for c in tmap.cells if eq.strength(c.layer, c.role) > 0)

    uniform = Equalizer.uniform(list(tmap.roles), layer_bands(tmap.layers, 2))
    kept = suggest_equalizer(loaded, _chats(11, 6), bands=2)
    smaller = suggest_equalizer(loaded, _chats(11, 6), bands=2, keep="strength")
    assert kept.keep == "parameters" and kept.scale > 1
    assert params(kept.equalizer) == pytest.approx(params(uniform), rel=0.05)
    assert params(smaller.equalizer) < 0.9 * params(uniform)
    assert max(v for row in smaller.equalizer.strengths for v in row) == 1.0
    # The shape is the same: every cell scaled by one factor, up to MAX_STRENGTH.
    for k_row, s_row in zip(kept.equalizer.strengths, smaller.equalizer.strengths):
        for k, s in zip(k_row, s_row):
            assert k == pytest.approx(min(s * kept.scale, MAX_STRENGTH), abs=2e-3)
    # One cell far stronger than the rest: capped at MAX_STRENGTH, the others take what it cannot.
    grid = [[0.25] * len(tmap.roles) for _ in range(2)]
    grid[0][0] = 1.0
    capped, _ = keep_size(grid, tmap, layer_bands(tmap.layers, 2))
    assert max(v for row in capped for v in row) <= MAX_STRENGTH
    eq = Equalizer(list(tmap.roles), layer_bands(tmap.layers, 2), capped)
    assert params(eq) == pytest.approx(params(uniform), rel=0.05)
    with pytest.raises(LoraEqError, match="keep='rank'"):
        suggest_equalizer(loaded, _chats(11, 6), keep="rank")
