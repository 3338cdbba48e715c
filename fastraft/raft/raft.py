"""The Raft protocol as a deterministic state machine: roles, elections, replication,
commitment, ReadIndex and leadership transfer.

Place in the architecture: the heart of the sans-IO engine. It imports only the core (through
``fastraft.core``), ``fastraft.errors`` and the standard library's pure modules; time is ticks,
randomness an injected ``random.Random``. ``rawnode.py`` wraps it into the Ready/advance loop;
the runtime (``fastraft/server``) and the simulator (``fastraft/sim``) drive that.

Rules (Raft paper §5, Ongaro's thesis; etcd-io/raft is the model for the shape):

1. Every message carries a term. A higher term turns us into a follower of that term before
   anything else, except (a) a vote request while we are inside a live leader's lease (we
   heard from a leader less than an election timeout ago, check-quorum) and not a leadership
   transfer: ignored, so a partitioned node cannot depose a healthy leader (thesis §4.2.3);
   (b) pre-votes and granted pre-vote answers, which never change terms (thesis §9.6).
   A lower term is ignored, except that a stale leader is told our term so it steps down,
   and a pre-vote is rejected.
2. Votes (§5.2, §5.4.1): at most one per term, only to a candidate whose log is at least as
   up-to-date as ours. The vote is part of the hard state, which the runtime makes durable
   before the answer leaves the node (answers are "after persist" messages).
3. A new leader appends a no-op entry of its term (§8); it commits entries only by counting
   replicas of an entry of its own term (§5.4.2), through the core's quorum arithmetic, and
   counts its own copy only once durable (thesis §10.2.1: it may send before its own fsync).
4. Followers that do not match get fast backtracking: a rejection carries a conflict hint
   (index, term) and the leader skips whole terms.
5. Check-quorum: a leader that has not heard from a quorum within an election timeout steps
   down (thesis §6.2).
6. ReadIndex (thesis §6.4): a read is safe at the commit index recorded when a heartbeat
   round starts, once a quorum answered that round; reads wait for the leader's no-op to
   commit; reads arriving while a round is in flight wait for the next one, so one heartbeat
   round serves a whole batch. A leader that steps down drops its pending reads (the runtime
   answers them NotLeader with the hint).
7. Leadership transfer (thesis §3.10): the leader stops taking proposals, catches the target
   up, then sends TIMEOUT_NOW; the target campaigns at once, its votes marked ``transfer``.
   The transfer is abandoned after an election timeout.
8. Membership (thesis §4.3, etcd's ConfChangeV2; ``confchange.py``): a configuration takes
   effect when its conf-change entry (payload starting 0xc1) is appended, on every node, and
   is rolled back if that entry is truncated. Voter changes always go through a joint
   configuration (both majorities for commit, elections and reads), which the leader leaves
   by itself once the joint entry commits; learner-only changes take effect directly.
   Learners get appends and snapshots but never count or campaign, and no candidate counts
   their votes; a node that is a learner in its own configuration still answers a vote
   request like a voter (etcd does the same): its promotion may be committed without it, and
   a candidate that counts it as a voter may need its vote (otherwise the cluster can be left
   without any electable majority). One change at a time: none while a conf-change entry is
   uncommitted or a joint configuration is not left. A leader outside the configuration it
   committed steps down, handing the lead to an up-to-date voter of the new configuration
   (TIMEOUT_NOW) so that no election timeout is lost. A node removed by an entry it does
   not know committed still campaigns (counting only the others' votes): with the removed
   leader's log ahead of everyone's, the old majority may need it, and it alone can finish
   the change (a two-voter cluster removing its leader would otherwise never elect again).
   Leadership is only transferred to an incoming voter. The configuration methods live in
   ``membership.py`` (a mixin of ``Raft``).
9. Fast failover on evidence (``leader_lost``): the runtime tells a follower that the
   connection from its leader closed (a killed process's sockets close at once). The
   follower's lease ends there (it forgets the leader, so it answers vote requests) and it
   campaigns, with a pre-vote, within 1..HURRY_TICKS ticks, unless a candidate asks for its
   vote first (it then waits a normal election timeout). A live leader is not disturbed:
   followers that still hear from it ignore the pre-vote (rule 1a), and its next heartbeat
   ends the campaign. Two pre-candidates with equally up-to-date logs would both win their
   pre-votes and split the real vote: a pre-candidate refuses the pre-vote of one with a
   higher id, and a pre-candidate asked for a pre-vote by a voter it has no answer from asks
   that voter again (its first request may have arrived while the voter was still in its
   lease, and was ignored).

Role functions are swapped, not tested in an if-ladder: ``_step`` and ``_tick`` point to the
current role's handlers (etcd's stepLeader/stepCandidate/stepFollower).

Glossary (short names kept from etcd-io/raft, so its code and this one read side by side):

    hup        the election timeout fired ("hang up" on the leader): start a campaign
    prs, pr    the leader's ``progress.Progress`` of every voter (id -> Progress); one of them
    rr         the ReadIndex round in flight (``ReadRound``)
    mci        the quorum's commit index ("majority committed index", rule 3)
    li, lt     the last index and last term of a log
    bcast      send to every other voter
    msgs       messages that may leave now; ``msgs_after_persist``: only once the Ready is
               durable (rule 2)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from ..core import VOTE_LOST, VOTE_WON, joint_committed_index, joint_vote_result
from ..errors import Busy, CompactedError, LocalProtocolError, NotLeader
from .confchange import CONF_MARKER, ConfState
from .log import RaftLog, initial_snapshot
from .membership import Membership
from .messages import NO_NODE, LEADER_TYPES, HardState, Message, MsgType, ReadState, Snapshot
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress

__all__ = ["RaftConfig", "Raft", "ReadRound", "FOLLOWER", "PRE_CANDIDATE", "CANDIDATE",
           "LEADER", "ROLE_NAMES"]

FOLLOWER = 0
PRE_CANDIDATE = 1
CANDIDATE = 2
LEADER = 3
#: An upper bound on what one entry adds to an append message besides its payload: msgpack's
#: u64 term (9 bytes) and bin32 length header (5), rounded up. Counted in ``max_msg_bytes``.
ENTRY_FRAMING = 16
ROLE_NAMES = {FOLLOWER: "follower", PRE_CANDIDATE: "pre-candidate", CANDIDATE: "candidate",
              LEADER: "leader"}

#: Rule 9: a follower whose leader's connection closed campaigns within this many ticks.
HURRY_TICKS = 3

# Kinds of campaign.
PRE_ELECTION = 0
ELECTION = 1
TRANSFER = 2

APP = MsgType.APP
APP_RESP = MsgType.APP_RESP
VOTE = MsgType.VOTE
VOTE_RESP = MsgType.VOTE_RESP
PRE_VOTE = MsgType.PRE_VOTE
PRE_VOTE_RESP = MsgType.PRE_VOTE_RESP
HEARTBEAT = MsgType.HEARTBEAT
HEARTBEAT_RESP = MsgType.HEARTBEAT_RESP
SNAP = MsgType.SNAP
TIMEOUT_NOW = MsgType.TIMEOUT_NOW


class ReadRound(NamedTuple):
    """A ReadIndex round in flight (rule 6): the heartbeats whose context is ``id`` collect
    ``acks`` (voter id -> True); once a quorum answered, every read of ``contexts`` is safe
    at ``index``, the commit index when the round started. (White-box tests build one as a
    plain tuple, so the engine unpacks it rather than reading its fields by name.)"""

    id: int
    index: int
    contexts: list
    acks: dict


@dataclass
class RaftConfig:
    """Settings of one engine. Ticks are the runtime's unit of time."""

    id: int
    voters: frozenset                     # empty: the configuration comes from the log or a
                                          # snapshot (a bootstrap conf-change entry, a node
                                          # that waits to be added); until then it never
                                          # campaigns
    outgoing: frozenset = frozenset()     # non-empty: a joint configuration (thesis §4.3)
    election_tick: int = 10               # timeouts are random in [election, 2*election)
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 256          # per follower, appends sent and not acknowledged
    max_inflight_bytes: int = 16 << 20    # per follower, their payload bytes
    max_msg_bytes: int = 1 << 20          # bytes per append message, payload plus
                                          # ENTRY_FRAMING per entry (>= 1 entry)
    max_uncommitted: int = 8192           # leader's appended-but-uncommitted entries: Busy
    max_apply_bytes: int = 64 << 20       # committed payload bytes handed out per Ready
    rejoining: bool = False               # this node lost its data (wiped disk): it neither
                                          # votes nor campaigns until a leader caught it up
    learners: frozenset = frozenset()     # receive the log, never vote nor count
    promote_lag: int = 16                 # a learner is promoted only when its match is
                                          # within this many entries of the leader's last

    def __post_init__(self) -> None:
        self.voters = frozenset(self.voters)
        self.outgoing = frozenset(self.outgoing)
        self.learners = frozenset(self.learners)
        if self.learners & (self.voters | self.outgoing):
            raise ValueError("learners and voters must be disjoint")
        if self.promote_lag < 0:
            raise ValueError("promote_lag must be >= 0")
        if self.id <= NO_NODE:
            raise ValueError(f"node ids are >= 1, not {self.id}")
        if self.outgoing and not self.voters:
            raise ValueError("a joint configuration needs incoming voters")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")


class Raft(Membership):
    """One node's Raft state and the protocol's rules (module docstring). Private to the
    engine: runtimes drive it through RawNode (``rawnode.py``), which turns what it leaves
    in ``msgs``, ``msgs_after_persist``, ``read_states`` and the log into Readys. The
    configuration methods (rule 8: ``conf_state``, ``conf_state_at``, ``conf_in_flight``,
    ``propose_conf_change`` and the private ones they use) come from ``membership.py``."""

    LEADER_ROLE = LEADER

    def __init__(self, cfg: RaftConfig, rng: random.Random, log: RaftLog | None = None,
                 hard_state: HardState = HardState()) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.rng = rng
        self.log = log if log is not None else RaftLog(initial_snapshot(
            cfg.voters, cfg.outgoing, cfg.learners))
        meta = self.log.snapshot.meta
        # A restored snapshot's configuration wins over the static one, once it is not empty;
        # the conf-change entries retained after it take effect on top (they did when
        # appended, before the restart).
        if meta.voters and meta.index > 0:
            base = ConfState(meta.voters, meta.outgoing, meta.learners)
        else:
            base = ConfState(cfg.voters, cfg.outgoing, cfg.learners)
        self.prs: dict[int, Progress] = {}
        self.role = FOLLOWER
        self.conf_version = 0       # +1 at every change of the configuration in effect
        self._reset_conf(base, meta.index)
        log_ = self.log
        if log_.last_index > meta.index:
            self._scan_conf(meta.index + 1, log_.entries(meta.index + 1, log_.last_index + 1))
        self.term = hard_state.term
        self.vote = hard_state.vote
        # A node that lost its data must not vote: its empty log would make any candidate
        # look up to date, and a candidate without a committed entry could win with it.
        # Cleared once it holds everything a leader of the current term has committed.
        self.rejoining = cfg.rejoining
        if hard_state.commit > self.log.committed:
            self.log.commit_to(hard_state.commit)
        self.lead = NO_NODE
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_tick
        self.hurried = False        # rule 9: campaigning soon after the leader's loss
        self.lead_transferee = NO_NODE
        self.msgs: list[Message] = []                 # may leave now
        self.msgs_after_persist: list[Message] = []   # only once the Ready is durable
        # ReadIndex: contexts waiting for a round, the round in flight, and results.
        self.read_waiting: list = []
        self.read_round: ReadRound | None = None
        self.read_round_id = 0
        self.read_states: list[ReadState] = []
        self.dropped_reads: list = []
        self._step = self._step_follower
        self._tick = self._tick_election
        self.become_follower(self.term, NO_NODE)

    # -- small helpers ----------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"Raft(id={self.id}, role={ROLE_NAMES[self.role]}, term={self.term}, "
                f"vote={self.vote}, lead={self.lead}, {self.log!r})")

    @property
    def all_voters(self) -> frozenset:
        """Every voter of the configuration, incoming and outgoing (joint consensus)."""
        return self.voters | self.outgoing

    @property
    def promotable(self) -> bool:
        """Whether this node may campaign: it votes in its configuration, or a conf-change
        entry not yet committed (as far as it knows) removed it from the committed one (rule
        8: the outgoing majority may still need it, and its log may be the only one holding
        that entry: it leads only to finish its removal)."""
        if self.id in self.voters or self.id in self.outgoing:
            return True
        if self.conf_log and self.conf_log[-1][0] > self.log.committed:
            cs = self.conf_state_at(self.log.committed)
            return self.id in cs.voters or self.id in cs.outgoing
        return False

    # -- configuration: membership.py (the ``Membership`` mixin) -----------------------------

    def hard_state(self) -> HardState:
        """The state that must be durable before this node's answers leave (rule 2)."""
        return HardState(self.term, self.vote, self.log.committed)

    def send(self, m: Message) -> None:
        """Queue ``m`` in ``msgs`` or ``msgs_after_persist`` by what it depends on."""
        # Leader-to-follower traffic may leave before this node's own fsync (thesis §10.2.1);
        # answers and vote requests depend on the hard state and entries just changed, so
        # they wait until the runtime has made the Ready durable.
        if m.type in LEADER_TYPES:
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        lo = self.cfg.election_tick
        self.randomized_election_timeout = lo + self.rng.randrange(lo)
        self.hurried = False
        self.votes = {}
        self.lead_transferee = NO_NODE
        self._drop_reads()

    def _drop_reads(self) -> None:
        if self.read_round is not None:
            _rid, _index, contexts, _acks = self.read_round
            self.dropped_reads.extend(contexts)
            self.read_round = None
        if self.read_waiting:
            self.dropped_reads.extend(self.read_waiting)
            self.read_waiting = []

    # -- role transitions -------------------------------------------------------------------

    def become_follower(self, term: int, lead: int) -> None:
        """Follow ``lead`` (NO_NODE: unknown) in ``term``; a new term clears the vote."""
        self._reset(term)
        self.lead = lead
        self.role = FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election
        self.prs = {}

    def become_pre_candidate(self) -> None:
        """Start a pre-vote round: term and vote stay as they are."""
        assert self.role != LEADER, "invalid transition: leader -> pre-candidate"
        # Pre-vote changes neither term nor vote (thesis §9.6).
        self.role = PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.lead = NO_NODE
        self.prs = {}

    def become_candidate(self) -> None:
        """Start an election: the next term, voting for ourselves."""
        assert self.role != LEADER, "invalid transition: leader -> candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.prs = {}

    def become_leader(self) -> None:
        """Take the lead after winning: a Progress per voter, the no-op of the term, appends
        to everyone."""
        assert self.role == CANDIDATE, f"invalid transition: {ROLE_NAMES[self.role]} -> leader"
        self._reset(self.term)
        self.lead = self.id
        self.role = LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        cfg = self.cfg
        nxt = self.log.last_index + 1
        self.prs = {v: Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                    for v in self.all_voters | self.learners}
        me = self.prs.get(self.id)
        if me is not None:
            # Our own copy counts only once durable (rule 3): match is the stable index.
            me.match = self.log.stable
            me.become_replicate()
            me.recent_active = True
        # The no-op of the new term (§8): committing it commits everything before it.
        self.log.append(self.term, [b""])
        self.bcast_append()

    # -- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of time: election timeout for followers and candidates, heartbeats and
        the check-quorum deadline for a leader."""
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NO_NODE)
                return
            if self.lead_transferee != NO_NODE:
                self.lead_transferee = NO_NODE   # transfer took too long: abandon it
        if self.role != LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()

    def _quorum_active(self) -> bool:
        """Has a quorum been heard from since the last check? Resets the marks."""
        active = {}
        for vid, pr in self.prs.items():
            active[vid] = vid == self.id or pr.recent_active
            if vid != self.id:
                pr.recent_active = False
        return joint_vote_result(self.voters, self.outgoing, active) == VOTE_WON

    def leader_lost(self, pid: int) -> None:
        """Rule 9: the runtime saw the connection from ``pid`` close. When ``pid`` is the
        leader this follower follows, end its lease and campaign within 1..HURRY_TICKS
        ticks."""
        if self.role != FOLLOWER or pid == NO_NODE or self.lead != pid or not self.promotable:
            return
        self.lead = NO_NODE
        soon = self.randomized_election_timeout - 1 - self.rng.randrange(HURRY_TICKS)
        if self.election_elapsed < soon:
            self.election_elapsed = soon
        self.hurried = True

    # -- elections --------------------------------------------------------------------------

    def hup(self) -> None:
        """Election timeout: start an election, with a pre-vote round first when enabled."""
        self.campaign(PRE_ELECTION if self.cfg.pre_vote else ELECTION)

    def campaign(self, kind: int) -> None:
        """PRE_ELECTION asks for pre-votes at term+1 without changing anything; ELECTION
        increments the term and votes for itself; TRANSFER is an ELECTION whose requests are
        marked so that voters inside a leader lease still answer (TIMEOUT_NOW)."""
        if self.role == LEADER or not self.promotable or self.rejoining:
            return
        if kind == PRE_ELECTION:
            self.become_pre_candidate()
            vtype, term = PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vtype, term = VOTE, self.term
        self.votes[self.id] = True
        if self._tally() == VOTE_WON:
            self._won()
            return
        li, lt = self.log.last_index, self.log.last_term
        transfer = kind == TRANSFER
        for vid in sorted(self.all_voters):
            if vid != self.id:
                self.send(Message(vtype, vid, self.id, term, log_term=lt, index=li,
                                  transfer=transfer))

    def _tally(self) -> int:
        return joint_vote_result(self.voters, self.outgoing, self.votes)

    def _won(self) -> None:
        if self.role == PRE_CANDIDATE:
            self.campaign(ELECTION)   # pre-vote won: the real election
        else:
            self.become_leader()

    def _handle_vote(self, m: Message) -> None:
        resp = VOTE_RESP if m.type == VOTE else PRE_VOTE_RESP
        can_vote = (self.vote == m.frm
                    or (self.vote == NO_NODE and self.lead == NO_NODE)
                    or (m.type == PRE_VOTE and m.term > self.term))
        # Not ``self.id not in self.learners``: rule 8 (a learner may be a promoted voter
        # that has not appended its promotion yet; only candidates that count it ask).
        log = self.log
        if self.role == PRE_CANDIDATE and m.type == PRE_VOTE:
            # Rule 9: of two pre-candidates with logs equally up to date, the lower id goes
            # first; and one that asked the sender before may have been ignored (its lease).
            if m.frm > self.id and m.index == log.last_index and m.log_term == log.last_term:
                can_vote = False
            if m.frm not in self.votes and m.frm in self.all_voters:
                self.send(Message(PRE_VOTE, m.frm, self.id, self.term + 1,
                                  log_term=log.last_term, index=log.last_index))
        if can_vote and not self.rejoining and log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, m.frm, self.id, m.term))
            if m.type == VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
            elif self.hurried and self.lead == NO_NODE:
                self.election_elapsed = 0       # rule 9: let the candidate win first
                self.hurried = False
        else:
            self.send(Message(resp, m.frm, self.id, self.term, reject=True))

    # -- the entry point for messages --------------------------------------------------------

    def step(self, m: Message) -> None:
        """Take one message from a peer: apply the term rules (rule 1), then hand it to the
        vote handler or the current role's handler. Trusts ``m`` (RawNode.check_message and
        the codec validate what arrives from the network)."""
        term = m.term
        mtype = m.type
        if term > self.term:
            if mtype == VOTE or mtype == PRE_VOTE:
                in_lease = (self.cfg.check_quorum and self.lead != NO_NODE
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and not m.transfer:
                    return   # rule 1a
            if mtype == PRE_VOTE or (mtype == PRE_VOTE_RESP and not m.reject):
                pass         # rule 1b
            elif mtype in LEADER_TYPES:
                self.become_follower(term, m.frm)
            else:
                self.become_follower(term, NO_NODE)
        elif term < self.term:
            if mtype == APP or mtype == HEARTBEAT:
                # A stale leader: our higher term in the answer makes it step down.
                self.send(Message(APP_RESP, m.frm, self.id, self.term))
            elif mtype == PRE_VOTE:
                self.send(Message(PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return
        if mtype == VOTE or mtype == PRE_VOTE:
            self._handle_vote(m)
        else:
            self._step(m)

    # -- followers --------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        mtype = m.type
        if mtype == APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif mtype == HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif mtype == SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif mtype == TIMEOUT_NOW:
            self.campaign(TRANSFER)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            if self.conf_log and self.conf_log[-1][0] > m.index:
                self._rollback_conf()     # the append may have truncated a conf change
            if m.entries:
                self._scan_conf(m.index + 1, m.entries)
            if self.rejoining:
                self._maybe_rejoined(m.commit)
            self.send(Message(APP_RESP, m.frm, self.id, self.term, index=last))
            return
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index),
                                                          m.log_term)
        self.send(Message(APP_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
                          hint_index=hint_index, hint_term=hint_term))

    def _maybe_rejoined(self, leader_commit: int) -> None:
        """A rejoining node votes again once it holds the leader's commit index (from an
        append: heartbeats carry a commit capped by our match, which says nothing about
        what we lack) and that entry is of the leader's term: such a commit index covers
        every entry ever committed, including those our lost data had acknowledged."""
        log = self.log
        if (log.committed >= leader_commit > 0 and log.last_index >= leader_commit
                and log.term(leader_commit) == self.term):
            self.rejoining = False

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.log
        log.commit_to(min(m.commit, log.last_index))
        self.send(Message(HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))
        if m.commit > log.last_index:
            # A heartbeat's commit is capped by what the leader knows we hold: beyond our
            # log, we lost acknowledged entries (a wiped disk). Say so as a rejection, or a
            # leader with nothing new to send would only ever heartbeat us.
            self.send(Message(APP_RESP, m.frm, self.id, self.term, index=m.commit,
                              reject=True, hint_index=log.last_index,
                              hint_term=log.last_term))

    def _handle_snapshot(self, m: Message) -> None:
        log = self.log
        meta = m.snapshot.meta
        if meta.index <= log.committed:
            self.send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just move the commit forward.
            log.commit_to(meta.index)
            self.send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        log.restore(m.snapshot)
        if meta.voters:
            self._reset_conf(ConfState(meta.voters, meta.outgoing, meta.learners), meta.index)
        else:
            self._reset_conf(self.conf_state(), meta.index)
        self.send(Message(APP_RESP, m.frm, self.id, self.term, index=log.last_index))

    # -- candidates -------------------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        mtype = m.type
        if mtype == APP or mtype == HEARTBEAT or mtype == SNAP:
            # A leader of our term exists (§5.2): follow it.
            self.become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        want = PRE_VOTE_RESP if self.role == PRE_CANDIDATE else VOTE_RESP
        if mtype != want or m.frm not in self.all_voters:
            return
        self.votes[m.frm] = not m.reject
        result = self._tally()
        if result == VOTE_WON:
            self._won()
        elif result == VOTE_LOST:
            self.become_follower(self.term, NO_NODE)

    # -- leaders ----------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        mtype = m.type
        if mtype == APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif mtype == HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index:
                # Appends may have been lost. An append from ``next`` (empty when ``next`` is
                # past the end) either carries what is missing or is rejected, which drops
                # the follower back to a probe from its match (etcd does the same).
                self.maybe_send_append(m.frm, pr)
            if self.read_round is not None:
                rid, _index, _contexts, acks = self.read_round
                if m.context == rid:
                    acks[m.frm] = True
                    self._maybe_finish_read_round()

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        log = self.log
        if m.reject:
            if m.index <= pr.match and m.hint_index < pr.match:
                # The follower no longer holds entries it acknowledged: its data directory
                # was wiped or lost. Start over from what it has now (a snapshot, usually).
                # Lowering match is conservative: the commit index never moves backwards.
                # A stale rejection can land here too; it only costs a re-probe.
                pr.match = m.hint_index
                pr.pending_snapshot = 0
                pr.become_probe()
                self.maybe_send_append(m.frm, pr, send_empty=True)
                return
            # Fast backtracking: skip to the last index of ours whose term is at most the
            # follower's conflicting term, at or below its hint index.
            match_hint = log.find_conflict_by_term(m.hint_index, m.hint_term)[0]
            if pr.maybe_decrease_to(m.index, match_hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self.maybe_send_append(m.frm, pr, send_empty=True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        else:
            if was_paused or pr.state == REPLICATE:
                while self.maybe_send_append(m.frm, pr, send_empty=False):
                    pass
            if pr.sent_commit < min(pr.match, log.committed):
                # The entry committed before this follower acknowledged it: tell it now
                # rather than at the next heartbeat.
                self.maybe_send_append(m.frm, pr)
        if m.frm == self.lead_transferee and pr.match == log.last_index:
            self.send(Message(TIMEOUT_NOW, m.frm, self.id, self.term))

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum matches, if that entry is of our term
        (rule 3); returns whether it moved."""
        prs = self.prs
        log = self.log
        if self.outgoing:
            mci = joint_committed_index([prs[v].match for v in self.voters],
                                        [prs[v].match for v in self.outgoing])
        else:
            mci = joint_committed_index([prs[v].match for v in self.voters], ())
        if mci > log.committed and log.term(mci) == self.term:   # rule 3, §5.4.2
            log.commit_to(mci)
            self._maybe_start_read_round()
            if self.outgoing or self.id not in self.voters:
                self._after_commit_conf()
            return True
        return False

    def maybe_send_append(self, to: int, pr: Progress | None = None,
                          send_empty: bool = True) -> bool:
        """Send ``to`` the entries from its ``next`` index (or a snapshot when they were
        compacted away). Returns whether a message went out."""
        if pr is None:
            pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        try:
            prev_term = log.term(prev)
        except CompactedError:
            return self._send_snapshot(to, pr)
        last = log.last_index
        if pr.next <= last:
            entries = log.entries(pr.next, last + 1, self.cfg.max_msg_bytes)
        else:
            if not send_empty:
                return False
            entries = []
        n = len(entries)
        size = 0
        if n:
            # The byte budget counts each entry's framing too: a message of many small
            # entries would otherwise encode well past max_msg_bytes (twice it for 11-byte
            # commands) and past the frame limit of the receiving node, which would refuse
            # it again at every retry. The first entry always goes.
            budget = self.cfg.max_msg_bytes
            framed = 0
            for i, e in enumerate(entries):
                framed += len(e[1]) + ENTRY_FRAMING
                if framed > budget and i:
                    entries = entries[:i]
                    n = i
                    break
                size += len(e[1])
        pr.sent_entries(prev + n, n, size)
        pr.sent_commit = log.committed
        self.msgs.append(Message(APP, to, self.id, self.term, log_term=prev_term, index=prev,
                                 entries=entries, commit=log.committed))
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False   # do not stream a snapshot to a node that may be down
        snap = self.log.snapshot
        pr.become_snapshot(snap.meta.index)
        self.msgs.append(Message(SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def bcast_append(self) -> None:
        """Send every other voter what it lacks (entries, an empty append, or a snapshot)."""
        for vid, pr in self.prs.items():
            if vid != self.id:
                self.maybe_send_append(vid, pr)

    def bcast_heartbeat(self) -> None:
        """Heartbeat every other voter, carrying the read round in flight (rule 6)."""
        ctx = 0
        if self.read_round is not None:
            ctx, _index, _contexts, _acks = self.read_round
        committed = self.log.committed
        for vid, pr in self.prs.items():
            if vid != self.id:
                # Never tell a follower to commit past what it is known to match.
                commit = min(pr.match, committed)
                if commit > pr.sent_commit:
                    pr.sent_commit = commit
                self.msgs.append(Message(HEARTBEAT, vid, self.id, self.term,
                                         commit=commit, context=ctx))

    # -- client-facing inputs ---------------------------------------------------------------

    def propose(self, payloads) -> tuple[int, int]:
        """Append a batch of commands; returns ``(first_index, term)`` of the batch. Raises
        NotLeader (with the hint) on a non-leader and Busy while a transfer runs or when
        too many entries are uncommitted (certainly not applied, in both cases)."""
        if self.role != LEADER:
            raise NotLeader(self.lead if self.lead != NO_NODE else None)
        if self.lead_transferee != NO_NODE:
            raise Busy(f"leadership transfer to {self.lead_transferee} in progress")
        log = self.log
        if log.last_index - log.committed + len(payloads) > self.cfg.max_uncommitted:
            raise Busy(f"{log.last_index - log.committed} entries await commitment")
        for p in payloads:
            if not p:
                raise LocalProtocolError("empty payloads are reserved for the leader's no-op")
            if p[0] == CONF_MARKER:
                raise LocalProtocolError("payloads starting with 0xc1 are configuration "
                                         "changes: use propose_conf_change")
        first = log.last_index + 1
        log.append(self.term, payloads)
        self.bcast_append()
        return first, self.term

    def read_index(self, context) -> None:
        """Ask for a linearizable read; ``context`` comes back in a ReadState (or among the
        dropped reads if leadership is lost first)."""
        if self.role != LEADER:
            raise NotLeader(self.lead if self.lead != NO_NODE else None)
        self.read_waiting.append(context)
        self._maybe_start_read_round()

    def _maybe_start_read_round(self) -> None:
        if self.read_round is not None or not self.read_waiting or self.role != LEADER:
            return
        log = self.log
        if log.term(log.committed) != self.term:
            return   # rule 6: wait for the no-op of this term to commit
        self.read_round_id += 1
        acks = {self.id: True}
        self.read_round = ReadRound(self.read_round_id, log.committed, self.read_waiting, acks)
        self.read_waiting = []
        if not self._maybe_finish_read_round():
            self.bcast_heartbeat()

    def _maybe_finish_read_round(self) -> bool:
        rid, index, contexts, acks = self.read_round
        if joint_vote_result(self.voters, self.outgoing, acks) != VOTE_WON:
            return False
        self.read_states.extend(ReadState(c, index) for c in contexts)
        self.read_round = None
        self._maybe_start_read_round()
        return True

    def transfer_leadership(self, to: int) -> None:
        """Hand the lead to voter ``to`` (rule 7): proposals get Busy until the transfer ends.
        NotLeader on a non-leader."""
        if self.role != LEADER:
            raise NotLeader(self.lead if self.lead != NO_NODE else None)
        if to == self.id:
            return
        if to not in self.prs or to not in self.voters:
            # Not an outgoing-only voter either: it is being removed, and a TIMEOUT_NOW
            # reaching it after its removal would make it disrupt the cluster (rule 8).
            raise LocalProtocolError(f"cannot transfer leadership to {to}: not an incoming "
                                     "voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0   # the transfer must finish within an election timeout
        pr = self.prs[to]
        if pr.match == self.log.last_index:
            self.send(Message(TIMEOUT_NOW, to, self.id, self.term))
        else:
            self.maybe_send_append(to, pr)

    # -- runtime feedback -------------------------------------------------------------------

    def on_persisted(self) -> None:
        """Called by RawNode.advance once a Ready's entries are durable: the leader's own
        copy now counts towards commitment."""
        if self.role == LEADER:
            me = self.prs.get(self.id)
            if me is not None and me.maybe_update(self.log.stable):
                if self.maybe_commit():
                    self.bcast_append()

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The runtime finished (or failed) streaming a snapshot to ``to``."""
        pr = self.prs.get(to) if self.role == LEADER else None
        if pr is None or pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True   # wait for the follower's answer or the next heartbeat

    def report_unreachable(self, to: int) -> None:
        """The runtime could not reach ``to``: stop pipelining to it and probe instead."""
        pr = self.prs.get(to) if self.role == LEADER else None
        if pr is not None and pr.state == REPLICATE:
            pr.become_probe()

    def compact(self, snapshot: Snapshot, keep_from: int | None = None) -> None:
        """The runtime took ``snapshot`` of the applied state: release the log it covers."""
        self.log.compact(snapshot, keep_from)
        self._compact_conf(self.log.snapshot.meta.index)
