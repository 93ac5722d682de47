"""Scores for side-by-side answers, and `compare`: one prompt through the engine, every column scored.

Each answer gets its embedding similarity (similarity.py: MiniLM, cosine) to an optional
reference answer and to the base's answer, next to its token count and seconds. All texts are
embedded in one call. The similarity of the base's own column to the base is left empty (it
would be 1 by definition and says nothing). `compare` answers and scores in one call; `scored`
scores answers already made (e.g. a finished stream's). Nothing here decides pass or fail: that
is the user's vote (votes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .similarity import embed
from .votes import answer_settings

Embed = Callable[[list[str]], np.ndarray]


@dataclass
class ColumnScore:
    similarity_reference: float | None
    similarity_base: float | None


def score_answers(
    texts: list[str], *, base_index: int | None, reference: str | None = None, embed_fn: Embed = embed
) -> list[ColumnScore]:
    """Similarity of every text to `reference` (when given) and to texts[base_index] (when given)."""
    if base_index is not None and not 0 <= base_index < len(texts):
        raise ValueError(f"base_index {base_index} outside the {len(texts)} answers")
    if not texts:
        return []
    extra = [reference] if reference is not None else []
    vectors = embed_fn(list(texts) + extra)
    answers = vectors[: len(texts)]
    to_ref = answers @ vectors[len(texts)] if reference is not None else None
    to_base = answers @ answers[base_index] if base_index is not None else None
    scores = []
    for i in range(len(texts)):
        scores.append(
            ColumnScore(
                similarity_reference=_cosine(to_ref, i),
                similarity_base=None if i == base_index else _cosine(to_base, i),
            )
        )
    return scores


def _cosine(values: np.ndarray | None, i: int) -> float | None:
    # Unit vectors: the dot product is the cosine; clip float noise just past +-1.
    return None if values is None else round(float(np.clip(values[i], -1.0, 1.0)), 6)


@dataclass
class ScoredColumn:
    """One column of a comparison, as the UI and `loraeq compare --json` show it."""

    variant: str  # the column's label: "base", a variant, or "variant@eq"
    text: str
    similarity_reference: float | None
    similarity_base: float | None
    tokens: int
    seconds: float
    finish_reason: str
    settings: dict = field(default_factory=dict)  # what a vote on this answer is keyed by

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    prompt: str
    reference: str | None
    columns: list[ScoredColumn]

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "reference": self.reference, "columns": [c.to_json() for c in self.columns]}


def scored(answers: list, sampling, *, reference: str | None = None, system: str | None = None,
           embed_fn: Embed = embed) -> list[ScoredColumn]:
    """Engine answers (adapters.infer.engine.Answer, e.g. a finished stream's `answers`) with their scores."""
    from adapters.train.runfolder import BASE_COLUMN

    base_index = next((i for i, a in enumerate(answers) if a.variant == BASE_COLUMN), None)  # never scaled
    scores = score_answers([a.text for a in answers], base_index=base_index, reference=reference, embed_fn=embed_fn)
    return [
        ScoredColumn(
            variant=a.label,
            text=a.text,
            similarity_reference=s.similarity_reference,
            similarity_base=s.similarity_base,
            tokens=a.tokens,
            seconds=a.seconds,
            finish_reason=a.finish_reason,
            settings=answer_settings(sampling, seed=a.seed, system=system, live_eq=a.live_eq),
        )
        for a, s in zip(answers, scores)
    ]


def compare(
    engine,
    prompt: str,
    *,
    reference: str | None = None,
    columns: list | None = None,
    history=None,
    system: str | None = None,
    sampling=None,
    embed_fn: Embed = embed,
) -> Comparison:
    """Answer `prompt` in every column of `engine` (adapters.infer.engine.CompareEngine) and score each answer."""
    from adapters.infer.decoding import Sampling

    sampling = sampling or Sampling()
    answers = engine.answer(prompt, columns, history=history, system=system, sampling=sampling)
    columns_scored = scored(answers, sampling, reference=reference, system=system, embed_fn=embed_fn)
    return Comparison(prompt, reference, columns_scored)


def score_turn(turn, sampling, *, reference: str | None = None, system: str | None = None,
               embed_fn: Embed = embed) -> None:
    """Fill in the scores and vote settings of a finished chat turn's replies (adapters.infer.conversation.Turn):
    similarity to the base's reply (the column labelled "base") and to `reference`."""
    from adapters.train.runfolder import BASE_COLUMN

    labels = list(turn.replies)
    base_index = labels.index(BASE_COLUMN) if BASE_COLUMN in labels else None
    scores = score_answers([r.text for r in turn.replies.values()], base_index=base_index, reference=reference,
                           embed_fn=embed_fn)
    for reply, s in zip(turn.replies.values(), scores):
        reply.similarity_base, reply.similarity_reference = s.similarity_base, s.similarity_reference
        reply.settings = answer_settings(sampling, seed=reply.seed, system=system, live_eq=reply.live_eq)
