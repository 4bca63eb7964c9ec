"""tracin-validate: retrain without the examples the scores credit, and see whether the predictions move.

    open the run and its finished score file (the scores of every train example), check the data
    plan the units: per model, the zero line, each sampled test row's removals, the LDS subsets
    for each unit not done yet: retrain through tracin-train's own code path (trainer.retrain) on the
        kept train examples -> margins of every scored test example -> /validation (marked done)
    leave-top-k-out and LDS tables -> /validation, printed, validation.md and plots/validation.png

Each retraining is one unit, recorded when finished: a killed run continues where it stopped, and the
finished tables equal an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from tracin import faults
from tracin.config import VALIDATION_SEED_STRIDE, ModelConfig, TrainConfig, ensemble_name, model_name, split_model_name
from tracin.engine.topk import Ranking
from tracin.errors import CheckpointError, TracinError
from tracin.files import (
    check_own,
    command_locks,
    refuse_links,
    remove_stale_temporaries,
    report_path,
    write_own_figure,
    write_own_markdown,
)
from tracin.options import ValidateOptions
from tracin.results import validation
from tracin.results.figures import plot_validation
from tracin.results.markdown import validation_markdown
from tracin.results.runs import (
    TrainedRun,
    check_score_file_there,
    check_scored_checkpoints,
    checked_data,
    describe_salvage,
    open_trained_run,
    positions_in,
    unfinished_notes,
)
from tracin.results.store import VALIDATION, ScoreFile, ValidationRecord, salvage_own_damage
from tracin.results.store.checks import check_finished, replacement_notes, validation_status_problem
from tracin.results.store.tables import QUALITY_REPORT, RANDOMIZATION
from tracin.results.validation import (
    BASELINE,
    LDS_CONDITION,
    NONE,
    OWN,
    RANDOM,
    TEACHER,
    Plan,
    conditions_for,
    format_validation,
)
from tracin.runtime import Runtime, machine, start_runtime
from tracin.training.batches import split_to_device, steps_per_epoch
from tracin.training.checkpoints import (
    VERSION,
    check_recorded_architecture,
    check_trained_config,
    load_checkpoint,
    load_model,
    sha256_file,
)
from tracin.training.data import RunData, Split
from tracin.training.optimization import check_schedule
from tracin.training.records import check_saved_digest
from tracin.training.roles import replica_run
from tracin.training.trainer import ModelJob, RunContext, freeze, logit_margins, retrain

SEED_STRIDE = VALIDATION_SEED_STRIDE
SOURCES = {OWN: None, TEACHER: "teacher", BASELINE: "student_baseline"}  # whose proponents a condition removes


# --- what is retrained ----------------------------------------------------------------------------


def make_plan(options: ValidateOptions, store: ScoreFile) -> Plan:
    """The units of the validation, checked against the score file: its models and their variants'
    rankings (default: the file's first variant), k, the test rows."""
    missing = [m for m in options.models if m not in store.models]
    if missing:
        raise TracinError(
            f"{store.path} has no scores of {', '.join(missing)} (it has {', '.join(store.models)}); "
            "score them with tracin-score first"
        )
    if options.k > store.n_train // 2:
        raise TracinError(f"--k {options.k} removes more than half of the {store.n_train} train examples")
    if options.test_examples > store.n_test:
        raise TracinError(
            f"--test-examples {options.test_examples} is more than the {store.n_test} scored test examples"
        )
    k_stored = store.model(options.models[0]).rankings()[0].top_index.shape[1]
    if options.test_examples and options.k > k_stored:
        raise TracinError(
            f"--k {options.k} is larger than the score file's top-k tables ({k_stored}); "
            f"score again with a larger --topk, or lower --k"
        )
    conditions = {m: _available(m, options.conditions, store) for m in options.models}
    if options.test_examples and not any(conditions.values()):  # red-team P10: leave-out skipped without a word
        raise TracinError(
            f"--conditions {','.join(options.conditions)} apply to none of {', '.join(options.models)} (own, random "
            "and opponents apply to every model, teacher and baseline to students); for LDS alone give "
            "--test-examples 0"
        )
    sources = {_source(c, m) for m, found in conditions.items() for c in found} | set(options.models)
    variants = options.variants or (store.model(options.models[0]).variants[0],)
    for variant in variants:
        lacking = [s for s in sorted(sources) if variant not in store.model(s).variants]
        if lacking:
            raise TracinError(
                f"--variants {variant!r}: {', '.join(lacking)} holds no such scores in {store.path} "
                f"(it has {', '.join(store.model(lacking[0]).variants)})"
            )
    rows = validation.sampled_test_rows(store.n_test, options.test_examples, options.seed)
    plan = Plan(
        tuple(options.models),
        rows if options.test_examples else (),
        options.k,
        conditions,
        tuple(variants),
        options.subsets,
        options.fraction,
        options.seeds,
        options.seed,
    )
    if len(plan.units()) == 0:
        raise TracinError(
            "nothing to retrain: no leave-out condition applies (--test-examples, --conditions) and --subsets is 0"
        )
    return plan


def _available(model: str, asked: tuple[str, ...], store: ScoreFile) -> tuple[str, ...]:
    """The asked conditions that apply to the model and whose rankings the file holds (said, not hidden)."""
    kept = []
    for condition in conditions_for(split_model_name(model)[0], asked):
        source = _source(condition, model)
        if source in store.models:
            kept.append(condition)
        else:
            print(f"{model}: no {source} scores in {store.path}: condition {condition!r} left out", flush=True)
    return tuple(kept)


def _source(condition: str, model: str) -> str:
    """The model whose ranking a condition removes from (its own for own, opponents and random)."""
    role = SOURCES.get(condition)
    return model if role is None else model_name(role, split_model_name(model)[1])


def removed_positions(plan: Plan, unit: np.void, store: ScoreFile, rankings: Optional[dict] = None) -> np.ndarray:
    """int64 [k]: the train positions a leave-top-k-out unit leaves out (none for the zero line), by the
    rankings of the unit's variant (read once per model and variant into `rankings` when given)."""
    condition = unit["condition"].decode()
    if condition == NONE:
        return np.zeros(0, dtype=np.int64)
    model, row = unit["model"].decode(), int(unit["test_row"])
    if condition == RANDOM:
        return validation.random_removal(store.n_train, plan.k, row, plan.seed)
    key = (_source(condition, model), unit["variant"].decode())
    cache = {} if rankings is None else rankings
    if key not in cache:
        cache[key] = store.model(key[0]).variant_rankings(key[1])[0]
    test = cache[key]
    return validation.removal_positions(
        condition, row, plan.k, store.n_train, test.top_index, test.bottom_index, plan.seed
    )


# --- one retraining ---------------------------------------------------------------------------------


@dataclass
class Trainer:
    """What retrains one model: its job (initial weights from init.pt, teacher) and its run as trained,
    with the run's data on the CPU (each unit cuts its train examples from it and moves them to the device)."""

    job: ModelJob
    run: RunContext


def make_trainer(name: str, run: TrainedRun, data: RunData, runtime: Runtime, epochs: Optional[int]) -> Trainer:
    """The model's retraining set-up, from its run folder: configuration (its replica's seed), its own
    init.pt and, for a distilled student, the teacher it was trained with (sha256-checked)."""
    role, replica = split_model_name(name)
    config = TrainConfig.from_dict(run.record["config"])
    context = RunContext(run.paths, config, run.data_config, data, run.record["data_fingerprint"], runtime, run.record)
    context = replica_run(context, replica)
    trained = context.config  # what its checkpoints record (checked below), before --epochs shortens it
    if epochs is not None:
        if epochs <= config.warmup_epochs:  # named by the option given, not by the config's field (round 8: S5)
            raise TracinError(
                f"--epochs {epochs} leaves no epoch after the run's warm-up ({config.warmup_epochs:g} epochs of rising "
                f"learning rate): give --epochs {math.floor(config.warmup_epochs) + 1} or more"
            )
        if epochs > config.epochs:  # round 14, V11: a longer schedule than the run's was retrained without a word
            raise TracinError(
                f"--epochs {epochs} is more than the run's {config.epochs}: retraining shortens its schedule, "
                f"never lengthens it; give --epochs {config.epochs} or fewer"
            )
        context = replace(context, config=replace(context.config, epochs=epochs))
    init = load_checkpoint(run.paths.init(name), role=role)
    field = f"{run.paths.run_json}'s models/{name}/sha256"  # round 18, C18: an init.pt edited in range was retrained
    check_saved_digest(
        run.paths.init(name), run.record["models"][name].get("sha256"), field, init.get("version", VERSION)
    )
    check_trained_config(run.paths.init(name), init, trained)  # run.json's settings are what it trained with
    model_config = ModelConfig.from_dict(init["model_config"])
    check_recorded_architecture(run.paths.init(name), model_config, role, run.record["model_configs"].get(role))
    teacher_info = init.get("teacher")
    teacher = _teacher(teacher_info, run, replica, runtime) if isinstance(teacher_info, dict) else None
    job = ModelJob(role, name, model_config, init["model"], teacher, teacher_info == "self", teacher_info)
    return Trainer(job, context)


def _teacher(info: dict, run: TrainedRun, replica: int, runtime: Runtime) -> torch.nn.Module:
    """The teacher a student was distilled from: the recorded file, or the run's own teacher of that
    replica when the run folder moved; either must have the recorded sha256."""
    config = TrainConfig.from_dict(run.record["config"])
    for path in (Path(info["path"]), run.paths.checkpoint(model_name("teacher", replica), config.epochs)):
        if path.is_file() and sha256_file(path) == info.get("sha256"):
            module = load_model(path, role="teacher")[0]
            return freeze(module.to(runtime.device, memory_format=runtime.memory_format))
    raise CheckpointError(
        f"the teacher {info['path']} the student was distilled from is missing or changed (sha256 "
        "differs); retraining the student needs that teacher"
    )


def unit_margins(trainer: Trainer, unit: np.void, keep: np.ndarray, test: Split) -> np.ndarray:
    """float32 [n_test]: the margins on the scored test examples (`test`) of the model
    retrained on the kept train positions, with the unit's seed."""
    seed = trainer.run.config.seed + int(unit["seed"]) * SEED_STRIDE
    train = split_to_device(
        trainer.run.data.train_of(trainer.job.name).subset(torch.from_numpy(keep)), trainer.run.runtime.device
    )
    data = RunData(train, trainer.run.data.test)  # the test split is not used by retraining
    run = replace(trainer.run, data=data, config=replace(trainer.run.config, seed=seed))
    model = retrain(trainer.job, run)
    return logit_margins(model, test, run.runtime).numpy()


# --- the whole command ----------------------------------------------------------------------------------


def validate_run(options: ValidateOptions) -> Path:
    """Retrain every unit of the plan not yet done (resumable; under torchrun the units are dealt to the
    ranks and rank 0 writes), then write the tables; returns the score file, which holds them."""
    run = open_trained_run(options.run, options.data_root)
    path = Path(options.scores) if options.scores else run.paths.root / "tracin.h5"
    check_score_file_there(path)
    with (
        start_runtime(options.device, options.quiet) as runtime,
        command_locks(run.paths.root, path, main=runtime.is_main),
    ):
        salvaged = salvage_own_damage(path, (VALIDATION,)) if runtime.is_main else None
        if salvaged is not None:
            print(describe_salvage(path, salvaged), flush=True)
        outputs = (report_path(path, "validation.md"), report_path(path, "plots") / "validation.png")
        refuse_links((outputs[0], outputs[1].parent, outputs[1]), "the report")  # before any retraining
        check_own(outputs)  # round 17, R3
        for stale in (s for output in outputs if runtime.is_main for s in remove_stale_temporaries(output)):
            print(f"removed {stale}, left by an interrupted write", flush=True)  # the score file's lock is held
        data = checked_data(run)
        store = ScoreFile.open_read_write(path) if runtime.is_main else None
        with store or contextlib.nullcontext():  # after a full disk the file is left as a kill leaves it, not closed
            work = _plan_everywhere(store, options, run, data, runtime)
            written = 0
            for done in runtime.gathered(retrain_units(work, run, data, runtime, options), work.steps(runtime)):
                if runtime.is_main and done is not None:
                    store.validation().write_unit(*done)
                    faults.reach("validate-unit")
                    written += 1
                    runtime.log(
                        f"retrained {written}/{len(work.todo)}: {describe(work.units[done[0]])} ({done[2]:.0f} s)"
                    )
            if runtime.is_main:
                tables = finish(store, work)
        if runtime.is_main:
            notes = unfinished_notes(run, options.models)  # in the record too (round 27, U05)
            print(f"validation: {path} (/validation), {write_validation_report(path, *tables, notes)}", flush=True)
    return path


def describe(unit: np.void) -> str:
    """A unit in words, for the progress lines."""
    model, condition = unit["model"].decode(), unit["condition"].decode()
    if condition == LDS_CONDITION:
        return f"{model} on LDS subset {unit['subset']}"
    if condition == NONE:
        return f"{model}, nothing removed (seed {unit['seed']})"
    by = f" by {unit['variant'].decode()}" if unit["variant"] else ""
    return f"{model} without {condition}{by} of test row {unit['test_row']} (seed {unit['seed']})"


@dataclass
class Work:
    """What rank 0 planned, for every rank: the plan, the units, which are left to do, the train positions
    each left leave-out unit removes (cut from the score file's rankings, which only rank 0 reads), and the
    file's train count and scored test examples (indices into the data set)."""

    plan: Plan
    units: np.ndarray
    todo: list[int]
    removed: dict[int, np.ndarray]
    n_train: int
    test_index: np.ndarray

    def steps(self, runtime: Runtime) -> int:
        """Gathers needed: the most units any rank retrains."""
        return -(-len(self.todo) // runtime.world_size)

    def assigned(self, runtime: Runtime) -> list[int]:
        """This rank's units, dealt round-robin."""
        return self.todo[runtime.rank :: runtime.world_size]

    def kept(self, index: int) -> np.ndarray:
        """int64 [n_kept]: the train positions a unit trains on (an LDS subset, or all but the removed)."""
        unit = self.units[index]
        if unit["condition"].decode() == LDS_CONDITION:
            masks = validation.subset_masks(self.n_train, self.plan.subsets, self.plan.fraction, self.plan.seed)
            return np.flatnonzero(masks[int(unit["subset"])])
        return np.setdiff1d(np.arange(self.n_train), self.removed[index])


def plan_work(store: ScoreFile, options: ValidateOptions, run: TrainedRun, data: RunData, runtime: Runtime) -> Work:
    """Rank 0: check the file and that every model can be retrained, plan the units (or resume the file's
    plan, a new one only now replacing it) and find what each unit removes."""
    if store.drop_changed((VALIDATION,)):  # a full disk while writing it (round 11, F3)
        print(f"{store.path}: /validation changed since written (a full disk?): made again", flush=True)
    problem = validation_status_problem(store)
    if problem is not None:  # prepare_validation makes it again (round 32, B04, B07, B10: without a word)
        print(f"note: {problem}: made again, keeping its finished retrainings", flush=True)
    # tracin-report's tables, made again by it after this, and /validation, which prepare_validation makes
    # again (keeping its finished units) where it does not read as written (its status, say: round 32, B11)
    check_finished(store, unread=(RANDOMIZATION, QUALITY_REPORT, VALIDATION))
    check_scored_checkpoints(store, run)
    for note in (*unfinished_notes(run, options.models), *replacement_notes(store.path)):  # round 26, RJ12; 28, B3
        print(note, flush=True)
    _check_whole_train_set(store, data)
    plan = make_plan(options, store)
    _check_retrainable(plan, run, data, runtime, options)
    record = store.prepare_validation(plan.units(), _settings(options, plan, run, store, runtime), options.overwrite)
    units, done = record.units, record.done
    if record.redone:  # round 34, KVE1, KVE2: sealed into the tables without a word
        print(
            f"note: {store.path}: /validation: {len(record.redone)} finished retraining(s) no longer hold what "
            "tracin-validate wrote (the file was edited or damaged on disk, or written by a tracin before "
            "retrainings carried digests): made again",
            flush=True,
        )
    if record.discarded:  # round 35, KV10, KV13: its units or a dataset edited, reshaped or retyped
        print(
            f"note: {store.path}: /validation was not as tracin-validate writes it (the file was edited, or damaged "
            f"on disk): {record.discarded} finished retraining(s) in it could not be kept: made again",
            flush=True,
        )
    todo = [i for i in range(len(units)) if not done[i]]
    if len(todo) < len(units):
        print(f"resuming: {len(units) - len(todo)} of {len(units)} retrainings done already", flush=True)
    rankings: dict[tuple[str, str], Ranking] = {}
    removed = {
        i: removed_positions(plan, units[i], store, rankings)
        for i in todo
        if units[i]["condition"] != LDS_CONDITION.encode()
    }
    return Work(plan, units, todo, removed, store.n_train, store.test_index)


def _plan_everywhere(
    store: Optional[ScoreFile], options: ValidateOptions, run: TrainedRun, data: RunData, runtime: Runtime
) -> Work:
    """Rank 0's plan on every rank; its refusal (a TracinError) too, so that under torchrun every rank
    stops with the same one line instead of waiting for a plan that never comes."""
    planned: Optional[Work | TracinError] = None
    if runtime.is_main:
        try:
            planned = plan_work(store, options, run, data, runtime)
        except TracinError as error:
            planned = error
    planned = runtime.broadcast_object(planned)
    if isinstance(planned, TracinError):
        raise planned
    return planned


def _check_retrainable(plan: Plan, run: TrainedRun, data: RunData, runtime: Runtime, options: ValidateOptions) -> None:
    """Before the file changes: every model's init.pt and teacher load, and the schedule fits the
    smallest train set a unit keeps."""
    kept = [(len(data.train) - plan.k, "--k")] * bool(plan.test_rows)
    kept += [(round(plan.fraction * len(data.train)), "--fraction")] * bool(plan.subsets)
    smallest, option = min(kept)  # a plan retrains something (make_plan refuses one that does not)
    for name in plan.models:
        trainer = make_trainer(name, run, data, runtime, options.epochs)
        config = trainer.run.config
        remedy = (  # round 30, V1: in this command's options, not tracin-train's
            f"{name} is retrained on {smallest} examples (its --batch-size {config.batch_size} from the run); "
            f"give another {option}, so that a model keeps another number of examples"
        )
        check_schedule(config, steps_per_epoch(smallest, config.batch_size), remedy)


def retrain_units(work: Work, run: TrainedRun, data: RunData, runtime: Runtime, options: ValidateOptions):
    """(unit, float32 [n_test] margins, seconds) of this rank's units, one after another: each rank
    trains alone (a one-process runtime), on its own device."""
    alone = replace(runtime, rank=0, world_size=1)
    test = data.test.subset(torch.from_numpy(positions_in(work.test_index, data.test.index.numpy())))
    trainers: dict[str, Trainer] = {}
    with tqdm(total=len(work.todo), desc="retraining", unit="model", disable=runtime.progress_disabled) as bar:
        for i in work.assigned(runtime):
            name = work.units[i]["model"].decode()
            if name not in trainers:
                trainers[name] = make_trainer(name, run, data, alone, options.epochs)
            started = time.perf_counter()
            margins = unit_margins(trainers[name], work.units[i], work.kept(i), test)
            bar.update(runtime.world_size)
            yield i, margins, time.perf_counter() - started


def finish(store: ScoreFile, work: Work) -> tuple[np.ndarray, np.ndarray]:
    """Rank 0: the tables from every unit's margins, written with where they were made, and printed."""
    record = store.validation()
    tables = validation_tables(work.plan, record, store)
    record.write_tables(
        *tables,
        {
            "machine": machine(),
            "finished": datetime.now().isoformat(timespec="seconds"),
            "retraining_seconds": round(float(record.seconds.sum()), 1),
        },
    )
    print(format_validation(*tables), flush=True)
    return tables


def _check_whole_train_set(store: ScoreFile, data: RunData) -> None:
    """Leave-out and LDS retrain on the whole train set: the file must score every train example of the
    run in its order (not a --train-subset)."""
    if not np.array_equal(store.train_index, data.train.index.numpy()):
        raise TracinError(
            f"{store.path} scores {store.n_train} of the run's {len(data.train)} train examples (--train-subset?); "
            "validation retrains on the whole train set: score every train example"
        )


def _settings(options: ValidateOptions, plan: Plan, run: TrainedRun, store: ScoreFile, runtime: Runtime) -> dict:
    """What the units' margins depend on: a resumed validation must match it (the scores and checkpoints
    through the score file's own settings, the numerics through the device type)."""
    return {
        "plan": asdict(plan),
        "epochs": options.epochs,
        "run_data": run.record["data_fingerprint"]["digest"],
        "device": runtime.device.type,
        "scores": hashlib.sha256(store.attributes["settings"].encode()).hexdigest()[:16],
    }


# --- the tables ---------------------------------------------------------------------------------------------


def validation_tables(plan: Plan, record: ValidationRecord, store: ScoreFile) -> tuple[np.ndarray, np.ndarray]:
    """(LEAVE_OUT_DTYPE rows, LDS_DTYPE rows) from the finished units' margins."""
    return leave_out_table(plan, record), lds_table(plan, record, store)


def leave_out_table(plan: Plan, record: ValidationRecord) -> np.ndarray:
    """Per model, condition and variant: the margin change of each sampled test row (each seed against the
    zero line of the same seed), its mean with a bootstrap CI, and the share flipped from right to wrong.
    Empty without sampled test rows."""
    units, margins = record.units, record.margins
    rows = []
    for model in plan.models if plan.test_rows else ():
        mine = units["model"] == model.encode()
        zero = {int(u["seed"]): margins[i] for i, u in enumerate(units) if mine[i] and u["condition"] == NONE.encode()}
        for condition in plan.conditions[model]:
            for variant in plan.variants_of(condition):
                picked = np.flatnonzero(
                    mine & (units["condition"] == condition.encode()) & (units["variant"] == variant.encode())
                )
                after = np.array([margins[i][units[i]["test_row"]] for i in picked])
                before = np.array([zero[int(units[i]["seed"])][units[i]["test_row"]] for i in picked])
                changes = validation.margin_changes(after, before)
                rows.append(
                    validation.leave_out_row(
                        model, condition, variant, plan.k, changes, before, plan.seed, units[picked]["test_row"]
                    )
                )
    return np.array(rows, dtype=validation.LEAVE_OUT_DTYPE)


def lds_sources(model: str, scored: list[str]) -> list[str]:
    """Whose scores predict a retrained model's subset margins: its own, its role's replica ensemble's,
    and for a student its teacher's (the counterfactual form of "does the student lean on the teacher's
    data?") and the teacher ensemble's, each where the file holds them."""
    role, replica = split_model_name(model)
    candidates = [model, ensemble_name(role)]
    if role != "teacher":
        candidates += [model_name("teacher", replica), ensemble_name("teacher")]
    return [name for name in candidates if name in scored]


def lds_table(plan: Plan, record: ValidationRecord, store: ScoreFile) -> np.ndarray:
    """Per retrained model, each score source (lds_sources) and variant: the LDS over the model's
    subsets, mean over test examples with a normal CI over subsets and test examples (lds_interval)."""
    if plan.subsets == 0:
        return np.zeros(0, dtype=validation.LDS_DTYPE)
    units, margins = record.units, record.margins
    masks = validation.subset_masks(store.n_train, plan.subsets, plan.fraction, plan.seed)
    rows = []
    for model in plan.models:
        picked = [
            i for i, u in enumerate(units) if u["model"] == model.encode() and u["condition"] == LDS_CONDITION.encode()
        ]
        subset_margins = np.stack([margins[i] for i in picked])
        for source in lds_sources(model, store.models):
            for variant in store.model(source).variants:
                scores = store.model(source).matrix(variant=variant)[()]
                per_row = validation.linear_datamodeling_score(scores, masks, subset_margins)
                low, high = validation.lds_interval(scores, masks, subset_margins)
                rows.append(
                    (
                        model,
                        source,
                        variant,
                        float(np.nanmean(per_row)),
                        low,
                        high,
                        int(np.isfinite(per_row).sum()),
                        plan.subsets,
                    )
                )
    return np.array(rows, dtype=validation.LDS_DTYPE)


def write_validation_report(path: Path, leave_out: np.ndarray, lds: np.ndarray, notes: Sequence[str] = ()) -> Path:
    """validation.md (with `notes`, each a line said under its title) beside the score file and
    plots/validation.png; returns the Markdown's path."""
    markdown = report_path(path, "validation.md")
    refuse_links((markdown, report_path(path, "plots"), report_path(path, "plots") / "validation.png"), "the report")
    write_own_markdown(markdown, validation_markdown(leave_out, lds, notes))
    figure = plot_validation(leave_out, lds)
    plots = report_path(path, "plots")
    plots.mkdir(exist_ok=True)
    write_own_figure(plots / "validation.png", figure, dpi=110)
    plt.close(figure)
    return markdown
