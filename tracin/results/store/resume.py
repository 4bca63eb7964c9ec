"""Continuing a partial model group: a group not as create_model_group makes it for the checkpoints the file's
settings record (a dataset deleted, reshaped or retyped, an attribute or the checkpoints table edited) is made
again and scored from its start; then its finished blocks are checked against their digests. A table that
records other checkpoints (sha256) is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import h5py

from tracin.errors import OverwriteNeeded
from tracin.results.store.digests import MUTABLE_ATTRS
from tracin.results.store.hdf5 import attribute_value
from tracin.results.store.layout import (
    CHECKPOINT_FIELDS,
    GROUP_NORMALISED_SELF,
    GROUP_SELF,
    RANKING_GROUPS,
    REMADE_EACH_RUN,
)
from tracin.results.store.model_scores import (
    ModelScores,
    checkpoint_columns,
    create_model_group,
    model_attributes,
    model_datasets,
)
from tracin.training.checkpoints import Checkpoint


def resume_model_group(
    h5: h5py.File,
    name: str,
    path: Path,
    checkpoints: Sequence[Checkpoint],
    parameters: Sequence[str],
    row_chunk: int,
    test_block: int,
    per_checkpoint: bool,
    variants: Sequence[str],
    groups: Sequence[str],
) -> tuple["ModelScores", list[str]]:
    """(group, notes) of the model group `name` a resume continues, of `checkpoints`: scores of others (sha256)
    are refused. A group not as create_model_group makes it for these settings and checkpoints, with the
    blocking it was started with, is made again (row_chunk x test_block) and scored from its start (round 28,
    A11-A16: a dataset deleted or replaced by hand ended in a traceback, or in a finished file without it).
    Then its finished blocks are checked (redo_unsound_blocks). The notes say what is scored again."""
    problem = _checkpoints_problem(h5[name], name)
    if problem is None:
        _check_same_checkpoints(h5[name], checkpoints, path)
    problem = (
        problem
        or _recorded_problem(h5[name], checkpoints)
        or _attributes_problem(h5[name], name, parameters, variants)
        or _layout_problem(h5[name], per_checkpoint, variants, groups)
    )
    if problem is not None:
        del h5[name]
        scores = create_model_group(
            h5, name, checkpoints, parameters, row_chunk, test_block, per_checkpoint, variants, groups
        )
        return scores, [
            f"note: {path}: {problem}: /{name} is not as tracin-score makes it (edited, damaged, or written by "
            "an older tracin), so it is scored again from its start"
        ]
    for remade in (*REMADE_EACH_RUN, *RANKING_GROUPS):  # written whole again at the end: none left stale
        if remade in h5[name]:
            del h5[name][remade]
    scores = ModelScores(h5[name])
    redone = scores.redo_unsound_blocks()
    return scores, [
        f"note: {path}: {redone} finished block(s) of /{name} no longer hold what tracin-score wrote (edited or "
        "damaged, or written before blocks carried digests): they are scored again"
    ][: bool(redone)]


def _checkpoints_problem(group: h5py.Group | h5py.Dataset, name: str) -> Optional[str]:
    """How the model group `name` is not a group with a table of the checkpoints it scored (one entry per
    checkpoint in each of CHECKPOINT_FIELDS); None if it is."""
    if not isinstance(group, h5py.Group):
        return f"/{name} is not a group"
    fields = [group.get(f"checkpoints/{field}") for field in CHECKPOINT_FIELDS]
    if not all(isinstance(f, h5py.Dataset) and f.ndim == 1 and f.shape == fields[0].shape for f in fields):
        return f"/{name}/checkpoints is not a table of {', '.join(CHECKPOINT_FIELDS)}"
    return None


def _check_same_checkpoints(group: h5py.Group, checkpoints: Sequence[Checkpoint], path: Path) -> None:
    """An OverwriteNeeded unless the group's checkpoints table records `checkpoints` (their sha256, in order):
    scores of other checkpoints, or a table edited (round 30, CK14: said as checkpoints that changed)."""
    column = group["checkpoints/sha256"][()]
    stored = [s.decode(errors="replace") if isinstance(s, bytes) else str(s) for s in column]
    if stored != [c.sha256 for c in checkpoints]:
        raise OverwriteNeeded(
            f"{path}: {group.name}/checkpoints/sha256 records other checkpoints than the ones scored now (the "
            "checkpoints changed since this partial result was written, or the table was edited)",
            "pass --overwrite to score them afresh",
        )


def _recorded_problem(group: h5py.Group, checkpoints: Sequence[Checkpoint]) -> Optional[str]:
    """How the group's checkpoints table differs from the one write_checkpoints writes for `checkpoints`
    (of the same sha256): its columns, their types, attributes and values, a path by its file's name (a run
    folder may move); None if none. Round 29, A11, A13 and round 30, CK8-CK19: an edited table was sealed
    into the finished file."""
    table = group["checkpoints"]
    if set(table) != set(CHECKPOINT_FIELDS) or _written_attributes(table):
        return f"{table.name} has columns or attributes tracin-score does not write"
    for field, expected in checkpoint_columns(checkpoints).items():
        column = table[field]
        text = h5py.check_string_dtype(column.dtype)
        if expected.dtype.hasobject:
            right_type = text is not None and text.encoding == "utf-8" and text.length is None
            values = column.asstr(errors="replace")[()].tolist() if right_type else None
            if field == "path" and values is not None:
                values, expected = [Path(v).name for v in values], [Path(v).name for v in expected]
        else:
            right_type = column.dtype == expected.dtype
            values = column[()].tolist() if right_type else None
        if not right_type or _written_attributes(column) or values != list(expected):
            return f"{column.name} does not record the checkpoints' {field}"
    return None


def _written_attributes(item: h5py.HLObject) -> list[str]:
    """The attributes of `item` other than the bookkeeping a resume changes (MUTABLE_ATTRS)."""
    return [key for key in item.attrs if key not in MUTABLE_ATTRS]


def _attributes_problem(
    group: h5py.Group, name: str, parameters: Sequence[str], variants: Sequence[str]
) -> Optional[str]:
    """How the group's attributes differ from those create_model_group writes for model `name`: one
    added, a value or its type changed (round 30, CK24, CK29: a role or a float count was sealed); its
    blocking is checked by _layout_problem. None if none."""
    expected = model_attributes(name, parameters, variants)
    extra = sorted(set(_written_attributes(group)) - {*expected, "row_chunk", "test_block"})
    if extra:
        return f"{group.name} has attributes tracin-score does not write ({', '.join(extra)})"
    for key, value in expected.items():
        stored = attribute_value(group.attrs.get(key))
        if type(stored) is not type(value) or stored != value:
            return f"{group.name}'s {key} is not the one scored"
    seconds = attribute_value(group.attrs.get("scoring_seconds"))
    if type(seconds) is not float or not 0 <= seconds < math.inf:
        return f"{group.name}'s scoring_seconds is not a time"
    return None


def _layout_problem(
    group: h5py.Group, per_checkpoint: bool, variants: Sequence[str], groups: Sequence[str]
) -> Optional[str]:
    """The first way the datasets of a model group of the checkpoints and attributes it records differ from
    what create_model_group makes for these settings (its blocking, variants and layer groups: their shapes,
    types and attributes), or a member it does not write (round 31, PE7: a dataset added was sealed into the
    finished file); None if none. Members written whole at the end of every run may be there (a run killed
    after writing them)."""
    where = group.name
    row_chunk, test_block = (attribute_value(group.attrs.get(key)) for key in ("row_chunk", "test_block"))
    if not all(type(n) is int and n >= 1 for n in (row_chunk, test_block)):
        return f"{where}'s row_chunk and test_block are not positive integers"
    (n_train,), (n_test,) = group.file["train_index"].shape, group.file["test_index"].shape
    n_checkpoints = group["checkpoints/sha256"].shape[0]
    layout = model_datasets(n_train, n_test, n_checkpoints, row_chunk, test_block, per_checkpoint, variants, groups)
    for name, (shape, dtype) in layout.items():
        item = group.get(name)
        if item is None and name in REMADE_EACH_RUN:  # left behind by a salvage: written again at the end
            continue
        if item is None:
            return f"{where}/{name} is missing"
        if not isinstance(item, h5py.Dataset):
            return f"{where}/{name} is not a dataset"
        if item.shape != shape or item.dtype != dtype:
            return f"{where}/{name} holds {item.dtype} {item.shape}, not {dtype} {shape}"
        written = {key: attribute_value(item.attrs[key]) for key in _written_attributes(item)}
        if written != _dataset_attributes(name, variants, groups):
            return f"{where}/{name}'s attributes are not those tracin-score writes"
    made = {*layout, *REMADE_EACH_RUN, "checkpoints", *(f"checkpoints/{field}" for field in CHECKPOINT_FIELDS)}
    members: list[str] = []
    group.visit(members.append)
    extra = [m for m in members if m not in made and m.split("/")[0] not in RANKING_GROUPS]
    if extra:
        return f"{where} holds {', '.join(sorted(extra)[:3])}, which tracin-score does not write"
    return None


def _dataset_attributes(name: str, variants: Sequence[str], groups: Sequence[str]) -> dict:
    """The attributes create_model_group gives the dataset `name` (the bookkeeping in MUTABLE_ATTRS aside)."""
    if name == "scores" or name.startswith("scores_"):
        return {"variant": variants[0] if name == "scores" else name.removeprefix("scores_")}
    return {"groups": json.dumps(list(groups))} if name in (GROUP_SELF, GROUP_NORMALISED_SELF) else {}
