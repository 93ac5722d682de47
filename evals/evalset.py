"""Eval sets: prompts with optional references and checks, read from a data file or a promptfoo config.

    load_evalset("set.jsonl")            # JSONL / JSON / CSV / TSV / Parquet rows
    load_evalset("promptfooconfig.yaml") # promptfoo: prompts x tests
    heldout_evalset(run_dir)             # a run's held-out split (answers become references)

A row has `prompt` (or `messages`, a chat context ending with the user's turn; a last assistant
turn becomes the reference), and optionally `reference`, `system`, `assert` (a list of checks,
checks.py; in CSV a JSON list) and `tags` (a list, or comma-separated text; else its `category`), `id`.
A promptfoo config gives `prompts` (templates with `{{var}}`), `tests` (each with `vars` and
`assert`), `defaultTest` (vars and asserts every test gets) and `description`: every prompt x test
is one case. Its `providers` are not used (the columns are the base and the chosen variants): a
note says so. A style check's examples may name a file in the set's folder or the run's held-out
split (`heldout`); they are read here, once. Files outside the set's folder are refused.

Validated like training data: a bad row (no prompt, an unknown check, a template variable the test
does not set) is kept in `rejected` with its number and reason, nothing is dropped silently; a
promptfoo assertion we do not run is listed in `unsupported` with its test, and the case runs its
other checks. A file that cannot be read at all (broken YAML) raises `LoraEqError`, and so does
one past the limits: more rows (or prompts x tests) than `Limits.rows`, a YAML file too big or
whose aliases expand too far (adapters/files/yamlfile.py).
Nothing here generates or judges answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from adapters.data.readers import read_file
from adapters.errors import LoraEqError
from adapters.files.yamlfile import load_yaml
from adapters.limits import Limits, check_rows
from adapters.train.runfolder import split_path

from .checks import Check, Unsupported, parse_check, style_examples

YAML_SUFFIXES = (".yaml", ".yml")
HELDOUT = "heldout"
_VAR = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_ROW_KEYS = frozenset({"prompt", "messages"})


@dataclass(frozen=True)
class EvalCase:
    """One prompt of an eval set with what it is judged by."""

    id: str  # how the user finds it: "row 3", "test 2 / prompt 1"
    messages: tuple  # the chat context, ending with the user's turn (no system message)
    system: str | None = None
    reference: str | None = None
    checks: tuple[Check, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]

    @property
    def history(self) -> list[dict]:
        return [dict(m) for m in self.messages[:-1]]

    def to_json(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "history": self.history, "system": self.system,
                "reference": self.reference, "checks": [c.to_json() for c in self.checks], "tags": list(self.tags)}


@dataclass
class EvalSet:
    name: str
    source: str
    cases: list[EvalCase]
    rejected: list[dict] = field(default_factory=list)  # {row, reason}
    unsupported: list[dict] = field(default_factory=list)  # {test, type, reason}
    notes: list[str] = field(default_factory=list)
    description: str | None = None

    def style_checks(self) -> list[Check]:
        """The distinct style checks (one probe each)."""
        return list({c.style_key: c for case in self.cases for c in case.checks if c.type == "style"}.values())

    def with_checks(self, extra: list[Check]) -> EvalSet:
        """Every case with `extra` checks added (e.g. a style check for the whole set)."""
        cases = [replace(c, checks=c.checks + tuple(extra)) for c in self.cases]
        return replace(self, cases=cases)


def load_evalset(path: str | Path, run_dir: str | Path | None = None) -> EvalSet:
    """The eval set in `path` (see the module doc); `run_dir` lets style checks name `heldout`."""
    path = Path(path)
    if str(path) == HELDOUT:
        if run_dir is None:
            raise LoraEqError("the held-out split as an eval set needs a run")
        return heldout_evalset(run_dir)
    if path.suffix.lower() in YAML_SUFFIXES:
        return _promptfoo_set(path, run_dir)
    raw = read_file(path, row_keys=_ROW_KEYS)
    out = EvalSet(path.stem, str(path), [], notes=list(raw.notes))
    for r in raw.rows:
        where = f"row {r.row}"
        try:
            if r.problem:
                raise LoraEqError(r.problem)
            case, unsupported = _row_case(r.value, where, path.parent, run_dir)
        except LoraEqError as e:
            out.rejected.append({"row": where, "reason": str(e)})
            continue
        out.cases.append(case)
        out.unsupported += [{"test": case.id, "type": u.type, "reason": u.reason} for u in unsupported]
    return _checked(out)


def heldout_evalset(run_dir: str | Path) -> EvalSet:
    """A run's held-out split as an eval set: each row's last answer is its reference."""
    path = split_path(run_dir, "heldout")
    if not path.is_file():
        raise LoraEqError(f"{run_dir}: the run has no held-out split ({path.name})")
    evalset = load_evalset(path)
    evalset.name, evalset.notes = HELDOUT, evalset.notes + ["the run's held-out split: its answers are the references"]
    return evalset


def _checked(evalset: EvalSet) -> EvalSet:
    if not evalset.cases and not evalset.rejected:
        raise LoraEqError(f"{evalset.source}: the eval set has no prompt")
    return evalset


def _row_case(value: object, where: str, folder: Path, run_dir) -> tuple[EvalCase, list[Unsupported]]:
    if not isinstance(value, dict):
        raise LoraEqError(f"a row is an object with a prompt, got {type(value).__name__}")
    messages, reference = _messages(value)
    reference = _optional_text(value, "reference") or reference
    checks, unsupported = _checks(_assert_list(value.get("assert")), where, folder, run_dir)
    category = (value["category"],) if isinstance(value.get("category"), str) else ()
    case = EvalCase(str(value.get("id") or where), messages, _optional_text(value, "system"), reference,
                    tuple(checks), _tags(value.get("tags")) or category)
    return case, unsupported


def _messages(value: dict) -> tuple[tuple, str | None]:
    """The chat context ending with the user's turn, and a trailing assistant turn as reference."""
    if isinstance(value.get("prompt"), str) and value["prompt"].strip():
        return ({"role": "user", "content": value["prompt"]},), None
    messages = value.get("messages")
    if messages is None:
        raise LoraEqError("needs a prompt (or messages)")
    if not isinstance(messages, list) or not messages:
        raise LoraEqError("messages must be a non-empty list of {role, content}")
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system") \
                or not isinstance(m.get("content"), str):
            raise LoraEqError(f"message {i} needs a role (user/assistant/system) and text content")
    reference = None
    if messages[-1]["role"] == "assistant":
        reference, messages = messages[-1]["content"], messages[:-1]
    chat = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
    if not chat or chat[-1]["role"] != "user" or not chat[-1]["content"].strip():
        raise LoraEqError("messages must end with the user's turn (or the user's turn and its answer)")
    return tuple(chat), reference


def _optional_text(value: dict, key: str) -> str | None:
    text = value.get(key)
    if text is None or (isinstance(text, float) and text != text):  # a blank CSV / Parquet cell
        return None
    if not isinstance(text, str):
        raise LoraEqError(f"{key} must be text, got {type(text).__name__}")
    return text if text.strip() else None


def _assert_list(raw: object) -> list:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):  # a CSV cell holds the list as JSON
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise LoraEqError(f"assert is not a JSON list ({e})") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise LoraEqError(f"assert must be a list of checks, got {type(raw).__name__}")
    return raw


def _tags(raw: object) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        return tuple(t.strip() for t in raw.split(",") if t.strip())
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return tuple(raw)
    raise LoraEqError("tags must be a list of texts or comma-separated text")


def _checks(raw: list, where: str, folder: Path, run_dir) -> tuple[list[Check], list[Unsupported]]:
    checks, unsupported = [], []
    for i, item in enumerate(raw, 1):
        parsed = parse_check(item, f"check {i}")
        if isinstance(parsed, Unsupported):
            unsupported.append(parsed)
        else:
            checks.append(resolve_style(parsed, folder, run_dir) if parsed.type == "style" else parsed)
    return checks, unsupported


def resolve_style(check: Check, folder: Path, run_dir) -> Check:
    """A style check with its examples (and a contrast given as a file) read into (prompt, text) pairs."""
    value = read_style_examples(check.value, folder, run_dir) if isinstance(check.value, str) else check.value
    contrast = check.contrast
    if contrast is not None:
        contrast = read_style_examples(contrast, folder, run_dir) if isinstance(contrast, str) \
            else style_examples(contrast, "style contrast")
    return replace(check, value=value, contrast=contrast)


def read_style_examples(source: str, folder: Path = Path("."), run_dir=None) -> tuple:
    """(prompt, text) pairs from a file of chat rows, {prompt, text} rows or text rows, or `heldout`."""
    if source == HELDOUT:
        if run_dir is None:
            raise LoraEqError("style examples 'heldout' need a run")
        path = split_path(run_dir, "heldout")
    else:
        path = inside(folder, source)
    raw = read_file(path, row_keys=frozenset({"messages", "text", "prompt"}))
    pairs = []
    for r in raw.rows:
        if r.problem or not isinstance(r.value, dict):
            raise LoraEqError(f"style examples {path.name} row {r.row}: {r.problem or 'not an object'}")
        pairs.append(_example_pair(r.value, f"style examples {path.name} row {r.row}"))
    return style_examples(pairs, f"style examples {path.name}")


def inside(folder: Path, name: str) -> Path:
    """A file an eval set names, refused unless it lies in the set's own folder (an uploaded set
    must not read the server's files)."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise LoraEqError(f"{name}: an eval set may only name files in its own folder")
    return path


def _example_pair(value: dict, where: str) -> tuple[str | None, str]:
    messages = value.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant":
        users = [m.get("content") for m in messages[:-1] if isinstance(m, dict) and m.get("role") == "user"]
        return (users[-1] if users else None), messages[-1].get("content")
    text = value.get("text", value.get("answer", value.get("reference")))
    if not isinstance(text, str):
        raise LoraEqError(f"{where}: needs messages ending with an answer, or a text")
    return value.get("prompt"), text


# ---- promptfoo configs ------------------------------------------------------------------------


def _promptfoo_set(path: Path, run_dir) -> EvalSet:
    config = _read_yaml(path)
    prompts = _prompt_templates(config.get("prompts"), path)
    default = config.get("defaultTest") or {}
    if not isinstance(default, dict):
        raise LoraEqError(f"{path}: defaultTest must be a mapping")
    tests = config.get("tests") or [{}]
    if not isinstance(tests, list):
        raise LoraEqError(f"{path}: tests must be a list (tests from a file are not read)")
    check_rows(len(prompts) * len(tests), Limits.from_env().rows, f"{path}: its prompts x tests")
    out = EvalSet(path.stem, str(path), [], description=config.get("description"))
    out.notes += _ignored_notes(config)
    for t, test in enumerate(tests, 1):
        name = f"test {t}"
        try:
            cases, unsupported = _test_cases(test, default, prompts, name, path.parent, run_dir)
        except LoraEqError as e:
            out.rejected.append({"row": name, "reason": str(e)})
            continue
        out.cases += cases
        out.unsupported += [{"test": name, "type": u.type, "reason": u.reason} for u in unsupported]
    return _checked(out)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LoraEqError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise LoraEqError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    config = load_yaml(text, str(path))
    if not isinstance(config, dict):
        raise LoraEqError(f"{path}: a promptfoo config is a mapping with prompts and tests")
    return config


def _prompt_templates(raw: object, path: Path) -> list[str]:
    raw = raw if isinstance(raw, list) else [raw] if raw is not None else []
    templates = []
    for i, p in enumerate(raw, 1):
        text = p.get("raw") if isinstance(p, dict) else p
        if isinstance(text, str) and text.startswith("file://"):
            file = inside(path.parent, text.removeprefix("file://"))
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as e:
                raise LoraEqError(f"{path}: prompt {i}: cannot read {file.name} ({e.strerror or e})") from None
        if not isinstance(text, str) or not text.strip():
            raise LoraEqError(f"{path}: prompt {i} is not a text template")
        templates.append(text)
    if not templates:
        raise LoraEqError(f"{path}: the config has no prompts")
    return templates


def _ignored_notes(config: dict) -> list[str]:
    notes = []
    providers = config.get("providers")
    if providers:
        names = [p if isinstance(p, str) else (p.get("id") if isinstance(p, dict) else str(p)) for p in
                 (providers if isinstance(providers, list) else [providers])]
        notes.append(f"providers ignored ({', '.join(map(str, names))}): the columns are the base and the chosen "
                     "variants")
    known = {"description", "prompts", "providers", "tests", "defaultTest"}
    extra = sorted(k for k in config if k not in known)
    if extra:
        notes.append(f"config keys not used: {', '.join(map(str, extra))}")
    return notes


def _test_cases(test: object, default: dict, prompts: list[str], name: str, folder: Path, run_dir):
    if not isinstance(test, dict):
        raise LoraEqError("a test is a mapping with vars and assert")
    variables = {**(default.get("vars") or {}), **(test.get("vars") or {})}
    if any(isinstance(v, list) for v in variables.values()):
        raise LoraEqError("vars with lists (promptfoo's combinations) are not supported: write one test each")
    raw = _assert_list(default.get("assert")) + _assert_list(test.get("assert"))
    checks, unsupported = _checks(_fill(raw, variables), name, folder, run_dir)
    reference = test.get("reference", variables.get("reference"))
    cases = []
    for i, template in enumerate(prompts, 1):
        prompt = _fill(template, variables)
        case_id = f"{name} / prompt {i}" + (f" ({test['description']})" if test.get("description") else "")
        cases.append(EvalCase(case_id, ({"role": "user", "content": prompt},), None,
                              str(reference) if reference is not None else None, tuple(checks)))
    return cases, unsupported


def _fill(value: object, variables: dict) -> object:
    """`{{var}}` replaced in text, and in the texts inside lists and mappings."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in variables:
                raise LoraEqError(f"the template uses {{{{{m.group(1)}}}}}, which the test's vars do not set")
            return str(variables[m.group(1)])

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_fill(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, variables) for k, v in value.items()}
    return value
