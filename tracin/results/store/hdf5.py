"""HDF5 at its lowest: opening a file (one StoreError for a damaged or busy one), datasets allocated when
created, attribute values as plain Python, temporary files beside a result, and what h5py raises on damage."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

import h5py
import numpy as np

from tracin import faults
from tracin.arguments import derived_flag, said_as_option, said_typed
from tracin.errors import StoreError
from tracin.files import default_mode, temporary_prefix

HDF5_ERRORS = (KeyError, OSError, RuntimeError, ValueError)  # how h5py reports a damaged file


def open_h5(path: Path, mode: str, locking: Optional[bool] = None) -> h5py.File:
    """h5py.File with a damaged or foreign file reported as one StoreError. Under TRACIN_FAULT's
    "h5-write" the file is written through a disk that fills (tracin.faults.FullDisk)."""
    try:
        full_disk = faults.full_disk_file(path, mode)
        if full_disk is not None:
            return h5py.File(full_disk, mode)
        return h5py.File(path, mode, locking=locking)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        if "unable to lock file" in reason:  # HDF5's own lock: another process has the file open to write
            raise StoreError(
                f"{path} is in use: another process (tracin-score or tracin-validate?) has it open "
                "for writing; wait for it to finish"
            ) from None
        raise StoreError(  # round 19, T2: say the way on, which no option of tracin's takes for the user
            f"{path} is not a readable HDF5 file (truncated or corrupt?): {reason}; it is left as it is: move it away "
            "and score the run again"
        ) from None


def hdf5_open_for_writing() -> bool:
    """Whether this process has an HDF5 file open for writing. After a full disk such a file must not be
    closed: closing flushes half-written metadata over its last consistent state, and h5py may crash doing
    so. The caller exits at once instead (os._exit), as a kill would."""
    return bool(hdf5_files_open_for_writing())


def hdf5_files_open_for_writing() -> list[str]:
    """The names of the HDF5 files this process has open for writing (where a full disk met inside HDF5, whose
    message does not always name the file, was met: round 31, K5)."""
    opened = h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)
    return [file_id.name.decode(errors="replace") for file_id in opened if file_id.get_intent() & h5py.h5f.ACC_RDWR]


def early_dataset(group: h5py.Group, name: str, shape, dtype, chunks=None) -> h5py.Dataset:
    """A dataset whose storage is allocated now (fill value written), so later writes change no
    file metadata."""
    space = h5py.h5s.create_simple(tuple(shape))
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    if chunks is not None:
        plist.set_chunk(tuple(chunks))
    type_id = h5py.h5t.py_create(np.dtype(dtype))
    h5py.h5d.create(group.id, name.encode(), type_id, space, plist)
    return group[name]


def replace_dataset(group: h5py.Group, name: str, rows: np.ndarray) -> h5py.Dataset:
    """The dataset `name` of `group` written afresh with `rows` (an earlier one deleted first)."""
    if name in group:
        del group[name]
    return group.create_dataset(name, data=np.asarray(rows))


def attribute_value(value: Any) -> Any:
    """An attribute as a plain Python value (numpy scalars and arrays converted, bytes decoded: those that are
    not UTF-8 with replacement characters, so that they differ from any value written)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def setting_differences(
    stored: dict, current: dict, options: Mapping[str, type | str] = MappingProxyType({})
) -> list[str]:
    """For each setting that differs, "KEY (STORED in the file, CURRENT now)" (KEY dotted into nested
    settings: plan.k), the KEY said as the flag that sets it where `options` have one and a value left out
    as its option's default, a list as typed (arguments.said_as_option, said_typed); empty when they match. A setting an
    option derives with others (the examples' digest: --train-subset and --seed) is said only where nothing
    else differs (the review: a --seed changed blamed --train-subset too)."""
    stored, current = _flattened(stored), _flattened(current)
    keys = [k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
    direct = [k for k in keys if derived_flag(k, options) is None]
    keys = direct or keys
    return [_said_difference(k, stored, current, options) for k in keys]


SELECTIONS = ("_index", "_rows")  # settings that record the examples an option selects (their digest, or rows)


def _said_difference(key: str, stored: dict, current: dict, options: Mapping[str, type | str]) -> str:
    """One differing setting said as setting_differences says it; the examples an option selects said as
    such, not as their digests or row numbers (round 31, OS1, OS14, OS20)."""
    name = key.rpartition(".")[2]
    if name.endswith(SELECTIONS) and derived_flag(key, options) is not None:
        return f"{said_as_option(key, options)} (it selects other {name.split('_')[0]} examples than the file's)"
    return (
        f"{said_as_option(key, options)} ({said_typed(key, stored, options)} in the file, "
        f"{said_typed(key, current, options)} now)"
    )


def _flattened(settings: dict, prefix: str = "") -> dict:
    """{dotted key: value} of nested settings (round 29, V3: a whole plan said to differ, not its k)."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def temporary_beside(path: Path) -> str:
    """An empty `.NAME.tracin-*.tmp` beside `path` with the tool's file mode; a killed writer's are removed by
    tracin.files.remove_stale_temporaries."""
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_mode())
    os.close(fd)
    return tmp
