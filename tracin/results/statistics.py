"""Comparing two models' influence rankings: overlap@k, Jaccard, rank correlation, distributions.

Pure numpy/scipy on arrays; the HDF5 reading and writing lives in tracin.results.store. A new
teacher–student statistic is a function here plus its table registered in tracin.results.comparison
(register_table), which stores and shows it.

Conventions: a "top table" is an int array [rows, K] of column positions sorted by score (largest
first for proponents, smallest first for opponents), so the top-k for any k <= K is its first k
columns. Rows are either test examples (ranking train examples) or train examples (ranking test
examples).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import scipy.stats

CONFIDENCE = 0.95  # of every bootstrap confidence interval
RESAMPLES = 1000  # bootstrap resamples of the rows


def overlap_at_k(top_a: np.ndarray, top_b: np.ndarray, k: int) -> np.ndarray:
    """float64 [rows]: |top-k of a ∩ top-k of b| / k for each row. Each top-k set has distinct
    entries, so the shared ones are exactly the repeated values of the two sets side by side."""
    both = np.sort(np.concatenate([top_a[:, :k], top_b[:, :k]], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / k


def jaccard_at_k(top_a: np.ndarray, top_b: np.ndarray, k: int) -> np.ndarray:
    """float64 [rows]: |A ∩ B| / |A ∪ B| of the two top-k sets for each row."""
    shared = overlap_at_k(top_a, top_b, k) * k
    return shared / (2 * k - shared)


def chance_overlap(k: int, n: int) -> float:
    """Expected overlap@k of two independent uniformly random top-k sets out of n: k / n."""
    return k / n


def summarize(values: np.ndarray) -> dict[str, float]:
    """mean, median, min and max of a 1-D array, over its defined (non-NaN) entries, with their count
    `n` and the count `undefined` left out. All undefined gives NaN statistics, said by n = 0."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    stats = {"n": int(defined.size), "undefined": int(values.size - defined.size)}
    if defined.size == 0:
        return {"mean": np.nan, "median": np.nan, "min": np.nan, "max": np.nan, **stats}
    return {
        "mean": float(defined.mean()),
        "median": float(np.median(defined)),
        "min": float(defined.min()),
        "max": float(defined.max()),
        **stats,
    }


def constant_rows(a: np.ndarray) -> np.ndarray:
    """bool [rows]: rows whose values are all equal (e.g. an example with exactly zero gradient), for
    which a rank correlation is undefined."""
    return (a == a[:, :1]).all(axis=1)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [rows]: Spearman correlation of each row of a [rows, n] with the same row of b; NaN
    where either row is constant (undefined)."""
    return correlate_ranks(row_ranks(a), row_ranks(b))


def row_ranks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [rows, n] ranks of each row, ties averaged, less their mean; bool [rows] constant rows):
    one side of spearman_rows, to be ranked once and correlated with several others."""
    ranks = scipy.stats.rankdata(a, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    return ranks, constant_rows(a)


def correlate_ranks(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float64 [rows]: the Pearson correlation of two row_ranks per row (Spearman's rho); NaN where
    either row is constant."""
    (ranks_a, constant_a), (ranks_b, constant_b) = a, b
    denominator = np.sqrt((ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (ranks_a * ranks_b).sum(axis=1) / denominator
    return np.where(constant_a | constant_b, np.nan, values)


def kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [rows]: Kendall's tau-b of each row of a with the same row of b (scipy); NaN where
    either row is constant (undefined)."""
    undefined = constant_rows(a) | constant_rows(b)
    return np.array(
        [np.nan if skip else scipy.stats.kendalltau(x, y).statistic for x, y, skip in zip(a, b, undefined)],
        dtype=np.float64,
    )


def ks_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sample Kolmogorov–Smirnov test of two score samples, raw and each divided by its standard
    deviation (the models' gradient scales differ; the scaled test compares shapes)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    raw = scipy.stats.ks_2samp(a, b)
    scaled = scipy.stats.ks_2samp(a / a.std(), b / b.std())
    return {
        "statistic": float(raw.statistic),
        "pvalue": float(raw.pvalue),
        "scaled_statistic": float(scaled.statistic),
        "scaled_pvalue": float(scaled.pvalue),
    }


def correlation(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of two 1-D arrays (e.g. the models' self-influence)."""
    return {
        "pearson": float(scipy.stats.pearsonr(a, b).statistic),
        "spearman": float(scipy.stats.spearmanr(a, b).statistic),
    }


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable = np.mean, seed: int = 0) -> tuple[float, float]:
    """The CONFIDENCE percentile-bootstrap interval of statistic(*samples, axis=-1) over rows:
    scipy.stats.bootstrap resampling the rows (RESAMPLES times, the same rows of every sample: paired).
    Rows where any sample is NaN (undefined) are left out; fewer than 2 rows left gives (NaN, NaN), and
    so does a statistic that is NaN on some resamples (e.g. a normalised agreement whose replica
    agreement falls to chance)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in samples]
    defined = ~np.any([np.isnan(a) for a in arrays], axis=0)
    if defined.sum() < 2:
        return np.nan, np.nan
    with warnings.catch_warnings():  # a resample where the statistic is undefined makes the CI NaN, as said
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        result = scipy.stats.bootstrap(
            [a[defined] for a in arrays],
            statistic,
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            paired=True,
            vectorized=True,
            axis=-1,
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def detectable_from_ci(low: float, high: float) -> float:
    """The smallest difference a sample whose 95% CI is [low, high] sees with 80% power in a two-sided 5%
    test: 2.8 standard errors, the standard error read off the CI (width / 3.92)."""
    return 2.8 * (high - low) / 3.92


def normalised_agreement(
    between: np.ndarray, within_a: np.ndarray, within_b: np.ndarray, chance: float = 0.0, axis: int = -1
) -> np.ndarray:
    """Agreement of two models relative to each one's agreement with its own replica (Spearman's
    correction for attenuation, with chance removed first):

        (mean(between) - chance) / sqrt((mean(within_a) - chance) * (mean(within_b) - chance))

    over `axis` (per-row agreement values, e.g. overlap@k of each test example's proponents). 1: the
    two models agree as much as two trainings of one model do; 0: chance. NaN where a replica agreement
    is at or below chance (no signal to compare against)."""
    means = [np.mean(x, axis=axis) - chance for x in (between, within_a, within_b)]
    floor = means[1] * means[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((means[1] > 0) & (means[2] > 0), means[0] / np.sqrt(np.where(floor > 0, floor, 1.0)), np.nan)


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(a) - mean(b) over `axis` (paired per-row values)."""
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def overlap_table(top_a: np.ndarray, top_b: np.ndarray, ks: list[int], n_ranked: int, seed: int = 0) -> list[dict]:
    """One row per k: overlap@k summary (mean/median/min/max, fractions of k) with the bootstrap CI of its
    mean, the mean count of shared examples (mean * k), chance level k/n, and mean Jaccard with its CI."""
    rows = []
    for k in ks:
        overlap = overlap_at_k(top_a, top_b, k)
        jaccard = jaccard_at_k(top_a, top_b, k)
        ci_low, ci_high = bootstrap_ci([overlap], seed=seed)
        jaccard_low, jaccard_high = bootstrap_ci([jaccard], seed=seed)
        rows.append(
            {
                "k": k,
                **summarize(overlap),
                "ci_low": ci_low,
                "ci_high": ci_high,
                "shared": float(overlap.mean() * k),
                "chance": chance_overlap(k, n_ranked),
                "jaccard": float(jaccard.mean()),
                "jaccard_ci_low": jaccard_low,
                "jaccard_ci_high": jaccard_high,
            }
        )
    return rows


def sample_rows(n_rows: int, limit: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted row positions: all rows, or a seeded sample of `limit` of them (for costly statistics)."""
    if limit is None or n_rows <= limit:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))
