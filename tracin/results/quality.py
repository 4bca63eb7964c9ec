"""Quality checks of attributions that need no retraining, per model and score variant.

- identical class (Hanawa et al., ICLR 2021): the fraction of a test example's top-k proponents whose
  training label is the test example's label, averaged over test examples (k = 1 and 10);
- concentration (Barshan et al., 2020): the share of test examples whose top-1 proponent is the single most
  common top-1 proponent, and the number of distinct training examples among all top-10 lists. Raw TracIn
  is known to let a few high-gradient outliers serve most test examples.

numpy on the stored top-k tables and labels; the store writes the table at /quality. The per-row
statistics are tracin.results.sanity's, which tracin-report reads with CIs: this table is their means.
"""

from __future__ import annotations

import numpy as np

from tracin.results.sanity import identical_class, top1_share

QUALITY_DTYPE = np.dtype(
    [
        ("model", "S40"),
        ("variant", "S64"),
        ("k", "i8"),
        ("identical_class_top1", "f8"),
        ("identical_class_topk", "f8"),
        ("top1_max_share", "f8"),
        ("distinct_in_topk", "i8"),
        ("n_test", "i8"),
    ]
)
QUALITY_K = 10


def identical_class_rate(top_index: np.ndarray, train_labels: np.ndarray, test_labels: np.ndarray, k: int) -> float:
    """Mean over test rows of the fraction of the top-k train positions (top_index [n_test, >= k]) whose
    label equals the row's test label."""
    return float(identical_class(top_index, train_labels, test_labels, k).mean())


def top1_max_share(top_index: np.ndarray) -> float:
    """Share of test rows whose top-1 train position is the most common top-1 position."""
    return top1_share(top_index[:, 0])


def distinct_in_topk(top_index: np.ndarray, k: int) -> int:
    """Number of distinct train positions among all rows' top-k lists."""
    return int(np.unique(top_index[:, :k]).size)


def quality_row(
    model: str, variant: str, top_index: np.ndarray, train_labels: np.ndarray, test_labels: np.ndarray
) -> tuple:
    """One row of QUALITY_DTYPE for a model's proponent table (test side) of one variant."""
    k = min(QUALITY_K, top_index.shape[1])
    return (
        model,
        variant,
        k,
        identical_class_rate(top_index, train_labels, test_labels, 1),
        identical_class_rate(top_index, train_labels, test_labels, k),
        top1_max_share(top_index),
        distinct_in_topk(top_index, k),
        len(top_index),
    )


def format_quality(table: np.ndarray) -> str:
    """The quality checks as text, a line per model and variant."""
    lines = ["quality checks (test proponents): same class as the test example, and concentration"]
    width = max((len(row["model"]) for row in table), default=0)
    variant_width = max((len(row["variant"]) for row in table), default=0)
    for row in table:
        lines.append(
            f"  {row['model'].decode():{width}s} {row['variant'].decode():{variant_width}s} same class top-1 {row['identical_class_top1']:6.1%}, "
            f"top-{row['k']} {row['identical_class_topk']:6.1%}; most common top-1 proponent serves "
            f"{row['top1_max_share']:6.1%} of {row['n_test']} tests; {row['distinct_in_topk']} distinct in top-{row['k']}"
        )
    return "\n".join(lines)
