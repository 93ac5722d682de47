"""`loraeq evalset RUN --set FILE`: many prompts x the base and every variant, checked and summarized.

The handler reads the eval set (evals/evalset.py: rows or a promptfoo config, or `heldout` for
the run's held-out split), refuses it when a row is bad (each named; `--skip-bad-rows` runs the
others and lists them), loads the run's engine, and runs the set (evals/evalrun.py) into
RUN/evalsets/NAME (or --out), which also the web app's job reads. The JSON has `cells` (count),
`columns` (name, passed, total, pass_rate, ci, mean_similarity, mcnemar_p against the base, ...),
`unsupported`, `rejected`, `probes` and `notes`; user votes stored on cells count as overrides.
`--adapter NAME=SOURCE` adds an outside adapter's column (as `loraeq compare` does).
`--cancel` asks a running job of the same set to stop.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from adapters.errors import LoraEqError

from .common import add_judge_flags, add_sampling_flags, format_table, name_list, open_judge, refuse_classification_run
from .compare import fetch_adapters


def _read_set(args: argparse.Namespace):
    from evals.checks import parse_check
    from evals.evalset import HELDOUT, load_evalset, resolve_style

    evalset = load_evalset(args.set, run_dir=args.run_dir)
    if evalset.rejected and not args.skip_bad_rows:
        shown = "; ".join(f"{r['row']}: {r['reason']}" for r in evalset.rejected[:5])
        more = f" (and {len(evalset.rejected) - 5} more)" if len(evalset.rejected) > 5 else ""
        raise LoraEqError(f"{args.set}: {len(evalset.rejected)} bad rows{more}: {shown}; fix them or pass "
                          "--skip-bad-rows")
    if args.style:
        source = Path(args.style).resolve()
        folder, name = (Path("."), args.style) if args.style == HELDOUT else (source.parent, source.name)
        check = parse_check({"type": "style", "value": name}, "--style")
        evalset = evalset.with_checks([resolve_style(check, folder, args.run_dir)])
    return evalset


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    from evals.matrix import evalset_dir

    return Path(args.out) if args.out else evalset_dir(args.run_dir, args.name or name)


def _evalset(args: argparse.Namespace) -> tuple[dict, int]:
    from adapters.infer.decoding import Sampling
    from adapters.infer.engine import CompareEngine
    from adapters.train.runfolder import RunFolder
    from evals.evalrun import run_evalset, starting
    from evals.matrix import EvalFolder

    RunFolder.open(args.run_dir)
    refuse_classification_run(args.run_dir, "evalset")
    if args.cancel:
        folder = EvalFolder(_out_dir(args, Path(args.set).stem))
        folder.request_cancel()
        return {"run_dir": args.run_dir, "folder": str(folder.path), "cancel_requested": True}, 0
    evalset = _read_set(args)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        seed=args.seed)
    out = _out_dir(args, evalset.name)
    variants = name_list(args.columns, "--columns")
    starting(out, len(evalset.cases))
    with contextlib.ExitStack() as stack:
        judge = open_judge(args)  # first: a bad judge flag is named before the models load
        if judge is not None:
            stack.callback(judge.close)
        folders = fetch_adapters(args.adapter, stack, Path(args.run_dir).resolve().parent, args.allow_pickle)
        trained = None if variants is None else [v for v in variants if v not in folders]
        engine = CompareEngine.from_run(Path(args.run_dir), variants=trained, precision=args.precision,
                                        adapters=folders, allow_pickle=args.allow_pickle)
        stack.callback(engine.close)
        columns = None if variants is None else variants + [n for n in folders if n not in variants]
        summary = run_evalset(engine, evalset, out, variants=columns, sampling=sampling,
                              batch_prompts=args.batch_prompts, seed=args.seed, judge_model=judge)
    if summary.get("status") == "cancelled":
        return {"run_dir": args.run_dir, "folder": str(out), "status": "cancelled"}, 1
    return {"run_dir": args.run_dir, "folder": str(out), **_with_votes(args.run_dir, out, summary)}, 0


def _with_votes(run_dir: str, out: Path, summary: dict) -> dict:
    """The summary with the user's cell overrides (votes) counted, when there are any."""
    from evals.matrix import EvalFolder, apply_votes, judged_summary
    from evals.votes import DB_NAME, VoteStore

    if not (Path(run_dir) / DB_NAME).is_file():
        return summary
    cells = apply_votes(EvalFolder(out).cells(), VoteStore(run_dir))
    if any(c.get("override") for c in cells):
        columns, judges = judged_summary(cells, [c["name"] for c in summary["columns"]])
        summary = {**summary, "columns": columns, "judges": judges}
    return summary


def _render(data: dict, args) -> str:
    from evals.judge import judge_line

    if data.get("cancel_requested") or data.get("status") == "cancelled":
        return f"eval set {data['folder']}: " + ("cancel requested" if data.get("cancel_requested") else "cancelled")
    rows = []
    for c in data["columns"]:
        lo, hi = c["ci"]
        rows.append({"column": c["name"], "passed": c["passed"], "total": c["total"], "pass_rate": c["pass_rate"],
                     "ci95": f"[{lo:.2f}, {hi:.2f}]", "similarity": c["mean_similarity"],
                     "mcnemar_p": c["mcnemar_p"], "similarity_p": c["similarity_p"]})
    lines = [f"eval set {data['name']}: {data['prompts']} prompts, {data['cells']} cells -> {data['folder']}",
             format_table(rows)]
    lines += [f"style probe: cross-validated accuracy {p['cv_accuracy']:.2f} ({p['examples']} examples, "
              f"{p['contrast']} contrast)" for p in data["probes"]]
    lines += [f"judged check {judge_line(j)}" for j in data.get("judges", [])]
    lines += [f"not run: {u['type']} in {u['test']}" for u in data["unsupported"]]
    lines += [f"skipped: {r['row']}: {r['reason']}" for r in data["rejected"]]
    lines += [f"note: {n}" for n in data["notes"]]
    return "\n".join(lines)


def register(sub) -> None:
    from adapters.base.loading import PRECISIONS

    p = sub.add_parser("evalset", help="run an eval set (rows or promptfoo) on every column",
                       description="Run an eval set (rows or a promptfoo config) on the base and every variant.")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.add_argument("--set", required=True, metavar="FILE",
                   help="JSONL / JSON / CSV / Parquet rows, a promptfoo YAML config, or 'heldout' (the run's split)")
    p.add_argument("--columns", default=None, help="comma-separated variants next to the base (default: all)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=SOURCE",
                   help="add an outside adapter's column (RUN/VARIANT, folder, .zip or Hub id; repeatable)")
    p.add_argument("--allow-pickle", action="store_true", help="accept an adapter saved only as a pickle")
    p.add_argument("--style", default=None, metavar="EXAMPLES",
                   help="add a style check to every prompt: a file of style examples, or 'heldout'")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default RUN/evalsets/NAME)")
    p.add_argument("--name", default=None, help="the results' name under RUN/evalsets (default: the set's)")
    p.add_argument("--skip-bad-rows", action="store_true", help="run the valid rows and list the bad ones")
    p.add_argument("--batch-prompts", type=int, default=8, help="prompts per batch (each with all its columns)")
    add_sampling_flags(p, "sampling seed, also of the style check's samples (default 0)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="default: the run's precision")
    add_judge_flags(p, "rules the judged checks (llm-rubric, model-graded-closedqa, factuality, select-best)")
    p.add_argument("--cancel", action="store_true", help="ask a running job of this set to stop")
    p.set_defaults(handler=_evalset, render=_render, reexec=True)
