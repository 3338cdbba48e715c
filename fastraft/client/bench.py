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
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time

from ..errors import FastraftError

__all__ = ["add_bench_arguments", "run_bench", "Histogram", "bench"]

_K = 200          # histogram buckets per factor e (0.5 % wide)


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
    p.add_argument("--clients", type=int, default=1, metavar="N",
                   help="AsyncClient instances (each with its own connections; default 1)")
    p.add_argument("--concurrency", type=int, default=64, metavar="C",
                   help="requests in flight in all (default 64)")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="seconds of measured load (default 10)")
    p.add_argument("--ratio", default="0:1", metavar="READS:WRITES",
                   help="mix of reads and writes (default 0:1, writes only)")
    p.add_argument("--value-size", type=int, default=100, metavar="B",
                   help="bytes per written value (default 100)")
    p.add_argument("--key-count", type=int, default=10_000, metavar="K",
                   help="distinct keys (default 10000)")
    p.add_argument("--stale", action="store_true",
                   help="reads are stale (any node; default linearizable on the leader)")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="event loop (auto: uvloop when installed)")


def _parse_ratio(text: str) -> float:
    try:
        r, w = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--ratio: expected READS:WRITES like 9:1, got {text!r}") from None
    if r < 0 or w < 0 or r + w == 0:
        raise ValueError("--ratio: expected non-negative parts, not both zero")
    return r / (r + w)


def _ms(s: float) -> float:
    return round(s * 1000.0, 3)


async def bench(endpoints: list[str], *, clients: int = 1, concurrency: int = 64,
                duration: float = 10.0, read_fraction: float = 0.0, value_size: int = 100,
                key_count: int = 10_000, stale: bool = False, timeout: float = 5.0,
                progress=None) -> dict:
    """Run the load and return the summary dict (``progress(line)`` gets a line a second)."""
    from .aio import AsyncClient

    cs = [AsyncClient(endpoints, timeout=timeout) for _ in range(max(1, clients))]
    keys = [b"bench/%010d" % i for i in range(key_count)]
    value = (b"x" * value_size)
    errors: dict[str, int] = {}
    hist = Histogram()
    window: list = []
    counts = {"reads": 0, "writes": 0}
    stop = False
    pc = time.perf_counter
    try:
        before = await cs[0].status()
        if read_fraction > 0:
            # Write every key once so that reads find values (not measured).
            it = iter(keys)

            async def fill(c):
                for k in it:
                    await c.put(k, value)
            await asyncio.gather(*(fill(cs[i % len(cs)]) for i in range(concurrency)))

        async def worker(c) -> None:
            rnd = random.random
            put = c.put
            get = c.get
            append = window.append
            n = len(keys)
            reads = writes = 0
            while not stop:
                k = keys[int(rnd() * n)]
                t0 = pc()
                try:
                    if read_fraction and rnd() < read_fraction:
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
            counts["reads"] += reads
            counts["writes"] += writes

        t_start = pc()
        tasks = [asyncio.ensure_future(worker(cs[i % len(cs)])) for i in range(concurrency)]
        last_n = 0
        tick = t_start
        while True:
            tick += 1.0
            end = t_start + duration
            await asyncio.sleep(max(0.0, min(tick, end) - pc()))
            now = pc()
            batch = window[:]
            del window[:]
            hist.add_many(batch)
            if progress is not None:
                rate = (hist.n - last_n) / max(now - (tick - 1.0), 1e-9)
                err = sum(errors.values())
                progress(f"[{now - t_start:5.1f}s] {rate:9.0f} ops/s   p50 "
                         f"{hist.percentile(50) * 1e3:7.2f} ms   p99 "
                         f"{hist.percentile(99) * 1e3:7.2f} ms   errors {err}")
            last_n = hist.n
            if now >= end:
                break
        stop = True
        elapsed = pc() - t_start
        await asyncio.gather(*tasks)
        hist.add_many(window)       # the requests in flight at the end (they took their time)
        after = await cs[0].status()
    finally:
        for c in cs:
            await c.close()

    def leader_of(nodes):
        for n in nodes:
            if n.get("reachable") and n.get("role") == "leader":
                return {"id": n["id"], "term": n["term"]}
        return None

    ops = hist.n
    return {
        "endpoints": endpoints,
        "clients": len(cs),
        "concurrency": concurrency,
        "duration_s": round(elapsed, 3),
        "read_fraction": read_fraction,
        "stale_reads": stale,
        "value_size": value_size,
        "key_count": key_count,
        "ops": ops,
        "reads": counts["reads"],
        "writes": counts["writes"],
        "throughput_ops_s": round(ops / elapsed, 1),
        "latency_ms": {"p50": _ms(hist.percentile(50)), "p90": _ms(hist.percentile(90)),
                       "p99": _ms(hist.percentile(99)), "p99.9": _ms(hist.percentile(99.9)),
                       "max": _ms(hist.max),
                       "mean": _ms(hist.total / ops) if ops else 0.0},
        "errors": errors,
        "leader_start": leader_of(before),
        "leader_end": leader_of(after),
    }


def _loop_factory(choice: str):
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def run_bench(args, endpoints: list[str]) -> int:
    try:
        rf = _parse_ratio(args.ratio)
        if args.concurrency < 1 or args.clients < 1 or args.key_count < 1 \
                or args.value_size < 0 or args.duration <= 0:
            raise ValueError("--concurrency, --clients, --key-count must be >= 1, "
                             "--duration > 0, --value-size >= 0")
        factory, loop_name = _loop_factory(args.loop)
    except ValueError as exc:
        print(f"fastraft bench: {exc}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if tty:
            sys.stderr.write("\r" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            summary = runner.run(bench(
                endpoints, clients=args.clients, concurrency=args.concurrency,
                duration=args.duration, read_fraction=rf, value_size=args.value_size,
                key_count=args.key_count, stale=args.stale, timeout=args.timeout,
                progress=progress))
    except KeyboardInterrupt:
        return 130
    except FastraftError as exc:
        print(f"\nfastraft bench: {type(exc).__name__}: {exc}", file=sys.stderr)
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
    ls, le = s["leader_start"], s["leader_end"]
    print(f"  leader:      start {ls and (ls['id'], ls['term'])}, end "
          f"{le and (le['id'], le['term'])}")
