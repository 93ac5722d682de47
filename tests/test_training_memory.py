"""Activation checkpointing only where a batch would pass the activation budget: the same loss curve,
the base given back without it, and the memory estimate that the app checks following the same rule."""

from __future__ import annotations

import pytest
from conftest import tiny_causal_lm, tiny_tokenizer

from adapters.base.loading import load_model
from adapters.limits import LOSS_CHUNK, activation_budget, activation_bytes, layers_to_recompute, needs_checkpointing
from adapters.shape.variants import Hyper, Variant
from adapters.train.training import read_log, train_variant

ROWS = [[{"role": "user", "content": f"w{i} w{i + 1} ?"}, {"role": "assistant", "content": f"w{i + 20} w{i + 40} paris"}]
        for i in range(8)]


@pytest.fixture
def base(tmp_path, cache_home):
    folder = tmp_path / "tiny"
    tiny_causal_lm("llama", initializer_range=0.3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return load_model(str(folder), "fp32")


def _train(base, folder):
    variant = Variant("v", "uniform", Hyper(max_steps=5, learning_rate=1e-2, batch_size=4, dropout=0.1))
    train_variant(base, variant, ROWS, folder)
    log = read_log(folder / "train_log.jsonl")
    return [r["loss"] for r in log if "loss" in r], [r for r in log if r.get("event") == "activation_checkpointing"]


def test_over_the_budget_layers_are_recomputed_with_the_same_losses(base, tmp_path, monkeypatch):
    plain, none = _train(base, tmp_path / "plain")
    assert none == []  # a tiny batch is far under the default budget
    monkeypatch.setenv("LORAEQ_ACTIVATION_BUDGET_GB", "1e-9")
    recomputed, events = _train(base, tmp_path / "recomputed")
    assert len(events) == 1 and "recomputed" in events[0]["reason"]
    assert recomputed == pytest.approx(plain, rel=1e-5)  # dropout masks too: the checkpoint replays the RNG
    assert not base.model.is_gradient_checkpointing  # the base comes back as it was


def test_the_estimate_follows_the_rule_and_a_bad_budget_is_named(monkeypatch):
    from transformers import AutoConfig

    smol = AutoConfig.for_model("llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                vocab_size=49152)
    assert activation_bytes(smol, 4096, checkpointing=True) < activation_bytes(smol, 4096) / 3
    assert needs_checkpointing(smol, 8 * 512) and not needs_checkpointing(smol, 8 * 96)
    monkeypatch.setenv("LORAEQ_ACTIVATION_BUDGET_GB", "lots")
    from adapters.errors import LoraEqError

    with pytest.raises(LoraEqError, match="LORAEQ_ACTIVATION_BUDGET_GB='lots'"):
        needs_checkpointing(smol, 10)


def test_only_as_many_layers_recompute_as_the_budget_needs():
    from transformers import AutoConfig

    smol = AutoConfig.for_model("llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                vocab_size=49152)
    assert layers_to_recompute(smol, 8 * 96) == 0
    for tokens in (8 * 256, 8 * 512):
        k = layers_to_recompute(smol, tokens)
        assert 0 < k < 30  # some layers, not all: each one costs its forward again
        assert activation_bytes(smol, tokens, k) <= activation_budget() < activation_bytes(smol, tokens, k - 1)
    assert layers_to_recompute(smol, 8 * 256) < layers_to_recompute(smol, 8 * 512)
    assert activation_bytes(smol, 4096, True) == activation_bytes(smol, 4096, 30)


def test_a_partly_recomputed_model_trains_the_same_losses(tmp_path, cache_home, monkeypatch):
    folder = tmp_path / "six"
    tiny_causal_lm("llama", initializer_range=0.3, num_hidden_layers=6).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    base = load_model(str(folder), "fp32")
    plain, none = _train(base, tmp_path / "plain")
    assert none == []
    from adapters.train.training import encode_all

    widths = {len(e.input_ids) for e in encode_all(base.tokenizer, ROWS, 512)}
    assert len(widths) == 1  # every batch is 4 rows of one width
    tokens = 4 * widths.pop()
    full = activation_bytes(base.model.config, tokens)
    monkeypatch.setenv("LORAEQ_ACTIVATION_BUDGET_GB", str((full + activation_bytes(base.model.config, tokens, 6)) / 2
                                                          / 2**30))
    k = layers_to_recompute(base.model.config, tokens)
    assert 0 < k < 6
    calls = [0] * 6  # a recomputed layer runs its attention twice per step

    def counter(i):
        def hook(module, args, kwargs):
            calls[i] += 1
        return hook

    hooks = [layer.self_attn.register_forward_pre_hook(counter(i), with_kwargs=True)
             for i, layer in enumerate(base.model.model.layers)]
    try:
        partly, events = _train(base, tmp_path / "partly")
    finally:
        for h in hooks:
            h.remove()
    assert len(events) == 1 and f"{k} of its 6 layers" in events[0]["reason"]
    assert calls[:k] == [2 * calls[-1]] * k and calls[k:] == [calls[-1]] * (6 - k)
    assert partly == pytest.approx(plain, rel=1e-5)
    assert not base.model.is_gradient_checkpointing


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_estimate_covers_what_the_real_backward_keeps(precision):
    """Saved-tensor hooks count every byte the backward of one batch keeps on the real model; the rule
    must cover it, without asking for much more (it decides how many layers recompute)."""
    import torch

    from adapters.train.training import attach_lora, detach_lora

    base = load_model(None, precision)
    model = attach_lora(base, Variant("v", "uniform", Hyper(rank=8, alpha=16, dropout=0.05)))
    kept: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # kept anyway, not activations

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = max(kept.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    ids = torch.randint(0, 40_000, (4, 128))
    try:
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model.get_base_model().model(input_ids=ids)
    finally:
        detach_lora(model)
    config = base.model.config
    value_bytes = 2 if precision == "bf16" else 4
    logits = min(ids.numel(), LOSS_CHUNK) * 12 * config.vocab_size  # the output layer's chunk, not run here
    estimate = activation_bytes(config, ids.numel(), 0, value_bytes) - logits
    assert sum(kept.values()) <= estimate <= 1.5 * sum(kept.values())
