"""Installed as a user installs it: the wheel built from this tree goes into a fresh virtual environment outside
the tree, and a tiny train -> score -> report -> notebooks -> HTML runs from there (the notebooks ship inside
the package)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(command: list, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # matplotlib's font cache lives apart: the temporary venv's would list fonts inside it, and once it is
    # removed every later figure of the shared cache warns "findfont: ... not found"
    env.update(OMP_NUM_THREADS="1", MPLCONFIGDIR=str(cwd.parent / "mplconfig"))
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_built_wheel_runs_the_tiny_pipeline_to_html(tmp_path, fashion_mnist_root):
    wheels, home = tmp_path / "wheels", tmp_path / "user"
    home.mkdir()
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO],
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("tracin-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_ = tmp_path / "venv" / "bin"
    run([bin_ / "python", "-m", "pip", "install", "-q", f"{wheel}[notebooks]"], cwd=home)
    located = run([bin_ / "python", "-c", "import tracin, tracin.notebooks; print(tracin.__file__)"], cwd=home).stdout
    assert str(tmp_path / "venv") in located and str(REPO) not in located  # the installed copy, not this tree
    run(
        [
            bin_ / "tracin",
            "train",
            "--run",
            "tiny",
            "--dataset",
            "fashion-mnist",
            "--data-root",
            fashion_mnist_root,
            "--train-subset",
            "128",
            "--test-subset",
            "32",
            "--epochs",
            "2",
            "--save-every",
            "2",
            "--width",
            "4",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--label-noise",
            "0.1",
            "--quiet",
        ],
        cwd=home,
    )
    run(
        [
            bin_ / "tracin",
            "score",
            "--run",
            "checkpoints/tiny",
            "--models",
            "teacher,student,student_baseline",
            "--topk",
            "3,8",
            "--device",
            "cpu",
            "--quiet",
            "--plots",
        ],
        cwd=home,
    )
    run(
        [
            bin_ / "tracin",
            "report",
            "--run",
            "checkpoints/tiny",
            "--randomization-train",
            "32",
            "--randomization-test",
            "8",
            "--quiet",
        ],
        cwd=home,
    )
    printed = run([bin_ / "tracin", "notebooks", "checkpoints/tiny/tracin.h5", "html"], cwd=home).stdout
    assert "skipped" not in printed
    assert sorted(p.name for p in (home / "html").iterdir()) == ["mislabel_detection.html", "overlap_tables.html"]
    assert sorted(p.name for p in home.rglob(".*.lock")) == []  # no lock file stays behind
