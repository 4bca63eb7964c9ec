"""tracin-eval: a trained run's models on another data set's test split (--eval-dataset), its classes
mapped to the run's, as a reader checks how a distilled student transfers.

    the run's record -> each finished model's last checkpoint
    the other test split (tracin.training.data.load_eval_split: the run's normalisation, mapped labels)
    accuracy overall and per mapped class -> RUN/eval_<DATASET>.csv, printed
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tracin.config import ROLES, DataConfig, ModelConfig, TrainConfig, replica_seed, split_model_name
from tracin.errors import TracinError
from tracin.files import check_own_table, command_locks, refuse_link, remove_stale_temporaries
from tracin.options import EvalOptions
from tracin.results.runs import TrainedRun, check_recorded_checkpoints, unfinished_note
from tracin.runtime import start_runtime
from tracin.schemas import CLASS_MAP, DATA_JSON, load_json
from tracin.training.checkpoints import VERSION as CHECKPOINT_VERSION
from tracin.training.checkpoints import check_recorded_architecture, check_trained_config, load_model
from tracin.training.data import SPECS, load_eval_split, published_classes
from tracin.training.records import check_saved_digest
from tracin.training.run_folder import RunPaths, check_trained_as_recorded, read_record
from tracin.training.tables import confusion_matrix, write_csv
from tracin.training.trainer import evaluate

if TYPE_CHECKING:
    from torch import nn


def read_class_map(path: Optional[str]) -> Optional[dict[str, str]]:
    """The --class-map file: a JSON object of class names (read as data)."""
    if path is None:
        return None
    return load_json(path, CLASS_MAP, f"--class-map {path}")


def check_destination(paths: RunPaths, out: Path) -> None:
    """Refuse a run folder, or an eval CSV in it, that is a link (nothing is written through one)."""
    refuse_link(paths.root, "the run folder tracin-eval writes into")
    check_own_table(out, ("model", "examples", "accuracy"), "a table")  # round 18, E1: a colleague's was replaced


def checked_last_model(paths: RunPaths, record: dict, name: str, n_classes: int) -> nn.Module:
    """The last checkpoint of the finished model `name`, loaded (on the CPU) and checked against run.json:
    its sha256, its training settings (its replica's seed), its data and teacher, its architecture, and its
    outputs against data.json's `n_classes` classes."""
    role, last = name.split(".")[0], paths.model_dir(name) / record["models"][name]["checkpoints"][-1]
    model, payload = load_model(last, role)
    field = f"{paths.run_json}'s models/{name}/sha256"
    check_saved_digest(last, record["models"][name].get("sha256"), field, payload.get("version", CHECKPOINT_VERSION))
    trained = TrainConfig.from_dict(record["config"])
    seed = replica_seed(trained.seed, split_model_name(name)[1])  # round 29, E8: an edited run.json config
    check_trained_config(last, payload, dataclasses.replace(trained, seed=seed))
    check_trained_as_recorded(paths.run_json, record, payload, name, last)  # round 31, E1-E16
    architecture = ModelConfig.from_dict(payload["model_config"])
    check_recorded_architecture(last, architecture, role, record["model_configs"].get(role))
    if architecture.num_classes != n_classes:  # a data.json edited or copied from another run
        raise TracinError(
            f"{paths.data_json} names {n_classes} classes, but {last} has {architecture.num_classes} outputs: that "
            "data.json is not this run's"
        )
    return model


def eval_run(options: EvalOptions) -> Path:
    """Evaluate every finished model of the run; returns the CSV written (a row per model: examples,
    accuracy, then each mapped class's accuracy)."""
    paths = RunPaths(Path(options.run))
    out = paths.root / f"eval_{options.dataset}.csv"
    check_destination(paths, out)  # before the evaluation, not after it (red-team round 8: L8)
    record = read_record(paths)
    if record is None:
        raise TracinError(f"{options.run} is not a tracin-train run (no run.json)")
    class_map = read_class_map(options.class_map)
    finished = [
        name for name, entry in record["models"].items() if entry.get("status") == "done" and entry.get("checkpoints")
    ]
    if not finished:
        raise TracinError(f"{options.run} has no finished model to evaluate")
    run = TrainedRun(paths, record, DataConfig.from_dict(record["data_config"]))
    for name, entry in record["models"].items():  # round 41, E09: a model killed in training was left out unsaid
        if name not in finished and entry["epoch"]:  # one never started (pending, epoch 0) is not news
            print(unfinished_note(run, name, "left out of the evaluation"), flush=True)
    for name in finished:  # round 30, E8, E9: a checkpoint deleted or copied in, as tracin-score refuses it
        check_recorded_checkpoints(run, name)  # before the data loads; the last checkpoint's digest, under the lock
    spec = SPECS[record["data_config"]["dataset"]]
    classes = load_json(paths.data_json, DATA_JSON)["classes"]
    published = published_classes(run.data_config)
    if published is None:  # files read without checksums name their own, fingerprinted (round 17, J6)
        recorded = record.get("data_fingerprint", {}).get("classes")
        published = tuple(recorded) if isinstance(recorded, list) else None
    if published is not None and tuple(classes) != published:  # its names label every row (round 8: J1)
        first = next(
            (i for i, (a, b) in enumerate(zip(classes, published)) if a != b), min(len(classes), len(published))
        )
        said = (  # as Python writes them: a character that prints as nothing shows (round 33, DJ13)
            f"class {first} is {classes[first]!r} there, {published[first]!r} in the data set"
            if first < min(len(classes), len(published))
            else f"{len(classes)} classes there, {len(published)} in the data set"
        )
        raise TracinError(
            f"{paths.data_json} names the classes {', '.join(classes)}; the run's data set names them "
            f"{', '.join(published)} ({said}): that data.json was edited or is not this run's"
        )
    split, counts = load_eval_split(options.dataset, options.data_root, spec, classes, class_map, options.checksum)
    rows = []
    with start_runtime(options.device, quiet=True) as runtime, command_locks(paths.root):
        ordered = sorted(finished, key=lambda n: (ROLES.index(n.split(".")[0]), n))
        models = {name: checked_last_model(paths, record, name, len(classes)) for name in ordered}  # before any work
        for name, model in models.items():  # round 31, Q6, F3: the last model's refusal came after the first's work
            result = evaluate(model.to(runtime.device), split, runtime)
            matrix = confusion_matrix(result.predictions, split.labels, len(classes))
            per_class = {c: float(matrix[i, i] / matrix[i].sum()) for i, c in enumerate(classes) if c in counts}
            rows.append({"model": name, "examples": len(split), "accuracy": result.accuracy, **per_class})
        check_destination(paths, out)  # again, now that the lock is held: written while the run cannot change
        for stale in remove_stale_temporaries(out):  # a killed evaluation's (red-team E09); the run's lock is held
            print(f"removed {stale}, left by an interrupted write", flush=True)
        write_csv(rows, out)
    mapped = ", ".join(f"{c} ({n})" for c, n in counts.items())
    print(f"{options.dataset} test examples mapped to the run's classes: {mapped}")
    for row in rows:
        print(f"  {row['model']:<24} accuracy {row['accuracy']:.1%} on {row['examples']} examples")
    print(f"eval: {out}")
    return out
