"""fastraft.codec: round trips of every frame kind, and strict decoding: whatever bytes or
msgpack values arrive, the decoders raise only RemoteProtocolError (close the connection) or
InvalidRequest (answer it), never anything else, and never hand out a malformed message."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft import codec
from fastraft.errors import InvalidRequest, RemoteProtocolError
from fastraft.raft import Message, MsgType, Snapshot, SnapshotMeta

LIMITS = codec.Limits(max_key=64, max_value=256, max_scan=100)


def test_peer_message_round_trip():
    m = Message(MsgType.APP, 2, 1, 7, log_term=6, index=10, entries=[(6, b"a"), (7, b"")],
                commit=9, reject=False, hint_index=0, hint_term=0, context=3, transfer=False)
    out = codec.decode_peer(codec.encode_message(m), 1 << 20)
    assert type(out) is codec.PeerMessage
    assert out.kind == codec.P_MSG and out.message == m and out.snap is None
    s = Message(MsgType.SNAP, 2, 1, 7, snapshot=Snapshot(SnapshotMeta(50, 6, frozenset({1, 2}))))
    out = codec.decode_peer(codec.encode_message(s, 1234), 1 << 20)
    assert out.message.snapshot is None
    assert out.snap.meta == s.snapshot.meta and out.snap.nbytes == 1234
    # the receiving side attaches its file (here a stand-in handle) to get the message back
    assert out.with_snapshot("the-file") == s._replace(
        entries=[], snapshot=Snapshot(s.snapshot.meta, "the-file"))


def test_handshake_and_chunk_round_trip():
    assert codec.decode_peer(codec.encode_hello("c", 1, 2), 100) == codec.Hello(
        codec.P_HELLO, codec.PROTOCOL_VERSION, "c", 1, 2)
    assert codec.decode_peer(codec.encode_welcome(3), 100) == codec.Welcome(
        codec.P_WELCOME, codec.PROTOCOL_VERSION, 3)
    assert codec.decode_peer(codec.encode_refuse("no"), 100) == codec.Refuse(
        codec.P_REFUSE, "no")
    chunk = codec.decode_peer(codec.encode_snap_chunk(1, 2, 3, b"xy"), 100)
    assert type(chunk) is codec.SnapshotChunk
    assert (chunk.term, chunk.index, chunk.offset, chunk.data) == (1, 2, 3, b"xy")
    # each is still the plain tuple led by its kind code (what the fault proxy reads)
    hello = codec.decode_peer(codec.encode_hello("c", 1, 2), 100)
    assert type(hello) is codec.Hello and (hello.frm, hello.to) == (1, 2)
    assert hello == (codec.P_HELLO, codec.PROTOCOL_VERSION, "c", 1, 2, "")
    told = codec.decode_peer(codec.encode_hello("c", 1, 2, "h:1"), 100)
    assert told.addr == "h:1" and told[:5] == hello[:5]


@pytest.mark.parametrize("body, why", [
    ([codec.P_MSG, 1, 2, 1, 5, 0, 0, [6, b"x"], 0, False, 0, 0, 0, None, False],
     "above the message term"),
    ([codec.P_MSG, 1, 2, 1, 5, 0, 0, [3, b"x", 2, b"y"], 0, False, 0, 0, 0, None, False],
     "non-decreasing"),
    ([codec.P_MSG, 3, 2, 1, 5, 0, 0, [3, b"x"], 0, False, 0, 0, 0, None, False],
     "only APP messages carry entries"),
    ([codec.P_MSG, 99, 2, 1, 5, 0, 0, [], 0, False, 0, 0, 0, None, False], "unknown message"),
    ([codec.P_MSG, 1, 2, 1, -5, 0, 0, [], 0, False, 0, 0, 0, None, False], "term"),
    ([codec.P_MSG, 1, 2, 1, 5, 0, 0, [], 0, 1, 0, 0, 0, None, False], "booleans"),
    ([codec.P_MSG, 9, 2, 1, 5, 0, 0, [], 0, False, 0, 0, 0, None, False], "without a snapshot"),
    # terms and indexes the WAL could not store, or count up from (the live fuzzer's
    # term 2**63 - 1 once left a node failing every Ready)
    ([codec.P_MSG, 3, 2, 1, 2**63 - 1, 0, 0, [], 0, False, 0, 0, 0, None, False], "term"),
    ([codec.P_MSG, 3, 2, 1, 5, 0, 2**62 + 1, [], 0, False, 0, 0, 0, None, False], "index"),
    ([codec.P_MSG, 1, 2, 1, 5, 0, 0, [], 2**63, False, 0, 0, 0, None, False], "commit"),
    ([codec.P_SNAP_CHUNK, 2**63, 1, 0, b""], "snapshot term"),
    ([codec.P_HELLO, 1, 5, 1, 2], "cluster name"),
    ([42], "unknown peer frame kind"),
])
def test_peer_frames_are_validated(body, why):
    with pytest.raises(RemoteProtocolError, match=why):
        codec.decode_peer(codec.pack(body), 1 << 20)


@pytest.mark.parametrize("args, why", [
    ([codec.OP_PUT, 1, 1, 1, b"k" * 65, b"v"], "over the limit of 64"),
    ([codec.OP_PUT, 1, 1, 1, b"k", b"v" * 257], "over the limit of 256"),
    ([codec.OP_PUT, 0, 1, 1, b"k", b"v"], "need a session"),
    ([codec.OP_PUT, 1, 0, 0, b"k", b"v"], "1 <= seq"),
    ([codec.OP_PUT, 1, 1, 1, "k", b"v"], "must be bytes"),
    ([codec.OP_GET, b"k"], "takes 2 to 3 arguments"),
    ([codec.OP_GET, b"k", 1], "boolean"),
    ([codec.OP_GET, b"k", False, 1], "boolean"),
    ([codec.OP_PUT, 1, 1, 1, b"k", b"v", -1], "lease must be an unsigned"),
    ([codec.OP_CAS_REV, 1, 1, 1, b"k", "3", b"v", 0], "expected revision"),
    ([codec.OP_CAS_REV, 1, 1, 1, b"k", 3, b"v"], "takes 7 arguments"),
    ([codec.OP_LEASE_GRANT, 1, 1, 1, 999], "TTL must be 1000"),
    ([codec.OP_LEASE_GRANT, 1, 1, 1, 1.5], "unsigned"),
    ([codec.OP_LEASE_REVOKE, 1, 1, 1, 0], "lease 0"),
    ([codec.OP_LEASE_KEEPALIVE, 0], "lease 0"),
    ([codec.OP_REVISION, 1], "boolean"),
    ([codec.OP_WATCH, "p", 0], "must be bytes"),
    ([codec.OP_WATCH, b"p", -1], "start revision"),
    ([codec.OP_WATCH_CANCEL, None], "watch id"),
    ([77], "unknown operation"),
])
def test_invalid_requests_carry_their_id(args, why):
    with pytest.raises(InvalidRequest, match=why) as e:
        codec.decode_request(codec.pack([41] + args), LIMITS, 1 << 20)
    assert e.value.req_id == 41


def test_coordination_requests_decode_to_commands():
    def req(*args):
        return codec.decode_request(codec.pack([9, *args]), LIMITS, 1 << 20)
    r = req(codec.OP_PUT, 1, 2, 1, b"k", b"v", 7)
    assert codec.command_tuple(r, 5) == (codec.CMD_PUT, 5, 1, 2, 1, b"k", b"v", 7)
    r = req(codec.OP_PUT, 1, 2, 1, b"k", b"v", 0)       # lease 0: the shape without one
    assert codec.command_tuple(r, 5) == (codec.CMD_PUT, 5, 1, 2, 1, b"k", b"v")
    r = req(codec.OP_CAS, 1, 2, 1, b"k", None, b"v", 3)
    assert codec.command_tuple(r, 5) == (codec.CMD_CAS, 5, 1, 2, 1, b"k", None, b"v", 3)
    r = req(codec.OP_CAS_REV, 1, 2, 1, b"k", 4, b"v", 0)
    assert codec.command_tuple(r, 5) == (codec.CMD_CAS_REV, 5, 1, 2, 1, b"k", 4, b"v", 0)
    r = req(codec.OP_LEASE_GRANT, 1, 2, 1, 5000)
    assert codec.command_tuple(r, 5) == (codec.CMD_LEASE_GRANT, 5, 1, 2, 1, 5000)
    r = req(codec.OP_LEASE_REVOKE, 1, 2, 1, 11)
    assert codec.command_tuple(r, 5) == (codec.CMD_LEASE_REVOKE, 5, 1, 2, 1, 11)
    r = req(codec.OP_LEASE_KEEPALIVE, 11)
    assert codec.command_tuple(r, 5) == (codec.CMD_LEASE_KEEPALIVE, 5, 11)
    for r in (req(codec.OP_PUT, 1, 2, 1, b"k", b"v", 7), req(codec.OP_LEASE_KEEPALIVE, 11),
              req(codec.OP_CAS_REV, 1, 2, 1, b"k", 4, b"v", 9)):
        cmd = codec.command_tuple(r, 5)
        assert codec.decode_command(codec.encode_command(cmd)) == cmd
    assert req(codec.OP_GET, b"k", False, True).with_rev
    assert req(codec.OP_WATCH, b"p/", 0).rev == 0 and req(codec.OP_REVISION, True).stale


@pytest.mark.parametrize("cmd, why", [
    ([codec.CMD_PUT, 1, 1, 1, 1, b"k", b"v", -1], "lease"),
    ([codec.CMD_PUT, 1, 1, 1, 1, b"k", b"v", 1, 2], "fields"),
    ([codec.CMD_CAS_REV, 1, 1, 1, 1, b"k", None, b"v", 0], "expected revision"),
    ([codec.CMD_LEASE_GRANT, 1, 1, 1, 1, "5"], "ttl"),
    ([codec.CMD_LEASE_KEEPALIVE, 1, b"x"], "lease"),
    ([codec.CMD_TICK, 1, 2], "fields"),
])
def test_coordination_commands_are_validated(cmd, why):
    with pytest.raises(RemoteProtocolError, match=why):
        codec.decode_command(codec.pack(cmd))


def test_watch_frames_round_trip_and_are_validated():
    events = [(5, 0, b"k", b"v"), (6, 1, b"k", None)]
    body = codec.encode_watch_frame(7, codec.encode_events(events), 9)
    rid, status, values = codec.decode_response(body, 1 << 20)
    assert (rid, status) == (7, codec.ST_OK)
    assert codec.decode_watch_frame(values) == (events, 9)
    for bad in ([[5, 0, b"k"], 9], [[5, 2, b"k", b"v"], 9], [[5, 1, b"k", b"v"], 9],
                [[0, 0, b"k", b"v"], 9], [[5, 0, b"k", b"v"]], "x"):
        with pytest.raises(RemoteProtocolError):
            codec.decode_watch_frame(bad)


def test_scan_limit_is_bounded():
    r = codec.decode_request(codec.pack([1, codec.OP_SCAN, b"p", 10**6, False]), LIMITS, 100)
    assert r.limit == LIMITS.max_scan


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70).filter(
        lambda i: -2**63 <= i < 2**64) | st.binary(max_size=20) | st.text(max_size=10)
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=16) | st.dictionaries(
        st.text(max_size=5), children, max_size=4),
    max_leaves=40)


def _shaped(kind):
    """Arrays that start like a real frame, with random fields after."""
    return st.lists(_msgpack_values, min_size=0, max_size=16).map(lambda xs: [kind] + xs)


@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_error(data):
    for decode in (lambda b: codec.decode_peer(b, 1 << 16),
                   lambda b: codec.decode_request(b, LIMITS, 1 << 16),
                   lambda b: codec.decode_response(b, 1 << 16),
                   codec.decode_command):
        try:
            decode(data)
        except (RemoteProtocolError, InvalidRequest):
            pass


@given(st.one_of(_msgpack_values, *[_shaped(k) for k in range(0, 7)]))
def test_wrong_shapes_never_escape_as_another_error(value):
    body = msgpack.packb(value, use_bin_type=True)
    try:
        out = codec.decode_peer(body, 1 << 16)
    except RemoteProtocolError:
        pass
    else:
        if out.kind == codec.P_MSG:      # what passes is a well-formed message
            m = out.message
            assert isinstance(m.type, MsgType) and all(
                type(t) is int and type(p) is bytes for t, p in m.entries)
    try:
        r = codec.decode_request(body, LIMITS, 1 << 16)
    except (RemoteProtocolError, InvalidRequest):
        pass
    else:
        assert r.op in codec.OP_NAMES
        assert type(r.key) is bytes and len(r.key) <= LIMITS.max_key
    try:
        codec.decode_command(body)
    except RemoteProtocolError:
        pass


def test_status_may_ask_for_the_limits():
    plain = codec.decode_request(codec.pack([5, codec.OP_STATUS]), LIMITS, 100)
    assert plain.op == codec.OP_STATUS and plain.with_limits is False
    asked = codec.decode_request(codec.pack([5, codec.OP_STATUS, True]), LIMITS, 100)
    assert asked.with_limits is True
    with pytest.raises(InvalidRequest, match="boolean"):
        codec.decode_request(codec.pack([5, codec.OP_STATUS, 1]), LIMITS, 100)
    with pytest.raises(InvalidRequest, match="status takes 0 to 1 arguments, got 2"):
        codec.decode_request(codec.pack([5, codec.OP_STATUS, True, True]), LIMITS, 100)
    assert codec.STATUS_LIMIT_FIELDS == ("max_frame_bytes", "max_key_bytes",
                                         "max_value_bytes", "max_scan")


def test_notice_is_a_response_with_request_id_zero():
    rid, status, values = codec.decode_response(
        codec.encode_notice(codec.ST_BUSY, "too many connections", 0), 100)
    assert (rid, status, values) == (0, codec.ST_BUSY, ["too many connections", 0])


@pytest.mark.parametrize("req_id", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1])
@pytest.mark.parametrize("op", [codec.OP_PUT, codec.OP_STATUS, 200, 70000])
def test_request_head_reads_id_and_op_from_the_first_bytes(req_id, op):
    body = codec.pack([req_id, op, 1, 2, 3, b"k", b"v" * 5000])
    assert codec.request_head(body[:64]) == (req_id, op)
    assert codec.request_head(body[:23]) == (req_id, op)
    assert codec.request_head(body) == (req_id, op)
    # Cut short: a valid beginning, too short to tell.
    assert codec.request_head(body[:1]) is ...
    # Every prefix gives either the answer or "too short", never a wrong answer.
    for n in range(0, 24):
        assert codec.request_head(body[:n]) in ((req_id, op), ...)


def test_request_head_of_long_arrays_and_odd_ops():
    assert codec.request_head(codec.pack(list(range(20)))[:64]) == (0, 1)
    assert codec.request_head(codec.pack([7] * 70000)[:64]) == (7, 7)
    assert codec.request_head(codec.pack([9, "put", b"x"])) == (9, None)
    assert codec.request_head(codec.pack([9, -3])) == (9, -3)
    assert codec.request_head(b"\x92\xd0\x05\x02") == (5, 2)       # int8 holding 5


@pytest.mark.parametrize("body", [
    b"x", b"\xc1", codec.pack([1]), codec.pack([]), codec.pack({"a": 1}), codec.pack(b"bin"),
    codec.pack([-1, 2]), codec.pack(["id", 2]), codec.pack([1.5, 2]), codec.pack([None, 2]),
], ids=["fixint", "never-used", "one-element", "empty", "map", "bin", "negative-id", "str-id",
        "float-id", "nil-id"])
def test_request_head_refuses_what_cannot_begin_a_request(body):
    assert codec.request_head(body) is None


@given(st.binary(max_size=40))
def test_request_head_agrees_with_decode_request(data):
    got = codec.request_head(data)
    try:
        v = msgpack.unpackb(data, strict_map_key=False)
    except Exception:
        return
    if type(v) is list and len(v) >= 2 and type(v[0]) is int and 0 <= v[0] < 2**64:
        assert got == (v[0], v[1] if type(v[1]) is int else None)
    else:
        assert got is None


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:        # noqa: BLE001 - the outcome is what is compared
        return (type(exc).__name__, str(exc), getattr(exc, "req_id", None))


def test_the_fast_paths_agree_with_the_general_decoders():
    # decode_request's and decode_command's fast paths (a valid put, a valid get) must give
    # exactly what the general path gives, and leave every doubtful shape to it.
    lim = codec.Limits(max_key=8, max_value=16)
    u64 = (1 << 64) - 1
    ints = (0, 1, 2, 7, u64, -1, -(1 << 63), True, 1.0, None)
    keys = (b"", b"k", b"k" * 8, b"k" * 9, "k", None)
    values = (b"", b"v" * 16, b"v" * 17, "v", None)
    n = 0
    for rid in (0, 5, u64, -1, True):
        for op in (codec.OP_PUT, codec.OP_GET, True, 2.0):
            for s, q, f in ((1, 1, 1), (0, 1, 1), (1, 0, 0), (1, 2, 3), (u64, u64, 0),
                            (1, -5, 1), (True, 1, 1), (1, 1, -1)):
                for key in keys:
                    for value in values:
                        body = codec.pack([rid, op, s, q, f, key, value])
                        general = _outcome(lambda b: codec._decode_request(
                            codec._unpackb(b, 1 << 20), lim), body)
                        assert _outcome(codec.decode_request, body, lim, 1 << 20) == general
                        cmd = codec.pack([op, rid, s, q, f, key, value])
                        assert _outcome(codec.decode_command, cmd) == _outcome(
                            lambda b: codec._decode_command(codec.unpack(b)), cmd)
                        n += 1
            for key in keys:
                for stale in (True, False, 0, None):
                    body = codec.pack([rid, op, key, stale])
                    general = _outcome(lambda b: codec._decode_request(
                        codec._unpackb(b, 1 << 20), lim), body)
                    assert _outcome(codec.decode_request, body, lim, 1 << 20) == general
                    n += 1
    assert n > 1000
    for x in ints:      # every integer position, one at a time, on a valid put
        for pos in (0, 2, 3, 4):
            v = [9, codec.OP_PUT, 1, 1, 1, b"k", b"v"]
            v[pos] = x
            body = codec.pack(v)
            assert _outcome(codec.decode_request, body, lim, 1 << 20) == _outcome(
                lambda b: codec._decode_request(codec._unpackb(b, 1 << 20), lim), body)
