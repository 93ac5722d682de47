"""`loraeq arena`: the blind battles' ranking of a run's columns (Bradley-Terry, 95% intervals).

The battles are the ones voted in the web app's Compare tab (evals/arena.py keeps them in the
run's votes database). The handler returns a JSON-able dict; main.py prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_judge_flags, format_table, open_judge


def _arena(args: argparse.Namespace) -> dict:
    from evals.arena import BattleStore

    store = BattleStore(Path(args.run_dir))
    judge = open_judge(args)
    if judge is not None:
        try:
            store.ask_judge(judge)
        finally:
            judge.close()
    out = {"run_dir": args.run_dir, "battles": len(store.battles()),
           "ranking": [r.to_json() for r in store.ranking(rounds=args.rounds)],
           "judges": [store.judge_reliability(name) for name in store.judges()]}
    if args.csv:
        out["csv"] = str(store.export_csv(Path(args.csv)))
    return out


def _render(data: dict, args) -> str:
    from evals.judge import judge_line

    keys = ("rank", "model", "rating", "low", "high", "battles", "wins", "ties", "both_bad", "losses")
    head = f"run {data['run_dir']}: {data['battles']} battles"
    if not data["ranking"]:
        return head + " (vote in the Compare tab's blind battle)"
    judges = [f"battle judge {judge_line(j)}" for j in data.get("judges", [])]
    return "\n".join([head, format_table([{k: r[k] for k in keys} for r in data["ranking"]]), *judges])


def register(sub) -> None:
    p = sub.add_parser("arena", help="rank a run's columns by blind battles (Bradley-Terry)",
                       description="Rank a run's columns by their blind battles (Bradley-Terry, 95% intervals).")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.add_argument("--csv", default=None, metavar="OUT", help="also write the ranking as CSV")
    p.add_argument("--rounds", type=int, default=500, help="bootstrap rounds for the intervals")
    add_judge_flags(p, "asks this judge for its pick on every battle it has not judged (both orders)")
    p.set_defaults(handler=_arena, render=_render)
