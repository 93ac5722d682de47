"""Mixed-adapter batches: every row of one batch through its own LoRA adapter, or none, in one forward.

Two routers, the same answers (and a third for a model with one adapter, `ActiveRouter`):

- `PeftRouter` hands PEFT's `adapter_names` (one per row, "__base__" for the original) to every
  forward; each LoRA layer then splits its batch per adapter (`_mixed_batch_forward`). It is the
  reference, and the path for adapters that are not plain LoRA (DoRA, LoRA bias, ...).
- `FusedRouter` (the default for plain LoRA) routes each LoRA layer, for the batch, to its base
  layer plus every row's update, computed with two batched matmuls:
  the rows' A and B matrices are gathered once per batch into stacked tensors (zeros for the base
  and for an adapter that does not touch that layer, zero-padded up to the largest rank there).
  PEFT's split costs about a dozen small tensor ops per adapter per layer at every token; on a
  CPU that overhead outweighed the whole base model (measured with four adapters: see
  benchmarks/compare_speed.py). The fused update is three ops per layer whatever the number of
  adapters. Its arithmetic follows PEFT's one-adapter forward op for op (input cast to the
  adapter's dtype, B(A(x)) * scaling, then that layer type's own cast and add), so a row's output
  is bit for bit what `set_adapter` + a plain forward gives when its rank is the layer's largest
  (tested in fp32, bf16 and NF4). A lower rank padded with zeros is the same sum, but the matmul
  may then take another kernel and differ in the last bits, as the base's own matmuls do between
  batch sizes; greedy answers stay token-identical in every test and benchmark here.

The fused router is the `fused_router` fast path (fastpath.py): `fusable` says why an adapter cannot
take it (switched off by LORAEQ_FAST_PATHS, a PEFT release it was not tested on, an adapter that is
not plain LoRA by `fastpath.plain_lora_reason`, the test `lora_train` uses too), and `ROUTERS["fused"]`
gives PEFT's router where the fast path is off. Under either router a bitsandbytes 4-bit layer packed
for the CPU is called through its kernel directly (the `packed4bit` fast path: the same bits,
without the layer's Python around the call), and a float32 linear layer over a step's few rows as
weight x rows (the `few_rows_linear` fast path, few_rows.py: MKL's faster product). Each router's
changes to the model are one `fastpath.Patch`, which its `close` restores.

Live equalizer: the fused router takes a multiplier per row and LoRA layer and multiplies that
row's scaling by it, so one adapter can answer scaled and as trained in the same batch without a
copy; PEFT's path reads `scaling[adapter]`, so scaled rows there need their own adapter copies
(the engine makes them). Neither router is thread-safe: the fused one re-routes the shared model's
LoRA layers for the batch, and PEFT hangs its `adapter_names` hooks on them at every forward (the
engine runs one batch at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from adapters.errors import LoraEqError
from adapters.fastpath import FUSED_ROUTER, Patch, note, off_reason, plain_lora_reason

from . import few_rows, packed4bit

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in mixed batches
# PEFT LoRA layer classes whose one-adapter forward casts the update to the output dtype before adding
# (the bitsandbytes ones); PEFT's plain Linear adds first and casts the sum.
_CAST_BEFORE_ADD = ("Linear4bit", "Linear8bitLt")

Multipliers = dict[nn.Module, float]  # LoRA layer -> factor on its scaling (live_eq.CellMap)
RowMultipliers = list[Multipliers | None] | None  # one per row; None: every row as trained


def _lora_modules(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _plain_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PeftModel (the routers call it directly)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _forward_parameters(model: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(_plain_model(model).forward).parameters)


def supports_prefill_slicing(model: nn.Module) -> bool:
    return "logits_to_keep" in _forward_parameters(model)


def cache_keyword(model: nn.Module) -> str:
    """The keyword the model's forward takes its KV cache by: `cache` in the transformers releases
    that renamed it (they drop `past_key_values` in 5.40), `past_key_values` in earlier ones."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def fusable(model: nn.Module, adapter: str) -> str | None:
    """Why `adapter` cannot go through the fused router, or None when it can (plain LoRA on linear
    layers, the fast path on)."""
    off = off_reason(FUSED_ROUTER)
    if off:
        return off
    for module in _lora_modules(model):
        if adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {}):
            reason = plain_lora_reason(module, adapter)
            if reason:
                return reason
    return None


class _Forward:
    """The shared forward: last position's logits as float32, slicing the prefill where the model can."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = _plain_model(model).config
        self._slice = supports_prefill_slicing(model)
        self._cache_keyword = cache_keyword(model)

    def _logits(self, call: nn.Module, inputs: dict, extra: dict) -> torch.Tensor:
        if self._slice:
            # The last position, by index: a slice `[:, -1:]` of a many-row prefill is not contiguous, and
            # the output layer then copies its whole weight once per row to multiply it (a 5-row prefill
            # of SmolLM2 spent 0.2 s there); indexing hands it a contiguous input.
            width = inputs["input_ids"].shape[1]
            keep = 1 if width == 1 else torch.tensor([width - 1], device=inputs["input_ids"].device)
            extra = {**extra, "logits_to_keep": keep}
        inputs = {self._cache_keyword if k == "cache" else k: v for k, v in inputs.items()}
        out = call(**inputs, use_cache=True, **extra)
        return out.logits[:, -1, :].float()


class PeftRouter(_Forward):
    """PEFT's own mixed-adapter batches: `adapter_names=` on every forward."""

    def __init__(self, model: nn.Module, row_adapters: list[str], row_multipliers: RowMultipliers = None):
        super().__init__(model)
        if any(m is not None for m in row_multipliers or []):
            raise LoraEqError("PEFT's mixed batches read each adapter's own scaling: scale a copy of it instead")
        self.names = list(row_adapters)
        self._modules = _lora_modules(model)
        self._patch = Patch("peft_router")
        layers = list(_plain_model(model).modules())
        few_rows.route(layers, self._patch)
        packed4bit.route(layers, self._patch)

    def forward(self, **inputs) -> torch.Tensor:
        if not self._modules:  # a base without any adapter
            return self._logits(self.model, inputs, {})
        return self._logits(self.model, inputs, {"adapter_names": self.names})

    def keep(self, rows: torch.Tensor) -> None:
        self.names = [self.names[i] for i in rows.tolist()]

    def close(self) -> None:
        self._patch.restore()


@dataclass
class _LayerRows:
    """One LoRA layer's factors for the rows of a batch, stacked: zeros where a row's adapter does
    not touch the layer (or for the base), and zero-padded up to the largest rank present. When
    every row takes the same adapter at the same scale (`single`), the update is that adapter's
    own two linear maps, as PEFT computes it, and dropping rows costs nothing."""

    a: torch.Tensor  # (rows, rank, in), laid out as lora_A weights
    b: torch.Tensor  # (rows, out, rank), laid out as lora_B weights
    scaling: torch.Tensor  # (rows, 1, 1)
    cast_before_add: bool
    single: tuple[torch.Tensor, torch.Tensor, float] | None = None  # (A, B, scaling) shared by all rows

    def __post_init__(self) -> None:
        # Used transposed, as F.linear uses a weight, so each row's sums run in PEFT's order.
        self.a_t, self.b_t = self.a.transpose(1, 2), self.b.transpose(1, 2)
        # A power-of-two scale (alpha / r = 2 by default) multiplied into B changes no bit of the
        # product and saves a multiplication per layer call.
        mantissa = torch.frexp(self.scaling).mantissa
        self.folded = bool(self.scaling.numel()) and bool(((mantissa.abs() == 0.5) | (self.scaling == 0)).all())
        if self.folded:
            self.b_t = (self.b * self.scaling).transpose(1, 2)

    def keep(self, rows: torch.Tensor) -> None:
        if self.single is not None:
            return
        self.a, self.b, self.scaling = self.a[rows], self.b[rows], self.scaling[rows]
        self.__post_init__()

    def add_update(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        if self.single is not None:
            a, b, scaling = self.single
            update = F.linear(F.linear(x.to(a.dtype), a), b) * scaling
        else:
            update = torch.bmm(torch.bmm(x.to(self.a.dtype), self.a_t), self.b_t)
            if not self.folded:
                update = update * self.scaling
        if self.cast_before_add:
            return result + update.to(result.dtype)
        return (result + update).to(result.dtype)


def gather_rows(module: nn.Module, row_adapters: list[str], row_multipliers: RowMultipliers) -> _LayerRows | None:
    """Stack the rows' LoRA factors of one layer, or None when no row's adapter touches it."""
    present = [name for name in dict.fromkeys(row_adapters) if name in module.lora_A]
    if not present:
        return None
    for name in present:
        reason = plain_lora_reason(module, name)
        if reason:
            raise LoraEqError(f"adapter {name!r} uses {reason}: use the 'peft' backend")
    factors = [row_multipliers[i].get(module, 1.0) if row_multipliers[i] is not None else 1.0
               for i in range(len(row_adapters))]
    cast_before_add = type(module).__name__ in _CAST_BEFORE_ADD
    if len(set(row_adapters)) == 1 and len(set(factors)) == 1:
        name = present[0]
        weight_a, weight_b = module.lora_A[name].weight, module.lora_B[name].weight
        empty = weight_a.new_zeros((0, 1, 1))
        return _LayerRows(empty, empty, empty, cast_before_add,
                          single=(weight_a, weight_b, module.scaling[name] * factors[0]))
    rank = max(module.lora_A[name].weight.shape[0] for name in present)
    weight_a, weight_b = module.lora_A[present[0]].weight, module.lora_B[present[0]].weight
    a = weight_a.new_zeros((len(row_adapters), rank, weight_a.shape[1]))
    b = weight_b.new_zeros((len(row_adapters), weight_b.shape[0], rank))
    scaling = weight_a.new_zeros((len(row_adapters), 1, 1))
    for i, name in enumerate(row_adapters):
        if name in module.lora_A:
            r = module.lora_A[name].weight.shape[0]
            a[i, :r] = module.lora_A[name].weight
            b[i, :, :r] = module.lora_B[name].weight
            scaling[i] = module.scaling[name] * factors[i]
    return _LayerRows(a, b, scaling, cast_before_add)


class FusedRouter(_Forward):
    """All rows' LoRA updates in two batched matmuls per layer (plain LoRA only; see the module doc).

    For the batch, every LoRA layer's `forward` is replaced on the instance (as accelerate's hooks
    do) by its base layer plus the rows' update, which skips PEFT's per-call bookkeeping; `close`
    puts back what was there."""

    def __init__(self, model: nn.Module, row_adapters: list[str], row_multipliers: RowMultipliers = None):
        super().__init__(model)
        row_multipliers = row_multipliers or [None] * len(row_adapters)
        self._modules = _lora_modules(model)
        self._rows: dict[nn.Module, _LayerRows] = {}
        for module in self._modules:
            rows = gather_rows(module, row_adapters, row_multipliers)
            if rows is not None:
                self._rows[module] = rows
        note(FUSED_ROUTER, None)
        self._patch = Patch(FUSED_ROUTER)
        # float32 linear layers (base layers included: read below as their forward) over few rows.
        few_rows.route(list(_plain_model(model).modules()), self._patch)
        for module in self._modules:
            rows = self._rows.get(module)
            # A 4-bit base layer on the CPU: its kernel called directly (`packed4bit`, the same bits).
            direct = packed4bit.direct_forward(module.base_layer)
            plain = direct or module.base_layer.forward
            self._patch.replace_forward(module, plain if rows is None
                                        else partial(_base_plus_update, direct or module.base_layer, rows))
        # 4-bit layers that no adapter wraps (or a base without adapters) the same way.
        wrapped = {id(m) for m in self._modules} | {id(m.base_layer) for m in self._modules}
        packed4bit.route([m for m in _plain_model(model).modules() if id(m) not in wrapped], self._patch)

    def forward(self, **inputs) -> torch.Tensor:
        return self._logits(_plain_model(self.model), inputs, {})

    def keep(self, rows: torch.Tensor) -> None:
        for r in self._rows.values():
            r.keep(rows)

    def close(self) -> None:
        self._patch.restore()
        self._modules, self._rows = [], {}


def _base_plus_update(base_layer: nn.Module, rows: _LayerRows, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return rows.add_update(x, base_layer(x, *args, **kwargs))


class ActiveRouter(_Forward):
    """Every row through the model's active adapter, by the layers' own forward: a model being
    trained (a search's trial) answers with its one adapter, without routing rows."""

    def __init__(self, model: nn.Module, row_adapters: list[str], row_multipliers: RowMultipliers = None):
        super().__init__(model)
        if any(m is not None for m in row_multipliers or []):
            raise LoraEqError("the active adapter's own scaling applies to every row")

    def forward(self, **inputs) -> torch.Tensor:
        return self._logits(self.model, inputs, {})

    def keep(self, rows: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        pass


def fused_or_peft(model: nn.Module, row_adapters: list[str],
                  row_multipliers: RowMultipliers = None) -> FusedRouter | PeftRouter:
    """The fused router, or PEFT's where the fused router's fast path is off (`fastpath.off_reason`)."""
    off = off_reason(FUSED_ROUTER)
    if off is None:
        return FusedRouter(model, row_adapters, row_multipliers)
    note(FUSED_ROUTER, off)
    return PeftRouter(model, row_adapters, row_multipliers)


ROUTERS = {"fused": fused_or_peft, "peft": PeftRouter, "active": ActiveRouter}
