"""tracin.training.run_folder: the run folder's refusals and the resume comparison."""

from __future__ import annotations

import json
import re

import pytest

from tracin.config import ROLES, DataConfig, ModelConfig, TrainConfig
from tracin.errors import ConfigMismatchError, TracinError
from tracin.files import write_json_atomic
from tracin.training.run_folder import (
    RunPaths,
    check_same_run,
    configuration_differences,
    differing_fields,
    new_record,
    open_record,
    read_record,
)

CONFIGS = {"config": {"lr": 0.1, "epochs": 4}, "data_config": {"data_root": "data", "label_noise": 0.0}}
RECORD = new_record(
    {"argv": ["tracin-train"]},
    {**CONFIGS, "data_fingerprint": {"digest": "d", "n_train": 8, "n_test": 4}, "teacher_checkpoint": None},
    {role: ModelConfig().to_dict() for role in ROLES},
    {role: 1 for role in ROLES},
)  # a whole run.json around CONFIGS, every model pending


def with_teacher(entry: dict) -> dict:
    """RECORD with the teacher's entry `entry`."""
    return {**RECORD, "models": {**RECORD["models"], "teacher": entry}}


def test_differing_fields_names_nested_fields():
    current = {"config": {"lr": 0.2, "epochs": 4}, "data_config": {"data_root": "data", "label_noise": 0.0, "new": 1}}
    assert differing_fields(CONFIGS, current) == ["config.lr (0.1 -> 0.2)", "data_config.new (None -> 1)"]


def test_a_configuration_difference_is_said_as_the_option_that_sets_it():
    """Round 29, SM6, SM7: 'config.width (4 -> 8)' named a field, not the option; the training's seed and the
    data's (--seed, --data-seed) are told apart by where they are kept."""
    seeds = {"config": {**CONFIGS["config"], "seed": 7}, "data_config": {**CONFIGS["data_config"], "seed": 9}}
    said = configuration_differences(CONFIGS, {**seeds, "data_fingerprint": {"digest": "x"}})
    assert [d.split(" ")[0] for d in said] == ["--seed", "--data-seed", "data_fingerprint.digest"], said


def test_a_moved_data_folder_is_the_same_run(tmp_path):
    moved = {**CONFIGS, "data_config": {"data_root": "/elsewhere", "label_noise": 0.0}}
    check_same_run(CONFIGS, moved, tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"--epochs \(4 -> 5\)"):
        check_same_run(CONFIGS, {**CONFIGS, "config": {"lr": 0.1, "epochs": 5}}, tmp_path)


def test_a_teacher_is_the_same_by_its_digest_not_its_path(tmp_path):
    """A sweep's students name their teacher by path; the same teacher under another spelling of the output
    root (relative or absolute, or the sweep folder moved) continues the run (round 8: W8, W9)."""
    teacher = {"path": "ck/sw/base/teacher/epoch_002.pt", "sha256": "a" * 64}
    recorded = {**CONFIGS, "teacher_checkpoint": teacher}
    check_same_run(recorded, {**recorded, "teacher_checkpoint": {**teacher, "path": "/tmp/ck/sw/base/..."}}, tmp_path)
    with pytest.raises(
        ConfigMismatchError, match=r"--teacher \('ck/sw/base/teacher/epoch_002.pt' \(sha256 aaaa"
    ):  # another teacher
        check_same_run(recorded, {**recorded, "teacher_checkpoint": {**teacher, "sha256": "b" * 64}}, tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"configuration: --teacher \(none -> 'ck/"):  # and one where none was
        check_same_run({**CONFIGS, "teacher_checkpoint": None}, recorded, tmp_path)


def test_a_run_from_before_a_field_existed_resumes(tmp_path):
    """Runs trained before `arch` existed hold no such field: they used its default, resnet34."""
    old = {
        "config": {k: v for k, v in TrainConfig().to_dict().items() if k != "arch"},
        "data_config": DataConfig().to_dict(),
    }
    check_same_run(old, {"config": TrainConfig().to_dict(), "data_config": DataConfig().to_dict()}, tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"--arch \('resnet34' -> 'resnet18'\)"):
        check_same_run(
            old, {"config": TrainConfig(arch="resnet18").to_dict(), "data_config": DataConfig().to_dict()}, tmp_path
        )


def test_open_record_refuses_to_mix_runs(tmp_path):
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(TracinError, match="holds no run to resume"):  # a mistyped --run starts nothing
        open_record(paths, resume=True, overwrite=False, configs=CONFIGS)
    assert open_record(paths, resume=False, overwrite=False, configs=CONFIGS) is None
    (paths.root / "teacher").mkdir(parents=True)
    with pytest.raises(TracinError, match="no run.json"):
        open_record(paths, resume=True, overwrite=False, configs=CONFIGS)
    write_json_atomic(RECORD, paths.run_json)
    # the same command continues its run, with or without --resume; another configuration is refused
    assert open_record(paths, resume=False, overwrite=False, configs=CONFIGS) == json.loads(paths.run_json.read_text())
    assert open_record(paths, resume=True, overwrite=False, configs=CONFIGS) == json.loads(paths.run_json.read_text())
    other = {**CONFIGS, "config": {**CONFIGS["config"], "lr": 0.5}}
    with pytest.raises(TracinError, match=r"already holds a run with another configuration \(--lr \(0.1 -> 0.5\)"):
        open_record(paths, resume=False, overwrite=False, configs=other)
    write_json_atomic(CONFIGS, paths.run_json)  # a run.json this tool did not write
    with pytest.raises(TracinError, match="is not a tracin-train run"):
        open_record(paths, resume=False, overwrite=True, configs=CONFIGS)
    write_json_atomic(RECORD, paths.run_json)
    assert open_record(paths, resume=False, overwrite=True, configs=CONFIGS) is None


@pytest.mark.parametrize("status, epoch", [("partial", 5), ("done", 3), ("done", 5)])
def test_a_model_epoch_that_disagrees_with_its_epochs_is_refused(tmp_path, status, epoch):
    """Red-team round 7 (J14): models/teacher/epoch 99 of 2 epochs, status done, was accepted."""
    paths = RunPaths(tmp_path)
    entry = {"status": status, "epoch": epoch, "epochs": 4, "checkpoints": []}
    write_json_atomic(with_teacher(entry), paths.run_json)
    with pytest.raises(TracinError, match=f"run.json: models/teacher/epoch is {epoch}; expected "):
        read_record(paths)
    saved = ["epoch_002.pt", "epoch_004.pt"]
    write_json_atomic(with_teacher({**entry, "epoch": 4, "checkpoints": saved}), paths.run_json)
    assert read_record(paths)["models"]["teacher"]["epoch"] == 4


@pytest.mark.parametrize(
    "status, epoch, checkpoints",
    [
        ("done", 4, ["epoch_004.pt", "epoch_002.pt"]),
        ("done", 4, ["epoch_002.pt"]),
        ("partial", 4, ["epoch_004.pt", "epoch_002.pt"]),
        ("done", 4, ["epoch_004.pt"]),
        ("partial", 3, []),
        ("partial", 3, ["epoch_001.pt", "epoch_002.pt"]),
        ("done", 4, ["epoch_002.pt", "epoch_003.pt", "epoch_004.pt"]),
    ],
)
def test_checkpoints_other_than_the_saved_epochs_are_refused(tmp_path, status, epoch, checkpoints):
    """Round 24, S2: run.json's checkpoints reordered (and its metrics set to epoch 2's) made a sweep table epoch
    2's model as the final one. Round 25, A6: a checkpoint dropped from the list (its file and sha256 deleted)
    was scored as a sum a term short. The list is exactly the saved epochs up to the model's epoch."""
    paths = RunPaths(tmp_path)
    entry = {"status": status, "epoch": epoch, "epochs": 4, "checkpoints": checkpoints}
    write_json_atomic(with_teacher(entry), paths.run_json)
    with pytest.raises(
        TracinError,
        match=r"run.json: models/teacher/checkpoints is \[.*\]; expected \[.*\] \(every 2 epochs.*run.json was edited",
    ):
        read_record(paths)
    saved = [f"epoch_{e:03d}.pt" for e in (2, 4) if e <= epoch]
    write_json_atomic(with_teacher({**entry, "checkpoints": saved}), paths.run_json)
    assert read_record(paths)["models"]["teacher"]["checkpoints"] == saved


def test_a_model_of_other_epochs_than_the_run_is_refused(tmp_path):
    paths = RunPaths(tmp_path)
    entry = {"status": "done", "epoch": 2, "epochs": 2, "checkpoints": ["epoch_002.pt"]}
    write_json_atomic(with_teacher(entry), paths.run_json)
    with pytest.raises(TracinError, match=r"models/teacher/epochs is 2; expected 4, the run's config/epochs"):
        read_record(paths)


def test_a_students_teacher_that_is_none_of_the_runs_is_not_said_as_an_outside_teacher():
    """Round 34, S06: a student checkpoint whose teacher's sha256 is none of the run's teacher checkpoints, in a
    run with no outside teacher, was said as '--teacher (none -> PATH)', the run's own teacher as an outside one."""
    from tracin.training.run_folder import trained_differences

    data = {
        "data_config": {"dataset": "fashion-mnist"},
        "data_fingerprint": {"digest": "d", "train_pixels_sha256": "p"},
    }
    record = {"models": {"teacher": {"sha256": {"epoch_002.pt": "c" * 64}}}, **data}
    trained = {**data, "teacher": {"path": "/r/teacher/epoch_002.pt", "sha256": "ab" * 32}}
    assert trained_differences(record, trained, "student") == [
        "its teacher '/r/teacher/epoch_002.pt' (sha256 abababababab) is neither one of the run's teacher checkpoints "
        "nor an outside --teacher"
    ]
    assert (
        trained_differences(record, {**trained, "teacher": {"path": "/elsewhere", "sha256": "c" * 64}}, "student") == []
    )
    outside = {**record, "teacher_checkpoint": {"path": "/x", "sha256": "a" * 64}}
    assert trained_differences(outside, trained, "student") == [
        "--teacher ('/x' (sha256 aaaaaaaaaaaa) -> '/r/teacher/epoch_002.pt' (sha256 abababababab))"
    ]


SCORED_RUN_EDITS = {  # round 42, X20-X28: tracin-explore --run checked a scored run's sha256 and architecture alone
    "the seed": (lambda r: r["config"].update(seed=3), "was trained with seed 0, not this model's 3"),
    "the lr": (lambda r: r["config"].update(lr=0.3), ", but run.json says 0.3: run.json or the checkpoint was edited"),
    "the data digest": (
        lambda r: r["data_fingerprint"].update(digest="0" * 16),
        "was trained on other data than its run.json records",
    ),
    "the train subset": (lambda r: r["data_config"].update(train_subset=300), "--train-subset (300 -> 256)"),
    "an outside teacher": (
        lambda r: r.update(teacher_checkpoint={"path": "/x.pt", "sha256": "a" * 64}),
        "--teacher ('/x.pt' (sha256 aaaaaaaaaaaa) -> ",
    ),
}


@pytest.mark.parametrize("edit", SCORED_RUN_EDITS)
def test_a_scored_run_is_checked_as_scoring_checks_it(tiny_run, tiny_scores, tmp_path, edit):
    """The readers of a score file beside its run (report, validate, explore --run, notebooks) refuse a run.json
    whose settings, data or teacher its checkpoints were not trained with, as tracin-score does."""
    import shutil

    from tracin.results.runs import check_scored_checkpoints, open_trained_run
    from tracin.results.store import ScoreFile

    shutil.copytree(tiny_run, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    change, said = SCORED_RUN_EDITS[edit]
    change(record)
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with ScoreFile.open_read(tiny_scores) as store, pytest.raises(TracinError, match=re.escape(said)):
        check_scored_checkpoints(store, open_trained_run(str(tmp_path / "run"), None))


def test_explore_refuses_a_run_whose_record_its_checkpoints_contradict(tiny_run, tiny_scores, tmp_path):
    """Round 42, X20, through the command: the page was written from a run whose run.json seed was edited."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import subprocess_env

    shutil.copytree(tiny_run, tmp_path / "run")
    shutil.copy(tiny_scores, tmp_path / "tracin.h5")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["config"]["seed"] = 3
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    command = [Path(sys.executable).with_name("tracin-explore"), "--run", tmp_path / "run"]
    result = subprocess.run(
        [*map(str, command), "--scores", str(tmp_path / "tracin.h5"), "--out", str(tmp_path / "page.html")],
        capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "was trained with seed 0, not this model's 3" in result.stderr and not (tmp_path / "page.html").exists()
