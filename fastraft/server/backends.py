"""Storage backends of a node: where the log, the hard state and the state machine live.

Place in the architecture: part of the runtime (``fastraft.server``), between ``node`` and the
storage layer (``fastraft.storage``) plus the state machine (``fastraft.statemachine``). The
node's Ready cycle is the same for both; what differs is kept here:

- ``WalBackend`` (default): the binary WAL for the log and hard state, the state machine in
  memory, snapshot files taken by a forked child (copy-on-write: the loop keeps running).
  The WAL's snapshot mark stays one snapshot behind the newest file, so a damaged newest
  snapshot falls back to the previous one and still finds the log after it; WAL segments
  covered by that older snapshot are deleted.
- ``SqliteBackend``: one SQLite database holds the log, the hard state, the snapshot mark, the
  KV state, the session table and the applied index; a batch of committed entries updates the
  KV rows, the touched sessions and the applied index in the same transaction, so a restart
  replays nothing already applied. Snapshot files for lagging followers are made from a
  consistent copy (SQLite's backup API, in a thread) in the same stream format as the WAL
  backend's, so nodes of either kind can feed each other.

Both produce snapshot files through the same ``SnapshotStore`` in ``<data>/snap``.

A data directory belongs to the backend that first opened it (``fastraft.datadir``'s BACKEND
marker, checked by ``main`` before a backend opens anything); ``backends_present`` tells which
backends' files a directory from before the marker holds. Every directory a backend creates is
created durably (each new name's parent fsynced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from ..datadir import SQLITE_FILE, WAL_DIR, makedirs_durable, remove_quietly
from ..errors import CorruptRecordError, RecoveryError, StorageError
from ..raft import RaftLog, Snapshot, SnapshotMeta, initial_snapshot
from ..statemachine import KVStateMachine
from ..statemachine.snapshotter import fork_available, take_snapshot, take_snapshot_sync
from ..storage.snapshot import SnapshotStore, read_meta
from ..storage.wal import WalStore, parse_segment_name

__all__ = ["WalBackend", "SqliteBackend", "open_backend", "backends_present", "RecoveryError",
           "WAL_DIR", "SQLITE_FILE"]


log = logging.getLogger("fastraft.node")


def backends_present(data_dir: str) -> set[str]:
    """The backends whose data ``data_dir`` holds: ``"wal"`` for WAL segment files in
    ``wal/``, ``"sqlite"`` for the database file (what a directory from before the BACKEND
    marker is recognised by)."""
    found = set()
    try:
        names = os.listdir(os.path.join(data_dir, WAL_DIR))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    if any(parse_segment_name(n) is not None for n in names):
        found.add("wal")
    if os.path.lexists(os.path.join(data_dir, SQLITE_FILE)):
        found.add("sqlite")
    return found


def open_backend(kind: str, data_dir: str, voters: frozenset, tuning):
    """The backend ``kind`` (``"wal"`` or ``"sqlite"``) on ``data_dir``, its directories
    made and its store opened; ``open()`` then recovers it (``interfaces.Backend``)."""
    if kind == "sqlite":
        return SqliteBackend(data_dir, voters, tuning)
    return WalBackend(data_dir, voters, tuning)


class _Backend:
    """What both backends share: the data directory (made durably), the snapshot files in
    ``<data>/snap``, and the state machine (None until ``open``)."""

    name = ""

    def __init__(self, data_dir: str, voters: frozenset, tuning) -> None:
        self.data_dir = data_dir
        self.voters = voters
        self.tuning = tuning
        makedirs_durable(data_dir)
        self.snaps = SnapshotStore(os.path.join(data_dir, "snap"))
        self.machine = None
        self.store = None

    def close(self) -> None:
        """Close the store (its last sync is the node's)."""
        self.store.close()


class WalBackend(_Backend):
    """The default backend: log and hard state in the binary WAL, the state machine in
    memory, snapshot files taken by a forked child (module docstring)."""

    name = "wal"

    def __init__(self, data_dir: str, voters: frozenset, tuning) -> None:
        super().__init__(data_dir, voters, tuning)
        self.wal_dir = os.path.join(data_dir, WAL_DIR)
        self.store = WalStore.open(self.wal_dir, segment_size=tuning.segment_size)

    def open(self):
        """Recover: returns ``(raft_log, hard_state, newest_snapshot | None)``; sets
        ``self.machine``."""
        store = self.store
        for note in store.recovery_notes:
            log.warning("WAL recovery: %s", note)
        st = store.recovered()
        mark = st.snapshot
        latest = self.snaps.latest()
        if latest is None:
            if mark is not None and mark.index > 0:
                raise RecoveryError(
                    f"the WAL in {self.wal_dir} starts after index {mark.index} but no valid "
                    f"snapshot file in {self.snaps.directory} covers it: this replica cannot "
                    f"recover its state; wipe its data directory to rejoin through a snapshot")
            self.machine = KVStateMachine(session_timeout_ms=self.tuning.session_timeout_ms)
            return RaftLog(initial_snapshot(self.voters), st.entries, st.hard_state.commit,
                           0), st.hard_state, None
        meta_s, path_s = latest
        if mark is not None and meta_s.index < mark.index:
            raise RecoveryError(
                f"the newest valid snapshot ({path_s}, index {meta_s.index}) is older than "
                f"the WAL's start ({mark.index}): the log between them is gone; wipe this "
                f"replica's data directory to rejoin through a snapshot")
        if not (st.first_index - 1 <= meta_s.index <= st.last_index
                and store.term(meta_s.index) == meta_s.term):
            # The snapshot was made durable but the crash came before the WAL's mark: the
            # snapshot replaces the log.
            log.info("snapshot %s is ahead of the WAL; the WAL restarts after it", path_s)
            store.save_snapshot_mark(meta_s)
            store.sync()
            st = store.recovered()
            mark = st.snapshot
        t0 = time.monotonic()
        self.machine = KVStateMachine.restore(self.snaps.read_chunks(path_s))
        log.info("restored the state machine from %s (index %d, %d keys) in %.2f s",
                 path_s, meta_s.index, len(self.machine.kv), time.monotonic() - t0)
        newest = Snapshot(meta_s, path_s)
        if mark is None or mark.index == 0:
            snap = initial_snapshot(self.voters)
        elif mark.index == meta_s.index:
            snap = newest
        else:
            older = [p for p in self.snaps.paths() if p != path_s]
            snap = Snapshot(mark, older[-1] if older else path_s)
        committed = max(st.hard_state.commit, meta_s.index)
        return RaftLog(snap, st.entries, committed, meta_s.index), st.hard_state, newest

    def persist_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader, in the Ready (before the sync)."""
        self.store.save_snapshot_mark(snap.meta)

    def install(self, snap: Snapshot) -> None:
        """After the sync: load the leader's snapshot into the state machine."""
        try:
            self.machine = KVStateMachine.restore(self.snaps.read_chunks(snap.data))
        except (CorruptRecordError, OSError) as exc:
            raise StorageError(f"cannot install snapshot {snap.data}: {exc}") from exc

    async def snapshot(self, meta: SnapshotMeta) -> tuple[SnapshotMeta, str]:
        """Write a snapshot of the state machine (at ``meta.index``); returns its meta and
        path."""
        if fork_available():
            return meta, await take_snapshot(self.machine, self.snaps, meta)
        return meta, take_snapshot_sync(self.machine, self.snaps, meta)

    def after_snapshot(self, meta: SnapshotMeta, fsync: bool) -> int:
        """Move the WAL's mark to the older kept snapshot and delete the segments it covers;
        returns how many were deleted."""
        paths = self.snaps.paths()
        if len(paths) < 2:
            return 0
        ometa = read_meta(paths[-2])
        cur = self.store.snapshot_mark
        if cur is not None and ometa.index <= cur.index:
            return 0
        before = len(self.store.segment_names())
        self.store.save_snapshot_mark(ometa)
        self.store.compact(ometa.index)
        if fsync:
            self.store.sync()
        return before - len(self.store.segment_names())


class SqliteBackend(_Backend):
    """One SQLite database for the log, the hard state and the applied state machine; a
    batch is applied in the transaction of the next sync, so a restart replays nothing
    already applied (module docstring)."""

    name = "sqlite"

    def __init__(self, data_dir: str, voters: frozenset, tuning) -> None:
        from ..statemachine.sqlite_machine import SqliteStateMachine
        from ..storage.sqlite import SqliteStore

        super().__init__(data_dir, voters, tuning)
        self._machine_cls = SqliteStateMachine
        self._store_cls = SqliteStore
        self.path = os.path.join(data_dir, SQLITE_FILE)
        self.store = SqliteStore(self.path)
        if not tuning.fsync:
            self.store.unsafe_no_fsync()

    def open(self):
        """Recover (``WalBackend.open``); a snapshot whose mark is durable but whose state is
        not (a crash between the two) is installed again."""
        store = self.store
        self.machine = self._machine_cls(store, self.tuning.session_timeout_ms)
        applied = self.machine.applied_index
        st = store.recovered()
        mark = st.snapshot
        if mark is not None and applied < mark.index:
            # The leader's snapshot mark is durable but its state is not (a crash between
            # the two): install the snapshot file again.
            path = self._file_for(mark)
            if path is None:
                raise RecoveryError(
                    f"{self.path}: the log restarts after index {mark.index} but the state "
                    f"was applied only to {applied} and no valid snapshot file for "
                    f"{mark.index} is in {self.snaps.directory}; wipe this replica's data "
                    f"directory to rejoin through a snapshot")
            self.install(Snapshot(mark, path))
            store.sync()
            applied = self.machine.applied_index
        if mark is None or mark.index == 0:
            snap = initial_snapshot(self.voters)
        else:
            snap = Snapshot(mark, self._file_for(mark))
        committed = max(st.hard_state.commit, applied)
        log.info("SQLite state at index %d (%d keys, %d sessions)", applied,
                 self.machine.key_count(), len(self.machine.sessions))
        return RaftLog(snap, st.entries, committed, applied), st.hard_state, None

    def _file_for(self, meta: SnapshotMeta) -> str | None:
        latest = None
        for p in reversed(self.snaps.paths()):
            try:
                m = read_meta(p)
            except (CorruptRecordError, OSError):
                continue
            if (m.index, m.term) == (meta.index, meta.term):
                latest = p
                break
        return latest

    def persist_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader, in the Ready (before the sync): the mark and the new
        state go into the same transaction, so they become durable together."""
        self.store.save_snapshot_mark(snap.meta)
        self.install(snap)

    def install(self, snap: Snapshot) -> None:
        """After the sync: load the leader's snapshot (unless ``persist_snapshot`` did)."""
        if self.machine.applied_index == snap.meta.index:
            return      # done by persist_snapshot
        try:
            self.machine.install(self.snaps.read_chunks(snap.data))
        except (CorruptRecordError, OSError) as exc:
            raise StorageError(f"cannot install snapshot {snap.data}: {exc}") from exc

    async def snapshot(self, meta: SnapshotMeta) -> tuple[SnapshotMeta, str]:
        """A snapshot file from a consistent copy of the database (backup API, in a thread,
        so the loop keeps running); its index is the copy's applied index, which is at least
        ``meta.index`` since the state was committed before."""
        self.store.sync()       # the copy sees committed data only
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._snapshot_blocking, meta)

    def _snapshot_blocking(self, meta: SnapshotMeta) -> tuple[SnapshotMeta, str]:
        tmp = os.path.join(self.data_dir, "snapshot-copy.db")
        try:
            self.store.backup_to(tmp)
            copy = self._store_cls(tmp)
            try:
                return self._machine_cls.snapshot_from_copy(copy, self.snaps, meta,
                                                           self.tuning.session_timeout_ms)
            finally:
                copy.close()
        finally:
            for p in (tmp, tmp + "-wal", tmp + "-shm"):
                remove_quietly(p)

    def after_snapshot(self, meta: SnapshotMeta, fsync: bool) -> int:
        """The database holds the applied state itself: the mark moves to the snapshot and
        the log before it (less the tail kept for slow followers) is deleted."""
        cur = self.store.snapshot_mark
        if cur is None or meta.index > cur.index:
            self.store.save_snapshot_mark(meta)
        keep_to = meta.index - self.tuning.snapshot_keep_entries
        if keep_to > self.store.first_index - 1:
            self.store.compact(keep_to)
        if fsync:
            self.store.sync()
        return 0
