"""``fastraft watch``, ``lease grant|keepalive|revoke``, ``put --lease`` and ``lock`` as
subprocesses against real node processes: watch lines (text and JSON) until SIGINT (exit
130), the lease commands and a key that goes with its lease, ``keepalive --forever``, lock
running its command with FASTRAFT_FENCE and its exit status, two ``fastraft lock`` on one name
serialized with increasing fences, a lost lock stopping its command, Ctrl-C stopping it, and
the refusals (an unknown lease, a TTL out of range, a compacted start revision, usage errors:
exit 2 with one clear line).

Place in the architecture: integration tests (tests/integration) of
``fastraft.client.cli_coord`` and ``cli_cmds`` (``put --lease``) through ``fastraft.cli``,
each command in its own process; the cluster is the harness's (``harness.Cluster``, free
ports), the checks use the blocking ``Client``. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from fastraft import Client
from fastraft_test_waiting import wait_until  # tests/conftest.py loads it

DEADLINE = 30.0
LOCKS = b"fastraft/lock/"
FASTRAFT = [sys.executable, "-P", "-m", "fastraft"]


@pytest.fixture(scope="module")
def cluster(harness, tmp_path_factory):
    c = harness.Cluster(tmp_path_factory.mktemp("cli-coord"))
    try:
        c.start()
        c.leader()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def eps(cluster):
    return ["--endpoints", ",".join(cluster.endpoints())]


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.endpoints()) as c:
        yield c


def fr(*args, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``fastraft ARGS`` in its own process: the CompletedProcess (text)."""
    return subprocess.run(FASTRAFT + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


class Running:
    """``fastraft ARGS`` running in its own process, its output lines read by a thread."""

    def __init__(self, *args, cwd=None) -> None:
        self.proc = subprocess.Popen(FASTRAFT + [str(a) for a in args], text=True, cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = DEADLINE) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from {self.proc.args[3:]} in {timeout} s; stderr "
                                 f"so far: {self._stderr_if_ended()}") from None

    def _stderr_if_ended(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else "(running)"

    def interrupt(self, sig=signal.SIGINT) -> tuple[int, str]:
        """Send ``sig``; (exit code, stderr)."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(DEADLINE)
        return rc, self.proc.stderr.read()

    def wait(self) -> tuple[int, str]:
        rc = self.proc.wait(DEADLINE)
        return rc, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def running():
    made: list[Running] = []

    def start(*args, cwd=None) -> Running:
        r = Running(*args, cwd=cwd)
        made.append(r)
        return r

    yield start
    for r in made:
        r.close()


def test_watch_prints_each_change_until_ctrl_c(client, eps, running, tmp_path):
    client.put("cw/old", "0")
    old = client.get_item("cw/old")[2]
    text = running("watch", "cw/", "--rev", old, *eps, cwd=tmp_path)
    js = running("watch", "cw/", "--rev", old, "--json", *eps, cwd=tmp_path)
    client.put("cw/a", "hello world")
    client.put("elsewhere", "x")
    client.delete("cw/a")
    rev_a = old + 1
    lines = [text.line() for _ in range(3)]
    assert lines[0] == f"put\tcw/old\t0\t(rev {old})"
    assert lines[1].startswith("put\tcw/a\thello world\t(rev ")
    assert lines[2].startswith("delete\tcw/a\t(rev ")
    revs = [int(line.rsplit(" ", 1)[1].rstrip(")")) for line in lines]
    assert revs[0] == old and rev_a <= revs[1] < revs[2]
    objs = [json.loads(js.line()) for _ in range(3)]
    assert objs == [{"type": "put", "key": "cw/old", "value": "0", "revision": old},
                    {"type": "put", "key": "cw/a", "value": "hello world",
                     "revision": revs[1]},
                    {"type": "delete", "key": "cw/a", "value": None, "revision": revs[2]}]
    for r in (text, js):
        rc, err = r.interrupt()
        assert rc == 130 and err == ""


def test_watch_from_now_sees_later_writes(client, eps, running, tmp_path):
    w = running("watch", "cwn/", *eps, cwd=tmp_path)
    n = 0

    def a_line():
        nonlocal n
        n += 1
        client.put("cwn/k", str(n))     # until the watch (started at some point) shows one
        try:
            return w.lines.get(timeout=0.2)
        except queue.Empty:
            return None

    first = wait_until(a_line, DEADLINE, "the watch to print a write made after it began")
    assert first.startswith("put\tcwn/k\t")
    assert w.interrupt()[0] == 130


def test_lease_commands_and_a_key_put_with_a_lease(client, eps, tmp_path):
    r = fr("lease", "grant", 30, *eps, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r
    lease = int(r.stdout)
    assert fr("put", "cl/k", "v", "--lease", lease, *eps, cwd=tmp_path).stdout == "OK\n"
    assert client.get("cl/k") == b"v"
    r = fr("lease", "keepalive", lease, *eps, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "30\n")
    r = fr("lease", "keepalive", lease, "--json", *eps, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"lease": lease, "ttl": 30.0}
    r = fr("lease", "grant", "2.5", "--json", *eps, cwd=tmp_path)
    other = json.loads(r.stdout)
    assert r.returncode == 0 and other["ttl"] == 2.5 and other["lease"] > lease

    r = fr("lease", "revoke", lease, *eps, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "revoked\n")
    assert client.get("cl/k") is None                  # the key went with its lease
    assert fr("get", "cl/k", *eps, cwd=tmp_path).returncode == 1
    r = fr("lease", "revoke", lease, *eps, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, "not found\n")
    r = fr("lease", "revoke", other["lease"], "--json", *eps, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"lease": other["lease"],
                                                          "revoked": True}


def test_keepalive_forever_keeps_a_lease_until_interrupted(client, eps, running, tmp_path):
    lease = client.lease_grant(1)
    client.put("clf/k", "v", lease=lease)
    k = running("lease", "keepalive", lease, "--forever", *eps, cwd=tmp_path)
    assert k.line() == "1"
    t0 = time.monotonic()

    def kept_for_3_ttls():     # the key must stay while renewed, well past its 1 s TTL
        assert client.get("clf/k") == b"v", "the lease expired while --forever renewed it"
        return time.monotonic() - t0 > 3.0

    wait_until(kept_for_3_ttls, DEADLINE, "three TTLs to pass", interval=0.1)
    rc, err = k.interrupt()
    assert rc == 130 and err == ""
    wait_until(lambda: client.get("clf/k") is None, DEADLINE,
               "the key to go once its lease is no longer renewed")


def test_lock_runs_the_command_with_the_fence_and_its_exit_status(client, eps, tmp_path):
    r = fr("lock", "cjob", *eps, "--", "sh", "-c", 'echo "fence=$FASTRAFT_FENCE"; exit 3',
           cwd=tmp_path)
    assert r.returncode == 3 and r.stderr == "", r
    fence = int(r.stdout.strip().split("=")[1])
    assert fence > 0
    # options after NAME, before --
    r = fr("lock", "cjob", "--ttl", "2", *eps, "--", "sh", "-c", 'echo "$FASTRAFT_FENCE"',
           cwd=tmp_path)
    assert r.returncode == 0 and int(r.stdout) > fence
    r = fr("lock", "cjob", *eps, "--", "sh", "-c", "kill -TERM $$", cwd=tmp_path)
    assert r.returncode == 128 + signal.SIGTERM
    assert client.scan_items(LOCKS + b"cjob/") == []    # released every time
    r = fr("lock", "cjob", *eps, "--", "no-such-command-here", cwd=tmp_path)
    assert r.returncode == 127 and "no-such-command-here: command not found" in r.stderr


def test_two_locks_on_one_name_are_serialized(client, eps, running, tmp_path):
    log = tmp_path / "log"
    go = tmp_path / "go"
    script = ('echo "start $FASTRAFT_FENCE" >> log; '
              'while [ ! -f go ]; do sleep 0.02; done; echo "end $FASTRAFT_FENCE" >> log')
    a = running("lock", "cser", *eps, "--", "sh", "-c", script, cwd=tmp_path)
    wait_until(lambda: log.exists() and "start" in log.read_text(), DEADLINE,
               "the first command to start")
    b = running("lock", "cser", *eps, "--", "sh", "-c", script, cwd=tmp_path)
    wait_until(lambda: len(client.scan_items(LOCKS + b"cser/")) == 2, DEADLINE,
               "the second fastraft lock to queue")
    assert log.read_text().count("start") == 1      # it waits while the first holds
    go.touch()
    assert a.wait()[0] == 0 and b.wait()[0] == 0
    words = [line.split() for line in log.read_text().splitlines()]
    assert [w[0] for w in words] == ["start", "end", "start", "end"]
    f1, f2 = int(words[0][1]), int(words[2][1])
    assert words[1][1] == str(f1) and words[3][1] == str(f2) and f2 > f1
    assert client.scan_items(LOCKS + b"cser/") == []


LONG = ["sh", "-c", "echo started; while :; do sleep 0.05; done"]


def test_a_lost_lock_stops_the_command(client, eps, running, tmp_path):
    r = running("lock", "clost", "--ttl", "1", *eps, "--", *LONG, cwd=tmp_path)
    assert r.line() == "started"
    (key, _v, _rev), = client.scan_items(LOCKS + b"clost/")
    assert client.lease_revoke(int(key[-16:], 16)) is True     # the lock's lease goes
    rc, err = r.wait()
    assert rc == 2 and "fastraft lock: lost the lock 'clost'" in err
    assert "SIGTERM" in err and "Traceback" not in err


def test_ctrl_c_stops_the_command_and_releases_the_lock(client, eps, running, tmp_path):
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        r = running("lock", "cint", *eps, "--", *LONG, cwd=tmp_path)
        assert r.line() == "started"
        assert len(client.scan_items(LOCKS + b"cint/")) == 1
        rc, err = r.interrupt(sig)
        assert rc == code and "Traceback" not in err, err
        assert client.scan_items(LOCKS + b"cint/") == []


def test_refusals_exit_2_with_one_clear_line(client, eps, tmp_path):
    def refused(*args, says: str):
        r = fr(*args, cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr, r
        assert "Traceback" not in r.stderr and r.stdout == "", r
        return r

    r = refused("put", "cr/k", "v", "--lease", 987654321, *eps,
                says="fastraft put: lease 987654321 does not exist")
    assert "not applied" in r.stderr and len(r.stderr.splitlines()) == 1
    assert client.get("cr/k") is None
    refused("lease", "keepalive", 987654321, *eps,
            says="fastraft lease keepalive: lease 987654321 does not exist")
    for ttl in ("0", "0.5", "-3", "soon"):
        refused("lease", "grant", ttl, *eps, says="expected a number of seconds from 1 to")
    refused("lock", "cr", "--ttl", "0.5", *eps, "--", "true",
            says="expected a number of seconds from 1 to")
    refused("lock", "cr", *eps, says="no COMMAND given")
    refused("lock", "cr", "--ttl", "3", *eps, "true", says="COMMAND goes after --")
    refused("lock", "cr", *eps, "--", says="no COMMAND given")
    refused("put", "cr/k", "v", "--lease", "0", *eps, says="expected an integer >= 1")
    refused("watch", "cr/", "--rev", "0", *eps, says="expected an integer >= 1")
    refused("lease", "revoke", "x", *eps, says="expected an integer >= 1")
    assert client.scan_items(LOCKS + b"cr/") == []


def test_no_node_answering_is_exit_2(harness, tmp_path):
    nowhere = ["--endpoints", f"127.0.0.1:{harness.free_port()}", "--timeout", "0.5"]
    for args in (["watch", "cr/", "--rev", "3"], ["watch", "cr/"], ["lease", "grant", "5"],
                 ["lock", "cr"]):
        # the options before lock's "--" (after it they would be the command's)
        tail = ["--", "touch", "ran"] if args[0] == "lock" else []
        r = fr(*args, *nowhere, *tail, cwd=tmp_path)
        assert r.returncode == 2 and "no node reachable" in r.stderr, r
        assert r.stderr.startswith(f"fastraft {' '.join(args[:2 if args[0] == 'lease' else 1])}:")
    assert "the command was not run" in r.stderr and not (tmp_path / "ran").exists()


def test_a_compacted_start_revision_is_refused(harness, tmp_path):
    c = harness.Cluster(tmp_path / "small", size=1, tuning={"watch_history": 2})
    try:
        c.start()
        c.leader()
        with Client(c.endpoints()) as cl:
            for i in range(10):
                cl.put(f"cc/{i}", "v")
        r = fr("watch", "cc/", "--rev", 1, "--endpoints", c.endpoints()[0], cwd=tmp_path)
        assert r.returncode == 2 and "fastraft watch: " in r.stderr
        assert "compacted" in r.stderr and len(r.stderr.splitlines()) == 1, r
    finally:
        c.close()


def test_watch_and_lock_are_registered_in_the_help():
    r = subprocess.run(FASTRAFT + ["--help"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ))
    for cmd in ("watch", "lease", "lock"):
        assert f"\n    {cmd} " in r.stdout
