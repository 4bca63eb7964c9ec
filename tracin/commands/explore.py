"""tracin-explore: the page of a finished score file (tracin.results.explore) and, where asked, its tables
(tracin.results.export); lines printed."""

from __future__ import annotations

import math
from pathlib import Path

from tracin.config import ENSEMBLE_SUFFIX
from tracin.errors import TracinError
from tracin.files import exclusive_lock, not_a_file
from tracin.options import ExploreOptions
from tracin.results.explore import check_page_destination, shown_models, write_page
from tracin.results.export import check_export, write_tables
from tracin.results.grids import load_images
from tracin.results.report_folder import check_finished
from tracin.results.runs import check_scored_checkpoints, open_trained_run
from tracin.results.store import ScoreFile


def explore_run(options: ExploreOptions) -> None:
    """Write the page (and the export where asked), printing where they went."""
    for line in explore(options):
        print(line, flush=True)


def explore(options: ExploreOptions) -> list[str]:
    """tracin-explore: the page of a finished score file (and the export where asked); lines to print. The
    score file is read under a reader's lock (no tracin-score or tracin-report may write it meanwhile), the
    page written under its own lock."""
    if options.run is not None and not Path(options.run).is_dir():
        raise TracinError(f"--run {options.run}: no such run folder")
    if not options.scores.is_file():
        raise TracinError(f"{not_a_file(options.scores)}: no score file there (tracin-score --run RUN makes it)")
    out = options.out or options.scores.parent / (
        "explore.html" if options.scores.name == "tracin.h5" else f"{options.scores.stem}.explore.html"
    )
    with ScoreFile.open_read(options.scores) as store:  # a tracin-score file, before a lock file is made beside it
        identity = store.identity
    check_page_destination(out, options.scores, identity)  # before any work
    if options.export is not None:
        check_export(options.export, options.scores, identity)
    with (
        exclusive_lock(options.scores, "the score file", shared=True),
        exclusive_lock(out, "the page"),
        ScoreFile.open_read(options.scores) as store,
    ):
        check_finished(store)
        models = shown_models(store, options.models)
        if options.run is not None:  # the file must be this run's (round 11, P10; round 9, G4)
            run = open_trained_run(options.run, options.data_root)
            check_scored_checkpoints(store, run, [m for m in models if not m.endswith(ENSEMBLE_SUFFIX)])
        images = load_images(store, options.data_root)
        result = write_page(store, images, out, models, options.depth, options.max_inline_mb, options.run)
        where = f" and {result['folder']}/" if result["folder"] else ""
        lines = [
            f"explore: {result['page']}{where} ({_size(result['bytes'])}, {result['images']} images, "
            f"{len(models)} models, {store.n_test} test examples): open it in a browser"
        ]
        if options.export is not None:
            lines += write_tables(store, models, options.export, result["depth"])
    return lines


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{math.ceil(n / 1024)} KB"
