"""/validation of a score file: tracin-validate's units (one retraining each), the margins each gave every
scored test example, the resume mask, and the leave-top-k-out and LDS tables made from them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from tracin.errors import StoreError
from tracin.options import ValidateOptions
from tracin.results.store.digests import file_seed, seal_group
from tracin.results.store.hdf5 import (
    HDF5_ERRORS,
    attribute_value,
    early_dataset,
    replace_dataset,
    setting_differences,
)
from tracin.results.store.layout import VALIDATION

UNIT_DIGESTS = "unit_digests"  # S64 [n_units]: the sha256 (hex) of each retraining as written (unit_digest)
DIGEST_TYPE = np.dtype("S64")

VALIDATE_SETTINGS = {  # the options that set tracin-validate's settings, and the ones a plan's fields follow from
    "plan": ValidateOptions,
    "plan.conditions": "--conditions",
    "plan.test_rows": "--test-examples",
}


def prepare_validation(
    h5: h5py.File, path: Path, units: np.ndarray, settings: dict, overwrite: bool
) -> "ValidationRecord":
    """/validation for tracin-validate's units (UNIT_DTYPE [n_units]): created, or the existing one when
    made with the same settings (resume: its finished units are kept, with or without `overwrite`). One
    made with other settings is refused unless `overwrite`, which replaces it (only /validation: the
    scores stay)."""
    settings = json.loads(json.dumps(settings))
    n_test = h5["test_index"].shape[0]
    kept, unsound, discarded = None, [], 0
    if VALIDATION in h5:
        stored = _stored_settings(h5)
        differences = (
            setting_differences(stored, settings, VALIDATE_SETTINGS)
            if stored is not None
            else ["its settings do not read"]
        )
        if not differences:
            kept = _readable_units(h5[VALIDATION], units, n_test)
            if kept is None:  # as a full disk or a crash leaves it: every finished unit that reads is kept
                record = ValidationRecord(h5[VALIDATION])
                record.redone = record.redo_unsound_units()
                return record
            unsound = _unsound(h5[VALIDATION], kept[0])
            kept[0][unsound] = False
            discarded = _marked_done(h5[VALIDATION]) - int(kept[0].sum()) - len(unsound)
        elif stored is not None and not overwrite:
            raise StoreError(
                f"{path} holds a validation made with other settings: {'; '.join(differences)}. "
                "Rerun with its options, or pass --overwrite to replace it"
            )
        del h5[VALIDATION]
    group = h5.create_group(VALIDATION)
    group.attrs.update({"settings": json.dumps(settings, sort_keys=True), "status": "partial"})
    group.create_dataset("units", data=units)
    early_dataset(group, "margins", (len(units), n_test), np.float32)
    early_dataset(group, "seconds", (len(units),), np.float64)
    early_dataset(group, "done", (len(units),), np.bool_)
    early_dataset(group, UNIT_DIGESTS, (len(units),), DIGEST_TYPE)
    record = ValidationRecord(group)
    if kept is not None:
        done, margins, seconds = kept
        group["margins"][done] = margins[done]
        group["seconds"][done] = seconds[done]
        group[UNIT_DIGESTS][done] = [record.unit_digest(i).encode() for i in np.flatnonzero(done)]
        group["done"][...] = done
    h5.flush()
    record.redone, record.discarded = unsound, max(0, discarded)
    return record


def _marked_done(group: h5py.Group) -> int:
    """How many units `group`'s done mask marks finished (0 where it does not read)."""
    try:
        return int(np.count_nonzero(np.asarray(group["done"][()], dtype=bool)))
    except (*HDF5_ERRORS, KeyError, ValueError, TypeError):
        return 0


def _stored_settings(h5: h5py.File) -> Optional[dict]:
    try:
        return json.loads(h5[VALIDATION].attrs["settings"])
    except (*HDF5_ERRORS, KeyError, ValueError):
        return None


def _readable_units(
    group: h5py.Group, units: np.ndarray, n_test: int
) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """None when /validation is whole (its units, margins, seconds, done mask and unit digests read, with the shapes the
    units give, and a complete one has its tables); else (done, margins, seconds) of what reads: the
    finished units to keep when it is made again (nothing, where even those do not read)."""
    n = len(units)
    shapes = {"units": (n,), "margins": (n, n_test), "seconds": (n,), "done": (n,)}
    if not _sealed_before_unit_digests(group):
        shapes[UNIT_DIGESTS] = (n,)
    try:
        arrays = {name: group[name][()] for name in shapes}
        whole = all(arrays[name].shape == shape for name, shape in shapes.items())
        whole = whole and (UNIT_DIGESTS not in shapes or arrays[UNIT_DIGESTS].dtype == DIGEST_TYPE)  # round 35, KV04
        whole = whole and np.array_equal(arrays["units"], units)
        if whole and attribute_value(group.attrs["status"]) == "complete":
            whole = all(group[name].shape is not None for name in ("leave_out", "lds"))
        if whole:
            return None
    except (*HDF5_ERRORS, KeyError, ValueError, TypeError):
        pass
    try:
        done = np.asarray(group["done"][()], dtype=bool)
        margins, seconds = group["margins"][()], group["seconds"][()]
        if (
            done.shape == (n,)
            and margins.shape == (n, n_test)
            and seconds.shape == (n,)
            and np.array_equal(group["units"][()], units)
        ):
            return done & np.isfinite(margins).all(axis=1), margins, seconds
    except (*HDF5_ERRORS, KeyError, ValueError, TypeError):
        pass
    return np.zeros(n, bool), np.zeros((n, n_test), np.float32), np.zeros(n)


def _unsound(group: h5py.Group, done: np.ndarray) -> list[int]:
    """The units of `done` whose values in `group` differ from their unit_digests (all of them where those do
    not read: a partial /validation from before them, or damaged)."""
    if _sealed_before_unit_digests(group):
        return []
    record, finished = ValidationRecord(group), [int(i) for i in np.flatnonzero(done)]
    try:
        stored = group[UNIT_DIGESTS][()]
        if stored.dtype != DIGEST_TYPE or stored.shape != done.shape:  # retyped or reshaped (round 35, KV04)
            return finished
        return [i for i in finished if bytes(stored[i]).decode(errors="replace") != record.unit_digest(i)]
    except (*HDF5_ERRORS, KeyError, ValueError, TypeError, IndexError, AttributeError):
        return finished


def _sealed_before_unit_digests(group: h5py.Group) -> bool:
    """A complete /validation made before unit digests: its values are sealed with its tables (drop_changed
    makes one that differs again), so its finished retrainings are kept, not made again."""
    return UNIT_DIGESTS not in group and attribute_value(group.attrs.get("status")) == "complete"


class ValidationRecord:
    """/validation of a score file: tracin-validate's units (one retraining each), the margins each gave
    every scored test example, which are done, and the tables made from them."""

    def __init__(self, group: h5py.Group):
        self._group = group
        self.redone: list[int] = []  # units marked done that did not hold what write_unit wrote: made again
        self.discarded = 0  # units marked done in a group not as made (units or a dataset edited): made again

    @property
    def settings(self) -> dict:
        return json.loads(self._group.attrs["settings"])

    @property
    def status(self) -> str:
        """ "partial" until the tables are written, then "complete" (None where it has none: a damaged file,
        which readers refuse first: checks.check_finished)."""
        return attribute_value(self._group.attrs.get("status"))

    @property
    def units(self) -> np.ndarray:
        """UNIT_DTYPE [n_units] (tracin.results.validation), in the order they are trained."""
        return self._group["units"][()]

    @property
    def done(self) -> np.ndarray:
        """bool [n_units]: units whose margins are written."""
        return self._group["done"][()]

    @property
    def margins(self) -> np.ndarray:
        """float32 [n_units, n_test]: logit margins of the scored test examples after each retraining."""
        return self._group["margins"][()]

    @property
    def seconds(self) -> np.ndarray:
        """float64 [n_units]: wall time of each retraining (0 where not done)."""
        return self._group["seconds"][()]

    def write_unit(self, index: int, margins: np.ndarray, seconds: float = 0.0) -> None:
        """One unit's margins (float32 [n_test]) and wall time, flushed, then marked done and flushed again."""
        if not np.isfinite(margins).all():
            raise StoreError(f"retraining {index} gave non-finite margins; not written")
        self._group["margins"][index] = margins
        self._group["seconds"][index] = seconds
        self._group.file.flush()
        self._group[UNIT_DIGESTS][index] = self.unit_digest(index).encode()
        self._group["done"][index] = True
        self._group.file.flush()

    def unit_digest(self, index: int) -> str:
        """The sha256 (hex) of unit `index` as the file holds it: the file (file_seed), the unit's place, its
        record, margins and seconds, read back."""
        digest = hashlib.sha256(f"{file_seed(self._group.file)}\0{self._group.name}\0{index}\0".encode())
        for name in ("units", "margins", "seconds"):
            digest.update(np.ascontiguousarray(self._group[name][index]).tobytes())
        return digest.hexdigest()

    def redo_unsound_units(self) -> list[int]:
        """On resume: units marked done whose values differ from their unit_digests (edited or damaged: round
        34, KVE1, KVE2, a partial /validation's done mask set or a margin edited was sealed into the tables)
        are marked not done, so they are retrained. Returns them."""
        unsound = _unsound(self._group, self.done)
        if unsound:
            self._group["done"][unsound] = False
            self._group.file.flush()
        return unsound

    def write_tables(self, leave_out: np.ndarray, lds: np.ndarray, provenance: Optional[dict] = None) -> None:
        """The leave-top-k-out and LDS tables (LEAVE_OUT_DTYPE, LDS_DTYPE rows) and where they were made
        (provenance JSON: machine, finished); status complete."""
        for name, table in (("leave_out", leave_out), ("lds", lds)):
            replace_dataset(self._group, name, table)
        self._group.attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
        seal_group(self._group)
        self._group.attrs["status"] = "complete"
        self._group.file.flush()

    @property
    def provenance(self) -> dict:
        """Where and when the tables were made (write_tables), {} before."""
        return json.loads(self._group.attrs.get("provenance", "{}"))

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(leave_out, lds) tables; StoreError before they are written."""
        if "leave_out" not in self._group:
            raise StoreError(
                f"{self._group.file.filename}: the validation is not finished (run the same tracin-validate again)"
            )
        return self._group["leave_out"][()], self._group["lds"][()]
