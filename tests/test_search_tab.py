"""The Search tab's handlers, called without a server: one-line refusals before anything is
submitted, the `loraeq search` command line its job runs, and the view drawn from a search folder
in the format `evals.search` writes (progress.jsonl, trials/NNN/trial.json, report.json)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pytest

from adapters.data import load_dataset
from adapters.data.split import split_heldout
from adapters.errors import LoraEqError
from adapters.limits import Limits
from adapters.shape.variants import Hyper, Variant
from adapters.train.runfolder import RunFolder
from adapters.train.runs import add_variants, create_run, data_info
from evals.search import CANCEL_FILE, search_dir
from playground import tab_search
from playground.app import make_shared
from playground.sessions import Session

ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BANDS = [[0], [1]]
T0 = 1_700_000_000.0


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(search_seconds=3600))


def _run(shared, state: Session, tmp_path: Path, rows: int = 40) -> Path:
    """A run of this session (its split written, no variant trained): what a search starts from."""
    data = tmp_path / f"data-{rows}.jsonl"
    with data.open("w") as f:
        for i in range(rows):
            fact = i % 10
            f.write(json.dumps({"messages": [{"role": "user", "content": f"w{fact} w{(i * 7) % 30} ?"},
                                             {"role": "assistant", "content": f"w{40 + fact} w{50 + fact}"}],
                                "fact_id": f"f{fact}"}) + "\n")
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.3, seed=0)
    name, path = shared.area.new_run(state)
    create_run(path, variants=[], split=split, data_info=data_info(dataset, split, str(data)),
               model=shared.default_model, precision="fp32", bands=2)
    state.run = name
    return path


@pytest.fixture
def state():
    return Session()


def _grid(value: float) -> dict:
    return {"roles": ROLES, "bands": BANDS, "strengths": [[value] * 7, [round(value / 2, 3)] * 7]}


def _params(rank: int, lr: float) -> dict:
    return {"rank": rank, "learning_rate": lr, "epochs": 3.0, "alpha": 16.0, "dropout": 0.05, "depth_early": 1.0,
            "depth_middle": 1.0, "depth_late": 1.0, "attention": 1.0, "mlp": 1.0}


def _write_trial(run: Path, number: int, state: str, score: float, steps: int, planned: int, grid: dict,
                 default: bool = False) -> None:
    folder = search_dir(run) / "trials" / f"{number:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"number": number, "params": _params(4 * (number + 1), 1e-3), "state": state, "score": score,
              "steps": steps, "planned_steps": planned, "seconds": 10.0 + number, "default": default,
              "rungs": [{"step": 3, "score": score, "value": score}],
              "variant": {"name": f"trial-{number}", "equalizer": grid, "hyper": {}}}
    (folder / "trial.json").write_text(json.dumps(record))


def _write_search(run: Path, finished: bool) -> None:
    """Trials 0 (the default), 1 (pruned at its first rung) and 2 (the best) done, 3 under way;
    with `finished`, 3 done too and the report written."""
    events = [{"event": "start", "worker": 1, "budget_s": None, "trials": 4, "time": T0}]
    ends = [(0, "complete", 0.5, 9, True), (1, "pruned", 0.25, 3, False), (2, "complete", 0.75, 9, False)]
    for number, state, score, steps, default in ends:
        events += [{"event": "trial_start", "trial": number, "params": _params(4 * (number + 1), 1e-3),
                    "planned_steps": 9, "time": T0 + 10 * number},
                   {"event": "rung", "trial": number, "step": 3, "of": 9, "score": score, "time": T0 + 10 * number + 3},
                   {"event": "trial_end", "trial": number, "state": state, "score": score, "steps": steps,
                    "seconds": 10.0 + number, "time": T0 + 10 * number + 9}]
        _write_trial(run, number, state, score, steps, 9, _grid(1.0 + number / 4), default)
    events.append({"event": "trial_start", "trial": 3, "params": _params(16, 2e-3), "planned_steps": 9,
                   "time": T0 + 40})
    (search_dir(run) / "trials" / "003").mkdir(parents=True, exist_ok=True)
    (search_dir(run) / "trials" / "003" / "train_log.jsonl").write_text(
        json.dumps({"event": "start", "step": 0, "max_steps": 9}) + "\n"
        + json.dumps({"step": 5, "max_steps": 9, "loss": 1.2}) + "\n")
    if finished:
        events += [{"event": "trial_end", "trial": 3, "state": "complete", "score": 0.5, "steps": 9, "seconds": 12.0,
                    "time": T0 + 52},
                   {"event": "searched", "seconds": 52.0, "time": T0 + 52},
                   {"event": "confirming", "winner": 2, "time": T0 + 53}, {"event": "done", "time": T0 + 60}]
        _write_trial(run, 3, "complete", 0.5, 9, 9, _grid(0.5))
        report = {"trials": [], "best": {"number": 2, "params": _params(12, 1e-3), "search_score": 0.75,
                                         "confirmed_score": 0.6, "confirmed_ci": [0.36, 0.8],
                                         "default_confirmed_score": 0.4, "default_confirmed_ci": [0.22, 0.61],
                                         "base_confirmed_score": 0.1, "p_value": 0.25, "optimism": 0.15,
                                         "confirm_checks": 20, "default_trial": 0},
                  "importances": {"rank": 0.7, "learning_rate": 0.3},
                  "cell_effects": {"roles": ROLES, "bands": BANDS, "cells": [[0.5] * 7, [-0.25] * 7]},
                  "pareto": [2, 3], "notes": ["evals c1: its similar check is not run during a search"]}
        (search_dir(run) / "report.json").write_text(json.dumps(report))
    (search_dir(run) / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


# ---- refusals and the command line ---------------------------------------------------------------


def test_start_refuses_bad_settings_and_budgets_in_one_line_and_submits_nothing(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    cases = [("rank=64:4", "trials", 4, "rank=64:4: an empty range"),
             ("lora_r=4", "trials", 4, "unknown search setting 'lora_r'"),
             ("rank", "trials", 4, "write name=value or name=low:high"),
             ("", "trials", 0, "trials=0: must be at least 1"),
             ("", "minutes", 0, "budget in minutes=0: must be more than 0"),
             ("", "minutes", 61, "budget in minutes=61: over the limit of 60"),
             ("", "trials", None, "trials: a number is needed"),
             ("", "hours", 2, "choose trials or minutes")]
    for settings, unit, amount, message in cases:
        with pytest.raises(LoraEqError, match=message) as caught:
            tab_search.start(shared, state.run, None, "both", unit, amount, settings, state)
        assert "\n" not in str(caught.value)
    with pytest.raises(LoraEqError, match="checks objective .* upload an eval set"):
        tab_search.start(shared, state.run, None, "checks", "trials", 4, "", state)
    with pytest.raises(LoraEqError, match="objective 'loss'"):
        tab_search.start(shared, state.run, None, "loss", "trials", 4, "", state)
    with pytest.raises(LoraEqError, match="not a run name"):
        tab_search.start(shared, "../elsewhere", None, "both", "trials", 4, "", state)
    with pytest.raises(LoraEqError, match="no search of run-.* is waiting or running"):
        tab_search.cancel(shared, state.run, state)
    assert shared.jobs.get(tab_search.job_key(run)) is None and not search_dir(run).exists()
    with pytest.raises(LoraEqError, match="no run in this session yet"):
        tab_search.start(shared, None, None, "both", "trials", 4, "", Session())


def test_the_job_runs_the_search_command_a_user_could_type(shared):
    lines = tab_search.settings_lines("rank=16, mlp=0\n# a note\n\n  learning_rate=0.0005:0.003 ")
    assert lines == ["rank=16", "mlp=0", "learning_rate=0.0005:0.003"]
    budget = tab_search.budget_argv(shared, "minutes", 20)
    assert budget == ["--budget", "20m"] and tab_search.budget_argv(shared, "trials", 8.0) == ["--trials", "8"]
    argv = tab_search.job_argv(Path("/runs/run-x"), budget, "match", "/up/set.yaml", lines)
    assert argv == ["search", "--run", "/runs/run-x", "--budget", "20m", "--objective", "match",
                    "--evalset", "/up/set.yaml", "--set", "rank=16", "--set", "mlp=0",
                    "--set", "learning_rate=0.0005:0.003", "--json"]
    from loraeq.main import build_parser

    args = build_parser().parse_args(argv)  # the CLI takes it as it stands
    assert (args.run, args.budget, args.objective, args.set) == ("/runs/run-x", "20m", "match", lines)


def test_start_submits_a_search_job_and_its_worker_refusal_shows_in_one_line(shared, state, tmp_path):
    """The real path: the job line starts `loraeq search` in a worker; 8 rows leave too few
    held-out checks to search with, which the worker refuses before training anything."""
    run = _run(shared, state, tmp_path, rows=8)
    state.run = None  # the run is chosen in the tab; starting makes the session follow it
    out = tab_search.start(shared, run.name, None, "both", "trials", 2, "rank=4:8", state)
    job = shared.jobs.get(tab_search.job_key(run))
    assert job.kind == "search" and job.argv == ["search", "--run", str(run), "--trials", "2", "--objective", "both",
                                                  "--set", "rank=4:8", "--json"]
    assert out[-1].run == run.name
    with pytest.raises(LoraEqError, match="already (queued|running)"):
        tab_search.start(shared, run.name, None, "both", "trials", 2, "", state)
    deadline = time.monotonic() + 180
    while job.state in ("queued", "running"):
        assert time.monotonic() < deadline, "the worker did not end"
        time.sleep(0.5)
    status = tab_search.view(shared, run.name, state)[0]
    assert job.state == "failed" and "The search failed:" in status, status
    assert "a search needs at least 4 on each side" in status and str(run) not in status


# ---- the view, drawn from the search folder ------------------------------------------------------


def test_the_view_shows_each_trial_from_the_progress_log_and_the_trial_files(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    _write_search(run, finished=False)
    events = tab_search.read_progress(run)
    live = tab_search.search_trials(run, events, running=True)
    assert [(r["trial"], r["state"], r["steps"], r["planned"]) for r in live] == \
           [(0, "complete", 9, 9), (1, "pruned", 3, 9), (2, "complete", 9, 9), (3, "running", 5, 9)]
    line = tab_search.progress_status(live, events, running=True)
    assert "**3** trials done of 4 (2 complete, 1 pruned, 0 failed or stopped) · trial 3 at step 5/9" in line
    status, table, winner, grid, effects, seen = tab_search.view(shared, state.run, state)
    assert list(table["state"]) == ["complete", "pruned", "complete", "stopped"]  # no job runs it: stopped
    assert list(table["score"])[:3] == ["50%", "25%", "75%"] and list(table["steps"])[:2] == ["9/9", "3/9"]
    assert table["note"][0] == "default" and list(table["rank"]) == ["4", "8", "12", "16"]
    assert "1 failed or stopped" in status and "Run **run-" in status
    assert status.endswith("· stopped before the winner was confirmed")  # its worker is gone, no report
    assert winner.startswith("Best so far: trial 2, 75% of the search checks") and effects is None
    assert grid.size == (96 + 92 * 7 + 8, 34 + 46 * 2 + 8)  # trial 2's grid, drawn as the Train tab draws one
    assert seen[0] == str(run)


def test_the_finished_view_shows_the_confirmed_winner_its_interval_and_the_cell_effects(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    _write_search(run, finished=True)
    status, table, winner, grid, effects, _ = tab_search.view(shared, state.run, state)
    assert list(table["state"]) == ["complete", "pruned", "complete", "complete"]
    assert list(table["note"]) == ["default", "", "winner, fastest for its score", "fastest for its score"]
    assert ("**Winner: trial 2**: 75% of the search checks; on 20 checks it never saw **60%** (95% CI 36%-80%) "
            "against the default's 40% (95% CI 22%-61%), paired p = 0.25; optimism +15%") in winner
    assert "What mattered (fANOVA importance): rank 0.70 · learning_rate 0.30" in winner
    assert "- evals c1: its similar check is not run during a search" in winner
    assert "**4** trials done of 4 (3 complete, 1 pruned" in status and status.endswith("· done")
    assert "60 s elapsed" in status
    cells = effects.axes[0].images[0].get_array()
    assert cells.shape == (2, 7) and cells[0, 0] == 0.5 and cells[1, 6] == -0.25
    assert grid is not None


def test_a_tick_redraws_only_when_the_search_changed(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    _write_search(run, finished=False)
    seen = tab_search.view(shared, state.run, state)[-1]
    assert tab_search.tick(shared, state.run, seen, state) == (gr.skip(),) * 6
    with (search_dir(run) / "progress.jsonl").open("a") as f:
        f.write(json.dumps({"event": "trial_end", "trial": 3, "state": "failed", "time": T0 + 50}) + "\n")
    redrawn = tab_search.tick(shared, state.run, seen, state)
    assert list(redrawn[1]["state"])[-1] == "failed" and redrawn[-1] != seen


def test_a_clicked_trial_fills_the_variant_box_and_shows_its_grid(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    _write_search(run, finished=True)
    evt = gr.SelectData(None, {"index": [1, 0], "value": 1, "row_value": [1, "pruned", "25%"]})
    number, picture = tab_search.pick_trial(shared, state.run, evt, state)
    assert number == "1" and picture is not None


def test_only_a_finished_trial_not_yet_adopted_can_become_a_variant(shared, state, tmp_path):
    run = _run(shared, state, tmp_path)
    _write_search(run, finished=False)
    for trial, message in [("best", "no confirmed winner yet"), ("1", "trial 1: pruned; only a trial trained"),
                           ("3", "trial 3: still training"), ("9", "trial 9: not in this search"),
                           ("x", "trial='x': not a number"),
                           ("", "trial: a number is needed")]:
        with pytest.raises(LoraEqError, match=message):
            tab_search.make_variant(shared, state.run, trial, state)
    _write_search(run, finished=True)
    assert tab_search.trial_choice(run, " Best ") == "2" and tab_search.trial_choice(run, 0) == "0"
    name = add_variants(run, [Variant("search-2", _grid(1.5), Hyper())])[0]
    folder = RunFolder.open(run).variant(name).folder  # as `adopt_trained` records a trial it adopted
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "variant.json").write_text(json.dumps({"name": name, "search_trial": 2}))
    assert tab_search.made_variants(run) == {2: name}
    with pytest.raises(LoraEqError, match=f"trial 2 is already variant {name}"):
        tab_search.make_variant(shared, state.run, "best", state)
    assert shared.jobs.get(tab_search.job_key(run, "variant")) is None
    table = tab_search.view(shared, state.run, state)[1]
    assert table["note"][2] == f"winner, fastest for its score, variant {name}"
    assert not (search_dir(run) / CANCEL_FILE).exists()



def test_the_status_says_how_long_the_trials_have_left():
    from playground.tab_search import search_eta

    rows = [{"state": "complete", "seconds": 100.0}, {"state": "pruned", "seconds": 20.0}, {"state": "running"}]
    assert search_eta(rows, elapsed=300, budget_s=900, trials=None) == 600
    assert search_eta(rows, elapsed=300, budget_s=None, trials=5) == 3 * 60.0  # 3 to go at the mean of 60 s
    assert search_eta(rows[2:], elapsed=10, budget_s=None, trials=5) is None  # nothing finished yet
