"""The cost curve: what a write costs against requests in flight, value size, key count and
cluster size, on real node processes, in one run (issue 16).

Place in the architecture: a benchmark script (bench/), outside the package. It starts
clusters of real ``fastraft node`` processes on free ports of 127.0.0.1 with the cluster
helper of ``membership_bench.py`` (``python -P -m fastraft node --id N --config F --data-dir
D``, each node's output in its own log file; a stopped node restarted with the same command,
a wiped one with ``--rejoin``), loads them with the function behind ``fastraft bench``
(``fastraft.client.bench.bench``) or, where keys must be written in order or a stop depends
on the cluster, a small loader of its own over ``fastraft.client.AsyncClient``, and reads each
node's status with ``membership_bench``'s OP_STATUS probe and its memory from /proc. It
imports nothing of the server.

Keys are 16 bytes (``bench/`` + 10 digits, as ``fastraft bench``), values 100 bytes unless
said otherwise; the default tuning (fsync on; a snapshot every 100,000 applied entries,
keeping 10,000). Every part runs on fresh clusters of its own:

1. ``inflight``: one 3-node cluster; writes to 10,000 keys at 1, 2, 4, ... 1,024 requests in
   flight (``--inflight``), ``--duration`` s each on one AsyncClient: writes/s, p50/p99/p99.9,
   and the CPU time the nodes and this process (the client) spent per write.
2. ``size``: first the disk's own sequential write speed (``--disk-mib`` MiB written with
   ``os.write`` in 1 MiB blocks then one ``os.fsync``, timed to the end of the fsync, in the
   run's directory); then one 3-node cluster, writes of 100 B, 1 KiB, 16 KiB and 256 KiB
   values (``--sizes``) at ``--size-inflight`` (64) in flight: writes/s, MB/s of value bytes,
   and that against the disk (every node appends every value to its own WAL on the same disk,
   so the disk takes three times the figure: both ratios are shown). Large values use fewer
   keys (at most 64 MiB of distinct values per node).
3. ``keys``: for each key count N (``--keys``, default 100 k, 1 M, 10 M) a fresh 3-node
   cluster: (a) each node's VmRSS (/proc/PID/status) once elected and warmed (a few hundred
   writes to one key): "empty"; (b) fill: N distinct keys in ascending order, ``--fill-inflight``
   (512) puts in flight (there is no batch API): time and rate; (c) write throughput at N keys:
   random overwrites among the N keys at ``--size-inflight`` in flight for ``--duration`` s;
   (d) snapshot: sequential overwrites go on until every node has logged a snapshot at or
   after the leader's commit index after the fill (so it holds all N keys): its time (the
   node's log line ``snapshot at I written in S s``) and file size, and each data directory's
   size; (e) memory: VmRSS again (after the fill, and after the snapshot once the log is
   released): ``(RSS - empty RSS) / N`` bytes per key per node, minus the 116 bytes of key and
   value for the overhead (the issue's target: under 300 B at 10 M keys); the peak (VmHWM);
   the largest private memory (smaps_rollup) seen in a snapshot's forked child, sampled
   every 0.25 s; (f) restart: SIGTERM a follower (a clean stop: timed), start it again: the
   time until it answers status and until its applied index reaches the leader's commit (no
   load meanwhile), and its RSS per key then; (g) wiped follower: SIGKILL the other follower,
   delete its data directory, start it with ``--rejoin``: the time until applied reaches the
   leader's commit (it gets the leader's snapshot, then the log after it).
4. ``nodes``: a 3-, 5- and 7-node cluster (``--nodes``), writes at 1 and 64 in flight
   (``--nodes-inflight``), ``--duration`` s each: writes/s, p50/p99.

All of it shares the machine: the nodes, the client and the snapshots' children compete for
the same cores and the same disk, which is what the figures are about.

    python bench/cost_curve.py --quick                # smoke run: about 1 minute
    python bench/cost_curve.py --keys 100000,1000000  # every part up to 1 M keys: ~3.5 min
    python bench/cost_curve.py                        # with 10 M keys: see below
    python bench/cost_curve.py --parts keys --keys 10M --out results/

10 M keys (estimated from 1 M on 2 cores): about 15-20 minutes for that key count, about
16 GB of RAM at the peak (three nodes of ~2.7 GB, each with a snapshot child that copies
~2.4 GB of pages), about 8 GB of disk. Each key count's data directories are deleted once it
is measured (unless ``--keep``), its logs stay with the run's directory.

The Markdown tables go to stdout and to ``OUT/cost_curve.md`` (``--out``, default the
current directory), every figure to ``OUT/cost_curve.json`` (rewritten after each part, so a
failed run keeps what it measured), the charts to ``OUT/inflight.png``, ``value_size.png``,
``keys.png`` and ``nodes.png`` with matplotlib (``cost_curve_charts.py``, beside it; the
optional ``plot`` extra: without it the tables are written and the charts skipped, saying
so). Progress goes to stderr. Exit status:
0 when every part ran; 1 when the cluster misbehaves (a wait times out, a node exits
unexpectedly, no write succeeds for a minute: the message says what, with the tail of every
node's log, and the run's directory is kept); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from cost_curve_charts import charts  # noqa: E402
from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)
from tls_bench import proc_cpu_s  # noqa: E402

from fastraft import processes  # noqa: E402
from fastraft.client import AsyncClient  # noqa: E402
from fastraft.client.bench import Histogram, bench  # noqa: E402
from fastraft.config import Tuning  # noqa: E402
from fastraft.core import IMPLEMENTATION  # noqa: E402
from fastraft.errors import FastraftError  # noqa: E402

pc = time.perf_counter
PARTS = ("inflight", "size", "keys", "nodes")
KEY = b"bench/%010d"            # 16 bytes, as fastraft bench's keys
KEY_VALUE_BYTES = 16 + 100      # what a key of the keys part holds (key + value)
TARGET_OVERHEAD = 300           # the target, bytes per key beyond KEY_VALUE_BYTES
MAX_VALUE_BYTES_PER_NODE = 64 << 20   # distinct value bytes of the size part (keys fewer)
STALL_S = 60.0                  # the loader fails when no write succeeded for this long
ERROR_PAUSE_S = 0.01            # a worker's pause after a failed put
SAMPLE_S = 0.25                 # memory sampling interval of the keys part
SNAP_WRITTEN = re.compile(r"snapshot at (\d+) written in ([\d.]+) s")
SNAP_INSTALLED = re.compile(r"installed snapshot (\d+)@\d+ from the leader in ([\d.]+) s"
                            r"(?: \(its state was built off the loop, in ([\d.]+) s\))?")
DEFAULTS = {"inflight": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
            "sizes": [100, 1024, 16384, 262144], "keys": [100_000, 1_000_000, 10_000_000],
            "nodes": [3, 5, 7], "nodes_inflight": [1, 64], "duration": 5.0, "disk_mib": 256}
QUICK = {"inflight": [1, 16, 64], "sizes": [100, 16384], "keys": [10_000, 50_000],
         "nodes": [3, 5], "nodes_inflight": [1, 64], "duration": 2.0, "disk_mib": 64}


# -- /proc and files ------------------------------------------------------------------------


def proc_status_kb(pid: int, *fields: str) -> dict[str, int]:
    """The ``fields`` (e.g. VmRSS, VmHWM) of /proc/PID/status in kB (missing: absent)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in fields:
                    out[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def children_private_kb(pid: int) -> int:
    """Private memory (clean + dirty, kB) of the children of ``pid`` (a snapshot's forked
    child: the pages it copied), 0 when it has none or /proc cannot tell."""
    total = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return 0
    for kid in kids:
        try:
            with open(f"/proc/{kid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def newest_snapshot(path: Path) -> Path | None:
    """The newest ``snap-<term>-<index>.snap`` under ``path`` (the names sort in order)."""
    snaps = sorted(path.rglob("snap-*.snap"), key=lambda p: p.name)
    return snaps[-1] if snaps else None


def disk_write_mb_s(directory: Path, mib: int) -> dict:
    """The disk's sequential write speed: ``mib`` MiB of 1 MiB ``os.write`` calls, then one
    ``os.fsync``, timed to its end (MB = 10^6 bytes)."""
    path = directory / "disk-speed.tmp"
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = pc()
        for _ in range(mib):
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
        t1 = pc()
        os.fsync(fd)
        t2 = pc()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"mib": mib, "seconds": round(t2 - t0, 3), "fsync_s": round(t2 - t1, 3),
            "mb_s": round(mib * (1 << 20) / (t2 - t0) / 1e6, 1)}


def mb(nbytes: float) -> float:
    return round(nbytes / 1e6, 1)


# -- the cluster ----------------------------------------------------------------------------


class CostCluster(Cluster):
    """membership_bench's cluster, plus: stop, kill, wipe and restart a node, its memory and
    CPU from /proc, its data directory. ``empty``: each node's VmRSS (kB) before the keys
    part's fill."""

    def __init__(self, base: Path, size: int, tuning: Tuning) -> None:
        super().__init__(base, size, tuning)
        self.empty: dict[int, int] = {}

    def node_dir(self, nid: int) -> Path:
        return Path(self.config.data_dir) / str(nid)

    def pid(self, nid: int) -> int:
        return self.nodes[nid].proc.pid

    def memory_kb(self, nid: int) -> dict[str, int]:
        return proc_status_kb(self.pid(nid), "VmRSS", "VmHWM")

    def cpu_s(self) -> float | None:
        vals = [proc_cpu_s(n.proc.pid) for n in self.nodes.values() if n.running]
        return None if not vals or None in vals else sum(vals)

    def check_alive(self, what: str) -> None:
        dead = [i for i, n in self.nodes.items() if i not in self.removed and not n.running]
        if dead:
            raise BenchFailed(f"while {what}: node(s) {dead} exited unexpectedly\n"
                              + self.report())

    async def stop_node(self, nid: int, grace: float = 60.0) -> tuple[float, int]:
        """SIGTERM node ``nid`` (a clean stop) and wait for its exit: (seconds, exit code)."""
        n = self.nodes[nid]
        self.removed.add(nid)
        t0 = pc()
        await asyncio.to_thread(processes.stop, [n.proc], grace)
        return pc() - t0, n.proc.wait()

    def kill_node(self, nid: int) -> None:
        self.removed.add(nid)
        processes.kill(self.nodes[nid].proc)

    def start_node(self, nid: int, *extra: str) -> None:
        """Start node ``nid`` again on its data directory (it must have exited)."""
        n = self.nodes[nid]
        self._spawn(n, processes.node_argv(nid, self.config_path, self.config.data_dir,
                                           *extra))
        self.removed.discard(nid)

    async def commit_of(self, nid: int) -> int:
        st = await self.status(nid)
        if st is None:
            raise BenchFailed(f"node {nid} did not answer status\n{self.report()}")
        return st["commit"]

    async def wait_applied(self, ids, target: int, timeout: float, what: str) -> None:
        async def done():
            sts = await asyncio.gather(*(self.status(i) for i in ids))
            return all(s is not None and s["applied"] >= target for s in sts)
        await self.wait(done, timeout, f"{what}: applied >= {target:,} on node(s) {list(ids)}")


# -- the loader (the keys part) -------------------------------------------------------------


class Writer:
    """``concurrency`` workers on one AsyncClient putting ``value`` under ``key_at(i)`` for
    i = 0, 1, 2, ... (each worker takes the next i; a failed put is retried on the same key
    after ERROR_PAUSE_S). ``run`` goes until ``count`` keys are written, ``duration`` s have
    passed or ``until()`` (plain or async, asked once a second) is true."""

    def __init__(self, cl: CostCluster, label: str, key_at, value: bytes,
                 concurrency: int) -> None:
        self.cl, self.label, self.key_at, self.value = cl, label, key_at, value
        self.concurrency = concurrency
        self.next = 0
        self.stop = False
        self.hist = Histogram()
        self.window: list[float] = []
        self.errors: dict[str, int] = {}
        self.first_error: dict[str, str] = {}

    async def worker(self, client: AsyncClient, count: int | None) -> None:
        put, value, append = client.put, self.value, self.window.append
        while not self.stop:
            i = self.next
            if count is not None and i >= count:
                return
            self.next = i + 1
            key = self.key_at(i)
            while not self.stop:
                t0 = pc()
                try:
                    await put(key, value)
                except FastraftError as exc:
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                    self.first_error.setdefault(name, str(exc)[:300])
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                append(pc() - t0)
                break

    async def run(self, count: int | None = None, duration: float | None = None,
                  until=None) -> dict:
        client = AsyncClient(self.cl.endpoints(), timeout=10.0)
        cpu0, self_cpu0 = self.cl.cpu_s(), time.process_time()
        tasks = [asyncio.ensure_future(self.worker(client, count))
                 for _ in range(self.concurrency)]
        t0 = pc()
        try:
            await self._watch(tasks, t0, duration, until)
            self.stop = True
            await asyncio.gather(*tasks)       # the puts in flight end (and count)
            elapsed = pc() - t0
        finally:
            self.stop = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
        self.hist.add_many(self.window)
        cpu1, self_cpu1 = self.cl.cpu_s(), time.process_time()
        h = self.hist
        return {"writes": h.n, "seconds": round(elapsed, 2),
                "writes_per_s": round(h.n / elapsed, 1) if elapsed > 0 else 0.0,
                "p50_ms": round(h.percentile(50) * 1e3, 2),
                "p99_ms": round(h.percentile(99) * 1e3, 2), "max_ms": round(h.max * 1e3, 1),
                "errors": dict(self.errors), "first_error": dict(self.first_error),
                "nodes_cpu_us_per_write": per_write(cpu0, cpu1, h.n),
                "client_cpu_us_per_write": per_write(self_cpu0, self_cpu1, h.n)}

    async def _watch(self, tasks, t0: float, duration, until) -> None:
        """Tick once a second until the workers are done, ``duration`` or ``until()``:
        progress every 5 s; BenchFailed when a node died or nothing succeeded for STALL_S."""
        last_ok, seen, last_n, last_print = t0, 0, 0, t0
        while not all(t.done() for t in tasks):
            left = 1.0 if duration is None else min(1.0, t0 + duration - pc())
            await asyncio.wait(tasks, timeout=max(left, 0.0))
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
            batch = self.window[:]          # the workers hold the list's append: no new list
            del self.window[:]
            self.hist.add_many(batch)
            now = pc()
            self.cl.check_alive(self.label)
            if self.hist.n > seen:
                last_ok, seen = now, self.hist.n
            elif now - last_ok > STALL_S:
                raise BenchFailed(f"{self.label}: no write succeeded for {STALL_S:g} s; "
                                  f"errors {self.errors} {self.first_error}\n"
                                  + self.cl.report())
            if now - last_print >= 5.0:
                progress(f"  [{self.label}] {self.hist.n:,} writes, "
                         f"{(self.hist.n - last_n) / (now - last_print):,.0f}/s, "
                         f"errors {sum(self.errors.values())}")
                last_n, last_print = self.hist.n, now
            if duration is not None and now - t0 >= duration:
                return
            if until is not None:
                v = until()
                if asyncio.iscoroutine(v):
                    v = await v
                if v:
                    return


def per_write(a, b, n: int) -> float | None:
    return None if a is None or b is None or not n else round((b - a) / n * 1e6, 1)


class MemorySampler:
    """Every SAMPLE_S: the largest private memory of any node's children (a snapshot's
    forked child) and the largest sum of the nodes' RSS plus their children's."""

    def __init__(self, cl: CostCluster) -> None:
        self.cl = cl
        self.child_kb = 0
        self.total_kb = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            total = 0
            for nid, n in self.cl.nodes.items():
                if n.running:
                    kids = children_private_kb(n.proc.pid)
                    self.child_kb = max(self.child_kb, kids)
                    total += self.cl.memory_kb(nid).get("VmRSS", 0) + kids
            self.total_kb = max(self.total_kb, total)
            await asyncio.sleep(SAMPLE_S)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# -- parts: in flight, value size, cluster size ---------------------------------------------


async def started(base: Path, size: int, tuning: Tuning, timeout: float) -> CostCluster:
    cl = CostCluster(base, size, tuning)
    try:
        cl.start()
        await cl.leader(timeout)
    except BaseException:
        cl.close()
        raise
    return cl


async def measure(cl: CostCluster, label: str, **kw) -> dict:
    """One ``fastraft bench`` run (writes only) on ``cl``: its figures, the CPU per write."""
    cpu0, self_cpu0 = cl.cpu_s(), time.process_time()
    try:
        s = await bench(cl.endpoints(), **kw)
    except FastraftError as exc:
        raise BenchFailed(f"{label}: {type(exc).__name__}: {exc}\n{cl.report()}") from None
    cpu1, self_cpu1 = cl.cpu_s(), time.process_time()
    cl.check_alive(label)
    lat = s["latency_ms"]
    row = {"writes": s["ops"], "writes_per_s": s["throughput_ops_s"], "p50_ms": lat["p50"],
           "p99_ms": lat["p99"], "p999_ms": lat["p99.9"], "max_ms": lat["max"],
           "errors": s["errors"], "nodes_cpu_us_per_write": per_write(cpu0, cpu1, s["ops"]),
           "client_cpu_us_per_write": per_write(self_cpu0, self_cpu1, s["ops"])}
    progress(f"  {label}: {row['writes_per_s']:,.0f} writes/s, p50 {row['p50_ms']} ms, "
             f"p99 {row['p99_ms']} ms, errors {sum(s['errors'].values())}")
    return row


async def part_inflight(args, base: Path) -> dict:
    cl = await started(base / "inflight", 3, Tuning(), args.wait_timeout)
    rows = []
    try:
        await measure(cl, "warm-up", concurrency=64, duration=1.0)
        for c in args.inflight:
            rows.append({"inflight": c, **await measure(
                cl, f"{c} in flight", concurrency=c, duration=args.duration,
                value_size=100, key_count=10_000)})
    finally:
        cl.close()
    return {"value_size": 100, "key_count": 10_000, "rows": rows}


def size_keys(value_size: int) -> int:
    """Distinct keys for ``value_size``-byte values: 10,000, fewer for large values."""
    return max(16, min(10_000, MAX_VALUE_BYTES_PER_NODE // max(1, value_size)))


async def part_size(args, base: Path) -> dict:
    (base / "size").mkdir(parents=True, exist_ok=True)
    progress(f"  disk: writing {args.disk_mib} MiB sequentially, then fsync")
    disk = disk_write_mb_s(base / "size", args.disk_mib)
    progress(f"  disk: {disk['mb_s']} MB/s ({disk})")
    cl = await started(base / "size" / "cluster", 3, Tuning(), args.wait_timeout)
    rows = []
    try:
        await measure(cl, "warm-up", concurrency=64, duration=1.0)
        for size in args.sizes:
            r = await measure(cl, f"{size}-byte values", concurrency=args.size_inflight,
                              duration=args.duration, value_size=size,
                              key_count=size_keys(size))
            mbs = r["writes_per_s"] * size / 1e6
            rss = [cl.memory_kb(i).get("VmRSS", 0) for i in sorted(cl.nodes)]
            rows.append({"value_size": size, "keys": size_keys(size), **r,
                         "values_mb_s": round(mbs, 2),
                         "of_disk": round(mbs / disk["mb_s"], 4),
                         "three_wals_of_disk": round(3 * mbs / disk["mb_s"], 4),
                         "max_node_rss_mb": mb(max(rss) * 1024)})
    finally:
        cl.close()
    return {"disk": disk, "inflight": args.size_inflight, "rows": rows}


async def part_nodes(args, base: Path) -> dict:
    rows = []
    for size in args.nodes:
        progress(f"  {size} nodes")
        cl = await started(base / f"nodes-{size}", size, Tuning(), args.wait_timeout)
        try:
            await measure(cl, "warm-up", concurrency=64, duration=1.0)
            for c in args.nodes_inflight:
                rows.append({"nodes": size, "inflight": c, **await measure(
                    cl, f"{size} nodes, {c} in flight", concurrency=c,
                    duration=args.duration, value_size=100, key_count=10_000)})
        finally:
            cl.close()
    return {"rows": rows}


# -- part: key count ------------------------------------------------------------------------


def keys_tuning(args) -> Tuning:
    kw = {}
    if args.snapshot_threshold is not None:
        kw["snapshot_threshold"] = args.snapshot_threshold
    if args.snapshot_keep is not None:
        kw["snapshot_keep_entries"] = args.snapshot_keep
    return Tuning(**kw)


def snapshots_at(cl: CostCluster, nid: int, target: int) -> tuple[int, float] | None:
    """The first snapshot node ``nid`` logged at an index >= ``target``: (index, seconds)."""
    for m in SNAP_WRITTEN.finditer(cl.nodes[nid].log_text()):
        if int(m.group(1)) >= target:
            return int(m.group(1)), float(m.group(2))
    return None


def memory_row(cl: CostCluster, empty: dict[int, int], n_keys: int) -> dict:
    """Each node's RSS and peak (MB) and (RSS - empty RSS) / n_keys bytes per key."""
    out = {}
    for nid in sorted(cl.nodes):
        m = cl.memory_kb(nid)
        out[nid] = {"rss_mb": mb(m.get("VmRSS", 0) * 1024), "hwm_mb": mb(m.get("VmHWM", 0) * 1024),
                    "bytes_per_key": round((m.get("VmRSS", 0) - empty[nid]) * 1024 / n_keys, 1)}
    return out


async def fill_and_snapshot(cl: CostCluster, n: int, args, wait: float) -> dict:
    """Steps (b) to (e) of the keys part (module docstring) on the started cluster ``cl``."""
    value = b"v" * 100
    out: dict = {}
    fill = Writer(cl, f"fill {n:,}", lambda i: KEY % i, value, args.fill_inflight)
    out["fill"] = await fill.run(count=n)
    leader = await cl.leader(wait)
    end = await cl.commit_of(leader)
    await cl.wait_applied(sorted(cl.nodes), end, wait, "after the fill")
    out["fill_end_index"] = end
    out["after_fill"] = memory_row(cl, cl.empty, n)
    rnd = random.random
    steady = Writer(cl, f"overwrites at {n:,} keys", lambda i: KEY % int(rnd() * n), value,
                    args.size_inflight)
    out["steady"] = await steady.run(duration=args.duration)

    def covered():
        return all(snapshots_at(cl, i, end) is not None for i in cl.nodes)
    if not covered():
        more = Writer(cl, "until a snapshot holds every key", lambda i: KEY % (i % n), value,
                      args.fill_inflight)
        out["top_up"] = await more.run(until=covered)
    await cl.wait(covered, wait, f"a snapshot at index >= {end:,} on every node")
    leader = await cl.leader(wait)
    await cl.wait_applied(sorted(cl.nodes), await cl.commit_of(leader), wait, "after the top-up")
    snaps = {}
    for nid in sorted(cl.nodes):
        index, secs = snapshots_at(cl, nid, end)
        f = newest_snapshot(cl.node_dir(nid))
        snaps[nid] = {"index": index, "seconds": secs,
                      "file": f.name if f else None,
                      "file_mb": mb(f.stat().st_size) if f else None,
                      "data_dir_mb": mb(dir_bytes(cl.node_dir(nid)))}
    out["snapshot"] = snaps
    await asyncio.sleep(1.0)    # let the snapshot's child be reaped and the log released
    out["after_snapshot"] = memory_row(cl, cl.empty, n)
    return out


async def restart_and_wipe(cl: CostCluster, n: int, wait: float) -> dict:
    """Steps (f) and (g) of the keys part: restart one follower, wipe the other."""
    leader = await cl.leader(wait)
    f1, f2 = [i for i in sorted(cl.nodes) if i != leader][:2]
    out = {"leader": leader, "restarted": f1, "wiped": f2}
    target = await cl.commit_of(leader)
    stop_s, code = await cl.stop_node(f1)
    t0 = pc()
    cl.start_node(f1)
    await cl.wait(lambda: cl.status(f1), wait, f"restarted node {f1} to answer status")
    t1 = pc()
    await cl.wait_applied([f1], target, wait, f"restarted node {f1}")
    t2 = pc()
    m = cl.memory_kb(f1)
    out["restart"] = {"stop_s": round(stop_s, 2), "exit_code": code,
                      "answers_s": round(t1 - t0, 2), "caught_up_s": round(t2 - t0, 2),
                      "rss_mb": mb(m.get("VmRSS", 0) * 1024),
                      "bytes_per_key": round((m.get("VmRSS", 0) - cl.empty[f1]) * 1024 / n, 1)}
    progress(f"  restart of node {f1}: {out['restart']}")
    target = await cl.commit_of(leader)
    log_from = len(cl.nodes[f2].log_text())
    cl.kill_node(f2)
    shutil.rmtree(cl.node_dir(f2), ignore_errors=True)
    t0 = pc()
    cl.start_node(f2, "--rejoin")
    await cl.wait_applied([f2], target, wait, f"wiped node {f2}")
    t1 = pc()
    m = cl.memory_kb(f2)
    inst = SNAP_INSTALLED.search(cl.nodes[f2].log_text()[log_from:])
    out["wiped_follower"] = {
        "caught_up_s": round(t1 - t0, 2), "rss_mb": mb(m.get("VmRSS", 0) * 1024),
        "bytes_per_key": round((m.get("VmRSS", 0) - cl.empty[f2]) * 1024 / n, 1),
        "snapshot_index": int(inst.group(1)) if inst else None,
        "install_s": float(inst.group(2)) if inst else None,
        "built_s": float(inst.group(3)) if inst and inst.group(3) else None}
    progress(f"  wiped node {f2}: {out['wiped_follower']}")
    return out


async def one_key_count(args, base: Path, n: int) -> dict:
    """The keys part for ``n`` keys on a fresh 3-node cluster."""
    wait = args.wait_timeout + n * 50e-6        # 10 M keys: 500 s more per wait
    t_start = pc()
    cl = await started(base / f"keys-{n}", 3, keys_tuning(args), wait)
    sampler = None
    try:
        warm = Writer(cl, "warm-up", lambda i: b"warm/key", b"w" * 100, 8)
        await warm.run(count=400)
        leader = await cl.leader(wait)
        await cl.wait_applied(sorted(cl.nodes), await cl.commit_of(leader), wait, "warm-up")
        cl.empty = {i: cl.memory_kb(i).get("VmRSS", 0) for i in sorted(cl.nodes)}
        sampler = MemorySampler(cl)
        out = {"keys": n, "empty_rss_mb": {i: mb(v * 1024) for i, v in cl.empty.items()}}
        out.update(await fill_and_snapshot(cl, n, args, wait))
        out.update(await restart_and_wipe(cl, n, wait))
        out["snapshot_child_private_mb"] = mb(sampler.child_kb * 1024)
        out["peak_total_mb"] = mb(sampler.total_kb * 1024)
    finally:
        if sampler is not None:
            await sampler.close()
        cl.close()
    if not args.keep:
        shutil.rmtree(cl.config.data_dir, ignore_errors=True)     # measured: free the disk
    out["total_s"] = round(pc() - t_start, 1)
    return out


async def part_keys(args, base: Path) -> dict:
    runs = []
    for n in args.keys:
        progress(f"  {n:,} keys")
        runs.append(await one_key_count(args, base, n))
        progress(f"  {n:,} keys: done in {runs[-1]['total_s']} s")
        if args.on_progress is not None:
            args.on_progress({"runs": runs})
    t = keys_tuning(args)
    return {"snapshot_threshold": t.snapshot_threshold,
            "snapshot_keep_entries": t.snapshot_keep_entries,
            "key_value_bytes": KEY_VALUE_BYTES, "target_overhead_bytes": TARGET_OVERHEAD,
            "runs": runs}


# -- output: Markdown -----------------------------------------------------------------------


def fmt_errors(e: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items())) or "0"


def opt(x, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def render_inflight(r: dict) -> str:
    rows = [[x["inflight"], f"{x['writes_per_s']:,.0f}", x["p50_ms"], x["p99_ms"],
             x["p999_ms"], fmt_errors(x["errors"]), opt(x["nodes_cpu_us_per_write"]),
             opt(x["client_cpu_us_per_write"])] for x in r["rows"]]
    return (f"### Writes against requests in flight (3 nodes, {r['value_size']}-byte values, "
            f"{r['key_count']:,} keys)\n\n" + table(
                ["in flight", "writes/s", "p50 ms", "p99 ms", "p99.9 ms", "errors",
                 "nodes' CPU us/write", "client CPU us/write"], rows))


def render_size(r: dict) -> str:
    d = r["disk"]
    rows = [[f"{x['value_size']:,} B", f"{x['keys']:,}", f"{x['writes_per_s']:,.0f}",
             x["values_mb_s"], f"{x['of_disk'] * 100:.1f} %",
             f"{x['three_wals_of_disk'] * 100:.1f} %", x["p50_ms"], x["p99_ms"],
             fmt_errors(x["errors"]), x["max_node_rss_mb"]] for x in r["rows"]]
    return "\n".join([
        f"### Writes against value size (3 nodes, {r['inflight']} in flight)\n",
        f"The disk's sequential write speed, same run: **{d['mb_s']} MB/s** ({d['mib']} MiB "
        f"in 1 MiB writes then one fsync: {d['seconds']} s, of which the fsync "
        f"{d['fsync_s']} s). Every node appends every value to its own WAL on that disk: "
        f"the disk takes 3x the values' MB/s.\n",
        table(["value", "keys", "writes/s", "values MB/s", "of the disk", "3 WALs of the disk",
               "p50 ms", "p99 ms", "errors", "largest node RSS MB"], rows)])


def largest_per_key(r: dict) -> float:
    """The largest node's RSS bytes per key after the snapshot (one key count's run)."""
    return max(v["bytes_per_key"] for v in r["after_snapshot"].values())


def per_node(d: dict, field: str, fmt: str = "{}") -> str:
    return " / ".join(opt(d[i][field], fmt) for i in sorted(d))


KEY_ROWS = (
    ("fill: time (writes/s)", lambda r: f"{r['fill']['seconds']} s "
     f"({r['fill']['writes_per_s']:,.0f}/s)"),
    ("fill: p50 / p99 ms, errors", lambda r: f"{r['fill']['p50_ms']} / {r['fill']['p99_ms']}"
     f", {fmt_errors(r['fill']['errors'])}"),
    ("fill: CPU us/write nodes / client", lambda r: f"{opt(r['fill']['nodes_cpu_us_per_write'])}"
     f" / {opt(r['fill']['client_cpu_us_per_write'])}"),
    ("RSS empty, MB (nodes 1/2/3)", lambda r: " / ".join(
        str(r["empty_rss_mb"][i]) for i in sorted(r["empty_rss_mb"]))),
    ("RSS after the fill, MB", lambda r: per_node(r["after_fill"], "rss_mb")),
    ("bytes per key after the fill", lambda r: per_node(r["after_fill"], "bytes_per_key")),
    ("RSS after the snapshot, MB", lambda r: per_node(r["after_snapshot"], "rss_mb")),
    ("**bytes per key after the snapshot**", lambda r: "**" + per_node(
        r["after_snapshot"], "bytes_per_key") + "**"),
    (f"overhead beyond the {KEY_VALUE_BYTES} B of key + value (largest node)",
     lambda r: f"{largest_per_key(r) - KEY_VALUE_BYTES:.0f} B"),
    ("peak RSS (VmHWM), MB", lambda r: per_node(r["after_snapshot"], "hwm_mb")),
    ("snapshot child: largest private memory seen, MB",
     lambda r: str(r["snapshot_child_private_mb"])),
    ("all nodes + children: largest RSS sum seen, MB", lambda r: str(r["peak_total_mb"])),
    ("overwrites at N keys: writes/s (p50 / p99 ms)",
     lambda r: f"{r['steady']['writes_per_s']:,.0f} ({r['steady']['p50_ms']} / "
     f"{r['steady']['p99_ms']})"),
    ("leader's commit index after the fill", lambda r: f"{r['fill_end_index']:,}"),
    ("snapshot holding every key: index", lambda r: per_node(r["snapshot"], "index", "{:,}")),
    ("**snapshot time, s** (its log line)", lambda r: "**" + per_node(r["snapshot"], "seconds")
     + "**"),
    ("**newest snapshot file, MB**", lambda r: "**" + per_node(r["snapshot"], "file_mb") + "**"),
    ("data directory, MB", lambda r: per_node(r["snapshot"], "data_dir_mb")),
    ("overwrites until that snapshot", lambda r: f"{r['top_up']['writes']:,}"
     if "top_up" in r else "0"),
    ("follower clean stop (SIGTERM), s", lambda r: f"{r['restart']['stop_s']} "
     f"(exit {r['restart']['exit_code']})"),
    ("**restart: answers status / caught up, s**", lambda r: f"{r['restart']['answers_s']} / "
     f"**{r['restart']['caught_up_s']}**"),
    ("restarted node: bytes per key", lambda r: str(r["restart"]["bytes_per_key"])),
    ("**wiped follower (--rejoin): caught up, s**", lambda r:
     f"**{r['wiped_follower']['caught_up_s']}** (snapshot "
     f"{opt(r['wiped_follower']['snapshot_index'], '{:,}')}: state built in "
     f"{opt(r['wiped_follower'].get('built_s'))} s, swapped in "
     f"{opt(r['wiped_follower']['install_s'])} s)"),
    ("wiped follower: bytes per key", lambda r: str(r["wiped_follower"]["bytes_per_key"])),
    ("time for this key count, s", lambda r: str(r["total_s"])),
)


def render_keys(r: dict) -> str:
    runs = r["runs"]
    rows = [[label] + [fn(x) for x in runs] for label, fn in KEY_ROWS]
    head = ["3 nodes, 16-byte keys, 100-byte values"] + [f"{x['keys']:,} keys" for x in runs]
    notes = [f"- node {x['leader']} led at the restart; node {x['restarted']} was restarted, "
             f"node {x['wiped']} wiped ({x['keys']:,} keys)" for x in runs]
    return "\n".join([
        f"### Against key count (snapshot every {r['snapshot_threshold']:,} entries, keeping "
        f"{r['snapshot_keep_entries']:,})\n", table(head, rows), "", *notes, "",
        memory_verdict(r)])


def memory_verdict(r: dict) -> str:
    big = max(r["runs"], key=lambda x: x["keys"])
    bpk = largest_per_key(big)
    over = bpk - KEY_VALUE_BYTES
    where = "" if big["keys"] >= 10_000_000 else (
        f" (measured at {big['keys']:,} keys, not at 10,000,000: run `--keys 10000000`)")
    return (f"Memory target (< {TARGET_OVERHEAD} B of overhead per key at 10 M keys): at "
            f"{big['keys']:,} keys the largest node holds **{bpk:.0f} B of RSS per key**, "
            f"{over:.0f} B beyond the {KEY_VALUE_BYTES} B of key and value: "
            f"**{'within' if over < TARGET_OVERHEAD else 'above'} the target**{where}.")


def render_nodes(r: dict) -> str:
    rows = [[x["nodes"], x["inflight"], f"{x['writes_per_s']:,.0f}", x["p50_ms"], x["p99_ms"],
             x["p999_ms"], fmt_errors(x["errors"]), opt(x["nodes_cpu_us_per_write"])]
            for x in r["rows"]]
    return "### Writes against cluster size (100-byte values, 10,000 keys)\n\n" + table(
        ["nodes", "in flight", "writes/s", "p50 ms", "p99 ms", "p99.9 ms", "errors",
         "nodes' CPU us/write (all nodes)"], rows)


RENDERERS = (("inflight", render_inflight), ("size", render_size), ("keys", render_keys),
             ("nodes", render_nodes))


def render(res: dict) -> str:
    m = res["meta"]
    out = [f"Python {m['python']}, {m['cpus']} CPUs, core {m['core']}, load average "
           f"{m['loadavg_start'][0]} at the start, {m.get('loadavg_end', ['?'])[0]} at the "
           f"end; {m.get('total_s', '?')} s in all; `{' '.join(m['argv']) or '(no options)'}`.",
           ""]
    for part, fn in RENDERERS:
        if part in res:
            out += [fn(res[part]), ""]
    if m.get("charts"):
        out.append("Charts: " + ", ".join(f"`{Path(p).name}`" for p in m["charts"]) + ".")
    elif m.get("charts_skipped"):
        out.append(m["charts_skipped"])
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """``100000,1M,10M`` -> [100000, 1000000, 10000000] (k and M suffixes)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        mult = {"k": 1_000, "K": 1_000, "M": 1_000_000}.get(part[-1], 1)
        try:
            v = int(float(part[:-1] if mult != 1 else part) * mult)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers like 100000,1M: {text!r}")
        if v < 1:
            raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
        out.append(v)
    if not out:
        raise argparse.ArgumentTypeError("expected at least one number")
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (under ~2 minutes): in "
                    "flight 1,16,64; values 100 B and 16 KiB; 10k and 50k keys (snapshot every "
                    "5,000 entries); 3 and 5 nodes; 2 s per measurement")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated subset of inflight,size,keys,nodes (default all)")
    ap.add_argument("--keys", type=int_list, default=None,
                    help="key counts of the keys part (default 100k,1M,10M)")
    ap.add_argument("--inflight", type=int_list, default=None,
                    help="requests in flight of the inflight part (default 1,2,4,...,1024)")
    ap.add_argument("--sizes", type=int_list, default=None,
                    help="value sizes in bytes (default 100,1024,16384,262144)")
    ap.add_argument("--nodes", type=int_list, default=None, help="cluster sizes (3,5,7)")
    ap.add_argument("--nodes-inflight", type=int_list, default=None,
                    help="requests in flight of the nodes part (1,64)")
    ap.add_argument("--size-inflight", type=int, default=64,
                    help="requests in flight of the size part and of the overwrites at N "
                         "keys (64)")
    ap.add_argument("--fill-inflight", type=int, default=512,
                    help="puts in flight while filling the keys (512)")
    ap.add_argument("--duration", type=float, default=None, metavar="S",
                    help="seconds per measurement (5; 2 with --quick)")
    ap.add_argument("--disk-mib", type=int, default=None,
                    help="MiB written to measure the disk (256; 64 with --quick)")
    ap.add_argument("--snapshot-threshold", type=int, default=None,
                    help="the keys part's snapshot_threshold (default tuning's; 5000 --quick)")
    ap.add_argument("--snapshot-keep", type=int, default=None,
                    help="the keys part's snapshot_keep_entries (default tuning's; 1000 "
                         "with --quick)")
    ap.add_argument("--wait-timeout", type=float, default=120.0,
                    help="seconds a single wait may take, plus 50 us per key in the keys "
                         "part (120)")
    ap.add_argument("--out", default=".", help="directory of cost_curve.md, cost_curve.json "
                    "and the PNGs (default: the current directory)")
    add_run_options(ap, "the clusters live", json_file=False)
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for name in ("inflight", "sizes", "keys", "nodes", "nodes_inflight", "duration",
                 "disk_mib"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    if args.quick:
        args.snapshot_threshold = args.snapshot_threshold or 5_000
        args.snapshot_keep = args.snapshot_keep if args.snapshot_keep is not None else 1_000
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad or not args.parts:
        ap.error(f"--parts: expected some of {','.join(PARTS)}, got {bad or 'nothing'}")
    args.out = Path(args.out)
    args.json = str(args.out / "cost_curve.json")    # run_script writes it at the end
    return args


async def run(args, base: Path, loop_name: str) -> dict:
    res: dict = {"meta": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "core": IMPLEMENTATION,
        "loop": loop_name, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "duration_s": args.duration, "argv": sys.argv[1:]}}
    args.out.mkdir(parents=True, exist_ok=True)

    def save_partial(part_res=None, part=None) -> None:
        if part is not None:
            res[part] = part_res
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")

    t0 = pc()
    for part, fn in (("inflight", part_inflight), ("size", part_size), ("keys", part_keys),
                     ("nodes", part_nodes)):
        if part in args.parts:
            progress(f"=== {part}")
            args.on_progress = (lambda r, p=part: save_partial(r, p)) if part == "keys" \
                else None
            res[part] = await fn(args, base)
            save_partial()
    res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["meta"]["total_s"] = round(pc() - t0, 1)
    return res


def finish(args, res: dict) -> str:
    """Charts, then the Markdown (also written to OUT/cost_curve.md)."""
    paths, skipped = charts(res, args.out)
    res["meta"]["charts"] = paths
    if skipped:
        res["meta"]["charts_skipped"] = skipped
        progress(skipped)
    md = render(res)
    (args.out / "cost_curve.md").write_text(md + "\n")
    progress(f"wrote {args.out / 'cost_curve.md'}, {args.json}"
             + "".join(f", {p}" for p in paths))
    return md


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_script("cost_curve", args, run, lambda res: finish(args, res))


if __name__ == "__main__":
    sys.exit(main())
