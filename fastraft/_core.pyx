# cython: language_level=3, embedsignature=True, cdivision=True
"""The Cython core of fastraft: the log ring buffer, quorum arithmetic, the WAL record codec
and the frame codec, compiled.

Place in the architecture: the bottom layer, imported only through ``fastraft.core``. Its
twin ``fastraft/_core_py.py`` has the same names and semantics and holds the specification
(docstrings, the WAL layout diagram); this file repeats only what is specific to C. No IO.

bounds checks: the module keeps Cython's defaults (boundscheck, wraparound on) and works on
raw C pointers where it matters; every pointer access below is preceded by the explicit range
check that makes it safe, noted where it happens.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memmove

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

DEF C_MAX_INDEX = 0x7FFFFFFFFFFFFFFF
MAX_INDEX = C_MAX_INDEX

include "_core_bytes.pxi"   # little-endian loads/stores, CRC-32 (slicing-by-16)


# ---------------------------------------------------------------------------------------------
# 1. The log ring buffer
# ---------------------------------------------------------------------------------------------

DEF C_MIN_CAPACITY = 16
MIN_CAPACITY = C_MIN_CAPACITY

cdef object _check_positions(object offset, object offset_term):
    """Constructor and reset() arguments, checked with the twin's errors in the twin's order
    (rare calls: Python comparisons are fine here)."""
    if offset < 0 or offset_term < 0:
        raise ValueError("offset and offset_term must be >= 0")
    if offset > C_MAX_INDEX or offset_term > C_MAX_INDEX:
        raise OverflowError("offset or offset_term does not fit in 63 bits")


cdef int64_t _as_term(object term, int64_t last) except? -1:
    """A term to append after ``last``: the twin's checks in the twin's order (decreasing
    term: ValueError, then too big: OverflowError)."""
    cdef int64_t t
    try:
        t = term
    except OverflowError:
        if term < 0:
            raise ValueError(f"term {term} is below the last term {last}") from None
        raise OverflowError("term does not fit in 63 bits") from None
    if t < last:
        raise ValueError(f"term {t} is below the last term {last}")
    return t


def _range_error_py(index, lowest, offset, last):
    """The twin's LogRing._range_error for bounds that do not fit in 64 bits."""
    if index < -C_MAX_INDEX - 1:
        return OverflowError(f"index {index} does not fit in 64 bits")
    if index < lowest:
        return CompactedError(f"index {index} is compacted: the log starts after index {offset}")
    if index > C_MAX_INDEX:
        return OverflowError(f"index {index} does not fit in 63 bits")
    return UnavailableError(f"index {index} is beyond the last index {last}")


ctypedef struct Slot:
    int64_t term
    PyObject* payload       # an owned reference to a bytes object, or NULL when unused


cdef extern from *:
    """
    typedef struct { int64_t term; PyObject *payload; } FrSlot;

    /* Build [(term, payload), ...] for n slots from `start`. Plain C because this loop is
     * the cost of a replication slice: one 2-tuple per entry, nothing else. Consecutive
     * entries nearly always share a term, so the int object of the previous term is reused.
     * The tuples hold only an int and a bytes object, which cannot form a reference cycle,
     * so they are untracked by the cyclic GC at once (CPython would untrack them at its next
     * collection anyway) and a big slice does not trigger or lengthen collections. */
    static PyObject *fr_pairs(const FrSlot *slots, Py_ssize_t mask, Py_ssize_t start,
                              Py_ssize_t n) {
        PyObject *out = PyList_New(n);
        PyObject *term_obj = NULL;
        int64_t term_val = -1;
        Py_ssize_t k, slot = start;
        if (out == NULL) return NULL;
        for (k = 0; k < n; k++) {
            const FrSlot *s = &slots[slot];
            PyObject *pair;
            if (term_obj == NULL || s->term != term_val) {
                Py_XDECREF(term_obj);
                term_val = s->term;
                term_obj = PyLong_FromLongLong(term_val);
                if (term_obj == NULL) { Py_DECREF(out); return NULL; }
            }
            pair = PyTuple_New(2);
            if (pair == NULL) { Py_DECREF(term_obj); Py_DECREF(out); return NULL; }
            Py_INCREF(term_obj);
            PyTuple_SET_ITEM(pair, 0, term_obj);
            Py_INCREF(s->payload);
            PyTuple_SET_ITEM(pair, 1, s->payload);
            PyObject_GC_UnTrack(pair);
            PyList_SET_ITEM(out, k, pair);
            slot = (slot + 1) & mask;
        }
        Py_XDECREF(term_obj);
        return out;
    }
    """
    ctypedef struct FrSlot:
        pass
    list fr_pairs(const FrSlot* slots, Py_ssize_t mask, Py_ssize_t start, Py_ssize_t n)


cdef inline list _fr_pairs(Slot* slots, Py_ssize_t mask, Py_ssize_t start, Py_ssize_t n):
    return fr_pairs(<const FrSlot*>slots, mask, start, n)


cdef class LogRing:
    """The retained suffix of a Raft log; see fastraft/_core_py.py for the full contract.

    Layout: one array of 16-byte slots (term, payload pointer) whose length is a power of
    two, so an index maps to a slot with one subtraction and one mask. The payloads are the
    caller's bytes objects, referenced, never copied.
    """

    cdef Slot* _slots
    cdef Py_ssize_t _mask       # capacity - 1; capacity is a power of two >= MIN_CAPACITY
    cdef Py_ssize_t _head       # slot of the entry at offset + 1
    cdef Py_ssize_t _len        # 0 <= _len <= capacity
    cdef int64_t _offset        # 0 <= _offset, _offset + _len <= MAX_INDEX
    cdef int64_t _offset_term
    cdef Py_ssize_t _nbytes     # sum of PyBytes_GET_SIZE over the retained payloads

    def __cinit__(self, offset=0, offset_term=0, Py_ssize_t capacity=C_MIN_CAPACITY):
        _check_positions(offset, offset_term)
        cdef int64_t off = offset
        cdef int64_t off_term = offset_term
        cdef Py_ssize_t cap = C_MIN_CAPACITY
        while cap < capacity:
            cap <<= 1
        self._slots = <Slot*>PyMem_Malloc(cap * sizeof(Slot))
        if self._slots == NULL:
            raise MemoryError()
        self._mask = cap - 1
        self._head = 0
        self._len = 0
        self._offset = off
        self._offset_term = off_term
        self._nbytes = 0

    def __dealloc__(self):
        if self._slots != NULL:
            self._release(self._head, self._len)
            PyMem_Free(self._slots)
            self._slots = NULL

    # -- internals --------------------------------------------------------------------------

    cdef Py_ssize_t _release(self, Py_ssize_t slot, Py_ssize_t n) noexcept:
        """Drop the payload references of ``n`` slots from ``slot``; return their bytes."""
        cdef Py_ssize_t size = 0
        cdef PyObject* p
        cdef Py_ssize_t k
        for k in range(n):
            p = self._slots[slot].payload
            size += PyBytes_GET_SIZE(<object>p)
            self._slots[slot].payload = NULL
            Py_DECREF(<object>p)
            slot = (slot + 1) & self._mask
        return size

    cdef int _resize(self, Py_ssize_t cap) except -1:
        """Move the entries, in order, into a fresh array of ``cap`` slots (cap >= _len)."""
        cdef Slot* fresh = <Slot*>PyMem_Malloc(cap * sizeof(Slot))
        if fresh == NULL:
            raise MemoryError()
        cdef Py_ssize_t first = self._mask + 1 - self._head   # slots from head to the array end
        if first >= self._len:
            memcpy(fresh, self._slots + self._head, self._len * sizeof(Slot))
        else:
            memcpy(fresh, self._slots + self._head, first * sizeof(Slot))
            memcpy(fresh + first, self._slots, (self._len - first) * sizeof(Slot))
        PyMem_Free(self._slots)
        self._slots = fresh
        self._mask = cap - 1
        self._head = 0
        return 0

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._mask + 1
        if need <= cap:
            return 0
        while cap < need:
            cap <<= 1
        return self._resize(cap)

    cdef int _maybe_shrink(self) except -1:
        cdef Py_ssize_t cap = self._mask + 1
        cdef Py_ssize_t new_cap = cap
        while new_cap > C_MIN_CAPACITY and self._len <= new_cap // 4:
            new_cap //= 2
        if new_cap != cap:
            self._resize(new_cap)
        return 0

    cdef object _range_error(self, int64_t index, bint below):
        # ``below``: the index is under the retained range (decided by the caller, which
        # compares without computing offset + 1, so nothing wraps at the top of int64).
        if below:
            return CompactedError(
                f"index {index} is compacted: the log starts after index {self._offset}")
        return UnavailableError(
            f"index {index} is beyond the last index {self._offset + self._len}")

    cdef inline int64_t _last_term(self) noexcept:
        if self._len == 0:
            return self._offset_term
        return self._slots[(self._head + self._len - 1) & self._mask].term

    # -- properties -------------------------------------------------------------------------

    @property
    def offset(self):
        return self._offset

    @property
    def offset_term(self):
        return self._offset_term

    @property
    def first_index(self):
        return (<object>self._offset) + 1    # exact even at offset == MAX_INDEX (no wrap)

    @property
    def last_index(self):
        return self._offset + self._len

    @property
    def last_term(self):
        return self._last_term()

    @property
    def capacity(self):
        return self._mask + 1

    @property
    def nbytes(self):
        return self._nbytes

    def __len__(self):
        return self._len

    def __repr__(self):
        return (f"LogRing(offset={self._offset}, offset_term={self._offset_term}, "
                f"last_index={self._offset + self._len}, capacity={self._mask + 1})")

    # -- lookups ----------------------------------------------------------------------------
    # Each lookup checks offset < index <= offset + len before touching a slot; the slot is
    # then (head + index - offset - 1) & mask, always inside the array.

    def term(self, int64_t index):
        if index > self._offset and index <= self._offset + self._len:
            return self._slots[(self._head + (index - self._offset - 1)) & self._mask].term
        if index == self._offset:
            return self._offset_term
        raise self._range_error(index, index < self._offset)

    def payload(self, int64_t index):
        if index > self._offset and index <= self._offset + self._len:
            return <object>self._slots[(self._head + (index - self._offset - 1)) & self._mask].payload
        raise self._range_error(index, index <= self._offset)

    def entry(self, int64_t index):
        cdef Slot* s
        if index > self._offset and index <= self._offset + self._len:
            s = &self._slots[(self._head + (index - self._offset - 1)) & self._mask]
            return (s.term, <object>s.payload)
        raise self._range_error(index, index <= self._offset)

    def slice(self, lo_obj, hi_obj, max_bytes=None):
        cdef int64_t lo, hi
        try:
            lo = lo_obj
            hi = hi_obj
        except OverflowError:
            return self._slice_huge(lo_obj, hi_obj, max_bytes)
        if lo > hi:
            raise ValueError(f"slice bounds reversed: lo={lo} > hi={hi}")
        if lo <= self._offset:
            raise self._range_error(lo, True)
        if hi - 1 > self._offset + self._len:        # (offset + len + 1 could wrap)
            raise self._range_error(hi - 1, False)
        return self._slice(lo, <Py_ssize_t>(hi - lo), max_bytes)

    cdef list _slice(self, int64_t lo, Py_ssize_t n, object max_bytes):
        """``n`` entries from ``lo`` (already checked to be inside the log)."""
        cdef Py_ssize_t start = (self._head + (lo - self._offset - 1)) & self._mask
        cdef Py_ssize_t slot, k
        cdef int64_t budget, size
        # First pass: how many entries fit the budget (at least one).
        if max_bytes is not None and n > 1:
            budget = max_bytes
            size = PyBytes_GET_SIZE(<object>self._slots[start].payload)
            slot = (start + 1) & self._mask
            for k in range(1, n):
                size += PyBytes_GET_SIZE(<object>self._slots[slot].payload)
                if size > budget:
                    n = k
                    break
                slot = (slot + 1) & self._mask
        # Second pass: build the list (in C, see _fr_pairs above).
        return _fr_pairs(self._slots, self._mask, start, n)

    def _slice_huge(self, lo, hi, max_bytes):
        """slice() with a bound beyond int64 (hi == 2**63 is valid when the log ends at
        MAX_INDEX): the twin's checks with Python ints, then the ordinary path."""
        first = (<object>self._offset) + 1
        last = (<object>self._offset) + self._len
        if lo > hi:
            raise ValueError(f"slice bounds reversed: lo={lo} > hi={hi}")
        if lo <= self._offset:
            raise _range_error_py(lo, first, self._offset, last)
        if hi > last + 1:
            raise _range_error_py(hi - 1, first, self._offset, last)
        if lo == hi:
            return []     # lo may itself be 2**63 here
        return self._slice(lo, hi - lo, max_bytes)

    # -- mutation ---------------------------------------------------------------------------

    def append(self, term_obj, payload):
        if not PyBytes_Check(payload):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        cdef int64_t term = _as_term(term_obj, self._last_term())
        if self._offset + self._len >= C_MAX_INDEX:
            raise OverflowError("the log is at the last index that fits in 63 bits")
        if self._len > self._mask:
            self._resize((self._mask + 1) * 2)
        cdef Slot* s = &self._slots[(self._head + self._len) & self._mask]
        s.term = term
        Py_INCREF(payload)
        s.payload = <PyObject*>payload
        self._len += 1
        self._nbytes += PyBytes_GET_SIZE(payload)

    def extend(self, entries):
        cdef list items = entries if type(entries) is list else list(entries)
        cdef Py_ssize_t n = len(items)
        cdef Py_ssize_t k
        cdef int64_t last = self._last_term()
        cdef int64_t term
        cdef object e, payload, term_obj
        # Pass 1 validates everything, so a bad entry leaves the ring untouched.
        for k in range(n):
            e = items[k]
            term_obj, payload = e
            if not PyBytes_Check(payload):
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            last = _as_term(term_obj, last)
        if n > C_MAX_INDEX - self._offset - self._len:
            raise OverflowError("the batch would pass the last index that fits in 63 bits")
        self._reserve(self._len + n)
        cdef Py_ssize_t slot = (self._head + self._len) & self._mask
        cdef Py_ssize_t size = 0
        for k in range(n):
            e = items[k]
            term, payload = e
            self._slots[slot].term = term
            Py_INCREF(payload)
            self._slots[slot].payload = <PyObject*>payload
            size += PyBytes_GET_SIZE(payload)
            slot = (slot + 1) & self._mask
        self._len += n
        self._nbytes += size

    def extend_term(self, term_obj, payloads):
        cdef list items = payloads if type(payloads) is list else list(payloads)
        cdef Py_ssize_t n = len(items)
        cdef Py_ssize_t k
        cdef int64_t term = _as_term(term_obj, self._last_term())
        cdef object p
        for k in range(n):
            p = items[k]
            if not PyBytes_Check(p):
                raise TypeError(f"payload must be bytes, not {type(p).__name__}")
        if n > C_MAX_INDEX - self._offset - self._len:
            raise OverflowError("the batch would pass the last index that fits in 63 bits")
        self._reserve(self._len + n)
        cdef Py_ssize_t slot = (self._head + self._len) & self._mask
        cdef Py_ssize_t size = 0
        for k in range(n):
            p = items[k]
            self._slots[slot].term = term
            Py_INCREF(p)
            self._slots[slot].payload = <PyObject*>p
            size += PyBytes_GET_SIZE(p)
            slot = (slot + 1) & self._mask
        self._len += n
        self._nbytes += size

    def truncate_from(self, index_obj):
        cdef int64_t index
        try:
            index = index_obj
        except OverflowError:
            # Only last_index + 1 == 2**63 is valid here (removes nothing); the rest errs
            # exactly as in the twin.
            if index_obj == (<object>self._offset) + self._len + 1:
                return 0
            raise _range_error_py(index_obj, (<object>self._offset) + 1, self._offset,
                                  (<object>self._offset) + self._len) from None
        if index <= self._offset:
            raise self._range_error(index, True)
        if index - 1 > self._offset + self._len:     # (offset + len + 1 could wrap)
            raise self._range_error(index, False)
        cdef Py_ssize_t keep = <Py_ssize_t>(index - self._offset - 1)
        cdef Py_ssize_t removed = self._len - keep
        self._nbytes -= self._release((self._head + keep) & self._mask, removed)
        self._len = keep
        self._maybe_shrink()
        return removed

    def compact(self, int64_t index):
        if index < self._offset:
            raise self._range_error(index, index < self._offset)
        if index > self._offset + self._len:
            raise self._range_error(index, index < self._offset)
        cdef Py_ssize_t n = <Py_ssize_t>(index - self._offset)
        if n == 0:
            return 0
        cdef int64_t new_offset_term = self._slots[(self._head + n - 1) & self._mask].term
        self._nbytes -= self._release(self._head, n)
        self._head = (self._head + n) & self._mask
        self._len -= n
        self._offset = index
        self._offset_term = new_offset_term
        self._maybe_shrink()
        return n

    def reset(self, offset_obj, offset_term_obj):
        _check_positions(offset_obj, offset_term_obj)
        cdef int64_t offset = offset_obj
        cdef int64_t offset_term = offset_term_obj
        cdef Slot* fresh = <Slot*>PyMem_Malloc(C_MIN_CAPACITY * sizeof(Slot))
        if fresh == NULL:
            raise MemoryError()
        self._release(self._head, self._len)
        PyMem_Free(self._slots)
        self._slots = fresh
        self._mask = C_MIN_CAPACITY - 1
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

DEF STACK_VOTERS = 16   # up to 16 voters sort on the stack with no allocation (etcd uses 7)


def quorum_size(Py_ssize_t n):
    if n <= 0:
        raise ValueError("a quorum needs at least one voter")
    return n // 2 + 1


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


cdef int64_t _committed(object matches) except -2:
    """The ((n-1)//2)-th smallest match index: the index a strict majority has reached."""
    cdef object seq = matches if (type(matches) is list or type(matches) is tuple) else list(matches)
    cdef Py_ssize_t n = len(seq)
    cdef int64_t stack[STACK_VOTERS]
    cdef int64_t* a = stack
    cdef int64_t v, lowest
    cdef Py_ssize_t i, j
    if n == 0:
        raise ValueError("committed_index of an empty voter set")
    if n > STACK_VOTERS:
        a = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if a == NULL:
            raise MemoryError()
    try:
        try:
            for i in range(n):
                a[i] = seq[i]
        except OverflowError:
            # A value beyond int64: decide as the twin does (any negative: ValueError first).
            s = sorted(seq)
            if s[0] < 0:
                raise ValueError(f"negative match index {s[0]}") from None
            raise OverflowError("match index does not fit in 63 bits") from None
        if n <= STACK_VOTERS:
            # Insertion sort: for a handful of voters it beats qsort's call overhead.
            for i in range(1, n):
                v = a[i]
                j = i - 1
                while j >= 0 and a[j] > v:
                    a[j + 1] = a[j]
                    j -= 1
                a[j + 1] = v
        else:
            qsort(a, n, sizeof(int64_t), _cmp_i64)
        lowest = a[0]
        if lowest < 0:
            raise ValueError(f"negative match index {lowest}")
        return a[(n - 1) // 2]
    finally:
        if a != stack:
            PyMem_Free(a)


def committed_index(matches):
    return _committed(matches)


def joint_committed_index(incoming, outgoing):
    cdef int64_t ci = _committed(incoming)
    if len(outgoing) == 0:
        return ci
    cdef int64_t co = _committed(outgoing)
    return ci if ci < co else co


cdef int _vote(object voters, object votes) except -1:
    cdef Py_ssize_t n = 0, granted = 0, missing = 0, q
    cdef object g
    cdef bint is_dict = type(votes) is dict
    for v in voters:
        n += 1
        g = (<dict>votes).get(v) if is_dict else votes.get(v)
        if g is None:
            missing += 1
        elif g:
            granted += 1
    if n == 0:
        raise ValueError("vote_result of an empty voter set")
    q = n // 2 + 1
    if granted >= q:
        return 2  # VOTE_WON
    if granted + missing >= q:
        return 0  # VOTE_PENDING
    return 1      # VOTE_LOST


def vote_result(voters, votes):
    return _vote(voters, votes)


def joint_vote_result(incoming, outgoing, votes):
    cdef int r1 = _vote(incoming, votes)
    if len(outgoing) == 0:
        return r1
    cdef int r2 = _vote(outgoing, votes)
    if r1 == r2:
        return r1
    if r1 == 1 or r2 == 1:
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# 3. The WAL record codec (layout diagram in fastraft/_core_py.py)
# ---------------------------------------------------------------------------------------------

DEF C_RECORD_HEADER_SIZE = 32
DEF C_SEGMENT_HEADER_SIZE = 16

WAL_VERSION = 1
SEGMENT_MAGIC = b"FRAFTWAL"
SEGMENT_HEADER_SIZE = C_SEGMENT_HEADER_SIZE
RECORD_HEADER_SIZE = C_RECORD_HEADER_SIZE
DEFAULT_MAX_RECORD_SIZE = 64 * 1024 * 1024

WAL_CLEAN = 0
WAL_TORN = 1
WAL_CORRUPT = 2

ctypedef struct RecordSpec:
    uint64_t index
    uint64_t term
    const uint8_t* data
    Py_ssize_t size
    uint8_t rtype


def encode_segment_header():
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C_SEGMENT_HEADER_SIZE)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, <const char*>b"FRAFTWAL", 8)
    _st32(p + 8, WAL_VERSION)
    _st32(p + 12, _crc32(0, p, 12))
    return out


def decode_segment_header(buf):
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    cdef const uint8_t* p = <const uint8_t*>view.buf
    cdef uint32_t version
    try:
        if view.len < C_SEGMENT_HEADER_SIZE:
            raise CorruptRecordError(
                f"segment header truncated: {view.len} of {C_SEGMENT_HEADER_SIZE} bytes")
        magic = PyBytes_FromStringAndSize(<const char*>p, 8)
        if magic != SEGMENT_MAGIC:
            raise CorruptRecordError(f"bad segment magic {magic!r}")
        if _crc32(0, p, 12) != _ld32(p + 12):
            raise CorruptRecordError("segment header checksum mismatch")
        version = _ld32(p + 8)
        if version != WAL_VERSION:
            raise CorruptRecordError(f"unsupported WAL format version {version}")
        return version
    finally:
        PyBuffer_Release(&view)


cdef inline void _record_fields(uint8_t* p, const RecordSpec* r) noexcept nogil:
    """A record's header but its two checksums (bytes 0..4 and 28..32), and its payload."""
    _st32(p + 4, <uint32_t>r.size)
    p[8] = r.rtype
    p[9] = 0
    p[10] = 0
    p[11] = 0
    _st64(p + 12, r.index)
    _st64(p + 20, r.term)
    memcpy(p + C_RECORD_HEADER_SIZE, r.data, <size_t>r.size)


cdef inline void _write_record(uint8_t* p, const RecordSpec* r) noexcept nogil:
    _record_fields(p, r)
    _st32(p, _crc32(_crc32(0, &r.rtype, 1), r.data, <size_t>r.size))
    _st32(p + 28, _crc32(0, p, 28))


cdef inline void _write_record_pair(uint8_t* p, const RecordSpec* r,
                                    uint8_t* q, const RecordSpec* s) noexcept nogil:
    """Two records (at p and q) at once: each checksum of one is computed beside the same
    checksum of the other (_crc32_pair), which nearly halves a batch's CRC time."""
    cdef uint32_t a = _crc32(0, &r.rtype, 1)
    cdef uint32_t b = _crc32(0, &s.rtype, 1)
    _record_fields(p, r)
    _record_fields(q, s)
    _crc32_pair(&a, r.data, <size_t>r.size, &b, s.data, <size_t>s.size)
    _st32(p, a)
    _st32(q, b)
    a = 0
    b = 0
    _crc32_pair(&a, p, 28, &b, q, 28)
    _st32(p + 28, a)
    _st32(q + 28, b)


cdef int _spec(RecordSpec* r, object rtype, object index, object term, object payload) except -1:
    if not PyBytes_Check(payload):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    cdef long t
    try:
        t = rtype
    except OverflowError:
        raise ValueError(f"record type {rtype} is outside 1..255") from None
    if t <= 0 or t >= 256:
        raise ValueError(f"record type {t} is outside 1..255")
    r.rtype = <uint8_t>t
    r.index = index      # a negative or > 2**64 value raises OverflowError here
    r.term = term
    if r.index > C_MAX_INDEX or r.term > C_MAX_INDEX:
        raise OverflowError("record index or term does not fit in 63 bits")
    r.size = PyBytes_GET_SIZE(payload)
    if <uint64_t>r.size > 0xFFFFFFFFu:
        raise OverflowError("record index, term or length does not fit")
    r.data = <const uint8_t*>PyBytes_AS_STRING(payload)
    return 0


def encode_record(rtype, index, term, payload):
    cdef RecordSpec r
    _spec(&r, rtype, index, term, payload)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C_RECORD_HEADER_SIZE + r.size)
    _write_record(<uint8_t*>PyBytes_AS_STRING(out), &r)
    return out


cdef bytes _write_records(const RecordSpec* specs, Py_ssize_t n, Py_ssize_t total):
    """The second pass of the encoders: every record written straight into one buffer, two
    at a time (their checksums side by side)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    cdef uint8_t* q
    with nogil:
        k = 0
        while k + 1 < n:
            q = p + C_RECORD_HEADER_SIZE + specs[k].size
            _write_record_pair(p, &specs[k], q, &specs[k + 1])
            p = q + C_RECORD_HEADER_SIZE + specs[k + 1].size
            k += 2
        if k < n:
            _write_record(p, &specs[k])
    return out


def encode_records(records):
    """One pass checks every record and sizes the output; a second writes headers, payloads
    and checksums straight into the result buffer (no intermediate copies)."""
    cdef list items = records if type(records) is list else list(records)
    cdef Py_ssize_t n = len(items)
    cdef Py_ssize_t k, total = 0
    cdef RecordSpec* specs = <RecordSpec*>PyMem_Malloc((n if n else 1) * sizeof(RecordSpec))
    if specs == NULL:
        raise MemoryError()
    try:
        for k in range(n):
            rtype, index, term, payload = items[k]
            _spec(&specs[k], rtype, index, term, payload)
            total += C_RECORD_HEADER_SIZE + specs[k].size
        # The payload pointers in specs stay valid: ``items`` keeps every payload alive.
        return _write_records(specs, n, total)
    finally:
        PyMem_Free(specs)


def encode_entries(rtype, first_index, prev_term, entries,
                   Py_ssize_t max_record_size=DEFAULT_MAX_RECORD_SIZE):
    """One pass checks the entries and sizes the output (the same checks, in the same order,
    as the twin), a second writes the records straight into the result buffer."""
    cdef list items = entries if type(entries) is list else list(entries)
    cdef Py_ssize_t n = len(items)
    cdef Py_ssize_t k, total = 0
    cdef RecordSpec* specs = <RecordSpec*>PyMem_Malloc((n if n else 1) * sizeof(RecordSpec))
    if specs == NULL:
        raise MemoryError()
    cdef object pair, term, payload
    cdef object prev = prev_term
    cdef object index = first_index
    try:
        for k in range(n):
            pair = items[k]
            if type(pair) is tuple and PyTuple_GET_SIZE(pair) == 2:
                term = <object>PyTuple_GET_ITEM(pair, 0)
                payload = <object>PyTuple_GET_ITEM(pair, 1)
            else:
                term, payload = pair        # the TypeError/ValueError of unpacking
            if not PyBytes_Check(payload) or type(payload) is not bytes:
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            if term < prev:
                raise ValueError(f"term {term} at {index} is below the previous {prev}")
            if PyBytes_GET_SIZE(payload) > max_record_size:
                raise ValueError(f"entry {index} of {PyBytes_GET_SIZE(payload)} bytes is over "
                                 f"the record limit {max_record_size}")
            _spec(&specs[k], rtype, index, term, payload)
            prev = term
            index = index + 1
            total += C_RECORD_HEADER_SIZE + specs[k].size
        return _write_records(specs, n, total)
    finally:
        PyMem_Free(specs)


cdef bint _all_zero(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


def decode_records(buf, Py_ssize_t offset=0, Py_ssize_t max_record_size=DEFAULT_MAX_RECORD_SIZE):
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    cdef const uint8_t* base = <const uint8_t*>view.buf
    cdef Py_ssize_t n = view.len
    cdef Py_ssize_t pos = offset
    cdef const uint8_t* h
    cdef uint32_t length
    cdef uint64_t index, term
    cdef uint8_t rtype
    cdef Py_ssize_t start, stop
    cdef list records = []
    cdef tuple rec
    cdef object payload
    try:
        if offset < 0 or offset > n:
            raise ValueError(f"offset {offset} outside the buffer of {n} bytes")
        if max_record_size < 0:
            raise ValueError("max_record_size must be >= 0")
        # Every access below stays inside [pos, n): the header only once n - pos >= 32, the
        # payload only once stop <= n.
        while pos < n:
            if n - pos < C_RECORD_HEADER_SIZE:
                if _all_zero(base + pos, n - pos):
                    return records, pos, WAL_TORN, f"zero-filled tail at offset {pos}"
                return records, pos, WAL_TORN, (
                    f"incomplete record header at offset {pos}: {n - pos} of "
                    f"{C_RECORD_HEADER_SIZE} bytes")
            h = base + pos
            if _crc32(0, h, 28) != _ld32(h + 28):
                if _all_zero(h, n - pos):
                    return records, pos, WAL_TORN, f"zero-filled tail at offset {pos}"
                return records, pos, WAL_CORRUPT, f"record header checksum mismatch at offset {pos}"
            length = _ld32(h + 4)
            rtype = h[8]
            index = _ld64(h + 12)
            term = _ld64(h + 20)
            if rtype == 0 or h[9] or h[10] or h[11] or index > C_MAX_INDEX or term > C_MAX_INDEX:
                return records, pos, WAL_CORRUPT, f"invalid record header fields at offset {pos}"
            if length > <uint64_t>max_record_size:
                return records, pos, WAL_CORRUPT, (
                    f"impossible record length {length} at offset {pos} "
                    f"(limit {max_record_size})")
            start = pos + C_RECORD_HEADER_SIZE
            stop = start + <Py_ssize_t>length
            if stop > n:
                return records, pos, WAL_TORN, (
                    f"incomplete record at offset {pos}: payload needs {length} bytes, "
                    f"{n - start} remain")
            if _crc32(_crc32(0, &rtype, 1), base + start, length) != _ld32(h):
                return records, pos, WAL_CORRUPT, f"record checksum mismatch at offset {pos}"
            payload = PyBytes_FromStringAndSize(<const char*>(base + start), length)
            rec = (rtype, index, term, payload)
            records.append(rec)
            pos = stop
        return records, pos, WAL_CLEAN, None
    finally:
        PyBuffer_Release(&view)


include "_core_frames.pxi"   # 4. the frame codec (length-prefixed network frames)
