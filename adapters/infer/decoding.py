"""Token-by-token decoding of a batch of prompts with a KV cache: left padding, a seed and a stop per row.

`decode` runs one prefill over the left-padded prompts, then one forward per new token for the
rows still going, through a `RowRouter` (adapter_rows.py) that knows which adapter each row uses. Every row
picks its next token from its own logits only: greedily, or by sampling with its own
`torch.Generator`, so a row's tokens depend on its prompt, its adapter and its seed, never on
which other rows share the batch (that is what makes a column reproducible, and a batched answer
equal to the same column asked alone). Position ids follow each row's real tokens, so left
padding does not shift them. A row ends at one of the stop tokens or at `max_new_tokens`, and then
leaves the batch: its cache rows are dropped and later steps compute only the rows still going.

This module knows nothing about adapters, chat templates or text: token ids in, token ids out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

from adapters.errors import LoraEqError


@dataclass(frozen=True)
class Sampling:
    """How every column picks its tokens (the seed is per column: see `engine.column_seed`)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (the most likely token, no randomness)
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens whose mass reaches top_p
    seed: int = 0  # the run's seed; each column derives its own from it

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise LoraEqError(f"max_new_tokens={n!r}: must be a whole number >= 1")
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise LoraEqError(f"temperature={t!r}: must be a finite number >= 0 (0 is greedy)")
        p = self.top_p
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1:
            raise LoraEqError(f"top_p={p!r}: must be in (0, 1]")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise LoraEqError(f"seed={self.seed!r}: must be a whole number")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Step:
    """What one decoding step produced: a token for every row still going, and who finished."""

    tokens: dict[int, int]  # row -> its new token
    finished: dict[int, str]  # row -> "stop" (its token is a stop token) or "length"


class RowRouter(Protocol):
    """One forward of the batch with each row's own adapter (adapter_rows.py)."""

    config: object

    def forward(self, **inputs) -> torch.Tensor:
        """The last position's logits, float32, one row per batch row. `cache` is the KV cache
        (the router hands it to the model under the keyword its transformers version takes)."""
        ...

    def keep(self, rows: torch.Tensor) -> None:
        """Only these rows (indices into the current batch) stay in the batch."""
        ...


def left_pad(prompts: list[list[int]], pad_id: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded id tensor and its attention mask (0 on padding)."""
    if not prompts or any(not p for p in prompts):
        raise LoraEqError("every row needs a non-empty prompt")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One row's next token from its float32 logits."""
    if sampling.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        ordered, order = torch.sort(probs, descending=True)
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop = (torch.cumsum(ordered, dim=-1) - ordered) >= sampling.top_p
        probs = torch.zeros_like(probs).scatter(-1, order, ordered.masked_fill(drop, 0.0))
    return int(torch.multinomial(probs, 1, generator=generator))


def pick_all(logits: torch.Tensor, sampling: Sampling, generators: list[torch.Generator | None]) -> list[int]:
    """Every row's next token; greedy takes one argmax over the batch (row by row it is the same)."""
    if sampling.greedy:
        return logits.argmax(dim=-1).tolist()
    return [pick(row, sampling, g) for row, g in zip(logits, generators)]


def new_cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


@torch.no_grad()
def decode(
    router: RowRouter,
    prompts: list[list[int]],
    sampling: Sampling,
    *,
    stop_ids: set[int],
    pad_id: int,
    generators: list[torch.Generator | None] | None = None,
    device: str = "cpu",
) -> Iterator[Step]:
    """Yield one `Step` per new token position until every row has finished."""
    generators = generators or [None] * len(prompts)
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(router.config)
    rows = list(range(len(prompts)))  # original row of each batch position
    logits = router.forward(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache)
    for step in range(sampling.max_new_tokens):
        tokens = dict(zip(rows, pick_all(logits, sampling, [generators[row] for row in rows])))
        last = step + 1 == sampling.max_new_tokens
        finished = {r: "stop" if t in stop_ids else "length" for r, t in tokens.items() if t in stop_ids or last}
        yield Step(tokens, finished)
        going = [j for j, row in enumerate(rows) if row not in finished]
        if not going:
            return
        if len(going) < len(rows):
            keep = torch.tensor(going, device=ids.device)
            cache.batch_select_indices(keep)
            router.keep(keep)
            mask, positions = mask[keep], positions[keep]
            rows = [rows[j] for j in going]
        ids = torch.tensor([[tokens[row]] for row in rows], device=ids.device)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        positions = positions[:, -1:] + 1
        logits = router.forward(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache)
