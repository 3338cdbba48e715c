"""Building a node from its configuration: the one place where ``Config`` becomes parts.

Place in the architecture: part of the runtime (``fastraft.server``), called by ``main``. It
opens the storage backend (``backends``) and recovers it, arms the rejoin marker
(``rejoin``), turns the ``Tuning`` into the engine's ``RaftConfig`` (``raft_config``: the only
place that does) and builds the ``RawNode``, then the node (``node.Node``) and its two
transports (``peers.PeerTransport`` with the node as its handler, ``clients.ClientServer``
with the node's request handler), and hands the transports to the node. Each transport
listens on the node's bind address (``raft_listen`` / ``client_listen`` when set) while the
cluster knows the node by its advertised ``raft`` / ``client`` addresses. Configuration flows
one way: from here into the parts, none of which reads the environment or the file.

Bootstrap (etcd's approach): a bootstrap member of a new cluster (listed in the config file,
its data directory empty) writes, before its engine starts, the entry every bootstrap member
writes alike: index 1, term 1, a conf change adding every node of the file as a voter with
its addresses, committed (``bootstrap_entry``). Its engine starts with no configuration and
reads it from that entry; from then on the log is the authority on the membership, and a node
that joins later receives entry 1 like any other. A node that joins (``--join``) or rejoins
after a data loss (``--rejoin``) writes nothing: its log and configuration come from the
leader. Data written before the membership was kept in the log (no configuration in the log)
runs with the config file's nodes as voters, as it always did.
"""

from __future__ import annotations

import logging
import random

from .. import codec, tls
from ..config import Config, Tuning
from ..datadir import NewerFormatError
from ..errors import CorruptRecordError, FatalError, StorageError
from ..raft import RaftConfig, RaftLog, RawNode
from ..raft.confchange import ADD_VOTER, Change, ConfChange, encode_conf_change
from ..raft.messages import EntryBatch, HardState
from .backends import open_backend
from .clients import ClientServer
from .members import Members
from .node import Node
from .peers import PeerTransport
from .rejoin import RejoinMarker

__all__ = ["raft_config", "build_node", "bootstrap_entry", "ENGINE_LIMIT_OFF"]

log = logging.getLogger("fastraft.node")

#: ``RaftConfig.max_uncommitted`` of a node: the engine's own bound on uncommitted entries is
#: not used, as the pending-write limit (``Tuning.max_pending``) is owned by
#: ``requests.Requests``, which answers Busy per write before anything is proposed.
ENGINE_LIMIT_OFF = 1 << 62


def raft_config(tuning: Tuning, node_id: int, voters: frozenset, *,
                rejoining: bool = False) -> RaftConfig:
    """The engine's settings of node ``node_id`` from the cluster's ``Tuning`` (times in
    ticks, replication limits, pre-vote and check-quorum, the promotion bound)."""
    t = tuning
    return RaftConfig(id=node_id, voters=voters, election_tick=t.election_tick,
                      heartbeat_tick=t.heartbeat_tick, pre_vote=t.pre_vote,
                      check_quorum=t.check_quorum, max_inflight_msgs=t.max_inflight_msgs,
                      max_inflight_bytes=t.max_inflight_bytes, max_msg_bytes=t.max_msg_bytes,
                      max_uncommitted=ENGINE_LIMIT_OFF, rejoining=rejoining,
                      promote_lag=t.promote_lag)


def bootstrap_entry(cfg: Config) -> bytes:
    """The payload of entry 1 of a new cluster: every node of ``cfg`` added as a voter,
    with its addresses (the same bytes on every bootstrap member)."""
    return encode_conf_change(ConfChange(tuple(
        Change(ADD_VOTER, n.id, codec.encode_member_context(n.raft_addr, n.client_addr))
        for n in sorted(cfg.nodes, key=lambda n: n.id))))


def _write_bootstrap(backend, cfg: Config, rlog: RaftLog) -> tuple[RaftLog, HardState]:
    """Write entry 1 of a new cluster (module docstring) durably; the log now holding it."""
    payload = bootstrap_entry(cfg)
    hs = HardState(1, 0, 1)
    try:
        backend.store.append(EntryBatch(1, [(1, payload)]))
        backend.store.save_hard_state(hs)
        backend.store.sync()
    except StorageError as exc:
        raise FatalError(f"cannot write the bootstrap entry: {exc}") from exc
    log.info("new cluster %r: bootstrap entry written (voters %s)", cfg.cluster_name,
             ", ".join(str(n.id) for n in sorted(cfg.nodes, key=lambda n: n.id)))
    return RaftLog(rlog.snapshot, [(1, payload)], 1, rlog.applied), hs


def _open_engine(cfg: Config, node_id: int, data_dir: str, rejoin: bool, bootstrap: bool):
    """Recover the storage and build the engine on it: ``(backend, raw, marker,
    need_snapshot)``. FatalError when the storage cannot be read or recovered;
    NewerFormatError (a ConfigError) when a file is of a later release's format."""
    t = cfg.tuning
    try:
        backend = open_backend(t.storage, data_dir, frozenset(), t)
        rlog, hs, newest = backend.open()
    except NewerFormatError:
        raise       # a ConfigError: a later release's data, refused with exit status 2
    except (StorageError, CorruptRecordError) as exc:
        raise FatalError(str(exc)) from exc
    fresh = (rlog.last_index == 0 and rlog.snapshot.meta.index == 0 and hs.term == 0
             and newest is None)
    marker = RejoinMarker(data_dir)
    if rejoin:                  # durable before it matters
        marker.arm()
    if marker.active:
        log.warning("rejoining after a data loss: no vote and no campaign until a leader "
                    "has caught this node up")
    elif fresh and bootstrap:
        rlog, hs = _write_bootstrap(backend, cfg, rlog)
    raw = RawNode(raft_config(t, node_id, frozenset(), rejoining=marker.active),
                  random.Random(), rlog, hs)
    if not fresh and not raw.conf_state().voters and bootstrap and not marker.active:
        log.warning("no configuration in the log (data from before the membership was kept "
                    "there): the config file's nodes %s are the voters",
                    ", ".join(str(v) for v in sorted(cfg.voters)))
        raw = RawNode(raft_config(t, node_id, cfg.voters), random.Random(), rlog, hs)
    if newest is not None and newest.meta.index > rlog.snapshot.meta.index:
        raw.compact(newest, keep_from=rlog.snapshot.meta.index + 1)
    # A snapshot mark without a readable file (SQLite backend, file lost): make one soon, a
    # lagging follower may need it.
    need_snapshot = rlog.snapshot.meta.index > 0 and rlog.snapshot.data is None
    log.info("recovered: log %d..%d, term %d, vote %d, commit %d, applied %d",
             rlog.first_index, rlog.last_index, hs.term, hs.vote, rlog.committed,
             rlog.applied)
    return backend, raw, marker, need_snapshot


def build_node(cfg: Config, node_id: int, data_dir: str, *, loop_name: str = "asyncio",
               rejoin: bool = False, bootstrap: bool = True,
               hints: dict | None = None) -> Node:
    """Node ``node_id`` of ``cfg`` with its data in ``data_dir``, recovered and wired, ready
    for ``await node.start()``. Call it in the running loop. ``bootstrap``: ``cfg`` lists
    the bootstrap members of the cluster (module docstring; False for a joining node);
    ``hints``: id -> (raft, client) addresses of members the log may not name yet (default:
    the config file's nodes). FatalError when the storage cannot be recovered; OSError when
    a directory cannot be made; ConfigError when a ``[tls]`` file cannot be used or a data
    file is of a later release's format (``datadir.NewerFormatError``)."""
    t = cfg.tuning
    spec = cfg.node(node_id)
    # before any data is touched:
    peer_tls, client_tls = (None, None) if cfg.tls is None else tls.node_contexts(cfg.tls,
                                                                                 node_id)
    backend, raw, marker, need_snapshot = _open_engine(cfg, node_id, data_dir, rejoin,
                                                       bootstrap)
    if hints is None:
        hints = {n.id: (n.raft_addr, n.client_addr) for n in cfg.nodes}
    members = Members(node_id, hints)
    members.refresh(raw)
    if bootstrap:
        members.compare_config(cfg)
    limits = codec.Limits(max_key=t.max_key_bytes, max_value=t.max_value_bytes)
    node = Node(cfg, node_id, raw, backend, marker, members, limits=limits,
                loop_name=loop_name, need_snapshot=need_snapshot)
    peers = PeerTransport(node, node_id, cfg.cluster_name, spec.raft_bind,
                          members.peer_addrs(), backend.snaps, t.peer_frame_bytes,
                          advertise=spec.raft_addr, tls=peer_tls)
    clients = ClientServer(node.requests, spec.client_bind, limits, t.max_frame_bytes,
                           t.max_client_connections, tls=client_tls)
    node.attach(peers, clients)
    return node
