"""The error boundary of every command: a `TracinError` (a mistake the user can fix), a usage error and a full,
read-only or foreign disk end a command with one line on stderr and exit code 2; an interruption with 130 and
how to go on. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from typing import Callable, Optional, Sequence

from tracin.errors import TracinError
from tracin.files import FULL_DISK_ERRNOS, USER_FIXABLE_ERRNOS, disk_full, error_chain


def arguments(argv: Optional[Sequence[str]]) -> list[str]:
    """The command's arguments. Under `torchrun ... tracin-train -- --run NAME` they follow a `--` that
    torchrun passes on: its own parser would take a bare --run for an abbreviation of its --run-path."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv[1:] if argv[:1] == ["--"] else argv


def _fail(prog: str, message: object) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _disk_fault(error: Exception) -> Optional[str]:
    """The fault of a full, read-only or foreign disk in one line, or None for anything else: of `error`,
    or of the error it was raised from or while handling (torch.save's zip writer, closing after a full
    disk, raises a RuntimeError of its own: round 10, D2)."""
    return next((reason for reason in map(_own_disk_fault, error_chain(error)) if reason is not None), None)


LIMITS = {errno.EFBIG: "a file-size limit (ulimit -f) or the file system's largest file", errno.EDQUOT: "a quota"}
HDF5_FILENAME = re.compile(r"filename = '([^']+)'")  # HDF5's message names the file it failed to write


def _own_disk_fault(error: BaseException) -> Optional[str]:
    """_disk_fault of one error, naming the file and the limit where known (round 26, UL1). h5py and torch.save
    report a full disk without an errno, in their message."""
    text, number = str(error), getattr(error, "errno", None)
    if number not in USER_FIXABLE_ERRNOS:
        number = next((n for n in FULL_DISK_ERRNOS if os.strerror(n) in text), None)
    if number is None and disk_full(error):  # TRACIN_FAULT's, which h5py may report as another error
        number, text = errno.ENOSPC, ""
    if number is None:
        return None
    found = HDF5_FILENAME.search(text)
    filename = getattr(error, "filename", None)
    if isinstance(getattr(filename, "name", None), (str, os.PathLike)):  # h5py's file-object driver names the
        filename = filename.name  # object (TRACIN_FAULT's full disk, faults.FullDisk: round 35, D01)
    where = [
        filename or (found.group(1) if found else _hdf5_files_written()),
        LIMITS.get(number),
    ]
    said = "; ".join(str(part) for part in where if part)
    return f"{os.strerror(number)} ({said})" if said else os.strerror(number)


def _hdf5_files_written() -> Optional[str]:
    """The HDF5 files open for writing, where HDF5's message names none (round 31, K5); None for none."""
    if "h5py" not in sys.modules:
        return None
    from tracin.results.store import hdf5_files_open_for_writing

    return ", ".join(hdf5_files_open_for_writing()) or None


def _exit_keeping_hdf5_files(code: int) -> int:
    """After a full disk, an HDF5 file open for writing is left as a kill would leave it: closing it would
    flush half-written metadata over its last consistent state (and h5py can crash doing so)."""
    if "h5py" in sys.modules:
        from tracin.results.store import hdf5_open_for_writing

        if hdf5_open_for_writing():
            _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def _full_disk_inside_h5py(stop: Callable[[str], int]):
    """h5py meets a full disk while it closes an object, where nothing can raise (Cython prints the error
    through sys.excepthook, then passes it to sys.unraisablehook): the command stops there with
    stop(reason)'s one line, instead of printing a traceback and going on."""

    def unraisable(report) -> None:
        if not disk_full(report.exc_value) or "h5py" not in repr(report.object):
            return previous_hook(report)
        _exit_now(stop(_disk_fault(report.exc_value)))

    def excepthook(kind, error, trace) -> None:
        if not disk_full(error):
            previous_excepthook(kind, error, trace)

    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    previous_excepthook, sys.excepthook = sys.excepthook, excepthook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_hook, previous_excepthook


def run_command(prog: str, work: Callable[[], object], how_to_continue: str) -> int:
    """Exit code of a command: 0 done, 2 a user mistake or a full/read-only disk (one line), 130
    interrupted (saying how to go on). Anything else is a bug and keeps its traceback."""

    def disk_fault(reason: str) -> int:
        return _exit_keeping_hdf5_files(_fail(prog, f"{reason}; finished work is kept: fix it and {how_to_continue}"))

    try:
        with _full_disk_inside_h5py(disk_fault):
            work()
    except TracinError as error:
        return _fail(prog, error)
    except Exception as error:  # h5py reports a full disk as OSError, RuntimeError, ValueError, ...
        reason = _disk_fault(error)
        if reason is None:
            raise
        return disk_fault(reason)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {how_to_continue}", file=sys.stderr)
        return 130
    return 0
