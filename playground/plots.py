"""Figures for the web UI, drawn with matplotlib from core objects (no gradio here either)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to images, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from adapters.analysis import Analysis  # noqa: E402

LABELS = {
    "frobenius": "Frobenius norm",
    "spectral": "spectral norm",
    "stable_rank": "stable rank",
    "effective_rank": "effective rank",
    "params": "parameters",
}


def analysis_heatmap(analysis: Analysis, statistic: str = "spectral", per_role: bool = False):
    """Layers (rows, first layer on top) x roles (columns), colored by `statistic`, bands marked.

    `per_role` divides each column by its maximum, so depth trends show within roles whose
    scales differ (a wide MLP weight has a larger norm than a narrow key projection)."""
    grid = analysis.grid(statistic)
    if per_role:
        grid = grid / grid.max(axis=0).replace(0, 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(analysis.roles) + 2.5, max(3.5, 0.22 * analysis.layers + 1.5)))
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(len(analysis.roles)), analysis.roles, rotation=35, ha="right")
    step = max(1, analysis.layers // 15)
    ax.set_yticks(np.arange(0, analysis.layers, step))
    ax.set_ylabel("decoder layer")
    for band in analysis.bands[:-1]:
        ax.axhline(band[-1] + 0.5, color="white", linewidth=1.5)
    label = LABELS.get(statistic, statistic)
    fig.colorbar(image, ax=ax, label=f"{label} / role max" if per_role else label)
    ax.set_title(f"{LABELS.get(statistic, statistic)} per layer x role ({len(analysis.bands)} bands)")
    fig.tight_layout()
    return fig
