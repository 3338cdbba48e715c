"""Failover with real processes: a follower whose leader's connection closes campaigns at once
(rule 9 of ``fastraft/raft/raft.py``, wired by ``server/peers.py`` -> ``Node.on_peer_closed``).

Place in the architecture: integration tests (tests/integration), on the ``cluster_factory``
fixture's real ``fastraft node`` processes. The clusters here have long election timeouts
(2 s, randomized in [2 s, 4 s)), so that an election within them can only come from the
evidence of the closed connections; how fast failover is, is measured by
``bench/failover_bench.py``, not here.
"""

from __future__ import annotations

import time

from fastraft import Client

SLOW_ELECTIONS = {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 2000}


def test_a_killed_leader_is_replaced_before_any_election_timeout(cluster_factory):
    cl = cluster_factory(3, tuning=SLOW_ELECTIONS)
    old = cl.leader(timeout=30)
    term = cl.status(old)["term"]
    with Client(cl.endpoints(), timeout=5.0) as c:
        c.put(b"before", b"1")
    killed_at = time.monotonic()
    cl.kill(old)
    new = cl.leader(timeout=30, exclude=[old])
    took = time.monotonic() - killed_at
    # No follower's election timer can fire within 2 s of the last heartbeat it got.
    assert took < 1.9, f"new leader after {took:.2f} s: the election waited for a timeout\n" \
                       f"{cl.report()}"
    assert cl.status(new)["term"] == term + 1, "one election: the vote was not split"
    assert "campaigning now" in cl.node(new).log_text()
    with Client([cl.node(new).client_addr], timeout=5.0) as c:
        assert c.get(b"before") == b"1"
        c.put(b"after", b"2")
    cl.restart(old)
    cl.wait_for(lambda: (cl.status(old) or {}).get("role") == "follower", 30,
                "the old leader back as a follower")
    assert cl.leader() == new


def test_a_stopped_follower_does_not_disturb_the_leader(cluster_factory):
    # The leader's connections to a follower close when that follower stops: the evidence is
    # about a follower, so nobody campaigns and the term stays.
    cl = cluster_factory(3, tuning=SLOW_ELECTIONS)
    lead = cl.leader(timeout=30)
    term = cl.status(lead)["term"]
    follower = next(i for i in cl.ids if i != lead)
    cl.kill(follower)
    with Client([cl.node(lead).client_addr], timeout=5.0) as c:
        c.put(b"k", b"v")
    cl.restart(follower)
    cl.wait_for(lambda: (cl.status(follower) or {}).get("role") == "follower", 30,
                "the follower back")
    assert cl.leader() == lead and cl.status(lead)["term"] == term
