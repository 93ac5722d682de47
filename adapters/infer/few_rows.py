"""A float32 linear layer over the few rows of a decode step, computed as weight x rows.

`nn.Linear` computes x W^T: with one row BLAS runs a matrix-vector product, which reads the weight
once at memory speed; with 2 to a few dozen rows (a side-by-side step, a server's mixed batch) MKL
takes a general matrix product that, on the 2-core AMD EPYC we measured (no AVX512), costs about
three times the one-row call: 4 rows of SmolLM2's output layer (49152 x 576) took 21 ms against
8.4 ms for one. The same product written the other way round, (W x^T)^T, is a matrix product with
the weight as its left operand, which MKL runs near the one-row cost: 5.6 ms for those 4 rows, and
faster or equal for every layer shape of that model from 2 to 160 rows (benchmarks/compare_speed.py,
benchmarks/serve_speed.py measure the whole step). Each output element is the same dot product;
its sum may be ordered otherwise, so a row can differ from the `nn.Linear` result in the last bits,
as `nn.Linear`'s own result already does between one row and several. bfloat16 weights keep
`nn.Linear` (oneDNN's kernel: no gain measured).

This is the `few_rows_linear` fast path (fastpath.py): both routers (`adapter_rows.py`) set every
plain float32 `nn.Linear` of the model to `forward` here for a batch, through their `Patch`;
training never uses it. One row, more than `MAX_ROWS` rows, a gradient, another dtype or autocast
run the layer's own forward.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from adapters.fastpath import FEW_ROWS_LINEAR, Patch, note, off_reason

MAX_ROWS = 160  # measured faster from 2 to 160 rows (4 prompts of 40 tokens); at 400 rows nn.Linear is


def _plain_fp32(module: nn.Module) -> bool:
    return type(module) is nn.Linear and module.weight.dtype == torch.float32


def forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for the rows of `x` (the last dimension is the layer's input)."""
    rows = x.numel() // max(x.shape[-1], 1)
    if (rows < 2 or rows > MAX_ROWS or x.dtype != torch.float32 or torch.is_grad_enabled() or not x.is_cpu
            or torch.is_autocast_enabled("cpu")):  # (autocast computes the layer in bf16: its own path)
        return F.linear(x, layer.weight, layer.bias)
    out = torch.mm(layer.weight, x.reshape(rows, x.shape[-1]).t()).t()
    if layer.bias is not None:
        out = out + layer.bias
    return out.contiguous().reshape(*x.shape[:-1], layer.weight.shape[0])


def route(layers: list[nn.Module], patch: Patch) -> list[nn.Module]:
    """Set each plain float32 `nn.Linear` of `layers` on the CPU to `forward`, through `patch`;
    returns the layers routed (none where the fast path is switched off, and why is noted)."""
    linear = [layer for layer in layers if _plain_fp32(layer) and layer.weight.is_cpu]
    if not linear:
        return []
    reason = off_reason(FEW_ROWS_LINEAR)
    note(FEW_ROWS_LINEAR, reason)
    if reason:
        return []
    for layer in linear:
        patch.replace_forward(layer, partial(forward, layer))
    return linear
