"""The set and session checks (fastraft.verify.final_state) on hand-made histories: a lost
insert is reported, a double increment or a duplicated append is reported, unknown outcomes
are tolerated within their bounds. Plus the workers' shared scaffolding against a stand-in
client, the table of fault kinds, and the plot helpers (no matplotlib needed)."""

from __future__ import annotations

import asyncio
import random

from fastraft.errors import NotLeader, Timeout
from fastraft.verify.history import HistoryWriter, to_operations
from fastraft.verify.plot import fault_windows, latencies
from fastraft.verify.final_state import check_session, check_set, parse_tokens
from fastraft.verify.faults import make_faults
from fastraft.verify.schedule import FAULT_KINDS
from fastraft.verify.workloads import RegisterWorkload, SetWorkload, set_key, set_prefix


def _pairs(script):
    """script: (process, f, key, value, outcome) with outcome ok / fail / info / None
    (never completed)."""
    h = HistoryWriter(None, keep=True)
    for proc, f, key, value, outcome in script:
        h.invoke(proc, f, key, value)
        if outcome is not None:
            h.complete(proc, outcome)
    return to_operations(h.events).other


def test_set_nothing_lost():
    pairs = _pairs([("s1", "insert", b"a", None, "ok"), ("s2", "insert", b"b", None, "info"),
                    ("s3", "insert", b"c", None, "fail"), ("s4", "insert", b"d", None, None)])
    res = check_set(pairs, {b"a", b"b"})
    assert res.ok and res.acked == 1 and res.unknown == 2 and res.failed == 1
    assert res.unknown_present == 1 and "lost 0" in res.summary()


def test_set_lost_insert_reported():
    pairs = _pairs([("s1", "insert", b"a", None, "ok"), ("s2", "insert", b"b", None, "ok")])
    res = check_set(pairs, {b"a"})
    assert not res.ok and res.lost == [b"b"]
    assert "lost 1: b" in res.summary()
    assert res.to_json()["lost"] == ["b"]


def test_set_failed_insert_present_reported_and_unreadable_is_unknown():
    pairs = _pairs([("s1", "insert", b"a", None, "fail")])
    res = check_set(pairs, {b"a"})
    assert not res.ok and res.resurrected == [b"a"]
    res = check_set(pairs, None)
    assert not res.ok and not res.read and "UNKNOWN" in res.summary()


def test_set_keys_chunked_for_scans():
    assert set_key(3, 1234) == b"s/3/00001/1234"
    assert set_prefix(set_key(3, 1234)) == b"s/3/00001/"
    assert set_prefix(set_key(3, 999)) != set_prefix(set_key(3, 1000))


def test_session_counter_within_bounds():
    script = [(f"p{i}", "incr", b"c0", None, "ok") for i in range(5)]
    script += [("u1", "incr", b"c0", None, "info"), ("u2", "incr", b"c0", None, None),
               ("f1", "incr", b"c0", None, "fail")]
    pairs = _pairs(script)
    for final in (b"5", b"6", b"7"):         # unknowns tolerated: 5 <= final <= 7
        res = check_session(pairs, {b"c0": final})
        assert res.ok, res.problems
        assert res.incr[b"c0"]["acked"] == 5 and res.incr[b"c0"]["unknown"] == 2


def test_session_double_increment_reported():
    pairs = _pairs([("p1", "incr", b"c0", None, "ok"), ("p2", "incr", b"c0", None, "ok"),
                    ("p3", "incr", b"c0", None, "fail")])
    res = check_session(pairs, {b"c0": b"3"})
    assert not res.ok
    assert "applied twice" in res.problems[0]


def test_session_lost_increment_reported():
    pairs = _pairs([("p1", "incr", b"c0", None, "ok"), ("p2", "incr", b"c0", None, "ok")])
    res = check_session(pairs, {b"c0": b"1"})
    assert not res.ok and "lost increments" in res.problems[0]
    res = check_session(pairs, {b"c0": None})
    assert not res.ok


def test_session_append_exactly_once():
    pairs = _pairs([("p1", "append", b"a0.0", b"1.0", "ok"),
                    ("p2", "append", b"a0.0", b"2.0", "info"),
                    ("p3", "append", b"a0.0", b"3.0", "fail"),
                    ("p4", "append", b"a0.0", b"1.1", "ok")])
    assert check_session(pairs, {b"a0.0": b"1.0,1.1"}).ok
    assert check_session(pairs, {b"a0.0": b"1.0,2.0,1.1"}).ok     # unknown: present once
    res = check_session(pairs, {b"a0.0": b"1.0,1.1,1.0"})       # duplicate
    assert not res.ok and "more than once: 1.0" in res.problems[0]
    res = check_session(pairs, {b"a0.0": b"1.0,2.0,2.0,1.1"})   # unknown, but twice
    assert not res.ok
    res = check_session(pairs, {b"a0.0": b"1.0"})               # acknowledged 1.1 missing
    assert not res.ok and "missing: 1.1" in res.problems[0]
    res = check_session(pairs, {b"a0.0": b"1.0,3.0,1.1"})       # failed, yet present
    assert not res.ok and "never applied" in res.problems[0]
    res = check_session(pairs, {b"a0.0": b"1.0,9.9,1.1"})       # never sent
    assert not res.ok
    c = check_session(pairs, {b"a0.0": b"1.0,1.1"}).counts()
    assert c["append_acked"] == 2 and c["append_unknown"] == 1 and c["append_failed"] == 1
    assert not check_session(pairs, None).ok


def test_parse_tokens():
    assert parse_tokens(None) == [] and parse_tokens(b"") == []
    assert parse_tokens(b"1.0,2.3") == [b"1.0", b"2.3"]


def test_other_workloads_ignored_by_each_checker():
    pairs = _pairs([("s1", "insert", b"a", None, "ok"), ("p1", "incr", b"c0", None, "ok")])
    assert check_set(pairs, {b"a"}).attempted == 1
    res = check_session(pairs, {b"c0": b"1"})
    assert res.ok and list(res.incr) == [b"c0"] and not res.append


def test_plot_helpers():
    h = HistoryWriter(None, keep=True, clock=iter([0, 1, 3, 4, 4.5]).__next__)
    h.invoke(1, "read", b"k")
    h.ok(1, None)
    h.invoke(2, "insert", b"x")
    h.info(2, "Timeout")
    lat = latencies(h.events)
    assert lat == {"read": [(1, 2, "ok")], "insert": [(4, 0.5, "info")]}
    nem = [{"time": 1, "action": "start", "fault": "kill", "detail": "kill -9 [1]"},
           {"time": 2, "action": "heal", "fault": "kill", "detail": "kill -9 [1]"},
           {"time": 3, "action": "anomaly", "fault": "node", "detail": "x"}]
    assert fault_windows(nem) == [(1, 2, "kill", "kill -9 [1]")]


class _Client:
    """A stand-in AsyncClient: each call takes the next scripted outcome (an exception is
    raised, anything else returned)."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)

    async def _next(self):
        out = self.outcomes.pop(0)
        if isinstance(out, BaseException):
            raise out
        return out

    def get(self, key, stale=False):
        return self._next()

    def put(self, key, value):
        return self._next()

    def cas(self, key, expected, new):
        return self._next()


def test_workers_record_fail_info_ok_and_move_on_after_info():
    """One scaffolding for every workload: a NotApplied is a fail (same process id), an
    ambiguous error an info (a fresh process id: the operation may still be in flight)."""
    h = HistoryWriter(None, keep=True)
    reg = RegisterWorkload(["x:1"], h, random.Random(1), 1, 2, 1.0, 3.0)
    client = _Client([NotLeader(), Timeout(), None, None, None])

    async def steps():
        pid = reg._pid(0)
        pids = [pid]
        for _ in range(5):
            pid = await reg.step(client, 0, random.Random(3), pid, asyncio.Event())
            pids.append(pid)
        return pids

    pids = asyncio.run(steps())
    assert pids == [1, 1, 2, 2, 2, 2]            # numbers, renewed after the info only
    assert reg.counts == {"ok": 3, "fail": 1, "info": 1}
    assert reg.reasons == {"fail": {"NotLeader": 1}, "info": {"Timeout": 1}}
    assert [e.type for e in h.events if e.type != "invoke"] == ["fail", "info", "ok", "ok",
                                                                 "ok"]
    sw = SetWorkload(["x:1"], h, random.Random(1), 1, 1.0, 3.0)

    async def insert(outcome):
        return await sw.step(_Client([outcome]), 0, None, "p", asyncio.Event())

    assert asyncio.run(insert(None)) == "p"
    assert asyncio.run(insert(Timeout())) == "set-0-1"    # a fresh id after the info
    assert sw.counts == {"ok": 1, "fail": 0, "info": 1}
    assert [e.key for e in h.events if e.f == "insert" and e.type == "invoke"] == [
        set_key(0, 0), set_key(0, 1)]


def test_every_fault_kind_has_its_object():
    faults = make_faults()
    assert sorted(faults) == sorted(FAULT_KINDS)
    assert all(f.kind == k for k, f in faults.items())
    assert list(faults)[:2] == ["partition", "degrade"]    # heal order: the links first
