"""LoRA's training function (adapters/train/lora_train.py): the same outputs and gradients as PEFT's layer
without dropout (fp32, bf16 autocast, NF4), the exact gradient of its formula with a mask, a mask
that drops at the asked rate and replays from torch's seed, and PEFT's forward where it is not plain."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import fast_path, tiny_causal_lm
from peft import LoraConfig, get_peft_model

from adapters.fastpath import LORA_TRAIN, plain_lora_reason
from adapters.train import lora_train

pytestmark = fast_path(LORA_TRAIN)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _pair(dropout: float = 0.0, dtype=torch.float32, **config):
    """Two identical PEFT models with B non-zero; the second routed through lora_train."""
    torch.manual_seed(0)
    model = get_peft_model(tiny_causal_lm("llama").to(dtype),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, **config))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    fast = copy.deepcopy(model)
    fast.patch = lora_train.install(fast)
    return model.train(), fast.train()


def _loss_and_grads(model, ids, autocast: bool = False):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("autocast", [False, True])
def test_without_dropout_the_loss_and_every_lora_gradient_match_peft(autocast):
    peft, fast = _pair()
    assert fast.patch.forwards == 7 * 2  # every targeted layer of both decoder layers
    ids = torch.randint(0, 128, (3, 17))
    loss_p, grads_p = _loss_and_grads(peft, ids, autocast)
    loss_f, grads_f = _loss_and_grads(fast, ids, autocast)
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-4, atol=1e-6)
    assert torch.allclose(loss_f, loss_p, **tol)
    assert grads_f.keys() == grads_p.keys() and len(grads_f) == 28
    for name in grads_p:
        assert torch.allclose(grads_f[name], grads_p[name], **tol), name
    assert all(g.dtype == torch.float32 for g in grads_f.values())  # adapter weights keep fp32 grads


def test_bf16_base_answers_in_bf16_like_peft():
    peft, fast = _pair(dtype=torch.bfloat16)
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        a, b = peft(input_ids=ids).logits, fast(input_ids=ids).logits
    assert b.dtype == a.dtype == torch.bfloat16
    assert torch.allclose(a.float(), b.float(), atol=0.05)


def test_the_gradient_is_exact_for_a_given_mask():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, 5, 6) > 0.3).to(torch.uint8)

    def f(x, a, b):
        return lora_train._LoraUpdate.apply(x, a, b, mask, 0.7, 1.5, torch.float64)

    assert torch.autograd.gradcheck(f, (x, a, b))
    explicit = ((x * mask / 0.7) @ a.t() @ b.t()) * 1.5
    assert torch.allclose(f(x, a, b), explicit)


def test_the_mask_drops_at_the_asked_rate_and_replays_from_torch_seed():
    shape = torch.Size([64, 1000])
    torch.manual_seed(5)
    first = lora_train.keep_mask(shape, 0.1, torch.device("cpu"))
    torch.manual_seed(5)
    again = lora_train.keep_mask(shape, 0.1, torch.device("cpu"))
    other = lora_train.keep_mask(shape, 0.1, torch.device("cpu"))
    assert first.dtype == torch.uint8 and first.shape == shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    dropped = 1 - first.float().mean().item()
    assert abs(dropped - 0.1) < 0.005  # 64,000 draws: the standard error is 0.0012
    assert lora_train.drop_probability(0.05) == pytest.approx(0.05, abs=1 / 65536)
    assert lora_train.keep_mask(shape, 1e-6, torch.device("cpu")) is None  # rounds to no dropout
    rows = first.float().mean(1)
    assert rows.std() > 0  # not one decision per row


def test_with_dropout_training_steps_and_eval_ignores_it():
    peft, fast = _pair(dropout=0.3)
    ids = torch.randint(0, 128, (2, 9))
    torch.manual_seed(3)
    one = fast(input_ids=ids).logits
    torch.manual_seed(3)
    same = fast(input_ids=ids).logits
    two = fast(input_ids=ids).logits
    assert torch.equal(one, same) and not torch.equal(one, two)  # masks follow torch's seed
    fast.eval(), peft.eval()
    with torch.no_grad():
        assert torch.allclose(fast(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-5)


def test_a_non_plain_layer_keeps_peft_forward():
    peft, fast = _pair(use_dora=True)  # no layer is plain: nothing is installed
    ids = torch.randint(0, 128, (2, 7))
    peft.eval(), fast.eval()
    with torch.no_grad():
        assert torch.equal(peft(input_ids=ids).logits, fast(input_ids=ids).logits)
    layer = fast.base_model.model.model.layers[0].self_attn.q_proj
    assert plain_lora_reason(layer) == "a LoRA variant (DoraLinearVariant)"
    assert lora_train.applies(fast) == "no plain LoRA layer (the first: a LoRA variant (DoraLinearVariant))"
    assert fast.patch.forwards == 0 and "forward" not in layer.__dict__

    peft, fast = _pair()  # plain, then one layer merged after the install: PEFT's forward for that one
    for model in (peft, fast):
        model.eval()
        model.base_model.model.model.layers[0].self_attn.q_proj.merge()
    merged = fast.base_model.model.model.layers[0].self_attn.q_proj
    assert plain_lora_reason(merged) == "adapters merged into the base weights"
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=ids).logits, peft(input_ids=ids).logits)
    fast.patch.restore()
    assert not any("forward" in m.__dict__ for m in fast.modules())


def test_nf4_layers_train_through_it_too(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tiny_causal_lm("llama").save_pretrained(tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=q, device_map={"": "cpu"})
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.randint(0, 128, (2, 11))
    peft.train()
    loss_p, grads_p = _loss_and_grads(peft, ids)
    assert lora_train.install(peft).forwards == 14
    loss_f, grads_f = _loss_and_grads(peft, ids)
    assert torch.allclose(loss_f, loss_p, rtol=1e-4)
    for name in grads_p:
        assert torch.allclose(grads_f[name], grads_p[name], rtol=1e-3, atol=1e-6), name
