"""tracin.results.comparison: the registry of comparison tables, on a real tracin-score file: a statistic
registered here reaches the file, the text and the report's Markdown; stored tables keep their columns."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tracin.results.comparison import (
    TABLES,
    Column,
    CompareOptions,
    ComparisonTable,
    ScopePair,
    compare_models,
    format_tables,
    register_table,
)
from tracin.results.markdown import comparison_tables
from tracin.results.store import ScoreFile

# The columns of the tables of the first file format: readers of older files rely on them, and every
# later format keeps them (a text column may widen: the scope was S16 before layer-group variants).
SCOPE = [("scope", "S64")]
SUMMARY = [("mean", "f8"), ("median", "f8"), ("min", "f8"), ("max", "f8")]
STORED_COLUMNS = {
    "overlap": SCOPE
    + [("direction", "S8"), ("side", "S12"), ("k", "i8"), *SUMMARY, ("chance", "f8"), ("jaccard", "f8")],
    "rank_correlation": SCOPE
    + [("direction", "S8"), ("statistic", "S10"), *SUMMARY, ("n_rows", "i8"), ("n_undefined", "i8")],
    "ks": SCOPE + [("statistic", "f8"), ("pvalue", "f8"), ("scaled_statistic", "f8"), ("scaled_pvalue", "f8")],
    "self_influence": SCOPE + [("pearson", "f8"), ("spearman", "f8")],
}
OPTIONS = CompareOptions((3, 8))  # what tracin-score used for the tiny_scores file


def largest_score_rows(scope: ScopePair) -> list[dict]:
    """A throwaway statistic: each model's largest |score| in the scope, and their ratio."""
    matrix_a, matrix_b = scope.matrices()
    largest_a, largest_b = float(np.abs(matrix_a[:]).max()), float(np.abs(matrix_b[:]).max())
    return [{"largest_a": largest_a, "largest_b": largest_b, "ratio": largest_a / largest_b}]


LARGEST = ComparisonTable(
    "largest_score",
    "largest absolute score",
    (
        Column("largest_a", label="largest of a", format=".4g"),
        Column("largest_b", label="largest of b", format=".4g"),
        Column("ratio"),
    ),
    largest_score_rows,
)


@pytest.fixture
def scores_copy(tiny_scores, tmp_path):
    copy = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, copy)
    return copy


def test_the_tables_keep_the_columns_of_the_first_format():
    """New columns (the bootstrap CIs) are added; none of the first format's is renamed or retyped."""
    assert list(TABLES) == list(STORED_COLUMNS)
    for name, columns in STORED_COLUMNS.items():
        dtype = TABLES[name].dtype
        assert [(field, dtype[field]) for field, _ in columns] == [(f, np.dtype(t)) for f, t in columns], name
    assert {"ci_low", "ci_high", "jaccard_ci_low", "jaccard_ci_high"} <= set(TABLES["overlap"].dtype.names)
    assert {"ci_low", "ci_high"} <= set(TABLES["rank_correlation"].dtype.names)


def test_a_registered_statistic_reaches_the_file_the_text_and_the_report(scores_copy):
    with ScoreFile.open_read(scores_copy) as store:
        before = store.comparison("teacher", "student")
    register_table(LARGEST)
    try:
        with ScoreFile.open_read_write(scores_copy) as store:
            returned = compare_models(store, "teacher", "student", OPTIONS)
            stored = store.comparison("teacher", "student")
            text = format_tables("teacher", "student", stored)
            markdown = comparison_tables(store, "teacher", "student")
            teacher, student = store.model("teacher"), store.model("student")
            expected = [np.abs(teacher.matrix(i)[:]).max() / np.abs(student.matrix(i)[:]).max() for i in (None, 0, 1)]
    finally:
        del TABLES[LARGEST.name]
    assert list(stored) == [*STORED_COLUMNS, "largest_score"]
    for name in STORED_COLUMNS:  # the registered tables are untouched by the new one
        np.testing.assert_array_equal(stored[name], before[name])
        np.testing.assert_array_equal(returned[name], stored[name])
    table = stored["largest_score"]
    assert table["scope"].tolist() == [b"sum", b"epoch_002", b"epoch_004"]
    np.testing.assert_allclose(table["ratio"], expected, rtol=1e-6)
    sum_row = table[0]
    assert "teacher vs student: largest absolute score" in text
    assert f"{sum_row['largest_a']:.4g}" in text and f"{sum_row['ratio']:.3f}" in text and "largest of b" in text
    assert "(2 more rows, of other scopes" in text  # the text shows scope "sum"; the Markdown every row
    assert "**teacher vs student: largest absolute score**" in markdown
    assert "| scope | largest of a | largest of b | ratio |" in markdown
    assert (
        f"| epoch_004 | {table[2]['largest_a']:.4g} | {table[2]['largest_b']:.4g} | {table[2]['ratio']:.3f} |"
        in markdown
    )


def test_a_table_this_version_does_not_register_is_shown_by_its_columns(scores_copy):
    register_table(LARGEST)
    try:
        with ScoreFile.open_read_write(scores_copy) as store:
            compare_models(store, "teacher", "student", OPTIONS)
    finally:
        del TABLES[LARGEST.name]
    with ScoreFile.open_read(scores_copy) as store:
        stored = store.comparison("teacher", "student")
        text = format_tables("teacher", "student", stored)
        markdown = comparison_tables(store, "teacher", "student")
    ratio = stored["largest_score"][0]["ratio"]
    assert "teacher vs student: largest score" in text and f"{ratio:.3f}" in text
    assert "| scope | largest_a | largest_b | ratio |" in markdown


def test_the_text_shows_each_epochs_headline_overlap(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        tables = store.comparison("teacher", "student")
    text = format_tables("teacher", "student", tables)
    overlap = tables["overlap"]
    for row in overlap:
        headline = row["scope"] == b"sum" or (
            row["k"] == 8 and (row["direction"], row["side"]) in {(b"test", b"proponents"), (b"train", b"top")}
        )
        cells = [row[name].decode() for name in ("scope", "direction", "side")] + [str(row["k"]), f"{row['mean']:.3f}"]
        found = any(
            line.split()[:5] == cells and f"{row['jaccard']:.3f}" in line.split()[5:] for line in text.splitlines()
        )
        assert found == headline, row
    correlation = tables["rank_correlation"][tables["rank_correlation"]["scope"] == b"sum"][0]
    assert f"{correlation['median']:.3f}" in text and "constant rows left out" in text
    assert "Kolmogorov" in text and "self-influence" in text
