"""`loraeq compare | vote | leaderboard`: side-by-side answers, the user's verdicts and the ranking.

`compare` loads a run's base once with its finished variants as adapters (engine.py), plus any
`--adapter NAME=SOURCE` from outside the run (a run variant, folder, .zip or Hub id, checked
against the base by adapter_sources.py; without a run, the `--model` base and those adapters), answers
one prompt in every column in one batched decode and scores each answer (evals/scores.py).
`vote` stores a pass / fail on one answer and `leaderboard` ranks the columns (evals/votes.py).
Each handler returns a JSON-able dict; main.py prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from adapters.errors import LoraEqError

from .common import add_sampling_flags, format_table, name_list, refuse_classification_run


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
    from adapters.shape.equalizer import Equalizer

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
    from adapters.infer.decoding import Sampling
    from adapters.infer.engine import Column
    from evals.scores import compare

    sampling = Sampling(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    refuse_classification_run(args.run_dir, "compare")
    wanted = name_list(args.variants, "--variants")
    scaled_names = [s.partition("=")[0].strip() for s in args.scale]
    load = None if wanted is None else list(dict.fromkeys(wanted + scaled_names))
    with contextlib.ExitStack() as stack:
        engine = open_engine(args, stack, variants=load)
        wanted = None if wanted is None else wanted + [n for n in engine.outside if n not in wanted]
        stack.callback(engine.close)
        columns = engine.columns(wanted)
        for spec in args.scale:
            variant, grid = _scale_grid(engine, spec)
            columns.append(Column(variant, live_eq=grid))
        result = compare(engine, args.prompt, reference=args.reference, columns=columns,
                         history=_read_history(args.history), system=args.system, sampling=sampling)
        info = engine.info()
    return {
        "run_dir": args.run_dir,
        "model": info["model"],
        "precision": info["precision"],
        "backend": info["backend"],
        "decode_precision": info["decode_precision"],
        "adapters": {k.strip(): v.strip() for k, _, v in (a.partition("=") for a in args.adapter)},
        "warnings": info["warnings"],
        "sampling": sampling.to_json(),
        **result.to_json(),
    }


def fetch_adapters(items: list[str], stack: contextlib.ExitStack, runs: Path | None,
                   allow_pickle: bool) -> dict[str, Path]:
    """`--adapter NAME=SOURCE` flags as name -> adapter folder: any local folder the user names;
    zips and Hub ids are fetched into a temporary folder that `stack` removes."""
    from adapters.share.adapter_sources import AdapterSpec, check_name, resolve_spec

    specs = [AdapterSpec.parse(item) for item in items]
    for i, spec in enumerate(specs):
        check_name(spec.name, [s.name for s in specs[:i]])
    if not specs:
        return {}
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loraeq-adapters-")))
    return {s.name: resolve_spec(s, work / s.name, runs=runs, roots=None, allow_pickle=allow_pickle) for s in specs}


def open_engine(args: argparse.Namespace, stack: contextlib.ExitStack, variants: list[str] | None = None):
    """The engine `compare` and `chat` answer with: the run's variants (when a run is given) plus
    each `--adapter NAME=SOURCE` (fetch_adapters)."""
    from adapters.infer.engine import CompareEngine

    if args.run_dir is None and args.variants:
        raise LoraEqError("--variants needs a run folder")
    runs = Path(args.runs_dir) if args.runs_dir else (Path(args.run_dir).resolve().parent if args.run_dir
                                                      else Path("runs") if Path("runs").is_dir() else None)
    folders = fetch_adapters(args.adapter, stack, runs, args.allow_pickle)
    if variants is not None:
        variants = [v for v in variants if v not in folders]
    if args.run_dir is None:
        return CompareEngine.from_model(args.model, folders, precision=args.precision or "auto",
                                        backend=args.backend, allow_pickle=args.allow_pickle, decode_precision=args.decode_precision)
    return CompareEngine.from_run(Path(args.run_dir), variants=variants, precision=args.precision,
                                  backend=args.backend, adapters=folders, allow_pickle=args.allow_pickle,
                                  decode_precision=args.decode_precision)


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """The run, outside adapters and base flags `compare` and `chat` share."""
    from adapters.base.loading import PRECISIONS
    from adapters.infer.decode_precision import DECODE_PRECISIONS
    from adapters.infer.engine import BACKENDS

    p.add_argument("run_dir", nargs="?", default=None,
                   help="a run folder (loraeq train --out); optional with --adapter")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=SOURCE",
                   help="add a column: a PEFT LoRA adapter from RUN/VARIANT (in --runs-dir), a folder, a .zip "
                        "or a Hub id (repeatable)")
    p.add_argument("--runs-dir", default=None,
                   help="where RUN/VARIANT sources are found (default: the run's parent, else ./runs)")
    p.add_argument("--model", default=None, help="the base when no run is given (default: embedded SmolLM2)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept an adapter saved only as a pickled adapter_model.bin (it can run code: trust it first)")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: every finished one)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="default: the run's precision (auto without a run)")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="how adapters mix in a batch")
    p.add_argument("--decode-precision", default="auto", choices=DECODE_PRECISIONS,
                   help="what a 4-bit base decodes with: auto (NF4 on a CPU, a bf16 copy on a GPU when it fits), "
                        "as-loaded, or a bf16 / fp16 / fp32 copy")


def _render_compare(data: dict, args) -> str:
    plan = data["decode_precision"]
    how = f"a {plan['precision']} copy" if plan["copy"] else plan["precision"]
    lines = [f"{data['model']['id']} ({data['precision']}, decoding with {how}: {plan['reason']}), "
             f"{len(data['columns'])} columns", ""]
    lines += [f"warning: {w}" for ws in data.get("warnings", {}).values() for w in ws]
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
    with contextlib.ExitStack() as stack:
        adapters = fetch_adapters(args.adapter, stack, Path(args.run_dir).resolve().parent, False)
        store = VoteStore(Path(args.run_dir), adapters)
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
    p = sub.add_parser("compare", help="answer a prompt with the base and every variant, scored",
                       description="Answer one prompt with the base and every variant, side by side, scored.")
    add_engine_flags(p)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--reference", default=None, help="a reference answer to score similarity against")
    p.add_argument("--system", default=None, help="a system prompt")
    p.add_argument("--history", default=None, metavar="FILE", help="JSON list of earlier chat messages")
    p.add_argument("--scale", action="append", default=[], metavar="VARIANT=GRID.json|NUMBER",
                   help="add a live-equalized column: per-cell multipliers on the variant's LoRA scaling")
    add_sampling_flags(p, "sampling seed; each column derives its own from it (default 0)")
    p.set_defaults(handler=_compare, render=_render_compare)

    p = sub.add_parser("vote", help="record pass / fail on one answer of a run")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.add_argument("--prompt", required=True, help="the user message the answer replied to")
    p.add_argument("--variant", required=True, help="the column: base, a variant, VARIANT@eq or an --adapter's name")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=SOURCE",
                   help="an outside adapter the answer came from (as given to compare), for its fingerprint")
    p.add_argument("--verdict", required=True, choices=("pass", "fail"), help="pass or fail")
    p.add_argument("--note", default=None, help="a free-text note kept with the vote")
    p.add_argument("--settings", default=None, help="JSON object: the settings the answer was made with")
    p.add_argument("--similarity-reference", type=float, default=None,
                   help="the answer's similarity to the reference (as compare printed it), for the leaderboard")
    p.add_argument("--similarity-base", type=float, default=None,
                   help="the answer's similarity to the base's answer (as compare printed it)")
    p.add_argument("--voter", default=None, help="a voter's later vote on the same answer replaces the earlier one")
    p.set_defaults(handler=_vote, render=lambda d, a: f"vote {d['id']}: {d['variant']} {d['verdict']}")

    p = sub.add_parser("leaderboard", help="rank a run's columns by their votes")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.add_argument("--csv", default=None, help="also write the leaderboard as CSV")
    p.add_argument("--votes-csv", default=None, help="also write every vote as CSV")
    p.set_defaults(handler=_leaderboard, render=_render_leaderboard)
