"""`loraeq eval RUN_DIR`: the proof of learning on the command line.

The handler calls `evals.proof.evaluate_run` (which writes report.json/.md/.html into the run
folder) and returns the report's JSON: per variant at least name, verdict, held-out loss of base
and variant, similarity of base and variant, the similarity difference's interval and p-value, and
the KL to the base. The readable form is a table per variant plus the verdict lines. Per-example
answers stay in report.json; they are not printed here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import format_table, progress_bar

_TABLE = [
    ("heldout loss", "heldout_loss_base", "heldout_loss"),
    ("heldout ppl", "heldout_ppl_base", "heldout_ppl"),
    ("train loss", "train_loss_base", "train_loss"),
    ("similarity", "similarity_base", "similarity"),
]


def _eval(args: argparse.Namespace) -> dict:
    from adapters.train.runfolder import RunFolder
    from evals.proof import evaluate_run

    if RunFolder.open(Path(args.run_dir)).task == "classification":
        return _eval_classification(args)

    report = evaluate_run(Path(args.run_dir), limit=args.limit, seed=args.seed, progress=_progress(args.run_dir),
                          base_cache=not args.no_base_cache)
    data = report.to_json()
    for v in data["variants"]:
        v.pop("per_example")  # every answer and loss is in report.json; the summary stays small
    data.pop("rows")
    data["report"] = {name: str(Path(args.run_dir) / name) for name in ("report.json", "report.md", "report.html")}
    return data


def _progress(run_dir: str):
    """The proof's progress written into the run folder for any follower (the web app's Proof tab),
    and drawn as a bar when stderr is a terminal."""
    from evals.progress import ProofProgress

    kept, bar = ProofProgress(run_dir), progress_bar("proof")

    def update(done: int, total: int) -> None:
        kept(done, total)
        if bar:
            bar(done, total)

    return update


def _eval_classification(args: argparse.Namespace) -> dict:
    from evals.classproof import evaluate_classification

    data = evaluate_classification(Path(args.run_dir), seed=args.seed)
    data["report"] = {name: str(Path(args.run_dir) / name) for name in ("report.json", "report.md", "report.html")}
    return data


def _render_classification(data: dict) -> str:
    from evals.classproof import render_markdown

    return render_markdown(data) + f"\nreport: {data['report']['report.html']}"


def _render_eval(data: dict, args) -> str:
    if data.get("task") == "classification":
        return _render_classification(data)
    lines = [f"proof of learning: {data['run_dir']} ({data['heldout_rows']} held-out rows, seed {data['seed']})", ""]
    for v in data["variants"]:
        rows = [{"measure": label, "base": v[b], v["name"]: v[x]} for label, b, x in _TABLE]
        lo, hi = v["diff_ci"]
        lines += [
            f"{v['name']}  ({v['steps']} steps)",
            format_table(rows),
            f"similarity diff {v['similarity_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] p={v['p_value']:.4g}   "
            f"KL to base {v['kl_to_base']:.3g}   max |dlogit| {v['max_logit_diff']:.3g}   "
            f"membership AUC {v['membership_auc']:.2f}   Min-K% AUC {v['min_k_auc']:.2f}",
            "",
        ]
    lines += ["verdicts:", *[f"  {v['name']}: {v['verdict_line']}" for v in data["variants"]]]
    lines += [f"  {s['name']}: not evaluated ({s['status']})" for s in data["skipped"]]
    lines += [f"  note: {n}" for n in data["notes"]]
    lines += ["", f"report: {data['report']['report.html']}"]
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("eval", help="prove what each variant learned: losses, answers, verdict",
                       description="Prove what each variant of a run learned: losses, similarity, statistics, verdict.")
    p.add_argument("run_dir", help="a run folder made by `loraeq train`")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="measure a seeded sample of N held-out rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, bootstrap and permutations (default 0)")
    p.add_argument("--no-base-cache", action="store_true",
                   help="compute the base's answers and train losses again instead of reading them from the cache "
                        "of an earlier proof with the same base and rows")
    # Re-executed under the fast malloc like `train` (runtime.py): generation churns small tensors.
    p.set_defaults(handler=_eval, render=_render_eval, reexec=True)
