"""The whole snapshot meta (voters, outgoing, learners, context) in the SQLite backend and in
the runtime's backends: the migration of a version 1 database (before the mark's learners and
context; to the current schema, 3), damaged mark rows, the snapshot file made from a database
copy, and the backends' recovery.

Specification: the module docstrings of fastraft/storage/sqlite.py (schema versions),
fastraft/statemachine/sqlite_machine.py (``snapshot_from_copy``) and
fastraft/server/backends.py.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from fastraft.config import Tuning
from fastraft.errors import CorruptRecordError, LocalProtocolError
from fastraft.raft import Snapshot, SnapshotMeta
from fastraft.raft.confchange import ADD_LEARNER, Change, ConfChange, encode_conf_change
from fastraft.raft.messages import EntryBatch
from fastraft.server.backends import open_backend
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.sqlite_machine import SqliteStateMachine
from fastraft.storage.base import MAX_MARK_CONTEXT
from fastraft.storage.snapshot import SnapshotStore, read_meta
from fastraft.storage.sqlite import SCHEMA_VERSION, SqliteStore

FULL = SnapshotMeta(12, 3, frozenset({1, 2, 3}), frozenset({1, 2, 4}), frozenset({7, 9}),
                    b"\x00member book\xff" * 10)

#: The schema of version 1 (before learners and the context were stored), as it shipped.
V1_SCHEMA = """
CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL,
                         vote INTEGER NOT NULL, commit_index INTEGER NOT NULL);
CREATE TABLE snapshot_mark (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL,
                            term INTEGER NOT NULL, voters TEXT NOT NULL,
                            outgoing TEXT NOT NULL, keep INTEGER NOT NULL);
CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE applied (id INTEGER PRIMARY KEY CHECK (id = 0), applied_index INTEGER NOT NULL);
CREATE TABLE sessions (sid INTEGER PRIMARY KEY, ord INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE TABLE machine (id INTEGER PRIMARY KEY CHECK (id = 0), clock INTEGER NOT NULL);
PRAGMA user_version = 1;
"""


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "raft.db")


def _v1_database(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.executescript("""
        INSERT INTO hard_state VALUES (0, 4, 2, 6);
        INSERT INTO applied VALUES (0, 5);
        INSERT INTO machine VALUES (0, 0);
        INSERT INTO snapshot_mark VALUES (0, 5, 3, '1,2,3', '3,4', 1);
        INSERT INTO log VALUES (6, 4, x'61');
        INSERT INTO log VALUES (7, 4, x'62');
    """)
    conn.commit()
    conn.close()


def test_a_database_of_schema_version_1_opens_and_is_migrated(db):
    _v1_database(db)
    s = SqliteStore(db)
    st = s.recovered()
    assert st.snapshot == SnapshotMeta(5, 3, frozenset({1, 2, 3}), frozenset({3, 4}))
    assert st.snapshot.learners == frozenset() and st.snapshot.context == b""
    assert st.entries == [(4, b"a"), (4, b"b")] and st.hard_state == (4, 2, 6)
    assert s.applied_index() == 5
    assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    s.save_snapshot_mark(FULL._replace(index=7, term=4))     # the new columns are written
    s.close()
    with SqliteStore(db) as s:
        assert s.snapshot_mark == FULL._replace(index=7, term=4)
        assert s.recovered().entries == []


def test_the_mark_round_trips_with_learners_joint_and_context(db):
    s = SqliteStore(db)
    s.append(_batch(1, 12))
    s.save_snapshot_mark(FULL)                   # kept: the log holds 12@3
    s.sync()
    s.close()
    with SqliteStore(db) as s:
        assert s.snapshot_mark == FULL and s.recovered().snapshot == FULL
        big = FULL._replace(index=20, term=4, context=b"\xab" * MAX_MARK_CONTEXT)
        s.save_snapshot_mark(big)
    with SqliteStore(db) as s:
        assert s.snapshot_mark == big


def _batch(first, n, term=3):
    return EntryBatch(first, [(term, b"e%d" % (first + k)) for k in range(n)])


@pytest.mark.parametrize("update, reason", [
    ("learners = '2'", r"learners \[2\] are also voters"),
    ("learners = '4'", r"learners \[4\] are also voters"),
    ("learners = '7;9'", "column learners holds '7;9', not comma-separated ids"),
    ("voters = x'31'", "column voters holds a bytes, not a list of ids"),
    ("context = 'text'", "column context holds a text, not a blob"),
    (f"context = zeroblob({MAX_MARK_CONTEXT + 1})", "over the bound"),
    ("learners = '" + ",".join(str(i) for i in range(10, 10 + 70000)) + "'",
     "70000 ids, more than 65536"),
])
def test_a_damaged_mark_row_is_refused_naming_file_and_column(db, update, reason):
    with SqliteStore(db) as s:
        s.save_snapshot_mark(SnapshotMeta(5, 1, frozenset({1, 2}), frozenset({4})))
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE snapshot_mark SET {update}")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match=reason) as info:
        SqliteStore(db)
    assert db in str(info.value) and "snapshot_mark" in str(info.value)


def test_a_newer_schema_is_refused(db):
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match="newer"):
        SqliteStore(db)


# -- snapshot files from a copy of the database ---------------------------------------------------

CONF = encode_conf_change(ConfChange((Change(ADD_LEARNER, 9, b"addr"),)))


def _applied_store(path, payloads) -> SqliteStore:
    """A store whose log holds ``payloads`` from index 1 (term 1), all applied."""
    store = SqliteStore(path)
    machine = SqliteStateMachine(store, 1000)
    entries = [(1, p) for p in payloads]
    store.append(EntryBatch(1, entries))
    machine.apply_entries(1, entries)
    store.sync()
    return store


def test_a_snapshot_from_a_copy_keeps_the_whole_configuration(tmp_path):
    store = _applied_store(str(tmp_path / "a.db"), [b"", CONF, b"", b"", b""])
    store.backup_to(tmp_path / "copy.db")
    snaps = SnapshotStore(tmp_path / "snap")
    copy = SqliteStore(tmp_path / "copy.db")
    asked = FULL._replace(index=3, term=1)
    meta, path = SqliteStateMachine.snapshot_from_copy(copy, snaps, asked, 1000)
    assert meta == FULL._replace(index=5, term=1)            # applied 5, the configuration at 3
    assert read_meta(path) == meta
    with pytest.raises(LocalProtocolError, match="configuration change at 2"):
        SqliteStateMachine.snapshot_from_copy(copy, snaps, FULL._replace(index=1, term=1),
                                              1000)
    copy.close()
    store.close()


def test_a_snapshot_from_a_copy_after_an_installed_snapshot_takes_its_mark(tmp_path):
    store = _applied_store(str(tmp_path / "a.db"), [b"", b""])
    installed = FULL._replace(index=40, term=2)
    store.save_snapshot_mark(installed)      # as a leader's snapshot installed meanwhile
    store.replace_state(40, [], [], 0)
    store.sync()
    store.backup_to(tmp_path / "copy.db")
    copy = SqliteStore(tmp_path / "copy.db")
    meta, _path = SqliteStateMachine.snapshot_from_copy(
        copy, SnapshotStore(tmp_path / "snap"), SnapshotMeta(2, 1, frozenset({1})), 1000)
    assert meta == installed
    copy.close()
    store.close()


# -- the runtime's backends ------------------------------------------------------------------------

def _machine_at(index: int) -> KVStateMachine:
    m = KVStateMachine(1000)
    m.applied_index = index
    return m


@pytest.mark.parametrize("kind", ["wal", "sqlite"])
def test_backends_recover_the_whole_snapshot_meta(tmp_path, kind):
    d = str(tmp_path / "node")
    b = open_backend(kind, d, frozenset(), Tuning())
    b.open()
    path = b.snaps.save(FULL, _machine_at(FULL.index).snapshot_chunks())
    b.persist_snapshot(Snapshot(FULL, path))
    b.store.sync()
    b.install(Snapshot(FULL, path))
    b.close()
    b = open_backend(kind, d, frozenset(), Tuning())
    rlog, _hs, _newest = b.open()
    assert rlog.snapshot.meta == FULL and b.store.snapshot_mark == FULL
    if kind == "sqlite":        # a snapshot file made from a copy keeps it too
        meta, p = asyncio.run(b.snapshot(FULL))
        assert meta == FULL and read_meta(p) == FULL
    b.close()


def test_the_wal_backend_moves_its_mark_to_the_older_file_whole(tmp_path):
    d = str(tmp_path / "node")
    b = open_backend("wal", d, frozenset(), Tuning())
    b.open()
    older = FULL._replace(index=5, learners=frozenset({8}), context=b"older")
    newer = FULL._replace(index=9, learners=frozenset(), context=b"newer")
    b.store.append(EntryBatch(1, [(3, b"")] * 12))
    for m in (older, newer):
        b.snaps.save(m, _machine_at(m.index).snapshot_chunks())
    b.after_snapshot(newer, True)
    assert b.store.snapshot_mark == older
    b.close()
    b = open_backend("wal", d, frozenset(), Tuning())
    rlog, _hs, newest = b.open()
    assert rlog.snapshot.meta == older and newest.meta == newer
    b.close()
