"""``Watch``: the client's stream of changes under a key prefix, without a gap or a repeat
across reconnects and leader changes.

Place in the architecture: the client layer, used by ``aio`` (``AsyncClient.watch``) and,
through it, by ``sync``. It opens its own ``_connection.NodeConnection`` (a watcher that does
not read must slow down only itself: its connection stops reading, the node's buffer for it
fills, and the node cancels it, ``server/watches.py``), speaks OP_WATCH with ``codec``, and
asks the client (``AsyncClient.revision``) for the revision to start from.

How it keeps its promise (docs/architecture.md, "Coordination"):

- The start: ``start_revision`` as given; None means "from now", taken as the revision a
  linearizable ``revision()`` call returns plus one, so every write acknowledged before the
  watch started is before it, and every later one is in the stream.
- Each frame of a node holds the events of whole revisions in revision order and says up to
  which revision the node has sent everything (``progress``). The watch keeps ``next``, the
  first revision it has not received: ``progress + 1`` after each frame. When the stream
  ends (the connection lost, the node stopping, ...) it resumes on another node from
  ``next``, so nothing is skipped and nothing received twice; events below ``next`` in a new
  stream are dropped (none should come).
- A node whose history no longer reaches back to ``next`` answers Compacted: the watch tries
  the other nodes and raises ``Compacted`` (with the oldest revision the nodes offered) only
  when none has it: every node said so, or those that did not stayed unreachable for
  ``STALL_AFTER`` seconds (``_give_up_compacted``). A node that cancels the watch because it
  read too slowly ends it with ``Busy``; an invalid request ends it with ``InvalidRequest``.
- A node that stops making progress while the cluster goes on (paused, cut off from the
  others, removed without knowing it) must not hold the watch: nodes send a progress frame
  every second (``server/watches.py``), and the watch leaves a node that sent nothing for
  ``STALL_AFTER`` seconds, or whose progress stayed put that long while the cluster's
  revision (``AsyncClient.revision``, asked only then) is past it, and resumes elsewhere.
- The nodes it resumes on are the client's endpoints, refreshed from the leader's member list
  when no node could stream and every ``MEMBERS_EVERY`` seconds while streaming: a client that
  only watches makes no other call that would learn of nodes added or removed.
- A frame over the client's ``max_frame`` ends the watch with ``RemoteProtocolError`` (a frame
  skipped would be a gap); nodes send a watch's history in frames of about a MiB
  (``server/watches.py``), so only a single huge batch of changes can make one.
- Events received wait in a buffer until the caller takes them; past ``BUFFER_EVENTS`` the
  connection stops reading (and resumes as the buffer drains).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import NamedTuple

from .. import codec
from ..errors import Busy, Compacted, FastraftError, InvalidRequest, RemoteProtocolError
from ._connection import NodeConnection
from ._protocol import LOST, TOO_LARGE

__all__ = ["Event", "Watch", "BUFFER_EVENTS"]

log = logging.getLogger("fastraft.client")

#: Events a watch holds for its caller before its connection stops reading.
BUFFER_EVENTS = 10_000
#: Seconds between two rounds of tries of every node when none can be reached.
RETRY_EVERY = 0.2
#: Seconds without a frame, or without progress while the cluster is ahead, after which the
#: watch leaves its node (nodes send a progress frame every second).
STALL_AFTER = 5.0
#: Seconds between two refreshes of the client's member list while a watch streams (it
#: needs to know the nodes to resume on; a client that only watches learns them no other way).
MEMBERS_EVERY = 30.0
_TYPES = ("put", "delete")


class Event(NamedTuple):
    """One change: ``type`` "put" or "delete", ``key``, ``value`` (None for a delete) and
    the ``revision`` of the write (the index of its log entry)."""

    type: str
    key: bytes
    value: bytes | None
    revision: int


class Watch:
    """An async iterator of ``Event`` and an async context manager (``AsyncClient.watch``).
    ``revision``: the revision of the last event returned (0 before any)."""

    def __init__(self, client, prefix: bytes, start_revision: int | None) -> None:
        if start_revision is not None and (type(start_revision) is not int
                                           or start_revision < 1):
            raise ValueError("start_revision must be an integer >= 1, or None (from now)")
        self._client = client
        self.prefix = prefix
        self.next = start_revision or 0
        self.revision = 0
        self._events: deque = deque()
        self._error: FastraftError | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._conn: NodeConnection | None = None
        self._rid = 0
        self._ended: asyncio.Future | None = None
        self._paused = False
        self._heard = 0.0               # loop time of the last frame from the node
        self._moved = 0.0               # loop time the node's progress last moved
        self._progress = 0              # the node's progress in its last frame
        self.closed = False

    # -- the caller's side --------------------------------------------------------------------

    async def start(self) -> Watch:
        """Take the start revision (a linearizable ``revision()`` when None was given) and
        begin streaming in the background."""
        if self._task is None:
            if not self.next:
                self.next = await self._client.revision() + 1
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aenter__(self) -> Watch:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        if self._task is None:
            await self.start()
        while not self._events:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        ev = self._events.popleft()
        if self._paused and len(self._events) < BUFFER_EVENTS // 2:
            self._paused = False
            conn = self._conn
            if conn is not None and conn.ready:
                conn.transport.resume_reading()
        self.revision = ev.revision
        return ev

    async def close(self) -> None:
        """Stop the stream (idempotent); events not yet taken are dropped."""
        if self.closed:
            return
        self.closed = True
        self._client._watches.discard(self)
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, FastraftError):
                pass
        self._close_conn()
        if self._wake is not None:
            self._wake.set()

    # -- streaming ----------------------------------------------------------------------------

    async def _run(self) -> None:
        """Stream from one node after another until closed or a definite error."""
        client = self._client
        loop = asyncio.get_running_loop()
        compacted: dict[str, int] = {}          # node -> the oldest revision it offered
        since = 0.0                             # when the first of them said so
        try:
            while not self.closed:
                addrs = client.watch_order()
                for addr in addrs:
                    if self.closed:
                        return
                    status, values = await self._stream_from(addr)
                    if status == codec.ST_OK:           # progress was made, then lost
                        compacted.clear()
                        break
                    if status == codec.ST_COMPACTED:
                        if not compacted:
                            since = loop.time()
                        compacted[addr] = values[0] if values and type(values[0]) is int \
                            else 0
                    elif status == codec.ST_BUSY:
                        raise Busy(f"the watch was cancelled by {addr}: {_message(values)}")
                    elif status == codec.ST_INVALID:
                        raise InvalidRequest(f"{addr}: {_message(values)}")
                    elif status == TOO_LARGE:
                        raise RemoteProtocolError(f"{_message(values)}: the watch cannot go "
                                                  f"on (raise the client's max_frame)")
                    # else unreachable, or lost before any progress: the next node
                else:                                   # no node could stream
                    self._give_up_compacted(addrs, compacted, loop.time() - since)
                    await client._learn_members_now()
                    await asyncio.sleep(RETRY_EVERY)
        except FastraftError as exc:
            self._error = exc
        finally:
            self._close_conn()
            self._wake.set()

    def _give_up_compacted(self, addrs: list, compacted: dict, waited: float) -> None:
        """Raise ``Compacted`` when the nodes that answered in a round where none could stream
        all said ``next`` is compacted, and either every node answered so or the others
        stayed unreachable for STALL_AFTER seconds since the first such answer (a node that
        is down may come back with a longer history; a member list refresh between rounds
        drops the nodes that left the cluster)."""
        said = [compacted[a] for a in addrs if a in compacted]
        if not said or (len(said) < len(addrs) and waited < STALL_AFTER):
            return
        oldest = max(said)
        raise Compacted(oldest, f"revision {self.next} is compacted on every node that "
                                f"answered ({len(said)} of {len(addrs)}; the oldest "
                                f"available is {oldest})")

    async def _stream_from(self, addr: str) -> tuple[int, list]:
        """One stream from ``addr``: ``(ST_OK, [])`` when it made progress before it ended,
        else the status (and values) that ended it (LOST when unreachable)."""
        client = self._client
        conn = NodeConnection(addr, asyncio.get_running_loop(), client._max_frame,
                              client._sweep_every, client.tls)
        await conn.open(client.connect_timeout)
        if not conn.ready:
            return LOST, [conn.error or "unreachable"]
        self._conn = conn
        self._paused = False
        loop = asyncio.get_running_loop()
        ended = self._ended = loop.create_future()
        start = self.next
        self._heard = self._moved = loop.time()
        self._progress = 0
        self._rid = conn.stream(codec.OP_WATCH, (self.prefix, start), self._on_frame)
        monitor = loop.create_task(self._watch_node(ended))
        try:
            status, values = await ended
        finally:
            monitor.cancel()
            self._close_conn()
        if status != codec.ST_OK and self.next > start:
            return codec.ST_OK, []
        return status, values

    async def _watch_node(self, ended: asyncio.Future) -> None:
        """End the stream (LOST) when its node stopped: nothing heard for STALL_AFTER
        seconds, or no progress that long while the cluster's revision is past it."""
        loop = asyncio.get_running_loop()
        members_at = loop.time()
        while not ended.done():
            await asyncio.sleep(STALL_AFTER / 2)
            now = loop.time()
            if now - members_at >= MEMBERS_EVERY:     # nodes added or removed meanwhile
                members_at = now
                await self._client._learn_members_now()
            if self._paused:                # we stopped reading: silence is ours
                self._heard = self._moved = now
                continue
            if now - self._heard >= STALL_AFTER:
                why = f"nothing from the node for {now - self._heard:.1f} s"
            elif now - self._moved >= STALL_AFTER:
                try:
                    rev = await self._client.revision(deadline=STALL_AFTER)
                except FastraftError as exc:
                    # No answer: the client may still take the stuck node for the leader.
                    # A quiet cluster answers; past 3 x STALL_AFTER without an answer or a
                    # move, leave the node anyway (the next one resumes from ``next``).
                    if loop.time() - self._moved < 3 * STALL_AFTER:
                        continue
                    rev, why = None, (f"the node stayed at revision {self._progress} for "
                                      f"{loop.time() - self._moved:.1f} s and the cluster's "
                                      f"revision could not be had ({exc})")
                if rev is not None:
                    if rev <= self._progress:       # a quiet cluster, not a stuck node
                        self._moved = loop.time()
                        continue
                    why = (f"the node stayed at revision {self._progress} for "
                           f"{now - self._moved:.1f} s while the cluster is at {rev}")
            else:
                continue
            log.info("watch of %r: leaving %s: %s", self.prefix, self._conn and self._conn.addr,
                     why)
            if not ended.done():
                ended.set_result((LOST, [why]))
            return

    def _on_frame(self, status: int, values: list) -> None:
        ended = self._ended
        if ended is None or ended.done():
            return
        if status != codec.ST_OK:
            ended.set_result((status, values))
            return
        try:
            events, progress = codec.decode_watch_frame(values)
        except RemoteProtocolError as exc:
            ended.set_result((LOST, [f"a malformed watch frame: {exc}"]))
            return
        now = asyncio.get_running_loop().time()
        self._heard = now
        if progress > self._progress:
            self._progress = progress
            self._moved = now
        nxt = self.next
        for rev, kind, key, value in events:
            if rev >= nxt:
                self._events.append(Event(_TYPES[kind], key, value, rev))
        if progress + 1 > nxt:
            self.next = progress + 1
        if events:
            self._wake.set()
        if len(self._events) >= BUFFER_EVENTS and not self._paused:
            self._paused = True
            self._conn.transport.pause_reading()

    def _close_conn(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.end_stream(self._rid)
            conn.close()


def _message(values: list) -> str:
    return values[-1] if values and type(values[-1]) is str else repr(values)[:200]
