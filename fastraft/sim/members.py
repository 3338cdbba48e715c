"""Membership changes as faults: the ``membership`` fault kind of the simulator.

Place in the architecture: part of the deterministic simulator (``fastraft.sim``), driven by
``runner.py``; it acts only through the engine's public inputs (``propose_conf_change``) and
the simulation's node lifecycle (``Simulation.add_node``). No IO, every choice from the
simulation's seeded fault stream.

Plans, drawn at random while the other faults (partitions, crashes, loss, ...) go on:

- ``add``: a brand-new node id starts (``RaftConfig(voters=())``, an empty disk) and is added
  as a learner; most of the time it is then promoted to voter;
- ``promote``: an existing learner becomes a voter (refused with Busy while it lags: retried);
- ``remove``: a voter other than the leader, or a learner, is removed;
- ``remove_leader``: the leader removes itself (it leads until the change commits);
- ``replace``: a voter (any, down ones included) is removed, a new id added and promoted;
- ``swap``: ONE change removes a voter (not the leader) and promotes a learner that caught
  up (a new id is added as a learner first when there is none; etcd's ConfChangeV2 style):
  the old and new majorities can then be disjoint, which is where the joint configuration
  earns its keep;
- ``grow2`` / ``shrink2``: two voters added (two new learners promoted) or removed in one
  change.

Right after a change is appended, with the ``partition`` fault kind, the network is often
split along the change (``_split``): the leader with the new voters and learners (and the
fewest common voters that give it a majority of the new configuration, never the old
majority) on one side, the rest on the other, for several election timeouts; with ``pause``,
a leader that can serve reads is often paused meanwhile, so that it still believes it leads
when it resumes. No split when the change leaves no such sides (it would only stall it). The old side may elect a
leader that never saw the change while the new side still counts on it: exactly where a
joint configuration decided by one majority, or a learner counted as a voter, lets both
sides decide.

Each plan is a list of steps, each step one conf change of one or more ``(kind, node id)``,
proposed at whichever node leads when the step comes up, most of the time only once the
learners it promotes run and hold about what the slowest voter holds (as an operator would
wait). A step refused with NotLeader or Busy (another change in flight, a learner not caught
up) is retried later; one that no
longer applies (BadConfChange, a node gone, an id removed before) is dropped, and a plan
that cannot progress for long is abandoned. Up to two plans run at once, so a second change
is sometimes attempted while one is in flight (the engine must refuse it). Removed nodes keep
running: they must not disrupt the cluster (invariants.py, property 8). Node ids are never
reused.
"""

from __future__ import annotations

from ..errors import Busy, NotLeader
from ..raft import ADD_LEARNER, ADD_VOTER, REMOVE_NODE, BadConfChange, Change, ConfChange

__all__ = ["MembershipDriver", "MAX_NEW_NODES"]

#: Brand-new node ids one scenario may start.
MAX_NEW_NODES = 4
#: Ticks a plan may take before it is abandoned.
PATIENCE = 250

ADD = "add"
PROMOTE = "promote"
REMOVE = "remove"
_KINDS = {ADD: ADD_LEARNER, PROMOTE: ADD_VOTER, REMOVE: REMOVE_NODE}

PLANS = ("add", "add", "promote", "remove", "remove_leader", "replace", "swap", "swap", "swap",
         "swap", "grow2", "grow2", "shrink2")


class MembershipDriver:
    """Draws membership plans and proposes their steps (module docstring)."""

    def __init__(self, sim, intensity: float = 1.0) -> None:
        self.sim = sim
        self.rng = sim.rng
        self.rate = 0.03 * intensity        # plans started per tick
        self.plans: list[list] = []          # [steps, deadline]; a step: ((kind, id), ...)
        self.new_nodes = 0
        self.gone: set[int] = set()         # ids whose removal was proposed
        self.proposed = 0                   # conf changes appended
        self.refused = 0                    # refused with Busy (retried later)

    def tick(self) -> None:
        """One tick of the membership fault: maybe start a plan, try the plans' next steps."""
        rng = self.rng
        if (not self.plans or (len(self.plans) == 1 and rng.random() < 0.3)) and \
                rng.random() < self.rate:
            steps = self._draw()
            if steps:
                self.plans.append([steps, self.sim.now + PATIENCE])
        for plan in list(self.plans):
            if rng.random() < 0.5:
                self._try(plan)

    def _draw(self) -> list:
        rng = self.rng
        lead = self.sim.leader()
        if lead is None:
            return []
        cs = lead.node.conf_state()
        kind = rng.choice(PLANS)
        voters = sorted(cs.voters | cs.outgoing)
        others = [v for v in voters if v != lead.id]
        room = MAX_NEW_NODES - self.new_nodes
        if kind == "add" and room:
            nid = self._new_id()
            return [((ADD, nid),)] + ([((PROMOTE, nid),)] if rng.random() < 0.7 else [])
        if kind == "promote" and cs.learners:
            return [((PROMOTE, rng.choice(sorted(cs.learners))),)]
        if kind == "remove":
            pick = others + sorted(cs.learners)
            return [((REMOVE, rng.choice(pick)),)] if pick else []
        if kind == "remove_leader":
            return [((REMOVE, lead.id),)]
        if kind == "replace" and room:
            nid = self._new_id()
            return [((REMOVE, rng.choice(voters)),), ((ADD, nid),), ((PROMOTE, nid),)]
        if kind == "swap" and others:
            ready = [n for n in sorted(cs.learners) if self._ready(lead, ((PROMOTE, n),))]
            if ready:                         # a learner that caught up already
                return [((REMOVE, rng.choice(others)), (PROMOTE, rng.choice(ready)))]
            if room:
                nid = self._new_id()
                return [((ADD, nid),), ((REMOVE, rng.choice(others)), (PROMOTE, nid))]
        if kind == "grow2" and room >= 2:
            a, b = self._new_id(), self._new_id()
            return [((ADD, a), (ADD, b)), ((PROMOTE, a), (PROMOTE, b))]
        if kind == "shrink2" and len(voters) >= 4:
            return [tuple((REMOVE, v) for v in rng.sample(voters, 2))]
        return []

    def _new_id(self) -> int:
        self.new_nodes += 1
        return self.sim.next_id()

    def _try(self, plan: list) -> None:
        steps = plan[0]
        if self.sim.now > plan[1]:
            self.plans.remove(plan)
            return
        step = steps[0]
        for kind, nid in step:
            if kind == ADD and nid not in self.sim.nodes:
                self.sim.add_node(nid)        # it runs (and waits) before it is added
        lead = self.sim.leader()
        if lead is None:
            return
        learners = lead.node.conf_state().learners
        if any(kind != REMOVE and (nid in self.gone or (kind == PROMOTE and nid not in learners))
               for kind, nid in step):
            self._done(plan)                  # a removed id is never added again (as etcd)
            return
        if not self._ready(lead, step) and self.rng.random() < 0.8:
            return                            # most of the time, as an operator would, wait
        cc = ConfChange(tuple(Change(_KINDS[kind], nid) for kind, nid in step))
        try:
            lead.node.propose_conf_change(cc)
        except (NotLeader, Busy):
            self.refused += 1
            return
        except BadConfChange:
            pass                              # does not apply (any more): skip the step
        else:
            self.proposed += 1
            self.gone.update(nid for kind, nid in step if kind == REMOVE)
            sim = self.sim
            if "partition" in sim.faults and sim.now >= sim.partition_until and \
                    self.rng.random() < 0.8:
                self._split(lead)
        self._done(plan)

    def _ready(self, lead, step) -> bool:
        """Whether every learner ``step`` promotes runs and is about as far as the slowest
        voter."""
        st = lead.node.status()
        slowest = min((pr.match for v, pr in st.progress.items()
                       if v != lead.id and (v in st.voters or v in st.outgoing)),
                      default=st.committed)
        for kind, nid in step:
            if kind == PROMOTE:
                pr = st.progress.get(nid)
                if pr is None or pr.match + 4 < slowest or self.sim.nodes[nid].node is None:
                    return False
        return True

    def _split(self, lead) -> None:
        """Split the network along the change just appended at ``lead`` (module docstring),
        when that can leave a majority of the new voters (or of voters and learners
        together) with the leader and the old majority on the other side: no split
        otherwise (it would only stall the change). The leader's side takes as few old
        voters as it needs, so that the other side can elect without all of its members."""
        rng = self.rng
        cs = lead.node.conf_state()
        old = cs.outgoing or cs.voters
        new = cs.voters if cs.outgoing else cs.voters | cs.learners
        side = {lead.id} | (cs.voters - old) | cs.learners
        common = sorted((cs.voters & old) - side)
        rng.shuffle(common)
        for v in common:
            if 2 * len(side & new) > len(new) or 2 * len((side | {v}) & old) > len(old):
                break                         # enough, or the old majority would come along
            side.add(v)
        useful = 2 * len(side & new) > len(new) and 2 * len(side & old) <= len(old)
        rest = [i for i in self.sim.ids if i not in side]
        if rest and useful:
            sim = self.sim
            sim.net.heal()                    # it replaces any other (not held) partition
            sim.net.split(sorted(side), rest)
            sim.partitioned = True
            sim.heal_after_election = 0
            et = sim.tuning.election_tick
            # Long enough for the other side to elect and commit ...
            sim.partition_until = sim.now + rng.randint(3 * et, 8 * et)
            raft = lead.node._raft
            if "pause" in sim.faults and raft.log.term(raft.log.committed) == raft.term and \
                    rng.random() < 0.7:
                # ... while the leader, paused meanwhile (no check-quorum), still thinks
                # it leads when it resumes: reads at it, commits by it, count on the change.
                lead.paused_until = sim.now + rng.randint(3 * et, 8 * et)
                sim.partition_until = max(sim.partition_until, lead.paused_until + 2 * et)

    def _done(self, plan: list) -> None:
        """The plan's first step is done (or dropped)."""
        plan[0].pop(0)
        if not plan[0]:
            self.plans.remove(plan)
