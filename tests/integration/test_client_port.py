"""The client port's answers (``server/clients.py``): the answers given during one loop turn
leave in one write per connection, at once when the node flushes them at the end of its Ready
pass (``ClientServer.flush``), else in the next loop turn.

Place in the architecture: integration tests of the client transport alone, with a real
listening socket and real client sockets; the request handler stands in for the node (it only
records the requests, and the test answers them).
"""

from __future__ import annotations

import asyncio
import socket
import time

from fastraft import codec
from fastraft.core import FrameDecoder, encode_frame
from fastraft.server.clients import ClientServer
from fastraft_test_waiting import until  # tests/conftest.py loads it


class Handler:
    """The node as the client port calls it: it keeps each request to answer later."""

    def __init__(self) -> None:
        self.got: list = []

    def on_request(self, conn, req) -> None:
        self.got.append((conn, req))


def _answers(sock: socket.socket) -> list:
    """The answers readable on ``sock`` now, without waiting: ``(req_id, status)`` each."""
    dec = FrameDecoder(1 << 20)
    sock.setblocking(False)
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        for frame in dec.feed(data):
            rid, status, _ = codec.decode_response(frame, 1 << 20)
            out.append((rid, status))


def _status(req_id: int) -> bytes:
    return encode_frame(codec.encode_request(req_id, codec.OP_STATUS))


async def _serve_two_clients():
    """A client port on a free port of 127.0.0.1 and two connected clients, each with two
    requests read by the handler."""
    h = Handler()
    srv = ClientServer(h, ("127.0.0.1", 0), codec.Limits(), 1 << 20, 16)
    await srv.start()
    port = srv._server.sockets[0].getsockname()[1]
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    for s in socks:
        s.sendall(_status(1) + _status(2))
    await until(lambda: len(h.got) >= 4, "the port to read the 4 requests")
    return srv, h, socks


def _expect_both_answered(socks) -> None:
    """Each socket holds the answers to its two requests, read without a loop turn (a busy
    read with a deadline: the kernel has them once the node's write returned)."""
    for s in socks:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += _answers(s)
        assert got == [(1, codec.ST_OK), (2, codec.ST_OK)]


def _give_answers(h: Handler) -> None:
    for conn, req in h.got:
        conn.respond(req.req_id, codec.ST_OK, [])


def test_flush_writes_the_answers_of_a_turn_at_once():
    async def main():
        srv, h, socks = await _serve_two_clients()
        try:
            _give_answers(h)
            assert [_answers(s) for s in socks] == [[], []]     # queued, not written yet
            srv.flush()                 # no loop turn in between: written by the flush
            _expect_both_answered(socks)
            srv.flush()                 # nothing queued: nothing written twice
            assert [_answers(s) for s in socks] == [[], []]
        finally:
            for s in socks:
                s.close()
            await srv.close()

    asyncio.run(main())


def test_unflushed_answers_leave_in_the_next_loop_turn():
    async def main():
        srv, h, socks = await _serve_two_clients()
        try:
            _give_answers(h)
            await asyncio.sleep(0)      # one loop turn: the port's own flush runs
            _expect_both_answered(socks)
        finally:
            for s in socks:
                s.close()
            await srv.close()

    asyncio.run(main())
