"""Votes and the leaderboard: the user's pass / fail on each answer, kept in the run folder.

A vote says pass or fail (with an optional note) on one answer: a prompt (in a chat, the
column's conversation so far: `adapters.infer.conversation.conversation_key`, the message alone on a first
turn), a column (variant, or "variant@eq" for a live-equalized column) and the settings it was
produced with (`answer_settings`: the one schema of the web app and the CLI, so one answer is
one key), stamped with the
variant's config fingerprint (a hash of its adapter_config.json and variant.json, so a retrained
variant does not inherit old votes) and the answer's similarity scores. Votes live in
`RUN_DIR/votes.sqlite` (SQLite in WAL mode: readers never block the writer, a crash loses
nothing committed). Every call opens its own connection, so one store object may be shared by
the threads of a web server. A vote with a `voter` replaces that voter's earlier vote on the same
answer; anonymous votes are all kept. A database written before `answer_settings` existed is
rewritten to it when opened (once: `PRAGMA user_version` records it), keeping every vote.

The leaderboard ranks columns by the lower end of the Wilson 95% interval of their pass rate
(few votes rank below many votes at the same rate), with the mean similarities beside it.
The blind battles live in the same database (evals/arena.py adds their table).
Nothing here generates or scores answers.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from adapters.errors import LoraEqError
from adapters.files.csvfile import write_csv
from adapters.train.runfolder import BASE_COLUMN, RunFolder, config_fingerprint, derived_seed

DB_NAME = "votes.sqlite"
VERDICTS = ("pass", "fail")
Z95 = 1.959963984540054  # standard normal quantile at 0.975
_SCHEMA_VERSION = 3  # 2: settings keyed by answer_settings (PRAGMA user_version; 1 in the meta table before); 3: the grid's key is live_eq
_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    prompt TEXT NOT NULL,
    variant TEXT NOT NULL,
    settings TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
    note TEXT NOT NULL DEFAULT '',
    similarity_reference REAL,
    similarity_base REAL,
    answer TEXT,
    voter TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_voter ON votes (voter, prompt, variant, settings, fingerprint);
CREATE INDEX IF NOT EXISTS votes_by_variant ON votes (variant, fingerprint);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Vote:
    id: int
    created: float
    prompt: str
    variant: str
    settings: dict
    fingerprint: str
    verdict: str
    note: str
    similarity_reference: float | None
    similarity_base: float | None
    answer: str | None
    voter: str | None


@dataclass(frozen=True)
class Standing:
    """One leaderboard row."""

    variant: str
    fingerprint: str
    votes: int
    passes: int
    fails: int
    pass_rate: float
    wilson_low: float
    wilson_high: float
    mean_similarity_reference: float | None
    mean_similarity_base: float | None

    def to_json(self) -> dict:
        return asdict(self)


def wilson_interval(passes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (Wilson 1927): sound at small n and at 0% or 100%."""
    if n < 0 or not 0 <= passes <= n:
        raise ValueError(f"{passes} passes of {n} votes")
    if n == 0:
        return 0.0, 1.0
    p = passes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def answer_settings(sampling, *, seed: int | None = None, system: str | None = None,
                    live_eq: dict | None = None) -> dict:
    """The settings an answer was made with, as a vote keys them: one schema for every caller.

    `sampling` is an `adapters.infer.decoding.Sampling` (or its JSON); `seed` is the answer's own sampling
    seed (`Answer.seed`), kept only when sampling, since a greedy answer does not depend on it; an
    empty system prompt is none; `live_eq` is a live-equalized column's grid (Equalizer JSON). A
    reference answer is not part of it: it scores the answer but does not change it."""
    s = sampling.to_json() if hasattr(sampling, "to_json") else dict(sampling)
    try:
        out = {"max_new_tokens": int(s["max_new_tokens"]), "temperature": float(s["temperature"]),
               "top_p": float(s["top_p"])}
        sampled = out["temperature"] > 0
        out["seed"] = int(seed) if sampled and seed is not None else None
    except (KeyError, TypeError, ValueError) as e:
        raise LoraEqError(f"answer settings {s!r}: need numbers max_new_tokens, temperature, top_p ({e})") from None
    if sampled and seed is None:
        raise LoraEqError("a sampled answer's settings need the answer's seed")
    return {**out, "system": system or None, "live_eq": live_eq or None}


def canonical_settings(settings: dict | None) -> str:
    """Settings as canonical JSON (sorted keys), so equal settings are one key. Settings of an
    answer (they hold max_new_tokens, temperature and top_p) go through `answer_settings` first."""
    if settings is None:
        return "{}"
    if not isinstance(settings, dict):
        raise LoraEqError(f"vote settings must be an object, got {type(settings).__name__}")
    if all(k in settings for k in _SAMPLING_KEYS):
        settings = answer_settings(settings, seed=settings.get("seed"), system=settings.get("system"),
                                   live_eq=settings.get("live_eq", settings.get("scales")))  # "scales": before v3
    try:
        return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise LoraEqError(f"vote settings are not plain JSON ({e})") from None


def _check_similarity(name: str, value) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
        raise LoraEqError(f"{name}={value!r}: a similarity is a number in [-1, 1] or empty")
    return float(value)


class VoteStore:
    """Votes of one run folder (see the module doc); safe to share between threads."""

    def __init__(self, run_dir: str | Path, adapters: dict[str, str | Path] | None = None):
        """`adapters`: outside adapters answering next to the run's variants (name -> folder), so
        votes on their columns get a fingerprint too (outside.adapter_fingerprint)."""
        self.run_dir = Path(run_dir)
        self.adapters = dict(adapters or {})
        if not self.run_dir.is_dir():
            raise LoraEqError(f"{self.run_dir}: no such run folder")
        self.path = self.run_dir / DB_NAME
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the database file
            with _write(conn):
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                    _rekey_settings(conn)
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))

    def _connect(self):
        return connect(self.path)

    def journal_mode(self) -> str:
        with self._connect() as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    def fingerprint(self, variant: str) -> str:
        """The config fingerprint of a column of this run: its variant's, or the base model's
        for "base"; a live-equalized column ("name@eq") is its variant's (the grid is in the settings)."""
        name = variant.rsplit("@", 1)[0] if "@" in variant else variant
        run = RunFolder.open(self.run_dir)
        if name == BASE_COLUMN:
            return "base-" + run.base_fingerprint()
        if name in self.adapters:
            from adapters.share.adapter_sources import adapter_fingerprint

            return adapter_fingerprint(Path(self.adapters[name]))
        folders = run.adapters()
        if name not in folders:
            finished = ", ".join(folders) or "none"
            raise LoraEqError(f"{self.run_dir}: no finished variant {name!r} to vote on (finished: {finished})")
        return config_fingerprint(folders[name])

    def cast(
        self,
        prompt: str,
        variant: str,
        verdict: str,
        *,
        settings: dict | None = None,
        note: str = "",
        fingerprint: str | None = None,
        similarity_reference: float | None = None,
        similarity_base: float | None = None,
        answer: str | None = None,
        voter: str | None = None,
    ) -> int:
        """Store one vote; returns its id. Without a fingerprint, the variant's is read from the run folder."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise LoraEqError("a vote needs the prompt it is about")
        if not isinstance(variant, str) or not variant.strip():
            raise LoraEqError(f"vote variant {variant!r}: must be a non-empty name")
        if verdict not in VERDICTS:
            raise LoraEqError(f"verdict {verdict!r}: choose pass or fail")
        if not isinstance(note, str):
            raise LoraEqError(f"vote note must be text, got {type(note).__name__}")
        if voter is not None and (not isinstance(voter, str) or not voter):
            raise LoraEqError(f"voter {voter!r}: a non-empty name or None")
        row = (
            time.time(),
            prompt,
            variant,
            vote_key(settings, variant),
            fingerprint or self.fingerprint(variant),
            verdict,
            note,
            _check_similarity("similarity_reference", similarity_reference),
            _check_similarity("similarity_base", similarity_base),
            answer,
            voter,
        )
        with self._connect() as conn, _write(conn):
            return conn.execute(
                "INSERT INTO votes (created, prompt, variant, settings, fingerprint, verdict, note,"
                " similarity_reference, similarity_base, answer, voter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (voter, prompt, variant, settings, fingerprint) DO UPDATE SET"
                " created = excluded.created, verdict = excluded.verdict, note = excluded.note,"
                " similarity_reference = excluded.similarity_reference,"
                " similarity_base = excluded.similarity_base, answer = excluded.answer"
                " RETURNING id",
                row,
            ).fetchone()[0]

    def votes(self, variant: str | None = None) -> list[Vote]:
        """Every vote (of one column when `variant` is given), oldest first."""
        query, args = "SELECT * FROM votes", ()
        if variant is not None:
            query, args = query + " WHERE variant = ?", (variant,)
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [Vote(**{**dict(r), "settings": json.loads(r["settings"])}) for r in rows]

    def leaderboard(self) -> list[Standing]:
        """One row per column and fingerprint, best first (see the module doc)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT variant, fingerprint, COUNT(*), SUM(verdict = 'pass'),"
                " AVG(similarity_reference), AVG(similarity_base)"
                " FROM votes GROUP BY variant, fingerprint"
            ).fetchall()
        standings = []
        for variant, fp, n, passes, sim_ref, sim_base in rows:
            low, high = wilson_interval(passes, n)
            standings.append(
                Standing(
                    variant=variant,
                    fingerprint=fp,
                    votes=n,
                    passes=passes,
                    fails=n - passes,
                    pass_rate=passes / n,
                    wilson_low=low,
                    wilson_high=high,
                    mean_similarity_reference=sim_ref,
                    mean_similarity_base=sim_base,
                )
            )
        return sorted(standings, key=lambda s: (-s.wilson_low, -s.pass_rate, -s.votes, s.variant))

    def export_csv(self, path: str | Path, table: str = "leaderboard") -> Path:
        """Write the leaderboard (or every vote, table="votes") as CSV; returns the path."""
        if table == "leaderboard":
            columns = [f.name for f in fields(Standing)]
            rows = [s.to_json() for s in self.leaderboard()]
        elif table == "votes":
            columns = [f.name for f in fields(Vote)]
            rows = [{**asdict(v), "settings": canonical_settings(v.settings)} for v in self.votes()]
        else:
            raise LoraEqError(f"table {table!r}: choose leaderboard or votes")
        return write_csv(path, columns, rows)


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection per call (sqlite3 connections must not be shared between threads), waiting up
    to 30 s for another writer."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        yield conn
    finally:
        conn.close()


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front (no deadlock upgrading a read)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def vote_key(settings: dict | None, variant: str) -> str:
    """The key of a vote's settings on column `variant`: `canonical_settings`, after turning the
    web app's former form ({sampling with the settings' seed, the grid, reference}) into answer_settings:
    its column's own seed is derived from the settings' seed and the column label, as the engine does."""
    if isinstance(settings, dict) and "reference" in settings and "system" not in settings:
        settings = dict(settings)
        if isinstance(settings.get("seed"), int):
            settings["seed"] = derived_seed(settings["seed"], variant)
    return canonical_settings(settings)


def _rekey_settings(conn: sqlite3.Connection) -> None:
    """Rewrite every vote's settings key with `vote_key`. Anonymous votes are all kept; where a
    voter's two votes become one answer, their later vote stands (as when they vote again)."""
    rows = conn.execute("SELECT id, created, voter, prompt, variant, settings, fingerprint FROM votes ORDER BY id")
    for vote_id, created, voter, prompt, variant, old, fingerprint in rows.fetchall():
        try:
            new = vote_key(json.loads(old), variant)
        except (ValueError, LoraEqError):
            continue  # not settings we wrote: kept as they are
        if new == old:
            continue
        same = conn.execute("SELECT id, created FROM votes WHERE voter = ? AND prompt = ? AND variant = ?"
                            " AND settings = ? AND fingerprint = ?", (voter, prompt, variant, new, fingerprint)).fetchone()
        if same and same[1] > created:
            conn.execute("DELETE FROM votes WHERE id = ?", (vote_id,))
            continue
        if same:
            conn.execute("DELETE FROM votes WHERE id = ?", (same[0],))
        conn.execute("UPDATE votes SET settings = ? WHERE id = ?", (new, vote_id))
