"""Client sessions of the state machine (thesis §6.3): exactly-once writes, cached answers,
acknowledgements, deterministic expiry by leader timestamps.

Place in the architecture: tests of fastraft/statemachine/sessions.py through machine.py.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft import codec
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.sessions import SessionTable

OK, INVALID, EXPIRED, ERROR = codec.ST_OK, codec.ST_INVALID, codec.ST_SESSION_EXPIRED, \
    codec.ST_ERROR


def fresh(smh, timeout=1000, **kw):
    m = KVStateMachine(session_timeout_ms=timeout, **kw)
    assert m.apply(1, smh.register(100)) == (OK, 1)
    return m


def test_answers_of_each_command(smh):
    m = fresh(smh)
    assert m.apply(2, smh.put(101, 1, 1, 1, b"a", b"1")) == (OK, None)
    assert m.apply(3, smh.cas(102, 1, 2, 2, b"a", b"1", b"2")) == (OK, True)
    assert m.apply(4, smh.cas(102, 1, 3, 3, b"a", b"1", b"3")) == (OK, False)
    assert m.apply(5, smh.cas(102, 1, 4, 4, b"b", None, b"x")) == (OK, True)
    assert m.apply(6, smh.delete(103, 1, 5, 5, b"a")) == (OK, True)
    assert m.apply(7, smh.delete(103, 1, 6, 6, b"a")) == (OK, False)
    assert m.apply(8, smh.keepalive(104, 1, 7)) == (OK, None)
    assert m.apply(9, b"") is None
    assert m.get(b"b") == b"x" and m.get(b"a") is None
    assert m.scan(b"", 10) == [(b"b", b"x")]
    assert m.stats() == {"keys": 1, "sessions": 1, "leases": 0, "applied_index": 9,
                         "clock": 104}


def test_retried_cas_returns_its_first_answer_after_the_key_changed(smh):
    m = fresh(smh)
    m.apply(2, smh.put(101, 1, 1, 1, b"k", b"old"))
    assert m.apply(3, smh.cas(102, 1, 2, 1, b"k", b"old", b"new")) == (OK, True)
    m.apply(4, smh.put(103, 1, 3, 1, b"k", b"other"))
    # the retry of seq 2 (its answer was lost) must not swap again, and must say True
    assert m.apply(5, smh.cas(104, 1, 2, 1, b"k", b"old", b"new")) == (OK, True)
    assert m.get(b"k") == b"other"
    # a retried put is not applied again either
    assert m.apply(6, smh.put(105, 1, 1, 1, b"k", b"old")) == (OK, None)
    assert m.get(b"k") == b"other"
    # nor a retried delete
    assert m.apply(7, smh.delete(105, 1, 4, 1, b"k")) == (OK, True)
    m.apply(8, smh.put(105, 1, 5, 1, b"k", b"again"))
    assert m.apply(9, smh.delete(105, 1, 4, 1, b"k")) == (OK, True)
    assert m.get(b"k") == b"again"


def test_first_unacked_drops_cached_answers(smh):
    m = fresh(smh)
    for seq in range(1, 6):
        m.apply(1 + seq, smh.put(101, 1, seq, 1, b"k%d" % seq, b"v"))
    s = m.sessions.get(1)
    assert sorted(s.responses) == [1, 2, 3, 4, 5]
    m.apply(7, smh.put(102, 1, 6, 4, b"k6", b"v"))
    assert sorted(s.responses) == [4, 5, 6]
    # an acknowledged seq is refused, not applied
    assert m.apply(8, smh.put(103, 1, 2, 2, b"k2", b"changed")) == \
        (INVALID, "sequence 2 already acknowledged")
    assert m.get(b"k2") == b"v"
    # still cached ones are answered from the cache
    assert m.apply(9, smh.put(104, 1, 5, 4, b"k5", b"changed")) == (OK, None)
    assert m.get(b"k5") == b"v"
    # keepalive acknowledges too
    assert m.apply(10, smh.keepalive(105, 1, 7)) == (OK, None)
    assert s.responses == {} and s.floor == 7
    assert m.apply(11, smh.put(106, 1, 6, 6, b"k6", b"x"))[0] == INVALID
    # a lower first_unacked later (reordered request) does not resurrect anything
    assert m.apply(12, smh.put(107, 1, 7, 1, b"k7", b"v")) == (OK, None)
    assert m.apply(13, smh.put(107, 1, 5, 1, b"k5", b"x"))[0] == INVALID


def test_unknown_and_expired_sessions(smh):
    m = fresh(smh, timeout=1000)
    assert m.apply(2, smh.put(100, 77, 1, 1, b"a", b"1")) == \
        (EXPIRED, "session 77 is unknown or expired")
    assert m.apply(3, smh.keepalive(100, 77, 1)) == (EXPIRED, "session 77 is unknown or expired")
    assert m.apply(4, smh.register(500)) == (OK, 4)
    assert m.apply(5, smh.keepalive(1100, 1, 1)) == (OK, None)   # 100 + 1000 == 1100: alive
    assert sorted(s.id for s in m.sessions.sessions()) == [1, 4]
    # session 4 was last active at 500, and 500 + 1000 < 1501: expired before this command
    assert m.apply(6, smh.put(1501, 4, 1, 1, b"a", b"1"))[0] == EXPIRED
    assert m.apply(7, smh.put(2100, 1, 1, 1, b"a", b"1")) == (OK, None)
    assert m.apply(8, smh.put(3101, 1, 2, 2, b"a", b"2"))[0] == EXPIRED
    assert m.get(b"a") == b"1"
    assert len(m.sessions) == 0
    # never silently re-registered: the next register makes a new id
    assert m.apply(9, smh.register(3102)) == (OK, 9)


def test_expiry_uses_the_clock_which_never_goes_backwards(smh):
    m = fresh(smh, timeout=1000)
    m.apply(2, smh.register(5000))                   # clock 5000 expires session 1
    assert 1 not in m.sessions
    m.apply(3, smh.put(10, 2, 1, 1, b"a", b"1"))     # an old timestamp: clock stays at 5000
    assert m.clock == 5000
    assert m.sessions.get(2).last_active == 5000
    assert m.apply(4, smh.put(6000, 2, 2, 2, b"a", b"2")) == (OK, None)
    assert m.apply(5, smh.put(7000, 2, 3, 3, b"a", b"3"))[0] == OK      # 6000 + 1000: alive
    assert m.apply(6, smh.put(8001, 2, 4, 4, b"a", b"4"))[0] == EXPIRED


def test_max_sessions_evicts_the_least_recently_active(smh):
    m = KVStateMachine(session_timeout_ms=10_000, max_sessions=3)
    for i in range(1, 4):
        m.apply(i, smh.register(100 + i))
    m.apply(4, smh.keepalive(200, 1, 1))             # 1 becomes the most recent
    assert m.apply(5, smh.register(300)) == (OK, 5)  # evicts 2
    assert [s.id for s in m.sessions.sessions()] == [3, 1, 5]
    assert m.apply(6, smh.put(301, 2, 1, 1, b"a", b"1"))[0] == EXPIRED


def test_cache_bound_refuses_without_applying(smh):
    m = fresh(smh)
    m.sessions.max_cached = 3
    for seq in range(1, 4):
        assert m.apply(1 + seq, smh.put(101, 1, seq, 1, b"k", b"%d" % seq)) == (OK, None)
    ans = m.apply(5, smh.put(101, 1, 4, 1, b"k", b"4"))
    assert ans[0] == codec.ST_BUSY and "too many unacknowledged requests" in ans[1]
    assert m.get(b"k") == b"3"
    assert m.apply(6, smh.put(101, 1, 4, 2, b"k", b"4")) == (OK, None)   # after an ack: fine


def test_invalid_payload_changes_nothing_but_the_index(smh, caplog):
    m = fresh(smh)
    before = smh.state(m)
    with caplog.at_level(logging.DEBUG, logger="fastraft.statemachine.machine"):
        ans = m.apply(2, b"\x93\x01\x02\x03")
        ans2 = m.apply(3, b"\x92\xc0")
        # A configuration change (first byte 0xc1, never msgpack) is not a command: no
        # answer, no error, only the index moves.
        ans3 = m.apply(4, b"\xc1\x01\x00\x00\x00")
        ans4 = m.apply_entries(5, [(1, b"\xc1\x01\x01\x00\x00")])
    assert ans[0] == ERROR and "entry 2" in ans[1]
    assert ans2[0] == ERROR
    assert ans3 is None and ans4 == [(5, None)]
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.DEBUG]
    after = smh.state(m)
    assert after[4] == 5 and after[:4] == before[:4] and after[5:] == before[5:]


def test_gaps_are_bugs(smh):
    m = fresh(smh)
    with pytest.raises(AssertionError):
        m.apply(3, b"")
    with pytest.raises(AssertionError):
        m.apply_entries(1, [(1, b"")])
    assert m.applied_index == 1


@given(data=st.data())
def test_two_machines_fed_the_same_log_agree(smh, data):
    """Expiry and every answer depend on the log alone; apply and apply_entries agree."""
    log = smh.random_log(data.draw(smh.ops))
    a = KVStateMachine(session_timeout_ms=smh.TIMEOUT, max_sessions=4)
    b = KVStateMachine(session_timeout_ms=smh.TIMEOUT, max_sessions=4)
    answers_a = smh.apply_all(a, log)
    answers_b = []
    cut = len(log) // 2
    for first, part in ((1, log[:cut]), (cut + 1, log[cut:])):
        answers_b += [ans for _i, ans in b.apply_entries(first, part)]
    assert answers_a == answers_b
    assert smh.state(a) == smh.state(b)
    assert a.applied_index == len(log)
    for s in a.sessions.sessions():
        assert s.last_active + smh.TIMEOUT >= a.clock
        assert all(seq >= s.floor for seq in s.responses)


def test_session_table_arguments():
    with pytest.raises(ValueError):
        SessionTable(timeout_ms=-1)
    with pytest.raises(ValueError):
        SessionTable(max_sessions=0)


def test_known_commands_are_applied_without_decoding_when_the_entry_is_the_same_object():
    # The leader passes the command tuples it proposed (Requests); an entry another leader
    # wrote at that index is a different object and is decoded as usual.
    m = KVStateMachine()
    reg = codec.encode_command([codec.CMD_REGISTER, 1])
    assert m.apply_entries(1, [(1, reg)]) == [(1, (codec.ST_OK, 1))]
    mine = codec.encode_command([codec.CMD_PUT, 2, 1, 1, 1, b"k", b"from-payload"])
    # The known tuple differs from the payload on purpose: which one was applied shows.
    known = {2: (mine, (codec.CMD_PUT, 2, 1, 1, 1, b"k", b"from-tuple"))}
    m.apply_entries(2, [(1, mine)], known)
    assert m.get(b"k") == b"from-tuple" and known == {}
    other = codec.encode_command([codec.CMD_PUT, 3, 1, 2, 2, b"k", b"from-payload"])
    known = {3: (bytes(bytearray(other)), (codec.CMD_PUT, 3, 1, 2, 2, b"k", b"from-tuple"))}
    m.apply_entries(3, [(2, other)], known)
    assert m.get(b"k") == b"from-payload" and known == {}


def test_command_tuple_is_what_decoding_the_command_gives():
    reqs = [codec.Request(7, codec.OP_PUT, 3, 4, 2, key=b"k", value=b"v"),
            codec.Request(7, codec.OP_DELETE, 3, 4, 2, key=b"k"),
            codec.Request(7, codec.OP_CAS, 3, 4, 2, key=b"k", expected=None, value=b"v"),
            codec.Request(7, codec.OP_CAS, 3, 4, 2, key=b"k", expected=b"e", value=b"v"),
            codec.Request(7, codec.OP_REGISTER),
            codec.Request(7, codec.OP_KEEPALIVE, 3, first_unacked=2)]
    for r in reqs:
        t = codec.command_tuple(r, 1234)
        assert codec.decode_command(codec.encode_command(t)) == t
        assert codec.command_for(r, 1234) == codec.encode_command(t)
