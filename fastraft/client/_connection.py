"""``NodeConnection``: the client's one connection to one node, shared by the calls sent there.

Place in the architecture: the client layer, below ``aio`` (``AsyncClient`` keeps one per node,
opens it on first use and replaces it after a loss). An ``asyncio.Protocol``: it frames
requests with ``_protocol`` and decodes answers with ``codec`` and the core's frame decoder
(skip mode: an answer over ``max_frame`` is skipped, the connection kept). It knows nothing of
retries, sessions or leaders: every request's future resolves to ``(status, values)``, where
status may be a pseudo-status of ``_protocol`` (LOST, TIMED_OUT, TOO_LARGE) standing for what
the connection saw instead of an answer.

Silence (``on_silent``): the sweeper also notices a connection that has requests in flight and
has received nothing for ``silent_after`` seconds (a paused or partitioned node) and calls
``on_silent(conn, seconds)`` at each sweep until something arrives; the client may then
``give_up`` on it (every request in flight resolved with a pseudo-status, the connection
closed). Cost on the data path: one integer increment per read.

Pipelining: many calls share a connection. Each request carries an id, the answer is paired
with its future by ONE dict lookup, and the requests issued during one event-loop turn leave
in ONE write. No task is created per request; per-request timeouts are enforced by one sweeper
timer per connection (``_sweep``), which resolves overdue futures with TIMED_OUT.

A node that closes a connection with a notice (request id 0: too many connections, shutting
down) names the last request it read: the ones after it are answered with the notice's status
(Busy / NotLeader: not applied), the others LOST. A request whose frame is over the cluster's
frame limit (``max_body``, once learned) is answered ST_INVALID without being sent.

TLS (``tls``: an ``ssl.SSLContext``, else plain TCP): the connection is opened with it and
``server_hostname`` = the endpoint's host, so the node's certificate is checked against the
context's CAs and must name that host. A handshake that fails sets ``tls_error`` (the node's
certificate was not trusted, or the node refused the handshake): nothing was sent, and the
client fails the call at once with TLSError instead of retrying. A node that refuses this
client's certificate after the client's side of the handshake ended (TLS 1.3 checks it late)
closes the connection (with an alert, or just closing it: asyncio's server sends none) before
reading anything: the requests in flight get TLS_REFUSED (not applied). How the client knows
the node never accepted the handshake: a TLS 1.3 server sends its session tickets as soon as
it accepts it (OpenSSL's default, which ``fastraft.tls`` keeps), before any answer; a
connection that ends before a ticket arrived was never accepted, so no request was read.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import ssl

from .. import codec
from ..codec import ST_BUSY, ST_INVALID, ST_NOT_LEADER
from ..core import FrameDecoder
from ..errors import RemoteProtocolError
from . import _protocol as P
from ._protocol import LOST, TIMED_OUT, TLS_REFUSED, TOO_LARGE

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


#: Alerts a TLS server sends when it rejects the handshake (OpenSSL reason names end so).
_REFUSAL_ALERTS = ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_REQUIRED",
                   "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED",
                   "UNSUPPORTED_CERTIFICATE", "HANDSHAKE_FAILURE", "ACCESS_DENIED",
                   "DECRYPT_ERROR", "PROTOCOL_VERSION", "INSUFFICIENT_SECURITY")


def _tls_failure(exc: BaseException, addr: str) -> str | None:
    """What a failed TLS handshake with ``addr`` means, or None when ``exc`` is not one
    (``exc`` raised while connecting, or ending the connection before any answer)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return (f"TLS handshake with {addr} failed: the server's certificate was not "
                f"trusted ({why})")
    if isinstance(exc, ssl.CertificateError):       # older name checks
        return (f"TLS handshake with {addr} failed: the server's certificate was not "
                f"trusted ({exc})")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if "ALERT" in reason and reason.endswith(_REFUSAL_ALERTS):
            alert = reason.split("ALERT_", 1)[-1].lower().replace("_", " ")
            return (f"TLS handshake with {addr} failed: the server refused it ({alert}: "
                    f"is this client's certificate missing or not trusted by the node?)")
    return None


class NodeConnection(asyncio.Protocol):
    """One TCP connection to one node, shared by every call that goes there.

    ``pending`` maps req_id -> (future, expires_at), ``expires_at`` the loop time after which
    the sweeper answers it TIMED_OUT; the future's result is ``(status, values)``, where status
    may be a pseudo-status (LOST, TIMED_OUT, TOO_LARGE). Invariant: a future in ``pending`` is
    not done; whoever pops it resolves it."""

    __slots__ = ("addr", "loop", "transport", "pending", "ready", "closed", "error", "waiter",
                 "why", "refused", "notice", "max_body", "tls", "tls_error", "_sslobj",
                 "_decoder", "_max", "_out", "_flush", "_sweeper", "_sweep_every", "_rid",
                 "rx", "on_silent", "silent_after", "probing", "_rx_seen", "_quiet_since",
                 "streams")

    def __init__(self, addr: str, loop, max_frame: int, sweep_every: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.addr = addr
        self.tls = tls
        self.tls_error: str | None = None   # why the TLS handshake failed
        self._sslobj = None                 # the connection's ssl object (TLS only)
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
        self.rx = 0                         # reads so far (the sweeper watches it move)
        self.on_silent = None               # callback(conn, seconds quiet), module docstring
        self.silent_after = 0.0
        self.probing = False                # the client is finding out who leads instead
        self._rx_seen = 0
        self._quiet_since = 0.0
        #: req_id -> callback(status, values) of the requests answered by a stream of frames
        #: (a watch): no timeout; LOST (and the reason) when the connection ends
        self.streams: dict[int, object] = {}

    async def open(self, timeout: float) -> None:
        """Connect within ``timeout`` seconds; on failure set ``closed``, ``why``, ``refused``
        and ``error`` instead of raising."""
        host, port = P.split_address(self.addr)
        tls = self.tls
        try:
            if tls is None:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: self, host, port), timeout)
            else:
                await asyncio.wait_for(self.loop.create_connection(
                    lambda: self, host, port, ssl=tls, server_hostname=host), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.closed = True
            self.tls_error = _tls_failure(exc, self.addr) if tls is not None else None
            if self.tls_error is not None:
                self.why = self.error = self.tls_error
                return
            self.why, self.refused = _connect_failure(exc, timeout)
            self.error = f"cannot connect to {self.addr}: {self.why}"

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:             # closed while connecting
            transport.abort()
            return
        if self.tls is not None:
            self._sslobj = transport.get_extra_info("ssl_object")
        self.ready = True

    def connection_lost(self, exc) -> None:
        if self.tls is not None and not self.closed:
            why = self._refused_handshake(exc)
            if why is not None:
                self.tls_error = why
                self._fail(why, TLS_REFUSED)
                return
        self._fail(f"connection to {self.addr} lost" + (f": {exc}" if exc else ""))

    def _refused_handshake(self, exc) -> str | None:
        """Why the node refused the TLS handshake this connection ended with, or None when
        it accepted it (module docstring: a refusal alert, or no session ticket yet)."""
        why = _tls_failure(exc, self.addr) if exc is not None else None
        if why is not None:
            return why
        so = self._sslobj
        try:
            if so is None or so.version() != "TLSv1.3":
                return None
            session = so.session
            if session is None or session.has_ticket:
                return None
        except (ValueError, OSError, AttributeError):
            return None
        return (f"TLS handshake with {self.addr} failed: the server refused it (it closed "
                f"the connection without accepting the handshake: is this client's "
                f"certificate missing or not trusted by the node?)")

    def data_received(self, data) -> None:
        self.rx += 1
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
            if ent is not None:
                if not ent[0].done():                   # done: the caller cancelled it
                    ent[0].set_result((status, values))
            elif rid in self.streams:
                self.streams[rid](status, values)

    def _too_large(self, size: int, head: bytes) -> bool:
        """An answer over ``max_frame``: its request gets TOO_LARGE (a stream ends with it),
        the connection stays.
        False (and the connection is aborted) when its head is not an answer."""
        got = codec.request_head(head)          # [req_id, status, ...] starts like a request
        if type(got) is not tuple:
            self.abort(f"bad answer from {self.addr}: a frame of {size} bytes, over the "
                       f"limit of {self._max}, that is not an answer")
            return False
        why = (f"the answer of {size} bytes from {self.addr} is over this client's frame "
               f"limit of {self._max} bytes (max_frame)")
        ent = self.pending.pop(got[0], None)
        if ent is not None:
            ent[0].set_result((TOO_LARGE, [why]))
        else:                   # a stream's frame: it must not just vanish (a watch's gap)
            on_frame = self.streams.pop(got[0], None)
            if on_frame is not None:
                on_frame(TOO_LARGE, [why])
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
            self._quiet_since = loop.time()   # nothing was waiting: silence counts from now
            self._rx_seen = self.rx
        return fut

    def stream(self, op: int, args, on_frame) -> int:
        """Queue ``[req_id, op, *args]`` whose answer is a stream of frames: each one goes to
        ``on_frame(status, values)``, then ``(LOST, [reason])`` if the connection ends first;
        the request id (``end_stream`` forgets it)."""
        rid = self._rid = self._rid + 1
        self.streams[rid] = on_frame
        self._out.append(P.frame([rid, op, *args]))
        if self._flush is None:
            self._flush = self.loop.call_soon(self._write)
        return rid

    def end_stream(self, rid: int) -> None:
        """Deliver nothing more of stream ``rid``."""
        self.streams.pop(rid, None)

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
        if not pending:
            return
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        if self.on_silent is not None:
            if self.rx != self._rx_seen:
                self._rx_seen = self.rx
                self._quiet_since = now
            elif now - self._quiet_since >= self.silent_after:
                self.on_silent(self, now - self._quiet_since)

    def give_up(self, reason: str, status: int, extra=()) -> None:
        """Close the connection; every request in flight resolves to ``(status, [reason,
        *extra])`` (the client moves them elsewhere)."""
        log.info("%s", reason)
        self.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._fail(reason, status, extra)

    def _fail(self, reason: str, status: int = LOST, extra=()) -> None:
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
                fut.set_result((status, [reason, *extra]))
        streams = self.streams
        self.streams = {}
        for on_frame in streams.values():
            on_frame(status, [reason, *extra])

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
