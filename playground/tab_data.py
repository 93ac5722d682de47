"""Data tab: upload, format and column mapping, the validation report, rejects, stats, a preview of
the rows, the held-out split (its size and how it was chosen, which the user can change), the mix."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from adapters.data import FORMATS, build_mixture, token_summary, write_rejects
from adapters.errors import LoraEqError
from adapters.limits import check_number, check_text
from adapters.shape.variants import Hyper
from adapters.train.dataspec import AUTO, HELDOUT_MAX_SHARE, HELDOUT_ROWS, HELDOUT_SHARE, DataSpec
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared
from playground.workspace import SAMPLE_NAMES, current, parse_mapping, receive, session_dataset, upload_source

FILE_TYPES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"]
ERROR_COLUMNS = ["row", "field", "reason"]
PREVIEW_COLUMNS = ["row", "category", "user", "assistant"]
PREVIEW_ROWS = 20


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


def validate(shared: Shared, file, sample_name, fmt: str, mapping_text: str, length, state: Session):
    if fmt != "auto" and fmt not in FORMATS:
        raise LoraEqError(f"format {str(fmt)[:40]!r}: choose auto or one of {', '.join(FORMATS)}")
    mapping = parse_mapping(check_text("column mapping", mapping_text, shared.limits.text_chars))
    max_length = check_number("max_length", length, shared.limits.max_length, minimum=8)
    own = receive(shared, state, upload_source(file, sample_name))
    task = "classification" if current(shared, state).model.kind == "encoder" else "causal"  # text -> label rows
    spec = DataSpec(str(own), format=None if fmt == "auto" else fmt, mapping=mapping, max_length=max_length, task=task)
    try:
        state.data = {k: v for k, v in spec.to_json().items() if k != "mix"}
        ds = session_dataset(shared, state, with_tokens=True)
    except Exception:
        own.unlink(missing_ok=True)  # a file that cannot be used is not kept
        state.data = None
        raise
    state.data_rows = ds.rows_valid
    rejects = None
    if ds.rows_rejected:
        path = write_rejects(ds, own.with_name(f"{own.stem}.rejects.jsonl"))
        rejects = shared.downloads.hand_out(path)
    return report_markdown(ds), issues_frame(ds), gr.File(rejects, visible=bool(rejects)), mix_frame(ds), state


def preview_frame(ds) -> pd.DataFrame:
    """The first valid rows as the model will read them: the user's turn and the answer to learn."""
    rows = []
    for e in ds.examples[:PREVIEW_ROWS]:
        said = {m["role"]: m["content"] for m in e.messages if m["role"] in ("user", "assistant")}
        rows.append({"row": e.row, "category": e.category, "user": _short(said.get("user", "")),
                     "assistant": _short(said.get("assistant", ""))})
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_markdown(spec: DataSpec, ds, split) -> str:
    """How many rows the proof holds out, and how they were chosen (`DataSpec` decides; this says it)."""
    total, held = len(ds.examples), split.heldout.rows_valid
    if spec.heldout == AUTO:
        how = (f"auto: {HELDOUT_SHARE:.0%} of the rows, at least {HELDOUT_ROWS} where the data allows, "
               f"at most {HELDOUT_MAX_SHARE:.0%}")
    else:
        how = f"{spec.heldout:g} of the rows, as set"
    group = spec.group_for(ds)
    grouped = f"grouped by `{group}`" + (" (auto: every row has one)" if spec.group == AUTO else "")
    together = (f"{grouped}: each held-out row rewords something training keeps, so the proof asks for the "
                "fact, not the words" if group else "no group field")
    lines = [f"**Held out for the proof: {held} of {total} rows** ({held / max(1, total):.0%}); "
             f"training gets {split.train.rows_valid}.",
             f"Chosen {how}; drawn per category (stratified) with split seed {spec.seed}; {together}."]
    return "  \n".join(lines + [f"- {n}" for n in split.notes])


def split_view(shared: Shared, heldout, group, state: Session):
    """The held-out split the session's data gets with these settings (kept for training), and the
    first rows of the data."""
    heldout = check_text("held-out share", heldout, 40).strip().lower() or AUTO
    group = check_text("group field", group, 100).strip() or AUTO
    group = {"auto": AUTO, "none": None}.get(group.lower(), group)
    if heldout != AUTO:
        heldout = check_number("held-out share", heldout, 0.99, minimum=0.01, whole=False)
    if not state.data:
        raise LoraEqError("validate a data file first")
    spec = DataSpec.from_json({**state.data, "heldout": heldout, "group": group})
    ds = session_dataset(shared, state)
    text = split_markdown(spec, ds, spec.split(ds))
    state.data = {k: v for k, v in spec.to_json().items() if k != "mix"}
    return text, preview_frame(ds), state


def restore_view(shared: Shared, state: Session):
    """After a reload: the kept data's report line, split and preview (nothing before a file is validated)."""
    if not state.data:
        return gr.skip(), gr.skip(), gr.skip()
    spec = DataSpec.from_json(state.data)
    try:
        ds = session_dataset(shared, state)
    except LoraEqError:  # the upload is gone (removed with old files): nothing to show but that
        state.data = None
        return f"**{Path(spec.path).name}** is no longer here: validate a file again.", "", gr.skip()
    line = f"**{Path(spec.path).name}**: {ds.rows_valid} valid rows (validated before the page was reloaded)"
    return line, split_markdown(spec, ds, spec.split(ds)), preview_frame(ds)


def preview_mix(shared: Shared, frame: pd.DataFrame, size, state: Session):
    size = check_number("stream size", size, shared.limits.stream_size, minimum=1)
    weights, quotas = mix_settings(frame)
    mixture = build_mixture(session_dataset(shared, state), weights=weights, quotas=quotas, size=size, seed=0)
    return gr.Dataframe(pd.DataFrame(mixture.to_json()["categories"]), visible=True)


def set_mix(frame: pd.DataFrame, state: Session):
    weights, quotas = mix_settings(frame)
    state.mix = {"weights": weights, "quotas": quotas}
    return state


def build(shared: Shared, session: gr.State) -> list:
    with gr.Row():
        upload = gr.File(label="Your data (JSONL, JSON, CSV/TSV, Parquet, TXT)", file_types=FILE_TYPES, scale=2,
                         elem_id="data-upload")
        with gr.Column(scale=1):
            sample = gr.Dropdown(SAMPLE_NAMES, label="...or a sample dataset", value=None)
            fmt = gr.Dropdown(["auto", *FORMATS], value="auto", label="Row format")
            mapping = gr.Textbox(label="Column mapping (their=ours, ...)", placeholder="reply=completion")
            max_length = gr.Number(Hyper().max_length, label="max_length (tokens)", step=1)
    check = gr.Button("Validate", variant="primary")
    report = gr.Markdown(elem_id="data-report")
    (heldout, group, apply_split, split_text), rows = split_panel()
    issues = gr.Dataframe(pd.DataFrame(columns=["kind", *ERROR_COLUMNS]), label="Rejected rows and warnings",
                          interactive=False, max_height=300)
    rejects = gr.File(label="Rejected rows (download)", visible=False)
    gr.Markdown("**Mix**: set a weight (share) or a quota (at least N in every 1000 examples) per category.")
    mix = gr.Dataframe(pd.DataFrame(columns=["category", "rows", "weight", "quota_per_1000"]), interactive=True,
                       label="Categories")
    with gr.Row():
        stream_size = gr.Number(1000, label="Stream size", step=1)
        preview = gr.Button("Preview the mix")
    mix_report = gr.Dataframe(label="Realized mix", interactive=False, visible=False)
    check.click(handler(validate, shared), [upload, sample, fmt, mapping, max_length, session],
                [report, issues, rejects, mix, session], api_name="validate").success(
        handler(split_view, shared), [heldout, group, session], [split_text, rows, session], api_name=False)
    apply_split.click(handler(split_view, shared), [heldout, group, session], [split_text, rows, session],
                      api_name="data_split")
    preview.click(handler(preview_mix, shared), [mix, stream_size, session], mix_report, api_name="preview_mix")
    mix.change(handler(set_mix), [mix, session], session, api_name=False)
    return [report, split_text, rows]  # what `restore_view` fills after a reload


def split_panel():
    """The held-out split (settings and what they give) and a preview of the rows."""
    gr.Markdown("**Held-out split**: rows kept out of training, for the proof to measure what was learned.")
    with gr.Row():
        heldout = gr.Textbox(AUTO, label="Held-out share (auto or a fraction, e.g. 0.2)", elem_id="data-heldout")
        group = gr.Textbox(AUTO, label="Keep rows together by field (auto, none or a field, e.g. fact_id)")
        apply_split = gr.Button("Apply the split")
    split_text = gr.Markdown(elem_id="data-split")
    rows = gr.Dataframe(pd.DataFrame(columns=PREVIEW_COLUMNS), label=f"Preview: the first {PREVIEW_ROWS} valid rows",
                        interactive=False, wrap=True, max_height=320, elem_id="data-preview")
    return (heldout, group, apply_split, split_text), rows


def mix_settings(frame: pd.DataFrame) -> tuple[dict | None, dict | None]:
    """Weights and quotas from the category table; all-default rows mean no mix."""
    if frame is None or frame.empty:
        return None, None
    try:
        weights = {str(r.category): float(r.weight) for r in frame.itertuples()}
        quotas = {str(r.category): int(float(r.quota_per_1000)) for r in frame.itertuples()
                  if float(r.quota_per_1000) > 0}
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise LoraEqError("the category table needs a number in every weight and quota_per_1000 cell") from None
    if all(w == 1.0 for w in weights.values()):
        weights = None
    return weights, quotas or None
