"""The training loss computed only where there is something to learn: the assistant's tokens.

A causal LM's forward computes logits at every position, `batch x length x vocabulary` (for
SmolLM2, 49,152 columns: at batch 8 x 512 tokens, 800 MB in fp32 before the softmax and its
gradient double it), and the loss then ignores every prompt and padding position. Here the
decoder runs as usual, the output layer sees only the hidden states whose next token is labelled,
in chunks whose logits are recomputed in the backward pass instead of kept. The result is the
same cross-entropy Hugging Face computes (fp32 logits, summed, divided by the labelled tokens or
by the Trainer's `num_items_in_batch`), in a fraction of the memory and without the output
layer's work on prompt tokens.

Models whose logits are more than the output layer's product (soft-capped, scaled, with a router
loss) keep the model's own loss: `label_only_reason` says why. This is the `label_loss` fast path
(fastpath.py): switched off by LORAEQ_FAST_PATHS, or on a transformers release it was not tested
on (it follows the Trainer's loss arithmetic), the model's own loss runs too.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from adapters.base.tokenize import IGNORE
from adapters.fastpath import LABEL_LOSS, note, off_reason
from adapters.limits import LOSS_CHUNK

CHUNK = LOSS_CHUNK  # labelled positions whose logits exist at once
_LOGIT_CHANGES = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_router_logits")


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def label_only_reason(model) -> str | None:
    """None when the loss may be computed from the decoder's hidden states and the output layer;
    otherwise what stands in the way (noted for `fastpath.recording`)."""
    reason = off_reason(LABEL_LOSS) or _model_reason(model)
    if reason:
        note(LABEL_LOSS, reason)
    return reason


def _model_reason(model) -> str | None:
    inner = _inner(model)
    if not (hasattr(inner, "get_decoder") and hasattr(inner, "get_output_embeddings")):
        return f"{type(inner).__name__} has no separate decoder and output layer"
    if inner.get_output_embeddings() is None:
        return f"{type(inner).__name__} has no output layer"
    decoder = inner.get_decoder()
    taken = set(inspect.signature(decoder.forward).parameters) if decoder is not None else set()
    if not {"input_ids", "attention_mask"} <= taken:
        return f"{type(inner).__name__}'s decoder takes no input_ids and attention_mask"
    config = inner.config
    for name in _LOGIT_CHANGES:
        value = getattr(config, name, None)
        if value not in (None, False, 0, 1, 1.0):
            return f"its config sets {name}={value!r}: the logits are more than the output layer's product"
    return None


def _chunk_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def label_only_loss(model, batch: dict, num_items_in_batch=None) -> torch.Tensor:
    """Mean cross-entropy of the labelled next tokens (`labels` != IGNORE), as the model's own
    loss computes it; summed and divided by `num_items_in_batch` when given (gradient accumulation)."""
    note(LABEL_LOSS, None)
    inner = _inner(model)
    labels = batch["labels"]
    hidden = inner.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                 use_cache=False).last_hidden_state
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE
    chosen, wanted = hidden[:, :-1][keep], targets[keep]
    head = inner.get_output_embeddings()
    total = hidden[:, :0].sum().float()  # zero, on the graph even for a batch with nothing labelled
    for start in range(0, len(wanted), CHUNK):
        h, t = chosen[start:start + CHUNK], wanted[start:start + CHUNK]
        if torch.is_grad_enabled() and len(wanted) > CHUNK:
            total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t)
    count = num_items_in_batch if num_items_in_batch is not None else max(len(wanted), 1)
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count
