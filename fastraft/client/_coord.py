"""The coordination half of ``AsyncClient``: revisions, leases, watches, locks, elections.

Place in the architecture: the client layer; ``aio.AsyncClient`` inherits ``Coordination``
(its calls go through ``AsyncClient._call``, so they retry, fail over and keep the
NotApplied / OutcomeUnknown split like every other call). Watches are ``_watch.Watch``;
locks and elections are recipes on leases, revision cas and watches (``_lock``), with no
server command of their own.

Revisions are the log indexes of the writes (docs/architecture.md, "Coordination"). Leases
live on the leader's clock as the log records it: a lease not renewed for its TTL expires and
its keys are deleted in one entry; TTLs are given in seconds here, whole milliseconds on the
wire (at least ``codec.MIN_LEASE_TTL_MS``).
"""

from __future__ import annotations

from ..codec import (OP_CAS_REV, OP_GET, OP_LEASE_GRANT, OP_LEASE_KEEPALIVE, OP_LEASE_REVOKE,
                     OP_REVISION, OP_SCAN)
from ..errors import RemoteProtocolError
from . import _protocol as P
from ._attempts import PLAIN, READ, STALE, WRITE
from ._lock import Election, Lock
from ._watch import Watch

__all__ = ["Coordination", "ttl_ms", "lease_id"]


def ttl_ms(ttl) -> int:
    """A TTL in seconds (int or float) as whole milliseconds; ValueError when not positive."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"a lease's TTL must be a positive number of seconds, not {ttl!r}")
    return max(1, round(ttl * 1000))


def lease_id(lease) -> int:
    """A lease id (a positive int); ValueError otherwise."""
    if isinstance(lease, bool) or not isinstance(lease, int) or lease < 1:
        raise ValueError(f"a lease id is a positive integer, not {lease!r}")
    return lease


def _uint(values: list, what: str) -> int:
    if len(values) != 1 or type(values[0]) is not int or values[0] < 0:
        raise RemoteProtocolError(f"malformed {what} answer: {values!r:.100}")
    return values[0]


class Coordination:
    """Revisions, leases, watches, locks and elections (module docstring); mixed into
    ``AsyncClient``."""

    async def get_item(self, key, stale: bool = False, *, deadline: float | None = None
                       ) -> tuple[bytes, bytes, int] | None:
        """``(key, value, revision)`` of ``key`` (the revision of its last write), or None
        when it is absent; linearizable unless ``stale``."""
        k = P.to_bytes(key)
        values = await self._call(STALE if stale else READ, OP_GET, (k, bool(stale), True),
                                  deadline=deadline)
        if len(values) != 1 or (values[0] is not None and (
                type(values[0]) is not list or len(values[0]) != 2
                or type(values[0][0]) is not bytes or type(values[0][1]) is not int)):
            raise RemoteProtocolError(f"malformed get answer: {values!r:.100}")
        return None if values[0] is None else (k, values[0][0], values[0][1])

    async def scan_items(self, prefix=b"", limit: int = 0, stale: bool = False, *,
                         deadline: float | None = None) -> list[tuple[bytes, bytes, int]]:
        """As ``scan``, each pair with its revision: ``[(key, value, revision), ...]``."""
        if type(limit) is not int or limit < 0:
            raise ValueError("limit must be a non-negative integer")
        values = await self._call(STALE if stale else READ, OP_SCAN,
                                  (P.to_bytes(prefix, "prefix"), limit, bool(stale), True),
                                  deadline=deadline)
        if len(values) != 1 or type(values[0]) is not list or not all(
                type(r) is list and len(r) == 3 and type(r[0]) is bytes
                and type(r[1]) is bytes and type(r[2]) is int for r in values[0]):
            raise RemoteProtocolError(f"malformed scan answer: {values!r:.100}")
        return [tuple(r) for r in values[0]]

    async def revision(self, stale: bool = False, *, deadline: float | None = None) -> int:
        """The cluster's current revision (the leader's applied index after a ReadIndex
        round: every write acknowledged before the call is at or below it); ``stale``: any
        node's own."""
        return _uint(await self._call(STALE if stale else READ, OP_REVISION, (bool(stale),),
                                      deadline=deadline), "revision")

    async def cas_revision(self, key, revision: int, new, *, lease: int | None = None,
                           deadline: float | None = None) -> tuple[bool, int]:
        """Set ``key`` to ``new`` if its revision is ``revision`` (0: if it is absent), as
        one atomic write applied exactly once; ``(swapped, the key's revision after it)``."""
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError("revision must be a non-negative integer (0: absent)")
        values = await self._call(WRITE, OP_CAS_REV, (
            P.to_bytes(key), revision, P.to_bytes(new, "new"),
            0 if lease is None else lease_id(lease)), deadline=deadline)
        if (len(values) != 1 or type(values[0]) is not list or len(values[0]) != 2
                or type(values[0][0]) is not bool or type(values[0][1]) is not int):
            raise RemoteProtocolError(f"malformed cas answer: {values!r:.100}")
        return values[0][0], values[0][1]

    async def lease_grant(self, ttl, *, deadline: float | None = None) -> int:
        """A new lease of ``ttl`` seconds (at least 1); its id. Keys put with it are deleted
        when it expires (not renewed for ``ttl``) or is revoked."""
        return _uint(await self._call(WRITE, OP_LEASE_GRANT, (ttl_ms(ttl),),
                                      deadline=deadline), "lease grant")

    async def lease_keepalive(self, lease: int, *, deadline: float | None = None) -> float:
        """Renew ``lease`` for its whole TTL from now; its TTL in seconds. LeaseNotFound when
        it expired or was revoked."""
        return _uint(await self._call(PLAIN, OP_LEASE_KEEPALIVE, (lease_id(lease),),
                                      deadline=deadline), "lease keepalive") / 1000

    async def lease_revoke(self, lease: int, *, deadline: float | None = None) -> bool:
        """End ``lease`` now, deleting its keys (exactly once); True when it existed."""
        return P.check_bool(await self._call(WRITE, OP_LEASE_REVOKE, (lease_id(lease),),
                                             deadline=deadline))

    def watch(self, prefix=b"", start_revision: int | None = None) -> Watch:
        """The changes under ``prefix`` from ``start_revision`` (inclusive; None: from the
        moment the watch starts, at ``async with`` or the first iteration: after every write
        acknowledged before that): an async context manager and iterator of ``Event``
        (``type``, ``key``, ``value``, ``revision``), in revision order, without a gap or a
        repeat across reconnects and leader changes (``_watch``)."""
        self._check_open()
        w = Watch(self, P.to_bytes(prefix, "prefix"), start_revision)
        self._watches.add(w)
        return w

    def watch_order(self) -> list[str]:
        """The nodes a watch tries, in order: the believed leader (the least behind) first."""
        eps = list(self.endpoints)
        lead = self._leader
        if lead in eps:
            eps.remove(lead)
            eps.insert(0, lead)
        return eps

    def lock(self, name, ttl: float = 10.0) -> Lock:
        """A lock on ``name`` (``_lock``): ``async with client.lock("job", ttl=10) as held``
        waits until it is held; ``held.fence`` is its fencing token, ``held.lost`` an
        ``asyncio.Event`` set if its lease could not be kept alive."""
        return Lock(self, P.to_bytes(name, "name"), ttl_ms(ttl))

    def election(self, name, ttl: float = 10.0) -> Election:
        """An election on ``name`` (``_lock``): campaign, leader, resign, observe."""
        return Election(self, P.to_bytes(name, "name"), ttl_ms(ttl))

    async def _close_watches(self) -> None:
        """The client closes: end its watches and stop renewing its locks' leases (they
        expire after their TTL)."""
        for w in list(self._watches):
            await w.close()
        self._watches.clear()
        for task in list(self._keepers):
            task.cancel()
