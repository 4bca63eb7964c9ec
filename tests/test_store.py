"""tracin.results.store: the typed readers and writers against what was written, the layout against the
package's docstring, resume bookkeeping, and errors as one-line StoreErrors."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import h5py
import numpy as np
import pytest

from tracin.engine.topk import Ranking
from tracin.errors import StoreError, TracinError
from tracin.results import store as store_module
from tracin.results.store import DataArrays, ModelScores, ScoreFile, rankings_name
from tracin.results.store.digests import ATTRS_DIGEST, DIGESTS
from tracin.results.store.model_scores import rank_matrix
from tracin.results.store.tables import NAMED_TABLES
from tracin.training.checkpoints import Checkpoint, list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, ROW_CHUNK, TEST_BLOCK = 10, 6, 4, 4
CHECKPOINTS = [
    Checkpoint({}, 0.1, "run/teacher/epoch_002.pt", 2, "aa"),
    Checkpoint({}, 0.05, "run/teacher/epoch_004.pt", 4, "bb"),
]
SETTINGS = {"mode": "exact", "seed": 0}


def data_arrays() -> DataArrays:
    labels = np.arange(N_TRAIN) % 3
    clean = labels.copy()
    clean[[1, 7]] = (clean[[1, 7]] + 1) % 3  # two flipped labels
    return DataArrays(np.arange(N_TRAIN) * 5, np.arange(N_TEST) * 2, labels, np.arange(N_TEST) % 3, clean)


def create(path: Path, settings: dict = SETTINGS) -> ScoreFile:
    attrs = {"mode": "exact", "run": "/runs/tiny", "classes": json.dumps(["a", "b", "c"])}
    store, resumed = ScoreFile.create_or_resume(path, settings, attrs, data_arrays(), overwrite=False)
    assert not resumed
    return store


def write_teacher(store: ScoreFile, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A complete teacher, block by block; returns what was written."""
    scores, _ = store.prepare_model("teacher", CHECKPOINTS, ["w", "b"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=True)
    written = {
        "per_checkpoint": rng.normal(size=(2, N_TRAIN, N_TEST)).astype(np.float32),
        "self_influence": rng.random(N_TRAIN).astype(np.float32),
    }
    written["scores"] = written["per_checkpoint"].sum(0)
    for r in range(0, N_TRAIN, ROW_CHUNK):
        for c in range(0, N_TEST, TEST_BLOCK):
            rows, cols = slice(r, r + ROW_CHUNK), slice(c, c + TEST_BLOCK)
            scores.write_block(
                r,
                c,
                written["scores"][rows, cols],
                written["per_checkpoint"][:, rows, cols],
                {"self_influence": written["self_influence"][rows]},
            )
    written["last_loss"] = rng.random(N_TRAIN).astype(np.float32)
    scores.write_last_loss(written["last_loss"])
    return written


def test_a_written_file_reads_back_through_the_typed_api(tmp_path):
    rng = np.random.default_rng(0)
    with create(tmp_path / "scores.h5") as store:
        written = write_teacher(store, rng)
        test, train = rank_matrix(written["per_checkpoint"][1], 3)  # epoch 4's tables (the reader checks them)
        store.model("teacher").write_rankings(rankings_name(4), test, train)
    with ScoreFile.open_read(tmp_path / "scores.h5") as store:
        data = data_arrays()
        assert (store.n_train, store.n_test, store.mode, store.status) == (N_TRAIN, N_TEST, "exact", "partial")
        assert store.run_path == Path("/runs/tiny") and store.classes == ["a", "b", "c"]
        for name in ("train_index", "test_index", "train_labels", "test_labels", "train_clean_labels", "noisy"):
            assert np.array_equal(getattr(store, name), getattr(data, name)), name
        assert store.noisy.sum() == 2 and store.attributes["format"] == "tracin-scores"
        teacher = store.model("teacher")
        assert store.models == ["teacher"] and teacher.name == "teacher" and teacher.epochs == [2, 4]
        assert teacher.has_per_checkpoint and teacher.done.shape == (3, 2) and teacher.done.all()
        assert np.array_equal(teacher.scores[()], written["scores"]) and np.array_equal(
            teacher.matrix()[2:5, 1], written["scores"][2:5, 1]
        )
        assert np.array_equal(teacher.matrix(1)[:, 3:], written["per_checkpoint"][1][:, 3:])
        assert np.array_equal(teacher.self_influence, written["self_influence"])
        assert np.array_equal(teacher.last_loss, written["last_loss"])
        read_test, read_train = teacher.rankings(rankings_name(4))
        for field in ("top_index", "top_score", "bottom_index", "bottom_score"):
            assert np.array_equal(getattr(read_test, field), getattr(test, field).numpy())
            assert np.array_equal(getattr(read_train, field), getattr(train, field).numpy())
        assert read_test.top_index.dtype == np.int32 and read_train.top_score.dtype == np.float32


def test_comparison_tables_round_trip_in_order(tmp_path):
    overlap = np.array(
        [(b"sum", 3, 0.5), (b"epoch_002", 3, 0.25)], dtype=[("scope", "S16"), ("k", "i8"), ("mean", "f8")]
    )
    extra = np.array([(b"sum", 1.5)], dtype=[("scope", "S16"), ("value", "f8")])
    with create(tmp_path / "scores.h5") as store:
        assert store.comparison_pairs() == []
        store.write_comparison("teacher", "student", {"zeta": extra, "overlap": overlap}, {"ks": [3], "seed": 0})
        store.write_comparison("teacher", "student", {"zeta": extra, "overlap": overlap}, {"ks": [3], "seed": 1})
    with ScoreFile.open_read(tmp_path / "scores.h5") as store:
        tables = store.comparison("teacher", "student")
        assert store.comparison_pairs() == [("teacher", "student")]
        assert list(tables) == ["zeta", "overlap"]  # the order written, not alphabetical
        assert np.array_equal(tables["overlap"], overlap) and np.array_equal(tables["zeta"], extra)
        assert store.comparison_settings("teacher", "student") == {"ks": [3], "seed": 1}


def test_a_comparison_written_before_the_registry_reads_as_tables(tmp_path):
    """Files of the first version kept the self-influence correlation as attributes of a group."""
    with create(tmp_path / "scores.h5") as store:
        store.write_comparison("teacher", "student", {}, {"seed": 0})
    with h5py.File(tmp_path / "scores.h5", "r+") as h5:
        h5["comparison/teacher__student"].create_group("self_influence").attrs.update(
            {"pearson": 0.5, "spearman": -0.25}
        )
    with ScoreFile.open_read(tmp_path / "scores.h5") as store:
        table = store.comparison("teacher", "student")["self_influence"]
        assert table.dtype.names == ("pearson", "spearman") and table[0]["spearman"] == -0.25


def test_resume_keeps_done_blocks_and_refuses_other_settings(tmp_path):
    path = tmp_path / "scores.h5"
    with create(path) as store:
        scores, _ = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        scores.write_block(4, 4, np.ones((4, 2), np.float32))
    with pytest.raises(StoreError, match=r"seed \(0 in the file, 1 now\)"):
        ScoreFile.create_or_resume(path, {**SETTINGS, "seed": 1}, {}, data_arrays(), overwrite=False)
    store, resumed = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        assert resumed and np.argwhere(store.model("teacher").done).tolist() == [[1, 1]]
        with pytest.raises(StoreError, match="checkpoints/sha256 records other checkpoints than the ones scored"):
            store.prepare_model("teacher", CHECKPOINTS[:1], ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        store.mark_complete()
    with pytest.raises(StoreError, match="finished result"):
        ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)


def test_a_resume_scores_again_the_finished_blocks_that_changed(tmp_path):
    """Round 27, R09, R10: a finished block of a partial file, edited to a finite value, was kept and sealed
    into the finished file. Each block's sha256 is kept beside the done mask; a resume checks it."""
    path = tmp_path / "scores.h5"
    with create(path) as store:
        scores, _ = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        scores.write_block(0, 0, np.ones((4, 2), np.float32))
        scores.write_block(4, 4, np.ones((4, 2), np.float32))
    with h5py.File(path, "r+") as h5:
        h5["teacher/scores"][5, 5] = 0.5  # in block (1, 2)
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        assert "1 finished block(s) of /teacher no longer hold" in notes[0] and np.argwhere(scores.done).tolist() == [
            [0, 0]
        ]
    with h5py.File(path, "r+") as h5:
        del h5["teacher/block_digests"]  # as a tracin-score before them wrote it: no block can be checked
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        assert (
            "/teacher/block_digests is missing: /teacher is not as tracin-score makes it" in notes[0]
            and not scores.done.any()
        )
        scores.write_block(0, 0, np.ones((4, 2), np.float32))
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        assert notes == [] and np.argwhere(scores.done).tolist() == [[0, 0]]


LAYOUT_EDITS = {  # round 28, A11-A16: each a traceback on resume, or (A16) a finished file without the dataset
    "digests reshaped": lambda g: (g.__delitem__("block_digests"), g.create_dataset("block_digests", (3, 3), "S64")),
    "digests retyped": lambda g: (g.__delitem__("block_digests"), g.create_dataset("block_digests", (3, 2), "i8")),
    "done deleted": lambda g: g.__delitem__("done"),
    "scores deleted": lambda g: g.__delitem__("scores"),
    "self_influence deleted": lambda g: g.__delitem__("self_influence"),
    "last_loss reshaped": lambda g: (g.__delitem__("last_loss"), g.create_dataset("last_loss", (3,), "f4")),
    "group self-influence deleted": lambda g: g.__delitem__("self_influence_groups"),
    "group self-influence of other groups": lambda g: g["self_influence_groups"].attrs.__setitem__("groups", '["x"]'),
    "row_chunk zero": lambda g: g.attrs.__setitem__("row_chunk", 0),
    "variants edited": lambda g: g.attrs.__setitem__("variants", '["raw"]'),
    "a variant's scores deleted": lambda g: g.__delitem__("scores_cosine"),
    "per_checkpoint reshaped": lambda g: (
        g.__delitem__("per_checkpoint"),
        g.create_dataset("per_checkpoint", (1, 10, 6), "f4"),
    ),
    "checkpoints table deleted": lambda g: g.__delitem__("checkpoints/sha256"),
    "digests replaced by a group": lambda g: (g.__delitem__("block_digests"), g.create_group("block_digests")),
    "a checkpoint's lr edited": lambda g: g["checkpoints/lr"].__setitem__(0, 0.2),
    "a checkpoint's epoch edited": lambda g: g["checkpoints/epoch"].__setitem__(1, 6),
    "n_parameter_tensors edited": lambda g: g.attrs.__setitem__("n_parameter_tensors", 2),
    "epochs retyped": lambda g: (
        g.__delitem__("checkpoints/epoch"),
        g.create_dataset("checkpoints/epoch", data=np.array([2.0, 4.0])),  # equal as numbers: the review's
    ),
    # round 30, CK8-CK29 and RP1-RP3: each sealed into the finished file without a word
    "paths swapped": lambda g: g["checkpoints/path"].__setitem__(slice(None), g["checkpoints/path"][()][::-1]),
    "a path edited": lambda g: g["checkpoints/path"].__setitem__(0, "hello"),
    "a path not UTF-8": lambda g: g["checkpoints/path"].__setitem__(0, b"\xff\xfe"),  # the review: a traceback
    "paths retyped": lambda g: retyped(g, "checkpoints/path", "S200"),
    "sha256 retyped": lambda g: retyped(g, "checkpoints/sha256", "S65"),
    "a column added": lambda g: g.create_dataset("checkpoints/extra", data=np.arange(2)),
    "an attribute on a column": lambda g: g["checkpoints/lr"].attrs.__setitem__("unit", "x"),
    "an attribute on the table": lambda g: g["checkpoints"].attrs.__setitem__("unit", "x"),
    "n_parameter_tensors retyped": lambda g: g.attrs.__setitem__("n_parameter_tensors", 1.0),
    "role edited": lambda g: g.attrs.__setitem__("role", "student"),
    "an attribute added": lambda g: g.attrs.__setitem__("note", "mine"),
    "scoring_seconds negative": lambda g: g.attrs.__setitem__("scoring_seconds", -5.0),
    # round 31, PE7: a member added was sealed into the finished file
    "a dataset added": lambda g: g.create_dataset("extra", data=np.arange(3)),
    "a group added": lambda g: g.create_group("notes/mine"),
    "an attribute on the scores": lambda g: g["scores"].attrs.__setitem__("unit", "x"),
    "a variant's scores named as another": lambda g: g["scores_cosine"].attrs.__setitem__("variant", "raw"),
    "role not UTF-8": lambda g: g.attrs.__setitem__("role", np.bytes_(b"\xfft")),  # a traceback where read
}
SAID = {  # round 29: A3 said 'is missing'; A10, A11, A13 were sealed into the finished file without a word
    "paths swapped": "/teacher/checkpoints/path does not record the checkpoints' path: ",
    "paths retyped": "/teacher/checkpoints/path does not record the checkpoints' path: ",
    "sha256 retyped": "/teacher/checkpoints/sha256 does not record the checkpoints' sha256: ",
    "a column added": "/teacher/checkpoints has columns or attributes tracin-score does not write: ",
    "an attribute on the table": "/teacher/checkpoints has columns or attributes tracin-score does not write: ",
    "a path not UTF-8": "/teacher/checkpoints/path does not record the checkpoints' path: ",
    "an attribute on a column": "/teacher/checkpoints/lr does not record the checkpoints' lr: ",
    "role edited": "/teacher's role is not the one scored: ",
    "an attribute added": "/teacher has attributes tracin-score does not write (note): ",
    "scoring_seconds negative": "/teacher's scoring_seconds is not a time: ",
    "digests replaced by a group": "/teacher/block_digests is not a dataset: ",
    "a checkpoint's lr edited": "/teacher/checkpoints/lr does not record the checkpoints' lr: ",
    "a checkpoint's epoch edited": "/teacher/checkpoints/epoch does not record the checkpoints' epoch: ",
    "n_parameter_tensors edited": "/teacher's n_parameter_tensors is not the one scored: ",
    "n_parameter_tensors retyped": "/teacher's n_parameter_tensors is not the one scored: ",
    "epochs retyped": "/teacher/checkpoints/epoch does not record the checkpoints' epoch: ",
    "a dataset added": "/teacher holds extra, which tracin-score does not write: ",
    "a group added": "/teacher holds notes, notes/mine, which tracin-score does not write: ",
    "an attribute on the scores": "/teacher/scores's attributes are not those tracin-score writes: ",
    "a variant's scores named as another": "/teacher/scores_cosine's attributes are not those tracin-score writes: ",
    "role not UTF-8": "/teacher's role is not the one scored: ",
}


def retyped(group: h5py.Group, name: str, dtype: str) -> None:
    """The dataset `name` of `group` written again with its values as `dtype`."""
    values = group[name][()]
    del group[name]
    group.create_dataset(name, data=np.array(values, dtype=dtype))


def test_a_partial_group_copied_from_another_file_of_the_run_is_scored_again(tmp_path):
    """Round 35, SC1: a killed file's partial /student replaced by the same group of another score file of the
    run (scored with other settings: --test-label prediction) kept every block, which read as its own: a
    block's sha256 named its group and place, not its file. It is bound to the file now (file_seed)."""
    paths = {"own": tmp_path / "own.h5", "other": tmp_path / "other.h5"}
    for name, settings in (("own", SETTINGS), ("other", {**SETTINGS, "score.test_label": "prediction"})):
        with create(paths[name], settings) as store:
            scores, _ = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
            for row, col in ((0, 0), (4, 4)):
                scores.write_block(row, col, np.full((4, 2), 1.0 if name == "own" else 2.0, np.float32))
    with h5py.File(paths["own"], "r+") as own, h5py.File(paths["other"], "r") as other:
        del own["teacher"]
        other.copy(other["teacher"], own, "teacher")
    store, _ = ScoreFile.create_or_resume(paths["own"], SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        assert "2 finished block(s) of /teacher no longer hold" in notes[0] and not scores.done.any()


@pytest.mark.parametrize("edit", LAYOUT_EDITS)
def test_a_partial_model_group_not_laid_out_as_made_is_scored_again_from_its_start(tmp_path, edit):
    path = tmp_path / "scores.h5"
    prepare = ("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, True, ["raw", "cosine"], ["g"])
    with create(path) as store:
        scores, _ = store.prepare_model(*prepare)
        scores.write_block(0, 0, np.ones((4, 4), np.float32), self_influences={"self_influence": np.ones(4)})
    with h5py.File(path, "r+") as h5:
        LAYOUT_EDITS[edit](h5["teacher"])
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model(*prepare)
        assert len(notes) == 1 and "older tracin), so it is scored again from its start" in notes[0]
        assert SAID.get(edit, "/teacher") in notes[0], notes[0]
        assert not scores.done.any() and scores.done.shape == (3, 2)
        scores.write_block(0, 0, np.ones((4, 4), np.float32))
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:  # as made: resumed without a word
        assert store.prepare_model(*prepare)[1] == [] and np.argwhere(store.model("teacher").done).tolist() == [[0, 0]]


def test_a_partial_model_group_a_salvage_left_without_its_last_losses_keeps_its_blocks(tmp_path):
    """last_loss is written again at the end of every run (REMADE_EACH_RUN): a salvage may leave it behind."""
    path = tmp_path / "scores.h5"
    with create(path) as store:
        store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, False)[0].write_block(
            0, 0, np.ones((4, 4), np.float32)
        )
    with h5py.File(path, "r+") as h5:
        del h5["teacher/last_loss"]
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, False)
        assert notes == [] and np.argwhere(scores.done).tolist() == [[0, 0]]


def test_a_partial_model_groups_top_k_tables_and_predictions_are_made_again_at_its_end(tmp_path):
    """A run killed after writing a model's top-k tables or predictions leaves them in its partial group; they
    are written whole at the end of every run, so a resume drops them: none left stale (round 31, PE7)."""
    path = tmp_path / "scores.h5"
    with create(path) as store:
        store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, False)[0].write_block(
            0, 0, np.ones((4, 4), np.float32)
        )
    with h5py.File(path, "r+") as h5:
        h5["teacher"].create_dataset("topk_variant/stale/test_top_index", data=np.zeros((4, 1), np.int32))
        h5["teacher"].create_dataset("test_prediction", data=np.zeros(7, np.int64))  # not the test set's length
    store, _ = ScoreFile.create_or_resume(path, SETTINGS, {}, data_arrays(), overwrite=False)
    with store:
        scores, notes = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, False)
        assert notes == [] and np.argwhere(scores.done).tolist() == [[0, 0]]
        assert scores.predictions is None
    with h5py.File(path, "r") as h5:
        assert "topk_variant" not in h5["teacher"] and "test_prediction" not in h5["teacher"]


def one_line_store_error(call) -> str:
    with pytest.raises(StoreError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_mistakes_are_one_line_store_errors(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not HDF5" * 64)
    with h5py.File(tmp_path / "foreign.h5", "w") as h5:
        h5.attrs["format"] = "something else"
    assert "does not exist" in one_line_store_error(lambda: ScoreFile.open_read(tmp_path / "missing.h5"))
    assert "not a readable HDF5 file" in one_line_store_error(lambda: ScoreFile.open_read(garbage))
    assert "not a tracin-score result file" in one_line_store_error(
        lambda: ScoreFile.open_read(tmp_path / "foreign.h5")
    )
    with create(tmp_path / "scores.h5") as store:
        scores, _ = store.prepare_model("teacher", CHECKPOINTS, ["w"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
        assert "no scores for 'student' (it has: teacher)" in one_line_store_error(lambda: store.model("student"))
        assert "no comparison of teacher and student" in one_line_store_error(
            lambda: store.comparison("teacher", "student")
        )
        assert "no topk tables for teacher" in one_line_store_error(lambda: scores.rankings())
        assert "without --per-checkpoint" in one_line_store_error(lambda: scores.matrix(0))


def documented_attributes(heading: str) -> set[str]:
    """Attribute names the module docstring lists for `heading` ("/", "/<model>/", ...), across its
    continuation lines, without the parenthesised notes."""
    found = re.search(rf"^    {re.escape(heading)}\s+attrs:(.*(?:\n {{28}}.*)*)", store_module.__doc__, re.M)
    assert found, heading
    return {name.strip() for name in re.sub(r"\([^)]*\)", "", found.group(1)).split(",")}


def test_model_attributes_are_the_documented_ones(tmp_path):
    with create(tmp_path / "scores.h5") as store:
        store.prepare_model("teacher", CHECKPOINTS, ["w", "b"], ROW_CHUNK, TEST_BLOCK, per_checkpoint=False)
    with h5py.File(tmp_path / "scores.h5", "r") as h5:
        assert set(h5["teacher"].attrs) == documented_attributes("/<model>/") - {ATTRS_DIGEST}  # sealed when complete
        assert h5["teacher"].attrs["n_parameter_tensors"] == 2


def test_removed_methods_stay_removed():
    for name in ("is_done", "blocks_done", "complete", "lrs"):
        assert not hasattr(ModelScores, name), name
    assert not hasattr(ScoreFile, "data_arrays")
    for table in NAMED_TABLES:  # one writer and one reader for every named table (#29)
        assert not hasattr(ScoreFile, table) and not hasattr(ScoreFile, f"write_{table}"), table


def test_named_tables_round_trip_with_their_attributes(tmp_path):
    rows = np.array([(b"teacher", 0.5), (b"student", np.nan)], dtype=[("model", "S40"), ("value", "f8")])
    with create(tmp_path / "scores.h5") as store:
        assert not store.has_table("quality_report")
        assert "has no quality report" in one_line_store_error(lambda: store.read_table("quality_report"))
        store.write_table("quality_report", rows[:1], provenance={"machine": "a"})
        store.write_table("quality_report", rows, provenance={"machine": "m", "seconds": 2.0})  # replaces it
        store.write_table("randomization", rows[:1])  # attributes not given take their defaults
        assert "no table is named 'qualty'" in one_line_store_error(lambda: store.write_table("qualty", rows))
        assert "no attribute seconds" in one_line_store_error(lambda: store.write_table("quality", rows, seconds=1))
        assert "rows of named fields" in one_line_store_error(lambda: store.write_table("quality", np.zeros(3)))
    with h5py.File(tmp_path / "scores.h5", "r+") as h5:
        assert h5["quality_report"].attrs["provenance"] == '{"machine": "m", "seconds": 2.0}'  # JSON, sorted keys
        assert dict(h5["randomization"].attrs) == {"settings": "{}", "seconds": 0.0, DIGESTS: ANY, ATTRS_DIGEST: ANY}
        del h5["randomization"].attrs["seconds"]  # as a file from before the attribute
    with ScoreFile.open_read(tmp_path / "scores.h5") as store:
        assert store.read_table("quality_report").tobytes() == rows.tobytes()
        assert store.table_attrs("quality_report") == {"provenance": {"machine": "m", "seconds": 2.0}}
        assert store.table_attrs("randomization") == {"settings": {}, "seconds": 0.0}
        assert [store.has_table(name) for name in NAMED_TABLES] == [
            name in ("randomization", "quality_report") for name in NAMED_TABLES
        ]


def test_every_named_table_is_in_the_documented_layout_with_its_rows_dtype():
    for name, table in NAMED_TABLES.items():
        module, dtype = table.rows.rsplit(".", 1)
        assert getattr(importlib.import_module(module), dtype).names, name
        assert re.search(rf"^    /{name} +compound \[rows\]", store_module.__doc__, re.M), name


def test_layout_of_a_tracin_score_file_is_the_documented_one(tiny_scores, tiny_run):
    with h5py.File(tiny_scores, "r") as h5:
        assert set(h5.attrs) == documented_attributes("/") and h5.attrs["format_version"] == 5
        n_train, n_test = len(h5["train_index"]), len(h5["test_index"])
        for name in ("train_index", "train_labels", "train_clean_labels", "test_index", "test_labels"):
            assert h5[name].dtype == np.int64 and h5[name].shape == ((n_train,) if "train" in name else (n_test,))
        assert h5["noisy"].dtype == np.bool_ and h5["noisy"].shape == (n_train,)
        for name in ("train_fine_labels", "test_fine_labels", "train_stamped", "test_stamped"):
            assert h5[name].shape == ((n_train,) if "train" in name else (n_test,))
            assert h5[name].dtype == (np.bool_ if "stamped" in name else np.int64)
        for role in ("teacher", "student", "student_baseline"):
            group = h5[role]
            assert set(group.attrs) == documented_attributes("/<model>/")
            assert list(group["checkpoints/epoch"][()]) == [2, 4]
            assert list(group["checkpoints/lr"][()]) == [
                load_checkpoint(p)["lr"] for p in list_checkpoints(tiny_run / role)
            ]
            assert group["scores"].dtype == np.float32 and group["scores"].shape == (n_train, n_test)
            assert group["scores"].chunks is not None and group["scores"].compression is None
            assert group["per_checkpoint"].shape == (2, n_train, n_test)
            assert group["self_influence"].shape == group["last_loss"].shape == (n_train,)
            assert group["done"].dtype == np.bool_ and group["done"][()].all()
            for tables in ("topk", "topk_epoch/epoch_002", "topk_epoch/epoch_004"):
                assert (
                    group[f"{tables}/test_top_index"].shape == (n_test, 8)
                    and group[f"{tables}/test_top_index"].dtype == np.int32
                )
                assert group[f"{tables}/train_bottom_score"].shape == (n_train, 8)
        comparison = h5["comparison/teacher__student"]
        assert set(comparison.attrs) == documented_attributes("/comparison/<a>__<b>/")
        assert list(comparison) == ["overlap", "rank_correlation", "ks", "self_influence"]
        assert all(comparison[name].dtype.names[0] == "scope" for name in comparison)


def test_only_the_store_touches_hdf5():
    """Everything else goes through the typed API, so a layout change is the store package and this file."""
    forbidden = re.compile(r"^\s*(import|from) h5py|\._?h5\[|\._?h5\.attrs|\._?group\b(?!\()|\.attrs\b", re.M)
    store = REPO / "tracin" / "results" / "store"
    sources = {path: path.read_text() for path in (REPO / "tracin").rglob("*.py") if store not in path.parents}
    sources[REPO / "scripts" / "figures.py"] = (REPO / "scripts" / "figures.py").read_text()
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        sources[notebook] = "\n".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"])
    offenders = {
        str(path.relative_to(REPO)): match.group(0)
        for path, text in sources.items()
        for match in forbidden.finditer(text)
    }
    assert not offenders


def test_a_file_another_process_writes_is_in_use_not_corrupt(tmp_path):
    """HDF5's own lock refuses a second opener while a writer holds the file: said as such (#17)."""
    path = tmp_path / "scores.h5"
    with create(path):  # held open for writing by this process
        reader = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from tracin.results.store import ScoreFile; ScoreFile.open_read(sys.argv[1])",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert reader.returncode != 0
    assert "is in use: another process" in reader.stderr and "corrupt" not in reader.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h5: h5.attrs.__setitem__("mode", "projected"), "the attribute 'mode' is 'projected', but the file's"),
        (lambda h5: h5.attrs.__setitem__("proj_dim", 64), "the attribute 'proj_dim' is 64"),
        (lambda h5: h5["teacher/checkpoints/epoch"].__setitem__(0, 5), "/teacher/checkpoints/epoch records epoch 5"),
        (lambda h5: h5["teacher/checkpoints"].__delitem__("lr"), "/teacher/checkpoints is not a table of path"),
    ],
)
def test_a_header_that_disagrees_with_itself_is_refused(tiny_scores, tmp_path, edit, message):
    """Red-team round 7 (H06, H17): an attribute repeating a setting, or a checkpoint's epoch, edited by hand
    was reported as if true."""
    path = tmp_path / "tracin.h5"
    path.write_bytes(tiny_scores.read_bytes())
    with h5py.File(path, "r+") as h5:
        edit(h5)
    with ScoreFile.open_read(path) as store:
        assert any(message in problem for problem in store_module.layout_problems(store)), message


@pytest.mark.parametrize(
    "table, damage, message",
    [
        ("topk/test_top_index", lambda t: t.__setitem__(0, t[0][::-1]), "test_top tables are not the scores' top-k"),
        ("topk/test_top_score", lambda t: t.__setitem__(0, t[0][::-1]), "test_top_score is not in order"),
        ("topk/train_bottom_index", lambda t: t.__setitem__(3, t[4]), "train_bottom tables are not the scores' top-k"),
        ("topk_epoch/epoch_002/test_bottom_score", lambda t: t.__setitem__(0, t[0] - 1), "test_bottom tables"),
    ],
)
def test_top_k_tables_are_checked_against_the_scores_they_rank(tiny_scores, tmp_path, table, damage, message):
    """Round 8, H3: one test example's proponents reversed in place (indices in range and distinct) were
    shown by tracin-explore in the wrong order, under the wrong scores."""
    import shutil

    path = tmp_path / "t.h5"
    shutil.copy(tiny_scores, path)
    with ScoreFile.open_read(tiny_scores) as pristine:  # the tables as written pass, every model and kind
        for name in pristine.models:
            scores = pristine.model(name)
            scores.rankings(), [scores.rankings(rankings_name(epoch=e)) for e in scores.epochs]
    with h5py.File(path, "r+") as h5:
        values = h5[f"student/{table}"][()]
        damage(values)
        h5[f"student/{table}"][...] = values
    epoch = 2 if "epoch" in table else None
    with ScoreFile.open_read(path) as store, pytest.raises(StoreError, match=message):
        store.model("student").rankings(rankings_name(epoch=epoch))


def test_beyond_the_full_check_the_train_tables_of_spread_rows_are_checked(monkeypatch):
    """check_rankings above FULL_RANKING_CHECK: the order of every row, the train tables of 256 spread rows."""
    from tracin.results.store import model_scores

    matrix = np.random.default_rng(0).normal(size=(300, 40)).astype(np.float32)
    test, train = (Ranking(*(t.numpy() for t in vars(r).values())) for r in model_scores.rank_matrix(matrix, 5))
    monkeypatch.setattr(model_scores, "FULL_RANKING_CHECK", 0)
    model_scores.check_rankings(test, train, matrix, "m")
    train.top_index[0] = train.top_index[0][::-1].copy()
    with pytest.raises(StoreError, match="train_top tables are not the scores' top-k"):
        model_scores.check_rankings(test, train, matrix, "m")


def test_a_noisy_mask_that_is_not_where_the_labels_were_flipped_is_refused(tiny_scores, tmp_path):
    """Round 9, H14: /noisy edited by hand marked a clean example as flipped on the page and in the export."""
    import shutil

    path = tmp_path / "t.h5"
    shutil.copy(tiny_scores, path)
    with h5py.File(path, "r+") as h5:
        h5["noisy"][0] = not h5["noisy"][0]
    from tracin.results.store.checks import check_finished  # what every reader of a finished file runs first

    with ScoreFile.open_read(path) as store, pytest.raises(TracinError, match="/noisy is not where /train_labels"):
        check_finished(store)
    with ScoreFile.open_read(tiny_scores) as store:
        check_finished(store)


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda h5: h5.attrs.__setitem__("status", 5), "records status '5', which tracin-score does not write"),
        (lambda h5: h5.attrs.__delitem__("status"), "records no 'status': it was edited, or written by an older"),
    ],
)
def test_a_status_tracin_score_does_not_write_is_said_as_an_edit_with_its_remedy(tiny_scores, tmp_path, edit, said):
    """Round 31, R2, R3: a status edited to 5 was said to be a partial result (tracin-score interrupted), one
    deleted was 'written by an older tracin-score?', with no remedy."""
    import shutil

    from tracin.results.store.checks import check_finished

    path = tmp_path / "t.h5"
    shutil.copy(tiny_scores, path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    with ScoreFile.open_read(path) as store, pytest.raises(TracinError) as caught:
        check_finished(store)
    assert said in str(caught.value) and str(caught.value).endswith("make it again with tracin-score --overwrite")


def test_a_reader_says_how_to_make_a_score_file_where_something_else_is(tmp_path):
    """Round 31, F1: a FIFO at the score file's path was told to score the run first, which tracin-score
    refuses too (the FIFO is in the way)."""
    import os

    from tracin.results.runs import check_score_file_there

    with pytest.raises(TracinError, match="does not exist: score the run with tracin-score first"):
        check_score_file_there(tmp_path / "tracin.h5")
    os.mkfifo(tmp_path / "tracin.h5")
    with pytest.raises(TracinError, match="is not a regular file .*: move it away and score the run with tracin"):
        check_score_file_there(tmp_path / "tracin.h5")


def test_a_remedy_names_each_owners_command_in_the_order_that_works():
    """Round 29, M6: /validation and /quality_report both edited were sent to tracin-score --overwrite, which
    discards the validation's retrainings; tracin-report refuses an edited /validation, so tracin-validate
    comes first."""
    from tracin.results.store.checks import owners_remedy

    report = "run tracin-report again, which makes its tables again"
    assert owners_remedy({"quality_report", "randomization"}) == report
    validate = "run tracin-validate again, which makes /validation again"
    assert owners_remedy({"quality_report", "validation"}) == f"{validate}, then {report}"
    assert owners_remedy({"validation", "teacher"}) is None and owners_remedy({""}) is None


def test_settings_that_differ_are_said_as_the_options_that_set_them():
    """Round 29, SM1-SM5, V3: refusals named fields (score.proj_dim, per_checkpoint) or printed a validation's
    whole plan, not the options (--proj-dim, --per-checkpoint, --k) a user gives."""
    from tracin.results.store.hdf5 import setting_differences
    from tracin.results.store.score_settings import SETTING_OPTIONS
    from tracin.results.store.validation_record import VALIDATE_SETTINGS

    stored = {"score.proj_dim": None, "per_checkpoint": False, "run_data": "a", "score.seed": 0}
    now = {"score.proj_dim": 8, "per_checkpoint": True, "run_data": "b", "score.seed": 0}
    assert setting_differences(stored, now, SETTING_OPTIONS) == [
        "--per-checkpoint (False in the file, True now)",
        "run_data ('a' in the file, 'b' now)",
        "--proj-dim (unset in the file, 8 now)",  # round 36, C102: not Python's None
    ]
    plan = {"k": 2, "test_rows": [0, 13], "seed": 0}
    said = setting_differences(
        {"plan": plan, "scores": "a"}, {"plan": {**plan, "k": 3}, "scores": "b"}, VALIDATE_SETTINGS
    )
    assert said == [
        "--k (2 in the file, 3 now)",
        "scores ('a' in the file, 'b' now)",
    ]  # the file's settings, not --scores


def test_settings_an_option_derives_are_said_as_that_option():
    """Round 30, S4-S6, T2, VV2, VV3: the examples' digests, a plan's conditions and test rows, and a run's
    teacher checkpoint were said by their keys; a default the file leaves out as None; the checkpoints'
    digests beside the --checkpoints they follow from."""
    from tracin.results.store.hdf5 import setting_differences
    from tracin.results.store.score_settings import score_differences
    from tracin.results.store.validation_record import VALIDATE_SETTINGS
    from tracin.training.run_folder import configuration_differences

    stored = {"train_index": "a", "test_index": "b", "checkpoints": "all", "teacher checkpoints sha256": "c"}
    now = {"train_index": "d", "test_index": "b", "score.test_label": "prediction"}
    now.update({"checkpoints": "last", "teacher checkpoints sha256": "e"})
    assert score_differences(stored, now) == (
        [
            "--checkpoints ('all' in the file, 'last' now)",
            "--test-label ('label' in the file, 'prediction' now)",
        ],  # the examples' digest said only where nothing else differs (the review: --seed changes it too)
        True,
    )
    assert score_differences({"train_index": "a"}, {"train_index": "d"}) == (
        ["--train-subset (it selects other train examples than the file's)"],  # round 31, OS14: not digests
        True,
    )
    digests = {"teacher checkpoints sha256": "e"}
    assert score_differences({**now, "teacher checkpoints sha256": "c"}, {**now, **digests}) == (
        ["teacher checkpoints sha256 ('c' in the file, 'e' now)"],
        False,
    )
    plan = {"conditions": {"student": ["own", "random"]}, "test_rows": [1, 34]}
    said = setting_differences(
        {"plan": plan}, {"plan": {"conditions": {"student": ["own"]}, "test_rows": [1, 21, 34]}}, VALIDATE_SETTINGS
    )
    assert said == [
        "--conditions ('own,random' in the file, 'own' now)",  # round 31, OS4: as typed, not a Python list
        "--test-examples (it selects other test examples than the file's)",  # round 31, OS20: not rows
    ]
    record = {"teacher_checkpoint": {"sha256": None}}
    assert configuration_differences(record, {"teacher_checkpoint": {"sha256": "f"}}) == [
        "--teacher (none -> sha256 f)"
    ]
    outside = {"teacher_checkpoint": {"path": "t.pt", "sha256": "0123456789abcdef"}}
    assert configuration_differences({"teacher_checkpoint": None}, outside) == [
        "--teacher (none -> 't.pt' (sha256 0123456789ab))"  # round 31, OS32: the path typed, not only a digest
    ]


def test_list_settings_that_differ_are_said_as_typed():
    """Round 31, OS4, OS9, OS13: --variants, --layers and --group were said as Python reprs ([] for every
    parameter, [('head', ('fc',))] for --group head=fc)."""
    from tracin.results.store.hdf5 import setting_differences
    from tracin.results.store.score_settings import SETTING_OPTIONS

    stored = {"score.layers": [], "score.variants": ["train-normalised"], "score.groups": []}
    now = {"score.layers": ("fc",), "score.variants": ("raw", "cosine"), "score.groups": (("head", ("fc", "bn")),)}
    now["score.groups"] += (("stem", ("conv1",)),)
    assert setting_differences(stored, now, SETTING_OPTIONS) == [
        "--group (the ResNet stages stem, layer1, ..., head in the file, 'head=fc,bn stem=conv1' now)",
        "--layers (every parameter in the file, 'fc' now)",
        "--variants ('train-normalised' in the file, 'raw,cosine' now)",
    ]
    assert setting_differences({"score.layers": [1]}, {"score.layers": []}, SETTING_OPTIONS) == [
        "--layers ([1] in the file, every parameter now)"  # a value no option gives: said as it is
    ]
