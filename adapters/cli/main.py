"""`loraeq`: the wiring of the subcommands (the console script and `python -m adapters.cli` run `main`).

Each subcommand is a thin wrapper over a library function, registered by its stage module: it
parses flags, calls the function and prints the result, as exactly one JSON object on stdout with
`--json`, or as a readable table. Bad input (a `LoraEqError`, or a bad flag) exits 2 with one line
on stderr naming the problem. No stage module imports this one.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import LoraEqError
from . import analyze, chat, compare, data, evalset, export, proof, suggest, train
from .common import Parser, add_json_flag, print_result

STAGES = (analyze, data, suggest, train, export, proof, compare, chat, evalset)  # in `loraeq --help` order


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loraeq", description="LoRA EQ: analyze, shape, train, compare and prove LoRA variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for stage in STAGES:
        stage.register(sub)
    for p in sub.choices.values():
        add_json_flag(p)
    return parser


def _quiet_libraries() -> None:
    """Library chatter goes away; our own progress bars stay when stderr is a terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "reexec", False) and argv is None:
        from ..runtime import reexec_with_allocator

        reexec_with_allocator("adapters.cli", sys.argv[1:])  # returns only when no re-exec is needed
    _quiet_libraries()
    try:
        outcome = args.handler(args)
    except LoraEqError as e:
        print(f"loraeq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loraeq: interrupted", file=sys.stderr)
        return 130
    result, code = outcome if isinstance(outcome, tuple) else (outcome, 0)
    from ..runtime import is_main_process

    if is_main_process():  # under `accelerate launch`, one report for the whole job
        print_result(result, args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
