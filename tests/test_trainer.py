"""tracin.training.trainer: the epoch spine against plain reference loops, and what a run writes: the checkpoint set,
learning rates equal to torch's schedulers, shared student starts, exact resume, two processes."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR

from tracin.cli.main import train_main
from tracin.config import DataConfig, ModelConfig, TrainConfig
from tracin.errors import TracinError
from tracin.runtime import Runtime
from tracin.training import losses
from tracin.training.batches import steps_per_epoch, training_batches
from tracin.training.data import DatasetSpec, Split, load_data, normalize
from tracin.training.models import build_model
from tracin.training.optimization import build_optimizer, build_scheduler
from tracin.training.tables import confusion_matrix
from tracin.training.trainer import EpochResult, evaluate, objective_for, seeded_model, soft_loss, train_one_epoch

from conftest import ATOL, RTOL, TINY_RUN_ARGS, one_thread, run_tracin_train, subprocess_env, tracin_train_script

ROLES = ("teacher", "student", "student_baseline")
CHECKPOINT_KEYS = {
    "format",
    "version",
    "role",
    "model",
    "model_config",
    "optimizer",
    "scheduler",
    "epoch",
    "step",
    "lr",
    "lr_at_save",
    "metrics",
    "history",
    "config",
    "data_config",
    "data_fingerprint",
    "param_count",
    "teacher",
}
CPU = Runtime(torch.device("cpu"))
VOLATILE = {
    "seconds",
    "train_seconds",
    "eval_seconds",
    "path",
    "sha256",
}  # wall times, and where a file was: differ between two runs


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _cifar_args(root: str, out_root: Path) -> list[str]:
    return [
        "--dataset",
        "cifar10",
        "--data-root",
        root,
        "--no-checksum",
        "--out-root",
        str(out_root),
        "--width",
        "4",
        "--batch-size",
        "32",
        "--quiet",
    ]


def _train_in_process(argv: list) -> str:
    """train_main in this process; returns its stdout and fails on a non-zero exit."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), one_thread():
        assert train_main([str(a) for a in argv]) == 0
    return out.getvalue()


# ---------------------------------------------------------------------------------- batches and steps


def _indexed_split(n: int) -> Split:
    """Images whose pixels hold their own position (normalisation is the identity here)."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1) * torch.ones(1, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    spec = DatasetSpec("indexed", (0.0,), (1 / 255,), 1, True)
    return Split(images, labels, torch.arange(n), labels.clone(), spec, ("a", "b", "c"))


def _positions(images: torch.Tensor) -> torch.Tensor:
    # Pixel (1, 1) stays inside the image under a 1-pixel crop shift and a flip.
    return images[:, 0, 1, 1].round().long()


def test_training_batches_visit_every_example_once_in_an_order_set_by_seed_and_epoch():
    split = _indexed_split(40)

    def order(epoch: int, augment: bool = False, seed: int = 0) -> torch.Tensor:
        return torch.cat([_positions(x) for x, _, _ in training_batches(split, 8, seed, epoch, augment, CPU)])

    first = order(1)
    assert sorted(first.tolist()) == list(range(40))
    assert torch.equal(first, order(1)) and torch.equal(first, order(1, augment=True))
    assert not torch.equal(first, order(2)) and not torch.equal(first, order(1, seed=1))
    labels = torch.cat([y for _, y, _ in training_batches(split, 8, 0, 1, False, CPU)])
    assert torch.equal(labels, split.labels[first])


def test_ranks_train_on_contiguous_slices_of_the_same_augmented_global_batches():
    split = _indexed_split(43)
    whole = list(training_batches(split, 8, 0, 3, True, CPU))
    ranks = [list(training_batches(split, 8, 0, 3, True, Runtime(torch.device("cpu"), r, 2))) for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == steps_per_epoch(43, 8, 2) == 6
    for (images, labels, size), part0, part1 in zip(whole, *ranks):
        assert torch.equal(torch.cat([part0[0], part1[0]]), images)
        assert torch.equal(torch.cat([part0[1], part1[1]]), labels)
        assert size == part0[2] == part1[2] and abs(len(part0[1]) - len(part1[1])) <= 1
    # A last batch too small to give each rank an example is left out of that epoch.
    assert steps_per_epoch(41, 8, 1) == 6 and steps_per_epoch(41, 8, 2) == 5


@pytest.fixture(scope="module")
def cifar_data(cifar10_root):
    return load_data(DataConfig(dataset="cifar10", data_root=cifar10_root, checksum=False, train_subset=64))


def test_train_one_epoch_is_torch_sgd_on_the_mean_loss(cifar_data):
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, width=4)
    model = seeded_model(ModelConfig(stages=1, width=4), 0)
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, config)
    result = train_one_epoch(
        model,
        optimizer,
        build_scheduler(optimizer, config, 4),
        training_batches(cifar_data.train, 16, 0, 1, True, CPU),
        objective_for(None, TrainConfig(), CPU),
        CPU,
    )

    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    ref_scheduler = OneCycleLR(ref_optimizer, max_lr=0.05, total_steps=8, pct_start=0.5, cycle_momentum=False)
    reference.train()
    lrs, loss_sum = [], 0.0
    for images, labels, _ in training_batches(cifar_data.train, 16, 0, 1, True, CPU):
        loss = F.cross_entropy(reference(images), labels)
        ref_optimizer.zero_grad()
        loss.backward()
        lrs.append(ref_optimizer.param_groups[0]["lr"])
        ref_optimizer.step()
        ref_scheduler.step()
        loss_sum += loss.item() * len(labels)
    assert result.lrs == lrs
    assert result.loss == pytest.approx(loss_sum / 64, rel=RTOL)
    assert result.hard_loss == pytest.approx(loss_sum / 64, rel=RTOL)  # the objective is the hard-label loss here
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL, msg=name)


def test_evaluate_matches_a_direct_computation(cifar_data):
    model = seeded_model(ModelConfig(stages=2, width=4), 1).eval()
    images, labels = normalize(cifar_data.test.images, cifar_data.test.spec), cifar_data.test.labels
    logits = model(images)
    result = evaluate(model, cifar_data.test, CPU, batch_size=7)
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=RTOL)
    assert torch.equal(result.predictions, logits.argmax(1))
    assert result.accuracy == pytest.approx((logits.argmax(1) == labels).double().mean().item())


def test_confusion_matrix_counts_label_prediction_pairs():
    labels, predictions = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for y, p in zip(labels, predictions):
        expected[y, p] += 1
    assert torch.equal(confusion_matrix(predictions, labels, 3), expected)


def test_distillation_objective_reads_the_teacher_in_eval_mode():
    teacher = seeded_model(ModelConfig(stages=2, width=4), 2).train()
    statistics = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = objective_for(teacher, TrainConfig(epochs=2, width=4), CPU)
    images, logits, labels = torch.randn(8, 3, 32, 32), torch.randn(8, 10), torch.arange(8) % 10
    got = loss_fn(logits, labels, images)
    assert not teacher.training
    assert all(torch.equal(v, statistics[k]) for k, v in teacher.state_dict().items())
    expected = losses.distillation(logits, teacher(images), labels, 4.0, 0.7, "kl")
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------- what a run writes


def test_checkpoint_set_and_keys(tiny_run):
    record = json.loads((tiny_run / "run.json").read_text())
    for role in ROLES:
        folder = tiny_run / role
        names = {
            "init.pt",
            "epoch_002.pt",
            "epoch_004.pt",
            "last.pt",
            "history.csv",
            "curves.png",
            "confusion.png",
            "confusion.csv",
            "per_class.csv",
            "train.log",
        }
        assert {p.name for p in folder.iterdir()} == names
        for name in ("init.pt", "epoch_002.pt", "epoch_004.pt"):
            checkpoint = _load(folder / name)
            assert set(checkpoint) == CHECKPOINT_KEYS and checkpoint["role"] == role
            assert checkpoint["config"] == record["config"]
            assert checkpoint["data_fingerprint"] == record["data_fingerprint"]
            assert checkpoint["param_count"] == record["param_counts"][role]
        last, final = _load(folder / "last.pt"), _load(folder / "epoch_004.pt")
        assert set(last) == CHECKPOINT_KEYS | {"rng", "resume"}
        assert all(torch.equal(v, final["model"][k]) for k, v in last["model"].items())
        assert [_load(folder / f"epoch_00{e}.pt")["epoch"] for e in (2, 4)] == [2, 4]
        assert set(_load(folder / "epoch_002.pt")["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
        assert [row["epoch"] for row in final["history"]] == [1, 2, 3, 4] and _load(folder / "init.pt")["history"] == []
        assert record["models"][role]["status"] == "done"
        assert record["models"][role]["checkpoints"] == ["epoch_002.pt", "epoch_004.pt"]
        rows = list(csv.DictReader(open(folder / "history.csv")))
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
        assert matplotlib.image.imread(folder / "curves.png").ndim == 3
    counts = record["param_counts"]
    assert counts["student"] == counts["student_baseline"] < counts["teacher"]
    assert _load(tiny_run / "student" / "epoch_004.pt")["teacher"]["path"].endswith("teacher/epoch_004.pt")


def _scheduler_lrs(config: dict, steps: int) -> tuple[list[float], list[float]]:
    """Built here from the configuration alone: the lr of every optimizer step, and the scheduler's
    get_last_lr() after each step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config["lr"], momentum=0.9)
    total = config["epochs"] * steps
    if config["schedule"] == "onecycle":
        pct_start = config["warmup_epochs"] / config["epochs"]
        scheduler = OneCycleLR(
            optimizer, max_lr=config["lr"], total_steps=total, pct_start=pct_start, cycle_momentum=False
        )
    else:
        warmup = round(config["warmup_epochs"] * steps)
        linear = LinearLR(optimizer, 1 / 25, total_iters=warmup)
        schedules = [linear, CosineAnnealingLR(optimizer, T_max=total - warmup)]
        scheduler = SequentialLR(optimizer, schedules, milestones=[warmup])
    used, after = [], []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        after.append(scheduler.get_last_lr()[0])
    return used, after


def _assert_lrs_follow_the_schedule(folder: Path, steps: int) -> None:
    checkpoints = [_load(p) for p in sorted(folder.glob("epoch_*.pt"))]
    used, after = _scheduler_lrs(checkpoints[0]["config"], steps)
    previous = 0
    for checkpoint in checkpoints:
        step = checkpoint["step"]
        assert step == checkpoint["epoch"] * steps and checkpoint["scheduler"]["last_epoch"] == step
        interval = used[previous:step]
        assert checkpoint["lr"] == pytest.approx(sum(interval) / len(interval), rel=1e-12)
        assert checkpoint["lr_at_save"] == pytest.approx(after[step - 1], rel=1e-12)
        previous = step
    assert len(set(c["lr"] for c in checkpoints)) == len(checkpoints)  # the intervals really differ


def test_saved_lr_is_the_mean_onecycle_lr_of_its_interval(tiny_run):
    for role in ROLES:
        _assert_lrs_follow_the_schedule(tiny_run / role, steps=256 // 32)


def test_students_start_from_the_same_weights(tiny_run):
    student, baseline = _load(tiny_run / "student" / "init.pt"), _load(tiny_run / "student_baseline" / "init.pt")
    assert student["model"].keys() == baseline["model"].keys()
    assert all(torch.equal(v, baseline["model"][k]) for k, v in student["model"].items())
    assert (student["epoch"], student["step"], student["lr"]) == (0, 0, 0.0)
    final = {role: _load(tiny_run / role / "epoch_004.pt")["model"] for role in ("student", "student_baseline")}
    assert not torch.equal(final["student"]["fc.weight"], final["student_baseline"]["fc.weight"])


@pytest.fixture(scope="module")
def self_distilled_run(tmp_path_factory, cifar10_root):
    """Cosine schedule, self-distillation, students initialised from the teacher; 3 epochs, saves at 2, 3."""
    out_root = tmp_path_factory.mktemp("self")
    argv = [
        "--run",
        "self",
        *_cifar_args(cifar10_root, out_root),
        "--epochs",
        "3",
        "--save-every",
        "2",
        "--schedule",
        "cosine",
        "--distill",
        "self",
        "--student-init",
        "teacher",
    ]
    _train_in_process(argv)
    return out_root / "self"


def test_saved_lr_is_the_mean_cosine_lr_of_its_interval(self_distilled_run):
    # 300 examples in batches of 32: 10 steps an epoch; the last checkpoint closes a 1-epoch interval.
    for role in ROLES:
        _assert_lrs_follow_the_schedule(self_distilled_run / role, steps=10)


def test_self_distillation_is_cross_entropy_until_the_first_save(self_distilled_run):
    def model(role: str, name: str) -> dict:
        return _load(self_distilled_run / role / name)["model"]

    # Same start, same batches, same loss until epoch 2: bitwise the baseline. After it, the teacher is
    # the student's own epoch-2 checkpoint.
    for name in ("init.pt", "epoch_002.pt"):
        assert all(torch.equal(v, model("student_baseline", name)[k]) for k, v in model("student", name).items())
    student, baseline = model("student", "epoch_003.pt"), model("student_baseline", "epoch_003.pt")
    assert not torch.equal(student["fc.weight"], baseline["fc.weight"])
    assert _load(self_distilled_run / "student" / "epoch_003.pt")["teacher"] == "self"


def test_student_init_teacher_copies_the_final_teachers_stages(self_distilled_run):
    teacher = _load(self_distilled_run / "teacher" / "epoch_003.pt")["model"]
    student = _load(self_distilled_run / "student" / "init.pt")["model"]
    shared = [k for k in student if not k.startswith("fc.")]
    assert shared and all(torch.equal(student[k], teacher[k]) for k in shared)
    assert student["fc.weight"].shape != teacher["fc.weight"].shape


# ------------------------------------------------------------------------- resume, several processes


def _assert_same(a, b, where: str = "") -> None:
    """Equal values; tensors bitwise (torch.equal, same dtype)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a.keys() - VOLATILE:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _kill_at_epoch(command: list[str], epochs: int, timeout: float = 240) -> int:
    """Run `command` and have it SIGKILL itself right after its `epochs`-th saved epoch (counted over
    all models it trains; TRACIN_FAULT, an exact point rather than a race); returns its exit status."""
    fault = subprocess_env(TRACIN_FAULT=f"train-epoch:{epochs}:kill")
    return subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fault, timeout=timeout
    ).returncode


@pytest.mark.slow
@pytest.mark.parametrize("models,distill", [(("teacher", "student"), "teacher"), (("student",), "self")])
def test_resume_after_a_kill_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, cifar10_root, models, distill):
    args = [*_cifar_args(cifar10_root, tmp_path), "--models", *models, "--distill", distill, "--epochs", "4"]
    whole = run_tracin_train(["--run", "whole", *args])
    assert whole.returncode == 0, whole.stderr

    teacher_epochs = 4 if "teacher" in models else 0
    status = _kill_at_epoch([str(tracin_train_script()), "--run", "cut", *args], teacher_epochs + 2)
    assert status == -signal.SIGKILL
    assert _load(tmp_path / "cut" / "student" / "last.pt")["epoch"] == 2  # killed while training the student
    resumed = run_tracin_train(["--run", "cut", "--resume", *args])
    assert resumed.returncode == 0, resumed.stderr

    for role in models:
        names = sorted(p.name for p in (tmp_path / "whole" / role).glob("*.pt"))
        assert names == sorted(p.name for p in (tmp_path / "cut" / role).glob("*.pt"))
        for name in names:
            whole_file, cut_file = tmp_path / "whole" / role / name, tmp_path / "cut" / role / name
            _assert_same(_load(whole_file), _load(cut_file), f"{role}/{name}")
    invocations = json.loads((tmp_path / "cut" / "run.json").read_text())["invocations"]
    assert len(invocations) == 2 and "--resume" in invocations[1]["argv"]


def _run_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_processes_write_the_checkpoint_set_of_one(tmp_path, tiny_run, fashion_mnist_root):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(tracin_train_script()),
        "--",
        "--run",
        "tiny",
        "--out-root",
        str(tmp_path),
        "--data-root",
        fashion_mnist_root,
        *TINY_RUN_ARGS,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-4000:]
    ddp = tmp_path / "tiny"
    assert _run_files(ddp) == _run_files(tiny_run)
    for name in (n for n in _run_files(ddp) if n.endswith(".pt")):
        one, two = _load(tiny_run / name), _load(ddp / name)
        assert one.keys() == two.keys() and one["model"].keys() == two["model"].keys()
        for key in ("epoch", "step", "lr", "lr_at_save", "config", "model_config"):
            assert one[key] == two[key], (name, key)
    record = json.loads((ddp / "run.json").read_text())
    assert record["invocations"][0]["world_size"] == 2
    assert all(record["models"][role]["status"] == "done" for role in ROLES)
    assert record["data_fingerprint"] == json.loads((tiny_run / "run.json").read_text())["data_fingerprint"]


@pytest.mark.parametrize("optimizer,kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_a_constant_schedule_save_their_lr_and_optimizer(tmp_path, cifar10_root, optimizer, kind):
    """The "hello world" of the field: Adam at a constant lr of 1e-3. TracIn's weight of every checkpoint
    is that lr; the optimizer state is the configured one, its betas (momentum, 0.999)."""
    argv = [
        "--run",
        optimizer,
        *_cifar_args(cifar10_root, tmp_path),
        "--models",
        "teacher",
        "--epochs",
        "2",
        "--save-every",
        "1",
        "--optimizer",
        optimizer,
        "--schedule",
        "constant",
        "--warmup-epochs",
        "0",
        "--lr",
        "1e-3",
        "--momentum",
        "0.8",
        "--weight-decay",
        "0.01",
    ]
    _train_in_process(argv)
    checkpoints = [_load(p) for p in sorted((tmp_path / optimizer / "teacher").glob("epoch_*.pt"))]
    assert [c["lr"] for c in checkpoints] == pytest.approx([1e-3, 1e-3], rel=1e-12) and checkpoints[-1][
        "lr_at_save"
    ] == 1e-3
    model = build_model(ModelConfig.from_dict(checkpoints[-1]["model_config"]))
    config = TrainConfig.from_dict(checkpoints[-1]["config"])
    rebuilt = build_optimizer(model, config)
    assert isinstance(rebuilt, kind) and rebuilt.param_groups[0]["betas"] == (0.8, 0.999)
    assert rebuilt.param_groups[0]["weight_decay"] == 0.01
    rebuilt.load_state_dict(checkpoints[-1]["optimizer"])  # the saved state is this optimizer's


def test_constant_schedule_warms_up_then_holds_the_lr():
    config = TrainConfig(epochs=2, lr=0.5, schedule="constant", warmup_epochs=1.0)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, 4)
    lrs = []
    for _ in range(8):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5 / 25) and lrs[:4] == sorted(lrs[:4]) and lrs[4:] == [0.5] * 4


def test_nesterov_without_momentum_is_refused():
    with pytest.raises(TracinError, match="nesterov needs a momentum"):
        TrainConfig(momentum=0.0)
    assert TrainConfig(momentum=0.0, nesterov=False).momentum == 0.0


def test_per_class_tables_and_overlays_follow_the_confusion_matrix(tiny_run):
    """Each model's per_class.csv from its confusion.csv; the run's per_class.csv gathers them; history.csv
    keeps the hard- and soft-label parts (objective = alpha * soft + (1 - alpha) * hard for the student),
    train and evaluation seconds apart; train.log holds the epoch lines."""

    def rows(path):
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    run_rows = rows(tiny_run / "per_class.csv")
    for role in ROLES:
        confusion = rows(tiny_run / role / "confusion.csv")
        per_class = rows(tiny_run / role / "per_class.csv")
        for c, (matrix_row, row) in enumerate(zip(confusion, per_class)):
            counts = [int(v) for v in list(matrix_row.values())[1:]]
            assert int(row["n"]) == sum(counts) and int(row["correct"]) == counts[c]
            assert float(row["accuracy"]) == pytest.approx(counts[c] / sum(counts))
            assert float(run_rows[c][role]) == float(row["accuracy"])
        history = rows(tiny_run / role / "history.csv")
        assert len((tiny_run / role / "train.log").read_text().splitlines()) == len(history)
        for epoch in history:
            assert float(epoch["seconds"]) >= float(epoch["train_seconds"]) + float(epoch["eval_seconds"]) - 0.01
            assert (epoch["train_soft_loss"] != "") == (role == "student")  # only the distilled model has one
    assert (tiny_run / "per_class.png").stat().st_size > 5_000 and (tiny_run / "curves.png").stat().st_size > 5_000


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_soft_loss_recovers_the_soft_target_term_of_the_distillation_objective(kind):
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(32, 10, generator=generator), torch.randn(32, 10, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    config = TrainConfig(temperature=3.0, alpha=0.6, kd_loss=kind)
    total = losses.distillation(student, teacher, labels, config.temperature, config.alpha, kind).mean().item()
    hard = F.cross_entropy(student, labels).item()
    direct = (
        (
            config.temperature**2 * losses.soft_kl(student, teacher, config.temperature)
            if kind == "kl"
            else losses.logit_mse(student, teacher)
        )
        .mean()
        .item()
    )
    assert soft_loss(EpochResult(total, 0.0, [], hard), config) == pytest.approx(direct, rel=1e-6)


def test_a_rank_ends_when_its_launcher_is_killed(tmp_path):
    """Round 42, TR02: after kill -9 of torchrun's launcher its ranks slept for half an hour, waiting on it.
    A launcher (a process) starts a rank that watches it; the launcher is killed and the rank ends too."""
    import signal
    import subprocess
    import sys
    import time

    watching = tmp_path / "watching"
    rank = f"from tracin.runtime import end_with_launcher; import time; end_with_launcher(0.1); open({str(watching)!r}, 'w'); time.sleep(120)"
    launcher = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {rank!r}]); print(p.pid, flush=True); p.wait()"
    started = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    child = int(started.stdout.readline())
    deadline = time.monotonic() + 60
    while not watching.exists() and time.monotonic() < deadline:  # torch imported, the rank watching
        time.sleep(0.2)
    assert _alive(child) and watching.exists()
    started.send_signal(signal.SIGKILL)
    started.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """A process that runs (an ended one whose parent has not reaped it is a zombie: ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
