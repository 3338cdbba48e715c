# Included by fastraft/_core.pyx (Cython `include`): the frame codec of network connections.
# Split out of _core.pyx to keep that module under 1,000 lines; same module at build time.

# ---------------------------------------------------------------------------------------------
# 4. The frame codec: u32 little-endian payload length, then the payload
# ---------------------------------------------------------------------------------------------

DEF C_FRAME_HEADER_SIZE = 4
FRAME_HEADER_SIZE = C_FRAME_HEADER_SIZE
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024


def encode_frame(payload):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame payload must be bytes-like, not {type(payload).__name__}")
    cdef Py_buffer view
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    cdef bytes out
    cdef uint8_t* p
    try:
        if <uint64_t>view.len > 0xFFFFFFFFu:
            raise OverflowError("frame payload over 4 GiB")
        out = PyBytes_FromStringAndSize(NULL, C_FRAME_HEADER_SIZE + view.len)
        p = <uint8_t*>PyBytes_AS_STRING(out)
        _st32(p, <uint32_t>view.len)
        memcpy(p + C_FRAME_HEADER_SIZE, view.buf, view.len)
        return out
    finally:
        PyBuffer_Release(&view)


def encode_frames(payloads):
    return b"".join([encode_frame(p) for p in payloads])


#: How many bytes of an oversized frame's body a skipping FrameDecoder hands out.
DEF C_OVERSIZED_HEAD = 64
OVERSIZED_HEAD = C_OVERSIZED_HEAD


class OversizedFrame:
    """In place of a frame over the limit, from a skipping FrameDecoder (see _core_py.py)."""

    __slots__ = ("size", "head")

    def __init__(self, size, head):
        self.size = size
        self.head = head

    def __eq__(self, other):
        return (type(other) is type(self) and other.size == self.size
                and other.head == self.head)

    __hash__ = None

    def __repr__(self):
        return f"OversizedFrame(size={self.size}, head={self.head!r})"


cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject** string, Py_ssize_t newsize) except -1


#: Bytes allocated at once for the body of an incoming frame: a frame up to this size gets its
#: final bytes object as soon as its length is known; a larger one's grows (doubling, up to its
#: length) with what arrives, so a peer that announces a large frame does not get the memory
#: for it before sending it.
DEF C_FRAME_PREALLOC = 65536


cdef class FrameDecoder:
    """Splits a byte stream into frames; see fastraft/_core_py.py for the contract (strict
    mode and skip mode).

    Every byte of a frame is copied once, into the bytes object that ``feed`` returns:
    complete frames are cut straight out of the caller's data, and the body of a frame that
    a read leaves incomplete goes straight into the bytes object it will be (``_frame``,
    allocated when its length prefix is known), which the next reads fill and the last one
    hands out. Nothing else is buffered but an incomplete length prefix (up to 3 bytes in
    ``_head``). In skip mode ``_frame`` holds the head of an oversized frame while it arrives;
    the rest of its body is never copied: ``_skip`` counts the bytes still to drop.
    """

    cdef uint8_t _head[C_FRAME_HEADER_SIZE]  # an incomplete length prefix
    cdef Py_ssize_t _hlen       # bytes in _head; 0 while a frame is in progress
    cdef PyObject* _frame       # owned: the bytes object being filled, or NULL
    cdef Py_ssize_t _cap        # its size (<= _want; == _want once _fill reaches _want)
    cdef Py_ssize_t _fill       # bytes of it received
    cdef Py_ssize_t _want       # bytes it is to hold: the frame's length, or the head's
    cdef uint32_t _size         # the length prefix of the frame in progress
    cdef bint _over             # that frame is oversized (skip mode): _frame is its head
    cdef uint32_t _max
    cdef bint _failed
    cdef bint _skip_mode
    cdef Py_ssize_t _skip       # bytes of an oversized body still to drop (nothing pending)

    def __cinit__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE, skip_oversized=False):
        if not 0 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be in 0 .. 2**32-1")
        self._max = max_frame_size
        self._hlen = 0
        self._frame = NULL
        self._cap = self._fill = self._want = 0
        self._size = 0
        self._over = False
        self._failed = False
        self._skip_mode = bool(skip_oversized)
        self._skip = 0

    def __dealloc__(self):
        Py_XDECREF(self._frame)

    @property
    def max_frame_size(self):
        return self._max

    @property
    def skip_oversized(self):
        return self._skip_mode

    @property
    def pending(self):
        if self._frame != NULL:
            return C_FRAME_HEADER_SIZE + self._fill
        return self._hlen

    @property
    def skipping(self):
        return self._skip

    @property
    def partial_head(self):
        if self._frame != NULL and self._over:
            return PyBytes_FromStringAndSize(PyBytes_AS_STRING(<object>self._frame), self._fill)
        return None

    cdef int _open(self, uint32_t size, Py_ssize_t avail, list frames) except -1:
        """A length prefix has arrived (``avail`` bytes of data follow it): check it and make
        the bytes object its body (or an oversized frame's head) goes into; an empty frame is
        complete at once."""
        cdef Py_ssize_t want, cap
        cdef bytes obj
        if size > self._max:
            if not self._skip_mode:
                self._failed = True
                raise FrameTooLarge(size, self._max)
            want = size if size < C_OVERSIZED_HEAD else C_OVERSIZED_HEAD
        elif size == 0:
            frames.append(b"")
            return 0
        else:
            want = size
        cap = avail if avail > C_FRAME_PREALLOC else C_FRAME_PREALLOC
        if cap > want:
            cap = want
        self._failed = True             # until allocated: the prefix is consumed already
        obj = PyBytes_FromStringAndSize(NULL, cap)
        self._failed = False
        Py_INCREF(obj)
        self._frame = <PyObject*>obj
        self._cap = cap
        self._fill = 0
        self._want = want
        self._size = size
        self._over = size > self._max
        return 0

    cdef int _grow(self, Py_ssize_t need) except -1:
        """Make ``_frame`` hold at least ``need`` bytes (at most ``_want``), doubling."""
        cdef Py_ssize_t cap = self._cap * 2
        if cap < need:
            cap = need
        if cap > self._want:
            cap = self._want
        # _frame is referenced by this decoder alone (refcount 1), as _PyBytes_Resize needs.
        # Should the resize fail, it frees the object: the frame is lost, the decoder dead.
        self._failed = True
        _PyBytes_Resize(&self._frame, cap)
        self._failed = False
        self._cap = cap
        return 0

    cdef Py_ssize_t _resume(self, const uint8_t* p, Py_ssize_t n, list frames) except -1:
        """Feed p[0:n] to the frame in progress (or to the incomplete length prefix, opening
        the frame once it is whole); return the bytes used: all of n, or fewer when the frame
        completes (it is then appended to ``frames``; an oversized one's head as an
        OversizedFrame, and ``_skip`` set to the rest of its body)."""
        cdef Py_ssize_t used = 0
        cdef Py_ssize_t k
        cdef object frame
        if self._frame == NULL:
            k = C_FRAME_HEADER_SIZE - self._hlen
            if k > n:
                k = n
            memcpy(self._head + self._hlen, p, k)
            self._hlen += k
            used = k
            if self._hlen < C_FRAME_HEADER_SIZE:
                return used
            self._hlen = 0
            self._open(_ld32(self._head), n - used, frames)
            if self._frame == NULL:
                return used                 # an empty frame, already appended
        k = self._want - self._fill
        if k > n - used:
            k = n - used
        if self._fill + k > self._cap:
            self._grow(self._fill + k)
        # In bounds: _fill + k <= _cap, the size of _frame; used + k <= n.
        memcpy(<uint8_t*>PyBytes_AS_STRING(<object>self._frame) + self._fill, p + used, k)
        self._fill += k
        used += k
        if self._fill == self._want:
            frame = <object>self._frame     # takes over the decoder's reference
            Py_XDECREF(self._frame)
            self._frame = NULL
            if self._over:
                self._skip = <Py_ssize_t>self._size - self._want
                frames.append(OversizedFrame(self._size, frame))
            else:
                frames.append(frame)
        return used

    cdef Py_ssize_t _split(self, const uint8_t* p, Py_ssize_t n, list frames) except -1:
        """With nothing pending: append the complete frames at the start of p[0:n] to
        ``frames``; return the number of bytes they used. Reads a length only when 4 bytes
        remain and a body only when all of it is inside n (an oversized one: only its head;
        the rest of it inside n is used, and what lies beyond n is left to ``_skip``)."""
        cdef Py_ssize_t pos = 0
        cdef uint32_t size
        cdef Py_ssize_t h, rest
        while n - pos >= C_FRAME_HEADER_SIZE:
            size = _ld32(p + pos)
            if size > self._max:
                if not self._skip_mode:
                    self._failed = True
                    raise FrameTooLarge(size, self._max)
                h = size if size < C_OVERSIZED_HEAD else C_OVERSIZED_HEAD
                if h > n - pos - C_FRAME_HEADER_SIZE:
                    break                       # wait for the head
                pos += C_FRAME_HEADER_SIZE
                frames.append(OversizedFrame(
                    size, PyBytes_FromStringAndSize(<const char*>(p + pos), h)))
                pos += h
                rest = <Py_ssize_t>size - h
                if rest > n - pos:
                    self._skip = rest - (n - pos)
                    return n
                pos += rest
                continue
            if <Py_ssize_t>size > n - pos - C_FRAME_HEADER_SIZE:
                break
            frames.append(PyBytes_FromStringAndSize(
                <const char*>(p + pos + C_FRAME_HEADER_SIZE), size))
            pos += C_FRAME_HEADER_SIZE + size
        return pos

    def feed(self, data):
        if self._failed:
            raise LocalProtocolError("FrameDecoder used after a protocol error")
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        cdef list frames = []
        cdef Py_ssize_t used
        cdef const uint8_t* p = <const uint8_t*>view.buf
        cdef Py_ssize_t n = view.len
        cdef Py_ssize_t k
        try:
            if self._skip:
                k = self._skip if self._skip < n else n
                self._skip -= k
                p += k
                n -= k
            if n and (self._frame != NULL or self._hlen):
                used = self._resume(p, n, frames)
                p += used
                n -= used
                if self._skip:                  # an oversized frame's head just completed
                    k = self._skip if self._skip < n else n
                    self._skip -= k
                    p += k
                    n -= k
            if n:
                # Nothing is pending here: cut the complete frames out of the data, then
                # start the incomplete one it ends with, if any.
                used = self._split(p, n, frames)
                if used < n:
                    self._resume(p + used, n - used, frames)
            return frames
        finally:
            PyBuffer_Release(&view)
