"""Snapshot file versions and the state machine's data they hold (fastraft/storage/snapshot.py,
"Versions"): version 3 is written and holds stream format 2; files of versions 2 and 1, whose
data is stream format 1, still open and restore (on the WAL backend's machine and the SQLite
one); version 4 is a later release's and refused as such.

Specification: the module docstrings of fastraft/storage/snapshot.py and
fastraft/statemachine/machine.py; docs/architecture.md, "Versions and compatibility".
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from fastraft import codec
from fastraft.datadir import NewerFormatError
from fastraft.raft import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.restorer import UNKNOWN_REVISION
from fastraft.statemachine.sqlite_machine import SqliteStateMachine
from fastraft.storage import snapshot as snap
from fastraft.storage.snapshot import SnapshotStore, snapshot_name
from fastraft.storage.sqlite import SqliteStore

META = SnapshotMeta(9, 2, frozenset({1, 2, 3}), frozenset(), frozenset({4}), b"book")


def _format_1_stream() -> bytes:
    """A format 1 state machine stream (as releases before revisions and leases wrote it):
    three keys, one session with a cached answer, at index 9, clock 5000."""
    values = [[1, 9, 5000, 60_000, 3, 1], [b"a", b"1", b"b", b"2", b"c", b"3"],
              [[4, 4800, 2, [2, codec.ST_OK, True]]], ["end", 3, 1]]
    return b"".join(codec.pack(v) for v in values)


def _file(directory, version: int, data: bytes, meta: SnapshotMeta = META) -> str:
    """A snapshot file written by hand in the layout of ``version`` (1: no learners nor
    context), CRC right."""
    ids = sorted(meta.voters) + sorted(meta.outgoing)
    head = struct.pack("<8sHHIIQQ", b"FRFTSNAP", version, 0, len(meta.voters),
                       len(meta.outgoing), meta.index, meta.term)
    if version >= 2:
        ids += sorted(meta.learners)
        head += struct.pack("<II", len(meta.learners), len(meta.context))
    head += struct.pack(f"<{len(ids)}Q", *ids) + (meta.context if version >= 2 else b"")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, snapshot_name(meta.term, meta.index))
    body = head + data
    with open(path, "wb") as f:
        f.write(body + struct.pack("<QI4s", len(data), zlib.crc32(body), b"SNPE"))
    return path


def _check_format_1_state(m) -> None:
    assert m.applied_index == 9 and m.clock == 5000 and m.lease_term == 0
    assert m.scan_items(b"", 10) == [(b"a", b"1", UNKNOWN_REVISION),
                                     (b"b", b"2", UNKNOWN_REVISION),
                                     (b"c", b"3", UNKNOWN_REVISION)]
    assert [(s.id, s.last_active, s.floor, dict(s.responses)) for s in m.sessions.sessions()] \
        == [(4, 4800, 2, {2: (codec.ST_OK, True)})]
    assert len(m.leases) == 0


def test_version_3_is_written_and_holds_stream_format_2(tmp_path):
    assert snap.VERSION == 3 and snap.READ_VERSIONS == (1, 2, 3)
    m = KVStateMachine()
    m.apply(1, codec.encode_command([codec.CMD_REGISTER, 1000]), 1)
    m.apply(2, codec.encode_command([codec.CMD_LEASE_GRANT, 1000, 1, 1, 1, 5000]), 1)
    m.apply(3, codec.encode_command([codec.CMD_PUT, 1000, 1, 2, 1, b"k", b"v", 2]), 1)
    store = SnapshotStore(tmp_path / "snap")
    meta = META._replace(index=3)
    path = store.save(meta, m.snapshot_chunks())
    assert snap.file_version(path) == 3
    with open(path, "rb") as f:
        assert struct.unpack_from("<H", f.read(10), 8)[0] == 3
    assert snap.read_meta(path) == meta
    first = codec.SnapshotDecoder().feed(b"".join(store.read_chunks(path)))[0]
    assert first[0] == 2 == len(first) - 6              # [2, ..., n_leases, lease_term]
    back = KVStateMachine.restore(store.read_chunks(path))
    assert back.get_item(b"k") == (b"v", 3) and back.leases.key_lease == {b"k": 2}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_file_with_a_format_1_stream_restores(tmp_path, version):
    d = str(tmp_path / "snap")
    path = _file(d, version, _format_1_stream())
    store = SnapshotStore(d)
    want = META if version >= 2 else META._replace(learners=frozenset(), context=b"")
    assert store.latest() == (want, path)
    assert snap.verify(path) == want
    _check_format_1_state(KVStateMachine.restore(store.read_chunks(path)))
    # The SQLite backend's machine installs it too (a leader's snapshot of that release).
    db = SqliteStore(tmp_path / "db")
    sq = SqliteStateMachine(db, 60_000)
    sq.install(store.read_chunks(path))
    db.sync()
    db.close()
    db = SqliteStore(tmp_path / "db")
    _check_format_1_state(SqliteStateMachine(db, 60_000))
    db.close()
    # A new snapshot beside it is written in the new version; both are read.
    newer = store.save(META._replace(index=10), [b"x"])
    assert snap.file_version(newer) == 3 and snap.file_version(path) == version
    assert store.latest() == (META._replace(index=10), newer)


def test_version_2_and_3_share_the_header_layout(tmp_path):
    data = _format_1_stream()
    v2 = _file(str(tmp_path / "a"), 2, data)
    v3 = _file(str(tmp_path / "b"), 3, data)
    assert snap.read_meta(v2) == snap.read_meta(v3) == META
    store = SnapshotStore(tmp_path / "c")
    written = store.save(META, [data])
    assert open(written, "rb").read() == open(v3, "rb").read()
    assert snap.load(v2)[1] == snap.load(v3)[1] == data


def test_a_version_above_3_is_a_later_release_s(tmp_path):
    d = str(tmp_path / "snap")
    path = _file(d, 4, _format_1_stream())
    with pytest.raises(NewerFormatError) as info:
        snap.read_meta(path)
    assert (info.value.found, info.value.supported) == (4, 3)
    with pytest.raises(NewerFormatError):
        SnapshotStore(d)
