"""The verdict per variant: learned, memorized, no effect, worse than base or inconclusive, in plain words.

`Paired` turns two per-example value lists (base, variant, on the same rows) into the mean of
their differences with a bootstrap interval and a sign-flip p-value (`stats.py`). `decide` applies
the documented rules below to a variant's `Evidence` and returns its label and one sentence that
carries the numbers it rests on. Pure: no model, no file.

A verdict of "learned" rests on answers: the held-out answers must be measurably better than
the base's, by similarity to the reference or by how many of them match it (`matching.py`; exact
McNemar test on the rows whose outcome changed). A loss that falls while the answers stay as
they were is "closer in wording": the variant finds the data's phrasing more likely, and a user
reading its answers would see no difference.

The rules, checked in this order (alpha = 0.01; "significant" means the 95% interval excludes 0
and p < alpha; for matches, the McNemar p < alpha):
1. no effect: mean KL(base || variant) < 1e-4 nats per answer position and max |logit difference|
   < 1e-3 (or, for bf16/fp16 logits, under twice their rounding step at the largest logit). A
   LoRA with B = 0 (0 training steps) gives exactly 0 on both.
2. memorized (did not generalize): train loss significantly down by at least 20% of the base's,
   the held-out loss fell by less than half as much (the train/held-out gap grew by more than half
   the train drop), and the membership AUC (train rows told from held-out rows by their loss ratio
   variant/base) is at least 0.75. Checked before "learned" because a variant
   that memorized a few rows also answers held-out prompts in their form, which raises embedding
   similarity without the content being learned.
3. learned: held-out answers better: similarity to the reference significantly higher than the
   base's, or significantly more answers matching the reference; and neither significantly lower.
4. closer in wording: held-out loss significantly down, answers not measurably better (nor worse).
5. worse than base: held-out similarity or matches significantly lower, or held-out loss
   significantly higher.
6. inconclusive: the variant changed the model but none of the above is shown at this sample size
   (the report says when the held-out set is too small to show an answer-level effect at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adapters.errors import LoraEqError

from .stats import bootstrap_ci, mcnemar_exact_p, paired_permutation_p

VERDICTS = ("learned", "memorized", "closer in wording", "no effect", "worse than base", "inconclusive")


@dataclass(frozen=True)
class Paired:
    """Variant against base on the same rows: means, mean difference (variant - base), its CI and p."""

    base: float
    variant: float
    diff: float
    ci: tuple[float, float]
    p_value: float
    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise LoraEqError(f"n={self.n}: a paired comparison needs at least one example")
        if not 0 <= self.p_value <= 1:
            raise LoraEqError(f"p_value={self.p_value!r}: must be in [0, 1]")
        lo, hi = self.ci
        if not lo <= hi:
            raise LoraEqError(f"ci=({lo!r}, {hi!r}): the low end is above the high end")

    @classmethod
    def of(cls, base, variant, *, n_resamples: int = 2000, n_permutations: int = 10000, seed: int = 0) -> "Paired":
        b, v = np.asarray(base, dtype=np.float64), np.asarray(variant, dtype=np.float64)
        if b.shape != v.shape or b.ndim != 1:
            raise LoraEqError(f"paired values need equal 1-D shapes, got {b.shape} and {v.shape}")
        d = v - b
        lo, hi = bootstrap_ci(d, n_resamples=n_resamples, seed=seed)
        p = paired_permutation_p(d, n_resamples=n_permutations, seed=seed)
        return cls(float(b.mean()), float(v.mean()), float(d.mean()), (lo, hi), p, int(d.size))

    def up(self, alpha: float) -> bool:
        """Significantly higher than the base."""
        return self.ci[0] > 0 and self.p_value < alpha

    def down(self, alpha: float) -> bool:
        """Significantly lower than the base."""
        return self.ci[1] < 0 and self.p_value < alpha

    def to_json(self) -> dict:
        return {"base": self.base, "variant": self.variant, "diff": self.diff, "ci": list(self.ci),
                "p_value": self.p_value, "n": self.n}


@dataclass(frozen=True)
class Matches:
    """Held-out answers matching their reference, base vs variant on the same rows (exact McNemar p)."""

    base: int  # rows the base's answer matches
    variant: int
    n: int
    p_value: float

    @classmethod
    def of(cls, base, variant) -> "Matches":
        b, v = np.asarray(base, dtype=bool), np.asarray(variant, dtype=bool)
        return cls(int(b.sum()), int(v.sum()), int(b.size), mcnemar_exact_p(b, v))

    def up(self, alpha: float) -> bool:
        return self.variant > self.base and self.p_value < alpha

    def down(self, alpha: float) -> bool:
        return self.variant < self.base and self.p_value < alpha

    def rates(self) -> str:
        """'68% of the time (base 4%)'"""
        return f"{self.variant / self.n:.0%} of the time (base {self.base / self.n:.0%})"

    def to_json(self) -> dict:
        return {"base": self.base, "variant": self.variant, "n": self.n, "p_value": self.p_value,
                "base_rate": self.base / self.n, "variant_rate": self.variant / self.n}


@dataclass(frozen=True)
class Thresholds:
    """Where the verdict rules draw their lines (see the module docstring)."""

    alpha: float = 0.01  # significance level of every test
    no_effect_kl: float = 1e-4  # nats per answer position
    no_effect_logit: float = 1e-3  # largest |logit difference| that still counts as unchanged
    memorized_train_drop: float = 0.2  # share of the base's train loss the variant must shed
    memorized_generalization: float = 0.5  # held-out drop / train drop under this: did not generalize
    memorized_auc: float = 0.75  # membership AUC at least this: train rows stand out

    def __post_init__(self) -> None:
        for name in ("alpha", "no_effect_kl", "no_effect_logit", "memorized_train_drop", "memorized_generalization",
                     "memorized_auc"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoraEqError(f"{name}={value!r}: must be a positive number")
        if not self.alpha < 1:
            raise LoraEqError(f"alpha={self.alpha!r}: must be below 1")

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evidence:
    """Everything the verdict of one variant rests on."""

    similarity: Paired  # held-out answers' cosine similarity to the reference
    heldout_loss: Paired
    train_loss: Paired  # on a sample of the rows this variant trained on
    kl_to_base: float
    max_logit_diff: float
    logit_resolution: float = 0.0  # rounding step of the logits at their largest value
    membership_auc: float = 0.5  # train vs held-out by loss ratio variant/base
    min_k_auc: float = 0.5  # train vs held-out by the variant's Min-K% Prob
    matches: Matches | None = None  # answers matching their reference, base vs variant

    def __post_init__(self) -> None:
        if self.kl_to_base < 0 or self.max_logit_diff < 0:
            raise LoraEqError("a divergence cannot be negative")

    def generalization(self) -> float:
        """Held-out loss drop as a share of the train loss drop (1: all of it carried over)."""
        train_drop = -self.train_loss.diff
        return -self.heldout_loss.diff / train_drop if train_drop > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    label: str
    sentence: str

    def __post_init__(self) -> None:
        if self.label not in VERDICTS:
            raise LoraEqError(f"verdict {self.label!r}: must be one of {', '.join(VERDICTS)}")


def is_no_effect(e: Evidence, t: Thresholds) -> bool:
    logit_limit = max(t.no_effect_logit, 2 * e.logit_resolution)
    return e.kl_to_base < t.no_effect_kl and e.max_logit_diff < logit_limit


def is_memorized(e: Evidence, t: Thresholds) -> bool:
    big_drop = -e.train_loss.diff >= t.memorized_train_drop * e.train_loss.base
    return (
        e.train_loss.down(t.alpha)
        and big_drop
        and e.generalization() < t.memorized_generalization
        and e.membership_auc >= t.memorized_auc
    )


def answers_up(e: Evidence, t: Thresholds) -> bool:
    return e.similarity.up(t.alpha) or (e.matches is not None and e.matches.up(t.alpha))


def answers_down(e: Evidence, t: Thresholds) -> bool:
    return e.similarity.down(t.alpha) or (e.matches is not None and e.matches.down(t.alpha))


def decide(e: Evidence, t: Thresholds | None = None) -> Verdict:
    """The verdict for one variant, by the rules in the module docstring."""
    t = t or Thresholds()
    sim, held = e.similarity, e.heldout_loss
    if is_no_effect(e, t):
        return Verdict("no effect", f"no effect: same as the base (mean KL {e.kl_to_base:.2g} nats/token, "
                                    f"max |logit difference| {e.max_logit_diff:.2g})")
    if is_memorized(e, t):
        return Verdict("memorized", (
            f"memorized, did not generalize: train loss {_arrow(e.train_loss)} ({describe(e.train_loss)}) "
            f"but held-out loss {_arrow(held)} ({_carried(e)}); "
            f"held-out similarity {describe(sim)}; membership AUC {e.membership_auc:.2f}, "
            f"Min-K% AUC {e.min_k_auc:.2f}"))
    up, down = answers_up(e, t), answers_down(e, t)
    if up and not down:
        return Verdict("learned", f"learned: {_answers(e)}; held-out loss {_arrow(held)}")
    if held.down(t.alpha) and not up and not down:
        return Verdict("closer in wording", (
            f"closer to the data's wording; answers not measurably better: held-out loss {_arrow(held)} "
            f"({describe(held)}); {_answers(e)}"))
    if down or held.up(t.alpha):
        return Verdict("worse than base", f"worse than base: {_answers(e)}; held-out loss {_arrow(held)} ({describe(held)})")
    return Verdict("inconclusive", (
        f"inconclusive: {_answers(e)}; held-out loss {_arrow(held)} ({describe(held)}); "
        f"changed from the base (mean KL {e.kl_to_base:.2g} nats/token) without a significant effect"))


def _answers(e: Evidence) -> str:
    text = f"held-out similarity {describe(e.similarity)}"
    if e.matches is not None:
        text += f"; answers match the reference {e.matches.rates()}, McNemar {format_p(e.matches.p_value)}"
    return text


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def describe(x: Paired) -> str:
    """'+0.18 [+0.12, +0.24], p < 0.001'"""
    return f"{x.diff:+.2f} [{x.ci[0]:+.2f}, {x.ci[1]:+.2f}], {format_p(x.p_value)}"


def _carried(e: Evidence) -> str:
    share = e.generalization()
    return f"{share:.0%} of the train drop carried over" if share > 0 else "none of the train drop carried over"


def _arrow(x: Paired) -> str:
    return f"{x.base:.2f} -> {x.variant:.2f}"
