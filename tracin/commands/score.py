"""tracin-score: TracIn of a trained run's models into one resumable HDF5 file, then the comparison.

    open the run (run.json, data.json) and its data, check the data fingerprint
    for each model: load and check its checkpoints -> TracIn -> score blocks -> HDF5 (skipping done blocks)
                    -> top-k tables (sum, and per epoch with --per-checkpoint)
    for each pair of models: comparison tables -> /comparison, printed

Under torchrun the train-row chunks are dealt round-robin to the ranks; rank 0 gathers the blocks and
alone writes the file, which therefore equals a single-process result.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from tracin import faults
from tracin.config import (
    ENSEMBLE_SUFFIX,
    ROLES,
    ensemble_name,
    model_name,
    parse_topk,
    replicas_by_role,
)
from tracin.engine.blocks import MemoryPlan, free_memory, work_factor
from tracin.engine.tracin import ScoreBlock, TracIn
from tracin.errors import CheckpointError, DataError, OverwriteNeeded, SelectionError, TracinError
from tracin.files import check_own, command_locks, refuse_link, remove_stale_temporaries, report_path
from tracin.options import ScoreOptions
from tracin.results.agreement import agreement_table, format_agreement, format_agreement_by_depth, of_layer_groups
from tracin.results.comparison import CompareOptions, compare_models, format_tables
from tracin.results.detection import detection_rows, format_detection, mislabel_curves
from tracin.results.grids import example_rows
from tracin.results.quality import QUALITY_DTYPE, format_quality, quality_row
from tracin.results.report_folder import write_report
from tracin.results.runs import (
    TrainedRun,
    checked_data,
    describe_salvage,
    left_out_notes,
    load_role_checkpoints,
    open_trained_run,
    own_teachers,
    scoring_loss,
    trained_replicas,
    unfinished_note,
)
from tracin.results.store import (
    SELF_INFLUENCES,
    DataArrays,
    ModelScores,
    ScoreFile,
    rank_matrix,
    rankings_name,
    replacing_path,
    to_numpy,
)
from tracin.results.store.checks import check_finished, replacement_notes
from tracin.results.store.score_settings import CHECKPOINTS_SETTING
from tracin.runtime import Runtime, start_runtime
from tracin.training.checkpoints import Checkpoint
from tracin.training.data import RunData, stratified_subset
from tracin.training.models import build_model


def model_names(run: TrainedRun, options: ScoreOptions) -> tuple[str, ...]:
    """The models to score, replica by replica: each role of --models with its trained replicas (all, or
    the first --replicas), and each replica --models names itself."""
    roles = [name for name in options.models if name in ROLES]
    counts = {role: trained_replicas(run, role) for role in roles}
    if options.replicas is not None:
        short = [f"{role} ({count})" for role, count in counts.items() if count < options.replicas]
        if short:
            raise TracinError(
                f"--replicas {options.replicas}: the run has fewer trained replicas of {', '.join(short)}; "
                f"train them with tracin-train --run {run.paths.root.name} --resume --replicas {options.replicas}"
            )
        counts = dict.fromkeys(roles, options.replicas)
    names = [model_name(role, r) for r in range(max(counts.values(), default=0)) for role in roles if r < counts[role]]
    return tuple(dict.fromkeys(names + [name for name in options.models if name not in ROLES]))


def scoring_data(run: TrainedRun, options: ScoreOptions) -> RunData:
    """The run's own train and test examples (fingerprint-checked), or seeded stratified subsets of them."""
    return scored_subsets(checked_data(run), options)


def scored_subsets(data: RunData, options: ScoreOptions) -> RunData:
    """A copy of `data` cut to --train-subset and --test-subset (seeded, stratified; `data` is left as it
    is); a subset larger than its set is refused (tracin-sweep asks this before any run trains: round 22,
    S14, S27)."""
    cut = {}
    for side, size in (("train", options.train_subset), ("test", options.test_subset)):
        split = getattr(data, side)
        if size is not None:
            if size > len(split):
                raise DataError(f"--{side}-subset {size} is larger than the run's {side} set ({len(split)})")
            cut[side] = split.subset(stratified_subset(split.labels, size, options.score.seed + 7))
    return replace(data, **cut)


def data_arrays(data: RunData) -> DataArrays:
    return DataArrays(
        data.train.index.numpy(),
        data.test.index.numpy(),
        data.train.labels.numpy(),
        data.test.labels.numpy(),
        data.train.clean_labels.numpy(),
        data.train.fine_labels.numpy(),
        data.test.fine_labels.numpy(),
        data.train.stamped.numpy(),
        data.test.stamped.numpy(),
    )


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()[:16]


def settings_of(options: ScoreOptions, run: TrainedRun, data: RunData, digests: dict[str, str]) -> dict:
    """Everything a partial file's scores depend on, the checkpoints' sha256 ({model: checkpoints_digest})
    included: resuming with anything else is refused (and an interrupted --overwrite with other
    checkpoints starts afresh)."""
    return {
        **{f"{role}{CHECKPOINTS_SETTING}": digest for role, digest in digests.items()},
        "run_data": run.record["data_fingerprint"]["digest"],
        "train_index": _digest(data.train.index.numpy()),
        "test_index": _digest(data.test.index.numpy()),
        "models": list(digests),
        "checkpoints": options.checkpoints,
        "batch_size": options.engine.batch_size,
        "per_checkpoint": options.per_checkpoint,
        "score.loss": options.loss,
        **({"score.test_label": options.test_label} if options.test_label != "label" else {}),  # older files resume
        **{f"score.{k}": (list(v) if isinstance(v, tuple) else v) for k, v in options.score.to_dict().items()},
    }


def file_attrs(options: ScoreOptions, run: TrainedRun, data: RunData) -> dict:
    score = options.score
    return {
        "command": options.command,
        "run": str(run.paths.root.resolve()),
        "dataset": run.data_config.dataset,
        "mode": score.mode,
        "proj_dim": score.proj_dim or 0,
        "proj_seed": score.seed,
        "layers": json.dumps(list(score.layers)),
        "loss": options.loss,
        **({"test_label": options.test_label} if options.test_label != "label" else {}),  # default files: as before
        **(
            {"shortcut_mode": "inherit", "shortcut_class": run.data_config.shortcut_class}
            if run.data_config.shortcut_mode == "inherit"
            else {}
        ),  # each teacher's shortcut class: sanity.shortcut_of
        "precision": score.precision,
        "label_noise": run.data_config.label_noise,
        "classes": json.dumps(list(data.train.classes)),
        "fine_classes": json.dumps(list(data.train.fine_classes)),
        "variants": json.dumps(
            list(score.variants)
        ),  # as asked: each model's group records its own, VARIANT@* written out
    }


# --- scoring one model --------------------------------------------------------------------------------


def build_engine(name: str, run: TrainedRun, options: ScoreOptions, runtime: Runtime) -> TracIn:
    checkpoints, config, last = load_role_checkpoints(run, name, options.checkpoints)
    engine = replace(options.engine, progress=not options.quiet and runtime.is_main)
    return TracIn(
        build_model(config),
        checkpoints,
        options.score,
        scoring_loss(name, last, options, own_teachers(run, name)),
        engine,
        runtime.device,
    )


def _payload(block: ScoreBlock) -> tuple:
    """ModelScores.write_block's arguments, in numpy."""
    others = {variant: to_numpy(values) for variant, values in list(block.by_variant.items())[1:]}
    kept = (
        block.self_influence,
        block.normalised_self_influence,
        block.group_self_influence,
        block.group_normalised_self_influence,
    )
    self_influences = {name: to_numpy(values) for name, values in zip(SELF_INFLUENCES, kept) if values is not None}
    return (
        block.row_start,
        block.col_start,
        to_numpy(block.scores),
        to_numpy(block.per_checkpoint),
        self_influences,
        others,
    )


def score_model(
    store: Optional[ScoreFile], role: str, tracin: TracIn, data: RunData, runtime: Runtime, options: ScoreOptions
) -> None:
    """Score one model's missing blocks into the file (rank 0 writes; other ranks compute their share)."""
    layout = None
    if runtime.is_main:
        plan = tracin.memory_plan(data.train_of(role), data.test, options.per_checkpoint)
        scores, notes = store.prepare_model(
            role,
            tracin.checkpoints,
            tracin.parameter_names,
            plan.chunk,
            plan.block,
            options.per_checkpoint,
            tracin.variants,
            tracin.group_names,
        )
        for note in notes:  # round 27, R09, R10; round 28, A11-A16: what a resume found edited is scored again
            print(note, flush=True)
        if (scores.row_chunk, scores.test_block) == (plan.chunk, plan.block):
            runtime.log(f"{role}: {plan.describe(len(data.test))}")
        else:  # a resumed file keeps the blocking it was started with
            runtime.log(
                f"{role}: blocks of the file being resumed: {scores.test_block} test examples, train chunks of "
                f"{scores.row_chunk} rows ({plan.budget / 2**30:.3g} GiB, {plan.source}, would make "
                f"{plan.block} and {plan.chunk})"
            )
            n_train, n_test = len(data.train_of(role)), len(data.test)
            kept, planned = (
                work_factor(n_train, n_test, chunk, block, options.engine.batch_size)
                for chunk, block in ((scores.row_chunk, scores.test_block), (plan.chunk, plan.block))
            )
            if kept > 2 * planned:  # round 25, W21: a killed run's tiny budget slowed every resume, unsaid
                print(
                    f"note: {role}: the file being resumed keeps the blocks an earlier, smaller memory budget "
                    f"planned: {kept:.0f} times the gradient batches of one pass, where this one plans "
                    f"{planned:.0f}; to plan them again, move the file away (or tracin-score --overwrite), losing "
                    "its finished blocks",
                    flush=True,
                )
        layout = (scores.row_chunk, scores.test_block, scores.done)
    row_chunk, test_block, done = runtime.broadcast_object(layout)

    def skip(r0: int, r1: int, c0: int, c1: int) -> bool:
        chunk_index = r0 // row_chunk
        return bool(done[chunk_index, c0 // test_block]) or chunk_index % runtime.world_size != runtime.rank

    todo = torch.tensor(
        [
            sum(
                1
                for r in range(done.shape[0])
                for c in range(done.shape[1])
                if not done[r, c] and r % runtime.world_size == runtime.rank
            )
        ]
    )
    n_steps = int(runtime.all_reduce_max(todo).item())
    blocks = tracin.iter_blocks(
        data.train_of(role),
        data.test,
        options.per_checkpoint,
        skip=skip,
        self_influence=True,
        layout=(row_chunk, test_block),
    )
    for payload in runtime.gathered((_payload(block) for block in blocks), n_steps):
        if payload is not None and runtime.is_main:
            scores.write_block(*payload)
            faults.reach("score-block")
    runtime.barrier()


def write_rankings(scores: ModelScores, k: int, device: torch.device) -> None:
    """top-k tables of the summed scores, of each other variant's and, when kept, of each checkpoint's term."""
    scores.write_rankings(rankings_name(), *rank_matrix(scores.matrix(), k, device=device))
    for variant in scores.variants[1:]:
        scores.write_rankings(
            rankings_name(variant=variant), *rank_matrix(scores.matrix(variant=variant), k, device=device)
        )
    if scores.has_per_checkpoint:
        for index, epoch in enumerate(scores.epochs):
            scores.write_rankings(rankings_name(epoch), *rank_matrix(scores.matrix(index), k, device=device))
    scores.mark_complete()


# --- the whole command ----------------------------------------------------------------------------------


def score_run(options: ScoreOptions) -> Path:
    """Score the run's models, compare every pair, print the comparison; returns the HDF5 path. Every
    option, checkpoint and the data are checked before the result file is touched."""
    run = open_trained_run(options.run, options.data_root)
    out = Path(options.scores) if options.scores else run.paths.root / "tracin.h5"
    if out.name in ("", ".", "..") or out.is_dir():
        raise TracinError(f"--scores must name a file, got {str(out)!r}")
    for path in (out, replacing_path(out), report_path(out, "plots")):
        refuse_link(path, "the output")
    if options.plots:  # before the scoring, not after it (round 17, R5)
        check_own([report_path(out, "plots") / "report.md"])
    with (
        start_runtime(options.device, options.quiet) as runtime,
        command_locks(run.paths.root, out, main=runtime.is_main),
    ):
        data = scoring_data(run, options)
        runtime.log(data_source(run, options))
        ks = parse_topk(options.topk, limit=min(len(data.train), len(data.test)), cap=options.cap_topk)
        if options.cap_topk and ks != parse_topk(options.topk):
            runtime.log(
                f"--topk capped at {min(len(data.train), len(data.test))} examples: k = {', '.join(map(str, ks))}"
            )
        if options.examples:  # checked before the scoring, not after it (red-team S28)
            example_rows(options.examples, data.test.index.cpu().numpy())
        digests = checked_models(run, options, data, runtime)
        settings = settings_of(options, run, data, digests)
        if _finished_as_asked(out, settings, ks, options):
            # the same command again: nothing to score (a sweep continued, round 10: S13, S14), and the figures
            # of one killed before them (red-team R05)
            print(
                f"{out} is finished with these settings: {'drawing its figures' if options.plots else 'nothing to do'}",
                flush=True,
            )
            for note in replacement_notes(out):  # round 27, R02: left on disk without a word
                print(note, flush=True)
        else:
            out = _score_into(out, options, run, data, digests, settings, runtime, ks)
        if options.plots and runtime.is_main:
            faults.reach("report")
            for path in write_report(out, data_root=options.data_root, examples=options.examples):
                print(f"plot: {path}", flush=True)
    return out


def _finished_as_asked(out: Path, settings: dict, ks: list[int], options: ScoreOptions) -> bool:
    """Whether `out` is a finished file of these settings whose top-k tables and comparisons were made with
    this --topk and --corr-rows (which a finished file's settings leave out); one made with others is refused,
    naming them (OverwriteNeeded: round 34, O1). One edited since is refused, saying what changed
    (check_finished), not called done (round 11, E8)."""
    if options.overwrite or not ScoreFile.finished_with(out, settings):
        return False
    asked = CompareOptions(tuple(ks), max_rows=options.corr_rows, seed=options.score.seed).settings()
    with ScoreFile.open_read(out) as store:
        check_finished(store)
        pairs = store.comparison_pairs()
        if all(store.model(m).topk_width == max(ks) for m in store.models) and all(
            store.comparison_settings(a, b) == asked for a, b in pairs
        ):
            return True
        made = store.comparison_settings(*pairs[0]) if pairs else {"ks": [store.model(store.models[0]).topk_width]}
    said = [f"--topk {','.join(map(str, made['ks']))}"]  # round 34, O1: which, not only "finished"
    now = [f"--topk {','.join(map(str, ks))}"]
    if made.get("max_rows", asked["max_rows"]) != asked["max_rows"]:  # round 36, C102: the --corr-rows typed too
        said, now = [*said, f"--corr-rows {made['max_rows']}"], [*now, f"--corr-rows {options.corr_rows}"]
    raise OverwriteNeeded(
        f"{out} is a finished result, its top-k tables and comparisons made with {' '.join(said)}",
        f"pass --overwrite to score it again with {' '.join(now)}, or give {' '.join(said)}",
    )


def checked_models(run: TrainedRun, options: ScoreOptions, data: RunData, runtime: Runtime) -> dict[str, str]:
    """{model: checkpoints_digest} of the models to score, each checked before the result file is touched:
    its checkpoints loaded and checked, its layers resolved, its blocks sized within the memory budget.
    Each engine is dropped after its check, so that scoring holds one model's checkpoints at a time."""
    digests, groups, names = {}, set(), model_names(run, options)
    for note in left_out_notes(run, options, names) if runtime.is_main else ():
        print(note, flush=True)
    for number, name in enumerate(names):
        try:
            tracin = build_engine(name, run, options, runtime)
        except SelectionError as error:  # round 29, SM3: which model lacks the layer
            raise SelectionError(f"{name}: {error}") from None
        groups.update(tracin.group_names)
        plan = tracin.memory_plan(data.train, data.test, options.per_checkpoint)
        warnings = [
            unfinished_note(run, name),
            plan_warning(name, plan, len(data.train), len(data.test), options.engine.batch_size),
            budget_warning(plan, runtime.device) if number == 0 else None,  # the budget's: once (round 8: O13)
        ]
        for warning in (w for w in warnings if w and runtime.is_main):
            print(warning, flush=True)  # on stdout: stderr is kept for the one line of an error
        digests[name] = checkpoints_digest(tracin.checkpoints)
        del tracin  # before the next model's checkpoints are loaded
        gc.collect()
    for group, prefixes in options.score.groups:  # one group may name the teacher's layer4 and no student module
        if group not in groups:
            raise TracinError(
                f"--group {group}={','.join(prefixes)} names no scored module of {', '.join(digests)} (module names "
                "as --layers takes them: conv1, layer3, layer3.0.conv1, fc, ...)"
            )
    return digests


SLOW_PLAN = 20  # a memory plan doing more than this many times one pass's gradient batches is warned about


def plan_warning(name: str, plan: MemoryPlan, n_train: int, n_test: int, batch_size: int) -> Optional[str]:
    """A warning when a memory budget is so small that its blocking multiplies the work (train chunks
    smaller than a batch defeat batching, and every test block computes every train gradient again): said
    before the work, even with --quiet, so that a job of seconds does not run for hours without a word."""
    factor = work_factor(n_train, n_test, plan.chunk, plan.block, batch_size)
    if factor <= SLOW_PLAN:
        return None
    return (
        f"warning: {name}: {plan.describe(n_test)}: {factor:.0f} times the gradient batches of one pass; "
        "more memory (--max-memory-gb) makes it faster"
    )


def budget_warning(plan: MemoryPlan, device: torch.device) -> Optional[str]:
    """A warning when --max-memory-gb is more than the device has free (red-team A16): a plan that uses it
    runs out of memory instead of blocking."""
    if plan.source != "--max-memory-gb":
        return None
    free, where = free_memory(device)
    if plan.budget <= free:
        return None
    return (
        f"warning: --max-memory-gb {plan.budget / 2**30:.3g} is more than the {free / 2**30:.3g} GiB {where}: "
        "a plan that uses it runs out of memory; auto plans within what is free"
    )


def _score_into(
    out: Path,
    options: ScoreOptions,
    run: TrainedRun,
    data: RunData,
    digests: dict[str, str],
    settings: dict,
    runtime: Runtime,
    ks: Sequence[int],
) -> Path:
    """Score every model of `digests` into the file at `out` (made with `settings`, resumed or replacing
    it), compare and report; returns the finished file's path."""
    store = _open_store(out, options, run, data, settings) if runtime.is_main else None
    runtime.barrier()
    with store or contextlib.nullcontext():
        for role, digest in digests.items():
            tracin = build_engine(role, run, options, runtime)
            if checkpoints_digest(tracin.checkpoints) != digest:
                raise CheckpointError(
                    f"the checkpoints of {role} changed while the run was scored; run the same command again"
                )
            score_role(store, role, tracin, data, runtime, options, max(ks))
            del tracin  # one model's checkpoints in memory at a time
            gc.collect()  # on an H200 a dropped engine's device memory stayed allocated until a collection
        if runtime.is_main:
            report(store, options, ks, [*digests, *write_ensembles(store, list(digests), max(ks), runtime.device)])
            return store.path
    return out


def checkpoints_digest(checkpoints: Sequence[Checkpoint]) -> str:
    """One digest of a model's checkpoints (their files' sha256, in order): what a partial file was made from."""
    return hashlib.sha256("".join(c.sha256 for c in checkpoints).encode()).hexdigest()[:16]


def _open_store(out: Path, options: ScoreOptions, run: TrainedRun, data: RunData, settings: dict) -> ScoreFile:
    for stale in remove_stale_temporaries(out):
        print(f"removed {stale}, left by an interrupted run", flush=True)
    store, resumed = ScoreFile.create_or_resume(
        out, settings, file_attrs(options, run, data), data_arrays(data), options.overwrite
    )
    if store.removed is not None:
        print(store.removed, flush=True)
    if store.salvaged is not None:
        print(describe_salvage(store.path, store.salvaged), flush=True)
    if store.dropped:
        print(f"{store.path}: {', '.join(store.dropped)} changed since written (a full disk?): made again", flush=True)
    if resumed:
        print(f"resuming {store.path}: finished blocks are kept", flush=True)
    if store.path != out:
        print(f"writing {store.path}; it replaces {out} when complete (until then {out} is kept as it was)", flush=True)
    return store


def score_role(
    store: Optional[ScoreFile],
    role: str,
    tracin: TracIn,
    data: RunData,
    runtime: Runtime,
    options: ScoreOptions,
    k: int,
) -> None:
    """One model's missing blocks, then (rank 0) its losses and top-k tables."""
    started = time.perf_counter()
    score_model(store, role, tracin, data, runtime, options)
    if runtime.is_main:
        store.model(role).write_last_loss(tracin.losses(data.train_of(role)).numpy())
        store.model(role).write_predictions(tracin.logits(data.test).numpy())
        faults.reach("rankings")
        write_rankings(store.model(role), k, runtime.device)
        seconds = store.model(role).add_scoring_seconds(time.perf_counter() - started)
        per_pair = seconds / (len(data.train) * len(data.test))
        runtime.log(
            f"{role}: {len(tracin.checkpoints)} checkpoint(s), {len(data.train)} x {len(data.test)} "
            f"scores in {seconds:.1f} s ({per_pair:.3g} s per train-test pair, all variants)"
        )


def data_source(run: TrainedRun, options: ScoreOptions) -> str:
    """Where the data are read from, said every time: a run folder names a data root, and one that is
    not the user's own choice is named as such."""
    recorded = Path(run.record["data_config"]["data_root"])
    root = Path(run.data_config.data_root).resolve()
    if options.data_root is None:
        return f"data: {run.data_config.dataset} from {root} (the data root recorded in {run.paths.run_json})"
    if recorded.resolve() != root:
        return f"data: {run.data_config.dataset} from {root} (--data-root; {run.paths.run_json} records {recorded})"
    return f"data: {run.data_config.dataset} from {root} (--data-root)"


def compute_quality_table(store: ScoreFile, models: Sequence[str]) -> np.ndarray:
    """Quality checks of every model and variant, from the stored proponent tables (tracin.results.quality)."""
    rows = []
    for name in models:
        scores = store.model(name)
        for variant in scores.variants:
            ranking = scores.variant_rankings(variant)[0]
            rows.append(quality_row(name, variant, ranking.top_index, store.train_labels, store.test_labels))
    return np.array(rows, dtype=QUALITY_DTYPE)


def write_ensembles(store: ScoreFile, models: Sequence[str], k: int, device: torch.device) -> list[str]:
    """For each role scored with replicas: ROLE.ensemble, the mean of its replicas' scores, with its
    top-k tables. Returns their names."""
    written = []
    for role, members in replicas_by_role(models).items():
        if len(members) > 1:
            store.write_ensemble(ensemble_name(role), list(members.values()))
            write_rankings(store.model(ensemble_name(role)), k, device)
            written.append(ensemble_name(role))
    return written


def select_compared_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """The model pairs compared in full (comparison tables): every pair of each role's first scored
    replica (replica 0 unless it was left out), each of those against the other replicas of its role
    (the noise floor), then every pair of replica ensembles."""
    replicas = replicas_by_role(models)
    first = [names[min(names)] for names in replicas.values()]
    others = [(names[min(names)], name) for names in replicas.values() for name in list(names.values())[1:]]
    ensembles = [name for name in models if name.endswith(ENSEMBLE_SUFFIX)]
    return list(itertools.combinations(first, 2)) + others + list(itertools.combinations(ensembles, 2))


def report(store: ScoreFile, options: ScoreOptions, ks: list[int], models: Sequence[str]) -> None:
    quality = compute_quality_table(store, models)
    store.write_table("quality", quality)
    print(format_quality(quality), flush=True)
    if store.noisy.any():
        detection = detection_rows(mislabel_curves(store, models, groups=True))
        store.write_table("detection", detection)
        print(format_detection(detection), flush=True)
    compare_options = CompareOptions(tuple(ks), max_rows=options.corr_rows, seed=options.score.seed)
    for name_a, name_b in select_compared_pairs(models):
        faults.reach("comparison")
        tables = compare_models(store, name_a, name_b, compare_options)
        print(format_tables(name_a, name_b, tables), flush=True)
    agreement = agreement_table(store, list(models), compare_options)
    store.write_table("agreement", agreement)
    print(format_agreement(agreement), flush=True)
    if len(agreement) and of_layer_groups(agreement).any():
        print(format_agreement_by_depth(agreement), flush=True)
    store.mark_complete()
    print(f"scores: {store.path}", flush=True)
