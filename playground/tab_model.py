"""Model tab: choose and load a base (Hub id, folder, GGUF; precision), see its tuning points."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from adapters.analysis import STATISTICS
from adapters.errors import LoraEqError
from adapters.loading import PRECISIONS
from playground.plots import analysis_heatmap
from playground.shared import Loaded, Session, Shared

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


def current(shared: Shared, session: Session) -> Loaded:
    return shared.registry.get(session.model or shared.default_model, session.precision or shared.default_precision)


def build(shared: Shared, session: gr.State) -> None:
    first = shared.registry.get(shared.default_model, shared.default_precision)
    with gr.Row():
        spec = gr.Textbox(shared.default_model or "default", label="Model (Hub id, folder, or .gguf file)", scale=3)
        precision = gr.Dropdown(list(PRECISIONS), value=shared.default_precision, label="Precision", scale=1)
        load = gr.Button("Load & analyze", variant="primary", scale=1)
    summary = gr.Markdown(model_summary(first), elem_id="model-summary")
    with gr.Row():
        statistic = gr.Dropdown(list(STATISTICS) + ["params"], value="spectral", label="Statistic")
        per_role = gr.Checkbox(False, label="Scale each role to its own maximum")
    heatmap = gr.Plot(analysis_heatmap(first.analysis, "spectral"), label="Tuning points")
    table = gr.Dataframe(cells_table(first), label="Tuning points (one row per layer x role)", interactive=False,
                         max_height=360)
    other = gr.Dataframe(pd.DataFrame(first.analysis.other), label="Outside the decoder layers", interactive=False)

    def on_load(text: str, prec: str, stat: str, scaled: bool, state: Session):
        model = None if text.strip() in ("", "default") else text.strip()
        try:
            loaded = shared.registry.get(model, prec)
        except LoraEqError as e:
            raise gr.Error(str(e))
        state.model, state.precision = model, prec
        return (model_summary(loaded), analysis_heatmap(loaded.analysis, stat, scaled), cells_table(loaded),
                pd.DataFrame(loaded.analysis.other), state)

    load.click(on_load, [spec, precision, statistic, per_role, session], [summary, heatmap, table, other, session],
               api_name="load_model")

    def on_stat(stat: str, scaled: bool, state: Session):
        return analysis_heatmap(current(shared, state).analysis, stat, scaled)

    gr.on([statistic.change, per_role.change], on_stat, [statistic, per_role, session], heatmap, api_name="heatmap")
