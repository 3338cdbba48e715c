"""Building a node from its configuration: the one place where ``Config`` becomes parts.

Place in the architecture: part of the runtime (``fastraft.server``), called by ``main``. It
opens the storage backend (``backends``) and recovers it, arms the rejoin marker
(``rejoin``), turns the ``Tuning`` into the engine's ``RaftConfig`` (``raft_config``: the only
place that does) and builds the ``RawNode``, then the node (``node.Node``) and its two
transports (``peers.PeerTransport`` with the node as its handler, ``clients.ClientServer``
with the node's request handler), and hands the transports to the node. Configuration flows
one way: from here into the parts, none of which reads the environment or the file.
"""

from __future__ import annotations

import logging
import random

from .. import codec
from ..config import Config, Tuning
from ..errors import CorruptRecordError, FatalError, StorageError
from ..raft import RaftConfig, RawNode
from .backends import open_backend
from .clients import ClientServer
from .node import Node
from .peers import PeerTransport
from .rejoin import RejoinMarker

__all__ = ["raft_config", "build_node", "ENGINE_LIMIT_OFF"]

log = logging.getLogger("fastraft.node")

#: ``RaftConfig.max_uncommitted`` of a node: the engine's own bound on uncommitted entries is
#: not used, as the pending-write limit (``Tuning.max_pending``) is owned by
#: ``requests.Requests``, which answers Busy per write before anything is proposed.
ENGINE_LIMIT_OFF = 1 << 62


def raft_config(tuning: Tuning, node_id: int, voters: frozenset, *,
                rejoining: bool = False) -> RaftConfig:
    """The engine's settings of node ``node_id`` from the cluster's ``Tuning`` (times in
    ticks, replication limits, pre-vote and check-quorum)."""
    t = tuning
    return RaftConfig(id=node_id, voters=voters, election_tick=t.election_tick,
                      heartbeat_tick=t.heartbeat_tick, pre_vote=t.pre_vote,
                      check_quorum=t.check_quorum, max_inflight_msgs=t.max_inflight_msgs,
                      max_inflight_bytes=t.max_inflight_bytes, max_msg_bytes=t.max_msg_bytes,
                      max_uncommitted=ENGINE_LIMIT_OFF, rejoining=rejoining)


def _open_engine(cfg: Config, node_id: int, data_dir: str, rejoin: bool):
    """Recover the storage and build the engine on it: ``(backend, raw, marker,
    need_snapshot)``. FatalError when the storage cannot be read or recovered."""
    t = cfg.tuning
    voters = cfg.voters
    try:
        backend = open_backend(t.storage, data_dir, voters, t)
        rlog, hs, newest = backend.open()
    except (StorageError, CorruptRecordError) as exc:
        raise FatalError(str(exc)) from exc
    marker = RejoinMarker(data_dir)
    if rejoin:                  # durable before it matters
        marker.arm()
    if marker.active:
        log.warning("rejoining after a data loss: no vote and no campaign until a leader "
                    "has caught this node up")
    raw = RawNode(raft_config(t, node_id, voters, rejoining=marker.active), random.Random(),
                  rlog, hs)
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
               rejoin: bool = False) -> Node:
    """Node ``node_id`` of ``cfg`` with its data in ``data_dir``, recovered and wired, ready
    for ``await node.start()``. Call it in the running loop. FatalError when the storage
    cannot be recovered; OSError when a directory cannot be made."""
    t = cfg.tuning
    spec = cfg.node(node_id)
    backend, raw, marker, need_snapshot = _open_engine(cfg, node_id, data_dir, rejoin)
    limits = codec.Limits(max_key=t.max_key_bytes, max_value=t.max_value_bytes)
    node = Node(cfg, node_id, raw, backend, marker, limits=limits, loop_name=loop_name,
                need_snapshot=need_snapshot)
    peer_addrs = {n.id: n.raft for n in cfg.nodes if n.id != node_id}
    peers = PeerTransport(node, node_id, cfg.cluster_name, spec.raft_bind, peer_addrs,
                          backend.snaps, t.peer_frame_bytes)
    clients = ClientServer(node.requests, spec.client, limits, t.max_frame_bytes,
                           t.max_client_connections)
    node.attach(peers, clients)
    return node
