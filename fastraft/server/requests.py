"""Client requests of one node: writes gathered into one proposal per loop turn, the writes
waiting for their entry to apply, linearizable reads batched into one ReadIndex round, and
every answer.

Place in the architecture: part of the runtime (``fastraft.server``), between the client port
(``clients.ClientServer`` calls ``on_request`` for each decoded request) and the node's Ready
loop (``node.Node`` calls ``flush`` once per turn, ``apply`` with each committed batch,
``reads_ready`` / ``reads_dropped`` with the engine's read states, and ``abandon`` when
leadership is lost). It never touches storage or sockets: answers go out through
``conn.respond``.

The promise: a request is answered once, and a definite refusal (NotLeader, Busy) is only
given for what is certainly not applied. A write taken by a leader is answered with its
entry's result once applied, or "outcome unknown" when leadership is lost first or another
leader's entry took its index. Only a node that stops on a fatal error (``drop_all``) leaves
requests unanswered: their connections are aborted. The write path stays lean: a gathered
write is its command plus one ``(conn, req_id)`` pair, a waiting one a ``PendingWrite``; no
logging, no per-write call beyond the answer.

This class owns the pending-write limit (``Tuning.max_pending``): a write beyond it is
answered Busy at once, before anything is proposed.

Backups (``fastraft snapshot save``): OP_BACKUP joins the linearizable reads (a ReadIndex
round on the leader, then the state machine applied up to its index) and is then handed to
``backup.Backups``, which writes and serves the snapshot; OP_BACKUP_READ / OP_BACKUP_END go
straight there, whatever the role. The node sets ``backups``; a node that does not is given
one on the first backup request, made from its parts.

Counters for the metrics (plain integers, read at scrape time; never a call per write):
``proposals_committed`` counts proposed writes answered OK once their entry applied;
``proposals_failed`` those answered otherwise: refused by the engine when proposed, applied
with a non-OK result, overwritten by another leader's entry, or lost with leadership (outcome
unknown). ``proposals_pending`` is how many are gathered or proposed and not yet answered.
Writes refused before being proposed (not leader, over ``max_pending``, stopping) and those
dropped by a fatal error are in neither counter.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

from .. import codec
from ..errors import Busy, NotLeader
from ..raft import LEADER
from .watches import WatchHub

__all__ = ["Requests", "PendingWrite"]


class PendingWrite(NamedTuple):
    """A proposed write waiting for its entry to apply: the term it was proposed in (another
    term at its index means another leader's entry took the place) and where its answer goes."""

    term: int
    conn: object
    req_id: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Requests:
    """The request side of a node (see the module docstring). ``raw`` is the engine,
    ``machine`` the state machine in force (the node replaces it when a snapshot is
    installed), ``kick`` schedules the node's next pass, ``status`` gives the OP_STATUS
    fields, ``addr_of`` maps node ids to client addresses (for NotLeader hints)."""

    def __init__(self, node_id: int, raw, machine, *, limits: codec.Limits, max_frame: int,
                 max_pending: int, addr_of: dict, kick: Callable[[], None],
                 status: Callable[[], list], watch_history: int = 50_000,
                 watch_buffer_bytes: int = 16 << 20) -> None:
        self.id = node_id
        self.raw = raw
        #: OP_WATCH / OP_WATCH_CANCEL go there, with the changes of every applied batch
        self.watches = WatchHub(watch_history, watch_buffer_bytes)
        self._machine = None
        self.machine = machine
        self.limits = limits
        self.max_frame = max_frame
        self.max_pending = max_pending
        self.addr_of = addr_of
        self._kick = kick
        self._status = status
        self.role = 0                   # the engine's role and leader, as of the last Ready
        self.lead = 0
        self.stopping = False           # shutting down: no new write or read is taken
        self.dead = False               # a fatal error: nothing is answered any more
        self._payloads: list = []       # the log commands of the writes gathered this turn,
        self._cmds: list = []           # their fields (codec.command_tuple),
        self._waiters: list = []        # and where each one's answer goes: (conn, req_id)
        #: index -> (payload, command tuple) of the entries proposed and not applied yet, so
        #: that applying them needs no decoding (``apply_entries``' ``known``)
        self._known: dict = {}
        self._pending: dict = {}        # index -> PendingWrite
        self._read_batch: list = []     # (conn, req) linearizable reads gathered this turn
        self._reads: dict = {}          # read ctx -> [(conn, req), ...] awaiting a ReadState
        self._read_ready: list = []     # (index, batch) safe once applied >= index
        self._read_ctx = 0
        #: OP_MEMBERS / OP_MEMBER go there (``members.MemberRequests``; set by the node).
        self.member_requests = None
        #: OP_BACKUP* go there (``backup.Backups``; set by the node, else made on first use).
        self.backups = None
        #: Metrics (module docstring): proposed writes answered OK once applied, and those
        #: answered with a failure or lost to a leader change.
        self.proposals_committed = 0
        self.proposals_failed = 0
        #: the lease deadline a CMD_TICK was last proposed for (the leader proposes one when
        #: its clock passes the next deadline: ``_tick_leases``)
        self._ticked_for = None

    @property
    def machine(self):
        """The state machine in force; setting it (start-up, a snapshot installed) restarts
        the watch history at its applied index."""
        return self._machine

    @machine.setter
    def machine(self, m) -> None:
        m.events = []
        self._machine = m
        self.watches.reset(m.applied_index)

    @property
    def proposals_pending(self) -> int:
        """Writes gathered for this turn's proposal or proposed and waiting for their entry
        to apply (each gets an answer later)."""
        return len(self._pending) + len(self._payloads)

    # -- taking requests (the client port calls this) ----------------------------------------

    def on_request(self, conn, req) -> None:
        """Take one decoded request: answer it now (status, stale read, refusal) or gather it
        for this turn's proposal or read round."""
        if self.dead:
            return
        op = req.op
        if op == codec.OP_GET or op == codec.OP_SCAN or op == codec.OP_REVISION:
            if req.stale:
                self._serve_read(conn, req)
            elif self.role != LEADER or self.stopping:
                self._not_leader(conn, req.req_id)
            else:
                self._read_batch.append((conn, req))
                self._kick()
            return
        if op == codec.OP_STATUS:
            fields = self._status()
            if req.with_limits:         # codec.STATUS_LIMIT_FIELDS
                lim = self.limits
                fields += [self.max_frame, lim.max_key, lim.max_value, lim.max_scan]
            conn.respond(req.req_id, codec.ST_OK, fields)
            return
        if op == codec.OP_WATCH or op == codec.OP_WATCH_CANCEL:
            if op == codec.OP_WATCH and not self.stopping:
                self.watches.watch(conn, req)
            elif op == codec.OP_WATCH:
                conn.respond(req.req_id, codec.ST_NOT_LEADER, 0, None)
            else:
                self.watches.cancel(conn, req)
            return
        if self.stopping:
            conn.respond(req.req_id, codec.ST_NOT_LEADER, 0, None)
            return
        if codec.OP_MEMBERS <= op <= codec.OP_BACKUP_END:
            if op >= codec.OP_BACKUP:
                self._backup_request(conn, req)
            else:
                self.member_requests.on_request(conn, req)
            return
        if self.role != LEADER:
            self._not_leader(conn, req.req_id)
            return
        if len(self._pending) + len(self._payloads) >= self.max_pending:
            conn.respond(req.req_id, codec.ST_BUSY,
                         f"{len(self._pending)} writes are waiting for commitment")
            return
        cmd = codec.command_tuple(req, _now_ms())
        self._payloads.append(codec.encode_command(cmd))
        self._cmds.append(cmd)
        self._waiters.append((conn, req.req_id))
        self._kick()

    def _not_leader(self, conn, req_id: int) -> None:
        lead = self.lead if self.lead != self.id else 0
        conn.respond(req_id, codec.ST_NOT_LEADER, lead, self.addr_of.get(lead))

    not_leader = _not_leader

    def _serve_read(self, conn, req) -> None:
        m = self.machine
        if req.op == codec.OP_GET:
            if req.with_rev:
                item = m.get_item(req.key)
                conn.respond(req.req_id, codec.ST_OK, None if item is None else list(item))
            else:
                conn.respond(req.req_id, codec.ST_OK, m.get(req.key))
        elif req.op == codec.OP_REVISION:
            conn.respond(req.req_id, codec.ST_OK, m.applied_index)
        elif req.op == codec.OP_SCAN:
            if req.with_rev:
                conn.respond(req.req_id, codec.ST_OK,
                             [list(item) for item in m.scan_items(req.key, req.limit)])
            else:
                conn.respond(req.req_id, codec.ST_OK,
                             [[k, v] for k, v in m.scan(req.key, req.limit)])
        else:                           # OP_BACKUP, its read barrier passed
            backups = self._backups_part()
            if backups is None:
                conn.respond(req.req_id, codec.ST_INVALID, "this node takes no backups")
            else:
                backups.begin(conn, req.req_id)

    def _backup_request(self, conn, req) -> None:
        """OP_BACKUP waits for a ReadIndex round on the leader, as a linearizable read (its
        snapshot then holds every write acknowledged before it); OP_BACKUP_READ and
        OP_BACKUP_END go to the backup being served, whatever this node's role."""
        op = req.op
        if op == codec.OP_BACKUP:
            if self.role != LEADER:
                self._not_leader(conn, req.req_id)
            else:
                self._read_batch.append((conn, req))
                self._kick()
            return
        backups = self._backups_part()
        if backups is None:
            conn.respond(req.req_id, codec.ST_INVALID, "this node takes no backups")
        elif op == codec.OP_BACKUP_READ:
            backups.read(conn, req)
        else:
            backups.end(conn, req)

    def _backups_part(self):
        """The node's ``backup.Backups`` (None: this object serves no node, in unit tests)."""
        return self.backups

    # -- once per loop turn ------------------------------------------------------------------

    def flush(self) -> None:
        """Propose the writes gathered this turn as one batch and start one ReadIndex round
        for the reads gathered; refuse them all (certainly not applied) if the engine does."""
        if self._payloads:
            self._flush_proposals()
        if self._read_batch:
            self._flush_reads()
        if self.role == LEADER:
            self._tick_leases()
        if self.watches.watchers:
            self.watches.beat(time.monotonic())

    def _tick_leases(self) -> None:
        """The leader proposes a clock entry (CMD_TICK) once its wall clock passes the next
        lease deadline, so that leases expire without other writes (once per deadline)."""
        deadline = self.machine.next_lease_deadline()
        if deadline is None or deadline == self._ticked_for:
            return
        now = _now_ms()
        if now < deadline:
            return
        self._ticked_for = deadline
        try:
            self.raw.propose([codec.encode_command((codec.CMD_TICK, now))])
        except (NotLeader, Busy):
            self._ticked_for = None     # the next pass tries again

    def _flush_proposals(self) -> None:
        payloads, waiters, cmds = self._payloads, self._waiters, self._cmds
        self._payloads, self._waiters, self._cmds = [], [], []
        try:
            first, term = self.raw.propose(payloads)
        except NotLeader:
            self.proposals_failed += len(waiters)
            for conn, req_id in waiters:
                self._not_leader(conn, req_id)
            return
        except Busy as exc:
            self.proposals_failed += len(waiters)
            for conn, req_id in waiters:
                conn.respond(req_id, codec.ST_BUSY, str(exc))
            return
        pending = self._pending
        # PendingWrite(term, conn, req_id) without the NamedTuple's Python-level __new__,
        # which costs more than the rest of a write's bookkeeping here (0.3 against 0.1 us).
        new, cls = tuple.__new__, PendingWrite
        known = self._known
        for i, (conn, req_id) in enumerate(waiters, first):
            pending[i] = new(cls, (term, conn, req_id))
            known[i] = (payloads[i - first], cmds[i - first])

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

    # -- what the Ready cycle brings ---------------------------------------------------------

    def apply(self, batch) -> None:
        """Apply a committed batch (``EntryBatch``) to the state machine, answer the writes
        waiting on its entries and serve the reads it made safe."""
        m = self.machine
        results = m.apply_entries(batch.first_index, batch.entries, self._known)
        events = m.events
        m.events = []
        self.watches.publish(events, m.applied_index)
        pending = self._pending
        if pending:
            entries = batch.entries
            first = batch.first_index
            before = len(pending)
            failed = 0                  # (counted in the rare branches: OK is the fast path)
            for index, result in results:
                p = pending.pop(index, None)
                if p is None:
                    continue
                term, conn, req_id = p          # a PendingWrite (unpacked: the fastest)
                if entries[index - first][0] != term:
                    failed += 1
                    conn.respond(req_id, codec.ST_UNKNOWN,
                                 "the write was overwritten by another leader's entry")
                elif result is None:
                    failed += 1
                    conn.respond(req_id, codec.ST_ERROR, "no result for the entry")
                else:
                    if result[0]:               # not codec.ST_OK (0)
                        failed += 1
                    conn.respond(req_id, result[0], result[1])
            self.proposals_committed += before - len(pending) - failed
            self.proposals_failed += failed
        if self._read_ready:
            self._serve_ready_reads()

    def reads_ready(self, read_states) -> None:
        """The engine confirmed these read rounds (``ReadState``): serve each batch once the
        state machine has applied its index (thesis §6.4)."""
        for rs in read_states:
            batch = self._reads.pop(rs.context, None)
            if batch is not None:
                self._read_ready.append((rs.index, batch))
        self._serve_ready_reads()

    def reads_dropped(self, contexts) -> None:
        """The engine dropped these read rounds (leadership lost): NotLeader to each read."""
        for ctx in contexts:
            for conn, req in self._reads.pop(ctx, ()):
                self._not_leader(conn, req.req_id)

    def _serve_ready_reads(self) -> None:
        applied = self.machine.applied_index
        keep = []
        for index, batch in self._read_ready:
            if index <= applied:
                for conn, req in batch:
                    self._serve_read(conn, req)
            else:
                keep.append((index, batch))
        self._read_ready = keep

    def on_role(self, role: int, lead: int) -> None:
        """The engine's new role and leader (a Ready's soft state); losing leadership
        abandons what waits on it."""
        was_leader = self.role == LEADER
        self.role, self.lead = role, lead
        if role == LEADER and not was_leader:
            self._ticked_for = None
        if was_leader and role != LEADER:
            self.abandon()

    # -- leadership lost, shutdown, fatal ----------------------------------------------------

    def abandon(self) -> None:
        """Leadership is lost: the writes in flight may or may not commit later (outcome
        unknown); the reads waiting for a round or for their index get NotLeader."""
        pending = self._pending
        self._pending = {}
        self._known = {}
        self.proposals_failed += len(pending)
        for p in pending.values():
            p.conn.respond(p.req_id, codec.ST_UNKNOWN,
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

    def refuse_gathered(self) -> None:
        """At shutdown: what was gathered but never proposed or started is certainly not
        applied, so it gets NotLeader rather than being left to the closing connection
        (outcome unknown)."""
        waiters, self._waiters, self._payloads, self._cmds = self._waiters, [], [], []
        for conn, req_id in waiters:
            conn.respond(req_id, codec.ST_NOT_LEADER, 0, None)
        reads, self._read_batch = self._read_batch, []
        for conn, req in reads:
            self._not_leader(conn, req.req_id)

    def drop_all(self) -> None:
        """A fatal error: forget every waiting write without an answer (none may be
        acknowledged now) and take no more requests."""
        self.dead = True
        self.stopping = True
        self._pending = {}
        self._payloads, self._waiters, self._cmds = [], [], []
        self._known = {}
