"""End-to-end tests of the client against real ``fastraft node`` processes.

Place in the architecture: tests of ``fastraft.client`` over the real server, started by the
integration harness (tests/integration/harness.py) on free ports. One cluster is shared by the
tests that leave it healthy (``real_cluster``); the tests that kill or pause a node get a
cluster of their own (``cluster_factory``). Everything waits by polling against a deadline;
nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from fastraft import AsyncClient, Client
from fastraft.client import ExponentialBackoff, RetryPolicy
from fastraft.errors import NotApplied, OutcomeUnknown, Timeout
from fastraft_test_waiting import wait_until  # tests/conftest.py loads it


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def poll(pred, timeout: float = 10.0, what: str = "the condition"):
    return wait_until(pred, timeout, what, interval=0.02)


def test_every_operation(real_cluster):
    with Client(real_cluster.endpoints(), timeout=5.0) as c:
        c.put(b"e2e/k", b"v")
        c.put("e2e/str", "é")
        assert c.get(b"e2e/k") == b"v"
        assert c.get("e2e/str") == "é".encode()
        assert c.get(b"e2e/absent") is None
        assert c.cas(b"e2e/k", b"v", b"w") is True
        assert c.cas(b"e2e/k", b"v", b"x") is False
        assert c.cas(b"e2e/new", None, b"1") is True
        assert c.cas(b"e2e/new", None, b"2") is False
        assert c.scan(b"e2e/") == [(b"e2e/k", b"w"), (b"e2e/new", b"1"),
                                   (b"e2e/str", "é".encode())]
        assert c.scan(b"e2e/", limit=2) == [(b"e2e/k", b"w"), (b"e2e/new", b"1")]
        assert c.delete(b"e2e/k") is True
        assert c.delete(b"e2e/k") is False
        assert c.get(b"e2e/k") is None
        nodes = c.status()
        assert sorted(n["id"] for n in nodes) == [1, 2, 3]
        assert all(n["reachable"] for n in nodes)
        assert sum(n["role"] == "leader" for n in nodes) == 1
        assert c.session_id is not None


def test_async_client_pipelines_many_writes(real_cluster):
    async def main():
        async with AsyncClient(real_cluster.endpoints()) as c:
            await asyncio.gather(*(c.put(b"pipe/%03d" % i, b"%d" % i) for i in range(300)))
            got = await c.scan(b"pipe/")
            assert got == [(b"pipe/%03d" % i, b"%d" % i) for i in range(300)]
            # One connection per node at most, whatever the concurrency.
            assert len(c._conns) <= 3
    run(main())


def test_follower_hint_is_followed(real_cluster):
    lead = real_cluster.leader()
    follower = next(i for i in real_cluster.ids if i != lead)
    with Client([real_cluster.node(follower).client_addr]) as c:
        c.put(b"hint/a", b"1")                 # the follower hints; the client follows
        assert c.get(b"hint/a") == b"1"
        assert c.leader() == real_cluster.node(lead).client_addr


def test_linearizable_read_sees_the_write_and_stale_reads_catch_up(real_cluster):
    with Client(real_cluster.endpoints()) as c:
        for i in range(30):
            c.put(b"lin/x", b"%d" % i)
            assert c.get(b"lin/x") == b"%d" % i      # never lags
    for i in real_cluster.ids:                        # a stale read may lag, then catches up
        with Client([real_cluster.node(i).client_addr]) as c:
            poll(lambda c=c: c.get(b"lin/x", stale=True) == b"29", 10,
                 f"node {i}'s stale read to catch up")


def test_client_is_pure_python():
    # The compiled core is made unimportable (as on a machine without a compiler): the client
    # still imports and encodes frames with the pure-Python twin.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'fastraft._core':\n"
            "            raise ImportError('no extension here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from fastraft import Client, AsyncClient\n"
            "import fastraft.client.bench, fastraft.client.cli_cmds\n"
            "import fastraft.core\n"
            "assert fastraft.core.IMPLEMENTATION == 'python', fastraft.core.IMPLEMENTATION\n"
            "assert 'fastraft._core' not in sys.modules\n"
            "from fastraft.client import _protocol\n"
            "assert _protocol.frame([1, 2])[:4] == bytes([3, 0, 0, 0])\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTRAFT_NO_EXTENSIONS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# -- faults: clusters of their own ------------------------------------------------------------

def test_kill_leader_during_writes_applies_each_acknowledged_write_once(cluster_factory):
    """kill -9 of the leader under two streams of writes: cas increments of per-worker
    counters (a cas applied twice, or re-executed on the new leader instead of answered from
    the session cache, would push a counter past acked + unknown) and pipelined puts of
    unique keys (every acknowledged key is there; none reported NotApplied is)."""
    cl = cluster_factory()
    old = cl.leader()
    workers = 4
    acked = [0] * workers
    unknown = [0] * workers
    after_kill = [0] * workers
    put_ok: set = set()
    put_not_applied: set = set()
    put_unknown: set = set()

    async def main():
        kill_done = asyncio.Event()
        stop = asyncio.Event()
        policy = RetryPolicy(max_attempts=40, backoff=ExponentialBackoff(0.01, 0.25))
        async with AsyncClient(cl.endpoints(), timeout=1.0, deadline=8.0,
                               retry=policy) as c:
            async def incr(w: int) -> None:
                key = b"ctr/%d" % w
                await c.cas(key, None, b"0")
                deadline = time.monotonic() + 30
                while after_kill[w] < 20 and time.monotonic() < deadline:
                    try:
                        cur = await c.get(key)
                        ok = await c.cas(key, cur, b"%d" % (int(cur) + 1))
                    except OutcomeUnknown:
                        unknown[w] += 1
                        continue
                    except NotApplied:
                        continue
                    if ok:
                        acked[w] += 1
                        if kill_done.is_set():
                            after_kill[w] += 1

            async def putter(w: int) -> None:
                i = 0
                while not stop.is_set() and i < 400:     # the scan below sees them all
                    key = b"stream/%02d/%06d" % (w, i)
                    i += 1
                    try:
                        await c.put(key, b"v")
                    except OutcomeUnknown:
                        put_unknown.add(key)
                    except NotApplied:
                        put_not_applied.add(key)
                    else:
                        put_ok.add(key)

            async def killer() -> None:
                deadline = time.monotonic() + 30
                while sum(acked) < 100:
                    assert time.monotonic() < deadline, "no 100 increments before the kill"
                    await asyncio.sleep(0.005)
                await asyncio.get_running_loop().run_in_executor(None, cl.kill, old)
                kill_done.set()

            putters = [asyncio.ensure_future(putter(w)) for w in range(16)]
            await asyncio.gather(killer(), *(incr(w) for w in range(workers)))
            stop.set()
            await asyncio.gather(*putters)
            assert all(n >= 20 for n in after_kill), (after_kill, cl.report())
            assert c.retries > 0            # writes in flight at the kill were retried
            final = [int(await c.get(b"ctr/%d" % w)) for w in range(workers)]
            present = {k for k, _v in await c.scan(b"stream/")}
        return final, present

    final, present = run(main())
    print("acked", acked, "unknown", unknown, "final", final, "puts ok", len(put_ok),
          "not applied", len(put_not_applied), "unknown", len(put_unknown))
    for w in range(workers):
        # Every acknowledged increment is in the counter exactly once; an unknown one may
        # or may not be; a duplicated application would push the counter above the bound.
        assert acked[w] <= final[w] <= acked[w] + unknown[w], (w, acked, unknown, final)
    assert put_ok <= present
    assert not (put_not_applied & present)
    assert present <= put_ok | put_unknown
    assert cl.leader() != old


def test_timeouts_fire_when_the_leader_is_stopped(cluster_factory):
    cl = cluster_factory()
    lead = cl.leader()
    with Client(cl.endpoints(), timeout=1.0) as c:
        c.put(b"stop/a", b"1")
    cl.pause(lead)
    try:
        only = [cl.node(lead).client_addr]
        with Client(only, timeout=0.3, deadline=1.0) as c:
            with pytest.raises(Timeout) as ei:
                c.put(b"stop/a", b"2")
            assert isinstance(ei.value, OutcomeUnknown)
            with pytest.raises(Timeout):
                c.get(b"stop/a")
        # With every endpoint, the client finds the new leader once one is elected.
        with Client(cl.endpoints(), timeout=0.5, deadline=15.0) as c:
            c.put(b"stop/b", b"1")
            assert c.get(b"stop/b") == b"1"
            assert c.leader() != cl.node(lead).client_addr
    finally:
        cl.resume(lead)
    with Client(cl.endpoints()) as c:
        assert c.get(b"stop/b") == b"1"
        # stop/a is 1, or 2 if the timed-out put was applied after all (its outcome was
        # unknown): either is allowed.
        assert c.get(b"stop/a") in (b"1", b"2")


def test_busy_writes_are_not_applied(cluster_factory):
    cl = cluster_factory(tuning={"max_pending": 2})
    cl.leader()

    async def main():
        async with AsyncClient(cl.endpoints()) as c:
            await c.put(b"busy/warm", b"1")     # finds the leader, registers the session
            c.retry = RetryPolicy(max_attempts=1)   # then: no retry, so Busy surfaces
            results = await asyncio.gather(
                *(c.put(b"busy/%03d" % i, b"v") for i in range(200)), return_exceptions=True)
            kinds = {type(r).__name__ for r in results}
            assert "Busy" in kinds, kinds
            for i, r in enumerate(results):
                got = await c.get(b"busy/%03d" % i)
                if r is None:
                    assert got == b"v"                    # acknowledged: applied
                elif isinstance(r, NotApplied):
                    assert got is None, (i, r)            # Busy: certainly not applied
                else:
                    assert isinstance(r, OutcomeUnknown), r
    run(main())


def test_expired_session_is_replaced_and_keepalives_keep_one_alive(cluster_factory):
    cl = cluster_factory(tuning={"session_timeout_ms": 400})
    cl.leader()

    async def main():
        eps = cl.endpoints()
        async with AsyncClient(eps, keepalive_interval=None) as idle, \
                AsyncClient(eps, keepalive_interval=0.05) as kept, \
                AsyncClient(eps, keepalive_interval=None) as other:
            await idle.put(b"ses/idle", b"0")
            await kept.put(b"ses/kept", b"0")
            s_idle, s_kept = idle.session_id, kept.session_id
            # Leader time passes through other clients' writes; the idle session expires.
            # Its next write is refused SESSION_EXPIRED on a first attempt (certainly not
            # applied), so the client moves it to a new session: it succeeds.
            deadline = time.monotonic() + 20
            n = 0
            while idle.session_id == s_idle:
                assert time.monotonic() < deadline, "the idle session never expired"
                await other.put(b"ses/clock", b"%d" % n)
                await asyncio.sleep(0.05)
                if n % 20 == 19:           # idle for well over the session timeout
                    await idle.put(b"ses/idle", b"%d" % n)
                n += 1
            assert await idle.get(b"ses/idle") == b"%d" % (n - 1)
            # The session with keep-alives outlived it.
            await kept.put(b"ses/kept", b"1")
            assert kept.session_id == s_kept
    run(main())
