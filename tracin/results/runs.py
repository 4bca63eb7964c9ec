"""A trained run as the commands read it: its folder and record, its checked data and checkpoints, the
objective each model is scored with, and what a score file says about the run.

Shared by tracin-score, tracin-validate and tracin-report (tracin.commands), which never import each
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tracin.config import (
    DATA_FOLDERS,
    ENSEMBLE_SUFFIX,
    ROLES,
    DataConfig,
    ModelConfig,
    TrainConfig,
    model_name,
    replica_seed,
    replicas_by_role,
    split_model_name,
)
from tracin.errors import CheckpointError, DataError, TracinError
from tracin.files import not_a_file, refuse_link
from tracin.options import ScoreOptions
from tracin.results.store import Salvage, ScoreFile
from tracin.training.checkpoints import (
    Checkpoint,
    epoch_of,
    list_checkpoints,
    load_distillation_teacher,
    load_run_checkpoints,
    select_checkpoints,
    sha256_file,
)
from tracin.training.data import RunData, load_data
from tracin.training.losses import CrossEntropy, Distillation, Objective, PredictedCrossEntropy, TrainTest
from tracin.training.optimization import select_epochs
from tracin.training.records import check_saved_digest, fingerprint_differences
from tracin.training.run_folder import (
    RunPaths,
    check_trained_as_recorded,
    check_trained_by_run,
    read_record,
    replaced_path,
)


@dataclass
class TrainedRun:
    paths: RunPaths
    record: dict
    data_config: DataConfig


def refuse_linked_run(scores: Path, run: Optional[str] = None) -> None:
    """tracin-score's rule for a run folder, for the commands that write pages beside a score file: the run
    given, or the run folder the score file sits in, must not be a link (round 20, PS2, PS6: explore and the
    notebooks wrote through one that tracin-score and tracin-report refuse)."""
    folders = [Path(run)] if run is not None else []
    if (Path(scores).parent / "run.json").is_file():
        folders.append(Path(scores).parent)
    for folder in folders:
        refuse_link(folder, "the run")


def check_moved_data_root(data_root: str, dataset: str, recorded: bool = False, flag: str = "--data-root") -> None:
    """A TracinError unless `data_root`, given because a run's data moved (or, `recorded`, the one run.json
    records), holds its `dataset`'s folder (round 17, D3, D4: a root of another data set was filled with a
    fresh copy of the run's; round 18, D8: so was a recorded root edited to an absent folder). `flag`: how the
    command takes a data root (round 32, C12: tracin-notebooks was told to give --data-root, which it has not)."""
    folder = Path(data_root) / DATA_FOLDERS.get(dataset, dataset)
    if not folder.is_dir():
        where = f"the data root {data_root} run.json records" if recorded else f"data root {data_root}"
        hint = f"give {flag}, the folder it is in now" if recorded else "give the folder the data set is in now"
        raise TracinError(f"{where} does not hold the run's data set, {dataset} (no {folder}): {hint}")


def check_score_file_there(path: Path) -> None:
    """A TracinError unless a regular file is at `path`, the score file a reader of a run (tracin-report,
    tracin-validate) takes, with the remedy that works: something else there (a folder, a FIFO) is moved away
    first, since tracin-score refuses it too (round 31, F1)."""
    if path.is_file():
        return
    if path.exists() or path.is_symlink():
        raise TracinError(
            f"{not_a_file(path)}: move it away and score the run with tracin-score, or name the score file with "
            "--scores"
        )
    raise TracinError(f"{not_a_file(path)}: score the run with tracin-score first (or name the file with --scores)")


def open_trained_run(run_dir: str, data_root: Optional[str], flag: str = "--data-root") -> TrainedRun:
    """The trained run in `run_dir`, its data read from `data_root` where given (`flag`: how the command takes
    it), else from the root run.json records; both checked to hold the run's data set before any read."""
    paths = RunPaths(Path(run_dir))
    record = read_record(paths)
    if record is None:
        raise TracinError(f"{run_dir} is not a tracin-train run (no run.json); train one with tracin-train first")
    data_config = dict(record["data_config"])
    if data_root is not None:
        check_moved_data_root(data_root, data_config["dataset"])
        data_config["data_root"] = data_root
    elif isinstance(data_config.get("data_root"), str):  # typed by read_record; checked here before any read
        check_moved_data_root(data_config["data_root"], data_config["dataset"], recorded=True, flag=flag)
    try:  # read_record typed every setting; the data root given here is checked too
        return TrainedRun(paths, record, DataConfig.from_dict(data_config))
    except TracinError as error:
        raise TracinError(f"{paths.run_json}: {error}") from None


def trained_replicas(run: TrainedRun, role: str) -> int:
    """How many replicas of `role` the run has trained to the end (replica 0 counts whatever its state)."""
    models, count = run.record["models"], 1
    while models.get(model_name(role, count), {}).get("status") == "done":
        count += 1
    return count


def load_role_checkpoints(run: TrainedRun, name: str, spec: str) -> tuple[list[Checkpoint], ModelConfig, dict]:
    """The model's selected checkpoints, checked against the run (tracin.training.checkpoints)."""
    role = split_model_name(name)[0]
    if name not in run.record["models"]:  # a folder the run never trained (red-team S19)
        known = ", ".join(run.record["models"])
        raise CheckpointError(f"{run.paths.run_json} records no model {name} (it records {known}): not this run's")
    check_recorded_checkpoints(run, name)
    paths = select_checkpoints(run.paths.model_dir(name), role, spec)
    seed = run.record["config"].get("seed")
    seed = replica_seed(seed, split_model_name(name)[1]) if isinstance(seed, int) else None
    digest, schedule = run.record["data_fingerprint"]["digest"], TrainConfig.from_dict(run.record["config"])
    loaded = load_run_checkpoints(paths, role, digest, run.record["model_configs"].get(role), seed, schedule)
    recorded, field = run.record["models"][name].get("sha256"), f"{run.paths.run_json}'s models/{name}/sha256"
    for checkpoint in loaded[0]:  # weights edited in range would be scored (round 9: C6)
        check_saved_digest(Path(checkpoint.path), recorded, field, checkpoint.version, checkpoint.sha256)
    check_trained_as_recorded(run.paths.run_json, run.record, loaded[2], name, Path(loaded[0][-1].path))
    return loaded


def check_recorded_checkpoints(run: TrainedRun, name: str) -> None:
    """A CheckpointError unless the model folder's epoch_NNN.pt files are those run.json's
    models/NAME/checkpoints lists: a checkpoint copied in is never scored, one deleted never passes unseen
    (red-team K01, J04, J15)."""
    model_dir, field = run.paths.model_dir(name), f"{run.paths.run_json}'s models/{name}/checkpoints"
    if model_dir.exists() and not model_dir.is_dir():  # round 29, N1: a FIFO there was said to lack them
        raise CheckpointError(f"{model_dir} is not a folder: {name}'s checkpoints, which {field} lists, are not there")
    listed = set(run.record["models"][name]["checkpoints"])
    on_disk = {path.name for path in list_checkpoints(model_dir)}
    if listed - on_disk:
        missing = ", ".join(sorted(listed - on_disk))
        raise CheckpointError(f"{field} lists {missing}, which {model_dir} lacks: deleted or moved?")
    if on_disk - listed:
        extra = sorted(on_disk - listed)[0]
        way = (  # round 27, X10: a killed --overwrite is finished by that command, which --resume refuses
            "run that tracin-train --overwrite command again to finish it"
            if replaced_path(run.paths).exists()
            else "resume that with tracin-train --resume"
        )
        raise CheckpointError(
            f"{model_dir / extra} is not in {field}: a file copied in, or saved by a training killed before "
            f"it recorded it ({way})"
        )


def checked_data(run: TrainedRun) -> RunData:
    """The run's own train and test examples, fingerprint-checked against what it was trained on."""
    data = load_data(run.data_config)
    differences = fingerprint_differences(run.record["data_fingerprint"], data, run.data_config)
    if differences:
        raise DataError(
            f"the data under {run.data_config.data_root} differ from those {run.paths.root} was trained on "
            f"({', '.join(differences)} differ): run.json's data settings were edited, or point --data-root at the "
            "run's data"
        )
    return data


def own_teachers(run: TrainedRun, name: str) -> list[Path]:
    """The checkpoints of the run's teacher of the model's replica: where a distilled student's teacher is
    found when the run folder moved (load_distillation_teacher, by sha256)."""
    return list_checkpoints(run.paths.model_dir(model_name("teacher", split_model_name(name)[1])))


def scoring_loss(name: str, last: dict, options: ScoreOptions, teachers: Sequence[Path] = ()) -> Objective | TrainTest:
    """Cross-entropy (--loss ce, and every model trained without a teacher), or for a distilled student the
    objective it was trained with: its teacher (sha256-checked), temperature, alpha, kd loss and label
    smoothing, all from its own checkpoint; on both sides with --loss kd, on the train side only with
    --loss kd-train (the test side: cross-entropy on the test label). --test-label prediction: the test
    side's cross-entropy is on the model's predicted class. `teachers`: own_teachers, where a moved run's
    teacher is found."""
    test = PredictedCrossEntropy() if options.test_label == "prediction" else CrossEntropy()
    if options.loss == "ce":
        return CrossEntropy() if options.test_label == "label" else TrainTest(CrossEntropy(), test)
    if options.loss == "kd" and split_model_name(name)[0] == "teacher":
        return CrossEntropy()
    config = TrainConfig.from_dict(last["config"])
    if options.loss == "kd":
        if not isinstance(last.get("teacher"), dict):  # round 37, O6: "(it records None)", no option named
            how = "it was self-distilled" if last.get("teacher") == "self" else "it was trained without a teacher"
            raise TracinError(
                f"--loss kd: {name} has no teacher checkpoint to distil from ({how}): score it with --loss ce or "
                f"kd-train, or leave it out of --models"
            )
        teacher = load_distillation_teacher(last, teachers)
        return Distillation(teacher, config.temperature, config.alpha, config.kd_loss, config.label_smoothing)
    # kd-train: every model's train side by its own training objective (a teacher's and a baseline's:
    # cross-entropy with the label smoothing they were trained with)
    if last.get("teacher") == "self":
        raise TracinError(
            f"--loss kd-train: {name} was self-distilled, whose soft targets changed every epoch; "
            "score it with --loss ce"
        )
    if isinstance(last.get("teacher"), dict):
        teacher = load_distillation_teacher(last, teachers)
        train = Distillation(teacher, config.temperature, config.alpha, config.kd_loss, config.label_smoothing)
    else:
        train = CrossEntropy(config.label_smoothing)
    return TrainTest(train, test)


def describe_salvage(path: Path, salvaged: Salvage) -> str:
    """What a salvage found and did, in two lines."""
    first = salvaged.damage[0] + (f" (and {len(salvaged.damage) - 1} more)" if len(salvaged.damage) > 1 else "")
    remade = f"made again: {', '.join(salvaged.dropped)}" if salvaged.dropped else "every model's finished blocks kept"
    return (
        f"{path} was damaged ({first}), as a full disk or a crash inside HDF5 leaves it: what reads is salvaged "
        f"into a fresh file; {remade}.\nthe damaged file is kept as {salvaged.damaged_copy}; delete it once this run has finished"
    )


def check_scored_checkpoints(store: ScoreFile, run: TrainedRun) -> None:
    """The file must score this run's models, every trained one it holds, not only those a command shows: the
    agreement verdicts, an ensemble's scores (checked through its members) and the page read them all (round 36,
    C073; round 37: a replica run.json no longer lists, or one replaced since, read without a word). Each is
    listed in run.json, its folder holds the checkpoints run.json lists, those it replayed among them, same
    sha256 as the file and run.json recorded (a moved folder is fine, another run is not), and, scored with
    --checkpoints all or last, those the run now holds (not a model trained on since)."""
    for name in trained_models_held(store):
        if name not in run.record["models"]:
            raise TracinError(
                f"{store.path} scored {name}, which {run.paths.root / 'run.json'} does not list: give the score "
                "file of this run"
            )
        folder = run.paths.model_dir(name)
        if folder.exists() and not folder.is_dir():  # round 31, F2b: said to be another run's score file
            raise TracinError(
                f"{folder} is not a folder: the checkpoints {store.path} scored {name} from are not there"
            )
        check_recorded_checkpoints(run, name)  # round 38: the folder and run.json as loading checks them
        recorded, field = run.record["models"][name].get("sha256"), f"{run.paths.run_json}'s models/{name}/sha256"
        for scored, sha256 in store.model(name).checkpoint_files:
            here = run.paths.model_dir(name) / Path(scored).name
            digest = sha256_file(here) if here.is_file() else None
            if digest != sha256:
                raise TracinError(
                    f"{store.path} scored {name} from {scored}, which {run.paths.root} does not hold "
                    "(missing, or another file): give the score file of this run"
                )
            check_saved_digest(here, recorded, field, digest=digest)
        # run.json's architecture (round 39, A17, L18), settings and data (round 42, X20-X28) as the file's own
        if store.model(name).checkpoint_files:
            last = run.paths.model_dir(name) / Path(store.model(name).checkpoint_files[-1][0]).name
            check_trained_by_run(last, run.record, run.paths.run_json, name)
        spec, scored = store.checkpoint_spec, store.model(name).epochs
        saved = [epoch_of(Path(file)) for file in run.record["models"].get(name, {}).get("checkpoints", [])]
        if spec in ("all", "last") and saved and select_epochs(spec, saved, name) != scored:  # round 27, U07
            raise TracinError(
                f"{store.path} scored {name}'s checkpoints of epochs {scored} (--checkpoints {spec}), and "
                f"{run.paths.root} now holds {saved}: trained on since, its TracInCP lacks their terms; score "
                "the run again (tracin-score --overwrite)"
            )


def trained_models_held(store: ScoreFile) -> list[str]:
    """Every trained model `store` scored (an ensemble's members, not the ensemble), replica by replica."""
    return [name for names in replicas_by_role(store.models).values() for name in names.values()]


def unfinished_note(run: TrainedRun, name: str, outcome: str = "its saved checkpoints are scored") -> Optional[str]:
    """A note when `name` has not finished training (round 25, A9: a model killed before its last epoch, or
    before it was marked done, was scored without a word), saying the command's `outcome` for it."""
    entry = run.record["models"][name]
    if entry["status"] == "done":
        return None
    return (
        f"note: {name} has not finished training ({entry['status']}, epoch {entry['epoch']} of {entry['epochs']}): "
        f"{outcome}; tracin-train --resume finishes it"
    )


def left_out_notes(run: TrainedRun, options: ScoreOptions, scored: Sequence[str]) -> list[str]:
    """A note of each replica of a role in --models that run.json holds and model_names left out, where
    --replicas did not choose them (round 38, P01: student.r1, killed in training, was left out silently):
    a role's replicas are scored up to the first that has not finished training."""
    if options.replicas is not None:
        return []
    roles = {name for name in options.models if name in ROLES}
    notes = []
    for name, entry in run.record["models"].items():
        if name in scored or split_model_name(name)[0] not in roles:
            continue
        if entry["status"] == "done":
            how = "a replica before it has not finished training; name it in --models to score it"
        else:
            how = f"it has not finished training ({entry['status']}, epoch {entry['epoch']} of {entry['epochs']}); "
            how += "tracin-train --resume finishes it" + (
                ", or name it in --models to score its saved checkpoints" if entry["checkpoints"] else ""
            )
        notes.append(f"note: {name} is left out of the replicas scored: {how}")
    return notes


def unfinished_notes(run: TrainedRun, models: Sequence[str], store: Optional[ScoreFile] = None) -> list[str]:
    """unfinished_note of each of `models` the run holds (round 26, RJ12: said where its scores are read too),
    then of each other trained model `store` holds, which the agreement verdicts and the page read as well
    (round 38, A-partial_s1)."""
    held = trained_models_held(store) if store is not None else []
    notes = (unfinished_note(run, m) for m in dict.fromkeys([*models, *held]) if m in run.record["models"])
    return [note for note in notes if note]


def scored_run_folder(store: ScoreFile) -> Path:
    """The run folder a score file was made from: the one recorded in it, or the file's own folder (its default
    place, wherever the run moved), whichever holds the first checkpoint the file scored (round 17, M2-M4:
    the recorded path, since holding another run, was taken over the moved run the file sits in). Without
    such a checkpoint, the first of them that holds a run.json (its checks then name what differs)."""
    folders = [path for path in dict.fromkeys((store.run_path, store.path.parent)) if (path / "run.json").is_file()]
    if not folders:
        raise TracinError(f"the run {store.run_path} recorded in {store.path} is gone; image grids need its data")
    name = next((m for m in store.models if not m.endswith(ENSEMBLE_SUFFIX)), None)
    for path, sha256 in store.model(name).checkpoint_files[:1] if name else []:
        for folder in folders:
            here = RunPaths(folder).model_dir(name) / Path(path).name
            if here.is_file() and sha256_file(here) == sha256:
                return folder
    return folders[0]


def positions_in(indices: np.ndarray, within: np.ndarray) -> np.ndarray:
    """int64: the position of each of `indices` in `within` (a TracinError if one is not there: the file of
    `indices` was not made from this data, or was changed by hand)."""
    order = np.argsort(within, kind="stable")
    found = np.searchsorted(within, indices, sorter=order)
    absent = found >= len(within)
    positions = order[np.where(absent, 0, found)] if len(within) else np.zeros(len(indices), np.int64)
    missing = np.asarray(indices)[absent | (np.asarray(within)[positions] != indices if len(within) else True)]
    if missing.size:
        raise TracinError(
            f"{missing.size} example(s) of the score file (data set index {int(missing[0])}, ...) are not in the "
            "run's data: the file was made from other data, or changed by hand"
        )
    return positions
