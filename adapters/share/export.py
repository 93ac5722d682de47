"""Export a trained variant: the adapter as a zip, a merged full-precision model, a model card,
or a "vLLM-safe" adapter whose per-module scales are folded into its weights.

The merge always goes into a full-precision (fp32) copy of the base loaded from its original
files, never into 4-bit weights, so the result loads with plain transformers. The vLLM-safe
adapter exists because servers that apply one `lora_alpha / r` per adapter (vLLM, LoRAX,
llama.cpp's converter) ignore PEFT's `rank_pattern` / `alpha_pattern`: a non-uniform equalizer
would be served at the wrong scale there. Nothing here trains or evaluates.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from adapters.cache import publish_dir
from adapters.errors import LoraEqError
from adapters.train.runfolder import VariantInfo

CARD_NAME = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# A LoRA tensor in a saved PEFT state dict: MODULE.lora_A.weight, MODULE.lora_B.bias, MODULE.lora_embedding_A ...
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B|embedding_A|embedding_B)(?:\.(?P<what>weight|bias))?$")
_PREFIX = "base_model.model."


def is_outside(folder: Path) -> bool:
    """An adapter from outside LoRA EQ's runs (adapter_sources.py): PEFT files, no variant.json."""
    return not (Path(folder) / "variant.json").is_file()


def check_variant_dir(folder: Path) -> Path:
    """A finished variant's folder, or an outside adapter's (exported the same way)."""
    info = VariantInfo.at(folder)
    if not info.has_adapter or not (info.folder / "adapter_config.json").is_file():
        raise LoraEqError(f"{folder}: no trained adapter here (adapter_config.json + adapter_model.safetensors)")
    if not is_outside(folder) and info.metrics().get("status") != "done":
        raise LoraEqError(f"{folder}: this variant has not finished training")
    return info.folder


def _outside_card(folder: Path) -> str:
    """The card of an outside adapter: what its adapter_config.json says (LoRA EQ did not train it)."""
    from adapters.cache import read_json

    config = read_json(folder / "adapter_config.json")
    base = config.get("base_model_name_or_path")
    targets = config.get("target_modules")
    lines = ["---", *([f"base_model: {base}"] if base else []), "library_name: peft", "tags: [lora]", "---", "",
             f"# {folder.name}", "", f"A LoRA adapter (PEFT) for **{base or 'an unnamed base'}**, added to LoRA EQ "
             "from outside its runs (not trained by it).", "",
             f"- rank: {config.get('r')}, alpha: {config.get('lora_alpha')}",
             f"- target modules: {', '.join(sorted(targets)) if isinstance(targets, list) else targets}"]
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            lines.append(f"- {key}: {json.dumps(config[key], sort_keys=True)}")
    return "\n".join(lines + [""])


def public_base(base: dict) -> str | None:
    """How anyone else names the base a variant was trained on (its `variant.json` "base"): the Hub
    id (the embedded SmolLM2 GGUF is HuggingFaceTB/SmolLM2-135M-Instruct), else the folder or file
    the user gave. Never the converted copy in LoRA EQ's cache, which exists only on this machine."""
    if base.get("hub_id"):
        return base["hub_id"]
    return base.get("id") or base.get("spec")


def _revision(base: dict) -> str | None:
    """The Hub revision the user pinned (`owner/name@revision`), if any."""
    if base.get("kind") != "hub":
        return None
    return str(base.get("spec") or "").partition("@")[2] or None


def public_config(folder: Path) -> dict:
    """The adapter's adapter_config.json as exported: PEFT saved the local folder the base was
    loaded from (for a converted GGUF, a cache folder); an export names the base as `public_base`
    does, so `PeftModel.from_pretrained` finds it anywhere. An outside adapter keeps its own."""
    config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if is_outside(folder):
        return config
    base = VariantInfo.at(folder).record().get("base", {})
    name = public_base(base)
    if name:
        config["base_model_name_or_path"] = name
        config["revision"] = _revision(base) or config.get("revision")
    return config


def _config_text(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def model_card(folder: Path, results: list[str] | None = None) -> str:
    """A README.md for the adapter: base model, data, equalizer table, hyperparameters, metrics, and
    `results` (the proof's headline and verdict, eval-set pass rates: lines the caller read from
    the run, as `evals/card.py` does) when there are any."""
    from adapters.shape.equalizer import Equalizer, equalizer_table

    if is_outside(folder):
        return _outside_card(Path(folder))
    info = VariantInfo.at(folder)
    variant, metrics = info.record(), info.metrics()
    base = variant.get("base", {})
    data = variant.get("data", {})
    hyper = variant.get("hyper", {})
    hub_id = base.get("hub_id")
    lines = [
        "---",
        *([f"base_model: {hub_id}"] if hub_id else []),
        "library_name: peft",
        "tags: [lora, loraeq]",
        "---",
        "",
        f"# {variant.get('name', folder.name)}",
        "",
        f"A LoRA adapter trained with LoRA EQ on **{base.get('id', 'unknown')}** "
        f"(fingerprint `{base.get('fingerprint', '?')}`, trained on a {variant.get('precision', '?')} base).",
        "",
        "## Data",
        "",
        f"- file: `{Path(str(data.get('file', '?'))).name}` (fingerprint `{data.get('fingerprint', '?')}`)",
        f"- training rows: {data.get('train_rows', '?')}, held-out rows: {data.get('heldout_rows', '?')}",
    ]
    if data.get("categories"):
        lines.append("- categories: " + ", ".join(f"{k} {v}" for k, v in data["categories"].items()))
    lines += ["", "## Equalizer (LoRA strength per layer band x module role)", ""]
    if isinstance(variant.get("equalizer_grid"), dict):
        rows = equalizer_table(Equalizer.from_json(variant["equalizer_grid"]))
        if rows:
            cols = list(rows[0])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", "## Hyperparameters", ""]
    lines += [f"- {k}: {v}" for k, v in hyper.items()]
    lines += ["", "## Training", ""]
    for key in ("steps", "final_loss", "seconds", "trained_tokens", "tokens_per_s"):
        if key in metrics:
            lines.append(f"- {key}: {metrics[key]}")
    if results:
        lines += ["", "## Results", "", *(f"- {line}" for line in results)]
    lines += ["", "## Use", "", "```python", *_use_lines(variant, base), "```", ""]
    return "\n".join(lines)


def _use_lines(variant: dict, base: dict) -> list[str]:
    """How plain transformers + PEFT load the adapter: on a causal LM, or on an encoder's classifier."""
    if variant.get("task") == "classification":
        labels = variant.get("labels") or []
        return [
            "from transformers import AutoModelForSequenceClassification",
            "from peft import PeftModel",
            f"labels = {labels!r}",
            f"base = AutoModelForSequenceClassification.from_pretrained({_base_arguments(base)}, "
            "num_labels=len(labels), id2label=dict(enumerate(labels)))",
            "model = PeftModel.from_pretrained(base, 'path/to/this/folder')  # LoRA + its trained head",
        ]
    return [
        "from transformers import AutoModelForCausalLM",
        "from peft import PeftModel",
        f"base = AutoModelForCausalLM.from_pretrained({_base_arguments(base)})",
        "model = PeftModel.from_pretrained(base, 'path/to/this/folder')",
    ]


def _base_arguments(base: dict) -> str:
    """How plain transformers loads this base: its Hub id, its folder, or a GGUF file in its folder."""
    if base.get("hub_id"):
        return repr(base["hub_id"])
    where = public_base(base) or "path/to/the/base"
    if base.get("kind") == "gguf" or where.lower().endswith(".gguf"):
        path = Path(where)
        return f"{str(path.parent)!r}, gguf_file={path.name!r}"
    return repr(where)


def split_front_matter(card: str) -> tuple[str, str]:
    """(YAML front matter without its fences, the rest) of a model card; ("", card) if it has none."""
    if card.startswith("---\n"):
        head, sep, rest = card[4:].partition("\n---\n")
        if sep:
            return head, rest.lstrip("\n")
    return "", card


def export_adapter_zip(folder: Path, out: Path, results: list[str] | None = None) -> Path:
    """A zip of the adapter in PEFT format (its config naming the base as `public_config` does) plus
    its variant.json, metrics.json and model card (with `results`, see `model_card`)."""
    folder = check_variant_dir(folder)
    out = Path(out)
    if out.suffix != ".zip":
        out = out / f"{folder.name}.zip" if out.is_dir() else out.with_suffix(".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(ADAPTER_CONFIG, _config_text(public_config(folder)))
        for name in (ADAPTER_WEIGHTS, "variant.json", "metrics.json"):
            if (folder / name).is_file():
                z.write(folder / name, name)
        z.writestr(CARD_NAME, model_card(folder, results))
    tmp.replace(out)
    return out


def export_merged(folder: Path, out: Path, base_spec: str | None = None, results: list[str] | None = None) -> Path:
    """The base in fp32 with the adapter merged in, saved as safetensors + tokenizer + card. The
    base is the one the variant was trained on; an outside adapter needs `base_spec`."""
    from peft import PeftModel

    from adapters.base.loading import load_model

    folder = check_variant_dir(folder)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LoraEqError(f"{out}: already exists and is not empty")
    info = VariantInfo.at(folder)
    if is_outside(folder) and base_spec is None:
        raise LoraEqError(f"{folder.name}: an adapter from outside a run: name the base to merge it into")
    record = info.record()
    if record.get("task") == "classification":  # an encoder with the run's labels; the adapter holds the head
        from adapters.base.encoder import load_encoder

        base = load_encoder(base_spec or record.get("base", {}).get("spec"), "fp32", record.get("labels"))
    else:
        base = load_model(base_spec or record.get("base", {}).get("spec"), "fp32")
    if is_outside(folder):
        from .adapter_sources import check_adapter

        check_adapter(folder, base)
    if info.base_fingerprint() not in (None, base.fingerprint):
        raise LoraEqError(f"{folder}: was trained on a different base than {base.source.id}")
    merged = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    with _staged(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        (tmp / CARD_NAME).write_text(model_card(folder, results), encoding="utf-8")
    return out


@contextmanager
def _staged(out: Path):
    """A temporary folder beside `out` to write into, published as `out` in one move when the block
    ends without an error (a reader never sees half an export); removed either way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fold_scales(src: Path, dst: Path) -> Path:
    """A copy of the PEFT LoRA adapter in `src` that any server applying one scale per adapter
    serves exactly as PEFT serves the original: written to the folder `dst`.

    Each module's own scale (alpha_m / r_m, or alpha_m / sqrt(r_m) with `use_rslora`, r_m and
    alpha_m from `rank_pattern` / `alpha_pattern`) is multiplied into its `lora_B` (weight and
    bias); modules of a lower rank are padded with zero rows of `lora_A` and zero columns of
    `lora_B` up to the largest rank R, which adds nothing to B @ A. The config then says
    r = lora_alpha = R (scale 1), no patterns and no rslora. DoRA is refused: its magnitude
    vector is not applied by those servers at all, so no fold makes it exact.
    """
    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    config = _lora_config(src)
    tensors = load_file(src / ADAPTER_WEIGHTS)
    modules = _lora_modules(tensors)
    top = max(tensors[a].shape[0] for a, _ in modules.values())
    out = {k: v for k, v in tensors.items() if not _LORA_KEY.match(k)}
    for module, (a_key, b_key) in modules.items():
        rank = tensors[a_key].shape[0]
        scale = _module_scale(config, module.removeprefix(_PREFIX), rank)
        out[a_key] = _pad(tensors[a_key], 0, top)
        out[b_key] = _pad((tensors[b_key].to(torch.float64) * scale).to(tensors[b_key].dtype), 1, top)
        bias = b_key.rsplit(".", 1)[0] + ".bias" if b_key.endswith(".weight") else None
        if bias in tensors:
            out[bias] = (tensors[bias].to(torch.float64) * scale).to(tensors[bias].dtype)
    config.update(r=top, lora_alpha=top, rank_pattern={}, alpha_pattern={}, use_rslora=False)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(out, dst / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (dst / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dst


def _lora_config(folder: Path) -> dict:
    path = folder / ADAPTER_CONFIG
    if not path.is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise LoraEqError(f"{folder}: no PEFT adapter here ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise LoraEqError(f"{path}: peft_type {config.get('peft_type')!r} is not LORA; only LoRA scales can be folded")
    if config.get("use_dora"):
        raise LoraEqError(f"{path}: a DoRA adapter cannot be made vLLM-safe (those servers do not apply its "
                          "magnitude vector); use the normal export with PEFT")
    if config.get("target_parameters"):
        raise LoraEqError(f"{path}: LoRA on parameters (target_parameters) is not folded: servers with one scale "
                          "per adapter do not load it; use the normal export with PEFT")
    return config


def _lora_modules(tensors: dict) -> dict[str, tuple[str, str]]:
    """module -> (its lora_A key, its lora_B key); anything else LoRA-like (DoRA's magnitude, ...) is refused."""
    parts: dict[str, dict[str, str]] = {}
    for key in tensors:
        match = _LORA_KEY.match(key)
        if match is None:
            if ".lora_" in key:
                raise LoraEqError(f"adapter tensor {key!r}: not a plain LoRA A/B weight, so it cannot be folded")
            continue
        if match["what"] != "bias":
            parts.setdefault(match["module"], {})[match["part"][-1]] = key
    if not parts:
        raise LoraEqError("the adapter has no LoRA weights (lora_A / lora_B)")
    broken = next((m for m, p in parts.items() if set(p) != {"A", "B"}), None)
    if broken:
        raise LoraEqError(f"module {broken!r}: has lora_{''.join(parts[broken])} without its pair")
    return {m: (p["A"], p["B"]) for m, p in parts.items()}


def _module_scale(config: dict, name: str, rank: int) -> float:
    """The scale PEFT gives module `name` (its rank/alpha from the patterns, as PEFT matches them)."""
    from peft.utils.other import get_pattern_key

    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    expected = ranks.get(get_pattern_key(ranks.keys(), name), config["r"])
    if expected != rank:
        raise LoraEqError(f"module {name!r}: its weights have rank {rank} but the config says {expected}")
    alpha = alphas.get(get_pattern_key(alphas.keys(), name), config["lora_alpha"])
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _pad(tensor, dim: int, size: int):
    """`tensor` with zeros appended along `dim` up to `size`."""
    import torch

    missing = size - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim).contiguous()


def export_vllm_safe(folder: Path, out: Path, results: list[str] | None = None) -> Path:
    """A finished variant's adapter with its scales folded in (`fold_scales`), written to the
    folder `out` with its variant.json, metrics.json and model card (with `results`); its config
    names the base as `public_config` does."""
    folder = check_variant_dir(folder)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LoraEqError(f"{out}: already exists and is not empty")
    with _staged(out) as tmp:
        fold_scales(folder, tmp)
        folded = json.loads((tmp / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        named = {k: public_config(folder).get(k) for k in ("base_model_name_or_path", "revision")}
        (tmp / ADAPTER_CONFIG).write_text(_config_text({**folded, **named}), encoding="utf-8")
        for name in ("variant.json", "metrics.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        (tmp / CARD_NAME).write_text(model_card(folder, results) + VLLM_NOTE, encoding="utf-8")
    return out


VLLM_NOTE = """
## Serving

This copy has each module's LoRA scale folded into its `lora_B` weights and one uniform
`r = lora_alpha`, so servers that apply one scale per adapter (vLLM, LoRAX, llama.cpp's
`convert_lora_to_gguf.py`) give the same outputs as PEFT gives with the original adapter.
"""
