"""The known-positive control of distillation (tracin-train --shortcut-mode inherit): each model trains on the
images the mode says, scoring replays each model on its own images, and the report's behaviour and
attribution rows equal a direct computation from the stored predictions and top-k lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tracin.config import DataConfig, ModelConfig
from tracin.engine.reference import func_tracin_scores
from tracin.results import sanity
from tracin.results.sanity import INHERITED, MODEL_ROWS
from tracin.results.statistics import bootstrap_ci
from tracin.results.store import ScoreFile
from tracin.training.checkpoints import list_checkpoints, load_checkpoint
from tracin.training.data import SHORTCUT_PATCH, load_data, shortcut_positions
from tracin.training.models import build_model
from tracin.training.records import fingerprint

from conftest import TINY_RUN_ARGS, run_tracin_score, run_tracin_train, subprocess_env

PATCH, FRACTION, REPLICAS = 5, 0.5, 2
INHERIT = (
    "--shortcut-class",
    "1",
    "--shortcut-fraction",
    str(FRACTION),
    "--shortcut-patch",
    str(PATCH),
    "--shortcut-mode",
    "inherit",
)


def _corner_white(images: torch.Tensor, patch: int) -> torch.Tensor:
    return (images[:, :, :patch, :patch] == 255).flatten(1).all(1)


def test_inherit_mode_gives_each_teacher_its_class_and_every_student_every_class(fashion_mnist_root):
    config = DataConfig(
        dataset="fashion-mnist",
        data_root=fashion_mnist_root,
        train_subset=400,
        test_subset=100,
        shortcut_class=8,
        shortcut_fraction=FRACTION,
        shortcut_patch=PATCH,
        shortcut_mode="inherit",
    )
    data = load_data(config)
    labels = data.train.labels
    plain = load_data(
        DataConfig(dataset="fashion-mnist", data_root=fashion_mnist_root, train_subset=400, test_subset=100)
    )
    for replica in range(3):
        shortcut = (8 + replica) % 10
        teacher = data.train_of("teacher" if replica == 0 else f"teacher.r{replica}")
        expected = torch.zeros(len(labels), dtype=torch.bool)
        expected[shortcut_positions(labels, [shortcut], FRACTION, config.seed + 3)] = True
        assert torch.equal(teacher.stamped, expected) and int(expected.sum()) == round(
            FRACTION * int((labels == shortcut).sum())
        )
        assert torch.equal(
            _corner_white(teacher.images, PATCH)[~expected], _corner_white(plain.train.images, PATCH)[~expected]
        )
        assert _corner_white(teacher.images, PATCH)[expected].all()
        assert torch.equal(teacher.images[~expected], plain.train.images[~expected])  # nothing else touched
        for role in ("student", "student_baseline"):
            student = data.train_of(role if replica == 0 else f"{role}.r{replica}")
            assert student is data.train
    # every student: the same share of every class stamped, true labels kept
    stamped = data.train.stamped
    assert all(int(stamped[labels == c].sum()) == round(FRACTION * int((labels == c).sum())) for c in range(10))
    assert torch.equal(data.train.labels, plain.train.labels) and _corner_white(data.train.images, PATCH)[stamped].all()
    # a class's stamped images are the same in either mode; a subset keeps each model's view
    class_mode = load_data(
        DataConfig(
            dataset="fashion-mnist",
            data_root=fashion_mnist_root,
            train_subset=400,
            test_subset=100,
            shortcut_class=8,
            shortcut_fraction=FRACTION,
        )
    )
    assert torch.equal(class_mode.train.stamped, data.train_of("teacher").stamped)
    assert not torch.equal(class_mode.train.images, data.train_of("teacher").images)  # the patch is 5, not 3
    positions = torch.arange(0, 400, 3)
    data.train = data.train.subset(positions)
    assert torch.equal(data.train_of("teacher.r1").stamped, load_data(config).train_of("teacher.r1").stamped[positions])


def test_defaults_keep_their_fingerprint_and_inherit_needs_a_class(fashion_mnist_root):
    config = DataConfig(
        dataset="fashion-mnist", data_root=fashion_mnist_root, train_subset=100, test_subset=50, shortcut_class=0
    )
    recorded = fingerprint(load_data(config), config)
    assert recorded["shortcut"] == [0, 0.1] and SHORTCUT_PATCH == 3  # as runs recorded before the options existed
    inherit = DataConfig(**{**config.to_dict(), "shortcut_mode": "inherit"})
    assert fingerprint(load_data(inherit), inherit)["shortcut"] == [0, 0.1, 3, "inherit"]
    with pytest.raises(Exception, match="needs --shortcut-class"):
        DataConfig(dataset="fashion-mnist", shortcut_mode="inherit")
    with pytest.raises(Exception, match="larger than the images"):
        load_data(DataConfig(**{**config.to_dict(), "shortcut_patch": 29}))


@pytest.fixture(scope="module")
def control_run(fashion_mnist_root, tmp_path_factory) -> Path:
    out_root = tmp_path_factory.mktemp("control")
    result = run_tracin_train(
        [
            "--run",
            "control",
            "--out-root",
            out_root,
            "--data-root",
            fashion_mnist_root,
            *TINY_RUN_ARGS,
            *INHERIT,
            "--replicas",
            str(REPLICAS),
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    run = out_root / "control"
    out = run / "tracin.h5"
    result = run_tracin_score(
        [
            "--run",
            run,
            "--scores",
            out,
            "--models",
            "teacher,student,student_baseline",
            "--variants",
            "raw,cosine",
            "--train-subset",
            "96",
            "--test-subset",
            "48",
            "--topk",
            "3,10",
            "--device",
            "cpu",
            "--quiet",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    command = [
        str(Path(sys.executable).with_name("tracin-report")),
        "--run",
        str(run),
        "--randomization-train",
        "20",
        "--randomization-test",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    return run


def test_each_teacher_is_scored_on_the_images_it_trained_on(control_run):
    """teacher.r1's stored scores are the float64 reference's on its own images (stamped on class 2), not on
    the students' (stamped on every class)."""
    record = json.loads((control_run / "run.json").read_text())
    with ScoreFile.open_read(control_run / "tracin.h5") as store:
        assert store.inherit_mode and store.shortcut_of("teacher.r1") == 2 and store.shortcut_of("student") == 1
        stored = store.model("teacher.r1").matrix(variant="raw")[()]
        train_index, test_index = store.train_index, store.test_index
    data = load_data(DataConfig.from_dict(record["data_config"]))
    chosen = lambda split, index: split.subset(torch.as_tensor(np.searchsorted(split.index.numpy(), index)))
    payloads = [load_checkpoint(p) for p in list_checkpoints(control_run / "teacher.r1")]
    model = build_model(ModelConfig.from_dict(payloads[-1]["model_config"]))
    checkpoints = [(p["model"], p["lr"]) for p in payloads]
    test = chosen(data.test, test_index)
    found = {}
    for view in ("teacher.r1", "student"):
        train = chosen(data.train_of(view), train_index)
        inputs = [torch.stack([split[i][0] for i in range(len(split))]) for split in (train, test)]
        found[view] = func_tracin_scores(
            model, checkpoints, (inputs[0], train.labels), (inputs[1], test.labels)
        ).numpy()
    scale = np.abs(found["teacher.r1"]).max()
    # which images, not precision (tests/test_tracin.py holds the engine to 1e-5): a saturated test example's
    # float32 cross-entropy gradient (1 - p with p near 1) is a few per cent off float64 here, 2e-4 of the largest score
    assert np.abs(stored - found["teacher.r1"]).max() <= 1e-3 * scale
    # the other images give scores ten times further off than that tolerance: the check above tells them apart
    # (how far depends on how much the trained model reads the patch: 4% of the largest score on this 2-core
    # VM, over 10% on an earlier one)
    assert np.abs(stored - found["student"]).max() > 1e-2 * scale


def _manual_taken(store: ScoreFile, role: str, rows: np.ndarray, other_teacher: bool = False) -> np.ndarray:
    """Per test row, with loops: the mean over replica r (or pairs r != o) of [student o takes the row for c_r]."""
    labels, values = store.test_labels, []
    for i in range(store.n_test):
        seen = []
        for r in range(REPLICAS):
            shortcut = (1 + r) % 10
            if not rows[i] or labels[i] == shortcut:
                continue
            for o in range(REPLICAS) if other_teacher else [r]:
                if other_teacher and o == r:
                    continue
                name = role if o == 0 else f"{role}.r{o}"
                seen.append(float(store.model(name).predictions[0][i] == shortcut))
        values.append(np.mean(seen) if seen else np.nan)
    return np.array(values)


def _assert_row(table: np.ndarray, check: str, model: str, variant: str, per_row: np.ndarray) -> None:
    row = table[
        (table["check"] == check.encode()) & (table["model"] == model.encode()) & (table["variant"] == variant.encode())
    ]
    assert len(row) == 1, check
    defined = np.isfinite(per_row)
    if not defined.any():  # e.g. no stamped row the tiny student takes for its teacher's class
        assert np.isnan(row[0]["value"]) and row[0]["n_rows"] == 0
        return
    assert row[0]["value"] == pytest.approx(per_row[defined].mean())
    assert (row[0]["ci_low"], row[0]["ci_high"]) == pytest.approx(bootstrap_ci([per_row]))
    assert row[0]["n_rows"] == defined.sum()


def test_behaviour_rows_equal_the_stored_predictions(control_run):
    with ScoreFile.open_read(control_run / "tracin.h5") as store:
        table = store.read_table("quality_report")
        stamped = store.test_stamped
        for side, rows in (("stamped", stamped), ("clean", ~stamped)):
            for role in ("teacher", "student", "student_baseline"):
                _assert_row(
                    table,
                    f"{INHERITED}: taken for teacher's class, {side}",
                    role,
                    MODEL_ROWS,
                    _manual_taken(store, role, rows),
                )
            _assert_row(
                table,
                f"{INHERITED}: another teacher's class, {side}",
                "student",
                MODEL_ROWS,
                _manual_taken(store, "student", rows, other_teacher=True),
            )
        student = _manual_taken(store, "student", stamped)
        _assert_row(
            table,
            f"{INHERITED}: stamped, student - baseline",
            "student",
            MODEL_ROWS,
            student - _manual_taken(store, "student_baseline", stamped),
        )
        _assert_row(
            table,
            f"{INHERITED}: stamped, student - control",
            "student",
            MODEL_ROWS,
            student - _manual_taken(store, "student", stamped, other_teacher=True),
        )


def test_attribution_rows_equal_overlaps_counted_from_the_top_k_lists(control_run):
    with ScoreFile.open_read(control_run / "tracin.h5") as store:
        table = store.read_table("quality_report")
        labels, stamped = store.test_labels, store.test_stamped
        for variant in ("raw", "cosine"):
            top = {name: store.model(name).variant_rankings(variant)[0].top_index for name in store.models}
            for k in (10,):
                for filtered, which in ((False, "stamped"), (True, "predicted")):
                    values = []
                    for i in range(store.n_test):
                        seen = []
                        for r, o in ((0, 1), (1, 0)):
                            shortcut = 1 + r
                            student, own, other = (
                                n if r_ == 0 else f"{n}.r{r_}"
                                for n, r_ in (("student", r), ("teacher", r), ("teacher", o))
                            )
                            taken = store.model(student).predictions[0][i] == shortcut
                            if stamped[i] and labels[i] != shortcut and (taken or not filtered):
                                shared = lambda a: len(set(top[student][i, :k]) & set(top[a][i, :k])) / k
                                seen.append(shared(own) - shared(other))
                        values.append(np.mean(seen) if seen else np.nan)
                    _assert_row(
                        table, f"{INHERITED}: own - other teacher@{k}, {which}", "student", variant, np.array(values)
                    )
        said = sanity.inheritance_verdicts(table)
        assert said[0].startswith("known-positive control (behaviour): stamped test images of other classes")
        assert any(
            line.startswith("known-positive control (attribution): raw, own - other teacher overlap@10")
            for line in said
        )
    assert "known-positive control (behaviour)" in (control_run / "quality_report.md").read_text()


def test_the_control_verdicts_say_inherited_only_where_the_ci_excludes_zero():
    rows = [
        (
            f"{INHERITED}: taken for teacher's class, stamped",
            role,
            MODEL_ROWS,
            value,
            value - 0.05,
            value + 0.05,
            np.nan,
            200,
        )
        for role, value in (("teacher", 0.6), ("student", 0.3), ("student_baseline", 0.02))
    ]
    rows += [
        (f"{INHERITED}: another teacher's class, stamped", "student", MODEL_ROWS, 0.03, 0.01, 0.05, np.nan, 200),
        (f"{INHERITED}: stamped, student - baseline", "student", MODEL_ROWS, 0.28, 0.22, 0.34, 0.0, 200),
        (f"{INHERITED}: stamped, student - control", "student", MODEL_ROWS, 0.01, -0.03, 0.05, 0.0, 200),
        (f"{INHERITED}: own - other teacher@10, stamped", "student", "raw", 0.02, 0.01, 0.03, 0.0, 200),
        (f"{INHERITED}: own - other teacher@100, stamped", "student", "raw", 0.01, -0.02, 0.04, 0.0, 200),
        (f"{INHERITED}: own - other teacher@100, predicted", "student", "raw", np.nan, np.nan, np.nan, 0.0, 0),
        (f"{INHERITED}: own - other teacher@100, stamped", "student", "raw@head", 0.3, 0.2, 0.4, 0.0, 200),
    ]
    said = sanity.inheritance_verdicts(np.array(rows, dtype=sanity.REPORT_DTYPE))
    assert said[0] == (
        "known-positive control (behaviour): stamped test images of other classes taken for the replica teacher's "
        "shortcut class: the teachers 60.0%, the distilled students 30.0%, the baselines 2.0%, distilled students of "
        "another teacher (control) 3.0%; student - baseline +28.0% [+22.0%, +34.0%]: inherited; "
        "student - control +1.0% [-3.0%, +5.0%]: not shown (the CI includes 0)"
    )
    assert said[1] == (
        "known-positive control (attribution): raw, own - other teacher overlap@100 on the stamped test images of "
        "other classes than the teacher's shortcut class (200 test rows): +0.010 [-0.020, +0.040]: it does not see "
        "it (the CI includes 0; at this sample size a difference of about 0.043 would be seen with 80% power)"
    )
    assert said[2].endswith("on those of them that the student takes for that class: no such test rows")
    assert len(said) == 3  # the largest k only, whole-model variants only


def test_readme_figures_set_the_headline_beside_its_control(control_run, tmp_path):
    readme = tmp_path / "README.md"
    lds_table = [  # a validation part as validation_figures writes it: each model's own rows, and others
        "| retrained model | scores of | variant | LDS | 95% CI | test examples |",
        "|---|---|---|---|---|---|",
        *[
            f"| {model} | {scores} | {variant} | +0.{i}00 | [+0.{i}01, +0.{i}02] | 7 |"
            for i, (model, scores, variant) in enumerate(
                [(m, s, v) for m in ("teacher", "student") for s in ("teacher", m) for v in ("raw", "cosine")]
            )
        ],
    ]
    validation = ["<!-- validation-figures:start -->", "Measured then on this machine.", "", *lds_table]
    readme.write_text(
        "top\n<!-- positive-control:start -->\nstale\n<!-- positive-control:end -->\n"
        + "\n".join(validation)
        + "\n<!-- validation-figures:end -->\nend\n"
    )
    front = tmp_path / "front.md"
    front.write_text("# front\n<!-- headline:start -->\nstale\n<!-- headline:end -->\nmore\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "readme_figures.py"
    result = subprocess.run(
        [sys.executable, script, "--no-demo", "--control", control_run, control_run, "--doc", readme, "--front", front],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith("top\n<!-- positive-control:start -->") and text.endswith(
        "<!-- validation-figures:end -->\nend\n"
    )
    assert "stale" not in text and "| variant | statistic | losses | demo setting | positive control |" in text
    # the front page's headline: the part's own verdicts on the demo's setting and the control, word for word
    headline = front.read_text()
    assert headline.startswith("# front\n<!-- headline:start -->") and headline.endswith(
        "<!-- headline:end -->\nmore\n"
    )
    copied = [line for line in headline.splitlines() if line.startswith("- ") and not line.startswith("- `")]
    runs = [line for line in headline.splitlines() if line.startswith("- `")]  # each run with its date and machine
    assert len(runs) == 2 and all(line in text.splitlines() and " on " in line for line in runs)
    assert [line[2:].split(":")[0] for line in copied] == [
        "demo setting, defaults",
        "positive control, defaults",
        "positive control, defaults",
    ]
    assert all(line in text.splitlines() for line in copied) and "stale" not in headline
    # the LDS of each model's own scores by the headline's variant, copied from the validation part
    variant = copied[0].split(": ", 1)[1].split(",")[0]
    own_rows = [row for row in lds_table[2:] if row.split(" | ")[0][2:] == row.split(" | ")[1]]
    lines = headline.splitlines()
    assert "Measured then on this machine." in lines and lds_table[0] in lines
    assert [line for line in lines if line.startswith("| ") and "retrained" not in line] == [
        row for row in own_rows if f"| {variant} |" in row
    ]
    with ScoreFile.open_read(control_run / "tracin.h5") as store:
        agreement, report = store.read_table("agreement"), store.read_table("quality_report")
    own = agreement[
        (agreement["comparison"] == b"own - other teacher")
        & (agreement["variant"] == b"raw")
        & (agreement["statistic"] == b"overlap@10")
    ][0]
    cell = f"{own['mean']:+.3f} [{own['ci_low']:+.3f}, {own['ci_high']:+.3f}]"
    assert f"| raw | overlap@10 | defaults | {cell} | {cell} |" in text  # 2 replicas: no p, it could not reach 0.05
    assert "| raw | defaults | - | - | - | - | - | - |" in text  # 2 replicas: no pairing noise to simulate from
    behaviour = report[report["check"] == f"{INHERITED}: stamped, student - baseline".encode()][0]
    assert (
        f"| stamped, student - baseline | student | {behaviour['value']:.3f} [{behaviour['ci_low']:.3f}, "
        f"{behaviour['ci_high']:.3f}] | {behaviour['n_rows']} |"
    ) in text
    assert "- positive control, defaults: known-positive control (behaviour)" in text
    attribution = report[
        (report["check"] == f"{INHERITED}: own - other teacher@10, stamped".encode()) & (report["variant"] == b"raw")
    ][0]
    assert (
        f"| own - other teacher@10, stamped | raw | {attribution['value']:.3f} [{attribution['ci_low']:.3f}, "
        f"{attribution['ci_high']:.3f}] |"
    ) in text
    first = report["variant"][report["variant"] != MODEL_ROWS.encode()][0].decode()
    identical = report[
        (report["check"] == b"identical class top-10")
        & (report["model"] == b"teacher")
        & (report["variant"] == first.encode())
    ][0]
    assert (
        f"| positive control | identical class top-10 | teacher | {identical['value']:.3f} [{identical['ci_low']:.3f}, "
        f"{identical['ci_high']:.3f}] |"
    ) in text
