"""The Ready contract of rawnode.py over a real WalStore: a node persists each Ready (snapshot
mark, entries, hard state, one fsync), restarts from ``recovered()`` and carries on.

Specification: the loop in the docstring of fastraft/raft/rawnode.py and base.py's restart
recipe. A single-voter cluster commits on its own, so no network is needed.
"""

from __future__ import annotations

import random

from fastraft.raft import LEADER, RaftConfig, RaftLog, RawNode, Snapshot, SnapshotMeta
from fastraft.storage import WalStore


def boot(wal_dir, voters=(1,)):
    store = WalStore.open(wal_dir, segment_size=400)
    st = store.recovered()
    meta = st.snapshot or SnapshotMeta(0, 0, frozenset(voters))
    log = RaftLog(Snapshot(meta), st.entries, st.hard_state.commit)
    node = RawNode(RaftConfig(1, frozenset(voters)), random.Random(1), log, st.hard_state)
    return store, node


def drive(store, node, applied):
    while node.has_ready():
        rd = node.ready()
        if rd.snapshot is not None:
            store.save_snapshot_mark(rd.snapshot.meta)
        if rd.entries is not None:
            store.append(rd.entries)
        if rd.hard_state is not None:
            store.save_hard_state(rd.hard_state)
        if rd.must_sync:
            store.sync()
        if rd.committed is not None:
            applied.extend(p for _t, p in rd.committed.entries if p)
        node.advance(rd)


def test_single_node_restarts_from_the_wal(wal_dir):
    store, node = boot(wal_dir)
    node.campaign()
    applied = []
    drive(store, node, applied)
    assert node._raft.role == LEADER
    for k in range(30):
        node.propose([b"cmd%d" % k, b"x" * (k + 1)])
        drive(store, node, applied)
    term, last, commit = node._raft.term, node._raft.log.last_index, node._raft.log.committed
    assert commit == last and len(store.segment_names()) > 3
    store.close()

    store, node = boot(wal_dir)
    assert (node._raft.term, node._raft.log.last_index, node._raft.log.committed) == \
        (term, last, commit)
    # compact under a snapshot mark, restart again: the log starts after the mark
    cs = node.conf_state_at(40)
    snap = Snapshot(SnapshotMeta(40, node._raft.log.term(40), cs.voters, cs.outgoing,
                                 cs.learners, b"member book"))
    node._raft.log.applied_to(commit)
    node.compact(snap)
    store.save_snapshot_mark(snap.meta)
    store.compact(40)
    store.close()

    store, node = boot(wal_dir)
    assert store.snapshot_mark == snap.meta
    assert node._raft.log.first_index == 41 and node._raft.log.last_index == last
    node.campaign()
    drive(store, node, [])
    assert node._raft.role == LEADER and node._raft.term > term
    node.propose([b"after"])
    drive(store, node, [])
    store.close()
    store, node = boot(wal_dir)
    assert node._raft.log.ring.payload(node._raft.log.last_index) == b"after"
    store.close()
