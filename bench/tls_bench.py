"""What TLS costs: plaintext versus TLS on real node processes, in one run (issue 14).

Place in the architecture: a benchmark script (bench/), outside the package. It starts two
3-node clusters of real ``fastraft node`` processes on free ports of 127.0.0.1 with the
cluster helper of ``membership_bench.py`` (``python -P -m fastraft node --id N --config F
--data-dir D``, each node's output in its own log file): one plaintext, one with a ``[tls]``
table using a development PKI from ``fastraft.certs.init_certs`` and ``client_ca`` set, so
both the peer port and the client port speak mutual TLS. It loads them with the function
behind ``fastraft bench`` (``fastraft.client.bench.bench``, in this process, on uvloop when
installed), the TLS cluster through ``fastraft.tls.client_context`` with the peer CA and the
client certificate. It imports nothing of the server.

Workloads (``fastraft bench`` defaults otherwise: one client, 16-byte keys among 10,000,
100-byte values, fsync on, the default tuning):

- writes, 64 and 256 in flight;
- linearizable reads (``--ratio 1:0``, not ``--stale``), 64 and 256 in flight (the bench
  writes every key once before each such run, not measured);
- single writes (1 in flight): p50 and p99 latency.

Then, unless ``--flood 0``, a handshake flood on the TLS cluster's leader: a separate process
(``--flood`` threads) opens TLS connections to the leader's client and peer ports as fast as
it can, full handshakes each time (half of them with the client certificate, half without,
which the node refuses), and holds 200 connections that never speak; meanwhile, writes at 64
in flight are measured, between two measurements without the flood. Reported: handshakes per
second, the writes' throughput and p99 with and without it, and whether the leader and its
term stayed the same (the issue's "a flood of handshakes does not cost leadership").

Method: both clusters run for the whole script and are measured in turn: for every workload
of every round, one measurement on each cluster, back to back, the first of the pair
alternating between rounds (plain then TLS in round 1, TLS then plain in round 2, ...), so a
slow drift of the shared machine's load weighs on both sides alike. Each figure is the median
over ``--rounds``; the "per round" column gives the ratio of each pair, and the TLS / plain
figure is the median of those ratios (a round in which the whole machine was slower then
weighs on both sides of one ratio instead of on one side's median). Before round 1 each
cluster gets a short write warm-up (``--warmup``), not counted.

Why both clusters stay up rather than being started and stopped around each measurement:
an idle 3-node cluster only exchanges heartbeats (every 50 ms), which costs a small fraction
of one core, while restarting would put a start-up, an election and cold caches before every
measurement, and on 2 cores a node still starting would compete with the measured one. The
script measures that choice: the CPU the idle cluster used during each measurement (from
``/proc``, Linux only) is printed (``idle cluster`` line) and kept in the JSON.

On Linux it also records the CPU time of the three measured nodes and of this process (the
bench client) over each measured window, printed as microseconds of CPU per operation: on a
machine whose cores the nodes and the client saturate, that is where TLS's cost shows.

    python bench/tls_bench.py                   # 5 workloads x 2 clusters x 3 rounds of 5 s
    python bench/tls_bench.py --quick           # smoke run: 1 round of 1 s, < 1 minute
    python bench/tls_bench.py --duration 10 --rounds 5 --json tls.json

Markdown tables go to stdout, progress to stderr; ``--json FILE`` also writes every
measurement. Figures only: nothing fails on speed. Exit 1 when a cluster cannot be started
(no leader within ``--wait-timeout``, a node exits, the ``cryptography`` package is
missing), a node dies, or a measurement fails (the bench aborts or completes no operation);
the message says which, with the tail of every node's log, and the directory is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)

from fastraft import certs  # noqa: E402
from fastraft.client.bench import bench  # noqa: E402
from fastraft.config import TLSConfig, Tuning, render_config  # noqa: E402
from fastraft.core import IMPLEMENTATION  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402
from fastraft.tls import client_context  # noqa: E402

pc = time.perf_counter
SIDES = ("plain", "tls")
SIDE_NAMES = {"plain": "plaintext", "tls": "TLS"}
#: (key, label, bench arguments); the last one is the latency workload.
WORKLOADS = (
    ("writes_64", "writes, 64 in flight", {"concurrency": 64}),
    ("writes_256", "writes, 256 in flight", {"concurrency": 256}),
    ("reads_64", "linearizable reads, 64 in flight", {"concurrency": 64, "read_fraction": 1.0}),
    ("reads_256", "linearizable reads, 256 in flight",
     {"concurrency": 256, "read_fraction": 1.0}),
    ("single", "single write, 1 in flight", {"concurrency": 1}),
)
THROUGHPUT = [w for w in WORKLOADS if w[0] != "single"]
TARGET = 0.75          # the aim: TLS keeps at least 75 % of plaintext throughput
SAMPLE_S = 0.1         # CPU sampling interval


# -- clusters -------------------------------------------------------------------------------


class BenchCluster(Cluster):
    """membership_bench's 3-node cluster, with a ``[tls]`` table when ``tls`` is given (the
    config file is rewritten before anything starts). ``ctx``: the clients' SSLContext."""

    def __init__(self, base: Path, tuning: Tuning, side: str, tls: TLSConfig | None = None,
                 ctx=None) -> None:
        super().__init__(base, 3, tuning)
        self.side, self.ctx = side, ctx
        if tls is not None:
            self.config = dataclasses.replace(self.config, tls=tls)
            Path(self.config_path).write_text(render_config(self.config))

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes.values() if n.proc is not None]

    def check_alive(self, when: str) -> None:
        dead = [i for i, n in self.nodes.items() if not n.running]
        if dead:
            raise BenchFailed(f"{SIDE_NAMES[self.side]} cluster: node(s) {dead} exited "
                              f"{when}\n{self.report()}")


def make_clusters(base: Path, tuning: Tuning) -> dict[str, BenchCluster]:
    """The plaintext cluster under base/plain and the TLS one under base/tls (its PKI, its
    config file and its data side by side there; the paths in [tls] are relative)."""
    tls_dir = base / "tls"
    certs.init_certs(str(tls_dir), nodes=3, hosts=["127.0.0.1", "localhost"])
    tls = TLSConfig(peer_ca="peer-ca.pem", cert="node{id}.pem", key="node{id}.key",
                    client_ca="client-ca.pem")
    ctx = client_context(str(tls_dir / "peer-ca.pem"), str(tls_dir / "client.pem"),
                         str(tls_dir / "client.key"))
    return {"plain": BenchCluster(base / "plain", tuning, "plain"),
            "tls": BenchCluster(tls_dir, tuning, "tls", tls, ctx)}


async def wait_leader(cl: BenchCluster, timeout: float) -> list[dict]:
    """Every node's status once all three answer and one leads; BenchFailed (with the
    clients' last errors) otherwise."""
    from fastraft.client import AsyncClient

    seen: dict[str, str] = {}
    async with AsyncClient(cl.endpoints(), timeout=2.0, tls=cl.ctx) as c:
        async def ready():
            sts = await c.status()
            seen.update({s["endpoint"]: s["error"] for s in sts if "error" in s})
            ok = [s for s in sts if s["reachable"]]
            return sts if len(ok) == len(sts) and any(
                s["role"] == "leader" for s in ok) else None
        try:
            return await cl.wait(ready, timeout, f"the {SIDE_NAMES[cl.side]} cluster to "
                                 "answer on every node with a leader")
        except BenchFailed as exc:
            errs = "; ".join(f"{a}: {e}" for a, e in seen.items()) or "none"
            raise BenchFailed(f"{exc}\nlast client errors: {errs}") from None


async def tls_session(addr: str, ctx) -> dict:
    """The TLS version and cipher a client negotiates with ``addr`` (one handshake)."""
    host, port = addr.rsplit(":", 1)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=host), 10.0)
    try:
        so = writer.get_extra_info("ssl_object")
        return {"version": so.version(), "cipher": so.cipher()[0],
                "client_certificate": True}
    finally:
        writer.close()


# -- CPU accounting (Linux /proc) -----------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (None when /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class CpuSampler:
    """Every SAMPLE_S: (time, CPU s of each cluster's nodes, CPU s of this process).
    ``window(t0, t1)`` interpolates the CPU used between two instants."""

    def __init__(self, clusters: dict[str, BenchCluster]) -> None:
        self.clusters = clusters
        self.samples: list[tuple] = []
        self.task = None
        self.ok = all(proc_cpu_s(p) is not None for cl in clusters.values()
                      for p in cl.pids())

    def sample(self) -> None:
        nodes = {}
        for side, cl in self.clusters.items():
            vals = [proc_cpu_s(p) for p in cl.pids()]
            nodes[side] = None if None in vals else sum(vals)
        self.samples.append((pc(), nodes, time.process_time()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    def start(self) -> None:
        self.samples = []
        if self.ok:
            self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.sample()
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def _at(self, t: float, get) -> float | None:
        s = self.samples
        if not s or get(s[0]) is None or get(s[-1]) is None:
            return None
        if t <= s[0][0]:
            return get(s[0])
        for a, b in zip(s, s[1:]):
            if a[0] <= t <= b[0]:
                va, vb = get(a), get(b)
                if va is None or vb is None:
                    return None
                return va + (vb - va) * (t - a[0]) / ((b[0] - a[0]) or 1.0)
        return get(s[-1])

    def window(self, t0: float, t1: float) -> dict:
        """CPU seconds between ``t0`` and ``t1``: each cluster's nodes, and ``client``."""
        out = {}
        gets = {side: (lambda x, side=side: x[1][side]) for side in self.clusters}
        gets["client"] = lambda x: x[2]
        for name, get in gets.items():
            a, b = self._at(t0, get), self._at(t1, get)
            out[name] = None if a is None or b is None else round(b - a, 3)
        return out


# -- measurements ---------------------------------------------------------------------------


async def measure(clusters, side: str, wl: tuple, args, sampler: CpuSampler,
                  r: int) -> dict:
    """One run of workload ``wl`` on cluster ``side``; BenchFailed when it fails."""
    key, label, kw = wl
    cl = clusters[side]
    other = clusters["tls" if side == "plain" else "plain"]
    sampler.start()
    try:
        s = await bench(cl.endpoints(), duration=args.duration, tls=cl.ctx, **kw)
    except FastraftError as exc:
        raise BenchFailed(f"round {r}, {label}, {SIDE_NAMES[side]} cluster: the bench "
                          f"failed: {type(exc).__name__}: {exc}\n{cl.report()}") from None
    finally:
        t1 = pc()
        await sampler.stop()
    cl.check_alive(f"during round {r}, {label}")
    other.check_alive(f"while idle (round {r}, {label})")
    if not s["ops"]:
        raise BenchFailed(f"round {r}, {label}, {SIDE_NAMES[side]} cluster: no operation "
                          f"completed; errors {s['errors']}\n{cl.report()}")
    cpu = sampler.window(t1 - s["duration_s"], t1)
    rec = {"round": r, "workload": key, "side": side, "ops": s["ops"],
           "duration_s": s["duration_s"], "throughput_ops_s": s["throughput_ops_s"],
           "latency_ms": s["latency_ms"], "errors": s["errors"],
           "leader_start": s["leader_start"], "leader_end": s["leader_end"],
           "nodes_cpu_s": cpu.get(side), "client_cpu_s": cpu.get("client"),
           "idle_cluster_cpu_s": cpu.get(other.side),
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    lat = s["latency_ms"]
    progress(f"round {r} {label:<34} {SIDE_NAMES[side]:>9}: {s['throughput_ops_s']:>9,.0f} "
             f"ops/s  p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  errors "
             f"{sum(s['errors'].values())}")
    return rec


async def start_clusters(clusters, args) -> dict:
    """Start both clusters, wait for their leaders, warm each up; the facts for ``meta``."""
    for cl in clusters.values():
        cl.start()
    meta = {}
    for side, cl in clusters.items():
        sts = await wait_leader(cl, args.wait_timeout)
        meta[f"{side}_nodes"] = sorted({(s["core"], s["loop"]) for s in sts})
        progress(f"{SIDE_NAMES[side]} cluster up: leader node "
                 f"{next(s['id'] for s in sts if s['role'] == 'leader')}, clients at "
                 f"{','.join(cl.endpoints())}")
    meta["tls_session"] = await tls_session(clusters["tls"].endpoints()[0],
                                            clusters["tls"].ctx)
    if args.warmup > 0:
        for side, cl in clusters.items():
            try:
                await bench(cl.endpoints(), concurrency=64, duration=args.warmup, tls=cl.ctx)
            except FastraftError as exc:
                raise BenchFailed(f"warm-up of the {SIDE_NAMES[side]} cluster failed: "
                                  f"{type(exc).__name__}: {exc}\n{cl.report()}") from None
    return meta


async def run(args, base: Path, loop_name: str) -> dict:
    res: dict = {"meta": {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None, "core": IMPLEMENTATION, "bench_loop": loop_name,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "duration_s": args.duration, "rounds": args.rounds, "warmup_s": args.warmup,
        "argv": sys.argv[1:]}, "measurements": []}
    t0 = pc()
    clusters = make_clusters(base, Tuning())
    try:
        res["meta"].update(await start_clusters(clusters, args))
        sampler = CpuSampler(clusters)
        for r in range(1, args.rounds + 1):
            order = SIDES if r % 2 else SIDES[::-1]
            for wl in WORKLOADS:
                for side in order:
                    res["measurements"].append(
                        await measure(clusters, side, wl, args, sampler, r))
        res["flood"] = await flood_phase(clusters["tls"], args) if args.flood else None
    finally:
        for cl in clusters.values():
            cl.close()
    res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["meta"]["total_s"] = round(pc() - t0, 1)
    res["summary"] = summarize(res["measurements"])
    return res


# -- the handshake flood -------------------------------------------------------------------

#: The flooding process: ``threads`` threads doing full TLS handshakes with the two addresses
#: for ``seconds``, plus ``idle`` connections that never speak; prints its counts as JSON.
FLOOD_PY = r"""
import json, socket, ssl, sys, threading, time
client, peer, cacert, cert, key = sys.argv[1:6]
seconds, threads, idle = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
good = ssl.create_default_context(cafile=cacert)
good.load_cert_chain(cert, key)
bare = ssl.create_default_context(cafile=cacert)
done, failed = [0] * threads, [0] * threads
held = []
for _ in range(idle):
    host, port = client.rsplit(":", 1)
    held.append(socket.create_connection((host, int(port)), 5))
end = time.monotonic() + seconds
def flood(k):
    addr, ctx = ((client, good), (client, bare), (peer, good))[k % 3]
    host, port = addr.rsplit(":", 1)
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, int(port)), 5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):
                    done[k] += 1
        except OSError:
            failed[k] += 1
ts = [threading.Thread(target=flood, args=(k,)) for k in range(threads)]
t0 = time.monotonic()
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({"handshakes": sum(done) + sum(failed), "seconds": time.monotonic() - t0,
                  "idle": len(held)}))
"""


async def leader_term(cl: BenchCluster, timeout: float) -> tuple[int, int]:
    sts = await wait_leader(cl, timeout)
    lead = next(s for s in sts if s["role"] == "leader")
    return lead["id"], lead["term"]


async def flood_phase(cl: BenchCluster, args) -> dict:
    """Writes at 64 in flight without, with, and again without a handshake flood on the
    TLS cluster's leader (module docstring); BenchFailed when a measurement fails."""
    lead0, term0 = await leader_term(cl, args.wait_timeout)
    node = cl.nodes[lead0]
    d = Path(cl.config_path).parent
    runs = {}
    for name in ("before", "flood", "after"):
        proc = None
        if name == "flood":
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOOD_PY, node.client, node.raft,
                str(d / "peer-ca.pem"), str(d / "client.pem"), str(d / "client.key"),
                str(args.duration + 1.0), str(args.flood), "200",
                stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(0.5)                  # let the flood get going
        try:
            s = await bench(cl.endpoints(), concurrency=64, duration=args.duration,
                            tls=cl.ctx)
        except FastraftError as exc:
            raise BenchFailed(f"flood phase ({name}): the bench failed: "
                              f"{type(exc).__name__}: {exc}\n{cl.report()}") from None
        finally:
            if proc is not None:
                out, _ = await proc.communicate()
        if proc is not None:
            try:
                runs["flooder"] = json.loads(out)
            except ValueError:
                raise BenchFailed(f"the flooding process failed (exit {proc.returncode})") \
                    from None
        runs[name] = {"throughput_ops_s": s["throughput_ops_s"], "latency_ms": s["latency_ms"],
                      "errors": s["errors"]}
        progress(f"flood phase {name:<7}: {s['throughput_ops_s']:>9,.0f} ops/s  p99 "
                 f"{s['latency_ms']['p99']:.2f} ms")
        cl.check_alive(f"during the flood phase ({name})")
    lead1, term1 = await leader_term(cl, args.wait_timeout)
    f = runs["flooder"]
    base = statistics.mean([runs["before"]["throughput_ops_s"],
                            runs["after"]["throughput_ops_s"]])
    return {"threads": args.flood, "idle_connections": f["idle"],
            "handshakes_per_s": f["handshakes"] / f["seconds"], **runs,
            "throughput_ratio": _ratio(runs["flood"]["throughput_ops_s"], base),
            "leader_kept": (lead0, term0) == (lead1, term1),
            "leader_term": [[lead0, term0], [lead1, term1]]}


def render_flood(f: dict | None) -> list[str]:
    if f is None:
        return []
    rows = [[name, _n(f[name]["throughput_ops_s"]), _n(f[name]["latency_ms"]["p50"], "{:.2f}"),
             _n(f[name]["latency_ms"]["p99"], "{:.2f}"), _n(sum(f[name]["errors"].values()))]
            for name in ("before", "flood", "after")]
    (l0, t0), (l1, t1) = f["leader_term"]
    return ["", f"### Handshake flood on the TLS leader ({f['threads']} threads of full "
            f"handshakes, {f['handshakes_per_s']:,.0f} per second, plus "
            f"{f['idle_connections']} silent connections); writes, 64 in flight", "",
            table(["", "ops/s", "p50 ms", "p99 ms", "errors"], rows), "",
            f"Throughput during the flood: {f['throughput_ratio']:.2f} of the mean without. "
            f"Leader and term: node {l0} term {t0} before, node {l1} term {t1} after ("
            + ("kept" if f["leader_kept"] else "LOST") + ")."]


# -- summary and output ---------------------------------------------------------------------


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def summarize(ms: list[dict]) -> dict:
    """Per workload: medians per side; TLS / plain ratios: per round (the two runs of a
    round were back to back), their median (the headline figure: a round in which the
    whole machine was slower weighs on both sides of its ratio, not on one median), and
    the ratio of the medians; CPU per operation; and how much CPU the idle cluster took."""
    out: dict = {"workloads": {}}
    for key, label, _ in WORKLOADS:
        by = {side: [m for m in ms if m["workload"] == key and m["side"] == side]
              for side in SIDES}
        w: dict = {"label": label}
        for side, rows in by.items():
            w[side] = {
                "throughput_ops_s": _med([m["throughput_ops_s"] for m in rows]),
                "p50_ms": _med([m["latency_ms"]["p50"] for m in rows]),
                "p99_ms": _med([m["latency_ms"]["p99"] for m in rows]),
                "nodes_cpu_us_per_op": _med([m["nodes_cpu_s"] / m["ops"] * 1e6 for m in rows
                                             if m["nodes_cpu_s"] is not None]),
                "client_cpu_us_per_op": _med([m["client_cpu_s"] / m["ops"] * 1e6
                                              for m in rows if m["client_cpu_s"] is not None]),
                "errors": sum(sum(m["errors"].values()) for m in rows),
                "leader_changes": sum(m["leader_start"] != m["leader_end"] for m in rows)}
        pairs = list(zip(by["plain"], by["tls"]))      # the two runs of one round
        for name, get in (("throughput", lambda m: m["throughput_ops_s"]),
                          ("p50", lambda m: m["latency_ms"]["p50"]),
                          ("p99", lambda m: m["latency_ms"]["p99"])):
            rs = [_ratio(get(b), get(a)) for a, b in pairs]
            w[f"round_{name}_ratios"] = rs
            w[f"{name}_ratio"] = _med(rs)
            col = "throughput_ops_s" if name == "throughput" else f"{name}_ms"
            w[f"{name}_ratio_of_medians"] = _ratio(w["tls"][col], w["plain"][col])
        out["workloads"][key] = w
    idle = [m["idle_cluster_cpu_s"] / m["duration_s"] for m in ms
            if m["idle_cluster_cpu_s"] is not None and m["duration_s"]]
    out["idle_cluster_core_share"] = ({"median": round(statistics.median(idle), 4),
                                       "max": round(max(idle), 4)} if idle else None)
    out["target"] = {k: (w["throughput_ratio"] >= TARGET
                         if w["throughput_ratio"] is not None else None)
                     for k, w in out["workloads"].items() if k != "single"}
    return out


def _n(x, fmt="{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _pairs(xs) -> str:
    return ", ".join("/".join(map(str, x)) for x in xs)


def render(res: dict) -> str:
    m, s = res["meta"], res["summary"]
    ws = s["workloads"]
    tl = m["tls_session"]
    out = [f"Python {m['python']}, {m['cpus']} CPUs ({m['cpus_usable']} usable), core "
           f"{m['core']}, bench loop {m['bench_loop']}, nodes (core/loop) "
           f"{_pairs(m['plain_nodes'])} plaintext, {_pairs(m['tls_nodes'])} TLS; TLS cluster: {tl['version']} "
           f"{tl['cipher']}, peers and clients with certificates (mutual TLS on both ports); "
           f"load average {m['loadavg_start'][0]} at the start, {m['loadavg_end'][0]} at the "
           f"end; {m['rounds']} round(s) of {m['duration_s']:g} s per measurement, "
           f"{m['total_s']} s in all.", "",
           "### Throughput, TLS versus plaintext (ops/s: medians over the rounds; TLS / plain: "
           "median of the per-round ratios)", ""]
    rows = [[w["label"], _n(w["plain"]["throughput_ops_s"]), _n(w["tls"]["throughput_ops_s"]),
             f"**{_n(w['throughput_ratio'], '{:.2f}')}**",
             ", ".join(_n(x, "{:.2f}") for x in w["round_throughput_ratios"])]
            for w in (ws[k] for k, _, _ in THROUGHPUT)]
    out += [table(["workload", "plaintext ops/s", "TLS ops/s", "TLS / plain", "per round"],
                  rows), ""]
    one = ws["single"]
    rows = [[f"p{q}", _n(one["plain"][f"p{q}_ms"], "{:.3f}"),
             _n(one["tls"][f"p{q}_ms"], "{:.3f}"),
             f"**{_n(one[f'p{q}_ratio'], '{:.2f}')}**" if q == 50 else
             _n(one[f"p{q}_ratio"], "{:.2f}"),
             ", ".join(_n(x, "{:.2f}") for x in one[f"round_p{q}_ratios"])]
            for q in (50, 99)]
    rows.append(["ops/s", _n(one["plain"]["throughput_ops_s"]),
                 _n(one["tls"]["throughput_ops_s"]), _n(one["throughput_ratio"], "{:.2f}"),
                 ", ".join(_n(x, "{:.2f}") for x in one["round_throughput_ratios"])])
    out += ["### Single-write latency (1 in flight), ms", "",
            table(["", "plaintext", "TLS", "TLS / plain", "per round"], rows), ""]
    out += render_cpu(ws, s) + render_notes(ws, s) + render_flood(res.get("flood"))
    return "\n".join(out)


def render_cpu(ws: dict, s: dict) -> list[str]:
    if all(w["plain"]["nodes_cpu_us_per_op"] is None for w in ws.values()):
        return ["(no CPU figures: /proc is not available)", ""]
    rows = [[w["label"]] + [_n(w[side][f"{who}_cpu_us_per_op"], "{:,.1f}")
                            for who in ("nodes", "client") for side in SIDES]
            for w in ws.values()]
    idle = s["idle_cluster_core_share"]
    return ["### CPU per operation, microseconds (medians; nodes: the three nodes together)",
            "", table(["workload", "nodes, plaintext", "nodes, TLS", "client, plaintext",
                       "client, TLS"], rows), "",
            f"Idle cluster (the other one, left running): {idle['median'] * 100:.1f} % of one "
            f"core during a measurement (median; max {idle['max'] * 100:.1f} %).", ""]


def render_notes(ws: dict, s: dict) -> list[str]:
    met = [f"{ws[k]['label']} {ws[k]['throughput_ratio']:.2f}"
           for k, ok in s["target"].items() if ok]
    missed = [f"{ws[k]['label']} {ws[k]['throughput_ratio']:.2f}"
              for k, ok in s["target"].items() if ok is False]
    out = [f"Aim (TLS keeps at least {TARGET:.0%} of plaintext throughput): "
           + ("met for every workload" if not missed else "NOT met for " + "; ".join(missed))
           + (f" (met: {'; '.join(met)})" if missed and met else "") + "."]
    for w in ws.values():
        for side in SIDES:
            x = w[side]
            if x["errors"] or x["leader_changes"]:
                out.append(f"- {w['label']}, {SIDE_NAMES[side]}: {x['errors']} errors, "
                           f"{x['leader_changes']} run(s) with a leader change")
    return out


# -- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=None, metavar="S",
                    help="seconds per measurement (default 5; 1 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, metavar="N",
                    help="rounds of alternated measurements; figures are medians (default 3; "
                         "1 with --quick)")
    ap.add_argument("--warmup", type=float, default=None, metavar="S",
                    help="seconds of writes on each cluster before round 1, not counted "
                         "(default 2; 0.5 with --quick; 0: none)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: --duration 1 --rounds 1 --warmup 0.5 (under a minute)")
    ap.add_argument("--flood", type=int, default=4, metavar="THREADS",
                    help="threads of the handshake flood on the TLS leader (default 4; 0: "
                         "no flood phase)")
    ap.add_argument("--wait-timeout", type=float, default=60.0, metavar="S",
                    help="seconds a cluster may take to answer with a leader (60)")
    add_run_options(ap, "the clusters live", "the data, PKI and logs")
    args = ap.parse_args(argv)
    q = args.quick
    args.duration = args.duration if args.duration is not None else 1.0 if q else 5.0
    args.rounds = args.rounds if args.rounds is not None else 1 if q else 3
    args.warmup = args.warmup if args.warmup is not None else 0.5 if q else 2.0
    if args.duration <= 0 or args.rounds < 1 or args.warmup < 0:
        ap.error("--duration must be > 0, --rounds >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    return run_script("tls_bench", parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
