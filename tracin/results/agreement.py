"""Teacher-student agreement against the noise floor of replicas, with bootstrap confidence intervals.

A teacher-student overlap means little alone: two trainings of the *same* model (other seed, same data)
agree only so much. With replicas (tracin-train --replicas), every agreement stands beside

- teacher-teacher' and student-student' (and baseline-baseline'): the replicas' own agreement;
- the normalised agreement, teacher-student relative to those (statistics.normalised_agreement: 1 = as
  much as replicas of one model agree, 0 = chance);
- teacher-student, ensembles: the mean scores of the teacher's replicas against the students' (TRAK-style
  ensembling averages the seed noise out);
- teacher'-student: the student against a teacher it did not learn from (replica r's student against the
  other replicas' teachers), and own - other teacher, the difference: does the student lean on *its*
  teacher's data more than on an unrelated teacher's? With its CI and a permutation test over the
  replica pairings (every assignment of students to teachers; with R replicas p cannot go below 1/R!);
- student-baseline': the student against a baseline student of another replica (other initialisation
  and data order), and shared - other init, the difference: how much of student-baseline agreement a
  shared initialisation and data order alone make.

Per test example (row): overlap@k of the two models' top-k proponents (from the stored rankings) and the
Spearman correlation of the two score columns (on the sampled test examples of CompareOptions). Each
comparison of several model pairs (e.g. teacher-student of every replica) averages the pairs per row;
the CI is the percentile bootstrap over test examples (statistics.bootstrap_ci), paired across pairs.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from tracin.config import GROUP_SEPARATOR, ensemble_name, replicas_by_role
from tracin.results import statistics
from tracin.results.comparison import CompareOptions
from tracin.results.store import ScoreFile

AGREEMENT_DTYPE = np.dtype(
    [
        ("variant", "S64"),
        ("statistic", "S16"),
        ("comparison", "S40"),
        ("mean", "f8"),
        ("ci_low", "f8"),
        ("ci_high", "f8"),
        ("chance", "f8"),
        ("pairs", "i8"),
        ("n_rows", "i8"),
        ("p_value", "f8"),
        ("detectable", "f8"),
    ]
)  # detectable: own - other teacher only, the difference the pairing test sees with 80% power (simulated)
OWN_VS_OTHER, SHARED_VS_OTHER_INIT = "own - other teacher", "shared - other init"
Pair = tuple[str, str]


def select_agreement_pairs(replicas: dict[str, dict[int, str]], models: Sequence[str] = ()) -> dict[str, list[Pair]]:
    """Each comparison of the table and the model pairs it averages, matched by replica number (the
    student of replica r with the teacher of replica r; teacher' = the teacher of another replica), and
    the replica ensembles' among `models`. A comparison without pairs is left out."""
    t, s, b = (replicas.get(role, {}) for role in ("teacher", "student", "student_baseline"))
    within = {
        f"{role}-{role}'": list(itertools.combinations(names.values(), 2))
        for role, names in (("teacher", t), ("student", s), ("baseline", b))
    }
    pairs = {
        "teacher-student": [(t[r], s[r]) for r in t if r in s],
        "teacher'-student": [(t[i], s[j]) for i in t for j in s if i != j],
        "student-baseline": [(s[r], b[r]) for r in s if r in b],
        "student-baseline'": [(s[i], b[j]) for i in s for j in b if i != j],
        **within,
    }
    for name, roles in (
        ("teacher-student, ensembles", ("teacher", "student")),
        ("student-baseline, ensembles", ("student", "student_baseline")),
    ):
        pair = (ensemble_name(roles[0]), ensemble_name(roles[1]))
        pairs[name] = [pair] if set(pair) <= set(models) else []
    return {name: found for name, found in pairs.items() if found}


@dataclass
class RowValues:
    """Per-test-example agreement of model pairs for one variant and statistic, computed once per pair.
    Overlap uses every test example; Spearman the sampled `columns` (as the rank-correlation table)."""

    store: ScoreFile
    variant: str
    statistic: str  # "overlap@K" or "spearman"
    columns: np.ndarray  # int [rows]: the test examples Spearman uses
    cache: dict[Pair, np.ndarray] = field(default_factory=dict)
    ranks: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # model -> statistics.row_ranks

    def of(self, pair: Pair) -> np.ndarray:
        """float64 [rows]: the statistic of one model pair per test example."""
        if pair not in self.cache:
            self.cache[pair] = self._compute(*pair)
        return self.cache[pair]

    def mean_of(self, pairs: list[Pair]) -> np.ndarray:
        """float64 [rows]: the pairs' values averaged per test example."""
        return np.mean([self.of(pair) for pair in pairs], axis=0)

    def _compute(self, name_a: str, name_b: str) -> np.ndarray:
        if self.statistic == "spearman":
            return statistics.correlate_ranks(self._ranks(name_a), self._ranks(name_b))
        a, b = self.store.model(name_a), self.store.model(name_b)
        k = int(self.statistic.removeprefix("overlap@"))
        return statistics.overlap_at_k(
            a.variant_rankings(self.variant)[0].top_index, b.variant_rankings(self.variant)[0].top_index, k
        )

    def _ranks(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The model's ranks of the train examples for each sampled test example, ranked once."""
        if name not in self.ranks:
            self.ranks[name] = statistics.row_ranks(
                self.store.model(name).matrix(variant=self.variant)[:, self.columns].T
            )
        return self.ranks[name]


def _row(
    variant: str,
    statistic: str,
    comparison: str,
    samples: list[np.ndarray],
    function: Callable,
    chance: float,
    pairs: int,
    seed: int,
    p_value: float = np.nan,
    detectable: float = np.nan,
) -> tuple:
    """One AGREEMENT_DTYPE row: function(*samples) over the rows where every sample is defined, its CI."""
    defined = ~np.any([np.isnan(x) for x in samples], axis=0)
    value = float(function(*[x[defined] for x in samples], axis=-1)) if defined.any() else np.nan
    low, high = statistics.bootstrap_ci(samples, function, seed)
    return (variant, statistic, comparison, value, low, high, chance, pairs, int(defined.sum()), p_value, detectable)


MIN_PAIRING_REPLICAS = 4  # the fewest replicas whose pairings can give p < 0.05 (1/4! = 0.042; 1/3! = 0.17)


def pairing_p_text(p_value: float, replicas: int) -> str:
    """How a pairing p-value is printed: the value where R replicas' pairings can reach p < 0.05, else what
    the test would need (with R replicas p cannot go below 1/R!, so printing it could only mislead)."""
    if not np.isfinite(p_value):
        return ""
    if replicas < MIN_PAIRING_REPLICAS:
        return (
            f"no permutation test: {replicas} replicas allow p >= {1 / math.factorial(replicas):.2f}; "
            f"it needs >= {MIN_PAIRING_REPLICAS} replicas"
        )
    return f"permutation p = {p_value:.3f} over the {math.factorial(replicas)} pairings of {replicas} replicas"


def pairing_p_value(agreement: np.ndarray) -> float:
    """The permutation test over replica pairings: agreement [R, R] of teacher i with student j (means
    over test examples); the statistic is mean(diagonal) - mean(off-diagonal), own teacher against the
    others. p = the share of the R! assignments of students to teachers whose statistic is at least the
    observed one (the observed assignment included): with R replicas p >= 1/R!."""
    size = len(agreement)
    if size < 2 or not np.isfinite(agreement).all():  # one replica (no other teacher), or an undefined pairing
        return np.nan
    off = ~np.eye(size, dtype=bool)

    def statistic(matrix: np.ndarray) -> float:
        return float(np.mean(np.diag(matrix)) - np.mean(matrix[off]))

    observed = statistic(agreement)
    permuted = [statistic(agreement[:, list(order)]) for order in itertools.permutations(range(size))]
    return float(np.mean(np.array(permuted) >= observed - 1e-12))


def pairing_noise(agreement: np.ndarray) -> float:
    """The spread of the replica pairings that no teacher or student explains: agreement [R, R] (teacher i,
    student j) fitted on its off-diagonal cells (where no own teacher can add anything) as a_i + b_j; the
    residuals' standard deviation (degrees of freedom counted). A teacher or student that agrees more with
    everyone shifts a whole row or column, which the pairing test ignores, so only this part can mislead it."""
    size = len(agreement)
    if size < 2:  # one replica: no off-diagonal cell (round 36, C065: numpy's warnings on stderr)
        return np.nan
    cells = [(i, j) for i in range(size) for j in range(size) if i != j]
    design = np.zeros((len(cells), 2 * size))
    for n, (i, j) in enumerate(cells):
        design[n, i], design[n, size + j] = 1.0, 1.0
    values = np.array([agreement[i, j] for i, j in cells])
    fitted = design @ np.linalg.lstsq(design, values, rcond=None)[0]
    dof = len(cells) - np.linalg.matrix_rank(design)
    return float(np.sqrt(np.sum((values - fitted) ** 2) / dof)) if dof > 0 else np.nan


def pairing_power(
    effect: float, noise: float, replicas: int, simulations: int = 2000, seed: int = 0, level: float = 0.05
) -> float:
    """The share of simulated replica sets in which the pairing test (pairing_p_value) gives p < level when
    every student agrees with its own teacher `effect` more than with the others: agreement = effect * I +
    noise * N(0, 1) per cell (row and column effects are left out: they move every assignment alike).
    Exact over the R! assignments; with R = 4 the test can only say p = 1/24, so the power under no effect
    is 1/24."""
    orders = np.array(list(itertools.permutations(range(replicas))))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, simulations, 256):
        cells = effect * np.eye(replicas) + noise * rng.standard_normal(
            (min(256, simulations - start), replicas, replicas)
        )
        diagonals = cells[:, np.arange(replicas), orders].sum(-1)  # [simulations, R!]: each assignment's own sum
        p = np.mean(diagonals >= diagonals[:, :1] - 1e-12, axis=1)  # orders[0] is the identity
        hits += int(np.sum(p < level))
    return hits / simulations


def detectable_by_pairings(
    noise: float, replicas: int, power: float = 0.8, simulations: int = 2000, seed: int = 0
) -> float:
    """The smallest own - other teacher difference the pairing test sees with `power` at R replicas and this
    pairing noise (pairing_noise). It is proportional to the noise (the simulated draws scale with it), so
    the factor is simulated once per R. NaN where R! assignments cannot reach p < 0.05, or above
    MAX_SIMULATED_REPLICAS (R! assignments per draw)."""
    if not np.isfinite(noise) or not MIN_PAIRING_REPLICAS <= replicas <= MAX_SIMULATED_REPLICAS:
        return np.nan
    return noise * _detectable_per_noise(replicas, power, simulations, seed)


MAX_SIMULATED_REPLICAS = 7  # 7! = 5,040 assignments per simulated draw


@functools.lru_cache(maxsize=None)
def _detectable_per_noise(replicas: int, power: float, simulations: int, seed: int) -> float:
    """detectable_by_pairings at noise 1: bisection on pairing_power with the same draws throughout (the
    power then only grows with the effect)."""
    low, high = 0.0, 1.0
    while pairing_power(high, 1.0, replicas, simulations, seed) < power:
        low, high = high, 2 * high
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if pairing_power(middle, 1.0, replicas, simulations, seed) < power else (low, middle)
    return high


def agreement_table(
    store: ScoreFile, models: list[str], options: CompareOptions, k: Optional[int] = None
) -> np.ndarray:
    """AGREEMENT_DTYPE rows for every variant both models of a pair hold, for overlap@k (k: the largest
    of options.ks unless given) and Spearman: each comparison's mean per test example with its CI, and
    with replicas the normalised agreements and own - other teacher. Empty without a teacher-student or
    student-baseline pair."""
    pairs = select_agreement_pairs(replicas_by_role(models), models)
    k = k or max(options.ks)
    n_train, n_test = len(store.train_labels), len(store.test_labels)
    sampled = statistics.sample_rows(n_test, options.max_rows, options.seed)  # as the rank-correlation table
    variants = [v for v in store.model(models[0]).variants if all(v in store.model(m).variants for m in models)]
    rows = []
    for variant, (statistic, chance) in itertools.product(variants, ((f"overlap@{k}", k / n_train), ("spearman", 0.0))):
        values = RowValues(store, variant, statistic, sampled)
        per_row = {name: values.mean_of(found) for name, found in pairs.items()}
        for name, found in pairs.items():
            rows.append(_row(variant, statistic, name, [per_row[name]], np.mean, chance, len(found), options.seed))
        for between, a, b in (("teacher-student", "teacher", "student"), ("student-baseline", "student", "baseline")):
            if all(name in per_row for name in (between, f"{a}-{a}'", f"{b}-{b}'")):
                samples = [per_row[between], per_row[f"{a}-{a}'"], per_row[f"{b}-{b}'"]]
                rows.append(
                    _row(
                        variant,
                        statistic,
                        f"normalised {between}",
                        samples,
                        _normalised(chance),
                        0.0,
                        len(pairs[between]),
                        options.seed,
                    )
                )
        if "teacher'-student" in per_row:
            samples = [per_row["teacher-student"], per_row["teacher'-student"]]
            matrix = _pairing_matrix(values, models)
            detectable = detectable_by_pairings(pairing_noise(matrix), len(matrix))
            rows.append(
                _row(
                    variant,
                    statistic,
                    OWN_VS_OTHER,
                    samples,
                    statistics.mean_difference,
                    0.0,
                    len(pairs["teacher-student"]),
                    options.seed,
                    pairing_p_value(matrix),
                    detectable,
                )
            )
        if "student-baseline'" in per_row:
            samples = [per_row["student-baseline"], per_row["student-baseline'"]]
            rows.append(
                _row(
                    variant,
                    statistic,
                    SHARED_VS_OTHER_INIT,
                    samples,
                    statistics.mean_difference,
                    0.0,
                    len(pairs["student-baseline"]),
                    options.seed,
                )
            )
    return np.array(rows, dtype=AGREEMENT_DTYPE)


def pairing_matrix(
    store: ScoreFile, models: Sequence[str], variant: str, statistic: str, options: Optional[CompareOptions] = None
) -> np.ndarray:
    """float64 [R, R]: the agreement (statistic "overlap@K" or "spearman") of teacher replica i with student
    replica j, mean over test examples, as the own - other teacher row's permutation test reads it (the
    Spearman rows sampled as tracin-score's default CompareOptions sample them)."""
    options = options or CompareOptions(ks=())
    sampled = statistics.sample_rows(len(store.test_labels), options.max_rows, options.seed)
    return _pairing_matrix(RowValues(store, variant, statistic, sampled), models)


def _pairing_matrix(values: RowValues, models: Sequence[str]) -> np.ndarray:
    """float64 [R, R]: mean over test examples of the agreement of teacher replica i with student replica
    j, for the replicas that have both."""
    by_role = replicas_by_role(models)
    shared = [r for r in by_role["teacher"] if r in by_role["student"]]
    return np.array(
        [[np.nanmean(values.of((by_role["teacher"][i], by_role["student"][j]))) for j in shared] for i in shared]
    )


def verdicts(table: np.ndarray) -> list[str]:
    """The distillation question in words, per whole-model variant (overlap): does the student agree with
    its own teacher more than with another (own - other teacher), and how much agreement a shared
    initialisation and data order alone make (shared - other init); each with its CI (and p)."""
    lines = []
    whole = table[~of_layer_groups(table) & np.char.startswith(table["statistic"], b"overlap")] if len(table) else table
    for row in whole:
        comparison = row["comparison"].decode()
        if comparison not in (OWN_VS_OTHER, SHARED_VS_OTHER_INIT):
            continue
        interval = f"{row['mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        above, below = row["ci_low"] > 0, row["ci_high"] < 0
        if comparison == OWN_VS_OTHER:
            said = (
                "agrees with its own teacher more than with another teacher"
                if above
                else "agrees with its own teacher less than with another teacher"
                if below
                else f"agrees with its own teacher no more than with another teacher (the CI includes 0; {_power_text(row)})"
            )
            p = pairing_p_text(row["p_value"], int(row["pairs"])) if "p_value" in table.dtype.names else ""
            p = f"; {p}" if p else ""
            if (above or below) and int(row["pairs"]) >= MIN_PAIRING_REPLICAS and row["p_value"] >= 0.05:
                p += (
                    " - not confirmed by the replica pairings: the CI is over test examples with these replicas fixed, "
                    "so the difference may be these replicas' own rather than their teachers'"
                )
            lines.append(f"{row['variant'].decode()}, {row['statistic'].decode()}: the student {said}: {interval}{p}")
        else:
            said = (
                "a shared initialisation and data order alone make student and baseline agree more"
                if above
                else "a shared initialisation and data order make no difference to student-baseline agreement (the CI includes 0)"
                if not below
                else "students with a shared initialisation and data order agree less"
            )
            lines.append(f"{row['variant'].decode()}, {row['statistic'].decode()}: {said}: {interval}")
    return lines


def _power_text(row: np.void) -> str:
    """What a "no" could have seen: the difference the test examples would show with 80% power (2.8
    standard errors, read off the CI), and where the file has it the difference the replica pairings
    would (simulated: detectable_by_pairings), which is the larger where replicas differ."""
    rows = f"{statistics.detectable_from_ci(row['ci_low'], row['ci_high']):.3f}"
    if "detectable" not in row.dtype.names or not np.isfinite(row["detectable"]):
        return f"{rows} is the difference this sample would see with 80% power"
    return (
        f"the replica pairings would see {row['detectable']:.3f} with 80% power (simulated from their spread), "
        f"the test examples alone {rows}"
    )


def _normalised(chance: float) -> Callable:
    def statistic(between, within_a, within_b, axis=-1):
        return statistics.normalised_agreement(between, within_a, within_b, chance, axis)

    return statistic


def of_layer_groups(table: np.ndarray) -> np.ndarray:
    """bool [rows]: the rows of layer-group variants (VARIANT@GROUP)."""
    return np.char.find(table["variant"], GROUP_SEPARATOR.encode()) >= 0


def format_agreement(table: np.ndarray, groups: bool = False) -> str:
    """The agreement table as text: a block per variant, a line per comparison, a column per statistic
    (mean [95% CI]). Layer-group variants only with `groups` (else a closing line counts them: see
    format_agreement_by_depth)."""
    hidden = int(of_layer_groups(table).sum()) if len(table) and not groups else 0
    table = table[~of_layer_groups(table)] if hidden else table
    if len(table) == 0:
        return ""
    names = list(dict.fromkeys(table["statistic"]))
    lines = [
        f"agreement of the test examples' proponents, mean over test examples [{statistics.CONFIDENCE:.0%} bootstrap CI]"
        "; ' = another replica (other seed, same data); normalised: 1 = as much as replicas agree, 0 = chance"
    ]
    for variant in dict.fromkeys(table["variant"]):
        rows = table[table["variant"] == variant]
        heading = "  ".join(f"{s.decode():>22}" for s in names)
        lines.append(f"  {variant.decode():<30}{heading}")
        for comparison in dict.fromkeys(rows["comparison"]):
            cells = []
            for statistic in names:
                match = rows[(rows["comparison"] == comparison) & (rows["statistic"] == statistic)]
                cells.append(f"{_cell(match[0]):>22}" if len(match) else " " * 22)
            mine = rows[rows["comparison"] == comparison]
            if "p_value" in rows.dtype.names and np.isfinite(mine["p_value"]).any():
                replicas = int(mine["pairs"][0])
                shown = (
                    " ".join(f"{p:.3f}" for p in mine["p_value"])
                    if replicas >= MIN_PAIRING_REPLICAS
                    else f"none: needs >= {MIN_PAIRING_REPLICAS} replicas"
                )
                cells.append(f"p {shown}")
            lines.append(f"    {comparison.decode():<28}" + "  ".join(cells))
        chances = [rows[rows["statistic"] == statistic]["chance"][0] for statistic in names]
        lines.append(f"    {'(chance)':<28}" + "  ".join(f"{chance:>22.3f}" for chance in chances))
    if hidden:
        lines.append(f"  ({hidden} more rows, of each layer group's scores alone: the agreement by depth)")
    return "\n".join(lines)


DEPTH_COMPARISONS = ("teacher-student", "teacher-teacher'", "student-student'", "normalised teacher-student")


def agreement_by_depth(table: np.ndarray) -> list[tuple[str, str, list[str], np.ndarray]]:
    """The layer-group rows arranged by depth: per variant (without its group) and statistic, (variant,
    statistic, groups in model order, AGREEMENT_DTYPE rows [n_groups, len(DEPTH_COMPARISONS)], NaN where
    a comparison is missing). At which depth do teacher and student agree, against the replicas?"""
    grouped = table[of_layer_groups(table)]
    found = []
    variants = [v.decode().split(GROUP_SEPARATOR, 1) for v in dict.fromkeys(grouped["variant"])]
    for base in dict.fromkeys(base for base, _ in variants):
        names = [group for b, group in variants if b == base]
        for statistic in dict.fromkeys(grouped["statistic"]):
            cells = np.full(
                (len(names), len(DEPTH_COMPARISONS)), np.nan, dtype=[(n, "f8") for n in ("mean", "ci_low", "ci_high")]
            )
            for i, group in enumerate(names):
                rows = grouped[
                    (grouped["variant"] == f"{base}{GROUP_SEPARATOR}{group}".encode())
                    & (grouped["statistic"] == statistic)
                ]
                for row in rows:
                    if row["comparison"].decode() in DEPTH_COMPARISONS:
                        cells[i, DEPTH_COMPARISONS.index(row["comparison"].decode())] = (
                            row["mean"],
                            row["ci_low"],
                            row["ci_high"],
                        )
            found.append((base, statistic.decode(), names, cells))
    return found


def format_agreement_by_depth(table: np.ndarray) -> str:
    """agreement_by_depth as text: a block per variant and statistic, a line per layer group, a column
    per comparison (mean [95% CI]); empty without layer-group variants."""
    blocks = agreement_by_depth(table)
    if not blocks:
        return ""
    lines = [
        "agreement by depth: each layer group's scores alone (VARIANT@GROUP), mean over test examples "
        f"[{statistics.CONFIDENCE:.0%} bootstrap CI]"
    ]
    for base, statistic, names, cells in blocks:
        lines.append(f"  {base + ', ' + statistic:<28}" + "  ".join(f"{c:>26}" for c in DEPTH_COMPARISONS))
        for group, row in zip(names, cells):
            lines.append(
                f"    {group:<26}"
                + "  ".join(f"{_cell(cell) if np.isfinite(cell['mean']) else '-':>26}" for cell in row)
            )
    return "\n".join(lines)


def _cell(row) -> str:
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
