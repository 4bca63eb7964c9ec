"""The formatter and linter configuration (pyproject.toml, [tool.ruff]) holds on every Python file: the code
was formatted once with `ruff format` and is kept so by this test, which the test command runs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")  # the dev extra installs it into the test environment
    found = str(beside) if beside.is_file() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: install the dev extra (scripts/setup does)")
    return [found]


@pytest.mark.parametrize("check", [["check", "--no-fix"], ["format", "--check"]], ids=["lint", "format"])
def test_the_code_keeps_the_ruff_configuration(check):
    result = subprocess.run([*_ruff(), *check, "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
