"""Export a trained variant: the adapter as a zip, a merged full-precision model, a model card.

The merge always goes into a full-precision (fp32) copy of the base loaded from its original
files, never into 4-bit weights, so the result loads with plain transformers. Nothing here
trains or evaluates.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from .cache import publish_dir
from .errors import LoraEqError
from .runfolder import VariantInfo

CARD_NAME = "README.md"


def is_outside(folder: Path) -> bool:
    """An adapter from outside LoRA EQ's runs (outside.py): PEFT files, no variant.json."""
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
    from .cache import read_json

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


def model_card(folder: Path) -> str:
    """A README.md for the adapter: base model, data, equalizer table, hyperparameters, metrics."""
    from .equalizer import Equalizer, equalizer_table

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
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "from peft import PeftModel",
        f"base = AutoModelForCausalLM.from_pretrained({_base_arguments(base)})",
        "model = PeftModel.from_pretrained(base, 'path/to/this/folder')",
        "```",
        "",
    ]
    return "\n".join(lines)


def _base_arguments(base: dict) -> str:
    """How plain transformers loads this base: its Hub id, its folder, or a GGUF file in its folder."""
    if base.get("hub_id"):
        return repr(base["hub_id"])
    where = base.get("id") or "path/to/the/base"
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


def export_adapter_zip(folder: Path, out: Path) -> Path:
    """A zip of the adapter in PEFT format plus its variant.json, metrics.json and model card."""
    folder = check_variant_dir(folder)
    out = Path(out)
    if out.suffix != ".zip":
        out = out / f"{folder.name}.zip" if out.is_dir() else out.with_suffix(".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in ("adapter_config.json", "adapter_model.safetensors", "variant.json", "metrics.json"):
            if (folder / name).is_file():
                z.write(folder / name, name)
        z.writestr(CARD_NAME, model_card(folder))
    tmp.replace(out)
    return out


def export_merged(folder: Path, out: Path, base_spec: str | None = None) -> Path:
    """The base in fp32 with the adapter merged in, saved as safetensors + tokenizer + card. The
    base is the one the variant was trained on; an outside adapter needs `base_spec`."""
    from peft import PeftModel

    from .loading import load_model

    folder = check_variant_dir(folder)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LoraEqError(f"{out}: already exists and is not empty")
    info = VariantInfo.at(folder)
    if is_outside(folder) and base_spec is None:
        raise LoraEqError(f"{folder.name}: an adapter from outside a run: name the base to merge it into")
    base = load_model(base_spec or info.record().get("base", {}).get("spec"), "fp32")
    if is_outside(folder):
        from .outside import check_adapter

        check_adapter(folder, base)
    if info.base_fingerprint() not in (None, base.fingerprint):
        raise LoraEqError(f"{folder}: was trained on a different base than {base.source.id}")
    merged = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        (tmp / CARD_NAME).write_text(model_card(folder), encoding="utf-8")
        if out.exists():
            out.rmdir()
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
