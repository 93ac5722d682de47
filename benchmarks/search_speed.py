"""Search speed and honesty: a budgeted search with pruning against the same configurations
trained fully one after another, on the real embedded model.

    python benchmarks/search_speed.py [--budget 15m] [--products 16] [--seed 20261205] [--keep DIR] [--json]

Data invented here with a seed no test or calibration uses (`adapters.data.synthetic`, wording
set "b"): `--products` invented products, each with a price and a release year, each fact asked 3
ways (96 rows for 16), the run's auto held-out split; an eval set asks every fact in the fourth
wording no row uses, with an `icontains` check on its value.

1. **The search**: `run_search` with the budget (default 15 minutes), the default objective
   (held-out facts and the eval set's checks), everything else default. Reported: trials, pruned,
   failed; the winner's search score, its confirmed pass rate with the 95% interval next to the
   default's, and the paired p-value.
2. **Exhaustive**: the first N trials of that search (N >= 8), each trained to its end (the ones
   the search pruned are trained again fully; the ones it finished already were), scored on the
   same search checks: the exhaustive winner is the best of them. The search's winner among those
   N must be the exhaustive winner or, on the confirmation checks, within the exhaustive winner's
   interval; its compute (optimizer steps the search ran for those N) at most 40% of training
   them all fully.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
N_EXHAUSTIVE = 8
COMPUTE_TARGET = 0.40


def write_data(folder: Path, seed: int, products: int) -> tuple[Path, Path]:
    from adapters.data.synthetic import catalog_probes, invented_catalog

    data, evalset = folder / "catalog.jsonl", folder / "probes.jsonl"
    rows = invented_catalog(seed, "b", products, ("price", "year"), 3)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probes = catalog_probes(seed, "b", products, ("price", "year"))
    evalset.write_text("".join(json.dumps({"prompt": p["question"], "reference": p["answer"], "assert": [
        {"type": "icontains", "value": p["answer_key"].lstrip("$")}]}) + "\n" for p in probes))
    return data, evalset


def train_fully(run_dir: Path, base, trial: dict, judge) -> tuple[float, float, int, Path]:
    """A trial's configuration trained to its end outside the search: (score, value, steps, folder)."""
    from adapters.shape.variants import Variant
    from adapters.train.runs import run_split
    from adapters.train.training import train_variant

    class Final:  # scores the model at its last step only
        def __init__(self):
            self.score = None

        def due(self, step):
            return False

        def __call__(self, step, max_steps, model):
            self.score = judge.score_live(model)
            return False

    folder = run_dir / "exhaustive" / f"{trial['number']:03d}"
    record = json.loads((run_dir / "search" / "trials" / f"{trial['number']:03d}" / "trial.json").read_text())
    conversations = [e.messages for e in run_split(run_dir, "train").examples]
    final = Final()
    result = train_variant(base, Variant.from_json(record["variant"]), conversations, folder, rungs=final)
    return final.score.rate, final.score.value, result.steps, folder


def confirm_folders(base, folders: dict[str, Path], items, vocab) -> dict:
    from evals.adapter_set import load_adapter_set, release
    from evals.search import Judge, wilson

    judge = Judge(base, items, vocab)
    adapters = load_adapter_set(base, folders)
    try:
        passed = {name: judge.passed(judge.answers(adapters, adapters.ids[name])) for name in folders}
    finally:
        release(adapters)
    return {name: {"score": round(sum(p) / len(p), 4), "ci": list(wilson(sum(p), len(p)))} for name, p in passed.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--products", type=int, default=16)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--keep", help="keep the run folder here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from adapters.base.loading import load_model
    from adapters.shape.search_space import SearchSpace
    from adapters.train.dataspec import DataSpec, start_run
    from adapters.train.runs import run_split
    from evals.proof import data_vocabulary
    from adapters.cache import read_json
    from evals.search import Item, Judge, SearchSettings, item_vocabulary, parse_budget, run_search, search_dir

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="search-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    run_dir = folder / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    data, evalset = write_data(folder, args.seed, args.products)
    base = load_model(None, "auto")
    start_run(run_dir, DataSpec(str(data)), [], model=None, precision="auto")
    settings = SearchSettings(str(run_dir), SearchSpace.default().to_json(), budget_seconds=parse_budget(args.budget),
                              evalset=str(evalset), seed=args.seed)
    started = time.perf_counter()
    report = run_search(settings, base)
    search_seconds = time.perf_counter() - started
    trials, best = report["trials"], report["best"]
    out = {"budget_s": settings.budget_seconds, "seconds_with_confirmation": round(search_seconds, 1),
           "trials": len(trials), "counts": report["counts"], "best": best, "importances": report["importances"]}

    # 2. the first N configurations, each trained fully
    saved = read_json(search_dir(run_dir) / "settings.json")
    search_items = [Item.from_json(i) for i in saved["search_items"]]
    confirm_items = [Item.from_json(i) for i in saved["confirm_items"]]
    vocab = data_vocabulary([], run_split(run_dir, "train")) | item_vocabulary(search_items + confirm_items)
    judge = Judge(base, search_items, vocab)
    first = [t for t in trials if t["state"] in ("complete", "pruned")][:N_EXHAUSTIVE]
    full, search_steps, full_steps = {}, 0, 0
    for t in first:
        search_steps += t["steps"] or 0
        if t["state"] == "complete":
            full[t["number"]] = (t["score"], t["value"], t["steps"], search_dir(run_dir) / "trials" / f"{t['number']:03d}")
        else:
            full[t["number"]] = train_fully(run_dir, base, t, judge)
        full_steps += full[t["number"]][2]
    exhaustive = max(full, key=lambda n: (full[n][1], -n))
    searched = [t for t in first if t["state"] == "complete"]
    search_pick = max(searched, key=lambda t: (t["value"], -t["number"]))["number"]
    confirmed = confirm_folders(base, {"exhaustive": full[exhaustive][3], "search": full[search_pick][3]},
                                confirm_items, vocab)
    low, high = confirmed["exhaustive"]["ci"]
    same = search_pick == exhaustive or low <= confirmed["search"]["score"] <= high
    out["exhaustive"] = {
        "n": len(first), "winner": exhaustive, "search_winner": search_pick, "same_or_within_interval": same,
        "confirmed": confirmed, "search_steps": search_steps, "exhaustive_steps": full_steps,
        "compute_share": round(search_steps / full_steps, 3), "target_share": COMPUTE_TARGET,
        "scores": {n: round(v[0], 4) for n, v in full.items()},
    }
    ok = (len(trials) >= 8 and report["counts"].get("pruned", 0) >= 1 and best is not None and len(first) >= N_EXHAUSTIVE
          and same and search_steps <= COMPUTE_TARGET * full_steps)
    out["meets_targets"] = ok
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"search: {len(trials)} trials in {settings.budget_seconds:.0f} s budget, {report['counts']}")
        if best:
            print(f"winner trial {best['number']}: search {best['search_score']:.0%}, confirmed "
                  f"{best['confirmed_score']:.0%} {best['confirmed_ci']} vs default {best['default_confirmed_score']:.0%} "
                  f"{best['default_confirmed_ci']}, p = {best['p_value']:.3g}")
        e = out["exhaustive"]
        print(f"exhaustive over {e['n']}: winner {e['winner']}, search's {e['search_winner']}, same or within "
              f"interval: {e['same_or_within_interval']}; compute {e['search_steps']} / {e['exhaustive_steps']} steps "
              f"= {e['compute_share']:.0%} (target <= {COMPUTE_TARGET:.0%})")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
