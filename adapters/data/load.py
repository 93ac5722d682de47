"""`load_dataset`: one data file in, a validated `Dataset` out, with every row accounted for.

Read the rows (`readers.py`), recognize or take the shape (`shapes.py`), build each row's messages
and metadata, check the conversation (`validate.py`), drop exact duplicates (content hash), and
optionally count tokens with a model's tokenizer (`stats.py`), warning about rows longer than
`max_length`. A row with any problem is rejected with every reason found; the valid rows of a
partly broken file are kept; `rows_in == rows_valid + rows_rejected` always. A file that cannot
be read at all raises `LoraEqError`.
"""

from __future__ import annotations

import gc
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from adapters.errors import LoraEqError

from .readers import RawRow, _keys, _kind, read_file
from .records import Dataset, Example, Rejected, RowIssue, content_hash
from .shapes import FORMATS, ROW_KEYS, SHAPES, Fields, Issues, Shape, detect_shape, format_help
from .stats import with_token_counts
from .validate import META_FIELDS, category_of, check_conversation, id_of, jsonable, source_of, weight_of


def load_dataset(
    path: str | Path,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    max_length: int | None = None,
    tokenizer=None,
    *,
    file_type: str | None = None,
) -> Dataset:
    """Read, normalize and validate `path`.

    format: the row shape (one of `FORMATS`); None recognizes it from the rows' keys.
    mapping: {their column: our field}, e.g. {"reply": "completion", "speaker": "role"}.
    max_length: warn about rows longer than this many tokens (needs `tokenizer`).
    tokenizer: a Hugging Face tokenizer; with it every example gets its token count.
    file_type: jsonl | json | csv | tsv | parquet | txt; None takes it from the name or content.
    """
    if format is not None and format not in SHAPES:
        raise LoraEqError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise LoraEqError(f"max_length {max_length!r}: must be a positive integer")
    if max_length is not None and tokenizer is None:
        raise LoraEqError("max_length needs a tokenizer to count tokens")
    fields = Fields.of(mapping)
    with _no_collection():
        raw = read_file(path, file_type, ROW_KEYS | {src for src, _ in fields.mapping})
        if not raw.rows:
            raise LoraEqError(f"{path}: holds no rows")
        shape = _choose_shape(raw.file_type, raw.rows, format, fields, path)
        examples, rejected = _validate_rows(raw.rows, shape, fields, Path(path).name)
    dataset = Dataset(str(path), raw.file_type, shape, examples, rejected, notes=raw.notes)
    return with_token_counts(dataset, tokenizer, max_length) if tokenizer is not None else dataset


@contextmanager
def _no_collection():
    """Pause the cyclic garbage collector while rows are built.

    A big file creates millions of small dicts and lists and no reference cycles; the collector
    would rescan the growing heap again and again, which more than doubles the reading time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _choose_shape(file_type: str, rows: list[RawRow], format: str | None, fields: Fields, path) -> str | None:
    if file_type == "txt":
        if format not in (None, "text"):
            raise LoraEqError(f"{path}: a plain-text file holds text rows, not {format!r}")
        return "text"
    if format:
        return format
    objects = [r.value for r in rows if r.problem is None and isinstance(r.value, dict)]
    shape = detect_shape(objects, fields)
    if shape is None and objects:
        keys = Counter(k for o in objects[:1000] for k in o)
        raise LoraEqError(
            f"{path}: cannot tell the format from the keys ({_keys(k for k, _ in keys.most_common())}); "
            f"expected {format_help()}. Name it with --format or rename keys with --map SRC=DST"
        )
    return shape


def _validate_rows(
    rows: list[RawRow], shape: str | None, fields: Fields, file_name: str
) -> tuple[list[Example], list[Rejected]]:
    examples: list[Example] = []
    rejected: list[Rejected] = []
    spec = SHAPES[shape] if shape else None
    k = fields.resolve((spec.fields if spec else ()) + META_FIELDS)
    consumed = frozenset(k.values())
    seen_content: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    for raw in rows:
        if raw.problem is not None:
            rejected.append(Rejected(raw.row, [RowIssue(raw.row, None, raw.problem)], raw.value))
            continue
        if not isinstance(raw.value, dict) or spec is None:  # spec is None only when no row is an object
            reason = f"wrong type: expected an object, got {_kind(raw.value)}"
            rejected.append(Rejected(raw.row, [RowIssue(raw.row, None, reason)], raw.value))
            continue
        issues: Issues = []
        example = _example(raw, spec, k, consumed, file_name, issues)
        if example is not None and not issues:
            _check_unique(example, seen_content, seen_id, k["id"], issues)
        if issues:
            rejected.append(Rejected(raw.row, [RowIssue(raw.row, f, r) for f, r in issues], raw.value))
        else:
            examples.append(example)
    return examples, rejected


def _example(
    raw: RawRow, spec: Shape, k: dict[str, str], consumed: frozenset[str], file_name: str, issues: Issues
) -> Example | None:
    """The row as an Example, or None with the reasons added to `issues`."""
    row = raw.value
    messages = spec.build(row, k, issues)
    if messages is not None:
        list_key = k.get("messages") or k.get("conversations") or "messages"
        role_key = k.get("role") or k.get("from") or "role"
        check_conversation(messages, list_key, role_key, issues)
    category = category_of(row, k["category"], issues)
    ident = id_of(row, k["id"], f"{file_name}:{raw.row}", issues)
    weight = weight_of(row, k["weight"], issues)
    source = source_of(row, k["source"], file_name, issues)
    if issues or messages is None:
        return None
    meta = {key: jsonable(v) for key, v in row.items() if key not in consumed}
    return Example(messages, category, ident, source, raw.row, content_hash(messages), weight, meta)


def _check_unique(
    example: Example, seen_content: dict[str, int], seen_id: dict[str, int], id_key: str, issues: Issues
) -> None:
    """Exact duplicates (same conversation) and reused ids: the first row wins, later ones are rejected."""
    first = seen_content.setdefault(example.content_hash, example.row)
    if first != example.row:
        issues.append((None, f"exact duplicate of row {first}"))
        return
    first = seen_id.setdefault(example.id, example.row)
    if first != example.row:
        del seen_content[example.content_hash]
        issues.append((id_key, f"id {example.id[:40]!r} is already used by row {first}"))
