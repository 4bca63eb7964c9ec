"""The notebooks run top to bottom on a real score file (a cell that raises fails the test)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracin.cli.notebooks import execute_notebook, notebook_folder
from tracin.results.store import ScoreFile


def outputs_of(notebook) -> tuple[str, int]:
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("name") != "stderr", output.get("text")  # no warning reaches the HTML
            data = output.get("data", {})
            images += "image/png" in data
            text.append(output.get("text", "") + data.get("text/markdown", "") + data.get("text/plain", ""))
    return "\n".join(text), images


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in notebook_folder().glob("*.ipynb"):
        notebook = nbformat.read(str(path), as_version=4)
        assert all(
            not cell.get("outputs") and not cell.get("execution_count")
            for cell in notebook.cells
            if cell.cell_type == "code"
        ), path


def test_overlap_tables_notebook_runs(tiny_scores, tmp_path):
    html = tmp_path / "overlap_tables.html"
    notebook = execute_notebook(
        notebook_folder() / "overlap_tables.ipynb", {"SCORES": str(tiny_scores), "DATA_ROOT": None}, html
    )
    text, images = outputs_of(notebook)
    assert "teacher vs student: overlap of top-k sets" in text and "chance k/n" in text
    assert "Kolmogorov" in text
    assert "has no validation (run tracin-validate" in text  # that section says how to make it
    assert images >= 3 + 1 + 1  # overlap curves per pair, histograms, the proponent grid
    assert html.stat().st_size > 10_000


def test_mislabel_detection_notebook_runs(tiny_scores, tmp_path):
    notebook = execute_notebook(
        notebook_folder() / "mislabel_detection.ipynb", {"SCORES": str(tiny_scores), "DATA_ROOT": None}
    )
    text, images = outputs_of(notebook)
    assert "Mislabel detection" in text and "teacher: self-influence" in text and "random order" in text
    assert images == 1 + 3  # the detection curves, and the suspects of teacher, student and baseline


def test_a_missing_parameters_cell_is_reported(tmp_path):
    import nbformat

    path = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), str(path))
    with pytest.raises(ValueError, match="parameters"):
        execute_notebook(path, {"SCORES": "x"})


@pytest.fixture(scope="module")
def clean_scores(tmp_path_factory, fashion_mnist_root) -> Path:
    """A finished score file of a tiny run trained without label noise."""
    from conftest import TINY_RUN_ARGS, run_tracin_score, run_tracin_train

    out_root = tmp_path_factory.mktemp("clean")
    args = [arg for arg in TINY_RUN_ARGS]
    noise = args.index("--label-noise")
    del args[noise : noise + 2]
    result = run_tracin_train(["--run", "clean", "--out-root", out_root, "--data-root", fashion_mnist_root, *args])
    assert result.returncode == 0, result.stderr
    scores = out_root / "clean" / "tracin.h5"
    result = run_tracin_score(
        [
            "--run",
            out_root / "clean",
            "--train-subset",
            "64",
            "--test-subset",
            "16",
            "--topk",
            "3",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    return scores


def test_a_run_without_label_noise_writes_both_notebooks(clean_scores, tmp_path):
    """The mislabel notebook applies to any run: without flipped labels it says the curves need label noise,
    and still shows the training examples of highest self-influence."""
    command = Path(sys.executable).parent / "tracin-notebooks"
    result = subprocess.run(
        [str(command), str(clean_scores), str(tmp_path / "html")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no kernel chatter, no warnings
    assert sorted(p.name for p in (tmp_path / "html").iterdir()) == ["mislabel_detection.html", "overlap_tables.html"]
    page = (tmp_path / "html" / "mislabel_detection.html").read_text()
    assert "No training label was flipped in this run" in page and "highest self-influence" in page
    assert "IProgress" not in page and "IProgress" not in (tmp_path / "html" / "overlap_tables.html").read_text()


def test_a_notebook_that_needs_what_the_file_lacks_is_skipped_with_its_reason(clean_scores, tmp_path):
    import nbformat

    from tracin.cli.notebooks import NEEDS, skip_reason

    notebook = nbformat.v4.new_notebook(metadata={"tracin": {"needs": ["flipped-labels"]}})
    nbformat.write(notebook, str(tmp_path / "needs.ipynb"))
    with ScoreFile.open_read(clean_scores) as store:
        assert skip_reason(tmp_path / "needs.ipynb", store) == NEEDS["flipped-labels"].missing
    nbformat.write(nbformat.v4.new_notebook(metadata={"tracin": {"needs": ["replicas?"]}}), str(tmp_path / "odd.ipynb"))
    with ScoreFile.open_read(clean_scores) as store, pytest.raises(ValueError, match="NEEDS does not define"):
        skip_reason(tmp_path / "odd.ipynb", store)


def test_notebooks_command_without_arguments_prints_usage_not_a_traceback():
    command = Path(sys.executable).parent / "tracin-notebooks"
    result = subprocess.run([str(command)], capture_output=True, text=True)
    assert (
        result.returncode == 2
        and "tracin-notebooks: error: the following arguments are required: SCORES, OUT_DIR" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["tracin-notebooks", "tracin-report", "tracin-explore"])
def test_a_mistyped_data_root_is_refused_not_filled(tiny_run, tiny_scores, tmp_path, command):
    """Round 12, B69: tracin-notebooks unpacked a fresh Fashion-MNIST into a DATA_ROOT that did not exist,
    without a word (the kernel's note went into the page); a data root given because the data moved must
    be a folder, for every command that takes one."""
    typo = tmp_path / "dta"
    args = {
        "tracin-notebooks": [tiny_scores, tmp_path / "pages", typo],
        "tracin-report": ["--run", tiny_run, "--scores", tiny_scores, "--data-root", typo],
        "tracin-explore": ["--scores", tiny_scores, "--data-root", typo],
    }[command]
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *map(str, args)], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"{command}: error: data root {typo}: no such folder (give the folder the data set is in now)"
    ]
    assert not typo.exists() and not (tmp_path / "pages").exists()
    typo.mkdir()  # round 16, P8: an empty folder was filled with a fresh copy of the data set too
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *map(str, args)], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"{command}: error: data root {typo} holds none of cifar-10-batches-py, FashionMNIST/raw (give the folder "
        "the data set is in now)"
    ]
    assert list(typo.iterdir()) == [] and not (tmp_path / "pages").exists()
    (typo / "cifar-10-batches-py").mkdir()  # round 17, D3, D4: the root of another data set was filled too
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *map(str, args)], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"{command}: error: data root {typo} does not hold the run's data set, fashion-mnist (no "
        f"{typo / 'FashionMNIST' / 'raw'}): give the folder the data set is in now"
    ]
    assert [p.name for p in typo.iterdir()] == ["cifar-10-batches-py"] and not (tmp_path / "pages").exists()


def test_a_page_notebooks_did_not_write_or_wrote_of_another_file_is_kept(tiny_scores, clean_scores, tmp_path):
    """Round 13, Z3, M4: a colleague's overlap_tables.html in OUT_DIR, or the pages of another score file,
    were replaced without a word; each page's head says it is tracin-notebooks' and of which file. Round 18,
    N8, N9: a file is known by its identity (its root's sha256), not its path: the same file moved writes its
    pages again, another file is refused wherever it is."""
    command = Path(sys.executable).parent / "tracin-notebooks"
    moved = tmp_path / "moved" / "tracin.h5"
    moved.parent.mkdir()
    moved.write_bytes(tiny_scores.read_bytes())
    result = subprocess.run([str(command), str(tiny_scores), str(tmp_path / "nb")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "nb" / "overlap_tables.html"
    assert f'<meta name="tracin-scores" content="{tiny_scores.resolve()}">' in page.read_text()[:4096]
    result = subprocess.run([str(command), str(moved), str(tmp_path / "nb")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([str(command), str(clean_scores), str(tmp_path / "nb")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-notebooks: error: {page.with_name('mislabel_detection.html')} is a notebook page of another score "
        "file; it is left as it is (move the pages away, or choose another OUT_DIR)"  # checked in order of name
    ]
    moved.write_bytes(clean_scores.read_bytes())  # round 19, N9: the file at the path was scored again since
    result = subprocess.run([str(command), str(moved), str(tmp_path / "nb")], capture_output=True, text=True)
    assert (
        result.returncode == 2 and "of an earlier score file at the same path (scored again since, or" in result.stderr
    )
    page.write_text("<html>a colleague's page</html>")
    result = subprocess.run([str(command), str(tiny_scores), str(tmp_path / "nb")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-notebooks: error: {page} exists and is not a page tracin-notebooks wrote; it is left as it is"
    ]
    assert page.read_text() == "<html>a colleague's page</html>"
    page.unlink()  # round 17, N4, N5: a FIFO there was replaced, a folder a traceback after the first page
    for plant in (os.mkfifo, os.mkdir):
        plant(page)
        result = subprocess.run([str(command), str(tiny_scores), str(tmp_path / "nb")], capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [
            f"tracin-notebooks: error: {page} exists and is not a page tracin-notebooks wrote; it is left as it is"
        ]
        assert not page.is_file()
        (page.rmdir if page.is_dir() else page.unlink)()


def test_a_moved_data_root_is_asked_for_once_as_tracin_notebooks_takes_it(tiny_run, tmp_path):
    """Round 32, C12: with the data moved, each notebook failed on its own with 'give --data-root', an option
    tracin-notebooks has not (it takes DATA_ROOT, its third argument)."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    scores = run / "tracin.h5"
    score = [Path(sys.executable).parent / "tracin-score", "--run", run, "--scores", scores, "--models", "teacher"]
    score += ["--train-subset", "32", "--test-subset", "8", "--topk", "3", "--device", "cpu", "--quiet"]
    assert subprocess.run(list(map(str, score)), capture_output=True, text=True).returncode == 0
    record = json.loads((run / "run.json").read_text())
    data_root, record["data_config"]["data_root"] = record["data_config"]["data_root"], str(tmp_path / "moved")
    (run / "run.json").write_text(json.dumps(record))
    command = [str(Path(sys.executable).parent / "tracin-notebooks"), str(scores), str(tmp_path / "pages")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-notebooks: error: the data root {tmp_path / 'moved'} run.json records does not hold the run's data "
        f"set, fashion-mnist (no {tmp_path / 'moved' / 'FashionMNIST' / 'raw'}): give DATA_ROOT (tracin-notebooks "
        "SCORES OUT_DIR DATA_ROOT), the folder it is in now"
    ]
    assert not (tmp_path / "pages").exists()
    result = subprocess.run([*command, data_root], capture_output=True, text=True)  # the remedy, followed
    assert result.returncode == 0 and (tmp_path / "pages" / "overlap_tables.html").is_file(), result.stderr
