"""Membership changes on real node processes (issue 13): the member requests of the client
protocol (OP_MEMBERS / OP_MEMBER, spoken with the minimal test client ``wire``), nodes added
with ``fastraft node --join``, removed nodes stopping, and the membership surviving kill -9.

Place in the architecture: integration tests (tests/integration), real processes on free
ports, real files and fsync.
"""

from __future__ import annotations

import time

import pytest

from fastraft import codec

FAST = dict(heartbeat_ms=20, election_timeout_ms=200)


def _members(cl, lead: int) -> dict:
    """id -> [role, raft, client, is_leader, match] from the leader."""
    rep = cl.client(lead).call(codec.OP_MEMBERS)
    assert rep.status == codec.ST_OK, rep
    return {m[0]: m[1:] for m in rep.values[0]}


def _change(cl, lead: int, kind: int, nid: int, raft=None, client=None, timeout=10.0):
    return cl.client(lead, timeout=timeout).call(codec.OP_MEMBER, kind, nid, raft, client)


def _add(cl, lead, n):
    return _change(cl, lead, codec.MEMBER_ADD_LEARNER, n.id, n.raft_addr, n.client_addr)


def _writes(cl, wire, lead: int, n: int, prefix: bytes = b"k") -> list:
    c = cl.client(lead)
    sid = c.register().expect_ok()
    keys = []
    for i in range(1, n + 1):
        k = prefix + b"%d" % i
        assert c.put(sid, i, k, b"v%d" % i).ok
        keys.append(k)
    return keys


def _catch_up(cl, lead, n, timeout=30.0):
    cl.wait_for(lambda: _members(cl, lead)[n.id][4] >= cl.status(lead)["last_index"] - 1,
                timeout, f"learner {n.id} to catch up")


def _put_retrying(cl, ids, key: bytes = b"after") -> None:
    """One write through the real client (it retries on a new leader, exactly once), to the
    nodes ``ids``; then every one of them holds it."""
    from fastraft.client import Client

    with Client([cl.node(i).client_addr for i in ids], timeout=2.0) as c:
        c.put(key, b"x")
    for i in ids:
        cl.wait_for(lambda i=i: cl.client(i).get(key, stale=True).value == b"x", 15,
                    f"node {i} to apply the write")


def _wait_member_state(cl, want: dict, timeout: float = 20.0) -> int:
    """Wait until the leader lists exactly ``want`` (id -> role); returns the leader."""
    def check():
        lead = cl.current_leader()
        if lead is None:
            return None
        try:
            got = {i: m[0] for i, m in _members(cl, lead).items()}
        except (OSError, AssertionError):
            return None
        return lead if got == want else None
    return cl.wait_for(check, timeout, f"the members to be {want}")


def test_members_are_listed_and_bad_changes_refused(cluster_factory):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    # Right after an election the leader knows no follower's match yet (0): wait for them.
    ms = cl.wait_for(lambda: (lambda m: m if all(v[4] >= 1 for v in m.values()) else None)(
        _members(cl, lead)), 10, "every member's match index")
    assert sorted(ms) == [1, 2, 3]
    for i, (role, raft, client, is_leader, match) in ms.items():
        assert role == "voter"
        assert (raft, client) == (cl.node(i).raft_addr, cl.node(i).client_addr)
        assert is_leader == (i == lead) and match >= 1
    follower = next(i for i in cl.ids if i != lead)
    rep = cl.client(follower).call(codec.OP_MEMBERS)
    assert rep.status == codec.ST_NOT_LEADER and rep.values[0] == lead
    n1 = cl.node(1)
    bad = [
        (codec.MEMBER_PROMOTE, 9, None, None, "not a member"),
        (codec.MEMBER_REMOVE, 9, None, None, "not a member"),
        (codec.MEMBER_ADD_LEARNER, 2, "127.0.0.1:1", "127.0.0.1:2", "already a member"),
        (codec.MEMBER_ADD_LEARNER, 9, n1.raft_addr, "127.0.0.1:2", "already used by node 1"),
        (codec.MEMBER_ADD_LEARNER, 9, "127.0.0.1:3", n1.client_addr, "already used by node 1"),
        (codec.MEMBER_ADD_LEARNER, 9, "nohost", "127.0.0.1:2", "address"),
        (codec.MEMBER_ADD_LEARNER, 9, "127.0.0.1:5", "127.0.0.1:5", "the same"),
        (codec.MEMBER_PROMOTE, 2, None, None, "already a voter"),
    ]
    for kind, nid, raft, client, why in bad:
        rep = _change(cl, lead, kind, nid, raft, client)
        assert rep.status == codec.ST_INVALID and why in rep.values[0], (kind, nid, rep)
    # Malformed requests: a wrong kind, id 0, addresses on a removal, a missing address.
    for args in ((7, 9, None, None), (codec.MEMBER_REMOVE, 0, None, None),
                 (codec.MEMBER_REMOVE, 3, "127.0.0.1:1", None),
                 (codec.MEMBER_ADD_LEARNER, 9, None, "127.0.0.1:2")):
        rep = cl.client(lead).call(codec.OP_MEMBER, *args)
        assert rep.status == codec.ST_INVALID, (args, rep)
    assert {i: m[0] for i, m in _members(cl, lead).items()} == {1: "voter", 2: "voter",
                                                               3: "voter"}


def test_a_second_change_is_refused_while_one_is_in_flight(cluster_factory):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    a, b = cl.new_node(), cl.new_node()
    c = cl.client(lead)
    # Both requests arrive in one read: the first is proposed, the second finds it in flight.
    c.send_request(1, codec.OP_MEMBER, codec.MEMBER_ADD_LEARNER, a.id, a.raft_addr,
                   a.client_addr)
    c.send_request(2, codec.OP_MEMBER, codec.MEMBER_ADD_LEARNER, b.id, b.raft_addr,
                   b.client_addr)
    replies = dict(c.recv_reply() for _ in range(2))
    assert replies[1].status == codec.ST_OK, replies
    assert replies[2].status == codec.ST_BUSY and "not committed" in replies[2].values[0]
    assert {i: m[0] for i, m in _members(cl, lead).items()} == {
        1: "voter", 2: "voter", 3: "voter", a.id: "learner"}


def test_promotion_is_refused_while_the_learner_lags_then_accepted(cluster_factory, wire):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    # However short the log, a learner that never answered is not promoted.
    idle = cl.new_node()
    assert _add(cl, lead, idle).ok
    rep = _change(cl, lead, codec.MEMBER_PROMOTE, idle.id)
    assert rep.status == codec.ST_BUSY and "acknowledged nothing" in rep.values[0], rep
    assert _change(cl, lead, codec.MEMBER_REMOVE, idle.id).ok
    _writes(cl, wire, lead, 40)
    n = cl.new_node()
    assert _add(cl, lead, n).ok                 # added while down: it lags by everything
    rep = _change(cl, lead, codec.MEMBER_PROMOTE, n.id)
    assert rep.status == codec.ST_BUSY and "learner" in rep.values[0], rep
    cl.start([n.id])
    _catch_up(cl, lead, n)
    rep = _change(cl, lead, codec.MEMBER_PROMOTE, n.id)
    assert rep.status == codec.ST_OK, rep
    _wait_member_state(cl, {1: "voter", 2: "voter", 3: "voter", n.id: "voter"})
    cl.wait_for(lambda: cl.client(n.id).get(b"k40", stale=True).value == b"v40", 10,
                "the promoted node to hold the writes")


def test_grow_to_five_then_shrink_to_three_removing_the_leader(cluster_factory, wire):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    _writes(cl, wire, lead, 10)
    added = []
    for _ in range(2):
        n = cl.new_node()
        assert _add(cl, lead, n).ok
        cl.start([n.id])
        _catch_up(cl, lead, n)
        assert _change(cl, lead, codec.MEMBER_PROMOTE, n.id).ok
        added.append(n.id)
    _wait_member_state(cl, {i: "voter" for i in [1, 2, 3] + added})
    # Remove the leader: it leads until the change commits, then steps down and exits 0.
    t0 = time.monotonic()
    rep = _change(cl, lead, codec.MEMBER_REMOVE, lead)
    assert rep.status == codec.ST_OK, rep
    assert cl.wait_exit(lead) == 0, cl.report()
    assert "was removed from the cluster" in cl.node(lead).log_text()
    rest = [i for i in [1, 2, 3] + added if i != lead]
    new = cl.leader(exclude=[lead])
    assert new in rest
    sid = cl.client(new).register().expect_ok()
    assert cl.client(new).put(sid, 1, b"after", b"1").ok
    took = time.monotonic() - t0
    print(f"remove-leader to next acked write: {took:.2f} s")
    # ... and one more, a follower, down to three.
    victim = next(i for i in rest if i != new)
    assert _change(cl, new, codec.MEMBER_REMOVE, victim).ok
    assert cl.wait_exit(victim) == 0, cl.report()
    remaining = [i for i in rest if i != victim]
    _wait_member_state(cl, {i: "voter" for i in remaining})
    for i in remaining:
        cl.wait_for(lambda i=i: cl.client(i).get(b"after", stale=True).value == b"1", 10,
                    f"node {i} to apply the write after the removals")


def test_removing_a_node_that_is_down(cluster_factory):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    down = next(i for i in cl.ids if i != lead)
    cl.kill(down)
    assert _change(cl, lead, codec.MEMBER_REMOVE, down).ok
    _wait_member_state(cl, {i: "voter" for i in cl.ids if i != down})
    # It comes back, learns it was removed from a peer's refusal, and stops (exit 0).
    cl.start([down], wait=False)
    assert cl.wait_exit(down, 20) == 0, cl.report()
    # The last voter cannot be removed: 2 voters -> remove one -> 1 voter -> refuse the last.
    other = next(i for i in cl.ids if i not in (down, lead))
    assert _change(cl, lead, codec.MEMBER_REMOVE, other).ok
    _wait_member_state(cl, {lead: "voter"})
    rep = _change(cl, lead, codec.MEMBER_REMOVE, lead)
    assert rep.status == codec.ST_INVALID and "at least one voter" in rep.values[0], rep
    # A removed id is never reused.
    rep = _change(cl, lead, codec.MEMBER_ADD_LEARNER, down, "127.0.0.1:9", "127.0.0.1:10")
    assert rep.status == codec.ST_INVALID and "never reused" in rep.values[0], rep


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_kill9_of_every_node_right_after_a_change(cluster_factory, wire, storage):
    cl = cluster_factory(3, tuning=FAST, storage=storage)
    lead = cl.leader()
    n = cl.new_node()
    assert _add(cl, lead, n).ok
    cl.start([n.id])
    _catch_up(cl, lead, n)
    assert _change(cl, lead, codec.MEMBER_PROMOTE, n.id).ok
    for i in list(cl.ids):
        cl.kill(i)
    # The added node restarts from its own data alone (no config, no --join).
    n.join_argv = ["--id", str(n.id), "--data-dir", cl.config.data_dir]
    cl.start()
    want = {1: "voter", 2: "voter", 3: "voter", n.id: "voter"}
    lead = _wait_member_state(cl, want)
    # Four voters: any three make progress, the new one included.
    gone = next(i for i in (1, 2, 3) if i != lead)
    cl.kill(gone)
    _put_retrying(cl, [i for i in cl.ids if i != gone])



@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_a_learner_added_after_compaction_gets_the_membership_in_a_snapshot(
        cluster_factory, wire, storage):
    cl = cluster_factory(3, tuning=dict(FAST, snapshot_threshold=100,
                                        snapshot_keep_entries=10), storage=storage)
    lead = cl.leader()
    _writes(cl, wire, lead, 400)
    cl.wait_for(lambda: all(cl.status(i)["applied"] >= 400 for i in cl.ids), 15,
                "every node to apply the writes")
    n = cl.new_node()
    assert _add(cl, lead, n).ok
    cl.start([n.id])
    _catch_up(cl, lead, n)
    assert "installed snapshot" in n.log_text(), "the learner should start from a snapshot"
    cl.wait_for(lambda: cl.client(n.id).get(b"k400", stale=True).value == b"v400", 15,
                "the learner to apply the last write")
    # Restarted from its own data alone, it knows its peers from the snapshot's member
    # book (entry 1 is long compacted away), and is promoted.
    cl.kill(n.id)
    n.join_argv = ["--id", str(n.id), "--data-dir", cl.config.data_dir]
    cl.start([n.id])
    assert _change(cl, lead, codec.MEMBER_PROMOTE, n.id).ok
    _wait_member_state(cl, {1: "voter", 2: "voter", 3: "voter", n.id: "voter"})
    gone = next(i for i in (1, 2, 3) if i != lead)
    cl.kill(gone)
    _put_retrying(cl, [i for i in cl.ids if i != gone])     # needs the new voter's ack


def test_replace_a_killed_node_by_a_new_id_and_a_wiped_learner_catches_up(cluster_factory,
                                                                          wire):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    _writes(cl, wire, lead, 30)
    dead = next(i for i in cl.ids if i != lead)
    cl.kill(dead)
    # The runbook: remove the dead id, add a new one, start it with --join, promote it.
    assert _change(cl, lead, codec.MEMBER_REMOVE, dead).ok
    n = cl.new_node()
    assert _add(cl, lead, n).ok
    cl.start([n.id])
    _catch_up(cl, lead, n)
    # Its disk is wiped while it is a learner: started again the same way, it catches up.
    cl.kill(n.id)
    import shutil
    shutil.rmtree(n.data_dir)
    cl.start([n.id])
    _catch_up(cl, lead, n)
    assert _change(cl, lead, codec.MEMBER_PROMOTE, n.id).ok
    voters = sorted(i for i in (1, 2, 3) if i != dead) + [n.id]
    _wait_member_state(cl, {i: "voter" for i in voters})
    cl.wait_for(lambda: cl.client(n.id).get(b"k30", stale=True).value == b"v30", 15,
                "the new node to hold the data")


def test_the_config_file_only_bootstraps(cluster_factory, wire):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    victim = next(i for i in cl.ids if i != lead)
    assert _change(cl, lead, codec.MEMBER_REMOVE, victim).ok
    assert cl.wait_exit(victim, 20) == 0
    # A bootstrap member restarted with the (now stale) file: the log is obeyed, the
    # disagreement reported.
    other = next(i for i in cl.ids if i not in (lead, victim))
    cl.restart(other)
    assert "the log is obeyed" in cl.node(other).log_text()
    _wait_member_state(cl, {lead: "voter", other: "voter"})


def test_a_client_follows_the_membership(cluster_factory, wire):
    from fastraft.client import Client

    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    with Client(cl.endpoints(), timeout=2.0) as c:
        c.put(b"a", b"1")
        # Replace every bootstrap member by a new node: the client, given only the old
        # addresses, must find the new ones.
        news = []
        for _ in range(3):
            n = cl.new_node()
            c.add_learner(n.id, n.raft_addr, n.client_addr)
            cl.start([n.id])
            cl.wait_for(lambda: [m for m in c.members() if m.id == n.id][0].match
                        >= max(m.match for m in c.members()) - 1, 30,
                        f"node {n.id} to catch up")
            c.promote(n.id)
            news.append(n.id)
        for old in (1, 2, 3):
            c.remove_member(old)
            cl.wait_exit(old, 20)
        assert sorted(m.id for m in c.members()) == news
        c.put(b"b", b"2")
        assert c.get(b"a") == b"1" and c.get(b"b") == b"2"


def test_a_joined_voter_whose_disk_is_wiped_rejoins_behind_its_own_listen_address(
        cluster_factory, wire, harness):
    import shutil

    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    _writes(cl, wire, lead, 20)
    n = cl.new_node()
    # It listens on a port of its own; a plain TCP relay on its advertised --raft address
    # stands for the proxy or NAT in front of it.
    listen = f"127.0.0.1:{harness.free_port()}"
    n.join_argv += ["--raft-listen", listen]
    assert _add(cl, lead, n).ok
    with _relay(n.raft_addr, listen):
        cl.start([n.id])
        _catch_up(cl, lead, n)
        assert _change(cl, lead, codec.MEMBER_PROMOTE, n.id).ok
        cl.kill(n.id)
        shutil.rmtree(n.data_dir)
        n.next_args = ["--rejoin"]
        cl.start([n.id])
        assert "rejoining after a data loss" in n.log_text()
        cl.wait_for(lambda: cl.client(n.id).get(b"k20", stale=True).value == b"v20", 20,
                    "the wiped voter to catch up")
    assert f"peers on {listen}" in n.log_text()


class _relay:
    """Forward TCP connections from ``src`` to ``dst`` (both "host:port") in a thread."""

    def __init__(self, src: str, dst: str) -> None:
        import socket
        import threading

        h, p = src.rsplit(":", 1)
        self.dst = dst.rsplit(":", 1)
        self.srv = socket.create_server((h, int(p)))
        self.srv.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.t.join(5)
        self.srv.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.stop:
            try:
                a, _ = self.srv.accept()
            except OSError:
                continue
            try:
                b = socket.create_connection((self.dst[0], int(self.dst[1])), 2)
            except OSError:
                a.close()
                continue
            a.settimeout(None)
            b.settimeout(None)
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x, y) -> None:
        try:
            while not self.stop:
                data = x.recv(65536)
                if not data:
                    break
                y.sendall(data)
        except OSError:
            pass
        finally:
            for s in (x, y):
                try:
                    s.shutdown(2)
                except OSError:
                    pass
