"""Calibrate the defaults and the match rule on data the tests never see: train, prove, tabulate.

Datasets: invented catalogs (`adapters.data.synthetic.invented_catalog`: prices, staff counts,
years, dates, codes, people, cities), invented fact sets (`invented_facts`: places, trades, foods,
months), each with a seed and wording set of your choosing, and the shipped samples. For each,
variants train on the embedded SmolLM2-135M (by default one with no flags: the auto schedule and
the auto held-out size), then the proof runs. A row of the table: rows, held-out rows, steps,
training seconds, the share of held-out answers that contain the fact's answer (`answer_key`) for
the variant and the base, the share the proof's rule matches, and the verdict.

`--calibrate` also writes every held-out answer (base and variants) with its reference, question,
key and kind to answers.jsonl and prints, per kind of fact, how often the proof's match rule and
the older "half of the key words" rule agree with "contains the fact's answer".

    .venv/bin/python benchmarks/calibrate_proof.py --catalog 31:a:price,year --facts 35:a --calibrate
    .venv/bin/python benchmarks/calibrate_proof.py --catalog 31:a:price,year --variant short:epochs=2,learning_rate=2e-4
    .venv/bin/python benchmarks/calibrate_proof.py --sample dolly-15k-sample.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATE_FORMS = (r"(?P<m>[A-Z][a-z]+) (?P<d>\d+), (?P<y>\d{4})", r"(?P<d>\d+) (?P<m>[A-Z][a-z]+) (?P<y>\d{4})")


def fact_file(folder: Path, spec: str, entities: int, ways: int) -> Path:
    """A data file from 'SEED:WORDING' (invented facts) or 'SEED:WORDING:ATTR,ATTR' (a catalog)."""
    from adapters.data.synthetic import invented_catalog, invented_facts

    seed, wording, *attrs = spec.split(":")
    if attrs:
        rows = invented_catalog(int(seed), wording, entities, tuple(attrs[0].split(",")), min(ways, 3))
    else:
        rows = invented_facts(int(seed), wording, entities, ways)
    path = folder / f"{'catalog' if attrs else 'facts'}-{spec.replace(':', '-').replace(',', '+')}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def states_key(answer: str, key: str) -> bool:
    """'Contains the fact's answer', literally: the key's text in the answer (any case), a number's
    digits as a whole number (thousands commas and a currency sign aside), a date in either of the
    two spellings the generator writes."""
    if re.fullmatch(r"\$?[\d,]+", key):
        digits = key.replace("$", "").replace(",", "")
        plain = re.sub(r"(?<=\d),(?=\d{3})", "", answer)
        return re.search(rf"(?<![\d.]){digits}(?!\d|\.\d)", plain) is not None
    for form in DATE_FORMS:
        m = re.fullmatch(form, key)
        if m:
            spellings = (f"{m['m']} {m['d']}, {m['y']}", f"{m['d']} {m['m']} {m['y']}")
            return any(s.lower() in answer.lower() for s in spellings)
    return re.search(rf"(?<!\w){re.escape(key.lower())}(?!\w)", answer.lower()) is not None


def parse_variant(text: str):
    """'NAME:key=value,key=value' -> a Variant with those hyperparameters (uniform equalizer)."""
    from adapters.shape.variants import Hyper, Variant

    name, _, rest = text.partition(":")
    hyper = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        hyper[key] = int(value) if value.isdigit() else float(value)
    return Variant(name, "uniform", Hyper(**hyper))


def old_verdict(v: dict, report: dict) -> str:
    """The verdict as the rules before facts decided would have given it: "learned" when held-out
    similarity or key-word matches (half of the reference's key words) were significantly up."""
    from evals.matching import matches_by_key_words
    from evals.stats import mcnemar_exact_p

    if v["verdict"] in ("no effect", "memorized"):
        return v["verdict"]
    rows = report["rows"]
    base = [matches_by_key_words(r["base_answer"], r["reference"], r["prompt"], r["base_similarity"]) for r in rows]
    mine = [matches_by_key_words(a, r["reference"], r["prompt"], s)
            for a, r, s in zip(v["per_example"]["answers"], rows, v["per_example"]["similarity"])]
    p = mcnemar_exact_p(base, mine)
    alpha = report["thresholds"]["alpha"]
    lo, hi = v["diff_ci"]
    up = (lo > 0 and v["p_value"] < alpha) or (sum(mine) > sum(base) and p < alpha)
    down = (hi < 0 and v["p_value"] < alpha) or (sum(mine) < sum(base) and p < alpha)
    return "learned" if up and not down else "not learned"


def measure(path: Path, base, variants, workdir: Path, answers_out=None) -> list[dict]:
    from adapters.train.dataspec import DataSpec, start_run
    from adapters.train.runs import run_queue, run_split
    from evals.matching import matches_by_key_words
    from evals.proof import evaluate_run

    run = workdir / f"run-{path.stem}"
    start_run(run, DataSpec(str(path)), variants, model=None, precision=base.precision)
    results = {r["name"]: r for r in run_queue(run, base=base)}
    report = evaluate_run(run, base=base).to_json()
    held = run_split(run, "heldout").examples
    keys = [e.meta.get("answer_key") for e in held]
    kinds = [e.meta.get("kind") or e.category or "name" for e in held]
    base_answers = [r["base_answer"] for r in report["rows"]]
    out = []
    for v in report["variants"]:
        answers = v["per_example"]["answers"]
        row = {
            "data": path.name, "variant": v["name"], "rows": sum(1 for _ in path.open()),
            "heldout": report["heldout_rows"], "steps": v["steps"], "train_s": results[v["name"]]["seconds"],
            "schedule": json.loads((run / v["folder"] / "variant.json").read_text())["schedule"],
            "sim_gain": round(v["similarity_diff"], 3), "match": round(v["matches"]["variant_rate"], 2),
            "match_base": round(v["matches"]["base_rate"], 2), "mcnemar_p": v["matches"]["p_value"],
            "verdict": v["verdict"], "old_rule_verdict": old_verdict(v, report), "verdict_line": v["verdict_line"],
            "train_facts": v.get("train_facts"),
        }
        if all(keys):
            row["exact"] = round(sum(map(states_key, answers, keys)) / len(keys), 2)
            row["exact_base"] = round(sum(map(states_key, base_answers, keys)) / len(keys), 2)
        out.append(row)
        if answers_out is not None and all(keys):
            models = [("base", base_answers, [r["base_matched"] for r in report["rows"]], None)] if v is report[
                "variants"][0] else []
            models.append((v["name"], answers, v["per_example"]["matched"], v["per_example"]["similarity"]))
            for model, texts, matched, sims in models:
                sims = sims or [r["base_similarity"] for r in report["rows"]]
                for r, text, hit, sim, key, kind in zip(report["rows"], texts, matched, sims, keys, kinds):
                    answers_out.write(json.dumps({
                        "data": path.name, "model": model, "kind": kind, "question": r["prompt"],
                        "reference": r["reference"], "key": key, "answer": text, "states_key": states_key(text, key),
                        "rule": bool(hit), "old_rule": matches_by_key_words(text, r["reference"], r["prompt"], sim),
                    }) + "\n")
    return out


def agreement(path: Path) -> dict[str, dict]:
    """Per kind of fact: answers, how many state the key, and the agreement of each rule with that."""
    table: dict[str, dict] = {}
    for line in path.open():
        a = json.loads(line)
        for kind in (a["kind"], "all"):
            t = table.setdefault(kind, {"answers": 0, "state_key": 0, "rule": 0, "old_rule": 0})
            t["answers"] += 1
            t["state_key"] += a["states_key"]
            t["rule"] += a["rule"] == a["states_key"]
            t["old_rule"] += a["old_rule"] == a["states_key"]
    return {k: {**t, "rule_agrees": round(t["rule"] / t["answers"], 3),
                "old_rule_agrees": round(t["old_rule"] / t["answers"], 3)} for k, t in table.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", action="append", default=[], metavar="SEED:WORDING", help="an invented fact set")
    p.add_argument("--catalog", action="append", default=[], metavar="SEED:WORDING:ATTR,...",
                   help="an invented catalog (attributes of adapters.data.synthetic.ATTRIBUTES)")
    p.add_argument("--sample", action="append", default=[], help="a file under datasets/")
    p.add_argument("--entities", type=int, default=16, help="facts (fact sets) or entities (catalogs)")
    p.add_argument("--ways", type=int, default=3, help="wordings per fact (catalogs: at most 3)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="a variant to train (default: one with no flags)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--calibrate", action="store_true", help="write answers.jsonl and the match rules' agreement")
    p.add_argument("--out", default=None, help="folder for runs and answers.jsonl (default: a temporary one)")
    args = p.parse_args(argv)

    from adapters.base.loading import load_model

    base = load_model(None, args.precision)
    workdir = Path(args.out or tempfile.mkdtemp(prefix="loraeq-calibrate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    variants = [parse_variant(v) for v in args.variant] or [parse_variant("defaults")]
    paths = [fact_file(workdir, s, args.entities, args.ways) for s in args.facts + args.catalog]
    paths += [ROOT / "datasets" / name for name in args.sample]
    answers_path = workdir / "answers.jsonl"
    started = time.perf_counter()
    with answers_path.open("w") if args.calibrate else open("/dev/null", "w") as sink:
        for path in paths:
            for row in measure(path, base, variants, workdir, sink if args.calibrate else None):
                print(json.dumps(row), flush=True)
    if args.calibrate:
        for kind, t in agreement(answers_path).items():
            print(json.dumps({"kind": kind, **t}), flush=True)
        print(json.dumps({"answers": str(answers_path), "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
