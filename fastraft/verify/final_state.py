"""The checks of the final state: the set (no lost insert) and session (exactly-once)
workloads, the membership, and every member's own copy of the state.

Place in the architecture: part of the verification framework (``fastraft.verify``), beside
``linearizability.py`` (which judges the register workload). Pure functions of the
(invocation, completion) pairs that ``history.to_operations`` hands over in
``Operations.other`` and of the final state that ``workloads.read_final_state`` reads after
every node was killed with -9 and restarted; standard library only. What the workloads do is
described in ``workloads.py``; what is checked:

- set (``check_set``): every acknowledged insert is present at the end; an insert that failed
  (NotApplied: certainly not applied) is absent; one with an unknown outcome may be either.
- session (``check_session``): per counter, ``acked <= final <= acked + unknown``; per append
  key, an acknowledged token present exactly once, an unknown one at most once, a failed one
  absent, no token twice.
- membership (``check_membership``): the member list the cluster committed at the end (ids,
  roles, peer and client addresses) is what the nemesis believes it made (``membership.py``:
  acknowledged changes made, refused ones not).
- replicas (``check_replicas``): every member, voters and learners, once it has applied the
  leader's commit index, holds the same keys and values (read from that node alone, stale
  reads) as the linearizable reads of the same keys and prefixes.

The final state could not be read: the verdict is unknown (``read`` False), never ok.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["SetResult", "SessionResult", "check_set", "check_session", "parse_tokens",
           "MembershipResult", "check_membership", "ReplicaResult", "check_replicas",
           "APPEND_CAP", "FULL"]

APPEND_CAP = 100      # tokens per append key generation
FULL = "full"         # the value of an append fail that found its key full


def parse_tokens(value) -> list:
    """The tokens of an append key's value (comma-separated bytes; empty or None: none)."""
    if not value:
        return []
    return [t for t in bytes(value).split(b",") if t]


def _status(comp) -> str:
    return comp.type if comp is not None else "info"


@dataclass
class SetResult:
    """The verdict of ``check_set``: the inserts by outcome, the acknowledged ones ``lost``
    and the failed ones ``resurrected`` (``ok``: neither, and the final state was read)."""

    attempted: int = 0
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    unknown_present: int = 0
    lost: list = field(default_factory=list)          # acknowledged, absent at the end
    resurrected: list = field(default_factory=list)   # failed (NotApplied), present at the end
    read: bool = True                                 # the final state could be read

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing resurrected, and the final state was read."""
        return self.read and not self.lost and not self.resurrected

    def summary(self) -> str:
        """The verdict in words, naming the first lost and resurrected keys."""
        if not self.read:
            return "set: UNKNOWN (the final state could not be read)"
        head = (f"set: {self.acked} acknowledged inserts (each must be present at the end), "
                f"{self.unknown} with unknown outcome (may be present or not: "
                f"{self.unknown_present} of them present), {self.failed} failed definitely "
                f"(must be absent: {len(self.resurrected)} present); lost {len(self.lost)}")
        if self.lost:
            head += ": " + ", ".join(_as_text(k) for k in self.lost[:20])
        head += " (acknowledged inserts missing at the end)"
        if self.resurrected:
            head += (f"; {len(self.resurrected)} failed inserts present: "
                     + ", ".join(_as_text(k) for k in self.resurrected[:20]))
        return head

    def to_json(self) -> dict:
        """The ``set`` object of ``summary.json``."""
        return {"attempted": self.attempted, "acked": self.acked, "unknown": self.unknown,
                "failed": self.failed, "unknown_present": self.unknown_present,
                "lost": [_as_text(k) for k in self.lost],
                "resurrected": [_as_text(k) for k in self.resurrected], "read": self.read,
                "ok": self.ok}


def check_set(pairs, present) -> SetResult:
    """``pairs``: (invocation, completion | None) of ``insert`` operations (others ignored);
    ``present``: the set of keys found at the end (None: it could not be read)."""
    res = SetResult(read=present is not None)
    present = present or set()
    for inv, comp in pairs:
        if inv.f != "insert":
            continue
        res.attempted += 1
        st = _status(comp)
        if st == "ok":
            res.acked += 1
            if inv.key not in present:
                res.lost.append(inv.key)
        elif st == "fail":
            res.failed += 1
            if inv.key in present:
                res.resurrected.append(inv.key)
        else:
            res.unknown += 1
            res.unknown_present += inv.key in present
    res.lost.sort()
    res.resurrected.sort()
    return res


@dataclass
class SessionResult:
    """The verdict of ``check_session``: per counter and per append key what was found, and
    every ``problem`` in words (``ok``: none, and the final state was read)."""

    incr: dict = field(default_factory=dict)     # key -> {acked, unknown, failed, final, ok}
    append: dict = field(default_factory=dict)   # key -> {acked, unknown, failed, tokens, ...}
    problems: list = field(default_factory=list)
    read: bool = True

    @property
    def ok(self) -> bool:
        """No problem, and the final state was read."""
        return self.read and not self.problems

    def counts(self) -> dict:
        """``{incr,append}_{acked,unknown,failed}`` and ``append_full`` (of the failed
        appends, those that found their key full: the token moved on to the next key)."""
        out = {}
        for kind, per in (("incr", self.incr), ("append", self.append)):
            for what in ("acked", "unknown", "failed"):
                out[f"{kind}_{what}"] = sum(v[what] for v in per.values())
        out["append_full"] = sum(v.get("full", 0) for v in self.append.values())
        return out

    def summary(self) -> str:
        """The verdict in words, with the first problems."""
        if not self.read:
            return "session: UNKNOWN (the final state could not be read)"
        c = self.counts()
        full = c["append_full"]
        head = (f"session: increments: {c['incr_acked']} acknowledged, {c['incr_unknown']} "
                f"with unknown outcome, {c['incr_failed']} failed definitely, on "
                f"{len(self.incr)} counters; appends: {c['append_acked']} acknowledged, "
                f"{c['append_unknown']} with unknown outcome, {c['append_failed']} not applied"
                + (f" ({full} of them because the key was full: the token moved on to the "
                   f"next key)" if full else "")
                + f", on {len(self.append)} keys (at most {APPEND_CAP} tokens a key); "
                f"{len(self.problems)} problems (duplicates, losses, extra applications)")
        if self.problems:
            head += "\n  " + "\n  ".join(self.problems[:20])
        return head

    def to_json(self) -> dict:
        """The ``session`` object of ``summary.json``."""
        conv = lambda d: {_as_text(k): v for k, v in d.items()}   # noqa: E731
        return {"incr": conv(self.incr), "append": conv(self.append),
                "problems": self.problems, "read": self.read, "ok": self.ok, **self.counts()}


def check_session(pairs, finals) -> SessionResult:
    """``pairs``: (invocation, completion | None) of ``incr`` / ``append`` operations (others
    ignored); ``finals``: key -> value at the end (bytes or None), for every key used (None
    instead of the dict: it could not be read)."""
    res = SessionResult(read=finals is not None)
    finals = finals or {}
    incr: dict = {}
    tokens: dict = {}        # key -> {token: status}
    full: dict = {}          # key -> appends that found it full
    for inv, comp in pairs:
        st = _status(comp)
        st = {"ok": "acked", "fail": "failed"}.get(st, "unknown")
        if inv.f == "incr":
            d = incr.setdefault(inv.key, {"acked": 0, "unknown": 0, "failed": 0})
            d[st] += 1
        elif inv.f == "append":
            tokens.setdefault(inv.key, {})[bytes(inv.value)] = st
            if st == "failed" and comp.value == FULL:
                full[inv.key] = full.get(inv.key, 0) + 1
    if not res.read:
        return res
    for key, d in sorted(incr.items()):
        raw = finals.get(key)
        try:
            final = int(raw) if raw else 0
        except ValueError:
            final = None
        ok = final is not None and d["acked"] <= final <= d["acked"] + d["unknown"]
        res.incr[key] = {**d, "final": final, "ok": ok}
        if final is None:
            res.problems.append(f"counter {_as_text(key)}: not a number: {raw!r}")
        elif final < d["acked"]:
            res.problems.append(f"counter {_as_text(key)}: final {final} < {d['acked']} "
                                "acknowledged increments (lost increments)")
        elif final > d["acked"] + d["unknown"]:
            res.problems.append(
                f"counter {_as_text(key)}: final {final} > {d['acked']} acknowledged + "
                f"{d['unknown']} unknown increments (an increment applied twice, or applied "
                "but reported not applied)")
    for key, toks in sorted(tokens.items()):
        found = Counter(parse_tokens(finals.get(key)))
        dup = sorted(t for t, n in found.items() if n > 1)
        lost = sorted(t for t, s in toks.items() if s == "acked" and t not in found)
        phantom = sorted(t for t in found if toks.get(t) in (None, "failed"))
        d = {s: sum(1 for v in toks.values() if v == s) for s in ("acked", "unknown", "failed")}
        res.append[key] = {**d, "full": full.get(key, 0), "tokens": sum(found.values()),
                           "duplicates": len(dup),
                           "lost": len(lost), "phantom": len(phantom),
                           "ok": not (dup or lost or phantom)}
        k = _as_text(key)
        if dup:
            res.problems.append(f"append {k}: tokens present more than once: "
                                + ", ".join(_as_text(t) for t in dup[:10]))
        if lost:
            res.problems.append(f"append {k}: acknowledged tokens missing: "
                                + ", ".join(_as_text(t) for t in lost[:10]))
        if phantom:
            res.problems.append(f"append {k}: tokens present that were never applied "
                                "(failed or never sent): "
                                + ", ".join(_as_text(t) for t in phantom[:10]))
    return res


def _as_text(b) -> str:
    """A key, value or token as text for the summaries and summary.json (bytes decoded as
    UTF-8, undecodable bytes replaced; not a repr: the workloads' keys are text)."""
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).decode("utf-8", "replace")
    return str(b)


def _verdict(ok: bool, read: bool) -> str:
    """The words of ``linearizability``'s verdicts: ok, violation (read and wrong), unknown."""
    return "ok" if ok else ("violation" if read else "unknown")


@dataclass
class MembershipResult:
    """The verdict of ``check_membership``: ``expected`` (id -> (role, raft, client), the
    nemesis's belief), ``found`` (the same from the committed member list; None: it could
    not be read), and every ``problem`` in words."""

    expected: dict
    found: dict | None
    problems: list = field(default_factory=list)

    @property
    def read(self) -> bool:
        return self.found is not None

    @property
    def ok(self) -> bool:
        return self.read and not self.problems

    @property
    def verdict(self) -> str:
        return _verdict(self.ok, self.read)

    def summary(self) -> str:
        """The verdict in words."""
        if not self.read:
            return "membership: UNKNOWN (no committed member list could be read at the end)"
        roles = ", ".join(f"{i} {r[0]}" for i, r in sorted(self.found.items()))
        if self.ok:
            return (f"membership: OK — the committed member list ({roles}) is the one the "
                    f"nemesis made")
        return (f"membership: VIOLATION — the committed member list ({roles}) is not the one "
                f"the nemesis made: " + "; ".join(self.problems))

    def to_json(self) -> dict:
        """The ``members`` object of ``summary.json``."""
        show = (lambda d: {str(i): list(r) for i, r in sorted(d.items())})
        return {"expected": show(self.expected),
                "found": show(self.found) if self.found is not None else None,
                "problems": list(self.problems), "ok": self.ok}


def check_membership(expected: dict, found: dict | None) -> MembershipResult:
    """``expected`` and ``found``: id -> (role, raft, client)."""
    res = MembershipResult(dict(expected), None if found is None else dict(found))
    if found is None:
        return res
    for i in sorted(set(expected) | set(found)):
        e, f = expected.get(i), found.get(i)
        if f is None:
            res.problems.append(f"node {i} is missing (expected a {e[0]})")
        elif e is None:
            res.problems.append(f"node {i} is a {f[0]}, but the nemesis never added it or "
                                f"removed it")
        elif tuple(e) != tuple(f):
            res.problems.append(f"node {i} is {f[0]} at raft {f[1]}, client {f[2]}; "
                                f"expected {e[0]} at raft {e[1]}, client {e[2]}")
    return res


@dataclass
class ReplicaResult:
    """The verdict of ``check_replicas``: per node, ``differences`` (what it holds that the
    reference does not, in words) or why it could not be read (``unread``)."""

    reference_read: bool
    nodes: list = field(default_factory=list)               # the node ids checked
    differences: dict = field(default_factory=dict)         # id -> [words]
    unread: dict = field(default_factory=dict)              # id -> why
    items: int = 0                                          # keys and prefixes compared

    @property
    def read(self) -> bool:
        return self.reference_read and not self.unread

    @property
    def ok(self) -> bool:
        return self.read and not self.differences

    @property
    def verdict(self) -> str:
        if self.differences:
            return "violation"
        return _verdict(self.ok, self.read)

    def summary(self) -> str:
        """The verdict in words."""
        if not self.reference_read:
            return "replicas: UNKNOWN (the leader's state could not be read)"
        same = [i for i in self.nodes if i not in self.differences and i not in self.unread]
        head = (f"replicas: {self.verdict.upper()} — {len(same)} of {len(self.nodes)} members "
                f"hold the leader's state ({self.items} keys and scan prefixes compared on "
                f"each, once it applied the leader's commit index)")
        for i, words in sorted(self.differences.items()):
            head += f"; node {i} DIFFERS: " + "; ".join(words[:5])
        for i, why in sorted(self.unread.items()):
            head += f"; node {i} not read: {why}"
        return head

    def to_json(self) -> dict:
        """The ``replica_states`` object of ``summary.json``."""
        return {"nodes": list(self.nodes), "items": self.items,
                "differences": {str(i): w for i, w in self.differences.items()},
                "unread": {str(i): w for i, w in self.unread.items()},
                "ok": self.ok}


def check_replicas(reference: dict | None, nodes: dict) -> ReplicaResult:
    """``reference``: what the linearizable reads found, item -> value (an item is
    ``("get", key)`` or ``("scan", prefix)``; None: unreadable); ``nodes``: node id -> the
    same read from that node alone, or a string saying why it could not be read."""
    res = ReplicaResult(reference is not None, sorted(nodes),
                        items=len(reference) if reference is not None else 0)
    if reference is None:
        return res
    for i, got in sorted(nodes.items()):
        if isinstance(got, str):
            res.unread[i] = got
            continue
        words = []
        for item in sorted(set(reference) | set(got), key=repr):
            want, have = reference.get(item), got.get(item)
            if want != have:
                words.append(_difference(item, want, have))
        if words:
            res.differences[i] = words
    return res


def _difference(item: tuple, want, have) -> str:
    what, key = item
    if what == "scan":
        want, have = set(want or ()), set(have or ())
        extra = sorted(k for k, _ in have - want)
        missing = sorted(k for k, _ in want - have)
        return (f"scan {_as_text(key)}: {len(missing)} missing ("
                + ", ".join(_as_text(k) for k in missing[:5]) + f"), {len(extra)} extra ("
                + ", ".join(_as_text(k) for k in extra[:5]) + ")")
    return f"{_as_text(key)} = {_show(have)}, the leader has {_show(want)}"


def _show(v) -> str:
    return "nothing" if v is None else repr(_as_text(v))
