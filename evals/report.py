"""Write a proof report into the run folder: report.json, report.md and a self-contained report.html.

The HTML carries its plots as inline SVG (matplotlib's object API, no pyplot state, no files
next to it): training loss per variant, per-example held-out similarity of base vs variant, and
the paired differences with their 95% intervals. Model answers are escaped before they go in.
It measures nothing: every number comes from the `Report` it is given (`proof.py`).
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from adapters.cache import write_json_atomic
from adapters.train.runfolder import report_paths

from .judge import judge_line
from .verdict import format_p

ANSWER_ROWS = 20  # held-out rows whose answers are shown in the md/html reports (all are in the JSON)


def write_report(report, run_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.html in `run_dir`; returns their paths."""
    data = report.to_json()
    paths = report_paths(run_dir)
    write_json_atomic(paths["report.json"], data)
    _write_text(paths["report.md"], render_markdown(data))
    _write_text(paths["report.html"], render_html(data))
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---- shared pieces ---------------------------------------------------------------------------


def summary_rows(data: dict) -> list[dict]:
    """One row per model (base first) with the headline numbers, for tables."""
    base = data["base"]
    rows = [{"model": "base", "verdict": "", "heldout_loss": base["heldout_loss"], "heldout_ppl": base["heldout_ppl"],
             "similarity": base["similarity"]}]
    for v in data["variants"]:
        lo, hi = v["diff_ci"]
        rows.append({
            "model": v["name"],
            "verdict": v["verdict"],
            "heldout_loss": v["heldout_loss"],
            "heldout_ppl": v["heldout_ppl"],
            "train_loss": f"{v['train_loss_base']:.3f} -> {v['train_loss']:.3f}",
            "similarity": v["similarity"],
            "sim_diff": f"{v['similarity_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
            "p": format_p(v["p_value"]).removeprefix("p ").replace("= ", ""),
            "kl_to_base": f"{v['kl_to_base']:.2g}",
            "max_dlogit": f"{v['max_logit_diff']:.2g}",
            "member_auc": v["membership_auc"],
            "min_k_auc": v["min_k_auc"],
            "facts": _facts(v),
        })
    return rows


_HEAD = ["model", "verdict", "facts", "heldout_loss", "heldout_ppl", "train_loss", "similarity", "sim_diff", "p",
         "kl_to_base", "max_dlogit", "member_auc", "min_k_auc"]


def _facts(v: dict) -> str:
    """'14/24 held-out, 24/24 trained': answers that state their reference's facts."""
    m, t = v.get("matches"), v.get("train_facts")
    held = f"{m['variant']}/{m['n']} held-out" if m else ""
    trained = f"{t['stated']}/{t['asked']} trained" if t and t.get("asked") else ""
    return ", ".join(x for x in (held, trained) if x)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _rules(data: dict) -> list[str]:
    t = data["thresholds"]
    return [
        f"significance: 95% bootstrap interval of the mean paired difference ({data['n_resamples']} seeded "
        f"resamples) excludes 0 and the two-sided sign-flip permutation p < {t['alpha']:g}",
        f"no effect: mean KL(base || variant) < {t['no_effect_kl']:g} nats/token and max |logit difference| "
        f"< {t['no_effect_logit']:g} (or twice the logits' rounding step, for bf16/fp16)",
        f"memorized (checked before learned): train loss significantly lower by >= {t['memorized_train_drop']:.0%} "
        f"of the base's, held-out loss down by < {t['memorized_generalization']:.0%} of that drop, membership AUC "
        f">= {t['memorized_auc']:g}",
        "an answer matches its reference when it states every number, date, code and proper name of the reference "
        "that the question does not already contain (numbers by value: $1,299 = 1299 dollars, 15% = 15 per cent, "
        "twelve = 12; dates in any spelling; names in any case); a reference with none of these matches when the "
        "answer contains at least half of its key words (words neither in the question nor common), and one with "
        "no key word either when the answer's similarity is >= 0.85",
        f"learned: with eval sets, every eval set passes significantly more prompts than the base (exact McNemar "
        f"test, p < {t.get('checks_alpha', 0.05):g}); without, significantly more held-out answers match the "
        f"reference (exact McNemar test, p < {t['alpha']:g}); in both cases neither the held-out similarity nor the "
        "matches significantly lower. Loss and similarity alone never make learned",
        "fails your checks: more held-out answers match, but one of your eval sets shows no significant gain over "
        "the base: your own checks outrank the automatic ones",
        "closer in wording: held-out similarity significantly higher or held-out loss significantly lower, while "
        "the answers do not state the facts measurably more often (or your checks fail): the variant learned the "
        "pattern of the answers, not what they say",
        "worse than base: held-out similarity, matches or an eval set's passes significantly lower, or held-out loss "
        "significantly higher",
        "inconclusive: changed from the base, none of the above shown at this sample size",
        "facts: held-out answers that state their reference's facts, and answers to a sample of the variant's own "
        "training questions that do (as many as the held-out rows); under 80% on its own training questions, the "
        "facts are not learned yet and the report names a longer schedule",
        "power: the smallest similarity gain the held-out set detects at alpha with power 0.8 is "
        "(z(1 - alpha/2) + z(0.8)) x sd(differences) / sqrt(n); the set is too small when that exceeds "
        "+0.05, or when it has fewer rows than an exact McNemar test needs to reach alpha",
    ]


def headlines(data: dict) -> list[str]:
    """Per variant, the line a non-statistician reads first, then its verdict (and what to train
    instead when even its training questions miss their facts)."""
    return [f"{v['name']}: {v['headline']} — {v['verdict']}" + (f". {v['advice']}" if v.get("advice") else "")
            for v in data["variants"]]


def cache_line(data: dict) -> str:
    """Which of the base's results an earlier proof with the same base and rows supplied, or ''."""
    cached = data.get("base_cached") or []
    if not cached:
        return ""
    return (f" The base's {' and '.join(cached)} were read from an earlier proof with the same base, precision and "
            "rows (`--no-base-cache` computes them again).")


def power_line(data: dict) -> str:
    """What the held-out set could show, in words."""
    variants = data["variants"]
    if not variants:
        return ""
    powers = [v["power"] for v in variants]
    n, detectable = powers[0]["n"], max(p["min_detectable_similarity"] for p in powers)
    shown = f"+{detectable:.2f}" if detectable < 10 else "no gain at all"
    setting = f"(alpha {powers[0]['alpha']:g}, power 0.8)"
    if not any(p["too_small"] for p in powers):
        return f"The held-out set ({n} rows) can detect a similarity gain of {shown} or more {setting}."
    found = any(v["verdict"] in ("learned", "worse than base") for v in variants)
    fewest = powers[0].get("min_rows", 0)
    if n < fewest:  # no change in matches can be significant, however large
        head = (f"The held-out set ({n} rows) is too small to show any change in matches: an exact McNemar "
                f"test at alpha {powers[0]['alpha']:g} needs at least {fewest} rows that change")
    else:
        head = (f"The held-out set ({n} rows) is too small to detect a similarity gain of "
                f"+{powers[0]['meaningful_similarity']:.2f}: it detects only gains above {shown} {setting}")
    if found:
        return head + "; the effects reported above are larger than that."
    return head + (". It is too small to show an answer-level effect: hold out more rows (at least 50 where the "
                   "data allows) before trusting a verdict of no change.")


def _rate_text(stats: dict | None) -> str:
    if not stats or not stats.get("total"):
        return "no verdict"
    lo, hi = stats["ci"]
    return f"{stats['passed']}/{stats['total']} ({stats['pass_rate']:.0%}, 95% CI {lo:.0%}-{hi:.0%})"


def evalset_lines(data: dict) -> list[str]:
    """Per eval set and variant: its pass rate against the base's, with the exact McNemar p (and the
    style checks' rate when the set has some), in words."""
    lines = []
    for es in data.get("evalsets", []):
        base = next((c for c in es["columns"] if c["name"] == "base"), None)
        for col in es["columns"]:
            if col["name"] == "base":
                continue
            line = f"eval set {es['name']}: {col['name']} passes {_rate_text(col)}"
            if base is not None:
                line += f" vs the base's {_rate_text(base)}"
                if col.get("mcnemar_p") is not None:
                    line += f", {format_p(col['mcnemar_p'])}"
            style, base_style = col.get("by_check", {}).get("style"), (base or {}).get("by_check", {}).get("style")
            if style:
                line += f"; style {_rate_text(style)}"
                if base_style:
                    line += f" vs {_rate_text(base_style)}"
                if style.get("mcnemar_p") is not None:
                    line += f", {format_p(style['mcnemar_p'])}"
            lines.append(line)
        lines += [f"eval set {es['name']}: judged check {judge_line(j)}" for j in es.get("judges", [])]
    return lines


_EVAL_HEAD = ["column", "pass rate", "mean similarity", "McNemar p vs base", "style", "overrides"]


def evalset_rows(es: dict) -> list[list[str]]:
    rows = []
    for col in es["columns"]:
        sim = col.get("mean_similarity")
        ci = col.get("similarity_ci")
        rows.append([
            col["name"], _rate_text(col),
            "" if sim is None else f"{sim:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
            "" if col.get("mcnemar_p") is None else format_p(col["mcnemar_p"]),
            _rate_text(col["by_check"]["style"]) if "style" in col.get("by_check", {}) else "",
            str(col.get("overrides", 0)),
        ])
    return rows


def _evalset_markdown(data: dict) -> list[str]:
    sets = data.get("evalsets", [])
    if not sets:
        return []
    lines = ["", "## Eval sets", "",
             "Each cell passes when all its checks pass (or as the user overrode it); the pass rate's interval is "
             "Wilson's, the p-value an exact McNemar test against the base on the same prompts."]
    for es in sets:
        lines += ["", f"### {_md(es['name'])} ({es['prompts']} prompts, {es['cells']} cells)", "",
                  "| " + " | ".join(_EVAL_HEAD) + " |", "|" + "---|" * len(_EVAL_HEAD),
                  *["| " + " | ".join(_md(c) for c in row) + " |" for row in evalset_rows(es)]]
        lines += [f"- not run: `{_md(u['type'])}` in test {_md(u['test'])} ({_md(u['reason'])})"
                  for u in es.get("unsupported", [])]
        lines += [f"- note: {_md(n)}" for n in es.get("notes", [])]
    return lines


def _evalset_html(data: dict) -> str:
    e = html.escape
    sets = data.get("evalsets", [])
    if not sets:
        return ""
    out = ["<h2>Eval sets</h2><p>A cell passes when all its checks pass (or as the user overrode it); the "
           "interval is Wilson's, the p-value an exact McNemar test against the base on the same prompts.</p>"]
    for es in sets:
        out.append(f"<h3>{e(es['name'])} ({es['prompts']} prompts, {es['cells']} cells)</h3><table><tr>")
        out += [f"<th>{e(h)}</th>" for h in _EVAL_HEAD] + ["</tr>"]
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in evalset_rows(es)]
        out.append("</table>")
        out += [f"<p>note: {e(n)}</p>" for n in es.get("notes", [])]
    return "".join(out)


# ---- markdown --------------------------------------------------------------------------------


def render_markdown(data: dict) -> str:
    lines = [
        f"# Proof of learning: {Path(data['run_dir']).name}",
        "",
        f"Base `{data['model'] or 'embedded default'}` ({data['precision']}); {data['heldout_rows']} held-out rows; "
        f"seed {data['seed']}.",
        "",
        "## In short",
        "",
        *[f"- **{line}**" for line in headlines(data)],
        *[f"- {line}" for line in evalset_lines(data)],
        "",
        power_line(data) + cache_line(data),
        "",
        "## Verdicts",
        "",
        *[f"- **{v['name']}**: {v['verdict_line']}" for v in data["variants"]],
        *[f"- {s['name']}: not evaluated ({s['status']})" for s in data["skipped"]],
        *[f"- note: {n}" for n in data["notes"]],
        "",
        "## Numbers",
        "",
        "| " + " | ".join(_HEAD) + " |",
        "|" + "---|" * len(_HEAD),
        *["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in _HEAD) + " |" for r in summary_rows(data)],
        "",
        "Losses are mean negative log-likelihoods of the assistant tokens (per example, then averaged); "
        "train loss is on a sample of the rows each variant trained on, as many as the held-out rows.",
        "",
        *_evalset_markdown(data),
        "",
        "## Rules",
        "",
        *[f"- {rule}" for rule in _rules(data)],
        "",
        f"## Answers (first {min(ANSWER_ROWS, data['heldout_rows'])} held-out rows)",
    ]
    for i, row in enumerate(data["rows"][:ANSWER_ROWS]):
        lines += ["", f"**{i + 1}. {_md(row['prompt'])}**", "", f"- reference: {_md(row['reference'])}",
                  f"- base ({_mark(row.get('base_matched'))}{row['base_similarity']:.2f}): {_md(row['base_answer'])}"]
        for v in data["variants"]:
            ex = v["per_example"]
            lines.append(f"- {v['name']} ({_mark(ex['matched'][i])}{ex['similarity'][i]:.2f}): {_md(ex['answers'][i])}")
    return "\n".join(lines) + "\n"


def _mark(matched) -> str:
    return "match, " if matched else ""


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# ---- html ------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:right}
td:first-child,th:first-child,td:nth-child(2){text-align:left}
.learned{color:#176f2c}.memorized,.wording{color:#9a5b00}.worse{color:#a61b1b}.no-effect,.inconclusive{color:#555}
figure{margin:1.5em 0}.answers td{text-align:left;vertical-align:top}
"""
_CLASS = {"learned": "learned", "memorized": "memorized", "worse than base": "worse", "no effect": "no-effect",
          "inconclusive": "inconclusive", "closer in wording": "wording", "fails your checks": "worse"}


def render_html(data: dict) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Proof of learning: {e(Path(data['run_dir']).name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Proof of learning</h1><p>{e(Path(data['run_dir']).name)}<br>base <code>{e(data['model'] or 'embedded default')}"
        f"</code> ({e(data['precision'])}), {data['heldout_rows']} held-out rows, seed {data['seed']}</p>",
        "<h2>In short</h2><ul>",
        *[f"<li class='{_CLASS.get(v['verdict'], '')}'><b>{e(v['name'])}</b>: {e(v['headline'])} — "
          f"<b>{e(v['verdict'])}</b>{e('. ' + v['advice']) if v.get('advice') else ''}</li>" for v in data["variants"]],
        *[f"<li>{e(line)}</li>" for line in evalset_lines(data)],
        f"</ul><p>{e(power_line(data) + cache_line(data))}</p>",
        "<h2>Verdicts</h2><ul>",
        *[f"<li class='{_CLASS.get(v['verdict'], '')}'><b>{e(v['name'])}</b>: {e(v['verdict_line'])}</li>"
          for v in data["variants"]],
        *[f"<li>{e(s['name'])}: not evaluated ({e(s['status'])})</li>" for s in data["skipped"]],
        *[f"<li>note: {e(n)}</li>" for n in data["notes"]],
        "</ul><h2>Numbers</h2><table><tr>", *[f"<th>{e(c)}</th>" for c in _HEAD], "</tr>",
        *["<tr>" + "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in _HEAD) + "</tr>" for r in summary_rows(data)],
        "</table>", _evalset_html(data), "<h2>Plots</h2>",
        _figure(loss_curves(data), "Training loss per variant (train_log.jsonl), and the held-out loss measured "
                                   "during training (dashed)."),
        _figure(similarity_scatter(data), "Held-out similarity to the reference, per example: base (x) vs variant "
                                          "(y). Above the diagonal the variant's answer is closer."),
        _figure(intervals(data), "Mean paired difference, variant minus base, with its 95% bootstrap interval "
                                 "(train loss: on each variant's own train sample)."),
        "<h2>Rules</h2><ul>", *[f"<li>{e(rule)}</li>" for rule in _rules(data)], "</ul>",
        f"<h2>Answers (first {min(ANSWER_ROWS, data['heldout_rows'])} held-out rows)</h2>",
        _answers_table(data), "</body></html>",
    ]
    return "\n".join(parts)


def _answers_table(data: dict) -> str:
    e = html.escape
    names = ["reference", "base"] + [v["name"] for v in data["variants"]]
    out = ["<table class='answers'><tr><th>prompt</th>", *[f"<th>{e(n)}</th>" for n in names], "</tr>"]
    for i, row in enumerate(data["rows"][:ANSWER_ROWS]):
        cells = [e(row["reference"]),
                 f"{e(row['base_answer'])} <i>({_mark(row.get('base_matched'))}{row['base_similarity']:.2f})</i>"]
        for v in data["variants"]:
            ex = v["per_example"]
            cells.append(f"{e(ex['answers'][i])} <i>({_mark(ex['matched'][i])}{ex['similarity'][i]:.2f})</i>")
        out.append(f"<tr><td>{e(row['prompt'])}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _figure(fig, caption: str) -> str:
    return f"<figure>{svg(fig)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def svg(fig) -> str:
    """A matplotlib Figure as an inline <svg> element (text kept as text, so it stays small)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


# ---- plots -----------------------------------------------------------------------------------


def loss_curves(data: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    for v in data["variants"]:
        if v["loss_curve"]:
            steps, losses = zip(*v["loss_curve"])
            line, = ax.plot(steps, losses, label=v["name"], marker="." if len(steps) < 30 else None)
            if v.get("heldout_curve"):
                steps, losses = zip(*v["heldout_curve"])
                ax.plot(steps, losses, "--o", color=line.get_color(), markersize=3, label=f"{v['name']} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (solid: training, dashed: held-out)")
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training steps logged", ha="center", va="center", transform=ax.transAxes)
    return fig


def similarity_scatter(data: dict):
    from matplotlib.figure import Figure

    variants = data["variants"]
    fig = Figure(figsize=(3.0 * len(variants) + 0.4, 3.3), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
    base = [r["base_similarity"] for r in data["rows"]]
    for ax, v in zip(axes, variants):
        ax.scatter(base, v["per_example"]["similarity"], s=10, alpha=0.7)
        ax.plot([-0.1, 1], [-0.1, 1], color="#999", linewidth=0.8)
        ax.set_title(f"{v['name']}: {v['verdict']}", fontsize=9)
        ax.set_xlabel("base similarity")
    axes[0].set_ylabel("variant similarity")
    return fig


def intervals(data: dict):
    from matplotlib.figure import Figure

    variants = data["variants"]
    fig = Figure(figsize=(10, 1.2 + 0.45 * len(variants)), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = (("similarity", "diff_ci", "held-out similarity (higher is better)"),
              ("heldout_loss", "heldout_loss_diff_ci", "held-out loss (lower is better)"),
              ("train_loss", "train_loss_diff_ci", "train loss, on rows it trained on"))
    for ax, (key, ci_key, title) in zip(axes, panels):
        for y, v in enumerate(variants):
            mid = v[key] - v[f"{key}_base"]
            lo, hi = v[ci_key]
            # A percentile interval need not contain the mean of a skewed sample: clamp the bar lengths.
            ax.errorbar([mid], [y], xerr=[[max(mid - lo, 0)], [max(hi - mid, 0)]], fmt="o", capsize=3)
        ax.axvline(0, color="#999", linewidth=0.8)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(variants)), [v["name"] for v in variants])
    axes[0].set_ylim(-0.7, len(variants) - 0.3)
    return fig
