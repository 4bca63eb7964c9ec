"""tracin.files: the lock every command holds on its outputs. Its hidden file goes when the command ends, and a
link or folder someone planted at its path is refused without writing through it."""

from __future__ import annotations

import multiprocessing
import os

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
