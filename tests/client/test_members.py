"""Membership from the client: members(), member changes and their errors, the settling of an
unknown outcome, and the endpoints learned from the member list.

Place in the architecture: unit tests of ``fastraft.client`` (aio, _members, _attempts) against
the scripted fake nodes (``fakenode.py``: a member table, OP_MEMBERS / OP_MEMBER answered as
a leader does, refusals, and the misbehaviours of the other tests: a connection dropped after
applying, silence, ST_UNKNOWN, a change appended but not committed). Each test runs its own
event loop; waits are polls with a deadline.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fastraft import codec
from fastraft.client import Client, Member, RetryPolicy
from fastraft.client import _members, aio
from fastraft.errors import (
    Busy,
    ConnectionLost,
    InvalidRequest,
    LeadershipLost,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
    RemoteProtocolError,
    Timeout,
)
from fastraft_client_asynchelp import FAST, client, run, until  # conftest.py loads it

ADD, PROMOTE, REMOVE = codec.MEMBER_ADD_LEARNER, codec.MEMBER_PROMOTE, codec.MEMBER_REMOVE
RAFT4, CLIENT4 = "10.0.0.4:7104", "10.0.0.4:7004"


def changes(fc) -> list[tuple]:
    """The member changes the fake cluster made: (kind, id)."""
    return [(kind, nid) for _i, kind, nid, _r, _c in fc.changes]


@pytest.fixture
def quick_refresh(monkeypatch):
    """Background refreshes of the member list as often as asked (not once a second)."""
    monkeypatch.setattr(aio, "REFRESH_EVERY", 0.0)


# -- members() ------------------------------------------------------------------------------

def test_members_come_from_the_leader_after_a_redirect(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(3)
            fc.match[1] = 7
            async with client(fc, [fc.node(1).addr], learn_members=False) as c:
                got = await c.members()
            assert all(type(m) is Member for m in got)
            assert [tuple(m) for m in got] == [
                (1, "voter", fake.fake_raft(1), fc.node(1).addr, False, 7),
                (2, "voter", fake.fake_raft(2), fc.node(2).addr, False, 10),
                (3, "voter", fake.fake_raft(3), fc.node(3).addr, True, 10)]
            assert got[2].is_leader and got[2].match == 10 and got[0].role == "voter"
            assert len(fc.node(1).ops(codec.OP_MEMBERS)) == 1     # redirected from there
            assert len(fc.node(3).ops(codec.OP_MEMBERS)) == 1
    run(main())


def test_a_malformed_member_list_is_a_protocol_error(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            for bad in ("x", [[1, "boss", "a:1", "b:2", True, 3]], [[1, "voter", "a:1"]],
                        [[0, "voter", "a:1", "b:2", True, 3]]):
                fc.node(1).plan(codec.OP_MEMBERS, ("status", codec.ST_OK, bad))
                with pytest.raises(RemoteProtocolError):
                    await c.members()
            # a newer node's extra fields are ignored
            fc.node(1).plan(codec.OP_MEMBERS, ("status", codec.ST_OK,
                                               [[1, "learner", "a:1", "b:2", False, 3, "x"]]))
            assert await c.members() == [Member(1, "learner", "a:1", "b:2", False, 3)]
    run(main())


def test_an_older_node_refuses_the_member_list(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            for n in fc.nodes:
                n.knows_members = False
            fc.set_leader(2)
            eps = fc.endpoints()
            async with client(fc) as c:
                await c.put(b"a", b"1")         # NOT_LEADER first: a refresh is wanted
                await until(lambda: c._members_absent, what="the refresh to give up")
                assert c.endpoints == eps
                with pytest.raises(InvalidRequest, match="unknown operation"):
                    await c.members()
                with pytest.raises(InvalidRequest, match="unknown operation"):
                    await c.promote(3)
    run(main())


# -- changes: answers and definite refusals ---------------------------------------------------

def test_add_promote_remove_return_the_index(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            assert await c.add_learner(4, RAFT4, CLIENT4) == 11
            m = {m.id: m for m in await c.members()}
            assert m[4] == Member(4, "learner", RAFT4, CLIENT4, False, 11)
            assert await c.promote(4) == 12
            assert (await c.members())[3].role == "voter"
            assert await c.remove_member(2) == 13
            assert [m.id for m in await c.members()] == [1, 3, 4]
            assert changes(fc) == [(ADD, 4), (PROMOTE, 4), (REMOVE, 2)]
            req = fc.node(1).ops(codec.OP_MEMBER)[0]
            assert req.member == (ADD, 4, RAFT4, CLIENT4)
    run(main())


def test_the_blocking_client_has_the_same_methods(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            eps = fc.endpoints()

            def work():
                with Client(eps, timeout=1.0, retry=FAST) as c:
                    assert c.add_learner(4, RAFT4, ("10.0.0.4", 7004)) == 11
                    assert c.promote(4) == 12
                    assert c.remove_member(4) == 13
                    return c.members()

            got = await asyncio.get_running_loop().run_in_executor(None, work)
            assert [m.id for m in got] == [1, 2, 3]
            assert changes(fc) == [(ADD, 4), (PROMOTE, 4), (REMOVE, 4)]
    run(main())


@pytest.mark.parametrize("setup, call, why", [
    (None, ("add_learner", 2, RAFT4, CLIENT4), "already a member"),
    ("removed", ("add_learner", 5, RAFT4, CLIENT4), "never reused"),
    (None, ("add_learner", 4, RAFT4, "__node1__"), "already used by node 1"),
    (None, ("promote", 9), "not a member"),
    (None, ("promote", 2), "already a voter"),
    (None, ("remove_member", 9), "not a member"),
    ("alone", ("remove_member", 1), "last voter"),
])
def test_invalid_changes_are_refused_at_once_and_not_done(fake, setup, call, why):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            if setup == "removed":
                fc.removed.add(5)
            if setup == "alone":
                del fc.members[2], fc.members[3]
            name, *args = call
            args = [fc.node(1).addr if a == "__node1__" else a for a in args]
            before = dict(fc.members)
            with pytest.raises(InvalidRequest, match=why) as ei:
                await getattr(c, name)(*args)
            assert isinstance(ei.value, NotApplied)
            assert len(fc.requests(codec.OP_MEMBER)) == 1           # not retried
            assert fc.members == before and fc.changes == []
    run(main())


def test_busy_is_not_retried(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, retry=RetryPolicy(16)) as c:
            await c.add_learner(4, RAFT4, CLIENT4)
            fc.lagging.add(4)
            t0 = time.monotonic()
            with pytest.raises(Busy, match="not caught up") as ei:
                await c.promote(4)
            assert isinstance(ei.value, NotApplied)
            assert len(fc.requests(codec.OP_MEMBER)) == 2           # the add, one promote
            assert time.monotonic() - t0 < 0.5                      # promptly
            fc.lagging.clear()
            assert await c.promote(4) == 12
            fc.last_index += 1                  # another change appended, not committed
            with pytest.raises(Busy, match="in flight"):
                await c.remove_member(4)
            assert fc.members[4][0] == "voter"
    run(main())


def test_not_leader_is_followed(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(3)
            async with client(fc, [fc.node(1).addr], learn_members=False) as c:
                assert await c.add_learner(4, RAFT4, CLIENT4) == 11
                assert await c.remove_member(1) == 12
            assert len(fc.node(1).ops(codec.OP_MEMBER)) == 1        # redirected
            assert len(fc.node(3).ops(codec.OP_MEMBER)) == 2
            assert changes(fc) == [(ADD, 4), (REMOVE, 1)]
    run(main())


def test_no_leader_is_not_leader(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(None, hint=None)
            async with client(fc, deadline=0.5) as c:
                with pytest.raises(NotLeader) as ei:
                    await c.add_learner(4, RAFT4, CLIENT4)
            assert isinstance(ei.value, NotApplied)
            assert fc.changes == []
    run(main())


def test_bad_arguments_are_refused_before_sending(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            with pytest.raises(InvalidRequest, match="raft address.*nothing sent"):
                await c.add_learner(4, "nohost", CLIENT4)
            with pytest.raises(InvalidRequest, match="client address"):
                await c.add_learner(4, RAFT4, "h:99999")
            with pytest.raises(TypeError):
                await c.promote("4")
            with pytest.raises(TypeError):
                await c.promote(True)
            with pytest.raises(ValueError):
                await c.remove_member(0)
            assert fc.requests() == []
    run(main())


# -- unknown outcomes, settled by asking the members -------------------------------------------

@pytest.mark.parametrize("action, call, error", [
    ("apply_drop", ("add_learner", 4, RAFT4, CLIENT4), ConnectionLost),
    ("apply_silent", ("remove_member", 3), Timeout),
    ("apply_unknown", ("promote", 4), LeadershipLost),
])
def test_a_change_done_before_an_unknown_outcome_is_found_done(fake, action, call, error):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3, deadline=10) as c:
            fc.members[4] = ["learner", RAFT4, CLIENT4]
            if call[0] == "add_learner":
                del fc.members[4]
            fc.node(1).plan(codec.OP_MEMBER, action)
            name, *args = call
            assert await getattr(c, name)(*args) is None       # done; its index unknown
            assert len(fc.requests(codec.OP_MEMBER)) == 1       # never sent twice
            assert len(fc.changes) == 1
            assert fc.requests(codec.OP_STATUS)                 # its commitment was checked
    run(main())


@pytest.mark.parametrize("action", ["drop", "silent", ("status", codec.ST_UNKNOWN, "lost")])
def test_a_change_not_done_is_tried_again(fake, action):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3, deadline=10) as c:
            fc.node(1).plan(codec.OP_MEMBER, action)
            assert await c.add_learner(4, RAFT4, CLIENT4) == 11
            assert len(fc.requests(codec.OP_MEMBER)) == 2
            assert changes(fc) == [(ADD, 4)]
    run(main())


def test_the_members_are_trusted_only_once_committed(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3, deadline=20) as c:
            fc.node(1).plan(codec.OP_MEMBER, "apply_uncommitted")
            task = asyncio.ensure_future(c.add_learner(4, RAFT4, CLIENT4))
            # The learner shows in the leader's list, but its entry is not committed: the
            # client keeps asking the leader's status instead of reporting it done.
            await until(lambda: len(fc.requests(codec.OP_STATUS)) >= 5, what="status polls")
            assert 4 in fc.members and not task.done()
            fc.commit_all()
            assert await task is None
            assert len(fc.requests(codec.OP_MEMBER)) == 1
    run(main())


def test_a_leader_that_changes_term_is_not_trusted(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3, deadline=20) as c:
            fc.node(1).plan(codec.OP_MEMBER, "apply_uncommitted")
            task = asyncio.ensure_future(c.add_learner(4, RAFT4, CLIENT4))
            await until(lambda: len(fc.requests(codec.OP_STATUS)) >= 3, what="status polls")
            # A new term: the entry was lost (as a new leader without it would do), then the
            # log reaches the old last index again and commits.
            n = len(fc.requests(codec.OP_STATUS))
            fc.term += 1
            del fc.members[4]
            fc.commit_all()
            assert await task == 12                 # asked again in the new term, then done
            assert n < len(fc.requests(codec.OP_STATUS))
            assert len(fc.requests(codec.OP_MEMBER)) == 2
    run(main())


def test_an_uncommitted_change_until_the_deadline_is_outcome_unknown(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.2) as c:
            fc.node(1).plan(codec.OP_MEMBER, "apply_uncommitted")
            with pytest.raises(Timeout, match="outcome unknown") as ei:
                await c.remove_member(3, deadline=1.0)
            assert not isinstance(ei.value, NotApplied)
    run(main())


def test_unknown_then_no_cluster_is_outcome_unknown(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, deadline=1.5) as c:
            fc.node(1).plan(codec.OP_MEMBER, "apply_vanish")
            with pytest.raises(ConnectionLost, match="did not tell") as ei:
                await c.add_learner(4, RAFT4, CLIENT4)
            assert not isinstance(ei.value, NotApplied)
            assert 4 in fc.members
    run(main())


def test_a_refused_retry_after_an_unknown_outcome_stays_unknown(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3) as c:
            fc.node(1).plan(codec.OP_MEMBER, "drop",
                            ("status", codec.ST_INVALID, "node 4 was removed"))
            with pytest.raises(ConnectionLost, match="retry was refused: .*removed") as ei:
                await c.add_learner(4, RAFT4, CLIENT4)
            assert not isinstance(ei.value, NotApplied)
    run(main())


def test_a_busy_retry_after_an_unknown_outcome_is_waited_out(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3) as c:
            fc.node(1).plan(codec.OP_MEMBER, "drop",
                            ("status", codec.ST_BUSY, "another member change is in flight"),
                            ("status", codec.ST_BUSY, "another member change is in flight"))
            assert await c.add_learner(4, RAFT4, CLIENT4) == 11
            assert len(fc.requests(codec.OP_MEMBER)) == 4
    run(main())


def test_an_unknown_outcome_across_a_leader_change(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.3, deadline=10) as c:
            fc.node(1).plan(codec.OP_MEMBER, "apply_silent")
            task = asyncio.ensure_future(c.remove_member(1))
            await until(lambda: fc.changes, what="the removal")
            fc.set_leader(2)                       # the removed leader stepped down
            assert await task is None
            assert fc.node(2).ops(codec.OP_MEMBERS)
            assert len(fc.requests(codec.OP_MEMBER)) == 1
    run(main())


# -- learning the membership ---------------------------------------------------------------------

def test_the_endpoints_follow_the_members(fake, quick_refresh):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(2)
            n1, n2, n3 = fc.endpoints()
            async with client(fc, [n1]) as c:
                await c.put(b"a", b"1")             # NOT_LEADER from node 1, then a refresh
                await until(lambda: c.endpoints == [n1, n2, n3], what="the others found")
                n4 = await fc.add_node()
                await c.add_learner(4, RAFT4, n4.addr)
                fc.set_leader(4)                    # the members move on: a leader change
                assert await c.get(b"a") == b"1"
                await until(lambda: c.endpoints == [n1, n2, n3, n4.addr], what="node 4")
                await c.remove_member(1)
                await c.members()
                assert c.endpoints == [n2, n3, n4.addr]
                # Without a leader, the calls go round the endpoints: node 1 is left out.
                fc.set_leader(None, hint=None)
                asked = len(fc.node(1).requests)
                with pytest.raises(NotLeader):
                    await c.get(b"a", deadline=0.3)
                assert len(fc.node(1).requests) == asked
                assert fc.node(2).ops(codec.OP_GET) and fc.node(3).ops(codec.OP_GET)
                assert n1 not in c._conns           # its idle connection was closed
    run(main())


def test_a_refresh_follows_an_unreachable_node(fake, quick_refresh):
    async def main():
        async with fake.FakeCluster() as fc:
            n1, n2, n3 = fc.endpoints()
            async with client(fc, [n1, n2]) as c:
                await c.put(b"a", b"1")
                fc.set_leader(2)
                await fc.node(1).close()            # the leader dies; node 2 takes over
                await c.put(b"b", b"2")             # a lost connection, then node 2: refresh
                await until(lambda: c.endpoints == [n1, n2, n3], what="node 3 found")
    run(main())


def test_the_given_endpoints_stay_when_a_refresh_fails(fake, quick_refresh):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(2)
            n1 = fc.node(1).addr
            leader = fc.node(2)
            leader.plan(codec.OP_MEMBERS, ("status", codec.ST_BUSY, "no"),
                        ("status", codec.ST_OK, "garbage"))
            async with client(fc, [n1]) as c:
                await c.put(b"a", b"1")         # NOT_LEADER, then the leader: a refresh
                await until(lambda: len(leader.ops(codec.OP_MEMBERS)) == 1)
                await c.put(b"b", b"2")         # still stale: another refresh
                await until(lambda: len(leader.ops(codec.OP_MEMBERS)) == 2)
                await until(lambda: c._refresh_task.done())
                assert c.endpoints == [n1]
                await c.put(b"c", b"3")         # this one is answered
                await until(lambda: len(c.endpoints) == 3, what="the members")
                task = c._refresh_task
                await c.put(b"d", b"4")         # no longer stale: no refresh
                assert c._refresh_task is task and not c._members_stale
    run(main())


def test_refreshes_are_rate_limited(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            t0 = time.monotonic()
            for i in range(30):
                fc.set_leader(1 + i % 3)
                await c.put(b"k", b"%d" % i)
            took = time.monotonic() - t0
            asks = len(fc.requests(codec.OP_MEMBERS))
            assert 1 <= asks <= 1 + took / aio.REFRESH_EVERY
    run(main())


def test_learn_members_off_keeps_the_endpoints(fake, quick_refresh):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(2)
            n1 = fc.node(1).addr
            async with client(fc, [n1], learn_members=False) as c:
                await c.put(b"a", b"1")
                await c.members()
                assert c.endpoints == [n1]
            assert fc.requests(codec.OP_MEMBERS) and len(fc.requests(codec.OP_MEMBERS)) == 1
    run(main())


def M(nid, client, role="voter"):
    return Member(nid, role, f"r{nid}:1", client, nid == 1, 0)


def test_merge_endpoints():
    merge = _members.merge_endpoints
    a, b, c, d = "a:1", "b:1", "c:1", "d:1"
    assert merge([a, b], [M(1, a), M(2, b)]) is None                    # nothing new
    assert merge([a], [M(1, a), M(2, b), M(3, c)]) == [a, b, c]         # found
    assert merge([c, a], [M(1, a), M(2, b), M(3, c)]) == [c, a, b]      # order kept
    assert merge([a, b, c], [M(2, b), M(3, c), M(4, d)]) == [b, c, d]   # a removed
    # A member without a usable client address: nothing is dropped, the rest is added.
    assert merge([a, b], [M(2, b), M(3, ""), M(4, d)]) == [a, b, d]
    assert merge([a, b], [M(2, b), M(3, "0.0.0.0:7001"), M(4, d)]) == [a, b, d]
    assert merge([a, b], [M(2, b), M(3, "[::]:7001")]) is None
    assert merge([a], [M(1, ""), M(2, "bogus")]) is None                # never empty
    assert merge([a], []) is None
    assert merge([a], [M(2, b), M(3, b)]) == [b]                        # no duplicates


def test_is_made():
    ms = [M(1, "a:1"), M(2, "b:1", "learner")]
    assert _members.is_made(ADD, 2, "r2:1", "b:1", ms)
    assert not _members.is_made(ADD, 2, "r2:1", "x:1", ms)              # another node 2
    assert not _members.is_made(ADD, 3, "r3:1", "c:1", ms)
    assert _members.is_made(PROMOTE, 1, None, None, ms)
    assert not _members.is_made(PROMOTE, 2, None, None, ms)
    assert _members.is_made(REMOVE, 3, None, None, ms)
    assert not _members.is_made(REMOVE, 2, None, None, ms)


def test_outcome_unknown_errors_are_not_not_applied():
    # The errors a member change may end with keep the split of fastraft.errors.
    for cls in (Timeout, ConnectionLost, LeadershipLost):
        assert issubclass(cls, OutcomeUnknown) and not issubclass(cls, NotApplied)
    for cls in (Busy, InvalidRequest, NotLeader):
        assert issubclass(cls, NotApplied)
