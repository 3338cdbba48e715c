"""Membership changes on real node processes: learner catch-up, writes during 3 -> 5 -> 3, and
the failover after removing the leader.

Place in the architecture: a benchmark script (bench/), outside the package. It starts the very
commands a user runs (``python -P -m fastraft node --id N --config F --data-dir D`` for the
bootstrap members, ``... node --id N --raft H:P --client H:P --join ... --config F
--data-dir D`` for a node added at runtime) on free ports, each node's output in its own log
file, and drives them through ``fastraft.client.AsyncClient`` (writes and the member calls
``members``, ``add_learner``, ``promote``, ``remove_member``) plus a minimal OP_STATUS probe of
its own for the status of one given node. It imports nothing of the server.

Three measurements, each on a fresh 3-node cluster and each within one run, so that every
comparison is a ratio of figures taken minutes apart on the same machine:

1. ``catchup``: N keys (16-byte keys, 32-byte values) are written with pipelined writes; a new
   node is started with ``--join`` and waits; then, from the ``add_learner`` request: the
   answer, the learner's match index (``members()`` on the leader) reaching the leader's last
   index, and the learner's applied index (its own status) reaching it. The learner's log tells
   whether the state came by snapshot (``installed snapshot I@T``) or by the log alone.
2. ``sequence``: a constant write load (``--concurrency`` writes in flight, random keys among
   ``--load-keys``) through steady state (3 voters, ``--steady`` s), then the sequence 3 -> 5
   -> 3 under the same load (add a learner, catch up, promote, twice; then remove the leader
   and one more voter), then steady state again. Per phase: writes/s, latency percentiles, the
   longest gap between two acknowledged writes, errors; then the sequence's ratio to the
   steady state. A promotion refused because the learner lags (Busy) is retried every 50 ms;
   the refusals are counted.
3. ``failover``: ``--repeats`` rounds of: grow to 4 voters (add, catch up, promote a new node),
   ``remove_member(leader)``, then one write from a client that last wrote through the old
   leader: the time from the remove request to that write's acknowledgement (the client
   retrying on the new leader), split at the remove's answer; the old leader's exit; the
   longest write gap of a background load (``--failover-concurrency``, 0 for none).

    python bench/membership_bench.py                    # 1,000,000 keys; several minutes
    python bench/membership_bench.py --quick            # smoke run: 20,000 keys, < 1 minute
    python bench/membership_bench.py --parts catchup --keys 200000 --json out.json

Markdown tables go to stdout, progress to stderr. Exit 1 when the cluster misbehaves (a wait
times out: the message names what it waited for, with the tail of every node's log) or a node
exits unexpectedly; the directory with the logs is then kept.
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
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastraft import codec, processes
from fastraft.client import AsyncClient
from fastraft.client.bench import Histogram
from fastraft.config import Config, NodeSpec, Tuning, render_config
from fastraft.core import IMPLEMENTATION, FrameDecoder, encode_frame
from fastraft.errors import Busy, FastraftError
from fastraft.loops import pick_loop

STATUS_FIELDS = ("id", "role", "term", "leader", "last_index", "commit", "applied", "core",
                 "loop", "version")
MAX_FRAME = 16 << 20
POLL_S = 0.02               # polling interval of every wait
PROMOTE_RETRY_S = 0.05      # pause between two promotions refused with Busy
WAITING_LINE = "waiting to be added"
SNAP_INSTALLED = re.compile(r"installed snapshot (\d+)@(\d+) from the leader in ([\d.]+) s")
SNAP_WRITTEN = re.compile(r"snapshot at (\d+) written")
REMOVED_LINE = re.compile(r"was removed from the cluster \((.*)\): stopping")
pc = time.perf_counter


def how_removed(n: Node) -> str:
    """How node ``n`` learned it was removed, from its log: "commit" (it saw the change
    commit) or "refusal" (a peer refused it), "?" when it did not say."""
    m = REMOVED_LINE.search(n.log_text())
    if m is None:
        return "?"
    return "commit" if m.group(1).startswith("a committed") else "refusal"


class BenchFailed(Exception):
    """The cluster did not do what was expected in time (the message says what, with logs)."""


def clock(t: float) -> str:
    """Wall-clock ``HH:MM:SS.mmm`` (as in the nodes' log lines)."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# -- processes ------------------------------------------------------------------------------


class Node:
    """One node process of a bench cluster (``proc`` None until started)."""

    def __init__(self, nid: int, raft: str, client: str, log_path: Path) -> None:
        self.id, self.raft, self.client, self.log_path = nid, raft, client, log_path
        self.proc = None
        self.exit_code: int | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """``size`` bootstrap members on free ports of 127.0.0.1 under ``base``; nodes added later
    get the next ids. ``members``: the ids believed to be members (for ``--join`` lists)."""

    def __init__(self, base: Path, size: int, tuning: Tuning) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        specs = tuple(NodeSpec(i, ("127.0.0.1", processes.free_port()),
                               ("127.0.0.1", processes.free_port())) for i in range(1, size + 1))
        self.config = Config(f"membench-{os.getpid()}-{base.name}", specs, tuning,
                             data_dir=str(base / "data"))
        self.config_path = str(base / "cluster.toml")
        Path(self.config_path).write_text(render_config(self.config))
        self.nodes = {s.id: Node(s.id, s.raft_addr, s.client_addr, base / f"node{s.id}.log")
                      for s in specs}
        self.members = set(self.nodes)
        self.removed: set[int] = set()
        self.probes: dict[str, Probe] = {}

    def endpoints(self) -> list[str]:
        return [self.nodes[i].client for i in sorted(self.members)]

    def _spawn(self, node: Node, argv: list[str]) -> None:
        with open(node.log_path, "ab") as log:
            log.write(f"=== membership_bench: {' '.join(argv)}\n".encode())
            log.flush()
            node.proc = processes.spawn(argv, stdout=log, cwd=self.base,
                                        death_signal=signal.SIGKILL)

    def start(self) -> None:
        for i in sorted(self.nodes):
            self._spawn(self.nodes[i], processes.node_argv(i, self.config_path,
                                                           self.config.data_dir))

    def new_node(self) -> Node:
        nid = max(self.nodes) + 1
        n = Node(nid, f"127.0.0.1:{processes.free_port()}",
                 f"127.0.0.1:{processes.free_port()}", self.base / f"node{nid}.log")
        self.nodes[nid] = n
        return n

    async def start_joining(self, n: Node, timeout: float) -> None:
        """Start ``n`` with ``--join`` (the members' client addresses) and wait until it
        says it waits to be added."""
        argv = [sys.executable, "-P", "-m", "fastraft", "node", "--id", str(n.id), "--raft",
                n.raft, "--client", n.client, "--join", ",".join(self.endpoints()),
                "--config", self.config_path, "--data-dir", self.config.data_dir]
        self._spawn(n, argv)
        await self.wait(lambda: WAITING_LINE in n.log_text(), timeout,
                        f"node {n.id} to log '{WAITING_LINE}'")

    def probe(self, nid: int) -> Probe:
        addr = self.nodes[nid].client
        if addr not in self.probes:
            self.probes[addr] = Probe(addr)
        return self.probes[addr]

    async def status(self, nid: int) -> dict | None:
        return await self.probe(nid).status()

    async def leader(self, timeout: float, exclude=()) -> int:
        """The member that says it leads the highest term (not one of ``exclude``)."""
        async def found():
            ids = [i for i in sorted(self.members) if i not in exclude]
            sts = [s for s in await asyncio.gather(*(self.status(i) for i in ids)) if s]
            if not sts:
                return None
            top = max(s["term"] for s in sts)
            leads = [s["id"] for s in sts if s["role"] == "leader" and s["term"] == top]
            return leads[0] if len(leads) == 1 else None
        return await self.wait(found, timeout, "a leader" + (
            f" other than node(s) {sorted(exclude)}" if exclude else ""))

    async def wait_exit(self, nid: int, timeout: float) -> int:
        n = self.nodes[nid]
        await self.wait(lambda: n.proc.poll() is not None, timeout, f"node {nid} to exit")
        n.exit_code = n.proc.wait()
        return n.exit_code

    async def wait(self, predicate, timeout: float, what: str):
        """Poll ``predicate()`` (plain or async) until truthy; BenchFailed after
        ``timeout`` s, or at once when a member's process has died."""
        deadline = pc() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            dead = [i for i, n in self.nodes.items() if i not in self.removed
                    and n.proc is not None and n.proc.poll() is not None]
            if dead:
                raise BenchFailed(f"while waiting for {what}: node(s) {dead} exited "
                                  f"unexpectedly\n{self.report()}")
            if pc() >= deadline:
                raise BenchFailed(f"timed out after {timeout:g} s waiting for {what}\n"
                                  + self.report())
            await asyncio.sleep(POLL_S)

    def report(self, lines: int = 25) -> str:
        out = []
        for n in self.nodes.values():
            state = "running" if n.running else f"exited {n.proc.poll()}" if n.proc else "-"
            out.append(f"--- node {n.id} ({state}), last {lines} lines of {n.log_path}:")
            out.append("\n".join(n.log_text().splitlines()[-lines:]) or "(empty)")
        return "\n".join(out)

    def close(self) -> None:
        for p in self.probes.values():
            p.close()
        procs = [n.proc for n in self.nodes.values() if n.proc is not None]
        processes.stop(procs, 10.0)


class Probe:
    """One connection to one node's client port, for OP_STATUS only (the script's own
    minimal client: ``fastraft.client`` asks whichever node it likes)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.reader = self.writer = self.decoder = None
        self.req = 0

    async def status(self, timeout: float = 1.0) -> dict | None:
        """The node's status as a dict (STATUS_FIELDS), or None (down, busy, not yet
        listening)."""
        try:
            return await asyncio.wait_for(self._status(), timeout)
        except (OSError, asyncio.TimeoutError, FastraftError, ValueError, IndexError):
            self.close()
            return None

    async def _status(self) -> dict | None:
        if self.writer is None:
            host, port = self.addr.rsplit(":", 1)
            self.reader, self.writer = await asyncio.open_connection(host, int(port))
            self.decoder = FrameDecoder(MAX_FRAME)
        self.req += 1
        self.writer.write(encode_frame(codec.encode_request(self.req, codec.OP_STATUS)))
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed by the node")
            for frame in self.decoder.feed(data):
                rid, st, values = codec.decode_response(frame, MAX_FRAME)
                if rid == self.req:
                    return dict(zip(STATUS_FIELDS, values[0])) if st == codec.ST_OK else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = self.decoder = None


# -- write load -----------------------------------------------------------------------------


class Phase:
    """What the load saw between two ``Load.phase`` calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hist = Histogram()
        self.errors: dict[str, int] = {}
        self.first_error: dict[str, str] = {}      # error type -> its first message
        self.t0 = pc()
        self.t1: float | None = None
        self.max_gap = 0.0

    def row(self) -> dict:
        h, dur = self.hist, (self.t1 or pc()) - self.t0
        ms = lambda s: round(s * 1e3, 2)  # noqa: E731
        return {"phase": self.name, "duration_s": round(dur, 2), "writes": h.n,
                "writes_per_s": round(h.n / dur, 1) if dur > 0 else 0.0,
                "p50_ms": ms(h.percentile(50)), "p99_ms": ms(h.percentile(99)),
                "max_ms": ms(h.max), "max_gap_ms": ms(self.max_gap), "errors": dict(self.errors),
                "first_error": dict(self.first_error)}


def merged(name: str, phases: list[Phase]) -> Phase:
    """One Phase made of consecutive ``phases`` (their histograms added)."""
    m = Phase(name)
    m.t0, m.t1 = phases[0].t0, phases[-1].t1
    for p in phases:
        for b, c in p.hist.counts.items():
            m.hist.counts[b] = m.hist.counts.get(b, 0) + c
        m.hist.n += p.hist.n
        m.hist.total += p.hist.total
        m.hist.max = max(m.hist.max, p.hist.max)
        m.max_gap = max(m.max_gap, p.max_gap)
        for k, v in p.errors.items():
            m.errors[k] = m.errors.get(k, 0) + v
        for k, v in p.first_error.items():
            m.first_error.setdefault(k, v)
    return m


class Load:
    """``concurrency`` workers over ``clients`` AsyncClients, each writing a random key of
    ``keys`` and waiting for the answer before the next; latencies go to the current phase."""

    def __init__(self, endpoints: list[str], concurrency: int, key_count: int, value: bytes,
                 clients: int = 1, timeout: float = 5.0) -> None:
        self.clients = [AsyncClient(endpoints, timeout=timeout) for _ in range(clients)]
        self.concurrency = concurrency
        self.keys = [b"load/%011d" % i for i in range(key_count)]
        self.value = value
        self.phases: list[Phase] = []
        self.cur: Phase | None = None
        self.window: list[float] = []
        self.last_ack = pc()
        self.stop = False
        self.tasks: list = []

    def phase(self, name: str | None) -> Phase | None:
        """End the current phase; start one called ``name`` (None: none)."""
        now = pc()
        if self.cur is not None:
            self.cur.hist.add_many(self.window)
            self.cur.t1 = now
        self.window = []        # what completed outside any phase is not counted
        self.cur = Phase(name) if name is not None else None
        if self.cur is not None:
            self.phases.append(self.cur)
        return self.cur

    async def worker(self, c: AsyncClient) -> None:
        keys, value, rnd, n = self.keys, self.value, random.random, len(self.keys)
        while not self.stop:
            t0 = pc()
            try:
                await c.put(keys[int(rnd() * n)], value)
            except FastraftError as exc:
                if self.cur is not None:
                    name = type(exc).__name__
                    self.cur.errors[name] = self.cur.errors.get(name, 0) + 1
                    self.cur.first_error.setdefault(name, f"{clock(time.time())} {exc}")
                await asyncio.sleep(0.01)
                continue
            now = pc()
            self.window.append(now - t0)
            if self.cur is not None and now - self.last_ack > self.cur.max_gap:
                self.cur.max_gap = now - self.last_ack
            self.last_ack = now

    async def ticker(self) -> None:
        """Once a second: move the latencies into the phase and print the rate."""
        last_n, last_t = 0, pc()
        while not self.stop:
            await asyncio.sleep(1.0)
            cur = self.cur
            if cur is None:
                self.window = []
                continue
            cur.hist.add_many(self.window)
            self.window = []
            now = pc()
            if cur.hist.n >= last_n:
                progress(f"  [{cur.name}] {(cur.hist.n - last_n) / (now - last_t):8.0f} "
                         f"writes/s, p99 so far {cur.hist.percentile(99) * 1e3:.1f} ms, "
                         f"errors {sum(cur.errors.values())}")
            last_n, last_t = cur.hist.n, now

    async def start(self, first_phase: str) -> None:
        for c in self.clients:          # a session on each client before the clock starts
            await c.put(self.keys[0], self.value)
        self.phase(first_phase)
        self.last_ack = pc()
        self.tasks = [asyncio.ensure_future(self.worker(self.clients[i % len(self.clients)]))
                      for i in range(self.concurrency)]
        self.tasks.append(asyncio.ensure_future(self.ticker()))

    async def finish(self) -> list[Phase]:
        """Stop the load; the last phase ends now (the writes in flight still count, as in
        ``fastraft bench``)."""
        self.stop = True
        t_end, cur = pc(), self.cur
        self.tasks[-1].cancel()                 # the ticker (it may be asleep for 1 s)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.phase(None)
        if cur is not None:
            cur.t1 = t_end
        await self.close()
        return self.phases

    async def close(self) -> None:
        """Stop at once (after a failure): the writes in flight are cancelled."""
        self.stop = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for c in self.clients:
            await c.close()


async def load_keys(endpoints: list[str], n: int, value: bytes, concurrency: int) -> dict:
    """Write keys ``key/<12 digits>`` 0..n-1 once each, ``concurrency`` in flight over two
    clients; progress every 5 s."""
    clients = [AsyncClient(endpoints, timeout=10.0) for _ in range(2)]
    counter = iter(range(n))
    done = [0]

    async def fill(c: AsyncClient) -> None:
        for i in counter:
            await c.put(b"key/%012d" % i, value)
            done[0] += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(5.0)
            progress(f"  loaded {done[0]:,} of {n:,} keys ({done[0] / (pc() - t0):,.0f}/s)")

    t0 = pc()
    rep = asyncio.ensure_future(report())
    try:
        await asyncio.gather(*(fill(clients[i % 2]) for i in range(concurrency)))
    finally:
        rep.cancel()
        for c in clients:
            await c.close()
    dt = pc() - t0
    return {"keys": n, "load_s": round(dt, 2), "load_writes_per_s": round(n / dt, 1)}


# -- membership steps -----------------------------------------------------------------------


async def members_by_id(admin: AsyncClient) -> dict:
    return {m.id: m for m in await admin.members()}


async def grow(cl: Cluster, admin: AsyncClient, n: Node, timeout: float) -> dict:
    """Add the (started, waiting) node ``n`` as a learner, then promote it, retrying every
    PROMOTE_RETRY_S while it is refused as not caught up (Busy). Times from the add request."""
    t0 = pc()
    await admin.add_learner(n.id, n.raft, n.client)
    t_add = pc()
    refusals, last_refusal = 0, ""
    deadline = t_add + timeout
    while True:
        try:
            await admin.promote(n.id)
            break
        except Busy as exc:
            refusals, last_refusal = refusals + 1, str(exc)
            if pc() >= deadline:
                raise BenchFailed(
                    f"node {n.id}'s promotion was still refused after {timeout:g} s "
                    f"({refusals} refusals; last: {last_refusal})\n{cl.report()}") from None
            await asyncio.sleep(PROMOTE_RETRY_S)
    t_promoted = pc()
    cl.members.add(n.id)
    m = SNAP_INSTALLED.search(n.log_text())
    return {"node": n.id, "add_s": round(t_add - t0, 3), "promoted_s": round(t_promoted - t0, 3),
            "promote_refusals": refusals, "last_refusal": last_refusal,
            "snapshot_index": int(m.group(1)) if m else None}


async def remove(cl: Cluster, admin: AsyncClient, nid: int, timeout: float) -> dict:
    """Remove member ``nid``; wait for its process to exit (and a leader among the rest)."""
    t0 = pc()
    index = await admin.remove_member(nid)
    t_acked = pc()
    cl.members.discard(nid)
    cl.removed.add(nid)
    code = await cl.wait_exit(nid, timeout)
    t_exit = pc()
    lead = await cl.leader(timeout)
    return {"node": nid, "acked_s": round(t_acked - t0, 3), "answer_index": index,
            "exited_s": round(t_exit - t0, 3), "exit_code": code, "learned_by": how_removed(
                cl.nodes[nid]), "leader_after": lead, "leader_s": round(pc() - t0, 3)}


async def leader_id(admin: AsyncClient) -> int:
    return next(m.id for m in await admin.members() if m.is_leader)


# -- the three measurements -----------------------------------------------------------------


async def wait_snapshot_settled(cl: Cluster, lead: int, threshold: int, timeout: float) -> None:
    """After the load: until the leader's latest snapshot lies within ``threshold`` entries
    of its last index (no snapshot is still due), so the learner gets the newest one."""
    st = await cl.status(lead)
    if st is None or st["last_index"] < threshold:
        return

    def settled():
        snaps = [int(x) for x in SNAP_WRITTEN.findall(cl.nodes[lead].log_text())]
        return snaps and max(snaps) > st["last_index"] - threshold
    await cl.wait(settled, timeout, f"node {lead}'s snapshot near index {st['last_index']}")


async def catchup_track(cl: Cluster, admin: AsyncClient, n: Node, t0: float, target: int,
                        timeout: float) -> dict:
    """Poll the leader's member list and the learner's status until the learner applied
    ``target``; the first time each milestone was seen, in seconds from ``t0``."""
    seen: dict[str, float] = {}
    last_match = 0

    async def check():
        nonlocal last_match
        ms, st = await asyncio.gather(members_by_id(admin), cl.status(n.id))
        now = pc() - t0
        if st is not None:
            seen.setdefault("learner_answers_s", now)
        m = ms.get(n.id)
        if m is not None:
            last_match = m.match
            if m.match > 0:
                seen.setdefault("first_match_s", now)
            if m.match >= target:
                seen.setdefault("caught_up_s", now)
        if st is not None and st["applied"] >= target:
            seen.setdefault("applied_s", now)
        return "caught_up_s" in seen and "applied_s" in seen

    try:
        await cl.wait(check, timeout, f"learner {n.id} to reach index {target}")
    except BenchFailed as exc:
        raise BenchFailed(f"{exc}\n(last match {last_match}, milestones {seen})") from None
    return {k: round(v, 3) for k, v in seen.items()}


async def part_catchup(args, base: Path) -> dict:
    """Measurement 1: a learner brought up to date from ``args.keys`` keys."""
    cl = Cluster(base / "catchup", 3, args.tuning)
    admin = None
    try:
        cl.start()
        lead = await cl.leader(args.wait_timeout)
        progress(f"catchup: writing {args.keys:,} keys (16-byte keys, {args.value_size}-byte "
                 f"values), {args.load_concurrency} in flight")
        out = await load_keys(cl.endpoints(), args.keys, b"v" * args.value_size,
                              args.load_concurrency)
        lead = await cl.leader(args.wait_timeout)
        await wait_snapshot_settled(cl, lead, args.tuning.snapshot_threshold,
                                    args.wait_timeout)
        n = cl.new_node()
        await cl.start_joining(n, args.wait_timeout)
        admin = AsyncClient(cl.endpoints(), timeout=10.0)
        progress(f"catchup: node {n.id} started and waiting; adding it as a learner")
        t0 = pc()
        await admin.add_learner(n.id, n.raft, n.client)
        out["add_acked_s"] = round(pc() - t0, 3)
        st = await cl.status(lead)
        target = out["target_index"] = st["last_index"]
        out.update(await catchup_track(cl, admin, n, t0, target, args.wait_timeout))
        text = n.log_text()
        m = SNAP_INSTALLED.search(text)
        out["via"] = "snapshot + log" if m else "log"
        if m:
            out["snapshot_index"] = int(m.group(1))
            out["snapshot_install_s"] = float(m.group(3))
            out["log_entries_after_snapshot"] = target - int(m.group(1))
        else:
            out["log_entries"] = target
        return out
    finally:
        if admin is not None:
            await admin.close()
        cl.close()


async def part_sequence(args, base: Path) -> dict:
    """Measurement 2: writes in steady state, during 3 -> 5 -> 3, and in steady state again."""
    cl = Cluster(base / "sequence", 3, args.tuning)
    load = admin = None
    steps: list[dict] = []
    try:
        cl.start()
        await cl.leader(args.wait_timeout)
        new = [cl.new_node(), cl.new_node()]
        for n in new:                       # started before the load: they only wait
            await cl.start_joining(n, args.wait_timeout)
        admin = AsyncClient(cl.endpoints(), timeout=10.0)
        load = Load(cl.endpoints(), args.concurrency, args.load_keys, b"v" * args.value_size)
        progress(f"sequence: steady load, 3 voters, {args.steady:g} s")
        await load.start("steady, 3 voters (before)")
        await asyncio.sleep(args.steady)
        for n in new:
            load.phase(f"add learner {n.id}, catch up, promote")
            steps.append({"step": "grow", **await grow(cl, admin, n, args.wait_timeout)})
            progress(f"sequence: {steps[-1]}")
        lead = await leader_id(admin)
        load.phase(f"remove leader {lead}")
        steps.append({"step": "remove leader",
                      **await remove(cl, admin, lead, args.wait_timeout)})
        progress(f"sequence: {steps[-1]}")
        victim = min(i for i in cl.members if i != steps[-1]["leader_after"])
        load.phase(f"remove voter {victim}")
        steps.append({"step": "remove voter",
                      **await remove(cl, admin, victim, args.wait_timeout)})
        progress(f"sequence: {steps[-1]}")
        load.phase("steady, 3 voters (after)")
        progress(f"sequence: steady load, 3 voters, {args.steady:g} s")
        await asyncio.sleep(args.steady)
        phases = await load.finish()
        load = None
        final = sorted((await members_by_id(admin)).items())
        return sequence_summary(phases, steps, final)
    finally:
        if load is not None:
            await load.close()
        if admin is not None:
            await admin.close()
        cl.close()


def sequence_summary(phases: list[Phase], steps: list[dict], final) -> dict:
    seq = merged("3 -> 5 -> 3 (whole sequence)", phases[1:-1])
    steady = merged("steady (both windows)", [phases[0], phases[-1]])
    steady.t1 = steady.t0 + (phases[0].t1 - phases[0].t0) + (phases[-1].t1 - phases[-1].t0)
    rows = [p.row() for p in phases] + [seq.row(), steady.row()]
    s, q = steady.row(), seq.row()
    return {"phases": rows, "steps": steps,
            "members_at_end": {i: m.role for i, m in final},
            "ratio_writes_per_s": round(q["writes_per_s"] / s["writes_per_s"], 3)
            if s["writes_per_s"] else None,
            "ratio_p99": round(q["p99_ms"] / s["p99_ms"], 3) if s["p99_ms"] else None,
            "ratio_after_before_writes_per_s": round(
                rows[len(phases) - 1]["writes_per_s"] / rows[0]["writes_per_s"], 3)
            if rows[0]["writes_per_s"] else None}


async def failover_round(cl: Cluster, admin: AsyncClient, writer: AsyncClient, load, r: int,
                         args) -> dict:
    """One round: grow to 4 voters, remove the leader, time the next acknowledged write."""
    n = cl.new_node()
    await cl.start_joining(n, args.wait_timeout)
    g = await grow(cl, admin, n, args.wait_timeout)
    lead = await leader_id(admin)
    await writer.put(b"failover/warm", b"x")      # the writer's last write went to the leader
    phase = load.phase(f"round {r}") if load is not None else None
    t0, wall = pc(), time.time()
    index = await admin.remove_member(lead)
    t1 = pc()
    cl.members.discard(lead)
    cl.removed.add(lead)
    await writer.put(b"failover/%d" % r, b"x")
    t2 = pc()
    code = await cl.wait_exit(lead, args.wait_timeout)
    t3 = pc()
    new = await cl.leader(args.wait_timeout)
    if load is not None:
        await asyncio.sleep(0.5)                  # a little load after the new leader
        load.phase(None)
    out = {"round": r, "at": clock(wall), "grown_with": n.id,
           "promote_refusals": g["promote_refusals"],
           "removed_leader": lead, "new_leader": new, "remove_acked_s": round(t1 - t0, 3),
           "next_write_s": round(t2 - t0, 3), "after_answer_s": round(t2 - t1, 3),
           "old_leader_exit_s": round(t3 - t0, 3), "exit_code": code,
           "answer_index": index, "learned_by": how_removed(cl.nodes[lead])}
    if phase is not None:
        out["load_max_gap_ms"] = round(phase.max_gap * 1e3, 1)
        out["load_errors"] = dict(phase.errors)
    return out


async def part_failover(args, base: Path) -> dict:
    """Measurement 3: ``member remove <leader>`` to the next acknowledged write."""
    cl = Cluster(base / "failover", 3, args.tuning)
    admin = writer = load = None
    rounds = []
    try:
        cl.start()
        await cl.leader(args.wait_timeout)
        admin = AsyncClient(cl.endpoints(), timeout=10.0)
        writer = AsyncClient(cl.endpoints(), timeout=5.0)
        if args.failover_concurrency:
            load = Load(cl.endpoints(), args.failover_concurrency, args.load_keys,
                        b"v" * args.value_size)
            await load.start("warm-up")
            load.phase(None)
        for r in range(1, args.repeats + 1):
            rounds.append(await failover_round(cl, admin, writer, load, r, args))
            progress(f"failover: {rounds[-1]}")
        if load is not None:
            await load.finish()             # lets the writes in flight end (no cancel)
            load = None
        xs = [x["next_write_s"] for x in rounds]
        return {"rounds": rounds, "next_write_s": {
            "min": min(xs), "median": round(statistics.median(xs), 3), "max": max(xs)}}
    finally:
        if load is not None:
            await load.close()
        for c in (admin, writer):
            if c is not None:
                await c.close()
        cl.close()


# -- output ---------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt_errors(e: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items())) or "0"


def render_catchup(c: dict) -> str:
    rows = [["keys written (then the learner is added)", f"{c['keys']:,}"],
            ["writing them (pipelined)", f"{c['load_s']} s, {c['load_writes_per_s']:,.0f}/s"],
            ["leader's last index when the add was answered", f"{c['target_index']:,}"],
            ["add_learner answered", f"{c['add_acked_s']} s"],
            ["learner answers status (it saw itself listed)",
             f"{c.get('learner_answers_s', '-')} s"],
            ["learner's match > 0", f"{c.get('first_match_s', '-')} s"],
            ["**learner's match reaches the leader's last index**", f"**{c['caught_up_s']} s**"],
            ["**learner has applied it**", f"**{c['applied_s']} s**"],
            ["how the state got there", c["via"]]]
    if "snapshot_index" in c:
        rows.append(["snapshot installed (index; install time in the learner's log)",
                     f"{c['snapshot_index']:,}; {c['snapshot_install_s']} s"])
        rows.append(["log entries after the snapshot", f"{c['log_entries_after_snapshot']:,}"])
    return "### Learner catch-up (times from the add request)\n\n" + table(
        ["", "value"], rows)


def render_sequence(s: dict) -> str:
    rows = [[p["phase"], p["duration_s"], f"{p['writes']:,}", f"{p['writes_per_s']:,.0f}",
             p["p50_ms"], p["p99_ms"], p["max_ms"], p["max_gap_ms"], fmt_errors(p["errors"])]
            for p in s["phases"]]
    out = ["### Writes during 3 -> 5 -> 3 vs steady state (same run)\n",
           table(["phase", "s", "writes", "writes/s", "p50 ms", "p99 ms", "max ms",
                  "longest gap ms", "errors"], rows), "",
           f"Sequence / steady: throughput **{s['ratio_writes_per_s']}x**, p99 "
           f"**{s['ratio_p99']}x** (steady after / before: throughput "
           f"{s['ratio_after_before_writes_per_s']}x).", ""]
    for st in s["steps"]:
        if st["step"] == "grow":
            via = (f"snapshot {st['snapshot_index']:,} + log" if st["snapshot_index"]
                   else "the log alone")
            out.append(f"- node {st['node']}: add answered {st['add_s']} s, promoted "
                       f"{st['promoted_s']} s after the add request ({st['promote_refusals']} "
                       f"promotions refused as not caught up first); state by {via}")
        else:
            out.append(f"- {st['step']} {st['node']}: answered {st['acked_s']} s "
                       f"({answer(st['answer_index'])}), process exited {st['exited_s']} s "
                       f"(code {st['exit_code']}; it learned its removal by "
                       f"{st['learned_by']}), leader {st['leader_after']} seen at "
                       f"{st['leader_s']} s")
    out.append(f"- members at the end: {s['members_at_end']}")
    for p in s["phases"][:-2]:
        for name, msg in p.get("first_error", {}).items():
            out.append(f"- first {name} in phase '{p['phase']}': {msg}")
    return "\n".join(out)


def answer(index) -> str:
    """How a member change was answered: its index, or settled after an unknown outcome."""
    return f"index {index}" if index is not None else "outcome unknown, settled"


def render_failover(f: dict) -> str:
    rows = [[r["round"], r["removed_leader"], r["new_leader"],
             f"{r['remove_acked_s']} ({answer(r['answer_index'])})",
             f"**{r['next_write_s']}**", r["after_answer_s"],
             f"{r['old_leader_exit_s']} ({r['exit_code']}, {r['learned_by']})",
             r.get("load_max_gap_ms", "-"), fmt_errors(r.get("load_errors", {}))]
            for r in f["rounds"]]
    s = f["next_write_s"]
    return "\n".join([
        "### `remove_member(leader)` to the next acknowledged write (seconds from the request)\n",
        table(["round", "removed leader", "new leader", "remove answered",
               "next write acked", "of which after the answer",
               "old leader exited (code, learned by)",
               "load: longest gap ms", "load errors"], rows), "",
        f"Next acknowledged write: min **{s['min']} s**, median **{s['median']} s**, max "
        f"**{s['max']} s** over {len(f['rounds'])} rounds."])


# -- main -----------------------------------------------------------------------------------


PARTS = ("catchup", "sequence", "failover")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: --keys 20000 --steady 3 --repeats 2 (under a minute)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated subset of catchup,sequence,failover (default all)")
    ap.add_argument("--keys", type=int, default=None,
                    help="keys written before the learner is added (default 1,000,000)")
    ap.add_argument("--value-size", type=int, default=32, help="bytes per value (32)")
    ap.add_argument("--load-concurrency", type=int, default=256,
                    help="writes in flight while writing the keys (256)")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="writes in flight during the sequence measurement (64)")
    ap.add_argument("--load-keys", type=int, default=10_000,
                    help="distinct keys of the write load (10,000)")
    ap.add_argument("--steady", type=float, default=None,
                    help="seconds of each steady-state window (default 20)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="rounds of the remove-the-leader measurement (default 5)")
    ap.add_argument("--failover-concurrency", type=int, default=8,
                    help="background writes in flight during the failover rounds (8; 0: none)")
    ap.add_argument("--snapshot-threshold", type=int, default=None,
                    help="the cluster's [tuning] snapshot_threshold (default: the default "
                         "tuning's)")
    ap.add_argument("--wait-timeout", type=float, default=300.0,
                    help="seconds any single wait may take before the run fails (300)")
    add_run_options(ap, "clusters live")
    args = ap.parse_args(argv)
    args.keys = args.keys if args.keys is not None else 20_000 if args.quick else 1_000_000
    args.steady = args.steady if args.steady is not None else 3.0 if args.quick else 20.0
    args.repeats = args.repeats if args.repeats is not None else 2 if args.quick else 5
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad or not args.parts:
        ap.error(f"--parts: expected some of {','.join(PARTS)}, got {bad or 'nothing'}")
    tuning = {} if args.snapshot_threshold is None else {
        "snapshot_threshold": args.snapshot_threshold}
    args.tuning = Tuning(**tuning)
    return args


async def run(args, base: Path) -> dict:
    res: dict = {"meta": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "core": IMPLEMENTATION,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "tuning": {"heartbeat_ms": args.tuning.heartbeat_ms,
                   "election_timeout_ms": args.tuning.election_timeout_ms,
                   "snapshot_threshold": args.tuning.snapshot_threshold,
                   "snapshot_keep_entries": args.tuning.snapshot_keep_entries,
                   "fsync": args.tuning.fsync},
        "argv": sys.argv[1:]}}
    t0 = pc()
    for part, fn in (("catchup", part_catchup), ("sequence", part_sequence),
                     ("failover", part_failover)):
        if part in args.parts:
            progress(f"=== {part}")
            res[part] = await fn(args, base)
    res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["meta"]["total_s"] = round(pc() - t0, 1)
    return res


def render(res: dict) -> str:
    m = res["meta"]
    out = [f"Python {m['python']}, {m['cpus']} CPUs, core {m['core']}, load average "
           f"{m['loadavg_start'][0]} at the start, {m['loadavg_end'][0]} at the end; "
           f"tuning {m['tuning']}; {m['total_s']} s in all.", ""]
    for part, fn in (("catchup", render_catchup), ("sequence", render_sequence),
                     ("failover", render_failover)):
        if part in res:
            out += [fn(res[part]), ""]
    return "\n".join(out)


def add_run_options(ap, where: str = "the cluster lives", keep: str = "the data and logs",
                    json_file: bool = True) -> None:
    """The options ``run_script`` reads: ``--dir``, ``--keep`` and (unless the script names
    the file itself) ``--json``."""
    ap.add_argument("--dir", default=None, help=f"where {where} (default: a temporary "
                    f"directory, deleted unless --keep or the run fails)")
    ap.add_argument("--keep", action="store_true", help=f"keep {keep}")
    if json_file:
        ap.add_argument("--json", metavar="FILE", default=None,
                        help="also write the results")


def run_script(name: str, args, run_fn, render_fn) -> int:
    """The main of a cluster bench script (this one, ``tls_bench.py``): run
    ``run_fn(args, base, loop_name)`` in an event loop in a work directory (``--dir``, else a
    temporary one, deleted after a success unless ``--keep``), print ``render_fn(results)``,
    write ``--json``; exit 1 with the directory kept when it fails."""
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix=f"{name}-"))
    base.mkdir(parents=True, exist_ok=True)
    factory, loop_name = pick_loop("auto")
    failed = True
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            res = runner.run(run_fn(args, base, loop_name))
        failed = False
    except (BenchFailed, FastraftError, OSError) as exc:
        print(f"{name}: FAILED: {type(exc).__name__}: {exc}\n(files kept in {base})",
              file=sys.stderr)
        return 1
    finally:
        if not failed and not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(render_fn(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


def main(argv=None) -> int:
    return run_script("membership_bench", parse_args(argv),
                      lambda args, base, _loop: run(args, base), render)


if __name__ == "__main__":
    sys.exit(main())
