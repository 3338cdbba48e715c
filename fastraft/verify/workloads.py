"""The workloads of a verification run: register, set (durability) and session (exactly-once).

Place in the architecture: part of the verification framework (``fastraft.verify``); a run
(``nemesis.py``) starts them. Each worker is a client of its own
(``fastraft.client.AsyncClient``) that records every operation in the run's history
(``history.py``): invoked, then ok, fail (NotApplied: certainly not applied) or info (any
other error: the outcome is unknown, and the worker goes on as a fresh process id, since the
old operation may still be in flight). ``Workload`` is that scaffolding; each workload only
says what one step does. The register workload's operations are judged by
``linearizability.py``; the set and session ones (their own ``f`` names, handed over in
``Operations.other``) by ``final_state.py``, against the state ``read_final_state`` reads
after the run.

Register workload (``f`` = ``read`` (linearizable), ``stale_read``, ``write`` of unique
values, ``cas``): ``workers`` clients on ``keys`` keys ``k<j>``; a cas expects the value the
worker last saw.

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

The watch, lock and lease workloads (``coord_workloads.py``) use the same scaffolding (a
worker may also run on a loop of its own in a thread: ``worker`` and ``new_client`` are
separate, and the counts are kept under a lock).

The value recorded with a ``fail`` / ``info`` completion says why (the workloads count them
per value in ``reasons``): an error's class name (NotLeader, Timeout, ...), "cancelled" (in
flight as the run ended), or for a session operation "full" (above), "gave_up" (its cas loop
ran out of time, 3 x ``--op-deadline``: no attempt applied) or "stopped" (a cas lost a race
as the run ended and was not retried).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading

from ..errors import FastraftError, NotApplied
from .final_state import APPEND_CAP, FULL, parse_tokens

__all__ = ["Workload", "RegisterWorkload", "SetWorkload", "SessionWorkload",
           "read_final_state", "read_items", "state_items", "set_key", "set_prefix", "CHUNK"]

CHUNK = 1000          # set keys per scan prefix

_AMBIGUOUS = (FastraftError, OSError, asyncio.TimeoutError)
_GAVE_UP = "gave_up"  # the value of a session fail whose cas loop ran out of time
_STOPPED = "stopped"  # ... whose cas lost a race as the run ended (not retried)


def set_key(worker: int, n: int) -> bytes:
    """The ``n``-th key a set worker inserts: ``s/<worker>/<chunk>/<n>``."""
    return f"s/{worker}/{n // CHUNK:05d}/{n}".encode()


def set_prefix(key: bytes) -> bytes:
    """The scan prefix of a set key's chunk (``s/<worker>/<chunk>/``)."""
    return key[: key.rindex(b"/") + 1]


class Workload:
    """``workers`` concurrent clients, each running ``step`` until ``stop`` is set, recording
    in ``history``; ``counts`` (ok / fail / info) and ``reasons`` (fail / info -> the value
    recorded -> n) say how it went. A subclass defines ``step``, which records one
    operation and returns the process id to go on with (``_done`` gives it). ``tls``: the
    clients' ``ssl.SSLContext`` for a TLS cluster (the run sets it), None for plaintext."""

    name = "?"
    tls = None

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
        self._lock = threading.Lock()    # a workload may run a worker in a thread of its own

    def _pid(self, w: int):
        """A fresh process id for worker ``w``."""
        with self._lock:
            self._gen += 1
            return f"{self.name}-{w}-{self._gen}"

    async def step(self, client, w: int, rng: random.Random, pid, stop: asyncio.Event):
        """One operation of worker ``w`` as process ``pid``; returns the next process id."""
        raise NotImplementedError

    def new_client(self, w: int):
        """The ``AsyncClient`` of worker ``w`` (made on the loop that will use it)."""
        from ..client import AsyncClient

        return AsyncClient(self.endpoints, timeout=self.op_timeout, deadline=self.op_deadline,
                           tls=self.tls)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every worker until ``stop`` is set (an operation in flight when the workers
        are cancelled is recorded as info "cancelled")."""
        await asyncio.gather(*(self.worker(w, random.Random(self.rng.random()), stop)
                               for w in range(self.workers)))

    async def worker(self, w: int, rng: random.Random, stop: asyncio.Event) -> None:
        """Worker ``w``: its own client, ``step`` after ``step`` until ``stop`` is set."""
        client = self.new_client(w)
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

    async def _call(self, pid, w: int, call):
        """Await ``call`` and record its completion: ``(True, result, pid)``, or ``(False,
        None, next pid)`` after a NotApplied (fail) or an ambiguous error (info)."""
        try:
            res = await call
        except NotApplied as exc:
            return False, None, self._done(pid, "fail", w, type(exc).__name__)
        except _AMBIGUOUS as exc:
            return False, None, self._done(pid, "info", w, type(exc).__name__)
        return True, res, self._done(pid, "ok", w, res)

    def _done(self, pid, status: str, w: int, value=None):
        """Record ``pid``'s completion; returns the process id to go on with (a fresh one
        after an info: the operation may still be in flight)."""
        getattr(self.history, status)(pid, value)
        if status == "ok":
            with self._lock:
                self.counts["ok"] += 1
        else:
            self._tally(status, value)
        return self._pid(w) if status == "info" else pid

    def _tally(self, status: str, reason) -> None:
        reason = str(reason)
        with self._lock:
            self.counts[status] += 1
            self.reasons[status][reason] = self.reasons[status].get(reason, 0) + 1


class RegisterWorkload(Workload):
    """Reads, stale reads, writes of unique values and cas on ``keys`` keys (see the module
    docstring); the linearizability checker judges them. Process ids are numbers."""

    name = "register"

    def __init__(self, endpoints, history, rng: random.Random, workers: int, keys: int,
                 op_timeout: float, op_deadline: float) -> None:
        super().__init__(endpoints, history, rng, workers, op_timeout, op_deadline)
        self.keys = [f"k{i}".encode() for i in range(keys)]
        self._pids = itertools.count(1)
        self._n: dict = {}           # worker -> operations so far
        self._seen: dict = {}        # worker -> key -> the value it last saw

    def _pid(self, w: int) -> int:
        return next(self._pids)

    async def step(self, client, w, rng, pid, stop):
        """One read, stale read, write or cas."""
        seen = self._seen.setdefault(w, {})
        key = rng.choice(self.keys)
        r = rng.random()
        n = self._n[w] = self._n.get(w, 0) + 1
        unique = f"{w}.{n}".encode()
        if r < 0.35:
            f, arg, call = "read", None, client.get(key)
        elif r < 0.45:
            f, arg, call = "stale_read", None, client.get(key, stale=True)
        elif r < 0.8:
            f, arg, call = "write", unique, client.put(key, unique)
        else:
            exp = seen.get(key)
            f, arg, call = "cas", (exp, unique), client.cas(key, exp, unique)
        self.history.invoke(pid, f, key, arg)
        ok, res, pid = await self._call(pid, w, call)
        if ok:
            if f in ("read", "stale_read"):
                seen[key] = res
            elif f == "write" or (f == "cas" and res):
                seen[key] = unique
        return pid


class SetWorkload(Workload):
    """Unique inserts (see the module docstring)."""

    name = "set"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._n: dict = {}

    async def step(self, client, w, rng, pid, stop) -> str:
        """One insert of a fresh key."""
        n = self._n.get(w, 0)
        self._n[w] = n + 1
        key = set_key(w, n)
        self.history.invoke(pid, "insert", key, None)
        _, _, pid = await self._call(pid, w, client.put(key, b"x"))
        return pid


class SessionWorkload(Workload):
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
                return FULL, None
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
        """One increment or one append (moving on to the next key generation when full)."""
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
            if st != FULL:
                return self._done(pid, st, w, why)
            # Never applied: a fail, then the same token on the next generation.
            pid = self._done(pid, "fail", w, FULL)
            self._gens[(w, slot)] = gen + 1
            if stop.is_set():
                return pid

    @staticmethod
    def keys_used(pairs) -> list:
        """The counter and append keys the session operations of ``pairs`` used, sorted."""
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
                if comp is not None and comp.type == "ok" and inv.key not in present:
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


def state_items(pairs, register_keys=()) -> list:
    """What one node's copy of the state is compared on at the end (``final_state.
    check_replicas``): ``("scan", prefix)`` of every set chunk and of the watch workload's
    prefix, ``("get", key)`` of every session key, of the lock workload's counter and of
    ``register_keys``. (The lease keys are left out: they may still expire meanwhile.)"""
    prefixes = {set_prefix(inv.key) for inv, _ in pairs if inv.f in ("insert", "watch_put")}
    keys = set(SessionWorkload.keys_used(pairs)) | {bytes(k) for k in register_keys}
    keys.update(bytes(inv.key) for inv, _ in pairs if inv.f == "lock_write")
    return [("scan", p) for p in sorted(prefixes)] + [("get", k) for k in sorted(keys)]


async def read_items(client, items, stale: bool = False, attempts: int = 10) -> dict:
    """``items`` (``state_items``) read through ``client``: item -> the value (a get) or the
    sorted ``(key, value)`` pairs (a scan); ``stale``: served by the node the client talks
    to, from what it has applied. RuntimeError when a read keeps failing."""
    out: dict = {}
    for item in items:
        what, arg = item
        last = None
        for _ in range(attempts):
            try:
                if what == "scan":
                    rows = await client.scan(arg, 0, stale=stale)
                    out[item] = tuple(sorted((bytes(k), bytes(v)) for k, v in rows))
                else:
                    v = await client.get(arg, stale=stale)
                    out[item] = None if v is None else bytes(v)
                break
            except _AMBIGUOUS as exc:
                last = exc
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"{what} {arg!r} failed: {last!r}")
    return out
