"""Data sets by name through torchvision's own classes, with stable indices, subsets, label noise, merged
(coarse) classes and a planted shortcut.

Images are held as uint8 tensors [n, C, H, W] and normalised per batch, so a whole CIFAR-10 training set
(150 MB) can live on the training device. Every example keeps `index`, its position in the original
torchvision data set; subsets, label noise and HDF5 rows all refer to it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from tracin.config import (  # noqa: F401 (re-exported)
    DATA_FOLDERS,
    EVAL_DATASETS,
    DataConfig,
    default_data_root,
    inherited_shortcut_class,
    split_model_name,
)
from tracin.errors import DataError, TracinError
from tracin.files import missing_folders, naming_full_disk, refuse_links, remove_made_folders
from tracin.training.cifar_files import UncheckedCIFAR10, UncheckedCIFAR100, missing_files, restricted_cifar_reads

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetSpec:
    """What the code needs to know about a data set: per-channel mean/std and the augmentation."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool


# Coarse classes for the identical-subclass check (Hanawa et al., ICLR 2021): (name, fine labels) in
# coarse-label order; every class of the data set is in exactly one.
CLASS_MERGES = {
    ("fashion-mnist", "tops-footwear"): (
        ("tops", (0, 2, 4, 6)),
        ("trouser", (1,)),
        ("dress", (3,)),
        ("footwear", (5, 7, 9)),
        ("bag", (8,)),
    ),
    ("cifar10", "animals-vehicles"): (("vehicle", (0, 1, 8, 9)), ("animal", (2, 3, 4, 5, 6, 7))),
    ("cifar10", "pairs"): (
        ("airplane-ship", (0, 8)),
        ("automobile-truck", (1, 9)),
        ("bird-frog", (2, 6)),
        ("cat-dog", (3, 5)),
        ("deer-horse", (4, 7)),
    ),
}
SHORTCUT_PATCH = 3  # side in pixels of the white square stamped in the top-left corner
SHORTCUT_TEST_FRACTION = 0.5  # of each class's test images, stamped when a run plants a shortcut

SPECS = {
    "cifar10": DatasetSpec("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
    "fashion-mnist": DatasetSpec("fashion-mnist", (0.2860,), (0.3530,), 2, True),
}
# The class names of the published files (batches.meta; torchvision's FashionMNIST.classes): a record
# naming others was edited, or its data are files of CIFAR-10's format that are not the published ones.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def published_classes(config: DataConfig) -> Optional[tuple[str, ...]]:
    """The class names of a run's data, by label, known from its configuration alone (merged classes, or a
    data set's published files); None for CIFAR-10 read without checksums, whose files may name others."""
    if config.coarse_labels is not None:
        return tuple(name for name, _ in CLASS_MERGES[config.dataset, config.coarse_labels])
    if config.dataset == "fashion-mnist":
        return tuple(datasets.FashionMNIST.classes)
    return CIFAR10_CLASSES if config.checksum else None


@dataclass
class Split(torch.utils.data.Dataset):
    """One side (train or test) of a run's data.

    images: Tensor[n, C, H, W] uint8; labels: Tensor[n] int64, the labels used for training (after
    label noise); index: Tensor[n] int64 into the original data set; clean_labels: Tensor[n] int64,
    the labels before noise (the data set's own, or their merged class with coarse labels);
    fine_labels: Tensor[n] int64, the data set's own labels (named by fine_classes); stamped: Tensor[n]
    bool, True where the planted shortcut was stamped; plain_images: the images before stamping, kept only
    in "inherit" mode (DataConfig.shortcut_mode), where models train on differently stamped copies. Items
    are (normalised float32 image [C, H, W], label), un-augmented.
    """

    images: Tensor
    labels: Tensor
    index: Tensor
    clean_labels: Tensor
    spec: DatasetSpec
    classes: tuple[str, ...]
    fine_labels: Optional[Tensor] = None  # None: the clean labels
    stamped: Optional[Tensor] = None  # None: nothing stamped
    fine_classes: tuple[str, ...] = ()  # (): the classes
    plain_images: Optional[Tensor] = None  # None: no model trains on another stamping of these images

    def __post_init__(self) -> None:
        if self.fine_labels is None:
            self.fine_labels = self.clean_labels
        if self.stamped is None:
            self.stamped = torch.zeros(len(self.labels), dtype=torch.bool)
        if not self.fine_classes:
            self.fine_classes = self.classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return normalize(self.images[i : i + 1], self.spec)[0], self.labels[i]

    @property
    def noisy(self) -> Tensor:
        """Tensor[n] bool: True where label noise flipped the label."""
        return self.labels != self.clean_labels

    def batches(self, batch_size: int, device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive un-augmented batches (normalised float32 images, labels) on `device`."""
        for start in range(0, len(self), batch_size):
            images = self.images[start : start + batch_size].to(device)
            yield normalize(images, self.spec), self.labels[start : start + batch_size].to(device)

    def subset(self, positions: Tensor) -> "Split":
        """The examples at `positions` (into this split), keeping their original indices."""
        return Split(
            self.images[positions],
            self.labels[positions],
            self.index[positions],
            self.clean_labels[positions],
            self.spec,
            self.classes,
            self.fine_labels[positions],
            self.stamped[positions],
            self.fine_classes,
            None if self.plain_images is None else self.plain_images[positions],
        )


@dataclass
class RunData:
    """A run's train and test splits. In "inherit" mode (DataConfig.shortcut_mode) the models do not all
    train on the same images: `train` is the students' (stamped on every class; train.stamped marks them
    all) and train_of(name) gives each model its own."""

    train: Split
    test: Split
    inherit_shortcut: Optional[int] = None  # "inherit" mode: the replica-0 teacher's shortcut class
    shortcut_patch: int = SHORTCUT_PATCH

    def train_of(self, name: str) -> Split:
        """The training images model `name` (ROLE or ROLE.rN) was trained on: `train`, except for a
        teacher in "inherit" mode, whose images carry the stamp only on its own shortcut class."""
        if self.inherit_shortcut is None or split_model_name(name)[0] != "teacher":
            return self.train
        shortcut = inherited_shortcut_class(self.inherit_shortcut, name, self.num_classes)
        mine = self.train.stamped & (self.train.labels.cpu() == shortcut)
        images = stamp(self.train.plain_images, mine.nonzero().flatten(), self.shortcut_patch)
        return replace(self.train, images=images.to(self.train.images.device), stamped=mine)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]


def normalize(images: Tensor, spec: DatasetSpec) -> Tensor:
    """uint8 Tensor[n, C, H, W] -> float32 Tensor[n, C, H, W], scaled to [0, 1] and standardised."""
    mean = torch.tensor(spec.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment(images: Tensor, spec: DatasetSpec, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, for a uint8 batch [n, C, H, W].

    One draw per example from `generator` (which must live on the images' device), so a seeded run
    sees the same augmentation after a resume.
    """
    n, _, height, width = images.shape
    pad = spec.crop_padding
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    cropped = padded[batch, channels, rows, cols]
    if not spec.flip:
        return cropped
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def _load_torchvision(config: DataConfig, train: bool):
    root = Path(config.data_root)
    if root.exists() and not root.is_dir():
        raise DataError(f"the data root {root} is a file, not a folder: --data-root names the folder of the data sets")
    if config.dataset == "cifar10":
        loader, folder = (datasets.CIFAR10 if config.checksum else UncheckedCIFAR10), root / DATA_FOLDERS["cifar10"]
    else:
        _link_debian_fashion_mnist(root)
        loader, folder = datasets.FashionMNIST, root / DATA_FOLDERS["fashion-mnist"]
    try:
        with restricted_cifar_reads():
            return loader(str(root), train=train, download=False)
    except pickle.UnpicklingError as error:
        raise DataError(f"{folder} holds a file that is not a CIFAR batch ({error}); it was not loaded") from None
    except (ValueError, KeyError, TypeError, IndexError) as error:  # a batch that unpickles but is not laid out as one
        raise DataError(_malformed_message(folder, error)) from None
    except RuntimeError as error:
        if folder.exists():  # present but unreadable: never download over a user's files
            raise DataError(_missing_message(config, error)) from None
    made = missing_folders(root)  # the download makes them
    try:
        return loader(str(root), train=train, download=True)
    except (RuntimeError, OSError) as error:
        remove_made_folders(made)  # a refused download leaves no empty folder behind (round 37, T24)
        raise DataError(_missing_message(config, error)) from None


def _first_line(error: Exception) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _malformed_message(folder: Path, error: Exception) -> str:
    reason = _first_line(error)
    return (
        f"{folder} holds a data file that reads but is not laid out as the data set's ({type(error).__name__}: "
        f"{reason}); replace it with the published file"
    )


def _link_debian_fashion_mnist(root: Path) -> None:
    """Unpack Debian's dataset-fashion-mnist files into torchvision's raw layout under `root`, saying so
    (a mistyped --data-root gets 55 MB it did not ask for), each file beside its place first and then moved
    there (a killed unpacking leaves no truncated file to be read later), never through a link."""
    raw = root / "FashionMNIST" / "raw"
    missing = [a for a in sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")) if not (raw / a.name[: -len(".gz")]).exists()]
    if not missing:
        return
    try:  # someone's link would receive the files (red-team find L22)
        refuse_links((root / "FashionMNIST", raw), "Fashion-MNIST is not unpacked through a link:")
    except TracinError as error:
        raise DataError(str(error)) from None
    print(f"unpacking Fashion-MNIST from {DEBIAN_FASHION_MNIST} into {raw} (once per data root)", flush=True)
    raw.mkdir(parents=True, exist_ok=True)
    for archive in missing:
        name = archive.name[: -len(".gz")]
        with naming_full_disk(raw / name), tempfile.TemporaryDirectory(prefix=".unpacking.", dir=raw) as unpacking:
            extract_archive(str(archive), unpacking)
            os.replace(Path(unpacking) / name, raw / name)


def _missing_message(config: DataConfig, error: Exception) -> str:
    first_line = _first_line(error)
    missing = missing_files(Path(config.data_root), datasets.CIFAR10) if config.dataset == "cifar10" else []
    if missing:  # round 20, CF9: name what is missing
        return f"{Path(config.data_root) / DATA_FOLDERS['cifar10']} lacks {', '.join(missing)}: put the data set's files there"
    if config.dataset == "cifar10":
        hint = f"put cifar-10-batches-py under {config.data_root} (or run once online so torchvision downloads it)"
        if config.checksum:
            hint += "; for CIFAR-format files that are not the published ones, turn checksums off (--no-checksum)"
    else:
        hint = (
            f"install Debian's dataset-fashion-mnist (files in {DEBIAN_FASHION_MNIST}), put FashionMNIST/raw "
            f"under {config.data_root}, or run once online"
        )
    return f"{config.dataset} could not be loaded from {config.data_root} ({first_line}): {hint}"


def _as_tensors(dataset) -> tuple[Tensor, Tensor]:
    pixels = np.asarray(dataset.data)
    if pixels.dtype != np.uint8:  # round 13, D17: values of a wider type were wrapped into 0..255 without a word
        raise DataError(
            f"{dataset.root}: its images are {pixels.dtype}, not 8-bit pixels (uint8, 0..255) as the data set's "
            "files hold them: they are damaged or in another format"
        )
    if len(pixels) != len(dataset.targets):  # the labels of a damaged file would belong to other images
        raise DataError(
            f"{dataset.root}: its files hold {len(pixels)} images and {len(dataset.targets)} labels of one split: "
            "they are damaged (replace them with the published files)"
        )
    images = torch.as_tensor(pixels)
    images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images[:, None]
    return images.contiguous(), torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)


def load_eval_split(
    dataset: str,
    data_root: str,
    spec: DatasetSpec,
    classes: Sequence[str],
    class_map: Optional[dict[str, str]] = None,
    checksum: bool = True,
) -> tuple[Split, dict[str, int]]:
    """Another data set's test split, as a run's models see it: its images normalised with the run's
    `spec`, its labels mapped to the run's `classes` by `class_map` (its class name -> a run class name;
    default: the classes both name alike, case, width, spaces, '-' and '_' aside: class_key). Examples of
    unmapped classes are left out. Returns (the split, {run class: examples}); refuses images of another
    shape or no mapped class."""
    if dataset not in EVAL_DATASETS:
        raise DataError(f"--eval-dataset must be one of {', '.join(EVAL_DATASETS)}, got {dataset!r}")
    root = Path(data_root)
    if dataset == "fashion-mnist":
        loaded = _load_torchvision(DataConfig(dataset="fashion-mnist", data_root=data_root), train=False)
    else:
        loader = {
            "cifar10": (datasets.CIFAR10, UncheckedCIFAR10),
            "cifar100": (datasets.CIFAR100, UncheckedCIFAR100),
        }[dataset]
        try:
            with restricted_cifar_reads():
                loaded = loader[0 if checksum else 1](str(root), train=False, download=False)
        except pickle.UnpicklingError as error:
            raise DataError(f"{root} holds a file that is not a CIFAR batch ({error}); it was not loaded") from None
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise DataError(_malformed_message(root, error)) from None
        except RuntimeError as error:
            missing = missing_files(root, loader[0])
            if missing:
                raise DataError(f"{root / loader[0].base_folder} lacks {', '.join(missing)}") from None
            hint = ", or pass --no-checksum for files that are not the published ones" if checksum else ""
            raise DataError(
                f"{dataset} could not be loaded from {root} ({_first_line(error)}); put its python-format folder "
                f"there{hint}"
            ) from None
    images, own = _as_tensors(loaded)
    mapping = _class_mapping(list(loaded.classes), list(classes), class_map)
    keep = torch.tensor([mapping.get(int(c), -1) >= 0 for c in own])
    if not keep.any():
        raise DataError(
            f"no class of {dataset} maps to the run's classes ({', '.join(classes)}); give --class-map FILE.json "
            '({"its class": "run class", ...})'
        )
    if images.shape[1:] != _shape_of(spec):
        raise DataError(f"{dataset} images are {tuple(images.shape[1:])}, the run's models read {_shape_of(spec)}")
    labels = torch.tensor([mapping[int(c)] for c in own[keep]], dtype=torch.int64)
    index = torch.nonzero(keep).flatten()
    split = Split(images[keep], labels, index, labels.clone(), spec, tuple(classes))
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes) if (labels == i).any()}
    return split, counts


def _shape_of(spec: DatasetSpec) -> tuple[int, int, int]:
    return (len(spec.mean), *SPEC_SIZES[spec.name])


SPEC_SIZES = {"cifar10": (32, 32), "fashion-mnist": (28, 28)}


def class_key(name: str) -> str:
    """How class names are matched between data sets and in a class map: case, width (NFKC), spaces, '-' and
    '_' aside, so 'Air-Plane', 'air plane', 'airplane' and 'ａｉｒｐｌａｎｅ' are one name (round 25, M04, C16)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if not (c.isspace() or c in "-_"))


def check_distinct_names(names: Sequence[str], what: str) -> None:
    """A DataError naming `what` when two of `names` are one name to class_key (round 24, E10, E11: 'bird'
    beside 'Bird' mapped every bird to one class, a class-map key spelt twice lost one entry, unsaid)."""
    seen: dict[str, str] = {}
    for name in names:
        key = class_key(name)
        if seen.get(key) == name:  # round 23, C11: a CIFAR meta file's name spelt twice alike
            raise DataError(f"{what} names the class {name!r} twice")
        if key in seen:
            raise DataError(
                f"{what} names {seen[key]!r} and {name!r}, one class name where case, width, spaces, '-' and '_' "
                "do not count"
            )
        seen[key] = name


def _class_mapping(theirs: list[str], ours: list[str], class_map: Optional[dict[str, str]]) -> dict[int, int]:
    """Their label -> our label (only the mapped ones)."""
    key = class_key
    check_distinct_names(ours, "the run's classes")
    check_distinct_names(theirs, "the evaluation data set's classes")
    check_distinct_names(list(class_map or {}), "--class-map")
    for name in (*class_map, *class_map.values()) if class_map else ():  # round 26, C9: "not a class", unsaid why
        if not name.strip() or not name.isprintable():
            raise DataError(f"--class-map names {name!r}: a class name is printable text, not empty or blank")
    ours_by_key = {key(name): i for i, name in enumerate(ours)}
    if class_map is None:
        return {i: ours_by_key[key(name)] for i, name in enumerate(theirs) if key(name) in ours_by_key}
    theirs_by_key = {key(name): i for i, name in enumerate(theirs)}
    mapping = {}
    for their, our in class_map.items():
        if key(their) not in theirs_by_key:
            raise DataError(f"--class-map names {their!r}, which is not a class of the evaluation data set")
        if key(our) not in ours_by_key:
            raise DataError(
                f"--class-map maps {their!r} to {our!r}, which is not a class of the run ({', '.join(ours)})"
            )
        mapping[theirs_by_key[key(their)]] = ours_by_key[key(our)]
    return mapping


def stratified_subset(labels: Tensor, size: Optional[int], seed: int) -> Tensor:
    """Sorted Tensor[size] int64 of positions, each class represented in proportion (largest remainder).

    `size` None or >= len(labels) returns every position.
    """
    n = len(labels)
    if size is None or size >= n:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    quota = counts * size / n
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: size - take.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels_np == c))[:k] for c, k in zip(classes, take)]
    return torch.as_tensor(np.sort(np.concatenate(chosen)), dtype=torch.int64)


def flip_labels(labels: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """Copy of `labels` with exactly round(fraction * n) entries moved to a different, random class."""
    rng = np.random.default_rng(seed)
    count = int(round(fraction * len(labels)))
    positions = rng.choice(len(labels), size=count, replace=False)
    shift = rng.integers(1, num_classes, size=count)
    noisy = labels.clone()
    noisy[positions] = (labels[positions] + torch.as_tensor(shift)) % num_classes
    return noisy


def merge_classes(fine_labels: Tensor, merge: tuple) -> Tensor:
    """Tensor[n] int64: the coarse label of each fine label under CLASS_MERGES' `merge`."""
    coarse_of = torch.full((1 + max(max(members) for _, members in merge),), -1, dtype=torch.int64)
    for coarse, (_, members) in enumerate(merge):
        coarse_of[list(members)] = coarse
    if int(fine_labels.max()) >= len(coarse_of) or bool((coarse_of[fine_labels] < 0).any()):
        raise DataError("the class merge leaves a class of the data set out: every class needs a coarse class")
    return coarse_of[fine_labels]


def shortcut_positions(labels: Tensor, classes: Sequence[int], fraction: float, seed: int) -> Tensor:
    """Sorted Tensor[m] int64: round(fraction * count) seeded positions of each class in `classes`."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels.numpy() == c)
        chosen.append(rng.permutation(members)[: int(round(fraction * len(members)))])
    return torch.as_tensor(np.sort(np.concatenate(chosen)) if chosen else [], dtype=torch.int64)


def stamp(images: Tensor, positions: Tensor, patch: int = SHORTCUT_PATCH) -> Tensor:
    """Copy of uint8 `images` [n, C, H, W] with a white `patch` x `patch` square in the top-left corner of
    the images at `positions`."""
    stamped = images.clone()
    stamped[positions, :, :patch, :patch] = 255
    return stamped


def _plant_shortcut(split: Split, config: DataConfig, train: bool) -> Split:
    if config.shortcut_class >= len(split.classes):
        raise DataError(f"shortcut class {config.shortcut_class} is not a class: labels run 0-{len(split.classes) - 1}")
    if config.shortcut_patch > min(split.images.shape[-2:]):
        raise DataError(
            f"a shortcut patch of {config.shortcut_patch} pixels is larger than the images "
            f"({split.images.shape[-2]}x{split.images.shape[-1]})"
        )
    if train:
        # each class's stamped images drawn alone (seed + 3), so a class's are the same in either mode
        classes = [config.shortcut_class] if config.shortcut_mode == "class" else range(len(split.classes))
        positions = torch.cat(
            [shortcut_positions(split.labels, [c], config.shortcut_fraction, config.seed + 3) for c in classes]
        )
        if len(positions) == 0:
            raise DataError(
                f"a shortcut fraction of {config.shortcut_fraction} stamps no training image of class {config.shortcut_class}"
            )
        positions = positions.sort().values
    else:
        positions = shortcut_positions(split.labels, range(len(split.classes)), SHORTCUT_TEST_FRACTION, config.seed + 4)
    stamped = torch.zeros(len(split), dtype=torch.bool)
    stamped[positions] = True
    plain = split.images if train and config.shortcut_mode == "inherit" else None
    return replace(
        split, images=stamp(split.images, positions, config.shortcut_patch), stamped=stamped, plain_images=plain
    )


NAMED_BY = {"cifar10": "batches.meta names"}  # where a data set's class names come from, for a message (CF8)


def _check_labels(labels: Tensor, num_classes: int, config: DataConfig, train: bool) -> None:
    """Every label of the data set's split (not only the subset drawn) names one of its classes: a damaged
    batch file is refused whichever examples a subset would pick (round 8: C4, C4b)."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"the {config.dataset} {'train' if train else 'test'} split under {config.data_root} holds {len(bad)} "
            f"label(s) outside the {num_classes} classes {NAMED_BY.get(config.dataset, 'it has')} (e.g. {int(bad[0])}): "
            "its files are damaged; replace them with the published files"
        )


def _make_split(config: DataConfig, train: bool) -> Split:
    dataset = _load_torchvision(config, train)
    images, fine = _as_tensors(dataset)
    _check_labels(fine, len(dataset.classes), config, train)
    where = f"{config.data_root}'s {config.dataset} files" + (" (batches.meta)" if config.dataset == "cifar10" else "")
    check_distinct_names(dataset.classes, where)  # round 16, D14: a class named twice made two classes one
    size = config.train_subset if train else config.test_subset
    if size is not None and size > len(fine):
        raise DataError(f"{'train' if train else 'test'} subset of {size} asked, the data set has {len(fine)}")
    if size is not None and size < len(dataset.classes):  # round 13, V29: half the classes were left out
        raise DataError(
            f"a {'train' if train else 'test'} subset of {size} cannot hold each of {config.dataset}'s "
            f"{len(dataset.classes)} classes: give at least {len(dataset.classes)}"
        )
    chosen = stratified_subset(fine, size, config.seed + (0 if train else 1))
    fine_classes = classes = tuple(dataset.classes)
    clean = fine[chosen]
    if config.coarse_labels is not None:
        merge = CLASS_MERGES[config.dataset, config.coarse_labels]
        clean, classes = merge_classes(clean, merge), tuple(name for name, _ in merge)
    labels = clean
    if train and config.label_noise > 0:
        labels = flip_labels(labels, config.label_noise, len(classes), config.seed + 2)
    split = Split(
        images[chosen], labels, chosen, clean, SPECS[config.dataset], classes, fine[chosen], None, fine_classes
    )
    return split if config.shortcut_class is None else _plant_shortcut(split, config, train)


def load_data(config: DataConfig) -> RunData:
    """The train and test splits a run uses: subsets picked and label noise applied, all seeded."""
    inherit = config.shortcut_class if config.shortcut_mode == "inherit" else None
    return RunData(_make_split(config, train=True), _make_split(config, train=False), inherit, config.shortcut_patch)
