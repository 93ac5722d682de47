"""`loraeq data ...`: inspect, split, mix and write sample data from the command line.

    loraeq data inspect FILE [--format F] [--map SRC=DST ...] [--max-length N] [--rejects PATH] [--json]
    loraeq data split FILE [--fraction 0.1] [--seed 0] [--group fact_id] [--out DIR]
    loraeq data mix FILE [--weight CAT=W ...] [--quota CAT=N ...] [--size N] [--seed 0] [--out FILE]
    loraeq data samples --out DIR

Each handler is a thin wrapper over `adapters.data` and returns a JSON-able dict (with an exit code
where it is not 0); `render` turns that dict into the readable tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapters.errors import LoraEqError

from .common import add_json_flag, format_table, parse_pairs

_SHOWN = 20  # errors and warnings listed in the table (all are in --json)


def default_max_length() -> int:
    """Tokens per example that training keeps unless told otherwise: declared once, in `Hyper`."""
    from adapters.shape.variants import Hyper

    return Hyper().max_length


def _load(args: argparse.Namespace, tokens: bool = False):
    from adapters.data.load import load_dataset

    if args.task == "classification":  # text -> label rows: no chat template, so no token counts
        from adapters.data.classes import load_classification

        return load_classification(args.file, parse_pairs(args.map, "--map"), file_type=args.file_type)
    tokenizer, max_length = None, None
    if tokens and not args.no_tokens:
        from adapters.base.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
        max_length = args.max_length or default_max_length()
    elif tokens and args.max_length:
        raise LoraEqError("--max-length needs token counts: drop --no-tokens")
    return load_dataset(
        args.file,
        format=args.format,
        mapping=parse_pairs(args.map, "--map"),
        max_length=max_length,
        tokenizer=tokenizer,
        file_type=args.file_type,
    )


def _add_file_flags(p: argparse.ArgumentParser) -> None:
    from adapters.data.readers import FILE_TYPES
    from adapters.data.shapes import FORMATS

    p.add_argument("file", help="the data file (.jsonl, .json, .csv, .tsv, .parquet, .txt)")
    p.add_argument("--format", choices=FORMATS, default=None, help="row shape (default: recognized from the keys)")
    p.add_argument("--file-type", choices=FILE_TYPES, default=None, help="file type (default: from the name)")
    p.add_argument(
        "--map", action="append", metavar="SRC=DST", help="read your column SRC as our field DST (repeatable)"
    )
    p.add_argument("--task", choices=("causal", "classification"), default="causal",
                   help="classification: rows of text (+ text_pair) and label; the labels are the categories")
    add_json_flag(p, nested=True)


# ---- inspect -------------------------------------------------------------------------------------


def _inspect(args: argparse.Namespace):
    from adapters.data.records import write_rejects

    ds = _load(args, tokens=True)
    out = ds.to_json()
    out["model"] = None if args.no_tokens else (args.model or "default")
    if args.rejects:
        out["rejects_file"] = str(write_rejects(ds, args.rejects))
    if not ds.rows_valid:
        print(f"loraeq: error: {args.file}: none of its {ds.rows_in} rows is valid", file=sys.stderr)
        return out, 2
    return out


def _listing(title: str, items: list[dict]) -> list[str]:
    if not items:
        return []
    head = f"{title} ({len(items)})" if len(items) <= _SHOWN else f"{title} (first {_SHOWN} of {len(items)})"
    return ["", head, format_table(items[:_SHOWN], ["row", "field", "reason"])]


def _render_inspect(data: dict, args: argparse.Namespace) -> str:
    lines = [
        f"file        {data['path']}  ({data['file_type']}, format {data['format']})",
        f"rows        {data['rows_in']} in: {data['rows_valid']} valid, {data['rows_rejected']} rejected",
    ]
    t = data["tokens"]
    if t:
        lines.append(
            f"tokens      min {t['min']}, median {t['median']:g}, p95 {t['p95']}, max {t['max']}, "
            f"total {t['total']:,} (chat template of {data['model']})"
        )
        n, limit = data["truncated_rows"], data["max_length"]
        lines.append(f"too long    {n} row{'' if n == 1 else 's'} longer than max_length {limit} would be cut")
    total = max(1, data["rows_valid"])
    cats = [{"category": c, "rows": n, "share": n / total} for c, n in data["categories"].items()]
    lines += ["", "categories", format_table(cats)]
    lines += _listing("errors", data["errors"]) + _listing("warnings", data["warnings"])
    if data.get("rejects_file"):
        lines += ["", f"rejected rows written to {data['rejects_file']}"]
    lines += [f"note: {n}" for n in data["notes"]]
    return "\n".join(lines)


def _register_inspect(dsub) -> None:
    p = dsub.add_parser("inspect", help="read and validate a data file; counts, categories, token lengths, errors")
    _add_file_flags(p)
    p.add_argument(
        "--max-length", type=int, default=None, help=f"warn about rows longer than N tokens (default {default_max_length()}, as training cuts them)"
    )
    p.add_argument("--rejects", default=None, metavar="PATH", help="write the rejected rows, with reasons, to this JSONL")
    p.add_argument("--model", default=None, help="whose tokenizer and chat template count tokens (default: embedded)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a tokenizer that ships its own code")
    p.add_argument("--no-tokens", action="store_true", help="skip token counting (no tokenizer is loaded)")
    p.set_defaults(handler=_inspect, render=_render_inspect)


# ---- split ---------------------------------------------------------------------------------------


def _split(args: argparse.Namespace) -> dict:
    from adapters.data.records import write_jsonl
    from adapters.data.split import split_heldout

    ds = _load(args)
    split = split_heldout(ds, args.fraction, args.split_seed, args.group, args.mode)
    out = {"path": ds.path, "rows_valid": ds.rows_valid, "rows_rejected": ds.rows_rejected, **split.to_json()}
    if args.out:
        folder = Path(args.out)
        out["files"] = {
            "train": str(write_jsonl(split.train.examples, folder / "train.jsonl")),
            "heldout": str(write_jsonl(split.heldout.examples, folder / "heldout.jsonl")),
        }
    return out


def _render_split(data: dict, args: argparse.Namespace) -> str:
    rows = [{"category": c, **n} for c, n in data["categories"].items()]
    lines = [
        f"file        {data['path']}  ({data['rows_valid']} valid rows, {data['rows_rejected']} rejected)",
        f"split       {data['train_rows']} train, {data['heldout_rows']} held out  "
        f"(fraction {data['fraction']:g}, seed {data['seed']}"
        + (f", group {data['group']}, mode {data['mode']})" if data["group"] else ")"),
        "",
        format_table(rows, ["category", "train", "heldout"]),
    ]
    lines += [f"wrote {side}: {path}" for side, path in data.get("files", {}).items()]
    return "\n".join(lines + [f"note: {n}" for n in data["notes"]])


def _register_split(dsub) -> None:
    from adapters.data.split import MODES

    p = dsub.add_parser("split", help="hold out a stratified, seeded share of the rows for the proof")
    _add_file_flags(p)
    p.add_argument("--fraction", type=float, default=0.1, help="share held out (default 0.1)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--group", default=None, help="metadata field whose rows belong together, e.g. fact_id")
    p.add_argument("--mode", choices=MODES, default="paraphrase", help="with --group: paraphrase (default) or disjoint")
    p.add_argument("--out", default=None, metavar="DIR", help="write train.jsonl and heldout.jsonl here")
    p.set_defaults(handler=_split, render=_render_split)


# ---- mix -----------------------------------------------------------------------------------------


def _mix(args: argparse.Namespace) -> dict:
    from adapters.data.mixture import build_mixture
    from adapters.data.records import write_jsonl

    ds = _load(args)
    mix = build_mixture(
        ds,
        weights=parse_pairs(args.weight, "--weight", float),
        quotas=parse_pairs(args.quota, "--quota", int),
        size=args.size,
        seed=args.seed,
        window=args.window,
    )
    out = {"path": ds.path, **mix.to_json()}
    if args.out:
        out["file"] = str(write_jsonl(mix.stream, args.out))
    return out


def _render_mix(data: dict, args: argparse.Namespace) -> str:
    cols = ["name", "rows", "target", "quota", "places", "count", "share", "min_window", "repeats"]
    lines = [
        f"stream      {data['size']} examples from {data['path']} (seed {data['seed']}, window {data['window']})",
        f"quotas      {'hold in every window' if data['quotas_hold'] else 'DO NOT HOLD'}",
        "",
        format_table(data["categories"], cols),
    ]
    if data.get("file"):
        lines.append(f"wrote the stream to {data['file']}")
    return "\n".join(lines + [f"note: {n}" for n in data["notes"]])


def _register_mix(dsub) -> None:
    p = dsub.add_parser("mix", help="build the seeded training stream with category weights and quotas")
    _add_file_flags(p)
    p.add_argument("--weight", action="append", metavar="CAT=W", help="category weight / proportion (repeatable)")
    p.add_argument("--quota", action="append", metavar="CAT=N", help="at least N of CAT in every window (repeatable)")
    p.add_argument("--size", type=int, default=None, help="examples in the stream (default: the number of rows)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--window", type=int, default=1000, help="the window quotas count in (default 1000)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the stream as chat JSONL")
    p.set_defaults(handler=_mix, render=_render_mix)


# ---- samples -------------------------------------------------------------------------------------


def _samples(args: argparse.Namespace) -> dict:
    from adapters.data.samples import SAMPLES, write_samples

    written = write_samples(args.out)
    return {"files": {name: {"path": str(path), "rows": len(SAMPLES[name]())} for name, path in written.items()}}


def _render_samples(data: dict, args: argparse.Namespace) -> str:
    return "\n".join(f"wrote {v['path']} ({v['rows']} rows)" for v in data["files"].values())


def _register_samples(dsub) -> None:
    p = dsub.add_parser("samples", help="write the sample datasets (autumn-voice, fictional-facts)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write them into")
    add_json_flag(p, nested=True)
    p.set_defaults(handler=_samples, render=_render_samples)


def register(sub) -> None:
    """Add `loraeq data` and its subcommands to the top-level subparsers."""
    p = sub.add_parser("data", help="read, validate, mix and split training data")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=type(p), metavar="COMMAND",
                            help="inspect, split, mix or samples")
    for register_one in (_register_inspect, _register_split, _register_mix, _register_samples):
        register_one(dsub)
