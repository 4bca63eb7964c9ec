"""tracin.results.store.digests: every block of a dataset is covered once, an edit in range is found in the
block it is in, a sampled check of a large dataset finds an edit of every block it reads, and the readers
refuse a finished file whose values changed (red-team round 10: H10, H12-H15)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tracin.results.store import digests
from tracin.results.store.digests import MAX_BLOCKS, blocks, changed_blocks, digest_problems, seal, seal_group

SHAPES = [(0,), (1,), (7,), (200,), (5, 3), (130, 4), (2, 9, 4), (70, 3, 2), (3, 0, 2), (300, 1000)]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(digests, "BLOCK_BYTES", 16)  # blocks of four float32 values: many blocks in a tiny file


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_blocks_cover_every_element_once(shape):
    hits = np.zeros(shape, dtype=np.int64)
    for index in blocks(shape, 4):
        hits[index] += 1
    assert (hits == 1).all()
    assert len(blocks(shape, 4)) <= max(MAX_BLOCKS, shape[0] if len(shape) >= 3 else 1)


def test_a_dataset_of_a_cpu_size_run_is_one_block(monkeypatch):
    monkeypatch.undo()
    assert len(blocks((50_000, 10_000), 4)) == 2 * 10**9 // 2**24 + 1 == 120  # full CIFAR-10: 16 MB blocks
    assert blocks((4096, 512), 4) == [(slice(0, 4096),)]


def _file(tmp_path, shape=(130, 4), dtype=np.float32) -> h5py.File:
    h5 = h5py.File(tmp_path / "f.h5", "w")
    h5.create_dataset("model/scores", data=np.arange(np.prod(shape), dtype=dtype).reshape(shape))
    h5.create_dataset("model/done", data=np.ones(3, dtype=bool))
    h5.create_dataset("names", data=np.array(["a", "bc"], dtype=object), dtype=h5py.string_dtype())
    return h5


def test_an_edit_in_range_is_found_in_its_block(tmp_path):
    rng = np.random.default_rng(0)
    with _file(tmp_path) as h5:
        seal_group(h5)
        assert "digests" not in h5["model/done"].attrs  # resume bookkeeping is not sealed
        assert digest_problems(h5) == []
        h5["model/scores"][100, 2] += 1.0  # 130 rows of 16 bytes in 130 blocks
        assert changed_blocks(h5["model/scores"], rng) == [100]
        h5["names"][1] = "bd"
        problems = digest_problems(h5)
        assert [p.split(" ")[0] for p in problems] == ["/model/scores", "/names"]
        assert "block 100 of 130 differs from its sha256" in problems[0]


def test_a_sealed_dataset_sealed_again_after_a_rewrite_reads_as_whole(tmp_path):
    with _file(tmp_path) as h5:
        seal(h5["model/scores"])
        h5["model/scores"][0] = 5.0
        seal(h5["model/scores"])
        assert not [p for p in digest_problems(h5) if "was changed" in p]


def test_digests_are_required_in_finished_parts_only(tmp_path):
    with _file(tmp_path) as h5:
        assert "/model/scores has no digests, as tracin writes every finished dataset with" in (digest_problems(h5))
        h5["model"].attrs["status"] = "partial"
        assert {p.split(" ")[0] for p in digest_problems(h5)} == {"/", "/names"}


def test_digests_that_do_not_read_count_as_every_block_changed(tmp_path):
    with _file(tmp_path) as h5:
        seal_group(h5)
        h5["names"].attrs["digests"] = "[1, 2"
        assert changed_blocks(h5["names"], np.random.default_rng(0)) == [0]  # two names: one block


def test_a_large_dataset_is_checked_in_sampled_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "FULL_CHECK_BYTES", 0)  # every dataset is "large"
    with _file(tmp_path, shape=(640, 2)) as h5:
        seal_group(h5)
        rng = np.random.default_rng(1)
        assert changed_blocks(h5["model/scores"], rng) == []
        h5["model/scores"][...] = -1.0  # every block changed: a sample finds SAMPLED_BLOCKS of them
        found = changed_blocks(h5["model/scores"], rng)
        assert len(found) == digests.SAMPLED_BLOCKS and found == sorted(set(found))


def test_datasets_swapped_with_their_digests_are_found(tmp_path):
    """Round 11, E1-E5: two models' arrays (or whole groups) swapped, each with its digests, were read as
    whole: the digest covers the dataset's name too."""
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        for model, value in (("teacher", 1.0), ("student", 2.0)):
            h5.create_dataset(f"{model}/last_loss", data=np.full(5, value, dtype=np.float32))
        seal_group(h5)
        h5.move("teacher", "swap")
        h5.move("student", "teacher")
        h5.move("swap", "student")
        problems = [p for p in digest_problems(h5) if "was changed" in p]
        assert [p.split(" ")[0] for p in problems] == ["/student/last_loss", "/teacher/last_loss"]


def test_attributes_edited_after_sealing_are_found(tmp_path):
    """Round 12, F22-F36: a model's variants attribute, or a shortcut class added to the root, changed what
    reports said; attributes are sealed too (all but the status and timings a resume changes)."""
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5.attrs.update({"classes": '["a", "b"]', "status": "partial"})
        h5.create_dataset("teacher/scores", data=np.zeros((2, 2), np.float32)).attrs["variant"] = "raw"
        h5["teacher"].attrs.update({"variants": '["train-normalised"]', "status": "complete", "scoring_seconds": 1.0})
        seal_group(h5["teacher"])
        digests.seal_attributes(h5)
        h5.attrs["status"] = "complete"  # what a resume changes
        h5["teacher"].attrs["scoring_seconds"] = 2.0
        assert digest_problems(h5) == []
        h5["teacher"].attrs["variants"] = '["raw"]'
        h5["teacher/scores"].attrs["variant"] = "cosine"
        assert digest_problems(h5) == [
            "/teacher has attributes or members changed after they were written (their sha256 differs)",
            "/teacher/scores has attributes changed after they were written (their sha256 differs)",
        ]
        h5.attrs["shortcut_class"] = 3  # the others' digests are bound to the root's attributes: only it is named
        assert digest_problems(h5) == ["/ has attributes changed after they were written (their sha256 differs)"]
        del h5["teacher"].attrs["attrs_digest"]
        assert "/teacher has no attribute digest" in digest_problems(h5)[1]


def test_a_dataset_deleted_or_added_in_a_sealed_group_is_found(tmp_path):
    """Round 13, H6, H9: a finished model's dataset deleted was passed over (its predictions vanished from
    the page) or a traceback; a sealed group's digest covers the names under it (not the root's, which
    later commands add to)."""
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        for name in ("scores", "test_prediction", "topk/test_top_index"):
            h5.create_dataset(f"teacher/{name}", data=np.zeros(3, np.float32))
        h5["teacher"].attrs["status"] = "complete"
        seal_group(h5["teacher"])
        digests.seal_attributes(h5)
        h5.create_dataset("quality_report", data=np.zeros(2))  # a later command's table, at the root
        seal(h5["quality_report"])
        assert digest_problems(h5) == []
        del h5["teacher/test_prediction"]
        changed = "/teacher has attributes or members changed after they were written (their sha256 differs)"
        assert digest_problems(h5) == [changed]
        h5.create_dataset("teacher/test_prediction", data=np.zeros(3, np.float32))  # put back, unsealed
        assert changed not in digest_problems(h5)
        h5.create_dataset("teacher/extra", data=np.zeros(1))
        assert changed in digest_problems(h5)


def test_a_top_level_object_deleted_after_sealing_is_found_and_an_edit_is_never_sealed_over(tmp_path):
    """Round 14, N26, N28: a deleted /agreement or /comparison was read as a file from before them; the root
    lists the top-level objects tracin-score finished the file with (members), sealed with the root only
    while its attributes hold. A table a later command adds is not listed (it never rewrites the root)."""
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5.attrs["classes"] = '["a", "b"]'
        h5.create_dataset("train_index", data=np.arange(3))
        seal(h5["train_index"])
        digests.seal_attributes(h5)
        h5.create_dataset("comparison/a__b/overlap", data=np.zeros(2))
        seal_group(h5["comparison/a__b"])
        digests.seal_members(h5)  # tracin-score's mark_complete
        h5.create_dataset("quality_report", data=np.zeros(2))  # tracin-report's table, later
        seal(h5["quality_report"])
        assert json.loads(h5.attrs["members"]) == ["comparison", "train_index"]
        assert digest_problems(h5) == []
        del h5["comparison"]
        assert digest_problems(h5) == ["/comparison is missing, though it was written"]
        digests.drop(h5, "comparison")  # a command dropping its own table, to make it again
        assert digest_problems(h5) == [] and json.loads(h5.attrs["members"]) == ["train_index"]
        h5.attrs["classes"] = '["b", "a"]'  # an edit, then the file finished again: not sealed over
        digests.seal_members(h5)
        assert digest_problems(h5) == ["/ has attributes changed after they were written (their sha256 differs)"]


@pytest.mark.parametrize(
    "edit", ["set done", "a margin", "retyped", "reshaped", "deleted", "units swapped", "margins reshaped"]
)
def test_a_partial_validations_retrainings_that_differ_from_their_digests_are_made_again(tmp_path, edit):
    """Round 34, KVE1, KVE2 and round 35, KV04: a killed tracin-validate's /validation edited (its done mask set,
    a margin changed, its unit_digests retyped, reshaped or deleted) was sealed as it was, or ended in a
    traceback. The retrainings that no longer match their sha256 are marked not done, and written again."""
    from tracin.results.store.validation_record import UNIT_DIGESTS, prepare_validation
    from tracin.results.validation import UNIT_DTYPE

    units = np.array([(b"student", b"own", row, -1, 0, b"raw") for row in range(4)], dtype=UNIT_DTYPE)
    margins = np.arange(12, dtype=np.float32).reshape(4, 3)
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5.attrs["format"] = "tracin-scores"
        h5.create_dataset("test_index", data=np.arange(3))
        record = prepare_validation(h5, tmp_path / "f.h5", units, {"k": 1}, overwrite=False)
        for index in (0, 1):
            record.write_unit(index, margins[index], 1.0)
        group = h5["validation"]
        if edit == "set done":
            group["done"][...] = True
        elif edit == "a margin":
            group["margins"][1, 0] += 1.0
        elif edit == "units swapped":  # round 35, KV13: made again, now with a note (record.discarded)
            group["units"][...] = units[[1, 0, 2, 3]]
        elif edit == "margins reshaped":  # KV10
            del group["margins"]
            group.create_dataset("margins", data=np.zeros((4, 2), np.float32))
        else:
            del group[UNIT_DIGESTS]
            if edit != "deleted":
                shape = (4,) if edit == "retyped" else (2, 2)
                group.create_dataset(UNIT_DIGESTS, data=np.zeros(shape, dtype=np.int64))
        again = prepare_validation(h5, tmp_path / "f.h5", units, {"k": 1}, overwrite=False)
        discarded = 2 if edit in ("units swapped", "margins reshaped") else 0
        expected = {"set done": [2, 3], "a margin": [1]}.get(edit, [] if discarded else [0, 1])
        assert again.redone == expected and again.discarded == discarded
        assert again.done.tolist() == [i not in expected and i < 2 and not discarded for i in range(4)]
        for index in range(4):
            if not again.done[index]:
                again.write_unit(index, margins[index], 1.0)
        final = prepare_validation(h5, tmp_path / "f.h5", units, {"k": 1}, overwrite=False)
        assert final.redone == [] and final.done.all() and np.array_equal(final.margins, margins)
