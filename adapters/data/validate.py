"""Row rules that hold for every shape: the conversation's order and the metadata fields.

A conversation may open with one system turn, never has two turns of the same role in a row, and
ends with an assistant turn (the turn the model learns to write). Metadata: `category` (text;
none means "uncategorized"), `id` (text or integer; default "<file name>:<row>"), `weight` (a
positive number, default 1), `source` (text; default the file name); every other field is kept as
metadata. This file does not read files or build messages (`readers.py`, `shapes.py`).
"""

from __future__ import annotations

import math

from .readers import _kind
from .records import UNCATEGORIZED
from .shapes import Issues

META_FIELDS = ("category", "id", "weight", "source")


def check_conversation(messages: list[dict[str, str]], where: str, role_key: str, issues: Issues) -> None:
    """Order rules; `where` and `role_key` name the user's own fields in the messages."""
    previous = None
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system" and i > 0:
            issues.append((f"{where}[{i}].{role_key}", "a system turn may only come first"))
        elif role == previous:
            issues.append((f"{where}[{i}].{role_key}", f"two {role} turns in a row"))
        previous = role
    if messages[-1]["role"] != "assistant":
        issues.append((where, "does not end with an assistant turn"))


def category_of(row: dict, key: str, issues: Issues) -> str:
    value = row.get(key)
    if value is None or value == "":
        return UNCATEGORIZED
    if not isinstance(value, str):
        issues.append((key, f"wrong type: expected text, got {_kind(value)}"))
        return UNCATEGORIZED
    return value.strip() or UNCATEGORIZED


def id_of(row: dict, key: str, default: str, issues: Issues) -> str:
    value = row.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        issues.append((key, f"wrong type: expected text or an integer, got {_kind(value)}"))
        return default
    return str(value).strip() or default


def weight_of(row: dict, key: str, issues: Issues) -> float:
    value = row.get(key)
    if value is None or value == "":
        return 1.0
    if isinstance(value, str):  # CSV cells are text
        try:
            value = float(value)
        except ValueError:
            issues.append((key, f"wrong type: expected a number, got text {value[:40]!r}"))
            return 1.0
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        issues.append((key, f"wrong type: expected a number, got {_kind(value)}"))
        return 1.0
    try:
        weight = float(value)
    except OverflowError:  # an integer too large for a float
        weight = math.inf
    if not (weight > 0 and math.isfinite(weight)):
        issues.append((key, f"must be a positive number, got {value!r:.40}"))
        return 1.0
    return weight


def source_of(row: dict, key: str, default: str, issues: Issues) -> str:
    value = row.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        issues.append((key, f"wrong type: expected text, got {_kind(value)}"))
        return default
    return value


def jsonable(value: object) -> object:
    """`value` with anything JSON cannot hold (bytes, dates, NaN, ...) turned into text or null."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
