"""The pure-Python twin of the Cython core (fastraft/_core.pyx): same names, same semantics.

Place in the architecture: the bottom layer. Imported only through ``fastraft.core``, which
chooses between this module and the compiled ``fastraft._core``. It does no IO and imports
nothing of fastraft but ``errors``. Every unit and property test runs against both modules,
so any behaviour described here is a promise of the extension too.

What lives here (the hot, IO-free code of fastraft):

1. ``LogRing``: the in-memory Raft log, a ring buffer of (term, payload) entries with
   contiguous indexes after a compaction point.
2. Quorum arithmetic: ``committed_index`` / ``joint_committed_index`` and ``vote_result`` /
   ``joint_vote_result``.
3. The WAL record codec: ``encode_record(s)``, ``decode_records`` and the segment header.
4. The frame codec: ``encode_frame(s)`` and ``FrameDecoder`` (strict for peers; in skip mode,
   for the client port, a frame over the limit comes out as an ``OversizedFrame`` marker, a
   name outside ``__all__``: callers tell it from a frame by its type).

Domain of inputs: indexes and terms are ints in [0, 2**63). A negative index passed to a
lookup is simply "below the log" (CompactedError); numbers that do not fit raise
OverflowError, as the extension's C conversions do. Buffers are C-contiguous bytes-like
objects; sizes and budgets are non-negative ints below 2**63. Outside that domain the two
implementations may raise different exceptions (tests/unit/test_twins_agree.py pins the
domain they share).
"""

from __future__ import annotations

import struct
from binascii import crc32

from .errors import (
    CompactedError,
    CorruptRecordError,
    FrameTooLarge,
    LocalProtocolError,
    UnavailableError,
)

__all__ = [
    "LogRing",
    "MIN_CAPACITY",
    "MAX_INDEX",
    "quorum_size",
    "committed_index",
    "joint_committed_index",
    "vote_result",
    "joint_vote_result",
    "VOTE_PENDING",
    "VOTE_LOST",
    "VOTE_WON",
    "encode_record",
    "encode_records",
    "encode_entries",
    "decode_records",
    "encode_segment_header",
    "decode_segment_header",
    "WAL_CLEAN",
    "WAL_TORN",
    "WAL_CORRUPT",
    "WAL_VERSION",
    "SEGMENT_MAGIC",
    "SEGMENT_HEADER_SIZE",
    "RECORD_HEADER_SIZE",
    "DEFAULT_MAX_RECORD_SIZE",
    "encode_frame",
    "encode_frames",
    "FrameDecoder",
    "OversizedFrame",
    "FRAME_HEADER_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
]

MAX_INDEX = 2**63 - 1

# ---------------------------------------------------------------------------------------------
# 1. The log ring buffer
# ---------------------------------------------------------------------------------------------

#: Smallest capacity of a LogRing; capacities are powers of two at or above it.
MIN_CAPACITY = 16


def _capacity_for(n: int) -> int:
    cap = MIN_CAPACITY
    while cap < n:
        cap <<= 1
    return cap


class LogRing:
    """The retained suffix of a Raft log: entries ``offset+1 .. last_index``, each a
    ``(term, payload)`` pair, in a power-of-two ring buffer with O(1) lookup by index.

    Invariants (checked by tests against a naive list model)::

        0 <= offset <= last_index == offset + len(self)
        offset_term <= term(offset + 1) <= ... <= term(last_index)   (terms never decrease)
        MIN_CAPACITY <= capacity, capacity is a power of two, len(self) <= capacity
        nbytes == sum of len(payload) over the retained entries

    ``offset`` is the compaction point: the index covered by the latest snapshot (0 for a
    fresh log). Its term stays known as ``offset_term`` (Raft needs it for the log-matching
    check right after a snapshot) but its payload is gone.

    Capacity policy (both implementations follow it exactly): grow by doubling when an append
    finds the ring full; after a truncation or compaction halve while the ring is at most a
    quarter full and above MIN_CAPACITY, so compaction really returns memory.
    """

    __slots__ = ("_terms", "_payloads", "_head", "_len", "_mask", "_offset", "_offset_term",
                 "_nbytes")

    def __init__(self, offset: int = 0, offset_term: int = 0, capacity: int = MIN_CAPACITY):
        if offset < 0 or offset_term < 0:
            raise ValueError("offset and offset_term must be >= 0")
        if offset > MAX_INDEX or offset_term > MAX_INDEX:
            raise OverflowError("offset or offset_term does not fit in 63 bits")
        cap = _capacity_for(capacity)
        self._terms = [0] * cap
        self._payloads = [None] * cap
        self._mask = cap - 1
        self._head = 0
        self._len = 0
        self._offset = offset
        self._offset_term = offset_term
        self._nbytes = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Index of the compaction point; the first retained entry is ``offset + 1``."""
        return self._offset

    @property
    def offset_term(self) -> int:
        """Term of the entry at ``offset`` (0 for a fresh log)."""
        return self._offset_term

    @property
    def first_index(self) -> int:
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + self._len

    @property
    def last_term(self) -> int:
        if self._len == 0:
            return self._offset_term
        return self._terms[(self._head + self._len - 1) & self._mask]

    @property
    def capacity(self) -> int:
        return self._mask + 1

    @property
    def nbytes(self) -> int:
        """Total size of the retained payloads in bytes."""
        return self._nbytes

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (f"LogRing(offset={self._offset}, offset_term={self._offset_term}, "
                f"last_index={self.last_index}, capacity={self.capacity})")

    # -- lookups ----------------------------------------------------------------------------

    def _range_error(self, index: int, lowest: int) -> Exception:
        if index < -MAX_INDEX - 1:
            return OverflowError(f"index {index} does not fit in 64 bits")
        if index < lowest:
            return CompactedError(
                f"index {index} is compacted: the log starts after index {self._offset}")
        if index > MAX_INDEX:
            return OverflowError(f"index {index} does not fit in 63 bits")
        return UnavailableError(
            f"index {index} is beyond the last index {self._offset + self._len}")

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; ``offset`` itself answers ``offset_term``."""
        i = index - self._offset - 1
        if 0 <= i < self._len:
            return self._terms[(self._head + i) & self._mask]
        if i == -1:
            return self._offset_term
        raise self._range_error(index, self._offset)

    def payload(self, index: int) -> bytes:
        i = index - self._offset - 1
        if 0 <= i < self._len:
            return self._payloads[(self._head + i) & self._mask]
        raise self._range_error(index, self._offset + 1)

    def entry(self, index: int) -> tuple[int, bytes]:
        """``(term, payload)`` of the entry at ``index``."""
        i = index - self._offset - 1
        if 0 <= i < self._len:
            slot = (self._head + i) & self._mask
            return (self._terms[slot], self._payloads[slot])
        raise self._range_error(index, self._offset + 1)

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Entries ``lo .. hi-1`` as ``(term, payload)`` pairs, stopping before the payload
        total would pass ``max_bytes``; the first entry is always included (etcd's rule, so
        one oversized entry still replicates). ``lo == hi`` (both within
        ``first_index .. last_index + 1``) gives an empty list."""
        if lo > hi:
            raise ValueError(f"slice bounds reversed: lo={lo} > hi={hi}")
        if lo <= self._offset:
            raise self._range_error(lo, self._offset + 1)
        if hi > self._offset + self._len + 1:
            raise self._range_error(hi - 1, self._offset + 1)
        terms = self._terms
        payloads = self._payloads
        mask = self._mask
        slot = (self._head + lo - self._offset - 1) & mask
        n = hi - lo
        out = []
        if max_bytes is None:
            for _ in range(n):
                out.append((terms[slot], payloads[slot]))
                slot = (slot + 1) & mask
            return out
        size = 0
        for _ in range(n):
            p = payloads[slot]
            size += len(p)
            if size > max_bytes and out:
                break
            out.append((terms[slot], p))
            slot = (slot + 1) & mask
        return out

    # -- mutation ---------------------------------------------------------------------------

    def _resize(self, cap: int) -> None:
        terms = self._terms
        payloads = self._payloads
        mask = self._mask
        head = self._head
        n = self._len
        new_terms = [0] * cap
        new_payloads = [None] * cap
        for i in range(n):
            slot = (head + i) & mask
            new_terms[i] = terms[slot]
            new_payloads[i] = payloads[slot]
        self._terms = new_terms
        self._payloads = new_payloads
        self._mask = cap - 1
        self._head = 0

    def _maybe_shrink(self) -> None:
        cap = self._mask + 1
        new_cap = cap
        while new_cap > MIN_CAPACITY and self._len <= new_cap // 4:
            new_cap //= 2
        if new_cap != cap:
            self._resize(new_cap)

    def append(self, term: int, payload: bytes) -> None:
        """Append one entry at ``last_index + 1``. Terms must not decrease."""
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if term < self.last_term:
            raise ValueError(f"term {term} is below the last term {self.last_term}")
        if term > MAX_INDEX:
            raise OverflowError("term does not fit in 63 bits")
        if self._offset + self._len >= MAX_INDEX:
            raise OverflowError("the log is at the last index that fits in 63 bits")
        if self._len > self._mask:
            self._resize((self._mask + 1) * 2)
        slot = (self._head + self._len) & self._mask
        self._terms[slot] = term
        self._payloads[slot] = payload
        self._len += 1
        self._nbytes += len(payload)

    def extend(self, entries) -> None:
        """Append a batch of ``(term, payload)`` pairs; all or nothing (the whole batch is
        checked before the ring changes)."""
        entries = list(entries)
        last = self.last_term
        for e in entries:
            term, payload = e
            if not isinstance(payload, bytes):
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            if term < last:
                raise ValueError(f"term {term} is below the previous term {last}")
            if term > MAX_INDEX:
                raise OverflowError("term does not fit in 63 bits")
            last = term
        self._extend_checked([e[0] for e in entries], [e[1] for e in entries])

    def extend_term(self, term: int, payloads) -> None:
        """Append a batch of payloads that all carry ``term`` (the leader's proposal path);
        all or nothing."""
        payloads = list(payloads)
        if term < self.last_term:
            raise ValueError(f"term {term} is below the last term {self.last_term}")
        if term > MAX_INDEX:
            raise OverflowError("term does not fit in 63 bits")
        for p in payloads:
            if not isinstance(p, bytes):
                raise TypeError(f"payload must be bytes, not {type(p).__name__}")
        self._extend_checked([term] * len(payloads), payloads)

    def _extend_checked(self, terms, payloads) -> None:
        n = len(payloads)
        if n > MAX_INDEX - self._offset - self._len:
            raise OverflowError("the batch would pass the last index that fits in 63 bits")
        need = self._len + n
        cap = self._mask + 1
        if need > cap:
            while cap < need:
                cap *= 2
            self._resize(cap)
        mask = self._mask
        slot = (self._head + self._len) & mask
        t = self._terms
        p = self._payloads
        size = 0
        for i in range(n):
            t[slot] = terms[i]
            p[slot] = payloads[i]
            size += len(payloads[i])
            slot = (slot + 1) & mask
        self._len = need
        self._nbytes += size

    def truncate_from(self, index: int) -> int:
        """Remove the entries ``index .. last_index`` (a conflicting suffix); returns how
        many were removed. ``index == last_index + 1`` removes nothing."""
        if index <= self._offset:
            raise self._range_error(index, self._offset + 1)
        if index > self._offset + self._len + 1:
            raise self._range_error(index, self._offset + 1)
        keep = index - self._offset - 1
        removed = self._len - keep
        mask = self._mask
        slot = (self._head + keep) & mask
        size = 0
        for _ in range(removed):
            size += len(self._payloads[slot])
            self._payloads[slot] = None
            slot = (slot + 1) & mask
        self._len = keep
        self._nbytes -= size
        self._maybe_shrink()
        return removed

    def compact(self, index: int) -> int:
        """Release the entries up to and including ``index`` (covered by a snapshot). The
        new ``offset`` is ``index`` and ``offset_term`` its term. Returns how many entries
        were released; ``index == offset`` releases nothing."""
        if index < self._offset:
            raise self._range_error(index, self._offset)
        if index > self._offset + self._len:
            raise self._range_error(index, self._offset)
        n = index - self._offset
        if n == 0:
            return 0
        new_offset_term = self.term(index)
        mask = self._mask
        slot = self._head
        size = 0
        for _ in range(n):
            size += len(self._payloads[slot])
            self._payloads[slot] = None
            slot = (slot + 1) & mask
        self._head = slot
        self._len -= n
        self._nbytes -= size
        self._offset = index
        self._offset_term = new_offset_term
        self._maybe_shrink()
        return n

    def reset(self, offset: int, offset_term: int) -> None:
        """Drop every entry and restart the log after ``offset`` (installing a snapshot)."""
        if offset < 0 or offset_term < 0:
            raise ValueError("offset and offset_term must be >= 0")
        if offset > MAX_INDEX or offset_term > MAX_INDEX:
            raise OverflowError("offset or offset_term does not fit in 63 bits")
        cap = MIN_CAPACITY
        self._terms = [0] * cap
        self._payloads = [None] * cap
        self._mask = cap - 1
        self._head = 0
        self._len = 0
        self._nbytes = 0
        self._offset = offset
        self._offset_term = offset_term


# ---------------------------------------------------------------------------------------------
# 2. Quorum arithmetic
# ---------------------------------------------------------------------------------------------

VOTE_PENDING = 0
VOTE_LOST = 1
VOTE_WON = 2


def quorum_size(n: int) -> int:
    """Votes needed among ``n`` voters: a strict majority (2 of 3, 3 of 4, ...)."""
    if n <= 0:
        raise ValueError("a quorum needs at least one voter")
    return n // 2 + 1


def committed_index(matches) -> int:
    """The highest index that a majority of voters has: the ``quorum_size(n)``-th largest of
    the voters' match indexes. ``matches`` holds one match index per voter."""
    s = sorted(matches)
    n = len(s)
    if n == 0:
        raise ValueError("committed_index of an empty voter set")
    if s[0] < 0:
        raise ValueError(f"negative match index {s[0]}")
    if s[-1] > MAX_INDEX:
        raise OverflowError("match index does not fit in 63 bits")
    return s[(n - 1) // 2]


def joint_committed_index(incoming, outgoing) -> int:
    """Commit index of a joint configuration (thesis §4.3): an index is committed only when
    a majority of *each* configuration has it. An empty ``outgoing`` means "not joint"."""
    ci = committed_index(incoming)
    if len(outgoing) == 0:
        return ci
    co = committed_index(outgoing)
    return ci if ci < co else co


def vote_result(voters, votes) -> int:
    """Tally of an election among ``voters`` given ``votes`` (voter id -> granted?).
    Votes from ids outside ``voters`` do not count. Returns VOTE_WON once a majority granted,
    VOTE_LOST once a majority can no longer be reached, VOTE_PENDING otherwise."""
    n = 0
    granted = 0
    missing = 0
    for v in voters:
        n += 1
        g = votes.get(v)
        if g is None:
            missing += 1
        elif g:
            granted += 1
    if n == 0:
        raise ValueError("vote_result of an empty voter set")
    q = n // 2 + 1
    if granted >= q:
        return VOTE_WON
    if granted + missing >= q:
        return VOTE_PENDING
    return VOTE_LOST


def joint_vote_result(incoming, outgoing, votes) -> int:
    """Tally in a joint configuration: won only when both halves won, lost as soon as either
    lost. An empty ``outgoing`` means "not joint"."""
    r1 = vote_result(incoming, votes)
    if len(outgoing) == 0:
        return r1
    r2 = vote_result(outgoing, votes)
    if r1 == r2:
        return r1
    if r1 == VOTE_LOST or r2 == VOTE_LOST:
        return VOTE_LOST
    return VOTE_PENDING


# ---------------------------------------------------------------------------------------------
# 3. The WAL record codec
# ---------------------------------------------------------------------------------------------
#
# A WAL segment file is a segment header followed by records, all little-endian.
#
# Segment header (16 bytes):
#
#     0       8       12      16
#     +-------+-------+-------+
#     | magic |version| hcrc  |     magic = b"FRAFTWAL", version = 1,
#     +-------+-------+-------+     hcrc = CRC-32 of bytes 0..12
#
# Record (32-byte header + payload):
#
#     0      4       8    9    10     12        20        28     32
#     +------+-------+----+----+------+---------+---------+------+---------------+
#     | crc  |length |type| 0  |  0   |  index  |  term   | hcrc | payload ...   |
#     +------+-------+----+----+------+---------+---------+------+---------------+
#       u32    u32    u8   u8   u16     u64       u64      u32    `length` bytes
#
#   crc   CRC-32 of the type byte followed by the payload (the record's content)
#   hcrc  CRC-32 of header bytes 0..28, so a damaged length is caught before it is trusted
#   type  1..255; 0 is never written, so a zero-filled region is never a record
#
# Checksum: CRC-32 (IEEE 802.3, the polynomial of zlib and binascii), not CRC32C. The twin
# gets it at C speed from the standard library (binascii.crc32) with no extra dependency;
# the extension computes the same function with a slicing-by-8 table. Both detect every
# burst error up to 32 bits; there is no hardware CRC-32 instruction to lose on x86.
#
# Scanning a buffer tells three endings apart:
#   WAL_CLEAN    the buffer ends exactly after a valid record;
#   WAL_TORN     the last record is incomplete: fewer than 32 header bytes remain, the
#                (valid) header announces more payload than remains, or everything left is
#                zero bytes (a preallocated or extended-but-unwritten tail);
#   WAL_CORRUPT  anything else: a header or content checksum mismatch, an impossible length
#                (over max_record_size) or non-zero reserved bits before the end.
# A torn tail may be cut off; corruption must stop the node (docs/architecture.md, "Storage rules").
# Being unsure is classed as corruption: a false "torn" would silently drop acknowledged data.

WAL_VERSION = 1
SEGMENT_MAGIC = b"FRAFTWAL"
SEGMENT_HEADER_SIZE = 16
RECORD_HEADER_SIZE = 32
DEFAULT_MAX_RECORD_SIZE = 64 * 1024 * 1024

WAL_CLEAN = 0
WAL_TORN = 1
WAL_CORRUPT = 2

_SEG_HEAD = struct.Struct("<8sI")
_U32 = struct.Struct("<I")
_REC_HEAD = struct.Struct("<IIBBHQQ")  # the first 28 bytes; hcrc follows
_REC_FULL = struct.Struct("<IIBBHQQI")
_TYPE_CRC = [crc32(bytes([t])) for t in range(256)]  # CRC-32 state after the type byte
_ZERO_HEADER = bytes(RECORD_HEADER_SIZE)


def encode_segment_header() -> bytes:
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, WAL_VERSION)
    return head + _U32.pack(crc32(head))


def decode_segment_header(buf) -> int:
    """Check a segment header at the start of ``buf`` and return its format version."""
    if len(buf) < SEGMENT_HEADER_SIZE:
        raise CorruptRecordError(
            f"segment header truncated: {len(buf)} of {SEGMENT_HEADER_SIZE} bytes")
    magic, version = _SEG_HEAD.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptRecordError(f"bad segment magic {magic!r}")
    (hcrc,) = _U32.unpack_from(buf, 12)
    if crc32(bytes(buf[:12])) != hcrc:
        raise CorruptRecordError("segment header checksum mismatch")
    if version != WAL_VERSION:
        raise CorruptRecordError(f"unsupported WAL format version {version}")
    return version


def _record_parts(rtype, index, term, payload):
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    if not 0 < rtype < 256:
        raise ValueError(f"record type {rtype} is outside 1..255")
    try:
        head = _REC_HEAD.pack(crc32(payload, _TYPE_CRC[rtype]), len(payload), rtype, 0, 0,
                              index, term)
    except struct.error:
        raise OverflowError("record index, term or length does not fit") from None
    if index > MAX_INDEX or term > MAX_INDEX:
        raise OverflowError("record index or term does not fit in 63 bits")
    return head, _U32.pack(crc32(head)), payload


def encode_record(rtype: int, index: int, term: int, payload: bytes) -> bytes:
    """One record: header and payload (see the layout above)."""
    return b"".join(_record_parts(rtype, index, term, payload))


def encode_records(records) -> bytes:
    """A batch of ``(type, index, term, payload)`` records in one buffer, ready for a single
    write and a single fsync (group commit)."""
    parts = []
    for rtype, index, term, payload in records:
        parts.extend(_record_parts(rtype, index, term, payload))
    return b"".join(parts)


def encode_entries(rtype: int, first_index: int, prev_term: int, entries,
                   max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> bytes:
    """Records of type ``rtype`` for log entries: ``entries`` are ``(term, payload)`` pairs
    stored at ``first_index, first_index + 1, ...``, each record's index its position and its
    term the entry's. The hot path of a log append: one call checks and encodes a batch.
    Raises TypeError for a payload that is not bytes (or an entry that is not a pair) and
    ValueError for a term below ``prev_term`` or the entry before it, or a payload over
    ``max_record_size``; nothing is returned then."""
    parts = []
    index = first_index
    prev = prev_term
    for term, payload in entries:
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if term < prev:
            raise ValueError(f"term {term} at {index} is below the previous {prev}")
        if len(payload) > max_record_size:
            raise ValueError(f"entry {index} of {len(payload)} bytes is over the record "
                             f"limit {max_record_size}")
        parts.extend(_record_parts(rtype, index, term, payload))
        prev = term
        index += 1
    return b"".join(parts)


def decode_records(buf, offset: int = 0, max_record_size: int = DEFAULT_MAX_RECORD_SIZE):
    """Scan records from ``buf[offset:]``.

    Returns ``(records, end, status, reason)``: the valid ``(type, index, term, payload)``
    records in order; ``end``, the offset just past the last valid record (where a torn tail
    is cut, or where corruption starts); ``status``, one of WAL_CLEAN / WAL_TORN /
    WAL_CORRUPT; and ``reason``, None when clean, else a sentence naming the offset."""
    mv = memoryview(buf).cast("B")
    n = len(mv)
    if offset < 0 or offset > n:
        raise ValueError(f"offset {offset} outside the buffer of {n} bytes")
    if max_record_size < 0:
        raise ValueError("max_record_size must be >= 0")
    pos = offset
    records = []
    unpack = _REC_FULL.unpack_from
    while pos < n:
        if n - pos < RECORD_HEADER_SIZE:
            if mv[pos:].tobytes().count(0) == n - pos:
                return records, pos, WAL_TORN, f"zero-filled tail at offset {pos}"
            return records, pos, WAL_TORN, (
                f"incomplete record header at offset {pos}: {n - pos} of "
                f"{RECORD_HEADER_SIZE} bytes")
        ccrc, length, rtype, r1, r2, index, term, hcrc = unpack(mv, pos)
        if crc32(mv[pos:pos + 28]) != hcrc:
            if mv[pos:].tobytes().count(0) == n - pos:
                return records, pos, WAL_TORN, f"zero-filled tail at offset {pos}"
            return records, pos, WAL_CORRUPT, f"record header checksum mismatch at offset {pos}"
        if rtype == 0 or r1 or r2 or index > MAX_INDEX or term > MAX_INDEX:
            return records, pos, WAL_CORRUPT, f"invalid record header fields at offset {pos}"
        if length > max_record_size:
            return records, pos, WAL_CORRUPT, (
                f"impossible record length {length} at offset {pos} "
                f"(limit {max_record_size})")
        start = pos + RECORD_HEADER_SIZE
        stop = start + length
        if stop > n:
            return records, pos, WAL_TORN, (
                f"incomplete record at offset {pos}: payload needs {length} bytes, "
                f"{n - start} remain")
        payload = mv[start:stop].tobytes()
        if crc32(payload, _TYPE_CRC[rtype]) != ccrc:
            return records, pos, WAL_CORRUPT, f"record checksum mismatch at offset {pos}"
        records.append((rtype, index, term, payload))
        pos = stop
    return records, pos, WAL_CLEAN, None


# ---------------------------------------------------------------------------------------------
# 4. The frame codec
# ---------------------------------------------------------------------------------------------
#
# A network frame is a 4-byte little-endian unsigned payload length followed by the payload
# (which fastraft.codec fills with msgpack). A strict decoder refuses a frame whose announced
# length is over its limit as soon as the 4 length bytes arrive, before buffering any of it; a
# skipping one hands out its first bytes and drops the rest as it arrives.

FRAME_HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024


def encode_frame(payload) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame payload must be bytes-like, not {type(payload).__name__}")
    n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if n > 0xFFFFFFFF:
        raise OverflowError("frame payload over 4 GiB")
    return _U32.pack(n) + bytes(payload)


def encode_frames(payloads) -> bytes:
    """Several frames in one buffer, for one write."""
    return b"".join([encode_frame(p) for p in payloads])


#: How many bytes of an oversized frame's body a skipping FrameDecoder hands out.
OVERSIZED_HEAD = 64


class OversizedFrame:
    """What a skipping FrameDecoder returns in place of a frame over its limit: the announced
    body ``size`` and ``head``, the first ``min(size, OVERSIZED_HEAD)`` bytes of the body (enough
    to read a request id). Not a ``bytes``: callers tell it apart by type."""

    __slots__ = ("size", "head")

    def __init__(self, size: int, head: bytes) -> None:
        self.size = size
        self.head = head

    def __eq__(self, other) -> bool:
        return (type(other) is type(self) and other.size == self.size
                and other.head == self.head)

    __hash__ = None

    def __repr__(self) -> str:
        return f"OversizedFrame(size={self.size}, head={self.head!r})"


class FrameDecoder:
    """Splits a byte stream into frames: ``feed(data)`` returns the frames completed by
    ``data`` and keeps the remainder.

    Strict mode (the default, for peers): a length over ``max_frame_size`` raises
    FrameTooLarge as soon as the 4 length bytes arrive; the decoder is then dead (the
    connection must be closed) and any further ``feed`` raises LocalProtocolError. Frames
    completed earlier in the same ``feed`` call as the oversized one are discarded with it:
    the connection is being closed anyway.

    Skip mode (``skip_oversized=True``, for the client port, which answers such a request and
    keeps the connection): once the length and the first ``min(size, OVERSIZED_HEAD)`` body
    bytes of an oversized frame have arrived, ``feed`` returns an ``OversizedFrame(size,
    head)`` in its place, in stream order among the frames; the rest of its body is dropped
    as it arrives (``skipping`` counts what is still to drop), never buffered, and decoding
    goes on after it."""

    __slots__ = ("_buf", "_max", "_failed", "_skip_mode", "_skip")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 skip_oversized: bool = False) -> None:
        if not 0 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be in 0 .. 2**32-1")
        self._buf = bytearray()
        self._max = max_frame_size
        self._failed = False
        self._skip_mode = bool(skip_oversized)
        self._skip = 0

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def skip_oversized(self) -> bool:
        return self._skip_mode

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf)

    @property
    def skipping(self) -> int:
        """Bytes of an oversized frame's body still to be dropped (skip mode)."""
        return self._skip

    @property
    def partial_head(self) -> bytes | None:
        """Skip mode, while the head of an oversized frame is incomplete: the body bytes
        received so far (so a caller can give up on it early); None otherwise."""
        buf = self._buf
        if (self._skip_mode and len(buf) >= FRAME_HEADER_SIZE
                and _U32.unpack_from(buf, 0)[0] > self._max):
            return bytes(buf[FRAME_HEADER_SIZE:])
        return None

    def feed(self, data) -> list:
        if self._failed:
            raise LocalProtocolError("FrameDecoder used after a protocol error")
        if self._skip:
            mv = memoryview(data).cast("B")
            k = min(self._skip, len(mv))
            self._skip -= k
            data = mv[k:]
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        n = len(buf)
        limit = self._max
        unpack = _U32.unpack_from
        while n - pos >= FRAME_HEADER_SIZE:
            (size,) = unpack(buf, pos)
            if size > limit:
                if not self._skip_mode:
                    self._failed = True
                    del buf[:]
                    raise FrameTooLarge(size, limit)
                h = min(size, OVERSIZED_HEAD)
                if n - pos - FRAME_HEADER_SIZE < h:
                    break                       # wait for the head
                pos += FRAME_HEADER_SIZE
                frames.append(OversizedFrame(size, bytes(buf[pos:pos + h])))
                pos += h
                rest = size - h
                if rest > n - pos:
                    self._skip = rest - (n - pos)
                    pos = n
                    break
                pos += rest
                continue
            end = pos + FRAME_HEADER_SIZE + size
            if end > n:
                break
            frames.append(bytes(buf[pos + FRAME_HEADER_SIZE:end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames
