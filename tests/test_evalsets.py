"""Eval sets without a model: every check type on hand-made answers, the style probe on synthetic
embeddings, eval-set files (rows and promptfoo configs) with their errors, and the matrix statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapters.errors import LoraEqError
from evals.checks import Check, Evidence, Unsupported, judge, levenshtein, parse_check
from evals.evalset import load_evalset
from evals.matrix import summarize, verdict
from evals.style import fit_logistic, fit_probe

HERE = Path(__file__).resolve().parent


def _judge(raw: dict, answer: str, **evidence) -> bool:
    check = parse_check(raw)
    assert isinstance(check, Check)
    return judge(check, answer, Evidence(**evidence)).passed


def _fake_cosine(a: str, b: str) -> float:
    """Word-overlap (Jaccard) similarity: enough to tell near from far on hand-made answers."""
    x, y = set(a.lower().split()), set(b.lower().split())
    return len(x & y) / len(x | y) if x | y else 1.0


# (check, a passing answer, a failing answer): each also checked in its not- form.
CASES = [
    ({"type": "equals", "value": "Paris"}, "Paris", "paris"),
    ({"type": "contains", "value": "Bonjour"}, "Bonjour le monde", "bonjour le monde"),
    ({"type": "icontains", "value": "BONJOUR"}, "bonjour le monde", "Salut"),
    ({"type": "contains-any", "value": ["cat", "dog"]}, "a dog", "a bird"),
    ({"type": "icontains-any", "value": "Cat, Dog"}, "A DOG", "a bird"),
    ({"type": "contains-all", "value": ["red", "blue"]}, "red and blue", "red only"),
    ({"type": "icontains-all", "value": ["Red", "Blue"]}, "RED and BLUE", "BLUE only"),
    ({"type": "starts-with", "value": "Yes"}, "Yes, indeed", "Well, yes"),
    ({"type": "regex", "value": r"\d{4}-\d{2}"}, "on 2024-05", "on May 2024"),
    ({"type": "levenshtein", "value": "kitten", "threshold": 3}, "sitting", "a dog"),
    ({"type": "similar", "value": "the cat sat on the mat", "threshold": 0.6}, "the cat sat on a mat", "dogs bark"),
]


@pytest.mark.parametrize("raw,good,bad", CASES, ids=[c[0]["type"] for c in CASES])
def test_each_check_passes_and_fails_and_its_not_form_inverts_it(raw, good, bad):
    assert _judge(raw, good, cosine=_fake_cosine)
    assert not _judge(raw, bad, cosine=_fake_cosine)
    negated = {**raw, "type": "not-" + raw["type"]}
    assert not _judge(negated, good, cosine=_fake_cosine)
    assert _judge(negated, bad, cosine=_fake_cosine)


def test_similar_and_levenshtein_default_to_the_reference_and_promptfoos_thresholds():
    ref = "the cat sat on the mat today"
    assert _judge({"type": "similar"}, "the cat sat on the mat", reference=ref, cosine=_fake_cosine)  # 5/6 >= 0.75
    assert not _judge({"type": "similar"}, "the cat sat", reference=ref, cosine=_fake_cosine)  # 3/6 < 0.75
    assert not _judge({"type": "levenshtein"}, "the cat sat on the mat", reference=ref)  # distance 6 > 5
    assert _judge({"type": "levenshtein"}, "the cat sat on the mat tod", reference=ref)  # distance 2
    result = judge(parse_check({"type": "levenshtein", "value": "abcdef"}), "abcdefghijk")
    assert result.passed and result.score == 5.0  # at most 5 passes
    assert not judge(parse_check({"type": "levenshtein", "value": "abcdef"}), "abcdefghijkl").passed
    with pytest.raises(LoraEqError, match="no reference"):
        judge(parse_check({"type": "similar"}), "x", Evidence(cosine=_fake_cosine))


def test_levenshtein_distance_hand_cases():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("same", "same") == 0


def test_style_check_reads_the_probe_probability_and_its_threshold():
    check = parse_check({"type": "style", "value": ["autumn leaves", "woodsmoke", "maples", "harvest"]})
    assert judge(check, "x", Evidence(style={check.style_key: 0.8})).passed
    assert not judge(check, "x", Evidence(style={check.style_key: 0.3})).passed
    strict = parse_check({"type": "not-style", "value": ["a", "b", "c", "d"], "threshold": 0.9})
    assert judge(strict, "x", Evidence(style={strict.style_key: 0.8})).passed


def test_unsupported_promptfoo_types_are_reported_and_unknown_types_refused():
    parsed = parse_check({"type": "not-is-json"})
    assert isinstance(parsed, Unsupported) and parsed.type == "not-is-json"
    rubric = parse_check({"type": "llm-rubric", "value": "is polite"})  # a judged check (evals/judge.py)
    assert rubric.judged and not isinstance(rubric, Unsupported)
    assert parse_check({"type": "model-graded-factuality", "value": "Paris"}).type == "factuality"
    with pytest.raises(LoraEqError, match="llm-rubric needs a value"):
        parse_check({"type": "llm-rubric"})
    with pytest.raises(LoraEqError, match="select-best cannot be negated"):
        parse_check({"type": "not-select-best", "value": "x"})
    with pytest.raises(LoraEqError, match="unknown check type 'contians'"):
        parse_check({"type": "contians", "value": "x"}, "check 1")
    with pytest.raises(LoraEqError, match="not a valid regular expression"):
        parse_check({"type": "regex", "value": "(unclosed"})
    with pytest.raises(LoraEqError, match="contains needs a value"):
        parse_check({"type": "contains"})


# ---- the style probe --------------------------------------------------------------------------


def _blob_embed(texts: list[str]) -> np.ndarray:
    """Texts starting with 'A' lie around one direction, others around another (seeded noise)."""
    out = []
    for t in texts:
        rng = np.random.default_rng(abs(hash(t)) % 2**32)
        v = rng.normal(0, 0.3, 16)
        v[0 if t.startswith("A") else 1] += 2.0
        out.append(v / np.linalg.norm(v))
    return np.array(out)


def test_logistic_regression_separates_two_blobs():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(1, 0.5, (30, 3)), rng.normal(-1, 0.5, (30, 3))])
    y = np.array([1.0] * 30 + [0.0] * 30)
    w = fit_logistic(x, y)
    assert np.mean(((x @ w[:-1] + w[-1]) > 0) == (y == 1)) > 0.95


def test_style_probe_reports_high_accuracy_on_a_clear_style_and_low_on_noise():
    examples = [(f"q{i}", f"A styled answer {i}") for i in range(20)]
    contrast = [(f"q{i}", f"plain answer {i}") for i in range(20)]
    probe = fit_probe(examples, contrast, _blob_embed)
    assert probe.cv_accuracy >= 0.9 and probe.trusted
    scores = probe.score(["A new styled one", "a new plain one"], [None, None], _blob_embed)
    assert scores[0] > 0.5 > scores[1]
    noise = fit_probe([(f"q{i}", f"A x {i}" if i % 2 else f"y {i}") for i in range(20)],
                      [(f"q{i}", f"y {i} b" if i % 2 else f"A z {i}") for i in range(20)], _blob_embed)
    assert noise.cv_accuracy < 0.8 and not noise.trusted
    with pytest.raises(LoraEqError, match="at least 4 style examples"):
        fit_probe(examples[:2], contrast, _blob_embed)


# ---- eval-set files ---------------------------------------------------------------------------


def test_promptfoos_getting_started_config_gives_2_prompts_x_2_tests_and_ignores_providers():
    evalset = load_evalset(HERE / "promptfoo_getting_started.yaml")
    assert len(evalset.cases) == 4 and evalset.description == "Getting started"
    assert evalset.cases[0].prompt == "Convert this English to French: Hello world"
    assert evalset.cases[3].prompt == "Translate to Spanish: Where is the library?"
    assert [c.checks[0].name for c in evalset.cases] == ["contains", "contains", "icontains", "icontains"]
    assert any("providers ignored (openai:gpt-4.1, openai:o4-mini)" in n for n in evalset.notes)
    assert evalset.rejected == [] and evalset.unsupported == []


def test_promptfoo_default_test_unsupported_types_and_bad_tests(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "prompts: ['Say {{word}}']\n"
        "defaultTest:\n  assert:\n    - type: not-icontains\n      value: sorry\n"
        "tests:\n"
        "  - vars: {word: hi}\n    assert:\n      - type: equals\n        value: '{{word}}'\n"
        "      - type: javascript\n        value: output.length > 1\n"
        "  - vars: {other: x}\n"
        "  - vars: {word: yo}\n    assert:\n      - type: contians\n        value: yo\n"
    )
    evalset = load_evalset(config)
    assert [c.prompt for c in evalset.cases] == ["Say hi"]
    assert [c.label() for c in evalset.cases[0].checks] == ["not-icontains: sorry", "equals: hi"]
    assert evalset.unsupported == [{"test": "test 1", "type": "javascript",
                                    "reason": "promptfoo's 'javascript' is not run by LoRA EQ"}]
    reasons = {r["row"]: r["reason"] for r in evalset.rejected}
    assert "{{word}}" in reasons["test 2"] and "unknown check type 'contians'" in reasons["test 3"]


def test_broken_yaml_is_one_named_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: ['a'\ntests: [\n")
    with pytest.raises(LoraEqError, match=r"bad.yaml: not valid YAML at line"):
        load_evalset(bad)


def test_rows_from_jsonl_csv_and_parquet_with_each_bad_row_named(tmp_path):
    rows = [
        {"prompt": "Capital of France?", "reference": "Paris", "assert": [{"type": "icontains", "value": "paris"}],
         "tags": ["geo"]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "red"}]},
        {"reference": "no prompt here"},
        {"prompt": "x", "assert": [{"type": "nope"}]},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    evalset = load_evalset(path)
    assert [c.prompt for c in evalset.cases] == ["Capital of France?", "name a colour"]
    assert evalset.cases[0].tags == ("geo",) and evalset.cases[1].reference == "red"
    assert evalset.cases[1].history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert [r["row"] for r in evalset.rejected] == ["row 3", "row 4", "row 5"]
    assert "needs a prompt" in evalset.rejected[0]["reason"] and "not JSON" in evalset.rejected[2]["reason"]

    csv = tmp_path / "set.csv"
    csv.write_text('prompt,reference,assert,tags\nHi there,Hello,"[{""type"": ""contains"", ""value"": ""Hel""}]",'
                   '"a, b"\nBye,,,\n')
    from_csv = load_evalset(csv)
    assert [c.checks[0].name for c in from_csv.cases[:1]] == ["contains"] and from_csv.cases[0].tags == ("a", "b")
    assert from_csv.cases[1].reference is None and from_csv.cases[1].checks == ()

    import pandas as pd

    parquet = tmp_path / "set.parquet"
    pd.DataFrame([{"prompt": "Hi", "system": "Be brief"}, {"prompt": "Yo", "system": None}]).to_parquet(parquet)
    from_parquet = load_evalset(parquet)
    assert [c.system for c in from_parquet.cases] == ["Be brief", None]


def test_style_examples_come_from_a_file_beside_the_set(tmp_path):
    (tmp_path / "voice.jsonl").write_text("\n".join(json.dumps(
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
        for i in range(5)))
    style = {"type": "style", "value": "voice.jsonl"}
    (tmp_path / "set.jsonl").write_text(json.dumps({"prompt": "q", "assert": [style]}))
    check = load_evalset(tmp_path / "set.jsonl").cases[0].checks[0]
    assert check.value == tuple((f"q{i}", f"a{i}") for i in range(5))


# ---- matrix statistics ------------------------------------------------------------------------


def _cells(column: str, outcomes: list[bool | None], sims: list[float]) -> list[dict]:
    return [{"case": f"row {i}", "prompt": f"p{i}", "column": column, "passed": o, "similarity_reference": s,
             "checks": [] if o is None else [{"name": "contains", "passed": o}], "settings": {}}
            for i, (o, s) in enumerate(zip(outcomes, sims))]


def test_summary_pass_rates_intervals_and_tests_against_the_base():
    base = _cells("base", [False] * 12, [0.2] * 12)
    better = _cells("v1", [True] * 11 + [False], [0.6] * 12)
    cells = base + better
    cells[-1] = {**cells[-1], "override": "pass"}  # the user overrides one cell
    summary = {c["name"]: c for c in summarize(cells)}
    assert summary["base"]["pass_rate"] == 0.0 and summary["base"]["mcnemar_p"] is None
    v1 = summary["v1"]
    assert v1["passed"] == 12 and v1["total"] == 12 and v1["overrides"] == 1
    assert v1["mcnemar_p"] == pytest.approx(2 / 2**12)
    assert v1["ci"][0] > 0.7 and v1["ci"][1] == 1.0
    assert v1["mean_similarity"] == pytest.approx(0.6) and v1["similarity_p"] < 0.01
    assert v1["by_check"]["contains"]["passed"] == 11  # the check's own result, without the override
    assert verdict({"passed": None}) is None


def test_a_set_may_not_read_files_outside_its_folder(tmp_path):
    (tmp_path / "secret.txt").write_text("do not show")
    folder = tmp_path / "sets"
    folder.mkdir()
    (folder / "cfg.yaml").write_text("prompts: ['file://../secret.txt']\ntests: [{vars: {}}]\n")
    with pytest.raises(LoraEqError, match="only name files in its own folder"):
        load_evalset(folder / "cfg.yaml")
    (folder / "set.jsonl").write_text(json.dumps({"prompt": "q", "assert": [{"type": "style", "value": "/etc/hosts"}]}))
    assert "only name files in its own folder" in load_evalset(folder / "set.jsonl").rejected[0]["reason"]
