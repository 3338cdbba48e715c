"""Write and fsync errors (ENOSPC, EIO) fail the WAL fast: StorageError, every later call
refused, and a reopen recovers exactly the synced state.

Specification: "A write or fsync error ... fails the node fast" (issue 4) and the module
docstring of fastraft/storage/wal.py. Errors are injected by the ``faults`` fixture.
"""

from __future__ import annotations

import errno
import os

import pytest

from fastraft.errors import FastraftError, StorageError
from fastraft.storage import WalStore, recover


def synced_store(wal_dir, sh, segment_size=10**6):
    model = sh.Model()
    s = WalStore.open(wal_dir, segment_size=segment_size)
    for i in range(1, 9, 2):
        b = sh.batch(i, [1, 1], size=30)
        s.append(b)
        model.append(b)
    hs = sh.HardState(1, 1, 4)
    s.save_hard_state(hs)
    model.save_hard_state(hs)
    s.sync()
    return s, model


def assert_refuses_everything(s, sh):
    calls = [
        lambda: s.append(sh.batch(s.last_index + 1, [1])),
        lambda: s.save_hard_state(sh.HardState(9, 9, 0)),
        lambda: s.save_snapshot_mark(sh.meta(1, 1)),
        s.sync,
        lambda: s.compact(0),
        lambda: s.last_index,
        lambda: s.first_index,
        lambda: s.term(1),
        lambda: s.entries(1, 2),
        lambda: s.hard_state,
        s.recovered,
    ]
    for call in calls:
        with pytest.raises(StorageError, match="refuses every"):
            call()
    s.close()                                      # releasing a failed store is allowed


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_write_error_fails_fast(wal_dir, sh, faults, code):
    s, model = synced_store(wal_dir, sh)
    faults.only_fd = s._fd
    faults.write_errno = code
    with pytest.raises(StorageError) as info:
        s.append(sh.batch(9, [2]))      # buffered: the write itself happens at the sync
        s.sync()
    assert isinstance(info.value, FastraftError)
    assert os.strerror(code) in str(info.value)
    assert s.failed is not None
    faults.clear()
    assert_refuses_everything(s, sh)
    s, st = recover(wal_dir)
    assert st == model.recovered()
    s.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fsync_error_fails_fast_and_unsynced_writes_do_not_come_back(wal_dir, sh, faults, code):
    s, model = synced_store(wal_dir, sh)
    s.append(sh.batch(9, [2, 2]))                  # written, never made durable
    s.save_hard_state(sh.HardState(2, 3, 8))
    faults.only_fd = s._fd
    faults.fsync_errno = code
    with pytest.raises(StorageError, match="fsync"):
        s.sync()
    faults.clear()
    assert_refuses_everything(s, sh)
    s, st = recover(wal_dir)
    assert st == model.recovered()
    s.close()


def test_short_write_then_enospc(wal_dir, sh, faults, monkeypatch):
    s, model = synced_store(wal_dir, sh)
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:17]))   # a short write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sh.wal.os, "write", write)
    with pytest.raises(StorageError):
        s.append(sh.batch(9, [2], size=100))   # buffered: written at the sync
        s.sync()
    monkeypatch.setattr(sh.wal.os, "write", real_write)
    assert len(calls) == 2 and calls[1] == calls[0] - 17
    s.close()
    s, st = recover(wal_dir)
    assert st == model.recovered()
    assert s.recovery_notes == []                  # the partial record was cut at failure
    s.close()


@pytest.mark.parametrize("where", ["fsync old segment", "write new segment"])
def test_error_while_rotating(wal_dir, sh, faults, where):
    s, model = synced_store(wal_dir, sh)
    s.segment_size = s._size + 1                   # the next write fills it, the one after
    before = s.segment_names()                     # rotates
    s.save_hard_state(sh.HardState(5, 5, 5))       # unsynced, in the old segment
    s._flush()                                     # handed to the kernel, not fsynced
    assert s.segment_names() == before
    if where == "fsync old segment":
        faults.only_fd = s._fd
        faults.fsync_errno = errno.EIO
    else:
        faults.write_errno = errno.ENOSPC          # any fd: the new segment's
    with pytest.raises(StorageError):
        s.append(sh.batch(9, [2]))
    faults.clear()
    assert_refuses_everything(s, sh)
    s, st = recover(wal_dir)
    if where == "fsync old segment":
        assert st == model.recovered()
    else:   # the old segment was fsynced before the new one failed: the hard state is durable
        model.save_hard_state(sh.HardState(5, 5, 5))
        assert st == model.recovered()
    assert s.segment_names() == before
    assert not [n for n in os.listdir(wal_dir) if n.endswith(".tmp")]
    s.close()


def test_directory_fsync_error_on_compaction(wal_dir, sh, faults):
    s, model = synced_store(wal_dir, sh, segment_size=100)
    s.save_snapshot_mark(sh.meta(6, 1))
    model.save_snapshot_mark(sh.meta(6, 1))
    s.sync()
    assert len(s.segment_names()) > 2
    faults.fsync_errno = errno.EIO                 # the directory's fsync
    with pytest.raises(StorageError):
        s.compact(6)
    faults.clear()
    assert_refuses_everything(s, sh)
    s, st = recover(wal_dir, segment_size=100)
    model.restart()
    assert st == model.recovered()
    s.close()
