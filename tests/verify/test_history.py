"""Tests of history recording (fastraft.verify.history): JSON-lines round trips, concurrent
appends from threads and asyncio tasks, and conversion into checker operations."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastraft.verify.linearizability import OK, VIOLATION, check, check_stale_reads
from fastraft.verify.history import (
    Event,
    HistoryWriter,
    decode_value,
    encode_value,
    read_history,
    to_operations,
)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.5
        return self.t


def test_round_trip_and_conversion(tmp_path):
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=FakeClock()) as h:
        h.invoke(1, "write", b"k", b"v1")
        h.invoke(2, "read", b"k")
        h.ok(1)
        h.ok(2, b"v1")
        h.invoke(1, "cas", b"k", (b"v1", b"v2"))
        h.invoke(3, "stale_read", b"k")
        h.ok(1, True)
        h.ok(3, None)
        h.invoke(4, "write", b"k", b"\xff\x00")   # not UTF-8
        h.info(4)
        h.invoke(5, "write", b"k", b"v9")
        h.fail(5)
        h.invoke(6, "add", "set", 17)
        h.ok(6)
        h.invoke(7, "write", b"k", b"v3")         # never completed
    events = read_history(path)
    assert events == h.events
    assert len(events) == 15
    assert [e.time for e in events] == sorted(e.time for e in events)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"process": 1, "type": "invoke", "f": "write", "key": {"b": "k"},
                     "value": {"b": "v1"}, "time": 0.5}
    ops = to_operations(events)
    lin = ops.linearizable
    assert [(o.f, o.status) for o in lin] == [
        ("write", "ok"), ("read", "ok"), ("cas", "ok"), ("write", "info"), ("write", "fail"),
        ("write", "info")]
    assert lin[1].output == b"v1" and lin[1].call < lin[0].ret
    assert lin[2].value == (b"v1", b"v2") and lin[2].output is True
    assert lin[3].value == b"\xff\x00" and lin[3].ret == math.inf
    assert lin[5].value == b"v3" and lin[5].ret == math.inf
    assert [o.index for o in lin] == [0, 1, 4, 8, 10, 14]
    assert len(ops.stale_reads) == 1 and ops.stale_reads[0].output is None
    assert len(ops.other) == 1 and ops.other[0][0].f == "add" and ops.other[0][1].type == "ok"
    assert check(lin).verdict == OK
    assert check_stale_reads(ops.stale_reads, lin).ok


def test_writer_rules():
    h = HistoryWriter()
    h.invoke(1, "read", "k")
    with pytest.raises(ValueError):
        h.invoke(1, "read", "k")          # one operation in flight per process
    with pytest.raises(ValueError):
        h.ok(2)                           # nothing in flight
    with pytest.raises(ValueError):
        h.complete(1, "maybe")
    with pytest.raises(TypeError):
        h.invoke(3, "write", "k", object())
    assert set(h.in_flight) == {1}
    h.close()
    with pytest.raises(ValueError):
        h.ok(1)


def test_reader_rules(tmp_path):
    p = tmp_path / "h.jsonl"
    good = Event(1, "invoke", "read", "k", None, 0.0).to_json()
    p.write_text(good + "\n" + '{"process": 1, "type": "ok", "f": "re')   # torn last line
    assert len(read_history(p)) == 1
    p.write_text('{"process": 1}\n' + good + "\n")
    with pytest.raises(ValueError, match=r"h.jsonl:1"):
        read_history(p)
    bad = [Event(1, "ok", "read", "k", None, 0.0)]
    with pytest.raises(ValueError):
        to_operations(bad)
    bad = [Event(1, "invoke", "read", "k", None, 0.0), Event(1, "invoke", "read", "k", None, 1)]
    with pytest.raises(ValueError):
        to_operations(bad)


def test_threads_and_tasks_append_safely(tmp_path):
    path = tmp_path / "h.jsonl"
    h = HistoryWriter(path)
    lock = threading.Lock()
    value = [0]

    def worker(p):
        for _ in range(200):
            h.invoke(p, "write", "k", None)
            with lock:
                value[0] += 1
            h.ok(p)

    async def task(p):
        for _ in range(200):
            h.invoke(p, "read", "k")
            await asyncio.sleep(0)
            h.ok(p, None)

    async def tasks():
        await asyncio.gather(*(task(100 + i) for i in range(4)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=lambda: asyncio.run(tasks())))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h.close()
    events = read_history(path)
    assert len(events) == 8 * 200 * 2
    assert [e.time for e in events] == sorted(e.time for e in events)
    ops = to_operations(events)
    assert len(ops.linearizable) == 8 * 200
    assert all(o.status == "ok" for o in ops.linearizable)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(v=_values)
def test_values_round_trip(v):
    assert decode_value(json.loads(json.dumps(encode_value(v)))) == v


def test_history_of_a_violation(tmp_path):
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=FakeClock()) as h:
        h.invoke(1, "write", "k", 1)
        h.ok(1)
        h.invoke(1, "write", "k", 2)
        h.ok(1)
        h.invoke(2, "read", "k")
        h.ok(2, 1)
    res = check(to_operations(read_history(path)).linearizable)
    assert res.verdict == VIOLATION
