"""Linearizability checking of client histories: Wing & Gong's search with Porcupine's tricks.

Place in the architecture: part of the verification framework (``fastraft.verify``), which
observes a cluster from the outside the way Jepsen does. This module is pure computation: it
imports only the standard library (never the server, the client or asyncio). ``history.py``
turns a recorded JSON-lines history into the ``Operation`` values checked here.

The model is one register per key::

    read()              -> the current value (None before any write)
    write(v)            -> sets the value
    cas(expected, new)  -> swaps and returns True when current == expected, else False
                           (expected=None means "absent", as in the client API)

Outcomes of an operation (thesis §6.3 and the client's error split):

- ``ok``:   it completed with the recorded output; it took effect at one instant between its
            invocation and its completion.
- ``fail``: it certainly did not take effect: it is dropped before the search.
- ``info``: unknown. It may have taken effect at any instant after its invocation, or never:
            its completion time is +infinity and any output is accepted. An info read
            changes nothing and is dropped. "Never" is the same as "after everything else",
            so the search succeeds as soon as every ``ok`` operation is placed.

The search (Lowe, "Testing for linearizability", 2016; Porcupine, anishathalye/porcupine
``checker.go``):

- P-compositionality (Herlihy & Wing): a history is linearizable iff each key's
  sub-history is, so every key is checked on its own (and a violation names its key).
- The history becomes a doubly linked list of call and return entries in time order (a call
  sorts before a return at the same instant: equal times count as concurrent, the lenient
  reading). Walking the list, a call whose operation the model accepts in the current state
  is linearized: its call and return entries are *lifted* out of the list and pushed on a
  stack; reaching a return entry means the pending operations before it cannot all be placed,
  so the last choice is popped and *unlifted* and the walk continues after it.
- Memoization: a (set of linearized operations as an int bitset, model state) pair that was
  seen before leads nowhere new and is skipped (Lowe's cache).
- A time budget per key (``budget`` seconds for the whole check, shared out): when it runs out
  the verdict is ``unknown`` — never ``ok`` by default.

On a violation the report holds the deepest partial linearization the search reached (the
longest linearizable prefix), the operation that could not be placed after it, the
operations concurrent with that one, and a *witness*: a sub-history, cut after the blocking
operation and stripped of every read and failed cas that is not needed (removing a
state-preserving operation never makes a linearizable history non-linearizable, so the
witness is a faithful excerpt), small enough for a human to replay by hand.

Stale reads (``get(..., stale=True)``) promise less and are checked apart, by
``check_stale_reads``: the value read was written by some write invoked before the read
returned (or is the initial None), and per client the values read from a key never go back
to a value certainly older than one that client already read (monotonic reads).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Iterable

__all__ = [
    "Operation", "RegisterModel", "KeyResult", "CheckResult", "Violation",
    "StaleReadAnomaly", "StaleReadResult",
    "check", "check_key", "check_stale_reads", "prepare",
    "OK", "VIOLATION", "UNKNOWN",
]

OK = "ok"
VIOLATION = "violation"
UNKNOWN = "unknown"

_READ, _WRITE, _CAS = "read", "write", "cas"
_KINDS = frozenset({_READ, _WRITE, _CAS})
_STATUSES = frozenset({"ok", "fail", "info"})


@dataclass(frozen=True, slots=True)
class Operation:
    """One completed (or abandoned) client operation on one key.

    ``value``: the argument — the value for a write, ``(expected, new)`` for a cas, None for
    a read. ``output``: the result — the value read, the cas's bool, None for a write; ignored
    when ``status`` is ``info``. ``call`` <= ``ret`` are monotonic times; ``ret`` is
    ``math.inf`` for an info operation (``prepare`` sets it). ``index``: the operation's
    position in the recorded history, for reports."""

    process: Hashable
    f: str
    key: Hashable
    value: Any
    output: Any
    call: float
    ret: float
    status: str = "ok"
    index: int = -1

    def __post_init__(self) -> None:
        if self.f not in _KINDS:
            raise ValueError(f"unknown operation kind {self.f!r} (read, write or cas)")
        if self.status not in _STATUSES:
            raise ValueError(f"unknown status {self.status!r} (ok, fail or info)")
        if self.f == _CAS and (not isinstance(self.value, tuple) or len(self.value) != 2):
            raise ValueError("a cas takes value=(expected, new)")
        if not self.call <= self.ret:
            raise ValueError(f"operation returns before it is invoked: {self.call} > {self.ret}")

    def describe(self) -> str:
        """One readable line: ``[p3 #17] cas(b'1' -> b'2') = True  @0.1200..0.1350 ok``."""
        if self.f == _READ:
            what = f"read() = {self.output!r}" if self.status == "ok" else "read() = ?"
        elif self.f == _WRITE:
            what = f"write({self.value!r})"
        else:
            res = repr(self.output) if self.status == "ok" else "?"
            what = f"cas({self.value[0]!r} -> {self.value[1]!r}) = {res}"
        ret = "inf" if self.ret == math.inf else f"{self.ret:.4f}"
        where = f"p{self.process}" + (f" #{self.index}" if self.index >= 0 else "")
        return f"[{where}] {what}  @{self.call:.4f}..{ret} {self.status}"


class RegisterModel:
    """The sequential specification of one register (see the module docstring).

    ``step(state, op) -> (legal, new_state)``; states are the register's values and must be
    hashable (they enter the memo cache)."""

    init = None

    @staticmethod
    def step(state, op: Operation):
        f = op.f
        if f == _READ:
            return op.status == "info" or op.output == state, state
        if f == _WRITE:
            return True, op.value
        expected, new = op.value
        swapped = state == expected
        if op.status == "info":
            return True, new if swapped else state
        if swapped != op.output:
            return False, state
        return True, new if swapped else state

    @staticmethod
    def mutates(op: Operation) -> bool:
        """Whether ``op`` can change the state (reads and failed cas operations cannot)."""
        if op.f == _READ:
            return False
        if op.f == _CAS and op.status == "ok" and op.output is False:
            return False
        return True


@dataclass
class Violation:
    """Why one key's history is not linearizable (see ``format``)."""

    key: Hashable
    prefix: list[Operation]
    state: Any
    blocked: Operation
    concurrent: list[Operation]
    witness: list[Operation] | None = None

    def format(self, context: int = 8) -> str:
        lines = [f"key {self.key!r}: NOT linearizable"]
        n = len(self.prefix)
        lines.append(f"  longest linearizable prefix: {n} operation(s), in linearization order"
                     + (f" (last {context} shown)" if n > context else "") + ":")
        for op in self.prefix[-context:]:
            lines.append(f"      {op.describe()}")
        lines.append(f"  register value after it: {self.state!r}")
        lines.append(f"  cannot be placed after it: {self.blocked.describe()}")
        if self.concurrent:
            lines.append("  operations not yet placed that overlap it (tried before it, "
                         "in every order):")
            for op in self.concurrent:
                lines.append(f"      {op.describe()}")
        if self.witness is not None:
            lines.append(f"  smallest failing window found ({len(self.witness)} operation(s), "
                         "time order; no order of them is legal):")
            for op in self.witness:
                lines.append(f"      {op.describe()}")
        return "\n".join(lines)

    __str__ = format


@dataclass
class KeyResult:
    """The verdict for one key: ``ok`` (with one legal order in ``linearization``),
    ``violation`` (with ``violation``) or ``unknown`` (the budget ran out)."""

    key: Hashable
    verdict: str
    operations: int
    elapsed: float
    linearization: list[Operation] | None = None
    violation: Violation | None = None


@dataclass
class CheckResult:
    """The verdict of a whole history: ``violation`` if any key has one, else ``unknown`` if
    any key ran out of budget, else ``ok``."""

    verdict: str
    keys: dict = field(default_factory=dict)
    operations: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == OK

    @property
    def violations(self) -> list[Violation]:
        return [r.violation for r in self.keys.values() if r.violation is not None]

    def summary(self) -> str:
        counts = {OK: 0, VIOLATION: 0, UNKNOWN: 0}
        for r in self.keys.values():
            counts[r.verdict] += 1
        head = (f"linearizability: {self.verdict.upper()} — {self.operations} operations on "
                f"{len(self.keys)} key(s) in {self.elapsed:.2f} s "
                f"(ok {counts[OK]}, violation {counts[VIOLATION]}, unknown {counts[UNKNOWN]})")
        parts = [head]
        for r in self.keys.values():
            if r.verdict == UNKNOWN:
                parts.append(f"key {r.key!r}: UNKNOWN (budget exhausted after "
                             f"{r.elapsed:.2f} s, {r.operations} operations)")
        parts.extend(v.format() for v in self.violations)
        return "\n".join(parts)


def prepare(ops: Iterable[Operation]) -> list[Operation]:
    """What the search sees: ``fail`` operations and ``info`` reads dropped (neither changed
    anything), ``info`` operations completing at +infinity."""
    out = []
    for op in ops:
        if op.status == "fail":
            continue
        if op.status == "info":
            if op.f == _READ:
                continue
            if op.ret != math.inf:
                op = replace(op, ret=math.inf)
        out.append(op)
    return out


class _Budget(Exception):
    pass


def _search(ops: list[Operation], model, deadline: float, want_report: bool):
    """Lowe's search over ``ops`` (one key, prepared). Returns ``(True, order)`` or
    ``(False, (prefix_ids, state, blocked_id))``; raises _Budget past ``deadline``."""
    n = len(ops)
    # Entries 0..n-1 are calls, n..2n-1 returns; entry 2n is the head sentinel.
    order = sorted(range(2 * n), key=lambda e: (ops[e].call, 0, e) if e < n
                   else (ops[e - n].ret, 1, e))
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for e in order:
        nxt[last] = e
        prv[e] = last
        last = e
    finite = sum(1 for op in ops if op.ret != math.inf)
    is_finite = [op.ret != math.inf for op in ops]
    step = model.step
    state = model.init
    linearized = 0
    cache = set()
    stack: list[tuple[int, Any]] = []   # (op id, state before it)
    best_depth = -1
    best = None
    entry = nxt[head]
    iterations = 0
    while finite:
        iterations += 1
        if not iterations & 0x3FF and time.monotonic() > deadline:
            raise _Budget
        if entry < n:
            op = ops[entry]
            legal, new_state = step(state, op)
            if legal:
                lin = linearized | (1 << entry)
                k = (lin, new_state)
                if k not in cache:
                    cache.add(k)
                    stack.append((entry, state))
                    state = new_state
                    linearized = lin
                    if is_finite[entry]:
                        finite -= 1
                    # lift the call and its return out of the list
                    r = entry + n
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[r], nxt[r]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # a return entry: its operation could not be placed before here
            if want_report and len(stack) > best_depth:
                best_depth = len(stack)
                best = ([i for i, _ in stack], state, entry - n)
            if not stack:
                return False, best
            top, state = stack.pop()
            linearized &= ~(1 << top)
            if is_finite[top]:
                finite += 1
            r = top + n
            p, q = prv[r], nxt[r]
            nxt[p] = r
            if q != -1:
                prv[q] = r
            p, q = prv[top], nxt[top]
            nxt[p] = top
            prv[q] = top
            entry = nxt[top]
        if entry == -1:  # only info returns remain unvisited: cannot happen while finite > 0
            raise AssertionError("linearizability search ran off the entry list")
    return True, [i for i, _ in stack]


def _minimize(ops: list[Operation], blocked: Operation, model, deadline: float):
    """A small sub-history that is still not linearizable: cut after the blocking operation
    returns, then drop state-preserving operations one by one while the rest still fails.
    Returns None when the budget runs out or the cut alone is linearizable."""
    cut = [op for op in ops if op.call <= blocked.ret]

    def fails(sub) -> bool:
        ok, _ = _search(sub, model, deadline, False)
        return not ok

    try:
        if not fails(cut):
            return None
        i = len(cut) - 1
        while i >= 0:
            op = cut[i]
            if op is not blocked and not model.mutates(op):
                trial = cut[:i] + cut[i + 1:]
                if fails(trial):
                    cut = trial
            i -= 1
        # A write whose value nobody reads may go too, when the rest still fails.
        i = len(cut) - 1
        while i >= 0:
            op = cut[i]
            if op is not blocked and model.mutates(op):
                trial = cut[:i] + cut[i + 1:]
                if _unexplained(trial) <= _unexplained(cut) and fails(trial):
                    cut = trial
            i -= 1
    except _Budget:
        return None
    return sorted(cut, key=lambda o: (o.call, o.index))


def _unexplained(ops: list[Operation]) -> set:
    """The ok reads (and successful cas) whose value no op in ``ops`` writes (None aside):
    the minimizer may not add to them, so the witness never blames a write it removed."""
    written = {None}
    for op in ops:
        if op.f == _WRITE:
            written.add(op.value)
        elif op.f == _CAS:
            written.add(op.value[1])
    out = set()
    for op in ops:
        if op.status != "ok":
            continue
        if op.f == _READ and op.output not in written:
            out.add(id(op))
        elif op.f == _CAS and op.output is True and op.value[0] not in written:
            out.add(id(op))
    return out


def check_key(key, ops: Iterable[Operation], budget: float = 10.0, model=RegisterModel,
              minimize: bool = True) -> KeyResult:
    """Check one key's operations (raw or prepared); see ``check``."""
    t0 = time.monotonic()
    deadline = t0 + budget
    ops = prepare(ops)
    # Ids follow time order so that bitsets and reports read naturally.
    ops.sort(key=lambda o: (o.call, o.ret, o.index))
    if not any(op.ret != math.inf for op in ops):
        return KeyResult(key, OK, len(ops), time.monotonic() - t0, [])
    try:
        ok, res = _search(ops, model, deadline, True)
    except _Budget:
        return KeyResult(key, UNKNOWN, len(ops), time.monotonic() - t0)
    if ok:
        return KeyResult(key, OK, len(ops), time.monotonic() - t0, [ops[i] for i in res])
    prefix_ids, state, blocked_id = res
    blocked = ops[blocked_id]
    placed = set(prefix_ids)
    concurrent = [op for i, op in enumerate(ops)
                  if i not in placed and i != blocked_id and op.call <= blocked.ret]
    v = Violation(key, [ops[i] for i in prefix_ids], state, blocked, concurrent)
    if minimize:
        v.witness = _minimize(ops, blocked, model, deadline + budget * 0.25)
    return KeyResult(key, VIOLATION, len(ops), time.monotonic() - t0, violation=v)


def check(ops: Iterable[Operation], budget: float = 30.0, model=RegisterModel,
          minimize: bool = True) -> CheckResult:
    """Check a history of linearizable operations on any number of keys.

    Each key is checked on its own (P-compositionality), smallest first, with what is left of
    ``budget`` seconds shared evenly among the keys still to check. Returns a CheckResult;
    ``result.summary()`` is the report a human reads."""
    t0 = time.monotonic()
    by_key: dict = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    result = CheckResult(OK)
    keys = sorted(by_key, key=lambda k: len(by_key[k]))
    for i, key in enumerate(keys):
        left = max(0.0, budget - (time.monotonic() - t0))
        share = left / (len(keys) - i)
        r = check_key(key, by_key[key], share, model, minimize)
        result.keys[key] = r
        result.operations += r.operations
        if r.verdict == VIOLATION:
            result.verdict = VIOLATION
        elif r.verdict == UNKNOWN and result.verdict == OK:
            result.verdict = UNKNOWN
    result.keys = {k: result.keys[k] for k in sorted(result.keys, key=repr)}
    result.elapsed = time.monotonic() - t0
    return result


# -- stale reads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleReadAnomaly:
    """A stale read that breaks its promise: ``kind`` is ``never-written`` (no write of that
    value was invoked before the read returned) or ``non-monotonic`` (the client had already
    read ``newer``, whose write began after the write of this value had completed)."""

    kind: str
    read: Operation
    newer: Operation | None = None

    def describe(self) -> str:
        if self.kind == "never-written":
            return (f"key {self.read.key!r}: {self.read.describe()} — no write of that value "
                    "was invoked before this read returned")
        return (f"key {self.read.key!r}: {self.read.describe()} — goes back in time: the same "
                f"client had read {self.newer.output!r} before "
                f"({self.newer.describe()}), written after this value")


@dataclass
class StaleReadResult:
    anomalies: list[StaleReadAnomaly]
    reads: int

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def summary(self) -> str:
        head = (f"stale reads: {'OK' if self.ok else 'ANOMALIES'} — {self.reads} read(s) "
                f"checked, {len(self.anomalies)} anomaly(ies)")
        return "\n".join([head] + ["  " + a.describe() for a in self.anomalies])


def check_stale_reads(reads: Iterable[Operation], writes: Iterable[Operation],
                      monotonic: bool = True) -> StaleReadResult:
    """Check stale reads (``ok`` read operations) against every write and cas that may have
    taken effect (``ok`` or ``info``; a cas is counted as a write of its new value unless it
    certainly failed). Assumes each value is written at most once per key (the workload
    writes unique values), which makes "older" decidable from real time: value ``a`` is
    certainly older than ``b`` when the write of ``a`` completed before the write of ``b``
    was invoked. Per client (``process``), reads are taken in invocation order.

    Cost: O(reads + writes) plus a sort."""
    writers: dict = {}   # (key, value) -> the earliest-invoked op that may have written it
    for w in writes:
        if w.status == "fail":
            continue
        if w.f == _WRITE:
            v = w.value
        elif w.f == _CAS:
            if w.status == "ok" and w.output is False:
                continue
            v = w.value[1]
        else:
            continue
        k = (w.key, v)
        ret = math.inf if w.status == "info" else w.ret
        w = replace(w, ret=ret) if ret != w.ret else w
        if k not in writers or w.call < writers[k].call:
            writers[k] = w
    anomalies = []
    n = 0
    last_seen: dict = {}   # (process, key) -> the read holding the newest value seen
    for r in sorted((r for r in reads if r.status == "ok" and r.f == _READ),
                    key=lambda o: (o.call, o.index)):
        n += 1
        w = None
        if r.output is not None:
            w = writers.get((r.key, r.output))
            if w is None or w.call > r.ret:
                anomalies.append(StaleReadAnomaly("never-written", r))
                continue
        if not monotonic:
            continue
        pk = (r.process, r.key)
        prev = last_seen.get(pk)
        if prev is None:
            last_seen[pk] = r
            continue
        # The bar is the value read before whose write was invoked last: a value whose write
        # completed before that invocation is certainly older (the initial None is older
        # than everything).
        prev_w = writers.get((r.key, prev.output)) if prev.output is not None else None
        if prev_w is not None and (w is None or w.ret < prev_w.call):
            anomalies.append(StaleReadAnomaly("non-monotonic", r, prev))
            continue
        if w is not None and (prev_w is None or w.call > prev_w.call):
            last_seen[pk] = r
    return StaleReadResult(anomalies, n)
