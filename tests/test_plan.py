"""What a variant will be before it trains (adapters/train/plan.py): its size counted from the compiled
LoraConfig matches what PEFT builds, a grid far from the uniform preset's size is flagged, and the
schedule is the auto schedule's and the Trainer's."""

from __future__ import annotations

import pytest

from adapters.shape.equalizer import Equalizer, compile_lora_config, preset
from adapters.shape.variants import Hyper, Variant
from adapters.train.plan import adapter_size, plan_variant
from adapters.train.training import planned_steps
from tests.conftest import tiny_causal_lm


@pytest.fixture
def base(tiny_model_dir, cache_home):
    from adapters.base.loading import load_model

    return load_model(str(tiny_model_dir), "fp32")


def _peft_trainable(base, eq, rank):
    from peft import get_peft_model

    from adapters.base.analysis import tuning_map

    config = compile_lora_config(eq, tuning_map(base.model), rank=rank, alpha=16)
    model = get_peft_model(tiny_causal_lm("llama"), config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_the_size_is_what_peft_builds_and_a_far_grid_is_flagged(base):
    from adapters.base.analysis import tuning_map
    from adapters.base.bands import layer_bands

    tmap = tuning_map(base.model)
    flat = preset("uniform", tmap, layer_bands(tmap.layers, 2))
    thin = Equalizer(flat.roles, flat.bands, [[0.25 if r != "q_proj" else 0.0 for r in flat.roles]] * len(flat.bands))
    for eq in (flat, thin):
        size = adapter_size(compile_lora_config(eq, tmap, rank=8, alpha=16), tmap)
        assert size.params == _peft_trainable(base, eq, 8)
    plan = plan_variant(Variant("thin", thin.to_json(), Hyper(rank=8, max_steps=5)), base, rows=40, bands=2)
    assert plan.size.total_rank == 2 * 6 * 2 and plan.uniform.total_rank == 8 * 7 * 2  # 2 layers, 6 of 7 roles at 2
    assert plan.size_ratio < 0.5 and "uniform preset's size" in plan.size_warning
    assert plan_variant(Variant("u", "uniform", Hyper(rank=8, max_steps=5)), base, 40, 2).size_warning is None


def test_the_schedule_is_the_auto_schedules_and_the_time_needs_a_measured_speed(base):
    auto = Variant("auto", "uniform", Hyper(batch_size=4))
    plan = plan_variant(auto, base, rows=40, bands=2)
    scheduled, reason = auto.scheduled(40)
    assert (plan.learning_rate, plan.rank, plan.reason) == (scheduled.hyper.learning_rate, scheduled.hyper.rank, reason)
    assert plan.steps == planned_steps(scheduled.hyper, 40) and set(plan.auto) == {"steps", "learning_rate", "rank"}
    assert plan.seconds is None
    timed = plan_variant(Variant("t", "uniform", Hyper(rank=4, learning_rate=1e-3, max_steps=10, batch_size=4)),
                         base, rows=40, bands=2, examples_per_s=8.0)
    assert timed.auto == () and timed.epochs is None and timed.seconds == pytest.approx(10 * 4 / 8.0)
