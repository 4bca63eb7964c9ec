"""tracin.checkpoints: atomic writes, checked loads, listing, and the files tracin-train writes."""

from __future__ import annotations

import pickle

import pytest
import torch

from tracin.checkpoints import (
    FORMAT,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    load_file,
    resolve_checkpoints,
    save_atomic,
)
from tracin.errors import CheckpointError


def _payload(role: str = "teacher") -> dict:
    return {"format": FORMAT, "version": 1, "role": role, "model": {"w": torch.arange(3.0)}, "lr": 0.5, "epoch": 2}


def test_save_atomic_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / checkpoint_name(2)
    save_atomic(_payload(), path)
    assert [p.name for p in path.parent.iterdir()] == ["epoch_002.pt"]
    assert torch.equal(load_checkpoint(path, role="teacher")["model"]["w"], torch.arange(3.0))


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic(_payload(), path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a local lambda cannot be pickled
        save_atomic({"unpicklable": lambda: None}, path)
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_unreadable_files_are_checkpoint_errors(tmp_path, damage):
    path = tmp_path / "epoch_002.pt"
    if damage != "missing":
        save_atomic(_payload(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=str(path)):
        load_file(path)


def test_load_checkpoint_checks_format_and_role(tmp_path):
    save_atomic(_payload("student"), tmp_path / "student.pt")
    save_atomic({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="is a student checkpoint, expected teacher"):
        load_checkpoint(tmp_path / "student.pt", role="teacher")
    with pytest.raises(CheckpointError, match="not a tracin-train checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_list_checkpoints_orders_by_epoch_and_skips_other_files(tmp_path):
    for name in ("epoch_010.pt", "epoch_002.pt", "last.pt", "init.pt", "epoch_004.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_002.pt", "epoch_004.pt", "epoch_010.pt"]


def test_resolve_checkpoints_reads_the_lr_tracin_train_stored(tiny_run):
    paths = list_checkpoints(tiny_run / "teacher")
    resolved = resolve_checkpoints(paths)
    stored = [torch.load(p, weights_only=True)["lr"] for p in paths]
    assert [c.lr for c in resolved] == stored and [c.epoch for c in resolved] == [2, 4]
