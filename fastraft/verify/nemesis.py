"""A verification run: real nodes behind fault proxies, a register workload, a nemesis, a verdict.

Place in the architecture: the top of the verification framework (``fastraft.verify``),
driven by ``python -m fastraft.verify`` and by the short scenarios in the test suite. It starts
node processes with the very command a user runs (``python -m fastraft node ...``), reaches
them through ``fastraft.client.AsyncClient``, disturbs them with the proxies of ``proxy.py``
and with signals, records a history (``history.py``) and judges it (``checker.py``). It reads
and writes the cluster configuration (``fastraft.config``) and never imports the server.

One asyncio loop runs everything: the proxies, the workers, the nemesis. A run::

    allocate ports; start one proxy per node; write cluster.toml (raft = the proxy's address,
        raft_listen = the node's private one); start the nodes; wait for a leader
    for --duration seconds:
        workers: read (linearizable), stale_read, write (unique values), cas, on few keys;
                 each op recorded as invoke then ok / fail (NotApplied) / info (OutcomeUnknown
                 or anything else; the worker then continues as a fresh process id)
        nemesis: quiet for a while, then one fault for a while, then heal, again and again
    heal everything (resume, restart, reconnect), keep the workload going for --recover
    seconds (the cluster must serve again), stop; check; write summary.json and summary.txt

Faults (``--nemesis`` picks the kinds; the targets are drawn from the seeded RNG, the leader
as often as not):

- ``partition``: isolate a node (often the leader), a majority/minority split, a bridge (one
  node sees both halves), or a one-way cut from the leader; "block" or "blackhole".
- ``kill``: SIGKILL a minority of nodes (often the leader); restarted at the heal.
- ``pause``: SIGSTOP a node (often the leader) for longer than an election timeout; SIGCONT at
  the heal (the stale-leader case).
- ``degrade``: every peer link drops a fraction of its frames (5-30 %) and delays the rest
  (2-50 ms with jitter, in order).

Output directory: ``cluster.toml``, ``node<i>.log``, ``data/``, ``history.jsonl`` (see
history.py), ``nemesis.jsonl`` (one line per fault start and heal, on the history's clock),
``summary.json`` and ``summary.txt`` (the verdict, the counts, the checker's report).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Config, NodeSpec, Tuning, format_address, render_config
from ..errors import FastraftError, NotApplied
from .checker import OK, UNKNOWN, VIOLATION, check, check_stale_reads
from .history import HistoryWriter, read_history, to_operations
from .proxy import BLACKHOLE, BLOCK, Proxies

__all__ = ["RunOptions", "RunResult", "NodeProcs", "RegisterWorkload", "Nemesis", "run",
           "run_sync", "FAULT_KINDS"]

FAULT_KINDS = ("partition", "kill", "pause", "degrade")
_PR_SET_PDEATHSIG = 1


@dataclass
class RunOptions:
    """What a run does. Times in seconds."""

    out: str
    nodes: int = 3
    duration: float = 30.0
    nemesis: tuple = FAULT_KINDS
    seed: int | None = None
    workers: int = 6
    keys: int = 3
    quiet: tuple = (1.0, 3.0)          # healthy period between faults (uniform range)
    fault: tuple = (1.0, 4.0)          # how long a fault lasts (uniform range)
    recover: float = 5.0               # workload time after the final heal
    op_timeout: float = 1.0            # per request
    op_deadline: float = 3.0           # per operation, retries included
    check_budget: float = 60.0
    tuning: dict = field(default_factory=lambda: {"tick_ms": 10, "heartbeat_ms": 30,
                                                  "election_timeout_ms": 300})
    storage: str = "wal"
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1 << 32)
        unknown = set(self.nemesis) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown nemesis kinds {sorted(unknown)} "
                             f"(known: {', '.join(FAULT_KINDS)})")
        if self.nodes < 1 or self.workers < 1 or self.keys < 1 or self.duration <= 0:
            raise ValueError("nodes, workers, keys and duration must be positive")


@dataclass
class RunResult:
    verdict: str                       # ok | violation | unknown
    seed: int
    out: str
    operations: dict
    faults: dict
    linearizability: str
    stale_reads: str
    history: str
    nemesis_log: str
    summary_path: str

    def text(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in self.operations.items())
        faults = ", ".join(f"{k} {v}" for k, v in self.faults.items()) or "none"
        return "\n".join([
            f"verdict: {self.verdict.upper()}   (seed {self.seed})",
            f"operations: {ops}",
            f"faults injected: {faults}",
            self.linearizability,
            self.stale_reads,
            f"history: {self.history}",
            f"nemesis log: {self.nemesis_log}",
            f"summary: {self.summary_path}",
        ])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class NodeProcs:
    """The node processes of a run: ``python -m fastraft node --id N --config F --data-dir D``
    with output in ``<base>/node<N>.log``; signals only (SIGKILL, SIGSTOP, SIGCONT)."""

    def __init__(self, base: Path, config_path: str, data_dir: str, ids) -> None:
        self.base = base
        self.config_path = config_path
        self.data_dir = data_dir
        self.ids = sorted(ids)
        self.procs: dict[int, subprocess.Popen | None] = {i: None for i in self.ids}
        self.paused: set[int] = set()

    def start(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            return
        argv = [sys.executable, "-m", "fastraft", "node", "--id", str(i), "--config",
                self.config_path, "--data-dir", self.data_dir]
        with open(self.base / f"node{i}.log", "ab") as log:
            log.write(f"=== verify: starting node {i} at {time.time():.3f}\n".encode())
            log.flush()
            self.procs[i] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.base,
                preexec_fn=_child_setup if sys.platform.startswith("linux") else None)
        self.paused.discard(i)

    def running(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is None:
            return
        if p.poll() is None:
            p.kill()
        p.wait()
        self.procs[i] = None
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        if self.running(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        if self.running(i) and i in self.paused:
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def close(self) -> None:
        for i in self.ids:
            try:
                self.kill(i)
            except Exception:  # pragma: no cover - keep killing the others
                pass


async def cluster_status(client) -> dict[int, dict]:
    """``{node id: status}`` of the nodes that answer."""
    out = {}
    for st in await client.status():
        if st.get("reachable"):
            out[st["id"]] = st
    return out


async def current_leader(client) -> int | None:
    st = await cluster_status(client)
    if not st:
        return None
    top = max(s["term"] for s in st.values())
    leaders = [i for i, s in st.items() if s["role"] == "leader" and s["term"] == top]
    return leaders[0] if len(leaders) == 1 else None


class RegisterWorkload:
    """``workers`` concurrent clients doing reads, stale reads, writes of unique values and
    cas on ``keys`` keys, recording everything in ``history``. One AsyncClient per worker."""

    def __init__(self, endpoints, history: HistoryWriter, rng: random.Random, workers: int,
                 keys: int, op_timeout: float, op_deadline: float) -> None:
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.workers = workers
        self.keys = [f"k{i}".encode() for i in range(keys)]
        self.op_timeout = op_timeout
        self.op_deadline = op_deadline
        self._pids = itertools.count(1)
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    async def run(self, stop: asyncio.Event) -> None:
        from ..client import AsyncClient

        async def worker(w: int, rng: random.Random) -> None:
            client = AsyncClient(self.endpoints, timeout=self.op_timeout,
                                 deadline=self.op_deadline)
            pid = next(self._pids)
            seen: dict = {}
            n = 0
            try:
                while not stop.is_set():
                    key = rng.choice(self.keys)
                    r = rng.random()
                    n += 1
                    unique = f"{w}.{n}".encode()
                    if r < 0.35:
                        f, arg, call = "read", None, client.get(key)
                    elif r < 0.45:
                        f, arg, call = "stale_read", None, client.get(key, stale=True)
                    elif r < 0.8:
                        f, arg, call = "write", unique, client.put(key, unique)
                    else:
                        exp = seen.get(key)
                        f, arg, call = "cas", (exp, unique), client.cas(key, exp, unique)
                    self.history.invoke(pid, f, key, arg)
                    try:
                        res = await call
                    except NotApplied:
                        self.history.fail(pid)
                        self.counts["fail"] += 1
                        continue
                    except (FastraftError, OSError, asyncio.TimeoutError) as exc:
                        self.history.info(pid, type(exc).__name__)
                        self.counts["info"] += 1
                        pid = next(self._pids)     # the old op may still be in flight
                        continue
                    self.history.ok(pid, res)
                    self.counts["ok"] += 1
                    if f in ("read", "stale_read"):
                        seen[key] = res
                    elif f == "write" or (f == "cas" and res):
                        seen[key] = unique
            except asyncio.CancelledError:
                if pid in self.history.in_flight:
                    self.history.info(pid, "cancelled")
                raise
            finally:
                await client.close()

        await asyncio.gather(*(worker(w, random.Random(self.rng.random()))
                               for w in range(self.workers)))


class Nemesis:
    """The fault schedule: quiet, fault, heal, again, drawn from a seeded RNG. Every start
    and heal is appended to ``log`` (dicts) with the history's clock."""

    def __init__(self, kinds, procs: NodeProcs, proxies: Proxies, status_client,
                 history: HistoryWriter, rng: random.Random, quiet=(1.0, 3.0),
                 fault=(1.0, 4.0), election_timeout: float = 0.3) -> None:
        self.kinds = list(kinds)
        self.procs = procs
        self.proxies = proxies
        self.status_client = status_client
        self.history = history
        self.rng = rng
        self.quiet = quiet
        self.fault = fault
        self.election_timeout = election_timeout
        self.log: list[dict] = []
        self.counts: dict[str, int] = {}
        self._killed: set[int] = set()

    def _record(self, action: str, kind: str, detail: str, **extra) -> None:
        ev = {"time": round(self.history.now(), 6), "action": action, "fault": kind,
              "detail": detail, **extra}
        self.log.append(ev)

    async def _target(self, prefer_leader: bool = True) -> int:
        ids = [i for i in self.procs.ids if self.procs.running(i) and i not in self.procs.paused]
        if prefer_leader and self.rng.random() < 0.5:
            try:
                lead = await asyncio.wait_for(current_leader(self.status_client), 2.0)
            except (asyncio.TimeoutError, FastraftError, OSError):
                lead = None
            if lead is not None and lead in ids:
                return lead
        return self.rng.choice(ids or self.procs.ids)

    async def start_fault(self, kind: str) -> str:
        ids = self.procs.ids
        n = len(ids)
        if kind == "partition":
            mode = BLOCK if self.rng.random() < 0.7 else BLACKHOLE
            shape = self.rng.choice(["isolate", "split", "bridge", "one_way"] if n >= 3
                                    else ["isolate", "one_way"])
            t = await self._target()
            if shape == "isolate":
                self.proxies.isolate(t, mode)
                return f"isolate {t} ({mode})"
            if shape == "split":
                shuffled = ids[:]
                self.rng.shuffle(shuffled)
                minority = shuffled[: (n - 1) // 2]
                self.proxies.partition([minority, shuffled[len(minority):]], mode)
                return f"split {sorted(minority)} | {sorted(shuffled[len(minority):])} ({mode})"
            if shape == "bridge":
                others = [i for i in ids if i != t]
                self.rng.shuffle(others)
                half = len(others) // 2
                self.proxies.bridge(others[:half], others[half:], via=t, mode=mode)
                return f"bridge {sorted(others[:half])} <-{t}-> {sorted(others[half:])} ({mode})"
            other = self.rng.choice([i for i in ids if i != t])
            self.proxies.one_way(t, other, mode)
            return f"one-way {t} -> {other} ({mode})"
        if kind == "kill":
            k = self.rng.randint(1, max(1, (n - 1) // 2))
            first = await self._target()
            victims = [first] + self.rng.sample([i for i in ids if i != first], k - 1)
            for v in victims:
                self.procs.kill(v)
                self._killed.add(v)
            return f"kill -9 {sorted(victims)}"
        if kind == "pause":
            t = await self._target()
            self.procs.pause(t)
            return f"pause {t}"
        if kind == "degrade":
            drop = round(self.rng.uniform(0.05, 0.3), 3)
            delay = round(self.rng.uniform(0.002, 0.05), 4)
            jitter = round(self.rng.uniform(0, delay), 4)
            self.proxies.degrade(drop=drop, delay=delay, jitter=jitter)
            return (f"degrade every link: drop {drop:.0%}, delay {delay * 1000:.0f}"
                    f"±{jitter * 1000:.0f} ms")
        raise ValueError(kind)

    def heal(self) -> None:
        """Undo every fault: heal the links, resume paused nodes, restart killed ones."""
        self.proxies.heal()
        for i in list(self.procs.paused):
            self.procs.resume(i)
        for i in sorted(self._killed):
            self.procs.start(i)
        self._killed.clear()

    async def run(self, stop: asyncio.Event) -> None:
        async def pause_for(rng_range) -> bool:
            lo, hi = rng_range
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(lo, hi))
                return True
            except asyncio.TimeoutError:
                return False

        while not stop.is_set():
            if await pause_for(self.quiet):
                break
            kind = self.rng.choice(self.kinds)
            lo, hi = self.fault
            if kind == "pause":
                lo = max(lo, 2 * self.election_timeout)   # longer than an election timeout
                hi = max(hi, lo)
            detail = await self.start_fault(kind)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self._record("start", kind, detail)
            await pause_for((lo, hi))
            self.heal()
            self._record("heal", kind, detail)


def _write_config(out: Path, opts: RunOptions, proxy_addrs: dict, private: dict,
                  clients: dict) -> tuple[Config, str]:
    specs = tuple(NodeSpec(i, proxy_addrs[i], clients[i], raft_listen=private[i])
                  for i in sorted(proxy_addrs))
    tuning = dict(opts.tuning)
    tuning["storage"] = opts.storage
    cfg = Config(f"verify-{opts.seed}", specs, Tuning(**tuning), data_dir=str(out / "data"))
    path = out / "cluster.toml"
    path.write_text(render_config(cfg))
    return cfg, str(path)


async def run(opts: RunOptions, progress=None) -> RunResult:
    """One verification run (see the module docstring). ``progress(str)`` gets a line now
    and then (None: silent)."""
    from ..client import AsyncClient

    say = progress or (lambda s: None)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(opts.seed)
    ids = list(range(1, opts.nodes + 1))
    private = {i: ("127.0.0.1", _free_port()) for i in ids}
    clients = {i: ("127.0.0.1", _free_port()) for i in ids}
    proxies = Proxies({i: (("127.0.0.1", 0), private[i]) for i in ids}, seed=opts.seed)
    await proxies.astart()
    procs = None
    status_client = None
    history = None
    try:
        cfg, cfg_path = _write_config(out, opts, {i: proxies.address(i) for i in ids},
                                      private, clients)
        procs = NodeProcs(out, cfg_path, cfg.data_dir, ids)
        for i in ids:
            procs.start(i)
        endpoints = [format_address(clients[i]) for i in ids]
        status_client = AsyncClient(endpoints, timeout=0.5, deadline=1.0)
        deadline = time.monotonic() + opts.start_timeout
        while await current_leader(status_client) is None:
            for i in ids:
                if procs.procs[i].poll() is not None:
                    raise RuntimeError(f"node {i} exited with code {procs.procs[i].returncode}"
                                       f" while starting; see {out / f'node{i}.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no leader within {opts.start_timeout:g} s; see the logs "
                                   f"in {out}")
            await asyncio.sleep(0.1)
        say(f"cluster of {opts.nodes} up; running the workload for {opts.duration:g} s "
            f"(seed {opts.seed}, nemesis {','.join(opts.nemesis) or 'none'})")
        hist_path = out / "history.jsonl"
        history = HistoryWriter(hist_path, keep=False)
        workload = RegisterWorkload(endpoints, history, random.Random(rng.random()),
                                    opts.workers, opts.keys, opts.op_timeout, opts.op_deadline)
        nemesis = Nemesis(opts.nemesis, procs, proxies, status_client, history,
                          random.Random(rng.random()), opts.quiet, opts.fault,
                          cfg.tuning.election_timeout_ms / 1000)
        stop_work = asyncio.Event()
        stop_faults = asyncio.Event()
        work = asyncio.ensure_future(workload.run(stop_work))
        faults = asyncio.ensure_future(nemesis.run(stop_faults)) if opts.nemesis else None
        try:
            await asyncio.wait_for(asyncio.shield(work), opts.duration)
        except asyncio.TimeoutError:
            pass
        stop_faults.set()
        if faults is not None:
            await faults
        nemesis.heal()
        nemesis._record("heal", "final", "heal everything")
        say(f"final heal; {opts.recover:g} s of recovery")
        try:
            await asyncio.wait_for(asyncio.shield(work), opts.recover)
        except asyncio.TimeoutError:
            pass
        stop_work.set()
        try:
            await asyncio.wait_for(work, opts.op_deadline * 3 + 5)
        except asyncio.TimeoutError:
            pass
        history.close()
        nemesis_path = out / "nemesis.jsonl"
        nemesis_path.write_text("".join(json.dumps(e) + "\n" for e in nemesis.log))
    finally:
        if status_client is not None:
            await status_client.close()
        if history is not None:
            history.close()
        if procs is not None:
            procs.close()
        await proxies.aclose()

    say("checking the history")
    ops = to_operations(read_history(hist_path))
    lin = check(ops.linearizable, budget=opts.check_budget)
    stale = check_stale_reads(ops.stale_reads, ops.linearizable, monotonic=False)
    verdict = lin.verdict
    if verdict == OK and not stale.ok:
        verdict = VIOLATION
    elif verdict == UNKNOWN and not stale.ok:
        verdict = VIOLATION
    counts = {"invoked": len(ops.linearizable) + len(ops.stale_reads), **workload.counts,
              "checked": lin.operations, "stale_reads": stale.reads}
    summary_path = out / "summary.json"
    result = RunResult(verdict, opts.seed, str(out), counts, dict(nemesis.counts),
                       lin.summary(), stale.summary(), str(hist_path), str(nemesis_path),
                       str(summary_path))
    summary = asdict(result)
    summary["options"] = {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in asdict(opts).items()}
    summary["proxy_stats"] = {f"{a}->{b}": v for (a, b), v in proxies.stats().items()}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(result.text() + "\n")
    return result


def run_sync(opts: RunOptions, progress=None) -> RunResult:
    """``run`` on a fresh event loop (uvloop is not used: the proxies' timing is what the
    standard loop gives)."""
    return asyncio.run(run(opts, progress))


if os.name != "posix":  # pragma: no cover
    raise ImportError("fastraft.verify.nemesis needs POSIX signals (SIGSTOP/SIGCONT)")
