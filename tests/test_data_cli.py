"""`loraeq data inspect | split | mix | samples`: JSON, tables, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loraeq.main import main

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
DOLLY = str(DATASETS / "dolly-15k-sample.jsonl")


def _json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv + ["--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loraeq", *args], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )


def test_inspect_dolly_json_report(capsys):
    code, data = _json(capsys, ["data", "inspect", DOLLY, "--no-tokens"])
    assert code == 0
    assert (data["format"], data["rows_in"], data["rows_valid"], data["rows_rejected"]) == ("dolly", 160, 160, 0)
    assert data["errors"] == [] and data["categories"]["open_qa"] == 43 and len(data["categories"]) == 8
    assert data["tokens"] is None and data["truncated_rows"] is None  # not counted with --no-tokens


def test_inspect_counts_tokens_with_the_default_model(capsys):
    code, data = _json(capsys, ["data", "inspect", DOLLY, "--max-length", "256"])
    assert code == 0
    t = data["tokens"]
    assert set(t) >= {"min", "median", "p95", "max"} and 0 < t["min"] <= t["median"] <= t["p95"] <= t["max"]
    assert data["truncated_rows"] == len(data["warnings"]) > 0
    assert all(int(w["reason"].split()[0]) > 256 for w in data["warnings"])


def test_inspect_partly_broken_file_writes_rejects_and_exits_0(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n{"prompt": "c"}\n', encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    code, data = _json(capsys, ["data", "inspect", str(path), "--no-tokens", "--rejects", str(rejects)])
    assert code == 0 and (data["rows_valid"], data["rows_rejected"]) == (1, 2)
    assert [(e["row"], e["field"]) for e in data["errors"]] == [(2, None), (3, "completion")]
    assert [json.loads(line)["row"] for line in rejects.read_text(encoding="utf-8").splitlines()] == [2, 3]
    assert data["rejects_file"] == str(rejects)


def test_inspect_with_column_mapping_and_format(tmp_path, capsys):
    path = tmp_path / "mine.csv"
    path.write_text("ask,reply,topic\n가을?,단풍 🍁,ko\n", encoding="utf-8")
    code, data = _json(
        capsys,
        ["data", "inspect", str(path), "--no-tokens", "--map", "ask=question", "--map", "reply=answer", "--map", "topic=category"],
    )
    assert code == 0 and data["format"] == "question_answer" and data["categories"] == {"ko": 1}
    code, data = _json(capsys, ["data", "inspect", str(path), "--no-tokens", "--format", "alpaca"])
    assert code == 2 and data["rows_valid"] == 0
    assert {e["field"] for e in data["errors"]} == {"instruction", "output"}


def test_no_valid_row_exits_2_with_the_report_and_one_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"messages": []}\n[1]\n', encoding="utf-8")
    proc = _run("data", "inspect", str(path), "--no-tokens", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["rows_rejected"] == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "none of its 2 rows is valid" in lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file"), (b"\xff\xfe\x00garbage", "UTF-16"), (b"[1, 2", "not valid JSON")],
)
def test_unreadable_file_exits_2_with_one_line(tmp_path, content, expected, capsys):
    path = tmp_path / "data.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["data", "inspect", str(path), "--no-tokens", "--json"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("loraeq: error:") and expected in lines[0]


def test_unreadable_file_in_a_real_process_has_no_traceback(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1" + bytes(range(256)))
    proc = _run("data", "inspect", str(path), "--no-tokens")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a readable Parquet file" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "inspect", DOLLY, "--no-tokens", "--map", "nonsense"],
        ["data", "mix", DOLLY, "--quota", "open_qa=lots"],
        ["data", "mix", DOLLY, "--quota", "poetry=5"],
        ["data", "inspect", DOLLY, "--no-tokens", "--max-length", "10"],
    ],
    ids=["map", "quota-value", "quota-category", "max-length-without-tokens"],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("loraeq: error:")


def test_inspect_table_is_readable(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "amber"}\n{"text": ""}\n', encoding="utf-8")
    assert main(["data", "inspect", str(path), "--no-tokens"]) == 0
    out = capsys.readouterr().out
    assert "2 in: 1 valid, 1 rejected" in out and "categories" in out and "errors (1)" in out and "empty" in out


def test_split_writes_train_and_heldout(tmp_path, capsys):
    facts = str(DATASETS / "fictional-facts.jsonl")
    code, data = _json(capsys, ["data", "split", facts, "--fraction", "0.2", "--group", "fact_id", "--out", str(tmp_path)])
    assert code == 0 and data["heldout_rows"] == 67 and data["train_rows"] + data["heldout_rows"] == 335
    train = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    held = [json.loads(x) for x in (tmp_path / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (len(train), len(held)) == (data["train_rows"], data["heldout_rows"])
    assert {r["fact_id"] for r in held} <= {r["fact_id"] for r in train}
    assert held[0]["messages"][0]["role"] == "user" and "category" in held[0]


def test_mix_reports_quotas_and_writes_the_stream(tmp_path, capsys):
    out = tmp_path / "stream.jsonl"
    code, data = _json(
        capsys, ["data", "mix", DOLLY, "--quota", "creative_writing=100", "--size", "5000", "--out", str(out)]
    )
    assert code == 0 and data["size"] == 5000 and data["quotas_hold"]
    cw = next(c for c in data["categories"] if c["name"] == "creative_writing")
    assert cw["min_window"] >= 100 and cw["oversampled"]
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5000 and sum(r["category"] == "creative_writing" for r in rows[:1000]) >= 100
    assert main(["data", "mix", DOLLY, "--quota", "creative_writing=100", "--size", "2000"]) == 0
    assert "hold in every window" in capsys.readouterr().out


def test_samples_command_writes_the_committed_files(tmp_path, capsys):
    code, data = _json(capsys, ["data", "samples", "--out", str(tmp_path)])
    assert code == 0
    for name, info in data["files"].items():
        assert Path(info["path"]).read_bytes() == (DATASETS / name).read_bytes()
        assert info["rows"] >= 300
