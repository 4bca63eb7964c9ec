"""tracin-sweep: one distillation experiment over values of one or more settings, one results table.

the combinations of the --vary values (a grid)
train only what must be trained, each through tracin-train's own code path (train_run):
    settings only the distilled student reads (temperature, alpha, kd_loss, distill, teacher_epoch):
        one shared run `base` trains the teacher and the baseline student once; each combination's run
        trains its student from the shared teacher's checkpoint (teacher_epoch: which one, the
        teacher-quality sweep)
    settings the students' shape reads (student_stages, student_init): the shared teacher, and each
        combination trains its student and its baseline
    anything else (epochs, width, seed, lr, augment, ...): each combination trains all three models
every run is a tracin-train run folder under OUT_ROOT/SWEEP/: a killed sweep continues where it stopped
results.csv, results.md and results.png in OUT_ROOT/SWEEP/: a row per run and model
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from tracin.config import ROLES
from tracin.config import SWEEP_KEYS as KEYS
from tracin.config import SWEEP_SHAPE_KEYS as SHAPE_KEYS
from tracin.config import SWEEP_TEACHER_KEYS as TEACHER_KEYS
from tracin.errors import StoreError, TracinError
from tracin.files import (
    check_own,
    check_own_table,
    check_replaceable,
    write_atomic,
    write_json_atomic,
    write_own_figure,
    write_own_markdown,
)
from tracin.results import statistics
from tracin.results.store import ScoreFile
from tracin.runtime import machine
from tracin.schemas import SWEEP_JSON, load_json
from tracin.training.checkpoints import VERSION, checkpoint_name, load_checkpoint
from tracin.training.records import check_saved_digest
from tracin.training.trainer import best_saved

BASE_RUN = "base"
RESULT_FIELDS = (
    "run",
    "model",
    "test_acc",
    "best_epoch",
    "test_loss",
    "train_test_gap",
    "parameters",
    "train_images_per_s",
    "wall_s",
)


def _meaning(value: str):
    """A --vary value as the setting reads it: a number's value, else the text."""
    try:
        return float(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Sweep:
    """name: the sweep's folder under out_root; vary: (key, values) in order; base: the tracin-train
    arguments every run shares."""

    name: str
    vary: tuple[tuple[str, tuple[str, ...]], ...]
    base: tuple[str, ...]
    out_root: str = "checkpoints"
    command: tuple[str, ...] = ()  # the command line, recorded in sweep.json
    score: Optional[tuple[str, ...]] = None  # tracin-score arguments: score every run and add agreement columns

    def __post_init__(self) -> None:
        if not self.vary:
            raise TracinError("--vary names no setting: e.g. --vary temperature=1,2,5")
        for key, values in self.vary:
            if key not in KEYS:
                raise TracinError(f"--vary {key}: not a setting a sweep varies; use one of {', '.join(KEYS)}")
            if not values:
                raise TracinError(f"--vary {key}= gives no values")
            meant = [_meaning(value) for value in values]  # 1 and 1.0, 2 and 02: one setting (round 13, W4, W16)
            twice = list(dict.fromkeys(value for value, m in zip(values, meant) if meant.count(m) > 1))
            if twice:
                raise TracinError(f"--vary {key} gives {' and '.join(twice)}: one value twice (each value is one run)")
        keys = [key for key, _ in self.vary]
        epochs = dict(self.vary).get("teacher_epoch", ())
        if not all(value.isdigit() and int(value) >= 1 for value in epochs):
            raise TracinError(
                f"--vary teacher_epoch takes saved epochs of the shared teacher (1, 2, ...), got {', '.join(epochs)}"
            )
        twice = [key for key in dict.fromkeys(keys) if keys.count(key) > 1]
        if twice:  # round 37, S8: which one
            raise TracinError(
                f"--vary names {', '.join(twice)} twice; give each setting's values in one --vary ({twice[0]}=A,B)"
            )
        if "teacher_epoch" in keys and set(keys) & set(TEACHER_KEYS):
            raise TracinError(
                "--vary teacher_epoch picks checkpoints of one shared teacher: it cannot be combined with "
                f"settings that retrain the teacher ({', '.join(sorted(set(keys) & set(TEACHER_KEYS)))})"
            )
        shared = {"--run", "--models", "--teacher", "--out-root", "--replicas", "--overwrite"}
        varied = {flag: key for key in keys for flag in flags_of(key)}
        for word in self.base:
            flag = word.split("=", 1)[0]
            if flag == "--overwrite":  # round 21, SO7: "sets it itself" said the opposite of the truth
                raise TracinError(
                    "tracin-sweep takes no --overwrite: it keeps every finished run (move one away to train it again)"
                )
            if flag in shared:
                raise TracinError(f"tracin-sweep sets {flag} itself; leave it out")
            if flag in varied:  # it would be overridden in every run, never read (red-team A16b, SW06)
                raise TracinError(f"--vary {varied[flag]} sets {flag} in every run; leave the fixed {flag} out")

    @property
    def root(self) -> Path:
        return Path(self.out_root) / self.name

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.vary]

    @property
    def shares_teacher(self) -> bool:
        return not set(self.keys) & set(TEACHER_KEYS)

    @property
    def shares_baseline(self) -> bool:
        return self.shares_teacher and not set(self.keys) & set(SHAPE_KEYS)

    def combinations(self) -> list[dict[str, str]]:
        return [dict(zip(self.keys, values)) for values in itertools.product(*(values for _, values in self.vary))]


def parse_vary(spec: str) -> tuple[str, tuple[str, ...]]:
    """'temperature=1,2,5' -> ("temperature", ("1", "2", "5")); dashes in the key read as underscores."""
    key, separator, values = spec.partition("=")
    if not separator:
        raise TracinError(f"--vary takes KEY=V1,V2,..., got {spec!r}")
    values = tuple(v.strip() for v in values.split(","))
    if any(values) and not all(values):  # 'lr=0.1,,0.2': a slip, not two values
        raise TracinError(f"--vary {key.strip()} has an empty entry in {spec!r}; give comma-separated values")
    return key.strip().replace("-", "_"), tuple(v for v in values if v)


def run_name(combination: dict[str, str]) -> str:
    """The run folder of a combination: 'temperature-2_alpha-0.5'."""
    return "_".join(f"{key}-{value}" for key, value in combination.items())


def flags_of(key: str) -> tuple[str, ...]:
    """The tracin-train options that set a varied setting (teacher_epoch: none, it picks the shared teacher's
    checkpoint)."""
    if key == "teacher_epoch":
        return ()
    return ("--augment", "--no-augment") if key == "augment" else (f"--{key.replace('_', '-')}",)


OUTPUTS = ("results.csv", "results.md", "results.png", "sweep.json")  # what write_results makes


def check_grid(sweep: Sweep) -> None:
    """A TracinError if the sweep's folder holds a run of another grid, or its sweep.json records another
    grid or is damaged: the sweep's name used before with other --vary values, whose results.csv, .md and
    .png this sweep would replace (red-team SW15, W20, W21). A value may be added to a key."""
    if not sweep.root.is_dir():
        return
    for name in OUTPUTS:  # a folder or FIFO at one is refused before any training (round 17, S6, S7)
        check_replaceable(sweep.root / name)
    check_own([sweep.root / "results.md", sweep.root / "results.png"], "a result")  # round 18, W12, W16
    check_own_table(sweep.root / "results.csv", ("run", "model", "test_acc"), "a table")  # W15
    record = sweep.root / "sweep.json"
    if record.exists():  # written when a sweep finishes: a killed one has none yet
        recorded = load_json(record, SWEEP_JSON).get("vary", {})
        mine = {key: set(values) for key, values in sweep.vary}
        if recorded and (recorded.keys() != mine.keys() or any(not set(v) <= mine[k] for k, v in recorded.items())):
            given = " ".join(f"{key}={','.join(values)}" for key, values in recorded.items())
            raise TracinError(
                f"{record}: vary: the sweep {sweep.name} was made with --vary {given}; give those again "
                "(a value may be added), or choose another --sweep"
            )
    ours = {BASE_RUN, *map(run_name, sweep.combinations())}
    others = sorted(p.name for p in sweep.root.iterdir() if (p / "run.json").is_file() and p.name not in ours)
    if others:
        raise TracinError(
            f"{sweep.root} holds run {others[0]}, not of this grid: the sweep {sweep.name} was made with other "
            "--vary values; give those again (a value may be added), or choose another --sweep"
        )


def _flags(combination: dict[str, str]) -> list[str]:
    """tracin-train arguments of a combination's settings (teacher_epoch is the sweep's, not a flag)."""
    flags = []
    for key, value in combination.items():
        if key == "teacher_epoch":
            continue
        if key == "augment":
            if value.lower() not in ("on", "off", "true", "false", "yes", "no", "1", "0"):
                raise TracinError(f"--vary augment takes on,off; got {value!r}")
            flags += [] if value.lower() in ("on", "true", "yes", "1") else ["--no-augment"]
            continue
        flags += [flags_of(key)[0], value]
    return flags


def train_arguments(sweep: Sweep, teacher_epochs: int) -> list[tuple[str, list[str]]]:
    """(run name, tracin-train argv) of every run the sweep trains, the shared one first."""
    runs = []
    base = [*sweep.base, "--out-root", str(sweep.root)]
    if sweep.shares_teacher:
        shared_models = ["teacher", "student_baseline"] if sweep.shares_baseline else ["teacher"]
        runs.append((BASE_RUN, ["--run", BASE_RUN, *base, "--models", ",".join(shared_models)]))
    for combination in sweep.combinations():
        name = run_name(combination)
        argv = ["--run", name, *base, *_flags(combination)]
        if sweep.shares_teacher:
            epoch = int(combination.get("teacher_epoch", teacher_epochs))
            teacher = sweep.root / BASE_RUN / "teacher" / checkpoint_name(epoch)
            argv += [
                "--teacher",
                str(teacher),
                "--models",
                "student" if sweep.shares_baseline else "student,student_baseline",
            ]
        runs.append((name, argv))
    return runs


def run_sweep(
    sweep: Sweep,
    train: Callable[[list[str]], None],
    teacher_epochs: int,
    score: Optional[Callable[[list[str]], None]] = None,
) -> Path:
    """Train every run (train(argv): tracin-train's own code path; each continues a killed run); with
    sweep.score, score each run's finished models (score(argv): tracin-score's, which keeps a finished
    file); then write the results. Returns results.csv."""
    runs = train_arguments(sweep, teacher_epochs)
    for name, argv in runs:
        print(f"tracin-sweep: run {name}", flush=True)
        train(argv)
    if sweep.score is not None and score is not None:
        for name, _ in runs:
            models = _finished_models(sweep.root / name)
            print(f"tracin-sweep: scoring {name} ({', '.join(models)})", flush=True)
            score(["--run", str(sweep.root / name), "--models", ",".join(models), *sweep.score, "--quiet"])
    return write_results(sweep)


def _finished_models(run: Path) -> list[str]:
    record = json.loads((run / "run.json").read_text())
    return [model for model in ROLES if record["models"].get(model, {}).get("status") == "done"]


AGREEMENT_K = 100  # overlap@k of a student's and its teacher's test proponents (at most the stored k)
AGREEMENT_FIELDS = (
    "teacher_overlap_k",
    "teacher_overlap",
    "teacher_overlap_ci_low",
    "teacher_overlap_ci_high",
    "teacher_overlap_chance",
)


def teacher_agreement(sweep: Sweep, run: Path, model: str) -> dict:
    """For a scored student or baseline: overlap@k (k = AGREEMENT_K or the files' largest) of its test
    proponents with the teacher's (the shared teacher's final checkpoint's score file, also in a
    teacher_epoch sweep; or its own run's), mean over test examples with its bootstrap CI and chance k/n,
    by the first score variant; {} where either file is missing or unfinished, or they score other
    examples. The baseline never saw the teacher: its row is the control."""
    teacher_file = (sweep.root / BASE_RUN if sweep.shares_teacher else run) / "tracin.h5"
    own_file = run / "tracin.h5"
    if model == "teacher" or not teacher_file.is_file() or not own_file.is_file():
        return {}
    with ScoreFile.open_read(teacher_file) as teachers, ScoreFile.open_read(own_file) as mine:
        if (
            "teacher" not in teachers.models
            or model not in mine.models
            or {teachers.status, mine.status} != {"complete"}
        ):
            return {}
        for store in (teachers, mine):
            changed = store.changed_since_written()
            if changed:
                raise StoreError(f"{store.path}: {changed[0]}: the file was edited, or damaged on disk")
        if not (
            np.array_equal(teachers.train_index, mine.train_index)
            and np.array_equal(teachers.test_index, mine.test_index)
        ):
            return {}
        top_t = teachers.model("teacher").rankings()[0].top_index
        top_s = mine.model(model).rankings()[0].top_index
        n_train = mine.n_train
    k = min(AGREEMENT_K, top_t.shape[1], top_s.shape[1])
    overlap = statistics.overlap_at_k(top_t, top_s, k)
    low, high = statistics.bootstrap_ci([overlap])
    return {
        "teacher_overlap_k": k,
        "teacher_overlap": float(overlap.mean()),
        "teacher_overlap_ci_low": low,
        "teacher_overlap_ci_high": high,
        "teacher_overlap_chance": statistics.chance_overlap(k, n_train),
    }


# --- results ---------------------------------------------------------------------------------------------


def _history(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _checked_last(run: Path, model: str, entry: dict) -> dict:
    """A finished model's last checkpoint (sha256-checked against run.json), after checking run.json's
    metrics and best_epoch agree with it: run.json's copies edited to other values were tabled without a
    word (round 11, S15; round 12, F1)."""
    last = run / model / entry["checkpoints"][-1]
    payload = load_checkpoint(last, role=model.split(".")[0])
    field = f"{run / 'run.json'}'s models/{model}"
    check_saved_digest(last, entry.get("sha256"), f"{field}/sha256", payload.get("version", VERSION))
    if {key: entry["metrics"].get(key) for key in payload["metrics"]} != payload["metrics"]:
        raise TracinError(f"{field}/metrics differ from those {last} records: run.json was edited")
    if "history" in payload and entry.get("best_epoch") != best_saved(payload["history"])["epoch"]:
        raise TracinError(f"{field}/best_epoch differs from the one {last}'s history gives: run.json was edited")
    return payload


def model_result(run: Path, model: str) -> dict:
    """One row of RESULT_FIELDS from a finished model's last checkpoint: test accuracy and loss at the last
    epoch, best saved epoch, train-test accuracy gap, parameters, training images per second (train seconds
    only) and wall time (training and evaluation), from the history it carries (round 12, F2, F3: run.json's
    param_counts and history.csv's seconds edited were tabled). Checkpoints from before their history
    (version 2 and older) take it from history.csv."""
    record = json.loads((run / "run.json").read_text())
    payload = _checked_last(run, model, record["models"][model])
    history = payload.get("history") or _history(run / model / "history.csv")
    metrics, n_train = payload["metrics"], payload["data_fingerprint"]["n_train"]
    train_seconds = sum(float(row.get("train_seconds") or row["seconds"]) for row in history)
    return {
        "run": run.name,
        "model": model,
        "test_acc": metrics["test_acc"],
        "best_epoch": record["models"][model].get("best_epoch"),
        "test_loss": metrics["test_loss"],
        "train_test_gap": metrics["train_acc"] - metrics["test_acc"],
        "parameters": payload["param_count"],
        "train_images_per_s": n_train * len(history) / train_seconds if train_seconds else float("nan"),
        "wall_s": sum(float(row["seconds"]) for row in history),
    }


def result_rows(sweep: Sweep) -> list[dict]:
    """A row per finished model of every run: the combination's settings, then RESULT_FIELDS (the shared
    run's models carry the base settings, '-' for the varied ones)."""
    rows = []
    runs = [(BASE_RUN, {key: "-" for key in sweep.keys})] if sweep.shares_teacher else []
    runs += [(run_name(c), c) for c in sweep.combinations()]
    for name, combination in runs:
        folder = sweep.root / name
        record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {"models": {}}
        for model in ROLES:
            if record["models"].get(model, {}).get("status") == "done":
                agreement = teacher_agreement(sweep, folder, model)  # with or without --score now (round 30, SW6)
                rows.append({**combination, **model_result(folder, model), **agreement})
    return rows


def result_fields(sweep: Sweep, rows: Sequence[dict]) -> list[str]:
    """The columns of results.csv: the agreement's with --score, or where a run holds score files from an
    earlier run with --score (a rerun without it dropped their columns: round 30, SW6)."""
    scored = sweep.score is not None or any(AGREEMENT_FIELDS[0] in row for row in rows)
    return [*sweep.keys, *RESULT_FIELDS, *(AGREEMENT_FIELDS if scored else ())]


def results_markdown(rows: Sequence[dict], fields: Sequence[str]) -> str:
    header = list(fields)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(field)) for field in header) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def write_results(sweep: Sweep) -> Path:
    """results.csv, results.md, results.png (test accuracy against the first varied setting, a line per
    model) and sweep.json (command, grid, when, machine) in the sweep's folder; returns results.csv."""
    rows = result_rows(sweep)
    if not rows:
        raise TracinError(f"{sweep.root} holds no finished run yet")
    text = io.StringIO(newline="")
    fields = result_fields(sweep, rows)
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(sweep.root / "results.csv", lambda handle: handle.write(text.getvalue().encode()))
    write_own_markdown(sweep.root / "results.md", results_markdown(rows, fields))
    plot_results(
        rows, sweep.keys[0], sweep.root / "results.png", f"{sweep.name}: test accuracy against {sweep.keys[0]}"
    )
    write_json_atomic(
        {
            "command": list(sweep.command),
            "vary": {key: list(values) for key, values in sweep.vary},
            "finished": datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
        },
        sweep.root / "sweep.json",
    )
    return sweep.root / "results.csv"


def plot_results(rows: Sequence[dict], key: str, path: Path, title: str) -> None:
    """Test accuracy against `key`'s values (in sweep order), a line per model; a shared run's model is a
    horizontal line (it does not depend on the setting)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = list(dict.fromkeys(row[key] for row in rows if row[key] != "-"))
    figure = Figure(figsize=(6, 3.6))
    axes = figure.subplots()
    for i, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
        mine = [row for row in rows if row["model"] == model]
        shared = [row for row in mine if row[key] == "-"]
        if shared:
            axes.axhline(shared[0]["test_acc"], color=f"C{i}", linestyle="--", label=f"{model} (shared)")
        points = [(values.index(row[key]), row["test_acc"]) for row in mine if row[key] != "-"]
        if points:
            axes.plot(*zip(*sorted(points)), marker="o", color=f"C{i}", label=model)
    axes.set_xticks(range(len(values)), values)
    axes.set_xlabel(key)
    axes.set_ylabel("test accuracy (last epoch)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(title, fontsize=9)
    FigureCanvasAgg(figure)
    write_own_figure(path, figure, dpi=110, bbox_inches="tight")


def final_epochs(base: Sequence[str], default: int) -> Optional[int]:
    """The --epochs among the base arguments (the shared teacher's last checkpoint), else `default`."""
    for i, word in enumerate(base):
        if word == "--epochs" and i + 1 < len(base):
            return int(base[i + 1])
        if word.startswith("--epochs="):
            return int(word.split("=", 1)[1])
    return default
