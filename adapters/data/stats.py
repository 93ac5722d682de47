"""Token lengths of examples with the chosen model's tokenizer and chat template.

A chat row is measured as the model will see it in training: rendered by the tokenizer's chat
template (which may add a default system prompt), then tokenized. A plain-text row is its text
alone. Rendering is per row (a template may refuse one row); tokenizing is batched, which is what
makes a fast tokenizer fast. Long rows are warned about, never cut or dropped here: cutting is the
trainer's business, and the report only says how many tokens would be lost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .records import Dataset, Example, Rejected, RowIssue

_BATCH = 1024


def render(messages: list[dict[str, str]], tokenizer, plain: bool) -> str:
    """The text the model trains on for one row."""
    if plain:
        return messages[-1]["content"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    # No template (a base model): a plain transcript, so lengths are still meaningful.
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def count_tokens(
    examples: Sequence[Example], tokenizer, plain: bool = False
) -> tuple[list[int | None], dict[int, str]]:
    """Token count per example (None where the template refused it) and {index: why refused}."""
    texts: list[str] = []
    refused: dict[int, str] = {}
    for i, e in enumerate(examples):
        try:
            texts.append(render(e.messages, tokenizer, plain))
        except Exception as err:  # jinja TemplateError, or whatever the template raises for this row
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            refused[i] = f"the model's chat template refuses it: {why}"
            texts.append("")
    counts: list[int | None] = []
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        counts.extend(len(x) for x in ids)
    return [None if i in refused else n for i, n in enumerate(counts)], refused


def with_token_counts(dataset: Dataset, tokenizer, max_length: int | None = None) -> Dataset:
    """`dataset` with every example's token count; rows the template refuses move to the rejects,
    and rows longer than `max_length` get a warning with the number of tokens that would be cut."""
    counts, refused = count_tokens(dataset.examples, tokenizer, plain=dataset.format == "text")
    kept: list[Example] = []
    rejected = list(dataset.rejected)
    warnings: list[RowIssue] = []
    for i, (example, n) in enumerate(zip(dataset.examples, counts)):
        if n is None:
            rejected.append(Rejected(example.row, [RowIssue(example.row, None, refused[i])], example.to_json()))
            continue
        kept.append(replace(example, tokens=n))
        if max_length is not None and n > max_length:
            why = f"{n} tokens: {n - max_length} would be cut at max_length {max_length}"
            warnings.append(RowIssue(example.row, None, why))
    return Dataset(
        path=dataset.path,
        file_type=dataset.file_type,
        format=dataset.format,
        examples=kept,
        rejected=sorted(rejected, key=lambda r: r.row),
        warnings=warnings,
        rows_in=dataset.rows_in,
        max_length=max_length,
        notes=dataset.notes,
    )
