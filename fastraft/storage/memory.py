"""An in-memory ``LogStore`` with the WAL's semantics, and a model of what a crash keeps.

Place in the architecture: a backend of ``fastraft.storage`` for whatever wants the storage
interface without files: the simulator's disk (``fastraft.sim.cluster``), the engine's unit
test harness (tests/unit/conftest.py) and the storage tests' reference runs. Same rules as
``base.py`` states (append with suffix discard, snapshot mark keep-or-reset, compaction up to
the mark). No IO, no msgpack.

Durability model: every write is visible at once (``recovered`` and the reads see it) and
is recorded as pending until ``sync`` makes it durable. ``crash(rng)`` is what a process
killed now would find on restart: what was synced, plus a prefix of the pending writes in
order when ``rng`` is given (``rng.randint`` picks how many, and cuts the next one when it
is an append: a torn write, as the WAL's torn tail). Compaction is not a write: it releases
entries below the mark, which no restart returns anyway. ``syncs`` counts the syncs.
"""

from __future__ import annotations

from ..core import LogRing
from ..errors import LocalProtocolError
from ..raft.messages import EntryBatch, HardState, SnapshotMeta
from .base import StoreBase, check_new_mark, mark_keeps_log

__all__ = ["MemoryStore"]

_APPEND = 0
_HARD_STATE = 1
_MARK = 2


class _State:
    """One copy of what a store holds: the log (a LogRing), the hard state, the mark."""

    __slots__ = ("ring", "hs", "mark")

    def __init__(self, ring: LogRing, hs: HardState, mark: SnapshotMeta | None) -> None:
        self.ring = ring
        self.hs = hs
        self.mark = mark

    def copy(self) -> _State:
        ring = self.ring
        new = LogRing(ring.offset, ring.offset_term)
        new.extend(ring.slice(ring.offset + 1, ring.last_index + 1))
        return _State(new, self.hs, self.mark)

    def apply(self, kind: int, value) -> None:
        """One write, already checked against the store it was made on."""
        ring = self.ring
        if kind == _APPEND:
            ring.truncate_from(value.first_index)
            ring.extend(value.entries)
        elif kind == _HARD_STATE:
            self.hs = value
        else:
            if not mark_keeps_log(ring.offset + 1, ring.last_index, ring.term, value):
                ring.reset(value.index, value.term)
            self.mark = value

    def compact(self, index: int) -> None:
        if index > self.ring.offset:
            self.ring.compact(index)


class MemoryStore(StoreBase):
    """The ``LogStore`` in memory (module docstring): the reads see every write; ``sync``
    makes the pending writes durable, and ``crash`` restarts from what is."""

    def __init__(self) -> None:
        self._live = _State(LogRing(0, 0), HardState(), None)
        self._durable = self._live.copy()
        self._pending: list = []       # (kind, value) written since the last sync
        self.syncs = 0
        self._failed = None
        self._closed = False

    # StoreBase keeps its views in _hs / _mark: these are the live ones.
    @property
    def _hs(self) -> HardState:
        return self._live.hs

    @property
    def _mark(self) -> SnapshotMeta | None:
        return self._live.mark

    def _name(self) -> str:
        return "the memory store"

    def _write(self, kind: int, value) -> None:
        self._live.apply(kind, value)
        self._pending.append((kind, value))

    # -- LogStore ------------------------------------------------------------------------------

    def append(self, batch: EntryBatch) -> None:
        """Write ``batch``, discarding stored entries >= ``batch.first_index`` first."""
        self._check()
        ring = self._live.ring
        fi = batch.first_index
        self._check_batch(fi, ring.last_index)
        entries = list(batch.entries)
        prev = ring.term(fi - 1)
        for term, _payload in entries:
            if term < prev:
                raise LocalProtocolError(f"term {term} is below the previous {prev}")
            prev = term
        self._write(_APPEND, EntryBatch(fi, entries))

    def save_hard_state(self, hs: HardState) -> None:
        """Write ``hs``."""
        self._check()
        self._write(_HARD_STATE, HardState(*hs))

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None:
        """Record that a snapshot covers the log up to ``meta.index`` (kept or reset as
        ``base.py`` states)."""
        self._check()
        check_new_mark(self._live.mark, meta)
        self._write(_MARK, self._own_mark(meta))

    def sync(self) -> None:
        """Make the pending writes durable."""
        self._check()
        durable = self._durable
        for kind, value in self._pending:
            durable.apply(kind, value)
        self._pending = []
        self.syncs += 1

    @property
    def first_index(self) -> int:
        """The first index held (the compaction point + 1)."""
        self._check()
        return self._live.ring.offset + 1

    @property
    def last_index(self) -> int:
        """The last index written."""
        self._check()
        return self._live.ring.last_index

    def term(self, index: int) -> int:
        """Term at ``index``; CompactedError / UnavailableError outside the log."""
        self._check()
        return self._live.ring.term(index)

    def entries(self, lo: int, hi: int) -> list:
        """Entries ``lo .. hi - 1`` as ``(term, payload)`` pairs."""
        self._check()
        return self._live.ring.slice(lo, hi)

    def compact(self, index: int) -> None:
        """Release the entries up to ``index`` (at most the snapshot mark); the durable copy
        releases them up to its own mark."""
        self._check()
        self._check_compact(index)
        self._live.compact(index)
        durable = self._durable
        durable.compact(min(index, durable.mark.index if durable.mark is not None else 0))

    # -- crashes -------------------------------------------------------------------------------

    def crash(self, rng=None) -> None:
        """Lose the writes not synced, except (with ``rng``, a ``random.Random``) a random
        prefix of them: whole writes in order, the next one cut in the middle when it is an
        append. The store then holds, durably, what a restart would find."""
        self._check()
        durable = self._durable
        pending = self._pending
        keep = rng.randint(0, len(pending)) if rng is not None else 0
        for kind, value in pending[:keep]:
            durable.apply(kind, value)
        if rng is not None and keep < len(pending) and pending[keep][0] == _APPEND:
            batch = pending[keep][1]
            cut = rng.randint(0, len(batch.entries))
            if cut:
                durable.apply(_APPEND, EntryBatch(batch.first_index, batch.entries[:cut]))
        self._pending = []
        self._live = durable
        self._durable = durable.copy()
