"""WAL recovery from damaged files: torn tails are cut, everything else stops with file and
offset, and ``repair`` (the explicit operator action) makes the directory open again.

Specification: the module docstring of fastraft/storage/wal.py and docs/architecture.md,
"Storage rules".
"""

from __future__ import annotations

import os

import pytest

from fastraft import core
from fastraft.errors import CorruptRecordError
from fastraft.storage import WalStore, recover, repair
from fastraft.storage.wal import scan


def build(wal_dir, sh, segment_size=300, n=30):
    """A WAL of several segments; returns the synced model state."""
    model = sh.Model()
    s = WalStore.open(wal_dir, segment_size=segment_size)
    for i in range(1, n + 1):
        b = sh.batch(i, [1 + i // 10], size=40)
        s.append(b)
        model.append(b)
        if i % 7 == 0:
            hs = sh.HardState(1 + i // 10, 2, i - 1)
            s.save_hard_state(hs)
            model.save_hard_state(hs)
    s.close()
    return model


def damage_error(wal_dir, **kw) -> CorruptRecordError:
    with pytest.raises(CorruptRecordError) as info:
        WalStore.open(wal_dir, **kw)
    err = info.value
    assert err.path == os.path.join(wal_dir, err.file)
    assert err.path in str(err) and f"offset {err.offset}" in str(err)
    assert "repair(" in str(err)
    return err


def flip(path, pos, bit=0):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << bit)]))


@pytest.mark.parametrize("tail", ["half header", "half payload", "zeros", "header only"])
def test_torn_tail_of_last_segment_is_cut(wal_dir, sh, tail):
    model = build(wal_dir, sh)
    last = sh.segment_paths(wal_dir)[-1]
    size = os.path.getsize(last)
    rec = core.encode_record(1, 31, 9, b"p" * 50)
    junk = {"half header": rec[:20], "half payload": rec[:60], "zeros": bytes(100),
            "header only": rec[:32]}[tail]
    with open(last, "ab") as f:
        f.write(junk)
    s, st = recover(wal_dir, segment_size=300)
    assert st == model.recovered()
    assert os.path.getsize(last) == size
    assert len(s.recovery_notes) == 1 and last in s.recovery_notes[0]
    s.append(sh.batch(31, [4]))                    # and it goes on from there
    s.close()
    s, st = recover(wal_dir, segment_size=300)
    assert st.entries[-1] == sh.batch(31, [4]).entries[0]
    s.close()


def test_torn_record_in_a_middle_segment_is_damage(wal_dir, sh):
    build(wal_dir, sh)
    paths = sh.segment_paths(wal_dir)
    middle = paths[len(paths) // 2]
    size = os.path.getsize(middle)
    with open(middle, "r+b") as f:
        f.truncate(size - 10)
    err = damage_error(wal_dir, segment_size=300)
    assert err.path == middle
    # the cut is at the start of the last record of that segment
    data = open(middle, "rb").read()
    _, end, status, _ = core.decode_records(data, core.SEGMENT_HEADER_SIZE)
    assert status == core.WAL_TORN and err.offset == end
    done = repair(wal_dir, err.file, err.offset)
    assert any("truncated" in line for line in done)
    assert all(not os.path.exists(p) for p in paths[len(paths) // 2 + 1:])
    s, st = recover(wal_dir, segment_size=300)
    assert st.entries == sh.batch(1, [1 + i // 10 for i in range(1, len(st.entries) + 1)],
                                  size=40).entries
    s.close()


def test_every_single_bit_flip_is_detected_with_file_and_offset(wal_dir, sh):
    model = build(wal_dir, sh, n=12)
    paths = sh.segment_paths(wal_dir)
    assert len(paths) >= 3
    full = model.recovered()
    for path in paths:
        size = os.path.getsize(path)
        for pos in range(size):
            flip(path, pos, pos % 8)
            try:
                err = damage_error(wal_dir, segment_size=300)
            finally:
                flip(path, pos, pos % 8)
            assert err.path == path, (path, pos)
            assert err.offset <= pos, (path, pos, err.offset)
    s, st = recover(wal_dir, segment_size=300)     # every flip undone: all there
    assert st == full
    s.close()


def test_repair_after_a_bit_flip_keeps_a_prefix(wal_dir, sh):
    model = build(wal_dir, sh)
    paths = sh.segment_paths(wal_dir)
    flip(paths[1], 100, 3)
    err = damage_error(wal_dir, segment_size=300)
    assert err.path == paths[1]
    repair(wal_dir, err.file, err.offset)
    assert os.path.exists(f"{paths[1]}.cut-{err.offset}.damaged")
    s, st = recover(wal_dir, segment_size=300)
    full = model.recovered().entries
    assert 0 < len(st.entries) < len(full) and st.entries == full[:len(st.entries)]
    s.close()


def test_bad_segment_header(wal_dir, sh):
    build(wal_dir, sh)
    paths = sh.segment_paths(wal_dir)
    with open(paths[2], "r+b") as f:
        f.write(b"NOTAWAL!")
    err = damage_error(wal_dir, segment_size=300)
    assert (err.path, err.offset) == (paths[2], 0)
    assert "magic" in str(err)
    repair(wal_dir, err.file, 0)
    assert sh.segment_paths(wal_dir) == paths[:2]
    s = WalStore.open(wal_dir, segment_size=300)
    s.close()


def test_short_segment_file_is_damage(wal_dir, sh):
    build(wal_dir, sh)
    paths = sh.segment_paths(wal_dir)
    with open(paths[-1], "r+b") as f:
        f.truncate(5)                              # even the last one: made durable whole
    err = damage_error(wal_dir, segment_size=300)
    assert (err.path, err.offset) == (paths[-1], 0)


def test_missing_segment_is_damage(wal_dir, sh):
    build(wal_dir, sh)
    paths = sh.segment_paths(wal_dir)
    os.unlink(paths[2])
    err = damage_error(wal_dir, segment_size=300)
    assert (err.path, err.offset) == (paths[3], 0) and "missing" in str(err)


def test_records_that_contradict_the_log_are_damage(wal_dir, sh):
    build(wal_dir, sh, n=5)
    last = sh.segment_paths(wal_dir)[-1]
    size = os.path.getsize(last)
    with open(last, "ab") as f:                    # an entry far beyond the log: a hole
        f.write(core.encode_record(sh.wal.ENTRY, 50, 9, b"x"))
    err = damage_error(wal_dir)
    assert (err.path, err.offset) == (last, size)


def test_unfinished_rotation_is_ignored(wal_dir, sh):
    model = build(wal_dir, sh)
    stray = os.path.join(wal_dir, sh.wal.segment_name(99, 99) + ".tmp")
    with open(stray, "wb") as f:
        f.write(b"half")
    s, st = recover(wal_dir, segment_size=300)
    assert st == model.recovered() and not os.path.exists(stray)
    s.close()


def test_repair_refuses_what_is_not_a_segment(wal_dir, sh):
    build(wal_dir, sh)
    with pytest.raises(ValueError):
        repair(wal_dir, "../etc", 0)
    with pytest.raises(ValueError):
        repair(wal_dir, os.path.basename(sh.segment_paths(wal_dir)[0]), 10**9)


def test_scan_reports_records_and_damage_without_changing_anything(wal_dir, sh):
    s = WalStore.open(wal_dir, segment_size=200)
    s.append(sh.batch(1, [1] * 6, size=40))
    s.truncate(4)
    s.save_snapshot_mark(sh.meta(2, 1))
    s.save_hard_state(sh.HardState(1, 1, 2))
    s.close()
    segs = scan(wal_dir)
    assert [g.file for g in segs] == s.segment_names()
    assert all(g.status == "clean" and g.reason is None for g in segs)
    rows = [r for g in segs for r in g.records]
    kinds = [r.type for r in rows]
    assert kinds.count("ENTRY") == 6 and "TRUNCATE" in kinds and "SNAPSHOT" in kinds
    first = rows[1]
    assert (first.type, first.index, first.term, first.size) == ("ENTRY", 1, 1, 40)
    assert first.offset == core.SEGMENT_HEADER_SIZE + core.RECORD_HEADER_SIZE + 24
    last = sh.segment_paths(wal_dir)[-1]
    with open(last, "ab") as f:
        f.write(b"\x01\x02")
    size = os.path.getsize(last)
    assert scan(wal_dir)[-1].status == "torn"
    assert os.path.getsize(last) == size
    flip(sh.segment_paths(wal_dir)[0], 20)
    assert scan(wal_dir)[0].status == "corrupt"
