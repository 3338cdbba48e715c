"""Tests of the client over TLS (issue 14, client side): ``AsyncClient``/``Client`` with
``tls=`` or ``cacert=``/``cert=``/``key=``, and the CLI's ``--cacert``/``--cert``/``--key``
(and FASTRAFT_CACERT/FASTRAFT_CERT/FASTRAFT_KEY).

Place in the architecture: tests of ``fastraft.client`` (``aio``, ``_connection``,
``cli_cmds``) against the scripted fake nodes of ``fakenode.py`` serving TLS with contexts
from ``fastraft.tls`` and certificates from ``fastraft.certs.init_certs`` (the module is
skipped without the ``cryptography`` package). A node whose certificate is not trusted, or
does not name the address dialled, must fail a call at once with TLSError (not applied), not
retry it until the deadline nor report its outcome as unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("cryptography")

from fastraft.certs import init_certs  # noqa: E402
from fastraft.client import AsyncClient, Client  # noqa: E402
from fastraft.client.cli_cmds import add_client_parsers, run_client_command  # noqa: E402
from fastraft.errors import NotApplied, OutcomeUnknown, TLSError  # noqa: E402
from fastraft.tls import TLSFileError, client_context, client_server_context  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two development PKIs: ``ok`` (node certificates naming 127.0.0.1 and localhost) and
    ``elsewhere`` (naming only a host that is not the address dialled)."""
    base = tmp_path_factory.mktemp("pki")
    init_certs(str(base / "ok"), nodes=1)
    init_certs(str(base / "elsewhere"), nodes=1, hosts=("node1.example",))
    return base


def _server_ctx(d, require_client_cert: bool = False) -> ssl.SSLContext:
    return client_server_context(str(d / "node1.pem"), str(d / "node1.key"),
                                 str(d / "client-ca.pem") if require_client_cert else None)


def test_call_over_tls_with_cacert(fake, pki):
    ok = pki / "ok"

    async def go():
        async with fake.FakeCluster(3, ssl=_server_ctx(ok)) as cl:
            async with AsyncClient(cl.endpoints(), cacert=str(ok / "peer-ca.pem")) as c:
                assert c.tls is not None
                await c.put(b"k", b"v")
                assert await c.get(b"k") == b"v"
                assert (await c.status())[0]["reachable"]
            # An ssl.SSLContext given as such works the same.
            ctx = client_context(str(ok / "peer-ca.pem"))
            async with AsyncClient(cl.endpoints(), tls=ctx) as c:
                assert await c.get(b"k") == b"v"
    asyncio.run(go())


def test_sync_client_over_tls(fake, pki):
    ok = pki / "ok"
    srv = _Served(fake, _server_ctx(ok))
    try:
        with Client(srv.endpoints, cacert=ok / "peer-ca.pem", timeout=2) as c:
            c.put("a", "1")
            assert c.get("a") == b"1"
    finally:
        srv.close()


def test_client_certificate_when_the_node_requires_one(fake, pki):
    ok = pki / "ok"

    async def go():
        async with fake.FakeCluster(1, ssl=_server_ctx(ok, True)) as cl:
            async with AsyncClient(cl.endpoints(), cacert=str(ok / "peer-ca.pem"),
                                   cert=str(ok / "client.pem"),
                                   key=str(ok / "client.key")) as c:
                await c.put(b"k", b"v")
                assert await c.get(b"k") == b"v"
            seen = len(cl.requests())
            # Without a client certificate the node refuses the handshake: a definite
            # error at once, for a read and for a write (nothing was processed).
            async with AsyncClient(cl.endpoints(), cacert=str(ok / "peer-ca.pem"),
                                   deadline=10) as c:
                for call in (lambda: c.get(b"k"), lambda: c.put(b"k", b"w")):
                    t0 = time.monotonic()
                    with pytest.raises(TLSError) as ei:
                        await call()
                    assert time.monotonic() - t0 < 2.0
                    assert isinstance(ei.value, NotApplied)
                    assert not isinstance(ei.value, OutcomeUnknown)
                    assert "refused" in str(ei.value) and cl.endpoints()[0] in str(ei.value)
                assert c.retries == 0
            assert len(cl.requests()) == seen           # nothing reached the node
    asyncio.run(go())


def test_wrong_cacert_fails_at_once_with_a_definite_error(fake, pki):
    ok = pki / "ok"

    async def go():
        async with fake.FakeCluster(3, ssl=_server_ctx(ok)) as cl:
            # client-ca.pem did not sign the nodes' certificates.
            async with AsyncClient(cl.endpoints(), cacert=str(ok / "client-ca.pem"),
                                   deadline=10) as c:
                for call in (lambda: c.get(b"k"), lambda: c.put(b"k", b"v"), c.members):
                    t0 = time.monotonic()
                    with pytest.raises(TLSError) as ei:
                        await call()
                    assert time.monotonic() - t0 < 2.0      # a bound, not a speed claim
                    msg = str(ei.value)
                    assert "server's certificate was not trusted" in msg, msg
                    assert "certificate verify failed" in msg or "unable to get" in msg, msg
                    assert isinstance(ei.value, NotApplied)
                assert c.retries == 0
            assert not cl.requests()                    # nothing reached a node
    asyncio.run(go())


def test_name_mismatch_fails_definitely(fake, pki):
    other = pki / "elsewhere"

    async def go():
        async with fake.FakeCluster(1, ssl=_server_ctx(other)) as cl:
            # The certificate names node1.example only; the client dials 127.0.0.1.
            async with AsyncClient(cl.endpoints(), cacert=str(other / "peer-ca.pem"),
                                   deadline=10) as c:
                t0 = time.monotonic()
                with pytest.raises(TLSError) as ei:
                    await c.put(b"k", b"v")
                assert time.monotonic() - t0 < 2.0
                msg = str(ei.value)
                assert "not trusted" in msg and "mismatch" in msg.lower(), msg
            assert not cl.requests()
    asyncio.run(go())


def test_plaintext_client_has_no_tls(fake):
    async def go():
        async with fake.FakeCluster(1) as cl:
            async with AsyncClient(cl.endpoints()) as c:
                assert c.tls is None
                await c.put(b"k", b"v")
    asyncio.run(go())


def test_bad_tls_arguments(pki, tmp_path):
    ok = pki / "ok"
    ctx = client_context(str(ok / "peer-ca.pem"))
    with pytest.raises(TypeError):
        AsyncClient(["127.0.0.1:1"], tls=ctx, cacert=str(ok / "peer-ca.pem"))
    with pytest.raises(TypeError):
        AsyncClient(["127.0.0.1:1"], tls="not a context")
    with pytest.raises(TLSFileError, match="missing.pem"):
        AsyncClient(["127.0.0.1:1"], cacert=str(tmp_path / "missing.pem"))
    with pytest.raises(TLSFileError):
        AsyncClient(["127.0.0.1:1"], cert=str(ok / "client.pem"))     # no key


# -- the CLI ------------------------------------------------------------------------------------

class _Served:
    """A fake cluster served by an event loop in a thread (for the blocking client and the
    CLI, which run their own loops)."""

    def __init__(self, fake, ctx, size: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = fake.FakeCluster(size, ssl=ctx)
        self._run(self.cluster.__aenter__())
        self.endpoints = self.cluster.endpoints()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self._run(self.cluster.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(fake, pki):
    srv = _Served(fake, _server_ctx(pki / "ok", True))
    yield srv
    srv.close()


def cli(capsys, *argv):
    parser = argparse.ArgumentParser(prog="fastraft")
    add_client_parsers(parser.add_subparsers(dest="command"))
    rc = run_client_command(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def no_tls_env(monkeypatch):
    for v in ("FASTRAFT_CACERT", "FASTRAFT_CERT", "FASTRAFT_KEY"):
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def test_cli_flags(capsys, served, pki, no_tls_env):
    ok = pki / "ok"
    eps = ["--endpoints", ",".join(served.endpoints), "--timeout", "2"]
    tls = ["--cacert", str(ok / "peer-ca.pem"), "--cert", str(ok / "client.pem"),
           "--key", str(ok / "client.key")]
    assert cli(capsys, "put", "k", "v", *eps, *tls)[:2] == (0, "OK\n")
    assert cli(capsys, "get", "k", *eps, *tls)[:2] == (0, "v\n")
    rc, out, err = cli(capsys, "status", *eps, *tls)
    assert rc == 0, err
    rc, out, err = cli(capsys, "member", "list", *eps, *tls)
    assert rc == 0 and served.endpoints[0] in out, err
    # The wrong CA: exit 2 at once, one line saying the node's certificate was not trusted.
    t0 = time.monotonic()
    rc, out, err = cli(capsys, "put", "k", "w", *eps, "--cacert", str(ok / "client-ca.pem"),
                       "--cert", str(ok / "client.pem"), "--key", str(ok / "client.key"))
    assert time.monotonic() - t0 < 2.0
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "server's certificate was not trusted" in err and "(not applied)" in err, err


def test_cli_environment_defaults(capsys, served, pki, no_tls_env):
    ok = pki / "ok"
    no_tls_env.setenv("FASTRAFT_CACERT", str(ok / "peer-ca.pem"))
    no_tls_env.setenv("FASTRAFT_CERT", str(ok / "client.pem"))
    no_tls_env.setenv("FASTRAFT_KEY", str(ok / "client.key"))
    eps = ["--endpoints", ",".join(served.endpoints), "--timeout", "2"]
    assert cli(capsys, "put", "e", "1", *eps)[:2] == (0, "OK\n")
    assert cli(capsys, "get", "e", *eps)[:2] == (0, "1\n")
    # A flag wins over its variable.
    rc, _, err = cli(capsys, "get", "e", *eps, "--cacert", str(ok / "client-ca.pem"))
    assert rc == 2 and "not trusted" in err


@pytest.mark.parametrize("flag", ["--cacert", "--cert", "--key"])
def test_cli_unusable_file_is_exit_2_naming_it(capsys, tmp_path, flag, pki, no_tls_env):
    ok = pki / "ok"
    paths = {"--cacert": str(ok / "peer-ca.pem"), "--cert": str(ok / "client.pem"),
             "--key": str(ok / "client.key")}
    bad = tmp_path / "nope.pem"
    paths[flag] = str(bad)
    argv = [a for kv in paths.items() for a in kv]
    for cmd in (["get", "k"], ["put", "k", "v"], ["status"], ["member", "list"],
                ["bench", "--duration", "1"]):
        rc, out, err = cli(capsys, *cmd, "--endpoints", "127.0.0.1:1", *argv)
        assert rc == 2 and len(err.splitlines()) == 1 and str(bad) in err, (cmd, err)


def test_cli_subprocess_with_cacert(served, pki):
    ok = pki / "ok"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    env["FASTRAFT_CERT"] = str(ok / "client.pem")
    env["FASTRAFT_KEY"] = str(ok / "client.key")
    r = subprocess.run(
        [sys.executable, "-m", "fastraft", "put", "s", "x", "--endpoints",
         ",".join(served.endpoints), "--cacert", str(ok / "peer-ca.pem"), "--timeout", "2"],
        capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == "OK\n", r.stderr
