"""Files of a later release's format are refused as such (``datadir.NewerFormatError``), never
taken for damage (cut, repaired, skipped) and never read: WAL segments and their snapshot
marks, snapshot files, the SQLite schema, the BACKEND marker and ``node.toml``.

Specification: the "Versions" paragraphs of the module docstrings of fastraft/storage/wal.py,
snapshot.py and sqlite.py, fastraft/datadir.py and fastraft/server/joining.py;
docs/architecture.md, "Versions and compatibility". (tests/integration/test_versions.py starts
real nodes on such directories.)
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib

import pytest

from fastraft.config import STORAGE_BACKENDS, ConfigError, default_config
from fastraft.core import SEGMENT_HEADER_SIZE, WAL_VERSION
from fastraft.datadir import KNOWN_BACKENDS, NewerFormatError, claim_backend
from fastraft.errors import CorruptRecordError
from fastraft.raft.messages import EntryBatch, HardState, SnapshotMeta
from fastraft.server.joining import IDENTITY_FORMAT, identity_config, joining_config, \
    write_identity
from fastraft.storage import SqliteStore, WalStore
from fastraft.storage import snapshot as snap
from fastraft.storage.sqlite import SCHEMA_VERSION
from fastraft.storage import wal

META = SnapshotMeta(3, 1, frozenset({1, 2, 3}), frozenset(), frozenset(), b"")


def _wal(tmp_path, segments: int = 2) -> str:
    """A WAL directory of ``segments`` segments holding entries and a snapshot mark."""
    d = str(tmp_path / "wal")
    s = WalStore.open(d, segment_size=64 * 1024)
    index = 1
    for k in range(segments):
        s.append(EntryBatch(index, [(1, b"x" * 40_000), (1, b"y" * 40_000)]))
        index += 2
        s.save_hard_state(HardState(1, 1, index - 1))
        if k == 0:
            s.save_snapshot_mark(META._replace(index=2))
        s.sync()
    s.close()
    assert len(s.segment_names()) >= segments
    return d


def _set_segment_version(path: str, version: int, crc: bool = True) -> None:
    with open(path, "r+b") as f:
        head = bytearray(f.read(SEGMENT_HEADER_SIZE))
        struct.pack_into("<I", head, 8, version)
        if crc:
            struct.pack_into("<I", head, 12, zlib.crc32(bytes(head[:12])))
        f.seek(0)
        f.write(head)


def _sizes(d: str) -> dict:
    return {n: os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d))}


# -- the WAL --------------------------------------------------------------------------------

def test_a_newer_segment_is_refused_before_anything_is_cut(tmp_path):
    d = _wal(tmp_path, 3)
    names = sorted(n for n in os.listdir(d) if wal.parse_segment_name(n))
    _set_segment_version(os.path.join(d, names[1]), WAL_VERSION + 1)
    with open(os.path.join(d, names[-1]), "ab") as f:      # a torn tail on the last one
        f.write(b"\x01\x02\x03")
    before = _sizes(d)
    with pytest.raises(NewerFormatError) as info:
        WalStore.open(d)
    e = info.value
    assert (e.found, e.supported, e.what) == (WAL_VERSION + 1, WAL_VERSION, "WAL segment format")
    assert e.path == os.path.join(d, names[1])
    assert isinstance(e, ConfigError) and isinstance(e, CorruptRecordError)
    assert "wal-repair" not in str(e)
    assert _sizes(d) == before                              # the torn tail is still there


def test_version_zero_or_a_bad_header_checksum_is_damage(tmp_path):
    d = _wal(tmp_path, 1)
    name = sorted(os.listdir(d))[0]
    for version, crc in ((0, True), (WAL_VERSION + 1, False)):
        _set_segment_version(os.path.join(d, name), version, crc)
        with pytest.raises(CorruptRecordError) as info:
            WalStore.open(d)
        assert not isinstance(info.value, NewerFormatError)
        assert "wal-repair" in str(info.value)


def test_scan_and_repair_tell_a_newer_segment(tmp_path):
    d = _wal(tmp_path, 2)
    name = sorted(os.listdir(d))[-1]
    _set_segment_version(os.path.join(d, name), WAL_VERSION + 7)
    segs = {s.file: s for s in wal.scan(d)}
    assert segs[name].status == "newer" and f"version {WAL_VERSION + 7}" in segs[name].reason
    assert all(s.status == "clean" for n, s in segs.items() if n != name)
    before = _sizes(d)
    first = sorted(os.listdir(d))[0]
    with pytest.raises(NewerFormatError):
        wal.repair(d, first, SEGMENT_HEADER_SIZE)
    assert _sizes(d) == before


def _mark_payload(flags: int) -> bytes:
    return (struct.pack("<BIIII", flags, 3, 0, 0, 0) + struct.pack("<3Q", 1, 2, 3))


@pytest.mark.parametrize("extra_bit, layout", [(4, 3), (8, 4), (0x80, 8)])
def test_a_mark_of_a_later_layout_is_newer(extra_bit, layout):
    with pytest.raises(NewerFormatError) as info:
        wal.decode_snapshot_mark(3, 1, _mark_payload(wal.SNAP_V2 | extra_bit))
    assert (info.value.found, info.value.supported) == (layout, wal.MARK_LAYOUT) == (layout, 2)
    assert wal.decode_snapshot_mark(3, 1, _mark_payload(wal.SNAP_V2))[0] == META
    assert "invalid payload" in wal.describe_payload(wal.SNAPSHOT, _mark_payload(2 | 4))


def test_a_wal_with_a_later_mark_layout_names_the_file_and_offset(tmp_path):
    d = _wal(tmp_path, 1)
    marks = [r for s in wal.scan(d) for r in s.records if r.type == "SNAPSHOT"]
    off = marks[0].offset
    path = os.path.join(d, marks[0].file)
    with open(path, "r+b") as f:
        raw = bytearray(f.read())
        length = struct.unpack_from("<I", raw, off + 4)[0]
        raw[off + 32] |= 4
        payload = bytes(raw[off + 32:off + 32 + length])
        struct.pack_into("<I", raw, off, zlib.crc32(bytes([wal.SNAPSHOT]) + payload))
        struct.pack_into("<I", raw, off + 28, zlib.crc32(bytes(raw[off:off + 28])))
        f.seek(0)
        f.write(raw)
    last = os.path.join(d, sorted(os.listdir(d))[-1])
    with open(last, "ab") as f:                             # a torn tail
        f.write(b"\x01\x02\x03")
    before = _sizes(d)
    with pytest.raises(NewerFormatError) as info:
        WalStore.open(d)
    assert _sizes(d) == before                              # nothing cut
    assert info.value.path == path
    assert f"SNAPSHOT record at byte offset {off}" in str(info.value)
    assert "snapshot mark layout version 3" in str(info.value)


# -- snapshot files -------------------------------------------------------------------------

def _newer_snapshot(directory, version: int = snap.VERSION + 1) -> str:
    store = snap.SnapshotStore(directory)
    path = store.save(META, [b"state"])
    with open(path, "r+b") as f:
        raw = bytearray(f.read())
        struct.pack_into("<H", raw, 8, version)
        struct.pack_into("<I", raw, len(raw) - 8, zlib.crc32(bytes(raw[:-16])))
        f.seek(0)
        f.write(raw)
    return path


def test_a_newer_snapshot_file_is_neither_read_nor_skipped(tmp_path):
    d = tmp_path / "snap"
    store = snap.SnapshotStore(d)
    store.save(META._replace(index=2), [b"older"])
    path = _newer_snapshot(d)
    assert snap.file_version(path) == snap.VERSION + 1
    for read in (snap.read_meta, snap.verify, snap.load):
        with pytest.raises(NewerFormatError) as info:
            read(path)
        assert (info.value.path, info.value.found) == (path, snap.VERSION + 1)
    with pytest.raises(NewerFormatError):
        store.latest()                  # not skipped in favour of the older one
    with pytest.raises(NewerFormatError):
        snap.SnapshotStore(d)           # a node's store refuses the directory


def test_a_newer_snapshot_received_from_a_peer_is_refused_like_damage(tmp_path):
    src_dir = tmp_path / "elsewhere"
    path = _newer_snapshot(src_dir)
    store = snap.SnapshotStore(tmp_path / "snap")
    part = os.path.join(store.directory, "incoming.part")
    os.replace(path, part)
    with pytest.raises(CorruptRecordError, match="newer than this fastraft"):
        store.adopt(part, META)
    assert store.names() == []


def test_a_damaged_version_field_is_still_damage(tmp_path):
    path = _newer_snapshot(tmp_path / "snap", version=0)
    with pytest.raises(CorruptRecordError) as info:
        snap.read_meta(path)
    assert not isinstance(info.value, NewerFormatError)


# -- SQLite, the backend marker, node.toml ---------------------------------------------------

def test_a_newer_sqlite_schema_names_both_versions(tmp_path):
    db = str(tmp_path / "fastraft.db")
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 9")
    conn.commit()
    conn.close()
    with pytest.raises(NewerFormatError) as info:
        SqliteStore(db)
    assert (info.value.path, info.value.found, info.value.supported) == (db, 9, SCHEMA_VERSION)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 9     # untouched
    conn.close()


def test_a_marker_naming_an_unknown_backend_is_newer(tmp_path):
    assert KNOWN_BACKENDS == STORAGE_BACKENDS
    (tmp_path / "BACKEND").write_text("rocks\n")
    with pytest.raises(NewerFormatError, match="names the storage backend 'rocks'"):
        claim_backend(str(tmp_path), "wal", {"wal"})
    (tmp_path / "BACKEND").write_text("sqlite\n")
    with pytest.raises(ConfigError) as info:              # a known other backend: as before
        claim_backend(str(tmp_path), "wal")
    assert not isinstance(info.value, NewerFormatError)


def test_node_toml_carries_its_format_and_a_newer_one_is_refused(tmp_path):
    base = default_config(data_dir=str(tmp_path))
    cfg = joining_config(base, 4, "10.0.0.4:7104", "10.0.0.4:7004", None)
    write_identity(cfg, 4)
    path = tmp_path / "4" / "node.toml"
    text = path.read_text()
    assert text.startswith(f"# fastraft node identity, format {IDENTITY_FORMAT}\n")
    assert identity_config(str(tmp_path / "4")) == cfg
    path.write_text(text.split("\n", 1)[1])               # before the line existed: format 1
    assert identity_config(str(tmp_path / "4")) == cfg
    path.write_text(f"# fastraft node identity, format {IDENTITY_FORMAT + 1}\n" + text)
    with pytest.raises(NewerFormatError) as info:
        identity_config(str(tmp_path / "4"))
    assert (info.value.path, info.value.found) == (str(path), IDENTITY_FORMAT + 1)
