"""tracin-report: the field's sanity checks side by side for teacher, student and baseline student.

    open the run and its finished score file, check they belong together
    model randomization: per model, the same TracIn engine on re-initialised weights (cascading from the
        head down) for a sample of train and test examples -> /randomization (per model: resumable)
    with a planted shortcut: each model's predictions on stamped and clean test examples
    every check per model and variant (tracin.results.sanity), with the leave-top-k-out and LDS of
        tracin-validate where the file holds them -> /quality_report, printed, quality_report.md,
        plots/quality_report.png

The checks read the stored rankings and scores; only randomization and predictions load checkpoints.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from tracin.config import ENSEMBLE_SUFFIX, EngineConfig, ScoreConfig, replicas_by_role
from tracin.engine.groups import group_names
from tracin.engine.randomization import fresh_model, module_of, randomized_checkpoints
from tracin.engine.tracin import TracIn
from tracin.errors import StoreError, TracinError
from tracin.files import command_locks, refuse_links, report_path, write_atomic
from tracin.options import ReportOptions, ScoreOptions
from tracin.results import sanity, statistics
from tracin.results.agreement import agreement_table
from tracin.results.comparison import CompareOptions
from tracin.results.figures import plot_quality_report
from tracin.results.markdown import quality_report_markdown, report_verdicts
from tracin.results.report_folder import check_finished
from tracin.results.runs import (
    TrainedRun,
    check_scored_checkpoints,
    checked_data,
    describe_salvage,
    load_role_checkpoints,
    open_trained_run,
    positions_in,
    scoring_loss,
)
from tracin.results.sanity import INHERITED, MODEL_ROWS
from tracin.results.store import QUALITY_REPORT, RANDOMIZATION, ScoreFile, salvage_own_damage
from tracin.results.validation import OWN, RANDOM
from tracin.runtime import Runtime, machine, start_runtime
from tracin.training.data import RunData, Split
from tracin.training.models import build_model


def report_run(options: ReportOptions) -> Path:
    """Compute what is missing (randomization, predictions), write the quality report into the score file
    and beside it; returns the score file."""
    run = open_trained_run(options.run, options.data_root)
    path = Path(options.scores) if options.scores else run.paths.root / "tracin.h5"
    if not path.is_file():
        raise TracinError(
            f"{path} does not exist: score the run with tracin-score first (or name the file with --scores)"
        )
    started = time.monotonic()
    with start_runtime(options.device, options.quiet) as runtime, command_locks(run.paths.root, path):
        if runtime.distributed:
            raise TracinError("tracin-report runs in one process: start it without torchrun")
        salvaged = salvage_own_damage(path, (RANDOMIZATION, QUALITY_REPORT))
        if salvaged is not None:
            print(describe_salvage(path, salvaged), flush=True)
        with ScoreFile.open_read_write(path) as store:
            check_finished(store)
            models = [m for m in options.models if m in store.models]
            if not models:
                raise TracinError(
                    f"{path} has none of the models {', '.join(options.models)} (it has {', '.join(store.models)})"
                )
            check_scored_checkpoints(store, run, models)
            data = checked_data(run)
            if refresh_agreement(store):
                runtime.log(
                    "agreement table recomputed with the controls (own - other teacher's p and detectable difference, "
                    "shared - other init)"
                )
            randomization = update_randomization(store, models, run, data, options, runtime)
            predictions = {m: test_predictions(m, store, run, data, runtime) for m in models}
            table = quality_report_table(store, models, randomization, predictions, options.seed)
            provenance = {
                "machine": machine(),
                "finished": datetime.now().isoformat(timespec="seconds"),
                "seconds": round(time.monotonic() - started, 1),
                "randomization_seconds": round(store.table_attrs(RANDOMIZATION)["seconds"], 1),
            }
            store.write_table(QUALITY_REPORT, table, provenance=provenance)
            said = report_verdicts(store, table)
        print(sanity.format_quality_report(table, options.groups), flush=True)
        print("\n".join(said), flush=True)
        print(f"quality report: {path} (/quality_report), {write_quality_files(path, table, said)}", flush=True)
    return path


def refresh_agreement(store: ScoreFile) -> bool:
    """Recompute /agreement, with the options its comparisons were made with, when the file's table
    predates the distillation controls (the pairing p-value and detectable difference, shared - other
    init); returns whether it did."""
    table = store.read_table("agreement") if store.has_table("agreement") else None
    pairs = store.comparison_pairs()
    if (table is not None and "detectable" in (table.dtype.names or ())) or not pairs:
        return False
    settings = store.comparison_settings(*pairs[0])
    options = CompareOptions(tuple(settings["ks"]), max_rows=settings["max_rows"] or None, seed=settings["seed"])
    store.write_table("agreement", agreement_table(store, store.models, options))
    return True


# --- model randomization ------------------------------------------------------------------------------


def _stored_settings(store: ScoreFile) -> dict:
    return json.loads(store.attributes["settings"])


def stored_score_config(store: ScoreFile) -> ScoreConfig:
    """The ScoreConfig the file was scored with (its settings' score.* entries)."""
    settings = _stored_settings(store)
    return ScoreConfig.from_dict(
        {
            k.removeprefix("score."): v
            for k, v in settings.items()
            if k.startswith("score.") and k not in ("score.loss", "score.test_label")
        }
    )


def randomization_settings(store: ScoreFile, options: ReportOptions) -> dict:
    """What the randomization rows depend on: the scores (their file's settings) and the samples."""
    return {
        "scores": store.attributes["settings"],
        "train": options.randomization_train,
        "test": options.randomization_test,
        "seed": options.seed,
    }


def update_randomization(
    store: ScoreFile, models: Sequence[str], run: TrainedRun, data: RunData, options: ReportOptions, runtime: Runtime
) -> np.ndarray:
    """The file's /randomization rows for `models`, computing (and writing, model by model) those missing."""
    settings = randomization_settings(store, options)  # JSON values: they compare equal to the stored ones
    table, seconds = np.zeros(0, dtype=sanity.RANDOMIZATION_DTYPE), 0.0
    if store.has_table(RANDOMIZATION) and store.table_attrs(RANDOMIZATION)["settings"] == settings:
        table, seconds = store.read_table(RANDOMIZATION), store.table_attrs(RANDOMIZATION)["seconds"]
    for name in models:
        if name.encode() in set(table["model"]):
            continue
        runtime.log(f"model randomization: {name}")
        started = time.monotonic()
        table = np.concatenate([table, randomization_rows(name, store, run, data, options, runtime)])
        seconds += time.monotonic() - started
        store.write_table(RANDOMIZATION, table, settings=settings, seconds=seconds)
    return table[np.isin(table["model"], [m.encode() for m in models])]


def _subsets(
    store: ScoreFile, data: RunData, options: ReportOptions, name: str
) -> tuple[np.ndarray, np.ndarray, Split, Split]:
    """(score-file train rows, test rows, the examples at them, as model `name` trained on them) sampled for
    randomization."""
    train_rows = statistics.sample_rows(store.n_train, options.randomization_train, options.seed)
    test_rows = statistics.sample_rows(store.n_test, options.randomization_test, options.seed + 1)
    train = data.train_of(name).subset(
        torch.as_tensor(positions_in(store.train_index[train_rows], data.train.index.numpy()))
    )
    test = data.test.subset(torch.as_tensor(positions_in(store.test_index[test_rows], data.test.index.numpy())))
    return train_rows, test_rows, train, test


def randomization_rows(
    name: str, store: ScoreFile, run: TrainedRun, data: RunData, options: ReportOptions, runtime: Runtime
) -> np.ndarray:
    """RANDOMIZATION_DTYPE rows of one model: for each step of the cascade (sanity.cascade) and variant, the
    Spearman correlation per sampled test row of its stored scores with the re-initialised model's."""
    settings = _stored_settings(store)
    checkpoints, config, last = load_role_checkpoints(run, name, settings["checkpoints"])
    variants = store.model(name).variants
    score_config = replace(stored_score_config(store), variants=tuple(variants))
    loss = scoring_loss(
        name,
        last,
        ScoreOptions(
            run=run.paths.root.name, loss=settings["score.loss"], test_label=settings.get("score.test_label", "label")
        ),
    )
    engine = EngineConfig(batch_size=settings["batch_size"], progress=False)
    train_rows, test_rows, train, test = _subsets(store, data, options, name)
    trained = {v: store.model(name).matrix(variant=v)[:, test_rows][train_rows].astype(np.float64) for v in variants}
    fresh = fresh_model(lambda: build_model(config), options.seed)
    # every layer of the model, scored or not: "all layers" must re-initialise all of them (--layers, last-layer mode)
    groups = group_names([module_of(key) for key in fresh.state_dict()], score_config.groups)
    rows = []
    steps = sanity.cascade(groups)
    for step, (label, randomized) in enumerate(steps, 1):
        runtime.log(f"  {name}: {label} re-initialised ({step}/{len(steps)})")
        replayed = randomized_checkpoints(fresh, checkpoints, randomized, score_config.groups)
        scores = TracIn(build_model(config), replayed, score_config, loss, engine, runtime.device).scores_by_variant(
            train, test
        )
        for variant in variants:
            rho = sanity.randomization_spearman(trained[variant], scores[variant].numpy().astype(np.float64))
            rows += [(name, variant, label, row, value) for row, value in zip(test_rows, rho)]
    return np.array(rows, dtype=sanity.RANDOMIZATION_DTYPE)


@torch.no_grad()
def test_predictions(name: str, store: ScoreFile, run: TrainedRun, data: RunData, runtime: Runtime) -> np.ndarray:
    """int64 [n_test]: the model's predicted class of each scored test example, at its last checkpoint."""
    checkpoints, config, _ = load_role_checkpoints(run, name, "last")
    model = build_model(config).to(runtime.device).eval()
    model.load_state_dict(checkpoints[-1].state)
    test = data.test.subset(torch.as_tensor(positions_in(store.test_index, data.test.index.numpy())))
    with torch.no_grad():
        return torch.cat([model(images).argmax(1).cpu() for images, _ in test.batches(256, runtime.device)]).numpy()


# --- the table -------------------------------------------------------------------------------------------


def quality_report_table(
    store: ScoreFile,
    models: Sequence[str],
    randomization: np.ndarray,
    predictions: dict[str, np.ndarray],
    seed: int = 0,
) -> np.ndarray:
    """REPORT_DTYPE rows: every check the file allows, per model and variant (model-level checks under
    MODEL_ROWS)."""
    rows = []
    for name in models:
        for variant in store.model(name).variants:
            rows += _attribution_rows(store, name, variant, randomization, seed)
        rows += _model_rows(store, name, predictions.get(name), seed)
    for variant in store.model(models[0]).variants:
        rows += _shortcut_distillation_rows(store, variant, seed)
    if store.inherit_mode:
        rows += _inheritance_rows(store, store.models, seed)  # every replica, whichever models the report shows
        for variant in store.model(models[0]).variants:
            rows += _inherited_attribution_rows(store, store.models, variant, seed)
    rows += _validation_rows(store, models)
    return np.array(rows, dtype=sanity.REPORT_DTYPE)


def _attribution_rows(store: ScoreFile, name: str, variant: str, randomization: np.ndarray, seed: int) -> list[tuple]:
    scores = store.model(name)
    top = scores.variant_rankings(variant)[0].top_index
    k = min(sanity.SANITY_K, top.shape[1])
    train_labels, test_labels = store.train_labels, store.test_labels
    class_share = np.bincount(train_labels, minlength=test_labels.max() + 1)[test_labels] / store.n_train
    rows = [
        sanity.summary_row(
            f"identical class top-{n}",
            name,
            variant,
            sanity.identical_class(top, train_labels, test_labels, n),
            float(class_share.mean()),
            seed,
        )
        for n in (1, k)
    ]
    if store.coarse:
        for n in (1, k):
            same, chance = sanity.identical_subclass(
                top, store.train_fine_labels, store.test_fine_labels, store.train_clean_labels, test_labels, n
            )
            rows.append(
                sanity.summary_row(f"identical subclass top-{n}", name, variant, same, float(np.nanmean(chance)), seed)
            )
    share, low, high = sanity.top1_share_ci(top[:, 0], seed)
    chance = sanity.random_top1_share(store.n_train, len(top), seed)
    rows.append(("concentration: top-1 share (lower)", name, variant, share, low, high, chance, len(top)))
    rows += _randomization_summary(randomization, name, variant, seed)
    rows += _mislabel_rows(store, name, variant, seed)
    rows += _shortcut_rows(store, name, variant, top, k, seed)
    return rows


def _randomization_summary(randomization: np.ndarray, name: str, variant: str, seed: int) -> list[tuple]:
    mine = randomization[(randomization["model"] == name.encode()) & (randomization["variant"] == variant.encode())]
    rows = []
    for label in dict.fromkeys(mine["randomized"]):
        values = mine[mine["randomized"] == label]["spearman"]
        rows.append(sanity.summary_row(f"randomization: {label.decode()} (lower)", name, variant, values, 0.0, seed))
    return rows


def _mislabel_rows(store: ScoreFile, name: str, variant: str, seed: int) -> list[tuple]:
    if not store.noisy.any():
        return []
    self_influence = store.model(name).variant_self_influence(variant)
    if self_influence is None:
        return []
    found = sanity.detection_scores(self_influence, store.noisy)
    return [sanity.summary_row("mislabel AUC", name, variant, found, 0.5, seed)]


def _shortcut_rows(store: ScoreFile, name: str, variant: str, top: np.ndarray, k: int, seed: int) -> list[tuple]:
    shortcut = store.shortcut_of(name)
    if shortcut is None:
        return []
    stamped = store.train_stamped & (store.train_labels == shortcut)  # the train images that carry the shortcut
    test_rows = sanity.shortcut_test_rows(store.test_stamped, store.test_labels, shortcut)
    if len(test_rows) == 0:
        return []
    precision = sanity.precision_at_k(top[test_rows], stamped, k)
    matrix = store.model(name).matrix(variant=variant)
    auc = sanity.ranking_auc(np.asarray(matrix[:, test_rows], dtype=np.float64), stamped)
    rows = [
        sanity.summary_row(f"shortcut precision@{k}", name, variant, precision, float(stamped.mean()), seed),
        sanity.summary_row("shortcut AUC", name, variant, auc, 0.5, seed),
    ]
    predictions = store.model(name).predictions
    for label, predicted in (
        ("other-class", None),
        ("predicted-as-shortcut", None if predictions is None else predictions[0]),
    ):
        if label == "predicted-as-shortcut" and predicted is None:
            continue
        chosen = sanity.shortcut_other_rows(store.test_stamped, store.test_labels, shortcut, predicted)
        if len(chosen) == 0:
            continue
        columns = np.asarray(matrix[:, chosen], dtype=np.float64)
        rows += [
            sanity.summary_row(
                f"{label} shortcut precision@{k}",
                name,
                variant,
                sanity.precision_at_k(top[chosen], stamped, k),
                float(stamped.mean()),
                seed,
            ),
            sanity.summary_row(
                f"{label} shortcut AUPRC",
                name,
                variant,
                sanity.average_precision(columns, stamped),
                float(stamped.mean()),
                seed,
            ),
        ]
    return rows


def _shortcut_distillation_rows(store: ScoreFile, variant: str, seed: int) -> list[tuple]:
    """The distillation question on the planted shortcut, per stamped test example of the shortcut class:
    the student's shortcut precision@k less the baseline's; the stamped examples the student shares with
    its own teacher's top-k and with another teacher's (teacher.r1), and the teacher with its replica
    (the noise floor)."""
    shortcut = store.shortcut_of("student")
    stamped = store.train_stamped & (store.train_labels == shortcut)
    names = [n for n in ("teacher", "student", "student_baseline", "teacher.r1", "student.r1") if n in store.models]
    if (
        shortcut is None
        or not {"teacher", "student"} <= set(names)
        or any(variant not in store.model(n).variants for n in names)
    ):
        return []
    test_rows = sanity.shortcut_test_rows(store.test_stamped, store.test_labels, shortcut)
    top = {n: store.model(n).variant_rankings(variant)[0].top_index[test_rows] for n in names}
    k = min(sanity.SANITY_K, top["student"].shape[1])
    found = []
    if "student_baseline" in top:
        difference = sanity.precision_at_k(top["student"], stamped, k) - sanity.precision_at_k(
            top["student_baseline"], stamped, k
        )
        found.append(
            sanity.summary_row(f"shortcut precision@{k} - baseline's", "student", variant, difference, 0.0, seed)
        )
    own = sanity.shared_stamped(top["teacher"], top["student"], stamped, k)
    found.append(sanity.summary_row(f"stamped top-{k} shared with own teacher", "student", variant, own, np.nan, seed))
    if "teacher.r1" in top:
        other = sanity.shared_stamped(top["teacher.r1"], top["student"], stamped, k)
        found.append(
            sanity.summary_row(f"stamped top-{k} shared with another teacher", "student", variant, other, np.nan, seed)
        )
        found.append(
            sanity.summary_row(
                f"stamped top-{k} shared: own - other teacher", "student", variant, own - other, 0.0, seed
            )
        )
        floor = sanity.shared_stamped(top["teacher"], top["teacher.r1"], stamped, k)
        found.append(
            sanity.summary_row(f"stamped top-{k} shared with its replica", "teacher", variant, floor, np.nan, seed)
        )
    if "student.r1" in top:
        floor = sanity.shared_stamped(top["student"], top["student.r1"], stamped, k)
        found.append(
            sanity.summary_row(f"stamped top-{k} shared with its replica", "student", variant, floor, np.nan, seed)
        )
    return found


def _replicas(models: Sequence[str]) -> tuple[dict[str, dict[int, str]], list[int]]:
    """The models by role and replica, and the replicas with both a teacher and a distilled student."""
    by_role = replicas_by_role([m for m in models if not m.endswith(ENSEMBLE_SUFFIX)])
    return by_role, sorted(r for r in by_role.get("teacher", {}) if r in by_role.get("student", {}))


def _mean_over_replicas(samples: list[np.ndarray]) -> np.ndarray:
    """float64 [n_test]: per test row, the mean of the replicas' values that are defined (a row none defines
    stays NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for such a row
        return np.nanmean(samples, axis=0)


def _inheritance_rows(store: ScoreFile, models: Sequence[str], seed: int) -> list[tuple]:
    """The known-positive control's behaviour ("inherit" mode): the share of test images of other classes
    that a model takes for its replica teacher's shortcut class c_r, stamped and clean, per role (each test
    row's value the mean over the replicas r for which its class is not c_r), for the distilled students
    on another teacher's class (the control: student r' on c_r, r' != r), and the student's excess over
    the baseline and over the control on the stamped rows (paired per test row)."""
    by_role, replicas = _replicas(models)
    labels, stamped = store.test_labels, store.test_stamped
    predictions = {name: store.model(name).predictions for names in by_role.values() for name in names.values()}
    if not replicas or any(p is None for p in predictions.values()):
        return []

    def taken(name: str, shortcut: int, rows: np.ndarray) -> np.ndarray:
        values = np.full(len(labels), np.nan)
        chosen = rows & (labels != shortcut)
        values[chosen] = predictions[name][0][chosen] == shortcut
        return values

    shortcut = {r: store.shortcut_of(by_role["teacher"][r]) for r in replicas}
    found, side_values = [], {}
    for side, rows in (("stamped", stamped), ("clean", ~stamped)):
        for role in ("teacher", "student", "student_baseline"):
            names = {r: by_role.get(role, {}).get(r) for r in replicas}
            if any(n is None for n in names.values()):
                continue
            values = _mean_over_replicas([taken(names[r], shortcut[r], rows) for r in replicas])
            side_values[side, role] = values
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: taken for teacher's class, {side}", role, MODEL_ROWS, values, np.nan, seed
                )
            )
        if len(replicas) > 1:
            values = _mean_over_replicas(
                [taken(by_role["student"][o], shortcut[r], rows) for r in replicas for o in replicas if o != r]
            )
            side_values[side, "control"] = values
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: another teacher's class, {side}", "student", MODEL_ROWS, values, np.nan, seed
                )
            )
    for other, label in (("student_baseline", "baseline"), ("control", "control")):
        if ("stamped", other) in side_values:
            difference = side_values["stamped", "student"] - side_values["stamped", other]
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: stamped, student - {label}", "student", MODEL_ROWS, difference, 0.0, seed
                )
            )
    return found


def _inherited_attribution_rows(store: ScoreFile, models: Sequence[str], variant: str, seed: int) -> list[tuple]:
    """The known-positive control's attribution ("inherit" mode), on the field's shortcut rows of each
    replica r (stamped test images whose class is not c_r; and those the student takes for c_r): the
    student's overlap@k with its own teacher less its mean overlap with the other replicas' teachers (k: 10
    and the file's largest). The filtered rows need the students' stored predictions."""
    by_role, replicas = _replicas(models)
    if len(replicas) < 2 or any(
        variant not in store.model(by_role[r][i]).variants for r in ("teacher", "student") for i in replicas
    ):
        return []
    top = {
        (role, r): store.model(by_role[role][r]).variant_rankings(variant)[0].top_index
        for role in ("teacher", "student")
        for r in replicas
    }
    labels, stamped = store.test_labels, store.test_stamped
    found = []
    shortcut = {r: store.shortcut_of(by_role["teacher"][r]) for r in replicas}
    predictions = [store.model(by_role["student"][r]).predictions for r in replicas]
    rows = {"stamped": {r: stamped & (labels != shortcut[r]) for r in replicas}}
    if all(p is not None for p in predictions):
        rows["predicted"] = {r: rows["stamped"][r] & (p[0] == shortcut[r]) for r, p in zip(replicas, predictions)}
    depth = top["student", replicas[0]].shape[1]
    for k in sorted({min(sanity.SANITY_K, depth), depth}):
        difference = {}
        for r in replicas:
            own = statistics.overlap_at_k(top["student", r], top["teacher", r], k)
            other = np.mean(
                [statistics.overlap_at_k(top["student", r], top["teacher", o], k) for o in replicas if o != r], axis=0
            )
            difference[r] = own - other
        for which, chosen in rows.items():
            per_row = _mean_over_replicas([np.where(chosen[r], difference[r], np.nan) for r in replicas])
            found.append(
                sanity.summary_row(
                    f"{INHERITED}: own - other teacher@{k}, {which}", "student", variant, per_row, 0.0, seed
                )
            )
    return found


def _model_rows(store: ScoreFile, name: str, predicted: Optional[np.ndarray], seed: int) -> list[tuple]:
    """Checks of the model itself: its test accuracy against the majority class's share (a model near chance
    has little to explain), the loss baseline of mislabel detection, and whether it learned the planted
    shortcut (accuracy on stamped and clean test examples; stamped ones of other classes taken for the
    shortcut class)."""
    rows = []
    if predicted is not None:
        majority = np.bincount(store.test_labels).max() / len(store.test_labels)
        correct = (predicted == store.test_labels).astype(np.float64)
        rows.append(sanity.summary_row(sanity.ACCURACY, name, MODEL_ROWS, correct, float(majority), seed))
    if store.noisy.any():
        found = sanity.detection_scores(store.model(name).last_loss, store.noisy)
        rows.append(sanity.summary_row("mislabel AUC, loss baseline", name, MODEL_ROWS, found, 0.5, seed))
    shortcut = store.shortcut_of(name)
    if predicted is not None and shortcut is not None:
        labels, stamped = store.test_labels, store.test_stamped
        correct = (predicted == labels).astype(np.float64)
        taken = (predicted == shortcut).astype(np.float64)
        other = labels != shortcut
        for check, values, chosen in (
            ("accuracy, clean test", correct, ~stamped),
            ("accuracy, stamped test", correct, stamped),
            ("other class taken for shortcut class, clean", taken, ~stamped & other),
            ("other class taken for shortcut class, stamped", taken, stamped & other),
        ):
            rows.append(sanity.summary_row(check, name, MODEL_ROWS, values[chosen], np.nan, seed))
    return rows


def _validation_rows(store: ScoreFile, models: Sequence[str]) -> list[tuple]:
    """LDS (own scores) and leave-top-k-out (own proponents removed) from tracin-validate, if it ran."""
    try:
        record = store.validation()
    except StoreError:
        return []
    if record.status != "complete":
        return []
    leave_out, lds = record.tables()
    rows = []
    for row in lds:
        if row["model"] == row["scores_of"] and row["model"].decode() in models:
            rows.append(
                ("LDS", row["model"], row["variant"], row["lds"], row["ci_low"], row["ci_high"], 0.0, row["n_rows"])
            )
    random = {(r["model"], r["k"]): r["mean_change"] for r in leave_out if r["condition"] == RANDOM.encode()}
    for row in leave_out:
        if row["condition"] == OWN.encode() and row["model"].decode() in models:
            chance = random.get((row["model"], row["k"]), np.nan)  # removing k random examples moves the margin too
            rows.append(
                (
                    f"leave-top-{row['k']}-out margin change (lower)",
                    row["model"],
                    row["variant"],
                    row["mean_change"],
                    row["ci_low"],
                    row["ci_high"],
                    chance,
                    row["n_rows"],
                )
            )
    return rows


# --- files ------------------------------------------------------------------------------------------------


def write_quality_files(path: Path, table: np.ndarray, said: Sequence[str] = ()) -> Path:
    """quality_report.md (the table and the verdicts `said`) beside the score file and
    plots/quality_report.png; returns the Markdown's path."""
    markdown = report_path(path, "quality_report.md")
    refuse_links(
        (markdown, report_path(path, "plots"), report_path(path, "plots") / "quality_report.png"), "the report"
    )
    text = (
        quality_report_markdown(table, groups=True) + "".join(f"\n- {line}" for line in said) + ("\n" if said else "")
    )
    write_atomic(markdown, lambda handle: handle.write(text.encode()))
    figure = plot_quality_report(table, said)
    plots = report_path(path, "plots")
    plots.mkdir(exist_ok=True)
    write_atomic(plots / "quality_report.png", lambda handle: figure.savefig(handle, format="png", dpi=110))
    plt.close(figure)
    return markdown
