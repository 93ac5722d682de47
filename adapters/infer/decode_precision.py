"""What the side-by-side engine decodes with when the base is 4-bit: the NF4 weights, or a copy.

An NF4 base keeps a model small; the question for answering is only speed. `plan` decides, says
why, and takes a user's choice (`--decode-precision`, the Compare tab's *Decode precision*):

- `auto`: on a CPU, the NF4 weights. Measured on a 2-core CPU with AVX512-BF16, base + 4 variants
  x 64 tokens (`benchmarks/compare_speed.py` engine, one batch): NF4 1.46 s (bitsandbytes' packed
  kernel, `packed4bit.py`), a bf16 base 1.92 s, fp32 5.3 s; decoding there is bound by the bytes
  each token reads, and NF4 reads a quarter of bf16's. Without AVX512-BF16 (no packed kernel, fp32
  compute) NF4 took 4.5 s against fp32's 5.3 s. On a CUDA GPU, a bf16 (or fp16) copy when it fits
  in half the free GPU memory: bitsandbytes dequantizes a 4-bit weight at every call for more
  than one row, where a bf16 matmul reads it once.
- `as-loaded`: the weights as the base was loaded, whatever they are.
- `bf16`, `fp16`, `fp32`: a copy of a 4-bit base in that precision, refused (with the sizes) when
  it does not fit in half the free memory. Any other base is already in full precision: choose
  its precision where it is loaded (`--precision`).

The copy holds exactly the weights the NF4 layers multiply by: each 4-bit layer is replaced by a
plain linear layer whose weight is the layer's own output for the identity matrix (bias aside),
the values its kernel dequantizes. Answers are the NF4 model's up to the last bits of a different
matmul, so greedy answers can differ from NF4 decoding in a token here and there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.errors import LoraEqError

from .packed4bit import direct_forward, is_4bit_linear

DECODE_PRECISIONS = ("auto", "as-loaded", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FIT_SHARE = 0.5  # a copy may take at most this share of the free memory


@dataclass(frozen=True)
class DecodePlan:
    precision: str  # what the weights are in while decoding: nf4, bf16, fp16, fp32
    copied: bool  # a full-precision copy of the 4-bit weights
    reason: str
    extra_bytes: int = 0  # what the copy adds over the 4-bit weights

    def describe(self) -> str:
        what = f"a {self.precision} copy of the NF4 base" if self.copied else f"the base's {self.precision} weights"
        return f"decoding with {what}: {self.reason}"


def four_bit_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every bitsandbytes 4-bit linear layer."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if is_4bit_linear(child):
                found.append((parent, name, child))
    return found


def copy_bytes(model: nn.Module, precision: str) -> int:
    """Bytes a `precision` copy of the 4-bit weights takes."""
    size = torch.empty((), dtype=_DTYPES[precision]).element_size()
    return sum(layer.in_features * layer.out_features * size for _, _, layer in four_bit_layers(model))


def plan(base, wanted: str = "auto", free_bytes: int | None = None) -> DecodePlan:
    """The weights `base` (a LoadedModel) decodes with, for the user's choice `wanted` (DECODE_PRECISIONS)."""
    from adapters.base.loading import free_memory_bytes

    if wanted not in DECODE_PRECISIONS:
        raise LoraEqError(f"decode precision {str(wanted)[:40]!r}: choose one of {', '.join(DECODE_PRECISIONS)}")
    if base.precision != "nf4":
        if wanted not in ("auto", "as-loaded") and wanted != base.precision:
            raise LoraEqError(f"decode precision {wanted}: the base is loaded in {base.precision}, not 4-bit; "
                              f"load it in {wanted} instead (--precision)")
        return DecodePlan(base.precision, False, "the base is loaded in full precision")
    if wanted == "as-loaded":
        return DecodePlan("nf4", False, "asked for")
    cuda = str(base.device).startswith("cuda")
    if wanted == "auto" and not cuda:
        layers = four_bit_layers(base.model)
        packed = bool(layers) and direct_forward(layers[0][2]) is not None and bool(
            getattr(layers[0][2], "support_avx512bf16_for_cpu", False))
        why = ("bitsandbytes' packed AVX512-BF16 kernel; on a CPU decoding is bound by the bytes read, "
               "and NF4 reads a quarter of bf16's" if packed else
               "on a CPU decoding is bound by the bytes read, and NF4 reads an eighth of fp32's")
        return DecodePlan("nf4", False, why)
    try:
        precision = wanted if wanted != "auto" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        free = free_memory_bytes(base.device) if free_bytes is None else free_bytes
    except (RuntimeError, AssertionError) as e:  # e.g. ZeroGPU: no GPU to ask outside a GPU function
        if wanted != "auto":
            raise LoraEqError(f"decode precision {wanted}: the free memory cannot be read here ({e})") from None
        return DecodePlan("nf4", False, "the free GPU memory cannot be read here, so no copy is made")
    need = copy_bytes(base.model, precision)
    if need > FIT_SHARE * free:
        message = (f"a {precision} copy of the 4-bit weights needs {need / 2**20:.0f} MiB, more than half of "
                   f"the {free / 2**20:.0f} MiB free")
        if wanted != "auto":
            raise LoraEqError(f"decode precision {precision}: {message}; keep the NF4 weights (as-loaded)")
        return DecodePlan("nf4", False, message)
    why = ("asked for" if wanted != "auto"
           else "on a GPU a bf16 matmul reads each weight once, 4-bit dequantizes it per call")
    return DecodePlan(precision, True, f"{why} (+{need / 2**20:.0f} MiB)", need)


def dequantize(model: nn.Module, precision: str) -> int:
    """Replace every 4-bit layer of `model` by a plain linear layer in `precision` holding the values
    the 4-bit layer multiplies by, and put the model's other weights in `precision`; returns how
    many layers were replaced. The model is changed in place."""
    dtype = _DTYPES[precision]
    layers = four_bit_layers(model)
    with torch.no_grad():
        for parent, name, layer in layers:
            device = layer.weight.device
            bias, layer.bias = layer.bias, None  # the identity's product without it
            try:
                eye = torch.eye(layer.in_features, dtype=layer.compute_dtype or dtype, device=device)
                weight = layer(eye).T.contiguous()  # (out, in): row j of eye picks input j
            finally:
                layer.bias = bias
            plain = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device=device, dtype=dtype)
            plain.weight.copy_(weight.to(dtype))
            if bias is not None:
                plain.bias.copy_(bias.to(dtype))
            plain.requires_grad_(False)
            setattr(parent, name, plain)
        # The other weights (embeddings, norms, output layer) in the same precision, so that the
        # activations meet the copies in it; buffers (rotary frequencies) stay as they are.
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
    return len(layers)
