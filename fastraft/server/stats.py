"""What a node counts for its metrics, as plain integers and lists of integers.

Place in the architecture: a leaf of ``fastraft.server`` (standard library only). The parts of
the runtime increment these on their hot paths (an integer addition, a bisect into a short
list of bucket bounds); nothing here formats, locks or calls a metrics library. The metrics
listener (``metrics``) copies them on the node's event loop when Prometheus scrapes, and
formats them in its own thread.

- ``Histogram``: fixed bucket bounds (seconds), one count per bucket, a sum and a count;
  ``snapshot()`` is what the exposition needs (cumulative counts per bound).
- ``NodeStats``: one per node: leader changes seen, the fsync and snapshot durations, client
  requests per (op, status) and the durations of a sample of them per op (``clients`` times
  one request in eight, by request id), peer bytes sent and received per peer, the round
  trip of heartbeats per peer (measured by the leader on its periodic heartbeats, not those
  of ReadIndex rounds: a heartbeat sent, its answer received), and when each peer was last
  heard from (for ``/health``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

__all__ = ["Histogram", "NodeStats", "FSYNC_BUCKETS", "REQUEST_BUCKETS", "RTT_BUCKETS",
           "SNAPSHOT_BUCKETS"]

#: Bucket bounds in seconds (etcd's disk and network histograms span the same ranges).
FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                 0.512, 1.024, 2.048, 4.096, 8.192)
REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                   5.0)
RTT_BUCKETS = (0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256,
               0.0512, 0.1024, 0.2048, 0.4096, 0.8192)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Counts of observations per bucket (the last slot: above every bound)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list, float]:
        """``([(bound as a string, cumulative count), ..., ("+Inf", total)], sum)``."""
        return _cumulative(self.bounds, self.counts, self.sum)


def _cumulative(bounds, counts, total_sum: float) -> tuple[list, float]:
    out, total = [], 0
    for bound, n in zip(bounds, counts):
        total += n
        out.append((repr(float(bound)), total))
    out.append(("+Inf", total + counts[-1]))
    return out, total_sum


class NodeStats:
    """The counters of one node (module docstring); the runtime's parts hold a reference."""

    def __init__(self) -> None:
        self.leader_changes = 0
        self.fsync = Histogram(FSYNC_BUCKETS)
        self.snapshot = Histogram(SNAPSHOT_BUCKETS)
        #: op code << 4 | status code -> count (a defaultdict: the client connections add
        #: to it inline); op code -> bucket counts (REQUEST_BUCKETS) and sum of seconds
        #: (named and made cumulative when scraped)
        self.requests: defaultdict = defaultdict(int)
        self.request_time: dict = {}
        self.request_sum: dict = {}
        #: peer id -> bytes
        self.sent: dict = {}
        self.received: dict = {}
        #: peer id -> Histogram; peer id -> loop time of the heartbeat waiting for its answer
        self.rtt: dict = {}
        self.hb_sent: dict = {}
        #: peer id -> loop time (tick precision) of the last message from it
        self.heard: dict = {}
        #: the highest commit index a leader's append announced (a follower behind sees it)
        self.leader_commit = 0

    def request_done(self, op: int, status: int, seconds: float) -> None:
        """One client request answered and timed (one bisect into the op's buckets)."""
        self.requests[op << 4 | status] += 1
        counts = self.request_time.get(op)
        if counts is None:
            counts = self.request_time[op] = [0] * (len(REQUEST_BUCKETS) + 1)
            self.request_sum[op] = 0.0
        counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        self.request_sum[op] += seconds

    def heartbeat_sent(self, pid: int, now: float) -> None:
        """A periodic heartbeat left for ``pid`` (timed unless one is already waiting)."""
        self.hb_sent.setdefault(pid, now)

    def heartbeat_answered(self, pid: int, now: float) -> None:
        t0 = self.hb_sent.pop(pid, None)
        if t0 is not None:
            h = self.rtt.get(pid)
            if h is None:
                h = self.rtt[pid] = Histogram(RTT_BUCKETS)
            h.observe(now - t0)

    def copy(self) -> dict:
        """Everything, copied (call it on the event loop; the copy is read elsewhere)."""
        return {
            "leader_changes": self.leader_changes,
            "fsync": self.fsync.snapshot(), "snapshot": self.snapshot.snapshot(),
            "requests": {(k >> 4, k & 15): n for k, n in self.requests.items()},
            "request_time": {op: _cumulative(REQUEST_BUCKETS, counts, self.request_sum[op])
                             for op, counts in self.request_time.items()},
            "sent": dict(self.sent), "received": dict(self.received),
            "rtt": {pid: h.snapshot() for pid, h in self.rtt.items()},
        }
