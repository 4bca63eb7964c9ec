"""The planted shortcut (Koh & Liang 2017; quanda's ShortcutDetectionMetric): with a stamped corner square
on part of one class's training images (tracin-train --shortcut-class),

- per variant: for stamped test examples of that class, the stamped share of their top-k proponents
  (precision@k; chance: the stamped share of the train set) and the AUC of the scores ranking the stamped
  train examples first; as the field defines it, the same precision and the AUPRC over stamped test images
  of other classes, unfiltered and filtered to those the model takes for the shortcut class;
- per model: whether it learned the shortcut at all (accuracy on stamped and clean test examples, and how
  often a test image of another class is taken for the shortcut class, stamped and clean);
- across models: the distilled student against its baseline, and the stamped proponents it shares with its
  own teacher and with another one (teacher.r1), beside the replicas' noise floor."""

from __future__ import annotations

import json

import numpy as np

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import MODEL_ROWS, Row
from tracin.results.store import ScoreFile


def _rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
    store, seed = inputs.store, inputs.seed
    shortcut = store.shortcut_of(name)
    if shortcut is None:
        return []
    stamped = store.train_stamped & (store.train_labels == shortcut)  # the train images that carry the shortcut
    test_rows = sanity.shortcut_test_rows(store.test_stamped, store.test_labels, shortcut)
    if len(test_rows) == 0:
        return []
    top = inputs.top_index(name, variant)
    k = min(sanity.SANITY_K, top.shape[1])
    precision = sanity.precision_at_k(top[test_rows], stamped, k)
    matrix = store.model(name).matrix(variant=variant)
    auc = sanity.ranking_auc(np.asarray(matrix[:, test_rows], dtype=np.float64), stamped)
    rows = [
        sanity.summary_row(f"shortcut precision@{k}", name, variant, precision, float(stamped.mean()), seed),
        sanity.summary_row("shortcut AUC", name, variant, auc, 0.5, seed),
    ]
    predictions = store.model(name).predictions
    for label, predicted in (
        ("other-class", None),
        ("predicted-as-shortcut", None if predictions is None else predictions[0]),
    ):
        if label == "predicted-as-shortcut" and predicted is None:
            continue
        chosen = sanity.shortcut_other_rows(store.test_stamped, store.test_labels, shortcut, predicted)
        if len(chosen) == 0:
            continue
        columns = np.asarray(matrix[:, chosen], dtype=np.float64)
        rows += [
            sanity.summary_row(
                f"{label} shortcut precision@{k}",
                name,
                variant,
                sanity.precision_at_k(top[chosen], stamped, k),
                float(stamped.mean()),
                seed,
            ),
            sanity.summary_row(
                f"{label} shortcut AUPRC",
                name,
                variant,
                sanity.average_precision(columns, stamped),
                float(stamped.mean()),
                seed,
            ),
        ]
    return rows


def _learned_rows(inputs: ReportInputs, name: str) -> list[Row]:
    store = inputs.store
    predicted = inputs.predictions.get(name)
    shortcut = store.shortcut_of(name)
    if predicted is None or shortcut is None:
        return []
    labels, stamped = store.test_labels, store.test_stamped
    correct = (predicted == labels).astype(np.float64)
    taken = (predicted == shortcut).astype(np.float64)
    other = labels != shortcut
    return [
        sanity.summary_row(check, name, MODEL_ROWS, values[chosen], np.nan, inputs.seed)
        for check, values, chosen in (
            ("accuracy, clean test", correct, ~stamped),
            ("accuracy, stamped test", correct, stamped),
            ("other class taken for shortcut class, clean", taken, ~stamped & other),
            ("other class taken for shortcut class, stamped", taken, stamped & other),
        )
    ]


def _distillation_rows(inputs: ReportInputs) -> list[Row]:
    """Per variant of the report's first model, per stamped test example of the shortcut class: the
    student's shortcut precision@k less the baseline's; the stamped examples the student shares with its
    own teacher's top-k and with another teacher's (teacher.r1), and the teacher with its replica (the
    noise floor)."""
    return [row for variant in inputs.store.model(inputs.models[0]).variants for row in _distillation(inputs, variant)]


def _distillation(inputs: ReportInputs, variant: str) -> list[Row]:
    store, seed = inputs.store, inputs.seed
    shortcut = store.shortcut_of("student")
    stamped = store.train_stamped & (store.train_labels == shortcut)
    names = [n for n in ("teacher", "student", "student_baseline", "teacher.r1", "student.r1") if n in store.models]
    if (
        shortcut is None
        or not {"teacher", "student"} <= set(names)
        or any(variant not in store.model(n).variants for n in names)
    ):
        return []
    test_rows = sanity.shortcut_test_rows(store.test_stamped, store.test_labels, shortcut)
    top = {n: inputs.top_index(n, variant)[test_rows] for n in names}
    k = min(sanity.SANITY_K, top["student"].shape[1])

    def shared(a: str, b: str) -> np.ndarray:
        return sanity.shared_stamped(top[a], top[b], stamped, k)

    found = []
    if "student_baseline" in top:
        difference = sanity.precision_at_k(top["student"], stamped, k) - sanity.precision_at_k(
            top["student_baseline"], stamped, k
        )
        found.append(
            sanity.summary_row(f"shortcut precision@{k} - baseline's", "student", variant, difference, 0.0, seed)
        )
    own = shared("teacher", "student")
    found.append(sanity.summary_row(f"stamped top-{k} shared with own teacher", "student", variant, own, np.nan, seed))
    if "teacher.r1" in top:
        other = shared("teacher.r1", "student")
        found += [
            sanity.summary_row(f"stamped top-{k} shared with another teacher", "student", variant, other, np.nan, seed),
            sanity.summary_row(
                f"stamped top-{k} shared: own - other teacher", "student", variant, own - other, 0.0, seed
            ),
            sanity.summary_row(
                f"stamped top-{k} shared with its replica",
                "teacher",
                variant,
                shared("teacher", "teacher.r1"),
                np.nan,
                seed,
            ),
        ]
    if "student.r1" in top:
        found.append(
            sanity.summary_row(
                f"stamped top-{k} shared with its replica",
                "student",
                variant,
                shared("student", "student.r1"),
                np.nan,
                seed,
            )
        )
    return found


def _verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    shortcut = store.shortcut_of("teacher")
    within = None if shortcut is None else float(store.train_stamped[store.train_labels == shortcut].mean())
    test_label = json.loads(store.attributes["settings"]).get("score.test_label", "label")
    return sanity.shortcut_verdicts(table, within, test_label)


register_check(Check("planted shortcut", scope="variant", rows=_rows, order=50, verdicts=_verdicts))
register_check(Check("shortcut learned", scope="model", rows=_learned_rows, order=30))
register_check(Check("shortcut distillation", scope="file", rows=_distillation_rows, order=10))
