"""Read a data file into numbered raw rows: JSONL, JSON, CSV/TSV, Parquet, plain text.

Each row keeps the number a user would look for: the line for JSONL and text, the record for
JSON, CSV (1 = the first record after the header) and Parquet. A row that cannot be parsed (a line
that is not JSON, a CSV record with the wrong number of fields) is kept with the reason, so the
caller can reject it; a file that cannot be read at all raises `LoraEqError` with one line saying
where it broke. Text is UTF-8 with or without a BOM, with LF or CRLF line ends. A file of more
rows than `Limits.rows` (LORAEQ_LIMIT_ROWS) is refused, naming the limit, as soon as the reader
passes it.

This file knows nothing about row shapes (chat, Alpaca, ...) or validation.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.limits import Limits, check_rows

try:  # orjson (a gradio dependency) parses faster; plain json is the reference and the fallback
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet", "txt")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
}
# A "\udXXX" escape in JSON text may decode to a lone surrogate, which no tokenizer or UTF-8 file takes.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_HALF_CHARACTER = "not valid Unicode: a \\udXXX escape that is half of a character"
# Long text in one CSV cell (a whole document) is normal here; the csv default caps a field at 128 KiB.
csv.field_size_limit(2**31 - 1)


@dataclass(slots=True)
class RawRow:
    row: int  # as the user counts it: line (JSONL, text) or record (JSON, CSV, Parquet), from 1
    value: object  # the parsed record, or the raw text when `problem` is set
    problem: str | None = None  # why the row could not be parsed


@dataclass
class RawFile:
    path: Path
    file_type: str
    rows: list[RawRow]
    notes: list[str] = field(default_factory=list)


def file_type_of(path: Path, data: bytes | None = None) -> str | None:
    """The file type from the name, else from the first bytes; None when neither tells."""
    by_name = _EXTENSIONS.get(path.suffix.lower())
    if by_name or data is None:
        return by_name
    if data[:4] == b"PAR1":
        return "parquet"
    head = data.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return {b"[": "json", b"{": "json"}.get(head)  # "{": the JSON reader falls back to JSONL


def read_file(path: str | Path, file_type: str | None = None, row_keys: frozenset[str] = frozenset(),
              max_rows: int | None = None) -> RawFile:
    """All rows of `path` (type from `file_type`, the name, or the first bytes).

    `row_keys`: keys that mark a top-level JSON object as one row rather than a holder of rows.
    `max_rows`: more rows than this are refused (None: `Limits.rows` from the environment).
    """
    path = Path(path)
    limit = Limits.from_env().rows if max_rows is None else max_rows
    if file_type is not None and file_type not in FILE_TYPES:
        raise LoraEqError(f"file type {file_type!r}: choose one of {', '.join(FILE_TYPES)}")
    data = _read_bytes(path)
    kind = file_type or file_type_of(path, data)
    if kind is None:
        raise LoraEqError(
            f"{path}: cannot tell the file type from its name or content; pass --file-type ({', '.join(FILE_TYPES)})"
        )
    if kind == "parquet":
        return RawFile(path, kind, _parquet_rows(path, data, limit))
    text = decode(path, data)
    if kind == "jsonl":
        return RawFile(path, kind, _jsonl_rows(text, limit, path))
    if kind == "json":
        raw = _json_file(path, text, row_keys, limit)
    elif kind in ("csv", "tsv"):
        raw = RawFile(path, kind, _csv_rows(path, text, "," if kind == "csv" else "\t", limit))
    else:
        raw = RawFile(path, kind, _text_rows(text))
    check_rows(len(raw.rows), limit, str(path))
    return raw


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise LoraEqError(f"{path}: no such file")
    if path.is_dir():
        raise LoraEqError(f"{path}: is a folder, not a data file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoraEqError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data.removeprefix(codecs.BOM_UTF8).strip():
        raise LoraEqError(f"{path}: the file is empty")
    return data


def decode(path: Path, data: bytes) -> str:
    """UTF-8 text without its BOM, or a one-line error naming the first bad byte and its line."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise LoraEqError(f"{path}: is UTF-16 text; save it as UTF-8")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise LoraEqError(
            f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}); save it as UTF-8"
        ) from None


def parse_json(text: str) -> tuple[object, str | None]:
    """(value, None), or (None, why) when `text` is not JSON or holds a lone surrogate."""
    if _fast_loads is not None:
        try:
            return _fast_loads(text), None
        except Exception:  # orjson.JSONDecodeError, or a value orjson refuses and json takes (NaN, big ints)
            pass  # json decides, and says where the line broke
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg} at column {e.colno}"
    except ValueError as e:  # e.g. an integer longer than Python converts
        return None, f"not JSON: {str(e).split(':')[0]}"
    except RecursionError:
        return None, "not JSON: nested too deeply"
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        return None, _HALF_CHARACTER
    return value, None


def _has_lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _jsonl_rows(text: str, limit: int, path: Path) -> list[RawRow]:
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue  # blank lines are not rows
        if len(rows) == limit:
            check_rows(limit + 1, limit, str(path))
        value, problem = parse_json(line)
        rows.append(RawRow(number, line.rstrip("\r") if problem else value, problem))
    return rows


def _json_file(path: Path, text: str, row_keys: frozenset[str], limit: int) -> RawFile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        first = text[: e.pos].strip()
        if e.msg == "Extra data" and first.startswith("{") and "\n" not in first:
            # One object per line in a file named .json: that is JSONL.
            return RawFile(path, "jsonl", _jsonl_rows(text, limit, path), ["one JSON object per line: read as JSONL"])
        raise LoraEqError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except ValueError as e:
        raise LoraEqError(f"{path}: not valid JSON: {str(e).split(':')[0]}") from None
    except RecursionError:
        raise LoraEqError(f"{path}: not valid JSON: nested too deeply") from None
    records, notes = _json_records(path, doc, row_keys)
    check_rows(len(records), limit, str(path))
    check = _SURROGATE_ESCAPE.search(text) is not None
    rows = [
        RawRow(i, r, _HALF_CHARACTER if check and _has_lone_surrogate(r) else None) for i, r in enumerate(records, 1)
    ]
    return RawFile(path, "json", rows, notes)


def _json_records(path: Path, doc: object, row_keys: frozenset[str]) -> tuple[list, list[str]]:
    """The rows of a JSON document: a list, an object holding one list, or one row object."""
    if isinstance(doc, list):
        return doc, []
    if not isinstance(doc, dict):
        raise LoraEqError(f"{path}: the JSON holds {_kind(doc)}, not a list of rows")
    if row_keys & doc.keys():
        return [doc], ["the JSON object is one row"]
    lists = [k for k, v in doc.items() if isinstance(v, list)]
    if len(lists) == 1:
        return doc[lists[0]], [f"rows read from the list under {lists[0]!r}"]
    if not lists:
        raise LoraEqError(f"{path}: the JSON object holds no list of rows (keys: {_keys(doc)})")
    raise LoraEqError(f"{path}: the JSON object holds several lists ({_keys(lists)}); keep one list of rows")


def _csv_rows(path: Path, text: str, delimiter: str, limit: int) -> list[RawRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] = []
    rows: list[RawRow] = []
    number = 0
    while True:
        start = reader.line_num + 1  # the line the next record begins on
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise LoraEqError(f"{path}: CSV breaks in the record starting at line {start}: {e}") from None
        blank = not any(cell.strip() for cell in record)
        if not header:
            if not blank:
                header = _check_header(path, [h.strip() for h in record], start)
            continue
        number += 1  # blank lines keep their number, as a spreadsheet shows them, but are not rows
        if blank:
            continue
        if len(rows) == limit:
            check_rows(limit + 1, limit, str(path))
        value = {name: cell for name, cell in zip(header, record) if name}
        problem = None
        if len(record) != len(header):
            problem = f"has {len(record)} fields, the header has {len(header)} (line {start})"
        rows.append(RawRow(number, value, problem))
    return rows


def _check_header(path: Path, header: list[str], line: int) -> list[str]:
    """The header as it is; unnamed columns (a saved index) are ignored, repeated names refused."""
    seen: set[str] = set()
    for name in filter(None, header):
        if name in seen:
            raise LoraEqError(f"{path}: column {name!r} appears twice in the header (line {line})")
        seen.add(name)
    return header


def _parquet_rows(path: Path, data: bytes, limit: int) -> list[RawRow]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        count = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows  # the footer says, before any row is read
    except Exception:  # a damaged file: read_table below says how
        count = None
    if count is not None:
        check_rows(count, limit, str(path))
    try:
        records = pq.read_table(pa.BufferReader(data)).to_pylist()
    except Exception as e:  # pyarrow raises many kinds of error for a damaged file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise LoraEqError(f"{path}: not a readable Parquet file ({type(e).__name__}: {first})") from None
    return [RawRow(i, r) for i, r in enumerate(records, 1)]


def _text_rows(text: str) -> list[RawRow]:
    """Paragraphs (blocks between blank lines) as rows; a file with no blank line: one row per line."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    blank = [not line.strip() for line in lines]
    if all(blank):
        return []
    first = blank.index(False)
    last = len(blank) - 1 - blank[::-1].index(False)
    if not any(blank[first:last]):
        return [RawRow(i, {"text": line}) for i, line in enumerate(lines, 1) if line.strip()]
    rows, block, start = [], [], 0
    for i, line in enumerate(lines, 1):
        if blank[i - 1]:
            if block:
                rows.append(RawRow(start, {"text": "\n".join(block)}))
            block = []
        else:
            start = start if block else i
            block.append(line)
    if block:
        rows.append(RawRow(start, {"text": "\n".join(block)}))
    return rows


def _kind(value: object) -> str:
    """A JSON-ish name for the type of `value`, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _keys(keys) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
