"""The registry of tracin-report's checks, and the quality-report table they make together.

A check is one registered object (`Check`): its name, its scope, the rows it adds to /quality_report and,
optionally, its verdicts in words. Each module of this package registers its checks when imported, and
every module here is imported below, so a new check is one new file (and its test):

    from tracin.results.checks import Check, ReportInputs, register_check
    from tracin.results.sanity import summary_row

    def _rows(inputs: ReportInputs, name: str, variant: str) -> list[Row]:
        top = inputs.top_index(name, variant)
        return [summary_row("my check", name, variant, my_per_test_row_values(top), chance, inputs.seed)]

    register_check(Check("my check", scope="variant", rows=_rows, order=60))

Scopes, and what `rows` is called with:

    variant   rows(inputs, model, variant), for every model of the report and each of its score variants
    model     rows(inputs, model), for every model of the report (the variant column is MODEL_ROWS)
    file      rows(inputs), once (checks across models: distillation, the known-positive control, tracin-validate)

The table holds, per model, its variant checks (variant by variant) then its model checks, then the file
checks; within a scope, checks in `order`. Verdicts are said model checks first, then variant checks, then
file checks, each scope in `order`. Rows are `Row`s (sanity.REPORT_DTYPE's named fields).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Sequence

import numpy as np

from tracin.results import sanity
from tracin.results.sanity import Row
from tracin.results.store import ScoreFile

Scope = Literal["variant", "model", "file"]
SCOPES: tuple[Scope, ...] = ("variant", "model", "file")
VERDICT_ORDER: tuple[Scope, ...] = ("model", "variant", "file")


@dataclass(frozen=True)
class ReportInputs:
    """What every check reads: the finished score file, the models the report shows, tracin-report's
    model-randomization rows (sanity.RANDOMIZATION_DTYPE), each model's test predictions (int [n_test];
    absent where not computed) and the bootstrap seed."""

    store: ScoreFile
    models: Sequence[str]
    randomization: np.ndarray
    predictions: dict[str, np.ndarray]
    seed: int = 0
    _top: dict = field(default_factory=dict, repr=False, compare=False)

    def top_index(self, name: str, variant: str) -> np.ndarray:
        """int [n_test, depth]: the model's top proponents per test example under `variant`, read from the
        file once for every check that looks at them."""
        if (name, variant) not in self._top:
            self._top[name, variant] = self.store.model(name).variant_rankings(variant)[0].top_index
        return self._top[name, variant]


@dataclass(frozen=True)
class Check:
    """One check of tracin-report.

    name: unique, for the registry and docs (the rows carry their own check labels).
    scope: "variant", "model" or "file" (see the module docstring for what `rows` is called with).
    rows: the check's rows; an empty list where the file does not allow the check.
    order: its place among the checks of its scope (row order and verdict order).
    verdicts: (table, store) -> lines in words, read off the whole table; None for a check that says nothing.
    """

    name: str
    scope: Scope
    rows: Callable[..., list[Row]]
    order: int
    verdicts: Optional[Callable[[np.ndarray, ScoreFile], list[str]]] = None


CHECKS: dict[str, Check] = {}


def register_check(check: Check) -> Check:
    """Add `check` to CHECKS; a name taken or an unknown scope is refused."""
    if check.name in CHECKS:
        raise ValueError(f"a check named {check.name!r} is already registered")
    if check.scope not in SCOPES:
        raise ValueError(f"check {check.name!r}: scope must be one of {SCOPES}, not {check.scope!r}")
    CHECKS[check.name] = check
    return check


def checks_of(scope: Scope) -> list[Check]:
    """The registered checks of `scope`, in their order."""
    return sorted((c for c in CHECKS.values() if c.scope == scope), key=lambda c: (c.order, c.name))


def quality_report_table(
    store: ScoreFile,
    models: Sequence[str],
    randomization: np.ndarray,
    predictions: dict[str, np.ndarray],
    seed: int = 0,
) -> np.ndarray:
    """sanity.REPORT_DTYPE rows [n_rows]: every registered check the file allows, per model and variant
    (model checks under MODEL_ROWS), then the file checks."""
    inputs = ReportInputs(store, models, randomization, predictions, seed)
    rows: list[Row] = []
    for name in models:
        for variant in store.model(name).variants:
            for check in checks_of("variant"):
                rows += check.rows(inputs, name, variant)
        for check in checks_of("model"):
            rows += check.rows(inputs, name)
    for check in checks_of("file"):
        rows += check.rows(inputs)
    return np.array(rows, dtype=sanity.REPORT_DTYPE)


def check_verdicts(table: np.ndarray, store: ScoreFile) -> list[str]:
    """Every registered check's verdicts on `table`, in VERDICT_ORDER."""
    return [
        line for scope in VERDICT_ORDER for c in checks_of(scope) if c.verdicts for line in c.verdicts(table, store)
    ]


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
