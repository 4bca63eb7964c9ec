"""Writing files so that a reader or a crash never sees half of one.

`write_atomic` writes to a temporary file in the same folder, fsyncs it, then renames it over the target:
the previous version stays whole until the new one is, and a killed writer leaves only a temporary file
(named `.NAME.*.tmp`, removed on the next failure-free write's error path or left for cleanup).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union


def write_atomic(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """write(handle) into a temporary file beside `path`, flush, fsync, then os.replace onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(values: Any, path: Union[str, Path]) -> None:
    """JSON (indented, newline-terminated) written with write_atomic."""
    text = json.dumps(values, indent=2) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))
