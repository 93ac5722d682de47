"""Export a trained variant: the adapter as a zip, a merged full-precision model, a model card.

The merge always goes into a full-precision (fp32) copy of the base loaded from its original
files, never into 4-bit weights, so the result loads with plain transformers. Nothing here
trains or evaluates.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from .cache import publish_dir
from .errors import LoraEqError
from .runfolder import VariantInfo

CARD_NAME = "README.md"


def check_variant_dir(folder: Path) -> Path:
    info = VariantInfo.at(folder)
    if not info.has_adapter or not (info.folder / "adapter_config.json").is_file():
        raise LoraEqError(f"{folder}: no trained adapter here (adapter_config.json + adapter_model.safetensors)")
    if info.metrics().get("status") != "done":
        raise LoraEqError(f"{folder}: this variant has not finished training")
    return info.folder


def model_card(folder: Path) -> str:
    """A README.md for the adapter: base model, data, equalizer table, hyperparameters, metrics."""
    from .equalizer import Equalizer, equalizer_table

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


def export_merged(folder: Path, out: Path) -> Path:
    """The base in fp32 with the adapter merged in, saved as safetensors + tokenizer + card."""
    from peft import PeftModel

    from .loading import load_model

    folder = check_variant_dir(folder)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LoraEqError(f"{out}: already exists and is not empty")
    info = VariantInfo.at(folder)
    record = info.record()
    if record.get("task") == "classification":  # an encoder with the run's labels; the adapter holds the head
        from .encoder import load_encoder

        base = load_encoder(record.get("base", {}).get("spec"), "fp32", record.get("labels"))
    else:
        base = load_model(record.get("base", {}).get("spec"), "fp32")
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
