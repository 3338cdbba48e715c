"""Property test: random operation sequences on the WAL (and the memory store) against the
plain model of conftest.py, with clean reopens and crashes that lose what was not synced.

Specification: base.py's semantics; a crash keeps everything synced and a prefix of whole
writes after it (a rotation may have made part of the unsynced writes durable).
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from fastraft.raft.messages import EntryBatch, HardState, SnapshotMeta
from fastraft.storage import MemoryStore, WalStore

OPS = ["append", "append", "append", "hard_state", "mark", "compact", "sync", "reopen",
       "crash"]


def check_same(store, model, note):
    assert (store.first_index, store.last_index) == (model.first_index, model.last_index), note
    assert store.entries(store.first_index, store.last_index + 1) == model.log, note
    assert store.term(model.base) == model.base_term, note
    assert store.hard_state == model.hs, note
    assert store.snapshot_mark == model.mark, note
    assert store.recovered() == model.recovered(), note


@st.composite
def configurations(draw):
    """``(voters, outgoing, learners, context)`` of a snapshot meta: joint or not, learners
    disjoint from both voter sets, a context of any bytes."""
    voters = draw(st.frozensets(st.integers(1, 9), min_size=1, max_size=4))
    outgoing = draw(st.frozensets(st.integers(1, 9), max_size=4))
    learners = draw(st.frozensets(st.integers(1, 12), max_size=3)) - voters - outgoing
    context = draw(st.binary(max_size=64))
    return voters, outgoing, learners, context


def step(data, s, m, kind=None):
    """Apply one state-changing operation (drawn, or ``kind``) to store ``s`` and model ``m``."""
    if kind is None:
        kind = data.draw(st.sampled_from(["append", "append", "hard_state", "mark", "compact"]))
    if kind == "append":
        lo = max(m.mark_index, m.base) + 1
        first = data.draw(st.integers(lo, m.last_index + 1))
        term = m.term(first - 1)
        bumps = data.draw(st.lists(st.integers(0, 1), max_size=5))
        size = data.draw(st.sampled_from([0, 30, 120]))
        entries = []
        for k, bump in enumerate(bumps):
            term += bump
            entries.append((term, b"%d@%d" % (first + k, term) + b"." * size))
        b = EntryBatch(first, entries)
        s.append(b)
        m.append(b)
    elif kind == "hard_state":
        hs = HardState(*data.draw(st.tuples(st.integers(0, 50), st.integers(0, 5),
                                            st.integers(0, 50))))
        s.save_hard_state(hs)
        m.save_hard_state(hs)
    elif kind == "mark":
        lo = max(m.mark_index, m.base)
        i = data.draw(st.integers(lo, m.last_index + 3))
        same = i <= m.last_index and data.draw(st.booleans())
        t = m.term(i) if same else m.term(m.last_index) + data.draw(st.integers(0, 2))
        meta = SnapshotMeta(i, t, *data.draw(configurations()))
        s.save_snapshot_mark(meta)
        m.save_snapshot_mark(meta)
    else:
        i = data.draw(st.integers(0, m.mark_index))
        s.compact(i)
        m.compact(i)


@settings(max_examples=120)
@given(data=st.data())
def test_wal_matches_the_model(tmp_path_factory, sh, data):
    wal_dir = str(tmp_path_factory.mktemp("wal"))
    seg = data.draw(st.sampled_from([120, 400, 10**6]), label="segment_size")
    s = WalStore.open(wal_dir, segment_size=seg)
    m = sh.Model()
    since_sync = [m.copy()]           # op-boundary states a crash may come back to
    for n in range(data.draw(st.integers(1, 40), label="ops")):
        op = data.draw(st.sampled_from(OPS))
        note = f"op {n}: {op}"
        if op == "sync":
            s.sync()
            since_sync = [m.copy()]
        elif op == "reopen":
            s.close()
            s = WalStore.open(wal_dir, segment_size=seg)
            m.restart()
            since_sync = [m.copy()]
        elif op == "crash":
            last = os.path.join(wal_dir, s.segment_names()[-1])
            synced = s._synced_size
            sh.crash(s)
            os.truncate(last, synced)
            s = WalStore.open(wal_dir, segment_size=seg)
            got = s.recovered()
            matches = [c for c in since_sync if c.recovered() == got]
            assert matches, f"{note}: recovered a state no prefix of writes gives: {got}"
            m = matches[-1].copy()
            m.restart()
            since_sync = [m.copy()]
        else:
            step(data, s, m, op)
            if op == "compact":         # compaction syncs first
                since_sync = [m.copy()]
            else:
                since_sync.append(m.copy())
        check_same(s, m, note)
    s.close()
    s = WalStore.open(wal_dir, segment_size=seg)
    m.restart()
    check_same(s, m, "final reopen")
    s.close()


@settings(max_examples=60)
@given(data=st.data())
def test_memory_store_matches_the_model(sh, data):
    s, m = MemoryStore(), sh.Model()
    for _ in range(data.draw(st.integers(1, 40))):
        step(data, s, m)
        check_same(s, m, "memory")
