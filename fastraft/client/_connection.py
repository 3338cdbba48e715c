"""``NodeConnection``: the client's one connection to one node, shared by the calls sent there.

Place in the architecture: the client layer, below ``aio`` (``AsyncClient`` keeps one per node,
opens it on first use and replaces it after a loss). An ``asyncio.Protocol``: it frames
requests with ``_protocol`` and decodes answers with ``codec`` and the core's frame decoder
(skip mode: an answer over ``max_frame`` is skipped, the connection kept). It knows nothing of
retries, sessions or leaders: every request's future resolves to ``(status, values)``, where
status may be a pseudo-status of ``_protocol`` (LOST, TIMED_OUT, TOO_LARGE) standing for what
the connection saw instead of an answer.

Pipelining: many calls share a connection. Each request carries an id, the answer is paired
with its future by ONE dict lookup, and the requests issued during one event-loop turn leave
in ONE write. No task is created per request; per-request timeouts are enforced by one sweeper
timer per connection (``_sweep``), which resolves overdue futures with TIMED_OUT.

A node that closes a connection with a notice (request id 0: too many connections, shutting
down) names the last request it read: the ones after it are answered with the notice's status
(Busy / NotLeader: not applied), the others LOST. A request whose frame is over the cluster's
frame limit (``max_body``, once learned) is answered ST_INVALID without being sent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re

from .. import codec
from ..codec import ST_BUSY, ST_INVALID, ST_NOT_LEADER
from ..core import FrameDecoder
from ..errors import RemoteProtocolError
from . import _protocol as P
from ._protocol import LOST, TIMED_OUT, TOO_LARGE

__all__ = ["NodeConnection", "NO_LIMIT"]

log = logging.getLogger("fastraft.client")

#: ``max_body`` before the cluster's frame limit is known: no limit.
NO_LIMIT = 0xFFFFFFFF

_decode_response = codec.decode_response
_REFUSED_TEXT = re.compile(r"\[Errno (\d+)\]")


def _connect_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short reason for a failed connection attempt, and whether it was refused (nothing
    listens there: every address tried answered ECONNREFUSED)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no connection within {timeout:g} s", False
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    # Several addresses (localhost: ::1 and 127.0.0.1) fail as one OSError listing them all.
    codes = {int(c) for c in _REFUSED_TEXT.findall(str(exc))}
    if codes == {errno.ECONNREFUSED}:
        return "connection refused", True
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:200], False


class NodeConnection(asyncio.Protocol):
    """One TCP connection to one node, shared by every call that goes there.

    ``pending`` maps req_id -> (future, expires_at), ``expires_at`` the loop time after which
    the sweeper answers it TIMED_OUT; the future's result is ``(status, values)``, where status
    may be a pseudo-status (LOST, TIMED_OUT, TOO_LARGE). Invariant: a future in ``pending`` is
    not done; whoever pops it resolves it."""

    __slots__ = ("addr", "loop", "transport", "pending", "ready", "closed", "error", "waiter",
                 "why", "refused", "notice", "max_body",
                 "_decoder", "_max", "_out", "_flush", "_sweeper", "_sweep_every", "_rid")

    def __init__(self, addr: str, loop, max_frame: int, sweep_every: float) -> None:
        self.addr = addr
        self.loop = loop
        self.transport = None
        self.pending: dict[int, tuple] = {}
        self.ready = False          # connected and usable
        self.closed = False         # lost or closed for good (a new connection replaces it)
        self.error: str | None = None
        self.why: str | None = None         # short reason of a failure ("connection refused")
        self.refused = False                # the connection attempt was refused
        self.notice: tuple | None = None    # (status, values) for what the node did not read
        self.max_body = NO_LIMIT            # the cluster's frame limit, once learned
        self.waiter: asyncio.Future | None = None
        self._decoder = FrameDecoder(max_frame, skip_oversized=True)
        self._max = max_frame
        self._out: list[bytes] = []
        self._flush = None
        self._sweeper = None
        self._sweep_every = sweep_every
        self._rid = 0

    async def open(self, timeout: float) -> None:
        """Connect within ``timeout`` seconds; on failure set ``closed``, ``why``, ``refused``
        and ``error`` instead of raising."""
        host, port = P.split_address(self.addr)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self, host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.closed = True
            self.why, self.refused = _connect_failure(exc, timeout)
            self.error = f"cannot connect to {self.addr}: {self.why}"

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:             # closed while connecting
            transport.abort()
            return
        self.ready = True

    def connection_lost(self, exc) -> None:
        self._fail(f"connection to {self.addr} lost" + (f": {exc}" if exc else ""))

    def data_received(self, data) -> None:
        frames = self._decoder.feed(data)       # skip mode: an oversized answer is skipped
        pending = self.pending
        for body in frames:
            if type(body) is not bytes:
                if not self._too_large(body.size, body.head):
                    return
                continue
            try:
                rid, status, values = _decode_response(body, self._max)
            except RemoteProtocolError as exc:
                self.abort(f"bad answer from {self.addr}: {exc}")
                return
            if rid == 0:
                self._notice(status, values)
                return
            ent = pending.pop(rid, None)
            if ent is not None and not ent[0].done():   # done: the caller cancelled it
                ent[0].set_result((status, values))

    def _too_large(self, size: int, head: bytes) -> bool:
        """An answer over ``max_frame``: its request gets TOO_LARGE, the connection stays.
        False (and the connection is aborted) when its head is not an answer."""
        got = codec.request_head(head)          # [req_id, status, ...] starts like a request
        if type(got) is not tuple:
            self.abort(f"bad answer from {self.addr}: a frame of {size} bytes, over the "
                       f"limit of {self._max}, that is not an answer")
            return False
        ent = self.pending.pop(got[0], None)
        if ent is not None:
            ent[0].set_result((TOO_LARGE, [
                f"the answer of {size} bytes from {self.addr} is over this client's frame "
                f"limit of {self._max} bytes (max_frame)"]))
        return True

    def _notice(self, status: int, values: list) -> None:
        """The node closes the connection and read no request after the one it names: those
        after it get the notice's status (not applied), the others LOST when it closes."""
        msg, last = P.notice(values)
        if last is not None and status in (ST_BUSY, ST_NOT_LEADER):
            ans = (ST_BUSY, [msg]) if status == ST_BUSY else (ST_NOT_LEADER, [0, None, msg])
            self.notice = ans
            pending = self.pending
            for rid in [r for r in pending if r > last]:
                fut = pending.pop(rid)[0]
                if not fut.done():
                    fut.set_result(ans)
        reason = f"{self.addr} closed the connection: {msg}"
        log.debug("%s", reason)
        self.why = msg
        self.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._fail(reason)

    # -- requests -----------------------------------------------------------------------------

    def request(self, op: int, args, timeout: float) -> asyncio.Future:
        """Queue ``[req_id, op, *args]``; the future resolves to ``(status, values)``."""
        rid = self._rid = self._rid + 1
        loop = self.loop
        fut = loop.create_future()
        frame = P.frame([rid, op, *args])
        if len(frame) - 4 > self.max_body:      # the node would refuse it: do not send it
            fut.set_result((ST_INVALID, [
                f"{codec.OP_NAMES.get(op, 'request')} of {len(frame) - 4} bytes is over the "
                f"cluster's frame limit of {self.max_body} bytes (max_frame_bytes); refused "
                f"by the client, nothing sent"]))
            return fut
        self.pending[rid] = (fut, loop.time() + timeout)
        self._out.append(frame)
        if self._flush is None:
            self._flush = loop.call_soon(self._write)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return fut

    def _write(self) -> None:
        self._flush = None
        out = self._out
        self._out = []
        if self.ready and out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _sweep(self) -> None:
        self._sweeper = None
        pending = self.pending
        if not pending:
            return
        now = self.loop.time()
        late = [rid for rid, ent in pending.items() if ent[1] <= now]
        for rid in late:
            fut = pending.pop(rid)[0]
            if not fut.done():
                fut.set_result((TIMED_OUT, [f"no answer from {self.addr} in time"]))
        if pending:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _fail(self, reason: str) -> None:
        self.ready = False
        self.closed = True
        if self.error is None:
            self.error = reason
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pending = self.pending
        self.pending = {}
        for fut, _expires_at in pending.values():
            if not fut.done():
                fut.set_result((LOST, [reason]))

    def abort(self, reason: str) -> None:
        """Drop the connection at once (the node sent something unusable); every request
        in flight gets LOST."""
        log.warning("closing the connection to %s: %s", self.addr, reason)
        self.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._fail(reason)

    def close(self) -> None:
        """Close the connection (the client is closing); every request in flight gets LOST."""
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._fail(f"connection to {self.addr} closed by the client")
