"""The leader's view of each follower: match/next indexes, the replication state machine and
the bounded in-flight window.

Place in the architecture: part of the sans-IO engine (``fastraft.raft``); used only by
``raft.py``. No IO, no clocks.

Replication states (etcd's tracker/progress.go, raft-rs's progress.rs)::

                  +---------------------------------------------+
                  |        append rejected / unreachable       |
                  v                                             |
    +--------- PROBE ---- append acknowledged ----> REPLICATE --+
    |            ^                                      |
    |            |  snapshot reported done/failed        | next index compacted away
    |            +---------- SNAPSHOT <-----------------+
    +----- next index compacted away --------^

- PROBE: the leader does not know where the follower's log matches; it sends one append at a
  time (``probe_sent``) and waits for the answer or the next heartbeat.
- REPLICATE: the log matches up to ``match``; appends are pipelined, optimistically moving
  ``next``, as long as the in-flight window has room: at most ``max_inflight_msgs`` append
  messages (each of at most ``max_msg_bytes`` of payload) and ``max_inflight_bytes`` in all.
- SNAPSHOT: the follower needs entries the leader compacted; nothing is sent until the runtime
  reports the snapshot stream done or failed.

Invariant: ``0 <= match < next``.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Progress", "Inflights", "PROBE", "REPLICATE", "SNAPSHOT", "STATE_NAMES"]

PROBE = 0
REPLICATE = 1
SNAPSHOT = 2
STATE_NAMES = {PROBE: "probe", REPLICATE: "replicate", SNAPSHOT: "snapshot"}


class Inflights:
    """The append messages sent to one follower and not yet acknowledged, as
    ``(last_index, bytes)`` in send order, bounded in count and in bytes. A deque rather than
    a fixed ring: it never holds more than ``max_count`` items and costs nothing when idle."""

    __slots__ = ("_q", "max_count", "max_bytes", "bytes")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._q: deque = deque()
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0

    def add(self, last_index: int, size: int) -> None:
        """Record an append ending at ``last_index`` carrying ``size`` payload bytes."""
        self._q.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Forget the messages whose last entry is at or below ``index`` (acknowledged)."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        """Make room for one more message. Used on a heartbeat answer while the window is
        full: appends may have been lost, and one more (which the follower rejects if it
        missed some) restarts the flow through a probe."""
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        """Whether the window is at its message or byte bound (no more appends for now)."""
        return len(self._q) >= self.max_count or (self.max_bytes > 0 and
                                                  self.bytes >= self.max_bytes)

    def reset(self) -> None:
        """Forget every message (on a state change: nothing in flight is counted on)."""
        self._q.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    """The leader's knowledge of one follower: ``match`` (known replicated), ``next`` (next
    to send), the replication state (module docstring) and its in-flight window."""

    __slots__ = ("match", "next", "state", "probe_sent", "pending_snapshot", "recent_active",
                 "inflights", "sent_commit")

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.sent_commit = 0     # the highest commit index sent to this follower

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, "
                f"state={STATE_NAMES[self.state]}, inflight={len(self.inflights)})")

    def become_probe(self) -> None:
        """Back to one append at a time from ``match + 1`` (or after a snapshot sent)."""
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        """The log matches up to ``match``: pipeline appends from ``match + 1``."""
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        """A snapshot up to ``snapshot_index`` is being streamed: send nothing else."""
        self.state = SNAPSHOT
        self.probe_sent = False
        self.pending_snapshot = snapshot_index
        self.inflights.reset()

    def is_paused(self) -> bool:
        """Whether no append may be sent now (a probe unanswered, a full window, or a
        snapshot in flight)."""
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, last_index: int, n: int, size: int) -> None:
        """Record an append carrying ``n`` entries ending at ``last_index``."""
        if self.state == REPLICATE:
            if n:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; returns whether ``match`` moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append whose previous index was ``rejected``; ``match_hint`` is
        the highest index that may match (from the follower's conflict hint). Returns False
        for a stale rejection (one that no longer describes ``next``)."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
