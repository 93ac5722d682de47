"""Row shapes, column mapping, every validation reason (row number + field), rejects, token counts."""

from __future__ import annotations

import json

import pytest

from adapters.data import load_dataset, token_summary, with_token_counts, write_jsonl, write_rejects

U, A = "user", "assistant"


def _msgs(*turns: tuple[str, object]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


def _write(tmp_path, name: str, rows: list) -> object:
    path = tmp_path / name
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- shapes --------------------------------------------------------------------------------------

SHAPE_ROWS = {
    "chat": (
        {"messages": _msgs(("system", "Be brief."), (U, "Hi"), (A, "Hello"), (U, "Bye?"), (A, "Bye"))},
        _msgs(("system", "Be brief."), (U, "Hi"), (A, "Hello"), (U, "Bye?"), (A, "Bye")),
    ),
    "sharegpt": (
        {"conversations": [
            {"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "R"},
        ]},
        _msgs(("system", "S"), (U, "Q"), (A, "R")),
    ),
    "alpaca": ({"instruction": "Sum", "input": "2 and 3", "output": "5"}, _msgs((U, "Sum\n\n2 and 3"), (A, "5"))),
    "dolly": (
        {"instruction": "Who?", "context": "", "response": "Me", "category": "open_qa"},
        _msgs((U, "Who?"), (A, "Me")),
    ),
    "prompt_completion": ({"prompt": "2+2=", "completion": "4"}, _msgs((U, "2+2="), (A, "4"))),
    "question_answer": ({"question": "Capital?", "answer": "Teskel"}, _msgs((U, "Capital?"), (A, "Teskel"))),
    "text": ({"text": "Amber light on the hills."}, _msgs((A, "Amber light on the hills."))),
}


@pytest.mark.parametrize("shape", list(SHAPE_ROWS))
def test_each_shape_is_detected_and_normalized(tmp_path, shape):
    row, expected = SHAPE_ROWS[shape]
    ds = load_dataset(_write(tmp_path, f"{shape}.jsonl", [row, {**row, "id": "second", "source": "mine"}]))
    assert ds.format == shape
    assert ds.rows_valid == 1 and ds.examples[0].messages == expected
    # The second row is the same conversation: rejected as a duplicate, not silently merged.
    assert [(e.row, e.reason) for e in ds.errors] == [(2, "exact duplicate of row 1")]


def test_alpaca_without_input_and_metadata(tmp_path):
    rows = [{"instruction": "Leaf colour?", "output": "Amber", "category": "colours", "id": 7, "weight": "2.5", "lang": "en"}]
    e = load_dataset(_write(tmp_path, "a.jsonl", rows)).examples[0]
    assert e.messages == _msgs((U, "Leaf colour?"), (A, "Amber"))
    assert (e.category, e.id, e.weight, e.source, e.meta) == ("colours", "7", 2.5, "a.jsonl", {"lang": "en"})


def test_dolly_context_is_appended_and_category_kept(tmp_path):
    row = {"instruction": "When?", "context": "It began in 2000.", "response": "2000", "category": "closed_qa"}
    e = load_dataset(_write(tmp_path, "d.jsonl", [row])).examples[0]
    assert e.messages[0]["content"] == "When?\n\nIt began in 2000." and e.category == "closed_qa"


def test_format_override_reads_rows_as_that_shape(tmp_path):
    rows = [{"text": "plain", "prompt": "p", "completion": "c"}]
    path = _write(tmp_path, "both.jsonl", rows)
    assert load_dataset(path).format == "prompt_completion"  # detection order: pairs before text
    forced = load_dataset(path, format="text")
    assert forced.format == "text" and forced.examples[0].messages == _msgs((A, "plain"))
    assert forced.examples[0].meta == {"prompt": "p", "completion": "c"}


def test_column_mapping_top_level_and_inside_turns(tmp_path):
    turns = [{"speaker": "user", "utterance": "안녕"}, {"speaker": "assistant", "utterance": "🍁"}]
    rows = [{"turns": turns, "topic": "ko"}]
    mapping = {"turns": "messages", "speaker": "role", "utterance": "content", "topic": "category"}
    ds = load_dataset(_write(tmp_path, "mine.jsonl", rows), mapping=mapping)
    assert ds.format == "chat" and ds.examples[0].messages == _msgs((U, "안녕"), (A, "🍁"))
    assert ds.categories() == {"ko": 1} and ds.examples[0].meta == {}


def test_errors_name_the_users_own_fields(tmp_path):
    rows = [{"q": "Where?", "reply": ""}, {"q": 3, "reply": "Here"}]
    ds = load_dataset(_write(tmp_path, "qa.jsonl", rows), mapping={"q": "question", "reply": "answer"})
    assert [(e.row, e.field, e.reason) for e in ds.errors] == [
        (1, "reply", "empty"),
        (2, "q", "wrong type: expected text, got a number"),
    ]


# ---- validation reasons --------------------------------------------------------------------------

GOOD = {"messages": _msgs((U, "q"), (A, "a"))}
CASES = [
    (GOOD, None),
    ({"messages": _msgs((U, "only a question"))}, ("messages", "does not end with an assistant turn")),
    ({"messages": _msgs((U, "a"), (U, "b"), (A, "c"))}, ("messages[1].role", "two user turns in a row")),
    ({"messages": _msgs(("bot", "x"), (A, "y"))}, ("messages[0].role", "unknown role 'bot': use system, user, assistant")),
    ({"messages": _msgs((U, "  "), (A, "y"))}, ("messages[0].content", "empty")),
    ({"messages": [{"role": U}, {"role": A, "content": "y"}]}, ("messages[0].content", "missing")),
    ({"messages": "hello"}, ("messages", "wrong type: expected a list of turns, got text that is not a JSON list")),
    ({"messages": _msgs((U, 5), (A, "y"))}, ("messages[0].content", "wrong type: expected text, got a number")),
    ("{not json", (None, "not JSON")),
    ("[1, 2]", (None, "wrong type: expected an object, got a list")),
    (GOOD, (None, "exact duplicate of row 1")),
    ({"other": 1}, ("messages", "missing")),
    ({**GOOD, "messages": _msgs((U, "w"), (A, "x")), "weight": -1}, ("weight", "must be a positive number, got -1")),
    ({"messages": _msgs((U, "c"), (A, "d")), "category": ["x"]}, ("category", "wrong type: expected text, got a list")),
    ({"messages": _msgs((U, "q"), (A, "a"), ("system", "s"), (A, "b"))}, ("messages[2].role", "a system turn may only")),
    ({"messages": _msgs((U, "e"), (A, "f")), "id": "same"}, None),
    ({"messages": _msgs((U, "g"), (A, "h")), "id": "same"}, ("id", "id 'same' is already used by row 16")),
    ({"messages": []}, ("messages", "empty")),
    ({"messages": None}, ("messages", "missing (null)")),
    ({"messages": _msgs((U, "i"), (A, "j")), "weight": True}, ("weight", "wrong type: expected a number, got a boolean")),
]


def test_every_reason_with_row_and_field(tmp_path):
    ds = load_dataset(_write(tmp_path, "mixed.jsonl", [row for row, _ in CASES]))
    expected = [(n, *want) for n, (_, want) in enumerate(CASES, 1) if want]
    got = [(e.row, e.field, e.reason) for e in ds.errors]
    assert len(got) == len(expected)
    for (row, field, reason), (want_row, want_field, want_reason) in zip(got, expected):
        assert (row, field) == (want_row, want_field) and reason.startswith(want_reason), (row, field, reason)
    assert ds.rows_in == len(CASES) == ds.rows_valid + ds.rows_rejected
    assert [e.row for e in ds.examples] == [n for n, (_, want) in enumerate(CASES, 1) if want is None]


def test_a_row_reports_all_its_problems(tmp_path):
    rows = [{"messages": _msgs(("robot", ""), (U, "x")), "weight": "heavy"}]
    ds = load_dataset(_write(tmp_path, "many.jsonl", rows))
    assert {(e.field, e.reason.split(":")[0]) for e in ds.errors} == {
        ("messages[0].role", "unknown role 'robot'"),
        ("messages[0].content", "empty"),
        ("weight", "wrong type"),
    }


def test_rejects_file_lists_every_rejected_row(tmp_path):
    ds = load_dataset(_write(tmp_path, "mixed.jsonl", [row for row, _ in CASES]))
    path = write_rejects(ds, tmp_path / "out" / "rejects.jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in lines] == [r.row for r in ds.rejected] and len(lines) == ds.rows_rejected
    not_json = next(r for r in lines if r["row"] == 9)
    assert not_json["record"] == "{not json" and not_json["errors"][0]["reason"].startswith("not JSON")
    assert lines[0]["record"] == CASES[1][0]  # the record as the user wrote it


def test_written_examples_read_back_identically(tmp_path):
    rows = [{"instruction": f"Say {i}", "output": f"{i} 🍂", "fact_id": f"f{i % 2}", "weight": 2} for i in range(4)]
    first = load_dataset(_write(tmp_path, "alpaca.jsonl", rows))
    again = load_dataset(write_jsonl(first.examples, tmp_path / "norm.jsonl"))
    assert again.format == "chat"
    assert [(e.content_hash, e.category, e.id, e.weight, e.meta) for e in again.examples] == [
        (e.content_hash, e.category, e.id, e.weight, e.meta) for e in first.examples
    ]


def test_lone_surrogate_escape_is_a_row_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "bad \\ud800 half"}\n{"text": "pair \\ud83c\\udf41"}\n', encoding="utf-8")
    ds = load_dataset(path)
    assert [e.row for e in ds.examples] == [1, 3] and ds.examples[1].messages[0]["content"] == "pair 🍁"
    assert ds.errors[0].row == 2 and "Unicode" in ds.errors[0].reason
    write_rejects(ds, tmp_path / "r.jsonl")  # still writable
    doc = tmp_path / "s.json"
    doc.write_text('[{"text": "half \\udc00"}, {"text": "fine"}]', encoding="utf-8")
    ds = load_dataset(doc)
    assert [e.row for e in ds.examples] == [2] and "Unicode" in ds.errors[0].reason and ds.errors[0].row == 1


# ---- token counts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from adapters.base.loading import load_tokenizer

    return load_tokenizer()


def test_token_stats_and_truncation_with_the_real_chat_template(tmp_path, smollm_tokenizer):
    rows = [{"messages": _msgs((U, f"Question {i}?"), (A, "Leaves fall. " * (i * 20 + 1)))} for i in range(6)]
    ds = load_dataset(_write(tmp_path, "long.jsonl", rows), max_length=120, tokenizer=smollm_tokenizer)
    tokenized = [smollm_tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True) for r in rows]
    expected = [len(t["input_ids"]) for t in tokenized]
    assert [e.tokens for e in ds.examples] == expected
    long = [(n, i + 1) for i, n in enumerate(expected) if n > 120]
    assert ds.truncated_rows == len(long) > 0
    assert [(w.row, w.reason) for w in ds.warnings] == [
        (row, f"{n} tokens: {n - 120} would be cut at max_length 120") for n, row in long
    ]
    summary = ds.to_json()["tokens"]
    assert summary == token_summary(expected) and summary["min"] == min(expected) and summary["max"] == max(expected)
    assert ds.rows_valid == 6  # long rows are warned about, not rejected
    # Counting later (data loaded first, model chosen after) gives the same report.
    later = with_token_counts(load_dataset(tmp_path / "long.jsonl"), smollm_tokenizer, 120)
    assert later.to_json() == ds.to_json()


def test_text_rows_are_counted_without_the_template(tmp_path, smollm_tokenizer):
    path = tmp_path / "t.txt"
    path.write_text("가을 하늘은 높다\n秋天 🍁 autumn\n", encoding="utf-8")
    ds = load_dataset(path, tokenizer=smollm_tokenizer)
    assert [e.tokens for e in ds.examples] == [
        len(smollm_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("가을 하늘은 높다", "秋天 🍁 autumn")
    ]


def _strict_tokenizer():
    """A word-level tokenizer whose chat template refuses system turns (as some models' do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        "{{ m['content'] }} {% endfor %}"
    )
    return tok


def test_a_row_the_template_refuses_is_rejected_with_the_reason(tmp_path):
    rows = [{"messages": _msgs(("system", "s"), (U, "a a"), (A, "a"))}, {"messages": _msgs((U, "a a a"), (A, "a"))}]
    ds = load_dataset(_write(tmp_path, "sys.jsonl", rows), tokenizer=_strict_tokenizer())
    assert [e.row for e in ds.examples] == [2] and ds.examples[0].tokens == 4
    assert ds.errors[0].row == 1 and "no system turns" in ds.errors[0].reason
    assert ds.rows_in == 2 == ds.rows_valid + ds.rows_rejected
