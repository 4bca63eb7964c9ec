"""Shared fixtures: real data on disk, in torchvision's own formats.

`fashion_mnist_root`: Fashion-MNIST from Debian's dataset-fashion-mnist (or $TRACIN_DATA), unpacked once
per session into torchvision's raw layout by tracin.training.data itself.
`cifar10_root`: a small CIFAR-10 in its real on-disk format (cifar-10-batches-py: five pickled training
batches, a test batch and batches.meta), read by torchvision's CIFAR10 class with checksums off.
`tiny_run`: the folder of a finished tracin-train run (teacher, student, student_baseline) on
Fashion-MNIST, made once per session through the console script.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Tolerances for comparing float32 engine output with float64 references. The engine is at ~3e-7 of the
# largest score; 1e-5 fails a slip to half precision (float16 kept features gave 9.4e-5).
RTOL = 1e-5
BF16_RTOL = 1e-2  # bfloat16 keeps 8 significant bits: ~4e-3 per product, relative to the largest score
ATOL = 1e-6


def write_cifar10(root: Path, per_batch: int = 60, test_size: int = 100, seed: int = 0) -> Path:
    """Write CIFAR-10's on-disk format under root/cifar-10-batches-py; returns root.

    Images are class-dependent colour blobs plus noise, so a model can learn them.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, label: str) -> dict:
        labels = rng.integers(0, 10, size=n)
        base = np.stack([np.full((3, 32, 32), 25 * c, dtype=np.float64) for c in labels])
        images = np.clip(base + rng.normal(0, 30, size=base.shape), 0, 255).astype(np.uint8)
        return {
            "batch_label": label,
            "labels": labels.tolist(),
            "data": images.reshape(n, 3072),
            "filenames": [f"img_{label}_{i}.png" for i in range(n)],
        }

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump(batch(per_batch, f"training batch {i} of 5"), handle, protocol=2)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch(test_size, "testing batch 1 of 1"), handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, handle)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_root(tmp_path_factory) -> str:
    root = os.environ.get("TRACIN_DATA")
    if root:
        return root
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> str:
    return str(write_cifar10(tmp_path_factory.mktemp("cifar")))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


# ------------------------------------------------------------------------------------ training runs

# The tiny run every later test can read: Fashion-MNIST, three models, width 4, 4 epochs.
TINY_RUN_ARGS = (
    "--dataset",
    "fashion-mnist",
    "--train-subset",
    "256",
    "--test-subset",
    "64",
    "--label-noise",
    "0.1",
    "--epochs",
    "4",
    "--save-every",
    "2",
    "--width",
    "4",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--quiet",
)


def tracin_train_script() -> Path:
    """The `tracin-train` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("tracin-train")
    assert script.exists(), f"{script} is missing: install the package (pip install -e .)"
    return script


def subprocess_env(**extra: str) -> dict:
    """Environment of tracin-train subprocesses: one thread unless OMP_NUM_THREADS says otherwise (tiny
    models gain nothing from more, and threads spinning on shared cores stall). Runs compared bitwise must
    use the same thread count."""
    return {"OMP_NUM_THREADS": "1", **os.environ, **extra}


@contextlib.contextmanager
def one_thread():
    """torch on one thread for in-process training of tiny models (see subprocess_env)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_tracin_train(args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`tracin-train ARGS` in a subprocess; stdout and stderr captured as text."""
    command = [str(tracin_train_script()), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fashion_mnist_root) -> Path:
    """Folder of a finished tiny run (teacher, student, student_baseline) made by tracin-train."""
    out_root = tmp_path_factory.mktemp("runs")
    args = ["--run", "tiny", "--out-root", out_root, "--data-root", fashion_mnist_root, *TINY_RUN_ARGS]
    result = run_tracin_train(args)
    assert result.returncode == 0, result.stderr
    return out_root / "tiny"


def run_tracin_score(args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`tracin-score ARGS` in a subprocess; stdout and stderr captured as text."""
    command = [str(Path(sys.executable).with_name("tracin-score")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


@pytest.fixture(scope="session")
def tiny_scores(tiny_run, tmp_path_factory) -> Path:
    """A finished tracin-score file of the tiny run (all three models, per-checkpoint scores, label
    noise), with its --plots output in plots/ beside it."""
    out = tmp_path_factory.mktemp("scores") / "tracin.h5"
    result = run_tracin_score(
        [
            "--run",
            tiny_run,
            "--scores",
            out,
            "--models",
            "teacher,student,student_baseline",
            "--per-checkpoint",
            "--variants",
            "raw",
            "--train-subset",
            "128",
            "--test-subset",
            "24",
            "--topk",
            "3,8",
            "--device",
            "cpu",
            "--quiet",
            "--plots",
        ]
    )
    assert result.returncode == 0, result.stderr
    return out


def demo_copy(run: Path, tmp_path: Path) -> Path:
    """A copy of `run` with the demo.json scripts/demo writes (timings, machine), for readme_figures tests."""
    import shutil

    demo = tmp_path / run.name
    shutil.copytree(run, demo)
    machine = {"cpu": "a CPU", "cores": 2, "device": "no GPU", "torch": torch.__version__, "platform": "Linux"}
    seconds = {"total": 11, "training": 5, "scoring": 4, "report": 2}
    (demo / "demo.json").write_text(
        json.dumps({"finished": "2026-11-30T12:00:00", "seconds": seconds, "machine": machine})
    )
    return demo
