"""What the engine's loop runs on, kept outside the TracIn class: a uniform data adapter, the block
sizing that bounds memory, and the CUDA-graph wrapper of one train batch's features."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from tracin.engine.features import Features
from tracin.errors import TracinError
from tracin.training.data import Split, normalize


class DataSource:
    """Uniform slicing of a Split, an (inputs, labels) pair of tensors, or any map-style Dataset."""

    def __init__(self, data: Any, name: str):
        if isinstance(data, Split):
            self.n, self._get = len(data), lambda a, b: (normalize(data.images[a:b], data.spec), data.labels[a:b])
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
            inputs, labels = data
            if len(inputs) != len(labels):
                raise TracinError(f"{name} data: {len(inputs)} inputs but {len(labels)} labels")
            self.n, self._get = len(inputs), lambda a, b: (inputs[a:b], labels[a:b])
        elif isinstance(data, Dataset):
            self.n, self._get = len(data), lambda a, b: tuple(default_collate([data[i] for i in range(a, b)])[:2])
        else:
            raise TracinError(f"{name} data must be a Dataset or an (inputs, labels) pair, got {type(data).__name__}")
        if self.n == 0:
            raise TracinError(f"{name} data is empty")

    def get(self, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(inputs float32, labels) of examples [start, stop) on `device`."""
        inputs, labels = self._get(start, stop)
        return inputs.to(device=device, dtype=torch.float32), labels.to(device)


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
