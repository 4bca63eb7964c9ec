"""Report tables and figures against direct computations on the stored arrays."""

import numpy as np
import pytest

from tracin.errors import TracinError
from tracin.results import detection, figures, grids, markdown, sanity
from tracin.results.statistics import overlap_at_k
from tracin.results.store import DataArrays, ScoreFile

AREA_ATOL = 1e-12  # float64: the same area summed in another order


def test_detection_curve_counts_flipped_labels_in_inspection_order():
    flipped = np.array([False, True, False, True, False])
    x, y = detection.detection_curve(np.array([3, 0, 1, 4, 2]), flipped)
    np.testing.assert_allclose(x, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(y, [0, 0.5, 0.5, 1.0, 1.0, 1.0])
    perfect = detection.detection_summary({"perfect": detection.detection_curve(np.array([1, 3, 0, 2, 4]), flipped)})[0]
    assert perfect["found@20%"] == pytest.approx(0.5) and perfect["area"] > 0.75


def test_random_order_finds_flipped_labels_at_the_rate_inspected():
    rng = np.random.default_rng(0)
    flipped = rng.random(20_000) < 0.1
    summary = detection.detection_summary({"random": detection.detection_curve(rng.permutation(20_000), flipped)})[0]
    assert summary["area"] == pytest.approx(0.5, abs=0.02)
    assert summary["found@10%"] == pytest.approx(0.1, abs=0.02)


def test_the_curve_area_is_the_mean_detection_score_of_a_ranking_without_ties():
    """Mislabel AUC is computed in two places: detection_summary's trapezoid area under the curve (/detection,
    report.md) and the mean of sanity.detection_scores (the quality report, with its CI). Without ties in the
    ranking they are one number; with ties they differ on purpose (a stable sort against shared mean
    positions), which is why neither calls the other."""
    rng = np.random.default_rng(0)
    values, flipped = rng.permutation(500).astype(np.float64), rng.random(500) < 0.1
    curve = detection.detection_curve(np.argsort(-values, kind="stable"), flipped)
    area = detection.detection_summary({"ranking": curve})[0]["area"]
    assert area == pytest.approx(sanity.detection_scores(values, flipped).mean(), abs=AREA_ATOL)


def test_mislabel_curves_rank_by_the_stored_self_influence_and_loss(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        curves = detection.mislabel_curves(store, ["teacher"])
        flipped = store.noisy
        assert flipped.any()
        order = np.argsort(-store.model("teacher").self_influence, kind="stable")
        x, y = curves["teacher: self-influence"]
        top = len(flipped) // 5
        assert y[top] == pytest.approx(flipped[order[:top]].sum() / flipped.sum())
        loss_order = np.argsort(-store.model("teacher").last_loss, kind="stable")
        assert curves["teacher: loss (last checkpoint)"][1][top] == pytest.approx(
            flipped[loss_order[:top]].sum() / flipped.sum()
        )


def test_overlap_curve_equals_overlap_at_each_k(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        test_a, _ = store.model("teacher").rankings()
        test_b, _ = store.model("student").rankings()
        ks = figures.curve_ks(8)
        assert ks[0] == 1 and ks[-1] == 8 and len(ks) == 8  # every k while there are few
        assert list(figures.curve_ks(1000))[:3] == [1, 2, 3] and figures.curve_ks(1000)[-1] == 1000
        curve = figures.overlap_curve(test_a.top_index, test_b.top_index)
        for i, k in enumerate(ks):
            assert curve[i] == pytest.approx(overlap_at_k(test_a.top_index, test_b.top_index, int(k)).mean())


def test_tables_show_the_stored_numbers(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        text = markdown.comparison_tables(store, "teacher", "student")
        tables = store.comparison("teacher", "student")
        first = tables["overlap"][0]
        assert f"| sum | test | proponents | 3 | {first['mean']:.3f} | {first['median']:.3f} |" in text
        assert f"| {first['chance']:.4f} | {first['jaccard']:.3f} |" in text and "| chance k/n |" in text
        for title in (
            "overlap of top-k sets",
            "rank agreement per row",
            "score distributions: two-sample Kolmogorov",
            "self-influence correlation",
        ):
            assert f"**teacher vs student: {title}" in text
        assert len([line for line in text.splitlines() if line.startswith("| epoch_004 |")]) == 8 + 4 + 1  # every row
        only_ks = markdown.comparison_tables(store, "teacher", "student", ["ks"])
        assert "Kolmogorov" in only_ks and "overlap" not in only_ks
        assert store.models == ["teacher", "student", "student_baseline"]
        assert set(store.comparison_pairs()) == {
            ("teacher", "student"),
            ("teacher", "student_baseline"),
            ("student", "student_baseline"),
        }


def test_plots_written_by_tracin_score_are_real_images(tiny_scores):
    import matplotlib.image

    plots = tiny_scores.parent / "plots"
    names = {p.name for p in plots.iterdir()}
    assert {
        "proponents.png",
        "score_histograms.png",
        "mislabel_detection.png",
        "overlap_teacher__student.png",
        "report.md",
    } <= names
    for png in plots.glob("*.png"):
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels.std() > 0.01, png.name
    text = (plots / "report.md").read_text()
    assert "Mislabel detection" in text and "teacher vs student" in text


def test_mislabel_detection_without_label_noise_is_a_clear_error(tmp_path):
    labels = np.arange(8) % 2
    clean = DataArrays(np.arange(8), np.arange(4), labels, labels[:4], labels.copy())
    store, _ = ScoreFile.create_or_resume(tmp_path / "clean.h5", {}, {}, clean, overwrite=False)
    with store, pytest.raises(TracinError, match="no training label was flipped"):
        detection.mislabel_curves(store, ["teacher"])


def test_stored_predictions_are_the_last_checkpoints_argmax(tiny_scores, tiny_run):
    """tracin-score keeps each model's test predictions; tracin-report's own loader (build_model and the
    checkpoint, not the engine) gives the same classes."""
    from tracin.commands.report import test_predictions
    from tracin.commands.score import checked_data, open_trained_run
    from tracin.runtime import start_runtime

    run = open_trained_run(str(tiny_run), None)
    with ScoreFile.open_read(tiny_scores) as store, start_runtime("cpu", quiet=True) as runtime:
        data = checked_data(run)
        for name in ("teacher", "student"):
            predicted, confidence = store.model(name).predictions
            assert np.array_equal(predicted, test_predictions(name, store, run, data, runtime))
            assert ((confidence > 0) & (confidence <= 1)).all()


def test_test_rows_by_rule_are_the_least_overlapping_and_the_most_confident_errors(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        top_t, top_s = store.model("teacher").rankings()[0].top_index, store.model("student").rankings()[0].top_index
        overlap = overlap_at_k(top_t, top_s, top_t.shape[1])
        predicted, confidence = store.model("teacher").predictions
        wrong = [r for r in range(store.n_test) if predicted[r] != store.test_labels[r]]
        chosen = grids.choose_test_rows(store, count=4)
        assert chosen[:2] == sorted(range(store.n_test), key=lambda r: (overlap[r], r))[:2]
        confident = sorted(wrong, key=lambda r: (-confidence[r], r))
        assert [r for r in chosen[2:]] == [r for r in confident if r not in chosen[:2]][:2]
        index = store.test_index
        assert grids.choose_test_rows(store, examples=[int(index[5]), int(index[1])]) == [5, 1]
        with pytest.raises(TracinError, match="not among the scored test examples"):
            grids.choose_test_rows(store, examples=[10**9])


def test_every_figure_title_names_the_variant_and_the_models(tiny_scores):
    import matplotlib.pyplot as plt

    with ScoreFile.open_read(tiny_scores) as store:
        models = store.models
        made = [figures.plot_overlap_curves(store, "teacher", "student"), figures.plot_score_histograms(store, models)]
        for figure in made:
            title = figure._suptitle.get_text()
            assert "raw TracInCP" in title and "teacher" in title and "student" in title, title
            plt.close(figure)


def test_the_proponent_grid_shows_prediction_index_and_score(tiny_scores):
    import matplotlib.pyplot as plt

    with ScoreFile.open_read(tiny_scores) as store:
        images = grids.Images(np.zeros((store.n_train, 1, 4, 4), np.uint8), np.zeros((store.n_test, 1, 4, 4), np.uint8))
        figure = grids.plot_proponent_grid(store, images, ["teacher", "student"], [3], k=2)
        titles = [ax.get_title() for ax in figure.axes]
        ranking = store.model("student").rankings()[0]
        first = int(ranking.top_index[3, 0])
        assert titles[0].startswith(f"teacher\ntest #{int(store.test_index[3])}: ") and "predicts " in titles[0]
        assert titles[5].startswith("student\n") and titles[6].startswith(
            f"+1 train #{int(store.train_index[first])}\n"
        )  # the student's row
        assert titles[6].endswith(f"{float(ranking.top_score[3, 0]):+.3g}")
        assert "raw TracInCP" in figure._suptitle.get_text()
        plt.close(figure)


def test_one_grid_without_replicas_and_role_models_pick_replica_0(tiny_scores):
    with ScoreFile.open_read(tiny_scores) as store:
        images = grids.Images(np.zeros((store.n_train, 1, 4, 4), np.uint8), np.zeros((store.n_test, 1, 4, 4), np.uint8))
        assert list(grids.proponent_grids(store, images, ["teacher", "student"], [0])) == [
            "proponents.png"
        ]  # no replicas
    assert markdown.role_models(["teacher", "teacher.r1", "student", "teacher.ensemble"]) == ["teacher", "student"]
