"""The README is a front page: at most 300 lines, its Python example runs as printed and equals the float64
reference, and every link of the README and docs/ reaches a file that exists."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from test_api import float32_bar, save_training_checkpoints
from torch.utils.data import TensorDataset

from tracin.engine.reference import func_tracin_scores

from models_for_tests import relative_error

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 300


def test_the_python_example_runs_as_printed(tiny_scores, tmp_path, monkeypatch):
    (example,) = re.findall(r"## In Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert len(example.splitlines()) <= 15
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    (tmp_path / "checkpoints" / "demo").mkdir(parents=True)
    pairs = save_training_checkpoints(model, tmp_path / "checkpoints")
    shutil.copy(
        tiny_scores, tmp_path / "checkpoints" / "demo" / "tracin.h5"
    )  # a score file where the example reads one
    generator = torch.Generator().manual_seed(1)
    train_set = TensorDataset(
        torch.randn(10, 3, 32, 32, generator=generator), torch.randint(0, 10, (10,), generator=generator)
    )
    test_set = TensorDataset(
        torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator)
    )
    monkeypatch.chdir(tmp_path)
    namespace = {"train_set": train_set, "test_set": test_set}
    exec(compile(example, "README.md", "exec"), namespace)
    reference = func_tracin_scores(model, pairs, train_set.tensors, test_set.tensors)
    bar = float32_bar(model, pairs, train_set.tensors, test_set.tensors, reference)
    assert relative_error(namespace["scores"], reference.T) < bar
    assert torch.equal(torch.as_tensor(namespace["top"].test.top_index[:, 0]), reference.argmax(0))
    diagonal = func_tracin_scores(model, pairs, train_set.tensors, train_set.tensors).diagonal()
    assert torch.equal(namespace["suspects"], diagonal.argsort(descending=True))
    assert namespace["student"].top_index.shape[0] == 24  # the score file's test examples


def _anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings, as GitHub makes them: lower case, punctuation but '-'
    dropped, spaces as '-'."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_link_reaches_a_file_and_heading(page):
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        linked = page.parent / target if target else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name} links to {target}#{anchor}, a heading {target} lacks"


MEASUREMENTS = sorted(p.relative_to(REPO) for p in (REPO / "docs" / "measurements").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", MEASUREMENTS, ids=lambda p: p.name)
def test_the_measured_figures_are_the_logs_own(folder, monkeypatch):
    """docs/engine.md's measured tables are what scripts/bench_figures.py makes from the committed logs of each
    docs/measurements folder; a figure typed by hand, or a log changed without regenerating, fails here."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_figures

    monkeypatch.chdir(REPO)
    document = (REPO / "docs" / "engine.md").read_text()
    start, end = bench_figures.markers(folder)
    assert document.count(start) == 1, f"docs/engine.md has no section of {folder}"
    shown = start + document.split(start, 1)[1].split(end, 1)[0] + end
    assert shown == bench_figures.section(folder), (
        f"regenerate: python scripts/bench_figures.py {folder} --write docs/engine.md"
    )
    assert "| exact |" in shown  # the table is read from the logs, not empty


def test_the_gpu_session_runs_its_steps_at_a_tiny_size_on_the_cpu(tmp_path, monkeypatch):
    """scripts/gpu_session is run only when a GPU is lent, in one short try: its dry run here keeps every
    step's command line (the benches' options) working in between, and its logs readable by bench_figures."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "gpu_session"), str(tmp_path), "--small"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ends = [
        line for log in sorted(tmp_path.glob("*.log")) for line in log.read_text().splitlines() if ": exit " in line
    ]
    assert len(ends) == 4 and all(": exit 0 after" in line for line in ends), ends
    monkeypatch.syspath_prepend(str(repo / "scripts"))
    import bench_figures

    section = bench_figures.section(tmp_path)
    assert "| exact |" in section and "| projected |" in section and "| floor |" in section
