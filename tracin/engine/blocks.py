"""What the engine's loop runs on, kept outside the TracIn class: a uniform data adapter, the block
sizing that bounds memory, and the CUDA-graph wrapper of one train batch's features."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler, default_collate

from tracin.config import AUTO_MEMORY_SHARE
from tracin.engine.features import Features
from tracin.errors import TracinError
from tracin.training.data import Split, normalize


class DataSource:
    """Uniform slicing of a Split, an (inputs, labels) pair of tensors, a map-style Dataset, or a DataLoader
    over one. Rows are positions in the data set, in its own order: a DataLoader lends its dataset and its
    collate_fn (its sampler, shuffling and batch size are not used), and an IterableDataset, which has no
    positions, is refused."""

    def __init__(self, data: Any, name: str):
        collate = default_collate
        if isinstance(data, DataLoader):
            data, collate = _dataset_of(data, name)
        if isinstance(data, IterableDataset):
            raise TracinError(
                f"{name} data is an IterableDataset: TracIn needs examples by position (a map-style Dataset, "
                "a DataLoader over one, or an (inputs, labels) pair of tensors)"
            )
        if isinstance(data, Split):
            self.n, self._get = len(data), lambda a, b: (normalize(data.images[a:b], data.spec), data.labels[a:b])
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
            inputs, labels = data
            if len(inputs) != len(labels):
                raise TracinError(f"{name} data: {len(inputs)} inputs but {len(labels)} labels")
            self.n, self._get = len(inputs), lambda a, b: (inputs[a:b], labels[a:b])
        elif isinstance(data, Dataset):
            self.n, self._get = (
                len(data),
                lambda a, b: _inputs_and_labels(collate([data[i] for i in range(a, b)]), name),
            )
        else:
            raise TracinError(
                f"{name} data must be a Dataset, a DataLoader or an (inputs, labels) pair of tensors, got "
                f"{type(data).__name__}"
            )
        if self.n == 0:
            raise TracinError(f"{name} data is empty")

    def get(self, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(inputs float32, labels) of examples [start, stop) on `device`."""
        inputs, labels = self._get(start, stop)
        return inputs.to(device=device, dtype=torch.float32), labels.to(device)


def _dataset_of(loader: DataLoader, name: str) -> tuple[Any, Callable]:
    """(dataset, collate function) of a DataLoader. Its sampler must visit the whole dataset (sequential or
    shuffled: rows are dataset positions either way); one that picks a subset is refused, so that no row is
    scored that the loader would not give. Without automatic batching, batches are collated here."""
    if not isinstance(loader.sampler, (SequentialSampler, RandomSampler)) or getattr(
        loader.sampler, "num_samples", len(loader.dataset)
    ) != len(loader.dataset):
        raise TracinError(
            f"{name} data: the DataLoader's {type(loader.sampler).__name__} picks its own examples; give "
            "the examples as the dataset (torch.utils.data.Subset) with a plain or shuffled loader"
        )
    return loader.dataset, (default_collate if loader.batch_size is None else loader.collate_fn)


def _inputs_and_labels(batch: Any, name: str) -> tuple[Tensor, Tensor]:
    """The first two fields of a collated batch ((inputs, labels, ...) or a dict with "inputs"/"image" and
    "labels"/"label")."""
    if isinstance(batch, dict):
        inputs = next((batch[k] for k in ("inputs", "input", "image", "images", "pixel_values") if k in batch), None)
        labels = next((batch[k] for k in ("labels", "label", "targets", "target") if k in batch), None)
        if inputs is None or labels is None:
            raise TracinError(f"{name} data: a batch with keys {', '.join(map(str, batch))} names no inputs and labels")
        return inputs, labels
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TracinError(f"{name} data: a batch must be (inputs, labels, ...), got {type(batch).__name__}")


@dataclass(frozen=True)
class MemoryPlan:
    """How a model's scoring is blocked: `budget` bytes (`source`: where the figure comes from), train
    rows per chunk, test examples per block, and the bytes of kept test features of one block."""

    budget: int
    source: str
    chunk: int
    block: int
    kept_bytes: int

    def describe(self, n_test: int) -> str:
        blocks = -(-n_test // self.block)
        return (
            f"memory {self.budget / 2**30:.3g} GiB ({self.source}): {blocks} test block(s) of {self.block}, "
            f"train chunks of {self.chunk} rows, {self.kept_bytes / 2**30:.3g} GiB of test features kept"
        )


def free_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) free now on a CUDA device (what PyTorch holds cached counts as free), or the
    RAM available to this process within its cgroup's limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), f"free on {device}"
    return available_ram(), "available RAM"


def auto_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, where from) for --max-memory-gb auto: AUTO_MEMORY_SHARE of the memory free now on a CUDA
    device (free_memory), or of the RAM available to this process shared among the processes torchrun
    started on this machine. The rest is left for activations, a batch's gradients and the allocator."""
    if device.type == "cuda":
        free, where = free_memory(device)
        return int(free * AUTO_MEMORY_SHARE), f"auto: {AUTO_MEMORY_SHARE:.0%} of {free / 2**30:.3g} GiB {where}"
    available = available_ram()
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    shared = f", shared by {processes} processes" if processes > 1 else ""
    return (
        int(available * AUTO_MEMORY_SHARE / processes),
        f"auto: {AUTO_MEMORY_SHARE:.0%} of {available / 2**30:.3g} GiB available RAM{shared}",
    )


def available_ram(root: Path = Path("/")) -> int:
    """Bytes of RAM this process may still use: /proc/meminfo's MemAvailable, or less where its cgroup
    (v2 or v1, found in /proc/self/cgroup) limits it: the limit less what the cgroup uses, reclaimable
    page cache (inactive_file) not counted. `root` prefixes every path (for tests)."""
    available = 0
    with contextlib.suppress(OSError, ValueError, StopIteration):
        meminfo = (root / "proc/meminfo").read_text().splitlines()
        available = int(next(line.split()[1] for line in meminfo if line.startswith("MemAvailable:"))) * 1024
    if not available:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for folder, limit, usage, inactive in _cgroup_memory_files(root):
        with contextlib.suppress(OSError, ValueError):
            used = int((folder / usage).read_text())
            with contextlib.suppress(OSError, ValueError, StopIteration):
                stat = (folder / "memory.stat").read_text().splitlines()
                used -= int(next(line.split()[1] for line in stat if line.split()[0] == inactive))
            available = min(available or 2**62, int((folder / limit).read_text()) - used)  # "max": no limit
    return max(available, 1)


def _cgroup_memory_files(root: Path) -> list[tuple[Path, str, str, str]]:
    """(folder, limit file, usage file, inactive-file key of memory.stat) of this process's cgroups."""
    found = []
    with contextlib.suppress(OSError):
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            relative = path.lstrip("/")
            if hierarchy == "0" and controllers == "":
                found.append((root / "sys/fs/cgroup" / relative, "memory.max", "memory.current", "inactive_file"))
            elif "memory" in controllers.split(","):
                found.append(
                    (
                        root / "sys/fs/cgroup/memory" / relative,
                        "memory.limit_in_bytes",
                        "memory.usage_in_bytes",
                        "total_inactive_file",
                    )
                )
    return found


def work_factor(n_train: int, n_test: int, chunk: int, block: int, batch_size: int) -> float:
    """How many times the train-gradient batches of one unblocked pass a blocking computes: each of the
    ceil(n_test / block) test blocks computes every train gradient, in batches no larger than a chunk."""
    batches = -(-n_train // max(1, min(chunk, batch_size)))
    ideal = -(-n_train // batch_size)
    return -(-n_test // block) * batches / ideal


def block_sizes(
    bytes_per_example: int,
    n_train: int,
    n_test: int,
    n_checkpoints: int,
    max_memory: int,
    per_checkpoint: bool = False,
    chunk_size: Optional[int] = None,
    test_block: Optional[int] = None,
    variants: int = 1,
) -> tuple[int, int]:
    """(train rows per chunk, test examples per block): half of max_memory (bytes) holds the kept test
    features of a block at every checkpoint, the other half a chunk's train features of one batch and
    its score rows (one matrix per score variant). Explicit chunk_size/test_block win. A budget that cannot hold one test example's
    features at every checkpoint is refused, naming the minimum (it would be exceeded, not kept)."""
    half = max_memory // 2
    one_row_of_scores = 4 * ((n_checkpoints + 1 if per_checkpoint else 2) + variants - 1)
    minimum = 2 * max(bytes_per_example * n_checkpoints, bytes_per_example + one_row_of_scores)
    if test_block is None and max_memory < minimum:
        raise TracinError(
            f"a memory budget of {max_memory / 2**20:.3g} MiB cannot hold one test example's gradient features at "
            f"{n_checkpoints} checkpoint(s); the minimum is {minimum / 2**20:.3g} MiB (--max-memory-gb {minimum / 2**30:.3g})"
        )
    block = test_block or min(n_test, max(1, half // (bytes_per_example * n_checkpoints)))
    score_bytes = 4 * block * ((n_checkpoints + 1 if per_checkpoint else 2) + variants - 1)
    chunk = chunk_size or min(n_train, max(1, half // (bytes_per_example + score_bytes)))
    return chunk, block


class GraphedBatch:
    """The features of one full train batch as a CUDA graph, captured once and replayed for every full
    batch at every checkpoint (load_state_dict copies weights in place, so replays read the loaded
    checkpoint). At small widths the step is ~300 small kernels whose launches, not their work, set the
    time. The returned features live in the graph's memory: the next replay overwrites them."""

    def __init__(self, featurize: Callable[[Tensor, Tensor], Features], inputs: Tensor, labels: Tensor):
        self.inputs, self.labels = inputs.clone(), labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # cuBLAS/cuDNN handles, workspaces and autograd state exist before capture
                featurize(self.inputs, self.labels)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.features = featurize(self.inputs, self.labels)
        except RuntimeError as error:
            raise TracinError(
                f"the model's gradient step cannot be captured as a CUDA graph ({str(error).splitlines()[0]}); "
                "pass EngineConfig(cuda_graphs=False) (tracin-score --no-cuda-graphs)"
            ) from None

    def __call__(self, inputs: Tensor, labels: Tensor) -> Features:
        self.inputs.copy_(inputs)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.features
