"""Eval-set speed: many prompts x (base + 4 variants) as one eval-set job vs `compare` once per prompt.

    python benchmarks/evalset_speed.py [--prompts 100] [--tokens 64] [--batch-prompts 16] [--precision fp32] [--json]

On the embedded SmolLM2-135M in --precision with four adapters shaped by equalizer presets
(compare_speed.py's: random non-zero B factors), greedy, exactly --tokens new tokens per answer at
most, the Dolly sample's instructions as prompts (each with its reference answer and an
`icontains` check):
- job: `run_evalset` (evals/evalrun.py) as `loraeq evalset` runs it: --batch-prompts prompts x 5
  columns per decode, then one embedding call for every similarity, checks, cells and summary written;
- per prompt: `evals.scores.compare` once per prompt, as `loraeq compare` runs it (5 columns in one
  decode, then its answers embedded and scored).
The model is loaded and warmed up (one short answer; the embedder too) before either clock starts. `speedup` is the time
per prompt ratio; `identical` says every answer's text is the same both ways.
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
sys.path.insert(0, str(ROOT / "benchmarks"))


def dolly_cases(n: int):
    from evals.checks import parse_check
    from evals.evalset import EvalCase

    rows = [json.loads(line) for line in (ROOT / "datasets" / "dolly-15k-sample.jsonl").read_text().splitlines()]
    cases = []
    for i, row in enumerate(rows[:n]):
        user, answer = row["instruction"], row["response"]
        check = parse_check({"type": "icontains", "value": answer.split()[0]})
        cases.append(EvalCase(f"row {i + 1}", ({"role": "user", "content": user},), None, answer, (check,)))
    if len(cases) < n:
        raise SystemExit(f"the Dolly sample has only {len(cases)} rows")
    return cases


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--batch-prompts", type=int, default=16)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from compare_speed import random_adapters

    from adapters.base.loading import load_model
    from adapters.infer.decoding import Sampling
    from adapters.infer.engine import CompareEngine
    from evals.evalrun import run_evalset
    from evals.evalset import EvalSet
    from evals.scores import compare
    from evals.similarity import embed

    sampling = Sampling(max_new_tokens=args.tokens)
    cases = dolly_cases(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        folders = random_adapters(load_model(None, args.precision), Path(tmp) / "adapters")
        engine = CompareEngine(load_model(None, args.precision), folders)
        embed(["warm up the embedder"])
        engine.answer("Warm up.", sampling=Sampling(max_new_tokens=2))
        started = time.perf_counter()
        summary = run_evalset(engine, EvalSet("bench", "dolly", cases), Path(tmp) / "job", sampling=sampling,
                              batch_prompts=args.batch_prompts)
        job_s = time.perf_counter() - started
        job_texts = [c["text"] for c in _cells(Path(tmp) / "job")]
        started = time.perf_counter()
        loop_texts = []
        for case in cases:
            result = compare(engine, case.prompt, reference=case.reference, sampling=sampling)
            loop_texts += [c.text for c in result.columns]
        loop_s = time.perf_counter() - started
        engine.close()
    result = {
        "prompts": args.prompts, "columns": 5, "tokens": args.tokens, "batch_prompts": args.batch_prompts,
        "precision": args.precision, "cells": summary["cells"],
        "job_s": round(job_s, 2), "per_prompt_compare_s": round(loop_s, 2),
        "speedup": round(loop_s / job_s, 2), "identical": job_texts == loop_texts,
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


def _cells(folder: Path) -> list[dict]:
    from evals.matrix import EvalFolder

    return EvalFolder(folder).cells()


if __name__ == "__main__":
    main()
