"""Shared fixtures: real data on disk, in torchvision's own formats.

`fashion_mnist_root`: Fashion-MNIST from Debian's dataset-fashion-mnist (or $TRACIN_DATA), unpacked once
per session into torchvision's raw layout by tracin.data itself.
`cifar10_root`: a small CIFAR-10 in its real on-disk format (cifar-10-batches-py: five pickled training
batches, a test batch and batches.meta), read by torchvision's CIFAR10 class with checksums off.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Tolerances for comparing float32 engine output with float64 references.
RTOL = 1e-4
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
