"""Greedy answers of a run's models to prompts: how the proof and the recall check let them speak.

`greedy_generate` answers prompt i with adapter `adapter_names[i]` of an `AdapterSet`, each
adapter's rows in batches of their own (`plan_answer_batches`), so an answer never depends on
which other variants share the call; `answer_budget` sizes the answers from their references.
Nothing here scores or judges an answer.
"""

from __future__ import annotations

from adapters.base.tokenize import encode_prompt
from adapters.errors import LoraEqError
from adapters.infer.adapter_rows import BASE_ROW

from .adapter_set import AdapterSet

GENERATE_BATCH = 64  # rows per decode: bigger batches amortize the per-step overhead



def greedy_generate(
    adapters: AdapterSet,
    prompts: list[list[dict]],
    adapter_names: list[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = GENERATE_BATCH,
) -> list[str]:
    """Greedy answers, prompt i answered by adapter `adapter_names[i]`.

    Each adapter's rows are decoded in batches of their own (`plan_answer_batches`), laid out the
    same way for every adapter: a row's answer then depends on its adapter and its prompt's batch
    only, never on which other variants share the call. So an adapter that is numerically the base
    (a 0-step LoRA) answers exactly like the base, and the base's answers can be cached
    (`base_cache.py`). Decoding is `adapters.infer.decoding.decode` through the fused router (plain LoRA;
    PEFT's own per-row path otherwise): a finished row leaves the batch at once."""
    from adapters.infer.engine import stop_token_ids

    if len(prompts) != len(adapter_names):
        raise LoraEqError(f"{len(prompts)} prompts for {len(adapter_names)} adapter names")
    unknown = sorted(set(adapter_names) - set(adapters.names))
    if unknown:
        raise LoraEqError(f"adapter {unknown[0]!r} is not in this set (it has {', '.join(adapters.names)})")
    ids = [encode_prompt(adapters.tokenizer, p) for p in prompts]
    return greedy_ids(adapters, ids, adapter_names, stop_token_ids(adapters.tokenizer, adapters.model),
                       max_new_tokens, batch_size)


def greedy_ids(adapters: AdapterSet, ids: list[list[int]], adapter_names: list[str], stop_ids: set[int],
                max_new_tokens: int, batch_size: int, router: str | None = None) -> list[str]:
    """`greedy_generate` on prompts already encoded. `router` names one of `ROUTERS` for every
    batch (a model still being trained decodes through "active", its one adapter); by default the fused router where
    the adapter allows it."""
    from adapters.infer.adapter_rows import ROUTERS, fusable
    from adapters.infer.decoding import Sampling, decode

    tok = adapters.tokenizer
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
    answers = [""] * len(ids)
    for name, batch in plan_answer_batches(ids, adapter_names, batch_size):
        backend = router or ("fused" if name == BASE_ROW or fusable(adapters.model, name) is None else "peft")
        rows = ROUTERS[backend](adapters.model, [name] * len(batch))
        tokens: list[list[int]] = [[] for _ in batch]
        try:
            for step in decode(rows, [ids[i] for i in batch], sampling, stop_ids=stop_ids,
                               pad_id=tok.pad_token_id, device=adapters.device):
                for row, token in step.tokens.items():
                    if step.finished.get(row) != "stop":
                        tokens[row].append(token)
        finally:
            rows.close()
        for i, row_tokens in zip(batch, tokens):
            answers[i] = tok.decode(row_tokens, skip_special_tokens=True).strip()
    return answers


def plan_answer_batches(ids: list[list[int]], adapter_names: list[str],
                        batch_size: int) -> list[tuple[str, list[int]]]:
    """(adapter, row indices) batches: each adapter's rows on their own, shortest prompts first
    (equal prompts together, ties in row order), `batch_size` at most. Two adapters given the same
    prompts get the same batches, whatever else is in the call."""
    by_adapter: dict[str, list[int]] = {}
    for i, name in enumerate(adapter_names):
        by_adapter.setdefault(name, []).append(i)
    batches = []
    for name, rows in by_adapter.items():
        order = sorted(rows, key=lambda i: (len(ids[i]), ids[i]))
        batches += [(name, order[k : k + batch_size]) for k in range(0, len(order), batch_size)]
    return batches


def answer_budget(tokenizer, references: list[str]) -> int:
    """New tokens to generate: 1.5 x the longest reference plus 8, between 16 and 256.

    An answer is compared with its reference; text far beyond the reference's length adds little
    to that comparison, while a base that rambles to the limit sets the time of every batch."""
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    return int(min(256, max(16, 1.5 * longest + 8)))
