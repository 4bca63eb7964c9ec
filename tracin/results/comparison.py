"""Teacher–student comparison of a finished score file: a registry of comparison tables, computed per
model pair, stored in the file (ScoreFile.write_comparison) and shown as text.

Scopes: "sum" (TracInCP over all checkpoints) and, when per-checkpoint scores were kept, "epoch_NNN"
for each epoch both models saved (single-checkpoint TracIn at matched epochs). Directions: "test"
(each test example ranks train examples: proponents/opponents) and "train" (each train example ranks
test examples: top/bottom, the direction of the original teacher–student study).

Adding a statistic: its pure function in tracin.results.statistics (arrays in, numbers out), and one
`register_table(ComparisonTable(...))` here whose `rows` calls it for one ScopePair. compare_models then
stores it, and format_tables, the Markdown of tracin.results.markdown and the notebooks show it, all
from the table's columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from tracin.config import split_variant
from tracin.engine.topk import Ranking
from tracin.results import statistics
from tracin.results.store import ModelScores, ScoreFile, rankings_name

SIDES = {"test": ("proponents", "opponents"), "train": ("top", "bottom")}
FLOAT_FORMAT = ".3f"  # how a float column is shown unless its Column says otherwise


@dataclass(frozen=True)
class CompareOptions:
    """ks: the k of overlap@k; max_rows: rows sampled for rank correlations (Kendall is O(n log n) a
    row); max_values: score values sampled for the KS test; seed for both samples."""

    ks: tuple[int, ...]
    max_rows: Optional[int] = 1000
    max_values: int = 1_000_000
    seed: int = 0

    def settings(self) -> dict:
        """What the file records beside the tables."""
        return {"ks": list(self.ks), "max_rows": self.max_rows or 0, "seed": self.seed}


@dataclass(frozen=True)
class ScopePair:
    """What a statistic compares in one scope: both models, and the position of the scope's checkpoint
    in each model's `epochs` (None in scope "sum": the sum over checkpoints)."""

    name: str
    a: ModelScores
    b: ModelScores
    options: CompareOptions
    index_a: Optional[int] = None
    index_b: Optional[int] = None
    variant: Optional[str] = None

    def matrices(self) -> tuple:
        """Both models' [n_train, n_test] score matrices of this scope, read lazily."""
        return self.a.matrix(self.index_a, self.variant), self.b.matrix(self.index_b, self.variant)

    def rankings(self) -> tuple[tuple[Ranking, Ranking], tuple[Ranking, Ranking]]:
        """((test, train) rankings of a, (test, train) rankings of b): the stored top-k tables of this scope."""
        epoch = None if self.index_a is None else self.a.epochs[self.index_a]
        name = rankings_name(epoch, self.variant)
        return self.a.rankings(name), self.b.rankings(name)


def matched_scopes(a: ModelScores, b: ModelScores, options: CompareOptions) -> list[ScopePair]:
    """Scope "sum" (the first variant), one scope named after each other variant both models hold (its
    sum over checkpoints), then "epoch_NNN" for every epoch both models kept with --per-checkpoint."""
    scopes = [ScopePair("sum", a, b, options)]
    for variant in a.variants[1:]:
        if variant in b.variants[1:]:
            scopes.append(ScopePair(variant, a, b, options, variant=variant))
    if a.has_per_checkpoint and b.has_per_checkpoint:
        for i, epoch in enumerate(a.epochs):
            if epoch in b.epochs:
                scopes.append(ScopePair(f"epoch_{epoch:03d}", a, b, options, i, b.epochs.index(epoch)))
    return scopes


# --- the registry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a comparison table: its name in the file, its numpy dtype, and how it is shown
    (label: the heading, default the name; format: a format spec, default FLOAT_FORMAT for floats)."""

    name: str
    dtype: str = "f8"
    label: str = ""
    format: str = ""


SCOPE = Column("scope", "S64")  # "sum", "epoch_NNN" or a variant (VARIANT@GROUP: group names are at most 32 characters)


def sum_scope(table: np.ndarray) -> np.ndarray:
    """bool [rows]: the rows of scope "sum" (all rows of a table without scopes)."""
    if "scope" not in (table.dtype.names or ()):
        return np.ones(len(table), dtype=bool)
    return table["scope"] == b"sum"


@dataclass(frozen=True)
class ComparisonTable:
    """A registered comparison table. rows(scope) gives its rows in one scope, each a dict keyed by
    column name (extra keys are ignored); the "scope" column is added. sum_only: computed in scope "sum"
    alone; layer_groups: computed in the scopes of layer-group variants (VARIANT@GROUP) too (the others
    skip them: at a scope per group and model pair they cost more than they tell). text_rows(table) -> bool [rows]: the rows format_tables prints (all rows go to the file and
    the Markdown)."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: Callable[[ScopePair], list[dict]]
    sum_only: bool = False
    text_rows: Callable[[np.ndarray], np.ndarray] = sum_scope
    layer_groups: bool = False

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(c.name, c.dtype) for c in (SCOPE, *self.columns)])

    def computes(self, scope: ScopePair) -> bool:
        """Whether the table has rows in this scope."""
        if self.sum_only:
            return scope.name == "sum"
        return self.layer_groups or scope.variant is None or split_variant(scope.variant)[1] is None

    def compute(self, scopes: Sequence[ScopePair]) -> np.ndarray:
        """The table over `scopes`: a numpy structured array [rows] of self.dtype."""
        names = self.dtype.names
        rows = [{**row, "scope": scope.name} for scope in scopes if self.computes(scope) for row in self.rows(scope)]
        return np.array([tuple(row[name] for name in names) for row in rows], dtype=self.dtype)


TABLES: dict[str, ComparisonTable] = {}  # name -> table, computed and shown in this order


def register_table(table: ComparisonTable) -> ComparisonTable:
    """Add (or replace) a comparison table: compare_models computes it from then on."""
    TABLES[table.name] = table
    return table


# --- the tables ----------------------------------------------------------------------------------------


def overlap_rows(scope: ScopePair) -> list[dict]:
    """overlap@k (summary), chance k/n and mean Jaccard of the stored top-k sets, per direction and side
    (in a layer group's scope, of the test examples' proponents only: the question asked of a group)."""
    (test_a, train_a), (test_b, train_b) = scope.rankings()
    n_train, n_test = scope.a.scores.shape
    of_group = scope.variant is not None and split_variant(scope.variant)[1] is not None
    directions = (("test", test_a, test_b, n_train),) + (() if of_group else (("train", train_a, train_b, n_test),))
    rows = []
    for direction, ra, rb, n_ranked in directions:
        for side, field in list(zip(SIDES[direction], ("top_index", "bottom_index")))[: 1 if of_group else 2]:
            for row in statistics.overlap_table(
                getattr(ra, field), getattr(rb, field), list(scope.options.ks), n_ranked, scope.options.seed
            ):
                rows.append({"direction": direction, "side": side, **row})
    return rows


def overlap_headline(table: np.ndarray) -> np.ndarray:
    """bool [rows]: every row of scope "sum", and of each matched epoch the test proponents and train
    top at the largest k."""
    leading = ((table["direction"] == b"test") & (table["side"] == b"proponents")) | (
        (table["direction"] == b"train") & (table["side"] == b"top")
    )
    return sum_scope(table) | (leading & (table["k"] == table["k"].max(initial=0)))


def correlation_rows(scope: ScopePair) -> list[dict]:
    """Spearman and Kendall per sampled row, in both directions; rows where either model's scores are
    constant (rank correlation undefined) are counted in n_undefined and left out of the summary."""
    matrix_a, matrix_b = scope.matrices()
    n_train, n_test = matrix_a.shape
    options = scope.options
    test_columns = statistics.sample_rows(n_test, options.max_rows, options.seed)
    train_rows = statistics.sample_rows(n_train, options.max_rows, options.seed + 1)
    rows = []
    for direction, a, b in (
        ("test", matrix_a[:, test_columns].T, matrix_b[:, test_columns].T),
        ("train", matrix_a[train_rows, :], matrix_b[train_rows, :]),
    ):
        for name, values in (("spearman", statistics.spearman_rows(a, b)), ("kendall", statistics.kendall_rows(a, b))):
            summary = statistics.summarize(values)
            ci_low, ci_high = statistics.bootstrap_ci([values], seed=options.seed)
            rows.append(
                {
                    "direction": direction,
                    "statistic": name,
                    **summary,
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "n_rows": summary["n"],
                    "n_undefined": summary["undefined"],
                }
            )
    return rows


def ks_rows(scope: ScopePair) -> list[dict]:
    """KS test on the same sampled (train, test) cells of both matrices, raw and scaled by std."""
    matrix_a, matrix_b = scope.matrices()
    n_train, n_test = matrix_a.shape
    rows = statistics.sample_rows(n_train, max(1, scope.options.max_values // n_test), scope.options.seed + 2)
    return [statistics.ks_test(matrix_a[rows, :], matrix_b[rows, :])]


def self_influence_rows(scope: ScopePair) -> list[dict]:
    """Pearson and Spearman correlation of the two models' self-influence."""
    return [statistics.correlation(scope.a.self_influence, scope.b.self_influence)]


SUMMARY = (Column("mean"), Column("median"), Column("min"), Column("max"))
CI = (Column("ci_low", label="95% CI low"), Column("ci_high", label="95% CI high"))  # bootstrap over rows

register_table(
    ComparisonTable(
        "overlap",
        "overlap of top-k sets",
        (
            Column("direction", "S8"),
            Column("side", "S12"),
            Column("k", "i8"),
            Column("mean", label="mean overlap"),
            *CI,
            Column("shared", label="mean shared", format=".1f"),
            *SUMMARY[1:],
            Column("chance", label="chance k/n", format=".4f"),
            Column("jaccard", label="Jaccard"),
            Column("jaccard_ci_low", label="Jaccard CI low"),
            Column("jaccard_ci_high", label="Jaccard CI high"),
        ),
        overlap_rows,
        text_rows=overlap_headline,
        layer_groups=True,
    )
)
register_table(
    ComparisonTable(
        "rank_correlation",
        "rank agreement per row",
        (
            Column("direction", "S8"),
            Column("statistic", "S10"),
            SUMMARY[0],
            *CI,
            *SUMMARY[1:],
            Column("n_rows", "i8", label="rows"),
            Column("n_undefined", "i8", label="constant rows left out"),
        ),
        correlation_rows,
    )
)
register_table(
    ComparisonTable(
        "ks",
        "score distributions: two-sample Kolmogorov–Smirnov",
        (
            Column("statistic", label="KS"),
            Column("pvalue", label="p", format=".2g"),
            Column("scaled_statistic", label="KS after scaling by std"),
            Column("scaled_pvalue", label="p (scaled)", format=".2g"),
        ),
        ks_rows,
    )
)
register_table(
    ComparisonTable(
        "self_influence",
        "self-influence correlation",
        (Column("pearson", label="Pearson"), Column("spearman", label="Spearman")),
        self_influence_rows,
        sum_only=True,
    )
)


def compare_models(store: ScoreFile, name_a: str, name_b: str, options: CompareOptions) -> dict[str, np.ndarray]:
    """Compute every registered table for models a and b over their matched scopes, store them in the
    file and return them (name -> numpy structured array [rows])."""
    scopes = matched_scopes(store.model(name_a), store.model(name_b), options)
    tables = {name: table.compute(scopes) for name, table in TABLES.items()}
    store.write_comparison(name_a, name_b, tables, options.settings())
    return tables


# --- showing any table ---------------------------------------------------------------------------------


def title_of(name: str) -> str:
    """A table's title: the registered one, or its name for a table this version does not register."""
    return TABLES[name].title if name in TABLES else name.replace("_", " ")


def columns_of(name: str, table: np.ndarray) -> list[Column]:
    """The columns of a stored table, in its dtype's order, with their registered label and format."""
    registered = {c.name: c for c in TABLES[name].columns} if name in TABLES else {}
    return [registered.get(field, Column(field, table.dtype[field].str)) for field in table.dtype.names]


def format_value(column: Column, value) -> str:
    """One cell as text: bytes decoded, floats with the column's format (default FLOAT_FORMAT)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (np.floating, float)):
        return format(float(value), column.format or FLOAT_FORMAT)
    return format(value.item() if isinstance(value, np.generic) else value, column.format)


def cells(name: str, table: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """(headings, formatted rows) of a stored table, for text and Markdown."""
    columns = columns_of(name, table)
    return [c.label or c.name for c in columns], [[format_value(c, row[c.name]) for c in columns] for row in table]


def text_table(name: str, table: np.ndarray, indent: str = "  ") -> list[str]:
    """The table as aligned text lines (text left-aligned, numbers right-aligned)."""
    headings, rows = cells(name, table)
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows)]
    numeric = [table.dtype[field].kind in "iuf" for field in table.dtype.names]
    return [indent + _aligned(row, widths, numeric) for row in [headings, *rows]]


def _aligned(row: Sequence[str], widths: Sequence[int], numeric: Sequence[bool]) -> str:
    """The cells padded to their column's width: numbers right-aligned, text left-aligned."""
    return "  ".join(cell.rjust(w) if right else cell.ljust(w) for cell, w, right in zip(row, widths, numeric)).rstrip()


def format_tables(name_a: str, name_b: str, tables: dict[str, np.ndarray]) -> str:
    """Every table of the comparison as text: its title, then its headline rows (text_rows: by default
    scope "sum"), saying how many more rows the file holds."""
    lines = []
    for name, table in tables.items():
        shown = (TABLES[name].text_rows if name in TABLES else sum_scope)(table)
        lines.append(f"{name_a} vs {name_b}: {title_of(name)}")
        lines += text_table(name, table[shown])
        if not shown.all():
            lines.append(
                f"  ({int((~shown).sum())} more rows, of other scopes (variants, matched epochs), in the file and report.md)"
            )
    return "\n".join(lines)
