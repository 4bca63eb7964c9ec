"""Where code runs: the device, the process group under torchrun, and determinism.

A `Runtime` is passed down to whatever computes; nothing reads a global device. Under
`torchrun --nproc_per_node=N` each process gets its own (rank, world size, device): gloo on CPU, nccl on
CUDA. Rank 0 writes files; the other ranks wait at barriers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tracin.config import DEVICES
from tracin.errors import TracinError

PEER_GONE = re.compile(r"Connection (closed|reset) by peer|Broken pipe")  # gloo's words for a process gone (CPU)


@dataclass(frozen=True)
class Runtime:
    """One process's place in a run.

    On CUDA, models run in bf16 autocast with channels_last tensors (tensor cores); on CPU everything is
    float32 and deterministic, so a resumed run is bitwise equal to an uninterrupted one.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    quiet: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.is_cuda else torch.contiguous_format

    @property
    def progress_disabled(self) -> Optional[bool]:
        """tqdm's `disable`: True when quiet or not rank 0, else None (tqdm hides itself off a terminal)."""
        return True if self.quiet or not self.is_main else None

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.is_cuda)

    def barrier(self) -> None:
        if self.distributed:
            with _naming_lost_peers():
                dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The sum of `tensor` over ranks (the tensor itself on one process)."""
        if self.distributed:
            with _naming_lost_peers():
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        """The largest of `tensor` over ranks, elementwise (the tensor itself on one process)."""
        if self.distributed:
            with _naming_lost_peers():
                dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics, so all ranks evaluate and save the same model
        (each rank's last training step updated its statistics from its own slice)."""
        if self.distributed:
            with _naming_lost_peers():
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (picklable; the value itself on one process)."""
        if not self.distributed:
            return value
        holder = [value]
        with _naming_lost_peers():
            dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gathered(self, items: Iterator[Any], n_steps: int) -> Iterator[Any]:
        """Every rank's next item, n_steps times, all on rank 0 (one gather per step; a rank whose items
        ran out sends None; other ranks yield nothing)."""
        for _ in range(n_steps):
            mine = next(items, None)
            if not self.distributed:
                yield mine
                continue
            everyone = [None] * self.world_size if self.is_main else None
            with _naming_lost_peers():
                dist.gather_object(mine, everyone, dst=0)
            yield from (everyone or [])

    def log(self, message: str) -> None:
        """A line on stdout from rank 0, unless quiet."""
        if self.is_main and not self.quiet:
            print(message, flush=True)


@contextlib.contextmanager
def _naming_lost_peers() -> Iterator[None]:
    """A collective whose peer process ended (killed, or failed with its own line) is one line on this process
    too, not gloo's traceback (round 38, T03-T05); any other error of a collective is a bug and keeps its own."""
    try:
        yield
    except RuntimeError as error:
        if not PEER_GONE.search(str(error)):
            raise
        raise TracinError(
            "another process of this torchrun ended while this one waited for it (killed, or failed: see its "
            "line); finished work is kept: run the same command again to continue"
        ) from None


def end_with_launcher(every_s: float = 2.0) -> None:
    """End this process (SIGTERM, its default action: no handler is installed) when the process that started it
    ends: a torchrun rank whose launcher was killed waited, sleeping in a collective or in the launcher's store,
    for half an hour (round 42, TR02). A daemon thread polls the parent's pid every `every_s` seconds."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tracin-end-with-launcher", daemon=True).start()


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is a TracinError."""
    if name not in DEVICES:
        raise TracinError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise TracinError("--device cuda asked, but PyTorch sees no CUDA device; use --device cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _world_from_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def start_runtime(device_name: str = "auto", quiet: bool = False) -> Iterator[Runtime]:
    """The runtime of this process: joins torchrun's process group if there is one, turns on
    deterministic algorithms on CPU and cuDNN autotuning on CUDA (both restored on exit)."""
    rank, world_size, local_rank = _world_from_environment()
    device = select_device(device_name, local_rank)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    benchmark_before = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(True)
    joined = world_size > 1 and not dist.is_initialized()
    if joined:
        end_with_launcher()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Runtime(device, rank, world_size, quiet)
    finally:
        if joined:
            dist.destroy_process_group()
        torch.use_deterministic_algorithms(deterministic_before)
        torch.backends.cudnn.benchmark = benchmark_before


def machine() -> dict[str, str | int]:
    """What measured a figure: CPU model and cores, GPU (or none), torch version and platform (recorded
    beside timings, e.g. in the demo's demo.json)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "device": device,
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
    }
