"""The score file's tables of named fields outside the models' groups: the named tables (/quality,
/agreement, /detection, /randomization, /quality_report), one registered NamedTable each, and the
comparison tables of each model pair (/comparison/<a>__<b>/<table>, tracin.results.comparison.TABLES).

Adding a table: one `register_named_table(NamedTable(...))` here, its rows' numpy dtype beside the code that
computes them, and one line in the layout (the package docstring). ScoreFile.write_table and read_table
then write and read it; a name not registered is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tracin.errors import StoreError
from tracin.results.store.digests import seal, seal_attributes
from tracin.results.store.hdf5 import attribute_value, replace_dataset


@dataclass(frozen=True)
class NamedTable:
    """A table at /NAME: a structured array [rows] of the numpy dtype `rows` names ("module.NAME", declared
    beside the code that computes them; files from older versions may hold fewer fields) and the attributes
    written beside it, each with the value it has when not given (and in files from before it): dicts and
    lists are stored as JSON, numbers as numbers. `holds` says what it is and who writes it."""

    name: str
    holds: str
    rows: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, h5: h5py.File, rows: np.ndarray, attrs: dict[str, Any]) -> None:
        """Replace the table by `rows` and its attributes by `attrs` (the registered ones, defaults for those
        not given)."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise StoreError(f"table {self.name} has no attribute {', '.join(unknown)} (it has: {list(self.attrs)})")
        rows = np.asarray(rows)
        if rows.dtype.names is None or rows.ndim != 1:
            raise StoreError(f"table {self.name} takes rows of named fields, not {rows.dtype} of shape {rows.shape}")
        dataset = replace_dataset(h5, self.name, rows)
        h5.flush()  # the rows, then their attributes: the order of writes a full disk meets (tests/test_edges.py)
        for key, default in self.attrs.items():
            value = attrs.get(key, default)
            dataset.attrs[key] = json.dumps(value, sort_keys=True) if _is_json(default) else value
        seal(dataset)
        h5.flush()

    def read(self, h5: h5py.File, path: Path) -> np.ndarray:
        """The rows; StoreError when the file at `path` has none."""
        return self._dataset(h5, path)[()]

    def read_attrs(self, h5: h5py.File, path: Path) -> dict[str, Any]:
        """The registered attributes as Python values (JSON decoded), defaults for those the file lacks."""
        stored = self._dataset(h5, path).attrs
        values = {}
        for key, default in self.attrs.items():
            if _is_json(default):
                values[key] = json.loads(attribute_value(stored[key]) if key in stored else json.dumps(default))
            else:
                values[key] = attribute_value(stored[key]) if key in stored else default
        return values

    def _dataset(self, h5: h5py.File, path: Path) -> h5py.Dataset:
        if self.name not in h5:
            raise StoreError(f"{path} has no {self.holds}")
        return h5[self.name]


def _is_json(value: Any) -> bool:
    return isinstance(value, (dict, list))


NAMED_TABLES: dict[str, NamedTable] = {}


def register_named_table(table: NamedTable) -> NamedTable:
    if table.name in NAMED_TABLES:
        raise ValueError(f"table {table.name!r} is already registered")
    NAMED_TABLES[table.name] = table
    return table


def named_table(name: str) -> NamedTable:
    """The registered table `name`; a StoreError naming the known ones otherwise."""
    if name not in NAMED_TABLES:
        raise StoreError(f"no table is named {name!r} (known: {', '.join(NAMED_TABLES)})")
    return NAMED_TABLES[name]


RANDOMIZATION = "randomization"  # tracin-report's model-randomization rows
QUALITY_REPORT = "quality_report"  # tracin-report's table
for _table in (
    NamedTable(
        "quality",
        "quality checks (written by tracin-score since the score variants)",
        "tracin.results.quality.QUALITY_DTYPE",
    ),
    NamedTable(
        "agreement",
        "agreement table (written by tracin-score since replicas)",
        "tracin.results.agreement.AGREEMENT_DTYPE",
    ),
    NamedTable(
        "detection",
        "mislabel-detection table (written by tracin-score with label noise)",
        "tracin.results.detection.DETECTION_DTYPE",
    ),
    NamedTable(
        RANDOMIZATION,
        "model-randomization table (written by tracin-report)",
        "tracin.results.sanity.RANDOMIZATION_DTYPE",
        {"settings": {}, "seconds": 0.0},  # what the rows depend on (scores, samples); the wall time of them all
    ),
    NamedTable(
        QUALITY_REPORT,
        "quality report (written by tracin-report)",
        "tracin.results.sanity.REPORT_DTYPE",
        {"provenance": {}},  # machine, finished, seconds, randomization_seconds
    ),
):
    register_named_table(_table)


# --- comparisons of model pairs ------------------------------------------------------------------------


def comparison_name(a: str, b: str) -> str:
    return f"comparison/{a}__{b}"


def comparison_pairs(h5: h5py.File) -> list[tuple[str, str]]:
    """(a, b) of every model pair compared in the file."""
    if "comparison" not in h5:
        return []
    return [tuple(name.split("__", 1)) for name in h5["comparison"]]


def write_comparison(h5: h5py.File, a: str, b: str, tables: dict[str, np.ndarray], settings: dict) -> None:
    """Replace the comparison of models a and b by `tables` (name -> numpy structured array [rows],
    kept in this order) and `settings` (the options they were computed with: numbers, lists)."""
    name = comparison_name(a, b)
    if name in h5:
        del h5[name]
    group = h5.create_group(name, track_order=True)
    for table_name, table in tables.items():
        seal(group.create_dataset(table_name, data=np.asarray(table)))
    group.attrs.update(settings)
    seal_attributes(group)
    h5.flush()


def comparison_group(h5: h5py.File, path: Path, a: str, b: str) -> h5py.Group:
    name = comparison_name(a, b)
    if name not in h5:
        pairs = ", ".join(f"{x} vs {y}" for x, y in comparison_pairs(h5)) or "none"
        raise StoreError(f"{path} has no comparison of {a} and {b} (it has: {pairs})")
    return h5[name]


def comparison_table(item: h5py.Dataset | h5py.Group) -> np.ndarray:
    """A stored comparison table as a structured array; files written before tables were registered
    kept self_influence as attributes of a group, read here as one row."""
    if isinstance(item, h5py.Group):
        values = {name: float(value) for name, value in item.attrs.items()}
        return np.array([tuple(values.values())], dtype=[(name, "f8") for name in values])
    return item[()]
