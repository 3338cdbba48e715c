"""The listening side of a TLS port: accept TCP, run each handshake in a task of its own,
bounded in time and in number, and log every refusal with its reason.

Place in the architecture: part of the runtime (``fastraft.server``), under ``peers`` (the
peer port) and ``clients`` (the client port) when the config has ``[tls]``; without it they
listen with ``loop.create_server`` as before. It knows nothing of frames: a connection whose
handshake succeeds is handed to the port's protocol (its ``connection_made`` is called with
the TLS transport), exactly as ``create_server(ssl=...)`` would.

Why not ``create_server(ssl=...)``: asyncio and uvloop then drop a failed handshake in
silence (no address, no reason). Here each accepted socket goes through
``loop.connect_accepted_socket(..., ssl=context)``, which raises what went wrong, so:

- every refusal (plaintext, HTTP or garbage on the port, no client certificate where one is
  required, a certificate from a foreign CA, expired or not yet valid, the other side
  refusing ours, a handshake not finished in time) is logged with its reason
  (``fastraft.tls.handshake_refusal``: OpenSSL's reason, never key material), at most once
  per source address per minute (``LogEvery``), never with a traceback;
- a connection that does not finish its handshake within ``timeout`` seconds is closed (a
  client that opens TCP and never speaks holds nothing for long). Until its first bytes
  arrive a connection costs a file descriptor and no CPU; at most ``max_waiting`` of them
  wait at once (more are closed at once, and logged);
- at most ``max_handshakes`` handshakes are computed at once (a connection whose first bytes
  arrived waits for a slot). A handshake costs the event loop a few hundred microseconds per
  step, so a flood of them takes a bounded share of each loop turn and the node's timers
  (heartbeats, elections) keep running; silent connections cannot take the slots;
- ``context`` can be replaced at any time (``fastraft node`` does it on SIGHUP): new
  handshakes use the new one, the connections already open keep theirs;
- with a ``limiter`` (``accept.SourceLimiter``: the peer port's), a connection from a source
  address that has no token left is closed at once, before any handshake work, and the
  source is logged once a minute (``accept``'s docstring has the rules).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from ..tls import handshake_refusal
from .logs import LogEvery, LogOnce

__all__ = ["TLSListener", "MAX_HANDSHAKES", "MAX_WAITING", "listen_sockets",
           "wait_readable"]

log = logging.getLogger("fastraft.tls")

#: Handshakes computed at once on one port (the others wait for a slot).
MAX_HANDSHAKES = 64
#: Accepted connections not yet through their handshake, per port; more are closed at once.
MAX_WAITING = 1024
#: Seconds a handshake that got its slot late still has.
MIN_HANDSHAKE_TIME = 1.0
#: Pause after accept() failed for lack of resources (too many open files ...), as asyncio.
ACCEPT_RETRY_DELAY = 1.0


def listen_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address of ``host`` (as
    ``loop.create_server``: IPv6 sockets are IPv6 only); OSError when one cannot bind."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, addr in dict.fromkeys(infos):
            s = socket.socket(family, type_, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


async def wait_readable(sock: socket.socket) -> None:
    """Until ``sock`` has bytes to read (or is closed by the other side)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


class TLSListener:
    """One TLS port (module docstring): ``what`` names it in the log ("peer", "client");
    ``factory()`` makes the protocol of a connection whose handshake succeeded."""

    def __init__(self, what: str, factory, context, timeout: float, backlog: int,
                 max_handshakes: int = MAX_HANDSHAKES, max_waiting: int = MAX_WAITING,
                 limiter=None) -> None:
        self.what = what
        self.limiter = limiter          # an accept.SourceLimiter, or None
        self.limited = 0                # connections closed by it, since start
        self.factory = factory
        self.context = context          # ssl.SSLContext; replaced on reload
        self.timeout = timeout
        self.backlog = backlog
        self.refused = 0                # handshakes that failed, since start
        self.refusals = LogEvery(log)   # one line per source address per minute
        self._once = LogOnce(log)
        self._slots = asyncio.Semaphore(max_handshakes)
        self.max_waiting = max_waiting
        self._socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task] = []
        self._handshakes: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` and start accepting (OSError when it cannot bind)."""
        loop = asyncio.get_running_loop()
        self._socks = listen_sockets(host, port, self.backlog)
        self._accepting = [loop.create_task(self._accept(s)) for s in self._socks]

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as exc:            # EMFILE, ENOBUFS ...: wait, then go on
                self._once(("accept", exc.errno), logging.WARNING,
                           "cannot accept on the %s port: %s (retrying)", self.what, exc)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if self.limiter is not None and not self._within_limit(addr):
                sock.close()
                continue
            if len(self._handshakes) >= self.max_waiting:
                sock.close()
                self._refuse(addr, f"{self.max_waiting} connections are already waiting "
                                   "for their handshake")
                continue
            task = loop.create_task(self._handshake(sock, addr))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, addr) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as create_server
            # Silence costs no slot: wait for the first bytes, then for a slot.
            await asyncio.wait_for(wait_readable(sock), self.timeout)
            async with self._slots:
                left = max(deadline - loop.time(), MIN_HANDSHAKE_TIME)
                # From here the socket belongs to the transport: on failure it is closed.
                owned, sock = sock, None
                await loop.connect_accepted_socket(self.factory, owned, ssl=self.context,
                                                   ssl_handshake_timeout=left)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._refuse(addr, handshake_refusal(exc, self.timeout))
        finally:
            if sock is not None:
                sock.close()

    def _within_limit(self, addr) -> bool:
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        if self.limiter.take(host):
            return True
        self.limited += 1
        self.refusals(("limit", host), logging.WARNING,
                      "rate-limiting TLS connections on the %s port from %s: more than %d "
                      "without a valid hello, then %g a second; the others are closed at "
                      "once", self.what, host, self.limiter.burst, self.limiter.rate)
        return False

    def _refuse(self, addr, reason: str) -> None:
        self.refused += 1
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        self.refusals(host, logging.WARNING, "refused a TLS connection on the %s port from "
                      "%s: %s", self.what, host, reason)

    def close(self) -> None:
        """Accept nothing more; handshakes in progress are abandoned (their connections
        closed). Connections already handed to the protocol are not touched."""
        for t in self._accepting:
            t.cancel()
        for t in list(self._handshakes):
            t.cancel()
        for s in self._socks:
            s.close()
        self._socks = []

    async def wait_closed(self) -> None:
        """Wait for the accept loops and the abandoned handshakes to finish."""
        tasks = self._accepting + list(self._handshakes)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
