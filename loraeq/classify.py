"""`loraeq classify RUN`: a classification run's columns (linear probe, then every LoRA variant) on
a text, or scored on a labelled eval set.

`--text` prints each column's label and probabilities (`--json`: `columns`, each with `name`,
`label`, `probabilities`); `--label` adds whether each column got it right (an unknown label is
refused). `--set FILE` (any data file with `text`, optional `text_pair`, `label`; `--map`
renames columns) prints accuracy and macro-F1 per column with bootstrap intervals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.errors import LoraEqError

from .common import data_mapping, format_table


def _classify(args: argparse.Namespace) -> dict:
    from adapters.train.classify import Classifier

    if bool(args.text) == bool(args.set):
        raise LoraEqError("give --text TEXT or --set FILE (one of them)")
    classifier = Classifier(Path(args.run_dir))
    if args.set:
        return _score_set(classifier, args)
    if args.label is not None:
        classifier.check_label(args.label, "--label")
    result = classifier.classify(args.text, args.pair)
    if args.label is not None:
        for column in result["columns"]:
            column["correct"] = column["label"] == args.label
    return result


def _score_set(classifier, args: argparse.Namespace) -> dict:
    from adapters.data.classes import load_classification, rows
    from evals.classproof import score

    dataset = load_classification(args.set, data_mapping(args), min_per_label=1)
    if dataset.rejected:
        first = dataset.rejected[0].issues[0]
        raise LoraEqError(f"{Path(args.set).name}: row {first.row}, {first.field or 'row'}: {first.reason} "
                          f"({dataset.rows_rejected} rows rejected)")
    scored = score(classifier, rows(dataset), seed=args.seed, where=f"{Path(args.set).name}: row")
    return {"rows": scored["rows"], "labels": scored["labels"],
            "columns": [{"name": name, **s} for name, s in scored["columns"].items()]}


def _render(data: dict, args) -> str:
    if "rows" in data:
        shown = [{"column": c["name"], "accuracy": c["accuracy"], "acc 95% CI": _ci(c["accuracy_ci"]),
                  "macro_f1": c["macro_f1"], "F1 95% CI": _ci(c["macro_f1_ci"])} for c in data["columns"]]
        return f"{data['rows']} rows, labels {', '.join(data['labels'])}\n" + format_table(shown)
    shown = []
    for c in data["columns"]:
        top = sorted(c["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        row = {"column": c["name"], "label": c["label"], "top": "  ".join(f"{k} {v:.2f}" for k, v in top)}
        if "correct" in c:
            row["correct"] = "yes" if c["correct"] else "no"
        shown.append(row)
    return format_table(shown)


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def register(sub) -> None:
    p = sub.add_parser("classify", help="label a text (or score a set) with a classification run",
                       description="A classification run's probe and variants on a text, or scored on an eval set.")
    p.add_argument("run_dir", help="a run folder made by `loraeq train --task classification`")
    p.add_argument("--text", help="the text to classify")
    p.add_argument("--pair", default=None, help="its second text (text_pair), for pair tasks")
    p.add_argument("--label", default=None, help="the expected label: each column is marked right or wrong")
    p.add_argument("--set", default=None, metavar="FILE", help="labelled rows: accuracy and macro-F1 per column")
    p.add_argument("--map", action="append", default=[], metavar="SRC=DST", help="rename a column of --set")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    p.set_defaults(handler=_classify, render=_render)
