"""Backup files: one node's consistent snapshot of the replicated state in one self-checking
file (``fastraft snapshot save`` writes it, ``status`` inspects it, ``restore`` reads it).

Place in the architecture: a leaf beside ``storage``, used by the client
(``client/_backup.py`` writes a backup as it downloads it), by ``fastraft snapshot status``
and by ``backup_restore`` (which turns a backup into the data directories of a new cluster).
It imports ``codec`` (msgpack: the meta, and the first and last values of the state machine's
stream), ``errors``, ``datadir`` (durable names) and ``raft.messages``; never the server or
the state machine, so the client stays free of them.

What a backup holds: the snapshot meta of the node it came from (index and term, the
configuration's ids and the member book, ``codec.encode_member_book``), the node's cluster
name and id, when it was taken, and the state machine's snapshot stream (``data``: the keys
with their revisions, the client sessions and the leases, ``statemachine/machine.py``),
exactly as the node's snapshot files hold it. Layout (little-endian), format version 2::

    offset     size       field
    0          8          magic            b"FRFTBKUP"
    8          2          format version   u16 = 2
    10         2          flags            u16 = 0
    12         4          block size B     u32, 4 KiB .. 64 MiB (1 MiB written)
    16         8          data length L    u64
    24         4          data CRC         u32, CRC-32 of the whole data (the node's)
    28         4          meta length M    u32, at most 2 MiB
    32         M          meta             msgpack [1, index, term, voters, outgoing,
                                           learners, context, cluster, node_id,
                                           created_ms, fastraft_version]
    32 + M     4          header CRC       u32, CRC-32 of bytes [0, 32 + M)
    H = 36 + M            blocks           ceil(L / B) blocks: B bytes of data (the last
                                           fewer), each followed by u32 CRC-32 of
                                           (u64 block number, the block's bytes)
    H + L + 4n 16         trailer          u64 L, u32 block count n, b"FBKE"

Every byte is covered by a checksum, and the checksums are local, so damage is found where it
is: ``BackupDamaged`` names the byte offset of the header, block or trailer that fails (a
truncated file: the offset where it ends; bytes past the trailer: where they start). The
block number in each block's CRC catches blocks swapped or repeated; the whole-data CRC, which
the node computed from its own snapshot file, catches a stream changed anywhere between the
node's file and this one.

Writing (``BackupWriter``): to ``FILE.part`` in the same directory, each block with its CRC as
it comes; ``finish`` checks the data's length and CRC against what the node announced, writes
the trailer, fsyncs, reads the whole file back through the verifier, renames it to FILE and
fsyncs the directory. Any failure removes the ``.part`` file; FILE is never left half
written (an existing FILE is replaced only by a complete, verified backup).

Reading (``BackupReader``, ``inspect``) streams: nothing holds the whole data in memory.

Versions: the format version covers the data too. The state machine's stream carries its own
format in its first value (``statemachine.machine.SNAPSHOT_FORMAT``, checked by ``inspect``
and by the restore); a change of either comes with a new backup format version, and a
version above ``VERSION`` is refused as a later release's (at byte offset 8). Every older
version is still read:

- 2 (written): the layout above; the data is a stream of format 2 (revisions and leases) or
  older (``STREAM_FORMATS``: a backup downloaded from a node of an older release holds that
  node's format 1 stream).
- 1: the same layout; the data is a stream of format 1 (keys and sessions only; its keys get
  the revision "unknown" when restored).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from . import __version__, codec
from .datadir import fsync_dir, remove_quietly
from .errors import CorruptRecordError, RemoteProtocolError, short_repr

__all__ = ["BackupMeta", "BackupWriter", "BackupReader", "BackupDamaged", "inspect", "new_meta",
           "stream_counts", "MAGIC", "VERSION", "STREAM_FORMATS", "BLOCK_SIZE", "PART_SUFFIX"]

MAGIC = b"FRFTBKUP"
END_MAGIC = b"FBKE"
VERSION = 2
#: backup format version -> the state machine stream formats its data may be in (every
#: version in this table is read)
STREAM_FORMATS = {1: (1,), 2: (1, 2)}
#: stream format -> its header's fields: [format, applied, clock, session_timeout_ms, n_keys,
#: n_sessions(, n_leases, lease_term)]
_STREAM_HEADER_FIELDS = {1: 6, 2: 8}
BLOCK_SIZE = 1 << 20
MIN_BLOCK = 4 << 10
MAX_BLOCK = 64 << 20
MAX_META = 2 << 20
PART_SUFFIX = ".part"
_FIXED = struct.Struct("<8sHHIQII")     # magic, version, flags, block, L, data crc, M
_CRC = struct.Struct("<I")
_BLOCKNO = struct.Struct("<Q")
_TRAILER = struct.Struct("<QI4s")       # L, block count, end magic
_U64 = (1 << 64) - 1
_META_FIELDS = 11


class BackupMeta(NamedTuple):
    """What a backup says about itself (the header). ``voters``/``outgoing``/``learners``:
    sorted node ids of the source's configuration; ``context``: its member book."""

    index: int
    term: int
    voters: tuple
    outgoing: tuple
    learners: tuple
    context: bytes
    cluster: str
    node_id: int
    created_ms: int
    version: str
    data_len: int
    data_crc: int
    block_size: int = BLOCK_SIZE

    def members(self) -> list[dict]:
        """The source cluster's members from the member book: ``[{"id", "raft", "client"}]``
        (empty when the book is unreadable or empty)."""
        try:
            addrs, _removed = codec.decode_member_book(self.context)
        except RemoteProtocolError:
            return []
        return [{"id": nid, "raft": a[0], "client": a[1]} for nid, a in sorted(addrs.items())]


class BackupDamaged(CorruptRecordError):
    """A backup file fails a check: ``offset`` is the byte offset of the damage (where a
    truncated file ends), ``reason`` what is wrong there."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"backup {path} is damaged at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def _encode_meta(m: BackupMeta) -> bytes:
    return codec.pack([1, m.index, m.term, list(m.voters), list(m.outgoing), list(m.learners),
                       m.context, m.cluster, m.node_id, m.created_ms, m.version])


def _decode_meta(raw: bytes, fixed: tuple) -> BackupMeta:
    """The meta from its msgpack bytes and the fixed header's fields; ValueError when it is
    not one."""
    try:
        v = codec.unpack(raw)
    except RemoteProtocolError as exc:
        raise ValueError(str(exc)) from None
    if type(v) is not list or len(v) != _META_FIELDS or v[0] != 1:
        raise ValueError(f"meta is not [1, index, term, ...]: {short_repr(v)}")
    _, index, term, voters, outgoing, learners, context, cluster, node_id, created, ver = v
    for x in (index, term, node_id, created):
        if type(x) is not int or not 0 <= x <= _U64:
            raise ValueError(f"meta field {short_repr(x)} is not an unsigned integer")
    for ids in (voters, outgoing, learners):
        if type(ids) is not list or not all(type(i) is int and 0 < i <= _U64 for i in ids):
            raise ValueError(f"meta ids {short_repr(ids)} are not node ids")
    if type(context) is not bytes or type(cluster) is not str or type(ver) is not str:
        raise ValueError("meta context, cluster or version of the wrong type")
    _magic, _version, _flags, block, dlen, dcrc, _mlen = fixed
    return BackupMeta(index, term, tuple(voters), tuple(outgoing), tuple(learners), context,
                      cluster, node_id, created, ver, dlen, dcrc, block)


def _blocks(data_len: int, block: int) -> int:
    return -(-data_len // block)


def _block_crc(k: int, data) -> int:
    return zlib.crc32(data, zlib.crc32(_BLOCKNO.pack(k)))


def new_meta(index: int, term: int, voters, outgoing, learners, context: bytes, cluster: str,
             node_id: int, data_len: int, data_crc: int) -> BackupMeta:
    """The meta of a backup taken now (``created_ms``: this machine's wall clock)."""
    return BackupMeta(index, term, tuple(sorted(voters)), tuple(sorted(outgoing)),
                      tuple(sorted(learners)), bytes(context), cluster, node_id,
                      time.time_ns() // 1_000_000, __version__, data_len, data_crc)


# -- writing ----------------------------------------------------------------------------------

class BackupWriter:
    """Write a backup of ``meta`` to ``path`` (module docstring: ``path.part``, then
    ``finish``). ``write`` takes the data in pieces of any size, in order. Use as a context
    manager, or call ``abort`` on failure: the part file is removed. OSError from the file
    system; CorruptRecordError from ``finish`` when the data is not what ``meta`` says."""

    def __init__(self, path, meta: BackupMeta) -> None:
        if not MIN_BLOCK <= meta.block_size <= MAX_BLOCK:
            raise ValueError(f"block size {meta.block_size} out of range")
        self.path = os.fspath(path)
        self.part = self.path + PART_SUFFIX
        self.meta = meta
        self._crc = 0
        self._len = 0
        self._k = 0
        self._buf = bytearray()
        self._out = bytearray()
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        raw = _encode_meta(meta)
        if len(raw) > MAX_META:
            self.abort()
            raise ValueError(f"backup meta of {len(raw)} bytes is over {MAX_META}")
        head = _FIXED.pack(MAGIC, VERSION, 0, meta.block_size, meta.data_len, meta.data_crc,
                           len(raw)) + raw
        self._out += head + _CRC.pack(zlib.crc32(head))

    def write(self, data) -> None:
        """Append ``data`` (bytes-like) to the backup's data."""
        self._crc = zlib.crc32(data, self._crc)
        self._len += len(data)
        self._buf += data
        b = self.meta.block_size
        while len(self._buf) >= b:
            self._block(bytes(self._buf[:b]))
            del self._buf[:b]

    def _block(self, data: bytes) -> None:
        self._out += data
        self._out += _CRC.pack(_block_crc(self._k, data))
        self._k += 1
        if len(self._out) >= 4 << 20:
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self._out)
        while view:
            view = view[os.write(self._fd, view):]
        del view
        self._out = bytearray()

    def finish(self) -> BackupMeta:
        """Complete the file (module docstring) and return its meta; the backup is at
        ``path``, durable and verified, when this returns."""
        m = self.meta
        try:
            if self._buf:
                self._block(bytes(self._buf))
                self._buf = bytearray()
            if self._len != m.data_len or self._crc != m.data_crc:
                raise CorruptRecordError(
                    f"the data received ({self._len} bytes, CRC {self._crc:#010x}) is not what "
                    f"the node announced ({m.data_len} bytes, CRC {m.data_crc:#010x})")
            self._out += _TRAILER.pack(self._len, self._k, END_MAGIC)
            self._flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            with BackupReader(self.part) as r:
                for _piece in r.data():
                    pass
            os.replace(self.part, self.path)
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except BaseException:
            self.abort()
            raise
        return m

    def abort(self) -> None:
        """Close and remove the part file (best effort)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        remove_quietly(self.part)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()


# -- reading ----------------------------------------------------------------------------------

class BackupReader:
    """An open backup: the header is checked on opening (``BackupDamaged`` otherwise),
    ``meta`` is its meta, ``size`` the file's size; ``data()`` yields the data block by
    block, each checked before it is yielded, and checks the trailer, the size and the
    whole-data CRC after the last one. A consumer must discard what it read if ``data()``
    raises. OSError when the file cannot be read."""

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        self._f = open(self.path, "rb")
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            self.meta, self.header_len = self._header()
        except BaseException:
            self._f.close()
            raise

    def _bad(self, offset: int, reason: str) -> BackupDamaged:
        return BackupDamaged(self.path, offset, reason)

    def _truncated(self, need: int) -> BackupDamaged:
        return self._bad(self.size, f"the file ends at byte {self.size}, before byte {need} "
                                    f"(truncated)")

    def _header(self) -> tuple[BackupMeta, int]:
        f = self._f
        fixed_raw = f.read(_FIXED.size)
        if fixed_raw[:len(MAGIC)] != MAGIC[:len(fixed_raw)] or not fixed_raw:
            raise self._bad(0, f"not a fastraft backup (magic {fixed_raw[:8]!r})")
        if len(fixed_raw) < _FIXED.size:
            raise self._truncated(_FIXED.size)
        fixed = _FIXED.unpack(fixed_raw)
        _magic, version, flags, block, dlen, _dcrc, mlen = fixed
        if version > VERSION:
            raise self._bad(8, f"backup format version {version} is newer than this "
                               f"fastraft ({__version__}) reads (version {VERSION}): it was "
                               f"written by a later release; read it with that release")
        if version not in STREAM_FORMATS:
            raise self._bad(8, f"unknown backup format version {version}")
        self.format_version = version
        if flags:
            raise self._bad(10, f"unknown flags {flags:#x}")
        if not MIN_BLOCK <= block <= MAX_BLOCK:
            raise self._bad(12, f"block size {block} out of range")
        if mlen > MAX_META:
            raise self._bad(28, f"meta length {mlen} is over the bound {MAX_META}")
        raw = f.read(mlen + _CRC.size)
        hlen = _FIXED.size + mlen + _CRC.size
        if len(raw) < mlen + _CRC.size:
            raise self._truncated(hlen)
        if zlib.crc32(raw[:mlen], zlib.crc32(fixed_raw)) != _CRC.unpack(raw[mlen:])[0]:
            raise self._bad(0, f"header checksum mismatch (the damage is in bytes 0..{hlen})")
        try:
            meta = _decode_meta(raw[:mlen], fixed)
        except ValueError as exc:
            raise self._bad(_FIXED.size, f"bad meta: {exc}") from None
        if dlen == 0:
            raise self._bad(16, "no data")
        return meta, hlen

    @property
    def expected_size(self) -> int:
        """The size the file has when it is whole."""
        m = self.meta
        return (self.header_len + m.data_len + _CRC.size * _blocks(m.data_len, m.block_size)
                + _TRAILER.size)

    def data(self) -> Iterator[bytes]:
        """The data, block by block, checked (class docstring)."""
        m = self.meta
        b = m.block_size
        n = _blocks(m.data_len, b)
        f = self._f
        pos = self.header_len
        f.seek(pos)
        crc = 0
        left = m.data_len
        for k in range(n):
            want = min(b, left)
            piece = f.read(want + _CRC.size)
            if len(piece) < want + _CRC.size:
                raise self._truncated(pos + want + _CRC.size)
            data = piece[:want]
            if _block_crc(k, data) != _CRC.unpack(piece[want:])[0]:
                raise self._bad(pos, f"block {k} of {n} (data bytes {m.data_len - left}.."
                                     f"{m.data_len - left + want}) fails its checksum")
            crc = zlib.crc32(data, crc)
            left -= want
            pos += want + _CRC.size
            yield data
        tail = f.read(_TRAILER.size)
        if len(tail) < _TRAILER.size:
            raise self._truncated(pos + _TRAILER.size)
        tlen, tblocks, end = _TRAILER.unpack(tail)
        if end != END_MAGIC or tlen != m.data_len or tblocks != n:
            raise self._bad(pos, f"bad trailer (length {tlen}, {tblocks} blocks, magic "
                                 f"{end!r}; expected {m.data_len}, {n}, {END_MAGIC!r})")
        if self.size != pos + _TRAILER.size:
            raise self._bad(pos + _TRAILER.size, f"{self.size - pos - _TRAILER.size} bytes "
                                                 f"after the trailer")
        if crc != m.data_crc:
            raise self._bad(self.header_len, f"the data's CRC {crc:#010x} is not the one the "
                                             f"node announced ({m.data_crc:#010x})")

    def offset_of(self, data_offset: int) -> int:
        """The file offset of the block that holds data byte ``data_offset``."""
        b = self.meta.block_size
        return self.header_len + (data_offset // b) * (b + _CRC.size)

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- status ------------------------------------------------------------------------------------

def stream_counts(head, formats=(1, 2)) -> dict | None:
    """What the first value of a state machine stream says, when it is the header of a
    stream format in ``formats``: ``{"format", "index", "keys", "sessions", "leases",
    "clock_ms", "session_timeout_ms"}`` (``leases`` 0 for format 1); None otherwise."""
    if (type(head) is not list or not head or head[0] not in formats
            or len(head) != _STREAM_HEADER_FIELDS.get(head[0])
            or not all(type(x) is int and 0 <= x <= _U64 for x in head)):
        return None
    return {"format": head[0], "index": head[1], "keys": head[4], "sessions": head[5],
            "leases": head[6] if head[0] >= 2 else 0, "clock_ms": head[2],
            "session_timeout_ms": head[3]}


def _stream_summary(r: BackupReader) -> dict:
    """Read the data through the checks, decoding the state machine's stream value by value:
    its header (of a stream format the backup's version may hold) gives the counts of keys,
    sessions and leases, its end marker must repeat them. BackupDamaged for a check that
    fails (a bad stream: at the block where it goes wrong)."""
    dec = codec.SnapshotDecoder()
    formats = STREAM_FORMATS[r.format_version]
    head = last = counts = None
    seen = 0
    for piece in r.data():
        try:
            values = dec.feed(piece)
        except RemoteProtocolError as exc:
            raise r._bad(r.offset_of(seen), f"the state machine's stream is not valid: "
                                            f"{exc}") from None
        if values:
            if head is None:
                head = values[0]
                counts = stream_counts(head, formats)
                if counts is None or counts["index"] != r.meta.index:
                    allowed = " or ".join(map(str, formats))
                    raise r._bad(r.header_len, f"the state machine's stream starts with "
                                               f"{short_repr(head)}, not the header of a "
                                               f"stream of format {allowed} at index "
                                               f"{r.meta.index} (backup format "
                                               f"{r.format_version})")
            last = values[-1]
        seen += len(piece)
    end = None if counts is None else ["end", counts["keys"], counts["sessions"]] + (
        [counts["leases"]] if counts["format"] >= 2 else [])
    if head is None or last != end:
        raise r._bad(r.offset_of(max(seen - 1, 0)), f"the state machine's stream ends with "
                                                    f"{short_repr(last)}, not its end marker")
    return {k: counts[k] for k in ("keys", "sessions", "leases", "clock_ms",
                                   "session_timeout_ms")} | {"stream_format": counts["format"]}


def inspect(path) -> dict:
    """What the backup at ``path`` holds and whether it is whole (``fastraft snapshot
    status``): ``valid``, ``error`` and ``damage_offset`` (None when valid), ``size``, and
    from a readable header ``index``, ``term``, ``cluster``, ``node_id``, ``created_ms``,
    ``version``, ``format`` (the file's format version), ``data_bytes``, ``members``,
    ``voters``; from a valid data stream ``keys``, ``sessions``, ``leases``,
    ``stream_format``. OSError when the file cannot be opened or read."""
    path = os.fspath(path)
    out: dict = {"file": path, "valid": False, "error": None, "damage_offset": None,
                 "size": os.stat(path).st_size}
    try:
        with BackupReader(path) as r:
            m = r.meta
            out.update(format=r.format_version, index=m.index, term=m.term, cluster=m.cluster,
                       node_id=m.node_id, created_ms=m.created_ms, version=m.version,
                       data_bytes=m.data_len, data_crc=f"{m.data_crc:08x}",
                       voters=list(m.voters), learners=list(m.learners),
                       members=m.members(), expected_size=r.expected_size)
            out.update(_stream_summary(r))
    except BackupDamaged as exc:
        out.update(error=exc.reason, damage_offset=exc.offset)
        return out
    out["valid"] = True
    return out
