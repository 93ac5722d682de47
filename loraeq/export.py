"""`loraeq export`: a finished variant (or an outside adapter) as a PEFT adapter zip with its model card,
merged into the base, or as a vLLM-safe adapter folder (per-module scales folded in, for servers with one
scale per adapter).

The handler calls `adapters.share.export`, with the card's result lines from `evals.card`; nothing here loads
a model itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> dict:
    from adapters.share.export import export_adapter_zip, export_merged, export_vllm_safe
    from evals.card import card_results

    folder, out = Path(args.variant_dir), Path(args.out)
    results = card_results(folder)
    if args.merged:
        kind, path = "merged", export_merged(folder, out, args.base, results)
    elif args.vllm_safe:
        kind, path = "vllm-safe adapter", export_vllm_safe(folder, out, results)
    else:
        kind, path = "adapter", export_adapter_zip(folder, out, results)
    return {"variant": str(folder), "kind": kind, "path": str(path)}


def register(sub) -> None:
    p = sub.add_parser("export", help="export a variant: adapter zip, merged model, vLLM-safe",
                       description="Export a variant: adapter zip, merged full-precision model, vLLM-safe adapter.")
    p.add_argument("variant_dir", help="RUN_DIR/VARIANT, or an outside PEFT adapter folder")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--adapter", action="store_true", help="the PEFT adapter + model card as a zip")
    kind.add_argument("--merged", action="store_true", help="base + adapter merged, fp32 safetensors")
    kind.add_argument("--vllm-safe", action="store_true",
                      help="an adapter folder with each module's scale folded into lora_B and one uniform "
                           "r = lora_alpha (for vLLM, LoRAX, llama.cpp: one scale per adapter)")
    p.add_argument("--out", required=True, help="a .zip (--adapter) or a new folder (--merged, --vllm-safe)")
    p.add_argument("--base", default=None, help="the base to merge into (needed for an adapter from outside a run)")
    p.set_defaults(handler=_export, render=lambda d, a: f"{d['kind']} written to {d['path']}")
