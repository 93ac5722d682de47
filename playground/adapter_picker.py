"""The "Add adapters" accordion: outside adapters as extra columns next to the base and the variants.

A user adds a finished variant of one of this session's runs, an uploaded PEFT adapter zip, a
folder on the server (only under the roots the operator set in `LORAEQ_ADAPTER_ROOTS`; the field
is hidden when there are none) or a Hub adapter id. `adapters/share/adapter_sources.py` fetches the adapter and
checks it against the base; an accepted one is copied into the session's own folder
(`adapters/NAME`) and recorded in `session.adapters`, which the engine (`Shared.engine_for`) loads
next to the run's variants. A refusal is one line (`guard.handler`) and changes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.limits import check_text
from adapters.share.adapter_sources import (
    accept,
    adapter_folder,
    configured_roots,
    extract_zip,
    hub_adapter,
    local_path,
    run_variant,
)
from adapters.train.runfolder import RunFolder
from playground.guard import handler, public_message
from playground.sessions import Session
from playground.shared import Shared


def variant_choices(shared: Shared, state: Session) -> list[str]:
    """`RUN/VARIANT` for every finished variant of every run of this session."""
    out = []
    for run in shared.area.runs(state):
        out += [f"{run}/{name}" for name in RunFolder.open(shared.area.folder(state) / run).adapters()]
    return out


def adapters_frame(state: Session) -> pd.DataFrame:
    return pd.DataFrame({"adapter": list(state.adapters)})


def refresh(shared: Shared, state: Session):
    names = list(state.adapters)
    return (gr.Dropdown(variant_choices(shared, state), value=None), adapters_frame(state),
            gr.Dropdown(names, value=None))


def fetcher(shared: Shared, state: Session, variant, upload, folder, hub) -> Callable[[Path], Path]:
    """How to get the one source given: a function of a scratch folder returning the adapter folder."""
    given = {k: v for k, v in dict(variant=variant, upload=upload, folder=folder, hub=hub).items() if v}
    if len(given) != 1:
        raise LoraEqError("give exactly one source: a variant of your runs, a zip, a server folder or a Hub id")
    kind, value = next(iter(given.items()))
    text = value if kind == "upload" else check_text(kind, value, shared.limits.text_chars).strip()
    if kind == "variant":
        run, _, name = text.partition("/")
        shared.area.run_path(state, run)  # a run of this session, or a refusal
        return lambda work: run_variant(f"{run}/{name}", shared.area.folder(state))
    if kind == "upload":
        path = Path(upload if isinstance(upload, str) else upload.name)
        if path.suffix.lower() != ".zip" or not path.is_file():
            raise LoraEqError("upload the adapter as a .zip (adapter_config.json + adapter_model.safetensors)")
        return lambda work: extract_zip(path, work, shared.limits.adapter_bytes, shared.limits.adapter_members)
    if kind == "folder":
        roots = configured_roots()
        if not roots:
            raise LoraEqError("this server allows no adapter folders")
        return lambda work: adapter_folder(local_path(text, roots))
    return lambda work: hub_adapter(text, limit=shared.limits.adapter_bytes)


def checking_base(shared: Shared, state: Session):
    """The base an added adapter must fit: the run's when the session follows one, else its model."""
    run = shared.run_path(state)
    if run is not None:
        folder = RunFolder.open(run)
        return shared.registry.get(folder.model, folder.precision).model
    return shared.registry.get(state.model or shared.default_model,
                               state.precision or shared.default_precision).model


def add_adapter(shared: Shared, name, variant, upload, folder, hub, state: Session):
    name = check_text("adapter name", name, 40, required=True).strip()
    run = shared.run_path(state)
    taken = list(state.adapters) + (list(RunFolder.open(run).adapters()) if run else [])
    fetch = fetcher(shared, state, variant, upload, folder, hub)
    kept, warnings = accept(name, fetch, checking_base(shared, state), shared.area.folder(state) / "adapters",
                            taken=taken)
    used = shared.area.uploaded_bytes(state) + sum(p.stat().st_size for p in kept.parent.rglob("*") if p.is_file())
    if used > shared.limits.session_bytes:
        shutil.rmtree(kept, ignore_errors=True)
        raise LoraEqError(f"this session's files would take {used:,} bytes, over the limit of "
                          f"{shared.limits.session_bytes:,}: remove an adapter first")
    state.adapters = {**state.adapters, name: str(kept)}
    for w in warnings:
        gr.Warning(public_message(w))
    gr.Info(f"adapter {name} added: load the variants again to see its column")
    return adapters_frame(state), gr.Dropdown(list(state.adapters), value=None), state


def remove_adapter(shared: Shared, name, state: Session):
    if not isinstance(name, str) or name not in state.adapters:
        raise LoraEqError(f"no added adapter {str(name)[:40]!r}")
    folder = shared.area.inside(state, state.adapters[name])
    state.adapters = {k: v for k, v in state.adapters.items() if k != name}
    shutil.rmtree(folder, ignore_errors=True)
    return adapters_frame(state), gr.Dropdown(list(state.adapters), value=None), state


def build(shared: Shared, session: gr.State) -> None:
    with gr.Accordion("Add adapters: a variant of another run, a PEFT adapter zip, a server folder or a Hub id",
                      open=False):
        with gr.Row():
            name = gr.Textbox(label="Column name", max_lines=1, elem_id="adapter-name")
            variant = gr.Dropdown([], label="A finished variant of your runs", allow_custom_value=False)
            hub = gr.Textbox(label="Hub adapter id (owner/name)", max_lines=1)
        upload = gr.File(label="PEFT adapter .zip", file_types=[".zip"], type="filepath")
        folder = gr.Textbox(label="Folder on the server", max_lines=1, visible=bool(configured_roots()))
        with gr.Row():
            refresh_button = gr.Button("Refresh variants", size="sm")
            add = gr.Button("Add", variant="primary", elem_id="add-adapter")
        added = gr.Dataframe(pd.DataFrame(), label="Added adapters", interactive=False)
        with gr.Row():
            chosen = gr.Dropdown([], label="Adapter to remove")
            remove = gr.Button("Remove", size="sm")
    refresh_button.click(handler(refresh, shared), [session], [variant, added, chosen], api_name="adapter_choices")
    add.click(handler(add_adapter, shared), [name, variant, upload, folder, hub, session], [added, chosen, session],
              api_name="add_adapter")
    remove.click(handler(remove_adapter, shared), [chosen, session], [added, chosen, session],
                 api_name="remove_adapter")
