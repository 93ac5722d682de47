"""What every `loraeq` stage module shares: the parser class, flags, tables, progress bars, output.

The stage modules (analyze.py, data.py, suggest.py, train.py, compare.py, proof.py, export.py, evalset.py)
build on these helpers; main.py wires the stages together. Nothing here runs a stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from adapters.errors import LoraEqError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits 2."""

    def error(self, message: str):  # noqa: D401
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table; floats shown with 4 significant digits."""
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])

    def show(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[show(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def progress_bar(label: str) -> Callable[[int, int], None] | None:
    """A stderr progress callback for slow steps, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def parse_pairs(items: list[str] | None, flag: str, convert: Callable = str, form: str = "NAME=VALUE") -> dict:
    """`["a=1", "b=2"]` -> {"a": convert("1"), ...}; a malformed item is a one-line error."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise LoraEqError(f"{flag} expects {form}, got {item!r}")
        try:
            out[name.strip()] = convert(value.strip())
        except ValueError:
            raise LoraEqError(f"{flag} {item!r}: {value.strip()!r} is not a valid value") from None
    return out


def name_list(value: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of variant names from `flag` (None: every one), or one line naming the flag."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise LoraEqError(f"{flag}: give at least one variant name")
    return names


def add_json_flag(p: argparse.ArgumentParser, nested: bool = False) -> None:
    """`--json`; a nested subcommand's flag leaves the value its parent command already set."""
    default = argparse.SUPPRESS if nested else False
    p.add_argument("--json", action="store_true", default=default, help="print exactly one JSON object on stdout")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    from adapters.base.loading import PRECISIONS

    p.add_argument("--model", default=None, help="Hub id, model folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto | nf4 (4-bit) | bf16 | fp32")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model that ships its own Python code")


def add_bands_flag(p: argparse.ArgumentParser, help: str | None = None) -> None:
    from adapters.base.bands import DEFAULT_BANDS

    p.add_argument("--bands", type=int, default=DEFAULT_BANDS,
                   help=help or f"equalizer grid: the layers split into N consecutive bands (default {DEFAULT_BANDS})")


def add_sampling_flags(p: argparse.ArgumentParser, seed_help: str) -> None:
    """How answers are drawn (`decoding.Sampling`; its defaults are the flags' defaults)."""
    from adapters.infer.decoding import Sampling

    d = Sampling()
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help=f"longest answer in tokens (default {d.max_new_tokens})")
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=d.top_p,
                   help=f"nucleus sampling: keep the likeliest tokens up to this mass (default {d.top_p:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=seed_help)


def add_judge_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The judge (evals/judge.py): a local model, or an OpenAI-compatible endpoint."""
    from evals.judge import KEY_ENV

    p.add_argument("--judge", default=None, metavar="MODEL",
                   help=f"{what}: a local causal LM (Hub id, folder or GGUF; 'embedded' for the built-in model)")
    p.add_argument("--judge-url", default=None, metavar="URL",
                   help=f"or an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (key from {KEY_ENV})")
    p.add_argument("--judge-model", default=None, metavar="NAME", help="the model name the --judge-url serves")


def open_judge(args: argparse.Namespace):
    """The judge the flags name (None: none), to be closed by the caller."""
    from evals.judge import make_judge

    return make_judge(args.judge, args.judge_url, args.judge_model)


def add_data_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="training data file (JSONL, JSON, CSV/TSV, Parquet, TXT)")
    p.add_argument("--format", default=None, help="row shape, when auto-detection should be overridden")
    p.add_argument("--map", action="append", default=[], metavar="SRC=DST", help="rename a column")


def data_mapping(args: argparse.Namespace) -> dict[str, str]:
    return parse_pairs(args.map, "--map", form="SRC=DST")


def read_data(args: argparse.Namespace):
    """The validated dataset named by --data/--format/--map (rejected rows are reported, not used)."""
    from adapters.data import load_dataset

    dataset = load_dataset(args.data, format=args.format, mapping=data_mapping(args))
    if not dataset.examples:
        raise LoraEqError(f"{args.data}: no valid row to train on ({dataset.rows_rejected} rejected)")
    return dataset


def refuse_classification_run(run_dir: str | None, command: str) -> None:
    """A classification run (an encoder) has labels, not answers: point to `loraeq classify`."""
    from adapters.train.runfolder import RunFolder

    if run_dir is not None and RunFolder.open(run_dir).task == "classification":
        raise LoraEqError(f"{run_dir}: a classification run (an encoder); `loraeq {command}` needs a causal LM run: "
                          "use `loraeq classify RUN --text TEXT` or `--set FILE`")


def print_result(data: dict, args: argparse.Namespace) -> None:
    """A handler's result on stdout: one JSON object with --json, else the command's readable form."""
    try:
        if args.json:
            print(json.dumps(data, ensure_ascii=False, default=str), flush=True)
        else:
            print(args.render(data, args), flush=True)
    except BrokenPipeError:  # `loraeq ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
