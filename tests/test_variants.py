"""Variant configs, sweep files and safe folder names."""

from __future__ import annotations

import json

import pytest

from adapters.errors import LoraEqError
from adapters.shape.variants import DataMix, Hyper, Variant, load_sweep, safe_name, sweep_from_presets


def test_variant_round_trips_through_json():
    v = Variant("a", "attention", Hyper(rank=4, max_steps=10), DataMix(quotas={"x": 100}, seed=3))
    again = Variant.from_json(json.loads(json.dumps(v.to_json())))
    assert again == v and isinstance(again.hyper, Hyper) and isinstance(again.mix, DataMix)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"rank": 0}, "rank=0"),
        ({"learning_rate": -1}, "learning_rate=-1"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"max_steps": -2}, "max_steps=-2"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"rnak": 3}, "unknown key 'rnak'"),
    ],
)
def test_bad_hyperparameters_name_the_value(bad, message):
    with pytest.raises(LoraEqError, match=message):
        Variant.from_json({"name": "v", "hyper": bad})


def test_quotas_over_1000_are_refused():
    with pytest.raises(LoraEqError, match="more than 1000"):
        DataMix(quotas={"a": 600, "b": 500})


def test_yaml_sweep_with_defaults(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "defaults: {max_steps: 5, rank: 4}\n"
        "variants:\n"
        "  - {name: attn, equalizer: attention}\n"
        "  - {name: late, equalizer: late, hyper: {rank: 16}}\n"
    )
    a, b = load_sweep(path)
    assert (a.name, a.equalizer, a.hyper.max_steps, a.hyper.rank) == ("attn", "attention", 5, 4)
    assert (b.hyper.rank, b.hyper.max_steps) == (16, 5)


def test_json_sweep_list_and_errors(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps([{"name": "u"}]))
    assert [v.name for v in load_sweep(path)] == ["u"]
    path.write_text("{not json")
    with pytest.raises(LoraEqError, match="not valid JSON"):
        load_sweep(path)
    path.write_text("[]")
    with pytest.raises(LoraEqError, match="non-empty list"):
        load_sweep(path)


def test_presets_times_grid():
    variants = sweep_from_presets(["uniform", "mlp"], {"rank": [4, 8], "learning_rate": [1e-4]})
    assert [v.name for v in variants] == [
        "uniform-learning_rate0.0001-rank4", "uniform-learning_rate0.0001-rank8",
        "mlp-learning_rate0.0001-rank4", "mlp-learning_rate0.0001-rank8",
    ]
    assert variants[1].hyper.rank == 8 and variants[3].equalizer == "mlp"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "etc-passwd"), ("my variant!", "my-variant"), ("..", "variant"), ("data", "variant-data"),
     ("", "variant"), ("ok_name-1.2", "ok_name-1.2")],
)
def test_safe_names_cannot_escape_the_run_folder(name, expected):
    assert safe_name(name) == expected


def test_safe_names_do_not_collide():
    assert safe_name("A b", {"A-b", "a-b-2"}) == "A-b-3"


def test_the_auto_schedule_gives_a_small_set_a_dozen_passes_at_a_high_rate_and_a_large_one_one_pass():
    from adapters.shape.variants import AUTO_MAX_STEPS, auto_learning_rate, auto_schedule

    def chosen(rows, **given):
        hyper, reason = auto_schedule(Hyper(**given), rows)
        return hyper.epochs, hyper.learning_rate, hyper.rank, reason

    # 96 rows of facts, a quarter held out: 72 rows, 9 steps a pass, 12 passes.
    assert chosen(72) == (12.0, 2e-3, 16, "auto: 12 epochs = 108 steps, lr 0.002, rank 16, because 72 training rows")
    assert chosen(38)[0] == 16.0  # a tiny set: more passes, toward 100 steps
    assert chosen(225)[0] == 10.0 and 10 * 29 <= AUTO_MAX_STEPS  # a dozen passes would pass the step cap
    assert chosen(1000)[:2] == (2.0, 1e-3)  # between 500 and 5,000 rows both fall log-linearly
    assert chosen(20000)[:2] == (1.0, 2e-4)
    assert [auto_learning_rate(n) for n in (100, 500, 5000)] == [2e-3, 2e-3, 2e-4]
    # What the user set stays; only the rest is chosen.
    assert chosen(72, epochs=3.0)[:2] == (3.0, 2e-3)
    assert chosen(72, learning_rate=1e-4, rank=4)[:3] == (12.0, 1e-4, 4)
    hyper, reason = auto_schedule(Hyper(max_steps=40, learning_rate=1e-3, rank=8), 72)
    assert reason is None and hyper.epochs is None


def test_every_hyperparameter_has_a_flag_a_form_field_and_a_sweep_column_with_one_message(tmp_path):
    import argparse
    from dataclasses import fields

    from adapters.limits import Limits
    from adapters.shape.hyperparams import NAMES, hyper_from_form
    from adapters.shape.variants import hyper_params, load_sweep
    from loraeq.main import build_parser

    declared = [name for name, _ in hyper_params()]
    assert declared == [f.name for f in fields(Hyper)]  # every field declares how users give it
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    dests = {a.dest for a in train._actions}
    assert set(declared) <= dests and set(NAMES) == set(declared)
    # A sweep file takes every field (one variant setting each, the others at their defaults).
    sweep = tmp_path / "all.json"
    values = {"rank": 4, "learning_rate": 1e-3, "epochs": 2.0, "max_steps": 5, "alpha": 8.0, "batch_size": 2,
              "grad_accum": 2, "max_length": 64, "dropout": 0.1, "warmup_ratio": 0.1, "weight_decay": 0.01,
              "save_steps": 5, "seed": 3, "early_stopping": True}
    assert set(values) == set(declared)
    sweep.write_text(json.dumps([{"name": "all", "hyper": values}]))
    assert load_sweep(sweep)[0].hyper == Hyper(**values)
    # The same bad value, three ways in: the same message.
    for name, bad, message in (("rank", 100_000, "rank=100,000: over the limit of 512"),
                               ("learning_rate", 5, "learning rate=5: over the limit of 1"),
                               ("batch_size", 0, "batch size=0: must be at least 1"),
                               ("dropout", "lots", "dropout='lots': not a number")):
        sweep.write_text(json.dumps([{"name": "bad", "hyper": {name: bad}}]))
        with pytest.raises(LoraEqError) as from_sweep:
            load_sweep(sweep)
        with pytest.raises(LoraEqError) as from_form:
            hyper_from_form({name: str(bad)}, Limits())
        flag = dict(hyper_params())[name].option(name)
        if isinstance(bad, str):
            with pytest.raises(SystemExit):  # argparse refuses a word for a number flag itself
                build_parser().parse_args(["train", "--out", "x", flag, bad])
            continue
        args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), flag, str(bad)])
        from loraeq.train import hyper_values

        with pytest.raises(LoraEqError) as from_cli:
            hyper_values(args)
        assert str(from_cli.value) == str(from_form.value) == message, (from_cli.value, from_form.value)
        assert str(from_sweep.value).endswith(f"variant 1 'bad': {message}")
