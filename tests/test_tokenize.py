"""Assistant-only labels from the model's own chat template."""

from __future__ import annotations

import pytest
from conftest import tiny_tokenizer

from adapters.base.tokenize import IGNORE, encode_chat, encode_prompt, render

CHAT = [
    {"role": "system", "content": "w1 w2"},
    {"role": "user", "content": "hello w3"},
    {"role": "assistant", "content": "paris w4"},
    {"role": "user", "content": "w5 ?"},
    {"role": "assistant", "content": "w6 w7 w8"},
]


def _labelled(enc, tok) -> list[str]:
    return tok.convert_ids_to_tokens([t for t in enc.labels if t != IGNORE])


def test_only_assistant_turns_carry_labels():
    tok = tiny_tokenizer()
    enc = encode_chat(tok, CHAT)
    assert _labelled(enc, tok) == ["paris", "w4", "<|im_end|>", "w6", "w7", "w8", "<|im_end|>"]
    assert len(enc.labels) == len(enc.input_ids) and enc.cut == 0
    for i, label in enumerate(enc.labels):
        assert label in (IGNORE, enc.input_ids[i])


def test_max_length_cuts_and_counts():
    tok = tiny_tokenizer()
    full = encode_chat(tok, CHAT)
    short = encode_chat(tok, CHAT, max_length=10)
    assert len(short.input_ids) == 10 and short.cut == len(full.input_ids) - 10
    assert short.input_ids == full.input_ids[:10]


def test_prompt_ends_with_the_generation_prompt():
    tok = tiny_tokenizer()
    ids = encode_prompt(tok, CHAT[:2])
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["<|im_start|>", "assistant"]


def test_tokenizer_without_template_uses_chatml():
    tok = tiny_tokenizer()
    tok.chat_template = None
    assert render(tok, CHAT[:3]).startswith("<|im_start|>system\nw1 w2<|im_end|>\n")
    assert _labelled(encode_chat(tok, CHAT[:3]), tok)[:2] == ["paris", "w4"]


@pytest.mark.integration
def test_real_template_labels_the_answer_and_its_end(real_model):
    tok = real_model.tokenizer
    enc = encode_chat(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Crisp leaves fall."}])
    assert tok.decode([t for t in enc.labels if t != IGNORE]) == "Crisp leaves fall.<|im_end|>\n"
