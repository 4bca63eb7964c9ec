"""Figures written next to the checkpoints, drawn with matplotlib's Agg canvas (no display, no pyplot
state shared between calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from tracin.files import write_atomic


def _save(figure: Figure, path: Path) -> None:
    """The figure as PNG, written atomically (a killed run leaves the previous figure or none)."""
    FigureCanvasAgg(figure)
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight"))


def plot_history(history: Sequence[dict], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train and test, from rows with keys epoch, train_loss, test_loss,
    train_acc, test_acc (accuracies as fractions) and checkpoint (non-empty: a saved epoch, marked)."""
    figure = Figure(figsize=(9, 3.5))
    loss_axes, acc_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    saved = [row for row in history if row.get("checkpoint")]
    loss_label = "loss, log scale (train: objective, test: CE)"
    panels = ((loss_axes, "loss", loss_label), (acc_axes, "acc", "accuracy"))
    for axes, metric, label in panels:
        for split in ("train", "test"):
            axes.plot(epochs, [row[f"{split}_{metric}"] for row in history], marker=".", label=split)
        axes.plot([r["epoch"] for r in saved], [r[f"test_{metric}"] for r in saved], "k|", ms=12, label="saved")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    loss_axes.set_yscale("log")  # a first epoch's loss can be 100 times the last's
    loss_axes.legend()
    figure.suptitle(title)
    _save(figure, path)


def plot_confusion(matrix: Tensor, classes: Sequence[str], path: Path, title: str) -> None:
    """Confusion matrix Tensor[classes, classes] of counts: rows true labels, columns predictions."""
    counts = matrix.cpu().numpy()
    figure = Figure(figsize=(6, 5.5))
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(ticks, classes, fontsize=8)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), count in _cells(counts):
        axes.text(
            col, row, str(count), ha="center", va="center", fontsize=7, color="white" if count > threshold else "black"
        )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true label")
    axes.set_title(title)
    _save(figure, path)


def plot_per_class(accuracy: dict[str, dict[str, float]], classes: Sequence[str], path: Path, title: str) -> None:
    """Grouped bars: each class's test accuracy (fraction) for each model (accuracy: model -> class -> value)."""
    figure = Figure(figsize=(max(6, 0.9 * len(classes) + 2), 3.8))
    axes = figure.subplots()
    width = 0.8 / max(1, len(accuracy))
    for i, (model, values) in enumerate(accuracy.items()):
        axes.bar(
            [c + i * width for c in range(len(classes))],
            [values.get(name, 0.0) for name in classes],
            width,
            label=model,
        )
    axes.set_xticks([c + 0.4 - width / 2 for c in range(len(classes))], classes, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside the bars
    axes.set_title(title)
    _save(figure, path)


def plot_overlaid_history(histories: dict[str, Sequence[dict]], path: Path, title: str) -> None:
    """Test accuracy and test loss per epoch of every model (histories: model -> history.csv rows), overlaid."""
    figure = Figure(figsize=(9, 3.5))
    acc_axes, loss_axes = figure.subplots(1, 2)
    for model, rows in histories.items():
        epochs = [int(row["epoch"]) for row in rows]
        acc_axes.plot(epochs, [float(row["test_acc"]) for row in rows], marker=".", label=model)
        loss_axes.plot(epochs, [float(row["test_loss"]) for row in rows], marker=".", label=model)
    loss_axes.set_yscale("log")  # a first epoch's loss can be 100 times the last's
    for axes, label in ((acc_axes, "test accuracy"), (loss_axes, "test loss (cross-entropy, log scale)")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    acc_axes.legend(fontsize=7)
    figure.suptitle(title)
    _save(figure, path)


def _cells(counts):
    rows, cols = counts.shape
    return (((r, c), int(counts[r, c])) for r in range(rows) for c in range(cols))
