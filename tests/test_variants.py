"""Variant configs, sweep files and safe folder names."""

from __future__ import annotations

import json

import pytest

from adapters.errors import LoraEqError
from adapters.variants import DataMix, Hyper, Variant, load_sweep, safe_name, sweep_from_presets


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
