"""Votes in SQLite (WAL) inside a run folder: concurrent writers, restarts, Wilson intervals, CSV."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading

import pytest

from adapters.errors import LoraEqError
from evals.votes import VoteStore, config_fingerprint, wilson_interval


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with two finished variants (only the files votes read)."""
    run = tmp_path / "run"
    for name in ("uniform", "attention"):
        folder = run / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": name}))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        (folder / "variant.json").write_text(json.dumps({"name": name, "base": {"fingerprint": "basefp"}}))
        (folder / "metrics.json").write_text(json.dumps({"status": "done"}))
    entries = [{"name": n, "folder": n, "config": {}} for n in ("uniform", "attention")]
    plan = {"model": None, "precision": "nf4", "variants": entries}
    (run / "run.json").write_text(json.dumps(plan))
    return run


def test_votes_from_8_threads_at_once_are_all_stored_and_survive_a_restart(run_dir):
    store = VoteStore(run_dir)
    assert store.journal_mode() == "wal"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def vote(t: int) -> None:
        try:
            barrier.wait()
            for i in range(15):
                store.cast(f"prompt {i}", ["uniform", "attention"][t % 2], "pass" if (t + i) % 3 else "fail",
                           settings={"temperature": 0.0, "thread": t}, note=f"t{t} i{i}", similarity_base=0.5)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=vote, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    del store  # "restart": a new store object reads the same file
    again = VoteStore(run_dir)
    votes = again.votes()
    assert len(votes) == 8 * 15
    assert {(v.settings["thread"], v.note) for v in votes} == {(t, f"t{t} i{i}") for t in range(8) for i in range(15)}
    expected_passes = sum(1 for t in range(8) for i in range(15) if (t + i) % 3)
    assert sum(s.passes for s in again.leaderboard()) == expected_passes
    # And plain sqlite3 sees them too (the data is in the file, not in a cache of ours).
    with sqlite3.connect(run_dir / "votes.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 120


def test_wilson_interval_matches_a_hand_worked_value_and_scipy():
    # 8 passes of 10, z = 1.96: center (0.8 + 0.19208) / 1.38416, half 1.96 * sqrt(0.025604) / 1.38416.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and 0 < high < 0.5
    stats = pytest.importorskip("scipy.stats")
    for passes, n in [(0, 1), (1, 1), (3, 7), (17, 40), (99, 100), (250, 1000)]:
        ci = stats.binomtest(passes, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(passes, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_leaderboard_ranks_by_the_lower_wilson_bound_with_mean_similarity(run_dir):
    store = VoteStore(run_dir)
    for verdict, sim in [("pass", 0.9), ("pass", 0.8), ("fail", 0.4)]:
        store.cast("p", "uniform", verdict, similarity_reference=sim, similarity_base=0.5)
    store.cast("p", "attention", "pass", similarity_reference=0.2)  # 1 of 1: higher rate, fewer votes
    for i in range(20):
        store.cast(f"q{i}", "base", "pass" if i < 15 else "fail")
    board = store.leaderboard()
    assert [s.variant for s in board] == ["base", "uniform", "attention"]
    uniform = board[1]
    assert (uniform.votes, uniform.passes, uniform.fails) == (3, 2, 1)
    assert uniform.pass_rate == pytest.approx(2 / 3)
    assert (uniform.wilson_low, uniform.wilson_high) == pytest.approx(wilson_interval(2, 3))
    assert uniform.mean_similarity_reference == pytest.approx(0.7)
    assert uniform.mean_similarity_base == pytest.approx(0.5)
    assert board[2].pass_rate == 1.0 and board[2].mean_similarity_base is None
    assert board[0].fingerprint == "base-basefp"


def test_a_voter_changes_their_vote_and_anonymous_votes_add_up(run_dir):
    store = VoteStore(run_dir)
    first = store.cast("p", "uniform", "fail", voter="ana", settings={"t": 0})
    second = store.cast("p", "uniform", "pass", voter="ana", settings={"t": 0}, note="on reflection")
    other_settings = store.cast("p", "uniform", "fail", voter="ana", settings={"t": 1})
    assert first == second != other_settings
    store.cast("p", "uniform", "fail")
    store.cast("p", "uniform", "fail")
    votes = store.votes("uniform")
    assert [(v.voter, v.verdict) for v in votes] == [("ana", "pass"), ("ana", "fail"), (None, "fail"), (None, "fail")]
    assert votes[0].note == "on reflection"


def test_the_fingerprint_follows_the_variants_config(run_dir):
    store = VoteStore(run_dir)
    before = store.fingerprint("uniform")
    assert before == config_fingerprint(run_dir / "uniform") != store.fingerprint("attention")
    assert store.fingerprint("uniform@eq") == before  # a live-equalized column is its variant (the grid is in the settings)
    (run_dir / "uniform" / "variant.json").write_text(json.dumps({"name": "uniform", "hyper": {"rank": 16}}))
    assert store.fingerprint("uniform") != before  # retrained differently: its votes are kept apart
    store.cast("p", "uniform", "pass")
    assert store.votes()[0].fingerprint == store.fingerprint("uniform")


def test_csv_export_of_leaderboard_and_votes(run_dir, tmp_path):
    store = VoteStore(run_dir)
    store.cast("p, with a comma", "uniform", "pass", note='says "hi"\nand more', settings={"b": 1, "a": 2})
    store.cast("p", "attention", "fail")
    board = list(csv.DictReader(store.export_csv(tmp_path / "out" / "board.csv").open()))
    assert [r["variant"] for r in board] == ["uniform", "attention"]
    assert board[0]["votes"] == "1" and float(board[0]["pass_rate"]) == 1.0 and float(board[1]["wilson_high"]) > 0
    rows = list(csv.DictReader(store.export_csv(tmp_path / "votes.csv", table="votes").open()))
    assert rows[0]["prompt"] == "p, with a comma" and rows[0]["note"] == 'says "hi"\nand more'
    assert rows[0]["settings"] == '{"a":2,"b":1}' and rows[1]["verdict"] == "fail"
    with pytest.raises(LoraEqError, match="'everything'"):
        store.export_csv(tmp_path / "x.csv", table="everything")


def test_bad_votes_name_the_bad_value(run_dir, tmp_path):
    store = VoteStore(run_dir)
    with pytest.raises(LoraEqError, match="'maybe'"):
        store.cast("p", "uniform", "maybe")
    with pytest.raises(LoraEqError, match="'ghost'"):
        store.cast("p", "ghost", "pass")
    with pytest.raises(LoraEqError, match="similarity_base=1.5"):
        store.cast("p", "uniform", "pass", similarity_base=1.5)
    with pytest.raises(LoraEqError, match="prompt"):
        store.cast(" ", "uniform", "pass")
    with pytest.raises(LoraEqError, match="plain JSON"):
        store.cast("p", "uniform", "pass", settings={"x": object()})
    with pytest.raises(LoraEqError, match="no such run folder"):
        VoteStore(tmp_path / "missing")
    assert store.votes() == []


# ---- one key per answer -----------------------------------------------------------------------------

_OLD_SCHEMA = """
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, prompt TEXT NOT NULL, variant TEXT NOT NULL,
    settings TEXT NOT NULL, fingerprint TEXT NOT NULL, verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
    note TEXT NOT NULL DEFAULT '', similarity_reference REAL, similarity_base REAL, answer TEXT, voter TEXT);
CREATE UNIQUE INDEX one_vote_per_voter ON votes (voter, prompt, variant, settings, fingerprint);
CREATE INDEX votes_by_variant ON votes (variant, fingerprint);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
"""


def _old_database(run_dir, rows: list[tuple]) -> None:
    """votes.sqlite as the code before answer_settings wrote it (user_version 0)."""
    conn = sqlite3.connect(run_dir / "votes.sqlite")
    conn.executescript(_OLD_SCHEMA)
    conn.executemany("INSERT INTO votes (created, prompt, variant, settings, fingerprint, verdict, voter)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)", [(t, "p", v, json.dumps(s), "fp", verdict, voter)
                                                       for t, v, s, verdict, voter in rows])
    conn.commit()
    conn.close()


def _dump(run_dir) -> list[tuple]:
    conn = sqlite3.connect(run_dir / "votes.sqlite")
    try:
        return conn.execute("SELECT * FROM votes ORDER BY id").fetchall() + [conn.execute("PRAGMA user_version").fetchone()]
    finally:
        conn.close()


def test_a_vote_database_from_before_one_schema_opens_with_every_vote_under_one_key(run_dir):
    from adapters.train.runfolder import derived_seed
    from evals.votes import answer_settings

    greedy = {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0}
    sampled = {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9}
    grid = {"roles": ["q_proj"], "bands": [[0]], "strengths": [[0.5]]}
    # The web app keyed {sampling with the settings' seed, scales, reference}; the CLI
    # {sampling with the answer's seed only when sampling, system, scales}.
    web = lambda s, seed, scales=None, ref=None: {**s, "seed": seed, "scales": scales, "reference": ref}  # noqa: E731
    cli = lambda s, seed, scales=None: {**s, "seed": seed, "system": None, "scales": scales}  # noqa: E731
    rows = [
        (1.0, "uniform", web(greedy, 0, ref="w1 w2"), "pass", None),
        (2.0, "uniform", cli(greedy, None), "pass", None),
        (3.0, "uniform", web(sampled, 5), "fail", None),
        (4.0, "uniform", cli(sampled, derived_seed(5, "uniform")), "pass", None),
        (5.0, "uniform@eq", web(greedy, 7, grid), "fail", None),
        (6.0, "uniform@eq", cli(greedy, None, grid), "fail", None),
        (7.0, "attention", {"t": 0}, "pass", None),  # not an answer's settings: kept as it is
        (8.0, "attention", web(greedy, 0), "fail", "ana"),
        (9.0, "attention", cli(greedy, None), "pass", "ana"),  # ana's later vote on the same answer
    ]
    _old_database(run_dir, rows)
    store = VoteStore(run_dir)
    votes = store.votes()
    assert len(votes) == 8  # every anonymous vote; ana's two on one answer are her later one
    keys = {v.created: json.dumps(v.settings, sort_keys=True) for v in votes}
    canonical = lambda **kw: json.dumps(answer_settings(**kw), sort_keys=True)  # noqa: E731
    assert keys[1.0] == keys[2.0] == canonical(sampling=greedy)
    assert keys[3.0] == keys[4.0] == canonical(sampling=sampled, seed=derived_seed(5, "uniform"))
    assert keys[5.0] == keys[6.0] == canonical(sampling=greedy, live_eq=grid)
    assert keys[7.0] == '{"t": 0}' and 8.0 not in keys and keys[9.0] == keys[1.0]
    assert [(v.variant, v.verdict) for v in votes if v.voter == "ana"] == [("attention", "pass")]
    before = _dump(run_dir)
    assert before[-1] == (3,)
    VoteStore(run_dir)
    assert _dump(run_dir) == before  # opening again changes nothing


def test_answer_settings_keep_the_seed_only_when_sampling_and_need_it_then():
    from adapters.infer.decoding import Sampling
    from evals.votes import answer_settings

    greedy = answer_settings(Sampling(max_new_tokens=6, seed=3), seed=99, system="")
    assert greedy == {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "seed": None, "system": None,
                      "live_eq": None}
    assert answer_settings(Sampling(temperature=1, seed=3), seed=99)["seed"] == 99
    with pytest.raises(LoraEqError, match="seed"):
        answer_settings(Sampling(temperature=0.5), seed=None)
    with pytest.raises(LoraEqError, match="max_new_tokens"):
        answer_settings({"temperature": 0.0, "top_p": 1.0})


def test_a_vote_in_the_web_apps_former_settings_form_gets_the_one_key(run_dir):
    from adapters.train.runfolder import derived_seed
    from evals.votes import answer_settings

    store = VoteStore(run_dir)
    sampled = {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9}
    store.cast("p", "uniform", "fail", voter="ana", settings={**sampled, "seed": 5, "scales": None, "reference": "r"})
    store.cast("p", "uniform", "pass", voter="ana",
               settings=answer_settings(sampled, seed=derived_seed(5, "uniform")))
    assert [(v.verdict, v.settings["seed"]) for v in store.votes()] == [("pass", derived_seed(5, "uniform"))]
