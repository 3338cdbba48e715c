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


cdef class FrameDecoder:
    """Splits a byte stream into frames; see fastraft/_core_py.py for the contract (strict
    mode and skip mode).

    The remainder of an incomplete frame lives in a C buffer that grows to fit it; complete
    frames are cut straight out of the caller's data when nothing is pending, so the common
    case (a read holding whole frames) copies each byte once, into its frame. In skip mode the
    body of an oversized frame is never copied: ``_skip`` counts the bytes still to drop.
    """

    cdef uint8_t* _buf
    cdef Py_ssize_t _len        # bytes pending in _buf
    cdef Py_ssize_t _cap
    cdef uint32_t _max
    cdef bint _failed
    cdef bint _skip_mode
    cdef Py_ssize_t _skip       # bytes of an oversized body still to drop (then _len == 0)

    def __cinit__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE, skip_oversized=False):
        if not 0 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be in 0 .. 2**32-1")
        self._max = max_frame_size
        self._buf = NULL
        self._len = 0
        self._cap = 0
        self._failed = False
        self._skip_mode = bool(skip_oversized)
        self._skip = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def max_frame_size(self):
        return self._max

    @property
    def skip_oversized(self):
        return self._skip_mode

    @property
    def pending(self):
        return self._len

    @property
    def skipping(self):
        return self._skip

    @property
    def partial_head(self):
        if (self._skip_mode and self._len >= C_FRAME_HEADER_SIZE
                and _ld32(self._buf) > self._max):
            return PyBytes_FromStringAndSize(<const char*>(self._buf + C_FRAME_HEADER_SIZE),
                                             self._len - C_FRAME_HEADER_SIZE)
        return None

    cdef int _keep(self, const uint8_t* data, Py_ssize_t n) except -1:
        """Append ``n`` bytes to the pending buffer."""
        cdef Py_ssize_t need = self._len + n
        cdef Py_ssize_t cap = self._cap if self._cap else 256
        cdef uint8_t* fresh
        if need > self._cap:
            while cap < need:
                cap *= 2
            fresh = <uint8_t*>PyMem_Realloc(self._buf, cap)
            if fresh == NULL:
                raise MemoryError()
            self._buf = fresh
            self._cap = cap
        memcpy(self._buf + self._len, data, n)
        self._len = need
        return 0

    cdef Py_ssize_t _split(self, const uint8_t* p, Py_ssize_t n, list frames) except -1:
        """Append the complete frames at the start of p[0:n] to ``frames``; return the number
        of bytes they used. Reads a length only when 4 bytes remain and a body only when all
        of it is inside n (an oversized one: only its head; the rest of it inside n is used,
        and what lies beyond n is left to ``_skip``)."""
        cdef Py_ssize_t pos = 0
        cdef uint32_t size
        cdef Py_ssize_t h, rest
        while n - pos >= C_FRAME_HEADER_SIZE:
            size = _ld32(p + pos)
            if size > self._max:
                if not self._skip_mode:
                    self._failed = True
                    self._len = 0
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
            if self._len == 0:
                used = self._split(p, n, frames)
                if used < n:
                    self._keep(p + used, n - used)
            else:
                self._keep(p, n)
                used = self._split(self._buf, self._len, frames)
                if used:
                    memmove(self._buf, self._buf + used, self._len - used)
                    self._len -= used
            return frames
        finally:
            PyBuffer_Release(&view)
