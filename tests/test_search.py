"""The search for the tuning set (evals/search.py, `loraeq search`) on a tiny seeded model: its
trials, rungs and states, the default as trial 0, resuming without repeating a finished trial,
two workers on one study, a trial made a variant, and one-line refusals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from adapters.base.loading import load_model
from adapters.data import load_dataset
from adapters.errors import LoraEqError
from adapters.train.runfolder import RunFolder
from adapters.train.runs import create_run, data_info
from adapters.data.split import split_heldout
from conftest import write_chats
from evals.search import (
    Item,
    SearchSettings,
    open_study,
    parse_budget,
    passes,
    rung_steps,
    run_search,
    split_items,
    wilson,
)
from evals.checks import parse_check
from loraeq.main import main

ROOT = Path(__file__).resolve().parents[1]


def _write_data(path: Path, n: int = 40) -> Path:
    return write_chats(path, ((f"w{i % 10} w{(i * 7) % 30} ?", f"w{40 + i % 10} paris w{50 + i % 10}",
                               {"fact_id": f"f{i % 10}"}) for i in range(n)))


@pytest.fixture
def tiny_search_run(tmp_path, tiny_model_dir, cache_home):
    data = _write_data(tmp_path / "data.jsonl")
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.3, seed=0)
    create_run(tmp_path / "run", variants=[], split=split, data_info=data_info(dataset, split, str(data)),
               model=str(tiny_model_dir), precision="fp32", bands=2)
    return tmp_path / "run"


def _settings(run: Path, **kw) -> SearchSettings:
    space = {"epochs": (1, 3), "rank": (2, 8)}
    return SearchSettings(str(run), {**{k: list(v) for k, v in space.items()}, **kw.pop("space", {})}, **kw)


def _cli(*argv: str) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*argv, "--json"])
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None), err.getvalue()


# ---- pieces --------------------------------------------------------------------------------------


def test_budgets_read_as_a_person_writes_them_and_zero_is_refused():
    assert parse_budget("20m") == 1200 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("3") == 180 and parse_budget(None) is None
    for bad in ("0", "0m", "-5m", "soon", "nanm"):
        with pytest.raises(LoraEqError, match="--budget"):
            parse_budget(bad)


def test_settings_refuse_a_missing_budget_and_an_unknown_objective():
    with pytest.raises(LoraEqError, match="give a budget"):
        SearchSettings("run", {})
    with pytest.raises(LoraEqError, match="--trials 0"):
        SearchSettings("run", {}, trials=0)
    with pytest.raises(LoraEqError, match="--objective 'loss'"):
        SearchSettings("run", {}, trials=2, objective="loss")


def test_rungs_are_one_epoch_times_powers_of_three_before_the_last_step():
    assert rung_steps(9, 108) == [9, 27, 81]
    assert rung_steps(5, 16) == [5, 15]
    assert rung_steps(1, 10) == [2, 6]  # at least 2 steps before the first judgement
    assert rung_steps(9, 9) == []


def test_paraphrases_of_one_fact_stay_on_one_side_and_checks_split_apart():
    heldout = [Item(f"h{i}", f"fact {i % 6}", ({"role": "user", "content": "q"},), "a") for i in range(18)]
    cases = [Item(f"e{i}", f"case {i}", ({"role": "user", "content": "q"},), None,
                  (parse_check({"type": "icontains", "value": "x"}),)) for i in range(8)]
    search, confirm = split_items(heldout + cases, seed=3)
    assert {i.group for i in search}.isdisjoint({i.group for i in confirm})
    assert sum(bool(i.checks) for i in confirm) == 4 and sum(not i.checks for i in confirm) == 9
    assert split_items(heldout + cases, seed=3) == (search, confirm)  # seeded
    assert split_items(heldout + cases, seed=4) != (search, confirm)


def test_an_answer_passes_on_the_reference_facts_or_on_every_check():
    row = Item("h", "g", ({"role": "user", "content": "What does the Vexo lamp cost?"},), "The Vexo lamp costs $149.")
    assert passes(row, "It is priced at 149 dollars.") and not passes(row, "The Vexo lamp costs $189.")
    case = Item("e", "g", ({"role": "user", "content": "q"},), None,
                (parse_check({"type": "icontains", "value": "paris"}), parse_check({"type": "not-contains", "value": "Rome"})))
    assert passes(case, "PARIS it is") and not passes(case, "Paris, not Rome")


def test_a_wilson_interval_holds_the_rate_and_stays_in_0_1():
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    low, high = wilson(6, 12)
    assert low < 0.5 < high and high - low < 0.6


# ---- searches ----------------------------------------------------------------------------------


def test_a_search_trains_the_default_first_judges_at_rungs_and_confirms(tiny_search_run):
    run = tiny_search_run
    base = load_model(RunFolder.open(run).model, "fp32")
    report = run_search(_settings(run, trials=3, seed=1), base)
    trials = report["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert trials[0]["default"] and not any(t["default"] for t in trials[1:])
    assert trials[0]["params"]["depth_early"] == trials[0]["params"]["mlp"] == 1.0  # the uniform preset
    assert {t["state"] for t in trials} <= {"complete", "pruned"}
    for t in trials:
        record = json.loads((run / "search" / "trials" / f"{t['number']:03d}" / "trial.json").read_text())
        assert record["rungs"] and record["rungs"][-1]["step"] == t["steps"]
        assert 1 <= record["params"]["epochs"] <= 3 or t["default"]
        assert (Path(run / "search" / "trials" / f"{t['number']:03d}" / "adapter_model.safetensors").is_file()
                == (t["state"] == "complete"))
    best = report["best"]
    assert best is not None and 0 <= best["confirmed_score"] <= 1 and 0 <= best["p_value"] <= 1
    low, high = best["confirmed_ci"]
    assert low <= best["confirmed_score"] <= high
    assert best["search_score"] == next(t["score"] for t in trials if t["number"] == best["number"])
    assert json.loads((run / "search" / "report.json").read_text())["best"] == best
    events = [json.loads(line)["event"] for line in (run / "search" / "progress.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "done" and events.count("trial_start") == 3 and "rung" in events


def test_a_resumed_search_never_repeats_a_finished_trial_and_retries_an_abandoned_one(tiny_search_run):
    import optuna
    from optuna.trial import TrialState

    run = tiny_search_run
    base = load_model(RunFolder.open(run).model, "fp32")
    run_search(_settings(run, trials=2), base)
    first = {n: (run / "search" / "trials" / f"{n:03d}" / "trial.json").stat().st_mtime_ns for n in (0, 1)}
    # A worker killed in the middle of a trial leaves it "running" in the storage.
    study = open_study(_settings(run, trials=2))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = study.ask({"rank": optuna.distributions.IntDistribution(2, 8, log=True)})
    ghost.set_user_attr("worker", {"host": os.uname().nodename, "pid": dead.pid})
    code, report, _ = _cli("search", "--run", str(run), "--trials", "4")
    assert code == 0
    states = {t["number"]: t["state"] for t in report["trials"]}
    assert states[ghost.number] == "failed"
    assert sum(s in ("complete", "pruned") for s in states.values()) == 4
    retried = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == ghost.number]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert {n: (run / "search" / "trials" / f"{n:03d}" / "trial.json").stat().st_mtime_ns for n in (0, 1)} == first


def test_two_workers_share_one_study_and_no_trial_runs_twice(tiny_search_run, tmp_path):
    run = tiny_search_run
    storage = tmp_path / "shared.journal"
    base = load_model(RunFolder.open(run).model, "fp32")
    run_search(_settings(run, trials=1, storage=str(storage), study="shared"), base)  # creates the study
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "loraeq", "search", "--join", "shared", "--storage", str(storage),
            "--trials", "5", "--json"]
    workers = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    reports = [json.loads(o[0]) for o in outs]
    study = open_study(_settings(run, trials=5, storage=str(storage), study="shared"))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 5
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials if t.number > 0}
    assert len(pids) == 2  # both workers ran trials
    starts = [json.loads(line)["trial"] for line in (run / "search" / "progress.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "trial_start"]
    assert len(starts) == len(set(starts))  # no trial trained twice
    assert all(r["best"] is None for r in reports)  # joining workers leave the confirmation to the search's owner


def test_a_finished_trial_becomes_a_variant_of_the_run(tiny_search_run):
    run = tiny_search_run
    code, report, _ = _cli("search", "--run", str(run), "--trials", "2", "--add-winner")
    assert code == 0
    name = report["variant"]
    info = RunFolder.open(run).variant(name)
    assert info.finished and info.has_adapter and info.record()["search_trial"] == report["best"]["number"]
    config = json.loads((info.folder / "adapter_config.json").read_text())
    assert config["r"] >= 1
    code, again, _ = _cli("search", "--run", str(run), "--make-variant", "0")
    assert code == 0 and again["variant"] != name
    from evals.adapter_set import load_adapter_set, release

    base = load_model(RunFolder.open(run).model, "fp32")
    release(load_adapter_set(base, RunFolder.open(run).adapters()))


@pytest.mark.parametrize("argv, says", [
    (["--set", "rank=9:3"], "search setting rank=9:3: an empty range"),
    (["--set", "temperature=0.3"], "unknown search setting 'temperature'"),
    (["--budget", "0"], "--budget '0': must be more than 0"),
    (["--trials", "0"], "--trials 0: must be at least 1"),
    ([], "give a budget"),
])
def test_a_bad_search_is_refused_in_one_line(tiny_search_run, argv, says):
    extra = [] if argv and argv[0] in ("--budget", "--trials") else ["--trials", "1"]
    code, _, err = _cli("search", "--run", str(tiny_search_run), *argv, *(extra if argv else []))
    assert code == 2
    line = err.strip()
    assert "\n" not in line and says in line and "Traceback" not in line


def test_make_variant_refuses_a_trial_that_did_not_finish(tiny_search_run):
    code, _, err = _cli("search", "--run", str(tiny_search_run), "--make-variant", "7")
    assert code == 2 and "trial 7: not in this search" in err


def test_a_model_being_trained_answers_through_its_active_adapter_as_peft_routes_it():
    import torch
    from peft import LoraConfig, get_peft_model

    from adapters.base.tokenize import encode_prompt
    from evals.adapter_set import AdapterSet
    from evals.answers import greedy_ids
    from tests.conftest import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    model = get_peft_model(tiny_causal_lm("llama", seed=3), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a trained-looking adapter: answers differ from the base
    model.eval()
    live = AdapterSet(model=model, tokenizer=tok, device="cpu", ids={"trial": "default"})
    ids = [encode_prompt(tok, [{"role": "user", "content": f"w{i} w{i + 3} ?"}]) for i in range(5)]
    with torch.no_grad():
        active = greedy_ids(live, ids, ["default"] * 5, set(), 6, 8, router="active")
        routed = greedy_ids(live, ids, ["default"] * 5, set(), 6, 8, router="peft")
        base = greedy_ids(live, ids, ["__base__"] * 5, set(), 6, 8, router="peft")
    assert active == routed and active != base
