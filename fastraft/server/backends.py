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

A snapshot received from the leader is installed in two steps so that the loop does not stop
for it (about 1 s per million keys): the peer transport's worker thread, once it has adopted
the file, calls ``prepare`` (through the store, ``BackendSnapshots``), which builds the new
state machine from it there; ``install`` (on the loop, in the Ready that carries the snapshot)
then swaps that machine in at once when it was built from the same snapshot (index and term),
and otherwise restores the file on the loop, as it does for a snapshot found at a restart.
Python threads share the GIL, so the loop runs slower while the state is built, but it runs:
heartbeats are answered and no election starts. Memory: the old and the new state coexist from
the moment the new one is built until it is swapped in (the old one is freed then; a prepared
state whose SNAP the engine refused is freed once the log has been applied past it,
``drop_prepared``). The SQLite backend still writes the new state's rows into its database on
the loop (``SqliteStateMachine.install_state``); only the decoding is done ahead.

A data directory belongs to the backend that first opened it (``fastraft.datadir``'s BACKEND
marker, checked by ``main`` before a backend opens anything); ``backends_present`` tells which
backends' files a directory from before the marker holds. Every directory a backend creates is
created durably (each new name's parent fsynced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

from ..datadir import SQLITE_FILE, WAL_DIR, makedirs_durable, remove_quietly
from ..errors import CorruptRecordError, FastraftError, RecoveryError, StorageError
from ..raft import RaftLog, Snapshot, SnapshotMeta, initial_snapshot
from ..statemachine import KVStateMachine
from ..statemachine.snapshotter import fork_available, take_snapshot, take_snapshot_sync
from ..storage.snapshot import SnapshotStore, read_meta
from ..storage.wal import WalStore, parse_segment_name

__all__ = ["WalBackend", "SqliteBackend", "BackendSnapshots", "open_backend",
           "backends_present", "RecoveryError", "WAL_DIR", "SQLITE_FILE"]


log = logging.getLogger("fastraft.node")

#: The pieces a received snapshot is read in while its state is built off the loop: small, so
#: that no one decoding call holds the GIL for long (the loop must get it back often).
PREPARE_PIECE = 64 * 1024


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


class BackendSnapshots(SnapshotStore):
    """The snapshot store of a backend: a ``SnapshotStore`` whose ``prepare`` hands a
    snapshot received from a peer (just adopted, on the peer transport's worker thread) to
    the backend, which builds its state there (``_Backend.prepare``)."""

    def __init__(self, directory, backend) -> None:
        super().__init__(directory)
        self.backend = backend

    def prepare(self, path: str, meta: SnapshotMeta) -> None:
        """Build the state machine of the adopted snapshot ``path`` (of ``meta``) for the
        backend's next ``install``. Call it off the loop; it never raises (a failure is
        reported by that ``install``, as if the file were read then)."""
        self.backend.prepare(path, meta)


class _Prepared:
    """A state machine built off the loop from the snapshot ``(index, term)``, or the error
    building it raised (``install`` raises it as a StorageError)."""

    __slots__ = ("index", "term", "machine", "error", "seconds")

    def __init__(self, meta: SnapshotMeta, machine, error: BaseException | None,
                 seconds: float) -> None:
        self.index = meta.index
        self.term = meta.term
        self.machine = machine
        self.error = error
        self.seconds = seconds


class _Abandoned(FastraftError):
    """The backend closed while a received snapshot's state was being built."""


class _Backend:
    """What both backends share: the data directory (made durably), the snapshot files in
    ``<data>/snap``, the state machine (None until ``open``) and the state built ahead from
    a received snapshot (``prepare``; module docstring)."""

    name = ""

    def __init__(self, data_dir: str, voters: frozenset, tuning) -> None:
        self.data_dir = data_dir
        self.voters = voters
        self.tuning = tuning
        makedirs_durable(data_dir)
        self.snaps = BackendSnapshots(os.path.join(data_dir, "snap"), self)
        self.machine = None
        self.store = None
        self._prepared: _Prepared | None = None     # set by the worker, taken by the loop
        self._prepared_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the store (its last sync is the node's); a state being built is abandoned."""
        with self._prepared_lock:
            self._closed = True
            self._prepared = None
        self.store.close()

    # -- a received snapshot's state, built off the loop ----------------------------------

    def _restore(self, chunks):
        """A ``KVStateMachine`` restored from a snapshot stream (any thread)."""
        return KVStateMachine.restore(chunks)

    def _pieces(self, path: str):
        for piece in self.snaps.read_chunks(path, PREPARE_PIECE):
            if self._closed:
                raise _Abandoned()
            yield piece

    def prepare(self, path: str, meta: SnapshotMeta) -> None:
        """On the peer transport's worker thread, after the snapshot ``path`` (of ``meta``)
        was adopted and before its SNAP is stepped: build its state machine, replacing any
        state prepared before, for ``install`` to swap in. A damaged file or a read error is
        kept for ``install`` to report; nothing raises here. Nothing is built for a
        snapshot the state machine has already applied (the engine will refuse it)."""
        current = self.machine
        if current is not None and meta.index <= current.applied_index:
            return
        log.info("building the state of snapshot %d@%d off the loop", meta.index, meta.term)
        t0 = time.monotonic()
        machine = error = None
        try:
            machine = self._restore(self._pieces(path))
        except _Abandoned:
            return
        except (CorruptRecordError, OSError, StorageError) as exc:
            error = exc
        except Exception:   # a bug: the install restores on the loop and meets it there
            log.exception("building the state of snapshot %s off the loop failed", path)
            return
        took = time.monotonic() - t0
        with self._prepared_lock:
            if not self._closed:
                self._prepared = _Prepared(meta, machine, error, took)
        if error is None:
            log.info("built the state of snapshot %d@%d (%d keys) off the loop in %.2f s",
                     meta.index, meta.term, len(machine.kv), took)

    def _take_prepared(self, snap: Snapshot) -> _Prepared | None:
        """The state prepared for ``snap`` (now no longer held), or None (none, or one of
        another snapshot: dropped). StorageError when building it failed."""
        with self._prepared_lock:
            p, self._prepared = self._prepared, None
        if p is None or (p.index, p.term) != (snap.meta.index, snap.meta.term):
            return None
        if p.error is not None:
            raise StorageError(f"cannot install snapshot {snap.data}: {p.error}") from p.error
        return p

    def drop_prepared(self, applied: int) -> None:
        """Free a prepared state the log has been applied up to or past (``applied``): the
        engine refused its SNAP (it had that much already), so it will never be installed.
        Called once per Ready pass; cheap when nothing is prepared."""
        if self._prepared is None:
            return
        with self._prepared_lock:
            p = self._prepared
            if p is not None and p.index <= applied:
                self._prepared = None
                log.info("dropped the state built from snapshot %d@%d: not installed "
                         "(applied %d)", p.index, p.term, applied)


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

    def install(self, snap: Snapshot) -> float | None:
        """After the sync: make the leader's snapshot the state machine: the one built off
        the loop from it (``prepare``), else restored from the file here. Returns how long
        building it off the loop took, None when it was restored here."""
        p = self._take_prepared(snap)
        if p is not None:
            self.machine = p.machine
            return p.seconds
        try:
            self.machine = KVStateMachine.restore(self.snaps.read_chunks(snap.data))
        except (CorruptRecordError, OSError) as exc:
            raise StorageError(f"cannot install snapshot {snap.data}: {exc}") from exc
        return None

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
        self._installed: float | None = None     # what the last install returned
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

    def _restore(self, chunks):
        return KVStateMachine.restore(chunks, self.machine.max_sessions)

    def install(self, snap: Snapshot) -> float | None:
        """Load the leader's snapshot into the database (unless ``persist_snapshot`` did):
        from the state decoded off the loop (``prepare``) when there is one, else from the
        file. Returns how long the decoding off the loop took, None when done here."""
        if self.machine.applied_index == snap.meta.index:
            return self._installed      # done by persist_snapshot
        p = self._take_prepared(snap)
        if p is not None:
            self.machine.install_state(p.machine)
            self._installed = p.seconds
            return p.seconds
        try:
            self.machine.install(self.snaps.read_chunks(snap.data))
        except (CorruptRecordError, OSError) as exc:
            raise StorageError(f"cannot install snapshot {snap.data}: {exc}") from exc
        self._installed = None
        return None

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
