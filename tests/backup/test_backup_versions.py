"""Backup file versions (``fastraft/backup.py``, "Versions"): version 2 is written and holds a
stream of format 2 (revisions and leases) or older; a version 1 backup (a stream of format 1)
is still inspected and restored into a new cluster, on either backend; version 3 is a later
release's and refused as such.

Place in the architecture: tests of one leaf module and of ``backup_restore`` on files in a
temporary directory (no node is started).
"""

from __future__ import annotations

import struct
import zlib

import pytest

from fastraft import backup as B
from fastraft import codec
from fastraft.backup_restore import restore
from fastraft.config import parse_config
from fastraft.server.backends import open_backend
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.restorer import UNKNOWN_REVISION

BOOK = codec.encode_member_book({1: ("127.0.0.1:7101", "127.0.0.1:7001")})


def _format_1_stream(index: int = 9) -> bytes:
    """A format 1 state machine stream (as releases before revisions and leases wrote it)."""
    values = [[1, index, 5000, 60_000, 2, 1], [b"a", b"1", b"b", b"2"],
              [[4, 4800, 2, [2, codec.ST_OK, True]]], ["end", 2, 1]]
    return b"".join(codec.pack(v) for v in values)


def _leased_machine() -> KVStateMachine:
    m = KVStateMachine()
    m.apply(1, codec.encode_command([codec.CMD_REGISTER, 1000]), 3)
    m.apply(2, codec.encode_command([codec.CMD_LEASE_GRANT, 1000, 1, 1, 1, 60_000]), 3)
    m.apply(3, codec.encode_command([codec.CMD_PUT, 1000, 1, 2, 1, b"k", b"v", 2]), 3)
    m.apply(4, codec.encode_command([codec.CMD_PUT, 1000, 1, 3, 1, b"j", b"w"]), 3)
    return m


def _write(path, stream: bytes, index: int, version: int = B.VERSION) -> B.BackupMeta:
    """A backup of ``stream`` written by BackupWriter, its header then set to ``version``
    (the header CRC made right again)."""
    meta = B.new_meta(index, 3, [1], [], [], BOOK, "prod", 1, len(stream), zlib.crc32(stream))
    with B.BackupWriter(path, meta._replace(block_size=B.MIN_BLOCK)) as w:
        w.write(stream)
        w.finish()
    if version != B.VERSION:
        raw = bytearray(path.read_bytes())
        struct.pack_into("<H", raw, 8, version)
        mlen = struct.unpack_from("<I", raw, 28)[0]
        struct.pack_into("<I", raw, 32 + mlen, zlib.crc32(bytes(raw[:32 + mlen])))
        path.write_bytes(bytes(raw))
    return meta


def test_version_2_is_written_with_a_format_2_stream(tmp_path):
    assert B.VERSION == 2 and B.STREAM_FORMATS == {1: (1,), 2: (1, 2)}
    m = _leased_machine()
    path = tmp_path / "b.frb"
    _write(path, b"".join(m.snapshot_chunks()), 4)
    assert struct.unpack_from("<H", path.read_bytes(), 8)[0] == 2
    info = B.inspect(path)
    assert info["valid"], info
    assert (info["format"], info["stream_format"], info["keys"], info["sessions"],
            info["leases"]) == (2, 2, 2, 1, 1)
    back = KVStateMachine.restore(B.BackupReader(path).data())
    assert back.get_item(b"k") == (b"v", 3) and back.leases.key_lease == {b"k": 2}


def test_a_version_1_backup_is_inspected(tmp_path):
    path = tmp_path / "old.frb"
    _write(path, _format_1_stream(), 9, version=1)
    info = B.inspect(path)
    assert info["valid"], info
    assert (info["format"], info["stream_format"], info["keys"], info["sessions"],
            info["leases"], info["clock_ms"]) == (1, 1, 2, 1, 0, 5000)


def test_a_version_2_backup_of_an_older_node_s_format_1_stream_is_valid(tmp_path):
    path = tmp_path / "b.frb"
    _write(path, _format_1_stream(), 9)              # a new client, a node of the old release
    info = B.inspect(path)
    assert info["valid"] and (info["format"], info["stream_format"]) == (2, 1)


def test_a_version_1_backup_with_a_format_2_stream_is_damage(tmp_path):
    m = _leased_machine()
    path = tmp_path / "b.frb"
    _write(path, b"".join(m.snapshot_chunks()), 4, version=1)
    with B.BackupReader(path) as r:
        hlen = r.header_len
    info = B.inspect(path)
    assert not info["valid"] and info["damage_offset"] == hlen
    assert "stream of format 1" in info["error"] and "backup format 1" in info["error"]


def test_a_version_above_2_is_a_later_release_s(tmp_path):
    path = tmp_path / "b.frb"
    _write(path, _format_1_stream(), 9, version=3)
    info = B.inspect(path)
    assert not info["valid"] and info["damage_offset"] == 8
    assert "newer" in info["error"] and "later release" in info["error"]


def test_stream_counts_of_either_format():
    assert B.stream_counts([1, 9, 5, 6, 2, 1]) == {
        "format": 1, "index": 9, "keys": 2, "sessions": 1, "leases": 0, "clock_ms": 5,
        "session_timeout_ms": 6}
    assert B.stream_counts([2, 9, 5, 6, 2, 1, 3, 4])["leases"] == 3
    for bad in (None, [], [1, 9, 5, 6, 2], [2, 9, 5, 6, 2, 1], [3, 9, 5, 6, 2, 1, 0, 0],
                [1, 9, 5, 6, -2, 1], [1, 9, 5, "6", 2, 1]):
        assert B.stream_counts(bad) is None
    assert B.stream_counts([2, 9, 5, 6, 2, 1, 3, 4], (1,)) is None


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_a_version_1_backup_restores_into_a_new_cluster(tmp_path, storage):
    path = tmp_path / "old.frb"
    _write(path, _format_1_stream(), 9, version=1)
    data = tmp_path / "data"
    cfg = parse_config(f'data_dir = "{data}"\n[cluster]\nname = "restored"\n'
                       f'[[node]]\nid = 1\nraft = "127.0.0.1:1"\nclient = "127.0.0.1:2"\n')
    done = restore(path, cfg, storage=storage)
    assert (done["index"], done["keys"], done["sessions"]) == (9, 2, 1)
    backend = open_backend(storage, str(data / "1"), frozenset(), cfg.tuning)
    try:
        backend.open()
        m = backend.machine
        assert m.applied_index == 9 and m.clock == 5000 and m.lease_term == 0
        assert m.scan_items(b"", 10) == [(b"a", b"1", UNKNOWN_REVISION),
                                         (b"b", b"2", UNKNOWN_REVISION)]
        assert [s.id for s in m.sessions.sessions()] == [4]
    finally:
        backend.close()
