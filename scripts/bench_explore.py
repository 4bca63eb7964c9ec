"""tracin-explore at full CIFAR-10 size: how long the page takes and how large it is.

A synthetic run: CIFAR-10's on-disk format at full size (50,000 train and 10,000 test images, written by the
tests' own writer), and a finished score file for 6 models (teacher, student, student_baseline and a replica
of each) whose top-100 lists are random draws, so that the page shows nearly every train image (the worst
case for its size). The score matrices themselves are declared but never written (HDF5 allocates none of
their storage): the page reads only the lists, predictions and self-influences.

    python scripts/bench_explore.py [--keep DIR] [--readme]

Prints the seconds of tracin-explore's work (loading the images through torchvision, the page, the images)
and the bytes written, with the machine; --readme also puts them in docs/cli.md between the
`<!-- explore-bench:start -->` and `<!-- explore-bench:end -->` markers, dated. The bar: under a minute on
the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tracin.commands.explore import explore  # noqa: E402
from tracin.config import DataConfig  # noqa: E402
from tracin.engine.topk import Ranking  # noqa: E402
from tracin.options import ExploreOptions  # noqa: E402
from tracin.results.store import DataArrays, ModelScores, ScoreFile  # noqa: E402
from tracin.runtime import machine  # noqa: E402

from conftest import CIFAR10_CLASSES, write_cifar10  # noqa: E402  (the tests' writer of CIFAR-10's format)

START, END = "<!-- explore-bench:start -->", "<!-- explore-bench:end -->"
MODELS = ("teacher", "student", "student_baseline", "teacher.r1", "student.r1", "student_baseline.r1")
N_TRAIN, N_TEST, K = 50_000, 10_000, 100


def distinct_draws(rng: np.random.Generator, rows: int, columns: int, k: int) -> np.ndarray:
    """int64 [rows, k]: k distinct random columns per row."""
    out = np.empty((rows, k), np.int64)
    for row in range(rows):
        draw = rng.integers(0, columns, size=k + 32)
        _, first = np.unique(draw, return_index=True)
        out[row] = draw[np.sort(first)][:k]
    return out


def ranking(rng: np.random.Generator, rows: int, columns: int) -> Ranking:
    top = np.sort(rng.gamma(2.0, 1.0, size=(rows, K)).astype(np.float32), axis=1)[:, ::-1]
    bottom = -np.sort(rng.gamma(2.0, 0.2, size=(rows, K)).astype(np.float32), axis=1)[:, ::-1]
    return Ranking(
        *(
            torch.from_numpy(np.ascontiguousarray(a))
            for a in (distinct_draws(rng, rows, columns, K), top, distinct_draws(rng, rows, columns, K), bottom)
        )
    )


def synthetic_run(folder: Path) -> Path:
    """The run folder (run.json's data config only) and its finished score file; returns the file."""
    rng = np.random.default_rng(0)
    write_cifar10(folder / "data", per_batch=N_TRAIN // 5, test_size=N_TEST)
    run = folder / "run"
    run.mkdir()
    config = DataConfig(dataset="cifar10", data_root=str(folder / "data"), checksum=False)
    (run / "run.json").write_text(json.dumps({"data_config": config.to_dict()}))
    labels = {"train": rng.integers(0, 10, N_TRAIN), "test": rng.integers(0, 10, N_TEST)}
    data = DataArrays(np.arange(N_TRAIN), np.arange(N_TEST), labels["train"], labels["test"], labels["train"])
    attrs = {
        "run": str(run),
        "dataset": "cifar10",
        "classes": json.dumps(CIFAR10_CLASSES),
        "fine_classes": json.dumps(CIFAR10_CLASSES),
        "command": "scripts/bench_explore.py",
    }
    store = ScoreFile._create(run / "tracin.h5", {}, attrs, data)
    for name in MODELS:
        group = store._h5.create_group(name)
        group.attrs.update(
            {"role": name, "row_chunk": 512, "test_block": 4096, "status": "complete", "variants": json.dumps(["raw"])}
        )
        group.create_dataset("scores", shape=(N_TRAIN, N_TEST), dtype=np.float32, chunks=(512, 4096))  # never written
        group.create_dataset("done", data=np.ones((1, 1), bool))
        group.create_dataset("self_influence", data=rng.gamma(2.0, 1.0, N_TRAIN).astype(np.float32))
        scores = ModelScores(group)
        scores.write_rankings("topk", ranking(rng, N_TEST, N_TRAIN), ranking(rng, N_TRAIN, N_TEST))
        scores.write_predictions(rng.normal(size=(N_TEST, 10)).astype(np.float32))
    store.mark_complete()
    store.close()
    return run / "tracin.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="make the synthetic run in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--readme", action="store_true", help="put the figures in docs/cli.md between the markers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        scores = synthetic_run(folder)
        print(
            f"synthetic run: {time.perf_counter() - started:.0f} s to write ({N_TEST:,} test x {N_TRAIN:,} train, "
            f"top-{K}, {len(MODELS)} models)",
            flush=True,
        )
        started = time.perf_counter()
        lines = explore(ExploreOptions(scores=scores))
        seconds = time.perf_counter() - started
        page = scores.parent / "explore.html"
        files = [page, *(p for p in (scores.parent / "explore_files").rglob("*") if p.is_file())]
        total = sum(p.stat().st_size for p in files)
        print("\n".join(lines))
        print(
            f"tracin-explore: {seconds:.1f} s; page {page.stat().st_size / 2**20:.2f} MB, with its folder "
            f"{total / 2**20:.0f} MB in {len(files):,} files"
        )
        print(f"machine: {json.dumps(machine())}")
        if args.readme:
            figures = (
                f"At full CIFAR-10 size ({N_TEST:,} test x {N_TRAIN:,} train examples, top-{K}, {len(MODELS)} models; "
                f"random lists, so that nearly every train image is shown), tracin-explore took **{seconds:.0f} s** "
                f"and wrote a page of **{page.stat().st_size / 2**20:.1f} MB** with a folder beside it: "
                f"**{total / 2**20:.0f} MB** in {len(files):,} files in all ({_machine_line()}, "
                f"{datetime.date.today().isoformat()})."
            )
            put_in_readme(figures)


def _machine_line() -> str:
    facts = machine()
    return f"{facts.get('cpu', 'a CPU')}, {facts.get('cores', '?')} cores, {facts.get('device', 'no GPU')}"


def put_in_readme(text: str) -> None:
    """Replace what docs/cli.md holds between START and END with `text`, marked as generated."""
    readme = REPO / "docs" / "cli.md"
    before, rest = readme.read_text().split(START, 1)
    after = rest.split(END, 1)[1]
    readme.write_text(
        f"{before}{START}\n<!-- generated by scripts/bench_explore.py --readme; edit that script, not this text -->\n"
        f"{text}\n{END}{after}"
    )


if __name__ == "__main__":
    main()
