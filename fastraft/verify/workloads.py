"""The durability (set) and exactly-once (session) workloads and their checkers.

Place in the architecture: part of the verification framework (``fastraft.verify``), beside
the register workload of ``nemesis.py``. The workers talk to the cluster through
``fastraft.client.AsyncClient`` and record every operation in the run's history
(``history.py``) under their own ``f`` names, which ``history.to_operations`` hands over in
``Operations.other``. The checkers (``check_set``, ``check_session``) are pure functions of
those (invocation, completion) pairs and of the final state read after the run.

Set workload (``f = "insert"``): each worker puts fresh keys ``s/<worker>/<chunk>/<n>`` (1000
keys per chunk, so one scan per chunk reads them back). At the end of the run every node is
killed with -9 and restarted, and every acknowledged insert must be present; an insert that
failed (NotApplied: certainly not applied) must be absent; unknown ones may be either.

Session workload: non-idempotent operations built from ``cas`` loops, retried across leader
changes by the client's session (a retried attempt is answered from the session cache):

- ``incr`` on a few shared counter keys ``c<j>``: read v (linearizable), ``cas(v, v+1)``;
  on False or NotApplied read again and retry; on OutcomeUnknown stop (the op is ``info``).
  At the end, per key: ``acked <= final <= acked + unknown``. A cas applied but answered
  False (or NotApplied) would be retried and applied again: ``final > acked + unknown``.
- ``append`` on shared keys ``a<j>.<gen>`` (a generation holds at most ``APPEND_CAP``
  tokens, then the workers move on to the next; the attempt that finds a key full is recorded
  as a ``fail`` with value "full" and the token goes to the next generation): the value is
  a comma-separated token list; ``cas(old, old + "," + token)`` retried the same way, with
  the same token. Each token is unique, so at the end: an acknowledged token present exactly
  once, an unknown one at most once, a failed one absent, no token twice (a duplicate is a
  cas applied but reported not applied, or applied twice). Unlike the counter it names the
  culprit operation.

The value recorded with a ``fail`` / ``info`` completion says why (the workloads count them
per value in ``reasons``): an error's class name (NotLeader, Timeout, ...), or for a session
operation "full" (above), "gave_up" (its cas loop ran out of time, 3 x ``--op-deadline``:
no attempt applied) or "stopped" (a cas lost a race as the run ended and was not retried).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

from ..errors import FastraftError, NotApplied

__all__ = ["SetWorkload", "SessionWorkload", "SetResult", "SessionResult", "check_set",
           "check_session", "parse_tokens", "APPEND_CAP", "CHUNK"]

CHUNK = 1000          # set keys per scan prefix
APPEND_CAP = 100      # tokens per append key generation

_AMBIGUOUS = (FastraftError, OSError, asyncio.TimeoutError)
_GAVE_UP = "gave_up"  # the value of a session fail whose cas loop ran out of time
_STOPPED = "stopped"  # ... whose cas lost a race as the run ended (not retried)
_FULL = "full"        # the value of an append fail that found its key full


def set_key(worker: int, n: int) -> bytes:
    return f"s/{worker}/{n // CHUNK:05d}/{n}".encode()


def set_prefix(key: bytes) -> bytes:
    return key[: key.rindex(b"/") + 1]


def parse_tokens(value) -> list:
    if not value:
        return []
    return [t for t in bytes(value).split(b",") if t]


def _status(comp) -> str:
    return comp.type if comp is not None else "info"


# -- checkers --------------------------------------------------------------------------------

@dataclass
class SetResult:
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
        return self.read and not self.lost and not self.resurrected

    def summary(self) -> str:
        if not self.read:
            return "set: UNKNOWN (the final state could not be read)"
        head = (f"set: {self.acked} acknowledged inserts (each must be present at the end), "
                f"{self.unknown} with unknown outcome (may be present or not: "
                f"{self.unknown_present} of them present), {self.failed} failed definitely "
                f"(must be absent: {len(self.resurrected)} present); lost {len(self.lost)}")
        if self.lost:
            head += ": " + ", ".join(_show(k) for k in self.lost[:20])
        head += " (acknowledged inserts missing at the end)"
        if self.resurrected:
            head += (f"; {len(self.resurrected)} failed inserts present: "
                     + ", ".join(_show(k) for k in self.resurrected[:20]))
        return head

    def to_json(self) -> dict:
        return {"attempted": self.attempted, "acked": self.acked, "unknown": self.unknown,
                "failed": self.failed, "unknown_present": self.unknown_present,
                "lost": [_show(k) for k in self.lost],
                "resurrected": [_show(k) for k in self.resurrected], "read": self.read,
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
    incr: dict = field(default_factory=dict)     # key -> {acked, unknown, failed, final, ok}
    append: dict = field(default_factory=dict)   # key -> {acked, unknown, failed, tokens, ...}
    problems: list = field(default_factory=list)
    read: bool = True

    @property
    def ok(self) -> bool:
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
        conv = lambda d: {_show(k): v for k, v in d.items()}   # noqa: E731
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
            if st == "failed" and comp.value == _FULL:
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
            res.problems.append(f"counter {_show(key)}: not a number: {raw!r}")
        elif final < d["acked"]:
            res.problems.append(f"counter {_show(key)}: final {final} < {d['acked']} "
                                "acknowledged increments (lost increments)")
        elif final > d["acked"] + d["unknown"]:
            res.problems.append(
                f"counter {_show(key)}: final {final} > {d['acked']} acknowledged + "
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
        k = _show(key)
        if dup:
            res.problems.append(f"append {k}: tokens present more than once: "
                                + ", ".join(_show(t) for t in dup[:10]))
        if lost:
            res.problems.append(f"append {k}: acknowledged tokens missing: "
                                + ", ".join(_show(t) for t in lost[:10]))
        if phantom:
            res.problems.append(f"append {k}: tokens present that were never applied "
                                "(failed or never sent): "
                                + ", ".join(_show(t) for t in phantom[:10]))
    return res


def _show(b) -> str:
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).decode("utf-8", "replace")
    return str(b)


# -- workloads -------------------------------------------------------------------------------

class _Base:
    name = "?"

    def __init__(self, endpoints, history, rng: random.Random, workers: int,
                 op_timeout: float, op_deadline: float) -> None:
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.workers = workers
        self.op_timeout = op_timeout
        self.op_deadline = op_deadline
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.reasons: dict = {"fail": {}, "info": {}}    # status -> recorded value -> n
        self._gen = 0

    def _pid(self, w: int) -> str:
        self._gen += 1
        return f"{self.name}-{w}-{self._gen}"

    async def run(self, stop: asyncio.Event) -> None:
        from ..client import AsyncClient

        async def one(w: int, rng: random.Random) -> None:
            client = AsyncClient(self.endpoints, timeout=self.op_timeout,
                                 deadline=self.op_deadline)
            pid = self._pid(w)
            try:
                while not stop.is_set():
                    pid = await self.step(client, w, rng, pid, stop)
            except asyncio.CancelledError:
                if pid in self.history.in_flight:
                    self.history.info(pid, "cancelled")
                    self._tally("info", "cancelled")
                raise
            finally:
                await client.close()

        await asyncio.gather(*(one(w, random.Random(self.rng.random()))
                               for w in range(self.workers)))

    def _done(self, pid, status: str, w: int, value=None) -> str:
        getattr(self.history, status)(pid, value)
        if status == "ok":
            self.counts["ok"] += 1
        else:
            self._tally(status, value)
        return self._pid(w) if status == "info" else pid

    def _tally(self, status: str, reason) -> None:
        self.counts[status] += 1
        reason = str(reason)
        self.reasons[status][reason] = self.reasons[status].get(reason, 0) + 1


class SetWorkload(_Base):
    """Unique inserts (see the module docstring)."""

    name = "set"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._n: dict = {}

    async def step(self, client, w, rng, pid, stop) -> str:
        n = self._n.get(w, 0)
        self._n[w] = n + 1
        key = set_key(w, n)
        self.history.invoke(pid, "insert", key, None)
        try:
            await client.put(key, b"x")
        except NotApplied as exc:
            return self._done(pid, "fail", w, type(exc).__name__)
        except _AMBIGUOUS as exc:
            return self._done(pid, "info", w, type(exc).__name__)
        return self._done(pid, "ok", w)


class SessionWorkload(_Base):
    """Counters and appends from cas loops (see the module docstring)."""

    name = "session"

    def __init__(self, *a, counters: int = 2, appends: int = 2, **kw) -> None:
        super().__init__(*a, **kw)
        self.counter_keys = [f"c{j}".encode() for j in range(counters)]
        self.append_slots = appends
        self._gens: dict = {}        # (worker, slot) -> generation
        self._n: dict = {}

    async def _cas_loop(self, client, key, make_new, stop, loop) -> tuple:
        """read, cas(old, make_new(old)) until True (ok), an ambiguous cas (info, with the
        error's name), or the deadline or the end of the run (fail: no attempt could have
        applied; "gave_up" / "stopped"). make_new may return None: the key is full (move
        on: 'full'). Returns (status, the value to record with it)."""
        end = loop.time() + 3 * self.op_deadline
        while loop.time() < end:
            try:
                old = await client.get(key)
            except _AMBIGUOUS:
                await asyncio.sleep(0.05)
                continue
            new = make_new(old)
            if new is None:
                return _FULL, None
            try:
                swapped = await client.cas(key, old, new)
            except NotApplied:
                await asyncio.sleep(0.02)
                continue
            except _AMBIGUOUS as exc:
                return "info", type(exc).__name__
            if swapped:
                return "ok", None
            if stop.is_set():
                return "fail", _STOPPED
        return "fail", _GAVE_UP

    async def step(self, client, w, rng, pid, stop) -> str:
        loop = asyncio.get_running_loop()
        n = self._n.get(w, 0)
        self._n[w] = n + 1
        if rng.random() < 0.5:
            key = rng.choice(self.counter_keys)
            self.history.invoke(pid, "incr", key, None)
            st, why = await self._cas_loop(
                client, key, lambda old: str(int(old or b"0") + 1).encode(), stop, loop)
            return self._done(pid, st, w, why)
        slot = rng.randrange(self.append_slots)
        token = f"{w}.{n}".encode()
        while True:
            gen = self._gens.get((w, slot), 0)
            key = f"a{slot}.{gen}".encode()

            def make(old, token=token):
                toks = parse_tokens(old)
                if len(toks) >= APPEND_CAP:
                    return None
                return (bytes(old) + b"," + token) if old else token

            self.history.invoke(pid, "append", key, token)
            st, why = await self._cas_loop(client, key, make, stop, loop)
            if st != _FULL:
                return self._done(pid, st, w, why)
            # Never applied: a fail, then the same token on the next generation.
            pid = self._done(pid, "fail", w, _FULL)
            self._gens[(w, slot)] = gen + 1
            if stop.is_set():
                return pid

    @staticmethod
    def keys_used(pairs) -> list:
        return sorted({inv.key for inv, _ in pairs if inv.f in ("incr", "append")})


async def read_final_state(client, pairs, attempts: int = 30):
    """After the run: ``(present set keys | None, {session key: value} | None)``, read
    linearizably (scan per set chunk, then a get for each acknowledged key the scans missed,
    to tell a lost key from a scan problem)."""
    async def retry(make):
        last = None
        for _ in range(attempts):
            try:
                return await make()
            except _AMBIGUOUS as exc:
                last = exc
                await asyncio.sleep(0.3)
        raise RuntimeError(f"final read failed: {last!r}")

    inserts = [(inv, comp) for inv, comp in pairs if inv.f == "insert"]
    present = None
    if inserts:
        try:
            present = set()
            for prefix in sorted({set_prefix(inv.key) for inv, _ in inserts}):
                rows = await retry(lambda p=prefix: client.scan(p, 0))
                present.update(bytes(k) for k, _ in rows)
            for inv, comp in inserts:
                if _status(comp) == "ok" and inv.key not in present:
                    v = await retry(lambda k=inv.key: client.get(k))
                    if v is not None:
                        present.add(inv.key)
        except RuntimeError:
            present = None
    keys = SessionWorkload.keys_used(pairs)
    finals = None
    if keys:
        try:
            finals = {}
            for k in keys:
                finals[k] = await retry(lambda k=k: client.get(k))
        except RuntimeError:
            finals = None
    return present, finals
