"""The loss over labelled positions only equals the model's own loss, in value and gradient, chunked
or not, with or without `num_items_in_batch`; training with it follows the same loss curve."""

from __future__ import annotations

import pytest
import torch
from conftest import fast_path, tiny_causal_lm
from peft import LoraConfig, get_peft_model

import adapters.train.label_loss as label_loss
from adapters.base.tokenize import IGNORE
from adapters.fastpath import LABEL_LOSS
from adapters.train.label_loss import label_only_loss, label_only_reason

pytestmark = fast_path(LABEL_LOSS)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 120, (3, 20), generator=g)
    labels = ids.clone()
    labels[:, :8] = IGNORE  # the prompt
    labels[1, 15:] = IGNORE  # padding at the end of row 1
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _lora(model_type="llama"):
    model = tiny_causal_lm(model_type, seed=1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(hash(name) % 1000))
    return peft.train()


def _grads(peft, loss) -> dict:
    peft.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in peft.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunk", [1024, 5], ids=["one-chunk", "chunked-with-recompute"])
@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_value_and_gradients_equal_the_models_own_loss(chunk, model_type, monkeypatch):
    monkeypatch.setattr(label_loss, "CHUNK", chunk)
    peft, batch = _lora(model_type), _batch()
    assert label_only_reason(peft) is None
    own = peft(**batch).loss
    mine = label_only_loss(peft, batch)
    assert float(mine) == pytest.approx(float(own), rel=1e-5)
    expected, got = _grads(peft, own), _grads(peft, label_only_loss(peft, batch))
    assert expected.keys() == got.keys() and len(got) > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)


def test_num_items_in_batch_divides_the_sum_as_the_model_does():
    peft, batch = _lora(), _batch(3)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    own = peft(**batch, num_items_in_batch=torch.tensor(2 * n)).loss
    mine = label_only_loss(peft, batch, torch.tensor(2 * n))
    assert float(mine) == pytest.approx(float(own), rel=1e-5)
    assert float(mine) == pytest.approx(float(label_only_loss(peft, batch)) / 2, rel=1e-5)


def test_the_held_out_loss_is_the_models_own_without_every_positions_logits(monkeypatch):
    from adapters.train.training import heldout_loss

    peft, batches = _lora(), [_batch(4), _batch(5)]
    counts = [int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches]
    with torch.no_grad():
        own = sum(float(peft(**b).loss) * n for b, n in zip(batches, counts)) / sum(counts)
    head = peft.get_base_model().get_output_embeddings()
    rows_seen = []
    head.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[:-1].numel()))
    assert heldout_loss(peft, batches) == pytest.approx(own, rel=1e-5)
    assert sum(rows_seen) == sum(counts)  # the output layer saw the labelled positions only
    assert peft.training  # put back in training mode
    monkeypatch.setenv("LORAEQ_FAST_PATHS", "off")  # switched off: the model's own loss, the same value
    rows_seen.clear()
    assert heldout_loss(peft, batches) == pytest.approx(own, rel=1e-5)
    assert sum(rows_seen) == sum(b["input_ids"].numel() for b in batches)


def test_a_batch_with_nothing_labelled_gives_zero_and_still_backpropagates():
    peft, batch = _lora(), _batch()
    batch["labels"][:] = IGNORE
    loss = label_only_loss(peft, batch)
    loss.backward()
    assert float(loss) == 0.0


def test_models_whose_logits_are_more_than_the_head_keep_their_own_loss():
    capped = tiny_causal_lm("gemma2", seed=0, head_dim=16, final_logit_softcapping=30.0)
    assert "final_logit_softcapping" in label_only_reason(capped)
    assert label_only_reason(tiny_causal_lm("llama")) is None


def test_training_follows_the_same_loss_curve_as_the_models_own_loss(tmp_path, cache_home, monkeypatch):
    from conftest import tiny_tokenizer

    from adapters.base.loading import load_model
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.training import read_log, train_variant

    folder = tmp_path / "tiny"
    tiny_causal_lm("llama", initializer_range=0.3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    base = load_model(str(folder), "fp32")
    rows = [[{"role": "user", "content": f"w{i} w{i + 1} ?"},
             {"role": "assistant", "content": f"w{i + 20} w{i + 40} paris"}] for i in range(8)]
    variant = Variant("v", "uniform", Hyper(max_steps=6, learning_rate=1e-2, batch_size=4, grad_accum=2))

    def curve(name):
        train_variant(base, variant, rows, tmp_path / name)
        return [r["loss"] for r in read_log(tmp_path / name / "train_log.jsonl") if "loss" in r]

    calls = []
    monkeypatch.setattr(label_loss, "label_only_loss", lambda *a: calls.append(1) or label_only_loss(*a))
    fast = curve("label-only")
    assert len(calls) == 12  # 6 steps x 2 accumulated batches, all through the labelled-only loss
    monkeypatch.setattr(label_loss, "label_only_reason", lambda model: "the model's own loss, for comparison")
    own = curve("own")
    assert len(calls) == 12
    assert len(fast) == len(own) == 6
    assert fast == pytest.approx(own, rel=1e-4)
