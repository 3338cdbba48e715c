"""Failover on real node processes: ``kill -9`` (and, separately, ``SIGSTOP``) of the leader
under a write load, many times over; the time to the next acknowledged write (issue 16).

Place in the architecture: a benchmark script (bench/), outside the package. It starts a
3-node cluster of real ``fastraft node`` processes on free ports of 127.0.0.1 with the cluster
helper of ``membership_bench.py`` (``python -P -m fastraft node --id N --config F --data-dir
D``, each node's output in its own log file, a killed node restarted with the same command on
the same data directory), loads it with ``fastraft.client.AsyncClient`` and reads each node's
status with that script's minimal OP_STATUS probe. It imports nothing of the server.

The load: ``--clients`` (4) AsyncClients with the client's default timeouts (unless
``--client-timeout``), each writing one new key after another (one write in flight per client;
every key and value unique). The time of every acknowledgement is recorded, with the time
its call started and whether the call had to retry.

One round (``--repeats`` 20 per mode, all on the same cluster under the same load):

1. find the leader and its term (the status of every node);
2. wait until every client has had 3 writes acknowledged within the last 0.5 s, none failed;
3. ``kill -9`` the leader (mode ``kill``) or ``SIGSTOP`` it (mode ``pause``): time 0;
4. poll the status of the two other nodes every 10 ms until one reports a leader other than
   the old one in a newer term (**new leader known**), and wait for the **next acknowledged
   write**: the first acknowledgement after time 0 of a write the old leader did not answer
   (its call started after time 0, or it had to retry: an answer already on its way when the
   leader stopped does not count). Also: the load's longest gap between two acknowledgements
   (all clients together) from 0.5 s before time 0 to the end of the round, and the clients'
   errors since the previous round, by type;
5. ``kill``: restart the killed node on its data directory. ``pause``: ``SIGCONT`` once the new
   leader is known AND the next write acknowledged, or after ``--pause-cap`` s if that comes
   first (default: the clients' deadline plus 1 s, by when every call waiting on the old
   leader has ended; the table marks such a round): not earlier, because a resumed old
   leader that learns of the newer term answers the requests waiting on it at once, which
   would shorten the very wait being measured. Then wait until the three nodes agree on one
   leader and each has applied the commit index the leader had when they first agreed.

At the end the load stops and every write is read back (linearizable scans): each
acknowledged write must hold its value (the client must never lose an acknowledged write),
a write that failed with a ``NotApplied`` error must be absent, and of those that failed with
an ``OutcomeUnknown`` error the script counts how many were applied.

Per mode: a table of the rounds and min / median / p90 / max of the next acknowledged write,
against the issue's targets (kill: median < 150 ms and max < 600 ms; pause: median < 800 ms).

    python bench/failover_bench.py                    # 20 kills, then 20 pauses: ~3 min
    python bench/failover_bench.py --quick            # smoke run: 2 rounds per mode, < 1 min
    python bench/failover_bench.py --mode kill --repeats 50 --json kill.json
    python bench/failover_bench.py --tuning-election-ms 300 --heartbeat-ms 30

Markdown to stdout, progress to stderr; ``--json FILE`` also writes every figure. Figures
only: a target not met does not fail the run. Exit 1 when the cluster misbehaves (no new
leader, no acknowledged write or no recovery within ``--wait-timeout``; a node exits
unexpectedly: the message names what it waited for, with the tail of every node's log), or
when the read-back finds an acknowledged write lost or a NotApplied write applied (the tables
are printed first); the directory with the logs is then kept.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # membership_bench, beside us

from membership_bench import (  # noqa: E402
    BenchFailed, Cluster, add_run_options, progress, run_script, table)

import fastraft  # noqa: E402
from fastraft import processes  # noqa: E402
from fastraft.client import AsyncClient  # noqa: E402
from fastraft.config import Tuning  # noqa: E402
from fastraft.core import IMPLEMENTATION  # noqa: E402
from fastraft.errors import (ConfigError, FastraftError, NotApplied,  # noqa: E402
                             OutcomeUnknown)

pc = time.perf_counter
MODES = ("kill", "pause")
MODE_TITLES = {"kill": "`kill -9` of the leader", "pause": "`SIGSTOP` of the leader"}
#: The issue's targets for the next acknowledged write, in ms: (statistic, bound) pairs.
TARGETS = {"kill": (("median", 150.0), ("max", 600.0)), "pause": (("median", 800.0),)}
WATCH_S = 0.01           # status polling interval while watching a failover
STEADY_WINDOW_S = 0.5    # the load is steady: every client acknowledged STEADY_ACKS writes
STEADY_ACKS = 3          # within the last STEADY_WINDOW_S, and no write failed in it
ERROR_PAUSE_S = 0.01     # a client's pause after a failed write
SCAN_BLOCK = 1000        # keys per read-back scan (the key's last 3 digits)


def key_of(ci: int, seq: int) -> bytes:
    return b"fo/%02d/%09d" % (ci, seq)


def value_of(key: bytes) -> bytes:
    return b"val/" + key


def family(exc: BaseException) -> str:
    return ("NotApplied" if isinstance(exc, NotApplied) else
            "OutcomeUnknown" if isinstance(exc, OutcomeUnknown) else "other")


# -- cluster and load -----------------------------------------------------------------------


class FailoverCluster(Cluster):
    """membership_bench's 3-node cluster, which can restart a node and resume a paused one
    (and resumes them all before stopping: a stopped process acts on SIGTERM only then)."""

    def __init__(self, base: Path, tuning: Tuning) -> None:
        super().__init__(base, 3, tuning)
        self.paused: set[int] = set()

    def restart(self, nid: int) -> None:
        """Start node ``nid`` again, same command, same data directory (it must be dead)."""
        n = self.nodes[nid]
        n.exit_code = processes.kill(n.proc)        # reaped (it is dead already)
        self._spawn(n, processes.node_argv(nid, self.config_path, self.config.data_dir))
        self.removed.discard(nid)

    def resume(self, nid: int) -> None:
        if nid in self.paused:
            self.paused.discard(nid)
            if self.nodes[nid].running:
                os.kill(self.nodes[nid].proc.pid, signal.SIGCONT)

    def check_alive(self, what: str) -> None:
        dead = [i for i, n in self.nodes.items() if i not in self.removed and not n.running]
        if dead:
            raise BenchFailed(f"while {what}: node(s) {dead} exited unexpectedly\n"
                              + self.report())

    def close(self) -> None:
        for nid in list(self.paused):
            self.resume(nid)
        super().close()


class Load:
    """``n`` AsyncClients, each writing key after key (one write in flight per client).
    ``ack_t`` / ``ack_start`` / ``ack_retried``: for every acknowledgement in order, its time,
    the time its call started and whether the call retried; ``errors``: (time, client, seq,
    error type, family) of every failed write."""

    def __init__(self, endpoints: list[str], n: int, timeout: float | None) -> None:
        kw = {} if timeout is None else {"timeout": timeout}
        self.clients = [AsyncClient(endpoints, **kw) for _ in range(n)]
        self.ack_t: list[float] = []
        self.ack_start: list[float] = []
        self.ack_retried: list[bool] = []
        self.by_client: list[list[float]] = [[] for _ in range(n)]
        self.acked: list[list[int]] = [[] for _ in range(n)]
        self.last_seq = [0] * n
        self.errors: list[tuple] = []
        self.last_error = float("-inf")
        self.stopping = False
        self.tasks: list[asyncio.Task] = []

    async def worker(self, ci: int) -> None:
        c = self.clients[ci]
        seq = 0
        while not self.stopping:
            seq += 1
            self.last_seq[ci] = seq
            key = key_of(ci, seq)
            r0, t0 = c.retries, pc()
            try:
                await c.put(key, value_of(key))
            except FastraftError as exc:
                self.last_error = now = pc()
                self.errors.append((now, ci, seq, type(exc).__name__, family(exc)))
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            now = pc()
            self.ack_t.append(now)
            self.ack_start.append(t0)
            self.ack_retried.append(c.retries != r0)
            self.by_client[ci].append(now)
            self.acked[ci].append(seq)

    async def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self.worker(i)) for i in range(len(self.clients))]

    def check(self) -> None:
        """BenchFailed when a worker has stopped (a bug: it only stops when told)."""
        for t in self.tasks:
            if t.done() and not self.stopping:
                exc = None if t.cancelled() else t.exception()
                raise BenchFailed(f"a load worker stopped: {exc!r}")

    def steady(self) -> bool:
        self.check()
        now = pc()
        if now - self.last_error < STEADY_WINDOW_S:
            return False
        return all(len(ts) >= STEADY_ACKS and ts[-STEADY_ACKS] >= now - STEADY_WINDOW_S
                   for ts in self.by_client)

    def next_ack(self, t0: float) -> tuple[float | None, float | None]:
        """(the first acknowledgement after ``t0`` of a write started after ``t0`` or
        retried; the first acknowledgement after ``t0`` of any write), None when none yet."""
        i = bisect.bisect_right(self.ack_t, t0)
        first_any = self.ack_t[i] if i < len(self.ack_t) else None
        for j in range(i, len(self.ack_t)):
            if self.ack_start[j] > t0 or self.ack_retried[j]:
                return self.ack_t[j], first_any
        return None, first_any

    def longest_gap(self, t_from: float, t_to: float) -> float:
        """The longest time between two consecutive acknowledgements in [t_from, t_to]
        (t_to itself counts as one: a gap still open then counts to it)."""
        i = bisect.bisect_left(self.ack_t, t_from)
        j = bisect.bisect_right(self.ack_t, t_to)
        ts = self.ack_t[i:j] + [t_to]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)

    async def finish(self) -> None:
        """Stop: the writes in flight end normally (their outcome is then known)."""
        self.stopping = True
        await asyncio.gather(*self.tasks)
        await self.close()

    async def close(self) -> None:
        self.stopping = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for c in self.clients:
            await c.close()


# -- one round ------------------------------------------------------------------------------


async def leader_term(cl: FailoverCluster, timeout: float) -> tuple[int, int]:
    """(id, term) of the node that says it leads the highest term, alone."""
    async def found():
        sts = [s for s in await asyncio.gather(*(cl.status(i) for i in sorted(cl.nodes)))
               if s]
        if not sts:
            return None
        top = max(s["term"] for s in sts)
        leads = [s["id"] for s in sts if s["role"] == "leader" and s["term"] == top]
        return (leads[0], top) if len(leads) == 1 else None
    return await cl.wait(found, timeout, "a leader")


def strike(cl: FailoverCluster, nid: int, mode: str) -> float:
    """SIGKILL or SIGSTOP node ``nid``; the time just before the signal."""
    if mode == "kill":
        cl.removed.add(nid)         # its death is expected until it is restarted
    else:
        cl.paused.add(nid)
    t = pc()
    os.kill(cl.nodes[nid].proc.pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
    return t


async def new_leader(cl: FailoverCluster, others: list[int], old: int,
                     old_term: int) -> tuple[int, int] | None:
    """(leader, term) when one of ``others`` reports a leader other than ``old`` in a term
    after ``old_term``, else None."""
    for st in await asyncio.gather(*(cl.status(i) for i in others)):
        if st is None or st["term"] <= old_term:
            continue
        lead = st["id"] if st["role"] == "leader" else st["leader"]
        if lead and lead != old:
            return lead, st["term"]
    return None


async def watch(cl: FailoverCluster, load: Load, old: int, old_term: int, t0: float,
                mode: str, args) -> dict:
    """Until the new leader is known and the next write acknowledged (and, for ``pause``,
    the old leader resumed: module docstring); times in seconds from ``t0``."""
    others = [i for i in sorted(cl.nodes) if i != old]
    seen: dict = {}
    while True:
        if "leader_s" not in seen:
            found = await new_leader(cl, others, old, old_term)
            if found is not None:
                seen["leader_s"] = pc() - t0
                seen["new_leader"], seen["new_term"] = found
        if "ack_s" not in seen:
            t_ack, t_any = load.next_ack(t0)
            if t_any is not None:
                seen.setdefault("first_ack_any_s", t_any - t0)
            if t_ack is not None:
                seen["ack_s"] = t_ack - t0
        both = "leader_s" in seen and "ack_s" in seen
        if mode == "pause" and "resumed_s" not in seen and (
                both or pc() - t0 >= args.pause_cap):
            cl.resume(old)
            seen["resumed_s"] = pc() - t0
            seen["capped"] = not both
        if both and (mode == "kill" or "resumed_s" in seen):
            return seen
        cl.check_alive(f"watching the failover from node {old}")
        load.check()
        if pc() - t0 >= args.wait_timeout:
            raise BenchFailed(f"{mode} of node {old}: after {args.wait_timeout:g} s, seen only "
                              f"{seen} (leader_s: a new leader known, ack_s: a write "
                              f"acknowledged)\n{cl.report()}")
        await asyncio.sleep(WATCH_S)


async def wait_in_sync(cl: FailoverCluster, timeout: float) -> None:
    """Until every node answers, all agree on one leader of the highest term and each has
    applied the commit index that leader had when they first agreed."""
    target: dict = {}

    async def in_sync():
        sts = await asyncio.gather(*(cl.status(i) for i in sorted(cl.nodes)))
        if None in sts:
            return False
        top = max(s["term"] for s in sts)
        leads = [s for s in sts if s["role"] == "leader" and s["term"] == top]
        if len(leads) != 1 or any(s["term"] != top or s["leader"] != leads[0]["id"]
                                  for s in sts):
            return False
        commit = target.setdefault("commit", leads[0]["commit"])
        return all(s["applied"] >= commit for s in sts)
    await cl.wait(in_sync, timeout, "all three nodes to agree on a leader and catch up")


async def one_round(cl: FailoverCluster, load: Load, mode: str, r: int, args) -> dict:
    e0 = len(load.errors)
    old, old_term = await leader_term(cl, args.wait_timeout)
    await cl.wait(load.steady, args.wait_timeout,
                  f"every client to have {STEADY_ACKS} writes acknowledged within "
                  f"{STEADY_WINDOW_S:g} s")
    t0 = strike(cl, old, mode)
    seen = await watch(cl, load, old, old_term, t0, mode, args)
    t1 = pc()
    if mode == "kill":
        cl.restart(old)
    await wait_in_sync(cl, args.wait_timeout)
    t_end = pc()
    errors: dict[str, int] = {}
    for _, _, _, name, _ in load.errors[e0:]:
        errors[name] = errors.get(name, 0) + 1
    ms = lambda s: round(s * 1e3, 1)  # noqa: E731
    out = {"round": r, "old_leader": old, "old_term": old_term,
           "new_leader": seen["new_leader"], "new_term": seen["new_term"],
           "new_leader_known_ms": ms(seen["leader_s"]), "next_ack_ms": ms(seen["ack_s"]),
           "first_ack_any_ms": ms(seen["first_ack_any_s"]),
           "longest_gap_ms": ms(load.longest_gap(t0 - STEADY_WINDOW_S, t_end)),
           "recovered_s": round(t_end - t1, 2), "errors": errors}
    if mode == "pause":
        out["resumed_ms"] = ms(seen["resumed_s"])
        out["resumed_at_cap"] = seen["capped"]
    return out


# -- read-back ------------------------------------------------------------------------------


async def read_back(endpoints: list[str], load: Load) -> dict:
    """Read every key the load tried (scans of SCAN_BLOCK keys): acknowledged ones must hold
    their value, NotApplied ones must be absent; OutcomeUnknown ones are counted."""
    c = AsyncClient(endpoints, timeout=10.0)
    present: dict[bytes, bytes] = {}
    try:
        for ci, top in enumerate(load.last_seq):
            for blk in range(top // SCAN_BLOCK + 1):
                prefix = b"fo/%02d/%06d" % (ci, blk)
                present.update(await c.scan(prefix, limit=SCAN_BLOCK))
    finally:
        await c.close()
    acked = [key_of(ci, s) for ci, seqs in enumerate(load.acked) for s in seqs]
    lost = [k for k in acked if present.get(k) != value_of(k)]
    by_family: dict[str, list[bytes]] = {"NotApplied": [], "OutcomeUnknown": [], "other": []}
    for _, ci, seq, _, fam in load.errors:
        by_family[fam].append(key_of(ci, seq))
    applied = {f: sum(k in present for k in keys) for f, keys in by_family.items()}
    return {"acknowledged": len(acked), "keys_present": len(present),
            "lost": len(lost), "lost_keys": [k.decode() for k in lost[:20]],
            "failed": {f: len(keys) for f, keys in by_family.items()},
            "failed_but_applied": applied,
            "ok": not lost and applied["NotApplied"] == 0}


# -- the run --------------------------------------------------------------------------------


def source_info() -> dict:
    """The git commit of the checkout the imported fastraft comes from, and the files of
    its fastraft/ that differ from it (commit None: not a git checkout)."""
    top = Path(fastraft.__file__).resolve().parent.parent

    def git(*a: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(top), *a], capture_output=True, text=True,
                                  timeout=20, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    root = git("rev-parse", "--show-toplevel")
    if root is None or Path(root.strip()).resolve() != top:
        return {"commit": None, "uncommitted": []}
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "fastraft") or ""
    return {"commit": (git("log", "-1", "--format=%h") or "").strip() or None,
            "uncommitted": [ln[3:] for ln in dirty.splitlines()]}


def meta(args, loop_name: str, load: Load) -> dict:
    c = load.clients[0]
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "core": IMPLEMENTATION, "loop": loop_name, **source_info(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "tuning": {"heartbeat_ms": args.tuning.heartbeat_ms,
                       "election_timeout_ms": args.tuning.election_timeout_ms,
                       "tick_ms": args.tuning.tick_ms, "fsync": args.tuning.fsync},
            "clients": len(load.clients), "client_timeout_s": c.timeout,
            "client_deadline_s": c.deadline, "repeats": args.repeats,
            "pause_cap_s": args.pause_cap, "argv": sys.argv[1:]}


async def run_modes(cl: FailoverCluster, load: Load, args) -> dict:
    out = {}
    for mode in args.modes:
        progress(f"=== {mode}: {args.repeats} round(s)")
        rounds = []
        for r in range(1, args.repeats + 1):
            rounds.append(await one_round(cl, load, mode, r, args))
            x = rounds[-1]
            progress(f"{mode} {r}/{args.repeats}: node {x['old_leader']} -> "
                     f"{x['new_leader']}, new leader known {x['new_leader_known_ms']} ms, "
                     f"next write {x['next_ack_ms']} ms, longest gap {x['longest_gap_ms']} "
                     f"ms, recovered in {x['recovered_s']} s, errors {x['errors'] or 0}")
        out[mode] = {"rounds": rounds, "summary": summarize(mode, rounds)}
    return out


async def run(args, base: Path, loop_name: str) -> dict:
    cl = FailoverCluster(base / "cluster", args.tuning)
    load = None
    t0 = pc()
    try:
        cl.start()
        await leader_term(cl, args.wait_timeout)
        load = Load(cl.endpoints(), args.clients, args.client_timeout)
        if args.pause_cap is None:
            args.pause_cap = load.clients[0].deadline + 1.0
        res: dict = {"meta": meta(args, loop_name, load)}
        await load.start()
        res["modes"] = await run_modes(cl, load, args)
        await load.finish()
        progress(f"=== reading back {sum(load.last_seq):,} keys")
        res["verify"] = await read_back(cl.endpoints(), load)
        load = None
    finally:
        if load is not None:
            await load.close()
        cl.close()
    res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["meta"]["total_s"] = round(pc() - t0, 1)
    if not res["verify"]["ok"]:
        args.keep = True                # run_script then keeps the logs
        args.kept_in = str(base)
    return res


# -- output ---------------------------------------------------------------------------------


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summarize(mode: str, rounds: list[dict]) -> dict:
    xs = [r["next_ack_ms"] for r in rounds]
    ls = [r["new_leader_known_ms"] for r in rounds]
    stats = {"min": min(xs), "median": round(statistics.median(xs), 1),
             "p90": percentile(xs, 90), "max": max(xs)}
    met = {f"{k} < {bound:g} ms": stats[k] < bound for k, bound in TARGETS[mode]}
    errors: dict[str, int] = {}
    for r in rounds:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"next_ack_ms": stats, "targets": met, "met": all(met.values()),
            "new_leader_known_ms": {"median": round(statistics.median(ls), 1),
                                    "max": max(ls)},
            "errors": errors}


def fmt_errors(e: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items())) or "0"


def render_mode(mode: str, data: dict) -> str:
    pause = mode == "pause"
    headers = ["round", "old leader (term)", "new leader (term)", "new leader known ms",
               "next acknowledged write ms", "load: longest gap ms"]
    headers += ["SIGCONT ms"] if pause else []
    headers += ["recovered s", "client errors"]
    rows = []
    for r in data["rounds"]:
        row = [r["round"], f"{r['old_leader']} ({r['old_term']})",
               f"{r['new_leader']} ({r['new_term']})", r["new_leader_known_ms"],
               f"**{r['next_ack_ms']}**", r["longest_gap_ms"]]
        if pause:
            row.append(f"{r['resumed_ms']}" + (" (cap)" if r["resumed_at_cap"] else ""))
        rows.append(row + [r["recovered_s"], fmt_errors(r["errors"])])
    s = data["summary"]
    x, nl = s["next_ack_ms"], s["new_leader_known_ms"]
    goals = " and ".join(s["targets"])
    verdict = "met" if s["met"] else "NOT met"
    return "\n".join([
        f"### {MODE_TITLES[mode]} ({len(rows)} rounds; ms from the signal)\n",
        table(headers, rows), "",
        f"Next acknowledged write: min **{x['min']}**, median **{x['median']}**, p90 "
        f"**{x['p90']}**, max **{x['max']}** ms. Target (issue 16): {goals}: **{verdict}**. "
        f"New leader known: median {nl['median']} ms, max {nl['max']} ms. Client errors: "
        f"{fmt_errors(s['errors'])}."])


def render_verify(v: dict) -> str:
    f, a = v["failed"], v["failed_but_applied"]
    lines = [f"Read-back: {v['acknowledged']:,} acknowledged writes, "
             + ("**all present with their value**" if not v["lost"] else
                f"**{v['lost']} LOST** (first: {', '.join(v['lost_keys'])})")
             + f"; failed writes: NotApplied {f['NotApplied']} ({a['NotApplied']} applied"
             + (": **WRONG**" if a["NotApplied"] else "") + f"), OutcomeUnknown "
             f"{f['OutcomeUnknown']} ({a['OutcomeUnknown']} applied)"
             + (f", other {f['other']} ({a['other']} applied)" if f["other"] else "") + "."]
    return "\n".join(lines)


def render(res: dict) -> str:
    m = res["meta"]
    changed = ", ".join(m["uncommitted"])
    src = ("fastraft not from a git checkout" if m["commit"] is None else
           f"fastraft at commit {m['commit']}"
           + (f" plus uncommitted changes to {changed}" if changed else " (clean)"))
    t = m["tuning"]
    out = [f"Python {m['python']}, {m['cpus']} CPUs, core {m['core']}, loop {m['loop']}, "
           f"{src}; heartbeat {t['heartbeat_ms']} ms, election timeout "
           f"{t['election_timeout_ms']} ms; load: {m['clients']} clients, one write in "
           f"flight each (client timeout {m['client_timeout_s']:g} s, deadline "
           f"{m['client_deadline_s']:g} s)"
           + (f"; SIGCONT at the latest {m['pause_cap_s']:g} s after SIGSTOP"
              if "pause" in res["modes"] else "")
           + f"; load average {m['loadavg_start'][0]} at the "
           f"start, {m['loadavg_end'][0]} at the end; {m['total_s']} s in all.", ""]
    for mode, data in res["modes"].items():
        out += [render_mode(mode, data), ""]
    out.append(render_verify(res["verify"]))
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("kill", "pause", "both"), default="both",
                    help="kill -9 the leader, SIGSTOP it, or both in turn (default both)")
    ap.add_argument("--repeats", type=int, default=None, metavar="N",
                    help="rounds per mode (default 20; 2 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds per mode")
    ap.add_argument("--clients", type=int, default=4,
                    help="writing clients, one write in flight each (4)")
    ap.add_argument("--client-timeout", type=float, default=None, metavar="S",
                    help="the clients' request timeout (default: the client's default)")
    ap.add_argument("--tuning-election-ms", type=int, default=None, metavar="MS",
                    help="[tuning] election_timeout_ms (default: the default tuning's)")
    ap.add_argument("--heartbeat-ms", type=int, default=None, metavar="MS",
                    help="[tuning] heartbeat_ms (default: the default tuning's)")
    ap.add_argument("--pause-cap", type=float, default=None, metavar="S",
                    help="pause mode: SIGCONT at the latest this long after SIGSTOP (default: "
                         "the clients' deadline plus 1 s)")
    ap.add_argument("--wait-timeout", type=float, default=60.0, metavar="S",
                    help="seconds any single wait may take before the run fails (60)")
    add_run_options(ap)
    args = ap.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else 2 if args.quick else 20
    if args.repeats < 1 or args.clients < 1:
        ap.error("--repeats and --clients must be at least 1")
    args.modes = MODES if args.mode == "both" else (args.mode,)
    tuning = {k: v for k, v in (("election_timeout_ms", args.tuning_election_ms),
                                ("heartbeat_ms", args.heartbeat_ms)) if v is not None}
    try:
        args.tuning = Tuning(**tuning)
    except ConfigError as exc:
        ap.error(str(exc))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results: list[dict] = []

    def render_kept(res: dict) -> str:
        results.append(res)
        return render(res)
    code = run_script("failover_bench", args, run, render_kept)
    if code == 0 and results and not results[0]["verify"]["ok"]:
        print("failover_bench: FAILED: the read-back found acknowledged writes lost or "
              f"NotApplied writes applied (the last line says which; files kept in "
              f"{args.kept_in})", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
