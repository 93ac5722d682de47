"""The eval-set matrix: cells (prompt x column) to per-column statistics, votes as overrides, files.

A cell is one column's answer to one case, with its similarities and check results (evalrun.py
makes them). It passes when all its checks pass; a cell without checks has no verdict. The user
may override a cell: that is a vote (votes.py) on the cell's prompt, column and settings key, and
the vote's verdict replaces the checks' verdict everywhere below.

Per column (`summarize`): passes of the cells with a verdict, the pass rate with its Wilson 95%
interval, the mean similarity to the reference with a bootstrap 95% interval, and against the
base (on the prompts both have): an exact McNemar test on pass / fail and a paired sign-flip
permutation test on the similarity; the same pass statistics per check type (`by_check`).
`EvalFolder` reads what a run wrote under RUN_DIR/evalsets/NAME/. Nothing here generates answers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from adapters.cache import read_json
from adapters.errors import LoraEqError
from adapters.files.csvfile import write_csv
from adapters.train.runfolder import BASE_COLUMN, read_log

from .judge import combine, count_judged
from .stats import bootstrap_ci, mcnemar_exact_p, paired_permutation_p
from .votes import VoteStore, canonical_settings, wilson_interval

EVALSETS = "evalsets"
CELLS, SUMMARY, PROGRESS, STATUS, CANCEL = "cells.jsonl", "summary.json", "progress.jsonl", "status.json", "cancel"
CELL_CSV_KEYS = ("case", "prompt", "column", "verdict", "passed", "override", "similarity_reference",
                 "similarity_base", "tokens", "finish_reason", "checks", "answer", "reference", "tags")
SUMMARY_CSV_KEYS = ("name", "passed", "total", "pass_rate", "ci_low", "ci_high", "mean_similarity",
                    "similarity_ci_low", "similarity_ci_high", "mcnemar_p", "similarity_p", "overrides")


def evalset_dir(run_dir: str | Path, name: str) -> Path:
    """Where a run keeps the results of the eval set `name`."""
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._") or "evalset"
    return Path(run_dir) / EVALSETS / clean


def verdict(cell: dict) -> bool | None:
    """The cell's verdict: the user's override, else all its checks passed (None without checks)."""
    override = cell.get("override")
    if override in ("pass", "fail"):
        return override == "pass"
    return cell.get("passed")


def timed_out(cell: dict) -> bool:
    """Whether one of the cell's checks ran past its time limit (the cell then fails)."""
    return any(r.get("timed_out") for r in cell.get("checks", []))


def _outcome(result: dict) -> str:
    if result.get("timed_out"):
        return "timed out"
    return "no verdict" if result["passed"] is None else "pass" if result["passed"] else "fail"


def apply_votes(cells: list[dict], store: VoteStore) -> list[dict]:
    """Each cell with `override` set from the latest vote on its prompt, column and settings."""
    fingerprints: dict[str, str | None] = {}
    latest = {}
    for v in store.votes():
        latest[(v.prompt, v.variant, canonical_settings(v.settings), v.fingerprint)] = v.verdict
    out = []
    for cell in cells:
        column = cell["column"]
        if column not in fingerprints:
            try:
                fingerprints[column] = store.fingerprint(column)
            except LoraEqError:
                fingerprints[column] = None  # a variant no longer finished: no vote applies
        key = (cell["prompt"], column, canonical_settings(cell["settings"]), fingerprints[column])
        out.append({**cell, "override": latest.get(key)})
    return out


def _rate(outcomes: list[bool]) -> dict:
    passed, total = sum(outcomes), len(outcomes)
    low, high = wilson_interval(passed, total)
    return {"passed": passed, "total": total, "pass_rate": passed / total if total else None,
            "ci": [round(low, 4), round(high, 4)]}


def _paired(cells: dict, base: dict, key) -> tuple[list, list]:
    """Values of the same cases in this column and in the base's, where both have one."""
    pairs = [(key(base[c]), key(cell)) for c, cell in cells.items() if c in base]
    pairs = [(b, x) for b, x in pairs if b is not None and x is not None]
    return [b for b, _ in pairs], [x for _, x in pairs]


def _similarity(cells: list[dict], seed: int) -> dict:
    values = [c["similarity_reference"] for c in cells if c.get("similarity_reference") is not None]
    if not values:
        return {"mean_similarity": None, "similarity_ci": None}
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean_similarity": round(float(np.mean(values)), 6), "similarity_ci": [round(lo, 6), round(hi, 6)]}


def _against_base(cells: dict, base: dict | None, seed: int) -> dict:
    if base is None:
        return {"mcnemar_p": None, "similarity_p": None}
    b, x = _paired(cells, base, verdict)
    mcnemar = mcnemar_exact_p(b, x) if b else None
    sb, sx = _paired(cells, base, lambda c: c.get("similarity_reference"))
    diffs = np.asarray(sx) - np.asarray(sb)
    return {"mcnemar_p": mcnemar, "similarity_p": paired_permutation_p(diffs, seed=seed) if len(diffs) else None}


def _by_check(cells: dict, base: dict | None) -> dict:
    """Pass statistics per check type (a cell counts for a type when it holds such a check)."""
    names = sorted({r["name"] for c in cells.values() for r in c.get("checks", [])})
    out = {}
    for name in names:
        def outcome(cell, name=name):
            results = [r["passed"] for r in cell.get("checks", []) if r["name"] == name]
            return combine(results) if results else None

        mine = {k: outcome(c) for k, c in cells.items() if outcome(c) is not None}
        stats = _rate(list(mine.values()))
        if base is not None:
            pairs = [(outcome(base[k]), v) for k, v in mine.items() if k in base and outcome(base[k]) is not None]
            stats["mcnemar_p"] = mcnemar_exact_p([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        else:
            stats["mcnemar_p"] = None
        out[name] = stats
    return out


def judged_summary(cells: list[dict], columns: list[str] | None = None, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """`summarize` over the checks that count (judge.count_judged: a judged check counts where its
    judge agrees with the user's overrides significantly better than chance), and each judge's
    reliability."""
    counted, judges = count_judged(cells)
    return summarize(counted, columns, seed), judges


def summarize(cells: list[dict], columns: list[str] | None = None, seed: int = 0) -> list[dict]:
    """One summary per column, in `columns` order (default: as the cells first name them)."""
    columns = columns or list(dict.fromkeys(c["column"] for c in cells))
    by_column = {name: {c["case"]: c for c in cells if c["column"] == name} for name in columns}
    base = by_column.get(BASE_COLUMN)
    out = []
    for name in columns:
        mine = by_column[name]
        judged = [verdict(c) for c in mine.values() if verdict(c) is not None]
        other = None if name == BASE_COLUMN else base
        out.append({"name": name, **_rate(judged), **_similarity(list(mine.values()), seed),
                    **_against_base(mine, other, seed), "by_check": _by_check(mine, other),
                    "overrides": sum(1 for c in mine.values() if c.get("override"))})
    return out


# ---- files ------------------------------------------------------------------------------------


def _replace_text(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_cells(cells: list[dict], path: Path) -> Path:
    """Cells as JSONL, written so a reader never sees half a file."""
    return _replace_text(path, lambda h: h.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in cells))


def _cell_row(cell: dict) -> dict:
    row = {k: cell.get(k) for k in CELL_CSV_KEYS}
    row["verdict"] = {True: "pass", False: "fail", None: ""}[verdict(cell)]
    row["checks"] = "; ".join(f"{r['label']}={_outcome(r)}" for r in cell.get("checks", []))
    row["tags"] = ",".join(cell.get("tags") or [])
    row["answer"] = cell.get("text")
    return row


def cells_csv(cells: list[dict], path: Path) -> Path:
    return write_csv(path, CELL_CSV_KEYS, (_cell_row(c) for c in cells))


def summary_rows(columns: list[dict]) -> list[dict]:
    rows = []
    for c in columns:
        ci, sim_ci = c.get("ci") or [None, None], c.get("similarity_ci") or [None, None]
        rows.append({**{k: c.get(k) for k in SUMMARY_CSV_KEYS}, "ci_low": ci[0], "ci_high": ci[1],
                     "similarity_ci_low": sim_ci[0], "similarity_ci_high": sim_ci[1]})
    return rows


def summary_csv(columns: list[dict], path: Path) -> Path:
    return write_csv(path, SUMMARY_CSV_KEYS, summary_rows(columns))


class EvalFolder:
    """What one eval set's job wrote: cells, summary, progress, status; and its cancel request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def cells(self) -> list[dict]:
        return read_log(self.path / CELLS)

    def summary(self) -> dict:
        return read_json(self.path / SUMMARY)

    def status(self) -> dict:
        return read_json(self.path / STATUS)

    def progress(self) -> dict:
        """The latest progress record ({} before the first)."""
        records = read_log(self.path / PROGRESS)
        return records[-1] if records else {}

    @property
    def cancel_path(self) -> Path:
        return self.path / CANCEL

    def request_cancel(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.cancel_path.touch()


def list_evalsets(run_dir: str | Path) -> list[str]:
    """Names of the eval sets a run has results (or a job) for."""
    root = Path(run_dir) / EVALSETS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def evalset_results(run_dir: str | Path, seed: int = 0) -> list[dict]:
    """Every finished eval set of a run, summarized with the user's cell overrides (votes) applied:
    what the proof report shows next to the held-out statistics."""
    out = []
    for name in list_evalsets(run_dir):
        folder = EvalFolder(evalset_dir(run_dir, name))
        if folder.status().get("status") != "done" or not (folder.path / SUMMARY).is_file():
            continue
        summary = folder.summary()
        cells = apply_votes(folder.cells(), VoteStore(run_dir))
        columns, judges = judged_summary(cells, [c["name"] for c in summary.get("columns", [])] or None, seed)
        out.append({"name": summary.get("name") or name, "prompts": summary.get("prompts"), "cells": len(cells),
                    "columns": columns, "judges": judges, "unsupported": summary.get("unsupported", []),
                    "notes": summary.get("notes", []), "probes": summary.get("probes", [])})
    return out
