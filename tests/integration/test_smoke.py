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
    c.wait_for(lambda: (c.status(follower) or {}).get("leader") == lead, 10,
               f"node {follower} to know its leader")
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


def test_every_client_operation_on_one_node(cluster_factory, wire):
    """Each operation of the client protocol, as the wire client encodes it, on a 1-node
    cluster (which is its own leader)."""
    c = cluster_factory(size=1)
    assert c.leader() == 1
    cl = c.client(1)
    s = cl.register().expect_ok()
    assert cl.put(s, 1, b"user/1", b"ann").ok
    assert cl.put(s, 2, "user/2", "bob").ok  # str is sent as UTF-8
    assert cl.cas(s, 3, b"user/1", b"ann", b"amy").expect_ok() is True
    assert cl.cas(s, 4, b"user/1", b"ann", b"zed").expect_ok() is False
    assert cl.cas(s, 5, b"user/3", None, b"cy").expect_ok() is True  # None: "absent"
    assert cl.scan(b"user/", limit=10).expect_ok() == [
        [b"user/1", b"amy"], [b"user/2", b"bob"], [b"user/3", b"cy"]]
    assert cl.scan(b"user/", limit=1, stale=True).expect_ok() == [[b"user/1", b"amy"]]
    assert cl.delete(s, 6, b"user/2").expect_ok() is True
    assert cl.delete(s, 7, b"user/2").expect_ok() is False
    assert cl.get(b"user/2", stale=True).expect_ok() is None
    # a retry (same session and seq) is answered from the session cache, not re-applied:
    # the second delete of user/3 would say False if it ran again
    assert cl.delete(s, 8, b"user/3").expect_ok() is True
    assert cl.delete(s, 8, b"user/3").expect_ok() is True
    # once acknowledged (first_unacked moved past it), the seq is refused
    assert cl.keepalive(s, 9).ok
    assert cl.delete(s, 8, b"user/3").status != codec.ST_OK
    # a session that was never registered is refused
    assert cl.put(s + 1000, 1, b"k", b"v").status == codec.ST_SESSION_EXPIRED
    st = cl.status_dict()
    assert st["id"] == 1 and st["role"] == "leader" and st["commit"] >= 10
