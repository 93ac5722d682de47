"""`loraeq`: the headless face of every stage.

Each subcommand is a thin wrapper over a library function: it parses flags, calls the function
and prints the result, as exactly one JSON object on stdout with `--json`, or as a readable table.
Bad input (a `LoraEqError`, or a bad flag) exits 2 with one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from .data.cli import register as _register_data
from .errors import LoraEqError

Handler = Callable[[argparse.Namespace], "tuple[dict, int] | dict"]


class _Parser(argparse.ArgumentParser):
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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _progress_bar(label: str):
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


def add_model_flags(p: argparse.ArgumentParser) -> None:
    from .loading import PRECISIONS

    p.add_argument("--model", default=None, help="Hub id, model folder or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto | nf4 (4-bit) | bf16 | fp32")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model that ships its own Python code")


# ---- analyze ---------------------------------------------------------------------------------


def _analyze(args: argparse.Namespace) -> dict:
    from .analysis import analyze

    result = analyze(
        args.model,
        args.precision,
        args.bands,
        trust_remote_code=args.trust_remote_code,
        use_cache=not args.no_cache,
        progress=_progress_bar("weight statistics"),
    )
    return result.to_json()


def _render_analyze(data: dict, args: argparse.Namespace) -> str:
    import pandas as pd

    m = data["model"]
    head = [
        f"model      {m['id']}  (fingerprint {m['fingerprint']})",
        f"precision  {data['precision']}   memory {_human_bytes(data['memory_bytes'])}   "
        f"load {data['load_seconds']:.1f}s   analysis {data['analysis_seconds']:.1f}s"
        + ("  (cached)" if data["cached"] else ""),
        f"layers     {data['layers']} ({data['layers_path']})   roles {', '.join(data['roles'])}",
        f"params     {data['total_params']:,} total, {data['totals']['cells_params']:,} in the grid",
        "",
        f"{args.stat} per layer x role:",
    ]
    grid = pd.DataFrame(data["cells"]).pivot(index="layer", columns="role", values=args.stat)[data["roles"]]
    rows = [{"layer": int(i), **{r: grid.loc[i, r] for r in data["roles"]}} for i in grid.index]
    by_role = [{"role": r, **t} for r, t in data["totals"]["by_role"].items()]
    bands = [
        {"band": b, "layers": f"{ls[0]}-{ls[-1]}", **data["totals"]["by_band"][b]}
        for b, ls in enumerate(data["bands"])
    ]
    return "\n".join(
        head
        + [format_table(rows), "", "totals per role:", format_table(by_role), "", "bands:", format_table(bands)]
        + ["", "outside the layers:", format_table(data["other"])]
    )


def _register_analyze(sub) -> None:
    from .analysis import STATISTICS

    p = sub.add_parser("analyze", help="map where the model's weights can be tuned (layers x module roles)")
    add_model_flags(p)
    p.add_argument("--bands", type=int, default=4, help="group the layers into N bands (default 4)")
    p.add_argument("--stat", default="spectral", choices=STATISTICS + ("params",), help="statistic for the table")
    p.add_argument("--no-cache", action="store_true", help="recompute even if a cached analysis exists")
    p.set_defaults(handler=_analyze, render=_render_analyze)


# ---- wiring ----------------------------------------------------------------------------------

REGISTRARS: list[Callable] = [_register_analyze, _register_data]


def build_parser() -> argparse.ArgumentParser:
    from . import cli_compare, cli_eval, cli_train  # imported here: they build on this module's helpers

    parser = _Parser(prog="loraeq", description="LoRA EQ: analyze, shape, train, compare and prove LoRA variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in [*REGISTRARS, cli_train.register, cli_eval.register, cli_compare.register]:
        register(sub)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
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
        from .runtime import reexec_with_allocator

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
    data, code = outcome if isinstance(outcome, tuple) else (outcome, 0)
    from .runtime import is_main_process

    if not is_main_process():  # under `accelerate launch`, one report for the whole job
        return code
    try:
        if args.json:
            print(json.dumps(data, ensure_ascii=False, default=str), flush=True)
        else:
            print(args.render(data, args), flush=True)
    except BrokenPipeError:  # `loraeq ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
