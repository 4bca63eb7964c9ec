"""Reading CIFAR's batch files safely: pickle restricted to what a batch holds (a crafted file runs no code),
each batch checked for CIFAR's layout and named in the message when it is not, and torchvision's loaders
without their checksums for CIFAR-format files that are not the published ones."""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torchvision import datasets
from torchvision.datasets import cifar as cifar_module


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's batch files hold (dicts, lists, str, bytes, numbers, numpy arrays):
    a batch file is data, and a crafted one must not run code when it is read."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3: encode(str, "latin1")
        ("numpy.core.numeric", "_frombuffer"),  # how protocol 5 writes an array (round 24, C27: refused)
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not something a CIFAR batch file holds")


class _CifarPickle:
    """Stands in for the pickle module inside torchvision.datasets.cifar while tracin reads CIFAR."""

    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file, encoding: str = "ASCII", **_):
        name = Path(getattr(file, "name", "a batch")).name
        try:
            batch = _CifarUnpickler(file, encoding=encoding).load()
        except (pickle.UnpicklingError, EOFError) as error:  # round 19, CF1, CF4: say which file
            raise pickle.UnpicklingError(f"{name}: {str(error) or 'the file ends early'}") from None
        _check_batch(name, batch)
        return batch


CIFAR_META_FILES = {datasets.CIFAR10.meta["filename"], datasets.CIFAR100.meta["filename"]}
CIFAR_CLASSES = {"labels": 10, "fine_labels": 100}  # how many classes a batch's labels of each key can name
CIFAR_ROW = 32 * 32 * 3  # pixels of one image in a batch's data array (channel-major rows)


def _check_batch(name: str, batch) -> None:
    """A ValueError naming the file `name` unless `batch` is laid out as CIFAR's (round 20, CF1, CF7: a batch
    with other keys or rows of another width was refused by numpy's words, not naming the file)."""
    if name in CIFAR_META_FILES:
        _check_names(name, batch)
        return
    labels = batch.get("labels", batch.get("fine_labels")) if isinstance(batch, dict) else None
    if labels is None or "data" not in batch:
        raise ValueError(f"{name} holds no 'data' and 'labels' (a CIFAR batch is a dict of both)")
    images = np.asarray(batch["data"])
    if images.ndim != 2 or images.shape[1] != CIFAR_ROW:
        raise ValueError(f"{name}: its data are {images.shape}, not one row of {CIFAR_ROW} pixels per image")
    if len(images) != len(labels):  # round 16, D12, D13: a label dropped shifted every later one, unseen
        raise ValueError(f"{name} holds {len(images)} images and {len(labels)} labels")
    if images.dtype != np.uint8:  # round 21, CF6: the message named the data root, not the file
        raise ValueError(f"{name}: its images are {images.dtype}, not 8-bit pixels (uint8, 0..255)")
    if np.asarray(labels).ndim != 1:  # round 24, C3: labels of shape (n, 1) were a traceback
        raise ValueError(f"{name}: its labels are of shape {np.asarray(labels).shape}, not one per image")
    kind = np.asarray(labels).dtype
    if len(labels) and not np.issubdtype(kind, np.integer):  # round 21, CF14: a label 1.5 was trained on as 1
        raise ValueError(f"{name}: its labels are {kind}, not integers")
    if any(isinstance(label, (bool, np.bool_)) for label in labels):  # round 22, CF2: True was taken as class 1
        raise ValueError(f"{name}: its labels hold True or False, not class numbers")
    classes = CIFAR_CLASSES["labels" if "labels" in batch else "fine_labels"]
    outside = [int(label) for label in labels if not 0 <= label < classes]
    if outside:  # round 23, C9, C13: named the split, not the file
        raise ValueError(f"{name}: its labels hold {outside[0]}, outside CIFAR's classes 0..{classes - 1}")


def _check_names(name: str, meta) -> None:
    """A ValueError naming the meta file `name` unless it lists CIFAR's count of class names, each a
    non-empty text without control characters (round 24, C8-C13, C24: a list of 11 names trained an 11th
    class no image has; bytes or numbers were a traceback when data.json was written, or an unreadable file
    after; a name '' or holding a newline was taken). That they are distinct is data.check_distinct_names's."""
    key = next((key for key in ("label_names", "fine_label_names") if isinstance(meta, dict) and key in meta), None)
    if key is None:  # round 25, H06: CIFAR-100's meta was said to lack CIFAR-10's key
        cifar100 = datasets.CIFAR100.meta
        raise ValueError(f"{name} holds no {cifar100['key'] if name == cifar100['filename'] else 'label_names'}")
    names, count = meta[key], CIFAR_CLASSES[key.replace("_names", "s")]
    if not isinstance(names, (list, tuple)) or not all(isinstance(label, str) for label in names):
        raise ValueError(f"{name}: its {key} are not a list of class names (text)")
    if len(names) != count:
        raise ValueError(f"{name} names {len(names)} classes, not CIFAR's {count}")
    for label in names:  # round 25, C13-C19: C1 controls, line separators and invisible characters too
        if not label.strip() or not label.isprintable():
            raise ValueError(
                f"{name} names a class {label!r}: empty, or holding a character that does not print (a control, "
                "format or line-separator character)"
            )


@contextmanager
def restricted_cifar_reads():
    """torchvision's CIFAR10 reads its batch files with pickle.load: route that through _CifarUnpickler
    (checksummed official files and a user's own files alike), restoring torchvision's module after."""
    saved = cifar_module.pickle
    cifar_module.pickle = _CifarPickle
    try:
        yield
    finally:
        cifar_module.pickle = saved


class UncheckedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10 loader without its checksums, for CIFAR-format files that are not the
    published ones (a subset you wrote yourself). Reading is torchvision's own code."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class UncheckedCIFAR100(datasets.CIFAR100):
    """torchvision's CIFAR100 loader without its checksums (CIFAR-100-format files you wrote)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


def missing_files(root: Path, loader: type) -> list[str]:
    """The files of the CIFAR `loader` (torchvision's CIFAR10 or CIFAR100, or their unchecked forms) that
    its folder under the data `root` lacks (round 20, CF9: a missing batch was not named); [] when the folder
    itself is missing (the data set is then not there at all)."""
    folder = Path(root) / loader.base_folder
    if not folder.is_dir():
        return []
    names = [name for name, _ in (*loader.train_list, *loader.test_list)] + [loader.meta["filename"]]
    return [_named(folder / name) for name in names if not (folder / name).is_file()]


def _named(path: Path) -> str:
    """A missing file's name, saying what stands in its place (round 25, F04: a folder was called missing)."""
    if path.is_dir():
        return f"{path.name} (a folder there, not the file)"
    return f"{path.name} (not a regular file)" if os.path.lexists(path) else path.name


__all__ = ["UncheckedCIFAR10", "UncheckedCIFAR100", "missing_files", "restricted_cifar_reads"]
