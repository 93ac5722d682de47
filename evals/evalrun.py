"""Running an eval set: every case x every column through the batched engine, judged and saved.

`run_evalset` answers the cases with the base and the chosen variants, several cases per batch
(`engine.answer_many`: all columns of a case and `batch_prompts` cases in one decode, cases sorted
by length so a batch pads little), then answers the style checks' example prompts with the base
(their default contrast set; a prompt the set already asked keeps the base's answer to it), fits
one style probe per style check (style.py), embeds every text once, and judges every cell
(checks.py). It writes into its folder (matrix.py names the files): progress.jsonl before and
after each batch (stage, done, total, the prompts under way, eta; `starting` writes a first line
before the models load), status.json (running with the pid, done, cancelled, failed), and at the
end cells.jsonl and summary.json, each replaced whole, so earlier results stay readable until new
ones are complete. Each check on each cell has a time limit (`check_seconds`, checks.py): one
that runs past it fails its cell as timed out and the run goes on. A `cancel` file in the
folder stops it before its next batch or its next cell. Summary statistics are matrix.py's; nothing here decides what a variant learned.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from adapters.cache import write_json_atomic
from adapters.errors import LoraEqError
from adapters.limits import Limits
from adapters.train.runfolder import BASE_COLUMN

from .checks import Check, CheckResult, Evidence, judge
from .evalset import EvalCase, EvalSet
from .judge import NO_VERDICT, JudgeUnavailable, Ruling, best_prompt, combine, parse_index, rubric_prompt, rule
from .matrix import CANCEL, CELLS, PROGRESS, STATUS, SUMMARY, judged_summary, write_cells
from .similarity import embed
from .style import StyleProbe, fit_probe
from .votes import answer_settings

Embed = Callable[[list[str]], np.ndarray]
DEFAULT_BATCH_PROMPTS = 8


class Cancelled(Exception):
    """The user asked the job to stop."""


@dataclass
class Job:
    """Where a running eval set writes, and how far it got."""

    folder: Path
    total: int
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def step(self, n: int, stage: str, working: int = 0) -> None:
        """`n` more prompts done in `stage`; `working`: how many the batch now running holds (its
        prompts all finish together, so a follower sees what is under way before they do)."""
        self.done += n
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        record = {"stage": stage, "done": self.done, "total": self.total, "working": working,
                  "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1), "time": time.time()}
        write_progress(self.folder, record)

    def check_cancel(self) -> None:
        if (self.folder / CANCEL).exists():
            raise Cancelled()


def write_progress(folder: Path, record: dict) -> None:
    with (folder / PROGRESS).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def starting(folder: str | Path, total: int) -> None:
    """Say, before the models load, that a run of `total` prompts is starting (the loading takes a
    while; a follower sees the total from the start)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROGRESS).unlink(missing_ok=True)
    write_progress(folder, {"stage": "loading", "done": 0, "total": total, "working": 0, "elapsed_s": 0.0,
                            "eta_s": None, "time": time.time()})


def set_status(folder: Path, status: str, **extra) -> None:
    write_json_atomic(folder / STATUS, {"status": status, "pid": os.getpid(), "time": time.time(), **extra})


def run_evalset(engine, evalset: EvalSet, folder: str | Path, *, variants: list[str] | None = None,
                sampling=None, batch_prompts: int = DEFAULT_BATCH_PROMPTS, embed_fn: Embed = embed,
                seed: int = 0, check_seconds: float | None = None, judge_model=None) -> dict:
    """Answer, judge and save `evalset` (see the module doc); returns the summary.
    `check_seconds`: each check's time limit per cell (default `Limits.check_seconds`);
    `judge_model` (judge.py) rules the judged checks; without one they are listed as not run."""
    from adapters.infer.decoding import Sampling

    if not evalset.cases:
        raise LoraEqError(f"{evalset.source}: no valid case to run")
    if batch_prompts < 1:
        raise LoraEqError(f"batch_prompts={batch_prompts!r}: must be at least 1")
    sampling = sampling or Sampling()
    if judge_model is None:
        evalset = without_judged(evalset)
    columns = engine.columns(variants)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CANCEL).unlink(missing_ok=True)
    (folder / PROGRESS).unlink(missing_ok=True)
    plain = {c.prompt for c in evalset.cases if not c.history and not c.system}
    to_ask = {p for c in evalset.style_checks() if c.contrast is None for p, _ in c.value} - plain
    job = Job(folder, len(evalset.cases) + len(to_ask))
    set_status(folder, "running", total=job.total)
    try:
        answers = answer_cases(engine, evalset.cases, columns, sampling, batch_prompts, job)
        known = {c.prompt: a[0].text for c, a in zip(evalset.cases, answers) if c.prompt in plain}
        probes = fit_probes(engine, evalset, sampling, batch_prompts, job, embed_fn, known)
        rulings = {}
        if judge_model is not None:
            job.step(0, "judge")
            rulings = rule_cells(judge_model, evalset.cases, answers, evalset.notes)
        job.step(0, "checks")
        cells = judge_cells(evalset.cases, columns, answers, probes, sampling, embed_fn, job=job,
                            seconds=Limits.from_env().check_seconds if check_seconds is None else check_seconds,
                            rulings=rulings)
    except Cancelled:
        set_status(folder, "cancelled")
        return {"status": "cancelled", "folder": str(folder)}
    summary = summary_of(evalset, cells, [c.label for c in columns], probes, sampling, seed)
    summary["seconds"] = round(time.perf_counter() - job.started, 2)
    write_cells(cells, folder / CELLS)
    write_json_atomic(folder / SUMMARY, summary)
    set_status(folder, "done")
    return summary


def without_judged(evalset: EvalSet) -> EvalSet:
    """`evalset` without its judged checks, each listed as not run (no judge was given)."""
    from dataclasses import replace

    unsupported = list(evalset.unsupported)
    cases = []
    for case in evalset.cases:
        unsupported += [{"test": case.id, "type": c.name, "reason": "a judged check: give a judge (--judge MODEL "
                         "or --judge-url URL --judge-model NAME)"} for c in case.checks if c.judged]
        cases.append(replace(case, checks=tuple(c for c in case.checks if not c.judged)))
    return replace(evalset, cases=cases, unsupported=unsupported)


def rule_cells(judge_model, cases: list[EvalCase], answers: list, notes: list[str]) -> dict:
    """(case, column, check) -> the judged check's result, every judge prompt asked in one call.
    A judge that cannot be asked leaves every judged check without a verdict, says so in `notes`,
    and the set's other checks still run."""
    asks: list[tuple[tuple, Check, str]] = []  # (where, check, prompt); where: (i, j, k), or (i, None, k)
    for i, (case, row) in enumerate(zip(cases, answers)):
        for k, check in enumerate(case.checks):
            if check.type == "select-best":
                asks.append(((i, None, k), check, best_prompt(check.value, case.prompt, [a.text for a in row])))
            elif check.judged:
                asks += [((i, j, k), check, rubric_prompt(check.type, check.value, case.prompt, a.text, case.reference))
                         for j, a in enumerate(row)]
    if not asks:
        return {}
    try:
        raws: list = judge_model.replies([prompt for _, _, prompt in asks])
        why = ""
        refused = getattr(judge_model, "refused", [])
        if refused:
            notes.append(f"judge {judge_model.name} refused {len(refused)} of {len(asks)} prompts (first: {refused[0]}):"
                         " those checks have no verdict")
    except JudgeUnavailable as e:
        raws, why = [None] * len(asks), str(e)
        notes.append(f"{e}: the judged checks have no verdict; the other checks ran")
    out = {}
    for ((i, j, k), check, prompt), raw in zip(asks, raws):
        if j is not None:
            out[(i, j, k)] = _judged_result(check, rule(check.type, prompt, raw, check.negate), judge_model, why)
            continue
        n = len(answers[i])
        pick = None if raw is None else parse_index(raw, n)
        for col in range(n):
            verdict = None if pick is None else col == pick
            ruling = Ruling(prompt, raw, pick, verdict, "" if pick is not None else NO_VERDICT)
            out[(i, col, k)] = _judged_result(check, ruling, judge_model, why)
    return out


def _judged_result(check: Check, ruling: Ruling, judge_model, why: str = "") -> CheckResult:
    detail = why or (NO_VERDICT if ruling.verdict is None else f"judge: {ruling.parsed}")
    return CheckResult(check.name, check.label(), ruling.verdict, None, detail,
                       judge={"name": judge_model.name, **ruling.to_json()})


def answer_cases(engine, cases: list[EvalCase], columns, sampling, batch_prompts: int, job: Job | None,
                 stage: str = "answers") -> list:
    """Per case, its columns' answers; `batch_prompts` cases per batch, shortest first."""
    from adapters.infer.engine import conversation

    order = sorted(range(len(cases)), key=lambda i: sum(len(m["content"]) for m in cases[i].messages))
    answers: list = [None] * len(cases)
    for start in range(0, len(order), batch_prompts):
        chunk = order[start:start + batch_prompts]
        if job is not None:
            job.check_cancel()
            job.step(0, stage, working=len(chunk))
        prompts = [conversation(cases[i].prompt, cases[i].history, cases[i].system) for i in chunk]
        for i, got in zip(chunk, engine.answer_many(prompts, columns, sampling=sampling)):
            answers[i] = got
        if job is not None:
            job.step(len(chunk), stage)
    return answers


def fit_probes(engine, evalset: EvalSet, sampling, batch_prompts: int, job: Job | None,
               embed_fn: Embed, known: dict[str, str] | None = None) -> dict[tuple, StyleProbe]:
    """One probe per style check: its examples against its contrast (default: the base's answers;
    `known` holds base answers already made, by prompt: a row's answer does not depend on its batch)."""
    probes, known = {}, dict(known or {})
    for check in evalset.style_checks():
        contrast = check.contrast if check.contrast is not None else _base_contrast(
            engine, check, sampling, batch_prompts, job, known)
        probes[check.style_key] = fit_probe(list(check.value), list(contrast), embed_fn)
    return probes


def _base_contrast(engine, check: Check, sampling, batch_prompts: int, job: Job | None, known: dict) -> list:
    prompts = [p for p, _ in check.value]
    if any(p is None for p in prompts):
        raise LoraEqError("style examples without their prompts need a contrast set (the base cannot answer them)")
    missing = [p for p in dict.fromkeys(prompts) if p not in known]
    cases = [EvalCase(f"style {i}", ({"role": "user", "content": p},)) for i, p in enumerate(missing, 1)]
    answers = answer_cases(engine, cases, engine.columns([]), sampling, batch_prompts, job, "style")
    known.update((p, a[0].text) for p, a in zip(missing, answers))
    return [(p, known[p]) for p in prompts]


class _Vectors:
    """Unit embeddings of every distinct text, computed in one call."""

    def __init__(self, texts: list[str], embed_fn: Embed):
        unique = list(dict.fromkeys(texts))
        vectors = np.asarray(embed_fn(unique), dtype=np.float64) if unique else np.zeros((0, 1))
        self._index = {t: v for t, v in zip(unique, vectors)}

    def cosine(self, a: str, b: str) -> float:
        return float(np.clip(self._index[a] @ self._index[b], -1.0, 1.0))


def _texts_to_embed(cases: list[EvalCase], answers: list) -> list[str]:
    texts = [a.text for row in answers for a in row]
    for case in cases:
        texts += [case.reference] if case.reference is not None else []
        for c in case.checks:
            if c.type == "similar" and c.value is not None:
                texts += list(c.value)
    return texts


def judge_cells(cases: list[EvalCase], columns, answers: list, probes: dict, sampling,
                embed_fn: Embed = embed, *, job: Job | None = None, seconds: float | None = None,
                rulings: dict | None = None) -> list[dict]:
    """Every cell with its answer, similarities (to the reference, to the base's answer) and checks;
    each check within `seconds` (checks.judge), a judged one from `rulings` (`rule_cells`); `job`'s
    cancel is looked at before each cell."""
    vectors = _Vectors(_texts_to_embed(cases, answers), embed_fn)
    styles = _style_scores(cases, answers, probes, embed_fn)
    cells = []
    for i, (case, row) in enumerate(zip(cases, answers)):
        base_text = next((a.text for a in row if a.variant == BASE_COLUMN), None)
        for j, (column, answer) in enumerate(zip(columns, row)):
            if job is not None:
                job.check_cancel()
            evidence = Evidence(case.reference, vectors.cosine, styles.get((i, j), {}))
            judged = {k: (rulings or {}).get((i, j, k)) for k, c in enumerate(case.checks) if c.judged}
            cells.append(_cell(case, column, answer, evidence, vectors, base_text, sampling, seconds, judged))
    return cells


def _style_scores(cases: list[EvalCase], answers: list, probes: dict, embed_fn: Embed) -> dict:
    """(case, column) -> {style key: probability}, each probe scoring the cells that use it."""
    out: dict[tuple, dict] = {}
    for key, probe in probes.items():
        where = [(i, j) for i, case in enumerate(cases) if any(c.style_key == key for c in case.checks)
                 for j in range(len(answers[i]))]
        texts = [answers[i][j].text for i, j in where]
        scores = probe.score(texts, [cases[i].prompt for i, _ in where], embed_fn)
        for (i, j), p in zip(where, scores):
            out.setdefault((i, j), {})[key] = p
    return out


def _cell(case: EvalCase, column, answer, evidence: Evidence, vectors: _Vectors, base_text, sampling,
          seconds: float | None = None, judged: dict | None = None) -> dict:
    judged = judged or {}
    results = [(judged.get(k) or _unruled(c)) if c.judged else judge(c, answer.text, evidence, seconds)
               for k, c in enumerate(case.checks)]
    similarity_base = None if column.variant == BASE_COLUMN or base_text is None else \
        round(vectors.cosine(answer.text, base_text), 6)
    return {
        "case": case.id, "prompt": case.prompt, "history": case.history, "system": case.system,
        "reference": case.reference, "tags": list(case.tags), "column": column.label, "variant": column.variant,
        "text": answer.text, "tokens": answer.tokens, "finish_reason": answer.finish_reason,
        "similarity_reference": None if case.reference is None else round(vectors.cosine(answer.text,
                                                                                           case.reference), 6),
        "similarity_base": similarity_base,
        "checks": [r.to_json() for r in results],
        "passed": combine([r.passed for r in results]) if results else None,
        "settings": answer_settings(sampling, seed=answer.seed, system=case.system),
    }


def _unruled(check: Check) -> CheckResult:
    return CheckResult(check.name, check.label(), None, None, NO_VERDICT)


def summary_of(evalset: EvalSet, cells: list[dict], columns: list[str], probes: dict, sampling, seed: int) -> dict:
    """The summary.json of a finished run: per-column statistics, what was not run, and notes."""
    notes = list(evalset.notes)
    probe_json = []
    for (value, _), probe in probes.items():
        probe_json.append(probe.to_json())
        if not probe.trusted:
            notes.append(f"a style probe's cross-validated accuracy is {probe.cv_accuracy:.2f}: too low to trust "
                         "its verdicts (give more examples, or a clearer style)")
    summarized, judges = judged_summary(cells, columns, seed)
    return {
        "name": evalset.name, "source": evalset.source, "description": evalset.description,
        "cells": len(cells), "prompts": len(evalset.cases), "columns": summarized, "judges": judges,
        "unsupported": evalset.unsupported, "rejected": evalset.rejected, "notes": notes, "probes": probe_json,
        "sampling": sampling.to_json(),
    }
