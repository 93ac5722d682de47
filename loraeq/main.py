"""`loraeq`: the wiring of the subcommands (the console script and `python -m loraeq` run `main`).

Each subcommand is a thin wrapper over a library function, registered by its stage module: it
parses flags, calls the function and prints the result, as exactly one JSON object on stdout with
`--json`, or as a readable table. Bad input (a `LoraEqError`, or a bad flag) exits 2 with one line
on stderr naming the problem. The JSON of `train`, `compare`, `evalset` and `eval` also says which
fast paths ran (`fast_paths`: name -> "ran" or why not; adapters/fastpath.py). No stage module
imports this one.
"""

from __future__ import annotations

import argparse
import os
import sys

from adapters.errors import LoraEqError

from . import analyze, arena, chat, classify, compare, data, evalset, export, proof, search, serve, suggest, train, users
from .common import Parser, add_json_flag, print_result

# `loraeq --help` lists the commands in this order, the pipeline's: model -> data -> shape -> train ->
# search -> compare (vote, chat, battles, eval sets, classify) -> prove -> export -> serve -> the web app's users.
STAGES = (analyze, data, suggest, train, search, compare, chat, arena, evalset, classify, proof, export, serve, users)
# Commands whose JSON says which fast paths ran (`fast_paths`: name -> "ran" or why not; fastpath.py).
REPORT_FAST_PATHS = ("train", "compare", "evalset", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loraeq", description="LoRA EQ: analyze, shape, train, compare and prove LoRA variants.",
                    epilog="The commands are listed in pipeline order: model, data, shape, train, compare, prove, "
                           "export.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND",
                                help="one stage of the pipeline; loraeq COMMAND --help: its flags")
    for stage in STAGES:
        stage.register(sub)
    width = 4 + max(map(len, sub.choices))  # a command's name is indented by 4
    parser.formatter_class = lambda prog: _OneLinePerCommand(prog, width)
    for p in sub.choices.values():
        add_json_flag(p)
    return parser


class _OneLinePerCommand(argparse.HelpFormatter):
    """Every command's help beside its name: argparse sizes the name column without the commands'
    indent, so the longest name ("leaderboard") would get a line of its own."""

    def __init__(self, prog: str, names_width: int) -> None:
        super().__init__(prog, max_help_position=names_width + 2)
        self._action_max_length = names_width


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
    args = build_parser().parse_args(argv)  # a bad flag: one line on stderr, SystemExit(2)
    if getattr(args, "reexec", False) and argv is None:
        from adapters.runtime import reexec_with_allocator

        reexec_with_allocator("loraeq", sys.argv[1:])  # returns only when no re-exec is needed
    code, error = _run(args)
    if error:
        print(error, file=sys.stderr)
    return code


def call(argv: list[str]) -> tuple[int, str]:
    """Run one subcommand in this process: (exit code, the line saying what went wrong, '' if
    nothing). The result is printed as `main` prints it. The web app's in-process jobs (on
    ZeroGPU) use this: the error line comes back as a value, not through the shared stderr."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 2), "loraeq: error: bad arguments"
    return _run(args)


def _run(args: argparse.Namespace) -> tuple[int, str]:
    from adapters import fastpath

    _quiet_libraries()
    try:
        fastpath.switched_on()  # a bad LORAEQ_FAST_PATHS is refused before any work
        with fastpath.recording() as record:
            outcome = args.handler(args)
    except LoraEqError as e:
        return 2, f"loraeq: error: {e}"
    except KeyboardInterrupt:
        return 130, "loraeq: interrupted"
    result, code = outcome if isinstance(outcome, tuple) else (outcome, 0)
    if args.command in REPORT_FAST_PATHS and isinstance(result, dict):
        result = {**result, "fast_paths": fastpath.report(record)}
    from adapters.runtime import is_main_process

    if is_main_process():  # under `accelerate launch`, one report for the whole job
        print_result(result, args)
    return code, ""


if __name__ == "__main__":
    raise SystemExit(main())
