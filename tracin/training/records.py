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

from tracin.config import DataConfig, ModelConfig, TrainConfig
from tracin.errors import CheckpointError
from tracin.training.checkpoints import (
    check_checkpoint_lr,
    check_recorded_architecture,
    check_trained_config,
    checkpoint_name,
    load_checkpoint,
    sha256_file,
)
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
    """What differs between a run's recorded fingerprint and these data (empty: the same data): each field,
    not only the digest, so that a field edited under its digest is seen; pixels and class names are compared
    when the record has them."""
    current = fingerprint(data, config, pixels="train_pixels_sha256" in recorded, classes="classes" in recorded)
    differences = [key for key in current if key != "digest" and current[key] != recorded.get(key)]
    if current["digest"] != recorded.get("digest") and not differences:
        return ["digest"]  # the digest alone edited
    return differences  # a field edited under its digest (round 30, E7: n_test) differs too


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


def check_resumed_training(
    last: Path, payload: dict, config: TrainConfig, data_digest: str, model: ModelConfig
) -> None:
    """A CheckpointError unless last.pt (`payload`) was trained as this model is: with the run's `config` (its
    replica's seed), on the data of fingerprint `data_digest`, with the architecture `model`. Round 27,
    T16-T18: the last.pt and checkpoint of a run killed alike with another seed or lr, copied in, were
    trained on to "done", unsaid."""
    check_trained_config(last, payload, config)
    if payload.get("data_fingerprint", {}).get("digest") != data_digest:
        raise CheckpointError(f"{last} was trained on other data than this run's: it is not this run's")
    check_recorded_architecture(last, ModelConfig.from_dict(payload["model_config"]), payload["role"], model)


def check_nothing_lost(last: Path, entry: dict, field: str) -> None:
    """A CheckpointError when last.pt is missing from its model's folder but run.json (`entry`, its `field`)
    records epochs trained: the model would be trained again from its start, over the checkpoints recorded
    (round 27, T08). A model whose folder was moved away is trained again (trainer.start_or_resume)."""
    if int(entry.get("epoch") or 0) > 0:
        raise CheckpointError(
            f"{last}: missing, though {field} records epoch {entry['epoch']} trained: put it back, or move "
            f"{last.parent} away to train this model again"
        )


def check_resumed_checkpoints(last: Path, payload: dict, recorded: dict, field: str, schedule: TrainConfig) -> None:
    """A CheckpointError unless every checkpoint that last.pt's history (`payload`, checked by
    trainer.check_resumable) names is on disk beside it as tracin-train saved it: the sha256 `recorded`
    (run.json's `field`) names for it, or, for the one a kill left unrecorded (saved with last.pt, before
    run.json was written), its epoch, the weights of last.pt and the lr the run's `schedule` gives it.
    Round 26, T1, T2: one deleted crashed the resume; another epoch's copied over it was recorded as that
    epoch's."""
    for row in payload["resume"]["history"]:
        name = row.get("checkpoint") if isinstance(row, dict) else None
        if not name:
            continue
        path = last.parent / str(name)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing, though {last} records it as saved: put it back, or move {last.parent} away "
                "to train this model again"
            )
        if name in recorded:
            check_saved_digest(path, recorded, field)
            continue
        saved = load_checkpoint(path, role=payload.get("role")) if name == checkpoint_name(payload["epoch"]) else None
        if saved is None or not _same_weights(saved, payload):
            raise CheckpointError(
                f"{path} is not the checkpoint tracin-train saved with {last} ({field} records no sha256 of it, "
                f"and it is not epoch {payload['epoch']}'s weights): move {last.parent} away to train this model again"
            )
        check_checkpoint_lr(path, saved, schedule)  # round 27, T36: its lr edited (and last.pt's) was recorded


def _same_weights(saved: dict, last: dict) -> bool:
    """Whether the checkpoint `saved` holds last.pt's epoch and, tensor for tensor, its weights."""
    state, expected = saved["model"], last["model"]
    return (
        saved["epoch"] == last["epoch"]
        and state.keys() == expected.keys()
        and all(state[key].shape == value.shape and torch.equal(state[key], value) for key, value in expected.items())
    )


def check_saved_digest(
    path: Path, recorded: Optional[dict], field: str, version: Optional[int] = None, digest: Optional[str] = None
) -> None:
    """A CheckpointError unless the checkpoint at `path` (its sha256 `digest` when known) is, byte for byte,
    the one tracin-train saved: the sha256 `recorded` ({file name: sha256}, run.json's `field`) names for
    it (round 11, K4: the record deleted). A checkpoint of version 1 (its payload's), from before the
    record, is refused: one relabelled so, its record deleted, was loaded unchecked (round 17, K1, K2).
    `version` is None where the payload was not read (a resume's check of the bytes alone)."""
    if version is not None and version < 2:
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
