"""Seeded scenarios: a cluster of simulated nodes under a random fault plan, checked after
every step, then healed and checked for liveness; and the runner behind ``fastraft sim``.

Place in the architecture: the top of the simulator (``fastraft.sim``). One scenario is a pure
function of its ``SimConfig`` (the seed included): every random stream is derived from the
seed, so ``fastraft sim --seeds N --nodes K ...`` replays a failure exactly. Only
``run_seeds`` touches the OS, to spread seeds over worker processes.

A scenario has two phases:

1. Faults (``steps`` ticks): client writes and ReadIndex reads at random nodes while the
   fault plan partitions the network (symmetric splits, one-way cuts, an isolated leader, a
   bridge), crashes nodes (also in the middle of handling a Ready, losing unsynced writes)
   and restarts them, pauses nodes for longer than an election timeout, transfers
   leadership, and the links lose, duplicate, delay and reorder messages. With ``tuning``
   the engine's message size limit, in-flight window, tick ratio, pre-vote, check-quorum,
   promotion lag, snapshot interval and write batch size are drawn per seed (``Tuning``);
   ``churn`` deposes or crashes leaders that hold uncommitted entries, crashes nodes
   between writing a vote or accepted entries and the fsync their answers wait for, and
   leaders between sending entries and their own fsync; ``stale_reads`` sends reads to
   leaders that a newer one has already replaced; ``membership`` adds learners (brand-new
   node ids with an empty disk), promotes them, removes voters, the leader, and replaces
   nodes (``members.py``), splitting the network along a change and pausing its leader,
   while every other fault goes on; removed nodes keep running; ``late`` holds a few
   messages on each link for several election timeouts (a slow path, a frame queued behind
   a snapshot), so answers and requests of terms long gone reach nodes that moved on, and
   parks the acknowledgements on their way to a leader that crashes or is cut off until it
   leads again (an adversarial delay), the lead being handed back to it; ``swarm`` draws per
   seed how intense each of partition, crash, torn, pause, loss, dup, churn, transfer,
   membership and late is, off a third of the time (swarm testing: a seed where some fault
   kinds rage and the others keep quiet reaches interleavings that a uniform mix of
   everything drowns).
2. Liveness: everything heals (links clean, every node up); within ``liveness_ticks`` a
   leader must be elected and a fresh proposal must commit.

The checker's invariants run after every tick (and at every commit and election, as they
happen); an engine AssertionError counts as a violation too. Every cluster bootstraps as the
runtime does: the configuration is entry 1 of every initial node's log (``cluster.py``).
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass

from ..errors import Busy, NotLeader
from ..raft import LEADER, MsgType, RaftConfig
from .cluster import SimNode, SimStateMachine, Workload
from .invariants import Checker
from .kvmachine import KVCommands, KVSimMachine
from .members import MembershipDriver
from .network import LinkConfig, Network

__all__ = ["SimConfig", "Simulation", "Tuning", "run_scenario", "run_seeds", "FAULT_KINDS",
           "BASE_FAULT_KINDS", "SWARM_KINDS", "SWARM_LEVELS", "parse_seeds", "replay_command"]

FAULT_KINDS = ("partition", "crash", "torn", "pause", "loss", "dup", "delay", "transfer",
               "tuning", "churn", "stale_reads", "membership", "late", "swarm")
#: The fault kinds whose intensity ``swarm`` draws per seed.
SWARM_KINDS = ("partition", "crash", "torn", "pause", "loss", "dup", "churn", "transfer",
               "membership", "late")
#: The intensities ``swarm`` draws from (off a third of the time).
SWARM_LEVELS = (0, 0, 0.5, 1, 2, 4)
#: The fault model before ``tuning``, ``churn`` and ``stale_reads`` (bench/sim_power.py
#: compares both: ``--faults`` with these kinds replays the old model).
BASE_FAULT_KINDS = FAULT_KINDS[:8]


@dataclass
class Tuning:
    """The engine and workload tuning of one scenario. With the ``tuning`` fault kind it is
    drawn per seed (from its own stream, so the seed alone still replays the run): small
    message limits and in-flight windows split replication into many small appends, which
    leaves logs partially replicated when leaders change; other tick ratios shift elections
    against heartbeats; without pre-vote (a quarter of the seeds) candidates of one term
    compete more often; without check-quorum (a quarter of the others) a leader cut off
    from its majority keeps leading (and serving reads) while a newer one is elected; a
    large ``promote_lag`` lets learners be promoted before they caught up."""
    election_tick: int
    heartbeat_tick: int
    max_inflight_msgs: int
    max_msg_bytes: int
    snapshot_every: int
    keep_tail: int
    max_batch: int = 3
    pre_vote: bool = True
    check_quorum: bool = True
    promote_lag: int = 16

    @classmethod
    def draw(cls, rng: random.Random) -> "Tuning":
        """A random tuning (every choice from ``rng``)."""
        et = rng.choice((4, 6, 10, 10, 16))
        return cls(election_tick=et,
                   heartbeat_tick=rng.randint(1, max(1, et // 3)),
                   max_inflight_msgs=rng.choice((1, 1, 2, 4, 8, 64)),
                   max_msg_bytes=rng.choice((1, 24, 48, 96, 4096)),
                   snapshot_every=rng.choice((8, 16, 64, 256)),
                   keep_tail=rng.choice((0, 2, 8)),
                   max_batch=rng.choice((1, 3, 8)),
                   pre_vote=(pre_vote := rng.random() < 0.75),
                   # never both off: nothing would keep removed nodes from disrupting
                   # the cluster (thesis §4.2.3)
                   check_quorum=rng.random() < 0.75 or not pre_vote,
                   promote_lag=rng.choice((16, 64, 1 << 20)))


@dataclass
class SimConfig:
    """One scenario: its seed (everything random derives from it), the cluster size, the
    ticks of the fault phase, the fault kinds, and the engine and workload knobs."""
    seed: int
    nodes: int = 3
    steps: int = 300
    faults: frozenset = frozenset(FAULT_KINDS)
    election_tick: int = 10
    heartbeat_tick: int = 2
    snapshot_every: int = 64
    keep_tail: int = 8
    liveness_ticks: int = 300
    propose_rate: float = 0.4
    read_rate: float = 0.2
    max_inflight_msgs: int = 8
    #: the real state machine on every node, fed real commands (``kvmachine``)
    kv: bool = False


def replay_command(cfg: SimConfig) -> str:
    """The ``fastraft sim`` command line that replays ``cfg`` exactly."""
    faults = ",".join(k for k in FAULT_KINDS if k in cfg.faults) or "none"
    if set(FAULT_KINDS) <= set(cfg.faults):
        faults = "all"
    cmd = (f"fastraft sim --seeds {cfg.seed} --nodes {cfg.nodes} --steps {cfg.steps} "
           f"--faults {faults}" + (" --kv" if cfg.kv else ""))
    notes = []                   # derived from the seed: shown, not needed to replay
    if "tuning" in cfg.faults:
        t = Tuning.draw(random.Random(f"{cfg.seed}/tuning"))
        notes.append("tuning: " + " ".join(f"{k}={v}" for k, v in vars(t).items()))
    if "swarm" in cfg.faults:
        srng = random.Random(f"{cfg.seed}/swarm")
        draws = {k: srng.choice(SWARM_LEVELS) for k in SWARM_KINDS}
        notes.append("swarm: " + " ".join(f"{k}={v:g}" for k, v in draws.items()
                                          if k in cfg.faults))
    return cmd + ("  # " + "; ".join(notes) if notes else "")


class Simulation:
    """A seeded run: simulated nodes, network and workload, advanced one tick at a time,
    with the invariant checker looking after every step."""
    def __init__(self, cfg: SimConfig) -> None:
        if not 1 <= cfg.nodes <= 9:
            raise ValueError("the simulator runs 1 to 9 nodes")
        self.cfg = cfg
        seed = cfg.seed
        self.rng = random.Random(f"{seed}/faults")
        self.client_rng = random.Random(f"{seed}/client")
        self.net = Network(random.Random(f"{seed}/net"), LinkConfig(1, 2))
        # What the runtime's transport tells an engine of closed connections (rule 9 of
        # raft.py): its own stream, so that the other draws do not shift.
        self.hint_rng = random.Random(f"{seed}/hints")
        self.checker = Checker()
        self.workload = Workload(self.client_rng, self.checker)
        self.now = 0
        self.machine = KVSimMachine if cfg.kv else SimStateMachine
        if cfg.kv:
            self.workload.make_payload = KVCommands(
                random.Random(f"{seed}/kv"), lambda: self.now, range(1, cfg.nodes + 10))
        self.ids = list(range(1, cfg.nodes + 1))
        self.faults = cfg.faults
        self.intensity = self._intensity()
        # Per Ready, the chance of a crash inside the runtime's handling of it (torn writes).
        self.crash_in_ready = (self.rng.choice((0.001, 0.005, 0.02)) * self.intensity["torn"]
                               if "torn" in cfg.faults else 0.0)
        # Up to how many ticks an fsync may take (0: every Ready synced at once).
        self.sync_delay = self.rng.choice((0, 1, 3)) if "delay" in cfg.faults else 0
        # Per Ready with answers (x5 when it grants a vote), the chance of a crash before
        # its fsync (churn).
        self.crash_on_ack = 0.02 * min(self.intensity["churn"], 2.0)
        self.restart_at: dict[int, int] = {}
        self.tuning = self._tuning()
        self._node_rng = random.Random(f"{seed}/nodes")
        self.nodes: dict[int, SimNode] = {}
        self._last_id = cfg.nodes
        for i in self.ids:
            self._start_node(i, bootstrap=self.ids)
        self._configure_links()
        self.partitioned = False
        self.partition_until = 0               # a partition that must last until then
        self.transfer_back: int | None = None   # a deposed leader to hand the lead back to
        self.heal_after_election = 0            # heal once a term above this one has a leader
        self.elections = 0
        self.transfers = 0
        self.members = (MembershipDriver(self, self.intensity["membership"])
                        if self.intensity["membership"] else None)

    def _start_node(self, nid: int, bootstrap=()) -> SimNode:
        # Every node starts with an empty configuration: the initial ones find theirs at
        # entry 1 of their log, the others receive it (cluster.py, "Bootstrap").
        tun = self.tuning
        rc = RaftConfig(nid, (), election_tick=tun.election_tick,
                        heartbeat_tick=tun.heartbeat_tick, pre_vote=tun.pre_vote,
                        check_quorum=tun.check_quorum, promote_lag=tun.promote_lag,
                        max_inflight_msgs=tun.max_inflight_msgs,
                        max_msg_bytes=tun.max_msg_bytes)
        sn = SimNode(nid, rc, random.Random(self._node_rng.getrandbits(64)),
                     tun.snapshot_every, tun.keep_tail, bootstrap, self.machine)
        self.nodes[nid] = sn
        self.checker.disks[nid] = sn.storage
        return sn

    def next_id(self) -> int:
        """A node id never used in this scenario (for a node to add)."""
        self._last_id += 1
        return self._last_id

    def add_node(self, nid: int) -> SimNode:
        """Start brand-new node ``nid`` (empty disk, empty configuration), linked to every
        other node like them."""
        sn = self._start_node(nid)
        for other in self.ids:
            self._configure_link(nid, other)
            self._configure_link(other, nid)
        self.ids.append(nid)
        return sn

    def _intensity(self) -> dict:
        """How intense each fault kind of ``SWARM_KINDS`` is in this seed (1: the base
        rates; 0 for the kinds off)."""
        cfg = self.cfg
        out = {k: (1.0 if k in cfg.faults else 0.0) for k in SWARM_KINDS}
        if "swarm" in cfg.faults:
            srng = random.Random(f"{cfg.seed}/swarm")
            for k in SWARM_KINDS:
                out[k] *= srng.choice(SWARM_LEVELS)
        return out

    def _tuning(self) -> Tuning:
        cfg = self.cfg
        if "tuning" in cfg.faults:
            return Tuning.draw(random.Random(f"{cfg.seed}/tuning"))
        return Tuning(cfg.election_tick, cfg.heartbeat_tick, cfg.max_inflight_msgs, 4096,
                      cfg.snapshot_every, cfg.keep_tail)

    def _configure_links(self) -> None:
        for a in self.ids:
            for b in self.ids:
                if a != b:
                    self._configure_link(a, b)

    def _configure_link(self, a: int, b: int) -> None:
        rng = self.rng
        f = self.faults
        cfg = LinkConfig(1, 1)
        if "delay" in f:
            cfg.max_latency = rng.randint(1, 6)
        if "loss" in f:
            cfg.loss = rng.choice((0.0, 0.01, 0.05, 0.15)) * min(self.intensity["loss"], 2.0)
        if "dup" in f:
            cfg.duplicate = rng.choice((0.0, 0.01, 0.05)) * self.intensity["dup"]
        if "late" in f:
            cfg.late = rng.choice((0.0, 0.002, 0.01, 0.03)) * self.intensity["late"]
            et = self.tuning.election_tick
            cfg.late_latency = (2 * et, 12 * et)
        self.net.links[(a, b)] = cfg

    # -- node lifecycle -----------------------------------------------------------------------

    def crash_node(self, sn: SimNode, soon: bool = False) -> None:
        """Crash ``sn`` (its unsynced writes may be lost) and plan its restart (within an
        election timeout or two when ``soon``). With ``late``, a leader's acknowledgements
        are parked, and so are the appends it sent to about half of its followers: those
        get its last entries late, the others at once (and acknowledge them); once another
        leader is elected, the lead is handed back to it."""
        if self.intensity["late"] and sn.node is not None and sn.node.role == LEADER:
            self.delay_answers_to(sn)
            if self.transfer_back is None:
                self.transfer_back = sn.id
            some = {i for i in self.ids if i != sn.id and self.rng.random() < 0.5}
            nid = sn.id
            self.net.park(lambda m: m.frm == nid and m.to in some and m.type == MsgType.APP,
                          self.now + 12 * self.tuning.election_tick)
        sn.crash()
        self._connection_closed(sn.id)
        self.workload.forget_node(sn.id)
        self.checker.on_restart(sn.id)
        if soon:
            self.restart_at[sn.id] = self.now + self.rng.randint(1, 2 * self.tuning.election_tick)
        else:
            self.restart_at[sn.id] = self.now + self.rng.randint(5, 80)

    def _connection_closed(self, nid: int, only=None) -> None:
        """The connections of node ``nid`` closed (it crashed; or, with ``only``, one
        connection to that node was reset): most of the nodes it was connected to notice
        (``RawNode.leader_lost``), as the real transport tells them."""
        for sn in ([only] if only is not None else self.live()):
            if sn.id != nid and sn.node is not None and self.hint_rng.random() < 0.9:
                sn.node.leader_lost(nid)

    def restart_node(self, sn: SimNode) -> None:
        """Restart ``sn`` from what its store kept."""
        self.restart_at.pop(sn.id, None)
        sn.start()
        self.checker.on_restart(sn.id)

    def live(self) -> list[SimNode]:
        """The nodes that run and are not paused."""
        return [sn for sn in self.nodes.values()
                if sn.node is not None and sn.paused_until < self.now]

    def leader(self) -> SimNode | None:
        """The live leader of the highest term, if any."""
        best = None
        for sn in self.live():
            if sn.node.role == LEADER and (best is None or sn.node.term > best.node.term):
                best = sn
        return best

    # -- one tick -----------------------------------------------------------------------------

    def tick(self, faults: bool = True) -> None:
        """Advance one tick: faults (when ``faults``), client traffic, deliveries, the
        nodes' Ready cycles, then the invariant checks."""
        self.now += 1
        now = self.now
        for nid, when in list(self.restart_at.items()):
            if when <= now:
                self.restart_node(self.nodes[nid])
        for sn in self.nodes.values():
            if sn.node is not None and sn.paused_until == now:
                self._resume(sn)
        if faults:
            self._inject_faults()
        self._client_ops()
        if self.net.parked:
            self._release_parked()
        for sn in self.live():
            sn.tick(self)
        self._process_all()
        self._deliver()
        self._check()

    def _resume(self, sn: SimNode) -> None:
        inbox, sn.inbox = sn.inbox, []
        for m in inbox:
            sn.step(self, m)
        sn.handle_ready(self)

    def _process_all(self) -> None:
        for sn in self.live():
            sn.handle_ready(self)

    def _deliver(self) -> None:
        net = self.net
        nodes = self.nodes
        for _ in range(10_000):
            msgs = net.due(self.now)
            if not msgs and not net.dropped_snapshots:
                return
            for m in msgs:
                dst = nodes[m.to]
                if dst.node is None:
                    if m.type == MsgType.SNAP:
                        self._report_snapshot(m, False)
                    continue
                if dst.paused_until >= self.now:
                    dst.inbox.append(m)
                    continue
                dst.step(self, m)
                if m.type == MsgType.SNAP:
                    self._report_snapshot(m, True)
            lost, net.dropped_snapshots = net.dropped_snapshots, []
            for m in lost:
                self._report_snapshot(m, False)
            self._process_all()
        raise AssertionError("message delivery did not settle within one tick")

    def _report_snapshot(self, m, ok: bool) -> None:
        src = self.nodes[m.frm]
        if src.node is not None:
            src.node.report_snapshot(m.to, ok)

    def _check(self) -> None:
        checker = self.checker
        for sn in self.nodes.values():
            if sn.node is not None:
                checker.check_node(sn.id, sn.node._raft)
        for sn in self.nodes.values():
            if sn.waiting_reads and sn.node is not None:
                sn._serve_reads(self)

    # -- faults and clients ------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng = self.rng
        f = self.faults
        inten = self.intensity
        ids = self.ids
        n = len(ids)
        if self.heal_after_election:
            lead = self.leader()
            if lead is not None and lead.node.term > self.heal_after_election:
                self.net.heal()
                self.partitioned = False
                self.partition_until = self.heal_after_election = 0
        if "partition" in f and n > 1:
            if self.partitioned and self.now >= self.partition_until and rng.random() < 0.04:
                self.net.heal()
                self.partitioned = False
            elif not self.partitioned and rng.random() < 0.02 * inten["partition"]:
                self._partition()
        if "crash" in f and rng.random() < 0.008 * inten["crash"]:
            alive = [sn for sn in self.nodes.values() if sn.node is not None]
            if alive:
                self.crash_node(rng.choice(alive))
        if "crash" in f and self.hint_rng.random() < 0.004 * inten["crash"]:
            # A connection reset while both ends live: a false alarm the engine must survive.
            live = self.live()
            if live:
                sn = self.hint_rng.choice(live)
                self._connection_closed(sn.node.lead, only=sn)
        if "pause" in f and rng.random() < 0.004 * inten["pause"]:
            live = self.live()
            if live:
                sn = rng.choice(live)
                et = self.tuning.election_tick
                sn.paused_until = self.now + rng.randint(et, 4 * et)
        if "churn" in f and not self.partitioned and rng.random() < 0.05 * inten["churn"]:
            self._depose_mid_replication()
        if self.transfer_back is not None and not self.partitioned:
            self._transfer_back()
        if self.members is not None:
            self.members.tick()
        if "transfer" in f and rng.random() < 0.01 * inten["transfer"]:
            lead = self.leader()
            cs = lead.node.conf_state() if lead is not None else None
            to_pick = sorted(cs.voters - {lead.id}) if cs else []    # incoming voters
            if to_pick:
                to = rng.choice(to_pick)
                prev = self._previous_leader(lead)
                if inten["late"] and prev in to_pick and rng.random() < 0.5:
                    to = prev       # back to a deposed leader, its old acks maybe still late
                try:
                    lead.node.transfer_leadership(to)
                    self.transfers += 1
                except NotLeader:
                    pass

    def delay_answers_to(self, sn: SimNode, until: int | None = None) -> None:
        """``late``: the acknowledgements on their way to ``sn`` (a leader being deposed or
        crashed) are parked, and so is a copy of whatever is sent to it until ``until`` (an
        election timeout or two by default): delivered as soon as ``sn`` leads a later
        term, or after 12 election timeouts."""
        et = self.tuning.election_tick
        deadline = self.now + 12 * et
        nid = sn.id
        self.net.park(lambda m: m.to == nid and m.type == MsgType.APP_RESP, deadline)
        if until is None:
            until = self.now + self.rng.randint(et, 2 * et)
        self.net.echo(nid, until, deadline)

    def _release_parked(self) -> None:
        """Parked messages reach a node once it leads a term above theirs (``late``)."""
        nodes = self.nodes

        def due(m) -> bool:
            sn = nodes[m.to]
            return (sn.node is not None and sn.node.role == LEADER
                    and sn.node.term > m.term)
        self.net.release(self.now, due)

    def _previous_leader(self, lead: SimNode) -> int | None:
        """The leader of the latest term before ``lead``'s that had one."""
        terms = [t for t in self.checker.leaders if t < lead.node.term]
        return self.checker.leaders[max(terms)] if terms else None

    def _depose_mid_replication(self) -> None:
        """More leader changes over partially replicated logs: a leader with uncommitted
        entries is cut off with a minority (those it replicated to or not) or crashes, so
        that the next leader is elected over logs that differ in their tails. With ``late``,
        the acknowledgements on their way to it are held for a few election timeouts: they
        reach it in a later term (re-elected maybe, its tail overwritten meanwhile)."""
        rng = self.rng
        lead = self.leader()
        if lead is None or lead.node.status().committed >= lead.node._raft.log.last_index:
            return
        late = bool(self.intensity["late"])
        if rng.random() < 0.5:
            self.crash_node(lead, soon=True)   # back soon, with its partial tail
            return
        others = [i for i in self.ids if i != lead.id]
        rng.shuffle(others)
        hi = (len(self.ids) - 1) // 2
        lo = 0
        if late:
            # A strict minority, with one follower at least when there is room: what it
            # acknowledges reaches the deposed leader once it leads again.
            hi = (len(self.ids) + 1) // 2 - 2 if len(self.ids) > 3 else 0
            lo = min(1, hi)
        k = rng.randint(lo, hi)
        self.net.split([lead.id] + others[:k], others[k:])
        self.partitioned = True
        if late:
            # What its side acknowledges is late too; the partition lasts until the other
            # side elected (no longer: the new leader's log is shorter than the deposed
            # one's tail), and once it heals the lead is handed back at once.
            self.delay_answers_to(lead, until=self.now + 1_000_000)
            self.transfer_back = lead.id
            self.partition_until = self.now + 1_000_000
            self.heal_after_election = lead.node.term

    def _transfer_back(self) -> None:
        lead = self.leader()
        target = self.transfer_back
        sn = self.nodes[target]
        if lead is not None and lead.id == target:
            self.transfer_back = None         # it leads again already
            return
        if lead is None or sn.node is None:
            return                            # wait for another leader, and the target
        self.transfer_back = None
        if target in lead.node.conf_state().voters:
            try:
                lead.node.transfer_leadership(target)
                self.transfers += 1
            except NotLeader:
                pass

    def _partition(self) -> None:
        rng = self.rng
        ids = list(self.ids)
        kind = rng.choice(("split", "oneway", "isolate_leader", "bridge"))
        if kind == "split":
            rng.shuffle(ids)
            k = rng.randint(1, len(ids) - 1)
            self.net.split(ids[:k], ids[k:])
        elif kind == "oneway":
            for _ in range(rng.randint(1, len(ids))):
                a, b = rng.sample(ids, 2)
                self.net.cut(a, b)
        elif kind == "isolate_leader":
            lead = self.leader()
            self.net.isolate(lead.id if lead else rng.choice(ids), ids)
            if lead is not None and self.intensity["late"]:
                self.delay_answers_to(lead, until=self.now + 1_000_000)
        else:
            if len(ids) < 3:
                self.net.isolate(rng.choice(ids), ids)
            else:
                rng.shuffle(ids)
                b = ids[0]
                rest = ids[1:]
                k = rng.randint(1, len(rest) - 1)
                self.net.bridge(rest[:k], b, rest[k:])
        self.partitioned = True

    def _client_ops(self) -> None:
        rng = self.client_rng
        wl = self.workload
        if rng.random() < self.cfg.propose_rate:
            sn = self._client_target(rng)
            if sn is not None:
                wl.propose(sn, rng.randint(1, self.tuning.max_batch))
        if rng.random() < self.cfg.read_rate:
            sn = self._client_target(rng)
            if sn is not None:
                wl.read(sn)
        if "stale_reads" in self.faults and rng.random() < 0.5:
            # Reads at leaders about to be deposed: every leader but the newest one (it
            # does not know yet) is asked, as a client that has not noticed would.
            lead = self.leader()
            for sn in self.live():
                if sn.node.role == LEADER and sn is not lead:
                    wl.read(sn)

    def _client_target(self, rng) -> SimNode | None:
        live = self.live()
        if not live:
            return None
        leaders = [sn for sn in live if sn.node.role == LEADER]
        if leaders and rng.random() < 0.85:
            return rng.choice(leaders)
        return rng.choice(live)

    # -- phases -------------------------------------------------------------------------------

    def heal_all(self) -> None:
        """End every fault: partitions and degraded links heal, crashed nodes restart, paused
        ones resume."""
        self.net.heal()
        self.partitioned = False
        for key in self.net.links:
            self.net.links[key] = LinkConfig(1, 2)
        self.crash_in_ready = 0.0
        self.crash_on_ack = 0.0
        for sn in self.nodes.values():
            if sn.node is None:
                self.restart_node(sn)
            elif sn.paused_until >= self.now:
                sn.paused_until = self.now
                self._resume(sn)

    def check_liveness(self) -> int | None:
        """Heal, then tick until a leader commits a fresh proposal; returns the ticks it took,
        or None when it did not happen within ``liveness_ticks``."""
        self.heal_all()
        marker = None   # (node id, index, term) of the probe write
        wl = self.workload
        budget = self.cfg.liveness_ticks
        if "tuning" in self.faults:
            # One entry per append and one append in flight can leave a backlog of hundreds
            # of round trips to replicate before the probe commits.
            budget *= 5
        for t in range(1, budget + 1):
            self.tick(faults=False)
            if self.checker.violations:
                return None
            if marker is not None and wl.watch_acked:
                return t
            lead = self.leader()
            if lead is not None and (marker is None or marker[0] != lead.id
                                     or marker[2] != lead.node.term):
                probe = (b"liveness-probe" if wl.make_payload is None    # kv mode: a command
                         else wl.make_payload.tick(lead.id))
                try:
                    first, term = lead.node.propose([probe])
                except (NotLeader, Busy):
                    continue
                marker = (lead.id, first, term)
                wl.pending[(lead.id, first)] = (term, probe)
                wl.watch = (lead.id, first)
        return None


def run_scenario(cfg: SimConfig) -> dict:
    """Run ``cfg``: the fault phase, then healing and the liveness check; the summary of
    the run (violations, liveness, counts) as a dict."""
    sim = Simulation(cfg)
    error = None
    live_ticks = None
    try:
        for _ in range(cfg.steps):
            sim.tick()
            if sim.checker.violations:
                break
        if not sim.checker.violations:
            live_ticks = sim.check_liveness()
    except AssertionError as e:   # an engine invariant broke: a safety failure
        error = f"engine assertion: {e}\n{traceback.format_exc(limit=6)}"
    except Exception as e:        # broken state surfaced elsewhere (e.g. a mutated engine)
        error = (f"unexpected {type(e).__name__}: {e}\n"
                 f"{traceback.format_exc(limit=6)}")
    violations = list(sim.checker.violations)
    if error:
        violations.append(error)
    commits = max((sn.node.status().committed for sn in sim.nodes.values()
                   if sn.node is not None), default=0)
    wl = sim.workload
    return {
        "seed": cfg.seed,
        "nodes": cfg.nodes,
        "ok": not violations and live_ticks is not None,
        "violations": violations,
        "liveness_ok": not violations and live_ticks is not None,
        "liveness_ticks": live_ticks,
        "elections": len(sim.checker.leaders),
        "commits": commits,
        "proposed": wl.proposed,
        "acked": wl.acked,
        "reads": wl.reads_served,
        "crashes": sum(sn.crashes for sn in sim.nodes.values()),
        "messages": sim.net.sent,
        "conf_changes": sim.members.proposed if sim.members is not None else 0,
        "nodes_added": len(sim.nodes) - cfg.nodes,
        "removed_vote_requests": sim.checker.removed_requests,
        "ticks": sim.now,
        "replay": replay_command(cfg),
    }


def parse_seeds(text: str) -> range:
    """``"7"`` or ``"100-199"`` (inclusive)."""
    if "-" in text:
        a, b = text.split("-", 1)
        lo, hi = int(a), int(b)
    else:
        lo = hi = int(text)
    if hi < lo:
        raise ValueError(f"empty seed range {text}")
    return range(lo, hi + 1)


def _run_one(args) -> dict:
    return run_scenario(SimConfig(**args))


def run_seeds(seeds, node_counts, steps: int, faults, workers: int = 1,
              progress=None, kv: bool = False) -> dict:
    """Run every seed (with node count ``node_counts[i % len]``) and summarise; ``kv``: in
    the kv mode (``SimConfig.kv``)."""
    jobs = [dict(seed=s, nodes=node_counts[i % len(node_counts)], steps=steps,
                 faults=frozenset(faults), kv=kv) for i, s in enumerate(seeds)]
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run_one, jobs, chunksize=8))
    else:
        results = [_run_one(j) for j in jobs]
    summary = {
        "runs": len(results),
        "safety_violations": sum(1 for r in results if r["violations"]),
        "liveness_failures": sum(1 for r in results
                                 if not r["violations"] and r["liveness_ticks"] is None),
        "elections": sum(r["elections"] for r in results),
        "commits": sum(r["commits"] for r in results),
        "acked_writes": sum(r["acked"] for r in results),
        "reads": sum(r["reads"] for r in results),
        "crashes": sum(r["crashes"] for r in results),
        "messages": sum(r["messages"] for r in results),
        "conf_changes": sum(r["conf_changes"] for r in results),
        "nodes_added": sum(r["nodes_added"] for r in results),
        "removed_vote_requests": sum(r["removed_vote_requests"] for r in results),
        "max_liveness_ticks": max((r["liveness_ticks"] or 0 for r in results), default=0),
        "failures": [{"seed": r["seed"], "nodes": r["nodes"],
                      "violations": r["violations"][:3],
                      "liveness": r["liveness_ticks"] is not None,
                      "replay": r["replay"]} for r in results if not r["ok"]][:50],
    }
    return summary
