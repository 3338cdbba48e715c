"""Fixtures of the state-machine tests (tests/statemachine), handed out as the ``smh`` namespace.

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib``, so the test modules share helpers through fixtures only.

- ``smh.register(ts)``, ``smh.put(ts, session, seq, first, key, value, lease=None)``,
  ``smh.delete(...)``, ``smh.cas(...)``, ``smh.keepalive(ts, session, first)``,
  ``smh.cas_rev(ts, session, seq, first, key, rev, new, lease=0)``,
  ``smh.lease_grant(ts, session, seq, first, ttl)``, ``smh.lease_revoke(..., lease)``,
  ``smh.lease_keepalive(ts, lease)``, ``smh.tick(ts)``: encoded command payloads.
- ``smh.random_log(ops)``: a log (list of ``(term, payload)``) built from hypothesis-drawn op
  tuples: registrations, writes of live, expired and unknown sessions, retries of old sequence
  numbers, acknowledgements, keepalives, no-ops, invalid payloads, leases granted, renewed,
  revoked and left to expire with keys attached (and puts naming unknown leases), revision
  compare-and-swaps, clock ticks, new terms, and timestamps that mostly advance, sometimes
  jump past the session timeout and sometimes go backwards.
- ``smh.apply_all(machine, log, first=1)``: the answers of applying ``log``.
- ``smh.state(machine)``: everything that must be equal between two machines with the same
  history (the KV pairs with their revisions, every session's fields and cache in order, the
  leases, applied index, clock, lease term).
- ``smh.TIMEOUT``: the session timeout used with ``random_log`` (1,000 ms).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import strategies as st

from fastraft import codec

TIMEOUT = 1000


def register(ts):
    return codec.encode_command([codec.CMD_REGISTER, ts])


def put(ts, session, seq, first, key, value, lease=None):
    cmd = [codec.CMD_PUT, ts, session, seq, first, key, value]
    return codec.encode_command(cmd if lease is None else cmd + [lease])


def cas_rev(ts, session, seq, first, key, rev, new, lease=0):
    return codec.encode_command([codec.CMD_CAS_REV, ts, session, seq, first, key, rev, new,
                                 lease])


def lease_grant(ts, session, seq, first, ttl):
    return codec.encode_command([codec.CMD_LEASE_GRANT, ts, session, seq, first, ttl])


def lease_revoke(ts, session, seq, first, lease):
    return codec.encode_command([codec.CMD_LEASE_REVOKE, ts, session, seq, first, lease])


def lease_keepalive(ts, lease):
    return codec.encode_command([codec.CMD_LEASE_KEEPALIVE, ts, lease])


def tick(ts):
    return codec.encode_command([codec.CMD_TICK, ts])


def delete(ts, session, seq, first, key):
    return codec.encode_command([codec.CMD_DELETE, ts, session, seq, first, key])


def cas(ts, session, seq, first, key, expected, new):
    return codec.encode_command([codec.CMD_CAS, ts, session, seq, first, key, expected, new])


def keepalive(ts, session, first):
    return codec.encode_command([codec.CMD_KEEPALIVE, ts, session, first])


#: One drawn op: (kind, session choice, key choice, time step, retry/ack choice).
op_strategy = st.tuples(st.integers(0, 15), st.integers(0, 7), st.integers(0, 4),
                        st.integers(0, 12), st.integers(0, 5))
ops_strategy = st.lists(op_strategy, max_size=80)


def random_log(ops) -> list[tuple[int, bytes]]:
    log: list[bytes] = []
    terms: list[int] = []
    term = 1
    ts = 1000
    sessions: list[int] = []                    # ids (indexes of REGISTER entries)
    leases: list[int] = []                      # ids (indexes of LEASE_GRANT entries)
    next_seq: dict[int, int] = {}
    acked: dict[int, int] = {}
    for kind, who, key_choice, step, extra in ops:
        if step == 12 and extra >= 4:
            ts += TIMEOUT + extra - 4           # to the timeout's edge, or just past it
        elif step == 11:
            ts = max(0, ts - 200)               # a new leader whose clock is behind
            term += extra >= 3
        elif step == 10 and extra == 0:
            term += 1                           # a new leader
        else:
            ts += step * 15
        terms.append(term)
        index = len(log) + 1
        if kind == 0 or not sessions:
            log.append(register(ts))
            sessions.append(index)
            next_seq[index] = 1
            acked[index] = 1
            continue
        if kind == 10:
            log.append(b"" if extra < 4 else b"\x91\x07")   # a no-op, or an invalid command
            continue
        lease = (leases[-1 - who % len(leases)] if leases and who < 6
                 else 8888 if who == 7 else 0)  # a recent lease, none, or an unknown one
        if kind == 14 and extra < 3:
            log.append(lease_keepalive(ts, lease) if extra else tick(ts))
            continue
        # mostly one of the 3 newest sessions; sometimes an old one; 7: an unknown id
        sid = (sessions[-1 - who % min(3, len(sessions))] if who < 5
               else sessions[who % len(sessions)] if who < 7 else 9999 + who)
        seq = next_seq.get(sid, 1)
        if extra == 5 and seq > 1:              # retry an older seq
            seq = max(1, seq - 1 - key_choice)
        else:
            next_seq[sid] = seq + 1
        if extra >= 3:                          # the client saw the answers so far
            acked[sid] = max(acked.get(sid, 1), min(seq, next_seq.get(sid, 1) - 1))
        first = min(acked.get(sid, 1), seq)
        key = b"k%d" % key_choice
        if kind in (1, 2, 3):
            log.append(put(ts, sid, seq, first, key, b"v%d" % index,
                           lease if kind == 3 else None))
        elif kind in (4, 5):
            log.append(delete(ts, sid, seq, first, key))
        elif kind in (6, 7, 8):
            expected = None if extra == 0 else b"v%d" % (index - 1 - extra)
            log.append(cas(ts, sid, seq, first, key, expected, b"c%d" % index))
        elif kind == 12:
            log.append(lease_grant(ts, sid, seq, first, 40 * (1 + key_choice) * (1 + extra)))
            leases.append(index)
        elif kind == 13:
            rev = 0 if extra == 0 else max(0, index - 1 - extra)
            log.append(cas_rev(ts, sid, seq, first, key, rev, b"r%d" % index, lease))
        elif kind == 14:
            log.append(lease_revoke(ts, sid, seq, first, lease))
        elif kind == 15:
            log.append(put(ts, sid, seq, first, key, b"l%d" % index, lease))
        else:
            log.append(keepalive(ts, sid, acked.get(sid, 1)))
    return list(zip(terms, log))


def apply_all(machine, log, first: int = 1) -> list:
    """The answers of applying ``log`` (``(term, payload)`` pairs, or bare payloads)."""
    return [machine.apply(first + i, *(e[::-1] if type(e) is tuple else (e,)))
            for i, e in enumerate(log)]


def state(machine):
    sessions = [(s.id, s.last_active, s.floor, list(s.responses.items()))
                for s in machine.sessions.sessions()]
    leases = [(x.id, x.ttl, x.deadline, sorted(x.keys)) for x in machine.leases.leases()]
    revs = [(k, machine.kv.rev(k)) for k in machine.kv.keys()]
    return (list(machine.kv.items()), revs, sessions, leases, machine.applied_index,
            machine.clock, machine.session_timeout_ms, machine.lease_term)


@pytest.fixture(scope="session")
def smh():
    """The helpers above (immutable; session scope so hypothesis tests may take it)."""
    return SimpleNamespace(register=register, put=put, delete=delete, cas=cas,
                           keepalive=keepalive, cas_rev=cas_rev, lease_grant=lease_grant,
                           lease_revoke=lease_revoke, lease_keepalive=lease_keepalive,
                           tick=tick, random_log=random_log, apply_all=apply_all,
                           state=state, ops=ops_strategy, TIMEOUT=TIMEOUT)
