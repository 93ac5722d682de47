"""Equalizer & Train tab: the 2-D equalizer (click a cell to set it), presets, the data-suggested
shape, the variants list, and the training queue with progress and live loss."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from adapters.base.bands import DEFAULT_BANDS, layer_bands
from adapters.errors import LoraEqError
from adapters.limits import check_number, check_ranks, check_text
from adapters.shape.equalizer import MAX_STRENGTH, PRESETS, Equalizer, equalizer_table, preset
from adapters.shape.hyperparams import FIELDS, NAMES, SWITCHES, form_from_hyper, hyper_from_form
from adapters.shape.suggest import suggest_equalizer
from adapters.shape.variants import Hyper, Variant, auto_schedule, load_sweep, safe_name
from adapters.train.dataspec import start_run
from adapters.train.plan import (
    Plan,
    check_run_size,
    check_variant,
    extend_run,
    human_count,
    human_seconds,
    plan_variant,
)
from adapters.train.runfolder import RunFolder
from adapters.train.runs import request_cancel, run_status
from adapters.train.training import resolve_equalizer
from evals.recall import recall_line
from playground import gpu
from playground.bounded import bounded
from playground.guard import handler, public_message
from playground.jobs import limit_line
from playground.plots import cell_at, equalizer_image, loss_curves
from playground.sessions import Session
from playground.shared import Shared
from playground.workspace import current, receive, session_dataset, session_spec

# What a variant will be comes first (schedule, size), where the eye lands; the rest as given after.
GIVEN = tuple(f.name for f in FIELDS + SWITCHES if not f.auto)  # as given; the auto ones show their plan
VARIANT_COLUMNS = ["name", "steps", "learning_rate", "rank", "time", "trainable_params", "total_rank", "size",
                   "equalizer", *GIVEN, "schedule"]
SWEEP_SUFFIXES = (".yaml", ".yml", ".json")
TRAIN_THESE = ": train these, then add more"  # the way on when the list is full


def session_equalizer(shared: Shared, state: Session) -> Equalizer:
    if state.equalizer:
        return Equalizer.from_json(state.equalizer)
    analysis = current(shared, state).analysis
    return preset("uniform", analysis.roles, layer_bands(analysis.layers, DEFAULT_BANDS))


def grid_frame(eq: Equalizer) -> pd.DataFrame:
    return pd.DataFrame(equalizer_table(eq))


def variants_frame(shared: Shared, state: Session) -> pd.DataFrame:
    """The session's listed variants: each one's schedule and size for the data (once a file is
    validated: `adapters.train.plan`), then the values as given."""
    rows, speed = train_rows(shared, state), measured_speed(shared, state)
    loaded = current(shared, state).model if state.variants else None
    listed = []
    for v in state.variants:
        variant = Variant.from_json(v)
        plan = planned(variant, loaded, rows, speed)
        listed.append({"name": variant.name, **plan_cells(plan), **given_cells(variant),
                       "equalizer": grid_name(variant.equalizer, plan)})
    return pd.DataFrame(listed, columns=VARIANT_COLUMNS)


def grid_name(equalizer: str | dict, plan: Plan | None) -> str:
    """A preset's name, or what a drawn grid is: the uniform one, or a custom grid of some size."""
    if isinstance(equalizer, str):
        return equalizer
    if plan is not None and plan.size == plan.uniform and len({s for row in equalizer["strengths"] for s in row}) == 1:
        return "uniform grid"
    return "custom grid"


def planned(variant: Variant, loaded, rows: int | None, speed: float | None) -> Plan | None:
    """The variant's plan on the session's base; None before data is validated, or when the
    variant does not fit this base (listed before the model changed: starting refuses it, saying why)."""
    if not rows:
        return None
    try:
        return plan_variant(variant, loaded, rows, DEFAULT_BANDS, speed)
    except LoraEqError:
        return None


def plan_cells(plan: Plan | None) -> dict:
    """Schedule and size as the list shows them; "auto" marks what the auto schedule chose."""
    if plan is None:  # no data validated yet: the auto schedule has nothing to choose from
        return {"steps": "auto", "learning_rate": "auto", "rank": "auto", "time": "", "trainable_params": "",
                "total_rank": "", "size": "", "schedule": "auto: chosen once the data is validated"}
    epochs = f"{plan.epochs:g} epoch{'' if plan.epochs == 1 else 's'}" if plan.epochs is not None else ""
    steps = ", ".join(filter(None, [epochs, "auto" if "steps" in plan.auto else ""]))
    warning = plan.size_warning
    return {"steps": f"{plan.steps} ({steps})" if steps else plan.steps,
            "learning_rate": f"auto ({plan.learning_rate:g})" if "learning_rate" in plan.auto else plan.learning_rate,
            "rank": f"auto ({plan.rank})" if "rank" in plan.auto else plan.rank,
            "time": f"≈ {human_seconds(plan.seconds)}" if plan.seconds else "? (a first run measures it)",
            "trainable_params": human_count(plan.size.params), "total_rank": plan.size.total_rank,
            "size": f"⚠ {warning}" if warning else f"{plan.size_ratio:.2g}x uniform",
            "schedule": plan.reason or "as given"}


def given_cells(variant: Variant) -> dict:
    return {k: getattr(variant.hyper, k) for k in GIVEN}


def measured_speed(shared: Shared, state: Session) -> float | None:
    """Training examples per second on this machine, from the session's newest finished variant on
    the same base and precision; None before one has finished (no estimate is made up)."""
    model, precision = state.model or shared.default_model, state.precision or shared.default_precision
    for name in reversed(shared.area.runs(state)):
        folder = RunFolder.read(shared.area.run_path(state, name))
        if folder is None or (folder.model, folder.precision) != (model, precision):
            continue
        for info in reversed(folder.finished()):
            metrics, hyper = info.metrics(), info.record().get("hyper", {})
            if metrics.get("seconds") and metrics.get("steps"):
                examples = metrics["steps"] * hyper.get("batch_size", 1) * hyper.get("grad_accum", 1)
                return examples / metrics["seconds"]
    return None


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
        lines.append(f"waiting in line: position **{position}** (one job runs at a time; "
                     f"{limit_line(shared.limits, 'train')})")
    elif job and job.state == "failed":
        lines.append(f"**{public_message(job.failure(shared.jobs.memory_limit))}**")
    elif job and job.state == "cancelled":
        lines.append("**cancelled**: finished variants are kept")
    folder = RunFolder.open(run)
    for v in run_status(run)["variants"]:
        lines.append(variant_line(v))
        metrics = v.get("metrics") or {}
        facts = recall_line(v["name"], metrics, folder.variant(v["name"]).record().get("hyper", {})) \
            if v["status"] == "done" and metrics.get("train_recall") else ""  # (a classifier's probe is no variant)
        if facts:
            lines.append(f"  {facts}")
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


# The form's first row (and add_variant's first parameters, as API clients call it), then the rest.
FIRST = ("rank", "learning_rate", "max_steps", "batch_size")
MORE = tuple(n for n in NAMES if n not in FIRST)


def add_variant(shared: Shared, vname, vrank, vlr, vsteps, vbatch, state: Session, *more):
    """One variant: the current equalizer plus the form's hyperparameters (`MORE` in order after
    the first four; missing ones keep their defaults)."""
    limits = shared.limits
    check_run_size(len(state.variants), 1, limits, "the list", TRAIN_THESE)
    vname = check_text("variant name", vname, 100)
    values = dict(zip(FIRST, (vrank, vlr, vsteps, vbatch))) | dict(zip(MORE, more))
    hyper = hyper_from_form(values, limits)
    eq = session_equalizer(shared, state)
    rows = train_rows(shared, state)
    check_ranks(current(shared, state).analysis.cells, eq, auto_schedule(hyper, rows or 1)[0].rank)
    variant = Variant(safe_name(vname or "variant", {v["name"] for v in state.variants}), eq.to_json(), hyper)
    state.variants = [*state.variants, variant.to_json()]
    return variants_frame(shared, state), f"variant-{len(state.variants) + 1}", state


def add_sweep(shared: Shared, file, state: Session):
    """The variants of a sweep file (YAML or JSON, as `loraeq train --sweep` reads) added to the list."""
    if not file:
        raise LoraEqError("upload a sweep file (.yaml, .yml or .json)")
    source = Path(file if isinstance(file, str) else file.name)
    if source.suffix.lower() not in SWEEP_SUFFIXES:
        raise LoraEqError(f"{source.name}: a sweep file ends in {', '.join(SWEEP_SUFFIXES)}")
    variants = bounded(load_sweep, receive(shared, state, source), limits=shared.limits, what=f"reading {source.name}")
    check_run_size(len(state.variants), len(variants), shared.limits, f"the list with {source.name}", TRAIN_THESE)
    loaded = current(shared, state)
    taken = {v["name"] for v in state.variants}
    for v in variants:
        check_variant(loaded.model, v, train_rows(shared, state) or 1, shared.limits)
        v.name = safe_name(v.name, taken)
        taken.add(v.name)
    state.variants = [*state.variants, *(v.to_json() for v in variants)]
    return variants_frame(shared, state), state


def clear_variants(state: Session):
    state.variants = []
    return pd.DataFrame(columns=VARIANT_COLUMNS), state


def refuse_second_training(shared: Shared, state: Session) -> None:
    """One training at a time per user (queued or running)."""
    running = shared.jobs.active(shared.area.owner(state), "train")
    if running:
        who = "you are" if state.user else "this session is"
        raise LoraEqError(f"one training at a time per user: {who} already training "
                          f"({Path(running.key).name}); wait for it to finish, or press Cancel")


def start_training(shared: Shared, state: Session):
    if not state.variants:
        raise LoraEqError("add at least one variant")
    refuse_second_training(shared, state)
    spec = session_spec(shared, state)
    loaded = current(shared, state)
    ds = session_dataset(shared, state, with_tokens=True)
    variants = [Variant.from_json(v) for v in state.variants]  # the auto schedule resolves in the run
    longest = max(ds.token_counts(), default=None)
    for v in variants:
        check_variant(loaded.model, v, spec.train_rows(ds), shared.limits, longest)
    name, run_dir = shared.area.new_run(state)
    try:
        start_run(run_dir, spec, variants, model=state.model or shared.default_model,
                  precision=state.precision or shared.default_precision, dataset=ds)
        submit_training(shared, state, run_dir)
    except Exception:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    state.run = name
    return progress_markdown(shared, state), state


def submit_training(shared: Shared, state: Session, run_dir: Path) -> None:
    shared.jobs.submit(str(run_dir), ["train", "--resume", str(run_dir), "--json"], owner=shared.area.owner(state), kind="train")


# ---- earlier runs of this session ------------------------------------------------------------


def earlier_runs(shared: Shared, state: Session):
    """This session's runs, newest first, to open, continue or copy settings from."""
    names = list(reversed(shared.area.runs(state)))
    return gr.Dropdown(names, value=state.run if state.run in names else (names[0] if names else None))


def chosen_run(shared: Shared, state: Session, name) -> Path:
    """The session's earlier run `name`, resolved inside its own folder."""
    if not name:
        raise LoraEqError("choose one of this session's runs (press List my runs)")
    return shared.area.run_path(state, name)


def open_run(shared: Shared, name, state: Session):
    """Follow an earlier run (progress, Compare, Proof) and list its variants to copy from."""
    run = chosen_run(shared, state, name)
    state.run = run.name
    names = [v.name for v in RunFolder.open(run).variants]
    return progress_markdown(shared, state), gr.Dropdown(names, value=names[0] if names else None), state


def continue_run(shared: Shared, name, state: Session):
    """Add the listed variants (if any) to an earlier run and train what it has not finished."""
    run = chosen_run(shared, state, name)
    refuse_second_training(shared, state)
    folder = RunFolder.open(run)
    if state.variants:
        loaded = shared.registry.get(folder.model, folder.precision)
        extend_run(run, [Variant.from_json(v) for v in state.variants], loaded.model, shared.limits)
        state.variants = []
    elif all(v.finished for v in folder.variants):
        raise LoraEqError(f"{run.name}: every variant is finished; add variants above to train more")
    state.run = run.name
    shared.engines.forget(run)
    submit_training(shared, state, run)
    return progress_markdown(shared, state), pd.DataFrame(columns=VARIANT_COLUMNS), state


def copy_variant(shared: Shared, name, variant, state: Session):
    """A variant's settings (as given: auto stays auto) and equalizer into the form."""
    folder = RunFolder.open(chosen_run(shared, state, name))
    if not variant:
        raise LoraEqError("choose a variant of the run to copy")
    info = folder.variant(check_text("variant", variant, 100))
    config = Variant.from_json(info.config)
    form = form_from_hyper(config.hyper)
    eq = resolve_equalizer(shared.registry.get(folder.model, folder.precision).model, config, folder.bands)[0]
    current_eq = session_equalizer(shared, state)
    if (eq.roles, eq.bands) != (current_eq.roles, current_eq.bands):
        raise LoraEqError(f"{info.name} was trained on another base ({folder.model or 'the default'}): "
                          "load that model first to copy its equalizer")
    image, frame, state = show(eq, state)
    return [f"{info.name}-copy", *(form[n] for n in FIRST), *(form[n] for n in MORE), image, frame, state]


def cancel_training(shared: Shared, state: Session):
    run = shared.run_path(state)
    if run is not None:
        request_cancel(run)
        shared.jobs.cancel(str(run))  # a worker that does not stop by itself is stopped
    return progress_markdown(shared, state)


def tick(shared: Shared, state: Session):
    run = shared.run_path(state)
    if run is None:
        return progress_markdown(shared, state), gr.skip()
    return progress_markdown(shared, state), loss_curves(run_status(run))


def restore_view(shared: Shared, state: Session):
    """After a reload: the session's grid, its listed variants, and the run it follows (progress,
    losses), as they were."""
    eq = session_equalizer(shared, state)
    progress, losses = tick(shared, state)
    return equalizer_image(eq), grid_frame(eq), variants_frame(shared, state), progress, losses


def restored(ui: SimpleNamespace) -> list:
    """The components `restore_view` fills, in its order."""
    return [ui.grid_image, ui.grid, ui.variants, ui.progress, ui.losses]


def build(shared: Shared, session: gr.State) -> SimpleNamespace:
    """The tab's components, wired; the app restores them after a reload (`restore_view`)."""
    ui = _layout(session_equalizer(shared, Session()))
    _wire(shared, session, ui)
    return ui


def _layout(first_eq: Equalizer) -> SimpleNamespace:
    gr.Markdown("**Equalizer**: click a cell to give it the brush strength (0 = no adapter there). "
                "Bands are groups of layers; columns are module roles.")
    with gr.Row():
        brush = gr.Slider(0, MAX_STRENGTH, value=1.0, step=0.05, label="Brush strength")
        preset_name = gr.Dropdown(list(PRESETS), value="uniform", label="Preset")
        preset_button = gr.Button("Apply preset")
        suggest_button = gr.Button("Suggest from my data", elem_id="suggest")
    grid_image = gr.Image(equalizer_image(first_eq), label="Equalizer (click a cell)", interactive=False,
                          elem_id="equalizer-grid", show_label=True, type="pil")
    grid = gr.Dataframe(grid_frame(first_eq), label="Strengths (editable)", interactive=True, elem_id="equalizer-table")
    suggestion = gr.Markdown()
    gr.Markdown("**Variants**: each one is the equalizer above plus hyperparameters; each trains its own adapter. "
                "*auto*: the auto schedule chooses from the data. The list shows first what each variant will "
                "be: its steps, learning rate, rank and time, and its size (trainable parameters, total rank, "
                "against the uniform preset: ⚠ when much smaller or larger).")
    name, form = hyper_form()
    with gr.Row():
        add = gr.Button("Add variant", elem_id="add-variant")
        sweep = gr.File(label="Sweep file (YAML/JSON, as loraeq train --sweep)", file_types=list(SWEEP_SUFFIXES),
                        height=90)
        add_file = gr.Button("Add the file's variants")
    variants = gr.Dataframe(pd.DataFrame(columns=VARIANT_COLUMNS), label="Variants", interactive=False,
                            elem_id="variants-table")
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        clear = gr.Button("Clear variants")
    earlier, source_variant, buttons = earlier_runs_panel()
    return SimpleNamespace(brush=brush, preset_name=preset_name, preset_button=preset_button,
                           suggest_button=suggest_button, grid_image=grid_image, grid=grid, suggestion=suggestion,
                           name=name, form=form, add=add, sweep=sweep, add_file=add_file, variants=variants,
                           start=start, cancel=cancel, clear=clear, earlier=earlier, source_variant=source_variant,
                           buttons=buttons, progress=gr.Markdown(elem_id="train-progress"),
                           losses=gr.Plot(label="Training loss"), timer=gr.Timer(2.0),
                           hidden_band=gr.Number(visible=False), hidden_role=gr.Textbox(visible=False))


def racing(ui: SimpleNamespace) -> list:
    """What would race a running suggestion (it replaces the grid when it ends): held until it does."""
    refresh, open_button, resume, copy = ui.buttons
    return [ui.add, ui.add_file, ui.preset_button, ui.suggest_button, ui.start, resume, copy, ui.grid]


def hold(n: int) -> list:
    return [gr.update(interactive=False)] * n


def release(n: int) -> list:
    return [gr.update(interactive=True)] * n


def _wire(shared: Shared, session: gr.State, ui: SimpleNamespace) -> None:
    form, grid_out = ui.form, [ui.grid_image, ui.grid, session]
    ui.grid_image.select(handler(click_cell, shared), [ui.brush, session], grid_out)
    # The same action as a click, for scripts and the API: set one cell.
    gr.Button(visible=False).click(handler(set_cell, shared), [ui.hidden_band, ui.hidden_role, ui.brush, session],
                                   grid_out, api_name="set_cell")
    ui.grid.input(handler(edit_table, shared), [ui.grid, session], [ui.grid_image, session])
    ui.preset_button.click(handler(apply_preset, shared), [ui.preset_name, session], grid_out, api_name="preset")
    held = racing(ui)
    ui.suggest_button.click(lambda: hold(len(held)), None, held, queue=False, api_name=False).then(
        handler(suggest, shared), [session], [ui.grid_image, ui.grid, ui.suggestion, session], api_name="suggest"
    ).then(lambda: release(len(held)), None, held, queue=False, api_name=False)
    inputs = [ui.name, *(form[n] for n in FIRST), session, *(form[n] for n in MORE)]
    ui.add.click(handler(add_variant, shared), inputs, [ui.variants, ui.name, session], api_name="add_variant")
    ui.add_file.click(handler(add_sweep, shared), [ui.sweep, session], [ui.variants, session], api_name="add_sweep")
    ui.clear.click(handler(clear_variants), [session], [ui.variants, session])
    ui.start.click(handler(start_training, shared), [session], [ui.progress, session], api_name="start_training")
    ui.cancel.click(handler(cancel_training, shared), [session], ui.progress, api_name="cancel_training")
    ui.timer.tick(handler(tick, shared), [session], [ui.progress, ui.losses], api_name="training_progress")
    refresh, open_button, resume, copy = ui.buttons
    refresh.click(handler(earlier_runs, shared), [session], ui.earlier, api_name="earlier_runs")
    open_button.click(handler(open_run, shared), [ui.earlier, session], [ui.progress, ui.source_variant, session],
                      api_name="open_earlier_run")
    resume.click(handler(continue_run, shared), [ui.earlier, session], [ui.progress, ui.variants, session],
                 api_name="continue_run")
    copy.click(handler(copy_variant, shared), [ui.earlier, ui.source_variant, session],
               [ui.name, *(form[n] for n in FIRST), *(form[n] for n in MORE), ui.grid_image, ui.grid, session],
               api_name="copy_variant")


def hyper_form():
    """The variant name and one input per hyperparameter (`NAMES`): text where "auto" is allowed."""
    defaults = form_from_hyper(Hyper())
    form = {}
    with gr.Row():
        name = gr.Textbox("variant-1", label="Name")
        for f in FIELDS:
            if f.name in FIRST:
                form[f.name] = _field_input(f, defaults[f.name])
    with gr.Accordion("More hyperparameters", open=False):
        with gr.Row():
            for f in FIELDS:
                if f.name not in FIRST:
                    form[f.name] = _field_input(f, defaults[f.name])
            for f in SWITCHES:
                form[f.name] = gr.Checkbox(defaults[f.name], label=f.label.capitalize(), info=f.help)
    return name, form


def _field_input(f, value):
    if f.auto:
        return gr.Textbox(value, label=f"{f.label.capitalize()} (auto or a number)", info=f.help)
    return gr.Number(value, label=f.label.capitalize(), step=1 if f.whole else None, info=f.help)


def earlier_runs_panel():
    with gr.Accordion("Earlier runs of this session: open, continue, copy a variant's settings", open=False):
        with gr.Row():
            earlier = gr.Dropdown([], label="Run", allow_custom_value=False)
            refresh = gr.Button("List my runs")
            open_button = gr.Button("Open")
        gr.Markdown("*Continue*: the variants listed above (if any) join this run, and its unfinished variants "
                    "train (a run stopped half way resumes from its last checkpoint).")
        with gr.Row():
            resume = gr.Button("Continue this run")
            source_variant = gr.Dropdown([], label="Variant of the run")
            copy = gr.Button("Copy its settings into the form")
    return earlier, source_variant, (refresh, open_button, resume, copy)
