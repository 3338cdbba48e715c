"""The metrics listener of a node: ``GET /metrics`` (Prometheus), ``/health`` and ``/ready``.

Place in the architecture: part of the runtime (``fastraft.server``), started by ``node`` when
the node's ``[[node]]`` entry has ``metrics = "HOST:PORT"``. It uses ``prometheus_client``
(its registry, its text exposition ``text/plain; version=0.0.4``, its WSGI app and threading
WSGI server, its ``process_*`` collectors): HTTP parsing, garbage, huge headers and slow
clients are the library's and the standard ``wsgiref``'s business, in a thread of their own
(each connection has a 10 s socket timeout), never on the node's event loop.

What the node did is read on the event loop, in one callback per request (``_view``: role,
term, indexes, the ``stats.NodeStats`` counters copied, what ``/health`` needs), handed over
through a future; the formatting happens in the listener's thread. So a scrape costs the loop
one short callback, and a loop that does not answer within a second makes ``/health`` say so
(503) instead of hanging.

``/health``: 200 and ``{"health": true, ...}`` when the node has a leader it heard from within
an election timeout (a leader: heard from a quorum of voters within an election timeout),
applies what is committed (at most ``MAX_APPLY_LAG`` entries behind), and its storage works;
503 and ``{"health": false, "reason": ...}`` otherwise. ``/ready``: 200 once the node has
recovered and serves (503 while it stops or after a storage failure). Other paths: 404.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, \
    ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, \
    HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from .. import codec
from ..raft import LEADER, ROLE_NAMES

__all__ = ["MetricsServer", "MAX_APPLY_LAG"]

log = logging.getLogger("fastraft.metrics")

#: /health fails when the applied index is more than this many entries behind the commit
#: index the node knows (its own, or the leader's from its appends).
MAX_APPLY_LAG = 10_000
#: Seconds a request of the listener waits for the event loop's answer.
LOOP_TIMEOUT = 1.0
#: Seconds a connection to the listener may stay silent (slow clients).
SOCKET_TIMEOUT = 10.0

STATUS_NAMES = {codec.ST_OK: "ok", codec.ST_NOT_LEADER: "not_leader", codec.ST_BUSY: "busy",
                codec.ST_INVALID: "invalid", codec.ST_SESSION_EXPIRED: "session_expired",
                codec.ST_UNKNOWN: "unknown", codec.ST_ERROR: "error"}


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, with a socket timeout and its access log in DEBUG."""

    timeout = SOCKET_TIMEOUT

    def log_message(self, format, *args):   # noqa: A002 (the base class's signature)
        log.debug("metrics %s: " + format, self.client_address[0], *args)


def health(v: dict) -> tuple[bool, str]:
    """``(healthy, reason)`` from a view of the node (``MetricsServer._view``)."""
    if v["dead"]:
        return False, "storage failed: the node stopped serving"
    if not v["lead"]:
        return False, "no leader"
    et, now, heard = v["election_timeout"], v["now"], v["heard"]
    if v["role"] == LEADER:
        voters = v["voters"]
        recent = sum(1 for p in voters if p == v["id"] or now - heard.get(p, -1e9) <= et)
        if recent < len(voters) // 2 + 1:
            return False, (f"the leader heard from {recent} of {len(voters)} voters (itself "
                           f"included) within an election timeout: it lost its quorum")
    else:
        last = heard.get(v["lead"])
        if last is None or now - last > et:
            ago = "never" if last is None else f"{now - last:.1f} s ago"
            return False, f"no word from the leader (node {v['lead']}) within an election " \
                          f"timeout (last: {ago})"
    behind = max(v["commit"], v["leader_commit"]) - v["applied"]
    if behind > MAX_APPLY_LAG:
        return False, f"applied index {v['applied']} is {behind} entries behind the commit"
    return True, ""


class _NodeCollector:
    """The ``fastraft_*`` metrics, from one view of the node per scrape."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self):
        v = self.server.view()
        if v is None:
            return
        s = v["stats"]
        g = GaugeMetricFamily
        yield g("fastraft_server_is_leader", "1 when this node is the leader, else 0",
                value=int(v["role"] == LEADER))
        yield g("fastraft_server_has_leader", "1 when this node knows a leader, else 0",
                value=int(bool(v["lead"])))
        yield CounterMetricFamily("fastraft_server_leader_changes_seen_total",
                                  "Leader changes this node has seen (a new leader id)",
                                  value=s["leader_changes"])
        yield g("fastraft_raft_term", "The node's current Raft term", value=v["term"])
        yield g("fastraft_raft_commit_index", "Highest log index known committed",
                value=v["commit"])
        yield g("fastraft_raft_applied_index", "Highest log index applied to the state "
                "machine", value=v["applied"])
        yield g("fastraft_raft_last_index", "Last index of the node's log",
                value=v["last_index"])
        yield CounterMetricFamily("fastraft_proposals_committed_total", "Client writes this "
                                  "node proposed as leader that committed and were answered",
                                  value=v["proposals"][0])
        yield CounterMetricFamily("fastraft_proposals_failed_total", "Client writes this node "
                                  "proposed as leader that failed or were lost to a leader "
                                  "change", value=v["proposals"][1])
        yield g("fastraft_proposals_pending", "Client writes proposed and not answered yet",
                value=v["proposals"][2])
        yield _hist("fastraft_wal_fsync_duration_seconds", "Time of each fsync of the log "
                    "(the WAL or the SQLite commit)", [((), s["fsync"])])
        yield _hist("fastraft_snapshot_duration_seconds", "Time to take each local snapshot",
                    [((), s["snapshot"])])
        c = CounterMetricFamily("fastraft_client_requests_total", "Client requests answered, "
                                "per operation and status", labels=["op", "status"])
        for (op, st), n in sorted(s["requests"].items()):
            c.add_metric([codec.OP_NAMES.get(op, str(op)), STATUS_NAMES.get(st, str(st))], n)
        yield c
        yield _hist("fastraft_client_request_duration_seconds", "Time from reading a client "
                    "request to answering it, per operation (a sample: one request in "
                    "eight, by request id)", [
                        ((codec.OP_NAMES.get(op, str(op)),), h)
                        for op, h in sorted(s["request_time"].items())], ["op"])
        for name, key, label, what in (
                ("fastraft_peer_sent_bytes_total", "sent", "to", "Bytes sent to each peer"),
                ("fastraft_peer_received_bytes_total", "received", "from",
                 "Bytes received from each peer")):
            c = CounterMetricFamily(name, what, labels=[label])
            for pid, n in sorted(s[key].items()):
                c.add_metric([str(pid)], n)
            yield c
        yield _hist("fastraft_peer_round_trip_time_seconds", "Heartbeat round trips to each "
                    "peer (measured while this node leads)",
                    [((str(pid),), h) for pid, h in sorted(s["rtt"].items())], ["to"])


def _hist(name: str, what: str, series, labels=()):
    h = HistogramMetricFamily(name, what, labels=list(labels))
    for values, (buckets, total) in series:
        h.add_metric(list(values), buckets, total)
    return h


class MetricsServer:
    """The listener (module docstring) of ``node`` on ``addr`` (host, port)."""

    def __init__(self, node, addr: tuple[str, int]) -> None:
        self.node = node
        self.addr = addr
        self.loop = None
        self._httpd = None
        self._thread = None

    def start(self) -> None:
        """Listen (OSError when the address cannot be bound) and serve in a thread."""
        self.loop = asyncio.get_running_loop()
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(_NodeCollector(self))
        self._metrics_app = make_wsgi_app(registry)
        host, port = self.addr
        self._httpd = make_server(host, port, self._app, ThreadingWSGIServer,
                                  handler_class=_Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name=f"fastraft-metrics-{self.node.id}", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (and /health, /ready)", host, port)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- on the event loop ----------------------------------------------------------------

    def _view(self) -> dict:
        node = self.node
        st = node.raw.status()
        req = node.requests
        return {
            "id": node.id, "role": st.role, "term": st.term, "lead": st.lead,
            "last_index": st.last_index, "commit": st.committed,
            "applied": node.backend.machine.applied_index,
            "leader_commit": node.stats.leader_commit,
            "voters": sorted(node.raw.conf_state().voters),
            "dead": node._dead, "stopping": node._stopping, "started": node.started,
            "now": self.loop.time(),
            "election_timeout": node.tuning.election_timeout_ms / 1000.0,
            "heard": dict(node.stats.heard), "stats": node.stats.copy(),
            "proposals": (getattr(req, "proposals_committed", 0),
                          getattr(req, "proposals_failed", 0),
                          getattr(req, "proposals_pending", 0)),
        }

    # -- in the listener's threads --------------------------------------------------------

    def view(self) -> dict | None:
        """A view of the node taken on its event loop; None when the loop did not answer
        within LOOP_TIMEOUT (or is closed)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def take():
            try:
                fut.set_result(self._view())
            except Exception as exc:        # reported to the scrape, never to the loop
                fut.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(take)
            return fut.result(LOOP_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return None

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/health":
            v = self.view()
            if v is None:
                ok, body = False, {"health": False, "reason": "the node's event loop did "
                                   f"not answer within {LOOP_TIMEOUT:g} s"}
            else:
                ok, reason = health(v)
                body = {"health": ok, "reason": reason, "role": ROLE_NAMES[v["role"]], "leader": v["lead"],
                        "term": v["term"], "commit": v["commit"], "applied": v["applied"]}
            return _json(start_response, ok, body)
        if path == "/ready":
            v = self.view()
            if v is None:
                return _json(start_response, False, {"ready": False, "reason": "the node's "
                             "event loop did not answer"})
            why = ("storage failed" if v["dead"] else "stopping" if v["stopping"]
                   else "" if v["started"] else "starting")
            return _json(start_response, not why, {"ready": not why, "reason": why})
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /health or /ready\n"]


def _json(start_response, ok: bool, body: dict):
    data = (json.dumps(body) + "\n").encode()
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
