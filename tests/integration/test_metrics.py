"""The metrics listener on real node processes (issue 15): ``/metrics`` in the Prometheus text
format with every name of the contract, ``/health`` and ``/ready`` following the cluster's
state (a leader losing its quorum, a follower losing its leader), 404 elsewhere, and hostile
input on the metrics port (garbage, huge headers, a silent client) that never disturbs the
node.

Place in the architecture: integration tests (tests/integration), real processes and sockets.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from fastraft_test_waiting import wait_until  # noqa: E402  (tests/conftest.py loads it)

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}

#: The names other tools rely on (the issue's contract).
NAMES = ["fastraft_server_is_leader", "fastraft_server_has_leader",
         "fastraft_server_leader_changes_seen_total", "fastraft_raft_term",
         "fastraft_raft_commit_index", "fastraft_raft_applied_index",
         "fastraft_proposals_committed_total", "fastraft_proposals_failed_total",
         "fastraft_proposals_pending", "fastraft_wal_fsync_duration_seconds_bucket",
         "fastraft_snapshot_duration_seconds_count", "fastraft_client_requests_total",
         "fastraft_client_request_duration_seconds_bucket", "fastraft_peer_sent_bytes_total",
         "fastraft_peer_received_bytes_total", "fastraft_peer_round_trip_time_seconds_bucket",
         "process_cpu_seconds_total", "process_resident_memory_bytes"]


def get(url: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def samples(text: str) -> dict:
    """``{sample name with labels: value}`` of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_names_values_and_help(cluster_factory):
    cl = cluster_factory(3, tuning=FAST, metrics=True)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    for i in range(1, 21):
        assert c.put(sid, i, b"k%d" % i, b"v").ok
    assert c.get(b"k1").ok
    n = cl.node(lead)
    others = [i for i in cl.ids if i != lead]

    def timed_heartbeats():
        # a heartbeat to each follower answered (the writes may all come before the first)
        code, headers, body = get(f"http://{n.metrics_addr}/metrics")
        text = body.decode()
        rtt = [f'fastraft_peer_round_trip_time_seconds_count{{to="{i}"}}' for i in others]
        return (code, headers, text) if all(r in text for r in rtt) else None

    code, headers, text = wait_until(timed_heartbeats, 10, "a heartbeat to each follower")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for name in NAMES:
        assert f"\n{name}" in text, f"{name} missing"
        base = name.rsplit("_bucket", 1)[0].rsplit("_count", 1)[0].rsplit("_total", 1)[0]
        assert f"# HELP {base}" in text, f"no help text for {base}"
    s = samples(text)
    assert s["fastraft_server_is_leader"] == 1 and s["fastraft_server_has_leader"] == 1
    assert s["fastraft_proposals_committed_total"] >= 21        # 20 puts + the register
    assert s['fastraft_client_requests_total{op="put",status="ok"}'] == 20
    assert s['fastraft_client_requests_total{op="get",status="ok"}'] == 1
    # Every request is counted; one in eight (by request id) is timed.
    assert 1 <= s['fastraft_client_request_duration_seconds_count{op="put"}'] <= 20 // 8 + 1
    assert s['fastraft_wal_fsync_duration_seconds_bucket{le="+Inf"}'] > 0
    assert s["fastraft_raft_applied_index"] >= 22 and s["fastraft_raft_term"] >= 2
    for i in others:
        assert s[f'fastraft_peer_sent_bytes_total{{to="{i}"}}'] > 0
        assert s[f'fastraft_peer_received_bytes_total{{from="{i}"}}'] > 0
        assert s[f'fastraft_peer_round_trip_time_seconds_count{{to="{i}"}}'] > 0
    f = samples(get(f"http://{cl.node(others[0]).metrics_addr}/metrics")[2].decode())
    assert f["fastraft_server_is_leader"] == 0 and f["fastraft_server_has_leader"] == 1
    assert f["fastraft_server_leader_changes_seen_total"] >= 1


def _health(n) -> tuple[int, dict]:
    code, _, body = get(f"http://{n.metrics_addr}/health")
    return code, json.loads(body)


def test_health_and_ready_follow_the_cluster(cluster_factory):
    cl = cluster_factory(3, tuning=FAST, metrics=True)
    lead = cl.leader()
    for i in cl.ids:
        cl.wait_for(lambda i=i: _health(cl.node(i))[0] == 200, 10, f"node {i} healthy")
        code, body = _health(cl.node(i))
        assert body["health"] is True and body["leader"] == lead, body
        code, _, ready = get(f"http://{cl.node(i).metrics_addr}/ready")
        assert code == 200 and json.loads(ready) == {"ready": True, "reason": ""}
    code, _, body = get(f"http://{cl.node(lead).metrics_addr}/nothing")
    assert code == 404
    # The leader alone: it loses its quorum (then, with check_quorum, its leadership).
    others = [i for i in cl.ids if i != lead]
    for i in others:
        cl.kill(i)
    cl.wait_for(lambda: _health(cl.node(lead))[0] == 503, 10, "the lone leader unhealthy")
    code, body = _health(cl.node(lead))
    assert body["health"] is False and ("quorum" in body["reason"]
                                        or "no leader" in body["reason"]), body
    # A follower whose leader is gone.
    cl.start(others)
    new = cl.leader()
    follower = next(i for i in cl.ids if i != new)
    cl.wait_for(lambda: _health(cl.node(follower))[0] == 200, 10, "the follower healthy")
    cl.kill(new)
    cl.wait_for(lambda: _health(cl.node(follower))[0] == 503 or
                _health(cl.node(follower))[1].get("leader") != new, 10,
                "the follower to notice its leader is gone")


def test_hostile_input_on_the_metrics_port_never_disturbs_the_node(cluster_factory):
    cl = cluster_factory(3, tuning=FAST, metrics=True)
    lead = cl.leader()
    n = cl.node(lead)
    host, port = n.metrics_addr.rsplit(":", 1)
    silent = socket.create_connection((host, int(port)), 5)         # never speaks
    for data in (b"\x00\xffgarbage\r\n\r\n", b"GET /metrics HTTP/1.1\r\n" +
                 b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n", b"BREW /pot HTCPCP/1.0\r\n\r\n"):
        with socket.create_connection((host, int(port)), 5) as s:
            try:
                s.sendall(data)
                s.settimeout(10)
                s.recv(1000)            # an error answer or a close: either is fine
            except OSError:
                pass
    code, _ = _health(n)
    assert code == 200
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    assert cl.current_leader() == lead
    silent.close()
    assert "Traceback" not in n.log_text()


def test_a_metrics_address_in_use_stops_the_node_at_start(cluster_factory):
    cl = cluster_factory(3, tuning=FAST, metrics=True, start=False)
    host, port = cl.node(1).metrics_addr.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        cl.start([1], wait=False)
        assert cl.wait_exit(1, 20) == 2
    log = cl.node(1).log_text()
    assert "cannot start" in log and "Traceback" not in log, log
