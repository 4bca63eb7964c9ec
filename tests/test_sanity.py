"""tracin-report: the field's sanity checks on a tiny run with merged classes, a planted shortcut, label
noise and replicas; every figure against a direct computation (model randomization against the torch.func
reference on the re-initialised weights)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from tracin.config import DataConfig, ModelConfig
from tracin.engine.reference import func_tracin_scores
from tracin.results import sanity
from tracin.results.sanity import MODEL_ROWS
from tracin.results.statistics import bootstrap_ci, sample_rows
from tracin.results.store import ScoreFile
from tracin.training.checkpoints import list_checkpoints, load_checkpoint
from tracin.training.data import load_data
from tracin.training.models import build_model

from conftest import TINY_RUN_ARGS, demo_copy, run_tracin_score, run_tracin_train, subprocess_env

K = 10
RANDOM_TRAIN, RANDOM_TEST = 40, 6


def run_tracin_report(args, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("tracin-report")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


@pytest.fixture(scope="module")
def sanity_run(fashion_mnist_root, tmp_path_factory) -> Path:
    out_root = tmp_path_factory.mktemp("sanity")
    result = run_tracin_train(
        [
            "--run",
            "planted",
            "--out-root",
            out_root,
            "--data-root",
            fashion_mnist_root,
            *TINY_RUN_ARGS,
            "--coarse-labels",
            "tops-footwear",
            "--shortcut-class",
            "0",
            "--shortcut-fraction",
            "0.3",
            "--replicas",
            "2",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return out_root / "planted"


@pytest.fixture(scope="module")
def sanity_report(sanity_run) -> tuple[Path, str]:
    out = sanity_run / "tracin.h5"
    result = run_tracin_score(
        [
            "--run",
            sanity_run,
            "--scores",
            out,
            "--models",
            "teacher,student,student_baseline",
            "--variants",
            "raw,cosine",
            "--train-subset",
            "160",
            "--test-subset",
            "40",
            "--topk",
            f"3,{K}",
            "--device",
            "cpu",
            "--quiet",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    result = run_tracin_report(
        [
            "--run",
            sanity_run,
            "--randomization-train",
            RANDOM_TRAIN,
            "--randomization-test",
            RANDOM_TEST,
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def _rows(table: np.ndarray, check: str, model: str, variant: str) -> np.void:
    match = table[
        (table["check"] == check.encode()) & (table["model"] == model.encode()) & (table["variant"] == variant.encode())
    ]
    assert len(match) == 1, (check, model, variant)
    return match[0]


def _assert_summary(row: np.void, per_row: np.ndarray) -> None:
    assert row["value"] == pytest.approx(np.nanmean(per_row))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_ci([per_row]), nan_ok=True)
    assert row["n_rows"] == np.isfinite(per_row).sum()


def _record(run: Path) -> tuple[dict, dict]:
    return json.loads((run / "data.json").read_text()), json.loads((run / "run.json").read_text())


def test_the_report_holds_every_check_for_teacher_student_and_baseline(sanity_report):
    path, stdout = sanity_report
    with ScoreFile.open_read(path) as store:
        table = store.read_table("quality_report")
    for model in ("teacher", "student", "student_baseline"):
        checks = {r["check"].decode() for r in table if r["model"] == model.encode()}
        for check in (
            "identical class top-1",
            f"identical class top-{K}",
            "identical subclass top-1",
            f"identical subclass top-{K}",
            "concentration: top-1 share (lower)",
            "randomization: all layers (lower)",
            "randomization: head and above (lower)",
            "mislabel AUC",
            f"shortcut precision@{K}",
            "shortcut AUC",
            "mislabel AUC, loss baseline",
            "accuracy, stamped test",
            "other class taken for shortcut class, stamped",
        ):
            assert check in checks, (model, check)
    assert np.isfinite(table["value"]).all()
    assert "quality report" in stdout and "planted shortcut: student" in stdout and "model randomization" in stdout
    assert "own teacher" in stdout  # the own- versus other-teacher verdict, from the replicas
    assert (path.parent / "quality_report.md").is_file() and (path.parent / "plots" / "quality_report.png").is_file()


def test_identical_class_subclass_and_shortcut_equal_a_direct_computation(sanity_run, sanity_report):
    path, _ = sanity_report
    record, _ = _record(sanity_run)
    position = {index: i for i, index in enumerate(record["train_index"])}
    test_position = {index: i for i, index in enumerate(record["test_index"])}
    stamped_train = set(record["stamped_train_index"])
    with ScoreFile.open_read(path) as store:
        table = store.read_table("quality_report")
        train_fine = np.array([record["train_fine_labels"][position[i]] for i in store.train_index])
        test_fine = np.array([record["test_fine_labels"][test_position[i]] for i in store.test_index])
        stamped = np.array([i in stamped_train for i in store.train_index])
        test_stamped = np.array([i in set(record["stamped_test_index"]) for i in store.test_index])
        coarse_of = {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 2, 5: 3, 7: 3, 9: 3, 8: 4}
        assert [coarse_of[f] for f in test_fine] == store.test_labels.tolist()
        for model, variant in itertools.product(("teacher", "student", "student_baseline"), ("raw", "cosine")):
            top = store.model(model).variant_rankings(variant)[0].top_index
            scores = store.model(model).matrix(variant=variant)[()]
            subclass = []
            for row, label in enumerate(store.test_labels):
                if label in (0, 3):  # the merged coarse classes: tops, footwear
                    subclass.append(np.mean([train_fine[j] == test_fine[row] for j in top[row, :K]]))
                else:
                    subclass.append(np.nan)
            _assert_summary(_rows(table, f"identical subclass top-{K}", model, variant), np.array(subclass))
            chosen = [row for row in range(store.n_test) if test_stamped[row] and store.test_labels[row] == 0]
            precision = np.array([stamped[top[row, :K]].mean() for row in chosen])
            _assert_summary(_rows(table, f"shortcut precision@{K}", model, variant), precision)
            auc = []
            for row in chosen:
                positive, negative = scores[stamped, row], scores[~stamped, row]
                auc.append(
                    np.mean((positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :]))
                )
            _assert_summary(_rows(table, "shortcut AUC", model, variant), np.array(auc))
            assert _rows(table, f"shortcut precision@{K}", model, variant)["chance"] == pytest.approx(stamped.mean())
            # as the field defines it: stamped test images of other classes, all and those predicted as class 0
            predicted = store.model(model).predictions[0]
            for label, chosen in (
                ("other-class", [r for r in range(store.n_test) if test_stamped[r] and store.test_labels[r] != 0]),
                (
                    "predicted-as-shortcut",
                    [
                        r
                        for r in range(store.n_test)
                        if test_stamped[r] and store.test_labels[r] != 0 and predicted[r] == 0
                    ],
                ),
            ):
                if not chosen:
                    assert not (
                        (table["check"] == f"{label} shortcut AUPRC".encode()) & (table["model"] == model.encode())
                    ).any()
                    continue
                precision = np.array([stamped[top[row, :K]].mean() for row in chosen])
                _assert_summary(_rows(table, f"{label} shortcut precision@{K}", model, variant), precision)
                _assert_summary(
                    _rows(table, f"{label} shortcut AUPRC", model, variant),
                    np.array([_average_precision(scores[:, row], stamped) for row in chosen]),
                )
            assert len([r for r in range(store.n_test) if test_stamped[r] and store.test_labels[r] != 0]) > 0


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """sklearn's average_precision_score, step by step: over the distinct scores from the highest down,
    the precision at each threshold times the recall it adds."""
    total, found, area = positive.sum(), 0, 0.0
    for threshold in np.unique(scores)[::-1]:
        above = scores >= threshold
        recall = positive[above].sum() / total
        area += (recall - found) * positive[above].mean()
        found = recall
    return area


def test_average_precision_counts_ties_as_sklearn_does():
    rng = np.random.default_rng(3)
    columns = rng.integers(0, 6, size=(40, 7)).astype(float)  # many ties
    positive = rng.random(40) < 0.3
    expected = [_average_precision(columns[:, j], positive) for j in range(7)]
    np.testing.assert_allclose(sanity.average_precision(columns, positive), expected)
    assert sanity.average_precision(np.arange(40.0)[::-1, None], np.arange(40) < 5)[0] == 1.0  # every positive first


def test_model_randomization_equals_the_reference_on_reinitialised_weights(sanity_run, sanity_report):
    """The head alone and every layer re-initialised (the model's own initialiser, seed 0), scored by the
    float64 torch.func reference; the Spearman per test row equals the stored one."""
    path, _ = sanity_report
    _, run_record = _record(sanity_run)
    data = load_data(DataConfig.from_dict(run_record["data_config"]))
    with ScoreFile.open_read(path) as store:
        stored = store.read_table("randomization")
        train_rows, test_rows = sample_rows(store.n_train, RANDOM_TRAIN, 0), sample_rows(store.n_test, RANDOM_TEST, 1)
        train_at = [data.train.index.tolist().index(i) for i in store.train_index[train_rows]]
        test_at = [data.test.index.tolist().index(i) for i in store.test_index[test_rows]]
        trained = store.model("student").matrix()[()][np.ix_(train_rows, test_rows)]
    train = (data.train.subset(torch.tensor(train_at)), data.test.subset(torch.tensor(test_at)))
    payloads = [load_checkpoint(p) for p in list_checkpoints(sanity_run / "student")]
    config = ModelConfig.from_dict(payloads[-1]["model_config"])
    torch.manual_seed(0)
    fresh = build_model(config).state_dict()
    for label, prefixes in (("head and above", ("fc.",)), ("all layers", ("",))):
        checkpoints = [
            ({k: (fresh[k] if k.startswith(prefixes) else v) for k, v in p["model"].items()}, p["lr"]) for p in payloads
        ]
        inputs = [torch.stack([split[i][0] for i in range(len(split))]) for split in train]
        labels = [split.labels for split in train]
        reference = func_tracin_scores(
            build_model(config), checkpoints, (inputs[0], labels[0]), (inputs[1], labels[1])
        ).numpy()
        expected = [scipy.stats.spearmanr(trained[:, j], reference[:, j]).statistic for j in range(len(test_rows))]
        mine = stored[
            (stored["model"] == b"student") & (stored["variant"] == b"raw") & (stored["randomized"] == label.encode())
        ]
        assert mine["test_row"].tolist() == test_rows.tolist()
        np.testing.assert_allclose(mine["spearman"], expected, atol=1e-6)


def test_shortcut_accuracy_rows_equal_the_models_predictions(sanity_run, sanity_report):
    path, _ = sanity_report
    _, run_record = _record(sanity_run)
    data = load_data(DataConfig.from_dict(run_record["data_config"]))
    with ScoreFile.open_read(path) as store:
        table = store.read_table("quality_report")
        at = [data.test.index.tolist().index(i) for i in store.test_index]
        test = data.test.subset(torch.tensor(at))
        labels, stamped = store.test_labels, store.test_stamped
    assert torch.equal(test.stamped, torch.from_numpy(stamped))
    payload = load_checkpoint(list_checkpoints(sanity_run / "teacher")[-1])
    model = build_model(ModelConfig.from_dict(payload["model_config"])).eval()
    model.load_state_dict(payload["model"])
    with torch.no_grad():
        predicted = model(torch.stack([test[i][0] for i in range(len(test))])).argmax(1).numpy()
    _assert_summary(
        _rows(table, "accuracy, stamped test", "teacher", MODEL_ROWS), (predicted == labels)[stamped].astype(float)
    )
    other = stamped & (labels != 0)
    _assert_summary(
        _rows(table, "other class taken for shortcut class, stamped", "teacher", MODEL_ROWS),
        (predicted == 0)[other].astype(float),
    )


def test_a_second_report_keeps_the_randomization_and_gives_the_same_table(sanity_run, sanity_report):
    path, _ = sanity_report
    with ScoreFile.open_read(path) as store:
        before, randomization = store.read_table("quality_report"), store.read_table("randomization")
    result = run_tracin_report(
        [
            "--run",
            sanity_run,
            "--randomization-train",
            RANDOM_TRAIN,
            "--randomization-test",
            RANDOM_TEST,
            "--device",
            "cpu",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert not re.search(r"^model randomization: \S+$", result.stdout, re.MULTILINE), (
        result.stdout
    )  # no model recomputed
    with ScoreFile.open_read(path) as store:
        assert store.read_table("randomization").tobytes() == randomization.tobytes()
        after = store.read_table("quality_report")
        assert after.tobytes() == before.tobytes()  # bitwise: NaN where a CI is undefined too


def test_report_refusals_are_one_line(sanity_run, tmp_path):
    for args, message in (
        (["--run", tmp_path], "not a tracin-train run"),
        (["--run", sanity_run, "--scores", tmp_path / "none.h5"], "does not exist"),
        (["--run", sanity_run, "--randomization-train", "1"], "--randomization-train must be at least 3"),
        (["--run", sanity_run, "--models", "assistant"], "is not a model name"),
    ):
        result = run_tracin_report(args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_ranking_auc_counts_pairs_and_ties():
    scores = np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    positive = np.array([True, False, True, False])
    assert sanity.ranking_auc(scores, positive).tolist() == [1.0, pytest.approx((0.5 + 0.5 + 0 + 0) / 4)]


def test_identical_subclass_leaves_out_unmerged_classes_and_gives_chance_within_the_coarse_class():
    train_labels, train_fine = np.array([0, 0, 0, 1]), np.array([5, 5, 6, 9])
    test_labels, test_fine = np.array([0, 1]), np.array([6, 9])
    top = np.array([[2, 0], [3, 0]])
    same, chance = sanity.identical_subclass(top, train_fine, test_fine, train_labels, test_labels, 2)
    assert same[0] == 0.5 and np.isnan(same[1]) and chance[0] == pytest.approx(1 / 3) and np.isnan(chance[1])


def test_cascade_goes_from_the_head_down_to_every_layer():
    assert sanity.cascade(["stem", "layer1", "head"]) == [
        ("head and above", ("head",)),
        ("layer1 and above", ("layer1", "head")),
        ("all layers", ("stem", "layer1", "head")),
    ]


def test_detection_scores_average_to_the_area_of_a_perfect_and_a_reversed_ranking():
    flipped = np.array([True, True, False, False, False, False])
    assert sanity.detection_scores(np.array([6, 5, 4, 3, 2, 1.0]), flipped).mean() == pytest.approx(1 - 1 / 6)
    assert sanity.detection_scores(np.array([1, 2, 3, 4, 5, 6.0]), flipped).mean() == pytest.approx(1 / 6)


def test_the_overlap_notebook_and_report_show_the_quality_report(sanity_run, sanity_report, tmp_path):
    from test_notebooks import outputs_of

    from tracin.cli.notebooks import execute_notebook, notebook_folder
    from tracin.results.report_folder import write_report

    path, _ = sanity_report
    notebook = execute_notebook(notebook_folder() / "overlap_tables.ipynb", {"SCORES": str(path), "DATA_ROOT": None})
    text, _ = outputs_of(notebook)
    assert "# Quality report" in text and "identical subclass top-1" in text and "planted shortcut: teacher" in text
    written = write_report(path, tmp_path)
    assert (tmp_path / "quality_report.png") in written
    assert "| shortcut AUC |" in (tmp_path / "report.md").read_text()


def test_readme_figures_state_the_quality_report_with_its_run_and_machine(
    tiny_run, tiny_scores, sanity_run, sanity_report, tmp_path
):
    demo = demo_copy(tiny_run, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- demo-figures:start -->\n<!-- demo-figures:end -->\nmiddle\n"
        "<!-- quality-report:start -->\nstale\n<!-- quality-report:end -->\nend\n"
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "readme_figures.py"
    scores = sanity_report[0]
    result = subprocess.run(
        [sys.executable, script, "--run", demo, "--scores", tiny_scores, "--quality", sanity_run, "--readme", readme],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert "stale" not in text and text.endswith("<!-- quality-report:end -->\nend\n")
    with ScoreFile.open_read(scores) as store:
        row = _rows(store.read_table("quality_report"), "shortcut AUC", "student", "raw")
        seconds = store.table_attrs("quality_report")["provenance"]["seconds"]
    assert "| shortcut AUC | " in text and sanity.format_cell(row) in text
    assert (
        "coarse labels `tops-footwear`" in text
        and f"in {seconds:.0f} s" in text
        and "planted shortcut: student" in text
    )


def _report_rows(*rows) -> np.ndarray:
    return np.array(
        [
            (check, model, variant, value, low, high, chance, 40)
            for check, model, variant, value, low, high, chance in rows
        ],
        dtype=sanity.REPORT_DTYPE,
    )


def test_the_fields_shortcut_verdict_reads_the_default_variant_with_counts_and_chance():
    table = _report_rows(
        (f"shortcut precision@{K}", "teacher", "raw", 0.6, 0.5, 0.7, 0.04),
        (f"other-class shortcut precision@{K}", "teacher", "raw", 0.12, 0.08, 0.16, 0.04),
        ("other-class shortcut AUPRC", "teacher", "raw", 0.09, 0.07, 0.11, 0.04),
        (f"predicted-as-shortcut shortcut precision@{K}", "teacher", "raw", 0.3, 0.2, 0.4, 0.04),
        ("predicted-as-shortcut shortcut AUPRC", "teacher", "raw", 0.2, 0.1, 0.3, 0.04),
        (f"other-class shortcut precision@{K}", "teacher", "cosine", 0.9, 0.8, 1.0, 0.04),
        ("other-class shortcut AUPRC", "teacher", "cosine", 0.9, 0.8, 1.0, 0.04),
    )
    said = [line for line in sanity.shortcut_verdicts(table) if "as the field checks it" in line]
    assert said == [
        "planted shortcut as the field checks it (quanda's ShortcutDetectionMetric): teacher (raw): over the 40 "
        "stamped test images of other classes, stamped train examples are 12.0% of the top-10 [8.0%, 16.0%] and "
        "their AUPRC is 0.090 [0.070, 0.110] (chance 0.040 for both); over the 40 of them taken for the shortcut "
        "class, stamped train examples are 30.0% of the top-10 [20.0%, 40.0%] and their AUPRC is 0.200 [0.100, "
        "0.300] (chance 0.040 for both)"
    ]
    explained = [
        line for line in sanity.shortcut_verdicts(table, test_label="label") if "as the field checks it" in line
    ]
    assert explained == [
        said[0] + " (explained with respect to their true labels, against which stamped train images of the "
        "shortcut class are opponents; the field explains the prediction: tracin-score --test-label prediction)"
    ]


def test_randomization_verdicts_name_the_rankings_that_survive_random_weights():
    table = _report_rows(
        ("randomization: all layers (lower)", "teacher", "raw", 0.2, 0.1, 0.3, 0.0),
        ("randomization: all layers (lower)", "student", "cosine", 0.7, 0.6, 0.8, 0.0),
        ("randomization: all layers (lower)", "student", "raw@head", 0.9, 0.8, 1.0, 0.0),
    )
    said = sanity.randomization_verdicts(table)
    assert len(said) == 2 and "student cosine ranks the train data alike with random weights" in said[0]
    assert "the other 1 model-variant rankings change" in said[1] and "at most 0.200, teacher raw" in said[1]


def test_shortcut_verdicts_say_whether_the_model_learned_it_and_how_much_the_proponents_hold():
    table = _report_rows(
        (f"shortcut precision@{K}", "teacher", "raw", 0.6, 0.5, 0.7, 0.04),
        (f"shortcut precision@{K}", "teacher", "cosine", 0.2, 0.1, 0.3, 0.04),
        ("other class taken for shortcut class, clean", "teacher", MODEL_ROWS, 0.03, 0.01, 0.05, np.nan),
        ("other class taken for shortcut class, stamped", "teacher", MODEL_ROWS, 0.30, 0.20, 0.40, np.nan),
        (f"shortcut precision@{K}", "student", "raw", 0.1, 0.05, 0.15, 0.04),
        ("other class taken for shortcut class, clean", "student", MODEL_ROWS, 0.03, 0.01, 0.05, np.nan),
        ("other class taken for shortcut class, stamped", "student", MODEL_ROWS, 0.04, 0.02, 0.06, np.nan),
    )
    teacher, student = sanity.shortcut_verdicts(table, within_class=0.1)
    assert "60.0% of the top-10" in teacher and "with raw (best variant" in teacher and "at least half" in teacher
    assert "10.0% within the class" in teacher and "it learned the shortcut" in teacher
    assert "less than half" in student and "no sign that it learned the shortcut" in student


def test_a_report_on_a_file_scored_before_the_controls_recomputes_its_agreement_table(
    sanity_run, sanity_report, tmp_path
):
    import shutil

    import numpy.lib.recfunctions as rfn

    from tracin.results.store import ScoreFile as Store

    path = tmp_path / "old.h5"
    shutil.copy(sanity_report[0], path)
    with Store.open_read_write(path) as store:
        current = store.read_table("agreement")
        old = current[~np.isin(current["comparison"], [b"student-baseline'", b"shared - other init"])]
        store.write_table(
            "agreement", rfn.drop_fields(old, ["p_value", "detectable"], usemask=False)
        )  # as tracin-score wrote it before
    result = run_tracin_report(
        [
            "--run",
            sanity_run,
            "--scores",
            path,
            "--randomization-train",
            RANDOM_TRAIN,
            "--randomization-test",
            RANDOM_TEST,
            "--device",
            "cpu",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "agreement table recomputed" in result.stdout and "shared initialisation" in result.stdout
    with Store.open_read(path) as store:
        assert store.read_table("agreement").tobytes() == current.tobytes()


def test_class_concentration_mislabel_and_randomization_rows_equal_a_direct_computation(sanity_report):
    path, _ = sanity_report
    with ScoreFile.open_read(path) as store:
        table, randomization = store.read_table("quality_report"), store.read_table("randomization")
        flipped, n_train = store.noisy, store.n_train
        for model in ("teacher", "student", "student_baseline"):
            top = store.model(model).variant_rankings("raw")[0].top_index
            same = np.array(
                [
                    np.mean([store.train_labels[j] == label for j in top[row, :K]])
                    for row, label in enumerate(store.test_labels)
                ]
            )
            _assert_summary(_rows(table, f"identical class top-{K}", model, "raw"), same)
            counts = np.bincount(top[:, 0])
            row = _rows(table, "concentration: top-1 share (lower)", model, "raw")
            assert row["value"] == pytest.approx(counts.max() / len(top))
            wilson = scipy.stats.binomtest(int(counts.max()), len(top)).proportion_ci(0.95, method="wilson")
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((wilson.low, wilson.high))
            for ranking, check, variant in (
                (store.model(model).self_influence, "mislabel AUC", "raw"),
                (store.model(model).last_loss, "mislabel AUC, loss baseline", MODEL_ROWS),
            ):
                assert len(np.unique(ranking)) == n_train  # no ties: positions are the sort's
                position = np.empty(n_train)
                position[np.argsort(-ranking, kind="stable")] = np.arange(n_train)
                _assert_summary(_rows(table, check, model, variant), 1 - (position[flipped] + 0.5) / n_train)
            for label in (b"head and above", b"all layers"):
                values = randomization[
                    (randomization["model"] == model.encode())
                    & (randomization["variant"] == b"raw")
                    & (randomization["randomized"] == label)
                ]["spearman"]
                _assert_summary(_rows(table, f"randomization: {label.decode()} (lower)", model, "raw"), values)


def test_the_concentration_interval_always_holds_its_share():
    """A percentile bootstrap of a maximum lies above it when the share is small (0.040 [0.050, 0.090] was
    printed); the Wilson interval of the share cannot."""
    rng = np.random.default_rng(0)
    for rows, n_train in ((25, 500), (100, 50), (400, 3), (30, 30)):
        top1 = rng.integers(0, n_train, rows)
        share, low, high = sanity.top1_share_ci(top1)
        assert low <= share <= high
        assert share == np.bincount(top1).max() / rows
    # worked by hand: 4 of 25, z = 1.95996: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    assert sanity.top1_share_ci(np.array([0] * 4 + list(range(1, 22))))[1:] == pytest.approx((0.0640, 0.3465), abs=1e-4)


def test_lds_and_leave_out_rows_come_from_the_files_validation(sanity_run, sanity_report, tmp_path):
    import shutil

    from tracin.results.checks import quality_report_table
    from tracin.results.validation import LDS_DTYPE, LEAVE_OUT_DTYPE, UNIT_DTYPE

    path = tmp_path / "validated.h5"
    shutil.copy(sanity_report[0], path)
    leave_out = np.array(
        [
            ("student", "own", "raw", 5, -0.4, -0.7, -0.1, 0.2, 3),
            ("student", "random", "-", 5, -0.1, -0.3, 0.1, 0.0, 3),
            ("student", "teacher", "raw", 5, -0.2, -0.5, 0.1, 0.0, 3),
        ],
        dtype=LEAVE_OUT_DTYPE,
    )
    lds = np.array(
        [("student", "student", "raw", 0.12, 0.05, 0.2, 40, 10), ("student", "teacher", "raw", 0.3, 0.2, 0.4, 40, 10)],
        dtype=LDS_DTYPE,
    )
    with ScoreFile.open_read_write(path) as store:
        record = store.prepare_validation(np.zeros(0, dtype=UNIT_DTYPE), {"plan": "test"})
        record.write_tables(leave_out, lds)
        table = quality_report_table(store, ["teacher", "student"], store.read_table("randomization"), {})
    lds_row, leave_row = (
        _rows(table, "LDS", "student", "raw"),
        _rows(table, "leave-top-5-out margin change (lower)", "student", "raw"),
    )
    assert (lds_row["value"], lds_row["ci_low"], lds_row["ci_high"], lds_row["n_rows"]) == (0.12, 0.05, 0.2, 40)
    assert (leave_row["value"], leave_row["ci_low"], leave_row["chance"]) == (
        -0.4,
        -0.7,
        -0.1,
    )  # chance: the random removal
    assert (
        len(table[table["check"] == b"LDS"]) == 1
    )  # the student's own scores only; the teacher's LDS row is not its own


def test_a_model_near_chance_and_a_ranking_below_random_are_flagged():
    rows = np.array(
        [
            (sanity.ACCURACY, "teacher", sanity.MODEL_ROWS, 0.85, 0.80, 0.90, 0.1, 100),
            (sanity.ACCURACY, "student", sanity.MODEL_ROWS, 0.12, 0.06, 0.18, 0.1, 100),
            ("mislabel AUC", "student", "raw", 0.41, 0.35, 0.47, 0.5, 30),
            ("mislabel AUC", "teacher", "raw", 0.48, 0.40, 0.56, 0.5, 30),
        ],
        dtype=sanity.REPORT_DTYPE,
    )
    said = sanity.accuracy_verdicts(rows) + sanity.mislabel_verdicts(rows)
    assert len(said) == 2
    assert said[0].startswith("warning: student is near chance") and "0.100 for the majority class" in said[0]
    assert said[1].startswith("warning: student raw mislabel AUC") and "below a random order" in said[1]


def test_near_chance_holds_for_a_majority_class_of_half_or_more():
    """Merged classes (animals against vehicles: 0.6 of the test set) must not flag a model at 99%."""
    rows = np.array(
        [
            (sanity.ACCURACY, "teacher", sanity.MODEL_ROWS, 0.99, 0.98, 1.0, 0.6, 100),
            (sanity.ACCURACY, "student", sanity.MODEL_ROWS, 0.66, 0.59, 0.72, 0.6, 100),
        ],
        dtype=sanity.REPORT_DTYPE,
    )
    said = sanity.accuracy_verdicts(rows) + sanity.mislabel_verdicts(rows)
    assert len(said) == 1 and said[0].startswith("warning: student is near chance")


def test_the_detection_tables_mark_rankings_below_the_random_order():
    from tracin.results.detection import DETECTION_DTYPE, detection_table, format_detection

    table = np.array(
        [(b"teacher: self-influence", 0.40, 0.1, 0.2), (b"random order", 0.50, 0.1, 0.2)], dtype=DETECTION_DTYPE
    )
    text = format_detection(table)
    assert "self-influence  AUC 0.400" in text and text.splitlines()[1].endswith("below the random order")
    assert not text.splitlines()[2].endswith("below the random order")
    curves = {
        "teacher: self-influence": (np.array([0, 1.0]), np.array([0, 0.3])),
        "random order": (np.array([0, 1.0]), np.array([0, 1.0])),
    }
    assert "0.150 (below random)" in detection_table(curves)


def test_no_stored_point_lies_outside_its_own_interval(sanity_report):
    """What the report and the agreement tables print: each value inside its CI (where it has one)."""
    path, _ = sanity_report
    with ScoreFile.open_read(path) as store:
        for table, value in ((store.read_table("quality_report"), "value"), (store.read_table("agreement"), "mean")):
            defined = np.isfinite(table["ci_low"])
            assert defined.any()
            inside = (table["ci_low"] - 1e-12 <= table[value]) & (table[value] <= table["ci_high"] + 1e-12)
            assert inside[defined].all(), table[defined & ~inside]


def test_the_explore_page_carries_the_quality_report_and_its_verdicts(sanity_report):
    """tracin-explore shows the report beside the lists: the same verdicts, every whole-model check."""
    from tracin.results.explore import page_data
    from tracin.results.markdown import report_verdicts

    path, _ = sanity_report
    with ScoreFile.open_read(path) as store:
        quality = page_data(store, store.models, 3).head["quality"]
        assert quality["verdicts"] == report_verdicts(store, store.read_table("quality_report"))
        shown = {(table["variant"], row[0]) for table in quality["tables"] for row in table["rows"]}
        assert ("raw", "other-class shortcut AUPRC") in shown and ("cosine", f"shortcut precision@{K}") in shown
