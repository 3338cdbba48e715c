# Included by fastraft/_core.pyx (Cython `include`): byte-order helpers and CRC-32.
# Split out of _core.pyx to keep that module under 1,000 lines; same module at build time.

# ---------------------------------------------------------------------------------------------
# Little-endian loads and stores. Written byte by byte so they are correct on any host; gcc and
# clang turn each into a single mov on little-endian machines.
# ---------------------------------------------------------------------------------------------

cdef inline uint32_t _ld32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _ld64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_ld32(p)) | (<uint64_t>_ld32(p + 4) << 32)


cdef inline void _st32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)
    p[2] = <uint8_t>(v >> 16)
    p[3] = <uint8_t>(v >> 24)


cdef inline void _st64(uint8_t* p, uint64_t v) noexcept nogil:
    _st32(p, <uint32_t>v)
    _st32(p + 4, <uint32_t>(v >> 32))


# ---------------------------------------------------------------------------------------------
# CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320): the function of zlib.crc32 and
# binascii.crc32, so the twin and this module write identical checksums. Slicing-by-8: eight
# 256-entry tables (8 KiB) let the loop consume 8 bytes per step with independent lookups,
# about 5x faster than the classic byte-at-a-time loop.
# ---------------------------------------------------------------------------------------------

cdef uint32_t _crc_tab[8][256]


cdef void _crc_init() noexcept:
    cdef uint32_t c
    cdef int i, k
    for i in range(256):
        c = <uint32_t>i
        for k in range(8):
            if c & 1:
                c = (c >> 1) ^ 0xEDB88320u
            else:
                c = c >> 1
        _crc_tab[0][i] = c
    for i in range(256):
        c = _crc_tab[0][i]
        for k in range(1, 8):
            c = _crc_tab[0][c & 0xFF] ^ (c >> 8)
            _crc_tab[k][i] = c


_crc_init()


cdef uint32_t _crc32(uint32_t crc, const uint8_t* p, size_t n) noexcept nogil:
    """Continue a CRC-32 exactly as zlib.crc32(data, crc) does (pre- and post-inversion)."""
    cdef uint32_t one, two
    crc = ~crc
    while n >= 8:
        one = _ld32(p) ^ crc
        two = _ld32(p + 4)
        crc = (_crc_tab[7][one & 0xFF] ^ _crc_tab[6][(one >> 8) & 0xFF]
               ^ _crc_tab[5][(one >> 16) & 0xFF] ^ _crc_tab[4][one >> 24]
               ^ _crc_tab[3][two & 0xFF] ^ _crc_tab[2][(two >> 8) & 0xFF]
               ^ _crc_tab[1][(two >> 16) & 0xFF] ^ _crc_tab[0][two >> 24])
        p += 8
        n -= 8
    while n:
        crc = _crc_tab[0][(crc ^ p[0]) & 0xFF] ^ (crc >> 8)
        p += 1
        n -= 1
    return ~crc
