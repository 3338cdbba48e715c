"""Revisions, leases and watches against real node processes: each feature, and each refusal
(an unknown lease, an expired lease on put, a compacted start revision, a watcher that never
reads), plus a watch that keeps its stream whole across the kill of the leader.

Place in the architecture: integration tests (real processes, sockets, files, fsync) of the
server's coordination side (server/requests.py, server/watches.py, the state machine) through
the real client (client/_coord.py, _watch.py, _lock.py) and, for the raw protocol, the test
wire client.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fastraft import codec
from fastraft.client import AsyncClient, _watch
from fastraft.errors import Compacted, LeaseNotFound, LocalProtocolError, RemoteProtocolError
from fastraft_test_waiting import until  # tests/conftest.py loads it

DEADLINE = 30.0


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_revisions_are_the_same_on_every_node(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            await cl.put("r/a", "1")
            await cl.put("r/b", "2")
            ok, rev_c = await cl.cas_revision("r/c", 0, "3")
            assert ok
            item = await cl.get_item("r/a")
            assert item[:2] == (b"r/a", b"1") and 0 < item[2] < rev_c
            assert not (await cl.cas_revision("r/a", item[2] + 1, "x"))[0]
            assert await cl.cas_revision("r/a", item[2], "x") == (True, rev_c + 2)  # (a failed
            # cas is an entry too: it took rev_c + 1)
            want = await cl.scan_items("r/")
            assert [k for k, _v, _r in want] == [b"r/a", b"r/b", b"r/c"]
            assert await cl.revision() >= rev_c + 2
        for ep in c.endpoints():
            async with AsyncClient([ep], learn_members=False) as one:
                await until(lambda: _scan_is(one, want), f"{ep} to hold the same revisions",
                            DEADLINE)

    run(main())


async def _scan_is(client, want) -> bool:
    return await client.scan_items("r/", stale=True) == want


def test_a_lease_expires_without_other_writes_and_a_watcher_sees_it(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            kept = await cl.lease_grant(1)
            lapsed = await cl.lease_grant(1)
            await cl.put("l/kept", "k", lease=kept)
            await cl.put("l/lapsed", "x", lease=lapsed)
            await cl.put("l/plain", "p")
            async with cl.watch("l/") as w:
                t0 = time.monotonic()
                # renew one lease a few times over twice its TTL; let the other lapse
                while time.monotonic() - t0 < 2.5:
                    assert await cl.lease_keepalive(kept) == 1.0
                    await asyncio.sleep(0.25)
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert (ev.type, ev.key, ev.value) == ("delete", b"l/lapsed", None)
            assert await cl.get("l/kept") == b"k" and await cl.get("l/plain") == b"p"
            assert await cl.get("l/lapsed") is None
            with pytest.raises(LeaseNotFound):
                await cl.put("l/late", "y", lease=lapsed)      # an expired lease on put
            with pytest.raises(LeaseNotFound):
                await cl.lease_keepalive(lapsed)
            with pytest.raises(LeaseNotFound):
                await cl.put("l/never", "y", lease=123456789)  # an unknown lease
            assert await cl.get("l/late") is None and await cl.get("l/never") is None
            assert await cl.lease_revoke(kept) is True
            assert await cl.get("l/kept") is None
            assert await cl.lease_revoke(kept) is False

    run(main())


def test_watch_streams_history_then_live_changes_on_any_node(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            await cl.put("w/1", "a")
            await cl.put("other", "z")
            first = (await cl.get_item("w/1"))[2]
            await cl.delete("w/1")
            leader = await cl.leader()
            follower = next(ep for ep in c.endpoints() if ep != leader)
            async with AsyncClient([follower], learn_members=False) as fcl:
                async with fcl.watch("w/", start_revision=first) as w:
                    await cl.put("w/2", "b")
                    got = [await asyncio.wait_for(w.__anext__(), DEADLINE) for _ in range(3)]
            assert [(e.type, e.key, e.value) for e in got] == [
                ("put", b"w/1", b"a"), ("delete", b"w/1", None), ("put", b"w/2", b"b")]
            assert got[0].revision == first and got[0].revision < got[1].revision \
                < got[2].revision
            # "from now": nothing acknowledged before the watch started is in it
            async with cl.watch("w/") as w:
                await cl.put("w/3", "c")
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert (ev.key, ev.value) == (b"w/3", b"c")

    run(main())


def test_a_compacted_start_revision_is_refused(cluster_factory):
    c = cluster_factory(3, tuning={"watch_history": 5})

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            for i in range(30):
                await cl.put(f"c/{i}", "v")
            with pytest.raises(Compacted) as e:
                async with cl.watch("c/", start_revision=1) as w:
                    await asyncio.wait_for(w.__anext__(), DEADLINE)
            assert e.value.oldest > 1
            async with cl.watch("c/", start_revision=e.value.oldest) as w:
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert ev.revision >= e.value.oldest

    run(main())


def test_a_watcher_that_never_reads_is_cancelled(cluster_factory, wire):
    """The node buffers a watcher that does not read up to watch_buffer_bytes, then ends its
    stream with Busy; the node and its other clients are unaffected."""
    c = cluster_factory(3, tuning={"watch_buffer_bytes": 64 * 1024})
    leader = c.leader()
    w = wire.WireClient(c.node(leader).client_addr, timeout=10.0)
    w.send_request(7, codec.OP_WATCH, b"big/", 0)
    rid, first = w.recv_reply()
    assert rid == 7 and first.status == codec.ST_OK

    async def write():
        async with AsyncClient(c.endpoints()) as cl:
            value = b"v" * 60_000
            for i in range(300):          # 18 MB: more than the kernel's socket buffers
                await cl.put(f"big/{i}", value)
            assert await cl.get("big/0") == value

    run(write())
    statuses = []
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        rid, reply = w.recv_reply()
        assert rid == 7
        statuses.append(reply.status)
        if reply.status != codec.ST_OK:
            break
    assert statuses[-1] == codec.ST_BUSY, statuses[-5:]
    assert "too slowly" in reply.values[0]
    w.close()


def test_a_watch_keeps_every_write_exactly_once_across_a_leader_kill(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl, AsyncClient(c.endpoints()) as wcl:
            acked: dict[bytes, int] = {}
            async with wcl.watch("k/") as w:
                for i in range(40):
                    if i == 20:
                        c.kill(c.leader())
                    try:
                        await cl.put(f"k/{i}", f"{i}")
                        acked[f"k/{i}".encode()] = i
                    except Exception:       # an outcome-unknown write may or may not appear
                        pass
                seen: dict[bytes, int] = {}
                revs = []
                while not set(acked) <= set(seen):
                    ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                    assert ev.key not in seen, f"{ev.key!r} delivered twice"
                    seen[ev.key] = ev.revision
                    revs.append(ev.revision)
            assert revs == sorted(revs) and len(set(revs)) == len(revs)
            assert len(acked) >= 30

    run(main(), timeout=120)


def test_locks_are_held_one_at_a_time_with_increasing_fences(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as a, AsyncClient(c.endpoints()) as b:
            inside: list = []
            fences: list = []

            async def worker(cl, n):
                for _ in range(n):
                    async with cl.lock("job", ttl=5) as held:
                        assert not inside, "two holders at once"
                        inside.append(held)
                        fences.append(held.fence)
                        await asyncio.sleep(0.02)
                        held.check()
                        inside.remove(held)

            await asyncio.gather(worker(a, 5), worker(b, 5))
            assert len(fences) == 10 and fences == sorted(fences)
            assert await a.scan_items("fastraft/lock/job/") == []     # all released

    run(main())


def test_a_lock_waiter_whose_watch_is_compacted_looks_again(cluster_factory):
    """Nodes that keep one change of history while others write: the waiter's watch of its
    predecessor is refused Compacted, and the waiter looks again instead of failing. (The
    waiter's revision() returns only once 50 more writes are in: the writes that race with
    a waiter between its look and its watch, made certain.)"""
    c = cluster_factory(3, tuning={"watch_history": 1})

    async def main():
        async with AsyncClient(c.endpoints()) as a, AsyncClient(c.endpoints()) as b:
            watches = []
            make, revision = b.watch, b.revision
            b.watch = lambda *args: watches.append(make(*args)) or watches[-1]

            async def late_revision(**kw):
                rev = await revision(**kw)

                async def moved():
                    return await a.revision() > rev + 50
                await until(moved, "50 more writes", DEADLINE)
                return rev
            b.revision = late_revision
            lock_a, lock_b = a.lock("cjob", ttl=5), b.lock("cjob", ttl=5)
            held_a = await lock_a.acquire()
            stop = asyncio.Event()

            async def writer():
                i = 0
                while not stop.is_set():
                    await asyncio.gather(*(a.put(f"noise/{i + j}", "v") for j in range(8)))
                    i += 8

            w = asyncio.create_task(writer())
            waiter = asyncio.create_task(lock_b.acquire())
            try:
                await until(lambda: any(isinstance(x._error, Compacted) for x in watches),
                            "a compacted watch of the predecessor", DEADLINE)
                assert not waiter.done()
                await lock_a.release()
                held_b = await asyncio.wait_for(waiter, DEADLINE)
                assert held_b.fence > held_a.fence
                await lock_b.release()
            finally:
                stop.set()
                await w

    run(main())


def test_a_lock_waiter_gets_a_clear_error_when_its_client_closes(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as a:
            b = AsyncClient(c.endpoints())
            lock_a = a.lock("close-job", ttl=5)
            await lock_a.acquire()
            waiter = asyncio.create_task(b.lock("close-job", ttl=5).acquire())
            await until(lambda: b._watches, "the waiter's watch", DEADLINE)
            await b.close()
            with pytest.raises(LocalProtocolError, match="closed"):
                await asyncio.wait_for(waiter, DEADLINE)
            await lock_a.release()

    run(main())


def test_a_watch_of_an_unreachable_cluster_retries_until_closed():
    """The client's watch with no node listening: it keeps trying, and closing it ends the
    iteration (no hang, no error)."""
    async def main():
        async with AsyncClient(["127.0.0.1:9"], timeout=0.5, learn_members=False) as cl:
            w = cl.watch("x/", start_revision=1)
            await w.start()
            t = asyncio.create_task(w.__anext__())
            done, _ = await asyncio.wait({t}, timeout=0.3)
            assert not done                 # still trying after 0.3 s
            await w.close()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(t, 5)

    run(main())



def test_an_election_follows_campaigns_and_resignations(cluster_factory):
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as a, AsyncClient(c.endpoints()) as b:
            ea, eb = a.election("primary", ttl=5), b.election("primary", ttl=5)
            assert await ea.leader() is None
            seen = []

            async def observe():
                async for leader in ea.observe():
                    seen.append(leader)
                    if len(seen) == 3:
                        return

            watcher = asyncio.create_task(observe())
            await until(lambda: seen, "the observer's first answer", DEADLINE)
            held_a = await ea.campaign("node-a")
            second = asyncio.create_task(eb.campaign("node-b"))
            await until(lambda: _scan_count(a, b"fastraft/election/primary/", 2),
                        "both candidates queued", DEADLINE)
            assert not second.done() and await eb.leader() == (b"node-a", held_a.fence)
            await ea.resign()
            held_b = await asyncio.wait_for(second, DEADLINE)
            assert held_b.fence > held_a.fence
            assert await ea.leader() == (b"node-b", held_b.fence)
            await asyncio.wait_for(watcher, DEADLINE)
            assert seen == [None, (b"node-a", held_a.fence), (b"node-b", held_b.fence)]
            await eb.resign()
            assert await ea.leader() is None

    run(main())


async def _scan_count(client, prefix: bytes, n: int) -> bool:
    return len(await client.scan_items(prefix)) == n


def test_lock_names_that_share_a_prefix_are_distinct_locks(cluster_factory):
    """Lock "a" and lock "a/b" (and "a%2Fb", which escapes to what "a/b" would be without the
    escaping of "%") are three locks: holding one never waits for another."""
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            async with cl.lock("a", ttl=5):
                async with cl.lock("a/b", ttl=5) as inner:
                    held = await asyncio.wait_for(cl.lock("a%2Fb", ttl=5).acquire(), DEADLINE)
                    assert held.fence > inner.fence
                    await cl.lease_revoke(held.lease)
            keys = [k for k, _v, _r in await cl.scan_items("fastraft/lock/")]
            assert keys == []

    run(main())


def test_a_start_compacted_where_the_others_are_down_ends_with_compacted(cluster_factory):
    """The nodes that answer say the start is compacted and the third is down: the watch
    ends with Compacted once the down node stayed unreachable for STALL_AFTER seconds
    (it used to try them all again forever)."""
    c = cluster_factory(3, tuning={"watch_history": 5})

    async def main():
        async with AsyncClient(c.endpoints()) as cl:
            for i in range(30):
                await cl.put(f"d/{i}", "v")
            leader = c.leader()
            c.kill(next(i for i in c.ids if i != leader))
            t0 = time.monotonic()
            with pytest.raises(Compacted) as e:
                async with cl.watch("d/", start_revision=1) as w:
                    await asyncio.wait_for(w.__anext__(), DEADLINE)
            assert e.value.oldest > 1 and "2 of 3" in str(e.value)
            assert time.monotonic() - t0 >= _watch.STALL_AFTER

    run(main())


def test_a_watch_only_client_learns_the_members_to_resume_on(cluster_factory, monkeypatch):
    """A client given one node that only watches (no call that would teach it the members)
    learns them while it streams, and resumes on another node when its own is killed."""
    monkeypatch.setattr(_watch, "MEMBERS_EVERY", 0.5)
    c = cluster_factory(3)

    async def main():
        first = c.endpoints()[0]
        async with AsyncClient(c.endpoints()) as cl, AsyncClient([first]) as wcl:
            async with wcl.watch("m/", start_revision=1) as w:
                await cl.put("m/0", "a")
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert ev.key == b"m/0" and wcl.endpoints == [first]
                await until(lambda: len(wcl.endpoints) == 3, "the member list", DEADLINE)
                c.kill(next(i for i in c.ids if c.node(i).client_addr == first))
                await cl.put("m/1", "b")
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert (ev.key, ev.value) == (b"m/1", b"b")
                assert w._conn is None or w._conn.addr != first

    run(main(), timeout=120)


def test_a_watch_frame_over_the_clients_limit_ends_the_watch(cluster_factory):
    """A change bigger than the watching client's max_frame: the watch ends with a clear
    error instead of skipping the frame (a gap) and going on."""
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl, \
                AsyncClient(c.endpoints(), max_frame=4096) as wcl:
            async with wcl.watch("big/") as w:
                await cl.put("big/0", "small")
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert ev.value == b"small"
                await cl.put("big/1", b"x" * 8192)
                await cl.put("big/2", "small")
                with pytest.raises(RemoteProtocolError, match="max_frame"):
                    await asyncio.wait_for(w.__anext__(), DEADLINE)

    run(main())


def test_a_watch_leaves_a_node_that_stopped(cluster_factory):
    """The node a watch streams from is paused (SIGSTOP): nothing more comes from it, and the
    watch resumes on another node from the first revision it has not received."""
    c = cluster_factory(3)

    async def main():
        async with AsyncClient(c.endpoints()) as cl, AsyncClient(c.endpoints()) as wcl:
            await cl.put("s/0", "a")
            async with wcl.watch("s/") as w:
                await cl.put("s/1", "b")
                ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                assert ev.key == b"s/1"
                node = next(i for i in c.ids if c.node(i).client_addr == w._conn.addr)
                c.pause(node)
                try:
                    await cl.put("s/2", "c")            # the others carry on
                    ev = await asyncio.wait_for(w.__anext__(), DEADLINE)
                    assert (ev.key, ev.value) == (b"s/2", b"c")
                    assert w._conn.addr != c.node(node).client_addr
                finally:
                    c.resume(node)

    run(main(), timeout=120)
