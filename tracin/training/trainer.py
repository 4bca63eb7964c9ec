"""Training: one code path for the teacher, the distilled student and the baseline student.

The spine is `train_one_epoch`, `evaluate` and `fit` (as in torchvision's classification reference);
`train_role` trains one model of a run; tracin.commands.train trains the models a run asks for, in the
order teacher -> student -> student_baseline.

What TracIn needs from training, and how this module keeps it:
- Replayable data. Each epoch's order and augmentation come from generators seeded by (seed, epoch)
  alone, never by the model, so a resumed run replays the same batches and the baseline student sees
  exactly the batches and augmentation draws of the distilled student.
- One start for both students. Their initial weights come from `seed + 1` (and, with --student-init
  teacher, the trained teacher's stem and stages); each model's initial state is saved as `init.pt`.
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

import contextlib
import copy
import csv
import io
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR
from tqdm import tqdm

from tracin import faults
from tracin.config import REPLICA_SEED_STRIDE, DataConfig, ModelConfig, TrainConfig, model_name
from tracin.errors import CheckpointError, NonFiniteError, TracinError
from tracin.files import write_atomic, write_json_atomic
from tracin.options import RunOptions  # noqa: F401 (re-exported)
from tracin.runtime import Runtime
from tracin.training import losses
from tracin.training.checkpoints import (
    checkpoint_name,
    load_checkpoint,
    load_model,
    load_state,
    make_payload,
    save_atomic,
    teacher_record,
    with_resume_state,
)
from tracin.training.data import RunData, Split, augment, normalize
from tracin.training.models import build_model, copy_shared_stages, student_config, teacher_config
from tracin.training.plots import plot_confusion, plot_history
from tracin.training.run_folder import (
    RunPaths,
    pending_entry,
)

ORDER_STREAM, AUGMENT_STREAM, GLOBAL_STREAM = 0, 1, 2  # the random streams of an epoch
TEACHER_SEED_OFFSET, STUDENT_SEED_OFFSET = 0, 1  # initial weights: teacher from seed, students from seed + 1
WARMUP_START_FACTOR = 1 / 25  # the cosine warm-up starts where OneCycleLR (div_factor 25) starts
EVAL_BATCH_SIZE = 512
PROGRESS_EVERY = 10  # steps between progress-bar loss readings (each one waits for the device)
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
HISTORY_FIELDS = (
    "epoch",
    "step",
    "lr",
    *METRICS,
    "train_hard_loss",
    "train_soft_loss",
    "seconds",
    "train_seconds",
    "eval_seconds",
    "checkpoint",
)


# ---------------------------------------------------------------------------------------------- data


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 64-bit seed for one random stream of one epoch; a function of (seed, epoch, stream) only."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


def epoch_seeds(seed: int, epoch: int) -> dict[str, int]:
    """The seeds of an epoch's data order, augmentation and global torch RNG (what resuming needs)."""
    streams = {"order": ORDER_STREAM, "augment": AUGMENT_STREAM, "global": GLOBAL_STREAM}
    return {name: epoch_seed(seed, epoch, stream) for name, stream in streams.items()}


@contextlib.contextmanager
def epoch_rng(seed: int, epoch: int, runtime: Runtime) -> Iterator[None]:
    """The global torch RNG seeded from (seed, epoch) during an epoch, restored after: whatever layer draws
    from it (dropout) replays the same after a resume. The ResNets here draw nothing."""
    with torch.random.fork_rng(devices=[runtime.device] if runtime.is_cuda else []):
        torch.manual_seed(epoch_seed(seed, epoch, GLOBAL_STREAM))
        yield


def _generator(device: torch.device | str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps of one epoch: ceil(n / batch_size), less a last partial batch too small to give
    every rank an example (only possible with several processes)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def rank_slice(size: int, runtime: Runtime) -> slice:
    """This rank's contiguous part of a global batch of `size` examples (sizes differ by at most one)."""
    return slice(size * runtime.rank // runtime.world_size, size * (runtime.rank + 1) // runtime.world_size)


def training_batches(
    split: Split, batch_size: int, seed: int, epoch: int, augment_images: bool, runtime: Runtime
) -> Iterator[tuple[Tensor, Tensor, int]]:
    """One epoch of this rank's training batches: (images Tensor[b, C, H, W] float32, normalised and, if
    asked, augmented; labels Tensor[b] int64; size of the global batch), on the runtime's device.

    Every rank draws the whole global batch and its augmentation, so the draws do not depend on the
    number of processes; `split` must already live on the runtime's device.
    """
    order = torch.randperm(len(split), generator=_generator("cpu", epoch_seed(seed, epoch, ORDER_STREAM)))
    augmenter = _generator(runtime.device, epoch_seed(seed, epoch, AUGMENT_STREAM))
    steps = steps_per_epoch(len(split), batch_size, runtime.world_size)
    for index in order.to(runtime.device).split(batch_size)[:steps]:
        images = split.images[index]
        if augment_images:
            images = augment(images, split.spec, augmenter)
        mine = rank_slice(len(index), runtime)
        images = normalize(images[mine], split.spec).contiguous(memory_format=runtime.memory_format)
        yield images, split.labels[index[mine]], len(index)


def to_device(data: RunData, device: torch.device) -> RunData:
    """The images and training labels moved to `device` once (uint8: CIFAR-10 is 150 MB); indices and
    clean labels stay on the CPU."""
    return replace(data, train=split_to_device(data.train, device), test=split_to_device(data.test, device))


def split_to_device(split: Split, device: torch.device) -> Split:
    """One split's images and labels on `device` (indices and clean labels stay on the CPU)."""
    return replace(split, images=split.images.to(device), labels=split.labels.to(device))


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


# ----------------------------------------------------------------------------- optimizer and schedule


OPTIMIZER_FACTORIES: dict[str, Callable[[nn.Module, TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda model, c: torch.optim.SGD(
        model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov
    ),
    "adam": lambda model, c: torch.optim.Adam(
        model.parameters(), lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay
    ),
    "adamw": lambda model, c: torch.optim.AdamW(
        model.parameters(), lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay
    ),
}


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configuration's optimizer (OPTIMIZER_FACTORIES) over the model's parameters."""
    return OPTIMIZER_FACTORIES[config.optimizer](model, config)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int) -> LRScheduler:
    """The learning-rate schedule, stepped once per optimizer step (`steps` per epoch).

    onecycle: OneCycleLR peaking at config.lr after warmup_epochs, with momentum held at config.momentum
    (cycle_momentum off, so the optimizer stays the SGD the configuration states).
    cosine: LinearLR from lr/25 up to lr over warmup_epochs, then CosineAnnealingLR down to 0.
    constant: the same warm-up, then lr throughout.
    """
    total = config.epochs * steps
    if config.schedule == "onecycle":
        pct_start = config.warmup_epochs / config.epochs
        return OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=pct_start, cycle_momentum=False)
    warmup = min(round(config.warmup_epochs * steps), total - 1)
    after = (
        CosineAnnealingLR(optimizer, T_max=total - warmup)
        if config.schedule == "cosine"
        else ConstantLR(optimizer, factor=1.0, total_iters=0)
    )
    if warmup == 0:
        return after
    linear = LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, total_iters=warmup)
    return SequentialLR(optimizer, [linear, after], milestones=[warmup])


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


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Tensor[classes, classes] int64 of counts: row = true label, column = prediction."""
    flat = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


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


def saved_epochs(config: TrainConfig) -> list[int]:
    """Epochs that end with a checkpoint: every `save_every` epochs, and the last one."""
    return sorted(set(range(config.save_every, config.epochs + 1, config.save_every)) | {config.epochs})


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
    source = str(last) if payload else f"the initial state of the {job.name}"
    trainee = new_trainee(job, run, payload["model"] if payload else job.initial_state, source)
    if payload is None:
        init_payload = checkpoint_payload(job, run, trainee, lr=0.0, metrics={})
        _save_on_main(run, lambda: init_payload, run.paths.init(job.name))
    else:
        _restore(trainee, payload)
    return trainee


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
        with open(run.paths.log(job.name), "a") as handle:  # train.log: the lines of every invocation, resumes too
            handle.write(line + "\n")
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


def per_class_rows(matrix: Tensor, classes: Sequence[str]) -> list[dict]:
    """One row per class of a confusion matrix [true, predicted] (counts): its test examples, how many are
    right, accuracy, error, and the class it is most often mistaken for."""
    rows = []
    for c, name in enumerate(classes):
        counts = matrix[c].tolist()
        n, right = sum(counts), counts[c]
        wrong = [(count, other) for other, count in enumerate(counts) if other != c]
        count, other = max(wrong) if wrong else (0, c)
        rows.append(
            {
                "class": name,
                "n": n,
                "correct": right,
                "accuracy": right / n if n else math.nan,
                "error": 1 - right / n if n else math.nan,
                "most_confused_with": classes[other] if count else "",
                "confused": count,
            }
        )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows (dicts with the same keys) as CSV, written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, lambda handle: handle.write(text.getvalue().encode()))


def write_history(history: list[dict], path: Path) -> None:
    """history.csv, one row per epoch (HISTORY_FIELDS), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, lambda handle: handle.write(text.getvalue().encode()))


def set_status(run: RunContext, role: str, status: str, state: TrainState, **extra) -> None:
    """Record a model's progress in run.json (rank 0 only)."""
    entry = run.record["models"][role]
    entry.update(
        status=status,
        epoch=state.epoch,
        epochs=run.config.epochs,
        checkpoints=[row["checkpoint"] for row in state.history if row["checkpoint"]],
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


# ---------------------------------------------------------------------------------------- the models


@dataclass
class Teacher:
    """A trained teacher: frozen module on the device, its CPU state dict, and its provenance."""

    module: nn.Module
    state: dict[str, Tensor]
    info: dict


def needs_teacher(role: str, config: TrainConfig) -> bool:
    distils = role == "student" and config.distill == "teacher"
    return role != "teacher" and (distils or config.student_init == "teacher")


def model_configs(config: TrainConfig, data: RunData) -> dict[str, ModelConfig]:
    """Architecture of each role: the teacher has 4 stages, the students `student_stages`, one width."""
    teacher = teacher_config(config.arch, config.width, data.in_channels, data.num_classes)
    student = student_config(
        config.student_arch or config.arch, config.width, config.student_stages, data.in_channels, data.num_classes
    )
    return {"teacher": teacher, "student": student, "student_baseline": student}


def teacher_path(options: RunOptions, paths: RunPaths, config: TrainConfig, replica: int = 0) -> Path:
    """What the students of a replica distil from: --teacher, or the same replica's final teacher."""
    return Path(options.teacher) if options.teacher else paths.checkpoint(model_name("teacher", replica), config.epochs)


def load_teacher(path: Path, data: RunData, runtime: Runtime) -> Teacher:
    """A teacher checkpoint (role teacher), checked to fit the data's channels and classes."""
    module, payload = load_model(path, role="teacher")
    config = ModelConfig.from_dict(payload["model_config"])
    if (config.in_channels, config.num_classes) != (data.in_channels, data.num_classes):
        raise CheckpointError(
            f"teacher {path} takes {config.in_channels} channels and {config.num_classes} classes; "
            f"the data has {data.in_channels} and {data.num_classes}"
        )
    frozen = freeze(module.to(runtime.device, memory_format=runtime.memory_format))
    return Teacher(frozen, payload["model"], teacher_record(path, payload))


def make_job(role: str, replica: int, run: RunContext, teacher: Optional[Teacher]) -> ModelJob:
    """What to train for `role` in `run` (whose config carries the replica's seed). Both students start
    from the same weights: seed + 1 and, with --student-init teacher, the teacher's stem and stages."""
    config, name = run.config, model_name(role, replica)
    model_config = model_configs(config, run.data)[role]
    if role == "teacher":
        initial = seeded_model(model_config, config.seed + TEACHER_SEED_OFFSET).state_dict()
        return ModelJob(role, name, model_config, initial)
    model = seeded_model(model_config, config.seed + STUDENT_SEED_OFFSET)
    if config.student_init == "teacher":
        copy_shared_stages(model, teacher.state)
    distils = role == "student" and config.distill == "teacher"
    self_distill = role == "student" and config.distill == "self"
    info = teacher.info if distils else ("self" if self_distill else None)
    return ModelJob(
        role, name, model_config, model.state_dict(), teacher.module if distils else None, self_distill, info
    )


def replica_run(run: RunContext, replica: int) -> RunContext:
    """The run as replica `replica` trains it: the same data and configuration, with the seed (initial
    weights, data order, augmentation) moved by replica * REPLICA_SEED_STRIDE."""
    return replace(run, config=replace(run.config, seed=run.config.seed + replica * REPLICA_SEED_STRIDE))


def train_role(role: str, replica: int, run: RunContext, options: RunOptions) -> None:
    """Train one model of the run (a role's replica), unless run.json says it is done already."""
    name = model_name(role, replica)
    run = replica_run(run, replica)
    entry = run.record["models"].setdefault(name, pending_entry(run.config.epochs))
    if entry["status"] == "done" and run.paths.checkpoint(name, run.config.epochs).is_file():
        run.runtime.log(f"{name}: done already, skipped")
        return
    teacher = None
    if needs_teacher(role, run.config):
        teacher = load_teacher(teacher_path(options, run.paths, run.config, replica), run.data, run.runtime)
    job = make_job(role, replica, run, teacher)
    model = job.model_config
    run.runtime.log(
        f"{name}: seed {run.config.seed}, {run.config.epochs} epochs, {model.arch} cut after {model.stages} stage(s), width {model.width}"
    )
    fit(job, run)


# ------------------------------------------------------------------------------------ the schedule


def check_schedule(config: TrainConfig, steps: int) -> None:
    """Refuse, before anything is written, a schedule torch cannot build: OneCycleLR divides by the
    length of its warm-up phase, which is zero when pct_start * total_steps is exactly 1 (the same float
    expression as torch's)."""
    pct_start = config.warmup_epochs / config.epochs
    if config.schedule == "onecycle" and float(pct_start * (config.epochs * steps)) - 1 == 0:
        raise TracinError(
            f"--schedule onecycle with {steps} optimizer step(s) per epoch and --warmup-epochs {config.warmup_epochs} "
            "leaves a warm-up of one step, which OneCycleLR cannot divide; use a smaller --batch-size, more "
            "data, another --warmup-epochs, or --schedule cosine"
        )
