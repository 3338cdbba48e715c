"""The container image, built from the Dockerfile and run for real with buildah.

Place in the architecture: tests only. What a ``docker build`` / ``docker run`` would do is done
with buildah, which needs no daemon and no registry:

1. ``docker/make_base.py`` makes ``debian:bookworm-slim`` from this machine's apt mirror
   (``debootstrap --variant=minbase``), cached between runs (see below).
2. ``buildah bud --isolation chroot --format docker --layers`` builds the Dockerfile as
   ``fastraft:test`` (the docker format keeps the HEALTHCHECK). Behind a TLS-intercepting proxy
   the host's CA bundle (``$PIP_CERT``, else ``$REQUESTS_CA_BUNDLE``, else ``$SSL_CERT_FILE``)
   is mounted into the build and named with ``--build-arg PIP_CERT``.
3. ``buildah run --isolation chroot --network host`` runs containers of it: the image's own
   entrypoint and command (``fastraft cluster`` with the image's config, mounted over by the
   same config on free ports), a data volume, its HEALTHCHECK command, its STOPSIGNAL.

Everything buildah stores lives in the test's own storage, ``CACHE/storage``, beside the base
tree ``CACHE/bookworm-minbase-<mirror hash>-<ISO week>.tar``: CACHE is
``$FASTRAFT_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/fastraft-image`` (``~/.cache/fastraft-image``),
outside the checkout. The machine's own buildah/podman images are never touched; the test
prunes only its own storage (old builds), keeping the base, the build stage (its apt layer)
and the last image, so a run after a source change rebuilds only the pip install.

When it runs: on Linux, as root, with ``buildah`` and ``debootstrap`` installed. When they are
missing and ``CI=true`` or ``FASTRAFT_IMAGE_TEST_INSTALL=1``, it installs them with
``apt-get install -y buildah debootstrap``; otherwise it is skipped with the reason (pytest's
``-ra`` summary prints it). ``FASTRAFT_SKIP_IMAGE_TEST=1`` skips it on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fastraft.client.sync import Client
from fastraft.config import load_config, render_config
from fastraft.processes import free_port

pytestmark = pytest.mark.image

IMAGE = "fastraft:test"
BUILD_STAGE = "fastraft:test-build"
BASE = "debian:bookworm-slim"
#: How long a step may take before the test gives up (seconds).
BUILD_TIMEOUT = 1200
START_TIMEOUT = 60
#: The stop timeout docs/docker.md and compose.yaml give the container.
STOP_TIMEOUT = 20


# -- can this machine do it? ----------------------------------------------------------------

def _install_tools(missing: list[str]) -> str | None:
    """apt-get install the missing tools; None on success, else why not."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "buildah", "debootstrap"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:            # an old or empty package list: update once, retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"apt-get install buildah debootstrap failed: {' | '.join(tail)}"
    still = [t for t in missing if shutil.which(t) is None]
    return f"{', '.join(still)} still missing after apt-get install" if still else None


def why_not_here() -> str | None:
    """None when this machine can build and run the image, else the reason."""
    if os.environ.get("FASTRAFT_SKIP_IMAGE_TEST"):
        return "FASTRAFT_SKIP_IMAGE_TEST is set"
    if not sys.platform.startswith("linux"):
        return f"buildah with chroot isolation runs on Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root (debootstrap, and buildah's chroot isolation mounts)"
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if not missing:
        return None
    allowed = (os.environ.get("CI", "").lower() == "true"
               or os.environ.get("FASTRAFT_IMAGE_TEST_INSTALL") == "1")
    if not allowed or shutil.which("apt-get") is None:
        return (f"{' and '.join(missing)} not installed: apt-get install -y buildah "
                f"debootstrap (the test does it itself with CI=true or "
                f"FASTRAFT_IMAGE_TEST_INSTALL=1)")
    return _install_tools(missing)


# -- buildah in the test's own storage ------------------------------------------------------

class Buildah:
    """Runs buildah with ``CONTAINERS_STORAGE_CONF`` pointing at the test's own storage."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        conf = cache / "storage.conf"
        cache.mkdir(parents=True, exist_ok=True)
        conf.write_text(f'[storage]\ndriver = "overlay"\n'
                        f'graphroot = "{cache / "storage"}"\nrunroot = "{cache / "run"}"\n')
        self.env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf))
        self.timings: dict[str, float] = {}
        self.containers: list[str] = []

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(["buildah", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"buildah {' '.join(args[:4])} ... exited {proc.returncode}:\n"
                        + _tail(proc.stdout + proc.stderr, 40), pytrace=False)
        return proc

    def timed(self, what: str, argv: list[str], timeout: float) -> str:
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        self.timings[what] = time.monotonic() - start
        if proc.returncode != 0:
            pytest.fail(f"{what}: {' '.join(argv[:4])} ... exited {proc.returncode}:\n"
                        + _tail(proc.stdout + proc.stderr, 60), pytrace=False)
        return proc.stdout

    def container(self, image: str = IMAGE) -> str:
        name = f"fastraft-test-{os.getpid()}-{len(self.containers)}"
        self.run("from", "--name", name, image)
        self.containers.append(name)
        return name

    def inspect(self, image: str = IMAGE) -> dict:
        return json.loads(self.run("inspect", "--type", "image", image).stdout)

    def close(self) -> None:
        for name in self.containers:
            self.run("rm", name, check=False)


def _tail(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _ca_bundle() -> str | None:
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(var)
        if path and os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="module")
def buildah(docker_helper):
    reason = why_not_here()
    if reason:
        pytest.skip(f"container image not built: {reason}")
    make_base = docker_helper("make_base")
    b = Buildah(Path(make_base.default_cache_dir()))
    yield b
    b.close()


@pytest.fixture(scope="module")
def image(buildah, repo):
    """Build ``fastraft:test``; returns the image's Docker config (``buildah inspect``)."""
    buildah.timed("base", [sys.executable, str(repo / "docker" / "make_base.py")], 900)
    bud = ["buildah", "bud", "--isolation", "chroot", "--format", "docker", "--layers",
           "--force-rm"]
    ca = _ca_bundle()
    if ca:
        bud += ["--volume", f"{ca}:/run/fastraft-ca.crt:ro",
                "--build-arg", "PIP_CERT=/run/fastraft-ca.crt"]
    # The build stage gets a name of its own so that pruning keeps its cached layers.
    buildah.timed("build stage", bud + ["--target", "build", "-t", BUILD_STAGE, str(repo)],
                  BUILD_TIMEOUT)
    buildah.timed("image", bud + ["-t", IMAGE, str(repo)], BUILD_TIMEOUT)
    buildah.run("rmi", "--prune", check=False)
    print("image build timings: " + ", ".join(f"{k} {v:.1f} s"
                                              for k, v in buildah.timings.items()))
    return buildah.inspect()["Docker"]["config"]


# -- the tests ------------------------------------------------------------------------------

def test_image_config(image, repo):
    """Non-root, the default cluster's ports exposed, the data volume, the health check on
    /health, SIGTERM, and the default command running the shipped cluster config."""
    cfg = load_config(repo / "docker" / "cluster.toml")
    user = image.get("User") or "root"
    assert user.split(":")[0] not in ("", "0", "root"), user
    ports = {p for n in cfg.nodes for p in (n.client_bind[1], n.metrics[1])}
    assert set(image["ExposedPorts"]) == {f"{p}/tcp" for p in ports}
    assert cfg.data_dir in image["Volumes"]
    assert image["Healthcheck"]["Test"][0] == "CMD"
    assert image["Healthcheck"]["Test"][1:] == ["/opt/fastraft/bin/python",
                                                "/opt/fastraft/healthcheck.py"]
    assert image["StopSignal"] == "SIGTERM"
    assert image["Entrypoint"] + image["Cmd"] == [
        "fastraft", "cluster", "--config", "/etc/fastraft/cluster.toml"]


def test_runtime_has_no_compiler_pip_cache_or_sources(image, buildah):
    ctr = buildah.container()
    root = Path(buildah.run("mount", ctr).stdout.strip())
    try:
        site = root / "opt/fastraft/lib/python3.11/site-packages"
        assert list((site / "fastraft").glob("_core.cpython-*.so")), "no compiled core"
        found = [p for p in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/x86_64-linux-gnu-gcc-12",
                             "src", "root/.cache/pip", "opt/fastraft/bin/pip")
                 if (root / p).exists() or (root / p).is_symlink()]
        found += [str(p.relative_to(root)) for p in (root / "usr/include").glob("python3*")]
        found += [str(p.relative_to(root)) for p in site.glob("pip")]
        assert not found, f"the runtime image holds {found}"
        assert (root / "etc/fastraft/cluster.toml").is_file()
    finally:
        buildah.run("umount", ctr, check=False)


def test_the_installed_cython_core_runs(image, buildah):
    """``fastraft info`` in the image: the venv's package (not a source tree) with the
    Cython core."""
    ctr = buildah.container()
    run = ["run", "--isolation", "chroot", "--network", "host", ctr, "--"]
    info = json.loads(buildah.run(*run, "fastraft", "info", "--json").stdout)
    assert info["core"] == "cython", info
    where = buildah.run(*run, "python", "-c", "import fastraft; print(fastraft.__file__)")
    assert where.stdout.strip().startswith("/opt/fastraft/lib/"), where.stdout


def _on_free_ports(cfg):
    """``cfg`` with every port replaced by a free one (hosts kept: 0.0.0.0 stays)."""
    ports = {addr[1] for n in cfg.nodes for _, addr in n.addresses()}
    new = {p: free_port("0.0.0.0") for p in sorted(ports)}

    def move(addr):
        return None if addr is None else (addr[0], new[addr[1]])

    nodes = tuple(dataclasses.replace(
        n, raft=move(n.raft), client=move(n.client), raft_listen=move(n.raft_listen),
        client_listen=move(n.client_listen), metrics=move(n.metrics)) for n in cfg.nodes)
    return dataclasses.replace(cfg, nodes=nodes)


def _container_main_pid(top: int) -> int | None:
    """The container's main process: the first process under ``top`` (buildah run) that is
    not buildah's own (buildah-chroot-runtime, buildah-chroot-exec)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    queue = list(children.get(top, []))
    while queue:
        pid = queue.pop(0)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if not os.path.basename(argv0).startswith(b"buildah"):
            return pid
        queue += children.get(pid, [])
    return None


def _health(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _wait(what: str, cond, timeout: float, report) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{report()}", pytrace=False)
        time.sleep(0.2)


def test_default_command_runs_a_cluster_that_serves_and_stops_cleanly(image, buildah, repo,
                                                                         tmp_path):
    """The image's entrypoint and command with its config (on free ports), a data volume
    owned by the image's user: the cluster elects a leader, its HEALTHCHECK passes, a put
    from outside the container's processes through a non-loopback-bound address and a get
    with the container's own CLI work, and the image's STOPSIGNAL stops it with exit 0."""
    cfg = _on_free_ports(load_config(repo / "docker" / "cluster.toml"))
    conf = tmp_path / "cluster.toml"
    conf.write_text(render_config(cfg))
    data = tmp_path / "data"
    data.mkdir()
    uid, _, gid = image["User"].partition(":")
    os.chown(data, int(uid), int(gid or uid))
    ctr = buildah.container()
    buildah.run("config", "--env", "FASTRAFT_HEALTH_URLS=" + " ".join(
        f"http://127.0.0.1:{n.metrics[1]}/health" for n in cfg.nodes), ctr)
    # buildah 1.28 mounts an anonymous volume over the image's VOLUME instead of the -v given
    # for it about every other run (when another -v is given too): the working container
    # drops the VOLUME (the image keeps it, test_image_config), so only the -v is mounted.
    buildah.run("config", "--volume", f"{cfg.data_dir}-", ctr)
    out, err = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    argv = ["buildah", "run", "--isolation", "chroot", "--network", "host",
            "-v", f"{data}:{cfg.data_dir}", "-v", f"{conf}:/etc/fastraft/cluster.toml:ro",
            ctr, "--", *image["Entrypoint"], *image["Cmd"]]
    proc = subprocess.Popen(argv, stdout=out, stderr=err, env=buildah.env)

    def logs() -> str:
        return "\n".join(_tail(Path(f.name).read_text(), 30) for f in (out, err))

    health_urls = [f"http://127.0.0.1:{n.metrics[1]}/health" for n in cfg.nodes]
    try:
        _wait("every node healthy", lambda: proc.poll() is None and all(
            _health(u)[0] == 200 for u in health_urls), START_TIMEOUT, logs)
        check = buildah.run("run", "--isolation", "chroot", "--network", "host", ctr, "--",
                            *image["Healthcheck"]["Test"][1:], check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        # 127.0.0.2 reaches only a listener bound to all interfaces (client_listen 0.0.0.0).
        with Client([f"127.0.0.2:{n.client_bind[1]}" for n in cfg.nodes],
                    learn_members=False) as c:
            c.put(b"docker", b"works")
        got = buildah.run("run", "--isolation", "chroot", "--network", "host",
                          "-v", f"{conf}:/etc/fastraft/cluster.toml:ro", ctr, "--",
                          "fastraft", "get", "docker", "--config", "/etc/fastraft/cluster.toml")
        assert got.stdout.strip() == "works", got.stdout + got.stderr
        metrics = urllib.request.urlopen(
            f"http://127.0.0.2:{cfg.nodes[0].metrics[1]}/metrics", timeout=5).read()
        assert b"fastraft_server_has_leader 1.0" in metrics

        main = _container_main_pid(proc.pid)
        assert main is not None, "the container's main process was not found"
        os.kill(main, signal.Signals[image["StopSignal"]])
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"not stopped within {STOP_TIMEOUT} s of {image['StopSignal']}\n"
                        + logs(), pytrace=False)
        assert code == 0, f"buildah run exited {code}\n{logs()}"
        text = Path(err.name).read_text()
        for n in cfg.nodes:
            assert f"node {n.id} stopped (exit code 0)" in text, logs()
        assert sorted(os.listdir(data)) == sorted(str(n.id) for n in cfg.nodes)
        assert all(os.stat(data / str(n.id)).st_uid == int(uid) for n in cfg.nodes)
        down = buildah.run("run", "--isolation", "chroot", "--network", "host", ctr, "--",
                           *image["Healthcheck"]["Test"][1:], check=False)
        assert down.returncode == 1, down.stdout + down.stderr
    finally:
        if proc.poll() is None:
            main = _container_main_pid(proc.pid)
            if main is not None:
                os.kill(main, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=30)
        out.close()
        err.close()
