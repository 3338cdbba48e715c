"""The whole snapshot meta (voters, outgoing, learners, context) through the WAL's SNAPSHOT
record and the snapshot file header: round trips, the layouts of the previous version still
read (records and files built by hand), and damaged metas refused with file and offset.

Specification: the layout tables of fastraft/storage/wal.py and fastraft/storage/snapshot.py,
and base.py (``own_mark``, ``config_problem``: the bounds every format shares).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastraft import core
from fastraft.errors import CorruptRecordError
from fastraft.raft.messages import EntryBatch, HardState, SnapshotMeta
from fastraft.storage import MemoryStore, WalStore
from fastraft.storage import snapshot as snap_module
from fastraft.storage import wal as wal_module
from fastraft.storage.base import MAX_MARK_CONTEXT, MAX_MARK_IDS
from fastraft.storage.snapshot import SnapshotStore, load, read_meta, snapshot_name, verify
from fastraft.storage.wal import (
    HARD_STATE,
    SNAPSHOT,
    Record,
    decode_snapshot_mark,
    encode_snapshot_mark,
    scan,
    segment_name,
)

FULL = SnapshotMeta(12, 3, frozenset({1, 2, 3}), frozenset({1, 2, 4}), frozenset({7, 9}),
                    b"\x00member book\xff" * 10)


@st.composite
def metas(draw):
    """Any storable meta: joint or not, learners disjoint from the voters, any context."""
    ids = st.integers(1, 2**64 - 1)
    voters = draw(st.frozensets(ids, max_size=5))
    outgoing = draw(st.frozensets(st.one_of(st.sampled_from(sorted(voters) or [1]), ids),
                                  max_size=5))
    learners = draw(st.frozensets(ids, max_size=5)) - voters - outgoing
    context = draw(st.binary(max_size=300))
    return SnapshotMeta(draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)),
                        voters, outgoing, learners, context)


def v1_mark(meta: SnapshotMeta, keep: bool) -> bytes:
    """A SNAPSHOT payload as the previous version wrote it (no learners, no context)."""
    ids = sorted(meta.voters) + sorted(meta.outgoing)
    return (struct.pack("<BII", int(keep), len(meta.voters), len(meta.outgoing))
            + struct.pack(f"<{len(ids)}Q", *ids))


def v2_mark(flags, voters, outgoing, learners, context, nl=None, nc=None) -> bytes:
    """A V2 SNAPSHOT payload built by hand (lists kept in the given order; counts forced)."""
    ids = list(voters) + list(outgoing) + list(learners)
    return (struct.pack("<BIIII", flags, len(voters), len(outgoing),
                        len(learners) if nl is None else nl,
                        len(context) if nc is None else nc)
            + struct.pack(f"<{len(ids)}Q", *ids) + context)


# -- the WAL's SNAPSHOT record -------------------------------------------------------------------

@settings(max_examples=300)
@given(meta=metas(), keep=st.booleans())
def test_wal_mark_round_trip(meta, keep):
    payload = encode_snapshot_mark(meta, keep)
    assert payload[0] == wal_module.SNAP_V2 | (wal_module.SNAP_KEEP if keep else 0)
    assert decode_snapshot_mark(meta.index, meta.term, payload) == (meta, keep)


def test_wal_mark_layout_matches_the_docstring():
    payload = encode_snapshot_mark(FULL, True)
    assert struct.unpack_from("<BIIII", payload) == (3, 3, 3, 2, len(FULL.context))
    assert struct.unpack_from("<8Q", payload, 17) == (1, 2, 3, 1, 2, 4, 7, 9)
    assert payload[17 + 64:] == FULL.context


@pytest.mark.parametrize("keep", [True, False])
def test_wal_mark_of_the_previous_version_is_read(keep):
    meta = SnapshotMeta(5, 2, frozenset({3, 1}), frozenset({4}))
    got, got_keep = decode_snapshot_mark(5, 2, v1_mark(meta, keep))
    assert (got, got_keep) == (meta, keep)
    assert got.learners == frozenset() and got.context == b""


@pytest.mark.parametrize("payload, reason", [
    (b"\x01\x00\x00", "truncated"),
    (struct.pack("<BII", 3, 0, 0) + b"\x00" * 4, "truncated"),                 # V2 head cut
    (v2_mark(2, [1, 2], [], [3], b"ctx")[:-1], "truncated"),
    (v2_mark(2, [1, 2], [], [3], b"ctx") + b"!", "trailing bytes"),
    (v2_mark(2, [1], [], [], b"", nl=MAX_MARK_IDS), f"more than {MAX_MARK_IDS} ids"),
    (struct.pack("<BII", 1, 2**31, 2**31), f"more than {MAX_MARK_IDS} ids"),   # old layout
    (v2_mark(2, [1], [], [], b"", nc=MAX_MARK_CONTEXT + 1), "over the bound"),
    (v2_mark(2, [1, 2], [], [2], b""), "learners [2] are also voters"),
    (v2_mark(2, [1], [5], [5], b""), "learners [5] are also voters"),
    (v2_mark(2, [2, 1], [], [], b""), "voters are not strictly ascending"),
    (v2_mark(2, [1], [3, 3], [], b""), "outgoing are not strictly ascending"),
    (v2_mark(6, [1], [], [], b""), "unknown flags 0x6"),
])
def test_damaged_wal_marks_are_refused(payload, reason):
    with pytest.raises(CorruptRecordError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_snapshot_mark(1, 1, payload)


@pytest.mark.parametrize("meta", [
    FULL._replace(learners=frozenset({1})),                       # a voter
    FULL._replace(learners=frozenset({4})),                       # an outgoing voter
    FULL._replace(context=b"x" * (MAX_MARK_CONTEXT + 1)),
    FULL._replace(context="text"),
    FULL._replace(voters=frozenset(range(1, MAX_MARK_IDS + 2))),
])
def test_metas_no_store_can_keep_are_refused_before_writing(any_store, meta):
    any_store.append(EntryBatch(1, [(1, b"a")]))
    with pytest.raises(ValueError):
        any_store.save_snapshot_mark(meta)
    assert any_store.snapshot_mark is None and any_store.last_index == 1
    any_store.save_snapshot_mark(FULL)           # still usable
    assert any_store.snapshot_mark == FULL


def test_every_backend_keeps_the_whole_mark(any_store):
    s = any_store
    s.append(EntryBatch(1, [(1, b"a"), (3, b"b")]))
    kept = FULL._replace(index=2, term=3)
    s.save_snapshot_mark(kept)                   # matches the log: kept
    assert s.snapshot_mark == kept and s.recovered().snapshot == kept
    big = FULL._replace(index=40, term=5, context=bytes(range(256)) * (MAX_MARK_CONTEXT // 256))
    s.save_snapshot_mark(big)                    # beyond the log: reset; a 1 MiB context
    assert s.snapshot_mark == big and s.recovered().snapshot == big
    s.sync()


def test_wal_keeps_the_whole_mark_across_reopens_and_rotations(wal_dir):
    s = WalStore.open(wal_dir, segment_size=300)
    for i in range(1, 30):
        s.append(EntryBatch(i, [(2, b"x" * 40)]))
        if i == 10:
            s.save_snapshot_mark(FULL._replace(index=10, term=2))
    s.close()
    assert len(os.listdir(wal_dir)) > 3          # the mark was copied into later segments
    s = WalStore.open(wal_dir, segment_size=300)
    assert s.snapshot_mark == FULL._replace(index=10, term=2)
    s.compact(10)                                # the oldest segments go: the copies remain
    s.close()
    s = WalStore.open(wal_dir, segment_size=300)
    assert s.recovered().snapshot == FULL._replace(index=10, term=2)
    s.close()


def _write_segment(path, records):
    with open(path, "wb") as f:
        f.write(core.encode_segment_header() + core.encode_records(records))


def test_a_wal_of_the_previous_version_opens(wal_dir):
    """A WAL whose marks are the old layout (written by hand: segment header, entries, a
    hard state and a v1 mark) opens with its mark, learners empty and context b""; a new
    mark is written in V2 and both layouts replay together."""
    os.makedirs(wal_dir)
    old = SnapshotMeta(2, 1, frozenset({1, 2, 3}), frozenset({3, 4}))
    _write_segment(os.path.join(wal_dir, segment_name(0, 1)), [
        Record(wal_module.ENTRY, 1, 1, b"a"),
        Record(wal_module.ENTRY, 2, 1, b"b"),
        Record(wal_module.ENTRY, 3, 1, b"c"),
        Record(SNAPSHOT, 2, 1, v1_mark(old, True)),
        Record(HARD_STATE, 3, 1, wal_module.encode_hard_state(HardState(1, 1, 3))),
    ])
    s = WalStore.open(wal_dir)
    st_ = s.recovered()
    assert st_.snapshot == old and st_.snapshot.learners == frozenset()
    assert st_.snapshot.context == b""
    assert st_.entries == [(1, b"c")] and st_.hard_state == HardState(1, 1, 3)
    new = FULL._replace(index=3, term=1)
    s.save_snapshot_mark(new)
    s.close()
    kinds = [(r.type, r.detail) for g in scan(wal_dir) for r in g.records if r.type == "SNAPSHOT"]
    assert kinds == [("SNAPSHOT", "voters=1,2,3 outgoing=3,4 learners=- context=0B keep"),
                     ("SNAPSHOT", f"voters=1,2,3 outgoing=1,2,4 learners=7,9 "
                                  f"context={len(FULL.context)}B keep")]
    with WalStore.open(wal_dir) as s:
        assert s.snapshot_mark == new


def test_a_damaged_mark_in_a_wal_names_file_and_offset(wal_dir):
    os.makedirs(wal_dir)
    name = segment_name(0, 1)
    good = core.encode_records([Record(wal_module.ENTRY, 1, 1, b"a")])
    _write_segment(os.path.join(wal_dir, name), [
        Record(wal_module.ENTRY, 1, 1, b"a"),
        Record(SNAPSHOT, 1, 1, v2_mark(2, [1, 2], [], [2], b"")),
    ])
    with pytest.raises(CorruptRecordError) as info:
        WalStore.open(wal_dir)
    err = info.value
    assert err.file == name and err.offset == core.SEGMENT_HEADER_SIZE + len(good)
    assert f"offset {err.offset}" in str(err) and "learners [2] are also voters" in str(err)


def test_wal_dump_shows_learners_and_context_length(tmp_path):
    d = tmp_path / "wal"
    with WalStore.open(d) as s:
        s.append(EntryBatch(1, [(3, b"x")] * 12))
        s.save_snapshot_mark(FULL)
        s.save_hard_state(HardState(3, 1, 12))
    rows = [r for g in scan(d) for r in g.records]
    mark = next(r for r in rows if r.type == "SNAPSHOT")
    assert mark.detail == (f"voters=1,2,3 outgoing=1,2,4 learners=7,9 "
                           f"context={len(FULL.context)}B keep")
    hs = [r for r in rows if r.type == "HARD_STATE"][-1]
    assert hs.detail == "term=3 vote=1 commit=12"
    assert wal_module.describe_payload(SNAPSHOT, b"\x09").startswith("invalid payload: ")
    out = subprocess.run([sys.executable, "-m", "fastraft", "wal-dump", str(d), "--json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    dumped = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(r.get("type") == "SNAPSHOT" and "learners=7,9" in r["detail"] for r in dumped)


# -- the snapshot file header ----------------------------------------------------------------------

@settings(max_examples=200)
@given(meta=metas())
def test_snapshot_header_round_trip(meta):
    header = snap_module.encode_header(meta)
    data = b"DATA"
    raw = header + data + struct.pack("<QI4s", len(data), zlib.crc32(header + data), b"SNPE")
    got, hlen, dlen = snap_module._read_header(io.BytesIO(raw), "mem", len(raw))
    assert (got, hlen, dlen) == (meta, len(header), len(data))


def test_snapshot_store_keeps_the_whole_meta_on_disk(tmp_path):
    d = tmp_path / "snap"
    path = SnapshotStore(d).save(FULL, [b"state ", b"bytes"])
    again = SnapshotStore(d)                     # a restart
    assert again.latest() == (FULL, path)
    assert read_meta(path) == FULL and verify(path) == FULL
    assert again.load(path) == (FULL, b"state bytes")
    with again.open_data(path) as f:
        assert f.meta == FULL and f.read() == b"state bytes"


def v1_file(directory, meta: SnapshotMeta, data: bytes, *, tweak=None) -> str:
    """A snapshot file as the previous version (format 1) wrote it."""
    ids = sorted(meta.voters) + sorted(meta.outgoing)
    head = (struct.pack("<8sHHIIQQ", b"FRFTSNAP", 1, 0, len(meta.voters), len(meta.outgoing),
                        meta.index, meta.term) + struct.pack(f"<{len(ids)}Q", *ids))
    return _finish(directory, meta, head, data)


def v2_file(directory, index, term, voters, outgoing, learners, context, data=b"D",
            nl=None, nc=None) -> str:
    """A format 2 file built by hand (lists in the given order; counts forced), CRC right."""
    ids = list(voters) + list(outgoing) + list(learners)
    head = (struct.pack("<8sHHIIQQII", b"FRFTSNAP", 2, 0, len(voters), len(outgoing), index,
                        term, len(learners) if nl is None else nl,
                        len(context) if nc is None else nc)
            + struct.pack(f"<{len(ids)}Q", *ids) + context)
    return _finish(directory, SnapshotMeta(index, term, frozenset()), head, data)


def _finish(directory, meta, head: bytes, data: bytes) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, snapshot_name(meta.term, meta.index))
    body = head + data
    with open(path, "wb") as f:
        f.write(body + struct.pack("<QI4s", len(data), zlib.crc32(body), b"SNPE"))
    return path


def test_a_snapshot_file_of_the_previous_version_opens(tmp_path):
    d = tmp_path / "snap"
    meta = SnapshotMeta(30, 4, frozenset({1, 2, 3}), frozenset({2, 5}))
    path = v1_file(d, meta, b"old state")
    store = SnapshotStore(d)
    assert store.latest() == (meta, path)
    got, data = load(path)
    assert data == b"old state" and got.learners == frozenset() and got.context == b""
    newer = store.save(FULL._replace(index=31, term=4), [b"new"])   # format 2 beside it
    assert store.latest() == (FULL._replace(index=31, term=4), newer)
    assert read_meta(path) == meta


@pytest.mark.parametrize("build, reason, offset", [
    (lambda d: v2_file(d, 9, 1, [1], [], [], b"", nl=MAX_MARK_IDS), "too many", 12),
    (lambda d: v2_file(d, 9, 1, [1], [], [], b"", nc=MAX_MARK_CONTEXT + 1), "over the bound",
     40),
    (lambda d: v2_file(d, 9, 1, [1, 2], [], [2], b"c"), r"learners \[2\] are also voters",
     60),
    (lambda d: v2_file(d, 9, 1, [3, 1], [], [], b""), "voters are not strictly ascending",
     52),
    (lambda d: v2_file(d, 9, 1, [1], [], [4, 4], b""), "learners are not strictly", 60),
    (lambda d: v2_file(d, 9, 1, [1], [], [], b"", data=b"", nc=40), "truncated", None),
])
def test_damaged_snapshot_headers_name_file_and_offset(tmp_path, build, reason, offset):
    path = build(str(tmp_path / "snap"))
    with pytest.raises(CorruptRecordError, match=reason) as info:
        read_meta(path)
    assert path in str(info.value) and "byte offset" in str(info.value)
    if offset is not None:
        assert f"byte offset {offset})" in str(info.value)
    assert SnapshotStore(tmp_path / "snap").latest() is None      # skipped as damage


def test_a_truncated_header_is_damage(tmp_path):
    d = str(tmp_path / "snap")
    path = SnapshotStore(d).save(FULL, [b"xyz"])
    raw = open(path, "rb").read()
    for cut in (40, 44 + 20, 44 + 64 + 5):
        with open(path, "wb") as f:
            f.write(raw[:cut])
        with pytest.raises(CorruptRecordError, match=os.path.basename(path)):
            read_meta(path)


def test_adopt_refuses_a_file_whose_configuration_is_not_the_message(tmp_path):
    src_store = SnapshotStore(tmp_path / "src")
    path = src_store.save(FULL, [b"state"])
    dest = SnapshotStore(tmp_path / "dest")
    part = os.path.join(dest.directory, "incoming.part")
    for other in (FULL._replace(learners=frozenset()), FULL._replace(context=b"")):
        with open(path, "rb") as f, open(part, "wb") as g:
            g.write(f.read())
        with pytest.raises(CorruptRecordError, match="another configuration"):
            dest.adopt(part, other)
    got = dest.adopt(part, FULL)
    assert dest.latest() == (FULL, got)


# -- the memory store ----------------------------------------------------------------------------

def test_memory_store_keeps_the_whole_mark_through_a_crash():
    s = MemoryStore()
    s.append(EntryBatch(1, [(3, b"a")] * 12))
    s.save_snapshot_mark(FULL)
    s.sync()
    s.crash()
    assert s.snapshot_mark == FULL and s.recovered().snapshot == FULL
