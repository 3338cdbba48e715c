"""Tests of the linearizability checker (fastraft.verify.linearizability).

Hand-made histories with a known verdict (the classic anomalies: a stale read after a completed
write, two clients seeing two concurrent writes in opposite orders, info writes that may or may
not have happened, cas chains), generated histories that come from a real sequential execution
stretched into random concurrency windows (always linearizable) and then corrupted, the time
budget, and the stale-read checker. Seeded and fast.
"""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastraft.verify.linearizability import (
    OK,
    UNKNOWN,
    VIOLATION,
    Operation,
    check,
    check_key,
    check_stale_reads,
    prepare,
)

INF = math.inf


def R(p, value, call, ret, key="x", status="ok", index=-1):
    return Operation(p, "read", key, None, value, call, ret, status, index)


def W(p, value, call, ret, key="x", status="ok", index=-1):
    return Operation(p, "write", key, value, None, call, ret, status, index)


def C(p, expected, new, result, call, ret, key="x", status="ok", index=-1):
    return Operation(p, "cas", key, (expected, new), result, call, ret, status, index)


def verdict(ops, **kw):
    return check(ops, **kw).verdict


# -- hand-made histories -------------------------------------------------------------------------


def test_empty_and_initial_read():
    assert verdict([]) == OK
    assert verdict([R(1, None, 0, 1)]) == OK
    assert verdict([R(1, 1, 0, 1)]) == VIOLATION  # nothing was written


def test_sequential_register():
    h = [W(1, 1, 0, 1), R(2, 1, 2, 3), W(1, 2, 4, 5), R(2, 2, 6, 7)]
    res = check(h)
    assert res.verdict == OK
    assert [op.call for op in res.keys["x"].linearization] == [0, 2, 4, 6]


def test_stale_read_after_completed_write_is_a_violation():
    h = [W(1, 1, 0, 1), W(1, 2, 2, 3), R(2, 1, 4, 5)]
    res = check(h)
    assert res.verdict == VIOLATION
    v = res.violations[0]
    assert v.blocked.f == "read" and v.blocked.output == 1
    assert v.state == 2
    text = res.summary()
    assert "NOT linearizable" in text and "read() = 1" in text
    # The window is the read alone (the register holds 2 when it begins), after the writes.
    assert v.start_states == [2] and v.witness == [h[2]]
    assert v.before == h[:2]
    assert "before the failing window" in text


def test_read_concurrent_with_write_may_see_either():
    for seen in (None, 1):
        h = [W(1, 1, 0, 10), R(2, seen, 1, 2)]
        assert verdict(h) == OK
    # but once a read saw the new value, a later read may not see the old one
    h = [W(1, 1, 0, 10), R(2, 1, 1, 2), R(3, None, 3, 4)]
    assert verdict(h) == VIOLATION


def test_two_concurrent_writes_seen_in_both_orders_is_a_violation():
    # writes of 1 and 2 overlap; client 3 sees 1 then 2, client 4 sees 2 then 1, all reads
    # after both writes completed.
    h = [W(1, 1, 0, 5), W(2, 2, 0, 5),
         R(3, 1, 6, 7), R(4, 2, 6, 7),
         ]
    assert verdict(h) == VIOLATION
    # while the writes are still running, both orders are fine as long as they are consistent
    h = [W(1, 1, 0, 20), W(2, 2, 0, 20),
         R(3, 1, 1, 2), R(3, 2, 3, 4), R(4, 2, 3.5, 4.5)]
    assert verdict(h) == OK
    h = [W(1, 1, 0, 20), W(2, 2, 0, 20),
         R(3, 1, 1, 2), R(3, 2, 3, 4),
         R(4, 2, 5, 6), R(4, 1, 7, 8)]           # 1 -> 2 -> 1 needs a third write
    assert verdict(h) == VIOLATION


def test_info_write_may_or_may_not_have_happened():
    # it happened (read after it sees it) ...
    assert verdict([W(1, 1, 0, 1, status="info"), R(2, 1, 5, 6)]) == OK
    # ... or it never did ...
    assert verdict([W(1, 1, 0, 1, status="info"), R(2, None, 5, 6)]) == OK
    # ... or it happened late: long after its client gave up on it
    h = [W(1, 1, 0, 1, status="info"), R(2, None, 5, 6), R(2, 1, 7, 8)]
    assert verdict(h) == OK
    # but it cannot take effect before it was invoked
    h = [R(2, 1, 0, 1), W(1, 1, 2, 3, status="info")]
    assert verdict(h) == VIOLATION
    # and it takes effect once: 1, then 2, then 1 again is impossible
    h = [W(1, 1, 0, 1, status="info"), R(2, 1, 2, 3), W(2, 2, 4, 5), R(2, 1, 6, 7)]
    assert verdict(h) == VIOLATION


def test_fail_operations_are_dropped():
    h = [W(1, 1, 0, 1, status="fail"), R(2, None, 5, 6)]
    assert verdict(h) == OK
    h = [W(1, 1, 0, 1, status="fail"), R(2, 1, 5, 6)]
    assert verdict(h) == VIOLATION
    assert prepare([R(1, None, 0, 1, status="info")]) == []
    assert prepare([W(1, 1, 0, 1, status="info")])[0].ret == INF


def test_cas_chains():
    h = [W(1, 0, 0, 1),
         C(1, 0, 1, True, 2, 3), C(2, 0, 5, False, 2.5, 3.5),
         C(1, 1, 2, True, 4, 5), R(2, 2, 6, 7)]
    assert verdict(h) == OK
    # a cas that claims to have swapped from a value the register never held
    h = [W(1, 0, 0, 1), C(1, 7, 1, True, 2, 3)]
    assert verdict(h) == VIOLATION
    # a cas that claims failure although the register held the expected value
    h = [W(1, 0, 0, 1), C(1, 0, 1, False, 2, 3)]
    assert verdict(h) == VIOLATION
    # two concurrent cas from the same value cannot both win
    h = [W(1, 0, 0, 1), C(1, 0, 1, True, 2, 4), C(2, 0, 2, True, 2, 4)]
    assert verdict(h) == VIOLATION
    # expected=None means "absent"
    assert verdict([C(1, None, 1, True, 0, 1), R(1, 1, 2, 3)]) == OK
    # an info cas may have swapped, later, or not at all
    h = [W(1, 0, 0, 1), C(1, 0, 1, None, 2, 3, status="info"), R(2, 0, 4, 5), R(2, 1, 6, 7)]
    assert verdict(h) == OK
    h = [W(1, 0, 0, 1), C(1, 0, 1, None, 2, 3, status="info"), R(2, 1, 4, 5), R(2, 0, 6, 7)]
    assert verdict(h) == VIOLATION


def test_keys_are_independent():
    h = [W(1, 1, 0, 1, key="a"), R(2, 1, 2, 3, key="a"),
         W(1, 1, 0, 1, key="b"), R(2, None, 2, 3, key="b")]
    res = check(h)
    assert res.verdict == VIOLATION
    assert res.keys["a"].verdict == OK and res.keys["b"].verdict == VIOLATION
    assert res.violations[0].key == "b"


def test_violation_report_names_the_window():
    # a long legal history, then a read that saw an overwritten value: the report is about
    # the few operations around it, not the whole history.
    h = []
    t = 0.0
    for v in range(1, 40):
        h.append(W(1, v, t, t + 1, index=len(h)))
        h.append(R(2, v, t + 2, t + 3, index=len(h)))
        t += 4
    h.append(W(1, 40, t, t + 2, index=len(h)))        # concurrent with the bad read
    h.append(R(3, 5, t + 1, t + 3, index=len(h)))
    res = check_key("x", h)
    assert res.verdict == VIOLATION
    v = res.violation
    assert v.blocked.index == len(h) - 1
    assert v.window == (t, t + 3) and v.start_states == [39]
    assert v.witness is not None and len(v.witness) <= 2
    assert v.witness[-1] is v.blocked
    text = v.format()
    assert "failing window: " in text and "#79" in text and "may hold 39" in text


def test_long_history_violation_is_fast():
    """Quiescent cuts keep a violation late in a long, busy history cheap to find."""
    rng = random.Random(5)
    ops = _execution(rng, 3000, 1, info_rate=0.02)
    reads = [i for i, op in enumerate(ops) if op.f == "read"]
    i = reads[-10]
    op = ops[i]
    ops[i] = Operation(op.process, "read", op.key, None, "never-written", op.call, op.ret,
                       "ok", op.index)
    t0 = time.monotonic()
    res = check(ops, budget=20)
    assert res.verdict == VIOLATION
    assert time.monotonic() - t0 < 10


def test_operation_validation():
    with pytest.raises(ValueError):
        Operation(1, "incr", "x", 1, None, 0, 1)
    with pytest.raises(ValueError):
        Operation(1, "cas", "x", 1, True, 0, 1)
    with pytest.raises(ValueError):
        Operation(1, "read", "x", None, None, 2, 1)
    with pytest.raises(ValueError):
        Operation(1, "read", "x", None, None, 0, 1, status="maybe")


# -- the budget ----------------------------------------------------------------------------------


def _hard_history(n=16):
    """n fully concurrent writes, then two sequential reads that disagree: a violation, but
    only after trying every subset of the writes."""
    h = [W(i, i, 0, 10) for i in range(1, n + 1)]
    h += [R(100, 1, 11, 12), R(100, 2, 13, 14)]
    return h


def test_budget_gives_unknown():
    t0 = time.monotonic()
    res = check(_hard_history(), budget=0.2)
    assert res.verdict == UNKNOWN
    assert res.keys["x"].verdict == UNKNOWN
    assert time.monotonic() - t0 < 2.0
    assert "UNKNOWN" in res.summary()
    # the small version of the same history is decided
    assert check(_hard_history(4), budget=5).verdict == VIOLATION


def test_unknown_does_not_hide_a_violation_elsewhere():
    h = _hard_history() + [W(1, 1, 0, 1, key="y"), R(2, 2, 2, 3, key="y")]
    res = check(h, budget=0.5)
    assert res.verdict == VIOLATION
    assert res.keys["y"].verdict == VIOLATION


# -- generated histories -------------------------------------------------------------------------


def _execution(rng: random.Random, nops: int, nkeys: int, info_rate: float = 0.1):
    """A real sequential execution stretched into concurrency: operation i takes effect at
    time 10*i, was invoked up to 25 time units earlier and returned up to 25 later. Some
    operations end ``info`` (applied or not) or ``fail`` (not applied). Values are unique."""
    state = {}
    ops = []
    next_value = 1
    for i in range(nops):
        key = rng.randrange(nkeys)
        t = 10.0 * i
        call = t - rng.uniform(0, 25)
        ret = t + rng.uniform(0, 25)
        p = rng.randrange(6)
        kind = rng.choice(["read", "read", "write", "cas"])
        fate = rng.random()
        cur = state.get(key)
        if kind == "read":
            op = R(p, cur, call, ret, key=key, index=i)
        elif kind == "write":
            v = next_value
            next_value += 1
            if fate < info_rate / 2:                  # info, never applied
                op = W(p, v, call, ret, key=key, status="info", index=i)
            elif fate < info_rate:                    # info, applied
                state[key] = v
                op = W(p, v, call, ret, key=key, status="info", index=i)
            elif fate < info_rate * 1.5:              # fail: not applied
                op = W(p, v, call, ret, key=key, status="fail", index=i)
            else:
                state[key] = v
                op = W(p, v, call, ret, key=key, index=i)
        else:
            v = next_value
            next_value += 1
            expected = cur if rng.random() < 0.6 else rng.randrange(next_value)
            swapped = expected == cur
            if fate < info_rate:
                if swapped and rng.random() < 0.5:
                    state[key] = v
                op = C(p, expected, v, None, call, ret, key=key, status="info", index=i)
            else:
                if swapped:
                    state[key] = v
                op = C(p, expected, v, swapped, call, ret, key=key, index=i)
        ops.append(op)
    return ops


@settings(max_examples=120, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), nops=st.integers(1, 40), nkeys=st.integers(1, 3),
       plain_first=st.booleans())
def test_generated_histories_are_linearizable(seed, nops, nkeys, plain_first):
    ops = _execution(random.Random(seed), nops, nkeys)
    rng = random.Random(seed + 1)
    rng.shuffle(ops)   # record order does not matter
    res = check(ops, budget=10, plain_first=plain_first)
    assert res.verdict == OK, f"seed={seed}\n{res.summary()}"


@settings(max_examples=120, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), nops=st.integers(2, 40), nkeys=st.integers(1, 3),
       impossible=st.booleans())
def test_corrupted_reads_are_caught(seed, nops, nkeys, impossible):
    rng = random.Random(seed)
    ops = _execution(rng, nops, nkeys)
    reads = [i for i, op in enumerate(ops) if op.f == "read"]
    if not reads:
        return
    i = rng.choice(reads)
    op = ops[i]
    if impossible:
        # a value no operation ever wrote: no linearization can explain it
        ops[i] = Operation(op.process, "read", op.key, None, "never-written", op.call, op.ret,
                           "ok", op.index)
        res = check(ops, budget=10)
        assert res.verdict == VIOLATION, f"seed={seed}"
        assert res.violations[0].key == op.key
    else:
        # some other value that was written to that key: usually, not always, a violation
        values = {o.value if o.f == "write" else o.value[1]
                  for o in ops if o.key == op.key and o.f != "read"} | {None}
        values.discard(op.output)
        if not values:
            return
        ops[i] = Operation(op.process, "read", op.key, None, rng.choice(sorted(values, key=repr)),
                           op.call, op.ret, "ok", op.index)
        res = check(ops, budget=10)
        assert res.verdict in (OK, VIOLATION), f"seed={seed}"


def test_corruptions_are_usually_caught():
    """Replace one read's value by another value of the same key: the checker must say
    violation for most seeds (a concurrent write can legitimately explain some)."""
    caught = total = 0
    for seed in range(150):
        rng = random.Random(seed)
        ops = _execution(rng, 30, 1, info_rate=0.0)
        reads = [i for i, op in enumerate(ops) if op.f == "read"]
        written = [o.value for o in ops if o.f == "write" and o.status == "ok"]
        if not reads or len(written) < 3:
            continue
        i = rng.choice(reads)
        op = ops[i]
        choices = [v for v in written if v != op.output]
        ops[i] = Operation(op.process, "read", op.key, None, rng.choice(choices),
                           op.call, op.ret, "ok", op.index)
        total += 1
        if check(ops, budget=10).verdict == VIOLATION:
            caught += 1
    assert total > 100
    assert caught / total > 0.6, (caught, total)


# -- stale reads ---------------------------------------------------------------------------------


def test_stale_reads_may_lag_but_only_to_written_values():
    writes = [W(1, 1, 0, 1), W(1, 2, 2, 3)]
    reads = [R(2, None, 4, 5), R(3, 1, 4, 5), R(3, 2, 6, 7)]
    res = check_stale_reads(reads, writes)
    assert res.ok and res.reads == 3
    res = check_stale_reads([R(2, 9, 4, 5)], writes)
    assert not res.ok and res.anomalies[0].kind == "never-written"
    # a value from the future: its write was invoked after the read returned
    res = check_stale_reads([R(2, 2, 0.5, 1.5)], writes)
    assert not res.ok and res.anomalies[0].kind == "never-written"
    # info writes count (they may have happened); failed ones do not
    assert check_stale_reads([R(2, 5, 4, 5)], [W(1, 5, 0, 1, status="info")]).ok
    assert not check_stale_reads([R(2, 5, 4, 5)], [W(1, 5, 0, 1, status="fail")]).ok
    # a cas writes its new value unless it certainly failed
    assert check_stale_reads([R(2, 5, 4, 5)], [C(1, None, 5, True, 0, 1)]).ok
    assert not check_stale_reads([R(2, 5, 4, 5)], [C(1, 3, 5, False, 0, 1)]).ok


def test_stale_reads_are_monotonic_per_client():
    writes = [W(1, 1, 0, 1), W(1, 2, 2, 3), W(1, 3, 10, 20), W(2, 4, 10, 20)]
    # client 3 reads 2 then 1: backwards
    res = check_stale_reads([R(3, 2, 4, 5), R(3, 1, 6, 7)], writes)
    assert [a.kind for a in res.anomalies] == ["non-monotonic"]
    assert "goes back in time" in res.summary()
    # None after a value is backwards too
    res = check_stale_reads([R(3, 1, 4, 5), R(3, None, 6, 7)], writes)
    assert [a.kind for a in res.anomalies] == ["non-monotonic"]
    # different clients may disagree
    assert check_stale_reads([R(3, 2, 4, 5), R(4, 1, 6, 7)], writes).ok
    # concurrent writes have no certain order: 3 then 4 then 3 is not flagged
    assert check_stale_reads([R(3, 3, 21, 22), R(3, 4, 23, 24), R(3, 3, 25, 26)], writes).ok
    # and without the monotonic promise, backwards is fine
    assert check_stale_reads([R(3, 2, 4, 5), R(3, 1, 6, 7)], writes, monotonic=False).ok
    # keys are separate
    assert check_stale_reads([R(3, 2, 4, 5), R(3, None, 6, 7, key="y")], writes).ok


# -- against a brute-force reference -------------------------------------------------------------


def _reference(ops) -> bool:
    """Linearizable by exhaustion: some order of some of the info operations and all the ok
    ones that respects real time (a before b when a returned before b was invoked) and the
    register model."""
    from itertools import permutations

    from fastraft.verify.linearizability import RegisterModel

    ops = prepare(ops)
    ok_ops = [o for o in ops if o.ret != INF]
    info = [o for o in ops if o.ret == INF]
    for mask in range(1 << len(info)):
        chosen = ok_ops + [o for i, o in enumerate(info) if mask >> i & 1]
        for perm in permutations(range(len(chosen))):
            pos = {p: k for k, p in enumerate(perm)}
            if any(chosen[a].ret < chosen[b].call and pos[a] > pos[b]
                   for a in range(len(chosen)) for b in range(len(chosen))):
                continue
            state = None
            for p in perm:
                legal, state = RegisterModel.step(state, chosen[p])
                if not legal:
                    break
            else:
                return True
    return False


_vals = st.sampled_from([None, 1, 2, 3])


@st.composite
def _small_history(draw):
    n = draw(st.integers(1, 6))
    ops = []
    for i in range(n):
        call = draw(st.integers(0, 8))
        ret = call + draw(st.integers(0, 4))
        status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        f = draw(st.sampled_from(["read", "write", "cas"]))
        if f == "read":
            ops.append(R(i, draw(_vals), call, ret, status=status, index=i))
        elif f == "write":
            ops.append(W(i, draw(st.sampled_from([1, 2, 3])), call, ret, status=status, index=i))
        else:
            ops.append(C(i, draw(_vals), draw(st.sampled_from([1, 2, 3])), draw(st.booleans()),
                         call, ret, status=status, index=i))
    return ops


@settings(max_examples=400, deadline=None, derandomize=True)
@given(ops=_small_history())
def test_agrees_with_brute_force(ops):
    expected = OK if _reference(ops) else VIOLATION
    for plain_first in (True, False):
        res = check(ops, budget=10, plain_first=plain_first)
        assert res.verdict == expected, (f"plain_first={plain_first}\n"
                                         + "\n".join(o.describe() for o in ops) + "\n"
                                         + res.summary())
