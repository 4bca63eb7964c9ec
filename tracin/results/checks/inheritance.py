"""The known-positive control (DataConfig.shortcut_mode "inherit"): each replica teacher learned its own
planted shortcut class c_r, and its students saw the stamp on every class with true labels, so only the
teacher's soft targets carry it.

- behaviour: the share of test images of other classes taken for c_r, stamped and clean, per role; for
  distilled students on another teacher's class (the control); the student's excess over the baseline and
  over the control on stamped rows (paired per test row);
- attribution: on the field's shortcut rows of each replica (stamped test images whose class is not c_r;
  and those the student takes for c_r), the student's overlap@k with its own teacher less its mean overlap
  with the other replicas' teachers (k: 10 and the file's largest).

Both read every replica of the file, whichever models the report shows."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from tracin.config import ENSEMBLE_SUFFIX, replicas_by_role
from tracin.results import sanity, statistics
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import INHERITED, MODEL_ROWS, Row
from tracin.results.store import ScoreFile


def _replicas(models: Sequence[str]) -> tuple[dict[str, dict[int, str]], list[int]]:
    """The models by role and replica, and the replicas with both a teacher and a distilled student."""
    by_role = replicas_by_role([m for m in models if not m.endswith(ENSEMBLE_SUFFIX)])
    return by_role, sorted(r for r in by_role.get("teacher", {}) if r in by_role.get("student", {}))


def _mean_over_replicas(samples: list[np.ndarray]) -> np.ndarray:
    """float64 [n_test]: per test row, the mean of the replicas' values that are defined (a row none defines
    stays NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for such a row
        return np.nanmean(samples, axis=0)


def _behaviour_rows(inputs: ReportInputs) -> list[Row]:
    store, seed = inputs.store, inputs.seed
    if not store.inherit_mode:
        return []
    by_role, replicas = _replicas(store.models)
    labels, stamped = store.test_labels, store.test_stamped
    predictions = {name: store.model(name).predictions for names in by_role.values() for name in names.values()}
    if not replicas or any(p is None for p in predictions.values()):
        return []

    def taken(name: str, shortcut: int, rows: np.ndarray) -> np.ndarray:
        values = np.full(len(labels), np.nan)
        chosen = rows & (labels != shortcut)
        values[chosen] = predictions[name][0][chosen] == shortcut
        return values

    shortcut = {r: store.shortcut_of(by_role["teacher"][r]) for r in replicas}
    found, side_values = [], {}
    for side, rows in (("stamped", stamped), ("clean", ~stamped)):
        for role in ("teacher", "student", "student_baseline"):
            names = {r: by_role.get(role, {}).get(r) for r in replicas}
            if any(n is None for n in names.values()):
                continue
            values = _mean_over_replicas([taken(names[r], shortcut[r], rows) for r in replicas])
            side_values[side, role] = values
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: taken for teacher's class, {side}", role, MODEL_ROWS, values, np.nan, seed
                )
            )
        if len(replicas) > 1:
            values = _mean_over_replicas(
                [taken(by_role["student"][o], shortcut[r], rows) for r in replicas for o in replicas if o != r]
            )
            side_values[side, "control"] = values
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: another teacher's class, {side}", "student", MODEL_ROWS, values, np.nan, seed
                )
            )
    for other, label in (("student_baseline", "baseline"), ("control", "control")):
        if ("stamped", other) in side_values:
            difference = side_values["stamped", "student"] - side_values["stamped", other]
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: stamped, student - {label}", "student", MODEL_ROWS, difference, 0.0, seed
                )
            )
    return found


def _attribution_rows(inputs: ReportInputs) -> list[Row]:
    """Per variant of the report's first model (the filtered rows need the students' stored predictions)."""
    if not inputs.store.inherit_mode:
        return []
    return [row for variant in inputs.store.model(inputs.models[0]).variants for row in _attribution(inputs, variant)]


def _attribution(inputs: ReportInputs, variant: str) -> list[Row]:
    store, seed = inputs.store, inputs.seed
    by_role, replicas = _replicas(store.models)
    if len(replicas) < 2 or any(
        variant not in store.model(by_role[r][i]).variants for r in ("teacher", "student") for i in replicas
    ):
        return []
    top = {(role, r): inputs.top_index(by_role[role][r], variant) for role in ("teacher", "student") for r in replicas}
    labels, stamped = store.test_labels, store.test_stamped
    found = []
    shortcut = {r: store.shortcut_of(by_role["teacher"][r]) for r in replicas}
    predictions = [store.model(by_role["student"][r]).predictions for r in replicas]
    rows = {"stamped": {r: stamped & (labels != shortcut[r]) for r in replicas}}
    if all(p is not None for p in predictions):
        rows["predicted"] = {r: rows["stamped"][r] & (p[0] == shortcut[r]) for r, p in zip(replicas, predictions)}
    depth = top["student", replicas[0]].shape[1]
    for k in sorted({min(sanity.SANITY_K, depth), depth}):
        difference = {}
        for r in replicas:
            own = statistics.overlap_at_k(top["student", r], top["teacher", r], k)
            other = np.mean(
                [statistics.overlap_at_k(top["student", r], top["teacher", o], k) for o in replicas if o != r], axis=0
            )
            difference[r] = own - other
        for which, chosen in rows.items():
            per_row = _mean_over_replicas([np.where(chosen[r], difference[r], np.nan) for r in replicas])
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: own - other teacher@{k}, {which}", "student", variant, per_row, 0.0, seed
                )
            )
    return found


def _verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    return sanity.inheritance_verdicts(table)


register_check(
    Check("known-positive control, behaviour", scope="file", rows=_behaviour_rows, order=20, verdicts=_verdicts)
)
register_check(Check("known-positive control, attribution", scope="file", rows=_attribution_rows, order=30))
