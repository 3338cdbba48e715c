"""``Client``: the blocking client, a thin wrapper around ``AsyncClient``.

Place in the architecture: the client layer, above ``aio``. It owns a private event loop that
runs in a daemon thread and submits each call to it (``run_coroutine_threadsafe``), so the
protocol, the session, the retries and the timeouts are exactly the asyncio client's: nothing
is implemented twice. Calls from several threads are safe and pipeline on the same
connections. The loop is the standard asyncio loop (pure Python, no extension needed).
"""

from __future__ import annotations

import asyncio
import threading

from ..errors import LocalProtocolError
from ._members import Member
from .aio import AsyncClient

__all__ = ["Client"]


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

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise LocalProtocolError("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            # KeyboardInterrupt and friends: do not leave the call running behind our back.
            fut.cancel()
            raise

    def get(self, key, stale: bool = False, *, deadline: float | None = None
            ) -> bytes | None:
        """The value of ``key`` or None; linearizable unless ``stale`` (any node's state)."""
        return self._run(self._aio.get(key, stale, deadline=deadline))

    def put(self, key, value, *, deadline: float | None = None) -> None:
        """Set ``key`` to ``value``; applied exactly once, even across retries."""
        return self._run(self._aio.put(key, value, deadline=deadline))

    def delete(self, key, *, deadline: float | None = None) -> bool:
        """Remove ``key`` (exactly once); True when it existed."""
        return self._run(self._aio.delete(key, deadline=deadline))

    def cas(self, key, expected, new, *, deadline: float | None = None) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: absent), atomically
        and exactly once; True when swapped."""
        return self._run(self._aio.cas(key, expected, new, deadline=deadline))

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

    def close(self) -> None:
        """Close the connections and stop the private loop's thread (idempotent); a write
        in flight fails with ConnectionLost (outcome unknown)."""
        with self._lock:
            if self._closed:
                return
            try:
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
