"""The fixed names of the score file's layout (the package docstring, tracin/results/store/__init__.py) and
the check of a readable file against it, so that a file made by hand, or by something else, is refused with
what is wrong instead of failing inside a reader."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import h5py
import numpy as np

from tracin.config import split_variant
from tracin.errors import StoreError
from tracin.results.store.digests import BLOCK_DIGESTS
from tracin.results.store.hdf5 import attribute_value
from tracin.training.checkpoints import EPOCH_FILE
from tracin.variants import SCORE_VARIANTS

if TYPE_CHECKING:
    from tracin.results.store.file import ScoreFile

FORMAT = "tracin-scores"
# 5: attribute digests are bound to their file too; 4: values' digests are bound to their file
# (digests.file_seed); 3: attributes and member names are sealed too; 2: datasets carry digests (store.digests)
FORMAT_VERSION = 5
HEADER_ARRAYS = (
    "train_index",
    "test_index",
    "train_labels",
    "test_labels",
    "train_clean_labels",
    "train_fine_labels",
    "test_fine_labels",
)
HEADER_MASKS = ("train_stamped", "test_stamped")
LABEL_ARRAYS = {  # each label array and the attribute naming its classes
    "train_labels": "classes",
    "test_labels": "classes",
    "train_clean_labels": "classes",
    "train_fine_labels": "fine_classes",
    "test_fine_labels": "fine_classes",
}
RANKING_FIELDS = ("top_index", "top_score", "bottom_index", "bottom_score")
CHUNK_ROWS, CHUNK_COLS = 512, 4096  # at most 8 MB per HDF5 chunk of float32 scores: partial reads stay cheap
VALIDATION = "validation"  # tracin-validate's group
SELF = "self_influence"
NORMALISED_SELF = "self_influence_train-normalised"
GROUP_SELF = "self_influence_groups"
GROUP_NORMALISED_SELF = "self_influence_groups_train-normalised"
SELF_INFLUENCES = (
    SELF,
    NORMALISED_SELF,
    GROUP_SELF,
    GROUP_NORMALISED_SELF,
)  # the datasets a block's first test block writes
REMADE_EACH_RUN = ("last_loss", "test_prediction", "test_confidence")  # written whole after the blocks, every run
RANKING_GROUPS = ("topk", "topk_epoch", "topk_variant")  # a model's top-k tables, written whole at every run's end


def layout_problems(store: "ScoreFile") -> list[str]:
    """What in a readable score file does not have the declared layout (the package docstring): the header
    arrays' lengths and integer types, each model's score matrices' shape and float type, its per-example
    arrays' lengths, and its top-k tables' shapes and index ranges. A file made by hand, or by something else,
    is refused with the first of these, instead of failing inside a reader."""
    h5 = store._h5
    required = HEADER_ARRAYS + HEADER_MASKS + ("noisy",)  # round 14, N18: one deleted was a KeyError
    missing = [f"/{name} is missing" for name in required if not isinstance(h5.get(name), h5py.Dataset)]
    if missing:  # the sizes every other check reads
        return missing
    problems = _attribute_problems(h5)
    for name in HEADER_ARRAYS + HEADER_MASKS + ("noisy",):
        if name in h5:
            problems += _shape_problems(
                h5[name],
                f"/{name}",
                (store.n_train if name.startswith(("train", "noisy")) else store.n_test,),
                "b" if name in HEADER_MASKS + ("noisy",) else "iu",
            )
    if not problems:
        problems += _header_value_problems(h5)
    # a model group that lost its scores is still a model group: its missing scores are the problem to name
    models = store.models
    models += [k for k in h5 if k not in models and isinstance(h5[k], h5py.Group) and "checkpoints" in h5[k]]
    problems += _table_problems(h5, set(models))
    classes = None if problems else class_names(h5, "classes")
    for model in models:
        problems += _model_problems(h5[model], f"/{model}", store.n_train, store.n_test)
        problems += _variant_problems(h5[model], f"/{model}") if not problems else []
        problems += _prediction_problems(h5[model], f"/{model}", classes) if not problems else []
    return problems


def _variant_problems(group: h5py.Group, where: str) -> list[str]:
    """A model's `variants` attribute: a JSON list of registered score variants, the first stored as
    `scores`, each other one as `scores_VARIANT`."""
    try:
        variants = json.loads(group.attrs.get("variants", '["raw"]'))
    except (TypeError, ValueError, RecursionError):
        variants = None
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) for v in variants):
        return [f"{where} attribute 'variants' is not a JSON list of score variants"]
    unknown = [v for v in variants if split_variant(v)[0] not in SCORE_VARIANTS]
    if unknown:
        return [
            f"{where} attribute 'variants' names {', '.join(unknown)}, not a score variant of {', '.join(SCORE_VARIANTS)}"
        ]
    return [f"{where}/scores_{v} is missing" for v in variants[1:] if f"scores_{v}" not in group]


def _prediction_problems(group: h5py.Group, where: str, classes: Optional[list[str]]) -> list[str]:
    """A model's stored predictions name a class of the file, with a probability in [0, 1]."""
    problems = []
    if "test_prediction" in group and classes and group["test_prediction"].size:
        values = group["test_prediction"][()]
        if values.min() < 0 or values.max() >= len(classes):
            problems.append(f"{where}/test_prediction holds classes outside 0..{len(classes) - 1}")
    if "test_confidence" in group and isinstance(group["test_confidence"], h5py.Dataset):
        values = group["test_confidence"][()]
        if values.dtype.kind != "f" or not ((values >= 0) & (values <= 1)).all():
            problems.append(f"{where}/test_confidence holds values outside [0, 1] (softmax probabilities)")
    return problems


def class_names(h5, name: str) -> Optional[list[str]]:
    """The class names a file attribute (classes, fine_classes) records as a JSON list of strings; None
    where it records none; a StoreError where it holds anything else."""
    value = h5.attrs.get(name)
    if value is None:
        return None
    try:
        names = json.loads(value) if isinstance(value, (str, bytes)) else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StoreError(f"the attribute {name!r} is not a JSON list of class names (it holds {str(value)[:60]!r})")
    if len(set(names)) != len(names):
        raise StoreError(f"the attribute {name!r} names a class twice ({', '.join(names)})")
    return names


# file attributes that repeat a setting for readers (attribute: settings key): they must agree (red-team H06)
MIRRORED_SETTINGS = {
    "mode": "score.mode",
    "proj_dim": "score.proj_dim",
    "proj_seed": "score.seed",
    "precision": "score.precision",
    "loss": "score.loss",
    "layers": "score.layers",
}


def _attribute_problems(h5) -> list[str]:
    settings = attribute_value(h5.attrs.get("settings"))
    problems = [] if _is_json_object(settings) else ["the attribute 'settings' is not a JSON object"]
    settings = json.loads(settings) if not problems else {}
    for name, key in MIRRORED_SETTINGS.items():
        if name in h5.attrs and key in settings:
            value, expected = attribute_value(h5.attrs[name]), settings[key]
            value = _json_or_text(value) if name == "layers" else value
            expected = expected or 0 if name == "proj_dim" else expected
            if value != expected:
                problems.append(f"the attribute {name!r} is {value!r}, but the file's settings record {expected!r}")
    for name in ("classes", "fine_classes"):
        try:
            class_names(h5, name)
        except StoreError as error:
            problems.append(str(error))
    return problems


def _json_or_text(text):
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


def _is_json_object(text) -> bool:
    try:
        return isinstance(text, str) and isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _header_value_problems(h5) -> list[str]:
    """Values of header arrays whose shapes and types are right: indices into the data set are distinct and
    not negative, and labels name a recorded class."""
    problems = []
    for name in ("train_index", "test_index"):
        values = h5[name][()]
        if values.size and (values.min() < 0 or len(np.unique(values)) != values.size):
            problems.append(f"/{name} holds a negative or repeated index into the data set")
    for name, attribute in LABEL_ARRAYS.items():
        names = class_names(h5, attribute)  # no fine_classes recorded: the fine labels are not checked
        if name in h5 and names and h5[name].size:
            values = h5[name][()]
            if values.min() < 0 or values.max() >= len(names):
                problems.append(
                    f"/{name} holds labels outside 0..{len(names) - 1} (the file's {len(names)} {attribute})"
                )
    if all(name in h5 for name in ("noisy", "train_labels", "train_clean_labels")):  # round 9: H14
        if not np.array_equal(h5["noisy"][()], h5["train_labels"][()] != h5["train_clean_labels"][()]):
            problems.append("/noisy is not where /train_labels differ from /train_clean_labels (the flipped labels)")
    return problems


def _model_problems(group: h5py.Group, where: str, n_train: int, n_test: int) -> list[str]:
    problems = [f"{where}/{key} is missing" for key in ("scores", "done", SELF, "topk") if key not in group]
    for key in group:
        if key == "scores" or key.startswith("scores_"):
            problems += _float32_problems(group[key], f"{where}/{key}", (n_train, n_test))
        elif key in (SELF, NORMALISED_SELF, "last_loss"):
            problems += _float32_problems(group[key], f"{where}/{key}", (n_train,))
        elif key in (GROUP_SELF, GROUP_NORMALISED_SELF):
            rows = group[key].shape[0] if isinstance(group[key], h5py.Dataset) and group[key].ndim == 2 else -1
            problems += _float32_problems(group[key], f"{where}/{key}", (rows, n_train))
        elif key == "test_prediction":
            problems += _shape_problems(group[key], f"{where}/{key}", (n_test,), "iu")
    done = group.get("done")
    if "done" in group and not (isinstance(done, h5py.Dataset) and done.dtype.kind == "b" and done.ndim == 2):
        problems.append(f"{where}/done is not a 2-D boolean mask of the score blocks")
    elif done is not None and attribute_value(group.attrs.get("status")) == "complete" and not np.all(done[()]):
        problems.append(f"{where} is marked complete, but {where}/done has blocks not scored")  # red-team H10
    digests = group.get(BLOCK_DIGESTS)
    if digests is not None and not (
        isinstance(digests, h5py.Dataset)
        and digests.dtype.kind == "S"
        and isinstance(done, h5py.Dataset)
        and digests.shape == done.shape
    ):
        problems.append(f"{where}/{BLOCK_DIGESTS} is not a table of text digests shaped as {where}/done")
    for name in _ranking_groups(group):
        problems += _ranking_problems(group[name], f"{where}/{name}", n_train, n_test)
    return problems + _checkpoint_problems(group.get("checkpoints"), f"{where}/checkpoints")


CHECKPOINT_FIELDS = ("path", "sha256", "epoch", "lr")  # tracin.results.store.model_scores.write_checkpoints


def _checkpoint_problems(table, where: str) -> list[str]:
    """The checkpoints a model was scored with: path, sha256, epoch and lr, one entry each per checkpoint;
    a path named epoch_NNN.pt holds that epoch (red-team round 7, H17: an epoch edited was reported)."""
    fields = {name: table.get(name) if isinstance(table, h5py.Group) else None for name in CHECKPOINT_FIELDS}
    if not all(isinstance(v, h5py.Dataset) and v.ndim == 1 for v in fields.values()):
        return [f"{where} is not a table of {', '.join(CHECKPOINT_FIELDS)} (one entry per checkpoint)"]
    if len({v.shape[0] for v in fields.values()}) != 1 or fields["epoch"].dtype.kind not in "iu":
        return [f"{where}: its {', '.join(CHECKPOINT_FIELDS)} differ in length, or its epochs are not integers"]
    for path, epoch in zip(fields["path"].asstr()[()], fields["epoch"][()]):
        match = EPOCH_FILE.search(path.rsplit("/", 1)[-1])
        if match is not None and int(match.group(1)) != epoch:
            return [f"{where}/epoch records epoch {epoch} for {path}"]
    return []


def _table_problems(h5, models: set[str]) -> list[str]:
    """The tables outside the models' groups (comparisons, agreement, quality, detection, the report, the
    validation's units and tables) are one-dimensional arrays of named fields; anything else there (but the
    validation's margins, seconds, done mask and unit digests, which prepare_validation checks) was not written
    by tracin."""
    problems: list[str] = []
    header = {
        *HEADER_ARRAYS,
        *HEADER_MASKS,
        "noisy",
        *(f"{VALIDATION}/{name}" for name in ("margins", "seconds", "done", "unit_digests")),
    }

    def visit(name: str, item) -> None:
        if name.split("/")[0] in models or name in header or not isinstance(item, h5py.Dataset):
            return
        if item.dtype.names is None or item.ndim != 1:
            problems.append(f"/{name} is not a table of named fields (it holds {item.dtype}, shape {item.shape})")

    h5.visititems(visit)
    return problems


def _shape_problems(dataset, where: str, shape: tuple, kinds: str) -> list[str]:
    if not isinstance(dataset, h5py.Dataset):
        return [f"{where} is not a dataset"]
    if dataset.dtype.kind not in kinds:
        return [
            f"{where} holds {dataset.dtype}, not {'integers' if 'i' in kinds else 'floats' if kinds == 'f' else 'booleans'}"
        ]
    if dataset.shape != shape:
        return [f"{where} has shape {dataset.shape}, expected {shape}"]
    return []


def _float32_problems(dataset, where: str, shape: tuple, rows_per_read: int = 2**24) -> list[str]:
    """The problems of a float32 dataset of `shape`: its shape, its type (float32, as written: a retyped
    float16 would round every score), then every value finite: tracin-score never
    finishes a file with a non-finite score (it stops on non-finite gradients), so one is a damaged or
    edited file, whose NaN would pass silently into every mean and correlation. Read in slices of about
    rows_per_read values. (per_checkpoint, ten times the size at full size, is not read here.)"""
    found = _shape_problems(dataset, where, shape, "f")
    if not found and dataset.dtype != np.float32:  # a retyped dataset: float16 would round every score
        found = [f"{where} holds {dataset.dtype}, not the float32 tracin-score writes"]
    if found or not dataset.size:
        return found
    step = max(1, rows_per_read // max(1, dataset.size // dataset.shape[0]))
    for start in range(0, dataset.shape[0], step):
        if not np.isfinite(dataset[start : start + step]).all():
            return [f"{where} holds non-finite values (NaN or infinity), which tracin-score never writes"]
    return []


def _ranking_groups(group) -> list[str]:
    """The names of a model group's top-k tables: topk, topk_epoch/epoch_NNN, topk_variant/<variant>."""
    names = ["topk"] if "topk" in group else []
    for parent in RANKING_GROUPS[1:]:
        if isinstance(group.get(parent), h5py.Group):
            names += [f"{parent}/{child}" for child in group[parent]]
    return names


def _ranking_problems(tables, where: str, n_train: int, n_test: int) -> list[str]:
    if not isinstance(tables, h5py.Group):
        return [f"{where} is not a group of tables"]
    problems = []
    for prefix, rows, limit in (("test", n_test, n_train), ("train", n_train, n_test)):
        for field in RANKING_FIELDS:
            key = f"{prefix}_{field}"
            if key not in tables:
                problems.append(f"{where}/{key} is missing")
                continue
            problems += _ranking_table_problems(tables[key], f"{where}/{key}", rows, limit, "index" in field)
        shapes = {tables[f"{prefix}_{field}"].shape for field in RANKING_FIELDS if f"{prefix}_{field}" in tables}
        if not problems and len(shapes) > 1:
            problems.append(f"{where}: the {prefix}_* tables differ in shape ({', '.join(map(str, sorted(shapes)))})")
    return problems


def _ranking_table_problems(dataset, where: str, rows: int, limit: int, is_index: bool) -> list[str]:
    """One top-k table: [rows, K] of integers (positions below `limit`) or of floats."""
    found = _shape_problems(
        dataset, where, (rows, dataset.shape[1] if len(dataset.shape) == 2 else -1), "iu" if is_index else "f"
    )
    if not found and is_index and dataset.size:
        values = dataset[()]
        if values.min() < 0 or values.max() >= limit:
            found = [f"{where} holds indices outside 0..{limit - 1}"]
        elif values.shape[1] > 1 and (np.diff(np.sort(values, axis=1), axis=1) == 0).any():
            found = [f"{where} ranks an example twice in one row"]
    elif not found and dataset.size:
        found = _float32_problems(dataset, where, dataset.shape)
    return found
