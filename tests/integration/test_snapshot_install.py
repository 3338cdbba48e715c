"""A follower installing a large snapshot keeps serving: its state is built off the loop.

Place in the architecture: an end-to-end test of real node processes (tests/integration,
``cluster_factory``) for the install path of ``fastraft/server/backends.py`` (``prepare`` on
the peer transport's worker thread, ``install`` swapping the prepared state in). The unit
tests of the swap itself are in tests/unit/test_prepared_install.py.

The cluster is seeded without writing a million entries: its nodes are killed while idle and
every node is given the same snapshot file, a few entries past each one's log, holding
``KEYS`` keys (the WAL backend restarts its log after a snapshot that is ahead of it, as after
a crash between a snapshot and its mark). A follower is then wiped; it rejoins through that
snapshot while the test keeps asking it for its status: some answers must come while its
state is being built (its log says "building" before the request and not yet "built" after
the answer), and no election happens (every node's term stays the same). Nothing is timed.
"""

from __future__ import annotations

import os
import shutil
import threading

from fastraft import codec
from fastraft.raft.messages import SnapshotMeta
from fastraft.statemachine import KVStateMachine, KVStore
from fastraft.storage.snapshot import SnapshotStore

#: Elections fast enough for a short test, slow enough not to start for CPU contention alone
#: (three nodes and the test share the machine while a million keys move).
TUNING = {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 1000}
KEYS = 1_000_000


def _settled(cl) -> dict:
    """Wait until every node answers, all in one term under one leader; their statuses."""
    def agreed():
        st = cl.statuses()
        if len(st) != len(cl.ids):
            return None
        if len({(s["term"], s["leader"]) for s in st.values()}) != 1:
            return None
        lead = next(iter(st.values()))["leader"]
        return st if lead and st[lead]["role"] == "leader" else None
    return cl.wait_for(agreed, 30, "every node in one term under one leader")


def _seed(cl, keys: int) -> SnapshotMeta:
    """Kill the idle cluster and give every node the same snapshot of ``keys`` keys, past
    every node's log; returns its meta."""
    st = _settled(cl)
    terms = {s["term"] for s in st.values()}
    for i in cl.ids:
        cl.kill(i)
    book = {i: (cl.node(i).raft_addr, cl.node(i).client_addr) for i in cl.ids}
    meta = SnapshotMeta(max(s["last_index"] for s in st.values()) + 10, terms.pop(),
                        frozenset(cl.ids), context=codec.encode_member_book(book))
    names = [b"key-%012d" % i for i in range(keys)]
    m = KVStateMachine()
    m._kv = KVStore.from_sorted(names, [b"v" * 16] * keys)
    m.applied_index = meta.index
    first, *others = cl.ids
    path = SnapshotStore(os.path.join(cl.node(first).data_dir, "snap")).save(
        meta, m.snapshot_chunks())
    for i in others:
        shutil.copyfile(path, os.path.join(cl.node(i).data_dir, "snap",
                                           os.path.basename(path)))
    return meta


def test_a_follower_installing_a_large_snapshot_keeps_answering(cluster_factory):
    cl = cluster_factory(3, tuning=TUNING, storage="wal")
    meta = _seed(cl, KEYS)
    cl.start()
    cl.wait_applied(meta.index, timeout=30)
    st = _settled(cl)
    lead = next(iter(st.values()))["leader"]
    victim = next(i for i in cl.ids if i != lead)
    before = {i: s["term"] for i, s in st.items()}

    node = cl.node(victim)
    during = []         # status answers that came while the state was being built
    answers = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            building = "building the state of snapshot" in node.log_text()
            s = cl.status(victim, timeout=5.0)
            if s is None:
                continue
            answers.append(s)
            if building and "built the state of snapshot" not in node.log_text():
                during.append(s)

    cl.wipe(victim)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        cl.wait_for(lambda: "installed snapshot" in node.log_text(), 60,
                    "the wiped node to install the snapshot")
    finally:
        stop.set()
        poller.join(30)
    log = node.log_text()
    assert f"built the state of snapshot {meta.index}@{meta.term}" in log, log[-3000:]
    assert "state was built off the loop" in log, log[-3000:]
    assert during, f"no status answer while the state was built ({len(answers)} answers)"
    assert all(s["applied"] < meta.index for s in during), during
    cl.wait_applied(meta.index, ids=[victim], timeout=30)
    after = {i: s["term"] for i, s in cl.statuses().items()}
    assert after == before, (before, after)
    assert cl.current_leader() == lead
    with cl.client(lead) as c:
        sid = c.register().expect_ok()
        assert c.put(sid, 1, b"after", b"x").ok
    with cl.client(victim) as c:
        cl.wait_for(lambda: c.get(b"key-%012d" % (KEYS - 1), stale=True).value == b"v" * 16,
                    10, "the last seeded key on the rejoined node")
