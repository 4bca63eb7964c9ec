"""tracin-train: train the models a run asks for, replica by replica, in the order teacher -> student ->
student_baseline, into one run folder (run.json, data.json, a folder of checkpoints per model).

    check the run folder (links, an interrupted --overwrite) and take its lock
    load the data, check the schedule
    create or continue run.json and data.json (a resume must match the run's configuration)
    each model: tracin.training.trainer (fit, checkpoints every save_every epochs, exact resume)
    the run's summary: per-class accuracy and every model's curves
"""

from __future__ import annotations

import csv
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Sequence

from tracin import faults
from tracin.config import ROLES, DataConfig, TrainConfig, model_name
from tracin.errors import CheckpointError, TracinError
from tracin.files import (
    check_folder,
    command_locks,
    refuse_link,
    refuse_links_under,
    remove_stale_temporaries_under,
    write_json_atomic,
)
from tracin.options import RunOptions
from tracin.runtime import Runtime, start_runtime
from tracin.training.batches import steps_per_epoch, to_device
from tracin.training.checkpoints import load_model, sha256_file
from tracin.training.data import RunData, load_data
from tracin.training.losses import check_kd_loss
from tracin.training.models import check_fits, count_parameters
from tracin.training.optimization import check_schedule
from tracin.training.plots import plot_overlaid_history, plot_per_class
from tracin.training.records import data_record, fingerprint
from tracin.training.roles import model_configs, needs_teacher, teacher_path, train_role
from tracin.training.run_folder import (
    RunPaths,
    check_saved_by_its_run,
    clear_run,
    finish_replacement,
    made_by_tracin,
    new_record,
    open_record,
    read_record,
    replaced_path,
    restore_replaced,
)
from tracin.training.tables import write_csv
from tracin.training.trainer import RunContext, blank_model


def check_teacher_available(options: RunOptions, paths: RunPaths, config: TrainConfig) -> None:
    """Fail before any work when a student needs a teacher that neither exists nor is trained now."""
    if options.teacher:  # built, so that a factory not allowed is refused before run.json is written (round 41, X13)
        load_model(options.teacher, role="teacher")
        return
    if not any(needs_teacher(role, config) for role in options.models) or "teacher" in options.models:
        return
    for replica in range(options.replicas):
        final = teacher_path(options, paths, config, replica)
        if not final.is_file() or options.overwrite:
            raise CheckpointError(
                f"the student needs a teacher and {final} does not exist: train the teacher in this run "
                "(--models teacher ...) or give a teacher checkpoint with --teacher PATH"
            )


def check_teacher_wanted(options: RunOptions, config: TrainConfig) -> list[str]:
    """A --teacher beside --models teacher, which trains the run's own, is refused; one no model trained now
    distils or starts from (a sweep's --distill none student) draws a note (round 41, Q01: both went without a
    word). Returns the notes."""
    if not options.teacher:
        return []
    models = ",".join(options.models)
    if "teacher" in options.models:
        raise TracinError(
            f"--teacher replaces the run's own teacher, and --models {models} trains it: leave teacher out of "
            "--models, or --teacher out to distil from the teacher this run trains"
        )
    if any(needs_teacher(role, config) for role in options.models):
        return []
    return [
        f"note: --teacher {options.teacher} is read by no model of --models {models} (a student distils from it "
        "with --distill teacher and starts from it with --student-init teacher); it is recorded, not used"
    ]


def check_teachers_as_saved(options: RunOptions, paths: RunPaths, config: TrainConfig) -> list[str]:
    """The teacher each student distils from, checked against its run's record before any work
    (check_saved_by_its_run): --teacher, or the run's own teacher of each replica that this command does not
    train, done or left out of --models (rounds 40, 42: one edited in place trained `--models student` without
    a word); one this command trains is its own. Returns the notes of a teacher not finished."""
    if options.teacher:
        return check_saved_by_its_run(Path(options.teacher), "--teacher")
    if options.overwrite or not paths.run_json.is_file() or not any(needs_teacher(r, config) for r in options.models):
        return []
    record, notes = read_record(paths), []
    for replica in range(options.replicas):
        name = model_name("teacher", replica)
        trained_now = "teacher" in options.models and record["models"].get(name, {}).get("status") != "done"
        if not trained_now:  # round 42, T09: one not done, left out of --models, was read unchecked
            final = teacher_path(options, paths, config, replica)
            notes += check_saved_by_its_run(final, f"{name}, the students' teacher,")
    return notes


def run_configs(config: TrainConfig, data_config: DataConfig, options: RunOptions, data_fingerprint: dict) -> dict:
    """What identifies a run; a resume must match it (run.json keys)."""
    teacher = None
    if options.teacher:
        teacher = {"path": os.path.abspath(options.teacher), "sha256": sha256_file(options.teacher)}
    return {
        "config": config.to_dict(),
        "data_config": data_config.to_dict(),
        "data_fingerprint": data_fingerprint,
        "teacher_checkpoint": teacher,
    }


def open_run(
    config: TrainConfig, data_config: DataConfig, options: RunOptions, data: RunData, runtime: Runtime
) -> RunContext:
    """Check the run folder (every rank reads it before rank 0 changes it), then create or continue
    run.json and data.json."""
    paths = RunPaths(Path(options.out_root) / options.run)
    check_teacher_available(options, paths, config)
    data_fingerprint = fingerprint(data, data_config)
    configs = run_configs(config, data_config, options, data_fingerprint)
    record = open_record(paths, options.resume, options.overwrite, configs)
    runtime.barrier()
    invocation = {
        "argv": list(options.command),
        "world_size": runtime.world_size,
        "device": str(runtime.device),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    if record is None:
        architectures = model_configs(config, data)
        counts = {role: count_parameters(blank_model(c)) for role, c in architectures.items()}
        record = new_record(invocation, configs, {r: c.to_dict() for r, c in architectures.items()}, counts)
        if runtime.is_main:
            clear_run(paths)
            write_json_atomic(data_record(data), paths.data_json)
    else:
        record["invocations"].append(invocation)
        data_fingerprint = record["data_fingerprint"]  # checked equal; a resumed run keeps its own
    if runtime.is_main:
        write_json_atomic(record, paths.run_json)
    runtime.barrier()
    return RunContext(paths, config, data_config, to_device(data, runtime.device), data_fingerprint, runtime, record)


def train_run(config: TrainConfig, data_config: DataConfig, options: RunOptions) -> RunPaths:
    """Train the models of `options.models`, in the order teacher -> student -> student_baseline."""
    check_kd_loss(config.kd_loss)  # before anything is trained: the students train with it last
    unknown = set(options.models) - set(ROLES)
    if unknown:
        raise TracinError(f"unknown models {', '.join(sorted(unknown))}; choose from {', '.join(ROLES)}")
    unused = check_teacher_wanted(options, config)
    paths = RunPaths(Path(options.out_root) / options.run)
    for path in (paths.root, replaced_path(paths)):  # --overwrite moves and removes these: never a link's target
        refuse_link(path, "the run folder")
    with (
        start_runtime(options.device, options.quiet) as runtime,
        command_locks(paths.root, writes_run=True, main=runtime.is_main),
    ):
        check_replacement(paths, options)
        if paths.root.is_dir() and not options.overwrite:  # what a resume appends to or writes beside
            refuse_links_under(paths.root, "in the run folder,")
            for name in (model_name(role, r) for r in range(options.replicas) for role in options.models):
                check_folder(paths.model_dir(name), f"the checkpoints of {name}")
        if runtime.is_main and paths.root.is_dir() and made_by_tracin(paths):
            for stale in remove_stale_temporaries_under(paths.root):
                runtime.log(f"removed {stale}, left by an interrupted write")
        # the configuration is compared before the data load (round 26, T3: resuming with another data set
        # failed on loading it, naming the data root rather than the mismatch); the data and teacher after it
        notes = unused + check_teachers_as_saved(
            options, paths, config
        )  # before a resume's "other settings" (round 39, S05)
        for note in notes if runtime.is_main else ():
            print(note, flush=True)
        known = {"config": config.to_dict(), "data_config": data_config.to_dict()}
        open_record(paths, options.resume, options.overwrite, known)
        data = load_data(data_config)
        faults.reach("data")
        check_schedule(config, steps_per_epoch(len(data.train), config.batch_size, runtime.world_size))
        check_fits(model_configs(config, data).values(), runtime.device)
        try:
            run = open_run(config, data_config, options, data, runtime)
            train_models(run, options)
            if runtime.is_main:
                write_run_summary(run.paths, data.test.classes)
        except BaseException:  # a mistake, a crash or Ctrl-C: the replaced run comes back as it was
            if options.overwrite and runtime.is_main and restore_replaced(paths):
                runtime.log(f"the run this one was to replace is back in {paths.root}, as it was")
            raise
        if runtime.is_main and options.overwrite:
            finish_replacement(paths)
    return paths


def write_run_summary(paths: RunPaths, classes: Sequence[str]) -> None:
    """Across the run's finished models: per_class.csv (each class's test accuracy per model),
    per_class.png and curves.png (every model's test accuracy and loss per epoch, overlaid)."""
    models = [
        name
        for name, entry in (read_record(paths) or {}).get("models", {}).items()
        if entry.get("status") == "done" and paths.per_class(name).is_file() and paths.history(name).is_file()
    ]
    if not models:
        return
    accuracy = {
        name: {row["class"]: float(row["accuracy"]) for row in _read_csv(paths.per_class(name))} for name in models
    }
    rows = [{"class": name, **{model: accuracy[model].get(name, math.nan) for model in models}} for name in classes]
    write_csv(rows, paths.root / "per_class.csv")
    plot_per_class(accuracy, classes, paths.root / "per_class.png", f"{paths.root.name}: test accuracy per class")
    histories = {name: _read_csv(paths.history(name)) for name in models}
    plot_overlaid_history(histories, paths.root / "curves.png", f"{paths.root.name}: test curves of every model")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_replacement(paths: RunPaths, options: RunOptions) -> None:
    """An interrupted --overwrite left the run it replaces in .NAME.replaced: only --overwrite goes on
    from there (finishing the replacement), so that no other command can lose either run."""
    if replaced_path(paths).exists() and not options.overwrite:
        raise TracinError(
            f"{replaced_path(paths)} holds the run an interrupted --overwrite of {paths.root} is replacing: "
            "rerun with --overwrite to finish the replacement, or move either folder away yourself"
        )


def train_models(run: RunContext, options: RunOptions) -> None:
    """Every replica's models, replica by replica, each in the order teacher -> student -> student_baseline."""
    for role, count in run.record["param_counts"].items():
        run.runtime.log(f"{role}: {count:,} parameters")
    for replica in range(options.replicas):
        for role in ROLES:
            if role in options.models:
                train_role(role, replica, run, options)
