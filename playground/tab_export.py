"""Export tab: a finished variant as a PEFT adapter zip, a merged full-precision model, its model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from adapters.errors import LoraEqError
from adapters.export import export_adapter_zip, export_merged, model_card, split_front_matter
from adapters.runs import run_status
from playground.shared import Session, Shared


def finished_variants(state: Session) -> list[tuple[str, str]]:
    """(label, folder) of the session run's finished variants."""
    if not state.run_dir:
        return []
    try:
        status = run_status(state.run_dir)
    except LoraEqError:
        return []
    return [(v["name"], str(Path(state.run_dir) / v["folder"])) for v in status["variants"] if v["status"] == "done"]


def card_view(folder: Path) -> str:
    """The model card as the page shows it: its metadata as YAML, then the card itself."""
    head, body = split_front_matter(model_card(folder))
    return (f"```yaml\n{head}\n```\n\n" if head else "") + body


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        variant = gr.Dropdown([], label="Finished variant", scale=3)
        refresh = gr.Button("Refresh", scale=1)
    with gr.Row():
        adapter = gr.Button("Adapter (PEFT zip)", variant="primary")
        merged = gr.Button("Merged model (fp32 safetensors, zip)")
    download = gr.File(label="Download", elem_id="export-file")
    card = gr.Markdown(elem_id="model-card")

    def on_refresh(state: Session):
        choices = finished_variants(state)
        return gr.Dropdown(choices, value=choices[0][1] if choices else None)

    refresh.click(on_refresh, [session], variant)

    def target(state: Session, folder: str | None) -> Path:
        if not folder:
            raise gr.Error("train a variant first, then press Refresh and choose it")
        return shared.session_dir(state) / "exports" / Path(folder).name

    def on_adapter(folder: str, state: Session):
        try:
            path = export_adapter_zip(Path(folder), target(state, folder).with_suffix(".zip"))
        except LoraEqError as e:
            raise gr.Error(str(e))
        return str(path), card_view(Path(folder))

    adapter.click(on_adapter, [variant, session], [download, card], api_name="export_adapter")

    def on_merged(folder: str, state: Session, progress=gr.Progress()):
        out = target(state, folder).with_name(Path(folder).name + "-merged")
        progress(0.1, desc="merging into a full-precision copy of the base")
        try:
            if out.exists():
                shutil.rmtree(out)
            export_merged(Path(folder), out)
        except LoraEqError as e:
            raise gr.Error(str(e))
        progress(0.8, desc="zipping")
        archive = shutil.make_archive(str(out), "zip", out)
        return archive, card_view(Path(folder))

    merged.click(on_merged, [variant, session], [download, card], api_name="export_merged")
