"""tracin.training.data: torchvision's loaders on real file formats, subsets, label noise, augmentation,
normalisation, fingerprints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets
from torchvision.transforms import Normalize
from torchvision.transforms.functional import convert_image_dtype

from conftest import ATOL, CIFAR10_CLASSES, RTOL
from tracin.config import DataConfig
from tracin.training.data import DEBIAN_FASHION_MNIST, SPECS, augment, flip_labels, fingerprint, load_data, normalize, stratified_subset
from tracin.errors import DataError


def _read_cifar_batches(root: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The pickled CIFAR-10 files, read without torchvision: uint8 [n, 3, 32, 32], labels [n]."""
    images, labels = [], []
    for name in names:
        with open(Path(root) / "cifar-10-batches-py" / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"]).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return np.concatenate(images), np.asarray(labels)


def test_cifar10_files_load_through_torchvision(cifar10_root):
    data = load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False))
    train_images, train_labels = _read_cifar_batches(cifar10_root, [f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = _read_cifar_batches(cifar10_root, ["test_batch"])
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (300, 3, 32, 32)
    assert np.array_equal(data.train.images.numpy(), train_images)
    assert np.array_equal(data.train.labels.numpy(), train_labels)
    assert np.array_equal(data.test.images.numpy(), test_images)
    assert np.array_equal(data.test.labels.numpy(), test_labels)
    assert torch.equal(data.train.index, torch.arange(300))
    assert data.train.classes == tuple(CIFAR10_CLASSES) and data.num_classes == 10 and data.in_channels == 3


def test_cifar10_checksums_refuse_files_that_are_not_the_published_ones(cifar10_root):
    with pytest.raises(DataError, match="--no-checksum"):
        load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=True))


def test_missing_data_offline_is_a_data_error(tmp_path, monkeypatch):
    def offline(self):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="could not be loaded"):
        load_data(DataConfig(dataset="cifar10", data_root=str(tmp_path), checksum=False))


def test_fashion_mnist_subsets_are_stratified_and_indexed(fashion_mnist_root):
    config = DataConfig(dataset="fashion-mnist", data_root=fashion_mnist_root, train_subset=500, test_subset=100)
    data = load_data(config)
    full = datasets.FashionMNIST(fashion_mnist_root, train=True)
    assert data.train.images.shape == (500, 1, 28, 28) and data.test.images.shape == (100, 1, 28, 28)
    assert torch.equal(data.train.images[:, 0], full.data[data.train.index])
    assert torch.equal(data.train.clean_labels, full.targets[data.train.index])
    # Fashion-MNIST is balanced (6000 per class), so 500 is exactly 50 per class.
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [50] * 10
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [10] * 10


def test_stratified_subset_takes_each_class_in_proportion():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    chosen = stratified_subset(labels, 10, seed=3)
    assert torch.bincount(labels[chosen], minlength=3).tolist() == [5, 3, 2]
    assert torch.equal(chosen, chosen.sort().values) and len(chosen.unique()) == 10
    assert torch.equal(chosen, stratified_subset(labels, 10, seed=3))
    assert not torch.equal(chosen, stratified_subset(labels, 10, seed=4))


def test_stratified_subset_gives_remainders_to_the_largest_fractions():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 6)  # quotas for 5 of 20: 1.75, 1.75, 1.5
    counts = torch.bincount(labels[stratified_subset(labels, 5, seed=0)], minlength=3).tolist()
    assert counts == [2, 2, 1]
    assert torch.equal(stratified_subset(labels, None, seed=0), torch.arange(20))


def test_label_noise_flips_exactly_the_stated_count_to_another_class():
    labels = torch.arange(1000) % 10
    noisy = flip_labels(labels, 0.1, num_classes=10, seed=0)
    changed = noisy != labels
    assert int(changed.sum()) == 100  # every chosen position moved: none was "flipped" to its own class
    assert noisy.min() >= 0 and noisy.max() < 10
    assert torch.equal(noisy, flip_labels(labels, 0.1, num_classes=10, seed=0))


def test_load_data_applies_label_noise_to_training_labels_only(cifar10_root):
    data = load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False, label_noise=0.15))
    assert int(data.train.noisy.sum()) == round(0.15 * 300)
    assert torch.equal(data.test.labels, data.test.clean_labels)


def test_data_record_of_a_run_matches_its_data(tiny_run):
    record = json.loads((tiny_run / "data.json").read_text())
    config = DataConfig(**json.loads((tiny_run / "run.json").read_text())["data_config"])
    data = load_data(config)
    assert record["train_index"] == data.train.index.tolist() and record["test_index"] == data.test.index.tolist()
    assert len(record["flipped_index"]) == round(0.1 * 256)
    assert all(a != b for a, b in zip(record["flipped_original_labels"], record["flipped_new_labels"]))
    position = {index: i for i, index in enumerate(record["train_index"])}
    flipped = [position[i] for i in record["flipped_index"]]
    assert data.train.labels[flipped].tolist() == record["flipped_new_labels"]


def _crop_matches(original: torch.Tensor, out: torch.Tensor, pad: int) -> bool:
    """Whether `out` [C, H, W] is some crop (after zero padding) of `original`, flipped or not."""
    height, width = original.shape[1:]
    padded = torch.nn.functional.pad(original, (pad, pad, pad, pad))
    crops = [padded[:, dy : dy + height, dx : dx + width] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return any(torch.equal(out, c) or torch.equal(out, c.flip(2)) for c in crops)


def test_augmentation_is_seeded_keeps_shape_and_crops():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    spec = SPECS["cifar10"]
    first = augment(images, spec, torch.Generator().manual_seed(5))
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(first, augment(images, spec, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment(images, spec, torch.Generator().manual_seed(6)))
    assert all(_crop_matches(images[i], first[i], spec.crop_padding) for i in range(len(images)))


def test_normalize_matches_torchvision_normalize():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    spec = SPECS["cifar10"]
    expected = Normalize(spec.mean, spec.std)(convert_image_dtype(images, torch.float32))
    torch.testing.assert_close(normalize(images, spec), expected, rtol=RTOL, atol=ATOL)


def test_fingerprint_tells_runs_apart(cifar10_root):
    clean = DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False)
    noisy = DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False, label_noise=0.1)
    assert fingerprint(load_data(clean), clean) == fingerprint(load_data(clean), clean)
    assert fingerprint(load_data(clean), clean)["digest"] != fingerprint(load_data(noisy), noisy)["digest"]


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.parametrize("planted", ["data_batch_1", "batches.meta", "test_batch"])
@pytest.mark.parametrize("checksum", [False, True])
def test_a_crafted_cifar_batch_file_is_refused_without_running_it(cifar10_root, tmp_path, planted, checksum):
    root = tmp_path / "shared"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for path in (Path(cifar10_root) / "cifar-10-batches-py").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    marker = tmp_path / "marker"
    with open(folder / planted, "wb") as handle:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, handle, protocol=2)
    with pytest.raises(DataError):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=checksum))
    assert not marker.exists()


def test_debian_fashion_mnist_is_unpacked_once_not_on_every_load(tmp_path):
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    config = DataConfig(dataset="fashion-mnist", data_root=str(tmp_path), train_subset=20, test_subset=10)
    load_data(config)
    raw = sorted((tmp_path / "FashionMNIST" / "raw").glob("*-ubyte"))
    assert len(raw) == 4
    stamps = [p.stat().st_mtime_ns for p in raw]
    load_data(config)
    assert [p.stat().st_mtime_ns for p in raw] == stamps
