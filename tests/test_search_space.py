"""The search space: ranges within the declarations, a user's fixed and narrowed settings, one-line
refusals, Optuna's draws inside the ranges, and shapes that are the presets' own grids."""

from __future__ import annotations

import pytest

from adapters.errors import LoraEqError
from adapters.shape.equalizer import PRESETS, preset
from adapters.shape.search_space import (
    DEFAULT_RANGES,
    SHAPE,
    SearchSpace,
    preset_point,
    shape_grid,
    variant_for,
)
from adapters.shape.variants import Hyper, check_value

ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BANDS = [list(range(i, i + 5)) for i in range(0, 30, 5)]  # SmolLM2's 30 layers in 6 bands


def test_every_default_range_lies_within_its_declaration():
    for name, r in DEFAULT_RANGES.items():
        if name in SHAPE:
            assert 0 <= r.low < r.high
            continue
        for end in (r.low, r.high):
            check_value(name, int(end) if r.whole else end)  # raises if outside the declared bounds
    assert SearchSpace.default().searched == list(DEFAULT_RANGES)


def test_a_user_fixes_and_narrows_settings():
    space = SearchSpace.parse(["rank=16", "learning_rate=2e-4:2e-3", "attention=0"])
    assert space.ranges["rank"].fixed and space.ranges["rank"].low == 16
    assert (space.ranges["learning_rate"].low, space.ranges["learning_rate"].high) == (2e-4, 2e-3)
    assert space.ranges["learning_rate"].log  # the scale stays the declared one
    assert "rank" not in space.searched and "attention" not in space.searched and "mlp" in space.searched
    same = SearchSpace.parse({"rank": 16, "learning_rate": [2e-4, 2e-3], "attention": 0})
    assert same.to_json() == space.to_json()
    assert space.to_json()["learning_rate"] == "0.0002:0.002" and space.to_json()["rank"] == "16"


@pytest.mark.parametrize("setting, named", [
    ("ranks=8", "unknown search setting 'ranks'"),
    ("learning_rate=1e-3:1e-4", "an empty range"),
    ("rank=0:8", "search setting rank=0:8"),
    ("rank=4.5:8", "must be whole numbers"),
    ("dropout=0:1.5", "search setting dropout=0:1.5"),
    ("epochs=abc", "not a number"),
    ("alpha=nan", "not a finite number"),
    ("mlp=0:3", "an equalizer strength lies in 0:2"),
    ("rank", "write name=value or name=low:high"),
])
def test_a_setting_that_cannot_be_searched_is_refused_in_one_line(setting, named):
    with pytest.raises(LoraEqError, match=named.replace("(", r"\(").replace(".", r"\.")) as e:
        SearchSpace.parse([setting])
    assert "\n" not in str(e.value)


def test_optuna_draws_stay_in_the_ranges_and_fixed_settings_stay_fixed():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.parse(["rank=8:32", "dropout=0.1", "depth_late=0.5:1"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    points = []

    def objective(trial):
        points.append(space.sample(trial))
        return 0.0

    study.optimize(objective, n_trials=25)
    for p in points:
        assert 8 <= p["rank"] <= 32 and isinstance(p["rank"], int)
        assert p["dropout"] == 0.1 and 0.5 <= p["depth_late"] <= 1
        assert 1e-4 <= p["learning_rate"] <= 5e-3
    assert set(study.trials[0].params) == set(space.searched)  # Optuna sees what varies, nothing else
    assert len({p["rank"] for p in points}) > 5


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_is_a_point_of_the_space(name):
    grid = shape_grid(preset_point(name), ROLES, BANDS)
    # The presets' depth curves are drawn over the bands; the space's over thirds of the depth, so
    # they agree at the first and last band and where a preset is flat.
    want = preset(name, ROLES, BANDS)
    assert grid.roles == want.roles and grid.bands == want.bands
    for band in (0, len(BANDS) - 1):
        assert grid.strengths[band] == pytest.approx(want.strengths[band], abs=0.21)
    if name in ("uniform", "attention", "mlp"):
        assert grid.strengths == want.strengths


def test_a_point_becomes_a_variant_over_the_users_other_settings():
    point = {**preset_point("uniform"), "attention": 0.0, "depth_late": 2.0, "rank": 12, "learning_rate": 1e-3,
             "epochs": 6.0, "alpha": 24.0, "dropout": 0.0}
    v = variant_for("trial-3", point, ROLES, BANDS, base=Hyper(batch_size=4, max_steps=50, seed=7))
    h = v.hyper
    assert (h.rank, h.learning_rate, h.epochs, h.alpha, h.dropout) == (12, 1e-3, 6.0, 24.0, 0.0)
    assert (h.batch_size, h.seed, h.max_steps) == (4, 7, None)  # the point's epochs decide the length
    strengths = v.equalizer["strengths"]
    assert strengths[0] == [0, 0, 0, 0, 1, 1, 1] and strengths[-1] == [0, 0, 0, 0, 2, 2, 2]
    with pytest.raises(LoraEqError, match="every place to 0"):
        shape_grid({**point, "mlp": 0.0}, ROLES, BANDS)
    with pytest.raises(LoraEqError, match="preset 'loud'"):
        preset_point("loud")
