"""`loraeq search`: search equalizer shapes and hyperparameters for the tuning set that works.

Starts a search on new data (`--data FILE --out RUN`), on a run (`--run RUN`: resumed when it
was searched before), or adds a worker to a study in a shared storage (`--join STUDY --storage
URL`); `--make-variant N|best` turns a finished trial into a variant of the run. The library is
`evals.search`; this module parses flags into it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapters.errors import LoraEqError

from .common import add_bands_flag, add_data_flags, add_model_flags, format_table, read_data


def _settings(args: argparse.Namespace, run_dir: Path):
    from adapters.shape.search_space import SearchSpace
    from evals.search import SearchSettings, parse_budget, read_settings, search_dir

    budget = parse_budget(args.budget)
    if (search_dir(run_dir) / "settings.json").is_file():  # resume: the saved search, a new budget if given
        saved = read_settings(run_dir)
        if budget is not None or args.trials is not None:
            saved.budget_seconds, saved.trials = budget, args.trials
        return saved
    space = SearchSpace.parse(args.set)
    return SearchSettings(str(run_dir), space.to_json(), objective=args.objective, budget_seconds=budget,
                          trials=args.trials, seed=args.seed, evalset=args.evalset, study=args.study,
                          storage=args.storage)


def _new_run(args: argparse.Namespace, base, dataset) -> Path:
    from adapters.train.dataspec import DataSpec, start_run

    out = Path(args.out)
    spec = DataSpec(args.data, format=args.format, heldout=args.heldout, seed=args.split_seed)
    start_run(out, spec, [], model=args.model, precision=args.precision, bands=args.bands, dataset=dataset)
    return out


def _search(args: argparse.Namespace) -> tuple[dict, int]:
    from adapters.base.loading import load_model
    from adapters.shape.search_space import SearchSpace
    from adapters.train.runfolder import RunFolder
    from evals.search import make_variant, parse_budget, run_search, search_dir

    if args.trials is not None and args.trials < 1:
        raise LoraEqError(f"--trials {args.trials}: must be at least 1")
    parse_budget(args.budget)  # everything a user typed is checked before a model loads
    SearchSpace.parse(args.set)
    dataset = None
    if args.join is not None:
        if not args.storage:
            raise LoraEqError("--join STUDY needs the --storage URL the study lives in")
        run_dir = _joined_run(args)
    elif args.run:
        run_dir = Path(args.run)
        RunFolder.open(run_dir)
    else:
        if not args.data:
            raise LoraEqError("give --data FILE with --out RUN (or --run RUN to search on an existing run)")
        dataset, run_dir = read_data(args), None
    if args.make_variant is not None:
        run = RunFolder.open(run_dir)
        return {"run_dir": str(run_dir), "variant": make_variant(run_dir, args.make_variant,
                                                                 load_model(run.model, run.precision))}, 0
    if run_dir is not None:
        settings = _settings(args, run_dir)
        run = RunFolder.open(run_dir)
        base = load_model(run.model, run.precision)
    else:
        if args.budget is None and args.trials is None:
            raise LoraEqError("give a budget: --budget 20m or --trials N")
        base = load_model(args.model, args.precision)
        run_dir = _new_run(args, base, dataset)
        settings = _settings(args, run_dir)

    def echo(trial) -> None:
        if not args.json:
            print(f"[trial {trial.number}] {trial.state.name.lower()} {trial.user_attrs.get('score', '')}",
                  file=sys.stderr, flush=True)

    report = run_search(settings, base, join=args.join is not None, on_trial=echo)
    if args.add_winner and report.get("best"):
        report["variant"] = make_variant(run_dir, "best", base)
    report["search_dir"] = str(search_dir(run_dir))
    return report, 0


def _joined_run(args: argparse.Namespace) -> Path:
    import optuna

    from evals.search import SearchSettings, storage_for

    probe = SearchSettings(".", {}, trials=1, storage=args.storage, study=args.join)
    try:
        study = optuna.load_study(study_name=args.join, storage=storage_for(probe))
    except KeyError:
        raise LoraEqError(f"study {args.join!r} is not in {args.storage}") from None
    run_dir = study.user_attrs.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        raise LoraEqError(f"study {args.join!r}: its run folder {run_dir!r} is not reachable from here")
    return Path(run_dir)


def _render(data: dict, args) -> str:
    if "trials" not in data:
        return f"run {data['run_dir']}: trial added as variant {data['variant']!r}"
    rows = [{"trial": t["number"], "state": t["state"], "score": t["score"], "steps": t["steps"],
             "seconds": t["seconds"], **{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in t["params"].items()}}
            for t in data["trials"]]
    lines = [f"search {data['search_dir']}", format_table(rows)]
    best = data.get("best")
    if best:
        lines.append(f"winner: trial {best['number']}, {best['search_score']:.0%} of the search checks; on "
                     f"{best['confirm_checks']} checks it never saw {best['confirmed_score']:.0%} "
                     f"(95% CI {best['confirmed_ci'][0]:.0%}-{best['confirmed_ci'][1]:.0%}) against the default's "
                     f"{best['default_confirmed_score']:.0%}, paired p = {best['p_value']:.3g}")
    if data.get("importances"):
        lines.append("what mattered: " + ", ".join(f"{k} {v:.2f}" for k, v in data["importances"].items()))
    if data.get("variant"):
        lines.append(f"the winner is variant {data['variant']!r} of the run")
    return "\n".join(lines + data.get("notes", []))


def register(sub) -> None:
    from evals.search import OBJECTIVES

    p = sub.add_parser("search", help="search equalizer shapes and hyperparameters on your checks, the winner confirmed")
    add_model_flags(p)
    add_data_flags(p, required=False)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="run folder to create for the search (with --data)")
    target.add_argument("--run", help="a run folder to search on (a search there before: resumed)")
    target.add_argument("--join", metavar="STUDY", help="add a worker to this study (with --storage)")
    p.add_argument("--storage", metavar="URL", help="an Optuna storage URL (sqlite:///f.db, postgresql://...) or "
                   "journal file; default a journal file in RUN/search/")
    p.add_argument("--study", default="search", help="the study's name in the storage (default search)")
    p.add_argument("--evalset", metavar="FILE", help="an eval set whose checks judge the trials too")
    p.add_argument("--objective", default="both", choices=OBJECTIVES,
                   help="what a trial is scored by: held-out answers stating their facts (match), the eval set's "
                        "checks (checks), or both (default)")
    p.add_argument("--budget", help="time for the trials, e.g. 20m, 90s, 1h (a started trial finishes)")
    p.add_argument("--trials", type=int, help="number of trials (finished or pruned)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE|LOW:HIGH",
                   help="fix a setting or narrow its range: rank, learning_rate, epochs, alpha, dropout, "
                        "depth_early, depth_middle, depth_late, attention, mlp")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of the search/confirmation split")
    p.add_argument("--make-variant", metavar="TRIAL", help="make a finished trial (a number, or best) a variant of the run")
    p.add_argument("--add-winner", action="store_true", help="when the search ends, make its winner a variant")
    p.add_argument("--heldout", default="auto", type=lambda t: t if t == "auto" else float(t),
                   help="held-out fraction of a new run (default auto)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of a new run's held-out split (default 0)")
    add_bands_flag(p)
    p.set_defaults(handler=_search, render=_render, reexec=True)
