"""Tests of the engine's rules beyond the core paper (docs/architecture.md, "Consensus rules"):
pre-vote, check-quorum, the leader lease on votes, fast backtracking with conflict
hints, pipelining bounded by inflight entries and bytes, snapshots for followers behind the
compacted log, ReadIndex batching, leadership transfer, NotLeader/Busy, and the Ready/advance
durability contract (durable before send; the leader counts its own entries once advanced).

Modelled on etcd-io/raft's raft_test.go; each test names the rule it checks (thesis sections
from Ongaro's dissertation). Every test runs on both core implementations (``rh`` depends on
``raft_core``); the harness is in tests/unit/conftest.py. Tests that expose an engine bug are
marked ``xfail(strict=True, reason="BUG: ...")`` until the bug is fixed (none open now; the
lost-append bug these tests found is fixed, see test_lost_append_is_resent_when_idle).
"""

from __future__ import annotations

import random

import pytest

from fastraft.errors import Busy, LocalProtocolError, NotApplied, NotLeader
from fastraft.raft import HardState, MsgType, ReadState, Snapshot, SnapshotMeta
from fastraft.raft.messages import LEADER_TYPES
from fastraft.raft.progress import PROBE, REPLICATE, SNAPSHOT


def of_type(msgs, t, **fields):
    return [m for m in msgs if m.type == t and all(getattr(m, k) == v for k, v in fields.items())]


def settled(rh, n=3, **kw):
    """A cluster whose node 1 leads and every follower replicates (one heartbeat round)."""
    c = rh.Cluster(n, **kw)
    c.elect(1)
    c.tick(1)
    return c


# -- pre-vote (thesis §9.6) -------------------------------------------------------------------


def test_prevote_leaves_term_and_vote_alone(rh):
    c = rh.Cluster(3, logs={1: [1]}, terms={1: 1})
    node = c[1]
    node.drain()
    node.step(rh.msg(rh.M.PRE_VOTE, 1, 2, 2, index=1, log_term=1))
    rds = node.handle_ready()
    resp = of_type([m for rd in rds for m in rd.persisted_messages], rh.M.PRE_VOTE_RESP)
    assert len(resp) == 1 and not resp[0].reject
    assert resp[0].term == 2, "a granted pre-vote answers with the proposed term"
    assert (node.term, node.raft.vote) == (1, rh.NO_NODE)
    assert all(rd.hard_state is None for rd in rds), "nothing to persist for a pre-vote"


def test_prevote_rejected_for_stale_log(rh):
    c = rh.Cluster(3, logs={1: [1, 1]})
    c[1].step(rh.msg(rh.M.PRE_VOTE, 1, 2, 2, index=1, log_term=1))
    resp = of_type(c[1].drain(), rh.M.PRE_VOTE_RESP)
    assert len(resp) == 1 and resp[0].reject and resp[0].term == 1


def test_prevote_from_lower_term_is_rejected_with_our_term(rh):
    c = rh.Cluster(3, terms={1: 5})
    c[1].step(rh.msg(rh.M.PRE_VOTE, 1, 2, 3))
    resp = of_type(c[1].drain(), rh.M.PRE_VOTE_RESP)
    assert len(resp) == 1 and resp[0].reject and resp[0].term == 5


def test_precandidate_wins_then_increments_term_once(rh):
    c = rh.Cluster(3)
    node = c[1]
    node.raw.campaign()
    assert node.role == rh.PRE_CANDIDATE and node.term == 0
    rd = node.raw.ready()
    assert rd.hard_state is None, "pre-vote changes no durable state"
    reqs = of_type(rd.persisted_messages + rd.messages, rh.M.PRE_VOTE)
    assert sorted(m.to for m in reqs) == [2, 3] and all(m.term == 1 for m in reqs)
    node.raw.advance(rd)
    node.outbox.extend(rd.persisted_messages)
    c.stabilize()
    assert node.role == rh.LEADER and node.term == 1
    assert [c[i].term for i in c.ids] == [1, 1, 1]


def test_precandidate_rejected_by_up_to_date_voters_returns_to_follower(rh):
    c = rh.Cluster(3, logs={1: [1], 2: [1, 1], 3: [1, 1]})
    c[1].raw.campaign()
    c.stabilize()
    assert c[1].role == rh.FOLLOWER
    assert [c[i].term for i in c.ids] == [1, 1, 1], "a failed pre-vote changes no term"


def test_precandidate_learns_higher_term_from_rejection(rh):
    c = rh.Cluster(3, terms={1: 1, 2: 3, 3: 3})
    c[1].raw.campaign()
    c.stabilize()
    assert c[1].role == rh.FOLLOWER and c[1].term == 3


@pytest.mark.parametrize("pre_vote", [True, False])
def test_partitioned_node_does_not_disrupt_leader_on_rejoin(rh, pre_vote):
    # thesis §9.6: without pre-vote an isolated server keeps incrementing its term and forces
    # the leader to step down when it rejoins; with pre-vote it cannot.
    c = rh.Cluster(3, pre_vote=pre_vote, seed=7)
    c.tick_until(lambda: c.leader() is not None)
    lead = c.leader()
    term = c[lead].term
    other = next(i for i in c.ids if i != lead)
    c.isolate(other)
    c.tick(60)
    c.heal()
    c.tick(5)
    if pre_vote:
        assert c[other].term == term
        assert c.leader() == lead and c[lead].term == term
    else:
        assert c[other].term > term or c[lead].term > term, "baseline: disruption happens"
    c.check_safety()


# -- check-quorum (thesis §6.2) ---------------------------------------------------------------


def test_leader_steps_down_without_quorum(rh):
    c = settled(rh, election_tick=10)
    c.isolate(1)
    ticks = c.tick_until(lambda: c[1].role != rh.LEADER, max_ticks=40, ids=[1])
    assert 10 <= ticks <= 20, f"stepped down after {ticks} ticks, want within 1-2 timeouts"
    assert c[1].role == rh.FOLLOWER and c[1].raft.lead == rh.NO_NODE


def test_leader_with_quorum_stays(rh):
    c = settled(rh, election_tick=10)
    term = c[1].term
    c.isolate(3)
    c.tick(60, ids=[1, 2])
    assert c[1].role == rh.LEADER and c[1].term == term


def test_without_check_quorum_isolated_leader_stays(rh):
    c = settled(rh, election_tick=10, check_quorum=False)
    c.isolate(1)
    c.tick(60, ids=[1])
    assert c[1].role == rh.LEADER


# -- leader lease on votes (thesis §4.2.3) ----------------------------------------------------


def test_follower_in_lease_ignores_higher_term_vote(rh):
    c = settled(rh, pre_vote=False, election_tick=10)
    f = c[2]
    f.tick(9)
    assert f.role == rh.FOLLOWER
    f.step(rh.msg(rh.M.VOTE, 2, 3, 5, index=10, log_term=9))
    assert not f.drain(), "no answer at all inside the lease"
    assert f.term == 1 and f.raft.vote == 1 and f.raft.lead == 1


def test_follower_in_lease_ignores_higher_term_prevote(rh):
    c = settled(rh, election_tick=10)
    c[2].step(rh.msg(rh.M.PRE_VOTE, 2, 3, 5, index=10, log_term=9))
    assert not c[2].drain()


def test_leader_ignores_higher_term_vote_in_lease(rh):
    c = settled(rh, pre_vote=False)
    c[1].step(rh.msg(rh.M.VOTE, 1, 3, 5, index=10, log_term=9))
    assert c[1].role == rh.LEADER and c[1].term == 1


def test_transfer_vote_bypasses_the_lease(rh):
    c = settled(rh, pre_vote=False)
    last = c[2].log.last_index
    c[2].step(rh.msg(rh.M.VOTE, 2, 3, 2, index=last, log_term=1, transfer=True))
    resp = of_type(c[2].drain(), rh.M.VOTE_RESP)
    assert len(resp) == 1 and not resp[0].reject
    assert (c[2].term, c[2].raft.vote) == (2, 3)


def test_no_lease_without_check_quorum(rh):
    c = settled(rh, pre_vote=False, check_quorum=False)
    last = c[2].log.last_index
    c[2].step(rh.msg(rh.M.VOTE, 2, 3, 2, index=last, log_term=1))
    resp = of_type(c[2].drain(), rh.M.VOTE_RESP)
    assert len(resp) == 1 and not resp[0].reject


def test_lease_expires_with_the_election_timeout(rh):
    # After an election timeout without the leader, a follower answers votes again (it has
    # started its own pre-vote by then, which forgets the leader).
    c = settled(rh, election_tick=10)
    c.isolate(1)
    c.tick(20, ids=[2])
    last = c[2].log.last_index
    c[2].drain()
    c[2].step(rh.msg(rh.M.VOTE, 2, 3, 2, index=last, log_term=1))
    resp = of_type(c[2].drain(), rh.M.VOTE_RESP)
    assert len(resp) == 1 and not resp[0].reject


# -- fast log backtracking (thesis §5.3 / etcd conflict hints) --------------------------------


def rejections(c, frm):
    return [m for m in c.delivered if m.type == MsgType.APP_RESP and m.reject and m.frm == frm]


def test_backtracking_skips_a_whole_divergent_term(rh):
    leader_log = [1, 1, 1] + [3] * 50
    c = rh.Cluster(3, pre_vote=False,
                   logs={1: leader_log, 2: [1, 1, 1] + [2] * 60, 3: leader_log})
    c.elect(1)
    c.stabilize()
    assert c[2].log_entries() == c[1].log_entries()
    n = len(rejections(c, 2))
    assert 1 <= n <= 2, f"{n} rejections to skip one divergent term of 60 entries"
    # the probe after the first rejection already matched at the end of term 1
    probes = [m for m in c.delivered if m.type == rh.M.APP and m.to == 2]
    assert probes[1].index == 3 and probes[1].log_term == 1


def test_leader_probes_at_hint_from_its_own_log(rh):
    # Figure 7 (f): the follower's hint (10@3) lets the leader jump to its own last entry of
    # term <= 3, i.e. index 3, in one round trip.
    leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
    c = rh.Cluster(3, pre_vote=False, terms={1: 7, 2: 7, 3: 7},
                   logs={1: leader_log, 2: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3: leader_log})
    c.elect(1)
    c.stabilize()
    rej = rejections(c, 2)
    assert len(rej) == 1
    assert (rej[0].index, rej[0].hint_index, rej[0].hint_term) == (10, 10, 3)
    assert c[2].log_entries() == c[1].log_entries()


@pytest.mark.parametrize("case", ["empty-follower", "higher-terms"])
def test_backtracking_to_the_start_of_the_log_is_fast(rh, case):
    # The follower's hint is (0, 0) here: its log is empty, or every entry it has is of a
    # term above the probe's. That is a real hint ("nothing matches after 0"), not "no hint":
    # treating it as absent backtracks one entry per round trip.
    if case == "empty-follower":
        logs = {1: [1] * 50, 2: [1] * 50, 3: []}
    else:   # follower 3 holds 30 entries of term 3; the leader has term 2 there, then 11@6
        leader_log = [2] * 10 + [6]
        logs = {1: leader_log, 2: leader_log, 3: [3] * 30}
    c = rh.Cluster(3, pre_vote=False, logs=logs, terms={1: 6, 2: 6, 3: 6})
    c.elect(1)
    c.stabilize()
    assert c[3].log_entries() == c[1].log_entries()
    n = len(rejections(c, 3))
    assert n <= 3, f"{n} round trips of backtracking"


# -- pipelining and flow control --------------------------------------------------------------


def test_inflight_window_bounds_append_messages(rh):
    c = settled(rh, max_inflight_msgs=3)
    for k in range(6):
        c.propose(1, b"p%d" % k)
    apps = c.take(lambda m: m.type == rh.M.APP and m.to == 2)
    assert [len(m.entries) for m in apps] == [1, 1, 1], "pipelined, then paused at 3"
    assert [m.index for m in apps] == [1, 2, 3], "sent optimistically without waiting"
    c.take()
    # one acknowledgement frees one slot; the leader then sends the whole backlog at once
    c.send(apps[0])
    acks = c.take(lambda m: m.type == rh.M.APP_RESP)
    assert [m.index for m in acks] == [2]
    c.send(acks[0])
    more = c.take(lambda m: m.type == rh.M.APP and m.to == 2)
    assert len(more) == 1
    assert (more[0].index, len(more[0].entries)) == (4, 3)


def test_inflight_bytes_bound_append_messages(rh):
    c = settled(rh, max_inflight_bytes=100)
    for k in range(5):
        c.propose(1, bytes([65 + k]) * 40)
    apps = c.take(lambda m: m.type == rh.M.APP and m.to == 2)
    sizes = [sum(len(p) for _, p in m.entries) for m in apps]
    assert sizes == [40, 40, 40], "stops once the bytes in flight reach the budget"


def test_max_msg_bytes_splits_appends(rh):
    # The budget counts each entry's payload plus ENTRY_FRAMING (16): two 40-byte entries
    # are 112 bytes, three would be 168.
    c = settled(rh, max_msg_bytes=120)
    c.propose(1, *[bytes([65 + k]) * 40 for k in range(5)])
    c.stabilize()
    apps = [m for m in c.delivered if m.type == rh.M.APP and m.entries]
    assert apps
    for m in apps:
        size = sum(len(p) + 16 for _, p in m.entries)
        assert size <= 120 or len(m.entries) == 1, f"append of {size} bytes"
    assert max(len(m.entries) for m in apps) == 2
    for i in c.ids:
        assert c.committed(i) == 6


def test_oversized_entry_still_replicates(rh):
    c = settled(rh, max_msg_bytes=100)
    c.propose(1, b"x" * 500)
    c.stabilize()
    assert [c.committed(i) for i in c.ids] == [2, 2, 2]


def test_probe_state_sends_one_append_at_a_time(rh):
    c = settled(rh)
    c[1].raw.report_unreachable(2)
    assert c[1].raft.prs[2].state == PROBE
    for k in range(3):
        c.propose(1, b"p%d" % k)
    apps = c.take(lambda m: m.type == rh.M.APP and m.to == 2)
    assert len(apps) == 1, "a probe at a time until the follower answers"
    c.send(apps[0])
    c.stabilize()
    assert c[1].raft.prs[2].state == REPLICATE
    assert c[2].log_entries() == c[1].log_entries()


def test_acknowledgement_moves_probe_to_replicate(rh):
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    prs = c[1].raft.prs
    assert prs[2].state == REPLICATE and prs[2].match == 1
    assert c[1].raw.status().progress[2] == (1, 2, REPLICATE)


@pytest.mark.parametrize("proposals,window", [(1, 256), (2, 2)],
                         ids=["window-not-full", "window-exactly-full"])
def test_lost_append_is_resent_when_idle(rh, proposals, window):
    # The second case is the one the full-window fix (free_first_one) leaves open: once a
    # slot is freed there is still nothing *new* to send, so nothing is sent.
    c = settled(rh, max_inflight_msgs=window)
    c.isolate(2)
    c.drop_if = lambda m: m.type == rh.M.APP and m.to == 3 and bool(m.entries)
    for k in range(proposals):
        c.propose(1, b"p%d" % k)
        c.stabilize()
    c.drop_if = None
    c.tick(30, ids=[1, 3])
    assert c.committed(1) == 1 + proposals


def test_lost_full_inflight_window_recovers_on_heartbeat(rh):
    # Every append that filled the window was lost; a heartbeat answer must make room for
    # one more append (etcd's MsgAppFlowPaused reset), which the follower rejects, putting the
    # leader back into probe. Without that the follower would stay paused for good.
    c = settled(rh, max_inflight_msgs=2)
    c.isolate(2)
    c.drop_if = lambda m: m.type == rh.M.APP and m.to == 3 and bool(m.entries)
    for k in range(3):
        c.propose(1, b"p%d" % k)
        c.stabilize()
    assert c[1].raft.prs[3].inflights.full()
    c.drop_if = None
    c.tick(3, ids=[1, 3])
    assert c.committed(1) == 4
    assert c[3].log_entries() == c[1].log_entries()


def test_lost_full_inflight_window_recovers_with_next_proposal(rh):
    # A full window whose appends were all lost must not pause the follower for good: a
    # heartbeat answer makes room, and the next append exposes the gap.
    c = settled(rh, max_inflight_msgs=2)
    c.isolate(2)
    c.drop_if = lambda m: m.type == rh.M.APP and m.to == 3 and bool(m.entries)
    for k in range(3):
        c.propose(1, b"p%d" % k)
        c.stabilize()
    assert c[1].raft.prs[3].inflights.full()
    c.drop_if = None
    c.tick(3, ids=[1, 3])
    c.propose(1, b"later")
    c.tick(3, ids=[1, 3])
    assert c.committed(1) == 5
    assert c[3].log_entries() == c[1].log_entries()


def test_lost_append_recovered_by_next_proposal(rh):
    # The recovery that does work: the next append exposes the gap, the follower rejects and
    # the leader falls back to probing.
    c = settled(rh)
    c.isolate(2)
    c.drop_if = lambda m: m.type == rh.M.APP and m.to == 3 and bool(m.entries)
    c.propose(1, b"x")
    c.stabilize()
    c.drop_if = None
    c.propose(1, b"y")
    c.stabilize()
    assert c.committed(1) == 3
    assert c[3].log_entries() == c[1].log_entries()


def test_report_unreachable_moves_replicate_to_probe(rh):
    c = settled(rh)
    c[1].raw.report_unreachable(3)
    pr = c[1].raft.prs[3]
    assert pr.state == PROBE and pr.next == pr.match + 1


# -- snapshots (thesis §5; chunks streamed by the runtime: docs/architecture.md) --------------


def behind_compaction(rh, **kw):
    """Node 3 down since the start; node 1 leads, commits 10 entries and compacts them."""
    c = rh.Cluster(3, **kw)
    c.isolate(3)
    c.elect(1)
    for k in range(10):
        c.propose(1, b"e%d" % k)
    c.stabilize()
    assert c[1].applied_index == 11
    snap = c[1].take_snapshot()
    assert c[1].log.first_index == 12
    return c, snap


def test_snapshot_sent_to_follower_behind_compacted_log(rh):
    c, snap = behind_compaction(rh)
    c.heal()
    c.tick(1)
    snaps = [m for m in c.delivered if m.type == rh.M.SNAP]
    assert len(snaps) == 1 and snaps[0].to == 3
    assert snaps[0].snapshot.meta.index == 11 and snaps[0].snapshot is snap
    assert any(m.type == rh.M.SNAP for rd in c[1].readies for m in rd.messages)
    # the follower installed it: durable, applied, acknowledged
    f = c[3]
    assert f.store.snapshot_mark.index == 11
    assert f.applied_index == 11 and f.applied == c[1].applied
    assert any(rd.snapshot is not None for rd in f.readies)
    assert f.log.first_index == 12 and f.log.committed == 11
    # the leader waits in SNAPSHOT state until told the stream is done... or the ack comes
    pr = c[1].raft.prs[3]
    assert pr.match == 11
    c[1].raw.report_snapshot(3, True)
    c.propose(1, b"after")
    c.stabilize()
    assert c[1].raft.prs[3].state == REPLICATE
    assert c[3].log_entries() == c[1].log_entries()
    c.tick(1)
    assert c.committed(3) == 12
    c.check_safety()


def test_no_appends_while_snapshot_in_flight(rh):
    c, snap = behind_compaction(rh)
    c.heal()
    c.drop_if = lambda m: m.type == rh.M.SNAP
    c.tick(1)
    assert c[1].raft.prs[3].state == SNAPSHOT
    c.drop_if = None
    c.propose(1, b"x")
    assert not c.take(lambda m: m.to == 3 and m.type in (rh.M.APP, rh.M.SNAP))


def test_report_snapshot_failure_resends(rh):
    c, snap = behind_compaction(rh)
    c.heal()
    c.drop_if = lambda m: m.type == rh.M.SNAP
    c.tick(1)
    c.drop_if = None
    assert len([m for m in c.dropped if m.type == rh.M.SNAP]) == 1
    c[1].raw.report_snapshot(3, False)
    pr = c[1].raft.prs[3]
    assert pr.state == PROBE
    c.tick(2)
    assert len([m for m in c.delivered if m.type == rh.M.SNAP]) == 1
    assert c[3].applied == c[1].applied
    c.check_safety()


def test_follower_ignores_snapshot_at_or_below_commit(rh):
    c = rh.Cluster(3, logs={1: [1, 1, 1]})
    f = c[1]
    f.log.commit_to(3)
    s = Snapshot(SnapshotMeta(2, 1, frozenset({1, 2, 3})), data=None)
    f.step(rh.msg(rh.M.SNAP, 1, 2, 1, snapshot=s))
    rds = f.handle_ready()
    assert all(rd.snapshot is None for rd in rds)
    assert f.log_terms() == [1, 1, 1]
    ack = of_type([m for rd in rds for m in rd.persisted_messages], rh.M.APP_RESP)
    assert [(m.index, m.reject) for m in ack] == [(3, False)]


def test_follower_keeps_log_when_snapshot_entry_matches(rh):
    # Figure 13: "If existing log entry has same index and term as snapshot's last included
    # entry, retain log entries following it and reply."
    c = rh.Cluster(3, logs={1: [1, 1, 1, 2]})
    f = c[1]
    s = Snapshot(SnapshotMeta(3, 1, frozenset({1, 2, 3})), data=None)
    f.step(rh.msg(rh.M.SNAP, 1, 2, 2, snapshot=s))
    rds = f.handle_ready()
    assert all(rd.snapshot is None for rd in rds)
    assert f.log_terms() == [1, 1, 1, 2] and f.log.committed == 3
    ack = of_type([m for rd in rds for m in rd.persisted_messages], rh.M.APP_RESP)
    assert [(m.index, m.reject) for m in ack] == [(3, False)]


def test_snapshot_install_adopts_its_configuration(rh):
    c = rh.Cluster(3, logs={1: [1]})
    voters = frozenset({1, 2, 3, 4})
    s = Snapshot(SnapshotMeta(7, 2, voters), data=((7, 2, b"state"),))
    c[1].step(rh.msg(rh.M.SNAP, 1, 2, 2, snapshot=s))
    c[1].drain()
    assert c[1].raft.voters == voters
    assert c[1].log.last_index == 7 and c[1].log.last_term == 2
    assert c[1].applied_index == 7
    c[1].restart()
    assert c[1].raft.voters == voters, "restored from the durable snapshot"


def test_compaction_keeping_a_tail_avoids_snapshots(rh):
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    c.tick(1)
    c.isolate(3)
    c[1].raw.report_unreachable(3)
    for k in range(5):
        c.propose(1, b"e%d" % k)
    c.stabilize()
    c[1].take_snapshot(keep_from=2)
    assert c[1].log.first_index == 2 and c[1].log.snapshot.meta.index == 6
    c.heal()
    c.tick(2)
    assert not [m for m in c.delivered if m.type == rh.M.SNAP]
    assert c[3].log_entries()[1:] == c[1].log_entries()


# -- ReadIndex (thesis §6.4) ------------------------------------------------------------------


def test_read_index_waits_for_the_leaders_noop(rh):
    c = rh.Cluster(3, pre_vote=False)
    c[1].raw.campaign()
    c.deliver()
    c.deliver(lambda m: m.type == rh.M.VOTE_RESP)
    assert c[1].role == rh.LEADER
    c[1].raw.read_index("r1")
    c.drop_if = lambda m: m.type == rh.M.APP
    c.tick(5)
    assert c[1].log.committed == 0
    assert c[1].read_states == [], "no read before this term's no-op commits"
    hbs = [m for m in c.delivered if m.type == rh.M.HEARTBEAT]
    assert hbs and all(m.context == 0 for m in hbs), "no read round started"
    c.drop_if = None
    c.tick(2)
    assert c[1].log.committed >= 1
    assert c[1].read_states == [ReadState("r1", 1)]


def test_read_index_batches_reads_in_one_round(rh):
    c = settled(rh)
    committed = c[1].log.committed
    leader = c[1]
    leader.raw.read_index("r0")          # starts a round at once
    for k in range(1, 10):
        leader.raw.read_index("r%d" % k)  # wait for the round in flight, then share one
    c.stabilize()
    assert [rs.context for rs in leader.read_states] == ["r%d" % k for k in range(10)]
    assert {rs.index for rs in leader.read_states} == {committed}
    rounds = {m.context for m in c.delivered if m.type == rh.M.HEARTBEAT and m.context}
    assert len(rounds) == 2, f"10 reads took rounds {sorted(rounds)}"
    hbs = [m for m in c.delivered if m.type == rh.M.HEARTBEAT and m.context]
    assert len(hbs) == 4, "one heartbeat per follower per round"


def test_read_index_is_commit_index_at_round_start(rh):
    c = settled(rh)
    c.propose(1, b"a", b"b", b"c")
    c.stabilize()
    assert c[1].log.committed == 4
    c[1].raw.read_index(b"ctx")
    c.stabilize()
    assert c[1].read_states == [ReadState(b"ctx", 4)]
    assert c[1].applied_index >= 4, "safe to serve from local state"


def test_read_round_counts_only_answers_to_its_context(rh):
    c = settled(rh)
    leader = c[1]
    leader.raw.read_index("r")
    rid = leader.raft.read_round.id
    leader.drain()
    for f in (2, 3):
        leader.step(rh.msg(rh.M.HEARTBEAT_RESP, 1, f, 1, context=0))
        leader.step(rh.msg(rh.M.HEARTBEAT_RESP, 1, f, 1, context=rid + 7))
    leader.drain()
    assert leader.read_states == []
    leader.step(rh.msg(rh.M.HEARTBEAT_RESP, 1, 2, 1, context=rid))
    leader.drain()
    assert leader.read_states == [ReadState("r", leader.log.committed)]


def test_read_index_on_single_node(rh):
    c = rh.Cluster(1)
    c.elect(1)
    c[1].raw.read_index("x")
    c[1].drain()
    assert c[1].read_states == [ReadState("x", 1)]


def test_read_needs_a_quorum_and_is_dropped_when_leader_steps_down(rh):
    c = settled(rh, election_tick=10)
    c.isolate(1)
    c[1].raw.read_index("a")
    c[1].raw.read_index("b")
    c.tick_until(lambda: c[1].role != rh.LEADER, max_ticks=40, ids=[1])
    assert c[1].read_states == [], "an isolated leader serves no linearizable read"
    assert c[1].dropped_reads == ["a", "b"], "in-flight and waiting reads are both answered"


def test_pending_reads_dropped_on_higher_term(rh):
    c = settled(rh)
    c.isolate(2, 3)
    c[1].raw.read_index("a")
    c[1].raw.read_index("b")
    c[1].drain()
    c[1].step(rh.msg(rh.M.APP_RESP, 1, 2, 9))
    c[1].drain()
    assert c[1].role == rh.FOLLOWER
    assert c[1].dropped_reads == ["a", "b"]
    assert c[1].read_states == []


def test_read_index_on_follower_raises_not_leader_with_hint(rh):
    c = settled(rh)
    with pytest.raises(NotLeader) as ei:
        c[2].raw.read_index("x")
    assert ei.value.leader_hint == 1


# -- leadership transfer (thesis §3.10) -------------------------------------------------------


def test_transfer_to_caught_up_follower(rh):
    c = settled(rh)
    term = c[1].term
    c[1].raw.transfer_leadership(2)
    rd = c[1].raw.ready()
    assert [(m.type, m.to) for m in rd.messages] == [(rh.M.TIMEOUT_NOW, 2)]
    c[1].raw.advance(rd)
    c[1].outbox.extend(rd.messages)
    c.stabilize()
    assert c[2].role == rh.LEADER and c[2].term == term + 1
    assert c[1].role == rh.FOLLOWER and c[1].raft.lead == 2
    assert c[3].raft.vote == 2, "node 3 voted despite its lease on node 1"
    votes = [m for m in c.delivered if m.type in (rh.M.VOTE, rh.M.PRE_VOTE) and m.frm == 2]
    assert votes and all(m.type == rh.M.VOTE and m.transfer for m in votes), (
        "no pre-vote: the transfer campaigns at once, its requests marked")
    c.check_safety()


def test_transfer_catches_the_target_up_first(rh):
    c = settled(rh)
    c.isolate(2)
    c[1].raw.report_unreachable(2)
    for k in range(3):
        c.propose(1, b"e%d" % k)
    c.stabilize()
    c.heal()
    last = c[1].log.last_index
    seen = []
    c.drop_if = lambda m: m.type == rh.M.TIMEOUT_NOW and seen.append(c[2].log.last_index)
    c[1].raw.transfer_leadership(2)
    c.tick(3)
    assert seen and seen[0] == last, "TIMEOUT_NOW only once the target has the whole log"
    assert c.leader() == 2
    c.tick(1)
    assert c[2].log_terms()[:last] == c[1].log_terms()[:last]
    c.check_safety()


def test_proposals_are_busy_during_transfer(rh):
    c = settled(rh)
    c.isolate(2)
    c[1].raw.transfer_leadership(2)
    with pytest.raises(Busy) as ei:
        c.propose(1, b"x")
    assert isinstance(ei.value, NotApplied)


def test_transfer_aborted_after_an_election_timeout(rh):
    c = settled(rh, election_tick=10)
    c.isolate(2)
    c[1].raw.transfer_leadership(2)
    c.tick(9, ids=[1, 3])
    with pytest.raises(Busy):
        c.propose(1, b"x")
    c.tick(1, ids=[1, 3])
    assert c[1].role == rh.LEADER
    c.propose(1, b"x")
    c.stabilize()
    assert c.committed(1) == c[1].log.last_index


def test_transfer_misuse(rh):
    c = settled(rh)
    with pytest.raises(NotLeader) as ei:
        c[2].raw.transfer_leadership(3)
    assert ei.value.leader_hint == 1
    with pytest.raises(LocalProtocolError):
        c[1].raw.transfer_leadership(9)
    c[1].raw.transfer_leadership(1)
    assert not of_type(c[1].drain(), rh.M.TIMEOUT_NOW)
    c.propose(1, b"still leader")


def test_timeout_now_skips_prevote(rh):
    c = settled(rh)
    c[2].step(rh.msg(rh.M.TIMEOUT_NOW, 2, 1, 1))
    assert c[2].role == rh.CANDIDATE and c[2].term == 2
    votes = of_type(c[2].drain(), rh.M.VOTE)
    assert sorted(m.to for m in votes) == [1, 3] and all(m.transfer for m in votes)


# -- NotLeader / Busy / misuse ----------------------------------------------------------------


def test_propose_on_non_leader_raises_not_leader_with_hint(rh):
    c = settled(rh, pre_vote=False)
    with pytest.raises(NotLeader) as ei:
        c.propose(2, b"x")
    assert ei.value.leader_hint == 1
    assert isinstance(ei.value, NotApplied)
    fresh = rh.Cluster(3)
    with pytest.raises(NotLeader) as ei:
        fresh.propose(1, b"x")
    assert ei.value.leader_hint is None
    fresh[1].raw.campaign()
    with pytest.raises(NotLeader) as ei:
        fresh.propose(1, b"x")
    assert ei.value.leader_hint is None


def test_uncommitted_entries_are_bounded(rh):
    c = settled(rh, max_uncommitted=4)
    c.isolate(2, 3)
    for k in range(4):
        c.propose(1, b"p%d" % k)
    last = c[1].log.last_index
    with pytest.raises(Busy):
        c.propose(1, b"one too many")
    c.heal()
    c.stabilize()
    c.tick(2)
    assert c[1].log.last_index == last, "a refused proposal leaves no trace"
    assert c.committed(1) == last
    c.propose(1, b"accepted again")


def test_uncommitted_bound_is_all_or_nothing_for_batches(rh):
    c = settled(rh, max_uncommitted=4)
    c.isolate(2, 3)
    c.propose(1, b"a", b"b", b"c")
    with pytest.raises(Busy):
        c.propose(1, b"d", b"e")
    assert c[1].log.last_index == 4
    c.propose(1, b"d")


def test_empty_payload_is_reserved(rh):
    c = settled(rh)
    last = c[1].log.last_index
    with pytest.raises(LocalProtocolError):
        c.propose(1, b"ok", b"")
    assert c[1].log.last_index == last


# -- the Ready/advance durability contract ----------------------------------------------------


def test_leader_counts_its_own_entry_only_after_advance(rh):
    # rule 3 / thesis §10.2.1: the leader may send before its own fsync, but its copy counts
    # towards a majority only once durable (advance).
    c = settled(rh)
    c.isolate(3)
    leader = c[1]
    c.propose(1, b"x")
    rd = leader.raw.ready()
    assert rd.entries.first_index == 2
    app = of_type(rd.messages, rh.M.APP, to=2)
    assert len(app) == 1
    c.send(app[0])
    ack = of_type(c[2].drain(), rh.M.APP_RESP)
    leader.step(ack[0])
    assert leader.log.committed == 1, "one durable copy out of three is no majority"
    leader.store.append(rd.entries)
    leader.raw.advance(rd)
    assert leader.log.committed == 2
    nxt = leader.raw.ready()
    assert nxt.committed.first_index == 2 and nxt.committed.entries == [(1, b"x")]


def test_single_node_commits_after_advance(rh):
    c = rh.Cluster(1)
    c.elect(1)
    node = c[1]
    node.raw.propose([b"x"])
    rd = node.raw.ready()
    assert rd.committed is None and rd.entries.entries == [(1, b"x")]
    assert node.log.committed == 1
    node.raw.advance(rd)
    assert node.log.committed == 2
    assert node.raw.ready().committed.entries == [(1, b"x")]


def test_candidate_persists_term_and_vote_before_requests(rh):
    c = rh.Cluster(3, pre_vote=False)
    c[1].raw.campaign()
    rd = c[1].raw.ready()
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    assert rd.messages == []
    assert sorted(m.to for m in of_type(rd.persisted_messages, rh.M.VOTE)) == [2, 3]


def test_heartbeat_commit_is_in_hard_state(rh):
    c = settled(rh)
    c.propose(1, b"x")
    c.stabilize()
    c.tick(1)
    for i in c.ids:
        assert c[i].store.hard_state.commit == c.committed(i) == 2


def test_inputs_between_ready_and_advance_follower(rh):
    # rawnode.py: "Inputs may also be given between ready() and advance(): advance uses what
    # the Ready recorded, not the node's current state."
    c = rh.Cluster(3)
    f = c[1]
    f.step(rh.msg(rh.M.APP, 1, 2, 1, index=0, log_term=0, entries=[(1, b"a"), (1, b"b")],
                  commit=1))
    rd1 = f.raw.ready()
    f.step(rh.msg(rh.M.APP, 1, 2, 1, index=2, log_term=1, entries=[(1, b"c")], commit=3))
    f.store.append(rd1.entries)
    f.store.save_hard_state(rd1.hard_state)
    assert [m.index for m in rd1.persisted_messages] == [2]
    assert rd1.committed.entries == [(1, b"a")]
    f.raw.advance(rd1)
    assert f.log.stable == 2 and f.log.applied == 1
    rd2 = f.raw.ready()
    assert rd2.entries.first_index == 3 and rd2.entries.entries == [(1, b"c")]
    assert rd2.committed.first_index == 2 and rd2.committed.last_index == 3
    assert [m.index for m in rd2.persisted_messages] == [3]
    assert rd2.hard_state == HardState(1, rh.NO_NODE, 3)


def test_inputs_between_ready_and_advance_leader(rh):
    c = settled(rh)
    c.isolate(2, 3)
    leader = c[1]
    c.propose(1, b"a")
    rd1 = leader.raw.ready()
    c.propose(1, b"b")
    leader.store.append(rd1.entries)
    leader.raw.advance(rd1)
    assert leader.raft.prs[1].match == 2, "only what rd1 carried is durable"
    rd2 = leader.raw.ready()
    assert rd2.entries.first_index == 3 and rd2.entries.entries == [(1, b"b")]
    leader.store.append(rd2.entries)
    leader.raw.advance(rd2)
    assert leader.raft.prs[1].match == 3


@pytest.mark.parametrize("seed", range(4))
def test_messages_split_by_durability_over_a_busy_run(rh, seed):
    """Every message that left in Ready.messages is leader traffic; every answer and vote
    request left in persisted_messages (and the harness checked, message by message, that
    what it promises was durable by then)."""
    c = rh.Cluster(3, seed=seed)
    c.tick_until(lambda: c.leader() is not None)
    lead = c.leader()
    c.propose(lead, b"a")
    c[lead].raw.read_index("r")
    c.stabilize()
    target = next(i for i in c.ids if i != lead)
    c[lead].raw.transfer_leadership(target)
    c.tick(3)
    lead = c.leader()
    c.propose(lead, b"b")
    c.tick(3)
    now, later = set(), set()
    for i in c.ids:
        for rd in c[i].readies:
            now.update(m.type for m in rd.messages)
            later.update(m.type for m in rd.persisted_messages)
    assert now <= LEADER_TYPES
    assert not (later & LEADER_TYPES)
    assert {rh.M.VOTE_RESP, rh.M.APP_RESP, rh.M.HEARTBEAT_RESP, rh.M.VOTE} <= later
    c.check_safety()


def test_durability_check_catches_an_early_ack(rh):
    # The harness itself must be able to fail: an ack for an entry that is not durable.
    c = rh.Cluster(3)
    node = c[1]
    with pytest.raises(rh.DurabilityViolation):
        node._check_durable(rh.msg(rh.M.APP_RESP, 2, 1, 0, index=3))
    with pytest.raises(rh.DurabilityViolation):
        node._check_durable(rh.msg(rh.M.VOTE_RESP, 2, 1, 1))
    with pytest.raises(rh.DurabilityViolation):
        node._check_send_now(rh.msg(rh.M.VOTE_RESP, 2, 1, 0))


# -- configuration, restart, pacing -----------------------------------------------------------


@pytest.mark.parametrize("kw", [
    {"id": 0}, {"voters": (), "outgoing": {1, 2}}, {"heartbeat_tick": 0}, {"election_tick": 2, "heartbeat_tick": 2},
    {"max_inflight_msgs": 0},
])
def test_config_validation(rh, kw):
    from fastraft.raft import RaftConfig
    args = {"id": 1, "voters": {1, 2, 3}}
    args.update(kw)
    with pytest.raises(ValueError):
        RaftConfig(**args)


def test_a_node_without_configuration_never_campaigns(rh):
    # Empty voters: the configuration comes from the log (a bootstrap conf-change entry) or a
    # snapshot. Until then the node waits, however many elections it sits through.
    from fastraft.raft import RaftConfig, RawNode
    import random
    raw = RawNode(RaftConfig(id=4, voters=()), random.Random(1))
    for _ in range(200):
        raw.tick()
    assert raw.status().role == rh.FOLLOWER and raw.term == 0
    assert not raw.has_ready() or not raw.ready().messages


def test_joint_configuration_needs_both_majorities(rh):
    # thesis §4.3: in C_old,new, elections and commitment need a majority of each.
    c = rh.Cluster(5, pre_vote=False, voters={1, 2, 3}, outgoing={3, 4, 5})
    c.isolate(4, 5)
    c[3].raw.campaign()
    c.stabilize()
    assert c[3].role == rh.CANDIDATE, "a majority of the new config alone does not elect"
    c.heal()
    c.isolate(1, 2)
    c[3].raw.campaign()
    c.stabilize()
    assert c[3].role == rh.CANDIDATE, "nor does one of the old config alone"
    c.heal()
    c.elect(3)
    c.isolate(4, 5)
    c.propose(3, b"x")
    c.stabilize()
    assert c.committed(3) < c[3].log.last_index, "no commit without the old config's majority"
    c.heal()
    c.isolate(5)
    c.propose(3, b"y")
    c.stabilize()
    assert c.committed(3) == c[3].log.last_index


def test_non_voter_never_campaigns_and_its_votes_do_not_count(rh):
    c = rh.Cluster(4, voters={1, 2, 3}, pre_vote=False)
    c[4].tick(100)
    assert c[4].role == rh.FOLLOWER and c[4].term == 0
    c[4].step(rh.msg(rh.M.TIMEOUT_NOW, 4, 1, 0))
    assert c[4].role == rh.FOLLOWER
    c[1].raw.campaign()
    c[1].drain()
    c[1].step(rh.msg(rh.M.VOTE_RESP, 1, 4, 1))
    assert c[1].role == rh.CANDIDATE, "a vote from outside the configuration is ignored"
    c[1].step(rh.msg(rh.M.VOTE_RESP, 1, 2, 1))
    assert c[1].role == rh.LEADER


def test_whole_cluster_restart_keeps_committed_state(rh):
    c = settled(rh)
    c.propose(1, b"a", b"b")
    c.stabilize()
    c[1].take_snapshot(2)
    c.propose(1, b"c")
    c.stabilize()
    c.tick(1)
    before = {i: list(c[i].applied) for i in c.ids}
    for i in c.ids:
        c[i].restart()
        assert c[i].log.committed == c[i].store.hard_state.commit
    c.tick_until(lambda: c.leader() is not None)
    c.tick(2)
    for i in c.ids:
        assert c[i].applied[:len(before[i])] == before[i], f"node {i} re-applied differently"
    assert c[1].applied[3] == (4, 1, b"c")
    assert c[1].applied[4][1:] == (2, b""), "the new term's no-op follows"
    c.check_safety()


def test_max_apply_bytes_paces_application(rh):
    c = settled(rh, max_apply_bytes=100)
    c.propose(1, *[bytes([65 + k]) * 40 for k in range(6)])
    c.stabilize()
    c.tick(1)
    node = c[2]
    batches = [rd.committed for rd in node.readies if rd.committed is not None]
    for b in batches:
        size = sum(len(p) for _, p in b.entries)
        assert size <= 100 or len(b.entries) == 1
    assert node.applied_index == 7
    assert [e[0] for e in node.applied] == list(range(1, 8))


def test_soft_state_reports_role_and_leader_changes(rh):
    c = rh.Cluster(3, pre_vote=False)
    c.elect(1)
    soft = [rd.soft_state for rd in c[1].readies if rd.soft_state is not None]
    assert [(s.role, s.lead) for s in soft] == [(rh.CANDIDATE, rh.NO_NODE), (rh.LEADER, 1)]
    soft2 = [rd.soft_state for rd in c[2].readies if rd.soft_state is not None]
    assert soft2[-1] == (1, rh.FOLLOWER)


def test_quiet_node_has_no_ready_and_unchanged_heartbeat_needs_no_sync(rh):
    c = settled(rh)
    c.tick(1)
    for i in c.ids:
        assert not c[i].raw.has_ready()
    c[2].step(rh.msg(rh.M.HEARTBEAT, 2, 1, 1, commit=c.committed(2)))
    rd = c[2].raw.ready()
    assert rd.hard_state is None and rd.entries is None and not rd.must_sync
    assert [m.type for m in rd.persisted_messages] == [rh.M.HEARTBEAT_RESP]


# -- randomized runs: safety under partitions, loss and crashes -------------------------------


def crash(c, node, rng):
    """Crash ``node``, possibly in the middle of a Ready: its leader traffic may already have
    left (thesis §10.2.1), its batch may or may not have reached the disk, and its answers
    may or may not have been sent — never an answer without the batch."""
    if rng.random() < 0.7 and node.raw.has_ready():
        rd = node.raw.ready()
        mode = rng.randrange(3)
        c.queue.extend(rd.messages)
        if mode >= 1:
            node.persist(rd)
        if mode == 2:
            c.queue.extend(rd.persisted_messages)
    node.restart()


def chaotic_delivery(c, rng):
    """A few delivery rounds with loss, delay, reordering and duplication."""
    for _ in range(rng.randrange(1, 6)):
        c.flush()
        msgs = list(c.queue)
        c.queue.clear()
        if rng.random() < 0.3:
            rng.shuffle(msgs)
        delayed = []
        for m in msgs:
            x = rng.random()
            if x < 0.05:
                c.dropped.append(m)
                if m.type == MsgType.SNAP:
                    c[m.frm].raw.report_snapshot(m.to, False)
            elif x < 0.15:
                delayed.append(m)
            else:
                c.send(m)
                if x > 0.97:
                    c.send(m)
        c.queue.extend(delayed)
    c.flush()


@pytest.mark.parametrize("seed", range(8))
def test_randomized_faults_keep_state_machines_consistent(rh, seed):
    """Seeded chaos (rerun one with ``-k "consistent and <seed>"``): partitions, cut links,
    loss, delay, reordering, duplication, crashes mid-Ready, compaction and snapshots,
    transfers, reads. After every step: applied histories are prefixes of one another, at
    most one leader per term, committed entries never change, leaders of later terms hold
    every committed entry (§5.4), and no read is answered below an index committed before it
    was asked (§6.4). At the end, with the network healed, everything commits everywhere."""
    rng = random.Random(seed)
    c = rh.Cluster(rng.choice([3, 5]), seed=seed, election_tick=rng.choice([4, 6, 10]),
                   max_inflight_msgs=rng.choice([1, 2, 256]),
                   max_msg_bytes=rng.choice([10, 1 << 20]),
                   pre_vote=rng.random() < 0.7, check_quorum=rng.random() < 0.7)
    c.report_snapshots = True
    where = f"seed {seed}"
    committed = {}   # index -> (entry, term of the node that first reported it committed)
    reads = {}       # read context -> highest commit index anywhere when it was asked
    nreads = proposals = 0
    for step in range(300):
        where = f"seed {seed} step {step}"
        r = rng.random()
        lead = c.leader()
        if r < 0.03:
            c.isolate(rng.choice(c.ids))
        elif r < 0.06:
            a, b = rng.sample(c.ids, 2)
            c.cut(a, b)
        elif r < 0.09:
            c.heal()
        elif r < 0.11:
            crash(c, c[rng.choice(c.ids)], rng)
        elif r < 0.13 and lead is not None:
            c[lead].raw.transfer_leadership(rng.choice(c.ids))
        elif r < 0.16:
            node = c[rng.choice(c.ids)]
            if node.applied_index > node.log.snapshot.meta.index and not node.raw.has_ready():
                keep = (max(1, node.applied_index - rng.randrange(5))
                        if rng.random() < 0.5 else None)
                node.take_snapshot(keep_from=keep)
        elif r < 0.22 and lead is not None:
            c[lead].raw.read_index(nreads)
            reads[nreads] = max(c.committed(i) for i in c.ids)
            nreads += 1
        elif r < 0.5 and lead is not None:
            batch = [b"s%d-%d" % (seed, proposals + k) for k in range(rng.randrange(1, 4))]
            try:
                c.propose(lead, *batch)
                proposals += len(batch)
            except Busy:
                pass
        for i in c.ids:
            if rng.random() < 0.95:
                c[i].tick()
        chaotic_delivery(c, rng)
        c.check_safety()
        for i in c.ids:
            log = c[i].log
            for idx in range(log.first_index, log.committed + 1):
                e = log.ring.entry(idx)
                seen = committed.setdefault(idx, (e, c[i].term))
                assert seen[0] == e, f"{where}: node {i} committed {idx}={e}, before {seen}"
        for i in c.leaders():
            node = c[i]
            log = node.log
            for idx, (e, t) in committed.items():
                if node.term > t and idx >= log.first_index:
                    assert idx <= log.last_index and log.ring.entry(idx) == e, (
                        f"{where}: leader {i} of term {node.term} lacks {idx} (term {t})")
            for rs in node.read_states:
                if rs.context in reads:
                    assert rs.index >= reads.pop(rs.context), f"{where}: stale read {rs}"
    # liveness once the faults stop: a new entry commits and applies everywhere
    where = f"seed {seed} (end)"
    c.heal()
    c.drop_if = None
    c.tick_until(lambda: c.leader() is not None, max_ticks=200)
    for _ in range(100):
        try:
            c.propose(c.leader(), b"final")
            break
        except (Busy, NotLeader):
            c.tick(1)
    else:
        raise AssertionError(f"{where}: no proposal accepted")
    c.tick(20)
    last = c[c.leader()].log.last_index
    for i in c.ids:
        assert c[i].applied_index == last, f"{where}: node {i} applied {c[i].applied_index}/{last}"
    c.check_safety()
