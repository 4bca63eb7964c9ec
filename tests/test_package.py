"""The package's shape, as issue #11 set it: folders for the pipeline, one HDF5 owner, a slim engine facade,
and no device timings in docstrings (they go stale; benchmarks print them instead)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import tracin
from tracin.engine.tracin import TracIn

PACKAGE = Path(tracin.__file__).parent


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_imports():
    for info in pkgutil.walk_packages(tracin.__path__, "tracin."):
        importlib.import_module(info.name)


def test_the_folders_are_the_pipeline_stages():
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == {"training", "engine", "results", "cli"}


def test_h5py_is_imported_by_the_store_alone():
    importers = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(name.split(".")[0] == "h5py" for name in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert importers == ["results/store.py"]


def test_the_engine_facade_takes_at_most_eight_parameters():
    assert len(inspect.signature(TracIn.__init__).parameters) - 1 <= 8  # self aside


def test_no_device_timings_in_the_package_source():
    timing = re.compile(r"\b(H100|A100|V100|RTX ?\d{4})\b|\b\d+(\.\d+)? ?ms\b")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in _modules() for i, line in enumerate(p.read_text().splitlines(), 1)
             if timing.search(line)]
    assert not found, found
