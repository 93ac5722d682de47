"""Reading data files: every format, BOM, CRLF, multi-line CSV, any Unicode, and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.data import load_dataset
from adapters.errors import LoraEqError

KOREAN = "가을 단풍이 아름답네요"
CJK = "秋天的落叶很美"
EMOJI = "🍁🍂 woodsmoke 🔥"
CHAT = [
    {"messages": [{"role": "user", "content": KOREAN}, {"role": "assistant", "content": CJK}], "category": "ko"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": EMOJI}], "category": "emoji"},
]


def _contents(ds) -> list[list[tuple[str, str]]]:
    return [[(m["role"], m["content"]) for m in e.messages] for e in ds.examples]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_jsonl_chat_with_unicode(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(_jsonl(CHAT), encoding="utf-8")
    ds = load_dataset(path)
    assert (ds.file_type, ds.format, ds.rows_in, ds.rows_valid) == ("jsonl", "chat", 2, 2)
    assert _contents(ds) == [[("user", KOREAN), ("assistant", CJK)], [("user", "hi"), ("assistant", EMOJI)]]
    assert ds.categories() == {"emoji": 1, "ko": 1}


def test_jsonl_with_bom_crlf_and_blank_lines_keeps_line_numbers(tmp_path):
    lines = [json.dumps(CHAT[0], ensure_ascii=False), "", json.dumps(CHAT[1]), "{broken"]
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    ds = load_dataset(path)
    assert ds.rows_in == 3 and ds.rows_valid == 2  # the blank line is not a row
    assert [e.row for e in ds.examples] == [1, 3]
    assert [(e.row, e.field) for e in ds.errors] == [(4, None)]
    assert ds.errors[0].reason.startswith("not JSON")
    assert ds.examples[0].messages[0]["content"] == KOREAN  # no BOM, no \r left in the text


@pytest.mark.parametrize("wrap", [lambda rows: rows, lambda rows: {"version": 2, "data": rows}], ids=["list", "object"])
def test_json_list_and_object_holding_a_list(tmp_path, wrap):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(wrap(CHAT), ensure_ascii=False, indent=2), encoding="utf-8")
    ds = load_dataset(path)
    assert (ds.file_type, ds.rows_valid) == ("json", 2)
    assert _contents(ds)[0] == [("user", KOREAN), ("assistant", CJK)]


def test_json_object_that_is_one_row(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(CHAT[0]), encoding="utf-8")
    ds = load_dataset(path)
    assert ds.rows_in == 1 and ds.rows_valid == 1


def test_json_file_holding_jsonl_is_read_as_jsonl(tmp_path):
    path = tmp_path / "mislabeled.json"
    path.write_text(_jsonl(CHAT), encoding="utf-8")
    ds = load_dataset(path)
    assert ds.file_type == "jsonl" and ds.rows_valid == 2 and any("JSONL" in n for n in ds.notes)


def test_csv_with_quoted_multiline_fields_crlf_and_bom(tmp_path):
    text = (
        "instruction,input,output,category\r\n"
        '"Write a haiku\r\nabout autumn",,"Leaves fall, 🍁\r\ncrisp air",poetry\r\n'
        f'"Translate, please","{KOREAN}","{CJK}",translation\r\n'
    )
    path = tmp_path / "alpaca.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ds = load_dataset(path)
    assert (ds.format, ds.rows_valid) == ("alpaca", 2)
    assert ds.examples[0].messages[0]["content"] == "Write a haiku\r\nabout autumn"
    assert ds.examples[0].messages[1]["content"] == "Leaves fall, 🍁\r\ncrisp air"
    assert ds.examples[1].messages[0]["content"] == f"Translate, please\n\n{KOREAN}"
    assert [e.row for e in ds.examples] == [1, 2]  # records, not lines
    assert ds.categories() == {"poetry": 1, "translation": 1}


def test_tsv_and_unnamed_index_column(tmp_path):
    path = tmp_path / "qa.tsv"
    path.write_text("\tquestion\tanswer\n0\tWhere?\tHere.\n1\tWhen?\tNow.\n", encoding="utf-8")
    ds = load_dataset(path)
    assert (ds.file_type, ds.format, ds.rows_valid) == ("tsv", "question_answer", 2)
    assert ds.examples[1].messages == [{"role": "user", "content": "When?"}, {"role": "assistant", "content": "Now."}]
    assert ds.examples[0].meta == {}  # the unnamed index column is dropped


def test_csv_record_with_wrong_field_count_is_rejected_not_dropped(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\na,b\nc,d,e\nf,g\n", encoding="utf-8")
    ds = load_dataset(path)
    assert (ds.rows_in, ds.rows_valid, ds.rows_rejected) == (3, 2, 1)
    assert ds.errors[0].row == 2 and "3 fields" in ds.errors[0].reason and "line 3" in ds.errors[0].reason


def test_parquet_with_nested_messages(tmp_path):
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(CHAT), path)
    ds = load_dataset(path)
    assert (ds.file_type, ds.format, ds.rows_valid) == ("parquet", "chat", 2)
    assert _contents(ds)[1] == [("user", "hi"), ("assistant", EMOJI)]


def test_txt_paragraphs_and_lines(tmp_path):
    para = tmp_path / "poems.txt"
    para.write_text(f"First line\nstill first\n\n\n{KOREAN}\n{EMOJI}\n", encoding="utf-8")
    ds = load_dataset(para)
    assert (ds.format, ds.rows_in) == ("text", 2)
    assert [e.row for e in ds.examples] == [1, 5]  # the line each paragraph starts on
    assert ds.examples[1].messages == [{"role": "assistant", "content": f"{KOREAN}\n{EMOJI}"}]
    lines = tmp_path / "lines.txt"
    lines.write_bytes(f"one\r\ntwo\r\n{CJK}\r\n".encode("utf-8"))
    assert [e.messages[0]["content"] for e in load_dataset(lines).examples] == ["one", "two", CJK]


def test_unknown_extension_is_sniffed(tmp_path):
    path = tmp_path / "data.dat"
    path.write_text(json.dumps(CHAT), encoding="utf-8")
    assert load_dataset(path).rows_valid == 2
    assert load_dataset(path, file_type="json").file_type == "json"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", b"", "empty"),
        ("blank.csv", b"\xef\xbb\xbf  \n\n", "empty"),
        ("latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "not UTF-8 text: byte 0xe9 at offset 28 (line 2)"),
        ("utf16.jsonl", "\ufeff{}".encode("utf-16"), "UTF-16"),
        ("broken.json", b'[{"text": "a"},\n {"text": }]', "not valid JSON: Expecting value at line 2, column 11"),
        ("scalar.json", b"42", "holds a number, not a list of rows"),
        ("lists.json", b'{"a": [], "b": []}', "several lists (a, b)"),
        ("none.json", b"[]", "holds no rows"),
        ("broken.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
        ("quote.csv", b'prompt,completion\na,b\n"open,c\nd,e\n', "record starting at line 3"),
        ("dup.csv", b"prompt,prompt\na,b\n", "appears twice"),
        ("header-only.csv", b",,\na,b,c\n", "holds no rows"),
        ("keys.jsonl", b'{"foo": 1}\n{"bar": 2}\n', "cannot tell the format from the keys (foo, bar)"),
        ("mystery.bin", b"\x00\x01garbage", "cannot tell the file type"),
    ],
)
def test_unreadable_file_is_one_clear_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LoraEqError) as info:
        load_dataset(path)
    message = str(info.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_folder_is_not_a_data_file(tmp_path):
    with pytest.raises(LoraEqError, match="is a folder"):
        load_dataset(tmp_path)


def test_bad_options_are_user_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(_jsonl(CHAT), encoding="utf-8")
    with pytest.raises(LoraEqError, match="format 'xml'"):
        load_dataset(path, format="xml")
    with pytest.raises(LoraEqError, match="file type 'xls'"):
        load_dataset(path, file_type="xls")
    with pytest.raises(LoraEqError, match="needs a tokenizer"):
        load_dataset(path, max_length=10)
    with pytest.raises(LoraEqError, match="both map to 'prompt'"):
        load_dataset(path, mapping={"a": "prompt", "b": "prompt"})
