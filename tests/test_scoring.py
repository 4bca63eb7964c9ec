"""tracin-score end to end on a tiny trained run: layout, numbers against the engine and brute force,
resume after SIGKILL, torchrun, and every bad input giving one line and exit code 2."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import torch

from tracin.cli.main import build_score_parser, score_options
from tracin.config import DataConfig, ModelConfig, ScoreConfig
from tracin.engine.tracin import TracIn
from tracin.errors import TracinError
from tracin.results.store import ScoreFile, rankings_name
from tracin.training.checkpoints import list_checkpoints, load_checkpoint, sha256_file
from tracin.training.data import load_data
from tracin.training.losses import CrossEntropy, Distillation, TrainTest
from tracin.training.models import build_model

from conftest import BF16_RTOL, subprocess_env
from models_for_tests import relative_error

K = (3, 8)
SMALL = ("--train-subset", "96", "--test-subset", "24", "--topk", ",".join(map(str, K)), "--device", "cpu")
MANY_BLOCKS = ("--max-memory-gb", "0.01")  # ~10 MB: a few test blocks and row chunks per model


def tracin_score(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("tracin-score")
    return subprocess.run(
        [str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )


def score_args(run: Path, out: Path, *extra) -> list:
    return ["--run", run, "--scores", out, "--quiet", "--per-checkpoint", "--variants", "raw", *SMALL, *extra]


def assert_user_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracin-score: error:"), result.stderr
    assert pattern in lines[0], lines[0]


def datasets_of(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def assert_same_results(a: Path, b: Path) -> None:
    first, second = datasets_of(a), datasets_of(b)
    assert sorted(first) == sorted(second)
    for name in first:  # bitwise: NaN (an undefined CI or p-value) must be NaN in both
        mine, theirs = np.asarray(first[name]), np.asarray(second[name])
        same = np.array_equal(mine, theirs) if mine.dtype == object else mine.tobytes() == theirs.tobytes()
        if name.endswith(("block_digests", "unit_digests")):  # sha256 bound to their own file (file_seed)
            same = np.array_equal(mine != b"", theirs != b"")  # written for the same blocks or retrainings
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape and same, name


@pytest.fixture(scope="module")
def scored(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scored") / "tracin.h5"
    result = tracin_score(*score_args(tiny_run, out, *MANY_BLOCKS))
    assert result.returncode == 0, result.stderr
    assert "teacher vs student" in result.stdout and "overlap" in result.stdout
    return out


def positions_of(indices: np.ndarray, within: torch.Tensor) -> torch.Tensor:
    lookup = {int(v): i for i, v in enumerate(within)}
    return torch.tensor([lookup[int(v)] for v in indices])


def test_layout_and_attributes(scored, tiny_run):
    """What the file holds, read through the store (tests/test_store.py checks the raw layout)."""
    with ScoreFile.open_read(scored) as store:
        attributes = store.attributes
        assert attributes["format"] == "tracin-scores" and store.status == "complete"
        for key in (
            "tracin_version",
            "created",
            "dataset",
            "mode",
            "proj_dim",
            "proj_seed",
            "layers",
            "loss",
            "command",
        ):
            assert key in attributes, key
        assert store.mode == "exact" and attributes["dataset"] == "fashion-mnist"
        n_train, n_test = store.n_train, store.n_test
        assert (n_train, n_test) == (96, 24)
        assert np.array_equal(store.noisy, store.train_labels != store.train_clean_labels)
        run_data = json.loads((tiny_run / "data.json").read_text())
        assert set(store.train_index) <= set(run_data["train_index"])
        for role in ("teacher", "student"):
            scores = store.model(role)
            assert scores.epochs == [2, 4]
            assert scores.scores.shape == (n_train, n_test) and scores.matrix(1).shape == (n_train, n_test)
            assert scores.done.all()
            test, train = scores.rankings()
            assert test.top_index.shape == (n_test, max(K)) and train.bottom_score.shape == (n_train, max(K))
            assert scores.rankings(rankings_name(2))[0].top_index.shape == (n_test, max(K))
        assert store.model("teacher").done.size > 4  # the memory bound split the teacher's matrix
        assert "overlap" in store.comparison("teacher", "student")


def test_scores_equal_the_engine(scored, tiny_run):
    with ScoreFile.open_read(scored) as store:
        train_index, test_index = store.train_index, store.test_index
        stored = {}
        for role in ("teacher", "student"):
            scores = store.model(role)
            per_checkpoint = np.stack([scores.matrix(i)[:] for i in range(len(scores.epochs))])
            stored[role] = (scores.scores[()], per_checkpoint, scores.self_influence)
    record = json.loads((tiny_run / "run.json").read_text())
    data = load_data(DataConfig.from_dict(record["data_config"]))
    train = data.train.subset(positions_of(train_index, data.train.index))
    test = data.test.subset(positions_of(test_index, data.test.index))
    for role, (scores, per_checkpoint, self_influence) in stored.items():
        paths = list_checkpoints(tiny_run / role)
        model = build_model(ModelConfig.from_dict(load_checkpoint(paths[0])["model_config"]))
        tracin = TracIn(model, paths, device="cpu")
        # other chunking than the CLI's, so other float32 summation order: compare at the matrix's scale
        assert relative_error(torch.from_numpy(scores), tracin.scores(train, test)) < 1e-5
        assert relative_error(torch.from_numpy(self_influence), tracin.self_influence(train)) < 1e-5
        assert relative_error(torch.from_numpy(per_checkpoint.sum(0)), torch.from_numpy(scores)) < 1e-5


def test_bf16_precision_is_recorded_and_close_to_float32(scored, tiny_run, tmp_path):
    out = tmp_path / "bf16.h5"
    result = tracin_score(*score_args(tiny_run, out, "--precision", "bf16"))
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(out) as bf16, ScoreFile.open_read(scored) as exact:
        assert bf16.attributes["precision"] == "bf16" and exact.attributes["precision"] == "float32"
        for role in ("teacher", "student"):
            error = relative_error(
                torch.from_numpy(bf16.model(role).scores[()]), torch.from_numpy(exact.model(role).scores[()])
            )
            assert 1e-6 < error < BF16_RTOL, role
    assert_user_error(tracin_score(*score_args(tiny_run, tmp_path / "tf32.h5", "--precision", "tf32")), "CUDA mode")


def test_a_budget_beyond_the_free_memory_is_warned_about_once(tiny_run, tmp_path):
    """Round 8, O13: the warning was printed once per scored model."""
    result = tracin_score(*score_args(tiny_run, tmp_path / "t.h5", "--max-memory-gb", "1e6"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("warning: --max-memory-gb 1e+06 is more than the") == 1, result.stdout


def test_topk_tables_equal_a_full_sort(scored):
    with ScoreFile.open_read(scored) as store:
        for role in ("teacher", "student"):
            model = store.model(role)
            scores = model.scores[()]
            test, train = model.rankings()
            assert np.array_equal(test.top_index, np.argsort(-scores.T, axis=1, kind="stable")[:, : max(K)])
            assert np.array_equal(test.bottom_index, np.argsort(scores.T, axis=1, kind="stable")[:, : max(K)])
            assert np.array_equal(train.top_index, np.argsort(-scores, axis=1, kind="stable")[:, : max(K)])
            assert np.array_equal(train.top_score, -np.sort(-scores, axis=1)[:, : max(K)])
            epoch = model.matrix(1)[:]
            assert np.array_equal(
                model.rankings(rankings_name(4))[0].top_index, np.argsort(-epoch.T, axis=1, kind="stable")[:, : max(K)]
            )


def brute_force_overlap(a: np.ndarray, b: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a/b [rows, n]: |top-k ∩ top-k| / k and the Jaccard index, by Python sets."""
    sign = -1 if largest else 1
    overlap, jaccard = [], []
    for row_a, row_b in zip(a, b):
        set_a = set(np.argsort(sign * row_a, kind="stable")[:k].tolist())
        set_b = set(np.argsort(sign * row_b, kind="stable")[:k].tolist())
        overlap.append(len(set_a & set_b) / k)
        jaccard.append(len(set_a & set_b) / len(set_a | set_b))
    return np.array(overlap), np.array(jaccard)


def test_comparison_equals_brute_force(scored):
    with ScoreFile.open_read(scored) as store:
        tables = store.comparison("teacher", "student")
        overlap, correlation, ks, self_corr = (
            tables[n] for n in ("overlap", "rank_correlation", "ks", "self_influence")
        )
        teacher, student = store.model("teacher"), store.model("student")
        matrices = {
            "sum": (teacher.scores[()], student.scores[()]),
            "epoch_002": (teacher.matrix(0)[:], student.matrix(0)[:]),
        }
        self_influence = (teacher.self_influence, student.self_influence)
    for scope, (a, b) in matrices.items():
        for direction, (rows_a, rows_b), n in (("test", (a.T, b.T), a.shape[0]), ("train", (a, b), a.shape[1])):
            for side, largest in zip(
                ("proponents", "opponents") if direction == "test" else ("top", "bottom"), (True, False)
            ):
                for k in K:
                    pick = overlap[
                        (overlap["scope"] == scope.encode())
                        & (overlap["direction"] == direction.encode())
                        & (overlap["side"] == side.encode())
                        & (overlap["k"] == k)
                    ]
                    expected, jaccard = brute_force_overlap(rows_a, rows_b, k, largest)
                    assert len(pick) == 1
                    assert pick["mean"][0] == pytest.approx(expected.mean())
                    assert pick["min"][0] == pytest.approx(expected.min()) and pick["max"][0] == pytest.approx(
                        expected.max()
                    )
                    assert pick["median"][0] == pytest.approx(np.median(expected))
                    assert pick["jaccard"][0] == pytest.approx(jaccard.mean())
                    assert pick["chance"][0] == pytest.approx(k / n)
            spearman = [scipy.stats.spearmanr(x, y).statistic for x, y in zip(rows_a, rows_b)]
            kendall = [scipy.stats.kendalltau(x, y).statistic for x, y in zip(rows_a, rows_b)]
            for name, values in (("spearman", spearman), ("kendall", kendall)):
                pick = correlation[
                    (correlation["scope"] == scope.encode())
                    & (correlation["direction"] == direction.encode())
                    & (correlation["statistic"] == name.encode())
                ]
                assert pick["mean"][0] == pytest.approx(np.mean(values)) and pick["n_rows"][0] == len(values)
        row = ks[ks["scope"] == scope.encode()][0]
        assert row["statistic"] == pytest.approx(scipy.stats.ks_2samp(a.ravel(), b.ravel()).statistic)
    assert self_corr["scope"].tolist() == [b"sum"]
    assert self_corr["spearman"][0] == pytest.approx(scipy.stats.spearmanr(*self_influence).statistic)
    assert self_corr["pearson"][0] == pytest.approx(scipy.stats.pearsonr(*self_influence).statistic, rel=1e-5)


def read_done(path: Path) -> tuple[int, int]:
    """(blocks done, blocks) over both models, read without taking the writer's file lock."""
    try:
        with ScoreFile.open_read(path, locking=False) as store:
            masks = [store.model(role).done for role in ("teacher", "student") if role in store.models]
    except (TracinError, OSError, KeyError, ValueError):
        return 0, 0
    return sum(int(m.sum()) for m in masks), 2 * max((m.size for m in masks), default=1)


def kill_midway(args: list, out: Path) -> None:
    """Run tracin-score and have it SIGKILL itself right after its third block is on disk (TRACIN_FAULT:
    an exact point, not a race with a timer)."""
    script = Path(sys.executable).with_name("tracin-score")
    process = subprocess.run(
        [str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(TRACIN_FAULT="score-block:3:kill"),
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    done, total = read_done(out)
    assert done == 3 < total


@pytest.fixture(scope="module")
def killed_copy(tiny_run, tmp_path_factory) -> Path:
    """A partial result file left by a SIGKILLed run (copied, so each test gets its own)."""
    out = tmp_path_factory.mktemp("killed") / "tracin.h5"
    kill_midway(score_args(tiny_run, out, *MANY_BLOCKS), out)
    return out


def test_resume_after_sigkill_gives_the_uninterrupted_file(killed_copy, tiny_run, scored, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(killed_copy, out)
    result = tracin_score(*score_args(tiny_run, out, *MANY_BLOCKS))
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert_same_results(out, scored)


def test_partial_file_with_other_settings_is_refused(killed_copy, tiny_run, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(killed_copy, out)
    before = datasets_of(out)
    result = tracin_score(*score_args(tiny_run, out, *MANY_BLOCKS, "--mode", "last-layer"))
    assert_user_error(result, "--mode ('exact' in the file, 'last-layer' now)")
    after = datasets_of(out)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_partial_file_with_changed_checkpoints_is_refused(killed_copy, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "tracin.h5"
    shutil.copy(killed_copy, out)
    path = run / "teacher" / "epoch_002.pt"
    payload = torch.load(path, weights_only=True)
    payload["metrics"] = {**payload["metrics"], "note": 1.0}  # same weights, another file
    torch.save(payload, path)
    record = json.loads((run / "run.json").read_text())  # as a training would record it
    record["models"]["teacher"]["sha256"]["epoch_002.pt"] = sha256_file(path)
    (run / "run.json").write_text(json.dumps(record))
    result = tracin_score(
        *score_args(
            run,
            out,
            *MANY_BLOCKS,
            "--data-root",
            json.loads((run / "run.json").read_text())["data_config"]["data_root"],
        )
    )
    assert_user_error(result, "teacher checkpoints sha256")
    assert "checkpoints changed since (trained on, or replaced): pass --overwrite to score them" in result.stderr  # UF8


def test_torchrun_two_processes_killed_and_resumed_write_the_same_file(tiny_run, scored, tmp_path):
    """Rank 0 SIGKILLed after its first block: the other rank says so in one line, not gloo's traceback (round
    38, T03-T05; torchrun's own report of the killed child stays), and the same command finishes the file."""
    out = tmp_path / "tracin.h5"
    script = Path(sys.executable).with_name("tracin-score")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        "--",
        *map(str, score_args(tiny_run, out, *MANY_BLOCKS)),
    ]
    patient = [*command[:3], "--monitor-interval=20", *command[3:]]  # torchrun's SIGTERM would beat rank 1's line
    killed = subprocess.run(
        patient, capture_output=True, text=True, timeout=600, env=subprocess_env(TRACIN_FAULT="score-block:1:kill")
    )
    said = "tracin-score: error: another process of this torchrun ended while this one waited for it"
    assert killed.returncode != 0 and said in killed.stderr, killed.stderr[-3000:]
    assert not re.search(r"tracin/[\w/]+\.py\", line", killed.stderr), killed.stderr[-3000:]  # no frame of ours
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_results(out, scored)


def test_a_lost_peer_is_one_line_and_any_other_collective_error_keeps_its_own():
    """gloo's words for a peer gone (its RuntimeError) become the one line; a bug in a collective stays a bug."""
    from tracin.runtime import _naming_lost_peers

    gone = "[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:19862: Connection reset by peer. This is ..."
    with pytest.raises(TracinError, match="another process of this torchrun ended while this one waited for it"):
        with _naming_lost_peers():
            raise RuntimeError(gone)
    with pytest.raises(RuntimeError, match="size mismatch"):
        with _naming_lost_peers():
            raise RuntimeError("size mismatch in all_reduce")


def test_the_command_line_leads_with_train_normalised_and_the_api_with_raw():
    assert score_options(build_score_parser().parse_args(["--run", "r"]), []).score.variants == ("train-normalised",)
    assert ScoreConfig().variants == ("raw",)


def test_no_cuda_graphs_option_reaches_the_score_options():
    parser = build_score_parser()
    default = score_options(parser.parse_args(["--run", "r"]), [])
    eager = score_options(parser.parse_args(["--run", "r", "--no-cuda-graphs"]), [])
    assert default.engine.cuda_graphs and not eager.engine.cuda_graphs


def test_finished_file_is_kept_without_overwrite(scored, tiny_run, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(scored, out)
    again = tracin_score(*score_args(tiny_run, out))  # the same command: nothing to do (round 10, S14)
    assert again.returncode == 0 and "is finished with these settings: nothing to do" in again.stdout, again.stderr
    assert_user_error(
        tracin_score(*score_args(tiny_run, out, "--models", "student")), "holds a result made with other settings"
    )  # named (round 13, S1)
    assert (
        tracin_score(*score_args(tiny_run, out, "--overwrite", "--models", "student,student_baseline")).returncode == 0
    )
    with ScoreFile.open_read(out) as store:
        assert store.models == ["student", "student_baseline"]


@pytest.mark.parametrize(
    "topk, message",
    [
        ("100", "larger than the set"),
        ("", "--topk is given an empty value"),
        (" , ", "at least one k"),
        ("5,x", "comma-separated positive integers"),
        ("0", "positive"),
        ("5,5", "names a k twice"),
    ],
)
def test_bad_topk_is_one_clear_error(tiny_run, tmp_path, topk, message):
    args = [a for a in score_args(tiny_run, tmp_path / "t.h5") if a not in ("--topk", ",".join(map(str, K)))]
    assert_user_error(tracin_score(*args, "--topk", topk), message)
    assert not (tmp_path / "t.h5").exists()


def test_corrupt_and_truncated_result_files_are_refused(scored, tiny_run, tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5" * 100)
    assert_user_error(tracin_score(*score_args(tiny_run, garbage)), "not a readable HDF5 file")
    assert garbage.read_bytes() == b"this is not HDF5" * 100
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(scored.read_bytes()[: scored.stat().st_size // 3])
    assert_user_error(tracin_score(*score_args(tiny_run, truncated)), "not a readable HDF5 file")
    # round 19, T2: --overwrite cannot tell a damaged file from a colleague's either; the line says the way on
    assert_user_error(tracin_score(*score_args(tiny_run, truncated), "--overwrite"), "move it away and score the run")


def test_corrupt_and_wrong_checkpoints_are_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    root = json.loads((run / "run.json").read_text())["data_config"]["data_root"]
    epoch = run / "student" / "epoch_002.pt"
    shutil.copy(run / "teacher" / "epoch_002.pt", epoch)
    assert_user_error(
        tracin_score(*score_args(run, tmp_path / "a.h5", "--data-root", root)),
        "is a teacher checkpoint, expected student",
    )
    epoch.write_bytes((tiny_run / "student" / "epoch_002.pt").read_bytes()[:1000])
    assert_user_error(tracin_score(*score_args(run, tmp_path / "b.h5", "--data-root", root)), "truncated or corrupt")
    assert_user_error(
        tracin_score(*score_args(run, tmp_path / "c.h5", "--data-root", root, "--checkpoints", "3")),
        "no checkpoint for epoch(s) [3]",
    )


def test_mismatched_data_and_missing_run_are_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["data_config"]["label_noise"] = 0.3  # other labels than the models were trained on
    (run / "run.json").write_text(json.dumps(record))
    assert_user_error(tracin_score(*score_args(run, tmp_path / "a.h5")), "(train_labels_sha256, label_noise differ)")
    assert_user_error(tracin_score(*score_args(tmp_path / "nothing", tmp_path / "b.h5")), "no run.json")


def test_a_checkpoint_trained_on_other_data_than_run_json_says_is_refused_though_its_digest_was_rewritten(
    tiny_run, tmp_path
):
    """Round 32, H18, H28: a checkpoint's own data settings (or teacher) edited, and its sha256 rewritten in
    run.json, were scored without a word; tracin-score compares them with run.json as tracin-eval does."""
    import hashlib

    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    last = run / "student" / record["models"]["student"]["checkpoints"][-1]
    payload = torch.load(last, weights_only=False)
    payload["data_config"]["train_subset"] = int(payload["data_config"]["train_subset"]) // 2
    torch.save(payload, last)
    record["models"]["student"]["sha256"][last.name] = hashlib.sha256(last.read_bytes()).hexdigest()
    (run / "run.json").write_text(json.dumps(record))
    assert_user_error(
        tracin_score(*score_args(run, tmp_path / "a.h5", "--models", "student")),
        f"{run / 'run.json'} records another configuration than {last} was trained with: --train-subset",
    )
    assert not (tmp_path / "a.h5").exists()


def test_a_recorded_data_root_without_the_data_is_refused_not_filled(tiny_run, tmp_path):
    """Round 18, D8: run.json's data root edited to an absent folder was made, and 55 MB of Fashion-MNIST
    unpacked into it, by tracin-score."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["data_config"]["data_root"] = str(tmp_path / "nowhere")
    (run / "run.json").write_text(json.dumps(record))
    assert_user_error(
        tracin_score(*score_args(run, tmp_path / "a.h5")),
        f"the data root {tmp_path / 'nowhere'} run.json records does not hold the run's data set, fashion-mnist",
    )
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "a.h5").exists()


def test_other_images_with_the_same_labels_are_refused(tiny_run, fashion_mnist_root, tmp_path):
    """Only indices and labels were fingerprinted once: other pixels under the same labels were scored."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    shutil.copytree(Path(fashion_mnist_root) / "FashionMNIST" / "raw", raw)
    images = raw / "train-images-idx3-ubyte"
    content = bytearray(images.read_bytes())
    content[16:] = bytes(255 - b for b in content[16:])  # every image inverted, labels untouched
    images.write_bytes(bytes(content))
    result = tracin_score(*score_args(tiny_run, tmp_path / "a.h5"), "--data-root", tmp_path / "data")
    assert_user_error(result, "(train_pixels_sha256 differ)")


def test_kd_loss_scores_a_student_with_its_own_distillation_objective(tmp_path, fashion_mnist_root):
    """A run distilled with T=2, alpha=0.5 (not the defaults): `--loss kd` must score the student with
    exactly that objective against its recorded teacher."""
    from conftest import run_tracin_train

    result = run_tracin_train(
        [
            "--run",
            "kd",
            "--out-root",
            tmp_path,
            "--data-root",
            fashion_mnist_root,
            "--dataset",
            "fashion-mnist",
            "--train-subset",
            "128",
            "--test-subset",
            "32",
            "--epochs",
            "2",
            "--width",
            "4",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--models",
            "teacher",
            "student",
            "--temperature",
            "2",
            "--alpha",
            "0.5",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    run, out = tmp_path / "kd", tmp_path / "kd.h5"
    result = tracin_score(
        "--run",
        run,
        "--scores",
        out,
        "--models",
        "student",
        "--loss",
        "kd",
        "--quiet",
        "--variants",
        "raw",
        "--train-subset",
        "32",
        "--test-subset",
        "8",
        "--topk",
        "3",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(out) as store:
        stored, train_index, test_index = store.model("student").scores[()], store.train_index, store.test_index
    data = load_data(DataConfig.from_dict(json.loads((run / "run.json").read_text())["data_config"]))
    train = data.train.subset(positions_of(train_index, data.train.index))
    test = data.test.subset(positions_of(test_index, data.test.index))
    teacher_payload = load_checkpoint(list_checkpoints(run / "teacher")[-1])
    teacher = build_model(ModelConfig.from_dict(teacher_payload["model_config"]))
    teacher.load_state_dict(teacher_payload["model"])
    paths = list_checkpoints(run / "student")
    student = build_model(ModelConfig.from_dict(load_checkpoint(paths[0])["model_config"]))

    def kd_scores(temperature, alpha):
        tracin = TracIn(student, paths, loss=Distillation(teacher, temperature, alpha), device="cpu")
        return tracin.scores(train, test)

    assert relative_error(torch.from_numpy(stored), kd_scores(2.0, 0.5)) < 1e-5
    assert relative_error(torch.from_numpy(stored), kd_scores(4.0, 0.7)) > 1e-2  # the defaults are not what it used

    # --loss kd-train: the train side by that objective, the test side by the test label's cross-entropy
    own = tmp_path / "own.h5"
    result = tracin_score(
        "--run",
        run,
        "--scores",
        own,
        "--models",
        "student",
        "--loss",
        "kd-train",
        "--quiet",
        "--variants",
        "raw",
        "--train-subset",
        "32",
        "--test-subset",
        "8",
        "--topk",
        "3",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(own) as store:
        stored_own = torch.from_numpy(store.model("student").scores[()])
    expected = TracIn(
        student, paths, loss=TrainTest(Distillation(teacher, 2.0, 0.5), CrossEntropy()), device="cpu"
    ).scores(train, test)
    assert relative_error(stored_own, expected) < 1e-5
    assert relative_error(stored_own, torch.from_numpy(stored)) > 1e-2


def test_a_kd_scored_student_uses_its_own_objective_label_smoothing_included(tmp_path):
    """build_engine once dropped the student's label smoothing while claiming its training objective."""
    from tracin.commands.score import ScoreOptions, scoring_loss
    from tracin.config import TrainConfig
    from tracin.training.checkpoints import save_atomic, teacher_record

    teacher = build_model(ModelConfig(stages=1, width=2, in_channels=1, num_classes=3))
    path = tmp_path / "teacher.pt"
    save_atomic(
        {
            "format": "tracin-checkpoint",
            "role": "teacher",
            "epoch": 1,
            "step": 1,
            "lr": 0.1,
            "model": teacher.state_dict(),
            "model_config": ModelConfig(stages=1, width=2, in_channels=1, num_classes=3).to_dict(),
            "config": {},
            "data_fingerprint": {},
        },
        path,
    )
    config = TrainConfig(temperature=2.5, alpha=0.4, kd_loss="mse", label_smoothing=0.2)
    last = {"role": "student", "config": config.to_dict(), "teacher": teacher_record(path, {"epoch": 1})}
    loss = scoring_loss("student", last, ScoreOptions(run="r", loss="kd"))
    assert (loss.temperature, loss.alpha, loss.kind, loss.label_smoothing) == (2.5, 0.4, "mse", 0.2)
    assert scoring_loss("teacher", last, ScoreOptions(run="r", loss="kd")).label_smoothing == 0.0
    assert scoring_loss("student", last, ScoreOptions(run="r", loss="ce")).label_smoothing == 0.0
    own = scoring_loss(
        "student", last, ScoreOptions(run="r", loss="kd-train")
    )  # the train side's is the training objective
    assert isinstance(own, TrainTest) and own.test == CrossEntropy()
    assert (own.train.temperature, own.train.alpha, own.train.kind, own.train.label_smoothing) == (2.5, 0.4, "mse", 0.2)
    teacher_side = scoring_loss("teacher", {**last, "teacher": None}, ScoreOptions(run="r", loss="kd-train"))
    assert teacher_side.train == CrossEntropy(0.2) and teacher_side.test == CrossEntropy()
    with pytest.raises(TracinError, match="self-distilled"):
        scoring_loss("student", {**last, "teacher": "self"}, ScoreOptions(run="r", loss="kd-train"))
    for record, how in ((None, "trained without a teacher"), ("self", "self-distilled")):  # round 37, O6: "None"
        with pytest.raises(TracinError, match=rf"^--loss kd: student_baseline has no teacher checkpoint .*{how}"):
            scoring_loss("student_baseline", {**last, "teacher": record}, ScoreOptions(run="r", loss="kd"))


def test_score_variants_are_stored_ranked_and_compared(tiny_run, tmp_path):
    """--variants raw,cosine,train-normalised: one pass, each variant a dataset that says which it holds,
    its own top-k tables and its own comparison scope, equal to the engine's."""
    out = tmp_path / "variants.h5"
    args = ["--run", tiny_run, "--scores", out, "--quiet", *SMALL, "--variants", "cosine,raw,train-normalised"]
    result = tracin_score(*args)
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(out) as store:
        teacher = store.model("teacher")
        assert teacher.variants == ["cosine", "raw", "train-normalised"]
        stored = {v: teacher.matrix(variant=v)[()] for v in teacher.variants}
        test_top = teacher.rankings(rankings_name(variant="train-normalised"))[0]
        overlap = store.comparison("teacher", "student")["overlap"]
        train_index, test_index = store.train_index, store.test_index
    assert {b"sum", b"raw", b"train-normalised"} <= set(overlap["scope"])
    expected_top = np.argsort(-stored["train-normalised"], axis=0, kind="stable")[: K[-1]].T
    assert np.array_equal(np.sort(test_top.top_index, axis=1), np.sort(expected_top, axis=1))
    record = json.loads((tiny_run / "run.json").read_text())
    data = load_data(DataConfig.from_dict(record["data_config"]))
    train = data.train.subset(positions_of(train_index, data.train.index))
    test = data.test.subset(positions_of(test_index, data.test.index))
    paths = list_checkpoints(tiny_run / "teacher")
    model = build_model(ModelConfig.from_dict(load_checkpoint(paths[0])["model_config"]))
    engine = TracIn(model, paths, ScoreConfig(variants=("raw", "cosine", "train-normalised")), device="cpu")
    for variant, values in engine.scores_by_variant(train, test).items():
        assert relative_error(torch.from_numpy(stored[variant]), values) < 1e-5, variant


def test_named_layer_groups_partition_the_scores(tiny_run, tmp_path):
    """--group NAME=PREFIXES: the user's own groups (the rest in "other"), whose raw@GROUP scores add up
    to raw TracInCP over every parameter; a malformed --group or a group the model lacks is one line."""
    out = tmp_path / "groups.h5"
    result = tracin_score(
        "--run",
        tiny_run,
        "--scores",
        out,
        "--quiet",
        "--models",
        "teacher",
        *SMALL,
        "--variants",
        "raw,raw@*",
        "--group",
        "early=conv1,bn1,layer1",
        "--group",
        "late=layer4,fc",
    )
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(out) as store:
        teacher = store.model("teacher")
        assert teacher.variants == ["raw", "raw@early", "raw@other", "raw@late"]  # groups in model order
        assert list(teacher.group_self_influence) == ["early", "other", "late"]
        parts = sum(teacher.matrix(variant=v)[()] for v in teacher.variants[1:])
        np.testing.assert_allclose(parts, teacher.matrix()[()], rtol=1e-4, atol=1e-6 * np.abs(parts).max())
        np.testing.assert_allclose(sum(teacher.group_self_influence.values()), teacher.self_influence, rtol=1e-5)
    for args, message in (
        (["--group", "early"], "--group takes NAME=PREFIX"),
        (["--variants", "raw@layer9"], "no layer group 'layer9'"),
    ):
        result = tracin_score(
            "--run", tiny_run, "--scores", tmp_path / "bad.h5", "--quiet", "--models", "teacher", *SMALL, *args
        )
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "bad.h5").exists()


def test_cap_topk_lowers_a_k_larger_than_the_set_and_the_time_per_pair_is_kept(tiny_run, tmp_path):
    out = tmp_path / "capped.h5"
    args = [
        a
        for a in score_args(tiny_run, out)
        if a not in ("--topk", ",".join(map(str, K)), "--quiet", "--per-checkpoint")
    ]
    result = tracin_score(*args, "--models", "student", "--topk", "3,100000", "--cap-topk")
    assert result.returncode == 0, result.stderr
    with ScoreFile.open_read(out) as store:
        limit = min(store.n_train, store.n_test)
        assert store.model("student").rankings()[0].top_index.shape[1] == limit
        overlap = store.comparison_pairs()  # one model: no pairs, but the k were capped, not refused
        per_pair = store.model("student").seconds_per_pair
    assert f"--topk capped at {limit} examples: k = 3, {limit}" in result.stdout and overlap == []
    assert per_pair > 0 and "s per train-test pair" in result.stdout


def test_plot_examples_outside_the_scored_test_set_are_refused_before_scoring(tiny_run, tmp_path):
    """Red-team find S28: --plots --examples 999999 was refused only after the whole scoring had run."""
    out = tmp_path / "t.h5"
    assert_user_error(tracin_score(*score_args(tiny_run, out), "--plots", "--examples", "999999"), "--examples 999999")
    assert not out.exists()


def test_a_replica_left_out_of_scoring_is_noted():
    """Round 38, P01: student.r1, killed in its training, was left out of --models teacher,student without a
    word (a role's replicas are scored up to the first unfinished one); --replicas chooses without a note."""
    from types import SimpleNamespace

    from tracin.commands.score import model_names
    from tracin.options import ScoreOptions
    from tracin.results.runs import left_out_notes

    entry = {"status": "done", "epoch": 2, "epochs": 2, "checkpoints": ["epoch_002.pt"]}
    partial = {**entry, "status": "partial", "epoch": 1, "checkpoints": []}
    names = ("teacher", "student", "student_baseline", "teacher.r1", "student.r1", "student.r2")
    models = dict.fromkeys(names, entry) | {"student.r1": partial}
    run = SimpleNamespace(record={"models": models})
    options = ScoreOptions(run="r", models=("teacher", "student"))
    scored = model_names(run, options)
    assert scored == ("teacher", "student", "teacher.r1")
    assert left_out_notes(run, options, scored) == [
        "note: student.r1 is left out of the replicas scored: it has not finished training (partial, epoch 1 of 2); "
        "tracin-train --resume finishes it",
        "note: student.r2 is left out of the replicas scored: a replica before it has not finished training; name "
        "it in --models to score it",
    ]
    run.record["models"]["student.r1"] = {**partial, "checkpoints": ["epoch_001.pt"]}
    assert left_out_notes(run, options, scored)[0].endswith("or name it in --models to score its saved checkpoints")
    chosen = ScoreOptions(run="r", models=("teacher", "student"), replicas=1)
    assert left_out_notes(run, chosen, model_names(run, chosen)) == []
