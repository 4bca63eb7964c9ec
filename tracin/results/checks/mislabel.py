"""Mislabel detection: with flipped training labels (tracin-train --label-noise), the AUC of ranking the
train examples by self-influence (per variant) and, as the baseline a ranking must beat, by their loss
at the last checkpoint (per model). Chance: 0.5."""

from __future__ import annotations

import numpy as np

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import MODEL_ROWS, Row
from tracin.results.store import ScoreFile


def _self_influence_rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
    store = inputs.store
    if not store.noisy.any():
        return []
    self_influence = store.model(name).variant_self_influence(variant)
    if self_influence is None:
        return []
    found = sanity.detection_scores(self_influence, store.noisy)
    return [sanity.summary_row("mislabel AUC", name, variant, found, 0.5, inputs.seed)]


def _loss_rows(inputs: ReportInputs, name: str) -> list[Row]:
    store = inputs.store
    if not store.noisy.any():
        return []
    found = sanity.detection_scores(store.model(name).last_loss, store.noisy)
    return [sanity.summary_row("mislabel AUC, loss baseline", name, MODEL_ROWS, found, 0.5, inputs.seed)]


def _verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    return sanity.mislabel_verdicts(table)  # both rows: a self-influence or loss ranking below chance


register_check(Check("mislabel detection", scope="variant", rows=_self_influence_rows, order=40))
register_check(Check("mislabel, loss baseline", scope="model", rows=_loss_rows, order=20, verdicts=_verdicts))
