"""The run folder `<out-root>/<run>/`: where each file lives, `run.json`, and the checks that keep a
resumed run the same run.

    run.json     format, version, invocations (argv, world_size, device, started: one per command),
                 config, data_config, model_configs,
                 param_counts, data_fingerprint, teacher_checkpoint (an outside --teacher, or null),
                 models: {role: {status: pending|partial|done, epoch, epochs, checkpoints, metrics}}
    data.json    tracin.training.records.data_record(...): indices into the data set, flipped labels
    <role>/      init.pt, epoch_NNN.pt, last.pt, history.csv, train.log (its epoch lines), curves.png,
                 confusion.png and confusion.csv (best saved checkpoint), per_class.csv (accuracy, error and
                 the class most mistaken for, per class)
    per_class.csv, per_class.png, curves.png   across the finished models: test accuracy per class, and
                 every model's test curves overlaid
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tracin.arguments import said_as_option
from tracin.config import ROLES, DataConfig, ModelConfig, TrainConfig, model_name, replica_seed, split_model_name
from tracin.errors import CheckpointError, ConfigMismatchError, TracinError
from tracin.files import link_spellings
from tracin.options import check_run_name  # noqa: F401 (re-exported)
from tracin.schemas import RUN_JSON, load_json
from tracin.training.checkpoints import (
    check_recorded_architecture,
    checkpoint_name,
    load_checkpoint,
    load_run_checkpoints,
)
from tracin.training.optimization import saved_epochs
from tracin.training.records import check_saved_digest
from tracin.version import __version__

CHECKPOINT_FILE = re.compile(r"init\.pt|last\.pt|epoch_[0-9]+\.pt")  # what tracin-train saves in a model's folder
RUN_FORMAT = "tracin-run"
CONFIG_OPTIONS = {  # the options that set run.json's configs, and the teacher's checkpoint
    "config": TrainConfig,
    "data_config": DataConfig,
    "teacher_checkpoint": "--teacher",
}
# Where the data and an outside teacher were read from: the same data (by fingerprint) and the same teacher
# (by sha256) under another spelling or in a moved folder continue the run.
RESUME_IGNORED_FIELDS = ("data_config.data_root", "teacher_checkpoint.path")


@dataclass(frozen=True)
class RunPaths:
    """File names of one run, rooted at `<out-root>/<run>`."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def data_json(self) -> Path:
        return self.root / "data.json"

    def model_dir(self, role: str) -> Path:
        return self.root / role

    def checkpoint(self, role: str, epoch: int) -> Path:
        return self.model_dir(role) / checkpoint_name(epoch)

    def last(self, role: str) -> Path:
        return self.model_dir(role) / "last.pt"

    def init(self, role: str) -> Path:
        return self.model_dir(role) / "init.pt"

    def history(self, role: str) -> Path:
        return self.model_dir(role) / "history.csv"

    def log(self, role: str) -> Path:
        return self.model_dir(role) / "train.log"

    def per_class(self, role: str) -> Path:
        return self.model_dir(role) / "per_class.csv"

    def confusion_csv(self, role: str) -> Path:
        return self.model_dir(role) / "confusion.csv"

    def curves(self, role: str) -> Path:
        return self.model_dir(role) / "curves.png"

    def confusion(self, role: str) -> Path:
        return self.model_dir(role) / "confusion.png"


def read_record(paths: RunPaths) -> Optional[dict]:
    """run.json of a run, or None when the run has none."""
    if not paths.run_json.exists() and not paths.run_json.is_symlink():
        return None
    record = load_json(paths.run_json, RUN_JSON)
    try:  # every setting typed now, also those a command does not read (a width "4" edited in by hand)
        config = TrainConfig.from_dict(record["config"])
        DataConfig.from_dict(record["data_config"])
        for model_config in record["model_configs"].values():
            ModelConfig.from_dict(model_config)
    except TracinError as error:
        raise TracinError(f"{paths.run_json}: {error}") from None
    for name, entry in record["models"].items():  # what the schema cannot say: the entry agrees with the config
        check_entry(entry, config, f"{paths.run_json}: models/{name}")
    return record


def check_entry(entry: dict, config: TrainConfig, field: str) -> None:
    """A TracinError unless a model's run.json entry is one its training writes (trainer.set_status): its
    epochs the run's, its epoch within them (all of them once done), and its checkpoints exactly the saved
    epochs up to its epoch, in order. A checkpoint dropped from the list (and its file deleted) would leave
    TracInCP's sum a term short, each later lr standing for a longer interval (red-team 25, A6)."""
    epoch, epochs = entry["epoch"], entry["epochs"]
    if epochs != config.epochs:
        raise TracinError(f"{field}/epochs is {epochs}; expected {config.epochs}, the run's config/epochs")
    if epoch > epochs or (entry["status"] == "done" and epoch != epochs):
        done = entry["status"] == "done"
        expected = f"{epochs}, its epochs, since it is done" if done else f"at most {epochs}, its epochs"
        raise TracinError(f"{field}/epoch is {epoch}; expected {expected}")
    expected = [checkpoint_name(e) for e in saved_epochs(config) if e <= epoch]
    if entry["checkpoints"] != expected:
        raise TracinError(
            f"{field}/checkpoints is {entry['checkpoints']}; expected {expected} (every {config.save_every} "
            f"epochs and the last, up to its epoch {epoch}): run.json was edited"
        )


def _leftover(path: Path) -> bool:
    """What a new run writes before run.json: data.json, and temporary files of interrupted writes."""
    return path.name == "data.json" or (path.name.startswith(".") and path.name.endswith(".tmp"))


def holds_work(paths: RunPaths) -> bool:
    """The folder holds a run (or files of someone else's); only the leftovers of a run killed before
    its run.json existed do not count: the same command starts that run again."""
    return paths.root.is_dir() and not all(_leftover(p) for p in paths.root.iterdir())


def pending_entry(epochs: int) -> dict:
    """run.json's entry of a model not trained yet (replicas get theirs when they start)."""
    return {"status": "pending", "epoch": 0, "epochs": epochs, "checkpoints": []}


def new_record(invocation: dict, configs: dict[str, Any], model_configs: dict, param_counts: dict) -> dict:
    """run.json of a new run. `configs`: config, data_config, data_fingerprint, teacher_checkpoint."""
    models = {role: pending_entry(configs["config"]["epochs"]) for role in ROLES}
    return {
        "format": RUN_FORMAT,
        "version": __version__,
        "invocations": [invocation],
        **configs,
        "model_configs": model_configs,
        "param_counts": param_counts,
        "models": models,
    }


def _flatten(values: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def differing_fields(stored: dict, current: dict) -> list[str]:
    """'name (stored -> current)' for every field whose value differs, by dotted name."""
    old, new = _flatten(stored, ""), _flatten(current, "")
    names = sorted(set(old) | set(new))
    return [f"{n} ({old.get(n)!r} -> {new.get(n)!r})" for n in names if old.get(n) != new.get(n)]


def _with_defaults(key: str, values: Any) -> Any:
    """A stored configuration with the fields added since it was written at their defaults (which is
    what the run used), so that a run from an earlier version resumes."""
    kind = {"config": TrainConfig, "data_config": DataConfig}.get(key)
    if kind is None or not isinstance(values, dict):
        return values
    return {**kind().to_dict(), **values}


def configuration_differences(record: dict, configs: dict[str, Any]) -> list[str]:
    """'field (stored -> current)' for every field of `configs` the run's record holds otherwise."""
    stored = {key: _with_defaults(key, record.get(key)) for key in configs}
    current = {key: _with_defaults(key, value) for key, value in configs.items()}
    if isinstance(stored.get("data_fingerprint"), dict) and "train_pixels_sha256" not in stored["data_fingerprint"]:
        # recorded before pixels were fingerprinted: compare what it recorded (its digest left out)
        old = {k: v for k, v in stored["data_fingerprint"].items() if k != "digest"}
        stored["data_fingerprint"] = old
        current["data_fingerprint"] = {k: v for k, v in current["data_fingerprint"].items() if k in old}
    differences = [
        d.split(" ", 1) for d in differing_fields(stored, current) if not d.startswith(RESUME_IGNORED_FIELDS)
    ]
    said = [f"{said_as_option(n, CONFIG_OPTIONS)} {v}" for n, v in differences if not n.startswith("teacher_")]
    if len(said) < len(differences):  # the teacher said by the path typed, not its digest (round 31, OS32)
        said.append(
            f"--teacher ({_said_teacher(stored['teacher_checkpoint'])} -> {_said_teacher(current['teacher_checkpoint'])})"
        )
    return said


def _said_teacher(checkpoint: Any) -> str:
    """An outside teacher's record ({path, sha256}) as 'PATH (sha256 0123456789ab)'; 'none' for no teacher."""
    if not isinstance(checkpoint, dict):
        return "none" if checkpoint is None else repr(checkpoint)
    path, digest = checkpoint.get("path"), checkpoint.get("sha256")
    said = [repr(path)] if path is not None else []
    said += [f"sha256 {str(digest)[:12]}"] if digest is not None else []
    return " ".join(said[:1] + [f"({s})" for s in said[1:]]) or "none"


def trained_differences(record: dict, payload: dict, name: str) -> list[str]:
    """What run.json (`record`) says of the run's data (data_config, data_fingerprint) and outside teacher
    otherwise than the checkpoint of model `name` (`payload`, sha256-checked) was trained with, said as
    configuration_differences says it (stored in run.json -> in the checkpoint). For a command that takes
    run.json's word without loading the run's data (tracin-eval; round 31, E1-E16: each edit was evaluated).
    A distilled student's teacher is the run's own (one of its teacher's checkpoints) or the outside one."""
    trained = {key: payload.get(key) for key in ("data_config", "data_fingerprint")}
    teacher, outside = payload.get("teacher"), record.get("teacher_checkpoint")
    if isinstance(teacher, dict):
        own = record["models"].get(model_name("teacher", split_model_name(name)[1]), {}).get("sha256") or {}
        if outside is None and teacher.get("sha256") not in own.values():  # round 34, S06: not "--teacher"
            said = _said_teacher({key: teacher.get(key) for key in ("path", "sha256")})
            return [
                *configuration_differences(record, trained),
                f"its teacher {said} is neither one of the run's teacher checkpoints nor an outside --teacher",
            ]
        if outside is not None:
            trained["teacher_checkpoint"] = {key: teacher.get(key) for key in ("path", "sha256")}
    return configuration_differences(record, trained)


def check_trained_as_recorded(run_json: Path, record: dict, payload: dict, name: str, checkpoint: Path) -> None:
    """A CheckpointError unless run.json (`record`, at `run_json`) says of the run's data and outside teacher
    what the checkpoint of model `name` (at `checkpoint`, its `payload` sha256-checked) was trained with
    (trained_differences): for tracin-eval, which takes run.json's word without loading the data (round 31,
    E1-E16), and the commands that score a model's checkpoints (round 32, H16, H18, H28)."""
    differences = trained_differences(record, payload, name)
    if differences:
        raise CheckpointError(
            f"{run_json} records another configuration than {checkpoint} was trained with: "
            f"{'; '.join(differences)}: run.json or the checkpoint was edited, or it is not this run's"
        )


def check_trained_by_run(path: Path, record: dict, run_json: Path, name: str) -> dict:
    """A CheckpointError unless the checkpoint at `path` of model `name` was trained as its run's run.json
    (`record`, at `run_json`) says: its data, architecture, replica seed, settings and learning rate
    (load_run_checkpoints), data set and teacher (check_trained_as_recorded). The one check of a run's
    checkpoint against its record, for --teacher and the commands that read a scored run (round 42, X20-X28:
    tracin-explore --run checked its bytes and architecture alone). Returns its payload."""
    role, replica = split_model_name(name)
    config, digest = TrainConfig.from_dict(record["config"]), record["data_fingerprint"]["digest"]
    seed = replica_seed(config.seed, replica) if isinstance(config.seed, int) else None
    payload = load_run_checkpoints([path], role, digest, record["model_configs"].get(role), seed, config)[2]
    check_trained_as_recorded(run_json, record, payload, name, path)
    return payload


def check_same_run(record: dict, configs: dict[str, Any], root: Path) -> None:
    """Refuse to resume a run with another configuration; the message names each differing field."""
    differences = configuration_differences(record, configs)
    if differences:
        raise ConfigMismatchError(
            f"{root} was started with another configuration: {'; '.join(differences)}. "
            "Resume with the original options, or start over with --overwrite",
            root,
            differences,
        )


def open_record(paths: RunPaths, resume: bool, overwrite: bool, configs: dict[str, Any]) -> Optional[dict]:
    """The existing run.json to continue, or None for a new run; refuses what would mix two runs. The
    same command continues its own run (killed or finished: finished models are skipped), with or
    without --resume; a run with another configuration is refused, naming the differing fields.

    Reads only: the caller removes the folder (overwrite) and writes the record, on rank 0.
    """
    if overwrite and holds_work(paths):
        check_removable(paths)  # before anything is trained
    if resume and not holds_work(paths):
        raise TracinError(
            f"{paths.root} holds no run to resume (is --run or --out-root mistyped?); start it without --resume"
        )
    if not holds_work(paths) or overwrite:
        return None
    record = read_record(paths)
    if record is None:
        raise TracinError(  # round 27, X08: "replace them with --overwrite", which refuses them
            f"{paths.root} holds files but no run.json (not a tracin-train run); move them away, or choose another --run"
        )
    differences = configuration_differences(record, configs)
    if differences and not resume:
        raise ConfigMismatchError(
            f"{paths.root} already holds a run with another configuration ({'; '.join(differences)}): continue it "
            "with its own options, replace it with --overwrite, or choose another --run",
            paths.root,
            differences,
        )
    check_same_run(record, configs, paths.root)
    return record


def made_by_tracin(paths: RunPaths) -> bool:
    """The folder holds this tool's run record (run.json with its format), or only the files a new run
    writes before its record (data.json and temporary files): the only folders --overwrite removes."""
    try:  # a regular file only: a FIFO at run.json was waited on for ever (round 31, Q8)
        record = json.loads(paths.run_json.read_text()) if paths.run_json.is_file() else None
        if isinstance(record, dict) and record.get("format") == RUN_FORMAT:
            return True
    except (OSError, ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes (round 31, J11)
        pass
    return all(_leftover(p) for p in paths.root.iterdir())


def check_removable(paths: RunPaths) -> None:
    """--overwrite removes only a folder this tool made; anything else is refused, and left as it was."""
    if not paths.root.is_dir() or not made_by_tracin(paths):
        raise TracinError(
            f"{paths.root} is not a tracin-train run (no run.json of format {RUN_FORMAT!r}); --overwrite removes only "
            "runs this tool made: move it away yourself or choose another --run"
        )


def replaced_path(paths: RunPaths) -> Path:
    """Where --overwrite keeps the run it replaces until the new one is finished: OUT_ROOT/.NAME.replaced."""
    return paths.root.with_name(f".{paths.root.name}.replaced")


def clear_run(paths: RunPaths) -> None:
    """Make room for a new run under --overwrite, once check_removable allows it: the old run is moved to
    replaced_path (kept until the new run finishes, put back if it fails); when an earlier --overwrite
    was interrupted the old run is there already, and the folder holds that attempt's partial run,
    which is removed."""
    if not paths.root.exists():
        return
    check_removable(paths)
    if replaced_path(paths).exists() or not paths.run_json.exists():
        _discard(paths.root)  # an interrupted attempt's files, never a finished run
    else:
        os.rename(paths.root, replaced_path(paths))


def _discard(folder: Path) -> None:
    """Remove a folder by renaming it to .NAME.removing first: a kill during the removal leaves that
    name, never a half folder under a name that means something (removed on the next discard)."""
    trash = folder.with_name(f".{folder.name.lstrip('.')}.removing")
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(folder, trash)
    shutil.rmtree(trash)


def finish_replacement(paths: RunPaths) -> None:
    """The new run is finished: the run it replaced goes."""
    if replaced_path(paths).exists():
        _discard(replaced_path(paths))


def restore_replaced(paths: RunPaths) -> bool:
    """The new run failed: remove what it made and put the replaced run back. Returns whether it did."""
    if not replaced_path(paths).exists():
        return False
    if paths.root.exists():
        _discard(paths.root)
    os.rename(replaced_path(paths), paths.root)
    return True


def check_saved_by_its_run(path: Path, given_as: str) -> list[str]:
    """A CheckpointError unless a checkpoint in a model folder of a tracin-train run (RUN/MODEL/FILE, RUN found
    from the path as given and as its links resolve, RUN holding this tool's run.json) is one that run saved: a
    checkpoint run.json lists of a model it lists (or its init.pt), with run.json's sha256, architecture,
    settings and data, as scoring checks them (rounds 39-41, T01, D12, D16, T15: a teacher edited in place, or
    its run's record, trained students without a word). last.pt (the resume state, which no record covers), a
    file or a model folder copied in are refused; a file in no run's model folder is its own record. `given_as`
    names the path in the message (--teacher ...). Returns a note where that model has not finished training
    (round 41, T20)."""
    notes = []
    for here in link_spellings(path):
        paths = RunPaths(here.parent.parent)
        if here.is_file() and _in_a_run(here, paths):
            note = _check_saved_in(here, paths, given_as)
            if note and note not in notes:  # the path as typed and as resolved can name one file
                notes.append(note)
    return notes


def _in_a_run(path: Path, paths: RunPaths) -> bool:
    """`path` is in a model folder of the run `paths`: one holding this tool's run.json, or one laid out as a
    run (a checkpoint's name in a model's folder beside a run.json or data.json) whose run.json is damaged,
    edited or gone (round 42, T02, T05: such a run's edited teacher was taken as a file of the user's own)."""
    if paths.run_json.is_file() and made_by_tracin(paths):
        return True
    try:
        split_model_name(path.parent.name)
    except TracinError:
        return False
    beside = (paths.run_json, paths.root / "data.json")
    return bool(CHECKPOINT_FILE.fullmatch(path.name)) and any(p.exists() or p.is_symlink() for p in beside)


def _check_saved_in(path: Path, paths: RunPaths, given_as: str) -> Optional[str]:
    """check_saved_by_its_run of the file `path` in the run `paths`, and its note."""
    record, name = read_record(paths), path.parent.name
    if record is None:
        raise CheckpointError(
            f"{given_as} {path} is a checkpoint in the model folder {name} of {paths.root}, which has no run.json "
            "to check it against (removed, or the run was killed before writing it): give a finished run's checkpoint"
        )
    entry = record["models"].get(name)
    if entry is None:
        try:
            split_model_name(name)
        except TracinError:  # a folder of the user's own in the run folder (RUN/kept/best.pt)
            return None
        known = ", ".join(record["models"])
        raise CheckpointError(
            f"{given_as} {path}: {paths.run_json} records no model {name} (it records {known}): a folder copied in"
        )
    # init.pt is recorded with the first epoch's checkpoint (round 41, T32: one killed before it was "edited")
    unrecorded_init = (
        path.name == "init.pt" and path.name not in (entry.get("sha256") or {}) and entry["status"] != "done"
    )
    if (path.name not in entry["checkpoints"] and path.name != "init.pt") or unrecorded_init:
        if path.name == "last.pt":
            why = "its resume state, which no record covers"
        elif unrecorded_init:
            why = "its untrained weights, which run.json records with the first epoch's checkpoint"
        else:
            why = "copied in, or saved by a training killed or still running before it recorded it"
        give = (
            f"give one of those it lists ({', '.join(entry['checkpoints'])})"
            if entry["checkpoints"]
            else f"it lists none of {name} yet: finish training it (tracin-train --resume)"
        )
        raise CheckpointError(f"{given_as} {path} is not a checkpoint {paths.run_json} lists of {name} ({why}): {give}")
    check_saved_digest(path, entry.get("sha256"), f"{paths.run_json}'s models/{name}/sha256")  # bytes, before loading
    if path.name == "init.pt":  # the untrained weights: their architecture
        role = split_model_name(name)[0]
        this = ModelConfig.from_dict(load_checkpoint(path, role=role)["model_config"])
        check_recorded_architecture(path, this, role, record["model_configs"].get(role))
        return None
    check_trained_by_run(path, record, paths.run_json, name)  # as the commands that score it (round 41, T15-T21)
    if entry["status"] != "done":
        return (
            f"note: {given_as} {path} is a checkpoint of {name} of {paths.root}, which has not finished training "
            f"({entry['status']}, epoch {entry['epoch']} of {entry['epochs']})"
        )
    return None
