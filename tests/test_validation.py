"""tracin-validate on the tiny run: retrainings through tracin-train's own code path; the zero line
reproduces the run, removed examples are never trained on, the LDS and leave-out tables equal a direct
computation from the stored margins, and a killed validation resumes to the same file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tracin.commands.validate import Plan, Work, removed_positions
from tracin.config import DataConfig
from tracin.errors import StoreError
from tracin.results import validation
from tracin.results.statistics import bootstrap_ci, spearman_rows
from tracin.results.store import ScoreFile
from tracin.runtime import start_runtime
from tracin.training.batches import training_batches
from tracin.training.checkpoints import load_model
from tracin.training.data import load_data, normalize
from tracin.training.trainer import logit_margins

from conftest import demo_copy, one_thread, run_tracin_score, subprocess_env

K, SUBSETS, TEST_EXAMPLES = 8, 4, 2
VARIANTS = ("raw", "train-normalised@head")  # removals by the whole model's raw scores and by one layer group's
VALIDATE = (
    "--models",
    "student",
    "--test-examples",
    str(TEST_EXAMPLES),
    "--k",
    str(K),
    "--subsets",
    str(SUBSETS),
    "--variants",
    ",".join(VARIANTS),
    "--device",
    "cpu",
    "--quiet",
)


def run_tracin_validate(args, fault: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("tracin-validate")), *map(str, args)]
    env = subprocess_env(**({"TRACIN_FAULT": fault} if fault else {}))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def full_scores(tiny_run, tmp_path_factory) -> Path:
    """Every train and test example of the tiny run scored (raw first, train-normalised beside it)."""
    out = tmp_path_factory.mktemp("validate") / "tracin.h5"
    result = run_tracin_score(
        [
            "--run",
            tiny_run,
            "--scores",
            out,
            "--models",
            "teacher,student,student_baseline",
            "--variants",
            "raw,train-normalised,train-normalised@*",
            "--topk",
            f"3,{K}",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def validated(tiny_run, full_scores, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("validated") / "tracin.h5"
    shutil.copy(full_scores, out)
    result = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE])
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def scored_test(tiny_run: Path, store: ScoreFile):
    """(the run's data, its test examples the score file holds, in the file's order)"""
    data = load_data(DataConfig.from_dict(json.loads((tiny_run / "run.json").read_text())["data_config"]))
    order = {int(i): p for p, i in enumerate(data.test.index)}
    return data, data.test.subset(torch.tensor([order[int(i)] for i in store.test_index]))


def test_the_zero_line_reproduces_the_trained_model_exactly(tiny_run, validated):
    """Retrained with nothing removed, from init.pt, with the run's seed: the run's final student, margin
    for margin (bitwise on CPU, one thread as trained)."""
    path, stdout = validated
    with ScoreFile.open_read(path) as store:
        record = store.validation()
        units, margins = record.units, record.margins
        _, test = scored_test(tiny_run, store)
    zero = margins[np.flatnonzero(units["condition"] == b"none")[0]]
    model, _ = load_model(tiny_run / "student" / "epoch_004.pt", role="student")
    with one_thread(), start_runtime("cpu", quiet=True) as runtime:  # as the retraining subprocess ran
        expected = logit_margins(model, test, runtime).numpy()
    assert np.array_equal(zero, expected)
    assert "leave-top-k-out" in stdout and "linear datamodeling score" in stdout


def test_the_leave_out_ci_resamples_test_examples_not_their_seeds():
    changes = np.random.default_rng(0).normal(size=12)
    one_seed = validation.leave_out_row("m", "own", "raw", 5, changes, np.ones(12), 0)
    # three seeds that change nothing: the same evidence, so the same interval (pairs would make it narrower)
    three_seeds = validation.leave_out_row(
        "m", "own", "raw", 5, np.tile(changes, 3), np.ones(36), 0, np.tile(np.arange(12), 3)
    )
    assert three_seeds[4:7] == pytest.approx(one_seed[4:7]) and one_seed[5:7] == pytest.approx(bootstrap_ci([changes]))
    as_pairs = validation.leave_out_row("m", "own", "raw", 5, np.tile(changes, 3), np.ones(36), 0)
    assert as_pairs[6] - as_pairs[5] < 0.8 * (one_seed[6] - one_seed[5])  # what resampling pairs did


def test_one_test_example_says_why_it_has_no_interval():
    """Round 19, V16: validate --test-examples 1 printed '[+nan, +nan]  flipped   nan%'."""
    from tracin.results.markdown import validation_markdown

    wrong = validation.leave_out_row("m", "own", "raw", 5, np.array([0.2]), np.array([-1.0]), 0)  # 1 row, wrong before
    table = np.array([wrong], dtype=validation.LEAVE_OUT_DTYPE)
    text = validation.format_validation(table)
    assert "[no CI: one test example]" in text and "flipped      -" in text and "nan" not in text
    assert "nan" not in validation_markdown(table, np.zeros(0, dtype=validation.LDS_DTYPE))
    note = "note: student has not finished training (partial, epoch 2 of 4): ..."  # round 27, U05: unsaid in the file
    noted = validation_markdown(table, np.zeros(0, dtype=validation.LDS_DTYPE), [note])
    assert noted.split("\n\n")[1] == f"- {note}"


def test_lds_and_leave_out_equal_a_direct_computation(validated):
    path, _ = validated
    with ScoreFile.open_read(path) as store:
        record = store.validation()
        units, margins, (leave_out, lds) = record.units, record.margins, record.tables()
        scores = {v: store.model("student").matrix(variant=v)[()] for v in ("raw", "train-normalised")}
        ensemble_present = "student.ensemble" in store.models
        n_train = store.n_train
    masks = validation.subset_masks(n_train, SUBSETS, 0.5, 0)
    assert masks.sum(1).tolist() == [n_train // 2] * SUBSETS and len({m.tobytes() for m in masks}) == SUBSETS
    subset_margins = margins[units["condition"] == b"subset"]
    for variant, matrix in scores.items():
        predicted = masks.astype(np.float64) @ matrix.astype(np.float64)  # [subsets, n_test]
        per_test = spearman_rows(predicted.T, subset_margins.T.astype(np.float64))
        row = lds[(lds["scores_of"] == b"student") & (lds["variant"] == variant.encode())][0]
        assert row["lds"] == pytest.approx(np.nanmean(per_test)) and row["subsets"] == SUBSETS
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            validation.lds_interval(matrix, masks, subset_margins), nan_ok=True
        )
    assert not ensemble_present  # one replica: no ensemble row
    assert set(lds["scores_of"]) == {b"student", b"teacher"}  # its own scores, and its teacher's
    zero = margins[units["condition"] == b"none"][0]
    expected = (
        [("own", v) for v in VARIANTS]
        + [("teacher", v) for v in VARIANTS]
        + [("baseline", v) for v in VARIANTS]
        + [("random", "")]
        + [("opponents", v) for v in VARIANTS]
    )
    assert list(zip(leave_out["condition"].astype(str), leave_out["variant"].astype(str))) == expected
    for condition, variant in expected:
        picked = np.flatnonzero((units["condition"] == condition.encode()) & (units["variant"] == variant.encode()))
        changes = np.array(
            [margins[i][units[i]["test_row"]] - zero[units[i]["test_row"]] for i in picked], dtype=np.float64
        )
        row = leave_out[(leave_out["condition"] == condition.encode()) & (leave_out["variant"] == variant.encode())][0]
        assert row["mean_change"] == pytest.approx(changes.mean()) and row["n_rows"] == TEST_EXAMPLES, condition
        by_test_row = changes[np.argsort(units[picked]["test_row"], kind="stable")]  # one seed: a change per test row
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_ci([by_test_row]), nan_ok=True)
        assert row["k"] == K


def test_a_removed_example_is_never_trained_on(tiny_run, validated):
    """The own condition's kept set, as the retraining takes it (Work.kept), lacks exactly the k proponents
    of the unit's variant (here a layer group's), and an epoch of training batches of it (the data order
    tracin-train draws) holds every kept image once and no removed one."""
    path, _ = validated
    with ScoreFile.open_read(path) as store:
        units = store.validation().units
        index = int(np.flatnonzero((units["condition"] == b"own") & (units["variant"] == VARIANTS[1].encode()))[0])
        unit = units[index]
        plan = Plan(("student",), (int(unit["test_row"]),), K, {"student": ("own",)}, VARIANTS, 0, 0.5, 1)
        work = Work(
            plan, units, [index], {index: removed_positions(plan, unit, store)}, store.n_train, store.test_index
        )
        keep = work.kept(index)  # what retrain_units trains on
        top = store.model("student").variant_rankings(VARIANTS[1])[0].top_index[unit["test_row"], :K]
        data, _ = scored_test(tiny_run, store)
    assert len(keep) == len(data.train) - K and not set(keep.tolist()) & set(top.tolist())
    train = data.train.subset(torch.from_numpy(keep))
    with start_runtime("cpu", quiet=True) as runtime:
        seen = [images for images, _, _ in training_batches(train, 32, 0, 1, False, runtime)]
    fingerprint = {
        normalize(data.train.images[p : p + 1], data.train.spec).numpy().tobytes(): p for p in range(len(data.train))
    }
    positions = sorted(fingerprint[image[None].numpy().tobytes()] for batch in seen for image in batch)
    assert positions == keep.tolist()  # each kept example once, no removed one


def test_removing_examples_moves_the_margins_that_the_zero_line_reproduces(validated):
    """Each removal unit and LDS subset trains with the seed of a zero line (nothing removed): with its kept
    set ignored it would give that zero line's margins bit for bit (retraining is deterministic: see the
    zero-line test). Every one of them differs, so every removal reached the training."""
    path, _ = validated
    with ScoreFile.open_read(path) as store:
        record = store.validation()
        units, margins = record.units, record.margins
    zero = {int(u["seed"]): margins[i] for i, u in enumerate(units) if u["condition"] == b"none"}
    removals = [i for i, u in enumerate(units) if u["condition"] != b"none" and int(u["seed"]) in zero]
    assert zero and {units[i]["condition"] for i in removals} >= {b"own", b"subset"}
    for i in removals:
        assert not np.array_equal(margins[i], zero[int(units[i]["seed"])]), units[i]


def test_a_killed_validation_resumes_to_the_same_file(tiny_run, full_scores, validated, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    killed = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE], fault="validate-unit:3:kill")
    assert killed.returncode == -9
    with ScoreFile.open_read(out) as store:
        assert store.validation().done.sum() == 3
    resumed = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 3 of" in resumed.stdout
    with ScoreFile.open_read(out) as mine, ScoreFile.open_read(validated[0]) as theirs:
        assert np.array_equal(mine.validation().margins, theirs.validation().margins)
        for a, b in zip(mine.validation().tables(), theirs.validation().tables()):
            assert a.tobytes() == b.tobytes()


def test_a_killed_validation_whose_finished_retrainings_were_edited_retrains_them(
    tiny_run, full_scores, validated, tmp_path
):
    """Round 34, KVE1, KVE2: a partial /validation's done mask set for retrainings never made, or a finished
    one's margin edited, was resumed and sealed into the tables without a word. Each retraining keeps its
    sha256 (unit_digests); a resume retrains those that differ, with a note, to the uninterrupted file."""
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    killed = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE], fault="validate-unit:3:kill")
    assert killed.returncode == -9
    with h5py.File(out, "r+") as h5:
        n_units = len(h5["validation/done"])
        h5["validation/done"][...] = True  # KVE1: units never retrained marked done
        margins = h5["validation/margins"][()]
        margins[0, 0] += 1.0  # KVE2: a finished one's margin edited
        h5["validation/margins"][...] = margins
    resumed = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE])
    assert resumed.returncode == 0, resumed.stderr
    assert f"/validation: {n_units - 2} finished retraining(s) no longer hold what" in resumed.stdout
    assert "resuming: 2 of" in resumed.stdout
    with ScoreFile.open_read(out) as mine, ScoreFile.open_read(validated[0]) as theirs:
        assert np.array_equal(mine.validation().margins, theirs.validation().margins)
        for a, b in zip(mine.validation().tables(), theirs.validation().tables()):
            assert a.tobytes() == b.tobytes()


def test_mistakes_are_one_line(tiny_run, full_scores, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    for args, message in (
        (["--k", "99"], "larger than the score file's top-k tables"),
        (["--variants", "cosine", "--k", "3"], "holds no such scores"),
        (["--models", "assistant"], "is not a model name"),
        (["--fraction", "1.5"], "--fraction must be in (0, 1)"),
        (["--subsets", "0", "--fraction", "0.3"], "--fraction is not read with --subsets 0"),  # red-team round 7
        (["--test-examples", "0", "--k", "3"], "--k is not read with --test-examples 0"),
        (["--conditions", "own,everything"], "--conditions takes"),
        (["--epochs", "1", "--k", "3"], "--epochs 1 leaves no epoch after the run's warm-up (1 epochs"),  # round 8: S5
        (["--epochs", "99", "--k", "3"], "--epochs 99 is more than the run's 4: retraining shortens"),  # round 14: V11
        (["--scores", tmp_path / "missing.h5"], "does not exist"),
        # round 30, V1: the remedy was tracin-train's (--batch-size, --warmup-epochs), which this command refuses
        (["--subsets", "3", "--fraction", "0.1", "--k", "3"], "26 examples (its --batch-size 32 from the run); give"),
    ):
        result = run_tracin_validate(["--run", tiny_run, "--scores", out, "--device", "cpu", "--quiet", *args])
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )


def test_an_init_pt_edited_in_range_is_refused_before_any_retraining(tiny_run, full_scores, tmp_path):
    """Round 18, C18: the student's init.pt, its weights edited in range, was retrained from without a word
    (a validation of other numbers); run.json records init.pt's sha256 too."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copy(full_scores, run / "tracin.h5")
    payload = torch.load(run / "student" / "init.pt", weights_only=True)
    name = next(key for key, value in payload["model"].items() if value.is_floating_point())
    payload["model"][name] = payload["model"][name] * 1.0001
    torch.save(payload, run / "student" / "init.pt")
    result = run_tracin_validate(
        ["--run", run, "--device", "cpu", "--quiet", "--subsets", "3", "--test-examples", "2", "--k", "3"]
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "init.pt is not the checkpoint tracin-train saved" in result.stderr and "retrained" not in result.stdout


def test_a_report_planted_as_a_link_is_refused_before_any_retraining(tiny_run, full_scores, tmp_path):
    """Red-team borderline L10: the link at validation.md was refused only after the retraining."""
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    colleague = tmp_path / "colleague.md"
    colleague.write_text("theirs")
    (tmp_path / "validation.md").symlink_to(colleague)
    result = run_tracin_validate(["--run", tiny_run, "--scores", out, "--device", "cpu", "--quiet"])
    assert result.returncode == 2 and "symbolic link" in result.stderr and "retrained" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and colleague.read_text() == "theirs"
    with ScoreFile.open_read(out) as store, pytest.raises(StoreError, match="has no validation"):
        store.validation()


def test_the_overlap_notebook_shows_the_validation(validated, tmp_path):
    from test_notebooks import outputs_of

    from tracin.cli.notebooks import execute_notebook, notebook_folder

    notebook = execute_notebook(
        notebook_folder() / "overlap_tables.ipynb", {"SCORES": str(validated[0]), "DATA_ROOT": None}
    )
    text, _ = outputs_of(notebook)
    assert "Leave-top-k-out" in text and "Linear datamodeling score" in text
    assert (validated[0].parent / "validation.md").read_text().startswith("<!-- written by tracin -->\n# Validation")
    assert (validated[0].parent / "plots" / "validation.png").stat().st_size > 10_000


def test_readme_figures_state_the_validation_with_its_settings_and_time(tiny_run, validated, tmp_path):
    path, _ = validated
    run = demo_copy(tiny_run, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- demo-figures:start -->\n<!-- demo-figures:end -->\nmiddle\n"
        "<!-- validation-figures:start -->\nstale\n<!-- validation-figures:end -->\nend\n"
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "readme_figures.py"
    result = subprocess.run(
        [sys.executable, script, "--run", run, "--scores", path, "--validation", "--readme", readme],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    with ScoreFile.open_read(path) as store:
        record = store.validation()
        leave_out, lds = record.tables()
        spent = record.provenance["retraining_seconds"]
        assert spent == pytest.approx(record.seconds.sum(), abs=0.1) and spent > 0
    assert "stale" not in text and text.endswith("<!-- validation-figures:end -->\nend\n")
    assert f"**{spent:.0f} s** of retraining for student" in text and f"k = {K}" in text
    own = leave_out[leave_out["condition"] == b"own"][0]
    assert (
        f"| student | own | {own['variant'].decode()} | {K} | {own['mean_change']:+.3f} | "
        f"[{own['ci_low']:+.3f}, {own['ci_high']:+.3f}] |"
    ) in text
    assert "removals by the `raw`, `train-normalised@head` scores" in text
    assert f"| student | student | raw | {lds[0]['lds']:+.3f} |" in text


def test_torchrun_deals_the_retrainings_and_writes_the_same_file(tiny_run, full_scores, validated, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    script = Path(sys.executable).with_name("tracin-validate")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        "--",
        "--run",
        str(tiny_run),
        "--scores",
        str(out),
        *VALIDATE,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    with ScoreFile.open_read(out) as mine, ScoreFile.open_read(validated[0]) as theirs:
        assert np.array_equal(mine.validation().margins, theirs.validation().margins)
        for a, b in zip(mine.validation().tables(), theirs.validation().tables()):
            assert a.tobytes() == b.tobytes()


def test_lds_alone_needs_no_zero_line_and_overwrite_keeps_a_same_settings_validation(tiny_run, full_scores, tmp_path):
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    args = [
        "--run",
        tiny_run,
        "--scores",
        out,
        "--models",
        "student",
        "--test-examples",
        "0",
        "--subsets",
        "3",
        "--device",
        "cpu",
    ]
    first = run_tracin_validate(args)  # not --quiet: a line per finished retraining
    assert first.returncode == 0, first.stderr
    assert (
        "retrained 1/3: student on LDS subset 0 (" in first.stdout
        and "retrained 3/3: student on LDS subset 2 (" in first.stdout
    )
    with ScoreFile.open_read(out) as store:
        units, (leave_out, lds) = store.validation().units, store.validation().tables()
    assert set(units["condition"]) == {b"subset"} and len(units) == 3 and len(leave_out) == 0 and len(lds) > 0
    again = run_tracin_validate([*args, "--overwrite"])  # same settings: finished retrainings are kept
    assert again.returncode == 0 and "resuming: 3 of 3 retrainings done already" in again.stdout, again.stderr


def test_another_runs_score_file_and_empty_plans_are_refused(tiny_run, full_scores, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    path = other / "student" / "epoch_002.pt"
    payload = torch.load(path, weights_only=True)
    payload["metrics"] = {**payload["metrics"], "note": 1.0}  # same weights, another file
    torch.save(payload, path)
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    for run, args, message in (
        (other, [], "does not hold (missing, or another file)"),
        (tiny_run, ["--test-examples", "0", "--subsets", "0"], "nothing to retrain"),
        (tiny_run, ["--seeds", "10"], "--seeds must be between 1 and 9"),
    ):
        result = run_tracin_validate(["--run", run, "--scores", out, "--device", "cpu", "--quiet", *args])
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )
    with ScoreFile.open_read(out) as store, pytest.raises(StoreError, match="has no validation"):
        store.validation()  # refused before the file changed


SMALL_VALIDATE = (
    "--models",
    "student",
    "--test-examples",
    "1",
    "--k",
    "3",
    "--subsets",
    "0",
    "--conditions",
    "own",
    "--device",
    "cpu",
    "--quiet",
)


def _validation_arrays(path: Path) -> dict:
    with ScoreFile.open_read(path) as store:
        record = store.validation()
        leave_out, lds = record.tables()
        return {
            "units": record.units,
            "margins": record.margins,
            "done": record.done,
            "leave_out": leave_out,
            "lds": lds,
        }


@pytest.fixture(scope="module")
def small_reference(tiny_run, full_scores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_validation") / "tracin.h5"
    shutil.copy(full_scores, out)
    result = run_tracin_validate(["--run", tiny_run, "--scores", out, *SMALL_VALIDATE])
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("write", [1, 2, 4])
def test_a_full_disk_inside_hdf5_during_validate_leaves_a_file_the_same_command_finishes(
    tiny_run, full_scores, small_reference, tmp_path, write
):
    """Before the repair every rerun failed with KeyError 'done': /validation had its settings but not its
    arrays. Now the same command keeps the finished units that read, makes the rest again, and finishes."""
    out = tmp_path / "tracin.h5"
    shutil.copy(full_scores, out)
    failed = run_tracin_validate(
        ["--run", tiny_run, "--scores", out, *SMALL_VALIDATE], fault=f"h5-write:{write}:enospc"
    )
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr[-2000:]
    assert "No space left on device" in failed.stderr and "Traceback" not in failed.stderr
    again = run_tracin_validate(["--run", tiny_run, "--scores", out, *SMALL_VALIDATE])
    assert again.returncode == 0, again.stderr[-2000:]
    mine, reference = _validation_arrays(out), _validation_arrays(small_reference)
    for name in ("units", "margins", "done", "leave_out"):
        assert mine[name].tobytes() == reference[name].tobytes(), name  # bitwise, NaN CIs too


def test_a_finished_looking_validation_with_a_damaged_group_is_repaired_not_trusted(
    tiny_run, small_reference, tmp_path
):
    import h5py

    out = tmp_path / "tracin.h5"
    shutil.copy(small_reference, out)
    with h5py.File(out, "r+") as h5:
        del h5["validation/leave_out"]  # status still says complete
        del h5["validation/done"]
    again = run_tracin_validate(["--run", tiny_run, "--scores", out, *SMALL_VALIDATE])
    assert again.returncode == 0, again.stderr[-2000:]
    mine, reference = _validation_arrays(out), _validation_arrays(small_reference)
    for name in ("units", "margins", "leave_out"):
        assert mine[name].tobytes() == reference[name].tobytes(), name  # bitwise, NaN CIs too


def _shared_subset_noise(rng: np.random.Generator, subsets: int, n_test: int, n_train: int = 60):
    """Scores and margins whose every test example sees the same subset effects: each subset's predicted
    margin change and its actual margin are one value per subset (plus a trace of per-row noise), drawn
    independently, so the true LDS is 0 and all test examples share one draw of it."""
    masks = validation.subset_masks(n_train, subsets, 0.5, int(rng.integers(1 << 30)))
    scores = rng.normal(size=(n_train, 1)) + 1e-6 * rng.normal(size=(n_train, n_test))
    margins = rng.normal(size=(subsets, 1)) + 1e-6 * rng.normal(size=(subsets, n_test))
    return scores, masks, margins


def test_the_lds_interval_counts_the_subsets_that_every_test_example_shares():
    """With the subset noise shared by every test example, a bootstrap over test examples alone is about as
    narrow as a point, and misses the true LDS (0) nearly always; the interval over subsets and test
    examples covers it about as often as it says."""
    rng = np.random.default_rng(0)
    covered, rows_covered = [], []
    for _ in range(200):
        scores, masks, margins = _shared_subset_noise(rng, subsets=12, n_test=40)
        low, high = validation.lds_interval(scores, masks, margins)
        covered.append(low <= 0.0 <= high)
        per_row = validation.linear_datamodeling_score(scores, masks, margins)
        row_low, row_high = bootstrap_ci([per_row])
        rows_covered.append(row_low <= 0.0 <= row_high)
    assert np.mean(covered) >= 0.88 and np.mean(rows_covered) <= 0.3
    perfect = rng.normal(size=(60, 5))
    masks = validation.subset_masks(60, 6, 0.5, 0)
    assert validation.lds_interval(perfect, masks, masks.astype(np.float64) @ perfect) == pytest.approx((1.0, 1.0))
    assert np.isnan(validation.lds_interval(perfect, masks[:2], (masks.astype(np.float64) @ perfect)[:2])).all()
    few = [validation.lds_interval(*_shared_subset_noise(rng, subsets=3, n_test=4)) for _ in range(50)]
    assert all(-1.0 <= low <= high <= 1.0 for low, high in few)  # round 8, S6: [-1.147, +1.084] with 3 subsets
    assert min(low for low, _ in few) == -1.0  # the normal interval did reach past -1: the clip was needed


def _tool(name: str, *args) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name(name)), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=subprocess_env())


def test_the_remedy_for_a_validation_and_a_report_table_both_edited_works_when_followed(tiny_run, validated, tmp_path):
    """Round 29, M6: with /validation and /quality_report both edited the remedy said was tracin-score
    --overwrite (which discards the retrainings); now tracin-validate, then tracin-report: tracin-validate
    leaves tracin-report's tables, which it does not read, to tracin-report (the review: it refused them, so
    the remedy stalled with /validation deleted)."""
    out = tmp_path / "tracin.h5"
    shutil.copy(validated[0], out)
    assert _tool("tracin-report", "--run", tiny_run, "--scores", out, "--models", "student").returncode == 0
    with h5py.File(out, "r+") as h5:
        row = h5["quality_report"][0]
        field = next(name for name in row.dtype.names if row.dtype[name].kind == "f")
        row[field] += 1
        h5["quality_report"][0] = row
        margins = next(d for d in _datasets(h5["validation"]) if d.dtype.kind == "f" and d.size)
        margins[(0,) * margins.ndim] += 1
    refused = _tool("tracin-explore", "--scores", out, "--out", tmp_path / "page.html")
    assert refused.returncode == 2 and "then run tracin-report again" in refused.stderr, refused.stderr
    assert "tracin-score" not in refused.stderr
    report = _tool("tracin-report", "--run", tiny_run, "--scores", out, "--models", "student")
    assert report.returncode == 2 and "run tracin-validate again" in report.stderr, report.stderr
    with h5py.File(out, "r") as h5:  # round 30, M6: the refusal deleted /quality_report
        assert h5["quality_report"][0] == row
    validate = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE])
    assert validate.returncode == 0, validate.stderr
    assert _tool("tracin-report", "--run", tiny_run, "--scores", out, "--models", "student").returncode == 0
    page = _tool("tracin-explore", "--scores", out, "--out", tmp_path / "page.html")
    assert page.returncode == 0, page.stderr
    with ScoreFile.open_read(out) as store:
        assert store.changed_since_written() == [] and "validation" in store._h5


def _datasets(group) -> list:
    found = []
    group.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("status", [None, 1, "done"])
def test_a_validation_status_edited_or_deleted_is_refused_by_readers_and_made_again_by_tracin_validate(
    tiny_run, validated, tmp_path, status
):
    """Round 32, B11: /validation's status deleted ended tracin-report in a KeyError, after it had written its
    tables; a status is left out of the digests (a resume changes it), so each reader checks it first."""
    import hashlib

    out = tmp_path / "tracin.h5"
    shutil.copy(validated[0], out)
    with h5py.File(out, "r+") as h5:
        if status is None:
            del h5["validation"].attrs["status"]
        else:
            h5["validation"].attrs["status"] = status
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    said = "no status" if status is None else f"status {status!r}"
    for refused in (
        _tool("tracin-report", "--run", tiny_run, "--scores", out, "--models", "student"),
        _tool("tracin-explore", "--scores", out, "--out", tmp_path / "page.html"),
    ):
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert f"/validation records {said}" in lines[0] and "run tracin-validate again" in lines[0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before  # refused before anything was written
    validate = run_tracin_validate(["--run", tiny_run, "--scores", out, *VALIDATE])
    assert validate.returncode == 0 and "retrainings done already" in validate.stdout, validate.stderr
    assert f"note: {out}: /validation records {said}" in validate.stdout  # B04, B07, B10: said, not silent
    with ScoreFile.open_read(validated[0]) as store:
        margins = store.validation().margins
    with ScoreFile.open_read(out) as store:  # its finished retrainings kept, not made again
        assert store.validation().status == "complete" and np.array_equal(store.validation().margins, margins)
    assert _tool("tracin-report", "--run", tiny_run, "--scores", out, "--models", "student").returncode == 0
