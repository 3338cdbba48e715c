"""compose.yaml, the image's configs and the Dockerfile, read without building anything.

Place in the architecture: tests only (no root, no buildah: they run everywhere). compose.yaml
is written in the JSON subset of YAML plus whole-line comments, so it is read here with
``json`` (and checked against PyYAML too where it is installed); the configs it and the image
mount are validated with ``fastraft.config.load_config`` and checked for what a container
needs (listening on all interfaces, advertising names that resolve, ports published on the
numbers advertised, one volume per node at the data directory). docker/healthcheck.py is run
against a small local HTTP server.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading

import pytest

from fastraft.config import WILDCARD_HOSTS, load_config
from fastraft.launcher import STOP_GRACE_S


def read_compose(path) -> dict:
    """compose.yaml as data: whole-line ``#`` comments dropped, the rest parsed as JSON."""
    with open(path, encoding="utf-8") as f:
        text = "".join(line for line in f if not line.lstrip().startswith("#"))
    return json.loads(text)


def dockerfile_stages(path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuation lines
    joined and comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith("#"):
                continue
            logical += line.rstrip("\n")
            if logical.endswith("\\"):
                logical = logical[:-1] + " "
                continue
            words = logical.strip().split(None, 1)
            logical = ""
            if not words:
                continue
            instr, args = words[0].upper(), (words[1] if len(words) > 1 else "")
            if instr == "FROM":
                stages.append([])
            stages[-1].append((instr, " ".join(args.split())))
    return stages


def _instr(stage, name: str) -> list[str]:
    return [args for instr, args in stage if instr == name]


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert m and text, f"not a duration: {text!r}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


@pytest.fixture(scope="module")
def compose(repo):
    return read_compose(repo / "compose.yaml")


def test_compose_is_the_same_document_for_a_yaml_parser(repo, compose):
    try:
        import yaml
    except ImportError:
        # json parsed it, and JSON is YAML: nothing more to learn without PyYAML.
        return
    with open(repo / "compose.yaml", encoding="utf-8") as f:
        assert yaml.safe_load(f) == compose


def test_compose_runs_every_node_of_the_config_it_mounts(repo, compose):
    """One service per node of the mounted config, each `fastraft node --id N --config P`
    with P the config (a file of the repository, valid), its own named volume at the
    config's data_dir (the image's VOLUME), a stop grace period longer than the launcher's
    and a health check URL on its own metrics port."""
    services = compose["services"]
    assert len(services) == 3
    stages = dockerfile_stages(repo / "Dockerfile")
    image_volumes = [json.loads(v) if v.startswith("[") else v.split()
                     for v in _instr(stages[-1], "VOLUME")]
    seen_ids, seen_volumes, configs = set(), set(), set()
    for name, svc in services.items():
        cmd = svc["command"]
        assert cmd[0] == "node" and cmd[1] == "--id" and cmd[3] == "--config", cmd
        node_id, cfg_path = int(cmd[2]), cmd[4]
        binds = [v.split(":") for v in svc["volumes"] if v.startswith("./")]
        [(src, dest, mode)] = [b for b in binds if b[1] == cfg_path]
        assert mode == "ro"
        cfg = load_config(repo / src)
        configs.add(src)
        node = cfg.node(node_id)
        seen_ids.add(node_id)
        named = [v.split(":") for v in svc["volumes"] if not v.startswith(("./", "/"))]
        assert [dest for _, dest in named] == [cfg.data_dir], svc["volumes"]
        assert [cfg.data_dir] in image_volumes
        assert named[0][0] in compose["volumes"]
        seen_volumes.add(named[0][0])
        assert _seconds(svc["stop_grace_period"]) > STOP_GRACE_S
        assert svc["environment"]["FASTRAFT_HEALTH_URLS"] == \
            f"http://127.0.0.1:{node.metrics[1]}/health"
        assert svc["image"] == services["node1"]["image"]
    assert len(configs) == 1
    assert seen_ids == cfg.voters
    assert len(seen_volumes) == 3 and set(compose["volumes"]) == seen_volumes


def test_compose_nodes_listen_everywhere_and_advertise_their_service_names(repo, compose):
    """Inside a container a node must listen on all interfaces (peers and clients come from
    other containers), advertise its service name (what resolves on the compose network),
    and the host ports published must be the ones it advertises (clients follow them)."""
    for name, svc in compose["services"].items():
        cfg_src = next(v.split(":")[0] for v in svc["volumes"] if v.startswith("./"))
        node = load_config(repo / cfg_src).node(int(svc["command"][2]))
        assert svc["hostname"] == name
        assert node.raft[0] == name and node.client[0] == name
        for addr in (node.raft_bind, node.client_bind, node.metrics):
            assert addr[0] in WILDCARD_HOSTS, addr
        published = {}
        for spec in svc["ports"]:
            host_ip, host_port, ctr_port = spec.split(":")
            assert host_ip == "127.0.0.1"
            published[int(ctr_port)] = int(host_port)
        assert published == {node.client_bind[1]: node.client[1],
                             node.metrics[1]: node.metrics[1]}


def test_the_image_config_serves_outside_the_container(repo, docker_helper):
    """docker/cluster.toml, the image's default: clients and metrics on all interfaces,
    advertised at 127.0.0.1 on the same port (published on the same number), peers on the
    container's loopback; its data_dir is the image's VOLUME; the Dockerfile exposes exactly
    those ports, ships the file where its default command reads it, and the health check's
    default URLs are the nodes' metrics ports."""
    cfg = load_config(repo / "docker" / "cluster.toml")
    assert len(cfg.nodes) == 3
    for n in cfg.nodes:
        assert n.client_bind == ("0.0.0.0", n.client[1]) and n.client[0] == "127.0.0.1"
        assert n.metrics[0] == "0.0.0.0"
        assert n.raft_bind[0] == "127.0.0.1"
    runtime = dockerfile_stages(repo / "Dockerfile")[-1]
    exposed = {int(p) for args in _instr(runtime, "EXPOSE") for p in args.split()}
    assert exposed == {p for n in cfg.nodes for p in (n.client[1], n.metrics[1])}
    assert "docker/cluster.toml /etc/fastraft/cluster.toml" in _instr(runtime, "COPY")
    [cmd] = _instr(runtime, "CMD")
    assert json.loads(cmd) == ["cluster", "--config", "/etc/fastraft/cluster.toml"]
    assert [json.dumps([cfg.data_dir])] == _instr(runtime, "VOLUME")
    assert docker_helper("healthcheck").DEFAULT_URLS == [
        f"http://127.0.0.1:{n.metrics[1]}/health" for n in cfg.nodes]


def test_dockerfile_shape(repo):
    """Two stages from debian:bookworm-slim; the compiler, headers and PIP_CERT only in the
    build stage; the runtime stage runs as a non-root user with a health check and a stop
    signal, and installs nothing but Debian's python3."""
    build, runtime = dockerfile_stages(repo / "Dockerfile")
    assert _instr(build, "FROM") == ["debian:bookworm-slim AS build"]
    assert _instr(runtime, "FROM") == ["debian:bookworm-slim"]
    build_runs = " ".join(_instr(build, "RUN"))
    for pkg in ("python3", "python3-venv", "python3-dev", "gcc"):
        assert pkg in shlex.split(build_runs), pkg
    assert "PIP_CERT" in _instr(build, "ARG")            # declared, no default
    assert "--cert" in build_runs
    runtime_text = " ".join(args for _, args in runtime)
    for absent in ("gcc", "python3-dev", "PIP_CERT", "COPY . ", "/src"):
        assert absent not in runtime_text, absent
    [user] = _instr(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    [health] = _instr(runtime, "HEALTHCHECK")
    assert "healthcheck.py" in health and "--timeout" in health
    assert _instr(runtime, "STOPSIGNAL") == ["SIGTERM"]


# -- docker/healthcheck.py ------------------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 503
        body = b'{"health": %s}' % (b"true" if code == 200 else b"false")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _healthcheck(repo, *urls, env=None):
    # -I: the image runs it with the venv's python; it needs nothing but the standard library.
    return subprocess.run([sys.executable, "-I", str(repo / "docker" / "healthcheck.py"), *urls],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, **(env or {})))


def test_healthcheck_passes_only_when_every_node_answers_200(repo, health_server):
    ok = _healthcheck(repo, f"{health_server}/health")
    assert ok.returncode == 0 and " 200 " in ok.stdout, ok.stdout + ok.stderr
    bad = _healthcheck(repo, f"{health_server}/health", f"{health_server}/sick")
    assert bad.returncode == 1 and " 503 " in bad.stdout, bad.stdout + bad.stderr
    from fastraft.processes import free_port
    down = _healthcheck(repo, f"http://127.0.0.1:{free_port()}/health")
    assert down.returncode == 1 and "refused" in down.stdout.lower(), down.stdout


def test_healthcheck_reads_its_urls_from_the_environment(repo, health_server):
    env = {"FASTRAFT_HEALTH_URLS": f"{health_server}/health,{health_server}/health"}
    ok = _healthcheck(repo, env=env)
    assert ok.returncode == 0 and ok.stdout.count(" 200 ") == 2, ok.stdout + ok.stderr
    env = {"FASTRAFT_HEALTH_URLS": f"{health_server}/health {health_server}/sick"}
    assert _healthcheck(repo, env=env).returncode == 1
