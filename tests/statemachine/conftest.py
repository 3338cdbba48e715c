"""Fixtures of the state-machine tests (tests/statemachine), handed out as the ``smh`` namespace.

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib``, so the test modules share helpers through fixtures only.

- ``smh.register(ts)``, ``smh.put(ts, session, seq, first, key, value)``, ``smh.delete(...)``,
  ``smh.cas(...)``, ``smh.keepalive(ts, session, first)``: encoded command payloads.
- ``smh.random_log(ops)``: a log (list of payloads) built from hypothesis-drawn op tuples:
  registrations, writes of live, expired and unknown sessions, retries of old sequence numbers,
  acknowledgements, keepalives, no-ops, invalid payloads, and timestamps that mostly advance,
  sometimes jump past the session timeout and sometimes go backwards.
- ``smh.apply_all(machine, log, first=1)``: the answers of applying ``log``.
- ``smh.state(machine)``: everything that must be equal between two machines with the same
  history (the KV pairs, every session's fields and cache in order, applied index, clock).
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


def put(ts, session, seq, first, key, value):
    return codec.encode_command([codec.CMD_PUT, ts, session, seq, first, key, value])


def delete(ts, session, seq, first, key):
    return codec.encode_command([codec.CMD_DELETE, ts, session, seq, first, key])


def cas(ts, session, seq, first, key, expected, new):
    return codec.encode_command([codec.CMD_CAS, ts, session, seq, first, key, expected, new])


def keepalive(ts, session, first):
    return codec.encode_command([codec.CMD_KEEPALIVE, ts, session, first])


#: One drawn op: (kind, session choice, key choice, time step, retry/ack choice).
op_strategy = st.tuples(st.integers(0, 11), st.integers(0, 7), st.integers(0, 4),
                        st.integers(0, 12), st.integers(0, 5))
ops_strategy = st.lists(op_strategy, max_size=80)


def random_log(ops) -> list[bytes]:
    log: list[bytes] = []
    ts = 1000
    sessions: list[int] = []                    # ids (indexes of REGISTER entries)
    next_seq: dict[int, int] = {}
    acked: dict[int, int] = {}
    for kind, who, key_choice, step, extra in ops:
        if step == 12 and extra >= 4:
            ts += TIMEOUT + extra - 4           # to the timeout's edge, or just past it
        elif step == 11:
            ts = max(0, ts - 200)               # a new leader whose clock is behind
        else:
            ts += step * 15
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
            log.append(put(ts, sid, seq, first, key, b"v%d" % index))
        elif kind in (4, 5):
            log.append(delete(ts, sid, seq, first, key))
        elif kind in (6, 7, 8):
            expected = None if extra == 0 else b"v%d" % (index - 1 - extra)
            log.append(cas(ts, sid, seq, first, key, expected, b"c%d" % index))
        else:
            log.append(keepalive(ts, sid, acked.get(sid, 1)))
    return log


def apply_all(machine, log, first: int = 1) -> list:
    return [machine.apply(first + i, p) for i, p in enumerate(log)]


def state(machine):
    sessions = [(s.id, s.last_active, s.floor, list(s.responses.items()))
                for s in machine.sessions.sessions()]
    return (list(machine.kv.items()), sessions, machine.applied_index, machine.clock,
            machine.session_timeout_ms)


@pytest.fixture(scope="session")
def smh():
    """The helpers above (immutable; session scope so hypothesis tests may take it)."""
    return SimpleNamespace(register=register, put=put, delete=delete, cas=cas,
                           keepalive=keepalive, random_log=random_log, apply_all=apply_all,
                           state=state, ops=ops_strategy, TIMEOUT=TIMEOUT)
