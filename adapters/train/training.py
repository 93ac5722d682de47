"""Train one LoRA adapter per variant on a frozen base, through the Hugging Face Trainer.

`train_variant` wraps the loaded base with the variant's LoRA config (compiled from its
equalizer), trains it with `transformers.Trainer` (so `accelerate launch` runs the same code on
several GPUs), writes progress as JSONL, checkpoints for resume, saves the adapter atomically and
unwraps the base again, bit-identical. It knows nothing about queues or run folders (`runs.py`)
nor about reading files (`data/`): it takes conversations already chosen for training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.base.bands import DEFAULT_BANDS
from adapters.base.tokenize import IGNORE, Encoded, encode_chat
from adapters.cache import write_json_atomic
from adapters.errors import LoraEqError
from adapters.limits import ACTIVATION_BUDGET_ENV, layers_to_recompute
from adapters.runtime import is_main_process
from adapters.shape.variants import Variant

from . import lora_train
from .runfolder import read_log  # noqa: F401  (re-exported: the reader of the log written here)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class CancelledError(Exception):
    """Training stopped because a cancel was requested."""


@dataclass
class VariantResult:
    name: str
    status: str  # done | cancelled | failed | stopped (by a search's rung)
    steps: int
    final_loss: float | None
    seconds: float
    trained_tokens: int
    tokens_per_s: float
    cut_examples: int
    error: str | None = None
    trainable_params: int | None = None  # the adapter's LoRA parameters, counted on the model


    def to_json(self) -> dict:
        return dict(self.__dict__)


class TokenCounter:
    """Counts real (non-padding) tokens as batches are built, for tokens/s."""

    def __init__(self) -> None:
        self.tokens = 0


class PadCollator:
    """Right-pads a batch to its longest example; labels of padding are ignored."""

    def __init__(self, pad_id: int, counter: TokenCounter):
        self.pad_id, self.counter = pad_id, counter

    def __call__(self, batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        self.counter.tokens += int(mask.sum())
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[Encoded]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


def encode_all(tokenizer, conversations: list[list[dict]], max_length: int) -> list[Encoded]:
    """Encode conversations; ones with no assistant token left after the cut are dropped here
    (the data stage has already reported them as cut)."""
    encoded = [encode_chat(tokenizer, c, max_length) for c in conversations]
    return [e for e in encoded if e.trained_tokens > 0]


def _progress_callback(log_path: Path, cancel_path: Path | None, counter: TokenCounter):
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        """Appends one JSON line per optimizer step; stops the Trainer when a cancel is asked."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.start_tokens = 0
            self.cancelled = False
            self.last_loss: float | None = None

        def on_train_begin(self, args, state, control, **kw):
            # On resume the Trainer has already restored global_step from the checkpoint.
            self.started, self.start_tokens, self.first_step = time.perf_counter(), counter.tokens, state.global_step
            if state.is_world_process_zero:
                _append(log_path, {"event": "start", "step": state.global_step, "max_steps": state.max_steps,
                                   "world_size": args.world_size})

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            elapsed = time.perf_counter() - self.started
            tokens = counter.tokens - self.start_tokens
            remaining = state.max_steps - state.global_step
            done_here = max(1, state.global_step - self.first_step)
            self.last_loss = float(logs["loss"])
            _append(
                log_path,
                {
                    "step": state.global_step,
                    "max_steps": state.max_steps,
                    "epoch": round(state.epoch or 0.0, 4),
                    "loss": self.last_loss,
                    "learning_rate": logs.get("learning_rate"),
                    "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
                    "eta_s": round(elapsed / done_here * remaining, 1),
                    "time": time.time(),
                },
            )

        def on_step_end(self, args, state, control, **kw):
            if cancel_path is not None and cancel_path.exists():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = False

    return ProgressLog()


HELDOUT_SAMPLE = 64  # held-out rows scored during training: enough for a curve
HELDOUT_EVALS = 10  # evaluations over a run, at most
HELDOUT_COST = 0.15  # the curve's forward passes cost at most this share of the training's own compute
PATIENCE = 3  # evaluations without a better held-out loss before early stopping


def heldout_loss(model, batches: list[dict]) -> float:
    """Mean assistant-token loss of the model on prepared batches (no gradients, eval mode), as
    training computes it: at labelled positions only where it can (label_loss.py; the model's own
    loss keeps every position's logits, 1.6 GB at batch 8 x 512, more than training itself needs)."""
    from .label_loss import label_only_loss, label_only_reason

    labelled_only = label_only_reason(model) is None
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            loss = label_only_loss(model, batch) if labelled_only else model(**batch).loss
            total += float(loss) * n
            tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


def _heldout_callback(log_path: Path, model, batches: list[dict], every: int, early_stop: bool):
    from transformers import TrainerCallback

    class HeldoutWatch(TrainerCallback):
        """Held-out loss every `every` steps into the log; with early stopping, stops after PATIENCE
        evaluations without improvement and puts the best adapter weights back."""

        def __init__(self) -> None:
            self.best, self.best_step, self.waited, self.best_state = float("inf"), 0, 0, None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % every and state.global_step != state.max_steps:
                return
            loss = heldout_loss(model, batches)
            if state.is_world_process_zero:
                _append(log_path, {"step": state.global_step, "heldout_loss": loss, "time": time.time()})
            if loss < self.best:
                self.best, self.best_step, self.waited = loss, state.global_step, 0
                if early_stop:
                    self.best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
            elif early_stop:
                self.waited += 1
                if self.waited >= PATIENCE:
                    control.should_training_stop = True

        def restore_best(self) -> int | None:
            """Put the best evaluated weights back; the step they are from (None without early stopping)."""
            if self.best_state is None:
                return None
            params = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in self.best_state.items():
                    params[k].copy_(v)
            return self.best_step

    return HeldoutWatch()


def _rung_callback(model, rungs):
    from transformers import TrainerCallback

    class RungWatch(TrainerCallback):
        """Hands the model being trained to `rungs` at the steps it asks for (and at the last step);
        stops the training when it says so."""

        stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kw):
            last = state.global_step >= state.max_steps
            if not (last or rungs.due(state.global_step)):
                return
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    stop = rungs(state.global_step, state.max_steps, model)
            finally:
                model.train(was_training)
            if stop and not last:
                self.stopped_at = state.global_step
                control.should_training_stop = True
                control.should_save = False

    return RungWatch()


def heldout_schedule(steps: int, rows_per_step: int, heldout_rows: int) -> tuple[int, int]:
    """(every, sample): the held-out loss every `every` steps (and at the last) on `sample` rows,
    within HELDOUT_COST of the training's compute (a row's forward pass costs about a third of
    its training step). A long run gets HELDOUT_EVALS points on HELDOUT_SAMPLE rows; 5 steps of
    batch 2 get 2 points on 2 rows, not 5 on 64 (which took 5 times the training's time)."""
    sample = min(HELDOUT_SAMPLE, heldout_rows)
    affordable = 3 * HELDOUT_COST * steps * rows_per_step  # rows of forward passes over the run
    evals = min(HELDOUT_EVALS, steps, max(2, int(affordable // max(sample, 1))))
    sample = max(1, min(sample, int(affordable // evals)))
    return -(-steps // evals), sample


def _heldout_batches(tokenizer, conversations: list[list[dict]], max_length: int, batch_size: int) -> list[dict]:
    rows = encode_all(tokenizer, conversations, max_length)
    collate = PadCollator(tokenizer.pad_token_id, TokenCounter())
    return [collate([EncodedDataset(rows)[j] for j in range(i, min(i + batch_size, len(rows)))])
            for i in range(0, len(rows), batch_size)]


def _append(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete Trainer checkpoint in `folder`, if any."""
    found = []
    for p in folder.glob("checkpoint-*"):
        step = p.name.split("-")[-1]
        if step.isdigit() and (p / "trainer_state.json").is_file() and (p / "adapter_model.safetensors").is_file():
            found.append((int(step), p))
    return max(found)[1] if found else None


def use_bf16_autocast(base) -> bool:
    """Mixed bf16 where the hardware computes it natively; on CPU only with AVX512-BF16/AMX."""
    from adapters.base.loading import cpu_has_fast_bf16

    if base.precision == "fp32":
        return False
    if base.device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def _trainer_class(log_path: Path):
    """The Trainer with the loss computed only at labelled positions (label_loss.py), where the
    model allows it and it runs unwrapped (under DDP the wrapper's own forward must run), and with
    activation checkpointing for exactly the batches whose activations would pass the budget
    (limits.layers_to_recompute), in as few decoder layers as fit the budget: the rest keep the
    faster path."""
    from transformers import Trainer
    from transformers.modeling_layers import GradientCheckpointingLayer

    from adapters.fastpath import LABEL_LOSS, note

    from .label_loss import label_only_loss, label_only_reason

    class LabelLossTrainer(Trainer):
        checkpointed = 0  # times the trainer turned recomputation on, or changed its number of layers
        _recomputing = 0  # decoder layers that recompute their activations now

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._fit_activations(inputs["input_ids"])
            wrapped = self.accelerator.unwrap_model(model) is not model
            if wrapped:
                note(LABEL_LOSS, "the model runs wrapped (DDP), whose own forward must run")
            if return_outputs or label_only_reason(model) or wrapped:
                self.loss_is_scaled_for_ga = None
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            with self.accelerator.autocast():  # as the Trainer runs the model's own forward (bf16 where it pays)
                loss = label_only_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # as the Trainer scales a model's own loss
            return loss

        def _fit_activations(self, input_ids) -> None:
            inner = self.accelerator.unwrap_model(self.model)
            inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
            value_bytes = 2 if self.args.bf16 or self.args.fp16 else inner.dtype.itemsize
            want = layers_to_recompute(inner.config, input_ids.numel(), value_bytes) if inner.training else 0
            if want == self._recomputing:
                return
            self._recomputing = want
            if not want:
                inner.gradient_checkpointing_disable()
                return
            if not inner.is_activation_checkpointing:
                inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            layers = [m for m in inner.modules() if isinstance(m, GradientCheckpointingLayer)]
            for i, layer in enumerate(layers):  # only as many layers as the budget asks for recompute
                layer.gradient_checkpointing = i < want
            if not self.checkpointed:
                _append(log_path, {"event": "activation_checkpointing", "step": self.state.global_step, "reason": (
                    f"a batch of {input_ids.shape[0]} x {input_ids.shape[1]} tokens would keep more activations "
                    f"than the budget ({ACTIVATION_BUDGET_ENV}): {min(want, len(layers))} of its {len(layers)} "
                    "layers' are recomputed (more or fewer for other batches)")})
            self.checkpointed += 1

    return LabelLossTrainer


def training_arguments(variant: Variant, out: Path, base, n_examples: int):
    from transformers import TrainingArguments

    h = variant.hyper
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=h.batch_size,
        gradient_accumulation_steps=h.grad_accum,
        learning_rate=h.learning_rate,
        weight_decay=h.weight_decay,
        num_train_epochs=h.epochs if h.epochs is not None else 1.0,  # max_steps decides
        max_steps=h.max_steps if h.max_steps is not None else -1,
        warmup_steps=h.warmup_ratio,
        lr_scheduler_type="cosine",
        logging_steps=1,
        save_strategy="steps",
        save_steps=h.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=h.seed,
        data_seed=h.seed,
        bf16=use_bf16_autocast(base),
        use_cpu=base.device == "cpu",
        optim="adamw_torch",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # Similar lengths share a batch: little padding, so compute goes to real tokens.
        train_sampling_strategy="group_by_length" if n_examples > h.batch_size else "random",
        disable_tqdm=True,
    )


def planned_steps(h, n_examples: int) -> int:
    """Optimizer steps the Trainer will take for `n_examples` (as its own epoch arithmetic)."""
    if h.max_steps is not None:
        return h.max_steps
    per_epoch = math.ceil(n_examples / h.batch_size / h.grad_accum)
    return max(1, math.ceil((h.epochs or 1.0) * per_epoch))


def resolve_equalizer(base, variant: Variant, bands: int = DEFAULT_BANDS):
    """The variant's equalizer as a grid over this base's roles and layer bands."""
    from adapters.base.analysis import tuning_map
    from adapters.base.bands import layer_bands
    from adapters.shape.equalizer import Equalizer, preset

    tmap = tuning_map(base.model)
    if isinstance(variant.equalizer, str):
        return preset(variant.equalizer, tmap, layer_bands(tmap.layers, bands)), tmap
    return Equalizer.from_json(variant.equalizer), tmap


def attach_lora(base, variant: Variant, bands: int = DEFAULT_BANDS):
    """The base wrapped in a PeftModel carrying the variant's LoRA config (from its equalizer), its
    LoRA layers computing through `lora_train` (the same function, faster and smaller to train)
    where that fast path applies (fastpath.py), else through PEFT's own."""
    from peft import get_peft_model

    from adapters.shape.equalizer import compile_lora_config

    eq, tmap = resolve_equalizer(base, variant, bands)
    h = variant.hyper
    config = compile_lora_config(eq, tmap, rank=h.rank, alpha=h.alpha, dropout=h.dropout)
    torch.manual_seed(h.seed)  # LoRA A init is random: seeded so a variant is reproducible
    model = get_peft_model(base.model, config)
    lora_train.install(model)
    return model


def detach_lora(peft_model) -> None:
    """Remove the LoRA layers again; the base modules come back exactly as they were."""
    peft_model.unload()


def save_adapter_atomically(peft_model, folder: Path) -> None:
    """Write the adapter files next to each other in a temp folder, then move them in place."""
    tmp = folder / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    for name in ADAPTER_FILES:
        os.replace(tmp / name, folder / name)
    shutil.rmtree(tmp, ignore_errors=True)


def train_variant(
    base,
    variant: Variant,
    conversations: list[list[dict]],
    folder: Path,
    *,
    bands: int = DEFAULT_BANDS,
    cancel_path: Path | None = None,
    heldout: list[list[dict]] | None = None,
    rungs=None,
) -> VariantResult:
    """Train `variant` on `conversations` into `folder` (adapter files, train_log.jsonl). With
    `heldout` conversations, their loss is logged every few steps (a sample of HELDOUT_SAMPLE),
    and the variant's `early_stopping` stops on it.

    `rungs` (a search's trial, `evals.search`) sees the model at the steps its `due(step)` names
    and at the last one: `rungs(step, max_steps, model)` scores it (in eval mode, without
    gradients) and returns True to stop the training there; the result's status is then
    "stopped" and no adapter is saved."""
    from transformers import PrinterCallback

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    variant, _ = variant.scheduled(len(conversations))
    h = variant.hyper
    examples = encode_all(base.tokenizer, conversations, h.max_length)
    if not examples:
        raise LoraEqError(f"variant {variant.name!r}: no example keeps an assistant token within max_length={h.max_length}")
    cut = sum(1 for e in examples if e.cut)
    counter = TokenCounter()
    peft_model = attach_lora(base, variant, bands)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    try:
        steps, loss, trained, status = 0, None, 0, "done"
        if h.max_steps == 0 or (h.max_steps is None and h.epochs == 0):
            _append(folder / "train_log.jsonl", {"event": "start", "step": 0, "max_steps": 0})
        else:
            progress = _progress_callback(folder / "train_log.jsonl", cancel_path, counter)
            arguments = training_arguments(variant, folder / "checkpoints", base, len(examples))
            callbacks, watch = [progress], None
            rung_watch = _rung_callback(peft_model, rungs) if rungs is not None else None
            if rung_watch is not None:
                callbacks.append(rung_watch)
            if heldout:
                every, sample = heldout_schedule(planned_steps(h, len(examples)), h.batch_size * h.grad_accum,
                                                 len(heldout))
                batches = _heldout_batches(base.tokenizer, heldout[:sample], h.max_length, h.batch_size)
                watch = _heldout_callback(folder / "train_log.jsonl", peft_model, batches, every, h.early_stopping)
                callbacks.append(watch)
            trainer = _trainer_class(folder / "train_log.jsonl")(
                model=peft_model,
                args=arguments,
                train_dataset=EncodedDataset(examples),
                data_collator=PadCollator(base.tokenizer.pad_token_id, counter),
                callbacks=callbacks,
            )
            trainer.remove_callback(PrinterCallback)  # stdout belongs to the CLI's JSON; progress goes to the log
            resume = last_checkpoint(folder / "checkpoints")
            if resume is not None:
                _append(folder / "train_log.jsonl", {"event": "resume", "checkpoint": resume.name})
            output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            steps, loss = trainer.state.global_step, progress.last_loss
            trained = counter.tokens
            if progress.cancelled:
                raise CancelledError(f"variant {variant.name!r} cancelled at step {steps}")
            best = watch.restore_best() if watch is not None else None
            if best is not None and best != steps:
                _append(folder / "train_log.jsonl", {"event": "early_stop", "step": steps, "best_step": best})
            del output
            if rung_watch is not None and rung_watch.stopped_at is not None:
                status = "stopped"
        if is_main_process() and status == "done":
            save_adapter_atomically(peft_model, folder)
    finally:
        detach_lora(peft_model)
        base.model.requires_grad_(False)
        if base.model.is_gradient_checkpointing:
            base.model.gradient_checkpointing_disable()
    seconds = time.perf_counter() - started
    return VariantResult(
        name=variant.name,
        status=status,
        steps=steps,
        final_loss=loss,
        seconds=round(seconds, 2),
        trained_tokens=trained,
        tokens_per_s=round(trained / seconds, 1) if seconds > 0 and trained else 0.0,
        cut_examples=cut,
        trainable_params=trainable,
    )


def write_metrics(folder: Path, result: VariantResult, extra: dict | None = None) -> None:
    write_json_atomic(folder / "metrics.json", {**result.to_json(), **(extra or {})})
