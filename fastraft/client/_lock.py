"""Locks and elections: client-side recipes on leases, revision cas, scans and watches.

Place in the architecture: the client layer, used by ``_coord.Coordination.lock`` and
``.election`` (``AsyncClient``; ``sync`` wraps them). No server command of its own: the
recipe is etcd's ``concurrency`` package's, on fastraft's primitives.

The recipe (docs/architecture.md, "Coordination"):

- A contender grants itself a lease (the TTL asked for) and keeps it alive in the background
  (every third of the TTL). It creates its own key ``PREFIX + name + "/" + lease id`` (the
  name's "%" and "/" escaped as "%25" and "%2F") with a revision cas from "absent", attached
  to the lease: the key's revision is its place in the queue.
- It holds the lock when its key has the lowest revision under ``PREFIX + name + "/"``.
  Otherwise it watches only its predecessor (the key with the highest revision below its own;
  no thundering herd) until that key is deleted, then looks again: waiters are served in
  revision order, fairly. A watch that ends (Compacted, Busy) is no failure: it looks again.
- The fence (``Held.fence``) is the revision of the holder's key: each holder's is above every
  earlier holder's, so the protected resource can refuse a write carrying a lower fence than
  one it has seen.
- Release revokes the lease (its key goes with it). A holder that cannot renew its lease
  within the TTL (paused, partitioned) may have lost the lock: ``Held.lost`` is set at the
  last moment the lease was surely valid (the send time of the last renewal acknowledged plus
  the TTL), and ``Held.check()`` raises LockLost from then on. This is the honest limit of any
  lease-based lock: only the fence protects a resource from a holder that does not know yet.

An election is the same queue: the candidate whose key has the lowest revision leads, its key's
value is the leader's proclamation; ``observe`` follows the leader as it changes.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import (Busy, Compacted, FastraftError, LeaseNotFound, LocalProtocolError,
                      LockLost)
from . import _protocol as P

__all__ = ["Lock", "Election", "Held", "LOCK_PREFIX", "ELECTION_PREFIX"]

log = logging.getLogger("fastraft.client")

LOCK_PREFIX = b"fastraft/lock/"
ELECTION_PREFIX = b"fastraft/election/"


def _queue_prefix(root: bytes, name: bytes) -> bytes:
    """``root + name + "/"`` with the name's "%" and "/" escaped ("%25", "%2F"), so that no
    name's queue is a prefix of another's (lock "a" must not see the keys of lock "a/b")."""
    return root + name.replace(b"%", b"%25").replace(b"/", b"%2F") + b"/"


class Held:
    """A place in a lock's (or an election's) queue once it is first: ``fence`` (the revision
    of its key), ``lease``, ``key``, and ``lost``, an ``asyncio.Event`` set when the lease may
    have expired."""

    def __init__(self, lease: int, key: bytes, fence: int, lost: asyncio.Event) -> None:
        self.lease = lease
        self.key = key
        self.fence = fence
        self.lost = lost

    def check(self) -> None:
        """Raise LockLost if the lease may have expired (another may hold the lock now)."""
        if self.lost.is_set():
            raise LockLost(f"the lease {self.lease} of {self.key!r} could not be renewed in "
                           f"time: another client may hold it now (fence {self.fence})")

    def __repr__(self) -> str:
        return f"Held(fence={self.fence}, lease={self.lease}, lost={self.lost.is_set()})"


class _Queue:
    """A contender's place under ``prefix``: its lease, the keep-alive, its key."""

    def __init__(self, client, prefix: bytes, ttl_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl_ms / 1000
        self.lease = 0
        self.key = b""
        self.rev = 0
        self.lost = asyncio.Event()
        self._keeper: asyncio.Task | None = None

    async def join(self, value: bytes) -> None:
        """Take a lease, start renewing it, and put our key (with ``value``) in the queue."""
        c = self.client
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.lease = await c.lease_grant(self.ttl)
        self._keeper = loop.create_task(self._keep_alive(sent))
        c._keepers.add(self._keeper)
        self._keeper.add_done_callback(c._keepers.discard)
        self.key = self.prefix + b"%016x" % self.lease
        swapped, self.rev = await c.cas_revision(self.key, 0, value, lease=self.lease)
        if not swapped:                  # our lease's key cannot exist already
            raise FastraftError(f"the lock key {self.key!r} existed before it was made")

    async def first(self, value: bytes) -> Held:
        """Join the queue with ``value`` and wait until first; on any failure or
        cancellation leave it (the lease revoked) before passing the exception on."""
        try:
            await self.join(value)
            await self.wait_first()
        except BaseException:
            await asyncio.shield(self.leave())
            raise
        return Held(self.lease, self.key, self.rev, self.lost)

    async def wait_first(self) -> None:
        """Return once our key has the lowest revision under the prefix (LockLost if our
        lease is lost meanwhile)."""
        c = self.client
        while True:
            self._check()
            now = await c.revision()
            items = await c.scan_items(self.prefix)
            if not any(k == self.key for k, _v, _r in items):
                self.lost.set()
                self._check()
            older = [(r, k) for k, _v, r in items if r < self.rev]
            if not older:
                return
            await self._wait_deleted(max(older)[1], now + 1)

    async def _wait_deleted(self, key: bytes, start: int) -> None:
        """Until ``key`` is deleted at or after revision ``start``, or our lease is lost."""
        loop = asyncio.get_running_loop()
        lost = loop.create_task(self.lost.wait())
        try:
            async with self.client.watch(key, start) as w:
                nxt = None
                try:
                    while True:
                        nxt = loop.create_task(w.__anext__())
                        await asyncio.wait((nxt, lost), return_when=asyncio.FIRST_COMPLETED)
                        if not nxt.done():
                            return              # lost: the caller's _check raises
                        try:
                            ev = nxt.result()
                        except (Compacted, Busy):
                            return              # the caller looks again (scan, new watch)
                        except StopAsyncIteration:      # the client closed the watch
                            raise LocalProtocolError("the client is closed") from None
                        if ev.key == key and ev.type == "delete":
                            return
                finally:                        # (cancelled too) before the watch closes
                    if nxt is not None and not nxt.done():
                        nxt.cancel()
        finally:
            lost.cancel()

    def _check(self) -> None:
        if self.lost.is_set():
            raise LockLost(f"the lease {self.lease} of {self.key!r} expired or could not be "
                           f"renewed in time")

    async def _keep_alive(self, last_ok: float) -> None:
        """Renew the lease every third of its TTL; set ``lost`` when it may have expired:
        at ``last_ok + ttl``, ``last_ok`` being when the last acknowledged renewal (or the
        grant) was sent."""
        c = self.client
        loop = asyncio.get_running_loop()
        ttl = self.ttl
        while True:
            await asyncio.sleep(max(0.0, min(ttl / 3, last_ok + ttl - loop.time())))
            sent = loop.time()
            left = last_ok + ttl - sent
            if left <= 0:
                break
            try:
                await c.lease_keepalive(self.lease, deadline=left)
                last_ok = sent
            except LeaseNotFound:
                break
            except FastraftError as exc:
                log.debug("renewing lease %d failed: %s", self.lease, exc)
                if loop.time() >= last_ok + ttl:
                    break
        log.warning("lease %d of %r may have expired: the lock is lost", self.lease, self.key)
        self.lost.set()

    async def leave(self) -> None:
        """Stop renewing and revoke the lease (our key goes with it); best effort."""
        keeper = self._keeper
        if keeper is not None and not keeper.done():
            keeper.cancel()
        if self.lease:
            try:
                await self.client.lease_revoke(self.lease)
            except FastraftError as exc:
                log.warning("revoking lease %d failed (it expires after its TTL): %s",
                            self.lease, exc)


class Lock:
    """``async with client.lock(name, ttl=10) as held``: wait until held, release on exit
    (module docstring)."""

    def __init__(self, client, name: bytes, ttl_ms: int) -> None:
        self._q = _Queue(client, _queue_prefix(LOCK_PREFIX, name), ttl_ms)
        self.held: Held | None = None

    async def acquire(self) -> Held:
        """Wait until this client holds the lock; a ``Held``."""
        self.held = await self._q.first(b"")
        return self.held

    async def release(self) -> None:
        """Give the lock up (revoke its lease)."""
        await self._q.leave()

    async def __aenter__(self) -> Held:
        return await self.acquire()

    async def __aexit__(self, *exc) -> None:
        await self.release()


class Election:
    """Leader election on ``name``: ``campaign(value)`` waits until this client leads,
    ``leader()`` is the current leader's value, ``resign()`` steps down, ``observe()``
    follows the leader's value as it changes (module docstring)."""

    def __init__(self, client, name: bytes, ttl_ms: int) -> None:
        self.client = client
        self.prefix = _queue_prefix(ELECTION_PREFIX, name)
        self._ttl_ms = ttl_ms
        self._q: _Queue | None = None
        self.held: Held | None = None

    async def campaign(self, value) -> Held:
        """Stand with ``value`` and wait until elected; a ``Held`` (``fence``: the term of
        this leadership, above every earlier one's)."""
        q = self._q = _Queue(self.client, self.prefix, self._ttl_ms)
        self.held = await q.first(P.to_bytes(value, "value"))
        return self.held

    async def resign(self) -> None:
        """Step down (or leave the queue)."""
        if self._q is not None:
            await self._q.leave()
            self._q = None
            self.held = None

    async def leader(self) -> tuple[bytes, int] | None:
        """``(value, fence)`` of the current leader, or None when nobody stands."""
        items = await self.client.scan_items(self.prefix)
        if not items:
            return None
        _k, value, rev = min(items, key=lambda it: it[2])
        return value, rev

    async def observe(self):
        """An async generator of ``(value, fence)`` each time the leader changes (the
        current one first, None while nobody stands)."""
        last = object()
        while True:
            start = await self.client.revision()
            current = await self.leader()
            if current != last:
                last = current
                yield current
            try:
                async with self.client.watch(self.prefix, start + 1) as w:
                    async for _ev in w:
                        break
            except (Compacted, Busy):
                pass                            # read the leader again, watch afresh
