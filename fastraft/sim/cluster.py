"""Simulated nodes: a RawNode driven like the real runtime drives it, over the storage
layer's in-memory store (which knows what was synced), a digest state machine, crashes,
pauses and a client workload.

Place in the architecture: part of the deterministic simulator (``fastraft.sim``); it plays
the role ``fastraft/server`` plays in production, with the network and the disk simulated.
No IO, no clocks, every random choice from a seeded ``random.Random``.

Bootstrap (as the runtime does it, etcd-style): every node of the initial cluster starts with
an empty static configuration (``RaftConfig(voters=())``) and its store already holding, durably,
entry 1 of term 1, a conf change adding every initial node as a voter (``bootstrap_entry``),
with ``HardState(term=1, commit=1)``. The configuration comes from the log from index 1 on, so a
node added later (an empty store, ``voters=()``) learns it from the entries or the snapshot it
receives like any other.

Durability model: a Ready's snapshot mark, entries and hard state are first *written* to a
``storage.MemoryStore`` (pending) and then *synced*. A crash keeps a random prefix of the
pending writes (a torn tail, ``MemoryStore.crash``) and nothing after it, so only what was
synced is guaranteed to survive, exactly the promise the storage layer makes. Snapshot data
is kept beside the store, as the runtime's snapshot files are: saved before the mark that
names it, and snapshots taken by a node are saved atomically (write, fsync, rename).
Acknowledgements leave only after the sync (``persisted_messages``).
"""

from __future__ import annotations

import random
from zlib import crc32

from ..errors import Busy, CompactedError, NotLeader, UnavailableError
from ..raft import (
    ADD_VOTER,
    LEADER,
    NO_NODE,
    Change,
    ConfChange,
    EntryBatch,
    HardState,
    MsgType,
    RaftConfig,
    RaftLog,
    RawNode,
    Snapshot,
    SnapshotMeta,
    encode_conf_change,
    initial_snapshot,
)
from ..storage.memory import MemoryStore

__all__ = ["SimStorage", "SimStateMachine", "SimNode", "Workload", "bootstrap_entry"]


def bootstrap_entry(ids) -> bytes:
    """The payload of entry 1 of a new cluster: one conf change adding every initial node as
    a voter (what every bootstrap member writes before it starts)."""
    return encode_conf_change(ConfChange(tuple(Change(ADD_VOTER, n) for n in ids)))


class SimStorage:
    """A node's disk: its log store (a ``MemoryStore``: what survives a crash is what was
    synced plus a torn prefix of the rest) and its snapshot files, by ``(index, term)``.
    ``bootstrap``: the initial cluster's ids, whose conf change it starts with (entry 1,
    durable); empty for a node that joins later (an empty disk)."""

    def __init__(self, bootstrap=()) -> None:
        self.store = MemoryStore()
        self._initial = initial_snapshot(())
        self._snapshots: dict[tuple[int, int], Snapshot] = {}
        if bootstrap:
            self.store.append(EntryBatch(1, [(1, bootstrap_entry(bootstrap))]))
            self.store.save_hard_state(HardState(1, NO_NODE, 1))
            self.store.sync()

    def write(self, rd) -> None:
        """Write a Ready's snapshot (its file at once, its mark pending), entries and hard
        state; durable only at ``sync``."""
        store = self.store
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            self._snapshots[(meta.index, meta.term)] = rd.snapshot
            store.save_snapshot_mark(meta)
        if rd.entries is not None:
            store.append(rd.entries)
        if rd.hard_state is not None:
            store.save_hard_state(rd.hard_state)

    def sync(self) -> None:
        """Make the pending writes durable (the Ready's one fsync)."""
        self.store.sync()

    def crash(self, rng: random.Random) -> None:
        """Lose the unsynced writes, except a random prefix of them (a torn write: whole
        records in order, the last batch of entries possibly cut in the middle)."""
        self.store.crash(rng)

    # What is durable now (what a crash at this instant would keep at least), for the
    # checker's ground truth: the store's synced copy (``MemoryStore`` keeps it apart).

    def holds(self, index: int, term: int) -> bool:
        """Whether the entry ``(index, term)`` is durable here (or covered by a durable
        snapshot mark)."""
        durable = self.store._durable
        mark = durable.mark
        if mark is not None and index <= mark.index:
            return True
        try:
            return durable.ring.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def durable_hard_state(self) -> HardState:
        """The hard state a crash now would keep."""
        return self.store._durable.hs

    @property
    def snapshot_index(self) -> int:
        """The index the latest snapshot mark covers (0: none yet)."""
        mark = self.store.snapshot_mark
        return mark.index if mark is not None else 0

    def save_snapshot(self, snap: Snapshot) -> None:
        """Atomic snapshot save (its file, then its mark, synced), then release the entries
        it covers."""
        meta = snap.meta
        if meta.index <= self.snapshot_index:
            return
        self._snapshots[(meta.index, meta.term)] = snap
        self.store.save_snapshot_mark(meta)
        self.store.sync()
        self.store.compact(meta.index)
        self._forget_snapshots_below(meta.index)

    def load(self) -> tuple[Snapshot, list, HardState]:
        """What a restart finds: the snapshot of the mark, the entries after it, the hard
        state."""
        st = self.store.recovered()
        snap = self._initial
        if st.snapshot is not None:
            snap = self._snapshots[(st.snapshot.index, st.snapshot.term)]
            self._forget_snapshots_below(st.snapshot.index)
        return snap, st.entries, st.hard_state

    def _forget_snapshots_below(self, index: int) -> None:
        """Drop the snapshot files no durable mark can name any more."""
        for key in [k for k in self._snapshots if k[0] < index]:
            del self._snapshots[key]


class SimStateMachine:
    """The replicated state reduced to (index, digest): digest chains CRC-32 over every
    applied payload, so two nodes agree on the digest at i iff they applied the same i
    commands in the same order (up to CRC collisions)."""

    __slots__ = ("index", "digest")

    def __init__(self, index: int = 0, digest: int = 0) -> None:
        self.index = index
        self.digest = digest

    @classmethod
    def from_data(cls, data) -> SimStateMachine:
        """The machine a snapshot's ``data`` (``data()``; None: the empty one) holds."""
        return cls(*(data or (0, 0)))

    def data(self):
        """What a snapshot of this machine carries."""
        return (self.index, self.digest)

    def apply(self, index: int, payload: bytes, term: int = 0) -> None:
        """Apply the entry at ``index`` (the next one) to the digest."""
        assert index == self.index + 1, f"applied {index} after {self.index}"
        self.digest = crc32(payload, self.digest)
        self.index = index


class Workload:
    """Client traffic and what the client was told: writes with unique payloads, ReadIndex
    reads, and the linearizability check of every served read (property 7)."""

    def __init__(self, rng: random.Random, checker) -> None:
        self.rng = rng
        self.checker = checker
        self.counter = 0
        self.pending: dict[tuple[int, int], tuple[int, bytes]] = {}  # (node, idx) -> (term, payload)
        self.max_acked = 0          # highest index of a write acknowledged so far
        self.watch: tuple[int, int] | None = None   # one write whose ack is awaited
        self.watch_acked = False
        self.acked = 0
        self.proposed = 0
        self.refused = 0
        self.reads: dict[int, tuple[int, int]] = {}   # ctx -> (node, required index)
        self.reads_served = 0
        self.reads_dropped = 0
        #: ``make_payload(node id, counter)``: the payload of a write (None: b"w<counter>";
        #: the kv mode makes real commands, ``kvmachine.KVCommands``)
        self.make_payload = None

    def propose(self, node: "SimNode", n: int = 1) -> tuple[int, int] | None:
        """Propose ``n`` unique writes at ``node``: ``(first index, term)``, or None when
        refused."""
        payloads = []
        make = self.make_payload
        for _ in range(n):
            self.counter += 1
            payloads.append(b"w%d" % self.counter if make is None
                            else make(node.id, self.counter))
        try:
            first, term = node.node.propose(payloads)
        except (NotLeader, Busy):
            self.refused += 1
            return None
        for i, p in enumerate(payloads):
            self.pending[(node.id, first + i)] = (term, p)
        self.proposed += n
        return first, term

    def read(self, node: "SimNode") -> None:
        """Start a linearizable read at ``node``."""
        self.counter += 1
        ctx = self.counter
        try:
            node.node.read_index(ctx)
        except NotLeader:
            self.refused += 1
            return
        self.reads[ctx] = (node.id, self.max_acked)

    def on_apply(self, node_id: int, index: int, term: int, payload: bytes) -> None:
        """A node applied an entry: a write of ours at that index and term is acknowledged."""
        if self.make_payload is not None:
            self.make_payload.learn(index, payload)
        w = self.pending.pop((node_id, index), None)
        if w is not None and w == (term, payload):
            self.acked += 1
            if self.watch == (node_id, index):
                self.watch_acked = True
            if index > self.max_acked:
                self.max_acked = index

    def on_read_state(self, node_id: int, ctx, index: int) -> None:
        """A read became safe at ``index``: it is answered once the node has applied it."""
        req = self.reads.pop(ctx, None)
        if req is None:
            return
        if index < req[1]:
            self.checker.fail(f"stale read: node {node_id} answered read {ctx} at index "
                              f"{index}, but a write at index {req[1]} was acknowledged "
                              "before the read began")
        self.reads_served += 1

    def on_read_dropped(self, ctx) -> None:
        """A read was dropped (leadership lost): the client is told NotLeader."""
        if self.reads.pop(ctx, None) is not None:
            self.reads_dropped += 1

    def forget_node(self, node_id: int) -> None:
        """The node crashed: its pending writes and reads have unknown outcomes."""
        for key in [k for k in self.pending if k[0] == node_id]:
            del self.pending[key]
        for ctx in [c for c, r in self.reads.items() if r[0] == node_id]:
            del self.reads[ctx]


_VOTE_TYPES = (MsgType.VOTE, MsgType.PRE_VOTE)


class SimNode:
    """One simulated node: a RawNode driven like the real runtime drives it (persist, send,
    apply, advance), its in-memory store and state machine; it can crash, pause and restart."""
    def __init__(self, node_id: int, cfg: RaftConfig, rng: random.Random,
                 snapshot_every: int, keep_tail: int, bootstrap=(),
                 machine=SimStateMachine) -> None:
        self.id = node_id
        #: the state machine's class: the digest one, or ``kvmachine.KVSimMachine``
        self.machine = machine
        self.cfg = cfg
        self.rng = rng
        self.storage = SimStorage(bootstrap)
        self.snapshot_every = snapshot_every
        self.keep_tail = keep_tail
        self.node: RawNode | None = None
        self.sm = machine.from_data(None)
        self.paused_until = -1
        self.inbox: list = []
        self.waiting_reads: list = []    # ReadStates not yet servable (applied < index)
        self.crashes = 0
        self.start()

    def start(self) -> None:
        """Start (or restart) the engine from what the store kept."""
        snap, entries, hard = self.storage.load()
        self._vote_written = (hard.term, hard.vote)
        log = RaftLog(snap, entries, committed=hard.commit)
        self.node = RawNode(self.cfg, random.Random(self.rng.getrandbits(64)), log, hard)
        self.sm = self.machine.from_data(snap.data)
        self.inbox = []
        self.waiting_reads = []
        self.paused_until = -1
        self.inflight = None             # a Ready written and waiting for its fsync
        self.sync_at = 0

    def crash(self) -> None:
        """Crash: the engine and unsynced writes are lost, the store keeps what a crash keeps."""
        self.node = None
        self.storage.crash(self.rng)
        self.inflight = None
        self.inbox = []
        self.waiting_reads = []
        self.crashes += 1

    # -- inputs, watched by the checker -------------------------------------------------------
    #
    # A leader's commit index moves only inside ``step`` (an append answer) or ``advance``
    # (its own copy durable), and a node wins an election only inside ``step`` or ``tick``:
    # the checker looks at those moments (invariants.py, properties 9 and 10), with the
    # configuration the leader had just before (a leave-joint entry it appends after a
    # commit must not be counted for that commit).

    def step(self, sim, m) -> None:
        """Deliver ``m`` to the running engine."""
        r = self.node._raft
        removed = sim.checker.removed
        if removed and m.frm in removed and m.type in _VOTE_TYPES and \
                self.id in sim.checker.members:
            # A lease exists only with check-quorum (rule 1a of raft.py).
            before = (r.term, r.lead, r.cfg.check_quorum and r.lead != NO_NODE
                      and r.election_elapsed < r.cfg.election_tick)
            self._watched(sim, self.node.step, m)
            sim.checker.on_removed_vote_request(self.id, m.frm, before, (r.term, r.lead))
            return
        self._watched(sim, self.node.step, m)

    def tick(self, sim) -> None:
        """One tick of the running engine."""
        self._watched(sim, self.node.tick)

    def _watched(self, sim, fn, *args) -> None:
        r = self.node._raft
        if r.role == LEADER:
            c0 = r.log.committed
            t0 = r.term
            voters, outgoing = r.voters, r.outgoing
            fn(*args)
            # (Not when a higher term made it a follower that learnt a commit index.)
            if r.log.committed > c0 and r.term == t0:
                sim.checker.on_leader_commit(self.id, r, voters, outgoing)
        else:
            fn(*args)
            if r.role == LEADER:
                sim.checker.on_elected(self.id, r)

    # -- the runtime loop ---------------------------------------------------------------------

    def handle_ready(self, sim) -> bool:
        """Process Readys until none is left or one waits for its fsync. Returns False when
        the node crashed midway.

        Like a pipelined runtime, the fsync of a Ready may take a few ticks: its messages
        to followers leave at once, the node keeps stepping messages and ticking meanwhile,
        and only when the sync completes do the acknowledgements leave, the committed
        entries apply and ``advance`` run (the next Ready waits for that)."""
        node = self.node
        if self.inflight is not None:
            if sim.now < self.sync_at:
                if sim.crash_in_ready and sim.rng.random() < sim.crash_in_ready:
                    sim.crash_node(self)   # while the fsync is under way
                    return False
                return True
            if not self._finish(sim, self.inflight):
                return False
        rng = sim.rng
        while node.has_ready():
            rd = node.ready()
            if rd.entries is not None:
                sim.checker.on_persist(self.id, node._raft, rd.entries)
            for m in rd.messages:
                sim.net.send(sim.now, m)
            hs = rd.hard_state
            # A vote written (ours or for another candidate): its answers must wait for
            # this Ready's fsync. Told by the hard state, not by where the engine queued
            # the answers, so that an engine that sends them early is crashed here too.
            votes = (hs is not None and hs.vote != NO_NODE
                     and (hs.term, hs.vote) != self._vote_written)
            self.storage.write(rd)
            if hs is not None:
                self._vote_written = (hs.term, hs.vote)
            if sim.crash_on_ack and (votes or rd.persisted_messages):
                # Churn: crashes where durability matters, between writing a vote or
                # accepted entries and the fsync their answers wait for; back at once.
                p = sim.crash_on_ack * (5 if votes else 1)
                if rng.random() < p:
                    sim.crash_node(self, soon=True)
                    return False
            elif (sim.crash_on_ack and rd.entries is not None and rd.messages
                  and node.role == LEADER and rng.random() < sim.crash_on_ack / 4):
                # ... and a leader between sending entries and its own fsync (thesis
                # §10.2.1): it restarts without them, while followers hold them.
                sim.crash_node(self, soon=True)
                return False
            if sim.crash_in_ready and rng.random() < sim.crash_in_ready:
                sim.crash_node(self)       # before the sync: a torn tail at most survives
                return False
            if sim.sync_delay and rd.must_sync and rng.random() < 0.5:
                self.inflight = rd
                self.sync_at = sim.now + rng.randint(1, sim.sync_delay)
                return True
            if not self._finish(sim, rd):
                return False
        return True

    def _finish(self, sim, rd) -> bool:
        self.inflight = None
        self.storage.sync()                # one fsync for the whole Ready (group commit)
        for m in rd.persisted_messages:
            sim.net.send(sim.now, m)
        if sim.crash_in_ready and sim.rng.random() < sim.crash_in_ready:
            sim.crash_node(self)           # after the sync, before applying
            return False
        if rd.snapshot is not None:
            self.sm = self.machine.from_data(rd.snapshot.data)
        if rd.committed is not None:
            sm = self.sm
            checker = sim.checker
            wl = sim.workload
            i = rd.committed.first_index
            for term, payload in rd.committed.entries:
                sm.apply(i, payload, term)
                checker.on_apply(self.id, i, sm.digest)
                wl.on_apply(self.id, i, term, payload)
                i += 1
        self.waiting_reads.extend(rd.read_states)
        for ctx in rd.dropped_reads:
            sim.workload.on_read_dropped(ctx)
        self._watched(sim, self.node.advance, rd)
        if self.waiting_reads:
            self._serve_reads(sim)
        self._maybe_snapshot()
        return True

    def _serve_reads(self, sim) -> None:
        keep = []
        for rs in self.waiting_reads:
            if self.sm.index >= rs.index:
                sim.workload.on_read_state(self.id, rs.context, rs.index)
            else:
                keep.append(rs)
        self.waiting_reads = keep

    def _maybe_snapshot(self) -> None:
        applied = self.sm.index
        if applied - self.storage.snapshot_index < self.snapshot_every:
            return
        try:
            term = self.node.term_at(applied)
        except CompactedError:
            # A snapshot from the leader was restored while this Ready awaited its fsync:
            # it covers what we applied and arrives in the next Ready (the runtime's
            # snapshot taker skips the same way).
            return
        # The configuration at ``applied`` (learners included), not the one in effect now:
        # conf-change entries appended after ``applied`` are not covered by this snapshot.
        cs = self.node.conf_state_at(applied)
        meta = SnapshotMeta(applied, term, cs.voters, cs.outgoing, cs.learners)
        snap = Snapshot(meta, self.sm.data())
        self.storage.save_snapshot(snap)
        self.node.compact(snap, keep_from=max(applied - self.keep_tail, 1))
