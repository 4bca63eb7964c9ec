"""Top-k cardinality, as concentration: the share of test examples whose top-1 proponent is the most
common one (lower is better; chance: the same share for random top-1 proponents)."""

from __future__ import annotations

from tracin.results import sanity
from tracin.results.checks import Check, ReportInputs, register_check
from tracin.results.sanity import Row


def _rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
    store = inputs.store
    top = inputs.top_index(name, variant)
    share, low, high = sanity.top1_share_ci(top[:, 0], inputs.seed)
    chance = sanity.random_top1_share(store.n_train, len(top), inputs.seed)
    return [Row("concentration: top-1 share (lower)", name, variant, share, low, high, chance, len(top))]


register_check(Check("concentration", scope="variant", rows=_rows, order=20))
