"""The node: one event loop driving the Raft engine, storage, state machine and transports.

Place in the architecture: the heart of ``fastraft.server``. It owns a ``RawNode``
(``fastraft.raft``), a WAL and a snapshot store (``fastraft.storage``), the replicated KV state
machine (``fastraft.statemachine``), the peer transport (``peers``) and the client port
(``clients``). Inputs (ticks, peer messages, client requests) arrive as callbacks; each one
marks the node dirty and one pass per loop turn (``_process``) does the Ready cycle::

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
that is not durable (``fatal``). Snapshots are taken by threshold in a forked child
(copy-on-write, ``statemachine.snapshotter``), so the loop keeps running while it is written;
then the engine's log prefix is released and WAL segments covered by the older of the two kept
snapshot files are deleted (the WAL's snapshot mark stays one snapshot behind, so a damaged
newest snapshot can fall back to the previous one and still find the log after it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

from .. import __version__, codec
from ..config import format_address
from ..core import IMPLEMENTATION
from ..datadir import remove_durable, write_file_durable
from ..errors import (Busy, CompactedError, CorruptRecordError, FatalError, NotLeader,
                      StorageError)
from ..raft import LEADER, ROLE_NAMES, RaftConfig, RawNode, Snapshot, SnapshotMeta
from .backends import open_backend
from .clients import ClientServer
from .peers import PeerTransport

__all__ = ["Node", "FatalError"]

log = logging.getLogger("fastraft.node")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    def __init__(self, cfg, node_id: int, data_dir: str, *, loop_name: str = "asyncio",
                 rejoin: bool = False) -> None:
        self.cfg = cfg
        self.id = node_id
        self.spec = cfg.node(node_id)
        self.tuning = t = cfg.tuning
        self.data_dir = data_dir
        self.loop_name = loop_name
        self.voters = frozenset(cfg.voters)
        self.fsync = t.fsync
        #: Send the leader's appends before its own fsync (thesis §10.2.1). Turned off only
        #: to measure what it brings (bench/README.md): FASTRAFT_LEADER_SYNC_FIRST=1.
        self.early_send = os.environ.get("FASTRAFT_LEADER_SYNC_FIRST") != "1"
        self.addr_of = {n.id: n.client_addr for n in cfg.nodes}
        self.limits = codec.Limits(max_key=t.max_key_bytes, max_value=t.max_value_bytes)
        self.max_pending = t.max_pending
        self._scheduled = False
        self._stopping = False
        self._dead = False              # a storage failure: nothing more is processed
        self.stopped: asyncio.Future | None = None
        self.exit_code = 0
        self._props: list = []          # (payload, conn, req_id) gathered this turn
        self._pending: dict = {}        # index -> (term, conn, req_id)
        self._read_batch: list = []     # (conn, req) linearizable reads gathered this turn
        self._reads: dict = {}          # read ctx -> [(conn, req), ...] awaiting a ReadState
        self._read_ready: list = []     # (index, batch) safe once applied >= index
        self._read_ctx = 0
        self._snapshotting = False
        self._need_snapshot = False
        self._tick_handle = None
        #: ``--rejoin``: this node lost its data. The marker file keeps it from voting across
        #: restarts until a leader has caught it up (RaftConfig.rejoining).
        self._rejoin_marker = os.path.join(data_dir, "REJOINING")
        self._rejoin = rejoin
        self.role = 0
        self.lead = 0

    # -- start-up -------------------------------------------------------------------------

    def _open_storage(self) -> None:
        t = self.tuning
        self.backend = b = open_backend(t.storage, self.data_dir, self.voters, t)
        self.store = b.store
        self.snaps = b.snaps
        rlog, hs, newest = b.open()
        self.machine = b.machine
        if self._rejoin:        # durable (file and directory fsynced) before it matters
            write_file_durable(self._rejoin_marker, b"this node lost its data; it does not "
                               b"vote until a leader caught it up\n")
        self._rejoin = os.path.exists(self._rejoin_marker)
        if self._rejoin:
            log.warning("rejoining after a data loss: no vote and no campaign until a leader "
                        "has caught this node up")
        rcfg = RaftConfig(id=self.id, voters=self.voters, election_tick=t.election_tick,
                          heartbeat_tick=t.heartbeat_tick, max_uncommitted=t.max_pending,
                          rejoining=self._rejoin)
        self.raw = RawNode(rcfg, random.Random(), rlog, hs)
        if newest is not None and newest.meta.index > rlog.snapshot.meta.index:
            self.raw.compact(newest, keep_from=rlog.snapshot.meta.index + 1)
        self.snap_index = rlog.applied
        # A snapshot mark without a readable file (SQLite backend, file lost): make one soon,
        # a lagging follower may need it.
        self._need_snapshot = rlog.snapshot.meta.index > 0 and rlog.snapshot.data is None
        log.info("recovered: log %d..%d, term %d, vote %d, commit %d, applied %d",
                 rlog.first_index, rlog.last_index, hs.term, hs.vote, rlog.committed,
                 rlog.applied)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopped = loop.create_future()
        try:
            self._open_storage()
        except (StorageError, CorruptRecordError) as exc:
            raise FatalError(str(exc)) from exc
        t = self.tuning
        peers = {n.id: n.raft for n in self.cfg.nodes if n.id != self.id}
        self.peers = PeerTransport(self, self.id, self.cfg.cluster_name, self.spec.raft_bind,
                                   peers, self.snaps, t.max_frame_bytes)
        self.clients = ClientServer(self, self.spec.client, self.limits, t.max_frame_bytes,
                                    t.max_client_connections)
        await self.peers.start()
        await self.clients.start()
        self._tick_s = t.tick_ms / 1000.0
        self._next_tick = loop.time() + self._tick_s
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        log.info("node %d of cluster %r serving clients on %s, peers on %s (core %s, loop "
                 "%s, storage %s, fsync %s)", self.id, self.cfg.cluster_name,
                 self.spec.client_addr, format_address(self.spec.raft_bind), IMPLEMENTATION,
                 self.loop_name, self.backend.name,
                 "on" if self.fsync else "OFF (unsafe: benchmarking only)")
        if len(self.voters) == 1:
            self.raw.campaign()
        self._kick()

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
        self.raw.tick()
        self._kick()

    def on_peer_message(self, m) -> str | None:
        """Step a validated message; returns why it was refused (the connection is then
        closed by the transport), or None."""
        if self._dead:
            return None
        reason = self.raw.check_message(m)
        if reason is not None:
            return reason
        self.raw.step(m)
        self._kick()
        return None

    def on_unreachable(self, pid: int) -> None:
        self.raw.report_unreachable(pid)
        self._kick()

    def on_snapshot_sent(self, pid: int, ok: bool) -> None:
        self.raw.report_snapshot(pid, ok)
        self._kick()

    def _not_leader(self, conn, req_id: int) -> None:
        lead = self.lead if self.lead != self.id else 0
        conn.respond(req_id, codec.ST_NOT_LEADER, lead, self.addr_of.get(lead))

    def on_request(self, conn, req) -> None:
        if self._dead:
            return
        op = req.op
        if op == codec.OP_GET or op == codec.OP_SCAN:
            if req.stale:
                self._serve_read(conn, req)
            elif self.role != LEADER or self._stopping:
                self._not_leader(conn, req.req_id)
            else:
                self._read_batch.append((conn, req))
                self._kick()
            return
        if op == codec.OP_STATUS:
            fields = self.status_fields()
            if req.with_limits:         # codec.STATUS_LIMIT_FIELDS
                lim = self.limits
                fields += [self.clients.max_frame, lim.max_key, lim.max_value, lim.max_scan]
            conn.respond(req.req_id, codec.ST_OK, fields)
            return
        if self._stopping:
            conn.respond(req.req_id, codec.ST_NOT_LEADER, 0, None)
            return
        if self.role != LEADER:
            self._not_leader(conn, req.req_id)
            return
        if len(self._pending) + len(self._props) >= self.max_pending:
            conn.respond(req.req_id, codec.ST_BUSY,
                         f"{len(self._pending)} writes are waiting for commitment")
            return
        self._props.append((codec.command_for(req, _now_ms()), conn, req.req_id))
        self._kick()

    def _serve_read(self, conn, req) -> None:
        m = self.machine
        if req.op == codec.OP_GET:
            conn.respond(req.req_id, codec.ST_OK, m.get(req.key))
        else:
            conn.respond(req.req_id, codec.ST_OK,
                         [[k, v] for k, v in m.scan(req.key, req.limit)])

    # -- the Ready cycle ------------------------------------------------------------------

    def _process(self) -> None:
        self._scheduled = False
        if self._dead:
            return
        if self._props:
            self._flush_proposals()
        if self._read_batch:
            self._flush_reads()
        raw = self.raw
        try:
            while raw.has_ready():
                rd = raw.ready()
                self._handle_ready(rd)
                raw.advance(rd)
        except StorageError as exc:
            self.fatal(f"storage failure: {exc}")
            return
        if self._rejoin and not raw.rejoining:
            self._rejoin = False
            try:
                remove_durable(self._rejoin_marker)
            except OSError:
                pass
            log.info("caught up after the data loss: voting again")
        self._maybe_snapshot()

    def _flush_proposals(self) -> None:
        props = self._props
        self._props = []
        try:
            first, term = self.raw.propose([p for p, _c, _r in props])
        except NotLeader:
            for _p, conn, req_id in props:
                self._not_leader(conn, req_id)
            return
        except Busy as exc:
            for _p, conn, req_id in props:
                conn.respond(req_id, codec.ST_BUSY, str(exc))
            return
        pending = self._pending
        for i, (_p, conn, req_id) in enumerate(props):
            pending[first + i] = (term, conn, req_id)

    def _flush_reads(self) -> None:
        batch = self._read_batch
        self._read_batch = []
        self._read_ctx += 1
        ctx = self._read_ctx
        try:
            self.raw.read_index(ctx)
        except NotLeader:
            for conn, req in batch:
                self._not_leader(conn, req.req_id)
            return
        self._reads[ctx] = batch

    def _handle_ready(self, rd) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.messages and self.early_send:
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
                store.sync()
            else:
                store.flush()       # fsync = false: to the kernel, not to the disk
        if rd.messages and not self.early_send:
            self.peers.send(rd.messages)
        if rd.persisted_messages:
            self.peers.send(rd.persisted_messages)
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.committed is not None:
            self._apply(rd.committed)
        if rd.read_states:
            for rs in rd.read_states:
                batch = self._reads.pop(rs.context, None)
                if batch is not None:
                    self._read_ready.append((rs.index, batch))
            self._serve_ready_reads()
        if rd.dropped_reads:
            for ctx in rd.dropped_reads:
                for conn, req in self._reads.pop(ctx, ()):
                    self._not_leader(conn, req.req_id)

    def _on_soft_state(self, ss) -> None:
        was_leader = self.role == LEADER
        self.role, self.lead = ss.role, ss.lead
        if ss.role == LEADER and not was_leader:
            log.info("became leader in term %d", self.raw.term)
        elif was_leader and ss.role != LEADER:
            log.info("lost leadership in term %d (leader now %d)", self.raw.term, ss.lead)
            self._abandon_pending()
        elif ss.lead:
            log.info("following node %d in term %d", ss.lead, self.raw.term)

    def _abandon_pending(self) -> None:
        """Leadership is lost: the writes in flight may or may not commit later."""
        pending = self._pending
        self._pending = {}
        for _term, conn, req_id in pending.values():
            conn.respond(req_id, codec.ST_UNKNOWN,
                         "leadership lost before the write committed: outcome unknown")
        for _index, batch in self._read_ready:
            for conn, req in batch:
                self._not_leader(conn, req.req_id)
        self._read_ready = []
        reads = self._reads
        self._reads = {}
        for batch in reads.values():
            for conn, req in batch:
                self._not_leader(conn, req.req_id)

    def _apply(self, batch) -> None:
        results = self.machine.apply_entries(batch.first_index, batch.entries)
        pending = self._pending
        if pending:
            entries = batch.entries
            first = batch.first_index
            for index, result in results:
                p = pending.pop(index, None)
                if p is None:
                    continue
                term, conn, req_id = p
                if entries[index - first][0] != term:
                    conn.respond(req_id, codec.ST_UNKNOWN,
                                 "the write was overwritten by another leader's entry")
                elif result is None:
                    conn.respond(req_id, codec.ST_ERROR, "no result for the entry")
                else:
                    conn.respond(req_id, result[0], result[1])
        if self._read_ready:
            self._serve_ready_reads()

    def _serve_ready_reads(self) -> None:
        """Serve the reads whose ReadIndex the state machine has reached (thesis §6.4)."""
        applied = self.machine.applied_index
        keep = []
        for index, batch in self._read_ready:
            if index <= applied:
                for conn, req in batch:
                    self._serve_read(conn, req)
            else:
                keep.append((index, batch))
        self._read_ready = keep

    def _install(self, snap: Snapshot) -> None:
        meta = snap.meta
        t0 = time.monotonic()
        self.backend.install(snap)
        self.machine = self.backend.machine
        assert self.machine.applied_index == meta.index, (
            f"snapshot {snap.data} holds index {self.machine.applied_index}, not {meta.index}")
        self.snap_index = meta.index
        log.info("installed snapshot %d@%d from the leader in %.2f s", meta.index,
                 meta.term, time.monotonic() - t0)

    # -- snapshots ------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._snapshotting or self._stopping:
            return
        applied = self.machine.applied_index
        if (applied - self.snap_index < self.tuning.snapshot_threshold
                and not (self._need_snapshot and applied > 0)):
            return
        self._need_snapshot = False
        self._snapshotting = True
        asyncio.get_running_loop().create_task(self._snapshot(applied))

    async def _snapshot(self, applied: int) -> None:
        try:
            try:
                term = self.raw.term_at(applied)
            except CompactedError:
                return      # a snapshot from the leader overtook this one: nothing to do
            t0 = time.monotonic()
            meta, path = await self.backend.snapshot(SnapshotMeta(applied, term, self.voters))
            took = time.monotonic() - t0
            if self._stopping:
                return
            keep = self.tuning.snapshot_keep_entries
            self.raw.compact(Snapshot(meta, path), keep_from=max(1, meta.index - keep + 1))
            self.snap_index = meta.index
            freed = self.backend.after_snapshot(meta, self.fsync)
            log.info("snapshot at %d written in %.2f s; log released up to %d; %d WAL "
                     "segments deleted", meta.index, took, max(0, meta.index - keep), freed)
        except StorageError as exc:
            self.fatal(f"snapshot failed: {exc}")
        except Exception:
            log.exception("snapshot at %d failed", applied)
        finally:
            self._snapshotting = False

    # -- status and shutdown --------------------------------------------------------------

    def status_fields(self) -> list:
        st = self.raw.status()
        return [self.id, ROLE_NAMES[st.role], st.term, st.lead, st.last_index, st.committed,
                self.machine.applied_index, IMPLEMENTATION, self.loop_name, __version__]

    def fatal(self, reason: str) -> None:
        """Stop at once: nothing more is sent or acknowledged."""
        if self._dead:
            return
        log.critical("stopping: %s", reason)
        self.exit_code = 3
        self._stopping = True
        self._dead = True
        self.peers.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        # Drop every pending answer: none of them may be acknowledged now.
        self._pending = {}
        self._props = []
        for c in list(self.clients.conns):
            c.transport.abort()
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    async def shutdown(self, grace: float = 3.0) -> None:
        """Graceful stop: refuse new clients, hand leadership to an up-to-date follower,
        flush, close."""
        if self._stopping:
            return
        self._stopping = True
        self.clients.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        st = self.raw.status()
        if st.role == LEADER and len(self.voters) > 1:
            best = None
            for vid, pr in st.progress.items():
                if vid != self.id and self.peers.connected(vid):
                    if best is None or pr.match > st.progress[best].match:
                        best = vid
            if best is not None:
                log.info("handing leadership to node %d before stopping", best)
                try:
                    self.raw.transfer_leadership(best)
                    self._kick()
                except Exception as exc:      # noqa: BLE001 - best effort
                    log.info("leadership transfer not started: %s", exc)
                while loop.time() < deadline and self.raw.role == LEADER:
                    await asyncio.sleep(0.01)
        self._abandon_pending()
        # Gathered but never proposed or started: certainly not applied, so say NotLeader
        # rather than leave them to the closing connection (outcome unknown).
        props, self._props = self._props, []
        for _payload, conn, req_id in props:
            conn.respond(req_id, codec.ST_NOT_LEADER, 0, None)
        reads, self._read_batch = self._read_batch, []
        for conn, req in reads:
            self._not_leader(conn, req.req_id)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        try:
            self.store.sync()
        except StorageError as exc:
            log.error("final flush failed: %s", exc)
            self.exit_code = 3
        await self.clients.close()
        await self.peers.close()
        try:
            self.backend.close()
        except StorageError as exc:
            log.error("closing the storage failed: %s", exc)
            self.exit_code = 3
        if not self.stopped.done():
            self.stopped.set_result(None)
