"""What identifies a run's data and checkpoints, and what a person reads of them: the fingerprint (run.json's
`data_fingerprint`, compared by every command that rebuilds the data), data.json's record, and each saved
checkpoint's sha256 (run.json's `models/NAME/sha256`, compared by every command that loads one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from tracin.config import DataConfig
from tracin.errors import CheckpointError
from tracin.training.checkpoints import sha256_file
from tracin.training.data import SHORTCUT_PATCH, RunData


def _sha256(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.to(torch.int64).numpy().tobytes()).hexdigest()


def _pixels_sha256(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def fingerprint(data: RunData, config: DataConfig, pixels: bool = True, classes: bool = True) -> dict:
    """What identifies a run's data: data set, sizes, hashes of indices, of the training labels and of
    the selected examples' pixels (uint8 as stored; pixels=False leaves them out, as runs recorded
    before they were fingerprinted did), and the class names (a CIFAR-format root read with --no-checksum
    names its own, which could change after training: round 11, Q8; classes=False as runs before them)."""
    values = {
        "dataset": config.dataset,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "train_index_sha256": _sha256(data.train.index),
        "test_index_sha256": _sha256(data.test.index),
        "train_labels_sha256": _sha256(data.train.labels),
        "label_noise": config.label_noise,
        "seed": config.seed,
    }
    if config.coarse_labels is not None:  # only then: the digests of runs without them stay as they were
        values["coarse_labels"] = config.coarse_labels
        values["test_labels_sha256"] = _sha256(data.test.labels)
    if config.shortcut_class is not None:
        values["shortcut"] = [config.shortcut_class, config.shortcut_fraction]
        if (config.shortcut_patch, config.shortcut_mode) != (SHORTCUT_PATCH, "class"):  # only then: older digests stay
            values["shortcut"] += [config.shortcut_patch, config.shortcut_mode]
    if classes:
        values["classes"] = list(data.train.classes)
    if pixels:
        values["train_pixels_sha256"] = _pixels_sha256(data.train.images)
        values["test_pixels_sha256"] = _pixels_sha256(data.test.images)
    values["digest"] = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    return values


def fingerprint_differences(recorded: dict, data: RunData, config: DataConfig) -> list[str]:
    """What differs between a run's recorded fingerprint and these data (empty: the same data); pixels
    and class names are compared when the record has them."""
    current = fingerprint(data, config, pixels="train_pixels_sha256" in recorded, classes="classes" in recorded)
    if current["digest"] == recorded.get("digest"):
        return []
    return [key for key in current if key != "digest" and current[key] != recorded.get(key)]


def data_record(data: RunData) -> dict:
    """The indices, flipped labels, fine labels and stamped examples of a run, as saved in
    `checkpoints/<run>/data.json`."""
    noisy = data.train.noisy
    return {
        "train_index": data.train.index.tolist(),
        "test_index": data.test.index.tolist(),
        "flipped_index": data.train.index[noisy].tolist(),
        "flipped_original_labels": data.train.clean_labels[noisy].tolist(),
        "flipped_new_labels": data.train.labels[noisy].tolist(),
        "classes": list(data.train.classes),
        "fine_classes": list(data.train.fine_classes),
        "train_fine_labels": data.train.fine_labels.tolist(),
        "test_fine_labels": data.test.fine_labels.tolist(),
        "stamped_train_index": data.train.index[data.train.stamped].tolist(),
        "stamped_test_index": data.test.index[data.test.stamped].tolist(),
    }


def saved_digests(model_dir: Path, names: Sequence[str], known: dict) -> dict[str, str]:
    """{checkpoint file name: sha256} of the checkpoints `names` in `model_dir`, for run.json's
    models/NAME/sha256: those in `known` kept (a checkpoint is hashed once, when first recorded)."""
    return {name: known.get(name) or sha256_file(model_dir / name) for name in names}


def check_saved_digest(
    path: Path, recorded: Optional[dict], field: str, version: int, digest: Optional[str] = None
) -> None:
    """A CheckpointError unless the checkpoint at `path` (its sha256 `digest` when known) is, byte for byte,
    the one tracin-train saved: the sha256 `recorded` ({file name: sha256}, run.json's `field`) names for
    it (round 11, K4: the record deleted). A checkpoint of version 1 (its payload's), from before the
    record, is refused: one relabelled so, its record deleted, was loaded unchecked (round 17, K1, K2)."""
    if version < 2:
        raise CheckpointError(
            f"{path} is a checkpoint of version 1, from a tracin-train before run.json recorded each checkpoint's "
            "sha256, so it cannot be checked: train the run again with this tracin"
        )
    if path.name not in (recorded or {}):
        raise CheckpointError(
            f"{field} records no sha256 of {path.name}, which tracin-train records of every checkpoint it "
            "saves: run.json was edited"
        )
    if (digest or sha256_file(path)) != recorded[path.name]:
        raise CheckpointError(
            f"{path} is not the checkpoint tracin-train saved (its sha256 differs from {field}'s): edited, "
            "or damaged on disk"
        )
