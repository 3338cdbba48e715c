"""Smoke test of real ``fastraft node`` processes: elect, write, read, lose the leader, read.

Place in the architecture: the first integration test (tests/integration), run through the
harness (``cluster_factory``) and the wire client; no fastraft.client, no server imports.
"""

from __future__ import annotations

import signal

from fastraft import codec


def leader_client(c, timeout: float = 15.0):
    """``(leader id, WireClient)`` once a leader answers; the harness waits with a deadline."""
    lead = c.leader(timeout)
    return lead, c.client(lead)


def test_three_nodes_survive_the_loss_of_the_leader(cluster_factory):
    c = cluster_factory(size=3)
    lead, cl = leader_client(c)

    session = cl.register().expect_ok()
    assert isinstance(session, int) and session > 0
    assert cl.put(session, 1, b"hello", b"world").ok
    assert cl.get(b"hello").expect_ok() == b"world"
    assert cl.get(b"absent").expect_ok() is None

    # a follower refuses a linearizable read and names the leader
    follower = next(i for i in c.ids if i != lead)
    reply = c.client(follower).get(b"hello")
    assert reply.status == codec.ST_NOT_LEADER, reply
    assert reply.values[0] == lead

    # every node applies the write
    applied = c.status(lead)["applied"]
    c.wait_applied(applied)

    assert c.kill(lead) == -signal.SIGKILL
    new_lead = c.leader(exclude=[lead])
    cl2 = c.client(new_lead)
    assert cl2.get(b"hello").expect_ok() == b"world"
    # the session survives the change of leader: the next write in it is applied once
    assert cl2.put(session, 2, b"hello", b"again").ok
    assert cl2.get(b"hello").expect_ok() == b"again"

    # the old leader comes back as a follower and catches up
    c.restart(lead)
    target = c.status(new_lead)["applied"]
    c.wait_applied(target)
    assert c.stop() == {i: 0 for i in c.ids}
