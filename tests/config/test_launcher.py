"""Tests of ``fastraft cluster`` (fastraft.launcher) with a stand-in node process, and of
``fastraft.processes`` (how the launcher, the verification runs and the harness start nodes).

Place in the architecture: process-level tests of the launcher alone. The real node is
replaced through FASTRAFT_LAUNCHER_NODE_CMD by a small script that records its pid and argv,
prints a line, and exits 0 on SIGTERM (or misbehaves on request), so signal handling,
stragglers and early exits are checked without any server code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastraft import launcher, processes
from fastraft.datadir import lock_data_dir
from fastraft.config import default_config, load_config, parse_config, render_config

FAKE_NODE = r'''
import json, os, signal, sys, time
node_id, config, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
mode = os.environ.get("FAKE_MODE", "")
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
signal.signal(signal.SIGINT, signal.SIG_IGN)   # only the launcher may stop us
with open(os.path.join(os.environ["FAKE_PIDS"], node_id + ".json.tmp"), "w") as f:
    json.dump({"pid": os.getpid(), "argv": sys.argv[1:], "pgid": os.getpgid(0)}, f)
os.replace(os.path.join(os.environ["FAKE_PIDS"], node_id + ".json.tmp"),
           os.path.join(os.environ["FAKE_PIDS"], node_id + ".json"))
print(f"fake node {node_id} up", file=sys.stderr, flush=True)
if mode == "exit-early" and node_id == "2":
    sys.exit(3)
if mode == "all-exit":
    sys.exit(0)
while True:
    time.sleep(0.05)
'''


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def is_stand_in(pid: int, tmp_path: Path) -> bool:
    """True when ``pid`` still runs this test's stand-in script (pids are reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(tmp_path / "fake_node.py").encode() in f.read()
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    extra = ""
    if proc is not None and proc.poll() is not None:
        extra = f" (launcher exited with {proc.returncode})"
    raise AssertionError(f"timed out waiting for {what}{extra}")


class Run:
    def __init__(self, tmp_path: Path, args: list[str], mode: str = "", grace: float = 10.0,
                 entry: tuple[str, ...] = ("-m", "fastraft.launcher")):
        self.pids_dir = tmp_path / "pids"
        self.pids_dir.mkdir(exist_ok=True)
        script = tmp_path / "fake_node.py"
        script.write_text(FAKE_NODE)
        env = dict(os.environ, FAKE_MODE=mode, FAKE_PIDS=str(self.pids_dir),
                   FASTRAFT_LAUNCHER_STOP_GRACE=str(grace),
                   FASTRAFT_LAUNCHER_NODE_CMD=json.dumps(
                       [sys.executable, str(script), "{id}", "{config}", "{data_dir}",
                        "{storage}"]))
        n = len(list(tmp_path.glob("launcher-*.out")))
        self.out_path = tmp_path / f"launcher-{n}.out"
        self.err_path = tmp_path / f"launcher-{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, *args], cwd=tmp_path, env=env,
                stdout=out, stderr=err)

    def err(self) -> str:
        return self.err_path.read_text()

    def children(self, n: int) -> dict[int, dict]:
        def ready():
            files = list(self.pids_dir.glob("*.json"))
            if len(files) < n:
                return None
            return {int(f.stem.split(".")[0]): json.loads(f.read_text()) for f in files}
        return wait_for(ready, 20, f"{n} fake nodes to start", self.proc)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"launcher did not exit: {self.err()!r}") from None
        return self.proc.returncode, self.out_path.read_text(), self.err()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run(tmp_path):
    runs: list[Run] = []

    def start(args, **kw):
        r = Run(tmp_path, args, **kw)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.kill()
        for f in r.pids_dir.glob("*.json"):  # no orphan stand-ins, whatever failed
            pid = json.loads(f.read_text())["pid"]
            if alive(pid) and is_stand_in(pid, tmp_path):  # never a reused pid
                os.kill(pid, signal.SIGKILL)


def test_node_command_is_the_contract(monkeypatch):
    monkeypatch.delenv("FASTRAFT_LAUNCHER_NODE_CMD", raising=False)
    assert launcher.node_command(2, "c.toml", "d") == [
        sys.executable, "-P", "-m", "fastraft", "node", "--id", "2", "--config", "c.toml",
        "--data-dir", "d"]
    assert launcher.node_command(1, "c.toml", "d", "sqlite")[-2:] == ["--storage", "sqlite"]


def test_node_command_never_imports_a_fastraft_from_the_cwd(monkeypatch, tmp_path):
    """Run from a source checkout (no compiled core there), a node must still import the
    installed package: the interpreter and flags of node_command() must keep the current
    directory off sys.path, both for ``-c`` code and for ``-m fastraft``."""
    monkeypatch.delenv("FASTRAFT_LAUNCHER_NODE_CMD", raising=False)
    import fastraft

    shadow = tmp_path / "fastraft"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("SHADOW = True\n__version__ = 'shadow'\n")
    (shadow / "__main__.py").write_text("print('shadow fastraft'); raise SystemExit(99)\n")
    argv = launcher.node_command(1, "c.toml", "d")
    interpreter = argv[:argv.index("-m")]
    probe = subprocess.run(
        [*interpreter, "-c", "import fastraft; print(fastraft.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert os.path.samefile(probe.stdout.strip(), fastraft.__file__)
    module = argv[:argv.index("fastraft") + 1]  # [python, flags..., "-m", "fastraft"]
    info = subprocess.run([*module, "info", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0, (info.stdout, info.stderr)
    assert json.loads(info.stdout)["version"] == fastraft.__version__


def test_parser_options():
    parser = argparse.ArgumentParser(prog="fastraft")
    sub = parser.add_subparsers(dest="command")
    launcher.add_cluster_parser(sub)
    args = parser.parse_args(["cluster"])
    assert (args.size, args.config, args.data_dir, args.storage) == (None, None, None, None)
    args = parser.parse_args(["cluster", "--size", "5", "--data-dir", "x", "--storage",
                              "sqlite"])
    assert (args.size, args.data_dir, args.storage) == (5, "x", "sqlite")
    with pytest.raises(SystemExit):
        parser.parse_args(["cluster", "--size", "3", "--config", "c.toml"])
    with pytest.raises(SystemExit):
        parser.parse_args(["cluster", "--storage", "rocks"])


@pytest.mark.parametrize("sig, entry", [
    (signal.SIGINT, ("-m", "fastraft.launcher")),
    (signal.SIGTERM, ("-m", "fastraft.launcher")),
    (signal.SIGINT, ("-m", "fastraft", "cluster")),  # the same through the fastraft command
], ids=["SIGINT", "SIGTERM", "cli-SIGINT"])
def test_signal_stops_every_node_cleanly(run, tmp_path, sig, entry):
    r = run(["--size", "3", "--data-dir", "data"], entry=entry)
    kids = r.children(3)
    assert sorted(kids) == [1, 2, 3]
    cfg_path = tmp_path / "data" / "cluster.toml"
    for i, kid in kids.items():
        assert kid["argv"] == [str(i), os.path.join("data", "cluster.toml"), "data", ""]
        assert kid["pgid"] == kid["pid"]  # own process group: Ctrl-C reaches the launcher only
        assert alive(kid["pid"])
    assert load_config(cfg_path) == default_config(3, data_dir="data")
    r.proc.send_signal(sig)
    code, out, err = r.finish()
    assert code == 0, err
    for kid in kids.values():
        assert not alive(kid["pid"])
    assert "client endpoints: 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003" in out
    assert ("fastraft put hello world --endpoints 127.0.0.1:7001,127.0.0.1:7002,"
            "127.0.0.1:7003") in out
    for i in (1, 2, 3):
        assert f"[node {i}] fake node {i} up" in err
        assert f"node {i} stopped (exit code 0)" in err
    assert f"{signal.Signals(sig).name} received: stopping 3 node(s)" in err


def test_straggler_is_killed_and_exit_is_nonzero(run):
    r = run(["--size", "2", "--data-dir", "data"], mode="ignore-term", grace=0.5)
    kids = r.children(2)
    r.proc.send_signal(signal.SIGINT)
    code, out, err = r.finish()
    assert code == 1
    assert "did not stop within 0.5 s: SIGKILL" in err
    for kid in kids.values():
        assert not alive(kid["pid"])


def test_second_signal_kills_at_once(run):
    r = run(["--size", "2", "--data-dir", "data"], mode="ignore-term", grace=60)
    kids = r.children(2)
    r.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT received" in r.err(), 10, "the first signal to be handled",
             r.proc)
    r.proc.send_signal(signal.SIGINT)
    code, out, err = r.finish(timeout=20)
    assert code == 1
    assert "second signal" in err
    for kid in kids.values():
        assert not alive(kid["pid"])


def test_a_node_that_exits_is_reported_and_the_others_keep_running(run):
    r = run(["--size", "3", "--data-dir", "data"], mode="exit-early")
    kids = r.children(3)
    wait_for(lambda: "exited on its own" in r.err(), 10, "the report of node 2's exit",
             r.proc)
    assert alive(kids[1]["pid"]) and alive(kids[3]["pid"])
    r.proc.send_signal(signal.SIGTERM)
    code, out, err = r.finish()
    assert code == 1  # one node did not stop cleanly
    assert "node 2 (pid" in err and "exited on its own with exit code 3; 2 node(s) keep " \
                                      "running" in err
    for kid in kids.values():
        assert not alive(kid["pid"])


def test_all_nodes_exiting_ends_the_launcher(run):
    r = run(["--size", "2", "--data-dir", "data"], mode="all-exit")
    code, out, err = r.finish()
    assert code == 0
    assert "every node has exited" in err


def test_config_file_and_storage_are_passed_through(run, tmp_path):
    cfg = parse_config(render_config(default_config(2, data_dir="elsewhere")))
    path = tmp_path / "my.toml"
    path.write_text(render_config(cfg))
    r = run(["--config", str(path), "--storage", "sqlite"])
    kids = r.children(2)
    assert kids[1]["argv"] == ["1", str(path), "elsewhere", "sqlite"]
    assert (tmp_path / "elsewhere").is_dir()
    assert not (tmp_path / "elsewhere" / "cluster.toml").exists()
    r.proc.send_signal(signal.SIGINT)
    assert r.finish()[0] == 0


def test_bad_config_is_a_usage_error(run, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[cluster]\nname = 3\n[[node]]\nid = 1\nraft = "h:1"\nclient = "h:2"\n')
    r = run(["--config", str(path)])
    code, out, err = r.finish()
    assert code == 2
    assert f"fastraft cluster: {path}: [cluster] name" in err
    r = run(["--size", "0"])
    code, out, err = r.finish()
    assert code == 2 and "--size" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_nodes_follow_a_killed_launcher(run):
    r = run(["--size", "2", "--data-dir", "data"])
    kids = r.children(2)
    r.kill()  # SIGKILL: no chance to clean up
    wait_for(lambda: not any(alive(k["pid"]) for k in kids.values()), 10,
             "the nodes to get SIGTERM when the launcher dies")


def started(r: Run) -> list[Path]:
    """The stand-ins this run's launcher started (their pid files)."""
    return list(r.pids_dir.glob("*.json"))


def stop(r: Run) -> tuple[int, str, str]:
    """SIGINT the launcher, wait for it, and forget its stand-ins (the next run counts anew)."""
    r.proc.send_signal(signal.SIGINT)
    result = r.finish()
    for f in started(r):
        f.unlink()
    return result


def test_a_fresh_data_dir_gets_the_file_written(run, tmp_path):
    r = run(["--size", "2", "--data-dir", "data"])
    r.children(2)
    code, out, err = stop(r)
    assert code == 0, err
    path = os.path.join("data", "cluster.toml")
    assert load_config(tmp_path / path) == default_config(2, data_dir="data")
    assert f"config {path} (written: the built-in local cluster" in out


def test_an_existing_file_is_kept_with_its_edits_across_restarts(run, tmp_path):
    r = run(["--size", "2", "--data-dir", "data"])
    r.children(2)
    assert stop(r)[0] == 0
    cfg_path = tmp_path / "data" / "cluster.toml"
    text = cfg_path.read_text()
    assert 'name = "fastraft-local"' in text and '"127.0.0.1:7002"' in text
    edited = (text.replace('name = "fastraft-local"', 'name = "my-edited-cluster"')
              .replace('"127.0.0.1:7002"', '"127.0.0.1:7302"')
              + "# my own notes\n")
    cfg_path.write_text(edited)
    path = os.path.join("data", "cluster.toml")
    for args in (["--data-dir", "data"],                 # without --size: used as is
                 ["--size", "2", "--data-dir", "data"]):  # a --size that agrees with it
        r = run(args)
        kids = r.children(2)
        assert kids[2]["argv"] == ["2", path, "data", ""]
        code, out, err = stop(r)
        assert code == 0, err
        assert cfg_path.read_text() == edited  # byte for byte: nothing rewritten
        assert "fastraft cluster 'my-edited-cluster': 2 node(s)" in out
        assert "node 2  client 127.0.0.1:7302" in out
        assert f"config {path} (kept: the existing file, used as is" in out
        assert "note:" not in err


def test_a_kept_file_naming_another_data_dir_gets_a_note(run, tmp_path):
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "data" / "cluster.toml"
    cfg_path.write_text(render_config(default_config(2, data_dir="elsewhere")))
    r = run(["--data-dir", "data"])
    kids = r.children(2)
    assert kids[1]["argv"] == ["1", os.path.join("data", "cluster.toml"), "data", ""]
    code, out, err = stop(r)
    assert code == 0, err
    assert "note: " in err and "'elsewhere'" in err
    assert not (tmp_path / "elsewhere").exists()


def test_a_size_that_contradicts_the_file_is_refused(run, tmp_path):
    r = run(["--size", "3", "--data-dir", "data"])
    r.children(3)
    assert stop(r)[0] == 0
    cfg_path = tmp_path / "data" / "cluster.toml"
    text = cfg_path.read_text()
    r = run(["--size", "5", "--data-dir", "data"])
    code, out, err = r.finish()
    assert code == 2
    path = os.path.join("data", "cluster.toml")
    assert err.count("\n") == 1 and err.startswith(f"fastraft cluster: {path} ")
    assert "3 node(s)" in err and "--size asks for 5" in err
    assert "edit" in err and "remove it" in err
    assert out == "" and started(r) == []
    assert cfg_path.read_text() == text


def test_an_invalid_existing_file_is_a_config_error(run, tmp_path):
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "data" / "cluster.toml"
    cfg_path.write_text('[cluster]\nname = "x"\n[[node]]\nid = 1\nraft = "h:1"\n')
    r = run(["--data-dir", "data"])
    code, out, err = r.finish()
    assert code == 2
    assert err.startswith(f"fastraft cluster: {os.path.join('data', 'cluster.toml')}: ")
    assert err.count("\n") == 1
    assert out == "" and started(r) == []
    assert cfg_path.read_text().endswith('raft = "h:1"\n')  # not replaced


def test_a_locked_data_dir_is_refused_before_anything_starts(run, tmp_path):
    fds = [lock_data_dir(str(tmp_path / "data" / "2")),
           lock_data_dir(str(tmp_path / "data" / "3"))]
    try:
        r = run(["--size", "3", "--data-dir", "data"])
        code, out, err = r.finish()
    finally:
        for fd in fds:
            os.close(fd)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fastraft cluster: ")
    pid = os.getpid()
    assert f"{os.path.join('data', '2')} (pid {pid})" in err
    assert f"{os.path.join('data', '3')} (pid {pid})" in err
    assert os.path.join("data", "1") not in err
    assert out == ""  # no banner
    assert started(r) == []
    assert not (tmp_path / "data" / "cluster.toml").exists()  # nothing written either
    r = run(["--size", "3", "--data-dir", "data"])  # the lock released: it starts
    r.children(3)
    assert stop(r)[0] == 0


# -- fastraft.processes: one way to start and stop node processes -----------------------------


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The operating system may offer the same free port twice in a row: a cluster given it
    twice would not start (the verify runs' own copy of free_port did hand it out twice)."""
    offered = iter([41001, 41001, 41002, 41001, 41003])

    class FakeSocket:
        def __init__(self, *a):
            self.port = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def bind(self, addr):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(processes.socket, "socket", FakeSocket)
    monkeypatch.setattr(processes, "_ports_given", set())
    assert [processes.free_port() for _ in range(3)] == [41001, 41002, 41003]


def test_free_port_gives_distinct_real_ports():
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == 50


def test_the_child_setup_imports_nothing(monkeypatch):
    """What runs between fork and exec may not import (another thread may hold the import
    lock): everything it calls is resolved in the parent (the verify runs' copy imported
    ctypes and resource there)."""
    calls = []
    setup = processes._child_setup(lambda *a: calls.append(("prctl", a)), 9,
                                   lambda *a: calls.append(("setrlimit", a)), 1, 4096)

    def no_import(*a, **kw):
        raise AssertionError(f"import between fork and exec: {a[0]}")

    monkeypatch.setattr("builtins.__import__", no_import)
    setup()
    monkeypatch.undo()
    assert calls == [("prctl", (1, 9, 0, 0, 0)), ("setrlimit", (1, (4096, 4096)))]
    assert processes._child_setup(None, None) is None


PROBE = r"""
import ctypes, os, resource
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)   # PR_GET_PDEATHSIG
print(os.getpgid(0) == os.getpid(), sig.value, resource.getrlimit(resource.RLIMIT_FSIZE)[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_spawn_own_group_death_signal_and_file_size_limit(tmp_path):
    import resource

    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    out = tmp_path / "out"
    for kw, expected in (({}, ["True", str(int(signal.SIGKILL)), str(unlimited)]),
                         ({"death_signal": signal.SIGTERM, "fsize_limit": 1 << 20},
                          ["True", str(int(signal.SIGTERM)), str(1 << 20)])):
        with open(out, "wb") as f:
            p = processes.spawn([sys.executable, "-c", PROBE], stdout=f, **kw)
        assert p.wait(30) == 0, out.read_text()
        assert out.read_text().split() == expected, out.read_text()


def test_node_argv():
    assert processes.node_argv(3, "c.toml", "d", "--rejoin", storage="wal") == [
        sys.executable, "-P", "-m", "fastraft", "node", "--id", "3", "--config", "c.toml",
        "--data-dir", "d", "--storage", "wal", "--rejoin"]


STUBBORN = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('up', flush=True); time.sleep(60)"
POLITE = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); " \
         "print('up', flush=True); time.sleep(60)"


def _started(code: str):
    p = processes.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"up\n"   # its SIGTERM handler is in place
    p.stdout.close()
    return p


def test_stop_waits_the_grace_period_then_kills_only_the_stragglers():
    polite, stubborn = _started(POLITE), _started(STUBBORN)
    t0 = time.monotonic()
    killed = processes.stop([polite, stubborn], 0.5)
    assert killed == [stubborn]
    assert 0.5 <= time.monotonic() - t0 < 10
    assert polite.returncode == 0 and stubborn.returncode == -signal.SIGKILL


def test_stop_resumes_a_paused_process_and_gives_up_when_interrupted():
    paused = _started(POLITE)
    paused.send_signal(signal.SIGSTOP)
    assert processes.stop([paused], 30, resume=True) == [] and paused.returncode == 0
    stubborn = _started(STUBBORN)
    t0 = time.monotonic()
    assert processes.stop([stubborn], 60, interrupted=lambda: True) == [stubborn]
    assert time.monotonic() - t0 < 10
    assert processes.kill(stubborn) == -signal.SIGKILL   # reaped already: just the code
