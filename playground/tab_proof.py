"""Proof tab: run the proof of learning on the session's run (in a worker) and show its report."""

from __future__ import annotations

import html as html_lib
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from playground.shared import Session, Shared

VERDICT_COLUMNS = ["name", "verdict", "heldout_loss_base", "heldout_loss", "similarity_base", "similarity",
                   "diff_ci", "p_value", "kl_to_base"]


def job_key(run_dir: str) -> str:
    return f"{run_dir}#proof"


def report_view(shared: Shared, state: Session):
    """(status line, verdict table, report HTML) for the session's run."""
    if not state.run_dir:
        return "No run in this session yet: train variants first.", pd.DataFrame(), ""
    run = Path(state.run_dir)
    job = shared.jobs.get(job_key(state.run_dir))
    position = shared.jobs.position(job_key(state.run_dir))
    if position:
        return f"Waiting in line: position {position}.", pd.DataFrame(), ""
    if job and job.state == "running":
        return "Measuring: losses, answers to the held-out prompts, statistics...", pd.DataFrame(), ""
    if job and job.state == "failed":
        return f"The proof failed: {job.stderr_tail.strip().splitlines()[-1:]}", pd.DataFrame(), ""
    if not (run / "report.json").is_file():
        return "No report yet: press Run the proof.", pd.DataFrame(), ""
    data = json.loads((run / "report.json").read_text(encoding="utf-8"))
    rows = [{k: v.get(k) for k in VERDICT_COLUMNS} for v in data["variants"]]
    html = framed((run / "report.html").read_text(encoding="utf-8")) if (run / "report.html").is_file() else ""
    lines = [f"**{v['name']}**: {v.get('verdict_line') or v['verdict']}" for v in data["variants"]]
    return "  \n".join(lines) or "The report has no finished variant.", pd.DataFrame(rows), html


def framed(document: str) -> str:
    """The self-contained report in an iframe: its page styles stay out of the app's page."""
    return (f'<iframe title="Proof report" srcdoc="{html_lib.escape(document, quote=True)}" '
            'style="width:100%;height:1400px;border:1px solid #ddd;border-radius:6px"></iframe>')


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        limit = gr.Number(40, label="Held-out rows to use (0 = all)", precision=0)
        run = gr.Button("Run the proof", variant="primary")
        refresh = gr.Button("Refresh")
    status = gr.Markdown(elem_id="proof-status")
    table = gr.Dataframe(label="Verdicts", interactive=False, elem_id="proof-table")
    report = gr.HTML(elem_id="proof-report")
    timer = gr.Timer(3.0)

    def on_run(n: float, state: Session):
        if not state.run_dir:
            raise gr.Error("train variants first (Equalizer & Train)")
        argv = ["eval", state.run_dir, "--json"] + (["--limit", str(int(n))] if n and int(n) > 0 else [])
        try:
            shared.jobs.submit(job_key(state.run_dir), argv)
        except RuntimeError as e:
            raise gr.Error(str(e))
        return report_view(shared, state)

    run.click(on_run, [limit, session], [status, table, report], api_name="run_proof")
    refresh.click(lambda s: report_view(shared, s), [session], [status, table, report], api_name="proof_report")

    def on_tick(state: Session):
        job = shared.jobs.get(job_key(state.run_dir)) if state.run_dir else None
        if job is None or job.state not in ("queued", "running", "finished", "failed"):
            return gr.skip(), gr.skip(), gr.skip()
        return report_view(shared, state)

    timer.tick(on_tick, [session], [status, table, report])
