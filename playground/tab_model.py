"""Model tab: choose and load a base (Hub id, folder, GGUF; precision), see its tuning points."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from adapters.base.analysis import STATISTICS
from adapters.base.loading import PRECISIONS
from adapters.errors import LoraEqError
from adapters.limits import check_text
from playground.guard import handler
from playground.plots import analysis_heatmap
from playground.sessions import Session
from playground.shared import Loaded, Shared
from playground.workspace import current

CELL_COLUMNS = ["layer", "role", "name", "in_features", "out_features", "params", "lora_params_per_rank", *STATISTICS]


def model_summary(loaded: Loaded) -> str:
    a, m = loaded.analysis, loaded.model
    return (
        f"**{m.source.id}**  \n"
        f"precision **{m.precision}** ({m.precision_reason}) · memory {m.memory_bytes / 2**20:.0f} MiB · "
        f"loaded in {m.load_seconds:.1f} s  \n"
        f"{a.layers} layers x {len(a.roles)} roles = {len(a.cells)} tuning points · "
        f"{a.total_params:,} parameters, {sum(c['params'] for c in a.cells):,} of them in the grid"
    )


def cells_table(loaded: Loaded) -> pd.DataFrame:
    frame = pd.DataFrame(loaded.analysis.cells)[CELL_COLUMNS]
    return frame.round({s: 3 for s in STATISTICS})




def load_base(shared: Shared, text: str, prec: str, stat: str, scaled: bool, state: Session):
    text = check_text("model", text, shared.limits.text_chars).strip()
    if prec not in PRECISIONS:
        raise LoraEqError(f"precision {str(prec)[:40]!r}: choose one of {', '.join(PRECISIONS)}")
    model = None if text in ("", "default") else text
    loaded = shared.registry.get(model, prec)
    state.model, state.precision = model, prec
    return (model_summary(loaded), analysis_heatmap(loaded.analysis, stat, bool(scaled)), cells_table(loaded),
            pd.DataFrame(loaded.analysis.other), state)


def heatmap(shared: Shared, stat: str, scaled: bool, state: Session):
    if stat not in (*STATISTICS, "params"):
        raise LoraEqError(f"statistic {str(stat)[:40]!r}: choose one of {', '.join(STATISTICS)}, params")
    return analysis_heatmap(current(shared, state).analysis, stat, bool(scaled))


def build(shared: Shared, session: gr.State, demo: gr.Blocks) -> None:
    first = shared.registry.get(shared.default_model, shared.default_precision)
    with gr.Row():
        spec = gr.Textbox(shared.default_model or "default", label="Model (Hub id, folder, or .gguf file)", scale=3)
        precision = gr.Dropdown(list(PRECISIONS), value=shared.default_precision, label="Precision", scale=1)
        load = gr.Button("Load & analyze", variant="primary", scale=1)
    summary = gr.Markdown(model_summary(first), elem_id="model-summary")
    with gr.Row():
        statistic = gr.Dropdown(list(STATISTICS) + ["params"], value="spectral", label="Statistic")
        per_role = gr.Checkbox(False, label="Scale each role to its own maximum")
    plot = gr.Plot(label="Tuning points", elem_id="tuning-heatmap")  # drawn when the page opens
    table = gr.Dataframe(cells_table(first), label="Tuning points (one row per layer x role)", interactive=False,
                         max_height=360)
    other = gr.Dataframe(pd.DataFrame(first.analysis.other), label="Outside the decoder layers", interactive=False)
    load.click(handler(load_base, shared), [spec, precision, statistic, per_role, session],
               [summary, plot, table, other, session], api_name="load_model")
    gr.on([statistic.change, per_role.change], handler(heatmap, shared), [statistic, per_role, session], plot,
          api_name="heatmap")
    # Not before serving: the server answers sooner and the heatmap follows (start-up, benchmarks/app_startup.py).
    demo.load(handler(heatmap, shared), [statistic, per_role, session], plot, api_name=False)
