"""Leader stability under a saturating write load with snapshots: does a given election
timeout cause spurious elections? (issue 16: "prove with a 10-minute saturating run with
snapshots, and with the fork pause, that a lower default causes no spurious elections").

Place in the architecture: a benchmark script (bench/), outside the package. It starts a
3-node cluster of real ``fastraft node`` processes with the cluster helper of
``membership_bench.py`` and the tuning asked for (``--election-ms``, ``--heartbeat-ms``,
``--snapshot-threshold``: a low threshold makes every node snapshot every few seconds, each
snapshot a fork of the node's process), and runs ``fastraft bench``'s load
(``fastraft.client.bench.bench``) for ``--duration`` seconds. Nothing is killed or paused:
every election after the first is spurious. The nodes' logs say when each node became leader,
followed a new leader, and took a snapshot (and how long it took), and the metrics listener's
``fastraft_server_leader_changes_seen_total`` is read at the end.

    python bench/stability_bench.py --election-ms 300 --duration 600    # the issue's proof
    python bench/stability_bench.py --quick                             # smoke run (20 s)

Markdown to stdout, progress to stderr. Exit 1 when the cluster cannot start or a node dies;
exit 0 otherwise, spurious elections included (they are the figure, shown in the table). The
directory is kept with ``--keep`` or when the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import re
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)

from fastraft import processes  # noqa: E402
from fastraft.client.bench import bench  # noqa: E402
from fastraft.config import Tuning, render_config  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402

_ELECTED = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) node (\d+) INFO +became leader in term (\d+)",
                      re.M)
_SNAPSHOT = re.compile(r"snapshot at (\d+) written in ([0-9.]+) s")
_CHANGES = re.compile(r"^fastraft_server_leader_changes_seen_total ([0-9.e+]+)$", re.M)


class StableCluster(Cluster):
    """A 3-node cluster with a metrics address per node."""

    def __init__(self, base: Path, tuning: Tuning) -> None:
        super().__init__(base, 3, tuning)
        nodes = tuple(dataclasses.replace(s, metrics=("127.0.0.1", processes.free_port()))
                      for s in self.config.nodes)
        self.config = dataclasses.replace(self.config, nodes=nodes)
        Path(self.config_path).write_text(render_config(self.config))
        self.urls = {s.id: f"http://{s.metrics[0]}:{s.metrics[1]}" for s in nodes}

    def leader_changes_seen(self) -> dict:
        """Node id -> its fastraft_server_leader_changes_seen_total (None: no answer)."""
        out = {}
        for nid, url in self.urls.items():
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
                    m = _CHANGES.search(r.read().decode())
                out[nid] = int(float(m.group(1))) if m else None
            except OSError:
                out[nid] = None
        return out


async def run(args, base: Path, loop_name: str) -> dict:
    tuning = Tuning(election_timeout_ms=args.election_ms, heartbeat_ms=args.heartbeat_ms,
                    snapshot_threshold=args.snapshot_threshold,
                    snapshot_keep_entries=min(10_000, args.snapshot_threshold))
    cl = StableCluster(base, tuning)
    try:
        cl.start()
        await cl.leader(60.0)
        started = time.monotonic()
        try:
            s = await bench(cl.endpoints(), concurrency=args.concurrency,
                            duration=args.duration, progress=progress)
        except FastraftError as exc:
            raise BenchFailed(f"the load failed: {type(exc).__name__}: {exc}\n"
                              f"{cl.report()}") from None
        dead = [i for i, n in cl.nodes.items() if not n.running]
        if dead:
            raise BenchFailed(f"node(s) {dead} exited during the run\n{cl.report()}")
        changes = cl.leader_changes_seen()
        logs = {i: n.log_text() for i, n in cl.nodes.items()}
    finally:
        cl.close()
    elected = sorted((m.group(1), int(m.group(2)), int(m.group(3)))
                     for text in logs.values() for m in _ELECTED.finditer(text))
    snaps = [float(m.group(2)) for text in logs.values() for m in _SNAPSHOT.finditer(text)]
    return {"meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "loop": loop_name, "load_average": os.getloadavg(),
                     "tuning": dataclasses.asdict(tuning), "concurrency": args.concurrency,
                     "wall_s": round(time.monotonic() - started, 1)},
            "load": s, "elections": elected, "spurious": max(0, len(elected) - 1),
            "leader_changes_seen": changes, "snapshots": len(snaps),
            "snapshot_s_max": max(snaps, default=0.0)}


def render(res: dict) -> str:
    m, s = res["meta"], res["load"]
    t = m["tuning"]
    lat = s["latency_ms"]
    rows = [[f"{t['election_timeout_ms']} ms / {t['heartbeat_ms']} ms",
             f"{s['duration_s']:.0f} s", f"{s['throughput_ops_s']:,.0f}",
             f"{lat['p99']:.1f} / {lat['max']:.0f}", f"{res['snapshots']} "
             f"(max {res['snapshot_s_max']:.2f} s)",
             f"**{res['spurious']}**",
             ", ".join(f"{k}: {v}" for k, v in sorted(res["leader_changes_seen"].items())),
             sum(s["errors"].values()) if isinstance(s["errors"], dict) else s["errors"]]]
    lines = [f"Python {m['python']}, {m['cpus']} CPUs, loop {m['loop']}; writes, "
             f"{m['concurrency']} in flight; snapshot every {t['snapshot_threshold']:,} "
             f"entries on each node (a fork); load average at the end "
             f"{m['load_average'][0]:.2f}.", "",
             table(["election timeout / heartbeat", "run", "writes/s", "p99 / max ms",
                    "snapshots (all nodes)", "elections after the first",
                    "leader changes seen (metrics, per node)", "client errors"], rows)]
    if res["elections"]:
        lines += ["", "Elections (time, node, term): " + "; ".join(
            f"{a} node {b} term {c}" for a, b, c in res["elections"])]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--election-ms", type=int, default=Tuning.election_timeout_ms)
    ap.add_argument("--heartbeat-ms", type=int, default=Tuning.heartbeat_ms)
    ap.add_argument("--snapshot-threshold", type=int, default=50_000, metavar="N",
                    help="entries between two snapshots of a node (default 50,000)")
    ap.add_argument("--duration", type=float, default=600.0, metavar="S")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 s")
    add_run_options(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = 20.0
    return args


def main(argv=None) -> int:
    return run_script("stability_bench", parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
