"""The lease table of the state machine: leases with a TTL, the keys attached to them, and
their expiry by the log's clock.

Place in the architecture: inside ``fastraft.statemachine``, beside ``sessions.py``, used only
by ``machine.py``. Pure Python, deterministic, no IO, no wall clock: like sessions, leases
live on the ``clock`` the machine derives from the leader timestamps in the log, so every node
expires the same leases at the same log index and deletes the same keys.

Rules (docs/architecture.md, "Coordination"):

- A lease is created by a LEASE_GRANT entry; its id is that entry's index. It holds its TTL
  (ms), a ``deadline`` on the clock and the keys attached to it (a put with the lease
  attaches the key; a put without one, or a delete, detaches it).
- ``keepalive`` moves the deadline to ``clock + ttl``.
- ``due(clock)`` removes and returns the leases whose deadline is at or before ``clock``,
  earliest deadline first (ties by id): the machine deletes their keys in the entry that
  moved the clock there. ``next_deadline`` lets the leader propose a clock entry
  (CMD_TICK) when a deadline passes and nothing else is being written.
- A new term (the first command of a leader's term) calls ``refresh(ts)``: every deadline
  becomes at least ``ts + ttl``, so a new leader, whose wall clock may run ahead of the old
  one's, never expires a lease sooner than the old leader promised (etcd refreshes its leases
  on promotion in the same way).
- At most ``max_leases`` leases: a grant on a full table is refused (Busy).

The deadlines are kept in a min-heap of ``(deadline, id)`` with lazy deletion: a renewed,
refreshed or revoked lease leaves its old heap item behind, skipped when it surfaces.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

__all__ = ["Lease", "LeaseTable", "DEFAULT_MAX_LEASES", "MAX_TTL_MS"]

DEFAULT_MAX_LEASES = 100_000
#: The longest TTL a lease may have (about 10 years, in ms): keeps deadlines small integers.
MAX_TTL_MS = 10 * 366 * 86_400_000


class Lease:
    """One lease: id (its grant's index), TTL and deadline (ms on the log's clock) and the
    keys attached to it."""

    __slots__ = ("id", "ttl", "deadline", "keys")

    def __init__(self, lid: int, ttl: int, deadline: int, keys: set | None = None) -> None:
        self.id = lid
        self.ttl = ttl
        self.deadline = deadline
        self.keys: set[bytes] = set() if keys is None else keys

    def __repr__(self) -> str:
        return (f"Lease(id={self.id}, ttl={self.ttl}, deadline={self.deadline}, "
                f"keys={len(self.keys)})")


class LeaseTable:
    """The leases of one state machine, and which lease each attached key belongs to."""

    __slots__ = ("max_leases", "live", "_heap", "key_lease", "changed")

    def __init__(self, max_leases: int = DEFAULT_MAX_LEASES) -> None:
        if max_leases < 1:
            raise ValueError("max_leases >= 1 needed")
        self.max_leases = max_leases
        #: id -> Lease, every live lease (read only for callers: a cheap "any lease?" test)
        self.live: dict[int, Lease] = {}
        self._heap: list[tuple[int, int]] = []
        #: key -> id of the lease it is attached to (only attached keys are here)
        self.key_lease: dict[bytes, int] = {}
        #: When a set, the ids of the leases created, changed or removed are added to it: a
        #: persistent copy of the table (the SQLite backend) rewrites or deletes their rows.
        self.changed: set | None = None

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, lid: int) -> bool:
        return lid in self.live

    def get(self, lid: int) -> Lease | None:
        return self.live.get(lid)

    def leases(self) -> list[Lease]:
        """Every lease, by id (the snapshot order)."""
        return [self.live[i] for i in sorted(self.live)]

    def _mark(self, lid: int) -> None:
        if self.changed is not None:
            self.changed.add(lid)

    # -- commands ----------------------------------------------------------------------------

    def grant(self, lid: int, ttl: int, clock: int) -> Lease | None:
        """Create lease ``lid`` (the grant entry's index) expiring at ``clock + ttl``; None
        when the table is full."""
        assert lid not in self.live, f"lease {lid} granted twice"
        if len(self.live) >= self.max_leases:
            return None
        lease = Lease(lid, ttl, clock + ttl)
        self.live[lid] = lease
        heappush(self._heap, (lease.deadline, lid))
        self._mark(lid)
        return lease

    def keepalive(self, lid: int, clock: int) -> Lease | None:
        """Renew lease ``lid`` to ``clock + ttl``; None when it does not exist."""
        lease = self.live.get(lid)
        if lease is None:
            return None
        deadline = clock + lease.ttl
        if deadline > lease.deadline:
            lease.deadline = deadline
            heappush(self._heap, (deadline, lid))
            self._mark(lid)
        return lease

    def revoke(self, lid: int) -> Lease | None:
        """Remove lease ``lid`` and detach its keys (the caller deletes them); None when it
        does not exist."""
        lease = self.live.pop(lid, None)
        if lease is None:
            return None
        key_lease = self.key_lease
        for k in lease.keys:
            del key_lease[k]
        self._mark(lid)
        return lease

    def attach(self, key: bytes, lid: int) -> None:
        """Attach ``key`` to lease ``lid`` (which exists), detaching it from any other."""
        old = self.key_lease.get(key)
        if old == lid:
            return
        if old is not None:
            self.live[old].keys.discard(key)
            self._mark(old)
        self.live[lid].keys.add(key)
        self.key_lease[key] = lid
        self._mark(lid)

    def detach(self, key: bytes) -> None:
        """``key`` was deleted or written without a lease: it belongs to none any more."""
        old = self.key_lease.pop(key, None)
        if old is not None:
            self.live[old].keys.discard(key)
            self._mark(old)

    # -- time --------------------------------------------------------------------------------

    def refresh(self, ts: int) -> None:
        """A new leader's first command, stamped ``ts``: every deadline at least ``ts + ttl``."""
        for lease in self.live.values():
            deadline = ts + lease.ttl
            if deadline > lease.deadline:
                lease.deadline = deadline
                self._mark(lease.id)
        self._heap = [(lease.deadline, lid) for lid, lease in self.live.items()]
        heapify(self._heap)

    def next_deadline(self) -> int | None:
        """The earliest deadline of a live lease, or None without leases."""
        heap = self._heap
        leases = self.live
        while heap:
            deadline, lid = heap[0]
            lease = leases.get(lid)
            if lease is not None and lease.deadline == deadline:
                return deadline
            heappop(heap)                       # stale: renewed, refreshed or revoked
        return None

    def due(self, clock: int) -> list[Lease]:
        """Remove and return the leases whose deadline is at or before ``clock``, earliest
        first (ties by id), their keys detached (the caller deletes them)."""
        out = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > clock:
                return out
            _d, lid = heappop(self._heap)
            out.append(self.revoke(lid))

    # -- snapshots ---------------------------------------------------------------------------

    def load(self, leases: list[Lease]) -> None:
        """Replace the table's content (snapshot restore or a database load): ``leases`` with
        distinct ids and no key in two leases (the caller validated both)."""
        self.live = {lease.id: lease for lease in leases}
        self.key_lease = {k: lease.id for lease in leases for k in lease.keys}
        self._heap = [(lease.deadline, lease.id) for lease in leases]
        heapify(self._heap)
