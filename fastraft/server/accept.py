"""Accepting peer connections under a flood: a rate limit per source address, and a listener
that gives the connections over it the least work.

Place in the architecture: part of the runtime (``fastraft.server``), under ``peers`` (the
peer port). ``SourceLimiter`` is a token bucket per source address; ``PlainListener`` is the
plaintext peer port's accept loop (with ``[tls]`` the port is a ``tlsport.TLSListener``,
given the same limiter). Neither knows frames: what a peer's first bytes must look like is
the ``probe`` the peer transport hands in.

The rules (the numbers are ``ACCEPT_BURST``, ``ACCEPT_RATE``, ``PROBATION``):

- Each accepted connection takes a token of its source address's bucket (32, refilled at 16
  per second); a connection that opens with a valid hello gives it back (``give_back``, by
  the peer transport), so a peer reconnecting costs nothing and the buckets count the
  connections that never became a peer.
- A connection with a token is handed to the port's protocol at once, as before.
- A connection without one is on probation: it gets no protocol, no timer of its own and no
  log line of its own (one line per source address per minute says the source is being
  limited). It is closed at once unless its first bytes are a hello (``probe``: a first
  frame of at most a hello's size that decodes as one); silent, it is closed after
  ``PROBATION`` seconds; at most ``MAX_PROBATION`` wait at once (a new one closes the
  oldest). One that opens with a hello is handed to the protocol like any other: a peer
  sharing its address with a flood (every node of a test on 127.0.0.1, peers behind one
  NAT) is never refused for it.
- At most ``ACCEPT_BATCH`` connections are taken from the backlog per loop turn, between
  the other callbacks, so the established connections' reads and the node's timers keep
  their turns during a flood.

With ``[tls]`` a connection over the limit is closed at once (``TLSListener``): who it is can
only be known after the handshake, which is the work the limit saves; a peer sharing its
address with such a flood reconnects once the flood slows to the refill rate.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict

from .logs import LogEvery, LogOnce
from .tlsport import ACCEPT_RETRY_DELAY, listen_sockets, wait_readable

__all__ = ["SourceLimiter", "PlainListener", "ACCEPT_BURST", "ACCEPT_RATE", "PROBATION",
           "MAX_PROBATION"]

log = logging.getLogger("fastraft.peers")

#: Connections one source address may open at once without a valid hello ...
ACCEPT_BURST = 32
#: ... and then per second.
ACCEPT_RATE = 16.0
#: Seconds a connection over the limit has to show its first bytes.
PROBATION = 2.0
#: Connections over the limit waiting for their first bytes at once (more close the oldest).
MAX_PROBATION = 256
#: While a probed connection's first frame is incomplete, look again this often.
PROBE_AGAIN = 0.01
#: Source addresses whose buckets are remembered (past it, the full buckets are forgotten).
MAX_SOURCES = 10_000
#: Connections taken from the backlog per loop turn (at most).
ACCEPT_BATCH = 16


class SourceLimiter:
    """A token bucket per source address: ``take(host)`` spends a token if there is one (the
    bucket refills at ``rate`` per second up to ``burst``); ``give_back(host)`` returns one
    (never above ``burst``). Memory is bounded: past ``max_sources`` addresses, those whose
    buckets are full again are forgotten (all of them if that is not enough)."""

    def __init__(self, burst: int = ACCEPT_BURST, rate: float = ACCEPT_RATE,
                 clock=time.monotonic, max_sources: int = MAX_SOURCES) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be at least 1 and rate positive")
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.max_sources = max_sources
        self._buckets: dict = {}        # host -> [tokens, time of that count]

    def _bucket(self, host) -> list:
        now = self.clock()
        b = self._buckets.get(host)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                self._forget_full(now)
            b = self._buckets[host] = [float(self.burst), now]
        else:
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        return b

    def _forget_full(self, now: float) -> None:
        burst, rate = self.burst, self.rate
        full = [h for h, (tokens, t) in self._buckets.items()
                if tokens + (now - t) * rate >= burst]
        for h in full:
            del self._buckets[h]
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()

    def take(self, host) -> bool:
        """Spend one of ``host``'s tokens: False when it has none (over the limit)."""
        b = self._bucket(host)
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def give_back(self, host) -> None:
        """Return a token to ``host`` (a connection of it turned out to be a peer)."""
        b = self._buckets.get(host)
        if b is not None:
            b[0] = min(float(self.burst), b[0] + 1.0)

    def tokens(self, host) -> float:
        """``host``'s tokens now (tests, logs)."""
        return self._bucket(host)[0]


class PlainListener:
    """The plaintext peer port (module docstring): ``factory()`` makes the protocol of a
    connection handed over; ``probe(first_bytes)`` says whether a connection over the limit
    opens with a hello (True), does not (False) or has not sent enough yet (None)."""

    def __init__(self, what: str, factory, limiter: SourceLimiter, probe, backlog: int,
                 probation: float = PROBATION, max_probation: int = MAX_PROBATION,
                 peek: int = 4096) -> None:
        self.what = what
        self.factory = factory
        self.limiter = limiter
        self.probe = probe
        self.backlog = backlog
        self.probation = probation
        self.max_probation = max_probation
        self.peek = peek
        self.limited = 0                # connections over the limit, since start
        self.refused = 0                # ... of them closed without a hello
        self.refusals = LogEvery(log)   # one line per source address per minute
        self._once = LogOnce(log)
        self._socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task] = []
        self._probing: OrderedDict = OrderedDict()      # task -> None, oldest first
        self._tasks: set[asyncio.Task] = set()          # connections being handed over

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (one per address of the host)."""
        return list(self._socks)

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
                self._take(sock, addr)
                for _ in range(ACCEPT_BATCH - 1):   # more of the backlog, this turn
                    sock, addr = lsock.accept()
                    sock.setblocking(False)
                    self._take(sock, addr)
            except (BlockingIOError, InterruptedError):
                pass                                # the backlog is empty
            except OSError as exc:            # EMFILE, ENOBUFS ...: wait, then go on
                self._once(("accept", exc.errno), logging.WARNING,
                           "cannot accept on the %s port: %s (retrying)", self.what, exc)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)

    def _take(self, sock: socket.socket, addr) -> None:
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        loop = asyncio.get_running_loop()
        if self.limiter.take(host):
            self._tasks.add(task := loop.create_task(self._hand_over(sock)))
            task.add_done_callback(self._tasks.discard)
        else:
            self._on_probation(sock, host)

    async def _hand_over(self, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self.factory, sock)
        except OSError:
            sock.close()            # reset before it was handed over: nothing to do

    def _on_probation(self, sock: socket.socket, host: str) -> None:
        self.limited += 1
        self.refusals(host, logging.WARNING,
                      "rate-limiting %s connections from %s: more than %d without a valid "
                      "hello, then %g a second; each one now is closed at once unless it "
                      "opens with a hello", self.what, host, self.limiter.burst,
                      self.limiter.rate)
        if len(self._probing) >= self.max_probation:
            oldest = next(iter(self._probing))
            del self._probing[oldest]
            oldest.cancel()
        task = asyncio.get_running_loop().create_task(self._probe(sock))
        self._probing[task] = None
        task.add_done_callback(lambda t: self._probing.pop(t, None))

    async def _probe(self, sock: socket.socket) -> None:
        """Hand ``sock`` over if it opens with a hello within ``probation`` seconds; else
        close it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.probation
        try:
            while True:
                left = max(0.0, deadline - loop.time())
                await asyncio.wait_for(wait_readable(sock), left)
                first = sock.recv(self.peek, socket.MSG_PEEK)
                if not first:
                    break               # closed by the other side
                verdict = self.probe(first)
                if verdict is True:
                    owned, sock = sock, None
                    await self._hand_over(owned)
                    return
                if verdict is False:
                    break
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(PROBE_AGAIN)
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            if sock is not None:
                self.refused += 1
                sock.close()

    def close(self) -> None:
        """Accept nothing more; connections on probation are closed. Connections already
        handed to the protocol are not touched."""
        for t in self._accepting:
            t.cancel()
        for t in list(self._probing):
            t.cancel()
        for s in self._socks:
            s.close()
        self._socks = []

    async def wait_closed(self) -> None:
        """Wait for the accept loops and the connections on probation to finish."""
        tasks = self._accepting + list(self._probing) + list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
