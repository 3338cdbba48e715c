"""Decoder fuzzers: the frame codec (both core twins), peer frames, client requests and
responses, log commands and state-machine snapshot streams, fed random and structurally
mutated VALID encodings.

The properties:

- FrameDecoder, over any chunking and any length prefixes, gives exactly the frames a
  reference parser finds, raises only FrameTooLarge (then LocalProtocolError on reuse), and
  both twins agree;
- ``decode_peer`` raises only RemoteProtocolError, ``decode_request`` only RemoteProtocolError
  or InvalidRequest (with an integer ``req_id``), ``decode_response`` / ``decode_command``
  only RemoteProtocolError; whatever does decode is well-formed (checked field by field and
  by re-encoding it to the same value);
- the state machine answers (never raises) for any mutated command payload;
- ``SnapshotDecoder`` raises only RemoteProtocolError and ``KVStateMachine.restore`` only
  CorruptRecordError; an unmutated stream restores to an equal machine.

Each target runs one batch in CI and batches until its share of FASTRAFT_FUZZ_SECONDS is
spent in a long run (conftest.py); the inputs are counted.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastraft import codec
from fastraft.errors import (CorruptRecordError, FrameTooLarge, InvalidRequest,
                             LocalProtocolError, RemoteProtocolError)
from fastraft.raft import Message, MsgType, Snapshot, SnapshotMeta
from fastraft.statemachine.machine import KVStateMachine


def _sibling(name: str):
    modname = f"fastraft_fuzz_{name}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname,
                                                      Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


mut = _sibling("mutate")

BATCH = settings(max_examples=150, deadline=None, database=None, print_blob=True,
                 suppress_health_check=list(HealthCheck))
LIMITS = codec.Limits(max_key=64, max_value=512, max_scan=100)
MAX_BYTES = 1 << 16
U64 = 2**64 - 1

u64 = st.one_of(st.integers(0, 5), st.integers(0, U64), st.sampled_from([2**63 - 1, U64]))
small = st.integers(0, 1000)


# -- 1. the frame codec ------------------------------------------------------------------------

def _reference_frames(stream: bytes, limit: int):
    """(frames, oversized?) of a byte stream: what a correct decoder must produce."""
    out, pos = [], 0
    while len(stream) - pos >= 4:
        (size,) = struct.unpack_from("<I", stream, pos)
        if size > limit:
            return out, True
        if pos + 4 + size > len(stream):
            break
        out.append(stream[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out, False


def _chunks(stream: bytes, cuts: list[int], kinds: list[int]):
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for k, (lo, hi) in enumerate(zip(points, points[1:])):
        piece = stream[lo:hi]
        kind = kinds[k % len(kinds)] if kinds else 0
        yield (piece, bytearray(piece), memoryview(piece))[kind]


def _run_decoder(core, limit: int, stream: bytes, cuts, kinds):
    dec = core.FrameDecoder(limit)
    got, too_large = [], False
    for piece in _chunks(stream, cuts, kinds):
        try:
            got.extend(dec.feed(piece))
        except FrameTooLarge:
            too_large = True
            with pytest.raises(LocalProtocolError):
                dec.feed(b"x")
            break
    return got, too_large, dec


frame_payloads = st.lists(st.binary(max_size=300), max_size=12)
limits = st.sampled_from([0, 1, 5, 64, 300, 1 << 16, 0xFFFFFFFF])


def test_frame_decoder_well_formed_streams(core_impl, fuzz):
    @BATCH
    @given(frame_payloads, limits, st.lists(st.integers(0, 10**6), max_size=40),
           st.lists(st.integers(0, 2), max_size=5))
    def batch(payloads, limit, cuts, kinds):
        fuzz.count(f"frames/{core_impl.__name__.rsplit('.', 1)[1]}/valid")
        stream = core_impl.encode_frames(payloads)
        got, too_large, dec = _run_decoder(core_impl, limit, stream, cuts, kinds)
        fits = [p for p in payloads if len(p) <= limit]
        if len(fits) == len(payloads):
            assert not too_large and got == payloads and dec.pending == 0
        else:
            assert too_large
            first_bad = next(i for i, p in enumerate(payloads) if len(p) > limit)
            assert got == payloads[:len(got)] and len(got) <= first_bad

    fuzz.run("frames", batch)


def test_frame_decoder_random_streams_match_reference(core_impl, fuzz):
    @BATCH
    @given(st.one_of(st.binary(max_size=400),
                     st.lists(st.one_of(st.binary(max_size=40),
                                        st.integers(0, 0xFFFFFFFF).map(
                                            lambda n: struct.pack("<I", n))),
                              max_size=12).map(b"".join)),
           limits, st.lists(st.integers(0, 10**6), max_size=40),
           st.lists(st.integers(0, 2), max_size=5))
    def batch(stream, limit, cuts, kinds):
        fuzz.count(f"frames/{core_impl.__name__.rsplit('.', 1)[1]}/random")
        want, want_large = _reference_frames(stream, limit)
        got, too_large, _dec = _run_decoder(core_impl, limit, stream, cuts, kinds)
        assert too_large == want_large
        if too_large:      # frames of the failing feed are discarded with it
            assert got == want[:len(got)]
        else:
            assert got == want

    fuzz.run("frames", batch)


# -- valid encodings ---------------------------------------------------------------------------

@st.composite
def messages(draw):
    t = draw(st.sampled_from(list(MsgType)))
    term = draw(u64)
    entries = []
    if t == MsgType.APP:
        ts = sorted(draw(st.lists(st.integers(0, term), max_size=5)))
        entries = [(x, draw(st.binary(max_size=20))) for x in ts]
    snap, nbytes = None, 0
    if t == MsgType.SNAP:
        voters = draw(st.frozensets(st.integers(1, U64), min_size=1, max_size=5))
        outgoing = draw(st.frozensets(st.integers(1, U64), max_size=3))
        snap = Snapshot(SnapshotMeta(draw(u64), draw(u64), voters, outgoing))
        nbytes = draw(u64)
    m = Message(t, draw(u64), draw(u64), term, draw(u64), draw(u64), entries, draw(u64),
                draw(st.booleans()), draw(u64), draw(u64), draw(u64), snap, draw(st.booleans()))
    return codec.encode_message(m, nbytes)


peer_bodies = st.one_of(
    messages(),
    st.builds(codec.encode_hello, st.text(max_size=20), u64, u64),
    st.builds(codec.encode_hello, st.text(max_size=20), u64, u64, st.text(max_size=30)),
    st.builds(codec.encode_welcome, u64),
    st.builds(codec.encode_refuse, st.text(max_size=40)),
    st.builds(codec.encode_snap_chunk, u64, u64, u64, st.binary(max_size=64)),
)

keys = st.binary(max_size=80)          # a few above LIMITS.max_key
values = st.binary(max_size=600)       # a few above LIMITS.max_value
req_id = st.one_of(st.integers(0, 10), u64)


def _sess():
    return st.tuples(st.integers(0, 5) | u64, st.integers(0, 5) | u64, st.integers(0, 5) | u64)


request_bodies = st.one_of(
    st.builds(lambda r, k, s: codec.encode_request(r, codec.OP_GET, k, s), req_id, keys,
              st.booleans()),
    st.builds(lambda r, s, k, v: codec.encode_request(r, codec.OP_PUT, *s, k, v), req_id,
              _sess(), keys, values),
    st.builds(lambda r, s, k: codec.encode_request(r, codec.OP_DELETE, *s, k), req_id,
              _sess(), keys),
    st.builds(lambda r, s, k, e, v: codec.encode_request(r, codec.OP_CAS, *s, k, e, v), req_id,
              _sess(), keys, st.none() | values, values),
    st.builds(lambda r, p, n, s: codec.encode_request(r, codec.OP_SCAN, p, n, s), req_id, keys,
              st.integers(0, 10**6) | u64, st.booleans()),
    st.builds(lambda r: codec.encode_request(r, codec.OP_REGISTER), req_id),
    st.builds(lambda r, s, f: codec.encode_request(r, codec.OP_KEEPALIVE, s, f), req_id, u64,
              u64),
    st.builds(lambda r: codec.encode_request(r, codec.OP_STATUS), req_id),
)

ts = st.integers(0, 2**45) | u64
command_bodies = st.one_of(
    st.builds(lambda t: codec.encode_command([codec.CMD_REGISTER, t]), ts),
    st.builds(lambda t, s, k, v: codec.encode_command([codec.CMD_PUT, t, *s, k, v]), ts,
              _sess(), keys, values),
    st.builds(lambda t, s, k: codec.encode_command([codec.CMD_DELETE, t, *s, k]), ts,
              _sess(), keys),
    st.builds(lambda t, s, k, e, v: codec.encode_command([codec.CMD_CAS, t, *s, k, e, v]), ts,
              _sess(), keys, st.none() | values, values),
    st.builds(lambda t, s, f: codec.encode_command([codec.CMD_KEEPALIVE, t, s, f]), ts, u64,
              u64),
)

#: Raw inputs besides mutations: random bytes and valid msgpack of arbitrary shape.
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, U64) | st.binary(max_size=20)
    | st.text(max_size=10) | st.floats(),
    lambda c: st.lists(c, max_size=16) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=40)


def _swap_field(body: bytes, i: int, weird) -> bytes:
    """Replace top-level field ``i`` of a valid array body by a value of another type."""
    v = mut.unpack_loose(body)
    v[i % len(v)] = weird
    return mut.pack(v)


def field_swapped(valid):
    """Structure-aware type swaps: one field of a valid encoding replaced by a weird value."""
    return st.builds(_swap_field, valid, st.integers(0, 20),
                     st.sampled_from(range(len(mut.WEIRD_VALUES))).map(
                         lambda k: mut.unpack_loose(mut.pack(mut.WEIRD_VALUES[k]))))


def raw_and_mutated(valid):
    return st.one_of(
        field_swapped(valid),
        mut.mutated(valid).map(lambda t: t[1]),
        mut.mutated(valid).map(lambda t: t[1]),
        mut.mutated(valid).map(lambda t: t[1]),
        st.binary(max_size=200),
        msgpack_values.map(mut.pack),
        valid,
    )


# -- well-formedness of what decodes -----------------------------------------------------------

def _is_u64(v) -> bool:
    return type(v) is int and 0 <= v <= U64


def check_peer(out) -> None:
    kind = out.kind
    if kind == codec.P_MSG:
        assert type(out) is codec.PeerMessage
        m, sm = out.message, out.snap
        assert isinstance(m.type, MsgType) and m.snapshot is None
        for f in ("to", "frm", "term", "log_term", "index", "commit", "hint_index",
                  "hint_term", "context"):
            assert _is_u64(getattr(m, f)), f
        assert type(m.reject) is bool and type(m.transfer) is bool
        prev = 0
        for t, p in m.entries:
            assert _is_u64(t) and prev <= t <= m.term and type(p) is bytes
            prev = t
        assert not m.entries or m.type == MsgType.APP
        assert (sm is not None) == (m.type == MsgType.SNAP)
        nbytes = 0
        if sm is not None:
            meta = sm.meta
            assert _is_u64(meta.index) and _is_u64(meta.term) and _is_u64(sm.nbytes)
            assert meta.voters and all(_is_u64(i) and i for i in meta.voters)
            assert all(_is_u64(i) and i for i in meta.outgoing)
            m_full = out.with_snapshot(None)
            assert m_full.snapshot.meta == meta and m_full._replace(snapshot=None) == m
            nbytes = sm.nbytes
        else:
            m_full = m
        again = codec.decode_peer(codec.encode_message(m_full, nbytes), MAX_BYTES)
        assert again == out
    elif kind == codec.P_HELLO:
        assert type(out) is codec.Hello
        assert _is_u64(out.version) and type(out.cluster) is str and len(out.cluster) <= 256
        assert _is_u64(out.frm) and _is_u64(out.to)
        assert type(out.addr) is str and len(out.addr) <= codec.MAX_ADDRESS
        again = codec.decode_peer(codec.encode_hello(out.cluster, out.frm, out.to, out.addr),
                                  MAX_BYTES)
        assert again[2:] == (out.cluster, out.frm, out.to, out.addr)
    elif kind == codec.P_WELCOME:
        assert type(out) is codec.Welcome
        assert _is_u64(out.version) and _is_u64(out.node_id)
    elif kind == codec.P_REFUSE:
        assert type(out) is codec.Refuse
        assert type(out.reason) is str and len(out.reason) <= 500
    elif kind == codec.P_SNAP_CHUNK:
        assert type(out) is codec.SnapshotChunk
        assert all(_is_u64(x) for x in (out.term, out.index, out.offset))
        assert type(out.data) is bytes
        assert codec.decode_peer(codec.encode_snap_chunk(*out[1:]), MAX_BYTES) == out
    else:
        raise AssertionError(f"unknown kind decoded: {out!r}")


def check_request(r: codec.Request) -> None:
    assert _is_u64(r.req_id) and r.op in codec.OP_NAMES
    assert type(r.key) is bytes and len(r.key) <= LIMITS.max_key
    if r.op in (codec.OP_PUT, codec.OP_DELETE, codec.OP_CAS):
        assert r.session >= 1 and 1 <= r.seq and r.first_unacked <= r.seq
        assert _is_u64(r.session) and _is_u64(r.seq) and _is_u64(r.first_unacked)
    if r.op in (codec.OP_PUT, codec.OP_CAS):
        assert type(r.value) is bytes and len(r.value) <= LIMITS.max_value
    if r.op == codec.OP_CAS:
        assert r.expected is None or (type(r.expected) is bytes
                                      and len(r.expected) <= LIMITS.max_value)
    if r.op == codec.OP_SCAN:
        assert 1 <= r.limit <= LIMITS.max_scan
    if r.op in (codec.OP_GET, codec.OP_SCAN):
        assert type(r.stale) is bool
    if r.op == codec.OP_KEEPALIVE:
        assert r.session >= 1 and _is_u64(r.session) and _is_u64(r.first_unacked)


_CMD_LEN = {codec.CMD_REGISTER: 2, codec.CMD_PUT: 7, codec.CMD_DELETE: 6, codec.CMD_CAS: 8,
            codec.CMD_KEEPALIVE: 4}


def check_command(c: tuple) -> None:
    assert type(c) is tuple and c[0] in _CMD_LEN and len(c) == _CMD_LEN[c[0]]
    if c[0] == codec.CMD_KEEPALIVE:
        assert all(_is_u64(x) for x in c[1:])
        return
    assert all(_is_u64(x) for x in c[1:5 if c[0] != codec.CMD_REGISTER else 2])
    if c[0] in (codec.CMD_PUT, codec.CMD_DELETE, codec.CMD_CAS):
        assert type(c[5]) is bytes
    if c[0] == codec.CMD_PUT:
        assert type(c[6]) is bytes
    if c[0] == codec.CMD_CAS:
        assert (c[6] is None or type(c[6]) is bytes) and type(c[7]) is bytes


# -- 2. peer frames, requests, responses, commands ---------------------------------------------

def test_peer_frames(fuzz):
    @BATCH
    @given(raw_and_mutated(peer_bodies), st.sampled_from([1, 64, MAX_BYTES]))
    def batch(body, max_bytes):
        fuzz.count("peer")
        try:
            out = codec.decode_peer(body, max_bytes)
        except RemoteProtocolError:
            return
        check_peer(out)

    fuzz.run("peer", batch)


def test_client_requests_and_responses(fuzz):
    @BATCH
    @given(raw_and_mutated(request_bodies))
    def batch(body):
        fuzz.count("request")
        try:
            r = codec.decode_request(body, LIMITS, MAX_BYTES)
        except InvalidRequest as exc:
            assert _is_u64(exc.req_id)
        except RemoteProtocolError:
            pass
        else:
            check_request(r)
        try:
            rid, status, vals = codec.decode_response(body, MAX_BYTES)
        except RemoteProtocolError:
            pass
        else:
            assert type(rid) is int and type(status) is int and type(vals) is list

    fuzz.run("request", batch)


def test_commands_and_the_state_machine(fuzz):
    @BATCH
    @given(raw_and_mutated(command_bodies))
    def batch(payload):
        fuzz.count("command")
        try:
            c = codec.decode_command(payload)
        except RemoteProtocolError:
            pass
        else:
            check_command(c)
        # The state machine answers whatever a log holds (a register first, so the
        # mutated command may find its session).
        sm = KVStateMachine()
        sm.apply(1, codec.encode_command([codec.CMD_REGISTER, 0]))
        answer = sm.apply(2, payload)
        assert answer is None or (type(answer) is tuple and len(answer) == 2)
        sm.kv.check()

    fuzz.run("command", batch)


# -- 3. snapshot streams -----------------------------------------------------------------------

@st.composite
def machines(draw):
    sm = KVStateMachine(session_timeout_ms=draw(st.integers(1, 10**6)))
    n = draw(st.integers(0, 30))
    index = 0
    clock = 0
    sessions = []
    for _ in range(n):
        index += 1
        clock += draw(st.integers(0, 50))
        op = draw(st.integers(0, 3))
        if op == 0 or not sessions:
            sm.apply(index, codec.encode_command([codec.CMD_REGISTER, clock]))
            sessions.append([index, 0])
            continue
        s = draw(st.sampled_from(sessions))
        s[1] += 1
        key = draw(st.binary(max_size=6))
        if op == 1:
            cmd = [codec.CMD_PUT, clock, s[0], s[1], s[1], key, draw(st.binary(max_size=30))]
        elif op == 2:
            cmd = [codec.CMD_DELETE, clock, s[0], s[1], 1, key]
        else:
            cmd = [codec.CMD_CAS, clock, s[0], s[1], 1, key, None, b"c"]
        sm.apply(index, codec.encode_command(cmd))
    return sm


def _state(sm: KVStateMachine):
    return (sm.applied_index, sm.clock, sm.session_timeout_ms, sorted(sm.kv.scan(b"", 10**9)),
            b"".join(sm.snapshot_chunks()))


def test_snapshot_streams(fuzz):
    @BATCH
    @given(machines(), st.integers(1, 97), st.randoms(use_true_random=False),
           st.integers(0, 3))
    def batch(sm, chunk, rnd, ops):
        fuzz.count("snapshot_stream")
        stream = b"".join(sm.snapshot_chunks(chunk))
        data = mut.mutate_bytes(rnd, stream, ops) if ops else stream
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
        dec = codec.SnapshotDecoder()
        try:
            for p in pieces:
                dec.feed(p)
        except RemoteProtocolError:
            pass
        try:
            got = KVStateMachine.restore(pieces)
        except CorruptRecordError:
            assert ops, "an unmutated snapshot stream must restore"
            return
        got.kv.check()
        if not ops or data == stream:
            assert _state(got) == _state(sm)

    fuzz.run("snapshot_stream", batch)


# -- bugs found by the fuzzers (all fixed): regression tests ------------------------------

# Regression test (found by the fuzzers, fixed in e0e0028): more buffered bytes
# than max_buffer_size escaped SnapshotDecoder.feed as msgpack.BufferFull.
def test_snapshot_decoder_buffer_full_is_a_protocol_error():
    dec = codec.SnapshotDecoder(max_bytes=16)
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\x91" * 100)         # 100 nested one-element arrays, never complete


# Regression test (found by the fuzzers, fixed in e0e0028): the same through restore.
def test_restore_buffer_full_is_corruption(monkeypatch):
    real = codec.SnapshotDecoder
    monkeypatch.setattr(codec, "SnapshotDecoder", lambda: real(max_bytes=16))
    with pytest.raises(CorruptRecordError):
        KVStateMachine.restore([b"\x91" * 100])


# Regression test (found by the fuzzers, fixed in e0e0028): a value over 64 MiB (allowed
# up to 256 MiB) made a legitimate snapshot unrestorable.
def test_snapshot_with_a_value_over_64_mib_restores():
    sm = KVStateMachine()
    sm.apply(1, codec.encode_command([codec.CMD_REGISTER, 1]))
    sm.apply(2, codec.encode_command([codec.CMD_PUT, 2, 1, 1, 1, b"k", b"v" * (65 << 20)]))
    got = KVStateMachine.restore(sm.snapshot_chunks())
    assert got.get(b"k") == b"v" * (65 << 20)



# Regression test (found by the fuzzers, fixed in a431e80): a P_MSG
# whose type field was a list/map escaped decode_peer as TypeError (a traceback per frame
# on a live node).
def test_peer_message_type_of_another_type_is_a_protocol_error():
    body = codec.pack([codec.P_MSG, [], 0, 0, 0, 0, 0, [], 0, False, 0, 0, 0, None, False])
    with pytest.raises(RemoteProtocolError):
        codec.decode_peer(body, 1 << 20)


# -- exhaustive field-type swaps ---------------------------------------------------------------

_SAMPLE_PEER = [
    codec.encode_message(Message(MsgType.APP, 2, 1, 5, 4, 10, [(4, b"a"), (5, b"b")], 9)),
    codec.encode_message(Message(MsgType.SNAP, 2, 1, 5, snapshot=Snapshot(
        SnapshotMeta(50, 4, frozenset({1, 2}), frozenset({3})))), 99),
    codec.encode_hello("c", 1, 2), codec.encode_welcome(3), codec.encode_refuse("no"),
    codec.encode_snap_chunk(1, 2, 3, b"xy"),
]
_SAMPLE_REQUESTS = [
    codec.encode_request(1, codec.OP_GET, b"k", False),
    codec.encode_request(1, codec.OP_PUT, 1, 2, 1, b"k", b"v"),
    codec.encode_request(1, codec.OP_DELETE, 1, 2, 1, b"k"),
    codec.encode_request(1, codec.OP_CAS, 1, 2, 1, b"k", None, b"v"),
    codec.encode_request(1, codec.OP_SCAN, b"k", 5, True),
    codec.encode_request(1, codec.OP_REGISTER), codec.encode_request(1, codec.OP_KEEPALIVE, 1, 1),
    codec.encode_request(1, codec.OP_STATUS),
]
_SAMPLE_COMMANDS = [
    codec.encode_command([codec.CMD_REGISTER, 1]),
    codec.encode_command([codec.CMD_PUT, 1, 1, 2, 1, b"k", b"v"]),
    codec.encode_command([codec.CMD_DELETE, 1, 1, 2, 1, b"k"]),
    codec.encode_command([codec.CMD_CAS, 1, 1, 2, 1, b"k", None, b"v"]),
    codec.encode_command([codec.CMD_KEEPALIVE, 1, 1, 1]),
]


def _every_swap(samples):
    for body in samples:
        n = len(mut.unpack_loose(body))
        for i in range(n):
            for k in range(len(mut.WEIRD_VALUES)):
                yield _swap_field(body, i, mut.unpack_loose(mut.pack(mut.WEIRD_VALUES[k])))


def test_every_field_of_every_frame_with_every_wrong_type(fuzz):
    """Each top-level field of a valid peer frame, request and command replaced by each
    value of WEIRD_VALUES (deterministic, exhaustive)."""
    for body in _every_swap(_SAMPLE_PEER):
        fuzz.count("swap/peer")
        try:
            check_peer(codec.decode_peer(body, MAX_BYTES))
        except RemoteProtocolError:
            pass
    for body in _every_swap(_SAMPLE_REQUESTS):
        fuzz.count("swap/request")
        try:
            check_request(codec.decode_request(body, LIMITS, MAX_BYTES))
        except InvalidRequest as exc:
            assert _is_u64(exc.req_id)
        except RemoteProtocolError:
            pass
    for body in _every_swap(_SAMPLE_COMMANDS):
        fuzz.count("swap/command")
        try:
            check_command(codec.decode_command(body))
        except RemoteProtocolError:
            pass
