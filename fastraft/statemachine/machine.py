"""The replicated state machine: committed log entries in, KV state and client answers out.

Place in the architecture: the top of ``fastraft.statemachine``, called by the runtime
(server) with the committed entries of each Ready batch, and by the snapshotter
(``snapshotter.py``) to stream its state to a ``SnapshotStore``. It owns a ``KVStore``
(``kv.py``) and a ``SessionTable`` (``sessions.py``). Deterministic and IO-free: the same log
gives the same state and the same answers on every node, because time enters only through the
leader timestamps in the commands. Commands are decoded by ``fastraft.codec`` (the one msgpack
module; the formats are in its docstring).

Answers are ``(status, value)`` with the ``codec.ST_*`` statuses::

    REGISTER   (ST_OK, session id = the entry's index)
    PUT        (ST_OK, None)
    DELETE     (ST_OK, existed: bool)
    CAS        (ST_OK, swapped: bool)
    KEEPALIVE  (ST_OK, None)
    errors     (ST_SESSION_EXPIRED | ST_INVALID | ST_ERROR, message: str)

and ``None`` for the leader's no-op (the empty payload).

Snapshot stream (``snapshot_chunks`` / ``restore``): msgpack values, one after the other, cut
into chunks of ``chunk_bytes`` (the last one shorter; a boundary may fall inside a value)::

    [1, applied_index, clock, session_timeout_ms, n_keys, n_sessions]      header
    [k1, v1, k2, v2, ...]            key/value batches, keys strictly ascending across
                                     batches, n_keys pairs in all: 1,000 pairs each (the last
                                     fewer), cut further at about 4 MiB; the cuts depend only
                                     on the content, so equal states give equal streams
    [[id, last_active, floor, [seq, status, value, ...]], ...]
                                     session batches in last-activity order (least recent
                                     first), n_sessions in all; ``floor`` = the highest
                                     first_unacked seen (every seq below it is acknowledged)
    ["end", n_keys, n_sessions]      end marker: a stream without it is truncated

A batch list is never empty; an empty store has no KV batch, no sessions no session batch.
``restore`` checks every shape, type, order and count and raises CorruptRecordError on any
mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from operator import lt

from .. import codec
from ..errors import CorruptRecordError, RemoteProtocolError, short_repr
from ..raft.confchange import CONF_MARKER
from .kv import KVStore
from .sessions import (DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT_MS, Session,
                       SessionTable)

__all__ = ["KVStateMachine", "SNAPSHOT_FORMAT", "DEFAULT_CHUNK_BYTES"]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
DEFAULT_CHUNK_BYTES = 64 * 1024
#: At most this many pairs per KV batch value, and about this many bytes.
PAIRS_PER_BATCH = 1000
BATCH_BYTES = 4 << 20
#: Session batches close at this many sessions or this many cached responses.
SESSIONS_PER_BATCH = 256
RESPONSES_PER_BATCH = 50_000
_END = "end"

ST_OK = codec.ST_OK
ST_ERROR = codec.ST_ERROR
CMD_REGISTER = codec.CMD_REGISTER
CMD_PUT = codec.CMD_PUT
CMD_DELETE = codec.CMD_DELETE
CMD_CAS = codec.CMD_CAS
CMD_KEEPALIVE = codec.CMD_KEEPALIVE
_OK_NONE = (ST_OK, None)
_OK_TRUE = (ST_OK, True)
_OK_FALSE = (ST_OK, False)
_STATUSES = frozenset((codec.ST_OK, codec.ST_NOT_LEADER, codec.ST_BUSY, codec.ST_INVALID,
                       codec.ST_SESSION_EXPIRED, codec.ST_UNKNOWN, codec.ST_ERROR))
_RESPONSE_TYPES = frozenset((type(None), bool, int, bytes, str))
_U64 = (1 << 64) - 1


class KVStateMachine:
    """The KV store plus the client-session table, driven by committed log entries."""

    def __init__(self, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.applied_index = 0
        self._kv = KVStore()
        self._sessions = SessionTable(session_timeout_ms, max_sessions)
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

    # -- applying ----------------------------------------------------------------------------

    def apply(self, index: int, payload: bytes) -> tuple[int, object] | None:
        """Apply the committed entry ``index``; returns its answer (None for a no-op)."""
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
        return self._dispatch(index, cmd)

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
            for _term, payload in entries:
                if not payload:
                    append((index, None))
                elif known and (k := known.pop(index, None)) is not None and \
                        k[0] is payload:
                    append((index, dispatch(index, k[1])))
                else:
                    try:
                        cmd = decode(payload)
                    except RemoteProtocolError as exc:
                        # A configuration change is not a command (the engine and the
                        # runtime's member book follow it); anything else is an error.
                        append((index, None if payload[0] == CONF_MARKER
                                else self._bad(index, exc)))
                    else:
                        append((index, dispatch(index, cmd)))
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

    def _dispatch(self, index: int, cmd: tuple) -> tuple:
        sessions = self._sessions
        kind = cmd[0]
        if cmd[1] > sessions.clock:
            sessions.advance(cmd[1])
        if kind == CMD_PUT:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            self._kv.put(cmd[5], cmd[6])
            answer = _OK_NONE
        elif kind == CMD_CAS:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            answer = _OK_TRUE if self._kv.cas(cmd[5], cmd[6], cmd[7]) else _OK_FALSE
        elif kind == CMD_DELETE:
            s, answer = sessions.begin(cmd[2], cmd[3], cmd[4])
            if s is None:
                return answer
            answer = _OK_TRUE if self._kv.delete(cmd[5]) else _OK_FALSE
        elif kind == CMD_REGISTER:
            sessions.register(index)
            return ST_OK, index
        elif kind == CMD_KEEPALIVE:
            return sessions.keepalive(cmd[2], cmd[3])
        else:  # decode_command admits only the kinds above
            raise AssertionError(f"unknown command kind {kind}")
        s.remember(cmd[3], answer)
        return answer

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(key)

    def scan(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        return self._kv.scan(prefix, limit)

    def stats(self) -> dict:
        return {"keys": len(self._kv), "sessions": len(self._sessions),
                "applied_index": self.applied_index, "clock": self.clock}

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
                len(self._kv), len(table)]
        end = [_END, len(self._kv), len(table)]
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
        yield pack(end)

    @staticmethod
    def _kv_values(kv: KVStore) -> Iterator[list]:
        """The KV batches: flat [k, v, ...] lists of PAIRS_PER_BATCH pairs (the last one
        fewer), cut further where their bytes exceed BATCH_BYTES. The cuts depend on the
        content only (not on the index's buckets), so equal states give equal streams."""
        getter = kv.data.__getitem__
        pending: list[bytes] = []
        for bucket in kv.key_batches():
            pending += bucket
            if len(pending) < PAIRS_PER_BATCH:
                continue
            n = len(pending) - len(pending) % PAIRS_PER_BATCH
            for lo in range(0, n, PAIRS_PER_BATCH):
                yield from _pairs(pending[lo:lo + PAIRS_PER_BATCH], getter)
            del pending[:n]
        if pending:
            yield from _pairs(pending, getter)

    @classmethod
    def restore(cls, chunks: Iterable[bytes],
                max_sessions: int = DEFAULT_MAX_SESSIONS) -> KVStateMachine:
        """A machine rebuilt from a snapshot stream (as made by ``snapshot_chunks``). The
        session timeout comes from the snapshot (it is part of the replicated state);
        ``max_sessions`` is this node's configuration. Any damage raises CorruptRecordError;
        an exception raised by ``chunks`` itself is passed on. It may run on a worker thread
        while an event loop keeps running (the runtime builds a received snapshot's state
        so): fed small chunks, no step holds the GIL for long (the values are gathered batch
        by batch), but for the resizes of the one dict of values (about 40 ms at a million
        keys)."""
        r = _Restorer(max_sessions)
        for chunk in chunks:
            try:
                values = r.decoder.feed(chunk)
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
        return r.finish()


def _pairs(keys: list[bytes], getter) -> Iterator[list]:
    values = list(map(getter, keys))
    if sum(map(len, values)) + sum(map(len, keys)) <= BATCH_BYTES:
        flat = [None] * (2 * len(keys))
        flat[0::2] = keys
        flat[1::2] = values
        yield flat
        return
    flat = []
    size = 0
    for k, v in zip(keys, values):
        flat += (k, v)
        size += len(k) + len(v)
        if size >= BATCH_BYTES:
            yield flat
            flat = []
            size = 0
    if flat:
        yield flat


def _corrupt(what: str) -> CorruptRecordError:
    return CorruptRecordError(f"state machine snapshot: {what}")


def _is_uint(v) -> bool:
    return type(v) is int and 0 <= v <= _U64


class _Restorer:
    """The parser of a snapshot stream: header, KV batches, session batches, end marker."""

    def __init__(self, max_sessions: int) -> None:
        self.decoder = codec.SnapshotDecoder()
        self.max_sessions = max_sessions
        self.stage = 0              # 0 header, 1 kv, 2 sessions, 3 end, 4 done
        self.header: list = []
        self.keys: list[bytes] = []
        #: the values by key, filled batch by batch (no one call over every key: a restore
        #: on a worker thread must not hold the GIL for long, ``restore``)
        self.data: dict[bytes, bytes] = {}
        self.sessions: list[Session] = []
        self.ids: set[int] = set()
        self.n_keys = self.n_sessions = 0

    def value(self, v) -> None:
        if self.stage == 0:
            self._header(v)
        elif self.stage == 1:
            self._kv(v)
        elif self.stage == 2:
            self._sessions(v)
        elif self.stage == 3:
            self._end(v)
        else:
            raise _corrupt("data after the end marker")
        self._next_stage()

    def _next_stage(self) -> None:
        if self.stage == 1 and len(self.keys) == self.n_keys:
            self.stage = 2
        if self.stage == 2 and len(self.sessions) == self.n_sessions:
            self.stage = 3

    def _header(self, v) -> None:
        if type(v) is not list or len(v) != 6 or not all(_is_uint(x) for x in v):
            raise _corrupt(f"bad header {short_repr(v)}: expected 6 unsigned integers")
        if v[0] != SNAPSHOT_FORMAT:
            raise _corrupt(f"unknown format version {v[0]}")
        self.header = v
        self.n_keys, self.n_sessions = v[4], v[5]
        self.stage = 1

    def _kv(self, v) -> None:
        if type(v) is not list or not v or len(v) % 2:
            raise _corrupt(f"bad key/value batch after {len(self.keys)} keys: expected a "
                           f"non-empty flat list of pairs")
        if set(map(type, v)) != {bytes}:
            raise _corrupt(f"key/value batch after {len(self.keys)} keys holds a non-bytes "
                           f"item")
        keys = v[0::2]
        if len(self.keys) + len(keys) > self.n_keys:
            raise _corrupt(f"more key/value pairs than the {self.n_keys} of the header")
        if (self.keys and not self.keys[-1] < keys[0]) or not all(map(lt, keys, keys[1:])):
            raise _corrupt(f"keys out of order or repeated after {len(self.keys)} keys")
        self.keys += keys
        self.data.update(zip(keys, v[1::2]))

    def _sessions(self, v) -> None:
        if type(v) is not list or not v:
            raise _corrupt(f"bad session batch after {len(self.sessions)} sessions")
        applied, clock = self.header[1], self.header[2]
        for rec in v:
            if len(self.sessions) >= self.n_sessions:
                raise _corrupt(f"more sessions than the {self.n_sessions} of the header")
            if (type(rec) is not list or len(rec) != 4 or not _is_uint(rec[0])
                    or not _is_uint(rec[1]) or not _is_uint(rec[2])
                    or type(rec[3]) is not list or len(rec[3]) % 3):
                raise _corrupt(f"bad session record {short_repr(rec)}")
            sid, last_active, floor, flat = rec
            if not 1 <= sid <= applied or sid in self.ids:
                raise _corrupt(f"session id {sid} repeated or not a log index <= {applied}")
            if last_active > clock or (self.sessions
                                       and last_active < self.sessions[-1].last_active):
                raise _corrupt(f"session {sid}: last activity {last_active} out of order or "
                               f"after the clock {clock}")
            responses: dict[int, tuple] = {}
            for i in range(0, len(flat), 3):
                seq, status, value = flat[i], flat[i + 1], flat[i + 2]
                if (not _is_uint(seq) or seq < floor or seq in responses
                        or type(status) is not int or status not in _STATUSES
                        or type(value) not in _RESPONSE_TYPES):
                    raise _corrupt(f"session {sid}: bad cached response "
                                   f"{short_repr([seq, status, value])}")
                responses[seq] = (status, value)
            self.ids.add(sid)
            self.sessions.append(Session(sid, last_active, floor, responses))

    def _end(self, v) -> None:
        if v != [_END, self.n_keys, self.n_sessions]:
            raise _corrupt(f"bad end marker {short_repr(v)}, expected "
                           f"{[_END, self.n_keys, self.n_sessions]}")
        self.stage = 4

    def finish(self) -> KVStateMachine:
        if self.stage != 4:
            where = ("header", "key/value pairs", "sessions", "end marker")[self.stage]
            raise _corrupt(f"truncated: the stream ends in the {where} ({len(self.keys)} of "
                           f"{self.n_keys} keys, {len(self.sessions)} of {self.n_sessions} "
                           f"sessions)")
        _version, applied, clock, timeout_ms, _nk, _ns = self.header
        if self.sessions and self.sessions[0].last_active + timeout_ms < clock:
            raise _corrupt(f"session {self.sessions[0].id} should have expired before the "
                           f"snapshot (last active {self.sessions[0].last_active}, clock "
                           f"{clock}, timeout {timeout_ms} ms)")
        m = KVStateMachine(timeout_ms, self.max_sessions)
        m.applied_index = applied
        m._kv = KVStore.from_index(self.keys, self.data)
        m._sessions.load(clock, self.sessions)
        return m


