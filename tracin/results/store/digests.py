"""Content digests of a score file's finished datasets, so that a value edited after it was written (a test
example's prediction, one self-influence, a quality table's cell: round 10's H10-H15) is refused instead of
shown.

A dataset is sealed when what writes it is done: the header arrays when the file is made, a model's datasets
when it is complete (ModelScores.mark_complete), a named or comparison table when written, /validation's
when its tables are. Sealing stores attr `digests`: a JSON list of the sha256 of each block of about
BLOCK_BYTES of the dataset's leading axis (at most MAX_BLOCKS; the two leading axes of a 3-d one, one
checkpoint at a time). Checking (check_finished, before any report is made) re-reads every block of a dataset
up to FULL_CHECK_BYTES, and SAMPLED_BLOCKS blocks chosen at random of a larger one, so a check stays cheap at
50,000 x 10,000 scores (2 GB: 120 blocks, 8 read at random, so an edit inside one block is found with
probability 1/15 per read; every dataset of a CPU-size run is read whole).
Every dataset must carry digests except the resume masks (`done`) and those of a group still partial, and
every finished object's attributes (and a sealed group's member names) one too (ATTRS_DIGEST); all of them but
the root's are bound to their file (file_seed). Files of the older formats (version 1: no digests, 2: no
attribute digests, 3 and 4: digests not bound to their file) are not read (ScoreFile refuses them), since a
finished file stripped of its digests would read as one of them (round 16, F1).
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional, Sequence

import h5py
import numpy as np

from tracin.results.store.hdf5 import attribute_value

DIGESTS = "digests"  # the attribute
MEMBERS = "members"  # the root's: JSON list of the top-level datasets and groups tracin-score finished it with
ATTRS_DIGEST = "attrs_digest"  # the sha256 of an object's other attributes (round 12: F22-F36, attributes edited)
MUTABLE_ATTRS = (DIGESTS, ATTRS_DIGEST, "status", "scoring_seconds")  # changed by a resume, not by an edit
BLOCK_BYTES = 2**24  # 16 MB: a dataset of a CPU-size run is one block
MAX_BLOCKS = 256  # digests per dataset: the attribute stays under HDF5's 64 kB
FULL_CHECK_BYTES = 2**27  # datasets (128 MB) up to which every block is checked
SAMPLED_BLOCKS = 8  # blocks checked of a larger dataset
BLOCK_DIGESTS = "block_digests"  # a model's [row chunks, test blocks] sha256 of each block written (hex digits)
UNSEALED = ("done", BLOCK_DIGESTS)  # resume masks and their blocks' sha256: bookkeeping, rewritten by a resume


def blocks(shape: tuple[int, ...], itemsize: int) -> list[tuple]:
    """The index of each digest block of a dataset of `shape` and `itemsize` bytes per value: slices of its
    leading axis of about BLOCK_BYTES, at most MAX_BLOCKS; a 3-d dataset's first index with slices of its
    second (per_checkpoint: [n_ckpt, n_train, n_test]; at least one block per checkpoint). A scalar or empty
    dataset is one block."""
    if not shape or 0 in shape:
        return [()]
    count = min(MAX_BLOCKS, -(-int(np.prod(shape)) * itemsize // BLOCK_BYTES))
    if len(shape) >= 3:
        step = -(-shape[1] // max(1, count // shape[0]))
        return [(i, slice(s, s + step)) for i in range(shape[0]) for s in range(0, shape[1], step)]
    step = -(-shape[0] // count)
    return [(slice(s, s + step),) for s in range(0, shape[0], step)]


def _blocks_of(dataset: h5py.Dataset) -> list[tuple]:
    return blocks(dataset.shape, dataset.dtype.itemsize)


def file_seed(h5: h5py.File) -> str:
    """sha256 of the root's attributes as the file was made (all but MUTABLE_ATTRS and MEMBERS: its format,
    creation time, command, run and settings), which every dataset's digests are bound to: a table copied from
    another score file, even of the same run, no longer matches its digests (round 23, Q1, Q3)."""
    kept = sorted(
        (key, repr(attribute_value(h5.attrs[key]))) for key in h5.attrs if key not in (*MUTABLE_ATTRS, MEMBERS)
    )
    return hashlib.sha256(repr(kept).encode()).hexdigest()


def _digest(seed: str, name: str, values: np.ndarray) -> str:
    """sha256 of the file's `seed` (file_seed), the dataset's name (its path in the file: a dataset moved to
    another model's group, or two models' groups swapped, no longer match: round 11, E1-E5) and an array of its
    values as h5py reads them: raw bytes, or the text of its Python values when it holds objects
    (variable-length strings)."""
    values = np.asarray(values)
    data = repr(values.tolist()).encode() if values.dtype.hasobject else np.ascontiguousarray(values).tobytes()
    return hashlib.sha256(f"{seed}\0{name}\0{values.dtype}\0{values.shape}\0".encode() + data).hexdigest()


def seal(dataset: h5py.Dataset) -> None:
    """Store the digests of `dataset`'s values and attributes as they are now."""
    seed = file_seed(dataset.file)
    dataset.attrs[DIGESTS] = json.dumps([_digest(seed, dataset.name, dataset[i]) for i in _blocks_of(dataset)])
    seal_attributes(dataset)


def seal_attributes(item: h5py.HLObject) -> None:
    """Store the digest of `item`'s attributes (all but MUTABLE_ATTRS) as they are now."""
    item.attrs[ATTRS_DIGEST] = _attributes_digest(item)


def seal_members(root: h5py.Group, names: Optional[Sequence[str]] = None) -> None:
    """List `names` (default: every top-level object now) as the root's MEMBERS, when tracin-score finishes
    the file (round 14, N26, N28: a deleted /agreement or /comparison was read as a file from before them;
    the tables later commands add are not listed, so that they never rewrite the root). The root is sealed
    again only where its attributes are still as sealed: an edit is never sealed over."""
    sealed = root.attrs.get(ATTRS_DIGEST) == _attributes_digest(root)
    root.attrs[MEMBERS] = json.dumps(sorted(root if names is None else names))
    if sealed:
        root.attrs[ATTRS_DIGEST] = _attributes_digest(root)


def drop(root: h5py.Group, name: str) -> None:
    """Delete the top-level object `name` (if there) and its listing: the command that made it makes it again."""
    if name in root:
        del root[name]
    if name in listed_members(root):
        seal_members(root, [member for member in listed_members(root) if member != name])


def _attributes_digest(item: h5py.HLObject) -> str:
    """sha256 of the object's path, its attributes but MUTABLE_ATTRS, and, for a group other than the root
    (which later commands add to), the names of everything under it (round 13, H6, H9: a dataset deleted from
    a finished model was passed over, or a traceback); but the root's, bound to their file as the values' are
    (file_seed: round 26, F8, a table's attributes copied in from another score file read as its own)."""
    kept = sorted((key, repr(attribute_value(item.attrs[key]))) for key in item.attrs if key not in MUTABLE_ATTRS)
    members: list[str] = []
    if isinstance(item, h5py.Group) and item.name != "/":
        item.visit(members.append)
    seed = file_seed(item.file) if item.name != "/" else ""
    return hashlib.sha256(repr((seed, item.name, kept, sorted(members))).encode()).hexdigest()


def seal_group(group: h5py.Group) -> None:
    """Seal every dataset under `group` but the resume masks, and the group's attributes."""
    group.visititems(lambda name, item: seal(item) if _sealable(name, item) else None)
    seal_attributes(group)
    group.file.flush()


def _sealable(name: str, item) -> bool:
    return isinstance(item, h5py.Dataset) and name.rsplit("/", 1)[-1] not in UNSEALED


def changed_blocks(dataset: h5py.Dataset, rng: np.random.Generator) -> list[int]:
    """The blocks of a sealed dataset whose values differ from their digests (all blocks are read up to
    FULL_CHECK_BYTES, SAMPLED_BLOCKS at random beyond); every block when the digests do not read or do not
    fit the dataset's shape."""
    index = _blocks_of(dataset)
    try:
        stored = json.loads(dataset.attrs[DIGESTS])
    except (TypeError, ValueError, RecursionError):
        stored = None
    if not isinstance(stored, list) or len(stored) != len(index):
        return list(range(len(index)))
    chosen = range(len(index))
    if dataset.size * dataset.dtype.itemsize > FULL_CHECK_BYTES:
        chosen = sorted(rng.choice(len(index), size=min(SAMPLED_BLOCKS, len(index)), replace=False))
    seed = file_seed(dataset.file)
    return [i for i in chosen if _digest(seed, dataset.name, dataset[index[i]]) != stored[i]]


def digest_problems(h5: h5py.File) -> list[str]:
    """What of the file differs from the digests written with it: "/NAME was changed after it was written
    (block i of n differs from its sha256)", "/NAME has attributes changed ...", "/NAME has no digests" for a
    finished dataset without them, "... no attribute digest" for an object without one, and "/NAME is
    missing, though it was written" for a top-level object the root lists."""
    rng, problems = np.random.default_rng(), _attribute_problems(h5, True)
    bound = not problems  # every other digest is bound to the root's attributes (file_seed): all would differ
    if bound:  # a member listed since it was sealed, deleted since
        problems += [f"/{name} is missing, though it was written" for name in listed_members(h5) if name not in h5]

    def visit(name: str, item) -> None:
        if isinstance(item, h5py.Group) and _finished(h5, name):
            problems.extend(_attribute_problems(item, _sealed_group(name, item), bound))
        if not _sealable(name, item) or not _finished(h5, name):
            return
        problems.extend(_attribute_problems(item, True, bound))
        if DIGESTS not in item.attrs:
            problems.append(f"/{name} has no digests, as tracin writes every finished dataset with")
            return
        changed = changed_blocks(item, rng) if bound else []
        if changed:
            problems.append(
                f"/{name} was changed after it was written (block {changed[0]} of {len(_blocks_of(item))} "
                "differs from its sha256)"
            )

    h5.visititems(visit)
    return problems


def listed_members(root: h5py.Group) -> list[str]:
    try:
        members = json.loads(root.attrs.get(MEMBERS, "[]"))
    except (TypeError, ValueError, RecursionError):
        return []  # its attributes differ from their digest: named so
    return [name for name in members if isinstance(name, str)] if isinstance(members, list) else []


def top_level(problem: str) -> str:
    """The top-level group or table a problem of digest_problems is in ("" for the root's attributes): every
    problem starts with the object's path."""
    return problem.split(" ", 1)[0].lstrip("/").split("/", 1)[0]


def _sealed_group(name: str, group: h5py.Group) -> bool:
    """Whether a group's attributes are sealed when finished: a model's or /validation (a top-level group with
    a status) and a comparison's."""
    return ("/" not in name and "status" in group.attrs) or name.startswith("comparison/")


def _attribute_problems(item: h5py.HLObject, required: bool, compared: bool = True) -> list[str]:
    """ "NAME's attributes were changed ..." when they differ from their digest (when `compared`); "NAME has no
    attribute digest" when `required` and there is none."""
    if ATTRS_DIGEST not in item.attrs:
        return [f"{item.name} has no attribute digest, as tracin writes every finished object with"] if required else []
    if compared and item.attrs[ATTRS_DIGEST] != _attributes_digest(item):
        what = "attributes or members" if isinstance(item, h5py.Group) and item.name != "/" else "attributes"
        return [f"{item.name} has {what} changed after they were written (their sha256 differs)"]
    return []


def _finished(h5: h5py.File, name: str) -> bool:
    """Whether the dataset `name` is in a finished part of the file: its top-level group (a model,
    /validation) complete, or no group's status to say otherwise."""
    top = h5[name.split("/", 1)[0]]
    return not isinstance(top, h5py.Group) or top.attrs.get("status", "complete") in ("complete", b"complete")
