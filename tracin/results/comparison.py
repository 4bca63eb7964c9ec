"""Teacher–student comparison of a finished score file: tables in /comparison/<a>__<b>, and text.

Scopes: "sum" (TracInCP over all checkpoints) and, when per-checkpoint scores were kept, "epoch_NNN"
for each epoch both models saved (single-checkpoint TracIn at matched epochs). Directions: "test"
(each test example ranks train examples: proponents/opponents) and "train" (each train example ranks
test examples: top/bottom, the direction of the original teacher–student study).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np

from tracin.results import statistics as compare
from tracin.results.store import ModelScores, ScoreFile

SIDES = {"test": ("proponents", "opponents"), "train": ("top", "bottom")}
OVERLAP_DTYPE = np.dtype(
    [("scope", "S16"), ("direction", "S8"), ("side", "S12"), ("k", "i8"), ("mean", "f8"), ("median", "f8"),
     ("min", "f8"), ("max", "f8"), ("chance", "f8"), ("jaccard", "f8")]
)
CORRELATION_DTYPE = np.dtype(
    [("scope", "S16"), ("direction", "S8"), ("statistic", "S10"), ("mean", "f8"), ("median", "f8"),
     ("min", "f8"), ("max", "f8"), ("n_rows", "i8"), ("n_undefined", "i8")]
)
KS_DTYPE = np.dtype(
    [("scope", "S16"), ("statistic", "f8"), ("pvalue", "f8"), ("scaled_statistic", "f8"), ("scaled_pvalue", "f8")]
)


@dataclass(frozen=True)
class CompareOptions:
    """ks: the k of overlap@k; max_rows: rows sampled for rank correlations (Kendall is O(n log n) a
    row); max_values: score values sampled for the KS test; seed for both samples."""

    ks: tuple[int, ...]
    max_rows: Optional[int] = 1000
    max_values: int = 1_000_000
    seed: int = 0


def matched_scopes(a: ModelScores, b: ModelScores) -> list[tuple[str, Optional[int], Optional[int]]]:
    """("sum", None, None) plus ("epoch_NNN", index in a, index in b) for every epoch both kept."""
    scopes: list[tuple[str, Optional[int], Optional[int]]] = [("sum", None, None)]
    if "per_checkpoint" in a.group and "per_checkpoint" in b.group:
        for i, epoch in enumerate(a.epochs):
            if epoch in b.epochs:
                scopes.append((f"epoch_{epoch:03d}", i, b.epochs.index(epoch)))
    return scopes


def _rankings(scores: ModelScores, scope: str):
    return scores.rankings("topk" if scope == "sum" else f"topk_epoch/{scope}")


def overlap_rows(scope: str, a: ModelScores, b: ModelScores, ks, n_train: int, n_test: int) -> list[tuple]:
    (test_a, train_a), (test_b, train_b) = _rankings(a, scope), _rankings(b, scope)
    rows = []
    for direction, ra, rb, n_ranked in (("test", test_a, test_b, n_train), ("train", train_a, train_b, n_test)):
        for side, field in zip(SIDES[direction], ("top_index", "bottom_index")):
            for row in compare.overlap_table(getattr(ra, field), getattr(rb, field), list(ks), n_ranked):
                rows.append((scope, direction, side, row["k"], row["mean"], row["median"], row["min"],
                             row["max"], row["chance"], row["jaccard"]))
    return rows


def correlation_rows(scope: str, matrix_a, matrix_b, options: CompareOptions) -> list[tuple]:
    """Spearman and Kendall per sampled row, in both directions; rows where either model's scores are
    constant (rank correlation undefined) are counted in n_undefined and left out of the summary."""
    n_train, n_test = matrix_a.shape
    rows = []
    test_columns = compare.sample_rows(n_test, options.max_rows, options.seed)
    train_rows = compare.sample_rows(n_train, options.max_rows, options.seed + 1)
    for direction, a, b in (
        ("test", matrix_a[:, test_columns].T, matrix_b[:, test_columns].T),
        ("train", matrix_a[train_rows, :], matrix_b[train_rows, :]),
    ):
        for name, values in (("spearman", compare.spearman_rows(a, b)), ("kendall", compare.kendall_rows(a, b))):
            s = compare.summarize(values)
            rows.append((scope, direction, name, s["mean"], s["median"], s["min"], s["max"], s["n"], s["undefined"]))
    return rows


def ks_row(scope: str, matrix_a, matrix_b, options: CompareOptions) -> tuple:
    """KS test on the same sampled (train, test) cells of both matrices."""
    n_train, n_test = matrix_a.shape
    rows = compare.sample_rows(n_train, max(1, options.max_values // n_test), options.seed + 2)
    result = compare.ks_test(matrix_a[rows, :], matrix_b[rows, :])
    return (scope, result["statistic"], result["pvalue"], result["scaled_statistic"], result["scaled_pvalue"])


def compare_models(store: ScoreFile, name_a: str, name_b: str, options: CompareOptions) -> dict:
    """Compute and store /comparison/<a>__<b>; returns the tables as numpy structured arrays."""
    a, b = store.model(name_a), store.model(name_b)
    n_train, n_test = a.scores.shape
    overlap, correlations, ks = [], [], []
    for scope, index_a, index_b in matched_scopes(a, b):
        matrix_a, matrix_b = a.matrix(index_a), b.matrix(index_b)
        overlap += overlap_rows(scope, a, b, options.ks, n_train, n_test)
        correlations += correlation_rows(scope, matrix_a, matrix_b, options)
        ks.append(ks_row(scope, matrix_a, matrix_b, options))
    tables = {
        "overlap": np.array(overlap, dtype=OVERLAP_DTYPE),
        "rank_correlation": np.array(correlations, dtype=CORRELATION_DTYPE),
        "ks": np.array(ks, dtype=KS_DTYPE),
    }
    self_corr = compare.correlation(a.group["self_influence"][()], b.group["self_influence"][()])
    _write(store.h5, f"comparison/{name_a}__{name_b}", tables, self_corr, options)
    return {**tables, "self_influence": self_corr}


def _write(h5: h5py.File, name: str, tables: dict, self_corr: dict, options: CompareOptions) -> None:
    if name in h5:
        del h5[name]
    group = h5.create_group(name)
    for key, table in tables.items():
        group.create_dataset(key, data=table)
    group.create_group("self_influence").attrs.update(self_corr)
    group.attrs.update({"ks": list(options.ks), "max_rows": options.max_rows or 0, "seed": options.seed})
    h5.flush()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def format_tables(name_a: str, name_b: str, tables: dict) -> str:
    """The comparison as text: overlap@k over all checkpoints, matched epochs at the largest k,
    rank correlations, KS and self-influence correlation."""
    overlap = tables["overlap"]
    lines = [f"{name_a} vs {name_b}: overlap of top-k sets (TracInCP over all checkpoints)"]
    lines.append(f"  {'direction':9s} {'side':11s} {'k':>6s} {'mean':>6s} {'median':>6s} {'min':>6s} {'max':>6s} "
                 f"{'chance':>7s} {'jaccard':>7s}")
    for row in overlap[overlap["scope"] == b"sum"]:
        lines.append(
            f"  {_text(row['direction']):9s} {_text(row['side']):11s} {row['k']:6d} {row['mean']:6.3f} "
            f"{row['median']:6.3f} {row['min']:6.3f} {row['max']:6.3f} {row['chance']:7.4f} {row['jaccard']:7.3f}"
        )
    epochs = sorted({_text(s) for s in overlap["scope"]} - {"sum"})
    if epochs:
        k = int(overlap["k"].max())
        lines.append(f"  matched epochs, mean overlap@{k} (test proponents / train top):")
        for scope in epochs:
            pick = overlap[(overlap["scope"] == scope.encode()) & (overlap["k"] == k)]
            values = {(_text(r["direction"]), _text(r["side"])): r["mean"] for r in pick}
            lines.append(f"    {scope}: {values[('test', 'proponents')]:.3f} / {values[('train', 'top')]:.3f}")
    for row in tables["rank_correlation"][tables["rank_correlation"]["scope"] == b"sum"]:
        undefined = f" ({row['n_undefined']} constant rows left out)" if row["n_undefined"] else ""
        lines.append(
            f"  {_text(row['statistic']):8s} per {_text(row['direction'])} row: mean {row['mean']:.3f}, "
            f"median {row['median']:.3f}, range [{row['min']:.3f}, {row['max']:.3f}] over {row['n_rows']} rows{undefined}"
        )
    ks = tables["ks"][tables["ks"]["scope"] == b"sum"][0]
    lines.append(
        f"  score distributions: KS {ks['statistic']:.3f} (p={ks['pvalue']:.2g}); "
        f"after scaling by std: {ks['scaled_statistic']:.3f} (p={ks['scaled_pvalue']:.2g})"
    )
    corr = tables["self_influence"]
    lines.append(f"  self-influence: Pearson {corr['pearson']:.3f}, Spearman {corr['spearman']:.3f}")
    return "\n".join(lines)
