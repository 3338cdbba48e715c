"""Verification of a running cluster from the outside: histories, linearizability, faults.

Place in the architecture: beside the client, above the codec and the core; it observes and
disturbs real node processes the way Jepsen does and never imports the server. Modules:

- ``linearizability``: the linearizability checker (Wing & Gong / Porcupine search per key,
  with a time budget) and the stale-read checker. Pure computation.
- ``final_state``: the checks of the set (no acknowledged insert lost) and session
  (exactly-once increments and appends) workloads against the state read after the run, of
  the membership against the nemesis's, and of every member's state against the leader's.
  Pure computation.
- ``history``: the JSON-lines history (one line per invoke and per completion), thread- and
  asyncio-safe recording, and conversion into checker operations.
- ``proxy``: the asyncio fault proxy for peer links (block, blackhole, drop, delay, heal per
  directed link, in a ``ProxyNetwork``; partitions on top), runnable in a background thread;
  with ``ProxyTLS`` it terminates TLS (a ``--tls`` run), so the faults still act on frames.
- ``pki``: the certificates of a ``--tls`` run (``fastraft.certs``) and the TLS contexts of
  its nodes' config, its proxies and its clients (``fastraft.tls``).
- ``workloads``: the register, set (durability: unique inserts, all present after kill -9 of
  every node) and session (exactly-once: cas-loop increments and appends) workloads over
  ``fastraft.client.AsyncClient``, on one worker scaffolding (``Workload``).
- ``coord_checks``: the checks of the watch streams, the lock (exclusion by the leases' sure
  lives, fence order, the fence-checked counter) and the leases (early expiry, revocation,
  expiry). Pure computation.
- ``coord_workloads``: the watch, lock and lease workloads over ``AsyncClient``
  (``finish_coord`` after the load, ``judge_coord``). Not imported here (it needs the
  client).
- ``schedule``: the fault schedule, planned before a run (every kind once per round in a
  seeded order; the kinds that do not fit in the duration skipped with the reason). Pure.
- ``faults``: one object per fault kind (partition, kill, pause, degrade, wipe, transfer,
  disk, member) with ``start`` and ``heal``.
- ``membership``: the ``member`` fault (add a learner, promote, remove, replace through the
  client's member API) and the end checks it brings (the committed membership, every
  member's state). Not imported here (it needs the client).
- ``report``: the words of a run's summary (each count with its meaning, the faults that ran
  and were skipped, their outcomes). Pure.
- ``nemesis``: a whole verification run — node processes (``fastraft.processes``) behind the
  proxies, the workloads, the ``Nemesis`` following the schedule, the verdict.
  ``python -m fastraft.verify`` (``__main__``) is its command line. Not imported here (it
  needs POSIX signals and the client).
- ``plot``: ``latency.png`` of a run (latency over time per operation kind, fault windows
  shaded) when matplotlib is installed (``pip install 'fastraft[plot]'``).
"""

from .linearizability import (
    OK,
    UNKNOWN,
    VIOLATION,
    CheckResult,
    KeyResult,
    Operation,
    RegisterModel,
    StaleReadResult,
    Violation,
    check,
    check_key,
    check_stale_reads,
)
from .history import Event, HistoryWriter, Operations, read_history, to_operations
from .proxy import FaultProxy, LinkState, LoopThread, ProxyNetwork, Proxies
from .schedule import FAULT_KINDS, FaultPlan, plan_faults
from .final_state import (
    MembershipResult,
    ReplicaResult,
    SessionResult,
    SetResult,
    check_membership,
    check_replicas,
    check_session,
    check_set,
)

__all__ = [
    "OK", "UNKNOWN", "VIOLATION",
    "CheckResult", "KeyResult", "Operation", "RegisterModel", "StaleReadResult", "Violation",
    "check", "check_key", "check_stale_reads",
    "Event", "HistoryWriter", "Operations", "read_history", "to_operations",
    "FaultProxy", "LinkState", "LoopThread", "ProxyNetwork", "Proxies",
    "FAULT_KINDS", "FaultPlan", "plan_faults",
    "SessionResult", "SetResult", "check_session", "check_set",
    "MembershipResult", "ReplicaResult", "check_membership", "check_replicas",
]
