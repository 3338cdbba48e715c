"""The backup file format (``fastraft/backup.py``): a written backup reads back whole; every
kind of damage and a truncation anywhere is found, with the byte offset where it is; the file
is replaced only by a complete, verified backup.

Place in the architecture: tests of one leaf module, on files in a temporary directory (the
state machine only makes a real snapshot stream to store).
"""

from __future__ import annotations

import os
import zlib

import pytest

from fastraft import backup as B
from fastraft import codec
from fastraft.errors import CorruptRecordError
from fastraft.statemachine import KVStateMachine


def _machine(n_keys: int = 3000, value_size: int = 100) -> KVStateMachine:
    m = KVStateMachine()
    ts = 1_000
    m.apply(1, codec.encode_command([codec.CMD_REGISTER, ts]))
    for i in range(n_keys):
        m.apply(i + 2, codec.encode_command(
            [codec.CMD_PUT, ts, 1, i + 1, i + 1, b"key%06d" % i, bytes([i % 251]) * value_size]))
    return m


def _write(path, m: KVStateMachine, block: int = B.MIN_BLOCK, data: bytes | None = None):
    stream = b"".join(m.snapshot_chunks()) if data is None else data
    book = codec.encode_member_book({1: ("127.0.0.1:7101", "127.0.0.1:7001")})
    meta = B.new_meta(m.applied_index, 4, [1], [], [], book, "prod", 1, len(stream),
                      zlib.crc32(stream))._replace(block_size=block)
    with B.BackupWriter(path, meta) as w:
        for lo in range(0, len(stream), 7000):          # pieces that do not match blocks
            w.write(stream[lo:lo + 7000])
        w.finish()
    return meta, stream


def test_a_backup_reads_back_whole(tmp_path):
    m = _machine()
    path = tmp_path / "b.frb"
    meta, stream = _write(path, m)
    assert not os.path.exists(str(path) + B.PART_SUFFIX)
    with B.BackupReader(path) as r:
        assert r.meta == meta
        assert b"".join(r.data()) == stream
        assert r.expected_size == os.path.getsize(path)
    info = B.inspect(path)
    assert info["valid"] and info["error"] is None and info["damage_offset"] is None
    assert (info["index"], info["term"], info["keys"], info["sessions"]) == (
        m.applied_index, 4, 3000, 1)
    assert info["cluster"] == "prod" and info["members"] == [
        {"id": 1, "raft": "127.0.0.1:7101", "client": "127.0.0.1:7001"}]
    assert info["size"] == os.path.getsize(path)
    restored = KVStateMachine.restore(B.BackupReader(path).data())
    assert restored.get(b"key000007") == bytes([7]) * 100


def _damaged(tmp_path, offset: int, flip: int = 0x01):
    m = _machine()
    path = tmp_path / "b.frb"
    _write(path, m)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= flip
    path.write_bytes(bytes(raw))
    return path, B.inspect(path)


def test_a_flipped_bit_in_a_block_is_found_at_that_block(tmp_path):
    path = tmp_path / "b.frb"
    _write(path, _machine())
    with B.BackupReader(path) as r:
        hlen, block = r.header_len, r.meta.block_size
    for k in (0, 3, 20):
        start = hlen + k * (block + 4)
        for at in (start, start + 1234, start + block + 3):   # in the data, in its CRC
            p, info = _damaged(tmp_path, at)
            assert not info["valid"]
            assert info["damage_offset"] == start, (k, at, info)
            assert f"block {k} " in info["error"]
            with pytest.raises(B.BackupDamaged) as e:
                for _ in B.BackupReader(p).data():
                    pass
            assert e.value.offset == start


def test_header_and_trailer_damage(tmp_path):
    _p, info = _damaged(tmp_path, 0)
    assert info["damage_offset"] == 0 and "not a fastraft backup" in info["error"]
    _p, info = _damaged(tmp_path, 8)
    assert info["damage_offset"] == 8 and "version" in info["error"]
    _p, info = _damaged(tmp_path, 40)                           # inside the meta
    assert info["damage_offset"] == 0 and "header checksum" in info["error"]
    path = tmp_path / "b.frb"
    _write(path, _machine())
    size = os.path.getsize(path)
    _p, info = _damaged(tmp_path, size - 2)                     # the end magic
    assert info["damage_offset"] == size - 16 and "trailer" in info["error"]


def test_truncated_anywhere_is_found_where_it_ends(tmp_path):
    path = tmp_path / "b.frb"
    _write(path, _machine())
    whole = path.read_bytes()
    for cut in (0, 5, 30, 100, len(whole) // 2, len(whole) - 17, len(whole) - 1):
        path.write_bytes(whole[:cut])
        info = B.inspect(path)
        assert not info["valid"], cut
        assert info["damage_offset"] == cut, (cut, info)
    path.write_bytes(whole + b"x")
    info = B.inspect(path)
    assert not info["valid"] and info["damage_offset"] == len(whole)
    assert "after the trailer" in info["error"]


def test_the_file_is_replaced_only_by_a_complete_verified_backup(tmp_path):
    m = _machine(100)
    path = tmp_path / "b.frb"
    _write(path, m)
    before = path.read_bytes()
    stream = b"".join(m.snapshot_chunks())
    meta = B.new_meta(m.applied_index, 4, [1], [], [], b"", "prod", 1, len(stream),
                      zlib.crc32(stream) ^ 1)           # not the data's CRC
    w = B.BackupWriter(path, meta)
    w.write(stream)
    with pytest.raises(CorruptRecordError, match="not what the node announced"):
        w.finish()
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + B.PART_SUFFIX)
    with pytest.raises(RuntimeError):                   # a failure while writing
        with B.BackupWriter(path, meta._replace(data_crc=zlib.crc32(stream))) as w:
            w.write(stream[:10])
            raise RuntimeError("the download broke")
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + B.PART_SUFFIX)


def test_a_bad_stream_is_named_by_status(tmp_path):
    m = _machine(10)
    stream = b"".join(m.snapshot_chunks())
    path = tmp_path / "b.frb"
    _write(path, m, data=stream[:-5])           # the end marker cut (checksums are fine)
    info = B.inspect(path)
    assert not info["valid"] and "end marker" in info["error"]
