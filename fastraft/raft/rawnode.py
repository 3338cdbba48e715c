"""RawNode: the Ready/advance contract between the sans-IO engine and whatever drives it.

Place in the architecture: the engine's outer surface. The runtime (``fastraft/server``) and
the simulator (``fastraft/sim``) use only this class; it imports nothing that does IO.

The loop (etcd's rawnode.go and doc.go; raft-rs's on_ready)::

    inputs:  tick() | step(msg) | propose(payloads) | read_index(ctx) | transfer_leadership(to)
    if node.has_ready():
        rd = node.ready()
        1. send rd.messages                 (leader appends/heartbeats: may go before the sync)
        2. persist rd.snapshot, rd.entries (discarding stored entries >= rd.entries.first_index)
           and rd.hard_state, then ONE fsync for all of it (group commit) if rd.must_sync
        3. send rd.persisted_messages       (votes and acknowledgements: only once durable)
        4. install rd.snapshot into the state machine, apply rd.committed in order
        5. serve rd.read_states once applied >= their index; answer rd.dropped_reads NotLeader
        node.advance(rd)

Inputs may also be given between ``ready()`` and ``advance()``: ``advance`` uses what the
Ready recorded, not the node's current state.

Configuration changes (thesis §4.3; ``confchange.py``): ``propose_conf_change(cc)`` appends a
conf-change entry on the leader. Its payload starts with the byte 0xc1 (never the first byte
of a msgpack command). The engine applies a configuration as soon as its entry is APPENDED
(leader on propose, followers on append; a truncated uncommitted one is rolled back), needs
both majorities while joint, and the leader appends the "leave joint" entry by itself once
the joint entry commits; a leader that is not in the configuration it committed steps down.
The runtime's side of the contract:

- committed conf-change entries arrive in ``rd.committed`` like any other entry, in order;
  the runtime recognises them with ``is_conf_change(payload)``, must NOT hand them to the
  state machine, and decodes them with ``decode_conf_change`` to connect to added peers
  (each change's ``context``) and drop removed ones (once ``status()`` no longer lists them);
- the configuration in force is ``status().voters / .outgoing / .learners``; a snapshot
  taken at applied index ``i`` records ``conf_state_at(i)`` in its SnapshotMeta.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from ..errors import LocalProtocolError
from .confchange import ConfChange, ConfState
from .log import RaftLog
from .messages import EntryBatch, HardState, Message, MsgType, Snapshot, SnapshotMeta
from .raft import LEADER, Raft, RaftConfig

__all__ = ["RawNode", "Ready", "SoftState", "Status", "PeerProgress"]


class SoftState(NamedTuple):
    """Volatile facts worth reporting (leader hint, role); not persisted."""

    lead: int
    role: int


class PeerProgress(NamedTuple):
    """What the leader knows of one follower's log (``0 <= match < next``); ``state`` is a
    ``progress`` state code (PROBE, REPLICATE, SNAPSHOT)."""

    match: int
    next: int
    state: int


class Status(NamedTuple):
    """A consistent snapshot of a node's state, for logs, status answers, metrics and tests
    (etcd's ``status.go``). Invariant: ``applied <= committed``, ``stable <= last_index``."""

    id: int
    term: int
    vote: int
    lead: int                           # 0 when no leader is known
    role: int                           # raft.FOLLOWER / CANDIDATE / PRE_CANDIDATE / LEADER
    first_index: int
    last_index: int
    committed: int
    applied: int
    stable: int                         # last index known durable in storage
    rejoining: bool                     # a --rejoin node not yet caught up (no votes)
    voters: tuple                       # the configuration's voters
    outgoing: tuple                     # the outgoing voters while joint, else ()
    progress: dict                      # leader only: follower id -> PeerProgress; else {}
    learners: tuple = ()                # the configuration's learners (replicated to only)
    conf_pending: bool = False          # a conf-change entry is appended, not committed


class Ready(NamedTuple):
    """One batch of work for the runtime (module docstring: persist, send, apply, then
    ``advance``). Lists are handed over, not copied: the engine starts new ones."""

    hard_state: HardState | None        # to persist, None when unchanged
    entries: EntryBatch | None          # to persist (after truncating from first_index)
    snapshot: Snapshot | None           # received from the leader: persist and install
    messages: list                      # send now
    persisted_messages: list            # send only after the above is durable
    committed: EntryBatch | None        # apply, in order, after persisting
    read_states: list                   # linearizable reads that became safe
    dropped_reads: list                 # read contexts to answer NotLeader (leader lost)
    soft_state: SoftState | None        # leader/role changed since the last Ready
    must_sync: bool                     # an fsync is needed before persisted_messages leave:
                                        # new entries, a snapshot, or a new term or vote (a
                                        # commit index alone may be written lazily: it is
                                        # recovered from the leader after a crash)


class RawNode:
    """The engine as the runtime and the simulator see it: inputs (``tick``, ``step``,
    ``propose``, ``read_index``, ...), outputs through ``ready()`` / ``advance()``, and a few
    read-only views (``status()``, ``term``, ``role``, ``lead``, ``term_at``). The protocol
    itself (``raft.Raft``) is private: only white-box tests and the simulator's invariant
    checker reach it, as ``_raft``."""

    def __init__(self, cfg: RaftConfig, rng: random.Random | None = None,
                 log: RaftLog | None = None, hard_state: HardState = HardState()) -> None:
        self._raft = Raft(cfg, rng if rng is not None else random.Random(cfg.id), log,
                         hard_state)
        self._prev_hard = self._raft.hard_state()
        self._prev_soft = SoftState(self._raft.lead, self._raft.role)
        self._outstanding = False       # a Ready was handed out and not yet advanced

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the engine's clock by one tick (the runtime's unit of time)."""
        self._raft.tick()

    def step(self, m: Message) -> None:
        """Take one message from a peer (after ``check_message`` accepted it)."""
        self._raft.step(m)

    def check_message(self, m: Message) -> str | None:
        """Why ``m`` could not come from a correct peer of this node, or None. The runtime
        calls it on every message from the network before ``step``: the engine trusts its
        inputs, so a message that breaks the protocol's own invariants (entries older than
        the position they follow, an acknowledgement of entries this leader never had) is
        refused here instead of corrupting state."""
        r = self._raft
        if m.to != r.id:
            return f"message for node {m.to} delivered to node {r.id}"
        if m.frm == r.id:
            return "message claims to come from this node"
        mtype = m.type
        if mtype == MsgType.APP and m.entries:
            if m.entries[0][0] < m.log_term:
                return (f"APP entries of term {m.entries[0][0]} follow a position of term "
                        f"{m.log_term}")
            for t, _p in m.entries:
                if t > m.term:
                    return f"APP entry of term {t} above the message's term {m.term}"
        elif mtype == MsgType.APP_RESP and m.term == r.term and r.role == LEADER:
            last = r.log.last_index
            if m.index > last or m.hint_index > last:
                return (f"APP_RESP for index {m.index} (hint {m.hint_index}) beyond this "
                        f"leader's last index {last}")
        return None

    def propose(self, payloads) -> tuple[int, int]:
        """Append a batch of non-empty commands on the leader; returns ``(first_index,
        term)``: the k-th command is applied iff the entry at ``first_index + k`` commits
        with ``term``. NotLeader / Busy: certainly not appended."""
        return self._raft.propose(payloads)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Append configuration change ``cc`` on the leader; returns ``(index, term)`` of its
        entry (it applies to the configuration at once, module docstring). Certainly not
        appended when it raises: NotLeader; Busy (another change in flight or a joint
        configuration not yet left, a learner to promote lagging more than
        ``RaftConfig.promote_lag`` entries, a transfer, too many uncommitted entries);
        ``confchange.BadConfChange`` (a LocalProtocolError: unknown or duplicated ids,
        removing the last voter, demoting a voter, a change while joint)."""
        return self._raft.propose_conf_change(cc)

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in effect at log position ``index`` (at or above the last
        snapshot's): what a snapshot taken at ``index`` must record."""
        return self._raft.conf_state_at(index)

    @property
    def conf_version(self) -> int:
        """A number that grows each time the configuration in effect changes (a conf-change
        entry appended or rolled back, a snapshot restored): the cheap "did it change" test
        of a runtime that follows the configuration."""
        return self._raft.conf_version

    def conf_state(self) -> ConfState:
        """The configuration in effect (that of the last appended conf-change entry)."""
        r = self._raft
        return ConfState(r.voters, r.outgoing, r.learners)

    def conf_entries(self) -> tuple[SnapshotMeta, list]:
        """The snapshot's meta (whose ``context`` is the runtime's record of the
        configuration there) and the conf-change entries the log holds after it, as
        ``(index, term, payload)`` in log order, committed or not: together they say
        everything about the membership (``fastraft.server.members``)."""
        r = self._raft
        log = r.log
        out = []
        for index, term, _cs in r.conf_log:
            out.append((index, term, log.entries(index, index + 1)[0][1]))
        return log.snapshot.meta, out

    def read_index(self, context) -> None:
        """Ask for a linearizable read on the leader: ``context`` comes back in a later
        Ready's ``read_states`` (or ``dropped_reads``). NotLeader on a non-leader."""
        self._raft.read_index(context)

    def transfer_leadership(self, to: int) -> None:
        """Hand the lead to voter ``to`` (proposals are Busy meanwhile; abandoned after an
        election timeout). NotLeader on a non-leader."""
        self._raft.transfer_leadership(to)

    def campaign(self) -> None:
        """Start an election now (as if the election timeout fired)."""
        self._raft.hup()

    def leader_lost(self, pid: int) -> None:
        """The runtime saw the connection from node ``pid`` close: when it is this
        follower's leader, its lease ends and the follower campaigns within a few ticks
        (rule 9 of ``raft.py``). Harmless when ``pid`` is alive: it stays the leader."""
        self._raft.leader_lost(pid)

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The runtime finished (``ok``) or gave up streaming the snapshot a SNAP message
        asked it to send to ``to``; replication to it resumes with a probe."""
        self._raft.report_snapshot(to, ok)

    def report_unreachable(self, to: int) -> None:
        """The runtime could not deliver to ``to``: the leader probes it instead of
        pipelining."""
        self._raft.report_unreachable(to)

    def compact(self, snapshot: Snapshot, keep_from: int | None = None) -> None:
        """The state machine took ``snapshot`` (at or below the applied index): release the
        log it covers, from ``keep_from`` on kept for slow followers when given."""
        self._raft.compact(snapshot, keep_from)

    # -- outputs ----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ``ready()`` has anything to hand out (cheap: no Ready is built)."""
        r = self._raft
        log = r.log
        return bool(r.msgs or r.msgs_after_persist or r.read_states or r.dropped_reads
                    or log.stable < log.last_index or log.pending_snapshot is not None
                    or log.has_next_committed()
                    or r.term != self._prev_hard.term or r.vote != self._prev_hard.vote
                    or log.committed != self._prev_hard.commit
                    or r.lead != self._prev_soft.lead or r.role != self._prev_soft.role)

    def ready(self) -> Ready:
        """The next batch of work (module docstring); ``advance(rd)`` must follow before the
        next ``ready()`` (LocalProtocolError otherwise)."""
        if self._outstanding:
            raise LocalProtocolError("ready() called again before advance() of the last Ready")
        r = self._raft
        log = r.log
        hs = r.hard_state()
        prev = self._prev_hard
        hard = hs if hs != prev else None
        soft = SoftState(r.lead, r.role)
        soft_changed = soft if soft != self._prev_soft else None
        entries = log.unstable_entries()
        snapshot = log.pending_snapshot
        rd = Ready(
            hard_state=hard,
            entries=entries,
            snapshot=snapshot,
            messages=r.msgs,
            persisted_messages=r.msgs_after_persist,
            committed=log.next_committed(r.cfg.max_apply_bytes),
            read_states=r.read_states,
            dropped_reads=r.dropped_reads,
            soft_state=soft_changed,
            must_sync=(entries is not None or snapshot is not None
                       or hs.term != prev.term or hs.vote != prev.vote),
        )
        self._outstanding = True
        r.msgs = []
        r.msgs_after_persist = []
        r.read_states = []
        r.dropped_reads = []
        if hard is not None:
            self._prev_hard = hs
        self._prev_soft = soft
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime persisted, sent and applied ``rd``."""
        self._outstanding = False
        r = self._raft
        log = r.log
        if rd.snapshot is not None:
            if log.pending_snapshot is rd.snapshot:
                log.pending_snapshot = None
            log.applied_to(rd.snapshot.meta.index)
        if rd.entries is not None and rd.entries.entries:
            last = rd.entries.last_index
            log.stable_to(last, rd.entries.entries[-1][0])
        if rd.committed is not None and rd.committed.entries:
            log.applied_to(rd.committed.last_index)
        if r.role == LEADER and rd.entries is not None:
            r.on_persisted()

    # -- read-only views ------------------------------------------------------------------

    @property
    def applied(self) -> int:
        """The index of the last entry handed out to apply and advanced."""
        return self._raft.log.applied

    @property
    def committed(self) -> int:
        """The highest index this node knows committed."""
        return self._raft.log.committed

    @property
    def term(self) -> int:
        """The node's current term."""
        return self._raft.term

    @property
    def role(self) -> int:
        """FOLLOWER, PRE_CANDIDATE, CANDIDATE or LEADER (``raft.ROLE_NAMES``)."""
        return self._raft.role

    @property
    def lead(self) -> int:
        """The leader this node knows of in its term, 0 when none."""
        return self._raft.lead

    @property
    def rejoining(self) -> bool:
        """True while a ``--rejoin`` node has not yet been caught up (it neither votes nor
        campaigns until then)."""
        return self._raft.rejoining

    def term_at(self, index: int) -> int:
        """The term of the entry at ``index`` (the snapshot's term at its index).
        CompactedError below the retained log, UnavailableError past its end."""
        return self._raft.log.term(index)

    def status(self) -> Status:
        """A consistent snapshot of the node's state (``Status``)."""
        r = self._raft
        log = r.log
        progress = {}
        if r.role == LEADER:
            progress = {vid: PeerProgress(pr.match, pr.next, pr.state)
                        for vid, pr in r.prs.items()}
        return Status(r.id, r.term, r.vote, r.lead, r.role, log.first_index, log.last_index,
                      log.committed, log.applied, log.stable, r.rejoining, tuple(sorted(r.voters)),
                      tuple(sorted(r.outgoing)), progress, tuple(sorted(r.learners)),
                      r.conf_in_flight())

