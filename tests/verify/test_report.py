"""The summary of a verification run (fastraft.verify.report through RunResult.text()): every
count comes with words saying what it counts, the skipped fault kinds are named with their
reason, and the "fault outcomes" section lists every fault kind asked for (ran or skipped).
Pure: made from hand-written counts, no node runs."""

from __future__ import annotations

import re

from fastraft.verify.linearizability import check_stale_reads
from fastraft.verify.history import HistoryWriter, to_operations
from fastraft.verify.nemesis import RunResult
from fastraft.verify.report import fault_coverage
from fastraft.verify.schedule import FAULT_KINDS, plan_faults
from fastraft.verify.final_state import check_session, check_set


def _result(duration=10.0):
    plan = plan_faults(FAULT_KINDS, duration, (1.0, 3.0), (1.0, 4.0), 0.3, seed=3)
    ran = plan.counts()
    stats = {"wipe_via_snapshot": 1, "transfer_clean_exit": 1, "torn_tail_recovered": 1}
    cov = fault_coverage(plan, ran, {plan.planned[-1]: 1}, stats)
    ops = {"register": {"invoked": 120, "ok": 100, "fail": 12, "info": 6, "checked": 90,
                        "stale_reads": 20, "fail_reasons": {"NotLeader": 10, "Busy": 2},
                        "info_reasons": {"Timeout": 6}},
           "set": {"ok": 50, "fail": 57, "info": 3, "checked": 110,
                   "fail_reasons": {"NotLeader": 57}, "info_reasons": {"ConnectionLost": 3}},
           "session": {"ok": 40, "fail": 9, "info": 0, "checked": 49,
                       "fail_reasons": {"full": 8, "gave_up": 1}, "info_reasons": {}}}
    return RunResult("ok", 5, "out", ops, ran, "linearizability: OK", "stale reads: OK",
                     "out/history.jsonl", "out/nemesis.jsonl", "out/summary.json",
                     {"linearizable": "ok"}, "set: ...", "session: ...", [], [], stats, cov)


def test_skipped_kinds_named_with_the_reason_and_every_kind_in_the_outcomes():
    r = _result(10.0)
    skipped = r.fault_coverage["skipped"]
    assert set(skipped) >= {"wipe", "disk"}
    text = r.text()
    ran = [k for k in FAULT_KINDS if k not in skipped]
    assert (f"faults injected: {len(ran)} of the {len(FAULT_KINDS)} kinds asked for ran: "
            in text), text
    assert "skipped: " + ", ".join(skipped) in text
    section = text[text.index("fault outcomes (per kind):"):].splitlines()[1:]
    for kind in FAULT_KINDS:
        line = next(li for li in section if li.startswith(f"  {kind}: "))
        if kind in skipped:
            assert line.startswith(f"  {kind}: skipped: not enough time: one {kind} fault "
                                   "needs at least"), line
            assert "--duration 26 or more runs every kind" in line
        else:
            assert line.startswith(f"  {kind}: ran 1"), line
    last = r.fault_coverage["planned"][-1]
    assert "healed early: the run ended during it" in next(
        li for li in section if li.startswith(f"  {last}: "))
    assert "the leader handed leadership over and exited 0: 1" in text \
        or "transfer" in skipped
    assert r.fault_coverage["ran"]["wipe"] == 0 and not r.fault_coverage["all_ran"]


def test_every_count_has_words():
    text = _result(30.0).text()
    assert "faults injected: 8 of the 8 kinds asked for ran" in text and "skipped" not in text
    assert ("failed: certainly not applied (NotLeader, Busy, InvalidRequest, ...)" in text)
    assert "unknown outcome: may or may not have been applied (Timeout, ConnectionLost" in text
    assert ("register: 120 reads, stale reads, writes and cas: 100 ok, 12 failed (NotLeader "
            "10, Busy 2), 6 with unknown outcome (Timeout 6), 2 never completed") in text
    assert "90 of them searched for a linearizable order" in text
    assert "20 stale reads checked on their own" in text
    assert "set: 110 inserts: 50 ok, 57 failed (NotLeader 57), 3 with unknown outcome " \
           "(ConnectionLost 3); 110 checked against the final state" in text
    # appends that found their key full are not failures, and are said so
    assert ("session: 49 increments and appends: 40 ok, 1 failed (1 gave up after retrying "
            "for 3 x --op-deadline (no attempt applied)), 8 appends found their key full "
            "(recorded as failed, but not a failure") in text
    # no bare "<number> <word>" pairs left over from the old format
    assert not re.search(r"\b(ok|fail|info|unknown) \d", text), text


def test_checker_lines_explain_their_counts():
    h = HistoryWriter(None, keep=True)
    for p, f, key, outcome, value in [("s1", "insert", b"a", "ok", None),
                                      ("s2", "insert", b"b", "info", "Timeout"),
                                      ("s3", "insert", b"c", "fail", "NotLeader"),
                                      ("t1", "append", b"a0.0", "fail", "full"),
                                      ("t2", "append", b"a0.1", "ok", None),
                                      ("t3", "incr", b"c0", "ok", None)]:
        h.invoke(p, f, key, b"x" if f == "append" else None)
        h.complete(p, outcome, value)
    pairs = to_operations(h.events).other
    text = check_set(pairs, {b"a", b"b"}).summary()
    assert ("set: 1 acknowledged inserts (each must be present at the end), 1 with unknown "
            "outcome (may be present or not: 1 of them present), 1 failed definitely (must "
            "be absent: 0 present); lost 0 (acknowledged inserts missing at the end)") == text
    res = check_session(pairs, {b"a0.0": None, b"a0.1": b"x", b"c0": b"1"})
    assert res.ok and res.counts()["append_full"] == 1 and res.counts()["append_failed"] == 1
    text = res.summary()
    assert ("appends: 1 acknowledged, 0 with unknown outcome, 1 not applied (1 of them "
            "because the key was full: the token moved on to the next key)") in text
    assert "increments: 1 acknowledged, 0 with unknown outcome, 0 failed definitely" in text
    stale = check_stale_reads([], [], monotonic=False).summary()
    assert stale.endswith("0 anomaly(ies) (a value never written)")


def test_no_faults_asked_for():
    r = _result()
    r.fault_coverage = fault_coverage(plan_faults((), 10, seed=1), {}, {}, {})
    r.faults = {}
    text = r.text()
    assert "faults injected: none (--nemesis none)" in text
    assert "fault outcomes" not in text and r.fault_coverage["all_ran"]
