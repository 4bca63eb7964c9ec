"""One checkpoint format, atomic writes and checked loads.

A training checkpoint is a dict with fixed keys:

    format        "tracin-checkpoint"
    version       3 (2: before `history`, still read; 1: before run.json recorded each checkpoint's sha256, refused)
    role          "teacher" | "student" | "student_baseline"
    model         model state dict (parameters and BatchNorm buffers)
    model_config  ModelConfig.to_dict()
    optimizer, scheduler   their state dicts (resume)
    epoch, step   epochs and optimizer steps completed
    lr            the weight TracIn gives this checkpoint: the mean learning rate of the optimizer steps
                  taken since the previous saved checkpoint (the step size of the interval the checkpoint
                  closes, as in TracInCP)
    lr_at_save    the scheduler's learning rate when the checkpoint was written (its next step's)
    metrics       train_loss (the training objective), train_acc, test_loss (cross-entropy), test_acc of
                  the epoch
    history       history.csv's rows up to this epoch (so tables of a run read them from a checked file)
    config        TrainConfig.to_dict();  data_config: DataConfig.to_dict()
    data_fingerprint   tracin.training.records.fingerprint(...)
    param_count   trainable parameters of the model
    teacher       what a distilled student learned from: {path, sha256, epoch} of the teacher checkpoint,
                  "self" (self-distillation), or None

Files of one model (`<run>/<role>/`, see tracin.training.run_folder): `epoch_NNN.pt` every --save-every epochs and at
the end; `init.pt`, the initial weights (epoch 0, step 0, lr 0.0, metrics {}); `last.pt`, rewritten
after every epoch, which adds

    rng           the seeds of the next epoch's data order, augmentation and global RNG
    resume        interval_lrs (the learning rates of the steps since the last saved checkpoint) and
                  history (one row per epoch), so a resumed run continues exactly
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from tracin.config import ModelConfig, TrainConfig
from tracin.errors import CheckpointError, TracinError
from tracin.files import not_a_file, write_atomic
from tracin.schemas import CHECKPOINT, check
from tracin.training.models import build_model, count_parameters
from tracin.training.optimization import checkpoint_lr, select_epochs

FORMAT = "tracin-checkpoint"
VERSION = 3  # 3: `history`; 2: run.json records the file's sha256 (models/NAME/sha256), read too; 1: refused in runs
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def epoch_of(path: Union[str, Path]) -> int:
    """The epoch in an epoch_NNN.pt file name (the one parser of that name)."""
    match = EPOCH_FILE.search(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not named like a saved epoch (epoch_NNN.pt)")
    return int(match.group(1))


def save_atomic(payload: Any, path: Union[str, Path]) -> None:
    """torch.save through write_atomic: no reader sees half a file; a killed writer leaves the old one."""
    write_atomic(path, lambda handle: torch.save(payload, handle))


def load_file(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Any:
    """torch.load with weights_only=True; a missing, truncated or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {not_a_file(path)}")
    try:
        # torchvision's reference trainer stores its argparse options beside the weights: plain data
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # a plain pickle (not torch.save's) warns about its protocol before it fails: the failure says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({reason})") from None
    except Exception as error:  # unpickling of a foreign or damaged file raises many kinds
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file ({type(error).__name__})") from None


def load_checkpoint(path: Union[str, Path], role: Optional[str] = None) -> dict[str, Any]:
    """A training checkpoint written by tracin-train, checked for format (and role, if given)."""
    payload = load_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tracin-train checkpoint (no '{FORMAT}' format key)")
    try:
        check(payload, CHECKPOINT, str(path))
    except TracinError as error:
        raise CheckpointError(str(error)) from None
    if payload.get("version", VERSION) not in range(1, VERSION + 1):  # red-team K12
        raise CheckpointError(
            f"{path}: version {payload['version']!r}: this tracin reads checkpoint versions 1 to {VERSION}"
        )
    if not _is_state_dict(payload["model"]) or not all(isinstance(key, str) for key in payload["model"]):
        raise CheckpointError(f"{path}: model: not a state dict of named tensors")
    cast = next((k for k, v in payload["model"].items() if v.is_floating_point() and v.dtype != torch.float32), None)
    if cast is not None:  # load_state_dict would cast it without a word (red-team round 7, C07)
        raise CheckpointError(
            f"{path}: model: {cast} is {payload['model'][cast].dtype}, expected torch.float32 (what tracin-train saves)"
        )
    if not math.isfinite(payload["lr"]):  # the schema's bounds let NaN through
        raise CheckpointError(f"{path}: lr: {payload['lr']} is not a learning rate")
    if role is not None and payload.get("role") != role:
        raise CheckpointError(f"{path} is a {payload.get('role')} checkpoint, expected {role}")
    expected = _teacher_expected(payload)
    if expected is not None:  # a field deleted reads as null: a distilled student's is refused too
        raise CheckpointError(f"{path}: teacher: {payload.get('teacher')!r} is not {expected}")
    return payload


def _teacher_expected(payload: dict[str, Any]) -> Optional[str]:
    """What the checkpoint's `teacher` field should be, when it is not (None: it is): the teacher record
    {path, sha256, epoch} of a student distilled from a teacher, "self" of a self-distilled one, null of every
    other model. Scoring picks the objective by it (red-team C17, C19: a hand-edit scored kd-train as ce)."""
    teacher = payload.get("teacher")
    distill = payload["config"].get("distill", "teacher") if isinstance(payload["config"], dict) else "teacher"
    if payload["role"] == "student" and distill == "teacher":
        fields = isinstance(teacher, dict) and all(isinstance(teacher.get(k), str) for k in ("path", "sha256"))
        return None if fields else "the teacher record {path, sha256, epoch} of a student distilled from a teacher"
    if payload["role"] == "student" and distill == "self":
        return None if teacher == "self" else '"self", as for a self-distilled student'
    return None if teacher is None else "null, as for a model trained without a teacher"


def list_checkpoints(model_dir: Union[str, Path]) -> list[Path]:
    """The saved epoch checkpoints of one model folder, by epoch."""
    found = [p for p in Path(model_dir).glob("epoch_*.pt") if EPOCH_FILE.search(p.name)]
    return sorted(found, key=epoch_of)


def sha256_file(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A model state TracIn replays, with the learning rate that weights it.

    state: model state dict; lr: float weight of this checkpoint; path/epoch/sha256: provenance ("" / -1
    when the state came from memory); version: of a tracin-train file (2: its run.json records its sha256).
    """

    state: dict[str, Tensor]
    lr: float
    path: str = ""
    epoch: int = -1
    sha256: str = ""
    version: int = 1

    def __post_init__(self):
        # every way of making a checkpoint (files, pairs, loaders, tracin-score's run) gets the same check
        object.__setattr__(self, "lr", _checked_lr(self.lr, self.path or "checkpoint"))


# Where checkpoints that other trainers write keep their weights, and what wraps the keys.
STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
LR_KEYS = ("lr", "learning_rate")
KEY_PREFIXES = ("module.", "model.")  # DistributedDataParallel, Lightning


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def _read_state(payload: Any, path: Union[str, Path]) -> dict[str, Tensor]:
    """The model weights of a checkpoint file: a plain state dict, or one under a STATE_KEYS key."""
    if _is_state_dict(payload):
        return payload
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict or a dict holding one")
    found = [key for key in STATE_KEYS if _is_state_dict(payload.get(key))]
    if len(found) != 1:
        how = "several state dicts" if found else "no state dict"
        raise CheckpointError(
            f"{path} holds {how} (keys: {', '.join(map(str, payload))}); weights are read from a plain state dict "
            f"or from exactly one of {', '.join(STATE_KEYS)} (or pass checkpoints_from_loader a load function)"
        )
    return payload[found[0]]


def _read_lr(payload: Any, path: Union[str, Path]) -> Optional[float]:
    """The learning rate a checkpoint file records: under LR_KEYS, or the one rate of a saved optimizer's
    param_groups; None when it records none."""
    if not isinstance(payload, dict):
        return None
    for key in LR_KEYS:
        if key in payload:
            return _checked_lr(payload[key], f"{path}['{key}']")
    rates = {float(group["lr"]) for group in _param_groups(payload) if isinstance(group, dict) and "lr" in group}
    if len(rates) > 1:
        raise CheckpointError(
            f"{path}: the optimizer's param groups have different learning rates {sorted(rates)}; give (path, lr)"
        )
    return _checked_lr(rates.pop(), f"{path} (optimizer)") if rates else None


def _param_groups(payload: dict) -> list:
    """The param groups of the optimizers a checkpoint saved: `optimizer` (torchvision's reference trainer,
    most loops) or Lightning's `optimizer_states` (one state dict per optimizer)."""
    optimizers = [payload.get("optimizer")]
    if isinstance(payload.get("optimizer_states"), (list, tuple)):
        optimizers += list(payload["optimizer_states"])
    return [group for state in optimizers if isinstance(state, dict) for group in state.get("param_groups") or ()]


def _checked_lr(value: Any, source: str) -> float:
    """TracIn's weight: a finite, positive number (0 would make every score 0, a negative one flip them)."""
    try:
        lr = float(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"{source}: learning rate {value!r} is not a number") from None
    if not math.isfinite(lr) or lr <= 0:
        raise CheckpointError(f"{source}: learning rate must be a finite positive number, got {lr}")
    return lr


def _from_path(path: Union[str, Path], lr: Optional[float]) -> Checkpoint:
    payload = load_file(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        state, stored_lr, epoch = payload["model"], payload.get("lr"), int(payload["epoch"])
    else:
        state, stored_lr = _read_state(payload, path), (_read_lr(payload, path) if lr is None else None)
        epoch = int(payload["epoch"]) if isinstance(payload, dict) and isinstance(payload.get("epoch"), int) else -1
    if lr is None and stored_lr is None:
        found = f" (keys: {', '.join(map(str, payload))})" if not _is_state_dict(payload) else ""
        raise CheckpointError(f"{path} records no learning rate{found}: give it as a (path, lr) pair")
    return Checkpoint(state, lr if lr is not None else stored_lr, str(path), epoch, sha256_file(path))


def checkpoints_from_loader(
    model: nn.Module, paths: Iterable[Union[str, Path]], checkpoints_load_func: Callable[[nn.Module, str], float]
) -> list[Checkpoint]:
    """Checkpoints of any layout through a user's loader, as captum's TracInCP takes them:
    `checkpoints_load_func(model, path)` loads the weights at `path` into the model and returns the
    checkpoint's learning rate. The model is copied; its state after each call is the checkpoint."""
    model = copy.deepcopy(model)
    loaded = []
    for path in paths:
        lr = checkpoints_load_func(model, str(path))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        loaded.append(Checkpoint(state, lr, str(path), -1, sha256_file(path) if Path(path).is_file() else ""))
    return loaded


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar")  # the files a folder of checkpoints is read for


def checkpoint_files(source: Union[str, Path]) -> list[Path]:
    """The checkpoint files a folder (its *.pt, *.pth, *.ckpt, *.tar), a glob pattern or one file names, in
    natural order (epoch_2 before epoch_10). Nothing found is a CheckpointError."""
    path = Path(source)
    if path.is_dir():
        found = [p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.is_symlink()]
    elif any(char in str(source) for char in "*?["):
        anchor = Path(path.anchor) if path.is_absolute() else Path()
        found = [p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file()]
    else:
        found = [path] if path.is_file() else []
    if not found:
        what = "the folder" if path.is_dir() else "the pattern" if "*" in str(source) else "the path"
        raise CheckpointError(f"{what} {source} names no checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})")
    return sorted(found, key=lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)])


def load_checkpoints(source: Any, prefix: Optional[str] = None) -> list[Checkpoint]:
    """Checkpoints from a folder, a glob pattern or a path (str or Path), or from a list of what
    resolve_checkpoints takes. `prefix` selects one model of a checkpoint that holds several (a distillation
    module's `student.` and `teacher.` keys): only its keys are kept, without the prefix."""
    checkpoints = resolve_checkpoints(source)
    return checkpoints if prefix is None else [_select(c, prefix) for c in checkpoints]


def _select(checkpoint: Checkpoint, prefix: str) -> Checkpoint:
    state = {key[len(prefix) :]: value for key, value in checkpoint.state.items() if key.startswith(prefix)}
    if not state:
        found = sorted(common_prefixes(checkpoint.state))
        raise CheckpointError(
            f"{checkpoint.path or 'a checkpoint'} has no key starting {prefix!r}"
            + (f" (its prefixes: {', '.join(found)})" if found else "")
        )
    return dataclasses.replace(checkpoint, state=state)


def common_prefixes(state: dict[str, Any]) -> set[str]:
    """The first dotted parts of a state dict's keys ("student.", "teacher."), where there are several."""
    prefixes = {key.split(".", 1)[0] + "." for key in state if "." in key}
    return prefixes if len(prefixes) > 1 else set()


def resolve_checkpoints(items: Any) -> list[Checkpoint]:
    """Accepts a folder, a glob pattern or a path (checkpoint_files), or a list of Checkpoint objects, paths
    (lr read from the file), (path, lr) pairs and (state_dict, lr) pairs. A path may hold a tracin-train
    checkpoint, a plain state dict, or a dict with the weights under one of STATE_KEYS and the learning rate
    under LR_KEYS or in a saved optimizer's param_groups (`optimizer`, or Lightning's `optimizer_states`: the
    layouts of torchvision's reference trainer, Lightning and most training loops)."""
    named = isinstance(items, (str, Path))
    if named:
        items = checkpoint_files(items)
    resolved = []
    for item in items:
        if isinstance(item, Checkpoint):
            resolved.append(item)
        elif isinstance(item, (str, Path)):
            resolved.append(_from_path(item, None))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (str, Path)):
            resolved.append(_from_path(item[0], item[1]))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], dict):
            resolved.append(Checkpoint(dict(item[0]), item[1]))
        else:
            raise CheckpointError(f"cannot use {type(item).__name__} as a checkpoint: give a path or (path, lr)")
    if not resolved:
        raise CheckpointError("no checkpoints given: TracIn needs at least one")
    if named:
        _refuse_copies(resolved)
    return resolved


def _refuse_copies(checkpoints: Sequence[Checkpoint]) -> None:
    """A folder often holds one checkpoint twice (torchvision's checkpoint.pth beside model_N.pth, Lightning's
    last.ckpt): it would count twice in the sum, so it is refused, naming both files."""
    first: dict[str, str] = {}
    for checkpoint in checkpoints:
        if checkpoint.sha256 and checkpoint.sha256 in first:
            raise CheckpointError(
                f"{checkpoint.path} and {first[checkpoint.sha256]} are the same checkpoint, which would "
                "count twice: name the files with a glob (e.g. 'model_*.pth') or a list"
            )
        first.setdefault(checkpoint.sha256, checkpoint.path)


def fit_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state with a wrapper's key prefix (KEY_PREFIXES: DDP's "module.", Lightning's "model.")
    removed when that, and only that, makes its keys the model's."""
    wanted = set(model.state_dict())
    if set(state) == wanted:
        return state
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) == wanted:
                return stripped
    return state


def load_state(model: nn.Module, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """load_state_dict that reports a checkpoint not fitting the model as one CheckpointError (short: the
    first keys missing and unexpected, and the prefix that selects the model where the checkpoint holds
    several)."""
    state = fit_state(model, state)
    wanted = model.state_dict()
    missing, unexpected = [k for k in wanted if k not in state], [k for k in state if k not in wanted]
    if missing or unexpected:
        fits = [
            p for p in sorted(common_prefixes(state)) if {k[len(p) :] for k in state if k.startswith(p)} >= set(wanted)
        ]
        hint = (
            f"; it holds several models: select one with tracin.load_checkpoints(..., prefix={fits[0]!r})"
            if fits
            else ""
        )
        raise CheckpointError(
            f"{source} does not fit the model: {_few(missing)} missing, {_few(unexpected)} unexpected{hint}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{source} does not fit the model: {detail[:500]}") from None


def _few(keys: Sequence[str], shown: int = 3) -> str:
    """'2 keys (a, b)' or '40 keys (a, b, c, ...)', for a one-line message."""
    more = ", ..." if len(keys) > shown else ""
    return f"{len(keys)} keys ({', '.join(keys[:shown])}{more})" if keys else "no keys"


# --- tracin-train's own checkpoints: made, selected, loaded and checked here only -----------------------


def make_payload(
    role: str,
    model: nn.Module,
    model_config: ModelConfig,
    training: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """A checkpoint in the format above. training: optimizer, scheduler, epoch, step, lr, lr_at_save,
    metrics, history; provenance: config, data_config, data_fingerprint, teacher (see the module docstring)."""
    keys = ("optimizer", "scheduler", "epoch", "step", "lr", "lr_at_save", "metrics", "history")
    missing = [
        k
        for k in (*keys, "config", "data_config", "data_fingerprint", "teacher")
        if k not in {**training, **provenance}
    ]
    if missing:
        raise ValueError(f"a checkpoint payload needs {', '.join(missing)}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "model": {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()},
        "model_config": model_config.to_dict(),
        **{k: training[k] for k in keys},
        **provenance,
        "param_count": count_parameters(model),
    }


def with_resume_state(
    payload: dict[str, Any], rng: dict[str, int], interval_lrs: Sequence[float], history: Sequence[dict]
) -> dict[str, Any]:
    """last.pt: a checkpoint plus what an exact resume needs (the `rng` and `resume` keys above)."""
    return {**payload, "rng": rng, "resume": {"interval_lrs": list(interval_lrs), "history": list(history)}}


def teacher_record(path: Union[str, Path], payload: dict[str, Any]) -> dict[str, Any]:
    """What a distilled student's checkpoints record of their teacher: {path, sha256, epoch}. The path is
    absolute, so that the student is scored with --loss kd from any folder (round 8: X2)."""
    return {"path": os.path.abspath(path), "sha256": sha256_file(path), "epoch": int(payload["epoch"])}


def load_model(path: Union[str, Path], role: Optional[str] = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model on the CPU with the checkpoint's weights, payload) of a tracin-train checkpoint. Building
    the model draws from no global random stream, so loading never changes a run's randomness."""
    payload = load_checkpoint(path, role=role)
    with torch.random.fork_rng(devices=[]):
        model = build_model(ModelConfig.from_dict(payload["model_config"]))
    load_state(model, payload["model"], str(path))
    return model, payload


def load_distillation_teacher(payload: dict[str, Any], elsewhere: Sequence[Path] = ()) -> nn.Module:
    """The teacher a distilled student learned from, as its checkpoint records it, checked to be the
    same file (sha256) the student was trained with: at its recorded path, or, where that is gone (a run
    folder moved: round 10, F18), among `elsewhere` (the run's own teacher checkpoints)."""
    teacher = payload.get("teacher")
    if not isinstance(teacher, dict) or not teacher.get("path"):
        raise CheckpointError(
            f"the {payload.get('role')} was not distilled from a teacher checkpoint (it records {teacher!r})"
        )
    path = Path(teacher["path"])
    if not teacher.get("sha256"):
        raise CheckpointError(
            f"the {payload.get('role')}'s record of its teacher has no sha256; the teacher cannot be checked"
        )
    if path.is_file() and sha256_file(path) != teacher["sha256"]:
        raise CheckpointError(
            f"the teacher {path} changed since the {payload.get('role')} was trained from it (sha256 differs); "
            "scoring it with --loss kd needs the original teacher file"
        )
    found = [p for p in (path, *elsewhere) if p.is_file() and (p == path or sha256_file(p) == teacher["sha256"])]
    if not found:
        raise CheckpointError(
            f"the teacher {path} the {payload.get('role')} was distilled from is missing, and no checkpoint of "
            "this run's teacher is that file (sha256): scoring it with --loss kd needs it"
        )
    return load_model(found[0], role="teacher")[0]


def select_checkpoints(model_dir: Union[str, Path], role: str, spec: str) -> list[Path]:
    """`all`, `last`, or comma-separated epochs, among the model's saved epoch_NNN.pt files."""
    available = list_checkpoints(model_dir)
    if not available:
        raise CheckpointError(f"{model_dir} has no checkpoints; train {role} first (tracin-train)")
    by_epoch = {epoch_of(p): p for p in available}
    return [by_epoch[e] for e in select_epochs(spec, list(by_epoch), role)]


def check_recorded_architecture(
    path: Union[str, Path], this: ModelConfig, role: str, recorded: Union[ModelConfig, dict, None]
) -> None:
    """A CheckpointError unless `this`, the architecture a checkpoint (or init.pt) at `path` holds, is the one
    run.json's model_configs `recorded` for its role (None: the run recorded none, nothing to compare). Every
    command that loads a run's model checks it: a checkpoint swapped in from another run or width is refused."""
    if recorded is None:
        return
    expected = recorded if isinstance(recorded, ModelConfig) else ModelConfig.from_dict(recorded)
    if this != expected:
        differ = ", ".join(
            f"{k} {getattr(this, k)} (run.json: {getattr(expected, k)})"
            for k in this.to_dict()
            if getattr(this, k) != getattr(expected, k)
        )
        raise CheckpointError(f"{path} is not the architecture the run recorded for {role}: {differ}")


def check_trained_config(path: Path, payload: dict[str, Any], config: TrainConfig) -> None:
    """A CheckpointError unless the checkpoint was trained with `config` (run.json's, its replica's seed):
    a setting edited in run.json, or in a checkpoint (a distilled student's temperature, which scoring with
    --loss kd reads), was used without a word (round 9: F1, F5-F9)."""
    recorded = TrainConfig.from_dict(payload["config"]).to_dict()  # fields added since take their defaults
    for field, value in config.to_dict().items():
        if recorded.get(field) != value:
            raise CheckpointError(
                f"{path} was trained with {field} {recorded.get(field)!r}, but run.json says {value!r}: run.json "
                "or the checkpoint was edited, or it is not this run's"
            )


LR_RTOL = 1e-9  # the replay sums the same floats in the same order: equal, up to a resumed scheduler's rounding


def check_checkpoint_lr(path: Path, payload: dict[str, Any], schedule: TrainConfig) -> None:
    """A CheckpointError unless the checkpoint's lr (its weight in TracInCP) is what the run's schedule gives
    its interval, replayed (tracin.training.optimization.checkpoint_lr), and its step count is whole epochs:
    an lr edited by hand was scored without a word (round 8: D5)."""
    epoch, step = int(payload["epoch"]), int(payload["step"])
    if epoch < 1 or step < epoch or step % epoch:
        raise CheckpointError(f"{path} records step {step} at epoch {epoch}: not whole epochs of one length")
    expected = checkpoint_lr(schedule, step // epoch, epoch)
    if not math.isclose(payload["lr"], expected, rel_tol=LR_RTOL):
        raise CheckpointError(
            f"{path} records lr {payload['lr']:.6g}, but the run's schedule gives {expected:.6g} to its epochs: "
            "its learning rate was edited, or it is not this run's checkpoint"
        )


def load_run_checkpoints(
    paths: Sequence[Path],
    role: str,
    data_digest: str,
    recorded: Optional[dict] = None,
    seed: Optional[int] = None,
    schedule: Optional[TrainConfig] = None,
) -> tuple[list[Checkpoint], ModelConfig, dict]:
    """A model's checkpoints from a run (checked: format, role, trained on the data with fingerprint
    `data_digest`, one architecture, the one `recorded` in run.json's model_configs where given, the
    training seed `seed` where given: a replica's, so that a folder copied from another replica is refused,
    and the learning rate the run's `schedule` gives the checkpoint's interval where given), its
    ModelConfig, and the last checkpoint's payload."""
    checkpoints, config, payload = [], None, {}
    expected = ModelConfig.from_dict(recorded) if recorded is not None else None
    for path in paths:
        payload = load_checkpoint(path, role=role)
        if payload.get("data_fingerprint", {}).get("digest") != data_digest:
            raise CheckpointError(f"{path} was trained on other data than its run.json records (data_fingerprint)")
        this = ModelConfig.from_dict(payload["model_config"])  # fields added since it was written take defaults
        if config is not None and this != config:
            raise CheckpointError(f"{path} has another architecture than the other {role} checkpoints")
        trained_with = payload["config"].get("seed") if isinstance(payload["config"], dict) else None
        if seed is not None and trained_with != seed:
            raise CheckpointError(
                f"{path} was trained with seed {trained_with}, not this model's {seed}: a folder copied "
                "from another replica or run?"
            )
        check_recorded_architecture(path, this, role, expected)
        if int(payload["epoch"]) != epoch_of(path):  # its lr would be replayed at another step of the schedule
            raise CheckpointError(
                f"{path} holds epoch {payload['epoch']}, not the {epoch_of(path)} of its name: a file renamed "
                "or copied from elsewhere?"
            )
        if schedule is not None:
            check_trained_config(path, payload, schedule if seed is None else dataclasses.replace(schedule, seed=seed))
            check_checkpoint_lr(path, payload, schedule)
        config = this
        checkpoints.append(
            Checkpoint(
                payload["model"],
                payload["lr"],
                str(path),
                int(payload["epoch"]),
                sha256_file(path),
                payload.get("version", VERSION),
            )
        )
    return checkpoints, config, payload
