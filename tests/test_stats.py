"""The proof's statistics against known answers: hand-worked cases and scipy where it has the same test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from adapters.errors import LoraEqError
from evals.stats import bootstrap_ci, kl_divergence, mcnemar_exact_p, min_k_prob, paired_permutation_p, roc_auc

# ---- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(7)
    for diffs in (rng.normal(0.2, 1.0, 40), rng.exponential(1.0, 25) - 0.5, rng.normal(-1, 0.1, 200)):
        ours = bootstrap_ci(diffs, n_resamples=20000, seed=1)
        ref = sps.bootstrap((diffs,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                            rng=np.random.default_rng(2)).confidence_interval
        width = ref.high - ref.low
        # Two independent Monte-Carlo estimates of the same quantiles: they agree to a few % of the width.
        assert ours[0] == pytest.approx(ref.low, abs=0.05 * width)
        assert ours[1] == pytest.approx(ref.high, abs=0.05 * width)


def test_bootstrap_of_a_constant_is_that_constant_and_seeds_reproduce():
    assert bootstrap_ci([0.3] * 12) == pytest.approx((0.3, 0.3))
    x = np.arange(30.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)


def test_bootstrap_of_two_values_spans_their_resampled_means():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with chances 1/4, 1/2, 1/4: 2.5% and 97.5% are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000) == (0.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0], n_resamples=4000, confidence=0.4)
    assert lo == hi == 0.5


def test_bootstrap_interval_narrows_with_confidence_and_covers_the_mean():
    x = np.random.default_rng(0).normal(1.0, 2.0, 80)
    wide, narrow = bootstrap_ci(x, confidence=0.99), bootstrap_ci(x, confidence=0.5)
    assert wide[0] < narrow[0] < x.mean() < narrow[1] < wide[1]


def test_bootstrap_refuses_bad_input():
    for bad in ([], [1.0, np.nan]):
        with pytest.raises(LoraEqError):
            bootstrap_ci(bad)
    with pytest.raises(LoraEqError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


# ---- sign-flip permutation test ---------------------------------------------------------------


def test_sign_flip_hand_worked_cases():
    # [1, 2, 3]: of the 8 sign patterns only +++ and --- reach |sum| 6, so p = 2/8.
    assert paired_permutation_p([1.0, 2.0, 3.0]) == 0.25
    # Five equal positive differences: only all-plus and all-minus are as extreme: 2/32.
    assert paired_permutation_p([1.0] * 5) == 2 / 32
    # [1, -1]: every pattern has |mean| >= 0 = observed: p = 1.
    assert paired_permutation_p([1.0, -1.0]) == 1.0
    assert paired_permutation_p([0.0, 0.0, 0.0]) == 1.0
    # [3, 1, 1]: the 8 sums are 5, 3, 3, 1, -1, -3, -3, -5; two reach |5|: 2/8.
    assert paired_permutation_p([3.0, 1.0, 1.0]) == 0.25
    # [3, 1, 1, 1]: only all-plus (6) and all-minus (-6) reach |6|; the next largest is 3+1+1-1 = 4: 2/16.
    assert paired_permutation_p([3.0, 1.0, 1.0, 1.0]) == 2 / 16


def _scipy_paired(d, n_resamples, seed=0):
    res = sps.permutation_test((d, np.zeros_like(d)), lambda x, y, axis: np.mean(x - y, axis=axis),
                               permutation_type="samples", alternative="two-sided", n_resamples=n_resamples,
                               vectorized=True, rng=np.random.default_rng(seed))
    return res.pvalue


def test_sign_flip_exact_matches_scipy_exactly():
    rng = np.random.default_rng(3)
    for n in (4, 7, 10, 12):
        d = rng.normal(0.4, 1.0, n)
        assert paired_permutation_p(d) == pytest.approx(_scipy_paired(d, np.inf), rel=1e-12)


def test_sign_flip_monte_carlo_agrees_with_scipy_and_exact():
    rng = np.random.default_rng(5)
    d = rng.normal(0.25, 1.0, 40) + 0.3
    ours = paired_permutation_p(d, n_resamples=40000)
    ref = _scipy_paired(d, 40000)
    assert 0.005 < ref < 0.5  # a case where the p-value is neither 0 nor 1
    assert ours == pytest.approx(ref, abs=4 * np.sqrt(ref * (1 - ref) / 40000))
    # n = 14 computed both ways: Monte-Carlo within its noise of the exact enumeration.
    small = rng.normal(0.5, 1.0, 14)
    exact = paired_permutation_p(small)
    mc = paired_permutation_p(small, n_resamples=40000, exact_up_to=0)
    assert mc == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 40000) + 1e-4)


def test_sign_flip_monte_carlo_never_says_zero_and_detects_a_clear_shift():
    d = np.full(50, 0.3) + np.random.default_rng(1).normal(0, 0.05, 50)
    assert paired_permutation_p(d, n_resamples=2000) == 1 / 2001
    x = np.random.default_rng(2).normal(0, 1, 30)
    assert paired_permutation_p(np.concatenate([x, -x])) == pytest.approx(1.0, abs=1e-3)


# ---- AUC -------------------------------------------------------------------------------------


def test_auc_hand_example_with_ties():
    # pairs (pos, neg): 3>1, 3>2, 3>3 half, 2>1, 2=2 half, 2<3, 1=1 half, 1<2, 1<3 -> (1+1+.5+1+.5+0+.5+0+0)/9
    assert roc_auc([3, 2, 1], [1, 2, 3]) == pytest.approx(4.5 / 9)
    assert roc_auc([5, 6], [1, 2, 3]) == 1.0
    assert roc_auc([0], [1, 2]) == 0.0
    assert roc_auc([1, 1], [1]) == 0.5


def test_auc_matches_mann_whitney():
    rng = np.random.default_rng(9)
    pos, neg = np.round(rng.normal(0.5, 1, 37), 1), np.round(rng.normal(0, 1, 51), 1)  # rounding makes ties
    u = sps.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert roc_auc(pos, neg) == pytest.approx(u / (len(pos) * len(neg)), rel=1e-12)


# ---- Min-K% Prob and KL ----------------------------------------------------------------------


def test_min_k_prob_takes_the_least_likely_share():
    lp = [-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8]
    assert min_k_prob(lp, 0.2) == pytest.approx((-5.0 - 3.0) / 2)
    assert min_k_prob(lp, 1.0) == pytest.approx(np.mean(lp))
    assert min_k_prob([-2.0, -1.0], 0.2) == -2.0  # at least one token counts
    with pytest.raises(LoraEqError):
        min_k_prob(lp, 0.0)


def test_kl_divergence_known_values():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    kl = kl_divergence(np.log(p)[None] + 3.0, np.log(q)[None] - 1.0)  # shifting logits changes nothing
    assert kl[0] == pytest.approx(expected, rel=1e-12)
    assert kl[0] == pytest.approx(sps.entropy(p, q), rel=1e-12)
    logits = np.random.default_rng(0).normal(0, 3, (4, 50)).astype(np.float32)
    assert (kl_divergence(logits, logits) == 0).all()
    assert (kl_divergence(logits, logits[::-1]) > 0).all()
    with pytest.raises(LoraEqError, match="shapes"):
        kl_divergence(logits, logits[:2])


def test_mcnemar_exact_matches_scipy_binomtest_on_the_discordant_pairs():
    rng = np.random.default_rng(3)
    for n in (1, 5, 12, 40, 150):
        base = rng.random(n) < 0.4
        other = rng.random(n) < 0.7
        b = int(np.sum(base & ~other))
        c = int(np.sum(~base & other))
        expected = 1.0 if b + c == 0 else sps.binomtest(c, b + c, 0.5).pvalue
        assert mcnemar_exact_p(base, other) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_mcnemar_hand_cases_and_bad_input():
    assert mcnemar_exact_p([1, 0, 1], [1, 0, 1]) == 1.0  # no discordant pair
    assert mcnemar_exact_p([0] * 10, [1] * 10) == pytest.approx(2 / 2**10)  # 10 of 10 one way
    assert mcnemar_exact_p([1, 0], [0, 1]) == 1.0  # one each way
    with pytest.raises(LoraEqError, match="2 outcomes against 3"):
        mcnemar_exact_p([1, 0], [1, 0, 1])
