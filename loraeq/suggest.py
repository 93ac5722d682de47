"""`loraeq suggest`: a data-suggested equalizer, from where the data pulls hardest on the base.

The handler loads the data and the base and calls `adapters.shape.suggest.suggest_equalizer`; the
readable form is the grid of strengths per band and role. `--save` writes the equalizer JSON
that `loraeq train --sweep` and the web app read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_bands_flag, add_data_flags, add_model_flags, format_table, progress_bar, read_data


def _suggest(args: argparse.Namespace) -> dict:
    from adapters.base.loading import load_model
    from adapters.shape.suggest import suggest_equalizer

    dataset = read_data(args)
    base = load_model(args.model, args.precision, trust_remote_code=args.trust_remote_code)
    conversations = [e.messages for e in dataset.examples]
    result = suggest_equalizer(
        base, conversations, bands=args.bands, max_examples=args.examples, progress=progress_bar("sensitivity")
    )
    if args.save:
        Path(args.save).write_text(json.dumps(result.equalizer.to_json(), indent=1), encoding="utf-8")
    return {"model": base.info()["model"], "data": args.data, **result.to_json()}


def _render_suggest(data: dict, args) -> str:
    eq = data["equalizer"]
    rows = [
        {"band": b, "layers": f"{ls[0]}-{ls[-1]}", **dict(zip(eq["roles"], eq["strengths"][b]))}
        for b, ls in enumerate(eq["bands"])
    ]
    return (
        f"data-suggested equalizer for {data['model']['id']} from {data['examples']} examples "
        f"({data['tokens']} tokens, {data['seconds']:.1f} s)\n" + format_table(rows)
    )


def register(sub) -> None:
    p = sub.add_parser("suggest", help="a data-suggested equalizer: where the data pulls hardest")
    add_model_flags(p)
    add_data_flags(p)
    add_bands_flag(p)
    p.add_argument("--examples", type=int, default=32, help="examples to measure (default 32)")
    p.add_argument("--save", default=None, help="also write the equalizer JSON to this file")
    p.set_defaults(handler=_suggest, render=_render_suggest)
