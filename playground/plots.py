"""Figures for the web UI, drawn with matplotlib from core objects (no gradio here either).

Figures are made with matplotlib's object API (`Figure`), imported when the first one is drawn:
no pyplot state keeps them alive in a long-running server, and the app's start-up does not wait
for the plotting stack.
"""

from __future__ import annotations

import matplotlib
import numpy as np

from adapters.base.analysis import Analysis

matplotlib.use("Agg")  # headless: figures are rendered to images, never to a window


def _axes(figsize: tuple[float, float]):
    """A new figure and its one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


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
    fig, ax = _axes((1.1 * len(analysis.roles) + 2.5, max(3.5, 0.22 * analysis.layers + 1.5)))
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


# ---- the equalizer grid, drawn as an image the user clicks on ---------------------------------

CELL_W, CELL_H, LEFT, TOP = 92, 46, 96, 34


def equalizer_image(eq, max_strength: float = 2.0):
    """The equalizer as a clickable heatmap: one box per band x role with its strength written in.

    Drawn with PIL at fixed cell sizes so that a click's pixel position maps back to a cell
    (`cell_at`) exactly, whatever the browser does with matplotlib's margins."""
    from PIL import Image, ImageDraw

    cmap = matplotlib.colormaps["magma"]
    width, height = LEFT + CELL_W * len(eq.roles) + 8, TOP + CELL_H * len(eq.bands) + 8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for j, role in enumerate(eq.roles):
        draw.text((LEFT + j * CELL_W + 6, 10), role[:13], fill="black")
    for b, layers in enumerate(eq.bands):
        draw.text((6, TOP + b * CELL_H + 16), f"layers {layers[0]}-{layers[-1]}", fill="black")
        for j in range(len(eq.roles)):
            value = eq.strengths[b][j]
            r, g, bl, _ = cmap(0.15 + 0.8 * min(value, max_strength) / max_strength) if value > 0 else (0.93, 0.93, 0.93, 1)
            box = (LEFT + j * CELL_W, TOP + b * CELL_H, LEFT + (j + 1) * CELL_W - 3, TOP + (b + 1) * CELL_H - 3)
            draw.rectangle(box, fill=(int(r * 255), int(g * 255), int(bl * 255)))
            text = "off" if value == 0 else f"{value:.2f}"
            draw.text((box[0] + 30, box[1] + 16), text, fill="white" if 0 < value < 0.6 * max_strength else "black")
    return image


def cell_at(eq, x: int, y: int) -> tuple[int, int] | None:
    """(band, role index) under pixel (x, y) of `equalizer_image`, or None outside the grid."""
    if x < LEFT or y < TOP:
        return None
    band, role = (y - TOP) // CELL_H, (x - LEFT) // CELL_W
    if band < len(eq.bands) and role < len(eq.roles):
        return int(band), int(role)
    return None


def loss_curves(status: dict):
    """Training loss per variant of a run (from `runs.run_status`), its held-out loss dashed."""
    fig, ax = _axes((7, 3.2))
    for v in status["variants"]:
        if v["losses"]:
            steps, losses = zip(*v["losses"])
            line, = ax.plot(steps, losses, label=f"{v['name']} ({v['status']})")
            if v.get("heldout_losses"):
                steps, losses = zip(*v["heldout_losses"])
                ax.plot(steps, losses, "--o", color=line.get_color(), markersize=3, label=f"{v['name']} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (solid: training, dashed: held-out)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def evalset_heatmap(cases: list[str], columns: list[str], verdicts: list[list[bool | None]]):
    """Eval-set cells: cases (rows) x columns, green pass, red fail, grey for a cell without checks."""
    grid = np.array([[np.nan if v is None else float(v) for v in row] for row in verdicts], dtype=float)
    fig, ax = _axes((1.2 * len(columns) + 3, max(2.5, 0.25 * len(cases) + 1.2)))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(len(columns)), columns, rotation=30, ha="right")
    step = max(1, len(cases) // 30)
    ax.set_yticks(np.arange(0, len(cases), step), [c[:40] for c in cases[::step]], fontsize=7)
    rates = [np.nanmean(grid[:, j]) if np.any(~np.isnan(grid[:, j])) else np.nan for j in range(len(columns))]
    ax.set_title("pass rate: " + ", ".join(f"{c} {r:.0%}" for c, r in zip(columns, rates) if not np.isnan(r)),
                 fontsize=9)
    fig.tight_layout()
    return fig


def probability_bars(result: dict):
    """Grouped horizontal bars: one group per label, one bar per column."""
    labels, columns = result["labels"], result["columns"]
    fig, ax = _axes((7, 0.5 + 0.45 * len(labels) * max(1, len(columns)) ** 0.5))
    height = 0.8 / len(columns)
    for i, c in enumerate(columns):
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [c["probabilities"][x] for x in labels], height=height, label=c["name"])
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def cell_effects_heatmap(effects: dict):
    """A search's cell effects (`evals.search.cell_effects`): bands (rows) x roles, each cell the
    correlation across finished trials of its strength with the score, blue where strength paid off."""
    cells = np.asarray(effects["cells"], dtype=float)
    roles, bands = effects["roles"], effects["bands"]
    fig, ax = _axes((1.1 * len(roles) + 2.5, 0.5 * len(bands) + 1.6))
    image = ax.imshow(cells, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(len(roles)), roles, rotation=35, ha="right")
    ax.set_yticks(np.arange(len(bands)), [f"layers {b[0]}-{b[-1]}" for b in bands])
    for (b, r), value in np.ndenumerate(cells):
        ax.text(r, b, f"{value:+.2f}", ha="center", va="center", fontsize=8,
                color="white" if abs(value) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="correlation with the score")
    ax.set_title("where adapting paid off: each cell's strength against the score", fontsize=9)
    fig.tight_layout()
    return fig
