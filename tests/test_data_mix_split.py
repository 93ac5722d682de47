"""The Dolly sample, mixture weights and quotas (every 1000-window), held-out splits, sample datasets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.data import Example, build_mixture, content_hash, load_dataset, split_heldout
from adapters.data.mixture import allocate_places, target_shares
from adapters.data.samples import write_samples
from adapters.errors import LoraEqError

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
DOLLY_COUNTS = {
    "open_qa": 43,
    "classification": 23,
    "general_qa": 23,
    "brainstorming": 19,
    "closed_qa": 17,
    "information_extraction": 15,
    "summarization": 14,
    "creative_writing": 6,
}


@pytest.fixture(scope="module")
def dolly():
    return load_dataset(DATASETS / "dolly-15k-sample.jsonl")


def _window_counts(stream: list[Example], category: str, window: int = 1000) -> list[int]:
    """The count of `category` in every window of `window` consecutive examples (computed plainly)."""
    hits = [e.category == category for e in stream]
    counts, current = [], sum(hits[:window])
    counts.append(current)
    for i in range(window, len(hits)):
        current += hits[i] - hits[i - window]
        counts.append(current)
    return counts


def _examples(sizes: dict[str, int]) -> list[Example]:
    out = []
    for category, n in sizes.items():
        for i in range(n):
            messages = [{"role": "user", "content": f"{category} {i}"}, {"role": "assistant", "content": "ok"}]
            out.append(Example(messages, category, f"{category}-{i}", "t", len(out) + 1, content_hash(messages)))
    return out


# ---- Dolly ---------------------------------------------------------------------------------------


def test_dolly_sample_is_160_valid_rows_in_8_categories(dolly):
    assert (dolly.format, dolly.rows_in, dolly.rows_valid, dolly.rows_rejected) == ("dolly", 160, 160, 0)
    assert dolly.categories() == DOLLY_COUNTS


def test_dolly_quota_holds_in_every_1000_window(dolly):
    mix = build_mixture(dolly, quotas={"creative_writing": 100}, size=5000, seed=0)
    assert len(mix.stream) == 5000
    windows = _window_counts(mix.stream, "creative_writing")
    assert len(windows) == 4001 and min(windows) >= 100
    cw = next(c for c in mix.categories if c.name == "creative_writing")
    assert cw.oversampled and cw.count == 500 and cw.min_window == min(windows) and cw.rows == 6
    assert any(n.startswith("creative_writing: 6 rows for 500 places: oversampled") for n in mix.notes)
    # Only the 6 creative_writing rows are used for it, each about equally often.
    uses = Counter(e.id for e in mix.stream if e.category == "creative_writing")
    assert len(uses) == 6 and max(uses.values()) - min(uses.values()) <= 1
    assert mix.quotas_hold()


def test_realized_mix_follows_the_natural_shares_without_weights(dolly):
    mix = build_mixture(dolly, size=2000, seed=3)
    realized = Counter(e.category for e in mix.stream)
    for name, n in DOLLY_COUNTS.items():
        assert abs(realized[name] / 2000 - n / 160) < 0.002, name
    assert {c.name: c.count for c in mix.categories} == dict(realized)


def test_same_seed_same_stream_other_seed_other_stream(dolly):
    one = [e.id for e in build_mixture(dolly, quotas={"summarization": 200}, size=3000, seed=7).stream]
    two = [e.id for e in build_mixture(dolly, quotas={"summarization": 200}, size=3000, seed=7).stream]
    other = [e.id for e in build_mixture(dolly, quotas={"summarization": 200}, size=3000, seed=8).stream]
    assert one == two and one != other


def test_partial_weights_are_proportions_and_the_rest_share_naturally(dolly):
    mix = build_mixture(dolly, weights={"open_qa": 0.5, "classification": 0}, size=4000, seed=1)
    realized = Counter(e.category for e in mix.stream)
    assert realized["classification"] == 0 and abs(realized["open_qa"] / 4000 - 0.5) < 0.002
    rest = 160 - 43 - 23
    assert abs(realized["general_qa"] / 4000 - 0.5 * 23 / rest) < 0.002
    assert any("classification: weight 0" in n for n in mix.notes)


def test_rows_are_all_used_before_any_repeats():
    examples = _examples({"a": 30, "b": 10})
    mix = build_mixture(examples, size=40, seed=0, window=40)
    assert Counter(e.id for e in mix.stream) == Counter(e.id for e in examples)  # each row exactly once
    assert not any(c.oversampled for c in mix.categories)


def test_row_weight_sets_how_often_a_row_is_drawn():
    examples = _examples({"a": 2})
    examples[0].weight = 3.0
    mix = build_mixture(examples, size=400, seed=0, window=100)
    uses = Counter(e.id for e in mix.stream)
    assert uses == {"a-0": 300, "a-1": 100}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quotas": {"poetry": 10}}, "quota for 'poetry': no such category"),
        ({"weights": {"open_qa": 0.9, "summarization": 0.3}}, "weights add up to 1.2"),
        ({"quotas": {"open_qa": 600, "closed_qa": 500}}, "quotas add up to 1100 per 1000"),
        ({"quotas": {"open_qa": -1}}, "quota -1 for 'open_qa'"),
        ({"weights": {"open_qa": float("nan")}}, "weight nan for 'open_qa'"),
        ({"size": 0}, "size 0"),
    ],
)
def test_impossible_mixes_are_user_errors(dolly, kwargs, message):
    with pytest.raises(LoraEqError, match=message.replace("(", r"\(")):
        build_mixture(dolly, **kwargs)


def test_places_never_fall_below_a_quota():
    places = allocate_places(target_shares({"a": 990, "b": 5, "c": 5}, None), {"b": 250, "c": 1}, 1000)
    # b is raised to its quota; a and c share the other 750 by their shares (746.2 and 3.8), rounded.
    assert places == {"a": 746, "b": 250, "c": 4}


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 40), min_size=1, max_size=8),
    quota_share=st.lists(st.integers(0, 300), min_size=8, max_size=8),
    window=st.sampled_from([50, 100, 1000]),
    length=st.integers(1, 3000),
    seed=st.integers(0, 2**32),
)
def test_any_feasible_quotas_hold_in_every_window(sizes, quota_share, window, length, seed):
    names = sorted(sizes)
    quotas = {n: q * window // 1000 for n, q in zip(names, quota_share)}
    while sum(quotas.values()) > window:  # keep the quotas feasible
        biggest = max(quotas, key=quotas.get)
        quotas[biggest] //= 2
    mix = build_mixture(_examples(sizes), quotas=quotas, size=length, seed=seed, window=window)
    assert len(mix.stream) == length
    if length >= window:
        for name, q in quotas.items():
            assert min(_window_counts(mix.stream, name, window)) >= q, (name, q)
    assert set(Counter(e.category for e in mix.stream)) <= set(names)


# ---- held-out split ------------------------------------------------------------------------------


def test_split_is_stratified_seeded_and_disjoint(dolly):
    train, held = split_heldout(dolly, fraction=0.1, seed=0)
    assert train.rows_valid + held.rows_valid == 160
    for name, n in DOLLY_COUNTS.items():
        got = sum(e.category == name for e in held.examples)
        assert got == min(int(0.1 * n + 0.5), n - 1), name
    assert not {e.content_hash for e in train.examples} & {e.content_hash for e in held.examples}
    again = split_heldout(dolly, fraction=0.1, seed=0)
    other = split_heldout(dolly, fraction=0.1, seed=1)
    assert [e.id for e in again.heldout.examples] == [e.id for e in held.examples]
    assert [e.id for e in other.heldout.examples] != [e.id for e in held.examples]


def test_identical_content_never_straddles_the_split():
    examples = _examples({"a": 20})
    # Two rows with the same conversation (e.g. from two merged files) and different group values.
    twin = Example(examples[0].messages, "a", "twin", "t", 99, examples[0].content_hash, meta={"g": "other"})
    for e in examples:
        e.meta["g"] = e.id
    from adapters.data import Dataset

    ds = Dataset("x", "jsonl", "chat", examples + [twin])
    for seed in range(20):
        for group in (None, "g"):
            split = split_heldout(ds, fraction=0.5, seed=seed, group=group, mode="disjoint")
            sides = {e.id for e in split.train.examples}
            assert ("a-0" in sides) == ("twin" in sides)


def test_fictional_facts_paraphrase_split_holds_out_trained_facts():
    ds = load_dataset(DATASETS / "fictional-facts.jsonl")
    train, held = split_heldout(ds, fraction=0.2, seed=0, group="fact_id")
    trained = {e.meta["fact_id"] for e in train.examples}
    assert held.rows_valid == round(0.2 * ds.rows_valid)
    assert all(e.meta["fact_id"] in trained for e in held.examples)
    # Every held-out row asks a trained fact in new words, with the very answer trained on.
    answers = {e.meta["fact_id"]: e.messages[-1]["content"] for e in train.examples}
    questions = {e.messages[0]["content"] for e in train.examples}
    assert all(answers[e.meta["fact_id"]] == e.messages[-1]["content"] for e in held.examples)
    assert not any(e.messages[0]["content"] in questions for e in held.examples)
    assert len({e.meta["fact_id"] for e in held.examples}) == held.rows_valid  # spread: one per fact


def test_disjoint_group_split_holds_out_whole_groups():
    ds = load_dataset(DATASETS / "autumn-voice.jsonl")
    for fraction in (0.1, 0.25):
        train, held = split_heldout(ds, fraction=fraction, seed=2, group="task_id", mode="disjoint")
        assert abs(held.rows_valid - fraction * 320) <= 2.5  # tasks are 5 rows: as near as whole tasks get
        assert not {e.meta["task_id"] for e in train.examples} & {e.meta["task_id"] for e in held.examples}
        assert len({e.category for e in held.examples}) == held.rows_valid // 5  # spread over topics


def test_bad_fraction_is_a_user_error(dolly):
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(LoraEqError, match="fraction"):
            split_heldout(dolly, fraction=bad)


# ---- sample datasets -----------------------------------------------------------------------------


def test_generator_reproduces_the_committed_samples(tmp_path):
    written = write_samples(tmp_path)
    for name, path in written.items():
        assert path.read_bytes() == (DATASETS / name).read_bytes(), name


def test_autumn_voice_is_distinct_autumnal_chat():
    ds = load_dataset(DATASETS / "autumn-voice.jsonl")
    assert ds.format == "chat" and ds.rows_valid >= 300 and ds.rows_rejected == 0
    autumn = ("autumn", "leaves", "leaf", "harvest", "amber", "crisp", "woodsmoke", "cider", "october", "maple")
    for e in ds.examples:
        answer = e.messages[-1]["content"].lower()
        assert sum(word in answer for word in autumn) >= 2, answer
    assert len({e.messages[0]["content"] for e in ds.examples}) == ds.rows_valid
    assert len(ds.categories()) >= 8


def test_fictional_facts_shape_and_consistency():
    ds = load_dataset(DATASETS / "fictional-facts.jsonl")
    assert ds.format == "question_answer" and ds.rows_valid >= 300 and ds.rows_rejected == 0
    assert len(ds.categories()) >= 4
    by_fact: dict[str, list[Example]] = {}
    for e in ds.examples:
        by_fact.setdefault(e.meta["fact_id"], []).append(e)
    assert all(len(rows) >= 4 for rows in by_fact.values())
    for rows in by_fact.values():
        assert len({r.messages[-1]["content"] for r in rows}) == 1  # one answer text per fact
        assert len({r.messages[0]["content"] for r in rows}) == len(rows)  # asked differently each time
    lines = (DATASETS / "fictional-facts.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line)["fact_id"] for line in lines)
