"""Export tab: a finished variant as a PEFT adapter zip (or its vLLM-safe copy), a merged full-precision
model, its model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from adapters.errors import LoraEqError
from adapters.share.export import (
    export_adapter_zip,
    export_merged,
    export_vllm_safe,
    is_outside,
    model_card,
    split_front_matter,
)
from adapters.train.runs import run_status
from evals.card import card_results
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared


def finished_variants(shared: Shared, state: Session) -> list[str]:
    """Names of the session run's finished variants (their folders), then its added adapters."""
    run = shared.run_path(state)
    done = [v["folder"] for v in run_status(run)["variants"] if v["status"] == "done"] if run else []
    return done + [name for name in state.adapters if name not in done]


def variant_folder(shared: Shared, state: Session, name) -> Path:
    """A finished variant of the session's run or an added adapter, by name: never a path the client sent."""
    if not name:
        raise LoraEqError("train a variant first, then press Refresh and choose it")
    if name not in finished_variants(shared, state):
        raise LoraEqError(f"{str(name)[:80]!r}: not a finished variant of this session's run")
    run = shared.run_path(state)
    if run is not None and (run / name).is_dir():
        return run / name
    return shared.area.inside(state, state.adapters[name])


def merge_base(shared: Shared, state: Session) -> str | None:
    """The base an added adapter is merged into: the run's, else the session's model."""
    from adapters.train.runfolder import RunFolder

    run = shared.run_path(state)
    return RunFolder.open(run).model if run else (state.model or shared.default_model)


def card_view(folder: Path, results: list[str]) -> str:
    """The model card as the page shows it: its metadata as YAML, then the card itself."""
    head, body = split_front_matter(model_card(folder, results))
    return (f"```yaml\n{head}\n```\n\n" if head else "") + body


def refresh(shared: Shared, state: Session):
    choices = finished_variants(shared, state)
    return gr.Dropdown(choices, value=choices[0] if choices else None)


def export_zip(shared: Shared, name, vllm_safe, state: Session):
    """The adapter as a zip; with `vllm_safe`, its copy with the scales folded in (`fold_scales`)."""
    folder = variant_folder(shared, state, name)
    exports = shared.area.folder(state) / "exports"
    results = card_results(folder)
    if not vllm_safe:
        zipped = export_adapter_zip(folder, exports / f"{folder.name}.zip", results)
        return shared.downloads.hand_out(zipped), card_view(folder, results)
    out = exports / f"{folder.name}-vllm-safe"
    if out.exists():
        shutil.rmtree(out)
    export_vllm_safe(folder, out, results)
    archive = shutil.make_archive(str(out), "zip", out)
    return shared.downloads.hand_out(Path(archive)), card_view(folder, results)


def export_merged_zip(shared: Shared, name, state: Session, progress=gr.Progress()):
    folder = variant_folder(shared, state, name)
    out = shared.area.folder(state) / "exports" / f"{folder.name}-merged"
    progress(0.1, desc="merging into a full-precision copy of the base")
    if out.exists():
        shutil.rmtree(out)
    results = card_results(folder)
    export_merged(folder, out, merge_base(shared, state) if is_outside(folder) else None, results)
    progress(0.8, desc="zipping")
    archive = shutil.make_archive(str(out), "zip", out)
    return shared.downloads.hand_out(Path(archive)), card_view(folder, results)


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        variant = gr.Dropdown([], label="Finished variant", scale=3)
        refresh_button = gr.Button("Refresh", scale=1)
    with gr.Row():
        adapter = gr.Button("Adapter (PEFT zip)", variant="primary")
        merged = gr.Button("Merged model (fp32 safetensors, zip)")
    vllm_safe = gr.Checkbox(False, label="vLLM-safe adapter: fold each module's scale into its weights "
                                         "(for vLLM, LoRAX, llama.cpp, which apply one scale per adapter)")
    download = gr.File(label="Download", elem_id="export-file")
    card = gr.Markdown(elem_id="model-card")
    refresh_button.click(handler(refresh, shared), [session], variant, api_name="export_choices")
    adapter.click(handler(export_zip, shared), [variant, vllm_safe, session], [download, card], api_name="export_adapter")
    merged.click(handler(export_merged_zip, shared), [variant, session], [download, card], api_name="export_merged")
