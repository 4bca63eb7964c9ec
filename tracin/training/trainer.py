"""Training: one code path for the teacher, the distilled student and the baseline student.

The spine is `train_one_epoch`, `evaluate` and `fit` (as in torchvision's classification reference);
tracin.training.roles's `train_role` trains one model of a run; tracin.commands.train trains the models a
run asks for, in the order teacher -> student -> student_baseline. Beside this module: batches (each
epoch's replayable batches and seeds), optimization (optimizer and schedule), tables (the CSV files).

What TracIn needs from training, and how this module keeps it:
- Replayable data (tracin.training.batches). Each epoch's order and augmentation come from generators
  seeded by (seed, epoch) alone, never by the model, so a resumed run replays the same batches and the
  baseline student sees exactly the batches and augmentation draws of the distilled student.
- One start for both students (tracin.training.roles). Their initial weights come from `seed + 1` (and,
  with --student-init teacher, the trained teacher's stem and stages); each model's initial state is saved
  as `init.pt`.
- The step size of each checkpoint. A saved checkpoint's `lr` is the mean learning rate of the optimizer
  steps since the previous saved checkpoint (TracInCP's eta for the interval the checkpoint closes);
  `lr_at_save` is the scheduler's rate when it was written, i.e. that of the next step.
- Exact resume. All randomness of an epoch (order, augmentation, the global RNG) is seeded by (seed,
  epoch), so `last.pt` (a checkpoint plus the open interval's learning rates, the history and the next
  epoch's seeds) is all a resume needs; it is rewritten after every epoch and a killed epoch is replayed
  from its start. On CPU, with deterministic algorithms, a resumed run ends bitwise equal to an
  uninterrupted one.

Distillation: alpha * T^2 * KL + (1 - alpha) * CE (or the logit MSE) against the teacher's logits,
computed in eval mode on the same augmented batch. Self-distillation (--distill self): the teacher for the
epochs after save k is a frozen copy of the student's own checkpoint k; before its first save the student
trains with cross-entropy only.

Several processes (torchrun): every rank draws the same global batch and augmentation and trains on its
contiguous slice; DDP averages gradients, and the loss is scaled so each step is the mean over the global
batch. BatchNorm statistics are per rank during an epoch; rank 0's are broadcast at its end, so all ranks
evaluate and save one model. Rank 0 writes the files.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from tracin import faults
from tracin.config import DataConfig, ModelConfig, TrainConfig
from tracin.errors import CheckpointError, NonFiniteError
from tracin.files import append_line, write_json_atomic
from tracin.runtime import Runtime
from tracin.training import losses
from tracin.training.batches import epoch_rng, epoch_seeds, steps_per_epoch, training_batches
from tracin.training.checkpoints import (
    checkpoint_name,
    load_checkpoint,
    load_model,
    load_state,
    make_payload,
    save_atomic,
    with_resume_state,
)
from tracin.training.data import RunData, Split
from tracin.training.models import build_model
from tracin.training.optimization import build_optimizer, build_scheduler, saved_epochs
from tracin.training.plots import plot_confusion, plot_history
from tracin.training.records import (
    check_nothing_lost,
    check_resumed_checkpoints,
    check_resumed_training,
    saved_digests,
)
from tracin.training.run_folder import RunPaths, pending_entry
from tracin.training.tables import METRICS, confusion_matrix, per_class_rows, write_csv, write_history

EVAL_BATCH_SIZE = 512
PROGRESS_EVERY = 10  # steps between progress-bar loss readings (each one waits for the device)


# ---------------------------------------------------------------------------------------- objectives


def objective_for(teacher: Optional[nn.Module], config: TrainConfig, runtime: Runtime) -> losses.Objective:
    """Cross-entropy, or distillation against `teacher` (its logits under the run's autocast)."""
    if teacher is None:
        return losses.CrossEntropy(config.label_smoothing)
    return losses.Distillation(
        teacher, config.temperature, config.alpha, config.kd_loss, config.label_smoothing, runtime.autocast
    )


def seeded_model(config: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised model that depends on `seed` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config)


def blank_model(config: ModelConfig) -> nn.Module:
    """A model to load weights into. Training never draws from the global RNG, and neither does this,
    so the RNG state in last.pt is the same whether or not a run was resumed."""
    return seeded_model(config, 0)


def freeze(model: nn.Module) -> nn.Module:
    """The model in eval mode without gradients: a distillation teacher."""
    model.zero_grad(set_to_none=True)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------ one epoch, evaluation


@dataclass
class EpochResult:
    """loss: mean training objective over the epoch's examples; accuracy: fraction of training examples
    (augmented, train mode) predicted right; lrs: learning rate of each optimizer step, in order;
    hard_loss: mean cross-entropy of the same logits against the training labels (no label smoothing)."""

    loss: float
    accuracy: float
    lrs: list[float]
    hard_loss: float = math.nan


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    batches: Iterator[tuple[Tensor, Tensor, int]],
    loss_fn: losses.Objective,
    runtime: Runtime,
    progress: Optional[tqdm] = None,
) -> EpochResult:
    """One pass over `batches` (from `training_batches`): one optimizer and one scheduler step each."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    hard_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    count, lrs = 0, []
    for images, labels, global_size in batches:
        with runtime.autocast():
            logits = model(images).float()
        per_example = loss_fn(logits, labels, images)
        # DDP averages gradients over ranks: this scale makes the step the mean over the global batch,
        # also when ranks hold slices of unequal size.
        loss = per_example.sum() * (runtime.world_size / global_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        loss_sum += per_example.detach().sum()
        hard_sum += F.cross_entropy(logits.detach(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        count += len(labels)
        _show_progress(progress, per_example)
    totals = runtime.all_reduce_sum(torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(count), hard_sum]))
    total_loss, total_correct, total_count, total_hard = totals.tolist()
    return EpochResult(total_loss / total_count, total_correct / total_count, lrs, total_hard / total_count)


def _show_progress(progress: Optional[tqdm], per_example: Tensor) -> None:
    if progress is None or progress.disable:
        return
    progress.update(1)
    if progress.n % PROGRESS_EVERY == 0:
        progress.set_postfix(loss=f"{per_example.detach().mean().item():.3f}", refresh=False)


@dataclass
class Evaluation:
    """loss: mean cross-entropy (nats); accuracy: fraction right; predictions: Tensor[n] int64 on CPU."""

    loss: float
    accuracy: float
    predictions: Tensor


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, runtime: Runtime, batch_size: int = EVAL_BATCH_SIZE) -> Evaluation:
    """Un-augmented evaluation of `model` (put in eval mode) on a whole split."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    predictions = []
    for images, labels in split.batches(batch_size, runtime.device):
        with runtime.autocast():
            logits = model(images.contiguous(memory_format=runtime.memory_format)).float()
        loss_sum += losses.cross_entropy(logits, labels).sum()
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = (predicted == split.labels.to(runtime.device)).double().mean()
    return Evaluation(loss_sum.item() / len(split), accuracy.item(), predicted.cpu())


# --------------------------------------------------------------------------------------- one model


@dataclass
class RunContext:
    """What the models of one run share. `data` lives on the runtime's device; `record` is run.json."""

    paths: RunPaths
    config: TrainConfig
    data_config: DataConfig
    data: RunData
    fingerprint: dict
    runtime: Runtime
    record: dict

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data.train), self.config.batch_size, self.runtime.world_size)


@dataclass
class ModelJob:
    """One model of a run: role, name (its folder and run.json entry: the role, or ROLE.rN for replica N),
    architecture, initial weights, and what it distils from.

    teacher: a frozen module for distillation (None: cross-entropy, or self-distillation); teacher_info:
    its provenance (path, sha256, epoch) or "self", stored in every checkpoint.
    """

    role: str
    name: str
    model_config: ModelConfig
    initial_state: dict[str, Tensor]
    teacher: Optional[nn.Module] = None
    self_distill: bool = False
    teacher_info: Optional[dict | str] = None


@dataclass
class TrainState:
    """Where one model's training stands; kept in last.pt.

    interval_lrs: learning rates of the optimizer steps since the previous saved checkpoint (their mean
    becomes the next checkpoint's `lr`); history: one row per epoch (HISTORY_FIELDS).
    """

    epoch: int = 0
    step: int = 0
    interval_lrs: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


@dataclass
class Trainee:
    """A model being trained: `model` is what is saved and evaluated, `train_model` what the training
    forward goes through (the model itself, or its DDP wrapper)."""

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    state: TrainState


def fit(job: ModelJob, run: RunContext) -> list[dict]:
    """Train one model to `config.epochs`, continuing from its last.pt when there is one; write its
    checkpoints, history and plots. Returns the history, one row per epoch."""
    trainee = start_or_resume(job, run)
    teacher = self_teacher_at(job, run, trainee.state.epoch) if job.self_distill else job.teacher
    for epoch in range(trainee.state.epoch + 1, run.config.epochs + 1):
        saved = run_epoch(job, run, trainee, teacher, epoch)
        if saved and job.self_distill:
            teacher = freeze(copy.deepcopy(trainee.model))
    finish_model(job, run, trainee)
    return trainee.state.history


def start_or_resume(job: ModelJob, run: RunContext) -> Trainee:
    """A model, optimizer and scheduler: restored from last.pt, or fresh from the job's initial state
    (which is then saved as init.pt)."""
    last = run.paths.last(job.name)
    payload = load_checkpoint(last, role=job.role) if last.is_file() else None
    entry, field = run.record["models"][job.name], f"{run.paths.run_json}'s models/{job.name}"
    if payload is None and run.paths.model_dir(job.name).is_dir():
        check_nothing_lost(last, entry, field)
    elif payload is None and entry.get("epoch"):  # its folder moved away: trained again, recorded afresh
        entry.update(pending_entry(run.config.epochs), sha256={})
    elif payload is not None:
        check_resumable(last, payload, run.config.epochs)  # before its weights are loaded
        check_resumed_training(last, payload, run.config, run.fingerprint["digest"], job.model_config)
        check_resumed_checkpoints(last, payload, entry.get("sha256") or {}, f"{field}/sha256", run.config)
    source = str(last) if payload else f"the initial state of the {job.name}"
    trainee = new_trainee(job, run, payload["model"] if payload else job.initial_state, source)
    if payload is None:
        init_payload = checkpoint_payload(job, run, trainee, lr=0.0, metrics={})
        _save_on_main(run, lambda: init_payload, run.paths.init(job.name))
    else:
        _restore(trainee, payload)
    return trainee


def check_resumable(path: Path, payload: dict, epochs: int) -> None:
    """A CheckpointError unless `payload` is a last.pt this run could have written: optimizer, scheduler and
    resume state present, and an epoch within the run's `epochs` that its history covers (red-team Q06, Q07:
    an epoch checkpoint copied over last.pt, or its epoch edited, failed later or rewrote run.json)."""
    resume = payload.get("resume")
    for name, value in (
        ("optimizer", payload.get("optimizer")),
        ("scheduler", payload.get("scheduler")),
        ("resume", resume),
    ):
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: {name}: missing (not a last.pt tracin-train wrote)")
    if not isinstance(resume.get("history"), list) or not isinstance(resume.get("interval_lrs"), list):
        raise CheckpointError(f"{path}: resume: no history and interval_lrs (not a last.pt tracin-train wrote)")
    if not 1 <= payload["epoch"] <= epochs or len(resume["history"]) != payload["epoch"]:
        raise CheckpointError(
            f"{path}: epoch {payload['epoch']} is not one of the run's {epochs} epochs its history of "
            f"{len(resume['history'])} covers; move it away to restart that model"
        )


def new_trainee(job: ModelJob, run: RunContext, state: dict[str, Tensor], source: str) -> Trainee:
    """A model with these weights on the runtime's device, and a fresh optimizer and schedule for the run."""
    model = blank_model(job.model_config)
    load_state(model, state, source)
    model.to(run.runtime.device, memory_format=run.runtime.memory_format)
    optimizer = build_optimizer(model, run.config)
    scheduler = build_scheduler(optimizer, run.config, run.steps_per_epoch)
    return Trainee(model, _parallel(model, run.runtime), optimizer, scheduler, TrainState())


def retrain(job: ModelJob, run: RunContext) -> nn.Module:
    """The job's model trained from its initial state on run.data.train for run.config.epochs, as fit
    trains it (the same batches, schedule, distillation and random streams), writing nothing: a
    counterfactual retraining (tracin-validate). With the run's own data, seed and epochs, and the run's
    world size (tracin-validate retrains in one process: a run trained by one), it ends equal to the run's
    final checkpoint (bitwise on CPU)."""
    trainee = new_trainee(job, run, job.initial_state, f"the initial state of the {job.name}")
    teacher = None if job.self_distill else job.teacher
    saved = saved_epochs(run.config)
    for epoch in range(1, run.config.epochs + 1):
        train_epoch(job, run, trainee, teacher, epoch)
        run.runtime.broadcast_buffers(trainee.model)
        if job.self_distill and epoch in saved:
            teacher = freeze(copy.deepcopy(trainee.model))
    return trainee.model


@torch.no_grad()
def logit_margins(model: nn.Module, split: Split, runtime: Runtime, batch_size: int = EVAL_BATCH_SIZE) -> Tensor:
    """Tensor[n] float32 on the CPU: z_label - max_{j != label} z_j of each example's logits (eval mode,
    un-augmented, as evaluate): positive when predicted right."""
    model.eval()
    margins = []
    for images, labels in split.batches(batch_size, runtime.device):
        with runtime.autocast():
            logits = model(images.contiguous(memory_format=runtime.memory_format)).float()
        own = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        margins.append((own - others).cpu())
    return torch.cat(margins)


def _restore(trainee: Trainee, payload: dict) -> None:
    trainee.optimizer.load_state_dict(payload["optimizer"])
    trainee.scheduler.load_state_dict(payload["scheduler"])
    resume = payload["resume"]
    history, interval_lrs = list(resume["history"]), list(resume["interval_lrs"])
    trainee.state = TrainState(payload["epoch"], payload["step"], interval_lrs, history)


def _parallel(model: nn.Module, runtime: Runtime) -> nn.Module:
    if not runtime.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.is_cuda else None)


def self_teacher_at(job: ModelJob, run: RunContext, epoch: int) -> Optional[nn.Module]:
    """For a self-distilled model resumed after `epoch` epochs: its latest saved checkpoint, frozen
    (None before its first save)."""
    earlier = [e for e in saved_epochs(run.config) if e <= epoch]
    if not earlier:
        return None
    return load_frozen(run.paths.checkpoint(job.name, earlier[-1]), job.role, run.runtime)


def load_frozen(path: Path, role: Optional[str], runtime: Runtime) -> nn.Module:
    """The model of a tracin checkpoint, frozen and on the runtime's device."""
    return freeze(load_model(path, role)[0].to(runtime.device, memory_format=runtime.memory_format))


def run_epoch(job: ModelJob, run: RunContext, trainee: Trainee, teacher: Optional[nn.Module], epoch: int) -> bool:
    """Train, evaluate and save one epoch. Returns whether it ended with a saved checkpoint."""
    started = time.perf_counter()
    result = train_epoch(job, run, trainee, teacher, epoch)
    run.runtime.broadcast_buffers(trainee.model)
    trained = time.perf_counter()
    test = evaluate(trainee.model, run.data.test, run.runtime)
    row = _close_epoch(trainee.state, epoch, result, test, run.config)
    row["train_soft_loss"] = soft_loss(result, run.config) if teacher is not None else ""
    row["train_seconds"], row["eval_seconds"] = round(trained - started, 3), round(time.perf_counter() - trained, 3)
    row["seconds"] = round(time.perf_counter() - started, 3)
    save_epoch(job, run, trainee, row)
    line = summary_line(job.name, row, run.config.epochs)
    run.runtime.log(line)
    if run.runtime.is_main:
        append_line(run.paths.log(job.name), line)  # train.log: the lines of every invocation, resumes too
    return bool(row["checkpoint"])


def soft_loss(result: EpochResult, config: TrainConfig) -> float:
    """The epoch's mean soft-target term (T^2 * KL, or the logit MSE) of a distilled model: the objective
    less its (1 - alpha) * CE part, over alpha (exact without label smoothing; NaN when alpha is 0)."""
    if config.alpha == 0 or config.label_smoothing:
        return math.nan
    return (result.loss - (1.0 - config.alpha) * result.hard_loss) / config.alpha


def train_epoch(
    job: ModelJob, run: RunContext, trainee: Trainee, teacher: Optional[nn.Module], epoch: int
) -> EpochResult:
    """`train_one_epoch` on the epoch's batches, with its progress bar; a non-finite loss ends the run."""
    config, runtime = run.config, run.runtime
    batches = training_batches(
        run.data.train_of(job.name), config.batch_size, config.seed, epoch, config.augment, runtime
    )
    description = f"{job.name} {epoch}/{config.epochs}"
    bar = tqdm(total=run.steps_per_epoch, desc=description, leave=False, disable=runtime.progress_disabled)
    with bar, epoch_rng(config.seed, epoch, runtime):
        objective = objective_for(teacher, config, runtime)
        result = train_one_epoch(
            trainee.train_model, trainee.optimizer, trainee.scheduler, batches, objective, runtime, bar
        )
    if not math.isfinite(result.loss):
        raise NonFiniteError(
            f"{job.name}: the training loss became non-finite in epoch {epoch} (peak lr {config.lr}); "
            "lower --lr, or check the data"
        )
    return result


def _close_epoch(state: TrainState, epoch: int, result: EpochResult, test: Evaluation, config: TrainConfig) -> dict:
    state.epoch, state.step = epoch, state.step + len(result.lrs)
    state.interval_lrs.extend(result.lrs)
    row = {
        "epoch": epoch,
        "step": state.step,
        "lr": sum(result.lrs) / len(result.lrs),
        "train_loss": result.loss,
        "train_acc": result.accuracy,
        "train_hard_loss": result.hard_loss,
        "test_loss": test.loss,
        "test_acc": test.accuracy,
        "checkpoint": checkpoint_name(epoch) if epoch in saved_epochs(config) else "",
    }
    state.history.append(row)
    return row


def summary_line(role: str, row: dict, epochs: int) -> str:
    saved = f" | saved {row['checkpoint']}" if row["checkpoint"] else ""
    return (
        f"{role} epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.1%}"
        f" | test loss {row['test_loss']:.4f} acc {row['test_acc']:.1%} | lr {row['lr']:.4g}"
        f" | {row['seconds']:.1f}s{saved}"
    )


# ------------------------------------------------------------------------------------ saving a model


def checkpoint_payload(job: ModelJob, run: RunContext, trainee: Trainee, lr: float, metrics: dict) -> dict:
    """The trainee's current state as a checkpoint (tracin.training.checkpoints.make_payload)."""
    state, scheduler = trainee.state, trainee.scheduler
    training = {
        "optimizer": trainee.optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "lr": lr,
        "lr_at_save": float(scheduler.get_last_lr()[0]),
        "metrics": metrics,
        "history": list(state.history),
    }
    provenance = {
        "config": run.config.to_dict(),
        "data_config": run.data_config.to_dict(),
        "data_fingerprint": run.fingerprint,
        "teacher": job.teacher_info,
    }
    return make_payload(job.role, trainee.model, job.model_config, training, provenance)


def resume_payload(job: ModelJob, run: RunContext, trainee: Trainee, lr: float, metrics: dict) -> dict:
    """last.pt: a checkpoint plus what an exact resume needs: the seeds of the next epoch (all its
    randomness), the learning rates of the open interval, the history."""
    state = trainee.state
    payload = checkpoint_payload(job, run, trainee, lr, metrics)
    return with_resume_state(payload, epoch_seeds(run.config.seed, state.epoch + 1), state.interval_lrs, state.history)


def _save_on_main(run: RunContext, make_payload: Callable[[], dict], path: Path) -> None:
    if run.runtime.is_main:
        save_atomic(make_payload(), path)
    run.runtime.barrier()


def save_epoch(job: ModelJob, run: RunContext, trainee: Trainee, row: dict) -> None:
    """The epoch checkpoint when one is due (its lr closes the interval), then last.pt, history.csv and
    run.json; rank 0 writes, the others wait."""
    state, runtime = trainee.state, run.runtime
    metrics = {name: row[name] for name in METRICS}
    lr = sum(state.interval_lrs) / len(state.interval_lrs)
    if row["checkpoint"]:
        path = run.paths.checkpoint(job.name, state.epoch)
        _save_on_main(run, lambda: checkpoint_payload(job, run, trainee, lr, metrics), path)
        state.interval_lrs = []
    _save_on_main(run, lambda: resume_payload(job, run, trainee, lr, metrics), run.paths.last(job.name))
    faults.reach("train-epoch")
    if runtime.is_main:
        write_history(state.history, run.paths.history(job.name))
        set_status(run, job.name, "partial", state)


def set_status(run: RunContext, role: str, status: str, state: TrainState, **extra) -> None:
    """Record a model's progress in run.json (rank 0 only)."""
    entry = run.record["models"][role]
    names = [row["checkpoint"] for row in state.history if row["checkpoint"]]
    hashed = ["init.pt", *names] if run.paths.init(role).is_file() else names  # validate retrains from init.pt
    entry.update(
        status=status,
        epoch=state.epoch,
        epochs=run.config.epochs,
        checkpoints=names,
        sha256=saved_digests(run.paths.model_dir(role), hashed, entry.get("sha256", {})),
        metrics={name: state.history[-1][name] for name in METRICS} if state.history else {},
        **extra,
    )
    write_json_atomic(run.record, run.paths.run_json)


def best_saved(history: list[dict]) -> dict:
    """The history row of the saved checkpoint with the highest test accuracy (the earliest on ties)."""
    return max((row for row in history if row["checkpoint"]), key=lambda row: row["test_acc"])


def finish_model(job: ModelJob, run: RunContext, trainee: Trainee) -> None:
    """Curves, the confusion matrix of the best saved checkpoint, and status `done` in run.json."""
    if run.runtime.is_main:
        paths, history, test = run.paths, trainee.state.history, run.data.test
        write_history(history, paths.history(job.name))  # a run killed after its last epoch's last.pt has none
        best = best_saved(history)
        plot_history(history, paths.curves(job.name), f"{paths.root.name}: {job.name}")
        model = load_frozen(paths.checkpoint(job.name, best["epoch"]), job.role, run.runtime)
        matrix = confusion_matrix(evaluate(model, test, run.runtime).predictions, test.labels, len(test.classes))
        title = f"{job.name}, epoch {best['epoch']} (best saved: test acc {best['test_acc']:.1%})"
        plot_confusion(matrix, test.classes, paths.confusion(job.name), title)
        write_csv(
            [
                dict(zip(("true \\ predicted", *test.classes), (name, *row)))
                for name, row in zip(test.classes, matrix.tolist())
            ],
            paths.confusion_csv(job.name),
        )
        write_csv(per_class_rows(matrix, test.classes), paths.per_class(job.name))
        set_status(run, job.name, "done", trainee.state, best_epoch=best["epoch"])
    run.runtime.barrier()
