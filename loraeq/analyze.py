"""`loraeq analyze`: where the model's weights can be tuned, as a table of layers x module roles.

The handler calls `adapters.base.analysis.analyze` and returns its JSON; the readable form is the
chosen statistic per layer and role, with totals per role and per band.
"""

from __future__ import annotations

import argparse

from .common import add_bands_flag, add_model_flags, format_table, human_bytes, progress_bar


def _analyze(args: argparse.Namespace) -> dict:
    from adapters.base.analysis import analyze

    result = analyze(
        args.model,
        args.precision,
        args.bands,
        trust_remote_code=args.trust_remote_code,
        use_cache=not args.no_cache,
        progress=progress_bar("weight statistics"),
    )
    return result.to_json()


def _render_analyze(data: dict, args: argparse.Namespace) -> str:
    import pandas as pd

    m = data["model"]
    head = [
        f"model      {m['id']}  (fingerprint {m['fingerprint']})",
        f"precision  {data['precision']}   memory {human_bytes(data['memory_bytes'])}   "
        f"load {data['load_seconds']:.1f}s   analysis {data['analysis_seconds']:.1f}s"
        + ("  (cached)" if data["cached"] else ""),
        f"layers     {data['layers']} ({data['layers_path']})   roles {', '.join(data['roles'])}",
        f"params     {data['total_params']:,} total, {data['totals']['cells_params']:,} in the grid",
        "",
        f"{args.stat} per layer x role:",
    ]
    grid = pd.DataFrame(data["cells"]).pivot(index="layer", columns="role", values=args.stat)[data["roles"]]
    rows = [{"layer": int(i), **{r: grid.loc[i, r] for r in data["roles"]}} for i in grid.index]
    by_role = [{"role": r, **t} for r, t in data["totals"]["by_role"].items()]
    bands = [
        {"band": b, "layers": f"{ls[0]}-{ls[-1]}", **data["totals"]["by_band"][b]}
        for b, ls in enumerate(data["bands"])
    ]
    return "\n".join(
        head
        + [format_table(rows), "", "totals per role:", format_table(by_role), "", "bands:", format_table(bands)]
        + ["", "outside the layers:", format_table(data["other"])]
    )


def register(sub) -> None:
    from adapters.base.analysis import STATISTICS
    from adapters.base.bands import DEFAULT_BANDS

    p = sub.add_parser("analyze", help="map where the model's weights can be tuned (layers x roles)",
                       description="Map where the model's weights can be tuned: layers x module roles.")
    add_model_flags(p)
    add_bands_flag(p, f"group the layers into N bands (default {DEFAULT_BANDS})")
    p.add_argument("--stat", default="spectral", choices=STATISTICS + ("params",), help="statistic for the table")
    p.add_argument("--no-cache", action="store_true", help="recompute even if a cached analysis exists")
    p.set_defaults(handler=_analyze, render=_render_analyze)
