"""``fastraft cluster`` (fastraft.launcher) with real nodes: start, serve, Ctrl-C, exit 0.

Place in the architecture: an integration test of the launcher over real ``fastraft node``
processes (the stand-in node tests are in tests/config/test_launcher.py). The cluster runs on
free ports from a config file, so it never collides with a local cluster on 7001-7003.
One test runs the ``fastraft`` console script from a copy of the package's pure-Python sources
(a source checkout without the compiled core, as the README's quickstart has the user in)
and checks that every node runs the core the installed package reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fastraft
from fastraft.config import Config, NodeSpec, Tuning, render_config


def _three_nodes(tmp_path, harness, name: str) -> Config:
    specs = tuple(NodeSpec(i, ("127.0.0.1", harness.free_port()),
                           ("127.0.0.1", harness.free_port())) for i in (1, 2, 3))
    return Config(f"{name}-{tmp_path.name}", specs, Tuning(), data_dir=str(tmp_path / "d"))


def _launch(tmp_path, path):
    """``python -m fastraft.launcher --config path``: (process, out file, err file,
    report())."""
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastraft.launcher", "--config",
                                 str(path)], stdout=out, stderr=err, cwd=tmp_path)

    def report():
        return f"launcher stdout:\n{out_path.read_text()}\nstderr:\n{err_path.read_text()}"

    return proc, out_path, err_path, report


def test_launcher_runs_real_nodes_and_stops_them_cleanly(tmp_path, harness, wire):
    cfg = _three_nodes(tmp_path, harness, "launcher")
    specs = cfg.nodes
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    proc, out_path, err_path, report = _launch(tmp_path, path)
    try:

        def leader():
            roles = {}
            for spec in specs:
                try:
                    with wire.WireClient(spec.client_addr, 1.0) as c:
                        roles[spec.id] = wire.parse_status(c.status().values)["role"]
                except (OSError, ValueError):
                    return None
            leaders = [i for i, r in roles.items() if r == "leader"]
            return leaders[0] if len(leaders) == 1 else None

        lead = harness.wait_for(leader, 20, "a leader in the launched cluster", report)
        with wire.WireClient(cfg.node(lead).client_addr, 5.0) as c:
            session = c.register().expect_ok()
            assert c.put(session, 1, b"hello", b"world").ok
            assert c.get(b"hello").expect_ok() == b"world"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, report()
        out, err = out_path.read_text(), err_path.read_text()
        endpoints = ",".join(cfg.client_endpoints())
        assert f"fastraft put hello world --endpoints {endpoints}" in out
        for i in (1, 2, 3):
            assert f"node {i} stopped (exit code 0)" in err
            assert f"[node {i}] " in err
        assert (tmp_path / "d" / "1").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()  # the nodes follow (SIGTERM on the launcher's death, Linux)
            proc.wait()


def test_cluster_from_a_source_checkout_runs_the_installed_core(tmp_path, harness, wire):
    script = Path(sys.executable).with_name("fastraft")  # the console script of this install
    if not script.exists():
        pytest.skip("no fastraft console script beside the interpreter")
    neutral = tmp_path / "neutral"
    neutral.mkdir()
    info = subprocess.run([str(script), "info", "--json"], cwd=neutral, capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    installed = json.loads(info.stdout)
    # The "checkout": the package's sources without any compiled module. Its _core.py
    # stand-in fails to import, as a missing extension does: without it, an editable
    # install's import hook would find the source tree's compiled _core for the copy too.
    # Its version is marked, so a node running it is told apart whatever the cores.
    checkout = tmp_path / "checkout"
    shadow = checkout / "fastraft"
    shutil.copytree(Path(fastraft.__file__).parent, shadow,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    (shadow / "_core.py").write_text("raise ImportError('no compiled core in a checkout')\n")
    init = (shadow / "__init__.py").read_text()
    marked = re.sub(r"(?m)^__version__ = .*$", "__version__ = '0+checkout'", init)
    assert marked != init
    (shadow / "__init__.py").write_text(marked)
    probe = subprocess.run([sys.executable, "-c", "import fastraft, fastraft.core as c; "
                            "print(c.IMPLEMENTATION, fastraft.__version__)"],
                           cwd=checkout, capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["python", "0+checkout"], probe  # what nodes must not run

    specs = tuple(NodeSpec(i, ("127.0.0.1", harness.free_port()),
                           ("127.0.0.1", harness.free_port())) for i in (1, 2, 3))
    cfg = Config(f"checkout-{tmp_path.name}", specs, Tuning(), data_dir=str(tmp_path / "d"))
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONSAFEPATH", "FASTRAFT_LAUNCHER_NODE_CMD")}
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([str(script), "cluster", "--config", str(path)],
                                stdout=out, stderr=err, cwd=checkout, env=env)
    try:
        def report():
            return f"launcher stdout:\n{out_path.read_text()}\nstderr:\n{err_path.read_text()}"

        def statuses():
            found = {}
            for spec in specs:
                with wire.WireClient(spec.client_addr, 1.0) as c:
                    status = wire.parse_status(c.status().values)
                found[spec.id] = {"core": status["core"], "version": status["version"]}
            return found

        found = harness.wait_for(statuses, 30, "every launched node to answer status",
                                 report)
        expected = {"core": installed["core"], "version": installed["version"]}
        assert found == {1: expected, 2: expected, 3: expected}, report()
        for i in (1, 2, 3):
            assert f"[node {i}] " in err_path.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, report()
    finally:
        if proc.poll() is None:
            proc.kill()  # the nodes follow (SIGTERM on the launcher's death, Linux)
            proc.wait()


def test_launcher_runs_a_tls_cluster_and_prints_the_client_flags(tmp_path, harness):
    """The quick start of the README's TLS section: ``fastraft certs init``, a config file
    beside the certificates with the printed [tls] table, ``fastraft cluster``; the client
    commands it prints work as printed, and so does ``fastraft status``."""
    pytest.importorskip("cryptography")
    from fastraft.certs import init_certs, tls_table

    pki = tmp_path / "pki"
    init_certs(str(pki), nodes=3)
    path = pki / "cluster.toml"
    path.write_text(render_config(_three_nodes(tmp_path, harness, "launcher-tls"))
                    + tls_table())
    proc, out_path, err_path, report = _launch(tmp_path, path)
    try:
        def printed(prefix):
            for line in out_path.read_text().splitlines():
                if line.strip().startswith(prefix):
                    return line.split("fastraft ", 1)[1].split()
            return None

        put = harness.wait_for(lambda: printed("try:  fastraft put"), 20, "the summary",
                               report)
        assert put[put.index("--cacert") + 1] == str(pki / "peer-ca.pem")
        assert put[put.index("--cert") + 1] == str(pki / "client.pem")

        def run(args):
            return subprocess.run([sys.executable, "-m", "fastraft", *args],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)

        harness.wait_for(lambda: run(put).returncode == 0, 30, "the printed put to work",
                         report)
        get = printed("fastraft get")
        assert run(get).stdout.strip() == "world"
        flags = put[put.index("--endpoints"):]
        status = run(["status"] + flags)
        assert status.returncode == 0 and status.stdout.count("leader") >= 1, status
        plain = run(["status", flags[0], flags[1]])      # no TLS flags: refused, exit != 0
        assert plain.returncode != 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, report()
        assert "TLS on both ports" in err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
