"""The development PKI (``fastraft certs init``) and the TLS contexts (``fastraft.tls``):
real TLS handshakes over localhost sockets, every refusal the contexts must make, and file
errors that name the file.

Place in the architecture: tests of two leaves (``fastraft.certs``, ``fastraft.tls``); no node
involved (issue 14 wires them into the ports).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest

pytest.importorskip("cryptography")

from fastraft import tls  # noqa: E402
from fastraft.certs import init_certs  # noqa: E402
from fastraft.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    init_certs(str(d), nodes=2, hosts=["127.0.0.1", "localhost"])
    other = tmp_path_factory.mktemp("foreign")
    init_certs(str(other), nodes=1)
    return lambda name, foreign=False: str((other if foreign else d) / name)


def _serve_once(server_ctx):
    """A localhost TLS server for one connection: ``(listening socket, thread, errors)``;
    the errors of its side of the handshake land in the list."""
    srv = socket.create_server(("127.0.0.1", 0))
    server_err: list = []

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            server_err.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t, server_err


def _handshake(server_ctx, client_ctx, host="127.0.0.1") -> tuple[bool, str]:
    """One TLS handshake between the two contexts over a localhost TCP connection:
    ``(ok, why)`` from the client's side (the server side's error when it refused)."""
    srv, t, server_err = _serve_once(server_ctx)
    try:
        with socket.create_connection(srv.getsockname(), 5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(b"x")
                s.recv(1)       # TLS 1.3: a refused client certificate shows up here
        ok, why = True, ""
    except (ssl.SSLError, OSError) as exc:
        ok, why = False, str(exc)
    t.join(5)
    srv.close()
    if server_err and ok:
        ok, why = False, str(server_err[0])
    return ok, why + " " + " ".join(str(e) for e in server_err)


def test_peers_authenticate_each_other(pki):
    s = tls.peer_server_context(pki("node1.pem"), pki("node1.key"), pki("peer-ca.pem"))
    c = tls.peer_client_context(pki("node2.pem"), pki("node2.key"), pki("peer-ca.pem"))
    assert _handshake(s, c) == (True, " ")
    assert _handshake(s, c, host="localhost")[0]


def test_the_peer_port_refuses_client_certificates_foreign_cas_and_wrong_names(pki):
    s = tls.peer_server_context(pki("node1.pem"), pki("node1.key"), pki("peer-ca.pem"))
    # A certificate of the client CA is never accepted on the peer port.
    as_client = tls.peer_client_context(pki("client.pem"), pki("client.key"),
                                        pki("peer-ca.pem"))
    ok, why = _handshake(s, as_client)
    assert not ok and "certificate" in why.lower()
    # A node of another cluster's CA.
    foreign = tls.peer_client_context(pki("node1.pem", True), pki("node1.key", True),
                                      pki("peer-ca.pem", True))
    assert not _handshake(s, foreign)[0]
    # The dialled address is not in the peer's certificate.
    c = tls.peer_client_context(pki("node2.pem"), pki("node2.key"), pki("peer-ca.pem"))
    ok, why = _handshake(s, c, host="10.9.8.7")
    assert not ok and ("mismatch" in why.lower() or "doesn't match" in why.lower()
                       or "not valid" in why.lower()), why


def test_the_client_port_requires_a_client_certificate_when_it_has_a_client_ca(pki):
    s = tls.client_server_context(pki("node1.pem"), pki("node1.key"), pki("client-ca.pem"),
                                  pki("peer-ca.pem"))
    good = tls.client_context(pki("peer-ca.pem"), pki("client.pem"), pki("client.key"))
    assert _handshake(s, good)[0]
    # A node's certificate is accepted as a client's (peer CA); not without the peer CA.
    node = tls.client_context(pki("peer-ca.pem"), pki("node2.pem"), pki("node2.key"))
    assert _handshake(s, node)[0]
    strict = tls.client_server_context(pki("node1.pem"), pki("node1.key"),
                                       pki("client-ca.pem"))
    assert not _handshake(strict, node)[0]
    assert not _handshake(s, tls.client_context(pki("peer-ca.pem")))[0]   # no certificate
    wrong_ca = tls.client_context(pki("peer-ca.pem", True))
    ok, why = _handshake(s, wrong_ca)
    assert not ok and "certificate verify failed" in why
    # Without a client CA, any TLS client that trusts the node is served.
    open_port = tls.client_server_context(pki("node1.pem"), pki("node1.key"), None)
    assert _handshake(open_port, tls.client_context(pki("peer-ca.pem")))[0]


def test_unusable_files_are_refused_naming_the_file(pki, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="nope.pem: no such file"):
        tls.peer_server_context(missing, pki("node1.key"), pki("peer-ca.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    with pytest.raises(ConfigError, match="garbage.pem: not a PEM"):
        tls.peer_server_context(pki("node1.pem"), pki("node1.key"), str(garbage))
    with pytest.raises(ConfigError, match="node2.key does not belong to certificate"):
        tls.peer_server_context(pki("node1.pem"), pki("node2.key"), pki("peer-ca.pem"))
    with pytest.raises(ConfigError, match=r"node1\.pem: not a PEM key"):
        tls.peer_server_context(pki("node1.pem"), pki("node1.pem"), pki("peer-ca.pem"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked.key"
        locked.write_bytes(open(pki("node1.key"), "rb").read())
        locked.chmod(0)
        with pytest.raises(ConfigError, match="locked.key: cannot read it"):
            tls.peer_server_context(pki("node1.pem"), str(locked), pki("peer-ca.pem"))
    with pytest.raises(ConfigError, match="needs its key"):
        tls.client_context(pki("peer-ca.pem"), cert=pki("client.pem"))


def test_certs_init_writes_private_keys_0600_and_never_overwrites(tmp_path):
    names = init_certs(str(tmp_path), nodes=1, hosts=["::1", "db.example"])
    assert "node1.pem" in names and "client.key" in names
    for n in names:
        mode = os.stat(tmp_path / n).st_mode & 0o777
        assert mode == (0o600 if n.endswith(".key") else 0o644), n
    with pytest.raises(ConfigError, match="never overwrites"):
        init_certs(str(tmp_path), nodes=1)
    with pytest.raises(ConfigError, match="--nodes"):
        init_certs(str(tmp_path / "x"), nodes=0)


def test_the_certs_command_prints_the_tls_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastraft", "certs", "init",
                          str(tmp_path / "pki"), "--nodes", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '[tls]\npeer_ca = "peer-ca.pem"' in out.stdout and 'cert = "node{id}.pem"' in out.stdout
    again = subprocess.run([sys.executable, "-m", "fastraft", "certs", "init",
                            str(tmp_path / "pki")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("fastraft certs: ")


def test_the_tls_table_is_parsed_relative_to_the_config_file(tmp_path):
    from fastraft.config import load_config, parse_config, render_config

    head = ('[cluster]\nname = "c"\n[[node]]\nid = 1\nraft = "127.0.0.1:1"\n'
            'client = "127.0.0.1:2"\n')
    f = tmp_path / "conf" / "cluster.toml"
    f.parent.mkdir()
    f.write_text(head + '[tls]\npeer_ca = "pki/peer-ca.pem"\ncert = "pki/node{id}.pem"\n'
                        'key = "/abs/node{id}.key"\n')
    cfg = load_config(f)
    assert cfg.tls.peer_ca == str(tmp_path / "conf" / "pki" / "peer-ca.pem")
    assert cfg.tls.cert_for(3) == str(tmp_path / "conf" / "pki" / "node3.pem")
    assert cfg.tls.key_for(2) == "/abs/node2.key" and cfg.tls.client_ca is None
    assert parse_config(render_config(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"\[tls\] peer_ca: missing"):
        parse_config(head + '[tls]\ncert = "a"\nkey = "b"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'certs' in \[tls\]"):
        parse_config(head + '[tls]\npeer_ca = "a"\ncert = "b"\nkey = "c"\ncerts = "d"\n')
    with pytest.raises(ConfigError, match=r"\[tls\] key: expected a file path"):
        parse_config(head + '[tls]\npeer_ca = "a"\ncert = "b"\nkey = 3\n')
    assert parse_config(head).tls is None


def test_certs_renew_replaces_node_and_client_certificates_signed_by_the_same_cas(tmp_path):
    d = tmp_path / "pki"
    init_certs(str(d), nodes=2)
    before = {n: (d / n).read_bytes() for n in ("node1.pem", "node1.key", "node2.pem",
                                                "client.pem")}
    out = subprocess.run([sys.executable, "-m", "fastraft", "certs", "renew", str(d),
                          "--nodes", "1", "--client", "--days", "30"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "node1.pem" in out.stdout and "SIGHUP" in out.stdout
    assert (d / "node1.pem").read_bytes() != before["node1.pem"]
    assert (d / "node1.key").read_bytes() != before["node1.key"]
    assert (d / "client.pem").read_bytes() != before["client.pem"]
    assert (d / "node2.pem").read_bytes() == before["node2.pem"], "not asked for"
    assert os.stat(d / "node1.key").st_mode & 0o777 == 0o600
    assert not [p for p in os.listdir(d) if p.endswith(".new")]
    # The renewed certificates chain to the same CAs, and name the same hosts.
    srv = tls.peer_server_context(str(d / "node1.pem"), str(d / "node1.key"),
                                  str(d / "peer-ca.pem"))
    cli = tls.peer_client_context(str(d / "node2.pem"), str(d / "node2.key"),
                                  str(d / "peer-ca.pem"))
    assert _handshake(srv, cli)[0]
    bad = subprocess.run([sys.executable, "-m", "fastraft", "certs", "renew",
                          str(tmp_path / "nothing"), "--nodes", "1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "peer-ca.pem: no such file" in bad.stderr
    for args in (["--nodes", "x"], []):
        r = subprocess.run([sys.executable, "-m", "fastraft", "certs", "renew", str(d)] + args,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.startswith("fastraft certs: "), r.stderr


def test_handshake_refusals_are_described_in_words(pki):
    """What the log says for each way a handshake fails (the real errors, from real
    handshakes where this process can make them)."""
    node = tls.client_server_context(pki("node1.pem"), pki("node1.key"), pki("client-ca.pem"))

    def server_error(client_ctx) -> BaseException:
        srv, t, got = _serve_once(node)
        with socket.create_connection(srv.getsockname(), 5) as raw:
            try:
                if client_ctx is None:
                    raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
                    raw.recv(10)
                else:
                    with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(b"x")
                        s.recv(1)
            except (ssl.SSLError, OSError):
                pass
        t.join(5)
        srv.close()
        return got[0]

    words = tls.handshake_refusal
    assert words(server_error(None), 5) == "an HTTP request, not a TLS handshake"
    assert words(server_error(tls.client_context(pki("peer-ca.pem"))), 5) == \
        "no certificate presented (this port requires one)"
    foreign = tls.client_context(pki("peer-ca.pem"), pki("client.pem", True),
                                 pki("client.key", True))
    assert words(server_error(foreign), 5).startswith(
        "its certificate was refused: not signed by the trusted CA (")
    assert words(ConnectionAbortedError("SSL handshake is taking longer than 5.0 seconds: "
                                        "aborting the connection"), 5) == \
        "no TLS handshake within 5 s"
    assert words(TimeoutError(), 2.5) == "no TLS handshake within 2.5 s"
    assert "closed the connection during the handshake" in words(ConnectionResetError(), 5)
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert words(alert, 5) == \
        "the other side refused this node's certificate (TLS alert: unknown ca)"
    # A plaintext port names a TLS handshake when its first bytes are one.
    first = int.from_bytes(b"\x16\x03\x01\x02", "little")
    assert "TLS handshake" in tls.tls_on_plain_port(first)
    assert tls.tls_on_plain_port(int.from_bytes(b"\x05\x00\x00\x00", "little")) == ""


def test_log_every_logs_a_source_once_a_minute_and_counts_the_rest():
    import logging

    from fastraft.server.logs import LogEvery

    lines: list = []

    class Catch(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.logevery")
    logger.addHandler(Catch())
    logger.propagate = False
    now = [100.0]
    every = LogEvery(logger, period=60, clock=lambda: now[0])
    assert every("a", logging.WARNING, "refused %s", "a")
    assert not every("a", logging.WARNING, "refused %s", "a")
    assert every("b", logging.WARNING, "refused %s", "b")
    now[0] += 59
    assert not every("a", logging.WARNING, "refused %s", "a")
    now[0] += 2
    assert every("a", logging.WARNING, "refused %s", "a")
    assert lines == ["refused a", "refused b",
                     "refused a (and 2 more since the last such line)"]


def test_the_client_port_sends_session_tickets(pki):
    """The client tells a refused TLS 1.3 handshake by the missing session ticket."""
    ctx = tls.client_server_context(pki("node1.pem"), pki("node1.key"), pki("client-ca.pem"))
    assert ctx.num_tickets >= 1


def test_a_ca_file_with_two_cas_trusts_both_while_a_ca_changes(tmp_path):
    """The CA rotation the README describes: a CA file holding the old and the new CA
    accepts certificates of either."""
    old, new = tmp_path / "old", tmp_path / "new"
    init_certs(str(old), nodes=2)
    init_certs(str(new), nodes=2)
    bundle = tmp_path / "both.pem"
    bundle.write_bytes((old / "peer-ca.pem").read_bytes() + (new / "peer-ca.pem").read_bytes())
    srv = tls.peer_server_context(str(old / "node1.pem"), str(old / "node1.key"), str(bundle))
    for d in (old, new):
        cli = tls.peer_client_context(str(d / "node2.pem"), str(d / "node2.key"), str(bundle))
        assert _handshake(srv, cli)[0], d
    only_old = tls.peer_server_context(str(old / "node1.pem"), str(old / "node1.key"),
                                       str(old / "peer-ca.pem"))
    cli = tls.peer_client_context(str(new / "node2.pem"), str(new / "node2.key"), str(bundle))
    assert not _handshake(only_old, cli)[0]
