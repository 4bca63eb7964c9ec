"""tracin-report: the field's sanity checks side by side for teacher, student and baseline student.

    open the run and its finished score file, check they belong together
    model randomization: per model, the same TracIn engine on re-initialised weights (cascading from the
        head down) for a sample of train and test examples -> /randomization (per model: resumable)
    with a planted shortcut: each model's predictions on stamped and clean test examples
    every registered check per model and variant (tracin.results.checks), with the leave-top-k-out and LDS of
        tracin-validate where the file holds them -> /quality_report, printed, quality_report.md,
        plots/quality_report.png

The checks read the stored rankings and scores; only randomization and predictions load checkpoints.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from tracin.config import EngineConfig, ScoreConfig
from tracin.engine.groups import group_names
from tracin.engine.randomization import fresh_model, module_of, randomized_checkpoints
from tracin.engine.tracin import TracIn
from tracin.errors import TracinError
from tracin.files import (
    check_own,
    command_locks,
    refuse_links,
    remove_stale_temporaries,
    report_path,
    write_own_figure,
    write_own_markdown,
)
from tracin.options import ReportOptions, ScoreOptions
from tracin.results import sanity, statistics
from tracin.results.agreement import agreement_table
from tracin.results.checks import quality_report_table
from tracin.results.comparison import CompareOptions
from tracin.results.figures import plot_quality_report
from tracin.results.grids import check_labels
from tracin.results.markdown import quality_report_markdown, report_verdicts
from tracin.results.runs import (
    TrainedRun,
    check_score_file_there,
    check_scored_checkpoints,
    checked_data,
    describe_salvage,
    load_role_checkpoints,
    open_trained_run,
    own_teachers,
    positions_in,
    scoring_loss,
    unfinished_notes,
)
from tracin.results.store import QUALITY_REPORT, RANDOMIZATION, ScoreFile, salvage_own_damage
from tracin.results.store.checks import check_finished, replacement_notes
from tracin.runtime import Runtime, machine, start_runtime
from tracin.schemas import SCORE_SETTINGS, check
from tracin.training.data import RunData, Split
from tracin.training.models import build_model

OWN = (RANDOMIZATION, QUALITY_REPORT)  # the score file's tables tracin-report writes, and makes again


def report_run(options: ReportOptions) -> Path:
    """Compute what is missing (randomization, predictions), write the quality report into the score file
    and beside it; returns the score file."""
    run = open_trained_run(options.run, options.data_root)
    path = Path(options.scores) if options.scores else run.paths.root / "tracin.h5"
    check_score_file_there(path)
    started = time.monotonic()
    with start_runtime(options.device, options.quiet) as runtime, command_locks(run.paths.root, path):
        if runtime.distributed:
            raise TracinError("tracin-report runs in one process: start it without torchrun")
        salvaged = salvage_own_damage(path, OWN)
        if salvaged is not None:
            print(describe_salvage(path, salvaged), flush=True)
        refuse_links(quality_outputs(path), "the report")  # before the work, not after it (red-team L07, L08)
        check_own(quality_outputs(path)[::2])  # the Markdown and the PNG (round 17, R2)
        for output in (report_path(path, "quality_report.md"), report_path(path, "plots") / "quality_report.png"):
            for stale in remove_stale_temporaries(output):  # a killed report's; the score file's lock is held
                print(f"removed {stale}, left by an interrupted write", flush=True)
        with ScoreFile.open_read_write(path) as store:
            check_finished(store, unread=OWN)  # first: a refusal leaves its own tables as they are (round 30, M6)
            dropped = store.drop_changed(OWN)  # a full disk while writing them (F3)
            if dropped:
                print(f"{path}: {', '.join(dropped)} changed since written (a full disk?): made again", flush=True)
            models = [m for m in options.models if m in store.models]
            if not models:
                raise TracinError(
                    f"{path} has none of the models {', '.join(options.models)} (it has {', '.join(store.models)})"
                )
            check_scored_checkpoints(store, run)
            for note in replacement_notes(path):  # round 28, B3
                print(note, flush=True)
            if options.randomization_train > store.n_train or options.randomization_test > store.n_test:
                print(  # said, not silent (red-team P14): the sample is what the file holds
                    f"model randomization: {min(options.randomization_train, store.n_train)} train x "
                    f"{min(options.randomization_test, store.n_test)} test examples, all the file holds",
                    flush=True,
                )
            data = checked_data(run)
            train_rows, test_rows = (
                positions_in(store.train_index, data.train.index.numpy()),
                positions_in(store.test_index, data.test.index.numpy()),
            )
            check_labels(store, data, train_rows, test_rows)  # round 11, E6: a classes attribute swapped by hand
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
            said = [*unfinished_notes(run, models, store), *report_verdicts(store, table)]  # round 26, RJ12
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
    """The file's settings (a JSON object, checked by the layout), with the fields a report rebuilds the
    scoring from checked (red-team H10, H16-H18)."""
    return check(json.loads(store.attributes["settings"]), SCORE_SETTINGS, f"{store.path}: attribute settings")


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
        own_teachers(run, name),
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


# --- files ------------------------------------------------------------------------------------------------


def quality_outputs(path: Path) -> tuple[Path, ...]:
    """What write_quality_files writes for the score file at `path`: the Markdown, the plots folder, the PNG."""
    plots = report_path(path, "plots")
    return report_path(path, "quality_report.md"), plots, plots / "quality_report.png"


def write_quality_files(path: Path, table: np.ndarray, said: Sequence[str] = ()) -> Path:
    """quality_report.md (the table and the verdicts `said`) beside the score file and
    plots/quality_report.png; returns the Markdown's path."""
    markdown = report_path(path, "quality_report.md")
    refuse_links(quality_outputs(path), "the report")
    text = (
        quality_report_markdown(table, groups=True) + "".join(f"\n- {line}" for line in said) + ("\n" if said else "")
    )
    write_own_markdown(markdown, text)
    figure = plot_quality_report(table, said)
    plots = report_path(path, "plots")
    plots.mkdir(exist_ok=True)
    write_own_figure(plots / "quality_report.png", figure, dpi=110)
    plt.close(figure)
    return markdown
