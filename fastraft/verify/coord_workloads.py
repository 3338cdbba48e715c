"""The coordination workloads of a verification run: watch, lock and lease.

Place in the architecture: part of the verification framework (``fastraft.verify``), beside
``workloads.py`` (whose ``Workload`` scaffolding they use: one ``AsyncClient`` per worker,
every operation recorded in the run's history as invoked, then ok / fail (NotApplied) / info
(unknown outcome)). ``nemesis.py`` starts them with the others, under the same faults, then
calls each one's ``finish`` after the load (the final heal and the recovery) and before the
final kill of every node; ``coord_checks.py`` judges what they recorded.

Watch (``f = "watch_put"``): ``workers`` writers put unique values (``<writer>.<n>``) on a few
keys under ``verify/watch/``; ``watchers`` watchers, each with its own client, record every
event of the prefix (a ``WatchStream``): half from revision 1, half from now, the second half
of them started a quarter of the run later (under the faults). A stream that ends (Compacted,
Busy, ...) is recorded as such and the watcher starts a fresh one from now. ``finish`` writes
an end marker (``verify/watch/end``) once the writers have stopped and waits until every
watcher has received it: each stream then covers its start up to the marker. The streams are
written to ``watch-streams.jsonl``.

Lock (``f = lock_*``): ``workers`` clients take ``client.lock("verify-counter", ttl)`` in turn
and increment the counter ``verify/lock/counter`` (value ``count:fence``) by a non-atomic
read-modify-write guarded by the fence: ``lock_read`` reads the count; ``lock_write`` is the
protected resource's fence check, a read of the stored fence and, if it is lower than the
holder's, a revision cas of ``count+1:fence`` (retried while the key changes under it), so a
write with a fence not above the stored one is refused (ok ``("refused", stored fence)``;
accepted: ok ``("accepted", revision)``). The holders check ``Held.lost`` before reading and
before writing; worker 0 does not: it runs on an event loop in a thread of its own, and now
and then (every ``pause_every`` seconds at most) blocks that whole loop between its read and
its write (a paused process: no keep-alive either) until its lease has expired and a holder
with a higher fence has written (``lock_pause``), then writes its stale value: the fence check
must refuse it. Each client's ``lease_grant`` and ``lease_keepalive`` are wrapped to record
``lock_grant`` / ``lock_keepalive`` (the send time of each acknowledged one times the lease's
sure life); ``lock_acquire`` (ok: ``(fence, lease)`` at the acquisition), ``lock_release``
(invoked when the release begins, with ``(fence, lease, Held.lost set)``) and ``lock_lost``
(when ``Held.lost`` was seen set) complete a critical section. ``finish`` reads the counter.

Lease (``f = lease_*``): ``workers`` clients grant leases (TTL drawn from ``ttl``), put 1-3
keys ``verify/lease/<worker>/<lease>/<j>`` attached to each, and give each lease a fate: kept
alive until the end (at most ``keep_max`` per worker), kept alive a while then let lapse, let
lapse at once, or revoked after a short while (then the keys are scanned: ``lease_scan``).
The renewals (``lease_keepalive``, every third of the TTL) run in tasks of their own, on a
client per worker that lives until ``finish``. ``finish`` waits until the term has been
stable for the longest TTL + a margin, reads the prefix (``lease_final_read``, invoked with
the start of the stable term), then revokes what is left.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path

from ..errors import Compacted, FastraftError, LeaseNotFound, LockLost, NotApplied
from .coord_checks import (LEASE_MARGIN, WatchStream, check_lease, check_lock, check_watch,
                           counter_value, parse_counter)
from .workloads import _AMBIGUOUS, Workload

__all__ = ["WatchWorkload", "LockWorkload", "LeaseWorkload", "WATCH_PREFIX", "WATCH_END",
           "LOCK_NAME", "COUNTER", "LEASE_PREFIX", "STREAMS_FILE", "COORD_WORKLOADS",
           "finish_coord", "judge_coord"]

WATCH_PREFIX = b"verify/watch/"
WATCH_END = WATCH_PREFIX + b"end"        # the end marker, written once by finish
LOCK_NAME = b"verify-counter"
COUNTER = b"verify/lock/counter"
LEASE_PREFIX = b"verify/lease/"
STREAMS_FILE = "watch-streams.jsonl"
COORD_WORKLOADS = ("watch", "lock", "lease")
_FINISH = 30.0          # seconds finish may take to reach its goal before giving up


async def _retry_read(make, attempts: int = 30):
    """``await make()`` until it answers (ambiguous errors retried); RuntimeError at last."""
    last = None
    for _ in range(attempts):
        try:
            return await make()
        except (NotApplied, *_AMBIGUOUS) as exc:
            last = exc
            await asyncio.sleep(0.3)
    raise RuntimeError(f"read failed: {last!r}")


def _why(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__


async def _recorded(history, pid: str, aw) -> bool:
    """Await ``aw`` and record its outcome under ``pid`` (ok; fail: NotApplied; info: an
    ambiguous error); True when it was acknowledged."""
    try:
        await aw
    except NotApplied as exc:
        history.fail(pid, _why(exc))
    except _AMBIGUOUS as exc:
        history.info(pid, _why(exc))
    else:
        history.ok(pid, None)
        return True
    return False


# -- watch ----------------------------------------------------------------------------------

class WatchWorkload(Workload):
    """Writers of unique values and watchers recording every event (module docstring)."""

    name = "watch"

    def __init__(self, endpoints, history, rng: random.Random, workers: int,
                 op_timeout: float, op_deadline: float, *, watchers: int = 4, keys: int = 4,
                 duration: float = 60.0) -> None:
        super().__init__(endpoints, history, rng, workers, op_timeout, op_deadline)
        self.keys = [WATCH_PREFIX + b"k%d" % j for j in range(keys)]
        self.watchers = watchers
        self.duration = duration
        self.streams: list[WatchStream] = []
        self._n: dict = {}
        self._tasks: list = []
        self._clients: list = []

    async def step(self, client, w, rng, pid, stop):
        """One put of a fresh value on one of the keys."""
        n = self._n.get(w, 0)
        self._n[w] = n + 1
        key, value = rng.choice(self.keys), b"%d.%d" % (w, n)
        self.history.invoke(pid, "watch_put", key, value)
        _, _, pid = await self._call(pid, w, client.put(key, value))
        return pid

    def plan(self) -> list[tuple[float, bool]]:
        """``(delay, from revision 1)`` of each watcher: alternately from 1 and from now, each
        pair a quarter of the run after the one before (at most three quarters)."""
        return [(min(i // 2, 3) * self.duration / 4, i % 2 == 0) for i in range(self.watchers)]

    async def run(self, stop: asyncio.Event) -> None:
        """The writers until ``stop``; the watchers go on until ``finish``."""
        for i, (delay, from1) in enumerate(self.plan()):
            self._tasks.append(asyncio.ensure_future(self._watcher(i, delay, from1, stop)))
        await super().run(stop)

    async def _watcher(self, i: int, delay: float, from1: bool, stop: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return                                  # the run ended before its turn
        except asyncio.TimeoutError:
            pass
        client = self.new_client(-1 - i)
        self._clients.append(client)
        k = 0
        while True:
            w, stream = await self._open(client, f"watcher{i}.{k}", from1 and k == 0)
            self.streams.append(stream)
            k += 1
            if await self._follow(w, stream):
                return

    async def _open(self, client, name: str, from1: bool):
        """A started watch and its stream (retried until the cluster answers)."""
        while True:
            w = client.watch(WATCH_PREFIX, 1 if from1 else None)
            try:
                await w.start()
            except (FastraftError, OSError, asyncio.TimeoutError):
                await w.close()
                await asyncio.sleep(0.2)
                continue
            # the start is fixed (revision() + 1 when from now): every write invoked from
            # here on has a revision at or above it
            return w, WatchStream(name, w.next, self.history.now(), from1)

    async def _follow(self, w, stream: WatchStream) -> bool:
        """Record ``w``'s events into ``stream`` until the end marker (True) or an error that
        ends the stream (False: a fresh one follows)."""
        try:
            async for ev in w:
                stream.events.append((ev.revision, ev.type, ev.key, ev.value))
                if ev.key == WATCH_END:
                    stream.end, stream.ended = ev.revision, "end"
                    return True
            stream.end, stream.ended = w.next - 1, "closed"
            return True
        except Compacted as exc:
            stream.end, stream.ended, stream.oldest = w.next - 1, "compacted", exc.oldest
        except FastraftError as exc:               # Busy, InvalidRequest: all taken so far
            stream.end, stream.ended = w.next - 1, type(exc).__name__
        except asyncio.CancelledError:
            last = stream.events[-1][0] if stream.events else stream.start - 1
            stream.end, stream.ended = last, "stalled"
            raise
        finally:
            await w.close()
        return False

    async def finish(self, reader, term=None) -> None:
        """Write the end marker (retried until acknowledged) and wait for every watcher to
        receive it (those that do not within the time left are ``stalled``)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + _FINISH
        n = 0
        while loop.time() < end:
            pid = f"watch-end-{n}"
            value = b"end.%d" % n
            n += 1
            self.history.invoke(pid, "watch_put", WATCH_END, value)
            if await _recorded(self.history, pid, reader.put(WATCH_END, value)):
                break
            await asyncio.sleep(0.2)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(1.0, end - loop.time()))
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the watchers (a stream still open becomes ``stalled``) and close clients."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self._clients:
            await c.close()
        self._clients.clear()

    def dump(self, out: Path) -> str:
        """Write the streams to ``out/watch-streams.jsonl``; its path."""
        path = Path(out) / STREAMS_FILE
        with open(path, "w", encoding="utf-8") as f:
            for s in self.streams:
                f.write(json.dumps(s.to_json()) + "\n")
        return str(path)


# -- lock -----------------------------------------------------------------------------------

class LockWorkload(Workload):
    """Fenced increments under ``client.lock`` (module docstring)."""

    name = "lock"

    def __init__(self, endpoints, history, rng: random.Random, workers: int,
                 op_timeout: float, op_deadline: float, *, ttl: float = 2.0,
                 pause_every: float = 5.0) -> None:
        super().__init__(endpoints, history, rng, workers, op_timeout, op_deadline)
        self.ttl = ttl
        self.pause_every = pause_every
        self.max_acked_fence = 0         # the highest fence of an acknowledged increment
        self.final = None                # the counter at the end
        self.final_read = False
        self.thread_error: str | None = None
        self._thread: threading.Thread | None = None
        self._tstop = threading.Event()
        self._last_pause = time.monotonic()
        self._calls = 0

    def new_client(self, w: int):
        """A worker's client, its lease grants and keep-alives recorded (``lock_grant``,
        ``lock_keepalive``): the lock recipe calls them through the client."""
        client = super().new_client(w)
        hist = self.history
        grant, keepalive = client.lease_grant, client.lease_keepalive

        async def timed(f, key, value, call):
            with self._lock:
                self._calls += 1
                pid = f"lock-{f}-{w}-{self._calls}"
            hist.invoke(pid, f"lock_{f}", key, value)
            try:
                res = await call
            except NotApplied as exc:
                hist.fail(pid, _why(exc))
                raise
            except BaseException as exc:
                hist.info(pid, _why(exc))
                raise
            hist.ok(pid, res if f == "grant" else None)
            return res

        async def lease_grant(ttl, *, deadline=None):
            return await timed("grant", LOCK_NAME, float(ttl), grant(ttl, deadline=deadline))

        async def lease_keepalive(lease, *, deadline=None):
            return await timed("keepalive", lease, None, keepalive(lease, deadline=deadline))

        client.lease_grant = lease_grant
        client.lease_keepalive = lease_keepalive
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Worker 0 (the one that pauses) on a loop in a thread of its own, the others here,
        until ``stop``."""
        rngs = [random.Random(self.rng.random()) for _ in range(self.workers)]
        self._thread = threading.Thread(target=self._thread_main, args=(rngs[0],),
                                        name="verify-lock-pauser", daemon=True)
        self._thread.start()

        async def stop_thread() -> None:
            await stop.wait()
            self._tstop.set()
            while self._thread.is_alive():
                await asyncio.sleep(0.05)

        try:
            await asyncio.gather(stop_thread(), *(self.worker(w, rngs[w], stop)
                                                  for w in range(1, self.workers)))
        finally:
            self._tstop.set()

    def _thread_main(self, rng: random.Random) -> None:
        async def main() -> None:
            stop = asyncio.Event()

            async def poll() -> None:
                while not self._tstop.is_set():
                    await asyncio.sleep(0.05)
                stop.set()

            poller = asyncio.ensure_future(poll())
            try:
                await self.worker(0, rng, stop)
            finally:
                poller.cancel()

        try:
            asyncio.run(main())
        except BaseException as exc:   # noqa: BLE001 - reported in the summary
            self.thread_error = repr(exc)

    async def step(self, client, w, rng, pid, stop):
        """One critical section: acquire, read, (pause), fenced write, release."""
        lock = client.lock(LOCK_NAME, ttl=self.ttl)
        self.history.invoke(pid, "lock_acquire", LOCK_NAME, None)
        held, pid = await self._acquire(lock, w, pid, stop)
        if held is None:
            if not stop.is_set():
                await asyncio.sleep(0.05)
            return pid
        noticer = asyncio.ensure_future(self._note_lost(held))
        try:
            pid = await self._critical(client, held, w, rng, pid)
        finally:
            noticer.cancel()
            rpid = f"lock-release-{held.fence}"
            self.history.invoke(rpid, "lock_release", LOCK_NAME,
                                (held.fence, held.lease, held.lost.is_set()))
            try:
                await lock.release()
            finally:
                self.history.ok(rpid, None)
        return pid

    async def _acquire(self, lock, w: int, pid, stop: asyncio.Event):
        """``(Held, pid)`` once held, or ``(None, next pid)`` after a failure or the end."""
        task = asyncio.ensure_future(lock.acquire())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)   # it leaves the queue
        if task.cancelled():
            return None, self._done(pid, "info", w, "cancelled")
        exc = task.exception()
        if exc is None:
            held = task.result()
            return held, self._done(pid, "ok", w, (held.fence, held.lease))
        if isinstance(exc, (NotApplied, LockLost)):
            return None, self._done(pid, "fail", w, _why(exc))
        if isinstance(exc, _AMBIGUOUS):
            return None, self._done(pid, "info", w, _why(exc))
        raise exc

    async def _note_lost(self, held) -> None:
        await held.lost.wait()
        pid = f"lock-lost-{held.fence}"
        self.history.invoke(pid, "lock_lost", held.lease, held.fence)
        self.history.ok(pid, None)

    async def _critical(self, client, held, w: int, rng: random.Random, pid):
        """Read the count, (pause), write count + 1 through the fence check."""
        pauser = w == 0
        if not pauser and held.lost.is_set():
            return pid
        self.history.invoke(pid, "lock_read", COUNTER, held.fence)
        try:
            item = await client.get_item(COUNTER)
        except NotApplied as exc:
            return self._done(pid, "fail", w, _why(exc))
        except _AMBIGUOUS as exc:
            return self._done(pid, "info", w, _why(exc))
        parsed = parse_counter(item[1] if item else None)
        if parsed is None:
            return self._done(pid, "fail", w, "malformed")
        pid = self._done(pid, "ok", w, (*parsed, item[2] if item else 0))
        if pauser:
            if (time.monotonic() - self._last_pause >= self.pause_every
                    and rng.random() < 0.5):
                self._pause(held)
        elif held.lost.is_set():
            return pid
        return await self._write(client, held, parsed[0] + 1, w, pid)

    def _pause(self, held) -> None:
        """Block this thread's whole loop (no keep-alive: a paused process) until the lease
        has expired and a higher fence was written, or a cap, or the end of the run."""
        pid = f"lock-pause-{held.fence}"
        self.history.invoke(pid, "lock_pause", COUNTER, held.fence)
        t0 = time.monotonic()
        cap = 3 * self.ttl + 2 * self.op_deadline
        while time.monotonic() - t0 < cap and not self._tstop.is_set():
            if self.max_acked_fence > held.fence and time.monotonic() - t0 > self.ttl:
                break
            time.sleep(0.02)
        self.history.ok(pid, round(time.monotonic() - t0, 3))
        self._last_pause = time.monotonic()

    async def _write(self, client, held, count: int, w: int, pid):
        """The resource's fence check: stored fence lower than ours -> cas on its revision
        (again if it changed meanwhile); else refused."""
        fence = held.fence
        self.history.invoke(pid, "lock_write", COUNTER, (fence, count))
        loop = asyncio.get_running_loop()
        end = loop.time() + 3 * self.op_deadline
        while loop.time() < end:
            try:
                item = await client.get_item(COUNTER)
            except (NotApplied, *_AMBIGUOUS):
                await asyncio.sleep(0.05)
                continue
            parsed = parse_counter(item[1] if item else None)
            if parsed is None:
                return self._done(pid, "fail", w, "malformed")
            if parsed[1] >= fence:
                return self._done(pid, "ok", w, ("refused", parsed[1]))
            try:
                swapped, rev = await client.cas_revision(COUNTER, item[2] if item else 0,
                                                         counter_value(count, fence))
            except NotApplied:
                await asyncio.sleep(0.02)
                continue
            except _AMBIGUOUS as exc:
                return self._done(pid, "info", w, _why(exc))
            if swapped:
                with self._lock:
                    self.max_acked_fence = max(self.max_acked_fence, fence)
                return self._done(pid, "ok", w, ("accepted", rev))
        return self._done(pid, "fail", w, "gave_up")

    async def finish(self, reader, term=None) -> None:
        """Wait for the pausing worker's thread, then read the counter (linearizable)."""
        self._tstop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, _FINISH)
        pid = "lock-final"
        self.history.invoke(pid, "lock_final_read", COUNTER, None)
        try:
            self.final = await _retry_read(lambda: reader.get(COUNTER))
        except RuntimeError as exc:
            self.history.fail(pid, str(exc))
            return
        self.final_read = True
        self.history.ok(pid, self.final)

    async def aclose(self) -> None:
        """Let the pausing worker's thread end (it stops at its next step)."""
        self._tstop.set()


# -- lease ----------------------------------------------------------------------------------

class LeaseWorkload(Workload):
    """Leases granted, keys attached, kept alive, let lapse or revoked (module docstring)."""

    name = "lease"

    def __init__(self, endpoints, history, rng: random.Random, workers: int,
                 op_timeout: float, op_deadline: float, *, ttl: tuple = (1.0, 2.0),
                 keep_max: int = 3) -> None:
        super().__init__(endpoints, history, rng, workers, op_timeout, op_deadline)
        self.ttl = ttl
        self.keep_max = keep_max
        self.kept: dict = {}             # lease -> (worker, ttl): kept alive until the end
        self._keepers: dict = {}         # lease -> its renewing task
        self._kclients: dict = {}        # worker -> the client renewing its leases
        self._ka = 0

    def _fate(self, w: int, rng: random.Random) -> str:
        r = rng.random()
        kept = sum(1 for ww, _ in self.kept.values() if ww == w)
        if r < 0.25 and kept < self.keep_max:
            return "keep"
        if r < 0.45:
            return "keep_then_lapse"
        return "lapse" if r < 0.7 else "revoke"

    async def step(self, client, w, rng, pid, stop):
        """One lease: grant, its fate's renewals started, 1-3 keys put, maybe a revoke."""
        ttl = round(rng.uniform(*self.ttl), 3)
        self.history.invoke(pid, "lease_grant", LEASE_PREFIX, ttl)
        ok, lease, pid = await self._call(pid, w, client.lease_grant(ttl))
        if ok:
            fate = self._fate(w, rng)
            if fate == "keep":
                self.kept[lease] = (w, ttl)
            if fate in ("keep", "keep_then_lapse"):
                loop = asyncio.get_running_loop()
                until = None if fate == "keep" else loop.time() + rng.uniform(1, 3) * ttl
                self._keepers[lease] = asyncio.ensure_future(
                    self._keep(self._kclient(w), w, lease, ttl, until))
            for j in range(rng.randint(1, 3)):
                key = LEASE_PREFIX + f"{w}/{lease}/{j}".encode()
                self.history.invoke(pid, "lease_put", key, lease)
                _, _, pid = await self._call(pid, w, client.put(key, b"x", lease=lease))
            if fate == "revoke":
                await asyncio.sleep(rng.uniform(0, ttl / 2))
                pid = await self._revoke(client, w, lease, pid)
        await asyncio.sleep(rng.uniform(0.05, 0.2))
        return pid

    async def _revoke(self, client, w: int, lease: int, pid):
        """Revoke ``lease``; once acknowledged, scan its keys (all must be gone)."""
        self.history.invoke(pid, "lease_revoke", lease, None)
        ok, _, pid = await self._call(pid, w, client.lease_revoke(lease))
        if not ok:
            return pid
        prefix = LEASE_PREFIX + f"{w}/{lease}/".encode()
        self.history.invoke(pid, "lease_scan", prefix, lease)
        try:
            rows = await client.scan(prefix, 0)
        except NotApplied as exc:
            return self._done(pid, "fail", w, _why(exc))
        except _AMBIGUOUS as exc:
            return self._done(pid, "info", w, _why(exc))
        return self._done(pid, "ok", w, tuple(bytes(k) for k, _ in rows))

    def _kclient(self, w: int):
        c = self._kclients.get(w)
        if c is None:
            c = self._kclients[w] = self.new_client(w)
        return c

    async def _keep(self, client, w: int, lease: int, ttl: float, until) -> None:
        """Renew ``lease`` every third of its TTL (until ``until``, None: until cancelled);
        stop at LeaseNotFound."""
        loop = asyncio.get_running_loop()
        while until is None or loop.time() < until:
            await asyncio.sleep(ttl / 3)
            with self._lock:
                self._ka += 1
                pid = f"lease-ka-{lease}-{self._ka}"
            self.history.invoke(pid, "lease_keepalive", lease, ttl)
            try:
                await client.lease_keepalive(lease, deadline=ttl / 2)
            except LeaseNotFound as exc:
                self._done(pid, "fail", w, _why(exc))
                return
            except NotApplied as exc:
                self._done(pid, "fail", w, _why(exc))
            except _AMBIGUOUS as exc:
                self._done(pid, "info", w, _why(exc))
            except asyncio.CancelledError:
                self._done(pid, "info", w, "cancelled")
                raise
            else:
                self._done(pid, "ok", w, None)

    async def finish(self, reader, term) -> None:
        """Wait until the term (``await term()``: the cluster's, None when unknown) has been
        stable for the longest TTL + the margin, read the prefix (``lease_final_read``),
        then revoke the kept leases and close. A term that changed during the read makes
        the read a fail (the check is then unknown)."""
        loop = asyncio.get_running_loop()
        wait = max(self.ttl) + LEASE_MARGIN + 0.5
        give_up = loop.time() + max(_FINISH, 4 * wait)
        since, t0 = self.history.now(), await term()
        while True:
            await asyncio.sleep(max(0.0, since + wait - self.history.now()))
            t = await term()
            if (t is not None and t == t0) or loop.time() > give_up:
                break
            since, t0 = self.history.now(), t       # a new leader: leases refreshed, again
        pid = "lease-final"
        self.history.invoke(pid, "lease_final_read", LEASE_PREFIX, since)
        try:
            rows = await _retry_read(lambda: reader.scan(LEASE_PREFIX, 0))
        except RuntimeError as exc:
            self.history.fail(pid, str(exc))
        else:
            if t0 is not None and await term() == t0:
                self.history.ok(pid, tuple(sorted(bytes(k) for k, _ in rows)))
            else:
                self.history.fail(pid, "the term changed during the final read")
        await self.aclose(revoke=True)

    async def aclose(self, revoke: bool = False) -> None:
        """Stop the renewals (and, with ``revoke``, revoke the kept leases) and close."""
        for t in self._keepers.values():
            t.cancel()
        await asyncio.gather(*self._keepers.values(), return_exceptions=True)
        self._keepers.clear()
        for lease, (w, _ttl) in sorted(self.kept.items()) if revoke else ():
            pid = f"lease-cleanup-{lease}"
            self.history.invoke(pid, "lease_revoke", lease, None)
            await _recorded(self.history, pid, self._kclient(w).lease_revoke(lease))
        for c in self._kclients.values():
            await c.close()
        self._kclients.clear()


# -- the run's end --------------------------------------------------------------------------

async def finish_coord(workloads: dict, reader, term, out) -> None:
    """``finish`` of every coordination workload in ``workloads`` (name -> workload) at once,
    reading through ``reader``; ``term``: the cluster's term (async, None when unknown);
    ``watch-streams.jsonl`` written to ``out``."""
    await asyncio.gather(*(workloads[n].finish(reader, term) for n in COORD_WORKLOADS
                           if n in workloads))
    if "watch" in workloads:
        workloads["watch"].dump(out)


def judge_coord(pairs, workloads: dict, notes: list) -> dict:
    """The checks (``coord_checks``) of the coordination workloads that ran: name -> result
    (``verdict``, ``summary()``, ``to_json()``); a failure of the harness itself in
    ``notes``."""
    out: dict = {}
    if "watch" in workloads:
        out["watch"] = check_watch(pairs, workloads["watch"].streams)
    if "lock" in workloads:
        lw = workloads["lock"]
        out["lock"] = check_lock(pairs, lw.final, lw.final_read)
        if lw.thread_error:
            notes.append(f"lock: the pausing worker's thread failed: {lw.thread_error}")
    if "lease" in workloads:
        out["lease"] = check_lease(pairs)
    return out
