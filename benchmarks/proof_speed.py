"""Proof speed: `evaluate_run` for the base + 4 variants on 100 held-out rows of the real model.

    python benchmarks/proof_speed.py [--rows 100] [--precision auto] [--keep DIR] [--json]

Setup (not timed): the fictional-facts sample split 70/30 by `fact_id` (about 100 held-out
paraphrases), and four variants (uniform, attention, mlp and a rank-16 uniform) trained a few
steps each so that they really differ from the base and from each other. Timed: the user's
command, `loraeq eval RUN --limit 100 --json`, in a fresh process (fast-malloc re-exec, base and
embedder loading included): held-out and train losses for 5 models, 5 x 100 greedy answers,
MiniLM similarity, statistics and the report files. Three times:
- `uncached`: with `--no-base-cache`, every model computed;
- then once with the base cache, which fills it if an earlier proof of these rows did not;
- `cached`: again with the base cache, which now supplies the base's answers and train losses.
`identical` says whether the cached report's numbers (everything but its timings) are those of
the uncached one. Targets: <= 90 s for a proof that has the base cached, <= 300 s for one that
has not, on 2 CPU cores. The load average before and after is printed, because a shared machine
slows every figure here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "datasets" / "fictional-facts.jsonl"
TARGET_S = 90.0  # with the base cached
UNCACHED_TARGET_S = 300.0


def make_run(run_dir: Path, precision: str) -> None:
    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info, run_queue

    dataset = load_dataset(DATA)
    split = split_heldout(dataset, fraction=0.3, seed=0, group="fact_id")
    hyper = dict(max_steps=3, learning_rate=2e-3, batch_size=4)
    variants = [
        Variant("uniform", "uniform", Hyper(**hyper)),
        Variant("attention", "attention", Hyper(**hyper)),
        Variant("mlp", "mlp", Hyper(**hyper)),
        Variant("uniform-r16", "uniform", Hyper(**hyper, rank=16, alpha=32.0)),
    ]
    create_run(run_dir, variants=variants, split=split, data_info=data_info(dataset, split, str(DATA)),
               model=None, precision=precision)
    results = run_queue(run_dir)
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        raise SystemExit(f"setup failed: {failed}")


def timed_eval(run_dir: Path, rows: int, *extra: str) -> tuple[float, dict]:
    """Seconds of one `loraeq eval` in its own process, and its JSON."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "loraeq", "eval", str(run_dir), "--limit", str(rows), "--json",
                           *extra], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"loraeq eval failed: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def numbers(report: dict) -> str:
    """The report without its timings and cache notes, for comparing two proofs."""
    return json.dumps({k: v for k, v in report.items() if k not in ("seconds", "base_cached")}, sort_keys=True)


def measure(rows: int, precision: str, keep: Path | None) -> dict:
    folder = keep or Path(tempfile.mkdtemp(prefix="loraeq-proof-bench-"))
    run_dir = folder / "run"
    if not (run_dir / "run.json").exists():
        make_run(run_dir, precision)
    load_before = os.getloadavg()[0]
    uncached_s, uncached = timed_eval(run_dir, rows, "--no-base-cache")
    timed_eval(run_dir, rows)  # fills the base cache (or reads it, if an earlier proof filled it)
    cached_s, report = timed_eval(run_dir, rows)
    out = {
        "rows": report["heldout_rows"],
        "models": 1 + len(report["variants"]),
        "precision": report["precision"],
        "seconds": round(cached_s, 1),
        "uncached_seconds": round(uncached_s, 1),
        "target_s": TARGET_S,
        "within_target": cached_s <= TARGET_S and uncached_s <= UNCACHED_TARGET_S,
        "base_cached": report["base_cached"],
        "identical": numbers(report) == numbers(uncached),
        "stages_s": report["seconds"],
        "uncached_stages_s": uncached["seconds"],
        "cpu_count": os.cpu_count(),
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "verdicts": {v["name"]: v["verdict"] for v in report["variants"]},
    }
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100, help="held-out rows to evaluate (default 100)")
    p.add_argument("--precision", default="auto", help="base precision of the run (default auto)")
    p.add_argument("--keep", type=Path, default=None, help="keep (or reuse) the trained run in this folder")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = measure(args.rows, args.precision, args.keep)
    if args.json:
        print(json.dumps(result))
        return
    print(f"proof of {result['models']} models on {result['rows']} held-out rows ({result['precision']}): "
          f"{result['seconds']:.1f} s with the base cached ({', '.join(result['base_cached']) or 'nothing'}; target <= "
          f"{TARGET_S:.0f} s), {result['uncached_seconds']:.1f} s without (target <= {UNCACHED_TARGET_S:.0f} s): "
          f"{'met' if result['within_target'] else 'MISSED'}; same numbers: {result['identical']}")
    print("stages, cached: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["stages_s"].items()))
    print("stages, uncached: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["uncached_stages_s"].items()))
    print(f"load average {result['load_avg_before']} before, {result['load_avg_after']} after, "
          f"on {result['cpu_count']} CPUs")


if __name__ == "__main__":
    main()
