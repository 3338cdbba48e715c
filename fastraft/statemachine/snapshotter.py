"""Taking state-machine snapshots without stalling the event loop: a forked child writes them.

Place in the architecture: the one module of ``fastraft.statemachine`` that does IO. The
runtime (server) calls ``take_snapshot`` from its event loop when the log has grown past the
snapshot threshold; it streams ``KVStateMachine.snapshot_chunks()`` into a
``fastraft.storage.snapshot.SnapshotStore`` (which makes the file durable and prunes old ones).

How (Redis's BGSAVE): ``os.fork()`` gives a child a copy-on-write image of the machine frozen at
``applied_index``; the child writes the snapshot while the parent's loop goes on applying
entries. The loop pauses only for the ``fork()`` call itself (page tables are copied, not
memory). The child:

- lowers its CPU priority (nice +5), disables logging and the garbage collector, resets SIGINT/SIGTERM/SIGHUP to their defaults
  and detaches the signal wakeup fd (a signal meant for the node must not be written into the
  parent's loop), and on Linux asks to be SIGKILLed when the parent dies (prctl
  PR_SET_PDEATHSIG), so a killed node leaves no orphan writing into its data directory;
- writes only with os-level IO (``SnapshotStore.save``), never touches the event loop;
- reports through a pipe: ``b"OK"`` on success, the error text otherwise, then leaves with
  ``os._exit`` (0 or 1): no atexit handlers, no flush of the parent's stdio buffers, no return
  into the parent's code, whatever happens.

While the child runs, the parent's existing objects are frozen out of its garbage collector
(``gc.freeze``; unfrozen when the child is done) so that a collection does not copy every page.
The parent polls ``os.waitpid(pid, WNOHANG)`` between short ``asyncio.sleep`` calls (no
child watcher needed, works with uvloop and the standard loop), reads the pipe, and returns the
path or raises StorageError with the child's reason. If the awaiting task is cancelled the
child is SIGKILLed and reaped (no zombie). ``SnapshotStore`` caches nothing about the files it
lists (only its own failure state), so the parent's store object stays consistent after the
child wrote and pruned files.

``take_snapshot_sync`` does the same in process (platforms without fork; the benchmark's
comparison). Only one snapshot runs at a time per process: a second call raises
LocalProtocolError.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time

from ..errors import LocalProtocolError, StorageError
from ..raft.messages import SnapshotMeta
from ..storage.snapshot import SnapshotStore, parse_snapshot_name, snapshot_name
from .machine import KVStateMachine

__all__ = ["take_snapshot", "take_snapshot_sync", "fork_write", "fork_available", "snapshot_running"]

log = logging.getLogger(__name__)

#: Seconds between two polls of the child's exit status.
POLL_INTERVAL = 0.005
#: The child's error text is cut to this many bytes (a pipe buffer holds it without blocking).
_MAX_REASON = 4000
_PR_SET_PDEATHSIG = 1

_running = False


def fork_available() -> bool:
    """True where ``take_snapshot`` can fork (POSIX CPython)."""
    return hasattr(os, "fork") and hasattr(os, "waitpid") and sys.platform != "win32"


def snapshot_running() -> bool:
    """True while a snapshot (fork or in-process) is being taken in this process."""
    return _running


def _check(machine: KVStateMachine, store: SnapshotStore, meta: SnapshotMeta) -> str:
    """Validate the call in the parent (clear errors before any fork); return the path."""
    if _running:
        raise LocalProtocolError("a snapshot is already being taken")
    if meta.index != machine.applied_index:
        raise LocalProtocolError(f"snapshot meta index {meta.index} is not the machine's "
                                 f"applied index {machine.applied_index}")
    names = store.names()                       # StorageError if the store failed earlier
    if names:
        newest = parse_snapshot_name(names[-1])
        if newest is not None and (meta.term, meta.index) < newest:
            raise LocalProtocolError(f"snapshot {meta.index}@{meta.term} is older than the "
                                     f"newest one {names[-1]}")
    return os.path.join(store.directory, snapshot_name(meta.term, meta.index))


def take_snapshot_sync(machine: KVStateMachine, store: SnapshotStore,
                       meta: SnapshotMeta) -> str:
    """Write the snapshot in this process (blocks the caller until it is durable)."""
    global _running
    _check(machine, store, meta)
    _running = True
    try:
        return store.save(meta, machine.snapshot_chunks())
    finally:
        _running = False


async def take_snapshot(machine: KVStateMachine, store: SnapshotStore, meta: SnapshotMeta,
                        stats: dict | None = None) -> str:
    """Write the snapshot of ``machine`` (at ``meta.index == machine.applied_index``) in a
    forked child; returns its path once it is durable. The caller may go on applying entries
    meanwhile. Raises StorageError when the child fails (with its reason), LocalProtocolError
    for a misuse. ``stats``, if given, receives ``fork_s`` (the fork call, the loop's only
    pause) and ``total_s``. One at a time per process (``fork_write`` has no such rule)."""
    global _running
    if not fork_available():
        raise LocalProtocolError("os.fork is not available here: use take_snapshot_sync")
    path = _check(machine, store, meta)
    _running = True
    try:
        return await fork_write(machine, store, meta, path, stats, "snapshot writer")
    finally:
        _running = False


async def fork_write(machine, store: SnapshotStore, meta: SnapshotMeta, path: str,
                     stats: dict | None = None, what: str = "snapshot writer") -> str:
    """``store.save(meta, machine.snapshot_chunks())`` in a forked child (``_child``);
    returns ``path`` (where ``store`` puts it) once it is durable. StorageError naming
    ``what`` with the child's reason when it fails. ``stats``: as ``take_snapshot``'s."""
    t0 = time.perf_counter()
    libc = _libc()
    parent = os.getpid()
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        raise StorageError(f"cannot make a pipe for the {what}: {exc}") from exc
    # Keep the parent's garbage collector off the objects the child is reading: a full
    # collection would write to every object header and copy most pages (copy on write)
    # while the child runs. Skipped if the application froze objects itself.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    try:
        pid = os.fork()
    except OSError as exc:
        if froze:
            gc.unfreeze()
        os.close(rfd)
        os.close(wfd)
        raise StorageError(f"cannot fork the {what}: {exc}") from exc
    if pid == 0:                                            # the child
        _child(machine, store, meta, rfd, wfd, parent, libc)   # never returns
    t_fork = time.perf_counter() - t0
    os.close(wfd)
    try:
        status = await _wait(pid)
        reason = _read_all(rfd)
    finally:
        os.close(rfd)
        if froze:
            gc.unfreeze()
    if stats is not None:
        stats["fork_s"] = t_fork
        stats["total_s"] = time.perf_counter() - t0
    ok = reason == b"OK"
    if status is None:          # reaped by someone else: the pipe is all we know
        if ok:
            return path
        raise StorageError(f"{what} {pid} ended (status lost): {_text(reason) or 'no report'}")
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and ok:
        return path
    if os.WIFSIGNALED(status):
        how = f"was killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"exited with status {os.WEXITSTATUS(status)}"
    raise StorageError(f"{what} {pid} {how}: {_text(reason) or 'no report'}")


async def _wait(pid: int) -> int | None:
    """Await the exit of child ``pid`` without blocking the loop; its wait status, or None if
    it was reaped by someone else. On cancellation the child is killed and reaped."""
    try:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done:
                return status
            await asyncio.sleep(POLL_INTERVAL)
    except BaseException:
        _kill_and_reap(pid)
        raise


def _kill_and_reap(pid: int) -> None:
    """SIGKILL and reap the child (a blocking wait, normally instant; longer only if the
    child is in an uninterruptible disk wait)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _read_all(fd: int) -> bytes:
    """What the (exited) child wrote into the pipe."""
    os.set_blocking(fd, False)
    out = []
    while True:
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not b:
            break
        out.append(b)
    return b"".join(out)


def _text(reason: bytes) -> str:
    return reason.decode("utf-8", "replace").strip()


def _child(machine: KVStateMachine, store: SnapshotStore, meta: SnapshotMeta,
           rfd: int, wfd: int, parent: int, libc) -> None:
    """The forked child: write the snapshot, report through ``wfd``, ``os._exit``."""
    code = 1
    try:
        try:
            os.close(rfd)
            gc.disable()
            logging.disable(logging.CRITICAL)
            _child_signals(parent, libc)
            try:
                os.nice(5)          # background work: the node's loop comes first
            except OSError:
                pass
            store.save(meta, machine.snapshot_chunks())
            _write_reason(wfd, b"OK")
            code = 0
        except BaseException as exc:                            # noqa: BLE001 - report all
            try:
                _write_reason(wfd, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
            except BaseException:                               # noqa: BLE001
                pass
    finally:
        os._exit(code)


def _write_reason(fd: int, data: bytes) -> None:
    data = data[:_MAX_REASON]
    while data:
        data = data[os.write(fd, data):]


def _child_signals(parent: int, libc) -> None:
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):       # not the main thread: there is no wakeup fd to clear
        pass
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError):
            pass
    if libc is not None:
        # Linux: SIGKILL this process when the parent dies (best effort)
        try:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:      # the parent died before prctl took effect
            os._exit(1)


_LIBC: list = []


def _libc():
    """The C library (for prctl) on Linux, loaded once in the parent; None elsewhere."""
    if not _LIBC:
        lib = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                lib = ctypes.CDLL(None, use_errno=True)
                lib.prctl       # noqa: B018 - resolve the symbol before any fork
            except (OSError, AttributeError, ImportError):
                lib = None
        _LIBC.append(lib)
    return _LIBC[0]
