"""Tests of the integration harness and the wire client against a stand-in node.

Place in the architecture: tests of test infrastructure (harness.py, wire.py, conftest.py).
The stand-in is a small script that answers the client protocol (status, register, put, get)
from a dict, exits 0 on SIGTERM and keeps a marker in its data directory, so process
management, status polling, leader detection and log reporting are checked without the
server. The real nodes are exercised by test_smoke.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastraft import codec
from fastraft.core import encode_frame

FAKE_NODE = r'''
import os, signal, socketserver, sys, threading
from fastraft import codec
from fastraft.config import load_config
from fastraft.core import FrameDecoder, encode_frame

node_id, config_path, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = load_config(config_path)
me = cfg.node(node_id)
mine = os.path.join(data_dir, str(node_id))
print(f"fake node {node_id} starting, data existed: {os.path.exists(mine)}", flush=True)
os.makedirs(mine, exist_ok=True)
open(os.path.join(mine, "marker"), "w").close()
leader_file = os.path.join(os.path.dirname(config_path), "leader")
store, lock, applied = {}, threading.Lock(), [0]

def role():
    try:
        lead, term = open(leader_file).read().split()
    except (FileNotFoundError, ValueError):
        return "follower", 1
    return ("leader" if int(lead) == node_id else "follower"), int(term)

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        dec = FrameDecoder()
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            for body in dec.feed(data):
                try:
                    req = codec.decode_request(body, codec.Limits(), len(body))
                except codec.InvalidRequest as e:
                    self.request.sendall(encode_frame(codec.encode_response(
                        codec.unpack(body)[0], codec.ST_INVALID, str(e))))
                    continue
                except Exception as e:
                    print(f"closing a connection: {e}", flush=True)
                    return
                r, term = role()
                if req.op == codec.OP_STATUS:
                    out = [codec.ST_OK, [node_id, r, term, 0, applied[0], applied[0],
                                          applied[0], "python", "asyncio", "fake"]]
                elif r != "leader":
                    out = [codec.ST_NOT_LEADER, 0, None]
                elif req.op == codec.OP_REGISTER:
                    out = [codec.ST_OK, 7]
                elif req.op == codec.OP_PUT:
                    with lock:
                        store[req.key] = req.value
                        applied[0] += 1
                    out = [codec.ST_OK, None]
                elif req.op == codec.OP_GET:
                    out = [codec.ST_OK, store.get(req.key)]
                else:
                    out = [codec.ST_ERROR, "not in the stand-in"]
                self.request.sendall(encode_frame(codec.encode_response(req.req_id, *out)))

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

server = Server(me.client, Handler)
signal.signal(signal.SIGTERM, lambda *a: (print("SIGTERM: bye", flush=True), os._exit(0)))
print(f"fake node {node_id} listening on {me.client_addr}", flush=True)
server.serve_forever()
'''


@pytest.fixture
def fake_cluster(cluster_factory, tmp_path):
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE)

    def cmd(i, config, data_dir):
        return [sys.executable, str(script), str(i), config, data_dir]

    def make(size=3, **kw):
        return cluster_factory(size=size, node_cmd=cmd, **kw)

    return make


def set_leader(c, node_id: int, term: int) -> None:
    path = Path(c.config_path).with_name("leader")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{node_id} {term}")
    os.replace(tmp, path)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_start_ports_config_and_status(fake_cluster):
    c = fake_cluster(3, tuning={"election_timeout_ms": 300}, storage="sqlite")
    ports = {n.spec.client[1] for n in c.nodes.values()} | {
        n.spec.raft[1] for n in c.nodes.values()}
    assert len(ports) == 6
    assert c.config.tuning.storage == "sqlite"
    assert c.config.tuning.election_timeout_ms == 300
    assert c.config.cluster_name.startswith("itest-")
    for i, n in c.nodes.items():
        assert n.running and alive(n.pid)
        assert n.client_addr == c.config.node(i).client_addr
        assert n.raft_addr == c.config.node(i).raft_addr
        assert n.data_dir == os.path.join(c.config.data_dir, str(i))
        assert f"fake node {i} listening on {n.client_addr}" in n.log_text()
        s = c.status(i)
        assert s["id"] == i and s["role"] == "follower" and s["version"] == "fake"


def test_raft_listen_ports_for_a_proxy(fake_cluster):
    c = fake_cluster(2, raft_listen=True)
    for n in c.nodes.values():
        assert n.spec.raft_listen is not None and n.spec.raft_listen != n.spec.raft
    assert len({p for n in c.nodes.values()
                for p in (n.spec.raft[1], n.spec.client[1], n.spec.raft_listen[1])}) == 6
    assert "raft_listen = " in Path(c.config_path).read_text()


def test_clusters_get_distinct_names_and_ports(fake_cluster):
    a = fake_cluster(1)
    b = fake_cluster(1)
    assert a.config.cluster_name != b.config.cluster_name
    assert a.node(1).client_addr != b.node(1).client_addr


def test_leader_and_wait_applied(fake_cluster, wire):
    c = fake_cluster(3)
    assert c.current_leader() is None
    set_leader(c, 2, 5)
    assert c.leader(timeout=5) == 2
    with pytest.raises(AssertionError, match=r"leader of the highest term other than "
                                             r"node\(s\) \[2\]"):
        c.leader(timeout=0.2, exclude=[2])
    set_leader(c, 3, 6)
    assert c.leader(timeout=5, exclude=[2]) == 3
    set_leader(c, 2, 7)
    cl = c.client(2)
    session = cl.register().expect_ok()
    assert cl.put(session, 1, "k", "v").ok
    assert cl.get(b"k").expect_ok() == b"v"
    assert cl.get("absent") == wire.Reply(codec.ST_OK, [None])
    assert c.client(1).put(session, 2, b"k", b"w").status == codec.ST_NOT_LEADER
    c.wait_applied(1, ids=[2])
    with pytest.raises(AssertionError) as info:
        c.wait_applied(1, ids=[1], timeout=0.3)
    text = str(info.value)
    assert "nodes [1] to apply index 1" in text
    for i in (1, 2, 3):  # the log tails of every node follow
        assert f"fake node {i} listening" in text


def test_wire_client_invalid_and_hostile_input(fake_cluster, wire):
    c = fake_cluster(1)
    cl = c.client(1)
    reply = cl.call(codec.OP_GET, 12, False)  # a key must be bytes
    assert reply.status == codec.ST_INVALID and reply.status_name == "INVALID"
    assert cl.status().ok  # the connection stays open after an invalid request
    bad = c.client(1)
    bad.send_raw(encode_frame(b"\xc1"))  # not msgpack
    assert bad.wait_closed(timeout=5)
    assert "closing a connection" in c.node(1).log_text()
    with pytest.raises(ValueError):
        wire.parse_status([1, 2])
    with pytest.raises(ValueError):
        wire.parse_status([[1, 2]])


def test_kill_terminate_restart_wipe(fake_cluster):
    c = fake_cluster(3)
    pid1 = c.node(1).pid
    assert c.kill(1) == -signal.SIGKILL
    assert not alive(pid1) and c.node(1).pid is None and c.status(1) is None
    assert c.terminate(2) == 0
    assert "SIGTERM: bye" in c.node(2).log_text()
    c.restart(1)
    c.restart(2, clean=False)
    assert c.status(1) is not None and c.status(2) is not None
    assert c.node(1).exit_codes == [-signal.SIGKILL]
    assert "data existed: True" in c.node(1).log_text()
    c.wipe(3)
    assert c.node(3).exit_codes == [-signal.SIGKILL]
    assert c.node(3).log_text().count("data existed: False") == 2  # first start and wipe
    assert c.node(3).log_text().count("=== harness: starting node 3") == 2
    codes = c.stop()
    assert codes == {1: 0, 2: 0, 3: 0}
    assert all(not n.running for n in c.nodes.values())


def test_pause_and_resume(fake_cluster):
    c = fake_cluster(2)
    c.pause(1)
    assert c.status(1) is None  # not even asked: a paused node answers nothing
    with open(f"/proc/{c.node(1).pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "T"
    c.resume(1)
    c.wait_for(lambda: c.status(1), 5, "node 1 to answer after SIGCONT")
    c.pause(2)
    assert c.terminate(2) == 0  # SIGTERM reaches a paused node through SIGCONT


def test_close_kills_everything_even_paused(fake_cluster):
    c = fake_cluster(3)
    c.pause(2)
    pids = [n.pid for n in c.nodes.values()]
    c.close()
    assert not any(alive(p) for p in pids)
    c.close()  # twice is fine


def test_wait_for_names_what_and_returns_the_value(harness):
    assert harness.wait_for(lambda: 42, 1, "x") == 42
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for the moon"):
        harness.wait_for(lambda: False, 0.2, "the moon")
    assert time.monotonic() - t0 >= 0.2


def test_a_node_that_dies_at_start_fails_fast(cluster_factory):
    def cmd(i, config, data_dir):
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(2)"]

    t0 = time.monotonic()
    with pytest.raises(AssertionError) as info:
        cluster_factory(1, node_cmd=cmd)
    assert "node 1 exited with code 2 while starting" in str(info.value)
    assert "boom" in str(info.value)
    assert time.monotonic() - t0 < 10



def test_a_failing_test_gets_the_node_logs_in_its_report(tmp_path):
    """Run a failing test that uses cluster_factory in a child pytest (with copies of this
    directory's conftest, harness and wire) and check its report carries the node logs and
    leaves no process behind."""
    here = Path(__file__).parent
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("conftest.py", "harness.py", "wire.py"):
        (proj / name).write_text((here / name).read_text())
    (proj / "test_fails.py").write_text(
        "import sys\n"
        "CODE = 'import os, sys, time; print(\"stand-in\", os.getpid(), flush=True); "
        "time.sleep(60)'\n"
        "def test_fails(cluster_factory, tmp_path):\n"
        "    c = cluster_factory(2, start=False,\n"
        "                        node_cmd=lambda i, f, d: [sys.executable, '-c', CODE])\n"
        "    c.start(wait=False)\n"
        "    for i in (1, 2):\n"
        "        c.wait_for(lambda: '\\nstand-in ' in c.node(i).log_text(), 10, 'the log')\n"
        "    assert False, 'deliberate failure'\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--import-mode=importlib", str(proj)],
        cwd=proj, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "deliberate failure" in text
    assert "cluster logs (itest-" in text
    pids = [int(line.split()[1]) for line in text.splitlines()
            if line.startswith("stand-in ")]
    assert len(pids) == 2, text
    assert not any(alive(p) for p in pids)
