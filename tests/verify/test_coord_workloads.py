"""The watch, lock and lease workloads of ``python -m fastraft.verify``
(fastraft.verify.coord_workloads): their pieces against stand-in clients (the lock's fence
check, the recording of the lock's lease renewals, the watchers' plan, the end-of-run items
the replicas are compared on), then one short run of real nodes with the three workloads
under kill -9 and a paused leader: every check passes, the paused lock holder's stale write
was refused by the fence check, watch streams reached the end marker, leases were judged
both ways."""

from __future__ import annotations

import asyncio
import json
import random

from fastraft.errors import NotLeader, Timeout
from fastraft.verify.__main__ import main
from fastraft.verify.coord_checks import check_lock, counter_value
from fastraft.verify.coord_workloads import (COUNTER, LOCK_NAME, WATCH_PREFIX, LockWorkload,
                                             WatchWorkload)
from fastraft.verify.history import HistoryWriter, to_operations
from fastraft.verify.workloads import state_items


class _Held:
    def __init__(self, fence, lease=7):
        self.fence, self.lease = fence, lease
        self.lost = asyncio.Event()


class _Store:
    """A stand-in client holding the counter: get_item and cas_revision, with scripted
    interference (``before_cas``: values written by 'others' just before our cas)."""

    def __init__(self, value=None, rev=0, before_cas=(), errors=()):
        self.value, self.rev = value, rev
        self.before_cas = list(before_cas)
        self.errors = list(errors)
        self.cas_calls = 0

    async def get_item(self, key):
        if self.errors:
            raise self.errors.pop(0)
        return None if self.value is None else (key, self.value, self.rev)

    async def cas_revision(self, key, rev, new):
        self.cas_calls += 1
        if self.before_cas:
            self.value, self.rev = self.before_cas.pop(0), self.rev + 1
        if rev != self.rev:
            return False, self.rev
        self.value, self.rev = new, self.rev + 1
        return True, self.rev


def _lock_workload(h):
    return LockWorkload(["127.0.0.1:1"], h, random.Random(1), 2, 1.0, 3.0, ttl=1.0)


def _write(store, fence, count):
    h = HistoryWriter(None, keep=True)
    lw = _lock_workload(h)
    asyncio.run(lw._write(store, _Held(fence), count, 1, "p"))
    comp = [e for e in h.events if e.f == "lock_write" and e.type != "invoke"]
    return lw, comp[-1]


def test_lock_write_is_refused_below_the_stored_fence():
    store = _Store(counter_value(5, 110), rev=40)
    _, comp = _write(store, 100, 3)
    assert (comp.type, comp.value) == ("ok", ("refused", 110))
    assert store.cas_calls == 0 and store.value == counter_value(5, 110)
    _, comp = _write(_Store(counter_value(5, 100), rev=40), 100, 3)     # its own: refused
    assert comp.value == ("refused", 100)


def test_lock_write_accepted_above_the_stored_fence_and_rechecked_on_a_conflict():
    store = _Store(counter_value(5, 90), rev=40)
    lw, comp = _write(store, 100, 6)
    assert comp.value == ("accepted", 41) and store.value == b"6:100"
    assert lw.max_acked_fence == 100
    # another holder writes between our check and our cas: the cas fails, the check runs
    # again and now refuses (the stored fence is above ours)
    store = _Store(counter_value(5, 90), rev=40, before_cas=[counter_value(6, 120)])
    _, comp = _write(store, 100, 6)
    assert comp.value == ("refused", 120) and store.value == b"6:120"
    # the count written is the one read before (non-atomic read-modify-write): a
    # conflict by a lower fence is re-checked and then overwritten
    store = _Store(counter_value(5, 90), rev=40, before_cas=[counter_value(6, 95)])
    _, comp = _write(store, 100, 6)
    assert comp.value == ("accepted", 42) and store.value == b"6:100"


def test_lock_write_errors():
    _, comp = _write(_Store(None, errors=[NotLeader(), Timeout()]), 100, 1)
    assert comp.value == ("accepted", 1)                 # reads retried
    _, comp = _write(_Store(b"junk", rev=3), 100, 1)
    assert (comp.type, comp.value) == ("fail", "malformed")

    class _Ambiguous(_Store):
        async def cas_revision(self, key, rev, new):
            raise Timeout()

    _, comp = _write(_Ambiguous(None), 100, 1)
    assert (comp.type, comp.value) == ("info", "Timeout")


def test_lock_clients_record_their_leases(monkeypatch):
    """The recipe's grant and keep-alives go through the worker's client: recorded with
    their send times, so the check can time each lease's sure life."""
    from fastraft.client import AsyncClient

    async def grant(self, ttl, *, deadline=None):
        return 77

    async def keepalive(self, lease, *, deadline=None):
        raise Timeout()

    monkeypatch.setattr(AsyncClient, "lease_grant", grant)
    monkeypatch.setattr(AsyncClient, "lease_keepalive", keepalive)
    h = HistoryWriter(None, keep=True)
    lw = _lock_workload(h)

    async def go():
        c = lw.new_client(3)
        try:
            assert await c.lease_grant(2.0) == 77
            try:
                await c.lease_keepalive(77, deadline=0.5)
            except Timeout:
                pass
        finally:
            await c.close()

    asyncio.run(go())
    pairs = to_operations(h.events).other
    assert [(i.f, i.key, i.value, c.type, c.value) for i, c in pairs] == [
        ("lock_grant", LOCK_NAME, 2.0, "ok", 77), ("lock_keepalive", 77, None, "info",
                                                   "Timeout")]


def test_watch_plan_and_end_items():
    w = WatchWorkload(["127.0.0.1:1"], HistoryWriter(None), random.Random(1), 2, 1.0, 3.0,
                      watchers=6, duration=40)
    assert w.plan() == [(0, True), (0, False), (10, True), (10, False), (20, True),
                        (20, False)]
    h = HistoryWriter(None, keep=True)
    for p, f, key in [("a", "watch_put", WATCH_PREFIX + b"k0"), ("b", "lock_write", COUNTER),
                      ("c", "lease_put", b"verify/lease/0/5/0"), ("d", "insert", b"s/0/00000/1")]:
        h.invoke(p, f, key, None)
        h.complete(p, "ok")
    assert state_items(to_operations(h.events).other) == [
        ("scan", b"s/0/00000/"), ("scan", WATCH_PREFIX), ("get", COUNTER)]


def test_lock_check_reads_what_the_workload_records():
    """The workload's records, end to end through the history, make a passing check."""
    h = HistoryWriter(None, keep=True)
    lw = _lock_workload(h)
    h.invoke("g", "lock_grant", LOCK_NAME, 1.0)
    h.ok("g", 7)
    h.invoke("p", "lock_acquire", LOCK_NAME, None)
    lw._done("p", "ok", 1, (100, 7))
    asyncio.run(lw._write(_Store(None), _Held(100), 1, 1, "p"))
    h.invoke("r", "lock_release", LOCK_NAME, (100, 7, False))
    h.ok("r", None)
    res = check_lock(to_operations(h.events).other, b"1:100")
    assert res.ok and res.accepted == 1 and res.sections == 1, res.problems


def test_watch_lock_lease_under_kills_and_pauses(tmp_path, capsys):
    """A short run of the three workloads under kill -9 and a paused node: every check
    passes; the holder that paused past its TTL had its stale write refused."""
    out = tmp_path / "run"
    code = main(["--nemesis", "kill,pause", "--workload", "watch,lock,lease", "--duration",
                 "8", "--nodes", "3", "--seed", "11", "--out", str(out), "--quiet", "0.4,0.8",
                 "--fault", "0.7,1.2", "--recover", "2", "--no-plot", "--lock-ttl", "1",
                 "--lock-pause-every", "1", "--lease-ttl", "1,1.5"])
    text = capsys.readouterr().out
    print(text)
    assert "verdict: OK" in text and code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"] == {"watch": "ok", "lock": "ok", "lease": "ok",
                                   "membership": "ok", "replicas": "ok",
                                   "node_anomalies": "ok"}
    assert summary["faults"].get("kill", 0) >= 1 and summary["faults"].get("pause", 0) >= 1
    watch, lock, lease = summary["watch"], summary["lock"], summary["lease"]
    assert watch["acked"] > 100 and watch["reached_end"] >= 4 and watch["stalled"] == []
    assert lock["accepted"] > 10 and lock["final_count"] >= lock["accepted"] - lock["late"]
    assert lock["pauses"] >= 1 and lock["paused_refused"] >= 1, lock
    assert lease["kept_checked"] >= 1 and lease["ended_checked"] >= 1, lease
    streams = [json.loads(li) for li in (out / "watch-streams.jsonl").read_text().splitlines()]
    assert len(streams) >= 4 and all(s["events"] for s in streams)
    for what in ("watch: OK", "lock: OK", "lease: OK"):
        assert what in text
