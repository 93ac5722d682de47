"""`loraeq compare | vote | leaderboard`: side-by-side answers, the user's verdicts and the ranking.

`compare` loads a run's base once with its finished variants as adapters (engine.py), answers
one prompt in every column in one batched decode and scores each answer (evals/scores.py).
`vote` stores a pass / fail on one answer and `leaderboard` ranks the columns (evals/votes.py).
Each handler returns a JSON-able dict; main.py prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import LoraEqError
from .common import format_table, refuse_classification_run


def _split_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise LoraEqError("--variants: give at least one variant name")
    return names


def _read_history(path: str | None) -> list[dict] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoraEqError(f"--history {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, list):
        raise LoraEqError(f"--history {path}: expected a JSON list of messages")
    return data


def _scale_grid(engine, spec: str):
    """A `--scale VARIANT=FILE.json|NUMBER` flag as (variant, multiplier grid)."""
    from ..equalizer import Equalizer

    variant, sep, value = spec.partition("=")
    if not sep or not variant.strip() or not value.strip():
        raise LoraEqError(f"--scale expects VARIANT=GRID.json or VARIANT=NUMBER, got {spec!r}")
    variant, value = variant.strip(), value.strip()
    unit = engine.unit_grid(variant)
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        return variant, Equalizer.uniform(unit.roles, unit.bands, number)
    try:
        data = json.loads(Path(value).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoraEqError(f"--scale {spec}: cannot read the grid ({e})") from None
    return variant, Equalizer.from_json(data)


def _compare(args: argparse.Namespace) -> dict:
    from evals.scores import compare

    from ..decoding import Sampling
    from ..engine import Column, CompareEngine

    sampling = Sampling(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    refuse_classification_run(args.run_dir, "compare")
    wanted = _split_names(args.variants)
    scaled_names = [s.partition("=")[0].strip() for s in args.scale]
    load = None if wanted is None else list(dict.fromkeys(wanted + scaled_names))
    engine = CompareEngine.from_run(Path(args.run_dir), variants=load, precision=args.precision, backend=args.backend)
    try:
        columns = engine.columns(wanted)
        for spec in args.scale:
            variant, grid = _scale_grid(engine, spec)
            columns.append(Column(variant, scales=grid))
        result = compare(engine, args.prompt, reference=args.reference, columns=columns,
                         history=_read_history(args.history), system=args.system, sampling=sampling)
        info = engine.info()
    finally:
        engine.close()
    return {
        "run_dir": args.run_dir,
        "model": info["model"],
        "precision": info["precision"],
        "backend": info["backend"],
        "sampling": sampling.to_json(),
        **result.to_json(),
    }


def _render_compare(data: dict, args) -> str:
    lines = [f"{data['model']['id']} ({data['precision']}), {len(data['columns'])} columns", ""]
    for c in data["columns"]:
        lines += [f"== {c['variant']}", c["text"], ""]
    keys = ("variant", "tokens", "seconds", "similarity_reference", "similarity_base", "finish_reason")
    rows = [{k: c[k] for k in keys} for c in data["columns"]]
    return "\n".join(lines + [format_table(rows)])


def _vote(args: argparse.Namespace) -> dict:
    from evals.votes import VoteStore

    try:
        settings = json.loads(args.settings) if args.settings else None
    except ValueError as e:
        raise LoraEqError(f"--settings: not JSON ({e})") from None
    store = VoteStore(Path(args.run_dir))
    vote_id = store.cast(
        args.prompt, args.variant, args.verdict, settings=settings, note=args.note or "",
        similarity_reference=args.similarity_reference, similarity_base=args.similarity_base, voter=args.voter,
    )
    return {"run_dir": args.run_dir, "id": vote_id, "variant": args.variant, "verdict": args.verdict}


def _leaderboard(args: argparse.Namespace) -> dict:
    from evals.votes import VoteStore

    store = VoteStore(Path(args.run_dir))
    out = {"run_dir": args.run_dir, "leaderboard": [s.to_json() for s in store.leaderboard()]}
    if args.csv:
        out["csv"] = str(store.export_csv(Path(args.csv)))
    if args.votes_csv:
        out["votes_csv"] = str(store.export_csv(Path(args.votes_csv), table="votes"))
    return out


def _render_leaderboard(data: dict, args) -> str:
    keys = ("variant", "votes", "passes", "pass_rate", "wilson_low", "wilson_high",
            "mean_similarity_reference", "mean_similarity_base")
    return f"run {data['run_dir']}\n" + format_table([{k: r[k] for k in keys} for r in data["leaderboard"]])


def register(sub) -> None:
    from ..engine import BACKENDS
    from ..loading import PRECISIONS

    p = sub.add_parser("compare", help="answer one prompt with the base and every variant, side by side, scored")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--reference", default=None, help="a reference answer to score similarity against")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: every finished one)")
    p.add_argument("--system", default=None, help="a system prompt")
    p.add_argument("--history", default=None, metavar="FILE", help="JSON list of earlier chat messages")
    p.add_argument("--scale", action="append", default=[], metavar="VARIANT=GRID.json|NUMBER",
                   help="add a live-scaled column: per-cell multipliers on the variant's LoRA scaling")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed; each column derives its own from it")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="default: the run's precision")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="how adapters mix in a batch")
    p.set_defaults(handler=_compare, render=_render_compare)

    p = sub.add_parser("vote", help="record pass / fail on one answer of a run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--variant", required=True, help="the column: base, a variant, or VARIANT@eq")
    p.add_argument("--verdict", required=True, choices=("pass", "fail"))
    p.add_argument("--note", default=None)
    p.add_argument("--settings", default=None, help="JSON object: the settings the answer was made with")
    p.add_argument("--similarity-reference", type=float, default=None)
    p.add_argument("--similarity-base", type=float, default=None)
    p.add_argument("--voter", default=None, help="a voter's later vote on the same answer replaces the earlier one")
    p.set_defaults(handler=_vote, render=lambda d, a: f"vote {d['id']}: {d['variant']} {d['verdict']}")

    p = sub.add_parser("leaderboard", help="rank a run's columns by their votes")
    p.add_argument("run_dir")
    p.add_argument("--csv", default=None, help="also write the leaderboard as CSV")
    p.add_argument("--votes-csv", default=None, help="also write every vote as CSV")
    p.set_defaults(handler=_leaderboard, render=_render_leaderboard)
