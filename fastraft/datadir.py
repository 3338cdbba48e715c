"""A node's data directory: the lock that keeps two processes off it.

Place in the architecture: a leaf module used by the server (``fastraft.server.main`` takes the
lock) and by the launcher (``fastraft cluster`` checks every node's lock before it starts
anything). Standard library only; imports nothing else of fastraft but ``errors``.

The lock is ``DIR/LOCK`` held with ``flock`` for the life of the node process; the file holds
the holder's pid (information only: the kernel lock is the authority, and it disappears with
the process, however it ends).
"""

from __future__ import annotations

import errno
import fcntl
import os

from .errors import ConfigError

__all__ = ["LOCK_NAME", "lock_data_dir", "lock_holder"]

LOCK_NAME = "LOCK"


def lock_data_dir(node_dir: str) -> int:
    """Create ``node_dir`` if needed and lock it; returns the lock's file descriptor (keep
    it open for as long as the node runs). ConfigError when another process holds it."""
    os.makedirs(node_dir, exist_ok=True)
    fd = os.open(os.path.join(node_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
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
