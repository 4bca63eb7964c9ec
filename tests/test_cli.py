"""Every entry point answers --help and --version at once (no torch imported), through each of the three ways
to call it: tracin-COMMAND, tracin COMMAND and python -m tracin COMMAND."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

import tracin
from tracin.cli import COMMANDS, main

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
BIN = Path(sys.executable).parent


def console_scripts() -> dict[str, str]:
    """name -> module:function, as setup.cfg declares them."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_every_command_is_a_console_script_and_the_umbrella_is_one():
    scripts = console_scripts()
    assert scripts["tracin"] == "tracin.cli:main"
    assert {f"tracin-{name}" for name in COMMANDS} == set(scripts) - {"tracin"}


@pytest.mark.parametrize("script", sorted(console_scripts()))
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_each_console_script_answers_help_and_version(script, flag):
    result = subprocess.run([str(BIN / script), flag], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    if flag == "--version":
        assert result.stdout.strip().endswith(tracin.__version__)
    else:
        assert "usage:" in result.stdout


def test_help_and_version_import_neither_torch_nor_h5py_nor_matplotlib():
    """What keeps --help under a second: the parsers are built from light modules alone."""
    program = (
        "import contextlib, io, sys\n"
        "from tracin.cli import COMMANDS, main\n"
        "for name in COMMANDS:\n"
        "    for flag in ('--help', '--version'):\n"
        "        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "            main([name, flag])\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'h5py', 'matplotlib', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_python_dash_m_tracin_is_the_umbrella_command():
    listing = subprocess.run([sys.executable, "-m", "tracin", "--help"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and all(f"  {name} " in listing.stdout for name in COMMANDS)
    score_help = subprocess.run(
        [sys.executable, "-m", "tracin", "score", "--help"], capture_output=True, text=True, timeout=60
    )
    assert score_help.returncode == 0 and "usage: tracin-score" in score_help.stdout


def test_an_unknown_command_or_none_is_one_line_and_exit_2(capsys):
    assert main(["scores"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'scores'" in err
    assert main([]) == 2
    assert "usage: tracin" in capsys.readouterr().err


MINIMAL = {  # a command line each command would accept, short of doing its work
    "train": ["--run", "x"],
    "score": ["--run", "x"],
    "report": ["--run", "x"],
    "validate": ["--run", "x"],
    "sweep": ["--sweep", "x", "--vary", "temperature=1,2"],
    "eval": ["--run", "x", "--eval-dataset", "cifar10"],
    "notebooks": ["scores.h5", "out"],
    "explore": ["--run", "x"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_option_is_taken_abbreviated(command, capsys):
    """`--overw` must not be read as `--overwrite` (tracin-sweep passes unknown options on to tracin-train, which
    would have expanded it and deleted every finished run)."""
    with pytest.raises(SystemExit) as raised:
        main([command, *MINIMAL[command], "--overw"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --overw" in err and f"tracin-{command}: error:" in err, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_abbreviation_is_named_before_a_missing_required_argument(command, capsys):
    """Round 42, N10, O16, O17: `tracin-notebooks --vers`, `tracin-eval --eval-d cifar10`, `tracin-sweep --sw x`
    were refused for the argument they left out, not for the abbreviation typed; a value with a space (a sweep's
    --score "--topk 5") is a value, as argparse reads it."""
    with pytest.raises(SystemExit) as raised:
        main([command, "--vers"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err == f"tracin-{command}: error: unrecognized arguments: --vers (see --help)\n", err
    if command == "sweep":
        with pytest.raises(SystemExit):
            main([command, "--vers", "--score", "--topk 5"])
        assert capsys.readouterr().err == "tracin-sweep: error: unrecognized arguments: --vers (see --help)\n"
