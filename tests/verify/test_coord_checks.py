"""The checks of the watch, lock and lease workloads (fastraft.verify.coord_checks) on
hand-made histories: each passes a correct history, and each fails the histories it exists
to catch (a duplicated event, a gap, events out of order, a value never written, an overlap
of two valid lock holders, a lower fence accepted, a lost increment, a lease expiring early,
a lapsed lease's key still present, ...), with unknown outcomes tolerated within their
bounds. Pure: no cluster, no client."""

from __future__ import annotations

from fastraft.verify.coord_checks import (WatchStream, check_lease, check_lock, check_watch,
                                          counter_value, parse_counter)
from fastraft.verify.history import Event, to_operations


class H:
    """A hand-made history: operations with explicit invocation and completion times."""

    def __init__(self):
        self.events = []
        self._n = 0

    def op(self, f, key, value, t0, t1=None, status="ok", result=None, pid=None):
        """One operation invoked at ``t0`` and completed at ``t1`` (None: never)."""
        self._n += 1
        pid = pid or f"p{self._n}"
        self.events.append(Event(pid, "invoke", f, key, value, t0))
        if t1 is not None:
            self.events.append(Event(pid, status, f, key, result, t1))
        return self

    def pairs(self):
        return to_operations(sorted(self.events, key=lambda e: e.time)).other


# -- watch ------------------------------------------------------------------------------------

def _writes():
    h = H()
    h.op("watch_put", b"w/k0", b"0.0", 0.0, 0.1)                 # rev 10
    h.op("watch_put", b"w/k1", b"1.0", 0.2, 0.3)                 # rev 11
    h.op("watch_put", b"w/k0", b"0.1", 0.4, 0.9, "info")         # unknown, applied: rev 12
    h.op("watch_put", b"w/k1", b"1.1", 0.5, 0.9, "info")         # unknown, not applied
    h.op("watch_put", b"w/k1", b"1.2", 0.6, 0.7, "fail", "NotLeader")
    h.op("watch_put", b"w/end", b"end.0", 1.0, 1.1)              # rev 13: the end marker
    return h


def _stream(name, start, events, started=0.05, end=13, ended="end", from_start=None):
    return WatchStream(name, start, started, start == 1 if from_start is None else from_start,
                       list(events), end, ended)


_ALL = [(10, "put", b"w/k0", b"0.0"), (11, "put", b"w/k1", b"1.0"),
        (12, "put", b"w/k0", b"0.1"), (13, "put", b"w/end", b"end.0")]


def test_watch_complete_streams_pass():
    pairs = _writes().pairs()
    res = check_watch(pairs, [_stream("a", 1, _ALL), _stream("b", 11, _ALL[1:])])
    assert res.ok and res.verdict == "ok", res.problems
    assert (res.acked, res.unknown, res.failed) == (3, 2, 1)
    assert res.seen == 4 and res.reached_end == 2 and res.events == 7
    assert "0 problems" in res.summary()
    # an unknown write that was never applied appears nowhere: fine
    assert res.to_json()["ok"]


def test_watch_duplicated_event_fails():
    events = _ALL[:2] + [_ALL[1]] + _ALL[2:]
    res = check_watch(_writes().pairs(), [_stream("a", 1, events)])
    assert not res.ok and res.verdict == "violation"
    assert any("1.0 appears more than once" in p for p in res.problems), res.problems


def test_watch_gap_fails():
    """b covers 11..13 but misses 12, which a shows: a gap."""
    res = check_watch(_writes().pairs(), [_stream("a", 1, _ALL),
                                          _stream("b", 11, [_ALL[1], _ALL[3]])])
    assert not res.ok
    assert any(p.startswith("b: 0.1 (revision 12, seen in a) is missing") for p in res.problems)


def test_watch_unknown_write_applied_must_be_in_every_cover():
    res = check_watch(_writes().pairs(), [_stream("a", 1, _ALL),
                                          _stream("b", 1, [_ALL[0], _ALL[1], _ALL[3]])])
    assert any("0.1 (revision 12" in p and "a gap" in p for p in res.problems)


def test_watch_order_and_identity_fail():
    pairs = _writes().pairs()
    swapped = [_ALL[1], _ALL[0], _ALL[2], _ALL[3]]
    res = check_watch(pairs, [_stream("a", 1, swapped)])
    assert any("revision 10 after revision 11 (out of order)" in p for p in res.problems)
    same_key = [(10, "put", b"w/k0", b"0.0"), (12, "put", b"w/k0", b"0.1"),
                (12, "put", b"w/k0", b"0.0")]
    res = check_watch(pairs, [_stream("a", 1, same_key, end=12)])
    assert any("revisions of a key must increase" in p for p in res.problems)
    never = _ALL + [(14, "put", b"w/k0", b"9.9")]
    res = check_watch(pairs, [_stream("a", 1, never, end=14)])
    assert any("a value never attempted" in p for p in res.problems)
    failed = _ALL[:2] + [(12, "put", b"w/k1", b"1.2")] + _ALL[3:]
    res = check_watch(pairs, [_stream("a", 1, failed)])
    assert any("failed definitely (NotApplied), yet it was applied" in p
               for p in res.problems), res.problems
    deleted = _ALL + [(14, "delete", b"w/k0", None)]
    res = check_watch(pairs, [_stream("a", 1, deleted, end=14)])
    assert any("a delete of w/k0 at revision 14: never written" in p for p in res.problems)
    wrong_key = [(10, "put", b"w/k1", b"0.0")] + _ALL[1:]
    res = check_watch(pairs, [_stream("a", 1, wrong_key)])
    assert any("it was written to w/k0" in p for p in res.problems)
    outside = check_watch(pairs, [_stream("b", 11, _ALL)])
    assert any("outside the revisions it covers (11..13)" in p for p in outside.problems)


def test_watch_streams_must_agree_on_revisions():
    other = [(10, "put", b"w/k0", b"0.0"), (11, "put", b"w/k0", b"0.1"),
             (12, "put", b"w/k1", b"1.0"), (13, "put", b"w/end", b"end.0")]
    res = check_watch(_writes().pairs(), [_stream("a", 1, _ALL), _stream("b", 1, other)])
    assert any("at revision 11, but at revision 12 in a" in p for p in res.problems)
    assert any("revision 11 is 0.1, but 1.0 in a" in p for p in res.problems)


def test_watch_acknowledged_write_seen_nowhere():
    """Lost when a stream surely covered it (from revision 1, or started before the write
    was invoked); otherwise only unverified."""
    pairs = _writes().pairs()
    without = [e for e in _ALL if e[3] != b"1.0"]
    res = check_watch(pairs, [_stream("a", 1, without)])
    assert any("acknowledged write w/k1 = 1.0 is in no stream, although a surely covered it"
               in p for p in res.problems)
    late = _stream("b", 12, [_ALL[2], _ALL[3]], started=0.25)   # fixed its start after 1.0
    res = check_watch(pairs, [late])
    assert res.ok and res.unverified == 2, res.problems          # 0.0 and 1.0
    early = _stream("b", 12, [_ALL[2], _ALL[3]], started=0.15)  # before 1.0 was invoked
    res = check_watch(pairs, [early])
    assert not res.ok and any("1.0 is in no stream" in p for p in res.problems)


def test_watch_revisions_against_real_time():
    h = H()
    h.op("watch_put", b"w/k0", b"a", 0.0, 0.1)
    h.op("watch_put", b"w/k0", b"b", 0.2, 0.3)     # invoked after a was acknowledged
    h.op("watch_put", b"w/end", b"end.0", 1.0, 1.1)
    events = [(10, "put", b"w/k0", b"b"), (11, "put", b"w/k0", b"a"),
              (12, "put", b"w/end", b"end.0")]
    res = check_watch(h.pairs(), [_stream("a", 1, events, end=12)])
    assert any("revisions against real time" in p for p in res.problems), res.problems


def test_watch_compacted_genuine_or_not_and_stalled():
    pairs = _writes().pairs()
    genuine = _stream("a.0", 1, _ALL[:1], end=10, ended="compacted")
    genuine.oldest = 20
    fresh = _stream("a.1", 11, _ALL[1:], from_start=False)
    res = check_watch(pairs, [genuine, fresh])
    assert res.ok and res.compacted == 1 and res.compacted_genuine == 1, res.problems
    wrong = _stream("a.0", 1, _ALL[:1], end=10, ended="compacted")
    wrong.oldest = 5                                 # the nodes had revision 11
    res = check_watch(pairs, [wrong, fresh])
    assert not res.ok and any("ended Compacted at revision 11 although the nodes offered "
                              "revisions from 5" in p for p in res.problems)
    stalled = _stream("b", 1, _ALL[:2], end=11, ended="stalled")
    res = check_watch(pairs, [_stream("a", 1, _ALL), stalled])
    assert res.verdict == "unknown" and res.stalled == ["b"]
    assert "did not reach the end marker" in res.summary()
    assert check_watch(pairs, []).verdict == "unknown"


def test_watch_stream_json():
    s = _stream("a", 1, _ALL[:1] + [(14, "delete", b"w/k0", None)], end=14)
    assert s.to_json()["events"] == [[10, "put", "w/k0", "0.0"], [14, "delete", "w/k0", None]]


# -- lock -------------------------------------------------------------------------------------

def _section(h, fence, lease, *, grant=0.0, ttl=2.0, acquired, read=None, write=None,
             released, lost=False, renewals=(), pause=None):
    """One critical section: ``write`` = (t0, t1, status, result); ``read`` = (t0, t1,
    (count, fence, rev))."""
    h.op("lock_grant", b"c", ttl, grant, grant + 0.005, result=lease)
    for t in renewals:
        h.op("lock_keepalive", lease, None, t, t + 0.005)
    h.op("lock_acquire", b"c", None, acquired - 0.005, acquired, result=(fence, lease))
    if read is not None:
        h.op("lock_read", b"k", fence, read[0], read[1], result=read[2])
    if pause is not None:
        h.op("lock_pause", b"k", fence, pause[0], pause[1], result=pause[1] - pause[0])
    if write is not None:
        t0, t1, status, result = write
        h.op("lock_write", b"k", (fence, 0), t0, t1, status, result)
    h.op("lock_release", b"c", (fence, lease, lost), released, released + 0.005)


def _two_sections(a2=0.08, rev1=101, rev2=103):
    h = H()
    _section(h, 100, 11, acquired=0.02, read=(0.03, 0.035, (0, 0, 0)),
             write=(0.04, 0.06, "ok", ("accepted", rev1)), released=0.07)
    _section(h, 102, 12, grant=0.01, acquired=a2, read=(a2 + 0.01, a2 + 0.015, (1, 100, 101)),
             write=(a2 + 0.02, a2 + 0.03, "ok", ("accepted", rev2)), released=a2 + 0.04)
    return h


def test_lock_correct_history_passes():
    res = check_lock(_two_sections().pairs(), b"2:102")
    assert res.ok and res.verdict == "ok", res.problems
    assert res.sections == 2 and res.accepted == 2 and res.late == 0
    assert "final counter 2 (fence 102), which must lie in [2, 2]" in res.summary()


def test_lock_overlap_of_valid_holders_fails():
    """Fence 102 acquired at 0.05 while fence 100 (lease valid until 2.0) released at 0.07."""
    res = check_lock(_two_sections(a2=0.05).pairs(), b"2:102")
    assert not res.ok
    assert any("fence 102 acquired at 0.050 s while the holder of fence 100" in p
               for p in res.problems), res.problems


def test_lock_lower_fence_accepted_fails():
    res = check_lock(_two_sections(rev1=105, rev2=103).pairs(), b"2:100")
    assert any("fence 100 accepted at revision 105 after fence 102 at revision 103: a lower "
               "fence accepted" in p for p in res.problems), res.problems


def test_lock_counter_bounds():
    pairs = _two_sections().pairs()
    res = check_lock(pairs, b"1:102")
    assert any("final counter 1 < 2 accepted increments - 0 late ones" in p
               for p in res.problems)
    res = check_lock(pairs, b"3:102")
    assert any("final counter 3 > 2 accepted + 0 unknown" in p for p in res.problems)
    res = check_lock(pairs, b"2:100")
    assert any("final stored fence 100 is below the accepted fence 102" in p
               for p in res.problems)
    assert check_lock(pairs, b"garbage").problems
    res = check_lock(pairs, None, read=False)
    assert res.verdict == "unknown" and not res.problems
    h = _two_sections()                    # a third increment with unknown outcome
    _section(h, 104, 13, grant=0.2, acquired=0.3, read=(0.31, 0.32, (2, 102, 103)),
             write=(0.33, 0.9, "info", "Timeout"), released=0.95)
    for final in (b"2:102", b"3:104"):
        assert check_lock(h.pairs(), final).ok


def test_lock_duplicated_fence_and_fence_order():
    h = _two_sections()
    _section(h, 102, 14, grant=0.3, acquired=0.4, released=0.5)
    res = check_lock(h.pairs(), b"2:102")
    assert any("fence 102 handed out twice" in p for p in res.problems)
    h = H()                                # acquired later with a lower fence, both valid
    _section(h, 102, 12, acquired=0.02, released=0.05)
    _section(h, 100, 11, acquired=0.06, released=0.07)
    res = check_lock(h.pairs(), None)
    assert any("fences must increase with the acquisitions" in p for p in res.problems)


def test_lock_paused_holder_stale_write_refused():
    """The issue's case: the holder of fence 100 (TTL 1 s, never renewed) pauses from 0.04 to
    2.5 s; its lease expires at 1.0; fence 102 acquires at 1.3 and writes; the stale write
    is refused by the fence check. Their critical sections overlap in time: allowed."""
    h = H()
    _section(h, 100, 11, ttl=1.0, acquired=0.02, read=(0.03, 0.035, (0, 0, 0)),
             pause=(0.04, 2.5), write=(2.5, 2.6, "ok", ("refused", 102)), released=2.61,
             lost=True)
    _section(h, 102, 12, grant=1.1, acquired=1.3, read=(1.31, 1.32, (0, 0, 0)),
             write=(1.33, 1.34, "ok", ("accepted", 103)), released=1.35)
    res = check_lock(h.pairs(), b"1:102")
    assert res.ok, res.problems
    assert res.pauses == 1 and res.paused_refused == 1 and res.overlaps_explained == 1
    assert res.lost == 1 and res.refused == 1
    # the same stale write accepted after fence 102's: a lower fence accepted
    h = H()
    _section(h, 100, 11, ttl=1.0, acquired=0.02, read=(0.03, 0.035, (0, 0, 0)),
             pause=(0.04, 2.5), write=(2.5, 2.6, "ok", ("accepted", 104)), released=2.61,
             lost=True)
    _section(h, 102, 12, grant=1.1, acquired=1.3, read=(1.31, 1.32, (0, 0, 0)),
             write=(1.33, 1.34, "ok", ("accepted", 103)), released=1.35)
    res = check_lock(h.pairs(), b"1:100")
    assert any("a lower fence accepted" in p for p in res.problems), res.problems


def test_lock_late_write_loosens_the_lower_bound_only_when_late():
    """Fence 100's write (TTL 1 s) completes at 1.5, after its lease's sure life: fence 102
    (acquired at 1.2) may have read the count before it landed, so one increment may be
    lost. Completed at 0.9 (in time), the same final count is a lost increment."""
    def history(done):
        h = H()
        _section(h, 100, 11, ttl=1.0, acquired=0.02, read=(0.03, 0.04, (0, 0, 0)),
                 write=(0.05, done, "ok", ("accepted", 101)), released=max(done, 1.0) + 0.6,
                 lost=True)
        _section(h, 102, 12, grant=1.1, acquired=1.2, read=(1.21, 1.22, (0, 0, 0)),
                 write=(1.6, 1.7, "ok", ("accepted", 103)), released=1.75)
        return h.pairs()

    res = check_lock(history(1.5), b"1:102")
    assert res.ok and res.late == 1, res.problems
    res = check_lock(history(0.9), b"1:102")
    assert any("final counter 1 < 2 accepted increments - 0 late ones" in p
               for p in res.problems), res.problems


def test_lock_refused_while_valid_and_lost_not_signalled():
    h = H()
    _section(h, 100, 11, acquired=0.02, read=(0.03, 0.04, (0, 0, 0)),
             write=(0.05, 0.06, "ok", ("refused", 104)), released=0.07)
    res = check_lock(h.pairs(), b"0:104")
    assert any("its write was refused at 0.060 s (stored fence 104) while its lease was "
               "surely valid" in p for p in res.problems), res.problems
    h = H()
    _section(h, 100, 11, acquired=0.02, read=(0.03, 0.04, (0, 0, 0)),
             write=(0.05, 0.06, "ok", ("refused", 100)), released=0.07)
    assert any("the stored fence is its own" in p for p in check_lock(h.pairs(), None).problems)
    h = H()                                # lease sure until 1.0, released at 3.0, no lost
    _section(h, 100, 11, ttl=1.0, acquired=0.02, released=3.0)
    res = check_lock(h.pairs(), None)
    assert any("yet Held.lost was not set by its release" in p for p in res.problems)
    h = H()
    _section(h, 100, 11, ttl=1.0, acquired=0.02, released=3.0, lost=True)
    assert check_lock(h.pairs(), None).ok
    h = H()                                # renewed: sure until 2.6 + 1
    _section(h, 100, 11, ttl=1.0, acquired=0.02, released=3.0, renewals=(0.3, 1.0, 2.6))
    assert check_lock(h.pairs(), None).ok


def test_counter_value_round_trip():
    assert parse_counter(counter_value(7, 42)) == (7, 42)
    assert parse_counter(None) == (0, 0) and parse_counter(b"x") is None


# -- lease ------------------------------------------------------------------------------------

def _lease(h, lease, ttl, keys, *, grant=0.0, renew=(), revoke=None, scan=None):
    """``keys``: (key, status); ``revoke``: (t0, t1, status); ``scan``: keys found."""
    h.op("lease_grant", b"l/", ttl, grant, grant + 0.01, result=lease)
    for i, (key, st) in enumerate(keys):
        h.op("lease_put", key, lease, grant + 0.02 + i / 100, grant + 0.025 + i / 100, st,
             None if st == "ok" else ("NotLeader" if st == "fail" else "Timeout"))
    for t, st in renew:
        h.op("lease_keepalive", lease, ttl, t, t + 0.01, st,
             None if st == "ok" else ("LeaseNotFound" if st == "fail" else "Timeout"))
    if revoke is not None:
        h.op("lease_revoke", lease, None, revoke[0], revoke[1], revoke[2], True)
        if scan is not None:
            h.op("lease_scan", b"l/", lease, revoke[1] + 0.01, revoke[1] + 0.02,
                 result=tuple(scan))


def _leases(present=(b"l/5/0",), stable=5.0, renew_kept=True):
    h = H()
    kept = [(t / 10, "ok") for t in range(3, 99, 3)] if renew_kept else []
    _lease(h, 5, 1.0, [(b"l/5/0", "ok"), (b"l/5/1", "info")], renew=kept)      # kept alive
    _lease(h, 6, 1.0, [(b"l/6/0", "ok")])                                         # lapsed
    _lease(h, 7, 1.0, [(b"l/7/0", "ok")], revoke=(0.5, 0.6, "ok"), scan=())       # revoked
    _lease(h, 8, 1.0, [(b"l/8/0", "fail")], grant=1.0)                            # put failed
    h.op("lease_final_read", b"l/", stable, 10.0, 10.1, result=tuple(present))
    return h


def test_lease_correct_history_passes():
    res = check_lease(_leases().pairs())
    assert res.ok, res.problems
    assert res.leases == 4 and res.kept_checked == 1 and res.ended_checked == 3
    assert res.revoked == 1 and res.uncertain == 0
    # the unknown put of a live lease may be there or not
    assert check_lease(_leases(present=(b"l/5/0", b"l/5/1")).pairs()).ok


def test_lease_kept_key_missing_fails():
    res = check_lease(_leases(present=()).pairs())
    assert any("lease 5 (surely alive until" in p and "acknowledged keys missing" in p
               for p in res.problems), res.problems


def test_lease_lapsed_or_revoked_key_present_fails():
    res = check_lease(_leases(present=(b"l/5/0", b"l/6/0")).pairs())
    assert any("lease 6 (TTL 1 s) expired or was revoked" in p and "l/6/0" in p
               for p in res.problems), res.problems
    res = check_lease(_leases(present=(b"l/5/0", b"l/7/0")).pairs())
    assert any("lease 7" in p and "l/7/0" in p for p in res.problems)
    res = check_lease(_leases(present=(b"l/5/0", b"l/8/0")).pairs())
    assert any("keys whose put failed definitely are present: l/8/0" in p
               for p in res.problems)
    res = check_lease(_leases(present=(b"l/5/0", b"l/9/9")).pairs())
    assert any("keys never written are present: l/9/9" in p for p in res.problems)


def test_lease_not_judged_without_a_stable_term():
    """A leader change 0.5 s before the final read may have refreshed leases 6 and 8: their
    keys may still be there (not judged); the kept and the revoked leases are still judged."""
    res = check_lease(_leases(present=(b"l/5/0", b"l/6/0"), stable=9.5).pairs())
    assert res.ok and res.uncertain == 2 and res.ended_checked == 1, res.problems


def test_lease_expired_early_fails():
    h = H()
    _lease(h, 5, 1.0, [(b"l/5/0", "ok")], renew=[(0.3, "ok"), (0.6, "ok"), (0.9, "fail")])
    res = check_lease(h.pairs())
    assert any("lease 5 (TTL 1 s): lease_keepalive refused LeaseNotFound at 0.910 s, but it "
               "was surely alive until 1.600 s (expired early)" in p for p in res.problems)
    assert res.verdict == "violation"           # no final read, but a violation already
    h = H()                                     # renewals stopped at 0.3: gone by 1.5 is fine
    _lease(h, 5, 1.0, [(b"l/5/0", "ok")], renew=[(0.3, "ok"), (1.5, "fail")])
    res = check_lease(h.pairs())
    assert not res.problems and res.verdict == "unknown" and res.expired_seen == 1


def test_lease_revoke_checks():
    h = H()
    _lease(h, 7, 1.0, [(b"l/7/0", "ok")], revoke=(0.5, 0.6, "ok"), scan=[b"l/7/0"])
    res = check_lease(h.pairs())
    assert any("1 keys still present right after its revoke was acknowledged" in p
               for p in res.problems)
    h = H()
    _lease(h, 7, 1.0, [(b"l/7/0", "ok")], revoke=(0.5, 0.6, "ok"), renew=[(0.7, "ok")])
    res = check_lease(h.pairs())
    assert any("renewed or written through at 0.700 s, after its revoke" in p
               for p in res.problems)


def test_lease_final_read_failed_is_unknown():
    h = _leases()
    h.events = [e for e in h.events if e.f != "lease_final_read"]
    h.op("lease_final_read", b"l/", 5.0, 10.0, 10.2, "fail", "the term changed")
    res = check_lease(h.pairs())
    assert res.verdict == "unknown" and "UNKNOWN: the final read failed" in res.summary()
