"""The peer transport: TCP connections between the nodes of a cluster.

Place in the architecture: part of the runtime (``fastraft.server``), under ``node``. It turns
the engine's messages into frames (core frame codec + ``fastraft.codec``) and back, and hands
only validated messages to the node. It never steps the engine itself.

Connections are one-directional, as in etcd's stream transport: node A sends to node B over the
connection A dialled; B's replies travel over the connection B dialled to A. A dialler opens
with ``[P_HELLO, version, cluster, from, to]``; the acceptor answers ``P_WELCOME`` or
``P_REFUSE`` (wrong cluster, a node removed from the cluster, version mismatch), logs the
refusal once and closes. Any other node id is welcome: the membership changes at runtime
(``members``), and a node being added is dialled by the leader before it knows its peers.
The peers this node dials follow the configuration (``set_peers``); a node refused because it
was removed is told so (``node.removed``) and stops.

- When the last connection a peer dialled to us closes (and not because we closed it for
  cause, nor because this node stops), the node is told (``Node.on_peer_closed``): if that
  peer led, it may have died, and the engine campaigns at once (rule 9 of ``raft.py``).
- Dialling reconnects with jittered exponential backoff (50 ms .. 2 s); a peer that dials us
  while our connection to it is down is redialled at once (it has just restarted). Messages
  for a peer that is not connected are dropped (Raft retransmits) and the engine is told once
  that the peer is unreachable.
- Send buffers are bounded: above ``high_water`` bytes queued in the kernel-side transport,
  heartbeats and appends are dropped (the engine probes again), so memory cannot grow without
  limit behind a slow or stopped peer; votes and responses are always queued.
- A snapshot travels as ``P_SNAP_CHUNK`` frames (the snapshot file's bytes, in order), written
  by a task that waits for the socket to drain between chunks, so heartbeats and appends keep
  flowing between the chunks; the SNAP message itself follows the last chunk. The receiver
  writes the chunks to a part file, verifies the whole file (checksum included), adopts it
  into its snapshot store, builds the state machine it holds (when the store offers
  ``prepare``: the backends' store, so that installing it only swaps it in, ``backends``),
  and only then steps the SNAP message into its engine. Its file work (open, write, fsync,
  verify, adopt, build) runs on one worker thread, in the order the frames came, so the
  loop keeps serving meanwhile. Until the SNAP is stepped, what its sender sends after it
  waits, in order (an append must not overtake the snapshot it follows), except
  heartbeats of the same term, stepped at once: they keep the leader known (no election
  while a large snapshot is verified and built) and change nothing else (their commit is
  capped by what the leader knows we hold). A failure to store the file stops the node, as any other
  storage failure.
- With ``[tls]`` (``tls=`` the accepting and dialling contexts) both directions are mutual
  TLS: the accepting side runs its handshakes in ``tlsport.TLSListener`` (refusals logged
  with their reason), the dialling side checks that the peer's certificate names the address
  dialled. ``set_tls`` swaps the contexts (SIGHUP) for new connections only.
- Any bad input on an accepted connection (garbage, an oversized or malformed frame, a
  message that decodes but fails validation, a wrong sender) closes that connection with one
  log line; the node and its other connections carry on.
- Floods (``accept``): accepts are rate-limited per source address (a token bucket, 32 then
  16 a second, counting the connections that do not open with a valid hello: a peer's
  token is given back); a connection over the limit is closed at once unless its first
  bytes are a hello, and the source is logged once a minute. Until its hello, a connection
  gets the least work: its first frame may announce at most ``HELLO_MAX`` bytes, nothing
  but the hello is decoded, it is closed after ``HANDSHAKE_TIMEOUT`` seconds, and at most
  ``MAX_WAITING`` wait at once (a new one closes the oldest), so silent connections never
  keep a peer out. The cap ``max_inbound`` counts the connections past their hello.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from .. import codec
from ..core import FrameDecoder, encode_frame
from ..datadir import remove_quietly
from ..errors import (
    CorruptRecordError,
    FrameTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
    StorageError,
)
from ..raft.messages import Message, MsgType
from ..tls import handshake_refusal, tls_on_plain_port
from .accept import PlainListener, SourceLimiter
from .logs import LogEvery, LogOnce, reason_kind
from .stats import NodeStats
from .tlsport import TLSListener
from .members import REMOVED_PREFIX

__all__ = ["PeerTransport"]

log = logging.getLogger("fastraft.peers")

_DROPPABLE = frozenset({MsgType.HEARTBEAT, MsgType.APP})
HANDSHAKE_TIMEOUT = 5.0
SNAP_CHUNK = 256 * 1024
PART_PREFIX = "incoming-"
#: Bytes of frames held for one peer while its snapshot is adopted, past which its
#: connections stop being read until the snapshot is stepped.
HELD_BYTES = 16 << 20
#: The most a hello frame's body may announce (a cluster name of 256 characters and a peer
#: address of 300 take less than 2 KiB); a larger first frame closes the connection.
HELLO_MAX = 4096
#: Accepted connections without a hello yet, at once; a new one closes the oldest.
MAX_WAITING = 64


def _set_keepalive(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError:
        pass


class PeerTransport:
    """All peer connections of one node: it sends the engine's messages (``send``) and hands
    the node every validated message received, in the order each peer sent them.

    ``node`` must offer ``on_peer_message(m)`` (returns why ``m`` is refused, or None),
    ``on_unreachable(peer_id)``, ``on_snapshot_sent(peer_id, ok)`` and ``fatal(reason)``
    (interfaces.PeerHandler); ``snaps`` is the node's SnapshotStore (received snapshots are
    adopted into it; their part files are written in its directory; its ``prepare(path,
    meta)``, when it has one, is called on the worker thread after each adoption).
    ``peers`` maps every other node's id to its ``(host, port)``; ``max_frame`` bounds a
    received frame."""

    def __init__(self, node, node_id: int, cluster: str, listen: tuple[str, int],
                 peers: dict, snaps, max_frame: int, high_water: int = 32 << 20,
                 advertise: str = "", tls: tuple | None = None) -> None:
        self.node = node
        self.id = node_id
        self.cluster = cluster
        self.listen = listen
        self.advertise = advertise          # our peer address, told in each hello
        #: ([tls]) ssl contexts (accepting, dialling): mutual TLS with the peer CA, or None
        self.tls_accept, self.tls_dial = tls if tls is not None else (None, None)
        self.peers = dict(peers)            # id -> (host, port), self excluded
        self.snaps = snaps
        self.max_frame = max(max_frame, 2 * SNAP_CHUNK)
        self.high_water = high_water
        self.once = LogOnce(log)
        self.stats = NodeStats()            # the node's, once attached (bytes, heartbeats)
        self._out = {pid: _Outbound(self, pid, addr) for pid, addr in self.peers.items()}
        self._inbound: set = set()
        #: Connections past their hello allowed at once (peers reconnect; the rest is a
        #: flood of spoofed hellos).
        self.max_inbound = 4 * len(self.peers) + 32
        #: Accepted connections still without a hello, oldest first (_Inbound -> None),
        #: and those welcomed.
        self._waiting: dict = {}
        self._welcomed: set = set()
        self.max_waiting = MAX_WAITING
        #: Accepts per source address (module docstring); shared with the TLS listener.
        self.limiter = SourceLimiter()
        self.evictions = LogEvery(log)
        self._started = False
        self._server = None
        self._closed = False
        #: peer id -> _Held: what that peer sent after a SNAP whose snapshot is being adopted.
        self._held: dict[int, _Held] = {}
        self._disk = None                   # the file worker (started by the first use)
        self._disk_down = False
        self._clean_parts()

    def _clean_parts(self) -> None:
        d = self.snaps.directory
        for name in os.listdir(d):
            if name.startswith(PART_PREFIX):
                remove_quietly(os.path.join(d, name))

    async def start(self) -> None:
        """Listen for peers and start dialling every one of them (for ever, with backoff)."""
        host, port = self.listen
        if self.tls_accept is None:
            self._server = PlainListener("peer", lambda: _Inbound(self), self.limiter,
                                         _probe_hello, backlog=128)
        else:
            self._server = TLSListener("peer", lambda: _Inbound(self), self.tls_accept,
                                       HANDSHAKE_TIMEOUT, backlog=128, limiter=self.limiter)
        await self._server.start(host, port)
        self._started = True
        for out in self._out.values():
            out.start()

    def set_tls(self, tls: tuple) -> None:
        """New ssl contexts (accepting, dialling), e.g. certificates re-read on SIGHUP: new
        connections use them, open ones keep theirs."""
        self.tls_accept, self.tls_dial = tls
        if isinstance(self._server, TLSListener):
            self._server.context = self.tls_accept

    def set_peers(self, peers: dict) -> None:
        """Dial exactly these peers (id -> (host, port)) from now on: new ones are dialled,
        the connections to those gone (or moved) are closed."""
        peers = {pid: addr for pid, addr in peers.items() if pid != self.id}
        if peers == self.peers:
            return
        for pid, out in list(self._out.items()):
            if peers.get(pid) != out.addr:
                out.close()
                del self._out[pid]
                self.once.forget(("dial", pid))
                self.once.forget(("dial-tls", pid))
                log.info("no longer dialling node %d", pid)
        for pid, addr in peers.items():
            if pid not in self._out:
                out = self._out[pid] = _Outbound(self, pid, addr)
                if self._started and not self._closed:
                    out.start()
                log.info("dialling node %d at %s:%d", pid, addr[0], addr[1])
        self.peers = peers
        self.max_inbound = 4 * len(peers) + 32

    def send(self, msgs) -> None:
        """Send the engine's messages, in order per peer, one write per peer."""
        batches: dict = {}
        for m in msgs:
            batches.setdefault(m.to, []).append(m)
        for pid, ms in batches.items():
            out = self._out.get(pid)
            if out is None:
                out = self._dial_on_demand(pid)
                if out is None:
                    continue
            out.send(ms)

    def _dial_on_demand(self, pid: int):
        """A connection to a node the engine answers but this node does not dial (not in
        its configuration yet: a leader met while joining or catching up), if its address
        is known (``node.peer_address``); None otherwise (the message is dropped)."""
        addr = self.node.peer_address(pid)
        if addr is None or self._closed:
            self.once(("unknown-dest", pid), logging.WARNING,
                      "no address known for node %d: messages to it are dropped", pid)
            return None
        out = self._out[pid] = _Outbound(self, pid, addr)
        if self._started:
            out.start()
        log.info("dialling node %d at %s:%d (not in this node's configuration)", pid,
                 addr[0], addr[1])
        return out

    def connected(self, pid: int) -> bool:
        """Whether the connection this node dialled to ``pid`` is up (handshake done)."""
        out = self._out.get(pid)
        return out is not None and out.ready

    def run_disk(self, fn, *args) -> asyncio.Future:
        """``fn(*args)`` on the worker thread of the received snapshots' file work, after
        everything submitted before it (one thread: submission order is execution order).
        Once the transport is closed it runs at once, on the loop."""
        loop = asyncio.get_running_loop()
        if self._disk_down:
            fut = loop.create_future()
            try:
                fut.set_result(fn(*args))
            except Exception as exc:
                fut.set_exception(exc)
            return fut
        if self._disk is None:
            self._disk = ThreadPoolExecutor(1, thread_name_prefix=f"fastraft-snap-in-{self.id}")
        return loop.run_in_executor(self._disk, fn, *args)

    def abort(self) -> None:
        """Drop every connection at once and stop dialling (the node is failing)."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for out in self._out.values():
            out.close()
        for conn in list(self._inbound):
            conn.abort()

    async def close(self) -> None:
        """Drop every connection, stop dialling and listening. File work already submitted
        (a snapshot being adopted) finishes on its thread."""
        self.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._disk_down = True
        if self._disk is not None:
            self._disk.shutdown(wait=False)


def _wake_up(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class _Outbound(asyncio.Protocol):
    """The connection this node dials to one peer (reconnecting for ever)."""

    def __init__(self, tr: PeerTransport, pid: int, addr: tuple[str, int]) -> None:
        self.tr = tr
        self.pid = pid
        self.addr = addr
        self.transport = None
        self.ready = False
        self._task = None
        self._lost: asyncio.Future | None = None
        self._welcome: asyncio.Future | None = None
        self._decoder = FrameDecoder(1 << 16)
        self._drained: asyncio.Event | None = None
        self._told_unreachable = False
        self._snap_task = None
        self._snap_for = None        # (term, index) being streamed
        self._nap: asyncio.Future | None = None   # the wait before the next dial
        self._poked = False                       # ... cut short: the peer is back

    # -- connection management ----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._snap_task is not None:
            self._snap_task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def poke(self) -> None:
        """The peer just dialled us: if this connection is down and waiting to redial,
        redial now (its votes and answers would be dropped until then)."""
        nap = self._nap
        if not self.ready and nap is not None and not nap.done():
            self._poked = True
            nap.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.05
        while not self.tr._closed:
            try:
                self._lost = loop.create_future()
                self._welcome = loop.create_future()
                # A handshake that timed out may still fail later: mark it retrieved.
                self._welcome.add_done_callback(
                    lambda f: f.cancelled() or f.exception())
                self._decoder = FrameDecoder(1 << 16)
                self._drained = asyncio.Event()
                self._drained.set()
                host, port = self.addr
                kw = {} if self.tr.tls_dial is None else {
                    "ssl": self.tr.tls_dial, "server_hostname": host,
                    "ssl_handshake_timeout": HANDSHAKE_TIMEOUT}
                await asyncio.wait_for(loop.create_connection(lambda: self, host, port, **kw),
                                       HANDSHAKE_TIMEOUT)
                await asyncio.wait_for(asyncio.shield(self._welcome), HANDSHAKE_TIMEOUT)
                self.ready = True
                self._told_unreachable = False
                delay = 0.05
                log.info("connected to node %d at %s:%d", self.pid, host, port)
                self.tr.once.forget(("dial", self.pid))
                self.tr.once.forget(("dial-tls", self.pid))
                await self._lost
                log.info("connection to node %d lost", self.pid)
            except asyncio.CancelledError:
                raise
            except ssl.SSLError as exc:
                self.tr.once(("dial-tls", self.pid), logging.WARNING,
                             "TLS handshake with node %d at %s:%d failed: %s (retrying)",
                             self.pid, self.addr[0], self.addr[1],
                             handshake_refusal(exc, HANDSHAKE_TIMEOUT))
            except (OSError, asyncio.TimeoutError, RemoteProtocolError) as exc:
                self.tr.once(("dial", self.pid), logging.INFO,
                             "cannot reach node %d at %s:%d: %s (retrying)", self.pid,
                             self.addr[0], self.addr[1], exc or type(exc).__name__)
            finally:
                self.ready = False
                if self.transport is not None:
                    self.transport.abort()
                    self.transport = None
            # A plain future and a timer, not wait_for(): Python 3.11's wait_for can swallow
            # a cancellation that races with its timeout (the node could then never stop).
            self._poked = False
            nap = self._nap = loop.create_future()
            timer = loop.call_later(delay * (0.5 + random.random()), _wake_up, nap)
            try:
                await nap
            finally:
                timer.cancel()
                self._nap = None
            delay = 0.05 if self._poked else min(delay * 2, 2.0)

    def connection_made(self, transport) -> None:
        self.transport = transport
        _set_keepalive(transport)
        transport.set_write_buffer_limits(high=4 << 20)
        transport.write(encode_frame(codec.encode_hello(self.tr.cluster, self.tr.id,
                                                        self.pid, self.tr.advertise)))

    def data_received(self, data) -> None:
        try:
            for body in self._decoder.feed(data):
                frame = codec.decode_peer(body, 1 << 16)
                if self._welcome.done():
                    raise RemoteProtocolError("unexpected frame after the handshake")
                if frame.kind == codec.P_WELCOME:
                    if frame.version != codec.PROTOCOL_VERSION or frame.node_id != self.pid:
                        raise RemoteProtocolError(
                            f"welcome from node {frame.node_id} (protocol {frame.version}), "
                            f"expected node {self.pid} (protocol {codec.PROTOCOL_VERSION})")
                    self._welcome.set_result(True)
                elif frame.kind == codec.P_REFUSE:
                    if frame.reason.startswith(REMOVED_PREFIX):
                        self.tr.node.removed(f"node {self.pid} refused it: {frame.reason}")
                    raise RemoteProtocolError(f"node {self.pid} refused us: {frame.reason}")
                else:
                    raise RemoteProtocolError(
                        f"unexpected frame kind {frame.kind} in handshake")
        except (RemoteProtocolError, FrameTooLarge) as exc:
            if not self._welcome.done():
                self._welcome.set_exception(exc)
            else:
                self.tr.once(("out-bad", self.pid, reason_kind(str(exc))), logging.WARNING,
                             "closing connection to node %d: %s", self.pid, exc)
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.ready = False
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(ConnectionError("closed during the handshake"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._drained is not None:
            self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    # -- sending ------------------------------------------------------------------------

    def send(self, msgs: list) -> None:
        if not self.ready:
            if not self._told_unreachable:
                self._told_unreachable = True
                self.tr.node.on_unreachable(self.pid)
            for m in msgs:
                if m.type == MsgType.SNAP:
                    self.tr.node.on_snapshot_sent(self.pid, False)
            return
        congested = self.transport.get_write_buffer_size() > self.tr.high_water
        if not congested:
            self._told_unreachable = False
        frames = []
        for m in msgs:
            t = m.type
            if t == MsgType.SNAP:
                self._start_snapshot(m)
                continue
            if congested and t in _DROPPABLE:
                continue
            if t == MsgType.HEARTBEAT and not m.context:     # the periodic ones: timed
                self.tr.stats.heartbeat_sent(self.pid, asyncio.get_running_loop().time())
            frames.append(encode_frame(codec.encode_message(m)))
        if congested and not self._told_unreachable:
            self._told_unreachable = True
            self.tr.node.on_unreachable(self.pid)
        if frames:
            data = b"".join(frames) if len(frames) > 1 else frames[0]
            self.transport.write(data)
            sent = self.tr.stats.sent
            sent[self.pid] = sent.get(self.pid, 0) + len(data)

    def _start_snapshot(self, m: Message) -> None:
        meta = m.snapshot.meta
        if m.snapshot.data is None:     # no file for it yet (the node is making one)
            self.tr.once(("no-snap-file", meta.index), logging.INFO,
                         "node %d needs snapshot %d@%d, which has no file yet", self.pid,
                         meta.index, meta.term)
            self.tr.node.on_snapshot_sent(self.pid, False)
            return
        key = (meta.term, meta.index)
        if self._snap_task is not None and not self._snap_task.done():
            if self._snap_for == key:
                return       # already streaming this one
            self._snap_task.cancel()
        self._snap_for = key
        self._snap_task = asyncio.get_running_loop().create_task(self._stream(m))

    async def _stream(self, m: Message) -> None:
        path = m.snapshot.data
        meta = m.snapshot.meta
        ok = False
        try:
            transport = self.transport
            size = os.path.getsize(path)
            log.info("sending snapshot %d@%d (%d bytes) to node %d", meta.index, meta.term,
                     size, self.pid)
            with open(path, "rb") as f:
                off = 0
                while off < size:
                    data = f.read(SNAP_CHUNK)
                    if not data:
                        raise OSError(f"snapshot {path} shrank while being sent")
                    if self.transport is not transport or not self.ready:
                        raise ConnectionError("connection lost while sending a snapshot")
                    chunk = encode_frame(
                        codec.encode_snap_chunk(meta.term, meta.index, off, data))
                    transport.write(chunk)
                    sent = self.tr.stats.sent
                    sent[self.pid] = sent.get(self.pid, 0) + len(chunk)
                    off += len(data)
                    await self._drained.wait()
            if self.transport is not transport or not self.ready:
                raise ConnectionError("connection lost while sending a snapshot")
            transport.write(encode_frame(codec.encode_message(m, size)))
            ok = True
            log.info("sent snapshot %d@%d to node %d", meta.index, meta.term, self.pid)
        except asyncio.CancelledError:
            raise
        except (OSError, ConnectionError) as exc:
            log.warning("sending snapshot %d@%d to node %d failed: %s", meta.index,
                        meta.term, self.pid, exc)
        finally:
            self.tr.node.on_snapshot_sent(self.pid, ok)


class _Inbound(asyncio.Protocol):
    """A connection a peer dialled to us: handshake, then messages and snapshot chunks."""

    def __init__(self, tr: PeerTransport) -> None:
        self.tr = tr
        self.transport = None
        self.peer_id = None          # set by a valid hello
        self.remote = "?"
        self.host = "?"
        self.closed_for_cause = False   # rejected, or its snapshot could not be stored
        self._decoder = FrameDecoder(tr.max_frame)
        self._head = b""            # the first frame's length prefix, until it is checked
        self._timer = None
        self._part: _Part | None = None     # the snapshot file in transit

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.host = peer[0]
            self.remote = f"{peer[0]}:{peer[1]}"
        tr = self.tr
        if tr._closed:
            transport.abort()           # handed over while the transport closed
            return
        if len(tr._waiting) >= tr.max_waiting:
            next(iter(tr._waiting))._evict()
        tr._inbound.add(self)
        tr._waiting[self] = None
        self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT,
                                                            self._handshake_timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _evict(self) -> None:
        """Too many connections wait for their hello: this one, the oldest, goes."""
        tr = self.tr
        tr._waiting.pop(self, None)
        tr.evictions(("evict", self.host), logging.WARNING,
                     "closing the oldest peer connection still without a hello (from %s): "
                     "%d connections were waiting for theirs", self.remote, tr.max_waiting)
        self.transport.abort()

    def _handshake_timeout(self) -> None:
        if self.peer_id is None:
            self.tr.once(("idle", self.host), logging.WARNING,
                         "closing peer connection from %s: no handshake within %.0f s",
                         self.remote, HANDSHAKE_TIMEOUT)
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        tr = self.tr
        tr._inbound.discard(self)
        tr._waiting.pop(self, None)
        tr._welcomed.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._drop_part()
        pid = self.peer_id
        if pid is not None and not self.closed_for_cause and not tr._closed and \
                not any(c.peer_id == pid for c in tr._inbound):
            tr.node.on_peer_closed(pid)     # its last connection to us: maybe it died

    def _reject(self, reason: str) -> None:
        who = f"node {self.peer_id}" if self.peer_id is not None else self.remote
        host = self.remote.rsplit(":", 1)[0]
        self.tr.once(("in-bad", self.peer_id, host, reason_kind(reason)), logging.WARNING,
                     "closing peer connection from %s: %s", who, reason)
        self.closed_for_cause = True
        self.transport.abort()

    def _store_failed(self, exc: BaseException) -> None:
        # Writing a received snapshot failed (disk full, IO error): the same rule as any
        # other storage failure, the node stops.
        self.closed_for_cause = True
        self.transport.abort()
        self.tr.node.fatal(f"cannot store a snapshot from node {self.peer_id}: {exc}")

    def data_received(self, data) -> None:
        if self.peer_id is not None:
            received = self.tr.stats.received
            received[self.peer_id] = received.get(self.peer_id, 0) + len(data)
        try:
            if self._head is not None:
                self._check_first_frame(data)
            bodies = self._decoder.feed(data)
        except FrameTooLarge as exc:
            self._reject(str(exc) + tls_on_plain_port(exc.size))
            return
        for body in bodies:
            try:
                frame = codec.decode_peer(body, self.tr.max_frame)
                if self.peer_id is None:
                    self._hello(frame)
                else:
                    self.take(frame, len(body))
            except RemoteProtocolError as exc:
                self._reject(str(exc))
                return
            if self.transport.is_closing():
                return

    def _check_first_frame(self, data) -> None:
        """Before the hello: FrameTooLarge when the first frame announces more than a hello
        may (``HELLO_MAX``), as soon as its length prefix is in (its body is never
        buffered)."""
        self._head += bytes(data[:4 - len(self._head)])
        if len(self._head) == 4:
            size = int.from_bytes(self._head, "little")
            self._head = None
            if size > HELLO_MAX:
                raise FrameTooLarge(size, HELLO_MAX)

    def _hello(self, frame) -> None:
        if frame.kind != codec.P_HELLO:
            raise RemoteProtocolError("the first frame must be a hello")
        tr = self.tr
        reason = None
        if frame.version != codec.PROTOCOL_VERSION:
            reason = f"protocol version {frame.version}, this node speaks " \
                     f"{codec.PROTOCOL_VERSION}"
        elif frame.cluster != tr.cluster:
            reason = f"cluster {frame.cluster!r}, this node belongs to {tr.cluster!r}"
        elif frame.to != tr.id:
            reason = f"hello addressed to node {frame.to}, this is node {tr.id}"
        else:
            reason = tr.node.peer_refused(frame.frm, frame.addr)
        if reason is not None:
            tr.once(("refuse", self.remote.rsplit(":", 1)[0], reason_kind(reason)),
                    logging.WARNING, "refusing peer connection from %s: %s", self.remote, reason)
            self.transport.write(encode_frame(codec.encode_refuse(reason)))
            self.transport.close()
            return
        tr._waiting.pop(self, None)
        if len(tr._welcomed) >= tr.max_inbound:
            tr.once(("inbound-cap",), logging.WARNING,
                    "refusing peer connection from %s (node %d): %d connections already "
                    "open", self.remote, frame.frm, len(tr._welcomed))
            self.transport.abort()
            return
        tr._welcomed.add(self)
        self.peer_id = frame.frm
        self._timer.cancel()
        tr.limiter.give_back(self.host)     # a peer: its connection does not count
        _set_keepalive(self.transport)
        self.transport.write(encode_frame(codec.encode_welcome(tr.id)))
        out = tr._out.get(frame.frm)
        if out is not None:
            out.poke()

    def take(self, frame, size: int) -> None:
        """Handle a frame received after the handshake, or hold it (with its body's
        ``size``) while a snapshot of its sender is being adopted. RemoteProtocolError when
        it is invalid (the caller closes the connection)."""
        if self.tr._held:
            held = self.tr._held.get(self.peer_id)
            if held is not None and not held.lets_through(frame):
                held.add(self, frame, size)
                return
        if frame.kind == codec.P_MSG:
            m = frame.message
            if m.frm != self.peer_id or m.to != self.tr.id:
                raise RemoteProtocolError(
                    f"message from {m.frm} to {m.to} on the connection of node "
                    f"{self.peer_id} to {self.tr.id}")
            if frame.snap is not None:
                self._adopt(frame)
                return
            self._step(m)
        elif frame.kind == codec.P_SNAP_CHUNK:
            self._chunk(frame)
        else:
            raise RemoteProtocolError(f"unexpected frame kind {frame.kind} after the handshake")

    def _step(self, m: Message) -> None:
        reason = self.tr.node.on_peer_message(m)
        if reason is not None:
            raise RemoteProtocolError(f"invalid {m.type.name} message: {reason}")

    # -- receiving a snapshot -------------------------------------------------------------

    def _disk(self, fn, *args) -> asyncio.Future:
        fut = self.tr.run_disk(fn, *args)
        fut.add_done_callback(self._disk_done)
        return fut

    def _disk_done(self, fut: asyncio.Future) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if isinstance(exc, (OSError, StorageError)):
            self._store_failed(exc)
        elif exc is not None and not isinstance(exc, (LocalProtocolError, CorruptRecordError)):
            raise exc       # a bug: the loop's exception handler logs it

    def _drop_part(self) -> None:
        if self._part is not None:
            part, self._part = self._part, None
            self._disk(_remove_part, part)

    def _chunk(self, c: codec.SnapshotChunk) -> None:
        if c.offset == 0:
            self._drop_part()
            path = os.path.join(self.tr.snaps.directory,
                                f"{PART_PREFIX}{self.peer_id}-{c.term}-{c.index}.part")
            self._part = _Part(c.term, c.index, path)
            self._disk(_open_part, self._part)
        part = self._part
        if part is None or (part.term, part.index, part.received) != (c.term, c.index,
                                                                      c.offset):
            self._drop_part()
            raise RemoteProtocolError(f"snapshot chunk {c.index}@{c.term} at offset "
                                      f"{c.offset} out of order")
        part.received += len(c.data)
        self._disk(_write_part, part, c.data)

    def _adopt(self, frame: codec.PeerMessage) -> None:
        """A SNAP message: once its file is complete, verify and adopt it off the loop, then
        step the message; what its sender sends meanwhile is held (module docstring)."""
        meta = frame.snap.meta
        part = self._part
        if part is None or (part.term, part.index, part.received) != (meta.term, meta.index,
                                                                      frame.snap.nbytes):
            self._drop_part()
            raise RemoteProtocolError(f"SNAP {meta.index}@{meta.term} without its complete "
                                      f"data")
        self._part = None
        held = self.tr._held[self.peer_id] = _Held(frame.message.term)
        prepare = None if self.tr._disk_down else getattr(self.tr.snaps, "prepare", None)
        fut = self._disk(_adopt_part, part, self.tr.snaps, meta, prepare)
        fut.add_done_callback(lambda f: self._adopted(frame, f, held))

    def _adopted(self, frame: codec.PeerMessage, fut: asyncio.Future, held: _Held) -> None:
        if self.tr._held.get(self.peer_id) is held:
            del self.tr._held[self.peer_id]
        if self.tr._closed:
            return          # the node stops: nothing more is stepped
        exc = None if fut.cancelled() else fut.exception()
        meta = frame.snap.meta
        if isinstance(exc, LocalProtocolError):     # older than a snapshot we hold
            log.info("ignoring snapshot %d@%d from node %d: %s", meta.index, meta.term,
                     self.peer_id, exc)
        elif isinstance(exc, CorruptRecordError):
            self._reject(f"received snapshot is damaged: {exc}")
        elif exc is None and not fut.cancelled() and not self.closed_for_cause:
            try:
                self._step(frame.with_snapshot(fut.result()))
            except RemoteProtocolError as bad:
                self._reject(str(bad))
        # (a storage failure was reported by _disk_done: the node stops)
        held.release()


def _probe_hello(first: bytes) -> bool | None:
    """Whether a connection whose first bytes are ``first`` opens with a hello frame
    (``accept.PlainListener``'s probe): None while that frame is incomplete."""
    if len(first) < 4:
        return None
    size = int.from_bytes(first[:4], "little")
    if size > HELLO_MAX:
        return False
    if len(first) < 4 + size:
        return None
    try:
        return codec.decode_peer(first[4:4 + size], HELLO_MAX).kind == codec.P_HELLO
    except RemoteProtocolError:
        return False


class _Held:
    """What one peer sent after a SNAP message whose snapshot is being adopted, in order,
    with the connection each frame came on; released once the SNAP is stepped."""

    __slots__ = ("term", "frames", "nbytes", "paused")

    def __init__(self, term: int) -> None:
        self.term = term            # the SNAP's: heartbeats of this term pass at once
        self.frames: deque = deque()
        self.nbytes = 0
        self.paused: set = set()

    def lets_through(self, frame) -> bool:
        return (frame.kind == codec.P_MSG and frame.message.type == MsgType.HEARTBEAT
                and frame.message.term == self.term)

    def add(self, conn: _Inbound, frame, size: int) -> None:
        self.frames.append((conn, frame, size))
        self.nbytes += size
        if self.nbytes > HELD_BYTES and conn not in self.paused:
            self.paused.add(conn)
            conn.transport.pause_reading()

    def release(self) -> None:
        """Hand every held frame to its connection, in order (those of a connection closed
        for cause are dropped); a SNAP among them holds the rest again."""
        for conn in self.paused:
            if not conn.transport.is_closing():
                conn.transport.resume_reading()
        while self.frames:
            conn, frame, size = self.frames.popleft()
            if conn.closed_for_cause:
                continue
            try:
                conn.take(frame, size)
            except RemoteProtocolError as exc:
                conn._reject(str(exc))


class _Part:
    """A snapshot file being received. The loop owns ``received`` (the bytes accepted, in
    order); the file worker owns ``fd`` and ``failed``."""

    __slots__ = ("term", "index", "path", "received", "fd", "failed")

    def __init__(self, term: int, index: int, path: str) -> None:
        self.term = term
        self.index = index
        self.path = path
        self.received = 0
        self.fd = None
        self.failed = False


# The file work of a received snapshot, run by PeerTransport.run_disk on its worker thread
# (one at a time, in the order submitted).

def _open_part(part: _Part) -> None:
    try:
        part.fd = os.open(part.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        part.failed = True
        raise


def _write_part(part: _Part, data: bytes) -> None:
    if part.failed:
        return              # reported once, by the step that failed
    try:
        view = memoryview(data)
        while view:
            n = os.write(part.fd, view)
            view = view[n:]
    except OSError:
        part.failed = True
        raise


def _close_fd(part: _Part) -> None:
    if part.fd is not None:
        fd, part.fd = part.fd, None
        try:
            os.close(fd)
        except OSError:
            pass


def _remove_part(part: _Part) -> None:
    _close_fd(part)
    remove_quietly(part.path)


def _adopt_part(part: _Part, snaps, meta, prepare=None) -> str:
    """fsync the complete part file, then ``snaps.adopt`` it: its new path. The part is
    removed when the snapshot is damaged or older than one held (the exception passes on).
    Then ``prepare(path, meta)``, if given, builds the state it holds for the install (it
    never raises: a failure is reported by the install)."""
    if part.failed:
        _close_fd(part)
        raise StorageError(f"an earlier write of {part.path} failed")
    os.fsync(part.fd)
    fd, part.fd = part.fd, None
    os.close(fd)
    try:
        path = snaps.adopt(part.path, meta)
    except (LocalProtocolError, CorruptRecordError):
        remove_quietly(part.path)
        raise
    if prepare is not None:
        prepare(path, meta)
    return path
