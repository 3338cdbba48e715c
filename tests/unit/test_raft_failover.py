"""Tests of rule 9 of the engine (``fastraft/raft/raft.py``): fast failover on the evidence of a
closed connection (``RawNode.leader_lost``), and the pre-vote rules that keep two hurried
followers from splitting the vote.

Every test runs on both core implementations (the ``rh`` harness of tests/unit/conftest.py);
deterministic, no clocks: time is ticks.
"""

from __future__ import annotations

from fastraft.raft.raft import HURRY_TICKS

ET = 10     # election ticks of these clusters: timeouts are random in [10, 20)


def settled(rh, n=3, **kw):
    """Node 1 leads a cluster whose followers replicate (one heartbeat round done)."""
    c = rh.Cluster(n, election_tick=ET, **kw)
    c.elect(1)
    c.tick(1)
    return c


def test_followers_told_the_leader_died_elect_within_a_few_ticks(rh):
    c = settled(rh)
    term = c[1].term
    c.isolate(1)                        # the leader is dead: nothing in or out
    for i in (2, 3):
        c[i].raw.leader_lost(1)
        assert c[i].raft.lead == rh.NO_NODE
    ticks = c.tick_until(lambda: c.leader() in (2, 3), max_ticks=HURRY_TICKS + 2, ids=[2, 3])
    assert ticks <= HURRY_TICKS + 1, f"{ticks} ticks; an election timeout is {ET}+"
    assert c[c.leader()].term == term + 1, "one election, no split vote"
    c.check_safety()


def test_without_the_evidence_the_followers_wait_an_election_timeout(rh):
    # The baseline the rule improves on (and proof that the test above measures it).
    c = settled(rh)
    c.isolate(1)
    ticks = c.tick_until(lambda: c.leader() in (2, 3), max_ticks=10 * ET, ids=[2, 3])
    assert ticks >= ET


def test_one_follower_told_is_enough_once_the_other_leaves_its_lease(rh):
    # Node 2 campaigns at once; node 3, still in the dead leader's lease, ignores its
    # pre-vote. When 3 learns of the loss too, its own pre-vote reaches 2 (a pre-candidate with
    # a lower id and an equal log): 2 refuses it and asks 3 again, and 3 grants.
    c = settled(rh)
    term = c[1].term
    c.isolate(1)
    c[2].raw.leader_lost(1)
    c.tick_until(lambda: c[2].role == rh.PRE_CANDIDATE, max_ticks=HURRY_TICKS, ids=[2])
    assert c[3].role == rh.FOLLOWER and c[3].raft.lead == 1, "3 ignored the pre-vote"
    c[3].raw.leader_lost(1)
    c.tick_until(lambda: c.leader() is not None and c.leader() != 1,
                 max_ticks=HURRY_TICKS + 2, ids=[2, 3])
    assert c.leader() == 2 and c[2].term == term + 1
    c.check_safety()


def test_two_pre_candidates_with_equal_logs_do_not_split_the_vote(rh):
    # Without the tie-break both would win their pre-votes (each grants the other), both would
    # become candidates of the same term, vote for themselves and refuse each other.
    c = settled(rh)
    term = c[1].term
    c.isolate(1)
    c[2].raw.leader_lost(1)
    c[3].raw.leader_lost(1)
    c[2].raw.campaign()
    c[3].raw.campaign()
    c.stabilize()
    assert c.leader() == 2 and c[2].term == term + 1
    assert c[3].role == rh.FOLLOWER and c[3].term == term + 1


def test_the_more_up_to_date_pre_candidate_wins_whatever_its_id(rh):
    c = settled(rh)
    term = c[1].term
    c.cut(1, 2)                         # node 2 misses the last entry
    c.propose(1, b"x")
    c.stabilize()
    c.isolate(1)
    assert c[3].log.last_index == c[2].log.last_index + 1
    for i in (2, 3):
        c[i].raw.leader_lost(1)
    c[2].raw.campaign()
    c[3].raw.campaign()
    c.stabilize()
    assert c.leader() == 3 and c[3].term == term + 1
    c.check_safety()


def test_a_false_alarm_does_not_disturb_a_live_leader(rh):
    # A connection reset while the leader lives: the follower campaigns, the other follower
    # (in the lease) and the leader ignore its pre-vote, and the next heartbeat brings it back.
    c = settled(rh)
    term = c[1].term
    c[2].raw.leader_lost(1)
    c.tick(3 * ET)
    assert c.leader() == 1 and [c[i].term for i in c.ids] == [term] * 3
    assert c[2].role == rh.FOLLOWER and c[2].raft.lead == 1
    c.propose(1, b"after")
    c.stabilize()
    assert c.committed(2) == c.committed(1)


def test_leader_lost_about_a_node_that_does_not_lead_changes_nothing(rh):
    c = settled(rh)
    f = c[2].raft
    before = (f.lead, f.election_elapsed, f.role)
    c[2].raw.leader_lost(3)
    c[2].raw.leader_lost(rh.NO_NODE)
    assert (f.lead, f.election_elapsed, f.role) == before
    c[1].raw.leader_lost(2)             # a leader is never hurried
    assert c[1].role == rh.LEADER


def test_granting_a_pre_vote_postpones_the_hurried_campaign(rh):
    # A hurried follower asked for its pre-vote by another voter lets that one win first
    # instead of competing with it a tick later.
    c = settled(rh, n=5)
    c.isolate(1)
    f = c[3].raft
    c[3].raw.leader_lost(1)
    assert f.hurried
    c[2].raw.leader_lost(1)
    c[2].raw.campaign()
    c.flush()
    c.deliver(lambda m: m.to == 3)      # 2's pre-vote reaches 3 only
    assert not f.hurried and f.election_elapsed == 0 and f.role == rh.FOLLOWER
