"""The client port: framed requests in, framed responses out, many outstanding per connection.

Place in the architecture: part of the runtime (``fastraft.server``), under ``node``. It decodes
and validates requests with ``fastraft.codec`` and hands ``codec.Request`` objects to the node
(``node.on_request(conn, req)``); the node answers through ``conn.respond``. Answers may leave
in any order; the request id pairs them up.

Bad input closes the connection with one log line: a body that is not msgpack or not
``[req_id, op, ...]``, or an oversized frame. A request that is well-formed but invalid
(unknown operation, wrong types, a key or value over the limits) is answered ``ST_INVALID``
and the connection stays open. Connections above ``max_connections`` are closed at once.
A client that stops reading its answers is paused (no more requests read from it) until its
send buffer drains, so it cannot make the node buffer without limit.
"""

from __future__ import annotations

import asyncio
import logging

from .. import codec
from ..core import FrameDecoder, encode_frame
from ..errors import FrameTooLarge, InvalidRequest, RemoteProtocolError
from .logs import LogOnce, reason_kind

__all__ = ["ClientServer", "ClientConn"]

log = logging.getLogger("fastraft.clients")


class ClientServer:
    def __init__(self, node, listen: tuple[str, int], limits: codec.Limits, max_frame: int,
                 max_connections: int) -> None:
        self.node = node
        self.listen = listen
        self.limits = limits
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.conns: set = set()
        self.once = LogOnce(log)
        self._server = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.listen
        self._server = await loop.create_server(lambda: ClientConn(self), host, port,
                                                reuse_address=True, backlog=512)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        self.stop_accepting()
        for c in list(self.conns):
            c.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass


class ClientConn(asyncio.Protocol):
    __slots__ = ("srv", "transport", "remote", "_decoder", "closed", "_out", "_flush")

    def __init__(self, srv: ClientServer) -> None:
        self.srv = srv
        self.transport = None
        self.remote = "?"
        self._decoder = FrameDecoder(srv.max_frame)
        self.closed = False
        self._out: list = []          # answers gathered during one event-loop turn
        self._flush = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        srv = self.srv
        if len(srv.conns) >= srv.max_connections:
            srv.once(("too-many", srv.max_connections), logging.WARNING,
                     "refusing client %s: %d connections already open", self.remote,
                     len(srv.conns))
            self.closed = True
            transport.abort()
            return
        srv.conns.add(self)
        transport.set_write_buffer_limits(high=8 << 20)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.srv.conns.discard(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

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
        try:
            frames = self._decoder.feed(data)
        except FrameTooLarge as exc:
            self._bad(str(exc))
            return
        srv = self.srv
        node = srv.node
        for body in frames:
            try:
                req = codec.decode_request(body, srv.limits, srv.max_frame)
            except InvalidRequest as exc:
                self.respond(exc.req_id, codec.ST_INVALID, str(exc))
                continue
            except RemoteProtocolError as exc:
                self._bad(str(exc))
                return
            node.on_request(self, req)

    def respond(self, req_id: int, status: int, *values) -> None:
        """Queue an answer; answers of one loop turn leave in one write."""
        if self.closed:
            return
        self._out.append(encode_frame(codec.encode_response(req_id, status, *values)))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._flush = None
        out = self._out
        self._out = []
        if not self.closed and out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
