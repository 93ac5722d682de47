"""Checks on one answer, in promptfoo's vocabulary: parse an `assert` entry, then judge an answer.

Supported types (each also as `not-TYPE`, which passes exactly when TYPE fails):

    equals         the answer is exactly `value`
    contains       `value` is in the answer (icontains: ignoring case)
    contains-any   one of `value` (a list, or comma-separated text) is in it (icontains-any)
    contains-all   all of `value` are in it (icontains-all)
    starts-with    the answer begins with `value`
    regex          `value` (a Python regular expression) matches somewhere in the answer
    levenshtein    edit distance to `value` (default: the reference) <= `threshold` (default 5)
    similar        MiniLM cosine to `value` (a text or a list: the best counts; default: the
                   reference) >= `threshold` (default 0.75, promptfoo's)
    style          a style probe (style.py) says the answer is in the style of `value`'s examples,
                   probability >= `threshold` (default 0.5); `contrast` optionally names what the
                   style is told apart from (default: the base model's own answers)

No check runs away: each has a time limit (`judge`'s `seconds`, default `Limits.check_seconds`,
2 s). A regular expression runs on the `regex` engine, which stops a match at that limit (it
counts the process's CPU time); the edit distance looks at the clock between rows; the other
checks are linear in the answer. A check over its limit fails its cell (negated or not) with
"check timed out after 2 s", and the run goes on.

The judged checks (llm-rubric, model-graded-closedqa, factuality, select-best: judge.py) parse
here and are ruled by a judge model in evalrun.py; `judge` below never runs them.
A promptfoo type we do not run (javascript, is-json, ...) parses into `Unsupported`,
which the eval set reports with its test; a type no one knows (a typo) is a `LoraEqError`.
`{{var}}` substitution happens before (evalset.py). Similarities and style probabilities are
computed elsewhere and handed in (`Evidence`): nothing here embeds, generates or trains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import regex

from adapters.errors import LoraEqError
from adapters.limits import Limits

JUDGED = ("llm-rubric", "model-graded-closedqa", "factuality", "select-best")  # ruled by a judge (judge.py)
SUPPORTED = ("equals", "contains", "icontains", "contains-any", "icontains-any", "contains-all", "icontains-all",
             "starts-with", "regex", "levenshtein", "similar", "style") + JUDGED
ALIASES = {"model-graded-factuality": "factuality"}  # promptfoo's other name for it
# promptfoo's other assertion types: reported as unsupported, never an error and never silently skipped.
PROMPTFOO_OTHERS = frozenset("""
answer-relevance assert-set bleu classifier context-faithfulness context-recall context-relevance contains-html
contains-json contains-sql contains-xml conversation-relevance cost finish-reason f-score g-eval gleu
guardrails is-html is-json is-refusal is-sql is-valid-function-call is-valid-openai-function-call
is-valid-openai-tools-call is-xml javascript latency max-score meteor
moderation perplexity perplexity-score pi python rouge-n ruby search-rubric
tool-call-f1 trace-error-spans trace-span-count trace-span-duration webhook word-count human
""".split())
SIMILAR_THRESHOLD = 0.75  # promptfoo's default for `similar`
LEVENSHTEIN_THRESHOLD = 5.0  # promptfoo's default for `levenshtein`
STYLE_THRESHOLD = 0.5
_NEEDS_VALUE = ("equals", "contains", "icontains", "contains-any", "icontains-any", "contains-all",
                "icontains-all", "starts-with", "regex", "style", "llm-rubric", "model-graded-closedqa", "select-best")


@dataclass(frozen=True)
class Check:
    """One parsed check: a supported type, maybe negated, with its value and threshold."""

    type: str  # one of SUPPORTED, without "not-"
    negate: bool = False
    value: object = None  # text, a tuple of texts, or (style) the examples' source
    threshold: float | None = None
    contrast: object = None  # style only: what the style is told apart from (None: the base's answers)

    def __post_init__(self) -> None:
        if self.type not in SUPPORTED:
            raise LoraEqError(f"check type {self.type!r}: not one of {', '.join(SUPPORTED)}")
        if self.threshold is not None and not isinstance(self.threshold, (int, float)):
            raise LoraEqError(f"{self.name}: threshold {self.threshold!r} must be a number")

    @property
    def judged(self) -> bool:
        """Ruled by a judge model (judge.py), not by `judge` here."""
        return self.type in JUDGED

    @property
    def style_key(self) -> tuple:
        """Checks with the same examples and contrast share one style probe."""
        return (self.value, self.contrast)

    @property
    def name(self) -> str:
        return ("not-" if self.negate else "") + self.type

    def label(self) -> str:
        """The check as a user reads it: type and a short value."""
        if self.type == "style":
            return self.name
        value = self.value if isinstance(self.value, str) or self.value is None else ", ".join(self.value)
        value = "" if value is None else value if len(value) <= 40 else value[:39] + "…"
        return f"{self.name}: {value}" if value else self.name

    def to_json(self) -> dict:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"type": self.name, "value": value if self.type != "style" else str(self.value),
                "threshold": self.threshold}


@dataclass(frozen=True)
class Unsupported:
    """A promptfoo assertion this tool does not run, with why."""

    type: str
    reason: str


@dataclass(frozen=True)
class Evidence:
    """What judging one answer may need besides its text, computed by the caller."""

    reference: str | None = None
    cosine: object = None  # (text_a, text_b) -> cosine similarity of their embeddings
    style: dict = field(default_factory=dict)  # Check.style_key -> the probe's style probability for this answer


@dataclass(frozen=True)
class CheckResult:
    name: str
    label: str
    passed: bool | None  # None: a judge gave no verdict (never a pass)
    score: float | None = None
    detail: str = ""
    timed_out: bool = False
    judge: dict | None = None  # a judged check: the judge's name, prompt, raw reply and parsed verdict

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        if self.judge is None:
            del out["judge"]
        return out


def parse_check(raw: object, where: str = "assert") -> Check | Unsupported:
    """A check from a promptfoo-style `assert` entry ({type, value, threshold, ...})."""
    if not isinstance(raw, dict):
        raise LoraEqError(f"{where}: a check is an object with a type, got {type(raw).__name__}")
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise LoraEqError(f"{where}: a check needs a type (e.g. contains)")
    kind = kind.strip()
    negate, base = kind.startswith("not-"), kind.removeprefix("not-")
    base = ALIASES.get(base, base)
    if base == "select-best" and negate:
        raise LoraEqError(f"{where}: select-best cannot be negated (it picks one column of each prompt)")
    if base not in SUPPORTED:
        if base in PROMPTFOO_OTHERS:
            return Unsupported(kind, f"promptfoo's {base!r} is not run by LoRA EQ")
        raise LoraEqError(f"{where}: unknown check type {kind!r} (supported: {', '.join(SUPPORTED)}, each with not-)")
    value = _value(base, raw.get("value"), where, kind)
    threshold = _threshold(raw.get("threshold"), where, kind)
    if base == "regex":
        try:
            regex.compile(value)
        except (regex.error, OverflowError, RecursionError) as e:
            raise LoraEqError(f"{where}: {kind} value {value!r} is not a valid regular expression ({e})") from None
    contrast = raw.get("contrast") if base == "style" else None
    if contrast is not None and not (isinstance(contrast, str) or isinstance(contrast, list)):
        raise LoraEqError(f"{where}: {kind} contrast must be a file or a list of texts")
    return Check(base, negate, value, threshold, tuple(contrast) if isinstance(contrast, list) else contrast)


def _value(base: str, value: object, where: str, kind: str) -> object:
    if value is None or (isinstance(value, str) and not value):
        if base in _NEEDS_VALUE:
            raise LoraEqError(f"{where}: {kind} needs a value")
        return None
    if base == "style":
        return value if isinstance(value, str) else style_examples(value, f"{where}: {kind}")
    if base in ("contains-any", "icontains-any", "contains-all", "icontains-all", "similar"):
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) and base != "similar" else value
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items or not all(isinstance(v, (str, int, float)) for v in items):
            _bad(where, kind)
        return tuple(str(v) for v in items)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else _bad(where, kind)


def style_examples(items: object, where: str) -> tuple[tuple[str | None, str], ...]:
    """Style examples as (prompt or None, text) pairs, from a list of texts or {prompt, text} objects."""
    if not isinstance(items, (list, tuple)) or not items:
        raise LoraEqError(f"{where}: style examples are a file or a non-empty list")
    out = []
    for i, item in enumerate(items, 1):
        if isinstance(item, tuple) and len(item) == 2:
            prompt, text = item
        elif isinstance(item, dict):
            prompt, text = item.get("prompt"), item.get("text", item.get("answer"))
        else:
            prompt, text = None, item
        if not isinstance(text, str) or not text.strip() or not (prompt is None or isinstance(prompt, str)):
            raise LoraEqError(f"{where}: example {i} needs a text (and, optionally, the prompt it answers)")
        out.append((prompt, text))
    return tuple(out)


def _bad(where: str, kind: str):
    raise LoraEqError(f"{where}: {kind} has a value of the wrong kind (text, or a list of texts)")


def _threshold(value: object, where: str, kind: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LoraEqError(f"{where}: {kind} threshold {value!r} must be a number")
    return float(value)


class CheckTimeout(Exception):
    """A check passed its time limit."""


def levenshtein(a: str, b: str, deadline: float | None = None) -> int:
    """Edit distance (insertions, deletions, substitutions) between two texts; CheckTimeout once
    `time.process_time()` passes `deadline`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        if deadline is not None and time.process_time() > deadline:
            raise CheckTimeout()
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def judge(check: Check, answer: str, evidence: Evidence = Evidence(), seconds: float | None = None) -> CheckResult:
    """Whether `answer` passes `check` (see the module doc), with the score it was decided on;
    a check that runs past `seconds` (default `Limits.check_seconds`) fails as timed out."""
    if check.judged:
        raise LoraEqError(f"{check.name} is ruled by a judge model (evals/judge.py), not here")
    seconds = Limits.from_env().check_seconds if seconds is None else seconds
    try:
        passed, score, detail = _JUDGES[check.type](check, answer, evidence, time.process_time() + seconds)
    except CheckTimeout:
        return CheckResult(check.name, check.label(), False, None, f"check timed out after {seconds:g} s",
                           timed_out=True)
    if check.negate:
        passed = not passed
    return CheckResult(check.name, check.label(), bool(passed), score, detail)


def _text_judge(check: Check, answer: str, evidence: Evidence, deadline: float):
    fold = check.type.startswith("i")
    text = answer.lower() if fold else answer
    values = [check.value] if isinstance(check.value, str) else list(check.value)
    values = [v.lower() for v in values] if fold else values
    kind = check.type.removeprefix("i")
    if kind == "equals":
        return text == values[0], None, ""
    if kind == "starts-with":
        return text.startswith(values[0]), None, ""
    found = [v for v in values if v in text]
    if kind == "contains-all":
        missing = [v for v in values if v not in text]
        return not missing, None, f"missing: {', '.join(missing)}" if missing else ""
    return bool(found), None, f"found: {', '.join(found)}" if found else "none found"


def _regex_judge(check: Check, answer: str, evidence: Evidence, deadline: float):
    left = deadline - time.process_time()
    try:
        if left <= 0:
            raise TimeoutError()
        match = regex.search(check.value, answer, timeout=left)
    except TimeoutError:
        raise CheckTimeout() from None
    return match is not None, None, f"matched {match.group(0)!r}" if match else "no match"


def _target(check: Check, evidence: Evidence) -> list[str]:
    if check.value is not None:
        return [check.value] if isinstance(check.value, str) else list(check.value)
    if evidence.reference is None:
        raise LoraEqError(f"{check.name} has no value and its test no reference to compare with")
    return [evidence.reference]


def _levenshtein_judge(check: Check, answer: str, evidence: Evidence, deadline: float):
    threshold = LEVENSHTEIN_THRESHOLD if check.threshold is None else check.threshold
    distance = min(levenshtein(answer, t, deadline) for t in _target(check, evidence))
    return distance <= threshold, float(distance), f"distance {distance} (at most {threshold:g} passes)"


def _similar_judge(check: Check, answer: str, evidence: Evidence, deadline: float):
    if evidence.cosine is None:
        raise LoraEqError(f"{check.name}: no embedder was given to measure similarity")
    threshold = SIMILAR_THRESHOLD if check.threshold is None else check.threshold
    best = max(evidence.cosine(answer, t) for t in _target(check, evidence))
    return best >= threshold, round(best, 6), f"similarity {best:.3f} (at least {threshold:g} passes)"


def _style_judge(check: Check, answer: str, evidence: Evidence, deadline: float):
    if check.style_key not in evidence.style:
        raise LoraEqError(f"{check.name}: no style probe was fitted for this check")
    threshold = STYLE_THRESHOLD if check.threshold is None else check.threshold
    p = evidence.style[check.style_key]
    return p >= threshold, round(p, 6), f"style probability {p:.3f} (at least {threshold:g} passes)"


_JUDGES = {
    **{t: _text_judge for t in ("equals", "contains", "icontains", "contains-any", "icontains-any", "contains-all",
                                "icontains-all", "starts-with")},
    "regex": _regex_judge,
    "levenshtein": _levenshtein_judge,
    "similar": _similar_judge,
    "style": _style_judge,
}
