"""Unit tests of the frame codec of the core, run on both implementations.

Specification: section 4 of ``fastraft._core_py``: a frame is a 4-byte little-endian payload
length then the payload; ``FrameDecoder.feed`` returns the frames completed by the data and
keeps the remainder (``pending``); a length over ``max_frame_size`` raises FrameTooLarge as
soon as the 4 length bytes arrive, and the decoder is dead afterwards (LocalProtocolError).
"""

from __future__ import annotations

import struct
from array import array

import pytest

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
