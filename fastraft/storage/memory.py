"""An in-memory ``LogStore`` with the WAL's semantics and no durability.

Place in the architecture: a backend of ``fastraft.storage`` for tests and simulations that
want the storage interface without files. Same rules as ``base.py`` states (append with suffix
discard, snapshot mark keep-or-reset, compaction up to the mark); ``sync`` only counts calls,
``recovered`` returns what a restart of a durable backend would. No IO, no msgpack.
"""

from __future__ import annotations

from ..core import LogRing
from ..errors import LocalProtocolError
from ..raft.messages import EntryBatch, HardState, SnapshotMeta
from .base import RecoveredState, check_new_mark, mark_keeps_log

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._ring = LogRing(0, 0)
        self._hs = HardState()
        self._mark: SnapshotMeta | None = None
        self.syncs = 0
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise LocalProtocolError("the store is closed")

    def append(self, batch: EntryBatch) -> None:
        self._check()
        ring = self._ring
        fi = batch.first_index
        mi = self._mark.index if self._mark is not None else 0
        if fi <= mi:
            raise LocalProtocolError(f"entries from {fi} would overwrite the snapshot mark {mi}")
        if fi > ring.last_index + 1:
            raise LocalProtocolError(f"gap: entries from {fi}, the log ends at {ring.last_index}")
        entries = list(batch.entries)
        prev = ring.term(fi - 1)
        for term, _payload in entries:
            if term < prev:
                raise LocalProtocolError(f"term {term} is below the previous {prev}")
            prev = term
        ring.truncate_from(fi)
        ring.extend(entries)

    def truncate(self, index: int) -> None:
        self.append(EntryBatch(index, []))

    def save_hard_state(self, hs: HardState) -> None:
        self._check()
        self._hs = HardState(*hs)

    def save_snapshot_mark(self, meta: SnapshotMeta) -> None:
        self._check()
        ring = self._ring
        check_new_mark(self._mark, meta)
        keep = mark_keeps_log(ring.offset + 1, ring.last_index, ring.term, meta)
        if not keep:
            ring.reset(meta.index, meta.term)
        self._mark = SnapshotMeta(meta.index, meta.term, frozenset(meta.voters),
                                  frozenset(meta.outgoing))

    def sync(self) -> None:
        self._check()
        self.syncs += 1

    @property
    def first_index(self) -> int:
        return self._ring.offset + 1

    @property
    def last_index(self) -> int:
        return self._ring.last_index

    def term(self, index: int) -> int:
        return self._ring.term(index)

    def entries(self, lo: int, hi: int) -> list:
        return self._ring.slice(lo, hi)

    @property
    def hard_state(self) -> HardState:
        return self._hs

    @property
    def snapshot_mark(self) -> SnapshotMeta | None:
        return self._mark

    def compact(self, index: int) -> None:
        self._check()
        mi = self._mark.index if self._mark is not None else 0
        if index > mi:
            raise LocalProtocolError(f"compact({index}) beyond the snapshot mark {mi}")
        if index > self._ring.offset:
            self._ring.compact(index)

    def recovered(self) -> RecoveredState:
        s = self._mark.index if self._mark is not None else 0
        return RecoveredState(self._mark, self._ring.slice(s + 1, self._ring.last_index + 1),
                              self._hs)

    def close(self) -> None:
        self._closed = True
