"""The field's sanity checks of attributions, per model and score variant, and the one quality report.

quanda's list (identical class and subclass, model randomization, top-k cardinality, mislabel, shortcut,
LDS), each a value per test example (or per train ranking) averaged with a bootstrap CI:

- identical subclass (Hanawa et al., ICLR 2021): trained on merged classes (tracin-train
  --coarse-labels), the share of a test example's top-k proponents of its *fine* class, on test examples
  whose coarse class merges several; chance = picking at random within the coarse class;
- model randomization (Hanawa et al.): the Spearman correlation, per test example, of the trained model's
  scores with the scores of the same model with re-initialised weights (all layers; and cascading from
  the head down). Low is good: a ranking that survives random weights explains the data, not the model;
- planted shortcut (Koh & Liang 2017): with a stamped corner square on part of one class's training images
  (--shortcut-class), for the stamped test examples of that class, the share of the top-k proponents
  that are stamped (precision@k; chance = the stamped share of the train set) and the AUC of the scores
  ranking the stamped train examples above the others; with whether each model learned the shortcut at
  all (accuracy on stamped and clean test examples, and how often a stamped test example of another class
  is predicted as the shortcut class).

Pure numpy on stored rankings, score columns and labels. tracin.results.checks (one file per check) makes
the report's rows from them; tracin.commands.report computes the inputs and writes the table to the score
file (/quality_report).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import scipy.stats

from tracin.config import GROUP_SEPARATOR, ROLES
from tracin.results import statistics

REPORT_DTYPE = np.dtype(
    [
        ("check", "S48"),
        ("model", "S40"),
        ("variant", "S64"),
        ("value", "f8"),
        ("ci_low", "f8"),
        ("ci_high", "f8"),
        ("chance", "f8"),
        ("n_rows", "i8"),
    ]
)
RANDOMIZATION_DTYPE = np.dtype(
    [
        ("model", "S40"),
        ("variant", "S64"),
        ("randomized", "S64"),
        ("test_row", "i8"),
        ("spearman", "f8"),
    ]
)


class Row(NamedTuple):
    """One row of the quality report (REPORT_DTYPE's fields): a check's value for one model and variant,
    its bootstrap CI, its chance level (NaN: none) and the test rows (or train rankings) it averages."""

    check: str
    model: str
    variant: str
    value: float
    ci_low: float
    ci_high: float
    chance: float
    n_rows: int


INHERITED = "inherited"  # the known-positive control's rows (DataConfig.shortcut_mode "inherit")
SANITY_K = 10  # proponents per test example the shortcut and subclass checks look at
ALL_LAYERS = "all layers"
MODEL_ROWS = "(model)"  # the variant column of checks that belong to the model, not to a score variant


def identical_subclass(
    top_index: np.ndarray,
    train_fine: np.ndarray,
    test_fine: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [rows]: share of each test row's top-k proponents (top_index [n_test, >= k] train
    positions) whose fine label is the row's fine label, float64 [rows]: that share if the k were drawn at
    random within the row's coarse class), over the test rows whose coarse class merges several fine
    classes (train_labels/test_labels: coarse, before label noise: a flipped label merges nothing; NaN
    elsewhere)."""
    n_coarse = int(max(train_labels.max(), test_labels.max())) + 1
    n_fine = int(max(train_fine.max(), test_fine.max())) + 1
    counts = np.bincount(train_labels * n_fine + train_fine, minlength=n_coarse * n_fine).reshape(n_coarse, n_fine)
    merged = ((counts > 0).sum(axis=1) > 1)[test_labels]
    same = (train_fine[top_index[:, :k]] == test_fine[:, None]).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        chance = counts[test_labels, test_fine] / counts.sum(axis=1)[test_labels]
    return np.where(merged, same, np.nan), np.where(merged, chance, np.nan)


def identical_class(top_index: np.ndarray, train_labels: np.ndarray, test_labels: np.ndarray, k: int) -> np.ndarray:
    """float64 [n_test]: share of each test row's top-k proponents with the row's label."""
    return (train_labels[top_index[:, :k]] == test_labels[:, None]).mean(axis=1)


def shortcut_test_rows(test_stamped: np.ndarray, test_labels: np.ndarray, shortcut_class: int) -> np.ndarray:
    """int64: the test rows stamped with the shortcut whose label is the shortcut class (those for which
    the stamped training images are proponents, if the model uses the stamp)."""
    return np.flatnonzero(test_stamped & (test_labels == shortcut_class))


def shortcut_other_rows(
    test_stamped: np.ndarray, test_labels: np.ndarray, shortcut_class: int, predicted: Optional[np.ndarray] = None
) -> np.ndarray:
    """int64: the shortcut check as the field defines it (quanda's ShortcutDetectionMetric): the stamped test
    rows whose true class is *not* the shortcut class (filter_by_class); with `predicted` (int [n_test], a
    model's predictions) only those it takes for the shortcut class (filter_by_prediction). Their proponents
    hold stamped train examples only through the stamp, not through the class."""
    chosen = test_stamped & (test_labels != shortcut_class)
    if predicted is not None:
        chosen &= predicted == shortcut_class
    return np.flatnonzero(chosen)


def average_precision(columns: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """float64 [rows]: per column of `columns` [n_train, rows] (scores, highest first), the area under the
    precision-recall curve of finding the positive train examples (bool [n_train]): the mean over positives
    of the precision among the examples scoring at least as high (ties counted together, as
    sklearn.metrics.average_precision_score does). A random order gives the positives' share."""
    at_least = scipy.stats.rankdata(-columns, method="max", axis=0)  # examples scoring >= each one
    positives_at_least = scipy.stats.rankdata(-columns[positive], method="max", axis=0)
    return (positives_at_least / at_least[positive]).mean(axis=0)


def precision_at_k(top_index: np.ndarray, train_stamped: np.ndarray, k: int) -> np.ndarray:
    """float64 [rows]: share of each row's top-k proponents (top_index [rows, >= k]) that are stamped."""
    return train_stamped[top_index[:, :k]].mean(axis=1)


def ranking_auc(columns: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """float64 [rows]: per column of `columns` [n_train, rows] (scores), the probability that a positive
    train example (bool [n_train]) scores above a negative one, ties counting half (Mann-Whitney U / n+ n-)."""
    ranks = scipy.stats.rankdata(columns, axis=0)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def randomization_spearman(trained: np.ndarray, randomized: np.ndarray) -> np.ndarray:
    """float64 [rows]: Spearman's rho per column of two score matrices [n_train, rows] (NaN where a column
    is constant)."""
    return statistics.correlate_ranks(statistics.row_ranks(trained.T), statistics.row_ranks(randomized.T))


def top1_share(top1: np.ndarray) -> float:
    """Share of test rows whose top-1 proponent (int [rows]) is the most common one."""
    return float(np.bincount(top1).max() / len(top1))


def top1_share_ci(top1: np.ndarray, seed: int = 0, resamples: int = 1000) -> tuple[float, float, float]:
    """(share of test rows whose top-1 proponent (int [rows]) is the most common one, and its Wilson score
    interval). The interval is that of a binomial proportion: the rows that name the most common proponent
    among all rows, that proponent taken as found (it was picked after looking, so for small shares the
    interval is somewhat too narrow). It always holds the share, which a percentile bootstrap of the maximum
    does not: resampling overstates a maximum, so its interval could lie above the share. `seed` and
    `resamples` are not used (kept for callers)."""
    count, rows = int(np.bincount(top1).max()), len(top1)
    interval = scipy.stats.binomtest(count, rows).proportion_ci(statistics.CONFIDENCE, method="wilson")
    return count / rows, float(interval.low), float(interval.high)


def random_top1_share(n_train: int, n_test: int, seed: int = 0, draws: int = 200) -> float:
    """The top-1 share (top1_share_ci) if every test row's top-1 proponent were drawn at random among
    n_train: the mean over `draws` seeded simulations (the chance level of the concentration check)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([np.bincount(rng.integers(0, n_train, n_test)).max() / n_test for _ in range(draws)]))


def detection_scores(ranking_values: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """float64 [n_flipped]: for each mislabelled train example, 1 - (its position + 0.5) / n when the
    train set is inspected from the highest `ranking_values` down (ties share their mean position). The
    mean is the area under the found-vs-inspected curve; 0.5 is a random order."""
    position = scipy.stats.rankdata(-np.asarray(ranking_values, dtype=np.float64)) - 1
    return 1.0 - (position[flipped] + 0.5) / len(ranking_values)


def shared_stamped(top_a: np.ndarray, top_b: np.ndarray, train_stamped: np.ndarray, k: int) -> np.ndarray:
    """float64 [rows]: share of k of the stamped train examples in both rows' top-k proponents (top_a,
    top_b [rows, >= k]): do two models credit the same stamped examples?"""
    shared = [np.intersect1d(a[:k], b[:k]) for a, b in zip(top_a, top_b)]
    return np.array([train_stamped[s].sum() / k for s in shared], dtype=np.float64)


ACCURACY = "accuracy, test (chance: majority class)"
NEAR_CHANCE = 0.25  # a model whose accuracy covers less than this share of the way from chance to 1 is flagged


def accuracy_verdicts(table: np.ndarray) -> list[str]:
    """A model at or near chance accuracy (less than NEAR_CHANCE of the way from the majority class's share
    to 1, or a CI that reaches chance: its gradients explain little), flagged in words."""
    lines = []
    for row in table[table["check"] == ACCURACY.encode()]:
        if row["value"] < row["chance"] + NEAR_CHANCE * (1 - row["chance"]) or row["ci_low"] <= row["chance"]:
            lines.append(
                f"warning: {row['model'].decode()} is near chance: test accuracy {format_cell(row)} against "
                f"{row['chance']:.3f} for the majority class; train it longer before reading its attributions"
            )
    return lines


def mislabel_verdicts(table: np.ndarray) -> list[str]:
    """A ranking that finds flipped labels less often than a random order (its mislabel AUC's CI below 0.5),
    flagged in words."""
    lines = []
    below = table[np.char.startswith(table["check"], b"mislabel AUC") & (table["ci_high"] < 0.5)]
    for row in below:
        lines.append(
            f"warning: {row['model'].decode()} {row['variant'].decode()} {row['check'].decode()} "
            f"{format_cell(row)} is below a random order's (0.5): it ranks flipped labels last, not first"
        )
    return lines


RANDOMIZATION_ALARM = 0.5  # an all-layers Spearman whose CI lies above this: the ranking survives random weights


def randomization_verdicts(table: np.ndarray) -> list[str]:
    """In words: which whole-model variants' rankings survive re-initialising every layer (CI above
    RANDOMIZATION_ALARM), and the largest all-layers correlation otherwise."""
    rows = table[
        (table["check"] == f"randomization: {ALL_LAYERS} (lower)".encode())
        & (np.char.find(table["variant"], GROUP_SEPARATOR.encode()) < 0)
    ]
    if len(rows) == 0:
        return []
    survive = rows[rows["ci_low"] > RANDOMIZATION_ALARM]
    lines = [
        f"model randomization: {r['model'].decode()} {r['variant'].decode()} ranks the train data alike with random "
        f"weights (Spearman {format_cell(r)}): it explains the data, not the model"
        for r in survive
    ]
    if len(survive) < len(rows):
        passing = rows[rows["ci_low"] <= RANDOMIZATION_ALARM]
        worst = passing[np.argmax(passing["value"])]
        which = f"the other {len(passing)}" if len(survive) else f"all {len(passing)}"
        lines.append(
            f"model randomization: {which} model-variant rankings change with random weights "
            f"(all-layers Spearman at most {worst['value']:.3f}, {worst['model'].decode()} {worst['variant'].decode()}; "
            f"alarm above {RANDOMIZATION_ALARM})"
        )
    return lines


def detectable_text(row: np.void) -> str:
    """The smallest difference a row's sample could see: 2.8 standard errors (a two-sided 5% test with 80%
    power), the standard error read off its 95% CI (width / 3.92)."""
    return (
        f"at this sample size a difference of about {statistics.detectable_from_ci(row['ci_low'], row['ci_high']):.3f} "
        "would be seen with 80% power"
    )


def inheritance_verdicts(table: np.ndarray) -> list[str]:
    """The known-positive control in words ("inherit" mode): does the distilled student take stamped images
    of other classes for its teacher's shortcut class more often than the baseline and than students of
    other teachers (behaviour), and does own - other teacher see it on those rows (attribution, each
    whole-model variant at the largest k)? Each with its CI; a difference is said only where the CI
    excludes 0."""

    def row(check: str, model: str = "student", variant: str = MODEL_ROWS) -> Optional[np.void]:
        mine = table[
            (table["check"] == check.encode())
            & (table["model"] == model.encode())
            & (table["variant"] == variant.encode())
        ]
        return mine[0] if len(mine) else None

    def ci(r: np.void, percent: bool = True) -> str:
        f = "{:+.1%}" if percent else "{:+.3f}"
        return f"{f.format(r['value'])} [{f.format(r['ci_low'])}, {f.format(r['ci_high'])}]"

    lines = []
    shares = {
        role: row(f"{INHERITED}: taken for teacher's class, stamped", role)
        for role in ("teacher", "student", "student_baseline")
    }
    control = row(f"{INHERITED}: another teacher's class, stamped")
    if shares["student"] is not None:
        said = ", ".join(
            f"{name} {shares[role]['value']:.1%}"
            for role, name in (
                ("teacher", "the teachers"),
                ("student", "the distilled students"),
                ("student_baseline", "the baselines"),
            )
            if shares[role] is not None
        )
        said += (
            f", distilled students of another teacher (control) {control['value']:.1%}" if control is not None else ""
        )
        parts = []
        for label in ("baseline", "control"):
            difference = row(f"{INHERITED}: stamped, student - {label}")
            if difference is not None:
                shown = (
                    "inherited"
                    if difference["ci_low"] > 0
                    else "not shown (the CI includes 0)"
                    if difference["ci_high"] >= 0
                    else "less than"
                )
                parts.append(f"student - {label} {ci(difference)}: {shown}")
        lines.append(
            f"known-positive control (behaviour): stamped test images of other classes taken for the replica teacher's "
            f"shortcut class: {said}; " + "; ".join(parts)
        )
    whole = table[
        np.char.startswith(table["check"], f"{INHERITED}: own - other teacher@".encode())
        & (np.char.find(table["variant"], GROUP_SEPARATOR.encode()) < 0)
    ]
    if len(whole):
        k = max(int(c.decode().split("@")[1].split(",")[0]) for c in whole["check"])
        rows_said = {
            "stamped": "the stamped test images of other classes than the teacher's shortcut class",
            "predicted": "those of them that the student takes for that class",
        }
        for r in whole[np.char.startswith(whole["check"], f"{INHERITED}: own - other teacher@{k},".encode())]:
            rows = rows_said[r["check"].decode().split(", ", 1)[1]]
            start = f"known-positive control (attribution): {r['variant'].decode()}, own - other teacher overlap@{k} on {rows}"
            if r["n_rows"] == 0 or not np.isfinite(r["ci_low"]):
                lines.append(f"{start}: no such test rows")
                continue
            seen = (
                "it sees the teacher's imprint"
                if r["ci_low"] > 0
                else f"it does not see it (the CI includes 0; {detectable_text(r)})"
                if r["ci_high"] >= 0
                else "the student agrees less with its own teacher"
            )
            lines.append(f"{start} ({r['n_rows']} test rows): {ci(r, percent=False)}: {seen}")
    return lines


def shortcut_verdicts(
    table: np.ndarray, within_class: Optional[float] = None, test_label: str = "prediction"
) -> list[str]:
    """In words: per model, the best whole-model variant's shortcut precision@k against chance and half,
    and whether the model learned the shortcut at all (stamped images of other classes taken for the
    shortcut class more often than clean ones, the two CIs apart). `within_class`: the stamped share of the
    shortcut class's train examples (what proponents of that class alone give). `test_label`: what the score
    file's test side explains ("label" or "prediction", tracin-score --test-label)."""
    lines = []
    within = f", {within_class:.1%} within the class" if within_class is not None else ""
    for model in report_models(table):
        mine = table[
            (table["model"] == model.encode()) & (np.char.find(table["variant"], GROUP_SEPARATOR.encode()) < 0)
        ]
        precision = mine[
            np.char.startswith(mine["check"], b"shortcut precision@") & ~np.char.endswith(mine["check"], b"baseline's")
        ]
        if len(precision) == 0:
            continue
        best = precision[np.argmax(precision["value"])]
        k = best["check"].decode().rsplit("@", 1)[1]
        said = (
            f"planted shortcut: {model}: stamped train examples are {best['value']:.1%} of the top-{k} proponents of "
            f"stamped test examples with {best['variant'].decode()} (best variant; CI [{best['ci_low']:.1%}, "
            f"{best['ci_high']:.1%}], chance {best['chance']:.1%}{within}): {'at least' if best['value'] >= 0.5 else 'less than'} half"
        )
        taken = {
            r["check"].decode().rsplit(", ", 1)[1]: r
            for r in mine
            if r["check"].decode().startswith("other class taken for shortcut class")
        }
        if {"stamped", "clean"} <= set(taken):
            stamped, clean = taken["stamped"], taken["clean"]
            learned = stamped["ci_low"] > clean["ci_high"]
            said += (
                f"; it takes {stamped['value']:.1%} of stamped test images of other classes for the shortcut class, "
                f"{clean['value']:.1%} of clean ones: "
                + (
                    "it learned the shortcut"
                    if learned
                    else "no sign that it learned the shortcut (the CIs overlap), so there is little for attribution to find"
                )
            )
        lines.append(said)
        lines += _other_class_verdict(model, mine, test_label)
    return lines


def _other_class_verdict(model: str, mine: np.ndarray, test_label: str = "prediction") -> list[str]:
    """The shortcut check as the field defines it (shortcut_other_rows), in words, for the first
    whole-model variant of the table (the file's default: no variant is picked after looking)."""
    first = mine[np.char.startswith(mine["check"], b"other-class shortcut precision@")]
    if len(first) == 0:
        return []
    variant = first[0]["variant"]
    rows, parts = mine[mine["variant"] == variant], []
    for label, what in (
        ("other-class", "stamped test images of other classes"),
        ("predicted-as-shortcut", "of them taken for the shortcut class"),
    ):
        precision = rows[np.char.startswith(rows["check"], f"{label} shortcut precision@".encode())]
        auprc = rows[rows["check"] == f"{label} shortcut AUPRC".encode()]
        if len(precision) == 0 or len(auprc) == 0:
            continue
        p, a = precision[0], auprc[0]
        k = p["check"].decode().rsplit("@", 1)[1]
        parts.append(
            f"over the {p['n_rows']} {what}, stamped train examples are {p['value']:.1%} of the top-{k} "
            f"[{p['ci_low']:.1%}, {p['ci_high']:.1%}] and their AUPRC is {a['value']:.3f} "
            f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] (chance {a['chance']:.3f} for both)"
        )
    caveat = (
        ""
        if test_label == "prediction"
        else " (explained with respect to their true labels, against which stamped train images of the shortcut class "
        "are opponents; the field explains the prediction: tracin-score --test-label prediction)"
    )
    return [
        f"planted shortcut as the field checks it (quanda's ShortcutDetectionMetric): {model} ({variant.decode()}): "
        + "; ".join(parts)
        + caveat
    ]


def cascade(groups: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The model-randomization steps for layer groups in model order: from the head down, each step
    re-initialising one more group, (label, groups re-initialised); the last step is every layer."""
    steps = []
    for i in range(1, len(groups) + 1):
        chosen = tuple(groups[-i:])
        steps.append((ALL_LAYERS if i == len(groups) else f"{groups[-i]} and above", chosen))
    return steps


def summary_row(check: str, model: str, variant: str, per_row: np.ndarray, chance: float, seed: int) -> Row:
    """One row: the mean of the defined (non-NaN) values of `per_row` (float [n_rows]) with its bootstrap CI."""
    defined = np.isfinite(per_row)
    value = float(per_row[defined].mean()) if defined.any() else np.nan
    low, high = statistics.bootstrap_ci([per_row], seed=seed)
    return Row(check, model, variant, value, low, high, chance, int(defined.sum()))


def format_quality_report(table: np.ndarray, groups: bool = False) -> str:
    """The quality report as text: a block per variant, a line per check, a column per role (its replica
    0 model): value [95% CI] (chance). Layer-group variants only with `groups`."""
    if len(table) == 0:
        return ""
    if not groups:
        table = table[np.char.find(table["variant"], GROUP_SEPARATOR.encode()) < 0]
    models = report_models(table)
    lines = [
        f"quality report: each check per model, mean over test examples [{statistics.CONFIDENCE:.0%} bootstrap CI] "
        "(chance); '(lower)': low is good"
    ]
    for variant in dict.fromkeys(table["variant"]):
        rows = table[table["variant"] == variant]
        lines.append(f"  {variant.decode():<44}" + "".join(f"{m:>34}" for m in models))
        for check in dict.fromkeys(rows["check"]):
            cells = []
            for model in models:
                match = rows[(rows["check"] == check) & (rows["model"] == model.encode())]
                cells.append(f"{format_cell(match[0]) if len(match) else '-':>34}")
            lines.append(f"    {check.decode():<42}" + "".join(cells))
    return "\n".join(lines)


def report_models(table: np.ndarray) -> list[str]:
    """The models of a report table, roles first (teacher, student, student_baseline), then replicas."""
    names = [m.decode() for m in dict.fromkeys(table["model"])]
    return sorted(
        names, key=lambda name: (ROLES.index(name.split(".")[0]) if name.split(".")[0] in ROLES else len(ROLES), name)
    )


def format_cell(row) -> str:
    """value [low, high] (chance) of one REPORT_DTYPE row."""
    interval = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if np.isfinite(row["ci_low"]) else ""
    chance = f" ({row['chance']:.3g})" if np.isfinite(row["chance"]) else ""
    return f"{row['value']:.3f}{interval}{chance}"
