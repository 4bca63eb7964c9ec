"""tracin-explore: the page of a finished score file (tracin.results.explore) and, where asked, its tables
(tracin.results.export); lines printed."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from tracin.errors import TracinError
from tracin.files import exclusive_lock, not_a_file, remove_stale_temporaries, remove_stale_temporaries_under
from tracin.options import ExploreOptions
from tracin.results.explore import FOLDER_MARK, check_page_destination, shown_models, write_page
from tracin.results.export import EXPORT_RECORD, EXPORTS, check_export, write_tables
from tracin.results.grids import load_images
from tracin.results.runs import check_scored_checkpoints, open_trained_run, refuse_linked_run, unfinished_notes
from tracin.results.store import ScoreFile
from tracin.results.store.checks import check_finished, replacement_notes


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
    refuse_linked_run(options.scores, options.run)
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
        exclusive_lock(options.export, "--export") if options.export is not None else nullcontext(),
        ScoreFile.open_read(options.scores) as store,
    ):
        _remove_stale_temporaries(out, options.export)
        check_finished(store)
        models, notes = shown_models(store, options.models), []
        if options.run is not None:  # the file must be this run's (round 11, P10; round 9, G4)
            run = open_trained_run(options.run, options.data_root)
            check_scored_checkpoints(store, run)
            notes = unfinished_notes(run, models, store)  # round 26, RJ12
        images = load_images(store, options.data_root)
        result = write_page(store, images, out, models, options.depth, options.max_inline_mb, options.run, notes)
        where = f" and {result['folder']}/" if result["folder"] else ""
        lines = [
            *notes,
            *replacement_notes(options.scores),  # round 28, B3
            f"explore: {result['page']}{where} ({_size(result['bytes'])}, {result['images']} images, "
            f"{len(models)} models, {store.n_test} test examples): open it in a browser",
        ]
        unused = out.with_name(f"{out.stem}_files")
        if result["folder"] is None and (unused / FOLDER_MARK).is_file():  # round 21, XF5: left without a word
            lines.append(f"explore: {unused}/ holds an earlier page's data, which this page does not use (remove it)")
        if options.export is not None:
            lines += write_tables(store, models, options.export, result["depth"])
    return lines


def _remove_stale_temporaries(out: Path, export: Optional[Path]) -> None:
    """The `.NAME.*.tmp` files a killed explore left beside its page, in the page's data folder and beside its
    tables (round 20, XK3; round 19, G18, G22): called with their locks held, so no live writer owns them."""
    remove_stale_temporaries(out)
    folder = out.with_name(f"{out.stem}_files")
    if (folder / FOLDER_MARK).is_file():  # a folder explore made (checked before: no link in it)
        remove_stale_temporaries_under(folder)
    for name in (*EXPORTS, EXPORT_RECORD) if export is not None else ():
        remove_stale_temporaries(export / name)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{math.ceil(n / 1024)} KB"
