"""What a person sees: the figures of a tracin-score HDF5 file, drawn with matplotlib.

The notebooks in notebooks/ and `tracin-score --plots` (or `scripts/figures.py`, through
tracin.results.report_folder) call these functions, so the figures are the same everywhere. Everything here
reads the HDF5 file; the image grids, which also load the run's images, are tracin.results.grids, and the
tables in Markdown tracin.results.markdown.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt  # without a display matplotlib picks Agg; notebooks keep their inline backend
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tracin.config import split_variant
from tracin.errors import TracinError
from tracin.results import sanity
from tracin.results.agreement import DEPTH_COMPARISONS, agreement_by_depth, of_layer_groups
from tracin.results.detection import INSPECTED
from tracin.results.markdown import role_models
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile


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
        table = store.read_table("agreement")
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
        blocks = agreement_by_depth(store.read_table("agreement"))
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
