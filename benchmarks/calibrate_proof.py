"""Calibrate the defaults on data the tests never see: train with no flags, prove, and tabulate.

For each dataset (invented fact sets from `adapters.data.synthetic` with a seed and wording set
of your choosing, and the shipped samples), one variant is trained with the defaults (the auto
schedule, the auto held-out size) on the embedded SmolLM2-135M, then the proof runs. A row of
the table: rows, held-out rows, steps, training seconds, held-out similarity gain, the share of
held-out answers that contain the fact's answer (`answer_key`, for fact sets) for the variant and
the base, the share matching the reference (`evals.matching`), and the verdict.

    .venv/bin/python benchmarks/calibrate_proof.py --facts 11:a --facts 12:a --sample dolly-15k-sample.jsonl
    .venv/bin/python benchmarks/calibrate_proof.py --facts 11:a --epochs 4 --lr 1e-3   # a manual schedule
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fact_file(folder: Path, seed: int, wording: str, facts: int, ways: int) -> Path:
    from adapters.data.synthetic import invented_facts

    path = folder / f"facts-{seed}{wording}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in invented_facts(seed, wording, facts, ways)))
    return path


def exact_rate(answers: list[str], keys: list[str]) -> float:
    return sum(k.lower() in a.lower() for a, k in zip(answers, keys)) / max(1, len(keys))


def measure(path: Path, base, args, workdir: Path) -> dict:
    from adapters.dataspec import DataSpec, start_run
    from adapters.runs import run_queue, run_split
    from adapters.variants import Hyper, Variant
    from evals.proof import evaluate_run

    hyper = Hyper(epochs=args.epochs, learning_rate=args.lr, rank=args.rank)
    run = workdir / f"run-{path.stem}"
    spec = DataSpec(str(path))
    start_run(run, spec, [Variant("default", "uniform", hyper)], model=None, precision=base.precision)
    started = time.perf_counter()
    run_queue(run, base=base)
    seconds = time.perf_counter() - started
    report = evaluate_run(run, base=base).to_json()
    v = report["variants"][0]
    held = run_split(run, "heldout").examples
    keys = [e.meta.get("answer_key") for e in held]
    row = {
        "data": path.name, "rows": sum(1 for _ in path.open()),
        "heldout": report["heldout_rows"], "steps": v["steps"], "train_s": round(seconds, 1),
        "schedule": json.loads((run / "default" / "variant.json").read_text())["schedule"],
        "sim_gain": round(v["similarity_diff"], 3), "sim_ci": [round(x, 3) for x in v["diff_ci"]],
        "sim_p": v["p_value"], "min_detectable": round(v["power"]["min_detectable_similarity"], 3),
        "match": round(v["matches"]["variant_rate"], 2), "match_base": round(v["matches"]["base_rate"], 2),
        "mcnemar_p": v["matches"]["p_value"], "verdict": v["verdict"],
    }
    if all(keys):
        row["exact"] = round(exact_rate(v["per_example"]["answers"], keys), 2)
        row["exact_base"] = round(exact_rate([r["base_answer"] for r in report["rows"]], keys), 2)
        agree = [(k.lower() in a.lower()) == m for a, k, m in zip(v["per_example"]["answers"], keys,
                                                                   v["per_example"]["matched"])]
        row["match_agrees_with_exact"] = round(sum(agree) / len(agree), 3)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", action="append", default=[], metavar="SEED:WORDING", help="an invented fact set")
    p.add_argument("--sample", action="append", default=[], help="a file under datasets/")
    p.add_argument("--n-facts", type=int, default=35)
    p.add_argument("--ways", type=int, default=4)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)

    from adapters.loading import load_model

    base = load_model(None, args.precision)
    workdir = Path(tempfile.mkdtemp(prefix="loraeq-calibrate-"))
    paths = [fact_file(workdir, int(s), w, args.n_facts, args.ways) for s, w in (f.split(":") for f in args.facts)]
    paths += [ROOT / "datasets" / name for name in args.sample]
    for path in paths:
        print(json.dumps(measure(path, base, args, workdir)), flush=True)


if __name__ == "__main__":
    main()
