"""The checks of the coordination workloads: watch, lock and lease.

Place in the architecture: part of the verification framework (``fastraft.verify``), beside
``final_state.py``. Pure functions of the (invocation, completion) pairs that
``history.to_operations`` hands over in ``Operations.other`` (the ``f`` names below), of the
watch streams the watch workload recorded (``WatchStream``) and of the final reads; standard
library only (no client import). What the workloads do is in ``coord_workloads.py``. Every
time is on the history's clock (one monotonic clock for every worker of the run).

Watch (``check_watch``; ``watch_put`` operations, the streams):

- A stream asked for revisions from ``start`` on and *covers* ``start .. end``: it received
  everything up to ``end`` (the revision of the end marker it stopped at, or the progress it
  had when it ended otherwise). Each event is a put of an attempted value on the key it was
  attempted on (every value is unique); never a delete, never a value not attempted, never a
  value whose write failed definitely (NotApplied). In a stream, revisions strictly increase
  per key and never decrease overall, no value appears twice (a write with unknown outcome at
  most once, like every other), and no event lies outside ``start .. end``.
- The revision of a write is where a stream shows it; every stream shows it at the same
  revision (and no two values share one). A write seen anywhere at revision R must appear
  exactly once in every stream that covers R (no gap). An acknowledged write seen in no stream
  is lost when a stream surely covered it: one that reached the end marker and started at
  revision 1, or fixed its start before the write was invoked; otherwise it is counted as
  unverified. Revisions respect real time: a write acknowledged before another was invoked
  has the lower revision.
- A stream that ended with Compacted counts (``compacted``) and is no failure when its start
  was genuinely older than the history the nodes offered (``next < oldest``); otherwise the
  nodes refused a start they had. A stream that did not reach the end marker in time after the
  run (``stalled``) makes the verdict unknown.

Lock (``check_lock``; ``lock_*`` operations, the counter read at the end). A critical section
(CS) is identified by its fence. Its holder's lease is *surely valid* until ``S`` = the send
time of the last acknowledged grant or keep-alive of that lease + its TTL (the lease was alive
when that renewal was applied, which is after it was sent, and then lives a whole TTL on the
log's clock; a new term only extends it). ``Held.lost`` stands for the same moment. The CS
acquired at ``a`` (when ``acquire`` returned) and began its release at ``r``; it was *surely
valid* over ``[a, e]`` with ``e = min(r, S - EPS)`` (``EPS`` = 20 ms of slack for the lease's
clock: node timestamps are wall-clock milliseconds; ``a`` and ``r`` are on the history's one
clock, exact). The rules:

- Exclusion: for fences ``f < f'``, ``e(f) <= a(f')``. The holder of ``f'`` became first
  only once the key of ``f`` was gone: revoked after ``r(f)`` or expired after ``S(f)``. Two
  CSs may overlap in time only when the earlier one's lease was no longer surely valid (its
  keep-alive had failed for a TTL: ``overlaps_explained``).
- Fences increase with the acquisition times, among the CSs surely valid when they acquired
  (``S > a``); an acquisition that returned after its own lease's sure life is exempt (it may
  have been overtaken: ``inversions_explained``). No fence is handed out twice.
- The resource: the counter key holds ``count:fence``; a write is accepted only when the stored
  fence is lower than the writer's (``lock_write`` is that check and a revision cas, retried
  on a conflict). Accepted writes, in revision order, carry strictly increasing fences (a
  lower fence accepted is a violation); a write refused by the fence check while its holder
  was surely valid (the refusal read before ``e``) is a violation (a higher fence had been
  written, so another held the lock meanwhile); a stored fence equal to the writer's own on a
  refusal means a write reported not applied was applied.
- The counter (a non-atomic read-modify-write: the count read first, written later): with
  ``A`` acknowledged accepted increments, ``U`` increments with unknown outcome and ``L`` of
  the acknowledged ones *late* (completed after their holder's ``S``: applied maybe after
  another holder read the count), ``A - L <= final count <= A + U``, and the final stored
  fence is at least the highest acknowledged one. An increment is lost only if overwritten by
  a write that read before it, which the exclusion rule allows only for a late write.
- ``Held.lost`` is signalled: a CS whose lease's sure life ended more than ``LOST_GRACE``
  (1 s) before its release must have seen ``held.lost`` set by then.

Lease (``check_lease``; ``lease_*`` operations). A lease is *surely alive* until ``S`` (as
above); it is *surely ended* once a revoke of it was acknowledged, or an operation naming it
was refused LeaseNotFound, or it *lapsed*: its last renewal attempt (acknowledged or unknown,
at its completion) and the start of the final read's stable term (no leader change since:
a new term refreshes every lease) are both at least TTL + ``LEASE_MARGIN`` (1 s) before the
final read. Checked: LeaseNotFound never comes while a lease was surely alive and not being
revoked (early expiry) and nothing is renewed or written through a lease after an
acknowledged revoke; right after an acknowledged revoke, its keys are gone; at the final read
(after waiting past the longest TTL + the margin), every acknowledged key of a lease surely
alive then is present and every key (acknowledged or unknown) of a lease surely ended is
absent; a put refused definitely is absent; nothing else is under the prefix.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["WatchStream", "WatchResult", "check_watch", "LockResult", "check_lock",
           "LeaseResult", "check_lease", "counter_value", "parse_counter", "EPS",
           "LOST_GRACE", "LEASE_MARGIN"]

EPS = 0.02            # seconds of clock slack (node timestamps: wall-clock milliseconds)
LOST_GRACE = 1.0      # seconds Held.lost may lag the end of its lease's sure life
LEASE_MARGIN = 1.0    # seconds past a lapsed lease's TTL by which its keys must be gone
_SHOW = 20            # problems quoted in a summary


def _status(comp) -> str:
    return comp.type if comp is not None else "info"


def _text(b) -> str:
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).decode("utf-8", "replace")
    return str(b)


class _Verdict:
    """What the three results share: ``ok`` and ``verdict`` from ``problems`` and ``read``
    (whether what was needed to judge could be had), the problems under a summary's head,
    and ``to_json`` (every field, and ``ok``) for ``summary.json``."""

    problems: list
    read: bool

    @property
    def ok(self) -> bool:
        return self.read and not self.problems

    @property
    def verdict(self) -> str:
        return "violation" if self.problems else ("ok" if self.read else "unknown")

    def _with_problems(self, head: str) -> str:
        problems = self.problems
        head += f"; {len(problems)} problems"
        if not problems:
            return head
        more = f" (and {len(problems) - _SHOW} more)" if len(problems) > _SHOW else ""
        return head + "\n  " + "\n  ".join(problems[:_SHOW]) + more

    def to_json(self) -> dict:
        """The result's object in ``summary.json``."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"ok": self.ok}


# -- watch ----------------------------------------------------------------------------------

@dataclass
class WatchStream:
    """One watch as a watcher saw it: the revision it asked to ``start`` from (``from_start``:
    it asked for revision 1), when that start was fixed (``started``, history time), the
    ``events`` ``(revision, type, key, value)`` in the order received, the last revision it
    covers (``end``; None: none), why it ended (``ended``: "end" at the end marker,
    "compacted", "stalled", or an error's class name) and, for Compacted, the ``oldest``
    revision offered."""

    name: str
    start: int
    started: float
    from_start: bool = False
    events: list = field(default_factory=list)
    end: int | None = None
    ended: str = ""
    oldest: int | None = None

    def to_json(self) -> dict:
        """The stream as ``watch-streams.jsonl`` holds it (keys and values as text)."""
        return {"name": self.name, "start": self.start, "started": round(self.started, 6),
                "from_start": self.from_start, "end": self.end, "ended": self.ended,
                "oldest": self.oldest,
                "events": [[r, t, _text(k), None if v is None else _text(v)]
                           for r, t, k, v in self.events]}


@dataclass
class WatchResult(_Verdict):
    """The verdict of ``check_watch``."""

    acked: int = 0
    unknown: int = 0
    failed: int = 0
    streams: int = 0
    events: int = 0
    reached_end: int = 0
    compacted: int = 0
    compacted_genuine: int = 0
    stalled: list = field(default_factory=list)
    other_ends: dict = field(default_factory=dict)   # an error's name -> streams
    seen: int = 0             # distinct writes seen in some stream
    unverified: int = 0       # acknowledged, seen nowhere, no stream surely covering it
    problems: list = field(default_factory=list)

    @property
    def read(self) -> bool:
        return not self.stalled and self.reached_end > 0

    def summary(self) -> str:
        """The verdict in words."""
        head = (f"watch: {self.verdict.upper()} — {self.acked} acknowledged writes, "
                f"{self.unknown} with unknown outcome, {self.failed} failed definitely; "
                f"{self.streams} streams ({self.reached_end} reached the end marker), "
                f"{self.events} events; {self.seen} writes seen (each must appear exactly once in "
                f"every stream covering its revision, in revision order); {self.unverified} "
                f"acknowledged writes seen nowhere with no stream surely covering them; "
                f"{self.compacted} streams ended Compacted ({self.compacted_genuine} with a "
                f"start genuinely older than the nodes' history)")
        if self.other_ends:
            head += "; other ends: " + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(self.other_ends.items()))
        if self.stalled:
            head += ("; UNKNOWN: streams that did not reach the end marker in time: "
                     + ", ".join(self.stalled))
        return self._with_problems(head)


class _Write:
    __slots__ = ("key", "status", "inv", "comp")

    def __init__(self, key, status, inv, comp):
        self.key, self.status, self.inv, self.comp = key, status, inv, comp


def _watch_writes(pairs, f: str, res: WatchResult) -> dict:
    writes: dict = {}
    for inv, comp in pairs:
        if inv.f != f:
            continue
        st = _status(comp)
        done = comp.time if comp is not None and st != "info" else math.inf
        writes[bytes(inv.value)] = _Write(bytes(inv.key), st, inv.time, done)
        if st == "ok":
            res.acked += 1
        elif st == "fail":
            res.failed += 1
        else:
            res.unknown += 1
    return writes


def _stream_events(s: WatchStream, writes: dict, where: dict, by_rev: dict,
                   problems: list) -> Counter:
    """One stream's own checks; fills ``where`` (value -> (rev, key, stream)) and ``by_rev``
    (rev -> (value, stream)); returns the count of each value in the stream."""
    counts: Counter = Counter()
    last, last_key = 0, {}
    n = s.name
    for rev, typ, key, value in s.events:
        key = bytes(key)
        if rev < s.start or (s.end is not None and rev > s.end):
            problems.append(f"{n}: an event at revision {rev} outside the revisions it "
                            f"covers ({s.start}..{s.end})")
        if rev < last:
            problems.append(f"{n}: revision {rev} after revision {last} (out of order)")
        if rev <= last_key.get(key, 0):
            problems.append(f"{n}: key {_text(key)}: revision {rev} after "
                            f"{last_key[key]} (revisions of a key must increase)")
        last = max(last, rev)
        last_key[key] = max(last_key.get(key, 0), rev)
        if typ != "put" or value is None:
            problems.append(f"{n}: a {typ} of {_text(key)} at revision {rev}: never written")
            continue
        value = bytes(value)
        w = writes.get(value)
        if w is None:
            problems.append(f"{n}: {_text(key)} = {_text(value)} at revision {rev}: a value "
                            "never attempted")
            continue
        if w.key != key:
            problems.append(f"{n}: {_text(value)} at revision {rev} on key {_text(key)}, but "
                            f"it was written to {_text(w.key)}")
        if w.status == "fail":
            problems.append(f"{n}: {_text(value)} at revision {rev}: its write failed "
                            "definitely (NotApplied), yet it was applied")
        counts[value] += 1
        if counts[value] == 2:
            problems.append(f"{n}: {_text(value)} appears more than once (a duplicated "
                            "event)")
        first = where.setdefault(value, (rev, key, n))
        if first[0] != rev:
            problems.append(f"{n}: {_text(value)} at revision {rev}, but at revision "
                            f"{first[0]} in {first[2]}")
        other = by_rev.setdefault(rev, (value, n))
        if other[0] != value:
            problems.append(f"{n}: revision {rev} is {_text(value)}, but {_text(other[0])} "
                            f"in {other[1]}")
    return counts


def check_watch(pairs, streams, f: str = "watch_put") -> WatchResult:
    """``pairs``: (invocation, completion | None), the ``f`` ones are the writes (``key``,
    ``value`` the unique value); ``streams``: the ``WatchStream`` list."""
    res = WatchResult(streams=len(streams))
    writes = _watch_writes(pairs, f, res)
    where: dict = {}
    by_rev: dict = {}
    counts = {}
    for s in streams:
        res.events += len(s.events)
        if s.ended == "end":
            res.reached_end += 1
        elif s.ended == "compacted":
            res.compacted += 1
            nxt = (s.end + 1) if s.end is not None else s.start
            if s.oldest is not None and nxt < s.oldest:
                res.compacted_genuine += 1
            else:
                res.problems.append(f"{s.name}: ended Compacted at revision {nxt} although "
                                    f"the nodes offered revisions from {s.oldest}")
        elif s.ended == "stalled":
            res.stalled.append(s.name)
        else:
            res.other_ends[s.ended] = res.other_ends.get(s.ended, 0) + 1
        counts[s.name] = _stream_events(s, writes, where, by_rev, res.problems)
    res.seen = len(where)
    for s in streams:                        # no gap: every write seen, in every cover
        if s.end is None or s.end < s.start:
            continue
        have = counts[s.name]
        missing = [v for v, (rev, _k, _n) in where.items()
                   if s.start <= rev <= s.end and not have[v]]
        for v in sorted(missing, key=lambda v: where[v][0]):
            res.problems.append(f"{s.name}: {_text(v)} (revision {where[v][0]}, seen in "
                                f"{where[v][2]}) is missing although it covers "
                                f"{s.start}..{s.end} (a gap)")
    for v, w in writes.items():              # acknowledged, seen nowhere
        if w.status != "ok" or v in where:
            continue
        cover = next((s.name for s in streams if s.ended == "end"
                      and (s.start == 1 or s.started < w.inv)), None)
        if cover is None:
            res.unverified += 1
        else:
            res.problems.append(f"acknowledged write {_text(w.key)} = {_text(v)} is in no "
                                f"stream, although {cover} surely covered it (lost)")
    _real_time_order(writes, where, res.problems)
    return res


def _real_time_order(writes: dict, where: dict, problems: list) -> None:
    """A write acknowledged before another was invoked has the lower revision."""
    known = [(v, w, where[v][0]) for v, w in writes.items() if v in where]
    by_done = sorted((w.comp, rev, v) for v, w, rev in known if w.status == "ok")
    i, best = 0, None
    for v, w, rev in sorted(known, key=lambda x: x[1].inv):
        while i < len(by_done) and by_done[i][0] < w.inv:
            if best is None or by_done[i][1] > best[1]:
                best = by_done[i]
            i += 1
        if best is not None and best[1] > rev:
            problems.append(f"{_text(v)} (invoked at {w.inv:.3f} s) has revision {rev}, below "
                            f"the revision {best[1]} of {_text(best[2])}, acknowledged before "
                            "it was invoked (revisions against real time)")


# -- lock -----------------------------------------------------------------------------------

def counter_value(count: int, fence: int) -> bytes:
    """The lock workload's counter value: ``count:fence``."""
    return f"{count}:{fence}".encode()


def parse_counter(value) -> tuple[int, int] | None:
    """``(count, fence)`` of a counter value (None: absent -> (0, 0)); None when malformed."""
    if value is None:
        return 0, 0
    try:
        c, f = bytes(value).split(b":")
        return int(c), int(f)
    except ValueError:
        return None


class _Section:
    """One critical section, from its operations (see ``check_lock``)."""

    __slots__ = ("fence", "lease", "a", "r", "lost_flag", "lost_at", "S", "writes", "pauses",
                 "proc")

    def __init__(self, fence, lease, a, proc):
        self.fence, self.lease, self.a, self.proc = fence, lease, a, proc
        self.r = math.inf
        self.lost_flag = False
        self.lost_at = math.inf
        self.S = -math.inf
        self.writes: list = []          # (status, value, inv time, comp time)
        self.pauses = 0

    @property
    def e(self) -> float:
        """The end of its sure validity, the clock slack granted (to the lease only: the
        release and the acquisitions are on the history's one clock)."""
        return min(self.r, self.S - EPS)


@dataclass
class LockResult(_Verdict):
    """The verdict of ``check_lock``."""

    sections: int = 0
    acquire_failed: int = 0
    acquire_unknown: int = 0
    accepted: int = 0
    refused: int = 0
    write_unknown: int = 0
    write_failed: int = 0
    late: int = 0
    pauses: int = 0
    paused_refused: int = 0
    paused_accepted: int = 0
    lost: int = 0
    overlaps_explained: int = 0
    inversions_explained: int = 0
    final_count: int | None = None
    final_fence: int | None = None
    read: bool = True
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        """The verdict in words."""
        head = (f"lock: {self.verdict.upper()} — {self.sections} critical sections "
                f"({self.acquire_failed} acquisitions failed, {self.acquire_unknown} with "
                f"unknown outcome); no holder may enter while an earlier holder's lease is "
                f"surely valid ({self.overlaps_explained} overlaps in time explained by a "
                f"lease whose keep-alive had failed; {self.lost} holders saw Held.lost); "
                f"fences must increase with the acquisitions ({self.inversions_explained} "
                f"exempt); "
                f"increments: {self.accepted} accepted by the fence check ({self.late} of them "
                f"late), {self.refused} refused, {self.write_unknown} with unknown outcome, "
                f"{self.write_failed} failed; {self.pauses} holders paused inside the critical "
                f"section, no keep-alive, until a higher fence was written (their stale "
                f"writes: {self.paused_refused} refused by the fence check, "
                f"{self.paused_accepted} accepted: no higher fence written by then)")
        if not self.read:
            head += "; UNKNOWN: the final counter could not be read"
        else:
            head += (f"; final counter {self.final_count} (fence {self.final_fence}), which "
                     f"must lie in [{self.accepted - self.late}, "
                     f"{self.accepted + self.write_unknown}]")
        return self._with_problems(head)


def _lock_sections(pairs, res: LockResult) -> dict:
    """fence -> ``_Section`` from the ``lock_*`` operations."""
    grants: dict = {}        # lease -> (send, ttl)
    renewed: dict = {}       # lease -> latest send of an acknowledged keep-alive
    secs: dict = {}
    rest = []
    for inv, comp in pairs:
        st = _status(comp)
        f = inv.f
        if f == "lock_grant" and st == "ok":
            grants[comp.value] = (inv.time, float(inv.value))
        elif f == "lock_keepalive" and st == "ok":
            renewed[inv.key] = max(renewed.get(inv.key, -math.inf), inv.time)
        elif f == "lock_acquire":
            if st == "ok":
                fence, lease = comp.value
                if fence in secs:
                    res.problems.append(f"fence {fence} handed out twice")
                secs[fence] = _Section(fence, lease, comp.time, inv.process)
            elif st == "fail":
                res.acquire_failed += 1
            else:
                res.acquire_unknown += 1
        elif f.startswith("lock_"):
            rest.append((inv, comp, st))
    for inv, comp, st in rest:
        f = inv.f
        fence = inv.value[0] if isinstance(inv.value, tuple) else inv.value
        s = secs.get(fence)
        if s is None:
            continue
        if f == "lock_write":
            s.writes.append((st, comp.value if st == "ok" else None, inv.time,
                             comp.time if comp is not None and st != "info" else math.inf))
        elif f == "lock_release":
            s.r = inv.time
            s.lost_flag = bool(inv.value[2])
        elif f == "lock_lost":
            s.lost_at = min(s.lost_at, inv.time)
        elif f == "lock_pause":
            s.pauses += 1
    for s in secs.values():
        g = grants.get(s.lease)
        if g is None:
            res.problems.append(f"fence {s.fence}: no grant recorded for its lease {s.lease} "
                                "(the workload could not time its lease)")
            s.S = s.a
            continue
        s.S = max(g[0], renewed.get(s.lease, -math.inf)) + g[1]
    return secs


def _exclusion(secs: list, res: LockResult) -> None:
    """For fences f < f': e(f) <= a(f'); and fences increase with the acquisitions."""
    best = None                                      # the latest e of the lower fences
    last_r = -math.inf                               # the latest release of the lower fences
    for s in secs:                                   # by fence
        if best is not None and best.e > s.a:
            res.problems.append(
                f"fence {s.fence} acquired at {s.a:.3f} s while the holder of fence "
                f"{best.fence} (acquired at {best.a:.3f} s, lease surely valid until "
                f"{best.S:.3f} s, released at {best.r:.3f} s) still held the lock")
        elif s.a < last_r:
            res.overlaps_explained += 1
        if best is None or s.e > best.e:
            best = s
        last_r = max(last_r, s.r if s.r < math.inf else s.e)
    top = None
    for s in sorted(secs, key=lambda s: s.a):       # by acquisition time
        if top is not None and s.fence < top.fence:
            if s.S > s.a + EPS:
                res.problems.append(f"fence {s.fence} acquired at {s.a:.3f} s, after fence "
                                    f"{top.fence} (acquired at {top.a:.3f} s): fences must "
                                    "increase with the acquisitions")
            else:
                res.inversions_explained += 1
        if s.S > s.a + EPS and (top is None or s.fence > top.fence):
            top = s


def _resource(secs: list, res: LockResult) -> list:
    """The fence checks of the writes; returns the accepted acknowledged ones as
    (revision, fence)."""
    accepted = []
    for s in secs:
        for st, value, inv_t, done in s.writes:
            if st == "ok" and value[0] == "accepted":
                res.accepted += 1
                accepted.append((value[1], s.fence))
                if done > s.S - EPS:
                    res.late += 1
                if s.pauses:
                    res.paused_accepted += 1
            elif st == "ok":
                res.refused += 1
                stored = value[1]
                if s.pauses:
                    res.paused_refused += 1
                if stored == s.fence:
                    res.problems.append(f"fence {s.fence}: the stored fence is its own, but "
                                        "its write was never reported applied")
                elif done < s.e:
                    res.problems.append(
                        f"fence {s.fence}: its write was refused at {done:.3f} s (stored fence "
                        f"{stored}) while its lease was surely valid (until {s.e:.3f} s)")
            elif st == "fail":
                res.write_failed += 1
            else:
                res.write_unknown += 1
    accepted.sort()
    for (r0, f0), (r1, f1) in zip(accepted, accepted[1:]):
        if r0 == r1:
            res.problems.append(f"two accepted writes at revision {r0} (fences {f0}, {f1})")
        elif f1 <= f0:
            res.problems.append(f"fence {f1} accepted at revision {r1} after fence {f0} at "
                                f"revision {r0}: a lower fence accepted")
    return accepted


def check_lock(pairs, final, read: bool = True) -> LockResult:
    """``pairs``: (invocation, completion | None) of the ``lock_*`` operations (others
    ignored); ``final``: the counter's value at the end (bytes, None: absent); ``read``:
    whether it could be read."""
    res = LockResult(read=read)
    secs = sorted(_lock_sections(pairs, res).values(), key=lambda s: s.fence)
    res.sections = len(secs)
    res.pauses = sum(1 for s in secs if s.pauses)
    res.lost = sum(1 for s in secs if s.lost_flag or s.lost_at < math.inf)
    _exclusion(secs, res)
    accepted = _resource(secs, res)
    for s in secs:
        if (s.r < math.inf and s.S < s.r - LOST_GRACE and not s.lost_flag
                and s.lost_at > s.r):
            res.problems.append(f"fence {s.fence}: its lease's sure life ended at {s.S:.3f} s, "
                                f"yet Held.lost was not set by its release at {s.r:.3f} s")
    if not read:
        return res
    parsed = parse_counter(final)
    if parsed is None:
        res.problems.append(f"the counter holds {final!r}, not count:fence")
        return res
    res.final_count, res.final_fence = parsed
    lo, hi = res.accepted - res.late, res.accepted + res.write_unknown
    if res.final_count < lo:
        res.problems.append(f"final counter {res.final_count} < {res.accepted} accepted "
                            f"increments - {res.late} late ones (an increment lost while its "
                            "holder's lease was valid)")
    elif res.final_count > hi:
        res.problems.append(f"final counter {res.final_count} > {res.accepted} accepted + "
                            f"{res.write_unknown} unknown increments (an increment applied "
                            "twice, or applied but reported not applied)")
    top = max((f for _r, f in accepted), default=0)
    if res.final_fence < top:
        res.problems.append(f"final stored fence {res.final_fence} is below the accepted "
                            f"fence {top}")
    return res


# -- lease ----------------------------------------------------------------------------------

class _Lease:
    __slots__ = ("id", "ttl", "acks", "attempts", "puts", "revoked_ok", "revoke_inv",
                 "not_found", "scans")

    def __init__(self, lease, ttl):
        self.id, self.ttl = lease, ttl
        self.acks: list = []          # send times of acknowledged grant / keep-alives
        self.attempts: list = []      # completion times of acknowledged or unknown renewals
        self.puts: list = []          # (key, status, inv, comp)
        self.revoked_ok = math.inf    # completion of the first acknowledged revoke
        self.revoke_inv = math.inf    # invocation of the first revoke (any outcome)
        self.not_found: list = []     # (f, inv, comp) of LeaseNotFound answers
        self.scans: list = []         # (comp, keys present) right after a revoke

    @property
    def sure(self) -> float:
        return max(self.acks, default=-math.inf) + self.ttl


@dataclass
class LeaseResult(_Verdict):
    """The verdict of ``check_lease``."""

    leases: int = 0
    keys: int = 0
    kept_checked: int = 0       # leases surely alive at the final read
    ended_checked: int = 0      # leases surely ended by then
    uncertain: int = 0
    revoked: int = 0
    expired_seen: int = 0       # LeaseNotFound answers (the lease gone)
    read: bool = True
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        """The verdict in words."""
        head = (f"lease: {self.verdict.upper()} — {self.leases} leases with {self.keys} keys; "
                f"{self.revoked} revoked; {self.expired_seen} LeaseNotFound answers (none may "
                f"come while the lease is surely alive); at the final read "
                f"{self.kept_checked} leases surely alive (every acknowledged key must be "
                f"present), {self.ended_checked} surely expired or revoked (every key must be "
                f"gone), {self.uncertain} neither (not judged)")
        if not self.read:
            head += "; UNKNOWN: the final read failed"
        return self._with_problems(head)


def _leases(pairs) -> tuple[dict, list, object]:
    """lease id -> ``_Lease``; the failed puts (key); the final read (inv, comp) or None."""
    leases: dict = {}
    final = None
    ops = []
    for inv, comp in pairs:
        if inv.f == "lease_grant" and _status(comp) == "ok":
            le = leases[comp.value] = _Lease(comp.value, float(inv.value))
            le.acks.append(inv.time)
            le.attempts.append(comp.time)
        elif inv.f == "lease_final_read":
            final = (inv, comp)
        elif inv.f.startswith("lease_"):
            ops.append((inv, comp))
    failed_puts = []
    for inv, comp in ops:
        st = _status(comp)
        done = comp.time if comp is not None and st != "info" else math.inf
        lid = inv.value if inv.f in ("lease_put", "lease_scan") else inv.key
        le = leases.get(lid)
        if le is None:
            continue
        if st == "fail" and comp.value == "LeaseNotFound":
            le.not_found.append((inv.f, inv.time, done))
        if inv.f == "lease_put":
            le.puts.append((bytes(inv.key), st, inv.time, done))
            if st == "fail":
                failed_puts.append(bytes(inv.key))
        elif inv.f == "lease_keepalive":
            if st == "ok":
                le.acks.append(inv.time)
            if st != "fail":
                le.attempts.append(comp.time if comp is not None else math.inf)
        elif inv.f == "lease_revoke":
            le.revoke_inv = min(le.revoke_inv, inv.time)
            if st == "ok":
                le.revoked_ok = min(le.revoked_ok, done)
        elif inv.f == "lease_scan" and st == "ok":
            le.scans.append((done, tuple(bytes(k) for k in comp.value)))
    return leases, failed_puts, final


def _lease_during(le: _Lease, res: LeaseResult) -> None:
    """The checks made during the run: no early expiry, nothing after a revoke, keys gone
    right after an acknowledged revoke."""
    for f, _inv, done in le.not_found:
        res.expired_seen += 1
        if done < le.revoke_inv and done + EPS < le.sure:
            res.problems.append(f"lease {le.id} (TTL {le.ttl:g} s): {f} refused LeaseNotFound "
                                f"at {done:.3f} s, but it was surely alive until "
                                f"{le.sure:.3f} s (expired early)")
    if le.revoked_ok < math.inf:
        late = [s for s in le.acks if s > le.revoked_ok]
        late += [inv for _k, st, inv, _c in le.puts if st == "ok" and inv > le.revoked_ok]
        if late:
            res.problems.append(f"lease {le.id}: renewed or written through at "
                                f"{min(late):.3f} s, after its revoke was acknowledged at "
                                f"{le.revoked_ok:.3f} s")
    for done, keys in le.scans:
        if keys:
            res.problems.append(f"lease {le.id}: {len(keys)} keys still present right after "
                                f"its revoke was acknowledged ({_text(keys[0])}, ...)")


def check_lease(pairs, margin: float = LEASE_MARGIN) -> LeaseResult:
    """``pairs``: (invocation, completion | None) of the ``lease_*`` operations (others
    ignored); the last ``lease_final_read`` (invoked with the start of the stable term, its
    result the keys present under the prefix) is the final read."""
    leases, failed_puts, final = _leases(pairs)
    res = LeaseResult(leases=len(leases))
    res.keys = sum(len(le.puts) for le in leases.values())
    res.revoked = sum(1 for le in leases.values() if le.revoked_ok < math.inf)
    for le in leases.values():
        _lease_during(le, res)
    if final is None or _status(final[1]) != "ok":
        res.read = False
        return res
    inv, comp = final
    t_inv, t_done, stable = inv.time, comp.time, float(inv.value)
    present = {bytes(k) for k in comp.value}
    attempted = set()
    for le in leases.values():
        attempted.update(k for k, *_ in le.puts)
        alive = le.sure > t_done + EPS
        last = max(le.attempts, default=-math.inf)
        ended = (le.revoked_ok < t_inv or any(d < t_inv for _f, _i, d in le.not_found)
                 or (last + le.ttl + margin <= t_inv and stable + le.ttl + margin <= t_inv))
        if alive and ended:
            res.problems.append(f"lease {le.id}: surely alive until {le.sure:.3f} s, yet "
                                "revoked or refused LeaseNotFound before the final read")
            continue
        if alive:
            res.kept_checked += 1
            lost = [k for k, st, _i, _d in le.puts if st == "ok" and k not in present]
            if lost:
                res.problems.append(f"lease {le.id} (surely alive until {le.sure:.3f} s): "
                                    f"acknowledged keys missing at the final read: "
                                    + ", ".join(_text(k) for k in lost[:5]))
        elif ended:
            res.ended_checked += 1
            stay = [k for k, st, _i, _d in le.puts if st != "fail" and k in present]
            if stay:
                res.problems.append(f"lease {le.id} (TTL {le.ttl:g} s) expired or was revoked "
                                    f"(last renewal attempt at {last:.3f} s), yet its keys "
                                    "are present at the final read: "
                                    + ", ".join(_text(k) for k in stay[:5]))
        else:
            res.uncertain += 1
    bad = sorted(k for k in failed_puts if k in present)
    if bad:
        res.problems.append("keys whose put failed definitely are present: "
                            + ", ".join(_text(k) for k in bad[:5]))
    phantom = sorted(present - attempted)
    if phantom:
        res.problems.append("keys never written are present: "
                            + ", ".join(_text(k) for k in phantom[:5]))
    return res
