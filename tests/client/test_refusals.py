"""Every refusal is a definite error, and a call without a leader says what is wrong.

Place in the architecture: unit tests of ``fastraft.client`` (aio, _protocol) against the
scripted fake nodes (``fakenode.py``), which answer like a node's client port: status with the
limits, oversized frames refused ST_INVALID, notices (request id 0) for a refused connection or
a node going away. Each test runs its own event loop; nothing waits on wall-clock time except
the early give-up test, which bounds a duration from both sides with wide margins.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fastraft import codec
from fastraft.client import ExponentialBackoff, RetryPolicy
from fastraft.client import _attempts
from fastraft.errors import (
    Busy,
    ConnectionLost,
    InvalidRequest,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
)
from fastraft_client_asynchelp import client, run  # conftest.py loads it

MIB = 1 << 20


def sent(cluster) -> int:
    return sum(n.bytes_in for n in cluster.nodes)


# -- limits: learned from status, refused before sending -------------------------------------

def test_status_reports_the_limits_and_the_client_keeps_them(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            assert c.limits is None
            st = await c.status()
            assert st[0]["max_frame_bytes"] == fake.DEFAULT_NODE_LIMITS["max_frame_bytes"]
            assert st[0]["max_value_bytes"] == MIB and st[0]["max_key_bytes"] == 4096
            assert st[0]["max_scan"] == 10_000
            assert c.limits == fake.DEFAULT_NODE_LIMITS
            assert all(r.with_limits for r in fc.requests(codec.OP_STATUS))
    run(main())


def test_requests_over_learned_limits_are_refused_without_sending(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"k", b"v")
            await c.status()
            before, retries = sent(fc), c.retries
            cases = [
                (lambda: c.put(b"k", b"x" * (MIB + 1)),
                 r"value of 1048577 bytes .*limit of 1048576 .*max_value_bytes"),
                (lambda: c.put(b"k" * 4097, b"v"), "key of 4097 bytes .*max_key_bytes"),
                (lambda: c.get(b"k" * 5000), "key of 5000 bytes"),
                (lambda: c.scan(b"p" * 5000), "prefix of 5000 bytes"),
                (lambda: c.cas(b"k", b"v", b"y" * (MIB + 5)), "new of 1048581 bytes"),
                # each value within max_value, the frame over max_frame: exact frame check
                (lambda: c.cas(b"k", b"a" * MIB, b"b" * MIB),
                 "frame limit of 1118208 bytes"),
            ]
            for call, why in cases:
                with pytest.raises(InvalidRequest, match=why) as ei:
                    await call()
                assert "nothing sent" in str(ei.value)
                assert isinstance(ei.value, NotApplied)
            assert sent(fc) == before                  # not one byte left the client
            assert c.retries == retries                # and nothing was retried
            assert fc.state.kv == {b"k": b"v"}
            await c.put(b"k", b"x" * MIB)              # at the limit: fine
            assert fc.state.kv[b"k"] == b"x" * MIB
    run(main())


def test_a_large_request_learns_the_limits_first_once(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            with pytest.raises(InvalidRequest, match="nothing sent"):
                await c.put(b"big", b"x" * (2 * MIB))
            # One status question, to one node; no session registered, no put sent.
            assert len(fc.requests(codec.OP_STATUS)) == 1
            assert fc.requests(codec.OP_REGISTER) == [] and fc.requests(codec.OP_PUT) == []
            assert fc.node(1).oversized == []
            with pytest.raises(InvalidRequest):
                await c.put(b"big", b"x" * (3 * MIB))
            assert len(fc.requests(codec.OP_STATUS)) == 1     # the answer was kept
            assert c.retries == 0
    run(main())


def test_small_requests_do_not_ask_for_limits(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"k", b"v" * 1000)
            assert await c.get(b"k") == b"v" * 1000
            assert fc.requests(codec.OP_STATUS) == []
            assert c.limits is None
    run(main())


def test_a_node_without_limits_refuses_the_oversized_frame_itself(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            node = fc.node(1)
            node.old = True                       # status answers without the limits
            await c.put(b"k", b"v")
            with pytest.raises(InvalidRequest, match="over the limit") as ei:
                await c.put(b"big", b"x" * (2 * MIB))
            assert isinstance(ei.value, NotApplied)
            assert node.oversized and c.retries == 0
            assert c.limits is None
            # The same connection serves the next requests.
            await c.put(b"k", b"w")
            assert await c.get(b"k") == b"w"
            assert node.connections == 1
            assert b"big" not in fc.state.kv
            # The older node's answer (10 fields, after refusing the argument) is kept in
            # mind: the client does not ask again for every large request.
            asked = len(node.ops(codec.OP_STATUS))
            with pytest.raises(InvalidRequest):
                await c.put(b"big", b"x" * (2 * MIB))
            assert len(node.ops(codec.OP_STATUS)) == asked
    run(main())


# -- notices: a connection the node closes without reading ----------------------------------

def test_too_many_connections_is_busy_for_every_request(fake):
    async def main():
        async with fake.FakeCluster(1) as fc:
            fc.node(1).refuse_connections = "too many connections"
            async with client(fc, retry=RetryPolicy(2, ExponentialBackoff(0.001, 0.002))) as c:
                got = await asyncio.gather(c.get(b"a"), c.get(b"b"), c.put(b"c", b"v"),
                                           return_exceptions=True)
                for r in got:
                    assert isinstance(r, Busy), r
                    assert "too many connections" in str(r)
            assert fc.requests() == [] and fc.state.applied == []
    run(main())


def test_a_notice_fails_the_unread_requests_as_not_applied(fake):
    async def main():
        async with fake.FakeCluster(2) as fc:
            async with client(fc, retry=RetryPolicy(1)) as c:
                await c.put(b"a", b"0")                 # session and leader connection
                fc.node(1).plan(codec.OP_PUT, "silent",
                                ("notice", codec.ST_NOT_LEADER, "the node is shutting down"))
                got = await asyncio.gather(c.put(b"a", b"1"), c.put(b"b", b"2"),
                                           c.put(b"c", b"3"), return_exceptions=True)
            read, notice, unread = got
            # Read by the node, never answered: may have been applied.
            assert isinstance(read, ConnectionLost)
            # Sent after the last request the node read: certainly not applied.
            for r in (notice, unread):
                assert isinstance(r, NotLeader), r
                assert "shutting down" in str(r)
    run(main())


# -- answers over the client's own frame limit ----------------------------------------------

def test_an_oversized_answer_fails_its_read_only(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, max_frame=4096) as c:
            await c.put(b"big", b"x" * 5000)
            await c.put(b"small", b"y")
            big = c.get(b"big")
            small = c.get(b"small")
            with pytest.raises(InvalidRequest, match="over this client's frame limit"):
                await big
            assert await small == b"y"
            assert await c.get(b"small") == b"y"
            assert fc.node(1).connections == 1         # the connection was kept
    run(main())


# -- no leader: what is wrong, said in one line ---------------------------------------------

def test_no_quorum_names_who_answered_and_who_did_not(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(None, hint=None)
            eps = fc.endpoints()
            await fc.node(2).close()
            await fc.node(3).close()
            async with client(fc, eps) as c:
                with pytest.raises(NotLeader) as ei:
                    await c.put(b"a", b"1")
        e = ei.value
        msg = str(e)
        assert "\n" not in msg
        assert msg.startswith("no leader (no quorum: only 1 of 3 nodes reachable)"), msg
        assert f"{eps[0]} answered: not the leader, no leader known" in msg
        assert f"{eps[1]}: connection refused" in msg
        assert f"{eps[2]}: connection refused" in msg
        assert e.answered == (eps[0],)
        assert e.unreachable == (eps[1], eps[2])
        assert isinstance(e, NotApplied)
    run(main())


def test_every_node_answering_without_a_leader(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(None, hint=None)
            async with client(fc) as c:
                with pytest.raises(NotLeader) as ei:
                    await c.get(b"a")
            eps = fc.endpoints()
        msg = str(ei.value)
        assert msg.startswith("no leader (all 3 nodes answered but none is the leader"), msg
        assert ei.value.answered == tuple(eps) and ei.value.unreachable == ()
    run(main())


def test_a_hint_to_an_unreachable_leader_is_reported(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            eps = fc.endpoints()
            fc.set_leader(3)
            await fc.node(3).close()
            async with client(fc, eps) as c:
                with pytest.raises(NotLeader) as ei:
                    await c.get(b"a")
        msg = str(ei.value)
        assert msg.startswith(f"no leader (2 of 3 nodes reachable; the leader they name, "
                              f"{eps[2]}, is not)"), msg
        assert f"{eps[0]} answered: not the leader, points to node 3 at {eps[2]}" in msg
        assert f"{eps[2]}: connection refused" in msg
        assert ei.value.unreachable == (eps[2],)
    run(main())


def test_no_node_reachable_lists_every_endpoint(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            eps = fc.endpoints()
        async with client(None, eps, connect_timeout=0.5) as c:
            with pytest.raises(NotLeader) as ei:
                await c.put(b"a", b"1")
        e = ei.value
        assert str(e) == f"no node reachable at {', '.join(eps)} (connection refused)"
        assert e.unreachable == tuple(eps) and e.answered == ()
    run(main())


def test_not_leader_attributes_default_to_empty():
    e = NotLeader(3)
    assert e.answered == () and e.unreachable == () and e.leader_hint == 3


def test_refused_everywhere_gives_up_after_a_few_rounds(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            eps = fc.endpoints()
        many = RetryPolicy(100_000, ExponentialBackoff(0.005, 0.02))
        async with client(None, eps, retry=many, deadline=60) as c:
            t0 = time.monotonic()
            with pytest.raises(NotLeader, match="no node reachable"):
                await c.get(b"a")
            took = time.monotonic() - t0
        # Neither the attempts nor the 60 s deadline ended it: the refusals did, once they
        # had lasted REFUSED_FOR seconds.
        assert c.retries < 100_000 - 1
        assert _attempts.REFUSED_FOR <= took < 30, took
    run(main())


def test_a_write_that_may_have_applied_stays_unknown_when_nodes_vanish(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_vanish")
            # The node applied the write and vanished: every later attempt is refused, and
            # yet the write can only end as outcome unknown.
            with pytest.raises(OutcomeUnknown) as ei:
                await c.put(b"a", b"1")
            assert not isinstance(ei.value, NotApplied)
            assert "no node reachable" in str(ei.value)
            assert fc.state.kv[b"a"] == b"1"
    run(main())
