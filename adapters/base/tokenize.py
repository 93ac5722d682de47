"""Chat conversations -> token ids with labels on assistant tokens only.

The model's own chat template renders the conversation; the characters of each assistant turn
(from the end of the generation prompt to the end of that turn, including its end-of-turn token)
are found by rendering prefixes of the conversation, and mapped to tokens through the fast
tokenizer's offsets. Every other token gets the label -100, so the loss is on assistant tokens
only. Works for any template whose renders of a conversation's prefixes are prefixes of its
render, which holds for the chat templates in use. It does not batch or pad (the collator does).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.errors import LoraEqError

IGNORE = -100
# Used only when a tokenizer has no chat template of its own.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: int  # tokens dropped at max_length

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
    )


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True))
        end = len(render(tokenizer, messages[: i + 1]))
        if not text.startswith(render(tokenizer, messages[: i + 1])):
            raise LoraEqError("the model's chat template does not render conversations prefix by prefix")
        spans.append((start, end))
    return text, spans


def encode_chat(tokenizer, messages: list[dict], max_length: int | None = None) -> Encoded:
    """Token ids of a conversation and labels that are -100 except on assistant turns."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    span = 0
    for t, (a, b) in enumerate(offsets):
        while span < len(spans) and spans[span][1] <= a:
            span += 1
        if span < len(spans) and b > spans[span][0] and a < spans[span][1]:
            labels[t] = ids[t]
    cut = 0
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, cut)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation ready for the assistant's next turn (for generation)."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
