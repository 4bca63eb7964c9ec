"""tracin-sweep: a temperature sweep in one command (one shared teacher and baseline, a student per value),
a teacher-quality sweep over the shared teacher's checkpoints, a sweep that retrains the teacher, resume,
and the results table against each run's own record."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracin.commands.sweep import Sweep, check_grid, flags_of, parse_vary, train_arguments
from tracin.errors import TracinError

from conftest import demo_copy, subprocess_env

TINY = (
    "--dataset",
    "fashion-mnist",
    "--train-subset",
    "256",
    "--test-subset",
    "64",
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


def without(*flags: str) -> tuple[str, ...]:
    """TINY without these options and their values (a setting a sweep varies is not given fixed too)."""
    kept, words = [], iter(TINY)
    for word in words:
        if word in flags:
            next(words)
        else:
            kept.append(word)
    return tuple(kept)


def tracin_sweep(*args, cwd=None) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("tracin-sweep")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=subprocess_env(), cwd=cwd)


@pytest.fixture(scope="module")
def temperature_sweep(tmp_path_factory, fashion_mnist_root) -> Path:
    out = tmp_path_factory.mktemp("sweeps")
    result = tracin_sweep(
        "--sweep",
        "temperature",
        "--out-root",
        out,
        "--vary",
        "temperature=1,2,5",
        "--data-root",
        fashion_mnist_root,
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    return out / "temperature"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_temperature_sweep_trains_one_teacher_and_baseline_and_a_student_per_value(temperature_sweep):
    assert sorted(p.name for p in temperature_sweep.iterdir() if p.is_dir()) == [
        "base",
        "temperature-1",
        "temperature-2",
        "temperature-5",
    ]
    assert (temperature_sweep / "base" / "teacher").is_dir() and (
        temperature_sweep / "base" / "student_baseline"
    ).is_dir()
    teacher = temperature_sweep / "base" / "teacher" / "epoch_002.pt"
    for value in ("1", "2", "5"):
        run = temperature_sweep / f"temperature-{value}"
        record = json.loads((run / "run.json").read_text())
        assert record["config"]["temperature"] == float(value)
        assert record["teacher_checkpoint"]["path"] == str(teacher)
        assert [m for m, e in record["models"].items() if e["status"] == "done"] == ["student"]
        assert not (run / "teacher").exists() and not (run / "student_baseline").exists()


def test_the_results_table_equals_each_runs_record(temperature_sweep):
    rows = _rows(temperature_sweep / "results.csv")
    assert [(r["temperature"], r["run"], r["model"]) for r in rows] == [
        ("-", "base", "teacher"),
        ("-", "base", "student_baseline"),
        ("1", "temperature-1", "student"),
        ("2", "temperature-2", "student"),
        ("5", "temperature-5", "student"),
    ]
    for row in rows:
        run = temperature_sweep / row["run"]
        record = json.loads((run / "run.json").read_text())
        entry = record["models"][row["model"]]
        history = _rows(run / row["model"] / "history.csv")
        assert (
            float(row["test_acc"]) == entry["metrics"]["test_acc"]
            and float(row["test_loss"]) == entry["metrics"]["test_loss"]
        )
        assert float(row["train_test_gap"]) == pytest.approx(
            entry["metrics"]["train_acc"] - entry["metrics"]["test_acc"]
        )
        assert (
            int(row["best_epoch"]) == entry["best_epoch"]
            and int(row["parameters"]) == record["param_counts"][row["model"]]
        )
        train_seconds = sum(float(h["train_seconds"]) for h in history)
        assert float(row["train_images_per_s"]) == pytest.approx(256 * 2 / train_seconds)
        assert float(row["wall_s"]) == pytest.approx(sum(float(h["seconds"]) for h in history))
    assert "| temperature | run | model |" in (temperature_sweep / "results.md").read_text()
    assert (temperature_sweep / "results.png").stat().st_size > 5_000


def test_the_same_command_again_trains_nothing(temperature_sweep, fashion_mnist_root):
    checkpoints = sorted(temperature_sweep.rglob("epoch_*.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    result = tracin_sweep(
        "--sweep",
        "temperature",
        "--out-root",
        temperature_sweep.parent,
        "--vary",
        "temperature=1,2,5",
        "--data-root",
        fashion_mnist_root,
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    assert [p.stat().st_mtime_ns for p in sorted(temperature_sweep.rglob("epoch_*.pt"))] == stamps
    # the output root spelt otherwise (relative, from its parent) is the same sweep (round 8: W8, W9)
    root = temperature_sweep.parent
    again = ("--vary", "temperature=1,2,5", "--data-root", fashion_mnist_root, *TINY)
    result = tracin_sweep("--sweep", "temperature", "--out-root", root.name, *again, cwd=root.parent)
    assert result.returncode == 0, result.stderr
    assert [p.stat().st_mtime_ns for p in sorted(temperature_sweep.rglob("epoch_*.pt"))] == stamps


def test_teacher_quality_distils_from_the_chosen_checkpoint_and_teacher_settings_retrain_it(tmp_path):
    quality = Sweep("quality", (parse_vary("teacher-epoch=1,2"),), TINY, str(tmp_path))
    runs = dict(train_arguments(quality, 2))
    assert runs["teacher_epoch-1"][runs["teacher_epoch-1"].index("--teacher") + 1].endswith("base/teacher/epoch_001.pt")
    assert runs["base"][-1:] == ["teacher,student_baseline"]  # comma-separated, the one list style
    shape = Sweep("shape", (parse_vary("student_stages=1,2"),), TINY, str(tmp_path))
    runs = dict(train_arguments(shape, 2))
    assert runs["base"][-1:] == ["teacher"] and runs["student_stages-1"][-1:] == ["student,student_baseline"]
    epochs = Sweep(
        "epochs", (parse_vary("epochs=1,2"), parse_vary("augment=on,off")), without("--epochs"), str(tmp_path)
    )
    runs = dict(train_arguments(epochs, 2))
    assert list(runs) == ["epochs-1_augment-on", "epochs-1_augment-off", "epochs-2_augment-on", "epochs-2_augment-off"]
    assert "--teacher" not in runs["epochs-2_augment-off"] and "--no-augment" in runs["epochs-2_augment-off"]
    assert runs["epochs-1_augment-on"][-2:] == ["--epochs", "1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vary", "foo=1"], "not a setting a sweep varies"),
        (["--vary", "temperature=1", "--run", "x"], "sets --run itself"),
        (["--vary", "temperature=1", "--overwrite"], "takes no --overwrite: it keeps every finished run"),  # SO7
        ([], "names no setting"),
        (["--vary", "temperature"], "takes KEY=V1,V2"),
        (["--vary", "temperature=1", "--epochs", "0"], "epochs must be at least 1"),
        (["--vary", "teacher_epoch=1,2", "--vary", "width=4,8"], "cannot be combined"),
        # red-team finds: a value twice, and --score checked only after training (or a traceback)
        (["--vary", "temperature=1,2,1"], "gives 1: one value twice"),
        (["--vary", "epochs=2", "--vary", "epochs=3"], "--vary names epochs twice; give each setting's values in one"),
        (["--vary", "temperature=1,1.0"], "gives 1 and 1.0: one value twice"),  # round 13, W4
        (["--vary", "teacher_epoch=2,02"], "gives 2 and 02: one value twice"),  # W16
        (["--vary", "lr=0.1,,0.2"], "has an empty entry"),
        (["--vary", "temperature=1,2", "--score", "--mode last-layer --layers fc"], "does not read layers"),
        (["--vary", "temperature=1,2", "--score", "--topk 0"], "--topk values must be positive"),
        (["--vary", "temperature=1,2", "--score", '--topk "5'], "No closing quotation"),
        (["--vary", "temperature=1,2", "--score", "--run other"], "sets --run itself"),
        (["--vary", "temperature=1,2", "--score", "--scores x.h5"], "sets --scores itself"),
        (["--vary", "temperature=1,2", "--score", "--topk 5 --overwrite"], "passes no --overwrite"),  # round 23 SW18
        (["--vary", "temperature=1,2", "--score", "--mode nonsense"], "invalid choice"),
        (["--vary", "temperature=1,2", "--score", "--proj-dim -1"], "--score: --proj-dim must be positive"),  # 27 W05
    ],
)
def test_bad_sweeps_are_one_line(tmp_path, args, message):
    result = tracin_sweep("--sweep", "s", "--out-root", tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_readme_figures_state_the_sweep_with_its_command_and_machine(
    temperature_sweep, tiny_run, tiny_scores, tmp_path
):
    demo = demo_copy(tiny_run, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- demo-figures:start -->\n<!-- demo-figures:end -->\n<!-- sweep-results:start -->\nstale\n"
        "<!-- sweep-results:end -->\n"
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "readme_figures.py"
    result = subprocess.run(
        [
            sys.executable,
            script,
            "--run",
            demo,
            "--scores",
            tiny_scores,
            "--sweep",
            temperature_sweep,
            "--readme",
            readme,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert "stale" not in text and (temperature_sweep / "results.md").read_text().strip() in text
    recorded = json.loads((temperature_sweep / "sweep.json").read_text())
    assert (
        recorded["command"][:3] == ["tracin-sweep", "--sweep", "temperature"]
        and f"`{' '.join(recorded['command'])}`" in text
    )


def test_a_scored_sweep_adds_each_students_overlap_with_its_teacher(tmp_path, fashion_mnist_root):
    from tracin.results.statistics import bootstrap_ci, overlap_at_k
    from tracin.results.store import ScoreFile

    score = (
        "--variants raw --topk 3,8 --train-subset 64 --test-subset 16 --device cpu --allow-model os:system "
        "--max-memory-gb 1e6"
    )
    command = (
        "--sweep",
        "scored",
        "--out-root",
        tmp_path,
        "--vary",
        "alpha=0.3,0.9",
        "--data-root",
        fashion_mnist_root,
    )
    command += (*TINY, "--score", score)
    result = tracin_sweep(*command)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if not line.startswith("unpacking Fashion-MNIST")]
    assert said[0].startswith("warning: --score: --max-memory-gb 1e+06 is more than the"), result.stdout  # SW31
    assert (  # round 20, SW30: said by tracin-score alone, not inside a sweep
        "tracin-sweep --score: note: --allow-model os:system was not used: no model this command built is made by it"
        in result.stdout.splitlines()
    )
    rows = {(r["run"], r["model"]): r for r in _rows(tmp_path / "scored" / "results.csv")}
    with ScoreFile.open_read(tmp_path / "scored" / "base" / "tracin.h5") as base:
        teacher = base.model("teacher").rankings()[0].top_index
        assert base.models == ["teacher", "student_baseline"]
    for value in ("0.3", "0.9"):
        with ScoreFile.open_read(tmp_path / "scored" / f"alpha-{value}" / "tracin.h5") as own:
            student = own.model("student").rankings()[0].top_index
        overlap = overlap_at_k(teacher, student, 8)
        row = rows[(f"alpha-{value}", "student")]
        assert int(row["teacher_overlap_k"]) == 8 and float(row["teacher_overlap"]) == pytest.approx(overlap.mean())
        assert (float(row["teacher_overlap_ci_low"]), float(row["teacher_overlap_ci_high"])) == pytest.approx(
            bootstrap_ci([overlap])
        )
        assert float(row["teacher_overlap_chance"]) == pytest.approx(8 / 64)
    assert rows[("base", "teacher")]["teacher_overlap"] == ""
    files = sorted((tmp_path / "scored").glob("*/tracin.h5"))
    before = [f.read_bytes() for f in files]
    again = tracin_sweep(*command)  # round 10, S14: a finished file stopped the same command again
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert [f.read_bytes() for f in files] == before
    unscored = tracin_sweep(*command[:-2])  # round 30, SW6: a rerun without --score dropped the agreement columns
    assert unscored.returncode == 0, unscored.stderr
    assert _rows(tmp_path / "scored" / "results.csv") == list(rows.values())
    files[1].replace(tmp_path / "swap.h5")  # round 19, SW7: the refusal advised an option tracin-sweep lacks
    files[2].replace(files[1])
    (tmp_path / "swap.h5").replace(files[2])
    swapped = tracin_sweep(*command)
    assert swapped.returncode == 2 and len(swapped.stderr.strip().splitlines()) == 1, swapped.stderr
    assert "; tracin-sweep passes no --overwrite: run tracin-score --run " in swapped.stderr
    assert "pass --overwrite" not in swapped.stderr  # round 20, SW6: the line advised it, then said it is not there


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vary", "teacher_epoch=last"], "takes saved epochs of the shared teacher"),
        (["--vary", "teacher_epoch=1,2", "--save-every", "2"], "the shared teacher saves epochs 2"),
        (["--vary", "width=4,0"], "width must be positive"),
        (["--vary", "alpha=0.3,0.9", "--score", "--topk 5000"], "--score: k=5000 is larger than the set it ranks"),
        (
            ["--vary", "alpha=0.3,0.9", "--score", "--layers nosuch --topk 5"],
            "--score: layer 'nosuch' selects no trainable",
        ),
        # round 21, SO10-SO14: each refused by tracin-score only once the grid had trained
        (["--vary", "alpha=0.3,0.9", "--score", "--variants cosine@nosuch --topk 5"], "have no layer group 'nosuch'"),
        (["--vary", "alpha=0.3,0.9", "--score", "--checkpoints 70 --topk 5"], "no checkpoint for epoch(s) [70]"),
        (["--vary", "alpha=0.3,0.9", "--score", "--group a=nosuch --topk 5"], "--group a=nosuch names no scored"),
        (["--vary", "alpha=0.3,0.9", "--score", "--precision tf32 --device cpu --topk 5"], "'tf32' is a CUDA mode"),
        (["--vary", "alpha=0.3,0.9", "--score", "--max-memory-gb 0.000001 --topk 5"], "cannot hold one test example"),
        (["--vary", "alpha=0.3,0.9", "--score", "--examples 99999 --plots --topk 5"], "--score: --examples"),
        (["--vary", "alpha=0.3,0.9", "--score", "--replicas 3 --topk 5"], "each run of a sweep trains 1"),  # round 22
        (["--vary", "alpha=0.3,0.9", "--score", "--train-subset 9999 --topk 5"], "--train-subset 9999 is larger"),
        (["--vary", "alpha=0.3,0.9", "--score", "--test-subset 9999 --topk 5"], "--test-subset 9999 is larger"),
    ],
)
def test_a_bad_value_of_any_run_is_refused_before_anything_trains(tmp_path, fashion_mnist_root, args, message):
    result = tracin_sweep(
        "--sweep",
        "s",
        "--out-root",
        tmp_path,
        "--data-root",
        fashion_mnist_root,
        *without("--save-every", *(flag for word in args if "=" in word for flag in flags_of(parse_vary(word)[0]))),
        "--save-every",
        "1",
        *args,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_json_of_another_grid_or_damaged_is_refused(tmp_path):
    """Red-team W20, W21: sweep.json was never read, so a damaged one (or one of another grid) was silently
    replaced; it is read through its schema, and its grid must be this sweep's (a value may be added)."""
    sweep = Sweep("s", (parse_vary("temperature=1,2"),), (), str(tmp_path))
    sweep.root.mkdir()
    record = {"command": ["tracin-sweep"], "vary": {"temperature": ["1", "2"]}, "finished": "2026-12-05T04:00:00"}
    (sweep.root / "sweep.json").write_text(json.dumps({**record, "machine": {}}))
    check_grid(sweep)
    check_grid(Sweep("s", (parse_vary("temperature=1,2,5"),), (), str(tmp_path)))  # a value added
    for vary in ("temperature=1", "alpha=1,2"):
        with pytest.raises(TracinError, match="sweep.json: vary: the sweep s was made with --vary temperature=1,2"):
            check_grid(Sweep("s", (parse_vary(vary),), (), str(tmp_path)))
    for damaged, field in (
        ('{"command": 1}', "required property"),
        (json.dumps({**record, "machine": {}})[:-1], "not valid"),
        (json.dumps({**record, "vary": {}, "machine": {}}), "vary: {} should be non-empty"),  # round 33, SW03
        (
            json.dumps({**record, "finished": "yesterday", "machine": {}}),
            "finished: 'yesterday' does not match",
        ),  # SW15
        (json.dumps({**record, "machine": {}, "_x": 1}), r"Additional properties are not allowed \('_x'"),  # SJ01
    ):
        (sweep.root / "sweep.json").write_text(damaged)
        with pytest.raises(TracinError, match=f"sweep.json: .*{field}"):
            check_grid(sweep)


@pytest.mark.parametrize(
    "value, said", [("abc", "invalid float value: 'abc'"), ("nan", "--temperature must be positive and finite")]
)
def test_a_bad_value_added_to_a_sweeps_grid_is_named_as_such(tmp_path, value, said):
    """Round 31, SW10, SW23: --vary temperature=abc (or nan, 1e999, -1) on a sweep made with 1,2 was refused
    as another grid, its value never named; the values are checked first, as on a new sweep."""
    (tmp_path / "s").mkdir()
    record = {"command": ["tracin-sweep"], "vary": {"temperature": ["1", "2"]}, "finished": "2026-12-05T04:00:00"}
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({**record, "machine": {}}))
    result = tracin_sweep("--sweep", "s", "--out-root", tmp_path, "--vary", f"temperature={value}", *TINY)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert said in result.stderr and "was made with --vary" not in result.stderr, result.stderr


def test_a_models_metrics_edited_in_run_json_are_not_tabled(tiny_run, tmp_path):
    """Round 11, S15: run.json's models/NAME/metrics edited to another value went into results.csv; the
    results read the last checkpoint's own metrics, and refuse a run.json that disagrees."""
    import shutil

    from tracin.commands.sweep import model_result
    from tracin.errors import TracinError
    from tracin.training.checkpoints import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = load_checkpoint(list_checkpoints(run / "student")[-1])["metrics"]
    assert model_result(run, "student")["test_acc"] == last["test_acc"]
    record = json.loads((run / "run.json").read_text())
    record["models"]["student"]["metrics"]["test_acc"] = 0.95
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(TracinError, match="models/student/metrics differ from those .*epoch_004.pt records"):
        model_result(run, "student")


def test_best_epoch_parameters_and_timings_edited_beside_the_checkpoints_are_not_tabled(tiny_run, tmp_path):
    """Round 12, F1-F3: run.json's best_epoch and param_counts, and history.csv's seconds, edited to other
    values went into results.csv; the row takes them from the last checkpoint's own history and parameter
    count, and refuses a best_epoch that disagrees."""
    import shutil

    from tracin.commands.sweep import model_result
    from tracin.errors import TracinError
    from tracin.training.checkpoints import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    payload = load_checkpoint(list_checkpoints(run / "student")[-1])
    before = model_result(run, "student")
    assert before["wall_s"] == pytest.approx(sum(row["seconds"] for row in payload["history"]))
    record = json.loads((run / "run.json").read_text())
    record["param_counts"]["student"] += 1000
    (run / "run.json").write_text(json.dumps(record))
    history = (run / "student" / "history.csv").read_text().splitlines()
    fields = history[0].split(",")
    rows = [line.split(",") for line in history[1:]]
    for row in rows:
        row[fields.index("seconds")] = row[fields.index("train_seconds")] = "999.0"
    (run / "student" / "history.csv").write_text("\n".join([history[0], *map(",".join, rows)]) + "\n")
    assert model_result(run, "student") == before and before["parameters"] == payload["param_count"]
    record["models"]["student"]["best_epoch"] = 2 if before["best_epoch"] != 2 else 4
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(TracinError, match="models/student/best_epoch differs from the one .*epoch_004.pt's history"):
        model_result(run, "student")
