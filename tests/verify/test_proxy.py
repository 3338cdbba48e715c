"""Tests of the fault proxy (fastraft.verify.proxy).

Against a tiny frame server written here (it answers a hello with a welcome, records every
frame and echoes each later one), driven by blocking sockets from the test thread while the
proxies run on their background loop: pass, big frames, block (cut and refused), blackhole,
seeded whole-frame drops, ordered delays, partitions over several proxies, and a connection
that is no peer link at all. Then against a real 3-node cluster whose nodes listen on private
peer addresses behind the proxies: isolating the leader makes the majority elect a new one,
and healing leaves exactly one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from fastraft import codec
from fastraft.core import FrameDecoder, encode_frame
from fastraft.processes import free_port
from fastraft_test_waiting import wait_until as _wait_until  # tests/conftest.py
from fastraft.verify.proxy import (
    BLACKHOLE,
    BLOCK,
    PASS,
    FaultProxy,
    LinkState,
    LoopThread,
    ProxyNetwork,
    Proxies,
)


def wait_until(pred, timeout=5.0, what="the condition"):
    return _wait_until(pred, timeout, what)


class FrameServer:
    """A peer-port stand-in on a LoopThread: answers the first frame with a welcome, records
    every frame per connection (``conns``: list of lists of frames; raw bytes in ``raw``)
    and echoes every later frame."""

    def __init__(self, node_id: int = 2) -> None:
        self.node_id = node_id
        self.conns: list[list[bytes]] = []
        self.raw: list[bytearray] = []
        self.closed_conns = 0
        self.lock = threading.Lock()
        self.lt = LoopThread("frame-server").start()
        self.server = self.lt.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.addr = self.server.sockets[0].getsockname()[:2]

    async def _handle(self, reader, writer):
        frames: list[bytes] = []
        raw = bytearray()
        with self.lock:
            self.conns.append(frames)
            self.raw.append(raw)
        dec = FrameDecoder()
        try:
            while data := await reader.read(65536):
                raw += data
                try:
                    got = dec.feed(data)
                except Exception:
                    continue
                for f in got:
                    with self.lock:
                        first = not frames
                        frames.append(f)
                    if first:
                        writer.write(encode_frame(codec.encode_welcome(self.node_id)))
                    else:
                        writer.write(encode_frame(f))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with self.lock:
                self.closed_conns += 1
            writer.close()

    def frames(self, i: int = -1) -> list[bytes]:
        with self.lock:
            return list(self.conns[i]) if self.conns else []

    def close(self):
        self.server.close()
        self.lt.close()


class Dialler:
    """A blocking peer connection: sends a hello for ``frm -> to`` and then frames."""

    def __init__(self, addr, frm: int = 1, to: int = 2, hello: bool = True) -> None:
        self.sock = socket.create_connection(addr, timeout=5)
        self.dec = FrameDecoder()
        self.buf: list[bytes] = []
        if hello:
            self.send(codec.encode_hello("test", frm, to))

    def send(self, body: bytes) -> None:
        self.sock.sendall(encode_frame(body))

    def recv(self, timeout: float = 5.0) -> bytes | None:
        """The next frame, or None on EOF/reset; socket.timeout when nothing comes."""
        self.sock.settimeout(timeout)
        while not self.buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf.extend(self.dec.feed(data))
        return self.buf.pop(0)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                if self.recv(timeout) is None:
                    return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture
def server():
    s = FrameServer()
    yield s
    s.close()


@pytest.fixture
def proxy(server):
    p = FaultProxy(("127.0.0.1", 0), server.addr, node_id=2, network=ProxyNetwork(seed=7)).start()
    yield p
    p.close()


def _welcome(d: Dialler) -> None:
    w = d.recv()
    assert w is not None and codec.decode_peer(w, 1 << 16)[0] == codec.P_WELCOME


def test_pass_forwards_frames_in_order(server, proxy):
    d = Dialler(proxy.address)
    _welcome(d)
    for i in range(50):
        d.send(b"m%d" % i)
    for i in range(50):
        assert d.recv() == b"m%d" % i   # echoed back through the proxy
    frames = server.frames()
    assert codec.decode_peer(frames[0], 1 << 16)[:5] == (codec.P_HELLO,
                                                         codec.PROTOCOL_VERSION, "test", 1, 2)
    assert frames[1:] == [b"m%d" % i for i in range(50)]
    assert proxy.links() == [(1, 2)]
    assert proxy.network.stats[(1, 2)]["frames"] >= 101
    d.close()


def test_big_frames_cross_in_pieces(server, proxy):
    d = Dialler(proxy.address)
    _welcome(d)
    big = bytes(range(256)) * 4096           # 1 MiB
    data = encode_frame(big) + encode_frame(b"after")
    for i in range(0, len(data), 7001):      # odd-sized pieces: frames split anywhere
        d.sock.sendall(data[i:i + 7001])
    assert d.recv() == big
    assert d.recv() == b"after"
    d.close()


def test_block_cuts_and_refuses_then_heal(server, proxy):
    net = proxy.network
    d = Dialler(proxy.address)
    _welcome(d)
    net.update(1, 2, mode=BLOCK)
    proxy.loop.call_soon_threadsafe(proxy.apply)
    assert d.closed_by_peer()
    # a new dial of the blocked link is accepted, its hello read, and closed at once
    n_before = len(server.conns)
    d2 = Dialler(proxy.address)
    assert d2.closed_by_peer()
    assert len(server.conns) == n_before      # nothing reached the node
    assert net.stats[(1, 2)]["refused"] == 1
    # other links through the same proxy are not affected
    d3 = Dialler(proxy.address, frm=3, to=2)
    _welcome(d3)
    net.set(1, 2, LinkState())
    d4 = Dialler(proxy.address)
    _welcome(d4)
    d4.send(b"again")
    assert d4.recv() == b"again"
    for x in (d, d2, d3, d4):
        x.close()


def test_blackhole_drops_silently(server, proxy):
    net = proxy.network
    d = Dialler(proxy.address)
    _welcome(d)
    net.update(1, 2, mode=BLACKHOLE)
    d.send(b"lost")
    with pytest.raises(socket.timeout):
        d.recv(timeout=0.3)                   # no answer, no close
    # a new dial hangs: nothing reaches the node
    n_before = len(server.conns)
    d2 = Dialler(proxy.address)
    with pytest.raises(socket.timeout):
        d2.recv(timeout=0.3)
    assert len(server.conns) == n_before
    net.update(1, 2, mode=PASS)
    d.send(b"back")
    assert d.recv() == b"back"
    assert b"lost" not in server.frames(0)
    assert net.stats[(1, 2)]["blackholed"] >= 1
    d.close()
    d2.close()


def _run_drops(server, seed: int) -> list[int]:
    p = FaultProxy(("127.0.0.1", 0), server.addr, network=ProxyNetwork(seed=seed)).start()
    try:
        p.network.update(1, 2, drop=0.5)
        d = Dialler(p.address)
        _welcome(d)                           # the handshake is never dropped
        for i in range(400):
            d.send(struct.pack("<I", i) + b"x" * (i % 50))
        for _ in range(40):                   # some "end" gets through both ways
            d.send(b"end")
        got = []
        while (f := d.recv()) != b"end":
            if len(f) >= 4:
                (i,) = struct.unpack_from("<I", f)
                assert f == struct.pack("<I", i) + b"x" * (i % 50)   # whole frames only
                got.append(i)
        d.close()
        return got
    finally:
        p.close()


def test_drop_whole_frames_seeded(server):
    a = _run_drops(server, seed=11)
    b = _run_drops(server, seed=11)
    c = _run_drops(server, seed=12)
    # both directions drop at 50%: about a quarter comes back, in order
    assert a == sorted(a) and 40 < len(a) < 180
    assert a == b                             # the same seed drops the same frames
    assert a != c


def test_delay_keeps_order(server, proxy):
    d = Dialler(proxy.address)
    _welcome(d)
    proxy.network.update(1, 2, delay=0.1, jitter=0.08)
    t0 = time.monotonic()
    for i in range(30):
        d.send(b"d%d" % i)
    got = [d.recv() for _ in range(30)]
    assert got == [b"d%d" % i for i in range(30)]
    assert time.monotonic() - t0 >= 0.02      # held at least delay - jitter
    assert proxy.network.stats[(1, 2)]["delayed"] >= 1
    d.close()


def test_not_a_peer_link_is_piped_untouched(server, proxy):
    proxy.network.update(1, 2, mode=BLOCK)    # does not apply: no hello, no link
    d = Dialler(proxy.address, hello=False)
    d.sock.sendall(b"\x03\x00\x00\x00abc")   # a frame that is not a hello
    assert d.recv() == codec.encode_welcome(2)   # the stand-in welcomes anything first
    wait_until(lambda: server.raw and bytes(server.raw[-1]) == b"\x03\x00\x00\x00abc")
    d.sock.sendall(b"\xff\xff\xff\xff")      # an absurd length prefix passes through too
    wait_until(lambda: bytes(server.raw[-1]).endswith(b"\xff\xff\xff\xff"))
    d.close()


def test_partitions_over_several_proxies():
    servers = {i: FrameServer(node_id=i) for i in (1, 2, 3)}
    px = Proxies({i: (("127.0.0.1", 0), s.addr) for i, s in servers.items()}, seed=3)
    try:
        with px:
            def reachable(a, b) -> bool:
                d = Dialler(px.address(b), frm=a, to=b)
                try:
                    w = d.recv(timeout=2)
                    return w is not None
                finally:
                    d.close()

            def matrix():
                return {(a, b) for a in px.ids for b in px.ids if a != b and reachable(a, b)}

            everything = {(a, b) for a in px.ids for b in px.ids if a != b}
            assert matrix() == everything
            px.isolate(3)
            assert matrix() == {(1, 2), (2, 1)}
            px.heal()
            px.partition([[1], [2, 3]])
            assert matrix() == {(2, 3), (3, 2)}
            px.heal()
            px.bridge([1], [3], via=2)
            assert matrix() == everything - {(1, 3), (3, 1)}
            px.heal()
            px.one_way(1, 2)
            assert matrix() == everything - {(1, 2)}
            px.heal()
            # an open connection is cut the moment its link is blocked
            d = Dialler(px.address(2), frm=1, to=2)
            _welcome(d)
            px.link(1, 2).block()
            assert d.closed_by_peer(timeout=2)
            d.close()
            px.link(1, 2).heal()
            assert matrix() == everything
            # a node added at runtime gets a proxy on its advertised address, on the same
            # network of links: partitions reach it
            servers[4] = FrameServer(node_id=4)
            port = free_port()
            addr = asyncio.run_coroutine_threadsafe(
                px.add(4, ("127.0.0.1", port), servers[4].addr), px.loop).result(10)
            assert tuple(addr) == ("127.0.0.1", port) and px.ids == [1, 2, 3, 4]
            everything = {(a, b) for a in px.ids for b in px.ids if a != b}
            assert matrix() == everything
            px.isolate(4)
            assert matrix() == everything - {(a, b) for a, b in everything if 4 in (a, b)}
            px.heal()
            with pytest.raises(ValueError):
                asyncio.run_coroutine_threadsafe(
                    px.add(4, ("127.0.0.1", 0), servers[4].addr), px.loop).result(10)
            assert [w for _, w in px.changes][:2] == ["isolate 3 (block)", "heal"]
            assert px.stats()[(1, 2)]["refused"] >= 1
            with pytest.raises(ValueError):
                px.partition([[1, 9]])
    finally:
        for s in servers.values():
            s.close()


def test_link_state_validation():
    with pytest.raises(ValueError):
        LinkState(mode="maybe")
    with pytest.raises(ValueError):
        LinkState(drop=1.5)
    with pytest.raises(ValueError):
        LinkState(delay=-1)
    assert LinkState().clean and not LinkState(drop=0.1).clean
    net = ProxyNetwork()
    net.update(1, 2, drop=0.1)
    assert "1->2: drop 10%" in net.describe()
    net.update(1, 2, drop=0.0)
    assert net.faulty() == {}


# -- a real cluster behind the proxies -----------------------------------------------------------


def _harness():
    name = "fastraft_itest_harness"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "integration" / "harness.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}


def proxied_cluster(base, size=3, tuning=FAST, seed=0):
    """A harness cluster (not started) whose nodes listen for peers on private addresses
    and advertise their proxies' addresses, and the started Proxies in front of them."""
    from fastraft.config import Config, NodeSpec, render_config

    h = _harness()
    c = h.Cluster(base, size=size, tuning=tuning)
    specs = []
    routes = {}
    for n in c.nodes.values():
        s = n.spec
        public = ("127.0.0.1", h.free_port())
        specs.append(NodeSpec(s.id, public, s.client, raft_listen=s.raft))
        routes[s.id] = (public, s.raft)
    cfg = c.config
    c.config = Config(cfg.cluster_name, tuple(specs), cfg.tuning, data_dir=cfg.data_dir)
    Path(c.config_path).write_text(render_config(c.config))
    for spec in specs:
        c.nodes[spec.id].spec = spec
    return c, Proxies(routes, seed=seed)


def test_real_cluster_isolate_leader_and_heal(tmp_path):
    cluster, px = proxied_cluster(tmp_path / "c")
    with px:
        try:
            cluster.start()
            old = cluster.leader()
            old_term = cluster.status(old)["term"]
            px.isolate(old)
            majority = [i for i in cluster.ids if i != old]

            def new_leader():
                st = {i: cluster.status(i) for i in majority}
                leaders = [i for i, s in st.items()
                           if s and s["role"] == "leader" and s["term"] > old_term]
                return leaders[0] if len(leaders) == 1 else None

            new = cluster.wait_for(new_leader, 15, "a new leader on the majority side")
            assert new != old
            # check-quorum: the isolated old leader steps down
            cluster.wait_for(lambda: cluster.status(old)["role"] != "leader", 15,
                             "the isolated leader to step down")
            stats = px.stats()
            assert any(stats.get((old, o), {}).get("refused", 0) for o in majority)
            px.heal()
            one = cluster.leader(15)
            cluster.wait_for(lambda: all((s := cluster.status(i)) and s["leader"] == one
                                         for i in cluster.ids), 15,
                             f"every node to follow leader {one}")
        finally:
            cluster.close()
