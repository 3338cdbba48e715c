"""The state machine's snapshot stream: round trip, determinism (restore + the rest of the log ==
the whole log), and strict rejection of damaged streams with CorruptRecordError only.

Place in the architecture: tests of KVStateMachine.snapshot_chunks / restore
(fastraft/statemachine/machine.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft import codec
from fastraft.errors import CorruptRecordError
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine import machine as machine_module


def stream(m, chunk_bytes=64 * 1024) -> bytes:
    return b"".join(m.snapshot_chunks(chunk_bytes))


def values_of(data: bytes) -> list:
    return codec.SnapshotDecoder().feed(data)


def packed(*values) -> bytes:
    pack = codec.new_packer()
    return b"".join(pack(v) for v in values)


def sample_machine(smh, n_keys=2500) -> KVStateMachine:
    m = KVStateMachine(session_timeout_ms=5000)
    m.apply(1, smh.register(10))
    m.apply(2, smh.register(20))
    index = 3
    for i in range(n_keys):
        m.apply(index, smh.put(30 + i // 100, 1 + (i % 2), i + 1, max(1, i - 2),
                               b"key%06d" % ((i * 37) % n_keys), b"v%d" % i))
        index += 1
    m.apply(index, smh.cas(100, 2, n_keys + 1, n_keys - 2, b"key000001", None, b"x"))
    m.apply(index + 1, smh.delete(100, 1, n_keys + 2, n_keys - 2, b"key000002"))
    assert m.apply(index + 2, smh.lease_grant(100, 1, n_keys + 3, n_keys, 5000))[0] == 0
    m.apply(index + 3, smh.put(100, 1, n_keys + 4, n_keys, b"key000003", b"l", index + 2))
    m.apply(index + 4, smh.put(100, 1, n_keys + 5, n_keys, b"leased", b"l", index + 2))
    assert m.apply(index + 5, smh.lease_grant(100, 1, n_keys + 6, n_keys, 9000))[0] == 0
    return m


def test_round_trip_and_layout(smh):
    m = sample_machine(smh)
    data = stream(m)
    vals = values_of(data)
    assert vals[0] == [2, m.applied_index, m.clock, 5000, len(m.kv), 2, 2, 0]
    assert vals[-1] == ["end", len(m.kv), 2, 2]
    lease_id = m.applied_index - 3
    assert vals[-2] == [[lease_id, 5000, 5100, [b"key000003", b"leased"]],
                        [m.applied_index, 9000, 9100, []]]
    kv_batches = vals[1:-3]
    assert all(len(b) <= 3 * machine_module.PAIRS_PER_BATCH for b in kv_batches)
    assert sum(len(b) for b in kv_batches) == 3 * len(m.kv)
    flat = [x for b in kv_batches for x in b]
    assert dict(zip(flat[0::3], flat[2::3])) == {k: m.kv.rev(k) for k in m.kv.keys()}
    assert m.get_item(b"leased") == (b"l", m.applied_index - 1)
    r = KVStateMachine.restore([data])
    assert smh.state(r) == smh.state(m)
    assert stream(r) == data
    assert r.stats() == m.stats()
    # any chunking of the stream gives the same machine
    for size in (1, 7, 4096):
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        assert smh.state(KVStateMachine.restore(pieces)) == smh.state(m)
    # chunk sizes: about chunk_bytes each
    chunks = list(m.snapshot_chunks(4096))
    assert b"".join(chunks) == data
    assert all(len(c) == 4096 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4096


def test_empty_machine_round_trip(smh):
    m = KVStateMachine()
    data = stream(m)
    assert values_of(data) == [[2, 0, 0, 60_000, 0, 0, 0, 0], ["end", 0, 0, 0]]
    r = KVStateMachine.restore([data])
    assert smh.state(r) == smh.state(m)
    with pytest.raises(ValueError):
        next(m.snapshot_chunks(0))


def test_large_values_are_split_into_bounded_batches(smh, monkeypatch):
    monkeypatch.setattr(machine_module, "BATCH_BYTES", 1000)
    m = KVStateMachine()
    m.apply(1, smh.register(1))
    for i in range(30):
        m.apply(2 + i, smh.put(1, 1, i + 1, i + 1, b"k%02d" % i, b"x" * 300))
    data = stream(m)
    kv_batches = values_of(data)[1:-2]
    assert len(kv_batches) == 8 and all(len(b) <= 12 for b in kv_batches)
    assert smh.state(KVStateMachine.restore([data])) == smh.state(m)


@given(data=st.data())
def test_restore_then_rest_of_log_equals_whole_log(smh, data):
    log = smh.random_log(data.draw(smh.ops))
    cut = data.draw(st.integers(0, len(log)))
    chunk = data.draw(st.sampled_from([1, 13, 64 * 1024]))
    whole = KVStateMachine(session_timeout_ms=smh.TIMEOUT, max_sessions=4)
    answers = smh.apply_all(whole, log)
    part = KVStateMachine(session_timeout_ms=smh.TIMEOUT, max_sessions=4)
    smh.apply_all(part, log[:cut])
    restored = KVStateMachine.restore(part.snapshot_chunks(chunk), max_sessions=4)
    assert smh.state(restored) == smh.state(part)
    rest = smh.apply_all(restored, log[cut:], first=cut + 1)
    assert rest == answers[cut:]
    assert smh.state(restored) == smh.state(whole)
    assert stream(restored) == stream(whole)


# -- damaged streams -----------------------------------------------------------------------

def restore_bytes(data: bytes):
    return KVStateMachine.restore([data])


def test_every_truncation_is_detected(smh):
    m = sample_machine(smh, n_keys=40)
    data = stream(m)
    for n in range(len(data)):
        with pytest.raises(CorruptRecordError):
            restore_bytes(data[:n])


@given(data=st.data())
def test_random_damage_raises_only_corrupt_record_error(smh, data):
    m = sample_machine(smh, n_keys=30)
    good = stream(m)
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        lo = data.draw(st.integers(0, len(raw)))
        del raw[lo:lo + data.draw(st.integers(0, 20))]
    if data.draw(st.booleans()):
        raw += data.draw(st.binary(max_size=8))
    try:
        r = restore_bytes(bytes(raw))
    except CorruptRecordError:
        return
    # damage that still decodes (a changed value byte, say) must give a well-formed machine
    r.kv.check()
    assert stream(r)


# format 1 (before revisions and leases: still read)
HEADER = [1, 10, 500, 1000, 2, 1]
KV = [b"a", b"1", b"b", b"2"]
SESSIONS = [[3, 400, 1, [1, 0, None, 2, 0, True]]]
END = ["end", 2, 1]
# format 2
HEADER2 = [2, 10, 500, 1000, 2, 1, 1, 3]
KV2 = [b"a", b"1", 4, b"b", b"2", 9]
LEASES = [[5, 300, 700, [b"b"]]]
END2 = ["end", 2, 1, 1]


@pytest.mark.parametrize("values, message", [
    ([], "truncated"),
    ([HEADER], "truncated"),
    ([HEADER, KV], "truncated"),
    ([HEADER, KV, SESSIONS], "truncated"),
    ([HEADER, KV, SESSIONS, END, END], "after the end marker"),
    ([[3, 10, 500, 1000, 2, 1], KV, SESSIONS, END], "format version"),
    ([[2, 10, 500, 1000, 2, 1], KV, SESSIONS, END], "format 2 has 8 fields"),
    ([HEADER2, KV2, SESSIONS], "truncated"),
    ([HEADER2, KV2, SESSIONS, LEASES], "truncated"),
    ([HEADER2, KV, SESSIONS, LEASES, END2], "triples"),
    ([HEADER2, [b"a", b"1", 0, b"b", b"2", 9], SESSIONS, LEASES, END2], "revision"),
    ([HEADER2, [b"a", b"1", 11, b"b", b"2", 9], SESSIONS, LEASES, END2], "revision"),
    ([HEADER2, [b"a", b"1", 4, b"b", 2, 9], SESSIONS, LEASES, END2], "non-bytes"),
    ([HEADER2, KV2, SESSIONS, [], END2], "lease batch"),
    ([HEADER2, KV2, SESSIONS, [[5, 300, 700]], END2], "bad lease record"),
    ([HEADER2, KV2, SESSIONS, [[11, 300, 700, []]], END2], "not a log index"),
    ([HEADER2, KV2, SESSIONS, [[5, 0, 700, []]], END2], "out of range"),
    ([HEADER2, KV2, SESSIONS, [[5, 300, 500, []]], END2], "not after the clock"),
    ([HEADER2, KV2, SESSIONS, [[5, 300, 700, [b"c"]]], END2], "distinct stored keys"),
    ([HEADER2, KV2, SESSIONS, [[5, 300, 700, [b"b", b"a"]]], END2], "distinct stored keys"),
    ([[2, 10, 500, 1000, 2, 1, 2, 3], KV2, SESSIONS,
      [[5, 300, 700, [b"b"]], [6, 300, 700, [b"b"]]], ["end", 2, 1, 2]], "another lease"),
    ([[2, 10, 500, 1000, 2, 1, 2, 3], KV2, SESSIONS,
      [[6, 300, 700, []], [5, 300, 700, []]], ["end", 2, 1, 2]], "out of order"),
    ([HEADER2, KV2, SESSIONS, LEASES + [[6, 300, 700, []]], END2], "more leases"),
    ([HEADER2, KV2, SESSIONS, LEASES, END], "end marker"),
    ([[1, 10, 500, 1000, 2], KV, SESSIONS, END], "header"),
    ([[1, 10, -1, 1000, 2, 1], KV, SESSIONS, END], "header"),
    ([[1, 10, True, 1000, 2, 1], KV, SESSIONS, END], "header"),
    ({"a": 1}, "header"),
    ([HEADER, [b"b", b"2", b"a", b"1"], SESSIONS, END], "out of order"),
    ([HEADER, [b"a", b"1", b"a", b"2"], SESSIONS, END], "out of order"),
    ([HEADER, [b"a", b"1"], [b"a", b"2"], SESSIONS, END], "out of order"),
    ([HEADER, [b"a", b"1", b"b"], SESSIONS, END], "key/value batch"),
    ([HEADER, [b"a", "1", b"b", b"2"], SESSIONS, END], "non-bytes"),
    ([HEADER, [], KV, SESSIONS, END], "key/value batch"),
    ([HEADER, KV + [b"c", b"3"], SESSIONS, END], "more key/value pairs"),
    ([HEADER, KV, [], END], "session batch"),
    ([HEADER, KV, [[3, 400, 1]], END], "bad session record"),
    ([HEADER, KV, [[3, 400, 1, [1, 0]]], END], "bad session record"),
    ([HEADER, KV, [[11, 400, 1, []]], END], "not a log index"),
    ([HEADER, KV, [[0, 400, 1, []]], END], "not a log index"),
    ([HEADER, KV, [[3, 501, 1, []]], END], "after the clock"),
    ([HEADER, KV, [[3, 400, 2, [1, 0, None]]], END], "bad cached response"),
    ([HEADER, KV, [[3, 400, 1, [1, 99, None]]], END], "bad cached response"),
    ([HEADER, KV, [[3, 400, 1, [1, 0, 1.5]]], END], "bad cached response"),
    ([HEADER, KV, [[3, 400, 1, [1, 0, None, 1, 0, None]]], END], "bad cached response"),
    ([HEADER, KV, [[3, 400, 1, []], [4, 400, 1, []]], END], "more sessions"),
    ([[1, 10, 500, 1000, 2, 2], KV, [[3, 400, 1, []], [3, 400, 1, []]], END],
     "repeated"),
    ([[1, 10, 500, 1000, 2, 2], KV, [[3, 450, 1, []], [4, 400, 1, []]], ["end", 2, 2]],
     "out of order"),
    ([[1, 10, 5000, 1000, 2, 1], KV, [[3, 400, 1, []]], END], "should have expired"),
    ([HEADER, KV, SESSIONS, ["end", 2, 2]], "end marker"),
    ([HEADER, KV, SESSIONS, ["fin", 2, 1]], "end marker"),
])
def test_malformed_streams(values, message):
    data = packed(*values) if isinstance(values, list) else packed(values)
    with pytest.raises(CorruptRecordError, match=message):
        restore_bytes(data)


def test_a_valid_handmade_stream_restores():
    r = restore_bytes(packed(HEADER2, KV2, SESSIONS, LEASES, END2))
    assert r.applied_index == 10 and r.clock == 500 and r.session_timeout_ms == 1000
    assert r.scan(b"", 10) == [(b"a", b"1"), (b"b", b"2")]
    assert r.get_item(b"a") == (b"1", 4) and r.get_item(b"b") == (b"2", 9)
    assert r.sessions.get(3).responses == {1: (0, None), 2: (0, True)}
    assert [(x.id, x.ttl, x.deadline, x.keys) for x in r.leases.leases()] == \
        [(5, 300, 700, {b"b"})]
    assert r.leases.key_lease == {b"b": 5} and r.lease_term == 3


def test_a_format_1_stream_restores_with_unknown_revisions(smh):
    """A snapshot of a release before revisions: every key present at revision 1 (not 0,
    which a revision cas takes for "absent"), no leases; written back as format 2."""
    r = restore_bytes(packed(HEADER, KV, SESSIONS, END))
    assert r.applied_index == 10 and r.clock == 500
    assert r.get_item(b"a") == (b"1", 1) and r.get_item(b"b") == (b"2", 1)
    assert len(r.leases) == 0 and r.lease_term == 0
    assert r.apply(11, smh.cas_rev(600, 3, 3, 3, b"a", 0, b"x")) == (0, [False, 1])
    assert values_of(stream(r))[0][0] == 2


def test_undecodable_bytes():
    with pytest.raises(CorruptRecordError):
        restore_bytes(b"\xc1")
    with pytest.raises(CorruptRecordError):
        restore_bytes(packed(HEADER) + b"\xc7\x01\x05x")     # an ext type
