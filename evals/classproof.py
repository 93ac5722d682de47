"""Proof for classifiers: held-out accuracy and macro-F1 of each LoRA variant against the linear probe.

The linear probe (the frozen encoder with a trained head) is the base of a classification run:
a variant "learned" only when adapting the encoder labels held-out rows better than a head alone.
Per column: accuracy and macro-F1 with bootstrap 95% intervals (rows resampled). Per variant,
against the probe on the same rows: the accuracy and macro-F1 differences with paired bootstrap
intervals, and the exact McNemar test on the rows whose correctness changed (`stats.py`). The
verdict words are `verdict.py`'s, with the same alpha (0.01); the rules, in order:

1. no effect: every held-out probability within 1e-4 of the probe's (a LoRA with B = 0);
2. learned: more rows right than the probe with McNemar p < alpha and the accuracy difference's
   interval above 0, and macro-F1 not significantly down (its interval not below 0);
3. worse than base: fewer rows right with McNemar p < alpha;
4. inconclusive: anything else (the report says how many changed rows a test at alpha needs).

`score` also scores eval sets (rows with a known label) per column. Nothing here trains or loads
a model itself beyond `adapters.train.classify.Classifier`; the report files are report.json/.md/.html.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from adapters.cache import write_json_atomic
from adapters.data.classes import LabeledRow, rows
from adapters.errors import LoraEqError
from adapters.train.classify import PROBE, Classifier
from adapters.train.runfolder import RunFolder, report_paths

from .stats import mcnemar_exact_p
from .verdict import Thresholds, Verdict, format_p

NO_EFFECT_PROB = 1e-4
RESAMPLES = 2000


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float((y == pred).mean()) if y.size else 0.0


def macro_f1(y: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """The mean F1 over the labels that occur in `y` or `pred` (a label never seen nor predicted
    has no F1 and is left out, as scikit-learn's labels=None does)."""
    scores = []
    for k in range(n_labels):
        tp = int(np.sum((pred == k) & (y == k)))
        fp, fn = int(np.sum((pred == k) & (y != k))), int(np.sum((pred != k) & (y == k)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _resamples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def column_scores(y: np.ndarray, probs: np.ndarray, n_labels: int, seed: int = 0) -> dict:
    """Accuracy and macro-F1 of one column, with percentile bootstrap 95% intervals."""
    pred = probs.argmax(1)
    idx = _resamples(y.size, seed)
    return {
        "accuracy": accuracy(y, pred),
        "accuracy_ci": _interval((y[idx] == pred[idx]).mean(1)),
        "macro_f1": macro_f1(y, pred, n_labels),
        "macro_f1_ci": _interval(np.array([macro_f1(y[i], pred[i], n_labels) for i in idx])),
        "correct": int((y == pred).sum()),
        "n": int(y.size),
    }


def against_probe(y: np.ndarray, probe: np.ndarray, variant: np.ndarray, n_labels: int, seed: int = 0) -> dict:
    """A variant against the probe on the same rows: differences with paired bootstrap intervals,
    exact McNemar p, and the largest probability difference."""
    pp, vp = probe.argmax(1), variant.argmax(1)
    idx = _resamples(y.size, seed)
    acc_diff = (y[idx] == vp[idx]).mean(1) - (y[idx] == pp[idx]).mean(1)
    f1_diff = np.array([macro_f1(y[i], vp[i], n_labels) - macro_f1(y[i], pp[i], n_labels) for i in idx])
    return {
        "accuracy_diff": accuracy(y, vp) - accuracy(y, pp),
        "accuracy_diff_ci": _interval(acc_diff),
        "macro_f1_diff": macro_f1(y, vp, n_labels) - macro_f1(y, pp, n_labels),
        "macro_f1_diff_ci": _interval(f1_diff),
        "mcnemar_p": mcnemar_exact_p(y == pp, y == vp),
        "only_probe_right": int(np.sum((y == pp) & (y != vp))),
        "only_variant_right": int(np.sum((y != pp) & (y == vp))),
        "max_prob_diff": float(np.abs(variant - probe).max()) if y.size else 0.0,
    }


def decide(probe: dict, variant: dict, vs: dict, t: Thresholds | None = None) -> Verdict:
    """The verdict of one variant by the rules in the module docstring."""
    t = t or Thresholds()
    if vs["max_prob_diff"] < NO_EFFECT_PROB:
        return Verdict("no effect", f"no effect: the same probabilities as the linear probe "
                                    f"(max difference {vs['max_prob_diff']:.2g})")
    more, fewer = variant["correct"] > probe["correct"], variant["correct"] < probe["correct"]
    significant = vs["mcnemar_p"] < t.alpha
    f1_down = vs["macro_f1_diff_ci"][1] < 0
    evidence = _evidence(vs)
    if more and significant and vs["accuracy_diff_ci"][0] > 0 and not f1_down:
        return Verdict("learned", f"learned: {evidence}")
    if fewer and significant:
        return Verdict("worse than base", f"worse than the linear probe: {evidence}")
    return Verdict("inconclusive", f"inconclusive: {evidence}; no significant difference from the linear probe")


def _evidence(vs: dict) -> str:
    a, f = vs["accuracy_diff_ci"], vs["macro_f1_diff_ci"]
    return (f"accuracy {vs['accuracy_diff']:+.2f} [{a[0]:+.2f}, {a[1]:+.2f}], macro-F1 {vs['macro_f1_diff']:+.2f} "
            f"[{f[0]:+.2f}, {f[1]:+.2f}] against the probe; {vs['only_variant_right']} rows right only with the "
            f"variant, {vs['only_probe_right']} only with the probe, McNemar {format_p(vs['mcnemar_p'])}")


def headline(probe: dict, variant: dict) -> str:
    """'labels held-out rows right 72% of the time (linear probe 55%); macro-F1 0.61 (probe 0.40)'"""
    return (f"labels held-out rows right {variant['accuracy']:.0%} of the time (linear probe {probe['accuracy']:.0%}); "
            f"macro-F1 {variant['macro_f1']:.2f} (probe {probe['macro_f1']:.2f})")


def power_line(n: int, alpha: float) -> str:
    """How many changed rows an exact McNemar test at alpha needs, against the held-out size."""
    need = next(k for k in range(1, 64) if 2 / 2**k < alpha)
    enough = "" if n >= 4 * need else " It is small: only a large difference can show."
    return (f"The held-out set has {n} rows; an exact McNemar test at alpha {alpha:g} needs at least {need} rows "
            f"whose correctness changed, all in one direction.{enough}")


def truth(data: list[LabeledRow], labels: list[str], where: str = "row") -> np.ndarray:
    """Label indices of rows; a label the classifier does not know is refused, the row named."""
    index = {x: i for i, x in enumerate(labels)}
    for i, r in enumerate(data, 1):
        if r.label not in index:
            raise LoraEqError(f"{where} {i}: label {r.label!r} is not one of the run's labels ({', '.join(labels)})")
    return np.array([index[r.label] for r in data], dtype=np.int64)


def score(classifier: Classifier, data: list[LabeledRow], seed: int = 0, where: str = "row") -> dict:
    """Every column's accuracy and macro-F1 on labelled rows (an eval set or the held-out split)."""
    if not data:
        raise LoraEqError("no rows to score")
    y = truth(data, classifier.labels, where)
    probs = classifier.probabilities(data)
    columns = {name: column_scores(y, p, len(classifier.labels), seed) for name, p in probs.items()}
    return {"rows": len(data), "labels": classifier.labels, "columns": columns, "y": y, "probs": probs}


def evaluate_classification(run_dir: str | Path, seed: int = 0, classifier: Classifier | None = None) -> dict:
    """The proof of a classification run on its held-out rows; writes report.json, .md and .html."""
    run = RunFolder.open(run_dir)
    heldout = rows(_heldout(run))
    classifier = classifier or Classifier(run.path)
    scored = score(classifier, heldout, seed, where="held-out row")
    y, probs, cols = scored.pop("y"), scored.pop("probs"), scored["columns"]
    variants = []
    for name in classifier.columns[1:]:
        vs = against_probe(y, probs[PROBE], probs[name], len(classifier.labels), seed)
        verdict = decide(cols[PROBE], cols[name], vs)
        variants.append({"name": name, **cols[name], **vs, "verdict": verdict.label, "verdict_line": verdict.sentence,
                         "headline": headline(cols[PROBE], cols[name])})
    report = {
        "task": "classification", "run_dir": str(run.path), "seed": seed, "heldout_rows": len(heldout),
        "labels": classifier.labels, "probe": cols[PROBE], "variants": variants,
        "power": power_line(len(heldout), Thresholds().alpha),
        "skipped": [{"name": v.name, "status": v.status()} for v in run.variants if v.name not in classifier.columns],
    }
    write_report(report, run.path)
    return report


def _heldout(run: RunFolder):
    from adapters.train.runs import run_split

    return run_split(run.path, "heldout")


def headlines(report: dict) -> list[str]:
    return [f"{v['name']}: {v['headline']} — {v['verdict']}" for v in report["variants"]]


def render_markdown(report: dict) -> str:
    p = report["probe"]
    lines = [f"# Proof of learning (classification): {Path(report['run_dir']).name}", "",
             *[f"- {h}" for h in headlines(report)], "", report["power"], "",
             "| column | accuracy | 95% CI | macro-F1 | 95% CI | McNemar p | verdict |", "|---|---|---|---|---|---|---|",
             f"| linear probe | {p['accuracy']:.3f} | {_ci(p['accuracy_ci'])} | {p['macro_f1']:.3f} | "
             f"{_ci(p['macro_f1_ci'])} | | base |"]
    for v in report["variants"]:
        lines.append(f"| {v['name']} | {v['accuracy']:.3f} | {_ci(v['accuracy_ci'])} | {v['macro_f1']:.3f} | "
                     f"{_ci(v['macro_f1_ci'])} | {v['mcnemar_p']:.3g} | {v['verdict']} |")
    lines += ["", *[f"- {v['name']}: {v['verdict_line']}" for v in report["variants"]]]
    lines += [f"- {s['name']}: not evaluated ({s['status']})" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def render_html(report: dict) -> str:
    body = "".join(f"<li>{html.escape(h)}</li>" for h in headlines(report))
    table = html.escape(render_markdown(report))
    return (f"<!doctype html><meta charset='utf-8'><title>LoRA EQ proof</title><ul>{body}</ul>"
            f"<pre>{table}</pre>")


def write_report(report: dict, run_dir: Path) -> dict[str, Path]:
    paths = report_paths(run_dir)
    write_json_atomic(paths["report.json"], report)
    paths["report.md"].write_text(render_markdown(report), encoding="utf-8")
    paths["report.html"].write_text(render_html(report), encoding="utf-8")
    return paths

