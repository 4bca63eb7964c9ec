"""Faults injected on purpose, so that tests can stop a run at an exact point instead of racing a timer.

`TRACIN_FAULT="POINT:N:ACTION"` makes the N-th time this process reaches POINT (counting from 1) do ACTION:

    kill        SIGKILL itself (what `kill -9`, an OOM killer or a power cut leave behind)
    enospc      raise OSError(ENOSPC) as a full disk would
    interrupt   raise KeyboardInterrupt (Ctrl-C)

The points are named in POINTS, each placed where a real fault would leave the most half-done work. Without
the variable `reach` is one dictionary lookup; nothing here changes a result.

`TRACIN_FAULT="h5-write:N:enospc"` fills the disk under HDF5 itself: HDF5 files are opened through
`FullDisk`, whose N-th write that grows a file fails with ENOSPC, as does every later one (a full disk stays
full; writes inside a file's present size still succeed). This leaves the half-written metadata a real full
disk leaves, without root or a tmpfs.
"""

from __future__ import annotations

import errno
import io
import os
import signal
from collections import Counter

from tracin.errors import TracinError

POINTS = (
    "data",  # data loaded, before anything is written
    "file-write",  # inside an atomic write: temporary file written, not yet renamed
    "file-in-place",  # a small file written in place (a page's image): opened, its bytes not yet written
    "train-epoch",  # an epoch's checkpoint and last.pt saved, run.json not yet updated
    "h5-header",  # a new score file created, its header half written
    "score-block",  # a block of scores written and marked done
    "rankings",  # before a model's top-k tables are written
    "comparison",  # before a pair's comparison tables are written
    "report",  # before the figures are written
    "validate-unit",  # a retraining's margins written and marked done (tracin-validate)
    "h5-write",  # a write that grows an HDF5 file (enospc only: the disk is full from then on)
)
ACTIONS = ("kill", "enospc", "interrupt")
_reached: Counter = Counter()


def _parse(spec: str) -> tuple[str, int, str]:
    try:
        point, count, action = spec.split(":")
        number = int(count)
    except ValueError:
        raise TracinError(f"TRACIN_FAULT must be POINT:N:ACTION, got {spec!r}") from None
    if point not in POINTS or action not in ACTIONS or number < 1 or (point == "h5-write" and action != "enospc"):
        raise TracinError(
            f"TRACIN_FAULT {spec!r}: points {', '.join(POINTS)}; actions {', '.join(ACTIONS)} "
            "(h5-write: enospc only); N >= 1"
        )
    return point, number, action


def reach(point: str) -> None:
    """Count a pass through `point`; do the injected fault if TRACIN_FAULT names this pass."""
    spec = os.environ.get("TRACIN_FAULT")
    if not spec:
        return
    target, number, action = _parse(spec)
    if target != point:
        return
    _reached[point] += 1
    if _reached[point] != number:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected by TRACIN_FAULT)")
    raise KeyboardInterrupt


def full_disk_file(path, mode: str) -> "FullDisk | None":
    """The file object HDF5 should write `path` through (h5py mode "w" or "r+") when TRACIN_FAULT fills the
    disk under HDF5 ("h5-write:N:enospc"); None otherwise, and for reading."""
    spec = os.environ.get("TRACIN_FAULT")
    if not spec or mode not in ("w", "r+") or _parse(spec)[0] != "h5-write":
        return None
    return FullDisk(path, "w+" if mode == "w" else "r+")


def disk_filled() -> bool:
    """Whether a FullDisk of this process has refused a write. h5py's file-object driver does not always
    raise the refusal itself: HDF5 may swallow it inside a metadata flush and a later callback of the same
    file then fails with an AttributeError. Any error after the disk filled is the full disk."""
    return _filled


_filled = False


class FullDisk(io.FileIO):
    """A file on a disk that fills at the N-th write growing any file of this process (TRACIN_FAULT's N)."""

    def __repr__(self) -> str:  # what HDF5 names a file object by, in a full disk's line (round 38, K03)
        return os.fspath(self.name)

    def write(self, data) -> int:
        if self.tell() + len(data) > os.fstat(self.fileno()).st_size:
            _reached["h5-write"] += 1
            if _reached["h5-write"] >= _parse(os.environ["TRACIN_FAULT"])[1]:
                global _filled
                _filled = True
                raise OSError(errno.ENOSPC, "No space left on device (injected by TRACIN_FAULT)")
        return super().write(data)
