"""Unit tests of the WAL record codec of the core, run on both implementations.

Specification: the layout comment of section 3 of ``fastraft._core_py`` (segment header,
32-byte record header, CRC-32 of the type byte and payload, CRC-32 of the header) and the
docstrings of ``encode_record(s)``, ``decode_records`` and the segment header functions.
Records are also built here independently with ``struct`` and ``zlib`` so that damaged but
self-consistent headers (valid header checksum, invalid fields) can be fed to the decoder.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from fastraft.errors import CorruptRecordError

MAX = 2**63 - 1

BUFFER_TYPES = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
}


def raw_record(rtype, index, term, payload, *, length=None, reserved8=0, reserved16=0,
               ccrc=None, hcrc=None, crc_type=None):
    """A record built from the layout comment; the keywords forge individual fields while
    keeping the others (and, unless ``hcrc`` is given, the header checksum) consistent."""
    if ccrc is None:
        ccrc = zlib.crc32(bytes([rtype if crc_type is None else crc_type]) + payload)
    head = struct.pack("<IIBBHQQ", ccrc, len(payload) if length is None else length,
                       rtype, reserved8, reserved16, index, term)
    if hcrc is None:
        hcrc = zlib.crc32(head)
    return head + struct.pack("<I", hcrc) + payload


RECORDS = [
    (1, 1, 1, b"first"),
    (2, 2, 1, b""),
    (255, 3, 2, b"\x00" * 40),
    (7, 4, 2, bytes(range(256))),
    (1, 5, 3, b"last"),
]


def encoded(core, records=RECORDS):
    """``(buffer, start offset of each record)`` for ``records``."""
    starts = []
    pos = 0
    for r in records:
        starts.append(pos)
        pos += core.RECORD_HEADER_SIZE + len(r[3])
    buf = core.encode_records(records)
    assert len(buf) == pos
    return buf, starts


def assert_problem(core, result, records, end, status):
    got_records, got_end, got_status, reason = result
    assert got_records == records
    assert got_end == end
    assert got_status == status
    assert isinstance(reason, str) and reason
    assert str(end) in reason, reason


# -- constants and the segment header -----------------------------------------------------


def test_wal_constants(core_impl):
    assert core_impl.SEGMENT_MAGIC == b"FRAFTWAL"
    assert core_impl.WAL_VERSION == 1
    assert core_impl.SEGMENT_HEADER_SIZE == 16
    assert core_impl.RECORD_HEADER_SIZE == 32
    assert core_impl.DEFAULT_MAX_RECORD_SIZE == 64 * 1024 * 1024
    assert (core_impl.WAL_CLEAN, core_impl.WAL_TORN, core_impl.WAL_CORRUPT) == (0, 1, 2)


def test_segment_header_bytes(core_impl):
    header = core_impl.encode_segment_header()
    assert type(header) is bytes
    assert header == bytes.fromhex("465241465457414c0100000068870c8e")
    assert header[:8] == b"FRAFTWAL"
    assert struct.unpack("<I", header[8:12])[0] == 1
    assert struct.unpack("<I", header[12:16])[0] == zlib.crc32(header[:12])


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_segment_header_round_trip(core_impl, kind):
    header = core_impl.encode_segment_header()
    assert core_impl.decode_segment_header(BUFFER_TYPES[kind](header)) == core_impl.WAL_VERSION
    # Only the start of the buffer is the header; records may follow.
    rest = header + core_impl.encode_record(1, 1, 1, b"x")
    assert core_impl.decode_segment_header(BUFFER_TYPES[kind](rest)) == 1


@pytest.mark.parametrize("size", range(16))
def test_segment_header_truncated(core_impl, size):
    header = core_impl.encode_segment_header()
    with pytest.raises(CorruptRecordError):
        core_impl.decode_segment_header(header[:size])


def test_corrupt_record_error_is_also_a_value_error(core_impl):
    with pytest.raises(ValueError) as info:
        core_impl.decode_segment_header(b"FRAFT")
    assert type(info.value) is CorruptRecordError


def segment_header(magic=b"FRAFTWAL", version=1, hcrc=None):
    head = magic + struct.pack("<I", version)
    return head + struct.pack("<I", zlib.crc32(head) if hcrc is None else hcrc)


@pytest.mark.parametrize("magic", [b"FRAFTWAM", b"fraftwal", b"\x00" * 8, b"XRAFTWAL"])
def test_segment_header_bad_magic(core_impl, magic):
    with pytest.raises(CorruptRecordError):
        core_impl.decode_segment_header(segment_header(magic=magic))


@pytest.mark.parametrize("version", [0, 2, 256, 2**32 - 1])
def test_segment_header_unsupported_version(core_impl, version):
    with pytest.raises(CorruptRecordError):
        core_impl.decode_segment_header(segment_header(version=version))


@pytest.mark.parametrize("bit", range(128))
def test_segment_header_any_bit_flip_is_detected(core_impl, bit):
    header = bytearray(core_impl.encode_segment_header())
    header[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptRecordError):
        core_impl.decode_segment_header(bytes(header))


def test_segment_header_bad_checksum(core_impl):
    good = segment_header()
    bad = segment_header(hcrc=struct.unpack("<I", good[12:])[0] ^ 0x80000000)
    with pytest.raises(CorruptRecordError):
        core_impl.decode_segment_header(bad)


# -- encoding -----------------------------------------------------------------------------


def test_record_golden_bytes(core_impl):
    # The content CRC covers the type byte then the payload: b"1" + b"23456789" is the
    # standard CRC-32 check input, whose CRC is 0xCBF43926.
    rec = core_impl.encode_record(ord("1"), 1, 2, b"23456789")
    assert type(rec) is bytes
    assert rec == bytes.fromhex(
        "2639f4cb0800000031000000010000000000000002000000000000009"
        "4dd10ca3233343536373839")
    assert struct.unpack_from("<I", rec, 0)[0] == 0xCBF43926


@pytest.mark.parametrize("rtype, index, term, payload", [
    (1, 0, 0, b""),
    (255, MAX, MAX, b"payload"),
    (17, 123456789, 42, bytes(range(256)) * 5),
    (3, 2**32, 2**40 + 7, b"\xff" * 3),
])
def test_record_layout(core_impl, rtype, index, term, payload):
    rec = core_impl.encode_record(rtype, index, term, payload)
    assert rec == raw_record(rtype, index, term, payload)
    ccrc, length, t, r8, r16, i, tm, hcrc = struct.unpack_from("<IIBBHQQI", rec)
    assert (length, t, r8, r16, i, tm) == (len(payload), rtype, 0, 0, index, term)
    assert ccrc == zlib.crc32(bytes([rtype]) + payload)
    assert hcrc == zlib.crc32(rec[:28])
    assert rec[32:] == payload
    assert len(rec) == core_impl.RECORD_HEADER_SIZE + len(payload)


def test_encode_records_is_the_concatenation(core_impl):
    batch = core_impl.encode_records(RECORDS)
    assert type(batch) is bytes
    assert batch == b"".join(core_impl.encode_record(*r) for r in RECORDS)
    assert core_impl.encode_records(iter(RECORDS)) == batch
    assert core_impl.encode_records(tuple(RECORDS)) == batch
    assert core_impl.encode_records([]) == b""


@pytest.mark.parametrize("payload", [bytearray(b"x"), memoryview(b"x"), "x", None, 5],
                         ids=["bytearray", "memoryview", "str", "None", "int"])
def test_encode_non_bytes_payload_is_type_error(core_impl, payload):
    with pytest.raises(TypeError):
        core_impl.encode_record(1, 1, 1, payload)
    with pytest.raises(TypeError):
        core_impl.encode_records([(1, 1, 1, b"ok"), (1, 2, 1, payload)])


@pytest.mark.parametrize("rtype", [0, 256, -1, 1000])
def test_encode_type_outside_1_to_255_is_value_error(core_impl, rtype):
    with pytest.raises(ValueError):
        core_impl.encode_record(rtype, 1, 1, b"x")
    with pytest.raises(ValueError):
        core_impl.encode_records([(1, 1, 1, b"ok"), (rtype, 2, 1, b"x")])


@pytest.mark.parametrize("field", ["index", "term"])
@pytest.mark.parametrize("value", [-1, -(2**63), 2**63, 2**64 - 1, 2**64, 2**70])
def test_encode_index_or_term_outside_63_bits_overflows(core_impl, field, value):
    args = {"index": 1, "term": 1, field: value}
    with pytest.raises(OverflowError):
        core_impl.encode_record(1, args["index"], args["term"], b"x")
    with pytest.raises(OverflowError):
        core_impl.encode_records([(1, 1, 1, b"ok"), (1, args["index"], args["term"], b"x")])


# -- decoding: clean buffers --------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_round_trip(core_impl, kind):
    buf, _ = encoded(core_impl)
    records, end, status, reason = core_impl.decode_records(BUFFER_TYPES[kind](buf))
    assert records == RECORDS
    assert all(type(r) is tuple and type(r[3]) is bytes for r in records)
    assert (end, status, reason) == (len(buf), core_impl.WAL_CLEAN, None)


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_decode_empty_buffer(core_impl, kind):
    assert core_impl.decode_records(BUFFER_TYPES[kind](b"")) == ([], 0, core_impl.WAL_CLEAN, None)


def test_round_trip_extremes(core_impl):
    recs = [(1, 0, 0, b""), (255, MAX, MAX, b""), (128, MAX, 0, b"\x00"),
            (2, 1, 1, bytes(70000))]
    buf = core_impl.encode_records(recs)
    assert core_impl.decode_records(buf) == (recs, len(buf), core_impl.WAL_CLEAN, None)


def test_decoded_payloads_do_not_alias_a_mutable_buffer(core_impl):
    buf = bytearray(core_impl.encode_record(1, 1, 1, b"hello"))
    records, _, _, _ = core_impl.decode_records(buf)
    buf[-5:] = b"XXXXX"
    assert records == [(1, 1, 1, b"hello")]


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_decode_after_a_segment_header(core_impl, kind):
    buf, starts = encoded(core_impl)
    seg = core_impl.encode_segment_header() + buf
    records, end, status, reason = core_impl.decode_records(
        BUFFER_TYPES[kind](seg), core_impl.SEGMENT_HEADER_SIZE)
    assert (records, end, status, reason) == (RECORDS, len(seg), core_impl.WAL_CLEAN, None)


def test_decode_offset_skips_records_and_end_is_absolute(core_impl):
    buf, starts = encoded(core_impl)
    for k, start in enumerate(starts):
        assert core_impl.decode_records(buf, start) == (
            RECORDS[k:], len(buf), core_impl.WAL_CLEAN, None)
        assert core_impl.decode_records(buf, offset=start) == (
            RECORDS[k:], len(buf), core_impl.WAL_CLEAN, None)
    assert core_impl.decode_records(buf, len(buf)) == ([], len(buf), core_impl.WAL_CLEAN, None)


@pytest.mark.parametrize("offset", [-1, -100])
def test_decode_negative_offset_is_value_error(core_impl, offset):
    with pytest.raises(ValueError):
        core_impl.decode_records(core_impl.encode_record(1, 1, 1, b"x"), offset)


def test_decode_offset_past_the_end_is_value_error(core_impl):
    buf = core_impl.encode_record(1, 1, 1, b"x")
    with pytest.raises(ValueError):
        core_impl.decode_records(buf, len(buf) + 1)
    with pytest.raises(ValueError):
        core_impl.decode_records(b"", 1)


def test_decode_memoryview_slice(core_impl):
    buf, starts = encoded(core_impl)
    view = memoryview(b"junk" + buf)[4:]
    records, end, status, _ = core_impl.decode_records(view, starts[2])
    assert (records, end, status) == (RECORDS[2:], len(buf), core_impl.WAL_CLEAN)


# -- decoding: torn tails -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_torn_incomplete_header(core_impl, kind):
    buf, starts = encoded(core_impl)
    last = starts[-1]
    for cut in range(last + 1, last + 32):  # 1 .. 31 bytes of the last header
        result = core_impl.decode_records(BUFFER_TYPES[kind](buf[:cut]))
        assert_problem(core_impl, result, RECORDS[:-1], last, core_impl.WAL_TORN)


def test_torn_incomplete_header_of_garbage(core_impl):
    # Fewer than 32 bytes left is a torn tail whatever they contain.
    buf, _ = encoded(core_impl)
    for tail in (b"\x01", b"\xff" * 31, b"garbage"):
        result = core_impl.decode_records(buf + tail)
        assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_TORN)


@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_torn_incomplete_payload(core_impl, kind):
    buf, starts = encoded(core_impl)
    k = 3  # a 256-byte payload
    header_end = starts[k] + 32
    for cut in [header_end, header_end + 1, header_end + 128, starts[k + 1] - 1]:
        result = core_impl.decode_records(BUFFER_TYPES[kind](buf[:cut]))
        assert_problem(core_impl, result, RECORDS[:k], starts[k], core_impl.WAL_TORN)


def test_every_truncation_is_clean_or_torn(core_impl):
    buf, starts = encoded(core_impl)
    boundaries = starts + [len(buf)]
    for cut in range(len(buf) + 1):
        records, end, status, reason = core_impl.decode_records(buf[:cut])
        complete = sum(1 for b in boundaries[1:] if b <= cut)
        assert records == RECORDS[:complete]
        assert end == boundaries[complete]
        if cut in boundaries:
            assert (status, reason) == (core_impl.WAL_CLEAN, None)
        else:
            assert status == core_impl.WAL_TORN


@pytest.mark.parametrize("zeros", [1, 31, 32, 33, 64, 4096])
@pytest.mark.parametrize("kind", list(BUFFER_TYPES))
def test_torn_zero_filled_tail(core_impl, zeros, kind):
    buf, _ = encoded(core_impl)
    result = core_impl.decode_records(BUFFER_TYPES[kind](buf + bytes(zeros)))
    assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_TORN)


def test_torn_zero_filled_file(core_impl):
    result = core_impl.decode_records(bytes(1000))
    assert_problem(core_impl, result, [], 0, core_impl.WAL_TORN)
    seg = core_impl.encode_segment_header() + bytes(100)
    result = core_impl.decode_records(seg, 16)
    assert_problem(core_impl, result, [], 16, core_impl.WAL_TORN)


def test_torn_payload_under_a_maximal_length(core_impl):
    # A valid header announcing exactly max_record_size bytes, cut short: torn, not corrupt.
    buf, _ = encoded(core_impl)
    head = raw_record(1, 6, 3, b"", length=core_impl.DEFAULT_MAX_RECORD_SIZE)
    result = core_impl.decode_records(buf + head + b"abc")
    assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_TORN)


# -- decoding: corruption -----------------------------------------------------------------


def test_zeros_followed_by_data_are_corrupt(core_impl):
    buf, _ = encoded(core_impl)
    for tail in (bytes(32) + b"\x01", bytes(64) + core_impl.encode_record(1, 6, 3, b"x"),
                 bytes(4095) + b"\x80"):
        result = core_impl.decode_records(buf + tail)
        assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_CORRUPT)


@pytest.mark.parametrize("k", range(len(RECORDS)))
def test_header_checksum_mismatch_is_corrupt(core_impl, k):
    buf, starts = encoded(core_impl)
    for byte in range(32):
        damaged = bytearray(buf)
        damaged[starts[k] + byte] ^= 0x10
        result = core_impl.decode_records(bytes(damaged))
        assert_problem(core_impl, result, RECORDS[:k], starts[k], core_impl.WAL_CORRUPT)


def test_header_with_partially_zeroed_tail_is_corrupt(core_impl):
    # Some header bytes, then zeros to the end: not "everything left is zero", so corrupt.
    buf, _ = encoded(core_impl)
    nxt = core_impl.encode_record(1, 6, 3, b"next")
    result = core_impl.decode_records(buf + nxt[:10] + bytes(40))
    assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_CORRUPT)


@pytest.mark.parametrize("k", [0, 3, 4])
def test_content_checksum_mismatch_is_corrupt(core_impl, k):
    buf, starts = encoded(core_impl)
    damaged = bytearray(buf)
    damaged[starts[k] + 32] ^= 0x01  # the first payload byte
    result = core_impl.decode_records(bytes(damaged))
    assert_problem(core_impl, result, RECORDS[:k], starts[k], core_impl.WAL_CORRUPT)


def test_last_payload_byte_damage_is_corrupt_not_torn(core_impl):
    buf, starts = encoded(core_impl)
    damaged = buf[:-1] + bytes([buf[-1] ^ 0x40])
    result = core_impl.decode_records(damaged)
    assert_problem(core_impl, result, RECORDS[:-1], starts[-1], core_impl.WAL_CORRUPT)


def test_empty_payload_with_wrong_content_checksum_is_corrupt(core_impl):
    bad = raw_record(1, 1, 1, b"", ccrc=zlib.crc32(b"\x01") ^ 1)
    assert_problem(core_impl, core_impl.decode_records(bad), [], 0, core_impl.WAL_CORRUPT)


def test_type_byte_is_covered_by_the_content_checksum(core_impl):
    # A header whose checksum is right but whose content CRC was computed for another type.
    buf, _ = encoded(core_impl)
    bad = raw_record(2, 6, 3, b"payload", crc_type=3)
    result = core_impl.decode_records(buf + bad)
    assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_CORRUPT)


@pytest.mark.parametrize("forged", [
    {"rtype": 0},
    {"reserved8": 1},
    {"reserved8": 0x80},
    {"reserved16": 1},
    {"reserved16": 0x8000},
    {"index": 2**63},
    {"index": 2**64 - 1},
    {"term": 2**63},
], ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_invalid_header_fields_are_corrupt(core_impl, forged):
    buf, _ = encoded(core_impl)
    fields = {"rtype": 1, "index": 6, "term": 3, **forged}
    rtype, index, term = fields.pop("rtype"), fields.pop("index"), fields.pop("term")
    bad = raw_record(rtype, index, term, b"data", **fields)
    for tail in (b"", core_impl.encode_record(1, 7, 3, b"after")):
        result = core_impl.decode_records(buf + bad + tail)
        assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_CORRUPT)


def test_impossible_length_is_corrupt_even_at_the_end(core_impl):
    buf, _ = encoded(core_impl)
    limit = core_impl.DEFAULT_MAX_RECORD_SIZE
    for length in (limit + 1, 2**32 - 1):
        bad = raw_record(1, 6, 3, b"", length=length)
        result = core_impl.decode_records(buf + bad + b"some bytes")
        assert_problem(core_impl, result, RECORDS, len(buf), core_impl.WAL_CORRUPT)


def test_max_record_size_argument(core_impl):
    recs = [(1, 1, 1, b"x" * 5), (1, 2, 1, b"y" * 10), (1, 3, 1, b"z")]
    buf = core_impl.encode_records(recs)
    assert core_impl.decode_records(buf, 0, 10) == (recs, len(buf), core_impl.WAL_CLEAN, None)
    assert core_impl.decode_records(buf, max_record_size=10)[2] == core_impl.WAL_CLEAN
    result = core_impl.decode_records(buf, 0, 9)
    assert_problem(core_impl, result, recs[:1], 37, core_impl.WAL_CORRUPT)
    result = core_impl.decode_records(buf, max_record_size=4)
    assert_problem(core_impl, result, [], 0, core_impl.WAL_CORRUPT)
    # An over-limit length is corrupt even when the record is also cut short.
    result = core_impl.decode_records(buf[:37 + 32 + 3], max_record_size=9)
    assert_problem(core_impl, result, recs[:1], 37, core_impl.WAL_CORRUPT)


def test_decoding_stops_at_the_first_damage(core_impl):
    buf, starts = encoded(core_impl)
    damaged = bytearray(buf)
    damaged[starts[1] + 5] ^= 0xFF  # record 1's header; records 2.. are intact
    result = core_impl.decode_records(bytes(damaged))
    assert_problem(core_impl, result, RECORDS[:1], starts[1], core_impl.WAL_CORRUPT)


def test_corruption_offsets_with_an_offset_argument(core_impl):
    seg = core_impl.encode_segment_header()
    buf, starts = encoded(core_impl)
    damaged = bytearray(seg + buf)
    damaged[16 + starts[4] + 33] ^= 0x02  # the second payload byte of the last record
    result = core_impl.decode_records(damaged, 16)
    assert_problem(core_impl, result, RECORDS[:4], 16 + starts[4], core_impl.WAL_CORRUPT)
    torn = (seg + buf)[:16 + starts[4] + 20]
    result = core_impl.decode_records(memoryview(torn), 16 + starts[2])
    assert_problem(core_impl, result, RECORDS[2:4], 16 + starts[4], core_impl.WAL_TORN)


# -- encode_entries: the batch form of a log append ----------------------------------------

def test_encode_entries_equals_encode_records(core_impl):
    entries = [(3, b"a"), (3, b""), (4, b"x" * 300), (9, b"z")]
    got = core_impl.encode_entries(1, 10, 2, entries)
    want = core_impl.encode_records([(1, 10 + i, t, p) for i, (t, p) in enumerate(entries)])
    assert got == want
    assert core_impl.encode_entries(1, 10, 2, []) == b""
    assert core_impl.encode_entries(1, 10, 3, iter(entries)) == want


@pytest.mark.parametrize("entries, exc, msg", [
    ([(3, "text")], TypeError, "payload must be bytes"),
    ([(3, bytearray(b"x"))], TypeError, "payload must be bytes"),
    ([(1, b"x")], ValueError, "term 1 at 5 is below the previous 2"),
    ([(3, b"x"), (2, b"y")], ValueError, "term 2 at 6 is below the previous 3"),
    ([(3, b"x" * 11)], ValueError, "entry 5 of 11 bytes is over the record limit 10"),
    ([(3,)], ValueError, None),
])
def test_encode_entries_refuses_bad_batches(core_impl, entries, exc, msg):
    with pytest.raises(exc, match=msg):
        core_impl.encode_entries(1, 5, 2, entries, 10)
