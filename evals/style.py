"""A style probe: does an answer read like the user's style examples? Logistic regression on
MiniLM sentence embeddings, with its own cross-validated accuracy.

The probe is trained on the style examples (label 1) against a contrast set (label 0): by default
the base model's own answers to the examples' prompts, so content is the same on both sides and
only the voice differs. Examples and contrast texts are grouped by the prompt they answer, and the
groups are split into `folds`: each fold's model is trained without that fold, its accuracy on
the fold is the probe's cross-validated accuracy, and an answer to a prompt the probe was trained
on is scored by the model that never saw that prompt (so answers to the eval set's own prompts,
the base's above all, are not scored by a model that learned them). An answer to a new prompt is
scored by the model trained on everything. A probe with a low cross-validated accuracy cannot tell
the style apart: `trusted` says so, and the caller reports it.

The regression is plain numpy (Newton steps with an L2 penalty on the weights). Nothing here
generates answers or reads files.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from adapters.errors import LoraEqError

MIN_PER_CLASS = 4
TRUSTED_ACCURACY = 0.8  # below this cross-validated accuracy the probe's verdicts are not to be trusted
L2 = 1.0
_NEWTON_STEPS = 25

Embed = Callable[[list[str]], np.ndarray]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> np.ndarray:
    """Weights (last entry: the intercept, not penalized) of an L2-penalized logistic regression."""
    features = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(features.shape[1])
    penalty = np.full(features.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(_NEWTON_STEPS):
        p = _sigmoid(features @ w)
        gradient = features.T @ (p - y) + penalty * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _sigmoid(x @ w[:-1] + w[-1])


def _group(prompt: str | None, text: str) -> str:
    return " ".join((prompt if prompt is not None else text).lower().split())


def _fold(group: str, folds: int) -> int:
    return zlib.crc32(group.encode("utf-8")) % folds


@dataclass
class StyleProbe:
    """A fitted probe (see the module doc)."""

    models: list[np.ndarray]  # one per fold, trained without it
    full: np.ndarray  # trained on everything
    folds: dict[str, int]  # prompt group -> the fold it was held out in
    cv_accuracy: float
    examples: int
    contrast: int

    @property
    def trusted(self) -> bool:
        return self.cv_accuracy >= TRUSTED_ACCURACY

    def score(self, texts: list[str], prompts: list[str | None], embed_fn: Embed) -> list[float]:
        """The style probability of each text (answering the prompt beside it)."""
        if len(texts) != len(prompts):
            raise LoraEqError(f"{len(texts)} texts against {len(prompts)} prompts")
        if not texts:
            return []
        x = np.asarray(embed_fn(list(texts)), dtype=np.float64)
        out = []
        for row, (text, prompt) in zip(x, zip(texts, prompts)):
            fold = self.folds.get(_group(prompt, text)) if prompt is not None else None
            w = self.full if fold is None else self.models[fold]
            out.append(float(_predict(w, row[None, :])[0]))
        return out

    def to_json(self) -> dict:
        return {"cv_accuracy": round(self.cv_accuracy, 4), "examples": self.examples, "contrast": self.contrast,
                "folds": len(self.models), "trusted": self.trusted}


def fit_probe(examples: list[tuple[str | None, str]], contrast: list[tuple[str | None, str]], embed_fn: Embed,
              folds: int = 5, l2: float = L2) -> StyleProbe:
    """Train the probe on (prompt, text) pairs of the style and of the contrast set."""
    for what, items in (("style examples", examples), ("contrast texts", contrast)):
        if len(items) < MIN_PER_CLASS:
            raise LoraEqError(f"the style probe needs at least {MIN_PER_CLASS} {what}, got {len(items)}")
    pairs = list(examples) + list(contrast)
    y = np.array([1.0] * len(examples) + [0.0] * len(contrast))
    x = np.asarray(embed_fn([t for _, t in pairs]), dtype=np.float64)
    groups = [_group(p, t) for p, t in pairs]
    k = max(2, min(folds, len(set(groups))))
    assigned = np.array([_fold(g, k) for g in groups])
    models, correct = [], 0
    for f in range(k):
        train, test = assigned != f, assigned == f
        if len(set(y[train])) < 2:
            raise LoraEqError("the style probe's folds leave one side empty: give more, and more varied, examples")
        w = fit_logistic(x[train], y[train], l2)
        models.append(w)
        correct += int(np.sum((_predict(w, x[test]) >= 0.5) == (y[test] == 1.0)))
    folds_of = {g: int(f) for g, f in zip(groups, assigned)}
    return StyleProbe(models, fit_logistic(x, y, l2), folds_of, correct / len(pairs), len(examples), len(contrast))
