"""Snapshots of one node: taking them by threshold without stalling the loop, and installing
the leader's.

Place in the architecture: part of the runtime (``fastraft.server``), driven by the node's
Ready loop (``node.Node`` calls ``maybe_take`` once per pass and ``install`` for a snapshot in a
Ready) over the storage backend (``backends``: the backend writes the file, by a forked child
for the WAL backend, from a database copy in a thread for SQLite).

What it promises: one snapshot at a time; once the file is durable the engine's log prefix is
released (keeping ``snapshot_keep_entries`` for slow followers) and the backend deletes what
the older kept snapshot covers (the WAL's mark stays one snapshot behind, so a damaged newest
file can fall back to the previous one and still find the log after it). A storage failure
while doing so stops the node (``fatal``); any other failure is logged and the next pass may
try again. Nothing is started or released once the node is stopping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..errors import CompactedError, StorageError
from ..raft import Snapshot, SnapshotMeta

__all__ = ["Snapshots"]

log = logging.getLogger("fastraft.node")


class Snapshots:
    """When to snapshot and what follows one (see the module docstring). ``raw`` is the
    engine, ``backend`` the storage (``interfaces.Backend``), ``fatal`` stops the node,
    ``meta_at(index, term)`` is the meta of a snapshot at ``index`` (the configuration and
    member book there: ``members.Members.meta_at``).
    ``need_snapshot``: the recovered log has a snapshot mark without a readable file (SQLite
    backend, file lost), so one is made as soon as anything is applied."""

    def __init__(self, raw, backend, *, meta_at: Callable[[int, int], SnapshotMeta],
                 threshold: int, keep_entries: int, fsync: bool, fatal: Callable[[str], None],
                 need_snapshot: bool) -> None:
        self.raw = raw
        self.backend = backend
        self.meta_at = meta_at
        self.threshold = threshold
        self.keep_entries = keep_entries
        self.fsync = fsync
        self._fatal = fatal
        self.index = raw.applied         # the index of the newest snapshot (or recovery)
        self.stopping = False
        self._need = need_snapshot
        self._running = False
        self.stats = None                # the node's NodeStats (snapshot durations)

    def maybe_take(self) -> None:
        """Start a snapshot when ``threshold`` entries were applied since the last one (or
        one is needed), unless one is running or the node is stopping. First, free a state
        built ahead from a received snapshot that will not be installed
        (``backend.drop_prepared``)."""
        applied = self.backend.machine.applied_index
        self.backend.drop_prepared(applied)
        if self._running or self.stopping:
            return
        if applied - self.index < self.threshold and not (self._need and applied > 0):
            return
        self._need = False
        self._running = True
        asyncio.get_running_loop().create_task(self._take(applied))

    async def _take(self, applied: int) -> None:
        try:
            try:
                term = self.raw.term_at(applied)
            except CompactedError:
                return      # a snapshot from the leader overtook this one: nothing to do
            t0 = time.monotonic()
            meta, path = await self.backend.snapshot(self.meta_at(applied, term))
            took = time.monotonic() - t0
            if self.stats is not None:
                self.stats.snapshot.observe(took)
            if self.stopping:
                return
            keep = self.keep_entries
            self.raw.compact(Snapshot(meta, path), keep_from=max(1, meta.index - keep + 1))
            self.index = meta.index
            freed = self.backend.after_snapshot(meta, self.fsync)
            log.info("snapshot at %d written in %.2f s; log released up to %d; %d WAL "
                     "segments deleted", meta.index, took, max(0, meta.index - keep), freed)
        except StorageError as exc:
            self._fatal(f"snapshot failed: {exc}")
        except Exception:
            log.exception("snapshot at %d failed", applied)
        finally:
            self._running = False

    def install(self, snap: Snapshot):
        """After the Ready's sync: make the leader's snapshot the state; returns the state
        machine now in force. StorageError if the file cannot be read. The state was
        usually built off the loop when the file was received (``backends``: then this
        only swaps it in)."""
        meta = snap.meta
        t0 = time.monotonic()
        ahead = self.backend.install(snap)
        machine = self.backend.machine
        assert machine.applied_index == meta.index, (
            f"snapshot {snap.data} holds index {machine.applied_index}, not {meta.index}")
        self.index = meta.index
        if ahead is None:
            log.info("installed snapshot %d@%d from the leader in %.2f s", meta.index,
                     meta.term, time.monotonic() - t0)
        else:
            log.info("installed snapshot %d@%d from the leader in %.3f s (its state was "
                     "built off the loop, in %.2f s)", meta.index, meta.term,
                     time.monotonic() - t0, ahead)
        return machine
