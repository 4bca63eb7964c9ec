"""Property-based fuzzing of what a user hands the commands (issue #27), beside the table-driven fault suite.

Random mutations of run.json, data.json, class maps and checkpoint dictionaries, random structural damage
to a small score file, and random argument vectors for each command. The property, for every case: the
command ends with exit code 0, 2 (a user's mistake: its one line on stderr) or 130 (the fault injected to
stop a valid command before its long work), no traceback, and no file outside the command's own output
changed. Examples are derandomized (the same on every run), so a failure replays; hypothesis prints the
failing example.

Commands run in this process (through their entry points) so that each case costs no interpreter start;
TRACIN_FAULT stops a valid scoring at its first header write, a valid training once its data are loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracin import faults
from tracin.cli import COMMANDS, main
from tracin.cli.boundary import run_command as command_boundary
from tracin.commands.evaluate import read_class_map
from tracin.errors import TracinError
from tracin.results.report_folder import write_report
from tracin.training.checkpoints import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@st.composite
def mutations(draw, document):
    """(path of keys, new value or None to delete) somewhere inside `document` (a JSON object)."""
    path, node = [], document
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    if not path:
        key = draw(st.sampled_from(sorted(document)))
        path = [key]
    return path, draw(st.none() | st.just("<delete>") | JSON_VALUES)


def mutate(document, change):
    """A copy of `document` with the value at `change`'s path replaced (or deleted)."""
    document = json.loads(json.dumps(document))
    path, value = change
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value == "<delete>":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(skip)
    }


def run_command(argv: list, fault: str = "") -> tuple[int, str]:
    """(exit code, stderr) of `tracin ARGV` in this process, a traceback escaping as the test's failure."""
    faults._reached.clear()
    stderr, previous = io.StringIO(), os.environ.get("TRACIN_FAULT")
    os.environ["TRACIN_FAULT"] = fault
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exit:  # argparse: --help, --version, a usage error
                code = exit.code if isinstance(exit.code, int) else 2
    finally:
        os.environ["TRACIN_FAULT"] = previous or ""
        if previous is None:
            del os.environ["TRACIN_FAULT"]
    return code, stderr.getvalue()


def assert_user_outcome(code: int, stderr: str) -> None:
    assert code in (0, 2, 130), (code, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) <= 1, stderr[-2000:]
    if code == 2:
        assert errors and stderr.strip().splitlines()[-1] == errors[0], stderr[-2000:]


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


SCORE = [
    "--models",
    "teacher,student",
    "--variants",
    "raw",
    "--train-subset",
    "32",
    "--test-subset",
    "8",
    "--topk",
    "2",
    "--device",
    "cpu",
    "--quiet",
]


@FUZZ
@given(data=st.data())
def test_run_json_mutations(run_copy, tmp_path, data):
    record = json.loads((run_copy / "run.json").read_text())
    mutated = mutate(record, data.draw(mutations(record)))
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(run_copy, run)
    (run / "run.json").write_text(json.dumps(mutated))
    before = digest(run)
    code, stderr = run_command(
        ["score", "--run", run, "--scores", run.with_suffix(".h5"), *SCORE], fault="h5-header:1:interrupt"
    )
    assert_user_outcome(code, stderr)
    assert digest(run) == before  # scoring reads the run, never writes it


@FUZZ
@given(data=st.data())
def test_data_json_and_class_map_mutations(run_copy, tmp_path, data):
    document = json.loads((run_copy / "data.json").read_text())
    mutated = mutate(document, data.draw(mutations(document)))
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(run_copy, run, ignore=shutil.ignore_patterns("*.pt", "student*"))
    (run / "data.json").write_text(json.dumps(mutated))
    class_map = run / "map.json"
    class_map.write_text(json.dumps(data.draw(JSON_VALUES | st.dictionaries(st.text(max_size=8), st.text(max_size=8)))))
    with contextlib.suppress(TracinError):
        read_class_map(str(class_map))
    code, stderr = run_command(
        [
            "eval",
            "--run",
            run,
            "--eval-dataset",
            "cifar100",
            "--data-root",
            tmp_path / "none",
            "--class-map",
            class_map,
            "--device",
            "cpu",
        ]
    )
    assert_user_outcome(code, stderr)


@FUZZ
@given(data=st.data())
def test_checkpoint_dict_mutations(run_copy, tmp_path, data):
    path = list_checkpoints(run_copy / "teacher")[-1]
    payload = torch.load(path, weights_only=True)
    meta = {
        k: v for k, v in payload.items() if not isinstance(v, dict) or k in ("model_config", "config", "data_config")
    }
    change = data.draw(mutations(meta))
    mutated = (
        {**payload, **mutate(meta, change)}
        if change[1] != "<delete>" or len(change[0]) > 1
        else {k: v for k, v in payload.items() if k != change[0][0]}
    )
    target = Path(tempfile.mkdtemp(dir=tmp_path)) / "epoch_004.pt"
    torch.save(mutated, target)
    with contextlib.suppress(TracinError):
        load_checkpoint(target, role="teacher")


DAMAGE = ("drop", "retype", "reshape", "out-of-range", "truncate")


@st.composite
def score_file_damage(draw, names: list[str]):
    return draw(st.sampled_from(DAMAGE)), draw(st.sampled_from(names)), draw(st.integers(0, 10**9))


def damage_file(path: Path, kind: str, name: str, seed: int) -> None:
    if kind == "truncate":
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(seed % size)
        return
    with h5py.File(path, "r+") as h5:
        values = h5[name][()]
        del h5[name]
        if kind == "drop":
            return
        if kind == "retype":
            values = np.array([str(v)[:3] for v in values.ravel()], dtype="S3").reshape(values.shape)
        elif kind == "reshape":
            values = values.ravel()[: max(1, values.size // 2)]
        elif values.dtype.kind in "iu" and values.size:
            values = values.copy()
            values.flat[seed % values.size] = 10**6
        h5.create_dataset(name, data=values)


@pytest.fixture(scope="module")
def dataset_names(tiny_scores) -> list[str]:
    names = []
    with h5py.File(tiny_scores, "r") as h5:
        h5.visit(lambda name: names.append(name) if isinstance(h5[name], h5py.Dataset) else None)
    return sorted(names)


@settings(FUZZ, max_examples=12)  # each writes a whole report: seconds
@given(data=st.data())
def test_score_file_damage(tiny_scores, dataset_names, tmp_path, data):
    kind, name, seed = data.draw(score_file_damage(dataset_names))
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "damaged.h5"
    shutil.copy(tiny_scores, path)
    damage_file(path, kind, name, seed)
    before = digest(tiny_scores.parent)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = command_boundary("report", lambda: write_report(path, folder / "plots"), "again")
    assert_user_outcome(code, stderr.getvalue())
    assert digest(tiny_scores.parent) == before  # the run and the score file it was copied from: untouched


def option_strings(command: str) -> list[str]:
    from tracin.cli.main import build_parser
    from tracin.cli.notebooks import build_parser as build_notebooks_parser

    parser = build_notebooks_parser() if command == "notebooks" else build_parser(command)
    return sorted(s for action in parser._actions for s in action.option_strings if s not in ("-h", "--help"))


def argument_vectors(command: str, run: Path, tmp_path: Path):
    values = st.sampled_from(
        [
            "",
            "-5",
            "0",
            "1",
            "3",
            "0.002",
            "nan",
            "abc",
            "teacher,student",
            "raw",
            "cpu",
            "cuda",
            "fashion-mnist",
            str(run),
            str(tmp_path / "nowhere"),
            "/etc/passwd",
            "a:b",
            "x=1,2",
        ]
    )
    pair = st.tuples(st.sampled_from(option_strings(command)), values)
    return st.lists(pair, max_size=5).map(lambda pairs: [token for option, value in pairs for token in (option, value)])


def base_arguments(command: str, run: Path, tmp_path: Path, data_root: str) -> list[str]:
    """A command line the command accepts, so that random options after it reach past the parser too."""
    return {
        "train": [
            "--run",
            "fuzzed",
            "--dataset",
            "fashion-mnist",
            "--data-root",
            data_root,
            "--train-subset",
            "64",
            "--test-subset",
            "32",
            "--batch-size",
            "16",
            "--quiet",
        ],
        "score": [
            "--run",
            str(run),
            "--scores",
            str(tmp_path / "fuzzed.h5"),
            "--device",
            "cpu",
            "--quiet",
            "--variants",
            "raw",
            "--topk",
            "3",
            "--train-subset",
            "32",
            "--test-subset",
            "8",
        ],
        "sweep": [
            "--sweep",
            "fuzzed",
            "--vary",
            "temperature=1,2",
            "--dataset",
            "fashion-mnist",
            "--data-root",
            data_root,
        ],
        "eval": ["--run", str(run), "--eval-dataset", "cifar100", "--data-root", str(tmp_path / "nowhere")],
    }.get(command, [])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_argument_vectors(command, run_copy, tmp_path, fashion_mnist_root, request):
    before = digest(run_copy)
    base = base_arguments(command, run_copy, tmp_path, fashion_mnist_root)
    if command == "explore":  # a finished score file, so that random options reach the page's writer
        scores = request.getfixturevalue("tiny_scores")
        protected = digest(scores.parent)
        base = ["--run", str(scores.parent), "--scores", str(scores), "--out", str(tmp_path / "page.html")]

    @settings(FUZZ, max_examples=15)
    @given(argv=argument_vectors(command, run_copy, tmp_path))
    def case(argv):
        if command in ("validate", "report") and str(run_copy) in argv:
            argv = [a if a != str(run_copy) else str(tmp_path / "nowhere") for a in argv]  # their long work: elsewhere
        fault = {"train": "data:1:interrupt", "sweep": "data:1:interrupt", "score": "h5-header:1:interrupt"}.get(
            command, ""
        )
        old = Path.cwd()
        os.chdir(tmp_path)
        try:
            code, stderr = run_command([command, *base, *argv], fault=fault)
        finally:
            os.chdir(old)
        assert_user_outcome(code, stderr)

    case()
    after = digest(run_copy)
    assert {k: v for k, v in after.items() if not k.startswith("eval_")} == before  # eval's own CSV aside
    if command == "explore":
        assert {
            k: v for k, v in digest(scores.parent).items() if "explore" not in k
        } == protected  # a page beside it at most


def test_a_file_size_limit_names_the_file_and_the_limit(capsys):
    """Round 26, UL1: h5py's EFBIG (its errno and file only in HDF5's message) was "File too large", nothing more."""

    def write() -> None:
        raise OSError(
            27,
            "Can't synchronously write data (file write failed: time = Sun Dec  6 03:10:20 2026\n, filename = "
            "'/data/tracin.h5', file descriptor = 3, errno = 27, error message = 'File too large', offset = 40960)",
        )

    assert command_boundary("tracin-score", write, "run the same command again") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tracin-score: error: File too large (/data/tracin.h5; a file-size limit (ulimit -f) or the file system's "
        "largest file); finished work is kept: fix it and run the same command again"
    ]


def test_a_full_disk_met_through_a_file_object_names_its_path(capsys, tmp_path):
    """Round 35, D01: h5py's file-object driver (TRACIN_FAULT's full disk writes through one: faults.FullDisk)
    reports the file object itself, said as "<_io.FileIO name=PosixPath('run1/full.h5') mode='rb+' ...>"."""
    with open(tmp_path / "full.h5", "wb", buffering=0) as handle:

        def write() -> None:
            raise OSError(28, "No space left on device", handle)

        assert command_boundary("tracin-validate", write, "run the same command again") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"tracin-validate: error: No space left on device ({tmp_path / 'full.h5'}); finished work is kept: fix it "
        "and run the same command again"
    ]


def test_a_full_disk_reported_while_handling_it_is_one_line(capsys):
    """Round 10, D2: torch.save's zip writer, closing after ENOSPC, raised a RuntimeError of its own, and the
    full disk ended in a traceback instead of its one line."""

    def save() -> None:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 365632 vs 365528")

    assert command_boundary("tracin-train", save, "run the same command again") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tracin-train: error: No space left on device; finished work is kept: fix it and run the same command again"
    ]
    with pytest.raises(RuntimeError, match="a bug"):  # anything else keeps its traceback
        command_boundary("tracin-train", lambda: (_ for _ in ()).throw(RuntimeError("a bug")), "again")
