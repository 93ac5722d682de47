"""Load a base causal LM in a chosen precision: 4-bit NF4 (bitsandbytes), bf16 or fp32.

The loaded model is frozen (no gradients, eval mode) and the files it came from are only read.
`auto` precision picks NF4 on CUDA or when full precision would not fit in free memory, and
otherwise the fastest full precision this CPU has; the choice comes with its reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.errors import LoraEqError

from . import attention
from .models import ModelSource, fingerprint, materialize, resolve_source

PRECISIONS = ("auto", "nf4", "bf16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# Full precision must leave this much head room in free memory (activations, optimizer, UI).
_FIT_MARGIN = 1.5
CAUSAL_KIND, ENCODER_KIND = "causal", "encoder"  # what a base is: a causal LM, or an encoder (encoder.py)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "nf4" | "bf16" | "fp32"
    reason: str


@dataclass
class LoadedModel:
    """A frozen base model with its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    folder: Path
    fingerprint: str
    precision: str
    precision_reason: str
    device: str
    load_seconds: float
    memory_bytes: int
    kind: str = CAUSAL_KIND
    labels: list[str] | None = None  # an encoder's class names, in the head's order

    def info(self) -> dict:
        return {
            "model": {"id": self.source.id, "fingerprint": self.fingerprint},
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "device": self.device,
            "memory_bytes": self.memory_bytes,
            "load_seconds": round(self.load_seconds, 3),
        }


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    import psutil

    return psutil.virtual_memory().available


def count_checkpoint_params(folder: Path) -> int:
    """Parameters in a folder's safetensors files, read from their headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                n = 1
                for d in st.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def choose_precision(requested: str, n_params: int, device: str) -> PrecisionChoice:
    """Resolve `auto` and say why; an explicit choice is kept as it is."""
    if requested not in PRECISIONS:
        raise LoraEqError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return PrecisionChoice(requested, "asked for")
    if device.startswith("cuda"):
        return PrecisionChoice("nf4", "CUDA device: 4-bit NF4 keeps the base small and fast")
    full = "bf16" if cpu_has_fast_bf16() else "fp32"
    need = n_params * (2 if full == "bf16" else 4)
    free = free_memory_bytes(device)
    if need * _FIT_MARGIN > free:
        return PrecisionChoice(
            "nf4", f"{full} needs {need / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB free: 4-bit NF4"
        )
    if full == "bf16":
        return PrecisionChoice("bf16", "CPU has native bf16 (AVX512-BF16/AMX): bf16 is its fastest precision")
    return PrecisionChoice("fp32", "CPU has no native bf16: fp32 is its fastest precision")


def quantization_config(device: str):
    """The bitsandbytes NF4 config we use everywhere: NF4 with double quantization."""
    try:
        import bitsandbytes  # noqa: F401  (fail here, with a clear message, not deep in loading)
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise LoraEqError(f"nf4 needs the bitsandbytes package ({e})") from None
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        compute = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def model_kind(folder: Path) -> str:
    """`encoder` when the folder holds a bidirectional encoder (a masked-LM family with a
    sequence-classification class: BERT, RoBERTa, DeBERTa-v2, ModernBERT, ...), else `causal`."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    kind = raw.get("model_type")
    causal = any(a and a.endswith(("ForCausalLM", "LMHeadModel")) for a in raw.get("architectures") or [])
    encoder = kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and kind in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    return ENCODER_KIND if encoder and not causal and not raw.get("is_encoder_decoder") else CAUSAL_KIND


def check_causal_lm(folder: Path, trust_remote_code: bool):
    """The model's config, or a clear error when it is not a causal language model."""
    import json

    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    custom = raw.get("model_type") not in CONFIG_MAPPING_NAMES and "auto_map" in raw
    if custom and not trust_remote_code:
        # Checked here: transformers would otherwise ask on the terminal and wait for an answer.
        raise LoraEqError(f"{folder}: runs its own code; pass --trust-remote-code if you trust it")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise LoraEqError(f"{folder}: unreadable config ({str(e).splitlines()[0]})") from None
    if custom:
        if "AutoModelForCausalLM" not in raw["auto_map"]:
            raise LoraEqError(f"{folder}: its own code has no AutoModelForCausalLM, so it is not a causal LM")
        return config
    causal_class = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    # A BERT checkpoint maps to BertLMHeadModel, but a saved BertModel/BertForMaskedLM is an encoder.
    architectures = raw.get("architectures") or [causal_class]
    if causal_class is None or not any(a and a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        if model_kind(folder) == ENCODER_KIND:
            raise LoraEqError(f"{folder}: a {config.model_type!r} encoder, not a causal language model; "
                              "encoders train classifiers (loraeq train --task classification)")
        what = ", ".join(a for a in architectures if a) or "no AutoModelForCausalLM"
        raise LoraEqError(
            f"{folder}: a {config.model_type!r} model ({what}) is not a causal language model"
        )
    return config


def load_frozen(model_class, folder, source, precision: str, device: str, **kwargs):
    """`model_class.from_pretrained` and the tokenizer from `folder`, the model on `device` (nf4 is
    placed by its device map), in eval mode with every weight frozen; a load error in one line."""
    from transformers import AutoTokenizer

    try:
        model = model_class.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=kwargs.get("trust_remote_code", False))
    except (OSError, ValueError, RuntimeError) as e:
        raise LoraEqError(f"{source.id}: cannot load ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if precision != "nf4":
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    attention.install(model)
    return model, tokenizer


def load_model(
    spec: str | None = None,
    precision: str = "auto",
    *,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """Load the base model named by `spec` (see `models.resolve_source`), frozen."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    device = device or default_device()
    source = resolve_source(spec)
    folder = materialize(source, trust_remote_code)
    config = check_causal_lm(folder, trust_remote_code)
    choice = choose_precision(precision, count_checkpoint_params(folder), device)
    kwargs: dict = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
    if choice.precision == "nf4":
        kwargs.update(quantization_config=quantization_config(device), device_map={"": device})
        kwargs["dtype"] = kwargs["quantization_config"].bnb_4bit_compute_dtype
    else:
        kwargs["dtype"] = _DTYPES[choice.precision]
    model, tokenizer = load_frozen(AutoModelForCausalLM, folder, source, choice.precision, device,
                                   config=config, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        folder=folder,
        fingerprint=fingerprint(source, folder),
        precision=choice.precision,
        precision_reason=choice.reason,
        device=device,
        load_seconds=time.perf_counter() - started,
        memory_bytes=int(model.get_memory_footprint()),
    )


def load_tokenizer(spec: str | None = None, *, trust_remote_code: bool = False):
    """Only the tokenizer (with its chat template) of the model named by `spec`: no weights."""
    from transformers import AutoTokenizer

    folder = materialize(resolve_source(spec), trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise LoraEqError(f"{folder}: cannot load its tokenizer ({str(e).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
