"""ScoreFile, an open tracin-scores HDF5 file: creating or resuming it (salvaging a damaged one first),
its header facts, its models, the comparisons of model pairs, its named tables and tracin-validate's
record, and publishing it when complete."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import h5py
import numpy as np

from tracin import faults
from tracin.config import ENSEMBLE_SUFFIX, ROLES, inherited_shortcut_class, split_model_name
from tracin.errors import OverwriteNeeded, StoreError, TracinError
from tracin.files import disk_full, fsync_file, not_a_file, refuse_link
from tracin.results.store import tables
from tracin.results.store.checks import REMEDIES
from tracin.results.store.digests import (
    ATTRS_DIGEST,
    MUTABLE_ATTRS,
    digest_problems,
    drop,
    seal,
    seal_attributes,
    seal_members,
    top_level,
)
from tracin.results.store.hdf5 import (
    HDF5_ERRORS,
    attribute_value,
    open_h5,
    setting_differences,
    temporary_beside,
)
from tracin.results.store.layout import (
    CHUNK_ROWS,
    FORMAT,
    FORMAT_VERSION,
    HEADER_ARRAYS,
    HEADER_MASKS,
    VALIDATION,
    class_names,
)
from tracin.results.store.model_scores import ModelScores, create_model_group, write_ensemble
from tracin.results.store.resume import resume_model_group
from tracin.results.store.salvage import Salvage, beyond_salvage, damage_owner, damaged, find_damage, salvage
from tracin.results.store.score_settings import score_differences
from tracin.results.store.validation_record import ValidationRecord, prepare_validation
from tracin.training.checkpoints import Checkpoint
from tracin.version import __version__


@dataclass
class DataArrays:
    """What the file records about the examples scored (numpy, aligned with score rows/columns)."""

    train_index: np.ndarray
    test_index: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    train_clean_labels: np.ndarray
    train_fine_labels: Optional[np.ndarray] = None  # None: the clean labels (no merged classes)
    test_fine_labels: Optional[np.ndarray] = None  # None: the test labels
    train_stamped: Optional[np.ndarray] = None  # None: nothing stamped
    test_stamped: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.train_fine_labels = self.train_clean_labels if self.train_fine_labels is None else self.train_fine_labels
        self.test_fine_labels = self.test_labels if self.test_fine_labels is None else self.test_fine_labels
        self.train_stamped = np.zeros(len(self.train_index), bool) if self.train_stamped is None else self.train_stamped
        self.test_stamped = np.zeros(len(self.test_index), bool) if self.test_stamped is None else self.test_stamped

    @property
    def noisy(self) -> np.ndarray:
        return self.train_labels != self.train_clean_labels


def _model_order(name: str) -> tuple:
    """Sort key: trained models replica by replica in role order, then the replica ensembles in role
    order, then anything else by name."""
    role = name.removesuffix(ENSEMBLE_SUFFIX)
    if role != name and role in ROLES:
        return (1, 0, ROLES.index(role), name)
    try:
        role, replica = split_model_name(name)
    except TracinError:
        return (2, 0, 0, name)
    return (0, replica, ROLES.index(role), name)


class HeaderArray:
    """A header array of the file (/NAME, the attribute's name), read once and kept, as functools.cached_property
    does; in files from before it, `fallback(store)` stands in for it."""

    def __init__(self, doc: str, fallback: Optional[Callable[["ScoreFile"], np.ndarray]] = None):
        self.__doc__, self.fallback = doc, fallback

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, store: Optional["ScoreFile"], owner: type):
        if store is None:
            return self
        value = store._h5[self.name][()] if self.name in store._h5 or self.fallback is None else self.fallback(store)
        store.__dict__[self.name] = value  # found before this descriptor from now on (it defines no __set__)
        return value


class ScoreFile:
    """An open tracin-scores HDF5 file: its header facts, its models and their comparisons, its named tables
    and tracin-validate's record."""

    def __init__(self, handle: h5py.File, path: Path):
        self._h5, self.path = handle, Path(path)
        self._replaces: Optional[Path] = None  # the finished file this one replaces when complete
        self.salvaged: Optional[Salvage] = None  # what opening it salvaged from a damaged file
        self.dropped: list[str] = []  # its tables that differed from their digests, dropped to be made again
        self.removed: Optional[str] = None  # a note: the replacement of other settings this one starts over

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def create_or_resume(
        cls, path: Path, settings: dict, attrs: dict, data: DataArrays, overwrite: bool
    ) -> tuple["ScoreFile", bool]:
        """(file, resumed). A partial file with the same settings is resumed; a finished one is kept
        unless overwrite; one with other settings is refused, saying why. A damaged file (find_damage)
        with the same settings is salvaged first and resumed, finished or not. With overwrite the new
        result is made beside the old one (replacing_path) and moves over it only when complete
        (mark_complete), so a failure or a kill leaves the old result as it was."""
        path = Path(path)
        if not path.exists():
            return cls._create(path, settings, attrs, data), False
        if not overwrite:
            return cls._resume(path, settings), True
        cls.open_read(path, older=True).close()  # --overwrite replaces tracin-score results only, readable ones
        work, removed = replacing_path(path), None
        if work.exists():
            try:
                stored, _ = cls._header(work)
                differences, _ = score_differences(stored, settings)
                if not differences:
                    store = cls._resume(work, settings, finished_too=True)
                    store._replaces = path
                    if store.status == "complete":
                        store.mark_complete()  # finished, killed before its rename: publish it, redo nothing
                    return store, True
            except OverwriteNeeded as error:  # its advice, --overwrite, was taken (round 26, N6)
                raise StoreError(
                    f"{error.problem}; it is the unfinished replacement of {path}: remove it to start that again"
                ) from None
            work.unlink()  # our own replacement, made with other settings (or other checkpoints): said (N5)
            removed = f"removed {work}, an unfinished replacement made with other settings ({'; '.join(differences)})"
        store = cls._create(work, settings, attrs, data)
        store._replaces, store.removed = path, removed
        return store, False

    @classmethod
    def finished_with(cls, path: Path, settings: dict) -> bool:
        """Whether `path` is a finished, undamaged tracin-score file made with these settings (read only; a
        file that is not one reads as False, for create_or_resume to name why)."""
        if not path.is_file() or path.is_symlink():
            return False
        try:
            stored, status = cls._header(path)
        except (TracinError, ValueError):  # not a score file, or its settings not JSON
            return False
        if status != "complete" or not isinstance(stored, dict) or setting_differences(stored, settings):
            return False
        return not find_damage(path)

    @classmethod
    def _header(cls, path: Path) -> tuple[dict, str]:
        """(settings, status) of a tracin-score file, read only; a file whose header does not read is refused."""
        with cls.open_read(path) as store:
            try:
                return json.loads(store._h5.attrs["settings"]), store.status
            except HDF5_ERRORS as error:
                raise beyond_salvage(path, error) from None

    @classmethod
    def _resume(cls, path: Path, settings: dict, finished_too: bool = False) -> "ScoreFile":
        """The file at `path` opened to continue: checked (header, settings, status) before anything
        changes, then salvaged if damaged. A finished whole file is refused unless finished_too."""
        stored, status = cls._header(path)
        differences, options = score_differences(stored, settings)  # named first (round 13, S1)
        if differences:
            raise OverwriteNeeded(  # round 29, UF8: other checkpoints, which no option gives back
                f"{path} holds a result made with other settings: {'; '.join(differences)}",
                "rerun with the original options, or pass --overwrite to start again"
                if options
                else "its models' checkpoints changed since (trained on, or replaced): pass --overwrite to score them",
            )
        problems = find_damage(path)
        if status == "complete" and not problems and not finished_too:
            raise OverwriteNeeded(
                f"{path} is a finished result", "pass --overwrite to replace it, or --scores elsewhere"
            )
        salvaged = salvage(path, problems) if problems else None
        store = cls.open_read_write(path)
        store.salvaged = salvaged
        store.dropped = store.drop_changed(REMADE_BY_SCORE)  # a full disk while writing them (round 11, F3)
        changed = store.changed_since_written()  # a finished model's scores would be ranked and sealed again
        if changed:
            store.close()
            raise OverwriteNeeded(
                f"{path}: {changed[0]}: the file was edited, or damaged on disk", "pass --overwrite to score afresh"
            )
        return store

    @classmethod
    def _create(cls, path: Path, settings: dict, attrs: dict, data: DataArrays) -> "ScoreFile":
        """A new file whose header is written in a temporary file that is renamed into place only when
        whole: a kill during the header leaves no half file at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_beside(path)
        try:
            handle = open_h5(Path(tmp), "w")  # not closed after a failed write: see hdf5_open_for_writing
            cls(handle, Path(tmp))._write_header(settings, attrs, data)
            handle.close()
            fsync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return cls.open_read_write(path)

    @classmethod
    def open_read_write(cls, path: Path) -> "ScoreFile":
        refuse_link(path, "the score file")  # h5py would write through it
        store = cls(open_h5(path, "r+"), path)
        store._check_format()
        return store

    @classmethod
    def open_read(cls, path: Path, locking: Optional[bool] = None, older: bool = False) -> "ScoreFile":
        """The file, read only, unchecked (open_checked checks it). locking=False reads a file another
        process is writing (to watch its progress; a block in flight may read as not done). older: a file of
        an older format version is opened too (for --overwrite to replace; nothing of it is read)."""
        if not Path(path).is_file():
            raise StoreError(not_a_file(path))
        store = cls(open_h5(path, "r", locking), path)
        store._check_format(older)
        return store

    @classmethod
    def open_checked(cls, path: Path) -> "ScoreFile":
        """The finished file, read only, checked as every command checks it before reading anything
        (checks.check_finished: whole, complete, laid out as written, every value equal to its digest); a
        StoreError naming what is wrong otherwise (round 25, V22: open_read alone read a model's group copied
        in from another file)."""
        from tracin.results.store.checks import check_finished  # checks reads a ScoreFile: imported when used

        store = cls.open_read(path)
        try:
            check_finished(store)
        except BaseException:
            store.close()
            raise
        return store

    def _check_format(self, older: bool = False) -> None:
        try:
            fmt = self._h5.attrs.get("format")
        except HDF5_ERRORS as error:
            self._h5.close()
            raise beyond_salvage(self.path, error, overwrite=False) from None  # read by --overwrite too
        if fmt != FORMAT:
            self._h5.close()
            raise StoreError(f"{self.path} is not a tracin-score result file")
        version = self._h5.attrs.get("format_version", FORMAT_VERSION)
        known = isinstance(version, (int, np.integer))
        if known and (version == FORMAT_VERSION or (older and 1 <= version < FORMAT_VERSION)):
            return
        self._h5.close()
        shown = version if known else repr(version)
        if known and 1 <= version < FORMAT_VERSION:  # round 16, F1: a file stripped of its digests read unchecked
            raise OverwriteNeeded(
                f"{self.path} has format version {shown}, {OLDER_FORMATS.get(int(version), OLDER_FORMATS[1])}; "
                f"this tracin {__version__} reads version {FORMAT_VERSION}",
                "score the run again (tracin-score --overwrite)",
            )
        why = "a newer tracin wrote it?" if known else "not an integer: the file was edited"  # round 17, V2
        raise StoreError(
            f"{self.path} has format version {shown}; this tracin {__version__} reads version {FORMAT_VERSION} ({why})"
        )

    def _write_header(self, settings: dict, attrs: dict, data: DataArrays) -> None:
        self._h5.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tracin_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "settings": json.dumps(settings, sort_keys=True),
                "status": "partial",
                **attrs,
            }
        )
        faults.reach("h5-header")
        for name in HEADER_ARRAYS:
            self._h5.create_dataset(name, data=np.asarray(getattr(data, name), dtype=np.int64))
        self._h5.create_dataset("noisy", data=data.noisy)
        for name in HEADER_MASKS:
            self._h5.create_dataset(name, data=np.asarray(getattr(data, name), dtype=bool))
        for name in (*HEADER_ARRAYS, "noisy", *HEADER_MASKS):
            seal(self._h5[name])
        seal_attributes(self._h5)
        self._h5.flush()

    def changed_since_written(self) -> list[str]:
        """What of the finished datasets and attributes differs from the digests written with them, or has none
        (digests.digest_problems)."""
        return digest_problems(self._h5)

    def drop_changed(self, owned: Sequence[str]) -> list[str]:
        """Delete the top-level groups and tables of `owned` (those the calling command makes again) holding
        a dataset that differs from its digests, as a full disk while writing them leaves them (round 11,
        F3: a report killed so could not be run again); returns their names."""
        names = {top_level(problem) for problem in self.changed_since_written()}
        dropped = sorted(name for name in names if name in owned)
        for name in dropped:  # a missing one too: it is made again
            drop(self._h5, name)
        self._h5.flush()
        return dropped

    # --- header facts ----------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """The sha256 of the root's attributes (its attrs_digest): the same wherever the file moves, another
        for any other score file; the pages made of a file name it (round 18, N8, N9, M3b)."""
        return str(attribute_value(self._h5.attrs.get(ATTRS_DIGEST, "")))

    @property
    def attributes(self) -> dict[str, Any]:
        """Every file attribute (provenance: version, command, run, mode, settings JSON, ...) as Python values."""
        return {name: attribute_value(value) for name, value in self._h5.attrs.items()}

    def _attribute(self, name: str) -> Any:
        if name not in self._h5.attrs:
            raise StoreError(  # round 31, R3: said without a remedy
                f"{self.path} records no {name!r}: it was edited, or written by an older tracin-score; make it again "
                "with tracin-score --overwrite"
            )
        return attribute_value(self._h5.attrs[name])

    @property
    def status(self) -> str:
        """The file's state: "partial" while scoring, "complete" once every model and comparison is written."""
        return str(self._attribute("status"))

    @property
    def mode(self) -> str:
        """The gradient mode scored with (exact, last-layer, projected, ...)."""
        return str(self._attribute("mode"))

    @property
    def checkpoint_spec(self) -> str:
        """The --checkpoints the models were scored with: all, last or comma-separated epochs."""
        return str(json.loads(self._attribute("settings")).get("checkpoints", "all"))

    @property
    def run_path(self) -> Path:
        """The tracin-train run folder the models came from, as it was when scored."""
        return Path(self._attribute("run"))

    @property
    def classes(self) -> list[str]:
        """Class names by label ([] when the file records none)."""
        return class_names(self._h5, "classes") or []

    @property
    def n_train(self) -> int:
        return int(self._h5["train_index"].shape[0])

    @property
    def n_test(self) -> int:
        return int(self._h5["test_index"].shape[0])

    train_index = HeaderArray("int64 [n_train]: each score row's index in the torchvision training set.")
    test_index = HeaderArray("int64 [n_test]: each score column's index in the torchvision test set.")
    train_labels = HeaderArray("int64 [n_train]: the labels scored with (after label noise).")
    test_labels = HeaderArray("int64 [n_test]")
    train_clean_labels = HeaderArray("int64 [n_train]: the data set's own labels.")
    noisy = HeaderArray("bool [n_train]: labels flipped by --label-noise.")

    @property
    def fine_classes(self) -> list[str]:
        """Names of the fine labels (the classes, unless the run merged them)."""
        return class_names(self._h5, "fine_classes") or self.classes

    train_fine_labels = HeaderArray(
        "int64 [n_train]: the data set's own labels (files from before coarse labels: the clean labels).",
        lambda store: store.train_clean_labels,
    )
    test_fine_labels = HeaderArray(
        "int64 [n_test]: the data set's own labels (files from before coarse labels: the labels).",
        lambda store: store.test_labels,
    )

    @property
    def coarse(self) -> bool:
        """Whether the labels merge the data set's classes (tracin-train --coarse-labels)."""
        return bool(
            np.any(self.train_fine_labels != self.train_clean_labels)
            or np.any(self.test_fine_labels != self.test_labels)
        )

    @property
    def inherit_mode(self) -> bool:
        """Whether the run is the known-positive control of distillation (DataConfig.shortcut_mode "inherit")."""
        return self._h5.attrs.get("shortcut_mode") == "inherit"

    def shortcut_of(self, name: str) -> Optional[int]:
        """The shortcut class model `name` trained with (None without a shortcut): the class whose train
        images carry the stamp, or in "inherit" mode its replica teacher's (config.inherited_shortcut_class)."""
        if self.inherit_mode:
            if name.endswith(ENSEMBLE_SUFFIX):  # its replicas have different shortcut classes
                return None
            return inherited_shortcut_class(int(self._h5.attrs["shortcut_class"]), name, len(self.classes))
        stamped = self.train_stamped
        return int(np.bincount(self.train_labels[stamped]).argmax()) if stamped.any() else None

    train_stamped = HeaderArray(
        "bool [n_train]: stamped with the planted shortcut (all False without one).",
        lambda store: np.zeros(store.n_train, bool),
    )
    test_stamped = HeaderArray(
        "bool [n_test]: stamped with the planted shortcut (all False without one).",
        lambda store: np.zeros(store.n_test, bool),
    )

    # --- per-model scores -----------------------------------------------------------------------

    def model(self, name: str) -> ModelScores:
        if name not in self._h5:
            raise StoreError(f"{self.path} has no scores for {name!r} (it has: {', '.join(self.models) or 'none'})")
        return ModelScores(self._h5[name])

    @property
    def models(self) -> list[str]:
        """Scored models, replica by replica in role order (teacher, student, student_baseline, then
        teacher.r1, ...), then any others."""
        found = [k for k in self._h5 if isinstance(self._h5[k], h5py.Group) and "scores" in self._h5[k]]
        return sorted(found, key=_model_order)

    def prepare_model(
        self,
        name: str,
        checkpoints: Sequence[Checkpoint],
        parameters: Sequence[str],
        row_chunk: int,
        test_block: int,
        per_checkpoint: bool,
        variants: Sequence[str] = ("raw",),
        groups: Sequence[str] = (),
    ) -> tuple[ModelScores, list[str]]:
        """(group, notes): the model's group, created with all its datasets, or the existing one checked
        (resume_model_group: its layout, its checkpoints, its finished blocks; the notes say what is scored
        again); its chunking is the file's (the caller uses it)."""
        arguments = (checkpoints, parameters, row_chunk, test_block, per_checkpoint, variants, groups)
        if name in self._h5:
            return resume_model_group(self._h5, name, self.path, *arguments)
        return create_model_group(self._h5, name, *arguments), []

    def write_ensemble(self, name: str, members: Sequence[str], row_chunk: int = CHUNK_ROWS) -> ModelScores:
        """A model group `name` holding the mean of the members' scores (each variant they all hold),
        self-influences and last losses: the ensemble of independently trained replicas. It replaces an
        earlier one; its checkpoints are all the members' (paths and sha256 recorded); it keeps no
        per-checkpoint scores. Rows are averaged `row_chunk` at a time (bounded memory)."""
        return write_ensemble(self._h5, name, [self.model(member) for member in members], row_chunk)

    # --- comparisons of model pairs ---------------------------------------------------------------

    def comparison_pairs(self) -> list[tuple[str, str]]:
        """(a, b) of every model pair compared in the file."""
        return tables.comparison_pairs(self._h5)

    def write_comparison(self, a: str, b: str, comparison: dict[str, np.ndarray], settings: dict) -> None:
        """Replace the comparison of models a and b by `comparison` (table name -> numpy structured array
        [rows], kept in this order) and `settings` (the options they were computed with: numbers, lists)."""
        tables.write_comparison(self._h5, a, b, comparison, settings)

    def comparison(self, a: str, b: str) -> dict[str, np.ndarray]:
        """The tables of the comparison of a and b: name -> numpy structured array [rows], in the order written."""
        group = tables.comparison_group(self._h5, self.path, a, b)
        return {name: tables.comparison_table(item) for name, item in group.items()}

    def comparison_settings(self, a: str, b: str) -> dict[str, Any]:
        """The options the comparison of a and b was computed with (ks, max_rows, seed)."""
        group = tables.comparison_group(self._h5, self.path, a, b)
        return {name: attribute_value(value) for name, value in group.attrs.items() if name not in MUTABLE_ATTRS}

    # --- named tables (tables.NAMED_TABLES) -------------------------------------------------------

    def write_table(self, name: str, rows: np.ndarray, **attrs: Any) -> None:
        """Replace the named table `name` (quality, agreement, detection, randomization, quality_report) by
        `rows`, a numpy structured array [rows], and its registered attributes by `attrs` (dicts stored as
        JSON; those not given take their defaults). An unregistered table or attribute is a StoreError."""
        tables.named_table(name).write(self._h5, rows, attrs)

    def read_table(self, name: str) -> np.ndarray:
        """The named table's rows (a numpy structured array); StoreError when the file has none."""
        return tables.named_table(name).read(self._h5, self.path)

    def table_attrs(self, name: str) -> dict[str, Any]:
        """The named table's registered attributes as Python values (defaults where the file predates one);
        StoreError when the file has no such table."""
        return tables.named_table(name).read_attrs(self._h5, self.path)

    def has_table(self, name: str) -> bool:
        return tables.named_table(name).name in self._h5

    # --- tracin-validate's record -----------------------------------------------------------------

    def prepare_validation(self, units: np.ndarray, settings: dict, overwrite: bool = False) -> ValidationRecord:
        """/validation for tracin-validate's units (tracin.results.validation.UNIT_DTYPE [n_units]): created,
        or the existing one when made with the same settings (resume: its finished units are kept, with or
        without `overwrite`). One made with other settings is refused unless `overwrite`, which replaces it
        (only /validation: the scores stay)."""
        return prepare_validation(self._h5, self.path, units, settings, overwrite)

    def validation(self) -> ValidationRecord:
        """The file's tracin-validate record; StoreError when it has none."""
        if VALIDATION not in self._h5:
            raise StoreError(f"{self.path} has no validation (run tracin-validate --run RUN)")
        return ValidationRecord(self._h5[VALIDATION])

    # --- closing ----------------------------------------------------------------------------------

    def mark_complete(self) -> None:
        """Status complete, every top-level object listed (digests.seal_members); a replacement made with
        --overwrite then moves over the old result."""
        seal_members(self._h5)
        self._h5.attrs["status"] = "complete"
        self._h5.flush()
        if self._replaces is not None:
            self._h5.close()
            fsync_file(self.path)
            os.replace(self.path, self._replaces)
            self.path, self._replaces = self._replaces, None
            self._h5 = open_h5(self.path, "r+")

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> "ScoreFile":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if disk_full(error) and self._h5.id.valid and self._h5.mode == "r+":
            return  # left as a kill leaves it, see hdf5_open_for_writing
        self.close()


def salvage_own_damage(path: Path, owned: Sequence[str]) -> Optional[Salvage]:
    """For a command that writes only the top-level groups `owned` (tracin-report: randomization and
    quality_report; tracin-validate: validation): when all the damage a full disk or a crash left is inside
    them, the file is salvaged as tracin-score would (salvage: what reads is copied into a fresh file, the
    damaged one kept beside it) and keeps its status, since no model's scores were touched; the command then
    makes its groups again. None when there is nothing to salvage; a StoreError pointing to tracin-score for
    damage it does not own, before anything reads the file (round 25, S05, S06: a damaged object header was
    a traceback while the groups' digests were checked)."""
    problems = find_damage(path)
    if not problems:
        return None
    if not all(damage_owner(problem) in owned for problem in problems):
        raise damaged(path, problems, REMEDIES)
    _, status = ScoreFile._header(path)
    salvaged = salvage(path, problems)
    with open_h5(path, "r+") as handle:
        handle.attrs["status"] = status
    return salvaged


OLDER_FORMATS = {  # why a file of each older format version is not read
    1: "whose values and attributes carry no digests to check them by",
    2: "whose attributes carry no digests to check them by",
    3: "whose digests are not bound to their file (a table copied in from another score file read as its own)",
    4: "whose attributes' digests are not bound to their file (attributes copied in from another score file read "
    "as its own)",
}
REMADE_BY_SCORE = ("quality", "detection", "agreement", "comparison")  # its tables, written again by every run


def replacing_path(path: Path) -> Path:
    """Where --overwrite builds the result that replaces `path` when complete: NAME.replacing beside it."""
    return path.with_name(f"{path.name}.replacing")
