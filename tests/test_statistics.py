"""Comparison statistics against brute-force computations."""

import itertools

import numpy as np
import pytest
import scipy.stats

from tracin.config import parse_topk
from tracin.errors import TracinError
from tracin.results.statistics import (
    CONFIDENCE,
    bootstrap_ci,
    jaccard_at_k,
    kendall_rows,
    ks_test,
    mean_difference,
    normalised_agreement,
    overlap_at_k,
    overlap_table,
    sample_rows,
    spearman_rows,
    summarize,
)


@pytest.fixture
def tables():
    rng = np.random.default_rng(0)
    scores_a = rng.normal(size=(30, 50))
    scores_b = scores_a + rng.normal(scale=1.0, size=scores_a.shape)
    top_a = np.argsort(-scores_a, axis=1)[:, :20]
    top_b = np.argsort(-scores_b, axis=1)[:, :20]
    return scores_a, scores_b, top_a, top_b


def test_overlap_and_jaccard_equal_set_arithmetic(tables):
    _, _, top_a, top_b = tables
    for k in (1, 5, 20):
        expected = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(top_a, top_b)]
        jaccard = [len(set(a[:k]) & set(b[:k])) / len(set(a[:k]) | set(b[:k])) for a, b in zip(top_a, top_b)]
        np.testing.assert_allclose(overlap_at_k(top_a, top_b, k), expected)
        np.testing.assert_allclose(jaccard_at_k(top_a, top_b, k), jaccard)


def test_overlap_of_random_sets_is_near_chance():
    rng = np.random.default_rng(1)
    n, k = 200, 20
    a = np.stack([rng.permutation(n)[:k] for _ in range(2000)])
    b = np.stack([rng.permutation(n)[:k] for _ in range(2000)])
    table = overlap_table(a, b, [k], n)[0]
    assert abs(table["mean"] - table["chance"]) < 0.01 and table["chance"] == k / n


def test_spearman_rows_equal_scipy_per_row(tables):
    scores_a, scores_b, _, _ = tables
    expected = [scipy.stats.spearmanr(x, y).statistic for x, y in zip(scores_a, scores_b)]
    np.testing.assert_allclose(spearman_rows(scores_a, scores_b), expected, rtol=1e-12)


def test_kendall_rows_equal_pair_counting(tables):
    scores_a, scores_b, _, _ = tables
    a, b = scores_a[:4, :15], scores_b[:4, :15]
    expected = []
    for x, y in zip(a, b):
        signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(15), 2)]
        expected.append(sum(signs) / len(signs))
    np.testing.assert_allclose(kendall_rows(a, b), expected, rtol=1e-12)


def test_ks_detects_a_shift_and_accepts_equal_distributions():
    rng = np.random.default_rng(2)
    same = ks_test(rng.normal(size=3000), rng.normal(size=3000))
    shifted = ks_test(rng.normal(size=3000), rng.normal(loc=0.5, size=3000))
    scaled = ks_test(rng.normal(size=3000), 10 * rng.normal(size=3000))
    assert same["pvalue"] > 1e-3 and shifted["pvalue"] < 1e-10
    assert scaled["pvalue"] < 1e-10 and scaled["scaled_pvalue"] > 1e-3


def test_parse_topk_refuses_bad_lists():
    assert parse_topk("500, 100,1000") == [100, 500, 1000]
    assert parse_topk("100,300,500", limit=200, cap=True) == [100, 200]  # capped values may meet
    for bad, message in (
        ("", "at least one"),
        ("10,x", "integers"),
        ("0", "positive"),
        ("2.5", "integers"),
        ("5,5", "twice"),
        ("5,,10", "empty entry"),
        (" , ", "at least one"),
    ):
        with pytest.raises(TracinError, match=message):
            parse_topk(bad)
    with pytest.raises(TracinError, match="larger than the set"):
        parse_topk("100", limit=50)


def test_sample_rows_is_seeded_and_bounded():
    assert np.array_equal(sample_rows(10, None), np.arange(10))
    picked = sample_rows(1000, 50, seed=3)
    assert len(picked) == 50 and np.array_equal(picked, sample_rows(1000, 50, seed=3))
    assert np.all(np.diff(picked) > 0)


def test_constant_rows_are_undefined_and_left_out_of_summaries():
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
    b = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    for values in (spearman_rows(a, b), kendall_rows(a, b)):
        assert values[0] == pytest.approx(1.0) and np.isnan(values[1:]).all()
        summary = summarize(values)
        assert (summary["n"], summary["undefined"], summary["mean"]) == (1, 2, pytest.approx(1.0))
    assert np.isnan(summarize(np.array([np.nan]))["mean"]) and summarize(np.array([np.nan]))["n"] == 0


# --- bootstrap confidence intervals and the normalised agreement ------------------------------------------


def direct_percentile_bootstrap(samples, statistic, seed, resamples=4000):
    """A percentile bootstrap written out: resample rows (the same rows of every sample), take the
    statistic of each resample, and the 2.5% and 97.5% quantiles."""
    rng = np.random.default_rng(seed)
    n = len(samples[0])
    rows = rng.integers(0, n, size=(resamples, n))
    values = statistic(*[x[rows] for x in samples], axis=-1)
    alpha = (1 - CONFIDENCE) / 2
    return np.quantile(values, [alpha, 1 - alpha])


def test_bootstrap_ci_of_a_mean_matches_a_direct_bootstrap_and_the_normal_interval():
    values = np.random.default_rng(1).normal(0.3, 1.0, size=2000)
    low, high = bootstrap_ci([values], seed=3)
    direct = direct_percentile_bootstrap([values], np.mean, seed=5)
    normal = values.mean() + np.array([-1, 1]) * scipy.stats.norm.ppf(0.975) * values.std(ddof=1) / np.sqrt(len(values))
    # two independent resamplings agree to Monte-Carlo precision (a few % of the width)
    width = normal[1] - normal[0]
    assert abs(low - direct[0]) < 0.06 * width and abs(high - direct[1]) < 0.06 * width
    assert abs(low - normal[0]) < 0.06 * width and abs(high - normal[1]) < 0.06 * width
    assert low < values.mean() < high


def test_bootstrap_ci_leaves_out_undefined_rows_pairs_rows_and_keeps_constants():
    rng = np.random.default_rng(2)
    values = rng.random(500)
    with_gaps = values.copy()
    with_gaps[::7] = np.nan
    assert bootstrap_ci([with_gaps], seed=0) == bootstrap_ci([values[~np.isnan(with_gaps)]], seed=0)
    assert bootstrap_ci([np.full(50, 0.25)]) == (0.25, 0.25)
    assert all(np.isnan(bootstrap_ci([np.array([1.0, np.nan])])))
    # paired: the difference of a sample with itself plus a constant is exactly that constant in every resample
    assert bootstrap_ci([values + 0.1, values], mean_difference) == pytest.approx((0.1, 0.1))
    # paired, not independent: a difference of strongly correlated rows has a narrow interval
    other = values + rng.normal(0, 0.01, size=values.size)
    low, high = bootstrap_ci([values, other], mean_difference)
    assert high - low < 0.01


def test_normalised_agreement_is_the_disattenuated_ratio_above_chance():
    between, within_a, within_b = np.array([0.3, 0.5]), np.array([0.6, 0.8]), np.array([0.5, 0.5])
    chance = 0.1
    expected = (0.4 - chance) / np.sqrt((0.7 - chance) * (0.5 - chance))
    assert normalised_agreement(between, within_a, within_b, chance) == pytest.approx(expected)
    # as much agreement as the replicas: 1; chance: 0; replicas at chance: undefined
    assert normalised_agreement(within_a, within_a, within_a, chance) == pytest.approx(1.0)
    assert normalised_agreement(np.full(2, chance), within_a, within_b, chance) == pytest.approx(0.0)
    assert np.isnan(normalised_agreement(between, np.full(2, chance), within_b, chance))
    # vectorised over resamples exactly as row by row
    stacked = np.random.default_rng(0).random((3, 20, 40))
    rows = [normalised_agreement(stacked[0][i], stacked[1][i], stacked[2][i], 0.2) for i in range(20)]
    np.testing.assert_allclose(normalised_agreement(*stacked, chance=0.2), rows)


def test_overlap_table_carries_the_bootstrap_cis_of_overlap_and_jaccard(tables):
    _, _, top_a, top_b = tables
    row = overlap_table(top_a, top_b, [5], 50, seed=4)[0]
    assert (row["ci_low"], row["ci_high"]) == bootstrap_ci([overlap_at_k(top_a, top_b, 5)], seed=4)
    assert (row["jaccard_ci_low"], row["jaccard_ci_high"]) == bootstrap_ci([jaccard_at_k(top_a, top_b, 5)], seed=4)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
