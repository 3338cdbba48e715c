"""Engine mutants: each breaks one safety rule of the Raft paper or thesis, from the outside.

Place in the architecture: test and benchmark code only (tests/sim/test_simulator.py and
bench/sim_power.py load this file by path); nothing in ``fastraft`` imports it. The engine
(fastraft/raft/) is never edited: each mutant is applied through ``patch(obj, name, value)``,
``monkeypatch.setattr`` in tests or a restoring setattr in the benchmark, and replaces one
function, method or check by a copy with the one rule removed.

The simulator's power is the number of seeds it needs to catch each mutant (bench/sim_power.py
measures it; tests/sim/test_simulator.py keeps it within a CI budget).

Not here yet: the joint-majority mutants (a joint configuration decided by one majority
only, for votes, commitment and read rounds) come once membership changes reach the engine
and the simulator drives them.
"""

from __future__ import annotations

from fastraft.errors import NotLeader
from fastraft.raft import LEADER, ReadState
from fastraft.raft import log as raft_log
from fastraft.raft import raft as raft_mod
from fastraft.raft.messages import NO_NODE, Message, MsgType


def up_to_date(patch):
    """§5.4.1: votes granted without comparing the candidate's log with ours."""
    patch(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)


def commit_previous_term(patch):
    """§5.4.2: a leader commits an entry of a previous term by counting its replicas."""
    def maybe_commit(self):
        prs = self.prs
        mci = raft_mod.joint_committed_index([prs[v].match for v in self.voters], ())
        if mci > self.log.committed:          # the `term(mci) == self.term` rule is gone
            self.log.commit_to(mci)
            self._maybe_start_read_round()
            return True
        return False
    patch(raft_mod.Raft, "maybe_commit", maybe_commit)


def commit_quorum_minus_one(patch):
    """§5.3: the commit index is the highest index held by a minority (one short of a
    majority) instead of a majority."""
    def joint_committed_index(voters, outgoing):
        s = sorted(voters, reverse=True)
        return s[max(len(s) // 2 - 1, 0)]   # a majority is s[len(s) // 2]
    patch(raft_mod, "joint_committed_index", joint_committed_index)


def election_quorum_minus_one(patch):
    """§5.2: a candidate wins with one vote short of a majority."""
    def tally(self):
        granted = sum(1 for v in self.voters if self.votes.get(v))
        if granted >= len(self.voters) // 2:       # a majority is len // 2 + 1
            return raft_mod.VOTE_WON
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return raft_mod.VOTE_LOST if 2 * rejected > len(self.voters) else 0
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


#: name -> mutant, in the order the reports list them.
MUTANTS = {f.__name__: f for f in (
    up_to_date, commit_previous_term, commit_quorum_minus_one, election_quorum_minus_one,
    no_log_matching, vote_twice, vote_before_fsync, ack_before_fsync, stale_term_acks,
    heartbeat_commit_uncapped, read_before_noop, read_without_quorum)}
