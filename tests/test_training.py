"""Training one adapter on a tiny seeded model: it learns, the base stays bit-identical."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_causal_lm, tiny_tokenizer
from safetensors.torch import load_file

from adapters.base.analysis import tuning_map
from adapters.base.bands import layer_bands
from adapters.base.loading import load_model
from adapters.shape.equalizer import Equalizer
from adapters.shape.variants import Hyper, Variant
from adapters.train.training import encode_all, read_log, train_variant

MEMORIZE = [
    [{"role": "user", "content": f"w{i} w{i + 1} ?"}, {"role": "assistant", "content": f"w{i + 20} w{i + 40} paris"}]
    for i in range(8)
]


def _loss(base, conversations) -> float:
    """Mean assistant-token loss, computed independently of the Trainer."""
    losses = []
    for e in encode_all(base.tokenizer, conversations, 64):
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            losses.append(float(base.model(input_ids=ids, labels=torch.tensor([e.labels])).loss))
    return sum(losses) / len(losses)


@pytest.fixture
def tiny_base(tmp_path, cache_home):
    # A wider init than the default 0.02: with tiny random output embeddings no adapter could make
    # any token likely (logits are capped by |w_token| * |h|), and memorizing would be impossible.
    folder = tmp_path / "tiny"
    tiny_causal_lm("llama", initializer_range=0.3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return load_model(str(folder), "fp32")


def _grid(base, values: dict[tuple[int, str], float]) -> dict:
    tmap = tuning_map(base.model)
    bands = layer_bands(tmap.layers, 2)
    strengths = [[values.get((b, r), 0.0) for r in tmap.roles] for b in range(len(bands))]
    return Equalizer(roles=tmap.roles, bands=bands, strengths=strengths).to_json()


def test_thirty_steps_memorize_and_leave_the_base_untouched(tiny_base, tmp_path):
    before = {k: v.clone() for k, v in tiny_base.model.state_dict().items()}
    loss_before = _loss(tiny_base, MEMORIZE)
    variant = Variant("mem", "uniform", Hyper(rank=8, alpha=16, learning_rate=1e-2, max_steps=30, batch_size=4,
                                               warmup_ratio=0.0, dropout=0.0, save_steps=100))
    result = train_variant(tiny_base, variant, MEMORIZE, tmp_path / "mem")
    assert result.status == "done" and result.steps == 30
    after = tiny_base.model.state_dict()
    assert after.keys() == before.keys()  # LoRA layers removed again
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tiny_base.model.parameters())

    from peft import PeftModel

    tuned = PeftModel.from_pretrained(tiny_base.model, tmp_path / "mem")
    loss_after = _loss(type("B", (), {"model": tuned, "tokenizer": tiny_base.tokenizer})(), MEMORIZE)
    tuned.unload()
    assert loss_after <= 0.5 * loss_before, (loss_before, loss_after)
    weights = load_file(tmp_path / "mem" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at 0
    log = read_log(tmp_path / "mem" / "train_log.jsonl")
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert all(r["tokens_per_s"] > 0 and r["learning_rate"] is not None and r["eta_s"] >= 0 for r in steps)


def test_per_cell_ranks_follow_the_grid_and_zero_cells_have_no_lora(tiny_base, tmp_path):
    grid = _grid(tiny_base, {(0, "q_proj"): 1.0, (1, "q_proj"): 0.5, (1, "down_proj"): 2.0})
    variant = Variant("cells", grid, Hyper(rank=4, alpha=8, max_steps=2, batch_size=4, save_steps=100))
    train_variant(tiny_base, variant, MEMORIZE, tmp_path / "cells")
    weights = load_file(tmp_path / "cells" / "adapter_model.safetensors")
    ranks = {
        k.split(".lora_A")[0].replace("base_model.model.", ""): v.shape[0]
        for k, v in weights.items() if "lora_A" in k
    }
    assert ranks == {
        "model.layers.0.self_attn.q_proj": 4,
        "model.layers.1.self_attn.q_proj": 2,
        "model.layers.1.mlp.down_proj": 8,
    }
    config = json.loads((tmp_path / "cells" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"


def test_zero_steps_saves_an_adapter_equal_to_the_base(tiny_base, tmp_path):
    variant = Variant("zero", "uniform", Hyper(max_steps=0))
    result = train_variant(tiny_base, variant, MEMORIZE, tmp_path / "zero")
    assert result.steps == 0
    weights = load_file(tmp_path / "zero" / "adapter_model.safetensors")
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)
