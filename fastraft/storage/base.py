"""The storage interface: what the runtime needs from a durable Raft log, as a Protocol.

Place in the architecture: the top of ``fastraft.storage``, used by the runtime (server) and
implemented by the backends (``wal.WalStore``; the SQLite backend later). It imports only the
plain message types of ``fastraft.raft.messages`` (never the engine's logic) and no msgpack.

The runtime drives a store from each Ready (rawnode.py)::

    if rd.snapshot:   store.save_snapshot_mark(rd.snapshot.meta)
    if rd.entries:    store.append(rd.entries)        # discards stored entries >= first_index
    if rd.hard_state: store.save_hard_state(rd.hard_state)
    if rd.must_sync:  store.sync()                    # ONE fsync for all of the above

and restarts a node from ``store.recovered()``::

    st = store.recovered()
    RaftLog(Snapshot(st.snapshot or initial_meta, data), st.entries, st.hard_state.commit)

Semantics every backend keeps (tests/storage checks them):

- Writes are visible to reads at once, but durable only after ``sync()``; nothing that depends
  on them may be acknowledged before it returns. A crash keeps a prefix of the writes that
  contains everything synced.
- ``append(batch)``: ``batch.first_index`` must be above the snapshot mark and at most
  ``last_index + 1``; stored entries from ``first_index`` on are discarded first (an empty
  batch only truncates). Terms never decrease along the log.
- ``save_snapshot_mark(meta)``: a snapshot covers the log up to ``meta.index``. When the log
  holds ``meta.index`` with ``meta.term`` the entries are kept (a local snapshot, or a
  leader's snapshot matching our log: Raft's figure 13 rule); otherwise the log is discarded
  and restarts after ``meta.index`` (an installed snapshot). Marks never move backwards.
- ``compact(index)``: ``index`` at most the snapshot mark; entries up to ``index`` are released
  (``first_index`` becomes ``index + 1``) and backends free space in whole units (the WAL
  deletes whole segment files), so storage use shrinks in steps.
- A restart returns the snapshot mark, the entries after it and the last hard state;
  ``first_index`` is then ``snapshot index + 1``.
- A failed write or fsync raises ``StorageError`` and the store refuses every later call.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from ..errors import LocalProtocolError
from ..raft.messages import EntryBatch, HardState, SnapshotMeta

__all__ = ["LogStore", "RecoveredState", "check_new_mark", "mark_keeps_log"]


def check_new_mark(current: SnapshotMeta | None, meta: SnapshotMeta) -> None:
    """Snapshot marks never move backwards (the rule every backend enforces)."""
    if current is not None and meta.index < current.index:
        raise LocalProtocolError(
            f"snapshot mark {meta.index} is below the current mark {current.index}")


def mark_keeps_log(first_index: int, last_index: int, term, meta: SnapshotMeta) -> bool:
    """Raft's figure 13 rule: a snapshot mark keeps the log when the log holds ``meta.index``
    at ``meta.term`` (``term`` answers for ``first_index - 1 .. last_index``); otherwise the
    log is discarded and restarts after the mark."""
    return first_index - 1 <= meta.index <= last_index and term(meta.index) == meta.term


class RecoveredState(NamedTuple):
    """What a node restarts from: exactly the arguments ``RaftLog`` and ``RawNode`` need.

    ``snapshot`` is None when no snapshot mark was ever saved (start from the initial,
    empty snapshot of the configured voters); ``entries`` are the ``(term, payload)`` pairs
    from ``snapshot.index + 1`` (or 1) on."""

    snapshot: SnapshotMeta | None
    entries: list
    hard_state: HardState

    @property
    def first_index(self) -> int:
        return (self.snapshot.index if self.snapshot is not None else 0) + 1

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1


@runtime_checkable
class LogStore(Protocol):
    """A durable Raft log with hard state and a snapshot mark (see the module docstring)."""

    def append(self, batch: EntryBatch) -> None: ...

    def truncate(self, index: int) -> None:
        """Discard the entries from ``index`` on (``append`` of an empty batch)."""

    def save_hard_state(self, hs: HardState) -> None: ...

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None: ...

    def sync(self) -> None: ...

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Term at ``index`` (``first_index - 1`` answers the compaction point's term);
        CompactedError / UnavailableError outside the log."""

    def entries(self, lo: int, hi: int) -> list:
        """Entries ``lo .. hi - 1`` as ``(term, payload)`` pairs."""

    @property
    def hard_state(self) -> HardState: ...

    @property
    def snapshot_mark(self) -> SnapshotMeta | None: ...

    def compact(self, index: int) -> None: ...

    def recovered(self) -> RecoveredState:
        """The state a restart from what is stored now would return."""

    def close(self) -> None: ...
