"""Writing files so that a reader or a crash never sees half of one, and one writer per output.

`write_atomic` writes to a temporary file in the same folder, fsyncs it, then renames it over the target:
the previous version stays whole until the new one is. A failed write removes its temporary file; a killed
writer leaves it (`.NAME.*.tmp`), and `remove_stale_temporaries` clears those once the output's lock is held.
`exclusive_lock` is the advisory lock every command holds on the outputs it writes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Union

from tracin import faults
from tracin.errors import TracinError


def default_mode() -> int:
    """The permissions open() gives a new file under this process's umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_file(path: Union[str, Path]) -> None:
    """Flush a file's data to the disk (before a rename publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """write(handle) into a temporary file beside `path`, flush, fsync, then os.replace onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_mode())
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        faults.reach("file-write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(values: Any, path: Union[str, Path]) -> None:
    """JSON (indented, newline-terminated) written with write_atomic."""
    text = json.dumps(values, indent=2) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


@contextmanager
def exclusive_lock(target: Union[str, Path], what: str, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock (flock) on `target` for the duration: a second process that wants the same
    output is refused with one line naming the process that holds it. The lock lives in a small file
    beside the target (`.NAME.lock`, for a file or a folder), which is kept (removing it would race a
    waiting process), except when this lock made the folders it lives in and its holder wrote no target:
    then the lock file and those folders go, while the lock is still held. `shared`: a reader's lock (tracin-score on a run folder): any number of readers at
    once, but none while a writer holds it, and no writer while a reader does."""
    target = Path(target).resolve()  # one lock for every path (relative, symlinked) to the same output
    lock = target.with_name(f".{target.name}.lock")
    created = [folder for folder in (lock.parent, *lock.parent.parents) if not folder.exists()]
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")
    except OSError as error:
        if not shared or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield  # a reader of a folder nobody may write in: no writer can change it, so no lock is needed
        return
    acquired = False
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            acquired = True
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise TracinError(
                f"{what} {target} is in use by process {holder}; wait for it to finish, or stop it") from None
        handle.seek(0)  # the latest holder's pid, for the message a refused process gets
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        if acquired and not shared and created and not target.exists():  # refused before writing: no folder left
            _remove_made_folders(lock, created)
        handle.close()  # closing releases the lock


def _remove_made_folders(lock: Path, created: list[Path]) -> None:
    """Remove the lock file and the folders made for it, innermost first, each only if empty."""
    lock.unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_stale_temporaries_under(folder: Union[str, Path]) -> list[Path]:
    """Remove every `.NAME.*.tmp` a killed write_atomic left anywhere under `folder` (call with the
    folder's lock held, on a folder this tool made). Score files' temporaries (`.NAME.h5.*.tmp`) belong to
    tracin-score's own lock and are left alone. Returns what was removed."""
    stale = sorted(p for p in Path(folder).rglob(".*.tmp") if p.is_file() and ".h5." not in p.name)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_stale_temporaries(target: Union[str, Path]) -> list[Path]:
    """Remove the `.NAME.*.tmp` files a killed writer left beside `target` (call with its lock held, so
    no live writer owns them). Returns what was removed."""
    target = Path(target)
    stale = sorted(target.parent.glob(f".{target.name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def disk_full(error: object) -> bool:
    """Whether `error` is a full disk or quota, as the OS or h5py (often without an errno) reports it."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, Exception) and any(words in str(error) for words in ("No space left on device", "Disk quota exceeded"))
