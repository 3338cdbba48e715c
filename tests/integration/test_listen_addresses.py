"""Nodes that listen on every interface (``raft_listen`` / ``client_listen`` = ``0.0.0.0:P``)
while the cluster knows them by another address, as on real machines (docs/deploy.md).

Place in the architecture: integration tests (tests/integration) with real ``fastraft node``
processes on free ports. Each node advertises ``127.0.0.2:P`` (a loopback address, standing
in for a machine's real address) and listens on ``0.0.0.0:P``: the test reaches it on
``127.0.0.1:P``, which only the wildcard listener serves, and checks that the member list and
the not-leader redirects name the advertised address. A node added at runtime does the same
with ``--raft-listen`` / ``--client-listen`` and records them in its ``node.toml``.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from fastraft import codec
from fastraft.config import Config, NodeSpec, load_config, render_config

FAST = dict(heartbeat_ms=20, election_timeout_ms=200)
ADVERTISED = "127.0.0.2"


def _loopback_alias() -> None:
    try:
        with socket.socket() as s:
            s.bind((ADVERTISED, 0))
    except OSError as exc:          # macOS has only 127.0.0.1 on lo0 by default
        pytest.skip(f"{ADVERTISED} is not a local address here: {exc}")


def _spec(nid: int, harness) -> NodeSpec:
    raft, client = harness.free_port(), harness.free_port()
    return NodeSpec(nid, (ADVERTISED, raft), (ADVERTISED, client),
                    raft_listen=("0.0.0.0", raft), client_listen=("0.0.0.0", client))


def _wildcard_cluster(cluster_factory, harness):
    """A harness cluster whose nodes advertise 127.0.0.2 and listen on 0.0.0.0 (the same
    ports), started and with a leader."""
    _loopback_alias()
    cl = cluster_factory(3, tuning=FAST, start=False)
    cfg = Config(cl.config.cluster_name, tuple(_spec(i, harness) for i in cl.ids),
                 cl.config.tuning, data_dir=cl.config.data_dir)
    cl.config = cfg
    Path(cl.config_path).write_text(render_config(cfg))
    for n in cl.nodes.values():
        n.spec = cfg.node(n.id)
    cl.start()
    return cl


def _local(spec: NodeSpec) -> str:
    return f"127.0.0.1:{spec.client[1]}"


def test_a_node_listening_on_all_interfaces_advertises_its_client_address(
        cluster_factory, harness, wire):
    cl = _wildcard_cluster(cluster_factory, harness)
    lead = cl.leader()
    specs = {i: cl.node(i).spec for i in cl.ids}
    for i, spec in specs.items():           # served on 127.0.0.1 too: a wildcard listener
        with wire.WireClient(_local(spec), 5.0) as c:
            assert c.status_dict()["id"] == i
    with wire.WireClient(_local(specs[lead]), 5.0) as c:
        rep = c.call(codec.OP_MEMBERS)
        assert rep.status == codec.ST_OK, rep
        members = {m[0]: (m[2], m[3]) for m in rep.values[0]}
        sid = c.register().expect_ok()
        assert c.put(sid, 1, b"k", b"v").ok
        assert c.get(b"k").expect_ok() == b"v"
    assert members == {i: (s.raft_addr, s.client_addr) for i, s in specs.items()}
    assert all(client.startswith(f"{ADVERTISED}:") for _, client in members.values())
    follower = next(i for i in cl.ids if i != lead)
    with wire.WireClient(_local(specs[follower]), 5.0) as c:
        sid = c.register()
        assert sid.status == codec.ST_NOT_LEADER, sid
        assert sid.values == [lead, specs[lead].client_addr]   # the advertised address


def test_a_joining_node_listens_where_told_and_records_it(cluster_factory, harness, wire):
    cl = _wildcard_cluster(cluster_factory, harness)
    lead = cl.leader()
    n = cl.new_node()
    spec = _spec(n.id, harness)
    n.spec = spec
    n.join_argv = ["--id", str(n.id), "--raft", spec.raft_addr, "--client", spec.client_addr,
                   "--raft-listen", f"0.0.0.0:{spec.raft[1]}",
                   "--client-listen", f"0.0.0.0:{spec.client[1]}",
                   "--join", ",".join(_local(cl.node(i).spec) for i in (1, 2, 3)),
                   "--config", cl.config_path, "--data-dir", cl.config.data_dir]
    cl.start([n.id], wait=False)
    with wire.WireClient(_local(cl.node(lead).spec), 10.0) as c:
        rep = c.call(codec.OP_MEMBER, codec.MEMBER_ADD_LEARNER, n.id, spec.raft_addr,
                     spec.client_addr)
        assert rep.ok, rep

    def serves():
        with wire.WireClient(_local(spec), 1.0) as c:
            return c.status_dict()["applied"] >= 1

    cl.wait_for(serves, 30, f"node {n.id} to serve on 127.0.0.1:{spec.client[1]}")
    recorded = load_config(Path(n.data_dir) / "node.toml").node(n.id)
    assert dataclasses.astuple(recorded) == dataclasses.astuple(spec)
    assert recorded.client_bind == ("0.0.0.0", spec.client[1])
    # restarted by the systemd unit's command (docs/deploy.md): the cluster's config file does
    # not name it, its node.toml does; it listens where it did
    cl.terminate(n.id)
    n.join_argv = ["--id", str(n.id), "--config", cl.config_path, "--data-dir",
                   cl.config.data_dir]
    cl.start([n.id], wait=False)
    cl.wait_for(serves, 30, f"node {n.id} to serve again after a restart")
