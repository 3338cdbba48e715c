"""The ``fastraft`` command line as a Unix tool: quiet exits on a closed pipe, one plain error
line (no Python exception names or tracebacks), usage errors from argparse, binary keys
(``--encoding``), ``get --raw``, escaped ``scan`` lines, ``status`` as a health check (summary
line and exit codes), the hint when the built-in cluster is not running, and ``bench``
failing fast and labelling its output.

Place in the architecture: tests of ``fastraft.cli``, ``fastraft.client.cli_cmds`` and
``fastraft.client.bench``. Commands run either in-process through ``fastraft.cli.main`` (output
captured by capsys) or as ``python -m fastraft`` subprocesses with real pipes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from fastraft import cli as fcli
from fastraft.client import AsyncClient
from fastraft.client.cli_cmds import escape, status_summary

SIGPIPE_EXIT = 141


def run(capsys, *argv):
    """``fastraft ARGV`` in-process: (exit code, stdout, stderr); usage errors included."""
    try:
        rc = fcli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def fr(*args, stdin: bytes = b"", timeout: float = 60):
    """``python -m fastraft ARGS`` as a subprocess: the CompletedProcess (bytes)."""
    return subprocess.run([sys.executable, "-m", "fastraft", *args], input=stdin,
                          capture_output=True, timeout=timeout)


def closed_pipe(*args, read_lines: int = 0, timeout: float = 60):
    """``python -m fastraft ARGS | head -N``: read ``read_lines`` lines of stdout, close it,
    and return (exit code, stderr text)."""
    p = subprocess.Popen([sys.executable, "-m", "fastraft", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(read_lines):
            assert p.stdout.readline(), "the command printed fewer lines than expected"
        p.stdout.close()
        err = p.stderr.read().decode("utf-8", "replace")
        rc = p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return rc, err


def assert_quiet(err: str) -> None:
    for bad in ("Traceback", "Exception ignored", "BrokenPipeError", "Error:"):
        assert bad not in err, err


@pytest.fixture(scope="module")
def eps(real_cluster):
    return ",".join(real_cluster.endpoints())


def _fill(endpoints: str, items: dict) -> None:
    async def go():
        async with AsyncClient(endpoints.split(","), keepalive_interval=None) as c:
            await asyncio.gather(*(c.put(k, v) for k, v in items.items()))
    asyncio.run(go())


# -- 4. a closed pipe ---------------------------------------------------------------------------

def test_wal_dump_into_a_closed_pipe_is_quiet(tmp_path):
    from fastraft.raft import EntryBatch
    from fastraft.storage.wal import WalStore

    with WalStore.open(tmp_path / "1" / "wal") as s:
        for i in range(1, 3001):          # ~200 KB of text: more than a pipe's buffer
            s.append(EntryBatch(i, [(1, b"x")]))
        s.sync()
    rc, err = closed_pipe("wal-dump", str(tmp_path / "1"), read_lines=1)
    assert rc == SIGPIPE_EXIT
    assert_quiet(err)
    assert err == ""


def test_client_commands_into_a_closed_pipe_are_quiet(eps):
    # The reader closes before the command writes (one large write of a whole scan may
    # complete into the pipe, so reading a line first would not always break it).
    _fill(eps, {f"pipe/{i:04d}".encode(): b"v" * 2000 for i in range(20)})
    rc, err = closed_pipe("scan", "", "--endpoints", eps)
    assert rc == SIGPIPE_EXIT and err == ""
    rc, err = closed_pipe("get", "pipe/0001", "--endpoints", eps)
    assert rc == SIGPIPE_EXIT and err == ""
    rc, err = closed_pipe("status", "--json", "--endpoints", eps)
    assert rc == SIGPIPE_EXIT and err == ""


def test_sim_info_and_bench_into_a_closed_pipe_are_quiet(eps):
    rc, err = closed_pipe("sim", "--seeds", "1", "--steps", "20", "--workers", "1")
    assert rc == SIGPIPE_EXIT and err == ""
    rc, err = closed_pipe("info")
    assert rc == SIGPIPE_EXIT and err == ""
    rc, err = closed_pipe("bench", "--endpoints", eps, "--duration", "0.5",
                          "--concurrency", "4", "--key-count", "20")
    assert rc == SIGPIPE_EXIT
    assert_quiet(err)
    assert "ops/s" in err                 # the progress lines still went to stderr


# -- 8. plain error lines, usage errors, bytes ------------------------------------------------

def test_bad_options_are_usage_errors(capsys):
    for argv, what in ((["get", "k", "--timeout", "0"], "--timeout"),
                       (["get", "k", "--timeout", "nan"], "--timeout"),
                       (["status", "--timeout", "-1"], "--timeout"),
                       (["get", "k", "--endpoints", "nonsense"], "bad endpoint 'nonsense'"),
                       (["scan", "--limit", "-5"], "--limit"),
                       (["bench", "--duration", "0"], "--duration"),
                       (["bench", "--concurrency", "0"], "--concurrency"),
                       (["bench", "--ratio", "x"], "--ratio"),
                       (["sim", "--steps", "0"], "--steps")):
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == "", argv
        assert err.startswith("usage: fastraft ") and what in err, (argv, err)
        assert "ValueError" not in err and "ProtocolError" not in err, err


def test_cas_usage(capsys):
    rc, out, err = run(capsys, "cas", "k", "only-one", "--endpoints", "127.0.0.1:1")
    assert rc == 2
    assert "usage: fastraft cas [options] KEY EXPECTED NEW\n" \
           "       fastraft cas --absent [options] KEY NEW" in err
    assert "cas takes KEY EXPECTED NEW" in err and "ValueError" not in err
    rc, _, err = run(capsys, "cas", "--absent", "k", "a", "b", "--endpoints", "127.0.0.1:1")
    assert rc == 2 and "cas --absent takes KEY NEW" in err


def test_help_texts(capsys):
    _, out, _ = run(capsys, "cas", "-h")
    assert out.startswith("usage: fastraft cas [options] KEY EXPECTED NEW\n")
    _, out, _ = run(capsys, "node", "-h")
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}\n" in out and "least severe" in out
    _, out, _ = run(capsys, "status", "-h")
    assert "exit status:\n  0  a leader answered and every node answered" in out
    _, out, _ = run(capsys, "-h")
    assert "141  standard output was closed early" in out
    _, out, _ = run(capsys, "get", "-h")
    assert "--encoding {utf8,hex,base64}" in out and "--raw" in out


def test_failures_are_one_plain_line(capsys):
    rc, out, err = run(capsys, "put", "k", "v", "--endpoints", "127.0.0.1:1",
                       "--timeout", "0.2")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fastraft put: ")
    assert err.rstrip().endswith("(not applied)") and "NotLeader" not in err
    assert "cluster" not in err            # explicit endpoints: no hint
    rc, out, err = run(capsys, "get", "k", "--endpoints", "127.0.0.1:1", "--timeout", "0.2",
                       "--json")
    assert rc == 2 and json.loads(out)["error"] == "NotLeader"      # the class in JSON only
    assert err.startswith("fastraft get: ") and "NotLeader" not in err
    rc, out, err = run(capsys, "get", "k", "--encoding", "hex")
    assert rc == 2 and err == "fastraft get: KEY 'k' is not hex (--encoding hex)\n"
    rc, out, err = run(capsys, "put", "k", "!!", "--encoding", "base64")
    assert rc == 2 and err.startswith("fastraft put: KEY 'k' is not base64")
    rc, out, err = run(capsys, "cas", "k", "-", "-", "--endpoints", "127.0.0.1:1")
    assert rc == 2 and err == "fastraft cas: only one value may be read from stdin ('-')\n"


def test_not_valid_utf8_key_is_taken_as_raw_bytes(eps):
    key = b"bin/\xff\xfe"
    p = fr("put", key, "v1", "--endpoints", eps)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    p = fr("get", key, "--json", "--endpoints", eps)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"key": None, "key_b64": "YmluL//+", "found": True,
                                    "value": "v1"}
    p = fr("get", key, "--endpoints", eps)
    assert (p.returncode, p.stdout) == (0, b"v1\n")
    p = fr("get", b"bin/\xff", "--endpoints", eps)
    assert p.returncode == 1 and p.stderr == b"fastraft get: bin/\\xff: not found\n"


def test_hex_and_base64_encodings(capsys, eps):
    key, value = b"\x00enc\xff", b"\x01\x02\n"
    assert run(capsys, "put", key.hex(), value.hex(), "--encoding", "hex",
               "--endpoints", eps)[:2] == (0, "OK\n")
    assert run(capsys, "get", key.hex(), "--encoding", "hex", "--endpoints", eps)[:2] == \
        (0, value.hex() + "\n")
    assert run(capsys, "get", "AGVuY/8=", "--encoding", "base64", "--endpoints", eps)[:2] \
        == (0, "AQIK\n")
    rc, out, _ = run(capsys, "scan", "00656e", "--encoding", "hex", "--endpoints", eps)
    assert (rc, out) == (0, f"{key.hex()}\t{value.hex()}\n")
    rc, out, _ = run(capsys, "cas", key.hex(), value.hex(), "abcd", "--encoding", "hex",
                     "--endpoints", eps)
    assert (rc, out) == (0, "swapped\n")
    rc, out, _ = run(capsys, "get", key.hex(), "--encoding", "hex", "--json",
                     "--endpoints", eps)
    assert json.loads(out) == {"key": None, "key_b64": "AGVuY/8=", "found": True,
                               "value_b64": "q80="}
    assert run(capsys, "del", key.hex(), "--encoding", "hex", "--endpoints", eps)[:2] == \
        (0, "deleted\n")


# -- 11. get --raw, scan escapes ----------------------------------------------------------------

def test_get_raw_prints_the_exact_bytes(eps):
    assert fr("put", "raw/a", "-", "--endpoints", eps, stdin=b"no newline").returncode == 0
    assert fr("get", "raw/a", "--endpoints", eps).stdout == b"no newline\n"
    p = fr("get", "raw/a", "--raw", "--endpoints", eps)
    assert (p.returncode, p.stdout) == (0, b"no newline")
    p = fr("get", "7261772f61", "--raw", "--encoding", "hex", "--endpoints", eps)
    assert (p.returncode, p.stdout) == (0, b"no newline")


def test_scan_escapes_what_would_break_its_lines(eps):
    _fill(eps, {b"esc/1": b"a\tb\nc\\d\x00\xff\xe2\x82\xac", b"esc/2\n": b"plain"})
    p = fr("scan", "esc/", "--endpoints", eps)
    assert p.returncode == 0
    assert p.stdout.decode("utf-8") == "esc/1\ta\\tb\\nc\\\\d\\x00\\xff\u20ac\nesc/2\\n\tplain\n"
    p = fr("scan", "esc/", "--json", "--endpoints", eps)
    items = json.loads(p.stdout)["items"]
    assert items[0]["value_b64"] and items[1] == {"key": "esc/2\n", "value": "plain"}


def test_escape():
    assert escape(b"plain text") == "plain text"
    assert escape(b"a\\b") == "a\\\\b"
    assert escape(b"\r\n\t\x7f\x1b") == "\\r\\n\\t\\x7f\\x1b"
    assert escape("\u00e9\u2028".encode()) == "\u00e9\\u2028"
    assert escape(b"\xc3") == "\\xc3"


# -- 10. status as a check ----------------------------------------------------------------------

def _node(i, role="follower", term=3, reachable=True):
    if not reachable:
        return {"endpoint": f"h:{i}", "reachable": False, "error": "refused"}
    return {"endpoint": f"h:{i}", "reachable": True, "id": i, "role": role, "term": term}


def test_status_summary_verdicts():
    s = status_summary([_node(1, "leader"), _node(2), _node(3)])
    assert s["exit"] == 0 and s["line"] == \
        "healthy: leader node 1 at h:1, term 3; 3 of 3 nodes answered (a quorum is 2)"
    s = status_summary([_node(1, "leader"), _node(2), _node(3, reachable=False)])
    assert s["exit"] == 1 and s["line"].startswith("degraded: leader node 1 at h:1")
    assert s["line"].endswith("2 of 3 nodes answered (a quorum is 2); no answer from h:3")
    s = status_summary([_node(1, "candidate", 7), _node(2, term=6), _node(3)])
    assert s["exit"] == 2 and s["line"].startswith("unavailable: no leader (highest term 7)")
    s = status_summary([_node(1, "leader"), _node(2, reachable=False),
                        _node(3, reachable=False)])
    assert s["exit"] == 2 and "1 of 3 nodes answered" in s["line"]     # a stale leader
    s = status_summary([_node(1, "leader", 4), _node(2, "leader", 5), _node(3)])
    assert s["leader"]["id"] == 2
    assert status_summary([_node(1, reachable=False)])["exit"] == 2


def test_status_exit_codes_against_a_cluster(capsys, real_cluster, eps):
    rc, out, _ = run(capsys, "status", "--endpoints", eps)
    lead = real_cluster.leader()
    assert rc == 0
    assert out.splitlines()[-1].startswith(f"healthy: leader node {lead} at ")
    rc, out, _ = run(capsys, "status", "--endpoints", eps, "--json")
    nodes = json.loads(out)              # still the list of nodes (compatible)
    assert rc == 0 and isinstance(nodes, list) and len(nodes) == 3
    rc, _, _ = run(capsys, "status", "--endpoints", eps + ",127.0.0.1:1", "--timeout", "1")
    assert rc == 1
    rc, _, _ = run(capsys, "status", "--endpoints", eps + ",127.0.0.1:1,127.0.0.1:2,"
                   "127.0.0.1:3", "--timeout", "1")
    assert rc == 2                       # 3 of 6 answered: no quorum


# -- the hint for the built-in cluster ------------------------------------------------------------

def test_hint_when_the_default_cluster_is_not_running(capsys, monkeypatch, harness):
    """The built-in endpoints are pointed at free ports (never the real 7001-7003)."""
    import dataclasses

    import fastraft.config as config

    ports = [harness.free_port() for _ in range(3)]   # nothing listens on them
    real = config.default_config

    def fake_default(*a, **kw):
        c = real(*a, **kw)
        nodes = tuple(dataclasses.replace(n, client=("127.0.0.1", p))
                      for n, p in zip(c.nodes, ports))
        return dataclasses.replace(c, nodes=nodes)

    monkeypatch.setattr(config, "default_config", fake_default)
    hint = "is a cluster running? start one with `fastraft cluster`"
    rc, _, err = run(capsys, "get", "k", "--timeout", "0.2")
    assert rc == 2 and err.count("\n") == 1 and err.rstrip().endswith(hint)
    rc, _, err = run(capsys, "put", "k", "v", "--timeout", "0.2")
    assert rc == 2 and "(not applied)" in err and hint in err
    rc, _, err = run(capsys, "status", "--timeout", "0.2")
    assert rc == 2 and hint in err
    rc, _, err = run(capsys, "bench", "--timeout", "0.2", "--duration", "5")
    assert rc == 2 and hint in err and "ops/s" not in err
    rc, _, err = run(capsys, "get", "k", "--timeout", "0.2",
                     "--endpoints", ",".join(f"127.0.0.1:{p}" for p in ports))
    assert rc == 2 and hint not in err


# -- bench ----------------------------------------------------------------------------------------

def test_bench_against_a_dead_cluster_fails_fast(capsys, harness):
    dead = f"127.0.0.1:{harness.free_port()}"
    t0 = time.monotonic()
    rc, out, err = run(capsys, "bench", "--endpoints", dead, "--duration", "5")
    assert rc == 2 and out == "" and time.monotonic() - t0 < 4
    assert err == f"fastraft bench: no node answered at {dead}\n"
    rc, out, err = run(capsys, "bench", "--endpoints", dead, "--json")
    assert rc == 2 and json.loads(out) == {"error": "BenchAborted",
                                           "message": f"no node answered at {dead}"}


def test_bench_progress_lines_and_labelled_leader(capsys, real_cluster, eps):
    rc, out, err = run(capsys, "bench", "--endpoints", eps, "--duration", "2",
                       "--concurrency", "4", "--key-count", "20", "--loop", "uvloop")
    lines = [ln for ln in err.splitlines() if "ops/s" in ln]
    assert rc == 0 and len(lines) == 2, err          # one a second, no stray last one
    assert all(" 0 ops/s" not in ln for ln in lines), err
    lead = real_cluster.leader()
    leader_line = [ln for ln in out.splitlines() if "leader" in ln]
    assert leader_line and leader_line[0].split(None, 1)[1] == (
        f"at start: node {lead} (term {real_cluster.status(lead)['term']}); "
        f"at end: node {lead} (term {real_cluster.status(lead)['term']})")


def test_bench_stops_when_the_cluster_dies(cluster_factory):
    c = cluster_factory(size=1)
    c.leader()
    p = subprocess.Popen([sys.executable, "-m", "fastraft", "bench", "--endpoints",
                          c.endpoints()[0], "--duration", "60", "--timeout", "0.5",
                          "--concurrency", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stderr.readline()
        assert "ops/s" in first, first
        c.kill(1)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=30)
        assert p.returncode == 2 and time.monotonic() - t0 < 15
        last = err.strip().splitlines()[-1]
        assert last.startswith("fastraft bench: no request succeeded for "), err
        assert_quiet(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
