"""What a validated dataset is: normalized examples, row problems, rejected rows, the dataset.

Every later stage (mixture, held-out split, training, the proof report) takes these objects, and
each has a `to_json()`. This file also writes examples and rejected rows back out as JSONL. It does
not read files or decide whether a row is valid: that is `readers.py`, `shapes.py` and `validate.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import LoraEqError

ROLES = ("system", "user", "assistant")
UNCATEGORIZED = "uncategorized"  # the category of a row that names none


def content_hash(messages: list[dict[str, str]]) -> str:
    """A stable hash of a conversation's roles and texts (metadata left out): equal content, equal hash."""
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        # Separator bytes that cannot occur in UTF-8 text keep ("ab","c") and ("a","bc") apart.
        h.update(m["role"].encode())
        h.update(b"\xff")
        h.update(m["content"].encode("utf-8", "surrogatepass"))
        h.update(b"\xfe")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One problem with one row: the row number as the user counts it, the field, and why."""

    row: int
    field: str | None  # None when the problem is the whole row (e.g. a line that is not JSON)
    reason: str

    def to_json(self) -> dict:
        return {"row": self.row, "field": self.field, "reason": self.reason}


@dataclass(slots=True)
class Rejected:
    """A row that is not used, with every problem found in it and what it held."""

    row: int
    issues: list[RowIssue]
    raw: object  # the parsed record, or the raw text when it could not be parsed

    def __post_init__(self) -> None:
        if not self.issues:
            raise ValueError(f"rejected row {self.row} has no issue: a row is only rejected for a reason")


@dataclass(slots=True)
class Example:
    """One valid row, normalized to chat messages plus metadata."""

    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    category: str
    id: str
    source: str  # where the row came from: its `source` field, else the file name
    row: int  # line (JSONL, text) or record (JSON, CSV, Parquet) number in the source file, from 1
    content_hash: str
    weight: float = 1.0  # relative draw probability within its category (see mixture.py)
    meta: dict = field(default_factory=dict)  # the row's other fields, e.g. fact_id
    tokens: int | None = None  # length with the model's chat template, when counted

    def __post_init__(self) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"weight {self.weight!r}: must be a positive number")
        if self.row < 1:
            raise ValueError(f"row {self.row}: rows are numbered from 1")

    def to_json(self) -> dict:
        """The example as a chat-format JSONL record; reading it back gives the same example."""
        out = {"messages": self.messages, "category": self.category, "id": self.id, "source": self.source}
        if self.weight != 1.0:
            out["weight"] = self.weight
        for key, value in self.meta.items():
            out.setdefault(key, value)  # our fields win over a same-named leftover column
        return out


def token_summary(counts: list[int]) -> dict | None:
    """min, median, p95 (nearest rank) and max of token counts, or None when there are none."""
    if not counts:
        return None
    s = sorted(counts)
    n = len(s)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    p95 = s[max(0, math.ceil(0.95 * n) - 1)]
    return {"min": s[0], "median": median, "p95": p95, "max": s[-1], "total": sum(s)}


@dataclass
class Dataset:
    """The valid examples of one file, plus every rejected row and warning: nothing is lost."""

    path: str
    file_type: str  # jsonl | json | csv | tsv | parquet | txt
    format: str | None  # the row shape (chat, sharegpt, ...); None when no row was an object
    examples: list[Example]
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[RowIssue] = field(default_factory=list)
    rows_in: int | None = None  # rows read; defaults to valid + rejected
    max_length: int | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rows_in is None:
            self.rows_in = len(self.examples) + len(self.rejected)
        if self.rows_in != len(self.examples) + len(self.rejected):
            valid, rejected = len(self.examples), len(self.rejected)
            raise ValueError(f"rows_in {self.rows_in} != {valid} valid + {rejected} rejected: a row went missing")

    @property
    def rows_valid(self) -> int:
        return len(self.examples)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)

    @property
    def errors(self) -> list[RowIssue]:
        return [issue for r in self.rejected for issue in r.issues]

    def categories(self) -> dict[str, int]:
        """Valid rows per category, largest first."""
        counts = Counter(e.category for e in self.examples)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def token_counts(self) -> list[int]:
        return [e.tokens for e in self.examples if e.tokens is not None]

    @property
    def truncated_rows(self) -> int | None:
        """Rows longer than max_length (they would be cut), or None when lengths were not counted."""
        if self.max_length is None or not any(e.tokens is not None for e in self.examples):
            return None
        return sum(1 for n in self.token_counts() if n > self.max_length)

    def subset(self, examples: list[Example], note: str | None = None) -> "Dataset":
        """A dataset of some of these examples (e.g. one side of a split), keeping their warnings."""
        rows = {e.row for e in examples}
        return Dataset(
            path=self.path,
            file_type=self.file_type,
            format=self.format,
            examples=list(examples),
            warnings=[w for w in self.warnings if w.row in rows],
            max_length=self.max_length,
            notes=self.notes + ([note] if note else []),
        )

    def to_json(self, examples: bool = False) -> dict:
        """The report: counts, every error and warning, categories, token statistics."""
        out = {
            "path": self.path,
            "file_type": self.file_type,
            "format": self.format,
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_rejected": self.rows_rejected,
            "errors": [e.to_json() for e in self.errors],
            "warnings": [w.to_json() for w in self.warnings],
            "categories": self.categories(),
            "tokens": token_summary(self.token_counts()),
            "max_length": self.max_length,
            "truncated_rows": self.truncated_rows,
            "notes": self.notes,
        }
        if examples:
            out["examples"] = [e.to_json() for e in self.examples]
        return out


def _json_line(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _write_lines(path: str | Path, lines: list[str]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                try:
                    f.write(line + "\n")
                except UnicodeEncodeError:
                    # A lone surrogate from a "\udXXX" escape cannot be UTF-8: keep it as an escape.
                    f.write(json.dumps(json.loads(line)) + "\n")
    except OSError as e:
        raise LoraEqError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def write_jsonl(examples: list[Example], path: str | Path) -> Path:
    """Write examples as chat-format JSONL (messages + category, id, source, weight, metadata)."""
    return _write_lines(path, [_json_line(e.to_json()) for e in examples])


def write_rejects(dataset: Dataset, path: str | Path) -> Path:
    """Write every rejected row, one JSON object a line: {row, errors: [{field, reason}], record}."""
    lines = [
        _json_line(
            {"row": r.row, "errors": [{"field": i.field, "reason": i.reason} for i in r.issues], "record": r.raw}
        )
        for r in dataset.rejected
    ]
    return _write_lines(path, lines)
