"""The metrics' counting (``fastraft.server.stats``) and the health verdict
(``fastraft.server.metrics.health``) on views of a node made by hand: every reason /health
gives, and histograms as the Prometheus exposition wants them.

Place in the architecture: unit tests of two runtime modules, no IO (the listener itself is
tested on real processes in tests/integration/test_metrics.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from fastraft.raft import FOLLOWER, LEADER  # noqa: E402
from fastraft.server.metrics import MAX_APPLY_LAG, health  # noqa: E402
from fastraft.server.stats import Histogram, NodeStats  # noqa: E402


def _view(**kw) -> dict:
    v = {"id": 1, "role": FOLLOWER, "term": 3, "lead": 2, "commit": 10, "applied": 10,
         "leader_commit": 10, "voters": [1, 2, 3], "dead": False, "now": 100.0,
         "election_timeout": 0.5, "heard": {2: 99.9, 3: 99.9}}
    v.update(kw)
    return v


def test_a_follower_hearing_its_leader_and_applying_is_healthy():
    assert health(_view()) == (True, "")


@pytest.mark.parametrize("kw, reason", [
    ({"dead": True}, "storage failed"),
    ({"lead": 0}, "no leader"),
    ({"heard": {2: 99.0}}, "no word from the leader (node 2) within an election timeout "
                           "(last: 1.0 s ago)"),
    ({"heard": {}}, "(last: never)"),
    ({"applied": 10, "commit": 10, "leader_commit": 11 + MAX_APPLY_LAG},
     f"is {1 + MAX_APPLY_LAG} entries behind the commit"),
    ({"role": LEADER, "lead": 1, "heard": {2: 10.0, 3: 10.0}},
     "the leader heard from 1 of 3 voters (itself included) within an election timeout"),
])
def test_every_unhealthy_reason(kw, reason):
    ok, why = health(_view(**kw))
    assert not ok and reason in why, why


def test_a_leader_with_a_quorum_is_healthy():
    assert health(_view(role=LEADER, lead=1, heard={2: 99.9}))[0]


def test_histograms_are_cumulative_with_an_infinite_bucket():
    h = Histogram((0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 5.0):
        h.observe(v)
    buckets, total = h.snapshot()
    assert buckets == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert total == pytest.approx(5.0035)


def test_node_stats_count_requests_and_round_trips():
    s = NodeStats()
    s.request_done(2, 0, 0.003)
    s.request_done(2, 0, 0.004)
    s.request_done(2, 1, 0.001)
    s.heartbeat_sent(2, 10.0)
    s.heartbeat_sent(2, 10.5)          # one outstanding at a time: the first one counts
    s.heartbeat_answered(2, 10.002)
    s.heartbeat_answered(2, 11.0)      # nothing outstanding: not counted
    c = s.copy()
    assert c["requests"] == {(2, 0): 2, (2, 1): 1}
    assert c["request_time"][2][0][-1] == ("+Inf", 3)
    assert c["rtt"][2][0][-1] == ("+Inf", 1)
    assert c["rtt"][2][1] == pytest.approx(0.002)
