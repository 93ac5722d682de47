"""The statistics of the proof of learning, as small pure numpy functions.

Every test here is on per-example paired differences (variant minus base on the same rows):
a percentile bootstrap confidence interval of their mean, a two-sided sign-flip permutation test,
a rank AUC (Mann-Whitney) for membership signals, Min-K% Prob, the KL divergence between two
next-token distributions given as logits, and an exact McNemar test on paired pass / fail
outcomes (eval sets). Seeded, so a report is reproducible.
This file knows nothing about models, runs or verdicts (see `losses.py`, `verdict.py`).
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np

from adapters.errors import LoraEqError

# Above this many examples the 2^n exact sign-flip enumeration is replaced by Monte-Carlo.
EXACT_UP_TO = 16
# Relative tolerance when comparing a resampled statistic with the observed one: sums of the same
# numbers in another order differ in the last bits, and such ties must count as "as extreme".
_TIE_RTOL = 1e-9
# Resampled means are computed this many resamples at a time, so memory stays bounded for large n.
_CHUNK_CELLS = 4_000_000


def _vector(values, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise LoraEqError(f"{what}: no values")
    if not np.all(np.isfinite(x)):
        raise LoraEqError(f"{what}: holds NaN or infinite values")
    return x


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    rows = max(1, _CHUNK_CELLS // x.size)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        out[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return out


def bootstrap_ci(diffs, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (resampling examples with replacement)."""
    x = _vector(diffs, "bootstrap_ci")
    if not 0 < confidence < 1:
        raise LoraEqError(f"confidence={confidence!r}: must be between 0 and 1")
    if n_resamples < 1:
        raise LoraEqError(f"n_resamples={n_resamples!r}: must be at least 1")
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * tail, 100 * (1 - tail)])
    return float(lo), float(hi)


def _sign_flip_count(x: np.ndarray, observed: float, signs: np.ndarray) -> int:
    """How many sign vectors (rows of `signs`) give |mean| at least the observed |mean|."""
    stats = np.abs(signs @ x) / x.size
    return int(np.count_nonzero(stats >= observed * (1 - _TIE_RTOL)))


def paired_permutation_p(diffs, n_resamples: int = 10000, seed: int = 0, exact_up_to: int = EXACT_UP_TO) -> float:
    """Two-sided sign-flip test of "mean difference = 0" for paired differences.

    Under the null each difference is as likely negative as positive, so the mean's null
    distribution comes from flipping signs. Up to `exact_up_to` examples all 2^n flips are
    enumerated (exact p); above, `n_resamples` random flips with the +1 correction
    ((count + 1) / (n_resamples + 1)), which never reports p = 0.
    """
    x = _vector(diffs, "paired_permutation_p")
    observed = abs(float(x.mean()))
    if observed == 0.0:
        return 1.0
    if x.size <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=x.size)))
        return _sign_flip_count(x, observed, signs) / len(signs)
    if n_resamples < 1:
        raise LoraEqError(f"n_resamples={n_resamples!r}: must be at least 1")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // x.size)
    count = 0
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        signs = rng.choice((-1.0, 1.0), size=(stop - start, x.size))
        count += _sign_flip_count(x, observed, signs)
    return (count + 1) / (n_resamples + 1)


def roc_auc(scores_pos, scores_neg) -> float:
    """P(score of a positive > score of a negative), ties counting half: Mann-Whitney U / (n1 n2)."""
    pos = _vector(scores_pos, "roc_auc positives")
    neg = _vector(scores_neg, "roc_auc negatives")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each group of ties
    return (last - (counts - 1) / 2)[inverse]


def min_k_prob(token_logprobs, k: float = 0.2) -> float:
    """Min-K% Prob (Shi et al., 2023): the mean log-probability of the k share of least likely tokens.

    Text a model was trained on has fewer surprising tokens, so its score is higher. At least one
    token always counts.
    """
    x = _vector(token_logprobs, "min_k_prob")
    if not 0 < k <= 1:
        raise LoraEqError(f"k={k!r}: must be in (0, 1]")
    keep = max(1, int(x.size * k))
    return float(np.sort(x)[:keep].mean())


def log_softmax(logits) -> np.ndarray:
    """Log-softmax over the last axis; float32 input stays float32 (vocabulary-wide arrays are large)."""
    z = np.asarray(logits)
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(p_logits, q_logits) -> np.ndarray:
    """KL(P || Q) in nats per row, where P and Q are the softmax of the last axis of the logits."""
    p_logits, q_logits = np.asarray(p_logits), np.asarray(q_logits)
    if p_logits.shape != q_logits.shape:
        raise LoraEqError(f"kl_divergence: shapes {p_logits.shape} and {q_logits.shape} differ")
    log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
    # Rounding can make an exactly-equal pair come out at -1e-17; a divergence is never negative.
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)


def mcnemar_exact_p(base, variant) -> float:
    """Two-sided exact McNemar test of paired pass/fail outcomes (same rows, base vs variant): the
    binomial test of the discordant pairs against 1/2. 1.0 when no pair is discordant."""
    b, v = np.asarray(base, dtype=bool), np.asarray(variant, dtype=bool)
    if b.shape != v.shape or b.ndim != 1:
        raise LoraEqError(f"mcnemar_exact_p: {b.size} outcomes against {v.size}: pairs need equal lengths")
    only_base, only_variant = int(np.sum(b & ~v)), int(np.sum(~b & v))
    n, k = only_base + only_variant, min(only_base, only_variant)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def min_detectable_difference(diffs, alpha: float = 0.01, power: float = 0.8) -> float:
    """The smallest mean paired difference a two-sided test at `alpha` detects with `power`, from
    the observed spread of the differences (normal approximation): (z_(1-alpha/2) + z_power) * sd / sqrt(n)."""
    x = _vector(diffs, "differences")
    if x.size < 2:
        return math.inf
    z = NormalDist()
    return float((z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * x.std(ddof=1) / math.sqrt(x.size))
