"""Small file helpers shared by the storage backends: directory fsync, durable directory
creation and the ``<prefix><16 hex>-<16 hex><suffix>`` file names of WAL segments and snapshots.

Place in the architecture: private to ``fastraft.storage``; IO only through ``os``.
``fsync_dir`` and ``makedirs_durable`` live in ``fastraft.datadir`` (a standard-library leaf
that the launcher imports too) and are re-exported here.
"""

from __future__ import annotations

import os

from ..datadir import fsync_dir, makedirs_durable, remove_quietly

__all__ = ["fsync_dir", "makedirs_durable", "remove_quietly", "truncate_file", "hex_pair_name", "parse_hex_pair",
           "list_hex_pairs"]


def truncate_file(path: str, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and make the cut durable."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def hex_pair_name(prefix: str, a: int, b: int, suffix: str) -> str:
    return f"{prefix}{a:016x}-{b:016x}{suffix}"


def parse_hex_pair(name: str, prefix: str, suffix: str) -> tuple[int, int] | None:
    """The two numbers of a ``hex_pair_name``, or None for any other name."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    parts = name[len(prefix):-len(suffix)].split("-")
    if len(parts) != 2 or any(len(p) != 16 for p in parts):
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None


def list_hex_pairs(directory: str, prefix: str, suffix: str) -> list[tuple[int, int, str]]:
    """``(a, b, name)`` of every such file in ``directory``, sorted by (a, b)."""
    out = []
    for name in os.listdir(directory):
        parsed = parse_hex_pair(name, prefix, suffix)
        if parsed is not None:
            out.append((parsed[0], parsed[1], name))
    out.sort()
    return out
