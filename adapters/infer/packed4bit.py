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
forward. This is the `packed4bit` fast path (fastpath.py): `applies` says why it would not run
(switched off by LORAEQ_FAST_PATHS, a bitsandbytes release it was not tested on, no native kernel
in this install: a missing symbol, or bitsandbytes' throw-on-call stub), and then every layer runs
its own forward. Both routers (`adapter_rows.py`) route a batch's 4-bit layers here, through their
`Patch`; training never uses it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref

import torch
from torch import nn

from adapters.fastpath import PACKED4BIT, Patch, note, off_reason

log = logging.getLogger("loraeq")

_checked: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()  # layer -> same bits


# gemv_4bit_inference_cpu_nf4_bf16(M, N, K, x, packed weight, absmax, out, blocksize, x row stride,
# out row stride), declared here so that a call takes plain ints (bitsandbytes wraps each one).
_SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
_SYMBOL = "gemv_4bit_inference_cpu_nf4_bf16"


@functools.cache
def _native_kernel() -> tuple[object | None, str | None]:
    """(bitsandbytes' NF4 x bf16 CPU kernel, None), or (None, why this install is not called directly)."""
    try:
        from bitsandbytes.backends.cpu import ops
    except Exception:  # noqa: BLE001 (no bitsandbytes, or one that fails to import: the layer's own path)
        return None, "bitsandbytes' CPU backend does not import"
    if getattr(ops, "gemm_4bit_forward_kernel", None) is not None:
        return None, "bitsandbytes calls its Hub kernel instead"
    kernel = getattr(getattr(ops, "lib", None), _SYMBOL, None)
    # A library built without the symbol (or no native library at all) hands back a Python stub that
    # throws when called; only a real C function has an address to call.
    if not isinstance(kernel, ctypes._CFuncPtr):
        return None, f"bitsandbytes' native library has no {_SYMBOL}"
    try:
        return _SIGNATURE(ctypes.cast(kernel, ctypes.c_void_p).value), None
    except (TypeError, ctypes.ArgumentError) as e:
        return None, f"{_SYMBOL} cannot be called directly ({e})"


def applies() -> str | None:
    """None when 4-bit layers may be called through the kernel directly here; else why not."""
    return off_reason(PACKED4BIT) or _native_kernel()[1]


class _Kernel:
    """One packed layer's kernel call; `layer` (its own forward) wherever the call would differ."""

    def __init__(self, layer: nn.Module, kernel):
        self.layer, self.kernel = layer, kernel
        # The class's forward, not `layer.forward`: the router may set this object as the layer's forward.
        self.own = type(layer).forward.__get__(layer)
        self.ready = False
        self.same: bool | None = None  # its output equals the layer's own (checked on the first call)
        self.noted = False  # why it ran the layer's own forward was noted (fastpath.note)

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
            # (its first forward packs it, where the CPU has the kernel)
            return self._own(x, "a layer not packed for the CPU kernel (it takes NF4, bf16, AVX512-BF16)")
        if not self._usable(x):
            return self._own(x, "an input that is not bf16 on the CPU without gradients")
        if self.same is None:
            expected = self._check(x)
            if expected is not None:
                return expected
        return self._call(x) if self.same else self.own(x)

    def _check(self, x: torch.Tensor) -> torch.Tensor | None:
        """Whether the kernel call gives the layer's own bits (compared once per layer); the layer's
        own output when it was computed for that."""
        self.same, expected = _checked.get(self.layer), None
        if self.same is None:
            expected = self.own(x)
            self.same = _checked[self.layer] = torch.equal(expected, self._call(x))
            if not self.same:
                log.warning("the direct 4-bit kernel call differs from the layer's own forward there: "
                            "that layer keeps its own")
        note(PACKED4BIT, None if self.same else "the kernel call differed from the layer's own forward")
        return expected

    def _own(self, x: torch.Tensor, why: str) -> torch.Tensor:
        if not self.noted:  # once per layer and batch: this runs at every token
            note(PACKED4BIT, why)
            self.noted = True
        return self.own(x)


def is_4bit_linear(module: nn.Module) -> bool:
    """bitsandbytes' own `Linear4bit` (PEFT's LoRA wrapper of it has the same class name)."""
    kind = type(module)
    return kind.__name__ == "Linear4bit" and kind.__module__.startswith("bitsandbytes.")


def direct_forward(layer: nn.Module) -> _Kernel | None:
    """For a bitsandbytes `Linear4bit`: a callable computing `layer.forward(x)` bit for bit, faster
    once the layer is packed for the CPU; None for any other layer, or where the fast path does not
    apply (`applies`)."""
    if not is_4bit_linear(layer):
        return None
    reason = applies()
    if reason:
        note(PACKED4BIT, reason)
        return None
    return _Kernel(layer, _native_kernel()[0])


def route(layers: list[nn.Module], patch: Patch) -> list[nn.Module]:
    """Set each bitsandbytes 4-bit layer of `layers` to its direct call, through `patch` (whose
    `restore` gives them their own forward back); returns the layers routed. Notes why none was
    when the fast path does not apply and there are 4-bit layers."""
    four_bit = [layer for layer in layers if is_4bit_linear(layer)]
    reason = applies() if four_bit else None
    if reason:
        note(PACKED4BIT, reason)
        return []
    for layer in four_bit:
        patch.replace_forward(layer, _Kernel(layer, _native_kernel()[0]))
    return four_bit
