"""RaftLog: the engine's log, its commit/apply positions and its stable/unstable boundary.

Place in the architecture: part of the sans-IO engine (``fastraft.raft``), built on the core's
``LogRing``. No IO: persistence is the runtime's job, driven by the ``Ready`` batches.

Every retained entry lives in memory, in the ring: the runtime loads the durable log into it
at start-up and the engine appends to it; compaction after a snapshot releases the prefix.
So the engine never reads storage, and lookups are O(1).

Invariants (checked where they can break; a violation raises AssertionError)::

    ring.offset <= snapshot.index <= applied <= committed <= last_index
    ring.offset <= stable <= last_index           entries (stable, last_index] are unstable
    committed entries are never truncated

``stable`` is the last index the runtime has confirmed durable (``stable_to`` after a Ready).
A truncation below it pulls it back: the next Ready then rewrites the log from the conflict
point and storage discards what it held from there on.
"""

from __future__ import annotations

from ..core import LogRing
from ..errors import CompactedError, UnavailableError
from .messages import EntryBatch, Snapshot, SnapshotMeta

__all__ = ["RaftLog"]


class RaftLog:
    """The engine's whole retained log in memory, with the positions that say what is
    durable (``stable``), committed and applied (invariants in the module docstring)."""

    __slots__ = ("ring", "committed", "applied", "stable", "snapshot", "pending_snapshot")

    def __init__(self, snapshot: Snapshot, entries=(), committed: int = 0,
                 applied: int | None = None) -> None:
        """A log restored from storage: the latest ``snapshot`` and the durable ``entries``
        (``(term, payload)`` pairs) after it. Everything given is considered stable."""
        meta = snapshot.meta
        self.snapshot = snapshot
        self.ring = LogRing(meta.index, meta.term)
        self.ring.extend(entries)
        self.stable = self.ring.last_index
        self.committed = max(committed, meta.index)
        assert self.committed <= self.ring.last_index, (
            f"commit {committed} beyond the restored log's last index {self.ring.last_index}")
        self.applied = meta.index if applied is None else max(applied, meta.index)
        self.pending_snapshot: Snapshot | None = None

    def __repr__(self) -> str:
        return (f"RaftLog(offset={self.ring.offset}, applied={self.applied}, "
                f"committed={self.committed}, stable={self.stable}, last={self.last_index})")

    # -- positions --------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first retained entry's index (the compaction point + 1)."""
        return self.ring.offset + 1

    @property
    def last_index(self) -> int:
        """The last entry's index (the compaction point when the log is empty)."""
        return self.ring.last_index

    @property
    def last_term(self) -> int:
        """The last entry's term (the compaction point's when the log is empty)."""
        return self.ring.last_term

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError / UnavailableError outside the log."""
        return self.ring.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list:
        """``(term, payload)`` of the entries ``lo .. hi-1`` (``lo`` > the snapshot index),
        cut after ``max_bytes`` of payload but never empty (the first entry always comes)."""
        return self.ring.slice(lo, hi, max_bytes)

    def match_term(self, index: int, term: int) -> bool:
        """Whether the log holds ``index`` at ``term`` (False outside the log)."""
        try:
            return self.ring.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The vote restriction (§5.4.1): is a log ending at (last_index, last_term) at least
        as up-to-date as ours?"""
        lt = self.ring.last_term
        return last_term > lt or (last_term == lt and last_index >= self.ring.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``i <= index`` whose term is ``<= term``, with its term (fast log
        backtracking). Terms never decrease along the log, so a binary search finds it. When
        even the compaction point's term is higher, the compaction point is returned."""
        ring = self.ring
        lo = ring.offset
        hi = min(index, ring.last_index)
        if hi < lo:
            return lo, ring.offset_term
        if ring.term(hi) <= term:
            return hi, ring.term(hi)
        # term(lo) <= term < term(hi) or term(lo) > term: find the last index with term <= term.
        if ring.term(lo) > term:
            return lo, ring.term(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ring.term(mid) <= term:
                lo = mid
            else:
                hi = mid
        return lo, ring.term(lo)

    # -- changes ----------------------------------------------------------------------------

    def append(self, term: int, payloads) -> int:
        """Leader path: append payloads at ``term``; returns the new last index."""
        self.ring.extend_term(term, payloads)
        return self.ring.last_index

    def maybe_append(self, index: int, log_term: int, commit: int, entries) -> int | None:
        """Follower path (AppendEntries receiver, §5.3): if our log matches (index, log_term),
        drop any conflicting suffix, append the new entries, advance the commit index and
        return the index of the last entry the message covered; else return None."""
        if not self.match_term(index, log_term):
            return None
        ring = self.ring
        last_new = index + len(entries)
        last = ring.last_index
        # First conflicting (or new) entry: entries already present with the same term stay.
        k = 0
        n = len(entries)
        i = index + 1
        while k < n and i <= last:
            if ring.term(i) != entries[k][0]:
                break
            k += 1
            i += 1
        if k < n:
            if i <= last:
                assert i > self.committed, (
                    f"conflict at index {i} would truncate committed entries "
                    f"(committed={self.committed})")
                ring.truncate_from(i)
                if self.stable >= i:
                    self.stable = i - 1
            ring.extend(entries[k:] if k else entries)
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        """Move the commit index up to ``index`` (never down; never past the log)."""
        if index > self.committed:
            assert index <= self.ring.last_index, (
                f"commit {index} beyond last index {self.ring.last_index}")
            self.committed = index

    def applied_to(self, index: int) -> None:
        """Move the applied index up to ``index`` (never down; never past the commit)."""
        if index > self.applied:
            assert index <= self.committed, f"applied {index} beyond commit {self.committed}"
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """The runtime made entries up to ``index`` durable. Ignored when the log was
        truncated since (the entry at ``index`` is no longer that of ``term``)."""
        if index > self.stable and self.match_term(index, term):
            self.stable = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        meta = snapshot.meta
        assert meta.index > self.committed, (
            f"restoring snapshot at {meta.index} at or below commit {self.committed}")
        self.ring.reset(meta.index, meta.term)
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.committed = meta.index
        self.stable = meta.index

    def compact(self, snapshot: Snapshot, keep_from: int | None = None) -> None:
        """The runtime took ``snapshot`` of the applied state; release the entries it covers
        (up to ``keep_from - 1`` when given, to keep a tail for slow followers)."""
        meta = snapshot.meta
        assert meta.index <= self.applied, (
            f"snapshot at {meta.index} beyond applied index {self.applied}")
        if meta.index < self.snapshot.meta.index:
            return
        self.snapshot = snapshot
        upto = meta.index if keep_from is None else min(meta.index, keep_from - 1)
        if upto > self.ring.offset:
            self.ring.compact(upto)

    # -- reads for Ready --------------------------------------------------------------------

    def unstable_entries(self) -> EntryBatch | None:
        """The entries not yet confirmed durable (after ``stable``), or None."""
        if self.stable >= self.ring.last_index:
            return None
        first = self.stable + 1
        return EntryBatch(first, self.ring.slice(first, self.ring.last_index + 1))

    def next_committed(self, max_bytes: int | None = None) -> EntryBatch | None:
        """Committed entries not yet applied (after a pending snapshot, if any)."""
        first = self.applied + 1
        if self.pending_snapshot is not None:
            first = max(first, self.pending_snapshot.meta.index + 1)
        if first > self.committed:
            return None
        return EntryBatch(first, self.ring.slice(first, self.committed + 1, max_bytes))

    def has_next_committed(self) -> bool:
        """Whether ``next_committed`` would return a batch (without building it)."""
        first = self.applied + 1
        if self.pending_snapshot is not None:
            first = max(first, self.pending_snapshot.meta.index + 1)
        return first <= self.committed


def initial_snapshot(voters, outgoing=(), learners=()) -> Snapshot:
    """The empty snapshot a brand-new cluster starts from: index 0, term 0."""
    return Snapshot(SnapshotMeta(0, 0, frozenset(voters), frozenset(outgoing),
                                 frozenset(learners)))
