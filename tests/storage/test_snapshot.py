"""Snapshot files (fastraft/storage/snapshot.py): round trips, keeping the newest two, crashes
before the rename, damage and fallback, injected write / fsync failures, name order.

Real files in tmp_path and real fsyncs; faults are injected by monkeypatching ``os`` functions
the module calls. Deterministic: data comes from seeded generators.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import struct
import tracemalloc
import zlib

import pytest

from fastraft.errors import CorruptRecordError, LocalProtocolError, StorageError
from fastraft.raft.messages import SnapshotMeta
from fastraft.storage import snapshot as snap_module
from fastraft.storage.snapshot import (
    SnapshotStore,
    load,
    open_data,
    parse_snapshot_name,
    read_chunks,
    snapshot_name,
    verify,
)


def meta(index: int, term: int, voters=(1, 2, 3), outgoing=(), learners=(),
         context=b"") -> SnapshotMeta:
    return SnapshotMeta(index, term, frozenset(voters), frozenset(outgoing),
                        frozenset(learners), context)


def stream(total: int, chunk: int, seed: int = 7):
    """``total`` deterministic pseudo-random bytes in pieces of ``chunk``; also their sha256."""
    rng = random.Random(seed)
    pieces = []
    left = total
    while left:
        n = min(chunk, left)
        pieces.append(rng.randbytes(n))
        left -= n
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    return pieces, digest


def snap_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("snap-"))


@pytest.fixture
def snap_dir(tmp_path):
    return str(tmp_path / "snaps")


@pytest.fixture
def store(snap_dir):
    return SnapshotStore(snap_dir)


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"x", b"hello snapshot" * 100])
def test_round_trip_small(store, data):
    m = meta(10, 3, voters=(1, 2, 3), outgoing=(3, 4))
    path = store.save(m, [data[:5], data[5:]])
    assert os.path.basename(path) == snapshot_name(3, 10)
    assert store.latest() == (m, path)
    assert store.load(path) == (m, data)
    assert b"".join(store.read_chunks(path, 7)) == data
    with store.open_data(path) as f:
        assert f.meta == m and f.length == len(data)
        assert f.read() == data
        assert f.read() == b""
    assert verify(path) == m


def test_round_trip_single_bytes_object_and_empty_iterable(store):
    p1 = store.save(meta(1, 1), b"all at once")
    assert load(p1)[1] == b"all at once"
    p2 = store.save(meta(2, 1), iter(()))
    assert load(p2) == (meta(2, 1), b"")


def test_meta_is_stored_exactly(store):
    m = meta(2**63 + 5, 2**40, voters=(9, 2**64 - 1, 1), outgoing=())
    path = store.save(m, [b"z"])
    got, _ = load(path)
    assert got == m
    assert isinstance(got.voters, frozenset) and isinstance(got.outgoing, frozenset)


def test_multi_megabyte_streamed_round_trip(store):
    pieces, digest = stream(5 * 1024 * 1024 + 123, 64 * 1024 + 7)
    m = meta(1000, 4)
    path = store.save(m, iter(pieces))
    assert store.latest() == (m, path)
    h = hashlib.sha256()
    sizes = []
    for piece in store.read_chunks(path, 256 * 1024):
        sizes.append(len(piece))
        h.update(piece)
    assert h.hexdigest() == digest
    assert max(sizes) <= 256 * 1024 and len(sizes) > 1
    h = hashlib.sha256()
    with open_data(path) as f:
        while block := f.read(100_000):
            h.update(block)
    assert h.hexdigest() == digest


def test_large_chunks_bigger_than_the_write_buffer(store):
    pieces, digest = stream(3 * snap_module.WRITE_BUFFER + 11, snap_module.WRITE_BUFFER + 3)
    path = store.save(meta(5, 1), [b"ab", *pieces, b"", b"cd"])
    data = load(path)[1]
    assert data[:2] == b"ab" and data[-2:] == b"cd"
    assert hashlib.sha256(data[2:-2]).hexdigest() == digest


def test_streaming_does_not_hold_the_snapshot_in_memory(store):
    """Saving and reading 32 MB in 64 KB pieces stays within a few MB of Python memory."""
    piece = bytes(range(256)) * 256         # 64 KB, reused
    count = 512                             # 32 MB in all
    tracemalloc.start()
    try:
        path = store.save(meta(7, 2), (piece for _ in range(count)))
        _, peak_save = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(p) for p in read_chunks(path, 64 * 1024))
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == count * len(piece)
    assert peak_save < 4 * snap_module.WRITE_BUFFER
    assert peak_read < 2 * 1024 * 1024


def test_open_data_is_bounded_to_the_data(store):
    path = store.save(meta(3, 1), [b"0123456789"])
    with open_data(path) as f:
        assert f.read(4) == b"0123"
        buf = bytearray(100)
        n = f.readinto(buf)
        assert bytes(buf[:n]) == b"456789"     # the trailer is not part of the data
        assert f.read(10) == b""


def test_file_layout_matches_the_docstring(store):
    m = meta(0x1122, 0x33, voters=(2, 1), outgoing=(5,), learners=(9, 7), context=b"ctx")
    path = store.save(m, [b"DATA"])
    raw = open(path, "rb").read()
    assert raw[:8] == b"FRFTSNAP"
    assert struct.unpack_from("<HHIIQQ", raw, 8) == (3, 0, 2, 1, 0x1122, 0x33)
    assert struct.unpack_from("<II", raw, 36) == (2, 3)
    assert struct.unpack_from("<5Q", raw, 44) == (1, 2, 5, 7, 9)
    assert raw[84:87] == b"ctx"
    h = 44 + 40 + 3
    assert raw[h:h + 4] == b"DATA"
    dlen, crc, end = struct.unpack_from("<QI4s", raw, h + 4)
    assert (dlen, end) == (4, b"SNPE")
    assert crc == zlib.crc32(raw[:h + 4])
    assert len(raw) == h + 4 + 16


# -- keeping the newest two ----------------------------------------------------------------------

def test_only_the_newest_two_are_kept(store, snap_dir):
    paths = [store.save(meta(10 * k, 1 + k // 2), [b"s%d" % k]) for k in range(5)]
    assert snap_files(snap_dir) == sorted(os.path.basename(p) for p in paths[-2:])
    assert store.latest()[1] == paths[-1]


def test_pruning_a_snapshot_another_prune_removed_is_not_a_failure(store, snap_dir,
                                                                    monkeypatch):
    """save() in a worker and the peer transport's adopt() on its thread may prune at once:
    the file one of them lists can be gone when it unlinks it."""
    import fastraft.storage.snapshot as snapshot_mod

    for k in range(3):
        store.save(meta(10 * k, 1), [b"s"])
    listed = snapshot_mod._list_snapshots
    ghost = (1, 1, "snap-0000000000000001-0000000000000001.snap")   # listed, already gone
    monkeypatch.setattr(snapshot_mod, "_list_snapshots", lambda d: [ghost] + listed(d))
    store.save(meta(40, 1), [b"s"])
    assert not store.failed
    assert len(snap_files(snap_dir)) == 2


def test_keep_is_configurable(snap_dir):
    store = SnapshotStore(snap_dir, keep=3)
    paths = [store.save(meta(k, 1), [b"."]) for k in range(1, 6)]
    assert store.paths() == paths[-3:]
    with pytest.raises(ValueError):
        SnapshotStore(snap_dir, keep=0)


def test_saving_the_same_snapshot_again_replaces_it(store, snap_dir):
    store.save(meta(5, 1), [b"old"])
    path = store.save(meta(5, 1), [b"new"])
    assert snap_files(snap_dir) == [snapshot_name(1, 5)]
    assert load(path)[1] == b"new"


def test_a_snapshot_older_than_the_newest_is_refused(store, snap_dir):
    store.save(meta(20, 3), [b"."])
    with pytest.raises(LocalProtocolError):
        store.save(meta(19, 3), [b"."])
    with pytest.raises(LocalProtocolError):
        store.save(meta(30, 2), [b"."])
    assert snap_files(snap_dir) == [snapshot_name(3, 20)]
    assert store.failed is None


# -- crashes before the rename ---------------------------------------------------------------

def test_leftover_tmp_is_ignored_and_removed_on_open(store, snap_dir):
    path = store.save(meta(5, 1), [b"good"])
    tmp = os.path.join(snap_dir, snapshot_name(1, 9) + ".tmp")
    with open(tmp, "wb") as f:                 # a crash in mid-save: a partial file
        f.write(b"FRFTSNAP partial")
    assert store.latest() == (meta(5, 1), path)     # never taken for a snapshot
    unrelated = os.path.join(snap_dir, "wal-0000000000000000-0000000000000000.log.tmp")
    open(unrelated, "wb").close()
    reopened = SnapshotStore(snap_dir)
    assert not os.path.exists(tmp)
    assert os.path.exists(unrelated)           # not ours: left alone
    assert reopened.latest() == (meta(5, 1), path)
    assert load(path)[1] == b"good"


def test_rename_failure_leaves_the_previous_snapshot(store, snap_dir, monkeypatch):
    path = store.save(meta(5, 1), [b"good"])

    def boom(src, dst):
        raise OSError(errno.EIO, "injected rename failure")

    monkeypatch.setattr(snap_module.os, "replace", boom)
    with pytest.raises(StorageError, match="injected rename failure"):
        store.save(meta(9, 1), [b"newer"])
    monkeypatch.undo()
    assert snap_files(snap_dir) == [os.path.basename(path)]   # no .tmp either
    assert store.failed is not None
    with pytest.raises(StorageError):
        store.latest()                          # a failed store refuses every later call
    assert SnapshotStore(snap_dir).latest() == (meta(5, 1), path)


def test_crash_of_the_stream_removes_the_tmp_and_keeps_the_store(store, snap_dir):
    path = store.save(meta(5, 1), [b"good"])

    def broken():
        yield b"some"
        raise RuntimeError("state machine failed")

    with pytest.raises(RuntimeError):
        store.save(meta(9, 1), broken())
    assert snap_files(snap_dir) == [os.path.basename(path)]
    assert store.failed is None
    assert store.latest() == (meta(5, 1), path)
    store.save(meta(9, 1), [b"ok"])
    assert load(store.latest()[1])[1] == b"ok"


# -- damage and fallback -----------------------------------------------------------------------

def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def _two(store):
    pieces, _ = stream(300_000, 4096)
    p1 = store.save(meta(100, 2), pieces)
    p2 = store.save(meta(200, 3), pieces[::-1])
    return p1, p2


@pytest.mark.parametrize("where", ["magic", "header_index", "voter", "data", "data_end",
                                   "length", "crc", "end_magic"])
def test_bit_flip_in_newest_falls_back_to_previous(store, caplog, where):
    p1, p2 = _two(store)
    size = os.path.getsize(p2)
    offset = {"magic": 0, "header_index": 21, "voter": 40, "data": 60 + 150_000,
              "data_end": size - 17, "length": size - 16, "crc": size - 8,
              "end_magic": size - 1}[where]
    _flip(p2, offset)
    with caplog.at_level(logging.WARNING, logger=snap_module.__name__):
        assert store.latest() == (meta(100, 2), p1)
    assert any(os.path.basename(p2) in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptRecordError):
        verify(p2)


@pytest.mark.parametrize("cut", [0, 5, 40, 1000, -16, -1])
def test_truncation_of_newest_falls_back_to_previous(store, cut):
    p1, p2 = _two(store)
    size = os.path.getsize(p2)
    os.truncate(p2, cut if cut >= 0 else size + cut)
    assert store.latest() == (meta(100, 2), p1)


def test_appended_garbage_is_damage(store):
    p1, p2 = _two(store)
    with open(p2, "ab") as f:
        f.write(b"\0")
    assert store.latest() == (meta(100, 2), p1)


def test_both_damaged_gives_none(store, caplog):
    p1, p2 = _two(store)
    _flip(p1, 1000)
    os.truncate(p2, 500)
    with caplog.at_level(logging.WARNING, logger=snap_module.__name__):
        assert store.latest() is None
    assert len([r for r in caplog.records if "damaged" in r.getMessage()]) == 2


def test_empty_directory_gives_none(store):
    assert store.latest() is None
    assert store.names() == []


def test_name_that_does_not_match_the_header_is_damage(store, snap_dir):
    p1, p2 = _two(store)
    os.rename(p2, os.path.join(snap_dir, snapshot_name(3, 201)))
    assert store.latest() == (meta(100, 2), p1)


def test_read_chunks_reports_a_bad_checksum_after_the_data(store):
    _p1, p2 = _two(store)
    _flip(p2, 100_000)
    it = read_chunks(p2, 4096)
    got = next(it)
    assert got
    with pytest.raises(CorruptRecordError, match="checksum"):
        for _ in it:
            pass
    with pytest.raises(CorruptRecordError):
        load(p2)


# -- write and fsync failures ------------------------------------------------------------------

@pytest.mark.parametrize("after", [0, 1, 3])
def test_enospc_on_write_raises_and_leaves_no_new_snapshot(store, snap_dir, monkeypatch, after):
    path = store.save(meta(5, 1), [b"good"])
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(snap_module.os, "write", write)
    pieces, _ = stream(3 * snap_module.WRITE_BUFFER + 5, 100_000)
    with pytest.raises(StorageError, match="No space left"):
        store.save(meta(9, 1), pieces)
    monkeypatch.undo()
    assert snap_files(snap_dir) == [os.path.basename(path)]
    with pytest.raises(StorageError):
        store.save(meta(10, 1), [b"x"])
    assert SnapshotStore(snap_dir).latest() == (meta(5, 1), path)


def test_short_writes_are_completed(store, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(snap_module.os, "write", lambda fd, data: real_write(fd, data[:1000]))
    pieces, digest = stream(50_000, 3000)
    path = store.save(meta(1, 1), pieces)
    monkeypatch.undo()
    assert hashlib.sha256(load(path)[1]).hexdigest() == digest


def test_fsync_failure_raises_and_leaves_no_new_snapshot(store, snap_dir, monkeypatch):
    path = store.save(meta(5, 1), [b"good"])

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(snap_module.os, "fsync", fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        store.save(meta(9, 1), [b"newer"])
    monkeypatch.undo()
    assert snap_files(snap_dir) == [os.path.basename(path)]
    assert SnapshotStore(snap_dir).latest() == (meta(5, 1), path)


def test_directory_fsync_failure_after_rename_removes_the_new_file(store, snap_dir, monkeypatch):
    path = store.save(meta(5, 1), [b"good"])
    real_fsync = os.fsync
    real_replace = os.replace
    state = {"renamed": False}

    def replace(src, dst):
        real_replace(src, dst)
        state["renamed"] = True

    def fsync(fd):
        if state["renamed"]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(snap_module.os, "replace", replace)
    monkeypatch.setattr(snap_module.os, "fsync", fsync)
    with pytest.raises(StorageError):
        store.save(meta(9, 1), [b"newer"])
    monkeypatch.undo()
    assert snap_files(snap_dir) == [os.path.basename(path)]


def test_unlink_failure_while_pruning_raises(store, snap_dir, monkeypatch):
    store.save(meta(1, 1), [b"a"])
    store.save(meta(2, 1), [b"b"])

    def unlink(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(snap_module.os, "unlink", unlink)
    with pytest.raises(StorageError, match="durable"):
        store.save(meta(3, 1), [b"c"])
    monkeypatch.undo()
    latest = SnapshotStore(snap_dir).latest()
    assert latest is not None and latest[0] == meta(3, 1)     # the new one was saved


# -- names -------------------------------------------------------------------------------------

def test_names_sort_by_term_then_index():
    keys = [(1, 0xF), (1, 0x10), (2, 1), (0x10, 0), (0xA, 2**64 - 1), (2**63, 3), (1, 2**40)]
    names = [snapshot_name(t, i) for t, i in keys]
    assert sorted(names) == [snapshot_name(t, i) for t, i in sorted(keys)]
    assert [parse_snapshot_name(n) for n in names] == keys
    assert snapshot_name(1, 0x10) == "snap-0000000000000001-0000000000000010.snap"


@pytest.mark.parametrize("name", ["snap-1-2.snap",
                                  "snap-0000000000000001-0000000000000002.snap.tmp",
                                  "wal-0000000000000001-0000000000000002.log",
                                  "snap-000000000000000g-0000000000000002.snap",
                                  "snap-0000000000000001-0000000000000002-3.snap"])
def test_other_names_are_not_snapshots(name):
    assert parse_snapshot_name(name) is None


def test_latest_picks_the_highest_term_index_not_the_newest_file(store, snap_dir):
    store.save(meta(0xF, 1), [b"a"])
    store.save(meta(0x10, 1), [b"b"])          # 0x10 > 0xF although "1" < "f" in a short name
    assert store.latest()[0] == meta(0x10, 1)
    # a directory shared with the WAL: its files are ignored
    open(os.path.join(snap_dir, "wal-0000000000000000-0000000000000000.log"), "wb").close()
    assert store.names() == [snapshot_name(1, 0xF), snapshot_name(1, 0x10)]


def test_store_creates_its_directory(tmp_path):
    d = tmp_path / "a" / "b"
    store = SnapshotStore(d)
    assert d.is_dir() and store.latest() is None


def test_meta_out_of_range_is_refused_before_writing(store, snap_dir):
    with pytest.raises(ValueError):
        store.save(meta(-1, 1), [b"x"])
    with pytest.raises(ValueError):
        store.save(meta(1, 1, voters=(2**64,)), [b"x"])
    assert os.listdir(snap_dir) == []
    assert store.failed is None
