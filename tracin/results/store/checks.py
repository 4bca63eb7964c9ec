"""The check every reader of a finished score file makes before anything is read: the file is whole (HDF5
reads every object), complete, laid out as tracin-score writes it, and every value and attribute equals the
digest written with it (bound to this file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from tracin.errors import StoreError, TracinError
from tracin.results.store.digests import top_level
from tracin.results.store.hdf5 import attribute_value
from tracin.results.store.layout import VALIDATION, layout_problems
from tracin.results.store.salvage import damaged, find_damage
from tracin.results.store.tables import QUALITY_REPORT, RANDOMIZATION

if TYPE_CHECKING:
    from tracin.results.store.file import ScoreFile

STATUSES = ("partial", "complete")  # the statuses tracin writes: the file's (tracin-score), /validation's


def check_finished(store: ScoreFile, unread: Sequence[str] = ()) -> None:
    """A StoreError (or TracinError for a partial file) unless `store` is whole, finished, laid out as
    written and unchanged since (its digests), the top-level groups and tables `unread` (which the caller
    neither reads nor writes) aside: figures, tables and the Python reader (ScoreFile.open_checked) read such
    files only, and name what is wrong with any other."""
    problems = find_damage(store.path)
    if problems:
        raise damaged(store.path, problems, REMEDIES)
    if store.status not in STATUSES:  # round 31, R2: an edited status was said as interrupted
        raise StoreError(
            f"{store.path} records status {store.status!r}, which tracin-score does not write (partial or complete): "
            "the file was edited, or damaged on disk; make it again with tracin-score --overwrite"
        )
    if store.status != "complete":
        raise TracinError(
            f"{store.path} is a partial result (tracin-score was interrupted): run the same tracin-score "
            "command again to finish it first"
        )
    problem = validation_status_problem(store) if VALIDATION not in unread else None
    if problem is not None:
        raise StoreError(f"{problem}: the file was edited, or damaged on disk; {REMEDIES[VALIDATION]}")
    wrong = layout_problems(store)
    if wrong:
        raise StoreError(
            f"{store.path} is not laid out as tracin-score writes it: {wrong[0]}"
            + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
        )
    changed = [problem for problem in store.changed_since_written() if top_level(problem) not in unread]
    if changed:
        # round 13, F5a: a table tracin-report wrote, cut short by a full disk, is its to make again; only
        # when all that changed is its (round 28, F3, F7: tracin-report then refused the scores edited too)
        remedy = owners_remedy({top_level(problem) for problem in changed})
        first = next((problem for problem in changed if top_level(problem) not in REMEDIES), changed[0])
        remedy = remedy or "make it again with tracin-score --overwrite"
        raise StoreError(f"{store.path}: {first}: the file was edited, or damaged on disk; {remedy}")


def validation_status_problem(store: ScoreFile) -> Optional[str]:
    """What is wrong with the status the file's /validation records, where it is not one tracin-validate
    writes (partial or complete); None otherwise. A status is left out of the digests, as a resume changes it
    (round 32, B11: a deleted one ended tracin-report in a KeyError; B04, B07, B10: tracin-validate made it
    again without a word)."""
    group = store._h5.get(VALIDATION)
    if group is None or not hasattr(group, "attrs"):
        return None  # layout_problems says what a /validation that is no group is
    status = attribute_value(group.attrs.get("status"))
    if status in STATUSES:
        return None
    said = "no status" if status is None else f"status {status!r}"
    return f"{store.path}: /validation records {said}, which tracin-validate does not write (partial or complete)"


def replacement_notes(path: Path) -> list[str]:
    """[a note] when the score file at `path` has an unfinished replacement beside it (NAME.replacing, left by
    an interrupted tracin-score --overwrite), which that command continues and moves over it (round 27, R02;
    round 28, B3: the readers of `path` said nothing of it)."""
    from tracin.results.store.file import replacing_path  # file imports this module's check when used

    work = replacing_path(Path(path))
    if not work.exists():
        return []
    return [
        f"note: {work} is left from an interrupted tracin-score --overwrite: that command again continues it "
        f"and replaces {work.with_suffix('').name} with it; or remove it"
    ]


REMEDIES = {  # what makes a top-level group or table of a score file again, where not tracin-score --overwrite,
    # in the order that works: tracin-report refuses an edited /validation, which tracin-validate makes again
    VALIDATION: "run tracin-validate again, which makes /validation again",
    RANDOMIZATION: "run tracin-report again, which makes its tables again",
    QUALITY_REPORT: "run tracin-report again, which makes its tables again",
}


def owners_remedy(groups: set[str]) -> Optional[str]:
    """What makes the changed top-level `groups` of a score file again when REMEDIES names each, their
    commands in REMEDIES' order ("..., then ..."); None when one is tracin-score's (round 28, F3, F7: a remedy
    that could not work; round 29, M6: /validation and a report table both edited were sent to tracin-score
    --overwrite, which would discard the validation's retrainings)."""
    if not groups <= REMEDIES.keys():
        return None
    return ", then ".join(dict.fromkeys(remedy for group, remedy in REMEDIES.items() if group in groups))
