"""The KV state machine kept in SQLite: the same commands, sessions and answers as
``KVStateMachine``, with the state in the node's database instead of memory.

Place in the architecture: part of ``fastraft.statemachine`` (it inherits the command logic of
``machine.KVStateMachine`` unchanged), used by the runtime's SQLite backend
(``fastraft.server.backends.SqliteBackend``). It imports no IO module itself: the state lives
in the ``fastraft.storage.sqlite.SqliteStore`` it is given, and a snapshot file is written from
a store holding a copy of the database that the backend opens. Encodings go through
``fastraft.codec``.

How it stays exact:

- KV writes of a batch go to an overlay (reads inside the batch see them: a CAS after a put
  of the same key); at the end of ``apply_entries`` the overlay, the sessions the batch
  touched or removed (expiry, eviction), the clock and the applied index are written by one
  ``SqliteStore.apply_batch`` — one SAVEPOINT, durable with the node's next sync. A restart
  therefore replays nothing already applied.
- Sessions stay in memory too (the table is small and hot; it reports the sessions it drops
  in ``SessionTable.removed``) and are written row by row as they change, each with its
  place in last-activity order (``ord``), so a restart rebuilds the very same order (it
  decides evictions).
- Snapshots for lagging followers are made from a consistent copy of the database (SQLite's
  backup API) and written in the stream format of ``KVStateMachine`` (the copy is loaded into
  a ``KVStateMachine`` to write it), so a WAL node can install a SQLite node's snapshot and
  the other way round. The copy may be applied past the index the runtime asked for: the
  file records the configuration asked for (voters, outgoing, learners and context, whole)
  unless a configuration change lies in between, when no file is made
  (``snapshot_from_copy``).
"""

from __future__ import annotations

from .. import codec
from ..errors import CorruptRecordError, LocalProtocolError, RemoteProtocolError
from ..raft import SnapshotMeta
from ..raft.confchange import CONF_MARKER
from .kv import KVStore
from .machine import KVStateMachine
from .sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT_MS, Session

__all__ = ["SqliteStateMachine", "encode_session", "decode_session"]

_ABSENT = object()
#: The first byte of a configuration change's log payload (``fastraft.raft.confchange``).
CONF_PREFIX = bytes([CONF_MARKER])


def encode_session(s: Session) -> bytes:
    """A session as the bytes of its database row (``decode_session`` reads them back)."""
    flat = []
    for seq, (status, value) in s.responses.items():
        flat += (seq, status, value)
    return codec.pack([s.last_active, s.floor, flat])


def decode_session(sid: int, blob: bytes) -> Session:
    """The session ``sid`` from its row's bytes; CorruptRecordError for malformed bytes."""
    try:
        v = codec.unpack(blob)
    except RemoteProtocolError as exc:
        raise CorruptRecordError(f"session {sid}: {exc}") from None
    if (type(v) is not list or len(v) != 3 or type(v[0]) is not int
            or type(v[1]) is not int or type(v[2]) is not list or len(v[2]) % 3):
        raise CorruptRecordError(f"session {sid}: malformed row")
    flat = v[2]
    responses = {}
    for i in range(0, len(flat), 3):
        seq, status, value = flat[i:i + 3]
        if type(seq) is not int or type(status) is not int:
            raise CorruptRecordError(f"session {sid}: malformed cached response")
        responses[seq] = (status, value)
    return Session(sid, v[0], v[1], responses)


class _SqliteKV:
    """The KV operations the state machine uses, over the database plus a batch overlay."""

    def __init__(self, store) -> None:
        self.store = store
        self.overlay: dict = {}

    def get(self, key: bytes) -> bytes | None:
        v = self.overlay.get(key, _ABSENT)
        if v is not _ABSENT:
            return v
        return self.store.kv_get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.overlay[key] = value

    def delete(self, key: bytes) -> bool:
        existed = self.get(key) is not None
        self.overlay[key] = None
        return existed

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        if self.get(key) != expected:
            return False
        self.overlay[key] = new
        return True

    def scan(self, prefix: bytes, limit: int) -> list:
        return self.store.kv_scan(prefix, limit)

    def __len__(self) -> int:
        return self.store.kv_count()

    def take(self) -> tuple[list, list]:
        puts = [(k, v) for k, v in self.overlay.items() if v is not None]
        deletes = [k for k, v in self.overlay.items() if v is None]
        self.overlay = {}
        return puts, deletes


class SqliteStateMachine(KVStateMachine):
    """``KVStateMachine`` with its state in a ``SqliteStore``: the same answers; each applied
    batch is written in one savepoint with its applied index, so a reopen replays nothing."""

    def __init__(self, store, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        super().__init__(session_timeout_ms, max_sessions)
        self.store = store
        self._kv = _SqliteKV(store)
        self._sessions.removed = []
        self._touched: dict = {}
        self.applied_index = store.applied_index()
        rows = store.session_rows()
        self._sessions.load(store.machine_clock(),
                            [decode_session(sid, b) for sid, _o, b in rows])
        self._ord = rows[-1][1] if rows else 0

    # -- applying ----------------------------------------------------------------------------

    def _dispatch(self, index: int, cmd: tuple) -> tuple:
        sid = index if cmd[0] == codec.CMD_REGISTER else cmd[2]
        touched = self._touched
        touched.pop(sid, None)
        touched[sid] = None
        return super()._dispatch(index, cmd)

    def apply(self, index: int, payload: bytes):
        out = super().apply(index, payload)
        self._flush()
        return out

    def apply_entries(self, first_index: int, entries: list, known: dict | None = None
                      ) -> list:
        try:
            return super().apply_entries(first_index, entries, known)
        finally:
            self._flush()

    def _flush(self) -> None:
        puts, deletes = self._kv.take()
        table = self._sessions
        gone = table.removed
        table.removed = []
        rows = []
        for sid in self._touched:
            s = table.get(sid)
            if s is None:
                gone.append(sid)
            else:
                self._ord += 1
                rows.append((sid, self._ord, encode_session(s)))
        self._touched = {}
        self.store.apply_batch(self.applied_index, puts, deletes, rows, gone, table.clock)

    # -- reads and snapshots -----------------------------------------------------------------

    def key_count(self) -> int:
        """How many keys the database holds (for logs)."""
        return self.store.kv_count()

    def snapshot_chunks(self, chunk_bytes: int = 0):
        raise NotImplementedError("SQLite snapshots are made from a database copy "
                                  "(snapshot_from_copy)")

    def install(self, chunks) -> None:
        """Replace the whole state with a snapshot stream (from the leader), in the store's
        open transaction."""
        self.install_state(KVStateMachine.restore(chunks, self._sessions.max_sessions))

    def install_state(self, m: KVStateMachine) -> None:
        """Replace the whole state with that of ``m`` (a snapshot restored already, e.g. on
        another thread), in the store's open transaction."""
        sessions = list(m.sessions.sessions())
        rows = [(s.id, i, encode_session(s)) for i, s in enumerate(sessions, 1)]
        self.store.replace_state(m.applied_index, m.kv.items(), rows, m.clock)
        self._kv.overlay = {}
        self._touched = {}
        self._ord = len(rows)
        self._sessions.removed = []
        self._sessions.load(m.clock, sessions)
        self.applied_index = m.applied_index

    @staticmethod
    def snapshot_from_copy(copy, snaps, meta: SnapshotMeta,
                           session_timeout_ms: int) -> tuple[SnapshotMeta, str]:
        """Write a snapshot file of ``copy`` (a ``SqliteStore`` open on a consistent copy of
        the database; the caller closes it) into ``snaps``; its index is the copy's applied
        index. Its configuration (voters, outgoing, learners and context, kept whole) is
        ``meta``'s — the one at ``meta.index`` — or, when the copy holds a snapshot installed
        after ``meta.index``, that snapshot's mark; the term is ``meta.term`` when the index
        is ``meta.index``. A configuration change applied between that configuration and the
        copy's applied index would make it wrong: then LocalProtocolError (no file is
        written; the runtime's next snapshot, at a later applied index, is asked for the new
        configuration)."""
        applied = copy.applied_index()
        base = meta
        mark = copy.snapshot_mark
        if mark is not None and meta.index < mark.index <= applied:
            base = mark             # a leader's snapshot installed while the copy was made
        if applied != base.index:
            change = copy.first_with_prefix(base.index + 1, applied + 1, CONF_PREFIX)
            if change is not None:
                raise LocalProtocolError(
                    f"snapshot not taken: the copy is applied to {applied}, past a "
                    f"configuration change at {change} after the configuration asked for "
                    f"(at {base.index}); a later snapshot will record the new one")
        term = base.term if applied == base.index else copy.term(applied)
        pairs = copy.kv_scan(b"", None)
        m = KVStateMachine(session_timeout_ms)
        m._kv = KVStore.from_sorted([k for k, _v in pairs], [v for _k, v in pairs])
        del pairs
        m._sessions.load(copy.machine_clock(),
                         [decode_session(sid, b) for sid, _o, b in copy.session_rows()])
        m.applied_index = applied
        out = base._replace(index=applied, term=term)
        return out, snaps.save(out, m.snapshot_chunks())
