"""Mislabel detection (Pruthi et al., 2020, Fig. 1): rank training examples by self-influence, inspect them
in that order, and count the fraction of flipped labels found against the fraction of data inspected;
baselines are a random order and the training loss at the last checkpoint.

The curves, their areas and the found@INSPECTED fractions, as the score file's /detection rows, as text
(tracin-score) and as Markdown (report.md, the notebooks); the figure is figures.plot_mislabel_detection.
The quality report's "mislabel AUC" (tracin.results.sanity.detection_scores) is the same area per flipped
example, with ties in the ranking sharing their mean position (here a stable sort breaks them by row).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tracin.errors import TracinError
from tracin.results.markdown import markdown_table
from tracin.results.store import ScoreFile

INSPECTED = (0.1, 0.2)  # fractions of the training set at which mislabel detection is reported


GROUP_MARK = " only"  # ends the ranking name of a layer group's self-influence ("teacher: self-influence, layer1 only")


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
    """Per curve: area under it (0.5 for random) and the fraction found at each of INSPECTED. The
    trapezoid area of a curve from (0, 0) is the mean over flipped examples of 1 - (position + 0.5) / n,
    sanity.detection_scores's mean when the ranking has no ties (tests/test_report.py checks it)."""
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
    """detection_summary of the curves as Markdown (report.md, the notebooks), rankings below the random
    order marked."""
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
    return "**Mislabel detection**\n\n" + markdown_table(header, body) + note


def _random_area(rankings, areas) -> float:
    """The random order's area under the detection curve among these rows (0.5 when it is not there)."""
    named = {(r.decode() if isinstance(r, bytes) else r): a for r, a in zip(rankings, areas)}
    return float(named.get("random order", 0.5))
