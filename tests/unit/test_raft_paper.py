"""One test per claim of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", §5), checked against the sans-IO engine (fastraft/raft).

Modelled on etcd-io/raft's raft_paper_test.go: each test quotes (or names) the sentence of the
paper it checks. Differences from the paper that the engine makes on purpose are noted where a
test depends on them: a new leader appends a no-op of its term (§8), and answers to RPCs leave
only once the state they promise is durable (Figure 2, "updated on stable storage before
responding to RPCs") — they come out in ``Ready.persisted_messages``.

Every test runs on both core implementations (``rh`` depends on ``raft_core``); the harness is
in tests/unit/conftest.py. Elections here run without pre-vote unless a test says otherwise,
so that terms move exactly as in the paper.
"""

from __future__ import annotations

import pytest

from fastraft.raft import HardState


def first(msgs, **fields):
    out = [m for m in msgs if all(getattr(m, k) == v for k, v in fields.items())]
    assert out, f"no message with {fields} in {msgs}"
    return out[0]


def of_type(msgs, t):
    return [m for m in msgs if m.type == t]


# -- §5.1 Raft basics --------------------------------------------------------------------------


def test_start_as_follower(rh):
    # §5.2: "When servers start up, they begin as followers."
    c = rh.Cluster(3)
    for i in c.ids:
        assert c[i].role == rh.FOLLOWER
        assert c[i].term == 0
        assert c[i].raft.lead == rh.NO_NODE


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_update_term_from_message(rh, role):
    # §5.1: "If one server's current term is smaller than the other's, then it updates its
    # current term to the larger value. If a candidate or leader discovers that its term is
    # out of date, it immediately reverts to follower state."
    c = rh.Cluster(3, pre_vote=False)
    if role == "follower":
        c = rh.Cluster(3, pre_vote=False, terms={1: 1})
    elif role == "candidate":
        c[1].raw.campaign()
        c[1].drain()
        assert c[1].role == rh.CANDIDATE
    else:
        c.elect(1)
    assert c[1].term == 1
    c[1].step(rh.msg(rh.M.APP, 1, 2, 2))
    assert c[1].role == rh.FOLLOWER
    assert c[1].term == 2
    assert c[1].raft.lead == 2, "an append names its sender the leader of the term"


def test_leader_steps_down_on_higher_term_response(rh):
    # §5.1: a leader that learns of a higher term from a response reverts to follower.
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    c[1].step(rh.msg(rh.M.APP_RESP, 1, 2, 5, reject=True))
    assert c[1].role == rh.FOLLOWER and c[1].term == 5
    assert c[1].raft.lead == rh.NO_NODE


def test_reject_stale_term_message(rh):
    # §5.1: "If a server receives a request with a stale term number, it rejects the request."
    c = rh.Cluster(3, pre_vote=False, logs={1: [1]}, terms={1: 2})
    node = c[1]
    node.drain()
    node.step(rh.msg(rh.M.APP, 1, 2, 1, index=1, log_term=1, entries=[(1, b"x")], commit=2))
    node.step(rh.msg(rh.M.HEARTBEAT, 1, 2, 1, commit=1))
    node.step(rh.msg(rh.M.VOTE, 1, 3, 1, index=5, log_term=1))
    out = node.drain()
    assert node.log_terms() == [1], "stale append not applied"
    assert node.log.committed == 0, "stale heartbeat does not move the commit index"
    assert node.term == 2 and node.raft.vote == rh.NO_NODE
    assert not [m for m in out if m.type == rh.M.VOTE_RESP and not m.reject]
    # the stale leader is told the current term so that it steps down
    resps = of_type(out, rh.M.APP_RESP)
    assert len(resps) == 2 and all(m.term == 2 and m.to == 2 for m in resps)


# -- §5.2 Leader election ----------------------------------------------------------------------


@pytest.mark.parametrize("heartbeat_tick", [1, 3])
def test_leader_broadcasts_heartbeats(rh, heartbeat_tick):
    # §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries)
    # to all followers in order to maintain their authority."
    c = rh.Cluster(3, pre_vote=False, heartbeat_tick=heartbeat_tick)
    c.elect(1)
    leader = c[1]
    for _ in range(heartbeat_tick - 1):
        leader.tick()
        assert not of_type(leader.drain(), rh.M.HEARTBEAT)
    leader.tick()
    out = leader.drain()
    hbs = of_type(out, rh.M.HEARTBEAT)
    assert sorted(m.to for m in hbs) == [2, 3]
    for m in hbs:
        assert m.term == 1 and m.frm == 1 and not m.entries
        assert m.commit == 1, "carries the commit index (followers match it)"
    # heartbeats are leader traffic: they leave without waiting for the leader's fsync
    assert all(m in leader.readies[-1].messages for m in hbs)


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_nonleader_starts_election(rh, role):
    # §5.2: "If a follower receives no communication over a period of time called the
    # election timeout, then it ... begins an election ... it increments its current term and
    # transitions to candidate state. It then votes for itself and issues RequestVote RPCs in
    # parallel to each of the other servers." A candidate whose election times out starts a
    # new one (same rule).
    c = rh.Cluster(3, pre_vote=False, election_tick=10)
    node = c[1]
    if role == "candidate":
        node.raw.campaign()
        node.drain()
    term0 = node.term
    for _ in range(2 * 10):
        node.tick()
        if node.term != term0:
            break
    assert node.term == term0 + 1
    assert node.role == rh.CANDIDATE
    assert node.raft.vote == 1
    rds = node.handle_ready()
    reqs = [m for rd in rds for m in rd.persisted_messages if m.type == rh.M.VOTE]
    assert sorted(m.to for m in reqs) == [2, 3]
    assert all(m.term == term0 + 1 and m.index == 0 and m.log_term == 0 for m in reqs)
    assert not [m for rd in rds for m in rd.messages], "vote requests wait for the fsync"
    assert node.store.hard_state == HardState(term0 + 1, 1, 0)


@pytest.mark.parametrize("size,votes,expected", [
    (1, {}, "leader"),
    (3, {2: True, 3: True}, "leader"),
    (3, {2: True}, "leader"),
    (5, {2: True, 3: True, 4: True, 5: True}, "leader"),
    (5, {2: True, 3: True}, "leader"),
    (3, {}, "candidate"),
    (5, {2: True}, "candidate"),
    (5, {2: True, 3: False, 4: False}, "candidate"),
    (3, {2: False, 3: False}, "follower"),
    (5, {2: False, 3: False, 4: False}, "follower"),
    (5, {2: True, 3: False, 4: False, 5: False}, "follower"),
])
def test_leader_election_in_one_round(rh, size, votes, expected):
    # §5.2: "A candidate wins an election if it receives votes from a majority of the servers
    # in the full cluster for the same term." ... "If many followers become candidates at the
    # same time, votes could be split so that no candidate obtains a majority."
    c = rh.Cluster(size, pre_vote=False)
    node = c[1]
    node.raw.campaign()
    node.drain()
    for frm, granted in votes.items():
        node.step(rh.msg(rh.M.VOTE_RESP, 1, frm, 1, reject=not granted))
    want = {"leader": rh.LEADER, "candidate": rh.CANDIDATE, "follower": rh.FOLLOWER}[expected]
    assert node.role == want
    assert node.term == 1


@pytest.mark.parametrize("vote,candidate,granted", [
    (0, 2, True),
    (0, 3, True),
    (2, 2, True),    # a repeated request from the candidate we voted for
    (3, 3, True),
    (2, 3, False),
    (3, 2, False),
    (1, 2, False),   # we voted for ourselves
])
def test_follower_votes_at_most_once_per_term(rh, vote, candidate, granted):
    # §5.2: "Each server will vote for at most one candidate in a given term, on a
    # first-come-first-served basis."
    c = rh.Cluster(3, pre_vote=False)
    c[1].store.save_hard_state(HardState(1, vote, 0))
    c[1].restart()
    c[1].step(rh.msg(rh.M.VOTE, 1, candidate, 1))
    rds = c[1].handle_ready()
    resp = first([m for rd in rds for m in rd.persisted_messages], type=rh.M.VOTE_RESP)
    assert resp.to == candidate and resp.term == 1
    assert resp.reject is (not granted)
    assert c[1].raft.vote == (candidate if granted else vote)


def test_first_come_first_served(rh):
    c = rh.Cluster(3, pre_vote=False)
    node = c[1]
    node.step(rh.msg(rh.M.VOTE, 1, 2, 1))
    node.step(rh.msg(rh.M.VOTE, 1, 3, 1))
    out = of_type(node.drain(), rh.M.VOTE_RESP)
    assert [(m.to, m.reject) for m in out] == [(2, False), (3, True)]


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_falls_back_to_follower(rh, term):
    # §5.2: "If the leader's term ... is at least as large as the candidate's current term,
    # then the candidate recognizes the leader as legitimate and returns to follower state."
    c = rh.Cluster(3, pre_vote=False)
    node = c[1]
    node.raw.campaign()
    node.drain()
    assert node.role == rh.CANDIDATE and node.term == 1
    node.step(rh.msg(rh.M.APP, 1, 2, term, index=0, log_term=0))
    assert node.role == rh.FOLLOWER
    assert node.term == term
    assert node.raft.lead == 2
    ack = first(node.drain(), type=rh.M.APP_RESP)
    assert not ack.reject


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_election_timeout_is_randomized(rh, role):
    # §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval"
    # (here [election_tick, 2 * election_tick), drawn from the injected random.Random).
    et = 10
    seen = set()
    for seed in range(60):
        c = rh.Cluster(3, seed=seed, pre_vote=False, election_tick=et)
        node = c[1]
        if role == "candidate":
            node.raw.campaign()
        term0 = node.term
        ticks = 0
        while node.term == term0:
            node.tick()
            ticks += 1
            assert ticks < 2 * et, f"seed {seed}: no election within 2*election_tick"
        assert ticks >= et, f"seed {seed}: election after {ticks} < election_tick ticks"
        seen.add(ticks)
    assert len(seen) >= et // 2, f"timeouts barely spread: {sorted(seen)}"


def test_election_timeout_depends_only_on_the_seed(rh):
    def first_timeout(seed):
        c = rh.Cluster(3, seed=seed, pre_vote=False)
        ticks = 0
        while c[1].role == rh.FOLLOWER:
            c[1].tick()
            ticks += 1
        return ticks

    assert [first_timeout(s) for s in range(20)] == [first_timeout(s) for s in range(20)]


def test_followers_election_timeouts_rarely_conflict(rh):
    # §5.2: randomized timeouts "ensure that split votes are rare": in most rounds a single
    # server times out first. etcd's test bounds the conflict probability by 0.3.
    rounds, conflicts = 300, 0
    for seed in range(rounds):
        c = rh.Cluster(5, seed=seed, pre_vote=False, election_tick=10)
        while True:
            for i in c.ids:
                c[i].tick()
            started = [i for i in c.ids if c[i].role != rh.FOLLOWER]
            if started:
                conflicts += len(started) > 1
                break
    assert conflicts / rounds <= 0.3, f"{conflicts} of {rounds} rounds had several candidates"


# -- §5.3 Log replication ----------------------------------------------------------------------


def test_leader_starts_replication(rh):
    # §5.3: "The leader appends the command to its log as a new entry, then issues
    # AppendEntries RPCs in parallel to each of the other servers to replicate the entry."
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    leader = c[1]
    assert leader.log.committed == 1
    first_index, term = c.propose(1, b"some data")
    assert (first_index, term) == (2, 1)
    rds = leader.handle_ready()
    apps = [m for rd in rds for m in rd.messages if m.type == rh.M.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert (m.index, m.log_term, m.commit, m.term) == (1, 1, 1, 1)
        assert list(m.entries) == [(1, b"some data")]
    assert rds[0].entries.first_index == 2 and rds[0].entries.entries == [(1, b"some data")]
    assert leader.log.committed == 1, "not committed before a majority has it"


def test_leader_commits_entry(rh):
    # §5.3: "When the entry has been safely replicated, the leader applies the entry to its
    # state machine ... The leader keeps track of the highest index it knows to be committed,
    # and it includes that index in future AppendEntries RPCs ... Once a follower learns that
    # a log entry is committed, it applies the entry to its local state machine."
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    c.propose(1, b"some data")
    c.stabilize()
    for i in c.ids:
        assert c.committed(i) == 2
        assert c[i].applied[-1] == (2, 1, b"some data")
    told = [m for m in c.delivered if m.type in (rh.M.APP, rh.M.HEARTBEAT) and m.commit == 2]
    assert sorted({m.to for m in told}) == [2, 3]
    c.check_safety()


@pytest.mark.parametrize("size,acceptors,committed", [
    (1, set(), True),
    (3, set(), False),
    (3, {2}, True),
    (3, {2, 3}, True),
    (5, set(), False),
    (5, {2}, False),
    (5, {2, 3}, True),
    (5, {2, 3, 4}, True),
    (5, {2, 3, 4, 5}, True),
])
def test_leader_acknowledges_commit(rh, size, acceptors, committed):
    # §5.3: "A log entry is committed once the leader that created the entry has replicated
    # it on a majority of the servers."
    c = rh.Cluster(size, pre_vote=False)
    c.elect(1)
    c.propose(1, b"some data")
    c.drop_if = lambda m: m.type == rh.M.APP and m.frm == 1 and m.to not in acceptors
    c.stabilize()
    assert (c.committed(1) == 2) is committed


@pytest.mark.parametrize("prior", [[], [2], [1, 1], [1, 2]])
def test_leader_commits_preceding_entries(rh, prior):
    # §5.3: committing an entry "also commits all preceding entries in the leader's log,
    # including entries created by previous leaders." With the no-op of §8 the new leader's
    # first entry commits them at once.
    c = rh.Cluster(3, pre_vote=False, logs={i: prior for i in (1, 2, 3)}, terms={1: 2, 2: 2, 3: 2})
    c.elect(1)
    c.tick(1)   # a follower may learn the commit index from the next heartbeat
    assert c[1].term == 3
    n = len(prior)
    assert c[1].log_terms() == prior + [3]
    for i in c.ids:
        assert c.committed(i) == n + 1
        assert [e[:2] for e in c[i].applied] == [(k + 1, t) for k, t in enumerate(prior + [3])]


@pytest.mark.parametrize("entries,commit,want_commit", [
    ([(1, b"a")], 1, 1),
    ([(1, b"a"), (1, b"b")], 1, 1),
    ([(1, b"a"), (1, b"b")], 2, 2),
    ([(1, b"a"), (1, b"b")], 9, 2),   # never beyond what the message covers
])
def test_follower_commits_entry(rh, entries, commit, want_commit):
    # §5.3: "Once a follower learns that a log entry is committed, it applies the entry to
    # its local state machine (in log order)."
    c = rh.Cluster(3, pre_vote=False)
    node = c[1]
    node.step(rh.msg(rh.M.APP, 1, 2, 1, index=0, log_term=0, entries=entries, commit=commit))
    node.drain()
    assert node.log.committed == want_commit
    assert node.applied == [(k + 1, t, p) for k, (t, p) in enumerate(entries)][:want_commit]


@pytest.mark.parametrize("index,log_term,accept", [
    (0, 0, True),
    (1, 1, True),
    (2, 2, True),
    (2, 1, False),    # term mismatch at 2
    (3, 3, False),    # beyond our log
    (3, 2, False),
])
def test_follower_checks_consistency(rh, index, log_term, accept):
    # §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of the
    # entry in its log that immediately precedes the new entries. If the follower does not
    # find an entry in its log with the same index and term, then it refuses the new entries."
    c = rh.Cluster(3, pre_vote=False, logs={1: [1, 2]})
    node = c[1]
    node.step(rh.msg(rh.M.APP, 1, 2, 3, index=index, log_term=log_term, entries=[(3, b"new")]))
    resp = first(node.drain(), type=rh.M.APP_RESP)
    assert resp.reject is (not accept)
    if accept:
        assert resp.index == index + 1
        assert node.log.ring.entry(index + 1) == (3, b"new")
        assert node.log.last_index == index + 1, "the conflicting suffix is gone"
    else:
        assert resp.index == index, "a rejection names the rejected position"
        assert node.log_terms() == [1, 2]
        # conflict hint: a position at or before the rejected one whose term is known
        assert resp.hint_index <= min(index, node.log.last_index)
        assert node.log.term(resp.hint_index) == resp.hint_term
        assert resp.hint_term <= log_term


@pytest.mark.parametrize("index,log_term,entries,want_terms,want_unstable", [
    (2, 2, [3], [1, 2, 3], (3, [3])),
    (1, 1, [3, 4], [1, 3, 4], (2, [3, 4])),
    (0, 0, [1], [1, 2], None),
    (0, 0, [3], [3], (1, [3])),
    (1, 1, [2], [1, 2], None),
])
def test_follower_appends_entries(rh, index, log_term, entries, want_terms, want_unstable):
    # §5.3: "If an existing entry conflicts with a new one (same index but different terms),
    # delete the existing entry and all that follow it; append any new entries not already in
    # the log."
    c = rh.Cluster(3, pre_vote=False, logs={1: [1, 2]})
    node = c[1]
    ents = rh.entries_for(entries, index + 1)
    node.step(rh.msg(rh.M.APP, 1, 2, 4, index=index, log_term=log_term, entries=ents))
    assert node.log_terms() == want_terms
    rd = node.raw.ready()
    if want_unstable is None:
        assert rd.entries is None
    else:
        assert rd.entries.first_index == want_unstable[0]
        assert [t for t, _ in rd.entries.entries] == want_unstable[1]


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_leader_syncs_follower_log(rh, case):
    # §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
    # duplicate its own." Node 3 holds the leader's log so that node 1 can win term 8.
    follower = FIGURE_7_FOLLOWERS[case]
    c = rh.Cluster(3, pre_vote=False,
                   logs={1: FIGURE_7_LEADER, 2: follower, 3: FIGURE_7_LEADER},
                   terms={1: 7, 2: 7, 3: 7})
    c.elect(1)
    assert c[1].term == 8
    c.propose(1, b"after")
    c.stabilize()
    want = c[1].log_entries()
    assert [t for t, _ in want] == FIGURE_7_LEADER + [8, 8]
    assert c[2].log_entries() == want
    assert c[2].store.recovered().entries == want, "the durable log matches too"
    assert c.committed(2) == len(want)
    c.check_safety()


# -- §5.4 Safety -------------------------------------------------------------------------------


@pytest.mark.parametrize("terms", [[1], [1, 2], [1, 1, 3]])
def test_vote_request_carries_last_log_position(rh, terms):
    # §5.4.1: "The RequestVote RPC implements this restriction: the RPC includes information
    # about the candidate's log."
    c = rh.Cluster(3, pre_vote=False, logs={1: terms})
    c[1].raw.campaign()
    reqs = of_type(c[1].drain(), rh.M.VOTE)
    assert sorted(m.to for m in reqs) == [2, 3]
    for m in reqs:
        assert (m.index, m.log_term, m.term) == (len(terms), terms[-1], terms[-1] + 1)


@pytest.mark.parametrize("ours,index,log_term,granted", [
    # same last term: the longer (or equal) log wins
    ([1, 1], 1, 1, False),
    ([1, 1], 2, 1, True),
    ([1, 1], 3, 1, True),
    # different last terms: the later term wins regardless of length
    ([1, 2], 3, 1, False),
    ([1, 2], 1, 3, True),
    ([1, 2], 2, 2, True),
    ([1, 2], 1, 2, False),
    ([2, 2], 1, 1, False),
])
def test_voter_grants_only_up_to_date_candidates(rh, ours, index, log_term, granted):
    # §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    # candidate."
    c = rh.Cluster(3, pre_vote=False, logs={1: ours})
    c[1].step(rh.msg(rh.M.VOTE, 1, 2, 5, index=index, log_term=log_term))
    resp = first(c[1].drain(), type=rh.M.VOTE_RESP)
    assert resp.reject is (not granted)
    assert c[1].term == 5
    assert c[1].raft.vote == (2 if granted else rh.NO_NODE)


def test_leader_only_commits_entries_of_its_term_by_counting(rh):
    # §5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
    # replicas. Only log entries from the leader's current term are committed by counting
    # replicas."
    c = rh.Cluster(3, pre_vote=False, logs={1: [1, 2], 2: [1], 3: [1]}, terms={1: 2, 2: 2, 3: 2})
    leader = c[1]
    leader.raw.campaign()
    c.deliver()                      # vote requests
    c.deliver(lambda m: m.type == rh.M.VOTE_RESP)
    assert leader.role == rh.LEADER and leader.term == 3
    c.take()                         # the leader's appends are lost
    assert leader.log_terms() == [1, 2, 3]
    assert leader.raft.prs[1].match == 3, "own no-op durable after the Ready"
    leader.step(rh.msg(rh.M.APP_RESP, 1, 2, 3, index=1))
    leader.step(rh.msg(rh.M.APP_RESP, 1, 2, 3, index=2))
    leader.drain()
    assert leader.log.committed == 0, "2@2 is on a majority but is not of the current term"
    leader.step(rh.msg(rh.M.APP_RESP, 1, 2, 3, index=3))
    leader.drain()
    assert leader.log.committed == 3, "3@3 on a majority commits everything before it"


def test_figure_8_uncommitted_old_entry_is_overwritten_safely(rh):
    # Figure 8 (c)-(e): S1 (term 2) replicated 2@2 to S2 only; S5 won term 3 with 2@3 and
    # crashed; if S1 wins again it must not treat 2@2 as committed, and if S5 wins later it
    # may overwrite 2@2 — committed state never diverges.
    c = rh.Cluster(5, pre_vote=False, check_quorum=False,
                   logs={1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3]},
                   terms={1: 4, 2: 4, 3: 4, 4: 4, 5: 4})
    c.isolate(3, 4, 5)
    c[1].raw.campaign()
    c.stabilize()
    assert c[1].role == rh.CANDIDATE, "two of five votes is no majority"
    c.heal()
    c.isolate(1, 2)
    c[5].raw.campaign()
    c.stabilize()
    assert c[5].role == rh.LEADER
    c.propose(5, b"x")
    c.stabilize()
    assert c.committed(5) == 4
    c.heal()
    c.tick(3)
    for i in c.ids:
        assert c[i].log_terms()[:2] == [1, 3], f"node {i} kept the uncommitted 2@2"
    c.check_safety()


# -- §5.5 Follower and candidate crashes -------------------------------------------------------


def test_crashed_follower_is_retried_until_it_catches_up(rh):
    # §5.5: "If a follower or candidate crashes, then future RequestVote and AppendEntries
    # RPCs sent to it will fail. Raft handles these failures by retrying indefinitely; if the
    # crashed server restarts, then the RPC will complete successfully." No new proposal is
    # needed for that.
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"a")
    c.propose(1, b"b")
    c.stabilize()
    c[3].restart()
    c.heal()
    c.tick(10)
    assert c[3].log_entries() == c[1].log_entries()
    assert c.committed(3) == 3


def test_appends_are_idempotent(rh):
    # §5.5: "Raft RPCs are idempotent, so this causes no harm. For example, if a follower
    # receives an AppendEntries request that includes log entries already present in its log,
    # it ignores those entries in the new request."
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    c.propose(1, b"a")
    c.propose(1, b"b")
    c.stabilize()
    c.tick(1)
    before = {i: (c[i].log_entries(), c.committed(i), list(c[i].applied)) for i in c.ids}
    replay = [m for m in c.delivered if m.type == rh.M.APP]
    assert replay
    for m in replay:
        c.send(m)
    c.stabilize()
    after = {i: (c[i].log_entries(), c.committed(i), list(c[i].applied)) for i in c.ids}
    assert after == before
    c.check_safety()


# -- Figure 2: persistent state before responding ----------------------------------------------


def test_vote_is_durable_before_the_answer(rh):
    # Figure 2: currentTerm and votedFor are "updated on stable storage before responding to
    # RPCs". The grant comes out with the hard state that records it, among the messages that
    # wait for the fsync, never among those that may leave at once.
    c = rh.Cluster(3, pre_vote=False)
    node = c[1]
    node.step(rh.msg(rh.M.VOTE, 1, 2, 1))
    rd = node.raw.ready()
    assert rd.hard_state == HardState(1, 2, 0)
    assert rd.must_sync
    assert not rd.messages
    assert [(m.type, m.to, m.reject) for m in rd.persisted_messages] == [
        (rh.M.VOTE_RESP, 2, False)]
    # crash before the fsync: nothing was promised, nothing is remembered
    node.restart()
    assert node.term == 0 and node.raft.vote == rh.NO_NODE
    # the durable path: persist, restart, and the vote survives
    node.step(rh.msg(rh.M.VOTE, 1, 2, 1))
    node.drain()
    node.restart()
    assert (node.term, node.raft.vote) == (1, 2)
    node.step(rh.msg(rh.M.VOTE, 1, 3, 1))
    resp = first(node.drain(), type=rh.M.VOTE_RESP)
    assert resp.reject, "a restarted node must not vote twice in a term"


def test_append_ack_is_sent_only_after_entries_are_durable(rh):
    c = rh.Cluster(3, pre_vote=False)
    node = c[1]
    ents = [(1, b"a"), (1, b"b")]
    node.step(rh.msg(rh.M.APP, 1, 2, 1, index=0, log_term=0, entries=ents, commit=0))
    rd = node.raw.ready()
    assert rd.entries.first_index == 1 and rd.entries.entries == ents
    assert rd.must_sync
    assert not rd.messages
    ack = first(rd.persisted_messages, type=rh.M.APP_RESP)
    assert ack.index == 2 and not ack.reject
