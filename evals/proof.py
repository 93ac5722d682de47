"""The proof of learning for a run: did each variant learn the data, memorize it, or do nothing?

`evaluate_run` loads the run's base once with every finished variant as a named adapter
(`adapter_set.py`) and measures, for the base and each variant:
- loss and perplexity on the assistant tokens of the held-out split and of an equal-size seeded
  sample of the rows that variant trained on (`losses.py`);
- greedy answers to the held-out prompts (each model's rows in batches of their own, through the
  fused router) and each answer's MiniLM cosine similarity to the reference answer (`similarity.py`);
- per variant against the base: bootstrap intervals and sign-flip p-values of the paired
  differences, train/held-out gap, membership AUCs (loss ratio, Min-K% Prob), KL and max |logit
  difference| (`stats.py`), and the verdict (`verdict.py`).
It writes report.json, report.md and report.html into the run folder (`report.py`). Generation is
injectable: `generate(adapter_set, prompts, adapter_names) -> answers`; `greedy_generate` here is
the default. It never trains nor changes an adapter, and the base comes back unchanged.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from adapters.base.tokenize import Encoded, encode_chat, encode_prompt
from adapters.errors import LoraEqError
from adapters.infer.adapter_rows import BASE_ROW
from adapters.train.runfolder import RunFolder, VariantInfo

from .adapter_set import AdapterSet, load_adapter_set, release
from .answers import GENERATE_BATCH, answer_budget, greedy_ids
from .base_cache import BaseCache
from .losses import Divergence, Scores, score
from .matching import Vocabulary, facts_of, match, vocabulary
from .matrix import evalset_results
from .recall import Recall, advice, questions, recall_budget, recall_of, train_sample
from .stats import min_detectable_difference, min_k_prob, roc_auc
from .verdict import Evidence, Matches, Paired, Thresholds, UserChecks, Verdict, decide

Generate = Callable[[AdapterSet, list[list[dict]], list[str]], list[str]]
Progress = Callable[[int, int], None]

MAX_LENGTH = 1024  # tokens per scored conversation; longer ones are cut (their tail is not scored)
MIN_K = 0.2  # Min-K% Prob: the 20% least likely answer tokens
POWER = 0.8  # of the power statement in the report
# A similarity gain the proof should be able to see: the smallest gain of a variant that learned
# the fictional-facts sample with the old defaults (+0.05, one epoch): below that, a held-out set
# that cannot detect +0.05 may miss real learning.
MEANINGFUL_SIMILARITY = 0.05


@dataclass
class Row:
    """One held-out conversation as the proof uses it."""

    id: str
    category: str
    prompt: list[dict]  # the conversation up to its last assistant turn
    reference: str  # the last assistant turn
    encoded: Encoded

    def __post_init__(self) -> None:
        if self.encoded.trained_tokens < 1:
            raise LoraEqError(f"row {self.id}: no assistant token to score")


@dataclass
class VariantProof:
    """Everything measured for one variant, and its verdict."""

    name: str
    folder: str
    steps: int | None
    verdict: Verdict
    evidence: Evidence
    heldout_losses: list[float]
    train_losses: list[float]
    train_losses_base: list[float]
    similarities: list[float]
    matched: list[bool]  # each held-out answer matches its reference (matching.py)
    power: dict  # what this held-out set could detect (see `power`)
    answers: list[str]
    loss_curve: list[list[float]]  # [step, loss] from train_log.jsonl
    divergence: Divergence
    heldout_curve: list[list[float]] = field(default_factory=list)  # [step, held-out loss] during training
    advice: str = ""  # what to train instead when even its own training questions miss their facts

    def headline(self) -> str:
        """The first line a reader sees: the user's checks first, then how often the held-out answers
        state the reference's facts, against the base."""
        m, sim = self.evidence.matches, self.evidence.similarity
        checks = "".join(f"{c.text()}; " for c in self.evidence.checks)
        stated = self.verdict.label in ("learned", "fails your checks")  # significantly more facts stated
        missing = ": the facts are not stated" if m.of_facts and not stated else ""
        return (f"{checks}held-out answers {m.said()}{missing}; "
                f"similarity to the references {sim.variant:.2f} (base {sim.base:.2f})")

    def to_json(self) -> dict:
        e = self.evidence
        return {
            "name": self.name,
            "folder": self.folder,
            "steps": self.steps,
            "headline": self.headline(),
            "matches": e.matches.to_json(),
            "checks": [c.to_json() for c in e.checks],
            "train_facts": None if e.train_facts is None else {"stated": e.train_facts[0], "asked": e.train_facts[1]},
            "advice": self.advice,
            "power": self.power,
            "verdict": self.verdict.label,
            "verdict_line": self.verdict.sentence,
            "heldout_loss_base": e.heldout_loss.base,
            "heldout_loss": e.heldout_loss.variant,
            "heldout_ppl_base": _ppl(e.heldout_loss.base),
            "heldout_ppl": _ppl(e.heldout_loss.variant),
            "heldout_loss_diff_ci": list(e.heldout_loss.ci),
            "heldout_loss_p_value": e.heldout_loss.p_value,
            "train_loss_base": e.train_loss.base,
            "train_loss": e.train_loss.variant,
            "train_ppl_base": _ppl(e.train_loss.base),
            "train_ppl": _ppl(e.train_loss.variant),
            "train_loss_diff_ci": list(e.train_loss.ci),
            "train_loss_p_value": e.train_loss.p_value,
            "train_rows": e.train_loss.n,
            "gap_base": e.heldout_loss.base - e.train_loss.base,
            "gap": e.heldout_loss.variant - e.train_loss.variant,
            "similarity_base": e.similarity.base,
            "similarity": e.similarity.variant,
            "similarity_diff": e.similarity.diff,
            "diff_ci": list(e.similarity.ci),
            "p_value": e.similarity.p_value,
            "membership_auc": e.membership_auc,
            "min_k_auc": e.min_k_auc,
            "kl_to_base": e.kl_to_base,
            "max_logit_diff": e.max_logit_diff,
            "logit_resolution": e.logit_resolution,
            "loss_curve": self.loss_curve,
            "heldout_curve": self.heldout_curve,
            "per_example": {
                "similarity": self.similarities,
                "matched": self.matched,
                "heldout_loss": self.heldout_losses,
                "train_loss": self.train_losses,
                "train_loss_base": self.train_losses_base,
                "answers": self.answers,
            },
        }


@dataclass
class Report:
    """The proof report of one run."""

    run_dir: str
    model: str | None
    precision: str
    seed: int
    n_resamples: int
    thresholds: Thresholds
    rows: list[Row]
    base_answers: list[str]
    base_similarities: list[float]
    base_heldout_losses: list[float]
    variants: list[VariantProof]
    skipped: list[dict] = field(default_factory=list)  # variants not finished: name, status
    notes: list[str] = field(default_factory=list)  # e.g. held-out rows that could not be measured
    seconds: dict = field(default_factory=dict)
    base_cached: list[str] = field(default_factory=list)  # what of the base's side was read from `base_cache`
    base_matched: list[bool] = field(default_factory=list)
    evalsets: list[dict] = field(default_factory=list)  # the run's finished eval sets (matrix.evalset_results)

    def __post_init__(self) -> None:
        n = len(self.rows)
        for v in self.variants:
            if len(v.similarities) != n or len(v.answers) != n:
                raise LoraEqError(f"variant {v.name!r}: {len(v.answers)} answers for {n} held-out rows")

    def to_json(self) -> dict:
        return {
            "run_dir": self.run_dir,
            "model": self.model,
            "precision": self.precision,
            "seed": self.seed,
            "n_resamples": self.n_resamples,
            "thresholds": self.thresholds.to_json(),
            "heldout_rows": len(self.rows),
            "heldout_too_small": any(v.power["too_small"] for v in self.variants),
            "base": {
                "heldout_loss": float(np.mean(self.base_heldout_losses)),
                "heldout_ppl": _ppl(float(np.mean(self.base_heldout_losses))),
                "similarity": float(np.mean(self.base_similarities)),
            },
            "variants": [v.to_json() for v in self.variants],
            "skipped": self.skipped,
            "notes": self.notes,
            "rows": [
                {"id": r.id, "category": r.category, "prompt": r.prompt[-1]["content"], "reference": r.reference,
                 "base_answer": a, "base_similarity": s, "base_loss": l, "base_matched": bool(hit)}
                for r, a, s, l, hit in zip(self.rows, self.base_answers, self.base_similarities,
                                           self.base_heldout_losses, self.base_matched or [False] * len(self.rows))
            ],
            "seconds": self.seconds,
            "base_cached": self.base_cached,
            "evalsets": self.evalsets,
        }


def _ppl(loss: float) -> float:
    return float(np.exp(min(loss, 700.0)))


# ---- the rows --------------------------------------------------------------------------------


def heldout_rows(examples, tokenizer, limit: int | None, seed: int) -> tuple[list[Row], list[str]]:
    """The held-out rows to measure (a seeded sample of `limit` when given), and notes on dropped ones."""
    notes = []
    if limit is not None:
        if limit < 1:
            raise LoraEqError(f"--limit {limit}: must be at least 1")
        if limit < len(examples):
            keep = sorted(random.Random(f"{seed}:heldout").sample(range(len(examples)), limit))
            examples = [examples[i] for i in keep]
    rows = []
    for e in examples:
        last = max((i for i, m in enumerate(e.messages) if m["role"] == "assistant"), default=None)
        encoded = encode_chat(tokenizer, e.messages, MAX_LENGTH)
        if last is None or encoded.trained_tokens == 0:
            notes.append(f"held-out row {e.id}: no assistant token within {MAX_LENGTH} tokens, not measured")
            continue
        rows.append(Row(e.id, e.category, e.messages[:last], e.messages[last]["content"], encoded))
    return rows, notes


# ---- the evaluation --------------------------------------------------------------------------


def finished_variants(run: RunFolder) -> tuple[list[VariantInfo], list[dict]]:
    """The run's finished variants and the others, with their status."""
    done, skipped = [], []
    for v in run.variants:
        status = v.status()
        if status == "done":
            done.append(v)
        else:
            skipped.append({"name": v.name, "status": status})
    return done, skipped


def evaluate_run(
    run_dir: str | Path,
    *,
    limit: int | None = None,
    generate: Generate | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    base=None,
    thresholds: Thresholds | None = None,
    n_resamples: int = 2000,
    write: bool = True,
    base_cache: bool = True,
) -> Report:
    """Measure every finished variant of the run against its base, decide, and write the report.

    `base` may be the run's base already loaded (`adapters.base.loading.load_model`), to save loading it.
    With `base_cache`, the base's answers (default generation only) and train-sample scores are
    read from, or kept in, `base_cache.BaseCache`: the same numbers, without computing them again."""
    from adapters.base.loading import load_model
    from adapters.train.runs import run_split

    run = RunFolder.open(run_dir)
    run_dir = run.path
    entries, skipped = finished_variants(run)
    if not entries:
        raise LoraEqError(f"{run_dir}: no finished variant to evaluate (train the run first)")
    if n_resamples < 2000:
        raise LoraEqError(f"n_resamples={n_resamples}: the proof uses at least 2,000 bootstrap resamples")
    thresholds = thresholds or Thresholds()
    clock = _Clock()
    base = base or load_model(run.model, run.precision)
    clock.lap("load")
    rows, notes = heldout_rows(run_split(run_dir, "heldout").examples, base.tokenizer, limit, seed)
    if not rows:
        raise LoraEqError(f"{run_dir}: the held-out split has no row to measure")
    adapters = load_adapter_set(base, {v.name: v.folder for v in entries})
    try:
        clock.lap("load")
        cache = BaseCache.for_base(base) if base_cache else None
        measured = _measure(adapters, run_dir, entries, rows, generate, seed, progress, clock, cache)
    finally:
        release(adapters)
    evalsets = evalset_results(run_dir, seed)
    variants = [_prove(v, measured, i, thresholds, n_resamples, seed, user_checks(evalsets, v.name))
                for i, v in enumerate(entries)]
    clock.lap("statistics")
    report = Report(
        run_dir=str(run_dir),
        model=run.model,
        precision=base.precision,
        seed=seed,
        n_resamples=n_resamples,
        thresholds=thresholds,
        rows=rows,
        base_answers=measured.answers[BASE_ROW],
        base_similarities=measured.similarity[BASE_ROW],
        base_matched=measured.matched[BASE_ROW],
        base_heldout_losses=measured.heldout[BASE_ROW].loss.tolist(),
        variants=variants,
        skipped=skipped,
        notes=notes,
        evalsets=evalsets,
        base_cached=measured.cached,
    )
    report.seconds = dict(clock.laps)
    if write:
        from .report import write_report

        write_report(report, run_dir)
    return report


@dataclass
class _Measured:
    """Raw measurements of all models, keyed by adapter id."""

    ids: dict[str, str]  # variant name -> adapter id
    heldout: dict[str, Scores]
    divergence: dict[str, Divergence]
    train: dict[str, tuple[Scores, Scores]]  # adapter id -> (base, variant) on its train sample
    answers: dict[str, list[str]]
    similarity: dict[str, list[float]]
    matched: dict[str, list[bool]]
    facts: int  # held-out rows whose reference states facts (matching.facts_of)
    train_facts: dict[str, list[bool]]  # adapter id -> its answers to its train sample's questions match
    cached: list[str] = field(default_factory=list)  # the base's results read from the cache


class _Clock:
    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self.last, 2)
        self.last = now


def _measure(adapters: AdapterSet, run_dir: Path, entries: list[VariantInfo], rows, generate, seed, progress,
             clock, cache: BaseCache | None) -> _Measured:
    from adapters.train.runs import run_split

    stages = 4
    cached: list[str] = []
    heldout, divergence = score(adapters, [r.encoded for r in rows], adapters.names, divergence=True)
    clock.lap("heldout_loss")
    _tick(progress, 1, stages)
    train_split = run_split(run_dir, "train")
    samples = {adapters.ids[v.name]: train_sample(train_split, v.config, adapters.tokenizer, len(rows), seed)
               for v in entries}
    for v in entries:
        if not samples[adapters.ids[v.name]]:
            raise LoraEqError(f"variant {v.name!r}: no training row to measure")
    train = _train_scores(adapters, samples, cache, cached)
    clock.lap("train_loss")
    _tick(progress, 2, stages)
    answers, similarity, matched, facts = _answers(adapters, rows, generate, clock, cache, cached, train_split)
    _tick(progress, 3, stages)
    vocab = data_vocabulary(rows, train_split)
    train_facts = _train_facts(adapters, samples, generate, vocab)
    clock.lap("train_facts")
    _tick(progress, 4, stages)
    return _Measured(adapters.ids, heldout, divergence, train, answers, similarity, matched, facts, train_facts,
                     cached)


def _answers(adapters: AdapterSet, rows: list[Row], generate: Generate | None, clock: _Clock,
             cache: BaseCache | None, cached: list[str], train=None):
    """Every model's answer to every held-out prompt (one flat call), its similarity to the
    reference and whether it matches it (`matching.match`, with the words the run's data writes in
    lower case), keyed by adapter id; and how many references state facts."""
    from .similarity import cosine_pairs

    names, n = adapters.names, len(rows)
    refs = [r.reference for r in rows]
    prompts = [r.prompt for r in rows] * len(names)
    if generate is None:
        flat = _default_answers(adapters, [r.prompt for r in rows], answer_budget(adapters.tokenizer, refs), cache,
                                cached)
    else:
        flat = generate(adapters, prompts, [name for name in names for _ in rows])
    if len(flat) != len(prompts):
        raise LoraEqError(f"the generate function returned {len(flat)} answers for {len(prompts)} prompts")
    clock.lap("generate")
    sims = cosine_pairs(list(flat), refs * len(names))
    clock.lap("similarity")
    answers = {name: list(flat[i * n : (i + 1) * n]) for i, name in enumerate(names)}
    similarity = {name: sims[i * n : (i + 1) * n] for i, name in enumerate(names)}
    vocab = data_vocabulary(rows, train)
    matched = {name: [match(a, r.reference, r.prompt[-1]["content"], s, vocab).matched
                      for a, r, s in zip(answers[name], rows, similarity[name])] for name in names}
    facts = sum(1 for r in rows if facts_of(r.reference, r.prompt[-1]["content"], vocab))
    return answers, similarity, matched, facts


def data_vocabulary(rows: list[Row], train=None) -> Vocabulary:
    """The words of the run's data (its held-out rows and training rows, `matching.vocabulary`): the
    ones it writes in lower case are not names when capitalized to open a sentence, and a key word
    weighs by how few of its texts hold it."""
    texts = [m["content"] for r in rows for m in [*r.prompt, {"content": r.reference}]]
    if train is not None:
        texts += [m["content"] for e in train.examples for m in e.messages]
    return vocabulary(texts)


def user_checks(evalsets: list[dict], name: str) -> tuple[UserChecks, ...]:
    """The run's eval sets as the verdict of variant `name` uses them: its passes against the
    base's on the same prompts (sets not run on this variant, or without a base column, left out)."""
    from adapters.train.runfolder import BASE_COLUMN

    out = []
    for es in evalsets:
        columns = {c["name"]: c for c in es["columns"]}
        mine, base = columns.get(name), columns.get(BASE_COLUMN)
        if mine is None or base is None or not mine.get("total"):
            continue
        out.append(UserChecks(es["name"], mine["passed"], base["passed"], mine["total"], mine.get("mcnemar_p")))
    return tuple(out)


def _default_answers(adapters: AdapterSet, prompts: list[list[dict]], max_new_tokens: int,
                     cache: BaseCache | None, cached: list[str]) -> list[str]:
    """`greedy_generate` for every model (base first), all prompts each; the base's answers come
    from `cache` when it has them (they do not depend on the variants: see `greedy_generate`)."""
    from adapters.infer.engine import stop_token_ids

    ids = [encode_prompt(adapters.tokenizer, p) for p in prompts]
    stop_ids = stop_token_ids(adapters.tokenizer, adapters.model)
    key = (ids, max_new_tokens, GENERATE_BATCH, stop_ids)
    base_answers = cache.answers(*key) if cache is not None else None
    todo = [name for name in adapters.names if not (name == BASE_ROW and base_answers is not None)]
    flat = greedy_ids(adapters, ids * len(todo), [name for name in todo for _ in prompts], stop_ids, max_new_tokens,
                       GENERATE_BATCH)
    n = len(prompts)
    by_name = {name: flat[i * n : (i + 1) * n] for i, name in enumerate(todo)}
    if base_answers is not None:
        by_name[BASE_ROW] = base_answers
        cached.append("answers")
    elif cache is not None:
        cache.keep_answers(*key, by_name[BASE_ROW])
    return [answer for name in adapters.names for answer in by_name[name]]


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress:
        progress(done, total)


def _train_facts(adapters: AdapterSet, samples: dict[str, list], generate: Generate | None,
                 vocab: Vocabulary) -> dict[str, list[bool]]:
    """Per variant (adapter id), whether its greedy answers to the questions of its own train sample
    state their references' facts (`recall.py`): were the facts learned at all?"""
    asked = {aid: questions(sample, vocab) for aid, sample in samples.items()}
    prompts = [p for aid in asked for p, _ in asked[aid]]
    names = [aid for aid in asked for _ in asked[aid]]
    if not prompts:  # no sampled reference states a fact: nothing to ask
        flat = []
    elif generate is None:
        from adapters.infer.engine import stop_token_ids

        ids = [encode_prompt(adapters.tokenizer, p) for p in prompts]
        flat = greedy_ids(adapters, ids, names, stop_token_ids(adapters.tokenizer, adapters.model),
                          recall_budget(adapters.tokenizer, [r for a in asked.values() for _, r in a]), GENERATE_BATCH)
    else:
        flat = generate(adapters, prompts, names)
    out, at = {}, 0
    for aid, pairs in asked.items():
        out[aid] = recall_of(list(flat[at: at + len(pairs)]), pairs, vocab)
        at += len(pairs)
    return out


def _train_scores(adapters: AdapterSet, samples: dict[str, list], cache: BaseCache | None,
                  cached: list[str]) -> dict[str, tuple[Scores, Scores]]:
    """Base and variant scores on each variant's train sample (adapter id -> `train_sample`);
    variants with the same sample share one base pass, which `cache` may have kept from an earlier
    proof."""
    groups: dict[tuple, list[str]] = {}
    encoded: dict[tuple, list[Encoded]] = {}
    for aid, sample in samples.items():
        key = tuple(tuple(e.input_ids) for _, e in sample)
        groups.setdefault(key, []).append(aid)
        encoded[key] = [e for _, e in sample]
    out = {}
    for key, ids in groups.items():
        base = cache.scores(encoded[key]) if cache is not None else None
        scores, _ = score(adapters, encoded[key], ids if base is not None else [BASE_ROW, *ids])
        if base is None and cache is not None:
            cache.keep_scores(encoded[key], scores[BASE_ROW])
        out.update({i: (base if base is not None else scores[BASE_ROW], scores[i]) for i in ids})
        if base is not None and "train losses" not in cached:
            cached.append("train losses")
    return out


def _prove(variant: VariantInfo, m: _Measured, index: int, t: Thresholds, n_resamples: int,
           seed: int, checks: tuple[UserChecks, ...] = ()) -> VariantProof:
    aid = m.ids[variant.name]
    held_b, held_v = m.heldout[BASE_ROW], m.heldout[aid]
    train_b, train_v = m.train[aid]
    pair = partial(Paired.of, n_resamples=n_resamples, seed=seed + index)
    evidence = Evidence(
        similarity=pair(m.similarity[BASE_ROW], m.similarity[aid]),
        heldout_loss=pair(held_b.loss, held_v.loss),
        train_loss=pair(train_b.loss, train_v.loss),
        kl_to_base=m.divergence[aid].kl_mean,
        max_logit_diff=m.divergence[aid].max_logit_diff,
        logit_resolution=m.divergence[aid].logit_resolution,
        membership_auc=membership_auc(train_b, train_v, held_b, held_v),
        min_k_auc=roc_auc([min_k_prob(x, MIN_K) for x in train_v.token_logprobs],
                          [min_k_prob(x, MIN_K) for x in held_v.token_logprobs]),
        matches=Matches.of(m.matched[BASE_ROW], m.matched[aid], m.facts),
        checks=checks,
        train_facts=(sum(m.train_facts[aid]), len(m.train_facts[aid])),
    )
    log, metrics = variant.log(), variant.metrics()
    return VariantProof(
        name=variant.name,
        folder=variant.folder.name,
        steps=metrics.get("steps"),
        verdict=decide(evidence, t),
        evidence=evidence,
        heldout_losses=held_v.loss.tolist(),
        train_losses=train_v.loss.tolist(),
        train_losses_base=train_b.loss.tolist(),
        similarities=m.similarity[aid],
        matched=m.matched[aid],
        power=power(m.similarity[BASE_ROW], m.similarity[aid], t.alpha),
        answers=m.answers[aid],
        loss_curve=[[r["step"], r["loss"]] for r in log if "loss" in r and "step" in r],
        heldout_curve=[[r["step"], r["heldout_loss"]] for r in log if "heldout_loss" in r],
        divergence=m.divergence[aid],
        advice=advice(variant.name, Recall(*evidence.train_facts), variant.record().get("hyper", {}),
                      metrics.get("seconds")),
    )


def power(base_similarity: list[float], variant_similarity: list[float], alpha: float) -> dict:
    """What the held-out set could show: the smallest similarity gain detectable at `alpha` with
    power 0.8 (from the observed spread of the paired differences), and whether the set is too
    small to show a practically meaningful gain or any change in matches at all."""
    n = len(base_similarity)
    diffs = np.asarray(variant_similarity) - np.asarray(base_similarity)
    detectable = min_detectable_difference(diffs, alpha=alpha, power=POWER) if n > 1 else math.inf
    if not math.isfinite(detectable) or detectable == 0:  # no spread observed (e.g. an unchanged model)
        detectable = min_detectable_difference(np.asarray(base_similarity) - np.mean(base_similarity),
                                               alpha=alpha, power=POWER) if n > 1 else math.inf
    fewest = min_rows_for_mcnemar(alpha)
    enough_rows = n >= fewest
    return {"n": n, "alpha": alpha, "power": POWER, "min_detectable_similarity": detectable,
            "meaningful_similarity": MEANINGFUL_SIMILARITY, "min_rows": fewest,
            "too_small": (not enough_rows) or detectable > MEANINGFUL_SIMILARITY}


def min_rows_for_mcnemar(alpha: float) -> int:
    """Fewest discordant rows that can make an exact McNemar test significant at `alpha`."""
    k = 1
    while 2 * 0.5**k >= alpha:
        k += 1
    return k


def membership_auc(train_base: Scores, train_variant: Scores, held_base: Scores, held_variant: Scores) -> float:
    """Reference-based membership score: a row the variant trained on has a lower loss ratio
    variant/base than an unseen one. AUC of train rows against held-out rows (0.5: no signal)."""
    def ratio(v: Scores, b: Scores) -> np.ndarray:
        return v.loss / np.maximum(b.loss, 1e-8)

    return roc_auc(-ratio(train_variant, train_base), -ratio(held_variant, held_base))
