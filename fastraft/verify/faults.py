"""The fault kinds of a verification run, one object each: ``start`` injects, ``heal`` undoes.

Place in the architecture: part of the verification framework (``fastraft.verify``); the
``Nemesis`` of ``nemesis.py`` looks a kind up in ``make_faults()``'s table, as the engine
swaps role handlers, instead of an if-ladder on strings. A fault acts through the nemesis:
its node processes (``nemesis.procs``, signals only), its fault proxies (``nemesis.proxies``),
its seeded RNG (every draw in a fixed order, so a seed replays the same faults), and its
records (``record``, ``stat`` for the outcome counters of ``report.OUTCOMES``, ``anomaly``
for node behaviour against its contract). It never imports the server.

``start(nemesis)`` returns what it did in words (the nemesis log's ``detail``). The nemesis
heals everything at every heal, whatever the fault was: first every link (partition,
degrade), then ``heal(nemesis)`` of every kind in the table's order (a no-op when the kind
has nothing to undo: paused nodes, the disk fault's node, wiped nodes still to watch), then
it restarts the nodes a fault killed (kill, transfer) and looks for crashes. The kinds:

- ``partition``: isolate a node, a majority/minority split, a bridge, or a one-way cut from
  a node (often the leader); "block" (70 %) or "blackhole".
- ``kill``: SIGKILL a minority of nodes, often the leader first.
- ``pause``: SIGSTOP a node (often the leader); SIGCONT at the heal.
- ``degrade``: every peer link drops 5-30 % of its frames and delays the rest 2-50 ms.
- ``wipe``: SIGKILL a follower, delete its data, restart it with ``--rejoin``; watched until
  its log shows a snapshot install (``wipe_via_snapshot``) or it exits (an anomaly).
- ``transfer``: SIGTERM the leader: it must hand leadership over and exit 0 within 10 s.
- ``disk``: a write error (restart under RLIMIT_FSIZE a little past the newest WAL segment:
  it must exit 3, or still be running at the heal) or, with the WAL, a torn tail (SIGKILL,
  append what a crash in mid-write leaves, restart: it must start and cut it).
- ``member`` (``membership.MemberFault``): add a learner, promote it, remove a voter (the
  leader sometimes), replace a node; removed nodes must exit 0 by themselves.

The nodes a fault picks from are the current members (``nemesis.procs.ids``); a partition
picks among those behind a proxy (a node added at runtime is, once it has joined); a wipe
among those that can restart with ``--rejoin`` (``NodeProcs.can_rejoin``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .proxy import BLACKHOLE, BLOCK

if TYPE_CHECKING:  # pragma: no cover
    from .nemesis import Nemesis

__all__ = ["Fault", "Partition", "Kill", "Pause", "Degrade", "Wipe", "Transfer", "Disk",
           "make_faults"]

_TRANSFER_WAIT = 10.0       # seconds a SIGTERMed leader has to hand over and exit


class Fault:
    """One kind of fault (the class attribute ``kind``); an instance belongs to one run and
    keeps what its heal needs."""

    kind = "?"

    async def start(self, nem: Nemesis) -> str:
        """Inject one fault of this kind; returns what was done, in words."""
        raise NotImplementedError

    def heal(self, nem: Nemesis) -> None:
        """Undo what is left of this kind's faults (nothing by default)."""

    def expects_exit(self, i: int) -> bool:
        """Whether node ``i`` may exit on its own now (then it is no crash)."""
        return False


class Partition(Fault):
    """Cut links through the proxies (healed with every link by the nemesis)."""

    kind = "partition"

    async def start(self, nem: Nemesis) -> str:
        ids, rng, proxies = nem.proxied_ids(), nem.rng, nem.proxies
        n = len(ids)
        if n < 2:
            return "partition: fewer than two nodes behind proxies; nothing done"
        mode = BLOCK if rng.random() < 0.7 else BLACKHOLE
        shape = rng.choice(["isolate", "split", "bridge", "one_way"] if n >= 3
                           else ["isolate", "one_way"])
        t = await nem.target(among=ids)
        if shape == "isolate":
            proxies.isolate(t, mode)
            return f"isolate {t} ({mode})"
        if shape == "split":
            shuffled = ids[:]
            rng.shuffle(shuffled)
            minority = shuffled[: (n - 1) // 2]
            proxies.partition([minority, shuffled[len(minority):]], mode)
            return f"split {sorted(minority)} | {sorted(shuffled[len(minority):])} ({mode})"
        if shape == "bridge":
            others = [i for i in ids if i != t]
            rng.shuffle(others)
            half = len(others) // 2
            proxies.bridge(others[:half], others[half:], via=t, mode=mode)
            return f"bridge {sorted(others[:half])} <-{t}-> {sorted(others[half:])} ({mode})"
        other = rng.choice([i for i in ids if i != t])
        proxies.one_way(t, other, mode)
        return f"one-way {t} -> {other} ({mode})"


class Degrade(Fault):
    """Drop and delay frames on every link (healed with every link by the nemesis)."""

    kind = "degrade"

    async def start(self, nem: Nemesis) -> str:
        rng = nem.rng
        drop = round(rng.uniform(0.05, 0.3), 3)
        delay = round(rng.uniform(0.002, 0.05), 4)
        jitter = round(rng.uniform(0, delay), 4)
        nem.proxies.degrade(drop=drop, delay=delay, jitter=jitter)
        return (f"degrade every link: drop {drop:.0%}, delay {delay * 1000:.0f}"
                f"±{jitter * 1000:.0f} ms")


class Kill(Fault):
    """SIGKILL a minority of nodes (restarted by the nemesis at the heal)."""

    kind = "kill"

    async def start(self, nem: Nemesis) -> str:
        ids, rng = nem.procs.ids, nem.rng
        k = rng.randint(1, max(1, (len(ids) - 1) // 2))
        first = await nem.target()
        victims = [first] + rng.sample([i for i in ids if i != first], k - 1)
        for v in victims:
            nem.kill(v)
        return f"kill -9 {sorted(victims)}"


class Pause(Fault):
    """SIGSTOP a node; SIGCONT at the heal."""

    kind = "pause"

    async def start(self, nem: Nemesis) -> str:
        t = await nem.target()
        nem.procs.pause(t)
        return f"pause {t}"

    def heal(self, nem: Nemesis) -> None:
        for i in list(nem.procs.paused):
            nem.procs.resume(i)


class Wipe(Fault):
    """A follower loses its data and rejoins; ``rejoined`` (node -> its log size at the
    restart) are watched at every heal until a snapshot install shows in the log."""

    kind = "wipe"

    def __init__(self) -> None:
        self.rejoined: dict[int, int] = {}

    async def start(self, nem: Nemesis) -> str:
        ids = [i for i in nem.procs.ids if nem.procs.can_rejoin(i)]
        if not ids:
            return "wipe: no node that can --rejoin; nothing done"
        lead = await nem.leader()
        cands = [i for i in ids if i != lead and i not in nem.procs.paused]
        t = nem.rng.choice(cands or ids)
        nem.procs.kill(t)
        shutil.rmtree(nem.node_dir(t), ignore_errors=True)
        self.rejoined[t] = nem.log_size(t)
        nem.procs.start(t, rejoin=True)
        return f"wipe {t} (leader {lead}): kill -9, data deleted, restarted with --rejoin"

    def heal(self, nem: Nemesis) -> None:
        for t, off in list(self.rejoined.items()):
            text = nem.log_since(t, off)
            if "installed snapshot" in text:
                nem.stat("wipe_via_snapshot")
                del self.rejoined[t]
            elif nem.procs.exited(t) is not None:
                nem.anomaly(f"wiped node {t} exited with code {nem.procs.exited(t)}")
                del self.rejoined[t]


class Transfer(Fault):
    """SIGTERM the leader: a clean handover and exit 0 within 10 s, else an anomaly (the node
    is restarted by the nemesis at the heal)."""

    kind = "transfer"

    async def start(self, nem: Nemesis) -> str:
        lead = await nem.leader()
        if lead is None:
            nem.stat("transfer_no_leader")
            return "transfer: no leader known; nothing done"
        nem.procs.terminate(lead)
        loop = asyncio.get_running_loop()
        end = loop.time() + _TRANSFER_WAIT
        while nem.procs.running(lead) and loop.time() < end:
            await asyncio.sleep(0.02)
        rc = nem.procs.exited(lead)
        if rc is None:
            nem.anomaly(f"leader {lead} did not stop within 10 s of SIGTERM; kill -9")
        elif rc != 0:
            nem.anomaly(f"leader {lead} exited with code {rc} after SIGTERM (not 0)")
        else:
            nem.stat("transfer_clean_exit")
        nem.kill(lead)
        new = await nem.leader()
        return f"transfer: SIGTERM leader {lead} (exit {rc}); leader now {new}"


class Disk(Fault):
    """A write error or a torn WAL tail. ``limited``: the node running under RLIMIT_FSIZE
    (it may exit 3: no crash); ``torn``: node -> its log size at the restart, with
    ``torn_segment`` the segment that got the junk."""

    kind = "disk"

    def __init__(self) -> None:
        self.limited: int | None = None
        self.torn: dict[int, int] = {}
        self.torn_segment: dict[int, Path | None] = {}

    def expects_exit(self, i: int) -> bool:
        return i == self.limited

    async def start(self, nem: Nemesis) -> str:
        t = await nem.target()
        if nem.storage != "wal" or nem.rng.random() < 0.5:
            return self._write_error(nem, t)
        return self._torn_record(nem, t)

    def _write_error(self, nem: Nemesis, t: int) -> str:
        # restart under RLIMIT_FSIZE a little past the newest segment's size, so one of the
        # next writes fails with EFBIG
        nem.procs.kill(t)
        seg = _newest_segment(nem, t)
        size = seg.stat().st_size if seg is not None else 0
        limit = size + nem.rng.randint(4 << 10, 32 << 10)
        self.limited = t
        nem.procs.start(t, fsize_limit=limit, log_name=f"node{t}.efbig.log")
        return (f"disk write error: node {t} restarted under RLIMIT_FSIZE={limit} "
                f"(newest segment {seg.name if seg else '-'} at {size} bytes)")

    def _torn_record(self, nem: Nemesis, t: int) -> str:
        nem.procs.kill(t)
        seg = _newest_segment(nem, t)
        how = "(no segment)"
        if seg is not None:
            junk, how = torn_tail_bytes(nem.rng, seg.read_bytes())
            with open(seg, "ab") as f:
                f.write(junk)
        self.torn[t] = nem.log_size(t)
        self.torn_segment[t] = seg
        nem.procs.start(t)
        return (f"disk torn record: node {t} kill -9, {how} appended to "
                f"{seg.name if seg else '-'}, restarted")

    def heal(self, nem: Nemesis) -> None:
        if self.limited is not None:
            self._heal_write_error(nem)
        for t, off in list(self.torn.items()):
            if nem.procs.exited(t) is not None:
                nem.anomaly(f"node {t} did not recover from a torn WAL tail: exit "
                            f"{nem.procs.exited(t)}: " + nem.log_excerpt(t, off))
                nem.crashed(t)
            else:
                nem.stat("torn_tail_recovered")
                bad = segment_damage(self.torn_segment.get(t))
                if bad:
                    nem.anomaly(f"node {t} kept the torn tail: {bad}")
        self.torn.clear()
        self.torn_segment.clear()

    def _heal_write_error(self, nem: Nemesis) -> None:
        """The node under RLIMIT_FSIZE must have exited 3 or still be running; it restarts
        normally, its log appended to its usual one."""
        t, self.limited = self.limited, None
        rc = nem.procs.exited(t)
        if rc is None:
            nem.stat("disk_error_not_reached")
        elif rc == 3:
            nem.stat("disk_error_exit_3")
        else:
            nem.anomaly(f"node {t} under RLIMIT_FSIZE exited with code {rc}, not 3")
        nem.procs.kill(t)
        efbig = nem.procs.base / f"node{t}.efbig.log"
        try:
            with open(efbig, "rb") as src, open(nem.procs.base / f"node{t}.log", "ab") as dst:
                dst.write(src.read())
            efbig.unlink()
        except OSError:
            pass
        nem.procs.start(t)


def _newest_segment(nem: Nemesis, i: int) -> Path | None:
    segs = sorted((Path(nem.node_dir(i)) / "wal").glob("wal-*.log"))
    return segs[-1] if segs else None


def torn_tail_bytes(rng, data: bytes) -> tuple[bytes, str]:
    """Bytes a crash in mid-write could leave after the last record of the segment ``data``,
    and their description: a strict prefix of a real record (its header intact, the payload
    cut), fewer random bytes than a record header, or a zero-filled extension. (Random bytes
    as long as a header fail its checksum: the WAL calls that damage, not a torn write, and
    refuses to start.)"""
    from ..core import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_records

    shape = rng.choice(["prefix", "short", "zeros"])
    if shape == "prefix" and len(data) > SEGMENT_HEADER_SIZE:
        recs, end, _, _ = decode_records(data, SEGMENT_HEADER_SIZE)
        if recs and recs[-1][3]:
            size = RECORD_HEADER_SIZE + len(recs[-1][3])
            rec = data[end - size:end]
            cut = rng.randint(RECORD_HEADER_SIZE + 1, size - 1) \
                if size - 1 > RECORD_HEADER_SIZE else RECORD_HEADER_SIZE - 1
            return rec[:cut], f"a {cut}-byte prefix of a {size}-byte record"
        shape = "short"
    if shape == "short":
        n = rng.randint(1, RECORD_HEADER_SIZE - 1)
        return bytes(rng.randrange(256) for _ in range(n)), f"{n} random bytes"
    n = rng.choice([512, 4096, 8192])
    return bytes(n), f"{n} zero bytes"


def segment_damage(seg: Path | None) -> str | None:
    """None if ``seg`` (a WAL segment the node has written on since) decodes cleanly or with
    a torn end (a write in flight); else the reason (the junk was not cut)."""
    from ..core import DEFAULT_MAX_RECORD_SIZE, SEGMENT_HEADER_SIZE, WAL_CORRUPT, decode_records

    try:
        data = seg.read_bytes() if seg is not None else b""
    except OSError:
        return None          # compacted away since
    if len(data) <= SEGMENT_HEADER_SIZE:
        return None
    _, _, status, reason = decode_records(data, SEGMENT_HEADER_SIZE, DEFAULT_MAX_RECORD_SIZE)
    return f"{seg.name}: {reason}" if status == WAL_CORRUPT else None


def make_faults() -> dict[str, Fault]:
    """A fresh fault of every kind for one run, kind -> fault, in the order their heals run
    (links first, then paused nodes resumed, the disk fault's node, the wiped nodes, the
    removed nodes' exits)."""
    from .membership import MemberFault

    return {cls.kind: cls() for cls in (Partition, Degrade, Pause, Disk, Wipe, Kill,
                                        Transfer, MemberFault)}
