"""The SQLite backend: restarts return exactly the committed state, apply_batch is atomic,
failures are fail-fast, the key-value reads.

Specification: the module docstrings of fastraft/storage/base.py and fastraft/storage/sqlite.py
(the shared semantics run on SQLite too, through ``any_store`` in test_store_semantics.py).
Real database files in tmp_path; crashes are simulated by closing the connection without a
commit (SQLite rolls the open transaction back) or by copying the files before a commit.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3

import pytest

from fastraft.errors import CorruptRecordError, LocalProtocolError, StorageError
from fastraft.storage import LogStore, RecoveredState, SqliteStore

DISK_FULL = "database or disk is full"


def crash(store: SqliteStore) -> None:
    """Abandon ``store`` as a killed process would: the open transaction is never committed."""
    store._conn.close()          # sqlite3 does not commit on close: the transaction is lost
    store._conn = None
    store._closed = True


def copy_db(src: str, dst: str) -> None:
    """Copy the database files as they are on disk now (the database and its -wal file)."""
    for suffix in ("", "-wal"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "raft.db")


def test_is_a_logstore_with_wal_journal_and_full_sync(db):
    s = SqliteStore(db)
    assert isinstance(s, LogStore)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2     # FULL
    s.close()


def test_reopen_returns_the_committed_state_not_unsynced_writes(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 1, 2]))
    s.save_hard_state(sh.HardState(2, 1, 2))
    s.save_snapshot_mark(sh.meta(1, 1, outgoing=(4,)))
    s.sync()
    committed = s.recovered()
    s.append(sh.batch(3, [3, 3, 3]))              # overwrites 3, not synced
    s.save_hard_state(sh.HardState(3, 2, 5))
    s.save_snapshot_mark(sh.meta(9, 4))
    s.apply_batch(1, [(b"k", b"v")])
    assert s.recovered() != committed             # visible to reads before the commit
    crash(s)
    s = SqliteStore(db)
    assert s.recovered() == committed
    assert committed == RecoveredState(sh.meta(1, 1, outgoing=(4,)), sh.batch(2, [1, 2]).entries,
                                       sh.HardState(2, 1, 2))
    assert (s.first_index, s.last_index, s.term(1)) == (2, 3, 1)
    assert s.applied_index() == 0 and s.kv_get(b"k") is None
    s.close()


def test_files_copied_before_the_commit_hold_the_previous_commit(db, tmp_path, sh):
    s = SqliteStore(db)
    s._conn.execute("PRAGMA cache_size = 10")     # uncommitted pages spill into the -wal file
    s.append(sh.batch(1, [1] * 5, size=3000))
    s.save_hard_state(sh.HardState(1, 1, 5))
    s.sync()
    committed = s.recovered()
    s.append(sh.batch(6, [2] * 200, size=3000))
    s.truncate(3)
    before = str(tmp_path / "before.db")
    assert os.path.getsize(db + "-wal") > 100 * 3000   # the spilled, uncommitted frames
    copy_db(db, before)                           # a power cut right now
    s.sync()
    after = str(tmp_path / "after.db")
    copy_db(db, after)
    expect_after = s.recovered()
    s.close()
    c = SqliteStore(before)
    assert c.recovered() == committed
    c.close()
    c = SqliteStore(after)
    assert c.recovered() == expect_after
    assert c.last_index == 2
    c.close()


def test_one_commit_per_sync(db, sh):
    s = SqliteStore(db)
    assert not s._conn.in_transaction
    for i in range(1, 11):
        s.append(sh.batch(i, [1]))
        s.save_hard_state(sh.HardState(1, 1, i))
    assert s._conn.in_transaction
    s.sync()
    s.sync()                                      # nothing pending: no commit
    assert s.syncs == 1 and not s._conn.in_transaction
    s.close()


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_against_the_model_with_crashes(db, sh, seed):
    rng = random.Random(seed)
    s = SqliteStore(db)
    model = sh.Model()
    synced = model.copy()
    for _step in range(300):
        roll = rng.random()
        if roll < 0.05:
            s.close()                             # a clean close commits
            model.restart()
            synced = model.copy()
            s = SqliteStore(db)
        elif roll < 0.1:
            crash(s)
            model = synced.copy()
            model.restart()
            synced = model.copy()
            s = SqliteStore(db)
        else:
            what, _ = sh.random_op(rng, s, model)
            if what == "sync":
                synced = model.copy()
        assert s.recovered() == model.recovered(), (seed, _step)
        assert (s.first_index, s.last_index) == (model.first_index, model.last_index)
        assert s.term(model.base) == model.base_term
        assert s.entries(s.first_index, s.last_index + 1) == model.log
    s.close()


def test_restart_drops_the_log_at_or_below_a_kept_mark(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1] * 6))
    s.save_snapshot_mark(sh.meta(4, 1))
    assert s._conn.execute("SELECT keep FROM snapshot_mark").fetchone()[0] == 1
    assert s.first_index == 1                     # kept until compaction or restart
    s.close()
    s = SqliteStore(db)
    assert (s.first_index, s.last_index, s.term(4)) == (5, 6, 1)
    assert s._conn.execute("SELECT MIN(idx), COUNT(*) FROM log").fetchone() == (5, 2)
    s.save_snapshot_mark(sh.meta(8, 2))           # installed: reset
    assert s._conn.execute("SELECT keep FROM snapshot_mark").fetchone()[0] == 0
    assert s._conn.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 0
    s.close()


def test_compaction_deletes_rows_and_survives_restart(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1] * 10 + [2] * 5))
    s.save_snapshot_mark(sh.meta(12, 2))
    s.compact(8)
    assert s._conn.execute("SELECT MIN(idx) FROM log").fetchone()[0] == 9
    assert (s.first_index, s.term(8)) == (9, 1)
    s.sync()
    s.close()
    s = SqliteStore(db)
    assert s.recovered() == RecoveredState(sh.meta(12, 2), sh.batch(13, [2] * 3).entries,
                                           sh.HardState())
    s.close()


def test_a_damaged_log_table_is_refused(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 2, 3, 3]))
    s.close()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM log WHERE idx = 2")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match="gaps"):
        SqliteStore(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO log VALUES (2, 5, x'')")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match="term decreases at log index 3"):
        SqliteStore(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE log SET term = 5 WHERE idx > 2")
    conn.execute("INSERT INTO snapshot_mark (id, idx, term, voters, outgoing, keep) "
                 "VALUES (0, 1, 7, '1', '', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptRecordError, match="term decreases at log index 2"):
        SqliteStore(db)                           # below the mark's term


# -- the key-value state -----------------------------------------------------------------------

def test_applied_index_and_kv_survive_restart(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 1, 1]))
    s.apply_batch(2, [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    s.apply_batch(3, [(b"c", b"4")], [b"b", b"missing"])
    with pytest.raises(LocalProtocolError):
        s.apply_batch(3)                          # must move forward
    s.close()
    s = SqliteStore(db)
    assert s.applied_index() == 3
    assert (s.kv_get(b"a"), s.kv_get(b"b"), s.kv_get(b"c")) == (b"3", None, b"4")
    s.apply_batch(4)                              # only the applied index moves
    s.sync()
    crash(s)
    s = SqliteStore(db)
    assert s.applied_index() == 4
    s.close()


def test_apply_batch_is_all_or_nothing(db, sh):
    s = SqliteStore(db)
    s.apply_batch(1, [(b"old", b"x")])
    s.sync()
    s.append(sh.batch(1, [1, 1]))                 # same open transaction as the batch below

    def puts():
        yield b"a", b"1"
        yield b"b", b"2"
        raise RuntimeError("killed between two puts")

    with pytest.raises(RuntimeError):
        s.apply_batch(2, puts(), [b"old"])
    assert s.applied_index() == 1
    assert s.kv_scan() == [(b"old", b"x")]
    with pytest.raises(TypeError):
        s.apply_batch(2, [(b"a", b"1")], [b"old", "not bytes"])
    assert s.kv_scan() == [(b"old", b"x")]
    assert s.last_index == 2                      # the rest of the transaction is intact
    s.apply_batch(2, [(b"a", b"1")], [b"old"])    # the store is still usable
    s.sync()
    crash(s)
    s = SqliteStore(db)
    assert s.applied_index() == 2 and s.kv_scan() == [(b"a", b"1")]
    assert s.last_index == 2
    s.close()


def test_revisions_leases_and_lease_term_are_in_the_batch(db):
    s = SqliteStore(db)
    s.apply_batch(3, [(b"a", b"1", 2, 7), (b"b", b"2", 3, 0)], (), (), (), 100,
                  lease_puts=[(7, 50, 150), (8, 60, 160)], lease_term=4)
    s.sync()

    def leases():
        yield 9, 10, 200
        raise RuntimeError("killed between two lease rows")

    with pytest.raises(RuntimeError):           # all or nothing, leases included
        s.apply_batch(4, [(b"c", b"3", 4, 9)], [b"a"], (), (), 120, lease_puts=leases(),
                      lease_deletes=[7], lease_term=5)
    for store in (s, None):
        if store is None:                       # and what was committed survives a restart
            s.close()
            store = s = SqliteStore(db)
        assert store.kv_scan_items() == [(b"a", b"1", 2), (b"b", b"2", 3)]
        assert (store.kv_item(b"a"), store.kv_rev(b"b"), store.kv_rev(b"zz")) == \
            ((b"1", 2), 3, 0)
        assert store.leased_keys() == [(b"a", 7)]
        assert store.lease_rows() == [(7, 50, 150), (8, 60, 160)]
        assert (store.applied_index(), store.machine_clock(), store.lease_term()) == \
            (3, 100, 4)
    s.apply_batch(4, [], [b"a"], lease_deletes=[7, 8])
    s.replace_state(9, [(b"x", b"y", 9, 3)], [], 500, [(3, 1, 900)], 6)
    assert s.kv_scan_items() == [(b"x", b"y", 9)] and s.leased_keys() == [(b"x", 3)]
    assert (s.lease_rows(), s.lease_term(), s.machine_clock()) == ([(3, 1, 900)], 6, 500)
    s.close()


def test_apply_batch_storage_error_mid_batch_applies_nothing(db, monkeypatch):
    s = SqliteStore(db)
    s.apply_batch(1, [(b"k", b"1")])
    s.sync()
    real = s._conn.executemany

    def executemany(sql, rows):
        if sql.startswith("DELETE FROM kv"):
            raise sqlite3.OperationalError(DISK_FULL)
        return real(sql, rows)

    monkeypatch.setattr(s._conn, "executemany", executemany)
    with pytest.raises(StorageError, match=DISK_FULL):
        s.apply_batch(2, [(b"k", b"2"), (b"j", b"3")], [b"x"])
    with pytest.raises(StorageError):
        s.applied_index()
    s = SqliteStore(db)
    assert s.applied_index() == 1 and s.kv_scan() == [(b"k", b"1")]
    s.close()


def test_kv_scan_order_prefix_and_limit(db):
    s = SqliteStore(db)
    keys = [b"a", b"ab", b"abc", b"b", b"a\xff", b"a\xff\x00", b"\xff\xff", b"ac", b"", b"a\x00"]
    s.apply_batch(1, [(k, b"v" + k) for k in reversed(keys)])
    assert [k for k, _ in s.kv_scan()] == sorted(keys)
    assert s.kv_scan(b"a") == [(k, b"v" + k) for k in sorted(keys) if k.startswith(b"a")]
    assert [k for k, _ in s.kv_scan(b"a", 3)] == [b"a", b"a\x00", b"ab"]
    assert [k for k, _ in s.kv_scan(b"a\xff")] == [b"a\xff", b"a\xff\x00"]
    assert [k for k, _ in s.kv_scan(b"\xff")] == [b"\xff\xff"]
    assert s.kv_scan(b"zz") == [] and s.kv_scan(b"a", 0) == []
    with pytest.raises(ValueError):
        s.kv_scan(b"", -1)
    s.close()


def test_backup_is_a_consistent_copy(db, tmp_path, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 2]))
    s.save_hard_state(sh.HardState(2, 1, 2))
    s.apply_batch(2, [(b"k", b"v")])
    copy = str(tmp_path / "copy.db")
    s.backup(copy)
    assert not s._conn.in_transaction             # the backup committed first
    c = SqliteStore(copy)
    assert c.recovered() == s.recovered()
    assert (c.applied_index(), c.kv_scan()) == (2, [(b"k", b"v")])
    c.close()
    s.close()


# -- failures ----------------------------------------------------------------------------------

def assert_refuses_everything(s, sh):
    for call in (lambda: s.append(sh.batch(4, [9])), s.sync, lambda: s.term(0),
                 lambda: s.save_hard_state(sh.HardState(9)), lambda: s.entries(1, 1),
                 lambda: s.first_index, s.recovered, lambda: s.kv_get(b"k"),
                 lambda: s.apply_batch(99), s.applied_index, lambda: s.kv_scan(b"")):
        with pytest.raises(StorageError, match="refuses every"):
            call()


def test_disk_full_on_commit_fails_the_store(db, sh, monkeypatch):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 1, 1]))
    s.sync()
    s.save_hard_state(sh.HardState(1, 1, 3))

    def commit():
        raise sqlite3.OperationalError(DISK_FULL)

    monkeypatch.setattr(s._conn, "commit", commit)
    with pytest.raises(StorageError, match=DISK_FULL):
        s.sync()
    assert DISK_FULL in s.failed
    assert_refuses_everything(s, sh)
    s.close()                                     # releases only
    s = SqliteStore(db)
    assert s.recovered() == RecoveredState(None, sh.batch(1, [1, 1, 1]).entries, sh.HardState())
    s.close()


@pytest.mark.parametrize("op", ["append", "hard_state", "mark", "compact", "truncate"])
def test_io_error_on_write_fails_the_store(db, sh, monkeypatch, op):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1, 1, 1]))
    s.save_snapshot_mark(sh.meta(1, 1))
    s.sync()
    real = s._conn.execute

    def execute(sql, *args):
        if not sql.startswith("SELECT"):
            raise sqlite3.OperationalError("disk I/O error")
        return real(sql, *args)

    monkeypatch.setattr(s._conn, "execute", execute)
    monkeypatch.setattr(s._conn, "executemany", execute)
    with pytest.raises(StorageError, match="disk I/O error"):
        {"append": lambda: s.append(sh.batch(4, [1])),
         "hard_state": lambda: s.save_hard_state(sh.HardState(5)),
         "mark": lambda: s.save_snapshot_mark(sh.meta(2, 1)),
         "compact": lambda: s.compact(1),
         "truncate": lambda: s.truncate(2)}[op]()
    assert_refuses_everything(s, sh)
    s = SqliteStore(db)
    assert s.recovered() == RecoveredState(sh.meta(1, 1), sh.batch(2, [1, 1]).entries,
                                           sh.HardState())
    s.close()


def test_a_really_full_database_fails_the_store(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [1]))
    s.sync()
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count = {pages + 2}")    # SQLITE_FULL past this size
    with pytest.raises(StorageError, match=DISK_FULL):
        for i in range(2, 200):
            s.append(sh.batch(i, [1], size=4000))
    assert_refuses_everything(s, sh)
    s = SqliteStore(db)
    assert s.recovered() == RecoveredState(None, sh.batch(1, [1]).entries, sh.HardState())
    s.close()


def test_caller_errors_leave_the_store_usable(db, sh):
    s = SqliteStore(db)
    s.append(sh.batch(1, [2]))
    with pytest.raises(LocalProtocolError):
        s.append(sh.batch(2, [1]))
    with pytest.raises(TypeError):
        s.apply_batch(1, [("str", b"v")])
    with pytest.raises(ValueError):
        s.append(sh.EntryBatch(2, [(2, b"a"), (1 << 63, b"b")]))   # over SQLite's INTEGER
    with pytest.raises(ValueError):
        s.save_hard_state(sh.HardState(-1))
    assert s.failed is None
    assert s.entries(1, 2) == sh.batch(1, [2]).entries and s.last_index == 1
    s.append(sh.batch(2, [2]))
    s.close()
    with pytest.raises(LocalProtocolError):
        s.kv_get(b"k")


def test_a_newer_schema_is_refused(db):
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CorruptRecordError, match="schema version 99"):
        SqliteStore(db)


@pytest.mark.parametrize("sql", [
    "UPDATE hard_state SET term = 'abc'",
    "UPDATE hard_state SET vote = -1",
    "UPDATE applied SET applied_index = x'00'",
    "UPDATE machine SET clock = 1.5",
])
def test_recovered_rows_of_the_wrong_type_are_corruption(db, sql):
    """Found by the long fuzz run: a damaged row (here typed by hand) is refused at open."""
    import sqlite3
    SqliteStore(db).close()
    c = sqlite3.connect(db)
    c.execute(sql)
    c.commit()
    c.close()
    with pytest.raises(CorruptRecordError):
        SqliteStore(db)
