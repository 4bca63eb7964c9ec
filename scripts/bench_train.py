#!/usr/bin/env python
"""Training and inference speed of the teacher and the student, through tracin.training.trainer's own path.

Images/s of `train_one_epoch` (batch draw, augmentation, normalisation, forward, backward, SGD and
scheduler steps) and of `evaluate`, on random uint8 images of CIFAR-10's shape held on the device (their
content does not change the speed). Each training figure comes with its ratio to a bare reference timed
in the same process: forward, backward and SGD step on one fixed, already normalised batch, i.e. what the
model alone costs. On CUDA (bf16 autocast, channels_last) it projects one CIFAR-10 training epoch
(50,000 images) of the teacher; the target on one H100 at full width is 10 s or less.

    python scripts/bench_train.py --device cpu --width 8 --images 512 --batch-size 128
    python scripts/bench_train.py --device cuda --width 64 --images 20480 --batch-size 512
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from tracin.config import ModelConfig, TrainConfig
from tracin.runtime import Runtime, start_runtime
from tracin.training.batches import training_batches
from tracin.training.data import SPECS, Split, normalize
from tracin.training.losses import cross_entropy
from tracin.training.models import build_model, count_parameters
from tracin.training.optimization import build_optimizer, build_scheduler
from tracin.training.trainer import EVAL_BATCH_SIZE, evaluate, objective_for, train_one_epoch

CIFAR10_TRAIN = 50_000
CIFAR10_TEST = 10_000
MODELS = (("teacher", 4, False), ("student", 2, False), ("student+kd", 2, True))  # role, stages, distilled


def random_split(n: int, device: torch.device) -> Split:
    """n random uint8 images [n, 3, 32, 32] with random labels, on `device`."""
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (n,), device=device)
    classes = tuple(str(c) for c in range(10))
    return Split(images, labels, torch.arange(n), labels.cpu(), SPECS["cifar10"], classes)


def timed(work: Callable[[], object], runtime: Runtime) -> float:
    """Seconds `work` takes; on CUDA measured with events around it, after a synchronize."""
    if not runtime.is_cuda:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    work()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000.0


def reference_steps(model, optimizer, split: Split, batch_size: int, steps: int, runtime: Runtime) -> None:
    """The model alone: forward, backward and SGD step on one fixed, normalised batch."""
    images = normalize(split.images[:batch_size], split.spec).contiguous(memory_format=runtime.memory_format)
    labels = split.labels[:batch_size]
    model.train()
    for _ in range(steps):
        with runtime.autocast():
            logits = model(images).float()
        loss = cross_entropy(logits, labels).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _model(stages: int, width: int, runtime: Runtime) -> torch.nn.Module:
    model = build_model(ModelConfig(stages=stages, width=width))
    return model.to(runtime.device, memory_format=runtime.memory_format)


def bench_model(stages: int, distilled: bool, split: Split, args: argparse.Namespace, runtime: Runtime) -> dict:
    """train / eval / reference images per second of one architecture; `distilled`: trained against a
    full teacher's logits (one more teacher forward per step)."""
    config = TrainConfig(epochs=10_000, batch_size=args.batch_size, width=args.width)  # the schedule never ends here
    model = _model(stages, args.width, runtime)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps=len(split) // args.batch_size)
    objective = objective_for(_model(4, args.width, runtime) if distilled else None, config, runtime)
    steps = len(split) // args.batch_size

    def epoch(part: Split, number: int) -> None:
        batches = training_batches(part, args.batch_size, 0, number, True, runtime)
        train_one_epoch(model, optimizer, scheduler, batches, objective, runtime)

    # Warm-up on every batch shape timed below: cuDNN autotuning, allocator, first-call costs.
    warm = random_split(max(args.batch_size * 2, EVAL_BATCH_SIZE), runtime.device)
    epoch(warm, 0)
    evaluate(model, warm, runtime)
    reference_steps(model, optimizer, split, args.batch_size, 2, runtime)
    train_seconds = timed(lambda: epoch(split, 1), runtime)
    eval_seconds = timed(lambda: evaluate(model, split, runtime), runtime)
    reference_seconds = timed(
        lambda: reference_steps(model, optimizer, split, args.batch_size, steps, runtime), runtime
    )
    return {
        "params": count_parameters(model),
        "train": len(split) / train_seconds,
        "eval": len(split) / eval_seconds,
        "reference": steps * args.batch_size / reference_seconds,
    }


def report(device_name: str, args: argparse.Namespace) -> None:
    with start_runtime(device_name, quiet=True) as runtime:
        split = random_split(args.images, runtime.device)
        threads = f"CPU, {torch.get_num_threads()} threads"
        name = torch.cuda.get_device_name(runtime.device) if runtime.is_cuda else threads
        precision = "bf16 autocast + channels_last" if runtime.is_cuda else "float32, deterministic"
        shape = f"width {args.width}, batch {args.batch_size}, {args.images} images"
        print(f"\n{runtime.device.type} ({name}), {precision}; {shape}")
        header = ("model", "params", "train img/s", "x reference", "eval img/s", "reference img/s")
        print("{:<10} {:>11} {:>12} {:>12} {:>11} {:>16}".format(*header))
        rows = {}
        for role, stages, distilled in MODELS:
            row = rows[role] = bench_model(stages, distilled, split, args, runtime)
            print(
                f"{role:<10} {row['params']:>11,} {row['train']:>12,.0f} {row['train'] / row['reference']:>12.2f}"
                f" {row['eval']:>11,.0f} {row['reference']:>16,.0f}"
            )
        if runtime.is_cuda:
            report_cifar10_epoch(rows)


def epoch_seconds(row: dict) -> float:
    """One CIFAR-10 epoch: training on 50,000 images, then evaluating 10,000."""
    return CIFAR10_TRAIN / row["train"] + CIFAR10_TEST / row["eval"]


def report_cifar10_epoch(rows: dict) -> None:
    teacher = rows["teacher"]
    print(
        f"one CIFAR-10 epoch of the teacher: {CIFAR10_TRAIN / teacher['train']:.1f} s training + "
        f"{CIFAR10_TEST / teacher['eval']:.1f} s evaluation = {epoch_seconds(teacher):.1f} s "
        "(target at width 64 on one H100: <= 10 s)"
    )
    all_three = sum(epoch_seconds(rows[role]) for role in ("teacher", "student+kd", "student"))
    print(f"one CIFAR-10 epoch of teacher, distilled student and baseline together: {all_three:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "both"),
        default="both",
        help="both: CPU, then CUDA when available (default: %(default)s)",
    )
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=512, help="training batch size (default: %(default)s)")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per timed epoch, rounded down to whole batches (default: 4 batches on CPU, 40 on CUDA)",
    )
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("\ncuda: not available, skipped")
            continue
        batches = 40 if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else 4
        images = args.images or batches * args.batch_size
        report(device, argparse.Namespace(**{**vars(args), "images": images // args.batch_size * args.batch_size}))


if __name__ == "__main__":
    main()
