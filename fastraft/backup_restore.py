"""Restoring a backup (``fastraft snapshot restore``): the data directories of a NEW cluster
that starts with the backed-up state.

Place in the architecture: a tool at the top, beside the launcher (``cli`` calls it through
``client/cli_snapshot.py``). It reads a backup with ``fastraft.backup``, rebuilds the state
machine with ``fastraft.statemachine`` (every shape, order and count checked) and writes each
node's directory with the node's own storage code (``server.backends``: the same backend
open, snapshot install and hard state as a node that received a snapshot from its leader),
under the directory lock and the backend marker of ``fastraft.datadir``.

What a node of NEWCFG finds in ``DIR/<id>`` after a restore: a snapshot at the backup's index
and term whose data is the backed-up state (KV pairs and client sessions) and whose
configuration is NEWCFG's: every node of NEWCFG a voter, with NEWCFG's addresses in the
member book (``codec.encode_member_book``) — nothing of the old cluster's membership; the
log's snapshot mark there; the hard state (that term, no vote, committed up to the index).
Started with NEWCFG (``fastraft cluster --config NEWCFG``, or ``fastraft node --config NEWCFG
--id N``, with the same ``--data-dir`` if one was given here), the nodes recover that state
like any restart, elect a leader among themselves and go on from the next index. No entry 1
is written (a restored directory is not empty, so no node bootstraps).

A new cluster identity: the cluster name is what nodes check when they connect (the peer
hello, ``codec`` P_HELLO: a node refuses a hello of another cluster name, in both
directions), so restore refuses (exit 2) a NEWCFG whose cluster name is the backed-up
cluster's. Nodes of the old cluster, which still say the old name, can then never join the
new one or take part in its elections, even at the same addresses. (Two clusters given the
same name by their operators are one cluster to the nodes: that rule of fastraft, which
``fastraft cluster`` keeps for new clusters, holds for restored ones.)

Refusals, all before anything is written (exit 2): a damaged or truncated backup (the byte
offset of the damage), a node directory that exists and is not empty (no data is ever
overwritten), the old cluster's name. A failure while writing removes the node directories
this restore created.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from . import codec
from .backup import BackupReader
from .config import Config
from .datadir import claim_backend, lock_data_dir, makedirs_durable
from .errors import FastraftError, StorageError
from .raft import Snapshot, SnapshotMeta
from .raft.messages import HardState

__all__ = ["restore", "RestoreRefused", "new_cluster_meta"]


class RestoreRefused(FastraftError):
    """Restore will not do it (the message says why); nothing was written."""


def new_cluster_meta(cfg: Config, index: int, term: int) -> SnapshotMeta:
    """The snapshot meta of a node of the new cluster ``cfg`` restored at ``index``@``term``:
    every node of ``cfg`` a voter, with its addresses in the member book."""
    book = {n.id: (n.raft_addr, n.client_addr) for n in cfg.nodes}
    return SnapshotMeta(index, term, frozenset(book), frozenset(), frozenset(),
                        codec.encode_member_book(book, ()))


def _node_dirs(cfg: Config) -> dict[int, str]:
    return {n.id: cfg.node_dir(n.id) for n in sorted(cfg.nodes, key=lambda n: n.id)}


def _check_empty(dirs: dict[int, str]) -> None:
    taken = []
    for path in dirs.values():
        if os.path.lexists(path):
            if not os.path.isdir(path):
                taken.append(f"{path} (not a directory)")
            elif os.listdir(path):
                taken.append(path)
    if taken:
        raise RestoreRefused(
            f"refusing to overwrite existing data in {', '.join(taken)}: restore only into "
            f"empty or missing node directories (remove them, or give another --data-dir)")


def _read_state(path: str, cfg: Config):
    """``(meta of the backup, state machine)``: the whole file checked as it is read."""
    from .statemachine import KVStateMachine

    with BackupReader(path) as r:
        meta = r.meta
        if meta.cluster == cfg.cluster_name:
            raise RestoreRefused(
                f"{cfg.source or 'the configuration'} names the cluster {cfg.cluster_name!r}, "
                f"the name of the cluster this backup was taken from: a restored cluster is a "
                f"new cluster and needs a new name ([cluster] name), so that nodes of the old "
                f"one can never join it")
        machine = KVStateMachine.restore(r.data())
    if machine.applied_index != meta.index:
        raise RestoreRefused(f"the backup's state is at index {machine.applied_index}, its "
                             f"header says {meta.index}")
    return meta, machine


def restore(path, cfg: Config, *, storage: str | None = None, progress=None) -> dict:
    """Restore the backup at ``path`` into the data directories of every node of ``cfg``
    (module docstring). ``storage``: the backend to write ("wal" or "sqlite"; default the
    config's). Returns ``{"index", "term", "keys", "sessions", "cluster", "from_cluster",
    "dirs": {id: path}, "storage"}``. Raises RestoreRefused, BackupDamaged (with the offset),
    CorruptRecordError (a state that does not decode), ConfigError, OSError, StorageError;
    ``progress(text)`` is told of each step."""
    path = os.fspath(path)
    if storage is not None:
        cfg = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning,
                                                                  storage=storage))
    dirs = _node_dirs(cfg)
    _check_empty(dirs)
    meta, machine = _read_state(path, cfg)
    _check_empty(dirs)              # (again: the read may have taken a while)
    new = new_cluster_meta(cfg, meta.index, meta.term)
    made: list[tuple[str, bool]] = []
    try:
        for nid, d in dirs.items():
            if progress is not None:
                progress(f"node {nid}: writing {d}")
            _write_node(d, cfg, new, machine, made)
    except BaseException:
        _undo(made)
        raise
    return {"index": meta.index, "term": meta.term, "keys": len(machine.kv),
            "sessions": len(machine.sessions), "cluster": cfg.cluster_name,
            "from_cluster": meta.cluster, "dirs": dirs, "storage": cfg.tuning.storage}


def _undo(made: list[tuple[str, bool]]) -> None:
    """After a failure: remove the directories this restore created, and what it wrote in
    the (empty) ones that were there before (best effort)."""
    for d, existed in made:
        if not existed:
            shutil.rmtree(d, ignore_errors=True)
            continue
        for name in os.listdir(d) if os.path.isdir(d) else ():
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except OSError:
                    pass


def _write_node(d: str, cfg: Config, meta: SnapshotMeta, machine, made: list) -> None:
    """One node's directory: locked, claimed for the backend, the snapshot stored as a
    leader's would be (for SQLite: installed into the database), the hard state saved, all
    synced; then opened again to check that it recovers to the snapshot."""
    from .server.backends import open_backend

    existed = os.path.isdir(d)
    if existed and os.listdir(d):
        raise RestoreRefused(f"{d} is not empty any more: refusing to overwrite it")
    makedirs_durable(d)
    made.append((d, existed))
    fd = lock_data_dir(d)
    try:
        storage = cfg.tuning.storage
        claim_backend(d, storage, ())
        backend = open_backend(storage, d, frozenset(), cfg.tuning)
        try:
            backend.open()
            path = backend.snaps.save(meta, machine.snapshot_chunks())
            snap = Snapshot(meta, path)
            backend.persist_snapshot(snap)
            backend.store.save_hard_state(HardState(meta.term, 0, meta.index))
            backend.store.sync()
        finally:
            backend.close()
        _check_node(d, cfg, meta)
    finally:
        os.close(fd)


def _check_node(d: str, cfg: Config, meta: SnapshotMeta) -> None:
    """Open the directory as a node would and check it holds the restored state."""
    from .server.backends import open_backend

    backend = open_backend(cfg.tuning.storage, d, frozenset(), cfg.tuning)
    try:
        rlog, hs, _newest = backend.open()
        applied = backend.machine.applied_index
    finally:
        backend.close()
    if (rlog.snapshot.meta.index, applied, hs.term, hs.commit) != (
            meta.index, meta.index, meta.term, meta.index):
        raise StorageError(f"{d}: written, but it recovers to snapshot "
                           f"{rlog.snapshot.meta.index}, applied {applied}, term {hs.term}, "
                           f"commit {hs.commit}, not {meta.index}@{meta.term}")
