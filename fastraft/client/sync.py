"""``Client``: the blocking client, a thin wrapper around ``AsyncClient``.

Place in the architecture: the client layer, above ``aio``. It owns a private event loop that
runs in a daemon thread and submits each call to it (``run_coroutine_threadsafe``), so the
protocol, the session, the retries and the timeouts are exactly the asyncio client's: nothing
is implemented twice. Calls from several threads are safe and pipeline on the same
connections. The loop is the standard asyncio loop (pure Python, no extension needed).

Coordination (revisions, leases, watches, locks, elections: ``_coord``, ``_watch``, ``_lock``)
is wrapped the same way: ``Watch``, ``Lock``, ``Held`` and ``Election`` here are blocking
faces of the asyncio objects, whose work runs on the private loop. A blocking call that is
interrupted (Ctrl-C: KeyboardInterrupt in the calling thread) cancels its coroutine on the
loop, so nothing keeps running behind the caller's back; the calls that join a lock's or an
election's queue also wait (at most the client's ``timeout``) for their cleanup (the lease
revoked) before the interruption goes on.
"""

from __future__ import annotations

import asyncio
import threading

from ..errors import LocalProtocolError
from . import _lock as L
from . import _watch as W
from ._members import Member
from .aio import AsyncClient

__all__ = ["Client", "Watch", "Lock", "Held", "Election"]


class Client:
    """Blocking client with the methods of ``AsyncClient`` (same arguments, same errors,
    the same NotApplied / OutcomeUnknown promise for writes); a context manager; safe to
    share between threads. ``Client(endpoints, timeout=5.0, deadline=None, retry=None,
    keepalive_interval=10.0, learn_members=True, tls=None, cacert=None, cert=None,
    key=None)``: the options of ``AsyncClient`` (TLS: an ``ssl.SSLContext``, or the CA,
    certificate and key files)."""

    def __init__(self, endpoints=None, **options) -> None:
        self._aio = AsyncClient(endpoints, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="fastraft-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._lock = threading.Lock()
        self._mirrors: set = set()      # the tasks copying a Held's lost into a thread Event

    @property
    def endpoints(self) -> list[str]:
        """The nodes' client addresses: as given (or the built-in local cluster's), then as
        the cluster's member list says (``AsyncClient``, ``learn_members``)."""
        return self._aio.endpoints

    @property
    def session_id(self) -> int | None:
        """The current session's id (None before the first write, or after it expired)."""
        return self._aio.session_id

    @property
    def limits(self) -> dict | None:
        """The cluster's request limits once a status answer told them (``AsyncClient``)."""
        return self._aio.limits

    def _run(self, coro, settle: float = 0.0):
        """Run ``coro`` on the private loop and return its result. Interrupted (Ctrl-C), it
        cancels the coroutine; with ``settle``, it then waits up to that many seconds for
        the coroutine's cleanup to end before the interruption goes on."""
        if self._closed:
            coro.close()
            raise LocalProtocolError("the client is closed")
        ended = None
        if settle:
            ended = threading.Event()
            coro = _signal_end(coro, ended)
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            # KeyboardInterrupt and friends: do not leave the call running behind our back.
            fut.cancel()
            if ended is not None:
                ended.wait(settle)
            raise

    def get(self, key, stale: bool = False, *, deadline: float | None = None
            ) -> bytes | None:
        """The value of ``key`` or None; linearizable unless ``stale`` (any node's state)."""
        return self._run(self._aio.get(key, stale, deadline=deadline))

    def put(self, key, value, *, lease: int | None = None,
            deadline: float | None = None) -> None:
        """Set ``key`` to ``value``; applied exactly once, even across retries. ``lease``:
        attach the key to that lease (deleted with it; LeaseNotFound, nothing written, when
        the lease is gone)."""
        return self._run(self._aio.put(key, value, lease=lease, deadline=deadline))

    def delete(self, key, *, deadline: float | None = None) -> bool:
        """Remove ``key`` (exactly once); True when it existed."""
        return self._run(self._aio.delete(key, deadline=deadline))

    def cas(self, key, expected, new, *, lease: int | None = None,
            deadline: float | None = None) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: absent), atomically
        and exactly once; True when swapped. ``lease`` as for ``put``."""
        return self._run(self._aio.cas(key, expected, new, lease=lease, deadline=deadline))

    def scan(self, prefix=b"", limit: int = 0, stale: bool = False, *,
             deadline: float | None = None) -> list:
        """``[(key, value), ...]`` of the keys starting with ``prefix``, in key order, at
        most ``limit`` of them (0: the node's maximum)."""
        return self._run(self._aio.scan(prefix, limit, stale, deadline=deadline))

    def status(self) -> list[dict]:
        """One status dict per endpoint, in endpoint order (``AsyncClient.status``)."""
        return self._run(self._aio.status())

    def leader(self) -> str | None:
        """The believed leader's address (asks the nodes if unknown), or None."""
        return self._run(self._aio.leader())

    def members(self, *, deadline: float | None = None) -> list[Member]:
        """The members as the leader sees them: ``Member(id, role, raft, client, is_leader,
        match)`` by id (``AsyncClient.members``)."""
        return self._run(self._aio.members(deadline=deadline))

    def add_learner(self, node_id: int, raft: str, client: str, *,
                    deadline: float | None = None) -> int | None:
        """Add ``node_id`` as a learner at peer address ``raft`` and client address
        ``client``; the change's log index, or None when found done after an attempt whose
        outcome was unknown (``AsyncClient.add_learner``: the errors)."""
        return self._run(self._aio.add_learner(node_id, raft, client, deadline=deadline))

    def promote(self, node_id: int, *, deadline: float | None = None) -> int | None:
        """Make learner ``node_id`` a voter; Busy while it is not caught up."""
        return self._run(self._aio.promote(node_id, deadline=deadline))

    def remove_member(self, node_id: int, *, deadline: float | None = None) -> int | None:
        """Remove voter or learner ``node_id`` (the leader included)."""
        return self._run(self._aio.remove_member(node_id, deadline=deadline))

    # -- coordination (``_coord``): revisions, leases, watches, locks, elections -------------

    def get_item(self, key, stale: bool = False, *, deadline: float | None = None
                 ) -> tuple[bytes, bytes, int] | None:
        """``(key, value, revision)`` of ``key`` (the revision of its last write), or None
        when it is absent; linearizable unless ``stale``."""
        return self._run(self._aio.get_item(key, stale, deadline=deadline))

    def scan_items(self, prefix=b"", limit: int = 0, stale: bool = False, *,
                   deadline: float | None = None) -> list[tuple[bytes, bytes, int]]:
        """As ``scan``, each pair with its revision: ``[(key, value, revision), ...]``."""
        return self._run(self._aio.scan_items(prefix, limit, stale, deadline=deadline))

    def revision(self, stale: bool = False, *, deadline: float | None = None) -> int:
        """The cluster's current revision (linearizable: every write acknowledged before the
        call is at or below it); ``stale``: any node's own."""
        return self._run(self._aio.revision(stale, deadline=deadline))

    def cas_revision(self, key, revision: int, new, *, lease: int | None = None,
                     deadline: float | None = None) -> tuple[bool, int]:
        """Set ``key`` to ``new`` if its revision is ``revision`` (0: if it is absent),
        atomically and exactly once; ``(swapped, the key's revision after it)``."""
        return self._run(self._aio.cas_revision(key, revision, new, lease=lease,
                                                deadline=deadline))

    def lease_grant(self, ttl, *, deadline: float | None = None) -> int:
        """A new lease of ``ttl`` seconds (at least 1); its id. Keys put with it are deleted
        when it expires (not renewed for ``ttl``) or is revoked."""
        return self._run(self._aio.lease_grant(ttl, deadline=deadline))

    def lease_keepalive(self, lease: int, *, deadline: float | None = None) -> float:
        """Renew ``lease`` for its whole TTL from now; its TTL in seconds. LeaseNotFound when
        it expired or was revoked."""
        return self._run(self._aio.lease_keepalive(lease, deadline=deadline))

    def lease_revoke(self, lease: int, *, deadline: float | None = None) -> bool:
        """End ``lease`` now, deleting its keys (exactly once); True when it existed."""
        return self._run(self._aio.lease_revoke(lease, deadline=deadline))

    def watch(self, prefix=b"", start_revision: int | None = None) -> Watch:
        """The changes under ``prefix`` from ``start_revision`` (inclusive; None: from now,
        after every write acknowledged before this call returns); a ``Watch``, a context
        manager and blocking iterator of ``Event`` (``type`` "put" or "delete", ``key``,
        ``value``, None for a delete, ``revision``), in revision order, without a gap or a
        repeat across reconnects and leader changes. The stream starts at once, so a write
        made after this call returns is in it even before the iteration begins."""
        return Watch(self, self._run(self._open_watch(prefix, start_revision)))

    async def _open_watch(self, prefix, start_revision):
        w = self._aio.watch(prefix, start_revision)
        try:
            return await w.start()
        except BaseException:
            await w.close()
            raise

    def lock(self, name, ttl: float = 10.0) -> Lock:
        """A lock on ``name``: ``with client.lock("job", ttl=10) as held`` blocks until held
        and releases on exit; ``held`` is a ``Held`` (``fence``, ``lost``, ``check()``).
        The lease behind it (``ttl`` seconds, at least 1) is renewed in the background every
        third of the TTL (``AsyncClient.lock``)."""
        return Lock(self, self._aio.lock(name, ttl))

    def election(self, name, ttl: float = 10.0) -> Election:
        """An election on ``name``: ``campaign(value)``, ``leader()``, ``resign()``,
        ``observe()`` (``Election``)."""
        return Election(self, self._aio.election(name, ttl))

    def _held(self, h: L.Held) -> Held:
        """The blocking face of ``h``, whose ``lost`` is mirrored into a threading.Event."""
        lost = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(_mirror(h.lost, lost), self._loop)
        self._mirrors.add(fut)
        fut.add_done_callback(self._mirrors.discard)
        return Held(h, lost, fut)

    def close(self) -> None:
        """Close the connections and stop the private loop's thread (idempotent); a write
        in flight fails with ConnectionLost (outcome unknown). Its watches end, and the
        leases of its locks and elections are no longer renewed (they expire after their
        TTL)."""
        with self._lock:
            if self._closed:
                return
            try:
                for fut in list(self._mirrors):
                    fut.cancel()
                asyncio.run_coroutine_threadsafe(self._aio.close(), self._loop).result(5.0)
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
                if not self._thread.is_alive():
                    self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._aio.endpoints!r})"


async def _signal_end(coro, ended: threading.Event):
    try:
        return await coro
    finally:
        ended.set()


async def _mirror(src: asyncio.Event, dst: threading.Event) -> None:
    await src.wait()
    dst.set()


class Watch:
    """A watch of ``Client`` (``Client.watch``): a context manager and a blocking iterator of
    ``Event``; iterating waits for the next change (Ctrl-C interrupts the wait and leaves the
    watch as it was: no event is lost). The iteration ends after ``close()``; a definite
    error ends it with that error (``Compacted``, ``Busy``, ``InvalidRequest``). One thread
    at a time should iterate a watch. ``prefix``; ``revision``: that of the last event
    returned (0 before any)."""

    def __init__(self, client: Client, aw: W.Watch) -> None:
        self._client = client
        self._aw = aw

    @property
    def prefix(self) -> bytes:
        return self._aw.prefix

    @property
    def revision(self) -> int:
        return self._aw.revision

    @property
    def closed(self) -> bool:
        return self._aw.closed

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> W.Event:
        if self._client._closed and self._aw.closed:
            raise StopIteration
        try:
            return self._client._run(self._aw.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def get(self, timeout: float | None = None) -> W.Event | None:
        """The next event, waiting at most ``timeout`` seconds (None: as long as it takes);
        None when none came in time or the watch is closed."""
        if self._client._closed and self._aw.closed:
            return None
        try:
            return self._client._run(_next_within(self._aw, timeout))
        except StopAsyncIteration:
            return None

    def close(self) -> None:
        """Stop the stream (idempotent); events not yet taken are dropped."""
        if not self._aw.closed and not self._client._closed:
            self._client._run(self._aw.close())

    def __repr__(self) -> str:
        return f"Watch(prefix={self.prefix!r}, revision={self.revision}, closed={self.closed})"


async def _next_within(aw: W.Watch, timeout: float | None):
    try:
        return await asyncio.wait_for(aw.__anext__(), timeout)
    except asyncio.TimeoutError:
        return None


class Held:
    """A lock (or a leadership) held, as ``Client.lock`` and ``Election.campaign`` give it:
    ``fence`` (int: the revision of its queue key, above every earlier holder's: give it to
    the resource you protect), ``lease`` (the lease id), ``key``, and ``lost``, a
    ``threading.Event`` set (by the client's loop) when the lease could not be renewed in
    time: from then on another client may hold the lock. Any thread may test
    ``held.lost.is_set()`` or wait on it (``held.lost.wait(timeout)``); ``check()`` raises
    LockLost once it is lost."""

    def __init__(self, held: L.Held, lost: threading.Event, mirror) -> None:
        self._held = held
        self.fence: int = held.fence
        self.lease: int = held.lease
        self.key: bytes = held.key
        self.lost = lost
        self._mirror = mirror

    def check(self) -> None:
        """Raise LockLost if the lease may have expired (another may hold the lock now)."""
        self._held.check()

    def _stop(self) -> None:
        self._mirror.cancel()

    def __repr__(self) -> str:
        return f"Held(fence={self.fence}, lease={self.lease}, lost={self.lost.is_set()})"


class Lock:
    """A lock of ``Client`` (``Client.lock``): ``with client.lock(name, ttl=10) as held``
    blocks until held (Ctrl-C gives up the place in the queue) and releases on exit; or
    ``acquire()`` and ``release()``."""

    def __init__(self, client: Client, alock: L.Lock) -> None:
        self._client = client
        self._lock = alock
        self.held: Held | None = None

    def acquire(self) -> Held:
        """Block until this client holds the lock; a ``Held``."""
        c = self._client
        self.held = c._held(c._run(self._lock.acquire(), settle=c._aio.timeout))
        return self.held

    def release(self) -> None:
        """Give the lock up (revoke its lease; its key goes with it)."""
        held, self.held = self.held, None
        if held is not None:
            held._stop()
        if not self._client._closed:
            self._client._run(self._lock.release(), settle=self._client._aio.timeout)

    def __enter__(self) -> Held:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Election:
    """An election of ``Client`` (``Client.election``): ``campaign(value)`` blocks until this
    client leads and returns a ``Held`` (``fence``: the term of this leadership, above every
    earlier one's); ``leader()`` is ``(value, fence)`` of the current leader or None;
    ``resign()`` steps down (or leaves the queue); ``observe()`` iterates the leader each time
    it changes."""

    def __init__(self, client: Client, aelection: L.Election) -> None:
        self._client = client
        self._e = aelection
        self.held: Held | None = None

    def campaign(self, value) -> Held:
        """Stand with ``value`` and block until elected (Ctrl-C leaves the queue)."""
        c = self._client
        self.held = c._held(c._run(self._e.campaign(value), settle=c._aio.timeout))
        return self.held

    def leader(self) -> tuple[bytes, int] | None:
        """``(value, fence)`` of the current leader, or None when nobody stands."""
        return self._client._run(self._e.leader())

    def resign(self) -> None:
        """Step down (or leave the queue)."""
        held, self.held = self.held, None
        if held is not None:
            held._stop()
        if not self._client._closed:
            self._client._run(self._e.resign(), settle=self._client._aio.timeout)

    def observe(self):
        """A blocking iterator of ``(value, fence)`` each time the leader changes (the
        current one first; None while nobody stands). It runs until closed: ``close()`` it,
        or leave the ``for`` loop (``break``), or interrupt it."""
        c = self._client
        agen = self._e.observe()
        try:
            while True:
                try:
                    yield c._run(agen.__anext__(), settle=c._aio.timeout)
                except StopAsyncIteration:
                    return
        finally:
            if not c._closed:
                try:
                    c._run(agen.aclose())
                except RuntimeError:        # still running: its cancellation did not settle
                    pass
