"""The package's shape, as issues #11 and #29 set it: folders for the pipeline, imports that only point down
it, one HDF5 owner, a slim engine facade, modules of at most 600 lines, and no device timings in docstrings
(they go stale; benchmarks print them instead)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tracin
from tracin.engine.tracin import TracIn

PACKAGE = Path(tracin.__file__).parent


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_imports():
    for info in pkgutil.walk_packages(tracin.__path__, "tracin."):
        importlib.import_module(info.name)


def test_the_folders_are_the_pipeline_stages():
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == {
        "training",
        "engine",
        "results",
        "commands",
        "cli",
    }


def test_setup_cfg_lists_every_subpackage():
    """The wheel holds what setup.cfg lists (listed, not found: tracin.notebooks lives outside tracin/), so a
    new folder left off the list would install without it (tests/test_install.py would see it only late)."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(PACKAGE.parent / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    folders = {
        ".".join(("tracin", *p.parent.relative_to(PACKAGE).parts)) for p in PACKAGE.glob("*/**/__init__.py")
    }  # tracin.results.store too: a package inside a stage's folder
    assert listed == {"tracin", "tracin.notebooks", *folders}


# The pipeline, bottom up: a module may import its own layer and the layers below it. The base modules
# (configuration, errors, files, options, the runtime, the schemas, the version) import only each other.
LAYERS = ("base", "training", "engine", "results", "commands", "cli")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "base"


def _imports(path: Path) -> set[str]:
    """Every tracin module the file imports, at any depth of its code (a lazy import counts too):
    `from tracin import faults` is tracin.faults, `from tracin import TracIn` the package face."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tracin"}
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("(a relative import)")  # written absolute, every import can be placed by this check
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tracin":
            package = PACKAGE.joinpath(*node.module.split(".")[1:])
            for alias in node.names:  # a submodule by name, or a name the module (or package face) defines
                is_module = (package / alias.name).is_dir() or (package / f"{alias.name}.py").is_file()
                found.add(f"{node.module}.{alias.name}" if is_module else node.module)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_breaches(modules: dict[str, Path]) -> list[str]:
    """'importer -> imported' for every import (module name -> its file) that points up the pipeline or
    across to another command."""
    breaches = []
    for importer, path in modules.items():
        if importer in ("tracin", "tracin.__main__"):
            continue  # the package face and `python -m tracin` reach every layer, lazily
        for imported in sorted(_imports(path)):
            if imported == "tracin":
                breaches.append(f"{importer} -> tracin (the package face: import the defining module)")
                continue
            if imported == "(a relative import)":
                breaches.append(f"{importer} -> {imported}")
                continue
            mine, theirs = LAYERS.index(_layer(importer)), LAYERS.index(_layer(imported))
            commands = {importer, imported} - {"tracin.commands"}
            across = (
                len(commands) == 2 and all(_layer(name) == "commands" for name in commands) and importer != imported
            )
            if theirs > mine or across:
                breaches.append(f"{importer} -> {imported}")
    return breaches


def test_imports_only_point_down_the_pipeline():
    assert import_breaches({_module_name(path): path for path in _modules()}) == []


@pytest.mark.parametrize(
    "module, source, breach",
    [
        (
            "tracin.config",
            "from tracin.engine.projection import PROJECTORS",
            "tracin.config -> tracin.engine.projection",
        ),
        (
            "tracin.files",
            "from tracin import __version__",
            "tracin.files -> tracin (the package face: import the defining module)",
        ),
        (
            "tracin.training.trainer",
            "from tracin.results.store import ScoreFile",
            "tracin.training.trainer -> tracin.results.store",
        ),
        (
            "tracin.engine.tracin",
            "from tracin.results import statistics",
            "tracin.engine.tracin -> tracin.results.statistics",
        ),
        (
            "tracin.commands.report",
            "from tracin.commands.score import scoring_loss",
            "tracin.commands.report -> tracin.commands.score",
        ),
        ("tracin.results.store", "import tracin.cli.main", "tracin.results.store -> tracin.cli.main"),
        ("tracin.commands.report", "from .score import scoring_loss", "tracin.commands.report -> (a relative import)"),
    ],
)
def test_the_import_check_sees_an_import_that_points_up_or_across(tmp_path, module, source, breach):
    """Each breach #29 measured, planted (lazily, inside a function) into a copy of a clean module."""
    clean = tmp_path / "clean.py"
    clean.write_text((PACKAGE / "errors.py").read_text())
    planted = tmp_path / "planted.py"
    planted.write_text(clean.read_text() + f"\n\ndef lazy():\n    {source}\n")
    assert import_breaches({module: clean}) == []
    assert import_breaches({module: planted}) == [breach]


def test_importing_the_package_imports_no_heavy_library():
    """`import tracin` and every command's --help stay light: the public names load on first use."""
    code = (
        "import sys, tracin, tracin.cli; heavy = {'torch', 'torchvision', 'h5py', 'matplotlib', 'scipy'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_engine_facade_takes_at_most_eight_parameters():
    assert len(inspect.signature(TracIn.__init__).parameters) - 1 <= 8  # self aside


MAX_LINES = 600  # issue #29: a module longer than this owns more than one step
# The modules still over MAX_LINES while #29 splits them, each with the length #29 measured: each may only
# shrink, and comes off this list once it is under MAX_LINES.
OVER_LENGTH: dict[str, int] = {}


def _over_length() -> dict[str, int]:
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in _modules()}
    return {name: n for name, n in lengths.items() if n > MAX_LINES}


def test_no_module_is_longer_than_six_hundred_lines():
    grown = {name: n for name, n in _over_length().items() if n > OVER_LENGTH.get(name, MAX_LINES)}
    assert not grown, f"over {MAX_LINES} lines (split along a seam: each module owns one step): {grown}"


def test_the_list_of_long_modules_holds_only_long_modules():
    done = sorted(set(OVER_LENGTH) - set(_over_length()))
    assert not done, f"{done}: now at most {MAX_LINES} lines (or gone): take them off OVER_LENGTH"


def test_no_device_timings_in_the_package_source():
    timing = re.compile(r"\b(H100|A100|V100|RTX ?\d{4})\b|\b\d+(\.\d+)? ?ms\b")
    found = [
        f"{p.relative_to(PACKAGE)}:{i}"
        for p in _modules()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if timing.search(line)
    ]
    assert not found, found
