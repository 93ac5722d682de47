"""The verdict per variant: learned, memorized, no effect, worse than base or inconclusive, in plain words.

`Paired` turns two per-example value lists (base, variant, on the same rows) into the mean of
their differences with a bootstrap interval and a sign-flip p-value (`stats.py`). `decide` applies
the documented rules below to a variant's `Evidence` and returns its label and one sentence that
carries the numbers it rests on. Pure: no model, no file.

A verdict of "learned" rests on facts, not on wording: the held-out answers must state the
reference's facts (its numbers, dates, codes and names: `matching.py`) significantly more often
than the base's (exact McNemar test on the rows whose outcome changed), or the user's own checks
must say so. Held-out loss and embedding similarity are dominated by wording: a variant that
learned the pattern of the answers and invents every number lowers both. Alone they make "closer
in wording", never "learned".

The user's checks outrank the automatic ones. When a run has eval sets (`matrix.py`), each one
is a `UserChecks`: the variant's passes against the base's on the same prompts (exact McNemar).
A variant is "learned" then only when every eval set shows a significant gain (p < 0.05, since
eval sets are small: 8 prompts reach p = 0.031 at 6 of 8 against none); when one does not, the
verdict says so in the same sentence, whatever the held-out answers show.

The rules, checked in this order (alpha = 0.01; "significant" means the 95% interval excludes 0
and p < alpha; for matches and checks, the McNemar p):
1. no effect: mean KL(base || variant) < 1e-4 nats per answer position and max |logit difference|
   < 1e-3 (or, for bf16/fp16 logits, under twice their rounding step at the largest logit). A
   LoRA with B = 0 (0 training steps) gives exactly 0 on both.
2. memorized (did not generalize): train loss significantly down by at least 20% of the base's,
   the held-out loss fell by less than half as much (the train/held-out gap grew by more than half
   the train drop), and the membership AUC (train rows told from held-out rows by their loss ratio
   variant/base) is at least 0.75. Checked before "learned" because a variant
   that memorized a few rows also answers held-out prompts in their form, which raises embedding
   similarity without the content being learned.
3. learned: with eval sets, every eval set passes significantly more prompts than the base (at
   0.05); without, significantly more held-out answers match the reference (state its facts).
   In both cases neither the held-out similarity nor the matches are significantly lower.
4. fails your checks: held-out answers match significantly more often, but an eval set of the
   user's shows no significant gain.
5. closer in wording: held-out similarity significantly up or held-out loss significantly down,
   while the answers do not state the facts measurably more often (or the user's checks fail).
6. worse than base: held-out similarity, matches or an eval set's passes significantly lower, or
   held-out loss significantly higher.
7. inconclusive: the variant changed the model but none of the above is shown at this sample size
   (the report says when the held-out set is too small to show an answer-level effect at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adapters.errors import LoraEqError

from .stats import bootstrap_ci, mcnemar_exact_p, paired_permutation_p

VERDICTS = ("learned", "memorized", "fails your checks", "closer in wording", "no effect", "worse than base",
            "inconclusive")


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
    facts: int | None = None  # rows whose reference has facts (numbers, dates, codes, names); None: not known

    @classmethod
    def of(cls, base, variant, facts: int | None = None) -> "Matches":
        b, v = np.asarray(base, dtype=bool), np.asarray(variant, dtype=bool)
        return cls(int(b.sum()), int(v.sum()), int(b.size), mcnemar_exact_p(b, v), facts)

    @property
    def of_facts(self) -> bool:
        """Most references carry facts: a match means the facts were stated."""
        return self.facts is not None and 2 * self.facts >= self.n

    def up(self, alpha: float) -> bool:
        return self.variant > self.base and self.p_value < alpha

    def down(self, alpha: float) -> bool:
        return self.variant < self.base and self.p_value < alpha

    def rates(self) -> str:
        """'68% of the time (base 4%)'"""
        return f"{self.variant / self.n:.0%} of the time (base {self.base / self.n:.0%})"

    def said(self) -> str:
        """'state the reference's facts in 14 of 24 (58%; base 0 of 24)'"""
        what = "state the reference's facts" if self.of_facts else "match the reference"
        return f"{what} in {self.variant} of {self.n} ({self.variant / self.n:.0%}; base {self.base} of {self.n})"

    def to_json(self) -> dict:
        return {"base": self.base, "variant": self.variant, "n": self.n, "p_value": self.p_value,
                "base_rate": self.base / self.n, "variant_rate": self.variant / self.n, "facts": self.facts}


@dataclass(frozen=True)
class UserChecks:
    """One eval set of the user's on one variant: prompts passed by the variant and by the base
    (on the prompts both have a verdict for), and the exact McNemar p of the difference."""

    name: str
    passed: int
    base_passed: int
    total: int
    p_value: float | None

    def gain(self, alpha: float) -> bool:
        return self.passed > self.base_passed and self.p_value is not None and self.p_value < alpha

    def loss(self, alpha: float) -> bool:
        return self.passed < self.base_passed and self.p_value is not None and self.p_value < alpha

    def text(self) -> str:
        """'your eval set quillmarsh-test passes 0/8 (base 0/8, p = 1.00)'"""
        p = "" if self.p_value is None else f", {format_p(self.p_value)}"
        return f"your eval set {self.name} passes {self.passed}/{self.total} (base {self.base_passed}/{self.total}{p})"

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Thresholds:
    """Where the verdict rules draw their lines (see the module docstring)."""

    alpha: float = 0.01  # significance level of every test
    no_effect_kl: float = 1e-4  # nats per answer position
    no_effect_logit: float = 1e-3  # largest |logit difference| that still counts as unchanged
    memorized_train_drop: float = 0.2  # share of the base's train loss the variant must shed
    memorized_generalization: float = 0.5  # held-out drop / train drop under this: did not generalize
    memorized_auc: float = 0.75  # membership AUC at least this: train rows stand out
    checks_alpha: float = 0.05  # significance level of an eval set's gain over the base (small sets)
    trained_facts: float = 0.8  # share of its training questions a variant must answer with their facts

    def __post_init__(self) -> None:
        for name in ("alpha", "no_effect_kl", "no_effect_logit", "memorized_train_drop", "memorized_generalization",
                     "memorized_auc", "checks_alpha", "trained_facts"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoraEqError(f"{name}={value!r}: must be a positive number")
        if not (self.alpha < 1 and self.checks_alpha < 1):
            raise LoraEqError(f"alpha={self.alpha!r}, checks_alpha={self.checks_alpha!r}: must be below 1")

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
    checks: tuple[UserChecks, ...] = ()  # the user's eval sets run on this variant and the base
    train_facts: tuple[int, int] | None = None  # (stated, asked): answers to its own training questions

    def __post_init__(self) -> None:
        if self.kl_to_base < 0 or self.max_logit_diff < 0:
            raise LoraEqError("a divergence cannot be negative")

    def facts_not_trained(self, share: float) -> bool:
        """Even on its own training questions, fewer than `share` of the answers state the facts."""
        if self.train_facts is None or not self.train_facts[1]:
            return False
        stated, asked = self.train_facts
        return stated < share * asked

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


def facts_up(e: Evidence, t: Thresholds) -> bool:
    return e.matches is not None and e.matches.up(t.alpha)


def answers_down(e: Evidence, t: Thresholds) -> bool:
    return (e.similarity.down(t.alpha) or (e.matches is not None and e.matches.down(t.alpha))
            or any(c.loss(t.checks_alpha) for c in e.checks))


def decide(e: Evidence, t: Thresholds | None = None) -> Verdict:
    """The verdict for one variant, by the rules in the module docstring."""
    t = t or Thresholds()
    held = e.heldout_loss
    if is_no_effect(e, t):
        return Verdict("no effect", f"no effect: same as the base (mean KL {e.kl_to_base:.2g} nats/token, "
                                    f"max |logit difference| {e.max_logit_diff:.2g})")
    if is_memorized(e, t):
        return Verdict("memorized", (
            f"memorized, did not generalize: train loss {_arrow(e.train_loss)} ({describe(e.train_loss)}) "
            f"but held-out loss {_arrow(held)} ({_carried(e)}); "
            f"held-out similarity {describe(e.similarity)}; membership AUC {e.membership_auc:.2f}, "
            f"Min-K% AUC {e.min_k_auc:.2f}"))
    failing = [c for c in e.checks if not c.gain(t.checks_alpha)]
    down, facts = answers_down(e, t), facts_up(e, t)
    wording = e.similarity.up(t.alpha) or held.down(t.alpha)
    if not down and ((e.checks and not failing) or (facts and not e.checks)):
        checks = "; ".join(c.text() for c in e.checks)
        return Verdict("learned", f"learned: {checks + '; ' if checks else ''}{_answers(e)}; "
                                  f"held-out loss {_arrow(held)}")
    if not down and facts:
        return Verdict("fails your checks", (
            f"fails your checks: held-out answers {e.matches.said()}, McNemar {format_p(e.matches.p_value)}, "
            f"but {_checks(failing)}: no significant gain on your own checks"))
    if not down and wording:
        return Verdict("closer in wording", (
            f"closer in wording: held-out answers closer to the data's wording (similarity {describe(e.similarity)}; "
            f"held-out loss {_arrow(held)}), but {_not_stated(e, failing)}{_untrained(e, t)}"))
    if down or held.up(t.alpha):
        return Verdict("worse than base", (
            f"worse than base: {_answers(e)}; held-out loss {_arrow(held)} ({describe(held)})"
            + "".join(f"; {c.text()}" for c in e.checks)))
    return Verdict("inconclusive", (
        f"inconclusive: {_answers(e)}; held-out loss {_arrow(held)} ({describe(held)}); "
        f"changed from the base (mean KL {e.kl_to_base:.2g} nats/token) without a significant effect"
        + "".join(f"; {c.text()}" for c in e.checks) + _untrained(e, t)))


def _untrained(e: Evidence, t: Thresholds) -> str:
    """'; even its own training questions ...: train longer' when the facts were not learned at all."""
    if not e.facts_not_trained(t.trained_facts):
        return ""
    stated, asked = e.train_facts
    return (f"; even on its own training questions it states the facts in only {stated} of {asked}: "
            "not learned yet, train longer")


def _checks(checks: list[UserChecks]) -> str:
    return " and ".join(c.text() for c in checks)


def _not_stated(e: Evidence, failing: list[UserChecks]) -> str:
    """Why wording is all it is: the user's failing checks, else the held-out matches."""
    if failing:
        return f"{_checks(failing)}: the facts are not learned"
    if e.matches is None:
        return "no answer-level check shows more than wording"
    if e.matches.of_facts:
        return (f"they {e.matches.said()}, McNemar {format_p(e.matches.p_value)}: "
                "the facts are not stated")
    return (f"they {e.matches.said()}, McNemar {format_p(e.matches.p_value)}: the answers do not say more of "
            "what the references say; add an eval set with your own checks to judge them")


def _answers(e: Evidence) -> str:
    text = ""
    if e.matches is not None:
        text = f"held-out answers {e.matches.said()}, McNemar {format_p(e.matches.p_value)}; "
    return text + f"held-out similarity {describe(e.similarity)}"


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
