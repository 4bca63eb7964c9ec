"""Counterfactual checks from tracin-validate, where it ran to the end: LDS of each model's own scores, and
the margin change when a test example's own top-k proponents are left out of retraining (chance: the
change when k random train examples are left out)."""

from __future__ import annotations

import numpy as np

from tracin.errors import StoreError
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import Row
from tracin.results.validation import OWN, RANDOM


def _rows(inputs: ReportInputs) -> list[Row]:
    try:
        record = inputs.store.validation()
    except StoreError:
        return []
    if record.status != "complete":
        return []
    leave_out, lds = record.tables()
    models = inputs.models
    rows = [
        Row("LDS", r["model"], r["variant"], r["lds"], r["ci_low"], r["ci_high"], 0.0, r["n_rows"])
        for r in lds
        if r["model"] == r["scores_of"] and r["model"].decode() in models
    ]
    random = {(r["model"], r["k"]): r["mean_change"] for r in leave_out if r["condition"] == RANDOM.encode()}
    for r in leave_out:
        if r["condition"] == OWN.encode() and r["model"].decode() in models:
            chance = random.get((r["model"], r["k"]), np.nan)  # removing k random examples moves the margin too
            rows.append(
                Row(
                    f"leave-top-{r['k']}-out margin change (lower)",
                    r["model"],
                    r["variant"],
                    r["mean_change"],
                    r["ci_low"],
                    r["ci_high"],
                    chance,
                    r["n_rows"],
                )
            )
    return rows


register_check(Check("tracin-validate", scope="file", rows=_rows, order=40))
