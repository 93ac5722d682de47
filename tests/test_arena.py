"""The blind battle: balanced random pairs, battles kept in the votes database, and a Bradley-Terry
ranking that recovers known strengths with 95% intervals covering them."""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter

import numpy as np
import pytest

from adapters.errors import LoraEqError
from evals.arena import CENTER, SCALE, BattleRound, BattleStore, draw_pair, rank

COLUMNS = ["base", "weak", "strong"]


def test_pairs_and_positions_are_balanced_over_1000_draws():
    rng = random.Random(7)
    draws = [draw_pair(COLUMNS, rng) for _ in range(1000)]
    assert all(a != b and {a, b} <= set(COLUMNS) for a, b in draws)
    as_a, as_b = Counter(a for a, _ in draws), Counter(b for _, b in draws)
    pairs = Counter(frozenset(d) for d in draws)
    sd = math.sqrt(1000 * (1 / 3) * (2 / 3))  # binomial sd of a column's count in one position
    for column in COLUMNS:
        assert abs(as_a[column] - 1000 / 3) < 3 * sd, as_a
        assert abs(as_a[column] - as_b[column]) < 3 * math.sqrt(2) * sd, (as_a, as_b)
    assert len(pairs) == 3 and min(pairs.values()) > 1000 / 3 - 3 * sd
    again = random.Random(7)
    assert [draw_pair(COLUMNS, again) for _ in range(1000)] == draws  # seeded: reproducible


def test_a_battle_needs_two_columns():
    with pytest.raises(LoraEqError, match="two columns"):
        draw_pair(["base"], random.Random(0))


def _simulate(strength: dict[str, float], n: int, seed: int) -> list[tuple[str, str, str]]:
    """Battles drawn as the app draws them; A wins with the Bradley-Terry probability."""
    rng = random.Random(seed)
    battles = []
    for _ in range(n):
        a, b = draw_pair(list(strength), rng)
        p_a = 1 / (1 + math.exp(strength[b] - strength[a]))
        battles.append((a, b, "a" if rng.random() < p_a else "b"))
    return battles


def test_simulated_battles_recover_known_strengths_with_intervals_covering_them():
    truth = {"base": 0.0, "weak": 0.5, "strong": 1.2}  # natural log-odds
    mean = sum(truth.values()) / 3
    expected = {m: CENTER + SCALE * (s - mean) for m, s in truth.items()}  # the ranking's scale: mean 1000
    ranking = rank(_simulate(truth, 3000, seed=1), rounds=300, seed=0)
    assert [r.model for r in ranking] == ["strong", "weak", "base"], ranking
    assert [r.rank for r in ranking] == [1, 2, 3]
    for r in ranking:
        assert r.low < expected[r.model] < r.high, (r, expected[r.model])
        assert r.high - r.low < 120, r  # 3000 battles pin a rating to within tens of points
        assert r.wins + r.ties + r.both_bad + r.losses == r.battles
    assert sum(r.battles for r in ranking) == 2 * 3000
    assert np.mean([r.rating for r in ranking]) == pytest.approx(CENTER, abs=0.2)


def test_few_battles_give_wide_intervals_and_an_unbeaten_column_stays_finite():
    ranking = rank([("a", "b", "a")] * 5, rounds=200)
    assert [r.model for r in ranking] == ["a", "b"]
    assert all(math.isfinite(x) for r in ranking for x in (r.rating, r.low, r.high))
    assert ranking[0].high - ranking[0].low >= 0 and ranking[0].rating > ranking[1].rating
    tied = rank([("a", "b", "tie"), ("b", "a", "tie")], rounds=50)
    assert tied[0].rating == pytest.approx(tied[1].rating) and tied[0].ties == 2
    assert rank([]) == []


def test_both_bad_is_its_own_outcome_kept_out_of_ties_and_the_fit():
    only_bad = rank([("a", "b", "bad"), ("b", "a", "bad")], rounds=20)
    assert [(r.ties, r.both_bad, r.wins, r.losses, r.battles) for r in only_bad] == [(0, 2, 0, 0, 2)] * 2
    decided = [("a", "b", "a")] * 3 + [("b", "a", "b")]
    with_bad = rank(decided + [("a", "b", "bad")] * 6, rounds=20)
    without = rank(decided, rounds=20)
    assert [r.rating for r in with_bad] == [r.rating for r in without]  # six both-bad votes do not pull them together
    assert with_bad[0].model == "a" and (with_bad[0].wins, with_bad[0].ties, with_bad[0].both_bad) == (4, 0, 6)
    assert all(r.wins + r.ties + r.both_bad + r.losses == r.battles for r in with_bad)


def test_battles_are_stored_beside_the_votes_and_an_old_database_keeps_its_votes(tmp_path):
    from test_votes import run_dir as make_run

    from evals.votes import VoteStore

    run = make_run.__wrapped__(tmp_path)
    VoteStore(run).cast("hello", "uniform", "pass", settings={"temperature": 0.0})  # a database before battles
    store = BattleStore(run)
    battle = BattleRound.draw(["uniform", "attention"], random.Random(3), system="be brief")
    with pytest.raises(LoraEqError, match="must answer before"):
        battle.record(store, "a", {"temperature": 0.0})
    turn = battle.conversation.ask("hello")
    for label, text in zip(battle.conversation.labels, ("hi there", "good day")):
        turn.replies[label].text, turn.replies[label].done = text, True
    battle_id = battle.record(store, "b", {"temperature": 0.0, "max_new_tokens": 8})
    with pytest.raises(LoraEqError, match="already decided"):
        battle.record(store, "a", {})
    with pytest.raises(LoraEqError, match="outcome 'maybe'"):
        store.record("uniform", "attention", "maybe", conversation={}, settings={})
    [stored] = store.battles()
    assert stored.id == battle_id and (stored.model_a, stored.model_b) == (battle.model_a, battle.model_b)
    assert stored.outcome == "b" and stored.settings["max_new_tokens"] == 8
    assert stored.conversation["system"] == "be brief"
    assert stored.conversation["a"] == battle.conversation.messages(battle.model_a)
    assert stored.fingerprint_a == VoteStore(run).fingerprint(battle.model_a)
    assert [v.prompt for v in VoteStore(run).votes()] == ["hello"]  # the old vote is still there
    ranking = store.ranking(rounds=20)
    assert ranking[0].model == battle.model_b and ranking[0].wins == 1
    rows = list(csv_rows(store.export_csv(tmp_path / "arena.csv")))
    assert [r["model"] for r in rows] == [battle.model_b, battle.model_a] and rows[0]["low"]
    with sqlite3.connect(run / "votes.sqlite") as conn:
        assert {"votes", "battles"} <= {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_cli_prints_the_ranking_as_json_and_csv(tmp_path, capsys):
    import json

    from test_votes import run_dir as make_run

    from loraeq.main import main

    run = make_run.__wrapped__(tmp_path)
    store = BattleStore(run)
    for outcome in ["a", "a", "a", "tie", "b"]:
        store.record("uniform", "attention", outcome, conversation={"a": [], "b": []}, settings={})
    out = tmp_path / "ranking.csv"
    assert main(["arena", str(run), "--json", "--csv", str(out), "--rounds", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["battles"] == 5 and [r["model"] for r in data["ranking"]] == ["uniform", "attention"]
    assert data["ranking"][0]["wins"] == 3 and data["ranking"][0]["low"] <= data["ranking"][0]["rating"]
    assert [r["model"] for r in csv_rows(out)] == ["uniform", "attention"]
    assert main(["arena", str(run), "--rounds", "-1"]) == 2
    assert main(["arena", str(run)]) == 0 and "uniform" in capsys.readouterr().out


def csv_rows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def test_the_compare_tabs_ranking_shows_both_bad(tmp_path):
    from test_votes import run_dir as make_run

    from playground.tab_battle import pair_note, ranking_frame

    run = make_run.__wrapped__(tmp_path)
    store = BattleStore(run)
    for outcome in ["a", "bad", "bad", "tie"]:
        store.record("uniform", "attention", outcome, conversation={"a": [], "b": []}, settings={})
    frame = ranking_frame(run).set_index("model")
    assert frame.loc["uniform", "both_bad"] == 2 and frame.loc["uniform", "ties"] == 1
    assert "every battle is between these two" in pair_note(["base", "uniform"]) and pair_note(["base", "a", "b"]) == ""


def test_the_battle_tabs_judge_gives_its_pick_only_after_the_vote(tmp_path, monkeypatch):
    import shutil
    import time

    import gradio as gr
    from test_judge import Endpoint
    from test_votes import run_dir as make_run

    from adapters.limits import Limits
    from playground import tab_battle
    from playground.jobs import JobQueue
    from playground.sessions import Session, SessionArea
    from playground.shared import ModelRegistry, Shared

    shared = Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32", Limits())
    state = Session()
    shared.area.ensure_id(state)
    state.run, run = shared.area.new_run(state)
    shutil.copytree(make_run.__wrapped__(tmp_path), run, dirs_exist_ok=True)
    mode = {"fair": True}  # fair: picks the answer "hi there" whichever side shows it; else always "A"

    def pick(prompt: str) -> str:
        return ("A" if "Answer A: hi there" in prompt else "B") if mode["fair"] else "A"

    def battle(seed: int) -> BattleRound:
        state.battle = BattleRound.draw(["uniform", "attention"], random.Random(seed))
        turn = state.battle.conversation.ask("hello")
        for name, text in ((state.battle.model_a, "hi there"), (state.battle.model_b, "good day")):
            turn.replies[name].text, turn.replies[name].done = text, True
        return state.battle

    def shown(asked) -> tuple[str, dict]:
        deadline = time.monotonic() + 120
        while True:
            line, asked, timer = tab_battle.judge_pick(shared, asked, state)
            if asked.get("done") or time.monotonic() > deadline:
                assert timer.active is False and asked["done"], (line, shared.jobs.get(
                    tab_battle.judge_key(run, label)))
                return line, asked
            assert line.startswith(f"Asking the judge ({label}) for its pick") and timer.active
            time.sleep(0.3)

    with Endpoint(pick) as endpoint:
        monkeypatch.setenv("LORAEQ_JUDGES", f"fair@{endpoint.url}")
        label = f"fair at {endpoint.url}"
        assert tab_battle.judge_labels()[-1] == label
        round_ = battle(3)
        with pytest.raises(LoraEqError, match="choose one of the judges offered") as refused:
            tab_battle.battle_vote(shared, "a", f"fair@{endpoint.url}", state)  # typed, not offered
        assert "\n" not in str(refused.value) and BattleStore(run).battles() == [] and round_.outcome is None
        forged = {"battle": 1, "judge": label, "tries": 0, "done": False}
        assert tab_battle.judge_pick(shared, forged, state)[:2] == ("", None)  # no pick before the vote
        assert endpoint.asked == []
        *frame, board, asked = tab_battle.battle_vote(shared, "a", label, state)
        assert "You voted **A is better**" in frame[2] and asked["battle"] == BattleStore(run).battles()[0].id
        line, asked = shown(asked)
        assert line.startswith(f"The judge (fair at {endpoint.url}) picked **A** ({round_.model_a}).\n\nSo far: ")
        assert f"pairwise (judge fair at {endpoint.url}): agrees with 100% of your 1 decisions" in line
        assert len(endpoint.asked) == 2  # both orders, only after the vote
        assert tab_battle.judge_pick(shared, asked, state)[:2] == (gr.skip(), gr.skip())  # shown once, then quiet

        mode["fair"] = False  # the next battle: a judge that always says "A" flips with the order
        battle(4)
        *_, asked = tab_battle.battle_vote(shared, "b", label, state)
        line, _ = shown(asked)
        assert "picked **a tie** (its two orders disagreed: position bias)" in line
        assert "of your 2 decisions" in line and "position bias 50%" in line
        battle(5)
        *_, none_asked = tab_battle.battle_vote(shared, "tie", "no judge", state)
        assert none_asked is None and len(endpoint.asked) == 4  # no judge chosen: none asked
        # A battle voted while the judge's job was already running is not in that job: the tab asks again.
        late = {"battle": BattleStore(run).battles()[-1].id, "judge": label, "tries": 1, "done": False}
        line, _ = shown(late)
        assert "picked **a tie**" in line and "of your 3 decisions" in line and len(endpoint.asked) == 6
