"""Equalizer & Train tab: the 2-D equalizer (click a cell to set it), presets, the data-suggested
shape, the variants list, and the training queue with progress and live loss."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from adapters.analysis import layer_bands
from adapters.data import load_dataset, split_heldout
from adapters.equalizer import PRESETS, Equalizer, equalizer_table, preset
from adapters.errors import LoraEqError
from adapters.runs import create_run, data_info, request_cancel, run_status
from adapters.suggest import suggest_equalizer
from adapters.variants import DataMix, Hyper, Variant, safe_name
from playground.plots import cell_at, equalizer_image, loss_curves
from playground.shared import Session, Shared
from playground.tab_model import current

VARIANT_COLUMNS = ["name", "equalizer", "rank", "learning_rate", "max_steps", "batch_size"]


def session_equalizer(shared: Shared, state: Session, bands: int = 4) -> Equalizer:
    if state.equalizer:
        return Equalizer.from_json(state.equalizer)
    tmap_roles = current(shared, state).analysis.roles
    layers = current(shared, state).analysis.layers
    return preset("uniform", tmap_roles, layer_bands(layers, bands))


def grid_frame(eq: Equalizer) -> pd.DataFrame:
    return pd.DataFrame(equalizer_table(eq))


def variants_frame(variants: list[dict]) -> pd.DataFrame:
    rows = []
    for v in variants:
        h = v["hyper"]
        eq = v["equalizer"] if isinstance(v["equalizer"], str) else "custom grid"
        rows.append({"name": v["name"], "equalizer": eq, "rank": h["rank"], "learning_rate": h["learning_rate"],
                     "max_steps": h["max_steps"], "batch_size": h["batch_size"]})
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


def progress_markdown(shared: Shared, state: Session) -> str:
    if not state.run_dir:
        return "No training started in this session yet."
    job = shared.jobs.get(state.run_dir)
    lines = [f"Run `{state.run_dir}`"]
    position = shared.jobs.position(state.run_dir)
    if position:
        lines.append(f"waiting in line: position **{position}** (one training job runs at a time)")
    elif job and job.state == "failed":
        lines.append(f"the training worker failed: `{job.stderr_tail.strip().splitlines()[-1:]}`")
    try:
        status = run_status(state.run_dir)
    except LoraEqError as e:
        return f"{lines[0]}: {e}"
    for v in status["variants"]:
        last = v["last"] or {}
        total = last.get("max_steps") or 0
        done = last.get("step", 0)
        bar = "█" * int(20 * done / total) + "░" * (20 - int(20 * done / total)) if total else "░" * 20
        extra = f" · loss {last['loss']:.3f} · {last['tokens_per_s']:.0f} tok/s · eta {last['eta_s']:.0f} s" if last else ""
        err = f" · {v['error']}" if v["error"] else ""
        lines.append(f"- **{v['name']}** {v['status']} `{bar}` {done}/{total or '?'}{extra}{err}")
    return "  \n".join(lines)


def build(shared: Shared, session: gr.State) -> None:
    first_eq = session_equalizer(shared, Session())
    gr.Markdown("**Equalizer**: click a cell to give it the brush strength (0 = no adapter there). "
                "Bands are groups of layers; columns are module roles.")
    with gr.Row():
        brush = gr.Slider(0, 2, value=1.0, step=0.05, label="Brush strength")
        preset_name = gr.Dropdown(list(PRESETS), value="uniform", label="Preset")
        apply_preset = gr.Button("Apply preset")
        suggest = gr.Button("Suggest from my data")
    grid_image = gr.Image(equalizer_image(first_eq), label="Equalizer (click a cell)", interactive=False,
                          elem_id="equalizer-grid", show_label=True, type="pil")
    grid = gr.Dataframe(grid_frame(first_eq), label="Strengths (editable)", interactive=True, elem_id="equalizer-table")
    suggestion = gr.Markdown()

    def show(eq: Equalizer, state: Session):
        state.equalizer = eq.to_json()
        return equalizer_image(eq), grid_frame(eq), state

    def on_click(strength: float, state: Session, evt: gr.SelectData):
        eq = session_equalizer(shared, state)
        cell = cell_at(eq, *evt.index)
        if cell is None:
            return equalizer_image(eq), grid_frame(eq), state
        return show(eq.with_cell(cell[0], eq.roles[cell[1]], float(strength)), state)

    grid_image.select(on_click, [brush, session], [grid_image, grid, session])

    def on_cell(band: int, role: str, strength: float, state: Session):
        eq = session_equalizer(shared, state)
        if role not in eq.roles or not 0 <= int(band) < len(eq.bands):
            raise gr.Error(f"no cell band {band} x {role!r}")
        return show(eq.with_cell(int(band), role, float(strength)), state)

    # The same action as a click, for scripts and the API: set one cell.
    hidden_band, hidden_role = gr.Number(visible=False), gr.Textbox(visible=False)
    gr.Button(visible=False).click(on_cell, [hidden_band, hidden_role, brush, session], [grid_image, grid, session],
                                   api_name="set_cell")

    def on_table(frame: pd.DataFrame, state: Session):
        eq = session_equalizer(shared, state)
        try:
            strengths = [[float(frame.iloc[b][r]) for r in eq.roles] for b in range(len(eq.bands))]
            eq = Equalizer(eq.roles, eq.bands, strengths)
        except (LoraEqError, KeyError, ValueError, IndexError) as e:
            raise gr.Error(f"equalizer table: {e}")
        state.equalizer = eq.to_json()
        return equalizer_image(eq), state

    grid.input(on_table, [grid, session], [grid_image, session])

    def on_preset(name: str, state: Session):
        a = current(shared, state).analysis
        return show(preset(name, a.roles, layer_bands(a.layers, 4)), state)

    apply_preset.click(on_preset, [preset_name, session], [grid_image, grid, session], api_name="preset")

    def on_suggest(state: Session, progress=gr.Progress()):
        if not state.data_path:
            raise gr.Error("validate a data file in the Data tab first")
        ds = load_dataset(state.data_path)
        loaded = current(shared, state)
        result = suggest_equalizer(loaded.model, [e.messages for e in ds.examples], bands=4,
                                   progress=lambda d, t: progress(d / t, desc="measuring sensitivity"))
        image, frame, state = show(result.equalizer, state)
        note = f"Suggested from {result.examples} examples ({result.tokens} tokens) in {result.seconds:.1f} s."
        return image, frame, note, state

    suggest.click(on_suggest, [session], [grid_image, grid, suggestion, session], api_name="suggest")

    gr.Markdown("**Variants**: each one is the equalizer above plus hyperparameters; each trains its own adapter.")
    with gr.Row():
        name = gr.Textbox("variant-1", label="Name")
        rank = gr.Number(8, label="Rank", precision=0)
        lr = gr.Number(2e-4, label="Learning rate")
        steps = gr.Number(20, label="Max steps", precision=0)
        batch = gr.Number(8, label="Batch size", precision=0)
        add = gr.Button("Add variant")
    variants = gr.Dataframe(pd.DataFrame(columns=VARIANT_COLUMNS), label="Variants", interactive=False)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        clear = gr.Button("Clear variants")
    progress_box = gr.Markdown(elem_id="train-progress")
    losses = gr.Plot(label="Training loss")
    timer = gr.Timer(2.0)

    def on_add(vname, vrank, vlr, vsteps, vbatch, state: Session):
        eq = session_equalizer(shared, state)
        taken = {v["name"] for v in state.variants}
        try:
            hyper = Hyper(rank=int(vrank), learning_rate=float(vlr), max_steps=int(vsteps), batch_size=int(vbatch))
            variant = Variant(safe_name(vname or "variant", taken), eq.to_json(), hyper)
        except (LoraEqError, ValueError) as e:
            raise gr.Error(str(e))
        state.variants = [*state.variants, variant.to_json()]
        return variants_frame(state.variants), f"variant-{len(state.variants) + 1}", state

    add.click(on_add, [name, rank, lr, steps, batch, session], [variants, name, session], api_name="add_variant")

    def on_clear(state: Session):
        state.variants = []
        return variants_frame([]), state

    clear.click(on_clear, [session], [variants, session])

    def on_start(state: Session):
        if not state.data_path:
            raise gr.Error("validate a data file in the Data tab first")
        if not state.variants:
            raise gr.Error("add at least one variant")
        weights, quotas = state.mix.get("weights"), state.mix.get("quotas")
        try:
            ds = load_dataset(state.data_path)
            group = "fact_id" if all("fact_id" in e.meta for e in ds.examples) else None
            split = split_heldout(ds, fraction=0.1, seed=0, group=group)
            variants = [Variant.from_json({**v, "mix": DataMix(weights=weights, quotas=quotas).__dict__})
                        for v in state.variants]
            run_dir = shared.session_dir(state) / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
            create_run(run_dir, variants=variants, split=split, data_info=data_info(ds, split, state.data_path),
                       model=state.model or shared.default_model,
                       precision=state.precision or shared.default_precision)
            shared.jobs.submit(str(run_dir), ["train", "--resume", str(run_dir), "--json"])
        except (LoraEqError, RuntimeError) as e:
            raise gr.Error(str(e))
        state.run_dir = str(run_dir)
        return progress_markdown(shared, state), state

    start.click(on_start, [session], [progress_box, session], api_name="start_training")

    def on_cancel(state: Session):
        if state.run_dir:
            request_cancel(state.run_dir)
        return progress_markdown(shared, state)

    cancel.click(on_cancel, [session], progress_box)

    def on_tick(state: Session):
        if not state.run_dir:
            return gr.skip(), gr.skip()
        try:
            return progress_markdown(shared, state), loss_curves(run_status(state.run_dir))
        except LoraEqError:
            return gr.skip(), gr.skip()

    timer.tick(on_tick, [session], [progress_box, losses])
