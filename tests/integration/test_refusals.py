"""Refusals by real nodes are definite errors, and a call without a leader says what is wrong.

Place in the architecture: integration tests (real ``fastraft node`` processes started by the
harness on free ports) of the client port's refusals (fastraft/server/clients.py) and of what
the client makes of them (fastraft/client/aio.py): a request frame over the frame limit is
answered ST_INVALID and the connection kept, a connection over max_client_connections gets a
Busy notice, a graceful stop sends a shutting-down notice, and a cluster without quorum or
without any node up yields a NotLeader that names who answered and who did not. Nothing waits
by sleeping and nothing asserts on timing: "at once" is checked as "no retry happened".
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from fastraft import codec
from fastraft.client import AsyncClient, ExponentialBackoff, RetryPolicy
from fastraft.core import encode_frame
from fastraft.errors import Busy, InvalidRequest, NotApplied, NotLeader

MIB = 1 << 20
#: The default tuning's limits (config.Tuning): max_value_bytes, and max_frame_bytes =
#: max_key_bytes + max_value_bytes + 64 KiB.
MAX_VALUE = MIB
MAX_FRAME = 4096 + MIB + 65536


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class BlindClient(AsyncClient):
    """A client that does not check the cluster's limits before sending (as one that predates
    them): what the node itself does with an oversized request is under test."""

    async def _check_limits(self, op, args, deadline):
        return None


def test_oversized_requests_are_refused_at_once_and_the_connection_kept(cluster_factory):
    cl = cluster_factory(1)
    cl.leader()
    addr = cl.endpoints()[0]

    async def main():
        async with BlindClient(cl.endpoints(), timeout=5.0) as c:
            await c.put(b"small", b"1")
            conn = c._conns[addr]
            # Over the frame limit: the node answers ST_INVALID for that request id.
            with pytest.raises(InvalidRequest) as ei:
                await c.put(b"big", b"x" * (2 * MIB))
            assert isinstance(ei.value, NotApplied)
            msg = str(ei.value)
            assert "put of " in msg and f"frame limit of {MAX_FRAME} bytes" in msg, msg
            assert c.retries == 0                       # not retried: a definite answer
            # Between max_value and max_frame: refused after decoding, the same way.
            with pytest.raises(InvalidRequest, match=f"over the limit of {MAX_VALUE}"):
                await c.put(b"big", b"y" * (MAX_VALUE + 1000))
            assert c.retries == 0
            # The same connection serves the next requests; nothing was written.
            await c.put(b"small", b"2")
            assert await c.get(b"big") is None
            assert await c.get(b"small") == b"2"
            assert c._conns[addr] is conn and conn.ready

        async with AsyncClient(cl.endpoints(), timeout=5.0) as c:
            # This client learns the limits (one status question) and refuses by itself.
            for value in (b"x" * (2 * MIB), b"y" * (MAX_VALUE + 1000)):
                with pytest.raises(InvalidRequest, match="nothing sent") as ei:
                    await c.put(b"big", value)
                assert f"limit of {MAX_VALUE} bytes (max_value_bytes)" in str(ei.value)
            assert c.retries == 0
            assert c.limits == {"max_frame_bytes": MAX_FRAME, "max_key_bytes": 4096,
                                "max_value_bytes": MAX_VALUE, "max_scan": 10_000}
            await c.put(b"small", b"3")
            assert await c.get(b"big") is None

    run(main())


def test_an_oversized_frame_sent_in_pieces_is_answered_by_request_id(cluster_factory, wire):
    cl = cluster_factory(1)
    cl.leader()
    with wire.WireClient(cl.endpoints()[0]) as w:
        sid = w.register().expect_ok()
        data = encode_frame(codec.encode_request(77, codec.OP_PUT, sid, 1, 1, b"k",
                                                 b"v" * (3 * MIB)))
        for i in range(0, len(data), 300_000):
            w.send_raw(data[i:i + 300_000])
        rid, reply = w.recv_reply(10)
        assert (rid, reply.status) == (77, codec.ST_INVALID)
        assert f"of {len(data) - 4} bytes" in reply.value
        assert f"frame limit of {MAX_FRAME}" in reply.value
        # The rest of the frame was skipped: the connection carries on.
        assert w.get(b"k").expect_ok() is None
        assert w.put(sid, 1, b"k", b"fits").ok
        assert w.get(b"k").expect_ok() == b"fits"
        assert len(wire.parse_status(w.status().values)) == len(wire.STATUS_FIELDS)


def test_too_many_connections_is_busy_not_applied(cluster_factory, wire):
    cl = cluster_factory(1, tuning={"max_client_connections": 2})
    cl.leader()
    addr = cl.endpoints()[0]
    holders = [wire.WireClient(addr) for _ in range(2)]
    try:
        for h in holders:                       # both connections are accepted and served
            assert h.status().ok

        async def refused():
            policy = RetryPolicy(3, ExponentialBackoff(0.01, 0.02))
            async with AsyncClient([addr], timeout=5.0, retry=policy) as c:
                got = await asyncio.gather(c.put(b"busy/k", b"v"), c.get(b"busy/k"),
                                           return_exceptions=True)
                for r in got:
                    assert isinstance(r, Busy), repr(r)
                    assert "too many connections" in str(r)
        run(refused())
    finally:
        for h in holders:
            h.close()

    async def after():
        async with AsyncClient([addr], timeout=5.0) as c:
            assert await c.get(b"busy/k") is None          # the put was not applied
    cl.wait_for(lambda: run(_answers(addr)), 10, "the node to accept a client again")
    run(after())


async def _answers(addr: str) -> bool:
    async with AsyncClient([addr], timeout=2.0, retry=RetryPolicy(1)) as c:
        try:
            await c.get(b"probe")
        except Busy:
            return False
        return True


def test_graceful_stop_sends_a_notice_naming_the_last_request_read(cluster_factory, wire):
    cl = cluster_factory(1)
    cl.leader()
    w = wire.WireClient(cl.endpoints()[0], timeout=15.0)
    try:
        assert w.status().ok                              # request 1, answered
        stopper = threading.Thread(target=cl.terminate, args=(1,))
        stopper.start()
        try:
            rid, reply = w.recv_reply(15)                 # already reading when it comes
        finally:
            stopper.join()
        assert rid == 0 and reply.status == codec.ST_NOT_LEADER
        assert reply.values == ["the node is shutting down", 1]
        assert w.wait_closed(5)
    finally:
        w.close()


def test_one_node_of_three_up_says_no_quorum(cluster_factory):
    cl = cluster_factory(3, start=False)
    cl.start(ids=[1])                     # alone it can never elect a leader
    eps = cl.endpoints()

    async def main():
        async with AsyncClient(eps, timeout=1.0, deadline=5.0) as c:
            with pytest.raises(NotLeader) as ei:
                await c.put(b"k", b"v")
        return ei.value

    e = run(main())
    msg = str(e)
    assert "\n" not in msg
    assert msg.startswith("no leader (no quorum: only 1 of 3 nodes reachable)"), msg
    assert f"{eps[0]} answered: not the leader, no leader known" in msg, msg
    assert f"{eps[1]}: connection refused" in msg and f"{eps[2]}: connection refused" in msg
    assert e.answered == (eps[0],)
    assert e.unreachable == (eps[1], eps[2])


def test_no_node_up_says_no_node_is_reachable(cluster_factory):
    cl = cluster_factory(3, start=False)
    eps = cl.endpoints()

    async def main():
        async with AsyncClient(eps, timeout=1.0, deadline=5.0) as c:
            with pytest.raises(NotLeader) as ei:
                await c.get(b"k")
        return ei.value

    e = run(main())
    assert str(e) == f"no node reachable at {', '.join(eps)} (connection refused)"
    assert e.unreachable == tuple(eps) and e.answered == ()
