"""Every command's parser is generated from its options dataclasses (tracin.cli.parsing): no option is declared
anywhere else, a default is the field's, old spellings still work with a note, and docs/cli.md's tables are
the parsers'."""

import ast
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tracin.arguments import declared_options, flag_of
from tracin.cli.main import SPECS, build_parser, options_from, score_options
from tracin.cli.notebooks import build_parser as build_notebooks_parser
from tracin.config import DataConfig, TrainConfig
from tracin.options import NotebooksOptions, RunOptions, ScoreOptions

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"train": ["--run", "r"], "sweep": ["--sweep", "s"], "eval": ["--run", "r", "--eval-dataset", "cifar10"]}


def _parse(command, *argv):
    return build_parser(command).parse_args([*REQUIRED.get(command, ["--run", "r"]), *argv])


def test_no_module_of_the_package_declares_an_option_by_hand():
    """argparse's add_argument is called in one place, tracin/cli/parsing.py, for declared fields."""
    callers = []
    for path in (REPO / "tracin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("add_argument", "add_mutually_exclusive_group"):
                callers.append(path.relative_to(REPO).as_posix())
    assert set(callers) == {"tracin/cli/parsing.py"}


def _declared_flags(options) -> set:
    hints = typing.get_type_hints(options)
    flags = set()
    for field, option in declared_options(options):
        flags |= {flag_of(field, option), *option.also, *option.renamed}
        if hints[field.name] is bool and field.default is True:  # --x / --no-x
            flags.add("--no-" + flag_of(field, option)[2:])
    return flags


@pytest.mark.parametrize("command", [*SPECS, "notebooks"])
def test_each_option_of_a_parser_is_a_declared_field(command):
    parser = build_notebooks_parser() if command == "notebooks" else build_parser(command)
    declared = set().union(*map(_declared_flags, SPECS[command].options if command in SPECS else (NotebooksOptions,)))
    parsed = {s for action in parser._actions for s in action.option_strings} - {"-h", "--help", "--version"}
    parsed |= {action.dest for action in parser._actions if not action.option_strings}
    assert parsed == declared


@pytest.mark.parametrize("command", [c for c in SPECS if c not in ("train", "sweep")])
def test_an_option_not_given_is_the_fields_default(command):
    options = SPECS[command].options[0]
    built = options_from(options, _parse(command), command)
    fixed = {"run": "r"} | ({"dataset": "cifar10"} if command == "eval" else {})
    if command == "explore":
        fixed["run"] = Path("r")
    defaults = options(**fixed)
    changed = {"data_root"} if command == "eval" else set()  # eval's: $TRACIN_DATA, else data (default_from)
    assert {f.name: getattr(built, f.name) for f in dataclasses.fields(options) if f.name not in changed} == {
        f.name: getattr(defaults, f.name) for f in dataclasses.fields(options) if f.name not in changed
    }


def test_tracin_trains_configurations_are_the_dataclasses_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACIN_DATA", str(tmp_path))
    args = _parse("train")
    assert options_from(TrainConfig, args, "t") == TrainConfig()
    assert options_from(DataConfig, args, "t") == DataConfig(data_root=str(tmp_path.resolve()))
    assert options_from(RunOptions, args, "t") == RunOptions(run="r")
    assert options_from(RunOptions, _parse("train", "--teacher", "t.pt"), "t").models == ("student", "student_baseline")


@pytest.mark.parametrize("given", [["--score"], ["--score", ""], ["--score="]])
def test_a_sweeps_score_may_be_given_bare(given):
    """Round 26, SW5: --score's usage shows its value as optional, yet the bare form was refused as empty."""
    from tracin.options import SweepOptions

    assert options_from(SweepOptions, _parse("sweep", *given), "tracin-sweep").score == ""


def test_every_default_is_shown_in_the_help():
    help_text = " ".join(build_parser("score").format_help().split())
    for field, option in declared_options(ScoreOptions):
        if isinstance(field.default, (int, float, str)) and not isinstance(field.default, bool):
            assert f"(default: {field.default})" in help_text or option.default_text, field.name


def test_values_are_comma_separated_and_the_old_spellings_still_work_with_a_note(capsys):
    assert options_from(RunOptions, _parse("train", "--models", "teacher,student"), "tracin-train").models == (
        "teacher",
        "student",
    )
    assert capsys.readouterr().err == ""
    assert options_from(RunOptions, _parse("train", "--models", "teacher", "student"), "tracin-train").models == (
        "teacher",
        "student",
    )
    assert "--models takes comma-separated values" in capsys.readouterr().out  # notes: stderr is for a mistake
    assert score_options(_parse("score", "--out", "x.h5"), []).scores == "x.h5"
    assert "--out is now --scores" in capsys.readouterr().out
    assert score_options(_parse("score", "--scores", "x.h5"), []).scores == "x.h5"
    assert capsys.readouterr().err == ""


def test_an_option_given_by_two_of_its_names_with_two_values_is_refused(capsys):
    """Round 38, O77: `--scores b.h5 --out a.h5` scored into a.h5, the last, without a word. The same value
    twice, and one spelling repeated (an alias overridden: last wins, as argparse does), are accepted."""
    for argv, typed in (
        (["--scores", "b.h5", "--out", "a.h5"], "--scores b.h5 and --out a.h5"),
        (["--out=a.h5", "--scores=b.h5"], "--out=a.h5 and --scores=b.h5"),
    ):
        with pytest.raises(SystemExit) as stop:
            _parse("score", *argv)
        said = capsys.readouterr().err
        assert stop.value.code == 2 and said.count("\n") == 1, said
        assert f"{typed} give one option twice, by two of its names: give it once" in said
    assert score_options(_parse("score", "--out", "a.h5", "--scores", "a.h5"), []).scores == "a.h5"
    assert score_options(_parse("score", "--scores", "a.h5", "--scores", "b.h5"), []).scores == "b.h5"
    assert options_from(RunOptions, _parse("train", "--device", "cpu", "--device", "cuda"), "t").device == "cuda"
    with pytest.raises(SystemExit):  # an alias (round 39, O04)
        _parse("train", "--arch", "resnet18", "--model", "resnet34")
    assert "--arch resnet18 and --model resnet34 give one option twice" in capsys.readouterr().err


def test_a_bad_value_in_a_list_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as stop:
        _parse("train", "--models", "teacher,stduent")
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "invalid choice: 'stduent'" in line


@pytest.mark.parametrize("value", ["a\nb.h5", "run\tx", "x\x00y"])
def test_an_argument_with_a_control_character_is_one_usage_line(capsys, value):
    """A newline in a path (red-team find SC3) would split every one-line message that names it."""
    with pytest.raises(SystemExit) as stop:
        _parse("score", "--run", "run", "--scores", value)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "contains a control character" in line and repr(value) in line


def test_the_score_options_build_the_librarys_configurations():
    options = score_options(
        _parse("score", "--mode", "projected", "--proj-dim", "8", "--group", "a=layer1", "--max-memory-gb", "0.5"), []
    )
    assert options.score.proj_dim == 8 and options.score.groups == (("a", ("layer1",)),)
    assert options.engine.max_memory == 2**29 and options.engine.cuda_graphs
    assert not score_options(_parse("score", "--no-cuda-graphs"), []).engine.cuda_graphs


def test_the_cli_docs_tables_are_the_parsers():
    result = subprocess.run(
        [sys.executable, "scripts/cli_reference.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_table_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import cli_reference
    finally:
        sys.path.pop(0)
    text = (REPO / "docs/cli.md").read_text()
    stale = text.replace(
        "| `--lr` | peak learning rate (default: 0.1) |", "| `--lr` | peak learning rate (default: 0.2) |"
    )
    assert stale != text and cli_reference.rewritten(stale) == text


@pytest.mark.parametrize("command", ["score", "validate", "report"])
def test_a_negative_seed_is_refused_before_any_work(command):
    """A red-team find: tracin-score --seed -1 ended in numpy's traceback after the data had loaded."""
    from tracin.errors import TracinError

    arguments = build_parser(command).parse_args(["--run", "R", "--seed", "-1"])
    with pytest.raises(TracinError, match=r"seed must be in 0\.\."):
        options_from(SPECS[command].options[0], arguments, f"tracin-{command}")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--mode", "last-layer", "--layers", "nosuchlayer"], "last-layer mode .* does not read layers"),
        (["--mode", "last-layer", "--proj-dim", "8"], "last-layer mode does not read it"),
        (["--proj-dim", "8"], "exact mode does not read it"),
    ],
)
def test_an_option_the_mode_ignores_is_refused(arguments, message):
    """Red-team finds S17 and S39: tracin-score --mode last-layer --layers nosuchlayer finished with exit 0,
    the option unread."""
    from tracin.errors import TracinError

    with pytest.raises(TracinError, match=message):
        score_options(_parse("score", *arguments), [])
