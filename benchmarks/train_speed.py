"""Real-token training throughput: LoRA EQ's trainer vs plain TRL `SFTTrainer` with its defaults.

    python benchmarks/train_speed.py [--steps 8] [--rounds 2] [--json]

Both train the same LoRA config (rank 8, alpha 16, dropout 0.05, every attention and MLP
projection) on the same model (the embedded SmolLM2-135M-Instruct) and the same data (the Dolly
sample in datasets/, cut at 256 tokens), batch 8, for the same number of steps. Each side runs in
its own process, the way a user would run it:

- ours: the trainer of `adapters.train.training.train_variant` (loss only at labelled positions, under
  the Trainer's autocast; LoRA layers through `adapters/train/lora_train.py`; the activations of as few
  layers recomputed as the budget needs: none for 8 x 256 with the default 2.5 GB), started through
  LoRA EQ's own launcher environment (fast malloc preloaded, precision `auto`, length-grouped batches);
- TRL: `SFTTrainer(model, train_dataset, peft_config, args=SFTConfig(...))` with SFTConfig's
  defaults, the model loaded with a plain `from_pretrained`, in the default environment.

Only real (non-padding) tokens count: a forward pre-hook sums the attention mask of every batch.
The first two steps are warm-up and not timed. Rounds alternate ours/TRL so that a busy machine
slows both alike; the reported ratio is the median over rounds. Also reported: tokens/s against
this box's compute limit for LoRA on 135M parameters (~740 tok/s bf16, ~340 fp32, measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "datasets" / "dolly-15k-sample.jsonl"
MAX_LENGTH = 256
BATCH = 8
WARMUP = 2
COMPUTE_LIMIT = {"bf16": 740.0, "fp32": 340.0}


class Meter:
    """Counts real tokens per optimizer step and times steps after the warm-up."""

    def __init__(self) -> None:
        self.tokens = 0
        self.timed_tokens = 0
        self.steps = 0
        self.started: float | None = None
        self.pending = 0

    def hook(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None:
            self.pending += int(mask.sum())

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class StepTimer(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                meter.steps += 1
                if meter.steps == WARMUP:
                    meter.started = time.perf_counter()
                elif meter.steps > WARMUP:
                    meter.timed_tokens += meter.pending
                meter.tokens += meter.pending
                meter.pending = 0

        return StepTimer()

    def result(self) -> dict:
        seconds = time.perf_counter() - self.started
        return {"tokens": self.timed_tokens, "seconds": round(seconds, 2),
                "tokens_per_s": round(self.timed_tokens / seconds, 1), "steps": self.steps - WARMUP}


def conversations() -> list[list[dict]]:
    from adapters.data import load_dataset

    return [e.messages for e in load_dataset(DATA).examples]


def run_ours(steps: int) -> dict:
    from transformers import PrinterCallback

    from adapters.base.loading import load_model
    from adapters.runtime import active_allocator
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.training import (
        EncodedDataset,
        PadCollator,
        TokenCounter,
        _trainer_class,
        attach_lora,
        encode_all,
        training_arguments,
    )

    base = load_model(None, "auto")
    variant = Variant("bench", "uniform", Hyper(rank=8, alpha=16, dropout=0.05, max_steps=steps + WARMUP,
                                                 batch_size=BATCH, max_length=MAX_LENGTH, learning_rate=2e-4,
                                                 save_steps=10_000))
    examples = encode_all(base.tokenizer, conversations(), MAX_LENGTH)
    model = attach_lora(base, variant)
    meter = Meter()
    # On the decoder: the label-only loss calls it directly, not the model's own forward.
    model.get_base_model().get_decoder().register_forward_pre_hook(meter.hook, with_kwargs=True)
    out = Path(tempfile.mkdtemp(prefix="loraeq-bench-ours-"))
    args = training_arguments(variant, out, base, len(examples))
    args.save_strategy = "no"
    # The trainer `loraeq train` runs: the loss at labelled positions only, activations by the budget.
    trainer = _trainer_class(out / "train_log.jsonl")(
        model=model, args=args, train_dataset=EncodedDataset(examples),
        data_collator=PadCollator(base.tokenizer.pad_token_id, TokenCounter()), callbacks=[meter.callback()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return {**meter.result(), "precision": base.precision, "allocator": active_allocator()}


def run_trl(steps: int) -> dict:
    """What a user writes from TRL's quickstart: defaults everywhere but the shared settings."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from adapters.base.loading import load_model  # only to find the same cached model folder
    from datasets import Dataset

    folder = load_model(None, "fp32").folder
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = Dataset.from_list([{"messages": m} for m in conversations()])
    peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    args = SFTConfig(output_dir="/tmp/loraeq-bench-trl", max_steps=steps + WARMUP, per_device_train_batch_size=BATCH,
                     max_length=MAX_LENGTH, learning_rate=2e-4, report_to="none", save_strategy="no",
                     disable_tqdm=True,
                     use_cpu=True)  # TRL's bf16 default refuses to start on a CPU box without it
    meter = Meter()
    trainer = SFTTrainer(model=model, train_dataset=data, peft_config=peft_config, args=args,
                         processing_class=tokenizer, callbacks=[meter.callback()])
    trainer.model.register_forward_pre_hook(meter.hook, with_kwargs=True)
    trainer.train()
    return {**meter.result(), "precision": str(model.dtype).replace("torch.", ""),
            "gradient_checkpointing": args.gradient_checkpointing, "bf16_autocast": args.bf16, "allocator": "glibc"}


def worker(mode: str, steps: int) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    out = run_ours(steps) if mode == "ours" else run_trl(steps)
    print("RESULT " + json.dumps(out), flush=True)


def launch(mode: str, steps: int) -> dict:
    from adapters.runtime import allocator_env

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if mode == "ours":
        env = allocator_env(env)  # what `loraeq train` does for itself
    proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--steps", str(steps)],
                          capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps per run (after 2 warm-up steps)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS run at batch 8 x 512")
    p.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    rounds = []
    for _ in range(args.rounds):
        ours, trl = launch("ours", args.steps), launch("trl", args.steps)
        rounds.append({"ours": ours, "trl": trl, "speedup": round(ours["tokens_per_s"] / trl["tokens_per_s"], 2)})
    ours_best = max(r["ours"]["tokens_per_s"] for r in rounds)
    result = {
        "speedup": statistics.median(r["speedup"] for r in rounds),
        "ours_tokens_per_s": statistics.median(r["ours"]["tokens_per_s"] for r in rounds),
        "trl_tokens_per_s": statistics.median(r["trl"]["tokens_per_s"] for r in rounds),
        "ours_vs_compute_limit": round(ours_best / COMPUTE_LIMIT.get(rounds[0]["ours"]["precision"], 740.0), 2),
        "load_average": os.getloadavg()[0],
        "rounds": rounds,
    }
    if not args.no_memory:  # peak RSS of our training at batch 8 x 512 tokens (train_memory.py, its own process)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from train_memory import LIMIT_GB, measure

        peak = measure(["default"])["cases"][0]["peak_gb"]
        result.update(peak_rss_gb_8x512=round(peak, 2), peak_rss_limit_gb=LIMIT_GB)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "rounds":
                print(f"{k:24s} {v}")
        for i, r in enumerate(rounds):
            print(f"round {i}: ours {r['ours']}  trl {r['trl']}")


if __name__ == "__main__":
    main()
