"""Engine bugs the simulator found, each pinned by a small deterministic scenario.

1. Lost appends with a full in-flight window (sim seed 185, 5 nodes): a follower in REPLICATE
   whose appends were all lost kept a full window forever; heartbeats answered but nothing
   was re-sent. Fix: a heartbeat answer frees one slot, the next append is rejected, and the
   follower drops to PROBE (raft.py, HEARTBEAT_RESP).
2. Conflict hint (0, 0) ignored (sim seed 863, 5 nodes): a follower with an empty log answers
   a rejected append with hint index 0, term 0; the leader treated (0, 0) as "no hint" and
   walked back one index per round trip. Fix: the hint is always used.

3. An append of many small entries encoded far past ``max_msg_bytes`` (the budget counted
   payload bytes only): about 1.5 MiB for 11-byte commands against a 1 MiB budget, past the
   receiving node's frame limit, which refused the same frame at every retry, so a follower far
   behind never caught up. Fix: each entry's framing counts in the budget (raft.py,
   ENTRY_FRAMING).

4. A wiped follower of an idle leader never caught up (the membership tests, a joined voter
   wiped and restarted with ``--rejoin``): the leader believed it matched everything, had
   nothing new to send, and only heartbeated it. Fix: a heartbeat whose commit is beyond the
   follower's log (the leader caps it by the follower's match) is answered with a rejection
   too, and the leader starts over from the follower's real log (raft.py, heartbeats).

Plus two Ready-contract points raised while testing the engine: a second ready() before
advance() is refused, and a commit-index change alone does not demand an fsync.
"""

import random

from fastraft.raft import LEADER, MsgType, RaftConfig, RaftLog, RawNode
from fastraft.raft.log import initial_snapshot


class Net:
    """Three RawNodes, delivery by hand, synchronous persistence (apply after persist)."""

    def __init__(self, n=3, **cfg):
        ids = list(range(1, n + 1))
        self.nodes = {i: RawNode(RaftConfig(i, ids, **cfg), random.Random(i)) for i in ids}
        self.queue = []
        self.drop = lambda m: False
        self.log = []

    def pump(self):
        for _ in range(10_000):
            for n in self.nodes.values():
                while n.has_ready():
                    rd = n.ready()
                    self.queue.extend(rd.messages)
                    self.queue.extend(rd.persisted_messages)
                    n.advance(rd)
            if not self.queue:
                return
            q, self.queue = self.queue, []
            for m in q:
                self.log.append(m)
                if not self.drop(m):
                    self.nodes[m.to].step(m)
        raise AssertionError("did not settle")

    def tick(self, times=1):
        for _ in range(times):
            for n in self.nodes.values():
                n.tick()
            self.pump()

    def elect(self, nid):
        self.nodes[nid].campaign()
        self.pump()
        assert self.nodes[nid]._raft.role == LEADER


def test_lost_appends_with_a_full_window_recover_on_heartbeats():
    net = Net(max_inflight_msgs=2, heartbeat_tick=1, election_tick=10)
    net.elect(1)
    lead = net.nodes[1]
    net.drop = lambda m: m.to == 3 and m.type == MsgType.APP
    for k in range(6):
        lead.propose([b"x%d" % k])
        net.pump()
    pr3 = lead._raft.prs[3]
    assert pr3.match < lead._raft.log.last_index
    net.drop = lambda m: False
    net.tick(6)   # heartbeats only: the window must reopen and node 3 catch up
    assert net.nodes[3]._raft.log.last_index == lead._raft.log.last_index
    assert lead._raft.prs[3].match == lead._raft.log.last_index


def test_appends_of_small_entries_stay_within_the_message_budget():
    from fastraft import codec

    budget = 4096
    net = Net(max_msg_bytes=budget, max_inflight_msgs=4)
    net.elect(1)
    lead = net.nodes[1]
    net.drop = lambda m: m.to == 3          # node 3 falls far behind
    for k in range(200):
        lead.propose([b"c%09d" % k] * 5)    # 10-byte commands, the smallest real ones
        net.pump()
    net.drop = lambda m: False
    net.log.clear()
    net.tick(30)
    apps = [m for m in net.log if m.type == MsgType.APP and m.to == 3 and m.entries]
    assert len(apps) > 1
    worst = max(len(codec.encode_message(m)) for m in apps)
    assert worst <= budget + 128, f"an append of {worst} bytes, budget {budget}"
    assert net.nodes[3]._raft.log.last_index == lead._raft.log.last_index


def _leader_with_writes(n: int):
    """A Net whose node 1 leads and committed ``n`` writes: ``(net, leader)``."""
    net = Net()
    net.elect(1)
    lead = net.nodes[1]
    for k in range(n):
        lead.propose([b"x%d" % k])
        net.pump()
    return net, lead


def _wiped(net, nid: int, **cfg):
    """Replace node ``nid`` by a fresh engine with an empty log (a wiped disk)."""
    ids = sorted(net.nodes)
    net.nodes[nid] = RawNode(RaftConfig(nid, ids, **cfg), random.Random(nid),
                             RaftLog(initial_snapshot(ids)))
    return net.nodes[nid]


def test_an_empty_follower_log_is_found_in_one_round_trip():
    net, lead = _leader_with_writes(30)
    # Node 3 loses everything (a wiped disk): a fresh engine with an empty log, same term.
    term = net.nodes[3]._raft.term
    fresh = _wiped(net, 3)
    fresh._raft.term = term
    # The leader's view of node 3 as a newly elected leader has it: nothing known to match.
    pr3 = lead._raft.prs[3]
    pr3.become_probe()
    pr3.match = 0
    pr3.next = lead._raft.log.last_index + 1
    net.log.clear()
    lead.propose([b"more"])
    net.pump()
    rejects = [m for m in net.log if m.type == MsgType.APP_RESP and m.frm == 3 and m.reject]
    assert len(rejects) == 1, f"{len(rejects)} rejections before the leader found index 0"
    assert rejects[0].hint_index == 0 and rejects[0].hint_term == 0
    assert fresh._raft.log.last_index == lead._raft.log.last_index


def test_a_wiped_follower_of_an_idle_leader_catches_up():
    net, lead = _leader_with_writes(10)
    assert lead._raft.prs[3].match == lead._raft.log.last_index
    # Node 3 loses everything and comes back as a rejoining node: nothing is proposed any more.
    _wiped(net, 3, rejoining=True)
    for _ in range(5):
        for n in net.nodes.values():
            n.tick()
        net.pump()
    assert net.nodes[3]._raft.log.last_index == lead._raft.log.last_index
    assert net.nodes[3]._raft.log.committed == lead._raft.log.committed


def test_ready_twice_without_advance_is_refused():
    """A runtime that asked twice would persist and apply the same entries twice."""
    import pytest

    from fastraft.errors import LocalProtocolError

    net = Net()
    n = net.nodes[1]
    n.campaign()
    rd = n.ready()
    with pytest.raises(LocalProtocolError):
        n.ready()
    n.advance(rd)
    n.ready()   # fine again after advance


def test_a_commit_index_change_alone_needs_no_fsync():
    """Like etcd's MustSync: term, vote, entries and snapshots need the fsync before answers
    leave; the commit index can be written lazily (a restarted node relearns it)."""
    from fastraft.raft import Message

    net = Net()
    net.elect(1)
    leader, follower = net.nodes[1], net.nodes[2]
    leader.propose([b"b"])
    rd = leader.ready()
    app = next(m for m in rd.messages if m.to == 2 and m.type == MsgType.APP)
    leader.advance(rd)
    follower.step(app)                       # the new entry, its commit not yet known
    rd2 = follower.ready()
    assert rd2.entries is not None and rd2.must_sync
    follower.advance(rd2)
    last = follower._raft.log.last_index
    assert follower._raft.log.committed < last
    follower.step(Message(MsgType.HEARTBEAT, 2, 1, leader._raft.term, commit=last))
    rd3 = follower.ready()
    assert rd3.hard_state is not None and rd3.hard_state.commit == last
    assert rd3.entries is None and not rd3.must_sync
    follower.advance(rd3)
