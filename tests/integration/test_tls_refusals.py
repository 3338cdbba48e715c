"""What a TLS cluster refuses, and how it says so (issue 14): real processes, real certificates
made in the test (``fastraft.certs``), real handshakes from other source addresses of the
loopback network (127.0.0.x), so that each refusal is logged once for its own source.

Every refusal must close the connection during the handshake, be logged once per source per
minute with its reason and never with a traceback, and cost the leader nothing: same leader,
same term, writes go on. Also: a peer whose certificate does not name the address dialled,
a node started without ``[tls]`` among TLS nodes, and a flood of handshakes.

Place in the architecture: integration tests (tests/integration).
"""

from __future__ import annotations

import datetime
import shutil
from dataclasses import replace
import socket
import ssl
import threading
import time

import pytest

pytest.importorskip("cryptography")

from fastraft import tls  # noqa: E402
from fastraft.certs import init_certs, issue  # noqa: E402
from fastraft.config import TLSConfig, render_config  # noqa: E402

FAST = dict(heartbeat_ms=20, election_timeout_ms=200)
NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The cluster's PKI plus the bad certificates: expired and not yet valid (node and
    client), signed by a foreign CA, and a node certificate naming other hosts."""
    d = tmp_path_factory.mktemp("pki")
    init_certs(str(d), nodes=3)
    issue(str(d), "expired-node", days=1, not_before=NOW - datetime.timedelta(days=10))
    issue(str(d), "expired-client", client=True, days=1,
          not_before=NOW - datetime.timedelta(days=10))
    issue(str(d), "future-client", client=True, days=10,
          not_before=NOW + datetime.timedelta(days=5))
    issue(str(d), "elsewhere", hosts=["10.11.12.13", "elsewhere.invalid"])
    foreign = d / "foreign"
    init_certs(str(foreign), nodes=1)
    return d


def _tls(pki, client_ca=True) -> TLSConfig:
    return TLSConfig(str(pki / "peer-ca.pem"), str(pki / "node{id}.pem"),
                     str(pki / "node{id}.key"),
                     str(pki / "client-ca.pem") if client_ca else None)


def _client_ctx(pki):
    return tls.client_context(str(pki / "peer-ca.pem"), str(pki / "client.pem"),
                              str(pki / "client.key"))


def _connect(addr: str, src: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), 5, source_address=(src, 0))


def _send_raw(addr: str, src: str, data: bytes) -> None:
    """Send ``data`` in clear and wait for the node to close the connection."""
    with _connect(addr, src) as s:
        s.sendall(data)
        s.settimeout(10)
        try:
            assert s.recv(100) == b"", "the node answered plaintext on its TLS port"
        except ConnectionResetError:
            pass


def _handshake(addr: str, src: str, ctx: ssl.SSLContext) -> None:
    """A TLS handshake from ``src`` with ``ctx``; the node must not let it carry a request
    (TLS 1.3 checks the client's certificate after the client's side is done, so the failure
    may show as a closed connection)."""
    raw = _connect(addr, src)
    try:
        with ctx.wrap_socket(raw, server_hostname=addr.rsplit(":", 1)[0]) as s:
            s.settimeout(10)
            s.sendall(b"\x00")
            assert s.recv(1) == b"", "the node accepted a connection it must refuse"
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        raw.close()


def _lines(node, needle: str) -> list[str]:
    return [ln for ln in node.log_text().splitlines() if needle in ln]


def test_every_refusal_is_logged_once_per_source_with_its_reason(cluster_factory, pki):
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki), client_tls=_client_ctx(pki))
    lead = cl.leader()
    term = cl.status(lead)["term"]
    n = cl.node(lead)
    c_addr, p_addr = n.client_addr, n.raft_addr
    ca = str(pki / "peer-ca.pem")

    def client_with(stem: str, base=pki):
        return tls.client_context(ca, str(base / f"{stem}.pem"), str(base / f"{stem}.key"))

    def peer_with(stem: str):
        return tls.peer_client_context(str(pki / f"{stem}.pem"), str(pki / f"{stem}.key"), ca)

    hello = b"\x10\x00\x00\x00" + b"\x95\x01\x01\xa1x\x01\x02" + b"\x00" * 9
    cases = [   # source, port, what it does, the reason the log must give
        ("127.0.0.2", c_addr, lambda a, s: _send_raw(a, s, b"\x05\x00\x00\x00garbage"),
         "not a TLS handshake (plaintext or garbage)"),
        ("127.0.0.3", c_addr, lambda a, s: _send_raw(a, s, b"GET / HTTP/1.1\r\n\r\n"),
         "an HTTP request, not a TLS handshake"),
        ("127.0.0.4", c_addr, lambda a, s: _handshake(a, s, tls.client_context(ca)),
         "no certificate presented (this port requires one)"),
        ("127.0.0.5", c_addr, lambda a, s: _handshake(a, s, client_with("client",
                                                                        pki / "foreign")),
         "its certificate was refused: not signed by the trusted CA"),
        ("127.0.0.6", c_addr, lambda a, s: _handshake(a, s, client_with("expired-client")),
         "its certificate was refused: certificate has expired"),
        ("127.0.0.7", c_addr, lambda a, s: _handshake(a, s, client_with("future-client")),
         "its certificate was refused: certificate is not yet valid"),
        ("127.0.0.8", c_addr, lambda a, s: _handshake(a, s, client_with("node1",
                                                                        pki / "foreign")),
         "its certificate was refused: not signed by the trusted CA"),
        ("127.0.0.9", p_addr, lambda a, s: _handshake(a, s, peer_with("client")),
         "its certificate was refused: not signed by the trusted CA"),
        ("127.0.0.10", p_addr, lambda a, s: _handshake(a, s, peer_with("expired-node")),
         "its certificate was refused: certificate has expired"),
        ("127.0.0.11", p_addr, lambda a, s: _send_raw(a, s, hello),
         "not a TLS handshake (plaintext or garbage)"),
    ]
    for src, addr, act, reason in cases:
        act(addr, src)
        port = "client" if addr == c_addr else "peer"
        line = f"refused a TLS connection on the {port} port from {src}: {reason}"
        cl.wait_for(lambda line=line: _lines(n, line), 10, f"the log line {line!r}")
    # The same source again within the minute: not logged again.
    _send_raw(c_addr, "127.0.0.2", b"\x05\x00\x00\x00garbage again")
    # A client that opens TCP and never speaks is dropped after the handshake timeout.
    with _connect(c_addr, "127.0.0.12") as idle:
        idle.settimeout(15)
        try:
            assert idle.recv(1) == b""
        except ConnectionResetError:
            pass
    cl.wait_for(lambda: _lines(n, "from 127.0.0.12: no TLS handshake within 5 s"), 10,
                "the handshake timeout's log line")
    assert len(_lines(n, "port from 127.0.0.2:")) == 1
    assert "Traceback" not in n.log_text()
    assert cl.current_leader() == lead and cl.status(lead)["term"] == term
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"after", b"refusals").ok


def test_a_peer_whose_certificate_does_not_name_the_address_is_not_dialled(
        cluster_factory, pki, tmp_path):
    d = tmp_path / "pki"
    shutil.copytree(pki, d)
    for ext in (".pem", ".key"):       # node 3 serves a certificate for other hosts
        shutil.copy(d / f"elsewhere{ext}", d / f"node3{ext}")
    cl = cluster_factory(3, tuning=FAST, tls=_tls(d), client_tls=_client_ctx(d),
                         start=False)
    cl.start([1, 2])
    cl.start([3], wait=False)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    port3 = cl.node(3).raft_addr
    for i in (1, 2):
        cl.wait_for(lambda i=i: _lines(cl.node(i), f"TLS handshake with node 3 at {port3} "
                                       "failed: its certificate was refused: IP address "
                                       "mismatch, certificate is not valid for "
                                       "'127.0.0.1' (retrying)"), 10, f"node {i} to refuse node 3's name")
    cl.wait_for(lambda: _lines(cl.node(3), "refused a TLS connection on the peer port from "
                               "127.0.0.1: the other side"), 10,
                "node 3 to log that its certificate is refused")
    assert cl.current_leader() in (1, 2)
    for i in cl.ids:
        assert "Traceback" not in cl.node(i).log_text()


def test_a_node_without_tls_among_tls_nodes_is_refused_both_ways(cluster_factory, pki,
                                                                 harness):
    plain_cfg = {}

    def node_cmd(i, config_path, data_dir):
        if i == 3:
            config_path = plain_cfg["path"]
        return harness.default_node_cmd(i, config_path, data_dir)

    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki), client_tls=_client_ctx(pki),
                         start=False, node_cmd=node_cmd)
    plain = cl.base / "plain.toml"
    plain.write_text(render_config(replace(cl.config, tls=None)))
    plain_cfg["path"] = str(plain)
    cl.start([1, 2])
    cl.start([3], wait=False)
    lead = cl.leader()
    cl.wait_for(lambda: _lines(cl.node(3), "this is a TLS handshake: the other side has a "
                               "[tls] table and this node has none"), 10,
                "node 3 (no [tls]) to name the TLS handshakes it gets")
    for i in (1, 2):
        cl.wait_for(lambda i=i: _lines(cl.node(i), "refused a TLS connection on the peer "
                                       "port from 127.0.0.1: not a TLS handshake"), 10,
                    f"node {i} to refuse node 3's plaintext")
    assert "unauthenticated plaintext" in cl.node(3).log_text()
    assert cl.node(3).running, "a refused node keeps running (and keeps trying)"
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    assert cl.current_leader() == lead
    for i in cl.ids:
        assert "Traceback" not in cl.node(i).log_text()


def _flood(addr: str, ctx: ssl.SSLContext, stop: threading.Event, done: list) -> None:
    host, port = addr.rsplit(":", 1)
    while not stop.is_set():
        try:
            with socket.create_connection((host, int(port)), 5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):
                    done.append(1)
        except OSError:
            done.append(0)


def test_a_flood_of_handshakes_does_not_cost_leadership(cluster_factory, pki):
    cl = cluster_factory(3, tls=_tls(pki), client_tls=_client_ctx(pki))
    lead = cl.leader()
    term = cl.status(lead)["term"]
    n = cl.node(lead)
    stop = threading.Event()
    done: list = []
    # Full handshakes as fast as four threads go, alternating good client certificates
    # and no certificate at all (refused), and connections that never speak.
    ctxs = [_client_ctx(pki), tls.client_context(str(pki / "peer-ca.pem"))]
    threads = [threading.Thread(target=_flood, args=(a, ctxs[k % 2], stop, done), daemon=True)
               for k, a in enumerate([n.client_addr, n.client_addr, n.raft_addr,
                                      n.client_addr])]
    idle = []
    host, port = n.client_addr.rsplit(":", 1)
    for _ in range(200):
        idle.append(socket.create_connection((host, int(port)), 5))
    for t in threads:
        t.start()
    c = cl.client(lead, timeout=10)
    sid = c.register().expect_ok()
    latencies = []
    try:
        deadline = time.monotonic() + 6
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            t0 = time.perf_counter()
            assert c.put(sid, seq, b"k%d" % seq, b"v").ok
            latencies.append(time.perf_counter() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for s in idle:
            s.close()
    latencies.sort()
    print(f"flood: {len(done)} handshakes ({sum(done)} completed on the flooding side) in 6 s; {len(latencies)} "
          f"writes meanwhile, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max "
          f"{latencies[-1] * 1000:.1f} ms")
    assert sum(done) > 50, "the flood did not run"
    assert cl.current_leader() == lead and cl.status(lead)["term"] == term, \
        "the flood cost the leader its leadership"
