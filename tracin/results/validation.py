"""Counterfactual checks of the scores: does a prediction move when the data the scores credit are removed?

- Leave-top-k-out: for sampled test examples, retrain without the k train examples a ranking names (the
  model's own top-k proponents, its teacher's, the baseline student's, its k strongest opponents, or k
  random ones) and measure the change of the test example's margin against a retraining with nothing
  removed, from the same initial weights and seed (the zero line).
- Linear datamodeling score (LDS; Park et al. 2023, TRAK): retrain on random subsets (a fraction of the
  train examples each); for each test example, the Spearman correlation over subsets between the summed
  scores of each subset's examples and the margin the subset's model gives it; averaged over test examples.

Pure numpy: the retraining lives in tracin.training.trainer (retrain), the orchestration in
tracin.commands.validate, the file layout in tracin.results.store. Margins are logit margins,
z_label - max_{j != label} z_j (positive: predicted right).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import scipy.stats

from tracin.config import BASELINE, CONDITIONS, NONE, OPPONENTS, OWN, RANDOM, TEACHER  # noqa: F401 (re-exported)
from tracin.results import statistics

LDS_CONDITION = "subset"

UNIT_DTYPE = np.dtype(
    [("model", "S40"), ("condition", "S16"), ("test_row", "i8"), ("subset", "i8"), ("seed", "i8"), ("variant", "S64")]
)
LEAVE_OUT_DTYPE = np.dtype(
    [
        ("model", "S40"),
        ("condition", "S16"),
        ("variant", "S64"),
        ("k", "i8"),
        ("mean_change", "f8"),
        ("ci_low", "f8"),
        ("ci_high", "f8"),
        ("flipped", "f8"),
        ("n_rows", "i8"),
    ]
)
LDS_DTYPE = np.dtype(
    [
        ("model", "S40"),
        ("scores_of", "S40"),
        ("variant", "S64"),
        ("lds", "f8"),
        ("ci_low", "f8"),
        ("ci_high", "f8"),
        ("n_rows", "i8"),
        ("subsets", "i8"),
    ]
)


@dataclass(frozen=True)
class Plan:
    """What a validation retrains: models, the test rows sampled, k, each model's conditions, the score
    variants whose rankings the conditions remove (random needs none), LDS subsets and the fraction each
    keeps, retraining seeds per condition, and the seed of every draw."""

    models: tuple[str, ...]
    test_rows: tuple[int, ...]
    k: int
    conditions: dict[str, tuple[str, ...]]
    variants: tuple[str, ...]
    subsets: int
    fraction: float
    seeds: int
    seed: int = 0

    def variants_of(self, condition: str) -> tuple[str, ...]:
        """The variants a condition is retrained for: each of the plan's, or none ("") for random."""
        return ("",) if condition == RANDOM else self.variants

    def units(self) -> np.ndarray:
        """UNIT_DTYPE [n_units], in the order they are trained: per model, the zero line of each seed,
        then each test row's conditions (by each variant), then the LDS subsets (subset = -1, test_row = -1
        and variant "" where they do not apply)."""
        rows = []
        for model in self.models:
            if self.test_rows and self.conditions.get(model):  # the zero line is leave-out's reference only
                rows += [(model, NONE, -1, -1, s, "") for s in range(self.seeds)]
            rows += [
                (model, c, t, -1, s, v)
                for t in self.test_rows
                for c in self.conditions.get(model, ())
                for v in self.variants_of(c)
                for s in range(self.seeds)
            ]
            rows += [(model, LDS_CONDITION, -1, m, 0, "") for m in range(self.subsets)]
        return np.array(rows, dtype=UNIT_DTYPE)


def subset_masks(n_train: int, subsets: int, fraction: float, seed: int) -> np.ndarray:
    """bool [subsets, n_train]: each LDS subset's train examples, round(fraction * n_train) drawn
    without replacement (seeded)."""
    rng = np.random.default_rng([seed, 13])
    size = round(fraction * n_train)
    masks = np.zeros((subsets, n_train), dtype=bool)
    for m in range(subsets):
        masks[m, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def random_removal(n_train: int, k: int, test_row: int, seed: int) -> np.ndarray:
    """int64 [k]: k random train positions for the random condition of one test row (seeded by both)."""
    return np.sort(np.random.default_rng([seed, 17, test_row]).choice(n_train, size=k, replace=False))


def linear_datamodeling_score(scores: np.ndarray, masks: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """float64 [n_test]: per test example, the Spearman correlation over subsets between the predicted
    margin change (the sum of the scores of each subset's train examples: masks [M, n_train] @ scores
    [n_train, n_test]) and the subset model's margin (margins [M, n_test]); NaN where either is constant."""
    predicted = masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64)
    return statistics.spearman_rows(predicted.T, np.asarray(margins, dtype=np.float64).T)


def lds_interval(scores: np.ndarray, masks: np.ndarray, margins: np.ndarray) -> tuple[float, float]:
    """The confidence interval of the LDS (the mean over test examples of linear_datamodeling_score) with
    both of its sources of noise: the subsets and the test examples. Every test example's correlation is
    over the same subsets, so a subset whose retraining happened to go one way moves them all at once: a
    bootstrap over test examples alone cannot see that and is too narrow (with 10 subsets it gave
    `sanity`'s baseline an LDS whose CI lay below 0). Normal interval, LDS +- z * sqrt(the delete-one
    jackknife variance over subsets + the variance of the mean over test examples); a bootstrap that draws
    subsets with replacement would tie repeated subsets and bias a rank correlation down. Clipped to [-1, 1],
    where a mean of correlations lies (with few subsets the normal interval reaches past it). NaN with fewer
    than 3 subsets or 2 defined test examples."""
    predicted = masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64)  # [subsets, n_test]
    margins = np.asarray(margins, dtype=np.float64)
    per_row = statistics.spearman_rows(predicted.T, margins.T)
    defined = int(np.isfinite(per_row).sum())
    count = len(predicted)
    if count < 3 or defined < 2:
        return np.nan, np.nan
    with warnings.catch_warnings():  # a test example constant over the kept subsets: left out, as in the LDS
        warnings.simplefilter("ignore", RuntimeWarning)
        left_out = np.array(
            [
                np.nanmean(statistics.spearman_rows(np.delete(predicted, j, 0).T, np.delete(margins, j, 0).T))
                for j in range(count)
            ]
        )
    subsets = (count - 1) / count * float(np.sum((left_out - left_out.mean()) ** 2))
    rows = float(np.nanvar(per_row, ddof=1)) / defined
    half = scipy.stats.norm.ppf(0.5 + statistics.CONFIDENCE / 2) * np.sqrt(subsets + rows)
    lds = float(np.nanmean(per_row))
    return max(lds - half, -1.0), min(lds + half, 1.0)


def margin_changes(margins: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """float64 [rows]: each row's margin after a removal less its margin with nothing removed (same seed)."""
    return np.asarray(margins, dtype=np.float64) - np.asarray(zero, dtype=np.float64)


def leave_out_row(
    model: str,
    condition: str,
    variant: str,
    k: int,
    changes: np.ndarray,
    zero: np.ndarray,
    seed: int,
    test_rows: Optional[np.ndarray] = None,
) -> tuple:
    """One LEAVE_OUT_DTYPE row: the mean margin change over (test row, seed) pairs, its bootstrap CI, and
    the share of the pairs predicted right with nothing removed that the removal flips to wrong. The CI
    resamples test examples, not pairs: `test_rows` (int [pairs], the test row of each pair) clusters a
    test example's seeds, whose changes are not independent of each other (None: one pair per row)."""
    clusters = np.arange(len(changes)) if test_rows is None else np.unique(test_rows, return_inverse=True)[1]
    per_row = np.bincount(clusters, weights=changes) / np.bincount(clusters)
    low, high = statistics.bootstrap_ci([per_row], seed=seed)
    right = zero > 0
    flipped = float(np.mean((zero + changes)[right] <= 0)) if right.any() else np.nan
    return (model, condition, variant, k, float(np.mean(changes)), low, high, flipped, len(changes))


LDS_TOO_FEW = "fewer than 3 subsets or 2 test examples"  # what an LDS interval needs


def ci_text(low: float, high: float, why: str = "one test example") -> str:
    """'[+a, +b]', or the reason there is no interval (`why`; round 19, V16: '[+nan, +nan]' was printed)."""
    return f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) and np.isfinite(high) else f"[no CI: {why}]"


def flipped_text(share: float) -> str:
    """The share flipped right -> wrong as a percentage; '-' where no pair was right with nothing removed."""
    return f"{share:.1%}" if np.isfinite(share) else "-"


def format_validation(leave_out: np.ndarray, lds: Optional[np.ndarray] = None) -> str:
    """The leave-top-k-out and LDS tables as text."""
    lines = []
    if len(leave_out):
        lines.append(
            f"leave-top-k-out: change of the test example's margin after retraining without k train examples, "
            f"mean over test examples [{statistics.CONFIDENCE:.0%} bootstrap CI]; flipped: right -> wrong"
        )
        for row in leave_out:
            by = f"by {row['variant'].decode()}" if row["variant"] else ""
            lines.append(
                f"  {row['model'].decode():<20} remove {row['condition'].decode():<10} {by:<28} k={row['k']:<5} "
                f"{row['mean_change']:+8.3f} {ci_text(row['ci_low'], row['ci_high'])}  "
                f"flipped {flipped_text(row['flipped']):>6}  ({row['n_rows']} rows)"
            )
    if lds is not None and len(lds):
        lines.append(
            f"linear datamodeling score (Spearman over {lds['subsets'][0]} retrained subsets, mean over test "
            f"examples [{statistics.CONFIDENCE:.0%} bootstrap CI]; 0 = no better than chance)"
        )
        for row in lds:
            lines.append(
                f"  {row['model'].decode():<20} scores of {row['scores_of'].decode():<26} {row['variant'].decode():<28} "
                f"{row['lds']:+.3f} {ci_text(row['ci_low'], row['ci_high'], LDS_TOO_FEW)}"
            )
    return "\n".join(lines)


def sampled_test_rows(n_test: int, count: int, seed: int) -> tuple[int, ...]:
    """The test rows leave-top-k-out retrains for: a seeded sample of `count` (sorted)."""
    return tuple(int(r) for r in statistics.sample_rows(n_test, count, seed + 23))


def removal_positions(
    condition: str, test_row: int, k: int, n_train: int, top_index: np.ndarray, bottom_index: np.ndarray, seed: int
) -> np.ndarray:
    """int64 [k]: the train positions a leave-top-k-out unit removes: the test row's k first proponents
    in top_index [n_test, >= k] (own, teacher, baseline: the ranking of the model the condition names),
    its k strongest opponents in bottom_index (opponents), or k random ones."""
    if condition == RANDOM:
        return random_removal(n_train, k, test_row, seed)
    table = bottom_index if condition == OPPONENTS else top_index
    return np.asarray(table[test_row, :k], dtype=np.int64)


def conditions_for(role: str, asked: Sequence[str]) -> tuple[str, ...]:
    """The asked conditions that apply to a model of `role`: the teacher's proponents for the students
    (the baseline student's: a control that never saw the teacher), the baseline's for the distilled
    student; own, random and opponents for every model."""
    applies = {
        "teacher": (OWN, RANDOM, OPPONENTS),
        "student": CONDITIONS,
        "student_baseline": (OWN, TEACHER, RANDOM, OPPONENTS),
    }[role]
    return tuple(c for c in asked if c in applies)
