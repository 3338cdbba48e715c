"""The node side of ``fastraft snapshot save``: a consistent snapshot of the state machine,
written to a file of its own without stalling the loop, then read by the client in pieces.

Place in the architecture: part of the runtime (``fastraft.server``), beside ``snapshots``.
``requests.Requests`` hands it OP_BACKUP once a ReadIndex round has made it safe (on the
leader, with the state machine applied up to the read index: every write acknowledged before
the request is in it), and OP_BACKUP_READ / OP_BACKUP_END as they come (``codec`` docstring).
It writes through the storage layer's ``SnapshotStore`` into ``<data>/backup/``, never into
``snap/``: those files are the node's own snapshots, which its log compaction and the WAL's
snapshot mark rely on.

How the file is made, by backend (the same ways as the node's own snapshots, ``backends``):

- WAL: ``os.fork()``; the child writes the snapshot of its copy-on-write image of the machine
  (frozen at the applied index read in the same loop step as the fork), the parent's loop
  goes on; the child is the snapshotter's (``statemachine/snapshotter.py``: lower priority,
  killed with the node). Its own fork, not ``take_snapshot``, which allows one snapshot per
  process: the node's next threshold snapshot must not fail because a backup is running.
- SQLite: a consistent copy of the committed database (SQLite's backup API) in a thread,
  turned into a snapshot file there (``SqliteStateMachine.snapshot_from_copy``).

Then, in a thread, the file is read once through its CRC check, which also gives the CRC-32
and length of its data; the client is answered with the meta, that length and CRC, and a
random token. The data is served by offset (``os.pread`` in a thread, so a cold disk read
does not stall the loop); nothing is buffered beyond the pieces asked for. One backup at a
time: OP_BACKUP while one is held is Busy. The file is released by OP_BACKUP_END, when the
connection that asked for it closes, or after ``IDLE_S`` seconds without a read; what a
stopped node left in ``backup/`` is removed when the next process makes its ``Backups``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import zlib

from .. import codec
from ..errors import CompactedError, CorruptRecordError, LocalProtocolError, StorageError
from ..statemachine import snapshotter
from ..storage.snapshot import SnapshotStore, open_data, read_chunks, snapshot_name

__all__ = ["Backups", "BACKUP_DIR", "IDLE_S"]

log = logging.getLogger("fastraft.node")

#: The directory, inside the node's data directory, of the file being served.
BACKUP_DIR = "backup"
#: A backup file not read for this many seconds is released.
IDLE_S = 60.0
_CHECK_EVERY = 2.0
_TRAILER = 16                   # storage/snapshot.py: u64 length, u32 crc, b"SNPE"
_COPY = "backup-copy.db"


class _Job:
    """The one backup of this node: being made (``ready`` False) or served."""

    __slots__ = ("token", "conn", "path", "meta", "offset", "length", "crc", "last", "ready",
                 "pause")

    def __init__(self, conn) -> None:
        self.token = secrets.randbits(63) | 1
        self.conn = conn            # the connection that asked for it
        self.path = None
        self.meta = None
        self.offset = 0             # where the data starts in the file
        self.length = 0
        self.crc = 0
        self.last = time.monotonic()
        self.ready = False
        self.pause = 0.0            # seconds the loop paused to start the writer (the fork)


class Backups:
    """OP_BACKUP, OP_BACKUP_READ, OP_BACKUP_END of one node (module docstring). ``raw`` is
    the engine, ``backend`` the storage (``interfaces.Backend``; its ``machine`` is the state
    machine in force), ``meta_at(index, term)`` the snapshot meta there (the configuration and
    the member book: ``members.Members.meta_at``)."""

    def __init__(self, raw, backend, *, meta_at, cluster: str, node_id: int) -> None:
        self.raw = raw
        self.backend = backend
        self.meta_at = meta_at
        self.cluster = cluster
        self.node_id = node_id
        self.dir = os.path.join(backend.data_dir, BACKUP_DIR)
        self._job: _Job | None = None
        self._timer = None
        self._clear()

    @classmethod
    def for_node(cls, node) -> Backups:
        """The backups of ``node`` (a ``node.Node``), from its parts."""
        return cls(node.raw, node.backend, meta_at=node.snapshots.meta_at,
                   cluster=node.cfg.cluster_name, node_id=node.id)

    def _clear(self) -> None:
        """Remove what an earlier process left in ``backup/`` (best effort)."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError as exc:
                log.warning("cannot remove %s: %s", os.path.join(self.dir, name), exc)

    # -- OP_BACKUP --------------------------------------------------------------------------

    def begin(self, conn, req_id: int) -> None:
        """Start a backup for ``conn`` (the read barrier has passed): answered once the file
        is written and checked."""
        if self._job is not None:
            job = self._job
            what = "being written" if not job.ready else "being read by a client"
            conn.respond(req_id, codec.ST_BUSY, f"another backup of this node is {what}; "
                                                f"try again later")
            return
        job = self._job = _Job(conn)
        asyncio.get_running_loop().create_task(self._make(job, req_id))

    async def _make(self, job: _Job, req_id: int) -> None:
        t0 = time.monotonic()
        conn = job.conn
        try:
            meta, path = await self._write(job)  # its first step reads the applied index
            job.path = path
            loop = asyncio.get_running_loop()
            job.offset, job.length, job.crc = await loop.run_in_executor(None, _verify_file,
                                                                         path)
            job.meta = meta
        except (CompactedError, LocalProtocolError) as exc:
            self._drop(job)
            conn.respond(req_id, codec.ST_BUSY, f"backup not taken: {exc}; try again")
            return
        except (StorageError, CorruptRecordError, OSError) as exc:
            self._drop(job)
            log.error("backup failed: %s", exc)
            conn.respond(req_id, codec.ST_ERROR, f"backup failed: {exc}")
            return
        except Exception as exc:                 # noqa: BLE001 - the client gets an answer
            self._drop(job)
            log.exception("backup failed")
            conn.respond(req_id, codec.ST_ERROR, f"backup failed: {type(exc).__name__}: "
                                                 f"{exc}")
            return
        if self._job is not job or conn.closed:
            self._drop(job)
            return
        job.ready = True
        job.last = time.monotonic()
        self._arm()
        log.info("backup at index %d (term %d, %d bytes of data) written in %.2f s (the loop "
                 "paused %.1f ms to start it) for client %s", meta.index, meta.term,
                 job.length, time.monotonic() - t0, job.pause * 1000,
                 getattr(conn, "remote", "?"))
        conn.respond(req_id, codec.ST_OK, job.token, meta.index, meta.term,
                     sorted(meta.voters), sorted(meta.outgoing), sorted(meta.learners),
                     meta.context, job.length, job.crc, self.cluster, self.node_id)

    async def _write(self, job: _Job):
        """Write the snapshot file (module docstring); ``(meta, path)``. Everything up to the
        fork (or the database sync) happens in one loop step, so the meta is the state's."""
        backend = self.backend
        machine = backend.machine
        applied = machine.applied_index
        meta = self.meta_at(applied, self.raw.term_at(applied))
        os.makedirs(self.dir, exist_ok=True)
        self._clear()
        store = SnapshotStore(self.dir, keep=1)
        if backend.name == "sqlite":
            t0 = time.perf_counter()
            backend.store.sync()        # the copy sees committed data only
            job.pause = time.perf_counter() - t0
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._sqlite_copy, store, meta)
        if not snapshotter.fork_available():
            return meta, store.save(meta, machine.snapshot_chunks())
        return meta, await _fork_save(machine, store, meta, job)

    def _sqlite_copy(self, store, meta):
        """In a thread: a snapshot file from a consistent copy of the database."""
        from ..statemachine.sqlite_machine import SqliteStateMachine
        from ..storage.sqlite import SqliteStore

        backend = self.backend
        tmp = os.path.join(self.dir, _COPY)
        try:
            backend.store.backup_to(tmp)
            copy = SqliteStore(tmp)
            try:
                return SqliteStateMachine.snapshot_from_copy(
                    copy, store, meta, backend.tuning.session_timeout_ms)
            finally:
                copy.close()
        finally:
            for p in (tmp, tmp + "-wal", tmp + "-shm"):
                try:
                    os.unlink(p)
                except OSError:
                    pass

    # -- OP_BACKUP_READ / OP_BACKUP_END -------------------------------------------------------

    def read(self, conn, req) -> None:
        """Answer ``length`` bytes of the data at ``offset`` (fewer at its end)."""
        token, offset, length = req.backup
        job = self._job
        if job is None or job.token != token or not job.ready:
            conn.respond(req.req_id, codec.ST_INVALID, "unknown backup token (released, "
                                                       "expired, or not this node's)")
            return
        if offset > job.length:
            conn.respond(req.req_id, codec.ST_INVALID,
                         f"offset {offset} is past the end of the data ({job.length} bytes)")
            return
        n = min(length, job.length - offset)
        job.last = time.monotonic()
        if n == 0:
            conn.respond(req.req_id, codec.ST_OK, b"")
            return
        fut = asyncio.get_running_loop().run_in_executor(None, _pread, job.path,
                                                         job.offset + offset, n)
        fut.add_done_callback(lambda f: self._read_done(f, conn, req.req_id, n))

    @staticmethod
    def _read_done(fut, conn, req_id: int, n: int) -> None:
        if fut.cancelled():             # the loop is closing
            return
        exc = fut.exception()
        if exc is not None:
            conn.respond(req_id, codec.ST_INVALID, f"backup released ({exc})")
            return
        data = fut.result()
        if len(data) != n:
            conn.respond(req_id, codec.ST_ERROR, f"the backup file gave {len(data)} bytes, "
                                                 f"not {n}")
            return
        conn.respond(req_id, codec.ST_OK, data)

    def end(self, conn, req) -> None:
        """Release the backup named by the token."""
        job = self._job
        if job is None or job.token != req.backup[0]:
            conn.respond(req.req_id, codec.ST_INVALID, "unknown backup token")
            return
        self._drop(job)
        conn.respond(req.req_id, codec.ST_OK, None)

    # -- releasing ----------------------------------------------------------------------------

    def _drop(self, job: _Job) -> None:
        if self._job is job:
            self._job = None
        if job.path is not None:
            try:
                os.unlink(job.path)
            except OSError:
                pass

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_CHECK_EVERY, self._check)

    def _check(self) -> None:
        """Release a backup whose connection closed or that nobody read for IDLE_S."""
        self._timer = None
        job = self._job
        if job is None or not job.ready:
            return
        idle = time.monotonic() - job.last
        if job.conn.closed or idle > IDLE_S:
            why = "its client's connection closed" if job.conn.closed else \
                f"not read for {idle:.0f} s"
            log.info("backup at index %d released: %s", job.meta.index, why)
            self._drop(job)
            return
        self._arm()


# -- blocking helpers (threads, or a forked child) ---------------------------------------------

def _verify_file(path: str) -> tuple[int, int, int]:
    """Read the snapshot file at ``path`` through its CRC check; ``(data offset, data length,
    CRC-32 of the data)``. CorruptRecordError when it fails."""
    with open_data(path) as r:
        length = r.length
    size = os.stat(path).st_size
    crc = 0
    n = 0
    for piece in read_chunks(path):
        crc = zlib.crc32(piece, crc)
        n += len(piece)
    if n != length:
        raise CorruptRecordError(f"snapshot {path}: {n} bytes of data read, {length} expected")
    return size - _TRAILER - length, length, crc


def _pread(path: str, offset: int, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        while n > 0:
            b = os.pread(fd, n, offset)
            if not b:
                break
            out.append(b)
            n -= len(b)
            offset += len(b)
        return b"".join(out)
    finally:
        os.close(fd)


async def _fork_save(machine, store: SnapshotStore, meta, job: _Job) -> str:
    """``store.save(meta, machine.snapshot_chunks())`` in a forked child (the snapshotter's
    ``fork_write``); the path once it is durable. StorageError with the child's reason when
    it fails."""
    path = os.path.join(store.directory, snapshot_name(meta.term, meta.index))
    stats: dict = {}
    try:
        return await snapshotter.fork_write(machine, store, meta, path, stats, "backup writer")
    finally:
        job.pause = stats.get("fork_s", job.pause)
