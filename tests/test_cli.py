"""The `loraeq` console script: JSON on stdout, exit 2 with one line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adapters.cli.common import format_table
from adapters.cli.main import main


def _run(*args: str, env_cache=None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_cache:
        env["LORAEQ_CACHE"] = str(env_cache)
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_analyze_json_on_a_folder(tiny_model_dir, cache_home, capsys):
    assert main(["analyze", "--model", str(tiny_model_dir), "--precision", "fp32", "--bands", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == 2 and data["precision"] == "fp32"
    assert len(data["cells"]) == 14 and data["bands"] == [[0], [1]]
    for key in ("frobenius", "spectral", "stable_rank", "effective_rank", "in_features", "out_features", "params"):
        assert all(isinstance(c[key], (int, float)) for c in data["cells"])
    assert {o["name"] for o in data["other"]} == {"model.embed_tokens", "lm_head"}


def test_analyze_table_is_readable(tiny_model_dir, cache_home, capsys):
    assert main(["analyze", "--model", str(tiny_model_dir), "--precision", "fp32", "--stat", "stable_rank"]) == 0
    out = capsys.readouterr().out
    assert "stable_rank per layer x role" in out and "q_proj" in out and "outside the layers" in out


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: str(p / "missing-model"), "no such file or folder"),
        (lambda p: (p / "junk.gguf").write_bytes(b"GGUF\x03junk" * 50) and str(p / "junk.gguf"), "cannot read this GGUF"),
        (lambda p: (p / "a.txt").write_text("hi") and str(p / "a.txt"), "not a model folder"),
    ],
    ids=["missing", "garbage-gguf", "not-a-model"],
)
def test_bad_model_exits_2_with_one_line(tmp_path, make, expected):
    proc = _run("analyze", "--model", make(tmp_path), "--json", env_cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("loraeq: error:")


def test_non_causal_model_exits_2(tmp_path, capsys):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "enc")
    assert main(["analyze", "--model", str(tmp_path / "enc"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not a causal language model" in captured.err


def test_bad_flag_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--precision", "fp8"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_band_count_exits_2(capsys):
    assert main(["analyze", "--bands", "0", "--json"]) == 2
    assert "bands=0" in capsys.readouterr().err


def test_format_table_aligns_columns():
    text = format_table([{"a": 1, "b": 0.123456}, {"a": 100, "b": None}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b"] and len(lines[2]) == len(lines[3]) == len(lines[1])
    assert "0.1235" in text
