"""Revisions, leases and the change events of the state machine: each command's answer and
effect, expiry by the log's clock (identical on every machine fed the same log), the refresh
of a new term, and the events a watcher is fed.

Place in the architecture: tests of fastraft/statemachine/machine.py and leases.py (pure, no
IO); the command payloads come from the ``smh`` helpers (tests/statemachine/conftest.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft import codec
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.leases import LeaseTable
from fastraft.statemachine.machine import EV_DELETE, EV_PUT

OK = codec.ST_OK
NO_LEASE = codec.ST_NO_LEASE


class Log:
    """A machine fed one command at a time, at increasing indexes, by session 1."""

    def __init__(self, smh, term: int = 1, **kw) -> None:
        self.smh = smh
        self.m = KVStateMachine(session_timeout_ms=10**9, **kw)
        self.m.events = []
        self.index = 0
        self.seq = 0
        self.term = term
        self.apply(smh.register(0))

    def apply(self, payload):
        self.index += 1
        return self.m.apply(self.index, payload, self.term)

    def s(self):
        """(session, seq, first_unacked) of the next write."""
        self.seq += 1
        return 1, self.seq, self.seq

    def put(self, ts, key, value, lease=None):
        return self.apply(self.smh.put(ts, *self.s(), key, value, lease))

    def grant(self, ts, ttl):
        return self.apply(self.smh.lease_grant(ts, *self.s(), ttl))

    def events(self):
        out, self.m.events = self.m.events, []
        return out


def test_revisions_are_the_index_of_the_last_write(smh):
    log = Log(smh)
    assert log.put(1, b"a", b"1") == (OK, None)                  # index 2
    assert log.put(1, b"b", b"1") == (OK, None)                  # 3
    assert log.m.get_item(b"a") == (b"1", 2) and log.m.kv.rev(b"b") == 3
    assert log.apply(smh.cas(1, *log.s(), b"a", b"1", b"2")) == (OK, True)     # 4
    assert log.apply(smh.cas(1, *log.s(), b"a", b"1", b"3")) == (OK, False)    # 5
    assert log.m.get_item(b"a") == (b"2", 4)
    assert log.apply(smh.delete(1, *log.s(), b"a")) == (OK, True)             # 6
    assert log.m.get_item(b"a") is None and log.m.kv.rev(b"a") == 0
    assert log.events() == [(2, EV_PUT, b"a", b"1"), (3, EV_PUT, b"b", b"1"),
                            (4, EV_PUT, b"a", b"2"), (6, EV_DELETE, b"a", None)]
    log.m.kv.check()


def test_revision_cas(smh):
    log = Log(smh)
    cas_rev = smh.cas_rev
    assert log.apply(cas_rev(1, *log.s(), b"k", 0, b"x")) == (OK, [True, 2])     # absent: made
    assert log.apply(cas_rev(1, *log.s(), b"k", 0, b"y")) == (OK, [False, 2])    # not absent
    assert log.apply(cas_rev(1, *log.s(), b"k", 3, b"y")) == (OK, [False, 2])    # wrong rev
    assert log.apply(cas_rev(1, *log.s(), b"k", 2, b"z")) == (OK, [True, 5])
    assert log.m.get_item(b"k") == (b"z", 5)
    assert log.apply(cas_rev(1, *log.s(), b"n", 0, b"v", 777))[0] == NO_LEASE
    assert log.m.get(b"n") is None
    assert log.events() == [(2, EV_PUT, b"k", b"x"), (5, EV_PUT, b"k", b"z")]


def test_a_lease_expires_with_its_keys_at_one_revision(smh):
    log = Log(smh)
    assert log.grant(1000, 500) == (OK, 2)                       # lease 2, deadline 1500
    assert log.put(1000, b"b", b"1", 2) == (OK, None)
    assert log.put(1000, b"a", b"1", 2) == (OK, None)
    assert log.put(1000, b"c", b"1") == (OK, None)               # no lease
    assert log.m.next_lease_deadline() == 1500
    log.events()
    assert log.apply(smh.tick(1499)) is None                     # not yet
    assert log.m.get(b"a") == b"1" and 2 in log.m.leases
    assert log.apply(smh.tick(1500)) is None                     # index 7: the deadline
    assert log.m.get(b"a") is None and log.m.get(b"b") is None and log.m.get(b"c") == b"1"
    assert 2 not in log.m.leases and log.m.next_lease_deadline() is None
    assert log.events() == [(7, EV_DELETE, b"a", None), (7, EV_DELETE, b"b", None)]
    # the lease is gone: a put naming it is refused, nothing written, the answer cached
    ans = log.put(1600, b"d", b"1", 2)
    assert ans[0] == NO_LEASE and "lease 2" in ans[1] and log.m.get(b"d") is None
    assert log.apply(smh.put(1600, 1, log.seq, log.seq, b"d", b"1", 2)) == ans    # a retry
    assert log.apply(smh.lease_keepalive(1600, 2))[0] == NO_LEASE


def test_keepalive_moves_the_deadline_and_a_command_expires_what_it_passes(smh):
    log = Log(smh)
    log.grant(1000, 500)                                        # lease 2
    log.put(1000, b"k", b"v", 2)
    assert log.apply(smh.lease_keepalive(1400, 2)) == (OK, 500)  # deadline 1900
    log.events()
    assert log.put(1800, b"x", b"1") == (OK, None)               # before it: kept
    assert log.m.get(b"k") == b"v"
    assert log.put(2000, b"y", b"1") == (OK, None)               # index 6 passes it
    assert log.m.get(b"k") is None
    assert log.events() == [(5, EV_PUT, b"x", b"1"), (6, EV_DELETE, b"k", None),
                            (6, EV_PUT, b"y", b"1")]


def test_revoke_detach_and_reattach(smh):
    log = Log(smh)
    log.grant(0, 10_000)                                        # lease 2
    log.grant(0, 10_000)                                        # lease 3
    log.put(0, b"a", b"1", 2)
    log.put(0, b"b", b"1", 2)
    log.put(0, b"b", b"2")                                      # written without: detached
    log.put(0, b"c", b"1", 2)
    log.put(0, b"c", b"2", 3)                                   # moved to lease 3
    log.put(0, b"d", b"1", 2)
    log.apply(smh.delete(0, *log.s(), b"d"))                     # deleted: detached
    assert log.m.leases.key_lease == {b"a": 2, b"c": 3}
    log.events()
    assert log.apply(smh.lease_revoke(0, *log.s(), 2)) == (OK, True)    # index 11
    assert log.apply(smh.lease_revoke(0, *log.s(), 2)) == (OK, False)
    assert log.events() == [(11, EV_DELETE, b"a", None)]
    assert sorted(log.m.kv.keys()) == [b"b", b"c"]
    assert log.m.leases.key_lease == {b"c": 3}


def test_a_new_term_refreshes_every_lease(smh):
    """A new leader's clock may run ahead of the old one's: its first command gives every
    lease a whole TTL from its own timestamp before anything can expire."""
    log = Log(smh)
    log.grant(1000, 500)                                        # deadline 1500
    log.put(1000, b"k", b"v", 2)
    log.term = 2
    assert log.apply(smh.tick(1700)) is None                     # past 1500, but a new term
    assert log.m.get(b"k") == b"v" and log.m.leases.get(2).deadline == 2200
    assert log.m.lease_term == 2
    log.apply(smh.tick(2199))
    assert log.m.get(b"k") == b"v"
    log.apply(smh.tick(2200))
    assert log.m.get(b"k") is None


def test_lease_limits(smh):
    log = Log(smh, max_leases=2)
    assert log.grant(0, 0)[0] == codec.ST_INVALID
    assert log.grant(0, 100) == (OK, 3)
    assert log.grant(0, 100) == (OK, 4)
    ans = log.grant(0, 100)
    assert ans[0] == codec.ST_BUSY and "too many leases" in ans[1]
    with pytest.raises(ValueError):
        LeaseTable(0)


@given(data=st.data())
def test_leases_and_revisions_stay_consistent(smh, data):
    """Under any log: every lease's deadline is after the clock, every attached key exists
    and is in its lease's key set, and the events replay to the machine's keys."""
    log = smh.random_log(data.draw(smh.ops))
    m = KVStateMachine(session_timeout_ms=smh.TIMEOUT, max_sessions=4)
    m.events = []
    replay: dict = {}
    for i, (term, payload) in enumerate(log):
        m.apply(i + 1, payload, term)
        for rev, kind, key, value in m.events:
            assert rev == i + 1
            if kind == EV_PUT:
                replay[key] = (value, rev)
            else:
                del replay[key]
        m.events = []
        clock = m.clock
        for lease in m.leases.leases():
            assert lease.deadline > clock
            assert all(m.leases.key_lease[k] == lease.id for k in lease.keys)
        assert set(m.leases.key_lease) <= set(m.kv.keys())
    assert replay == {k: m.get_item(k) for k in m.kv.keys()}
    m.kv.check()
