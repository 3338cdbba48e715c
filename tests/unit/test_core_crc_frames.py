"""Edges of the core's CRC-32 and frame decoder (issue 16), on both implementations.

Place in the architecture: tests of ``fastraft._core`` / ``fastraft._core_py`` only.

The Cython core computes CRC-32 with its own table code: slicing-by-16 with 8-, 4- and 1-byte
tail steps, and three interleaved stripes of 4,096 bytes (joined by a carry-less
multiplication) for buffers of 12,288 bytes and more. Every record length around those
boundaries must give binascii.crc32's value, what the twin writes, at any alignment, and a
flipped bit anywhere (in each stripe) must be caught.

Its frame decoder copies an incomplete frame's body straight into the bytes object it hands
out (allocated when the length prefix is known: at once up to 64 KiB, growing with what
arrives beyond). Frames split at every byte of the header and around the body's edges and the
growth points must come out whole, with ``pending``, ``partial_head`` and ``skipping`` equal
to the twin's after every feed.
"""

from __future__ import annotations

import binascii
import random
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft.errors import FrameTooLarge, LocalProtocolError

STRIPE = 4096                  # the Cython CRC's stripe (_CRC_STRIPE in _core_bytes.pxi)
PREALLOC = 65536               # a frame body allocated at once (C_FRAME_PREALLOC)
HEAD = 64                      # an oversized frame's head (OVERSIZED_HEAD)

#: Record payload lengths: every length up to 64 (the 16/8/4/1-byte steps), then around the
#: interleaved loop's thresholds (one, two chunks of three stripes) and a few large ones.
CRC_LENGTHS = sorted(
    set(range(0, 65))
    | {n + d for n in (100, 127, 128, STRIPE, 3 * STRIPE, 6 * STRIPE) for d in range(-17, 18)}
    | {65536, 65537, (1 << 20) + 3}
)


def rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


# -- CRC-32 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", CRC_LENGTHS)
def test_record_crcs_are_binascii_crc32_at_every_length(core_impl, n):
    payload = rand_bytes(n, n)
    rtype = 1 + n % 255
    rec = core_impl.encode_record(rtype, 7, 3, payload)
    ccrc, hcrc = struct.unpack_from("<I", rec, 0)[0], struct.unpack_from("<I", rec, 28)[0]
    assert ccrc == binascii.crc32(payload, binascii.crc32(bytes([rtype])))
    assert hcrc == binascii.crc32(rec[:28])
    assert core_impl.encode_records([(rtype, 7, 3, payload)]) == rec
    assert core_impl.encode_entries(rtype, 7, 0, [(3, payload)], n + 1) == rec


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 28, 100, 3 * STRIPE - 1, 3 * STRIPE,
                               3 * STRIPE + 13, 6 * STRIPE + 5])
def test_twins_write_and_read_the_same_records_at_any_alignment(core_twins, n):
    py, cy = core_twins
    payload = rand_bytes(n, 1000 + n)
    rec = cy.encode_record(9, 11, 2, payload)
    assert rec == py.encode_record(9, 11, 2, payload)
    for shift in range(8):              # the record at every offset mod 8 of the buffer
        buf = b"\x00" * shift + rec + rec
        for impl in (py, cy):
            recs, end, status, _ = impl.decode_records(buf, shift)
            assert (recs, end, status) == ([(9, 11, 2, payload)] * 2, len(buf), py.WAL_CLEAN)


@pytest.mark.parametrize("n", [1, 16, 3 * STRIPE, 3 * STRIPE + 100, 6 * STRIPE + 31])
def test_a_flipped_bit_anywhere_is_caught(core_twins, n):
    """One flipped bit in each stripe and in the tail of the payload, and in the header."""
    py, cy = core_twins
    payload = rand_bytes(n, 2000 + n)
    rec = cy.encode_record(5, 1, 1, payload)
    spots = {0, n - 1, n // 2} | {k * STRIPE + 7 for k in range(8) if k * STRIPE + 7 < n}
    for spot in sorted(spots):
        for bit in (0, 7):
            bad = bytearray(rec)
            bad[32 + spot] ^= 1 << bit
            for impl in (py, cy):
                recs, end, status, why = impl.decode_records(bytes(bad))
                assert (recs, end, status) == ([], 0, py.WAL_CORRUPT), (spot, bit)
                assert "record checksum mismatch" in why
    for spot in range(28):
        bad = bytearray(rec)
        bad[spot] ^= 0x10
        for impl in (py, cy):
            assert impl.decode_records(bytes(bad))[2] == py.WAL_CORRUPT


@pytest.mark.parametrize("order", ["rising", "falling", "shuffled"])
def test_batches_pair_records_of_any_lengths(core_twins, order):
    """The batch encoders write records two at a time (their checksums side by side): pairs
    of unequal lengths, one below and one above the interleaved threshold, and an odd count
    must give each record exactly what encode_record gives alone."""
    py, cy = core_twins
    lengths = list(range(0, 65)) + [100, 3 * STRIPE - 1, 3 * STRIPE, 3 * STRIPE + 7, 200_003]
    if order == "falling":
        lengths.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(lengths)
    for count in (len(lengths), len(lengths) - 1):        # an odd and an even count
        recs = [(1 + k % 200, 1000 + k, 4, rand_bytes(n, 3000 + k))
                for k, n in enumerate(lengths[:count])]
        want = b"".join(py.encode_record(*r) for r in recs)
        assert cy.encode_records(recs) == want == py.encode_records(recs)
        entries = [(4, r[3]) for r in recs]
        assert cy.encode_entries(7, 1000, 4, entries, 1 << 20) == \
            py.encode_entries(7, 1000, 4, entries, 1 << 20)
        assert [r[:4] for r in cy.decode_records(want)[0]] == recs


@given(st.lists(st.binary(max_size=300), max_size=9), st.integers(1, 255))
def test_batch_crcs_match_binascii(core_impl, payloads, rtype):
    buf = core_impl.encode_records([(rtype, 1, 1, p) for p in payloads])
    pos = 0
    for p in payloads:
        assert struct.unpack_from("<I", buf, pos)[0] == binascii.crc32(bytes([rtype]) + p)
        assert struct.unpack_from("<I", buf, pos + 28)[0] == binascii.crc32(buf[pos:pos + 28])
        pos += 32 + len(p)
    assert pos == len(buf)


@given(st.binary(max_size=STRIPE * 7), st.integers(1, 255))
def test_record_crc_matches_binascii_on_any_payload(core_impl, payload, rtype):
    rec = core_impl.encode_record(rtype, 1, 1, payload)
    assert struct.unpack_from("<I", rec)[0] == binascii.crc32(bytes([rtype]) + payload)
    assert core_impl.decode_records(rec)[0] == [(rtype, 1, 1, payload)]


# -- the frame decoder ----------------------------------------------------------------------


def lockstep(py, cy, reads, limit=1 << 24, skip=False):
    """Feed ``reads`` to a decoder of each twin; after every feed both must return the same
    frames (or raise the same error) and agree on pending, skipping and partial_head."""
    a = py.FrameDecoder(limit, skip_oversized=skip)
    b = cy.FrameDecoder(limit, skip_oversized=skip)
    out = []
    for k, data in enumerate(reads):
        try:
            got_a = a.feed(data)
        except (FrameTooLarge, LocalProtocolError) as exc:
            with pytest.raises(type(exc)):
                b.feed(data)
            out.append(type(exc))
            continue
        got_b = b.feed(data)
        plain_a = [f if type(f) is bytes else ("over", f.size, f.head) for f in got_a]
        plain_b = [f if type(f) is bytes else ("over", f.size, f.head) for f in got_b]
        assert plain_a == plain_b, k
        assert all(type(f) is bytes for f in got_b if type(f) is not cy.OversizedFrame)
        state_a = (a.pending, a.skipping, a.partial_head)
        assert state_a == (b.pending, b.skipping, b.partial_head), k
        out += plain_a
    return out


SMALL = [b"abc", b"", b"\x00" * 37, bytes(range(200))]


@pytest.mark.parametrize("size", [1, 100, PREALLOC, PREALLOC + 1, 3 * PREALLOC + 5])
def test_frame_split_at_every_header_byte_and_body_edge(core_twins, size):
    """A frame between two small ones, split in two reads at each byte of its header, at
    the first and last bytes of its body, and around 64 KiB of body (where the bytes object
    allocated at once ends and growing starts)."""
    py, cy = core_twins
    body = rand_bytes(size, size)
    stream = frame(b"x" * 10) + frame(body) + frame(b"tail")
    start = 14                           # where the big frame's header begins
    cuts = set(range(start - 1, start + 4 + 3)) | {start + 4 + size + d for d in (-2, -1, 0, 1)}
    cuts |= {start + 4 + PREALLOC + d for d in (-1, 0, 1)}
    for cut in sorted(c for c in cuts if 0 <= c <= len(stream)):
        assert lockstep(py, cy, [stream[:cut], stream[cut:]]) == [b"x" * 10, body, b"tail"]


@pytest.mark.parametrize("cut1", range(0, 9))
def test_frame_split_in_three_across_header_and_body(core_twins, cut1):
    """Three reads: the first ends inside or just after the header, the second anywhere in
    the body (including past 64 KiB, where the frame's bytes object must grow)."""
    py, cy = core_twins
    body = rand_bytes(PREALLOC * 2 + 3, 7)
    stream = frame(body) + frame(b"z")
    for cut2 in (cut1, cut1 + 1, 4 + PREALLOC - 1, 4 + PREALLOC, 4 + PREALLOC + 1,
                 len(stream) - 6, len(stream) - 5):
        cut2 = max(cut1, cut2)
        reads = [stream[:cut1], stream[cut1:cut2], stream[cut2:]]
        assert lockstep(py, cy, reads) == [body, b"z"]


def test_small_frames_split_at_every_byte(core_twins):
    py, cy = core_twins
    stream = b"".join(frame(p) for p in SMALL)
    for cut in range(len(stream) + 1):
        assert lockstep(py, cy, [stream[:cut], stream[cut:]]) == SMALL
    assert lockstep(py, cy, [stream[i:i + 1] for i in range(len(stream))]) == SMALL


@pytest.mark.parametrize("read", [1, 3, 4, 5, 99, 4096, 65535, 65536, 65537, 200_000])
def test_stream_in_fixed_reads(core_twins, read):
    """Small frames around large ones (one of 64 KiB, one of 300 KB that grows), in reads of
    one size: most reads end inside a frame, some inside a header."""
    py, cy = core_twins
    payloads = SMALL + [rand_bytes(65536, 1)] + SMALL + [rand_bytes(300_000, 2)] + SMALL
    stream = b"".join(frame(p) for p in payloads)
    reads = [stream[i:i + read] for i in range(0, len(stream), read)]
    if read < 64:
        reads = reads[:3000] + [stream[3000 * read:]]   # keep the byte-wise case short
    assert lockstep(py, cy, reads) == payloads


def test_frames_handed_out_are_not_reused(core_impl):
    """The bytes object a partial frame was copied into is the frame handed out: later
    frames, fed in pieces too, never write into it."""
    dec = core_impl.FrameDecoder()
    first = rand_bytes(70_000, 3)
    second = rand_bytes(70_000, 4)
    wire = frame(first) + frame(second) + frame(b"end")
    got = []
    for i in range(0, len(wire), 10_000):
        got += dec.feed(wire[i:i + 10_000])
    assert got == [first, second, b"end"]
    assert [type(f) for f in got] == [bytes, bytes, bytes]
    assert len({id(f) for f in got}) == 3
    assert dec.pending == 0


def test_a_large_announced_frame_costs_only_what_arrived(core_impl):
    """A peer announcing 16 MiB and sending 1 KB does not make the decoder allocate 16 MiB
    (the body's bytes object starts at 64 KiB and grows with what arrives)."""
    dec = core_impl.FrameDecoder(1 << 24)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert dec.feed(struct.pack("<I", 1 << 24) + b"a" * 1000) == []
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert dec.pending == 1004
    assert grown < 4 * PREALLOC
    chunk = b"b" * 100_000
    for _ in range(30):
        dec.feed(chunk)
    assert dec.pending == 3_001_004


def test_errors_after_a_partial_frame(core_twins):
    """Strict mode: an oversized length completed by a later read raises then (the pending
    frame before it was handed out first, in the earlier feed); the decoder is then dead."""
    py, cy = core_twins
    body = rand_bytes(70_000, 5)
    stream = frame(body) + struct.pack("<I", 200_000) + b"x" * 10
    reads = [stream[:50_000], stream[50_000:70_006], stream[70_006:], b"more"]
    assert lockstep(py, cy, reads, limit=100_000) == [body, FrameTooLarge, LocalProtocolError]


@pytest.mark.parametrize("cut", list(range(0, 12)) + [70, 71, 72, 73, 100])
def test_skip_mode_oversized_head_split_anywhere(core_twins, cut):
    """An oversized frame after a pending small one: its head is collected across reads
    (partial_head on the way), then the rest of its body skipped across the next reads."""
    py, cy = core_twins
    big = rand_bytes(1000, 6)
    stream = frame(b"ab") + frame(big) + frame(b"after")
    for cut2 in (cut, cut + 1, cut + 40, 200, len(stream) - 9):
        cut2 = max(cut, cut2)
        reads = [stream[:cut], stream[cut:cut2], stream[cut2:]]
        got = lockstep(py, cy, reads, limit=100, skip=True)
        assert got == [b"ab", ("over", 1000, big[:HEAD]), b"after"]


@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.integers(0, 150_000).map(lambda n: bytes([n % 251]) * n)),
                max_size=6),
       st.lists(st.integers(1, 90_000), min_size=1, max_size=12),
       st.booleans())
def test_twins_agree_on_large_frames_in_any_reads(core_twins, payloads, sizes, skip):
    py, cy = core_twins
    stream = b"".join(frame(p) for p in payloads)
    reads, pos, k = [], 0, 0
    while pos < len(stream):
        step = sizes[k % len(sizes)]
        reads.append(stream[pos:pos + step])
        pos += step
        k += 1
    limit = 100_000 if skip else 1 << 24
    lockstep(py, cy, reads, limit=limit, skip=skip)
