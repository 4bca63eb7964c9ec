"""tracin.files: the lock every command holds on its outputs. Its hidden file goes when the command ends, and a
link or folder someone planted at its path is refused without writing through it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from tracin.errors import TracinError
from tracin.files import exclusive_lock


def test_the_lock_file_is_removed_when_the_holder_lets_go(tmp_path):
    out = tmp_path / "tracin.h5"
    with exclusive_lock(out, "the score file"):
        assert (tmp_path / ".tracin.h5.lock").read_text() == str(os.getpid())
    assert list(tmp_path.iterdir()) == []


def test_readers_share_it_and_the_last_one_out_removes_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with exclusive_lock(run, "the run", shared=True):
        with exclusive_lock(run, "the run", shared=True):
            with pytest.raises(TracinError, match="in use by process"):
                with exclusive_lock(run, "the run"):
                    pass
        assert (tmp_path / ".run.lock").exists()  # the outer reader still holds it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_planted_link_is_refused_and_its_target_untouched(tmp_path):
    colleague = tmp_path / "colleague.h5"
    colleague.write_bytes(b"a finished score file" * 1000)
    (tmp_path / ".tracin.h5.lock").symlink_to(colleague)
    with pytest.raises(TracinError, match="not a lock file this tool made"):
        with exclusive_lock(tmp_path / "tracin.h5", "the score file"):
            pass
    assert colleague.read_bytes() == b"a finished score file" * 1000


def test_a_folder_at_the_lock_path_is_one_line(tmp_path):
    (tmp_path / ".tracin.h5.lock").mkdir()
    with pytest.raises(TracinError, match="not a lock file this tool made"):
        with exclusive_lock(tmp_path / "tracin.h5", "the score file"):
            pass


def _hold_then_signal(path, held, release):
    with exclusive_lock(path, "the score file"):
        held.set()
        release.wait(30)


def test_removal_never_lets_two_holders_in(tmp_path):
    """Another process locks, lets go (removing the file) again and again, while this one keeps trying: each
    time this one gets in, it is the only holder of the file at the path."""
    out = tmp_path / "tracin.h5"
    context = multiprocessing.get_context("fork")
    for _ in range(5):
        held, release = context.Event(), context.Event()
        other = context.Process(target=_hold_then_signal, args=(out, held, release))
        other.start()
        assert held.wait(30)
        with pytest.raises(TracinError, match=f"in use by process {other.pid}"):
            with exclusive_lock(out, "the score file"):
                pass
        release.set()
        other.join(30)
        with exclusive_lock(out, "the score file"):
            assert (tmp_path / ".tracin.h5.lock").read_text() == str(os.getpid())
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch):
    """The race removal creates: a holder removes the file after this process opened it and before it
    locked it. This process must then lock the file now at the path, not the removed one."""
    import fcntl

    import tracin.files as files

    out, lock = tmp_path / "tracin.h5", tmp_path / ".tracin.h5.lock"
    real_flock, calls = fcntl.flock, []

    def flock_after_a_removal(fd, operation):
        if not calls:  # the first attempt: another holder let go and removed the file meanwhile
            lock.unlink()
        calls.append(operation)
        return real_flock(fd, operation)

    monkeypatch.setattr(files.fcntl, "flock", flock_after_a_removal)
    with exclusive_lock(out, "the score file"):
        held = os.stat(lock)
        assert lock.read_text() == str(os.getpid())
    assert len(calls) >= 2 and held.st_nlink == 1  # opened again, and the file it holds is the one at the path
    assert list(tmp_path.iterdir()) == []


def test_a_planted_fifo_or_hard_link_is_refused(tmp_path):
    colleague = tmp_path / "colleague.h5"
    colleague.write_bytes(b"finished")
    os.link(colleague, tmp_path / ".tracin.h5.lock")
    with pytest.raises(TracinError, match="not a lock file this tool made"):
        with exclusive_lock(tmp_path / "tracin.h5", "the score file"):
            pass
    assert colleague.read_bytes() == b"finished"
    os.mkfifo(tmp_path / ".other.h5.lock")
    with pytest.raises(TracinError, match="not a lock file this tool made"):
        with exclusive_lock(tmp_path / "other.h5", "the score file"):
            pass


def test_a_lock_that_cannot_be_removed_does_not_hide_the_result(tmp_path, monkeypatch):
    from pathlib import Path

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    with exclusive_lock(tmp_path / "tracin.h5", "the score file"):
        monkeypatch.setattr(Path, "unlink", refuse)
    assert (tmp_path / ".tracin.h5.lock").exists()  # left behind, and no error replaced the command's own end


def test_a_folder_where_no_lock_file_can_be_made_is_one_line():
    """Red-team round 7: --scores /proc/x.h5 (a folder where files cannot be made) was a traceback."""
    with pytest.raises(TracinError, match=r"/proc/\.x\.h5\.lock: cannot make a lock file there"):
        with exclusive_lock("/proc/x.h5", "the score file"):
            pass


def test_a_file_is_known_as_ours_by_the_marks_in_its_head_and_a_fifo_is_never_opened(tmp_path):
    """head_holds, which explore and the notebooks ask before replacing a page: each mark must be in the head;
    a FIFO planted at a page's path is not read (reading it would wait for a writer that never comes)."""
    from tracin.files import head_holds
    from tracin.results.explore import check_page_destination
    from tracin.results.export import check_export

    page = tmp_path / "page.html"
    page.write_text("<head>\n<meta a>\n<meta b>\n</head>" + "x" * 5000 + "<meta c>")
    assert head_holds(page, "<meta a>", "<meta b>") and not head_holds(page, "<meta a>", "<meta c>")
    assert not head_holds(tmp_path / "absent.html", "<meta a>")
    os.mkfifo(tmp_path / "fifo.html")
    assert not head_holds(tmp_path / "fifo.html", "<meta a>")
    with pytest.raises(TracinError, match="^the page .*fifo.html exists and is not a page tracin-explore wrote"):
        check_page_destination(tmp_path / "fifo.html")  # the page, not '--out', which a default was not (round 37, L4)
    (tmp_path / "tables").mkdir()
    os.mkfifo(tmp_path / "tables" / "topk.csv")
    with pytest.raises(TracinError, match="is not a table tracin-explore wrote"):
        check_export(tmp_path / "tables", None, None)


def test_a_full_disk_met_while_a_lock_is_taken_names_the_lock_file(tmp_path, monkeypatch):
    """Round 35, FD01, FD02: on a full disk tracin-eval and tracin-validate said "No space left on device"
    without a file: the lock file, made empty, took no byte until its holder's pid was written."""
    import errno

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as raised:
        with exclusive_lock(tmp_path / "run", "the run"):
            pass
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / ".run.lock")
    assert not (tmp_path / ".run.lock").exists()  # let go of, as after any other failure


def test_link_spellings_name_every_folder_a_path_passes_through(tmp_path, monkeypatch):
    """Round 42, T01: a link to a link inside a run's model folder was seen only as given and at its end, so
    the run it passes through went unchecked. Each spelling names the same file; '..' after a link is walked."""
    from tracin.files import link_spellings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "teacher").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    edited = tmp_path / "out" / "edited.pt"
    edited.write_text("weights")
    inside = tmp_path / "run" / "teacher" / "epoch_002.pt"
    inside.symlink_to(edited)
    Path("mine").symlink_to("run/teacher/epoch_002.pt")
    assert link_spellings("mine") == [tmp_path / "mine", inside, edited]
    Path("runs").symlink_to("run")  # a folder's link, then '..' walked from where it leads
    assert link_spellings("runs/teacher/../teacher/epoch_002.pt") == [inside, edited]
    assert link_spellings("out/../run/teacher/epoch_002.pt") == [inside, edited]
    assert link_spellings(edited) == [edited]
    Path("loop").symlink_to("loop")
    assert link_spellings("loop") == [tmp_path / "loop"]  # its open meets the kernel's ELOOP
    for spelling in link_spellings("mine"):
        assert spelling.read_text() == "weights"
