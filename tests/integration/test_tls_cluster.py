"""A cluster with ``[tls]`` on real processes (issue 14, first part): both ports speak only
TLS, peers authenticate each other with the peer CA, the client port requires a client
certificate when ``client_ca`` is set, and a node whose certificate files cannot be used
exits 2 naming the file.

Place in the architecture: integration tests (tests/integration), real processes, real
certificates made in the test by ``fastraft.certs``.
"""

from __future__ import annotations

import socket
import ssl

import pytest

pytest.importorskip("cryptography")

from fastraft import tls  # noqa: E402
from fastraft.certs import init_certs  # noqa: E402
from fastraft.config import TLSConfig  # noqa: E402

FAST = dict(heartbeat_ms=20, election_timeout_ms=200)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    init_certs(str(d), nodes=9, hosts=["127.0.0.1", "localhost"])
    return d


def _tls(pki, client_ca=True) -> TLSConfig:
    return TLSConfig(str(pki / "peer-ca.pem"), str(pki / "node{id}.pem"),
                     str(pki / "node{id}.key"),
                     str(pki / "client-ca.pem") if client_ca else None)


def test_a_tls_cluster_elects_replicates_and_refuses_what_it_must(cluster_factory, pki):
    client_ctx = tls.client_context(str(pki / "peer-ca.pem"), str(pki / "client.pem"),
                                    str(pki / "client.key"))
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki), client_tls=client_ctx)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    for i in cl.ids:
        cl.wait_for(lambda i=i: cl.client(i).get(b"k", stale=True).value == b"v", 10,
                    f"node {i} to apply the write over TLS peers")
        assert "TLS on both ports" in cl.node(i).log_text()
    n = cl.node(lead)
    from fastraft_itest_wire import WireClient   # the conftest loads wire.py by this name

    # Plaintext on the TLS client port: closed during the handshake, nothing answered.
    host, port = n.client_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(b"\x05\x00\x00\x00garbage")
        s.settimeout(10)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    # A TLS client without a certificate where one is required.
    with pytest.raises((ssl.SSLError, OSError)):
        WireClient(n.client_addr, 5, tls=tls.client_context(str(pki / "peer-ca.pem"))).status()
    # A node certificate (peer CA) is a client certificate too (a joining node asks for
    # the member list with it).
    node_ctx = tls.client_context(str(pki / "peer-ca.pem"), str(pki / "node1.pem"),
                                  str(pki / "node1.key"))
    assert WireClient(n.client_addr, 5, tls=node_ctx).status().ok
    # A client-CA certificate on the peer port: the handshake fails or the node closes the
    # connection without a byte (TLS 1.3 checks the client's certificate after the client
    # has finished its side).
    peer_host, peer_port = n.raft_addr.rsplit(":", 1)
    ctx = tls.peer_client_context(str(pki / "client.pem"), str(pki / "client.key"),
                                  str(pki / "peer-ca.pem"))
    with socket.create_connection((peer_host, int(peer_port)), 5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=peer_host) as s:
                s.settimeout(10)
                s.sendall(b"x")
                assert s.recv(1) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
    # After all that, the leader still leads and writes go on.
    assert cl.current_leader() == lead
    assert cl.client(lead).put(sid, 2, b"k2", b"v2").ok


def test_a_node_with_an_unusable_key_exits_2_naming_the_file(cluster_factory, pki, tmp_path):
    bad = tmp_path / "node{id}.key"
    for i in (1, 2, 3):
        (tmp_path / f"node{i}.key").write_bytes((pki / "node9.key").read_bytes())
    t = TLSConfig(str(pki / "peer-ca.pem"), str(pki / "node{id}.pem"), str(bad), None)
    cl = cluster_factory(3, tuning=FAST, tls=t, start=False)
    cl.start([1], wait=False)
    assert cl.wait_exit(1, 20) == 2
    log = cl.node(1).log_text()
    assert "node1.key does not belong to certificate" in log and "Traceback" not in log
    assert not (cl.base / "data" / "1" / "wal").exists(), "nothing touched before the check"


def test_the_client_library_and_cli_over_tls(cluster_factory, pki, tmp_path):
    import os
    import subprocess
    import sys

    from fastraft.client import Client
    from fastraft.errors import TLSError

    client_ctx = tls.client_context(str(pki / "peer-ca.pem"), str(pki / "client.pem"),
                                    str(pki / "client.key"))
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki), client_tls=client_ctx)
    cl.leader()
    with Client(cl.endpoints(), cacert=str(pki / "peer-ca.pem"), cert=str(pki / "client.pem"),
                key=str(pki / "client.key"), timeout=2.0) as c:
        c.put(b"a", b"1")
        assert c.get(b"a") == b"1"
        assert sorted(m.id for m in c.members()) == [1, 2, 3]
    # A CA that did not sign the nodes: a definite error, at once.
    other = tmp_path / "other"
    init_certs(str(other), nodes=1)
    with Client(cl.endpoints(), cacert=str(other / "peer-ca.pem"), timeout=2.0,
                deadline=10.0) as c:
        with pytest.raises(TLSError, match="not trusted"):
            c.get(b"a")
    env = dict(os.environ, FASTRAFT_CACERT=str(pki / "peer-ca.pem"),
               FASTRAFT_CERT=str(pki / "client.pem"), FASTRAFT_KEY=str(pki / "client.key"))
    out = subprocess.run([sys.executable, "-m", "fastraft", "get", "a", "--endpoints",
                          ",".join(cl.endpoints())], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
