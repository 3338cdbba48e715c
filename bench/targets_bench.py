"""Issue 16's throughput, latency and CPU targets measured in one run on one local cluster.

Place in the architecture: a benchmark script (bench/), outside the package. It starts a
3-node cluster of real ``fastraft node`` processes (default tuning, fsync on) with the cluster
helper of ``membership_bench.py`` and runs ``fastraft bench``'s load
(``fastraft.client.bench.bench``: 16-byte keys, 100-byte values) in this process for each row:
writes at 64 and 256 in flight, linearizable reads at 256, one write at a time. For each it
records throughput and latency, the CPU the three nodes spent per operation (``/proc``) and
the CPU this process (the load generator, i.e. the client) spent per operation. The failover
rows of the issue's table come from ``failover_bench.py``, the leader-stability row from
``stability_bench.py``.

    python bench/targets_bench.py                  # 10 s per row, about a minute
    python bench/targets_bench.py --duration 3     # shorter
    python bench/targets_bench.py --rounds 3       # each row 3 times (medians)

Markdown to stdout, progress to stderr; exit 1 when the cluster cannot start or a node dies.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)
from tls_bench import proc_cpu_s  # noqa: E402

from fastraft.client.bench import bench  # noqa: E402
from fastraft.config import Tuning  # noqa: E402
from fastraft.core import IMPLEMENTATION  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402

#: (key, label, bench keywords, the issue's target as text)
ROWS = (("writes_64", "writes, 64 in flight", {"concurrency": 64},
         ">= 35,000/s, p99 < 10 ms"),
        ("writes_256", "writes, 256 in flight", {"concurrency": 256}, ">= 40,000/s"),
        ("reads_256", "linearizable reads, 256 in flight",
         {"concurrency": 256, "read_fraction": 1.0}, ">= 100,000/s"),
        ("writes_1", "one write at a time", {"concurrency": 1}, "p50 <= 0.5 ms"))


def _nodes_cpu(cl: Cluster) -> float | None:
    vals = [proc_cpu_s(n.proc.pid) for n in cl.nodes.values() if n.proc is not None]
    return None if not vals or None in vals else sum(vals)


async def _measure(cl: Cluster, row, duration: float) -> dict:
    key, label, kw, _target = row
    n0, c0 = _nodes_cpu(cl), time.process_time()
    try:
        s = await bench(cl.endpoints(), duration=duration, **kw)
    except FastraftError as exc:
        raise BenchFailed(f"{label}: {type(exc).__name__}: {exc}\n{cl.report()}") from None
    c1, n1 = time.process_time(), _nodes_cpu(cl)
    if any(not n.running for n in cl.nodes.values()):
        raise BenchFailed(f"a node exited during {label}\n{cl.report()}")
    ops = s["ops"] or 1
    r = {"row": key, "ops_s": s["throughput_ops_s"], "p50_ms": s["latency_ms"]["p50"],
         "p99_ms": s["latency_ms"]["p99"], "client_cpu_us": (c1 - c0) / ops * 1e6,
         "nodes_cpu_us": None if n0 is None or n1 is None else (n1 - n0) / ops * 1e6,
         "errors": s["errors"], "leader_changed": s["leader_start"] != s["leader_end"]}
    progress(f"{label:<36} {r['ops_s']:>9,.0f} ops/s  p50 {r['p50_ms']:.2f} ms  p99 "
             f"{r['p99_ms']:.2f} ms  nodes {r['nodes_cpu_us'] or 0:.1f} us/op  client "
             f"{r['client_cpu_us']:.1f} us/op")
    return r


async def run(args, base: Path, loop_name: str) -> dict:
    cl = Cluster(base, 3, Tuning())
    out = []
    try:
        cl.start()
        await cl.leader(60.0)
        await bench(cl.endpoints(), concurrency=64, duration=args.warmup)
        for _ in range(args.rounds):
            for row in ROWS:
                out.append(await _measure(cl, row, args.duration))
    finally:
        cl.close()
    return {"meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "loop": loop_name, "core": IMPLEMENTATION, "duration_s": args.duration,
                     "rounds": args.rounds, "load_average": os.getloadavg()},
            "measurements": out}


def _med(ms: list, field: str):
    vals = [m[field] for m in ms if m[field] is not None]
    return statistics.median(vals) if vals else None


def render(res: dict) -> str:
    m = res["meta"]
    rows = []
    for key, label, _kw, target in ROWS:
        ms = [x for x in res["measurements"] if x["row"] == key]
        nodes = _med(ms, "nodes_cpu_us")
        rows.append([label, f"{_med(ms, 'ops_s'):,.0f}", f"{_med(ms, 'p50_ms'):.2f}",
                     f"{_med(ms, 'p99_ms'):.2f}", "-" if nodes is None else f"{nodes:.1f}",
                     f"{_med(ms, 'client_cpu_us'):.1f}", target])
    return "\n".join([
        f"Python {m['python']}, {m['cpus']} CPUs, loop {m['loop']}, core {m['core']}; "
        f"{m['rounds']} round(s) of {m['duration_s']:g} s per row (medians); the three nodes "
        f"and the load generator share the machine; load average at the end "
        f"{m['load_average'][0]:.2f}.", "",
        table(["workload", "ops/s", "p50 ms", "p99 ms", "nodes' CPU µs/op (3 together)",
               "client CPU µs/op", "target (issue 16)"], rows), "",
        "Targets on CPU: the three nodes <= 25 µs per write; the client <= 20 µs per "
        "operation (pipelined)."])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, metavar="S")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=2.0, metavar="S")
    add_run_options(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    return run_script("targets_bench", parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
