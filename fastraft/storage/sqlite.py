"""The SQLite backend: the Raft log, hard state, snapshot mark and the key-value state in one
SQLite database.

Place in the architecture: a backend of ``fastraft.storage`` (the ``LogStore`` protocol of
``base.py``, same semantics and same recovered state as ``wal.WalStore`` and ``MemoryStore``),
selected by ``fastraft node --storage sqlite`` (``fastraft.server.backends``).
It does the IO through the standard library's ``sqlite3``; it imports the errors (with
``datadir.NewerFormatError``) and the plain message types of ``fastraft.raft.messages``
only — never the engine's logic, never msgpack.

Tables (``PRAGMA user_version`` = ``SCHEMA_VERSION``)::

    log            idx INTEGER PRIMARY KEY, term, payload BLOB   the entries after the base
    hard_state     one row: term, vote, commit_index
    snapshot_mark  one row: idx, term, voters, outgoing (comma-separated ids), keep flag
                   (1: the log held the mark's entry when it was saved and was kept; 0: the
                   log was reset), learners (comma-separated ids), context BLOB (the meta's
                   opaque context, at most 1 MiB) — what the WAL's SNAPSHOT record carries
    kv             key BLOB PRIMARY KEY, value BLOB, rev, lease  the state machine's data:
                   each key's value, revision (the index of its last write, >= 1) and the id
                   of the lease it is attached to (0: none; index ``kv_leased`` on the
                   attached keys only)
    applied        one row: applied_index                        the last entry applied to kv
    sessions       sid INTEGER PRIMARY KEY, ord, blob            the client-session table: one
                   row per session (``ord``: its place in last-activity order; ``blob``: the
                   state machine's encoding of it)
    leases         id INTEGER PRIMARY KEY, ttl, deadline         the lease table (ms on the
                   state machine's clock); a lease's keys are the kv rows naming it
    machine        one row: clock, lease_term                    the state machine's clock and
                   the term of the last command it applied (a higher one refreshes leases)

Schema versions: 2 added ``snapshot_mark.learners`` and ``snapshot_mark.context``; 3 added
``kv.rev``, ``kv.lease``, the ``leases`` table and ``machine.lease_term`` (revisions and
leases). An older database is migrated when it opens, in the opening transaction: the missing
columns are added with their defaults — ``''`` and ``x''`` for the mark (no learners, an empty
context, so a mark keeps its voters), revision ``1`` for every existing key ("present,
revision unknown": the state machine's ``restorer.UNKNOWN_REVISION``, the rule of a format 1
snapshot), lease ``0`` (none), lease term ``0`` — and the leases table is created empty. A
newer version than this fastraft's is refused before anything is written
(``NewerFormatError``, naming the file and both versions: a node exits with status 2). The
schema version covers what the rows hold too (the session blobs are the state machine's
encoding): a change there comes with a new schema version.
A mark row that is not a valid configuration (ids that are not decimal numbers, more than
65536 of them, learners that are voters, a context that is not a blob or is over 1 MiB) is
damage: ``CorruptRecordError`` naming the file, the table and the column.

Durability. The journal mode is WAL and ``synchronous=FULL``: in WAL mode ``NORMAL`` does not
fsync the WAL file at commit, so a power loss could drop a commit whose data an
acknowledgement already depended on; ``FULL`` fsyncs on every commit, so a commit that
returned is durable, which is the promise ``sync()`` makes (durability before
acknowledgement). Every write goes into one open transaction (``BEGIN IMMEDIATE`` at the first
write after a commit) and ``sync()`` commits it: one commit, one fsync, however many appends,
hard states, marks and applied batches it covers (group commit). Writes are visible to this
store's reads at once; a crash (or a close without commit) rolls the open transaction back,
so a restart sees exactly the state of the last commit.

Truncation is ``DELETE FROM log WHERE idx >= i`` and compaction ``DELETE ... WHERE idx <= i``:
unlike the WAL (which never rewrites a file and writes truncation markers) SQLite rewrites its
pages in place. That is fine for this backend: SQLite's own journal makes each commit atomic,
so a crash leaves either the state before the commit or after it. Freed pages go to SQLite's
freelist and are reused by later appends (the file does not shrink; ``VACUUM`` would do that).

A restart (``SqliteStore(path)``) reads the mark and the hard state, deletes the log rows at or
below the mark (a restart keeps only the log after it, as ``base.py`` states) and checks that
the rest is contiguous with non-decreasing terms (else ``CorruptRecordError``).

State machine: ``apply_batch(applied_index, puts, deletes, session_puts, session_deletes,
clock, lease_puts=, lease_deletes=, lease_term=)`` updates ``kv``, the touched sessions and
leases, the clock, the lease term and the applied index inside a SAVEPOINT of the open
transaction, so they change together or not at all and become durable with the log writes at
the next ``sync()``; a restart replays only the entries after ``applied_index()``. ``kv_get``,
``kv_item``, ``kv_rev``, ``kv_scan`` and ``kv_scan_items`` read the state, ``session_rows``,
``lease_rows``, ``leased_keys``, ``machine_clock`` and ``lease_term`` what the state machine
reloads. ``backup(path)`` writes a consistent copy of the committed database (SQLite's backup
API), e.g. for a lagging follower.

Failure: an ``sqlite3.Error`` while writing, committing or reading (``database or disk is
full``, ``disk I/O error`` ...) marks the store failed: it rolls the open transaction back
(best effort), closes the connection, raises ``StorageError`` and refuses every later call.
Caller errors (a bad index, a payload that is not bytes) raise before anything is written and
leave the store usable.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Iterable

from ..datadir import NewerFormatError
from ..errors import (
    CompactedError,
    CorruptRecordError,
    LocalProtocolError,
    StorageError,
    UnavailableError,
)
from ..raft.messages import EntryBatch, HardState, SnapshotMeta
from ._files import fsync_dir
from .base import MAX_MARK_CONTEXT, MAX_MARK_IDS, StoreBase, check_new_mark, config_problem, \
    mark_keeps_log

__all__ = ["SqliteStore", "SCHEMA_VERSION", "UNKNOWN_REVISION"]

SCHEMA_VERSION = 3
#: The revision of a key written before revisions were kept (a migrated database): "present,
#: revision unknown" (``statemachine.restorer.UNKNOWN_REVISION``; this layer does not import it).
UNKNOWN_REVISION = 1
_MAX = (1 << 63) - 1        # SQLite's INTEGER is a signed 64-bit number

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    idx     INTEGER PRIMARY KEY,
    term    INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS hard_state (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    term         INTEGER NOT NULL,
    vote         INTEGER NOT NULL,
    commit_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_mark (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    idx      INTEGER NOT NULL,
    term     INTEGER NOT NULL,
    voters   TEXT NOT NULL,
    outgoing TEXT NOT NULL,
    keep     INTEGER NOT NULL,
    learners TEXT NOT NULL DEFAULT '',
    context  BLOB NOT NULL DEFAULT x''
);
CREATE TABLE IF NOT EXISTS kv (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    rev   INTEGER NOT NULL DEFAULT 1,
    lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    id            INTEGER PRIMARY KEY CHECK (id = 0),
    applied_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    sid  INTEGER PRIMARY KEY,
    ord  INTEGER NOT NULL,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id       INTEGER PRIMARY KEY,
    ttl      INTEGER NOT NULL,
    deadline INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS machine (
    id         INTEGER PRIMARY KEY CHECK (id = 0),
    clock      INTEGER NOT NULL,
    lease_term INTEGER NOT NULL DEFAULT 0
);
"""
#: Made after the migration (they name columns an older schema lacks).
_INDEXES = """
CREATE INDEX IF NOT EXISTS kv_leased ON kv (lease) WHERE lease != 0;
"""


class _Connection(sqlite3.Connection):
    """A plain connection whose methods tests may replace on the instance (fault injection)."""


def _check_ints(what: str, *values) -> None:
    """Refuse what SQLite could not store, before anything is written."""
    for v in values:
        if not 0 <= v <= _MAX:
            raise ValueError(f"{what}: {v} is outside 0 .. 2**63 - 1")


def _stored_ints(what: str, row) -> None:
    """Rows read back at recovery hold non-negative integers, or the database is damaged."""
    if row is None or any(type(v) is not int or v < 0 for v in row):
        raise CorruptRecordError(f"SQLite store: {what} holds {row!r}, not non-negative "
                                 f"integers (a damaged database)")


#: Columns added by later schema versions, by table: version 2 added the mark's learners and
#: context, version 3 the keys' revisions and leases and the lease term.
_ADDED_COLUMNS = (
    ("snapshot_mark", "learners", "TEXT NOT NULL DEFAULT ''"),
    ("snapshot_mark", "context", "BLOB NOT NULL DEFAULT x''"),
    ("kv", "rev", f"INTEGER NOT NULL DEFAULT {UNKNOWN_REVISION}"),
    ("kv", "lease", "INTEGER NOT NULL DEFAULT 0"),
    ("machine", "lease_term", "INTEGER NOT NULL DEFAULT 0"),
)


def _migrate(conn) -> None:
    """Bring the tables of an older schema up to this one (inside the opening transaction;
    the tables exist: ``CREATE TABLE IF NOT EXISTS`` ran first, so the leases table is new
    and empty). The added columns take their defaults in the existing rows."""
    have: dict[str, set] = {}
    for table, name, decl in _ADDED_COLUMNS:
        if table not in have:
            have[table] = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if name not in have[table]:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _ids(text, where: str) -> frozenset:
    """The ids of a comma-separated column; CorruptRecordError for anything else."""
    if type(text) is not str:
        raise CorruptRecordError(f"{where} holds a {type(text).__name__}, not a list of ids")
    parts = [x for x in text.split(",") if x] if text else []
    if len(parts) > MAX_MARK_IDS:
        raise CorruptRecordError(f"{where} holds {len(parts)} ids, more than {MAX_MARK_IDS}")
    if not all(x.isascii() and x.isdigit() and len(x) <= 20 for x in parts):
        raise CorruptRecordError(f"{where} holds {text[:80]!r}, not comma-separated ids")
    return frozenset(int(x) for x in parts)


def _ids_text(ids) -> str:
    return ",".join(str(int(i)) for i in sorted(ids))


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


class SqliteStore(StoreBase):
    """The SQLite ``LogStore`` plus the key-value state (see the module docstring).

    ``SqliteStore(path)`` opens (creating it if needed) and recovers the database at ``path``.
    ``timeout`` is sqlite3's busy timeout in seconds (another process holding the lock)."""

    def __init__(self, path, *, timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.syncs = 0                  # successful commits (for tests and metrics)
        self._failed: str | None = None
        self._closed = False
        self._conn: _Connection | None = None
        try:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   factory=_Connection)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._conn = conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.close()
                self._conn = None
                raise NewerFormatError(self.path, "SQLite schema", version, SCHEMA_VERSION,
                                       " (PRAGMA user_version)")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                self._conn = None
                raise StorageError(f"{self.path}: cannot use SQLite's WAL journal mode "
                                   f"(got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                _migrate(conn)
            for statement in _INDEXES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("INSERT OR IGNORE INTO hard_state VALUES (0, 0, 0, 0)")
            conn.execute("INSERT OR IGNORE INTO applied VALUES (0, 0)")
            conn.execute("INSERT OR IGNORE INTO machine (id, clock) VALUES (0, 0)")
            try:
                self._recover()
            except CorruptRecordError:
                raise
            except (TypeError, ValueError, AttributeError, OverflowError) as exc:
                # Rows of the wrong type (a damaged or foreign database): never trusted.
                raise CorruptRecordError(f"{self.path}: a stored row has the wrong type or "
                                         f"value ({type(exc).__name__}: {exc})") from None
            conn.commit()
            # The database's name (and its -wal file's) durable before anything depends on
            # it: SQLite fsyncs the directory for a new -wal file, not for the database file.
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except (sqlite3.Error, UnicodeDecodeError, OSError) as exc:
            # (sqlite3 cannot always decode the message of a damaged schema)
            self._fail("opening", exc)
        except CorruptRecordError:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._closed = True
            raise

    # -- recovery ------------------------------------------------------------------------------

    def _recover(self) -> None:
        conn = self._conn
        row = conn.execute("SELECT term, vote, commit_index FROM hard_state").fetchone()
        _stored_ints("the hard state", row)
        self._hs = HardState(*row)
        self._mark: SnapshotMeta | None = self._read_mark()
        if self._mark is None:
            self._base, self._base_term = 0, 0
        else:
            self._base, self._base_term = self._mark.index, self._mark.term
        # A restart keeps the log after the mark only.
        conn.execute("DELETE FROM log WHERE idx <= ?", (self._base,))
        count, hi = conn.execute("SELECT COUNT(*), MAX(idx) FROM log").fetchone()
        if count and (hi - self._base != count):
            raise CorruptRecordError(f"{self.path}: the log after index {self._base} has gaps "
                                     f"({count} entries up to index {hi})")
        bad = conn.execute(     # a self-join on the primary key: fast (no window function)
            "SELECT b.idx FROM log AS a JOIN log AS b ON b.idx = a.idx + 1 "
            "WHERE b.term < a.term ORDER BY b.idx LIMIT 1").fetchone()
        if bad is None:
            bad = conn.execute("SELECT idx FROM log WHERE idx = ? AND term < ?",
                               (self._base + 1, self._base_term)).fetchone()
        if bad is not None:
            raise CorruptRecordError(f"{self.path}: the term decreases at log index {bad[0]}")
        self._last = hi if count else self._base
        self._last_term = (conn.execute("SELECT term FROM log WHERE idx = ?",
                                        (self._last,)).fetchone()[0]
                           if count else self._base_term)
        row = conn.execute("SELECT applied_index FROM applied").fetchone()
        _stored_ints("the applied index", row)
        self._applied = row[0]
        _stored_ints("the state machine's clock and lease term",
                     conn.execute("SELECT clock, lease_term FROM machine").fetchone())

    def _read_mark(self) -> SnapshotMeta | None:
        """The stored snapshot mark, checked (module docstring), or None."""
        row = self._conn.execute(
            "SELECT idx, term, voters, outgoing, learners, typeof(context), length(context) "
            "FROM snapshot_mark").fetchone()
        if row is None:
            return None
        _stored_ints("the snapshot mark", row[:2])
        where = f"{self.path}: table snapshot_mark, column"
        voters, outgoing, learners = (_ids(row[k], f"{where} {name}") for k, name in
                                      ((2, "voters"), (3, "outgoing"), (4, "learners")))
        if row[5] != "blob":
            raise CorruptRecordError(f"{where} context holds a {row[5]}, not a blob")
        if row[6] > MAX_MARK_CONTEXT:
            raise CorruptRecordError(f"{where} context holds {row[6]} bytes, over the bound "
                                     f"{MAX_MARK_CONTEXT}")
        problem = config_problem(voters, outgoing, learners, row[6])
        if problem is not None:
            raise CorruptRecordError(f"{self.path}: the snapshot mark (table snapshot_mark) "
                                     f"holds {problem}")
        context = self._conn.execute("SELECT context FROM snapshot_mark").fetchone()[0]
        return SnapshotMeta(row[0], row[1], voters, outgoing, learners, bytes(context))

    # -- guards and IO -------------------------------------------------------------------------

    def _name(self) -> str:
        return f"the SQLite store {self.path}"

    def _fail(self, what: str, exc: BaseException):
        self._failed = f"{what} failed: {exc}"
        conn, self._conn = self._conn, None
        if conn is not None:
            try:        # best effort: nothing uncommitted may survive into a reopen
                conn.rollback()
            except sqlite3.Error:
                pass
            try:
                conn.close()
            except sqlite3.Error:
                pass
        raise StorageError(f"SQLite store {self.path}: {self._failed}; the store refuses every "
                           f"later call and the node must stop (nothing uncommitted was "
                           f"acknowledged)") from exc

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")

    def _query(self, sql: str, args=()) -> list:
        self._check()
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._fail("reading", exc)

    # -- LogStore ------------------------------------------------------------------------------

    def append(self, batch: EntryBatch) -> None:
        """Write ``batch``, discarding stored entries >= ``batch.first_index`` first."""
        self._check()
        fi = batch.first_index
        last = self._last
        self._check_batch(fi, last)
        entries = list(batch.entries)
        prev = self._last_term if fi == last + 1 else self.term(fi - 1)
        if entries:
            _check_ints("last index", fi + len(entries) - 1)
        rows = []
        i = fi
        for term, payload in entries:
            if not isinstance(payload, bytes):
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            if term < prev:
                raise LocalProtocolError(f"term {term} at {i} is below the previous {prev}")
            _check_ints(f"term of entry {i}", term)
            rows.append((i, term, payload))
            prev = term
            i += 1
        if fi > last and not rows:
            return
        try:
            self._begin()
            if fi <= last:
                self._conn.execute("DELETE FROM log WHERE idx >= ?", (fi,))
            if rows:
                self._conn.executemany("INSERT INTO log (idx, term, payload) VALUES (?, ?, ?)",
                                       rows)
        except sqlite3.Error as exc:
            self._fail("append", exc)
        if rows:
            self._last, self._last_term = rows[-1][0], rows[-1][1]
        else:
            self._last, self._last_term = fi - 1, prev    # prev: the term at fi - 1

    def save_hard_state(self, hs: HardState) -> None:
        """Write ``hs`` in the open transaction (durable at the next sync)."""
        self._check()
        hs = HardState(*hs)
        _check_ints("hard state", *hs)
        try:
            self._begin()
            self._conn.execute("UPDATE hard_state SET term = ?, vote = ?, commit_index = ?",
                               (hs.term, hs.vote, hs.commit))
        except sqlite3.Error as exc:
            self._fail("saving the hard state", exc)
        self._hs = hs

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None:
        """Record that a snapshot covers the log up to ``meta.index`` (see base.py: the
        entries are kept when the log holds ``meta.index`` at ``meta.term``, else reset)."""
        self._check()
        check_new_mark(self._mark, meta)
        meta = self._own_mark(meta)
        _check_ints("snapshot mark", meta.index, meta.term, *meta.voters, *meta.outgoing,
                    *meta.learners)
        keep = mark_keeps_log(self._base + 1, self._last, self.term, meta)
        try:
            self._begin()
            self._conn.execute(
                "INSERT OR REPLACE INTO snapshot_mark (id, idx, term, voters, outgoing, keep, "
                "learners, context) VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
                (meta.index, meta.term, _ids_text(meta.voters), _ids_text(meta.outgoing),
                 int(keep), _ids_text(meta.learners), meta.context))
            if not keep:
                self._conn.execute("DELETE FROM log")
        except sqlite3.Error as exc:
            self._fail("saving the snapshot mark", exc)
        if not keep:
            self._base = self._last = meta.index
            self._base_term = self._last_term = meta.term
        self._mark = meta

    def sync(self) -> None:
        """Commit the open transaction: one fsync (synchronous=FULL) covering every write
        since the last commit."""
        self._check()
        if not self._conn.in_transaction:
            return
        try:
            self._conn.commit()
        except sqlite3.Error as exc:
            self._fail("commit", exc)
        self.syncs += 1

    def flush(self) -> None:
        """Commit without waiting for the disk: only after ``unsafe_no_fsync()`` (the
        benchmarking mode); otherwise the same as ``sync()``."""
        self.sync()

    def unsafe_no_fsync(self) -> None:
        """``PRAGMA synchronous=OFF``: commits no longer fsync (``fsync = false``, for
        benchmarks only: a power loss can lose acknowledged writes)."""
        self._check()
        try:
            self._conn.execute("PRAGMA synchronous=OFF")
        except sqlite3.Error as exc:
            self._fail("setting synchronous=OFF", exc)

    @property
    def first_index(self) -> int:
        """The first index held (the compaction point + 1)."""
        self._check()
        return self._base + 1

    @property
    def last_index(self) -> int:
        """The last index written (committed or not)."""
        self._check()
        return self._last

    def term(self, index: int) -> int:
        """Term at ``index`` (``first_index - 1`` answers the compaction point's term)."""
        self._check()
        if index == self._base:
            return self._base_term
        if index == self._last:
            return self._last_term
        if index < self._base:
            raise CompactedError(
                f"index {index} is compacted: the log starts after index {self._base}")
        if index > self._last:
            raise UnavailableError(f"index {index} is beyond the last index {self._last}")
        return self._query("SELECT term FROM log WHERE idx = ?", (index,))[0][0]

    def entries(self, lo: int, hi: int) -> list:
        """Entries ``lo .. hi - 1`` as ``(term, payload)`` pairs."""
        self._check()
        if lo > hi:
            raise ValueError(f"slice bounds reversed: lo={lo} > hi={hi}")
        if lo <= self._base:
            raise CompactedError(
                f"index {lo} is compacted: the log starts after index {self._base}")
        if hi > self._last + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self._last}")
        if lo == hi:
            return []
        return self._query(         # rows are (term, payload) tuples; BLOBs come as bytes
            "SELECT term, payload FROM log WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi))

    def first_with_prefix(self, lo: int, hi: int, prefix: bytes) -> int | None:
        """The first index in ``lo .. hi - 1`` of the entries held whose payload starts with
        ``prefix`` (one indexed query, payloads are not read out), or None."""
        prefix = bytes(prefix)
        rows = self._query("SELECT idx FROM log WHERE idx >= ? AND idx < ? AND "
                           "substr(payload, 1, ?) = ? ORDER BY idx LIMIT 1",
                           (lo, hi, len(prefix), prefix))
        return rows[0][0] if rows else None

    def compact(self, index: int) -> None:
        """Release the entries up to ``index`` (at most the snapshot mark): one DELETE in the
        open transaction (durable with the next sync; the mark it relies on commits with it
        or before it). Freed pages are reused by later appends."""
        self._check()
        self._check_compact(index)
        if index <= self._base:
            return
        base_term = self.term(index)
        try:
            self._begin()
            self._conn.execute("DELETE FROM log WHERE idx <= ?", (index,))
        except sqlite3.Error as exc:
            self._fail("compaction", exc)
        self._base, self._base_term = index, base_term

    # -- the state machine's key-value state ---------------------------------------------------

    def apply_batch(self, applied_index: int, puts: Iterable = (),
                    deletes: Iterable = (), session_puts: Iterable = (),
                    session_deletes: Iterable = (), clock: int | None = None, *,
                    lease_puts: Iterable = (), lease_deletes: Iterable = (),
                    lease_term: int | None = None) -> None:
        """Apply one batch of committed entries to the state machine's tables: ``puts``
        (``(key, value, rev, lease)`` rows: bytes, bytes, the revision 1 .. ``applied_index``
        and the lease id, 0 for none; a ``(key, value)`` pair is written at revision
        ``applied_index`` without a lease; in order: the last put of a key wins), then
        ``deletes`` (keys), the sessions (``(sid, ord, blob)`` rows to write, sids to
        delete), the leases (``(id, ttl, deadline)`` rows to write, ids to delete), the
        clock and the lease term (None: unchanged), and set the applied index to
        ``applied_index`` (which must grow) — all or nothing (a SAVEPOINT inside the open
        transaction; durable with the next ``sync()``). An exception raised while it runs
        (a key that is not bytes, a revision out of range, an exception from the iterables)
        rolls the batch back and leaves the store usable; an sqlite3 error fails the
        store."""
        self._check()
        _check_ints("applied index", applied_index)
        if applied_index <= self._applied:
            raise LocalProtocolError(f"applied index {applied_index} does not move past "
                                     f"{self._applied}")
        self._in_savepoint("apply_batch", lambda conn: self._write_state(
            conn, applied_index, puts, deletes, session_puts, session_deletes, clock,
            lease_puts, lease_deletes, lease_term))
        self._applied = applied_index

    def replace_state(self, applied_index: int, items: Iterable, session_rows: Iterable,
                      clock: int, lease_rows: Iterable = (), lease_term: int = 0) -> None:
        """Replace the whole state machine (a snapshot installed from the leader): every kv
        row (``items`` as the puts of ``apply_batch``), session row and lease row, the clock,
        the lease term and the applied index, all or nothing, in the open transaction (so a
        snapshot mark saved in it becomes durable together with it)."""
        self._check()
        _check_ints("applied index", applied_index)

        def run(conn):
            conn.execute("DELETE FROM kv")
            conn.execute("DELETE FROM sessions")
            conn.execute("DELETE FROM leases")
            self._write_state(conn, applied_index, items, (), session_rows, (), clock,
                              lease_rows, (), lease_term)

        self._in_savepoint("replace_state", run)
        self._applied = applied_index

    def _in_savepoint(self, name: str, fn) -> None:
        conn = self._conn
        try:
            self._begin()
            conn.execute(f"SAVEPOINT {name}")
        except sqlite3.Error as exc:
            self._fail(name, exc)
        try:
            fn(conn)
            conn.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            self._fail(name, exc)
        except BaseException:
            try:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            except sqlite3.Error as exc:
                self._fail(f"rolling back {name}", exc)
            raise

    @staticmethod
    def _write_state(conn, applied_index, puts, deletes, session_puts, session_deletes,
                     clock, lease_puts=(), lease_deletes=(), lease_term=None) -> None:
        def checked_puts():
            for row in puts:
                if len(row) == 2:
                    key, value = row
                    rev, lease = applied_index, 0
                else:
                    key, value, rev, lease = row
                if not isinstance(key, bytes) or not isinstance(value, bytes):
                    raise TypeError("keys and values must be bytes, not "
                                    f"{type(key).__name__} / {type(value).__name__}")
                if (type(rev) is not int or type(lease) is not int
                        or not 0 < rev <= applied_index or not 0 <= lease <= _MAX):
                    raise ValueError(f"key {key[:40]!r}: revision {rev!r} is not an index "
                                     f"1..{applied_index}, or lease {lease!r} not an id")
                yield key, value, rev, lease

        def checked_deletes():
            for key in deletes:
                if not isinstance(key, bytes):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                yield (key,)

        def checked_leases():
            for lid, ttl, deadline in lease_puts:
                _check_ints("lease row", lid, ttl, deadline)
                yield lid, ttl, deadline

        conn.executemany("INSERT OR REPLACE INTO kv (key, value, rev, lease) "
                         "VALUES (?, ?, ?, ?)", checked_puts())
        conn.executemany("DELETE FROM kv WHERE key = ?", checked_deletes())
        conn.executemany("INSERT OR REPLACE INTO sessions (sid, ord, blob) VALUES (?, ?, ?)",
                         session_puts)
        conn.executemany("DELETE FROM sessions WHERE sid = ?",
                         ((sid,) for sid in session_deletes))
        conn.executemany("INSERT OR REPLACE INTO leases (id, ttl, deadline) VALUES (?, ?, ?)",
                         checked_leases())
        conn.executemany("DELETE FROM leases WHERE id = ?", ((lid,) for lid in lease_deletes))
        if clock is not None:
            _check_ints("clock", clock)
            conn.execute("UPDATE machine SET clock = ?", (clock,))
        if lease_term is not None:
            _check_ints("lease term", lease_term)
            conn.execute("UPDATE machine SET lease_term = ?", (lease_term,))
        conn.execute("UPDATE applied SET applied_index = ?", (applied_index,))

    def applied_index(self) -> int:
        """The index of the last entry applied to the key-value state (0: none)."""
        self._check()
        return self._applied

    def machine_clock(self) -> int:
        """The state machine's clock as of the last applied batch."""
        return self._query("SELECT clock FROM machine")[0][0]

    def lease_term(self) -> int:
        """The state machine's lease term (the term of the last command applied)."""
        return self._query("SELECT lease_term FROM machine")[0][0]

    def session_rows(self) -> list:
        """``(sid, ord, blob)`` of every stored session, in last-activity order (``ord``)."""
        return [(sid, o, bytes(blob)) for sid, o, blob in
                self._query("SELECT sid, ord, blob FROM sessions ORDER BY ord")]

    def lease_rows(self) -> list:
        """``(id, ttl, deadline)`` of every stored lease, by id; CorruptRecordError for a row
        that is not three non-negative integers."""
        rows = self._query("SELECT id, ttl, deadline FROM leases ORDER BY id")
        for row in rows:
            _stored_ints(f"{self.path}: a row of table leases", row)
        return rows

    def leased_keys(self) -> list:
        """``(key, lease id)`` of every key attached to a lease, in key order (the partial
        index ``kv_leased``: only those rows are read)."""
        rows = self._query("SELECT key, lease FROM kv WHERE lease != 0 ORDER BY key")
        blob = self._blob
        out = []
        for k, lid in rows:
            if type(lid) is not int or lid < 0:
                raise CorruptRecordError(f"{self.path}: a kv lease is {lid!r}, not a lease id")
            out.append((blob(k, "key"), lid))
        return out

    def kv_count(self) -> int:
        """The number of keys in the key-value state."""
        return self._query("SELECT COUNT(*) FROM kv")[0][0]

    def kv_get(self, key: bytes) -> bytes | None:
        """The value of ``key`` in the key-value state (written so far), or None."""
        rows = self._query("SELECT value FROM kv WHERE key = ?", (bytes(key),))
        return self._blob(rows[0][0], "value") if rows else None

    def kv_item(self, key: bytes) -> tuple[bytes, int] | None:
        """``(value, revision)`` of ``key`` (written so far), or None."""
        rows = self._query("SELECT value, rev FROM kv WHERE key = ?", (bytes(key),))
        if not rows:
            return None
        return self._blob(rows[0][0], "value"), self._rev(rows[0][1])

    def kv_rev(self, key: bytes) -> int:
        """The revision of ``key`` (written so far), 0 when it is absent."""
        rows = self._query("SELECT rev FROM kv WHERE key = ?", (bytes(key),))
        return self._rev(rows[0][0]) if rows else 0

    def kv_scan(self, prefix: bytes = b"", limit: int | None = None) -> list:
        """``(key, value)`` pairs of the keys starting with ``prefix``, in key (byte) order,
        at most ``limit`` of them (None: all)."""
        blob = self._blob
        return [(blob(k, "key"), blob(v, "value"))
                for k, v in self._scan("key, value", prefix, limit)]

    def kv_scan_items(self, prefix: bytes = b"", limit: int | None = None) -> list:
        """As ``kv_scan``, ``(key, value, revision)`` triples."""
        blob, rev = self._blob, self._rev
        return [(blob(k, "key"), blob(v, "value"), rev(r))
                for k, v, r in self._scan("key, value, rev", prefix, limit)]

    def _scan(self, columns: str, prefix, limit) -> list:
        prefix = bytes(prefix)
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        end = _prefix_end(prefix)
        sql = f"SELECT {columns} FROM kv WHERE key >= ?"
        args: list = [prefix]
        if end is not None:
            sql += " AND key < ?"
            args.append(end)
        sql += " ORDER BY key LIMIT ?"
        args.append(-1 if limit is None else limit)
        return self._query(sql, args)

    def _blob(self, v, what: str) -> bytes:
        """A kv cell as bytes; a cell of another type is damage (a damaged or foreign db)."""
        if type(v) is bytes:
            return v
        raise CorruptRecordError(f"{self.path}: a kv {what} is {type(v).__name__}, not a blob")

    def _rev(self, v) -> int:
        """A kv revision; anything but an index 1 .. the applied index is damage."""
        if type(v) is int and 0 < v <= self._applied:
            return v
        raise CorruptRecordError(f"{self.path}: a kv revision is {v!r}, not an index "
                                 f"1..{self._applied} (the applied index)")

    # -- copies and lifecycle ------------------------------------------------------------------

    def backup(self, dest) -> None:
        """Write a consistent copy of the database to ``dest`` with SQLite's backup API
        (commits the open transaction first, so the copy holds everything written so far):
        written as ``dest.tmp``, fsynced, renamed, directory fsynced."""
        self.sync()
        dest = os.fspath(dest)
        tmp = dest + ".tmp"
        try:
            if os.path.exists(tmp):
                os.unlink(tmp)
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                self._conn.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
            dfd = os.open(os.path.dirname(os.path.abspath(dest)),
                          os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"backup of {self.path} to {dest} failed: {exc}") from exc

    def backup_to(self, dest) -> None:
        """A consistent copy of the COMMITTED database at ``dest`` (not fsynced: a scratch
        copy), made through a new connection so it may run in another thread while this
        store keeps writing: one backup step holds one read transaction (WAL mode), so the
        copy is one commit's state."""
        self._check()
        dest = os.fspath(dest)
        try:
            if os.path.exists(dest):
                os.unlink(dest)
            src = sqlite3.connect(self.path, isolation_level=None)
            try:
                target = sqlite3.connect(dest, isolation_level=None)
                try:
                    src.backup(target, pages=-1)
                finally:
                    target.close()
            finally:
                src.close()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"copy of {self.path} to {dest} failed: {exc}") from exc

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
