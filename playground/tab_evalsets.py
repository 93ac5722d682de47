"""Eval sets tab: run many prompts x the base and the variants (a worker job running `loraeq
evalset`), follow its progress, and read the matrix: pass / fail cells that open their whole
answer and checks and take the user's override (a vote), per-column statistics, a heatmap and
downloads. Results live in RUN/evalsets/NAME, so a reload shows them again.

The judged checks (llm-rubric, model-graded-closedqa, factuality, select-best) are ruled by a judge
chosen from a list: only the judges the operator offers (`evals.judge.judge_flags`: the built-in
model and the endpoints in LORAEQ_JUDGES), never a URL or a model a user types. The pass rates shown
count a judged check only where its judge agrees with the user's overrides better than chance."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.limits import check_new_tokens
from evals.evalset import HELDOUT, load_evalset
from evals.judge import NO_JUDGE, judge_flags, judge_labels, judge_line
from evals.matrix import (
    EvalFolder,
    apply_votes,
    cells_csv,
    evalset_dir,
    judged_summary,
    list_evalsets,
    summary_csv,
    summary_rows,
    timed_out,
    verdict,
)
from evals.votes import VoteStore
from playground.bounded import bounded
from playground.guard import handler, public_message
from playground.jobs import limit_line
from playground.plots import evalset_heatmap
from playground.sessions import Session
from playground.shared import Shared
from playground.workspace import receive

MARKS = {True: "✓ pass", False: "✗ fail", None: "·"}
CHECK_MARKS = {True: "✓", False: "✗", None: "· no verdict"}
RAW_SHOWN = 300  # characters of a judge's reply shown under its check
COLOURS = {"✓": "background-color: #c8f0c8", "✗": "background-color: #f6c6c6"}
TICK_SECONDS = 3.0
SUMMARY_COLUMNS = ["name", "passed", "total", "pass_rate", "ci_low", "ci_high", "mean_similarity",
                   "similarity_ci_low", "similarity_ci_high", "mcnemar_p", "similarity_p", "overrides"]


def job_key(run: Path, name: str) -> str:
    return f"{run}#evalset:{name}"


def choices(shared: Shared, state: Session):
    """The run's finished variants (to choose columns) and its eval-set results (to show one)."""
    from adapters.train.runfolder import RunFolder

    run = shared.require_run(state)
    names = list(RunFolder.open(run).adapters()) + list(state.adapters)  # the run's variants, then added adapters
    results = shown_names(shared, state, run)
    return gr.CheckboxGroup(names, value=names), gr.Dropdown(results, value=results[-1] if results else None)


def set_path(shared: Shared, state: Session, file, use_heldout: bool) -> str:
    if use_heldout:
        return HELDOUT
    if not file:
        raise LoraEqError("upload an eval set (JSONL, JSON, CSV, Parquet or a promptfoo YAML) "
                          "or use the held-out split")
    return str(receive(shared, state, Path(file if isinstance(file, str) else file.name)))


def job_argv(run: Path, path: str, variants, n: int, skip_bad: bool, style: str | None,
             adapters: dict[str, str] | None = None, judge=None) -> list[str]:
    """The `loraeq evalset` command line; `adapters` are the session's added adapters (name -> its
    folder): the chosen ones, or all of them when no column was chosen, go along as `--adapter`;
    `judge` is a Judge dropdown's label (its flags go along)."""
    flags = judge_flags(judge)
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise LoraEqError("columns: a list of variant names is needed")
    argv = ["evalset", str(run), "--set", path, "--max-new-tokens", str(n), "--json"]
    argv += ["--columns", ",".join(variants)] if variants else []
    for name, folder in (adapters or {}).items():
        argv += ["--adapter", f"{name}={folder}"] if name in variants or not variants else []
    argv += ["--skip-bad-rows"] if skip_bad else []
    return argv + (["--style", style] if style else []) + flags


def start(shared: Shared, file, use_heldout, style_file, style_heldout, variants, n, skip_bad, judge,
          state: Session):
    """Check the set here (bad rows named at once), then run it in a worker (with the chosen judge
    where the set has judged checks: a judge is not loaded for nothing)."""
    judge_flags(judge)  # a judge not offered is refused before anything is read
    run = shared.require_run(state)
    path = set_path(shared, state, file, bool(use_heldout))
    evalset = bounded(load_evalset, path, run, limits=shared.limits, what=f"reading {Path(path).name}")
    if evalset.rejected and not skip_bad:
        shown = "; ".join(f"{r['row']}: {r['reason']}" for r in evalset.rejected[:3])
        raise LoraEqError(f"{len(evalset.rejected)} bad rows ({shown}): fix them or tick 'skip bad rows'")
    style = HELDOUT if style_heldout else str(receive(shared, state, Path(getattr(style_file, "name", style_file)))) \
        if style_file else None
    n = check_new_tokens(n, shared.limits)
    judged = any(c.judged for case in evalset.cases for c in case.checks)
    shared.jobs.submit(job_key(run, evalset.name), job_argv(run, path, variants or [], n, bool(skip_bad), style,
                                                         state.adapters, judge if judged else None),
                       owner=shared.area.owner(state), kind="evalset")
    return gr.Dropdown(shown_names(shared, state, run), value=evalset.name), status_line(shared, state, evalset.name)


def shown_names(shared: Shared, state: Session, run: Path) -> list[str]:
    """The run's eval sets with results, and the session's waiting or running ones (a set's folder
    appears only once its worker starts): each can be shown or cancelled."""
    prefix = job_key(run, "")
    waiting = [k[len(prefix):] for k in shared.jobs.keys(shared.area.owner(state)) if k.startswith(prefix)]
    return sorted({*list_evalsets(run), *waiting})


def cancel(shared: Shared, name, state: Session) -> str:
    run = shared.require_run(state)
    if not name:
        raise LoraEqError("choose the eval set to stop")
    EvalFolder(evalset_dir(run, name)).request_cancel()
    shared.jobs.cancel(job_key(run, name))  # a worker that does not stop by itself is stopped
    return "Stopping (within 5 s)…"


def status_line(shared: Shared, state: Session, name) -> str:
    run = shared.run_path(state)
    if run is None or not name:
        return "No eval set yet: upload one (or use the held-out split) and press Run."
    job, folder = shared.jobs.get(job_key(run, name)), EvalFolder(evalset_dir(run, name))
    position = shared.jobs.position(job_key(run, name))
    if position:
        return f"Waiting in line: position {position} ({limit_line(shared.limits, 'evalset')})."
    if job and job.state == "failed":
        return f"The eval set failed: {public_message(job.failure(shared.jobs.memory_limit))}"
    if job and job.state == "cancelled":
        return "Cancelled: the last finished results (if any) are shown."
    status = folder.status().get("status")
    if status == "running" or (job and job.state == "running"):
        return (f"{progress_line(folder.progress())} ({limit_line(shared.limits, 'evalset')}; "
                f"each check at most {shared.limits.check_seconds:g} s on one answer)")
    if status == "cancelled":
        return "Cancelled: the last finished results (if any) are shown."
    return "Done." if folder.summary() else "No results yet."


STAGE_WORDS = {"loading": "loading the base and the variants", "answers": "answering",
               "style": "answering the style examples with the base", "checks": "checking the answers"}


def progress_line(p: dict) -> str:
    """A running eval set's latest progress record (evalrun.Job) in words: prompts done of the total,
    the stage, the batch under way, about how long is left."""
    if not p:
        return "Starting: the worker is loading"
    done, total = p.get("done", 0), p.get("total") or 0
    filled = int(20 * done / total) if total else 0
    line = f"Running `{'█' * filled}{'░' * (20 - filled)}` {done}/{total} prompts · {STAGE_WORDS.get(p.get('stage'), p.get('stage'))}"
    if p.get("working"):
        line += f" prompts {done + 1}-{done + p['working']} (one batch: they finish together)"
    if p.get("eta_s") is not None:
        line += f" · about {p['eta_s']:.0f} s left"
    else:  # the record was written when the batch began: the time since counts too
        line += f" · {p.get('elapsed_s', 0) + max(0.0, time.time() - p.get('time', time.time())):.0f} s so far"
    return line


def matrix_frames(cells: list[dict]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(prompts x columns of marks, the case ids in row order, the columns)."""
    cases = list(dict.fromkeys(c["case"] for c in cells))
    columns = list(dict.fromkeys(c["column"] for c in cells))
    by_key = {(c["case"], c["column"]): c for c in cells}
    rows = []
    for case in cases:
        first = by_key[(case, columns[0])]
        row = {"prompt": f"{case}: {first['prompt'][:60]}"}
        for col in columns:
            cell = by_key.get((case, col))
            row[col] = mark(cell) if cell else ""
        rows.append(row)
    return pd.DataFrame(rows), cases, columns


def mark(cell: dict) -> str:
    """A cell in the matrix: pass, fail (or a check that timed out), and whether the user overrode it."""
    text = "✗ timed out" if verdict(cell) is False and timed_out(cell) else MARKS[verdict(cell)]
    return text + (" (you)" if cell.get("override") else "")


def styled(frame: pd.DataFrame):
    return frame.style.map(lambda v: COLOURS.get(str(v)[:1], ""))


def results(shared: Shared, name, state: Session) -> tuple[list[dict], dict]:
    run = shared.require_run(state)
    folder = EvalFolder(evalset_dir(run, name))
    return apply_votes(folder.cells(), VoteStore(run)), folder.summary()


def view(shared: Shared, name, state: Session):
    """(status, matrix, summary table, heatmap, notes) of the chosen eval set."""
    status = status_line(shared, state, name)
    if not name:
        return status, pd.DataFrame(), pd.DataFrame(), None, ""
    cells, summary = results(shared, name, state)
    if not cells:
        return status, pd.DataFrame(), pd.DataFrame(), None, ""
    frame, cases, columns = matrix_frames(cells)
    summarized, judges = judged_summary(cells, columns)  # a judged check counts only where its judge is calibrated
    table = pd.DataFrame(summary_rows(summarized))[SUMMARY_COLUMNS].round(4)
    by_key = {(c["case"], c["column"]): verdict(c) for c in cells}
    figure = evalset_heatmap(cases, columns, [[by_key.get((k, col)) for col in columns] for k in cases])
    return status, styled(frame), table, figure, notes_markdown(summary, judges)


def notes_markdown(summary: dict, judges: list[dict] | None = None) -> str:
    """What the summary says besides the table; `judges`: each judge's reliability against the
    user's overrides now (default: the summary's, from when the set ran)."""
    lines = [f"- judged check {judge_line(j)}" for j in (summary.get("judges", []) if judges is None else judges)]
    lines += [f"- style probe: cross-validated accuracy **{p['cv_accuracy']:.2f}** ({p['examples']} examples vs "
             f"{p['contrast']} contrast)" + ("" if p["trusted"] else " — too low to trust") for p in
             summary.get("probes", [])]
    lines += [f"- not run: `{u['type']}` in {u['test']}" for u in summary.get("unsupported", [])]
    lines += [f"- skipped {r['row']}: {r['reason']}" for r in summary.get("rejected", [])]
    lines += [f"- {n}" for n in summary.get("notes", [])]
    return "\n".join(lines)


def tick(shared: Shared, name, state: Session):
    run = shared.run_path(state)
    job = shared.jobs.get(job_key(run, name)) if run is not None and name else None
    recent = time.time() - EvalFolder(evalset_dir(run, name)).status().get("time", 0) < 2 * TICK_SECONDS \
        if job is not None else False
    if job is None or (job.state not in ("queued", "running") and not recent):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return view(shared, name, state)


def open_cell(shared: Shared, name, evt: gr.SelectData, state: Session):
    """The clicked cell's whole answer and checks, and the cell kept for an override."""
    cells, _ = results(shared, name, state)
    frame, cases, columns = matrix_frames(cells)
    row, col = evt.index
    if col == 0 or row >= len(cases):
        return "Click a cell of a column to open it.", None
    cell = next(c for c in cells if c["case"] == cases[row] and c["column"] == columns[col - 1])
    return cell_markdown(cell), {"case": cell["case"], "column": cell["column"]}


def check_markdown(result: dict) -> str:
    """One check of a cell: its mark (a judge's missing verdict is "no verdict", never a fail) and,
    for a judged check, the judge's reply (its start)."""
    line = f"- {CHECK_MARKS[result['passed']]} `{result['label']}` {result['detail']}"
    judge = result.get("judge")
    if not judge:
        return line
    if judge.get("raw") is None:  # the endpoint refused the prompt or did not answer
        return line + f"\n  - judge {judge.get('name')} gave no reply"
    raw = " ".join(judge["raw"].split())
    said = raw[:RAW_SHOWN] + "…" if len(raw) > RAW_SHOWN else raw
    return line + f"\n  - judge {judge.get('name')} replied: {said or '(nothing)'}"


def cell_markdown(cell: dict) -> str:
    checks = "\n".join(check_markdown(r) for r in cell["checks"])
    sims = [f"to reference {cell['similarity_reference']:.3f}" if cell["similarity_reference"] is not None else "",
            f"to base {cell['similarity_base']:.3f}" if cell["similarity_base"] is not None else ""]
    override = f"\n\nYour override: **{cell['override']}**" if cell.get("override") else ""
    similarity = " · ".join(s for s in sims if s) or "—"
    return (f"**{cell['column']}** · {cell['case']}\n\n**Prompt:** {cell['prompt']}\n\n**Answer:**\n\n"
            f"{cell['text']}\n\n**Reference:** {cell['reference'] or '—'}\n\nSimilarity: {similarity}\n\n"
            f"**Checks** ({MARKS[verdict(cell)]}):\n{checks or '- none'}{override}")


def override(shared: Shared, verdict_text: str, name, selected, state: Session):
    if not isinstance(selected, dict):
        raise LoraEqError("open a cell first (click it in the matrix)")
    run = shared.require_run(state)
    cells, _ = results(shared, name, state)
    cell = next((c for c in cells if c["case"] == selected.get("case") and c["column"] == selected.get("column")),
                None)
    if cell is None:
        raise LoraEqError("that cell is no longer in the results: open it again")
    VoteStore(run, state.adapters).cast(cell["prompt"], cell["column"], verdict_text, settings=cell["settings"],
                        similarity_reference=cell["similarity_reference"],
                        similarity_base=cell["similarity_base"], answer=cell["text"], voter=shared.area.voter(state))
    return view(shared, name, state)


def download(shared: Shared, kind: str, name, state: Session):
    if not name:
        raise LoraEqError("no eval set results to download yet")
    cells, summary = results(shared, name, state)
    if not cells:
        raise LoraEqError("no eval set results to download yet")
    out = shared.area.folder(state) / "downloads"
    if kind == "cells.jsonl":
        return shared.downloads.hand_out(evalset_dir(shared.require_run(state), name) / "cells.jsonl",
                                         f"{name}-cells.jsonl")
    if kind == "cells.csv":
        return shared.downloads.hand_out(cells_csv(cells, out / f"{name}-cells.csv"))
    columns = list(dict.fromkeys(c["column"] for c in cells))
    return shared.downloads.hand_out(summary_csv(judged_summary(cells, columns)[0], out / f"{name}-summary.csv"))


def build(shared: Shared, session: gr.State) -> None:
    with gr.Row():
        upload = gr.File(label="Eval set: JSONL / JSON / CSV / Parquet rows or a promptfoo YAML", scale=2,
                         file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet", ".yaml", ".yml"])
        with gr.Column():
            use_heldout = gr.Checkbox(label="Use the run's held-out split instead")
            skip_bad = gr.Checkbox(label="Skip bad rows (they are listed)")
    with gr.Row():
        style_file = gr.File(label="Style examples (optional): adds a style check to every prompt", scale=2)
        style_heldout = gr.Checkbox(label="Style examples: the run's held-out answers")
        judge = gr.Dropdown(judge_labels(), value=NO_JUDGE, label="Judge for judged checks",
                            info="rules llm-rubric, model-graded-closedqa, factuality and select-best; "
                                 "without one they are listed as not run", allow_custom_value=False)
    with gr.Row():
        load = gr.Button("Load my run")
        variants = gr.CheckboxGroup([], label="Variants next to the base")
        max_new = gr.Number(64, label="Max new tokens", step=1)
    with gr.Row():
        run = gr.Button("Run the eval set", variant="primary")
        stop = gr.Button("Cancel")
        shown = gr.Dropdown([], label="Results to show", allow_custom_value=False)
    status = gr.Markdown(elem_id="evalset-status")
    matrix = gr.Dataframe(label="Matrix (click a cell to open it)", interactive=False, elem_id="evalset-matrix")
    with gr.Row():
        detail = gr.Markdown("Click a cell to open its answer and checks.")
        with gr.Column(scale=0, min_width=160):
            passes = gr.Button("Override: pass", size="sm")
            fails = gr.Button("Override: fail", size="sm")
    summary = gr.Dataframe(label="Per column", interactive=False, elem_id="evalset-summary")
    notes = gr.Markdown()
    heatmap = gr.Plot(label="Heatmap")
    with gr.Row():
        files = {k: gr.DownloadButton(f"Download {k}") for k in ("cells.csv", "cells.jsonl", "summary.csv")}
    selected, timer, shown_outputs = gr.State(None), gr.Timer(TICK_SECONDS), [status, matrix, summary, heatmap, notes]
    load.click(handler(choices, shared), [session], [variants, shown], api_name="evalset_load")
    run.click(handler(start, shared), [upload, use_heldout, style_file, style_heldout, variants, max_new, skip_bad,
                                       judge, session], [shown, status], api_name="evalset_run")
    stop.click(handler(cancel, shared), [shown, session], status, api_name="evalset_cancel")
    shown.change(handler(view, shared), [shown, session], shown_outputs, api_name="evalset_view")
    timer.tick(handler(tick, shared), [shown, session], shown_outputs, api_name=False)
    matrix.select(handler(open_cell, shared), [shown, session], [detail, selected], api_name=False)
    passes.click(handler(override, shared, "pass"), [shown, selected, session], shown_outputs, api_name=False)
    fails.click(handler(override, shared, "fail"), [shown, selected, session], shown_outputs, api_name=False)
    for kind, button in files.items():
        button.click(handler(download, shared, kind), [shown, session], button, api_name=False)
