"""The client-session table of the state machine (Raft thesis §6.3): exactly-once writes.

Place in the architecture: inside ``fastraft.statemachine``, beside ``kv.py``, used only by
``machine.py``. Pure Python, deterministic, no IO, no wall clock: time is the ``clock`` the
machine derives from the leader timestamps written into the log, so every node expires the same
sessions at the same log index.

Rules (Raft thesis §6.3; docs/architecture.md, "Client sessions"):

- A session is created by a REGISTER entry; its id is that entry's log index.
- Each session keeps ``last_active`` (the clock when it was last heard from), ``floor`` (the
  highest ``first_unacked`` it sent: every seq below it was acknowledged by the client and its
  response dropped — "the highest dropped seq" plus one), and a response cache ``{seq:
  (status, value)}`` (insertion order = apply order) with a min-heap of its seqs so that
  dropping the acknowledged ones costs O(log n) each.
- ``advance(ts)`` runs before every command: ``clock = max(clock, ts)``; every session with
  ``last_active + timeout_ms < clock`` is expired and freed. The table is an OrderedDict in
  last-activity order (activity times never decrease, so ``move_to_end`` keeps it sorted) and
  expiry pops from the front: O(expired) amortized. ``_expire_at`` caches a lower bound of the
  next expiry time so the common case is one comparison.
- ``begin(session, seq, first_unacked)`` decides the fate of a write: unknown/expired ->
  SESSION_EXPIRED; a cached seq -> its cached response (not applied again); a seq below the
  floor -> INVALID (already acknowledged); a full cache -> INVALID; else the caller applies it
  and ``Session.remember`` caches the response. Any command from a live session (a duplicate
  included) counts as activity.
- At most ``max_sessions`` sessions: a REGISTER on a full table first expires the least
  recently active session (the front of the OrderedDict; ties broken by apply order).
"""

from __future__ import annotations

from collections import OrderedDict
from heapq import heapify, heappop, heappush

from .. import codec

__all__ = ["Session", "SessionTable", "MAX_CACHED_RESPONSES", "DEFAULT_SESSION_TIMEOUT_MS",
           "DEFAULT_MAX_SESSIONS"]

#: Per-session bound on cached (unacknowledged) responses.
MAX_CACHED_RESPONSES = 10_000
DEFAULT_SESSION_TIMEOUT_MS = 60_000
DEFAULT_MAX_SESSIONS = 100_000

_INFINITY = float("inf")
ST_OK = codec.ST_OK
ST_INVALID = codec.ST_INVALID
ST_BUSY = codec.ST_BUSY
ST_SESSION_EXPIRED = codec.ST_SESSION_EXPIRED


class Session:
    """One client session: id, last activity, acknowledged floor and the response cache."""

    __slots__ = ("id", "last_active", "floor", "responses", "_heap")

    def __init__(self, sid: int, last_active: int, floor: int = 0,
                 responses: dict | None = None) -> None:
        self.id = sid
        self.last_active = last_active
        self.floor = floor
        self.responses: dict[int, tuple] = {} if responses is None else responses
        self._heap = list(self.responses)
        heapify(self._heap)

    def acknowledge(self, first_unacked: int) -> None:
        """Drop the cached responses below ``first_unacked`` (and raise the floor to it)."""
        if first_unacked <= self.floor:
            return
        self.floor = first_unacked
        heap = self._heap
        responses = self.responses
        while heap and heap[0] < first_unacked:
            del responses[heappop(heap)]

    def remember(self, seq: int, response: tuple) -> None:
        """Cache the response of the newly applied write ``seq``."""
        self.responses[seq] = response
        heappush(self._heap, seq)

    def __repr__(self) -> str:
        return (f"Session(id={self.id}, last_active={self.last_active}, floor={self.floor}, "
                f"cached={len(self.responses)})")


class SessionTable:
    """The sessions of one state machine and the clock that expires them."""

    __slots__ = ("timeout_ms", "max_sessions", "max_cached", "clock", "_sessions",
                 "_expire_at", "removed")

    def __init__(self, timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_cached: int = MAX_CACHED_RESPONSES) -> None:
        if timeout_ms < 0 or max_sessions < 1 or max_cached < 1:
            raise ValueError("timeout_ms >= 0, max_sessions >= 1 and max_cached >= 1 needed")
        self.timeout_ms = timeout_ms
        self.max_sessions = max_sessions
        self.max_cached = max_cached
        self.clock = 0
        self._sessions: OrderedDict[int, Session] = OrderedDict()
        self._expire_at: float = _INFINITY
        #: When a list, the ids of the sessions dropped (expired or evicted) are appended to
        #: it: a persistent copy of the table (the SQLite backend) deletes their rows.
        self.removed: list | None = None

    # -- time --------------------------------------------------------------------------------

    def advance(self, ts: int) -> None:
        """A command with leader timestamp ``ts`` is about to be applied: move the clock and
        expire the sessions idle for longer than the timeout."""
        if ts > self.clock:
            self.clock = ts
            if ts > self._expire_at:
                self._expire()

    def _expire(self) -> None:
        sessions = self._sessions
        limit = self.clock - self.timeout_ms       # expired: last_active < limit
        while sessions:
            sid, s = next(iter(sessions.items()))
            if s.last_active >= limit:
                self._expire_at = s.last_active + self.timeout_ms
                return
            del sessions[sid]
            if self.removed is not None:
                self.removed.append(sid)
        self._expire_at = _INFINITY

    def _touch(self, s: Session) -> None:
        s.last_active = self.clock
        self._sessions.move_to_end(s.id)

    # -- commands ----------------------------------------------------------------------------

    def register(self, sid: int) -> Session:
        """Create session ``sid`` (the REGISTER entry's index), evicting the least recently
        active sessions while the table is full."""
        sessions = self._sessions
        assert sid not in sessions, f"session {sid} registered twice"
        while len(sessions) >= self.max_sessions:
            gone, _s = sessions.popitem(last=False)
            if self.removed is not None:
                self.removed.append(gone)
        s = Session(sid, self.clock)
        sessions[sid] = s
        if self._expire_at == _INFINITY:
            self._expire_at = self.clock + self.timeout_ms
        return s

    def begin(self, sid: int, seq: int, first_unacked: int) -> tuple[Session | None, tuple]:
        """Decide a write ``seq`` of session ``sid``: ``(session, ())`` means "apply it, then
        ``session.remember(seq, response)``"; ``(None, response)`` means "answer ``response``
        without applying anything"."""
        s = self._sessions.get(sid)
        if s is None:
            return None, (ST_SESSION_EXPIRED, f"session {sid} is unknown or expired")
        s.last_active = self.clock
        self._sessions.move_to_end(sid)
        if first_unacked > s.floor:
            s.acknowledge(first_unacked)
        cached = s.responses.get(seq)
        if cached is not None:
            return None, cached
        if seq < s.floor:
            return None, (ST_INVALID, f"sequence {seq} already acknowledged")
        if len(s.responses) >= self.max_cached:
            # The write is valid; the session is full until older answers are acknowledged
            # (a write retried for long while many later ones completed): Busy, not Invalid.
            return None, (ST_BUSY, f"too many unacknowledged requests in session {sid} "
                                   f"(at most {self.max_cached}): retry once earlier writes "
                                   "are acknowledged")
        return s, ()

    def keepalive(self, sid: int, first_unacked: int) -> tuple:
        s = self._sessions.get(sid)
        if s is None:
            return ST_SESSION_EXPIRED, f"session {sid} is unknown or expired"
        self._touch(s)
        s.acknowledge(first_unacked)
        return ST_OK, None

    # -- inspection and snapshots ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: int) -> bool:
        return sid in self._sessions

    def get(self, sid: int) -> Session | None:
        return self._sessions.get(sid)

    def sessions(self):
        """The sessions in last-activity order, least recent first (the snapshot order)."""
        return self._sessions.values()

    def load(self, clock: int, sessions: list[Session]) -> None:
        """Replace the table's content (snapshot restore): ``sessions`` in last-activity
        order, each ``last_active <= clock`` (the caller validated both)."""
        self.clock = clock
        self._sessions = OrderedDict((s.id, s) for s in sessions)
        self._expire_at = (sessions[0].last_active + self.timeout_ms) if sessions \
            else _INFINITY
