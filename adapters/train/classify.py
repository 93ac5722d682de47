"""Classification runs: a linear probe and LoRA SEQ_CLS variants on one frozen encoder; predictions.

A classification run (task `classification`, written by `dataspec.start_run`) trains, on one
loaded encoder (`encoder.py`), first the **linear probe**: the frozen encoder with only its seeded
head trained, the fair "base" of a classifier, saved as `probe/head.safetensors`; then every LoRA
variant: the equalizer compiled to `LoraConfig(task_type="SEQ_CLS")` with the head in
`modules_to_save`, each starting from the same seeded head, saved as a standard PEFT adapter.
Progress goes to each column's `train_log.jsonl` in the schema of LLM training (step, loss, eta,
held-out loss and accuracy), status and metrics as in `runs.py`, so `loraeq status`, `cancel`
and the Train tab follow it unchanged. A finished column is skipped on a rerun (no mid-column
resume). `Classifier` loads the probe head and every finished adapter on one base and returns each
column's label probabilities. Scores and the proof are in `evals/classproof.py`; nothing here
reads user files other than the run folder.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from adapters.base.bands import DEFAULT_BANDS
from adapters.cache import write_json_atomic
from adapters.data.classes import LabeledRow, rows
from adapters.errors import LoraEqError
from adapters.shape.variants import Hyper, Variant

from .runfolder import PROBE, RunFolder
from .runs import library_versions, run_lock, run_split, set_status
from .training import (
    CancelledError,
    VariantResult,
    planned_steps,
    resolve_equalizer,
    save_adapter_atomically,
    write_metrics,
)

HEAD_FILE = "head.safetensors"
HELDOUT_EVALS = 10  # held-out loss and accuracy measured this many times over a column's training


def probe_folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / PROBE


def encode(tokenizer, batch: list[LabeledRow], max_length: int, device: str) -> dict:
    """Token ids of a batch of rows (pairs as the tokenizer's second segment), padded, on `device`."""
    texts = [r.text for r in batch]
    pairs = [r.text_pair or "" for r in batch] if any(r.text_pair for r in batch) else None
    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def label_ids(batch: list[LabeledRow], labels: list[str], device: str) -> torch.Tensor:
    index = {x: i for i, x in enumerate(labels)}
    unknown = [r.label for r in batch if r.label not in index]
    if unknown:
        raise LoraEqError(f"label {unknown[0]!r}: not one of the classifier's labels ({', '.join(labels)})")
    return torch.tensor([index[r.label] for r in batch], device=device)


def head_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The head's weights (copies), keyed by their names in the model."""
    from adapters.base.encoder import head_modules

    return {f"{name}.{k}": v.detach().clone().contiguous()
            for name in head_modules(model) for k, v in getattr(model, name).state_dict().items()}


def load_head(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing = set(state) - set(model.state_dict())
    if missing:
        raise LoraEqError(f"head weights {sorted(missing)[:2]}: the model has no such parameters")
    model.load_state_dict(state, strict=False)


@torch.no_grad()
def probabilities(model, tokenizer, data: list[LabeledRow], device: str, max_length: int = 512,
                  batch_size: int = 16) -> np.ndarray:
    """Softmax over the labels for every row (n x labels), the model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(data), batch_size):
        logits = model(**encode(tokenizer, data[i : i + batch_size], max_length, device)).logits
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0))


class _Log:
    """Appends progress records to a column's train_log.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, record: dict) -> None:
        import json

        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _heldout_check(model, tokenizer, heldout: list[LabeledRow], labels: list[str], h: Hyper, device: str) -> dict:
    if not heldout:
        return {}
    p = probabilities(model, tokenizer, heldout, device, h.max_length, h.batch_size)
    y = label_ids(heldout, labels, "cpu").numpy()
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return {"heldout_loss": loss, "heldout_accuracy": float((p.argmax(1) == y).mean())}


def fit(model, params: list, base, data: list[LabeledRow], labels: list[str], h: Hyper, folder: Path, *,
        cancel_path: Path | None = None, heldout: list[LabeledRow] | None = None) -> tuple[int, float | None]:
    """Train `params` of `model` on `data` (cross-entropy over `labels`): AdamW, warmup then cosine,
    seeded shuffles. Returns (steps, last loss); raises CancelledError when a cancel is asked."""
    from transformers import get_cosine_schedule_with_warmup

    steps = planned_steps(h, len(data))
    log = _Log(folder / "train_log.jsonl")
    log({"event": "start", "step": 0, "max_steps": steps, "world_size": 1})
    if steps == 0:
        return 0, None
    optimizer = torch.optim.AdamW(params, lr=h.learning_rate, weight_decay=h.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(h.warmup_ratio * steps), steps)
    rng = np.random.default_rng(h.seed)
    every, loss, tokens, started = max(1, steps // HELDOUT_EVALS), None, 0, time.perf_counter()
    order: list[int] = []
    model.train()
    for step in range(1, steps + 1):
        if cancel_path is not None and cancel_path.exists():
            raise CancelledError(f"cancelled at step {step - 1}")
        while len(order) < h.batch_size:
            order += rng.permutation(len(data)).tolist()
        batch, order = [data[i] for i in order[: h.batch_size]], order[h.batch_size :]
        inputs = encode(base.tokenizer, batch, h.max_length, base.device)
        output = model(**inputs, labels=label_ids(batch, labels, base.device))
        output.loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss, tokens = output.loss.item(), tokens + int(inputs["attention_mask"].sum())
        elapsed = time.perf_counter() - started
        log({"step": step, "max_steps": steps, "epoch": round(step * h.batch_size / len(data), 4), "loss": loss,
             "learning_rate": schedule.get_last_lr()[0], "tokens_per_s": round(tokens / elapsed, 1),
             "eta_s": round(elapsed / step * (steps - step), 1), "time": time.time()})
        if step % every == 0 or step == steps:
            log({"step": step, **_heldout_check(model, base.tokenizer, heldout or [], labels, h, base.device),
                 "time": time.time()})
            model.train()
    model.eval()
    return steps, loss


def _result(name: str, steps: int, loss: float | None, started: float) -> VariantResult:
    return VariantResult(name, "done", steps, loss, round(time.perf_counter() - started, 2), 0, 0.0, 0)


def train_probe(base, data: list[LabeledRow], labels: list[str], h: Hyper, folder: Path, *,
                cancel_path: Path | None = None, heldout: list[LabeledRow] | None = None) -> VariantResult:
    """The linear probe: only the head of the frozen encoder is trained; saved as head.safetensors.
    The seeded head is put back afterwards, so every LoRA variant starts from it too."""
    from safetensors.torch import save_file

    from adapters.base.encoder import head_modules

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    initial = head_state(base.model)
    params = [p for name in head_modules(base.model) for p in getattr(base.model, name).parameters()]
    for p in params:
        p.requires_grad_(True)
    try:
        steps, loss = fit(base.model, params, base, data, labels, h, folder, cancel_path=cancel_path, heldout=heldout)
        save_file(head_state(base.model), str(folder / f".{HEAD_FILE}"))
        os.replace(folder / f".{HEAD_FILE}", folder / HEAD_FILE)
    finally:
        load_head(base.model, initial)
        base.model.requires_grad_(False)
    return _result(PROBE, steps, loss, started)


def lora_config(base, variant: Variant, bands: int = DEFAULT_BANDS):
    """The variant's equalizer as a SEQ_CLS LoraConfig with the encoder's head in modules_to_save."""
    from adapters.base.encoder import head_modules
    from adapters.shape.equalizer import compile_lora_config

    eq, tmap = resolve_equalizer(base, variant, bands)
    h = variant.hyper
    config = compile_lora_config(eq, tmap, rank=h.rank, alpha=h.alpha, dropout=h.dropout, task_type="SEQ_CLS",
                                 modules_to_save=head_modules(base.model))
    return eq, config


def train_lora(base, variant: Variant, data: list[LabeledRow], labels: list[str], folder: Path, *,
               bands: int = DEFAULT_BANDS, cancel_path: Path | None = None,
               heldout: list[LabeledRow] | None = None) -> VariantResult:
    """One LoRA variant (adapter + its own copy of the head) on the frozen encoder; the encoder and
    its head are put back exactly as they were."""
    from peft import get_peft_model

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    initial = head_state(base.model)
    _, config = lora_config(base, variant, bands)
    torch.manual_seed(variant.hyper.seed)  # LoRA A init is random: seeded so a variant is reproducible
    peft_model = get_peft_model(base.model, config)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        steps, loss = fit(peft_model, params, base, data, labels, variant.hyper, folder, cancel_path=cancel_path,
                          heldout=heldout)
        save_adapter_atomically(peft_model, folder)
    finally:
        base.model = peft_model.unload()
        load_head(base.model, initial)
        base.model.requires_grad_(False)
    return _result(variant.name, steps, loss, started)


# ---- the queue --------------------------------------------------------------------------------


def _record(run: RunFolder, base, name: str, variant: Variant | None, hyper: Hyper, schedule: str | None,
            grid: dict | None) -> dict:
    return {
        "name": name,
        "kind": "lora" if variant else "linear probe",
        "task": "classification",
        "labels": base.labels,
        "equalizer": variant.equalizer if variant else None,
        "equalizer_grid": grid,
        "hyper": hyper.__dict__,
        "schedule": schedule or "as given",
        "precision": base.precision,
        "base": {"spec": run.model, "id": base.source.id, "kind": base.source.kind, "fingerprint": base.fingerprint,
                 "folder": str(base.folder)},
        "data": run.data,
        "versions": library_versions(),
        "run": str(run.path),
    }


def _columns(run: RunFolder) -> list[tuple[str, Path, Variant | None]]:
    variants = [(v.name, v.folder, Variant.from_json(v.config)) for v in run.variants]
    return [(PROBE, probe_folder(run.path), None)] + variants


def stream(train, variant: Variant | None) -> list[LabeledRow]:
    """The rows one column trains on: the training split, or the variant's mix (quotas by label)."""
    if variant is None or not variant.mix.active:
        return rows(train)
    from adapters.data import build_mixture

    m = variant.mix
    mixture = build_mixture(train, weights=m.weights, quotas=m.quotas, size=m.size, seed=m.seed)
    return rows(train.subset(mixture.stream))


def _train_column(run, base, name, folder, variant, train_set, heldout) -> VariantResult:
    """Train one column (the probe when `variant` is None), writing variant.json first. The probe
    gets the first variant's hyperparameters (same steps and learning rate): a fair base."""
    template = variant or (Variant.from_json(run.variants[0].config) if run.variants else Variant(PROBE, "uniform"))
    train = stream(train_set, variant)
    scheduled, schedule = template.scheduled(len(train))
    grid = None
    if variant is not None:
        eq, _ = lora_config(base, scheduled, run.bands)
        grid = eq.to_json()
    write_json_atomic(folder / "variant.json", _record(run, base, name, variant, scheduled.hyper, schedule, grid))
    common = dict(cancel_path=run.cancel_path, heldout=heldout)
    if variant is None:
        return train_probe(base, train, base.labels, scheduled.hyper, folder, **common)
    return train_lora(base, scheduled, train, base.labels, folder, bands=run.bands, **common)


def run_classification(run_dir: str | Path, base=None, on_event=None) -> list[dict]:
    """Train the probe, then every unfinished LoRA variant, of a classification run, in order."""
    from adapters.base.encoder import load_encoder

    run = RunFolder.open(run_dir)
    if run.task != "classification":
        raise LoraEqError(f"{run_dir}: a {run.task} run, not a classification run")
    emit = on_event or (lambda record: None)
    with run_lock(run.path):
        run.cancel_path.unlink(missing_ok=True)
        base = base or load_encoder(run.model, run.precision, run.labels)
        if base.labels != run.labels:
            raise LoraEqError(f"the loaded encoder's labels {base.labels} are not the run's {run.labels}")
        train = run_split(run.path, "train")
        heldout = rows(run_split(run.path, "heldout"))
        return [_queue_column(run, base, column, train, heldout, emit) for column in _columns(run)]


def _queue_column(run, base, column, train, heldout, emit) -> dict:
    name, folder, variant = column
    if _done(folder):
        emit({"variant": name, "status": "done", "skipped": True})
        return {**_metrics(folder), "path": str(folder)}
    if run.cancel_path.exists():
        set_status(folder, "cancelled")
        return {"name": name, "status": "cancelled", "path": str(folder)}
    set_status(folder, "running", pid=os.getpid())
    emit({"variant": name, "status": "running"})
    try:
        result = _train_column(run, base, name, folder, variant, train, heldout)
    except CancelledError as e:
        set_status(folder, "cancelled", error=f"{name}: {e}")
        emit({"variant": name, "status": "cancelled"})
        return {"name": name, "status": "cancelled", "path": str(folder)}
    except Exception as e:  # one column's failure must not stop the queue
        message = str(e) if isinstance(e, LoraEqError) else f"{type(e).__name__}: {e}"
        set_status(folder, "failed", error=message, traceback=traceback.format_exc(limit=8))
        emit({"variant": name, "status": "failed", "error": message})
        return VariantResult(name, "failed", 0, None, 0.0, 0, 0.0, 0, message).to_json() | {"path": str(folder)}
    write_metrics(folder, result)
    set_status(folder, "done")
    emit({"variant": name, "status": "done", "final_loss": result.final_loss})
    return {**result.to_json(), "path": str(folder)}


def _done(folder: Path) -> bool:
    from .runfolder import variant_status

    return variant_status(folder) == "done"


def _metrics(folder: Path) -> dict:
    from adapters.cache import read_json

    return read_json(folder / "metrics.json")


# ---- predictions --------------------------------------------------------------------------------


class Classifier:
    """A classification run's columns on one loaded encoder: the linear probe, then every finished
    LoRA variant (each a named PEFT adapter with its own head). Calls are serialized: switching
    the active adapter changes the shared model."""

    def __init__(self, run_dir: str | Path, base=None):
        from adapters.base.encoder import load_encoder

        run = RunFolder.open(run_dir)
        if run.task != "classification":
            raise LoraEqError(f"{Path(run_dir).name}: a causal LM run (its base is a decoder); classify needs a "
                              "classification run (loraeq train --task classification)")
        head = probe_folder(run.path) / HEAD_FILE
        if not head.is_file():
            raise LoraEqError(f"{Path(run_dir).name}: its linear probe has not finished training")
        self.run, self.labels = run, run.labels
        self.base = base or load_encoder(run.model, run.precision, run.labels)
        from safetensors.torch import load_file

        load_head(self.base.model, {k: v.to(self.base.device) for k, v in load_file(str(head)).items()})
        self.model = self._with_adapters(run.adapters())
        self.columns = [PROBE] + list(run.adapters())
        self._lock = threading.Lock()

    def _with_adapters(self, adapters: dict[str, Path]):
        if not adapters:
            return self.base.model
        from peft import PeftModel

        names = list(adapters)
        model = PeftModel.from_pretrained(self.base.model, str(adapters[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            model.load_adapter(str(adapters[name]), adapter_name=name)
        model.eval()
        return model

    def check_label(self, label: str, where: str = "label") -> str:
        if label not in self.labels:
            raise LoraEqError(f"{where} {label!r}: not one of this run's labels ({', '.join(self.labels)})")
        return label

    def probabilities(self, data: list[LabeledRow], columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Per column, the label probabilities of every row (rows x labels)."""
        columns = columns or self.columns
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise LoraEqError(f"column {unknown[0]!r}: not a finished column of this run ({', '.join(self.columns)})")
        out = {}
        with self._lock:
            for column in columns:
                out[column] = self._column(column, data)
        return out

    def _column(self, column: str, data: list[LabeledRow]) -> np.ndarray:
        args = (self.base.tokenizer, data, self.base.device)
        if self.model is self.base.model:
            return probabilities(self.model, *args)
        if column == PROBE:
            with self.model.disable_adapter():  # the encoder alone, with the probe's head
                return probabilities(self.model, *args)
        self.model.set_adapter(column)
        return probabilities(self.model, *args)

    def classify(self, text: str, text_pair: str | None = None) -> dict:
        """Each column's label and probabilities for one text: {"columns": [{name, label, probabilities}]}."""
        if not isinstance(text, str) or not text.strip():
            raise LoraEqError("text: empty; give the text to classify")
        probs = self.probabilities([LabeledRow(text, self.labels[0], text_pair or None)])
        return {"labels": self.labels, "columns": [
            {"name": name, "label": self.labels[int(p[0].argmax())],
             "probabilities": {x: float(v) for x, v in zip(self.labels, p[0])}} for name, p in probs.items()]}
