"""Classify tab (shown instead of Compare when the base is an encoder): a text -> each column's label
probabilities side by side, and a labelled eval set -> accuracy and macro-F1 per column.

The columns are the session's classification run: the linear probe (the encoder with only its
head trained), then every finished LoRA variant. Everything here calls `adapters.train.classify` and
`evals.classproof`; the classifier is loaded for each request (no model state kept per page).
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.limits import check_text
from adapters.train.classify import Classifier
from playground.guard import handler
from playground.plots import probability_bars
from playground.sessions import Session
from playground.shared import Shared

RESULT_COLUMNS = ["column", "label", "probability", "correct"]
SCORE_COLUMNS = ["column", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "correct", "n"]


def classifier(shared: Shared, state: Session) -> Classifier:
    run = shared.require_run(state, "train a classification run first (Equalizer & Train)")
    return Classifier(run)


def result_frame(result: dict, expected: str | None) -> pd.DataFrame:
    rows = [{"column": c["name"], "label": c["label"], "probability": round(c["probabilities"][c["label"]], 4),
             "correct": "" if not expected else ("yes" if c["label"] == expected else "no")} for c in result["columns"]]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def classify_text(shared: Shared, text, pair, expected, state: Session):
    text = check_text("text", text, shared.limits.text_chars)
    pair = check_text("second text", pair or "", shared.limits.text_chars).strip() or None
    expected = check_text("expected label", expected or "", 200).strip() or None
    model = classifier(shared, state)
    if expected:
        model.check_label(expected, "expected label")
    result = model.classify(text, pair)
    state.classified = {"prompt": text if pair is None else f"{text}\n[text_pair] {pair}",
                        "labels": {c["name"]: c["label"] for c in result["columns"]}}
    return (probability_bars(result), result_frame(result, expected), gr.Dropdown(choices=list(state.classified["labels"])),
            state)


def vote(shared: Shared, verdict: str, column, state: Session) -> pd.DataFrame:
    """A pass / fail vote on one column's label for the last text (stored as the Compare tab's are)."""
    from adapters.train.runfolder import config_fingerprint
    from evals.votes import VoteStore

    last = state.classified
    if not last or column not in last["labels"]:
        raise LoraEqError("classify a text first, then choose one of its columns")
    run = shared.require_run(state)
    VoteStore(run).cast(last["prompt"], column, verdict, settings={"task": "classification"},
                        fingerprint=config_fingerprint(run / column), answer=last["labels"][column])
    return leaderboard(run)


def leaderboard(run) -> pd.DataFrame:
    from evals.votes import VoteStore

    return pd.DataFrame([s.to_json() for s in VoteStore(run).leaderboard()]).round(3)


def score_set(shared: Shared, file, mapping_text, state: Session) -> pd.DataFrame:
    from adapters.data.classes import load_classification, rows
    from evals.classproof import score
    from playground.workspace import parse_mapping, receive, upload_source

    if not file:
        raise LoraEqError("upload a labelled file first (text, optional text_pair, label)")
    mapping = parse_mapping(check_text("column mapping", mapping_text or "", shared.limits.text_chars))
    model = classifier(shared, state)
    own = receive(shared, state, upload_source(file, None))
    dataset = load_classification(own, mapping, min_per_label=1)
    if dataset.rejected:
        first = dataset.rejected[0].issues[0]
        raise LoraEqError(f"row {first.row}, {first.field or 'row'}: {first.reason} ({dataset.rows_rejected} rejected)")
    scored = score(model, rows(dataset), where="row")
    return pd.DataFrame([{"column": name, **{k: s[k] for k in SCORE_COLUMNS[1:]}}
                         for name, s in scored["columns"].items()], columns=SCORE_COLUMNS)


def build(shared: Shared, session: gr.State) -> None:
    gr.Markdown("The base is an **encoder**: each column (the linear probe, then every LoRA variant of this "
                "session's run) labels the text. Compare their probabilities side by side.")
    with gr.Row():
        text = gr.Textbox(label="Text", lines=3, scale=3, elem_id="classify-text")
        with gr.Column(scale=2):
            pair = gr.Textbox(label="Second text (text_pair, optional)")
            expected = gr.Textbox(label="Expected label (optional)")
    go = gr.Button("Classify", variant="primary")
    bars = gr.Plot(label="Label probabilities per column")
    table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Each column's label", interactive=False,
                         elem_id="classify-table")
    with gr.Row():
        column = gr.Dropdown([], label="Column to vote on")
        passed, failed = gr.Button("Pass"), gr.Button("Fail")
    board = gr.Dataframe(pd.DataFrame(columns=["variant", "votes", "passes", "fails", "pass_rate"]),
                         label="Leaderboard (your votes)", interactive=False)
    gr.Markdown("**Eval set**: a file of rows with `text` (optional `text_pair`) and `label` scores every column.")
    with gr.Row():
        upload = gr.File(label="Labelled rows (JSONL, JSON, CSV/TSV, Parquet)")
        mapping = gr.Textbox(label="Column mapping (SRC=DST, e.g. sentence=text)")
        score_button = gr.Button("Score")
    scores = gr.Dataframe(pd.DataFrame(columns=SCORE_COLUMNS), label="Accuracy and macro-F1 (95% bootstrap intervals)",
                          interactive=False)
    go.click(handler(classify_text, shared), [text, pair, expected, session], [bars, table, column, session],
             api_name="classify")
    passed.click(handler(vote, shared, "pass"), [column, session], board, api_name="classify_pass")
    failed.click(handler(vote, shared, "fail"), [column, session], board, api_name="classify_fail")
    score_button.click(handler(score_set, shared), [upload, mapping, session], scores, api_name="classify_set")
