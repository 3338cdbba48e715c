"""The node: one event loop driving the Raft engine, storage, state machine and transports.

Place in the architecture: the heart of ``fastraft.server``. ``wiring.build_node`` builds its
parts and hands them in: the engine (a ``RawNode`` of ``fastraft.raft``), the storage backend
(``backends``: the log store, snapshot files and the state machine of ``fastraft.statemachine``),
the rejoin marker (``rejoin``) and the two transports (``peers``, ``clients``; their interfaces
are in ``interfaces``). The node keeps the Ready loop and the wiring between its own two parts:
``requests`` (client requests and their answers) and ``snapshots`` (taking and installing
them). Inputs (ticks, peer messages, client requests) arrive as callbacks; each one marks the
node dirty and one pass per loop turn (``_process``) does the Ready cycle::

    propose the client writes gathered this turn as ONE batch; start one ReadIndex round
    while the engine has a Ready:
        send rd.messages                     (the leader's appends leave before its fsync:
                                              thesis §10.2.1, the disk and the network overlap)
        persist snapshot mark, entries, hard state; ONE fsync if rd.must_sync (group commit)
        send rd.persisted_messages           (votes and acknowledgements: only once durable)
        install rd.snapshot, apply rd.committed, answer the clients waiting on those entries
        serve the reads that became safe; answer dropped reads NotLeader
        advance

A write or fsync failure is fatal: the node logs why and stops without answering anything
that is not durable (``fatal``). A graceful stop (``shutdown``) hands leadership over first
(``shutdown.hand_over_leadership``).

The node and its transports count what the metrics report in one ``stats.NodeStats`` (leader
changes, fsync times, peer traffic, heartbeat round trips, when each peer was last heard
from); with a ``metrics`` address it starts the listener (``metrics``) after its ports, and
``backup.Backups`` serves ``fastraft snapshot save``. SIGHUP re-reads the TLS files
(``reload_tls``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from time import perf_counter

from .. import __version__, tls
from ..config import format_address
from ..core import IMPLEMENTATION
from ..errors import ConfigError, FatalError, StorageError
from ..raft import LEADER, ROLE_NAMES
from ..raft.messages import MsgType
from .backup import Backups
from .members import MemberRequests
from .requests import Requests
from .shutdown import hand_over_leadership
from .snapshots import Snapshots
from .stats import NodeStats

__all__ = ["Node", "FatalError"]

log = logging.getLogger("fastraft.node")


class Node:
    """One node's event loop: it steps the engine with ticks, peer messages and the gathered
    client requests, and runs the Ready cycle (persist, send, apply, answer) in one pass per
    loop turn. Nothing is acknowledged before it is durable (with ``fsync`` on); after a
    storage failure nothing more is processed. Built by ``wiring.build_node``."""

    def __init__(self, cfg, node_id: int, raw, backend, rejoin, members, *, limits,
                 loop_name: str = "asyncio", need_snapshot: bool = False) -> None:
        t = cfg.tuning
        self.cfg = cfg
        self.id = node_id
        self.spec = cfg.node(node_id)
        self.tuning = t
        self.loop_name = loop_name
        self.fsync = t.fsync
        #: Send the leader's appends before its own fsync (thesis §10.2.1); the tuning key
        #: leader_sync_first turns it off, only to measure what it brings (bench/README.md).
        self.early_send = not t.leader_sync_first
        self.raw = raw
        self.backend = backend
        self.store = backend.store
        self.rejoin = rejoin
        self.members = members
        self.requests = Requests(
            node_id, raw, backend.machine, limits=limits, max_frame=t.max_frame_bytes,
            max_pending=t.max_pending, addr_of=members.client_addrs,
            kick=self._kick, status=self.status_fields, watch_history=t.watch_history,
            watch_buffer_bytes=t.watch_buffer_bytes)
        self.member_requests = MemberRequests(raw, members,
                                              not_leader=self.requests.not_leader,
                                              kick=self._kick)
        self.requests.member_requests = self.member_requests
        self.snapshots = Snapshots(
            raw, backend, meta_at=functools.partial(members.meta_at, raw),
            threshold=t.snapshot_threshold,
            keep_entries=t.snapshot_keep_entries, fsync=t.fsync, fatal=self.fatal,
            need_snapshot=need_snapshot)
        self.requests.backups = Backups(raw, backend, meta_at=self.snapshots.meta_at,
                                        cluster=cfg.cluster_name, node_id=node_id)
        self.peers = None
        self.clients = None
        self._scheduled = False
        self._stopping = False
        self._dead = False              # a storage failure: nothing more is processed
        self.stopped: asyncio.Future | None = None
        self.exit_code = 0
        self._tick_handle = None
        #: what the metrics count (``stats``); ``now``: loop time of the last tick
        self.stats = NodeStats()
        self.snapshots.stats = self.stats
        self.now = 0.0
        self._lead = 0
        self.started = False            # listening and serving (``/ready``)
        self.metrics = None             # the metrics listener ([[node]] metrics), if any

    def attach(self, peers, clients) -> None:
        """Hand the node its transports (``interfaces.Peers`` / ``interfaces.Clients``),
        built with the node (and its ``requests``) as their handlers; before ``start``."""
        self.peers = peers
        self.clients = clients
        peers.stats = clients.stats = self.stats

    # -- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on both ports, start ticking (and campaign at once when alone)."""
        loop = asyncio.get_running_loop()
        self.stopped = loop.create_future()
        metrics_addr = self.spec.metrics
        self.clients.timed = metrics_addr is not None
        await self.peers.start()
        try:
            await self.clients.start()
            if metrics_addr is not None:
                from .metrics import MetricsServer     # prometheus_client: when asked for
                self.metrics = MetricsServer(self, metrics_addr)
                self.metrics.start()
        except BaseException:
            # A port that cannot be bound: close what listens and dials already, so that
            # the process can exit (the caller reports the error).
            await self.clients.close()
            await self.peers.close()
            raise
        self._tick_s = self.tuning.tick_ms / 1000.0
        self._next_tick = loop.time() + self._tick_s
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        self.now = loop.time()
        self.started = True
        client = self.spec.client_addr
        if self.spec.client_listen is not None:
            client = f"{format_address(self.spec.client_bind)} (advertised {client})"
        log.info("node %d of cluster %r serving clients on %s, peers on %s (core %s, loop "
                 "%s, storage %s, fsync %s)", self.id, self.cfg.cluster_name,
                 client, format_address(self.spec.raft_bind), IMPLEMENTATION,
                 self.loop_name, self.backend.name,
                 "on" if self.fsync else "OFF (unsafe: benchmarking only)")
        if self.cfg.tls is None:
            log.warning("no [tls] in the config: both ports are unauthenticated plaintext")
        else:
            log.info("TLS on both ports (peers: mutual TLS with the peer CA; clients: %s)",
                     "certificate required" if self.cfg.tls.client_ca else "no certificate")
        if self.raw.conf_state().voters == {self.id}:
            self.raw.campaign()
        self._kick()

    def reload_tls(self) -> None:
        """SIGHUP: re-read the ``[tls]`` certificate, key and CA files. New connections (both
        ports, both directions) use them; open ones continue. Files that cannot be used are
        refused with the reason and the previous certificates stay in use."""
        t = self.cfg.tls
        if t is None:
            log.info("SIGHUP: no [tls] in the config, no certificate to re-read")
            return
        try:
            peer_tls, client_tls = tls.node_contexts(t, self.id)
        except ConfigError as exc:
            log.error("SIGHUP: certificates not reloaded, the previous ones stay in use: %s",
                      exc)
            return
        self.peers.set_tls(peer_tls)
        self.clients.set_tls(client_tls)
        log.info("SIGHUP: certificates re-read (%s, %s, peer CA %s%s): new connections use "
                 "them, open ones continue", t.cert_for(self.id), t.key_for(self.id),
                 t.peer_ca, f", client CA {t.client_ca}" if t.client_ca else "")

    # -- inputs ---------------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._next_tick += self._tick_s
        if self._next_tick < now - self._tick_s:     # we fell behind: do not tick in a burst
            self._next_tick = now + self._tick_s
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        self.now = now
        self.raw.tick()
        self._kick()

    def on_peer_message(self, m) -> str | None:
        """Step a validated message; returns why it was refused (the connection is then
        closed by the transport), or None."""
        if self._dead:
            return None
        if m.frm in self.members.removed_committed:
            return self.members.refused(m.frm)
        reason = self.raw.check_message(m)
        if reason is not None:
            return reason
        stats = self.stats
        stats.heard[m.frm] = self.now
        t = m.type
        if t == MsgType.HEARTBEAT_RESP and not m.context:    # answers a periodic one
            stats.heartbeat_answered(m.frm, asyncio.get_running_loop().time())
        elif t == MsgType.APP and m.commit > stats.leader_commit:
            stats.leader_commit = m.commit
        self.raw.step(m)
        self._kick()
        return None

    def on_peer_closed(self, pid: int) -> None:
        """The last connection node ``pid`` had dialled to us closed: if it led, it may
        have died, and the engine campaigns soon (its rule 9) instead of waiting out an
        election timeout."""
        if self._dead or self._stopping:
            return
        raw = self.raw
        if raw.lead == pid and raw.role != LEADER:
            log.info("the connection from node %d, the leader, closed: campaigning now "
                     "rather than after an election timeout", pid)
        raw.leader_lost(pid)
        self._kick()

    def on_unreachable(self, pid: int) -> None:
        """A message to ``pid`` could not be sent: the engine probes it again."""
        self.raw.report_unreachable(pid)
        self._kick()

    def on_snapshot_sent(self, pid: int, ok: bool) -> None:
        """The snapshot stream to ``pid`` ended (``ok``: delivered)."""
        self.raw.report_snapshot(pid, ok)
        self._kick()

    # -- the Ready cycle ------------------------------------------------------------------

    def _process(self) -> None:
        self._scheduled = False
        if self._dead:
            return
        self.requests.flush()
        raw = self.raw
        try:
            while raw.has_ready():
                rd = raw.ready()
                self._handle_ready(rd)
                raw.advance(rd)
        except StorageError as exc:
            self.fatal(f"storage failure: {exc}")
            return
        except Exception as exc:         # a broken invariant: stop rather than limp on
            log.exception("internal error in the Ready cycle")
            self.fatal(f"internal error in the Ready cycle: {type(exc).__name__}: {exc}")
            return
        self.clients.flush()
        if self.rejoin.active and not raw.rejoining:
            self.rejoin.clear()
        self._watch_conf()
        self.snapshots.maybe_take()

    # -- membership -----------------------------------------------------------------------

    def _watch_conf(self) -> None:
        """After a Ready cycle: follow a configuration change (peers to dial, addresses,
        removed ids), answer the member changes now done, stop if this node was removed."""
        members = self.members
        if (self.raw.conf_version != members.version
                or self.raw.committed >= members.last_conf_index > members.seen_committed):
            members.refresh(self.raw)
            members.seen_committed = min(self.raw.committed, members.last_conf_index)
            self.peers.set_peers(members.peer_addrs())
            if members.self_removed() and not self._stopping:
                self.removed(f"a committed configuration change (index "
                             f"{members.last_conf_index} or before) removed it")
        self.member_requests.progress()

    def removed(self, why: str) -> None:
        """This node is no longer a member: log it and stop (exit status 0), as an etcd
        member does; it must not keep campaigning."""
        if self._stopping:
            return
        log.warning("node %d was removed from the cluster (%s): stopping", self.id, why)
        asyncio.get_running_loop().create_task(self.shutdown(grace=0.0))

    def peer_refused(self, pid: int, addr: str = "") -> str | None:
        """Why a peer connection from node ``pid`` is refused (``peers``), or None."""
        return self.members.refused(pid, addr)

    def peer_address(self, pid: int):
        """Where to dial node ``pid``, not one of the peers dialled (``peers``): a node the
        engine addresses before this pass's ``_watch_conf`` (a learner just added) or that
        is not in the configuration (a leader met while joining)."""
        addr = self.members.dial_address(pid)
        if addr is None and self.raw.conf_version != self.members.version:
            self.members.refresh(self.raw)
            addr = self.members.dial_address(pid)
        return addr

    def _handle_ready(self, rd) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        # With nothing to make durable there is no fsync for the sends to overlap: the
        # messages (a commit index for the followers, heartbeats) then leave after the
        # clients' answers, since on a busy 2-core machine the followers they wake can
        # take the leader's core before it writes those answers.
        late = not rd.must_sync and not rd.persisted_messages
        if rd.messages and self.early_send and not late:
            self.peers.send(rd.messages)
        store = self.store
        if rd.snapshot is not None:
            self.backend.persist_snapshot(rd.snapshot)
        if rd.entries is not None:
            store.append(rd.entries)
        if rd.hard_state is not None:
            store.save_hard_state(rd.hard_state)
        if rd.must_sync:
            if self.fsync:
                t0 = perf_counter()
                store.sync()
                self.stats.fsync.observe(perf_counter() - t0)
            else:
                store.flush()       # fsync = false: to the kernel, not to the disk
        if rd.messages and not self.early_send and not late:
            self.peers.send(rd.messages)
        if rd.persisted_messages:
            self.peers.send(rd.persisted_messages)
        requests = self.requests
        if rd.snapshot is not None:
            requests.machine = self.snapshots.install(rd.snapshot)
        if rd.committed is not None:
            requests.apply(rd.committed)
        if rd.read_states:
            requests.reads_ready(rd.read_states)
        if rd.dropped_reads:
            requests.reads_dropped(rd.dropped_reads)
        if late and rd.messages:
            self.clients.flush()
            self.peers.send(rd.messages)

    def _on_soft_state(self, ss) -> None:
        if ss.lead and ss.lead != self._lead:
            self.stats.leader_changes += 1
        self._lead = ss.lead
        was_leader = self.requests.role == LEADER
        self.requests.on_role(ss.role, ss.lead)     # abandons the waiting ones if lost
        if was_leader and ss.role != LEADER:
            self.member_requests.abandon()
        if ss.role == LEADER and not was_leader:
            log.info("became leader in term %d", self.raw.term)
        elif was_leader and ss.role != LEADER:
            log.info("lost leadership in term %d (leader now %d)", self.raw.term, ss.lead)
        elif ss.lead:
            log.info("following node %d in term %d", ss.lead, self.raw.term)

    # -- status and shutdown --------------------------------------------------------------

    def status_fields(self) -> list:
        """The fields of an OP_STATUS answer (``codec`` docstring), newest state."""
        st = self.raw.status()
        return [self.id, ROLE_NAMES[st.role], st.term, st.lead, st.last_index, st.committed,
                self.backend.machine.applied_index, IMPLEMENTATION, self.loop_name,
                __version__]

    def _begin_stop(self) -> None:
        self._stopping = True
        self.requests.stopping = True
        self.snapshots.stopping = True

    def fatal(self, reason: str) -> None:
        """Stop at once: nothing more is sent or acknowledged (exit status 3)."""
        if self._dead:
            return
        log.critical("stopping: %s", reason)
        self.exit_code = 3
        self._begin_stop()
        self._dead = True
        self.peers.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.requests.drop_all()    # none of the waiting answers may be acknowledged now
        for c in list(self.clients.conns):
            c.transport.abort()
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    async def shutdown(self, grace: float = 3.0) -> None:
        """Graceful stop: refuse new clients, hand leadership to an up-to-date follower
        (within ``grace`` seconds), answer what waits, flush, close."""
        if self._stopping:
            return
        self._begin_stop()
        self.clients.stop_accepting()
        await hand_over_leadership(self.raw, self.peers, self.id, self._kick, grace)
        self.requests.abandon()
        self.requests.refuse_gathered()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        try:
            self.store.sync()
        except StorageError as exc:
            log.error("final flush failed: %s", exc)
            self.exit_code = 3
        await self.clients.close()
        await self.peers.close()
        if self.metrics is not None:
            self.metrics.close()
        try:
            self.backend.close()
        except StorageError as exc:
            log.error("closing the storage failed: %s", exc)
            self.exit_code = 3
        if not self.stopped.done():
            self.stopped.set_result(None)
