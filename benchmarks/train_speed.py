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
slows both alike; the reported ratio is the median over rounds.

Also measured in the same run, on the same machine:
- the compute limit: the tokens/s at which this box multiplies a token through the decoder's own
  projection matrices in the training's precision, forward and backward (the input's gradient; the
  frozen base has no weight gradient). Attention scores, the output layer, the LoRA matrices and
  everything elementwise are left out, so no trainer can reach it: it is an upper bound;
- short rows, as chat fact sets are (invented catalog facts, about 60 tokens a row with the chat
  template), trained with no flags but --max-steps, the two ways a user does it: `loraeq train`
  from a shell, and the web app's job line (`start_run`, then `JobQueue.submit` of the command the
  Train tab submits, in the app's worker process and environment). Their figure is the one the
  user sees in metrics.json: trained tokens over the variant's whole time (held-out curve included).
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
SHORT_STEPS = 24


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


def train_as_loraeq(base, hyper, callbacks=(), on_model=None, wrap_trainer=None) -> None:
    """Train `hyper` on the Dolly sample with the trainer `loraeq train` runs (the loss at labelled
    positions only, activations by the budget), saving nothing. `on_model(model)` sees the LoRA model
    before training; `wrap_trainer(cls)` may subclass the trainer class."""
    from transformers import PrinterCallback

    from adapters.shape.variants import Variant
    from adapters.train.training import (
        EncodedDataset,
        PadCollator,
        TokenCounter,
        _trainer_class,
        attach_lora,
        encode_all,
        training_arguments,
    )

    variant = Variant("bench", "uniform", hyper)
    examples = encode_all(base.tokenizer, conversations(), hyper.max_length)
    model = attach_lora(base, variant)
    if on_model is not None:
        on_model(model)
    out = Path(tempfile.mkdtemp(prefix="loraeq-bench-"))
    args = training_arguments(variant, out, base, len(examples))
    args.save_strategy = "no"
    trainer_class = _trainer_class(out / "train_log.jsonl")
    if wrap_trainer is not None:
        trainer_class = wrap_trainer(trainer_class)
    trainer = trainer_class(model=model, args=args, train_dataset=EncodedDataset(examples),
                            data_collator=PadCollator(base.tokenizer.pad_token_id, TokenCounter()),
                            callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_ours(steps: int) -> dict:
    from adapters.base.loading import load_model
    from adapters.runtime import active_allocator
    from adapters.shape.variants import Hyper

    base = load_model(None, "auto")
    meter = Meter()

    def count_tokens(model):  # on the decoder: the label-only loss calls it, not the model's own forward
        model.get_base_model().get_decoder().register_forward_pre_hook(meter.hook, with_kwargs=True)

    train_as_loraeq(base, Hyper(rank=8, alpha=16, dropout=0.05, max_steps=steps + WARMUP, batch_size=BATCH,
                                max_length=MAX_LENGTH, learning_rate=2e-4, save_steps=10_000),
                    callbacks=[meter.callback()], on_model=count_tokens)
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


def compute_limit(precision: str = "auto", tokens: int = 2048, repeats: int = 3) -> dict:
    """Tokens/s of the decoder's projections alone, forward and input-gradient, in `precision`:
    every linear weight of every decoder layer, at its own shape, on `tokens` tokens at once."""
    import torch

    from adapters.base.loading import load_model

    base = load_model(None, precision)
    dtype = next(base.model.parameters()).dtype
    layers = base.model.get_decoder().layers
    shapes = [tuple(m.weight.shape) for layer in layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    weights = {shape: torch.randn(shape, dtype=dtype) for shape in set(shapes)}
    inputs = {n: torch.randn(tokens, n, dtype=dtype) for n in {s[1] for s in shapes} | {s[0] for s in shapes}}

    def once() -> float:
        start = time.perf_counter()
        for out_f, in_f in shapes:
            w = weights[(out_f, in_f)]
            inputs[in_f] @ w.T  # forward
            inputs[out_f] @ w  # the input's gradient
        return time.perf_counter() - start

    once()
    best = min(once() for _ in range(repeats))
    return {"tokens_per_s": round(tokens / best, 1), "precision": base.precision, "matrices": len(shapes)}


def short_data(folder: Path) -> tuple[Path, float]:
    """A fact set of short rows (invented catalog, fresh wording), and its mean tokens per row."""
    from adapters.base.loading import load_model
    from adapters.data import load_dataset
    from adapters.data.synthetic import invented_catalog
    from adapters.train.training import encode_all

    rows = invented_catalog(seed=4242, wording="b", entities=24, attributes=("price", "year", "code"), ways=2)
    path = folder / "short_facts.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows))
    tokenizer = load_model(None, "auto").tokenizer
    encoded = encode_all(tokenizer, [e.messages for e in load_dataset(path).examples], 512)
    return path, round(statistics.mean(len(e.input_ids) for e in encoded), 1)


def _variant_figures(run_dir: Path) -> dict:
    from adapters.train.runfolder import RunFolder

    (variant,) = RunFolder.open(run_dir).variants
    m = variant.metrics()
    return {"tokens_per_s": m.get("tokens_per_s"), "seconds": m.get("seconds"), "steps": m.get("steps")}


def short_cli(data: Path, folder: Path, steps: int) -> dict:
    """`loraeq train --data F --out R --max-steps N`, in a shell's environment (it preloads its malloc itself)."""
    out = folder / "cli-run"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-m", "loraeq", "train", "--data", str(data), "--out", str(out),
                           "--max-steps", str(steps), "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"loraeq train failed:\n{proc.stderr[-3000:]}")
    return _variant_figures(out)


def short_web(data: Path, folder: Path, steps: int) -> dict:
    """What the Train tab does: the run folder by `start_run`, then the job line's worker runs it."""
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.dataspec import DataSpec, start_run
    from playground.jobs import ACTIVE, JobQueue

    out = folder / "web-run"
    start_run(out, DataSpec(path=str(data)), [Variant("uniform", hyper=Hyper(max_steps=steps))], model=None,
              precision="auto")
    jobs = JobQueue(workers_dir=folder / "workers")
    job = jobs.submit(str(out), ["train", "--resume", str(out), "--json"], owner="bench", kind="train")
    while job.state in ACTIVE:
        time.sleep(0.5)
    if job.state != "finished":
        raise RuntimeError(f"the web app's worker failed: {job.stderr_tail}")
    return _variant_figures(out)


def short_rows(steps: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="loraeq-bench-short-"))
    try:
        data, mean_tokens = short_data(folder)
        cli, web = short_cli(data, folder, steps), short_web(data, folder, steps)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"mean_tokens_per_row": mean_tokens, "cli": cli, "web": web,
            "web_vs_cli": round(web["tokens_per_s"] / cli["tokens_per_s"], 2)}


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
    p.add_argument("--no-short", action="store_true", help="skip the short-row case (CLI and web app worker)")
    p.add_argument("--short-steps", type=int, default=SHORT_STEPS, help="steps of the short-row case")
    p.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    rounds = []
    for _ in range(args.rounds):
        ours, trl = launch("ours", args.steps), launch("trl", args.steps)
        rounds.append({"ours": ours, "trl": trl, "speedup": round(ours["tokens_per_s"] / trl["tokens_per_s"], 2)})
    ours_best = max(r["ours"]["tokens_per_s"] for r in rounds)
    limit = compute_limit(rounds[0]["ours"]["precision"])
    result = {
        "speedup": statistics.median(r["speedup"] for r in rounds),
        "ours_tokens_per_s": statistics.median(r["ours"]["tokens_per_s"] for r in rounds),
        "trl_tokens_per_s": statistics.median(r["trl"]["tokens_per_s"] for r in rounds),
        "compute_limit_tokens_per_s": limit["tokens_per_s"],
        "ours_vs_compute_limit": round(ours_best / limit["tokens_per_s"], 2),
        "load_average": os.getloadavg()[0],
        "rounds": rounds,
    }
    if not args.no_short:
        short = short_rows(args.short_steps)
        result.update(short_rows=short, short_web_vs_8x256=round(short["web"]["tokens_per_s"] / ours_best, 2),
                      short_cli_vs_8x256=round(short["cli"]["tokens_per_s"] / ours_best, 2))
    if not args.no_memory:  # peak RSS of our training at batch 8 x 512 tokens (train_memory.py, its own process)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from train_memory import LIMIT_GB, measure

        peak = measure(["cli"])["cases"][0]["peak_gb"]  # `loraeq train` as a user runs it, its whole process tree
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
