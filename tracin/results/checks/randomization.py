"""Model randomization (Hanawa et al.): per test example, the Spearman correlation of the trained model's
scores with those of the same model with re-initialised weights, for each step of the cascade (from the
head down; tracin-report computes them into /randomization). Low is good."""

from __future__ import annotations

import numpy as np

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import Row
from tracin.results.store import ScoreFile


def _rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
    randomization = inputs.randomization
    mine = randomization[(randomization["model"] == name.encode()) & (randomization["variant"] == variant.encode())]
    rows = []
    for label in dict.fromkeys(mine["randomized"]):
        values = mine[mine["randomized"] == label]["spearman"]
        rows.append(
            sanity.summary_row(f"randomization: {label.decode()} (lower)", name, variant, values, 0.0, inputs.seed)
        )
    return rows


def _verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    return sanity.randomization_verdicts(table)


register_check(Check("model randomization", scope="variant", rows=_rows, order=30, verdicts=_verdicts))
