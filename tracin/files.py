"""Writing files so that a reader or a crash never sees half of one, and one writer per output.

`write_atomic` writes to a temporary file in the same folder, fsyncs it, then renames it over the target:
the previous version stays whole until the new one is. A failed write removes its temporary file; a killed
writer leaves it (`.NAME.tracin-*.tmp`), and `remove_stale_temporaries` clears those once the output's lock is held.
`exclusive_lock` is the advisory lock every command holds on the outputs it writes; its hidden lock file
(`.NAME.lock`) goes when the command ends.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import html
import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, Sequence, Union

from tracin import faults
from tracin.errors import TracinError

# Faults of the machine a user fixes (a full disk, a read-only or foreign folder): the command says them in
# one line (tracin.cli.boundary), never a traceback.
USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


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


def refuse_link(path: Union[str, Path], what: str) -> None:
    """A TracinError if `path` is a symbolic link, or a file with another name (a hard link): nothing is
    written through, or removed behind, a link someone else could have placed (the target may be a
    colleague's file or run). tracin makes no links, so a file of its own has one name."""
    path = Path(path)
    if path.is_symlink():
        raise TracinError(
            f"{what} {path} is a symbolic link (to {os.readlink(path)}): nothing is written through a "
            "link; name the real path"
        )
    if path.is_file() and path.stat().st_nlink > 1 and not _kept_by_salvage(path):
        raise TracinError(_hard_link_message(path, path.stat().st_nlink, what))


def link_spellings(path: Union[str, Path]) -> list[Path]:
    """Every absolute path that names `path` as its links are followed one at a time, as the kernel walks
    them (os.path.realpath's walk): the path as given, then at each link met a real folder followed by the
    link's target and the components still to walk, ending with the real path (round 42, T01: a link to a
    link in a run's folder was seen only as given and at its end). Spellings with a '..' still to walk are
    left out: their folders cannot be read from their words."""
    pending, spellings, hops = list(Path(os.path.join(os.getcwd(), path)).parts), [], 0
    walked = Path(pending.pop(0))
    while pending:
        part = pending.pop(0)
        if part == "..":
            walked = walked.parent
        elif part not in ("", "."):
            here = walked / part
            if not here.is_symlink() or hops > 40:  # a loop: the kernel's ELOOP, met by the caller's open
                walked = here
                continue
            spellings.append(here.joinpath(*pending))
            target, hops = Path(os.readlink(here)), hops + 1
            pending = [*target.parts[target.is_absolute() :], *pending]
            walked = Path(target.anchor) if target.is_absolute() else walked
    spellings.append(walked)
    return [spelling for spelling in dict.fromkeys(spellings) if ".." not in spelling.parts]


def _kept_by_salvage(path: Path) -> bool:
    """The file's other name is the NAME.damaged copy a salvage of a damaged score file links before it
    replaces NAME (tracin.results.store.salvage), left by a salvage killed before its rename."""
    if path.stat().st_nlink != 2:
        return False
    kept = re.fullmatch(r"(.+)\.damaged(-\d+)?", path.name)  # the kept name, seen from the other side
    others = [path.with_name(kept.group(1))] if kept else []
    others += path.parent.glob(f"{glob.escape(path.name)}.damaged*")
    return any(other.is_file() and other.samefile(path) for other in others)


def _hard_link_message(path: Path, names: int, what: str = "") -> str:
    return (
        f"{what} {path} is a hard link (one file with {names} names): writing it would change the file under "
        "its other names too; nothing is written through a link".lstrip()
    )


def refuse_links(paths, what: str) -> None:
    """refuse_link for each of `paths`."""
    for path in paths:
        refuse_link(path, what)


def refuse_links_under(root: Union[str, Path], what: str) -> None:
    """refuse_link for everything inside the folder `root` (tracin makes no links in its folders): a link
    planted in a run folder (a model's train.log, or its folder) is refused before anything is written."""
    for folder, folders, files in os.walk(root):
        for name in (*folders, *files):
            refuse_link(Path(folder) / name, what)


def _open_own(path: Union[str, Path], flags: int) -> int:
    """A descriptor of `path` opened for writing (made if absent) only if it is a regular file of one name:
    a symbolic link, hard link or FIFO placed there, even after the command's checks, is refused, not
    followed, and the file is not changed (truncating is left to the caller, after this check)."""
    flags |= os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, default_mode())
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        kind = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder"}.get(error.errno, "not a regular file")
        raise TracinError(f"{path} is {kind}: nothing is written through a link or into a pipe") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
        os.close(fd)
        if stat.S_ISREG(status.st_mode):
            raise TracinError(_hard_link_message(Path(path), status.st_nlink))
        raise TracinError(f"{path} is not a regular file: nothing is written into it")
    os.set_blocking(fd, True)
    return fd


def append_line(path: Union[str, Path], line: str) -> None:
    """Append `line` and a newline to the log file `path`, made if absent, never through a link (a symbolic
    or hard link placed there after the command's checks is refused, not followed) nor into a FIFO."""
    with os.fdopen(_open_own(path, os.O_APPEND), "a") as handle:
        handle.write(line + "\n")


def write_in_place(path: Union[str, Path], data: bytes) -> None:
    """Replace the contents of the small file `path` (made if absent) where it is, never through a link or
    into a FIFO: cheaper than write_atomic for many files (a page's 50,000 images), and not atomic. A full
    disk is said naming `path` (round 33, FDX: tracin-explore's named no file)."""
    with naming_full_disk(path):
        fd = _open_own(path, 0)
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "wb") as handle:
            faults.reach("file-in-place")
            handle.write(data)


def not_a_file(path: Union[str, Path]) -> str:
    """Why `path`, expected to be a regular file, is none: "PATH is a folder", "... does not exist", ..."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if path.exists() or path.is_symlink():
        return f"{path} is not a regular file (a pipe, device or dangling link)"
    return f"{path} does not exist"


def head_holds(path: Union[str, Path], *marks: str, size: int = 4096) -> bool:
    """Whether the first `size` bytes of the file `path` hold every one of `marks`: how a command tells a file
    it wrote (a page whose head carries the command's mark) from one it must leave as it is. False for what
    is not a regular file (a FIFO is never opened: reading one would wait for a writer)."""
    if not Path(path).is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(size).decode("utf-8", errors="replace")
    return all(mark in head for mark in marks)


def resolved(path: Union[str, Path]) -> str:
    """`path` made absolute, its links and '..' resolved: how a command names a file it was given."""
    return str(Path(path).resolve())


def existing_folder(path: Union[str, Path], what: str, hint: str, holds: Sequence[str] = ()) -> str:
    """`path` resolved, if it is a folder (holding one of the folders `holds`, if given); else a TracinError
    naming `what`, with `hint`."""
    if not Path(path).is_dir():
        raise TracinError(f"{what} {path}: no such folder ({hint})")
    if holds and not any((Path(path) / folder).is_dir() for folder in holds):
        raise TracinError(f"{what} {path} holds none of {', '.join(holds)} ({hint})")
    return resolved(path)


def report_path(score_file: Union[str, Path], name: str) -> Path:
    """Where a report of a score file goes: NAME beside the default tracin.h5 (quality_report.md, plots/), and
    STEM.NAME beside any other score file (other.quality_report.md, other.plots/), so that two score files in
    one folder keep their own reports; a TracinError when another score file beside it has the same stem
    (a.h5 beside a.hdf5 or a: round 23, S1, one's reports replaced the other's without a word); what tracin
    keeps beside a score file (NAME.replacing, NAME.damaged) does not count."""
    score_file = Path(score_file)
    prefix = _report_prefix(score_file.name)
    if prefix and score_file.parent.is_dir():
        for other in os.scandir(score_file.parent):
            if other.name == score_file.name or SIDE_FILES.fullmatch(other.name):
                continue
            if _report_prefix(other.name) == prefix and _is_hdf5(other.path):
                raise TracinError(
                    f"{score_file} and {other.name} beside it would write the same reports ({prefix}{name}): "
                    "give one of them a name of its own"
                )
    return score_file.parent / f"{prefix}{name}"


SIDE_FILES = re.compile(r".+\.(replacing|damaged(-\d+)?)")  # what tracin keeps beside a score file (round 24, N8)


def score_file_name(path: str) -> str:
    """`path`, a score file's name given to a command, unless it is one of the names tracin-score keeps for
    itself beside a score file NAME (round 25, S04, S13: --scores y.replacing was deleted or adopted by
    --overwrite of y; y.damaged's reports replaced y's)."""
    if SIDE_FILES.fullmatch(Path(path).name):
        raise TracinError(
            f"{path}: tracin-score keeps NAME.replacing and NAME.damaged(-N) beside a score file NAME for itself; "
            "give the score file another name (copy a kept file to another name to read it)"
        )
    return path


def score_path(path: str) -> Path:
    """score_file_name's Path."""
    return Path(score_file_name(path))


def _report_prefix(score_name: str) -> str:
    return "" if score_name == "tracin.h5" else f"{Path(score_name).stem}."


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of an HDF5 file without a user block (what h5py writes)


def _is_hdf5(path: str) -> bool:
    """Whether `path` is a file (a link to one too) that starts as an HDF5 file; a FIFO is never opened."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


OWN_MARK = "written by tracin"  # in the head of each report and figure written beside a score file


def check_own(paths: Iterable[Union[str, Path]], what: str = "a report") -> None:
    """A TracinError naming the first of `paths` where something is that tracin did not write (no OWN_MARK in
    its head: a colleague's file at a report's name, a folder or a FIFO; round 17, R2-R5: replaced without a
    word), so that a command refuses it before its work."""
    for path in paths:
        folder = Path(path).parent  # round 20, RP4, SCP, VP: a file or FIFO at plots/ was a traceback after the work
        if folder.exists() and not folder.is_dir():
            raise TracinError(f"{folder} exists and is not a folder, where {what} would go; it is left as it is")
        refuse_link(path, what.capitalize())  # round 18, L19-L25: a link there was replaced by a file, unsaid
        if Path(path).exists() and not head_holds(path, OWN_MARK):
            raise TracinError(f"{path} exists and is not {what} tracin wrote; it is left as it is (move it away)")


def check_own_table(path: Union[str, Path], columns: Sequence[str], what: str) -> None:
    """A TracinError if something is at `path` that is not a CSV table whose header holds `columns` (how a
    table tracin wrote is told from a colleague's file at its name: round 18, W15, E1; a CSV carries no mark)."""
    refuse_link(path, what)
    if not Path(path).exists():
        return
    header = ""
    if Path(path).is_file():
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline(4096)
    if not set(columns) <= set(header.rstrip("\r\n").split(",")):
        raise TracinError(f"{path} exists and is not {what} tracin wrote; it is left as it is (move it away)")


def made_of_marks(scores: Union[str, Path], identity: str) -> str:
    """The head lines of a page made of a score file: its path (resolved), for a reader and for the message
    when it is refused, and its `identity` (ScoreFile.identity), which the page is checked by (a file moved is
    the same file; round 18, N8, N9, M3b)."""
    return (
        f'<meta name="tracin-scores" content="{html.escape(resolved(scores))}">\n'
        f'<meta name="tracin-scores-sha256" content="{html.escape(identity)}">\n'
    )


def check_made_of(path: Union[str, Path], scores: Union[str, Path], identity: str, what: str, hint: str) -> None:
    """A TracinError if the page at `path` (one the command wrote: its own mark checked first) was made of
    another score file than the one of `identity` at `scores`: the message says whether that is an earlier
    file at the same path (scored again since, round 19, N9, E14) and what to do (`hint`)."""
    marks = made_of_marks(scores, identity).splitlines()
    if not Path(path).exists() or head_holds(path, marks[1]):
        return
    whose = another_score_file(same_path=head_holds(path, marks[0]))
    raise TracinError(f"{path} is {what} of {whose}; it is left as it is ({hint})")


def another_score_file(same_path: bool) -> str:
    """How a message names the score file an output was made of, when it is not the one it is checked against:
    `same_path`, its recorded path is that file's (an earlier file there, or the output edited)."""
    if same_path:
        return "an earlier score file at the same path (scored again since, or this output was edited)"
    return "another score file"


def write_own_markdown(path: Union[str, Path], text: str) -> None:
    """`text` to the Markdown file `path` (check_own first), its first line an HTML comment carrying OWN_MARK
    (no renderer shows it)."""
    check_own([path])
    write_atomic(path, lambda handle: handle.write(f"<!-- {OWN_MARK} -->\n{text}".encode()))


def write_own_figure(path: Union[str, Path], figure: Any, **how: Any) -> None:
    """A matplotlib `figure` as PNG to `path` (check_own first), OWN_MARK in its Description text chunk,
    which comes before the image data; `how`: savefig's dpi, bbox_inches."""
    check_own([path], "a figure")
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", metadata={"Description": OWN_MARK}, **how))


def check_replaceable(path: Union[str, Path]) -> None:
    """A TracinError if something that is not a file (a folder, FIFO or device) is at `path`, where a command
    would put its file (round 17, S6, S7: a folder there was a traceback, a FIFO replaced without a word)."""
    if Path(path).exists() and not Path(path).is_file():
        raise TracinError(f"{path} exists and is not a file (a folder, pipe or device); it is left as it is")


def check_folder(path: Union[str, Path], what: str) -> None:
    """A TracinError if something that is not a folder is at `path`, where a command writes `what` (round
    28, C14: a file in place of a model's folder was a traceback when its first file was written)."""
    if Path(path).exists() and not Path(path).is_dir():
        raise TracinError(f"{path} is not a folder: {what} cannot be written there; it is left as it is: move it away")


TEMPORARY_TAG = "tracin-"  # in every temporary's name, .NAME.tracin-XXXXXXXX.tmp: only those are removed as stale


def temporary_prefix(path: Union[str, Path]) -> str:
    """The start of the name of a temporary file this tool writes beside `path` (mkstemp adds 8 random
    characters and .tmp): a user's own `.NAME.mine.tmp` there is never taken for one (round 31, Q4)."""
    return f".{Path(path).name}.{TEMPORARY_TAG}"


def is_temporary(path: Union[str, Path]) -> bool:
    """Whether `path` is named as a temporary file this tool writes (temporary_prefix)."""
    name = Path(path).name
    return name.startswith(".") and f".{TEMPORARY_TAG}" in name and name.endswith(".tmp")


def write_atomic(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """write(handle) into a temporary file beside `path`, flush, fsync, then os.replace onto `path` (which
    must be a file, or nothing: check_replaceable; in a folder, or nothing: check_folder)."""
    path = Path(path)
    check_replaceable(path)
    check_folder(path.parent, path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_mode())
    with naming_full_disk(path):
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
def command_locks(
    run_root: Union[str, Path], score_file: Union[str, Path, None] = None, writes_run: bool = False, main: bool = True
) -> Iterator[None]:
    """The locks a command holds while it works, taken in one order everywhere: the run folder's (a
    writer's for tracin-train, which changes it; else a reader's, so that the run is neither replaced nor
    changed under a command that reads it), then, given one, the score file's writer's lock. `main`: only
    the process that writes (rank 0 under torchrun) holds them; the others take none."""
    if not main:
        yield
        return
    with exclusive_lock(run_root, "the run", shared=not writes_run):
        if score_file is None:
            yield
        else:
            with exclusive_lock(score_file, "the score file"):
                yield


@contextmanager
def exclusive_lock(target: Union[str, Path], what: str, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock (flock) on `target` for the duration: a second process that wants the same
    output is refused with one line naming the process that holds it. The lock lives in a small hidden file
    beside the target (`.NAME.lock`, for a file or a folder), removed when the last holder lets go. `shared`:
    a reader's lock (tracin-score on a run folder): any number of readers at once, but none while a writer
    holds it, and no writer while a reader does.

    A target that is itself a link is refused (a run folder or output someone else may have placed: every
    command writes beside and into what it locks), and the lock file is opened without following links (a
    planted `.NAME.lock` link is refused, and nothing is written through it). It is removed while still
    locked, and a process that locked a file already removed opens the path again: so removal never lets two
    holders in. Folders this lock made are removed too when its holder wrote no target."""
    refuse_link(target, what)
    target = Path(target).resolve()  # one lock for every path (relative, through linked folders) to one output
    lock = target.with_name(f".{target.name}.lock")
    created = missing_folders(lock.parent)
    try:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a path through a file, or a special file system such as /proc
            if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EINVAL):
                raise
            raise TracinError(
                f"cannot make the folder {lock.parent} for {what} ({os.strerror(error.errno)}); choose another place"
            ) from None
        fd = _locked(lock, shared, what, target)
    except OSError as error:
        if not shared or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield  # a reader of a folder nobody may write in: no writer can change it, so no lock is needed
        return
    try:
        with naming_full_disk(lock):  # round 35, FD01, FD02: a full disk said without its file
            os.ftruncate(fd, 0)  # the latest holder's pid, for the message a refused process gets
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        _release(fd, lock)
        if not shared and created and not target.exists():  # refused before writing: no folder left
            remove_made_folders(created)


def _locked(lock: Path, shared: bool, what: str, target: Path) -> int:
    """A descriptor of `lock`, flock-ed; a planted link or a non-file there is refused, a holder named."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, default_mode())
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise TracinError(
                    f"{lock} is not a lock file this tool made (a link or a folder): remove it, and check who placed it"
                ) from None
            if error.errno in USER_FIXABLE_ERRNOS:  # a full, read-only or foreign disk: the command's own line
                raise
            raise TracinError(  # e.g. a folder under /proc, where no file can be made (red-team round 7)
                f"{lock}: cannot make a lock file there ({error.strerror}): choose a folder where files can be written"
            ) from None
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:  # a FIFO, or a hard link to someone's file
            os.close(fd)
            raise TracinError(
                f"{lock} is not a lock file this tool made (not a plain file of its own): remove it, "
                "and check who placed it"
            )
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TracinError(
                f"{what} {target} is in use by process {holder}; wait for it to finish, or stop it"
            ) from None
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # its last holder removed it after we opened it: lock the path's new file


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open descriptor is the file now at `path` (not one removed or replaced since)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _release(fd: int, lock: Path) -> None:
    """Let go of the lock, removing its file if no one else holds it (an exclusive lock taken without
    waiting proves that; a reader who cannot take it leaves the file to the others)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, lock):
            lock.unlink(missing_ok=True)
    except OSError:  # held by another (BlockingIOError), or not removable here: removal is best-effort
        pass
    finally:
        os.close(fd)  # closing releases the lock


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist, innermost first: what making it will make."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def remove_made_folders(created: list[Path]) -> None:
    """Remove folders made for a write that did not happen (missing_folders), innermost first, each only if
    empty: one holding files (another's, or a partial download) keeps itself and its parents."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_stale_temporaries_under(folder: Union[str, Path]) -> list[Path]:
    """Remove every `.NAME.tracin-*.tmp` a killed write_atomic left anywhere under `folder` (call with the
    folder's lock held, on a folder this tool made). Score files' temporaries (`.NAME.h5.tracin-*.tmp`) belong to
    tracin-score's own lock and are left alone. Returns what was removed."""
    found = Path(folder).rglob(f".*.{TEMPORARY_TAG}*.tmp")
    stale = sorted(p for p in found if p.is_file() and ".h5." not in p.name)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_stale_temporaries(target: Union[str, Path]) -> list[Path]:
    """Remove the `.NAME.tracin-*.tmp` files a killed writer left beside `target` (call with its lock held, so
    no live writer owns them; a user's own `.NAME.*.tmp` is left alone). Returns what was removed."""
    target = Path(target)
    stale = sorted(target.parent.glob(f"{temporary_prefix(target)}*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def disk_full(error: object) -> bool:
    """Whether `error` is a full disk, quota or file-size limit (ulimit -f: round 25, Z01-Z03), as the OS or
    h5py (often without an errno, in its message) reports it."""
    if error is not None and faults.disk_filled():  # TRACIN_FAULT's full disk, however h5py reported it
        return True
    return isinstance(error, BaseException) and full_disk_errno(error) is not None


FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # "No space left", "Disk quota exceeded", "File too large"


@contextmanager
def naming_full_disk(path: Union[str, Path]) -> Iterator[None]:
    """A full disk, quota or file-size limit met within, reported without a file name (by write, flush,
    torch.save or gzip), is raised again naming `path` (round 27, F03: tracin-train's named no file)."""
    try:
        yield
    except BaseException as error:
        # torch.save's zip writer, closing after a file-size limit, raises a RuntimeError of its own (round 28, E7);
        # nothing else (an interrupt, a bug) is taken for the full disk it was raised while handling
        chain = error_chain(error) if isinstance(error, (OSError, RuntimeError)) else [error]
        fault = next((e for e in chain if full_disk_errno(e) is not None), None)
        if fault is not None and not getattr(fault, "filename", None):
            raise OSError(full_disk_errno(fault), os.strerror(full_disk_errno(fault)), str(path)) from error
        raise


def error_chain(error: Optional[BaseException]) -> list[BaseException]:
    """`error`, the error it was raised from or while handling, that one's, and so on (each once)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def full_disk_errno(error: BaseException) -> Optional[int]:
    """The errno of FULL_DISK_ERRNOS that `error` reports (torch.save and h5py often without an errno, in
    its message), or None."""
    number = getattr(error, "errno", None)
    if number in FULL_DISK_ERRNOS:
        return number
    return next((n for n in FULL_DISK_ERRNOS if isinstance(error, Exception) and os.strerror(n) in str(error)), None)
