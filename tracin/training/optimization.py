"""The optimizer and learning-rate schedule of a run, the check that torch can build the schedule, and its
replay: the learning rate a checkpoint must record."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR

from tracin.config import TrainConfig
from tracin.errors import CheckpointError, TracinError

WARMUP_START_FACTOR = 1 / 25  # the cosine warm-up starts where OneCycleLR (div_factor 25) starts


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


TRAIN_REMEDY = "use a smaller --batch-size, more data, another --warmup-epochs, or --schedule cosine"


def check_schedule(config: TrainConfig, steps: int, remedy: str = TRAIN_REMEDY) -> None:
    """Refuse, before anything is written, a schedule torch cannot build: OneCycleLR divides by the
    length of its warm-up phase, which is zero when pct_start * total_steps is exactly 1 (the same float
    expression as torch's). `remedy` is said in the caller's options (tracin-validate has no --batch-size)."""
    pct_start = config.warmup_epochs / config.epochs
    if config.schedule == "onecycle" and float(pct_start * (config.epochs * steps)) - 1 == 0:
        raise TracinError(
            f"--schedule onecycle with {steps} optimizer step(s) per epoch and --warmup-epochs {config.warmup_epochs} "
            f"leaves a warm-up of one step, which OneCycleLR cannot divide; {remedy}"
        )


def saved_epochs(config: TrainConfig) -> list[int]:
    """Epochs that end with a checkpoint: every `save_every` epochs, and the last one."""
    return sorted(set(range(config.save_every, config.epochs + 1, config.save_every)) | {config.epochs})


def select_epochs(spec: str, saved: Sequence[int], role: str) -> list[int]:
    """The epochs `spec` (`all`, `last`, or comma-separated epochs) selects among `saved` (ascending)."""
    if spec in ("all", "last"):
        return list(saved) if spec == "all" else list(saved)[-1:]
    try:
        wanted = [int(e) for e in spec.split(",")]
    except ValueError:
        raise TracinError(f"--checkpoints takes all, last or comma-separated epochs, got {spec!r}") from None
    if len(set(wanted)) < len(wanted):  # a checkpoint counted twice would double its term of the sum
        raise TracinError(f"--checkpoints names an epoch twice in {spec!r}; give each epoch once")
    missing = [e for e in wanted if e not in saved]
    if missing or not wanted:
        raise CheckpointError(f"{role} has no checkpoint for epoch(s) {missing or spec}; saved: {sorted(saved)}")
    return wanted


@functools.lru_cache(maxsize=8)
def step_lrs(config: TrainConfig, steps: int) -> tuple[float, ...]:
    """The learning rate of each optimizer step of a run with `steps` steps per epoch, replayed through the
    same optimizer and schedule: what the trainer records before each step (epochs * steps values)."""
    optimizer = build_optimizer(nn.Linear(1, 1), config)
    scheduler = build_scheduler(optimizer, config, steps)
    lrs = []
    for _ in range(config.epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves; torch sees the step before the schedule's
        scheduler.step()
    return tuple(lrs)


def checkpoint_lr(config: TrainConfig, steps: int, epoch: int) -> float:
    """The learning rate the checkpoint of `epoch` records: the mean over the optimizer steps since the
    previous checkpoint (saved_epochs), summed in the trainer's order so that it is the same float."""
    since = max((e for e in saved_epochs(config) if e < epoch), default=0)
    lrs = list(step_lrs(config, steps)[since * steps : epoch * steps])
    return sum(lrs) / len(lrs)
