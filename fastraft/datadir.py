"""A node's data directory: the lock that keeps two processes off it, the marker that says
which storage backend owns it, and durable creation of directories and small files.

Place in the architecture: a leaf module used by the server (``fastraft.server.main`` takes the
lock and checks the backend marker, ``node`` writes its REJOINING marker with it), by the
storage layer (``fastraft.storage._files`` re-exports ``fsync_dir`` and ``makedirs_durable``)
and by the launcher (``fastraft cluster`` checks every node's lock before it starts anything).
Standard library only; imports nothing else of fastraft but ``errors`` (and the package's
``__version__``, for messages).

The lock is ``DIR/LOCK`` held with ``flock`` for the life of the node process; the file holds
the holder's pid (information only: the kernel lock is the authority, and it disappears with
the process, however it ends).

Durability of names. POSIX lets a file system lose a directory entry (a new file, a new
directory, a rename, a removal) at a power failure unless the directory holding it was fsynced
afterwards; a node that created ``DATA_DIR/<id>`` without fsyncing ``DATA_DIR`` could come back
from a power failure with no data directory at all, having forgotten its term, its vote and
every entry it acknowledged. So every name a node creates is made durable before anything
depends on it: ``makedirs_durable`` fsyncs the parent of each level it creates (as etcd's
``fileutil`` does), ``write_file_durable`` writes a small file under a temporary name, fsyncs
it, renames it into place and fsyncs the directory, ``remove_durable`` fsyncs the directory
after the removal.

The backend marker ``DIR/BACKEND`` holds the name of the storage backend (``wal`` or
``sqlite``) that owns the directory, written durably at the first start. A node asked to open
the directory with another backend refuses (``claim_backend`` raises ConfigError): each
backend would otherwise start from an empty state of its own — term 0, no vote, no log —
which breaks Raft's safety, and switching back would resurrect the older state. A directory
from before the marker existed is recognised by its contents (the caller says which backends'
files it holds) and the marker is written then. The marker's format never changes; what a
newer fastraft may add is a backend: a marker naming a backend this release does not have is
refused as a newer format (``NewerFormatError``).

Formats newer than this release. Every versioned file of a node's directory (WAL segments
and their snapshot marks, snapshot files, the SQLite schema, this marker, ``node.toml``; the
list is in docs/architecture.md, "Versions and compatibility") is checked when the node
opens it; one written by a later release raises ``NewerFormatError``, which names the file,
the format, the version found and the newest version this release reads. The node refuses to
start (exit status 2, as for a configuration problem): nothing is damaged, so nothing may be
repaired or cut.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Iterable

from . import __version__
from .errors import ConfigError, CorruptRecordError

__all__ = ["LOCK_NAME", "BACKEND_NAME", "WAL_DIR", "SQLITE_FILE", "lock_data_dir", "lock_holder", "fsync_dir",
           "makedirs_durable", "write_file_durable", "remove_durable", "remove_quietly", "read_backend_marker",
           "claim_backend", "NO_MIGRATION", "KNOWN_BACKENDS", "NewerFormatError"]

LOCK_NAME = "LOCK"
BACKEND_NAME = "BACKEND"
#: Inside a node's directory: the WAL backend's segments are in ``wal/``, the SQLite
#: backend's database is ``fastraft.db``.
WAL_DIR = "wal"
SQLITE_FILE = "fastraft.db"

#: The storage backends this release has (``config.STORAGE_BACKENDS``): the vocabulary of the
#: BACKEND marker.
KNOWN_BACKENDS = ("wal", "sqlite")

#: What the refusal to open a directory with another backend tells the operator to do.
NO_MIGRATION = ("fastraft has no migration between backends; to switch, wipe this node's data "
                "directory and restart it with the new --storage and --rejoin, so that it "
                "catches up from the leader")


# -- formats newer than this release -----------------------------------------------------------

class NewerFormatError(CorruptRecordError, ConfigError):
    """A file of a node's data directory is in a format newer than this release reads
    (module docstring). ``path``, ``what`` (the format), ``found`` and ``supported`` (the
    newest version this release reads) say which. A node refuses to start on it: it is a
    ConfigError (``fastraft node`` exits with status 2). It is a CorruptRecordError too, for
    the code that only asks whether a file can be read (a snapshot received from a newer peer
    is refused like a damaged one, and ``latest()``-style scans must re-raise it rather than
    skip the file)."""

    def __init__(self, path: str, what: str, found, supported, where: str = "",
                 text: str | None = None) -> None:
        self.path, self.what, self.found, self.supported = path, what, found, supported
        self.where, self.text = where, text
        said = text or (f"{what} version {found} is newer than this fastraft ({__version__}) "
                        f"reads (up to version {supported})")
        super().__init__(
            f"{path}{where}: {said}: it was written by a later fastraft release. Run that "
            f"release (or a later one) on this data directory; to go back to this release "
            f"instead, wipe this node's data directory and start it with --rejoin, so that it "
            f"catches up from the leader")

    def at(self, path: str, where: str = "") -> NewerFormatError:
        """The same refusal naming ``path`` (and ``where`` in it, e.g. a byte offset)."""
        return NewerFormatError(path, self.what, self.found, self.supported, where, self.text)


# -- durable names ----------------------------------------------------------------------------

def fsync_dir(directory: str) -> None:
    """Make a creation, rename or deletion in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str) -> list[str]:
    """Create ``path`` and any missing parents, fsyncing the parent of each directory created
    (top-down, so each new name is durable before a name inside it is made). A level that
    another process created at the same moment is treated like one created here (its parent
    is fsynced too: this caller depends on it). Returns the directories created, outermost
    first. Creating nothing when ``path`` exists (it must then be a directory)."""
    path = os.path.abspath(os.fspath(path))
    missing = []
    p = path
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", p)
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    created = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
        fsync_dir(os.path.dirname(d))
        created.append(d)
    return created


def write_file_durable(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably: ``path.tmp`` written and
    fsynced, renamed to ``path``, the directory fsynced."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove_quietly(path: str) -> bool:
    """Remove the file ``path`` if it is there, ignoring every error (scratch and part files
    whose removal nothing depends on); True when it was removed."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def remove_durable(path: str) -> bool:
    """Remove the file ``path`` and fsync its directory; False when there was none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


# -- the lock ---------------------------------------------------------------------------------

def lock_data_dir(node_dir: str) -> int:
    """Create ``node_dir`` if needed (durably) and lock it; returns the lock's file descriptor
    (keep it open for as long as the node runs). ConfigError when another process holds it."""
    makedirs_durable(node_dir)
    # Whoever created node_dir before (an older fastraft, a script, the launcher), its name
    # must be durable before the node writes anything there: one fsync per start.
    fsync_dir(os.path.dirname(os.path.abspath(node_dir)))
    path = os.path.join(node_dir, LOCK_NAME)
    created = not os.path.lexists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"data directory {node_dir} is in use by another fastraft "
                              f"node (locked)") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    if created:
        fsync_dir(node_dir)
    return fd


def lock_holder(node_dir: str) -> int | None:
    """The pid of the process that holds ``node_dir``'s lock (0 when it cannot be read), or
    None when nobody holds it (or there is no lock file). Creates nothing."""
    path = os.path.join(node_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            try:
                return int(os.pread(fd, 32, 0).split()[0])
            except (ValueError, IndexError, OSError):
                return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# -- the backend marker -----------------------------------------------------------------------

def read_backend_marker(node_dir: str) -> str | None:
    """The backend named by ``node_dir/BACKEND``, or None when there is no marker.
    ConfigError when the file is not one backend name."""
    path = os.path.join(node_dir, BACKEND_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(256)
    except FileNotFoundError:
        return None
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ConfigError(f"{path} is damaged (it should hold the name of the storage backend "
                          f"that owns {node_dir}, 'wal' or 'sqlite', got {raw[:40]!r}); write "
                          f"the right name into it")
    return name


def claim_backend(node_dir: str, wanted: str, present: Iterable[str] = ()) -> str:
    """Check that backend ``wanted`` may open ``node_dir`` and record that it owns it.

    ``present``: the backends whose files ``node_dir`` holds (consulted only when there is no
    marker yet: a directory from before the marker existed). Returns how ownership was
    established: ``"marker"`` (the marker names ``wanted``), ``"recognised"`` (no marker; the
    contents are ``wanted``'s: the marker is written now) or ``"new"`` (no data: the marker is
    written now). ConfigError when another backend owns it, or when the contents are of
    several backends and there is no marker."""
    owner = read_backend_marker(node_dir)
    if owner is not None and owner not in KNOWN_BACKENDS:
        raise NewerFormatError(
            os.path.join(node_dir, BACKEND_NAME), "backend marker", owner, KNOWN_BACKENDS,
            text=f"names the storage backend {owner!r}, newer than this fastraft "
                 f"({__version__}), which has only the "
                 f"{' and '.join(map(repr, KNOWN_BACKENDS))} backends")
    how = "marker"
    if owner is None:
        found = sorted(set(present))
        if len(found) > 1:
            raise ConfigError(
                f"data directory {node_dir} holds the data of several storage backends "
                f"({' and '.join(found)}) and no {BACKEND_NAME} file says which one owns it "
                f"(written by a fastraft from before the marker): write the name of the "
                f"backend this node last ran with into {os.path.join(node_dir, BACKEND_NAME)},"
                f" or wipe the directory and restart the node with --rejoin")
        owner, how = (found[0], "recognised") if found else (wanted, "new")
        write_file_durable(os.path.join(node_dir, BACKEND_NAME), f"{owner}\n".encode())
    if owner != wanted:
        raise ConfigError(
            f"data directory {node_dir} belongs to the {owner!r} storage backend but this "
            f"node was asked to use {wanted!r} (--storage or the config's tuning.storage): "
            f"{NO_MIGRATION} (or run it with --storage {owner} to keep its data)")
    return how
