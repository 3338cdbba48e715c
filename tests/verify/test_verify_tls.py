"""``python -m fastraft.verify --tls``: the fault proxies terminate TLS, and a TLS cluster is
verified under faults (fastraft.verify.proxy ``ProxyTLS``, fastraft.verify.pki).

With real certificates (``fastraft.certs.init_certs``; skipped without the ``cryptography``
package): a proxy in front of a TLS-only frame server (a peer-port stand-in that speaks
nothing but TLS and requires a peer certificate) forwards the frames of a TLS dialler, and
its frame-level faults (drop, block) act on them as on a plaintext link; a plaintext dialler
and a dialler whose certificate is not of the peer CA are closed during the handshake,
counted, and the proxy goes on serving. Then a short ``--tls`` run of real nodes with
partitions and kills: linearizable, nothing lost, the nodes' logs say "TLS on both ports",
the summary says TLS was on and the proxies terminated it. Without ``cryptography``,
``--tls`` is a usage error naming ``pip install 'fastraft[tls]'``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import threading

import pytest

from fastraft import codec, tls
from fastraft.core import FrameDecoder, encode_frame
from fastraft.verify.__main__ import main
from fastraft.verify.proxy import BLOCK, FaultProxy, LinkState, LoopThread, ProxyNetwork, \
    ProxyTLS
from fastraft_test_waiting import wait_until as _wait_until  # tests/conftest.py


def wait_until(pred, timeout=5.0, what="the condition"):
    return _wait_until(pred, timeout, what)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography")
    from fastraft.certs import init_certs

    d = tmp_path_factory.mktemp("pki")
    init_certs(str(d), nodes=2)
    return d


def _node_files(pki, i):
    return str(pki / f"node{i}.pem"), str(pki / f"node{i}.key"), str(pki / "peer-ca.pem")


class TLSFrameServer:
    """Node 2's peer port stand-in, TLS only (a peer certificate of the peer CA required):
    answers the first frame with a welcome, records every frame, echoes later ones."""

    def __init__(self, pki) -> None:
        self.conns: list[list[bytes]] = []
        self.ended = 0          # connections the other side closed
        self.lock = threading.Lock()
        self.lt = LoopThread("tls-frame-server").start()
        ctx = tls.peer_server_context(*_node_files(pki, 2))
        self.server = self.lt.run(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx))
        self.addr = self.server.sockets[0].getsockname()[:2]

    async def _handle(self, reader, writer):
        frames: list[bytes] = []
        with self.lock:
            self.conns.append(frames)
        dec = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for f in dec.feed(data):
                    with self.lock:
                        first = not frames
                        frames.append(f)
                    writer.write(encode_frame(codec.encode_welcome(2) if first else f))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with self.lock:
                self.ended += 1
            writer.close()

    def frames(self) -> list[bytes]:
        with self.lock:
            return [f for c in self.conns for f in c]

    def close(self):
        self.server.close()
        self.lt.close()


class Dialler:
    """A blocking peer connection from node ``frm`` (TLS with ``ctx``, or plaintext)."""

    def __init__(self, addr, ctx: ssl.SSLContext | None, frm: int = 1, to: int = 2) -> None:
        sock = socket.create_connection(addr, timeout=5)
        self.sock = ctx.wrap_socket(sock, server_hostname=addr[0]) if ctx else sock
        self.dec = FrameDecoder()
        self.buf: list[bytes] = []
        self.send(codec.encode_hello("test", frm, to))

    def send(self, body: bytes) -> None:
        self.sock.sendall(encode_frame(body))

    def recv(self, timeout: float = 5.0) -> bytes | None:
        """The next frame, or None when the proxy closed; socket.timeout when nothing
        comes."""
        self.sock.settimeout(timeout)
        while not self.buf:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self.buf.extend(self.dec.feed(data))
        return self.buf.pop(0)

    def welcomed(self) -> bool:
        w = self.recv()
        return w is not None and codec.decode_peer(w, 1 << 16)[0] == codec.P_WELCOME

    def close(self):
        self.sock.close()


def test_proxy_terminates_tls_faults_act_on_frames_and_refusals_leave_it_serving(pki):
    server = TLSFrameServer(pki)
    node1 = tls.peer_client_context(*_node_files(pki, 1))     # a peer of the peer CA
    proxy = FaultProxy(("127.0.0.1", 0), server.addr, ProxyNetwork(seed=3), node_id=2,
                       tls=ProxyTLS(tls.peer_server_context(*_node_files(pki, 2)),
                                    tls.peer_client_context(*_node_files(pki, 2)))).start()
    net = proxy.network
    try:
        # through: the dialler checked the proxy's name (127.0.0.1), the node the proxy's
        d = Dialler(proxy.address, node1)
        assert d.welcomed()
        d.send(b"m0")
        assert d.recv() == b"m0"
        assert proxy.links() == [(1, 2)] and proxy.tls_stats["handshakes"] == 1
        # drop = 1.0: every frame after the handshake is lost, the connection stays up
        net.update(1, 2, drop=1.0)
        for i in range(20):
            d.send(b"lost%d" % i)
        with pytest.raises(socket.timeout):
            d.recv(timeout=0.3)
        assert net.stats[(1, 2)]["dropped"] >= 20
        net.set(1, 2, LinkState())
        d.send(b"back")
        assert d.recv() == b"back"
        assert not any(f.startswith(b"lost") for f in server.frames())
        # a TLS stream cannot be half-closed: the dialler closing closes the node's side
        d1 = Dialler(proxy.address, node1, frm=3)
        assert d1.welcomed()
        d1.close()
        wait_until(lambda: server.ended == 1, what="the node's side of a closed link to end")
        # block: the open connection is cut; a new dial gets through TLS, then is closed
        net.update(1, 2, mode=BLOCK)
        proxy.loop.call_soon_threadsafe(proxy.apply)
        assert d.recv() is None
        seen = len(server.conns)
        d2 = Dialler(proxy.address, node1)
        assert d2.recv() is None and len(server.conns) == seen
        assert net.stats[(1, 2)]["refused"] == 1
        net.heal()
        # a plaintext dialler: closed during the handshake, nothing reaches the node
        plain = Dialler(proxy.address, None)
        assert plain.recv() is None
        # a certificate of another CA (the client CA): refused as well
        foreign = tls.peer_client_context(str(pki / "client.pem"), str(pki / "client.key"),
                                          str(pki / "peer-ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            bad = Dialler(proxy.address, foreign)
            bad.recv()       # TLS 1.3: the refusal of our certificate comes after connect
            raise ConnectionError("closed")
        wait_until(lambda: proxy.tls_stats["refused"] == 2, what="two refused handshakes")
        assert len(server.conns) == seen
        # the proxy goes on serving
        d3 = Dialler(proxy.address, node1)
        assert d3.welcomed()
        d3.send(b"again")
        assert d3.recv() == b"again"
        for x in (d, d2, plain, d3):
            x.close()
    finally:
        proxy.close()
        server.close()


def test_tls_run_with_partitions_and_kills(tmp_path, capsys):
    """A short --tls run: the nodes speak only TLS, every client presents the run's client
    certificate, the proxies terminate TLS under partitions and kills; every check passes."""
    pytest.importorskip("cryptography")
    out = tmp_path / "run"
    code = main(["--tls", "--nemesis", "partition,kill", "--workload", "register,set",
                 "--duration", "6", "--nodes", "3", "--seed", "3", "--out", str(out),
                 "--quiet", "0.4,0.8", "--fault", "0.7,1.2", "--recover", "2",
                 "--workers", "4", "--check-budget", "30", "--no-plot"])
    text = capsys.readouterr().out
    print(text)
    assert "verdict: OK" in text and code == 0, text
    assert "transport: TLS on both ports" in text and "the fault proxies terminate TLS" in text
    summary = json.loads((out / "summary.json").read_text())
    assert all(v == "ok" for v in summary["verdicts"].values()), summary["verdicts"]
    assert summary["anomalies"] == [] and summary["faults"].get("partition", 0) >= 1
    assert summary["faults"].get("kill", 0) >= 1, summary["faults"]
    assert summary["operations"]["register"]["ok"] > 50
    assert summary["set"]["acked"] > 50 and summary["set"]["lost"] == []
    assert summary["tls"]["enabled"] and summary["tls"]["proxies"] == "terminate TLS"
    assert all(v["handshakes"] > 0 for v in summary["tls"]["proxy_handshakes"].values())
    cfg = (out / "cluster.toml").read_text()
    assert "[tls]" in cfg and 'client_ca = "pki/client-ca.pem"' in cfg
    for i in (1, 2, 3):
        assert "TLS on both ports" in (out / f"node{i}.log").read_text()


def test_tls_without_cryptography_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography.x509", None)
    with pytest.raises(SystemExit) as e:
        main(["--tls", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "pip install 'fastraft[tls]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_added_node_gets_a_certificate_and_a_tls_proxy(tmp_path):
    """The member fault's path under --tls: a node added at runtime gets a certificate of the
    run's peer CA before it starts (``NodeProcs.add``), and its proxy, added later, terminates
    TLS with it (``Proxies.add``)."""
    pytest.importorskip("cryptography")
    from fastraft.processes import free_port
    from fastraft.verify.nemesis import NodeProcs
    from fastraft.verify.pki import RunPKI
    from fastraft.verify.proxy import Proxies

    pki = RunPKI(tmp_path, 3)
    assert pki.tls_config().cert_for(4) == "pki/node4.pem"
    procs = NodeProcs(tmp_path, "cluster.toml", str(tmp_path / "data"), [1, 2, 3], pki=pki)
    procs.add(4, "127.0.0.1:1", "127.0.0.1:2", ["127.0.0.1:3"])
    assert (tmp_path / "pki" / "node4.pem").exists() and (tmp_path / "pki" / "node4.key").exists()
    server = TLSFrameServer(tmp_path / "pki")          # node 2's stand-in; any node's will do
    px = Proxies({}, tls=pki.proxy_tls).start()
    try:
        addr = asyncio.run_coroutine_threadsafe(
            px.add(4, ("127.0.0.1", free_port()), server.addr), px.loop).result(10)
        d = Dialler(addr, tls.peer_client_context(*_node_files(tmp_path / "pki", 1)), to=4)
        assert d.welcomed()
        d.close()
        assert px.tls_stats() == {4: {"handshakes": 1, "refused": 0}}
    finally:
        px.close()
        server.close()
    # a second run in the same --out reuses the PKI (and issues what is missing)
    (tmp_path / "pki" / "node3.pem").unlink()
    (tmp_path / "pki" / "node3.key").unlink()
    again = RunPKI(tmp_path, 3)
    assert (tmp_path / "pki" / "node3.pem").exists()
    assert again.client_tls() is again.client_tls()      # one context, shared


@pytest.mark.slow
def test_tls_member_fault_replace_then_grow(tmp_path, capsys, monkeypatch):
    """The member fault under --tls: nodes added with ``fastraft node --join`` into a TLS
    cluster (their certificates issued by the run) must be listed, catch up behind their
    TLS-terminating proxies and be promoted; every check passes. Behind --run-slow (~30 s)."""
    pytest.importorskip("cryptography")
    from fastraft.verify.membership import MemberFault

    monkeypatch.setattr(MemberFault, "SCRIPT", ("replace", "grow"))
    out = tmp_path / "run"
    code = main(["--tls", "--nemesis", "member,kill", "--duration", "15", "--seed", "11",
                 "--out", str(out), "--quiet", "0.4,0.8", "--fault", "0.7,1.2",
                 "--recover", "2", "--workers", "4", "--check-budget", "30", "--no-plot"])
    text = capsys.readouterr().out
    print(text)
    assert "verdict: OK" in text and code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fault_outcomes"].get("member_promoted", 0) >= 2, summary["fault_outcomes"]
    assert summary["members"]["ok"] and summary["replica_states"]["ok"]
