"""The CSV tables a run writes beside each model's checkpoints: history.csv (a row per epoch,
HISTORY_FIELDS), the confusion matrix of the best saved checkpoint and its per-class accuracy; tracin-train's
and tracin-eval's tables of the whole run use the same writer."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from tracin.files import write_atomic

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")  # what a checkpoint and run.json keep of an epoch
HISTORY_FIELDS = (
    "epoch",
    "step",
    "lr",
    *METRICS,
    "train_hard_loss",
    "train_soft_loss",
    "seconds",
    "train_seconds",
    "eval_seconds",
    "checkpoint",
)


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Tensor[classes, classes] int64 of counts: row = true label, column = prediction."""
    flat = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_rows(matrix: Tensor, classes: Sequence[str]) -> list[dict]:
    """One row per class of a confusion matrix [true, predicted] (counts): its test examples, how many are
    right, accuracy, error, and the class it is most often mistaken for."""
    rows = []
    for c, name in enumerate(classes):
        counts = matrix[c].tolist()
        n, right = sum(counts), counts[c]
        wrong = [(count, other) for other, count in enumerate(counts) if other != c]
        count, other = max(wrong) if wrong else (0, c)
        rows.append(
            {
                "class": name,
                "n": n,
                "correct": right,
                "accuracy": right / n if n else math.nan,
                "error": 1 - right / n if n else math.nan,
                "most_confused_with": classes[other] if count else "",
                "confused": count,
            }
        )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows (dicts with the same keys) as CSV, written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, lambda handle: handle.write(text.getvalue().encode()))


def write_history(history: list[dict], path: Path) -> None:
    """history.csv, one row per epoch (HISTORY_FIELDS), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, lambda handle: handle.write(text.getvalue().encode()))
