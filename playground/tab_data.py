"""Data tab: upload, format and column mapping, the validation report, rejects, stats, the mix."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from adapters.data import FORMATS, build_mixture, load_dataset, token_summary, write_rejects
from adapters.errors import LoraEqError
from playground.shared import Session, Shared
from playground.tab_model import current

SAMPLES = Path(__file__).resolve().parents[1] / "datasets"
FILE_TYPES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"]
ERROR_COLUMNS = ["row", "field", "reason"]


def parse_mapping(text: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (p.strip() for p in (text or "").replace("\n", ",").split(","))):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise LoraEqError(f"column mapping {item!r}: write it as their_column=our_field")
        mapping[src.strip()] = dst.strip()
    return mapping


def report_markdown(ds) -> str:
    tokens = token_summary(ds.token_counts())
    lines = [
        f"**{Path(ds.path).name}**: {ds.file_type}, format **{ds.format}**",
        f"rows in **{ds.rows_in}** = valid **{ds.rows_valid}** + rejected **{ds.rows_rejected}**"
        f" · warnings {len(ds.warnings)}",
    ]
    if tokens:
        lines.append(f"tokens per row: min {tokens['min']}, median {tokens['median']}, p95 {tokens['p95']}, "
                     f"max {tokens['max']} · rows cut at {ds.max_length}: {ds.truncated_rows}")
    lines += [f"- {n}" for n in ds.notes]
    return "  \n".join(lines)


def issues_frame(ds) -> pd.DataFrame:
    rows = [i.to_json() | {"kind": "error"} for i in ds.errors] + [w.to_json() | {"kind": "warning"} for w in ds.warnings]
    return pd.DataFrame(rows, columns=["kind", *ERROR_COLUMNS])


def mix_frame(ds) -> pd.DataFrame:
    return pd.DataFrame([{"category": c, "rows": n, "weight": 1.0, "quota_per_1000": 0}
                         for c, n in ds.categories().items()])


def validate(shared: Shared, state: Session, path: str, fmt: str, mapping: str, max_length: float):
    tokenizer = current(shared, state).model.tokenizer
    ds = load_dataset(path, format=None if fmt == "auto" else fmt, mapping=parse_mapping(mapping),
                      max_length=int(max_length), tokenizer=tokenizer)
    rejects = None
    if ds.rows_rejected:
        rejects = str(write_rejects(ds, Path(shared.session_dir(state)) / "uploads" / f"{Path(path).stem}.rejects.jsonl"))
    return ds, rejects


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        upload = gr.File(label="Your data (JSONL, JSON, CSV/TSV, Parquet, TXT)", file_types=FILE_TYPES, scale=2,
                         elem_id="data-upload")
        with gr.Column(scale=1):
            sample = gr.Dropdown(["fictional-facts.jsonl", "autumn-voice.jsonl", "dolly-15k-sample.jsonl"],
                                 label="...or a sample dataset", value=None)
            fmt = gr.Dropdown(["auto", *FORMATS], value="auto", label="Row format")
            mapping = gr.Textbox(label="Column mapping (their=ours, ...)", placeholder="reply=completion")
            max_length = gr.Number(512, label="max_length (tokens)", precision=0)
    check = gr.Button("Validate", variant="primary")
    report = gr.Markdown(elem_id="data-report")
    issues = gr.Dataframe(pd.DataFrame(columns=["kind", *ERROR_COLUMNS]), label="Rejected rows and warnings",
                          interactive=False, max_height=300)
    rejects = gr.File(label="Rejected rows (download)", visible=False)
    gr.Markdown("**Mix**: set a weight (share) or a quota (at least N in every 1000 examples) per category.")
    mix = gr.Dataframe(pd.DataFrame(columns=["category", "rows", "weight", "quota_per_1000"]), interactive=True,
                       label="Categories")
    with gr.Row():
        stream_size = gr.Number(1000, label="Stream size", precision=0)
        preview = gr.Button("Preview the mix")
    mix_report = gr.Dataframe(label="Realized mix", interactive=False, visible=False)

    def on_check(file, sample_name, fmt_value, mapping_text, length, state: Session):
        if sample_name and not file:
            source = SAMPLES / sample_name
        elif file:
            source = Path(file if isinstance(file, str) else file.name)
        else:
            raise gr.Error("upload a file or choose a sample dataset first")
        own = shared.session_dir(state) / "uploads" / source.name
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, own)  # the session's own copy: uploads of others never mix in
        try:
            ds, rejected = validate(shared, state, str(own), fmt_value, mapping_text, length)
        except LoraEqError as e:
            raise gr.Error(str(e))
        state.data_path = str(own)
        return (report_markdown(ds), issues_frame(ds), gr.File(rejected, visible=bool(rejected)), mix_frame(ds),
                state)

    check.click(on_check, [upload, sample, fmt, mapping, max_length, session],
                [report, issues, rejects, mix, session], api_name="validate")

    def on_preview(frame: pd.DataFrame, size: float, state: Session):
        if not state.data_path:
            raise gr.Error("validate a data file first")
        weights, quotas = mix_settings(frame)
        try:
            ds = load_dataset(state.data_path)
            mixture = build_mixture(ds, weights=weights, quotas=quotas, size=int(size), seed=0)
        except LoraEqError as e:
            raise gr.Error(str(e))
        return gr.Dataframe(pd.DataFrame(mixture.to_json()["categories"]), visible=True)

    preview.click(on_preview, [mix, stream_size, session], mix_report, api_name="preview_mix")

    def on_mix(frame: pd.DataFrame, state: Session):
        weights, quotas = mix_settings(frame)
        state.mix = {"weights": weights, "quotas": quotas}
        return state

    mix.change(on_mix, [mix, session], session)


def mix_settings(frame: pd.DataFrame) -> tuple[dict | None, dict | None]:
    """Weights and quotas from the category table; all-default rows mean no mix."""
    if frame is None or frame.empty:
        return None, None
    weights = {str(r.category): float(r.weight) for r in frame.itertuples()}
    quotas = {str(r.category): int(r.quota_per_1000) for r in frame.itertuples() if int(r.quota_per_1000) > 0}
    if all(w == 1.0 for w in weights.values()):
        weights = None
    return weights, quotas or None
