"""Engine mutants: each breaks one safety rule of the Raft paper or thesis, from the outside.

Place in the architecture: test and benchmark code only (tests/sim/test_simulator.py and
bench/sim_power.py load this file by path); nothing in ``fastraft`` imports it. The engine
(fastraft/raft/) is never edited: each mutant is applied through ``patch(obj, name, value)``,
``monkeypatch.setattr`` in tests or a restoring setattr in the benchmark, and replaces one
function, method or check by a copy with the one rule removed.

The simulator's power is the number of seeds it needs to catch each mutant (bench/sim_power.py
measures it; tests/sim/test_simulator.py keeps it within a CI budget).

Membership mutants (thesis §4, rule 8 of raft.py; the simulator drives membership changes
with its ``membership`` fault kind): a joint configuration decided by its incoming majority
alone, for commitment, elections or read rounds; learners counted for commitment; a second
change while one is in flight; configurations taking effect only once known committed.

Not a mutant: promoting a learner without the catch-up check (``promote_lag``). A lagging
promoted voter delays commitment until it catches up (availability, which is why the engine
refuses it), but every decision still needs both majorities: no safety rule depends on it.
"""

from __future__ import annotations

from fastraft import core
from fastraft.errors import NotLeader
from fastraft.raft import LEADER, ReadState
from fastraft.raft import log as raft_log
from fastraft.raft import raft as raft_mod
from fastraft.raft.confchange import CONF_MARKER
from fastraft.raft.messages import NO_NODE, Message, MsgType


def up_to_date(patch):
    """§5.4.1: votes granted without comparing the candidate's log with ours."""
    patch(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)


def commit_previous_term(patch):
    """§5.4.2: a leader commits an entry of a previous term by counting its replicas."""
    def maybe_commit(self):
        prs = self.prs
        log = self.log
        mci = raft_mod.joint_committed_index([prs[v].match for v in self.voters],
                                             [prs[v].match for v in self.outgoing])
        if mci > log.committed:               # the `term(mci) == self.term` rule is gone
            log.commit_to(mci)
            self._maybe_start_read_round()
            if self.outgoing or self.id not in self.voters:
                self._after_commit_conf()
            return True
        return False
    patch(raft_mod.Raft, "maybe_commit", maybe_commit)


def commit_quorum_minus_one(patch):
    """§5.3: the commit index is the highest index held by a minority (one short of a
    majority) instead of a majority."""
    def committed(matches):
        s = sorted(matches, reverse=True)
        return s[max(len(s) // 2 - 1, 0)]   # a majority is s[len(s) // 2]

    def joint_committed_index(voters, outgoing):
        return min(committed(voters), committed(outgoing)) if outgoing else committed(voters)
    patch(raft_mod, "joint_committed_index", joint_committed_index)


def election_quorum_minus_one(patch):
    """§5.2: a candidate wins with one vote short of a majority."""
    def result(voters, votes):
        granted = sum(1 for v in voters if votes.get(v))
        if granted >= len(voters) // 2:            # a majority is len // 2 + 1
            return raft_mod.VOTE_WON
        rejected = sum(1 for v in voters if votes.get(v) is False)
        return raft_mod.VOTE_LOST if 2 * rejected > len(voters) else 0

    def tally(self):
        r = result(self.voters, self.votes)
        if not self.outgoing:
            return r
        r2 = result(self.outgoing, self.votes)
        if r == r2:
            return r
        return raft_mod.VOTE_LOST if raft_mod.VOTE_LOST in (r, r2) else 0
    patch(raft_mod.Raft, "_tally", tally)


def no_log_matching(patch):
    """§5.3: a follower accepts an append whose previous entry it holds at another term."""
    orig = raft_log.RaftLog.match_term

    def maybe_append(self, index, log_term, commit, entries, _orig=raft_log.RaftLog.maybe_append):
        if index <= self.last_index and not orig(self, index, log_term):
            try:
                log_term = self.term(index)     # pretend the previous entry matched
            except Exception:
                pass
        return _orig(self, index, log_term, commit, entries)
    patch(raft_log.RaftLog, "maybe_append", maybe_append)


def vote_twice(patch):
    """§5.2: a node grants a second vote in a term to another candidate."""
    def handle_vote(self, m):
        resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        can_vote = (self.vote == m.frm or self.lead == NO_NODE      # the vote is not checked
                    or (m.type == MsgType.PRE_VOTE and m.term > self.term))
        if can_vote and not self.rejoining and self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, m.frm, self.id, m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, m.frm, self.id, self.term, reject=True))
    patch(raft_mod.Raft, "_handle_vote", handle_vote)


def vote_before_fsync(patch):
    """Figure 2 / thesis §3.8: a vote answer leaves before the vote is durable (a crash
    forgets it and the node votes again in the same term)."""
    orig = raft_mod.Raft.send

    def send(self, m):
        if m.type == MsgType.VOTE_RESP:
            self.msgs.append(m)
        else:
            orig(self, m)
    patch(raft_mod.Raft, "send", send)


def ack_before_fsync(patch):
    """Figure 2 / thesis §3.8: a follower acknowledges entries before they are durable (a
    crash loses entries a leader counted as replicated)."""
    orig = raft_mod.Raft.send

    def send(self, m):
        if m.type == MsgType.APP_RESP:
            self.msgs.append(m)
        else:
            orig(self, m)
    patch(raft_mod.Raft, "send", send)


def stale_term_acks(patch):
    """§5.1: a leader counts an append answer from a previous term as an acknowledgement
    of its own entries (stale-term messages must be ignored)."""
    orig = raft_mod.Raft.step

    def step(self, m):
        if (m.term < self.term and m.type == MsgType.APP_RESP and not m.reject
                and self.role == LEADER):
            self._step(m)
            return
        orig(self, m)
    patch(raft_mod.Raft, "step", step)


def heartbeat_commit_uncapped(patch):
    """§5.3: a leader tells a follower to commit up to its own commit index though the
    follower's log was not shown to match that far (the follower commits its divergent
    entries)."""
    orig = raft_mod.Raft.bcast_heartbeat

    def bcast_heartbeat(self):
        orig(self)
        committed = self.log.committed
        self.msgs[:] = [m._replace(commit=committed) if m.type == MsgType.HEARTBEAT
                        and m.frm == self.id and m.term == self.term else m
                        for m in self.msgs]
    patch(raft_mod.Raft, "bcast_heartbeat", bcast_heartbeat)


def read_before_noop(patch):
    """Thesis §6.4 step 1: a ReadIndex round starts before the leader's no-op of its term
    committed (its commit index may be behind what an earlier leader committed)."""
    def start(self):
        if self.read_round is not None or not self.read_waiting or self.role != LEADER:
            return
        self.read_round_id += 1
        self.read_round = (self.read_round_id, self.log.committed, self.read_waiting,
                           {self.id: True})
        self.read_waiting = []
        if not self._maybe_finish_read_round():
            self.bcast_heartbeat()
    patch(raft_mod.Raft, "_maybe_start_read_round", start)


def read_without_quorum(patch):
    """Thesis §6.4 step 3: reads answered at the local commit index with no heartbeat round
    (a deposed leader answers stale reads)."""
    def read_index(self, ctx):
        if self.role != LEADER:
            raise NotLeader(None)
        self.read_states.append(ReadState(ctx, self.log.committed))
    patch(raft_mod.Raft, "read_index", read_index)


# -- membership (thesis §4.3) -----------------------------------------------------------------


def joint_commit_incoming_only(patch):
    """Thesis §4.3: while joint, a leader commits with a majority of the incoming voters
    only (the outgoing majority is not asked)."""
    patch(raft_mod, "joint_committed_index",
          lambda incoming, outgoing: core.joint_committed_index(incoming, ()))


def joint_election_incoming_only(patch):
    """Thesis §4.3: while joint, a candidate wins with a majority of the incoming voters
    only."""
    patch(raft_mod.Raft, "_tally",
          lambda self: raft_mod.joint_vote_result(self.voters, (), self.votes))


def joint_read_incoming_only(patch):
    """Thesis §4.3 and §6.4: while joint, a ReadIndex round is confirmed by a majority of
    the incoming voters only."""
    def finish(self):
        rid, index, contexts, acks = self.read_round
        if raft_mod.joint_vote_result(self.voters, (), acks) != raft_mod.VOTE_WON:  # (, outgoing)
            return False
        self.read_states.extend(ReadState(c, index) for c in contexts)
        self.read_round = None
        self._maybe_start_read_round()
        return True
    patch(raft_mod.Raft, "_maybe_finish_read_round", finish)


def learner_counts_for_commit(patch):
    """Thesis §4.2.1: a leader counts its learners' copies towards commitment, as if they
    were voters."""
    def maybe_commit(self):
        prs = self.prs
        log = self.log
        incoming = [prs[v].match for v in self.voters | self.learners]   # | learners
        mci = raft_mod.joint_committed_index(incoming,
                                             [prs[v].match for v in self.outgoing])
        if mci > log.committed and log.term(mci) == self.term:
            log.commit_to(mci)
            self._maybe_start_read_round()
            if self.outgoing or self.id not in self.voters:
                self._after_commit_conf()
            return True
        return False
    patch(raft_mod.Raft, "maybe_commit", maybe_commit)


def conf_change_in_flight(patch):
    """Thesis §4.1 / §4.3: a configuration change is accepted while another one is in flight
    (appended, not committed): the leader proposes changes back to back, and leaves a joint
    configuration before the joint entry commits."""
    patch(raft_mod.Raft, "conf_in_flight", lambda self: False)


def conf_on_commit(patch):
    """Thesis §4.1: a follower lets a conf-change entry take effect only if it is already
    known committed when appended, instead of at once (configurations take effect when
    appended, on every node; the leader still does)."""
    def scan_conf(self, first, entries):
        after = self.conf_log[-1][0] if self.conf_log else self.conf_base_index
        for k, e in enumerate(entries):
            p = e[1]
            if (p and p[0] == CONF_MARKER and first + k > after
                    and first + k <= self.log.committed):           # the added condition
                self._conf_appended(first + k, e[0], p)
    patch(raft_mod.Raft, "_scan_conf", scan_conf)


#: name -> mutant, in the order the reports list them.
MUTANTS = {f.__name__: f for f in (
    up_to_date, commit_previous_term, commit_quorum_minus_one, election_quorum_minus_one,
    no_log_matching, vote_twice, vote_before_fsync, ack_before_fsync, stale_term_acks,
    heartbeat_commit_uncapped, read_before_noop, read_without_quorum,
    joint_commit_incoming_only, joint_election_incoming_only, joint_read_incoming_only,
    learner_counts_for_commit, conf_change_in_flight, conf_on_commit)}
