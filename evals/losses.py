"""Per-example answer losses of the base and every variant, and how far each variant moved from the base.

For a list of encoded conversations (`adapters.base.tokenize.encode_chat`: labels on assistant tokens
only) each model named by an adapter id gets, per example, the mean negative log-likelihood of the
assistant tokens and each token's log-probability (for Min-K% Prob). Batches are right-padded and
sorted by length; one forward per batch and model, the model picked with PEFT's
`adapter_names=[id] * batch`. Only the logits of answer positions are computed (`logits_to_keep`).
With `divergence=True` the same forwards also give, per variant, the mean KL(base || variant) of the
next-token distributions at every answer position and the largest |logit difference| there.
It does not generate text nor decide anything.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from adapters.base.tokenize import IGNORE, Encoded
from adapters.errors import LoraEqError
from adapters.infer.adapter_rows import BASE_ROW

from .adapter_set import AdapterSet
from .stats import kl_divergence

# A batch holds at most this many input tokens and this many answer positions (whose logits,
# vocabulary-wide, dominate memory: 2,048 x 49,152 floats is 400 MB).
TOKEN_BUDGET = 8192
POSITION_BUDGET = 2048
MAX_ROWS = 32

Progress = Callable[[int, int], None]


@dataclass
class Scores:
    """One model's scores on conversations, in the order they were given."""

    loss: np.ndarray  # mean NLL of the assistant tokens, per example (nats)
    token_logprobs: list[np.ndarray]  # log-probability of each assistant token, per example

    def __post_init__(self) -> None:
        if len(self.loss) != len(self.token_logprobs):
            raise LoraEqError(f"{len(self.loss)} losses for {len(self.token_logprobs)} examples")

    @property
    def mean_loss(self) -> float:
        """Mean over examples of the per-example loss: every example weighs the same."""
        return float(np.mean(self.loss))


@dataclass
class Divergence:
    """How far a variant's next-token distributions are from the base's, over answer positions."""

    kl_mean: float  # mean KL(base || variant), nats per position
    max_logit_diff: float  # largest |logit_variant - logit_base| over positions and vocabulary
    positions: int
    logit_resolution: float  # the logits' rounding step at their largest value (dtype eps x max |logit|)

    def __post_init__(self) -> None:
        if self.positions < 1:
            raise LoraEqError("a divergence needs at least one answer position")


def plan_batches(lengths: list[int], answers: list[int]) -> list[list[int]]:
    """Indices grouped into batches, longest first, within the token and position budgets."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        rows = len(current) + 1
        width = max([lengths[j] for j in current] + [lengths[i]])
        span = max([answers[j] for j in current] + [answers[i]])
        if current and (rows > MAX_ROWS or rows * width > TOKEN_BUDGET or rows * span > POSITION_BUDGET):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _answer_span(e: Encoded) -> tuple[int, int]:
    """Positions [a, b) whose next token is an assistant token."""
    labeled = [t for t, label in enumerate(e.labels) if label != IGNORE]
    if not labeled or labeled[0] == 0:
        raise LoraEqError("an example has no assistant token to score")
    return labeled[0] - 1, labeled[-1]


def _pad(examples: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return ids, labels, mask


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (most causal LMs in transformers >= 4.50)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _window_logits(adapters: AdapterSet, ids, mask, name: str, window: range, keep: bool) -> torch.Tensor:
    positions = torch.arange(window.start, window.stop, device=adapters.device)
    kwargs = {"logits_to_keep": positions} if keep else {}
    out = adapters.model(
        input_ids=ids.to(adapters.device),
        attention_mask=mask.to(adapters.device),
        adapter_names=[name] * len(ids),
        use_cache=False,
        **kwargs,
    )
    logits = out.logits if keep else out.logits[:, window.start : window.stop]
    return logits.detach().cpu()


def score(
    adapters: AdapterSet,
    encoded: list[Encoded],
    names: list[str],
    *,
    divergence: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, Scores], dict[str, Divergence]]:
    """Scores of every model in `names` on `encoded`, and (with `divergence`) each variant's distance
    from the base, which must then be among `names`."""
    if not encoded:
        raise LoraEqError("nothing to score")
    if divergence and BASE_ROW not in names:
        raise LoraEqError(f"the divergence from the base needs {BASE_ROW!r} among the models scored")
    spans = [_answer_span(e) for e in encoded]
    batches = plan_batches([len(e.input_ids) for e in encoded], [b - a for a, b in spans])
    keep = _keeps_logits(adapters.model)
    order = [BASE_ROW] + [n for n in names if n != BASE_ROW] if BASE_ROW in names else list(names)
    losses = {n: [None] * len(encoded) for n in order}
    logprobs = {n: [None] * len(encoded) for n in order}
    moved = {n: _Moved() for n in order if n != BASE_ROW} if divergence else {}
    for done, batch in enumerate(batches):
        ids, labels, mask = _pad([encoded[i] for i in batch], adapters.tokenizer.pad_token_id)
        window = range(min(spans[i][0] for i in batch), max(spans[i][1] for i in batch))
        targets = labels[:, window.start + 1 : window.stop + 1]
        answer = targets != IGNORE
        base_logits = None
        with torch.inference_mode():
            for name in order:
                logits = _window_logits(adapters, ids, mask, name, window, keep)
                token_lp = _token_logprobs(logits, targets)
                for row, i in enumerate(batch):
                    lp = token_lp[row][answer[row]].numpy().astype(np.float64)
                    logprobs[name][i] = lp
                    losses[name][i] = float(-lp.mean())
                if name == BASE_ROW and divergence:
                    base_logits = logits
                elif divergence:
                    moved[name].add(base_logits, logits, answer)
        if progress:
            progress(done + 1, len(batches))
    scores = {n: Scores(np.array(losses[n]), logprobs[n]) for n in order}
    return scores, {n: m.result() for n, m in moved.items()}


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position; padding targets read token 0 and are masked out later."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


class _Moved:
    """Accumulates KL and |logit difference| over the batches of one variant."""

    def __init__(self) -> None:
        self.kl_sum, self.positions, self.max_diff, self.resolution = 0.0, 0, 0.0, 0.0

    def add(self, base: torch.Tensor, variant: torch.Tensor, answer: torch.Tensor) -> None:
        p, q = base[answer].float(), variant[answer].float()
        self.kl_sum += float(kl_divergence(p.numpy(), q.numpy()).sum())
        self.positions += int(answer.sum())
        self.max_diff = max(self.max_diff, float((q - p).abs().max()))
        eps = torch.finfo(base.dtype).eps if base.dtype.is_floating_point else 0.0
        self.resolution = max(self.resolution, eps * float(p.abs().max()))

    def result(self) -> Divergence:
        return Divergence(self.kl_sum / max(self.positions, 1), self.max_diff, self.positions, self.resolution)
