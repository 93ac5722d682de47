"""The one CSV writer: every CSV the app or the CLI writes (eval-set cells and summaries, the
leaderboard, votes, the battle ranking) goes through `write_csv`.

A cell a user controls (a prompt, an answer, a reference) may start with a spreadsheet formula:
`=HYPERLINK(...)` or `=cmd|' /C calc'!A0` runs when the file is opened. Following OWASP's rule
for CSV injection, a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
is written with a single quote in front, so a spreadsheet shows it as text. Numbers are written
as numbers (a negative number is not a formula). The file is replaced whole, so a reader never
sees half of one. This module does not read CSV (adapters/data/readers.py does).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutral(value: object) -> object:
    """A cell as it may be written: text that a spreadsheet would run is quoted with `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> Path:
    """Write `rows` (mappings by column name) under a header of `columns`; returns the path. Written to a temporary file first, then moved into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writerow({c: neutral(c) for c in columns})
            writer.writerows({k: neutral(v) for k, v in row.items()} for row in rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
