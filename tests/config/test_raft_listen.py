"""The optional per-node ``raft_listen`` address (a node listening behind a proxy)."""

import pytest

from fastraft.config import parse_config, render_config
from fastraft.errors import ConfigError

BASE = '''[cluster]
name = "x"
[[node]]
id = 1
raft = "127.0.0.1:7101"
client = "127.0.0.1:7001"
'''


def test_raft_listen_defaults_to_the_advertised_address():
    n = parse_config(BASE).nodes[0]
    assert n.raft_listen is None and n.raft_bind == ("127.0.0.1", 7101)


def test_raft_listen_round_trips_and_is_where_the_node_binds():
    cfg = parse_config(BASE + 'raft_listen = "127.0.0.1:8101"\n')
    assert cfg.nodes[0].raft_bind == ("127.0.0.1", 8101)
    assert parse_config(render_config(cfg)) == cfg


@pytest.mark.parametrize("bad, msg", [
    ('raft_listen = "nope"\n', "raft_listen"),
    ('raft_listen = "127.0.0.1:7001"\n', "already the client address of node 1"),
])
def test_raft_listen_is_validated(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(BASE + bad)
