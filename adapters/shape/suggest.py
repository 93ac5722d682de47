"""A data-suggested equalizer: where on the frozen base does the user's data pull hardest?

A few batches of the user's conversations go through the base (loss on assistant tokens only, as
in training) and back. For every tuning point the weight gradient of each batch, G_b, is rebuilt
from the module's input activations x and output gradients g captured by hooks (G_b = g^T x,
exactly what autograd would give the weight), so it works the same for fp32, bf16 and NF4 bases:
a 4-bit weight cannot hold a gradient, but its output can. A cell's sensitivity is the
first-order Taylor importance sum_b mean|G_b * W| (W dequantized): how much the loss would move
if that place's weights moved in proportion to themselves. Averaged per layer band x role, it is
mapped to strengths in [floor, 1] (the strongest cell at 1), then, by default, scaled so the grid
trains as many LoRA parameters as the uniform preset at the same rank (`keep_size`): the
suggestion moves capacity to where the data pulls, it never silently shrinks the adapter
(`keep="strength"` keeps the strongest cell at 1 instead). An fp32 base on hardware with native
bf16 (CUDA, AVX512-BF16/AMX CPUs) runs under bf16 autocast, about twice as fast on such a CPU;
the suggestion is a ratio of sensitivities, which bf16 keeps to about a percent.

No weight is changed and no optimizer runs: weights never get `requires_grad`, parameters'
flags and the model's train/eval mode are restored afterwards. This module does not train and
does not decide for the user; the suggestion is one more equalizer to try next to the presets.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from adapters.base.analysis import TuningMap, dense_weight, tuning_map
from adapters.base.bands import DEFAULT_BANDS, layer_bands
from adapters.base.tokenize import IGNORE, Encoded, encode_chat
from adapters.errors import LoraEqError

from .equalizer import MAX_STRENGTH, Equalizer, block_path

Progress = Callable[[int, int], None]


@dataclass
class Suggestion:
    """A suggested equalizer and the gradient sensitivities it was drawn from."""

    equalizer: Equalizer
    sensitivity: list[list[float]]  # raw, per band (rows) x role (columns)
    per_cell: list[dict]  # {"layer", "role", "sensitivity"} for every tuning point
    examples: int  # conversations that contributed (an assistant token within max_length)
    skipped: int  # conversations picked but left out: the prompt filled max_length before any answer
    tokens: int  # tokens run through the model (no padding)
    trained_tokens: int  # assistant tokens the loss was taken on
    loss: float  # the base's mean loss on those tokens
    floor: float
    seconds: float
    keep: str = "parameters"  # what the strengths were scaled to keep: "parameters" or "strength"
    scale: float = 1.0  # the factor applied to the [floor, 1] strengths

    def to_json(self) -> dict:
        data = asdict(self)
        data["equalizer"] = self.equalizer.to_json()
        data["method"] = "sum over batches of mean |dL/dW * W| per cell, mean over the band's layers"
        return data


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


class _Probe:
    """Sum over batches of mean |G_b * W| for one module, G_b rebuilt from its input and output grad."""

    def __init__(self, module: nn.Module, matmul_dtype: torch.dtype | None = None):
        self.module = module
        self.matmul_dtype = matmul_dtype  # None: bf16 when an operand is bf16, else fp32
        self.total = 0.0
        self.rows: torch.Tensor | None = None  # the batch's real (non-padding) token positions

    def forward_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if args and isinstance(output, torch.Tensor) and output.requires_grad:
            x = args[0].detach()
            output.register_hook(lambda g: self.add(x, g))

    def add(self, x: torch.Tensor, g: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        g = g.reshape(-1, g.shape[-1])
        if self.rows is not None and self.rows.numel() == x.shape[0]:
            x, g = x[self.rows], g[self.rows]  # padding has zero grad: skip its share of the matmul
        dtype = self.matmul_dtype or (torch.bfloat16 if torch.bfloat16 in (x.dtype, g.dtype) else torch.float32)
        # (out, in): the weight's gradient, as autograd computes it. Never fp16: gradients this small underflow.
        grad_w = (g.to(dtype).T @ x.to(dtype)).float()
        self.total += float((grad_w * dense_weight(self.module)).abs().mean())


def _spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over 0..n-1 (data is often ordered by topic: take from all of it)."""
    return list(range(n)) if k >= n else [i * n // k for i in range(k)]


def _trimmed(encoded: Encoded) -> Encoded:
    """Drop the tokens after the last assistant token: a causal LM's loss cannot depend on them."""
    last = max(i for i, label in enumerate(encoded.labels) if label != IGNORE)
    return Encoded(encoded.input_ids[: last + 1], encoded.labels[: last + 1], encoded.cut)


def _encode(
    tokenizer, conversations: list[list[dict]], max_examples: int, max_length: int
) -> tuple[list[Encoded], int]:
    """The picked conversations encoded and trimmed, and how many had no assistant token left."""
    picked = [conversations[i] for i in _spread(len(conversations), max_examples)]
    encoded = [encode_chat(tokenizer, messages, max_length) for messages in picked]
    kept = [_trimmed(e) for e in encoded if e.trained_tokens > 0]
    if not kept:
        raise LoraEqError(f"no conversation keeps an assistant token within max_length={max_length}")
    return kept, len(picked) - len(kept)


def _batches(examples: list[Encoded], batch_size: int, pad_id: int) -> list[_Batch]:
    """Right-padded batches of similar lengths (longest first), labels -100 on padding."""
    ordered = sorted(examples, key=lambda e: -len(e.input_ids))
    batches = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = len(chunk[0].input_ids)
        pad = [width - len(e.input_ids) for e in chunk]
        batches.append(
            _Batch(
                input_ids=torch.tensor([e.input_ids + [pad_id] * p for e, p in zip(chunk, pad)]),
                attention_mask=torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(chunk, pad)]),
                labels=torch.tensor([e.labels + [IGNORE] * p for e, p in zip(chunk, pad)]),
            )
        )
    return batches


def _cell_modules(model: nn.Module, tmap: TuningMap) -> dict[tuple[int, str], list[nn.Module]]:
    """The modules behind each cell; a grouped cell (experts.*.w1) has several."""
    named = dict(model.named_modules())
    cells = {}
    for cell in tmap.cells:
        path = f"{tmap.layers_path}.{cell.layer}.{block_path(tmap, cell.name)}"
        if "*" in path:
            pattern = re.escape(path).replace(r"\*", r"\d+")
            cells[(cell.layer, cell.role)] = [m for n, m in named.items() if re.fullmatch(pattern, n)]
        else:
            cells[(cell.layer, cell.role)] = [named[path]]
    return cells


def autocast_dtype(model: nn.Module, exact: bool) -> torch.dtype | None:
    """bf16 for an fp32 base where the hardware computes bf16 natively, else None (the model's dtype)."""
    from adapters.base.loading import cpu_has_fast_bf16

    param = next(model.parameters())
    if exact or param.dtype != torch.float32:
        return None
    if param.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if param.device.type == "cpu" and cpu_has_fast_bf16() else None


@contextmanager
def _probing(model: nn.Module, probes: list[_Probe], autocast: torch.dtype | None = None) -> Iterator[None]:
    """Freeze every parameter, hook the probes, let gradients flow from the embeddings; undo it all."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    handles = [p.module.register_forward_hook(p.forward_hook) for p in probes]
    # With every weight frozen nothing would need a gradient: mark the embeddings' output instead.
    handles.append(model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True)))
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()  # no dropout: the same data gives the same suggestion
        device = next(model.parameters()).device.type
        mixed = torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None)
        with torch.enable_grad(), mixed:
            yield
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def _summed_loss(model: nn.Module, batch: _Batch) -> torch.Tensor:
    """Sum of the token losses on assistant tokens. Logits are computed only where a label is due:
    the output head over a 50k vocabulary would otherwise cost as much as several layers."""
    targets = batch.labels[:, 1:]
    due = torch.zeros_like(batch.labels, dtype=torch.bool)
    due[:, :-1] = targets != IGNORE
    head = model.get_output_embeddings()

    def only_due(module, args):
        if args and args[0].shape[:2] == due.shape:
            return (args[0][due].unsqueeze(0), *args[1:])
        return None

    handle = head.register_forward_pre_hook(only_due) if head is not None else None
    try:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    finally:
        if handle is not None:
            handle.remove()
    logits = logits[due] if logits.shape[:2] == due.shape else logits[0]
    return F.cross_entropy(logits.float(), targets[targets != IGNORE], reduction="sum")


def _run(
    model: nn.Module,
    batches: list[_Batch],
    probes: list[_Probe],
    autocast: torch.dtype | None,
    trained: int,
    progress: Progress | None,
) -> float:
    """Forward and backward every batch while the probes listen; the summed loss."""
    device = next(model.parameters()).device
    total = 0.0
    with _probing(model, probes, autocast):
        for done, batch in enumerate(batches, 1):
            batch = _Batch(*(t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.labels)))
            rows = batch.attention_mask.flatten().bool()
            for probe in probes:
                probe.rows = rows
            loss = _summed_loss(model, batch)
            total += float(loss.detach())
            (loss / trained).backward()  # scaled so the batches add up to the gradient of the mean loss
            if progress:
                progress(done, len(batches))
    return total


def _band_grid(tmap: TuningMap, bands: list[list[int]], per_cell: dict[tuple[int, str], float]) -> list[list[float]]:
    """Mean sensitivity over each band's layers, per role (roles absent from a layer are skipped)."""
    grid = []
    for members in bands:
        row = []
        for role in tmap.roles:
            values = [per_cell[(layer, role)] for layer in members if (layer, role) in per_cell]
            row.append(sum(values) / len(values) if values else 0.0)
        grid.append(row)
    return grid


def normalized(grid: list[list[float]], floor: float) -> list[list[float]]:
    """Strengths in [floor, 1], linear in sensitivity, the most sensitive cell at 1. The floor keeps
    every place trainable: a low sensitivity on a few batches is weak evidence for switching off."""
    top = max(v for row in grid for v in row)
    if not top > 0:
        raise LoraEqError("the data produced no gradient at any tuning point: nothing to suggest")
    return [[round(floor + (1 - floor) * v / top, 3) for v in row] for row in grid]


KEEPS = ("parameters", "strength")


def keep_size(grid: list[list[float]], tmap: TuningMap, bands: list[list[int]]) -> tuple[list[list[float]], float]:
    """`grid` scaled so it trains as many LoRA parameters as the uniform preset (every cell at 1)
    at the same rank, and the factor: a cell's parameters are its rank (rank x strength) times its
    modules' in + out features, so the parameter-weighted mean strength must be 1. No cell goes
    above MAX_STRENGTH: what a capped cell cannot take goes to the others, in proportion."""
    size = {(c.layer, c.role): c.lora_params_per_rank for c in tmap.cells}
    cells = [(b, r, sum(size.get((layer, role), 0) for layer in band), grid[b][r])
             for b, band in enumerate(bands) for r, role in enumerate(tmap.roles)]
    total = sum(w for _, _, w, _ in cells)
    used = sum(w * v for _, _, w, v in cells)
    if not used > 0:
        return grid, 1.0
    factor, capped = total / used, set()
    for _ in range(len(cells)):  # each round caps at least one more cell, or stops
        over = {(b, r) for b, r, _, v in cells if v * factor > MAX_STRENGTH} - capped
        if not over:
            break
        capped |= over
        free = sum(w * v for b, r, w, v in cells if (b, r) not in capped)
        left = total - MAX_STRENGTH * sum(w for b, r, w, _ in cells if (b, r) in capped)
        if not free > 0 or left <= 0:
            break
        factor = left / free
    out = [list(row) for row in grid]
    for b, r, _, v in cells:
        out[b][r] = round(MAX_STRENGTH if (b, r) in capped else min(MAX_STRENGTH, v * factor), 3)
    return out, round(factor, 4)


def _check(bands: int, max_examples: int, batch_size: int, max_length: int, floor: float) -> None:
    for name, value, low in (("bands", bands, 1), ("max_examples", max_examples, 1),
                             ("batch_size", batch_size, 1), ("max_length", max_length, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise LoraEqError(f"{name}={value!r}: must be a whole number >= {low}")
    if not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
        raise LoraEqError(f"floor={floor!r}: must be between 0 and 1")


def suggest_equalizer(
    loaded,
    conversations: list[list[dict]],
    bands: int = DEFAULT_BANDS,
    max_examples: int = 32,
    batch_size: int = 8,
    max_length: int = 256,
    progress: Progress | None = None,
    *,
    floor: float = 0.25,
    exact: bool = False,
    keep: str = "parameters",
) -> Suggestion:
    """Suggest an equalizer from the gradient sensitivity of `loaded.model` to these conversations
    (at most `max_examples` of them, spread over the list). `loaded` is a `loading.LoadedModel`
    or anything with `.model` and `.tokenizer`; `progress(done, total)` is called per batch.
    `exact=True` computes in the model's own dtype even where bf16 autocast would be faster.
    `keep`: "parameters" (default) scales the grid to the uniform preset's LoRA parameter count,
    "strength" keeps the strongest cell at 1 (a smaller adapter)."""
    _check(bands, max_examples, batch_size, max_length, floor)
    if keep not in KEEPS:
        raise LoraEqError(f"keep={keep!r}: choose one of {', '.join(KEEPS)}")
    if not conversations:
        raise LoraEqError("no conversations to suggest an equalizer from")
    started = time.perf_counter()
    model, tokenizer = loaded.model, loaded.tokenizer
    examples, skipped = _encode(tokenizer, conversations, max_examples, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = _batches(examples, batch_size, pad_id)
    trained = sum(e.trained_tokens for e in examples)
    tmap = tuning_map(model)
    modules = _cell_modules(model, tmap)
    autocast = autocast_dtype(model, exact)
    probes = {id(m): _Probe(m, autocast) for members in modules.values() for m in members}
    total_loss = _run(model, batches, list(probes.values()), autocast, trained, progress)
    per_cell = {
        key: sum(probes[id(m)].total for m in members) / max(1, len(members)) for key, members in modules.items()
    }
    band_list = layer_bands(tmap.layers, bands)
    grid = _band_grid(tmap, band_list, per_cell)
    strengths, scale = normalized(grid, floor), 1.0
    if keep == "parameters":
        strengths, scale = keep_size(strengths, tmap, band_list)
    return Suggestion(
        equalizer=Equalizer(list(tmap.roles), band_list, strengths),
        sensitivity=grid,
        per_cell=[{"layer": layer, "role": role, "sensitivity": v} for (layer, role), v in per_cell.items()],
        examples=len(examples),
        skipped=skipped,
        tokens=sum(len(e.input_ids) for e in examples),
        trained_tokens=trained,
        loss=total_loss / trained,
        floor=float(floor),
        seconds=round(time.perf_counter() - started, 3),
        keep=keep,
        scale=scale,
    )
