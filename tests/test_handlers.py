"""The tabs' handlers called directly (no server): the session's data spec reaches every stage,
sizes are checked before work, and refusals are LoraEqErrors naming the value."""

from __future__ import annotations

import csv
import re
import time

import pytest

from adapters.errors import LoraEqError
from adapters.limits import Limits
from playground import tab_compare, tab_data, tab_train
from playground.app import make_shared
from playground.sessions import Session


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(variants=2))


def mapped_csv(path, rows: int = 24):
    """Rows whose columns are not ours: `ask` is the prompt, `reply` the completion."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ask", "reply"])
        for i in range(rows):
            writer.writerow([f"w{i} w{i + 1} ?", f"w{i + 2} w{i + 3}"])
    return path


def test_the_mapping_reaches_the_mix_the_suggestion_and_training(shared, tmp_path):
    state = Session()
    source = mapped_csv(tmp_path / "theirs.csv")
    with pytest.raises(LoraEqError):  # without the mapping the columns mean nothing to us
        tab_data.validate(shared, str(source), None, "auto", "", 64, state)
    assert state.data is None and not any(shared.area.uploads(state).iterdir())  # the refused copy is gone
    report, *_ = tab_data.validate(shared, str(source), None, "auto", "ask=prompt, reply=completion", 64, state)
    assert "valid **24**" in report and state.data["mapping"] == {"ask": "prompt", "reply": "completion"}
    mix = tab_data.preview_mix(shared, None, 50, state).value
    assert sum(row[mix["headers"].index("count")] for row in mix["data"]) == 50
    image, frame, note, state = tab_train.suggest(shared, state, progress=lambda *a, **k: None)
    assert "Suggested from" in note
    tab_train.add_variant(shared, "v", 4, 1e-3, 2, 4, state)
    tab_train.start_training(shared, state)
    run = shared.run_path(state)
    deadline = time.monotonic() + 120
    while shared.jobs.get(str(run)).state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "done" in tab_train.progress_markdown(shared, state)
    first = (run / "data" / "train.jsonl").read_text().splitlines()[0]
    assert '"role": "user"' in first and "?" in first and '"role": "assistant"' in first


def test_sizes_are_refused_before_any_work(shared):
    state = Session()
    tab_data.validate(shared, None, "autumn-voice.jsonl", "auto", "", 64, state)
    with pytest.raises(LoraEqError, match="stream size=1,000,000,000: over the limit of 100,000"):
        tab_data.preview_mix(shared, None, 10**9, state)
    with pytest.raises(LoraEqError, match="rank=100,000: over the limit of 512"):
        tab_train.add_variant(shared, "big", 100_000, 1e-3, 2, 4, state)
    with pytest.raises(LoraEqError, match="smaller dimension"):
        tab_train.add_variant(shared, "wide", 40, 1e-3, 2, 4, state)
    for value in (float("nan"), float("inf"), "eight", 2.5, -3):
        with pytest.raises(LoraEqError, match="rank"):
            tab_train.add_variant(shared, "odd", value, 1e-3, 2, 4, state)
    tab_train.add_variant(shared, "a", 4, 1e-3, 2, 4, state)
    frame, _, _ = tab_train.add_variant(shared, "b", None, None, None, 4, state)  # blank: the auto schedule
    auto = frame.iloc[1]
    assert auto["rank"] == "auto (16)" and auto["learning_rate"] == "auto (0.002)"
    epochs, steps = re.search(r"(\d+) epochs? = (\d+) steps", auto["schedule"]).groups()
    assert auto["steps"] == f"{steps} ({epochs} epoch{'' if epochs == '1' else 's'}, auto)"
    assert auto["schedule"] == "auto: 4 epochs = 272 steps, lr 0.002, rank 16, because 270 training rows"
    with pytest.raises(LoraEqError, match="2 variants is the limit"):
        tab_train.add_variant(shared, "c", 4, 1e-3, 2, 4, state)
    # Before any training or added adapter the base is a chat column like any other (no votes: no run).
    *_, frame = tab_compare.ask(shared, "hi", "", [], 0, 1, 8, 0, None, None, "", state)
    n = tab_compare.MAX_COLUMNS
    bots, buttons, columns = frame[:n], frame[2 * n:4 * n], frame[4 * n:5 * n]
    assert bots[0].label == "base" and [m["role"] for m in bots[0].value] == ["user", "assistant"]
    assert [c.visible for c in columns] == [True] + [False] * (n - 1)  # the base's column takes the width
    assert not any(b.visible for b in buttons)
    assert tab_compare.load_variants(shared, state)[0].info == tab_compare.NO_VARIANTS


def test_training_memory_over_the_worker_limit_is_refused(tiny_model_dir, cache_home, tmp_path):
    shared = make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"), limits=Limits(worker_bytes=1 << 20))
    state = Session()
    tab_data.validate(shared, None, "autumn-voice.jsonl", "auto", "", 64, state)
    tab_train.add_variant(shared, "v", 4, 1e-3, 2, 4, state)
    with pytest.raises(LoraEqError, match=r"training would need about .* GB.*the limit here is 0.0 GB"):
        tab_train.start_training(shared, state)
    assert shared.area.runs(state) == []  # nothing started, no run folder left behind
