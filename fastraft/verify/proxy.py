"""The fault proxy: network faults on the peer links of a real cluster, per directed link.

Place in the architecture: part of the verification framework (``fastraft.verify``). It sits
between node processes on the network, outside them: it imports the frame codec of the core
(``FrameDecoder``, ``encode_frame``) and the peer handshake of ``fastraft.codec`` — never the
server. asyncio only; it runs on a background thread with its own event loop (``start()`` /
``close()``, so synchronous tests can drive it) or on a caller's loop (``astart()`` /
``aclose()``).

Topology: every node listens for peers on a private address (``raft_listen`` in the config)
and advertises the address of its proxy (``raft``), so every other node dials the proxy. Peer
connections are one-directional (see ``fastraft.codec``): the dialler sends
``[P_HELLO, version, cluster, from_id, to_id]`` first, then its messages; the acceptor
answers with one ``P_WELCOME`` (or ``P_REFUSE``). So one proxy per *destination* node sees
every link ``x -> to``, and the hello names the link::

    node 1 ──dial──> proxy of 3 ──> node 3 (private)      link (1, 3): 1's messages to 3
    node 2 ──dial──> proxy of 3 ──> node 3 (private)      link (2, 3)
    node 3 ──dial──> proxy of 1 ──> node 1 (private)      link (3, 1): 3's messages to 1

Faults, per directed link (``ProxyNetwork`` holds one ``LinkState`` for each; any can change
at any moment, also for connections already open):

- ``pass``:      frames are forwarded as they come.
- ``block``:     the link's connections are cut (aborted) and new ones are accepted, their
                 hello read, and closed at once (a refused dial, as an unreachable host is).
- ``blackhole``: open connections stay open but every byte is silently dropped, both ways;
                 a new dial hangs (it is accepted, nothing reaches the node, not even the
                 hello): the dialler's handshake times out, as on a silent network.
- ``drop=p``:    each frame after the handshake is dropped with probability ``p`` (seeded,
                 one ``random.Random`` per link). Frames are parsed (u32-LE length + body) and
                 dropped whole: a frame is never cut in half.
- ``delay=d, jitter=j``: each frame is held ``d ± j`` seconds (uniform, at least 0), in order:
                 a frame never overtakes the one before it.

The first frame each way (hello, welcome) is never dropped or delayed by ``drop``/``delay``:
that is connection set-up, not a message. A first frame that is not a valid hello is not a
peer link at all: the connection is piped through untouched (hostile-input tests can go
through the proxy).

A node added to the cluster at runtime gets its proxy then (``Proxies.add``), on the same
network of links.

TLS (``ProxyTLS``, for a cluster with a ``[tls]`` table): the proxy terminates TLS, so every
fault above keeps acting on whole frames. It accepts with a peer-port server context holding
the destination node's certificate (signed by the peer CA, naming the proxy's address, so the
dialler's host name check passes) and requiring a peer certificate, and dials the node's
private address with a peer client context (a certificate signed by the peer CA, the private
host checked). A dialler that does not complete the handshake (plaintext, no or a foreign
certificate, silence past the handshake timeout) is closed and counted (``tls_stats``); the
proxy goes on. A TLS stream cannot be half-closed: when one side ends, the other is closed.

Partitions are sets of link states (``Proxies``): ``isolate(n)``, ``partition([[1, 2], [3]])``
(majority/minority splits), ``bridge([1, 2], [4, 5], via=3)`` (3 sees both halves),
``one_way(a, b)`` (a's messages to b are lost, b's to a arrive), ``heal()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from .. import codec
from ..core import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from ..errors import FastraftError

__all__ = ["PASS", "BLOCK", "BLACKHOLE", "LinkState", "ProxyNetwork", "FaultProxy", "Proxies",
           "LinkControl", "LoopThread", "ProxyTLS"]

log = logging.getLogger("fastraft.verify.proxy")

PASS = "pass"
BLOCK = "block"
BLACKHOLE = "blackhole"
_MODES = frozenset({PASS, BLOCK, BLACKHOLE})

HELLO_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 5.0     # as the node's own (``server.tlsport``)
_READ_SIZE = 1 << 16


class _Cut(FastraftError):
    """The link of this connection became blocked: the connection is being aborted."""


def _addr(a) -> tuple[str, int]:
    if isinstance(a, str):
        host, _, port = a.rpartition(":")
        return host, int(port)
    host, port = a
    return str(host), int(port)


@dataclass(frozen=True)
class LinkState:
    """The faults of one directed link. Immutable: a change replaces it (atomically)."""

    mode: str = PASS
    drop: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"link mode must be one of {sorted(_MODES)}, not {self.mode!r}")
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError("drop is a probability in [0, 1]")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must be >= 0")

    @property
    def clean(self) -> bool:
        """No fault at all: frames pass as they come."""
        return self == _CLEAN

    def describe(self) -> str:
        """The faults in words (``block, drop 10%, delay 20±5 ms``); ``pass`` when clean."""
        parts = [self.mode] if self.mode != PASS or self.clean else []
        if self.drop:
            parts.append(f"drop {self.drop:.0%}")
        if self.delay or self.jitter:
            parts.append(f"delay {self.delay * 1000:.0f}±{self.jitter * 1000:.0f} ms")
        return ", ".join(parts)


_CLEAN = LinkState()


@dataclass(frozen=True)
class ProxyTLS:
    """TLS termination of one proxy (module docstring): ``accept`` the server context its
    diallers handshake with (``fastraft.tls.peer_server_context`` with the destination node's
    certificate), ``dial`` the client context it reaches the node's private address with
    (``fastraft.tls.peer_client_context``; the private host is the name checked)."""

    accept: ssl.SSLContext
    dial: ssl.SSLContext
    handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT


class ProxyNetwork:
    """The fault table shared by the proxies of one cluster: a LinkState per directed link
    ``(frm, to)`` (absent = clean), a seeded RNG per link, and counters per link
    (``stats[(frm, to)]``: frames, bytes, dropped, delayed, cut, refused, connections).

    Reads and writes are safe from any thread: a LinkState is immutable and replaced whole.
    Changing the table does not by itself cut open connections: ``Proxies`` (or
    ``FaultProxy.apply``) does that on the proxies' loop."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._links: dict[tuple, LinkState] = {}
        self._rngs: dict[tuple, random.Random] = {}
        self.stats: dict[tuple, Counter] = {}
        self._lock = threading.Lock()

    def state(self, frm, to) -> LinkState:
        """The faults of link ``frm -> to`` now."""
        return self._links.get((frm, to), _CLEAN)

    def set(self, frm, to, state: LinkState) -> None:
        """Replace the faults of link ``frm -> to``."""
        with self._lock:
            self._put((frm, to), state)

    def update(self, frm, to, **changes) -> LinkState:
        """Change some fields of link ``frm -> to``'s LinkState; returns the new one."""
        with self._lock:
            st = replace(self._links.get((frm, to), _CLEAN), **changes)
            self._put((frm, to), st)
            return st

    def _put(self, link: tuple, state: LinkState) -> None:
        if state.clean:
            self._links.pop(link, None)
        else:
            self._links[link] = state

    def heal(self) -> None:
        """Every link clean."""
        with self._lock:
            self._links.clear()

    def faulty(self) -> dict[tuple, LinkState]:
        """Every link that is not clean."""
        return dict(self._links)

    def rng(self, frm, to, back: bool = False) -> random.Random:
        """The link's RNG for one direction of its connections (two, so that the draws of
        one direction do not depend on how the two interleave)."""
        k = (frm, to, back)
        r = self._rngs.get(k)
        if r is None:
            # ints hash the same in every run, so this seed is reproducible
            r = self._rngs[k] = random.Random(hash((self.seed, frm, to, back)))
        return r

    def count(self, link, what: str, n: int = 1) -> None:
        """Add ``n`` to the link's counter ``what`` (``stats``)."""
        c = self.stats.get(link)
        if c is None:
            c = self.stats[link] = Counter()
        c[what] += n

    def describe(self) -> str:
        """Every faulty link in words, for the logs."""
        links = self.faulty()
        if not links:
            return "all links clean"
        return "; ".join(f"{a}->{b}: {s.describe()}" for (a, b), s in sorted(links.items()))


class _Pipe:
    """One direction of one proxied connection: frames in from ``reader``, faults applied,
    out to ``writer`` in order."""

    def __init__(self, conn: _ProxiedConnection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, decoder: FrameDecoder | None, first_done: bool,
                 back: bool = False) -> None:
        self.conn = conn
        self.back = back
        self.reader = reader
        self.writer = writer
        self.decoder = decoder      # None: raw pipe, no frames
        self.first_done = first_done
        self.queue: list[tuple[float, bytes]] = []
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()   # set while the queue is empty
        self.idle.set()
        self.last_due = 0.0
        self.sender: asyncio.Task | None = None

    async def run(self, pending: list[bytes] = ()) -> None:
        for frame in pending:
            await self._frame(frame)
        while True:
            data = await self.reader.read(_READ_SIZE)
            if not data:
                break
            if self.decoder is None:
                self.writer.write(data)
                await self.writer.drain()
                continue
            for frame in self.decoder.feed(data):
                await self._frame(frame)
        # EOF: let queued frames out, then half-close (TLS cannot: close)
        await self.idle.wait()
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            else:
                self.writer.close()
        except OSError:
            pass

    async def _frame(self, frame: bytes) -> None:
        conn = self.conn
        net = conn.proxy.network
        link = conn.link
        st = net.state(*link)
        if st.mode == BLOCK:
            net.count(link, "cut")
            conn.abort()
            raise _Cut
        if st.mode == BLACKHOLE:
            net.count(link, "blackholed")
            self.first_done = True
            return
        first = not self.first_done
        self.first_done = True
        if not first and st.drop and net.rng(*link, self.back).random() < st.drop:
            net.count(link, "dropped")
            return
        delay = 0.0
        if not first and (st.delay or st.jitter):
            delay = max(0.0, st.delay + net.rng(*link, self.back).uniform(-st.jitter,
                                                                          st.jitter))
        net.count(link, "frames")
        net.count(link, "bytes", len(frame))
        data = encode_frame(frame)
        if delay <= 0.0 and not self.queue:
            self.writer.write(data)
            await self.writer.drain()
            return
        net.count(link, "delayed")
        loop = asyncio.get_running_loop()
        due = max(loop.time() + delay, self.last_due)
        self.last_due = due
        self.queue.append((due, data))
        self.idle.clear()
        self.wakeup.set()
        if self.sender is None:
            self.sender = loop.create_task(self._send_loop())
            self.conn.tasks.add(self.sender)

    async def _drain_queue_once(self) -> None:
        loop = asyncio.get_running_loop()
        due, data = self.queue[0]
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.queue.pop(0)
        st = self.conn.proxy.network.state(*self.conn.link)
        if st.mode == BLACKHOLE:
            return
        if st.mode == BLOCK:
            self.conn.abort()
            raise _Cut
        self.writer.write(data)
        await self.writer.drain()

    async def _send_loop(self) -> None:
        try:
            while True:
                while self.queue:
                    await self._drain_queue_once()
                self.idle.set()
                self.wakeup.clear()
                await self.wakeup.wait()
        except (_Cut, ConnectionError, OSError):
            self.conn.abort()


class _ProxiedConnection:
    """One connection through the proxy: the accepted one, its upstream twin to the node,
    the tasks piping between them, and the link it carries (once its hello is read)."""

    def __init__(self, proxy: FaultProxy, link) -> None:
        self.proxy = proxy
        self.link = link            # (frm, to), or None for a connection that is no peer link
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.writers:
            w.transport.abort()
        cur = asyncio.current_task()
        for t in self.tasks:
            if t is not cur:
                t.cancel()


class _OnLoopThread:
    """The blocking lifecycle of a loop-bound object: ``start()`` runs its ``astart()`` on a
    LoopThread of its own and returns once it is up; ``close()`` runs ``aclose()`` there and
    stops the thread (a no-op when not started so)."""

    _thread: LoopThread | None = None

    def _thread_name(self) -> str:
        raise NotImplementedError

    async def astart(self):
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def start(self):
        self._thread = LoopThread(name=self._thread_name()).start()
        self._thread.run(self.astart())
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._thread.run(self.aclose())
            self._thread.close()
            self._thread = None


class FaultProxy(_OnLoopThread):
    """A TCP proxy in front of one node's private peer address (``target_addr``), listening
    on ``listen_addr`` (port 0: any free port; ``address`` says which after start). Faults
    come from ``network`` (a private one by default).

    Loop-bound: ``await astart()`` / ``await aclose()`` on a running loop, or the blocking
    ``start()`` / ``close()``, which run it on a LoopThread of its own."""

    def __init__(self, listen_addr, target_addr, network: ProxyNetwork | None = None,
                 node_id: int | None = None, max_frame: int = DEFAULT_MAX_FRAME_SIZE,
                 tls: ProxyTLS | None = None) -> None:
        self.listen_addr = _addr(listen_addr)
        self.target_addr = _addr(target_addr)
        self.network = network if network is not None else ProxyNetwork()
        self.node_id = node_id
        self.max_frame = max_frame
        self.tls = tls
        #: with ``tls``: handshakes accepted, and refused (closed; the proxy goes on)
        self.tls_stats: Counter = Counter()
        self.address: tuple[str, int] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_ProxiedConnection] = set()
        self._thread: LoopThread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (f"<FaultProxy node={self.node_id} {self.address or self.listen_addr} -> "
                f"{self.target_addr}{' (TLS terminated)' if self.tls else ''}>")

    # -- lifecycle ------------------------------------------------------------------------

    async def astart(self) -> FaultProxy:
        """Listen (on the running loop); ``address`` is then where."""
        self.loop = asyncio.get_running_loop()
        host, port = self.listen_addr
        self._server = await asyncio.start_server(self._handle, host, port,
                                                  reuse_address=True)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    async def aclose(self) -> None:
        """Stop listening and abort every open connection."""
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._conns.clear()

    def _thread_name(self) -> str:
        return f"fault-proxy-{self.node_id}"

    # -- faults on open connections -------------------------------------------------------

    def apply(self) -> None:
        """Cut open connections of links that are now blocked (call on the proxy's loop)."""
        for c in list(self._conns):
            if c.link is not None and self.network.state(*c.link).mode == BLOCK:
                self.network.count(c.link, "cut")
                c.abort()

    def links(self) -> list:
        """The links of the open connections."""
        return [c.link for c in self._conns if not c.closed]

    # -- connections ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _ProxiedConnection(self, None)
        conn.writers.append(writer)
        conn.tasks.add(asyncio.current_task())
        self._conns.add(conn)
        try:
            if self.tls is not None and not await self._accept_tls(writer):
                return
            await self._serve(conn, reader, writer)
        except (asyncio.CancelledError, _Cut, ConnectionError, OSError, asyncio.TimeoutError):
            pass
        except FastraftError as exc:   # an oversized frame: the node would close it too
            log.info("proxy %s: closing a connection: %s", self.node_id, exc)
        finally:
            conn.abort()
            self._conns.discard(conn)

    async def _accept_tls(self, writer: asyncio.StreamWriter) -> bool:
        """The TLS handshake of an accepted connection (the first thing done with it: no
        byte has been read); False when it failed (counted; the caller closes it)."""
        try:
            await writer.start_tls(self.tls.accept,
                                   ssl_handshake_timeout=self.tls.handshake_timeout)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError,
                EOFError) as exc:
            self.tls_stats["refused"] += 1
            log.debug("proxy %s: TLS handshake refused: %r", self.node_id, exc)
            return False
        self.tls_stats["handshakes"] += 1
        return True

    def _dial_options(self, host: str) -> dict:
        """``open_connection`` options to reach the node: TLS naming ``host`` with ``tls``."""
        if self.tls is None:
            return {}
        return {"ssl": self.tls.dial, "server_hostname": host,
                "ssl_handshake_timeout": self.tls.handshake_timeout}

    async def _serve(self, conn: _ProxiedConnection, reader, writer) -> None:
        net = self.network
        decoder = FrameDecoder(self.max_frame)
        raw = bytearray()
        frames: list = []
        async with asyncio.timeout(HELLO_TIMEOUT):
            while not frames:
                data = await reader.read(_READ_SIZE)
                if not data:
                    return
                raw += data
                try:
                    frames = decoder.feed(data)
                except FastraftError:
                    decoder = None
                    break
        link = None
        if decoder is not None:
            try:
                kind = codec.decode_peer(frames[0], self.max_frame)
            except FastraftError:
                kind = None
            if kind is not None and kind[0] == codec.P_HELLO:
                link = (kind[3], kind[4])
        if link is None:
            decoder = None                # not a peer link: a transparent pipe
        else:
            conn.link = link
            net.count(link, "connections")
            st = net.state(*link)
            if st.mode == BLOCK:
                net.count(link, "refused")
                return
            if st.mode == BLACKHOLE:
                # a dial into a black hole hangs: swallow everything until the dialler
                # gives up (nothing reaches the node, not even the hello)
                net.count(link, "blackholed")
                while await reader.read(_READ_SIZE):
                    pass
                return
        host, port = self.target_addr
        up_reader, up_writer = await asyncio.open_connection(host, port,
                                                             **self._dial_options(host))
        conn.writers.append(up_writer)
        if conn.closed:
            return
        if decoder is None:
            up_writer.write(bytes(raw))
            fwd = _Pipe(conn, reader, up_writer, None, True)
            back = _Pipe(conn, up_reader, writer, None, True)
            pending = []
        else:
            fwd = _Pipe(conn, reader, up_writer, decoder, False)
            back = _Pipe(conn, up_reader, writer, FrameDecoder(self.max_frame), False, True)
            pending = frames
        t_back = asyncio.get_running_loop().create_task(back.run())
        conn.tasks.add(t_back)
        try:
            await fwd.run(pending)
            await t_back
        finally:
            t_back.cancel()


class LoopThread:
    """An asyncio event loop on a daemon thread: ``run(coro)`` runs a coroutine there and
    returns its result; ``call(fn, *args)`` runs a plain function there. Both block the caller
    and may be called from any thread but the loop's own."""

    def __init__(self, name: str = "fastraft-verify-loop") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopThread:
        """Start the thread and its loop; returns once the loop exists."""
        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            try:
                self.loop.run_forever()
            finally:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    @property
    def in_loop(self) -> bool:
        """Whether the caller runs on the loop's own thread (where ``run`` would deadlock)."""
        return self._thread is threading.current_thread()

    def run(self, coro, timeout: float | None = 30.0):
        """Run ``coro`` on the loop and return its result (waits up to ``timeout``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable, *args, timeout: float | None = 30.0):
        """Call ``fn(*args)`` on the loop and return its result (waits up to ``timeout``)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def go() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:   # pragma: no cover - handed to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(go)
        return fut.result(timeout)

    def close(self) -> None:
        """Cancel every task on the loop, stop it and join the thread."""
        if self._thread is None:
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout=10)
        except Exception:  # pragma: no cover
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._thread = None


class LinkControl:
    """The faults of one directed link ``frm -> to``, through its ``Proxies``."""

    def __init__(self, proxies: Proxies, frm: int, to: int) -> None:
        self.proxies = proxies
        self.frm = frm
        self.to = to

    @property
    def state(self) -> LinkState:
        """The link's faults now."""
        return self.proxies.network.state(self.frm, self.to)

    def _set(self, **changes) -> LinkControl:
        st = self.proxies.network.update(self.frm, self.to, **changes)
        self.proxies.apply()
        self.proxies._log(f"link {self.frm} -> {self.to}: {st.describe()}")
        return self

    def block(self) -> LinkControl:
        """Cut the link's connections and refuse new ones."""
        return self._set(mode=BLOCK)

    def blackhole(self) -> LinkControl:
        """Drop every byte of the link silently, both ways; new dials hang."""
        return self._set(mode=BLACKHOLE)

    def unblock(self) -> LinkControl:
        """Back to ``pass`` (drop and delay are kept)."""
        return self._set(mode=PASS)

    def drop(self, fraction: float) -> LinkControl:
        """Drop each frame after the handshake with probability ``fraction``."""
        return self._set(drop=fraction)

    def delay(self, seconds: float, jitter: float = 0.0) -> LinkControl:
        """Hold each frame after the handshake ``seconds ± jitter``, in order."""
        return self._set(delay=seconds, jitter=jitter)

    def heal(self) -> LinkControl:
        """The link clean again."""
        self.proxies.network.set(self.frm, self.to, _CLEAN)
        self.proxies._log(f"link {self.frm} -> {self.to}: heal")
        return self


class Proxies(_OnLoopThread):
    """One FaultProxy per node of a cluster over one ProxyNetwork, and the partitions built
    on it.

    ``nodes``: ``{node_id: (listen_addr, target_addr)}`` — where its proxy listens (the
    address the other nodes dial: the node's ``raft`` address in the config) and the node's
    private peer address (``raft_listen``). Control methods are synchronous, thread-safe, and
    return once open connections of newly blocked links are cut. ``mode`` on the partition
    methods is ``"block"`` (cut and refused) or ``"blackhole"`` (silently dropped).
    ``tls``: node id -> its proxy's ``ProxyTLS`` (called for every proxy, the added ones
    too), for a TLS cluster; None: plaintext."""

    def __init__(self, nodes: dict, seed: int = 0, max_frame: int = DEFAULT_MAX_FRAME_SIZE,
                 tls: Callable[[int], ProxyTLS] | None = None) -> None:
        self.network = ProxyNetwork(seed)
        self.max_frame = max_frame
        self.tls = tls
        self.proxies = {i: self._proxy(i, listen, target)
                        for i, (listen, target) in sorted(nodes.items())}
        self._thread: LoopThread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: (loop time, description) of every change, for the run's nemesis log.
        self.changes: list[tuple[float, str]] = []

    def _proxy(self, i: int, listen, target) -> FaultProxy:
        return FaultProxy(listen, target, self.network, node_id=i, max_frame=self.max_frame,
                          tls=self.tls(i) if self.tls is not None else None)

    @property
    def ids(self) -> list[int]:
        """The node ids, sorted."""
        return sorted(self.proxies)

    def address(self, i: int) -> tuple[str, int]:
        """Where node ``i``'s proxy listens (once started)."""
        return self.proxies[i].address

    # -- lifecycle ------------------------------------------------------------------------

    async def astart(self) -> Proxies:
        """Start every proxy on the running loop."""
        self.loop = asyncio.get_running_loop()
        for p in self.proxies.values():
            await p.astart()
        return self

    async def aclose(self) -> None:
        """Close every proxy (on its loop)."""
        for p in self.proxies.values():
            await p.aclose()

    async def add(self, i: int, listen_addr, target_addr) -> tuple[str, int]:
        """Put a proxy in front of a node added to the running cluster (on the proxies' loop,
        after ``astart``): it listens on ``listen_addr`` (the node's advertised peer address)
        and forwards to ``target_addr`` (its private one), over the same network of links
        (the new node's links start clean). Returns where it listens."""
        if i in self.proxies:
            raise ValueError(f"node {i} has a proxy already")
        p = self._proxy(i, listen_addr, target_addr)
        await p.astart()
        self.proxies[i] = p
        self._log(f"proxy added for node {i}: {p.address} -> {p.target_addr}")
        return p.address

    def _thread_name(self) -> str:
        return "fault-proxies"

    def __enter__(self) -> Proxies:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def apply(self) -> None:
        """Cut the open connections of blocked links (waits when called off the loop)."""
        def go() -> None:
            for p in self.proxies.values():
                p.apply()

        if self.loop is None:
            return
        if self._thread is not None and not self._thread.in_loop:
            self._thread.call(go)
        else:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop:
                go()
            else:
                fut = asyncio.run_coroutine_threadsafe(_as_coro(go), self.loop)
                fut.result(30)

    def _log(self, what: str) -> None:
        self.changes.append((time.monotonic(), what))
        log.info("nemesis: %s (%s)", what, self.network.describe())

    # -- links and partitions -------------------------------------------------------------

    def link(self, frm: int, to: int) -> LinkControl:
        """The controls of link ``frm -> to``."""
        return LinkControl(self, frm, to)

    def _cut(self, pairs: Iterable[tuple[int, int]], mode: str) -> None:
        if mode not in (BLOCK, BLACKHOLE):
            raise ValueError("mode must be 'block' or 'blackhole'")
        for a, b in pairs:
            self.network.update(a, b, mode=mode)
        self.apply()

    def isolate(self, n: int, mode: str = BLOCK) -> None:
        """Cut every link to and from node ``n``."""
        self._cut([(n, o) for o in self.ids if o != n] + [(o, n) for o in self.ids if o != n],
                  mode)
        self._log(f"isolate {n} ({mode})")

    def partition(self, groups, mode: str = BLOCK) -> None:
        """Cut every link between different groups (``[[1, 2], [3]]``); a node named in no
        group is a group of its own."""
        groups = [set(g) for g in groups]
        seen = set().union(*groups) if groups else set()
        unknown = seen - set(self.ids)
        if unknown:
            raise ValueError(f"unknown nodes {sorted(unknown)}")
        groups += [{i} for i in self.ids if i not in seen]
        where = {i: k for k, g in enumerate(groups) for i in g}
        self._cut([(a, b) for a in self.ids for b in self.ids
                   if a != b and where[a] != where[b]], mode)
        self._log(f"partition {[sorted(g) for g in groups]} ({mode})")

    def bridge(self, left, right, via: int, mode: str = BLOCK) -> None:
        """``left`` and ``right`` cannot reach each other; ``via`` reaches both."""
        left, right = set(left) - {via}, set(right) - {via}
        self._cut([(a, b) for a in left for b in right] + [(b, a) for a in left for b in right],
                  mode)
        self._log(f"bridge {sorted(left)} <-{via}-> {sorted(right)} ({mode})")

    def one_way(self, frm: int, to: int, mode: str = BLOCK) -> None:
        """Messages from ``frm`` to ``to`` are lost; the other way they arrive."""
        self._cut([(frm, to)], mode)
        self._log(f"one-way cut {frm} -> {to} ({mode})")

    def degrade(self, drop: float = 0.0, delay: float = 0.0, jitter: float = 0.0,
                links: Iterable[tuple[int, int]] | None = None) -> None:
        """Drop and/or delay frames on ``links`` (default: every link)."""
        if links is None:
            links = [(a, b) for a in self.ids for b in self.ids if a != b]
        for a, b in links:
            self.network.update(a, b, drop=drop, delay=delay, jitter=jitter)
        self._log(f"degrade drop {drop:.0%} delay {delay * 1000:.0f}±{jitter * 1000:.0f} ms")

    def heal(self) -> None:
        """Every link clean again (blocked links accept new connections)."""
        self.network.heal()
        self._log("heal")

    def stats(self) -> dict:
        """``{(frm, to): {counter: n}}`` for every link that carried anything."""
        return {k: dict(v) for k, v in sorted(self.network.stats.items())}

    def tls_stats(self) -> dict:
        """``{node id: {"handshakes": n, "refused": n}}`` of the TLS-terminating proxies
        (empty without TLS)."""
        return {i: {"handshakes": p.tls_stats["handshakes"],
                    "refused": p.tls_stats["refused"]}
                for i, p in sorted(self.proxies.items()) if p.tls is not None}


async def _as_coro(fn: Callable) -> None:
    fn()
