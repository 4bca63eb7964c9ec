"""The replayable data of an epoch: this rank's training batches, and the seeds they are drawn from.

Each epoch's order and augmentation come from generators seeded by (seed, epoch) alone, never by the model,
so a resumed run replays the same batches and the baseline student sees exactly the batches and
augmentation draws of the distilled student. With several processes (torchrun) every rank draws the same
global batch and augmentation and keeps its contiguous slice.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from tracin.runtime import Runtime
from tracin.training.data import RunData, Split, augment, normalize

ORDER_STREAM, AUGMENT_STREAM, GLOBAL_STREAM = 0, 1, 2  # the random streams of an epoch


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
