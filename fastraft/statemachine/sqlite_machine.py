"""The KV state machine kept in SQLite: the same commands, sessions and answers as
``KVStateMachine``, with the state in the node's database instead of memory.

Place in the architecture: part of ``fastraft.statemachine`` (it inherits the command logic of
``machine.KVStateMachine`` unchanged), used by the runtime's SQLite backend
(``fastraft.server.backends.SqliteBackend``). It imports no IO module itself: the state lives
in the ``fastraft.storage.sqlite.SqliteStore`` it is given, and a snapshot file is written from
a store holding a copy of the database that the backend opens. Encodings go through
``fastraft.codec``.

How it stays exact:

- KV writes of a batch go to an overlay, each with its revision (reads inside the batch see
  them: a CAS after a put of the same key, a revision cas after a write); at the end of
  ``apply_entries`` the overlay (each key with its revision and the lease it is attached to
  then), the sessions the batch touched or removed (expiry, eviction), the leases it
  created, changed or removed, the clock, the lease term and the applied index are written
  by one ``SqliteStore.apply_batch`` — one SAVEPOINT, durable with the node's next sync. A
  restart therefore replays nothing already applied.
- Sessions and leases stay in memory too (small and hot tables; the session table reports
  the sessions it drops in ``SessionTable.removed``, the lease table every lease it creates,
  changes or removes in ``LeaseTable.changed``) and are written row by row as they change:
  each session with its place in last-activity order (``ord``), so a restart rebuilds the
  very same order (it decides evictions); each lease as its TTL and deadline, its keys being
  the kv rows that name it (a key's attachment changes only with a write of that key, so
  the overlay carries every change). A reopen reloads both (``stored_leases`` checks the
  leases as a snapshot's are checked).
- Change events (``events``) are appended by the inherited command logic, as in memory.
- Snapshots for lagging followers are made from a consistent copy of the database (SQLite's
  backup API) and written in the stream format of ``KVStateMachine`` (the copy is loaded into
  a ``KVStateMachine``, revisions, leases and lease term included, to write it), so a WAL
  node can install a SQLite node's snapshot and the other way round. A snapshot installed
  from the leader (``install``, ``install_state``) replaces keys, revisions, sessions,
  leases and the lease term. The copy may be applied past the index the runtime asked for: the
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
from .leases import DEFAULT_MAX_LEASES, MAX_TTL_MS, Lease
from .machine import KVStateMachine
from .sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT_MS, Session

__all__ = ["SqliteStateMachine", "encode_session", "decode_session", "stored_leases"]

_ABSENT = object()
#: The first byte of a configuration change's log payload (``fastraft.raft.confchange``).
CONF_PREFIX = bytes([CONF_MARKER])
CMD_REGISTER = codec.CMD_REGISTER


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
    """The KV operations the state machine uses (``KVStore``'s: ``get``, ``rev``, ``put``,
    ``delete``, ``cas``, ``scan``, ``len``), over the database plus a batch overlay: key ->
    ``(value, revision)``, or None for a key deleted in the batch. Reads of the database
    (``scan``, ``len``, ``items``) see what earlier batches wrote: the machine reads them
    between batches only."""

    def __init__(self, store) -> None:
        self.store = store
        self.overlay: dict = {}

    def get(self, key: bytes) -> bytes | None:
        v = self.overlay.get(key, _ABSENT)
        if v is _ABSENT:
            return self.store.kv_get(key)
        return None if v is None else v[0]

    def rev(self, key: bytes) -> int:
        """The revision of ``key``'s last write, 0 when it is absent."""
        v = self.overlay.get(key, _ABSENT)
        if v is _ABSENT:
            return self.store.kv_rev(key)
        return 0 if v is None else v[1]

    def item(self, key: bytes) -> tuple[bytes, int] | None:
        """``(value, revision)`` of ``key``, or None when it is absent."""
        v = self.overlay.get(key, _ABSENT)
        if v is _ABSENT:
            return self.store.kv_item(key)
        return v

    def __contains__(self, key: bytes) -> bool:
        return self.rev(key) != 0

    def put(self, key: bytes, value: bytes, rev: int = 0) -> None:
        self.overlay[key] = (value, rev)

    def delete(self, key: bytes) -> bool:
        existed = key in self
        self.overlay[key] = None
        return existed

    def cas(self, key: bytes, expected: bytes | None, new: bytes, rev: int = 0) -> bool:
        if self.get(key) != expected:
            return False
        self.overlay[key] = (new, rev)
        return True

    def scan(self, prefix: bytes, limit: int) -> list:
        return self.store.kv_scan(prefix, limit)

    def items(self) -> list:
        """Every pair in key order (read only callers; between batches)."""
        return self.store.kv_scan(b"", None)

    def keys(self) -> list:
        return [k for k, _v in self.store.kv_scan(b"", None)]

    def __len__(self) -> int:
        return self.store.kv_count()

    def take(self, key_lease: dict) -> tuple[list, list]:
        """The batch's writes: ``(key, value, revision, lease id or 0)`` rows (the lease a
        key is attached to at the end of the batch: every change of attachment comes with a
        write of the key, so the rows carry them all) and the deleted keys; the overlay is
        emptied."""
        puts = []
        deletes = []
        if key_lease:
            lease_of = key_lease.get
            for k, v in self.overlay.items():
                if v is None:
                    deletes.append(k)
                else:
                    puts.append((k, v[0], v[1], lease_of(k, 0)))
        else:
            for k, v in self.overlay.items():
                if v is None:
                    deletes.append(k)
                else:
                    puts.append((k, v[0], v[1], 0))
        self.overlay = {}
        return puts, deletes


#: The commands that name a session in ``cmd[2]`` (codec's "Commands"); REGISTER creates the
#: session of its own index; LEASE_KEEPALIVE (``cmd[2]``: a lease) and TICK name none.
_SESSION_COMMANDS = frozenset((codec.CMD_PUT, codec.CMD_DELETE, codec.CMD_CAS,
                               codec.CMD_KEEPALIVE, codec.CMD_CAS_REV, codec.CMD_LEASE_GRANT,
                               codec.CMD_LEASE_REVOKE))


def stored_leases(store, clock: int, applied: int) -> list[Lease]:
    """The leases of ``store`` (its ``lease_rows`` and ``leased_keys``), checked as a
    snapshot's are (``restorer.py``): ids 1 .. ``applied``, a TTL in range, a deadline after
    ``clock`` (leases expire in the entry that moves the clock to their deadline), every
    attached key naming a stored lease. CorruptRecordError otherwise."""
    leases = {}
    for lid, ttl, deadline in store.lease_rows():
        if not 1 <= lid <= applied or not 1 <= ttl <= MAX_TTL_MS or deadline <= clock:
            raise CorruptRecordError(
                f"{store.path}: lease {lid} (TTL {ttl}, deadline {deadline}) is not a lease "
                f"of a state at index {applied} with the clock at {clock}")
        leases[lid] = Lease(lid, ttl, deadline)
    for key, lid in store.leased_keys():
        lease = leases.get(lid)
        if lease is None:
            raise CorruptRecordError(f"{store.path}: key {key[:40]!r} is attached to lease "
                                     f"{lid}, which is not stored")
        lease.keys.add(key)
    return list(leases.values())


class SqliteStateMachine(KVStateMachine):
    """``KVStateMachine`` with its state in a ``SqliteStore``: the same answers; each applied
    batch is written in one savepoint with its applied index, so a reopen replays nothing."""

    def __init__(self, store, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_leases: int = DEFAULT_MAX_LEASES) -> None:
        super().__init__(session_timeout_ms, max_sessions, max_leases)
        self.store = store
        self._kv = _SqliteKV(store)
        self._sessions.removed = []
        self._touched: dict = {}
        self.applied_index = store.applied_index()
        rows = store.session_rows()
        clock = store.machine_clock()
        self._sessions.load(clock, [decode_session(sid, b) for sid, _o, b in rows])
        self._ord = rows[-1][1] if rows else 0
        self._leases.load(stored_leases(store, clock, self.applied_index))
        self._leases.changed = set()
        self.lease_term = store.lease_term()

    # -- applying ----------------------------------------------------------------------------

    def _dispatch(self, index: int, cmd: tuple, term: int = 0) -> tuple:
        kind = cmd[0]
        if kind in _SESSION_COMMANDS:
            sid = cmd[2]
        elif kind == CMD_REGISTER:
            sid = index
        else:
            return super()._dispatch(index, cmd, term)
        touched = self._touched
        touched.pop(sid, None)
        touched[sid] = None
        return super()._dispatch(index, cmd, term)

    def apply(self, index: int, payload: bytes, term: int = 0):
        out = super().apply(index, payload, term)
        self._flush()
        return out

    def apply_entries(self, first_index: int, entries: list, known: dict | None = None
                      ) -> list:
        try:
            return super().apply_entries(first_index, entries, known)
        finally:
            self._flush()

    def _flush(self) -> None:
        """Write what the batch changed (module docstring); nothing when no entry was
        applied (a batch refused before its first entry)."""
        if self.applied_index == self.store.applied_index():
            return
        leases = self._leases
        puts, deletes = self._kv.take(leases.key_lease)
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
        lease_rows = []
        lease_gone = []
        if leases.changed:
            live = leases.live
            for lid in sorted(leases.changed):
                lease = live.get(lid)
                if lease is None:
                    lease_gone.append(lid)
                else:
                    lease_rows.append((lid, lease.ttl, lease.deadline))
            leases.changed = set()
        self.store.apply_batch(self.applied_index, puts, deletes, rows, gone, table.clock,
                               lease_puts=lease_rows, lease_deletes=lease_gone,
                               lease_term=self.lease_term)

    # -- reads and snapshots -----------------------------------------------------------------

    def get_item(self, key: bytes) -> tuple[bytes, int] | None:
        return self._kv.item(key)

    def scan_items(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes, int]]:
        return self.store.kv_scan_items(prefix, limit)

    def key_count(self) -> int:
        """How many keys the database holds (for logs)."""
        return self.store.kv_count()

    def snapshot_chunks(self, chunk_bytes: int = 0):
        raise NotImplementedError("SQLite snapshots are made from a database copy "
                                  "(snapshot_from_copy)")

    def install(self, chunks) -> None:
        """Replace the whole state with a snapshot stream (from the leader), in the store's
        open transaction."""
        self.install_state(KVStateMachine.restore(chunks, self._sessions.max_sessions,
                                                  self._leases.max_leases))

    def install_state(self, m: KVStateMachine) -> None:
        """Replace the whole state with that of ``m`` (a snapshot restored already, e.g. on
        another thread), in the store's open transaction: keys with their revisions and
        leases, sessions, leases, clock, lease term and applied index."""
        sessions = list(m.sessions.sessions())
        rows = [(s.id, i, encode_session(s)) for i, s in enumerate(sessions, 1)]
        leases = [Lease(x.id, x.ttl, x.deadline, set(x.keys)) for x in m.leases.leases()]
        revs = m.kv.revs
        lease_of = m.leases.key_lease.get
        self.store.replace_state(
            m.applied_index, ((k, v, revs[k], lease_of(k, 0)) for k, v in m.kv.items()), rows,
            m.clock, [(x.id, x.ttl, x.deadline) for x in leases], m.lease_term)
        self._kv.overlay = {}
        self._touched = {}
        self._ord = len(rows)
        self._sessions.removed = []
        self._sessions.load(m.clock, sessions)
        self._leases.load(leases)
        self._leases.changed = set()
        self.lease_term = m.lease_term
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
        items = copy.kv_scan_items(b"", None)
        m = KVStateMachine(session_timeout_ms)
        m._kv = KVStore.from_sorted([k for k, _v, _r in items], [v for _k, v, _r in items],
                                    [r for _k, _v, r in items])
        del items
        clock = copy.machine_clock()
        m._sessions.load(clock,
                         [decode_session(sid, b) for sid, _o, b in copy.session_rows()])
        m._leases.load(stored_leases(copy, clock, applied))
        m.lease_term = copy.lease_term()
        m.applied_index = applied
        out = base._replace(index=applied, term=term)
        return out, snaps.save(out, m.snapshot_chunks())
