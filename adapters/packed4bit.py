"""bitsandbytes' CPU kernel for a 4-bit (NF4) layer, called without its Python layers, for decoding.

On a CPU with AVX512-BF16, bitsandbytes repacks a `Linear4bit` weight for its fused kernel at the
first forward in eval mode (`packing_format_for_cpu`), and from then on every forward is one call
of that kernel: `gemv_4bit_inference_cpu_nf4_bf16` (any number of rows). Around it the layer runs
about 19 microseconds of Python per call (the quant-state checks, `__torch_function__`, the
dispatcher, a `code[1] > 0` test that reads a tensor, four pointer wrappers), more than the kernel
itself takes for the five rows of a side-by-side decode step (23 microseconds for a 576 x 1536 layer
on this 2-core box; the layer as a whole 42).

`direct_forward(layer)` gives a callable that makes that same kernel call with the same arguments,
prepared once, and so the same bits: the first call on each layer checks that against the layer's
own forward with `torch.equal`, and a layer where it differs, or where anything is not as expected
(another bitsandbytes release, not packed yet, a gradient wanted, FP4, another dtype), runs its own
forward. Used by the fused mixer (`mixing.FusedMixer`) for base layers; training never uses it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref

import torch
from torch import nn

log = logging.getLogger("loraeq")

# Releases whose CPU op (bitsandbytes/backends/cpu/ops.py) calls the kernel exactly as `_Kernel` does.
TESTED_RELEASES = ("0.50.",)
_checked: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()  # layer -> same bits


# gemv_4bit_inference_cpu_nf4_bf16(M, N, K, x, packed weight, absmax, out, blocksize, x row stride,
# out row stride), declared here so that a call takes plain ints (bitsandbytes wraps each one).
_SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)


@functools.cache
def _native_kernel():
    """bitsandbytes' NF4 x bf16 CPU kernel, or None when this install would not call it directly."""
    try:
        import bitsandbytes
        from bitsandbytes.backends.cpu import ops
    except Exception:  # noqa: BLE001 (no bitsandbytes, or one that fails to import: the layer's own path)
        return None
    if not bitsandbytes.__version__.startswith(TESTED_RELEASES):
        return None
    if getattr(ops, "gemm_4bit_forward_kernel", None) is not None:  # the Hub kernel is used instead
        return None
    kernel = getattr(getattr(ops, "lib", None), "gemv_4bit_inference_cpu_nf4_bf16", None)
    return None if kernel is None else _SIGNATURE(ctypes.cast(kernel, ctypes.c_void_p).value)


class _Kernel:
    """One packed layer's kernel call; `layer` (its own forward) wherever the call would differ."""

    def __init__(self, layer: nn.Module, kernel):
        self.layer, self.kernel = layer, kernel
        # The class's forward, not `layer.forward`: the mixer may set this object as the layer's forward.
        self.own = type(layer).forward.__get__(layer)
        self.ready = False
        self.same: bool | None = None  # its output equals the layer's own (checked on the first call)

    def _prepare(self) -> bool:
        """The constant arguments, once the layer has been packed (by its first forward)."""
        weight, bias = self.layer.weight, self.layer.bias
        state = getattr(weight, "quant_state", None)
        if (state is None or not getattr(state, "packing_format_for_cpu", False) or state.nested
                or weight.dtype != torch.uint8 or not weight.is_contiguous()
                or state.absmax.dtype != torch.bfloat16 or not state.absmax.is_contiguous()
                or float(state.code[1]) > 0  # FP4's code
                or getattr(self.layer, "compute_dtype", None) not in (None, torch.bfloat16)
                or (bias is not None and bias.dtype != torch.bfloat16)):  # (its own forward casts it first)
            return False
        self.n, self.k = (int(d) for d in state.shape)
        self._keep = (weight, state.absmax)  # the addresses below stay valid while these live
        self.weight, self.absmax = weight.data_ptr(), state.absmax.data_ptr()
        self.blocksize, self.bias = int(state.blocksize), bias
        self.ready = True
        return True

    def _usable(self, x: torch.Tensor) -> bool:
        return (x.dtype == torch.bfloat16 and x.is_cpu and x.shape[-1] == self.k and x.stride(-1) == 1
                and not torch.is_grad_enabled() and not self.layer.training)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.k)
        out = torch.empty((a.shape[0], self.n), dtype=torch.bfloat16)
        self.kernel(a.shape[0], self.n, self.k, a.data_ptr(), self.weight, self.absmax, out.data_ptr(),
                    self.blocksize, a.stride(0), self.n)
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.n)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ready and not self._prepare():
            return self.own(x)  # (its first forward packs it)
        if not self._usable(x):
            return self.own(x)
        if self.same is None:
            self.same = _checked.get(self.layer)
            if self.same is None:
                expected = self.own(x)
                self.same = _checked[self.layer] = torch.equal(expected, self._call(x))
                if not self.same:
                    log.warning("the direct 4-bit kernel call differs from the layer's own forward there: "
                                "that layer keeps its own")
                return expected
        return self._call(x) if self.same else self.own(x)


def is_4bit_linear(module: nn.Module) -> bool:
    """bitsandbytes' own `Linear4bit` (PEFT's LoRA wrapper of it has the same class name)."""
    kind = type(module)
    return kind.__name__ == "Linear4bit" and kind.__module__.startswith("bitsandbytes.")


def direct_forward(layer: nn.Module) -> _Kernel | None:
    """For a bitsandbytes `Linear4bit`: a callable computing `layer.forward(x)` bit for bit, faster
    once the layer is packed for the CPU; None for any other layer, or where this install of
    bitsandbytes is not one whose kernel call is known."""
    if not is_4bit_linear(layer):
        return None
    kernel = _native_kernel()
    return None if kernel is None else _Kernel(layer, kernel)
