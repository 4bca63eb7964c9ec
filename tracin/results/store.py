"""The HDF5 result file of tracin-score: layout, resume bookkeeping and provenance checks.

Layout (format "tracin-scores", version 1):

    /                       attrs: format, format_version, tracin_version, created, command, run, dataset,
                            mode, proj_dim, proj_seed, layers (JSON), loss, settings (JSON; everything that
                            must match to resume), status ("partial" | "complete")
    /train_index, /test_index         int64 [n]: indices into the original torchvision data set
    /train_labels, /test_labels       int64 [n]: labels scored with (train: after label noise)
    /train_clean_labels               int64 [n_train]: the data set's own labels
    /noisy                            bool [n_train]: label flipped by --label-noise
    /<model>/               attrs: role, parameters (JSON), n_parameters, row_chunk, test_block, status
        checkpoints/{path, epoch, lr, sha256}   [n_ckpt]: what was replayed, lr = TracIn weight
        scores              float32 [n_train, n_test]: sum_c lr_c <g_train, g_test>, chunked
        per_checkpoint      float32 [n_ckpt, n_train, n_test]: each lr_c-weighted term (--per-checkpoint)
        self_influence      float32 [n_train]: sum_c lr_c |g_train|^2
        last_loss           float32 [n_train]: each train example's loss at the last checkpoint
        done                bool [row chunks, test blocks]: blocks written (the resume mask)
        topk/               K = largest --topk, positions into train/test arrays, values float32:
            test_top_index, test_top_score         [n_test, K]  proponents of each test example (index int32)
            test_bottom_index, test_bottom_score   [n_test, K]  opponents of each test example
            train_top_index, train_top_score       [n_train, K] test examples each train example raises most
            train_bottom_index, train_bottom_score [n_train, K] test examples it lowers most
        topk_epoch/epoch_NNN/   the same tables from single checkpoints (with --per-checkpoint)
    /comparison/<a>__<b>/   overlap, rank_correlation, ks (compound tables), self_influence (attrs)

All datasets are allocated when created and never compressed, so writing a block touches raw data only;
a block is marked done only after its data are flushed. A `kill -9` therefore loses at most the block
in flight, and the file stays readable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
from torch import Tensor

from tracin import __version__
from tracin.training.checkpoints import Checkpoint
from tracin.config import ROLES
from tracin.errors import StoreError
from tracin.engine.topk import Ranking, StreamingRanking

FORMAT = "tracin-scores"
FORMAT_VERSION = 1
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

    @property
    def noisy(self) -> np.ndarray:
        return self.train_labels != self.train_clean_labels


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
    return [f"{k} ({stored.get(k)!r} in the file, {current.get(k)!r} now)" for k in keys if stored.get(k) != current.get(k)]


def open_h5(path: Path, mode: str) -> h5py.File:
    """h5py.File with a damaged or foreign file reported as one StoreError."""
    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise StoreError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {reason}") from None


class ScoreFile:
    """An open tracin-scores HDF5 file."""

    def __init__(self, handle: h5py.File, path: Path):
        self.h5, self.path = handle, Path(path)

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def create_or_resume(
        cls, path: Path, settings: dict, attrs: dict, data: DataArrays, overwrite: bool
    ) -> tuple["ScoreFile", bool]:
        """(file, resumed). A new file unless a partial one with the same settings exists; a finished
        file is kept unless overwrite; a partial one with other settings is refused, saying why."""
        path = Path(path)
        if path.exists() and not overwrite:
            store = cls.open_read_write(path)
            store._check_resumable(settings)
            return store, True
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(h5py.File(path, "w"), path)
        store._write_header(settings, attrs, data)
        return store, False

    @classmethod
    def open_read_write(cls, path: Path) -> "ScoreFile":
        store = cls(open_h5(path, "r+"), path)
        store._check_format()
        return store

    @classmethod
    def open_read(cls, path: Path) -> "ScoreFile":
        if not Path(path).is_file():
            raise StoreError(f"{path} does not exist")
        store = cls(open_h5(path, "r"), path)
        store._check_format()
        return store

    def _check_format(self) -> None:
        if self.h5.attrs.get("format") != FORMAT:
            self.h5.close()
            raise StoreError(f"{self.path} is not a tracin-score result file")

    def _check_resumable(self, settings: dict) -> None:
        if self.h5.attrs.get("status") == "complete":
            self.close()
            raise StoreError(f"{self.path} is a finished result; pass --overwrite to replace it, or --out elsewhere")
        differences = _differences(json.loads(self.h5.attrs["settings"]), settings)
        if differences:
            self.close()
            raise StoreError(
                f"{self.path} holds a partial result made with other settings: {'; '.join(differences)}. "
                "Rerun with the original options, or pass --overwrite to start again"
            )

    def _write_header(self, settings: dict, attrs: dict, data: DataArrays) -> None:
        self.h5.attrs.update(
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
        for name in ("train_index", "test_index", "train_labels", "test_labels", "train_clean_labels"):
            self.h5.create_dataset(name, data=np.asarray(getattr(data, name), dtype=np.int64))
        self.h5.create_dataset("noisy", data=data.noisy)
        self.h5.flush()

    # --- per-model scores -----------------------------------------------------------------------

    def model(self, name: str) -> "ModelScores":
        if name not in self.h5:
            raise StoreError(f"{self.path} has no scores for {name!r} (it has: {', '.join(self.models) or 'none'})")
        return ModelScores(self.h5[name])

    @property
    def models(self) -> list[str]:
        """Scored models, in role order (teacher, student, student_baseline), then any others."""
        found = [k for k in self.h5 if isinstance(self.h5[k], h5py.Group) and "scores" in self.h5[k]]
        return sorted(found, key=lambda name: (ROLES.index(name) if name in ROLES else len(ROLES), name))

    def prepare_model(
        self,
        name: str,
        checkpoints: Sequence[Checkpoint],
        parameters: Sequence[str],
        row_chunk: int,
        test_block: int,
        per_checkpoint: bool,
    ) -> "ModelScores":
        """The model's group, created with all its datasets, or the existing one after checking that
        it was made from the same checkpoints (sha256) and chunking."""
        if name in self.h5:
            scores = ModelScores(self.h5[name])
            scores.check_checkpoints(checkpoints, self.path)
            return scores
        n_train, n_test = len(self.h5["train_index"]), len(self.h5["test_index"])
        group = self.h5.create_group(name)
        group.attrs.update(
            {
                "role": name,
                "parameters": json.dumps(list(parameters)),
                "n_parameter_tensors": len(parameters),
                "row_chunk": row_chunk,
                "test_block": test_block,
                "status": "partial",
            }
        )
        _write_checkpoints(group.create_group("checkpoints"), checkpoints)
        chunks = (min(row_chunk, n_train, CHUNK_ROWS), min(test_block, n_test, CHUNK_COLS))
        _early_dataset(group, "scores", (n_train, n_test), np.float32, chunks)
        if per_checkpoint:
            _early_dataset(group, "per_checkpoint", (len(checkpoints), n_train, n_test), np.float32, (1, *chunks))
        _early_dataset(group, "self_influence", (n_train,), np.float32)
        _early_dataset(group, "last_loss", (n_train,), np.float32)
        grid = (-(-n_train // row_chunk), -(-n_test // test_block))
        _early_dataset(group, "done", grid, np.bool_)
        self.h5.flush()
        return ModelScores(group)

    def mark_complete(self) -> None:
        self.h5.attrs["status"] = "complete"
        self.h5.flush()

    def data_arrays(self) -> DataArrays:
        return DataArrays(*(self.h5[n][()] for n in ("train_index", "test_index", "train_labels", "test_labels", "train_clean_labels")))

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()

    def __enter__(self) -> "ScoreFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_checkpoints(group: h5py.Group, checkpoints: Sequence[Checkpoint]) -> None:
    text = h5py.string_dtype()
    group.create_dataset("path", data=np.array([c.path for c in checkpoints], dtype=object), dtype=text)
    group.create_dataset("sha256", data=np.array([c.sha256 for c in checkpoints], dtype=object), dtype=text)
    group.create_dataset("epoch", data=np.array([c.epoch for c in checkpoints], dtype=np.int64))
    group.create_dataset("lr", data=np.array([c.lr for c in checkpoints], dtype=np.float64))


class ModelScores:
    """One model's group: block writes, the done mask, top-k tables."""

    def __init__(self, group: h5py.Group):
        self.group = group
        self.row_chunk = int(group.attrs["row_chunk"])
        self.test_block = int(group.attrs["test_block"])
        self._done = group["done"][()]

    @property
    def scores(self) -> h5py.Dataset:
        return self.group["scores"]

    def matrix(self, checkpoint: Optional[int] = None):
        """The [n_train, n_test] scores (None: the sum over checkpoints), read lazily."""
        return self.scores if checkpoint is None else EpochMatrix(self.group["per_checkpoint"], checkpoint)

    @property
    def epochs(self) -> list[int]:
        return [int(e) for e in self.group["checkpoints/epoch"][()]]

    @property
    def lrs(self) -> list[float]:
        return [float(lr) for lr in self.group["checkpoints/lr"][()]]

    @property
    def complete(self) -> bool:
        return bool(self._done.all())

    @property
    def blocks_done(self) -> tuple[int, int]:
        return int(self._done.sum()), self._done.size

    def check_checkpoints(self, checkpoints: Sequence[Checkpoint], path: Path) -> None:
        stored = [s.decode() if isinstance(s, bytes) else s for s in self.group["checkpoints/sha256"][()]]
        current = [c.sha256 for c in checkpoints]
        if stored != current:
            raise StoreError(
                f"{path}: the checkpoints of {self.group.name.strip('/')} changed since this partial result was "
                "written (sha256 differs); pass --overwrite to score them afresh"
            )

    def is_done(self, row_start: int, row_stop: int, col_start: int, col_stop: int) -> bool:
        return bool(self._done[row_start // self.row_chunk, col_start // self.test_block])

    def write_block(self, row_start: int, col_start: int, scores: np.ndarray, per_checkpoint: Optional[np.ndarray],
                    self_influence: Optional[np.ndarray]) -> None:
        """Write a block's data, flush, then mark it done and flush again."""
        rows = slice(row_start, row_start + scores.shape[0])
        cols = slice(col_start, col_start + scores.shape[1])
        self.group["scores"][rows, cols] = scores
        if per_checkpoint is not None and "per_checkpoint" in self.group:
            self.group["per_checkpoint"][:, rows, cols] = per_checkpoint
        if self_influence is not None:
            self.group["self_influence"][rows] = self_influence
        self.group.file.flush()
        self._done[row_start // self.row_chunk, col_start // self.test_block] = True
        self.group["done"][row_start // self.row_chunk, col_start // self.test_block] = True
        self.group.file.flush()

    def write_rankings(self, name: str, test: Ranking, train: Ranking) -> None:
        """topk tables (name "topk" or "topk_epoch/epoch_NNN"), replacing earlier ones."""
        if name in self.group:
            del self.group[name]
        tables = self.group.create_group(name)
        for prefix, ranking in (("test", test), ("train", train)):
            for field in RANKING_FIELDS:
                values = getattr(ranking, field).numpy()
                tables.create_dataset(f"{prefix}_{field}", data=values.astype(np.int32) if "index" in field else values)

    def rankings(self, name: str = "topk") -> tuple[Ranking, Ranking]:
        """(test, train) rankings stored under `name`, as numpy-backed Rankings."""
        if name not in self.group:
            raise StoreError(f"{self.group.file.filename} has no {name} tables for {self.group.name.strip('/')}")
        tables = self.group[name]
        return tuple(Ranking(*(tables[f"{p}_{f}"][()] for f in RANKING_FIELDS)) for p in ("test", "train"))

    def mark_complete(self) -> None:
        self.group.attrs["status"] = "complete"
        self.group.file.flush()


class EpochMatrix:
    """One checkpoint's [n_train, n_test] slice of per_checkpoint, read lazily like a dataset."""

    def __init__(self, dataset: h5py.Dataset, index: int):
        self.dataset, self.index = dataset, index
        self.shape = dataset.shape[1:]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.dataset[(self.index, *key)]


def rank_matrix(matrix: h5py.Dataset | np.ndarray, k: int, row_chunk: int = 4096, device="cpu") -> tuple[Ranking, Ranking]:
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
