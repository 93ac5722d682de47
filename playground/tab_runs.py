"""My runs tab: this session's (or this logged-in user's) runs; open one, resume its unfinished
variants, or delete it.

A run is named by the client only by its run name, resolved inside the session's own folder
(`SessionArea.run_path`), so no one reaches another user's runs. Resume starts the same
`loraeq train --resume RUN_DIR` job the Train tab starts; nothing here trains or reads a run
folder's files itself (`adapters.train.runs.run_status`).
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from adapters.errors import LoraEqError
from adapters.train.runs import run_status
from playground.guard import handler
from playground.sessions import Session
from playground.shared import Shared
from playground.storage import folder_use

COLUMNS = ["run", "created", "model", "variants finished", "size"]


def run_rows(shared: Shared, state: Session) -> list[dict]:
    """One row per run of the session, newest first."""
    rows = []
    for name in reversed(shared.area.runs(state)):
        path = shared.area.run_path(state, name)
        try:
            status = run_status(path)
        except LoraEqError:  # reserved but its plan not written (yet, or a failed start)
            status = {"model": None, "variants": []}
        variants = status["variants"]
        done = sum(v["status"] == "done" for v in variants)
        rows.append({"run": name, "created": _created(name), "model": status["model"] or "default",
                     "variants finished": f"{done}/{len(variants)}",
                     "size": _size(folder_use(path).size)})
    return rows


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def _created(name: str) -> str:
    """run-YYYYmmdd-HHMMSS-xxxxxx -> 'YYYY-mm-dd HH:MM:SS' (the server names runs by their start time)."""
    stamp = time.strptime(name[4:19], "%Y%m%d-%H%M%S")
    return time.strftime("%Y-%m-%d %H:%M:%S", stamp)


def listing(shared: Shared, state: Session):
    rows = run_rows(shared, state)
    names = [r["run"] for r in rows]
    chosen = state.run if state.run in names else (names[0] if names else None)
    return pd.DataFrame(rows, columns=COLUMNS), gr.Dropdown(names, value=chosen)


def open_run(shared: Shared, name, state: Session):
    """Make `name` the run the session follows (Compare, Eval sets, Proof and Export use it)."""
    shared.area.run_path(state, name)  # refuses a name that is not one of this session's runs
    state.run = name
    return f"Opened **{name}**: the other tabs now show it.", state


def resume_run(shared: Shared, name, state: Session):
    """Train the run's unfinished variants (`loraeq train --resume`), as a job of this session."""
    path = shared.area.run_path(state, name)
    unfinished = [v["name"] for v in run_status(path)["variants"] if v["status"] != "done"]
    if not unfinished:
        raise LoraEqError(f"every variant of {name} has finished: nothing to resume")
    if shared.jobs.active(shared.area.owner(state), "train"):
        raise LoraEqError("this session is already training: wait for it to finish, or cancel it")
    shared.jobs.submit(str(path), ["train", "--resume", str(path), "--json"], owner=shared.area.owner(state), kind="train")
    state.run = name
    return f"Resuming **{name}** ({', '.join(unfinished)}): follow it on the Equalizer & Train tab.", state


def delete_run(shared: Shared, name, state: Session):
    """Remove one of the session's own runs, unless a job is working on it."""
    path = shared.area.run_path(state, name)
    job = shared.jobs.get(str(path))
    if job and job.state in ("queued", "running"):
        raise LoraEqError(f"{name} is training: cancel it first (Equalizer & Train)")
    shared.engines.forget(path)
    shared.area.delete_run(state, name)
    table, choices = listing(shared, state)
    return table, choices, f"Deleted **{name}**.", state


def build(shared: Shared, session: gr.State, tab: gr.Tab | None = None) -> None:
    """The tab's components; the list refreshes when `tab` is selected."""
    gr.Markdown("Your runs: this browser session's, or, when you are logged in, yours from any browser. "
                "Anonymous sessions' runs are removed after a while; log in to keep them.")
    refresh = gr.Button("Refresh")
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label="Runs", interactive=False, elem_id="my-runs")
    with gr.Row():
        chosen = gr.Dropdown([], label="Run", scale=3)
        open_button = gr.Button("Open", variant="primary", scale=1)
        resume_button = gr.Button("Resume", scale=1)
        delete_button = gr.Button("Delete", variant="stop", scale=1)
    message = gr.Markdown(elem_id="my-runs-message")
    refresh.click(handler(listing, shared), [session], [table, chosen], api_name="my_runs")
    if tab is not None:
        tab.select(handler(listing, shared), [session], [table, chosen], api_name=False)
    open_button.click(handler(open_run, shared), [chosen, session], [message, session], api_name="open_run")
    resume_button.click(handler(resume_run, shared), [chosen, session], [message, session], api_name="resume_run")
    delete_button.click(handler(delete_run, shared), [chosen, session], [table, chosen, message, session],
                        api_name="delete_run")
