"""The edges a user's mistake or someone else's file reaches (issue #27): nothing is written through, or
removed behind, a link someone placed; two score files in one folder keep their own reports; options are
checked before any work; a memory budget that would multiply the work is said before it starts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracin.commands.score import plan_warning
from tracin.engine.blocks import MemoryPlan, work_factor
from tracin.errors import TracinError
from tracin.files import refuse_link, report_path
from tracin.results.store import ScoreFile
from tracin.results.store.digests import seal, seal_attributes, seal_group

from conftest import subprocess_env


def run(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name(name)), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=cwd)


def run_with_fault(fault: str, name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """run() with TRACIN_FAULT set (tracin/faults.py: a kill or full disk at an exact point)."""
    command = [str(Path(sys.executable).with_name(name)), *map(str, args)]
    env = {**subprocess_env(), "TRACIN_FAULT": fault}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_run_folder_that_is_a_link_is_refused_before_anything_even_with_overwrite(tmp_path):
    colleague = tmp_path / "colleague_run"
    (colleague / "teacher").mkdir(parents=True)
    (colleague / "run.json").write_text('{"format": "tracin-run"}')
    (colleague / "teacher" / "epoch_002.pt").write_bytes(b"weights")
    before = digest(colleague)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mine").symlink_to(colleague, target_is_directory=True)
    for extra in ((), ("--overwrite",), ("--resume",)):
        result = run("tracin-train", "--run", "mine", "--out-root", "runs", *extra, cwd=tmp_path)
        assert_one_line(result, "is a symbolic link")
    assert digest(colleague) == before and (tmp_path / "runs" / "mine").is_symlink()
    (tmp_path / "runs" / "mine").unlink()
    (tmp_path / "runs" / ".mine.replaced").symlink_to(colleague, target_is_directory=True)
    assert_one_line(
        run("tracin-train", "--run", "mine", "--out-root", "runs", "--overwrite", cwd=tmp_path), "is a symbolic link"
    )
    assert digest(colleague) == before


def test_a_link_planted_inside_a_run_folder_is_refused_before_a_resume_writes(tmp_path, fashion_mnist_root):
    """Red-team find L15: resuming a killed run appended its epoch line to a colleague's file through a
    train.log link planted in the model's folder."""
    from tracin.files import append_line

    args = ["--run", "r", "--out-root", "ck", "--dataset", "fashion-mnist", "--data-root", fashion_mnist_root]
    args += ["--train-subset", "100"]
    args += ["--test-subset", "40", "--width", "4", "--epochs", "2", "--batch-size", "32", "--no-augment"]
    args += ["--models", "teacher", "--device", "cpu", "--quiet"]
    command = [str(Path(sys.executable).with_name("tracin-train")), *map(str, args)]
    killed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**subprocess_env(), "TRACIN_FAULT": "train-epoch:1:kill"},
    )  # fmt: skip
    assert killed.returncode != 0 and (tmp_path / "ck" / "r" / "teacher").is_dir(), killed.stderr[-2000:]
    victim = tmp_path / "colleague.txt"
    victim.write_text("precious\n")
    log = tmp_path / "ck" / "r" / "teacher" / "train.log"
    log.unlink(missing_ok=True)
    log.symlink_to(victim)
    assert_one_line(run("tracin-train", *args, cwd=tmp_path), "train.log is a symbolic link")
    assert victim.read_text() == "precious\n"
    with pytest.raises(TracinError, match="is a symbolic link"):  # a link placed after the checks
        append_line(log, "epoch line")
    assert victim.read_text() == "precious\n"
    log.unlink()
    os.link(victim, log)  # red-team round 3, F1: a hard link is the same file under a second name
    assert_one_line(run("tracin-train", *args, cwd=tmp_path), "train.log is a hard link")
    with pytest.raises(TracinError, match="is a hard link"):
        append_line(log, "epoch line")
    assert victim.read_text() == "precious\n"


def test_append_line_refuses_a_pipe_without_waiting_for_a_reader(tmp_path):
    from tracin.files import append_line

    os.mkfifo(tmp_path / "train.log")
    with pytest.raises(TracinError, match="not a regular file"):
        append_line(tmp_path / "train.log", "epoch line")


def test_tracin_train_refuses_a_run_json_that_is_a_pipe_without_waiting_for_a_writer(tiny_run, tmp_path):
    """Round 31, Q8: run.json replaced by a FIFO, the same tracin-train command waited for ever (reading it to
    see whether the folder is this tool's); it is refused in one line, with --overwrite too, and so is one
    nested too deep to parse (J11: a RecursionError traceback)."""
    shutil.copytree(tiny_run, tmp_path / "run")
    (tmp_path / "run" / "run.json").unlink()
    os.mkfifo(tmp_path / "run" / "run.json")
    args = ("--run", "run", "--out-root", tmp_path, "--dataset", "fashion-mnist", "--width", "4", "--device", "cpu")
    assert_one_line(run("tracin-train", *args, cwd=tmp_path), "run.json is not a regular file")
    assert_one_line(run("tracin-train", *args, "--overwrite", cwd=tmp_path), "is not a tracin-train run")
    assert (tmp_path / "run" / "run.json").is_fifo()
    (tmp_path / "run" / "run.json").unlink()  # round 31, J11: nested deeper than the parser goes, a traceback
    (tmp_path / "run" / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line(run("tracin-train", *args, cwd=tmp_path), "run.json: not valid JSON")
    assert_one_line(run("tracin-train", *args, "--overwrite", cwd=tmp_path), "is not a tracin-train run")


def test_score_and_report_refuse_a_run_folder_that_is_a_link(tiny_run, tiny_scores, tmp_path):
    """A red-team find: `--run` naming a link to a colleague's run made tracin-score write its score file and
    lock there, and with --overwrite replace the colleague's finished score file; tracin-report rewrote the
    colleague's reports. Every command locks its run folder, and a lock's target that is a link is refused."""
    colleague = tmp_path / "colleague"
    shutil.copytree(tiny_run, colleague / "run")
    shutil.copy(tiny_scores, colleague / "run" / "tracin.h5")
    before = digest(colleague)
    (tmp_path / "mine").symlink_to(colleague / "run", target_is_directory=True)
    for extra in ((), ("--overwrite",)):
        assert_one_line(
            run("tracin-score", "--run", "mine", "--device", "cpu", *extra, cwd=tmp_path), "is a symbolic link"
        )
    assert_one_line(run("tracin-report", "--run", "mine", "--device", "cpu", cwd=tmp_path), "is a symbolic link")
    assert_one_line(run("tracin-validate", "--run", "mine", "--device", "cpu", cwd=tmp_path), "is a symbolic link")
    assert digest(colleague) == before and sorted(p.name for p in colleague.iterdir()) == ["run"]


def test_every_command_that_loads_a_model_checks_its_architecture_against_the_run(
    tiny_run, tmp_path, fashion_mnist_root
):
    """A red-team find: with run.json's model_configs changed, tracin-score refused, but tracin-eval and
    tracin-validate used the checkpoints' own architecture without a word."""
    shutil.copytree(tiny_run, tmp_path / "run")
    data = ("--data-root", fashion_mnist_root, "--device", "cpu")
    scored = run(
        "tracin-score",
        "--run",
        "run",
        "--scores",
        "tracin.h5",
        "--models",
        "student",
        "--topk",
        "5",
        *data,
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["model_configs"]["student"]["width"] *= 2
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    before = digest(tmp_path)
    fragment = "is not the architecture the run recorded for student: width"
    assert_one_line(
        run("tracin-eval", "--run", "run", "--eval-dataset", "fashion-mnist", *data, cwd=tmp_path), fragment
    )
    validate = ("--scores", "tracin.h5", "--models", "student", "--subsets", "0", "--test-examples", "1", "--k", "2")
    assert_one_line(run("tracin-validate", "--run", "run", *validate, *data, cwd=tmp_path), fragment)
    assert_one_line(
        run("tracin-score", "--run", "run", "--scores", "new.h5", "--topk", "5", *data, cwd=tmp_path), fragment
    )
    assert digest(tmp_path) == before


def test_a_score_file_that_is_a_link_is_refused(tiny_run, tmp_path):
    colleague = tmp_path / "colleague.h5"
    colleague.write_bytes(b"a colleague's finished score file")
    (tmp_path / "tracin.h5").symlink_to(colleague)
    for extra in ((), ("--overwrite",)):
        result = run(
            "tracin-score",
            "--run",
            tiny_run,
            "--scores",
            tmp_path / "tracin.h5",
            "--device",
            "cpu",
            *extra,
            cwd=tmp_path,
        )
        assert_one_line(result, "is a symbolic link")
    assert colleague.read_bytes() == b"a colleague's finished score file"
    with pytest.raises(TracinError, match="is a symbolic link"):  # tracin-validate and tracin-report open it so
        ScoreFile.open_read_write(tmp_path / "tracin.h5")


def test_refuse_link_refuses_a_hard_link_but_not_the_copy_a_killed_salvage_kept(tmp_path):
    (tmp_path / "colleague.h5").write_bytes(b"theirs")
    os.link(tmp_path / "colleague.h5", tmp_path / "tracin.h5")
    with pytest.raises(TracinError, match="is a hard link"):
        refuse_link(tmp_path / "tracin.h5", "the score file")
    (tmp_path / "colleague.h5").rename(tmp_path / "tracin.h5.damaged")  # salvage links NAME.damaged first
    refuse_link(tmp_path / "tracin.h5", "the score file")
    refuse_link(tmp_path / "tracin.h5.damaged", "in the run folder,")  # as a resume of the run sees it
    refuse_link(tmp_path, "the run folder")  # a folder's link count is its subfolders


def test_a_score_file_that_is_a_pipe_is_named_as_such(tiny_run, tmp_path):
    os.mkfifo(tmp_path / "tracin.h5")
    for command in ("tracin-report", "tracin-validate", "tracin-explore"):
        result = run(command, "--run", tiny_run, "--scores", tmp_path / "tracin.h5", cwd=tmp_path)
        assert_one_line(result, "is not a regular file")


def test_refuse_link_names_the_target(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TracinError, match="elsewhere"):
        refuse_link(tmp_path / "link", "the output")
    refuse_link(tmp_path / "missing", "the output")  # a path that is not there yet is fine


def test_two_score_files_in_one_folder_keep_their_own_reports(tmp_path):
    assert report_path(tmp_path / "tracin.h5", "quality_report.md") == tmp_path / "quality_report.md"
    assert report_path(tmp_path / "tracin.h5", "plots") == tmp_path / "plots"
    assert report_path(tmp_path / "kd.h5", "quality_report.md") == tmp_path / "kd.quality_report.md"
    assert report_path(tmp_path / "kd.h5", "validation.md") == tmp_path / "kd.validation.md"
    assert report_path(tmp_path / "kd.h5", "plots") == tmp_path / "kd.plots"


def test_score_files_of_one_stem_in_one_folder_are_refused_before_their_reports_collide(
    tiny_run, tiny_scores, tmp_path
):
    """Round 23, S1: a.h5, a.hdf5 and a all wrote a.quality_report.md, each replacing the other's."""
    shutil.copy(tiny_scores, tmp_path / "a.h5")
    (tmp_path / "a").write_text("a colleague's notes, not a score file")
    assert report_path(tmp_path / "a.h5", "plots") == tmp_path / "a.plots"  # a file that is not HDF5 is no conflict
    (tmp_path / "a").unlink()
    for other in ("a.hdf5", "a"):
        shutil.copy(tiny_scores, tmp_path / other)
        before = digest(tmp_path)
        result = run("tracin-report", "--run", tiny_run, "--scores", tmp_path / "a.h5", cwd=tmp_path)
        assert_one_line(result, f"a.h5 and {other} beside it would write the same reports (a.")
        assert digest(tmp_path) == before
        (tmp_path / other).unlink()
    scored = run("tracin-score", "--run", tiny_run, "--scores", tmp_path / "a.hdf5", "--device", "cpu", cwd=tmp_path)
    assert_one_line(scored, "a.hdf5 and a.h5 beside it would write the same reports (a.plots)")
    assert sorted(os.listdir(tmp_path)) == ["a.h5"]  # refused before the scoring, not even a lock left
    for side in ("x.replacing", "x.damaged", "x.damaged-2"):  # round 24, N8: tracin's own files beside x
        shutil.copy(tiny_scores, tmp_path / side)
    assert report_path(tmp_path / "x", "plots") == tmp_path / "x.plots"


@pytest.mark.parametrize(
    "command, args",
    [
        ("tracin-score", ("--run", "RUN", "--scores", "y.replacing")),
        ("tracin-score", ("--run", "RUN", "--scores", "y.damaged")),
        ("tracin-report", ("--run", "RUN", "--scores", "y.damaged-3")),
        ("tracin-validate", ("--run", "RUN", "--scores", "y.damaged")),
        ("tracin-explore", ("--scores", "y.replacing")),
        ("tracin-notebooks", ("y.damaged", "out")),
    ],
)
def test_the_names_tracin_score_keeps_for_itself_are_not_score_files(tiny_run, tiny_scores, tmp_path, command, args):
    """Round 25, S04, S13: tracin-score --scores y.replacing made a file that a later --overwrite of y deleted
    (or adopted, its settings and all); y.damaged's reports were replaced by y's."""
    shutil.copy(tiny_scores, tmp_path / args[-1 if command != "tracin-notebooks" else 0])
    before = digest(tmp_path)
    result = run(command, *(str(tiny_run) if a == "RUN" else a for a in args), cwd=tmp_path)
    assert_one_line(result, "tracin-score keeps NAME.replacing and NAME.damaged(-N) beside a score file NAME")
    assert digest(tmp_path) == before


def test_a_bad_option_is_refused_before_any_scoring(tiny_run, tmp_path):
    result = run(
        "tracin-score",
        "--run",
        tiny_run,
        "--scores",
        tmp_path / "x.h5",
        "--corr-rows",
        "-5",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert_one_line(result, "--corr-rows must be at least 1")
    assert list(tmp_path.iterdir()) == []  # not even a lock was left


UNREAD_OPTIONS = [  # red-team round 3: each was accepted and then not read
    ("tracin-score", ("--projector", "rademacher"), "projected mode only"),  # F2: exact mode
    ("tracin-score", ("--examples", "3"), "give --plots too"),  # F3
    ("tracin-score", ("--allow-model", "mypackage.models"), "is MODULE:FUNCTION"),  # F6
    ("tracin-train", ("--shortcut-fraction", "0.5"), "without a class nothing is stamped"),  # F4
    ("tracin-train", ("--shortcut-patch", "5"), "without a class nothing is stamped"),
    ("tracin-score", ("--group", "a=fc", "--group", "a=conv1"), "--group: layer group 'a' is given twice"),  # AB10
]


@pytest.mark.parametrize("command, extra, fragment", UNREAD_OPTIONS, ids=[" ".join(c[1]) for c in UNREAD_OPTIONS])
def test_an_option_the_command_would_not_read_is_refused_before_any_work(tiny_run, tmp_path, command, extra, fragment):
    where = ("--run", tiny_run, "--scores", tmp_path / "x.h5") if command == "tracin-score" else ("--run", "r")
    assert_one_line(run(command, *where, *extra, "--device", "cpu", cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_run_json_setting_of_the_wrong_type_is_refused_by_every_reader(tiny_run, tmp_path):
    """Red-team round 3: a width edited to the string "4" passed tracin-score, which reads the width from the
    checkpoints; every reader types all of run.json's settings now."""
    from tracin.results.runs import open_trained_run

    shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pt"))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["config"]["width"] = str(record["config"]["width"])
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(TracinError, match=r"run\.json: TrainConfig field width \(set by --width\): expected int"):
        open_trained_run(str(tmp_path / "run"), None)


def test_a_checkpoint_renamed_to_another_epoch_is_refused(tiny_run, tmp_path):
    """Red-team round 3: epoch_004.pt copied over epoch_002.pt was scored with epoch 2's learning rate."""
    from tracin.training.checkpoints import CheckpointError, list_checkpoints, load_run_checkpoints

    first, second = list_checkpoints(tiny_run / "teacher")[:2]
    shutil.copy(second, tmp_path / first.name)
    with pytest.raises(CheckpointError, match=f"holds epoch {int(second.stem[6:])}, not the {int(first.stem[6:])}"):
        load_run_checkpoints([tmp_path / first.name], "teacher", _digest(tiny_run))


def _digest(run_folder: Path) -> str:
    return json.loads((run_folder / "run.json").read_text())["data_fingerprint"]["digest"]


def test_work_factor_counts_batches_against_one_pass():
    assert work_factor(n_train=1000, n_test=100, chunk=1000, block=100, batch_size=100) == 1
    assert work_factor(n_train=1000, n_test=100, chunk=1000, block=25, batch_size=100) == 4  # 4 test blocks
    assert work_factor(n_train=1000, n_test=100, chunk=10, block=100, batch_size=100) == 10  # batches of 10
    assert work_factor(n_train=96, n_test=24, chunk=1, block=3, batch_size=128) == 8 * 96


def test_a_plan_that_multiplies_the_work_is_said_before_it_starts():
    slow = MemoryPlan(budget=2_000_000, source="--max-memory-gb", chunk=1, block=3, kept_bytes=100)
    warning = plan_warning("teacher", slow, 96, 24, 128)
    assert warning.startswith("warning: teacher: memory") and "768 times the gradient batches of one pass" in warning
    fine = MemoryPlan(budget=2**30, source="auto", chunk=96, block=24, kept_bytes=100)
    assert plan_warning("teacher", fine, 96, 24, 128) is None


def test_a_data_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "not_a_folder").write_text("x")
    result = run(
        "tracin-train",
        "--run",
        "r",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        tmp_path / "not_a_folder",
        "--train-subset",
        "64",
        "--test-subset",
        "32",
        cwd=tmp_path,
    )
    assert_one_line(result, "is a file, not a folder")


def test_a_model_factory_of_the_wrong_signature_is_one_line(tmp_path, fashion_mnist_root):
    result = run(
        "tracin-train",
        "--run",
        "r",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        fashion_mnist_root,
        "--model",
        "os:getcwd",
        "--student-model",
        "os:getcwd",
        "--train-subset",
        "256",
        "--test-subset",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        cwd=tmp_path,
    )
    assert_one_line(result, "must be called as FUNCTION(num_classes=..., in_channels=...)")


REPORT = ("--randomization-train", "16", "--randomization-test", "4", "--device", "cpu", "--quiet")


def report_table(path: Path) -> bytes:
    with ScoreFile.open_read(path) as store:
        return store.read_table("quality_report").tobytes()


@pytest.fixture(scope="module")
def reported(tiny_run, tiny_scores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reported") / "tracin.h5"
    shutil.copy(tiny_scores, out)
    stale = out.parent / ".quality_report.md.tracin-x1y2.tmp"  # red-team K10b: a killed report's temporary stayed
    stale.write_text("half a report")
    result = run("tracin-report", "--run", tiny_run, "--scores", out, *REPORT, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not stale.exists() and f"removed {stale}" in result.stdout
    return out


@pytest.mark.parametrize("write", [3, 8])
def test_a_full_disk_inside_hdf5_during_report_is_salvaged_by_the_same_command(
    tiny_run, tiny_scores, reported, tmp_path, write
):
    """A full disk while tracin-report writes its randomization leaves that group unreadable; the same command
    salvages the file (only its own groups were damaged, so the file stays finished) and finishes it."""
    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    env_fault = {**subprocess_env(), "TRACIN_FAULT": f"h5-write:{write}:enospc"}
    failed = subprocess.run(
        [str(Path(sys.executable).with_name("tracin-report")), "--run", str(tiny_run), "--scores", str(out), *REPORT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_fault,
    )
    assert_one_line(failed, f"No space left on device ({out})")  # the file, not its object (round 38, K03)
    again = run("tracin-report", "--run", tiny_run, "--scores", out, *REPORT, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert report_table(out) == report_table(reported)


def test_report_outputs_that_are_links_are_refused(tmp_path):
    """tracin-report and tracin-validate write beside the score file: a planted plots link is not written into."""
    from tracin.commands.report import write_quality_files
    from tracin.commands.validate import write_validation_report

    colleague = tmp_path / "colleague"
    colleague.mkdir()
    (tmp_path / "plots").symlink_to(colleague, target_is_directory=True)
    for write in (
        lambda: write_quality_files(tmp_path / "tracin.h5", None),
        lambda: write_validation_report(tmp_path / "tracin.h5", None, None),
    ):
        with pytest.raises(TracinError, match="is a symbolic link"):
            write()
    assert list(colleague.iterdir()) == []


# --- score files changed by hand (red-team finds: tracebacks in tracin-explore, silent acceptance in
# tracin-report) ------------------------------------------------------------------------------------------------


def _del(h5, name):
    del h5[name]


def _set(name, value):
    def change(h5):
        data = h5[name][()]
        data[0] = value
        del h5[name]
        h5.create_dataset(name, data=data)

    return change


def _retyped(name, dtype):
    def change(h5):
        data = h5[name][()].astype(dtype)
        del h5[name]
        h5.create_dataset(name, data=data)

    return change


def _attr(name, value):
    return lambda h5: h5.attrs.__setitem__(name, value)


def _group_attr(group, name, value):
    return lambda h5: h5[group].attrs.__setitem__(name, value)


def _cut_top_index(h5):
    data = h5["teacher/topk/test_top_index"][()]
    del h5["teacher/topk/test_top_index"]
    h5.create_dataset("teacher/topk/test_top_index", data=data[:, :-1])


def _twice_in_a_row(h5):
    data = h5["teacher/topk/test_top_index"][()]
    data[0, 1] = data[0, 0]
    h5["teacher/topk/test_top_index"][...] = data


def _set_done_false(h5):
    h5["teacher/done"][0, 0] = False


def _edited(name, change):
    """An edit in range, in place (the dataset and its digests kept): round 10's H10, H12-H15."""

    def edit(h5):
        data = h5[name][()]
        h5[name][...] = change(data)

    return edit


def _copied_from_another_file(name, attributes_resealed=False):
    """Round 23, Q1, Q3: the table `name` as another score file holds it (the same values, sealed there: another
    file's root attributes), copied in over this file's with its digests; its attributes' digests (bound to
    their file since round 26) sealed again here when `attributes_resealed`, so that the values' are checked."""

    def copy(h5):
        import h5py

        with h5py.File("other.h5", "w", driver="core", backing_store=False) as other:
            other.attrs.update({**h5.attrs, "created": "2026-01-01T00:00:00+0000"})
            h5.copy(h5[name], other, name)
            seal(other[name]) if isinstance(other[name], h5py.Dataset) else seal_group(other[name])
            del h5[name]
            other.copy(other[name], h5, name)
        if attributes_resealed:
            seal_attributes(h5[name])

    return copy


def _attributes_from_another_file(name, key, value):
    """Round 26, F8: the attributes of `name` as another score file holds them, `key` set to `value` and sealed
    there (another file's root attributes), copied in over this file's with their digest."""

    def copy(h5):
        import h5py

        with h5py.File("other.h5", "w", driver="core", backing_store=False) as other:
            other.attrs.update({**h5.attrs, "created": "2026-01-01T00:00:00+0000"})
            h5.copy(h5[name], other, name)
            other[name].attrs[key] = value
            seal_attributes(other[name])
            h5[name].attrs.update(dict(other[name].attrs))

    return copy


def _other_class(labels):
    labels[3] = (labels[3] + 1) % 10
    return labels


def _quality_cell(rows):
    rows[0]["identical_class_top1"] = 0.99
    return rows


def _without_digests(h5):
    del h5["student/last_loss"].attrs["digests"]


def _relabelled(version):
    """Round 16, F1: every digest stripped, a prediction edited, and the file relabelled an older format,
    whose files were read without digests."""

    def damage(h5):
        for item in [h5, *(h5[name] for name in _names(h5))]:
            for key in ("digests", "attrs_digest", "members"):
                if key in item.attrs:
                    del item.attrs[key]
        h5["teacher/test_prediction"][0] = (h5["teacher/test_prediction"][0] + 1) % 10
        h5.attrs["format_version"] = version

    return damage


def _names(h5):
    names = []
    h5.visit(names.append)
    return names


HAND_DAMAGE = [
    ("train_index deleted", lambda h5: _del(h5, "train_index"), "/train_index is missing"),
    ("clean labels deleted", lambda h5: _del(h5, "train_clean_labels"), "/train_clean_labels is missing"),  # N18
    ("train_index out of range", _set("train_index", -5), "negative or repeated index"),
    ("test_labels beyond the classes", _set("test_labels", 77), "/test_labels holds labels outside 0..9"),
    ("classes not JSON", _attr("classes", np.array([b"a"])), "is not a JSON list of class names"),
    ("a newer format", _attr("format_version", 999), "has format version 999"),
    ("stripped, labelled version 1", _relabelled(1), "has format version 1, whose values and attributes carry no"),
    ("stripped, labelled version 2", _relabelled(2), "has format version 2, whose attributes carry no digests"),
    ("labelled version 3", _attr("format_version", 3), "has format version 3, whose digests are not bound to"),
    ("labelled version 4", _attr("format_version", 4), "has format version 4, whose attributes' digests are not"),
    ("a quality table of another file", _copied_from_another_file("quality"), "/quality has attributes changed"),
    ("its values of another file", _copied_from_another_file("quality", True), "/quality was changed after it"),
    ("a model's top-k of another file", _copied_from_another_file("teacher/topk"), "/teacher/topk has attributes"),
    ("a model of another file", _copied_from_another_file("teacher"), "/teacher has attributes"),  # round 25, V22
    (
        "a comparison's attributes of another file",
        _attributes_from_another_file("comparison/teacher__student", "max_rows", 500),
        "/comparison/teacher__student has attributes",
    ),
    ("top-k tables of two widths", _cut_top_index, "the test_* tables differ in shape"),
    ("a NaN score", _set("teacher/scores", np.nan), "/teacher/scores holds non-finite values"),
    ("an infinite self-influence", _set("student/self_influence", np.inf), "/student/self_influence holds non-finite"),
    ("a NaN in a top-k table", _set("teacher/topk/train_top_score", np.nan), "train_top_score holds non-finite"),
    ("an example twice in a top-k row", _twice_in_a_row, "test_top_index ranks an example twice in one row"),
    ("a model's scores deleted", lambda h5: _del(h5, "teacher/scores"), "/teacher/scores is missing"),  # red-team H1
    ("scores retyped to float16", _retyped("teacher/scores", np.float16), "holds float16, not the float32"),  # F5
    ("a prediction beyond the classes", _set("teacher/test_prediction", 50), "test_prediction holds classes outside"),
    ("a confidence above 1", _set("teacher/test_confidence", 7.5), "test_confidence holds values outside [0, 1]"),
    ("a class named twice", _attr("classes", '["a", "a", "b"]'), "names a class twice"),
    ("an unknown variant", _group_attr("teacher", "variants", '["nonexistent"]'), "names nonexistent, not a score"),
    ("a block not done in a complete model", _set_done_false, "marked complete, but"),  # H10
    ("settings not JSON", _attr("settings", "{bad"), "the attribute 'settings' is not a JSON object"),  # round 6 H10
    ("settings a list", _attr("settings", "[1, 2]"), "the attribute 'settings' is not a JSON object"),  # H16
    ("a confidence edited in range", _edited("student/test_confidence", lambda v: v[::-1]), "confidence was changed"),
    ("a prediction edited in range", _edited("teacher/test_prediction", _other_class), "prediction was changed"),
    ("a self-influence tripled", _edited("teacher/self_influence", lambda v: v * 3), "self_influence was changed"),
    ("a last loss tripled", _edited("teacher/last_loss", lambda v: v * 3), "/teacher/last_loss was changed"),
    ("a quality cell edited", _edited("quality", _quality_cell), "/quality was changed after it was written"),
    ("a test label edited in range", _edited("test_labels", _other_class), "/test_labels was changed"),
    ("proponents reversed", _edited("teacher/topk/test_top_index", lambda v: v[:, ::-1]), "test_top_index was"),
    ("digests deleted", _without_digests, "/student/last_loss has no digests"),
    ("a shortcut mode added", _attr("shortcut_mode", "inherit"), "/ has attributes changed after"),  # round 12 F29
    (
        "a model's variants edited",
        _group_attr("teacher", "variants", '["cosine"]'),
        "/teacher has attributes or members",
    ),
    ("a model's variants deleted", lambda h5: h5["teacher"].attrs.__delitem__("variants"), "/teacher has attrib"),
    ("a table's settings edited", lambda h5: h5["quality"].attrs.__setitem__("x", 1), "/quality has attributes"),
    # round 13, H6, H9-H11: a finished model's dataset deleted was passed over, or a traceback
    ("a model's predictions deleted", lambda h5: _del(h5, "teacher/test_prediction"), "/teacher has attributes or"),
    ("a model's last loss deleted", lambda h5: _del(h5, "student/last_loss"), "/student has attributes or members"),
    ("the comparisons deleted", lambda h5: _del(h5, "comparison"), "/comparison is missing, though it was written"),
    ("a quality table deleted", lambda h5: _del(h5, "quality"), "/quality is missing, though it was written"),  # N26
    ("a model's group self-influence deleted", lambda h5: _del(h5, "teacher/self_influence_groups"), "/teacher has"),
]


@pytest.mark.parametrize("change, fragment", [c[1:] for c in HAND_DAMAGE], ids=[c[0] for c in HAND_DAMAGE])
def test_a_score_file_changed_by_hand_is_refused_in_one_line_by_every_reader(tiny_scores, tmp_path, change, fragment):
    import h5py

    from tracin.results.store.checks import check_finished

    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    with h5py.File(out, "r+") as h5:
        change(h5)
    with pytest.raises(TracinError, match=re.escape(fragment)):
        with ScoreFile.open_read(out) as store:
            check_finished(store)  # what tracin-report, tracin-explore, tracin-validate and the notebooks call first
    with pytest.raises(TracinError, match=re.escape(fragment)):  # round 25, V22: and the Python reader
        ScoreFile.open_checked(out)


@pytest.mark.parametrize("command", ["tracin-report", "tracin-explore"])
def test_the_commands_refuse_a_changed_file_without_a_traceback(tiny_run, tiny_scores, tmp_path, command):
    import h5py

    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    with h5py.File(out, "r+") as h5:
        _set("train_index", 10**12)(h5)
        seal(h5["train_index"])  # digests made again: the check behind them is still there
    before = digest(tmp_path)
    assert_one_line(run(command, "--run", tiny_run, "--scores", out, cwd=tmp_path), "not in the run's data")
    assert digest(tmp_path) == before


def test_positions_in_refuses_an_index_the_data_lacks():
    from tracin.results.runs import positions_in

    assert positions_in(np.array([30, 10]), np.array([10, 20, 30])).tolist() == [2, 0]
    for absent in ([40], [15], [5]):
        with pytest.raises(TracinError, match="not in the run's data"):
            positions_in(np.array(absent), np.array([10, 20, 30]))


# --- red-team round 4 (held out): each find is a case here ------------------------------------------------


SMALL_TRAIN = ("--dataset", "fashion-mnist", "--train-subset", "128", "--test-subset", "32", "--width", "4")
SMALL_TRAIN += ("--epochs", "2", "--batch-size", "32", "--no-augment", "--device", "cpu", "--quiet")


def test_a_sweep_folder_that_is_a_link_is_refused_before_anything(tmp_path, fashion_mnist_root):
    """L6: the sweep's runs and results went into the link's target, replacing its results.csv."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "results.csv").write_text("theirs\n")
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "s").symlink_to(victim, target_is_directory=True)
    args = ("--sweep", "s", "--vary", "temperature=1,2", "--out-root", "sw", "--data-root", fashion_mnist_root)
    assert_one_line(run("tracin-sweep", *args, *SMALL_TRAIN, cwd=tmp_path), "the sweep folder")
    assert [p.name for p in victim.iterdir()] == ["results.csv"] and (victim / "results.csv").read_text() == "theirs\n"


def _colleagues(path):
    path.write_text("a colleague's notes\n")


@pytest.mark.parametrize(
    "name, plant",
    [("results.png", os.mkdir), ("results.md", os.mkfifo), ("results.md", _colleagues), ("results.csv", _colleagues)],
)
def test_a_folder_or_fifo_at_a_sweep_output_is_refused_before_anything(tmp_path, fashion_mnist_root, name, plant):
    """Round 17, S6, S7: a folder at results.png was a traceback after results.csv and .md were rewritten; a
    FIFO at results.md was replaced without a word."""
    (tmp_path / "sw" / "s").mkdir(parents=True)
    plant(tmp_path / "sw" / "s" / name)
    args = ("--sweep", "s", "--vary", "temperature=1,2", "--out-root", "sw", "--data-root", fashion_mnist_root)
    fragment = "exists and is not a file" if plant is not _colleagues else "exists and is not a"
    assert_one_line(run("tracin-sweep", *args, *SMALL_TRAIN, cwd=tmp_path), f"{name} {fragment}")
    assert [p.name for p in (tmp_path / "sw" / "s").iterdir()] == [name]  # nothing trained


@pytest.mark.parametrize(
    "vary, fragment",
    [
        ("train_subset=128,999999", "train subset of 999999"),  # A25: refused after the first run trained
        ("width=4,100000000", "cannot be built"),  # A30: a traceback after the first run trained
    ],
)
def test_every_run_of_a_sweep_is_checked_before_the_first_trains(tmp_path, fashion_mnist_root, vary, fragment):
    args = ("--sweep", "s", "--vary", vary, "--out-root", "sw", "--data-root", fashion_mnist_root)
    base = [word for word in SMALL_TRAIN if word not in ("--width", "4", "--train-subset", "128")]
    base += [] if vary.startswith("train_subset") else ["--train-subset", "128"]
    base += [] if vary.startswith("width") else ["--width", "4"]
    assert_one_line(run("tracin-sweep", *args, *base, cwd=tmp_path), fragment)
    assert not list(tmp_path.glob("sw/s/*/*/*.pt"))  # nothing trained


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("--width", "100000000"), "cannot be built"),  # B1: the allocator's traceback
        (("--width", "5000"), "more than the"),  # B2: killed by the out-of-memory killer
        (("--seed", str(2**64)), "seed must be in 0.."),  # G8: a traceback, and a half-made run folder
    ],
)
def test_a_model_or_seed_too_large_is_one_line_and_writes_nothing(tmp_path, fashion_mnist_root, extra, fragment):
    args = ("--run", "r", "--out-root", "runs", "--data-root", fashion_mnist_root, *SMALL_TRAIN, *extra)
    assert_one_line(run("tracin-train", *args, cwd=tmp_path), fragment)
    assert not (tmp_path / "runs" / "r").exists()


def test_a_score_seed_too_large_for_the_file_is_refused():
    """G21: h5py's traceback when the settings were written."""
    from tracin.config import ScoreConfig

    with pytest.raises(TracinError, match="seed must be in 0.."):
        ScoreConfig(mode="projected", proj_dim=8, seed=10**20)


def test_json_nested_too_deep_a_key_twice_or_a_pipe_is_one_line(tmp_path):
    """S13 (RecursionError), C10 (the last of two equal keys taken silently), C8/F2 (a FIFO read forever)."""
    from tracin.schemas import CLASS_MAP, RUN_JSON, load_json

    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(TracinError, match="not valid JSON"):
        load_json(tmp_path / "deep.json", RUN_JSON)
    (tmp_path / "twice.json").write_text('{"trouser": "a", "trouser": "b"}')
    with pytest.raises(TracinError, match="key 'trouser' given twice"):
        load_json(tmp_path / "twice.json", CLASS_MAP)
    os.mkfifo(tmp_path / "map.json")
    with pytest.raises(TracinError, match="--class-map .*map.json is not a regular file"):
        load_json(tmp_path / "map.json", CLASS_MAP, f"--class-map {tmp_path / 'map.json'}")


def test_every_reader_of_run_json_types_its_settings(tiny_run, tmp_path):
    """S7, S14, S15: tracin-eval read a width "four" and a checksum "yes" without a word."""
    from tracin.training.run_folder import RunPaths, read_record

    for where, key, value in (("config", "width", "four"), ("data_config", "checksum", "yes")):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pt"))
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        record[where][key] = value
        (tmp_path / "run" / "run.json").write_text(json.dumps(record))
        with pytest.raises(TracinError, match=rf"run\.json: \w+Config field {key} \(set by --[\w-]+\): expected"):
            read_record(RunPaths(tmp_path / "run"))


@pytest.mark.parametrize("plant", ["hard link", "symbolic link", "pipe"])
def test_write_in_place_never_writes_through_a_link_or_into_a_pipe(tmp_path, plant):
    """L31, L32: the page's image files were written through a hard link (a colleague's file became a PNG),
    and a symbolic link there was a traceback."""
    from tracin.files import write_in_place

    victim, path = tmp_path / "colleague.txt", tmp_path / "t0.png"
    victim.write_text("theirs")
    {"hard link": lambda: os.link(victim, path), "symbolic link": lambda: path.symlink_to(victim)}.get(
        plant, lambda: os.mkfifo(path)
    )()
    with pytest.raises(TracinError, match="hard link|symbolic link|not a regular file"):
        write_in_place(path, b"png bytes")
    assert victim.read_text() == "theirs"
    write_in_place(tmp_path / "new.png", b"png bytes")
    write_in_place(tmp_path / "new.png", b"png")
    assert (tmp_path / "new.png").read_bytes() == b"png"


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda r: r["models"].pop("student"), "models: 'student' is a required property"),
        (lambda r: r["model_configs"].clear(), "model_configs: 'teacher' is a required property"),
        (lambda r: r["param_counts"].pop("student_baseline"), "param_counts: 'student_baseline' is a required"),
    ],
    ids=["model unlisted", "model_configs emptied", "a parameter count deleted"],
)
def test_a_run_json_without_a_role_tracin_train_writes_is_refused(tiny_run, tmp_path, edit, said):
    """S19: with the student taken out of run.json's models, tracin-report still loaded and used it; round 37,
    J12, J22: tracin-eval skipped the model folder without a word, and with model_configs emptied it checked no
    checkpoint's architecture against the run's. Every run lists every role (pending until trained)."""
    from tracin.results.runs import open_trained_run

    shutil.copytree(tiny_run, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    edit(record)
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(TracinError, match=f"run.json: {re.escape(said)}"):
        open_trained_run(str(tmp_path / "run"), None)


# --- red-team round 5 (held out) -----------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["copied in", "deleted", "unlisted"])
def test_the_checkpoints_scored_are_those_run_json_lists(tiny_run, tmp_path, change):
    """K01, J04, J15: an epoch_001.pt copied in was scored; a listed checkpoint deleted, or the list emptied,
    passed unseen."""
    from tracin.results.runs import load_role_checkpoints, open_trained_run
    from tracin.training.checkpoints import CheckpointError

    shutil.copytree(tiny_run, tmp_path / "run")
    teacher = tmp_path / "run" / "teacher"
    listed = json.loads((tmp_path / "run" / "run.json").read_text())["models"]["teacher"]["checkpoints"]
    load_role_checkpoints(open_trained_run(str(tmp_path / "run"), None), "teacher", "all")
    if change == "copied in":
        shutil.copy(teacher / listed[0], teacher / "epoch_000.pt")
        fragment = "epoch_000.pt is not in"
    elif change == "deleted":
        (teacher / listed[0]).unlink()
        fragment = f"lists {listed[0]}, which"
    else:
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        record["models"]["teacher"]["checkpoints"] = []
        (tmp_path / "run" / "run.json").write_text(json.dumps(record))
        fragment = "models/teacher/checkpoints is []; expected"  # read_record: not the saved epochs
    with pytest.raises(TracinError if change == "unlisted" else CheckpointError, match=re.escape(fragment)):
        load_role_checkpoints(open_trained_run(str(tmp_path / "run"), None), "teacher", "last")


def test_a_model_not_finished_is_scored_with_a_note(tiny_run, tmp_path):
    """Round 25, A9: a teacher whose training was cut before it was marked done was scored without a word."""
    from tracin.results.runs import open_trained_run, unfinished_note

    shutil.copytree(tiny_run, tmp_path / "run")
    assert unfinished_note(open_trained_run(str(tmp_path / "run"), None), "teacher") is None
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["models"]["teacher"]["status"] = "partial"  # as a kill after its last epoch, before finish_model
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    epochs = record["models"]["teacher"]["epochs"]
    note = unfinished_note(open_trained_run(str(tmp_path / "run"), None), "teacher")
    assert note.startswith(f"note: teacher has not finished training (partial, epoch {epochs} of {epochs})")


def test_a_setting_given_fixed_and_varied_is_refused(tmp_path, fashion_mnist_root):
    """SW06, SW13 (A16b): the fixed --width was overridden in every run, never read."""
    for vary, fixed in (("width=4,8", "--width"), ("augment=on,off", "--no-augment")):
        args = ("--sweep", "s", "--vary", vary, "--out-root", "sw", "--data-root", fashion_mnist_root)
        assert_one_line(run("tracin-sweep", *args, *SMALL_TRAIN, cwd=tmp_path), f"leave the fixed {fixed} out")
    assert not (tmp_path / "sw").exists()


def test_a_sweep_name_used_with_another_grid_is_refused(tmp_path):
    """SW15: a second grid under the same name replaced the first's results.csv, .md and .png."""
    from tracin.commands.sweep import Sweep, check_grid, parse_vary

    first = Sweep("s", (parse_vary("temperature=1,2"),), (), str(tmp_path))
    for name in ("base", "temperature-1", "temperature-2"):
        (first.root / name).mkdir(parents=True)
        (first.root / name / "run.json").write_text("{}")
    check_grid(first)
    check_grid(Sweep("s", (parse_vary("temperature=1,2,5"),), (), str(tmp_path)))  # a value added
    with pytest.raises(TracinError, match="holds run temperature-1, not of this grid"):
        check_grid(Sweep("s", (parse_vary("alpha=0.3,0.5"),), (), str(tmp_path)))


def test_a_checkpoint_of_another_format_version_is_refused(tiny_run, tmp_path):
    """K12: a checkpoint with version 99 was read as version 1."""
    import torch

    from tracin.training.checkpoints import CheckpointError, list_checkpoints, load_checkpoint

    payload = torch.load(list_checkpoints(tiny_run / "teacher")[0], weights_only=True)
    torch.save({**payload, "version": 99}, tmp_path / "epoch_002.pt")
    with pytest.raises(CheckpointError, match="version 99: this tracin reads checkpoint versions 1 to 3"):
        load_checkpoint(tmp_path / "epoch_002.pt")


def test_tracin_eval_removes_the_temporary_a_killed_evaluation_left(tiny_run, tmp_path, fashion_mnist_root):
    """E09: a killed tracin-eval's .eval_fashion-mnist.csv.*.tmp stayed forever."""
    shutil.copytree(tiny_run, tmp_path / "run")
    stale = tmp_path / "run" / ".eval_fashion-mnist.csv.tracin-x1.tmp"
    stale.write_text("half a table")
    data = ("--data-root", fashion_mnist_root, "--device", "cpu")
    result = run("tracin-eval", "--run", "run", "--eval-dataset", "fashion-mnist", *data, cwd=tmp_path)
    assert result.returncode == 0 and f"removed {stale.relative_to(tmp_path)}" in result.stdout, result.stderr[-2000:]
    assert not stale.exists() and (tmp_path / "run" / "eval_fashion-mnist.csv").is_file()


# --- red-team round 6 (held out) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ('{"batch_size": "x"}', "checkpoints"),
        ('{"checkpoints": "all", "batch_size": "x", "score.loss": "ce"}', "batch_size"),
    ],
)
def test_report_refuses_settings_it_cannot_rebuild_the_scoring_from(tiny_scores, tmp_path, settings, fragment):
    """H17, H18: tracin-report's KeyError or TypeError traceback on a hand-edited settings attribute."""
    import h5py

    from tracin.commands.report import _stored_settings

    shutil.copy(tiny_scores, tmp_path / "tracin.h5")
    with h5py.File(tmp_path / "tracin.h5", "r+") as h5:
        h5.attrs["settings"] = settings
    with ScoreFile.open_read(tmp_path / "tracin.h5") as store:
        with pytest.raises(TracinError, match=f"attribute settings: .*{fragment}"):
            _stored_settings(store)


def test_a_kill_after_the_only_epoch_is_finished_by_the_same_command(tmp_path, fashion_mnist_root):
    """F08, W02: history.csv was never written, and every rerun died on it."""
    args = ("--run", "r", "--out-root", "runs", "--models", "teacher", "--data-root", fashion_mnist_root)
    args += (*SMALL_TRAIN, "--epochs", "1", "--warmup-epochs", "0")
    killed = run_with_fault("train-epoch:1:kill", "tracin-train", *args, cwd=tmp_path)
    assert killed.returncode == -9 and not (tmp_path / "runs" / "r" / "teacher" / "history.csv").exists()
    again = run("tracin-train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((tmp_path / "runs" / "r" / "teacher" / "history.csv").read_text().splitlines()) == 2


def test_tracin_notebooks_refuses_an_out_dir_that_is_a_file_or_a_link(tiny_scores, tmp_path):
    """X14: a FileExistsError traceback; X18: the pages were written into the link's target."""
    (tmp_path / "file").write_text("mine")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert_one_line(run("tracin-notebooks", tiny_scores, "file", cwd=tmp_path), "exists and is not a folder")
    assert_one_line(run("tracin-notebooks", tiny_scores, "link", cwd=tmp_path), "is a symbolic link")
    assert (tmp_path / "file").read_text() == "mine" and not list((tmp_path / "elsewhere").iterdir())


def test_a_training_batch_beyond_2_31_is_refused():
    """T09: an overflow traceback in tensor.split, after run.json and init.pt were written."""
    from tracin.config import TrainConfig

    with pytest.raises(TracinError, match="batch_size must be at most 2"):
        TrainConfig(batch_size=2**31 + 1)
    TrainConfig(batch_size=2**31)


def test_a_last_pt_that_is_not_this_runs_is_refused_before_training(tiny_run):
    """Q06: an epoch checkpoint copied over last.pt (KeyError 'resume'); Q07: an epoch beyond the run's,
    which rewrote run.json and left the run stuck."""
    import torch

    from tracin.training.checkpoints import CheckpointError, list_checkpoints
    from tracin.training.trainer import check_resumable

    last = torch.load(tiny_run / "teacher" / "last.pt", weights_only=True)
    epochs = last["epoch"]
    check_resumable(tiny_run / "teacher" / "last.pt", last, epochs)
    epoch = torch.load(list_checkpoints(tiny_run / "teacher")[0], weights_only=True)
    with pytest.raises(CheckpointError, match="resume: missing"):
        check_resumable(Path("last.pt"), epoch, epochs)
    with pytest.raises(CheckpointError, match="epoch 99 is not one of the run's"):
        check_resumable(Path("last.pt"), {**last, "epoch": 99}, epochs)


def test_a_memory_budget_beyond_the_free_memory_is_warned_about():
    """A16: --max-memory-gb 1e30 went by without a word."""
    import torch

    from tracin.commands.score import budget_warning
    from tracin.engine.blocks import MemoryPlan, free_memory

    free, _ = free_memory(torch.device("cpu"))
    assert budget_warning(MemoryPlan(free // 2, "--max-memory-gb", 1, 1, 0), torch.device("cpu")) is None
    assert budget_warning(MemoryPlan(2**100, "auto", 1, 1, 0), torch.device("cpu")) is None
    warning = budget_warning(MemoryPlan(2**100, "--max-memory-gb", 1, 1, 0), torch.device("cpu"))
    assert warning.startswith("warning: --max-memory-gb") and "available RAM" in warning


@pytest.mark.parametrize("value", ["1e300", "nan", "0", "-1", "many"])
def test_a_memory_budget_no_byte_count_holds_is_refused(value):
    """Round 29, Q12: --max-memory-gb 1e300 ended in an OverflowError's traceback."""
    from tracin.options import memory_bytes

    said = " below 1.7e\\+299" if value == "1e300" else ""  # round 30, O3: the largest said
    with pytest.raises(TracinError, match=f"--max-memory-gb must be a positive number{said} or auto, got {value}$"):
        memory_bytes(value)
    assert memory_bytes("1e-12") == 1 and memory_bytes("auto") is None


@pytest.mark.parametrize("teacher, fragment", [(None, "teacher: None is not the teacher record"), ("/etc/passwd", "")])
def test_a_students_teacher_record_edited_by_hand_is_refused(tiny_run, tmp_path, teacher, fragment):
    """C17, C19: --loss kd-train scored a distilled student's train side with cross-entropy."""
    import torch

    from tracin.training.checkpoints import CheckpointError, list_checkpoints, load_checkpoint

    payload = torch.load(list_checkpoints(tiny_run / "student")[0], weights_only=True)
    load_checkpoint(list_checkpoints(tiny_run / "student")[0], "student")
    torch.save({**payload, "teacher": teacher}, tmp_path / "epoch_002.pt")
    with pytest.raises(CheckpointError, match=re.escape(fragment or "is not the teacher record")):
        load_checkpoint(tmp_path / "epoch_002.pt", "student")
    teacher_payload = torch.load(list_checkpoints(tiny_run / "teacher")[0], weights_only=True)
    without = {key: value for key, value in payload.items() if key != "teacher"}  # the field deleted: refused too
    torch.save(without, tmp_path / "deleted.pt")
    with pytest.raises(CheckpointError, match="teacher: None is not the teacher record"):
        load_checkpoint(tmp_path / "deleted.pt", "student")
    torch.save({**teacher_payload, "teacher": "self"}, tmp_path / "teacher.pt")
    with pytest.raises(CheckpointError, match="is not null"):
        load_checkpoint(tmp_path / "teacher.pt", "teacher")


def test_score_plots_killed_before_the_figures_are_drawn_by_the_same_command(tiny_run, tmp_path):
    """R05: the rerun said the file was finished, and its figures were never drawn."""
    args = ("--run", tiny_run, "--scores", "n.h5", "--models", "teacher", "--topk", "3", "--plots", "--device", "cpu")
    args += ("--train-subset", "64", "--test-subset", "16", "--quiet")
    killed = run_with_fault("report:1:kill", "tracin-score", *args, cwd=tmp_path)
    assert killed.returncode == -9 and (tmp_path / "n.h5").is_file() and not (tmp_path / "n.plots").exists()
    stamp = (tmp_path / "n.h5").stat().st_mtime_ns
    again = run("tracin-score", *args, cwd=tmp_path)
    assert again.returncode == 0 and "drawing its figures" in again.stdout, again.stderr[-2000:]
    assert list((tmp_path / "n.plots").glob("*.png")) and (tmp_path / "n.h5").stat().st_mtime_ns == stamp


def test_run_json_lists_each_checkpoint_once():
    """J04 (round 6): a checkpoint listed twice was accepted."""
    from tracin.schemas import RUN_JSON, check

    entry = {**RUN_JSON["properties"]["models"]["additionalProperties"], "title": "run.json"}
    check({"status": "done", "epoch": 2, "epochs": 2, "checkpoints": ["epoch_002.pt"]}, entry, "run.json")
    with pytest.raises(TracinError, match="non-unique"):
        check({"status": "done", "epoch": 2, "epochs": 2, "checkpoints": ["epoch_002.pt"] * 2}, entry, "run.json")


def test_report_checks_its_output_links_before_the_work(tiny_run, tiny_scores, tmp_path):
    """L07: a link at quality_report.md was refused only after the randomization was computed and written."""
    shutil.copy(tiny_scores, tmp_path / "tracin.h5")
    (tmp_path / "theirs.md").write_text("theirs")
    os.link(tmp_path / "theirs.md", tmp_path / "quality_report.md")
    before = hashlib.sha256((tmp_path / "tracin.h5").read_bytes()).hexdigest()
    args = ("--run", tiny_run, "--scores", "tracin.h5", "--device", "cpu", "--quiet")
    assert_one_line(run("tracin-report", *args, cwd=tmp_path), "quality_report.md")
    assert hashlib.sha256((tmp_path / "tracin.h5").read_bytes()).hexdigest() == before
    assert (tmp_path / "theirs.md").read_text() == "theirs"


WRITES_BESIDE_SCORES = {  # the commands that write reports and figures beside a score file: tiny settings
    "tracin-report": (),
    "tracin-validate": ("--subsets", "3", "--test-examples", "2", "--epochs", "2"),
    "tracin-score": ("--plots", "--overwrite", "--mode", "projected", "--proj-dim", "8", "--topk", "3"),
}


@pytest.mark.parametrize(
    "command, name",
    [
        ("tracin-report", "quality_report.md"),
        ("tracin-report", "plots/quality_report.png"),
        ("tracin-validate", "validation.md"),
        ("tracin-score", "plots/report.md"),
    ],
)
def test_a_colleagues_file_at_a_reports_name_is_kept(tiny_run, tiny_scores, tmp_path, command, name):
    """Round 17, R2, R3, R5: a colleague's quality_report.md, validation.md or plots/report.md beside the score
    file was replaced without a word; each report and figure tracin writes there carries its mark, and a file
    without it is refused before any work."""
    shutil.copy(tiny_scores, tmp_path / "tracin.h5")
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("a colleague's notes")
    before = digest(tmp_path)
    args = WRITES_BESIDE_SCORES[command]
    result = run(command, "--run", tiny_run, "--scores", "tracin.h5", "--device", "cpu", "--quiet", *args, cwd=tmp_path)
    assert_one_line(result, f"{name} exists and is not a report tracin wrote; it is left as it is")
    assert digest(tmp_path) == before


@pytest.mark.parametrize("command", ["tracin-report", "tracin-validate", "tracin-score"])
def test_a_file_at_the_plots_folder_is_refused_before_the_work(tiny_run, tiny_scores, tmp_path, command):
    """Round 20, RP4, SCP, VP: a file or FIFO where the plots folder goes was a FileExistsError traceback after
    all the work."""
    shutil.copy(tiny_scores, tmp_path / "tracin.h5")
    os.mkfifo(tmp_path / "plots")
    before = digest(tmp_path)
    args = WRITES_BESIDE_SCORES[command]
    result = run(command, "--run", tiny_run, "--scores", "tracin.h5", "--device", "cpu", "--quiet", *args, cwd=tmp_path)
    assert_one_line(result, "plots exists and is not a folder, where a ")
    assert digest(tmp_path) == before


def test_validate_refuses_conditions_that_apply_to_none_of_its_models(tiny_scores):
    """P10: leave-top-k-out was skipped without a word, its --test-examples and --k unread."""
    from tracin.commands.validate import make_plan
    from tracin.options import ValidateOptions

    with ScoreFile.open_read(tiny_scores) as store:
        for conditions, models in ((("own",), ("teacher",)), (("teacher",), ("student",))):
            options = ValidateOptions(run="r", models=models, conditions=conditions, test_examples=2, k=2, subsets=3)
            assert make_plan(options, store).conditions[models[0]] == conditions
        options = ValidateOptions(
            run="r", models=("teacher",), conditions=("teacher",), test_examples=2, k=2, subsets=3
        )
        with pytest.raises(TracinError, match="apply to none of teacher"):
            make_plan(options, store)


def test_a_partial_file_whose_finished_model_was_edited_is_not_resumed(tiny_run, tiny_scores, tmp_path):
    """Round 10: resuming ranks every model again and seals it, which would have made an edited finished
    model's values the file's own; the resume refuses them first, and leaves the file as it was."""
    import h5py

    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    with h5py.File(out, "r+") as h5:
        h5.attrs["status"] = "partial"  # as a kill during the comparisons leaves it
        h5["teacher/self_influence"][0] *= 3
    before = digest(tmp_path)
    args = ["--run", tiny_run, "--scores", out, "--models", "teacher,student,student_baseline", "--per-checkpoint"]
    args += ["--variants", "raw", "--train-subset", "128", "--test-subset", "24", "--topk", "3,8", "--device", "cpu"]
    assert_one_line(run("tracin-score", *args, cwd=tmp_path), "/teacher/self_influence was changed after it")
    assert digest(tmp_path) == before


def test_the_same_tracin_score_again_on_a_finished_file_does_nothing(tiny_run, tiny_scores, tmp_path):
    """Round 10, S13 and S14: a finished file was refused ("pass --overwrite"), so a tracin-sweep --score
    interrupted after a run's scoring, or run again when finished, could not be continued."""
    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    before = digest(tmp_path)
    args = ["--run", tiny_run, "--scores", out, "--models", "teacher,student,student_baseline", "--per-checkpoint"]
    args += ["--variants", "raw", "--train-subset", "128", "--test-subset", "24", "--topk", "3,8", "--device", "cpu"]
    again = run("tracin-score", *args, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == "", again.stderr[-2000:]
    assert f"{out} is finished with these settings: nothing to do" in again.stdout
    assert digest(tmp_path) == before
    other = run("tracin-score", *args[:-4], "--topk", "3,9", "--device", "cpu", cwd=tmp_path)
    assert_one_line(other, "tables and comparisons made with --topk 3,8; pass --overwrite")  # round 34, O1: named
    rows = run("tracin-score", *args, "--corr-rows", "50", cwd=tmp_path)  # round 36, C102: the typed 50 unsaid
    assert_one_line(
        rows, "made with --topk 3,8 --corr-rows 1000; pass --overwrite to score it again with --topk 3,8 --corr-rows 50"
    )
    import h5py

    with h5py.File(out, "r+") as h5:  # round 11, E8: an edited file was "finished: nothing to do"
        h5["teacher/last_loss"][0] *= 2
    assert_one_line(run("tracin-score", *args, cwd=tmp_path), "/teacher/last_loss was changed after it was written")


def test_tables_a_command_makes_again_are_made_again_when_their_digests_differ(tiny_run, tiny_scores, tmp_path):
    """Round 11, F3: a full disk while tracin-report wrote /randomization left it differing from its digests,
    and every later tracin-report refused the file. The tables a command writes are its own to make again:
    tracin-score's (quality, detection, agreement, comparisons), tracin-report's and tracin-validate's."""
    import h5py

    from tracin.results.store.checks import check_finished

    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    with h5py.File(out, "r+") as h5:
        quality = h5["quality"][()]
        h5.attrs["status"] = "partial"  # as a full disk during the comparisons leaves it
        h5["quality"][...] = _quality_cell(quality.copy())  # a row half written
    args = ["--run", tiny_run, "--scores", out, "--models", "teacher,student,student_baseline", "--per-checkpoint"]
    args += ["--variants", "raw", "--train-subset", "128", "--test-subset", "24", "--topk", "3,8", "--device", "cpu"]
    again = run("tracin-score", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{out}: quality changed since written (a full disk?): made again" in again.stdout
    with ScoreFile.open_read(out) as store:
        check_finished(store)
        assert store.read_table("quality").tobytes() == quality.tobytes()
    with ScoreFile.open_read_write(out) as store:
        store.write_table("randomization", np.array([(b"teacher", 0.5)], dtype=[("model", "S40"), ("rho", "f8")]))
    with h5py.File(out, "r+") as h5:
        h5["randomization"][...] = np.array([(b"teacher", 0.7)], dtype=[("model", "S40"), ("rho", "f8")])
    with ScoreFile.open_read_write(out) as store:
        assert store.drop_changed(("quality", "randomization")) == ["randomization"]
        assert not store.has_table("randomization")
        check_finished(store)


def _sealed_again(_, item) -> None:
    if "digests" in item.attrs:
        seal(item)
    elif "attrs_digest" in item.attrs:
        seal_attributes(item)


def test_tracin_report_refuses_class_names_swapped_in_the_file(tiny_run, tiny_scores, tmp_path):
    """Round 11, E6: tracin-explore refused a classes attribute swapped by hand, tracin-report read it."""
    import h5py

    out = tmp_path / "tracin.h5"
    shutil.copy(tiny_scores, out)
    with h5py.File(out, "r+") as h5:
        classes = json.loads(h5.attrs["classes"])
        h5.attrs["classes"] = json.dumps([classes[1], classes[0], *classes[2:]])
        seal_attributes(h5)  # the digests made again (bound to the root's attributes, round 23; the attributes'
        h5.visititems(_sealed_again)  # too, round 26): the check behind them still holds
    before = digest(tmp_path)
    result = run("tracin-report", "--run", tiny_run, "--scores", out, "--device", "cpu", cwd=tmp_path)
    assert_one_line(result, "its classes attribute was edited, or it is not this run's file")
    assert digest(tmp_path) == before


def test_a_moved_run_is_read_from_where_its_score_file_is_when_its_old_path_holds_another(tmp_path, fashion_mnist_root):
    """Round 17, M2-M4: a run scored, moved, and another trained under its old name: explore, the notebooks
    and score --plots took the images of the run recorded in the file (the new one), and refused the file as
    "edited, or not this run's file"."""
    data = ("--out-root", "runs", "--data-root", fashion_mnist_root)
    assert run("tracin-train", "--run", "src", *data, *SMALL_TRAIN, "--models", "teacher", cwd=tmp_path).returncode == 0
    score = ("--models", "teacher", "--mode", "projected", "--proj-dim", "8", "--topk", "3", "--test-subset", "4")
    result = run("tracin-score", "--run", "runs/src", *score, "--device", "cpu", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "runs" / "src").rename(tmp_path / "runs" / "moved")
    other = ("--run", "src", *data, *SMALL_TRAIN, "--models", "teacher", "--label-noise", "0.2")
    assert run("tracin-train", *other, cwd=tmp_path).returncode == 0
    result = run("tracin-explore", "--run", "runs/moved", "--out", "page.html", cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "page.html").is_file(), result.stderr[-2000:]
