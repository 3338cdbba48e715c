"""What the metrics cost: the same workloads on a cluster without and with the metrics
listener, in one run (issue 15).

Place in the architecture: a benchmark script (bench/), outside the package. It starts two
3-node clusters of real ``fastraft node`` processes with the cluster helper of
``membership_bench.py``: one without ``metrics`` in its config, one with a ``metrics``
address per node (the node then also counts every client request per operation and status
and times it). While the second one is measured, a scraper process fetches ``/metrics`` and
``/health`` from each of its nodes once a second, as Prometheus and a load balancer would.
The load is the function behind ``fastraft bench`` (``fastraft.client.bench.bench``).

Workloads: writes at 64 and 256 in flight, linearizable reads at 64 in flight. For every
workload of every round, one measurement on each cluster back to back, the first of the pair
alternating between rounds; the with / without figure is the median of the per-round ratios
(the method of ``tls_bench.py``, whose README section says why). Aim (the issue): within 3 %.

    python bench/metrics_bench.py                  # 3 rounds of 5 s: about 2 minutes
    python bench/metrics_bench.py --quick          # smoke run: 1 round of 1 s
    python bench/metrics_bench.py --rounds 5 --json metrics.json
    python bench/metrics_bench.py --control        # both clusters without metrics (A/A)
    python bench/metrics_bench.py --scrape-only    # one cluster: not scraped vs scraped

Markdown to stdout, progress to stderr; exit 1 when a cluster cannot start, a node dies or a
measurement fails (the directory is then kept).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)
from tls_bench import proc_cpu_s  # noqa: E402

from fastraft import processes  # noqa: E402
from fastraft.client.bench import bench  # noqa: E402
from fastraft.config import Tuning, render_config  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402

SIDES = ("off", "on")
WORKLOADS = (("writes_64", "writes, 64 in flight", {"concurrency": 64}),
             ("writes_256", "writes, 256 in flight", {"concurrency": 256}),
             ("reads_64", "linearizable reads, 64 in flight",
              {"concurrency": 64, "read_fraction": 1.0}))
TARGET = 0.97


class MetricsCluster(Cluster):
    """A 3-node cluster; with ``metrics``, each node gets a metrics address."""

    def __init__(self, base: Path, metrics: bool, side: str) -> None:
        super().__init__(base, 3, Tuning())
        self.side = side
        if metrics:
            nodes = tuple(dataclasses.replace(s, metrics=("127.0.0.1", processes.free_port()))
                          for s in self.config.nodes)
            self.config = dataclasses.replace(self.config, nodes=nodes)
            Path(self.config_path).write_text(render_config(self.config))
        self.urls = [f"http://{s.metrics[0]}:{s.metrics[1]}" for s in self.config.nodes
                     if getattr(s, "metrics", None)]
        self.scraper = Scraper(self.urls) if self.urls else None

    def cpu_s(self) -> float | None:
        """CPU seconds the three nodes have used (None where /proc cannot tell)."""
        vals = [proc_cpu_s(n.proc.pid) for n in self.nodes.values() if n.proc is not None]
        return None if not vals or None in vals else sum(vals)

    def check_alive(self, when: str) -> None:
        dead = [i for i, n in self.nodes.items() if not n.running]
        if dead:
            raise BenchFailed(f"cluster {self.side}: node(s) {dead} exited {when}\n"
                              f"{self.report()}")


#: The scraper: another process (as Prometheus is), started once per cluster so that its own
#: start-up costs nothing measured. On "start" it GETs /metrics and /health of every URL once
#: a second until "stop", then prints how many answered and how many were asked; "quit" (or
#: the end of stdin) ends it.
SCRAPER_PY = r"""
import select, sys, time, urllib.request
urls, active, ok, asked, next_at = sys.argv[1:], False, 0, 0, 0.0
while True:
    wait = max(0.0, next_at - time.monotonic()) if active else None
    if select.select([sys.stdin], [], [], wait)[0]:
        cmd = sys.stdin.readline().strip()
        if cmd == "start":
            active, ok, asked, next_at = True, 0, 0, time.monotonic()
        elif cmd == "stop":
            active = False
            print(ok, asked, flush=True)
        else:
            break
        continue
    next_at += 1.0
    for u in urls:
        for path in ("/metrics", "/health"):
            asked += 1
            try:
                with urllib.request.urlopen(u + path, timeout=5) as r:
                    r.read()
                ok += 1
            except OSError:
                pass
"""


class Scraper:
    """The scraper process of one cluster (``SCRAPER_PY``)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.proc = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRAPER_PY, *self.urls, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)

    def begin(self) -> None:
        self.proc.stdin.write(b"start\n")

    async def end(self) -> list[int]:
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        return [int(x) for x in line.split()[:2]] or [0, 0]

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            await self.proc.wait()


async def measure(cl: MetricsCluster, side: str, wl, args, r: int) -> dict:
    key, label, kw = wl
    counts = [0, 0]
    scraper = cl.scraper if args.scrape and side == "on" else None
    if scraper is not None:
        scraper.begin()
    cpu0 = cl.cpu_s()
    try:
        s = await bench(cl.endpoints(), duration=args.duration, **kw)
    except FastraftError as exc:
        raise BenchFailed(f"round {r}, {label}, metrics {side}: {type(exc).__name__}: "
                          f"{exc}\n{cl.report()}") from None
    finally:
        if scraper is not None:
            counts = await scraper.end()
    cpu1 = cl.cpu_s()
    cpu_us = None if cpu0 is None or cpu1 is None or not s["ops"] \
        else (cpu1 - cpu0) / s["ops"] * 1e6
    cl.check_alive(f"during round {r}, {label}")
    if not s["ops"]:
        raise BenchFailed(f"round {r}, {label}, metrics {side}: no operation completed")
    progress(f"round {r} {label:<34} metrics {side:>3}: {s['throughput_ops_s']:>9,.0f} "
             f"ops/s  p99 {s['latency_ms']['p99']:.2f} ms  nodes' CPU "
             f"{cpu_us or 0:.1f} us/op  scrapes {counts[0]}/{counts[1]}")
    return {"round": r, "workload": key, "side": side, "ops_s": s["throughput_ops_s"],
            "p99_ms": s["latency_ms"]["p99"], "scrapes_ok": counts[0], "scrapes": counts[1],
            "nodes_cpu_us_per_op": cpu_us}


async def run(args, base: Path, loop_name: str) -> dict:
    if args.scrape_only:
        one = MetricsCluster(base / "on", True, "on")
        clusters = {"off": one, "on": one}
    else:
        clusters = {"off": MetricsCluster(base / "off", False, "off"),
                    "on": MetricsCluster(base / "on", not args.control, "on")}
    res = {"meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loop": loop_name, "duration_s": args.duration, "rounds": args.rounds,
                    "control": args.control, "scrape_only": args.scrape_only},
           "measurements": []}
    distinct = list({id(c): c for c in clusters.values()}.values())
    try:
        for cl in distinct:
            cl.start()
        for cl in distinct:
            if cl.scraper is not None:
                await cl.scraper.start()
            await cl.leader(60.0)
            await bench(cl.endpoints(), concurrency=64, duration=args.warmup)
        for r in range(1, args.rounds + 1):
            order = SIDES if r % 2 else SIDES[::-1]
            for wl in WORKLOADS:
                for side in order:
                    res["measurements"].append(await measure(clusters[side], side, wl, args, r))
    finally:
        for cl in distinct:
            if cl.scraper is not None:
                await cl.scraper.close()
            cl.close()
    return res


def render(res: dict) -> str:
    ms = res["measurements"]
    rows = []
    worst = best = None
    for key, label, _ in WORKLOADS:
        by = {side: [m for m in ms if m["workload"] == key and m["side"] == side]
              for side in SIDES}
        ratios = [b["ops_s"] / a["ops_s"] for a, b in zip(by["off"], by["on"])]
        ratio = statistics.median(ratios)
        worst = ratio if worst is None else min(worst, ratio)
        best = ratio if best is None else max(best, ratio)
        cpu = [statistics.median(c) if c else None for c in (
            [m["nodes_cpu_us_per_op"] for m in by[side] if m["nodes_cpu_us_per_op"]]
            for side in SIDES)]
        rows.append([label, f"{statistics.median(m['ops_s'] for m in by['off']):,.0f}",
                     f"{statistics.median(m['ops_s'] for m in by['on']):,.0f}",
                     f"**{ratio:.3f}**", ", ".join(f"{x:.3f}" for x in ratios),
                     " / ".join("-" if c is None else f"{c:.1f}" for c in cpu)])
    m = res["meta"]
    scrapes = [x for x in ms if x["side"] == "on"]
    ok = sum(x["scrapes_ok"] for x in scrapes)
    total = sum(x["scrapes"] for x in scrapes)
    if m.get("scrape_only"):
        what = ("**scrape-only run**: ONE cluster with metrics, \"without\" = not scraped, "
                "\"with\" = /metrics and /health of each node scraped once a second "
                f"({ok} of {total} answered)")
    elif m.get("control"):
        what = ("**control run**: both clusters WITHOUT metrics (the columns keep their "
                "names): the spread of the method itself")
    else:
        what = (f"with metrics: /metrics and /health of each node scraped once a second "
                f"({ok} of {total} scrapes answered)")
    return "\n".join([
        f"Python {m['python']}, {m['cpus']} CPUs, loop {m['loop']}; {m['rounds']} round(s) "
        f"of {m['duration_s']:g} s per measurement; {what}.", "",
        table(["workload", "without metrics ops/s", "with metrics ops/s", "with / without",
               "per round", "nodes' CPU us/op without / with"], rows), "",
        f"A/A medians from {worst:.3f} to {best:.3f}: a with / without figure inside that "
        f"band is noise." if m.get("control") else
        f"Aim (within 3 %): {'met' if worst >= TARGET else 'NOT met'} (lowest {worst:.3f})."])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=None, metavar="S",
                    help="seconds per measurement (default 5; 1 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, metavar="N",
                    help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--warmup", type=float, default=2.0, metavar="S",
                    help="seconds of writes on each cluster first (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s")
    ap.add_argument("--no-scrape", dest="scrape", action="store_false",
                    help="do not scrape the nodes while measuring (the listener idle)")
    ap.add_argument("--control", action="store_true", help="an A/A run: the second "
                    "cluster without metrics too, to see the spread of the method itself")
    ap.add_argument("--scrape-only", action="store_true", help="one cluster with metrics, "
                    "measured not scraped and scraped: what the scrapes alone cost")
    add_run_options(ap, "the clusters live")
    args = ap.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.quick:
        args.warmup = min(args.warmup, 0.5)
    return args


def main(argv=None) -> int:
    return run_script("metrics_bench", parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
