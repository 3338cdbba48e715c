"""``fastraft bench``: a load generator that drives a running cluster from one process.

Place in the architecture: a tool on top of the client (``aio``); the cli wires it in through
``cli_cmds``. It never imports the server: it measures what a user of ``AsyncClient`` sees.

How it loads the cluster: ``--clients`` AsyncClients (each with its own connections) share
``--concurrency`` worker coroutines (round-robin); each worker sends one request, waits for
the answer, records the latency and sends the next, so ``concurrency`` requests are always in
flight, pipelined on the clients' connections. The event loop is uvloop when it is installed.
Keys are 16 bytes (``b"bench/" + 10 digits``, ``--key-count`` of them, drawn uniformly),
values ``--value-size`` bytes (100 by default). With reads in the mix the keys are written
once before the measured run (not measured).

Latencies go into a log-bucketed histogram (0.5 % resolution; the maximum is exact), so the
recording costs one list append per operation and the once-a-second progress line (ops/s,
p50/p99 so far, on stderr) and the final percentiles cost nothing that grows with the run.
The summary also records the leader and its term at the start and the end (a leader change
during the run shows there).

Failing fast: before the load starts, the nodes are asked for their status; when none answers,
or no leader appears within ``--timeout`` seconds, the run stops at once (``BenchAborted``,
exit 2). During the run, when no request has succeeded for ``3 x --timeout`` seconds (the
client's whole retry budget for one call) and requests have failed meanwhile, it stops too.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time

from ..errors import FastraftError
from ..loops import LOOP_CHOICES, pick_loop

__all__ = ["add_bench_arguments", "run_bench", "Histogram", "bench", "BenchAborted",
           "BENCH_DESCRIPTION"]

BENCH_DESCRIPTION = (
    "A load generator: pipelined AsyncClients in one process (uvloop when installed) send "
    "reads and writes of 16-byte keys for DURATION seconds, with a progress line once a "
    "second on stderr and a summary at the end (stdout). It stops at once with exit status 2 "
    "when no node answers or no leader appears at the start, or when no request succeeds for "
    "3x --timeout seconds during the run.")

_K = 200          # histogram buckets per factor e (0.5 % wide)


class BenchAborted(FastraftError):
    """The cluster cannot be benchmarked: nobody answers, no leader, or no progress.
    ``nobody_answered``: no node answered at all (is a cluster running?)."""

    def __init__(self, message: str, nobody_answered: bool = False) -> None:
        super().__init__(message)
        self.nobody_answered = nobody_answered


class Histogram:
    """Latencies in seconds, bucketed by ``int(log(us) * _K)``."""

    __slots__ = ("counts", "n", "max", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add_many(self, samples: list) -> None:
        counts = self.counts
        log = math.log
        m = self.max
        for s in samples:
            us = s * 1e6
            b = int(log(us) * _K) if us > 1.0 else 0
            counts[b] = counts.get(b, 0) + 1
            if s > m:
                m = s
        self.max = m
        self.n += len(samples)
        self.total += sum(samples)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) in seconds (bucket midpoint; the max is exact)."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(self.n * p / 100.0))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(self.max, math.exp((b + 0.5) / _K) / 1e6)
        return self.max


def add_bench_arguments(p) -> None:
    from .cli_cmds import non_negative_int, positive_float, positive_int

    p.add_argument("--clients", type=positive_int, default=1, metavar="N",
                   help="AsyncClient instances (each with its own connections; default 1)")
    p.add_argument("--concurrency", type=positive_int, default=64, metavar="C",
                   help="requests in flight in all (default 64)")
    p.add_argument("--duration", type=positive_float, default=10.0, metavar="S",
                   help="seconds of measured load (default 10)")
    p.add_argument("--ratio", type=_ratio_arg, default="0:1", metavar="READS:WRITES",
                   help="mix of reads and writes (default 0:1, writes only)")
    p.add_argument("--value-size", type=non_negative_int, default=100, metavar="B",
                   help="bytes per written value (default 100)")
    p.add_argument("--key-count", type=positive_int, default=10_000, metavar="K",
                   help="distinct keys (default 10000)")
    p.add_argument("--stale", action="store_true",
                   help="reads are stale (any node; default linearizable on the leader)")
    p.add_argument("--loop", choices=LOOP_CHOICES, default="auto",
                   help="event loop (auto: uvloop when installed)")


def _parse_ratio(text: str) -> float:
    try:
        r, w = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"expected READS:WRITES like 9:1, got {text!r}") from None
    if not (math.isfinite(r) and math.isfinite(w)) or r < 0 or w < 0 or r + w == 0:
        raise ValueError(f"expected non-negative parts, not both zero, got {text!r}")
    return r / (r + w)


def _ratio_arg(text: str) -> str:
    """An argparse type: a valid READS:WRITES (kept as text)."""
    import argparse

    try:
        _parse_ratio(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ms(s: float) -> float:
    return round(s * 1000.0, 3)


def _leader_of(nodes: list) -> dict | None:
    best = None
    for n in nodes:
        if n.get("reachable") and n.get("role") == "leader":
            if best is None or n["term"] > best["term"]:
                best = {"id": n["id"], "term": n["term"], "endpoint": n["endpoint"]}
    return best


async def _wait_for_leader(client, endpoints: list[str], timeout: float) -> list:
    """The nodes' statuses once one answers as the leader; BenchAborted when no node
    answers, or when none is the leader after ``timeout`` seconds (an election may be under
    way when the cluster has just started)."""
    give_up_at = time.monotonic() + timeout
    while True:
        nodes = await client.status()
        if not any(n.get("reachable") for n in nodes):
            raise BenchAborted(f"no node answered at {','.join(endpoints)}",
                               nobody_answered=True)
        if _leader_of(nodes) is not None:
            return nodes
        if time.monotonic() >= give_up_at:
            n = sum(bool(x.get("reachable")) for x in nodes)
            raise BenchAborted(f"no leader: {n} of {len(nodes)} nodes answered and none "
                               f"is the leader after {timeout:g} s")
        await asyncio.sleep(0.1)


class _Run:
    """The shared state of the workers of one run."""

    def __init__(self, keys: list, value: bytes, read_fraction: float, stale: bool) -> None:
        self.keys = keys
        self.value = value
        self.read_fraction = read_fraction
        self.stale = stale
        self.errors: dict[str, int] = {}
        self.window: list = []          # latencies since the last progress tick
        self.reads = 0
        self.writes = 0
        self.stop = False

    async def worker(self, c) -> None:
        rnd = random.random
        pc = time.perf_counter
        put, get, append = c.put, c.get, self.window.append
        keys, value, rf, stale = self.keys, self.value, self.read_fraction, self.stale
        errors = self.errors
        n = len(keys)
        reads = writes = 0
        try:
            while not self.stop:
                k = keys[int(rnd() * n)]
                t0 = pc()
                try:
                    if rf and rnd() < rf:
                        reads += 1
                        await get(k, stale)
                    else:
                        writes += 1
                        await put(k, value)
                except FastraftError as exc:
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    continue
                append(pc() - t0)
        finally:
            self.reads += reads
            self.writes += writes


async def _measure(run: _Run, hist: Histogram, duration: float, stall: float,
                   progress) -> float:
    """Tick once a second until ``duration`` has passed (the last tick exactly at the end:
    uvloop's millisecond timers may wake a sleep early, which used to add a stray tick with
    an empty window); return the seconds measured. BenchAborted when nothing succeeded for
    ``stall`` seconds while requests failed."""
    pc = time.perf_counter
    t_start = pc()
    end = t_start + duration
    last_n, last_t = 0, t_start
    ok_t, ok_errors = t_start, 0       # when a request last succeeded; errors by then
    tick = t_start
    while True:
        tick = min(tick + 1.0, end)
        while (left := tick - pc()) > 0:
            await asyncio.sleep(max(left, 0.001))
        now = pc()
        batch = run.window[:]
        del run.window[:]
        hist.add_many(batch)
        err = sum(run.errors.values())
        if batch:
            ok_t, ok_errors = now, err
        elif err > ok_errors and now - ok_t >= stall:
            raise BenchAborted(f"no request succeeded for {now - ok_t:.0f} s; errors: "
                               + ", ".join(f"{k} {v}" for k, v in sorted(run.errors.items())))
        if progress is not None and (now - last_t >= 0.25 or last_t == t_start):
            rate = (hist.n - last_n) / (now - last_t)
            progress(f"[{now - t_start:5.1f}s] {rate:9.0f} ops/s   p50 "
                     f"{hist.percentile(50) * 1e3:7.2f} ms   p99 "
                     f"{hist.percentile(99) * 1e3:7.2f} ms   errors {err}")
            last_n, last_t = hist.n, now
        if tick >= end:
            return now - t_start


async def bench(endpoints: list[str], *, clients: int = 1, concurrency: int = 64,
                duration: float = 10.0, read_fraction: float = 0.0, value_size: int = 100,
                key_count: int = 10_000, stale: bool = False, timeout: float = 5.0,
                progress=None, tls=None) -> dict:
    """Run the load and return the summary dict (``progress(line)`` gets a line a second).
    BenchAborted when the cluster cannot be benchmarked (module docstring). ``tls``: an
    ``ssl.SSLContext`` for every client, or None (plain TCP)."""
    from .aio import AsyncClient

    cs = [AsyncClient(endpoints, timeout=timeout, tls=tls) for _ in range(max(1, clients))]
    keys = [b"bench/%010d" % i for i in range(key_count)]
    run = _Run(keys, b"x" * value_size, read_fraction, stale)
    hist = Histogram()
    tasks: list = []
    try:
        before = await _wait_for_leader(cs[0], endpoints, timeout)
        if read_fraction > 0:
            await _write_every_key(cs, keys, run.value, concurrency)
        tasks = [asyncio.ensure_future(run.worker(cs[i % len(cs)]))
                 for i in range(concurrency)]
        elapsed = await _measure(run, hist, duration, 3 * timeout, progress)
        run.stop = True
        await asyncio.gather(*tasks)
        hist.add_many(run.window)   # the requests in flight at the end (they took their time)
        after = await cs[0].status()
    finally:
        run.stop = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in cs:
            await c.close()
    return {
        "endpoints": endpoints,
        "clients": len(cs),
        "concurrency": concurrency,
        "duration_s": round(elapsed, 3),
        "read_fraction": read_fraction,
        "stale_reads": stale,
        "value_size": value_size,
        "key_count": key_count,
        **_results(run, hist, elapsed),
        "leader_start": _leader_of(before),
        "leader_end": _leader_of(after),
    }


async def _write_every_key(cs: list, keys: list, value: bytes, concurrency: int) -> None:
    """Write every key once, ``concurrency`` at a time, so that reads find values (before
    the measured run)."""
    it = iter(keys)

    async def fill(c):
        for k in it:
            await c.put(k, value)
    await asyncio.gather(*(fill(cs[i % len(cs)]) for i in range(concurrency)))


def _results(run: _Run, hist: Histogram, elapsed: float) -> dict:
    """The measured part of the summary: counts, throughput, latency percentiles, errors."""
    ops = hist.n
    return {
        "ops": ops,
        "reads": run.reads,
        "writes": run.writes,
        "throughput_ops_s": round(ops / elapsed, 1),
        "latency_ms": {"p50": _ms(hist.percentile(50)), "p90": _ms(hist.percentile(90)),
                       "p99": _ms(hist.percentile(99)), "p99.9": _ms(hist.percentile(99.9)),
                       "max": _ms(hist.max),
                       "mean": _ms(hist.total / ops) if ops else 0.0},
        "errors": run.errors,
    }


def run_bench(args, endpoints: list[str], hint: str = "", tls=None) -> int:
    """``fastraft bench``: run, print the summary (stdout) and return the exit code.
    ``hint`` is added to the error when no node answered; ``tls``: the clients' context."""
    try:
        rf = _parse_ratio(args.ratio)
        factory, loop_name = pick_loop(args.loop)
    except ValueError as exc:
        print(f"fastraft bench: {exc}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()
    shown = []

    def progress(line: str) -> None:
        shown.append(True)
        sys.stderr.write("\r" + line if tty else line + "\n")
        sys.stderr.flush()

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            summary = runner.run(bench(
                endpoints, clients=args.clients, concurrency=args.concurrency,
                duration=args.duration, read_fraction=rf, value_size=args.value_size,
                key_count=args.key_count, stale=args.stale, timeout=args.timeout,
                progress=progress, tls=tls))
    except KeyboardInterrupt:
        return 130
    except FastraftError as exc:
        if tty and shown:
            sys.stderr.write("\n")
        extra = f"; {hint}" if hint and getattr(exc, "nobody_answered", False) else ""
        print(f"fastraft bench: {exc}{extra}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 2
    if tty:
        sys.stderr.write("\n")
    summary["loop"] = loop_name
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0 if summary["ops"] else 2


def _print_summary(s: dict) -> None:
    lat = s["latency_ms"]
    kind = "stale" if s["stale_reads"] else "linearizable"
    print(f"fastraft bench: {s['duration_s']:.1f} s, {s['clients']} client(s), concurrency "
          f"{s['concurrency']}, reads {s['read_fraction'] * 100:.0f}% ({kind}), "
          f"{s['value_size']}-byte values, {s['key_count']} keys, loop {s['loop']}")
    print(f"  ops:         {s['ops']} ({s['reads']} reads, {s['writes']} writes)")
    print(f"  throughput:  {s['throughput_ops_s']:.0f} ops/s")
    print(f"  latency ms:  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}"
          f"  p99.9 {lat['p99.9']:.3f}  max {lat['max']:.3f}  mean {lat['mean']:.3f}")
    errs = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
    print(f"  errors:      {errs}")
    print(f"  leader:      at start: {_leader_text(s['leader_start'])}; "
          f"at end: {_leader_text(s['leader_end'])}")


def _leader_text(leader: dict | None) -> str:
    if leader is None:
        return "none"
    return f"node {leader['id']} (term {leader['term']})"
