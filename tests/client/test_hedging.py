"""Unit tests of the client's hedging and of its immediate retry after a lost connection
(``fastraft/client/aio.py``, "Hedging"), against the scripted fake nodes.

Place in the architecture: tests of ``fastraft.client`` alone (tests/client, fakenode.py). A
silent node is one planned ``silent`` / ``apply_silent`` (it reads the request and never
answers, as a paused leader). The per-request timeouts here are long and the call deadlines
shorter than them, so a call that waited for its timeout would fail with Timeout: these tests
check what the client concludes, never how fast.
"""

from __future__ import annotations

import asyncio

import pytest

from fastraft import codec
from fastraft.client import AsyncClient, RetryPolicy
from fastraft.errors import OutcomeUnknown, Timeout
from fastraft_client_asynchelp import FAST, client, run  # conftest.py loads it

SLOW = {"timeout": 30.0, "deadline": 10.0, "hedge_after": 0.1}


def puts(cluster):
    return [(r.session, r.seq) for r in cluster.requests(codec.OP_PUT)]


def test_a_write_to_a_silent_leader_moves_to_the_new_one_with_its_seq(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, **SLOW) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_silent")   # applied, never answered
            task = c.put(b"a", b"1")
            fc.set_leader(2)                                # node 2 took over
            await task                                      # not Timeout: hedged
            assert puts(fc) == [(101, 1), (101, 2), (101, 2)], "resent with the same seq"
            assert [a[1] for a in fc.state.applied] == [1, 2], "applied once"
            assert fc.node(2).ops(codec.OP_STATUS), "asked who leads"
            assert await c.leader() == fc.node(2).addr
    run(main())


def test_an_unapplied_write_is_applied_once_by_the_new_leader(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, **SLOW) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "silent")         # read, never applied
            fc.set_leader(2)
            await c.put(b"a", b"1")
            assert [a[1] for a in fc.state.applied] == [1, 2]
            assert await c.get(b"a") == b"1"
    run(main())


def test_reads_hedge_too(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, **SLOW) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_GET, "silent")
            fc.set_leader(2)
            assert await c.get(b"a") == b"0"
    run(main())


def test_a_slow_leader_that_still_leads_is_waited_for(fake):
    # Silent for a while, but nobody else leads: the client asks, keeps waiting, and the
    # write is answered by the first attempt (not sent twice).
    async def main():
        async with fake.FakeCluster() as fc, client(fc, **SLOW) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, ("delay", 0.6))
            await c.put(b"a", b"1")
            assert puts(fc) == [(101, 1), (101, 2)]
            assert fc.node(2).ops(codec.OP_STATUS), "asked who leads"
    run(main())


def test_without_another_leader_the_silence_ends_in_timeout(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.5, deadline=1.5,
                                                    hedge_after=0.1) as c:
            await c.put(b"a", b"0")
            for n in fc.nodes:
                n.plan(codec.OP_PUT, *["silent"] * 20)
            with pytest.raises(Timeout) as ei:
                await c.put(b"a", b"1")
            assert isinstance(ei.value, OutcomeUnknown)
            assert {s for s in puts(fc)[1:]} == {(101, 2)}
    run(main())


def test_hedging_can_be_turned_off(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=1.0, deadline=0.8,
                                                    hedge_after=None) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_silent")
            fc.set_leader(2)
            with pytest.raises(Timeout):
                await c.put(b"a", b"1")
            assert not fc.node(2).ops(codec.OP_STATUS)
    run(main())
    with pytest.raises(ValueError):
        AsyncClient(["127.0.0.1:1"], hedge_after=0)


def test_the_first_lost_connection_is_retried_without_a_backoff(fake):
    class Recording:
        def __init__(self):
            self.delays = []

        def delay(self, failures):
            self.delays.append(failures)
            return 0.001

    async def main():
        backoff = Recording()
        policy = RetryPolicy(max_attempts=FAST.max_attempts, backoff=backoff)
        async with fake.FakeCluster() as fc, client(fc, retry=policy) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_drop")
            await c.put(b"a", b"1")
            assert backoff.delays == [], "retried at once"
            fc.node(1).plan(codec.OP_PUT, "apply_drop", "apply_drop")
            await c.put(b"a", b"2")
            assert backoff.delays == [1], "the second loss of a call backs off"
            assert [a[1] for a in fc.state.applied] == [1, 2, 3]
    run(main())


def test_a_hint_is_followed_to_a_node_that_refused_a_moment_ago(fake):
    # A node that refused a connection is skipped for DOWN_FOR (1 s); but when a node names
    # it leader, it may have restarted and won: the client tries it at once.
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"a", b"0")
            n2 = fc.node(2)
            port = int(n2.addr.rsplit(":", 1)[1])
            await n2.close()
            for _ in range(3):                  # stale reads go round: node 2 refuses
                await c.get(b"a", stale=True)
            assert n2.addr in c._down
            n2.server = await asyncio.start_server(n2._serve, "127.0.0.1", port)
            fc.set_leader(2)
            await c.put(b"a", b"1", deadline=0.5)      # less than DOWN_FOR
            assert n2.ops(codec.OP_PUT)
    run(main())
