"""Peak memory of training: batch 8 x 512 tokens on the embedded SmolLM2-135M, default settings.

    python benchmarks/train_memory.py [--steps 3] [--precision auto] [--json]

Each case runs in its own process (peak RSS is per process): the model is loaded (from the cached
safetensors copy, so GGUF dequantization does not count), then `train_variant` runs --steps steps
at batch 8 on rows that fill 512 tokens (Dolly answers joined until the cut, so nearly every
position is labelled: the worst case for memory). Reported per case: RSS after loading, peak RSS
during training (sampled every 20 ms), seconds per step. Cases:
- `default`: as LoRA EQ trains (the loss over labelled positions, adapters/train/label_loss.py; each
  layer's activations recomputed for a batch over the activation budget, limits.py);
- `no-recompute`: the labelled-positions loss, the budget lifted (every activation kept);
- `before`: the model's own loss over every position's logits, every activation kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "datasets" / "dolly-15k-sample.jsonl"
BATCH, MAX_LENGTH = 8, 512
LIMIT_GB = 4.0


def long_rows(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    texts = [r["response"] for r in rows]
    out = []
    for i in range(n):
        answer = " ".join(texts[(i + k) % len(texts)] for k in range(12))
        out.append([{"role": "user", "content": rows[i % len(rows)]["instruction"]},
                    {"role": "assistant", "content": answer}])
    return out


class PeakRss:
    def __init__(self) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def worker(case: str, steps: int, precision: str) -> dict:
    import psutil

    import adapters.train.label_loss as label_loss
    from adapters.base.loading import load_model
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.training import train_variant

    if case in ("no-recompute", "before"):
        os.environ["LORAEQ_ACTIVATION_BUDGET_GB"] = "1e5"
    if case == "before":
        label_loss.label_only_reason = lambda model: "measuring the model's own loss"
    base = load_model(None, precision)
    loaded = psutil.Process().memory_info().rss
    variant = Variant("mem", "uniform", Hyper(max_steps=steps, batch_size=BATCH, max_length=MAX_LENGTH,
                                              learning_rate=2e-4, rank=16))
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as peak:
        started = time.perf_counter()
        result = train_variant(base, variant, long_rows(BATCH * steps), Path(tmp) / "v")
        seconds = time.perf_counter() - started
    return {"case": case, "precision": base.precision, "loaded_gb": loaded / 1e9, "peak_gb": peak.peak / 1e9,
            "s_per_step": seconds / steps, "tokens_per_s": result.tokens_per_s, "steps": result.steps}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--cases", default="default,no-recompute,before")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.precision)))
        return {}
    summary = measure(args.cases.split(","), args.steps, args.precision)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in summary["cases"]:
            print(f"{r['case']:>12} ({r['precision']}): loaded {r['loaded_gb']:.2f} GB, peak {r['peak_gb']:.2f} GB "
                  f"(limit {LIMIT_GB:g}), {r['s_per_step']:.1f} s/step, {r['tokens_per_s']:.0f} tok/s")
    return summary


def measure(cases: list[str], steps: int = 2, precision: str = "auto") -> dict:
    """Each case in its own process (peak RSS is per process), with the fast malloc preloaded."""
    from adapters.runtime import allocator_library

    env = {**os.environ, "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "1099511627776"}
    if allocator_library():
        env["LD_PRELOAD"] = allocator_library()
    results = []
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--worker", case, "--steps", str(steps),
                              "--precision", precision], capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"batch": BATCH, "max_length": MAX_LENGTH, "limit_gb": LIMIT_GB, "cases": results}

if __name__ == "__main__":
    main()
