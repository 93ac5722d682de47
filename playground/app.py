"""LoRA EQ web app: builds the Gradio Blocks from a loaded base model and its analysis.

The app holds no logic of its own: every value it shows comes from `adapters/` (and later
`evals/`). The loaded base is shared read-only between sessions; anything a user changes lives
in that user's session state.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from adapters.analysis import STATISTICS, Analysis, analyze_loaded
from adapters.errors import LoraEqError
from adapters.loading import PRECISIONS, LoadedModel, load_model
from playground.plots import analysis_heatmap

CELL_COLUMNS = ["layer", "role", "name", "in_features", "out_features", "params", "lora_params_per_rank",
                *STATISTICS]


@dataclass(frozen=True)
class AppContext:
    """Read-only objects every session shares."""

    loaded: LoadedModel
    analysis: Analysis


def model_summary(ctx: AppContext) -> str:
    a, m = ctx.analysis, ctx.loaded
    return (
        f"**{m.source.id}**  \n"
        f"precision **{m.precision}** ({m.precision_reason}) · memory {m.memory_bytes / 2**20:.0f} MiB · "
        f"loaded in {m.load_seconds:.1f} s  \n"
        f"{a.layers} layers x {len(a.roles)} roles = {len(a.cells)} tuning points · "
        f"{a.total_params:,} parameters, {sum(c['params'] for c in a.cells):,} of them in the grid"
    )


def cells_table(analysis: Analysis) -> pd.DataFrame:
    frame = pd.DataFrame(analysis.cells)[CELL_COLUMNS]
    return frame.round({s: 3 for s in STATISTICS})


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="LoRA EQ") as demo:
        gr.Markdown("# LoRA EQ\nWhere can this model be tuned? Every decoder layer x module role LoRA can attach to.")
        with gr.Tab("Model"):
            gr.Markdown(model_summary(ctx))
            with gr.Row():
                statistic = gr.Dropdown(list(STATISTICS) + ["params"], value="spectral", label="Statistic")
                per_role = gr.Checkbox(False, label="Scale each role to its own maximum")
            heatmap = gr.Plot(analysis_heatmap(ctx.analysis, "spectral"), label="Tuning points")
            gr.Dataframe(cells_table(ctx.analysis), label="Tuning points (one row per layer x role)",
                         interactive=False, max_height=420)
            gr.Dataframe(pd.DataFrame(ctx.analysis.other), label="Outside the decoder layers", interactive=False)
            gr.on(
                [statistic.change, per_role.change],
                lambda s, p: analysis_heatmap(ctx.analysis, s, p),
                [statistic, per_role],
                heatmap,
                api_name="heatmap",
            )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="LoRA EQ web app")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default=None, help="Hub id, model folder or .gguf (default: embedded SmolLM2)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--trust-remote-code", action="store_true")
    return p.parse_args(argv)


def load_context(model: str | None, precision: str, trust_remote_code: bool = False) -> AppContext:
    loaded = load_model(model, precision, trust_remote_code=trust_remote_code)
    return AppContext(loaded, analyze_loaded(loaded))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        ctx = load_context(args.model, args.precision, args.trust_remote_code)
    except LoraEqError as e:
        raise SystemExit(f"app.py: error: {e}") from None
    demo = build_app(ctx)
    print(f"LoRA EQ: {ctx.loaded.source.id} ready in {time.perf_counter() - started:.1f} s", flush=True)
    demo.launch(server_name=args.host, server_port=args.port)
