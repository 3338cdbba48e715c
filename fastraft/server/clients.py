"""The client port: framed requests in, framed responses out, many outstanding per connection.

Place in the architecture: part of the runtime (``fastraft.server``), under ``node``. It decodes
and validates requests with ``fastraft.codec`` and hands ``codec.Request`` objects to the node
(``node.on_request(conn, req)``); the node answers through ``conn.respond``. Answers may leave
in any order; the request id pairs them up.

Every refusal the client can act on is an answer, never a dropped connection:

- a request that is well-formed but invalid (unknown operation, wrong types, a key or value
  over the limits) is answered ``ST_INVALID``; the connection stays open;
- so is a request frame over the frame limit: the decoder (skip mode) hands out only the first
  bytes of its body, the request id is read from them (``codec.request_head``), the answer
  names the size and the limit, and the rest of the frame is dropped as it arrives, never
  buffered;
- a connection above ``max_connections`` gets one notice (``codec.encode_notice``: request id
  0, ST_BUSY, "too many connections", last request read 0) and is closed: the client knows
  none of its requests was read;
- a graceful stop (``ClientServer.close``) flushes the answers already given, then sends each
  connection a notice (ST_NOT_LEADER, "shutting down", the id of the last request read): the
  requests sent after that one were never read, so the client retries them elsewhere.

After a notice the node half-closes the connection and drops what still arrives until the
client closes it (or ``LINGER`` seconds pass), so the notice is not lost to a reset.

With ``[tls]`` the port speaks only TLS: handshakes run in ``tlsport.TLSListener`` (refusals
logged with their reason); without it, a TLS handshake arriving here is named as such in the
log line that closes it.

Only bad input closes a connection, with one log line: a body that is not msgpack or not
``[req_id, op, ...]`` (for an oversized frame: a head that cannot begin one). A client that
stops reading its answers is paused (no more requests read from it) until its send buffer
drains, so it cannot make the node buffer without limit.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

from .. import codec
from ..core import FrameDecoder, encode_frame
from ..errors import InvalidRequest, RemoteProtocolError
from ..tls import tls_on_plain_port
from .logs import LogOnce, reason_kind
from .stats import NodeStats
from .tlsport import TLSListener

__all__ = ["ClientServer", "ClientConn", "LINGER"]

log = logging.getLogger("fastraft.clients")

#: Seconds a connection that got a notice stays half-open for the client to read it.
LINGER = 2.0
#: Connections refused at accept that may linger at once; past it they are aborted.
MAX_LINGERING = 256
#: With metrics, one request in TIME_EVERY (by request id) is timed; every one is counted.
TIME_EVERY = 8
TIME_MASK = TIME_EVERY - 1
#: Seconds a client has to finish its TLS handshake ([tls]).
HANDSHAKE_TIMEOUT = 5.0


class ClientServer:
    """The client port of one node: accepts connections (at most ``max_connections`` open)
    and hands each valid request to ``node.on_request(conn, req)`` (``node``: the request
    handler, interfaces.RequestHandler). ``limits`` and ``max_frame`` bound a request; the
    module docstring says what every refusal looks like to the client."""

    def __init__(self, node, listen: tuple[str, int], limits: codec.Limits, max_frame: int,
                 max_connections: int, tls=None) -> None:
        self.node = node
        self.tls = tls              # ssl.SSLContext of the client port ([tls]), or None
        self.listen = listen
        self.limits = limits
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.conns: set = set()
        self.lingering = 0          # connections refused at accept, still half-open
        self.once = LogOnce(log)
        self.stats = NodeStats()    # the node's, once attached
        self.timed = False          # count requests per op and status, and time them
        self._server = None
        self._all_closed: asyncio.Future | None = None
        #: connections with answers queued this loop turn; ``flush`` writes them (the node
        #: calls it at the end of its Ready pass, else the loop does in its next turn)
        self._unflushed: list = []
        self._flush_handle = None

    def queued(self, conn) -> None:
        """``conn`` queued its first answer of this loop turn."""
        self._unflushed.append(conn)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the answers queued so far, one write per connection. The node calls it at
        the end of a Ready pass so that answers leave before the commit-only appends to the
        followers, whose wake-up on a 2-core machine can otherwise delay the leader's
        answer by a scheduling slice."""
        h = self._flush_handle
        if h is not None:
            self._flush_handle = None
            h.cancel()
        conns = self._unflushed
        if conns:
            self._unflushed = []
            for c in conns:
                c._write()

    async def start(self) -> None:
        """Listen on ``listen`` for clients."""
        loop = asyncio.get_running_loop()
        host, port = self.listen
        if self.tls is None:
            self._server = await loop.create_server(lambda: ClientConn(self), host, port,
                                                    reuse_address=True, backlog=512)
        else:
            self._server = TLSListener("client", lambda: ClientConn(self), self.tls,
                                       HANDSHAKE_TIMEOUT, backlog=512)
            await self._server.start(host, port)

    def set_tls(self, context) -> None:
        """A new ssl context (certificates re-read on SIGHUP) for new connections."""
        self.tls = context
        if isinstance(self._server, TLSListener):
            self._server.context = context

    def stop_accepting(self) -> None:
        """Accept no new connection; the open ones stay (``close`` ends them)."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Graceful: every connection gets the answers already given, then a notice that the
        node is shutting down (the requests it has not read are not applied); wait (up to
        about a second) for the clients to close them."""
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        for c in list(self.conns):
            c.go_away(codec.ST_NOT_LEADER, "the node is shutting down")
        if self.conns:
            self._all_closed = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), 1.0)
            except asyncio.TimeoutError:
                pass
        for c in list(self.conns):
            c.transport.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass

    def _gone(self, conn) -> None:
        self.conns.discard(conn)
        f = self._all_closed
        if f is not None and not self.conns and not f.done():
            f.set_result(None)


class ClientConn(asyncio.Protocol):
    """One client connection: reads requests in order and hands them to the node; answers
    (``respond``) may come in any order and leave together once per loop turn. The node
    holds it only to answer (interfaces.Responder) or to close it."""

    __slots__ = ("srv", "transport", "remote", "_decoder", "closed", "_out",
                 "last_rid", "_linger", "_started")

    def __init__(self, srv: ClientServer) -> None:
        self.srv = srv
        self.transport = None
        self.remote = "?"
        self._decoder = FrameDecoder(srv.max_frame, skip_oversized=True)
        self.closed = False
        self._out: list = []          # answers gathered during one event-loop turn
        self.last_rid = 0             # id of the last request read (a notice names it)
        self._linger = None
        #: with metrics: request id -> its op << 4 until answered; one request in TIME_EVERY
        #: (by id) -> (op, perf_counter when read), to be timed
        self._started = {} if srv.timed else None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        srv = self.srv
        if len(srv.conns) >= srv.max_connections:
            srv.once(("too-many", srv.max_connections), logging.WARNING,
                     "refusing client %s: %d connections already open", self.remote,
                     len(srv.conns))
            if srv.lingering >= MAX_LINGERING:      # a flood: no notice, no half-open state
                self.closed = True
                transport.abort()
                return
            srv.lingering += 1
            self.go_away(codec.ST_BUSY, f"too many connections: the node already serves "
                                        f"{len(srv.conns)} (max_client_connections)")
            return
        srv.conns.add(self)
        transport.set_write_buffer_limits(high=8 << 20)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
            if self not in self.srv.conns:
                self.srv.lingering -= 1
        self.srv._gone(self)

    def eof_received(self):
        return None                   # the client is done: close our side too

    def close(self) -> None:
        """Close now, after the answers already given (no notice)."""
        if not self.closed:
            self._write()
            self.closed = True
            self.transport.close()

    def go_away(self, status: int, message: str) -> None:
        """Send the answers already given, then a notice (``codec.encode_notice``): this
        connection is closed and no request after ``last_rid`` was read. Half-close, drop
        what still arrives, and close when the client does (or after LINGER seconds)."""
        if self.closed:
            return
        out = self._out
        self._out = []
        out.append(encode_frame(codec.encode_notice(status, message, self.last_rid)))
        self.closed = True
        t = self.transport
        t.write(b"".join(out))
        linger = LINGER
        try:
            if t.can_write_eof():
                t.write_eof()
        except OSError:                 # the client already went (its close not yet seen)
            linger = 0
        self._linger = asyncio.get_running_loop().call_later(linger, t.abort)

    def pause_writing(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def _bad(self, reason: str) -> None:
        host = self.remote.rsplit(":", 1)[0]
        self.srv.once(("bad", host, reason_kind(reason)), logging.WARNING,
                      "closing client connection %s: %s", self.remote, reason)
        self.closed = True
        self.transport.abort()

    def data_received(self, data) -> None:
        if self.closed:
            return
        dec = self._decoder
        frames = dec.feed(data)
        srv = self.srv
        node = srv.node
        started = self._started
        now = 0.0
        for body in frames:
            if type(body) is not bytes:         # an OversizedFrame: answered, then skipped
                if not self._oversized(body.size, body.head):
                    return
                continue
            try:
                req = codec.decode_request(body, srv.limits, srv.max_frame)
            except InvalidRequest as exc:
                self.last_rid = exc.req_id
                self.respond(exc.req_id, codec.ST_INVALID, str(exc))
                continue
            except RemoteProtocolError as exc:
                self._bad(str(exc))
                return
            self.last_rid = req.req_id
            if started is not None:
                rid = req.req_id
                if rid & TIME_MASK:
                    started[rid] = req.op << 4
                else:
                    if not now:
                        now = perf_counter()
                    started[rid] = (req.op, now)
            node.on_request(self, req)
        if dec.pending and not self.closed:
            head = dec.partial_head
            if head is not None and codec.request_head(head) is None:
                self._bad(f"a frame over the limit of {srv.max_frame} bytes that is not a "
                          f"request: {head[:16]!r}")

    def _oversized(self, size: int, head: bytes) -> bool:
        """Answer a request frame over the limit ST_INVALID; False when its head is not a
        request (the connection is then closed)."""
        srv = self.srv
        got = codec.request_head(head)
        if type(got) is not tuple:
            self._bad(f"frame of {size} bytes exceeds the limit of {srv.max_frame} bytes "
                      f"and is not a request: {head[:16]!r}" + tls_on_plain_port(size))
            return False
        rid, op = got
        what = codec.OP_NAMES.get(op, "request")
        lim = srv.limits
        host = self.remote.rsplit(":", 1)[0]
        srv.once(("oversized", host), logging.INFO,
                 "refused a %s of %d bytes from %s: over the frame limit of %d bytes", what,
                 size, self.remote, srv.max_frame)
        self.last_rid = rid
        self.respond(rid, codec.ST_INVALID,
                     f"{what} of {size} bytes is over the node's frame limit of "
                     f"{srv.max_frame} bytes (max_value_bytes {lim.max_value}, "
                     f"max_key_bytes {lim.max_key})")
        return True

    def respond(self, req_id: int, status: int, *values) -> None:
        """Queue an answer; answers of one loop turn leave in one write."""
        if self.closed:
            return
        started = self._started
        if started is not None:
            st = started.pop(req_id, None)
            if st.__class__ is int:                 # op << 4, counted inline (no call)
                self.srv.stats.requests[st | status] += 1
            elif st is not None:
                self.srv.stats.request_done(st[0], status, perf_counter() - st[1])
        out = self._out
        if not out:
            self.srv.queued(self)
        out.append(encode_frame(codec.encode_response(req_id, status, *values)))

    def push(self, body: bytes) -> None:
        """Queue a frame body encoded already (a watch's frame), like an answer."""
        if self.closed:
            return
        out = self._out
        if not out:
            self.srv.queued(self)
        out.append(encode_frame(body))

    def unwritten(self) -> int:
        """Bytes queued for this connection and not yet taken by the kernel."""
        return self.transport.get_write_buffer_size() + sum(map(len, self._out))

    def _write(self) -> None:
        out = self._out
        self._out = []
        if not self.closed and out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
