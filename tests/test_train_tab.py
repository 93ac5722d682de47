"""The Train tab's controls, called as handlers (no server): every hyperparameter of the CLI, the
auto schedule's preview, sweep files, and the session's earlier runs (continue, resume, copy)."""

from __future__ import annotations

import json
import re
import time

import pytest

from adapters.errors import LoraEqError
from adapters.limits import Limits
from adapters.shape.hyperparams import FIELDS, form_from_hyper, hyper_from_form
from adapters.shape.variants import Hyper
from adapters.train.runfolder import RunFolder
from loraeq.main import main
from playground import tab_data, tab_train, workspace
from playground.app import make_shared
from playground.sessions import Session


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(variants=3))


@pytest.fixture
def state(shared):
    state = Session()
    tab_data.validate(shared, None, "autumn-voice.jsonl", "auto", "", 64, state)
    return state


def _wait(shared, run, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while shared.jobs.get(str(run)).state in ("queued", "running"):
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(0.3)


def test_the_form_gives_every_hyperparameter_checked_and_back():
    limits = Limits()
    form = {"rank": "8", "learning_rate": "auto", "epochs": " 3 ", "max_steps": "", "alpha": 32, "batch_size": 4,
            "grad_accum": 2, "max_length": 256, "dropout": 0.1, "warmup_ratio": 0.05, "weight_decay": 0.01,
            "save_steps": 10, "seed": 7, "early_stopping": True}
    hyper = hyper_from_form(form, limits)
    assert hyper == Hyper(rank=8, learning_rate=None, epochs=3.0, max_steps=None, alpha=32.0, batch_size=4,
                          grad_accum=2, max_length=256, dropout=0.1, warmup_ratio=0.05, weight_decay=0.01,
                          save_steps=10, seed=7, early_stopping=True)
    back = form_from_hyper(hyper)
    assert back["learning_rate"] == "auto" and back["rank"] == "8" and back["max_steps"] == "auto"
    assert hyper_from_form(back, limits) == hyper  # the round trip a copy of settings makes
    assert {f.name for f in FIELDS} | {"early_stopping"} == set(Hyper.__dataclass_fields__)
    for bad, message in [({"dropout": 1.5}, "dropout=1.5: over the limit of 0.99"),
                         ({"grad_accum": 0}, "gradient accumulation=0: must be at least 1"),
                         ({"epochs": "51"}, "epochs=51: over the limit of 50"),
                         ({"alpha": "x"}, "alpha='x': not a number"),
                         ({"early_stopping": "yes"}, "early stopping='yes'"),
                         ({"lora_r": 4}, "unknown hyperparameter 'lora_r'")]:
        with pytest.raises(LoraEqError, match=message):
            hyper_from_form(bad, limits)


def test_every_field_reaches_the_variant_and_the_list_shows_the_auto_schedule(shared, state):
    more = dict(zip(tab_train.MORE, ["auto", 8, 2, 128, 0.0, 0.1, 0.01, 5, 3, True]))
    frame, _, state = tab_train.add_variant(shared, "v", "auto", "auto", "auto", 4, state, *more.values())
    hyper = state.variants[0]["hyper"]
    assert (hyper["alpha"], hyper["grad_accum"], hyper["max_length"], hyper["dropout"], hyper["warmup_ratio"],
            hyper["weight_decay"], hyper["save_steps"], hyper["seed"], hyper["early_stopping"]) == \
           (8.0, 2, 128, 0.0, 0.1, 0.01, 5, 3, True)
    row = frame.iloc[0]
    # 270 training rows, 4 x 2 per step: 34 steps an epoch; a dozen passes would pass 300 steps, so 8
    assert row["schedule"] == "auto: 8 epochs = 272 steps, lr 0.002, rank 16, because 270 training rows"
    epochs, steps = re.search(r"(\d+) epochs? = (\d+) steps", row["schedule"]).groups()
    assert row["steps"] == f"{steps} ({epochs} epoch{'' if epochs == '1' else 's'}, auto)"  # listed first
    assert row["grad_accum"] == 2 and row["alpha"] == 8.0
    with pytest.raises(LoraEqError, match="warmup ratio=1: over the limit"):
        tab_train.add_variant(shared, "w", 4, 1e-3, 2, 4, state, "auto", 16, 1, 64, 0.05, 1)


def test_a_sweep_file_adds_its_variants_as_the_cli_reads_them(shared, state, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("defaults: {max_steps: 2, rank: 4, alpha: 8}\n"
                     "variants:\n  - {name: attn, equalizer: attention}\n"
                     "  - {name: late, equalizer: late, hyper: {rank: 2, grad_accum: 2}}\n")
    frame, state = tab_train.add_sweep(shared, str(sweep), state)
    assert list(frame["name"]) == ["attn", "late"] and list(frame["equalizer"]) == ["attention", "late"]
    assert state.variants[1]["hyper"]["rank"] == 2 and state.variants[1]["hyper"]["alpha"] == 8
    with pytest.raises(LoraEqError, match="3 variants is the limit for one run"):
        tab_train.add_sweep(shared, str(sweep), state)  # 2 + 2 > 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "hyper": {"rank": 100000}}]))
    with pytest.raises(LoraEqError, match="rank=100,000: over the limit of 512"):
        tab_train.add_sweep(shared, str(bad), Session(id=state.id, data=state.data, data_rows=state.data_rows))
    (tmp_path / "sweep.txt").write_text("x")
    with pytest.raises(LoraEqError, match="ends in .yaml"):
        tab_train.add_sweep(shared, str(tmp_path / "sweep.txt"), state)
    tab_train.start_training(shared, state)  # the file's preset equalizers resolve for the checks
    _wait(shared, shared.run_path(state))
    assert [v.status() for v in RunFolder.open(shared.run_path(state)).variants] == ["done", "done"]


def test_earlier_runs_continue_resume_and_copy(shared, state):
    tab_train.add_variant(shared, "first", 4, 1e-3, 2, 4, state, "auto", 8, 1, 64, 0.0, 0.0, 0.0, 25, 0, False)
    tab_train.start_training(shared, state)
    run = shared.run_path(state)
    tab_train.add_variant(shared, "second", 2, 1e-3, 2, 2, state)
    with pytest.raises(LoraEqError, match="one training at a time per user"):
        tab_train.continue_run(shared, run.name, state)
    _wait(shared, run)
    tab_train.clear_variants(state)

    assert tab_train.earlier_runs(shared, state).choices == [(run.name, run.name)]
    _, variants, state = tab_train.open_run(shared, run.name, state)
    assert variants.choices == [("first", "first")]
    copied = tab_train.copy_variant(shared, run.name, "first", state)
    form = dict(zip(["name", *tab_train.FIRST, *tab_train.MORE], copied))
    assert (form["name"], form["rank"], form["learning_rate"], form["max_steps"], form["alpha"], form["dropout"]) == \
           ("first-copy", "4", "0.001", "2", 8.0, 0.0)

    tab_train.add_variant(shared, *copied[:5], state, *copied[5:5 + len(tab_train.MORE)])
    tab_train.continue_run(shared, run.name, state)  # the listed variant joins the earlier run
    _wait(shared, run)
    folder = RunFolder.open(run)
    assert [(v.name, v.status()) for v in folder.variants] == [("first", "done"), ("first-copy", "done")]
    assert folder.variants[1].config["hyper"]["alpha"] == 8.0 and state.variants == []
    with pytest.raises(LoraEqError, match="every variant is finished"):
        tab_train.continue_run(shared, run.name, state)
    with pytest.raises(LoraEqError, match="not a run name"):
        tab_train.continue_run(shared, "../other", state)


def test_an_unfinished_run_resumes(shared, state):
    """A run whose job never ran (the server restarted): Continue trains its queued variants."""
    from adapters.shape.variants import Variant
    from adapters.train.dataspec import start_run

    name, run = shared.area.new_run(state)
    start_run(run, workspace.session_spec(shared, state), [Variant("later", "uniform", Hyper(rank=2, max_steps=2))],
              model=shared.default_model, precision="fp32")
    assert RunFolder.open(run).variants[0].status() == "queued"
    tab_train.continue_run(shared, name, state)
    _wait(shared, run)
    assert RunFolder.open(run).variants[0].status() == "done" and state.run == name


def test_the_cli_sets_the_same_hyperparameters(tiny_model_dir, cache_home, tmp_path):
    out = tmp_path / "run"
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}", "completion": f"w{i + 2}"}) + "\n"
                            for i in range(30)))
    code = main(["train", "--model", str(tiny_model_dir), "--precision", "fp32", "--data", str(data), "--preset",
                 "uniform", "--out", str(out), "--max-steps", "1", "--rank", "2", "--alpha", "4", "--dropout", "0",
                 "--warmup-ratio", "0.1", "--grad-accum", "2", "--weight-decay", "0.01", "--json"])
    assert code == 0
    hyper = RunFolder.open(out).variants[0].config["hyper"]
    assert (hyper["alpha"], hyper["dropout"], hyper["warmup_ratio"], hyper["grad_accum"], hyper["weight_decay"]) == \
           (4.0, 0.0, 0.1, 2, 0.01)
    # more variants for the same run: added, then trained with whatever it has not finished
    assert main(["train", "--resume", str(out), "--preset", "late", "--preset", "uniform", "--max-steps", "1",
                 "--rank", "2", "--json"]) == 0
    folder = RunFolder.open(out)
    assert [(v.name, v.status()) for v in folder.variants] == [("uniform", "done"), ("late", "done"),
                                                              ("uniform-2", "done")]


def test_a_reload_restores_the_data_the_grid_the_variants_and_the_run(shared, state):
    """What the page does on a reload: a fresh Session, the browser's signed token, `restore`, then
    each tab's `restore_view`."""
    from types import SimpleNamespace

    from gradio.utils import deep_hash

    from playground import app

    tab_train.set_cell(shared, 0, "q_proj", 0.0, state)
    tab_data.split_view(shared, "0.2", "none", state)
    before = deep_hash(state)  # what Gradio compares to fire `session.change`, which keeps the work
    tab_train.add_variant(shared, "kept", 2, 1e-3, 2, 4, state)
    assert deep_hash(state) != before
    tab_train.start_training(shared, state)
    saved = app.remember(shared, state)  # what the page keeps (it runs on every change of the session)

    fresh = Session()
    fresh, _ = app.restore(shared, saved, fresh, SimpleNamespace(username=None))
    assert (fresh.id, fresh.run, fresh.variants, fresh.equalizer) == (state.id, state.run, state.variants,
                                                                       state.equalizer)
    assert fresh.data["heldout"] == 0.2 and fresh.data_rows == state.data_rows
    image, grid, variants, progress, _ = tab_train.restore_view(shared, fresh)
    assert grid.iloc[0]["q_proj"] == 0 and list(variants["name"]) == ["kept"]
    assert f"Run **{state.run}**" in progress and "**kept**" in progress
    line, split, preview = tab_data.restore_view(shared, fresh)
    assert "autumn-voice.jsonl" in line and "0.2 of the rows, as set" in split and len(preview) > 0
    _wait(shared, shared.run_path(state))

    forged = saved["token"][:-1] + ("1" if saved["token"].endswith("0") else "0")
    stranger, _ = app.restore(shared, {"token": forged}, Session(), SimpleNamespace(username=None))
    assert stranger.id != state.id and stranger.variants == [] and stranger.run is None  # a forged token: nothing


def test_the_forms_defaults_make_the_variant_loraeq_train_makes_with_no_flags(shared, state):
    """With no flags and an untouched form, the web app and the CLI train the same variant: the
    auto schedule on the uniform grid (what `loraeq train --data F --out R` trains)."""
    from adapters.shape.equalizer import Equalizer
    from loraeq.main import build_parser
    from loraeq.train import _variants_from_args

    defaults = form_from_hyper(Hyper())
    more = [defaults[n] for n in tab_train.MORE]
    tab_train.add_variant(shared, "uniform", *(defaults[n] for n in tab_train.FIRST), state, *more)
    web = state.variants[0]
    (cli,) = _variants_from_args(build_parser().parse_args(["train", "--data", "x.jsonl", "--out", "r"]))
    assert Hyper(**web["hyper"]) == cli.hyper == Hyper() and Hyper().is_auto
    eq = Equalizer.from_json(web["equalizer"])
    assert cli.equalizer == "uniform" and {v for row in eq.strengths for v in row} == {1.0}
