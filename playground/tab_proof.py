"""Proof tab: run the proof of learning on the session's run (in a worker) and show its report."""

from __future__ import annotations

import html as html_lib
from pathlib import Path

import gradio as gr
import pandas as pd

from adapters.limits import check_number
from adapters.train.runfolder import RunFolder
from evals.progress import proof_status
from playground.guard import handler, public_message
from playground.jobs import limit_line
from playground.sessions import Session
from playground.shared import Shared

VERDICT_COLUMNS = ["name", "verdict", "heldout_loss_base", "heldout_loss", "similarity_base", "similarity",
                   "diff_ci", "p_value", "kl_to_base"]
CLASSIFICATION_COLUMNS = ["name", "verdict", "accuracy", "accuracy_diff", "accuracy_diff_ci", "macro_f1",
                          "macro_f1_diff", "mcnemar_p"]  # an encoder's run: against its linear probe


def job_key(run: Path) -> str:
    return f"{run}#proof"


def report_view(shared: Shared, state: Session):
    """(status line, verdict table, report HTML) for the session's run."""
    run = shared.run_path(state)
    if run is None:
        return "No run in this session yet: train variants first.", pd.DataFrame(), ""
    job = shared.jobs.get(job_key(run))
    position = shared.jobs.position(job_key(run))
    if position:
        return f"Waiting in line: position {position} ({limit_line(shared.limits, 'proof')}).", pd.DataFrame(), ""
    if job and job.state == "running":
        return proof_status(run) or "Measuring: the worker is starting...", pd.DataFrame(), ""
    if job and job.state == "failed":
        return f"The proof failed: {public_message(job.failure(shared.jobs.memory_limit))}", pd.DataFrame(), ""
    if job and job.state == "cancelled":
        return "The proof was cancelled: press Run the proof to measure again.", pd.DataFrame(), ""
    folder = RunFolder.open(run)
    data = folder.report()
    if not data:
        return "No report yet: press Run the proof.", pd.DataFrame(), ""
    columns = CLASSIFICATION_COLUMNS if data.get("task") == "classification" else VERDICT_COLUMNS
    rows = [{k: v.get(k) for k in columns} for v in data["variants"]]
    page = folder.report_file("html")
    html = framed(page.read_text(encoding="utf-8")) if page else ""
    lines = [f"**{v['name']}**: {v.get('verdict_line') or v['verdict']}" + (f" — {v['headline']}" if v.get("headline") else "")
             for v in data["variants"]]
    return "  \n".join(lines) or "The report has no finished variant.", pd.DataFrame(rows), html


def framed(document: str) -> str:
    """The self-contained report in an iframe: its page styles stay out of the app's page."""
    return (f'<iframe title="Proof report" srcdoc="{html_lib.escape(document, quote=True)}" '
            'style="width:100%;height:1400px;border:1px solid #ddd;border-radius:6px"></iframe>')


def run_proof(shared: Shared, n, state: Session):
    run = shared.require_run(state, "train variants first (Equalizer & Train)")
    n = check_number("held-out rows", n if n is not None else 0, 100_000)
    argv = ["eval", str(run), "--json"] + (["--limit", str(n)] if n > 0 else [])
    shared.jobs.submit(job_key(run), argv, owner=shared.area.owner(state), kind="proof")
    return report_view(shared, state)


def tick(shared: Shared, state: Session):
    run = shared.run_path(state)
    job = shared.jobs.get(job_key(run)) if run is not None else None
    if job is None:
        return gr.skip(), gr.skip(), gr.skip()
    return report_view(shared, state)


def cancel_proof(shared: Shared, state: Session):
    """Stop the session's proof: out of the line if it waits, its worker stopped if it runs."""
    run = shared.require_run(state, "no proof to stop: this session has no run")
    shared.jobs.cancel(job_key(run))
    return report_view(shared, state)


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        limit = gr.Number(40, label="Held-out rows to use (0 = all)", step=1)
        run = gr.Button("Run the proof", variant="primary")
        refresh = gr.Button("Refresh")
        stop = gr.Button("Cancel")
    status = gr.Markdown(elem_id="proof-status")
    table = gr.Dataframe(label="Verdicts", interactive=False, elem_id="proof-table")
    report = gr.HTML(elem_id="proof-report")
    timer = gr.Timer(3.0)
    run.click(handler(run_proof, shared), [limit, session], [status, table, report], api_name="run_proof")
    refresh.click(handler(report_view, shared), [session], [status, table, report], api_name="proof_report")
    stop.click(handler(cancel_proof, shared), [session], [status, table, report], api_name="cancel_proof")
    timer.tick(handler(tick, shared), [session], [status, table, report], api_name=False)
