"""Snapshot files: the state machine's state, streamed to disk atomically with a checksum.

Place in the architecture: part of the storage layer (``fastraft.storage``), beside the WAL
(``wal.py``), used by the runtime (server) when the state machine takes a snapshot and when a
node restarts. It imports the errors (with ``datadir.NewerFormatError``), the plain message
types of ``fastraft.raft.messages`` (``SnapshotMeta``) and the stored meta's rules of
``base.py`` only — never the engine's logic, never msgpack. What the data bytes mean is the
state machine's business; this module only stores them.

Files: ``snap-<16 hex term>-<16 hex index>.snap`` in one directory (it may be shared with the
WAL: the names do not collide). Fixed-width lowercase hex makes the name order the
``(term, index)`` order, so the newest snapshot sorts last. Layout (little-endian), format
version 3 (written)::

    offset        size        field
    ------------  ----------  ---------------------------------------------------------
    0             8           magic           b"FRFTSNAP"
    8             2           format version  u16 = 3
    10            2           flags           u16 = 0 (reserved, must be 0)
    12            4           nv              u32, number of voters (incoming, when joint)
    16            4           no              u32, number of outgoing voters (joint config)
    20            8           index           u64, last included index
    28            8           term            u64, its term
    36            4           nl              u32, number of learners
    40            4           nc              u32, context length (at most 1 MiB)
    44            8 * nv      voters          u64 each, strictly ascending
    44 + 8*nv     8 * no      outgoing        u64 each, strictly ascending
    .. + 8*no     8 * nl      learners        u64 each, strictly ascending, none a voter
    .. + 8*nl     nc          context         the meta's opaque context bytes
    H = 44+8*(nv+no+nl)+nc    (end of header)
    H             L           data            the state machine's bytes, opaque
    H + L         8           L               u64, data length
    H + L + 8     4           crc             u32, CRC-32 (zlib) of bytes [0, H + L)
    H + L + 12    4           end magic       b"SNPE"

    +-------+-----+-------+----+----+-------+------+----+----+--------+----------+----------+
    | magic | ver | flags | nv | no | index | term | nl | nc | voters | outgoing | learners | >
    +-------+-----+-------+----+----+-------+------+----+----+--------+----------+----------+
    +---------+------+-----+-----+------+
  > | context | data |  L  | crc | SNPE |
    +---------+------+-----+-----+------+
    (the header ends with the context; the data is L bytes; L, crc and SNPE are the trailer)

Versions (all still read):

- 3 (written): the layout above; the data is the state machine's stream format 2 (revisions
  and leases, ``statemachine.machine.SNAPSHOT_FORMAT``).
- 2: the same layout; the data was written as stream format 1 (before revisions and leases;
  the state machine still reads it).
- 1 (files written before learners and the context were stored; read as a meta with no
  learners and an empty context): no ``nl`` and ``nc``, its voters start at offset 36 and its
  header ends at ``H = 36 + 8*(nv+no)``; the rest is the same; the data is stream format 1.

This module does not look into the data: the state machine's stream names its own format in
its first value, and its reader takes every format listed. The file version says which
release's data the file may hold, so that an older release refuses a file whose data it could
not read as a later release's (below) instead of taking it for damage.

A file is valid when its size is exactly ``H + L + 16``, both magics match, the version is 1,
2 or 3, the meta in the header matches the name, and the CRC matches. Anything else is damage,
as are more than 65536 ids, a longer context, learners that are voters, or (versions 2 and 3)
ids out of order: CorruptRecordError names the file and the byte offset. A version above 3
(after a valid magic) is a later release's format, not damage: ``NewerFormatError`` (a
CorruptRecordError and a ConfigError) names the file and both versions; ``latest()`` passes
it on instead of skipping the file, and opening a store refuses a directory holding such a
file (a node then exits with status 2; docs/architecture.md, "Versions and compatibility").
The version covers the data too: a change of the state machine's encoding
(``statemachine.machine.SNAPSHOT_FORMAT``) comes with a new file version.

Saving (``SnapshotStore.save``): the header, the streamed data and the trailer are written with
``os.write`` to ``<name>.tmp`` in the same directory, the file is fsynced, renamed to its name
and the directory is fsynced; then snapshots older than the newest ``keep`` are deleted and the
directory is fsynced again. A crash before the rename leaves only a ``.tmp`` file, which is
never taken for a snapshot and is removed when a store is opened on the directory. A failed
write, fsync or rename removes the temporary file (and, best effort, a file already renamed),
raises StorageError and fails the store: it refuses every later call (errors.py), the node must
stop and restart from what is on disk.

Reading never holds a whole snapshot in memory: ``latest()`` verifies the CRC by streaming,
``read_chunks`` yields the data piece by piece (verifying as it goes), ``open_data`` returns a
file object bounded to the data. ``load`` reads everything into memory (small snapshots only).
A damaged newest snapshot is skipped by ``latest()`` with a logged reason and the previous one
is used.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator

from ..datadir import NewerFormatError
from ..errors import CorruptRecordError, LocalProtocolError, StorageError
from ..raft.messages import SnapshotMeta
from ._files import HexPairNames, fsync_dir, makedirs_durable, remove_quietly, write_all
from .base import MAX_MARK_CONTEXT, MAX_MARK_IDS, config_problem, own_mark

__all__ = ["SnapshotStore", "SnapshotReader", "snapshot_name", "parse_snapshot_name",
           "read_meta", "verify", "read_chunks", "open_data", "load", "MAGIC", "VERSION",
           "VERSION_2", "VERSION_1", "READ_VERSIONS", "encode_header", "file_version",
           "check_versions"]

log = logging.getLogger(__name__)

MAGIC = b"FRFTSNAP"
END_MAGIC = b"SNPE"
VERSION = 3                             # written: data of stream format 2
VERSION_2 = 2                           # the same layout, data of stream format 1
VERSION_1 = 1                           # no learners nor context, data of stream format 1
#: Every version this release reads.
READ_VERSIONS = (VERSION_1, VERSION_2, VERSION)
_HEAD = struct.Struct("<8sHHIIQQ")      # magic, version, flags, nv, no, index, term
_HEAD_V2 = struct.Struct("<II")         # nl, nc (versions 2 and 3)
_TRAILER = struct.Struct("<QI4s")       # data length, crc, end magic
_NAMES = HexPairNames("snap-", ".snap")
_TMP = ".tmp"
#: Upper bound on voters + outgoing + learners ids in a header (guards against a damaged
#: count).
MAX_IDS = MAX_MARK_IDS
#: Upper bound on the context's length in a header (1 MiB).
MAX_CONTEXT = MAX_MARK_CONTEXT
#: Writes are gathered into buffers of this size before ``os.write``.
WRITE_BUFFER = 1 << 20
DEFAULT_CHUNK = 1 << 20


# -- names -------------------------------------------------------------------------------------

#: ``snapshot_name(term, index)``: the file name of that snapshot.
snapshot_name = _NAMES.name
#: ``parse_snapshot_name(name)``: ``(term, index)`` of a snapshot file name, or None.
parse_snapshot_name = _NAMES.parse
#: ``_list_snapshots(directory)``: ``(term, index, name)`` of every snapshot, oldest first.
_list_snapshots = _NAMES.listing


# -- header and trailer ------------------------------------------------------------------------

def encode_header(meta: SnapshotMeta) -> bytes:
    """The header of a snapshot file of ``meta`` (format version 3, layout in the module
    docstring); ValueError for fields out of range or a meta no store can keep (too many
    ids, a context over 1 MiB, learners that are voters: ``base.own_mark``)."""
    meta = own_mark(meta)
    voters, outgoing, learners = sorted(meta.voters), sorted(meta.outgoing), \
        sorted(meta.learners)
    ids = voters + outgoing + learners
    try:
        return (_HEAD.pack(MAGIC, VERSION, 0, len(voters), len(outgoing), meta.index, meta.term)
                + _HEAD_V2.pack(len(learners), len(meta.context))
                + struct.pack(f"<{len(ids)}Q", *ids) + meta.context)
    except struct.error:
        raise ValueError(f"snapshot meta fields out of range: {meta}") from None


def _read_header(f, path: str, size: int) -> tuple[SnapshotMeta, int, int]:
    """Parse the header and trailer of the open file ``f`` (``size`` bytes), any format
    version read: returns ``(meta, header length, data length)``; the CRC is not checked. Leaves
    ``f`` anywhere. CorruptRecordError names the file and the byte offset of the damage."""
    def bad(offset: int, reason: str) -> CorruptRecordError:
        return CorruptRecordError(f"snapshot {path}: {reason} (at byte offset {offset})")

    if size < _HEAD.size + _TRAILER.size:
        raise bad(0, f"{size} bytes, too short for a snapshot")
    f.seek(0)
    magic, version, flags, nv, no, index, term = _HEAD.unpack(f.read(_HEAD.size))
    if magic != MAGIC:
        raise bad(0, f"bad magic {magic!r}")
    if version > VERSION:
        raise NewerFormatError(path, "snapshot file format", version, VERSION,
                               " (header, byte offset 8)")
    if version not in READ_VERSIONS:
        raise bad(8, f"unknown format version {version}")
    if flags:
        raise bad(10, f"unknown flags {flags:#x}")
    nl = nc = 0
    pos = _HEAD.size
    if version >= VERSION_2:
        if size < pos + _HEAD_V2.size + _TRAILER.size:
            raise bad(pos, f"{size} bytes, too short for a version {version} snapshot")
        nl, nc = _HEAD_V2.unpack(f.read(_HEAD_V2.size))
        pos += _HEAD_V2.size
    n = nv + no + nl
    if n > MAX_IDS:
        raise bad(12, f"{nv} voters + {no} outgoing + {nl} learners is too many "
                      f"configuration ids (at most {MAX_IDS})")
    if nc > MAX_CONTEXT:
        raise bad(40, f"context length {nc} is over the bound {MAX_CONTEXT}")
    hlen = pos + 8 * n + nc
    if size < hlen + _TRAILER.size:
        raise bad(size, f"{size} bytes, shorter than its header ({hlen}) and trailer "
                        f"(truncated?)")
    ids = struct.unpack(f"<{n}Q", f.read(8 * n))
    context = f.read(nc)
    lists = (ids[:nv], ids[nv:nv + no], ids[nv + no:])
    if version >= VERSION_2:
        at = pos
        for what, part in zip(("voters", "outgoing", "learners"), lists):
            for k in range(1, len(part)):
                if part[k - 1] >= part[k]:
                    raise bad(at + 8 * k, f"the {what} are not strictly ascending")
            at += 8 * len(part)
    voters, outgoing, learners = (frozenset(x) for x in lists)
    problem = config_problem(voters, outgoing, learners, nc)
    if problem is not None:         # (the counts were checked: learners that are voters)
        raise bad(pos + 8 * (nv + no), f"the header holds {problem}")
    f.seek(size - _TRAILER.size)
    dlen, _crc, end = _TRAILER.unpack(f.read(_TRAILER.size))
    if end != END_MAGIC:
        raise bad(size - 4, f"bad end magic {end!r} (truncated?)")
    if hlen + dlen + _TRAILER.size != size:
        raise bad(size - _TRAILER.size, f"the trailer says {dlen} data bytes, the file "
                                        f"holds {size - hlen - _TRAILER.size}")
    meta = SnapshotMeta(index, term, voters, outgoing, learners, context)
    parsed = parse_snapshot_name(os.path.basename(path))
    if parsed is not None and parsed != (term, index):
        raise bad(20, f"its header says term {term} index {index}, its name does not")
    return meta, hlen, dlen


def file_version(path) -> int | None:
    """The format version in the header of the snapshot file ``path`` (None when it is too
    short or its magic is not a snapshot's)."""
    with open(path, "rb") as f:
        head = f.read(10)
    if len(head) < 10 or head[:8] != MAGIC:
        return None
    return struct.unpack_from("<H", head, 8)[0]


def check_versions(directory) -> None:
    """NewerFormatError for the first snapshot file of ``directory`` in a format newer than
    ``VERSION`` (a later release's); OSError when one cannot be read."""
    directory = os.fspath(directory)
    for _t, _i, name in _list_snapshots(directory):
        path = os.path.join(directory, name)
        version = file_version(path)
        if version is not None and version > VERSION:
            raise NewerFormatError(path, "snapshot file format", version, VERSION,
                                   " (header, byte offset 8)")


def _stored_crc(f, size: int) -> int:
    f.seek(size - _TRAILER.size)
    return _TRAILER.unpack(f.read(_TRAILER.size))[1]


def read_meta(path) -> SnapshotMeta:
    """The meta of a snapshot file after the cheap structural checks (no CRC)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _read_header(f, path, os.fstat(f.fileno()).st_size)[0]


def read_chunks(path, size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
    """Yield the data of a snapshot in pieces of at most ``size`` bytes, computing the CRC as
    it goes. A damaged file raises CorruptRecordError — structural damage before the first
    piece, a bad CRC after the last one: a consumer must discard what it read if it raises."""
    if size < 1:
        raise ValueError("size must be positive")
    path = os.fspath(path)
    with open(path, "rb") as f:
        fsize = os.fstat(f.fileno()).st_size
        _meta, hlen, dlen = _read_header(f, path, fsize)
        expected = _stored_crc(f, fsize)
        f.seek(0)
        crc = zlib.crc32(f.read(hlen))
        left = dlen
        while left:
            piece = f.read(min(size, left))
            if not piece:
                raise CorruptRecordError(f"snapshot {path}: shrank while being read")
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
            yield piece
        if crc != expected:
            raise CorruptRecordError(f"snapshot {path}: checksum mismatch (stored "
                                     f"{expected:#010x}, computed {crc:#010x})")


def verify(path) -> SnapshotMeta:
    """Check a snapshot file completely (structure and CRC, streamed); return its meta.
    Raises CorruptRecordError naming the file and the reason."""
    path = os.fspath(path)
    meta = read_meta(path)
    for _piece in read_chunks(path):
        pass
    return meta


def load(path) -> tuple[SnapshotMeta, bytes]:
    """``(meta, data)`` of a verified snapshot, all in memory: for small snapshots only."""
    path = os.fspath(path)
    meta = read_meta(path)
    return meta, b"".join(read_chunks(path))


class SnapshotReader(io.RawIOBase):
    """A read-only binary file object over the data of one snapshot file: reads end at the end
    of the data (the trailer is not part of it). ``meta`` and ``length`` describe it."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self._f = open(self.path, "rb")
        try:
            fsize = os.fstat(self._f.fileno()).st_size
            self.meta, hlen, self.length = _read_header(self._f, self.path, fsize)
            self._f.seek(hlen)
        except BaseException:
            self._f.close()
            raise
        self._left = self.length

    def readable(self) -> bool:
        """Always True: a reader reads."""
        return True

    def readinto(self, b) -> int:
        """Read into ``b`` up to the end of the data (0 there); the CRC is not checked."""
        if self._left <= 0:
            return 0
        mv = memoryview(b).cast("B")
        if len(mv) > self._left:
            mv = mv[:self._left]
        n = self._f.readinto(mv)
        self._left -= n
        return n

    def close(self) -> None:
        """Close the file; closing again does nothing."""
        if not self.closed:
            self._f.close()
        super().close()


def open_data(path) -> SnapshotReader:
    """A file object positioned at the data of a snapshot, bounded to it. Only the cheap
    structural checks are made (use a path ``latest()`` verified, or ``read_chunks``)."""
    return SnapshotReader(path)


# -- the store ---------------------------------------------------------------------------------

class SnapshotStore:
    """The snapshot files of one directory (see the module docstring). Opening removes leftover
    ``.tmp`` files of saves that did not finish, and refuses (NewerFormatError) a directory
    holding a snapshot file of a later release's format."""

    def __init__(self, directory, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = os.fspath(directory)
        self.keep = keep
        self._failed: str | None = None
        try:
            makedirs_durable(self.directory)    # each new level's parent fsynced
            removed = False
            for name in os.listdir(self.directory):
                if name.startswith(_NAMES.prefix) and name.endswith(_NAMES.suffix + _TMP):
                    os.unlink(os.path.join(self.directory, name))
                    log.info("removed %s: a snapshot save that did not finish",
                             os.path.join(self.directory, name))
                    removed = True
            if removed:
                fsync_dir(self.directory)
            check_versions(self.directory)
        except OSError as exc:
            raise StorageError(f"cannot prepare snapshot directory {self.directory}: "
                               f"{exc}") from exc

    # -- guards ----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._failed is not None:
            raise StorageError(f"the snapshot store in {self.directory} failed earlier and "
                               f"refuses every call: {self._failed}")

    def _fail(self, what: str, exc: OSError):
        self._failed = f"{what} failed: {exc}"
        log.error("snapshot store %s: %s", self.directory, self._failed)
        raise StorageError(f"snapshots {self.directory}: {self._failed}; the store refuses "
                           f"every later call and the node must stop") from exc

    @property
    def failed(self) -> str | None:
        """Why the store failed, or None."""
        return self._failed

    # -- listing and reading ---------------------------------------------------------------

    def names(self) -> list[str]:
        """The snapshot file names, oldest first (by term, then index)."""
        self._check()
        return [n for _t, _i, n in _list_snapshots(self.directory)]

    def paths(self) -> list[str]:
        """The snapshot file paths, oldest first."""
        return [os.path.join(self.directory, n) for n in self.names()]

    def latest(self) -> tuple[SnapshotMeta, str] | None:
        """``(meta, path)`` of the newest snapshot that passes every check (CRC included,
        streamed); damaged ones are skipped with a logged reason (one of a later release's
        format raises NewerFormatError). None if there is none."""
        self._check()
        for path in reversed(self.paths()):
            try:
                return verify(path), path
            except NewerFormatError:
                raise               # not damage: a later release's file (module docstring)
            except (CorruptRecordError, OSError) as exc:
                log.warning("skipping damaged snapshot %s: %s", path, exc)
        return None

    def open_data(self, path) -> SnapshotReader:
        """The module's ``open_data`` of ``path``, refused once the store failed."""
        self._check()
        return open_data(path)

    def read_chunks(self, path, size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """The module's ``read_chunks`` of ``path``, refused once the store failed."""
        self._check()
        return read_chunks(path, size)

    def load(self, path) -> tuple[SnapshotMeta, bytes]:
        """The module's ``load`` of ``path``, refused once the store failed."""
        self._check()
        return load(path)

    # -- saving ----------------------------------------------------------------------------

    def save(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> str:
        """Write a snapshot of ``meta`` whose data is the concatenation of ``chunks`` (an
        iterable of bytes-like objects, or one bytes-like object); returns its path.

        Durable when it returns (file and directory fsynced). Snapshots never move backwards:
        a meta below the newest existing snapshot's ``(term, index)`` is refused with
        LocalProtocolError; an equal one replaces it. An exception raised by ``chunks`` is
        passed on after the temporary file is removed (the store stays usable)."""
        self._check()
        header = encode_header(meta)        # ValueError before anything is written
        existing = _list_snapshots(self.directory)
        if existing and (meta.term, meta.index) < existing[-1][:2]:
            raise LocalProtocolError(
                f"snapshot {meta.index}@{meta.term} is older than the newest one "
                f"{existing[-1][2]}")
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = (chunks,)
        name = snapshot_name(meta.term, meta.index)
        final = os.path.join(self.directory, name)
        tmp = final + _TMP
        renamed = False
        fd = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            crc = zlib.crc32(header)
            dlen = 0
            buf = bytearray(header)
            for chunk in chunks:
                n = len(chunk) if isinstance(chunk, (bytes, bytearray)) \
                    else memoryview(chunk).nbytes
                if not n:
                    continue
                crc = zlib.crc32(chunk, crc)
                dlen += n
                if len(buf) + n <= WRITE_BUFFER:
                    buf += chunk
                    continue
                if buf:
                    write_all(fd, buf)
                    buf = bytearray()
                if n >= WRITE_BUFFER:
                    write_all(fd, chunk)
                else:
                    buf += chunk
            buf += _TRAILER.pack(dlen, crc, END_MAGIC)
            write_all(fd, buf)
            del buf
            os.fsync(fd)
            os.close(fd)
            fd = None
            os.replace(tmp, final)
            renamed = True
            fsync_dir(self.directory)
        except OSError as exc:
            self._abandon(fd, tmp, final if renamed else None)
            self._fail(f"saving snapshot {final}", exc)
        except BaseException:
            self._abandon(fd, tmp, final if renamed else None)
            raise
        self._prune()
        return final

    def adopt(self, src, meta: SnapshotMeta) -> str:
        """Take in a complete snapshot file received from a peer (``src``, already fsynced,
        in this directory): verify it fully and against ``meta``, rename it to its name,
        fsync the directory and prune. Returns the new path. CorruptRecordError for a
        damaged file or one that is not ``meta`` (index, term and the whole configuration:
        voters, outgoing, learners, context); LocalProtocolError when it is older than
        the newest snapshot held (``src`` is left for the caller to remove)."""
        self._check()
        src = os.fspath(src)
        got = verify(src)
        if (got.index, got.term) != (meta.index, meta.term):
            raise CorruptRecordError(f"snapshot {src} holds {got.index}@{got.term}, the "
                                     f"message announced {meta.index}@{meta.term}")
        if (got.voters, got.outgoing, got.learners, got.context) != (
                frozenset(meta.voters), frozenset(meta.outgoing), frozenset(meta.learners),
                meta.context):
            raise CorruptRecordError(
                f"snapshot {src} ({got.index}@{got.term}) records another configuration "
                f"than the message announced: voters {sorted(got.voters)} / "
                f"{sorted(meta.voters)}, outgoing {sorted(got.outgoing)} / "
                f"{sorted(meta.outgoing)}, learners {sorted(got.learners)} / "
                f"{sorted(meta.learners)}, context {len(got.context)} / {len(meta.context)} "
                f"bytes")
        existing = _list_snapshots(self.directory)
        if existing and (meta.term, meta.index) < existing[-1][:2]:
            raise LocalProtocolError(
                f"snapshot {meta.index}@{meta.term} is older than the newest one "
                f"{existing[-1][2]}")
        final = os.path.join(self.directory, snapshot_name(meta.term, meta.index))
        try:
            os.replace(src, final)
            fsync_dir(self.directory)
        except OSError as exc:
            self._fail(f"adopting snapshot {final}", exc)
        self._prune()
        return final

    def _abandon(self, fd, tmp: str, renamed: str | None) -> None:
        """Best effort after a failed save: close, remove the temporary (or renamed) file."""
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        for path in (tmp, renamed):
            if path is not None:
                remove_quietly(path)
        try:
            fsync_dir(self.directory)
        except OSError:
            pass

    def _prune(self) -> None:
        """Delete the snapshots older than the newest ``keep`` (by name), then fsync the
        directory. Oldest first, so a crash in between leaves the newest ones. A file already
        gone was pruned by a concurrent call (``save`` in a worker while the peer transport's
        thread adopts a received snapshot): not an error."""
        try:
            listing = _list_snapshots(self.directory)
            old = listing[:-self.keep]
            for _t, _i, name in old:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
            if old:
                fsync_dir(self.directory)
        except OSError as exc:
            self._fail("deleting old snapshots (the new snapshot itself is durable)", exc)

