"""Unit tests of the client's retry and session logic against scripted fake nodes.

Place in the architecture: tests of ``fastraft.client`` (aio, _session, retry) alone; the
fake nodes (``fakenode.py``) speak the wire protocol and keep a §6.3 session table, so each
test can assert what the client sent (same seq on a retry, first_unacked, keep-alives) and
what it concluded (the NotApplied / OutcomeUnknown split). Each test runs its own event loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from fastraft import codec
from fastraft.client import Client, ExponentialBackoff, NoBackoff, RetryPolicy
from fastraft.client._session import ClientSession
from fastraft.errors import (
    Busy,
    ConnectionLost,
    InvalidRequest,
    LeadershipLost,
    LocalProtocolError,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
    Timeout,
)
from fastraft_client_asynchelp import FAST, client, run, until  # conftest.py loads it


def puts(cluster):
    return [(r.session, r.seq) for r in cluster.requests(codec.OP_PUT)]


# -- the plain path -------------------------------------------------------------------------

def test_every_operation_against_the_leader(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put("k", "v")
            assert await c.get(b"k") == b"v"
            assert await c.get(b"nope") is None
            assert await c.cas(b"k", b"v", b"w") is True
            assert await c.cas(b"k", b"v", b"x") is False
            assert await c.cas(b"new", None, b"1") is True
            assert await c.scan(b"") == [(b"k", b"w"), (b"new", b"1")]
            assert await c.scan(b"", limit=1) == [(b"k", b"w")]
            assert await c.delete(b"k") is True
            assert await c.delete(b"k") is False
            # One session, seqs 1.. in order, each write applied once.
            assert [a[1] for a in fc.state.applied] == [1, 2, 3, 4, 5, 6]
            assert len(fc.requests(codec.OP_REGISTER)) == 1
            st = await c.status()
            assert [s["id"] for s in st] == [1, 2, 3] and all(s["reachable"] for s in st)
            assert [s["role"] for s in st] == ["leader", "follower", "follower"]
    run(main())


def test_str_and_type_checks(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put("ключ", "значение")
            assert await c.get("ключ") == "значение".encode()
            with pytest.raises(TypeError):
                await c.put(1, b"x")
    run(main())


def test_pipelining_shares_one_connection_and_pairs_out_of_order_answers(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            for i in range(50):
                await c.put(b"k%d" % i, b"v%d" % i)
            leader = fc.node(1)
            # Answers come back in reverse order: later requests answer first.
            for i in range(50):
                leader.plan(codec.OP_GET, ("delay", 0.2 - i * 0.004))
            got = await asyncio.gather(*(c.get(b"k%d" % i) for i in range(50)))
            assert got == [b"v%d" % i for i in range(50)]
            assert leader.connections == 1
    run(main())


def test_an_answer_to_a_cancelled_call_keeps_the_connection(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"k", b"v")
            leader = fc.node(1)
            leader.plan(codec.OP_GET, ("delay", 0.1))
            task = asyncio.ensure_future(c.get(b"k"))
            await until(lambda: len(leader.ops(codec.OP_GET)) == 1, what="the get sent")
            conn = next(x for x in c._conns.values() if x.pending)
            task.cancel()
            # The late answer arrives for a call nobody waits for: ignored, and the same
            # connection serves the next calls.
            await until(lambda: not conn.pending, what="the late answer")
            assert not conn.closed
            assert await c.get(b"k") == b"v"
            assert leader.connections == 1
    run(main())


# -- leader discovery -----------------------------------------------------------------------

def test_follows_the_leader_hint(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(3)
            async with client(fc, [fc.node(1).addr]) as c:     # only a follower is known
                await c.put(b"a", b"1")
                assert await c.get(b"a") == b"1"
            assert len(fc.node(1).requests) == 1                # the register, hinted away
            assert fc.node(3).ops(codec.OP_PUT)
            assert fc.state.applied == [(101, 1, codec.OP_PUT, b"a")]
    run(main())


def test_without_hint_tries_the_other_nodes(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(2, hint=None)
            async with client(fc) as c:
                await c.put(b"a", b"1")
                await c.put(b"b", b"2")
            assert fc.node(1).requests and fc.node(2).ops(codec.OP_PUT)
            assert [a[1] for a in fc.state.applied] == [1, 2]
            # Once found, the leader is used directly.
            assert len(fc.node(1).requests) == 1
    run(main())


def test_leader_change_is_followed(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"a", b"1")
            fc.set_leader(2)
            await c.put(b"b", b"2")
            assert fc.node(2).ops(codec.OP_PUT)[0].seq == 2
            assert [a[1] for a in fc.state.applied] == [1, 2]
    run(main())


def test_no_leader_anywhere_is_not_leader(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            fc.set_leader(None, hint=None)
            async with client(fc) as c:
                with pytest.raises(NotLeader) as ei:
                    await c.get(b"a")
                assert isinstance(ei.value, NotApplied)
    run(main())


def test_unreachable_cluster_is_not_applied(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            eps = fc.endpoints()
        # Every server is closed now: connections are refused, nothing was ever sent.
        async with client(None, eps, connect_timeout=0.5) as c:
            with pytest.raises(NotLeader, match="no node reachable"):
                await c.get(b"a")
    run(main())


def test_stale_reads_go_to_any_node(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"a", b"1")
            for _ in range(6):
                assert await c.get(b"a", stale=True) == b"1"
            assert await c.scan(b"", stale=True) == [(b"a", b"1")]
            for n in fc.nodes:
                assert [r for r in n.ops(codec.OP_GET) if r.stale]
    run(main())


# -- exactly-once retries -------------------------------------------------------------------

def test_lost_answer_is_retried_with_the_same_seq(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_drop")
            await c.put(b"a", b"1")
            assert puts(fc) == [(101, 1), (101, 2), (101, 2)]
            assert [a[1] for a in fc.state.applied] == [1, 2]          # applied once
            assert fc.node(1).connections == 2                          # reconnected
    run(main())


def test_unknown_then_cached_answer(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.cas(b"a", None, b"0")
            fc.node(1).plan(codec.OP_CAS, "apply_unknown")
            # Applied on the first attempt: the retry gets the cached True, not False.
            assert await c.cas(b"a", b"0", b"1") is True
            cas = fc.requests(codec.OP_CAS)
            assert cas[0].seq == 1 and len(cas) >= 3
            assert {(r.session, r.seq) for r in cas[1:]} == {(101, 2)}
            assert len(fc.state.applied) == 2
    run(main())


def test_timeout_is_retried_with_the_same_seq(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc, timeout=0.2) as c:
            fc.node(1).plan(codec.OP_PUT, "apply_silent")
            await c.put(b"a", b"1")
            assert len(puts(fc)) >= 2 and set(puts(fc)) == {(101, 1)}
            assert len(fc.state.applied) == 1
    run(main())


def test_retry_on_another_node_after_leader_change_keeps_the_seq(fake):
    async def main():
        async with fake.FakeCluster() as fc, client(fc) as c:
            await c.put(b"x", b"0")
            fc.node(1).plan(codec.OP_DELETE, "apply_drop")
            fc.set_leader(2)      # the old leader's connection drops; node 2 took over
            assert await c.delete(b"x") is True     # the cached answer, not False
            dels = fc.requests(codec.OP_DELETE)
            assert {(r.session, r.seq) for r in dels} == {(101, 2)}
            assert len(fc.state.applied) == 2
    run(main())


# -- the NotApplied / OutcomeUnknown split ----------------------------------------------------

def test_endless_silence_is_timeout(fake):
    async def main():
        async with fake.FakeCluster() as fc:
            async with client(fc, timeout=0.1, deadline=0.5) as c:
                await c.put(b"a", b"0")
                for n in fc.nodes:
                    n.plan(None, *["silent"] * 50)
                with pytest.raises(Timeout) as ei:
                    await c.put(b"a", b"1")
                assert isinstance(ei.value, OutcomeUnknown)
                # Every attempt of that write carried the same seq.
                assert {s for s in puts(fc)[1:]} == {(101, 2)}
    run(main())


def test_endless_drops_are_connection_lost(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, *["drop"] * 50)
            with pytest.raises(ConnectionLost):
                await c.put(b"a", b"1")
            assert len(puts(fc)) == 1 + FAST.max_attempts
    run(main())


def test_busy_is_not_applied(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, *[("status", codec.ST_BUSY, "full")] * 50)
            with pytest.raises(Busy):
                await c.put(b"a", b"1")
            assert len(puts(fc)) == 1 + FAST.max_attempts
    run(main())


def test_invalid_is_not_retried(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            fc.node(1).plan(codec.OP_PUT, ("status", codec.ST_INVALID, "too big"))
            with pytest.raises(InvalidRequest, match="too big"):
                await c.put(b"a", b"1")
            assert len(puts(fc)) == 1
    run(main())


def test_not_applied_after_an_ambiguous_attempt_stays_unknown(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "drop", *[("status", codec.ST_BUSY, "full")] * 50)
            # The first attempt may have been applied: a later Busy does not undo that.
            with pytest.raises(ConnectionLost):
                await c.put(b"a", b"1")
            fc.node(1).plans.clear()
            fc.node(1).plan(codec.OP_PUT, "drop", ("status", codec.ST_INVALID, "no"))
            with pytest.raises(ConnectionLost):
                await c.put(b"a", b"2")
    run(main())


def test_leadership_lost_forever_is_outcome_unknown(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, *[("status", codec.ST_UNKNOWN, "lost")] * 50)
            with pytest.raises(OutcomeUnknown) as ei:
                await c.put(b"a", b"1")
            assert isinstance(ei.value, LeadershipLost)
    run(main())


def test_reads_are_retried_freely(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"1")
            fc.node(1).plan(codec.OP_GET, "drop", "drop")
            assert await c.get(b"a") == b"1"
    run(main())


# -- sessions -------------------------------------------------------------------------------

def test_first_unacked_advances(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            for i in range(3):
                await c.put(b"a", b"%d" % i)
            assert [r.first_unacked for r in fc.requests(codec.OP_PUT)] == [1, 2, 3]
            # seq 4 stays unanswered for a while; 5 and 6 complete meanwhile.
            fc.node(1).plan(codec.OP_PUT, ("delay", 0.3))
            slow = asyncio.ensure_future(c.put(b"slow", b"x"))
            await until(lambda: len(fc.requests(codec.OP_PUT)) == 4)
            await c.put(b"b", b"5")
            await c.put(b"b", b"6")
            await slow
            await c.put(b"b", b"7")
            got = [(r.seq, r.first_unacked) for r in fc.requests(codec.OP_PUT)]
            assert got == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (6, 4), (7, 7)]
    run(main())


def test_session_expired_on_a_first_attempt_moves_to_a_new_session(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "expire")
            await c.put(b"a", b"1")            # certainly not applied: redone elsewhere
            assert puts(fc) == [(101, 1), (101, 2), (102, 1)]
            assert fc.state.applied[-1][:2] == (102, 1)
            assert c.session_id == 102
    run(main())


def test_session_expired_after_an_ambiguous_attempt_is_timeout(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_drop", "expire")
            with pytest.raises(Timeout, match="outcome unknown"):
                await c.put(b"a", b"1")
            # The next write lives in a new session.
            await c.put(b"a", b"2")
            assert puts(fc)[-1] == (102, 1)
            assert [a[:2] for a in fc.state.applied] == [(101, 1), (101, 2), (102, 1)]
    run(main())


def test_concurrent_first_writes_register_once(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc) as c:
            await asyncio.gather(*(c.put(b"k%d" % i, b"v") for i in range(20)))
            assert len(fc.requests(codec.OP_REGISTER)) == 1
            assert sorted(a[1] for a in fc.state.applied) == list(range(1, 21))
    run(main())


def test_keepalives_are_sent(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, keepalive_interval=0.05) as c:
            await c.put(b"a", b"1")
            await until(lambda: len(fc.state.keepalives) >= 2, what="two keep-alives")
            assert fc.state.keepalives[0] == (101, 2)          # session, first_unacked
    run(main())


def test_keepalive_session_expired_registers_anew_on_the_next_write(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, keepalive_interval=0.05) as c:
            await c.put(b"a", b"1")
            fc.node(1).plan(codec.OP_KEEPALIVE, "expire")
            await until(lambda: c.session_id is None, what="the session to expire")
            await c.put(b"a", b"2")
            assert puts(fc)[-1] == (102, 1)
    run(main())


def test_no_keepalive_while_writes_flow(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, keepalive_interval=0.3) as c:
            t_end = time.monotonic() + 0.6
            while time.monotonic() < t_end:
                await c.put(b"a", b"1")
                await asyncio.sleep(0.01)
            assert fc.state.keepalives == []
    run(main())


# -- the blocking client --------------------------------------------------------------------

def test_blocking_client_shares_the_logic(fake):
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    fc = fake.FakeCluster()
    asyncio.run_coroutine_threadsafe(fc.__aenter__(), loop).result(5)
    try:
        fc.node(1).plan(codec.OP_PUT, "apply_drop")
        with Client(fc.endpoints(), timeout=1.0, retry=FAST) as c:
            c.put("a", "1")
            assert c.get("a") == b"1"
            assert c.cas("a", "1", "2") is True
            assert c.scan("") == [(b"a", b"2")]
            assert c.delete("a") is True
            assert len(c.status()) == 3
        assert [a[:2] for a in fc.state.applied] == [(101, 1), (101, 2), (101, 3)]
        with pytest.raises(LocalProtocolError):
            c.get("a")
    finally:
        asyncio.run_coroutine_threadsafe(fc.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


# -- policy and bookkeeping units -----------------------------------------------------------

def test_backoff_is_jittered_exponential_and_capped():
    b = ExponentialBackoff(0.01, 0.1, rng=random.Random(7))
    for n in range(1, 12):
        d = b.delay(n)
        top = min(0.1, 0.01 * 2 ** (n - 1))
        assert top / 2 <= d <= top
    assert len({b.delay(3) for _ in range(20)}) > 1
    assert NoBackoff().delay(5) == 0.0


def test_retry_policy_bounds_attempts():
    p = RetryPolicy(max_attempts=3)
    assert [p.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_custom_policy_object_is_used(fake):
    class Once:
        def should_retry(self, attempts):
            return False

        def delay(self, failures):
            return 0.0

    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, retry=Once()) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(codec.OP_PUT, "apply_drop")
            with pytest.raises(ConnectionLost):
                await c.put(b"a", b"1")
            assert len(puts(fc)) == 2
    run(main())


def test_session_first_unacked_bookkeeping():
    s = ClientSession(7)
    assert s.first_unacked == 1
    a, b, c = s.begin(), s.begin(), s.begin()
    assert (a, b, c) == (1, 2, 3) and s.first_unacked == 1
    s.done(2)
    assert s.first_unacked == 1
    s.done(1)
    assert s.first_unacked == 3
    s.done(3)
    assert s.first_unacked == 4 and s.open_count == 0
    rng = random.Random(1)
    seqs = [s.begin() for _ in range(100)]
    rng.shuffle(seqs)
    for i, q in enumerate(seqs):
        s.done(q)
        open_ = set(seqs[i + 1:])
        assert s.first_unacked == (min(open_) if open_ else s.next_seq)


def test_per_call_deadline_overrides_the_clients(fake):
    async def main():
        async with fake.FakeCluster(1) as fc, client(fc, timeout=0.1, deadline=60) as c:
            await c.put(b"a", b"0")
            fc.node(1).plan(None, *["silent"] * 100)
            t0 = time.monotonic()
            with pytest.raises(Timeout):
                await c.get(b"a", deadline=0.3)
            with pytest.raises(Timeout):
                await c.put(b"a", b"1", deadline=0.3)
            assert time.monotonic() - t0 < 30       # not the client's 60 s
    run(main())


def test_a_circle_of_stale_hints_ends_in_not_leader(fake):
    async def main():
        async with fake.FakeCluster(2) as fc:
            fc.set_leader(None, hint=None)
            fc.node(1).hint, fc.node(2).hint = fc.node(2), fc.node(1)
            async with client(fc, retry=RetryPolicy(8, ExponentialBackoff(0.01, 0.02))) as c:
                with pytest.raises(NotLeader):
                    await c.put(b"a", b"1")
            # Hints were followed, but the circle was broken by backoffs (bounded attempts).
            assert len(fc.requests(codec.OP_REGISTER)) == 8
    run(main())


def test_close_during_calls(fake):
    async def main():
        async with fake.FakeCluster(1) as fc:
            c = client(fc)
            await c.put(b"a", b"0")
            fc.node(1).plan(None, "silent", "silent")
            w = asyncio.ensure_future(c.put(b"a", b"1"))
            r = asyncio.ensure_future(c.get(b"a"))
            await until(lambda: len(fc.node(1).requests) == 4)
            await c.close()
            with pytest.raises(ConnectionLost):        # the write may have been applied
                await w
            with pytest.raises(LocalProtocolError):    # a read has no outcome to report
                await r
            with pytest.raises(LocalProtocolError):
                await c.get(b"a")
            await c.close()                             # twice is fine
    run(main())
