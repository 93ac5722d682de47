"""Load and analysis speed of the embedded model: first GGUF load vs cached load, analysis vs cached.

    python benchmarks/load_speed.py [--precision fp32] [--json]

Runs in a fresh temporary cache so the first load really dequantizes the GGUF. Prints the
timings and their ratios (the targets: cached load >= 5x faster, analysis <= 30 s, cached
analysis near-instant), plus the NF4 footprint relative to fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(precision: str) -> dict:
    from adapters.base.analysis import analyze, analyze_loaded
    from adapters.base.loading import load_model

    os.environ["LORAEQ_CACHE"] = tempfile.mkdtemp(prefix="loraeq-bench-")
    t = time.perf_counter()
    first = load_model(None, precision)
    first_load = time.perf_counter() - t
    t = time.perf_counter()
    second = load_model(None, precision)
    cached_load = time.perf_counter() - t
    t = time.perf_counter()
    analyze_loaded(second)
    analysis = time.perf_counter() - t
    t = time.perf_counter()
    again = analyze(None, precision)  # the CLI path: cache hit, no weights loaded
    cached_analysis = time.perf_counter() - t
    assert again.cached
    nf4 = load_model(None, "nf4")
    fp32_bytes = first.memory_bytes if precision == "fp32" else load_model(None, "fp32").memory_bytes
    return {
        "precision": precision,
        "first_load_s": round(first_load, 2),
        "cached_load_s": round(cached_load, 2),
        "load_speedup": round(first_load / cached_load, 1),
        "analysis_s": round(analysis, 2),
        "cached_analysis_s": round(cached_analysis, 3),
        "nf4_memory_ratio": round(nf4.memory_bytes / fp32_bytes, 3),
        "threads": __import__("torch").get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "nf4"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = measure(args.precision)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:20s} {v}")


if __name__ == "__main__":
    main()
