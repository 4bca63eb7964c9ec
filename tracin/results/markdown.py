"""What a person reads in words: a score file's tables as Markdown, and the report's findings.

report.md (tracin.results.report_folder), the notebooks in notebooks/ and tracin-report/tracin-validate's
Markdown all take their tables from here, so they read the same everywhere. Nothing here imports
matplotlib.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tracin.config import split_model_name
from tracin.errors import StoreError, TracinError
from tracin.results import sanity
from tracin.results.agreement import AGREEMENT_DTYPE, DEPTH_COMPARISONS, agreement_by_depth, of_layer_groups, verdicts
from tracin.results.checks import check_verdicts
from tracin.results.comparison import cells, title_of
from tracin.results.store import ScoreFile
from tracin.results.validation import LDS_TOO_FEW, ci_text, flipped_text


def role_models(models: Sequence[str]) -> list[str]:
    """Replica 0 of each role among `models` (teacher, student, student_baseline): what a figure shows side by
    side when a file also holds replicas and ensembles."""
    return [name for name in models if not name.endswith(".ensemble") and split_model_name(name)[1] == 0]


def role_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs of replica-0 models (role_models) among `pairs`."""
    return [(a, b) for a, b in pairs if role_models([a, b]) == [a, b]]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Rows (each cell written with str) under a header, as a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_tables(store: ScoreFile, a: str, b: str, names: Optional[Sequence[str]] = None) -> str:
    """Every comparison table of models a and b in the file (or those named), as Markdown with each
    table's own columns: whatever statistics were registered when the file was scored."""
    tables = store.comparison(a, b)
    sections = [
        f"**{a} vs {b}: {title_of(name)}**\n\n" + markdown_table(*cells(name, table))
        for name, table in tables.items()
        if names is None or name in names
    ]
    return "\n\n".join(sections)


def quality_checks_markdown(store: ScoreFile, compact: bool = False) -> str:
    """The file's quality checks as Markdown (files from before them say so); `compact`: replica 0 of each
    role and whole-model variants only (report.md holds every row)."""
    try:
        table = store.read_table("quality")
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
    return (
        "**Quality checks of the proponents** (no retraining; identical class: Hanawa et al. 2021)\n\n"
        + markdown_table(header, rows)
    )


def agreement_markdown(store: ScoreFile, compact: bool = False) -> str:
    """The agreement table (teacher-student against the replicas' own agreement) as Markdown; `compact`: a
    row per comparison, a column per variant and statistic, no layer groups (report.md holds every row)."""
    try:
        table = store.read_table("agreement")
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
        "replicas agree with each other, 0 = chance)\n\n" + markdown_table(header, rows)
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
        + markdown_table(header, rows)
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
        + markdown_table(("variant", "statistic", "layer group", *DEPTH_COMPARISONS), rows)
    )


def _mean_ci(cell) -> str:
    return f"{cell['mean']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]" if np.isfinite(cell["mean"]) else "-"


def validation_markdown(leave_out: np.ndarray, lds: np.ndarray, notes: Sequence[str] = ()) -> str:
    """tracin-validate's tables as Markdown: leave-top-k-out margin changes and the LDS, after `notes` (lines
    said of the run: a model not finished training)."""
    parts = ["# Validation: do predictions move when the credited training data are removed?"]
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
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
                ci_text(r["ci_low"], r["ci_high"]),
                flipped_text(r["flipped"]),
                r["n_rows"],
            )
            for r in leave_out
        ]
        parts += [
            "**Leave-top-k-out** (retrained from the same initial weights without the k examples; change of "
            "the test example's logit margin against a retraining with nothing removed, same seed)",
            markdown_table(header, rows),
        ]
    if len(lds):
        header = ("retrained model", "scores of", "variant", "LDS", "95% CI", "test examples")
        rows = [
            (
                r["model"].decode(),
                r["scores_of"].decode(),
                r["variant"].decode(),
                f"{r['lds']:+.3f}",
                ci_text(r["ci_low"], r["ci_high"], LDS_TOO_FEW),
                r["n_rows"],
            )
            for r in lds
        ]
        parts += [
            f"**Linear datamodeling score** (Spearman over {lds['subsets'][0]} models retrained on random subsets "
            "between each subset's summed scores and the margin it gives, mean over test examples)",
            markdown_table(header, rows),
        ]
    return "\n\n".join(parts) + "\n"


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


def report_verdicts(store: ScoreFile, table: np.ndarray) -> list[str]:
    """The report's findings in words: each registered check's verdicts (tracin.results.checks: models near
    chance and rankings below chance flagged, randomization, the planted shortcut, the known-positive
    control), then own versus other teacher (from the agreement table, where the file has replicas)."""
    try:
        agreement = store.read_table("agreement")
    except StoreError:
        agreement = np.zeros(0, dtype=AGREEMENT_DTYPE)
    return check_verdicts(table, store) + verdicts(agreement)
