"""Classification rows: `text`, optional `text_pair`, `label`, in every file type the readers know.

`load_classification` reads a file (`readers.py`), maps the user's columns (`--map SRC=DST`,
e.g. `instruction=text category=label`), checks every row (text present and non-empty, a label
present, a pair that is text when given, the same text twice) and then rejects the rows of a
label seen only once: such a class can be neither held out nor learned. The result is the same
`Dataset` the chat data gives, so the mixture (quotas by label) and the stratified held-out split
work unchanged: an example is the conversation [user: text, assistant: label] with the label as
its category and the pair in its metadata. `rows(dataset)` reads (text, pair, label) back.

This module does not tokenize, train or predict; it has no opinion on which labels are wanted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import LoraEqError

from .readers import _kind, read_file
from .records import Dataset, Example, Rejected, RowIssue, content_hash
from .shapes import Fields
from .validate import id_of, jsonable, source_of

FORMAT = "classification"
FIELDS = ("text", "text_pair", "label")
PAIR = "text_pair"


@dataclass(frozen=True)
class LabeledRow:
    """One classification row as the model reads it."""

    text: str
    label: str
    text_pair: str | None = None


def load_classification(
    path: str | Path,
    mapping: dict[str, str] | None = None,
    *,
    file_type: str | None = None,
    min_per_label: int = 2,
) -> Dataset:
    """Read and validate classification rows (see the module docstring). `min_per_label`: rows
    of a label seen fewer times are rejected (1 keeps them, as when a run's split is read back)."""
    fields = Fields.of(mapping)
    k = fields.resolve(FIELDS + ("id", "source"))
    raw = read_file(path, file_type, frozenset(k.values()))
    if not raw.rows:
        raise LoraEqError(f"{path}: holds no rows")
    examples, rejected = [], []
    seen: dict[str, tuple[int, str]] = {}
    for r in raw.rows:
        issues = [(None, r.problem)] if r.problem is not None else []
        example = None if issues else _example(r.value, r.row, k, Path(path).name, issues)
        if example is not None and not issues:
            _check_unique(example, seen, k["label"], issues)
        if issues:
            rejected.append(Rejected(r.row, [RowIssue(r.row, f, why) for f, why in issues], r.value))
        else:
            examples.append(example)
    examples, rejected = _rare_labels(examples, rejected, min_per_label, k["label"])
    rejected.sort(key=lambda x: x.row)
    return Dataset(str(path), raw.file_type, FORMAT, examples, rejected, notes=raw.notes)


def _example(row: object, number: int, k: dict[str, str], file_name: str, issues: list) -> Example | None:
    if not isinstance(row, dict):
        issues.append((None, f"wrong type: expected an object with {k['text']!r} and {k['label']!r}, got {_kind(row)}"))
        return None
    text = _text(row, k["text"], issues, required=True)
    pair = _text(row, k[PAIR], issues, required=False)
    label = _label(row, k["label"], issues)
    ident = id_of(row, k["id"], f"{file_name}:{number}", issues)
    source = source_of(row, k["source"], file_name, issues)
    if issues:
        return None
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    consumed = {k[f] for f in FIELDS + ("id", "source")}
    meta = {key: jsonable(v) for key, v in row.items() if key not in consumed}
    if pair is not None:
        meta[PAIR] = pair
    return Example(messages, label, ident, source, number, _text_hash(text, pair), 1.0, meta)


def _text(row: dict, key: str, issues: list, required: bool) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            issues.append((key, "missing"))
        return None
    if not isinstance(value, str):
        issues.append((key, f"wrong type: expected text, got {_kind(value)}"))
        return None
    if not value.strip():
        issues.append((key, "empty"))
        return None
    return value


def _label(row: dict, key: str, issues: list) -> str | None:
    value = row.get(key)
    if value is None:
        issues.append((key, "missing label"))
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        issues.append((key, f"wrong type: a label is text or a whole number, got {_kind(value)}"))
        return None
    label = str(value).strip()
    if not label:
        issues.append((key, "empty label"))
        return None
    return label


def _text_hash(text: str, pair: str | None) -> str:
    """Same text (and pair) = same hash, whatever the label: such rows must not straddle the split."""
    messages = [{"role": "user", "content": text}] + ([{"role": "user", "content": pair}] if pair else [])
    return content_hash(messages)


def _check_unique(example: Example, seen: dict[str, tuple[int, str]], label_key: str, issues: list) -> None:
    first, label = seen.setdefault(example.content_hash, (example.row, example.category))
    if first == example.row:
        return
    if label == example.category:
        issues.append((None, f"exact duplicate of row {first}"))
    else:
        issues.append((label_key, f"the same text as row {first}, labelled {label!r} there and {example.category!r} here"))


def _rare_labels(examples: list[Example], rejected: list[Rejected], least: int, key: str):
    counts = Counter(e.category for e in examples)
    rare = {label for label, n in counts.items() if n < least}
    if not rare:
        return examples, rejected
    for e in examples:
        if e.category in rare:
            why = f"label {e.category!r} is seen in {counts[e.category]} row(s): a class needs at least {least}"
            rejected.append(Rejected(e.row, [RowIssue(e.row, key, why)], _raw(e)))
    return [e for e in examples if e.category not in rare], rejected


def _raw(e: Example) -> dict:
    return {"text": e.messages[0]["content"], "label": e.category, **e.meta}


def rows(dataset: Dataset) -> list[LabeledRow]:
    """(text, label, pair) of every example of a classification dataset, or of a run's split
    written as chat rows (user: text, assistant: label, the pair in the metadata)."""
    return [LabeledRow(e.messages[0]["content"], e.category, e.meta.get(PAIR)) for e in dataset.examples]


def label_set(dataset: Dataset) -> list[str]:
    """The labels of a dataset in a fixed order (sorted), the order of a classifier's outputs."""
    labels = sorted({e.category for e in dataset.examples})
    if len(labels) < 2:
        named = f" ({labels[0]!r})" if labels else ""
        raise LoraEqError(f"{Path(dataset.path).name}: the label column has {len(labels)} class{named}; "
                          "a classifier needs at least 2")
    return labels
