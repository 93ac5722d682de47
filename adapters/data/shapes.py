"""Row shapes: recognize chat, ShareGPT, Alpaca, Dolly, prompt/completion, question/answer and text
rows, and turn one row into chat messages, reporting each field that is wrong.

    chat               {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
    sharegpt           {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...]}
    alpaca             {"instruction", "input" (optional), "output"}
    dolly              {"instruction", "context" (optional), "response", "category"}
    prompt_completion  {"prompt", "completion"}
    question_answer    {"question", "answer"}
    text               {"text"} (and every row of a .txt file): one assistant turn

A user's own column names map onto these with `Fields` (`--map SRC=DST`); messages name the user's
own field. Metadata (category, id, weight, source) and the conversation rules (roles, order, the
last turn) are checked in `validate.py`; this file only builds the messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable

from adapters.errors import LoraEqError

from .readers import _kind

Issues = list[tuple[str | None, str]]  # (field as the user names it, reason)
_MISSING = object()


@dataclass(frozen=True)
class Fields:
    """Where our field names live in the user's rows: `mapping` is {their name: our name}."""

    mapping: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        targets: dict[str, str] = {}
        for src, dst in self.mapping:
            if not (isinstance(src, str) and isinstance(dst, str) and src.strip() and dst.strip()):
                raise LoraEqError(f"column mapping {src!r}={dst!r}: both names must be non-empty text")
            if dst in targets:
                raise LoraEqError(f"column mapping: {targets[dst]!r} and {src!r} both map to {dst!r}")
            targets[dst] = src

    @classmethod
    def of(cls, mapping: dict[str, str] | None) -> "Fields":
        return cls(tuple((mapping or {}).items()))

    def __call__(self, ours: str) -> str:
        """The user's key for our field `ours`."""
        for src, dst in self.mapping:
            if dst == ours:
                return src
        return ours

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """{our name: their key} for `names`, computed once per file (rows are many)."""
        return {n: self(n) for n in names}


@dataclass(frozen=True)
class Shape:
    name: str
    signatures: tuple[tuple[str, ...], ...]  # key sets (our names) any of which marks a row of this shape
    fields: tuple[str, ...]  # the keys this shape consumes (our names); the rest become metadata
    build: Callable[[dict, dict[str, str], Issues], list[dict[str, str]] | None]
    describe: str


def _text(row: dict, key: str, issues: Issues, required: bool = True) -> str | None:
    """The text in `row[key]`; a missing, null, empty or non-text value is an issue when required."""
    value = row.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            issues.append((key, "missing" if value is _MISSING else "missing (null)"))
        return None if required else ""
    if not isinstance(value, str):
        issues.append((key, f"wrong type: expected text, got {_kind(value)}"))
        return None
    if required and not value.strip():
        issues.append((key, "empty"))
        return None
    return value


def _turn_list(row: dict, key: str, issues: Issues) -> list | None:
    value = row.get(key, _MISSING)
    if value is _MISSING or value is None:
        issues.append((key, "missing" if value is _MISSING else "missing (null)"))
        return None
    if isinstance(value, str):  # a CSV cell holding the list as JSON
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            issues.append((key, "wrong type: expected a list of turns, got text that is not a JSON list"))
            return None
    if not isinstance(value, list):
        issues.append((key, f"wrong type: expected a list of turns, got {_kind(value)}"))
        return None
    if not value:
        issues.append((key, "empty"))
        return None
    return value


def _turns(
    row: dict, k: dict[str, str], list_key: str, role_key: str, text_key: str, roles: dict[str, str], issues: Issues
) -> list[dict[str, str]] | None:
    turns = _turn_list(row, k[list_key], issues)
    if turns is None:
        return None
    out, before = [], len(issues)
    allowed = ", ".join(dict.fromkeys(roles))
    for i, turn in enumerate(turns):
        where = f"{k[list_key]}[{i}]"
        if not isinstance(turn, dict):
            want = f"an object with {k[role_key]} and {k[text_key]}"
            issues.append((where, f"wrong type: expected {want}, got {_kind(turn)}"))
            continue
        role = turn.get(k[role_key], _MISSING)
        if role is _MISSING or role is None:
            issues.append((f"{where}.{k[role_key]}", "missing"))
        elif not isinstance(role, str):
            issues.append((f"{where}.{k[role_key]}", f"wrong type: expected text, got {_kind(role)}"))
        elif role not in roles:
            issues.append((f"{where}.{k[role_key]}", f"unknown role {role[:40]!r}: use {allowed}"))
        sub: Issues = []
        content = _text(turn, k[text_key], sub)
        issues.extend((f"{where}.{f}", r) for f, r in sub)
        if len(issues) == before:
            out.append({"role": roles[role], "content": content})
    return out if len(issues) == before else None


_CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
# ShareGPT exports also use user/assistant; both spellings are common in the wild.
_SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}


def _chat(row: dict, k: dict[str, str], issues: Issues):
    return _turns(row, k, "messages", "role", "content", _CHAT_ROLES, issues)


def _sharegpt(row: dict, k: dict[str, str], issues: Issues):
    return _turns(row, k, "conversations", "from", "value", _SHAREGPT_ROLES, issues)


def _pair(row: dict, k: dict[str, str], issues: Issues, prompt: str, extra: str | None, answer: str):
    """A user turn (prompt, plus the optional extra text after a blank line) and an assistant turn."""
    user = _text(row, k[prompt], issues)
    more = _text(row, k[extra], issues, required=False) if extra else ""
    reply = _text(row, k[answer], issues)
    if user is None or more is None or reply is None:
        return None
    if more.strip():
        user = f"{user}\n\n{more}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def _plain(row: dict, k: dict[str, str], issues: Issues):
    text = _text(row, k["text"], issues)
    return None if text is None else [{"role": "assistant", "content": text}]


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("chat", (("messages",),), ("messages", "role", "content"), _chat, "messages: [{role, content}]"),
        Shape(
            "sharegpt", (("conversations",),), ("conversations", "from", "value"), _sharegpt,
            "conversations: [{from, value}]",
        ),
        Shape(
            "alpaca", (("instruction", "output"),), ("instruction", "input", "output"),
            lambda r, k, i: _pair(r, k, i, "instruction", "input", "output"), "instruction, input, output",
        ),
        Shape(
            "dolly", (("instruction", "response"),), ("instruction", "context", "response"),
            lambda r, k, i: _pair(r, k, i, "instruction", "context", "response"),
            "instruction, context, response, category",
        ),
        Shape(
            "prompt_completion", (("prompt", "completion"),), ("prompt", "completion"),
            lambda r, k, i: _pair(r, k, i, "prompt", None, "completion"), "prompt, completion",
        ),
        Shape(
            "question_answer", (("question", "answer"),), ("question", "answer"),
            lambda r, k, i: _pair(r, k, i, "question", None, "answer"), "question, answer",
        ),
        Shape("text", (("text",),), ("text",), _plain, "text"),
    )
}
FORMATS = tuple(SHAPES)
# The top-level keys that mark a JSON object as a row (for a .json file holding a single row).
ROW_KEYS = frozenset(key for s in SHAPES.values() for sig in s.signatures for key in sig)
_DETECT_ROWS = 1000  # rows looked at to recognize the shape


def detect_shape(rows: Iterable[dict], fields: Fields) -> str | None:
    """The shape most rows (of the first 1000 objects) match; ties go to the earlier shape."""
    signatures = [(s.name, [[fields(key) for key in sig] for sig in s.signatures]) for s in SHAPES.values()]
    votes = dict.fromkeys(SHAPES, 0)
    for n, row in enumerate(rows):
        if n >= _DETECT_ROWS:
            break
        for name, sigs in signatures:
            if any(all(key in row for key in sig) for sig in sigs):
                votes[name] += 1
    best = max(votes, key=lambda name: votes[name])  # max keeps the first of equals
    return best if votes[best] else None


def format_help() -> str:
    return "; ".join(f"{s.name} ({s.describe})" for s in SHAPES.values())
