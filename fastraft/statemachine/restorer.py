"""The parser of a state-machine snapshot stream: every value checked, a machine rebuilt.

Place in the architecture: inside ``fastraft.statemachine``, used by
``KVStateMachine.restore`` (``machine.py``, whose docstring gives the stream's format). Pure
Python, no IO: it is fed the stream's decoded msgpack values one by one and builds the parts
(keys, values, revisions, sessions, leases) that ``finish`` hands to a new machine. It reads
format 2 (this release's) and format 1 (before revisions and leases: every key gets
``UNKNOWN_REVISION``, there are no leases). Any damage is a CorruptRecordError naming what is
wrong; nothing is trusted that was not checked (shapes, types, orders, counts).
"""

from __future__ import annotations

from operator import lt

from .. import codec
from ..errors import CorruptRecordError, short_repr
from .leases import MAX_TTL_MS, Lease
from .sessions import Session

__all__ = ["Restorer", "UNKNOWN_REVISION"]

#: The revision of a key restored from a format 1 snapshot (written before revisions were
#: kept): present, revision unknown (1 is below every real write's index but not 0, which
#: means "absent").
UNKNOWN_REVISION = 1

_END = "end"
_U64 = (1 << 64) - 1
_STATUSES = frozenset((codec.ST_OK, codec.ST_NOT_LEADER, codec.ST_BUSY, codec.ST_INVALID,
                       codec.ST_SESSION_EXPIRED, codec.ST_UNKNOWN, codec.ST_ERROR,
                       codec.ST_NO_LEASE))
#: a cached answer's value: these, or a list of them (a revision cas: [swapped, revision])
_SIMPLE_TYPES = frozenset((type(None), bool, int, bytes, str))
#: header length by format
_HEADER_FIELDS = {1: 6, 2: 8}
#: stages
_HEADER, _KV, _SESSIONS, _LEASES, _ENDING, _DONE = range(6)
_STAGE_NAMES = ("header", "key/value pairs", "sessions", "leases", "end marker")


def _corrupt(what: str) -> CorruptRecordError:
    return CorruptRecordError(f"state machine snapshot: {what}")


def _is_uint(v) -> bool:
    return type(v) is int and 0 <= v <= _U64


def _response_value(v) -> bool:
    if type(v) is list:
        return all(type(x) in _SIMPLE_TYPES for x in v)
    return type(v) in _SIMPLE_TYPES


class Restorer:
    """Feed it the stream's values in order (``value``); ``finish`` returns the parts."""

    def __init__(self) -> None:
        self.stage = _HEADER
        self.format = 0
        self.applied = self.clock = self.timeout_ms = self.lease_term = 0
        self.n_keys = self.n_sessions = self.n_leases = 0
        self.keys: list[bytes] = []
        #: the values and revisions by key, filled batch by batch (no one call over every
        #: key: a restore on a worker thread must not hold the GIL for long)
        self.data: dict[bytes, bytes] = {}
        self.revs: dict[bytes, int] = {}
        self.sessions: list[Session] = []
        self.session_ids: set[int] = set()
        self.leases: list[Lease] = []
        self.leased_keys: set[bytes] = set()

    def value(self, v) -> None:
        stage = self.stage
        if stage == _HEADER:
            self._header(v)
        elif stage == _KV:
            self._kv(v)
        elif stage == _SESSIONS:
            self._sessions(v)
        elif stage == _LEASES:
            self._leases(v)
        elif stage == _ENDING:
            self._end(v)
        else:
            raise _corrupt("data after the end marker")
        self._next_stage()

    def _next_stage(self) -> None:
        if self.stage == _KV and len(self.keys) == self.n_keys:
            self.stage = _SESSIONS
        if self.stage == _SESSIONS and len(self.sessions) == self.n_sessions:
            self.stage = _LEASES
        if self.stage == _LEASES and len(self.leases) == self.n_leases:
            self.stage = _ENDING

    def _header(self, v) -> None:
        if type(v) is not list or not v or not all(_is_uint(x) for x in v):
            raise _corrupt(f"bad header {short_repr(v)}: expected unsigned integers")
        if v[0] not in _HEADER_FIELDS:
            raise _corrupt(f"unknown format version {v[0]}")
        if len(v) != _HEADER_FIELDS[v[0]]:
            raise _corrupt(f"bad header {short_repr(v)}: format {v[0]} has "
                           f"{_HEADER_FIELDS[v[0]]} fields")
        self.format = v[0]
        self.applied, self.clock, self.timeout_ms, self.n_keys, self.n_sessions = v[1:6]
        if self.format >= 2:
            self.n_leases, self.lease_term = v[6], v[7]
        self.stage = _KV

    def _kv(self, v) -> None:
        width = 2 if self.format == 1 else 3
        if type(v) is not list or not v or len(v) % width:
            raise _corrupt(f"bad key/value batch after {len(self.keys)} keys: expected a "
                           f"non-empty flat list of {'pairs' if width == 2 else 'triples'}")
        keys = v[0::width]
        values = v[1::width]
        if set(map(type, keys)) != {bytes} or set(map(type, values)) != {bytes}:
            raise _corrupt(f"key/value batch after {len(self.keys)} keys holds a non-bytes "
                           f"key or value")
        if len(self.keys) + len(keys) > self.n_keys:
            raise _corrupt(f"more key/value pairs than the {self.n_keys} of the header")
        if (self.keys and not self.keys[-1] < keys[0]) or not all(map(lt, keys, keys[1:])):
            raise _corrupt(f"keys out of order or repeated after {len(self.keys)} keys")
        if width == 3:
            revs = v[2::3]
            if not all(type(r) is int and 1 <= r <= self.applied for r in revs):
                raise _corrupt(f"key/value batch after {len(self.keys)} keys holds a "
                               f"revision that is not an index 1..{self.applied}")
            self.revs.update(zip(keys, revs))
        else:
            self.revs.update(dict.fromkeys(keys, UNKNOWN_REVISION))
        self.keys += keys
        self.data.update(zip(keys, values))

    def _sessions(self, v) -> None:
        if type(v) is not list or not v:
            raise _corrupt(f"bad session batch after {len(self.sessions)} sessions")
        for rec in v:
            if len(self.sessions) >= self.n_sessions:
                raise _corrupt(f"more sessions than the {self.n_sessions} of the header")
            if (type(rec) is not list or len(rec) != 4 or not _is_uint(rec[0])
                    or not _is_uint(rec[1]) or not _is_uint(rec[2])
                    or type(rec[3]) is not list or len(rec[3]) % 3):
                raise _corrupt(f"bad session record {short_repr(rec)}")
            sid, last_active, floor, flat = rec
            if not 1 <= sid <= self.applied or sid in self.session_ids:
                raise _corrupt(f"session id {sid} repeated or not a log index <= "
                               f"{self.applied}")
            if last_active > self.clock or (self.sessions and
                                            last_active < self.sessions[-1].last_active):
                raise _corrupt(f"session {sid}: last activity {last_active} out of order or "
                               f"after the clock {self.clock}")
            responses: dict[int, tuple] = {}
            for i in range(0, len(flat), 3):
                seq, status, value = flat[i], flat[i + 1], flat[i + 2]
                if (not _is_uint(seq) or seq < floor or seq in responses
                        or type(status) is not int or status not in _STATUSES
                        or not _response_value(value)):
                    raise _corrupt(f"session {sid}: bad cached response "
                                   f"{short_repr([seq, status, value])}")
                responses[seq] = (status, value)
            self.session_ids.add(sid)
            self.sessions.append(Session(sid, last_active, floor, responses))

    def _leases(self, v) -> None:
        if type(v) is not list or not v:
            raise _corrupt(f"bad lease batch after {len(self.leases)} leases")
        for rec in v:
            if len(self.leases) >= self.n_leases:
                raise _corrupt(f"more leases than the {self.n_leases} of the header")
            if (type(rec) is not list or len(rec) != 4 or not _is_uint(rec[0])
                    or not _is_uint(rec[1]) or not _is_uint(rec[2])
                    or type(rec[3]) is not list):
                raise _corrupt(f"bad lease record {short_repr(rec)}")
            lid, ttl, deadline, keys = rec
            if not 1 <= lid <= self.applied or (self.leases and lid <= self.leases[-1].id):
                raise _corrupt(f"lease id {lid} out of order or not a log index <= "
                               f"{self.applied}")
            if not 1 <= ttl <= MAX_TTL_MS or deadline <= self.clock:
                raise _corrupt(f"lease {lid}: TTL {ttl} out of range, or its deadline "
                               f"{deadline} not after the clock {self.clock}")
            if (not all(type(k) is bytes and k in self.data for k in keys)
                    or not all(map(lt, keys, keys[1:]))
                    or not self.leased_keys.isdisjoint(keys)):
                raise _corrupt(f"lease {lid}: its keys are not distinct stored keys in order, "
                               f"or one is in another lease")
            self.leased_keys.update(keys)
            self.leases.append(Lease(lid, ttl, deadline, set(keys)))

    def _end(self, v) -> None:
        want = [_END, self.n_keys, self.n_sessions]
        if self.format >= 2:
            want.append(self.n_leases)
        if v != want:
            raise _corrupt(f"bad end marker {short_repr(v)}, expected {want}")
        self.stage = _DONE

    def check_done(self) -> None:
        """CorruptRecordError unless the whole stream was read and is consistent."""
        if self.stage != _DONE:
            raise _corrupt(f"truncated: the stream ends in the {_STAGE_NAMES[self.stage]} "
                           f"({len(self.keys)} of {self.n_keys} keys, {len(self.sessions)} of "
                           f"{self.n_sessions} sessions, {len(self.leases)} of "
                           f"{self.n_leases} leases)")
        first = self.sessions[0] if self.sessions else None
        if first is not None and first.last_active + self.timeout_ms < self.clock:
            raise _corrupt(f"session {first.id} should have expired before the snapshot "
                           f"(last active {first.last_active}, clock {self.clock}, timeout "
                           f"{self.timeout_ms} ms)")
