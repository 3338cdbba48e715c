"""``fastraft cluster`` (fastraft.launcher) with real nodes: start, serve, Ctrl-C, exit 0.

Place in the architecture: an integration test of the launcher over real ``fastraft node``
processes (the stand-in node tests are in tests/config/test_launcher.py). The cluster runs on
free ports from a config file, so it never collides with a local cluster on 7001-7003.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from fastraft.config import Config, NodeSpec, Tuning, render_config


def test_launcher_runs_real_nodes_and_stops_them_cleanly(tmp_path, harness, wire):
    specs = tuple(NodeSpec(i, ("127.0.0.1", harness.free_port()),
                           ("127.0.0.1", harness.free_port())) for i in (1, 2, 3))
    cfg = Config(f"launcher-{tmp_path.name}", specs, Tuning(), data_dir=str(tmp_path / "d"))
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastraft.launcher", "--config",
                                 str(path)], stdout=out, stderr=err, cwd=tmp_path)
    try:
        def report():
            return f"launcher stdout:\n{out_path.read_text()}\nstderr:\n{err_path.read_text()}"

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
