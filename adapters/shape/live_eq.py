"""The live equalizer: per-cell multipliers on a trained adapter's LoRA scaling, at inference time.

A LoRA layer adds `B(A(x)) * scaling[adapter]` to its base output. Multiplying a layer's
`scaling[adapter]` by the value of its cell (layer band x module role) turns that place's learned
update up or down without reloading the base, re-reading the adapter or retraining: 0 silences
the place (the base's exact output there), 1 is the adapter as trained, 2 doubles its update.
`LiveEqWriter` remembers the trained scaling of every layer it touches, always scales from those
values (never compounding) and `reset` puts them back bit for bit.

`LiveEqCells.multipliers` only computes each layer's factor (the fused router multiplies its rows'
scaling by it, touching nothing shared); `LiveEqWriter` writes the factors into the model, so
whoever shares that model must serialize it with generation (the engine does, and scales only
private copies, so a trained adapter always answers as trained). Nothing here generates, loads
adapters or decides the grid's shape (an `Equalizer` whose strengths are read as multipliers).
"""

from __future__ import annotations

import re

from torch import nn

from adapters.base.analysis import TuningMap
from adapters.errors import LoraEqError

from .equalizer import Equalizer

# PeftModel prefixes the base model's module names with this.
_PEFT_PREFIX = "base_model.model."


def lora_layers(peft_model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(base module name, LoRA layer) for every LoRA layer of a PeftModel."""
    from peft.tuners.lora import LoraLayer

    return [
        (name.removeprefix(_PEFT_PREFIX), module)
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    ]


def cells_of(tmap: TuningMap, names: list[str]) -> dict[str, tuple[int, str] | None]:
    """The (layer, role) cell of each base module name, or None for a module outside the grid."""
    exact = {c.name: (c.layer, c.role) for c in tmap.cells if "*" not in c.name}
    grouped = [
        (re.compile(re.escape(c.name).replace(r"\*", r"\d+")), (c.layer, c.role)) for c in tmap.cells if "*" in c.name
    ]
    found: dict[str, tuple[int, str] | None] = {}
    for name in names:
        found[name] = exact.get(name) or next((cell for rx, cell in grouped if rx.fullmatch(name)), None)
    return found


def check_grid(grid: Equalizer, tmap: TuningMap) -> None:
    """A multiplier grid must cover the model's layers and name only roles the model has."""
    if not isinstance(grid, Equalizer):
        raise LoraEqError(f"live_eq must be an Equalizer grid, got {type(grid).__name__}")
    if grid.layers != tmap.layers:
        raise LoraEqError(f"live equalizer grid covers {grid.layers} layers but the model has {tmap.layers}")
    unknown = [r for r in grid.roles if r not in tmap.roles]
    if unknown:
        raise LoraEqError(f"live equalizer grid roles {unknown}: the model has no such roles ({', '.join(tmap.roles)})")


def multiplier(grid: Equalizer, cell: tuple[int, str] | None) -> float:
    """A layer's multiplier: its cell's value; 1 (as trained) outside the grid or for roles it omits."""
    if cell is None or cell[1] not in grid.roles:
        return 1.0
    return grid.strength(*cell)


class LiveEqCells:
    """Which grid cell each LoRA layer of a PeftModel belongs to, and its multiplier under a grid."""

    def __init__(self, peft_model: nn.Module, tmap: TuningMap):
        self.tmap = tmap
        self._model = peft_model
        self.layers: list[tuple[nn.Module, tuple[int, str] | None]] = []
        self.refresh()

    def refresh(self) -> None:
        """Find the LoRA layers again: loading an adapter that targets new modules adds layers."""
        layers = lora_layers(self._model)
        cells = cells_of(self.tmap, [name for name, _ in layers])
        self.layers = [(module, cells[name]) for name, module in layers]

    def multipliers(self, grid: Equalizer) -> dict[nn.Module, float]:
        """Every LoRA layer's multiplier under `grid` (checked against the model first)."""
        check_grid(grid, self.tmap)
        return {module: multiplier(grid, cell) for module, cell in self.layers}


class LiveEqWriter:
    """Per-cell scale multipliers set on the adapters of one PeftModel in place, with exact reset."""

    def __init__(self, cells: LiveEqCells):
        self.cells = cells
        self._trained: dict[str, dict[nn.Module, float]] = {}

    def apply(self, adapter: str, grid: Equalizer) -> int:
        """Scale `adapter` place by place: scaling = trained scaling x the cell's multiplier.
        Returns how many LoRA layers of the adapter were set."""
        factors = self.cells.multipliers(grid)
        trained = self._remember(adapter)
        for module, value in trained.items():
            module.scaling[adapter] = value * factors[module]
        return len(trained)

    def reset(self, adapter: str) -> None:
        """Put the trained scaling of `adapter` back exactly (a no-op when it was never scaled)."""
        for module, value in self._trained.pop(adapter, {}).items():
            module.scaling[adapter] = value

    def is_scaled(self, adapter: str) -> bool:
        return adapter in self._trained

    def _remember(self, adapter: str) -> dict[nn.Module, float]:
        if adapter not in self._trained:
            found = {m: m.scaling[adapter] for m, _ in self.cells.layers if adapter in m.scaling}
            if not found:
                raise LoraEqError(f"adapter {adapter!r}: not loaded in this model")
            self._trained[adapter] = found
        return self._trained[adapter]
