"""Every file tracin reads goes through its declared schema first (tracin/schemas.py, tracin.config's typed
from_dict, the score file's layout): a file edited by hand is one line naming the file and the field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tracin.config import DataConfig, ModelConfig, TrainConfig
from tracin.errors import CheckpointError, StoreError, TracinError
from tracin.results.store import ScoreFile
from tracin.results.store.checks import check_finished
from tracin.schemas import markdown
from tracin.training.checkpoints import list_checkpoints, load_checkpoint, load_run_checkpoints
from tracin.training.run_folder import RunPaths, read_record

REPO = Path(__file__).resolve().parents[1]


def test_docs_format_is_the_schemas_the_code_checks():
    assert (REPO / "docs" / "format.md").read_text() == markdown(), (
        "regenerate: python -m tracin.schemas > docs/format.md"
    )


@pytest.mark.parametrize(
    "text, field",
    [
        ("{}", "(the whole file)"),
        ("[1, 2]", "(the whole file)"),
        ('{"format": "tracin-run"}', "(the whole file)"),
        ("{", "not valid JSON"),
    ],
)
def test_a_run_json_edited_by_hand_is_one_line(tmp_path, text, field):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(TracinError) as raised:
        read_record(RunPaths(tmp_path))
    assert str(tmp_path / "run.json") in str(raised.value) and field in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_field_of_the_wrong_type_is_named(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["models"]["teacher"]["epoch"] = "four"
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(TracinError, match=r"run.json: models/teacher/epoch: 'four' is not of type 'integer'"):
        read_record(RunPaths(run))


def test_configurations_check_each_fields_type():
    with pytest.raises(TracinError, match=r"DataConfig field seed \(set by --data-seed\): expected int, got 'x'"):
        DataConfig.from_dict({"seed": "x"})
    with pytest.raises(TracinError, match=r"TrainConfig field lr \(set by --lr\): expected float, got True"):
        TrainConfig.from_dict({"lr": True})
    assert DataConfig.from_dict(json.loads(json.dumps(DataConfig(train_subset=10).to_dict()))) == DataConfig(
        train_subset=10
    )


def test_a_checkpoint_without_lr_or_model_config_is_one_line(tiny_run, tmp_path):
    (path,) = list_checkpoints(tiny_run / "teacher")[-1:]
    payload = torch.load(path, weights_only=True)
    for field in ("lr", "model_config"):
        broken = {k: v for k, v in payload.items() if k != field}
        torch.save(broken, tmp_path / "epoch_004.pt")
        with pytest.raises(CheckpointError, match=f"'{field}' is a required property"):
            load_checkpoint(tmp_path / "epoch_004.pt")
    torch.save({**payload, "model": {"w": "not a tensor"}}, tmp_path / "epoch_004.pt")
    with pytest.raises(CheckpointError, match="not a state dict of named tensors"):
        load_checkpoint(tmp_path / "epoch_004.pt")
    for lr in (1e308, float("nan"), -0.1):  # a red-team find: 1e308 overflowed float32 inside the engine
        torch.save({**payload, "lr": lr}, tmp_path / "epoch_004.pt")
        with pytest.raises(CheckpointError, match="lr"):
            load_checkpoint(tmp_path / "epoch_004.pt")


def test_checkpoints_of_another_width_than_the_run_records_are_refused(tiny_run):
    record = json.loads((tiny_run / "run.json").read_text())
    paths = list_checkpoints(tiny_run / "teacher")
    digest = record["data_fingerprint"]["digest"]
    load_run_checkpoints(paths, "teacher", digest, record["model_configs"]["teacher"])  # as recorded: accepted
    wider = {**record["model_configs"]["teacher"], "width": record["model_configs"]["teacher"]["width"] * 2}
    with pytest.raises(
        CheckpointError, match=r"not the architecture the run recorded for teacher: width \d+ \(run.json: \d+\)"
    ):
        load_run_checkpoints(paths, "teacher", digest, wider)
    assert (
        ModelConfig.from_dict(record["model_configs"]["teacher"]).width == record["model_configs"]["teacher"]["width"]
    )


DAMAGE = {
    "a score matrix of the wrong shape": lambda h5: _replace(h5, "teacher/scores", np.zeros((3, 3), np.float32)),
    "a string dtype": lambda h5: _replace(
        h5, "student/self_influence", np.array(["x"] * h5["train_index"].shape[0], "S1")
    ),
    "top-k indices out of range": lambda h5: _set(h5, "teacher/topk/test_top_index", 10**6),
    "a missing top-k table": lambda h5: h5.__delitem__("student/topk/train_bottom_score"),
    "header labels of another length": lambda h5: _replace(h5, "train_labels", np.zeros(2, np.int64)),
    "a dropped self-influence": lambda h5: h5.__delitem__("teacher/self_influence"),  # both found by tests/test_fuzz.py
    "a table of strings": lambda h5: _replace(h5, "agreement", np.array([b"x"] * 3)),
}


def _replace(h5, key: str, values) -> None:
    del h5[key]
    h5.create_dataset(key, data=values)


def _set(h5, key: str, value) -> None:
    data = h5[key][()]
    data[0, 0] = value
    h5[key][...] = data


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_score_file_made_by_hand_is_refused_by_every_reader(tiny_scores, tmp_path, damage):
    path = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, path)
    with h5py.File(path, "r+") as h5:
        DAMAGE[damage](h5)
    with ScoreFile.open_read(path) as store, pytest.raises(StoreError, match="not laid out as tracin-score writes it"):
        check_finished(store)
    result = subprocess.run(
        [sys.executable, "scripts/figures.py", str(path)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "not laid out as tracin-score writes it" in result.stderr and "Traceback" not in result.stderr


def test_a_replica_folder_copied_by_hand_is_refused(tiny_run, tmp_path):
    """teacher.r1 copied from teacher and entered in run.json would be scored as a replica identical to replica 0
    (overlap 1: a noise floor of nothing): its checkpoints' training seed says it is not replica 1."""
    from tracin.commands.score import load_role_checkpoints, open_trained_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "teacher", run / "teacher.r1")
    record = json.loads((run / "run.json").read_text())
    record["models"]["teacher.r1"] = dict(record["models"]["teacher"])
    (run / "run.json").write_text(json.dumps(record))
    trained = open_trained_run(str(run), None)
    load_role_checkpoints(trained, "teacher", "all")
    with pytest.raises(CheckpointError, match="a folder copied from another replica or run"):
        load_role_checkpoints(trained, "teacher.r1", "all")


def test_an_empty_data_json_is_one_line_for_tracin_eval(tiny_run, tmp_path, capsys):
    from tracin.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "data.json").write_text("{}")
    assert main(["eval", "--run", str(run), "--eval-dataset", "fashion-mnist", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.json: (the whole file): 'classes' is a required property" in err
