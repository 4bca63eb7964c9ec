"""tracin-train's command line: each user mistake is one line on stderr and exit code 2, resume and
overwrite rules, help text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from tracin.cli.main import build_train_parser, train_main

from conftest import TINY_RUN_ARGS, one_thread, run_tracin_train

OPTIONS = (
    "--run",
    "--out-root",
    "--dataset",
    "--data-root",
    "--no-checksum",
    "--train-subset",
    "--test-subset",
    "--label-noise",
    "--data-seed",
    "--models",
    "--epochs",
    "--batch-size",
    "--lr",
    "--schedule",
    "--warmup-epochs",
    "--label-smoothing",
    "--save-every",
    "--seed",
    "--width",
    "--student-stages",
    "--student-init",
    "--distill",
    "--kd-loss",
    "--temperature",
    "--alpha",
    "--no-augment",
    "--teacher",
    "--device",
    "--resume",
    "--overwrite",
    "--quiet",
)


def _cli(argv: list, capsys) -> tuple[int, str, str]:
    """train_main in this process: (exit code, stdout, stderr)."""
    try:
        with one_thread():
            code = train_main([str(a) for a in argv])
    except SystemExit as exit:  # argparse
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("tracin-train: error: "), err
    assert "Traceback" not in err and needle in lines[0], err


def _cifar(root: str, out_root: Path) -> list[str]:
    return [
        "--dataset",
        "cifar10",
        "--data-root",
        root,
        "--no-checksum",
        "--out-root",
        out_root,
        "--width",
        "4",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, cifar10_root) -> Path:
    """A finished run that trained only its teacher (2 epochs, CIFAR-format fixture files)."""
    out_root = tmp_path_factory.mktemp("cli")
    with one_thread():
        assert train_main(["--run", "base", "--models", "teacher", *map(str, _cifar(cifar10_root, out_root))]) == 0
    return out_root / "base"


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / run.name)
    return tmp_path / run.name


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--run", "x", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--run", "x", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--dataset", "cifar10"], "the following arguments are required: --run"),
        (["--run", "x", "--epochs", "two"], "invalid int value"),
        (["--run", "x", "--resume", "--overwrite"], "not allowed with argument"),
        (["--run", "x", "--kd-loss", "l1"], "invalid choice: 'l1' (choose from kl, kl-elementwise, mse)"),
    ],
)
def test_usage_errors_are_one_line(argv, needle, capsys):
    _assert_one_line_error(*_cli(argv, capsys)[::2], needle)


def test_every_registered_kd_loss_is_a_choice():
    """--kd-loss reads tracin.training.losses.KD_LOSSES: the study's kl-elementwise is one, with no list to edit."""
    assert build_train_parser().parse_args(["--run", "x", "--kd-loss", "kl-elementwise"]).kd_loss == "kl-elementwise"


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--student-stages", "5"], "student stages must be between 1 and 4, got 5"),
        (["--width", "0"], "width must be positive"),
        (["--label-noise", "1.5"], "--label-noise must be in [0, 1)"),
        (["--models", "student"], "the student needs a teacher"),
        (["--teacher", "no/such/teacher.pt"], "does not exist"),
        (["--lr", "1e38", "--train-subset", "64"], "non-finite"),
        (["--epochs", "1"], "--warmup-epochs must be in [0, epochs), got 1.0 with 1 epochs"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(extra, needle, tmp_path, cifar10_root, capsys):
    _assert_one_line_error(*_cli(["--run", "x", *_cifar(cifar10_root, tmp_path), *extra], capsys)[::2], needle)


def test_missing_data_offline_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(self):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    code, _, err = _cli(["--run", "x", *_cifar(str(tmp_path / "empty"), tmp_path)], capsys)
    _assert_one_line_error(code, err, "cifar10 could not be loaded")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path, cifar10_root, capsys):
    code, _, err = _cli(["--run", "x", *_cifar(cifar10_root, tmp_path), "--device", "cuda"], capsys)
    _assert_one_line_error(code, err, "no CUDA device")


def test_teacher_of_the_wrong_role_or_corrupt_is_one_line(tiny_run, tmp_path, cifar10_root, capsys):
    base = ["--run", "x", *_cifar(cifar10_root, tmp_path)]
    code, _, err = _cli([*base, "--teacher", tiny_run / "student" / "epoch_004.pt"], capsys)
    _assert_one_line_error(code, err, "is a student checkpoint, expected teacher")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tiny_run / "teacher" / "epoch_004.pt").read_bytes()[:2000])
    code, _, err = _cli([*base, "--teacher", corrupt], capsys)
    _assert_one_line_error(code, err, "truncated or corrupt")


def test_a_teacher_for_other_data_is_one_line(tiny_run, tmp_path, cifar10_root, capsys):
    # The tiny run's teacher reads 1-channel Fashion-MNIST; CIFAR-10 has 3 channels.
    teacher = tiny_run / "teacher" / "epoch_004.pt"
    code, _, err = _cli(["--run", "x", *_cifar(cifar10_root, tmp_path), "--teacher", teacher], capsys)
    _assert_one_line_error(code, err, "takes 1 channels and 10 classes; the data has 3 and 10")


def test_the_same_command_continues_its_run_and_another_configuration_is_refused(
    teacher_run, tmp_path, cifar10_root, capsys
):
    run = _copy(teacher_run, tmp_path)
    before = (run / "teacher" / "epoch_002.pt").read_bytes()
    code, _, err = _cli(["--run", "base", *_cifar(cifar10_root, tmp_path), "--models", "teacher"], capsys)
    assert code == 0, err
    assert (run / "teacher" / "epoch_002.pt").read_bytes() == before
    code, _, err = _cli(
        ["--run", "base", *_cifar(cifar10_root, tmp_path), "--models", "teacher", "--lr", "0.3"], capsys
    )
    _assert_one_line_error(code, err, "already holds a run with another configuration (--lr (0.1 -> 0.3))")


def test_resume_with_another_configuration_names_the_fields(teacher_run, cifar10_root, capsys):
    changes = ["--lr", "0.2", "--label-noise", "0.1"]
    argv = ["--run", "base", *_cifar(cifar10_root, teacher_run.parent), "--resume", *changes]
    code, _, err = _cli(argv, capsys)
    _assert_one_line_error(code, err, "was started with another configuration")
    assert "--lr (0.1 -> 0.2)" in err and "--label-noise (0.0 -> 0.1)" in err
    assert "--epochs" not in err  # the data's fingerprint is compared after: these are refused before the load


def test_resume_trains_a_student_from_the_runs_teacher_then_skips_it(teacher_run, tmp_path, cifar10_root, capsys):
    run = _copy(teacher_run, tmp_path)
    argv = ["--run", "base", *_cifar(cifar10_root, tmp_path), "--models", "student", "--resume"]
    assert _cli(argv, capsys)[0] == 0
    final = run / "student" / "epoch_002.pt"
    assert torch.load(final, weights_only=True)["teacher"]["path"] == str(run / "teacher" / "epoch_002.pt")
    written = final.stat().st_mtime_ns
    code, out, _ = _cli([a for a in argv if a != "--quiet"], capsys)
    assert code == 0 and "student: done already, skipped" in out and final.stat().st_mtime_ns == written
    record = json.loads((run / "run.json").read_text())
    statuses = [record["models"][role]["status"] for role in ("teacher", "student", "student_baseline")]
    assert statuses == ["done", "done", "pending"]
    assert len(record["invocations"]) == 3


def test_overwrite_starts_the_run_over(teacher_run, tmp_path, cifar10_root, capsys):
    run = _copy(teacher_run, tmp_path)
    one_epoch = ["--epochs", "1", "--warmup-epochs", "0.5"]
    argv = ["--run", "base", *_cifar(cifar10_root, tmp_path), "--models", "teacher", *one_epoch, "--overwrite"]
    assert _cli(argv, capsys)[0] == 0
    assert sorted(p.name for p in (run / "teacher").glob("epoch_*.pt")) == ["epoch_001.pt"]
    assert len(json.loads((run / "run.json").read_text())["invocations"]) == 1


def test_one_summary_line_per_epoch_unless_quiet(tmp_path, cifar10_root, capsys):
    argv = ["--run", "loud", *[a for a in _cifar(cifar10_root, tmp_path) if a != "--quiet"], "--models", "teacher"]
    code, out, err = _cli(argv, capsys)
    assert code == 0
    epochs = [line for line in out.splitlines() if line.startswith("teacher epoch ")]
    assert len(epochs) == 2 and "test loss" in epochs[0] and "saved epoch_002.pt" in epochs[1]
    assert "teacher: 84,542 parameters" in out  # printed as well as stored


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--student-stages", "0"], "student stages must be between 1 and 4"),
        (["--schedule", "step"], "invalid choice"),
    ],
)
def test_the_console_script_exits_2_with_one_line(extra, needle, tmp_path, cifar10_root):
    result = run_tracin_train(["--run", "x", *_cifar(cifar10_root, tmp_path), *extra])
    _assert_one_line_error(result.returncode, result.stderr, needle)


def test_every_option_has_help():
    parser = build_train_parser()
    actions = {option: action for action in parser._actions for option in action.option_strings}
    assert set(OPTIONS) <= set(actions)
    assert all(actions[option].help for option in OPTIONS)
    text = parser.format_help()
    assert all(option in text for option in OPTIONS)


@pytest.mark.parametrize("name", ["", ".", "..", "../elsewhere", "a/b", "/abs/dir"])
def test_a_run_name_must_be_a_plain_name(cifar10_root, tmp_path, capsys, name):
    (tmp_path / "other_run").mkdir()
    (tmp_path / "other_run" / "keep.txt").write_text("mine")
    code, _, err = _cli(["--run", name, *_cifar(cifar10_root, tmp_path), "--overwrite"], capsys)
    _assert_one_line_error(code, err, "--run must be a plain name" if name else "--run is given an empty value")
    assert (tmp_path / "other_run" / "keep.txt").read_text() == "mine"


def test_overwrite_removes_only_folders_tracin_train_made(cifar10_root, tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    code, _, err = _cli(
        ["--run", "notes", *_cifar(cifar10_root, tmp_path), "--models", "teacher", "--overwrite"], capsys
    )
    _assert_one_line_error(code, err, "is not a tracin-train run")
    assert (folder / "thesis.tex").read_text() == "months of work"


@pytest.mark.parametrize("status", ["done", "partial", "pending"])
def test_a_students_own_teacher_edited_in_place_is_refused(tiny_run, tmp_path, fashion_mnist_root, capsys, status):
    """Round 40 (review): `--models student` of a run whose teacher was done trained the student from the run's
    teacher checkpoint edited in place (its sha256 no longer run.json's), without a word, as --teacher did (T01);
    round 42, T09, T10: a teacher not done (its status edited, or killed after its last save) the same."""
    run = _copy(tiny_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    record["models"]["teacher"]["status"] = status
    (run / "run.json").write_text(json.dumps(record))
    final = sorted((run / "teacher").glob("epoch_*.pt"))[-1]
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF
    final.write_bytes(bytes(data))
    argv = ["--run", run.name, "--out-root", tmp_path, "--data-root", fashion_mnist_root, *TINY_RUN_ARGS]
    before = (run / "run.json").read_bytes()
    code, _, err = _cli([*argv, "--models", "student"], capsys)
    _assert_one_line_error(code, err, f"{final} is not the checkpoint tracin-train saved")
    assert (run / "run.json").read_bytes() == before  # refused before the run is touched


def test_a_teacher_from_a_run_not_finished_is_noted(tiny_run, tmp_path):
    """Round 41, T20: --teacher RUN/teacher/epoch_NNN.pt of a teacher that has not finished training (killed
    between epochs) trained a student without a word; tracin-score and tracin-report say so of a model."""
    from tracin.training.run_folder import check_saved_by_its_run

    run = _copy(tiny_run, tmp_path)
    teacher = sorted((run / "teacher").glob("epoch_*.pt"))[-1]
    assert check_saved_by_its_run(teacher, "--teacher") == []
    record = json.loads((run / "run.json").read_text())
    record["models"]["teacher"]["status"] = "partial"  # as a kill after its last epoch, before it was marked done
    (run / "run.json").write_text(json.dumps(record))
    assert check_saved_by_its_run(teacher, "--teacher") == [
        f"note: --teacher {teacher} is a checkpoint of teacher of {run}, which has not finished training "
        "(partial, epoch 4 of 4)"
    ]


def test_a_teacher_no_model_reads_is_noted():
    """Round 41, Q01: --teacher beside --models teacher (refused: test_faults' TRAIN_MISTAKES) or for models that
    neither distil nor start from it was left unused without a word; a sweep over --distill passes one to each."""
    from tracin.commands.train import check_teacher_wanted
    from tracin.config import TrainConfig
    from tracin.options import RunOptions

    def notes(models, **config):
        return check_teacher_wanted(RunOptions(run="r", teacher="t.pt", models=models), TrainConfig(**config))

    assert notes(("student", "student_baseline")) == []
    assert notes(("student_baseline",), student_init="teacher") == []
    unread = "note: --teacher t.pt is read by no model of --models"
    assert notes(("student_baseline",))[0].startswith(f"{unread} student_baseline (a student distils from it")
    assert notes(("student",), distill="none")[0].startswith(f"{unread} student (")
    assert notes(("student", "student_baseline"), distill="self")[0].startswith(f"{unread} student,student_baseline (")


def test_a_teacher_killed_before_its_first_checkpoint_names_the_kill_not_an_edit(tiny_run, tmp_path):
    """Round 41, T32: --teacher RUN/teacher/init.pt of a teacher killed in its first epoch (init.pt saved,
    its sha256 recorded with the first checkpoint) was refused as 'run.json was edited', with no remedy."""
    from tracin.errors import CheckpointError
    from tracin.training.run_folder import check_saved_by_its_run

    run = _copy(tiny_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    teacher = record["models"]["teacher"]
    teacher.update(status="pending", epoch=0, checkpoints=[])  # run.json as a kill in epoch 1 leaves it
    del teacher["sha256"]
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError) as refused:
        check_saved_by_its_run(run / "teacher" / "init.pt", "--teacher")
    assert str(refused.value) == (
        f"--teacher {run / 'teacher' / 'init.pt'} is not a checkpoint {run / 'run.json'} lists of teacher (its "
        "untrained weights, which run.json records with the first epoch's checkpoint): it lists none of teacher "
        "yet: finish training it (tracin-train --resume)"
    )


@pytest.mark.parametrize("edit", ["a link to a link", "run.json of another format", "run.json damaged", "no run.json"])
def test_a_teacher_in_a_run_is_checked_however_it_is_reached(tiny_run, tmp_path, edit):
    """Round 42, T01, T02, T05: --teacher given as a link to the run's epoch file, itself a link to an edited
    copy, or in a run whose run.json was edited to another format, damaged or removed, trained a student from
    the edited teacher without a word (the run was seen only where the path ends, or as no run at all)."""
    from tracin.errors import TracinError
    from tracin.training.run_folder import check_saved_by_its_run

    run = _copy(tiny_run, tmp_path)
    final = sorted((run / "teacher").glob("epoch_*.pt"))[-1]
    edited = tmp_path / "edited.pt"
    edited.write_bytes(final.read_bytes()[:-1] + bytes([final.read_bytes()[-1] ^ 1]))
    given, said = final, f"{final} is not the checkpoint tracin-train saved"
    if edit == "a link to a link":
        final.unlink()
        final.symlink_to(edited)
        given = tmp_path / "mine.pt"
        given.symlink_to(final)
    else:
        final.write_bytes(edited.read_bytes())
    if edit == "run.json of another format":
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**record, "format": "tracin-run-x"}))
        said = f"{run / 'run.json'}: format: 'tracin-run' was expected"
    elif edit == "run.json damaged":
        (run / "run.json").write_text((run / "run.json").read_text()[:40])
        said = f"{run / 'run.json'}: not valid JSON"
    elif edit == "no run.json":
        (run / "run.json").unlink()
        said = f"{final} is a checkpoint in the model folder teacher of {run}, which has no run.json to check it"
    with pytest.raises(TracinError, match=re.escape(said)):
        check_saved_by_its_run(given, "--teacher")
