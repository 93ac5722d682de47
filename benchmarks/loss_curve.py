"""The training loss curve of LoRA EQ's trainer against the same training through PEFT's own layers.

    python benchmarks/loss_curve.py [--steps 18] [--json]

`adapters/train/lora_train.py` computes LoRA's update as one function, its dropout masks from another
generator, and the label-only loss now runs under the Trainer's bf16 autocast: the curve must stay
within the noise of the one training computed before. Three runs on the Dolly sample (batch 8, up
to 256 tokens, rank 8, dropout 0.05, learning rate 2e-4), each in its own process, the same LoRA
initialisation and the same batches in the same order (18 steps, within the first epoch of the 160
rows: later batches are drawn from torch's generator, which the two kinds of masks leave in
different states, so they differ between the runs):

- `before`: PEFT's LoRA layers, the label-only loss without autocast (LoRA's products in fp32);
- `now`: as `loraeq train` trains today;
- `before-reseeded`: as `before` with another seed for the dropout masks only: the noise.

Reported: each curve, and the mean |now - before| and |before-reseeded - before| over the steps.
Passes (exit 0) when the first is at most 1.5 times the second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RUNS = ("before", "now", "before-reseeded")


def run(mode: str, steps: int) -> list[float]:
    import os

    import torch
    from train_speed import train_as_loraeq
    from transformers import TrainerCallback

    from adapters.base.loading import load_model
    from adapters.shape.variants import Hyper
    from adapters.train.label_loss import label_only_loss

    base = load_model(None, "auto")
    if mode != "now":  # PEFT's own LoRA layers (this worker process only)
        os.environ["LORAEQ_FAST_PATHS"] = "-lora_train"

    def before(trainer_class):
        class Before(trainer_class):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                self.loss_is_scaled_for_ga = num_items_in_batch is not None
                return label_only_loss(model, inputs, num_items_in_batch)  # no autocast, as before

        return Before

    losses: list[float] = []

    class Record(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if mode == "before-reseeded" and state.global_step == 0:
                torch.manual_seed(1)  # after the epoch's order is drawn: only the dropout masks change

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    train_as_loraeq(base, Hyper(rank=8, alpha=16, dropout=0.05, max_steps=steps, batch_size=8, max_length=256,
                                learning_rate=2e-4, save_steps=10_000),
                    callbacks=[Record()], wrap_trainer=None if mode == "now" else before)
    return losses


def mean_gap(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        print("RESULT " + json.dumps(run(args.worker, args.steps)), flush=True)
        return 0
    from adapters.runtime import allocator_env

    curves = {}
    for mode in RUNS:
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--steps", str(args.steps)],
                              capture_output=True, text=True, env=allocator_env(), timeout=3600)
        found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not found:
            raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
        curves[mode] = json.loads(found[0])
    change = mean_gap(curves["now"], curves["before"])
    noise = mean_gap(curves["before-reseeded"], curves["before"])
    result = {"mean_abs_change": round(change, 4), "mean_abs_noise": round(noise, 4),
              "within_noise": change <= 1.5 * noise, "curves": {k: [round(x, 4) for x in v] for k, v in curves.items()}}
    if args.json:
        print(json.dumps(result))
    else:
        for mode, curve in result["curves"].items():
            print(f"{mode:16s} " + " ".join(f"{x:.3f}" for x in curve))
        print(f"mean |now - before| {change:.4f}   mean |reseeded - before| (noise) {noise:.4f}   "
              f"within noise: {result['within_noise']}")
    return 0 if result["within_noise"] else 1


if __name__ == "__main__":
    sys.exit(main())
