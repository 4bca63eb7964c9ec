"""Identical class and identical subclass (Hanawa et al., ICLR 2021): the share of a test example's top-n
proponents of its own class (chance: that class's share of the train set), and, trained on merged classes
(tracin-train --coarse-labels), of its own fine class (chance: picking at random within the coarse class)."""

from __future__ import annotations

import numpy as np

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import Row


def _rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
    store, seed = inputs.store, inputs.seed
    top = inputs.top_index(name, variant)
    k = min(sanity.SANITY_K, top.shape[1])
    train_labels, test_labels = store.train_labels, store.test_labels
    class_share = np.bincount(train_labels, minlength=test_labels.max() + 1)[test_labels] / store.n_train
    rows = [
        sanity.summary_row(
            f"identical class top-{n}",
            name,
            variant,
            sanity.identical_class(top, train_labels, test_labels, n),
            float(class_share.mean()),
            seed,
        )
        for n in (1, k)
    ]
    if store.coarse:
        for n in (1, k):
            same, chance = sanity.identical_subclass(
                top, store.train_fine_labels, store.test_fine_labels, store.train_clean_labels, test_labels, n
            )
            rows.append(
                sanity.summary_row(f"identical subclass top-{n}", name, variant, same, float(np.nanmean(chance)), seed)
            )
    return rows


register_check(Check("identical class", scope="variant", rows=_rows, order=10))
