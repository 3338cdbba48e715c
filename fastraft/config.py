"""The cluster configuration: which nodes exist, where they listen, and how they are tuned.

Place in the architecture: a leaf beside ``errors`` that the top layers read. The cli, the
launcher (``fastraft cluster``) and the server turn a TOML file (or the built-in local
cluster) into one frozen ``Config``; nothing below the server imports this module (the raft
engine gets ticks, the stores get sizes). It imports only the standard library and
``fastraft.errors``: no IO beyond reading the one file it is given, no sockets, no msgpack.

The file (TOML, read with ``tomllib``)::

    data_dir = "./fastraft-data"      # optional; node N keeps its data in data_dir/N

    [cluster]
    name = "demo"                     # required, named in every peer handshake

    [tuning]                          # optional; keys are exactly the Tuning field names
    election_timeout_ms = 300

    [[node]]                          # one table per voter, at least one
    id = 1                            # integer >= 1, unique
    raft = "127.0.0.1:7101"           # peer address, host:port (where the others dial)
    client = "127.0.0.1:7001"         # client address, host:port
    # raft_listen = "0.0.0.0:7101"    # optional: listen for peers here instead of on raft
                                      # (all interfaces, or a node behind a proxy or NAT)
    # client_listen = "0.0.0.0:7001"  # optional: listen for clients here instead of on client
    # metrics = "127.0.0.1:7201"      # optional: HTTP /metrics, /health, /ready

Validation is strict, and every message names the file, the key and what is expected: an
unknown key or section is refused (with the closest known name as a suggestion), a boolean is
never taken for an integer, every number has a range, node ids are unique and every address
(peer, client, listen or metrics, of any node) is used once. An address on a wildcard host
(``0.0.0.0``, ``::``) names a port on the node's own machine: one config file serves every
machine, so several nodes may listen on ``0.0.0.0:7001``; only the ports one node listens on
(``raft_bind``, ``client_bind``, ``metrics``) must differ from each other.
``render_config`` writes the TOML that ``parse_config`` reads back to an equal ``Config``
(the launcher and the integration harness write their clusters this way).

Time: the engine counts ticks (docs/architecture.md, "Time and determinism"); ``Tuning``
holds milliseconds for people and turns them into ticks (``heartbeat_tick``,
``election_tick``, rounded down) for the engine, which randomizes each election timeout in
``[election_tick, 2 * election_tick)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import ConfigError, short_repr

__all__ = [
    "NodeSpec",
    "TLSConfig",
    "Tuning",
    "Config",
    "STORAGE_BACKENDS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_CLUSTER_NAME",
    "MAX_DEFAULT_SIZE",
    "default_config",
    "load_config",
    "parse_config",
    "render_config",
    "parse_address",
    "format_address",
    "WILDCARD_HOSTS",
]

STORAGE_BACKENDS = ("wal", "sqlite")
DEFAULT_DATA_DIR = "./fastraft-data"
DEFAULT_CLUSTER_NAME = "fastraft-local"
#: Largest size of the built-in local cluster (client ports 7001.., peer ports 7101..,
#: metrics ports 7201..).
MAX_DEFAULT_SIZE = 99

_KIB = 1024
_MIB = 1024 * 1024
_GIB = 1024 * _MIB
#: The largest frame the core's frame codec can announce (u32 length prefix).
_MAX_FRAME = 0xFFFFFFFF


# -- addresses ------------------------------------------------------------------------------

def parse_address(text) -> tuple[str, int]:
    """``"host:port"`` (or ``"[ipv6]:port"``) as ``(host, port)``; ConfigError otherwise.
    The port is 1..65535; the host is non-empty and holds no whitespace."""
    if type(text) is not str:
        raise ConfigError(f"expected an address \"host:port\" (a string), got {_show(text)}")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"expected an address \"host:port\", got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or ":" not in host:
            raise ConfigError(f"expected \"[ipv6]:port\" in {text!r}")
    elif ":" in host:
        raise ConfigError(
            f"expected an address \"host:port\" (write an IPv6 host as [::1]:port), "
            f"got {text!r}")
    if any(c.isspace() or ord(c) < 0x20 or c in "[]/" for c in host):
        raise ConfigError(f"invalid host {host!r} in address {text!r}")
    if not port_text.isascii() or not port_text.isdigit():
        raise ConfigError(f"expected a port number 1..65535 after ':' in {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} in {text!r} is out of range 1..65535")
    return host, port


def format_address(addr: tuple[str, int]) -> str:
    """``(host, port)`` as ``"host:port"``, bracketing an IPv6 host."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_address(value, what: str) -> tuple[str, int]:
    """A NodeSpec address given as a tuple (validated like a parsed string)."""
    if (not isinstance(value, tuple) or len(value) != 2 or type(value[0]) is not str
            or type(value[1]) is not int):
        raise ConfigError(f"{what}: expected (host, port), got {_show(value)}")
    try:
        return parse_address(format_address(value))
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def _show(v) -> str:
    if type(v) is bool:
        return f"the boolean {str(v).lower()}"
    return f"{short_repr(v)} ({type(v).__name__})"


# -- the dataclasses ------------------------------------------------------------------------

#: Node ids travel as u64 on the wire and are stored as SQLite's signed 64-bit integers.
MAX_NODE_ID = (1 << 63) - 1


#: Hosts that mean "every interface of this machine" when listened on.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})

#: The optional addresses of a ``[[node]]`` table, in the order they are written.
_OPTIONAL_ADDRS = ("raft_listen", "client_listen", "metrics")


@dataclass(frozen=True)
class NodeSpec:
    """One voter: its id and its addresses. ``raft`` is where the other nodes dial it and
    ``client`` the client address it is known by (member lists, redirects); it listens on
    them too unless ``raft_listen`` / ``client_listen`` name other addresses (all
    interfaces, ``0.0.0.0:PORT``, on a real machine; a node behind a proxy or a NAT: the
    fault-injection tests put a proxy on ``raft``). ``metrics``: where it serves HTTP
    ``/metrics``, ``/health`` and ``/ready`` (None: no metrics listener)."""

    id: int
    raft: tuple[str, int]
    client: tuple[str, int]
    raft_listen: tuple[str, int] | None = None
    client_listen: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if type(self.id) is not int or not 1 <= self.id <= MAX_NODE_ID:
            raise ConfigError(f"node id: expected an integer in 1..{MAX_NODE_ID}, got "
                              f"{_show(self.id)}")
        object.__setattr__(self, "raft", _check_address(self.raft, f"node {self.id} raft"))
        object.__setattr__(self, "client",
                           _check_address(self.client, f"node {self.id} client"))
        for name in _OPTIONAL_ADDRS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_address(value,
                                                              f"node {self.id} {name}"))
        self._check_binds()

    def _check_binds(self) -> None:
        """The ports this node listens on must not overlap (a wildcard host overlaps every
        host of the same port)."""
        skip = {"raft" if self.raft_listen else "", "client" if self.client_listen else ""}
        binds = [(name, addr) for name, addr in self.addresses() if name not in skip]
        for k, (name, (host, port)) in enumerate(binds):
            for other, (ohost, oport) in binds[:k]:
                if port != oport:
                    continue
                if host.lower() == ohost.lower():
                    how = f"is already the {other} address of node {self.id}"
                elif host in WILDCARD_HOSTS or ohost in WILDCARD_HOSTS:
                    how = (f"overlaps the {other} address {format_address((ohost, oport))} "
                           f"of node {self.id} (same port, all interfaces)")
                else:
                    continue
                raise ConfigError(
                    f"node {self.id} {name}: address {format_address((host, port))} {how}; "
                    f"expected the node to listen on a different port for each")

    @property
    def raft_bind(self) -> tuple[str, int]:
        """The address this node's peer port listens on."""
        return self.raft_listen if self.raft_listen is not None else self.raft

    @property
    def client_bind(self) -> tuple[str, int]:
        """The address this node's client port listens on."""
        return self.client_listen if self.client_listen is not None else self.client

    @property
    def raft_addr(self) -> str:
        """The peer address as ``"host:port"``."""
        return format_address(self.raft)

    @property
    def client_addr(self) -> str:
        """The client address as ``"host:port"``."""
        return format_address(self.client)

    @property
    def metrics_addr(self) -> str | None:
        """The metrics address as ``"host:port"`` (None: no metrics listener)."""
        return None if self.metrics is None else format_address(self.metrics)

    def addresses(self) -> list[tuple[str, tuple[str, int]]]:
        """``(key, address)`` of every address this node's table names, in file order."""
        out = [("raft", self.raft), ("client", self.client)]
        out += [(name, getattr(self, name)) for name in _OPTIONAL_ADDRS
                if getattr(self, name) is not None]
        return out


#: Tuning field -> (minimum, maximum) for the integers; descriptions are in the README.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "tick_ms": (1, 1000),
    "heartbeat_ms": (1, 3_600_000),
    "election_timeout_ms": (2, 3_600_000),
    "snapshot_threshold": (1, 1 << 40),
    "snapshot_keep_entries": (0, 1 << 40),
    "segment_size": (64 * _KIB, 16 * _GIB),
    "session_timeout_ms": (1, 7 * 24 * 3_600_000),
    "max_key_bytes": (1, 1 * _MIB),
    "max_value_bytes": (0, 256 * _MIB),
    "max_pending": (1, 1 << 24),
    "max_client_connections": (1, 1 << 20),
    "max_inflight_msgs": (1, 1 << 16),
    "max_inflight_bytes": (0, 1 << 40),
    "max_msg_bytes": (1, _MAX_FRAME),
    "promote_lag": (0, 1 << 40),
    "watch_history": (1, 1 << 26),
    "watch_buffer_bytes": (64 * _KIB, 1 * _GIB),
}

#: Tuning fields that are booleans.
_BOOLS = ("fsync", "pre_vote", "check_quorum", "leader_sync_first")


@dataclass(frozen=True)
class Tuning:
    """Timing, durability, storage and limits shared by every node of a cluster.

    Invariants (checked at construction): ``1 <= tick_ms <= 1000``;
    ``tick_ms <= heartbeat_ms < election_timeout_ms``; in ticks,
    ``election_tick > heartbeat_tick >= 1``; ``max_msg_bytes <= max_frame_bytes``. The
    server turns it into the engine's ``RaftConfig`` in one place
    (``fastraft.server.wiring.raft_config``).
    """

    tick_ms: int = 10  # engine tick (1..1000)
    heartbeat_ms: int = 50  # >= tick_ms
    election_timeout_ms: int = 300  # > heartbeat_ms; the engine randomizes in [e, 2e)
    snapshot_threshold: int = 100_000  # entries applied since the last snapshot
    snapshot_keep_entries: int = 10_000  # log tail kept after a snapshot for slow followers
    fsync: bool = True  # False = UNSAFE, benchmarks only
    storage: str = "wal"  # "wal" | "sqlite"
    segment_size: int = 64 << 20
    session_timeout_ms: int = 60_000
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_pending: int = 8192  # client writes taken and not yet answered, then Busy
    max_client_connections: int = 1024
    # The engine's replication settings (fastraft.raft.RaftConfig; server.wiring.raft_config).
    pre_vote: bool = True  # a pre-vote round before a real election (thesis §9.6)
    check_quorum: bool = True  # a leader that hears from no majority steps down
    max_inflight_msgs: int = 256  # per follower: appends sent and not yet acknowledged
    max_inflight_bytes: int = 16 << 20  # per follower: their payload bytes (0: no limit)
    max_msg_bytes: int = 1 << 20  # payload bytes per append (one entry always goes)
    leader_sync_first: bool = False  # True: the leader fsyncs before sending (measuring only)
    promote_lag: int = 1000  # a learner is promoted only within this many entries of the
                             # leader's last index (and once it acknowledged the log)
    watch_history: int = 50_000  # recent changes each node keeps for watchers
    watch_buffer_bytes: int = 16 << 20  # a watcher's unread bytes before it is cancelled

    def __post_init__(self) -> None:
        for name, (lo, hi) in _INT_RANGES.items():
            v = getattr(self, name)
            if type(v) is not int:
                raise ConfigError(f"[tuning] {name}: expected an integer, got {_show(v)}")
            if not lo <= v <= hi:
                raise ConfigError(
                    f"[tuning] {name}: expected an integer in {lo}..{hi}, got {v}")
        for name in _BOOLS:
            v = getattr(self, name)
            if type(v) is not bool:
                raise ConfigError(
                    f"[tuning] {name}: expected a boolean (true or false), got {_show(v)}")
        if type(self.storage) is not str or self.storage not in STORAGE_BACKENDS:
            raise ConfigError(
                f"[tuning] storage: expected one of {', '.join(map(repr, STORAGE_BACKENDS))}"
                f"{_suggest(self.storage, STORAGE_BACKENDS)}, got {_show(self.storage)}")
        if self.heartbeat_ms < self.tick_ms:
            raise ConfigError(
                f"[tuning] heartbeat_ms: expected at least tick_ms ({self.tick_ms}), "
                f"got {self.heartbeat_ms}")
        if self.election_timeout_ms <= self.heartbeat_ms:
            raise ConfigError(
                f"[tuning] election_timeout_ms: expected more than heartbeat_ms "
                f"({self.heartbeat_ms}), got {self.election_timeout_ms}")
        if not self.election_tick > self.heartbeat_tick >= 1:
            raise ConfigError(
                f"[tuning] election_timeout_ms: {self.election_timeout_ms} ms is "
                f"{self.election_tick} ticks of {self.tick_ms} ms, expected more than the "
                f"heartbeat's {self.heartbeat_tick} ticks ({self.heartbeat_ms} ms): raise "
                f"election_timeout_ms to at least "
                f"{(self.heartbeat_tick + 1) * self.tick_ms}")
        if self.max_msg_bytes > self.max_frame_bytes:
            raise ConfigError(
                f"[tuning] max_msg_bytes: expected at most the largest frame a node accepts "
                f"({self.max_frame_bytes} bytes, from max_key_bytes and max_value_bytes), "
                f"got {self.max_msg_bytes}")

    @property
    def heartbeat_tick(self) -> int:
        """The heartbeat interval in ticks (``heartbeat_ms // tick_ms``)."""
        return self.heartbeat_ms // self.tick_ms

    @property
    def election_tick(self) -> int:
        """The base election timeout in ticks (``election_timeout_ms // tick_ms``); the
        engine draws each timeout from ``[election_tick, 2 * election_tick)``."""
        return self.election_timeout_ms // self.tick_ms

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame a node accepts: a key, a value and 64 KiB of framing and
        fields, at least 1 MiB."""
        return min(_MAX_FRAME, max(_MIB, self.max_key_bytes + self.max_value_bytes + 64 * _KIB))

    @property
    def peer_frame_bytes(self) -> int:
        """The largest frame a node accepts from a peer: a client's frame (an entry carries one
        request's key and value) or an append of ``max_msg_bytes`` (the engine counts each
        entry's framing in it) with 4 KiB for the message's own fields."""
        return min(_MAX_FRAME, max(self.max_frame_bytes, self.max_msg_bytes + 4 * _KIB))


_TUNING_FIELDS = tuple(f.name for f in dataclasses.fields(Tuning))


@dataclass(frozen=True)
class TLSConfig:
    """The ``[tls]`` table: file paths (absolute once parsed: relative ones are taken from
    the config file's directory); ``{id}`` in ``cert`` and ``key`` stands for the node's id.
    ``client_ca`` None: clients need no certificate."""

    peer_ca: str
    cert: str
    key: str
    client_ca: str | None = None

    def cert_for(self, node_id: int) -> str:
        """This node's certificate chain file."""
        return self.cert.replace("{id}", str(node_id))

    def key_for(self, node_id: int) -> str:
        """This node's private key file."""
        return self.key.replace("{id}", str(node_id))


@dataclass(frozen=True)
class Config:
    """A whole cluster: its name, its voters (sorted by id), its tuning and where data goes.

    ``source`` (the file it came from) is for messages only; it takes no part in equality."""

    cluster_name: str
    nodes: tuple[NodeSpec, ...]
    tuning: Tuning = field(default_factory=Tuning)
    data_dir: str = DEFAULT_DATA_DIR
    source: str | None = field(default=None, compare=False)
    tls: TLSConfig | None = None

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        name = self.cluster_name
        if type(name) is not str or not name.strip():
            raise ConfigError(
                f"{where}[cluster] name: expected a non-empty string, got {_show(name)}")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise ConfigError(
                f"{where}[cluster] name: expected no control characters, got {name!r}")
        try:
            if len(name.encode("utf-8")) > 255:
                raise ConfigError(
                    f"{where}[cluster] name: expected at most 255 bytes of UTF-8, got "
                    f"{len(name.encode('utf-8'))}")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{where}[cluster] name: expected valid Unicode text, got {name!r}") from None
        if type(self.data_dir) is not str or not self.data_dir or "\x00" in self.data_dir:
            raise ConfigError(
                f"{where}data_dir: expected a non-empty path string, got {_show(self.data_dir)}")
        if not isinstance(self.tuning, Tuning):
            raise ConfigError(f"{where}tuning: expected a Tuning, got {_show(self.tuning)}")
        nodes = tuple(self.nodes)
        if not nodes:
            raise ConfigError(f"{where}[[node]]: expected at least one node, got none")
        for n in nodes:
            if not isinstance(n, NodeSpec):
                raise ConfigError(f"{where}nodes: expected NodeSpec objects, got {_show(n)}")
        nodes = tuple(sorted(nodes, key=lambda n: n.id))
        seen_ids: set[int] = set()
        seen_addrs: dict[tuple[str, int], str] = {}
        for n in nodes:
            if n.id in seen_ids:
                raise ConfigError(f"{where}[[node]] id: node id {n.id} appears twice; "
                                  f"expected unique ids")
            seen_ids.add(n.id)
            for kind, addr in n.addresses():
                if addr[0] in WILDCARD_HOSTS:
                    continue        # a port of the node's own machine (module docstring)
                key = (addr[0].lower(), addr[1])
                if key in seen_addrs:
                    raise ConfigError(
                        f"{where}[[node]] {kind}: address {format_address(addr)} of node "
                        f"{n.id} is already the {seen_addrs[key]}; expected every address "
                        f"to be used once")
                seen_addrs[key] = f"{kind} address of node {n.id}"
        object.__setattr__(self, "nodes", nodes)

    def node(self, node_id) -> NodeSpec:
        """The NodeSpec of ``node_id``; ConfigError when it is not a member."""
        for n in self.nodes:
            if n.id == node_id and type(node_id) is not bool:
                return n
        where = f"{self.source}: " if self.source else ""
        ids = ", ".join(str(n.id) for n in self.nodes)
        raise ConfigError(f"{where}node id {node_id} is not in the configuration of cluster "
                          f"{self.cluster_name!r} (ids: {ids})")

    def node_dir(self, node_id) -> str:
        """Where node ``node_id`` keeps its data: ``data_dir/<id>``."""
        return os.path.join(self.data_dir, str(self.node(node_id).id))

    @property
    def voters(self) -> frozenset[int]:
        """The ids of every node (all are voters)."""
        return frozenset(n.id for n in self.nodes)

    def client_endpoints(self) -> list[str]:
        """The client addresses ``"host:port"`` of every node, in id order."""
        return [n.client_addr for n in self.nodes]


# -- built-in local cluster -----------------------------------------------------------------

def default_config(size: int = 3, data_dir=None) -> Config:
    """The built-in local cluster of ``size`` nodes (1..99): node N listens for clients on
    127.0.0.1:(7000+N), for peers on 127.0.0.1:(7100+N) and serves its metrics on
    127.0.0.1:(7200+N) (so 700N, 710N and 720N for N <= 9)."""
    if type(size) is not int or not 1 <= size <= MAX_DEFAULT_SIZE:
        raise ConfigError(
            f"cluster size: expected an integer in 1..{MAX_DEFAULT_SIZE}, got {_show(size)}")
    nodes = tuple(NodeSpec(i, ("127.0.0.1", 7100 + i), ("127.0.0.1", 7000 + i),
                           metrics=("127.0.0.1", 7200 + i))
                  for i in range(1, size + 1))
    return Config(DEFAULT_CLUSTER_NAME, nodes, Tuning(),
                  DEFAULT_DATA_DIR if data_dir is None else os.fspath(data_dir))


# -- reading --------------------------------------------------------------------------------

def _suggest(name, known: Iterable[str]) -> str:
    if type(name) is not str:
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(table: dict, known: Iterable[str], where: str, section: str) -> None:
    known = tuple(known)
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r} in {section}{_suggest(key, known)}; "
                f"expected one of: {', '.join(known)}")


def load_config(path) -> Config:
    """Read and validate the TOML file at ``path``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, expected a TOML file") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the configuration file: "
                          f"{e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}); expected a TOML "
                          f"file") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    _unknown_keys(doc, ("data_dir", "cluster", "tuning", "node", "tls"), source,
                  "the top level")

    data_dir = doc.get("data_dir", DEFAULT_DATA_DIR)
    if type(data_dir) is not str or not data_dir:
        raise ConfigError(f"{source}: data_dir: expected a non-empty path string, got "
                          f"{_show(data_dir)}")

    cluster = doc.get("cluster")
    if cluster is None:
        raise ConfigError(f"{source}: missing section [cluster]; expected [cluster] with "
                          f"name = \"...\"")
    if type(cluster) is not dict:
        raise ConfigError(f"{source}: cluster: expected a table [cluster], got "
                          f"{_show(cluster)}")
    _unknown_keys(cluster, ("name",), source, "[cluster]")
    if "name" not in cluster:
        raise ConfigError(f"{source}: [cluster] name: missing; expected a non-empty string")
    name = cluster["name"]

    tuning_doc = doc.get("tuning", {})
    if type(tuning_doc) is not dict:
        raise ConfigError(f"{source}: tuning: expected a table [tuning], got "
                          f"{_show(tuning_doc)}")
    _unknown_keys(tuning_doc, _TUNING_FIELDS, source, "[tuning]")
    try:
        tuning = Tuning(**tuning_doc)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None

    if "node" not in doc:
        raise ConfigError(f"{source}: [[node]]: expected at least one node table "
                          f"([[node]] with id, raft and client), got none")
    raw_nodes = doc["node"]
    if type(raw_nodes) is not list:
        raise ConfigError(f"{source}: node: expected an array of tables [[node]], got "
                          f"{_show(raw_nodes)}")
    nodes = []
    for pos, raw in enumerate(raw_nodes, 1):
        where = f"[[node]] #{pos}"
        if type(raw) is not dict:
            raise ConfigError(f"{source}: {where}: expected a table, got {_show(raw)}")
        _unknown_keys(raw, ("id", "raft", "client") + _OPTIONAL_ADDRS, source, where)
        for key in ("id", "raft", "client"):
            if key not in raw:
                raise ConfigError(f"{source}: {where} {key}: missing; expected "
                                  + ("an integer >= 1" if key == "id" else
                                     "an address \"host:port\""))
        nid = raw["id"]
        if type(nid) is not int or not 1 <= nid <= MAX_NODE_ID:
            raise ConfigError(f"{source}: {where} id: expected an integer in "
                              f"1..{MAX_NODE_ID}, got "
                              f"{_show(nid)}")
        addrs = {}
        for key in ("raft", "client") + _OPTIONAL_ADDRS:
            if key not in raw:
                continue
            try:
                addrs[key] = parse_address(raw[key])
            except ConfigError as e:
                raise ConfigError(f"{source}: {where} (id {nid}) {key}: {e}") from None
        try:
            nodes.append(NodeSpec(nid, **addrs))
        except ConfigError as e:
            raise ConfigError(f"{source}: {where}: {e}") from None
    return Config(name, tuple(nodes), tuning, data_dir, source,
                  _parse_tls(doc.get("tls"), source))


def _parse_tls(t, source: str) -> TLSConfig | None:
    """The ``[tls]`` table (TLSConfig), or None when absent."""
    if t is None:
        return None
    if type(t) is not dict:
        raise ConfigError(f"{source}: tls: expected a table [tls], got {_show(t)}")
    _unknown_keys(t, ("peer_ca", "client_ca", "cert", "key"), source, "[tls]")
    base = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else os.getcwd()
    paths = {}
    for key in ("peer_ca", "cert", "key", "client_ca"):
        if key not in t:
            if key == "client_ca":
                continue
            raise ConfigError(f"{source}: [tls] {key}: missing; expected a file path")
        v = t[key]
        if type(v) is not str or not v or "\x00" in v:
            raise ConfigError(f"{source}: [tls] {key}: expected a file path, got {_show(v)}")
        paths[key] = os.path.join(base, os.path.expanduser(v))
    return TLSConfig(paths["peer_ca"], paths["cert"], paths["key"], paths.get("client_ca"))


# -- writing --------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is int:
        return str(v)
    if type(v) is str:
        return _toml_str(v)
    raise TypeError(f"cannot render {v!r} as TOML")  # pragma: no cover - Tuning is checked


def render_config(cfg: Config) -> str:
    """TOML text that ``parse_config`` reads back to a Config equal to ``cfg`` (every tuning
    key is written, so the file also documents the values in force)."""
    lines = [
        "# fastraft cluster configuration (see the README, \"Configuration\")",
        f"data_dir = {_toml_str(cfg.data_dir)}",
        "",
        "[cluster]",
        f"name = {_toml_str(cfg.cluster_name)}",
        "",
        "[tuning]",
    ]
    for name in _TUNING_FIELDS:
        lines.append(f"{name} = {_toml_value(getattr(cfg.tuning, name))}")
    for n in cfg.nodes:
        lines += ["", "[[node]]", f"id = {n.id}", f"raft = {_toml_str(n.raft_addr)}",
                  f"client = {_toml_str(n.client_addr)}"]
        for name in _OPTIONAL_ADDRS:
            if getattr(n, name) is not None:
                lines.append(f"{name} = {_toml_str(format_address(getattr(n, name)))}")
    if cfg.tls is not None:
        t = cfg.tls
        lines += ["", "[tls]", f"peer_ca = {_toml_str(t.peer_ca)}",
                  f"cert = {_toml_str(t.cert)}", f"key = {_toml_str(t.key)}"]
        if t.client_ca is not None:
            lines.append(f"client_ca = {_toml_str(t.client_ca)}")
    return "\n".join(lines) + "\n"
