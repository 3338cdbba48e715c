"""Test harness of the sans-IO Raft engine (``fastraft.raft``), exposed through fixtures.

Place in the architecture: test infrastructure for tests/unit/test_raft_*.py only; no fastraft
module imports it. pytest runs with ``--import-mode=importlib``, so test modules cannot import
each other or this file: everything is handed out by the ``rh`` fixture (a namespace).

- ``raft_core``: runs a test once per core implementation (``core_impl`` of tests/conftest.py)
  by pointing the engine's core names (``LogRing``, the quorum functions) at that twin for the
  duration of the test. The engine imports them at module level, so monkeypatching the module
  globals is enough.
- ``rh.Node``: one RawNode over the storage layer's ``MemoryStore`` (plus its snapshots'
  data, by ``(index, term)``, as snapshot files beside a real store), driven the way a
  runtime drives it (rawnode.py's loop): send ``messages``; persist snapshot, entries and
  hard state (``persist``); only then send ``persisted_messages``; install/apply; collect
  reads; ``advance``. While doing so it checks the durability contract on every message that
  leaves (``DurabilityViolation``): a vote request or grant only once its term and vote are
  durable, an append acknowledgement only once the acknowledged entries are durable, nothing
  but leader traffic in ``messages``. Everything written counts as durable here (``restart``
  does not ``crash`` the store): the checks compare each message with what was written
  before it left; the simulator is where unsynced writes get lost.
- ``rh.Cluster``: N nodes and a FIFO network delivered by hand (``deliver``) or until quiet
  (``stabilize``), with isolation, cut links and drop predicates. Everything is deterministic:
  each node's ``random.Random`` is seeded from the cluster seed and the node id; no clocks.

Nothing here sleeps or reads time. Entries written by helpers carry the payload
``b"<index>@<term>"`` so equal (index, term) means equal entry across nodes.
"""

from __future__ import annotations

import random
from collections import deque
from types import SimpleNamespace

import pytest

import fastraft.raft.log as raft_log_module
import fastraft.raft.raft as raft_module
from fastraft.errors import CompactedError, UnavailableError
from fastraft.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    NO_NODE,
    PRE_CANDIDATE,
    EntryBatch,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    RaftLog,
    RawNode,
    Snapshot,
    SnapshotMeta,
    initial_snapshot,
)
from fastraft.raft.messages import LEADER_TYPES
from fastraft.storage import MemoryStore


@pytest.fixture
def raft_core(core_impl, monkeypatch):
    """Point the engine at one core implementation (python twin or cython) for this test."""
    monkeypatch.setattr(raft_log_module, "LogRing", core_impl.LogRing)
    for name in ("joint_committed_index", "joint_vote_result", "VOTE_LOST", "VOTE_WON"):
        monkeypatch.setattr(raft_module, name, getattr(core_impl, name))
    return core_impl


class DurabilityViolation(AssertionError):
    """A message left a node before the state it depends on was durable."""


def payload(index: int, term: int) -> bytes:
    return f"{index}@{term}".encode()


def entries_for(terms, start: int = 1):
    """``(term, payload)`` pairs for consecutive indexes from ``start`` with these terms."""
    return [(t, payload(start + k, t)) for k, t in enumerate(terms)]


class Node:
    """One engine plus the runtime loop around it (see the module docstring)."""

    def __init__(self, cfg: RaftConfig, seed: int, store: MemoryStore, check: bool = True):
        self.cfg = cfg
        self.id = cfg.id
        self.seed = seed
        self.store = store
        self.snapshots: dict[tuple[int, int], Snapshot] = {}   # the snapshot files
        self.check = check
        self.outbox: list[Message] = []
        self.readies: list = []
        self.read_states: list = []
        self.dropped_reads: list = []
        self._boot()

    def _boot(self) -> None:
        st = self.store.recovered()
        snap = initial_snapshot(self.cfg.voters)
        if st.snapshot is not None:
            snap = self.snapshots[(st.snapshot.index, st.snapshot.term)]
            assert st.snapshot == snap.meta, (     # the store keeps the whole meta
                f"node {self.id}: the store's mark {st.snapshot} is not the snapshot's "
                f"{snap.meta}")
        log = RaftLog(snap, st.entries, committed=st.hard_state.commit)
        self.raw = RawNode(self.cfg, random.Random(self.seed), log=log,
                           hard_state=st.hard_state)
        self.applied = list(snap.data) if snap.data else []   # [(index, term, payload)]
        self.applied_index = snap.meta.index

    # -- shortcuts ----------------------------------------------------------------------------

    @property
    def raft(self):
        return self.raw._raft

    @property
    def log(self):
        return self.raw._raft.log

    @property
    def role(self) -> int:
        return self.raw._raft.role

    @property
    def term(self) -> int:
        return self.raw._raft.term

    def log_terms(self) -> list[int]:
        log = self.log
        return [log.term(i) for i in range(log.first_index, log.last_index + 1)]

    def log_entries(self) -> list:
        log = self.log
        return log.ring.slice(log.first_index, log.last_index + 1)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.raw.tick()

    def step(self, m: Message) -> None:
        self.raw.step(m)

    # -- the runtime loop ---------------------------------------------------------------------

    def handle_ready(self) -> list:
        """Process Readies until there is none; returns them. Messages go to ``outbox``."""
        done = []
        while self.raw.has_ready():
            rd = self.raw.ready()
            # 1. leader traffic may leave before our own fsync
            for m in rd.messages:
                if self.check:
                    self._check_send_now(m)
                self.outbox.append(m)
            # 2. persist, one sync
            self.persist(rd)
            if self.check:
                hs = self.store.hard_state
                assert hs.commit <= self.store.last_index, (
                    f"node {self.id}: durable commit {hs.commit} beyond durable log "
                    f"{self.store.last_index}")
            # 3. answers that depend on the durable state
            for m in rd.persisted_messages:
                if self.check:
                    self._check_durable(m)
                self.outbox.append(m)
            # 4. install and apply
            if rd.snapshot is not None:
                meta = rd.snapshot.meta
                if meta.index > self.applied_index:
                    self.applied = list(rd.snapshot.data or ())
                    self.applied_index = meta.index
            if rd.committed is not None:
                for index, (term, data) in enumerate(rd.committed.entries, rd.committed.first_index):
                    assert index == self.applied_index + 1, (
                        f"node {self.id}: applying {index} after {self.applied_index}")
                    self.applied.append((index, term, data))
                    self.applied_index = index
            # 5. reads
            self.read_states.extend(rd.read_states)
            self.dropped_reads.extend(rd.dropped_reads)
            self.raw.advance(rd)
            self.readies.append(rd)
            done.append(rd)
        return done

    def persist(self, rd) -> None:
        """Write a Ready's snapshot (its data beside the store, its mark in it), entries and
        hard state, then sync when the Ready asks for it."""
        store = self.store
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            self.snapshots[(meta.index, meta.term)] = rd.snapshot
            store.save_snapshot_mark(meta)
        if rd.entries is not None:
            store.append(rd.entries)
        if rd.hard_state is not None:
            store.save_hard_state(rd.hard_state)
        if rd.must_sync:
            store.sync()

    def drain(self) -> list[Message]:
        """Process Readies and return (and forget) every message that left."""
        self.handle_ready()
        out, self.outbox = self.outbox, []
        return out

    def _check_send_now(self, m: Message) -> None:
        if m.type not in LEADER_TYPES:
            raise DurabilityViolation(f"node {self.id}: {m.type.name} in Ready.messages: {m}")
        if self.store.hard_state.term != m.term:
            raise DurabilityViolation(
                f"node {self.id}: {m.type.name} of term {m.term} sent while the durable term "
                f"is {self.store.hard_state.term}")

    def _check_durable(self, m: Message) -> None:
        hs = self.store.hard_state
        t = m.type
        if t == MsgType.VOTE and (hs.term < m.term or (hs.term == m.term and hs.vote != self.id)):
            raise DurabilityViolation(f"node {self.id}: vote request {m} before {hs} durable")
        # A grant is safe once the vote is durable, or once a later term is (the node can
        # then never vote in m.term again: several inputs may share one Ready).
        if t == MsgType.VOTE_RESP and not m.reject and (
                hs.term < m.term or (hs.term == m.term and hs.vote != m.to)):
            raise DurabilityViolation(f"node {self.id}: vote grant {m} with durable {hs}")
        if t == MsgType.APP_RESP and not m.reject and m.index > 0:
            try:
                st = self.store.term(m.index)
            except (CompactedError, UnavailableError):
                st = None
            if st is None and m.index > self.store.last_index:
                raise DurabilityViolation(
                    f"node {self.id}: acknowledges {m.index}, durable log ends at "
                    f"{self.store.last_index}")
            try:
                mine = self.log.term(m.index)
            except IndexError:
                mine = None
            if st is not None and mine is not None and st != mine:
                raise DurabilityViolation(
                    f"node {self.id}: acknowledges {m.index}@{mine}, durable has {st}")
        if t not in (MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP) and m.term > hs.term:
            raise DurabilityViolation(
                f"node {self.id}: {t.name} at term {m.term}, durable term {hs.term}")

    # -- crash and snapshots ------------------------------------------------------------------

    def restart(self) -> None:
        """Crash (losing everything not durable, including unsent messages) and start again
        from the store."""
        self.outbox = []
        self.read_states = []
        self.dropped_reads = []
        self._boot()

    def take_snapshot(self, index: int | None = None, keep_from: int | None = None) -> Snapshot:
        """Snapshot the applied state at ``index`` (default: applied), compact engine and
        store. The snapshot's data is the applied history, so installing it is checkable."""
        if index is None:
            index = self.applied_index
        assert index <= self.applied_index
        data = tuple(e for e in self.applied if e[0] <= index)
        cs = self.raw.conf_state_at(index)      # the configuration there: joint, learners
        snap = Snapshot(SnapshotMeta(index, self.log.term(index), cs.voters, cs.outgoing,
                                     cs.learners, f"conf@{index}".encode()), data)
        self.raw.compact(snap, keep_from)
        self.snapshots[(index, snap.meta.term)] = snap      # saved atomically, then
        self.store.save_snapshot_mark(snap.meta)            # its mark, and the store's
        self.store.sync()                                   # log released up to it
        self.store.compact(index)
        return snap


def make_store(terms=(), term: int = 0, vote: int = NO_NODE, commit: int = 0) -> MemoryStore:
    """A store holding entries of these terms from index 1 and this hard state, synced."""
    store = MemoryStore()
    store.append(EntryBatch(1, entries_for(terms)))
    store.save_hard_state(HardState(term, vote, commit))
    store.sync()
    return store


class Cluster:
    """N nodes and a hand-driven FIFO network."""

    def __init__(self, n: int = 3, *, ids=None, seed: int = 0, logs=None, terms=None,
                 check: bool = True, cfg=None, voters=None, outgoing=(), **cfg_kw):
        """``logs``: {id: [term of entry 1, term of entry 2, ...]} pre-loaded as durable;
        ``terms``: {id: current term} (default: the last log term); ``cfg``: {id: {overrides}}
        per node; ``voters``/``outgoing``: the configuration (default: every node votes);
        the other keywords go to every RaftConfig."""
        ids = list(ids) if ids is not None else list(range(1, n + 1))
        self.ids = ids
        self.voters = frozenset(voters) if voters is not None else frozenset(ids)
        self.outgoing = frozenset(outgoing)
        self.seed = seed
        self.nodes: dict[int, Node] = {}
        logs = logs or {}
        terms = terms or {}
        cfg = cfg or {}
        for i in ids:
            log_terms = logs.get(i, ())
            t = terms.get(i, log_terms[-1] if log_terms else 0)
            kw = dict(cfg_kw)
            kw.update(cfg.get(i, {}))
            rc = RaftConfig(i, self.voters, outgoing=self.outgoing, **kw)
            self.nodes[i] = Node(rc, seed * 1000 + i, make_store(log_terms, t), check=check)
        self.queue: deque[Message] = deque()
        self.isolated: set[int] = set()
        self.cuts: set[frozenset] = set()
        self.drop_if = None          # predicate(m) -> True to drop
        self.report_snapshots = False   # act as the runtime's snapshot streamer
        self.dropped: list[Message] = []
        self.delivered: list[Message] = []

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    # -- network ------------------------------------------------------------------------------

    def isolate(self, *ids) -> None:
        self.isolated.update(ids)

    def cut(self, a: int, b: int) -> None:
        self.cuts.add(frozenset((a, b)))

    def heal(self) -> None:
        self.isolated.clear()
        self.cuts.clear()
        self.drop_if = None

    def blocked(self, m: Message) -> bool:
        return (m.frm in self.isolated or m.to in self.isolated
                or frozenset((m.frm, m.to)) in self.cuts
                or (self.drop_if is not None and self.drop_if(m)))

    def flush(self) -> None:
        """Run every node's Ready loop and put what they sent on the network."""
        for i in self.ids:
            node = self.nodes[i]
            node.handle_ready()
            self.queue.extend(node.outbox)
            node.outbox = []

    def take(self, pred=None) -> list[Message]:
        """Remove and return the queued messages matching ``pred`` (all by default)."""
        self.flush()
        keep, out = deque(), []
        for m in self.queue:
            (out if pred is None or pred(m) else keep).append(m)
        self.queue = keep
        return out

    def peek(self, pred=None) -> list[Message]:
        self.flush()
        return [m for m in self.queue if pred is None or pred(m)]

    def send(self, m: Message) -> None:
        """Deliver one message now (subject to the filters)."""
        if self.blocked(m):
            self.dropped.append(m)
            if self.report_snapshots and m.type == MsgType.SNAP:
                self.nodes[m.frm].raw.report_snapshot(m.to, False)
            return
        self.delivered.append(m)
        self.nodes[m.to].step(m)
        if self.report_snapshots and m.type == MsgType.SNAP:
            self.nodes[m.frm].raw.report_snapshot(m.to, True)

    def deliver(self, pred=None) -> int:
        """Deliver the queued messages matching ``pred`` once (no new ones). Returns the
        number delivered or dropped."""
        msgs = self.take(pred)
        for m in msgs:
            self.send(m)
        self.flush()
        return len(msgs)

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            self.flush()
            if not self.queue:
                return
            msgs, self.queue = self.queue, deque()
            for m in msgs:
                self.send(m)
        raise AssertionError(f"network not quiet after {max_rounds} rounds")

    # -- time and roles -----------------------------------------------------------------------

    def tick(self, n: int = 1, ids=None) -> None:
        """``n`` rounds of: tick every node (or ``ids``), then stabilize."""
        for _ in range(n):
            for i in (ids if ids is not None else self.ids):
                self.nodes[i].tick()
            self.stabilize()

    def tick_until(self, cond, max_ticks: int = 1000, ids=None) -> int:
        for k in range(max_ticks):
            if cond():
                return k
            self.tick(1, ids)
        assert cond(), f"condition not met after {max_ticks} ticks"
        return max_ticks

    def leaders(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].role == LEADER]

    def leader(self) -> int | None:
        """The leader of the highest term that has one."""
        best = None
        for i in self.leaders():
            if best is None or self.nodes[i].term > self.nodes[best].term:
                best = i
        return best

    def elect(self, i: int) -> Node:
        self.nodes[i].raw.campaign()
        self.stabilize()
        assert self.nodes[i].role == LEADER, f"node {i} did not win: {self.nodes[i].raft!r}"
        return self.nodes[i]

    def propose(self, i: int, *payloads: bytes) -> tuple[int, int]:
        res = self.nodes[i].raw.propose(list(payloads))
        return res

    def committed(self, i: int) -> int:
        return self.nodes[i].log.committed

    # -- whole-cluster checks -----------------------------------------------------------------

    def check_safety(self) -> None:
        """State machine safety: applied histories are prefixes of one another; leaders are
        unique per term."""
        hist = sorted((self.nodes[i].applied for i in self.ids), key=len)
        for a, b in zip(hist, hist[1:]):
            assert b[:len(a)] == a, f"diverging applied histories:\n{a}\n{b}"
        by_term = {}
        for i in self.leaders():
            t = self.nodes[i].term
            assert t not in by_term, f"two leaders in term {t}: {by_term[t]} and {i}"
            by_term[t] = i


def msg(type_, to, frm, term, **kw) -> Message:
    return Message(MsgType(type_), to, frm, term, **kw)


@pytest.fixture
def rh(raft_core):
    """The Raft harness (see the module docstring), bound to one core implementation."""
    return SimpleNamespace(
        Cluster=Cluster, Node=Node, make_store=make_store, msg=msg,
        entries_for=entries_for, payload=payload, DurabilityViolation=DurabilityViolation,
        M=MsgType, FOLLOWER=FOLLOWER, PRE_CANDIDATE=PRE_CANDIDATE, CANDIDATE=CANDIDATE,
        LEADER=LEADER, NO_NODE=NO_NODE, core=raft_core,
    )
