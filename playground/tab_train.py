"""Equalizer & Train tab: the 2-D equalizer (click a cell to set it), presets, the data-suggested
shape, the variants list, and the training queue with progress and live loss."""

from __future__ import annotations

import shutil

import gradio as gr
import pandas as pd

from adapters.analysis import layer_bands
from adapters.dataspec import start_run
from adapters.equalizer import PRESETS, Equalizer, equalizer_table, preset
from adapters.errors import LoraEqError
from adapters.limits import check_hyper, check_number, check_ranks, check_text, check_training_memory, training_memory
from adapters.runs import request_cancel, run_status
from adapters.suggest import suggest_equalizer
from adapters.variants import DEFAULT_BANDS, Hyper, Variant, auto_schedule, safe_name
from playground import gpu
from playground.guard import handler, public_message
from playground.plots import cell_at, equalizer_image, loss_curves
from playground.sessions import Session
from playground.shared import Shared
from playground.tab_data import session_dataset, session_spec
from playground.tab_model import current

MAX_STRENGTH = 2.0
VARIANT_COLUMNS = ["name", "equalizer", "rank", "learning_rate", "max_steps", "batch_size", "schedule"]


def session_equalizer(shared: Shared, state: Session) -> Equalizer:
    if state.equalizer:
        return Equalizer.from_json(state.equalizer)
    analysis = current(shared, state).analysis
    return preset("uniform", analysis.roles, layer_bands(analysis.layers, DEFAULT_BANDS))


def grid_frame(eq: Equalizer) -> pd.DataFrame:
    return pd.DataFrame(equalizer_table(eq))


def variants_frame(variants: list[dict], train_rows: int | None = None) -> pd.DataFrame:
    rows = []
    for v in variants:
        variant = Variant.from_json(v)
        scheduled, reason = variant.scheduled(train_rows) if train_rows else (variant, None)
        h = scheduled.hyper
        given = variant.hyper
        rows.append({"name": v["name"], "equalizer": v["equalizer"] if isinstance(v["equalizer"], str) else "custom grid",
                     "rank": _shown(given.rank, h.rank), "learning_rate": _shown(given.learning_rate, h.learning_rate),
                     "max_steps": given.max_steps if given.max_steps is not None else "auto",
                     "batch_size": h.batch_size, "schedule": reason or "as given"})
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


def _shown(given, chosen):
    """A value the user set, or the auto schedule's choice marked as such."""
    return given if given is not None else f"auto ({chosen:g})" if chosen is not None else "auto"


def train_rows(shared: Shared, state: Session) -> int | None:
    """About how many rows the session's data gives training (None before a file is validated);
    from the count taken at validation: adding a variant does not read the file again."""
    if not state.data:
        return None
    return session_spec(shared, state).train_rows_of(state.data_rows)


def progress_markdown(shared: Shared, state: Session) -> str:
    run = shared.run_path(state)
    if run is None:
        return "No training started in this session yet."
    job = shared.jobs.get(str(run))
    lines = [f"Run **{state.run}**"]
    position = shared.jobs.position(str(run))
    if position:
        lines.append(f"waiting in line: position **{position}** (one training job runs at a time)")
    elif job and job.state == "failed":
        lines.append(f"**{public_message(job.failure(shared.jobs.memory_limit))}**")
    for v in run_status(run)["variants"]:
        lines.append(variant_line(v))
    return "  \n".join(lines)


def variant_line(v: dict) -> str:
    last = v["last"] or {}
    total = last.get("max_steps") or 0
    done = last.get("step", 0)
    filled = int(20 * done / total) if total else 0
    bar = "█" * filled + "░" * (20 - filled)
    extra = f" · loss {last['loss']:.3f} · {last['tokens_per_s']:.0f} tok/s · eta {last['eta_s']:.0f} s" if last else ""
    err = f" · {public_message(v['error'])}" if v["error"] else ""
    return f"- **{v['name']}** {v['status']} `{bar}` {done}/{total or '?'}{extra}{err}"


def show(eq: Equalizer, state: Session):
    state.equalizer = eq.to_json()
    return equalizer_image(eq), grid_frame(eq), state


def click_cell(shared: Shared, strength, state: Session, evt: gr.SelectData):
    eq = session_equalizer(shared, state)
    cell = cell_at(eq, *evt.index) if evt is not None and isinstance(evt.index, (list, tuple)) else None
    if cell is None:
        return equalizer_image(eq), grid_frame(eq), state
    return show(eq.with_cell(cell[0], eq.roles[cell[1]], check_strength(strength)), state)


def set_cell(shared: Shared, band, role: str, strength, state: Session):
    eq = session_equalizer(shared, state)
    band = check_number("band", band, len(eq.bands) - 1)
    if role not in eq.roles:
        raise LoraEqError(f"role {str(role)[:40]!r}: choose one of {', '.join(eq.roles)}")
    return show(eq.with_cell(band, role, check_strength(strength)), state)


def check_strength(value) -> float:
    return check_number("strength", value, MAX_STRENGTH, whole=False)


def edit_table(shared: Shared, frame: pd.DataFrame, state: Session):
    eq = session_equalizer(shared, state)
    try:
        strengths = [[check_strength(frame.iloc[b][r]) for r in eq.roles] for b in range(len(eq.bands))]
    except (KeyError, IndexError, AttributeError):
        raise LoraEqError(f"the equalizer table needs {len(eq.bands)} bands x the roles {', '.join(eq.roles)}") from None
    eq = Equalizer(eq.roles, eq.bands, strengths)
    state.equalizer = eq.to_json()
    return equalizer_image(eq), state


def apply_preset(shared: Shared, name: str, state: Session):
    if name not in PRESETS:
        raise LoraEqError(f"preset {str(name)[:40]!r}: choose one of {', '.join(PRESETS)}")
    a = current(shared, state).analysis
    return show(preset(name, a.roles, layer_bands(a.layers, DEFAULT_BANDS)), state)


def suggest(shared: Shared, state: Session, progress=gr.Progress()):
    ds = session_dataset(shared, state)
    loaded = current(shared, state)
    result = gpu.run_on_gpu("suggest", suggest_equalizer, loaded.model, [e.messages for e in ds.examples],
                            bands=DEFAULT_BANDS, progress=lambda d, t: progress(d / t, desc="measuring sensitivity"))
    image, frame, state = show(result.equalizer, state)
    note = f"Suggested from {result.examples} examples ({result.tokens} tokens) in {result.seconds:.1f} s."
    return image, frame, note, state


def add_variant(shared: Shared, vname, vrank, vlr, vsteps, vbatch, state: Session):
    limits = shared.limits
    if len(state.variants) >= limits.variants:
        raise LoraEqError(f"{limits.variants} variants is the limit for one run: train these, then add more")
    vname = check_text("variant name", vname, 100)
    hyper = Hyper(rank=optional(vrank, lambda x: check_number("rank", x, limits.rank, minimum=1)),
                  learning_rate=optional(vlr, lambda x: check_number("learning rate", x, 1.0, whole=False)),
                  max_steps=optional(vsteps, lambda x: check_number("max steps", x, limits.steps)),
                  batch_size=check_number("batch size", vbatch, limits.batch_size, minimum=1))
    eq = session_equalizer(shared, state)
    rows = train_rows(shared, state)
    check_ranks(current(shared, state).analysis.cells, eq, auto_schedule(hyper, rows or 1)[0].rank)
    variant = Variant(safe_name(vname or "variant", {v["name"] for v in state.variants}), eq.to_json(), hyper)
    state.variants = [*state.variants, variant.to_json()]
    return variants_frame(state.variants, rows), f"variant-{len(state.variants) + 1}", state


def optional(value, check):
    """None (blank or "auto": the auto schedule chooses) or the checked value."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    return check(value.strip() if isinstance(value, str) else value)


def clear_variants(state: Session):
    state.variants = []
    return variants_frame([]), state


def start_training(shared: Shared, state: Session):
    if not state.variants:
        raise LoraEqError("add at least one variant")
    running = shared.jobs.active(shared.area.ensure_id(state), "train")
    if running:
        raise LoraEqError("this session is already training: wait for it to finish, or cancel it")
    spec = session_spec(shared, state)
    ds = spec.load(current(shared, state).model.tokenizer)
    variants = [Variant.from_json(v) for v in state.variants]  # the auto schedule resolves in the run
    loaded = current(shared, state)
    longest = max(ds.token_counts(), default=None)
    for v in variants:
        hyper = v.scheduled(spec.train_rows(ds))[0].hyper
        check_hyper(hyper, shared.limits)
        eq = Equalizer.from_json(v.equalizer)
        check_ranks(loaded.analysis.cells, eq, hyper.rank)
        estimate = training_memory(loaded.analysis.cells, eq, hyper, loaded.model.memory_bytes,
                                   loaded.model.model.config, longest)
        check_training_memory(estimate, shared.limits)
    name, run_dir = shared.area.new_run(state)
    try:
        start_run(run_dir, spec, variants, model=state.model or shared.default_model,
                  precision=state.precision or shared.default_precision, dataset=ds)
        shared.jobs.submit(str(run_dir), ["train", "--resume", str(run_dir), "--json"], owner=state.id, kind="train")
    except Exception:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    state.run = name
    return progress_markdown(shared, state), state


def cancel_training(shared: Shared, state: Session):
    run = shared.run_path(state)
    if run is not None:
        request_cancel(run)
    return progress_markdown(shared, state)


def tick(shared: Shared, state: Session):
    run = shared.run_path(state)
    if run is None:
        return progress_markdown(shared, state), gr.skip()
    return progress_markdown(shared, state), loss_curves(run_status(run))


def build(shared: Shared, session: gr.State) -> None:
    first_eq = session_equalizer(shared, Session())
    gr.Markdown("**Equalizer**: click a cell to give it the brush strength (0 = no adapter there). "
                "Bands are groups of layers; columns are module roles.")
    with gr.Row():
        brush = gr.Slider(0, MAX_STRENGTH, value=1.0, step=0.05, label="Brush strength")
        preset_name = gr.Dropdown(list(PRESETS), value="uniform", label="Preset")
        preset_button = gr.Button("Apply preset")
        suggest_button = gr.Button("Suggest from my data")
    grid_image = gr.Image(equalizer_image(first_eq), label="Equalizer (click a cell)", interactive=False,
                          elem_id="equalizer-grid", show_label=True, type="pil")
    grid = gr.Dataframe(grid_frame(first_eq), label="Strengths (editable)", interactive=True, elem_id="equalizer-table")
    suggestion = gr.Markdown()
    # The same action as a click, for scripts and the API: set one cell.
    hidden_band, hidden_role = gr.Number(visible=False), gr.Textbox(visible=False)
    gr.Markdown("**Variants**: each one is the equalizer above plus hyperparameters; each trains its own adapter.")
    with gr.Row():
        name = gr.Textbox("variant-1", label="Name")
        rank = gr.Textbox("auto", label="Rank (auto or a number)")
        lr = gr.Textbox("auto", label="Learning rate (auto or a number)")
        steps = gr.Textbox("auto", label="Max steps (auto or a number)")
        batch = gr.Number(8, label="Batch size", step=1)
        add = gr.Button("Add variant")
    variants = gr.Dataframe(pd.DataFrame(columns=VARIANT_COLUMNS), label="Variants", interactive=False)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        clear = gr.Button("Clear variants")
    progress_box = gr.Markdown(elem_id="train-progress")
    losses = gr.Plot(label="Training loss")
    timer = gr.Timer(2.0)

    grid_image.select(handler(click_cell, shared), [brush, session], [grid_image, grid, session])
    gr.Button(visible=False).click(handler(set_cell, shared), [hidden_band, hidden_role, brush, session],
                                   [grid_image, grid, session], api_name="set_cell")
    grid.input(handler(edit_table, shared), [grid, session], [grid_image, session])
    preset_button.click(handler(apply_preset, shared), [preset_name, session], [grid_image, grid, session],
                        api_name="preset")
    suggest_button.click(handler(suggest, shared), [session], [grid_image, grid, suggestion, session],
                         api_name="suggest")
    add.click(handler(add_variant, shared), [name, rank, lr, steps, batch, session], [variants, name, session],
              api_name="add_variant")
    clear.click(handler(clear_variants), [session], [variants, session])
    start.click(handler(start_training, shared), [session], [progress_box, session], api_name="start_training")
    cancel.click(handler(cancel_training, shared), [session], progress_box, api_name="cancel_training")
    timer.tick(handler(tick, shared), [session], [progress_box, losses], api_name="training_progress")
