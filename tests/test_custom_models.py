"""A user's own model factories (tracin-train --model/--student-model MODULE:FUNCTION): trained, scored
exactly (against the torch.func reference) and never imported because a run folder names them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tracin.config import DataConfig
from tracin.engine.reference import func_tracin_scores
from tracin.results.store import ScoreFile
from tracin.training.checkpoints import list_checkpoints, load_checkpoint
from tracin.training.data import load_data

from conftest import RTOL, subprocess_env
from models_for_tests import small_cnn, smaller_cnn

TESTS = Path(__file__).resolve().parent
FACTORIES = ("--model", "models_for_tests:small_cnn", "--student-model", "models_for_tests:smaller_cnn")
ARGS = (
    "--dataset",
    "fashion-mnist",
    "--train-subset",
    "128",
    "--test-subset",
    "32",
    "--epochs",
    "2",
    "--save-every",
    "1",
    "--batch-size",
    "32",
    "--quiet",
)


def env() -> dict:
    return subprocess_env(PYTHONPATH=str(TESTS))


def run(tool: str, *args) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name(tool)), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env(), cwd=TESTS)


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, fashion_mnist_root) -> Path:
    out = tmp_path_factory.mktemp("custom")
    result = run(
        "tracin-train", "--run", "own", "--out-root", out, "--data-root", fashion_mnist_root, *ARGS, *FACTORIES
    )
    assert result.returncode == 0, result.stderr
    return out / "own"


def test_the_factories_build_the_teacher_and_the_students(custom_run):
    record = json.loads((custom_run / "run.json").read_text())
    assert (
        record["config"]["arch"] == "models_for_tests:small_cnn"
        and record["config"]["student_arch"] == "models_for_tests:smaller_cnn"
    )
    teacher = load_checkpoint(list_checkpoints(custom_run / "teacher")[-1])["model"]
    student = load_checkpoint(list_checkpoints(custom_run / "student")[-1])["model"]
    assert {k: v.shape for k, v in teacher.items()} == {k: v.shape for k, v in small_cnn(10, 1).state_dict().items()}
    assert {k: v.shape for k, v in student.items()} == {k: v.shape for k, v in smaller_cnn(10, 1).state_dict().items()}


def test_scoring_needs_the_users_consent_and_then_equals_the_reference(custom_run, tmp_path):
    out = tmp_path / "tracin.h5"
    refused = run(
        "tracin-score",
        "--run",
        custom_run,
        "--scores",
        out,
        "--models",
        "teacher",
        "--variants",
        "raw",
        "--topk",
        "3",
        "--train-subset",
        "32",
        "--test-subset",
        "8",
        "--device",
        "cpu",
        "--quiet",
    )
    assert (
        refused.returncode == 2
        and "--allow-model models_for_tests:small_cnn" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    assert not out.exists()
    result = run(
        "tracin-score",
        "--run",
        custom_run,
        "--scores",
        out,
        "--models",
        "teacher",
        "--variants",
        "raw",
        "--topk",
        "3",
        "--train-subset",
        "32",
        "--test-subset",
        "8",
        "--device",
        "cpu",
        "--quiet",
        "--allow-model",
        "models_for_tests:small_cnn",
        "--allow-model",
        "os:system",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] == [  # round 19, R8: the needless one was not told
        "tracin-score: note: --allow-model os:system was not used: no model this command built is made by it"
    ]
    data = load_data(DataConfig.from_dict(json.loads((custom_run / "run.json").read_text())["data_config"]))
    with ScoreFile.open_read(out) as store:
        scores = store.model("teacher").matrix()[()]
        train_at = [data.train.index.tolist().index(i) for i in store.train_index]
        test_at = [data.test.index.tolist().index(i) for i in store.test_index]
    train, test = data.train.subset(torch.tensor(train_at)), data.test.subset(torch.tensor(test_at))
    payloads = [load_checkpoint(p) for p in list_checkpoints(custom_run / "teacher")]
    stack = lambda split: torch.stack([split[i][0] for i in range(len(split))])  # noqa: E731
    reference = func_tracin_scores(
        small_cnn(10, 1),
        [(p["model"], p["lr"]) for p in payloads],
        (stack(train), train.labels),
        (stack(test), test.labels),
    )
    np.testing.assert_allclose(scores, reference.numpy(), rtol=RTOL, atol=1e-6 * np.abs(reference.numpy()).max())


def test_a_teacher_factory_without_a_student_factory_is_refused(tmp_path, fashion_mnist_root):
    result = run(
        "tracin-train",
        "--run",
        "half",
        "--out-root",
        tmp_path,
        "--data-root",
        fashion_mnist_root,
        *ARGS,
        "--model",
        "models_for_tests:small_cnn",
    )
    assert (
        result.returncode == 2
        and "give the students' factory too" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_factory_that_cannot_be_imported_is_one_line(tmp_path, fashion_mnist_root):
    result = run(
        "tracin-train",
        "--run",
        "bad",
        "--out-root",
        tmp_path,
        "--data-root",
        fashion_mnist_root,
        *ARGS,
        "--model",
        "no_such_module:f",
        "--student-model",
        "models_for_tests:smaller_cnn",
    )
    assert result.returncode == 2 and "cannot be imported" in result.stderr and "Traceback" not in result.stderr


def test_a_teacher_built_by_code_not_allowed_is_refused_before_the_run_is_written(
    custom_run, tmp_path, fashion_mnist_root
):
    """Round 41, X13: a --teacher whose factory the command did not allow was refused only after run.json and
    data.json were written, so the command given again with another teacher met 'another configuration'."""
    import shutil

    teacher = tmp_path / "kept.pt"  # outside any run: its own record
    shutil.copy(list_checkpoints(custom_run / "teacher")[-1], teacher)
    out = tmp_path / "runs"
    refused = run(
        "tracin-train",
        "--run",
        "new",
        "--out-root",
        out,
        "--data-root",
        fashion_mnist_root,
        *ARGS,
        "--teacher",
        teacher,
        "--models",
        "student",
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "'models_for_tests:small_cnn', an import path" in refused.stderr, refused.stderr
    assert not (out / "new" / "run.json").exists() and not (out / "new" / "data.json").exists()
