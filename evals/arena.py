"""The blind battle: two columns drawn at random answer as "Model A" and "Model B", the user votes,
and a Bradley-Terry ranking with bootstrap 95% intervals is made from every battle.

`draw_pair` draws an ordered pair from the columns with a seeded `random.Random`: every ordered
pair is equally likely, so each column sits in position A as often as in B. `BattleStore` keeps
battles in the run's votes database (`RUN_DIR/votes.sqlite`, a `battles` table next to the votes:
an older database gains it when opened, its votes untouched): the pair, which one was A, the
outcome ("a", "b", "tie", "bad": both bad), each side's conversation, the settings and each
column's config fingerprint.

`rank` fits a Bradley-Terry model (P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)), the Elo scale
LMArena's leaderboard uses) by Newton's method on the battle counts; a tie counts half a win to
each side, as LMArena counts ties. "Both bad" is its own outcome: it says that neither answer was
acceptable, not that the two were equally good, so it is counted apart (`Rating.both_bad`) and left
out of the fit (two both-bad votes must not read as two ties). Ratings are centered on 1000. The 95% interval
of a rating is the 2.5th-97.5th percentile over bootstrap refits (battles resampled with
replacement). A weak normal prior on the ratings keeps a column that never lost finite.

Why not the `arena-rank` package (LMArena's own, Apache-2.0): its 0.1.1 pins numpy==2.3.3 and
jax==0.8.1 exactly and pulls in `datasets`, which conflicts with this project's numpy and adds a
large runtime for a fit of a handful of columns; the model above is the same one, in numpy.
Nothing here generates answers or draws the UI.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from adapters.errors import LoraEqError
from adapters.files.csvfile import write_csv
from adapters.infer.conversation import Conversation

from .judge import Pairwise, pairwise_many, reliability
from .votes import DB_NAME, VoteStore, _write, connect

OUTCOMES = ("a", "b", "tie", "bad")
SCALE = 400.0 / math.log(10.0)  # natural log-odds -> Elo points
CENTER = 1000.0
PRIOR = 0.01  # precision of the normal prior on natural-scale ratings (sd 10: weak)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS battles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    fingerprint_a TEXT NOT NULL,
    fingerprint_b TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'bad')),
    conversation TEXT NOT NULL,
    settings TEXT NOT NULL,
    voter TEXT
)
"""
_JUDGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS judge_picks (
    battle_id INTEGER NOT NULL REFERENCES battles(id),
    judge TEXT NOT NULL,
    created REAL NOT NULL,
    winner TEXT CHECK (winner IN ('a', 'b', 'tie')),
    position_bias INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (battle_id, judge)
)
"""


def draw_pair(columns: list[str], rng: random.Random) -> tuple[str, str]:
    """Two different columns in random order: (shown as A, shown as B)."""
    names = list(dict.fromkeys(columns))
    if len(names) < 2:
        raise LoraEqError(f"a battle needs two columns, got {len(names)}: choose at least one variant")
    a, b = rng.sample(names, 2)
    return a, b


@dataclass(frozen=True)
class Battle:
    id: int
    created: float
    model_a: str
    model_b: str
    fingerprint_a: str
    fingerprint_b: str
    outcome: str
    conversation: dict
    settings: dict
    voter: str | None


@dataclass(frozen=True)
class Rating:
    """One row of the battle ranking."""

    rank: int
    model: str
    rating: float
    low: float  # 95% bootstrap interval
    high: float
    battles: int
    wins: int
    ties: int  # "tie" only
    both_bad: int  # "both bad": counted apart, not in the fit
    losses: int

    def to_json(self) -> dict:
        return asdict(self)


class BattleStore:
    """Battles of one run folder, in its votes database (see the module doc); safe to share between threads."""

    def __init__(self, run_dir: str | Path, adapters: dict[str, str | Path] | None = None):
        """`adapters`: outside adapters that may battle next to the run's variants (as VoteStore takes them)."""
        self.votes = VoteStore(run_dir, adapters)  # creates the database (and upgrades an old one) first
        self.path = self.votes.run_dir / DB_NAME
        with self._connect() as conn, _write(conn):
            conn.execute(_SCHEMA)
            conn.execute(_JUDGE_SCHEMA)

    def _connect(self):
        return connect(self.path)

    def record(self, model_a: str, model_b: str, outcome: str, *, conversation: dict, settings: dict,
               voter: str | None = None) -> int:
        """Store one battle's outcome; returns its id. Fingerprints are read from the run folder."""
        if outcome not in OUTCOMES:
            raise LoraEqError(f"battle outcome {outcome!r}: choose one of {', '.join(OUTCOMES)}")
        if model_a == model_b:
            raise LoraEqError(f"a battle is between two different columns, got {model_a!r} twice")
        try:
            texts = [json.dumps(x, sort_keys=True, ensure_ascii=False, allow_nan=False) for x in (conversation, settings)]
        except (TypeError, ValueError) as e:
            raise LoraEqError(f"battle conversation and settings must be plain JSON ({e})") from None
        row = (time.time(), model_a, model_b, self.votes.fingerprint(model_a), self.votes.fingerprint(model_b),
               outcome, *texts, voter)
        with self._connect() as conn, _write(conn):
            return conn.execute(
                "INSERT INTO battles (created, model_a, model_b, fingerprint_a, fingerprint_b, outcome,"
                " conversation, settings, voter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", row,
            ).fetchone()[0]

    def battles(self) -> list[Battle]:
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM battles ORDER BY id").fetchall()
        return [Battle(**{**dict(r), "conversation": json.loads(r["conversation"]),
                          "settings": json.loads(r["settings"])}) for r in rows]

    def ranking(self, *, rounds: int = 500, seed: int = 0) -> list[Rating]:
        return rank([(b.model_a, b.model_b, b.outcome) for b in self.battles()], rounds=rounds, seed=seed)

    def ask_judge(self, judge_model, battle_ids: list[int] | None = None) -> dict[int, Pairwise]:
        """The judge's pick (judge.pairwise_many: both orders) on the last turn of each battle in
        `battle_ids` (default: every battle) it has not judged yet, kept; returns the new picks."""
        todo = [b for b in self.battles() if (battle_ids is None or b.id in battle_ids)
                and b.id not in self.judge_picks(judge_model.name)]
        items = [_last_turn(b) for b in todo]
        picks = dict(zip([b.id for b in todo], pairwise_many(judge_model, items))) if todo else {}
        with self._connect() as conn, _write(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO judge_picks (battle_id, judge, created, winner, position_bias, record)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(i, judge_model.name, time.time(), p.winner, int(p.position_bias),
                  json.dumps(p.to_json(), ensure_ascii=False)) for i, p in picks.items()])
        return picks

    def judge_picks(self, judge: str) -> dict[int, dict]:
        """Battle id -> the pick `judge` made there ({winner, position_bias, rulings})."""
        with self._connect() as conn:
            rows = conn.execute("SELECT battle_id, record FROM judge_picks WHERE judge = ?", (judge,)).fetchall()
        return {i: json.loads(record) for i, record in rows}

    def judges(self) -> list[str]:
        with self._connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT judge FROM judge_picks ORDER BY judge")]

    def judge_reliability(self, judge: str) -> dict:
        """The judge's picks against the user's battle outcomes (a, b, tie; "both bad" left out):
        agreement, Cohen's kappa, the position-bias rate (judge.reliability)."""
        picks, outcomes = self.judge_picks(judge), {b.id: b.outcome for b in self.battles()}
        pairs = [(p["winner"], outcomes[i]) for i, p in picks.items()
                 if p["winner"] is not None and outcomes.get(i) in ("a", "b", "tie")]
        asked = [p for p in picks.values() if p["winner"] is not None]
        return {"judge": judge, "check": "pairwise", "verdicts": len(asked), "asked": len(picks),
                **reliability(pairs, (sum(p["position_bias"] for p in asked), len(asked)))}

    def export_csv(self, path: str | Path) -> Path:
        """Write the ranking as CSV; returns the path."""
        return write_csv(path, [f.name for f in fields(Rating)], (r.to_json() for r in self.ranking()))


@dataclass
class BattleRound:
    """One blind battle in progress: the drawn pair (A, B), their conversation, the outcome once voted."""

    model_a: str
    model_b: str
    conversation: Conversation
    outcome: str | None = None
    settings: dict = field(default_factory=dict)  # the sampling settings and system prompt of its answers

    @classmethod
    def draw(cls, columns: list[str], rng: random.Random, system: str | None = None) -> BattleRound:
        a, b = draw_pair(columns, rng)
        return cls(a, b, Conversation([a, b], system or None))

    def record(self, store: BattleStore, outcome: str, settings: dict | None = None, voter: str | None = None) -> int:
        """Store the outcome (once per battle) after at least one finished turn, with `settings`
        (default: the round's own); returns the battle's id."""
        if self.outcome is not None:
            raise LoraEqError("this battle is already decided: start a new one")
        conv = self.conversation
        if not conv.turns or not all(r.done for r in conv.last.replies.values()):
            raise LoraEqError("both models must answer before you vote")
        record = {"system": conv.system, "a": conv.messages(self.model_a), "b": conv.messages(self.model_b)}
        battle_id = store.record(self.model_a, self.model_b, outcome, conversation=record,
                                 settings=self.settings if settings is None else settings,
                                 voter=voter)
        self.outcome = outcome
        return battle_id


def _last_turn(battle: Battle) -> tuple[str, str, str]:
    """(the user's last message, A's answer to it, B's answer to it)."""
    def last(messages: list[dict], role: str) -> str:
        return next((m["content"] for m in reversed(messages) if m.get("role") == role), "")

    a, b = battle.conversation.get("a", []), battle.conversation.get("b", [])
    return last(a, "user"), last(a, "assistant"), last(b, "assistant")


def _score(outcome: str) -> float:
    """Model A's share of the win."""
    return {"a": 1.0, "b": 0.0}.get(outcome, 0.5)


def fit_bradley_terry(i: np.ndarray, j: np.ndarray, score: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    """Natural-scale ratings (mean 0) maximizing sum(weight * log-likelihood of `score` for i vs j)
    plus a weak normal prior, by Newton's method (the problem is concave)."""
    r = np.zeros(n)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(r[j] - r[i]))
        resid, curv = weight * (score - p), weight * p * (1 - p)
        grad = np.bincount(i, resid, n) - np.bincount(j, resid, n) - PRIOR * r
        hess = np.zeros((n, n))
        np.add.at(hess, (i, i), -curv)
        np.add.at(hess, (j, j), -curv)
        np.add.at(hess, (i, j), curv)
        np.add.at(hess, (j, i), curv)
        hess -= PRIOR * np.eye(n)
        step = np.linalg.solve(hess, grad)
        r -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return r - r.mean()


def rank(battles: list[tuple[str, str, str]], *, rounds: int = 500, seed: int = 0) -> list[Rating]:
    """Bradley-Terry ratings of (model_a, model_b, outcome) battles with bootstrap 95% intervals, best first."""
    if not isinstance(rounds, int) or rounds < 0:
        raise LoraEqError(f"bootstrap rounds {rounds!r}: a whole number >= 0")
    if not battles:
        return []
    names = sorted({m for a, b, _ in battles for m in (a, b)})
    decided = [(a, b, o) for a, b, o in battles if o != "bad"]
    if not decided:  # only "both bad" so far: nothing says which column is better
        return [_rating(k + 1, m, 0.0, 0.0, 0.0, battles) for k, m in enumerate(names)]
    index = {m: k for k, m in enumerate(names)}
    # Identical battles become one row with a count: a bootstrap resamples the counts.
    keys, counts = np.unique(np.array([(index[a], index[b], _score(o) * 2) for a, b, o in decided]),
                             axis=0, return_counts=True)
    i, j, score = keys[:, 0].astype(int), keys[:, 1].astype(int), keys[:, 2] / 2
    point = fit_bradley_terry(i, j, score, counts.astype(float), len(names))
    rng = np.random.default_rng(seed)
    total = counts.sum()
    boots = np.array([fit_bradley_terry(i, j, score, rng.multinomial(total, counts / total).astype(float),
                                        len(names)) for _ in range(rounds)])
    low, high = np.percentile(boots, [2.5, 97.5], axis=0) if rounds else (point, point)
    order = np.argsort(-point, kind="stable")
    return [_rating(k + 1, names[m], point[m], low[m], high[m], battles) for k, m in enumerate(order)]


def _rating(rank_: int, name: str, r: float, low: float, high: float, battles: list[tuple[str, str, str]]) -> Rating:
    mine = [(a, o) for a, b, o in battles if name in (a, b)]
    wins = sum(1 for a, o in mine if (o == "a") == (a == name) and o in ("a", "b"))
    ties = sum(1 for _, o in mine if o == "tie")
    bad = sum(1 for _, o in mine if o == "bad")
    elo = [round(float(CENTER + SCALE * x), 1) for x in (r, low, high)]
    return Rating(rank_, name, *elo, battles=len(mine), wins=wins, ties=ties, both_bad=bad,
                  losses=len(mine) - wins - ties - bad)
