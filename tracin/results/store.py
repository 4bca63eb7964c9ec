"""The HDF5 result file of tracin-score: layout, resume bookkeeping and provenance checks.

This is the only module that imports h5py. Everything else reads and writes the file through the typed
readers and writers of ScoreFile (header facts, model pairs' comparison tables) and ModelScores (one
model's scores, bookkeeping and top-k tables), so a layout change is this file and tests/test_store.py.

Layout (format "tracin-scores", version 1):

    /                       attrs: format, format_version, tracin_version, created, command, run, dataset,
                            mode, proj_dim, proj_seed, layers (JSON), loss (and test_label beside it when the
                            test side's cross-entropy is on the "prediction"), precision (and shortcut_mode
                            "inherit" with the replica-0 teacher's shortcut_class, in that mode), label_noise,
                            classes (JSON), fine_classes (JSON), variants (JSON), settings (JSON; everything that must match
                            to resume),
                            status ("partial" | "complete")
    /train_index, /test_index         int64 [n]: indices into the original torchvision data set
    /train_labels, /test_labels       int64 [n]: labels scored with (train: after label noise)
    /train_clean_labels               int64 [n_train]: the data set's own labels
    /noisy                            bool [n_train]: label flipped by --label-noise
    /train_fine_labels, /test_fine_labels  int64 [n]: the data set's own labels (attr fine_classes; they
                            differ from the labels with tracin-train --coarse-labels)
    /train_stamped, /test_stamped     bool [n]: stamped with the planted shortcut (--shortcut-class; in
                            "inherit" mode the students' stamped images, of every class)
    /<model>/               attrs: role, parameters (JSON), n_parameter_tensors, row_chunk, test_block, status,
                            scoring_seconds (wall time over invocations: per pair, / n_train n_test),
                            variants (JSON: the score variants held, the first in scores)
        checkpoints/{path, epoch, lr, sha256}   [n_ckpt]: what was replayed, lr = TracIn weight
        scores              float32 [n_train, n_test]: sum_c lr_c <g_train, g_test>, chunked (attr variant)
        scores_<variant>    float32 [n_train, n_test]: each other variant (cosine, train-normalised, VARIANT@GROUP
                            of one layer group; attr variant)
        per_checkpoint      float32 [n_ckpt, n_train, n_test]: each lr_c-weighted term (--per-checkpoint)
        self_influence      float32 [n_train]: sum_c lr_c |g_train|^2
        self_influence_groups  float32 [n_groups, n_train], attrs groups: each layer group's part of
                            self_influence (stem, layer1, ..., head), the raw@GROUP variants' self-influence
        self_influence_train-normalised  float32 [n_train]: sum_c lr_c |g_train| (the train-normalised
                            variant's self-influence; the cosine variant's is sum_c lr_c for all)
        self_influence_groups_train-normalised  float32 [n_groups, n_train], attrs groups: sum_c lr_c
                            |g_train,group|, the train-normalised@GROUP variants' self-influence
        last_loss           float32 [n_train]: each train example's loss at the last checkpoint
        test_prediction     int64 [n_test]: the predicted class of each test example at the last checkpoint
        test_confidence     float32 [n_test]: its softmax probability (both absent in files from before them)
        done                bool [row chunks, test blocks]: blocks written (the resume mask)
        topk/               K = largest --topk, positions into train/test arrays, values float32:
            test_top_index, test_top_score         [n_test, K]  proponents of each test example (index int32)
            test_bottom_index, test_bottom_score   [n_test, K]  opponents of each test example
            train_top_index, train_top_score       [n_train, K] test examples each train example raises most
            train_bottom_index, train_bottom_score [n_train, K] test examples it lowers most
        topk_epoch/epoch_NNN/   the same tables from single checkpoints (with --per-checkpoint)
        topk_variant/<variant>/ the same tables from each other variant's scores
    /quality                compound [rows]: per model and variant, identical-class rate of the top-1 and top-k
                            proponents, top-1 concentration, distinct proponents (tracin.results.quality)
    /agreement              compound [rows]: per variant, statistic (overlap@k, spearman) and comparison
                            (teacher–student, replicas' own, normalised, own − other teacher), mean over test
                            examples with its bootstrap CI; own − other teacher also its permutation p over the
                            replica pairings and the difference they would detect (tracin.results.agreement)
    /detection              compound [rows]: mislabel detection per ranking (self-influence raw and
                            train-normalised, last-checkpoint loss, random): area under the curve, found at
                            10% and 20% inspected (with label noise only; tracin.results.figures)
    /randomization          compound [rows], attrs settings (JSON), seconds: model, variant, the layers re-initialised, test
                            row and the Spearman correlation of trained and randomized scores (tracin-report)
    /quality_report         compound [rows], attrs provenance (JSON: machine, finished, seconds): every sanity
                            check per model and variant, mean with bootstrap CI and chance (tracin.results.sanity,
                            tracin-report)
    /validation/            attrs: settings (JSON), status, provenance (JSON: machine, finished); tracin-validate (tracin.results.validation):
        units               compound [n_units]: model, condition, test_row, subset, seed of each retraining
        margins             float32 [n_units, n_test]: logit margins of the scored test examples after it
        seconds             float64 [n_units]: each retraining's wall time
        done                bool [n_units]: retrainings finished (the resume mask)
        leave_out, lds      compound [rows]: the leave-top-k-out and LDS tables
    /comparison/<a>__<b>/   attrs: ks, max_rows, seed (the comparison's options)
        <table>             compound [rows], one per table of tracin.results.comparison.TABLES (overlap,
                            rank_correlation, ks, self_influence), columns as registered, "scope" first

All datasets are allocated when created and never compressed, so writing a block touches raw data only;
a block is marked done only after its data are flushed. A `kill -9` therefore loses at most the block
in flight, and the file stays readable.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np
from torch import Tensor

from tracin import faults
from tracin.config import ENSEMBLE_SUFFIX, ROLES, inherited_shortcut_class, split_model_name, split_variant
from tracin.engine.topk import Ranking, StreamingRanking
from tracin.errors import StoreError, TracinError
from tracin.files import default_mode, disk_full, fsync_file, refuse_link
from tracin.training.checkpoints import Checkpoint
from tracin.variants import SCORE_VARIANTS
from tracin.version import __version__

FORMAT = "tracin-scores"
FORMAT_VERSION = 1
HEADER_ARRAYS = (
    "train_index",
    "test_index",
    "train_labels",
    "test_labels",
    "train_clean_labels",
    "train_fine_labels",
    "test_fine_labels",
)
HEADER_MASKS = ("train_stamped", "test_stamped")
RANKING_FIELDS = ("top_index", "top_score", "bottom_index", "bottom_score")
CHUNK_ROWS, CHUNK_COLS = 512, 4096  # at most 8 MB per HDF5 chunk of float32 scores: partial reads stay cheap


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


def rankings_name(epoch: Optional[int] = None, variant: Optional[str] = None) -> str:
    """Name of a model's top-k tables: "topk" (summed scores of the first variant), "topk_epoch/epoch_NNN"
    (one checkpoint) or "topk_variant/VARIANT" (summed scores of another variant)."""
    if variant is not None:
        if epoch is not None:
            raise StoreError("per-checkpoint top-k tables are kept for the first variant only")
        return f"topk_variant/{variant}"
    return "topk" if epoch is None else f"topk_epoch/epoch_{epoch:03d}"


def _early_dataset(group: h5py.Group, name: str, shape, dtype, chunks=None) -> h5py.Dataset:
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


def _differences(stored: dict, current: dict) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [
        f"{k} ({stored.get(k)!r} in the file, {current.get(k)!r} now)" for k in keys if stored.get(k) != current.get(k)
    ]


def _python(value: Any) -> Any:
    """An attribute as a plain Python value (numpy scalars and arrays converted, bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode()
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


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
        raise StoreError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {reason}") from None


VALIDATION = "validation"  # tracin-validate's group
RANDOMIZATION = "randomization"  # tracin-report's model-randomization rows
QUALITY_REPORT = "quality_report"  # tracin-report's table
SELF = "self_influence"
NORMALISED_SELF = "self_influence_train-normalised"
GROUP_SELF = "self_influence_groups"
GROUP_NORMALISED_SELF = "self_influence_groups_train-normalised"
SELF_INFLUENCES = (
    SELF,
    NORMALISED_SELF,
    GROUP_SELF,
    GROUP_NORMALISED_SELF,
)  # the datasets a block's first test block writes
REMADE_EACH_RUN = ("last_loss", "test_prediction", "test_confidence")  # written whole after the blocks, every run


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


class ScoreFile:
    """An open tracin-scores HDF5 file: its header facts, its models and their comparisons."""

    def __init__(self, handle: h5py.File, path: Path):
        self._h5, self.path = handle, Path(path)
        self._replaces: Optional[Path] = None  # the finished file this one replaces when complete
        self.salvaged: Optional[Salvage] = None  # what opening it salvaged from a damaged file

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
        cls.open_read(path).close()  # --overwrite replaces tracin-score results only, readable ones
        work = replacing_path(path)
        if work.exists():
            stored, _ = cls._header(work)
            if not _differences(stored, settings):
                store = cls._resume(work, settings, finished_too=True)
                store._replaces = path
                if store.status == "complete":
                    store.mark_complete()  # finished, killed before its rename: publish it, redo nothing
                return store, True
            work.unlink()  # our own replacement, made with other settings (or other checkpoints)
        store = cls._create(work, settings, attrs, data)
        store._replaces = path
        return store, False

    @classmethod
    def _header(cls, path: Path) -> tuple[dict, str]:
        """(settings, status) of a tracin-score file, read only; a file whose header does not read is refused."""
        with cls.open_read(path) as store:
            try:
                return json.loads(store._h5.attrs["settings"]), store.status
            except HDF5_ERRORS as error:
                raise _beyond_salvage(path, error) from None

    @classmethod
    def _resume(cls, path: Path, settings: dict, finished_too: bool = False) -> "ScoreFile":
        """The file at `path` opened to continue: checked (header, settings, status) before anything
        changes, then salvaged if damaged. A finished whole file is refused unless finished_too."""
        stored, status = cls._header(path)
        problems = find_damage(path)
        if status == "complete" and not problems and not finished_too:
            raise StoreError(f"{path} is a finished result; pass --overwrite to replace it, or --out elsewhere")
        differences = _differences(stored, settings)
        if differences:
            raise StoreError(
                f"{path} holds a result made with other settings: {'; '.join(differences)}. "
                "Rerun with the original options, or pass --overwrite to start again"
            )
        salvaged = salvage(path, problems) if problems else None
        store = cls.open_read_write(path)
        store.salvaged = salvaged
        return store

    @classmethod
    def _create(cls, path: Path, settings: dict, attrs: dict, data: DataArrays) -> "ScoreFile":
        """A new file whose header is written in a temporary file that is renamed into place only when
        whole: a kill during the header leaves no half file at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_beside(path)
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
    def open_read(cls, path: Path, locking: Optional[bool] = None) -> "ScoreFile":
        """The file, read only. locking=False reads a file another process is writing (to watch its
        progress; a block in flight may read as not done)."""
        if not Path(path).is_file():
            raise StoreError(f"{path} does not exist")
        store = cls(open_h5(path, "r", locking), path)
        store._check_format()
        return store

    def _check_format(self) -> None:
        try:
            fmt = self._h5.attrs.get("format")
        except HDF5_ERRORS as error:
            self._h5.close()
            raise _beyond_salvage(self.path, error) from None
        if fmt != FORMAT:
            self._h5.close()
            raise StoreError(f"{self.path} is not a tracin-score result file")

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
        self._h5.flush()

    # --- header facts ----------------------------------------------------------------------------

    @property
    def attributes(self) -> dict[str, Any]:
        """Every file attribute (provenance: version, command, run, mode, settings JSON, ...) as Python values."""
        return {name: _python(value) for name, value in self._h5.attrs.items()}

    def _attribute(self, name: str) -> Any:
        if name not in self._h5.attrs:
            raise StoreError(f"{self.path} records no {name!r} (written by an older tracin-score?)")
        return _python(self._h5.attrs[name])

    @property
    def status(self) -> str:
        """The file's state: "partial" while scoring, "complete" once every model and comparison is written."""
        return str(self._attribute("status"))

    @property
    def mode(self) -> str:
        """The gradient mode scored with (exact, last-layer, projected, ...)."""
        return str(self._attribute("mode"))

    @property
    def run_path(self) -> Path:
        """The tracin-train run folder the models came from, as it was when scored."""
        return Path(self._attribute("run"))

    @property
    def classes(self) -> list[str]:
        """Class names by label ([] when the file records none)."""
        return list(json.loads(self._h5.attrs.get("classes", "[]")))

    @property
    def n_train(self) -> int:
        return int(self._h5["train_index"].shape[0])

    @property
    def n_test(self) -> int:
        return int(self._h5["test_index"].shape[0])

    @cached_property
    def train_index(self) -> np.ndarray:
        """int64 [n_train]: each score row's index in the torchvision training set."""
        return self._h5["train_index"][()]

    @cached_property
    def test_index(self) -> np.ndarray:
        """int64 [n_test]: each score column's index in the torchvision test set."""
        return self._h5["test_index"][()]

    @cached_property
    def train_labels(self) -> np.ndarray:
        """int64 [n_train]: the labels scored with (after label noise)."""
        return self._h5["train_labels"][()]

    @cached_property
    def test_labels(self) -> np.ndarray:
        """int64 [n_test]"""
        return self._h5["test_labels"][()]

    @cached_property
    def train_clean_labels(self) -> np.ndarray:
        """int64 [n_train]: the data set's own labels."""
        return self._h5["train_clean_labels"][()]

    @cached_property
    def noisy(self) -> np.ndarray:
        """bool [n_train]: labels flipped by --label-noise."""
        return self._h5["noisy"][()]

    @property
    def fine_classes(self) -> list[str]:
        """Names of the fine labels (the classes, unless the run merged them)."""
        return list(json.loads(self._h5.attrs.get("fine_classes", "[]"))) or self.classes

    @cached_property
    def train_fine_labels(self) -> np.ndarray:
        """int64 [n_train]: the data set's own labels (files from before coarse labels: the clean labels)."""
        return self._h5["train_fine_labels"][()] if "train_fine_labels" in self._h5 else self.train_clean_labels

    @cached_property
    def test_fine_labels(self) -> np.ndarray:
        """int64 [n_test]: the data set's own labels (files from before coarse labels: the labels)."""
        return self._h5["test_fine_labels"][()] if "test_fine_labels" in self._h5 else self.test_labels

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

    @cached_property
    def train_stamped(self) -> np.ndarray:
        """bool [n_train]: stamped with the planted shortcut (all False without one)."""
        return self._h5["train_stamped"][()] if "train_stamped" in self._h5 else np.zeros(self.n_train, bool)

    @cached_property
    def test_stamped(self) -> np.ndarray:
        """bool [n_test]: stamped with the planted shortcut (all False without one)."""
        return self._h5["test_stamped"][()] if "test_stamped" in self._h5 else np.zeros(self.n_test, bool)

    # --- per-model scores -----------------------------------------------------------------------

    def model(self, name: str) -> "ModelScores":
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
    ) -> "ModelScores":
        """The model's group, created with all its datasets, or the existing one after checking that
        it was made from the same checkpoints (sha256); its chunking is the file's (the caller uses it)."""
        if name in self._h5:
            scores = ModelScores(self._h5[name])
            scores.check_checkpoints(checkpoints, self.path)
            scores.redo_non_finite_blocks()
            return scores
        n_train, n_test = self.n_train, self.n_test
        group = self._h5.create_group(name)
        group.attrs.update(
            {
                "role": name,
                "parameters": json.dumps(list(parameters)),
                "n_parameter_tensors": len(parameters),
                "row_chunk": row_chunk,
                "test_block": test_block,
                "status": "partial",
                "variants": json.dumps(list(variants)),
                "scoring_seconds": 0.0,
            }
        )
        _write_checkpoints(group.create_group("checkpoints"), checkpoints)
        chunks = (min(row_chunk, n_train, CHUNK_ROWS), min(test_block, n_test, CHUNK_COLS))
        _early_dataset(group, "scores", (n_train, n_test), np.float32, chunks).attrs["variant"] = variants[0]
        for variant in variants[1:]:
            _early_dataset(group, f"scores_{variant}", (n_train, n_test), np.float32, chunks).attrs["variant"] = variant
        if per_checkpoint:
            _early_dataset(group, "per_checkpoint", (len(checkpoints), n_train, n_test), np.float32, (1, *chunks))
        _early_dataset(group, "self_influence", (n_train,), np.float32)
        _early_dataset(group, NORMALISED_SELF, (n_train,), np.float32)
        for name in (GROUP_SELF, GROUP_NORMALISED_SELF) if groups else ():
            _early_dataset(group, name, (len(groups), n_train), np.float32).attrs["groups"] = json.dumps(list(groups))
        _early_dataset(group, "last_loss", (n_train,), np.float32)
        grid = (-(-n_train // row_chunk), -(-n_test // test_block))
        _early_dataset(group, "done", grid, np.bool_)
        self._h5.flush()
        return ModelScores(group)

    def write_ensemble(self, name: str, members: Sequence[str], row_chunk: int = CHUNK_ROWS) -> "ModelScores":
        """A model group `name` holding the mean of the members' scores (each variant they all hold),
        self-influences and last losses: the ensemble of independently trained replicas. It replaces an
        earlier one; its checkpoints are all the members' (paths and sha256 recorded); it keeps no
        per-checkpoint scores. Rows are averaged `row_chunk` at a time (bounded memory)."""
        models = [self.model(member) for member in members]
        variants = [v for v in models[0].variants if all(v in m.variants for m in models)]
        if name in self._h5:
            del self._h5[name]
        group = self._h5.create_group(name)
        first = models[0]._group.attrs
        group.attrs.update(
            {
                "role": name,
                "ensemble_of": json.dumps(list(members)),
                "parameters": first["parameters"],
                "n_parameter_tensors": first["n_parameter_tensors"],
                "row_chunk": first["row_chunk"],
                "test_block": first["test_block"],
                "status": "partial",
                "variants": json.dumps(variants),
            }
        )
        stored = group.create_group("checkpoints")
        for field in ("path", "sha256", "epoch", "lr"):
            values = np.concatenate([m._group[f"checkpoints/{field}"][()] for m in models])
            stored.create_dataset(
                field, data=values, dtype=h5py.string_dtype() if field in ("path", "sha256") else values.dtype
            )
        for variant in variants:
            dataset = "scores" if variant == variants[0] else f"scores_{variant}"
            target = group.create_dataset(dataset, shape=(self.n_train, self.n_test), dtype=np.float32)
            target.attrs["variant"] = variant
            for r0 in range(0, self.n_train, row_chunk):
                rows = slice(r0, min(r0 + row_chunk, self.n_train))
                target[rows] = np.mean([m.matrix(variant=variant)[rows] for m in models], axis=0)
        for field in (*SELF_INFLUENCES, "last_loss"):
            if all(field in m._group for m in models):
                mean = group.create_dataset(
                    field, data=np.mean([m._group[field][()] for m in models], axis=0).astype(np.float32)
                )
                mean.attrs.update(models[0]._group[field].attrs)
        group.create_dataset("done", data=np.ones_like(models[0].done))
        self._h5.flush()
        return ModelScores(group)

    # --- comparisons of model pairs ---------------------------------------------------------------

    def comparison_pairs(self) -> list[tuple[str, str]]:
        """(a, b) of every model pair compared in the file."""
        if "comparison" not in self._h5:
            return []
        return [tuple(name.split("__", 1)) for name in self._h5["comparison"]]

    def write_comparison(self, a: str, b: str, tables: dict[str, np.ndarray], settings: dict) -> None:
        """Replace the comparison of models a and b by `tables` (name -> numpy structured array [rows],
        kept in this order) and `settings` (the options they were computed with: numbers, lists)."""
        name = _comparison_name(a, b)
        if name in self._h5:
            del self._h5[name]
        group = self._h5.create_group(name, track_order=True)
        for table_name, table in tables.items():
            group.create_dataset(table_name, data=np.asarray(table))
        group.attrs.update(settings)
        self._h5.flush()

    def comparison(self, a: str, b: str) -> dict[str, np.ndarray]:
        """The tables of the comparison of a and b: name -> numpy structured array [rows], in the order written."""
        return {name: _table(item) for name, item in self._comparison_group(a, b).items()}

    def comparison_settings(self, a: str, b: str) -> dict[str, Any]:
        """The options the comparison of a and b was computed with (ks, max_rows, seed)."""
        return {name: _python(value) for name, value in self._comparison_group(a, b).attrs.items()}

    def _comparison_group(self, a: str, b: str) -> h5py.Group:
        name = _comparison_name(a, b)
        if name not in self._h5:
            pairs = ", ".join(f"{x} vs {y}" for x, y in self.comparison_pairs()) or "none"
            raise StoreError(f"{self.path} has no comparison of {a} and {b} (it has: {pairs})")
        return self._h5[name]

    def write_quality(self, table: np.ndarray) -> None:
        """Replace /quality, the quality checks (tracin.results.quality.QUALITY_DTYPE rows)."""
        self._write_table("quality", table)

    def quality(self) -> np.ndarray:
        """The quality checks table (structured [rows]); StoreError when the file has none."""
        return self._table("quality", "quality checks (written by tracin-score since the score variants)")

    def write_agreement(self, table: np.ndarray) -> None:
        """Replace /agreement, agreement against replicas (tracin.results.agreement.AGREEMENT_DTYPE rows)."""
        self._write_table("agreement", table)

    def agreement(self) -> np.ndarray:
        """The agreement table (structured [rows]); StoreError when the file has none."""
        return self._table("agreement", "agreement table (written by tracin-score since replicas)")

    def write_detection(self, table: np.ndarray) -> None:
        """Replace /detection, mislabel detection per ranking (tracin.results.figures.DETECTION_DTYPE rows)."""
        self._write_table("detection", table)

    def detection(self) -> np.ndarray:
        """The mislabel-detection table (structured [rows]); StoreError when the file has none."""
        return self._table("detection", "mislabel-detection table (written by tracin-score with label noise)")

    def write_randomization(self, table: np.ndarray, settings: dict, seconds: float = 0.0) -> None:
        """Replace /randomization, the model-randomization Spearman per test row
        (tracin.results.sanity.RANDOMIZATION_DTYPE rows), with the settings it was computed with and the
        wall time all its rows took (attr seconds)."""
        self._write_table(RANDOMIZATION, table)
        self._h5[RANDOMIZATION].attrs["settings"] = json.dumps(settings, sort_keys=True)
        self._h5[RANDOMIZATION].attrs["seconds"] = seconds
        self._h5.flush()

    @property
    def randomization_seconds(self) -> float:
        """Wall time of every model-randomization row in the file, over invocations (0 without any)."""
        return float(self._h5[RANDOMIZATION].attrs.get("seconds", 0.0)) if RANDOMIZATION in self._h5 else 0.0

    def randomization(self, settings: Optional[dict] = None) -> Optional[np.ndarray]:
        """The model-randomization rows; None when the file has none, or (given `settings`) none computed
        with these settings."""
        if RANDOMIZATION not in self._h5:
            return None
        stored = self._h5[RANDOMIZATION]
        if settings is not None and _differences(
            json.loads(stored.attrs["settings"]), json.loads(json.dumps(settings))
        ):
            return None
        return _table(stored)

    def write_quality_report(self, table: np.ndarray, provenance: Optional[dict] = None) -> None:
        """Replace /quality_report, every sanity check per model and variant (tracin.results.sanity.REPORT_DTYPE),
        with where and when it was made (attr provenance, JSON)."""
        self._write_table(QUALITY_REPORT, table)
        self._h5[QUALITY_REPORT].attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
        self._h5.flush()

    def quality_report(self) -> np.ndarray:
        """The quality report table (structured [rows]); StoreError when the file has none."""
        return self._table(QUALITY_REPORT, "quality report (written by tracin-report)")

    def quality_report_provenance(self) -> dict:
        """Where and when the quality report was made (machine, finished, seconds); {} when not recorded."""
        self.quality_report()
        return json.loads(self._h5[QUALITY_REPORT].attrs.get("provenance", "{}"))

    def prepare_validation(self, units: np.ndarray, settings: dict, overwrite: bool = False) -> "ValidationRecord":
        """/validation for tracin-validate's units (tracin.results.validation.UNIT_DTYPE [n_units]): created,
        or the existing one when made with the same settings (resume: its finished units are kept, with or
        without `overwrite`). One made with other settings is refused unless `overwrite`, which replaces it
        (only /validation: the scores stay)."""
        settings = json.loads(json.dumps(settings))
        kept = None
        if VALIDATION in self._h5:
            stored = self._stored_validation_settings()
            differences = _differences(stored, settings) if stored is not None else ["its settings do not read"]
            if not differences:
                kept = self._readable_units(units)
                if kept is None:  # as a full disk or a crash leaves it: every finished unit that reads is kept
                    return ValidationRecord(self._h5[VALIDATION])
            elif stored is not None and not overwrite:
                raise StoreError(
                    f"{self.path} holds a validation made with other settings: {'; '.join(differences)}. "
                    "Rerun with its options, or pass --overwrite to replace it"
                )
            del self._h5[VALIDATION]
        group = self._h5.create_group(VALIDATION)
        group.attrs.update({"settings": json.dumps(settings, sort_keys=True), "status": "partial"})
        group.create_dataset("units", data=units)
        _early_dataset(group, "margins", (len(units), self.n_test), np.float32)
        _early_dataset(group, "seconds", (len(units),), np.float64)
        _early_dataset(group, "done", (len(units),), np.bool_)
        if kept is not None:
            done, margins, seconds = kept
            group["margins"][done] = margins[done]
            group["seconds"][done] = seconds[done]
            group["done"][...] = done
        self._h5.flush()
        return ValidationRecord(group)

    def _stored_validation_settings(self) -> Optional[dict]:
        try:
            return json.loads(self._h5[VALIDATION].attrs["settings"])
        except (*HDF5_ERRORS, KeyError, ValueError):
            return None

    def _readable_units(self, units: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """None when /validation is whole (its units, margins, seconds and done mask read, with the shapes the
        units give, and a complete one has its tables); else (done, margins, seconds) of what reads: the
        finished units to keep when it is made again (nothing, where even those do not read)."""
        group, n = self._h5[VALIDATION], len(units)
        shapes = {"units": (n,), "margins": (n, self.n_test), "seconds": (n,), "done": (n,)}
        try:
            arrays = {name: group[name][()] for name in shapes}
            whole = all(arrays[name].shape == shape for name, shape in shapes.items())
            whole = whole and np.array_equal(arrays["units"], units)
            if whole and _python(group.attrs["status"]) == "complete":
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
                and margins.shape == (n, self.n_test)
                and seconds.shape == (n,)
                and np.array_equal(group["units"][()], units)
            ):
                return done & np.isfinite(margins).all(axis=1), margins, seconds
        except (*HDF5_ERRORS, KeyError, ValueError, TypeError):
            pass
        return np.zeros(n, bool), np.zeros((n, self.n_test), np.float32), np.zeros(n)

    def validation(self) -> "ValidationRecord":
        """The file's tracin-validate record; StoreError when it has none."""
        if VALIDATION not in self._h5:
            raise StoreError(f"{self.path} has no validation (run tracin-validate --run RUN)")
        return ValidationRecord(self._h5[VALIDATION])

    def _write_table(self, name: str, table: np.ndarray) -> None:
        if name in self._h5:
            del self._h5[name]
        self._h5.create_dataset(name, data=np.asarray(table))
        self._h5.flush()

    def _table(self, name: str, what: str) -> np.ndarray:
        if name not in self._h5:
            raise StoreError(f"{self.path} has no {what}")
        return self._h5[name][()]

    # --- closing ----------------------------------------------------------------------------------

    def mark_complete(self) -> None:
        """Status complete; a replacement made with --overwrite then moves over the old result."""
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


# --- damage and salvage ------------------------------------------------------------------------------
#
# A full disk or a crash inside HDF5 can leave a file whose metadata is half written: a group or dataset
# that no longer opens, though the blocks finished before it still read. Resuming such a file first
# copies what reads into a fresh file (salvage), so finished work survives and only the broken parts are
# made again.

HDF5_ERRORS = (KeyError, OSError, RuntimeError, ValueError)  # how h5py reports a damaged file


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


def _beyond_salvage(path: Path, error: BaseException) -> StoreError:
    return StoreError(
        f"{path} is damaged beyond salvage: its header does not read ({_reason(error)}); "
        "pass --overwrite to score afresh"
    )


def find_damage(path: Path) -> list[str]:
    """What of the file HDF5 cannot read, as "OBJECT: reason" lines ("/: ..." for the root's own
    attributes): every group, attribute and dataset is opened, every chunk index walked and every
    unchunked dataset read. Empty when the file is whole. Score chunks are not read (a resume reads the
    finished ones for finite values), so this stays cheap on large files. A file that does not open at
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


def salvage_own_damage(path: Path, owned: Sequence[str]) -> Optional[Salvage]:
    """For a command that writes only the top-level groups `owned` (tracin-report: randomization and
    quality_report; tracin-validate: validation): when all the damage a full disk or a crash left is inside
    them, the file is salvaged as tracin-score would (salvage: what reads is copied into a fresh file, the
    damaged one kept beside it) and keeps its status, since no model's scores were touched; the command then
    makes its groups again. None when there is nothing to salvage, or damage it does not own (which
    check_finished then names, pointing to tracin-score)."""
    problems = find_damage(path)
    if not problems or not all(problem.lstrip("/").split("/")[0].split(":")[0] in owned for problem in problems):
        return None
    _, status = ScoreFile._header(path)
    salvaged = salvage(path, problems)
    with open_h5(path, "r+") as handle:
        handle.attrs["status"] = status
    return salvaged


def salvage(path: Path, problems: Sequence[str]) -> Salvage:
    """Replace the damaged file at `path` (its find_damage `problems`) by a fresh one holding everything
    that reads, and keep the damaged file beside it (Salvage.damaged_copy). Of a model's group the parts
    that read are kept; a model whose scores, bookkeeping or checkpoints do not read is dropped and scored
    again. Other damaged groups (comparisons, tables) are dropped; the run writes them again. The fresh
    file is partial. A file whose header does not read cannot be salvaged (StoreError)."""
    tmp = _temporary_beside(path)
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


def _temporary_beside(path: Path) -> str:
    """An empty `.NAME.*.tmp` beside `path` with the tool's file mode; a killed writer's are removed by
    tracin.files.remove_stale_temporaries."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_mode())
    os.close(fd)
    return tmp


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
        raise _beyond_salvage(path, error) from None
    target.attrs["status"] = "partial"  # whatever was left behind is made again by the run
    dropped = []
    for name in _readable_keys(source):
        if name in target:
            continue
        if not _damaged(problems, f"/{name}"):
            source.copy(source[name], target, name)
        elif not _copy_model_parts(source, target, name, problems):
            dropped.append(name)
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


def hdf5_open_for_writing() -> bool:
    """Whether this process has an HDF5 file open for writing. After a full disk such a file must not be
    closed: closing flushes half-written metadata over its last consistent state, and h5py may crash doing
    so. The caller exits at once instead (os._exit), as a kill would."""
    return any(file_id.get_intent() & h5py.h5f.ACC_RDWR for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


def layout_problems(store: "ScoreFile") -> list[str]:
    """What in a readable score file does not have the declared layout (the module docstring): the header
    arrays' lengths and integer types, each model's score matrices' shape and float type, its per-example
    arrays' lengths, and its top-k tables' shapes and index ranges. A file made by hand, or by something else,
    is refused with the first of these, instead of failing inside a reader."""
    h5, problems = store._h5, []
    for name in HEADER_ARRAYS + HEADER_MASKS + ("noisy",):
        if name in h5:
            problems += _shape_problems(
                h5[name],
                f"/{name}",
                (store.n_train if name.startswith(("train", "noisy")) else store.n_test,),
                "b" if name in HEADER_MASKS + ("noisy",) else "iu",
            )
    problems += _table_problems(h5, set(store.models))
    for model in store.models:
        group = h5[model]
        problems += [f"/{model}/{key} is missing" for key in ("scores", "done", SELF, "topk") if key not in group]
        for key in group:
            if key == "scores" or key.startswith("scores_"):
                problems += _shape_problems(group[key], f"/{model}/{key}", (store.n_train, store.n_test), "f")
            elif key in (SELF, NORMALISED_SELF, "last_loss"):
                problems += _shape_problems(group[key], f"/{model}/{key}", (store.n_train,), "f")
            elif key in (GROUP_SELF, GROUP_NORMALISED_SELF):
                rows = group[key].shape[0] if isinstance(group[key], h5py.Dataset) and group[key].ndim == 2 else -1
                problems += _shape_problems(group[key], f"/{model}/{key}", (rows, store.n_train), "f")
            elif key == "test_prediction":
                problems += _shape_problems(group[key], f"/{model}/{key}", (store.n_test,), "iu")
        for name in _ranking_groups(group):
            problems += _ranking_problems(group[name], f"/{model}/{name}", store.n_train, store.n_test)
    return problems


def _table_problems(h5, models: set[str]) -> list[str]:
    """The tables outside the models' groups (comparisons, agreement, quality, detection, the report, the
    validation's units and tables) are one-dimensional arrays of named fields; anything else there (but the
    validation's margins, seconds and done mask, which prepare_validation checks) was not written by tracin."""
    problems: list[str] = []
    header = {
        *HEADER_ARRAYS,
        *HEADER_MASKS,
        "noisy",
        *(f"{VALIDATION}/{name}" for name in ("margins", "seconds", "done")),
    }

    def visit(name: str, item) -> None:
        if name.split("/")[0] in models or name in header or not isinstance(item, h5py.Dataset):
            return
        if item.dtype.names is None or item.ndim != 1:
            problems.append(f"/{name} is not a table of named fields (it holds {item.dtype}, shape {item.shape})")

    h5.visititems(visit)
    return problems


def _shape_problems(dataset, where: str, shape: tuple, kinds: str) -> list[str]:
    if not isinstance(dataset, h5py.Dataset):
        return [f"{where} is not a dataset"]
    if dataset.dtype.kind not in kinds:
        return [
            f"{where} holds {dataset.dtype}, not {'integers' if 'i' in kinds else 'floats' if kinds == 'f' else 'booleans'}"
        ]
    if dataset.shape != shape:
        return [f"{where} has shape {dataset.shape}, expected {shape}"]
    return []


def _ranking_groups(group) -> list[str]:
    """The names of a model group's top-k tables: topk, topk_epoch/epoch_NNN, topk_variant/<variant>."""
    names = ["topk"] if "topk" in group else []
    for parent in ("topk_epoch", "topk_variant"):
        if isinstance(group.get(parent), h5py.Group):
            names += [f"{parent}/{child}" for child in group[parent]]
    return names


def _ranking_problems(tables, where: str, n_train: int, n_test: int) -> list[str]:
    if not isinstance(tables, h5py.Group):
        return [f"{where} is not a group of tables"]
    problems = []
    for prefix, rows, limit in (("test", n_test, n_train), ("train", n_train, n_test)):
        for field in RANKING_FIELDS:
            key = f"{prefix}_{field}"
            if key not in tables:
                problems.append(f"{where}/{key} is missing")
                continue
            dataset = tables[key]
            found = _shape_problems(
                dataset,
                f"{where}/{key}",
                (rows, dataset.shape[1] if len(dataset.shape) == 2 else -1),
                "iu" if "index" in field else "f",
            )
            if not found and "index" in field and dataset.size:
                values = dataset[()]
                if values.min() < 0 or values.max() >= limit:
                    found = [f"{where}/{key} holds indices outside 0..{limit - 1}"]
            problems += found
    return problems


def replacing_path(path: Path) -> Path:
    """Where --overwrite builds the result that replaces `path` when complete: NAME.replacing beside it."""
    return path.with_name(f"{path.name}.replacing")


def _comparison_name(a: str, b: str) -> str:
    return f"comparison/{a}__{b}"


def _table(item: h5py.Dataset | h5py.Group) -> np.ndarray:
    """A stored comparison table as a structured array; files written before tables were registered
    kept self_influence as attributes of a group, read here as one row."""
    if isinstance(item, h5py.Group):
        values = {name: float(value) for name, value in item.attrs.items()}
        return np.array([tuple(values.values())], dtype=[(name, "f8") for name in values])
    return item[()]


def _write_checkpoints(group: h5py.Group, checkpoints: Sequence[Checkpoint]) -> None:
    text = h5py.string_dtype()
    group.create_dataset("path", data=np.array([c.path for c in checkpoints], dtype=object), dtype=text)
    group.create_dataset("sha256", data=np.array([c.sha256 for c in checkpoints], dtype=object), dtype=text)
    group.create_dataset("epoch", data=np.array([c.epoch for c in checkpoints], dtype=np.int64))
    group.create_dataset("lr", data=np.array([c.lr for c in checkpoints], dtype=np.float64))


class ModelScores:
    """One model's group: scores (read lazily), block writes and the done mask, per-example arrays,
    top-k tables."""

    def __init__(self, group: h5py.Group):
        self._group = group
        self.row_chunk = int(group.attrs["row_chunk"])
        self.test_block = int(group.attrs["test_block"])

    @property
    def name(self) -> str:
        return self._group.name.strip("/")

    # --- scores ------------------------------------------------------------------------------------

    @property
    def scores(self) -> h5py.Dataset:
        """float32 [n_train, n_test], summed over checkpoints; numpy-style slicing reads only what it asks for."""
        return self._group["scores"]

    @property
    def variants(self) -> list[str]:
        """The score variants held, the first in `scores` (files from before variants: raw only)."""
        return json.loads(self._group.attrs.get("variants", '["raw"]'))

    def matrix(self, checkpoint: Optional[int] = None, variant: Optional[str] = None):
        """The [n_train, n_test] scores (None: the sum over checkpoints; else the checkpoint's position
        in `epochs`, which needs has_per_checkpoint), read lazily; `variant`: another variant's sum."""
        if variant is not None and variant != self.variants[0]:
            if checkpoint is not None:
                raise StoreError("per-checkpoint scores are kept for the first variant only")
            if variant not in self.variants:
                raise StoreError(
                    f"{self._group.file.filename}: {self.name} holds no {variant!r} scores (it has {self.variants})"
                )
            return self._group[f"scores_{variant}"]
        if checkpoint is None:
            return self.scores
        if not self.has_per_checkpoint:
            raise StoreError(f"{self._group.file.filename}: {self.name} was scored without --per-checkpoint")
        return EpochMatrix(self._group["per_checkpoint"], checkpoint)

    @property
    def has_per_checkpoint(self) -> bool:
        """Whether each checkpoint's term was kept (--per-checkpoint)."""
        return "per_checkpoint" in self._group

    @property
    def epochs(self) -> list[int]:
        """The epoch of each checkpoint replayed, in order."""
        return [int(e) for e in self._group["checkpoints/epoch"][()]]

    @property
    def self_influence(self) -> np.ndarray:
        """float32 [n_train]: sum_c lr_c |g_train|^2."""
        return self._group["self_influence"][()]

    @property
    def normalised_self_influence(self) -> Optional[np.ndarray]:
        """float32 [n_train]: sum_c lr_c |g_train|, the train-normalised variant's self-influence; None in
        files from before it."""
        return self._group[NORMALISED_SELF][()] if NORMALISED_SELF in self._group else None

    @property
    def group_self_influence(self) -> dict[str, np.ndarray]:
        """{layer group: float32 [n_train]}, each group's part of self_influence (stem, layer1, ..., head:
        tracin.engine.groups); empty in files from before groups."""
        return self._by_group(GROUP_SELF)

    @property
    def group_normalised_self_influence(self) -> dict[str, np.ndarray]:
        """{layer group: float32 [n_train]}, sum_c lr_c |g_train,group|; empty in files from before it."""
        return self._by_group(GROUP_NORMALISED_SELF)

    def _by_group(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._group:
            return {}
        dataset = self._group[name]
        return dict(zip(json.loads(dataset.attrs["groups"]), dataset[()]))

    def variant_self_influence(self, variant: str) -> Optional[np.ndarray]:
        """float32 [n_train]: the self-influence of a variant (and of each VARIANT@GROUP), sum_c lr_c |g|^p
        with p its ScoreVariant.self_influence_power: the stored |g|^2 sums for p = 2 (raw), |g| for p = 1
        (train-normalised); None for p = 0 (cosine: sum_c lr_c for every example, no ranking), for a
        variant this installation does not register, and where not kept."""
        base, group = split_variant(variant)
        power = SCORE_VARIANTS[base].self_influence_power if base in SCORE_VARIANTS else 0
        if power == 0:
            return None
        if group is None:
            return self.self_influence if power == 2 else self.normalised_self_influence
        return (self.group_self_influence if power == 2 else self.group_normalised_self_influence).get(group)

    @property
    def last_loss(self) -> np.ndarray:
        """float32 [n_train]: each train example's loss at the last checkpoint."""
        return self._group["last_loss"][()]

    def add_scoring_seconds(self, seconds: float) -> float:
        """Add the wall time one tracin-score invocation spent on this model (its blocks, losses and
        rankings) to attr scoring_seconds; returns the total over invocations (a resumed file's too)."""
        total = float(self._group.attrs.get("scoring_seconds", 0.0)) + seconds
        self._group.attrs["scoring_seconds"] = total
        self._group.file.flush()
        return total

    @property
    def seconds_per_pair(self) -> Optional[float]:
        """Scoring wall time per train-test pair (attr scoring_seconds / n_train n_test); None if not recorded
        (an ensemble, or a file from before the timing)."""
        if not self._group.attrs.get("scoring_seconds"):
            return None
        n_train, n_test = self.scores.shape
        return float(self._group.attrs["scoring_seconds"]) / (n_train * n_test)

    @property
    def predictions(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(int64 [n_test] predicted class, float32 [n_test] its softmax probability) at the last
        checkpoint; None in files from before they were kept, and for an ensemble."""
        if "test_prediction" not in self._group or "test_confidence" not in self._group:
            return None
        return self._group["test_prediction"][()], self._group["test_confidence"][()]

    def write_predictions(self, logits: np.ndarray) -> None:
        """logits: float [n_test, classes] at the last checkpoint -> test_prediction and test_confidence."""
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        for name, values in (
            ("test_prediction", logits.argmax(axis=1).astype(np.int64)),
            ("test_confidence", probabilities.max(axis=1).astype(np.float32)),
        ):
            if name not in self._group:
                _early_dataset(self._group, name, values.shape, values.dtype)
            self._group[name][:] = values
        self._group.file.flush()

    def write_last_loss(self, losses: np.ndarray) -> None:
        """losses: float [n_train], each train example's loss at the last checkpoint."""
        if "last_loss" not in self._group:  # left behind by a salvage
            _early_dataset(self._group, "last_loss", losses.shape, np.float32)
        self._group["last_loss"][:] = losses
        self._group.file.flush()

    # --- resume bookkeeping ----------------------------------------------------------------------

    @property
    def done(self) -> np.ndarray:
        """bool [row chunks, test blocks]: blocks written (row chunk r holds rows r*row_chunk.., test block
        t columns t*test_block..)."""
        return self._group["done"][()]

    @property
    def checkpoint_files(self) -> list[tuple[str, str]]:
        """(path as scored, sha256) of each checkpoint replayed, in order."""
        paths, hashes = (self._group[f"checkpoints/{field}"][()] for field in ("path", "sha256"))
        return [tuple(v.decode() if isinstance(v, bytes) else str(v) for v in pair) for pair in zip(paths, hashes)]

    def check_checkpoints(self, checkpoints: Sequence[Checkpoint], path: Path) -> None:
        stored = [s.decode() if isinstance(s, bytes) else s for s in self._group["checkpoints/sha256"][()]]
        current = [c.sha256 for c in checkpoints]
        if stored != current:
            raise StoreError(
                f"{path}: the checkpoints of {self.name} changed since this partial result was "
                "written (sha256 differs); pass --overwrite to score them afresh"
            )

    def write_block(
        self,
        row_start: int,
        col_start: int,
        scores: np.ndarray,
        per_checkpoint: Optional[np.ndarray] = None,
        self_influences: Optional[dict[str, np.ndarray]] = None,
        other_variants: Optional[dict[str, np.ndarray]] = None,
    ) -> None:
        """Write a block's data (float32 [rows, cols] scores, [n_ckpt, rows, cols] per checkpoint, the
        self-influences of its rows by dataset name (SELF_INFLUENCES: [rows], or [n_groups, rows] for the
        layer groups'), {variant: [rows, cols]} of the other variants), flush, then mark it done and flush
        again. Non-finite values are refused: a block marked done holds finite scores."""
        self_influences, other_variants = self_influences or {}, other_variants or {}
        for values in (scores, per_checkpoint, *self_influences.values(), *other_variants.values()):
            if values is not None and not np.isfinite(values).all():
                raise StoreError(f"non-finite scores in the block at train {row_start}, test {col_start}; not written")
        rows = slice(row_start, row_start + scores.shape[0])
        cols = slice(col_start, col_start + scores.shape[1])
        self._group["scores"][rows, cols] = scores
        for variant, values in other_variants.items():
            self._group[f"scores_{variant}"][rows, cols] = values
        if per_checkpoint is not None and self.has_per_checkpoint:
            self._group["per_checkpoint"][:, rows, cols] = per_checkpoint
        for name, values in self_influences.items():
            if values is not None and name in self._group:  # files from older versions lack some
                self._group[name][..., rows] = values
        self._group.file.flush()
        self._group["done"][row_start // self.row_chunk, col_start // self.test_block] = True
        self._group.file.flush()

    def redo_non_finite_blocks(self) -> int:
        """On resume: blocks marked done whose values are not all finite (a damaged file) are marked not
        done, so they are computed again. Returns how many. Reads each done block of every score dataset."""
        done, redone = self.done, 0
        names = ["scores", *(f"scores_{v}" for v in self.variants[1:])]
        for r, c in zip(*np.nonzero(done)):
            rows = slice(r * self.row_chunk, (r + 1) * self.row_chunk)
            cols = slice(c * self.test_block, (c + 1) * self.test_block)
            block = [self._group[name][rows, cols] for name in names]
            block += [self._group["per_checkpoint"][:, rows, cols]] if self.has_per_checkpoint else []
            block += [self._group[name][..., rows] for name in SELF_INFLUENCES if c == 0 and name in self._group]
            if not all(np.isfinite(part).all() for part in block):
                self._group["done"][r, c] = False
                redone += 1
        self._group.file.flush()
        return redone

    # --- top-k tables -----------------------------------------------------------------------------

    def write_rankings(self, name: str, test: Ranking, train: Ranking) -> None:
        """topk tables under `name` (rankings_name(epoch)), replacing earlier ones."""
        if name in self._group:
            del self._group[name]
        tables = self._group.create_group(name)
        for prefix, ranking in (("test", test), ("train", train)):
            for field in RANKING_FIELDS:
                values = getattr(ranking, field).numpy()
                tables.create_dataset(f"{prefix}_{field}", data=values.astype(np.int32) if "index" in field else values)

    def variant_rankings(self, variant: str) -> tuple[Ranking, Ranking]:
        """(test, train) rankings of one variant's summed scores (the first variant's are "topk")."""
        return self.rankings(rankings_name(variant=None if variant == self.variants[0] else variant))

    def rankings(self, name: str = "topk") -> tuple[Ranking, Ranking]:
        """(test, train) rankings stored under `name` (rankings_name(epoch)), as numpy-backed Rankings."""
        if name not in self._group:
            raise StoreError(f"{self._group.file.filename} has no {name} tables for {self.name}")
        tables = self._group[name]
        return tuple(Ranking(*(tables[f"{p}_{f}"][()] for f in RANKING_FIELDS)) for p in ("test", "train"))

    def mark_complete(self) -> None:
        self._group.attrs["status"] = "complete"
        self._group.file.flush()


class EpochMatrix:
    """One checkpoint's [n_train, n_test] slice of per_checkpoint, read lazily like a dataset."""

    def __init__(self, dataset: h5py.Dataset, index: int):
        self.dataset, self.index = dataset, index
        self.shape = dataset.shape[1:]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.dataset[(self.index, *key)]


def rank_matrix(
    matrix: h5py.Dataset | np.ndarray, k: int, row_chunk: int = 4096, device="cpu"
) -> tuple[Ranking, Ranking]:
    """(test, train) Rankings of a [n_train, n_test] score matrix read in row chunks: for each test
    column its k largest/smallest train rows, for each train row its k largest/smallest test columns.
    The partial sorts run on `device` (a GPU makes them cheap at 50,000 x 10,000)."""
    import torch

    n_train, n_test = matrix.shape
    per_test, per_train = StreamingRanking(n_test, k, device), StreamingRanking(n_train, k, device)
    for start in range(0, n_train, row_chunk):
        block = torch.from_numpy(np.asarray(matrix[start : start + row_chunk], dtype=np.float32)).to(device)
        per_train.update(start, block, 0)
        per_test.update(0, block.T, start)
    return per_test.result(), per_train.result()


def to_numpy(tensor: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if tensor is None else tensor.detach().cpu().numpy()


class ValidationRecord:
    """/validation of a score file: tracin-validate's units (one retraining each), the margins each gave
    every scored test example, which are done, and the tables made from them."""

    def __init__(self, group: h5py.Group):
        self._group = group

    @property
    def settings(self) -> dict:
        return json.loads(self._group.attrs["settings"])

    @property
    def status(self) -> str:
        """ "partial" until the tables are written, then "complete"."""
        return _python(self._group.attrs["status"])

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
        self._group["done"][index] = True
        self._group.file.flush()

    def write_tables(self, leave_out: np.ndarray, lds: np.ndarray, provenance: Optional[dict] = None) -> None:
        """The leave-top-k-out and LDS tables (LEAVE_OUT_DTYPE, LDS_DTYPE rows) and where they were made
        (provenance JSON: machine, finished); status complete."""
        for name, table in (("leave_out", leave_out), ("lds", lds)):
            if name in self._group:
                del self._group[name]
            self._group.create_dataset(name, data=np.asarray(table))
        self._group.attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
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
