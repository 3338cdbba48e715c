"""Encoded log commands and random committed logs, for every test directory that feeds a state
machine: the in-memory machine's tests (tests/statemachine, through its ``smh`` fixture) and
the SQLite machine's (tests/storage/test_sqlite_machine.py), which must agree on the same logs.

Place in the architecture: test infrastructure only. pytest runs with ``--import-mode=
importlib``, so ``tests/conftest.py`` loads this file as the module
``fastraft_test_commandlog``.

- ``register(ts)``, ``put(ts, session, seq, first, key, value, lease=None)``, ``delete(...)``,
  ``cas(..., expected, new, lease=None)``, ``keepalive(ts, session, first)``,
  ``cas_rev(ts, session, seq, first, key, rev, new, lease=0)``,
  ``lease_grant(ts, session, seq, first, ttl)``, ``lease_revoke(..., lease)``,
  ``lease_keepalive(ts, lease)``, ``tick(ts)``: encoded command payloads.
- ``random_log(ops)``: a log (list of ``(term, payload)``) built from op tuples (drawn by
  hypothesis, or by ``random_ops`` from a seeded ``random.Random``): registrations, writes of
  live, expired and unknown sessions, retries of old sequence numbers, acknowledgements,
  keepalives, no-ops, invalid payloads, leases granted, renewed, revoked and left to expire
  with keys attached (puts and cas naming unknown leases too), revision compare-and-swaps,
  clock ticks, new terms, and timestamps that mostly advance, sometimes jump past the session
  timeout ``TIMEOUT`` (1,000 ms) and sometimes go backwards.
"""

from __future__ import annotations

from fastraft import codec

__all__ = ["TIMEOUT", "register", "put", "delete", "cas", "keepalive", "cas_rev",
           "lease_grant", "lease_revoke", "lease_keepalive", "tick", "random_ops",
           "random_log"]

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


def cas(ts, session, seq, first, key, expected, new, lease=None):
    cmd = [codec.CMD_CAS, ts, session, seq, first, key, expected, new]
    return codec.encode_command(cmd if lease is None else cmd + [lease])


def keepalive(ts, session, first):
    return codec.encode_command([codec.CMD_KEEPALIVE, ts, session, first])


def random_ops(rng, n: int) -> list[tuple]:
    """``n`` op tuples drawn from ``rng`` (a ``random.Random``) as ``OPS`` would draw them."""
    return [(rng.randint(0, 15), rng.randint(0, 7), rng.randint(0, 4), rng.randint(0, 12),
             rng.randint(0, 5)) for _ in range(n)]


def random_log(ops, ttl_unit: int = 40) -> list[tuple[int, bytes]]:
    """The log (``(term, payload)`` pairs) the op tuples ``(kind, session choice, key
    choice, time step, retry/ack choice)`` make (module docstring); leases get TTLs of
    ``ttl_unit`` times 1 to 30 ms."""
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
            log.append(cas(ts, sid, seq, first, key, expected, b"c%d" % index,
                           lease if extra == 2 else None))
        elif kind == 12:
            log.append(lease_grant(ts, sid, seq, first, ttl_unit * (1 + key_choice)
                                    * (1 + extra)))
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
