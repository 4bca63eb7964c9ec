"""tracin.training.checkpoints: atomic writes, checked loads, listing, and the files tracin-train writes."""

from __future__ import annotations

import argparse
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tracin.config import ModelConfig
from tracin.engine.tracin import TracIn
from tracin.errors import CheckpointError, TracinError
from tracin.training.checkpoints import (
    FORMAT,
    Checkpoint,
    checkpoint_name,
    checkpoints_from_loader,
    epoch_of,
    list_checkpoints,
    load_checkpoint,
    load_distillation_teacher,
    load_file,
    load_model,
    make_payload,
    resolve_checkpoints,
    save_atomic,
    select_checkpoints,
    teacher_record,
)
from tracin.training.models import build_model

from conftest import subprocess_env


def _payload(role: str = "teacher") -> dict:
    """The fields every tracin-train checkpoint has (tracin.schemas.CHECKPOINT), around a one-tensor model."""
    model_config = {"arch": "resnet34", "stages": 4, "width": 4, "in_channels": 1, "num_classes": 10}
    return {
        "format": FORMAT,
        "version": 1,
        "role": role,
        "model": {"w": torch.arange(3.0)},
        "lr": 0.5,
        "epoch": 2,
        "step": 8,
        "model_config": model_config,
        "config": {},
        "data_fingerprint": {},
    }


def test_save_atomic_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / checkpoint_name(2)
    save_atomic(_payload(), path)
    assert [p.name for p in path.parent.iterdir()] == ["epoch_002.pt"]
    assert torch.equal(load_checkpoint(path, role="teacher")["model"]["w"], torch.arange(3.0))


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic(_payload(), path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a local lambda cannot be pickled
        save_atomic({"unpicklable": lambda: None}, path)
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_unreadable_files_are_checkpoint_errors(tmp_path, damage):
    path = tmp_path / "epoch_002.pt"
    if damage != "missing":
        save_atomic(_payload(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=str(path)):
        load_file(path)


def test_a_plain_pickle_is_one_error_with_no_warning_before_it(tmp_path, recwarn):
    """A pickle made without torch.save: torch warns about its protocol before failing (red-team find), and
    that warning printed above the one error line."""
    path = tmp_path / "epoch_002.pt"
    path.write_bytes(pickle.dumps({"model": {}}, protocol=4))
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_file(path)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_load_checkpoint_checks_format_and_role(tmp_path):
    save_atomic(_payload("student"), tmp_path / "student.pt")
    save_atomic({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="is a student checkpoint, expected teacher"):
        load_checkpoint(tmp_path / "student.pt", role="teacher")
    with pytest.raises(CheckpointError, match="not a tracin-train checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_a_tracin_train_checkpoint_with_weights_of_another_dtype_is_refused(tmp_path):
    """Red-team round 7 (C07): a weight stored as float64 was cast to float32 without a word."""
    save_atomic({**_payload(), "model": {"w": torch.arange(3.0, dtype=torch.float64)}}, tmp_path / "epoch_002.pt")
    with pytest.raises(CheckpointError, match="model: w is torch.float64, expected torch.float32"):
        load_checkpoint(tmp_path / "epoch_002.pt")


def test_list_checkpoints_orders_by_epoch_and_skips_other_files(tmp_path):
    for name in ("epoch_010.pt", "epoch_002.pt", "last.pt", "init.pt", "epoch_004.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_002.pt", "epoch_004.pt", "epoch_010.pt"]


def test_resolve_checkpoints_reads_the_lr_tracin_train_stored(tiny_run):
    paths = list_checkpoints(tiny_run / "teacher")
    resolved = resolve_checkpoints(paths)
    stored = [torch.load(p, weights_only=True)["lr"] for p in paths]
    assert [c.lr for c in resolved] == stored and [c.epoch for c in resolved] == [2, 4]


# --- checkpoints as other trainers write them ---------------------------------------------------------


def _linear_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2))


LAYOUTS = {
    "plain state dict, (path, lr)": lambda s: s,
    "torchvision reference trainer": lambda s: {
        "model": s,
        "optimizer": {"param_groups": [{"lr": 0.05}]},
        "epoch": 2,
        "args": argparse.Namespace(lr=0.1, epochs=90),
    },
    "state_dict + lr": lambda s: {"state_dict": s, "lr": 0.05},
    "model_state_dict + learning_rate": lambda s: {"model_state_dict": s, "learning_rate": torch.tensor(0.05)},
    "model_state + optimizer": lambda s: {
        "model_state": s,
        "optimizer": {"param_groups": [{"lr": 0.05}, {"lr": 0.05}]},
    },
    "DDP prefix": lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "lr": 0.05},
    "Lightning prefix": lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "lr": 0.05},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_layouts_of_other_trainers_load_with_their_lr(tmp_path, layout):
    model = _linear_model()
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    path = tmp_path / "checkpoint.pth"
    torch.save(LAYOUTS[layout](state), path)
    item = (path, 0.05) if layout.startswith("plain") else path
    (checkpoint,) = resolve_checkpoints([item])
    assert checkpoint.lr == pytest.approx(0.05)  # a float32 tensor lr is 0.05 to float32 rounding
    engine = TracIn(model, [checkpoint])
    for key, value in state.items():
        assert torch.equal(engine.model.state_dict()[key], value), key


@pytest.mark.parametrize(
    "payload,message",
    [
        (
            {"model": {"w": torch.ones(1)}, "state_dict": {"w": torch.ones(1)}, "lr": 0.1},
            r"several state dicts \(keys: model, state_dict, lr\)",
        ),
        ({"weights": {"w": torch.ones(1)}, "lr": 0.1}, r"no state dict \(keys: weights, lr\)"),
        ({"model": {"w": torch.ones(1)}, "epoch": 3}, r"records no learning rate \(keys: model, epoch\)"),
        (
            {"model": {"w": torch.ones(1)}, "optimizer": {"param_groups": [{"lr": 0.1}, {"lr": 0.2}]}},
            "different learning rates",
        ),
        ({"model": {"w": torch.ones(1)}, "lr": 0.0}, "finite positive"),
        ({"model": {"w": torch.ones(1)}, "lr": float("nan")}, "finite positive"),
        ({"model": {"w": torch.ones(1)}, "lr": "fast"}, "not a number"),
    ],
)
def test_ambiguous_or_wrong_checkpoint_files_name_what_they_hold(tmp_path, payload, message):
    path = tmp_path / "checkpoint.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoints([path])


def test_negative_lr_in_a_pair_is_refused():
    with pytest.raises(CheckpointError, match="finite positive"):
        resolve_checkpoints([({"w": torch.ones(1)}, -0.1)])


def test_a_captum_style_load_function_gives_states_and_lrs(tmp_path):
    model = _linear_model()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"ckpt_{i}.bin")
        torch.save(
            {"weights": {k: v * (i + 2) for k, v in model.state_dict().items()}, "rate": 0.1 * (i + 1)}, paths[-1]
        )

    def load(net, path):
        payload = torch.load(path, weights_only=True)
        net.load_state_dict(payload["weights"])
        return payload["rate"]

    checkpoints = checkpoints_from_loader(model, paths, load)
    assert [c.lr for c in checkpoints] == pytest.approx([0.1, 0.2])
    assert torch.equal(checkpoints[1].state["0.weight"], model.state_dict()["0.weight"] * 3)
    assert torch.equal(
        model.state_dict()["0.weight"], _linear_model().state_dict()["0.weight"]
    )  # the user's model untouched


def test_every_checkpoint_checks_its_lr_however_it_is_made():
    with pytest.raises(CheckpointError, match="finite positive"):
        Checkpoint({"w": torch.ones(1)}, 0.0, path="run/teacher/epoch_002.pt")  # as tracin-score builds them


def _tiny_payload(role: str, epoch: int, teacher=None, seed: int = 0) -> dict:
    config = ModelConfig(stages=1, width=2, in_channels=1, num_classes=3)
    torch.manual_seed(seed)
    training = {
        "optimizer": {},
        "scheduler": {},
        "epoch": epoch,
        "step": epoch,
        "lr": 0.1,
        "lr_at_save": 0.1,
        "metrics": {},
        "history": [],
    }
    config_of_run = {"distill": "teacher" if teacher else "none"}  # a student's teacher field as its run's
    provenance = {"config": config_of_run, "data_config": {}, "data_fingerprint": {"digest": "d"}, "teacher": teacher}
    return make_payload(role, build_model(config), config, training, provenance)


def test_payload_round_trip_and_one_epoch_parser(tmp_path):
    for epoch in (2, 10, 4):
        save_atomic(_tiny_payload("student", epoch), tmp_path / checkpoint_name(epoch))
    assert [epoch_of(p) for p in list_checkpoints(tmp_path)] == [2, 4, 10]
    assert [epoch_of(p) for p in select_checkpoints(tmp_path, "student", "10,2")] == [10, 2]
    model, payload = load_model(tmp_path / checkpoint_name(4), role="student")
    assert payload["epoch"] == 4 and payload["param_count"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(CheckpointError, match="epoch_NNN"):
        epoch_of(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="no checkpoint for epoch"):
        select_checkpoints(tmp_path, "student", "3")
    with pytest.raises(TracinError, match="names an epoch twice"):  # its term would count twice (red-team S19)
        select_checkpoints(tmp_path, "student", "2,2")
    with pytest.raises(TracinError, match="comma-separated epochs"):
        select_checkpoints(tmp_path, "student", "2,,4")


def test_distillation_teacher_is_checked_against_the_recorded_sha256(tmp_path):
    """kd scoring once loaded whatever file sat at the teacher's path, and a wrong one as a traceback."""
    teacher = tmp_path / "teacher.pt"
    save_atomic(_tiny_payload("teacher", 2, seed=1), teacher)
    student = _tiny_payload("student", 2, teacher=teacher_record(teacher, load_checkpoint(teacher)))
    assert isinstance(load_distillation_teacher(student), torch.nn.Module)
    save_atomic(_tiny_payload("teacher", 2, seed=2), teacher)  # replaced by another teacher
    with pytest.raises(CheckpointError, match="changed since the student was trained"):
        load_distillation_teacher(student)
    with pytest.raises(CheckpointError, match="was not distilled from a teacher checkpoint"):
        load_distillation_teacher(_tiny_payload("student", 2, teacher="self"))


def test_a_moved_runs_teacher_is_found_among_its_own_checkpoints_by_sha256(tmp_path):
    """Round 10, F18: a run folder moved could not be scored with --loss kd-train: the student's checkpoint
    names its teacher by the absolute path it had."""
    (tmp_path / "moved").mkdir()
    teacher, other = tmp_path / "moved" / "epoch_002.pt", tmp_path / "moved" / "epoch_004.pt"
    save_atomic(_tiny_payload("teacher", 2, seed=1), teacher)
    save_atomic(_tiny_payload("teacher", 4, seed=2), other)
    record = {**teacher_record(teacher, load_checkpoint(teacher)), "path": str(tmp_path / "gone" / "epoch_002.pt")}
    student = _tiny_payload("student", 2, teacher=record)
    found = load_distillation_teacher(student, [other, teacher])  # the file of the recorded sha256, not the first
    assert all(
        torch.equal(a, b) for a, b in zip(found.state_dict().values(), load_checkpoint(teacher)["model"].values())
    )
    with pytest.raises(CheckpointError, match="is missing, and no checkpoint of this run's teacher is that file"):
        load_distillation_teacher(student, [other])


def test_a_students_record_of_its_teacher_names_it_from_any_folder(tmp_path, monkeypatch):
    """Round 8, X2: a teacher given as a relative path was recorded so, and a student distilled from it
    could be scored with --loss kd only from the folder it was trained in."""
    from tracin.training.checkpoints import sha256_file, teacher_record

    monkeypatch.chdir(tmp_path)
    Path("teacher.pt").write_bytes(b"weights")
    record = teacher_record("teacher.pt", {"epoch": 2})
    assert record == {"path": str(tmp_path / "teacher.pt"), "sha256": sha256_file("teacher.pt"), "epoch": 2}


def test_every_checkpoints_lr_is_its_runs_schedule_replayed_and_an_edited_one_is_refused(tiny_run, tmp_path):
    """Round 8, D5: an lr multiplied by 100 by hand was scored without a word. The replay of the schedule
    gives every checkpoint of the tiny run (three models, two intervals each) its lr to the last bit."""
    import json

    from tracin.config import TrainConfig
    from tracin.training.checkpoints import check_checkpoint_lr, list_checkpoints
    from tracin.training.optimization import checkpoint_lr

    config = TrainConfig.from_dict(json.loads((tiny_run / "run.json").read_text())["config"])
    for model in ("teacher", "student", "student_baseline"):
        for path in list_checkpoints(tiny_run / model):
            payload = torch.load(path, weights_only=True)
            steps = payload["step"] // payload["epoch"]
            assert checkpoint_lr(config, steps, payload["epoch"]) == payload["lr"], path
            check_checkpoint_lr(path, payload, config)
    with pytest.raises(CheckpointError, match="records lr .*, but the run's schedule gives .* was edited"):
        check_checkpoint_lr(path, {**payload, "lr": payload["lr"] * 100}, config)
    with pytest.raises(CheckpointError, match="not whole epochs"):
        check_checkpoint_lr(path, {**payload, "step": payload["step"] + 1}, config)


@pytest.mark.parametrize("field, value", [("weight_decay", 1e-3), ("temperature", 2.0), ("batch_size", 64)])
def test_a_training_setting_that_is_not_the_runs_is_refused(tiny_run, tmp_path, field, value):
    """Round 9, F1 and F5-F9: run.json's config, or a checkpoint's, edited to another valid value was used
    without a word (scoring with --loss kd reads a student's temperature; validation retrains from run.json)."""
    import json
    import shutil

    from tracin.config import TrainConfig
    from tracin.training.checkpoints import check_trained_config, list_checkpoints

    config = TrainConfig.from_dict(json.loads((tiny_run / "run.json").read_text())["config"])
    for model in ("teacher", "student", "student_baseline"):
        for path in [tiny_run / model / "init.pt", *list_checkpoints(tiny_run / model)]:
            check_trained_config(path, torch.load(path, weights_only=True), config)
    payload = torch.load(path, weights_only=True)
    edited = {**payload, "config": {**payload["config"], field: value}}
    with pytest.raises(CheckpointError, match=f"trained with {field} .*, but run.json says"):
        check_trained_config(path, edited, config)
    run = tmp_path / "run"  # and end to end: run.json edited, tracin-score refuses in one line
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["config"][field] = value
    (run / "run.json").write_text(json.dumps(record))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("tracin-score")), "--run", run, "--scores", tmp_path / "s.h5", "--topk", "5", "--quiet"],
        capture_output=True, text=True, timeout=600, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"was trained with {field}" in result.stderr and "but run.json says" in result.stderr


def test_each_saved_checkpoint_is_hashed_once_and_checked_against_run_json(tiny_run, tmp_path):
    """Round 9 C6 (a borderline then): a checkpoint's weights edited in range were scored without a word;
    run.json now records each checkpoint's sha256 when it is saved."""
    import json

    from tracin.training.checkpoints import list_checkpoints, sha256_file
    from tracin.training.records import check_saved_digest, saved_digests

    record = json.loads((tiny_run / "run.json").read_text())
    for model in ("teacher", "student", "student_baseline"):
        paths = list_checkpoints(tiny_run / model)
        assert record["models"][model]["sha256"] == {
            p.name: sha256_file(p) for p in [tiny_run / model / "init.pt", *paths]
        }
    known = {"epoch_002.pt": "0" * 64}  # a known digest is kept, not computed again
    assert saved_digests(tiny_run / "teacher", ["epoch_002.pt"], known) == known
    path = tmp_path / "epoch_002.pt"
    payload = torch.load(tiny_run / "teacher" / "epoch_002.pt", weights_only=True)
    recorded = {path.name: sha256_file(tiny_run / "teacher" / "epoch_002.pt")}
    torch.save(payload, path)
    for recorded_then in (None, recorded):  # round 17, K1, K2: relabelled version 1, its record deleted
        with pytest.raises(CheckpointError, match="is a checkpoint of version 1, from a tracin-train before run.json"):
            check_saved_digest(path, recorded_then, "run.json's models/teacher/sha256", 1)
    for recorded_then in (None, {}):  # round 11, K4: the record deleted
        with pytest.raises(CheckpointError, match="records no sha256 of epoch_002.pt, which tracin-train records"):
            check_saved_digest(path, recorded_then, "run.json's models/teacher/sha256", 2)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name] * 1.001  # in range: still float32, still finite
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="is not the checkpoint tracin-train saved .* edited, or damaged"):
        check_saved_digest(path, recorded, "run.json's models/teacher/sha256", 2)


@pytest.mark.parametrize("command", ["tracin-score", "tracin-eval"])
def test_a_checkpoint_whose_weights_were_edited_is_refused(tiny_run, tmp_path, command, fashion_mnist_root):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "teacher" / "epoch_004.pt"
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name] * 1.001
    torch.save(payload, path)
    args = ["--scores", tmp_path / "s.h5", "--topk", "5", "--quiet"] if command == "tracin-score" else []
    args += [] if args else ["--eval-dataset", "fashion-mnist", "--data-root", fashion_mnist_root]
    result = subprocess.run(
        [str(Path(sys.executable).with_name(command)), "--run", run, *args],
        capture_output=True, text=True, timeout=600, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{path} is not the checkpoint tracin-train saved" in result.stderr


def tracin_eval_refusal(run: Path, data_root) -> subprocess.CompletedProcess:
    """`tracin-eval` of `run` on Fashion-MNIST, checked to be refused in one line (exit 2)."""
    args = ["--eval-dataset", "fashion-mnist", "--data-root", data_root, "--device", "cpu"]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("tracin-eval")), "--run", run, *args],
        capture_output=True, text=True, timeout=600, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


RUN_JSON_EDITS = {  # round 31, E1-E16: tracin-eval, which does not load the run's data, took each edit's word
    "n_train under its digest": (lambda r: r["data_fingerprint"].update(n_train=257), "data_fingerprint.n_train"),
    "the digest": (lambda r: r["data_fingerprint"].update(digest="0" * 16), "data_fingerprint.digest"),
    "the train subset": (lambda r: r["data_config"].update(train_subset=300), "--train-subset (300 -> 256)"),
    "the data seed": (lambda r: r["data_config"].update(seed=1), "--data-seed (1 -> 0)"),
    "an outside teacher named": (lambda r: r.update(teacher_checkpoint="/etc/passwd"), "--teacher ('/etc/passwd' -> "),
    "an outside teacher of another digest": (
        lambda r: r.update(teacher_checkpoint={"path": "/x", "sha256": "a" * 64}),
        "--teacher ('/x' (sha256 aaaaaaaaaaaa) -> ",  # round 31, OS32: the path, not only the digest
    ),
}


@pytest.mark.parametrize("edit", RUN_JSON_EDITS)
def test_tracin_eval_refuses_a_run_json_whose_data_or_teacher_its_checkpoints_were_not_trained_with(
    tiny_run, tmp_path, edit, fashion_mnist_root
):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    change, said = RUN_JSON_EDITS[edit]
    change(record)
    (run / "run.json").write_text(json.dumps(record))
    result = tracin_eval_refusal(run, fashion_mnist_root)
    assert "run.json records another configuration than" in result.stderr, result.stderr
    assert said in result.stderr and not list(run.glob("eval_*.csv")), result.stderr


def test_tracin_eval_checks_every_model_before_it_evaluates_any(tiny_run, tmp_path, fashion_mnist_root, monkeypatch):
    """Round 31, Q6, F3: the student_baseline's refusal (here its run.json architecture edited) came after the
    teacher and student had been evaluated; every model's last checkpoint is checked first."""
    import json
    import shutil

    from tracin.commands import evaluate as evaluate_command
    from tracin.options import EvalOptions

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["model_configs"]["student_baseline"]["width"] *= 2
    (run / "run.json").write_text(json.dumps(record))
    evaluated = []
    monkeypatch.setattr(evaluate_command, "evaluate", lambda model, *args: evaluated.append(model))
    options = EvalOptions(run=str(run), dataset="fashion-mnist", data_root=str(fashion_mnist_root), device="cpu")
    with pytest.raises(CheckpointError, match="not the architecture the run recorded for student_baseline"):
        evaluate_command.eval_run(options)
    assert evaluated == []


def test_a_reader_says_a_model_folder_that_is_no_folder_is_not_there(tiny_run, tiny_scores, tmp_path):
    """Round 31, F2b: a FIFO for the student's folder made tracin-report, -validate and -explore say the score
    file was another run's ('give the score file of this run')."""
    import os
    import shutil

    from tracin.errors import TracinError
    from tracin.results.runs import check_scored_checkpoints, open_trained_run
    from tracin.results.store import ScoreFile

    shutil.copytree(tiny_run, tmp_path / "run")
    run = open_trained_run(str(tmp_path / "run"), None)
    with ScoreFile.open_read(tiny_scores) as store:
        check_scored_checkpoints(store, run)  # the run's own, moved: accepted
        shutil.rmtree(tmp_path / "run" / "student")
        os.mkfifo(tmp_path / "run" / "student")
        with pytest.raises(TracinError, match=r"run/student is not a folder: the checkpoints .* scored student from"):
            check_scored_checkpoints(store, run)


@pytest.mark.parametrize("edit", ["deleted", "copied in", "a FIFO for the folder"])
def test_tracin_eval_refuses_a_model_folder_other_than_run_json_lists(tiny_run, tmp_path, edit, fashion_mnist_root):
    """Round 30, E8, E9, FF3: tracin-eval evaluated a run whose checkpoint was deleted or copied in, which
    tracin-score refuses; a FIFO where the student's folder goes was said to lack its last checkpoint."""
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if edit == "deleted":
        (run / "teacher" / "epoch_002.pt").unlink()
    elif edit == "copied in":
        shutil.copy(run / "teacher" / "epoch_004.pt", run / "teacher" / "epoch_009.pt")
    else:
        shutil.rmtree(run / "student")
        os.mkfifo(run / "student")
    result = tracin_eval_refusal(run, fashion_mnist_root)
    said = {
        "deleted": "models/teacher/checkpoints lists epoch_002.pt, which",
        "copied in": "epoch_009.pt is not in",
        "a FIFO for the folder": "student is not a folder",
    }[edit]
    assert said in result.stderr and not list(run.glob("eval_*.csv")), result.stderr


@pytest.mark.parametrize(
    "edit, said",
    [
        ("sha256 recorded", "is not the checkpoint tracin-train saved (its sha256 differs from"),
        ("checkpoint copied in", "epoch_009.pt is not in"),
        ("architecture recorded", "is not the architecture the run recorded for student: stages"),  # round 39, A17
    ],
)
def test_every_model_a_score_file_holds_is_checked_against_run_json_as_loading_checks_it(
    tiny_run, tiny_scores, tmp_path, edit, said
):
    """Round 38, A-shaRec_s1, A2-shaRec_s, A-extra_s1: a model the file holds but a command did not ask for (a
    replica, the student under --models teacher) was checked against the file's sha256 alone, so run.json's
    sha256 record edited, or a checkpoint copied into its folder, passed where loading it refuses."""
    import shutil

    from tracin.results.runs import check_scored_checkpoints, open_trained_run
    from tracin.results.store import ScoreFile

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if edit == "sha256 recorded":
        record = json.loads((run / "run.json").read_text())
        record["models"]["student"]["sha256"] = dict.fromkeys(record["models"]["student"]["sha256"], "0" * 64)
        (run / "run.json").write_text(json.dumps(record))
    elif edit == "architecture recorded":
        record = json.loads((run / "run.json").read_text())
        record["model_configs"]["student"]["stages"] += 1
        (run / "run.json").write_text(json.dumps(record))
    else:
        shutil.copy(sorted((run / "student").glob("epoch_*.pt"))[-1], run / "student" / "epoch_009.pt")
    with ScoreFile.open_read(tiny_scores) as store, pytest.raises(TracinError, match=re.escape(said)):
        check_scored_checkpoints(store, open_trained_run(str(run), None))


@pytest.mark.parametrize(
    "edit, said",
    [
        ("bytes", "{teacher} is not the checkpoint tracin-train saved"),  # round 39, T01
        ("architecture recorded", "{teacher} is not the architecture the run recorded for teacher: width"),  # D12
        ("last.pt", "--teacher {last} is not a checkpoint {run_json} lists of teacher (its resume state"),  # D16
        ("copied in", "--teacher {copied} is not a checkpoint {run_json} lists of teacher (copied in"),
        ("link to an edited file", "{link} is not the checkpoint tracin-train saved"),  # review 58
        ("folder copied in", "--teacher {folder}: {run_json} records no model teacher.r5"),  # review 58
        ("lr recorded", "{teacher} was trained with lr 0.05, but run.json says 0.5"),  # round 41, T15-T19
        ("data recorded", "{run_json} records another configuration than {teacher} was trained with"),  # T21
    ],
)
def test_a_teacher_given_from_a_run_must_be_the_checkpoint_that_run_saved(tiny_run, tmp_path, edit, said):
    """Rounds 39-40, T01, S05b, D12, D16: --teacher RUN/teacher/epoch_NNN.pt edited in place (its sha256 no
    longer run.json's), or its run's recorded architecture edited, or RUN/teacher/last.pt (no record covers it)
    edited, trained a student, and a sweep's damaged shared teacher every student, without a word. A link in the
    run's folder to an edited file, a model folder copied in (review 58): the same."""
    import shutil

    from tracin.training.run_folder import check_saved_by_its_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    teacher, last = sorted((run / "teacher").glob("epoch_*.pt"))[-1], run / "teacher" / "last.pt"
    for saved in (teacher, run / "teacher" / "init.pt"):  # as saved: accepted
        check_saved_by_its_run(saved, "--teacher")
    kept = tmp_path / "kept.pt"
    shutil.copy(teacher, kept)
    given = teacher
    if edit == "bytes":
        data = bytearray(teacher.read_bytes())
        data[len(data) // 2] ^= 0xFF
        teacher.write_bytes(bytes(data))
    elif edit == "architecture recorded":
        record = json.loads((run / "run.json").read_text())
        record["model_configs"]["teacher"]["width"] *= 2
        (run / "run.json").write_text(json.dumps(record))
    elif edit in ("lr recorded", "data recorded"):
        record = json.loads((run / "run.json").read_text())
        if edit == "lr recorded":
            record["config"]["lr"] = 0.5
        else:
            record["data_config"]["train_subset"] += 1
        (run / "run.json").write_text(json.dumps(record))
    elif edit == "last.pt":
        given = last
    elif edit == "copied in":
        given = run / "teacher" / "mine.pt"
        shutil.copy(teacher, given)
    elif edit == "link to an edited file":
        edited = tmp_path / "edited.pt"
        edited.write_bytes(teacher.read_bytes()[:-1] + bytes([teacher.read_bytes()[-1] ^ 1]))
        teacher.unlink()
        teacher.symlink_to(edited)
    else:
        (run / "teacher.r5").mkdir()
        given = run / "teacher.r5" / "last.pt"
        shutil.copy(last, given)
    said = said.format(teacher=teacher, last=last, copied=given, link=teacher, folder=given, run_json=run / "run.json")
    with pytest.raises(CheckpointError, match=re.escape(said)):
        check_saved_by_its_run(given, "--teacher")
    check_saved_by_its_run(kept, "--teacher")  # a copy kept outside a run: its own record
    (run / "kept").mkdir()
    shutil.copy(kept, run / "kept" / "best.pt")
    check_saved_by_its_run(run / "kept" / "best.pt", "--teacher")  # a folder of the user's own in the run: the same
