"""The replicated state machine: committed log entries in, KV state and client answers out.

Place in the architecture: the top of ``fastraft.statemachine``, called by the runtime
(server) with the committed entries of each Ready batch, and by the snapshotter
(``snapshotter.py``) to stream its state to a ``SnapshotStore``. It owns a ``KVStore``
(``kv.py``) and a ``SessionTable`` (``sessions.py``). Deterministic and IO-free: the same log
gives the same state and the same answers on every node, because time enters only through the
leader timestamps in the commands. Commands are decoded by ``fastraft.codec`` (the one msgpack
module; the formats are in its docstring).

Answers are ``(status, value)`` with the ``codec.ST_*`` statuses::

    REGISTER         (ST_OK, session id = the entry's index)
    PUT              (ST_OK, None)
    DELETE           (ST_OK, existed: bool)
    CAS              (ST_OK, swapped: bool)
    CAS_REV          (ST_OK, [swapped: bool, the key's revision after it (0: absent)])
    KEEPALIVE        (ST_OK, None)
    LEASE_GRANT      (ST_OK, lease id = the entry's index)
    LEASE_REVOKE     (ST_OK, existed: bool)
    LEASE_KEEPALIVE  (ST_OK, ttl_ms)
    errors           (ST_SESSION_EXPIRED | ST_NO_LEASE | ST_BUSY | ST_INVALID | ST_ERROR,
                      message: str)

and ``None`` for the leader's no-op (the empty payload) and for TICK.

Revisions, leases and events (docs/architecture.md, "Coordination"): the revision of a write
is the index of its entry; each key keeps the revision of its last write (``get_item``). A
put, cas or revision cas naming a lease attaches the key to it (one that does not exist:
ST_NO_LEASE, nothing written); without one, the key is detached. Before each command the
clock moves to its timestamp and the leases whose deadline it reached expire
(``leases.py``): their keys are deleted, in key order, at that entry's revision. The first
command of a higher term first refreshes every lease (a new leader). With ``events`` a list,
every change is appended to it as ``(revision, EV_PUT | EV_DELETE, key, value | None)``.

Snapshot stream (``snapshot_chunks`` / ``restore``): msgpack values, one after the other, cut
into chunks of ``chunk_bytes`` (the last one shorter; a boundary may fall inside a value)::

    [2, applied_index, clock, session_timeout_ms, n_keys, n_sessions, n_leases, lease_term]
                                     header
    [k1, v1, rev1, k2, v2, rev2, ...]
                                     key/value batches, keys strictly ascending across
                                     batches, n_keys triples in all: 1,000 each (the last
                                     fewer), cut further at about 4 MiB; the cuts depend only
                                     on the content, so equal states give equal streams
    [[id, last_active, floor, [seq, status, value, ...]], ...]
                                     session batches in last-activity order (least recent
                                     first), n_sessions in all; ``floor`` = the highest
                                     first_unacked seen (every seq below it is acknowledged)
    [[lease_id, ttl_ms, deadline, [key, ...]], ...]
                                     lease batches by id, n_leases in all, their keys in order
    ["end", n_keys, n_sessions, n_leases]
                                     end marker: a stream without it is truncated

A batch list is never empty; an empty store has no KV batch, no sessions no session batch, no
leases no lease batch. ``restore`` (``restorer.py``) checks every shape, type, order and count
and raises CorruptRecordError on any mismatch; it also reads format 1 (the header's first six
fields, pairs instead of triples, no leases, an end marker without n_leases), whose keys get
the revision 1 ("present, revision unknown").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from .. import codec
from ..errors import CorruptRecordError, RemoteProtocolError
from ..raft.confchange import CONF_MARKER
from .kv import KVStore
from .leases import DEFAULT_MAX_LEASES, MAX_TTL_MS, Lease, LeaseTable
from .restorer import Restorer
from .sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT_MS, SessionTable

__all__ = ["KVStateMachine", "SNAPSHOT_FORMAT", "DEFAULT_CHUNK_BYTES", "EV_PUT", "EV_DELETE"]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2
DEFAULT_CHUNK_BYTES = 64 * 1024
#: At most this many pairs per KV batch value, and about this many bytes.
PAIRS_PER_BATCH = 1000
BATCH_BYTES = 4 << 20
#: Session batches close at this many sessions or this many cached responses.
SESSIONS_PER_BATCH = 256
RESPONSES_PER_BATCH = 50_000
#: Lease batches close at this many leases or this many attached keys.
LEASES_PER_BATCH = 256
LEASE_KEYS_PER_BATCH = 10_000
#: The types of an event (``events``).
EV_PUT = 0
EV_DELETE = 1
_END = "end"

ST_OK = codec.ST_OK
ST_ERROR = codec.ST_ERROR
CMD_REGISTER = codec.CMD_REGISTER
CMD_PUT = codec.CMD_PUT
CMD_DELETE = codec.CMD_DELETE
CMD_CAS = codec.CMD_CAS
CMD_KEEPALIVE = codec.CMD_KEEPALIVE
CMD_CAS_REV = codec.CMD_CAS_REV
CMD_LEASE_GRANT = codec.CMD_LEASE_GRANT
CMD_LEASE_REVOKE = codec.CMD_LEASE_REVOKE
CMD_LEASE_KEEPALIVE = codec.CMD_LEASE_KEEPALIVE
CMD_TICK = codec.CMD_TICK
ST_NO_LEASE = codec.ST_NO_LEASE
_OK_NONE = (ST_OK, None)
_OK_TRUE = (ST_OK, True)
_OK_FALSE = (ST_OK, False)


class KVStateMachine:
    """The KV store plus the client-session table, driven by committed log entries."""

    def __init__(self, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_leases: int = DEFAULT_MAX_LEASES) -> None:
        self.applied_index = 0
        self._kv = KVStore()
        self._sessions = SessionTable(session_timeout_ms, max_sessions)
        self._leases = LeaseTable(max_leases)
        #: the term of the last command applied (a higher one refreshes the leases)
        self.lease_term = 0
        #: When a list, every change applied is appended to it as an ``Event`` tuple
        #: ``(revision, EV_PUT | EV_DELETE, key, value | None)`` in apply order: the node
        #: keeps them for its watchers (the machine keeps nothing).
        self.events: list | None = None
        self._bad_commands = 0

    # -- properties --------------------------------------------------------------------------

    @property
    def clock(self) -> int:
        """The highest leader timestamp (ms) applied so far; never goes backwards."""
        return self._sessions.clock

    @property
    def session_timeout_ms(self) -> int:
        return self._sessions.timeout_ms

    @property
    def max_sessions(self) -> int:
        return self._sessions.max_sessions

    @property
    def kv(self) -> KVStore:
        """The KV store (read only for callers)."""
        return self._kv

    @property
    def sessions(self) -> SessionTable:
        """The session table (read only for callers)."""
        return self._sessions

    @property
    def leases(self) -> LeaseTable:
        """The lease table (read only for callers)."""
        return self._leases

    def next_lease_deadline(self) -> int | None:
        """The clock time (ms, leader timestamps) at which the next lease expires, or None:
        the leader proposes a CMD_TICK once its clock passes it."""
        return self._leases.next_deadline()

    # -- applying ----------------------------------------------------------------------------

    def apply(self, index: int, payload: bytes, term: int = 0) -> tuple[int, object] | None:
        """Apply the committed entry ``index`` (of ``term``: 0 when unknown, which never
        refreshes the leases); returns its answer (None for a no-op)."""
        if index != self.applied_index + 1:
            raise AssertionError(f"applying index {index} after {self.applied_index}: "
                                 f"the log has a gap or a repeat")
        self.applied_index = index
        if not payload:
            return None
        try:
            cmd = codec.decode_command(payload)
        except RemoteProtocolError as exc:
            if payload[0] == CONF_MARKER:
                return None         # a configuration change: the engine's and runtime's
            return self._bad(index, exc)
        return self._dispatch(index, cmd, term)

    def apply_entries(self, first_index: int, entries: list[tuple[int, bytes]],
                      known: dict | None = None) -> list[tuple[int, object]]:
        """Apply consecutive committed entries ``(term, payload)`` starting at
        ``first_index``; returns ``[(index, answer), ...]`` for every entry (no-ops too).
        ``known``: index -> (payload, command tuple) of the commands this node proposed as
        leader (``Requests``); an entry whose payload IS that object (the same entry, not
        one another leader wrote at that index) is applied without decoding it again. The
        entries' indexes are popped from it."""
        if first_index != self.applied_index + 1:
            raise AssertionError(f"applying index {first_index} after {self.applied_index}: "
                                 f"the log has a gap or a repeat")
        out = []
        append = out.append
        decode = codec.decode_command
        dispatch = self._dispatch
        index = first_index
        try:
            for term, payload in entries:
                if not payload:
                    append((index, None))
                elif known and (k := known.pop(index, None)) is not None and \
                        k[0] is payload:
                    append((index, dispatch(index, k[1], term)))
                else:
                    try:
                        cmd = decode(payload)
                    except RemoteProtocolError as exc:
                        # A configuration change is not a command (the engine and the
                        # runtime's member book follow it); anything else is an error.
                        append((index, None if payload[0] == CONF_MARKER
                                else self._bad(index, exc)))
                    else:
                        append((index, dispatch(index, cmd, term)))
                index += 1
        finally:
            self.applied_index = index - 1
        return out

    def _bad(self, index: int, exc: RemoteProtocolError) -> tuple[int, str]:
        self._bad_commands += 1
        if self._bad_commands == 1:
            log.error("entry %d is not a valid command, answered with an error and otherwise "
                      "ignored (later ones are logged at debug level): %s", index, exc)
        else:
            log.debug("entry %d is not a valid command: %s", index, exc)
        return ST_ERROR, f"entry {index} is not a valid command: {exc}"

    def _dispatch(self, index: int, cmd: tuple, term: int = 0) -> tuple:
        sessions = self._sessions
        kind = cmd[0]
        if term > self.lease_term:
            self.lease_term = term
            if self._leases.live:
                self._leases.refresh(max(cmd[1], sessions.clock))
        if cmd[1] > sessions.clock:
            sessions.advance(cmd[1])
            if self._leases.live and (due := self._leases.due(sessions.clock)):
                self._expire(index, due)
        if kind == CMD_PUT:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            if len(cmd) == 7 and not self._leases.key_lease:    # the hot path, inlined
                key = cmd[5]
                self._kv.put(key, cmd[6], index)
                if self.events is not None:
                    self.events.append((index, EV_PUT, key, cmd[6]))
                answer = _OK_NONE
            else:
                answer = self._put(index, cmd[5], cmd[6], cmd[7] if len(cmd) == 8 else 0)
        elif kind == CMD_CAS:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            key = cmd[5]
            if self._kv.get(key) != cmd[6]:
                answer = _OK_FALSE
            else:
                answer = self._put(index, key, cmd[7], cmd[8] if len(cmd) == 9 else 0)
                if answer is _OK_NONE:
                    answer = _OK_TRUE
        elif kind == CMD_DELETE:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            answer = _OK_TRUE if self._delete(index, cmd[5]) else _OK_FALSE
        elif kind == CMD_CAS_REV:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            key = cmd[5]
            current = self._kv.rev(key)
            if current != cmd[6]:
                answer = (ST_OK, [False, current])
            else:
                answer = self._put(index, key, cmd[7], cmd[8])
                if answer is _OK_NONE:
                    answer = (ST_OK, [True, index])
        elif kind == CMD_LEASE_KEEPALIVE:
            lease = self._leases.keepalive(cmd[2], sessions.clock)
            if lease is None:
                return _no_lease(cmd[2])
            return ST_OK, lease.ttl
        elif kind == CMD_TICK:
            return None
        elif kind == CMD_LEASE_GRANT:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            ttl = cmd[5]
            if not 1 <= ttl <= MAX_TTL_MS:
                answer = (codec.ST_INVALID, f"a lease's TTL must be 1..{MAX_TTL_MS} ms")
            elif self._leases.grant(index, ttl, sessions.clock) is None:
                answer = (codec.ST_BUSY, f"too many leases (at most "
                                         f"{self._leases.max_leases}): revoke some first")
            else:
                answer = (ST_OK, index)
        elif kind == CMD_LEASE_REVOKE:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            lease = self._leases.revoke(cmd[5])
            if lease is not None:
                self._expire(index, [lease])
            answer = _OK_TRUE if lease is not None else _OK_FALSE
        elif kind == CMD_REGISTER:
            sessions.register(index)
            return ST_OK, index
        elif kind == CMD_KEEPALIVE:
            return sessions.keepalive(cmd[2], cmd[3])
        else:  # decode_command admits only the kinds above
            raise AssertionError(f"unknown command kind {kind}")
        s.remember(cmd[3], answer)
        return answer

    def _put(self, index: int, key: bytes, value: bytes, lease: int) -> tuple:
        """Write ``key`` at revision ``index``, attached to ``lease`` (0: none); the answer
        (``_OK_NONE``, or no such lease: nothing written)."""
        leases = self._leases
        if lease:
            if lease not in leases:
                return _no_lease(lease)
            leases.attach(key, lease)
        elif leases.key_lease:
            leases.detach(key)
        self._kv.put(key, value, index)
        if self.events is not None:
            self.events.append((index, EV_PUT, key, value))
        return _OK_NONE

    def _delete(self, index: int, key: bytes) -> bool:
        if not self._kv.delete(key):
            return False
        if self._leases.key_lease:
            self._leases.detach(key)
        if self.events is not None:
            self.events.append((index, EV_DELETE, key, None))
        return True

    def _expire(self, index: int, leases: list[Lease]) -> None:
        """Delete the keys of ``leases`` (expired or revoked, already removed from the table),
        in key order, at revision ``index``."""
        kv = self._kv
        events = self.events
        for lease in leases:
            for key in sorted(lease.keys):
                kv.delete(key)
                if events is not None:
                    events.append((index, EV_DELETE, key, None))

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(key)

    def get_item(self, key: bytes) -> tuple[bytes, int] | None:
        """``(value, revision)`` of ``key``, or None when it is absent."""
        value = self._kv.get(key)
        return None if value is None else (value, self._kv.rev(key))

    def scan(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self._kv.scan(prefix, limit)

    def scan_items(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes, int]]:
        """As ``scan``, each pair with its key's revision."""
        rev = self._kv.rev
        return [(k, v, rev(k)) for k, v in self._kv.scan(prefix, limit)]

    def stats(self) -> dict:
        return {"keys": len(self._kv), "sessions": len(self._sessions),
                "leases": len(self._leases), "applied_index": self.applied_index,
                "clock": self.clock}

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot_chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The state as a stream of chunks (format in the module docstring). Uses a private
        msgpack packer, so it may run in a forked child. Do not apply entries while the
        iterator is being consumed."""
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        return self._snapshot_chunks(chunk_bytes)

    def _snapshot_chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        table = self._sessions
        head = [SNAPSHOT_FORMAT, self.applied_index, table.clock, table.timeout_ms,
                len(self._kv), len(table), len(self._leases), self.lease_term]
        end = [_END, len(self._kv), len(table), len(self._leases)]
        parts: list[bytes] = []
        size = 0
        for b in self._packed_values(head, end):
            parts.append(b)
            size += len(b)
            if size >= chunk_bytes:
                data = b"".join(parts)
                cut = size - size % chunk_bytes
                for lo in range(0, cut, chunk_bytes):
                    yield data[lo:lo + chunk_bytes]
                parts = [data[cut:]] if cut < size else []
                size -= cut
        if parts:
            yield b"".join(parts)

    def _packed_values(self, head: list, end: list) -> Iterator[bytes]:
        """The stream's values, each packed with a private packer."""
        pack = codec.new_packer()
        yield pack(head)
        for value in self._kv_values(self._kv):
            yield pack(value)
        batch: list = []
        responses = 0
        for s in self._sessions.sessions():
            flat = []
            for seq, (status, value) in s.responses.items():
                flat += (seq, status, value)
            batch.append([s.id, s.last_active, s.floor, flat])
            responses += len(s.responses)
            if len(batch) >= SESSIONS_PER_BATCH or responses >= RESPONSES_PER_BATCH:
                yield pack(batch)
                batch = []
                responses = 0
        if batch:
            yield pack(batch)
        batch = []
        keys = 0
        for lease in self._leases.leases():
            batch.append([lease.id, lease.ttl, lease.deadline, sorted(lease.keys)])
            keys += len(lease.keys)
            if len(batch) >= LEASES_PER_BATCH or keys >= LEASE_KEYS_PER_BATCH:
                yield pack(batch)
                batch = []
                keys = 0
        if batch:
            yield pack(batch)
        yield pack(end)

    @staticmethod
    def _kv_values(kv: KVStore) -> Iterator[list]:
        """The KV batches: flat [k, v, rev, ...] lists of PAIRS_PER_BATCH keys (the last one
        fewer), cut further where their bytes exceed BATCH_BYTES. The cuts depend on the
        content only (not on the index's buckets), so equal states give equal streams."""
        getter = kv.data.__getitem__
        rev = kv.revs.__getitem__
        pending: list[bytes] = []
        for bucket in kv.key_batches():
            pending += bucket
            if len(pending) < PAIRS_PER_BATCH:
                continue
            n = len(pending) - len(pending) % PAIRS_PER_BATCH
            for lo in range(0, n, PAIRS_PER_BATCH):
                yield from _triples(pending[lo:lo + PAIRS_PER_BATCH], getter, rev)
            del pending[:n]
        if pending:
            yield from _triples(pending, getter, rev)

    @classmethod
    def restore(cls, chunks: Iterable[bytes], max_sessions: int = DEFAULT_MAX_SESSIONS,
                max_leases: int = DEFAULT_MAX_LEASES) -> KVStateMachine:
        """A machine rebuilt from a snapshot stream (as made by ``snapshot_chunks``). The
        session timeout comes from the snapshot (it is part of the replicated state);
        ``max_sessions`` and ``max_leases`` are this node's configuration (``restorer.py``
        parses and checks the stream). Any damage raises CorruptRecordError;
        an exception raised by ``chunks`` itself is passed on. It may run on a worker thread
        while an event loop keeps running (the runtime builds a received snapshot's state
        so): fed small chunks, no step holds the GIL for long (the values are gathered batch
        by batch), but for the resizes of the one dict of values (about 40 ms at a million
        keys)."""
        r = Restorer()
        decoder = codec.SnapshotDecoder()
        for chunk in chunks:
            try:
                values = decoder.feed(chunk)
            except RemoteProtocolError as exc:
                raise CorruptRecordError(f"state machine snapshot: {exc}") from None
            for v in values:
                try:
                    r.value(v)
                except CorruptRecordError:
                    raise
                except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
                    raise CorruptRecordError(
                        f"state machine snapshot: malformed value ({type(exc).__name__}: "
                        f"{exc})") from None
        r.check_done()
        m = cls(r.timeout_ms, max_sessions, max_leases)
        m.applied_index = r.applied
        m.lease_term = r.lease_term
        m._kv = KVStore.from_index(r.keys, r.data, r.revs)
        m._sessions.load(r.clock, r.sessions)
        m._leases.load(r.leases)
        return m


def _no_lease(lid: int) -> tuple:
    return ST_NO_LEASE, f"lease {lid} does not exist (expired, revoked or never granted)"


def _triples(keys: list[bytes], getter, rev) -> Iterator[list]:
    values = list(map(getter, keys))
    if sum(map(len, values)) + sum(map(len, keys)) <= BATCH_BYTES:
        flat = [None] * (3 * len(keys))
        flat[0::3] = keys
        flat[1::3] = values
        flat[2::3] = map(rev, keys)
        yield flat
        return
    flat = []
    size = 0
    for k, v in zip(keys, values):
        flat += (k, v, rev(k))
        size += len(k) + len(v)
        if size >= BATCH_BYTES:
            yield flat
            flat = []
            size = 0
    if flat:
        yield flat
