"""The model's test accuracy against the majority class's share: a model near chance has little to explain."""

from __future__ import annotations

import numpy as np

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import MODEL_ROWS, Row
from tracin.results.store import ScoreFile


def _rows(inputs: ReportInputs, name: str) -> list[Row]:
    predicted = inputs.predictions.get(name)
    if predicted is None:
        return []
    labels = inputs.store.test_labels
    majority = np.bincount(labels).max() / len(labels)
    correct = (predicted == labels).astype(np.float64)
    return [sanity.summary_row(sanity.ACCURACY, name, MODEL_ROWS, correct, float(majority), inputs.seed)]


def _verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    return sanity.accuracy_verdicts(table)


register_check(Check("accuracy", scope="model", rows=_rows, order=10, verdicts=_verdicts))
