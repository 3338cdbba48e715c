"""Fixtures of the state-machine tests (tests/statemachine), handed out as the ``smh`` namespace.

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib``, so the test modules share helpers through fixtures only.

- The command encoders and ``random_log`` of tests/commandlog.py (shared with the SQLite
  machine's tests): ``smh.register``, ``smh.put``, ``smh.delete``, ``smh.cas``,
  ``smh.keepalive``, ``smh.cas_rev``, ``smh.lease_grant``, ``smh.lease_revoke``,
  ``smh.lease_keepalive``, ``smh.tick``, and ``smh.random_log(ops)`` with ``smh.ops``, the
  hypothesis strategy of its op tuples.
- ``smh.apply_all(machine, log, first=1)``: the answers of applying ``log``.
- ``smh.state(machine)``: everything that must be equal between two machines with the same
  history (the KV pairs with their revisions, every session's fields and cache in order, the
  leases, applied index, clock, lease term).
- ``smh.TIMEOUT``: the session timeout used with ``random_log`` (1,000 ms).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastraft_test_commandlog import (TIMEOUT, cas, cas_rev, delete, keepalive,  # conftest
                                      lease_grant, lease_keepalive, lease_revoke, put,
                                      random_log, register, tick)
from hypothesis import strategies as st

#: One drawn op: (kind, session choice, key choice, time step, retry/ack choice).
op_strategy = st.tuples(st.integers(0, 15), st.integers(0, 7), st.integers(0, 4),
                        st.integers(0, 12), st.integers(0, 5))
ops_strategy = st.lists(op_strategy, max_size=80)


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
