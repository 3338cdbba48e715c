"""How a node that is not a bootstrap member starts: its identity file, and joining.

Place in the architecture: part of the runtime (``fastraft.server``), used by the cli's
``fastraft node`` and by ``main.run_node``. A bootstrap member is named by the cluster's config
file. A node added later (``fastraft member add``) is started with its own addresses and
``--join HOST:PORT[,...]`` (client addresses of current members)::

    fastraft node --id 4 --raft 10.0.0.4:7104 --client 10.0.0.4:7004 \\
                  --join 10.0.0.1:7001,10.0.0.2:7002 --data-dir DIR

(``--raft-listen HOST:PORT`` / ``--client-listen HOST:PORT``: listen for peers / clients
there, e.g. ``0.0.0.0:7104``, while the cluster knows the node by ``--raft`` / ``--client``;
``--metrics HOST:PORT``: serve ``/metrics``, ``/health`` and ``/ready`` there.)

Its first start writes ``DIR/<id>/node.toml`` (durably): a config file naming the cluster, the
tuning and this node alone (its first line, ``# fastraft node identity, format 1``, carries
the file's format version: a file of a later format is refused with ``NewerFormatError``), so that ``fastraft node --id 4 --data-dir DIR`` restarts it
without anything else (its peers and the membership come from its log). Until it is a member,
it asks the cluster for the member list (``Client.members``; with ``[tls]``, over TLS with
its own node certificate) once a second and waits;
once it is listed with the same addresses, the ``JOINED`` file records it, the list becomes
the node's address hints, and the node starts with an empty configuration: the leader
replicates to it (log or snapshot), entry 1 included, so it learns the whole membership.

A joined node whose disk was wiped is started again with the same command plus ``--rejoin``
(it is listed already, so it does not wait; it does not vote until caught up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import time

from ..config import Config, NodeSpec, format_address, load_config, parse_address, render_config
from ..datadir import NewerFormatError, makedirs_durable, write_file_durable
from ..errors import ConfigError, FastraftError

__all__ = ["IDENTITY_FILE", "IDENTITY_FORMAT", "JOINED_FILE", "joining_config",
           "identity_config",
           "write_identity", "wait_until_added", "is_joined", "mark_joined",
           "check_join_list"]

log = logging.getLogger("fastraft.node")

IDENTITY_FILE = "node.toml"
#: The format version of ``node.toml``, on its first line (``_IDENTITY_HEAD``). A file
#: without that line (written before it existed) is format 1.
IDENTITY_FORMAT = 1
_IDENTITY_HEAD = "# fastraft node identity, format {}"
_IDENTITY_HEAD_RE = re.compile(rb"# fastraft node identity, format (\d+)")
JOINED_FILE = "JOINED"
#: Seconds between two member-list requests while waiting to be added.
POLL_S = 1.0
#: Seconds between two "still waiting" log lines.
REMIND_S = 15.0


def identity_config(node_dir: str, data_dir: str | None = None) -> Config | None:
    """The config a joined node wrote at its first start (None when there is none);
    ``data_dir`` overrides the recorded one. ConfigError when the file is unreadable."""
    path = os.path.join(node_dir, IDENTITY_FILE)
    if not os.path.exists(path):
        return None
    _check_identity_format(path)
    cfg = load_config(path)
    if data_dir:
        cfg = dataclasses.replace(cfg, data_dir=data_dir)
    return cfg


def _check_identity_format(path: str) -> None:
    """NewerFormatError when ``path`` is of a later format than ``IDENTITY_FORMAT``."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return                      # load_config says what is wrong
    m = _IDENTITY_HEAD_RE.match(first)
    if m is not None and int(m.group(1)) > IDENTITY_FORMAT:
        raise NewerFormatError(path, "node identity file format", int(m.group(1)),
                               IDENTITY_FORMAT, " (first line)")


def joining_config(base: Config, node_id: int, raft: str, client: str,
                   cluster: str | None, raft_listen: str | None = None,
                   client_listen: str | None = None, metrics: str | None = None) -> Config:
    """The config of a node joining the cluster of ``base`` (its name unless ``cluster``
    is given, its tuning and data directory) as node ``node_id`` at ``raft`` / ``client``
    (listening for peers on ``raft_listen`` and for clients on ``client_listen`` when given,
    serving its metrics on ``metrics``). ConfigError naming the option on a bad address."""
    given = {"raft": raft, "client": client, "raft_listen": raft_listen,
             "client_listen": client_listen, "metrics": metrics}
    addrs = {}
    for key, text in given.items():
        if text:
            try:
                addrs[key] = parse_address(text)
            except ConfigError as e:
                raise ConfigError(f"--{key.replace('_', '-')}: {e}") from None
    spec = NodeSpec(node_id, **addrs)
    return Config(cluster or base.cluster_name, (spec,), base.tuning, base.data_dir,
                  tls=base.tls)


def write_identity(cfg: Config, node_id: int) -> None:
    """Record ``cfg`` as node ``node_id``'s identity (durably), or check it matches the one
    recorded. ConfigError when the recorded one names other addresses or cluster."""
    node_dir = cfg.node_dir(node_id)
    old = identity_config(node_dir, cfg.data_dir)
    if old is not None:
        a, b = old.node(node_id), cfg.node(node_id)
        if (a.raft, a.client, old.cluster_name) != (b.raft, b.client, cfg.cluster_name):
            raise ConfigError(
                f"{os.path.join(node_dir, IDENTITY_FILE)} records node {node_id} of cluster "
                f"{old.cluster_name!r} at raft {a.raft_addr}, client {a.client_addr}: not "
                f"the addresses or cluster given (a node keeps its addresses; add a new id "
                f"for a new place)")
        if ((a.raft_listen, a.client_listen, a.metrics)
                == (b.raft_listen, b.client_listen, b.metrics)):
            return                  # the same identity (new listen or metrics addresses
                                    # are recorded)
    makedirs_durable(node_dir)
    head = (_IDENTITY_HEAD.format(IDENTITY_FORMAT) + f"\n# written by `fastraft node --join`; "
            f"restart with: fastraft node --id {node_id} --data-dir DIR\n")
    write_file_durable(os.path.join(node_dir, IDENTITY_FILE),
                       (head + render_config(cfg)).encode())


def is_joined(node_dir: str) -> bool:
    """Whether this node was already seen in the member list (``mark_joined``)."""
    return os.path.exists(os.path.join(node_dir, JOINED_FILE))


def mark_joined(node_dir: str) -> None:
    """Record (durably) that this node was seen in the member list: later starts do not
    wait for it again."""
    write_file_durable(os.path.join(node_dir, JOINED_FILE), b"listed as a member\n")


async def wait_until_added(endpoints: list[str], spec: NodeSpec, timeout: float = 5.0,
                           tls=None):
    """Ask the cluster at ``endpoints`` for its members until node ``spec.id`` is listed;
    returns the hints (id -> (raft, client)) of every member. ConfigError when it is
    listed with other addresses. ``tls``: the ``[tls]`` table of the node (the members are
    then asked over TLS, checked against the peer CA, with this node's certificate)."""
    from ..client import AsyncClient
    from ..tls import client_context

    raft, client = spec.raft_addr, spec.client_addr
    last_note = 0.0
    ctx = None if tls is None else client_context(tls.peer_ca, tls.cert_for(spec.id),
                                                  tls.key_for(spec.id))
    async with AsyncClient(endpoints, timeout=timeout, tls=ctx) as c:
        while True:
            try:
                members = await c.members()
            except FastraftError as exc:
                members = None
                err = str(exc)
            if members is not None:
                mine = [m for m in members if m.id == spec.id]
                if mine:
                    m = mine[0]
                    if (m.raft, m.client) != (raft, client):
                        raise ConfigError(
                            f"node {spec.id} is a member at raft {m.raft}, client {m.client}, "
                            f"not at raft {raft}, client {client}")
                    log.info("listed as a %s of the cluster: starting", m.role)
                    return {m.id: (m.raft, m.client) for m in members}
                err = "not a member yet"
            now = time.monotonic()
            if now - last_note >= REMIND_S:
                last_note = now
                log.info("waiting to be added (%s); on a member, run: fastraft member add "
                         "--id %d --raft %s --client %s", err, spec.id, raft, client)
            await asyncio.sleep(POLL_S)


def check_join_list(text: str) -> list[str]:
    """The ``--join`` endpoints ("host:port,host:port"); ConfigError when one is bad."""
    eps = [e.strip() for e in text.split(",") if e.strip()]
    if not eps:
        raise ConfigError("--join: expected client addresses host:port[,host:port...]")
    return [format_address(parse_address(e)) for e in eps]
