"""Tests of the client commands (put, get, del, cas, scan, status, bench): outputs and exit
codes, against a real cluster.

Place in the architecture: tests of ``fastraft.client.cli_cmds`` and ``bench``. The commands
are run through a parser built here with ``add_client_parsers`` (what ``fastraft.cli`` does),
so they are tested whether or not the lead has wired them in yet.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import pytest

from fastraft.client.bench import Histogram
from fastraft.client.cli_cmds import add_client_parsers, run_client_command


def cli(capsys, *argv, stdin: bytes | None = None):
    parser = argparse.ArgumentParser(prog="fastraft")
    add_client_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        rc = run_client_command(args)
    finally:
        if stdin is not None:
            sys.stdin = old
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def eps(real_cluster):
    return ["--endpoints", ",".join(real_cluster.endpoints())]


def test_put_get_del_exit_codes(capsys, eps):
    assert cli(capsys, "put", "cli/a", "hello", *eps)[:2] == (0, "OK\n")
    assert cli(capsys, "get", "cli/a", *eps)[:2] == (0, "hello\n")
    assert cli(capsys, "get", "cli/a", "--stale", *eps)[0] in (0, 1)   # may lag
    rc, out, err = cli(capsys, "get", "cli/none", *eps)
    assert rc == 1 and out == "" and "not found" in err
    assert cli(capsys, "del", "cli/a", *eps)[:2] == (0, "deleted\n")
    assert cli(capsys, "del", "cli/a", *eps)[:2] == (1, "not found\n")


def test_json_output(capsys, eps):
    assert cli(capsys, "put", "cli/j", "1", "--json", *eps)[0] == 0
    rc, out, _ = cli(capsys, "get", "cli/j", "--json", *eps)
    assert rc == 0 and json.loads(out) == {"key": "cli/j", "found": True, "value": "1"}
    rc, out, _ = cli(capsys, "get", "cli/jj", "--json", *eps)
    assert rc == 1 and json.loads(out)["found"] is False
    rc, out, _ = cli(capsys, "scan", "cli/j", "--json", *eps)
    assert rc == 0 and json.loads(out) == {"count": 1, "items": [{"key": "cli/j",
                                                                  "value": "1"}]}
    rc, out, _ = cli(capsys, "status", "--json", *eps)
    nodes = json.loads(out)
    assert rc == 0 and len(nodes) == 3 and all(n["reachable"] for n in nodes)


def test_json_of_writes_and_of_a_binary_key(capsys, eps):
    """The exact JSON documents of put, del, cas and scan, for a key that is not UTF-8."""
    def js(*argv):
        rc, out, _ = cli(capsys, *argv, "--encoding", "hex", "--json", *eps)
        return rc, out

    key = '"key": null, "key_b64": "amIv/w=="'
    assert js("put", "6a622fff", "01") == (0, '{"ok": true, %s}\n' % key)
    assert js("scan", "6a622f") == (
        0, '{"count": 1, "items": [{%s, "value": "\\u0001"}]}\n' % key)
    assert js("del", "6a622fff") == (0, '{%s, "deleted": true}\n' % key)
    assert js("del", "6a622fff") == (1, '{%s, "deleted": false}\n' % key)
    assert js("cas", "6a622fff", "02", "--absent") == (0, '{%s, "swapped": true}\n' % key)
    assert js("cas", "6a622fff", "03", "--absent") == (1, '{%s, "swapped": false}\n' % key)


def test_cas_and_stdin(capsys, eps):
    assert cli(capsys, "cas", "cli/c", "new", "--absent", *eps)[:2] == (0, "swapped\n")
    assert cli(capsys, "cas", "cli/c", "x", "--absent", *eps)[:2] == (1, "compare failed\n")
    assert cli(capsys, "cas", "cli/c", "new", "-", *eps, stdin=b"\x00\xffbin")[0] == 0
    rc, out, _ = cli(capsys, "get", "cli/c", "--json", *eps)
    assert rc == 0 and json.loads(out)["value_b64"] == "AP9iaW4="
    assert cli(capsys, "put", "cli/s", "-", *eps, stdin=b"from stdin")[0] == 0
    assert cli(capsys, "get", "cli/s", *eps)[1] == "from stdin\n"
    assert cli(capsys, "cas", "cli/s", "nope", "x", *eps)[0] == 1


def test_scan_text(capsys, eps):
    for k in ("b", "a", "c"):
        cli(capsys, "put", f"cli/scan/{k}", k.upper(), *eps)
    rc, out, _ = cli(capsys, "scan", "cli/scan/", *eps)
    assert rc == 0 and out == "cli/scan/a\tA\ncli/scan/b\tB\ncli/scan/c\tC\n"
    rc, out, _ = cli(capsys, "scan", "cli/scan/", "--limit", "1", *eps)
    assert out == "cli/scan/a\tA\n"


def test_status_text_lists_unreachable_nodes(capsys, real_cluster):
    eps = real_cluster.endpoints() + ["127.0.0.1:1"]
    rc, out, _ = cli(capsys, "status", "--endpoints", ",".join(eps), "--timeout", "1")
    lines = out.splitlines()
    # a leader and a quorum (3 of 4) answered, one node did not: degraded, exit 1
    assert rc == 1 and lines[0].split()[:3] == ["ID", "ENDPOINT", "ROLE"]
    assert sum(" leader " in ln for ln in lines[:-1]) == 1
    assert "127.0.0.1:1" in lines[-2] and "no (" in lines[-2]
    assert lines[-1].startswith("degraded: leader node ")
    assert "3 of 4 nodes answered" in lines[-1] and "no answer from 127.0.0.1:1" in lines[-1]


def test_errors_exit_2(capsys):
    rc, out, err = cli(capsys, "status", "--endpoints", "127.0.0.1:1", "--json")
    assert rc == 2 and all(not n["reachable"] for n in json.loads(out))
    rc, out, err = cli(capsys, "put", "k", "v", "--endpoints", "127.0.0.1:1", "--timeout",
                       "0.2", "--json")
    assert rc == 2 and "not applied" in err
    assert json.loads(out)["outcome"] == "not_applied"
    rc, _, err = cli(capsys, "get", "k", "--config", "/nonexistent.toml")
    assert rc == 2 and "nonexistent" in err


def test_config_file_endpoints(capsys, real_cluster):
    rc, out, _ = cli(capsys, "get", "cli/none", "--config", real_cluster.config_path)
    assert rc == 1


def test_bench_json(capsys, eps):
    rc, out, err = cli(capsys, "bench", *eps, "--duration", "1.5", "--concurrency", "8",
                       "--ratio", "1:1", "--key-count", "50", "--json")
    s = json.loads(out)
    assert rc == 0 and s["ops"] > 0 and s["errors"] == {}
    assert s["reads"] > 0 and s["writes"] > 0
    assert set(s["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "max"}
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert "ops/s" in err                     # the progress line


def test_histogram_percentiles():
    h = Histogram()
    h.add_many([i / 1e6 for i in range(1, 10001)])   # 1 us .. 10 ms
    assert abs(h.percentile(50) - 5e-3) / 5e-3 < 0.01
    assert abs(h.percentile(99) - 9.9e-3) / 9.9e-3 < 0.01
    assert h.percentile(100) == h.max == 10e-3


def test_through_the_fastraft_command(real_cluster):
    """The same commands as a user runs them (``python -m fastraft ...``), when the lead's
    cli.py has them wired in."""
    import subprocess

    from fastraft import cli as fcli

    if "add_client_parsers" not in open(fcli.__file__).read():
        pytest.skip("fastraft.cli does not dispatch the client commands yet")
    eps = ",".join(real_cluster.endpoints())

    def fr(*args, stdin=b""):
        p = subprocess.run([sys.executable, "-m", "fastraft", *args, "--endpoints", eps],
                           input=stdin, capture_output=True, timeout=60)
        return p.returncode, p.stdout

    assert fr("put", "cmd/a", "-", stdin=b"1 2 3") == (0, b"OK\n")
    assert fr("get", "cmd/a") == (0, b"1 2 3\n")
    assert fr("get", "cmd/b")[0] == 1
    assert fr("cas", "cmd/a", "x", "y")[0] == 1
    rc, out = fr("status", "--json")
    assert rc == 0 and len(json.loads(out)) == 3
