"""Runtime membership in the sans-IO engine (issue 13, thesis §4.3): conf-change entries,
learners, joint consensus, automatic leave-joint, removal of the leader, rollback of a
truncated conf change, and the binary encoding of ConfChange.

Place in the architecture: unit tests of ``fastraft.raft`` (confchange.py, raft.py,
rawnode.py), run on both core twins through the ``rh`` fixture of tests/unit/conftest.py.
"""

from __future__ import annotations

import pytest

from fastraft.errors import Busy, LocalProtocolError, NotLeader
from fastraft.raft import (
    ADD_LEARNER,
    ADD_VOTER,
    REMOVE_NODE,
    BadConfChange,
    Change,
    ConfChange,
    RaftConfig,
    decode_conf_change,
    encode_conf_change,
    is_conf_change,
)


def cc(*changes):
    return ConfChange(tuple(Change(k, n, b"ctx%d" % n) for k, n in changes))


def commit_all(c, lead):
    """Stabilize until the leader's whole log is committed everywhere reachable."""
    c.stabilize()
    c.tick(3)
    return c[lead].log.committed


def committed_confs(node):
    return [p for (_i, _t, p) in node.applied if is_conf_change(p)]


# -- encoding -----------------------------------------------------------------------------------


def test_encoding_round_trips():
    for value in (cc((ADD_VOTER, 4)), cc((ADD_LEARNER, 2**64 - 1), (REMOVE_NODE, 1)),
                  ConfChange.leave(),
                  ConfChange((Change(ADD_VOTER, 9, b"\x00" * 4096),))):
        data = encode_conf_change(value)
        assert data[0] == 0xc1 and is_conf_change(data)
        assert decode_conf_change(data) == value


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", b"\xc1\x01\x00", b"\x93\x01\x02\x03",          # truncated / msgpack
    b"\xc1\x02\x00\x00\x01" + b"\x01" + (4).to_bytes(8, "big") + b"\x00\x00",   # version 2
    b"\xc1\x01\x02\x00\x00",                                      # unknown flag
    b"\xc1\x01\x00\x00\x00",                                      # no changes, not leave
    b"\xc1\x01\x01\x00\x01" + b"\x01" + (4).to_bytes(8, "big") + b"\x00\x00",   # leave + change
    b"\xc1\x01\x00\x00\x01" + b"\x07" + (4).to_bytes(8, "big") + b"\x00\x00",   # kind 7
    b"\xc1\x01\x00\x00\x01" + b"\x01" + (0).to_bytes(8, "big") + b"\x00\x00",   # id 0
    b"\xc1\x01\x00\x00\x01" + b"\x01" + (4).to_bytes(8, "big") + b"\x00\x05ab",  # short ctx
    b"\xc1\x01\x00\x00\x01" + b"\x01" + (4).to_bytes(8, "big") + b"\x00\x00!",  # trailing
    b"\xc1\x01\x00\xff\xff",                                      # too many changes
])
def test_garbage_is_refused(payload):
    with pytest.raises(BadConfChange):
        decode_conf_change(payload)


def test_invalid_values_do_not_encode():
    for bad in (ConfChange(()), ConfChange((Change(ADD_VOTER, 0),)),
                ConfChange((Change(9, 1),)), ConfChange((Change(ADD_VOTER, 2),), True),
                ConfChange((Change(ADD_VOTER, 2, b"x" * 4097),))):
        with pytest.raises(BadConfChange):
            encode_conf_change(bad)
    assert issubclass(BadConfChange, LocalProtocolError)


def test_client_payloads_are_never_conf_changes(rh):
    c = rh.Cluster(3)
    c.elect(1)
    with pytest.raises(LocalProtocolError):
        c.propose(1, b"\xc1\x01")
    assert not is_conf_change(b"") and not is_conf_change(b"\x93\x01\x02\x03")


def test_learner_config_validation():
    with pytest.raises(ValueError):
        RaftConfig(1, {1, 2}, learners={2})


# -- learners -----------------------------------------------------------------------------------


def test_add_learner_replicates_never_counts_nor_campaigns(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3}, pre_vote=False)
    c.elect(1)
    idx, _ = c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    commit_all(c, 1)
    st = c[1].raw.status()
    assert st.learners == (4,) and st.voters == (1, 2, 3) and st.outgoing == ()
    assert not st.conf_pending
    assert c[4].raw.status().learners == (4,), "the learner appended the change"
    assert c.committed(1) >= idx
    c.propose(1, b"a")
    c.stabilize()
    assert c[4].log.last_index == c[1].log.last_index, "the learner replicates"
    assert c[4].applied_index == c[1].applied_index
    # It never counts: with two voters cut off, the learner's copy does not commit.
    c.isolate(2, 3)
    c.propose(1, b"b")
    c.stabilize()
    assert c[4].log.last_index == c[1].log.last_index
    assert c.committed(1) < c[1].log.last_index
    c.heal()
    c.tick(3)
    # It never campaigns, candidates do not ask it, and a vote it grants never counts.
    c.isolate(1)
    c.tick(50, ids=[4])
    assert c[4].role == rh.FOLLOWER
    c.isolate(1, 3)
    n = len(c.delivered)
    c[2].raw.campaign()
    c.stabilize()
    assert c[2].role == rh.CANDIDATE
    assert not any(m.to == 4 for m in c.delivered[n:]), "candidates ask voters only"
    c[2].step(rh.msg(rh.M.VOTE_RESP, 2, 4, c[2].term))
    assert c[2].role == rh.CANDIDATE, "a learner's vote never counts"
    c.heal()
    c.tick_until(lambda: c.leader() in (1, 2, 3), max_ticks=100)
    assert committed_confs(c[4]) == committed_confs(c[1]) != []


def test_a_promoted_learner_that_missed_its_promotion_still_votes(rh):
    """Found by the simulator (fastraft sim seeds 352 and 1054, 3 nodes): the promotion of
    learner 4 commits on the old voters alone, 4 never appends it; once the leader is gone, a
    candidate needs 4's vote. A node that refused every vote while it saw itself as a learner
    left the cluster without any electable majority, for good (etcd's learners vote too)."""
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3}, pre_vote=False, check_quorum=False)
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    commit_all(c, 1)
    c.isolate(4)                                   # 4 will not see its promotion
    c[1].raw.propose_conf_change(cc((ADD_VOTER, 4)))
    commit_all(c, 1)                               # joint on {1,2,3}, then left on {1,2,3}
    st = c[1].raw.status()
    assert st.voters == (1, 2, 3, 4) and st.outgoing == () and not st.conf_pending
    assert c[4].raw.status().learners == (4,), "4 still sees itself as a learner"
    c.heal()
    c.isolate(1)
    # 2 needs 3 of {1, 2, 3, 4}: itself, 3 and 4.
    c[2].raw.campaign()
    c.stabilize()
    assert c[2].role == rh.LEADER
    c.stabilize()
    c.tick(3)
    assert c[4].raw.status().voters == (1, 2, 3, 4), "4 learns its promotion from 2"
    c.check_safety()


def test_leadership_is_never_transferred_to_a_voter_being_removed(rh):
    """Found by the simulator (fastraft sim seed 1522, 3 nodes): a TIMEOUT_NOW sent to a
    voter of the outgoing configuration only reached it once its removal had committed; its
    transfer campaign bypasses the members' lease, so the removed node deposed the leader."""
    c = rh.Cluster(ids=[1, 2, 3])
    c.elect(1)
    c[1].raw.propose_conf_change(cc((REMOVE_NODE, 2)))
    assert c[1].raw.status().outgoing == (1, 2, 3)
    with pytest.raises(LocalProtocolError):
        c[1].raw.transfer_leadership(2)
    assert c[1].raft.lead_transferee == rh.NO_NODE
    c.stabilize()
    c.tick(3)
    assert c[1].raw.status().voters == (1, 3) and c[1].raw.status().outgoing == ()
    c[1].raw.transfer_leadership(3)                # an incoming voter: fine
    c.stabilize()
    assert c.leader() == 3
    c.check_safety()


def test_promote_refused_while_lagging_then_accepted(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3}, promote_lag=2)
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    commit_all(c, 1)
    c.isolate(4)
    for k in range(5):
        c.propose(1, b"p%d" % k)
    c.stabilize()
    with pytest.raises(Busy):
        c[1].raw.propose_conf_change(cc((ADD_VOTER, 4)))
    assert c[1].raw.status().learners == (4,)
    c.heal()
    c.tick(3)
    assert c[4].log.last_index == c[1].log.last_index
    c[1].raw.propose_conf_change(cc((ADD_VOTER, 4)))
    st = c[1].raw.status()
    assert st.voters == (1, 2, 3, 4) and st.outgoing == (1, 2, 3) and st.learners == ()
    commit_all(c, 1)
    st = c[1].raw.status()
    assert st.voters == (1, 2, 3, 4) and st.outgoing == () and not st.conf_pending
    assert c[4].raw.status().voters == (1, 2, 3, 4)


# -- joint consensus ----------------------------------------------------------------------------


def test_joint_commit_needs_both_majorities_and_leave_is_automatic(rh):
    # {1,2,3} -> {1,4,5}: while joint, the old majority {1,2,3} alone must not commit.
    c = rh.Cluster(ids=[1, 2, 3, 4, 5], voters={1, 2, 3})
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4), (ADD_LEARNER, 5)))
    commit_all(c, 1)
    c[1].raw.propose_conf_change(cc((ADD_VOTER, 4), (ADD_VOTER, 5), (REMOVE_NODE, 2),
                                    (REMOVE_NODE, 3)))
    assert c[1].raw.status().outgoing == (1, 2, 3)
    c.isolate(4, 5)
    c.stabilize()
    lead = c[1]
    assert lead.log.committed < lead.log.last_index, \
        "old majority alone committed the joint entry"
    assert c[2].log.last_index == lead.log.last_index, "the old majority holds it"
    # The leave entry is not proposed while the joint entry is uncommitted.
    with pytest.raises(Busy):
        lead.raw.propose_conf_change(ConfChange.leave())
    c.heal()
    c.stabilize()
    c.tick(3)
    st = lead.raw.status()
    assert st.voters == (1, 4, 5) and st.outgoing == () and not st.conf_pending
    assert lead.log.committed == lead.log.last_index
    confs = [decode_conf_change(p) for p in committed_confs(lead)]
    assert confs[-1] == ConfChange.leave(), "leave-joint was appended automatically"
    assert st.learners == ()
    assert set(lead.raw.status().progress) == {1, 4, 5}
    c.check_safety()


def test_joint_new_majority_alone_does_not_commit(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4, 5], voters={1, 2, 3})
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4), (ADD_LEARNER, 5)))
    commit_all(c, 1)
    c[1].raw.propose_conf_change(cc((ADD_VOTER, 4), (ADD_VOTER, 5), (REMOVE_NODE, 2),
                                    (REMOVE_NODE, 3)))
    c.isolate(2, 3)
    c.stabilize()
    assert c[1].log.committed < c[1].log.last_index
    assert c[1].raw.status().outgoing == (1, 2, 3)


def test_joint_election_needs_both_majorities(rh):
    # check_quorum off: voters must not ignore the campaigns for the old leader's lease.
    c = rh.Cluster(ids=[1, 2, 3, 4, 5], voters={1, 2, 3}, pre_vote=False, check_quorum=False)
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4), (ADD_LEARNER, 5)))
    commit_all(c, 1)
    c[1].raw.propose_conf_change(cc((ADD_VOTER, 4), (ADD_VOTER, 5), (REMOVE_NODE, 2),
                                    (REMOVE_NODE, 3)))
    c.deliver()     # every node appends the joint entry; acknowledgements stay queued
    c.take()        # ... and are lost: the joint entry is not committed
    for i in (1, 2, 3, 4, 5):
        st = c[i].raw.status()
        assert st.voters == (1, 4, 5) and st.outgoing == (1, 2, 3), i
    c.isolate(1)
    # 4 and 5 are a majority of the incoming {1,4,5} only: not elected.
    c.isolate(2, 3)
    c[4].raw.campaign()
    c.stabilize()
    assert c[4].role == rh.CANDIDATE
    c.heal()
    c.isolate(1, 5)
    # 4 with 2 and 3: a majority of the old config, but only 1 of 3 in the new one.
    c[4].raw.campaign()
    c.stabilize()
    assert c[4].role == rh.CANDIDATE
    c.heal()
    c.isolate(1)
    c[4].raw.campaign()
    c.stabilize()
    assert c[4].role == rh.LEADER
    c.heal()
    c.stabilize()
    c.tick(3)
    assert c[4].raw.status().outgoing == (), "the new leader leaves joint by itself"
    assert c[4].raw.status().voters == (1, 4, 5)
    c.check_safety()


# -- refusals -----------------------------------------------------------------------------------


def test_second_change_in_flight_is_refused(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3})
    c.elect(1)
    c.isolate(2, 3)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    c.stabilize()
    last = c[1].log.last_index
    with pytest.raises(Busy):
        c[1].raw.propose_conf_change(cc((REMOVE_NODE, 4)))
    assert c[1].log.last_index == last
    assert c[1].raw.status().conf_pending
    c.heal()
    commit_all(c, 1)
    c[1].raw.propose_conf_change(cc((REMOVE_NODE, 4)))     # accepted once committed
    commit_all(c, 1)
    assert c[1].raw.status().learners == ()


def test_refusals(rh):
    c = rh.Cluster(ids=[1, 2, 3], voters={1, 2, 3})
    c.elect(1)
    with pytest.raises(NotLeader):
        c[2].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    for bad in (cc((REMOVE_NODE, 9)), cc((ADD_VOTER, 2)), cc((ADD_LEARNER, 2)),
                cc((ADD_LEARNER, 4), (ADD_VOTER, 4)), ConfChange.leave()):
        with pytest.raises(BadConfChange):
            c[1].raw.propose_conf_change(bad)
    assert not c[1].raw.status().conf_pending


def test_removing_the_last_voter_is_refused(rh):
    c = rh.Cluster(1)
    c.elect(1)
    with pytest.raises(BadConfChange):
        c[1].raw.propose_conf_change(cc((REMOVE_NODE, 1)))
    c2 = rh.Cluster(ids=[1, 2], voters={1, 2})
    c2.elect(1)
    with pytest.raises(BadConfChange):
        c2[1].raw.propose_conf_change(cc((REMOVE_NODE, 1), (REMOVE_NODE, 2)))


# -- the leader removed -------------------------------------------------------------------------


def test_removed_leader_steps_down_after_commit(rh):
    c = rh.Cluster(ids=[1, 2, 3], voters={1, 2, 3})
    c.elect(1)
    c[1].raw.propose_conf_change(cc((REMOVE_NODE, 1)))
    assert c[1].raw.status().voters == (2, 3)
    assert c[1].role == rh.LEADER
    # Until the leave entry commits, 1 keeps leading (and replicating).
    c.isolate(2, 3)
    c.stabilize()
    assert c[1].role == rh.LEADER
    c.heal()
    c.tick_until(lambda: c[1].role != rh.LEADER, max_ticks=20)
    assert c[1].role == rh.FOLLOWER, "the removed leader stepped down after the commit"
    c.stabilize()
    confs = [decode_conf_change(p) for p in committed_confs(c[2])]
    assert confs and confs[-1] == ConfChange.leave()
    assert c[2].log.committed == c[2].log.last_index
    # 1 never campaigns again; 2 or 3 take over.
    c.tick_until(lambda: c.leader() in (2, 3), max_ticks=200)
    c.tick(50)
    assert c[1].role == rh.FOLLOWER
    c.check_safety()


def test_a_removed_leader_whose_removal_is_not_committed_still_campaigns(rh):
    """Found by the simulator (fastraft sim seed 105, 1 node grown to 2): {1, 2} removes its
    leader 1. The joint entry commits, 1 appends the leave entry (configuration {2}) and loses
    its lead before 2 gets it (check-quorum here; a crash does the same). 2, still joint,
    needs 1's vote, which 1 refuses (its log is ahead); 1, outside its own configuration,
    never campaigned: no leader ever again. Now 1 campaigns while it does not know its
    removal committed, wins with 2's vote alone, commits the leave entry and steps down."""
    c = rh.Cluster(ids=[1, 2], voters={1, 2})
    c.elect(1)
    c[1].raw.propose_conf_change(cc((REMOVE_NODE, 1)))
    c.deliver()                                    # the joint entry reaches 2 ...
    c.deliver()                                    # ... its ack commits it at 1
    st = c[1].raw.status()
    assert st.voters == (2,) and st.outgoing == () and st.conf_pending, "leave appended"
    c.isolate(2)                                   # the leave entry never reaches 2
    c.tick_until(lambda: c[1].role != rh.LEADER, max_ticks=50, ids=[1])
    assert c[2].raw.status().outgoing == (1, 2)
    c.heal()
    c.tick_until(lambda: c[2].role == rh.LEADER and c[2].raw.status().outgoing == ()
                 and not c[2].raw.status().conf_pending, max_ticks=300)
    assert c[2].raw.status().voters == (2,)
    idx, _ = c.propose(2, b"after")
    c.stabilize()
    assert c.committed(2) >= idx, "the cluster commits again"
    c.tick(30)
    assert c[1].role == rh.FOLLOWER, "1 knows its removal committed: it stays quiet"
    c.check_safety()


# -- rollback -----------------------------------------------------------------------------------


def test_truncated_conf_change_rolls_back(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4, 5, 6], voters={1, 2, 3, 4, 5}, pre_vote=False,
                   check_quorum=False)
    c.elect(1)
    c.isolate(3, 4, 5)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 6)))
    c.deliver(lambda m: m.to == 2 and m.type == rh.M.APP)   # 2 appends it, does not answer
    c.take()
    assert c[2].raw.status().learners == (6,)
    assert c[2].raw.status().conf_pending
    # 1 and 2 are cut off; 3 wins with 4 and 5 without the entry, then overwrites it.
    c.heal()
    c.isolate(1, 2)
    c.elect(3)
    c.propose(3, b"after")
    c.stabilize()
    c.heal()
    c.isolate(1)
    c.tick(3)
    assert c[2].log.last_index == c[3].log.last_index
    for i in (2, 3):
        st = c[i].raw.status()
        assert st.learners == () and not st.conf_pending, f"node {i} kept a truncated config"
        assert not any(is_conf_change(p) for _t, p in c[i].log_entries())
    # The old leader rejoins: its uncommitted conf change is truncated and rolled back too.
    assert c[1].raw.status().learners == (6,)
    c.heal()
    c.tick(5)
    assert c[1].raw.status().learners == ()
    assert c[1].role == rh.FOLLOWER
    assert c[1].log.last_index == c[3].log.last_index
    c.check_safety()


def test_restart_recovers_configuration_from_the_log(rh):
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3})
    c.elect(1)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    commit_all(c, 1)
    c[2].restart()
    assert c[2].raw.status().learners == (4,)
    assert c[2].raw.conf_state_at(1).learners == frozenset()
    assert c[2].raw.conf_state_at(c[2].log.last_index).learners == {4}


def test_snapshot_carries_the_configuration_to_a_new_learner(rh):
    from fastraft.raft import Snapshot, SnapshotMeta
    c = rh.Cluster(ids=[1, 2, 3, 4], voters={1, 2, 3})
    c.report_snapshots = True
    c.elect(1)
    c.isolate(4)
    c[1].raw.propose_conf_change(cc((ADD_LEARNER, 4)))
    c.propose(1, b"x")
    c.tick(2)
    lead = c[1]
    idx = lead.applied_index
    cs = lead.raw.conf_state_at(idx)
    assert cs.learners == {4}
    meta = SnapshotMeta(idx, lead.log.term(idx), cs.voters, cs.outgoing, cs.learners)
    snap = Snapshot(meta, tuple(lead.applied))
    lead.raw.compact(snap)
    lead.snapshots[(idx, meta.term)] = snap
    lead.store.save_snapshot_mark(meta)
    lead.store.sync()
    lead.store.compact(idx)
    assert lead.log.first_index > 1
    assert c[4].raw.status().learners == ()
    c.heal()
    c.tick_until(lambda: c[4].log.last_index == lead.log.last_index, max_ticks=20)
    assert any(m.type == rh.M.SNAP and m.to == 4 for m in c.delivered)
    st = c[4].raw.status()
    assert st.learners == (4,) and st.voters == (1, 2, 3)
    assert c[4].raw.conf_state_at(idx).learners == {4}
    c.propose(1, b"y")
    c.stabilize()
    assert c[4].log.last_index == lead.log.last_index
