"""The storage interface: what the runtime needs from a durable Raft log, as a Protocol.

Place in the architecture: the top of ``fastraft.storage``, used by the runtime (server) and
implemented by the backends (``wal.WalStore``, ``sqlite.SqliteStore``, ``memory.MemoryStore``),
which share the rules below (``check_new_mark``, ``mark_keeps_log``) and the rest of what
does not depend on how the log is kept (``StoreBase``). It imports only the errors and the plain message types of
``fastraft.raft.messages`` (never the engine's logic), no IO and no msgpack.

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
  A mark is kept whole: its voters, outgoing voters, learners and context come back equal,
  from the store and after a restart (``own_mark``; a meta no store can keep — learners that
  are voters, more than ``MAX_MARK_IDS`` ids, a context over ``MAX_MARK_CONTEXT`` bytes —
  raises ValueError before anything is written).
- ``compact(index)``: ``index`` at most the snapshot mark; entries up to ``index`` are released
  (``first_index`` becomes ``index + 1``) and backends free space in whole units (the WAL
  deletes whole segment files), so storage use shrinks in steps.
- A restart returns the snapshot mark, the entries after it and the last hard state;
  ``first_index`` is then ``snapshot index + 1``.
- A failed write or fsync raises ``StorageError`` and the store refuses every later call
  (``failed`` says why); a closed store refuses them with ``LocalProtocolError``. ``close``
  syncs first (a failed store is only released); a store is its own context manager.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from ..errors import LocalProtocolError, StorageError
from ..raft.messages import EntryBatch, HardState, SnapshotMeta

__all__ = ["LogStore", "RecoveredState", "StoreBase", "check_new_mark", "mark_keeps_log",
           "own_mark", "config_problem", "MAX_MARK_IDS", "MAX_MARK_CONTEXT"]

#: Upper bound on the configuration ids (voters + outgoing + learners) a stored snapshot meta
#: holds: every format refuses more (a damaged count, not a cluster).
MAX_MARK_IDS = 1 << 16
#: Upper bound on the length of a stored snapshot meta's ``context`` (1 MiB).
MAX_MARK_CONTEXT = 1 << 20


def config_problem(voters, outgoing, learners, context_len: int) -> str | None:
    """What is wrong with a snapshot meta's configuration as a store would keep it, or None:
    too many ids, a context over ``MAX_MARK_CONTEXT``, learners that are also voters
    (incoming or outgoing). The decoders report it as damage, ``own_mark`` as a caller
    error."""
    n = len(voters) + len(outgoing) + len(learners)
    if n > MAX_MARK_IDS:
        return f"{n} configuration ids, more than {MAX_MARK_IDS}"
    if context_len > MAX_MARK_CONTEXT:
        return f"a context of {context_len} bytes, more than {MAX_MARK_CONTEXT}"
    both = set(learners).intersection(voters) | set(learners).intersection(outgoing)
    if both:
        return f"learners {sorted(both)} are also voters"
    return None


def own_mark(meta: SnapshotMeta) -> SnapshotMeta:
    """``meta`` as a store keeps it: its three id sets as frozensets, its context as bytes.
    ValueError (before anything is written) for a meta no store can keep: a context that is
    not bytes, or what ``config_problem`` names."""
    context = meta.context
    if not isinstance(context, (bytes, bytearray, memoryview)):
        raise ValueError(f"snapshot meta context must be bytes, not {type(context).__name__}")
    out = SnapshotMeta(meta.index, meta.term, frozenset(meta.voters), frozenset(meta.outgoing),
                       frozenset(meta.learners), bytes(context))
    problem = config_problem(out.voters, out.outgoing, out.learners, len(out.context))
    if problem is not None:
        raise ValueError(f"snapshot meta {out.index}@{out.term} cannot be stored: {problem}")
    return out


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
        """The index of ``entries[0]``: right after the snapshot mark."""
        return (self.snapshot.index if self.snapshot is not None else 0) + 1

    @property
    def last_index(self) -> int:
        """The index of the last entry (the mark's when there is none)."""
        return self.first_index + len(self.entries) - 1


@runtime_checkable
class LogStore(Protocol):
    """A durable Raft log with hard state and a snapshot mark (see the module docstring)."""

    def append(self, batch: EntryBatch) -> None:
        """Write ``batch`` after discarding the stored entries from ``batch.first_index`` on;
        LocalProtocolError for a batch that would overwrite the mark, leave a gap or lower
        a term (nothing written then)."""

    def truncate(self, index: int) -> None:
        """Discard the entries from ``index`` on (``append`` of an empty batch)."""

    def save_hard_state(self, hs: HardState) -> None:
        """Write ``hs`` as the hard state (the last one written wins)."""

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None:
        """Record that a snapshot covers the log up to ``meta.index``: keep the log when it
        holds ``meta.index`` at ``meta.term``, else discard it (module docstring)."""

    def sync(self) -> None:
        """Make every write so far durable (one fsync); nothing that depends on them may be
        acknowledged before it returns."""

    @property
    def first_index(self) -> int:
        """The first index held (the compaction point + 1)."""

    @property
    def last_index(self) -> int:
        """The last index held (the compaction point when the log is empty)."""

    def term(self, index: int) -> int:
        """Term at ``index`` (``first_index - 1`` answers the compaction point's term);
        CompactedError / UnavailableError outside the log."""

    def entries(self, lo: int, hi: int) -> list:
        """Entries ``lo .. hi - 1`` as ``(term, payload)`` pairs."""

    @property
    def hard_state(self) -> HardState:
        """The hard state last written (``HardState()`` before any)."""

    @property
    def snapshot_mark(self) -> SnapshotMeta | None:
        """The snapshot mark last written, or None."""

    def compact(self, index: int) -> None:
        """Release the entries up to ``index`` (at most the snapshot mark); space is freed
        in whole units (module docstring)."""

    def recovered(self) -> RecoveredState:
        """The state a restart from what is stored now would return."""

    def close(self) -> None:
        """Sync and release the store; it refuses every later call."""


class StoreBase:
    """What every backend shares, beside how it keeps the log: the lifecycle (the guard that
    refuses every call after a failure or ``close``, ``failed``, ``close`` and the context
    manager) and the interface's rules that do not depend on the log's keeping (the checks of
    ``append`` and ``compact``, ``truncate``, the hard state and mark views, ``recovered``).

    A backend keeps its hard state in ``_hs`` and its mark in ``_mark``, sets ``_failed``
    (None) and ``_closed`` (False) when it opens, names itself in ``_name()`` for the
    refusals and frees its files or connection in ``_release()``."""

    _failed: str | None
    _closed: bool
    _hs: HardState
    _mark: SnapshotMeta | None

    # -- lifecycle ---------------------------------------------------------------------------

    def _name(self) -> str:
        """How the refusals name this store (``the WAL in <dir>``)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the store holds open; called once, by ``close``."""

    def _check(self) -> None:
        if self._failed is not None:
            raise StorageError(f"{self._name()} failed earlier and refuses every call: "
                               f"{self._failed}")
        if self._closed:
            raise LocalProtocolError(f"{self._name()} is closed")

    @property
    def failed(self) -> str | None:
        """Why the store failed, or None."""
        return self._failed

    def close(self) -> None:
        """Sync and close. Closing a failed store only releases it; closing again does
        nothing."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the interface's shared rules --------------------------------------------------------

    @property
    def _mark_index(self) -> int:
        return self._mark.index if self._mark is not None else 0

    def _check_batch(self, first_index: int, last_index: int) -> None:
        """``append``'s rule: a batch starts above the mark and at most at ``last + 1``."""
        mi = self._mark_index
        if first_index <= mi:
            raise LocalProtocolError(
                f"entries from {first_index} would overwrite the snapshot mark {mi}")
        if first_index > last_index + 1:
            raise LocalProtocolError(
                f"gap: entries from {first_index}, the log ends at {last_index}")

    def _check_compact(self, index: int) -> None:
        """``compact``'s rule: never beyond the snapshot mark."""
        mi = self._mark_index
        if index > mi:
            raise LocalProtocolError(f"compact({index}) beyond the snapshot mark {mi}")

    @staticmethod
    def _own_mark(meta: SnapshotMeta) -> SnapshotMeta:
        """The mark as the store keeps it (``own_mark``: every field, the id sets as
        frozensets, the context as bytes; ValueError for one that cannot be stored)."""
        return own_mark(meta)

    def truncate(self, index: int) -> None:
        """Discard the entries from ``index`` on (``append`` of an empty batch)."""
        self.append(EntryBatch(index, []))

    @property
    def hard_state(self) -> HardState:
        """The hard state last written (``HardState()`` before any)."""
        self._check()
        return self._hs

    @property
    def snapshot_mark(self) -> SnapshotMeta | None:
        """The snapshot mark last written, or None."""
        self._check()
        return self._mark

    def recovered(self) -> RecoveredState:
        """The state a restart from what is written now would return."""
        self._check()
        return RecoveredState(self._mark, self.entries(self._mark_index + 1,
                                                       self.last_index + 1), self._hs)
