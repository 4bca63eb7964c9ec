"""Faults injected on purpose, so that tests can stop a run at an exact point instead of racing a timer.

`TRACIN_FAULT="POINT:N:ACTION"` makes the N-th time this process reaches POINT (counting from 1) do ACTION:

    kill        SIGKILL itself (what `kill -9`, an OOM killer or a power cut leave behind)
    enospc      raise OSError(ENOSPC) as a full disk would
    interrupt   raise KeyboardInterrupt (Ctrl-C)

The points are named in POINTS, each placed where a real fault would leave the most half-done work. Without
the variable `reach` is one dictionary lookup; nothing here changes a result.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

from tracin.errors import TracinError

POINTS = (
    "data",  # data loaded, before anything is written
    "file-write",  # inside an atomic write: temporary file written, not yet renamed
    "train-epoch",  # an epoch's checkpoint and last.pt saved, run.json not yet updated
    "h5-header",  # a new score file created, its header half written
    "score-block",  # a block of scores written and marked done
    "rankings",  # before a model's top-k tables are written
    "comparison",  # before a pair's comparison tables are written
    "report",  # before the figures are written
    "validate-unit",  # a retraining's margins written and marked done (tracin-validate)
)
ACTIONS = ("kill", "enospc", "interrupt")
_reached: Counter = Counter()


def _parse(spec: str) -> tuple[str, int, str]:
    try:
        point, count, action = spec.split(":")
        number = int(count)
    except ValueError:
        raise TracinError(f"TRACIN_FAULT must be POINT:N:ACTION, got {spec!r}") from None
    if point not in POINTS or action not in ACTIONS or number < 1:
        raise TracinError(f"TRACIN_FAULT {spec!r}: points {', '.join(POINTS)}; actions {', '.join(ACTIONS)}; N >= 1")
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
