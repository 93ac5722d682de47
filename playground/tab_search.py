"""Search tab: search equalizer shapes and hyperparameters on a run of this session (a worker job
running `loraeq search`), follow its trials, read the winner confirmed on checks the search never
saw, and make a finished trial a variant of the run (a `loraeq search --make-variant` job), which
Compare, Eval sets, Proof and Export then take as any other.

Everything shown is read from the run's search folder (progress.jsonl, trials/NNN/trial.json,
report.json; `evals.search` writes them), so a reload shows the search again. Nothing here
searches, trains or scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from adapters.cache import read_json
from adapters.errors import LoraEqError
from adapters.limits import check_number, check_text
from adapters.shape.equalizer import MAX_STRENGTH, Equalizer
from adapters.shape.search_space import SEARCHABLE, SearchSpace
from adapters.train.runfolder import RunFolder, read_log
from evals.evalset import load_evalset
from evals.search import (
    OBJECTIVES,
    PROGRESS_FILE,
    REPORT_FILE,
    SETTINGS_FILE,
    parse_budget,
    read_progress,
    request_cancel,
    search_dir,
    trial_folder,
)
from playground.bounded import bounded
from playground.guard import handler, public_message
from playground.jobs import ACTIVE, limit_line
from playground.plots import cell_effects_heatmap, equalizer_image
from playground.sessions import Session
from playground.shared import Shared
from playground.workspace import receive

TICK_SECONDS = 3.0
BUDGET_UNITS = ("trials", "minutes")
MAX_TRIALS = 1000
COLUMNS = ["trial", "state", "score", "steps", "seconds", "note", *SEARCHABLE]
NO_RUN = "no run in this session yet: train one (Equalizer & Train) or open one (My runs)"


def job_key(run: Path, what: str = "search") -> str:
    """The job line's key of the run's search ("search") or of its make-a-variant job ("variant")."""
    return f"{run}#search" if what == "search" else f"{run}#search-variant"


def run_for(shared: Shared, state: Session, name) -> Path:
    """The chosen run (one of the session's, resolved inside its folder), else the one it follows."""
    if name:
        return shared.area.run_path(state, name)
    return shared.require_run(state, NO_RUN)


def run_choices(shared: Shared, state: Session, name=None) -> gr.Dropdown:
    """The session's runs, newest first; the chosen one kept, else the one the session follows."""
    names = list(reversed(shared.area.runs(state)))
    value = name if name in names else state.run if state.run in names else (names[0] if names else None)
    return gr.Dropdown(names, value=value)


# ---- starting, stopping, adopting ----------------------------------------------------------------


def settings_lines(text) -> list[str]:
    """`name=value` / `name=low:high` settings, one a line (or comma-separated); blanks and # notes skipped."""
    lines = str(text or "").replace(",", "\n").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def budget_argv(shared: Shared, unit, amount) -> list[str]:
    """`--trials N` or `--budget Xm`, refused in one line when empty, 0, or past the job's time limit."""
    if unit not in BUDGET_UNITS:
        raise LoraEqError(f"budget in {str(unit)[:20]!r}: choose {' or '.join(BUDGET_UNITS)}")
    if unit == "trials":
        return ["--trials", str(check_number("trials", amount, MAX_TRIALS, minimum=1))]
    limit = shared.limits.job_seconds("search") / 60
    minutes = check_number("budget in minutes", amount, limit, whole=False)
    if minutes <= 0:
        raise LoraEqError(f"budget in minutes={minutes:g}: must be more than 0")
    parse_budget(f"{minutes:g}m")
    return ["--budget", f"{minutes:g}m"]


def job_argv(run: Path, budget: list[str], objective: str, evalset: str | None, settings: list[str]) -> list[str]:
    """The `loraeq search` command line the worker runs (a user could type the same)."""
    argv = ["search", "--run", str(run), *budget, "--objective", objective]
    argv += ["--evalset", evalset] if evalset else []
    for setting in settings:
        argv += ["--set", setting]
    return argv + ["--json"]


def evalset_path(shared: Shared, state: Session, run: Path, file) -> str | None:
    """The session's copy of an uploaded eval set, read once here so a bad file is refused at once."""
    if not file:
        return None
    path = receive(shared, state, Path(file if isinstance(file, str) else file.name))
    bounded(load_evalset, str(path), run, limits=shared.limits, what=f"reading {path.name}")
    return str(path)


def resumed(run: Path) -> bool:
    """Whether the run was searched before: `loraeq search` then resumes that search, with its
    settings and checks, under the new budget."""
    return (search_dir(run) / SETTINGS_FILE).is_file()


def start(shared: Shared, run_name, file, objective, unit, amount, settings_text, state: Session):
    """Check everything here (one line for what is wrong), then run the search as a job."""
    run = run_for(shared, state, run_name)
    if objective not in OBJECTIVES:
        raise LoraEqError(f"objective {str(objective)[:20]!r}: choose one of {', '.join(OBJECTIVES)}")
    settings = settings_lines(check_text("settings", settings_text, shared.limits.text_chars))
    SearchSpace.parse(settings, shared.limits)
    budget = budget_argv(shared, unit, amount)
    if RunFolder.open(run).task == "classification":
        raise LoraEqError("a search scores answers to prompts: this run trains a classifier")
    evalset = evalset_path(shared, state, run, file)
    if objective == "checks" and evalset is None and not resumed(run):
        raise LoraEqError("the checks objective scores an eval set's checks: upload an eval set")
    job = shared.jobs.get(job_key(run))
    if job is not None and job.state in ACTIVE:
        raise LoraEqError(f"a search of {run.name} is already {job.state}: wait for it, or press Cancel")
    shared.jobs.submit(job_key(run), job_argv(run, budget, objective, evalset, settings),
                       owner=shared.area.owner(state), kind="search")
    state.run = run.name  # the other tabs follow the searched run
    return (*render(shared, run, state), state)


def cancel(shared: Shared, run_name, state: Session):
    """Stop the run's search: the trial under way stops at its next step, finished trials stay."""
    run = run_for(shared, state, run_name)
    job = shared.jobs.get(job_key(run))
    if job is None or job.state not in ACTIVE:
        raise LoraEqError(f"no search of {run.name} is waiting or running")
    request_cancel(run)
    shared.jobs.cancel(job_key(run))  # a worker that does not stop by itself is stopped
    return render(shared, run, state)


def made_variants(run: Path) -> dict[int, str]:
    """Trial number -> the run's variant made from it."""
    found = {}
    for info in RunFolder.open(run).variants:
        trial = info.record().get("search_trial")
        if isinstance(trial, int):
            found[trial] = info.name
    return found


def trial_choice(run: Path, trial) -> str:
    """A trial the user named (a number, or best: the confirmed winner), checked against the files."""
    text = str(trial if trial is not None else "").strip().lower()
    if text == "best":
        best = read_json(search_dir(run) / REPORT_FILE).get("best")
        if not best:
            raise LoraEqError("this search has no confirmed winner yet: give a trial number")
        number = best["number"]
    else:
        number = check_number("trial", text or None, 100_000)
    record = read_json(trial_folder(run, number) / "trial.json")
    if record.get("state") != "complete":
        state = record.get("state") or ("still training" if trial_folder(run, number).is_dir() else "not in this search")
        raise LoraEqError(f"trial {number}: {state}; only a trial trained to its end can become a variant")
    if number in made_variants(run):
        raise LoraEqError(f"trial {number} is already variant {made_variants(run)[number]} of {run.name}")
    return str(number)


def make_variant(shared: Shared, run_name, trial, state: Session):
    """The trial becomes a variant of the run (`loraeq search --make-variant`, a short job)."""
    run = run_for(shared, state, run_name)
    number = trial_choice(run, trial)
    job = shared.jobs.get(job_key(run, "variant"))
    if job is not None and job.state in ACTIVE:
        raise LoraEqError("a variant of this search is being made: wait for it to finish")
    argv = ["search", "--run", str(run), "--make-variant", number, "--json"]
    shared.jobs.submit(job_key(run, "variant"), argv, owner=shared.area.owner(state), kind="search")
    state.run = run.name  # Compare shows this run's variants
    return (*render(shared, run, state), state)


# ---- reading the search folder -------------------------------------------------------------------


def search_trials(run: Path, events: list[dict], running: bool) -> list[dict]:
    """One row per trial started, from the progress log, completed by each trial's trial.json; a
    trial without an end is running (the search's last, while its job runs) or was stopped."""
    rows: dict[int, dict] = {}
    for e in events:
        row = rows.get(e.get("trial"))
        if e.get("event") == "trial_start":
            rows[e["trial"]] = {"trial": e["trial"], "state": "running", "params": e.get("params", {}),
                                "planned": e.get("planned_steps"), "steps": 0, "score": None, "seconds": None}
        elif row is not None and e.get("event") == "rung":
            row.update(steps=e["step"], planned=e.get("of", row["planned"]), score=e.get("score"))
        elif row is not None and e.get("event") == "trial_end":
            state = "cancelled" if e.get("error") == "cancelled" else e.get("state", "failed")
            row.update(state=state, score=e.get("score", row["score"]), steps=e.get("steps", row["steps"]),
                       seconds=e.get("seconds"))
    last = max(rows, default=None)
    for number, row in rows.items():
        record = read_json(trial_folder(run, number) / "trial.json")
        row.update(default=bool(record.get("default")), grid=(record.get("variant") or {}).get("equalizer"))
        if row["state"] == "running" and not (running and number == last):
            row["state"] = "stopped"
        elif row["state"] == "running":
            row.update(training_step(run, number))
    return [rows[n] for n in sorted(rows)]


def training_step(run: Path, number: int) -> dict:
    """The step a running trial's training has reached, from its training log ({} before the first)."""
    log = [r for r in read_log(trial_folder(run, number) / "train_log.jsonl") if r.get("max_steps")]
    return {"steps": log[-1]["step"], "planned": log[-1]["max_steps"]} if log else {}


def trials_frame(rows: list[dict], report: dict, variants: dict[int, str]) -> pd.DataFrame:
    """The trial table: state, score, steps of planned, seconds, what the trial is, its settings."""
    best = (report.get("best") or {}).get("number")
    front = set(report.get("pareto") or [])
    table = []
    for r in rows:
        note = [w for w, on in (("default", r["default"]), ("winner", r["trial"] == best),
                                ("fastest for its score", r["trial"] in front)) if on]
        note += [f"variant {variants[r['trial']]}"] if r["trial"] in variants else []
        table.append({"trial": r["trial"], "state": r["state"],
                      "score": "" if r["score"] is None else f"{r['score']:.0%}",
                      "steps": f"{r['steps'] or 0}/{r['planned'] or '?'}",
                      "seconds": "" if r["seconds"] is None else f"{r['seconds']:.0f}", "note": ", ".join(note),
                      **{k: _short(v) for k, v in r["params"].items() if k in SEARCHABLE}})
    return pd.DataFrame(table, columns=COLUMNS)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def progress_status(rows: list[dict], events: list[dict], running: bool) -> str:
    """Trials done (complete, pruned, failed) of the budget, the trial under way and its step, the time."""
    starts = [e for e in events if e.get("event") == "start"]
    if not starts:
        return "Starting: the worker is loading the base and the checks." if running else ""
    states = [r["state"] for r in rows]
    done = states.count("complete") + states.count("pruned")
    trials, budget_s = starts[-1].get("trials"), starts[-1].get("budget_s")
    line = (f"**{done}** trials done" + (f" of {trials}" if trials else "") +
            f" ({states.count('complete')} complete, {states.count('pruned')} pruned, "
            f"{len(states) - done - states.count('running')} failed or stopped)")
    current = next((r for r in rows if r["state"] == "running"), None)
    if current is not None:
        line += f" · trial {current['trial']} at step {current['steps'] or 0}/{current['planned'] or '?'}"
    end = time.time() if running else max(e.get("time", 0) for e in events)
    elapsed = end - starts[-1].get("time", end)
    line += f" · {elapsed:.0f} s elapsed"
    line += f" (budget {budget_s / 60:.3g} min)" if budget_s else ""
    left = search_eta(rows, elapsed, budget_s, trials) if running else None
    line += f" · about {left / 60:.1f} min of trials left" if left else ""
    last = events[-1].get("event")
    if running or last == "done":
        phase = PHASES.get(last, "")
    else:  # its worker ended (cancelled, stopped, the server restarted) before the report
        phase = "stopped before the winner was confirmed"
    return line + (f" · {phase}" if phase else "")


def search_eta(rows: list[dict], elapsed: float, budget_s: float | None, trials: int | None) -> float | None:
    """Seconds of trials left: what the time budget leaves, or the mean time of a finished trial
    times the trials still to run (None before one finished)."""
    if budget_s:
        return max(0.0, budget_s - elapsed)
    times = [r["seconds"] for r in rows if r["state"] in ("complete", "pruned") and r.get("seconds")]
    if not trials or not times:
        return None
    return max(0.0, (trials - len(times)) * sum(times) / len(times))


PHASES = {"confirming": "confirming the winner on the checks the search never saw", "done": "done",
          "cancelled": "cancelled: confirming what finished", "stopped": "stopped: trials failed in a row",
          "searched": "the trials are over"}


def job_status(shared: Shared, run: Path, what: str) -> str:
    """A line on the run's search (or make-a-variant) job: waiting, failed or cancelled; '' otherwise."""
    job, name = shared.jobs.get(job_key(run, what)), "search" if what == "search" else "new variant"
    position = shared.jobs.position(job_key(run, what))
    if position:
        return f"The {name} waits in line: position {position} ({limit_line(shared.limits, 'search')})."
    if job is not None and job.state == "failed":
        return f"The {name} failed: {public_message(job.failure(shared.jobs.memory_limit))}"
    if job is not None and job.state == "cancelled":
        return "The search was cancelled: finished trials are kept; Start resumes it." if what == "search" else ""
    if job is not None and what == "variant":
        return {"running": "Making the variant…",
                "finished": "The new variant is ready (see the table's note): Compare → Load my run's variants "
                            "shows it."}.get(job.state, "")
    return ""


def status_markdown(shared: Shared, run: Path, rows: list[dict], events: list[dict]) -> str:
    job = shared.jobs.get(job_key(run))
    running = job is not None and job.state == "running"
    lines = [f"Run **{run.name}**", job_status(shared, run, "search"), progress_status(rows, events, running),
             job_status(shared, run, "variant")]
    if not events and not running and not lines[1]:
        lines.append("No search on this run yet: choose a budget and press Start.")
    elif resumed(run) and not running:
        lines.append("Start again resumes this search (its settings and checks) with the new budget.")
    return "  \n".join(line for line in lines if line)


def winner_markdown(report: dict, rows: list[dict], variants: dict[int, str]) -> str:
    """The confirmed winner against the default, what mattered, and the search's notes."""
    best = report.get("best")
    if not report:
        so_far = best_so_far(rows)
        return (f"Best so far: trial {so_far['trial']}, {so_far['score']:.0%} of the search checks (confirmed on "
                "checks the search never saw once the search ends)." if so_far else "")
    if not best:
        return "The search ended without a finished trial to confirm."
    ci, dci = best["confirmed_ci"], best.get("default_confirmed_ci") or [0, 1]
    lines = [f"**Winner: trial {best['number']}**: {best['search_score']:.0%} of the search checks; on "
             f"{best['confirm_checks']} checks it never saw **{best['confirmed_score']:.0%}** (95% CI {ci[0]:.0%}-"
             f"{ci[1]:.0%}) against the default's {best['default_confirmed_score']:.0%} (95% CI {dci[0]:.0%}-"
             f"{dci[1]:.0%}), paired p = {best['p_value']:.3g}; optimism {best['optimism']:+.0%} (how much "
             "better it looked during the search)."]
    if best["number"] in variants:
        lines.append(f"It is variant **{variants[best['number']]}** of the run: Compare → Load my run's variants.")
    if report.get("importances"):
        lines.append("What mattered (fANOVA importance): " +
                     " · ".join(f"{k} {v:.2f}" for k, v in report["importances"].items()))
    return "  \n".join(lines + [f"- {n}" for n in report.get("notes", [])])


def best_so_far(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["state"] == "complete" and r["score"] is not None]
    return max(done, key=lambda r: (r["score"], -r["trial"])) if done else None


def grid_picture(rows: list[dict], number: int | None):
    """The equalizer of trial `number` as the Train tab draws it (None when it has none)."""
    grid = next((r["grid"] for r in rows if r["trial"] == number and r["grid"]), None)
    if grid is None:
        return None
    eq = Equalizer.from_json(grid)
    return equalizer_image(eq, max(MAX_STRENGTH, max(v for row in eq.strengths for v in row)))


def render(shared: Shared, run: Path, state: Session) -> tuple:
    """(status, trial table, winner, the winner's grid, cell effects, what was read) of the run's search."""
    stamp = seen(shared, run)  # before reading: a change meanwhile draws again at the next tick
    events = read_progress(run)
    job = shared.jobs.get(job_key(run))
    rows = search_trials(run, events, job is not None and job.state == "running")
    report, variants = read_json(search_dir(run) / REPORT_FILE), made_variants(run)
    shown = (report.get("best") or {}).get("number") if report else (best_so_far(rows) or {}).get("trial")
    effects = report.get("cell_effects")
    return (status_markdown(shared, run, rows, events), trials_frame(rows, report, variants),
            winner_markdown(report, rows, variants), grid_picture(rows, shown),
            cell_effects_heatmap(effects) if effects else None, stamp)


# ---- following it --------------------------------------------------------------------------------


def _stamp(path: Path) -> list:
    try:
        info = path.stat()
        return [info.st_mtime_ns, info.st_size]
    except OSError:
        return []


def seen(shared: Shared, run: Path) -> list:
    """What the view was drawn from: the files it read and the jobs' states (a tick redraws on a change)."""
    jobs = [getattr(shared.jobs.get(job_key(run, w)), "state", None) for w in ("search", "variant")]
    return [str(run), _stamp(search_dir(run) / PROGRESS_FILE), _stamp(search_dir(run) / REPORT_FILE), *jobs]


def view(shared: Shared, run_name, state: Session) -> tuple:
    run = run_for(shared, state, run_name) if run_name or state.run else None
    if run is None:
        return (f"No search to show: {NO_RUN}.", pd.DataFrame(columns=COLUMNS), "", None, None, [])
    return render(shared, run, state)


def tick(shared: Shared, run_name, last, state: Session):
    """Redraw when the search's files or jobs changed; while a job runs, at least its status line."""
    try:
        run = run_for(shared, state, run_name) if run_name or state.run else None
    except LoraEqError:  # the run was deleted meanwhile
        run = None
    if run is None:
        return (gr.skip(),) * 6
    now = seen(shared, run)
    if now != last:
        return render(shared, run, state)
    if any(s in ACTIVE for s in now[3:]):
        events = read_progress(run)
        rows = search_trials(run, events, now[3] == "running")
        return (status_markdown(shared, run, rows, events), *(gr.skip(),) * 5)
    return (gr.skip(),) * 6


def pick_trial(shared: Shared, run_name, evt: gr.SelectData, state: Session):
    """A clicked row: its trial number goes to the variant box, its grid to the picture."""
    run = run_for(shared, state, run_name)
    row = evt.row_value if isinstance(evt.row_value, list) else None
    if not row:
        return gr.skip(), gr.skip()
    number = int(row[0])
    rows = search_trials(run, read_progress(run), False)
    return str(number), grid_picture(rows, number)


def restore_view(shared: Shared, state: Session):
    """After a reload: the session's runs to choose from and its run's search, as they were."""
    return (run_choices(shared, state), *view(shared, None, state))


def build(shared: Shared, session: gr.State, tab: gr.Tab | None = None) -> list:
    """The tab's components, wired; returns those `restore_view` fills, in its order."""
    gr.Markdown("**Search** trains many variants of a run (equalizer shapes and hyperparameters), judges each "
                "on your checks while it trains, stops the weaker ones early, and confirms the winner on checks "
                "it never saw, against the auto defaults (always trial 0).")
    with gr.Row():
        run_box = gr.Dropdown([], label="Run", scale=2, allow_custom_value=False, elem_id="search-run")
        refresh = gr.Button("List my runs", scale=1)
        upload = gr.File(label="Eval set (optional): its checks judge the trials too", scale=2,
                         file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet", ".yaml", ".yml"])
    with gr.Row():
        objective = gr.Radio(list(OBJECTIVES), value="both", label="Score trials by",
                             info="match: held-out answers state their facts; checks: the eval set's checks")
        unit = gr.Radio(list(BUDGET_UNITS), value="trials", label="Budget in")
        amount = gr.Number(8, label="Budget", minimum=0, elem_id="search-budget")
    settings = gr.Textbox(label="Fixed or narrowed settings (optional): name=value or name=low:high, one a line",
                          lines=3, placeholder="rank=16\nlearning_rate=0.0005:0.003\nmlp=0",
                          info=f"known: {', '.join(SEARCHABLE)}", elem_id="search-settings")
    with gr.Row():
        go = gr.Button("Start the search", variant="primary", elem_id="search-start")
        stop = gr.Button("Cancel", variant="stop", elem_id="search-cancel")
        trial = gr.Textbox("best", label="Trial to make a variant (a number, or best)", elem_id="search-trial")
        adopt = gr.Button("Make this trial a variant", elem_id="search-make-variant")
    view_parts = _view_layout()
    ui = SimpleNamespace(run_box=run_box, refresh=refresh, upload=upload, objective=objective, unit=unit,
                         amount=amount, settings=settings, go=go, stop=stop, trial=trial, adopt=adopt, parts=view_parts)
    _wire(shared, session, tab, ui)
    return [run_box, *view_parts]


def _view_layout() -> list:
    status = gr.Markdown(elem_id="search-status")
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label="Trials (click one to see its equalizer)",
                         interactive=False, elem_id="search-trials")
    winner = gr.Markdown(elem_id="search-winner")
    with gr.Row():
        grid = gr.Image(label="The winner's equalizer (or the clicked trial's)", interactive=False, type="pil",
                        elem_id="search-grid")
        effects = gr.Plot(label="Cell effects")
    return [status, table, winner, grid, effects, gr.State([])]


def _wire(shared: Shared, session: gr.State, tab, ui: SimpleNamespace) -> None:
    parts, run_box = ui.parts, ui.run_box
    ui.refresh.click(handler(run_choices, shared), [session, run_box], run_box, api_name="search_runs")
    if tab is not None:
        tab.select(handler(run_choices, shared), [session, run_box], run_box, api_name=False)
    run_box.change(handler(view, shared), [run_box, session], parts, api_name="search_view")
    ui.go.click(handler(start, shared), [run_box, ui.upload, ui.objective, ui.unit, ui.amount, ui.settings, session],
                [*parts, session], api_name="search_start")
    ui.stop.click(handler(cancel, shared), [run_box, session], parts, api_name="search_cancel")
    ui.adopt.click(handler(make_variant, shared), [run_box, ui.trial, session], [*parts, session],
                   api_name="search_make_variant")
    parts[1].select(handler(pick_trial, shared), [run_box, session], [ui.trial, parts[3]], api_name=False)
    gr.Timer(TICK_SECONDS).tick(handler(tick, shared), [run_box, parts[5], session], parts, api_name=False)
