"""Small file helpers shared by the storage backends: directory fsync, durable directory
creation, durable truncation and the ``<prefix><16 hex>-<16 hex><suffix>`` file names of WAL
segments and snapshots (``HexPairNames``).

Place in the architecture: private to ``fastraft.storage``; IO only through ``os``.
``fsync_dir`` and ``makedirs_durable`` live in ``fastraft.datadir`` (a standard-library leaf
that the launcher imports too) and are re-exported here.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..datadir import fsync_dir, makedirs_durable, remove_quietly

__all__ = ["fsync_dir", "makedirs_durable", "remove_quietly", "truncate_file", "write_all",
           "HexPairNames"]


def truncate_file(path: str, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and make the cut durable."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, buf) -> None:
    """``os.write`` all of ``buf`` (any bytes-like object), however many calls it takes (one,
    nearly always: the rest goes through a byte view only after a short write)."""
    size = len(buf) if type(buf) is bytes else memoryview(buf).nbytes
    done = os.write(fd, buf) if size else 0
    if done < size:
        view = memoryview(buf).cast("B")
        while done < size:
            done += os.write(fd, view[done:])


class HexPairNames(NamedTuple):
    """The ``<prefix><16 hex a>-<16 hex b><suffix>`` names of one kind of file (WAL segments,
    snapshots): fixed-width lowercase hex, so the name order is the ``(a, b)`` order."""

    prefix: str
    suffix: str

    def name(self, a: int, b: int) -> str:
        """The file name of ``(a, b)``."""
        return f"{self.prefix}{a:016x}-{b:016x}{self.suffix}"

    def parse(self, name: str) -> tuple[int, int] | None:
        """The two numbers of such a name, or None for any other name."""
        prefix, suffix = self.prefix, self.suffix
        if not (name.startswith(prefix) and name.endswith(suffix)):
            return None
        parts = name[len(prefix):-len(suffix)].split("-")
        if len(parts) != 2 or any(len(p) != 16 for p in parts):
            return None
        try:
            return int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            return None

    def listing(self, directory: str) -> list[tuple[int, int, str]]:
        """``(a, b, name)`` of every such file in ``directory``, sorted by (a, b)."""
        out = []
        for name in os.listdir(directory):
            parsed = self.parse(name)
            if parsed is not None:
                out.append((parsed[0], parsed[1], name))
        out.sort()
        return out
