"""Judges: a model that grades answers, and how far it agrees with this user.

A judge is any local causal LM (`LocalJudge`: a Hub id, a folder or a GGUF, loaded once, outside
the compared columns) or any OpenAI-compatible endpoint (`UrlJudge`: `loraeq serve` included; the
key from `LORAEQ_JUDGE_API_KEY`). Both answer a list of prompts greedily; `JudgeUnavailable` names
an endpoint that does not answer.

The judged checks have promptfoo's meanings:

    llm-rubric             the answer satisfies `value`, a rubric
    model-graded-closedqa  the answer meets `value`, a criterion (Y or N)
    factuality             the answer agrees with `value`, a reference statement; promptfoo's five
                           categories A-E, where only (D), a disagreement, fails
    select-best            of all columns' answers to one prompt, the judge picks the one that best
                           meets `value`: that column passes, the others fail

and `pairwise` asks which of two answers is better in both orders: orders that disagree count as a
tie and as a position-bias event. Every ruling keeps the judge's prompt, its raw reply and what was
parsed from it; a reply that cannot be parsed is "judge gave no verdict", never a pass.

`reliability` compares a judge's verdicts with the user's own decisions on the same answers (cell
overrides and pass / fail votes, battle outcomes): the agreement rate, Cohen's kappa with a 95%
interval (Cohen's large-sample standard error), the position-bias rate, and whether the judge
counts: at least `MIN_DECISIONS` decisions and a kappa interval above 0 (agreement significantly
better than chance). `count_judged` drops the judged checks of judges that do not count from the
cells' verdicts: what the proof report and the eval-set pass rates are computed from.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from adapters.errors import LoraEqError

JUDGED = ("llm-rubric", "model-graded-closedqa", "factuality", "select-best")
KEY_ENV = "LORAEQ_JUDGE_API_KEY"
CHOICES_ENV = "LORAEQ_JUDGES"  # the web app's judges besides the built-in model: "NAME@URL,NAME@URL"
EMBEDDED = "embedded"  # --judge embedded: the built-in model
MIN_DECISIONS = 10
NO_VERDICT = "judge gave no verdict"
TOO_FEW = f"too few of your decisions to calibrate (n < {MIN_DECISIONS})"
Z95 = 1.959963984540054
JUDGE_TOKENS = 48  # a verdict and a short reason; a longer reply is cut, not waited for
RAW_CHARS = 4000  # what is kept (and parsed) of an endpoint's reply


class JudgeUnavailable(LoraEqError):
    """The judge could not be asked (an endpoint that does not answer, a model that does not load)."""


# ---- the judges -------------------------------------------------------------------------------


def judge_name(model: str | None = None, url: str | None = None, url_model: str | None = None) -> str:
    """The name a judge's rulings and battle picks are kept under."""
    if url:
        return f"{url_model} at {url.rstrip('/')}"
    return "the embedded model" if model in (None, EMBEDDED) else model


class LocalJudge:
    """A local causal LM as the judge: loaded once, answers greedily in batches."""

    def __init__(self, spec: str | None, precision: str = "auto", *, batch: int = 8,
                 max_new_tokens: int = JUDGE_TOKENS):
        from adapters.base.loading import load_model
        from adapters.infer.engine import CompareEngine

        self.name = judge_name(spec)
        self.batch, self.max_new_tokens = batch, max_new_tokens
        self.engine = CompareEngine(load_model(spec, precision), {})

    def replies(self, prompts: list[str]) -> list[str]:
        from adapters.infer.decoding import Sampling

        columns, sampling = self.engine.columns([]), Sampling(max_new_tokens=self.max_new_tokens)
        out: list[str] = []
        for start in range(0, len(prompts), self.batch):
            chunk = [[{"role": "user", "content": p}] for p in prompts[start:start + self.batch]]
            out += [row[0].text for row in self.engine.answer_many(chunk, columns, sampling=sampling)]
        return out

    def close(self) -> None:
        self.engine.close()


class UrlJudge:
    """An OpenAI-compatible chat endpoint as the judge (`url` ends before `/chat/completions`)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_tokens: int = JUDGE_TOKENS):
        if not re.match(r"https?://[^\s/]+", url or ""):
            raise LoraEqError(f"--judge-url {url!r}: give an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise LoraEqError("--judge-model: name the model the endpoint serves")
        self.url, self.model = url.rstrip("/"), model
        self.name = judge_name(url=url, url_model=model)
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        self.timeout, self.max_tokens = timeout, max_tokens
        self.refused: list[str] = []  # why the endpoint refused single prompts (their rulings: no verdict)

    def _ask(self, prompt: str) -> str | None:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + "/chat/completions", body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500 and e.code not in (401, 403, 404, 429):  # this prompt refused, not the judge
                self.refused.append(f"HTTP {e.code}: {_error_text(e)}")
                return None
            raise JudgeUnavailable(f"judge {self.url} answered HTTP {e.code}: {_error_text(e)}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeUnavailable(f"judge {self.url} does not answer ({reason})") from None
        try:
            return str(reply["choices"][0]["message"]["content"] or "")[:RAW_CHARS]
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailable(f"judge {self.url} answered without choices[0].message.content") from None

    def replies(self, prompts: list[str]) -> list[str | None]:
        """The endpoint's reply to each prompt (None where it refused that prompt); raises
        JudgeUnavailable when it does not answer at all."""
        return [self._ask(p) for p in prompts]

    def close(self) -> None:
        pass


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read(4096))["error"]["message"]
    except Exception:  # noqa: BLE001 (any body: the status says enough)
        return error.reason or "no reason given"


def make_judge(model: str | None = None, url: str | None = None, url_model: str | None = None,
               precision: str = "auto"):
    """The judge the flags name: `url` (with `url_model`) for an endpoint, else `model` ("embedded":
    the built-in model); None when neither is given."""
    if url:
        return UrlJudge(url, url_model or "")
    if url_model:
        raise LoraEqError("--judge-model names the model at --judge-url: give --judge-url too")
    if not model:
        return None
    return LocalJudge(None if model == EMBEDDED else model, precision)


def judge_choices() -> dict[str, list[str]]:
    """The judges a served app offers (label -> the `loraeq` judge flags): the built-in model, and
    the endpoints its operator lists in LORAEQ_JUDGES ("NAME@URL", comma-separated). A hosted app
    never fetches a URL or loads a model that a user types: that would let any visitor make the
    server call into its own network or fill its memory."""
    out = {"the built-in model": ["--judge", EMBEDDED]}
    for entry in filter(None, (e.strip() for e in os.environ.get(CHOICES_ENV, "").split(","))):
        name, at, url = entry.partition("@")
        if not at or not name or not re.match(r"https?://[^\s/]+", url):
            raise LoraEqError(f"{CHOICES_ENV}: {entry!r} is not NAME@URL (e.g. judge@http://127.0.0.1:8000/v1)")
        out[f"{name} at {url}"] = ["--judge-url", url, "--judge-model", name]
    return out


NO_JUDGE = "no judge"


def judge_labels() -> list[str]:
    """A served app's judge choices: no judge, then the judges its operator offers."""
    return [NO_JUDGE, *judge_choices()]


def judge_flags(label) -> list[str]:
    """The `loraeq` flags of an offered judge's label ([] for no judge); any other label is refused:
    a served app never asks a URL or loads a model a user names."""
    if label in (None, "", NO_JUDGE):
        return []
    offered = judge_choices()
    if not isinstance(label, str) or label not in offered:
        raise LoraEqError(f"judge {str(label)[:60]!r}: choose one of the judges offered "
                          f"({', '.join(judge_labels())})")
    return list(offered[label])


def flags_name(flags: list[str]) -> str:
    """The name the judge these flags name keeps its rulings and picks under, without loading it."""
    def value(flag: str) -> str | None:
        return flags[flags.index(flag) + 1] if flag in flags else None

    return judge_name(value("--judge"), value("--judge-url"), value("--judge-model"))


# ---- prompts and parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ruling:
    """One judged check on one answer: the judge's prompt, raw reply, what was parsed, the verdict
    (None: no verdict), and why there is none."""

    prompt: str
    raw: str | None
    parsed: object
    verdict: bool | None
    why: str = ""

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "raw": self.raw, "parsed": self.parsed}


def rubric_prompt(kind: str, value: str, question: str, answer: str, reference: str | None = None) -> str:
    """The judge's prompt for one answer and a per-answer judged check (not select-best)."""
    if kind == "llm-rubric":
        return (f"You grade an answer against a rubric.\nRubric: {value}\nQuestion: {question}\nAnswer: {answer}\n"
                "Does the answer satisfy the rubric? Reply PASS or FAIL, then one sentence why.")
    if kind == "model-graded-closedqa":
        return (f"[BEGIN DATA]\n[Task]: {question}\n[Submission]: {answer}\n[Criterion]: {value}\n[END DATA]\n"
                "Does the submission meet the criterion? Reply Y or N, then one sentence why.")
    if kind == "factuality":
        return (f"Compare the factual content of a submitted answer with an expert answer.\nQuestion: {question}\n"
                f"Expert: {value or reference or ''}\nSubmission: {answer}\nReply with one letter:\n"
                "(A) the submission is a subset of the expert answer and consistent with it\n"
                "(B) the submission is a superset of the expert answer and consistent with it\n"
                "(C) the submission has the same details as the expert answer\n"
                "(D) the submission and the expert answer disagree\n"
                "(E) they differ, but the differences do not matter for factuality")
    raise LoraEqError(f"{kind}: not a per-answer judged check")


def best_prompt(value: str, question: str, answers: list[str]) -> str:
    listed = "\n".join(f"Output {i}: {a}" for i, a in enumerate(answers))
    return (f"Pick the output that best meets the criteria.\nCriteria: {value}\nQuestion: {question}\n{listed}\n"
            f"Reply with the number of the best output only (0 to {len(answers) - 1}).")


def pair_prompt(question: str, first: str, second: str) -> str:
    return (f"Which answer to the question is better?\nQuestion: {question}\nAnswer A: {first}\nAnswer B: {second}\n"
            "Reply A, B or TIE.")


_WORDS = {"pass": True, "passes": True, "passed": True, "yes": True, "y": True, "true": True,
          "fail": False, "fails": False, "failed": False, "no": False, "n": False, "false": False}


def _json_pass(raw: str) -> bool | None:
    match = re.search(r"\{.*\}", raw, re.S)
    if not match:
        return None
    try:
        value = json.loads(match.group(0)).get("pass")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


_MEETS = re.compile(r"\b(satisf\w*|meets?|fulfil\w*|compl(?:y|ies))\b", re.I)
_NOT = re.compile(r"\bnot\b|\bnever\b|\bfails?\b|n't\b", re.I)


def parse_pass(raw: str) -> bool | None:
    """PASS / FAIL (Y / N, yes / no, or promptfoo's JSON {"pass": ...}) at the start of a reply, or a
    first sentence that says the answer does (not) satisfy / meet the rubric, as small models
    write it; anything else (both PASS and FAIL, no such verb) is no verdict."""
    text = raw or ""
    if text.lstrip().startswith("{"):  # JSON: its "pass" alone decides
        return _json_pass(text)
    word = re.match(r"\W*([A-Za-z]+)", text)
    if word and word.group(1).lower() in _WORDS:
        return _WORDS[word.group(1).lower()]
    first = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0][:300]
    if not _MEETS.search(first) or (re.search(r"\bpass\b", first, re.I) and re.search(r"\bfail\b", first, re.I)):
        return None
    return not _NOT.search(first)


def parse_letter(raw: str, choices: tuple[str, ...]) -> str | None:
    """The choice a reply starts with ("(D)", "D.", "Answer: B", "tie"), upper-cased; None if none."""
    match = re.match(r"\W*(?:(?:answer|output|option|verdict|choice)\b\W*)?\(?([A-Za-z]+)\)?(?:\W|$)",
                     raw or "", re.I)
    word = match.group(1).upper() if match else None
    return word if word in choices else None


def parse_index(raw: str, n: int) -> int | None:
    match = re.match(r"\W*(?:(?:output|answer|option)\b\W*)?(\d+)\b", raw or "", re.I)
    return int(match.group(1)) if match and int(match.group(1)) < n else None


def rule(kind: str, prompt: str, raw: str | None, negate: bool = False) -> Ruling:
    """A per-answer judged check's ruling from the judge's raw reply."""
    if raw is None:
        return Ruling(prompt, None, None, None, NO_VERDICT)
    if kind == "factuality":
        letter = parse_letter(raw, ("A", "B", "C", "D", "E"))
        verdict = None if letter is None else letter != "D"
        parsed: object = letter
    else:
        verdict = parse_pass(raw)
        parsed = None if verdict is None else ("pass" if verdict else "fail")
    if verdict is None:
        return Ruling(prompt, raw, None, None, NO_VERDICT)
    return Ruling(prompt, raw, parsed, verdict != negate)


@dataclass(frozen=True)
class Pairwise:
    """Which of two answers the judge prefers, asked in both orders."""

    winner: str | None  # "a", "b", "tie", or None (no verdict)
    position_bias: bool  # the two orders disagreed
    rulings: tuple[Ruling, Ruling]

    def to_json(self) -> dict:
        return {"winner": self.winner, "position_bias": self.position_bias,
                "rulings": [r.to_json() for r in self.rulings]}


def pairwise_many(judge, items: list[tuple[str, str, str]]) -> list[Pairwise]:
    """For each (question, a, b): the judge's pick, asked as (a, b) and as (b, a)."""
    prompts = [p for q, a, b in items for p in (pair_prompt(q, a, b), pair_prompt(q, b, a))]
    raws = judge.replies(prompts)
    out = []
    for k in range(len(items)):
        picks = []
        for prompt, raw, flip in ((prompts[2 * k], raws[2 * k], False), (prompts[2 * k + 1], raws[2 * k + 1], True)):
            letter = parse_letter(raw, ("A", "B", "TIE"))
            pick = None if letter is None else "tie" if letter == "TIE" else ("b" if letter == "A" else "a") \
                if flip else ("a" if letter == "A" else "b")
            picks.append((Ruling(prompt, raw, letter, None if pick is None else pick != "tie",
                                 "" if pick else NO_VERDICT), pick))
        (r1, p1), (r2, p2) = picks
        if p1 is None or p2 is None:
            out.append(Pairwise(None, False, (r1, r2)))
        elif p1 == p2:
            out.append(Pairwise(p1, False, (r1, r2)))
        else:
            out.append(Pairwise("tie", "tie" not in (p1, p2), (r1, r2)))
    return out


# ---- reliability ------------------------------------------------------------------------------


def reliability(pairs: list[tuple[object, object]], position_bias: tuple[int, int] | None = None) -> dict:
    """How the judge's labels (first of each pair) agree with the user's (second): n, agreement,
    Cohen's kappa with its 95% interval, the position-bias rate (events, asked), whether it counts."""
    n = len(pairs)
    out: dict = {"n": n, "agreement": None, "kappa": None, "kappa_ci": None, "position_bias": None,
                 "counted": False, "note": TOO_FEW if n < MIN_DECISIONS else ""}
    if position_bias is not None and position_bias[1]:
        out["position_bias"] = round(position_bias[0] / position_bias[1], 4)
    if not n:
        return out
    po = sum(j == u for j, u in pairs) / n
    labels = {x for pair in pairs for x in pair}
    pe = sum((sum(j == k for j, _ in pairs) / n) * (sum(u == k for _, u in pairs) / n) for k in labels)
    out["agreement"] = round(po, 4)
    if pe >= 1:  # both always said the same one thing: agreement says nothing about the judge
        out["note"] = out["note"] or "your decisions and the judge's are all one label: kappa is undefined"
        return out
    kappa = (po - pe) / (1 - pe)
    se = math.sqrt(po * (1 - po) / (n * (1 - pe) ** 2))
    low, high = max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)
    out.update(kappa=round(kappa, 4), kappa_ci=[round(low, 4), round(high, 4)])
    if n >= MIN_DECISIONS:
        out["counted"] = low > 0
        out["note"] = ("agrees with you significantly better than chance: counted" if low > 0 else
                       "not significantly better than chance (kappa's interval reaches 0): not counted")
    return out


def judge_line(j: dict) -> str:
    """One judge's reliability as a user reads it (a `count_judged` entry)."""
    who = f"{j['check']} (judge {j['judge']})" if j.get("judge") else j["check"]
    if j["agreement"] is None:
        said = f"no decisions of yours on its cells yet ({TOO_FEW})"
    else:
        kappa = "undefined" if j["kappa"] is None else \
            f"{j['kappa']:.2f} [{j['kappa_ci'][0]:.2f}, {j['kappa_ci'][1]:.2f}]"
        said = f"agrees with {j['agreement']:.0%} of your {j['n']} decisions, kappa {kappa}; {j['note']}"
    bias = "" if j.get("position_bias") is None else f"; position bias {j['position_bias']:.0%}"
    counted = "counted" if j["counted"] else "not counted in pass rates or the proof"
    return f"{who}: {said}{bias} -> {counted}"


def combine(verdicts: list[bool | None]) -> bool | None:
    """A cell's verdict from its checks': any fail fails; else any without a verdict leaves none."""
    if any(v is False for v in verdicts):
        return False
    if any(v is None for v in verdicts) or not verdicts:
        return None
    return True


def is_judged(name: str) -> bool:
    return name.removeprefix("not-") in JUDGED


def count_judged(cells: list[dict]) -> tuple[list[dict], list[dict]]:
    """The cells with each verdict recomputed from the checks that count, and one reliability per
    judged check type: its verdicts against the user's overrides on the same cells (`apply_votes`).
    A judged check counts only where its judge agrees with the user significantly better than chance."""
    names = sorted({r["name"] for c in cells for r in c.get("checks", []) if is_judged(r["name"])})
    judges = []
    for name in names:
        pairs = [(r["passed"], c["override"] == "pass") for c in cells if c.get("override") in ("pass", "fail")
                 for r in c.get("checks", []) if r["name"] == name and r["passed"] is not None]
        given = [r for c in cells for r in c.get("checks", []) if r["name"] == name]
        judges.append({"check": name, "judge": next((r.get("judge", {}).get("name") for r in given
                                                     if r.get("judge")), None),
                       "verdicts": sum(r["passed"] is not None for r in given), "asked": len(given),
                       **reliability(pairs)})
    dropped = {j["check"] for j in judges if not j["counted"]}
    if not dropped:
        return cells, judges
    out = []
    for cell in cells:
        kept = [r["passed"] for r in cell.get("checks", []) if r["name"] not in dropped]
        out.append({**cell, "passed": combine(kept) if kept else None})
    return out, judges
