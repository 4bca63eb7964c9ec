"""Image grids of a score file: each chosen test example with its proponents and opponents, and the
training examples of highest self-influence. Only these figures load the run's images (through
torchvision, by the file's stored indices); everything else reads the HDF5 file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib.pyplot as plt  # without a display matplotlib picks Agg; notebooks keep their inline backend
import numpy as np
from matplotlib.figure import Figure

from tracin.config import split_model_name
from tracin.errors import TracinError
from tracin.results.figures import describe_variant, first_variant
from tracin.results.markdown import role_models
from tracin.results.runs import checked_data, open_trained_run, positions_in, scored_run_folder
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile
from tracin.training.data import RunData


@dataclass
class Images:
    """uint8 images [n, C, H, W] aligned with the file's train and test rows."""

    train: np.ndarray
    test: np.ndarray


def load_images(store: ScoreFile, data_root: Optional[str] = None) -> Images:
    """The scored examples' images, loaded through torchvision from the run recorded in the file."""
    run = scored_run_folder(store)
    data = checked_data(open_trained_run(str(run), data_root or None))  # the images the run trained on
    train = positions_in(store.train_index, data.train.index.numpy())
    test = positions_in(store.test_index, data.test.index.numpy())
    check_labels(store, data, train, test)
    return Images(data.train.images[train].numpy(), data.test.images[test].numpy())


def check_labels(store: ScoreFile, data: RunData, train: np.ndarray, test: np.ndarray) -> None:
    """A TracinError unless the file names its classes and labels its rows as the run's data do (rows
    `train`, `test` of the data's splits): a page or grid never shows an image under another label (round
    8: H5, a classes attribute reversed by hand)."""
    if store.classes and list(store.classes) != list(data.train.classes):
        raise TracinError(
            f"{store.path} names the classes {', '.join(store.classes)}; the run's data name them "
            f"{', '.join(data.train.classes)}: its classes attribute was edited, or it is not this run's file"
        )
    for side, rows, split in (("train", train, data.train), ("test", test, data.test)):
        if not np.array_equal(getattr(store, f"{side}_labels")[()], split.labels.numpy()[rows]):
            raise TracinError(
                f"{store.path}'s {side}_labels differ from the run's data: edited, or not this run's file"
            )


def classes_of(store: ScoreFile) -> list[str]:
    """Class names by label: the file's, or the labels as text."""
    return store.classes or [str(i) for i in range(int(store.train_labels.max()) + 1)]


def _show(ax, image: np.ndarray, title: str, color: str = "black") -> None:
    picture = image.transpose(1, 2, 0)
    ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray")
    ax.set_title(title, fontsize=7, color=color)
    ax.axis("off")


def _train_title(store: ScoreFile, row: int, score: float, rank: str, classes: list[str]) -> tuple[str, str]:
    """A train image's title: its rank and train index, label (a flipped one in red, with the true class),
    and score."""
    label, clean = int(store.train_labels[row]), int(store.train_clean_labels[row])
    head = f"{rank} train #{int(store.train_index[row])}"
    if label != clean:
        return f"{head}\n{classes[label]} (flipped; is {classes[clean]})\n{score:+.3g}", "red"
    return f"{head}\n{classes[label]}\n{score:+.3g}", "black"


def _test_title(store: ScoreFile, name: str, row: int, classes: list[str]) -> tuple[str, str]:
    """A test image's title: its index and label, and the model's prediction with its probability (red
    when wrong; '?' where the file holds no predictions)."""
    label = int(store.test_labels[row])
    head = f"{name}\ntest #{int(store.test_index[row])}: {classes[label]}"
    predictions = store.model(name).predictions
    if predictions is None:
        return f"{head}\npredicts ?", "navy"
    predicted, confidence = int(predictions[0][row]), float(predictions[1][row])
    return f"{head}\npredicts {classes[predicted]} ({confidence:.0%})", "navy" if predicted == label else "red"


def plot_proponent_grid(
    store: ScoreFile, images: Images, models: Sequence[str], test_rows: Sequence[int], k: int = 5
) -> Figure:
    """For each chosen test example (a block of rows, one per model): the image with the model's
    prediction, then its k strongest proponents and k strongest opponents, each with its rank, train index,
    label (flipped training labels in red) and score."""
    classes = classes_of(store)
    rankings = {name: store.model(name).rankings()[0] for name in models}
    k = min(k, next(iter(rankings.values())).top_index.shape[1])
    columns, rows = 1 + 2 * k, len(test_rows) * len(models)
    figure, axes = plt.subplots(rows, columns, figsize=(1.55 * columns, 2.0 * rows + 0.3), squeeze=False)
    for i, test_row in enumerate(test_rows):
        for j, name in enumerate(models):
            row = axes[i * len(models) + j]
            _show(row[0], images.test[test_row], *_test_title(store, name, test_row, classes))
            ranking = rankings[name]
            for c in range(k):
                for offset, index, score, sign in (
                    (1, ranking.top_index, ranking.top_score, "+"),
                    (1 + k, ranking.bottom_index, ranking.bottom_score, "-"),
                ):
                    train_row = int(index[test_row, c])
                    title, color = _train_title(store, train_row, float(score[test_row, c]), f"{sign}{c + 1}", classes)
                    _show(row[offset + c], images.train[train_row], title, color)
    figure.suptitle(
        f"Proponents (+1..+{k}) and opponents (-1..-{k}) of {len(test_rows)} test examples: "
        f"{describe_variant(first_variant(store, models))}; {', '.join(models)}",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.0 * rows + 0.3)), h_pad=0.4)
    return figure


def proponent_grids(
    store: ScoreFile, images: Images, models: Sequence[str], test_rows: Sequence[int], k: int = 5
) -> dict[str, Figure]:
    """{file name: grid}: proponents.png, the models side by side (replica 0 of each role where there are
    replicas), and with replicas also one proponents_MODEL.png per model (a grid of every replica would be
    too tall to read)."""
    grids = {"proponents.png": plot_proponent_grid(store, images, role_models(models) or list(models), test_rows, k)}
    if any(split_model_name(name)[1] > 0 for name in models if not name.endswith(".ensemble")):
        grids.update(
            {f"proponents_{name}.png": plot_proponent_grid(store, images, [name], test_rows, k) for name in models}
        )
    return grids


def plot_suspects(store: ScoreFile, images: Images, name: str, count: int = 16) -> Figure:
    """The `count` training examples of highest self-influence of one model (the first variant's, raw's
    where it has none), in order, each with its rank, train index and label (flipped ones in red)."""
    scores = store.model(name)
    values = scores.variant_self_influence(scores.variants[0])
    values, which = (values, scores.variants[0]) if values is not None else (scores.self_influence, "raw")
    order = np.argsort(-values, kind="stable")[:count]
    classes, columns = classes_of(store), 8
    rows = -(-len(order) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.55 * columns, 1.9 * rows + 0.5), squeeze=False)
    for ax, (rank, row) in zip(axes.flat, enumerate(order, 1)):
        title, color = _train_title(store, int(row), float(values[row]), f"{rank}.", classes)
        _show(ax, images.train[row], title, color)
    for ax in list(axes.flat)[len(order) :]:
        ax.set_visible(False)
    found = int(store.noisy[order].sum())
    figure.suptitle(
        f"{name}: highest self-influence ({describe_variant(which)}); {found} of {len(order)} flipped", fontsize=10
    )
    figure.tight_layout()
    return figure


def choose_test_rows(store: ScoreFile, count: int = 4, examples: Optional[Sequence[int]] = None) -> list[int]:
    """Test rows for the grids: the user's `examples` (test indices of the data set, as the titles show
    them), else by rule, half each: the test examples whose teacher's and student's top-k proponents
    overlap least (where they disagree most), and the most confident errors of the first model."""
    if examples:
        return example_rows(examples, store.test_index)
    chosen = _least_overlap_rows(store, count - count // 2) + _confident_error_rows(store, count)
    return list(dict.fromkeys(chosen))[:count] or list(range(min(count, store.n_test)))


def example_rows(examples: Sequence[int], test_index: np.ndarray) -> list[int]:
    """The rows of --examples (test indices of the data set) among the scored test examples `test_index`
    (int [n_test]); a TracinError names those not scored. tracin-score checks them before it scores."""
    scored = set(test_index.tolist())
    missing = [e for e in examples if e not in scored]
    if missing:
        raise TracinError(
            f"--examples {', '.join(map(str, missing))}: not among the scored test examples "
            f"(test indices {int(test_index.min())}..{int(test_index.max())}, {len(test_index)} scored)"
        )
    return [int(np.flatnonzero(test_index == e)[0]) for e in examples]


def _least_overlap_rows(store: ScoreFile, count: int) -> list[int]:
    """The test rows where the teacher's and the student's proponents overlap least (none without both)."""
    if not {"teacher", "student"} <= set(store.models):
        return []
    top_t, top_s = store.model("teacher").rankings()[0].top_index, store.model("student").rankings()[0].top_index
    overlap = overlap_at_k(top_t, top_s, top_t.shape[1])
    return [int(r) for r in np.argsort(overlap, kind="stable")[:count]]


def _confident_error_rows(store: ScoreFile, count: int) -> list[int]:
    """The test rows the first model gets wrong with the highest probability (none without predictions)."""
    predictions = store.model(store.models[0]).predictions
    if predictions is None:
        return []
    predicted, confidence = predictions
    wrong = np.flatnonzero(predicted != store.test_labels)
    return [int(r) for r in wrong[np.argsort(-confidence[wrong], kind="stable")][:count]]
