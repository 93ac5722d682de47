"""Layer bands: a model's layers split into consecutive groups, the rows of an equalizer grid.

Plain arithmetic on layer counts (no model, no torch), so that run folders, variants and the CLI
can speak of bands without loading anything.
"""

from __future__ import annotations

from adapters.errors import LoraEqError

DEFAULT_BANDS = 4  # layer bands of an equalizer grid (the layers split into N consecutive groups)


def layer_bands(layers: int, bands: int) -> list[list[int]]:
    """Split layers 0..layers-1 into `bands` contiguous groups, earlier groups one larger if uneven."""
    if bands < 1:
        raise LoraEqError(f"bands={bands}: need at least 1 band")
    bands = min(bands, layers)
    size, extra = divmod(layers, bands)
    out, start = [], 0
    for b in range(bands):
        stop = start + size + (1 if b < extra else 0)
        out.append(list(range(start, stop)))
        start = stop
    return out
