"""`loraeq export`: a finished variant (or an outside adapter) as a PEFT adapter zip with its model card, or merged into the base.

The handler calls `adapters.export`; nothing here loads a model itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> dict:
    from ..export import export_adapter_zip, export_merged

    folder = Path(args.variant_dir)
    path = export_merged(folder, Path(args.out), args.base) if args.merged else export_adapter_zip(folder, Path(args.out))
    return {"variant": str(folder), "kind": "merged" if args.merged else "adapter", "path": str(path)}


def register(sub) -> None:
    p = sub.add_parser("export", help="export a variant: adapter zip or merged full-precision model")
    p.add_argument("variant_dir", help="RUN_DIR/VARIANT, or an outside PEFT adapter folder")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--adapter", action="store_true", help="the PEFT adapter + model card as a zip")
    kind.add_argument("--merged", action="store_true", help="base + adapter merged, fp32 safetensors")
    p.add_argument("--out", required=True)
    p.add_argument("--base", default=None, help="the base to merge into (needed for an adapter from outside a run)")
    p.set_defaults(handler=_export, render=lambda d, a: f"{d['kind']} written to {d['path']}")
