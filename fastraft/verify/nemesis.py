"""A verification run: real nodes behind fault proxies, workloads, a nemesis, a verdict.

Place in the architecture: the top of the verification framework (``fastraft.verify``),
driven by ``python -m fastraft.verify`` and by the short scenarios in the test suite. It starts
node processes with the very command a user runs (``python -m fastraft node ...``), reaches
them through ``fastraft.client.AsyncClient``, disturbs them with the proxies of ``proxy.py``
and with signals, records a history (``history.py``) and judges it (``linearizability.py``). It reads
and writes the cluster configuration (``fastraft.config``) and never imports the server.

One asyncio loop runs everything: the proxies, the workers, the nemesis. A run::

    allocate ports; start one proxy per node; write cluster.toml (raft = the proxy's address,
        raft_listen = the node's private one); start the nodes; wait for a leader
    for --duration seconds:
        workers (--workload): register: read (linearizable), stale_read, write (unique
                 values), cas, on few keys; set: inserts of fresh keys; session: cas-loop
                 increments and appends (workloads.py); each op recorded as invoke then ok /
                 fail (NotApplied) / info (OutcomeUnknown or anything else; the worker then
                 continues as a fresh process id)
        nemesis: quiet for a while, then one fault for a while, then heal, again and again
    heal everything (resume, restart, reconnect), keep the workload going for --recover
    seconds (the cluster must serve again), stop
    set / session: kill -9 EVERY node, restart them all, read the final state linearizably
    check: linearizability (register), lost inserts (set), exactly-once (session), node
        anomalies (a node exiting on its own, against its contract); write summary.json,
        summary.txt and latency.png (plot.py, with matplotlib)

Faults (``--nemesis`` picks the kinds; the schedule is planned before the run by
``schedule.plan_faults``: every kind once per round in a seeded shuffled order, the first
round squeezed into ``--duration`` when it allows, and the kinds that do not fit skipped with
the reason, which the summary reports; the targets are drawn from the seeded RNG, the leader
as often as not):

- ``partition``: isolate a node (often the leader), a majority/minority split, a bridge (one
  node sees both halves), or a one-way cut from the leader; "block" or "blackhole".
- ``kill``: SIGKILL a minority of nodes (often the leader); restarted at the heal.
- ``pause``: SIGSTOP a node (often the leader) for longer than an election timeout; SIGCONT at
  the heal (the stale-leader case).
- ``degrade``: every peer link drops a fraction of its frames (5-30 %) and delays the rest
  (2-50 ms with jitter, in order).
- ``wipe``: kill -9 a follower, delete its data directory, restart it with ``--rejoin``; with
  the run's low ``snapshot_threshold`` it must come back through a snapshot (counted as
  ``wipe_via_snapshot`` when its log says so).
- ``transfer``: SIGTERM the leader: it must hand leadership over and exit 0 within 10 s;
  restarted at the heal.
- ``disk``: either a torn tail (kill -9, append to the newest WAL segment what a crash in
  mid-write leaves: a prefix of a record, a few random bytes, or zeros; restart: it must start
  and cut them) or a write error (restart under RLIMIT_FSIZE a little past the newest
  segment: it must exit 3, or still be running; restarted normally at the heal).

A node exiting when no fault asked it to (or with the wrong code) is a node anomaly: recorded
with the tail of its log and restarted (left down after its third failure).

Output directory: ``cluster.toml``, ``node<i>.log``, ``data/``, ``history.jsonl`` (see
history.py), ``nemesis.jsonl`` (one line per fault start and heal, on the history's clock,
and a "skip" line per kind left out of the plan), ``summary.json`` and ``summary.txt`` (the
verdict and each check's, the counts per workload with the reasons of the failed and unknown
ones, the faults per kind, which kinds ran and which were skipped and why, each kind's
outcome, the anomalies, the checker's report; see report.py), ``latency.png``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Config, NodeSpec, Tuning, format_address, render_config
from ..errors import FastraftError, NotApplied
from ..processes import free_port, kill, node_argv, spawn
from .linearizability import OK, UNKNOWN, VIOLATION, check, check_stale_reads
from .history import HistoryWriter, read_history, to_operations
from .proxy import BLACKHOLE, BLOCK, Proxies
from .report import fault_coverage, summary_text
from .schedule import FAULT_KINDS, plan_faults

__all__ = ["RunOptions", "RunResult", "NodeProcs", "RegisterWorkload", "Nemesis", "run",
           "run_sync", "FAULT_KINDS", "WORKLOADS"]

WORKLOADS = ("register", "set", "session")
_CUT_SHORT_SLACK = 0.25   # a fault healed this much before its planned end is "cut short"


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
                                                  "election_timeout_ms": 300,
                                                  "snapshot_threshold": 2000,
                                                  "snapshot_keep_entries": 200,
                                                  "segment_size": 1 << 20})
    storage: str = "wal"
    start_timeout: float = 30.0
    workloads: tuple = WORKLOADS
    set_workers: int = 2
    session_workers: int = 3
    plot: bool = True

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1 << 32)
        unknown = set(self.nemesis) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown nemesis kinds {sorted(unknown)} "
                             f"(known: {', '.join(FAULT_KINDS)})")
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown or not self.workloads:
            raise ValueError(f"unknown or no workloads {sorted(unknown)} "
                             f"(known: {', '.join(WORKLOADS)})")
        if self.nodes < 1 or self.workers < 1 or self.keys < 1 or self.duration <= 0:
            raise ValueError("nodes, workers, keys and duration must be positive")
        if self.set_workers < 1 or self.session_workers < 1:
            raise ValueError("set and session workers must be positive")


@dataclass
class RunResult:
    verdict: str                       # ok | violation | unknown
    seed: int
    out: str
    operations: dict                   # workload -> counts
    faults: dict                       # kind -> how many injected
    linearizability: str
    stale_reads: str
    history: str
    nemesis_log: str
    summary_path: str
    verdicts: dict = field(default_factory=dict)    # check -> ok | violation | unknown
    set_result: str = ""
    session_result: str = ""
    anomalies: list = field(default_factory=list)   # node behaviour against its contract
    notes: list = field(default_factory=list)
    fault_outcomes: dict = field(default_factory=dict)

    fault_coverage: dict = field(default_factory=dict)   # see report.fault_coverage

    def text(self) -> str:
        """The summary a human reads (``summary.txt``): every count with its meaning."""
        return summary_text(self)


class NodeProcs:
    """The node processes of a run: ``python -P -m fastraft node --id N --config F --data-dir
    D`` (``processes.node_argv``) with output in ``<base>/node<N>.log``, each in its own
    process group and SIGKILLed if the run dies; driven by signals only (SIGTERM, SIGKILL,
    SIGSTOP, SIGCONT)."""

    def __init__(self, base: Path, config_path: str, data_dir: str, ids) -> None:
        self.base = base
        self.config_path = config_path
        self.data_dir = data_dir
        self.ids = sorted(ids)
        self.procs: dict[int, subprocess.Popen | None] = {i: None for i in self.ids}
        self.paused: set[int] = set()

    def start(self, i: int, rejoin: bool = False, fsize_limit: int | None = None,
              log_name: str | None = None) -> None:
        """Start node ``i`` (no-op if running). ``rejoin``: with ``--rejoin`` (its data was
        wiped). ``fsize_limit``: under RLIMIT_FSIZE (writes past it fail with EFBIG; Python
        ignores SIGXFSZ). ``log_name``: output to that file instead of ``node<i>.log``."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            return
        argv = node_argv(i, self.config_path, self.data_dir, *(["--rejoin"] if rejoin else []))
        with open(self.base / (log_name or f"node{i}.log"), "ab") as log:
            log.write(f"=== verify: starting node {i} at {time.time():.3f}"
                      f"{' --rejoin' if rejoin else ''}"
                      f"{f' under RLIMIT_FSIZE={fsize_limit}' if fsize_limit else ''}\n"
                      .encode())
            log.flush()
            self.procs[i] = spawn(argv, stdout=log, cwd=self.base, death_signal=signal.SIGKILL,
                                  fsize_limit=fsize_limit)
        self.paused.discard(i)

    def exited(self, i: int) -> int | None:
        """The exit code of node ``i``'s process if it ended on its own (None: running or
        never started / killed by the harness)."""
        p = self.procs[i]
        return None if p is None else p.poll()

    def terminate(self, i: int) -> None:
        """SIGTERM node ``i`` if it is running (a leadership transfer, then exit 0)."""
        if self.running(i):
            self.procs[i].send_signal(signal.SIGTERM)

    def running(self, i: int) -> bool:
        """Whether node ``i``'s process is alive (paused counts as alive)."""
        p = self.procs[i]
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (if started) and reap it: it is then not running."""
        p = self.procs[i]
        if p is None:
            return
        kill(p)
        self.procs[i] = None
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i`` if it is running."""
        if self.running(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT node ``i`` if it was paused."""
        if self.running(i) and i in self.paused:
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def close(self) -> None:
        """SIGKILL every node (the end of the run)."""
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
        self.reasons: dict = {"fail": {}, "info": {}}    # status -> recorded value -> n

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
                    except NotApplied as exc:
                        self._count("fail", type(exc).__name__)
                        self.history.fail(pid, type(exc).__name__)
                        continue
                    except (FastraftError, OSError, asyncio.TimeoutError) as exc:
                        self._count("info", type(exc).__name__)
                        self.history.info(pid, type(exc).__name__)
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
                    self._count("info", "cancelled")
                    self.history.info(pid, "cancelled")
                raise
            finally:
                await client.close()

        await asyncio.gather(*(worker(w, random.Random(self.rng.random()))
                               for w in range(self.workers)))

    def _count(self, status: str, reason: str) -> None:
        self.counts[status] += 1
        self.reasons[status][reason] = self.reasons[status].get(reason, 0) + 1


class Nemesis:
    """The faults: quiet, fault, heal, again, following ``plan`` (``schedule.plan_faults`` for
    ``duration`` seconds, seeded from ``rng``). Every start and heal is appended to ``log``
    (dicts) with the history's clock; ``counts`` (kind -> faults started), ``cut_short``
    (kind -> faults the end of the run healed early)."""

    def __init__(self, kinds, procs: NodeProcs, proxies: Proxies, status_client,
                 history: HistoryWriter, rng: random.Random, quiet=(1.0, 3.0),
                 fault=(1.0, 4.0), election_timeout: float = 0.3, node_dir=None,
                 storage: str = "wal", log_path=None, duration: float = 60.0) -> None:
        self.kinds = list(kinds)
        self.plan = plan_faults(self.kinds, duration, quiet, fault, election_timeout,
                                seed=rng.random())
        self.cut_short: dict[str, int] = {}
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
        self.node_dir = node_dir or (lambda i: str(procs.base / "data" / str(i)))
        self.storage = storage
        self.log_path = log_path
        self.anomalies: list[str] = []
        self.stats: dict[str, int] = {}     # outcomes of the process/disk faults
        self._limited: int | None = None    # node running under RLIMIT_FSIZE
        self._rejoined: dict[int, int] = {}  # wiped node -> its log size at the restart
        self._torn: dict[int, int] = {}      # node with a torn tail -> log size at restart
        self._crashes: dict[int, int] = {}
        self._torn_seg: dict[int, Path | None] = {}
        self.left_down: set[int] = set()     # nodes that kept failing: no longer restarted

    def _stat(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _anomaly(self, text: str) -> None:
        self.anomalies.append(f"t={self.history.now():.2f} {text}")
        self._record("anomaly", "node", text)

    def _log_size(self, i: int) -> int:
        try:
            return (self.procs.base / f"node{i}.log").stat().st_size
        except OSError:
            return 0

    def _log_since(self, i: int, offset: int) -> str:
        try:
            with open(self.procs.base / f"node{i}.log", "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_crashes(self) -> None:
        """A node that exited on its own (not the one under RLIMIT_FSIZE) is an anomaly: it is
        recorded with its exit code and the tail of its log, and restarted."""
        for i in self.procs.ids:
            if i == self._limited or i in self.left_down:
                continue
            rc = self.procs.exited(i)
            if rc is not None:
                tail = self._log_since(i, max(0, self._log_size(i) - 600)).strip()
                tail = tail.replace("\n", " | ")[-400:]
                self._crashes[i] = self._crashes.get(i, 0) + 1
                self.procs.procs[i] = None
                if self._crashes[i] >= 3:
                    self.left_down.add(i)
                    self._anomaly(f"node {i} exited with code {rc} on its own (3rd time): left "
                                  f"down; log tail: {tail}")
                    continue
                self._anomaly(f"node {i} exited with code {rc} on its own; log tail: {tail}")
                self.procs.start(i)

    async def _leader(self) -> int | None:
        try:
            return await asyncio.wait_for(current_leader(self.status_client), 2.0)
        except (asyncio.TimeoutError, FastraftError, OSError):
            return None

    def _torn_tail(self, data: bytes) -> tuple[bytes, str]:
        """Bytes a crash in mid-write could leave after the last record: a strict prefix
        of a real record (its header intact, the payload cut), fewer random bytes than a
        record header, or a zero-filled extension. (Random bytes as long as a header fail
        its checksum: the WAL calls that damage, not a torn write, and refuses to start.)"""
        from ..core import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_records

        shape = self.rng.choice(["prefix", "short", "zeros"])
        if shape == "prefix" and len(data) > SEGMENT_HEADER_SIZE:
            recs, end, _, _ = decode_records(data, SEGMENT_HEADER_SIZE)
            if recs and recs[-1][3]:
                size = RECORD_HEADER_SIZE + len(recs[-1][3])
                rec = data[end - size:end]
                cut = self.rng.randint(RECORD_HEADER_SIZE + 1, size - 1) \
                    if size - 1 > RECORD_HEADER_SIZE else RECORD_HEADER_SIZE - 1
                return rec[:cut], f"a {cut}-byte prefix of a {size}-byte record"
            shape = "short"
        if shape == "short":
            n = self.rng.randint(1, RECORD_HEADER_SIZE - 1)
            return bytes(self.rng.randrange(256) for _ in range(n)), f"{n} random bytes"
        n = self.rng.choice([512, 4096, 8192])
        return bytes(n), f"{n} zero bytes"

    @staticmethod
    def _segment_damage(seg: Path | None) -> str | None:
        """None if ``seg`` (a WAL segment the node has written on since) decodes cleanly or
        with a torn end (a write in flight); else the reason (the junk was not cut)."""
        from ..core import (DEFAULT_MAX_RECORD_SIZE, SEGMENT_HEADER_SIZE, WAL_CORRUPT,
                           decode_records)

        try:
            data = seg.read_bytes() if seg is not None else b""
        except OSError:
            return None          # compacted away since
        if len(data) <= SEGMENT_HEADER_SIZE:
            return None
        _, _, status, reason = decode_records(data, SEGMENT_HEADER_SIZE, DEFAULT_MAX_RECORD_SIZE)
        return f"{seg.name}: {reason}" if status == WAL_CORRUPT else None

    def _newest_segment(self, i: int) -> Path | None:
        segs = sorted((Path(self.node_dir(i)) / "wal").glob("wal-*.log"))
        return segs[-1] if segs else None

    def _record(self, action: str, kind: str, detail: str, **extra) -> None:
        ev = {"time": round(self.history.now(), 6), "action": action, "fault": kind,
              "detail": detail, **extra}
        self.log.append(ev)
        if self.log_path is not None:       # followable during a long run
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(ev) + "\n")

    async def _target(self, prefer_leader: bool = True) -> int:
        ids = [i for i in self.procs.ids if self.procs.running(i) and i not in self.procs.paused
               and i not in self.left_down]
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
        if kind == "wipe":
            lead = await self._leader()
            cands = [i for i in ids if i != lead and i not in self.procs.paused]
            t = self.rng.choice(cands or ids)
            self.procs.kill(t)
            import shutil

            shutil.rmtree(self.node_dir(t), ignore_errors=True)
            self._rejoined[t] = self._log_size(t)
            self.procs.start(t, rejoin=True)
            return f"wipe {t} (leader {lead}): kill -9, data deleted, restarted with --rejoin"
        if kind == "transfer":
            lead = await self._leader()
            if lead is None:
                self._stat("transfer_no_leader")
                return "transfer: no leader known; nothing done"
            self.procs.terminate(lead)
            loop = asyncio.get_running_loop()
            end = loop.time() + 10.0
            while self.procs.running(lead) and loop.time() < end:
                await asyncio.sleep(0.02)
            rc = self.procs.exited(lead)
            if rc is None:
                self._anomaly(f"leader {lead} did not stop within 10 s of SIGTERM; kill -9")
            elif rc != 0:
                self._anomaly(f"leader {lead} exited with code {rc} after SIGTERM (not 0)")
            else:
                self._stat("transfer_clean_exit")
            self.procs.kill(lead)
            self._killed.add(lead)
            new = await self._leader()
            return f"transfer: SIGTERM leader {lead} (exit {rc}); leader now {new}"
        if kind == "disk":
            t = await self._target()
            if self.storage != "wal" or self.rng.random() < 0.5:
                # an injected write error: restart under RLIMIT_FSIZE a little past the
                # newest segment's size, so one of the next writes fails with EFBIG
                self.procs.kill(t)
                seg = self._newest_segment(t)
                size = seg.stat().st_size if seg is not None else 0
                limit = size + self.rng.randint(4 << 10, 32 << 10)
                self._limited = t
                self.procs.start(t, fsize_limit=limit, log_name=f"node{t}.efbig.log")
                return (f"disk write error: node {t} restarted under RLIMIT_FSIZE={limit} "
                        f"(newest segment {seg.name if seg else '-'} at {size} bytes)")
            self.procs.kill(t)
            seg = self._newest_segment(t)
            how = "(no segment)"
            if seg is not None:
                junk, how = self._torn_tail(seg.read_bytes())
                with open(seg, "ab") as f:
                    f.write(junk)
            self._torn[t] = self._log_size(t)
            self._torn_seg[t] = seg
            self.procs.start(t)
            return (f"disk torn record: node {t} kill -9, {how} appended to "
                    f"{seg.name if seg else '-'}, restarted")
        if kind == "degrade":
            drop = round(self.rng.uniform(0.05, 0.3), 3)
            delay = round(self.rng.uniform(0.002, 0.05), 4)
            jitter = round(self.rng.uniform(0, delay), 4)
            self.proxies.degrade(drop=drop, delay=delay, jitter=jitter)
            return (f"degrade every link: drop {drop:.0%}, delay {delay * 1000:.0f}"
                    f"±{jitter * 1000:.0f} ms")
        raise ValueError(kind)

    def heal(self) -> None:
        """Undo every fault: heal the links, resume paused nodes, restart killed ones, restart
        the node under RLIMIT_FSIZE normally (it must have exited 3 or still be running);
        note whether wiped nodes came back through a snapshot."""
        self.proxies.heal()
        for i in list(self.procs.paused):
            self.procs.resume(i)
        if self._limited is not None:
            t, self._limited = self._limited, None
            rc = self.procs.exited(t)
            if rc is None:
                self._stat("disk_error_not_reached")
            elif rc == 3:
                self._stat("disk_error_exit_3")
            else:
                self._anomaly(f"node {t} under RLIMIT_FSIZE exited with code {rc}, not 3")
            self.procs.kill(t)
            efbig = self.procs.base / f"node{t}.efbig.log"
            try:
                with open(efbig, "rb") as src, open(self.procs.base / f"node{t}.log",
                                                     "ab") as dst:
                    dst.write(src.read())
                efbig.unlink()
            except OSError:
                pass
            self.procs.start(t)
        for t, off in list(self._torn.items()):
            if self.procs.exited(t) is not None:
                self._anomaly(f"node {t} did not recover from a torn WAL tail: exit "
                              f"{self.procs.exited(t)}: "
                              + self._log_since(t, off).strip().replace("\n", " | ")[-400:])
                self._crashes[t] = self._crashes.get(t, 0) + 1
                self.procs.procs[t] = None
                if self._crashes[t] >= 3:
                    self.left_down.add(t)
                else:
                    self.procs.start(t)
            else:
                self._stat("torn_tail_recovered")
                bad = self._segment_damage(self._torn_seg.get(t))
                if bad:
                    self._anomaly(f"node {t} kept the torn tail: {bad}")
        self._torn.clear()
        self._torn_seg.clear()
        for t, off in list(self._rejoined.items()):
            text = self._log_since(t, off)
            if "installed snapshot" in text:
                self._stat("wipe_via_snapshot")
                del self._rejoined[t]
            elif self.procs.exited(t) is not None:
                self._anomaly(f"wiped node {t} exited with code {self.procs.exited(t)}")
                del self._rejoined[t]
        for i in sorted(self._killed - self.left_down):
            self.procs.start(i)
        self._killed.clear()
        self.check_crashes()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the plan until it ends or ``stop`` is set (a fault in progress then is
        healed at once: counted in ``cut_short``)."""
        async def stopped_within(seconds: float) -> bool:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
                return True
            except asyncio.TimeoutError:
                return False

        for kind, reason in self.plan.skipped.items():
            self._record("skip", kind, reason)
        for step in self.plan.steps:
            if await stopped_within(step.quiet):
                break
            self.check_crashes()
            detail = await self.start_fault(step.kind)
            self.counts[step.kind] = self.counts.get(step.kind, 0) + 1
            self._record("start", step.kind, detail)
            began = time.monotonic()
            if (await stopped_within(step.fault)
                    and time.monotonic() - began < step.fault - _CUT_SHORT_SLACK):
                self.cut_short[step.kind] = self.cut_short.get(step.kind, 0) + 1
            self.heal()
            self._record("heal", step.kind, detail)
            if stop.is_set():
                break


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


async def _wait_leader(procs, status_client, timeout: float, what: str, out: Path,
                       strict: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while await current_leader(status_client) is None:
        for i in procs.ids:
            if strict and procs.procs[i] is not None and procs.procs[i].poll() is not None:
                raise RuntimeError(f"node {i} exited with code {procs.procs[i].returncode}"
                                   f" while {what}; see {out / f'node{i}.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no leader within {timeout:g} s while {what}; see the logs "
                               f"in {out}")
        await asyncio.sleep(0.1)


async def run(opts: RunOptions, progress=None) -> RunResult:
    """One verification run (see the module docstring). ``progress(str)`` gets a line now
    and then (None: silent)."""
    from ..client import AsyncClient
    from .workloads import SessionWorkload, SetWorkload, read_final_state

    say = progress or (lambda s: None)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(opts.seed)
    ids = list(range(1, opts.nodes + 1))
    private = {i: ("127.0.0.1", free_port()) for i in ids}
    clients = {i: ("127.0.0.1", free_port()) for i in ids}
    proxies = Proxies({i: (("127.0.0.1", 0), private[i]) for i in ids}, seed=opts.seed)
    await proxies.astart()
    procs = None
    status_client = None
    history = None
    notes: list = []
    final_state = (None, None)
    try:
        cfg, cfg_path = _write_config(out, opts, {i: proxies.address(i) for i in ids},
                                      private, clients)
        procs = NodeProcs(out, cfg_path, cfg.data_dir, ids)
        for i in ids:
            procs.start(i)
        endpoints = [format_address(clients[i]) for i in ids]
        status_client = AsyncClient(endpoints, timeout=0.5, deadline=1.0)
        await _wait_leader(procs, status_client, opts.start_timeout, "starting", out)
        say(f"cluster of {opts.nodes} up; running {','.join(opts.workloads)} for "
            f"{opts.duration:g} s (seed {opts.seed}, nemesis {','.join(opts.nemesis) or 'none'})")
        hist_path = out / "history.jsonl"
        history = HistoryWriter(hist_path, keep=False)
        workload = RegisterWorkload(endpoints, history, random.Random(rng.random()),
                                    opts.workers, opts.keys, opts.op_timeout, opts.op_deadline)
        nemesis = Nemesis(opts.nemesis, procs, proxies, status_client, history,
                          random.Random(rng.random()), opts.quiet, opts.fault,
                          cfg.tuning.election_timeout_ms / 1000, node_dir=cfg.node_dir,
                          storage=opts.storage, log_path=out / "nemesis.jsonl",
                          duration=opts.duration)
        _announce(nemesis.plan, say)
        workloads = {}
        if "register" in opts.workloads:
            workloads["register"] = workload
        set_rng, session_rng = random.Random(rng.random()), random.Random(rng.random())
        if "set" in opts.workloads:
            workloads["set"] = SetWorkload(endpoints, history, set_rng, opts.set_workers,
                                           opts.op_timeout, opts.op_deadline)
        if "session" in opts.workloads:
            workloads["session"] = SessionWorkload(endpoints, history, session_rng,
                                                   opts.session_workers, opts.op_timeout,
                                                   opts.op_deadline)
        stop_work = asyncio.Event()
        stop_faults = asyncio.Event()
        work = asyncio.ensure_future(asyncio.gather(*(w.run(stop_work)
                                                      for w in workloads.values())))
        faults = asyncio.ensure_future(nemesis.run(stop_faults)) if opts.nemesis else None

        async def report() -> None:
            while True:
                await asyncio.sleep(60.0)
                done = {n: sum(w.counts.values()) for n, w in workloads.items()}
                say(f"t={history.now():.0f} s: operations {done}; faults {nemesis.counts}; "
                    f"anomalies {len(nemesis.anomalies)}")

        reporter = asyncio.ensure_future(report())
        try:
            await asyncio.wait_for(asyncio.shield(work), opts.duration)
        except asyncio.TimeoutError:
            pass
        reporter.cancel()
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
            await asyncio.wait_for(work, opts.op_deadline * 4 + 5)
        except asyncio.TimeoutError:
            pass
        nemesis.check_crashes()
        for t in nemesis._rejoined:
            nemesis._stat("wipe_snapshot_not_seen")
        if "set" in workloads or "session" in workloads:
            say("kill -9 of every node, restart, final reads")
            for i in ids:
                procs.kill(i)
            nemesis._record("start", "final", "kill -9 every node; restart")
            offsets = {i: nemesis._log_size(i) for i in ids}
            for i in ids:
                if i not in nemesis.left_down:
                    procs.start(i)
            try:
                await _wait_leader(procs, status_client, 60.0,
                                   "restarting after the final kill", out, strict=False)
            except RuntimeError as exc:
                notes.append(str(exc))
            for i in ids:
                rc = procs.exited(i)
                if rc is not None:
                    nemesis._anomaly(f"node {i} exited with code {rc} after the final restart: "
                                     + nemesis._log_since(i, offsets[i]).strip()
                                     .replace("\n", " | ")[-400:])
            pairs = to_operations(read_history(hist_path)).other
            reader = AsyncClient(endpoints, timeout=2.0, deadline=10.0)
            try:
                final_state = await read_final_state(reader, pairs)
            finally:
                await reader.close()
            nemesis._record("heal", "final", "final state read")
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

    return _judge(opts, out, workloads, final_state, nemesis, notes, hist_path, nemesis_path,
                  proxies, say)


def _judge(opts: RunOptions, out: Path, workloads: dict, final_state, nemesis: Nemesis,
           notes: list, hist_path: Path, nemesis_path: Path, proxies: Proxies,
           say) -> RunResult:
    """The end of a run: check the history and the final state, write summary.json and
    summary.txt (and latency.png)."""
    from .workloads import check_session, check_set

    say("checking the history")
    ops = to_operations(read_history(hist_path))
    lin = check(ops.linearizable, budget=opts.check_budget)
    stale = check_stale_reads(ops.stale_reads, ops.linearizable, monotonic=False)
    verdicts = {}
    counts = {}
    if "register" in workloads:
        verdicts["linearizable"] = lin.verdict
        verdicts["stale_reads"] = OK if stale.ok else VIOLATION
        counts["register"] = {"invoked": len(ops.linearizable) + len(ops.stale_reads),
                              **workloads["register"].counts, "checked": lin.operations,
                              "stale_reads": stale.reads,
                              **_reason_counts(workloads["register"])}
    set_res = sess_res = None
    if "set" in workloads:
        set_res = check_set(ops.other, final_state[0])
        verdicts["set_lost"] = OK if set_res.ok else (VIOLATION if set_res.read else UNKNOWN)
        counts["set"] = {**workloads["set"].counts, "checked": set_res.attempted,
                         **_reason_counts(workloads["set"])}
    if "session" in workloads:
        sess_res = check_session(ops.other, final_state[1])
        verdicts["session_duplicates"] = OK if sess_res.ok else (
            VIOLATION if sess_res.read else UNKNOWN)
        counts["session"] = {**workloads["session"].counts,
                             "checked": sum(sess_res.counts()[f"{k}_{w}"]
                                            for k in ("incr", "append")
                                            for w in ("acked", "unknown", "failed")),
                             **_reason_counts(workloads["session"])}
    verdicts["node_anomalies"] = OK if not nemesis.anomalies else VIOLATION
    vs = set(verdicts.values())
    verdict = VIOLATION if VIOLATION in vs else UNKNOWN if UNKNOWN in vs else OK
    summary_path = out / "summary.json"
    if opts.plot:
        from .plot import plot_run

        notes.append(plot_run(out))
    faults = dict(nemesis.counts)
    result = RunResult(verdict, opts.seed, str(out), counts, faults,
                       lin.summary() if "register" in workloads else "register: not run",
                       stale.summary() if "register" in workloads else "",
                       str(hist_path), str(nemesis_path), str(summary_path), verdicts,
                       set_res.summary() if set_res else "",
                       sess_res.summary() if sess_res else "",
                       list(nemesis.anomalies), notes, dict(nemesis.stats),
                       fault_coverage(nemesis.plan, nemesis.counts, nemesis.cut_short,
                                      nemesis.stats))
    summary = asdict(result)
    summary["set"] = set_res.to_json() if set_res else None
    summary["session"] = sess_res.to_json() if sess_res else None
    summary["options"] = {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in asdict(opts).items()}
    summary["proxy_stats"] = {f"{a}->{b}": v for (a, b), v in proxies.stats().items()}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(result.text() + "\n")
    return result


def _announce(plan, say) -> None:
    if plan.kinds:
        say(f"fault plan: {len(plan.steps)} faults in {plan.duration:g} s, "
            f"{len(plan.planned)} of the {len(plan.kinds)} kinds first: "
            + " ".join(plan.planned)
            + (" (times squeezed towards the low ends of --quiet/--fault to fit)"
               if plan.compressed else ""))
    for kind, reason in plan.skipped.items():
        say(f"fault kind {kind} skipped: {reason}")


def _reason_counts(workload) -> dict:
    """``fail_reasons`` / ``info_reasons`` of a workload: the value recorded with each fail /
    info completion (an error's class name, or "full", "gave_up", "cancelled") -> n."""
    return {f"{st}_reasons": dict(workload.reasons[st]) for st in ("fail", "info")}


def run_sync(opts: RunOptions, progress=None) -> RunResult:
    """``run`` on a fresh event loop (uvloop is not used: the proxies' timing is what the
    standard loop gives)."""
    return asyncio.run(run(opts, progress))


if os.name != "posix":  # pragma: no cover
    raise ImportError("fastraft.verify.nemesis needs POSIX signals (SIGSTOP/SIGCONT)")
