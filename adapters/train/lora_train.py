"""LoRA's training step on a PEFT layer, as one autograd function: base(x) + B(A(dropout(x))) * scale.

PEFT's LoRA layer builds the update from generic modules. Under bf16 autocast on a CPU that costs
more than the update's arithmetic: x is cast to fp32, torch's Bernoulli sampler draws the dropout
mask (about a quarter of a whole training step for a 135M model on 2 cores), the dropped fp32 copy
is cast back to bf16 for the product, and each step is kept for the backward. `install` replaces the
forward of every plain LoRA layer (one active adapter, no DoRA or other variant, not merged) by
`_LoraUpdate`, which computes the same function:

- the dropout mask on a CPU comes from numpy's SFC64 generator, 16 random bits per value, seeded
  by a draw from torch's generator: the trainer's seed, a resumed checkpoint's RNG state and the
  recomputation of checkpointed activations all give the same mask. The drop probability is p
  rounded to 1/65,536 (0.05 -> 0.0500031). Other devices use torch's sampler;
- the backward keeps x itself (the tensor the layer was given, shared with the base layer and the
  other LoRA layers that read it), the mask as one byte per value and the rank-r product
  A(dropout(x)): not a dropped fp32 copy of x per layer;
- the two products run in autocast's dtype when autocast is on (as PEFT's modules do under it),
  else in the adapter's dtype; the result comes back in the base layer's dtype.

Layers that are not plain (`fastpath.plain_lora_reason`, the test the fused router uses too) keep
PEFT's forward. This is the `lora_train` fast path (fastpath.py): `applies` says why it would not
run (switched off by LORAEQ_FAST_PATHS, a PEFT release it was not tested on, no plain LoRA layer),
and then every layer keeps PEFT's forward. Only training uses this module; the `Patch` that
`install` returns (or PEFT's `unload`, which drops the layers) restores PEFT's own forward. Saved
adapters are PEFT's, untouched: only the computation differs.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch import nn

from adapters.fastpath import LORA_TRAIN, Patch, note, off_reason, plain_lora_reason

BITS = 16  # random bits per dropout decision
_LANES = 64 // BITS


def drop_probability(p: float, device_type: str = "cpu") -> float:
    """The probability the mask really drops with: on a CPU p rounded to 1 / 2**BITS, elsewhere p."""
    return round(p * (1 << BITS)) / (1 << BITS) if device_type == "cpu" else p


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor | None:
    """1 where a value is kept, 0 where dropped, one byte per value (what the backward keeps), or
    None when nothing is dropped."""
    p = drop_probability(p, device.type)
    if p == 0:
        return None
    if device.type != "cpu":
        return (torch.rand(shape, device=device) >= p).to(torch.uint8)
    threshold = int(p * (1 << BITS))  # exact: p is a multiple of 1 / 2**BITS
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))  # torch's RNG state decides the mask
    lanes = np.random.SFC64(seed).random_raw(-(-n // _LANES)).view(np.int16)[:n]
    mask = torch.empty(shape, dtype=torch.uint8)
    np.greater_equal(lanes, threshold - (1 << (BITS - 1)), out=mask.numpy().view(np.bool_).reshape(-1))
    return mask


_BF16_ONE = 0x3F80  # the bit pattern of 1.0 in bfloat16


def _ones_where_kept(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The byte mask as 0/1 values of `dtype`, for a same-dtype product (torch would convert the
    bytes inside every product with them, a full copy each time). bf16 on a CPU: its bit patterns
    written by numpy in one pass."""
    if dtype != torch.bfloat16 or mask.device.type != "cpu":
        return mask.to(dtype)
    bits = np.multiply(mask.numpy().view(np.bool_), np.int16(_BF16_ONE), dtype=np.int16)
    return torch.from_numpy(bits).view(torch.bfloat16)


def _masked(x: torch.Tensor, ones: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    x = x.to(dtype)
    return x if ones is None else x * ones


class _LoraUpdate(torch.autograd.Function):
    """B(A(x * mask / keep)) * scale, computed in `dtype`; both factors 1/keep and scale are
    applied to the rank-r tensors, not to the wide ones."""

    @staticmethod
    def forward(ctx, x, a, b, mask, keep: float, scale: float, dtype: torch.dtype):
        ones = None if mask is None else _ones_where_kept(mask, dtype)
        h = _masked(x, ones, dtype) @ a.to(dtype).t()
        if mask is not None:
            h = h.mul_(1.0 / keep)
        ctx.save_for_backward(x, a, b, mask, h)
        ctx.keep, ctx.scale, ctx.dtype = keep, scale, dtype
        return h.mul(scale) @ b.to(dtype).t()

    @staticmethod
    def backward(ctx, grad):
        x, a, b, mask, h = ctx.saved_tensors
        dtype, scale = ctx.dtype, ctx.scale
        ones = None if mask is None else _ones_where_kept(mask, dtype)
        g = grad.to(dtype).reshape(-1, grad.shape[-1])
        # (h^T g)^T, not g^T h: a CPU multiplies a transposed wide matrix several times slower
        grad_b = (h.reshape(-1, h.shape[-1]).t() @ g).t().mul_(scale)
        gh = (g @ b.to(dtype)).mul_(scale / ctx.keep if mask is not None else scale)  # at A's output, / keep
        grad_a = gh.t() @ _masked(x, ones, dtype).reshape(-1, x.shape[-1])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (gh @ a.to(dtype)).view(*x.shape[:-1], a.shape[1])
            if ones is not None:
                grad_x = grad_x.mul_(ones)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_a.to(a.dtype), grad_b.to(b.dtype), None, None, None, None


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return weight.dtype


def lora_forward(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A plain LoRA layer's forward through `_LoraUpdate`; anything else through PEFT's."""
    if "adapter_names" in kwargs or plain_lora_reason(module) is not None:
        return type(module).forward(module, x, *args, **kwargs)
    name = module.active_adapters[0]
    result = module.base_layer(x, *args, **kwargs)
    a, b = module.lora_A[name].weight, module.lora_B[name].weight
    drop = module.lora_dropout[name]
    p = drop_probability(drop.p, x.device.type) if isinstance(drop, nn.Dropout) and drop.training else 0.0
    mask = keep_mask(x.shape, p, x.device)
    update = _LoraUpdate.apply(x, a, b, mask, 1.0 - p, module.scaling[name], _compute_dtype(x, a))
    out = result + update
    return out if out.dtype == result.dtype else out.to(result.dtype)


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    """PEFT's LoRA layers over a plain or a bitsandbytes 4-bit linear layer (subclasses, which may
    compute differently, keep their own forward)."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # a PEFT that moved it: no layer is known to be one
        return []
    kinds = {Linear}
    if any(type(m).__name__ == "Linear4bit" for m in model.modules()):
        try:
            from peft.tuners.lora import bnb
        except ImportError:  # a bitsandbytes that fails to import: those layers keep PEFT's forward
            bnb = None
        kinds.add(getattr(bnb, "Linear4bit", Linear))
    return [m for m in model.modules() if type(m) in kinds]


def applies(model: nn.Module) -> str | None:
    """None when `install` routes some LoRA layer of `model` through `lora_forward`; else why not."""
    off = off_reason(LORA_TRAIN)
    if off:
        return off
    layers = _lora_layers(model)
    if not layers:
        return "no PEFT LoRA linear layer"
    reasons = [plain_lora_reason(m) for m in layers]
    return None if None in reasons else f"no plain LoRA layer (the first: {reasons[0]})"


def install(model: nn.Module) -> Patch:
    """Route every LoRA linear layer of `model` through `lora_forward` where the fast path applies
    (`Patch.forwards`: how many); its `restore` gives PEFT's forward back."""
    patch = Patch(LORA_TRAIN)
    reason = applies(model)
    note(LORA_TRAIN, reason)
    if reason is None:
        for module in _lora_layers(model):
            patch.replace_forward(module, partial(lora_forward, module))
    return patch
