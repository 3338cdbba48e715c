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
- Plain search first: on a linearizable history the search above finds an order in one
  mostly forward pass, so it runs first on the whole key history (for 40 µs per operation,
  at least a second, at most a fifth of the budget); only when it fails or runs long does
  the segmented search below decide (and locate the failing window).
- Quiescent cuts: a key's history is cut wherever no finite operation is in flight, and the
  segments are searched one after the other. A segment's search starts from every
  *configuration* the previous segment can end in — a register value plus the info
  operations not yet placed (they may still happen) — and collects every configuration it
  can end in (dominated ones, with fewer unplaced info operations, are dropped). A violation
  late in a long history then costs one segment, not a backtrack through everything.
- Fewer states: written values that nothing observes (no ok read returns them, no cas
  expects them) are folded into one, since no operation can tell them apart; interchangeable
  info operations (same kind and argument) are placed in a fixed order; an info operation is
  never placed where it would change nothing; an info cas whose expected value can never be
  the register's again is forgotten.
- A time budget per key (``budget`` seconds for the whole check, shared out): when it runs out
  the verdict is ``unknown`` — never ``ok`` by default.

On a violation the report holds the failing window (the segment, with the values the register
may hold when it begins and the end of one linearization of everything before it), the
deepest partial linearization the search reached in it, the operation that could not be
placed after that, the operations concurrent with it, and a *witness*: the window cut after
the blocking operation and stripped of every read and failed cas that is not needed (removing
a state-preserving operation never makes a linearizable history non-linearizable, so the
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

from ..errors import FastraftError

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
        """``(legal, new_state)``: whether ``op`` may take effect in ``state`` with its
        recorded output (an info operation's output is not known: any), and the state
        after it."""
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
    #: (first invocation, last completion) of the quiescent-to-quiescent window that fails.
    window: tuple | None = None
    #: Register values possible when that window began.
    start_states: list | None = None
    #: The last operations of one linearization of the history before the window.
    before: list[Operation] = field(default_factory=list)

    def format(self, context: int = 8) -> str:
        """The report a human reads (``context``: how many operations of a long list)."""
        lines = [f"key {self.key!r}: NOT linearizable"]
        if self.before:
            lines.append("  before the failing window (the end of one linearization):")
            for op in self.before[-context:]:
                lines.append(f"      {op.describe()}")
        if self.window is not None:
            end = "inf" if self.window[1] == math.inf else f"{self.window[1]:.4f}"
            lines.append(f"  failing window: {self.window[0]:.4f}..{end} (everything before "
                         "it is linearizable); the register may hold "
                         + " or ".join(repr(s) for s in self.start_states) + " when it begins")
        n = len(self.prefix)
        lines.append(f"  longest linearizable prefix in it: {n} operation(s), in "
                     "linearization order"
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
        """Every key is linearizable."""
        return self.verdict == OK

    @property
    def violations(self) -> list[Violation]:
        """The violation of every key that has one."""
        return [r.violation for r in self.keys.values() if r.violation is not None]

    def summary(self) -> str:
        """The verdict in words: counts per key verdict, the unknown keys, each violation."""
        counts = {OK: 0, VIOLATION: 0, UNKNOWN: 0}
        for r in self.keys.values():
            counts[r.verdict] += 1
        head = (f"linearizability: {self.verdict.upper()} — {self.operations} operations on "
                f"{len(self.keys)} key(s) searched in {self.elapsed:.2f} s (keys: "
                f"{counts[OK]} linearizable, {counts[VIOLATION]} with a violation, "
                f"{counts[UNKNOWN]} unknown: the checker's time budget ran out)")
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


class _Budget(FastraftError):
    pass


def _search(ops: list[Operation], model, init, deadline: float, want_report: bool,
            collect: bool = False):
    """Lowe's search over ``ops`` (one key, prepared) from state ``init``.

    Without ``collect``: ``(True, order)`` for the first full linearization found, or
    ``(False, (prefix_ids, state, blocked_id))``. With ``collect``: every way to linearize
    all the finite operations, as ``({(state, frozenset(unplaced info ids)): order}, report)``
    (empty when there is none). Ids index ``ops``. Raises _Budget past ``deadline``."""
    n = len(ops)
    nxt, prv = _entry_list(ops)
    head = 2 * n
    is_finite = [op.ret != math.inf for op in ops]
    finite = sum(is_finite)
    info_ids = [i for i in range(n) if not is_finite[i]]
    cls, rank, placed = _info_classes(ops, info_ids)
    bit = _bit_positions(is_finite)
    step = model.step
    state = init
    low = window = ibits = 0
    cache = set()
    stack: list[tuple] = []   # (op id, state, low, window, ibits before it)
    best_depth = -1
    best = None
    terminals: dict = {}
    entry = nxt[head]
    iterations = 0
    while True:
        if not finite:
            # every finite operation is placed; info operations left may happen later
            if not collect:
                return True, [t[0] for t in stack]
            k = (state, frozenset(i for i in info_ids if not ibits >> bit[i] & 1))
            if k not in terminals:
                terminals[k] = [t[0] for t in stack]
            if not stack:
                break
            entry = n   # any return entry: backtrack below
        iterations += 1
        if not iterations & 0x3FF and time.monotonic() > deadline:
            raise _Budget
        if entry < n:
            op = ops[entry]
            c = cls[entry]
            if c != -1 and placed[c] != rank[entry]:
                entry = nxt[entry]     # an earlier twin is still unplaced: it goes first
                continue
            legal, new_state = step(state, op)
            if legal and c != -1 and new_state == state:
                # an info operation that changes nothing now: leaving it unplaced (it may
                # still happen later, or never) can do everything placing it can
                legal = False
            if legal:
                if c == -1:
                    w = window | (1 << (bit[entry] - low))
                    lo = low
                    if w & 1:   # advance the low-water mark over the placed ranks
                        t = (~w & (w + 1)).bit_length() - 1
                        w >>= t
                        lo += t
                    k = (lo, w, ibits, new_state)
                else:
                    k = (low, window, ibits | (1 << bit[entry]), new_state)
                if k not in cache:
                    cache.add(k)
                    stack.append((entry, state, low, window, ibits))
                    state = new_state
                    low, window, ibits = k[0], k[1], k[2]
                    if c == -1:
                        finite -= 1
                    else:
                        placed[c] += 1
                    _lift(nxt, prv, entry, n)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # a return entry: its operation could not be placed before here
            if want_report and finite and len(stack) > best_depth:
                best_depth = len(stack)
                best = ([t[0] for t in stack], state, entry - n)
            if not stack:
                break
            top, state, low, window, ibits = stack.pop()
            if is_finite[top]:
                finite += 1
            else:
                placed[cls[top]] -= 1
            _unlift(nxt, prv, top, n)
            entry = nxt[top]
        if entry == -1:  # only info returns remain unvisited: cannot happen while finite > 0
            raise AssertionError("linearizability search ran off the entry list")
    if collect:
        return terminals, best
    return False, best


def _entry_list(ops: list[Operation]) -> tuple[list[int], list[int]]:
    """The call and return entries of ``ops`` as a doubly linked list in time order, as
    ``(nxt, prv)``: entries 0..n-1 are the calls, n..2n-1 the returns, 2n the head sentinel
    (-1: none). A call sorts before a return at the same instant (equal times count as
    concurrent, the lenient reading)."""
    n = len(ops)
    order = sorted(range(2 * n), key=lambda e: (ops[e].call, 0, e) if e < n
                   else (ops[e - n].ret, 1, e))
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = 2 * n
    for e in order:
        nxt[last] = e
        prv[e] = last
        last = e
    return nxt, prv


def _lift(nxt: list[int], prv: list[int], call: int, n: int) -> None:
    """Take operation ``call``'s call and return entries out of the list (it is placed)."""
    r = call + n
    p, q = prv[call], nxt[call]
    nxt[p] = q
    prv[q] = p
    p, q = prv[r], nxt[r]
    nxt[p] = q
    if q != -1:
        prv[q] = p


def _unlift(nxt: list[int], prv: list[int], call: int, n: int) -> None:
    """Put operation ``call``'s entries back where ``_lift`` took them from (backtracking:
    the entries lifted since are back already, so their neighbours are the old ones)."""
    r = call + n
    p, q = prv[r], nxt[r]
    nxt[p] = r
    if q != -1:
        prv[q] = r
    p, q = prv[call], nxt[call]
    nxt[p] = call
    prv[q] = call


def _info_classes(ops: list[Operation], info_ids: list[int]) -> tuple[list, list, dict]:
    """Interchangeable info operations (same kind, same argument) are placed in id order
    only: they can happen at any time after their invocation, so once invoked, which one of
    them is used makes no difference — without this rule every subset of them would be a new
    search state (2**k). Returns ``(cls, rank, placed)``: per operation its class (-1: none,
    a finite operation) and its rank in it, and per class how many are placed (0)."""
    cls = [-1] * len(ops)
    rank = [0] * len(ops)
    classes: dict = {}
    for i in info_ids:
        members = classes.setdefault((ops[i].f, ops[i].value), [])
        cls[i] = id(members)
        rank[i] = len(members)
        members.append(i)
    return cls, rank, {id(m): 0 for m in classes.values()}


def _bit_positions(is_finite: list[bool]) -> list[int]:
    """Each operation's bit in the search's record of placed operations, which stays small:
    finite operations by rank (they are placed roughly in invocation order) as a low-water
    mark ``low`` (ranks below it are all placed) plus a bitset ``window`` of ranks from
    ``low`` on; info operations apart, in ``ibits`` (they may stay unplaced forever, and
    would pin a plain bitset's low end). Memo keys stay a few words long however long the
    history is."""
    bit = [0] * len(is_finite)
    fi = ii = 0
    for i, fin in enumerate(is_finite):
        if fin:
            bit[i] = fi
            fi += 1
        else:
            bit[i] = ii
            ii += 1
    return bit


class _Unobserved:
    """The value of a write that no read returns and no cas expects: all such values behave
    alike in the register model, so they are folded into this one (fewer states)."""

    def __repr__(self) -> str:
        return "<a value nobody read>"


_UNOBSERVED = _Unobserved()


def _chain(history: list[dict], cfg) -> list[int]:
    """The op ids of one linearization that ends in configuration ``cfg`` (after the
    segments in ``history``)."""
    order: list[int] = []
    for seg_configs in reversed(history):
        prev, seg_order = seg_configs[cfg]
        order[:0] = seg_order
        cfg = prev
    return order


def _replay(model, ops: list[Operation], order: list[int]):
    state = model.init
    for g in order:
        _, state = model.step(state, ops[g])
    return state


def _fold_unobserved(ops: list[Operation]) -> list[Operation]:
    """``ops`` with every written value that is never observed (returned by an ok read, or
    the expected value of a cas) replaced by ``_UNOBSERVED``. No operation can tell such
    values apart, so every step of the model gives the same answer: the search is the same,
    with fewer states (and interchangeable info writes, see ``_search``)."""
    observed = set()
    for op in ops:
        if op.f == _READ and op.status == "ok":
            observed.add(op.output)
        elif op.f == _CAS:
            observed.add(op.value[0])
    out = []
    for op in ops:
        if op.f == _WRITE and op.value not in observed:
            op = replace(op, value=_UNOBSERVED)
        elif op.f == _CAS and op.value[1] not in observed:
            op = replace(op, value=(op.value[0], _UNOBSERVED))
        out.append(op)
    return out


def _written(op: Operation):
    return op.value if op.f == _WRITE else op.value[1]


def _drop_dead(ops: list[Operation], configs: dict, last_write: dict, segment: int) -> dict:
    """Forget, in each configuration, the unplaced info cas operations that can never swap
    again: the value they expect is neither the register's nor one that an unplaced
    operation or one of a segment after ``segment`` may write. Placing them could only be a
    no-op."""
    out: dict = {}
    for (state, pend), back in configs.items():
        if pend:
            alive = {state} | {_written(ops[g]) for g in pend}
            keep = frozenset(g for g in pend
                             if ops[g].f != _CAS or ops[g].value[0] in alive
                             or last_write.get(ops[g].value[0], -1) > segment)
            if keep != pend:
                k = (state, keep)
                if k not in out:
                    out[k] = back
                continue
        out.setdefault((state, pend), back)
    return out


def _segments(ops: list[Operation]) -> list[list[int]]:
    """Split ops (sorted by invocation) at quiescent instants: before op j when every finite
    op invoked earlier returned before op j was invoked. Info ops do not prevent a cut (they
    are carried across as "may still happen"). Returns lists of indexes into ``ops``."""
    segs: list[list[int]] = []
    cur: list[int] = []
    max_ret = -math.inf
    for j, op in enumerate(ops):
        if cur and max_ret < op.call:
            segs.append(cur)
            cur = []
        cur.append(j)
        if op.ret != math.inf and op.ret > max_ret:
            max_ret = op.ret
    if cur:
        segs.append(cur)
    return segs


def _prune(configs: dict) -> dict:
    """Drop dominated configurations: (state, P) can do all that (state, P') can when P'
    is a subset of P (an info operation left unplaced may still never happen)."""
    by_state: dict = {}
    for (st, pend) in configs:
        by_state.setdefault(st, []).append(pend)
    out = {}
    for st, sets in by_state.items():
        sets.sort(key=len, reverse=True)
        kept: list = []
        for p in sets:
            if not any(p <= q for q in kept):
                kept.append(p)
                out[(st, p)] = configs[(st, p)]
    return out


def _run_segment(ops, seg, configs, model, deadline, want_report):
    """Every configuration reachable after segment ``seg`` from any of ``configs``:
    ``({config: (previous config, order of global ids)}, best report)``; the report is
    ``(start config, prefix gids, state, blocked gid)`` of the deepest failed attempt."""
    out: dict = {}
    best = None
    for cfg in configs:
        state, pend = cfg
        gids = sorted(pend) + seg
        local = [ops[g] for g in gids]
        terminals, report = _search(local, model, state, deadline, want_report, collect=True)
        for (st, rem), order in terminals.items():
            k = (st, frozenset(gids[i] for i in rem))
            if k not in out:
                out[k] = (cfg, [gids[i] for i in order])
        if report is not None and (best is None or len(report[0]) > len(best[1])):
            best = (cfg, [gids[i] for i in report[0]], report[1], gids[report[2]])
    return out, best


def _minimize(ops: list[Operation], seg: list[int], configs, blocked: Operation, model,
              deadline: float):
    """A small sub-history of segment ``seg`` that still fails from every configuration:
    cut after the blocking operation returns, then drop state-preserving operations one by
    one while the rest still fails. Returns None when the budget runs out or the cut alone
    is linearizable."""
    cut = [g for g in seg if ops[g].call <= blocked.ret]

    def fails(sub) -> bool:
        out, _ = _run_segment(ops, sub, configs, model, deadline, False)
        return not out

    def unexplained(sub) -> set:
        return _unexplained([ops[g] for g in sub])

    try:
        if not fails(cut):
            return None
        i = len(cut) - 1
        while i >= 0:
            op = ops[cut[i]]
            if op is not blocked and not model.mutates(op):
                trial = cut[:i] + cut[i + 1:]
                if fails(trial):
                    cut = trial
            i -= 1
        # A write whose value nobody reads may go too, when the rest still fails.
        i = len(cut) - 1
        while i >= 0:
            op = ops[cut[i]]
            if op is not blocked and model.mutates(op):
                trial = cut[:i] + cut[i + 1:]
                if unexplained(trial) <= unexplained(cut) and fails(trial):
                    cut = trial
            i -= 1
    except _Budget:
        return None
    return [ops[g] for g in cut]


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
              minimize: bool = True, plain_first: bool = True) -> KeyResult:
    """Check one key's operations (raw or prepared); see ``check``.

    The history is first cut at quiescent instants (no finite operation in flight) into
    segments, checked one after the other: the search of a segment starts from every
    configuration the previous one can end in — a register value and the info operations
    that may still take effect — and collects every configuration it can end in. A segment
    from which no configuration survives holds the violation: it is the window reported,
    with the values the register may have held when it began."""
    t0 = time.monotonic()
    deadline = t0 + budget
    ops = prepare(ops)
    # Ids follow time order so that bitsets and reports read naturally.
    ops.sort(key=lambda o: (o.call, o.ret, o.index))
    shown = ops
    if model is RegisterModel:
        ops = _fold_unobserved(ops)
    configs: dict = {(model.init, frozenset()): None}
    history: list[dict] = []   # per segment: config -> (previous config, order)
    # First the plain search over the whole key history, for a part of the budget: on a
    # linearizable history it finds an order in one mostly forward pass. When it fails (or
    # runs long) the segmented search below decides, and locates the failing window.
    try:
        if not plain_first:
            raise _Budget
        plain = min(budget * 0.2, max(1.0, len(ops) * 4e-5))
        ok, res = _search(ops, model, model.init, min(deadline, t0 + plain), False)
        if ok:
            return KeyResult(key, OK, len(ops), time.monotonic() - t0, [shown[i] for i in res])
    except _Budget:
        pass
    segments = _segments(ops)
    # the last segment in which each value may be written (for dropping dead info cas)
    last_write: dict = {}
    for k, seg in enumerate(segments):
        for g in seg:
            if ops[g].f != _READ:
                last_write[_written(ops[g])] = k
    try:
        for k, seg in enumerate(segments):
            out, best = _run_segment(ops, seg, configs, model, deadline, True)
            if not out:
                return _violation(key, ops, shown, seg, configs, history, best, model,
                                  deadline, budget, minimize, t0)
            if model is RegisterModel:
                out = _drop_dead(ops, out, last_write, k)
            configs = _prune(out)
            history.append(configs)
    except _Budget:
        return KeyResult(key, UNKNOWN, len(ops), time.monotonic() - t0)
    # One linearization, followed back from any final configuration.
    order = _chain(history, next(iter(configs)))
    return KeyResult(key, OK, len(ops), time.monotonic() - t0, [shown[i] for i in order])


def _violation(key, ops, shown, seg, configs, history, best, model, deadline, budget, minimize,
               t0, context: int = 8):
    """The Violation of the failing segment ``seg``; ``shown`` are the operations as recorded
    (``ops`` may have their unobserved values folded)."""
    start_cfg, prefix, state, blocked_id = best
    # Values as recorded (the search may have folded unobserved ones): replay one
    # linearization leading to each start configuration.
    chains = {cfg: _chain(history, cfg) for cfg in configs}
    before = chains[start_cfg]
    state = _replay(model, shown, before + prefix)
    starts = {_replay(model, shown, ch) for ch in chains.values()}
    blocked = ops[blocked_id]
    placed = set(prefix)
    concurrent = [shown[g] for g in sorted(set(seg) | set(start_cfg[1]))
                  if g not in placed and g != blocked_id and ops[g].call <= blocked.ret]
    first = ops[seg[0]]
    v = Violation(key, [shown[g] for g in prefix], state, shown[blocked_id],
                  concurrent, window=(first.call, max(ops[g].ret for g in seg)),
                  start_states=sorted(starts, key=repr),
                  before=[shown[g] for g in before[-context:]])
    if minimize:
        w = _minimize(ops, seg, list(configs), blocked, model, deadline + budget * 0.25)
        if w is not None:
            index = {id(op): g for g, op in enumerate(ops)}
            v.witness = [shown[index[id(op)]] for op in w]
    return KeyResult(key, VIOLATION, len(ops), time.monotonic() - t0, violation=v)


def check(ops: Iterable[Operation], budget: float = 30.0, model=RegisterModel,
          minimize: bool = True, plain_first: bool = True) -> CheckResult:
    """Check a history of linearizable operations on any number of keys.

    Each key is checked on its own (P-compositionality), smallest first, with what is left of
    ``budget`` seconds shared evenly among the keys still to check. Returns a CheckResult;
    ``result.summary()`` is the report a human reads. ``plain_first=False`` skips the plain
    search (tests use it to exercise the segmented one alone)."""
    t0 = time.monotonic()
    by_key: dict = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    result = CheckResult(OK)
    keys = sorted(by_key, key=lambda k: len(by_key[k]))
    for i, key in enumerate(keys):
        left = max(0.0, budget - (time.monotonic() - t0))
        share = left / (len(keys) - i)
        r = check_key(key, by_key[key], share, model, minimize, plain_first)
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
        """The anomaly in one line, naming the read (and the newer read it goes back from)."""
        if self.kind == "never-written":
            return (f"key {self.read.key!r}: {self.read.describe()} — no write of that value "
                    "was invoked before this read returned")
        return (f"key {self.read.key!r}: {self.read.describe()} — goes back in time: the same "
                f"client had read {self.newer.output!r} before "
                f"({self.newer.describe()}), written after this value")


@dataclass
class StaleReadResult:
    """The verdict of ``check_stale_reads``: every anomaly found among ``reads`` reads."""

    anomalies: list[StaleReadAnomaly]
    reads: int
    monotonic: bool = True         # whether going back in time was checked too

    @property
    def ok(self) -> bool:
        """No stale read broke its promise."""
        return not self.anomalies

    def summary(self) -> str:
        """The verdict in words, one line per anomaly."""
        head = (f"stale reads: {'OK' if self.ok else 'ANOMALIES'} — {self.reads} read(s) "
                f"checked, {len(self.anomalies)} anomaly(ies) (a value never written"
                + (", or a client going back in time" if self.monotonic else "") + ")")
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
    return StaleReadResult(anomalies, n, monotonic)
