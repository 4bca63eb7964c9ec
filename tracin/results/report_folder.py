"""A score file's report as files: every figure as PNG and the tables as report.md, in plots/ beside the
file (tracin-score --plots, scripts/figures.py), made of whole, finished files only (store.check_finished).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tracin.errors import TracinError
from tracin.files import check_own, report_path, write_own_figure, write_own_markdown
from tracin.results.detection import GROUP_MARK, detection_table, mislabel_curves
from tracin.results.figures import (
    plot_agreement,
    plot_agreement_by_depth,
    plot_mislabel_detection,
    plot_overlap_curves,
    plot_quality_report,
    plot_score_histograms,
    plot_validation,
)
from tracin.results.grids import choose_test_rows, load_images, proponent_grids
from tracin.results.markdown import (
    agreement_markdown,
    comparison_tables,
    quality_checks_markdown,
    quality_report_markdown,
    report_verdicts,
    validation_markdown,
)
from tracin.results.store import ScoreFile, check_finished


def quality_report_summary(store: ScoreFile) -> tuple[str, Optional[Figure]]:
    """(Markdown with the verdicts, figure) of the file's quality report; a line saying how to make it,
    and no figure, when it has none."""
    try:
        table = store.read_table("quality_report")
    except TracinError as error:
        return f"**Quality report:** {error}.", None
    said = report_verdicts(store, table)
    return quality_report_markdown(table) + "".join(f"\n- {line}" for line in said), plot_quality_report(table, said)


def validation_summary(store: ScoreFile) -> tuple[str, Optional[Figure]]:
    """(Markdown, figure) of the file's tracin-validate results; a line saying how to make them, and no
    figure, when it has none."""
    try:
        leave_out, lds = store.validation().tables()
    except TracinError as error:
        return f"**Validation:** {error}.", None
    return validation_markdown(leave_out, lds), plot_validation(leave_out, lds)


def _make_figures(
    store: ScoreFile,
    figures: dict,
    sections: list,
    models: list,
    data_root: Optional[str],
    examples: Optional[Sequence[int]],
) -> None:
    """Every figure of a report into `figures` (by file name), every table into `sections`."""
    figures["agreement.png"], figures["agreement_by_depth.png"] = plot_agreement(store), plot_agreement_by_depth(store)
    quality_text, figures["quality_report.png"] = quality_report_summary(store)
    sections.insert(0, quality_text)
    for a, b in store.comparison_pairs():
        figures[f"overlap_{a}__{b}.png"] = plot_overlap_curves(store, a, b)
        sections.append(comparison_tables(store, a, b))
    figures["score_histograms.png"] = plot_score_histograms(store, models)
    images, shown = load_images(store, data_root), choose_test_rows(store, count=3, examples=examples)
    figures.update(proponent_grids(store, images, [m for m in models if not m.endswith(".ensemble")], shown))
    if store.noisy.any():
        curves = mislabel_curves(store, models, groups=True)
        figures["mislabel_detection.png"] = plot_mislabel_detection(
            {name: curve for name, curve in curves.items() if not name.endswith(GROUP_MARK)}
        )
        sections.append(detection_table(curves))


def write_report(
    path: str | Path,
    out_dir: Optional[str | Path] = None,
    data_root: Optional[str] = None,
    examples: Optional[Sequence[int]] = None,
) -> list[Path]:
    """PNG figures and report.md (the tables) of a finished score file, in out_dir (default: the
    file's folder, under plots/); `examples`: the test indices the proponent grids show (default: by
    rule, choose_test_rows). Returns the files written."""
    with ScoreFile.open_read(Path(path)) as store:
        check_finished(store)
        out = Path(out_dir) if out_dir else report_path(path, "plots")
        check_own([out / "report.md"])  # each figure too, as it is written (round 17, R5)
        out.mkdir(parents=True, exist_ok=True)
        models, written, sections = store.models, [], [quality_checks_markdown(store), agreement_markdown(store)]
        figures: dict[str, Optional[Figure]] = {}
        try:
            _make_figures(store, figures, sections, models, data_root, examples)
            for name, figure in figures.items():
                if figure is not None:
                    write_own_figure(out / name, figure, dpi=110)
                    written.append(out / name)
        finally:  # a failure half-way leaves no figure open (a notebook or a long session would pile them up)
            for figure in figures.values():
                if figure is not None:
                    plt.close(figure)
        text = f"# TracIn report: {path}\n\n" + "\n\n".join(sections) + "\n"
        write_own_markdown(out / "report.md", text)
        written.append(out / "report.md")
    return written
