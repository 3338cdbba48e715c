"""The SQLite state machine answers exactly like the in-memory one (revisions, leases, change
events and the lease term included), survives a reopen with nothing replayed, migrates a
database of schema version 2, and exchanges snapshots with the in-memory machine (one stream
format).

Specification: the module docstrings of fastraft/statemachine/sqlite_machine.py,
fastraft/statemachine/machine.py and fastraft/storage/sqlite.py (schema versions).
"""

from __future__ import annotations

import random
import sqlite3

import pytest

from fastraft import codec
from fastraft.errors import CorruptRecordError
from fastraft.raft import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.restorer import UNKNOWN_REVISION
from fastraft.statemachine.sessions import Session
from fastraft.statemachine.sqlite_machine import SqliteStateMachine, encode_session
from fastraft.storage import sqlite as sqlite_store
from fastraft.storage.snapshot import SnapshotStore
from fastraft.storage.sqlite import SCHEMA_VERSION, SqliteStore
from fastraft_test_commandlog import TIMEOUT, random_log, random_ops  # tests/conftest.py

MAX_SESSIONS = 8
MAX_LEASES = 2


# -- a random committed log (tests/commandlog.py, shared with tests/statemachine) ----------------

def _cmd(*fields) -> bytes:
    return codec.encode_command(list(fields))


def _random_log(seed: int, n: int) -> list[tuple[int, bytes]]:
    """``n`` entries of ``commandlog.random_log`` drawn from ``seed`` (longer TTLs than the
    in-memory tests use: fewer leases expire before their keys are written)."""
    return random_log(random_ops(random.Random(seed), n), ttl_unit=150)


def _state(m):
    """Everything two machines with the same history must agree on."""
    sessions = [(s.id, s.last_active, s.floor, list(s.responses.items()))
                for s in m.sessions.sessions()]
    leases = [(x.id, x.ttl, x.deadline, sorted(x.keys)) for x in m.leases.leases()]
    return (m.scan_items(b"", 1 << 30), sessions, leases, sorted(m.leases.key_lease.items()),
            m.applied_index, m.clock, m.session_timeout_ms, m.lease_term,
            m.next_lease_deadline(), len(m.kv), m.stats())


def _open(path) -> tuple[SqliteStore, SqliteStateMachine]:
    store = SqliteStore(path)
    return store, SqliteStateMachine(store, TIMEOUT, MAX_SESSIONS, MAX_LEASES)


def _mem() -> KVStateMachine:
    return KVStateMachine(TIMEOUT, MAX_SESSIONS, MAX_LEASES)


def _reopen(store, path):
    store.close()
    return _open(path)


def test_the_log_exercises_every_command():
    kinds = set()
    answers = set()
    m = _mem()
    for index, (term, payload) in enumerate(_random_log(0, 600), 1):
        if payload and payload[0] != 0x91:
            kinds.add(codec.decode_command(payload)[0])
        a = m.apply(index, payload, term)
        if a is not None:
            answers.add(a[0])
    assert kinds == {codec.CMD_REGISTER, codec.CMD_PUT, codec.CMD_DELETE, codec.CMD_CAS,
                     codec.CMD_KEEPALIVE, codec.CMD_CAS_REV, codec.CMD_LEASE_GRANT,
                     codec.CMD_LEASE_REVOKE, codec.CMD_LEASE_KEEPALIVE, codec.CMD_TICK}
    assert {codec.ST_OK, codec.ST_NO_LEASE, codec.ST_SESSION_EXPIRED, codec.ST_BUSY,
            codec.ST_INVALID, codec.ST_ERROR} <= answers
    assert m.lease_term > 1


# -- the same answers, state and events across reopens -----------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_same_answers_and_state_as_the_memory_machine_across_reopens(tmp_path, seed):
    log = _random_log(seed, 500)
    mem = _mem()
    path = tmp_path / "db"
    store, sq = _open(path)
    rng = random.Random(seed)
    i = 0
    expired = granted = 0
    while i < len(log):
        n = rng.randint(1, 20)
        batch = log[i:i + n]
        mem.events, sq.events = [], []
        if n == 1 and rng.random() < 0.5:               # the single-entry path
            term, payload = batch[0]
            got, want = sq.apply(i + 1, payload, term), mem.apply(i + 1, payload, term)
        else:
            got, want = sq.apply_entries(i + 1, batch), mem.apply_entries(i + 1, batch)
        assert got == want, f"seed {seed}: answers differ in the batch at {i + 1}"
        assert sq.events == mem.events, f"seed {seed}: events differ in the batch at {i + 1}"
        expired += sum(1 for e in mem.events if e[1] == 1)
        granted += len(mem.leases)
        i += n
        store.sync()
        if rng.random() < 0.3:              # a restart: reopen and rebuild from the database
            store, sq = _reopen(store, path)
        assert _state(sq) == _state(mem), f"seed {seed}: state differs after index {i}"
        for k in (b"k0", b"k3", b"nope"):
            assert sq.get_item(k) == mem.get_item(k) and sq.get(k) == mem.get(k)
        assert sq.scan_items(b"k", 2) == mem.scan_items(b"k", 2)
    assert expired and granted              # the log did exercise leases and deletions
    store.close()


def test_a_reopen_in_the_middle_of_live_leases_expires_them_at_the_same_index(tmp_path):
    put = codec.CMD_PUT
    log = [(1, _cmd(codec.CMD_REGISTER, 1000)),
           (1, _cmd(codec.CMD_LEASE_GRANT, 1000, 1, 1, 1, 500)),            # lease 2
           (1, _cmd(put, 1000, 1, 2, 1, b"a", b"1", 2)),
           (1, _cmd(put, 1000, 1, 3, 1, b"b", b"2", 2)),
           (1, _cmd(put, 1000, 1, 4, 1, b"c", b"3")),
           (2, _cmd(codec.CMD_LEASE_KEEPALIVE, 1200, 2)),       # a new term: refreshed too
           (2, _cmd(codec.CMD_TICK, 1650)),
           (2, _cmd(codec.CMD_TICK, 1700)),                     # 1200 + 500: expired here
           (2, _cmd(put, 1700, 1, 5, 1, b"d", b"4", 2))]        # the lease is gone
    mem = _mem()
    mem.events = []
    answers = [mem.apply(i, p, t) for i, (t, p) in enumerate(log, 1)]
    path = tmp_path / "db"
    store, sq = _open(path)
    events = []
    for i, (t, p) in enumerate(log, 1):
        sq.events = []
        assert sq.apply(i, p, t) == answers[i - 1]
        events += sq.events
        store.sync()
        store, sq = _reopen(store, path)
    assert _state(sq) == _state(mem)
    assert events == mem.events
    assert (8, 1, b"a", None) in events and (8, 1, b"b", None) in events
    assert answers[-1][0] == codec.ST_NO_LEASE
    assert sq.lease_term == 2 and len(sq.leases) == 0
    assert sq.get_item(b"c") == (b"3", 5)
    store.close()


def test_unsynced_batch_is_lost_whole_and_replayed(tmp_path):
    log = _random_log(7, 120)
    store = SqliteStore(tmp_path / "db")
    sq = SqliteStateMachine(store, TIMEOUT)
    sq.apply_entries(1, log[:60])
    store.sync()
    sq.apply_entries(61, log[60:])
    # A crash before the sync: the open transaction is rolled back.
    store._conn.rollback()
    store._conn.close()
    store._conn = None
    store._closed = True
    again = SqliteStateMachine(SqliteStore(tmp_path / "db"), TIMEOUT)
    assert again.applied_index == 60
    mem = KVStateMachine(TIMEOUT)
    mem.apply_entries(1, log[:60])
    assert _state(again) == _state(mem)
    assert again.apply_entries(61, log[60:]) == mem.apply_entries(61, log[60:])
    assert _state(again) == _state(mem)


def test_a_batch_refused_before_its_first_entry_writes_nothing(tmp_path):
    store, sq = _open(tmp_path / "db")
    sq.apply_entries(1, _random_log(1, 10))
    with pytest.raises(AssertionError, match="gap"):
        sq.apply_entries(20, [(1, b"")])
    assert store.applied_index() == 10 == sq.applied_index
    store.close()


# -- snapshots -------------------------------------------------------------------------------

def _copy_snapshot(store, tmp_path, index: int, term: int = 1) -> tuple[SnapshotStore, str]:
    snaps = SnapshotStore(tmp_path / "snap")
    store.backup_to(tmp_path / "copy.db")
    copy = SqliteStore(tmp_path / "copy.db")
    try:
        meta, path = SqliteStateMachine.snapshot_from_copy(
            copy, snaps, SnapshotMeta(index, term, frozenset({1})), TIMEOUT)
    finally:
        copy.close()
    assert meta.index == index
    return snaps, path


def _cut_with_leased_keys(log) -> int:
    """An index of ``log`` (the middle one of those) after which the state holds leases
    with keys attached."""
    m = _mem()
    cuts = []
    for i, (term, payload) in enumerate(log, 1):
        m.apply(i, payload, term)
        if m.leases.key_lease:
            cuts.append(i)
    assert cuts, "the log never attaches a key to a lease"
    return cuts[len(cuts) // 2]


@pytest.mark.parametrize("seed", [0, 2, 6])
def test_snapshots_cross_between_the_two_machines(tmp_path, seed):
    log = _random_log(seed, 400)
    cut = _cut_with_leased_keys(log)
    mem = _mem()
    mem.apply_entries(1, log[:cut])
    assert mem.leases.key_lease and mem.lease_term > 1
    store, sq = _open(tmp_path / "a.db")
    sq.apply_entries(1, log[:5])                    # replaced whole by the install
    sq.install(mem.snapshot_chunks(1000))
    store.sync()
    assert _state(sq) == _state(mem)
    store, sq = _reopen(store, tmp_path / "a.db")
    assert _state(sq) == _state(mem)
    # ... both go on alike from there ...
    mem.events, sq.events = [], []
    assert sq.apply_entries(cut + 1, log[cut:]) == mem.apply_entries(cut + 1, log[cut:])
    assert sq.events == mem.events
    store.sync()
    assert _state(sq) == _state(mem)
    # ... and back: a snapshot file from a copy of the database is the memory machine's
    # stream, byte for byte, and restores to the same state.
    snaps, path = _copy_snapshot(store, tmp_path, 400)
    assert b"".join(snaps.read_chunks(path)) == b"".join(mem.snapshot_chunks())
    back = KVStateMachine.restore(snaps.read_chunks(path), MAX_SESSIONS, MAX_LEASES)
    assert _state(back) == _state(mem)
    store.close()


def test_a_snapshot_from_a_copy_of_a_database_that_applied_the_log(tmp_path):
    log = _random_log(9, 400)
    log = log[:_cut_with_leased_keys(log)]
    mem = _mem()
    mem.apply_entries(1, log)
    store, sq = _open(tmp_path / "a.db")
    for lo in range(0, len(log), 37):
        sq.apply_entries(lo + 1, log[lo:lo + 37])
    store.sync()
    assert mem.leases.key_lease and mem.lease_term > 1
    snaps, path = _copy_snapshot(store, tmp_path, len(log))
    assert b"".join(snaps.read_chunks(path)) == b"".join(mem.snapshot_chunks())
    store.close()


def test_install_state_replaces_leases_and_lease_term(tmp_path):
    store, sq = _open(tmp_path / "a.db")
    sq.apply_entries(1, [(1, _cmd(codec.CMD_REGISTER, 1000)),
                         (3, _cmd(codec.CMD_LEASE_GRANT, 1000, 1, 1, 1, 9000)),
                         (3, _cmd(codec.CMD_PUT, 1000, 1, 2, 1, b"x", b"1", 2))])
    store.sync()
    assert sq.lease_term == 3 and 2 in sq.leases
    empty = KVStateMachine(TIMEOUT)
    empty.applied_index = 7
    sq.install_state(empty)
    store.sync()
    for reopen in (False, True):
        if reopen:
            store, sq = _reopen(store, tmp_path / "a.db")
        assert (len(sq.leases), sq.lease_term, sq.applied_index, sq.get(b"x")) == \
            (0, 0, 7, None)
        assert sq.next_lease_deadline() is None and store.lease_rows() == []
    store.close()


# -- the migration of a schema version 2 database ----------------------------------------------

#: The tables of schema version 2 as it shipped (before revisions and leases).
V2_SCHEMA = """
CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL,
                         vote INTEGER NOT NULL, commit_index INTEGER NOT NULL);
CREATE TABLE snapshot_mark (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL,
                            term INTEGER NOT NULL, voters TEXT NOT NULL,
                            outgoing TEXT NOT NULL, keep INTEGER NOT NULL,
                            learners TEXT NOT NULL DEFAULT '',
                            context BLOB NOT NULL DEFAULT x'');
CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE applied (id INTEGER PRIMARY KEY CHECK (id = 0), applied_index INTEGER NOT NULL);
CREATE TABLE sessions (sid INTEGER PRIMARY KEY, ord INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE TABLE machine (id INTEGER PRIMARY KEY CHECK (id = 0), clock INTEGER NOT NULL);
PRAGMA user_version = 2;
"""

V2_KEYS = [(b"a", b"1"), (b"b", b"2"), (b"c\xff", b"3")]


def _v2_database(path) -> Session:
    session = Session(2, 1500, 3, {3: (codec.ST_OK, None), 4: (codec.ST_OK, True)})
    conn = sqlite3.connect(path)
    conn.executescript(V2_SCHEMA)
    conn.execute("INSERT INTO hard_state VALUES (0, 1, 1, 40)")
    conn.execute("INSERT INTO applied VALUES (0, 40)")
    conn.execute("INSERT INTO machine VALUES (0, 1500)")
    conn.executemany("INSERT INTO kv VALUES (?, ?)", V2_KEYS)
    conn.execute("INSERT INTO sessions VALUES (2, 1, ?)", (encode_session(session),))
    conn.commit()
    conn.close()
    return session


def _format_1_stream(session: Session) -> list[bytes]:
    """The same state as a format 1 snapshot stream (what a WAL node of that release wrote)."""
    flat = [x for k, v in V2_KEYS for x in (k, v)]
    responses = [x for seq, (st, v) in session.responses.items() for x in (seq, st, v)]
    return [codec.pack([1, 40, 1500, TIMEOUT, len(V2_KEYS), 1]), codec.pack(flat),
            codec.pack([[session.id, session.last_active, session.floor, responses]]),
            codec.pack(["end", len(V2_KEYS), 1])]


def test_a_database_of_schema_version_2_is_migrated_with_revisions_unknown(tmp_path):
    path = str(tmp_path / "v2.db")
    session = _v2_database(path)
    store, sq = _open(path)
    conn = store._conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert {r[1] for r in conn.execute("PRAGMA table_info(kv)")} >= {"rev", "lease"}
    assert sqlite_store.UNKNOWN_REVISION == UNKNOWN_REVISION == 1
    assert sq.scan_items(b"", 10) == [(k, v, UNKNOWN_REVISION) for k, v in V2_KEYS]
    assert (len(sq.leases), sq.lease_term, sq.applied_index, sq.clock) == (0, 0, 40, 1500)
    # The migrated state is the state a format 1 snapshot of it restores to ...
    mem = KVStateMachine.restore(_format_1_stream(session), MAX_SESSIONS, MAX_LEASES)
    assert _state(sq) == _state(mem)
    # ... and both go on alike, across reopens, with leases and revision cas on old keys.
    put, cas_rev = codec.CMD_PUT, codec.CMD_CAS_REV
    more = [(2, _cmd(codec.CMD_LEASE_GRANT, 1600, 2, 5, 5, 300)),              # lease 41
            (2, _cmd(cas_rev, 1600, 2, 6, 5, b"a", 1, b"x", 41)),                # rev 1: ok
            (2, _cmd(cas_rev, 1600, 2, 7, 5, b"b", 0, b"x", 0)),                 # not absent
            (2, _cmd(put, 1650, 2, 8, 5, b"c\xff", b"y", 41)),
            (2, _cmd(codec.CMD_TICK, 2000))]                                     # expired
    for i, entry in enumerate(more, 41):
        mem.events, sq.events = [], []
        assert sq.apply_entries(i, [entry]) == mem.apply_entries(i, [entry])
        assert sq.events == mem.events
        store.sync()
        store, sq = _reopen(store, path)
        assert _state(sq) == _state(mem)
    assert sq.scan_items(b"", 10) == [(b"b", b"2", UNKNOWN_REVISION)]
    store.close()


def test_a_newer_schema_is_still_refused(tmp_path):
    path = str(tmp_path / "db")
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match="newer") as info:
        SqliteStore(path)
    assert str(SCHEMA_VERSION + 1) in str(info.value)


# -- damage ------------------------------------------------------------------------------------

def _leased_database(path):
    store, sq = _open(path)
    sq.apply_entries(1, [(1, _cmd(codec.CMD_REGISTER, 1000)),
                         (1, _cmd(codec.CMD_LEASE_GRANT, 1000, 1, 1, 1, 5000)),
                         (1, _cmd(codec.CMD_PUT, 1000, 1, 2, 1, b"k", b"v", 2))])
    store.sync()
    store.close()


@pytest.mark.parametrize("update, reason", [
    ("UPDATE leases SET deadline = 900", "lease 2"),
    ("UPDATE leases SET ttl = 0", "lease 2"),
    ("UPDATE leases SET id = 3", "attached to lease 2"),
    ("UPDATE leases SET ttl = 'x'", "table leases"),
    ("UPDATE kv SET lease = 5", "attached to lease 5"),
    ("UPDATE kv SET lease = 'x'", "not a lease id"),
])
def test_damaged_lease_rows_are_refused_at_open(tmp_path, update, reason):
    path = str(tmp_path / "db")
    _leased_database(path)
    conn = sqlite3.connect(path)
    conn.execute(update)
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    with pytest.raises(CorruptRecordError, match=reason):
        SqliteStateMachine(store, TIMEOUT)
    store.close()


@pytest.mark.parametrize("rev", ["'x'", "0", "99"])
def test_a_damaged_revision_is_refused_when_read(tmp_path, rev):
    path = str(tmp_path / "db")
    _leased_database(path)
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE kv SET rev = {rev}")
    conn.commit()
    conn.close()
    store, sq = _open(path)
    for read in (lambda: sq.get_item(b"k"), lambda: sq.scan_items(b"", 5),
                 lambda: store.kv_rev(b"k")):
        with pytest.raises(CorruptRecordError, match="revision"):
            read()
    store.close()


def test_apply_batch_refuses_revisions_outside_the_batch(tmp_path):
    store = SqliteStore(tmp_path / "db")
    for bad in [(b"k", b"v", 0, 0), (b"k", b"v", 6, 0), (b"k", b"v", 1, -1),
                (b"k", b"v", "1", 0)]:
        with pytest.raises((ValueError, TypeError)):
            store.apply_batch(5, [bad])
    store.apply_batch(5, [(b"k", b"v", 3, 9), (b"p", b"w")])
    assert store.kv_scan_items() == [(b"k", b"v", 3), (b"p", b"w", 5)]
    assert store.leased_keys() == [(b"k", 9)]
    store.close()
