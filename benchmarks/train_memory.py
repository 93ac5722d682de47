"""Peak memory of training at batch 8 x 512 tokens on the embedded SmolLM2-135M, as a user runs it.

    python benchmarks/train_memory.py [--steps 3] [--precision auto] [--cases cli,web,default] [--json]

The rows fill 512 tokens (Dolly answers joined until the cut, so nearly every position is
labelled: the worst case for memory). Peak RSS is sampled every 20 ms over the whole process tree.
Cases:
- `cli`: `loraeq train --data ROWS --batch-size 8 --max-length 512 --max-steps N --out R` from a
  shell's environment (it restarts itself once with the fast malloc): loading, the held-out split
  and its loss curve, training, saving, and the questions each variant answers after training;
- `web`: what the Train tab does: the run folder by `start_run`, then the app's job line runs the
  command the tab submits in its worker process (`playground/jobs.py`), whose tree is measured;
- `default`: `train_variant` alone in a process that loaded the model from the cached safetensors
  copy (RSS after loading reported), with LoRA EQ's loss over labelled positions
  (adapters/train/label_loss.py) and each layer's activations recomputed for a batch over the
  activation budget (limits.py);
- `no-recompute`: as `default`, the budget lifted (every activation kept);
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
    """The peak resident memory of a process and everything it started (this process by default)."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def tree_rss(self) -> int:
        import psutil

        total = 0
        try:
            for proc in (self.process, *self.process.children(recursive=True)):
                total += proc.memory_info().rss
        except psutil.Error:  # a process ended while being read: the next sample counts it no more
            pass
        return total

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.tree_rss())
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


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


def _rows_file(folder: Path, steps: int) -> Path:
    path = folder / "long_rows.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in long_rows(BATCH * steps * 2)))
    return path


def _figures(run_dir: Path, case: str, peak: int, seconds: float) -> dict:
    from adapters.train.runfolder import RunFolder

    (variant,) = RunFolder.open(run_dir).variants
    m = variant.metrics()
    steps = m.get("steps") or 0
    return {"case": case, "precision": RunFolder.open(run_dir).precision, "loaded_gb": None,
            "peak_gb": peak / 1e9, "s_per_step": m.get("seconds", seconds) / max(steps, 1),
            "tokens_per_s": m.get("tokens_per_s") or 0.0, "steps": steps, "whole_command_s": round(seconds, 1)}


def hyper_flag(name: str) -> str:
    """The `loraeq train` flag of a `Hyper` field, as the CLI makes it from the declaration."""
    from dataclasses import fields

    from adapters.shape.variants import Hyper

    return next(f.metadata["param"].option(f.name) for f in fields(Hyper) if f.name == name)


def user_path(case: str, steps: int, precision: str) -> dict:
    """`loraeq train` from a shell (`cli`) or through the web app's job line (`web`), its whole
    process tree measured."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows, out = _rows_file(folder, steps), folder / "run"
        flags = {"max_steps": steps, "batch_size": BATCH, "max_length": MAX_LENGTH, "learning_rate": 2e-4, "rank": 16}
        started = time.perf_counter()
        if case == "cli":
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            argv = [sys.executable, "-m", "loraeq", "train", "--data", str(rows), "--out", str(out),
                    "--precision", precision, "--json", "--preset", "uniform"]
            argv += [a for k, v in flags.items() for a in (hyper_flag(k), str(v))]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                    cwd=ROOT)
            with PeakRss(proc.pid) as peak:
                _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"loraeq train failed: {err[-2000:]}")
        else:
            from adapters.shape.variants import Hyper, Variant
            from adapters.train.dataspec import DataSpec, start_run
            from playground.jobs import ACTIVE, JobQueue

            start_run(out, DataSpec(path=str(rows)), [Variant("uniform", hyper=Hyper(**flags))], model=None,
                      precision=precision)
            job = JobQueue(workers_dir=folder / "workers").submit(str(out), ["train", "--resume", str(out), "--json"],
                                                                  owner="bench", kind="train")
            while job.process is None and job.state in ACTIVE:
                time.sleep(0.005)
            with PeakRss(job.process.pid) as peak:
                while job.state in ACTIVE:
                    time.sleep(0.1)
            if job.state != "finished":
                raise RuntimeError(f"the web app's worker failed: {job.stderr_tail}")
        return _figures(out, case, peak.peak, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--cases", default="cli,web,default",
                   help="of cli, web, default, no-recompute, before (comma-separated)")
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
            loaded = f"loaded {r['loaded_gb']:.2f} GB, " if r["loaded_gb"] is not None else "whole process tree, "
            print(f"{r['case']:>12} ({r['precision']}): {loaded}peak {r['peak_gb']:.2f} GB "
                  f"(limit {LIMIT_GB:g}), {r['s_per_step']:.1f} s/step, {r['tokens_per_s']:.0f} tok/s")
    return summary


def measure(cases: list[str], steps: int = 2, precision: str = "auto") -> dict:
    """Each case in its own process tree, `cli` and `web` as a user starts them, the others with the
    fast malloc preloaded."""
    from adapters.runtime import allocator_library

    env = {**os.environ, "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "1099511627776"}
    if allocator_library():
        env["LD_PRELOAD"] = allocator_library()
    results = []
    for case in cases:
        if case in ("cli", "web"):
            results.append(user_path(case, steps, precision))
            continue
        out = subprocess.run([sys.executable, __file__, "--worker", case, "--steps", str(steps),
                              "--precision", precision], capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"batch": BATCH, "max_length": MAX_LENGTH, "limit_gb": LIMIT_GB, "cases": results}

if __name__ == "__main__":
    main()
