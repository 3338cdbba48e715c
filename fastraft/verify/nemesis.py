"""A verification run: real nodes behind fault proxies, workloads, a nemesis, a verdict.

Place in the architecture: the top of the verification framework (``fastraft.verify``),
driven by ``python -m fastraft.verify`` and by the short scenarios in the test suite. It starts
node processes with the very command a user runs (``python -P -m fastraft node ...``, through
``fastraft.processes``), drives them with the workloads of ``workloads.py`` over
``fastraft.client.AsyncClient``, disturbs them with the fault kinds of ``faults.py`` (the
proxies of ``proxy.py`` and signals), records a history (``history.py``) and judges it
(``linearizability.py``, ``final_state.py``). It reads and writes the cluster configuration
(``fastraft.config``) and never imports the server.

One asyncio loop runs everything: the proxies, the workers, the nemesis. A run::

    allocate ports; start one proxy per node; write cluster.toml (raft = the proxy's address,
        raft_listen = the node's private one); start the nodes; wait for a leader
    for --duration seconds:
        workers (--workload): register: read (linearizable), stale_read, write (unique
                 values), cas, on few keys; set: inserts of fresh keys; session: cas-loop
                 increments and appends (workloads.py); watch: unique puts and watchers
                 recording every event; lock: fenced counter increments under
                 client.lock, one holder pausing past its TTL now and then; lease: leases
                 granted, keys attached, kept alive, let lapse, revoked
                 (coord_workloads.py); each op recorded as invoke then ok /
                 fail (NotApplied) / info (OutcomeUnknown or anything else; the worker then
                 continues as a fresh process id)
        nemesis: quiet for a while, then one fault for a while, then heal, again and again
    heal everything (resume, restart, reconnect), keep the workload going for --recover
    seconds (the cluster must serve again), stop
    watch / lock / lease: the end marker written and reached by every watcher
        (watch-streams.jsonl), the counter read, the leases read once the term has been
        stable past the longest TTL + a margin (coord_workloads.finish_coord)
    set / session: kill -9 EVERY node (every current member), restart them all, read the
        final state linearizably
    end checks (membership.py): the committed member list is the one the nemesis made;
        every member, voters and learners, holds the leader's state once it has applied
        the leader's commit index (stale reads served by that node alone)
    check: linearizability (register), lost inserts (set), exactly-once (session), watch
        streams, lock exclusion and fences, lease expiry (coord_checks.py), the
        membership and the replicas, node anomalies (a node exiting on its own, against its
        contract); write summary.json, summary.txt and latency.png (plot.py, with
        matplotlib)

Faults (``--nemesis`` picks the kinds, ``faults.py`` has one object per kind; the schedule
is planned before the run by ``schedule.plan_faults``: every kind once per round in a seeded
shuffled order, the first round squeezed into ``--duration`` when it allows, and the kinds
that do not fit skipped with the reason, which the summary reports; the targets are drawn
from the seeded RNG, the leader as often as not):

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
- ``member`` (``membership.py``): membership changes through the client's member API: add a
  learner (a new id on new ports, started with ``fastraft node ... --join``, caught up,
  then restarted behind a fault proxy of its own), promote it, remove a voter (the leader
  sometimes), replace a node (a dead one sometimes); 3 to 5 voters. The other kinds then
  act on the current members; a removed node must exit 0 by itself (not a crash) and is
  never restarted by the heals.

A node exiting when no fault asked it to (or with the wrong code) is a node anomaly: recorded
with the tail of its log and restarted (left down after its third failure).

TLS (``--tls``, ``RunOptions.tls``): the run makes its own PKI in ``<out>/pki``
(``pki.RunPKI``, with ``fastraft.certs``), gives the nodes a ``[tls]`` table (both ports TLS,
client certificates required), and every client of the run (workloads, leader look-ups,
member changes and probes, end reads) presents the client certificate and checks the nodes
against the peer CA. The fault proxies terminate TLS (``proxy.ProxyTLS``), so every fault
acts on whole frames as without TLS. The summary says so (``transport``).

The workers' clients follow the membership by themselves (``AsyncClient`` learns the member
list); the nemesis points its own status client at the current members after every member
fault.

Output directory: ``cluster.toml``, ``node<i>.log``, ``data/``, ``history.jsonl`` (see
history.py), ``watch-streams.jsonl`` (the watch workload's streams), ``nemesis.jsonl`` (one
line per fault start and heal, on the history's clock, and a "skip" line per kind left out
of the plan), ``summary.json`` and ``summary.txt`` (the verdict and each check's, the counts
per workload with the reasons of the failed and unknown ones, the faults per kind, which
kinds ran and which were skipped and why, each kind's outcome, the membership and replica
checks (``members``, ``replica_states``), the coordination checks (``watch``, ``lock``,
``lease``), the anomalies, the checker's report; see report.py), ``latency.png``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Config, NodeSpec, Tuning, format_address, render_config
from ..errors import FastraftError
from ..processes import free_port, kill, node_argv, spawn
from .membership import IDENTITY_FILE, end_checks
from .faults import make_faults
from .coord_workloads import (COORD_WORKLOADS, LeaseWorkload, LockWorkload, WatchWorkload,
                              finish_coord, judge_coord)
from .final_state import check_session, check_set
from .history import HistoryWriter, read_history, to_operations
from .linearizability import OK, UNKNOWN, VIOLATION, check, check_stale_reads
from .pki import PKI_DIR, RunPKI, require_cryptography
from .proxy import Proxies
from .report import fault_coverage, summary_text
from .schedule import FAULT_KINDS, plan_faults
from .workloads import RegisterWorkload, SessionWorkload, SetWorkload, read_final_state

__all__ = ["RunOptions", "RunResult", "NodeProcs", "Nemesis", "run", "run_sync",
           "cluster_status", "current_leader", "FAULT_KINDS", "WORKLOADS"]

WORKLOADS = ("register", "set", "session", *COORD_WORKLOADS)
PLAINTEXT = "transport: plaintext (no [tls]: both ports unauthenticated)"
TLS_ON = ("transport: TLS on both ports of every node (peers: mutual TLS with the peer CA; "
          "clients: a certificate of the client CA required); the fault proxies terminate "
          "TLS (they accept with the destination node's certificate and dial the node with "
          "it), so every fault acts on whole frames")
_CUT_SHORT_SLACK = 0.25   # a fault healed this much before its planned end is "cut short"
_EXCERPT = 400            # characters of a node's log quoted in an anomaly
#: the nodes' watch_history: every change of a run stays watchable from revision 1 (only a
#: node's restart or a snapshot install starts its history afresh)
WATCH_HISTORY = 2_000_000


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
                                                  "segment_size": 1 << 20,
                                                  "watch_history": WATCH_HISTORY})
    storage: str = "wal"
    start_timeout: float = 30.0
    workloads: tuple = WORKLOADS
    set_workers: int = 2
    session_workers: int = 3
    watch_writers: int = 2             # watch: clients putting unique values
    watchers: int = 4                  # watch: watchers (half from revision 1)
    lock_workers: int = 4              # lock: contenders (worker 0 pauses now and then)
    lock_ttl: float = 2.0              # lock: the TTL of each holder's lease
    lock_pause_every: float = 5.0      # lock: worker 0 pauses at most this often (seconds)
    lease_workers: int = 2             # lease: clients granting leases
    lease_ttl: tuple = (1.0, 2.0)      # lease: TTLs drawn from this range
    plot: bool = True
    tls: bool = False                  # TLS on both ports, proxies terminating it

    def __post_init__(self) -> None:
        if self.tls:
            require_cryptography()
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
        if min(self.watch_writers, self.watchers, self.lease_workers) < 1:
            raise ValueError("watch writers, watchers and lease workers must be positive")
        if self.lock_workers < 2:
            raise ValueError("the lock workload needs at least 2 workers (worker 0 pauses)")
        if self.lock_ttl < 1.0 or not 1.0 <= self.lease_ttl[0] <= self.lease_ttl[1]:
            raise ValueError("lease and lock TTLs are at least 1 s (the nodes' minimum)")


@dataclass
class RunResult:
    """What a run found: the verdict (``ok`` only when every check passed) and every count;
    ``asdict`` of it is the bulk of ``summary.json``, ``text()`` is ``summary.txt``."""

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
    membership: str = ""          # the committed member list against the nemesis's belief
    replicas: str = ""            # every member's own state against the leader's
    transport: str = PLAINTEXT    # TLS or not, and what the proxies do with it
    coord: dict = field(default_factory=dict)    # watch / lock / lease -> the check in words

    def text(self) -> str:
        """The summary a human reads (``summary.txt``): every count with its meaning."""
        return summary_text(self)


def _fastraft_node(*args: str) -> list[str]:
    """``python -P -m fastraft node ARGS`` (``-P``: as ``processes.node_argv``)."""
    return [sys.executable, "-P", "-m", "fastraft", "node", *args]


class NodeProcs:
    """The node processes of a run: ``python -P -m fastraft node --id N --config F --data-dir
    D`` (``processes.node_argv``) with output in ``<base>/node<N>.log``, each in its own
    process group and SIGKILLed if the run dies; driven by signals only (SIGTERM, SIGKILL,
    SIGSTOP, SIGCONT).

    ``ids``: the nodes the run manages now (the members the nemesis believes in, learners
    included). A node added at runtime (``add``) first starts as a user starts one,
    ``fastraft node --id N --raft R --client C --join ... --config F --data-dir D``; once the
    nemesis gave it its identity file (``set_identity``: ``node.toml`` with a private
    ``raft_listen`` behind its proxy) it restarts with ``--id N --data-dir D`` alone (the
    identity file written back first if a wipe deleted it). A node removed from the cluster
    leaves ``ids`` (``retire``): it is never restarted by the heals, and its exit is
    watched by the member fault.

    ``pki``: the run's ``pki.RunPKI`` with ``--tls`` (a node added gets its certificate)."""

    def __init__(self, base: Path, config_path: str, data_dir: str, ids, pki=None) -> None:
        self.base = base
        self.pki = pki
        self.config_path = config_path
        self.data_dir = data_dir
        self.ids = sorted(ids)
        self.procs: dict[int, subprocess.Popen | None] = {i: None for i in self.ids}
        self.paused: set[int] = set()
        self.joined: dict[int, dict] = {}     # id -> raft, client, join, identity (text)
        self.retired: dict[int, float] = {}   # id -> monotonic time of its removal

    def add(self, i: int, raft: str, client: str, join) -> None:
        """Node ``i``, added at runtime at ``raft`` / ``client``, joins through the members at
        the client addresses ``join``; it is managed from now on (not started)."""
        if i in self.procs:
            raise ValueError(f"node {i} is known already")
        if self.pki is not None:
            self.pki.ensure_node(i)
        self.procs[i] = None
        self.ids = sorted([*self.ids, i])
        self.joined[i] = {"raft": raft, "client": client, "join": list(join),
                          "identity": None}

    def set_identity(self, i: int, text: str) -> None:
        """Joined node ``i`` restarts from its identity file ``text`` from now on."""
        self.joined[i]["identity"] = text

    def identity_path(self, i: int) -> Path:
        """Where a joined node keeps its identity file (``<data dir>/<id>/node.toml``)."""
        return Path(self.data_dir) / str(i) / IDENTITY_FILE

    def can_rejoin(self, i: int) -> bool:
        """Whether node ``i`` can restart with ``--rejoin`` after a wipe: a bootstrap member,
        or a joined node with its identity file (``--join`` and ``--rejoin`` do not go
        together)."""
        j = self.joined.get(i)
        return j is None or j["identity"] is not None

    def retire(self, i: int) -> None:
        """Node ``i`` was removed from the cluster: no longer managed (its process, if any,
        stays watched: it must exit 0 by itself)."""
        if i in self.ids:
            self.ids = [x for x in self.ids if x != i]
        self.retired.setdefault(i, time.monotonic())

    def argv(self, i: int, rejoin: bool = False) -> list[str]:
        """The command that starts node ``i`` now (see the class docstring)."""
        extra = ["--rejoin"] if rejoin else []
        j = self.joined.get(i)
        if j is None:
            return node_argv(i, self.config_path, self.data_dir, *extra)
        if j["identity"] is None:
            if rejoin:
                raise ValueError(f"node {i} has not joined yet: it cannot --rejoin")
            return _fastraft_node("--id", str(i), "--raft", j["raft"], "--client",
                                  j["client"], "--join", ",".join(j["join"]), "--config",
                                  self.config_path, "--data-dir", self.data_dir)
        path = self.identity_path(i)
        if not path.exists():                 # wiped: the operator puts its identity back
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(j["identity"])
        return _fastraft_node("--id", str(i), "--data-dir", self.data_dir, *extra)

    def start(self, i: int, rejoin: bool = False, fsize_limit: int | None = None,
              log_name: str | None = None) -> None:
        """Start node ``i`` (no-op if running). ``rejoin``: with ``--rejoin`` (its data was
        wiped). ``fsize_limit``: under RLIMIT_FSIZE (writes past it fail with EFBIG; Python
        ignores SIGXFSZ). ``log_name``: output to that file instead of ``node<i>.log``."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            return
        argv = self.argv(i, rejoin)
        how = " ".join(argv[argv.index("node") + 1:])
        with open(self.base / (log_name or f"node{i}.log"), "ab") as log:
            log.write(f"=== verify: starting node {i} at {time.time():.3f}: {how}"
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
        """SIGKILL every node, removed ones included (the end of the run)."""
        for i in list(self.procs):
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
    """The node that reports role leader for the highest term among the nodes that answer,
    when exactly one does; else None."""
    st = await cluster_status(client)
    if not st:
        return None
    top = max(s["term"] for s in st.values())
    leaders = [i for i, s in st.items() if s["role"] == "leader" and s["term"] == top]
    return leaders[0] if len(leaders) == 1 else None


class Nemesis:
    """The faults: quiet, fault, heal, again, following ``plan`` (``schedule.plan_faults`` for
    ``duration`` seconds, seeded from ``rng``). Every start and heal is appended to ``log``
    (dicts) with the history's clock; ``counts`` (kind -> faults started), ``cut_short``
    (kind -> faults the end of the run healed early), ``stats`` (outcome counter -> n, see
    ``report.OUTCOMES``), ``anomalies`` (node behaviour against its contract, in words).
    The kinds are the objects of ``faults.make_faults`` (``faults``); they act through the
    methods below. ``client_tls``: the TLS context of every client it makes (``client``)."""

    def __init__(self, kinds, procs: NodeProcs, proxies: Proxies, status_client,
                 history: HistoryWriter, rng: random.Random, quiet=(1.0, 3.0),
                 fault=(1.0, 4.0), election_timeout: float = 0.3, node_dir=None,
                 storage: str = "wal", log_path=None, duration: float = 60.0,
                 addresses: dict | None = None, client_tls=None) -> None:
        self.kinds = list(kinds)
        self.client_tls = client_tls
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
        self.node_dir = node_dir or (lambda i: str(procs.base / "data" / str(i)))
        self.storage = storage
        self.log_path = log_path
        self.anomalies: list[str] = []
        self.stats: dict[str, int] = {}     # outcomes of the process/disk faults
        self.faults = make_faults()         # kind -> Fault, in the order of their heals
        self.killed: set[int] = set()       # nodes a fault killed: restarted at the heal
        self.left_down: set[int] = set()    # nodes that kept failing: no longer restarted
        self._crashes: dict[int, int] = {}
        #: node id -> ("host:port" peer address as advertised, client address), every node
        #: the run started (the member fault adds the nodes it adds)
        self.addresses: dict[int, tuple] = dict(addresses or {})

    # -- what the faults act through --------------------------------------------------------

    def stat(self, name: str) -> None:
        """Count one outcome (``report.OUTCOMES`` says what each means)."""
        self.stats[name] = self.stats.get(name, 0) + 1

    def anomaly(self, text: str) -> None:
        """Record node behaviour against its contract (a violation of the run)."""
        self.anomalies.append(f"t={self.history.now():.2f} {text}")
        self.record("anomaly", "node", text)

    def record(self, action: str, kind: str, detail: str, **extra) -> None:
        """Append an event to ``log`` (and to ``log_path``, followable during a long run)."""
        ev = {"time": round(self.history.now(), 6), "action": action, "fault": kind,
              "detail": detail, **extra}
        self.log.append(ev)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(ev) + "\n")

    def log_size(self, i: int) -> int:
        """The size of node ``i``'s log file now (0 if there is none)."""
        try:
            return (self.procs.base / f"node{i}.log").stat().st_size
        except OSError:
            return 0

    def log_since(self, i: int, offset: int) -> str:
        """Node ``i``'s log from byte ``offset`` on."""
        try:
            with open(self.procs.base / f"node{i}.log", "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_excerpt(self, i: int, offset: int) -> str:
        """The end of node ``i``'s log from ``offset`` on, on one line (for an anomaly)."""
        return self.log_since(i, offset).strip().replace("\n", " | ")[-_EXCERPT:]

    def client_endpoints(self) -> list[str]:
        """The client addresses of the nodes the run manages now (the current members)."""
        return [self.addresses[i][1] for i in self.procs.ids if i in self.addresses]

    def proxied_ids(self) -> list[int]:
        """The managed nodes behind a fault proxy (a node added at runtime is once it has
        joined: ``membership``)."""
        return [i for i in self.procs.ids if i in self.proxies.proxies]

    def client(self, endpoints, **options):
        """An ``AsyncClient`` of ``endpoints`` with the run's TLS context (if any)."""
        from ..client import AsyncClient

        return AsyncClient(endpoints, tls=self.client_tls, **options)

    async def retarget(self) -> None:
        """Point ``status_client`` (the leader look-ups) at the current members."""
        eps = self.client_endpoints()
        old = self.status_client
        if old is None or not eps or list(old.endpoints) == eps:
            return
        self.status_client = self.client(eps, timeout=0.5, deadline=1.0, learn_members=False)
        await old.close()

    async def aclose(self) -> None:
        """Close the clients of the nemesis and of its faults."""
        for fault in self.faults.values():
            closer = getattr(fault, "aclose", None)
            if closer is not None:
                await closer()
        if self.status_client is not None:
            await self.status_client.close()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``; it is restarted at the heal."""
        self.procs.kill(i)
        self.killed.add(i)

    def crashed(self, i: int) -> None:
        """Node ``i`` exited when it should not have: restart it, unless that was its third
        time (then it is left down for the rest of the run)."""
        self._crashes[i] = self._crashes.get(i, 0) + 1
        self.procs.procs[i] = None
        if self._crashes[i] >= 3:
            self.left_down.add(i)
        else:
            self.procs.start(i)

    async def leader(self) -> int | None:
        """The leader the cluster reports now (None: none, or no answer within 2 s)."""
        try:
            return await asyncio.wait_for(current_leader(self.status_client), 2.0)
        except (asyncio.TimeoutError, FastraftError, OSError):
            return None

    async def target(self, prefer_leader: bool = True, among=None) -> int:
        """A running, unpaused node to hit (of ``among``, default every managed node): the
        leader half of the time (when one is known and ``prefer_leader``), else one drawn at
        random."""
        among = list(self.procs.ids if among is None else among)
        ids = [i for i in among if self.procs.running(i) and i not in self.procs.paused
               and i not in self.left_down]
        if prefer_leader and self.rng.random() < 0.5:
            lead = await self.leader()
            if lead is not None and lead in ids:
                return lead
        return self.rng.choice(ids or among)

    # -- the schedule -----------------------------------------------------------------------

    def check_crashes(self) -> None:
        """A node that exited on its own (and no fault lets it) is an anomaly: it is recorded
        with its exit code and the tail of its log, and restarted (left down the third
        time)."""
        for i in self.procs.ids:
            if i in self.left_down or any(f.expects_exit(i) for f in self.faults.values()):
                continue
            rc = self.procs.exited(i)
            if rc is None:
                continue
            tail = self.log_excerpt(i, max(0, self.log_size(i) - 600))
            if self._crashes.get(i, 0) + 1 >= 3:
                self.anomaly(f"node {i} exited with code {rc} on its own (3rd time): left "
                             f"down; log tail: {tail}")
            else:
                self.anomaly(f"node {i} exited with code {rc} on its own; log tail: {tail}")
            self.crashed(i)

    async def start_fault(self, kind: str) -> str:
        """Inject one fault of ``kind``; returns what was done, in words."""
        return await self.faults[kind].start(self)

    def heal(self) -> None:
        """Undo every fault: heal the links, then each kind's heal (resume paused nodes,
        restart the node under RLIMIT_FSIZE normally: it must have exited 3 or still be
        running; check torn-tail restarts; note whether wiped nodes came back through a
        snapshot), restart the killed nodes, and look for crashes."""
        self.proxies.heal()
        for fault in self.faults.values():
            fault.heal(self)
        for i in sorted((self.killed & set(self.procs.ids)) - self.left_down):
            self.procs.start(i)
        self.killed.clear()
        self.check_crashes()

    def finish(self) -> None:
        """At the end of the run (after the final heal and the recovery): crashes, and the
        wiped nodes whose snapshot install never showed (``wipe_snapshot_not_seen``)."""
        self.check_crashes()
        for _ in self.faults["wipe"].rejoined:
            self.stat("wipe_snapshot_not_seen")

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
            self.record("skip", kind, reason)
        for step in self.plan.steps:
            if await stopped_within(step.quiet):
                break
            self.check_crashes()
            detail = await self.start_fault(step.kind)
            self.counts[step.kind] = self.counts.get(step.kind, 0) + 1
            self.record("start", step.kind, detail)
            began = time.monotonic()
            if (await stopped_within(step.fault)
                    and time.monotonic() - began < step.fault - _CUT_SHORT_SLACK):
                self.cut_short[step.kind] = self.cut_short.get(step.kind, 0) + 1
            self.heal()
            self.record("heal", step.kind, detail)
            if stop.is_set():
                break


def _write_config(out: Path, opts: RunOptions, proxy_addrs: dict, private: dict,
                  clients: dict, pki: RunPKI | None = None) -> tuple[Config, str]:
    specs = tuple(NodeSpec(i, proxy_addrs[i], clients[i], raft_listen=private[i])
                  for i in sorted(proxy_addrs))
    tuning = dict(opts.tuning)
    tuning["storage"] = opts.storage
    cfg = Config(f"verify-{opts.seed}", specs, Tuning(**tuning), data_dir=str(out / "data"),
                 tls=pki.tls_config() if pki is not None else None)
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
    and then (None: silent). RuntimeError when the cluster does not start."""
    from ..client import AsyncClient

    say = progress or (lambda s: None)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(opts.seed)
    ids = list(range(1, opts.nodes + 1))
    private = {i: ("127.0.0.1", free_port()) for i in ids}
    clients = {i: ("127.0.0.1", free_port()) for i in ids}
    pki = RunPKI(out, opts.nodes) if opts.tls else None
    client_tls = pki.client_tls() if pki is not None else None
    if pki is not None:
        say(f"TLS: certificates made in {pki.dir}; the fault proxies terminate TLS")
    proxies = Proxies({i: (("127.0.0.1", 0), private[i]) for i in ids}, seed=opts.seed,
                      tls=pki.proxy_tls if pki is not None else None)
    await proxies.astart()
    procs = None
    status_client = None
    nemesis = None
    history = None
    notes: list = []
    final_state = (None, None)
    workloads: dict = {}
    ends = (None, None)
    try:
        cfg, cfg_path = _write_config(out, opts, {i: proxies.address(i) for i in ids},
                                      private, clients, pki)
        procs = NodeProcs(out, cfg_path, cfg.data_dir, ids, pki=pki)
        for i in ids:
            procs.start(i)
        endpoints = [format_address(clients[i]) for i in ids]
        status_client = AsyncClient(endpoints, timeout=0.5, deadline=1.0, learn_members=False,
                                    tls=client_tls)
        await _wait_leader(procs, status_client, opts.start_timeout, "starting", out)
        say(f"cluster of {opts.nodes} up; running {','.join(opts.workloads)} for "
            f"{opts.duration:g} s (seed {opts.seed}, nemesis {','.join(opts.nemesis) or 'none'})")
        hist_path = out / "history.jsonl"
        history = HistoryWriter(hist_path, keep=False)
        # one seed each, drawn in this order: register, nemesis, set, session, watch, lock,
        # lease
        register_rng, nemesis_rng, set_rng, session_rng, watch_rng, lock_rng, lease_rng = (
            random.Random(rng.random()) for _ in range(7))
        nemesis = Nemesis(opts.nemesis, procs, proxies, status_client, history, nemesis_rng,
                          opts.quiet, opts.fault, cfg.tuning.election_timeout_ms / 1000,
                          node_dir=lambda i: os.path.join(cfg.data_dir, str(i)),
                          storage=opts.storage, log_path=out / "nemesis.jsonl",
                          duration=opts.duration,
                          addresses={i: (format_address(proxies.address(i)),
                                         format_address(clients[i])) for i in ids},
                          client_tls=client_tls)
        status_client = None                # the nemesis's now (it may replace it)
        _announce(nemesis.plan, say)
        workloads = _workloads(opts, endpoints, history,
                               {"register": register_rng, "set": set_rng,
                                "session": session_rng, "watch": watch_rng,
                                "lock": lock_rng, "lease": lease_rng}, client_tls)
        await _load_under_faults(opts, workloads, nemesis, history, say)
        await nemesis.faults["member"].settle(nemesis)
        await _finish_coord(workloads, nemesis, out, say)
        if "set" in workloads or "session" in workloads:
            final_state = await _final_state(procs, nemesis, out, hist_path, notes, say)
        say("end checks: membership, every member's state")
        keys = workloads["register"].keys if "register" in workloads else []
        ends = await end_checks(nemesis, to_operations(read_history(hist_path)).other, keys)
        history.close()
        nemesis_path = out / "nemesis.jsonl"
        nemesis_path.write_text("".join(json.dumps(e) + "\n" for e in nemesis.log))
    finally:
        for name in COORD_WORKLOADS:
            if name in workloads:
                await workloads[name].aclose()
        if status_client is not None:
            await status_client.close()
        if nemesis is not None:
            await nemesis.aclose()
        if history is not None:
            history.close()
        if procs is not None:
            procs.close()
        await proxies.aclose()

    return _judge(opts, out, workloads, final_state, ends, nemesis, notes, hist_path,
                  nemesis_path, proxies, say)


def _workloads(opts: RunOptions, endpoints: list, history: HistoryWriter, rngs: dict,
               tls=None) -> dict:
    """The workloads ``opts`` asks for, name -> workload, each with its RNG from ``rngs``
    and the clients' TLS context ``tls``."""
    out: dict = {}
    if "register" in opts.workloads:
        out["register"] = RegisterWorkload(endpoints, history, rngs["register"], opts.workers,
                                           opts.keys, opts.op_timeout, opts.op_deadline)
    if "set" in opts.workloads:
        out["set"] = SetWorkload(endpoints, history, rngs["set"], opts.set_workers,
                                 opts.op_timeout, opts.op_deadline)
    if "session" in opts.workloads:
        out["session"] = SessionWorkload(endpoints, history, rngs["session"],
                                         opts.session_workers, opts.op_timeout,
                                         opts.op_deadline)
    if "watch" in opts.workloads:
        out["watch"] = WatchWorkload(endpoints, history, rngs["watch"], opts.watch_writers,
                                     opts.op_timeout, opts.op_deadline,
                                     watchers=opts.watchers, duration=opts.duration)
    if "lock" in opts.workloads:
        out["lock"] = LockWorkload(endpoints, history, rngs["lock"], opts.lock_workers,
                                   opts.op_timeout, opts.op_deadline, ttl=opts.lock_ttl,
                                   pause_every=opts.lock_pause_every)
    if "lease" in opts.workloads:
        out["lease"] = LeaseWorkload(endpoints, history, rngs["lease"], opts.lease_workers,
                                     opts.op_timeout, opts.op_deadline, ttl=opts.lease_ttl)
    for w in out.values():
        w.tls = tls
    return out


async def _load_under_faults(opts: RunOptions, workloads: dict, nemesis: Nemesis,
                             history: HistoryWriter, say) -> None:
    """The workloads for ``--duration`` seconds while the nemesis follows its plan; then the
    final heal, ``--recover`` seconds more of load, and the workers stopped."""
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
    await _at_most(asyncio.shield(work), opts.duration)
    reporter.cancel()
    stop_faults.set()
    if faults is not None:
        await faults
    nemesis.heal()
    nemesis.record("heal", "final", "heal everything")
    say(f"final heal; {opts.recover:g} s of recovery")
    await _at_most(asyncio.shield(work), opts.recover)
    stop_work.set()
    await _at_most(work, opts.op_deadline * 4 + 5)
    nemesis.finish()


async def _at_most(awaitable, seconds: float) -> None:
    """Wait for ``awaitable`` at most ``seconds`` (cancelled then, unless shielded)."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        pass


async def _finish_coord(workloads: dict, nemesis: Nemesis, out: Path, say) -> None:
    """The end of the coordination workloads, before the final kill (``coord_workloads``):
    the watch's end marker and the watchers reaching it (``watch-streams.jsonl`` written),
    the lock's counter read, the leases' final read once the term has been stable past the
    longest TTL."""
    names = [n for n in COORD_WORKLOADS if n in workloads]
    if not names:
        return
    say(f"coordination workloads ({', '.join(names)}): final reads")

    async def term():
        try:
            st = await asyncio.wait_for(cluster_status(nemesis.status_client), 5.0)
        except (asyncio.TimeoutError, FastraftError, OSError):
            return None
        return max((s["term"] for s in st.values()), default=None)

    reader = nemesis.client(nemesis.client_endpoints(), timeout=2.0, deadline=10.0)
    try:
        await finish_coord(workloads, reader, term, out)
    finally:
        await reader.close()


async def _final_state(procs: NodeProcs, nemesis: Nemesis, out: Path, hist_path: Path,
                       notes: list, say) -> tuple:
    """kill -9 of every node (every current member), a restart, and the final state read
    linearizably: ``workloads.read_final_state``'s pair. A node that does not come back is an
    anomaly."""
    say("kill -9 of every node, restart, final reads")
    ids = list(procs.ids)
    for i in ids:
        procs.kill(i)
    nemesis.record("start", "final", f"kill -9 every node {ids}; restart")
    offsets = {i: nemesis.log_size(i) for i in ids}
    for i in ids:
        if i not in nemesis.left_down:
            procs.start(i)
    try:
        await _wait_leader(procs, nemesis.status_client, 60.0,
                           "restarting after the final kill", out, strict=False)
    except RuntimeError as exc:
        notes.append(str(exc))
    for i in ids:
        rc = procs.exited(i)
        if rc is not None:
            nemesis.anomaly(f"node {i} exited with code {rc} after the final restart: "
                            + nemesis.log_excerpt(i, offsets[i]))
    pairs = to_operations(read_history(hist_path)).other
    reader = nemesis.client(nemesis.client_endpoints(), timeout=2.0, deadline=10.0)
    try:
        final_state = await read_final_state(reader, pairs)
    finally:
        await reader.close()
    nemesis.record("heal", "final", "final state read")
    return final_state


def _judge(opts: RunOptions, out: Path, workloads: dict, final_state, ends: tuple,
           nemesis: Nemesis, notes: list, hist_path: Path, nemesis_path: Path, proxies: Proxies,
           say) -> RunResult:
    """The end of a run: check the history and the final state, write summary.json and
    summary.txt (and latency.png)."""
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
    coord = judge_coord(ops.other, workloads, notes)
    for name, res in coord.items():
        verdicts[name] = res.verdict
        counts[name] = {**workloads[name].counts, **_reason_counts(workloads[name])}
    membership, replicas = ends
    verdicts["membership"] = membership.verdict if membership is not None else UNKNOWN
    verdicts["replicas"] = replicas.verdict if replicas is not None else UNKNOWN
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
                                      nemesis.stats),
                       membership.summary() if membership is not None
                       else "membership: not checked",
                       replicas.summary() if replicas is not None else "replicas: not checked",
                       TLS_ON if opts.tls else PLAINTEXT,
                       {name: res.summary() for name, res in coord.items()})
    summary = asdict(result)
    summary["members"] = membership.to_json() if membership is not None else None
    summary["replica_states"] = replicas.to_json() if replicas is not None else None
    summary["set"] = set_res.to_json() if set_res else None
    summary["session"] = sess_res.to_json() if sess_res else None
    for name in COORD_WORKLOADS:
        summary[name] = coord[name].to_json() if name in coord else None
    summary["options"] = {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in asdict(opts).items()}
    summary["proxy_stats"] = {f"{a}->{b}": v for (a, b), v in proxies.stats().items()}
    summary["tls"] = ({"enabled": True, "proxies": "terminate TLS",
                       "pki": str(out / PKI_DIR), "proxy_handshakes": {
                           str(i): v for i, v in proxies.tls_stats().items()}}
                      if opts.tls else {"enabled": False})
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
