"""Continuing a partial model group: scores of other checkpoints are refused; a group not laid out as
create_model_group makes it (a dataset deleted, reshaped or retyped, an attribute or the checkpoints table
edited) is made again and scored from its start; then its finished blocks are checked against their digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np

from tracin.errors import OverwriteNeeded
from tracin.results.store.hdf5 import attribute_value
from tracin.results.store.layout import CHECKPOINT_FIELDS, GROUP_NORMALISED_SELF, GROUP_SELF, REMADE_EACH_RUN
from tracin.results.store.model_scores import ModelScores, create_model_group, model_datasets
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
    """(group, notes) of the model group `name` a resume continues. Scores of other checkpoints (sha256) are
    refused. A group not laid out as create_model_group makes it for these settings, with the blocking it was
    started with, is made again (row_chunk x test_block) and scored from its start (round 28, A11-A16: a
    dataset deleted or replaced by hand ended in a traceback, or in a finished file without it). Then its
    finished blocks are checked (redo_unsound_blocks). The notes say what is scored again."""
    problem = _checkpoints_problem(h5[name], name)
    if problem is None:
        _check_same_checkpoints(h5[name], checkpoints, path)
        problem = _recorded_problem(h5[name], checkpoints) or _layout_problem(
            h5[name], per_checkpoint, variants, parameters, groups
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
    """An OverwriteNeeded unless the group's scores are of `checkpoints` (their sha256, in order)."""
    stored = [s.decode() if isinstance(s, bytes) else s for s in group["checkpoints/sha256"][()]]
    if stored != [c.sha256 for c in checkpoints]:
        raise OverwriteNeeded(
            f"{path}: the checkpoints of {group.name.strip('/')} changed since this partial result was written "
            "(sha256 differs)",
            "pass --overwrite to score them afresh",
        )


def _recorded_problem(group: h5py.Group, checkpoints: Sequence[Checkpoint]) -> Optional[str]:
    """How the epochs and learning rates the group's checkpoints table records differ from those of the
    `checkpoints` (of the same sha256) it scored; None if they match. Round 29, A11, A13: an edited table
    was sealed into the finished file."""
    for field, dtype in (("epoch", np.int64), ("lr", np.float64)):  # as write_checkpoints writes them
        column = group[f"checkpoints/{field}"]
        if column.dtype != dtype or column[()].tolist() != [getattr(c, field) for c in checkpoints]:
            return f"{group.name}/checkpoints/{field} does not record the checkpoints' {field}"
    return None


def _layout_problem(
    group: h5py.Group, per_checkpoint: bool, variants: Sequence[str], parameters: Sequence[str], groups: Sequence[str]
) -> Optional[str]:
    """The first way a model group of the checkpoints it records differs from what create_model_group makes
    for these settings (its blocking, variants, parameters and layer groups, its datasets' shapes and
    types); None if none."""
    where = group.name
    attrs = {
        key: attribute_value(group.attrs.get(key)) for key in ("row_chunk", "test_block", "variants", "parameters")
    }
    row_chunk, test_block = attrs["row_chunk"], attrs["test_block"]
    if not all(type(n) is int and n >= 1 for n in (row_chunk, test_block)):
        return f"{where}'s row_chunk and test_block are not positive integers"
    if attribute_value(group.attrs.get("n_parameter_tensors")) != len(parameters):
        return f"{where}'s n_parameter_tensors is not the number of parameters scored"
    for key, value in (("variants", variants), ("parameters", parameters)):
        if attrs[key] != json.dumps(list(value)):
            return f"{where}'s {key} are not the ones scored"
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
        if name in (GROUP_SELF, GROUP_NORMALISED_SELF) and attribute_value(item.attrs.get("groups")) != json.dumps(
            list(groups)
        ):
            return f"{where}/{name} is not of the layer groups scored"
    return None
