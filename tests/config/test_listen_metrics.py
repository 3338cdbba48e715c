"""The optional per-node ``client_listen`` and ``metrics`` addresses: parsing, rendering,
validation, the built-in local cluster's metrics ports, and the joining path
(``fastraft node --join ... --client-listen --metrics``, recorded in ``node.toml``).

Place in the architecture: unit tests of fastraft.config, fastraft.server.joining and the
node command's argument handling; no node process (tests/integration/test_listen_addresses.py
runs real ones).
"""

from __future__ import annotations

import argparse
import os

import pytest

from fastraft import cli
from fastraft.config import (
    Config,
    NodeSpec,
    default_config,
    load_config,
    parse_config,
    render_config,
)
from fastraft.errors import ConfigError
from fastraft.server.joining import IDENTITY_FILE, joining_config, write_identity

BASE = '''[cluster]
name = "x"
[[node]]
id = 1
raft = "10.0.0.1:7101"
client = "10.0.0.1:7001"
'''

#: One file for three machines, each node listening on all of its machine's interfaces.
THREE = '''[cluster]
name = "prod"
''' + "".join(f'''
[[node]]
id = {i}
raft = "10.0.0.{i}:7101"
client = "10.0.0.{i}:7001"
raft_listen = "0.0.0.0:7101"
client_listen = "0.0.0.0:7001"
metrics = "0.0.0.0:7201"
''' for i in (1, 2, 3))


def err(text: str, source: str = "c.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    msg = str(info.value)
    assert msg.startswith(f"{source}: "), msg
    return msg


# -- defaults -------------------------------------------------------------------------------

def test_both_are_optional_and_default_to_nothing():
    n = parse_config(BASE).nodes[0]
    assert n.client_listen is None and n.metrics is None and n.metrics_addr is None
    assert n.client_bind == ("10.0.0.1", 7001) == n.client
    assert "client_listen" not in render_config(parse_config(BASE))
    assert "metrics" not in render_config(parse_config(BASE))


def test_the_local_cluster_serves_metrics_on_720N():
    cfg = default_config()
    assert [n.metrics_addr for n in cfg.nodes] == [
        "127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]
    assert all(n.client_listen is None and n.raft_listen is None for n in cfg.nodes)
    assert default_config(12).node(12).metrics == ("127.0.0.1", 7212)
    big = default_config(99)  # every address of the largest local cluster is distinct
    assert len({a for n in big.nodes for _, a in n.addresses()}) == 3 * 99
    text = render_config(cfg)
    assert 'metrics = "127.0.0.1:7201"' in text
    assert parse_config(text) == cfg


# -- parsing and rendering ------------------------------------------------------------------

def test_client_listen_is_where_the_node_binds_and_round_trips():
    cfg = parse_config(BASE + 'client_listen = "0.0.0.0:7001"\nmetrics = "10.0.0.1:7201"\n')
    n = cfg.nodes[0]
    assert n.client_listen == ("0.0.0.0", 7001) and n.client_bind == ("0.0.0.0", 7001)
    assert n.client == ("10.0.0.1", 7001) and n.client_addr == "10.0.0.1:7001"
    assert cfg.client_endpoints() == ["10.0.0.1:7001"]   # clients dial the advertised one
    assert n.metrics == ("10.0.0.1", 7201) and n.metrics_addr == "10.0.0.1:7201"
    assert parse_config(render_config(cfg)) == cfg


def test_one_file_serves_three_machines_listening_on_all_interfaces(tmp_path):
    cfg = parse_config(THREE)
    assert [n.client_bind for n in cfg.nodes] == [("0.0.0.0", 7001)] * 3
    assert [n.raft_bind for n in cfg.nodes] == [("0.0.0.0", 7101)] * 3
    assert cfg.client_endpoints() == ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    assert load_config(path) == cfg


def test_ipv6_listen_addresses_round_trip():
    cfg = parse_config(BASE + 'client_listen = "[::]:7001"\nmetrics = "[::1]:7201"\n')
    assert cfg.nodes[0].client_listen == ("::", 7001)
    assert cfg.nodes[0].metrics_addr == "[::1]:7201"
    assert 'client_listen = "[::]:7001"' in render_config(cfg)
    assert parse_config(render_config(cfg)) == cfg


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["client_listen", "metrics"])
@pytest.mark.parametrize("value, expected", [
    ('"nope"', 'expected an address "host:port"'),
    ('"10.0.0.1:0"', "out of range 1..65535"),
    ("7201", "(a string), got 7201 (int)"),
    ("true", "got the boolean true"),
])
def test_bad_addresses_name_the_node_and_key(key, value, expected):
    msg = err(BASE + f"{key} = {value}\n")
    assert f"[[node]] #1 (id 1) {key}:" in msg and expected in msg


def test_misspelled_keys_are_suggested():
    assert "did you mean 'client_listen'?" in err(BASE + 'client_listn = "0.0.0.0:1"\n')
    assert "did you mean 'metrics'?" in err(BASE + 'metric = "0.0.0.0:1"\n')


@pytest.mark.parametrize("extra, expected", [
    # the same address twice, in one node or across nodes
    ('metrics = "10.0.0.1:7001"\n', "metrics: address 10.0.0.1:7001 is already the client "
                                    "address of node 1"),
    ('client_listen = "10.0.0.1:7101"\n', "client_listen: address 10.0.0.1:7101 is already "
                                          "the raft address of node 1"),
    ('metrics = "10.0.0.2:7002"\n', "address 10.0.0.2:7002 of node 2 is already the metrics "
                                    "address of node 1"),
    ('client_listen = "10.0.0.2:7102"\n', "address 10.0.0.2:7102 of node 2 is already the "
                                          "client_listen address of node 1"),
    # a wildcard listens on every interface: the node's other ports must differ
    ('client_listen = "0.0.0.0:7101"\n', "client_listen: address 0.0.0.0:7101 overlaps the "
                                         "raft address 10.0.0.1:7101 of node 1"),
    ('client_listen = "0.0.0.0:7001"\nmetrics = "10.0.0.1:7001"\n',
     "metrics: address 10.0.0.1:7001 overlaps the client_listen address 0.0.0.0:7001"),
    ('raft_listen = "[::]:7201"\nmetrics = "127.0.0.1:7201"\n',
     "metrics: address 127.0.0.1:7201 overlaps the raft_listen address [::]:7201"),
])
def test_every_address_is_used_once(extra, expected):
    two = BASE + extra + '[[node]]\nid = 2\nraft = "10.0.0.2:7102"\nclient = "10.0.0.2:7002"\n'
    msg = err(two)
    assert expected in msg, msg
    assert "expected" in msg


def test_an_advertised_address_may_share_the_port_of_its_own_wildcard_listener():
    cfg = parse_config(BASE + 'client_listen = "0.0.0.0:7001"\nraft_listen = "[::]:7101"\n')
    assert cfg.nodes[0].client_bind == ("0.0.0.0", 7001)


def test_nodespec_validates_the_new_fields():
    with pytest.raises(ConfigError, match="node 1 client_listen"):
        NodeSpec(1, ("h", 1), ("h", 2), client_listen=("h", 0))
    with pytest.raises(ConfigError, match="node 1 metrics"):
        NodeSpec(1, ("h", 1), ("h", 2), metrics="h:3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="node 1 metrics: address h:2 is already the client"):
        NodeSpec(1, ("h", 1), ("h", 2), metrics=("h", 2))
    with pytest.raises(ConfigError, match="metrics address of node 1"):
        Config("c", (NodeSpec(1, ("h", 1), ("h", 2), metrics=("m", 3)),
                     NodeSpec(2, ("m", 3), ("h", 4))))


# -- the joining path -----------------------------------------------------------------------

def test_joining_config_takes_listen_and_metrics_addresses():
    cfg = joining_config(default_config(), 4, "10.0.0.4:7104", "10.0.0.4:7004", None,
                         "0.0.0.0:7104", "0.0.0.0:7004", "10.0.0.4:7204")
    n = cfg.node(4)
    assert (n.raft_bind, n.client_bind) == (("0.0.0.0", 7104), ("0.0.0.0", 7004))
    assert n.client_addr == "10.0.0.4:7004" and n.metrics_addr == "10.0.0.4:7204"
    with pytest.raises(ConfigError, match="^--client-listen: expected a port"):
        joining_config(default_config(), 4, "h:1", "h:2", None, None, "h:x")
    with pytest.raises(ConfigError, match="^--metrics: "):
        joining_config(default_config(), 4, "h:1", "h:2", None, None, None, "nope")


def test_the_identity_records_new_listen_and_metrics_addresses(tmp_path):
    base = default_config(data_dir=str(tmp_path))
    first = joining_config(base, 4, "10.0.0.4:7104", "10.0.0.4:7004", None)
    write_identity(first, 4)
    path = tmp_path / "4" / IDENTITY_FILE
    assert load_config(path) == first
    moved = joining_config(base, 4, "10.0.0.4:7104", "10.0.0.4:7004", None, None,
                           "0.0.0.0:7004", "0.0.0.0:7204")
    write_identity(moved, 4)
    recorded = load_config(path).node(4)
    assert recorded.client_listen == ("0.0.0.0", 7004)
    assert recorded.metrics == ("0.0.0.0", 7204)
    other = joining_config(base, 4, "10.0.0.4:7104", "10.0.0.9:7004", None)
    with pytest.raises(ConfigError, match="a node keeps its addresses"):
        write_identity(other, 4)


def _node_args(*argv: str) -> argparse.Namespace:
    return cli._build_parser().parse_args(["node", *argv])


def test_the_node_command_passes_them_to_the_joining_config(tmp_path):
    args = _node_args("--id", "4", "--raft", "10.0.0.4:7104", "--client", "10.0.0.4:7004",
                      "--join", "10.0.0.1:7001", "--client-listen", "0.0.0.0:7004",
                      "--metrics", "0.0.0.0:7204", "--data-dir", str(tmp_path))
    cfg, bootstrap, join = cli._node_config(args)
    assert not bootstrap and join == ["10.0.0.1:7001"]
    n = cfg.node(4)
    assert n.client_listen == ("0.0.0.0", 7004) and n.metrics == ("0.0.0.0", 7204)
    assert n.raft_listen is None


@pytest.mark.parametrize("flag", ["--client-listen", "--metrics"])
def test_the_new_flags_belong_to_a_joining_node(flag, tmp_path):
    args = _node_args("--id", "1", flag, "0.0.0.0:7001", "--data-dir", str(tmp_path))
    with pytest.raises(ConfigError, match="needs --raft, --client and --join"):
        cli._node_config(args)
    rc = cli.main(["node", "--id", "1", flag, "0.0.0.0:7001", "--data-dir", str(tmp_path)])
    assert rc == 2
    assert not os.listdir(tmp_path)
