"""A simulated power failure for file systems that lose unsynced directory entries.

Place in the architecture: test infrastructure only (Linux); no fastraft module imports it.
The crash tests (tests/storage/test_dir_durability.py) start real node processes with it
installed and, after a kill -9, undo what a power failure may undo.

POSIX makes a new name (a created file or directory, a rename, a removal) durable only once
the directory holding it has been fsynced; until then a power failure may take it back, and
some file systems do. This module models exactly that, and nothing of file contents:

- ``install(journal)`` — in the process under test, before it does any IO. An audit hook
  (``sys.addaudithook``) records every name the process creates, renames or removes: ``open``
  with ``O_CREAT`` of a path that did not exist, ``os.mkdir``, ``os.rename`` / ``os.replace``,
  ``os.remove`` (``os.unlink`` too), ``os.rmdir``; a wrapper of ``os.fsync`` /
  ``os.fdatasync`` records every completed fsync of a directory (the path of the descriptor
  from ``/proc/self/fd``). A file about to be replaced or removed is first hard-linked into
  ``<journal>.keep/`` so the crash can bring it back. Each event is one JSON line appended to
  the journal with one ``os.write`` (``O_APPEND``), from every process that inherits the hook
  (forked children included), with its pid. Events are recorded before the operation and
  fsyncs after it, so the journal never shows a directory fsync before a name it did not
  cover (a concurrent race can only make the crash milder, never harsher than the truth).
- ``crash(journal, root)`` — after the processes are dead: every event under ``root`` that no
  later fsync of its directory covers is undone, newest first: a created name is removed (a
  directory with everything in it), a rename is moved back (and the file it replaced is put
  back), a removed file or directory comes back. Returns the undone events.

Limits: only what Python code does is seen (SQLite creates its files from C: no events, so
they are never undone); a rename across directories is treated as an event of the target's
directory; ``dir_fd`` arguments are not supported (fastraft uses none).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading

__all__ = ["install", "crash", "read_journal", "supported"]

_state = threading.local()
_real = {}


def supported() -> bool:
    """The layer needs Linux (``/proc/self/fd``) and audit hooks (Python 3.8+)."""
    return sys.platform.startswith("linux") and hasattr(sys, "addaudithook")


def _entry(path) -> str | None:
    """The canonical absolute name of ``path``: its directory resolved, its last component
    kept (the entry itself may be a symlink, or not exist yet)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return None             # a descriptor (os.open of an fd, fdopen): names nothing
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def install(journal: str) -> None:
    """Record this process's (and its forked children's) name operations to ``journal``."""
    journal = os.path.abspath(journal)
    keep = journal + ".keep"
    os.makedirs(keep, exist_ok=True)
    jfd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    counter = [0]

    def emit(ev: dict) -> None:
        ev["pid"] = os.getpid()
        os.write(jfd, (json.dumps(ev) + "\n").encode())

    def keep_copy(path: str) -> str | None:
        """Hard-link the file at ``path`` aside (before a replace or a removal)."""
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return None
            counter[0] += 1
            aside = os.path.join(keep, f"{os.getpid()}-{counter[0]}")
            os.link(path, aside)
            return aside
        except OSError:
            return None

    def on_event(event: str, args: tuple) -> None:
        if event == "open":
            path, _mode, flags = args
            if not isinstance(flags, int) or not flags & os.O_CREAT:
                return
            p = _entry(path)
            if p is not None and not os.path.lexists(p):
                emit({"op": "create", "path": p})
        elif event == "os.mkdir":
            p = _entry(args[0])
            if p is not None and not os.path.lexists(p):
                emit({"op": "mkdir", "path": p})
        elif event in ("os.rename", "os.replace"):
            src, dst = _entry(args[0]), _entry(args[1])
            if src is not None and dst is not None and os.path.lexists(src):
                emit({"op": "rename", "src": src, "path": dst, "old": keep_copy(dst)})
        elif event == "os.remove":
            p = _entry(args[0])
            if p is not None and os.path.lexists(p):
                emit({"op": "remove", "path": p, "old": keep_copy(p)})
        elif event == "os.rmdir":
            p = _entry(args[0])
            if p is not None and os.path.isdir(p):
                emit({"op": "rmdir", "path": p})

    def hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.mkdir", "os.rename", "os.replace", "os.remove",
                         "os.rmdir") or getattr(_state, "busy", False):
            return
        _state.busy = True          # the hook's own IO raises events too
        try:
            on_event(event, args)
        finally:
            _state.busy = False

    def wrap(name: str):
        real = getattr(os, name)
        _real[name] = real

        def synced(fd):
            real(fd)
            n = fd if isinstance(fd, int) else fd.fileno()
            was = getattr(_state, "busy", False)
            _state.busy = True
            try:
                if stat.S_ISDIR(os.fstat(n).st_mode):
                    emit({"op": "fsync", "path": os.readlink(f"/proc/self/fd/{n}")})
            except OSError:
                pass
            finally:
                _state.busy = was
        synced.__name__ = name
        return synced

    os.fsync = wrap("fsync")
    if hasattr(os, "fdatasync"):
        os.fdatasync = wrap("fdatasync")
    sys.addaudithook(hook)


def read_journal(journal: str) -> list[dict]:
    """The events of ``journal``, in order (a torn last line of a killed process dropped)."""
    out = []
    with open(journal, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _undo(ev: dict) -> None:
    p, op = ev["path"], ev["op"]
    if op in ("create", "mkdir"):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)
    elif op == "rename":
        if os.path.lexists(p) and os.path.isdir(os.path.dirname(ev["src"])) \
                and not os.path.lexists(ev["src"]):
            os.rename(p, ev["src"])
        if ev.get("old") and os.path.isdir(os.path.dirname(p)) and not os.path.lexists(p):
            os.link(ev["old"], p)
    elif op == "remove":
        if ev.get("old") and os.path.isdir(os.path.dirname(p)) and not os.path.lexists(p):
            os.link(ev["old"], p)
    elif op == "rmdir":
        if os.path.isdir(os.path.dirname(p)) and not os.path.lexists(p):
            os.mkdir(p)


def crash(journal: str, root: str) -> list[dict]:
    """Simulate a power failure under ``root`` (all writers dead): undo every name operation
    no later fsync of its directory made durable, newest first. Returns the undone events,
    in the order they were undone."""
    root = os.path.realpath(root)
    events = read_journal(journal)
    last_sync: dict[str, int] = {}
    for i, ev in enumerate(events):
        if ev["op"] == "fsync":
            last_sync[ev["path"]] = i
    lost = [(i, ev) for i, ev in enumerate(events)
            if ev["op"] != "fsync" and _under(ev["path"], root)
            and last_sync.get(os.path.dirname(ev["path"]), -1) < i]
    undone = []
    for _i, ev in reversed(lost):
        _undo(ev)
        undone.append(ev)
    return undone
