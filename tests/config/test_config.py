"""Tests of fastraft.config: every validation rule, the built-in local cluster, and the
render/parse round trip (examples and a hypothesis property).

Place in the architecture: unit tests of a leaf module; no processes, no sockets.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastraft.config import (
    Config,
    NodeSpec,
    Tuning,
    default_config,
    load_config,
    parse_address,
    parse_config,
    render_config,
)
from fastraft.errors import ConfigError

GOOD = """\
data_dir = "/var/lib/fastraft"

[cluster]
name = "demo"

[tuning]
election_timeout_ms = 800

[[node]]
id = 2
raft = "10.0.0.2:7101"
client = "10.0.0.2:7001"

[[node]]
id = 1
raft = "10.0.0.1:7101"
client = "10.0.0.1:7001"
"""

MINIMAL = """\
[cluster]
name = "demo"
[[node]]
id = 1
raft = "127.0.0.1:7101"
client = "127.0.0.1:7001"
"""


def err(text: str, source: str = "demo.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    msg = str(info.value)
    assert msg.startswith(f"{source}: "), msg
    return msg


def with_tuning(**kw) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in kw.items())
    return MINIMAL + "[tuning]\n" + lines


# -- a good file ----------------------------------------------------------------------------

def test_parse_good_file():
    cfg = parse_config(GOOD, "demo.toml")
    assert cfg.cluster_name == "demo"
    assert cfg.data_dir == "/var/lib/fastraft"
    assert [n.id for n in cfg.nodes] == [1, 2]  # sorted by id
    assert cfg.nodes[0].raft == ("10.0.0.1", 7101)
    assert cfg.nodes[0].raft_addr == "10.0.0.1:7101"
    assert cfg.nodes[1].client_addr == "10.0.0.2:7001"
    assert cfg.tuning == Tuning(election_timeout_ms=800)
    assert cfg.voters == frozenset({1, 2})
    assert cfg.client_endpoints() == ["10.0.0.1:7001", "10.0.0.2:7001"]
    assert cfg.node_dir(2) == "/var/lib/fastraft/2"
    assert cfg.node(2).raft == ("10.0.0.2", 7101)
    assert cfg.source == "demo.toml"


def test_minimal_file_takes_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.tuning == Tuning()
    assert cfg.data_dir == "./fastraft-data"
    assert cfg.source == "<string>"


def test_config_is_frozen_and_hashable():
    cfg = parse_config(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cluster_name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tuning.tick_ms = 1  # type: ignore[misc]
    assert hash(cfg) == hash(parse_config(GOOD, "other.toml"))


def test_source_takes_no_part_in_equality():
    assert parse_config(GOOD, "a.toml") == parse_config(GOOD, "b.toml")


def test_unknown_node_id_message():
    cfg = parse_config(GOOD.replace('"demo"', '"demo"'), "demo.toml")
    with pytest.raises(ConfigError) as info:
        cfg.node(4)
    assert str(info.value) == ("demo.toml: node id 4 is not in the configuration of cluster "
                               "'demo' (ids: 1, 2)")
    with pytest.raises(ConfigError):
        cfg.node_dir(4)
    with pytest.raises(ConfigError):
        cfg.node(True)  # a bool is not node 1
    without_source = default_config(3)
    with pytest.raises(ConfigError, match=r"^node id 4 is not in the configuration of "
                                          r"cluster 'fastraft-local' \(ids: 1, 2, 3\)$"):
        without_source.node(4)


# -- the built-in local cluster -------------------------------------------------------------

def test_default_config_matches_the_public_contract():
    cfg = default_config()
    assert cfg.cluster_name == "fastraft-local"
    assert cfg.data_dir == "./fastraft-data"
    assert cfg.client_endpoints() == ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert [n.raft_addr for n in cfg.nodes] == [
        "127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
    assert cfg.tuning == Tuning()
    assert cfg.node_dir(3) == "./fastraft-data/3"


def test_default_config_sizes_and_data_dir(tmp_path):
    assert len(default_config(1).nodes) == 1
    five = default_config(5, data_dir=tmp_path)
    assert five.data_dir == str(tmp_path)
    assert five.node(5).client == ("127.0.0.1", 7005)
    big = default_config(12)
    assert big.node(12).client == ("127.0.0.1", 7012)
    assert big.node(12).raft == ("127.0.0.1", 7112)
    assert big.node(9).client == ("127.0.0.1", 7009)
    assert len(default_config(99).nodes) == 99
    for bad in (0, -1, 100, True, "3"):
        with pytest.raises(ConfigError, match="cluster size"):
            default_config(bad)


# -- structure ------------------------------------------------------------------------------

def test_invalid_toml_names_the_file():
    msg = err("[cluster\nname = 1")
    assert "invalid TOML" in msg
    assert "line 1" in msg


def test_unknown_top_level_key_suggests_close_match():
    msg = err(MINIMAL + 'datadir = "x"\n'.replace("datadir", "data_dirr"))
    # a key after [[node]] belongs to the node table
    assert "unknown key 'data_dirr' in [[node]] #1" in msg
    msg = err('data_dirr = "x"\n' + MINIMAL)
    assert "unknown key 'data_dirr' in the top level" in msg
    assert "did you mean 'data_dir'?" in msg


def test_unknown_section_is_named():
    msg = err(MINIMAL + "[tunning]\ntick_ms = 5\n")
    assert "unknown key 'tunning' in the top level" in msg
    assert "did you mean 'tuning'?" in msg
    msg = err(MINIMAL + "[bogus]\nx = 1\n")
    assert "'bogus'" in msg and "did you mean" not in msg


def test_unknown_tuning_key_suggests():
    msg = err(with_tuning(election_timeout=500))
    assert "unknown key 'election_timeout' in [tuning]" in msg
    assert "did you mean 'election_timeout_ms'?" in msg


def test_unknown_cluster_and_node_keys():
    assert "unknown key 'nmae' in [cluster] (did you mean 'name'?)" in err(
        MINIMAL.replace('name = "demo"', 'name = "demo"\nnmae = "x"'))
    assert "unknown key 'adress' in [[node]] #1" in err(MINIMAL + 'adress = "x"\n')


def test_cluster_section_required_and_name_checked():
    assert "missing section [cluster]" in err(MINIMAL.replace('[cluster]\nname = "demo"\n', ""))
    assert "[cluster] name: missing" in err(MINIMAL.replace('name = "demo"\n', ""))
    assert "[cluster] name: expected a non-empty string" in err(
        MINIMAL.replace('"demo"', '""'))
    assert "[cluster] name: expected a non-empty string" in err(
        MINIMAL.replace('"demo"', '"   "'))
    assert "[cluster] name: expected a non-empty string, got 3 (int)" in err(
        MINIMAL.replace('"demo"', "3"))
    assert "control characters" in err(MINIMAL.replace('"demo"', '"a\\nb"'))
    assert "at most 255 bytes" in err(MINIMAL.replace('"demo"', '"' + "x" * 256 + '"'))
    assert "cluster: expected a table" in err('cluster = "demo"\n[[node]]\nid = 1\n')


def test_at_least_one_node():
    msg = err('[cluster]\nname = "demo"\n')
    assert "[[node]]: expected at least one node" in msg
    assert "expected an array of tables" in err('node = 3\n[cluster]\nname = "demo"\n')
    assert "expected at least one node" in err('node = []\n[cluster]\nname = "demo"\n')
    assert "[[node]] #1: expected a table" in err('node = [1]\n[cluster]\nname = "demo"\n')


def test_node_keys_required():
    for key in ("id", "raft", "client"):
        text = "\n".join(line for line in MINIMAL.splitlines()
                         if not line.startswith(f"{key} =")) + "\n"
        assert f"[[node]] #1 {key}: missing" in err(text)


@pytest.mark.parametrize("value, expected", [
    ("0", "expected an integer in 1..9223372036854775807, got 0"),
    ("-3", "expected an integer in 1..9223372036854775807, got -3"),
    ("9223372036854775808", "expected an integer in 1..9223372036854775807"),
    ("true", "got the boolean true"),
    ('"1"', "got '1' (str)"),
    ("1.0", "got 1.0 (float)"),
])
def test_node_id_rules(value, expected):
    msg = err(MINIMAL.replace("id = 1", f"id = {value}"))
    assert "[[node]] #1 id:" in msg and expected in msg


def test_node_ids_unique():
    text = MINIMAL + '[[node]]\nid = 1\nraft = "127.0.0.1:7102"\nclient = "127.0.0.1:7002"\n'
    assert "node id 1 appears twice" in err(text)


@pytest.mark.parametrize("addr, expected", [
    ('"127.0.0.1"', 'expected an address "host:port"'),
    ('":7001"', 'expected an address "host:port"'),
    ('"127.0.0.1:"', "expected a port number"),
    ('"127.0.0.1:http"', "expected a port number"),
    ('"127.0.0.1:0"', "out of range 1..65535"),
    ('"127.0.0.1:65536"', "out of range 1..65535"),
    ('"127.0.0.1:-1"', "expected a port number"),
    ('"::1:7001"', "write an IPv6 host as [::1]:port"),
    ('"bad host:7001"', "invalid host"),
    ("7001", "(a string), got 7001 (int)"),
])
def test_address_rules(addr, expected):
    msg = err(MINIMAL.replace('client = "127.0.0.1:7001"', f"client = {addr}"))
    assert "[[node]] #1 (id 1) client:" in msg and expected in msg


def test_addresses_unique_across_nodes_and_kinds():
    same_client = MINIMAL + ('[[node]]\nid = 2\nraft = "127.0.0.1:7102"\n'
                             'client = "127.0.0.1:7001"\n')
    msg = err(same_client)
    assert "address 127.0.0.1:7001 of node 2 is already the client address of node 1" in msg
    peer_is_client = MINIMAL + ('[[node]]\nid = 2\nraft = "127.0.0.1:7001"\n'
                                'client = "127.0.0.1:7002"\n')
    assert "already the client address of node 1" in err(peer_is_client)
    own = MINIMAL.replace('client = "127.0.0.1:7001"', 'client = "127.0.0.1:7101"')
    assert "already the raft address of node 1" in err(own)
    # host names compare case-insensitively
    upper = MINIMAL.replace('raft = "127.0.0.1:7101"', 'raft = "LOCALHOST:7101"') + (
        '[[node]]\nid = 2\nraft = "localhost:7101"\nclient = "127.0.0.1:7002"\n')
    assert "already the raft address of node 1" in err(upper)


def test_ipv6_addresses():
    text = MINIMAL.replace('"127.0.0.1:7101"', '"[::1]:7101"')
    cfg = parse_config(text)
    assert cfg.nodes[0].raft == ("::1", 7101)
    assert cfg.nodes[0].raft_addr == "[::1]:7101"
    assert parse_config(render_config(cfg)) == cfg


def test_data_dir_rules():
    assert "data_dir: expected a non-empty path string" in err('data_dir = ""\n' + MINIMAL)
    assert "data_dir: expected a non-empty path string, got 3 (int)" in err(
        "data_dir = 3\n" + MINIMAL)


# -- tuning ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("tick_ms", "0", "tick_ms: expected an integer in 1..1000, got 0"),
    ("tick_ms", "1001", "expected an integer in 1..1000"),
    ("tick_ms", "true", "tick_ms: expected an integer, got the boolean true"),
    ("tick_ms", "10.0", "expected an integer, got 10.0 (float)"),
    ("heartbeat_ms", '"50"', "heartbeat_ms: expected an integer, got '50' (str)"),
    ("snapshot_threshold", "0", "snapshot_threshold: expected an integer in 1.."),
    ("snapshot_keep_entries", "-1", "snapshot_keep_entries: expected an integer in 0.."),
    ("segment_size", "100", "segment_size: expected an integer in 65536.."),
    ("session_timeout_ms", "0", "session_timeout_ms: expected an integer in 1.."),
    ("max_key_bytes", "0", "max_key_bytes: expected an integer in 1.."),
    ("max_value_bytes", "-1", "max_value_bytes: expected an integer in 0.."),
    ("max_pending", "0", "max_pending: expected an integer in 1.."),
    ("max_client_connections", "0", "max_client_connections: expected an integer in 1.."),
    ("fsync", "1", "fsync: expected a boolean (true or false), got 1 (int)"),
    ("fsync", '"false"', "fsync: expected a boolean"),
    ("pre_vote", "1", "pre_vote: expected a boolean (true or false), got 1 (int)"),
    ("check_quorum", '"no"', "check_quorum: expected a boolean (true or false), got 'no'"),
    ("leader_sync_first", "0", "leader_sync_first: expected a boolean (true or false), got 0"),
    ("max_inflight_msgs", "0", "max_inflight_msgs: expected an integer in 1..65536, got 0"),
    ("max_inflight_msgs", "true", "max_inflight_msgs: expected an integer, got the boolean"),
    ("max_inflight_bytes", "-1", "max_inflight_bytes: expected an integer in 0.."),
    ("max_msg_bytes", "0", "max_msg_bytes: expected an integer in 1.."),
    ("max_msg_bytes", "2097152", "max_msg_bytes: expected at most the largest frame a node "
                                 "accepts (1118208 bytes"),
    ("storage", '"sqlit"', "storage: expected one of 'wal', 'sqlite' (did you mean "
                           "'sqlite'?), got 'sqlit' (str)"),
    ("storage", "1", "storage: expected one of 'wal', 'sqlite', got 1 (int)"),
])
def test_tuning_value_rules(key, value, expected):
    msg = err(with_tuning(**{key: value}))
    assert f"[tuning] {key}:" in msg and expected in msg


def test_tuning_time_relations():
    assert "heartbeat_ms: expected at least tick_ms (20), got 10" in err(
        with_tuning(tick_ms=20, heartbeat_ms=10))
    assert "election_timeout_ms: expected more than heartbeat_ms (50), got 50" in err(
        with_tuning(election_timeout_ms=50))
    # 55 ms is still 5 ticks of 10 ms, as many as the heartbeat's 5
    msg = err(with_tuning(election_timeout_ms=55))
    assert "5 ticks of 10 ms" in msg and "at least 60" in msg
    parse_config(with_tuning(election_timeout_ms=60))


def test_tuning_tables_and_types():
    assert "tuning: expected a table [tuning]" in err("tuning = 3\n" + MINIMAL)


def test_tuning_ticks_and_frame_size():
    t = Tuning()
    assert (t.heartbeat_tick, t.election_tick) == (5, 30)
    t = Tuning(tick_ms=7, heartbeat_ms=20, election_timeout_ms=100)
    assert (t.heartbeat_tick, t.election_tick) == (2, 14)
    assert Tuning().max_frame_bytes == 4096 + (1 << 20) + 65536
    assert Tuning(max_value_bytes=10, max_key_bytes=10).max_frame_bytes == 1 << 20
    # A peer frame fits an append of max_msg_bytes plus the message's own fields.
    assert Tuning().peer_frame_bytes == Tuning().max_frame_bytes
    assert Tuning(max_value_bytes=10, max_key_bytes=10).peer_frame_bytes == (1 << 20) + 4096


def test_tuning_constructor_validates():
    with pytest.raises(ConfigError, match=r"^\[tuning\] tick_ms"):
        Tuning(tick_ms=0)
    with pytest.raises(ConfigError, match="fsync"):
        Tuning(fsync=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="storage"):
        Tuning(storage="rocks")
    assert isinstance(ConfigError("x"), ValueError)


def test_engine_keys_default_to_the_engines_defaults_and_reach_it():
    """The [tuning] keys of the engine default to RaftConfig's own defaults (so a file
    without them behaves as before), and raft_config hands every one to the engine."""
    from fastraft.raft import RaftConfig
    from fastraft.server.wiring import raft_config

    engine = RaftConfig(id=1, voters=frozenset({1}))
    t = Tuning()
    for key in ("pre_vote", "check_quorum", "max_inflight_msgs", "max_inflight_bytes",
                "max_msg_bytes"):
        assert getattr(t, key) == getattr(engine, key), key
    assert t.leader_sync_first is False
    t = parse_config(with_tuning(pre_vote="false", check_quorum="false", max_inflight_msgs=7,
                                 max_inflight_bytes=0, max_msg_bytes=4096,
                                 election_timeout_ms=300, heartbeat_ms=20)).tuning
    rc = raft_config(t, 3, frozenset({1, 2, 3}), rejoining=True)
    assert (rc.id, rc.voters, rc.rejoining) == (3, frozenset({1, 2, 3}), True)
    assert (rc.election_tick, rc.heartbeat_tick) == (30, 2)
    assert (rc.pre_vote, rc.check_quorum) == (False, False)
    assert (rc.max_inflight_msgs, rc.max_inflight_bytes, rc.max_msg_bytes) == (7, 0, 4096)


def test_max_msg_bytes_fits_a_frame():
    assert Tuning(max_msg_bytes=Tuning().max_frame_bytes).max_msg_bytes == 1118208
    assert Tuning(max_value_bytes=8 << 20, max_msg_bytes=8 << 20).max_msg_bytes == 8 << 20
    with pytest.raises(ConfigError, match="max_msg_bytes: expected at most"):
        Tuning(max_value_bytes=10, max_msg_bytes=(1 << 20) + 1)


def test_fsync_false_and_sqlite_are_accepted():
    cfg = parse_config(with_tuning(fsync="false", storage='"sqlite"'))
    assert cfg.tuning.fsync is False and cfg.tuning.storage == "sqlite"


def test_constructing_config_directly_validates():
    n1 = NodeSpec(1, ("127.0.0.1", 7101), ("127.0.0.1", 7001))
    n2 = NodeSpec(2, ("127.0.0.1", 7102), ("127.0.0.1", 7002))
    cfg = Config("x", (n2, n1), Tuning())
    assert cfg.nodes == (n1, n2)
    with pytest.raises(ConfigError, match="at least one node"):
        Config("x", (), Tuning())
    with pytest.raises(ConfigError, match="appears twice"):
        Config("x", (n1, n1), Tuning())
    with pytest.raises(ConfigError, match="node id"):
        NodeSpec(0, ("h", 1), ("h", 2))
    with pytest.raises(ConfigError, match="node 1 raft"):
        NodeSpec(1, ("h", 0), ("h", 2))
    with pytest.raises(ConfigError, match="node 1 client"):
        NodeSpec(1, ("h", 1), "h:2")  # type: ignore[arg-type]


# -- parse_address --------------------------------------------------------------------------

def test_parse_address():
    assert parse_address("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert parse_address("node-1.example.com:1") == ("node-1.example.com", 1)
    assert parse_address("[fe80::1]:65535") == ("fe80::1", 65535)
    for bad in ("", "x", "x:", ":1", "x:0", "x:65536", "x:１", "[]:1", "[x]:1", "a b:1",
                "x:+1", None, ("x", 1)):
        with pytest.raises(ConfigError):
            parse_address(bad)


# -- files ----------------------------------------------------------------------------------

def test_load_config(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg == parse_config(GOOD)


def test_load_config_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{missing}: configuration file not found"):
        load_config(missing)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: invalid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[cluster]")
    with pytest.raises(ConfigError, match=rf"^{binary}: not UTF-8"):
        load_config(binary)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(with_tuning(tick_ms=0))
    with pytest.raises(ConfigError, match=rf"^{wrong}: \[tuning\] tick_ms"):
        load_config(wrong)


# -- round trip -----------------------------------------------------------------------------

def test_render_round_trips_examples(tmp_path):
    for cfg in (default_config(), default_config(12, data_dir=tmp_path),
                parse_config(GOOD), parse_config(with_tuning(fsync="false"))):
        text = render_config(cfg)
        assert parse_config(text) == cfg
    path = tmp_path / "c.toml"
    path.write_text(render_config(default_config(5)))
    assert load_config(path) == default_config(5)


def test_render_escapes_strings():
    n = NodeSpec(1, ("h", 1), ("h", 2))
    for name in ('a"b', "back\\slash", "ünï €", "\U0001f600", "'single'", "[x] = 1 #"):
        cfg = Config(name, (n,), Tuning(), data_dir="d \"q\" \\ \t\n\r\b\f\x01 \x7f ü")
        assert parse_config(render_config(cfg)) == cfg


_hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "10.1.2.3", "::1", "fe80::1"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{1,5}){0,2}", fullmatch=True))
_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: s.strip() and len(s.encode()) <= 255)


@st.composite
def tunings(draw):
    tick = draw(st.integers(1, 1000))
    hb = draw(st.integers(tick, tick * 10))
    el = draw(st.integers((hb // tick + 1) * tick, (hb // tick + 1) * tick + 5000))
    return Tuning(
        tick_ms=tick, heartbeat_ms=hb, election_timeout_ms=el,
        snapshot_threshold=draw(st.integers(1, 1 << 40)),
        snapshot_keep_entries=draw(st.integers(0, 1 << 40)),
        fsync=draw(st.booleans()),
        storage=draw(st.sampled_from(["wal", "sqlite"])),
        segment_size=draw(st.integers(64 * 1024, 1 << 34)),
        session_timeout_ms=draw(st.integers(1, 10**8)),
        max_key_bytes=draw(st.integers(1, 1 << 20)),
        max_value_bytes=draw(st.integers(0, 1 << 28)),
        max_pending=draw(st.integers(1, 1 << 24)),
        max_client_connections=draw(st.integers(1, 1 << 20)),
        pre_vote=draw(st.booleans()),
        check_quorum=draw(st.booleans()),
        max_inflight_msgs=draw(st.integers(1, 1 << 16)),
        max_inflight_bytes=draw(st.integers(0, 1 << 40)),
        max_msg_bytes=draw(st.integers(1, 1 << 20)),
        leader_sync_first=draw(st.booleans()))


@st.composite
def configs(draw):
    ids = draw(st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=7, unique=True))
    ports = draw(st.lists(st.integers(1, 65535), min_size=5 * len(ids),
                          max_size=5 * len(ids), unique=True))
    nodes = [NodeSpec(i, (draw(_hosts), ports[5 * k]), (draw(_hosts), ports[5 * k + 1]),
                      draw(st.one_of(st.none(), st.just(("127.0.0.1", ports[5 * k + 2])))),
                      draw(st.one_of(st.none(), st.sampled_from(
                          [("0.0.0.0", ports[5 * k + 3]), ("::", ports[5 * k + 3])]))),
                      draw(st.one_of(st.none(), st.tuples(_hosts, st.just(ports[5 * k + 4])))))
             for k, i in enumerate(ids)]
    return Config(draw(_text), tuple(nodes), draw(tunings()),
                  data_dir=draw(st.one_of(st.just("./fastraft-data"),
                                          _text.filter(lambda s: "\x00" not in s))))


@given(configs())
def test_render_parse_round_trip_property(cfg):
    assert parse_config(render_config(cfg), "rendered.toml") == cfg
