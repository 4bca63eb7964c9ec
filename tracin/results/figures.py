"""What a person reads: tables and figures from a tracin-score HDF5 file.

The notebooks in notebooks/ and `tracin-score --plots` (or `scripts/figures.py`) call these functions, so
the figures are the same everywhere. Everything reads the HDF5 file; only the image grids also load the
run's images, through torchvision, by their stored indices.

Mislabel detection (Pruthi et al., 2020, Fig. 1): rank training examples by self-influence, inspect them
in that order, and plot the fraction of flipped labels found against the fraction of data inspected;
baselines are a random order and the training loss at the last checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt  # without a display matplotlib picks Agg; notebooks keep their inline backend
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tracin.config import DataConfig, split_model_name, split_variant
from tracin.errors import StoreError, TracinError
from tracin.files import report_path, write_atomic
from tracin.results import sanity
from tracin.results.agreement import AGREEMENT_DTYPE, DEPTH_COMPARISONS, agreement_by_depth, of_layer_groups, verdicts
from tracin.results.comparison import cells, title_of
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile, find_damage, layout_problems
from tracin.training.data import load_data

INSPECTED = (0.1, 0.2)  # fractions of the training set at which mislabel detection is reported
GROUP_MARK = " only"  # ends the ranking name of a layer group's self-influence ("teacher: self-influence, layer1 only")


def describe_variant(variant: str) -> str:
    """A score variant in words, for titles: "raw TracInCP", "train-normalised TracInCP, layer4 alone"."""
    base, group = split_variant(variant)
    return f"{base} TracInCP" + (f", {group} alone" if group else "")


def first_variant(store: ScoreFile, models: Sequence[str]) -> str:
    """The variant a figure of these models shows: the first of the file's (the one in `scores`)."""
    return store.model(models[0]).variants[0]


def _error_bars(value, low, high) -> np.ndarray:
    """float64 [2, ...] distances from each value down to its CI's low end and up to its high end, for
    errorbar. A value outside its own interval (possible for a percentile CI of a ratio) gets 0 on that side
    instead of a bar pointing the wrong way; the tables print the interval as it is."""
    value, low, high = (np.asarray(x, dtype=np.float64) for x in (value, low, high))
    return np.clip(np.stack([value - low, high - value]), 0.0, None)


def classes_of(store: ScoreFile) -> list[str]:
    """Class names by label: the file's, or the labels as text."""
    return store.classes or [str(i) for i in range(int(store.train_labels.max()) + 1)]


# --- tables (Markdown) -----------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_tables(store: ScoreFile, a: str, b: str, names: Optional[Sequence[str]] = None) -> str:
    """Every comparison table of models a and b in the file (or those named), as Markdown with each
    table's own columns: whatever statistics were registered when the file was scored."""
    tables = store.comparison(a, b)
    sections = [
        f"**{a} vs {b}: {title_of(name)}**\n\n" + _markdown(*cells(name, table))
        for name, table in tables.items()
        if names is None or name in names
    ]
    return "\n\n".join(sections)


# --- overlap curves and score distributions ---------------------------------------------------------------


def curve_ks(k_max: int, points: int = 40) -> np.ndarray:
    """The k of an overlap curve: every k up to `points`, else about `points` log-spaced values up to k_max."""
    if k_max <= points:
        return np.arange(1, k_max + 1)
    return np.unique(np.round(np.geomspace(1, k_max, num=points)).astype(int))


def overlap_curve(top_a: np.ndarray, top_b: np.ndarray, ks: Optional[np.ndarray] = None) -> np.ndarray:
    """float64 [len(ks)]: mean overlap@k of two top tables [rows, K] (default ks: curve_ks(K))."""
    ks = curve_ks(top_a.shape[1]) if ks is None else ks
    return np.array([overlap_at_k(top_a, top_b, int(k)).mean() for k in ks])


def plot_overlap_curves(store: ScoreFile, a: str, b: str) -> Figure:
    """Mean overlap@k against k for both directions and sides, with the chance level k/n."""
    (test_a, train_a), (test_b, train_b) = store.model(a).rankings(), store.model(b).rankings()
    n_train, n_test = store.n_train, store.n_test
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    panels = (
        (axes[0], "each test example's train examples", test_a, test_b, n_train, ("proponents", "opponents")),
        (axes[1], "each train example's test examples", train_a, train_b, n_test, ("top", "bottom")),
    )
    for ax, title, ra, rb, n, sides in panels:
        ks = curve_ks(ra.top_index.shape[1])
        for field, side in zip(("top_index", "bottom_index"), sides):
            ax.plot(ks, overlap_curve(getattr(ra, field), getattr(rb, field), ks), label=side)
        ax.plot(ks, ks / n, "k--", label="chance k/n")
        ax.set(title=title, xlabel="k", ylabel="mean overlap@k", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    figure.suptitle(
        f"Top-k agreement of {a} and {b}: {describe_variant(first_variant(store, [a, b]))} over all checkpoints"
    )
    return figure


def plot_score_histograms(store: ScoreFile, models: Sequence[str], max_values: int = 200_000, seed: int = 0) -> Figure:
    """Histogram of each model's scores (a seeded sample of cells), raw and divided by its std."""
    figure, axes = plt.subplots(1, 2, figsize=(12.5, 4), constrained_layout=True)
    n_train = store.n_train
    rows = np.sort(
        np.random.default_rng(seed).choice(
            n_train, size=min(n_train, max(1, max_values // store.n_test)), replace=False
        )
    )
    shown = role_models(models) or list(models)  # replicas and ensembles would hide each other
    for name in shown:
        values = store.model(name).scores[rows, :].ravel()
        axes[0].hist(values, bins=100, histtype="step", label=name)
        axes[1].hist(values / values.std(), bins=100, histtype="step", label=name)
    axes[0].set(title="scores", xlabel="score", ylabel="count (train-test pairs)", yscale="log")
    axes[1].set(title="scores / each model's std", xlabel="standardised score", yscale="log")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.suptitle(f"Score distributions: {describe_variant(first_variant(store, shown))}; {', '.join(shown)}")
    return figure


# --- image grids -------------------------------------------------------------------------------------------


@dataclass
class Images:
    """uint8 images [n, C, H, W] aligned with the file's train and test rows."""

    train: np.ndarray
    test: np.ndarray


def load_images(store: ScoreFile, data_root: Optional[str] = None) -> Images:
    """The scored examples' images, loaded through torchvision from the run recorded in the file."""
    run = store.run_path
    if not (run / "run.json").is_file() and (store.path.parent / "run.json").is_file():
        run = store.path.parent  # the default place of a score file is its run folder, wherever it moved
    if not (run / "run.json").is_file():
        raise TracinError(f"the run {run} recorded in {store.path} is gone; image grids need its data")
    config = dict(json.loads((run / "run.json").read_text())["data_config"])
    if data_root:
        config["data_root"] = data_root
    data = load_data(DataConfig.from_dict(config))
    pick = lambda split, index: split.images[np.searchsorted(split.index.numpy(), index)].numpy()  # noqa: E731
    return Images(pick(data.train, store.train_index), pick(data.test, store.test_index))


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


def role_models(models: Sequence[str]) -> list[str]:
    """Replica 0 of each role among `models` (teacher, student, student_baseline): what a figure shows side by
    side when a file also holds replicas and ensembles."""
    return [name for name in models if not name.endswith(".ensemble") and split_model_name(name)[1] == 0]


def role_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs of replica-0 models (role_models) among `pairs`."""
    return [(a, b) for a, b in pairs if role_models([a, b]) == [a, b]]


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


# --- mislabel detection ---------------------------------------------------------------------------------------


def detection_curve(order: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction inspected, fraction of flipped labels found) when inspecting in `order`, from (0, 0)."""
    found = np.concatenate([[0], np.cumsum(flipped[order])]) / max(1, flipped.sum())
    return np.arange(len(order) + 1) / len(order), found


def mislabel_curves(
    store: ScoreFile, models: Sequence[str], seed: int = 0, groups: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Detection curves: each model's self-influence (raw TracInCP, sum_c lr_c |g|^2, and train-normalised,
    sum_c lr_c |g|; the cosine variant's is the same for every example; with `groups`, both of each layer
    group alone), its last-checkpoint training loss, and a random order."""
    flipped = store.noisy
    if not flipped.any():
        raise TracinError(f"{store.path}: no training label was flipped (train with --label-noise to study detection)")
    curves = {}
    for name in models:
        scores = store.model(name)
        curves[f"{name}: self-influence"] = detection_curve(np.argsort(-scores.self_influence, kind="stable"), flipped)
        if scores.normalised_self_influence is not None:
            order = np.argsort(-scores.normalised_self_influence, kind="stable")
            curves[f"{name}: self-influence, train-normalised"] = detection_curve(order, flipped)
        for group, values in scores.group_self_influence.items() if groups else ():
            curves[f"{name}: self-influence, {group}{GROUP_MARK}"] = detection_curve(
                np.argsort(-values, kind="stable"), flipped
            )
        for group, values in scores.group_normalised_self_influence.items() if groups else ():
            order = np.argsort(-values, kind="stable")
            curves[f"{name}: self-influence, train-normalised, {group}{GROUP_MARK}"] = detection_curve(order, flipped)
        curves[f"{name}: loss (last checkpoint)"] = detection_curve(
            np.argsort(-scores.last_loss, kind="stable"), flipped
        )
    curves["random order"] = detection_curve(np.random.default_rng(seed).permutation(len(flipped)), flipped)
    return curves


def detection_summary(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    """Per curve: area under it (0.5 for random) and the fraction found at each of INSPECTED."""
    rows = []
    for name, (x, y) in curves.items():
        row = {"ranking": name, "area": float(np.trapezoid(y, x))}
        row.update({f"found@{int(f * 100)}%": float(np.interp(f, x, y)) for f in INSPECTED})
        rows.append(row)
    return rows


DETECTION_DTYPE = np.dtype([("ranking", "S96"), ("area", "f8"), *[(f"found_{int(f * 100)}", "f8") for f in INSPECTED]])


def detection_rows(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """detection_summary as DETECTION_DTYPE rows, for the score file (/detection)."""
    return np.array(
        [
            (r["ranking"], r["area"], *[r[f"found@{int(f * 100)}%"] for f in INSPECTED])
            for r in detection_summary(curves)
        ],
        dtype=DETECTION_DTYPE,
    )


def format_detection(table: np.ndarray, groups: bool = False) -> str:
    """The mislabel-detection table as text, a line per ranking (layer groups' rankings only with
    `groups`; a closing line counts them)."""
    by_group = np.char.endswith(table["ranking"], GROUP_MARK.encode())
    hidden = int(by_group.sum()) if not groups else 0
    table = table if groups else table[~by_group]
    found = [name for name in table.dtype.names if name.startswith("found_")]
    lines = [
        "mislabel detection: flipped labels found by inspecting train examples in each order "
        f"(area under the curve; found in the top {', '.join(n.removeprefix('found_') + '%' for n in found)})"
    ]
    width = max(len(r["ranking"]) for r in table)
    random_area = _random_area(table["ranking"], table["area"])
    for row in table:
        cells = "  ".join(f"{row[name]:6.1%}" for name in found)
        flag = "  below the random order" if row["area"] < random_area else ""
        lines.append(f"  {row['ranking'].decode():<{width}}  AUC {row['area']:.3f}  {cells}{flag}")
    if any(row["area"] < random_area for row in table):
        lines.append("  (a ranking below the random order puts flipped labels last: is the model near chance?)")
    if hidden:
        lines.append(f"  ({hidden} more rows, each layer group's self-influence alone, in the file and report.md)")
    return "\n".join(lines)


def format_detection_by_group(table: np.ndarray, models: Sequence[str] = ("teacher", "student")) -> str:
    """The rows format_detection hides, of these models: each layer group's self-influence alone."""
    prefixes = tuple(f"{model}: ".encode() for model in models)
    chosen = np.array(
        [r.startswith(prefixes) and r.endswith(GROUP_MARK.encode()) for r in table["ranking"]], dtype=bool
    )
    return format_detection(table[chosen], groups=True) if chosen.any() else ""


def detection_table(curves: dict) -> str:
    rows = detection_summary(curves)
    random_area = _random_area([r["ranking"] for r in rows], [r["area"] for r in rows])
    header = ["ranking", "area under curve"] + [f"flipped found in top {int(f * 100)}%" for f in INSPECTED]
    body = [
        [r["ranking"], f"{r['area']:.3f}" + (" (below random)" if r["area"] < random_area else "")]
        + [f"{r[f'found@{int(f * 100)}%']:.1%}" for f in INSPECTED]
        for r in rows
    ]
    note = (
        "\n\n*Below random*: the ranking puts flipped labels last, not first (a model near chance does this)."
        if any(r["area"] < random_area for r in rows)
        else ""
    )
    return "**Mislabel detection**\n\n" + _markdown(header, body) + note


def _random_area(rankings, areas) -> float:
    """The random order's area under the detection curve among these rows (0.5 when it is not there)."""
    named = {(r.decode() if isinstance(r, bytes) else r): a for r, a in zip(rankings, areas)}
    return float(named.get("random order", 0.5))


def plot_mislabel_detection(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """A panel per model (the curves are named "MODEL: ranking"), each with the random order, its legend
    below the axes; at most four panels a row."""
    by_model: dict[str, dict[str, tuple]] = {}
    for name, curve in curves.items():
        model, _, ranking = name.partition(": ")
        if ranking:
            by_model.setdefault(model, {})[ranking] = curve
    models = list(by_model) or ["(no model)"]
    columns = min(4, len(models))
    rows = -(-len(models) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 5.0 * rows), squeeze=False, sharey=True)
    for ax, model in zip(axes.flat, models):
        for ranking, (x, y) in by_model.get(model, {}).items():
            style = "--" if "loss" in ranking else ("-." if "normalised" in ranking else "-")
            ax.plot(x, y, style, label=ranking)
        if "random order" in curves:
            ax.plot(*curves["random order"], "k:", label="random order")
        for fraction in INSPECTED:
            ax.axvline(fraction, color="grey", linewidth=0.5)
        ax.set(xlabel="fraction of training data inspected", xlim=(0, 1), ylim=(0, 1.02), title=model)
    for ax in list(axes.flat)[len(models) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("fraction of flipped labels found")
    handles = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    figure.legend(
        handles.values(), handles.keys(), loc="lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False
    )
    figure.suptitle(title or "Mislabel detection: training data inspected in order of decreasing self-influence")
    figure.tight_layout(rect=(0, 0.35 / (5.0 * rows), 1, 1 - 0.2 / (5.0 * rows)))
    return figure


# --- everything as files ----------------------------------------------------------------------------------------


def choose_test_rows(store: ScoreFile, count: int = 4, examples: Optional[Sequence[int]] = None) -> list[int]:
    """Test rows for the grids: the user's `examples` (test indices of the data set, as the titles show
    them), else by rule, half each: the test examples whose teacher's and student's top-k proponents
    overlap least (where they disagree most), and the most confident errors of the first model."""
    if examples:
        scored = set(store.test_index.tolist())
        missing = [e for e in examples if e not in scored]
        if missing:
            raise TracinError(
                f"--examples {', '.join(map(str, missing))}: not among the file's scored test examples "
                f"(test indices {int(store.test_index.min())}..{int(store.test_index.max())}, {store.n_test} scored)"
            )
        return [int(np.flatnonzero(store.test_index == e)[0]) for e in examples]
    chosen = _least_overlap_rows(store, count - count // 2) + _confident_error_rows(store, count)
    return list(dict.fromkeys(chosen))[:count] or list(range(min(count, store.n_test)))


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


def check_finished(store: ScoreFile) -> None:
    """Figures and tables are made of whole, finished files only: a damaged or partial one is refused,
    saying so."""
    problems = find_damage(store.path)
    if problems:
        raise StoreError(
            f"{store.path} is damaged ({problems[0]}), as a full disk or a crash while writing leaves it: "
            "run the tracin-score command that wrote it again, which salvages what reads"
        )
    if store.status != "complete":
        raise TracinError(
            f"{store.path} is a partial result (tracin-score was interrupted): run the same tracin-score "
            "command again to finish it, then make the report"
        )
    wrong = layout_problems(store)
    if wrong:
        raise StoreError(
            f"{store.path} is not laid out as tracin-score writes it: {wrong[0]}"
            + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
        )


def quality_table(store: ScoreFile, compact: bool = False) -> str:
    """The file's quality checks as Markdown (files from before them say so); `compact`: replica 0 of each
    role and whole-model variants only (report.md holds every row)."""
    try:
        table = store.quality()
    except TracinError:
        return "**Quality checks:** not in this file (scored before they existed; score it again to add them)."
    if compact:
        keep = [
            m.decode() in role_models([m.decode()]) and b"@" not in v for m, v in zip(table["model"], table["variant"])
        ]
        table = table[np.array(keep, dtype=bool)]
    header = (
        "model",
        "variant",
        "same class, top-1",
        "same class, top-k",
        "k",
        "most common top-1 serves",
        "distinct in top-k",
    )
    rows = [
        (
            r["model"].decode(),
            r["variant"].decode(),
            f"{r['identical_class_top1']:.1%}",
            f"{r['identical_class_topk']:.1%}",
            r["k"],
            f"{r['top1_max_share']:.1%} of {r['n_test']}",
            r["distinct_in_topk"],
        )
        for r in table
    ]
    return "**Quality checks of the proponents** (no retraining; identical class: Hanawa et al. 2021)\n\n" + _markdown(
        header, rows
    )


def agreement_markdown(store: ScoreFile, compact: bool = False) -> str:
    """The agreement table (teacher-student against the replicas' own agreement) as Markdown; `compact`: a
    row per comparison, a column per variant and statistic, no layer groups (report.md holds every row)."""
    try:
        table = store.agreement()
    except TracinError:
        return "**Agreement against replicas:** not in this file (scored before it existed; score it again to add it)."
    if len(table) == 0:
        return "**Agreement against replicas:** no teacher-student or student-baseline pair was scored."
    if compact:
        return _agreement_pivot(table[~of_layer_groups(table)])
    header = ("variant", "statistic", "comparison", "mean", "95% CI", "chance", "model pairs")
    rows = [
        (
            r["variant"].decode(),
            r["statistic"].decode(),
            r["comparison"].decode(),
            f"{r['mean']:.3f}",
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            f"{r['chance']:.3f}",
            r["pairs"],
        )
        for r in table[~of_layer_groups(table)]
    ]
    text = (
        "**Agreement of the test examples' proponents against the noise floor** (mean over test examples, "
        "percentile bootstrap CI; ' = another replica: other seed, same data; normalised: 1 = as much as the "
        "replicas agree with each other, 0 = chance)\n\n" + _markdown(header, rows)
    )
    return text + (f"\n\n{depth_markdown(table)}" if of_layer_groups(table).any() else "")


def _agreement_pivot(table: np.ndarray) -> str:
    columns = list(dict.fromkeys(zip(table["variant"], table["statistic"])))
    rows = []
    for comparison in dict.fromkeys(table["comparison"]):
        cells = []
        for variant, statistic in columns:
            match = table[
                (table["comparison"] == comparison) & (table["variant"] == variant) & (table["statistic"] == statistic)
            ]
            cells.append(_mean_ci(match[0]) if len(match) else "-")
        rows.append((comparison.decode(), *cells))
    header = ("comparison", *(f"{v.decode()}: {s.decode()}" for v, s in columns))
    return (
        "**Agreement of the test examples' proponents against the noise floor** (mean over test examples [95% "
        "percentile bootstrap CI]; ' = another replica; normalised: 1 = as much as replicas agree, 0 = chance)\n\n"
        + _markdown(header, rows)
    )


def depth_markdown(table: np.ndarray) -> str:
    """The agreement by depth (tracin.results.agreement.agreement_by_depth) as Markdown: a row per
    variant, statistic and layer group, a column per comparison."""
    rows = [
        (base, statistic, group, *(_mean_ci(cell) for cell in cells))
        for base, statistic, names, block in agreement_by_depth(table)
        for group, cells in zip(names, block)
    ]
    return (
        "**Agreement by depth** (each layer group's scores alone, `VARIANT@GROUP`: at which depth do teacher and "
        "student lean on the same examples, against the replicas?)\n\n"
        + _markdown(("variant", "statistic", "layer group", *DEPTH_COMPARISONS), rows)
    )


def _mean_ci(cell) -> str:
    return f"{cell['mean']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]" if np.isfinite(cell["mean"]) else "-"


AGREEMENT_KINDS = (  # the panels of plot_agreement: each kind of comparison on its own scale
    ("agreement", lambda c: not c.startswith("normalised") and " - " not in c),
    ("normalised (1: as much as replicas agree)", lambda c: c.startswith("normalised")),
    ("difference", lambda c: " - " in c),
)


def plot_agreement(store: ScoreFile) -> Optional[Figure]:
    """Each comparison's mean agreement with its CI: a column of panels per statistic, a row per kind of
    comparison (agreements, normalised agreements, differences: each on its own scale), a colour per
    variant (None when the file has no agreement table)."""
    try:
        table = store.agreement()
    except TracinError:
        return None
    table = table[~of_layer_groups(table)] if len(table) else table  # by depth: plot_agreement_by_depth
    if len(table) == 0:
        return None
    statistics = list(dict.fromkeys(table["statistic"]))
    variants = list(dict.fromkeys(table["variant"]))
    kinds = [
        (title, [c for c in dict.fromkeys(table["comparison"]) if keep(c.decode())]) for title, keep in AGREEMENT_KINDS
    ]
    kinds = [(title, comparisons) for title, comparisons in kinds if comparisons]
    heights = [len(comparisons) + 1 for _, comparisons in kinds]
    figure, axes = plt.subplots(
        len(kinds),
        len(statistics),
        figsize=(6 * len(statistics), 0.42 * sum(heights) + 1.6),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for (title, comparisons), axis_row in zip(kinds, axes):
        for axis, statistic in zip(axis_row, statistics):
            _agreement_panel(axis, table, statistic, variants, comparisons)
            axis.set_title(f"{statistic.decode()}: {title}", fontsize=9)
            axis.axvline(
                0.0 if title != "agreement" else table[table["statistic"] == statistic]["chance"][0],
                color="gray",
                linestyle=":",
                label="chance" if title == "agreement" else "0",
            )
    handles = {label: handle for handle, label in zip(*axes[0][0].get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncols=len(handles), fontsize=8, frameon=False)
    figure.suptitle("Agreement of the proponents, mean over test examples with 95% bootstrap CI", fontsize=10)
    figure.tight_layout(rect=(0, 0.3 / (0.42 * sum(heights) + 1.6), 1, 1))
    return figure


def _agreement_panel(axis, table: np.ndarray, statistic: bytes, variants: list, comparisons: list) -> None:
    for offset, variant in enumerate(variants):
        rows = table[
            (table["statistic"] == statistic)
            & (table["variant"] == variant)
            & np.isin(table["comparison"], comparisons)
        ]
        y = np.array([comparisons.index(c) for c in rows["comparison"]]) + (offset - (len(variants) - 1) / 2) * 0.2
        errors = _error_bars(rows["mean"], rows["ci_low"], rows["ci_high"])
        axis.errorbar(rows["mean"], y, xerr=errors, fmt="o", capsize=3, label=variant.decode())
    axis.set_yticks(range(len(comparisons)), [c.decode() for c in comparisons])
    axis.set_ylim(len(comparisons) - 0.5, -0.5)
    axis.grid(axis="x", alpha=0.3)


def plot_agreement_by_depth(store: ScoreFile) -> Optional[Figure]:
    """Agreement of each layer group's scores alone, group by group from the input to the head: a row of
    panels per variant, a panel per statistic, a line per comparison with its CI (None without
    layer-group variants in the agreement table)."""
    try:
        blocks = agreement_by_depth(store.agreement())
    except TracinError:
        return None
    if not blocks:
        return None
    statistics = list(dict.fromkeys(statistic for _, statistic, _, _ in blocks))
    bases = list(dict.fromkeys(base for base, _, _, _ in blocks))
    # agreements and the normalised agreement (a ratio, 1 = as much as replicas) each on their own scale
    scales = (
        ("agreement", [j for j, c in enumerate(DEPTH_COMPARISONS) if not c.startswith("normalised")]),
        (
            "normalised (1: as much as replicas agree)",
            [j for j, c in enumerate(DEPTH_COMPARISONS) if c.startswith("normalised")],
        ),
    )
    figure, axes = plt.subplots(
        2 * len(bases),
        len(statistics),
        figsize=(5.5 * len(statistics), 5.6 * len(bases) + 0.4),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2] * len(bases)},
    )
    for base, statistic, names, block in blocks:
        for s, (kind, comparisons) in enumerate(scales):
            axis = axes[2 * bases.index(base) + s][statistics.index(statistic)]
            for j in comparisons:
                column = block[:, j]
                errors = _error_bars(column["mean"], column["ci_low"], column["ci_high"])
                axis.errorbar(
                    np.arange(len(names)) + (j - 1.5) * 0.06,
                    column["mean"],
                    yerr=errors,
                    marker="o",
                    capsize=3,
                    label=DEPTH_COMPARISONS[j],
                    color=f"C{j}",
                )
            axis.set_xticks(range(len(names)), names)
            axis.set_title(f"{base}: {statistic}, {kind}", fontsize=9)
            axis.grid(alpha=0.3)
    handles = {
        label: handle for row in axes for axis in row for handle, label in zip(*axis.get_legend_handles_labels())
    }
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncols=len(handles), fontsize=8, frameon=False)
    figure.suptitle(
        "Agreement by depth: each layer group's scores alone, mean over test examples with 95% bootstrap CI",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.35 / (5.6 * len(bases) + 0.4), 1, 1))
    return figure


def validation_markdown(leave_out: np.ndarray, lds: np.ndarray) -> str:
    """tracin-validate's tables as Markdown: leave-top-k-out margin changes and the LDS."""
    parts = ["# Validation: do predictions move when the credited training data are removed?"]
    if len(leave_out):
        header = (
            "model",
            "removed",
            "by",
            "k",
            "mean margin change",
            "95% CI",
            "flipped right -> wrong",
            "test examples x seeds",
        )
        rows = [
            (
                r["model"].decode(),
                r["condition"].decode(),
                r["variant"].decode() or "-",
                r["k"],
                f"{r['mean_change']:+.3f}",
                f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                f"{r['flipped']:.1%}",
                r["n_rows"],
            )
            for r in leave_out
        ]
        parts += [
            "**Leave-top-k-out** (retrained from the same initial weights without the k examples; change of "
            "the test example's logit margin against a retraining with nothing removed, same seed)",
            _markdown(header, rows),
        ]
    if len(lds):
        header = ("retrained model", "scores of", "variant", "LDS", "95% CI", "test examples")
        rows = [
            (
                r["model"].decode(),
                r["scores_of"].decode(),
                r["variant"].decode(),
                f"{r['lds']:+.3f}",
                f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                r["n_rows"],
            )
            for r in lds
        ]
        parts += [
            f"**Linear datamodeling score** (Spearman over {lds['subsets'][0]} models retrained on random subsets "
            "between each subset's summed scores and the margin it gives, mean over test examples)",
            _markdown(header, rows),
        ]
    return "\n\n".join(parts) + "\n"


def validation_summary(store: ScoreFile) -> tuple[str, Optional[Figure]]:
    """(Markdown, figure) of the file's tracin-validate results; a line saying how to make them, and no
    figure, when it has none."""
    try:
        leave_out, lds = store.validation().tables()
    except TracinError as error:
        return f"**Validation:** {error}.", None
    return validation_markdown(leave_out, lds), plot_validation(leave_out, lds)


def plot_validation(leave_out: np.ndarray, lds: np.ndarray) -> Figure:
    """Left: mean margin change per removal with its CI, a marker per model; right: LDS per score source
    and variant with its CI."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * max(len(leave_out), len(lds), 4) + 1.8))
    labels = [
        f"remove {r['condition'].decode()}" + (f" ({r['variant'].decode()})" if r["variant"] else "") for r in leave_out
    ]
    rows_of = list(dict.fromkeys(labels))  # one row per removal, a marker per retrained model
    for offset, model in enumerate(dict.fromkeys(leave_out["model"])):
        mine = leave_out["model"] == model
        rows = leave_out[mine]
        y = np.array([rows_of.index(label) for label, own in zip(labels, mine) if own]) + offset * 0.15
        errors = _error_bars(rows["mean_change"], rows["ci_low"], rows["ci_high"])
        left.errorbar(rows["mean_change"], y, xerr=errors, fmt="o", capsize=3, label=model.decode())
    left.set_yticks(range(len(rows_of)), rows_of)
    left.axvline(0, color="gray", linestyle=":")
    left.set_title("leave-top-k-out: margin change")
    labels = [f"{r['model'].decode()} by {r['scores_of'].decode()}, {r['variant'].decode()}" for r in lds]
    right.errorbar(
        lds["lds"], np.arange(len(lds)), xerr=_error_bars(lds["lds"], lds["ci_low"], lds["ci_high"]), fmt="o", capsize=3
    )
    right.set_yticks(range(len(lds)), labels)
    right.axvline(0, color="gray", linestyle=":")
    right.set_title("linear datamodeling score")
    for axis in (left, right):
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    if len(leave_out):
        left.legend(fontsize=8)
    figure.tight_layout()
    return figure


# --- the quality report (tracin-report) ---


def report_verdicts(store: ScoreFile, table: np.ndarray) -> list[str]:
    """The report's findings in words: models near chance and rankings below chance flagged, randomization,
    the planted shortcut, and own versus other teacher (from the agreement table, where the file has
    replicas)."""
    try:
        agreement = store.agreement()
    except StoreError:
        agreement = np.zeros(0, dtype=AGREEMENT_DTYPE)
    shortcut = store.shortcut_of("teacher")
    within = None if shortcut is None else float(store.train_stamped[store.train_labels == shortcut].mean())
    return (
        sanity.model_verdicts(table)
        + sanity.randomization_verdicts(table)
        + sanity.shortcut_verdicts(table, within, _test_label(store))
        + sanity.inheritance_verdicts(table)
        + verdicts(agreement)
    )


def _test_label(store: ScoreFile) -> str:
    """What the file's test side explains: "label" (the default) or "prediction" (tracin-score --test-label)."""
    return json.loads(store.attributes["settings"]).get("score.test_label", "label")


def quality_report_markdown(table: np.ndarray, groups: bool = False) -> str:
    """The quality report as Markdown: a table per variant, rows = checks, columns = models."""
    if not groups:
        table = table[np.char.find(table["variant"], b"@") < 0]
    models = sanity.report_models(table)
    parts = [
        "# Quality report\n",
        "Each check per model: mean over test examples [95% bootstrap CI] (chance). '(lower)': low is good.\n",
    ]
    for variant in dict.fromkeys(table["variant"]):
        rows = table[table["variant"] == variant]
        parts.append(f"\n## {variant.decode()}\n\n| check | " + " | ".join(models) + " |\n|---|" + "---|" * len(models))
        for check in dict.fromkeys(rows["check"]):
            cells = [rows[(rows["check"] == check) & (rows["model"] == m.encode())] for m in models]
            parts.append(
                f"| {check.decode()} | " + " | ".join(sanity.format_cell(c[0]) if len(c) else "-" for c in cells) + " |"
            )
    return "\n".join(parts) + "\n"


GROUP_CHECKS = (
    "identical class top-10",
    "identical subclass top-10",
    "concentration: top-1 share (lower)",
    "randomization: all layers (lower)",
    "mislabel AUC",
    "shortcut AUC",
    "LDS",
)


def groups_markdown(table: np.ndarray) -> str:
    """The layer groups' variants (VARIANT@GROUP) compactly: a row per model and group variant, a column
    per check of GROUP_CHECKS the table holds (means; the CIs are in quality_report.md)."""
    grouped = table[np.char.find(table["variant"], b"@") >= 0]
    if len(grouped) == 0:
        return ""
    checks = [c for c in GROUP_CHECKS if c.encode() in set(grouped["check"])]
    lines = ["| model | variant | " + " | ".join(checks) + " |", "|---|---|" + "---|" * len(checks)]
    for model in sanity.report_models(grouped):
        mine = grouped[grouped["model"] == model.encode()]
        for variant in dict.fromkeys(mine["variant"]):
            cells = []
            for check in checks:
                match = mine[(mine["variant"] == variant) & (mine["check"] == check.encode())]
                cells.append(f"{match[0]['value']:.3f}" if len(match) else "-")
            lines.append(f"| {model} | {variant.decode()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_quality_report(table: np.ndarray, verdict_lines: Optional[Sequence[str]] = None) -> Figure:
    """One panel per check of the whole-model variants: each model's value with its CI per variant, and
    chance as a dashed line; the verdicts in words below the panels."""
    table = table[(np.char.find(table["variant"], b"@") < 0) & (table["variant"] != sanity.MODEL_ROWS.encode())]
    checks = list(dict.fromkeys(table["check"]))
    models = sanity.report_models(table)
    variants = list(dict.fromkeys(table["variant"]))
    columns = min(4, max(1, len(checks)))
    figure, axes = plt.subplots(
        -(-len(checks) // columns), columns, figsize=(4 * columns, 3 * -(-len(checks) // columns)), squeeze=False
    )
    for ax, check in zip(axes.flat, checks):
        rows = table[table["check"] == check]
        for j, model in enumerate(models):
            for i, variant in enumerate(variants):
                match = rows[(rows["model"] == model.encode()) & (rows["variant"] == variant)]
                if len(match):
                    row = match[0]
                    x = i + (j - (len(models) - 1) / 2) * 0.8 / max(1, len(models))
                    error = (
                        _error_bars(row["value"], row["ci_low"], row["ci_high"]).reshape(2, 1)
                        if np.isfinite(row["ci_low"])
                        else None
                    )
                    ax.errorbar(
                        x, row["value"], yerr=error, fmt="o", color=f"C{j}", capsize=2, label=model if i == 0 else None
                    )
        chance = rows["chance"][np.isfinite(rows["chance"])]
        if len(chance):
            ax.axhline(float(chance.mean()), color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(variants)), [v.decode() for v in variants], fontsize=7, rotation=20, ha="right")
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_title(check.decode(), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(checks) :]:
        ax.set_visible(False)
    figure.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper right", fontsize=8, ncols=len(models))
    figure.suptitle(
        "Quality report: each check per model and score variant, mean with 95% CI (dashed: chance)",
        x=0.02,
        ha="left",
        fontsize=11,
    )
    said = verdict_lines or []
    if said:
        figure.text(
            0.01, 0.005, "\n".join(_wrap(line, 190) for line in said), fontsize=7.5, va="bottom", ha="left", wrap=True
        )
    figure.tight_layout(
        rect=(0, 0.012 * (len(said) + sum(len(line) // 190 for line in said)) + (0.02 if said else 0), 1, 0.95)
    )
    return figure


def _wrap(line: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(line, width, subsequent_indent="    "))


def quality_report_summary(store: ScoreFile) -> tuple[str, Optional[Figure]]:
    """(Markdown with the verdicts, figure) of the file's quality report; a line saying how to make it,
    and no figure, when it has none."""
    try:
        table = store.quality_report()
    except TracinError as error:
        return f"**Quality report:** {error}.", None
    said = report_verdicts(store, table)
    return quality_report_markdown(table) + "".join(f"\n- {line}" for line in said), plot_quality_report(table, said)


def _make_figures(
    store: ScoreFile,
    figures: dict,
    sections: list,
    models: list,
    data_root: Optional[str],
    examples: Optional[Sequence[int]],
) -> None:
    """Every figure of a report into `figures` (by file name), every table into `sections`."""
    figures["agreement.png"], figures["agreement_by_depth.png"] = plot_agreement(store), plot_agreement_by_depth(store)
    quality_text, figures["quality_report.png"] = quality_report_summary(store)
    sections.insert(0, quality_text)
    for a, b in store.comparison_pairs():
        figures[f"overlap_{a}__{b}.png"] = plot_overlap_curves(store, a, b)
        sections.append(comparison_tables(store, a, b))
    figures["score_histograms.png"] = plot_score_histograms(store, models)
    images, shown = load_images(store, data_root), choose_test_rows(store, count=3, examples=examples)
    figures.update(proponent_grids(store, images, [m for m in models if not m.endswith(".ensemble")], shown))
    if store.noisy.any():
        curves = mislabel_curves(store, models, groups=True)
        figures["mislabel_detection.png"] = plot_mislabel_detection(
            {name: curve for name, curve in curves.items() if not name.endswith(GROUP_MARK)}
        )
        sections.append(detection_table(curves))


def write_report(
    path: str | Path,
    out_dir: Optional[str | Path] = None,
    data_root: Optional[str] = None,
    examples: Optional[Sequence[int]] = None,
) -> list[Path]:
    """PNG figures and report.md (the tables) of a finished score file, in out_dir (default: the
    file's folder, under plots/); `examples`: the test indices the proponent grids show (default: by
    rule, choose_test_rows). Returns the files written."""
    with ScoreFile.open_read(Path(path)) as store:
        check_finished(store)
        out = Path(out_dir) if out_dir else report_path(path, "plots")
        out.mkdir(parents=True, exist_ok=True)
        models, written, sections = store.models, [], [quality_table(store), agreement_markdown(store)]
        figures: dict[str, Optional[Figure]] = {}
        try:
            _make_figures(store, figures, sections, models, data_root, examples)
            for name, figure in figures.items():
                if figure is not None:
                    write_atomic(out / name, lambda handle: figure.savefig(handle, format="png", dpi=110))
                    written.append(out / name)
        finally:  # a failure half-way leaves no figure open (a notebook or a long session would pile them up)
            for figure in figures.values():
                if figure is not None:
                    plt.close(figure)
        text = f"# TracIn report: {path}\n\n" + "\n\n".join(sections) + "\n"
        write_atomic(out / "report.md", lambda handle: handle.write(text.encode()))
        written.append(out / "report.md")
    return written
