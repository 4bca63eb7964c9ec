"""tracin-eval: a CIFAR-10 run's models on CIFAR-100 files written in CIFAR-100's real on-disk format,
classes mapped by a --class-map file; accuracies against a direct computation."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tracin.training.checkpoints import load_model, sha256_file
from tracin.training.data import SPECS, normalize

from conftest import subprocess_env

FINE = ["apple", "aquarium_fish", "bus", "pickup_truck", "maple_tree"] + [f"class_{i}" for i in range(5, 100)]


def write_cifar100(root: Path, n: int = 60, seed: int = 0) -> Path:
    """CIFAR-100's python format under root/cifar-100-python: train, test and meta pickles."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        fine = rng.integers(0, 5, size=n)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {
            "filenames": [f"{name}_{i}.png" for i in range(n)],
            "batch_label": name,
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data,
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump(
            {"fine_label_names": FINE, "coarse_label_names": [f"super_{i}" for i in range(20)]}, handle, protocol=2
        )
    return root


def tool(name: str, *args) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name(name)), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=subprocess_env())


@pytest.fixture(scope="module")
def cifar10_run(tmp_path_factory, cifar10_root) -> Path:
    out = tmp_path_factory.mktemp("eval_runs")
    result = tool(
        "tracin-train",
        "--run",
        "c10",
        "--out-root",
        out,
        "--dataset",
        "cifar10",
        "--data-root",
        cifar10_root,
        "--no-checksum",
        "--epochs",
        "2",
        "--save-every",
        "1",
        "--width",
        "4",
        "--batch-size",
        "32",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return out / "c10"


def test_cifar100_with_a_class_map_equals_a_direct_evaluation(cifar10_run, tmp_path):
    root = write_cifar100(tmp_path / "data")
    class_map = tmp_path / "map.json"
    # round 25, M04: names are matched with case, spaces, '-' and '_' aside, on both sides of the map
    class_map.write_text(json.dumps({"Pickup Truck": "truck", "bus": "Auto-Mobile"}))
    result = tool(
        "tracin-eval",
        "--run",
        cifar10_run,
        "--eval-dataset",
        "cifar100",
        "--data-root",
        root,
        "--no-checksum",
        "--class-map",
        class_map,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    with open(root / "cifar-100-python" / "test", "rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    fine = np.array(batch["fine_labels"])
    keep = np.isin(fine, [2, 3])
    images = torch.from_numpy(batch["data"][keep].reshape(-1, 3, 32, 32).copy())
    labels = torch.tensor([1 if f == 2 else 9 for f in fine[keep]])  # bus -> automobile (1), pickup_truck -> truck (9)
    with open(cifar10_run / "eval_cifar100.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"teacher", "student", "student_baseline"}
    for name, row in rows.items():
        model, _ = load_model(cifar10_run / name / "epoch_002.pt", name)
        with torch.no_grad():
            predicted = model.eval()(normalize(images, SPECS["cifar10"])).argmax(1)
        assert int(row["examples"]) == int(keep.sum())
        assert float(row["accuracy"]) == pytest.approx((predicted == labels).double().mean().item())
        assert float(row["truck"]) == pytest.approx((predicted[labels == 9] == 9).double().mean().item())
    assert "automobile" in result.stdout and "truck" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no class of cifar100 maps to the run's classes"),
        (["--class-map", "MAP"], "not a class of the run"),
        # round 24, E10: both keys are 'bus' to the map; the later one won, the other dropped unsaid
        (["--class-map", "MAP2"], "--class-map names 'bus' and 'Bus ', one class name where case, width, spaces"),
        # round 26, C9: refused as "not a class", not for what is wrong with them
        (["--class-map", "MAP3"], "--class-map names 'tru\\u200bck': a class name is printable text, not empty"),
        (["--class-map", "MAP4"], "--class-map names '  ': a class name is printable text, not empty or blank"),
    ],
)
def test_eval_refusals_are_one_line(cifar10_run, tmp_path, args, message):
    root = write_cifar100(tmp_path / "data")
    (tmp_path / "map.json").write_text(json.dumps({"bus": "tram"}))
    (tmp_path / "MAP2").write_text(json.dumps({"bus": "truck", "Bus ": "automobile"}))
    (tmp_path / "MAP3").write_text(json.dumps({"pickup_truck": "tru\u200bck"}))
    (tmp_path / "MAP4").write_text(json.dumps({"  ": "truck"}))
    args = [str(tmp_path / "map.json") if a == "MAP" else str(tmp_path / a) if a.startswith("MAP") else a for a in args]
    written = cifar10_run / "eval_cifar100.csv"
    before = written.read_bytes() if written.exists() else None
    result = tool(
        "tracin-eval", "--run", cifar10_run, "--eval-dataset", "cifar100", "--data-root", root, "--no-checksum", *args
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (written.read_bytes() if written.exists() else None) == before  # an earlier result is left as it was


def test_eval_of_images_of_another_shape_is_refused(cifar10_run, fashion_mnist_root):
    class_map = Path(cifar10_run.parent / "fm_map.json")
    class_map.write_text(json.dumps({"Sneaker": "automobile"}))
    result = tool(
        "tracin-eval",
        "--run",
        cifar10_run,
        "--eval-dataset",
        "fashion-mnist",
        "--data-root",
        fashion_mnist_root,
        "--class-map",
        class_map,
    )
    assert result.returncode == 2 and "the run's models read (3, 32, 32)" in result.stderr, result.stderr


def test_a_data_json_with_other_classes_than_the_models_outputs_is_refused(cifar10_run, tmp_path):
    """Red-team find E3: a data.json naming 5 classes for 10-output models ended in torch's traceback."""
    run = tmp_path / "c10"
    shutil.copytree(cifar10_run, run)
    (run / "eval_cifar100.csv").unlink(missing_ok=True)  # an earlier test's result
    record = json.loads((run / "data.json").read_text())
    classes = list(record["classes"])
    record["classes"] = record["classes"][1:]  # nine names, automobile and truck among them
    (run / "data.json").write_text(json.dumps(record))
    root = write_cifar100(tmp_path / "data")
    (tmp_path / "map.json").write_text(json.dumps({"pickup_truck": "truck", "bus": "automobile"}))
    args = ("--eval-dataset", "cifar100", "--data-root", root, "--no-checksum", "--class-map", tmp_path / "map.json")
    result = tool("tracin-eval", "--run", run, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        "names the classes automobile, " in result.stderr and "the run's data set names them airplane" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1 and not (run / "eval_cifar100.csv").exists()
    (run / "data.json").write_text(json.dumps({**record, "classes": [classes[0] + "\u200b", *classes[1:]]}))
    result = tool("tracin-eval", "--run", run, *args)  # round 33, DJ13: a name that looks the same is shown apart
    assert (
        result.returncode == 2 and r"(class 0 is 'airplane\u200b' there, 'airplane' in the data set)" in result.stderr
    )
    (run / "data.json").write_text(json.dumps(record))
    record = json.loads((run / "run.json").read_text())  # a run from before the names were fingerprinted
    del record["data_fingerprint"]["classes"]
    for name, entry in record["models"].items():  # in its checkpoints too: in run.json alone, an edit (round 31)
        for file in entry["checkpoints"]:
            payload = torch.load(run / name / file, weights_only=True)
            del payload["data_fingerprint"]["classes"]
            torch.save(payload, run / name / file)
            entry["sha256"][file] = sha256_file(run / name / file)
    (run / "run.json").write_text(json.dumps(record))
    result = tool("tracin-eval", "--run", run, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "names 9 classes" in result.stderr and "10 outputs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (run / "eval_cifar100.csv").exists()


def test_an_eval_table_that_is_a_link_is_refused_before_the_evaluation(cifar10_run, tmp_path):
    """Red-team round 8, L8: a planted eval_cifar100.csv link was refused only after every model had been
    evaluated, as "the run folder". Here the data root is missing too: the link is what is named first."""
    run = tmp_path / "c10"
    shutil.copytree(cifar10_run, run)
    (run / "eval_cifar100.csv").unlink(missing_ok=True)  # an earlier test's result
    colleague = tmp_path / "colleague.csv"
    colleague.write_text("a colleague's table\n")
    (run / "eval_cifar100.csv").symlink_to(colleague)
    result = tool("tracin-eval", "--run", run, "--eval-dataset", "cifar100", "--data-root", tmp_path / "absent")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "eval_cifar100.csv is a symbolic link" in result.stderr
    assert colleague.read_text() == "a colleague's table\n"


@pytest.mark.parametrize("data", ["fashion-mnist", "cifar10 --no-checksum"])
def test_a_data_json_whose_class_names_were_swapped_is_refused(
    tiny_run, cifar10_run, tmp_path, fashion_mnist_root, cifar10_root, data
):
    """Round 8, J1: two class names swapped in data.json relabelled tracin-eval's per-class columns and
    changed its accuracies, without a word; round 17, J6: so too for CIFAR-format files read without checksums
    (which name their own classes: run.json's data fingerprint records them)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run if data == "fashion-mnist" else cifar10_run, run)
    record = json.loads((run / "data.json").read_text())
    record["classes"][0], record["classes"][1] = record["classes"][1], record["classes"][0]
    (run / "data.json").write_text(json.dumps(record))
    root = fashion_mnist_root if data == "fashion-mnist" else cifar10_root
    result = tool("tracin-eval", "--run", run, "--eval-dataset", *data.split(), "--data-root", root)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    first = "T-shirt/top, Trouser" if data == "fashion-mnist" else "airplane, automobile"
    assert f"the run's data set names them {first}" in result.stderr
    assert not (run / f"eval_{data.split()[0]}.csv").exists()


def test_a_colleagues_file_at_the_eval_tables_name_is_kept(tiny_run, tmp_path, fashion_mnist_root):
    """Round 18, E1: a colleague's eval_fashion-mnist.csv in the run folder was replaced without a word; a
    table tracin-eval wrote is known by its header."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "eval_fashion-mnist.csv").write_text("colleague's notes\n")
    result = tool("tracin-eval", "--run", run, "--eval-dataset", "fashion-mnist", "--data-root", fashion_mnist_root)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-eval: error: {run / 'eval_fashion-mnist.csv'} exists and is not a table tracin wrote; it is left as "
        "it is (move it away)"
    ]
    assert (run / "eval_fashion-mnist.csv").read_text() == "colleague's notes\n"
    (run / "eval_fashion-mnist.csv").unlink()
    for _ in range(2):  # its own table is replaced
        result = tool("tracin-eval", "--run", run, "--eval-dataset", "fashion-mnist", "--data-root", fashion_mnist_root)
        assert result.returncode == 0, result.stderr


def test_a_run_json_whose_training_settings_were_edited_is_refused(tiny_run, tmp_path, fashion_mnist_root):
    """Round 29, E8: run.json's config edited by hand (tracin-score and tracin-report refuse it) was evaluated
    and its table written without a word."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["config"]["lr"] *= 2
    (run / "run.json").write_text(json.dumps(record))
    result = tool("tracin-eval", "--run", run, "--eval-dataset", "fashion-mnist", "--data-root", fashion_mnist_root)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "was trained with lr" in result.stderr and "but run.json says" in result.stderr
    assert not (run / "eval_fashion-mnist.csv").exists()


def test_a_model_not_finished_is_named_where_eval_leaves_it_out(tiny_run, tmp_path, fashion_mnist_root):
    """Round 41, E09: a teacher killed after its last epoch, before it was marked done, was left out of the
    table without a word."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["models"]["teacher"]["status"] = "partial"
    (run / "run.json").write_text(json.dumps(record))
    result = tool("tracin-eval", "--run", run, "--eval-dataset", "fashion-mnist", "--data-root", fashion_mnist_root)
    assert result.returncode == 0, result.stderr
    assert (
        "note: teacher has not finished training (partial, epoch 4 of 4): left out of the evaluation" in result.stdout
    )
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert rows == ["student", "student_baseline"] and "note: student" not in result.stdout, result.stdout
