"""Unit tests of the frame codec of the core, run on both implementations.

Specification: section 4 of ``fastraft._core_py``: a frame is a 4-byte little-endian payload
length then the payload; ``FrameDecoder.feed`` returns the frames completed by the data and
keeps the remainder (``pending``); a length over ``max_frame_size`` raises FrameTooLarge as
soon as the 4 length bytes arrive, and the decoder is dead afterwards (LocalProtocolError).
In skip mode (``skip_oversized=True``, the client port's) an oversized frame is handed out as
an ``OversizedFrame(size, head)`` once its first 64 body bytes (or all of a shorter body) have
arrived, and the rest of its body is dropped as it arrives, never buffered.
"""

from __future__ import annotations

import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError


def frame(payload: bytes) -> bytes:
    """A frame built from the layout, independently of the core."""
    return struct.pack("<I", len(payload)) + payload


PAYLOADS = [b"hello", b"", b"\x00" * 300, bytes(range(256)), b"", b"x"]


# -- encoding -----------------------------------------------------------------------------


def test_frame_constants(core_impl):
    assert core_impl.FRAME_HEADER_SIZE == 4
    assert core_impl.DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024


@pytest.mark.parametrize("payload", PAYLOADS[:4])
def test_encode_frame(core_impl, payload):
    out = core_impl.encode_frame(payload)
    assert type(out) is bytes
    assert out == frame(payload)


def test_encode_frame_length_is_little_endian(core_impl):
    assert core_impl.encode_frame(b"") == b"\x00\x00\x00\x00"
    assert core_impl.encode_frame(b"a" * 258)[:4] == b"\x02\x01\x00\x00"
    assert core_impl.encode_frame(b"a" * 70000)[:4] == struct.pack("<I", 70000)


def test_encode_frame_accepts_bytes_like(core_impl):
    assert core_impl.encode_frame(bytearray(b"abc")) == frame(b"abc")
    assert core_impl.encode_frame(memoryview(b"xabcx")[1:4]) == frame(b"abc")
    assert core_impl.encode_frame(memoryview(b"")) == frame(b"")
    # The length of a typed memoryview is its size in bytes, not its item count.
    words = array("H", [1, 2, 3])
    assert core_impl.encode_frame(memoryview(words)) == frame(words.tobytes())


@pytest.mark.parametrize("payload", ["text", None, 5, [b"a"], (b"a",)],
                         ids=["str", "None", "int", "list", "tuple"])
def test_encode_frame_rejects_non_bytes(core_impl, payload):
    with pytest.raises(TypeError):
        core_impl.encode_frame(payload)
    with pytest.raises(TypeError):
        core_impl.encode_frames([b"ok", payload])


def test_encode_frames(core_impl):
    out = core_impl.encode_frames(PAYLOADS)
    assert type(out) is bytes
    assert out == b"".join(frame(p) for p in PAYLOADS)
    assert core_impl.encode_frames(iter(PAYLOADS)) == out
    assert core_impl.encode_frames([]) == b""
    assert core_impl.encode_frames([bytearray(b"a"), memoryview(b"b")]) == frame(b"a") + frame(b"b")


# -- the decoder --------------------------------------------------------------------------


def test_decoder_defaults(core_impl):
    dec = core_impl.FrameDecoder()
    assert dec.max_frame_size == core_impl.DEFAULT_MAX_FRAME_SIZE
    assert dec.pending == 0
    assert core_impl.FrameDecoder(100).max_frame_size == 100
    assert core_impl.FrameDecoder(max_frame_size=7).max_frame_size == 7


@pytest.mark.parametrize("limit", [0, 1, 2**32 - 1])
def test_decoder_limit_range(core_impl, limit):
    assert core_impl.FrameDecoder(limit).max_frame_size == limit


@pytest.mark.parametrize("limit", [-1, 2**32])
def test_decoder_limit_out_of_range(core_impl, limit):
    with pytest.raises(ValueError):
        core_impl.FrameDecoder(limit)


def test_feed_one_frame(core_impl):
    dec = core_impl.FrameDecoder()
    out = dec.feed(frame(b"hello"))
    assert out == [b"hello"]
    assert type(out) is list and type(out[0]) is bytes
    assert dec.pending == 0


def test_feed_nothing(core_impl):
    dec = core_impl.FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.pending == 0
    dec.feed(b"\x05\x00")
    assert dec.feed(b"") == []
    assert dec.pending == 2


def test_feed_many_frames_at_once(core_impl):
    dec = core_impl.FrameDecoder()
    assert dec.feed(b"".join(frame(p) for p in PAYLOADS)) == PAYLOADS
    assert dec.pending == 0


def test_feed_byte_by_byte(core_impl):
    dec = core_impl.FrameDecoder()
    stream = b"".join(frame(p) for p in PAYLOADS)
    ends = []
    pos = 0
    for p in PAYLOADS:
        pos += 4 + len(p)
        ends.append(pos)
    got = []
    complete = 0  # bytes of stream that form complete frames
    for i in range(len(stream)):
        out = dec.feed(stream[i:i + 1])
        fed = i + 1
        finished = [k for k, e in enumerate(ends) if e == fed]
        assert out == [PAYLOADS[k] for k in finished], fed
        if finished:
            complete = fed
        assert dec.pending == fed - complete
        got += out
    assert got == PAYLOADS
    assert dec.pending == 0


@pytest.mark.parametrize("split", range(0, 19))
def test_feed_split_at_every_boundary(core_impl, split):
    stream = frame(b"abcdef") + frame(b"") + frame(b"xyz")  # 10 + 4 + 7 = 21 bytes
    dec = core_impl.FrameDecoder()
    first = dec.feed(stream[:split])
    second = dec.feed(stream[split:])
    assert first + second == [b"abcdef", b"", b"xyz"]
    assert first == [b"abcdef", b""][:(split >= 10) + (split >= 14)]


def test_remainder_is_kept(core_impl):
    dec = core_impl.FrameDecoder()
    data = frame(b"one") + frame(b"two") + frame(b"three")[:6]
    assert dec.feed(data) == [b"one", b"two"]
    assert dec.pending == 6
    assert dec.feed(b"re") == []
    assert dec.pending == 8
    assert dec.feed(b"e" + frame(b"four")[:2]) == [b"three"]
    assert dec.pending == 2
    assert dec.feed(frame(b"four")[2:]) == [b"four"]
    assert dec.pending == 0


def test_zero_length_frames(core_impl):
    dec = core_impl.FrameDecoder()
    assert dec.feed(b"\x00\x00") == []
    assert dec.pending == 2
    assert dec.feed(b"\x00\x00") == [b""]
    assert dec.pending == 0
    assert dec.feed(frame(b"") * 5) == [b""] * 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_bytes_like(core_impl, kind):
    dec = core_impl.FrameDecoder()
    assert dec.feed(kind(frame(b"abc") + frame(b"de")[:3])) == [b"abc"]
    assert dec.feed(kind(frame(b"de")[3:])) == [b"de"]


def test_frames_do_not_alias_the_fed_buffer(core_impl):
    dec = core_impl.FrameDecoder()
    data = bytearray(frame(b"abc") + frame(b"def")[:5])
    out = dec.feed(data)
    data[:] = b"X" * len(data)
    assert out == [b"abc"]
    assert dec.feed(b"ef") == [b"def"]


def test_decoders_are_independent(core_impl):
    a, b = core_impl.FrameDecoder(), core_impl.FrameDecoder()
    assert a.feed(frame(b"aaaa")[:3]) == []
    assert b.feed(frame(b"bb")[:5]) == []
    assert a.feed(frame(b"aaaa")[3:]) == [b"aaaa"]
    assert b.feed(frame(b"bb")[5:]) == [b"bb"]
    assert (a.pending, b.pending) == (0, 0)


# -- the size limit -----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1, 10, 1000])
def test_frame_of_exactly_the_limit_is_allowed(core_impl, limit):
    dec = core_impl.FrameDecoder(limit)
    payload = b"z" * limit
    assert dec.feed(frame(payload)) == [payload]
    # Its header alone does not trip the limit (and completes a zero-length frame).
    out = dec.feed(struct.pack("<I", limit))
    assert out == ([b""] if limit == 0 else [])
    assert dec.pending == (0 if limit == 0 else 4)


@pytest.mark.parametrize("limit", [0, 1, 10, 1000])
def test_frame_over_the_limit_raises_on_its_header(core_impl, limit):
    dec = core_impl.FrameDecoder(limit)
    header = struct.pack("<I", limit + 1)
    for i in range(3):
        assert dec.feed(header[i:i + 1]) == []
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(header[3:4])  # not one byte of the body has arrived
    assert info.value.size == limit + 1
    assert info.value.limit == limit
    assert isinstance(info.value, RemoteProtocolError)


def test_huge_announced_length_with_default_limit(core_impl):
    dec = core_impl.FrameDecoder()
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(b"\xff\xff\xff\xff")
    assert (info.value.size, info.value.limit) == (2**32 - 1, 16 * 1024 * 1024)


def test_largest_limit_accepts_any_length(core_impl):
    dec = core_impl.FrameDecoder(2**32 - 1)
    assert dec.feed(b"\xff\xff\xff\xff" + b"abc") == []
    assert dec.pending == 7


def test_too_large_frame_after_good_frames_in_one_feed(core_impl):
    dec = core_impl.FrameDecoder(8)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(frame(b"ok") + frame(b"fine") + struct.pack("<I", 9) + b"123")
    assert info.value.size == 9


def test_decoder_is_dead_after_frame_too_large(core_impl):
    dec = core_impl.FrameDecoder(4)
    assert dec.feed(frame(b"abcd")) == [b"abcd"]
    with pytest.raises(FrameTooLarge):
        dec.feed(frame(b"abcde"))
    for data in (frame(b"ok"), b"", frame(b"abcde")):
        with pytest.raises(LocalProtocolError) as info:
            dec.feed(data)
        assert not isinstance(info.value, RemoteProtocolError)
    assert dec.max_frame_size == 4


def test_a_dead_decoder_does_not_affect_a_new_one(core_impl):
    dead = core_impl.FrameDecoder(2)
    with pytest.raises(FrameTooLarge):
        dead.feed(frame(b"abc"))
    fresh = core_impl.FrameDecoder(2)
    assert fresh.feed(frame(b"ab")) == [b"ab"]


# -- skip mode (the client port): oversized frames are handed out as a head, then dropped -----

HEAD = 64


def over(core_impl, size: int, head: bytes):
    return core_impl.OversizedFrame(size, head)


def reference_skip(stream: bytes, limit: int) -> list:
    """What a skipping decoder returns for a whole stream: frames, and for each oversized
    frame whose head is complete, ``("over", size, head)``."""
    out, pos = [], 0
    while len(stream) - pos >= 4:
        (size,) = struct.unpack_from("<I", stream, pos)
        if size > limit:
            h = min(size, HEAD)
            if pos + 4 + h > len(stream):
                break
            out.append(("over", size, stream[pos + 4:pos + 4 + h]))
            pos += 4 + size
            continue
        if pos + 4 + size > len(stream):
            break
        out.append(stream[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out


def plain(frames: list) -> list:
    return [f if type(f) is bytes else ("over", f.size, f.head) for f in frames]


def test_skip_mode_is_opt_in(core_impl):
    assert core_impl.FrameDecoder(10).skip_oversized is False
    dec = core_impl.FrameDecoder(10, skip_oversized=True)
    assert dec.skip_oversized is True and dec.skipping == 0 and dec.partial_head is None
    assert core_impl.FrameDecoder(max_frame_size=3, skip_oversized=True).max_frame_size == 3
    with pytest.raises(FrameTooLarge):
        core_impl.FrameDecoder(10).feed(frame(b"x" * 11))


def test_oversized_frame_is_a_marker_in_stream_order(core_impl):
    dec = core_impl.FrameDecoder(100, skip_oversized=True)
    body = bytes(range(200))
    out = dec.feed(frame(b"before") + frame(body) + frame(b"after"))
    assert out[0] == b"before" and out[2] == b"after"
    marker = out[1]
    assert type(marker) is not bytes
    assert (marker.size, marker.head) == (200, body[:HEAD])
    assert marker == over(core_impl, 200, body[:HEAD])
    assert "size=200" in repr(marker)
    assert dec.pending == 0 and dec.skipping == 0


def test_oversized_body_is_dropped_as_it_arrives_never_buffered(core_impl):
    dec = core_impl.FrameDecoder(1000, skip_oversized=True)
    body = b"".join(b"%07d" % i for i in range(50_000))          # 350,000 bytes
    stream = frame(body) + frame(b"next")
    out = dec.feed(stream[:4 + 10])
    assert out == [] and dec.partial_head == body[:10] and dec.pending == 14
    out = dec.feed(stream[14:5000])
    assert plain(out) == [("over", len(body), body[:HEAD])]
    assert dec.pending == 0 and dec.skipping == len(body) - (5000 - 4)
    assert dec.partial_head is None
    pos = 5000
    for step in (1, 7, 65536, 100_000):
        assert dec.feed(memoryview(stream)[pos:pos + step]) == []
        pos += step
        assert dec.pending == 0                    # nothing of the body is kept
    assert dec.feed(bytearray(stream[pos:])) == [b"next"]
    assert dec.skipping == 0 and dec.pending == 0


def test_the_marker_waits_for_its_head(core_impl):
    dec = core_impl.FrameDecoder(4, skip_oversized=True)
    body = b"h" * 100
    data = frame(body)
    for i in range(4 + HEAD - 1):
        assert dec.feed(data[i:i + 1]) == []
    assert dec.partial_head == body[:HEAD - 1]
    assert plain(dec.feed(data[4 + HEAD - 1:4 + HEAD])) == [("over", 100, body[:HEAD])]
    assert dec.skipping == 100 - HEAD
    assert dec.feed(data[4 + HEAD:]) == [] and dec.skipping == 0


def test_short_oversized_frames_hand_out_their_whole_body(core_impl):
    dec = core_impl.FrameDecoder(0, skip_oversized=True)
    out = dec.feed(frame(b"") + frame(b"ab") + frame(b"") + frame(b"c" * 70))
    assert plain(out) == [b"", ("over", 2, b"ab"), b"", ("over", 70, b"c" * HEAD)]
    assert dec.pending == 0 and dec.skipping == 0


def test_huge_announced_length_is_skipped_not_fatal(core_impl):
    dec = core_impl.FrameDecoder(16, skip_oversized=True)
    out = dec.feed(b"\xff\xff\xff\xff" + b"z" * 100)
    assert plain(out) == [("over", 2**32 - 1, b"z" * HEAD)]
    assert dec.skipping == 2**32 - 1 - 100
    assert dec.feed(b"z" * 1000) == [] and dec.pending == 0


def test_partial_head_only_for_an_oversized_frame(core_impl):
    dec = core_impl.FrameDecoder(10, skip_oversized=True)
    dec.feed(frame(b"abc")[:5])                  # a frame within the limit, incomplete
    assert dec.partial_head is None and dec.pending == 5
    dec = core_impl.FrameDecoder(10, skip_oversized=True)
    dec.feed(struct.pack("<I", 11))
    assert dec.partial_head == b""
    strict = core_impl.FrameDecoder(10)
    strict.feed(frame(b"abc")[:5])
    assert strict.partial_head is None


@pytest.mark.parametrize("split", range(0, 120, 7))
def test_skip_mode_split_anywhere(core_impl, split):
    stream = frame(b"a" * 5) + frame(b"B" * 90) + frame(b"") + frame(b"C" * 20) + frame(b"d")
    want = reference_skip(stream, 10)
    dec = core_impl.FrameDecoder(10, skip_oversized=True)
    got = plain(dec.feed(stream[:split]) + dec.feed(stream[split:]))
    assert got == want
    assert dec.pending == 0 and dec.skipping == 0


@given(st.lists(st.one_of(st.binary(max_size=150),
                          st.integers(0, 400).map(lambda n: struct.pack("<I", n))),
                max_size=12).map(b"".join),
       st.sampled_from([0, 1, 10, 63, 64, 100]),
       st.lists(st.integers(0, 3000), max_size=12))
def test_skip_mode_matches_the_reference_on_any_stream(core_impl, stream, limit, cuts):
    dec = core_impl.FrameDecoder(limit, skip_oversized=True)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    got = []
    for lo, hi in zip(points, points[1:]):
        got += plain(dec.feed(stream[lo:hi]))
        assert dec.pending <= max(limit, HEAD) + 4
    assert got == reference_skip(stream, limit)
