"""The SQLite state machine answers exactly like the in-memory one, survives a reopen with
nothing replayed, and exchanges snapshots with it (one stream format)."""

import random

import pytest

from fastraft import codec
from fastraft.raft import SnapshotMeta
from fastraft.statemachine.sqlite_machine import SqliteStateMachine
from fastraft.statemachine import KVStateMachine
from fastraft.storage.snapshot import SnapshotStore
from fastraft.storage.sqlite import SqliteStore

TIMEOUT = 1_000


def _commands(seed: int, n: int):
    """A random committed log: registrations, writes of live and dead sessions, keepalives,
    duplicates and no-ops, with timestamps that let some sessions expire."""
    rng = random.Random(seed)
    ts = 0
    sessions = []
    seqs = {}
    out = []
    for index in range(1, n + 1):
        ts += rng.choice([0, 1, 5, 50, 400])
        r = rng.random()
        if r < 0.05:
            out.append(b"")
            continue
        if not sessions or r < 0.12:
            out.append(codec.encode_command([codec.CMD_REGISTER, ts]))
            sessions.append(index)
            seqs[index] = 0
            continue
        sid = rng.choice(sessions + [9999])
        if r < 0.2:
            out.append(codec.encode_command([codec.CMD_KEEPALIVE, ts, sid,
                                             seqs.get(sid, 0) + 1]))
            continue
        seq = seqs.get(sid, 0)
        if rng.random() < 0.85 or seq == 0:
            seq += 1
            seqs[sid] = seq
        first = max(1, seq - rng.randint(0, 3))
        key = b"k%d" % rng.randint(0, 12)
        kind = rng.choice([codec.CMD_PUT, codec.CMD_DELETE, codec.CMD_CAS])
        if kind == codec.CMD_PUT:
            cmd = [kind, ts, sid, seq, first, key, b"v%d" % index]
        elif kind == codec.CMD_DELETE:
            cmd = [kind, ts, sid, seq, first, key]
        else:
            exp = rng.choice([None, b"v%d" % rng.randint(1, index)])
            cmd = [kind, ts, sid, seq, first, key, exp, b"c%d" % index]
        out.append(codec.encode_command(cmd))
    return out


def _state(m):
    sessions = [(s.id, s.last_active, s.floor, sorted(s.responses.items()))
                for s in m.sessions.sessions()]
    return m.applied_index, m.clock, m.scan(b"", 10_000), sessions


@pytest.mark.parametrize("seed", range(6))
def test_same_answers_and_state_as_the_memory_machine_across_reopens(tmp_path, seed):
    log = _commands(seed, 400)
    mem = KVStateMachine(TIMEOUT, max_sessions=8)
    path = tmp_path / "db"
    store = SqliteStore(path)
    sq = SqliteStateMachine(store, TIMEOUT, max_sessions=8)
    rng = random.Random(seed)
    i = 0
    while i < len(log):
        n = rng.randint(1, 20)
        batch = [(1, p) for p in log[i:i + n]]
        assert sq.apply_entries(i + 1, batch) == mem.apply_entries(i + 1, batch), \
            f"seed {seed}: answers differ in batch at {i + 1}"
        i += n
        store.sync()
        if rng.random() < 0.3:          # restart: reopen and rebuild from the database
            store.close()
            store = SqliteStore(path)
            sq = SqliteStateMachine(store, TIMEOUT, max_sessions=8)
        assert _state(sq) == _state(mem), f"seed {seed}: state differs after index {i}"
    store.close()


def test_unsynced_batch_is_lost_whole_and_replayed(tmp_path):
    log = _commands(7, 60)
    store = SqliteStore(tmp_path / "db")
    sq = SqliteStateMachine(store, TIMEOUT)
    sq.apply_entries(1, [(1, p) for p in log[:30]])
    store.sync()
    sq.apply_entries(31, [(1, p) for p in log[30:]])
    # A crash before the sync: the open transaction is rolled back.
    store._conn.rollback()
    store._conn.close()
    store._conn = None
    store._closed = True
    again = SqliteStateMachine(SqliteStore(tmp_path / "db"), TIMEOUT)
    assert again.applied_index == 30
    mem = KVStateMachine(TIMEOUT)
    mem.apply_entries(1, [(1, p) for p in log[:30]])
    assert _state(again) == _state(mem)
    assert again.apply_entries(31, [(1, p) for p in log[30:]]) == \
        mem.apply_entries(31, [(1, p) for p in log[30:]])


def test_snapshots_cross_between_the_two_machines(tmp_path):
    log = _commands(3, 300)
    mem = KVStateMachine(TIMEOUT)
    mem.apply_entries(1, [(1, p) for p in log])
    store = SqliteStore(tmp_path / "a.db")
    sq = SqliteStateMachine(store, TIMEOUT)
    sq.install(mem.snapshot_chunks())
    store.sync()
    assert _state(sq) == _state(mem)
    # ... and back: a snapshot file from a copy of the database restores to the same state.
    snaps = SnapshotStore(tmp_path / "snap")
    store.backup_to(tmp_path / "copy.db")
    copy = SqliteStore(tmp_path / "copy.db")
    meta, path = SqliteStateMachine.snapshot_from_copy(
        copy, snaps, SnapshotMeta(300, 1, frozenset({1})), TIMEOUT)
    copy.close()
    assert meta.index == 300
    back = KVStateMachine.restore(snaps.read_chunks(path))
    assert _state(back) == _state(mem)
    store.close()
