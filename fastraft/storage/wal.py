"""The write-ahead log backend: segment files of core-codec records, recovery and repair.

Place in the architecture: the default backend of ``fastraft.storage`` (the ``LogStore``
protocol of ``base.py``), used by the runtime. It does the IO; the byte layout of records and
segment headers is the core's (``fastraft.core``: ``encode_records`` / ``decode_records``),
the message types are ``fastraft.raft.messages``; it never imports the engine's logic and
never msgpack. The durable log's logic lives in this module; the rules every backend
shares (the checks of append, compact and marks; the lifecycle) are ``base.StoreBase``'s.

Files: a directory of segments ``wal-<16 hex seq>-<16 hex index>.log`` (``seq`` counts from 0
and orders the segments; ``index`` is the first index the segment was opened for, for
operators only). Each segment is the core segment header, then records::

    ENTRY       index/term of the entry, payload = the entry's payload
    HARD_STATE  index = commit, term = term; payload = <QQQ term, vote, commit
    TRUNCATE    index = i: "the log after index i is cancelled" (files are never rewritten)
    SNAPSHOT    index/term of the snapshot mark; payload (below). Flag KEEP: the log held
                the mark's entry when it was saved and its entries were kept (else the log
                was reset)

The SNAPSHOT payload (little-endian; the record framing and the segment header's version
are the core's, so the payload carries its own layout in its flags)::

    offset         size      field
    0              1         flags     bit 0 KEEP (1), bit 1 V2 (2); other bits must be 0
    1              4         nv        u32, number of voters (incoming, when joint)
    5              4         no        u32, number of outgoing voters (joint configuration)
    -- V2 (written since learners and the context are stored) --
    9              4         nl        u32, number of learners
    13             4         nc        u32, context length (at most 1 MiB)
    17             8 * nv    voters    u64 each, strictly ascending
    ...            8 * no    outgoing  u64 each, strictly ascending
    ...            8 * nl    learners  u64 each, strictly ascending, none a voter
    17 + 8*(nv+no+nl)  nc    context   the meta's opaque context bytes
    -- without V2 (the first layout, still read: learners empty, context b"") --
    9              8 * nv    voters    u64 each
    9 + 8*nv       8 * no    outgoing  u64 each

The payload must be exactly that long; more than 65536 ids, a longer context, learners that
are voters, or ids out of order in a V2 payload are damage.

Versions (docs/architecture.md, "Versions and compatibility"). The segment header's u32
version is ``WAL_VERSION`` (1): a segment of a higher version (its magic and header checksum
valid) was written by a later release and is refused with ``NewerFormatError`` before
anything is read or cut (a node exits with status 2; ``repair`` refuses to touch the WAL).
The mark payload's layout version is told by its flags: layout 1 has no V2 bit, layout 2
(``MARK_LAYOUT``, written) sets bit 1; a later layout N sets bit N-1. A record whose
checksums hold and whose flags carry a bit this release does not know is such a later layout:
``NewerFormatError`` too, naming the file and the record's offset. A new record type or any
other change of the record framing comes with a new segment version.

A new segment starts (written as ``.tmp``, fsynced, renamed, directory fsynced) with a copy of
the current snapshot mark and hard state, so deleting older segments never loses them.
Records are gathered in memory and written to the open segment (an O_APPEND descriptor) by
one ``os.write`` at ``sync()``, followed by one ``os.fsync``: one write and one fsync per
group commit however many appends and hard states it covers (more than ``WRITE_BUFFER``
pending bytes are written early). A segment that passed ``segment_size`` is written, fsynced
and closed before the next record opens a new one.

Recovery replays every segment in order: the state is the entries written and not cancelled
by a later truncation marker or snapshot reset, the last hard state and the last snapshot
mark; the restarted log starts right after the mark. A torn tail of the LAST segment (a crash
in mid-write) is cut off there. Anything else — a bad checksum anywhere, a torn record before
the last segment, a bad segment header, a missing segment, records that contradict each other
— raises CorruptRecordError naming the file and the byte offset, and ``repair`` (an explicit
operator action, never automatic) truncates the WAL at that point.

``compact(index)`` syncs, then deletes the oldest segments while every entry ever written in
them is at or below ``index`` (never the open one), then fsyncs the directory. So every record
about an index above the final snapshot mark is still there, and the replay may be lenient
below it only. The replay rules, record by record (anything else is damage):

    ENTRY i      i == last + 1: appended. i > last + 1 (a gap) only if i - 1 <= the final
                 mark (entries deleted by compaction): the log restarts after i - 1.
                 i <= last (no truncation marker) or i <= the current mark: damage.
    TRUNCATE i   the log after i is dropped (i below the current mark: damage).
    SNAPSHOT     KEEP and within the log: kept (its term must match where known); otherwise
                 (a reset, or the first mark copy of a compacted WAL) the log restarts after it.
    HARD_STATE   the last one wins.

The restarted log is the one after the final mark; its terms must not decrease.

A failed write or fsync (ENOSPC, EIO, ...) marks the store failed: it cuts the open segment
back to its last synced length (best effort, so a reopen does not resurrect data that the
kernel may yet lose), raises StorageError, and refuses every later call.
"""

from __future__ import annotations

import os
import struct
import zlib
from enum import IntEnum
from typing import NamedTuple

from ..core import (
    DEFAULT_MAX_RECORD_SIZE,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    WAL_CORRUPT,
    WAL_VERSION,
    WAL_TORN,
    LogRing,
    decode_records,
    decode_segment_header,
    encode_entries,
    encode_records,
    encode_segment_header,
)
from ..datadir import NewerFormatError
from ..errors import CorruptRecordError, LocalProtocolError, StorageError
from ..raft.messages import EntryBatch, HardState, SnapshotMeta
from ._files import HexPairNames, fsync_dir, makedirs_durable, truncate_file, write_all
from .base import (
    MAX_MARK_CONTEXT,
    MAX_MARK_IDS,
    RecoveredState,
    StoreBase,
    check_new_mark,
    config_problem,
    mark_keeps_log,
    own_mark,
)

__all__ = ["RecordType", "Record", "WalStore", "recover", "repair", "scan", "ScannedRecord",
           "ScannedSegment", "segment_name", "parse_segment_name", "DEFAULT_SEGMENT_SIZE",
           "SNAP_KEEP", "SNAP_V2", "encode_snapshot_mark", "decode_snapshot_mark",
           "describe_payload", "WAL_VERSION", "MARK_LAYOUT", "segment_version",
           "check_segment_versions"]


class RecordType(IntEnum):
    """WAL record types (the core record's type byte). Append only: never renumber."""

    ENTRY = 1
    HARD_STATE = 2
    TRUNCATE = 3
    SNAPSHOT = 4


ENTRY = RecordType.ENTRY.value
HARD_STATE = RecordType.HARD_STATE.value
TRUNCATE = RecordType.TRUNCATE.value
SNAPSHOT = RecordType.SNAPSHOT.value
_TYPE_CODES = frozenset(t.value for t in RecordType)


class Record(NamedTuple):
    """One record as the core's codec writes it (``encode_records``). Appends bypass it: the
    core encodes a batch of entries straight from its ``(term, payload)`` pairs
    (``encode_entries``), and ``decode_records`` gives plain ``(type, index, term, payload)``
    tuples, unpacked where they are read."""

    type: int
    index: int
    term: int
    payload: bytes

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
#: Pending record bytes written to the segment before the next sync asks for it.
WRITE_BUFFER = 4 * 1024 * 1024
SNAP_KEEP = 1
#: SNAPSHOT payload flag: the V2 layout (learners and context; module docstring).
SNAP_V2 = 2
#: The layout version of the SNAPSHOT payloads this release writes (module docstring).
MARK_LAYOUT = 2

_HS = struct.Struct("<QQQ")
_SNAP_HEAD = struct.Struct("<BII")     # flags, #voters, #outgoing
_SNAP_V2 = struct.Struct("<II")        # #learners, context length (V2 only)
_SEGMENTS = HexPairNames("wal-", ".log")


# -- payloads and names ------------------------------------------------------------------------

def encode_hard_state(hs: HardState) -> bytes:
    """The HARD_STATE payload of ``hs``; ValueError when a field does not fit in 64 bits."""
    try:
        return _HS.pack(hs.term, hs.vote, hs.commit)
    except struct.error:
        raise ValueError(f"hard state fields out of range: {hs}") from None


def decode_hard_state(payload: bytes) -> HardState:
    """The hard state of a HARD_STATE payload; CorruptRecordError for a malformed one."""
    if len(payload) != _HS.size:
        raise CorruptRecordError(f"hard state payload of {len(payload)} bytes, not {_HS.size}")
    return HardState(*_HS.unpack(payload))


def encode_snapshot_mark(meta: SnapshotMeta, keep: bool) -> bytes:
    """The SNAPSHOT payload of ``meta`` (``keep``: the log was kept), in the V2 layout;
    ValueError when an id does not fit in 64 bits or the meta cannot be stored
    (``base.own_mark``)."""
    meta = own_mark(meta)
    voters, outgoing, learners = sorted(meta.voters), sorted(meta.outgoing), \
        sorted(meta.learners)
    ids = voters + outgoing + learners
    flags = SNAP_V2 | (SNAP_KEEP if keep else 0)
    try:
        return (_SNAP_HEAD.pack(flags, len(voters), len(outgoing))
                + _SNAP_V2.pack(len(learners), len(meta.context))
                + struct.pack(f"<{len(ids)}Q", *ids) + meta.context)
    except struct.error:
        raise ValueError(f"snapshot configuration ids out of range: {meta}") from None


def decode_snapshot_mark(index: int, term: int, payload: bytes) -> tuple[SnapshotMeta, bool]:
    """``(meta, keep)`` of a SNAPSHOT record, either layout (module docstring);
    CorruptRecordError saying what is wrong with a malformed payload (the replay adds the
    file and offset)."""
    size = len(payload)
    if size < _SNAP_HEAD.size:
        raise CorruptRecordError(f"snapshot mark payload of {size} bytes is truncated "
                                 f"(its header alone is {_SNAP_HEAD.size})")
    flags, nv, no = _SNAP_HEAD.unpack_from(payload)
    unknown = flags & ~(SNAP_KEEP | SNAP_V2)
    if unknown:                 # layout N sets bit N-1 (module docstring)
        raise NewerFormatError("the WAL", "snapshot mark layout", unknown.bit_length(),
                               MARK_LAYOUT, f" (unknown flags {flags:#x})")
    nl = nc = 0
    pos = _SNAP_HEAD.size
    if flags & SNAP_V2:
        if size < pos + _SNAP_V2.size:
            raise CorruptRecordError(f"snapshot mark payload of {size} bytes is truncated "
                                     f"(its header alone is {pos + _SNAP_V2.size})")
        nl, nc = _SNAP_V2.unpack_from(payload, pos)
        pos += _SNAP_V2.size
    n = nv + no + nl
    if n > MAX_MARK_IDS:
        raise CorruptRecordError(f"snapshot mark counts {nv} voters, {no} outgoing and {nl} "
                                 f"learners: more than {MAX_MARK_IDS} ids")
    if nc > MAX_MARK_CONTEXT:
        raise CorruptRecordError(f"snapshot mark context length {nc} is over the bound "
                                 f"{MAX_MARK_CONTEXT}")
    want = pos + 8 * n + nc
    if size != want:
        raise CorruptRecordError(f"snapshot mark payload of {size} bytes, its counts say "
                                 f"{want} ({'truncated' if size < want else 'trailing bytes'})")
    ids = struct.unpack_from(f"<{n}Q", payload, pos)
    lists = (ids[:nv], ids[nv:nv + no], ids[nv + no:])
    if flags & SNAP_V2:
        for what, part in zip(("voters", "outgoing", "learners"), lists):
            if any(a >= b for a, b in zip(part, part[1:])):
                raise CorruptRecordError(f"snapshot mark {what} are not strictly ascending")
    voters, outgoing, learners = (frozenset(x) for x in lists)
    context = bytes(payload[pos + 8 * n:])
    problem = config_problem(voters, outgoing, learners, nc)
    if problem is not None:
        raise CorruptRecordError(f"snapshot mark holds {problem}")
    return SnapshotMeta(index, term, voters, outgoing, learners, context), \
        bool(flags & SNAP_KEEP)


def _id_list(ids) -> str:
    return ",".join(map(str, sorted(ids))) or "-"


def describe_payload(rtype: int, payload: bytes) -> str:
    """What an operator reads of a record's payload (``scan``, ``fastraft wal-dump``): the
    configuration of a SNAPSHOT mark (voters, outgoing, learners, the context's length, KEEP)
    and the fields of a HARD_STATE; "" for the other records; the decoding error of a
    malformed payload."""
    try:
        if rtype == SNAPSHOT:
            meta, keep = decode_snapshot_mark(0, 0, payload)
            return (f"voters={_id_list(meta.voters)} outgoing={_id_list(meta.outgoing)} "
                    f"learners={_id_list(meta.learners)} context={len(meta.context)}B"
                    + (" keep" if keep else " reset"))
        if rtype == HARD_STATE:
            hs = decode_hard_state(payload)
            return f"term={hs.term} vote={hs.vote} commit={hs.commit}"
    except CorruptRecordError as exc:
        return f"invalid payload: {exc}"
    return ""


#: ``segment_name(seq, index)``: the file name of segment ``seq`` opened for ``index``.
segment_name = _SEGMENTS.name
#: ``parse_segment_name(name)``: ``(seq, index)`` of a segment file name, or None.
parse_segment_name = _SEGMENTS.parse
#: ``_list_segments(directory)``: ``(seq, index, name)`` of every segment, oldest first.
_list_segments = _SEGMENTS.listing


def segment_version(head: bytes) -> int | None:
    """The format version in a segment header whose magic and checksum are valid (the
    first ``SEGMENT_HEADER_SIZE`` bytes of ``head``), else None (damage, for
    ``decode_segment_header`` to describe)."""
    if len(head) < SEGMENT_HEADER_SIZE or head[:8] != SEGMENT_MAGIC:
        return None
    version, hcrc = struct.unpack_from("<II", head, 8)
    return version if zlib.crc32(head[:12]) == hcrc else None


def check_segment_versions(directory: str) -> None:
    """NewerFormatError for the first segment of ``directory`` written in a format newer
    than ``WAL_VERSION``: before anything is read, cut or repaired."""
    for _seq, _index, name in _list_segments(directory):
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            version = segment_version(f.read(SEGMENT_HEADER_SIZE))
        if version is not None and version > WAL_VERSION:
            raise NewerFormatError(path, "WAL segment format", version, WAL_VERSION,
                                   " (header, byte offset 8)")


def _check_mark_layouts(path: str, recs: list) -> None:
    """NewerFormatError for the first SNAPSHOT record of ``recs`` (a segment's records, as
    decoded: their checksums hold) whose payload is of a later layout than ``MARK_LAYOUT``."""
    off = SEGMENT_HEADER_SIZE
    for rtype, _index, _term, payload in recs:
        if rtype == SNAPSHOT and payload and payload[0] & ~(SNAP_KEEP | SNAP_V2):
            try:
                decode_snapshot_mark(0, 0, payload)
            except NewerFormatError as exc:
                raise exc.at(path, f" (SNAPSHOT record at byte offset {off}){exc.where}") \
                    from None
            except CorruptRecordError:
                pass                # damage: the replay names it
        off += RECORD_HEADER_SIZE + len(payload)


def _damage(directory: str, name: str, offset: int, reason: str) -> CorruptRecordError:
    path = os.path.join(directory, name)
    err = CorruptRecordError(
        f"WAL damaged in {path} at byte offset {offset}: {reason}. The node must not start "
        f"on it. If this replica's log may be given up from there (its peers will catch it up), "
        f"truncate the WAL at that point: `fastraft wal-repair {directory} {name} {offset}` "
        f"(or fastraft.storage.wal.repair({directory!r}, {name!r}, {offset})) — it cuts the "
        f"file there and moves the removed bytes and later segments aside as *.damaged files")
    err.path = path
    err.file = name
    err.offset = offset
    return err


class _Segment:
    __slots__ = ("seq", "name", "hi", "first")

    def __init__(self, seq: int, name: str, hi: int = 0, first: int = 0) -> None:
        self.seq = seq
        self.name = name
        self.hi = hi            # highest entry index ever written in it (0: none)
        self.first = first      # the log's last index + 1 when it was opened (its name)


# -- recovery ----------------------------------------------------------------------------------

def _read_segments(directory: str, max_record_size: int, notes: list):
    """Decode every segment; cut a torn tail of the last one. Returns the segments, each
    one's records as the core decodes them (``(type, index, term, payload)``, starting at
    ``SEGMENT_HEADER_SIZE``) and the length of the last segment."""
    check_segment_versions(directory)
    listing = _list_segments(directory)
    segs: list[_Segment] = []
    seg_records: list[list] = []
    end = 0
    for k, (seq, first, name) in enumerate(listing):
        if k and seq != listing[k - 1][0] + 1:
            raise _damage(directory, name, 0,
                          f"segment {listing[k - 1][0] + 1:016x} is missing before this one")
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        try:
            decode_segment_header(data)
        except CorruptRecordError as exc:
            raise _damage(directory, name, 0, str(exc)) from None
        recs, end, status, reason = decode_records(data, SEGMENT_HEADER_SIZE, max_record_size)
        _check_mark_layouts(path, recs)     # before a torn tail is cut
        last = k == len(listing) - 1
        if status == WAL_CORRUPT or (status == WAL_TORN and not last):
            raise _damage(directory, name, end, reason)
        if status == WAL_TORN:
            truncate_file(path, end)
            notes.append(f"cut a torn tail off {path} at offset {end} ({len(data) - end} "
                         f"bytes): {reason}")
        segs.append(_Segment(seq, name, first=first))
        seg_records.append(recs)
    return segs, seg_records, end


def _replay(directory: str, segs: list, seg_records: list):
    """Rebuild (ring, hard state, snapshot mark) from the decoded records (see the module
    docstring); fills in each segment's ``hi``."""
    final = 0                   # the index of the last snapshot mark written
    for recs in seg_records:
        for rtype, index, _term, _payload in recs:
            if rtype == SNAPSHOT:
                final = index
    rp = _Replay(directory, final)
    for k, seg in enumerate(segs):
        recs = seg_records[k]
        if recs:
            rp.open_segment(k, seg)
        off = SEGMENT_HEADER_SIZE
        for rtype, index, term, payload in recs:
            if rtype == ENTRY:
                rp.entry(seg, off, index, term, payload)
            elif rtype == TRUNCATE:
                rp.truncate(seg, off, index)
            elif rtype == HARD_STATE:
                rp.hard_state(seg, off, payload)
            elif rtype == SNAPSHOT:
                rp.snapshot(seg, off, index, term, payload)
            else:
                raise rp.damage(seg, off, f"unknown record type {rtype}")
            off += RECORD_HEADER_SIZE + len(payload)
    return rp.result(segs)


class _Replay:
    """The state recovery rebuilds, record by record, by the rules of the module docstring:
    the log is ``log`` (``(term, payload)`` pairs) after ``base``, whose term is ``base_term``
    (None: unknown, after a gap left by compaction); the mark and hard state so far. Each
    method checks one record (or a segment's start) and raises the damage it finds."""

    __slots__ = ("directory", "final", "base", "base_term", "log", "mark", "mark_index",
                 "hs", "head_hs")

    def __init__(self, directory: str, final: int) -> None:
        self.directory = directory
        self.final = final          # the final mark: the replay may be lenient below it only
        self.base = 0
        self.base_term: int | None = None
        self.log: list = []
        self.mark: SnapshotMeta | None = None
        self.mark_index = 0
        self.hs = HardState()
        self.head_hs: HardState | None = None   # the hard state a segment must open with

    def damage(self, seg: _Segment, off: int, reason: str) -> CorruptRecordError:
        return _damage(self.directory, seg.name, off, reason)

    def open_segment(self, k: int, seg: _Segment) -> None:
        """Segment ``k`` starts: it was opened when the log ended at ``seg.first - 1``;
        anything else means records at the end of the previous segment (cut at a record
        boundary, which decodes clean) or whole segments are missing, or a segment is out of
        place. Its first HARD_STATE is a copy of the last one before it."""
        last = self.base + len(self.log)
        if k and last != seg.first - 1:
            raise self.damage(seg, 0, f"this segment was opened after index {seg.first - 1} "
                                      f"but the segments before it end at index {last}: "
                                      f"records are missing or a segment is out of place")
        self.head_hs = self.hs if k else None
        if not k and seg.first - 1 > self.final:
            raise self.damage(seg, 0, f"the oldest segment was opened after index "
                                      f"{seg.first - 1} but no snapshot mark covers the "
                                      f"entries before it: older segments are missing")

    def entry(self, seg: _Segment, off: int, index: int, term: int, payload: bytes) -> None:
        last = self.base + len(self.log)
        if index != last + 1 or index <= self.mark_index:
            mi = self.mark_index
            if index <= mi:
                raise self.damage(seg, off, f"entry {index} at or below the snapshot mark {mi}")
            if index <= last:
                raise self.damage(seg, off, f"entry {index} overwrites the log (last {last}) "
                                            f"without a truncation marker")
            if index - 1 > self.final:
                raise self.damage(seg, off, f"entry {index} follows {last}: entries are missing")
            self.base, self.base_term, self.log = index - 1, None, []
        self.log.append((term, payload))
        if index > seg.hi:
            seg.hi = index

    def truncate(self, seg: _Segment, off: int, index: int) -> None:
        if index < self.mark_index:
            raise self.damage(seg, off, f"truncation at {index} below the snapshot mark "
                                        f"{self.mark_index}")
        if index >= self.base:
            del self.log[index - self.base:]
        else:
            self.base, self.base_term, self.log = index, None, []

    def hard_state(self, seg: _Segment, off: int, payload: bytes) -> None:
        try:
            hs = decode_hard_state(payload)
        except CorruptRecordError as exc:
            raise self.damage(seg, off, str(exc)) from None
        self.hs = hs
        head = self.head_hs
        if head is not None:
            if hs != head:
                raise self.damage(seg, off, f"this segment opens with hard state {tuple(hs)} "
                                            f"but the segments before it end with "
                                            f"{tuple(head)}: a segment is out of place")
            self.head_hs = None

    def snapshot(self, seg: _Segment, off: int, index: int, term: int, payload: bytes) -> None:
        try:
            meta, keep = decode_snapshot_mark(index, term, payload)
        except NewerFormatError as exc:
            raise exc.at(os.path.join(self.directory, seg.name),
                         f" (SNAPSHOT record at byte offset {off}){exc.where}") from None
        except CorruptRecordError as exc:
            raise self.damage(seg, off, str(exc)) from None
        mi = self.mark_index
        if index < mi:
            raise self.damage(seg, off, f"snapshot mark {index} is below the earlier mark {mi}")
        base = self.base
        if keep and index <= base + len(self.log):
            # Kept when saved. Below a gap's base (segments deleted by compaction) the
            # entry is gone, but the log after it is still the one the mark kept.
            known = self.log[index - base - 1][0] if index > base else (
                self.base_term if index == base else None)
            if known is not None and known != term:
                raise self.damage(seg, off, f"snapshot mark {index}@{term} does not match the "
                                            f"log's term {known} there")
            if index == base:
                self.base_term = term
        else:       # a reset; or, at the start of a compacted WAL, the first mark copy
            self.base, self.base_term, self.log = index, term, []
        self.mark, self.mark_index = meta, index

    def result(self, segs: list) -> tuple[LogRing, HardState, SnapshotMeta | None]:
        """The restarted log (the one after the final mark), the hard state and the mark."""
        mark, base, log = self.mark, self.base, self.log
        s = mark.index if mark is not None else 0
        t = mark.term if mark is not None else 0
        if base > s or s > base + len(log):
            where = segs[-1].name if segs else "?"
            raise _damage(self.directory, where, 0, f"the log after replay ({base}.."
                                                    f"{base + len(log)}) does not continue "
                                                    f"the snapshot mark {s}")
        ring = LogRing(s, t)
        try:
            ring.extend(log[s - base:])
        except ValueError as exc:
            raise _damage(self.directory, segs[-1].name, 0, f"replayed log is inconsistent: "
                                                            f"{exc}") from None
        return ring, self.hs, mark


# -- the store ---------------------------------------------------------------------------------

class WalStore(StoreBase):
    """The WAL ``LogStore``. Build it with ``WalStore.open(directory)``."""

    def __init__(self, directory, segment_size, max_record_size, segs, ring, hs, mark, fd,
                 size, notes) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.max_record_size = max_record_size
        self.recovery_notes: list[str] = notes   # what recovery did (cut torn tails)
        self._segs: list[_Segment] = segs
        self._ring = ring
        self._hs = hs
        self._mark = mark
        self._fd = fd
        self._size = size           # length of the open segment
        self._synced_size = size    # its length at the last successful fsync
        self._dirty = False         # written since the last fsync
        self._pending: list = []    # encoded records not yet handed to os.write
        self._pending_bytes = 0
        self._failed: str | None = None
        self._closed = False

    @classmethod
    def open(cls, directory, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
             max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> WalStore:
        """Open (creating it if needed) and recover the WAL in ``directory``. Raises
        CorruptRecordError on damage (see ``repair``), StorageError when it cannot write."""
        directory = os.fspath(directory)
        if segment_size < 1:
            raise ValueError("segment_size must be positive")
        try:
            makedirs_durable(directory)     # each new level's parent fsynced
            removed = False
            for name in os.listdir(directory):
                if name.endswith(_SEGMENTS.suffix + ".tmp"):  # a rotation that did not finish
                    os.unlink(os.path.join(directory, name))
                    removed = True
            if removed:
                fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot prepare WAL directory {directory}: {exc}") from exc
        notes: list[str] = []
        segs, seg_records, end = _read_segments(directory, max_record_size, notes)
        ring, hs, mark = _replay(directory, segs, seg_records)
        store = cls(directory, segment_size, max_record_size, segs, ring, hs, mark, None, 0,
                    notes)
        if segs:
            try:
                store._fd = os.open(os.path.join(directory, segs[-1].name),
                                    os.O_WRONLY | os.O_APPEND)
            except OSError as exc:
                raise StorageError(f"cannot open the WAL segment for writing: {exc}") from exc
            store._size = store._synced_size = end
        else:
            store._new_segment(0)
        return store

    # -- guards and IO -------------------------------------------------------------------------

    def _name(self) -> str:
        return f"the WAL in {self.directory}"

    def _fail(self, what: str, exc: OSError):
        fd = self._fd
        self._failed = f"{what} failed: {exc}"
        if fd is not None:
            try:        # best effort: do not let a reopen see bytes the kernel may still lose
                os.ftruncate(fd, self._synced_size)
                os.fsync(fd)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = None
        raise StorageError(f"WAL {self.directory}: {self._failed}; the store refuses every "
                           f"later call and the node must stop (nothing unsynced was "
                           f"acknowledged)") from exc

    def _head_records(self) -> list[Record]:
        """The copies of the mark and the hard state a new segment opens with."""
        recs = []
        if self._mark is not None:
            m = self._mark
            recs.append(Record(SNAPSHOT, m.index, m.term, encode_snapshot_mark(m, True)))
        hs = self._hs
        recs.append(Record(HARD_STATE, hs.commit, hs.term, encode_hard_state(hs)))
        return recs

    def _new_segment(self, seq: int) -> None:
        """Create segment ``seq`` durably (tmp, fsync, rename, directory fsync) and make it
        the open one. The previous one must be synced."""
        name = segment_name(seq, self._ring.last_index + 1)
        path = os.path.join(self.directory, name)
        buf = encode_segment_header() + encode_records(self._head_records())
        fd = None
        try:
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                         0o644)
            write_all(fd, buf)
            os.fsync(fd)
            os.rename(path + ".tmp", path)
            fsync_dir(self.directory)
        except OSError as exc:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fail(f"creating segment {name}", exc)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segs.append(_Segment(seq, name))
        self._size = self._synced_size = len(buf)
        self._dirty = False

    def _write(self, records: list[Record]) -> None:
        self._write_buf(encode_records(records))

    def _write_buf(self, buf: bytes) -> None:
        if self._size >= self.segment_size:
            self._fsync_current()
            self._new_segment(self._segs[-1].seq + 1)
        self._pending.append(buf)
        self._pending_bytes += len(buf)
        self._size += len(buf)
        self._dirty = True
        if self._pending_bytes >= WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        """Hand the pending records to the kernel in one write."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self._fail("write", exc)

    def _fsync_current(self) -> None:
        self._flush()
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail("fsync", exc)
            self._synced_size = self._size
            self._dirty = False

    # -- LogStore ------------------------------------------------------------------------------

    def append(self, batch: EntryBatch) -> None:
        """Write ``batch``, discarding stored entries >= ``batch.first_index`` first (by a
        truncation marker when there are any)."""
        self._check()
        ring = self._ring
        fi = batch.first_index
        last = ring.last_index
        self._check_batch(fi, last)
        entries = batch.entries if type(batch.entries) is list else list(batch.entries)
        try:
            buf = encode_entries(ENTRY, fi, ring.term(fi - 1), entries, self.max_record_size)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if fi <= last:
            buf = encode_records([Record(TRUNCATE, fi - 1, 0, b"")]) + buf
        elif not buf:
            return
        self._write_buf(buf)
        if fi <= last:
            ring.truncate_from(fi)
        ring.extend(entries)
        if entries:
            seg = self._segs[-1]
            seg.hi = max(seg.hi, fi + len(entries) - 1)

    def save_hard_state(self, hs: HardState) -> None:
        """Write ``hs`` (a HARD_STATE record; durable at the next sync)."""
        self._check()
        if type(hs) is not HardState:       # (a HardState is immutable: kept as it is)
            hs = HardState(*hs)
        self._write([Record(HARD_STATE, hs.commit, hs.term, encode_hard_state(hs))])
        self._hs = hs

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None:
        """Record that a snapshot covers the log up to ``meta.index`` (see base.py: the
        entries are kept when the log holds ``meta.index`` at ``meta.term``, else reset)."""
        self._check()
        ring = self._ring
        check_new_mark(self._mark, meta)
        meta = self._own_mark(meta)
        keep = mark_keeps_log(ring.offset + 1, ring.last_index, ring.term, meta)
        self._write([Record(SNAPSHOT, meta.index, meta.term, encode_snapshot_mark(meta, keep))])
        if not keep:
            ring.reset(meta.index, meta.term)
        self._mark = meta

    def flush(self) -> None:
        """Hand the buffered records to the kernel without an fsync (the unsafe
        ``fsync = false`` mode: they survive a process crash, not a power loss)."""
        self._check()
        self._flush()

    def sync(self) -> None:
        """One fsync covering everything written since the last one. (Segment files are
        created and deleted with their own directory fsync, so none is owed here.)"""
        self._check()
        self._fsync_current()

    @property
    def first_index(self) -> int:
        """The first index held (the compaction point + 1)."""
        self._check()
        return self._ring.offset + 1

    @property
    def last_index(self) -> int:
        """The last index written (synced or not)."""
        self._check()
        return self._ring.last_index

    def term(self, index: int) -> int:
        """Term at ``index`` (from memory: every retained entry is kept in a LogRing)."""
        self._check()
        return self._ring.term(index)

    def entries(self, lo: int, hi: int) -> list:
        """Entries ``lo .. hi - 1`` as ``(term, payload)`` pairs, from memory."""
        self._check()
        return self._ring.slice(lo, hi)

    def compact(self, index: int) -> None:
        """Release the entries up to ``index`` (at most the snapshot mark): sync, then delete
        the oldest segments holding no entry above ``index``, then fsync the directory."""
        self._check()
        self._check_compact(index)
        self.sync()     # the mark and the head copies must be durable before files go
        if index > self._ring.offset:
            self._ring.compact(index)
        k = 0
        while k < len(self._segs) - 1 and self._segs[k].hi <= index:
            k += 1
        if not k:
            return
        try:
            for seg in self._segs[:k]:      # oldest first: a crash leaves a suffix
                os.unlink(os.path.join(self.directory, seg.name))
            del self._segs[:k]
            fsync_dir(self.directory)
        except OSError as exc:
            self._fail("deleting compacted segments", exc)

    def segment_names(self) -> list[str]:
        """The segment files in use, oldest first."""
        return [s.name for s in self._segs]

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ScannedRecord(NamedTuple):
    """One record as ``scan`` reports it (what ``fastraft wal-dump`` prints)."""

    file: str
    offset: int
    type: str           # RecordType name, or "TYPE<n>" for an unknown code
    index: int
    term: int
    size: int           # payload bytes
    detail: str = ""    # what the payload says (``describe_payload``): a SNAPSHOT mark's
                        # voters, outgoing, learners and context length; a HARD_STATE's fields


class ScannedSegment(NamedTuple):
    """One segment file as ``scan`` reports it: its valid records and why they end."""

    file: str
    size: int
    records: list       # of ScannedRecord
    status: str         # "clean", "torn", "corrupt" or "newer" (a later release's format)
    reason: str | None  # None when clean, else where and why the valid records end


def scan(directory, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> list[ScannedSegment]:
    """Read every segment of ``directory`` without changing anything (no tail is cut): the
    records up to where each file stops being valid. The inspector behind ``wal-dump``."""
    directory = os.fspath(directory)
    out = []
    for _seq, _index, name in _list_segments(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        version = segment_version(data)
        if version is not None and version > WAL_VERSION:
            out.append(ScannedSegment(name, len(data), [], "newer", str(NewerFormatError(
                name, "WAL segment format", version, WAL_VERSION, " (header)"))))
            continue
        try:
            decode_segment_header(data)
        except CorruptRecordError as exc:
            out.append(ScannedSegment(name, len(data), [], "corrupt", f"offset 0: {exc}"))
            continue
        recs, _end, status, reason = decode_records(data, SEGMENT_HEADER_SIZE, max_record_size)
        pos = SEGMENT_HEADER_SIZE
        rows = []
        for rtype, index, term, payload in recs:
            kind = RecordType(rtype).name if rtype in _TYPE_CODES else f"TYPE{rtype}"
            rows.append(ScannedRecord(name, pos, kind, index, term, len(payload),
                                      describe_payload(rtype, payload)))
            pos += RECORD_HEADER_SIZE + len(payload)
        label = {WAL_TORN: "torn", WAL_CORRUPT: "corrupt"}.get(status, "clean")
        out.append(ScannedSegment(name, len(data), rows, label, reason))
    return out


def recover(directory, **kw) -> tuple[WalStore, RecoveredState]:
    """Open the WAL in ``directory`` and return it with the state a node restarts from."""
    store = WalStore.open(directory, **kw)
    return store, store.recovered()


def repair(directory, file: str, offset: int) -> list[str]:
    """Truncate the WAL at byte ``offset`` of segment ``file`` (as named by a
    CorruptRecordError): an explicit operator action that gives up everything after that point.

    The removed bytes are kept aside as ``<file>.cut-<offset>.damaged``; later segments are
    renamed to ``<name>.damaged`` (no longer part of the WAL); a file cut inside its header is
    moved aside whole. Returns what was done, one line per action. NewerFormatError (a
    ValueError) and nothing done when a segment is of a later release's format."""
    directory = os.fspath(directory)
    parsed = parse_segment_name(file)
    if parsed is None or os.path.basename(file) != file:
        raise ValueError(f"{file!r} is not a WAL segment file name")
    check_segment_versions(directory)   # never cut what a later release wrote
    path = os.path.join(directory, file)
    size = os.path.getsize(path)
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} is outside {path} ({size} bytes)")
    done = []
    if offset < SEGMENT_HEADER_SIZE:
        os.rename(path, path + ".damaged")
        done.append(f"moved {path} aside to {path}.damaged")
    else:
        with open(path, "rb") as f:
            f.seek(offset)
            tail = f.read()
        aside = f"{path}.cut-{offset}.damaged"
        with open(aside, "wb") as f:
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
        truncate_file(path, offset)
        done.append(f"truncated {path} at {offset}; the {len(tail)} bytes cut are in {aside}")
    for seq, _index, name in _list_segments(directory):
        if seq > parsed[0]:
            later = os.path.join(directory, name)
            os.rename(later, later + ".damaged")
            done.append(f"moved {later} aside to {later}.damaged")
    fsync_dir(directory)
    return done
