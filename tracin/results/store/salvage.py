"""Damage and salvage of a score file.

A full disk or a crash inside HDF5 can leave a file whose metadata is half written: a group or dataset
that no longer opens, though the blocks finished before it still read. Resuming such a file first
copies what reads into a fresh file (salvage), so finished work survives and only the broken parts are
made again.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import h5py

from tracin.errors import OverwriteNeeded, StoreError
from tracin.files import fsync_file
from tracin.results.store.digests import listed_members, seal_members
from tracin.results.store.hdf5 import HDF5_ERRORS, open_h5, temporary_beside
from tracin.results.store.layout import FORMAT, HEADER_ARRAYS, HEADER_MASKS, REMADE_EACH_RUN


@dataclass(frozen=True)
class Salvage:
    """What salvage did: the damage it found, the objects it left behind (made again by the run; a
    model's name means all its scores) and where the damaged file is kept."""

    damage: tuple[str, ...]
    dropped: tuple[str, ...]
    damaged_copy: Path


def _reason(error: BaseException) -> str:
    text = str(error).strip().strip("'\"")
    return text.splitlines()[0] if text else type(error).__name__


def beyond_salvage(path: Path, error: BaseException, overwrite: bool = True) -> StoreError:
    """The error for a file whose header does not read (error: what h5py raised reading it). `overwrite`:
    tracin-score --overwrite replaces it; else (where the file is opened to be read, --overwrite too) the
    user moves it away."""
    problem = f"{path} is damaged beyond salvage: its header does not read ({_reason(error)})"
    if not overwrite:
        return StoreError(f"{problem}; it is left as it is: move it away and score the run again")
    return OverwriteNeeded(problem, "pass --overwrite to score afresh")


def damage_owner(problem: str) -> str:
    """The top-level group or table a find_damage problem ("OBJECT: reason") is in ("" for the root)."""
    return problem.split(":", 1)[0].lstrip("/").split("/", 1)[0]


def damaged(path: Path, problems: Sequence[str], remedies: Optional[Mapping[str, str]] = None) -> StoreError:
    """The error for a file find_damage found `problems` in. tracin-score repairs them all; where all are in
    one top-level group that `remedies` ({group: what repairs it}) names, that is said (round 27, K01: a
    table of tracin-report's was said to be tracin-score's to repair)."""
    owners = {damage_owner(problem) for problem in problems}
    remedy = (remedies or {}).get(owners.pop()) if len(owners) == 1 else None
    remedy = remedy or "run the tracin-score command that wrote it again, which salvages what reads"
    return StoreError(f"{path} is damaged ({problems[0]}), as a full disk or a crash while writing leaves it: {remedy}")


def find_damage(path: Path) -> list[str]:
    """What of the file HDF5 cannot read, as "OBJECT: reason" lines ("/: ..." for the root's own
    attributes): every group, attribute and dataset is opened, every chunk index walked and every
    unchunked dataset read. Empty when the file is whole. Score chunks are not read (a resume checks the
    finished ones against their block digests), so this stays cheap on large files. A file that does not open at
    all is a StoreError (open_h5)."""
    with open_h5(path, "r") as handle:
        problems: list[str] = []
        _check_object(handle, os.path.getsize(path), problems)
        return problems


def _check_object(item: h5py.Group | h5py.Dataset, file_size: int, problems: list[str]) -> None:
    """Append to `problems` what of `item` and everything under it does not read."""
    name = item.name
    try:
        dict(item.attrs)
        if isinstance(item, h5py.Dataset):
            _check_dataset(item, file_size)
            return
        keys = list(item)
    except HDF5_ERRORS as error:
        problems.append(f"{name}: {_reason(error)}")
        return
    for key in keys:
        try:
            child = item[key]
        except HDF5_ERRORS as error:
            problems.append(f"{name.rstrip('/')}/{key}: {_reason(error)}")
            continue
        _check_object(child, file_size, problems)


def _check_dataset(dataset: h5py.Dataset, file_size: int) -> None:
    """Raise if the dataset does not read: an unchunked one is read whole, a chunked one's index is
    walked and every chunk must lie inside the file's `file_size` bytes."""
    if dataset.chunks is None:
        dataset[()]
        return

    def inside(chunk) -> None:
        if chunk.byte_offset + chunk.size > file_size:
            raise ValueError(
                f"a chunk lies past the end of the file ({chunk.byte_offset} + {chunk.size} > {file_size})"
            )

    if hasattr(dataset.id, "chunk_iter"):  # h5py >= 3.8 on HDF5 >= 1.14: one pass over the index
        dataset.id.chunk_iter(inside)
    else:
        for index in range(dataset.id.get_num_chunks()):
            inside(dataset.id.get_chunk_info(index))


def salvage(path: Path, problems: Sequence[str]) -> Salvage:
    """Replace the damaged file at `path` (its find_damage `problems`) by a fresh one holding everything
    that reads, and keep the damaged file beside it (Salvage.damaged_copy). Of a model's group the parts
    that read are kept; a model whose scores, bookkeeping or checkpoints do not read is dropped and scored
    again. Other damaged groups (comparisons, tables) are dropped; the run writes them again. The fresh
    file is partial. A file whose header does not read cannot be salvaged (StoreError)."""
    tmp = temporary_beside(path)
    try:
        with open_h5(path, "r") as source:
            target = open_h5(Path(tmp), "w")  # not closed after a failed write: see hdf5_open_for_writing
            dropped = _copy_readable(source, target, path, problems)
            target.close()
        fsync_file(tmp)
        kept = _keep_damaged(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Salvage(tuple(problems), tuple(dropped), kept)


def _copy_readable(source: h5py.File, target: h5py.File, path: Path, problems: Sequence[str]) -> list[str]:
    """Copy the readable objects of a damaged file; returns the names left behind."""
    try:
        if _damaged(problems, "/") or source.attrs.get("format") != FORMAT:
            raise KeyError("the root's attributes")
        target.attrs.update(dict(source.attrs))
        for name in (*HEADER_ARRAYS, *HEADER_MASKS, "noisy"):
            if name in source:
                source.copy(source[name], target, name)
    except HDF5_ERRORS as error:
        raise beyond_salvage(path, error) from None
    target.attrs["status"] = "partial"  # whatever was left behind is made again by the run
    dropped = []
    for name in _readable_keys(source):
        if name in target:
            continue
        if not _damaged(problems, f"/{name}"):
            source.copy(source[name], target, name)
        elif not _copy_model_parts(source, target, name, problems):
            dropped.append(name)
    if dropped:  # listed again when the run finishes the file
        seal_members(target, [name for name in listed_members(target) if name in target])
    return dropped


def _damaged(problems: Sequence[str], name: str) -> bool:
    """Whether the object `name` ("/", "/teacher", "/teacher/done") or anything under it is damaged
    ("/" alone: the root's own attributes)."""
    if name == "/":
        return any(problem.startswith("/:") for problem in problems)
    return any(problem.startswith((f"{name}:", f"{name}/")) for problem in problems)


def _readable_keys(group: h5py.Group) -> list[str]:
    try:
        return list(group)
    except HDF5_ERRORS:
        return []


def _copy_model_parts(source: h5py.File, target: h5py.File, name: str, problems: Sequence[str]) -> bool:
    """Copy the parts of a damaged model group that read; False (nothing copied) when what holds its
    finished blocks does not read: then the model is scored again. Its top-k tables and last losses are
    written again by every run, so they may be left behind."""
    try:
        group = source[name]
        attrs = dict(group.attrs)
        keys = list(group)
    except HDF5_ERRORS:
        return False
    if "scores" not in keys or "done" not in keys:
        return False  # not a model's group: a damaged comparison or table, written again by the run
    broken = {key for key in keys if _damaged(problems, f"/{name}/{key}")}
    if any(not (key.startswith("topk") or key in REMADE_EACH_RUN) for key in broken):
        return False
    copy = target.create_group(name)
    copy.attrs.update({**attrs, "status": "partial"})
    for key in keys:
        if key not in broken:
            source.copy(group[key], copy, key)
    return True


def _keep_damaged(path: Path) -> Path:
    """The damaged file kept as NAME.damaged (NAME.damaged-2, ... when taken) before NAME is replaced: a
    hard link, or a copy where the file system has none."""
    for number in itertools.count(1):
        kept = path.with_name(f"{path.name}.damaged" + (f"-{number}" if number > 1 else ""))
        if kept.exists() and kept.samefile(path):
            return kept  # linked by a salvage killed before its rename
        if kept.exists():
            continue
        try:
            os.link(path, kept)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            shutil.copy2(path, kept)
            fsync_file(kept)
        return kept
