"""tracin.training.data: torchvision's loaders on real file formats, subsets, label noise, augmentation,
normalisation, fingerprints."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets
from torchvision.transforms import Normalize
from torchvision.transforms.functional import convert_image_dtype

from tracin.config import DataConfig
from tracin.errors import DataError, TracinError
from tracin.training.data import (
    CLASS_MERGES,
    DEBIAN_FASHION_MNIST,
    SHORTCUT_PATCH,
    SHORTCUT_TEST_FRACTION,
    SPECS,
    augment,
    flip_labels,
    load_data,
    load_eval_split,
    normalize,
    stratified_subset,
)
from tracin.training.records import data_record, fingerprint

from conftest import ATOL, CIFAR10_CLASSES, RTOL


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


def test_a_refused_download_leaves_no_folder_it_made(tmp_path, monkeypatch):
    """A mistyped --data-root for CIFAR-10 offline was refused, and left the empty folders torchvision's
    download had made (round 37, T24). The download fails for real: through a proxy that refuses connections."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "kept").mkdir()
    root = tmp_path / "kept" / "typo" / "data"
    with pytest.raises(DataError, match="could not be loaded"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "kept"]


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


@pytest.mark.parametrize("merge", ["animals-vehicles", "pairs"])
def test_coarse_labels_merge_cifar10_classes_and_keep_the_fine_ones(cifar10_root, merge):
    plain = load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False))
    config = DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False, coarse_labels=merge, label_noise=0.1)
    data = load_data(config)
    groups = CLASS_MERGES["cifar10", merge]
    assert data.train.classes == tuple(name for name, _ in groups) and data.train.fine_classes == tuple(CIFAR10_CLASSES)
    for split, reference in ((data.train, plain.train), (data.test, plain.test)):
        assert torch.equal(split.fine_labels, reference.labels) and torch.equal(split.images, reference.images)
        for coarse, fine in zip(split.clean_labels.tolist(), split.fine_labels.tolist()):
            assert CIFAR10_CLASSES[fine] in [CIFAR10_CLASSES[m] for m in groups[coarse][1]]
    assert torch.equal(data.test.labels, data.test.clean_labels)
    assert int(data.train.noisy.sum()) == round(0.1 * 300) and int(data.train.labels.max()) < len(groups)
    record = data_record(data)
    assert record["train_fine_labels"] == plain.train.labels.tolist() and record["fine_classes"] == CIFAR10_CLASSES
    assert (
        fingerprint(data, config)["digest"]
        != fingerprint(plain, DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False))["digest"]
    )


def test_coarse_labels_of_fashion_mnist_merge_tops_and_footwear(fashion_mnist_root):
    config = DataConfig(
        dataset="fashion-mnist",
        data_root=fashion_mnist_root,
        train_subset=400,
        test_subset=100,
        coarse_labels="tops-footwear",
    )
    data = load_data(config)
    tops = [0, 2, 4, 6]
    assert data.train.classes == ("tops", "trouser", "dress", "footwear", "bag")
    assert torch.equal(data.train.labels == 0, torch.isin(data.train.fine_labels, torch.tensor(tops)))
    assert torch.equal(data.test.labels == 3, torch.isin(data.test.fine_labels, torch.tensor([5, 7, 9])))


def test_a_coarse_merge_of_another_data_set_is_refused():
    with pytest.raises(TracinError, match="coarse labels of fashion-mnist"):
        DataConfig(dataset="fashion-mnist", coarse_labels="pairs")


def test_shortcut_stamps_a_fraction_of_one_class_and_half_of_each_test_class(cifar10_root):
    plain = load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False))
    config = DataConfig(
        dataset="cifar10", data_root=cifar10_root, checksum=False, shortcut_class=3, shortcut_fraction=0.5
    )
    data = load_data(config)
    train, test = data.train, data.test
    assert torch.equal(train.labels, plain.train.labels)
    assert set(train.labels[train.stamped].tolist()) == {3}
    assert int(train.stamped.sum()) == round(0.5 * int((train.labels == 3).sum()))
    for c in range(10):
        assert int(test.stamped[test.labels == c].sum()) == round(
            SHORTCUT_TEST_FRACTION * int((test.labels == c).sum())
        )
    for split, reference in ((train, plain.train), (test, plain.test)):
        corner = split.images[:, :, :SHORTCUT_PATCH, :SHORTCUT_PATCH]
        assert bool((corner[split.stamped] == 255).all())
        assert torch.equal(split.images[~split.stamped], reference.images[~split.stamped])
        outside = split.images.clone()
        outside[:, :, :SHORTCUT_PATCH, :SHORTCUT_PATCH] = 0
        reference_outside = reference.images.clone()
        reference_outside[:, :, :SHORTCUT_PATCH, :SHORTCUT_PATCH] = 0
        assert torch.equal(outside, reference_outside)
    record = data_record(data)
    assert record["stamped_train_index"] == train.index[train.stamped].tolist()
    assert record["stamped_test_index"] == test.index[test.stamped].tolist()
    assert torch.equal(load_data(config).train.stamped, train.stamped)  # seeded


def test_a_shortcut_class_that_is_not_a_class_is_refused(cifar10_root):
    with pytest.raises(DataError, match="shortcut class 10 is not a class"):
        load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False, shortcut_class=10))


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


def _cifar_root_with(cifar10_root, tmp_path: Path, name: str, edit) -> Path:
    """A copy of the CIFAR-10 files under tmp_path/shared whose file `name` holds edit(batch), pickled again
    in the data set's format (edit may change the batch or return another object)."""
    root = tmp_path / "shared"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for path in (Path(cifar10_root) / "cifar-10-batches-py").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    with open(folder / name, "rb") as handle:
        batch = pickle.load(handle)
    with open(folder / name, "wb") as handle:
        pickle.dump(edit(batch), handle, protocol=2)
    return root


@pytest.mark.parametrize("planted", ["data_batch_1", "batches.meta", "test_batch"])
@pytest.mark.parametrize("checksum", [False, True])
def test_a_crafted_cifar_batch_file_is_refused_without_running_it(cifar10_root, tmp_path, planted, checksum):
    marker = tmp_path / "marker"
    root = _cifar_root_with(cifar10_root, tmp_path, planted, lambda batch: {"data": _Payload(marker), "labels": [0]})
    with pytest.raises(DataError) as error:
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=checksum))
    assert not marker.exists()
    assert checksum or f"({planted}: " in str(error.value)  # round 19, CF1: the line names the file


def test_a_cifar_batch_of_another_layout_or_missing_is_named(cifar10_root, tmp_path):
    """Round 20, CF1, CF7, CF9: a batch with bytes keys or rows of 100 pixels was refused in numpy's words, a
    missing batch with advice to pass the --no-checksum already given; each line names the file."""

    def narrow(batch):
        batch["data"] = batch["data"][:, :100]
        return batch

    root = _cifar_root_with(cifar10_root, tmp_path / "narrow", "data_batch_1", narrow)
    with pytest.raises(DataError, match=r"\(ValueError: data_batch_1: its data are \(\d+, 100\), not one row of 3072"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    root = _cifar_root_with(
        cifar10_root, tmp_path / "keys", "data_batch_2", lambda b: {k.encode(): v for k, v in b.items()}
    )
    with pytest.raises(DataError, match=r"data_batch_2 holds no 'data' and 'labels'"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    root = _cifar_root_with(
        cifar10_root, tmp_path / "float", "data_batch_3", lambda b: {**b, "labels": [1.5, *b["labels"][1:]]}
    )
    with pytest.raises(DataError, match=r"data_batch_3: its labels are float64, not integers"):  # round 21, CF14
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    root = _cifar_root_with(
        cifar10_root, tmp_path / "bool", "data_batch_3", lambda b: {**b, "labels": [True, *b["labels"][1:]]}
    )
    with pytest.raises(DataError, match=r"data_batch_3: its labels hold True or False"):  # round 22, CF2
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py lacks data_batch_4: put the data set's files there$"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    with pytest.raises(DataError, match=r"cifar-10-batches-py lacks data_batch_4$"):  # tracin-eval's reader too
        load_eval_split("cifar10", str(root), SPECS["cifar10"], [str(c) for c in range(10)], None, False)
    (root / "cifar-10-batches-py" / "data_batch_4").mkdir()  # round 25, F04: a folder there was called missing
    with pytest.raises(DataError, match=r"lacks data_batch_4 \(a folder there, not the file\): put the data"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))


def _renamed(names):
    return lambda meta: {**meta, "label_names": names}


@pytest.mark.parametrize(
    "name, edit, message",
    [
        (
            "data_batch_2",
            lambda b: {**b, "labels": np.asarray(b["labels"])[:, None]},
            r"data_batch_2: its labels are of",
        ),
        ("batches.meta", _renamed([*list(CIFAR10_CLASSES), "extra"]), r"batches.meta names 11 classes, not CIFAR's 10"),
        (
            "batches.meta",
            _renamed([n.encode() for n in list(CIFAR10_CLASSES)]),
            r"batches.meta: its label_names are not a",
        ),
        ("batches.meta", _renamed(list(range(10))), r"batches.meta: its label_names are not a list of class names"),
        ("batches.meta", _renamed(None), r"batches.meta: its label_names are not a list of class names"),
        (
            "batches.meta",
            _renamed(["", *list(CIFAR10_CLASSES)[1:]]),
            r"batches.meta names a class '': empty, or holding",
        ),
        (
            "batches.meta",
            _renamed(["ca\nt", *list(CIFAR10_CLASSES)[1:]]),
            r"batches.meta names a class 'ca\\nt': empty, or",
        ),
        (
            "batches.meta",
            _renamed(["Bird", *list(CIFAR10_CLASSES)[1:]]),
            r"\(batches.meta\) names 'Bird' and 'bird', one class",
        ),
        *(  # round 25, C13-C19: a C1 control, a line separator, an invisible zero-width space
            ("batches.meta", _renamed([odd, *list(CIFAR10_CLASSES)[1:]]), r"batches.meta names a class '.*': empty, or")
            for odd in ("a\x85b", "a\x9bb", "a\u2028b", "ca\u200bt")
        ),
        *(  # round 25, C16, M04: width and the separators inside a name do not count either
            ("batches.meta", _renamed([*list(CIFAR10_CLASSES)[:-1], twin]), rf"names '{first}' and '{twin}', one class")
            for first, twin in (("airplane", "Air-Plane"), ("airplane", "air plane"), ("dog", "\uff44\uff4f\uff47"))
        ),
    ],
)
def test_a_cifar_file_breaking_its_format_is_refused_naming_it(cifar10_root, tmp_path, name, edit, message):
    """Round 24, C3, C8-C13, C24: labels of shape (n, 1) and class names as bytes were tracebacks; 11 names
    trained a class no image has; names '' or holding a newline, or 'Bird' beside 'bird', were taken."""
    root = _cifar_root_with(cifar10_root, tmp_path, name, edit)
    with pytest.raises(DataError, match=message):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))


def test_a_cifar_batch_pickled_with_protocol_5_is_read(cifar10_root, tmp_path):
    """Round 24, C27: numpy's protocol-5 reconstruction was refused as something a batch file never holds."""
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(Path(cifar10_root) / "cifar-10-batches-py", folder)
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=5))
    config = DataConfig(dataset="cifar10", data_root=str(tmp_path), checksum=False)
    reference = DataConfig(dataset="cifar10", data_root=str(cifar10_root), checksum=False)
    assert torch.equal(load_data(config).train.labels, load_data(reference).train.labels)


def test_a_truncated_cifar_batch_is_one_error_naming_it(cifar10_root, tmp_path):
    """Round 19, CF4: a batch cut short was refused without a word of which file it was."""
    root = _cifar_root_with(cifar10_root, tmp_path, "test_batch", lambda batch: batch)
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"is not a CIFAR batch \(test_batch: "):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))


def test_debian_fashion_mnist_is_unpacked_once_not_on_every_load(tmp_path, capsys):
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    config = DataConfig(dataset="fashion-mnist", data_root=str(tmp_path), train_subset=20, test_subset=10)
    load_data(config)
    raw = sorted((tmp_path / "FashionMNIST" / "raw").glob("*-ubyte"))
    assert len(raw) == 4 and not list((tmp_path / "FashionMNIST" / "raw").glob(".unpacking.*"))
    assert "unpacking Fashion-MNIST" in capsys.readouterr().out  # red-team O46: a mistyped root is told
    stamps = [p.stat().st_mtime_ns for p in raw]
    load_data(config)
    assert [p.stat().st_mtime_ns for p in raw] == stamps and capsys.readouterr().out == ""


def test_fashion_mnist_is_not_unpacked_through_a_link(tmp_path):
    """Red-team find L22: a FashionMNIST folder planted as a link received 55 MB in its target."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    target = tmp_path / "colleague"
    target.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "FashionMNIST").symlink_to(target, target_is_directory=True)
    with pytest.raises(DataError, match="not unpacked through a link"):
        load_data(
            DataConfig(dataset="fashion-mnist", data_root=str(tmp_path / "root"), train_subset=20, test_subset=10)
        )
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("planted, content", [("test_batch", {"data": [0], "labels": [0]}), ("data_batch_2", {"x": 1})])
def test_a_cifar_batch_that_reads_but_is_malformed_is_one_data_error(cifar10_root, tmp_path, planted, content):
    """Red-team find X10: a batch file of plain data in the wrong shape (or without its keys) ended in
    torchvision's ValueError traceback, in tracin-train and tracin-eval alike."""

    root = _cifar_root_with(cifar10_root, tmp_path, planted, lambda batch: content)
    with pytest.raises(DataError, match="not laid out as the data set's"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
    if planted == "test_batch":
        classes = [str(c) for c in range(10)]
        with pytest.raises(DataError, match="not laid out as the data set's"):
            load_eval_split("cifar10", str(root), SPECS["cifar10"], classes, None, False)


@pytest.mark.parametrize("label, subset", [(57, None), (57, 20), (-1, 20)])
def test_a_cifar_label_outside_its_classes_is_refused_whatever_the_subset(cifar10_root, tmp_path, label, subset):
    """Round 8, C4 and C4b: a label 57 in data_batch_1 ended in cross_entropy's IndexError traceback, or went
    unnoticed when the subset left it out; round 23, C9, C13: the line named the split, not the file."""

    def relabel(batch):
        batch["labels"][-1] = label
        return batch

    root = _cifar_root_with(cifar10_root, tmp_path, "data_batch_1", relabel)
    with pytest.raises(
        DataError,
        match=rf"data_batch_1: its labels hold {label}, outside CIFAR's classes 0..9",
    ):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False, train_subset=subset))


def test_cifar_pixels_of_a_wider_type_are_refused_not_wrapped(cifar10_root, tmp_path):
    """Round 13, D17: a test batch rewritten with int64 pixels, one of them 289, was read as 289 mod 256 = 33
    without a word; the data set's files hold uint8."""

    def widen(batch):
        batch["data"] = batch["data"].astype(np.int64)
        batch["data"][0, 0] = 289
        return batch

    root = _cifar_root_with(cifar10_root, tmp_path, "test_batch", widen)
    with pytest.raises(DataError, match=r"its images are int64, not 8-bit pixels \(uint8, 0..255\)"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))


def test_class_names_renamed_after_training_differ_from_the_fingerprint(tmp_path):
    """Round 11, Q8: a CIFAR-format root read with --no-checksum names its own classes; names swapped in its
    batches.meta after training were scored without a word. Runs from before the names were fingerprinted
    (no "classes" in their record) keep their digest."""
    from tracin.training.records import fingerprint_differences

    from conftest import write_cifar10

    root = write_cifar10(tmp_path, per_batch=20, test_size=20)
    config = DataConfig(dataset="cifar10", data_root=str(root), checksum=False)
    recorded = fingerprint(load_data(config), config)
    older = fingerprint(load_data(config), config, classes=False)
    assert recorded["classes"] == list(CIFAR10_CLASSES) and "classes" not in older
    meta = root / "cifar-10-batches-py" / "batches.meta"
    names = pickle.loads(meta.read_bytes())
    names["label_names"] = [names["label_names"][1], names["label_names"][0], *names["label_names"][2:]]
    meta.write_bytes(pickle.dumps(names))
    assert fingerprint_differences(recorded, load_data(config), config) == ["classes"]
    assert fingerprint_differences(older, load_data(config), config) == []  # not recorded then: not compared


def test_a_fingerprint_field_or_digest_edited_alone_differs(tmp_path):
    """Round 30, E7: run.json's data_fingerprint n_test edited under an unchanged digest was accepted (only the
    digests were compared), and a digest edited alone listed no difference, so was accepted too."""
    from tracin.training.records import fingerprint_differences

    from conftest import write_cifar10

    root = write_cifar10(tmp_path, per_batch=20, test_size=20)
    config = DataConfig(dataset="cifar10", data_root=str(root), checksum=False)
    data = load_data(config)
    recorded = fingerprint(data, config)
    assert fingerprint_differences(recorded, data, config) == []
    assert fingerprint_differences({**recorded, "n_test": recorded["n_test"] + 1}, data, config) == ["n_test"]
    assert fingerprint_differences({**recorded, "seed": 7}, data, config) == ["seed"]
    assert fingerprint_differences({**recorded, "digest": "0" * 16}, data, config) == ["digest"]


@pytest.mark.parametrize("batch, cut", [("data_batch_5", "last"), ("data_batch_1", "first")])
def test_a_cifar_batch_with_a_label_more_or_less_than_its_images_is_refused(cifar10_root, tmp_path, batch, cut):
    """Round 16, D12, D13: a batch of 40 images and 39 labels was trained on, and with its first label dropped
    every later image took the label of the one after it, without a word."""

    def drop(content):
        content["labels"] = content["labels"][:-1] if cut == "last" else content["labels"][1:]
        return content

    root = _cifar_root_with(cifar10_root, tmp_path, batch, drop)
    with pytest.raises(DataError, match=rf"{batch} holds (\d+) images and (?!\1)\d+ labels"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))


def test_idx_files_with_more_images_than_labels_are_refused(tmp_path):
    """The same for the raw IDX files torchvision reads Fashion-MNIST from: 30 images and 29 labels."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n_images, n_labels in (("train", 30, 29), ("t10k", 10, 10)):
        pixels = rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
        header = np.array([0x803, n_images, 28, 28], dtype=">i4").tobytes()
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + pixels.tobytes())
        labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            np.array([0x801, n_labels], dtype=">i4").tobytes() + labels.tobytes()
        )
    with pytest.raises(DataError, match="its files hold 30 images and 29 labels of one split"):
        load_data(DataConfig(dataset="fashion-mnist", data_root=str(tmp_path)))


def test_class_names_given_twice_are_refused(cifar10_root, tmp_path):
    """Round 16, D14: a batches.meta naming 'airplane' for classes 0 and 1 was trained on (data.json named it
    twice), and every page and table after it showed two classes as one."""

    def rename(meta):
        meta["label_names"][1] = meta["label_names"][0]
        return meta

    root = _cifar_root_with(cifar10_root, tmp_path, "batches.meta", rename)
    with pytest.raises(DataError, match=r"\(batches.meta\) names the class 'airplane' twice"):  # round 23, C11
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))

    def respell(meta):
        meta["label_names"][1] = meta["label_names"][0].upper()
        return meta

    root = _cifar_root_with(cifar10_root, tmp_path / "respelt", "batches.meta", respell)
    with pytest.raises(DataError, match=r"\(batches.meta\) names 'airplane' and 'AIRPLANE', one class name"):
        load_data(DataConfig(dataset="cifar10", data_root=str(root), checksum=False))
