"""Coordination figures of issue 17: watch fan-out under full-speed writes, and lock round trips.

Place in the architecture: a benchmark script (bench/), outside the package. It starts a
3-node cluster of real ``fastraft node`` processes (default tuning, fsync on) with the cluster
helper of ``membership_bench.py``, then, in one run:

- writes at 64 in flight (``fastraft.client.bench.bench``: 16-byte keys, 100-byte values)
  with no watcher, then with 1, 10 and 100 watchers of the written prefix, spread over the
  three nodes. The watchers live in ONE separate process (``--watcher-process``, this script
  re-run) so that their CPU does not come out of the load generator's; it reports how many
  events its watchers received. Figures: events/s delivered (all watchers together) and the
  write throughput with watchers as a ratio of the one without, measured in the same run.
- 4 contenders (each its own ``AsyncClient``) taking and releasing ``client.lock`` in a loop:
  acquisitions per second, and the p50 of one acquire + release.

    python bench/coord_bench.py                  # 10 s per measurement, about 1.5 minutes
    python bench/coord_bench.py --duration 5

Markdown to stdout, progress to stderr; exit 1 when the cluster cannot start or a node dies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)

from fastraft.client import AsyncClient  # noqa: E402
from fastraft.client.bench import bench  # noqa: E402
from fastraft.config import Tuning  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402

WATCHERS = (1, 10, 100)
CONTENDERS = 4


# -- the watcher process ------------------------------------------------------------------

async def _watchers(endpoints: list[str], n: int, prefix: bytes, seconds: float) -> dict:
    """``n`` watchers of ``prefix`` spread over ``endpoints`` for ``seconds``: the events
    they received in all."""
    clients = [AsyncClient([endpoints[i % len(endpoints)]], learn_members=False)
               for i in range(n)]
    counts = [0] * n

    async def one(i: int) -> None:
        async with clients[i].watch(prefix, start_revision=None) as w:
            async for _ev in w:
                counts[i] += 1

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    print("ready", flush=True)                  # the parent starts its load on this line
    await asyncio.sleep(seconds)
    total = sum(counts)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        await c.close()
    return {"events": total, "seconds": seconds}


def watcher_process(argv) -> int:
    endpoints, n, prefix, seconds = argv[0].split(","), int(argv[1]), argv[2].encode(), \
        float(argv[3])
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_watchers(endpoints, n, prefix, seconds))), flush=True)
    return 0


# -- the measurements ---------------------------------------------------------------------

async def _writes(cl: Cluster, duration: float, label: str) -> float:
    try:
        s = await bench(cl.endpoints(), duration=duration, concurrency=64)
    except FastraftError as exc:
        raise BenchFailed(f"{label}: {type(exc).__name__}: {exc}\n{cl.report()}") from None
    if any(not n.running for n in cl.nodes.values()):
        raise BenchFailed(f"a node exited during {label}\n{cl.report()}")
    return s["throughput_ops_s"]


async def _with_watchers(cl: Cluster, n: int, duration: float) -> dict:
    """Writes at 64 in flight while ``n`` watchers (another process) watch the keys."""
    # the bench writes keys "bench/...": watch that prefix (client/bench.py)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--watcher-process", ",".join(cl.endpoints()), str(n),
         "bench/", str(duration + 3)], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        if line.strip() != "ready":
            raise BenchFailed(f"the watcher process did not start: {line!r}")
        await asyncio.sleep(1.0)                # every watch established
        ops = await _writes(cl, duration, f"writes with {n} watchers")
        out, _ = await asyncio.get_running_loop().run_in_executor(None, proc.communicate)
    finally:
        if proc.poll() is None:
            proc.kill()
    got = json.loads(out.strip().splitlines()[-1])
    return {"watchers": n, "ops_s": ops, "events_s": got["events"] / duration}


async def _locks(cl: Cluster, duration: float) -> dict:
    clients = [AsyncClient(cl.endpoints()) for _ in range(CONTENDERS)]
    times: list[float] = []
    fences: list[int] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def contender(c: AsyncClient) -> None:
        while loop.time() < end:
            t0 = loop.time()
            async with c.lock("bench", ttl=5) as held:
                fences.append(held.fence)
            times.append(loop.time() - t0)

    try:
        await asyncio.gather(*(contender(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    if fences != sorted(fences):
        raise BenchFailed("lock fences did not increase with each acquisition")
    return {"acquisitions_s": len(times) / duration,
            "p50_ms": statistics.median(times) * 1e3 if times else None}


async def run(args, base: Path, loop_name: str) -> dict:
    cl = Cluster(base, 3, Tuning())
    try:
        cl.start()
        await cl.leader(60.0)
        await bench(cl.endpoints(), concurrency=64, duration=args.warmup)
        base_ops = await _writes(cl, args.duration, "writes, no watcher")
        progress(f"writes, no watcher: {base_ops:,.0f}/s")
        fan = []
        for n in WATCHERS:
            r = await _with_watchers(cl, n, args.duration)
            r["ratio"] = r["ops_s"] / base_ops
            progress(f"{n:>3} watchers: {r['events_s']:,.0f} events/s delivered, writes "
                     f"{r['ops_s']:,.0f}/s ({r['ratio']:.2f} of no watcher)")
            fan.append(r)
        locks = await _locks(cl, args.duration)
        progress(f"locks, {CONTENDERS} contenders: {locks['acquisitions_s']:.1f}/s")
    finally:
        cl.close()
    return {"meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "loop": loop_name, "duration_s": args.duration,
                     "load_average": os.getloadavg()},
            "base_ops_s": base_ops, "fanout": fan, "locks": locks}


def render(res: dict) -> str:
    m = res["meta"]
    rows = [[str(r["watchers"]), f"{r['events_s']:,.0f}", f"{r['ops_s']:,.0f}",
             f"{r['ratio']:.2f}"] for r in res["fanout"]]
    lk = res["locks"]
    return "\n".join([
        f"Python {m['python']}, {m['cpus']} CPUs, loop {m['loop']}; {m['duration_s']:g} s "
        f"per measurement; 3 nodes, the load generator and the watcher process share the "
        f"machine; load average at the end {m['load_average'][0]:.2f}.", "",
        f"Writes at 64 in flight without watchers: {res['base_ops_s']:,.0f}/s.", "",
        table(["watchers", "events/s delivered (all)", "writes/s", "writes vs none"], rows),
        "",
        f"Locks, {CONTENDERS} contenders on one name: {lk['acquisitions_s']:.1f} "
        f"acquisitions/s, p50 acquire + release {lk['p50_ms']:.1f} ms (fences increased "
        f"with every acquisition)."])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, metavar="S")
    ap.add_argument("--warmup", type=float, default=2.0, metavar="S")
    add_run_options(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--watcher-process":
        return watcher_process(sys.argv[2:])
    return run_script("coord_bench", parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
