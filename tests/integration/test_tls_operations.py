"""A TLS cluster in operation (issue 14): kill -9 of the leader under writes, a node added at
runtime (it asks for the member list over TLS with its node certificate), and certificate
renewal under load with SIGHUP (open connections continue, new ones get the new certificate,
a renewal with a broken file keeps the previous certificate). Real processes, real
certificates, writers using the exactly-once client over TLS.

Place in the architecture: integration tests (tests/integration).
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import threading

import pytest

pytest.importorskip("cryptography")

from fastraft import codec, tls  # noqa: E402
from fastraft.certs import init_certs, renew_certs  # noqa: E402
from fastraft.client import Client  # noqa: E402
from fastraft.config import TLSConfig  # noqa: E402

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    init_certs(str(d), nodes=4)
    return d


def _tls(d) -> TLSConfig:
    return TLSConfig(str(d / "peer-ca.pem"), str(d / "node{id}.pem"), str(d / "node{id}.key"),
                     str(d / "client-ca.pem"))


def _files(d) -> dict:
    return dict(cacert=str(d / "peer-ca.pem"), cert=str(d / "client.pem"),
                key=str(d / "client.key"))


class Writer:
    """Puts unique keys through the exactly-once client (TLS) until stopped; records the
    acknowledged ones."""

    def __init__(self, endpoints, tls_files: dict) -> None:
        self.client = Client(endpoints, timeout=2.0, deadline=30.0, **tls_files)
        self.acked: dict = {}
        self.errors: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key, value = b"w%07d" % n, b"v%d" % n
            try:
                self.client.put(key, value)
            except Exception as exc:
                self.errors.append(exc)
                return
            self.acked[key] = value

    def wait(self, cl, more: int, what: str) -> None:
        goal = len(self.acked) + more
        cl.wait_for(lambda: len(self.acked) >= goal or self.errors, 30,
                    f"{more} more acknowledged writes ({what})")
        assert not self.errors, self.errors

    def join(self) -> dict:
        self.stop.set()
        self.thread.join(40)
        self.client.close()
        assert not self.thread.is_alive(), "the writer did not stop"
        assert not self.errors, self.errors
        return self.acked


def _all_present(cl, acked: dict) -> None:
    lead = cl.leader()
    cl.wait_applied(cl.status(lead)["commit"])
    for i in cl.ids:
        got = dict(cl.client(i).scan(b"w", limit=100_000, stale=True).expect_ok())
        missing = [k for k in acked if got.get(k) != acked[k]]
        assert not missing, f"node {i} lost {len(missing)} acknowledged writes: {missing[:5]}"


def test_kill_9_of_the_leader_under_writes_over_tls(cluster_factory, pki):
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki),
                         client_tls=tls.client_context(**_files(pki)))
    w = Writer(cl.endpoints(), _files(pki))
    w.wait(cl, 50, "before the kill")
    old = cl.leader()
    cl.kill(old)
    cl.wait_for(lambda: (cl.current_leader() or old) != old, 15, "a new leader")
    w.wait(cl, 50, "after the kill")
    cl.start([old])
    w.wait(cl, 20, "after the restart")
    _all_present(cl, w.join())


def _served_cert(addr: str, ctx: ssl.SSLContext) -> bytes:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert(binary_form=True)


def _der(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_certificates_renewed_under_load_with_sighup(cluster_factory, pki):
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki),
                         client_tls=tls.client_context(**_files(pki)))
    w = Writer(cl.endpoints(), _files(pki))
    w.wait(cl, 50, "before the renewal")
    held = cl.client(1)                            # a connection opened before the renewal
    old_der = _der(pki / "node1.pem")
    saved = pki.parent / "old"
    shutil.copytree(pki, saved)
    renew_certs(str(pki), [1, 2, 3], client=True)
    assert _der(pki / "node1.pem") != old_der
    lost_before = {i: cl.node(i).log_text().count("lost") for i in cl.ids}
    for i in cl.ids:
        cl._signal(i, signal.SIGHUP)
    for i in cl.ids:
        cl.wait_for(lambda i=i: "SIGHUP: certificates re-read" in cl.node(i).log_text(), 10,
                    f"node {i} to re-read its certificates")
    w.wait(cl, 50, "after the renewal")
    assert held.status().ok, "a connection opened before the renewal continues"
    assert {i: cl.node(i).log_text().count("lost") for i in cl.ids} == lost_before, \
        "peer connections were dropped by the reload"
    # New connections get the new certificate; the new client certificate is accepted, and
    # so is the old one (same client CA).
    for files in (_files(pki), _files(saved)):
        assert _served_cert(cl.node(1).client_addr, tls.client_context(**files)) == \
            _der(pki / "node1.pem")
    # New peer connections, both ways, with the new certificates.
    cl.restart(3)
    w.wait(cl, 20, "after node 3 restarted")
    # A broken file at the next SIGHUP: refused with the reason, the previous certificate
    # stays in use.
    (pki / "node2.key").write_text("not a key\n")
    cl._signal(2, signal.SIGHUP)
    cl.wait_for(lambda: "SIGHUP: certificates not reloaded, the previous ones stay in use: "
                        "key " in cl.node(2).log_text(), 10, "node 2 to refuse the bad key")
    assert _served_cert(cl.node(2).client_addr, tls.client_context(**_files(pki))) == \
        _der(pki / "node2.pem")
    w.wait(cl, 20, "after the refused reload")
    _all_present(cl, w.join())
    for i in cl.ids:
        assert "Traceback" not in cl.node(i).log_text()


def test_a_node_joins_a_tls_cluster_that_requires_client_certificates(cluster_factory, pki):
    cl = cluster_factory(3, tuning=FAST, tls=_tls(pki),
                         client_tls=tls.client_context(**_files(pki)))
    lead = cl.leader()
    w = Writer(cl.endpoints(), _files(pki))
    w.wait(cl, 30, "before the join")
    n = cl.new_node()
    cl.start([n.id], wait=False)
    cl.wait_for(lambda: "waiting to be added (not a member yet)" in n.log_text(), 20,
                "the new node to ask the members over TLS")
    rep = cl.client(lead, timeout=10).call(codec.OP_MEMBER, codec.MEMBER_ADD_LEARNER, n.id,
                                           n.raft_addr, n.client_addr)
    assert rep.status == codec.ST_OK, rep
    cl.wait_for(lambda: "listed as a learner" in n.log_text(), 20, "the node to be listed")
    w.wait(cl, 30, "after the join")
    acked = w.join()
    commit = cl.status(lead)["commit"]
    cl.wait_applied(commit, ids=[n.id], timeout=30)
    got = dict(cl.client(n.id).scan(b"w", limit=100_000, stale=True).expect_ok())
    assert all(got.get(k) == v for k, v in acked.items()), "the learner lacks writes"
    assert "Traceback" not in n.log_text()
