"""tracin-report's check registry: a check registered in one place reaches the table and the verdicts, in
its scope's place; every module of tracin/results/checks registers one; names and scopes are checked."""

from __future__ import annotations

import pkgutil

import numpy as np
import pytest

from tracin.results import checks, sanity
from tracin.results.checks import CHECKS, Check, check_verdicts, quality_report_table, register_check
from tracin.results.markdown import report_verdicts
from tracin.results.sanity import MODEL_ROWS, Row
from tracin.results.store import ScoreFile

NO_RANDOMIZATION = np.zeros(0, dtype=sanity.RANDOMIZATION_DTYPE)


def test_every_module_of_the_package_registers_a_check():
    modules = {m.name for m in pkgutil.iter_modules(checks.__path__)}
    registering = {c.rows.__module__.rsplit(".", 1)[1] for c in CHECKS.values()}
    assert modules == registering


def test_a_registered_check_reaches_the_table_and_the_verdicts_in_its_scopes_place(tiny_scores, monkeypatch):
    said = []

    def verdict(scope):
        def lines(table, store):
            said.append(scope)
            return [f"{scope} verdict on {len(table)} rows"]

        return lines

    added = [
        Check(
            "test variant",
            "variant",
            lambda inputs, m, v: [Row("T variant", m, v, 1.0, 0.5, 1.5, 0.0, 3)],
            999,
            verdict("variant"),
        ),
        Check(
            "test model",
            "model",
            lambda inputs, m: [Row("T model", m, MODEL_ROWS, 2.0, 1.0, 3.0, np.nan, 4)],
            999,
            verdict("model"),
        ),
        Check(
            "test file",
            "file",
            lambda inputs: [Row("T file", "student", "raw", 3.0, 2.0, 4.0, 0.0, 5)],
            -1,
            verdict("file"),
        ),
    ]
    with ScoreFile.open_read(tiny_scores) as store:
        models = store.models
        before = quality_report_table(store, models, NO_RANDOMIZATION, {})
        for check in added:
            monkeypatch.setitem(CHECKS, check.name, check)
        table = quality_report_table(store, models, NO_RANDOMIZATION, {})
        lines = report_verdicts(store, table)
    names = [c.decode() for c in table["check"]]
    assert len(table) == len(before) + 2 * len(models) + 1  # one variant (raw) per model
    assert names[0] != "T variant"  # order 999: after the built-in variant checks of the first model
    for model in models:
        mine = [n for n, m in zip(names, table["model"]) if m.decode() == model]
        assert mine.index("T variant") < mine.index("T model")  # a model's variant checks, then its model checks
    last_model_row = max(i for i, n in enumerate(names) if n == "T model")
    assert names.index("T file") == last_model_row + 1  # after every model's rows; order -1: the first file check
    assert table[names.index("T file")].tolist() == ("T file".encode(), b"student", b"raw", 3.0, 2.0, 4.0, 0.0, 5)
    assert said == ["model", "variant", "file"]  # verdicts: model checks, variant checks, file checks
    assert [line for line in lines if "verdict on" in line] == [f"{s} verdict on {len(table)} rows" for s in said]


def test_a_check_taken_out_of_the_registry_leaves_the_table(tiny_scores, monkeypatch):
    with ScoreFile.open_read(tiny_scores) as store:
        full = quality_report_table(store, store.models, NO_RANDOMIZATION, {})
        monkeypatch.delitem(CHECKS, "concentration")
        without = quality_report_table(store, store.models, NO_RANDOMIZATION, {})
    concentration = np.char.startswith(full["check"], b"concentration")
    assert concentration.any() and not np.char.startswith(without["check"], b"concentration").any()
    assert without.tobytes() == full[~concentration].tobytes()


def test_check_names_and_scopes_are_checked():
    with pytest.raises(ValueError, match="already registered"):
        register_check(Check("concentration", "variant", lambda *a: [], 0))
    with pytest.raises(ValueError, match="scope must be one of"):
        register_check(Check("test nowhere", "layer", lambda *a: [], 0))
    assert "test nowhere" not in CHECKS


def test_verdicts_of_an_empty_table_are_none(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        assert check_verdicts(np.zeros(0, dtype=sanity.REPORT_DTYPE), store) == []
