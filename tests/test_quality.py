"""Quality checks against direct computations, and in a real score file."""

from __future__ import annotations

import numpy as np
import pytest

from tracin.results import quality


def test_checks_equal_direct_counts():
    train_labels = np.array([0, 0, 1, 1, 2])
    test_labels = np.array([0, 1, 2])
    top = np.array([[0, 2, 1], [0, 3, 2], [4, 0, 1]])  # test 0: labels 0,1,0; test 1: 0,1,1; test 2: 2,0,0
    assert quality.identical_class_rate(top, train_labels, test_labels, 1) == pytest.approx(2 / 3)
    assert quality.identical_class_rate(top, train_labels, test_labels, 3) == pytest.approx(5 / 9)
    assert quality.top1_max_share(top) == pytest.approx(2 / 3)  # train 0 is the top-1 of two of three tests
    assert quality.distinct_in_topk(top, 2) == 4  # {0, 2, 3, 4}
    row = quality.quality_row("teacher", "raw", top, train_labels, test_labels)
    assert row[2] == 3 and row[-1] == 3
    text = quality.format_quality(np.array([row], dtype=quality.QUALITY_DTYPE))
    assert "teacher" in text and "66.7%" in text


def test_a_score_file_holds_the_checks_of_its_rankings(tiny_scores):
    from tracin.results.markdown import quality_checks_markdown
    from tracin.results.store import ScoreFile

    with ScoreFile.open_read(tiny_scores) as store:
        table = store.read_table("quality")
        for row in table:
            top = store.model(row["model"].decode()).rankings()[0].top_index
            assert row["identical_class_top1"] == quality.identical_class_rate(
                top, store.train_labels, store.test_labels, 1
            )
            assert row["top1_max_share"] == quality.top1_max_share(top)
        assert {r["model"].decode() for r in table} == set(store.models)
        assert "Quality checks of the proponents" in quality_checks_markdown(store)
