"""The `loraeq` console script: JSON on stdout, exit 2 with one line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loraeq.common import format_table
from loraeq.main import main


def _run(*args: str, env_cache=None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_cache:
        env["LORAEQ_CACHE"] = str(env_cache)
    return subprocess.run(
        [sys.executable, "-m", "loraeq", *args], capture_output=True, text=True, env=env, timeout=600
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


# ---- every subcommand, discovered from the parser --------------------------------------------


def _commands(parser=None, path=()):
    """Every (sub)command of `loraeq` as (argv prefix, its parser), walked from the parser itself."""
    import argparse

    from loraeq.main import build_parser

    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _has_required_input(parser) -> bool:
    import argparse

    for action in parser._actions:
        if action.required or (not action.option_strings and action.nargs not in ("?", "*", argparse.SUPPRESS)):
            return True
    return any(group.required for group in parser._mutually_exclusive_groups)


def _one_line_exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        code = main(list(argv))
        raise SystemExit(code)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stopped.value.code == 2, (argv, err)
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("loraeq"), (argv, err)
    return lines[0]


def test_every_help_renders_and_every_flag_has_help(capsys):
    commands = list(_commands())
    assert len(commands) > 15  # the walk found the subcommands and data's own subcommands
    for path, parser in commands:
        with pytest.raises(SystemExit) as stopped:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert stopped.value.code == 0 and "usage:" in out, path
        bare = [a.dest for a in parser._actions if a.help is None or not str(a.help).strip()]
        assert not bare, f"loraeq {' '.join(path)}: no help for {bare}"


# The pipeline: model -> data -> shape -> train -> compare (its votes, chat, battles, eval sets,
# classify) -> prove -> export -> the web app's users. A new command takes its place here.
PIPELINE_ORDER = ["analyze", "data", "suggest", "train", "status", "cancel", "search", "compare", "vote", "leaderboard",
                  "chat", "arena", "evalset", "classify", "eval", "export", "serve", "users"]


def test_top_level_help_lists_every_command_in_pipeline_order_one_line_each(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0
    commands = {path[0] for path, _ in _commands() if len(path) == 1}
    assert sorted(commands) == sorted(PIPELINE_ORDER), "a command is missing from PIPELINE_ORDER, or gone"
    # A command's line: its name, then its help on the same line, within 80 columns.
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()[0] in commands]
    assert listed == PIPELINE_ORDER, listed
    for name in PIPELINE_ORDER:
        (line,) = [line for line in out.splitlines() if line.split()[:1] == [name] and line.startswith("    ")]
        assert len(line.split()) > 1 and len(line) <= 80, line


def test_every_command_that_needs_input_says_so_in_one_line(capsys):
    """No arguments at all, and each value-taking flag given without its value: exit 2, one line."""
    runs_bare = []
    for path, parser in list(_commands())[1:]:
        if _has_required_input(parser):
            _one_line_exit_2(path, capsys)
        else:
            runs_bare.append(" ".join(path))
        for action in parser._actions:
            if action.option_strings and action.nargs is None and action.dest not in ("help", "json"):
                _one_line_exit_2([*path, action.option_strings[0]], capsys)
    # These do real work with no argument at all (the embedded model): nothing else may.
    assert set(runs_bare) <= {"analyze", "chat", "serve"}, runs_bare


def test_missing_values_and_files_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    cases = [
        ["train"],
        ["train", "--data", missing],
        ["train", "--out", str(tmp_path / "run")],
        ["train", "--data", missing, "--out", str(tmp_path / "run")],
        ["status", missing],
        ["cancel", missing],
        ["export", missing, "--adapter", "--out", str(tmp_path / "a.zip")],
        ["eval", missing],
        ["leaderboard", missing],
        ["arena", missing],
        ["data", "inspect", missing, "--no-tokens"],
    ]
    for argv in cases:
        line = _one_line_exit_2(argv, capsys)
        assert "error" in line, argv


def test_train_without_a_preset_trains_one_uniform_variant(tiny_model_dir, cache_home, tmp_path, capsys):
    from adapters.shape.equalizer import Equalizer
    from adapters.train.runfolder import RunFolder

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}", "completion": f"w{i + 2}"}) + "\n"
                            for i in range(30)))
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--precision", "fp32", "--data", str(data),
                 "--out", str(out), "--max-steps", "1", "--rank", "2", "--json"]) == 0
    (variant,) = RunFolder.open(out).variants
    assert variant.name == "uniform" and variant.status() == "done"
    eq = variant.config["equalizer"]
    strengths = Equalizer.from_json(eq).strengths if isinstance(eq, dict) else None
    assert eq == "uniform" or {s for row in strengths for s in row} == {1.0}, eq


def test_one_default_max_length(capsys):
    from adapters.shape.variants import Hyper

    for command in (["train"], ["data", "inspect"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert f"(default {Hyper().max_length}" in " ".join(capsys.readouterr().out.split()), command
