"""`loraeq train | status | cancel`: the training stage on the command line.

Each handler parses flags into library calls (data/, variants.py, runs.py) and returns a
JSON-able dict; main.py prints it. `train` is also the worker the web app launches:
it re-executes itself once under a fast malloc (runtime.py) and writes progress files that any
reader can follow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapters.errors import LoraEqError

from .common import add_bands_flag, add_data_flags, add_model_flags, data_mapping, format_table, read_data


def add_hyper_flags(p: argparse.ArgumentParser) -> None:
    """One flag per hyperparameter, made from its declaration on `Hyper` (`variants.Param`)."""
    from adapters.shape.variants import Hyper, hyper_params

    defaults = Hyper()
    for name, param in hyper_params():
        default = getattr(defaults, name)
        if param.switch:
            p.add_argument(param.option(name), dest=name, action="store_true", default=None,
                           help=param.help.replace("%", "%%"))
            continue
        shown = "auto: the auto schedule chooses from the data" if param.auto else f"{default:g}"
        p.add_argument(param.option(name), dest=name, type=int if param.whole else float, default=None,
                       metavar=name.upper(), help=f"{param.help} (default {shown})".replace("%", "%%"))


def hyper_values(args: argparse.Namespace) -> dict:
    """The hyperparameters given as flags (not the defaults), checked as the form and sweep files are."""
    from adapters.shape.variants import check_value, hyper_params

    return {name: check_value(name, getattr(args, name)) for name, _ in hyper_params()
            if getattr(args, name, None) is not None}


def _variants_from_args(args: argparse.Namespace):
    from adapters.shape.variants import Hyper, Variant, load_sweep

    overrides = hyper_values(args)
    if args.sweep:
        variants = load_sweep(args.sweep)
        for v in variants:
            v.hyper = Hyper(**{**v.hyper.__dict__, **overrides})
        return variants
    presets = args.preset or [default_preset()]
    return [Variant(name=p, equalizer=p, hyper=Hyper(**overrides)) for p in presets]


def default_preset() -> str:
    """The equalizer a variant gets when none is named (`Variant`'s own default: uniform)."""
    from adapters.shape.variants import Variant

    return Variant(name="default").equalizer


def heldout_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise LoraEqError(f"--heldout {text!r}: a fraction between 0 and 1, or auto") from None


def _train(args: argparse.Namespace) -> tuple[dict, int]:
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_status

    out, base = Path(args.resume or args.out), None
    if args.resume:
        run_status(out)  # checks it is a run folder
        run = RunFolder.open(out)
        if run.task != "classification":
            base = _load(run.model, run.precision)
        if args.sweep or args.preset:  # more variants for this run, trained with its unfinished ones
            _extend(out, _variants_from_args(args), base)
    else:
        if not args.data:
            raise LoraEqError("give --data FILE to start a run (or --resume RUN_DIR to continue one)")
        from adapters.train.dataspec import DataSpec, start_run

        variants = _variants_from_args(args)
        group = None if args.group.lower() == "none" else args.group
        spec = DataSpec(args.data, format=args.format, mapping=data_mapping(args), heldout=heldout_arg(args.heldout),
                        group=group, seed=args.split_seed, task=args.task)
        classify = args.task == "classification"
        model = args.model or ("minilm" if classify else None)
        dataset = _classification_data(spec) if classify else read_data(args)
        if not classify:
            from adapters.train.plan import check_run_size, check_variant

            base = _load(model, args.precision)
            check_run_size(0, len(variants))
            for v in variants:  # the checks the web app runs before a run starts
                check_variant(base, v, spec.train_rows(dataset))
        start_run(out, spec, variants, model=model, precision=args.precision, bands=args.bands, dataset=dataset)

    def echo(record: dict) -> None:
        if not args.json:
            print(f"[{record['variant']}] {record['status']}", file=sys.stderr, flush=True)

    results, recalls = _trained(out, echo, base)
    code = 0 if all(r["status"] == "done" for r in results) else 1
    return {"run_dir": str(out), "variants": [_summary(r, recalls) for r in results],
            "advice": _advice(out, recalls)}, code


def _load(model: str | None, precision: str):
    from adapters.base.loading import load_model

    return load_model(model, precision)


def _extend(out: Path, variants, base) -> None:
    """Variants added to a run, checked as the web app's Continue checks them (or, for a
    classification run, as its queue does)."""
    if base is None:
        from adapters.train.runs import add_variants

        add_variants(out, variants)
        return
    from adapters.train.plan import extend_run

    extend_run(out, variants, base)


def _trained(out: Path, echo, base=None) -> tuple[list[dict], dict]:
    """Train the run's queue; for a chat run, then ask each trained variant its own training
    questions (evals.recall): were its facts learned? The count goes into its metrics.json."""
    from adapters.train.runfolder import RunFolder

    run = RunFolder.open(out)
    if run.task == "classification":
        return _queue(out)(out, on_event=echo), {}
    from adapters.train.runs import run_queue
    from evals.recall import record, train_recall

    base = base or _load(run.model, run.precision)
    results = run_queue(out, base=base, on_event=echo)
    done = [r["name"] for r in results if r["status"] == "done"]
    recalls = train_recall(out, base, done) if done else {}
    record(out, recalls)
    return results, recalls


def _advice(out: Path, recalls: dict) -> list[str]:
    """A line per variant whose facts are not learned yet, with the longer schedule to try."""
    from adapters.train.runfolder import RunFolder
    from evals.recall import advice

    run = RunFolder.open(out)
    lines = []
    for name, recall in recalls.items():
        info = run.variant(name)
        line = advice(name, recall, info.record().get("hyper", {}), info.metrics().get("seconds"))
        if line:
            lines.append(line)
    return lines


def _classification_data(spec):
    """Classification rows (text, text_pair, label), refused when none is valid."""
    dataset = spec.load()
    if not dataset.examples:
        first = dataset.errors[0].to_json() if dataset.errors else {}
        raise LoraEqError(f"{spec.path}: no valid row to train on ({dataset.rows_rejected} rejected; first: {first})")
    return dataset


def _queue(out: Path):
    """The training queue for the run's task: LoRA on a causal LM, or probe + LoRA on an encoder."""
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_queue

    if RunFolder.open(out).task == "classification":
        from adapters.train.classify import run_classification

        return run_classification
    return run_queue


def _summary(result: dict, recalls: dict) -> dict:
    keys = ("name", "status", "path", "steps", "final_loss", "seconds", "trained_tokens", "tokens_per_s",
            "trainable_params", "error")
    recall = recalls.get(result.get("name"))
    return {**{k: result.get(k) for k in keys},
            "train_recall": recall.to_json() if recall is not None else None}


def _render_train(data: dict, args) -> str:
    rows = [{**v, "facts_stated": f"{v['train_recall']['stated']}/{v['train_recall']['asked']}"
             if (v.get("train_recall") or {}).get("asked") else ""} for v in data["variants"]]
    table = format_table(rows, ["name", "status", "steps", "trainable_params", "final_loss", "facts_stated",
                                "seconds", "tokens_per_s", "error"])
    notes = "".join(f"\n{line}" for line in data.get("advice", []))
    return f"run {data['run_dir']}\n{table}" + ("\nfacts_stated: answers to its own training questions that state "
                                               "their facts" + notes if any(r["facts_stated"] for r in rows) else "")


# ---- status / cancel -------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> dict:
    from adapters.train.runs import run_status

    return run_status(Path(args.run_dir))


def _render_status(data: dict, args) -> str:
    rows = []
    for v in data["variants"]:
        last = v["last"] or {}
        rows.append({"name": v["name"], "status": v["status"], "step": last.get("step"),
                     "of": last.get("max_steps"), "loss": last.get("loss"), "eta_s": last.get("eta_s"),
                     "error": v["error"]})
    return f"run {data['run_dir']}\n" + format_table(rows)


def _cancel(args: argparse.Namespace) -> dict:
    from adapters.train.runs import request_cancel, run_status

    run_status(Path(args.run_dir))
    request_cancel(Path(args.run_dir))
    return {"run_dir": args.run_dir, "cancel_requested": True}


def register(sub) -> None:
    p = sub.add_parser("train", help="train one LoRA adapter per variant into a run folder")
    add_model_flags(p)
    add_data_flags(p, required=False)
    p.add_argument("--sweep", help="YAML/JSON file listing variants")
    p.add_argument("--preset", action="append", default=[],
                   help=f"an equalizer preset; one variant each, named after it (default: one {default_preset()!r})")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="run folder to create (with --data)")
    target.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an existing run folder (with --sweep/--preset: add those variants to it first)")
    add_hyper_flags(p)
    p.add_argument("--heldout", default="auto",
                   help="held-out fraction for the proof (default auto: 10%% of the rows, at least 50, at most 25%%)")
    p.add_argument("--group", default="auto", metavar="FIELD",
                   help="keep rows sharing this field together in the split (e.g. fact_id: held-out rows are "
                        "paraphrases of trained facts); default auto: fact_id when every row has one; none: off")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--task", default="causal", choices=("causal", "classification"),
                   help="classification: rows of text (+ text_pair) and label on an encoder (default model: minilm); "
                        "a linear probe is trained first as the base")
    add_bands_flag(p)
    p.set_defaults(handler=_train, render=_render_train, reexec=True)

    p = sub.add_parser("status", help="where each variant of a run stands")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.set_defaults(handler=_status, render=_render_status)

    p = sub.add_parser("cancel", help="stop a running training queue after its current step")
    p.add_argument("run_dir", help="a run folder (loraeq train --out)")
    p.set_defaults(handler=_cancel, render=lambda d, a: f"cancel requested for {d['run_dir']}")
