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
- ``replace``: a voter (any, down ones included) is removed, a new id added and promoted.

Each plan is a list of steps proposed at whichever node leads when the step comes up. A step
refused with NotLeader or Busy (another change in flight, a learner not caught up) is
retried later; one refused as invalid (BadConfChange: the node is gone, the last voter...) is
dropped, and a plan that cannot progress for long is abandoned. Up to two plans run at once,
so a second change is often attempted while one is in flight (the engine must refuse it).
Removed nodes keep running: they must not disrupt the cluster (invariants.py, property 11).
Node ids are never reused.
"""

from __future__ import annotations

from ..errors import Busy, NotLeader
from ..raft import ADD_LEARNER, ADD_VOTER, REMOVE_NODE, BadConfChange, Change, ConfChange

__all__ = ["MembershipDriver", "MAX_NEW_NODES"]

#: Brand-new node ids one scenario may start.
MAX_NEW_NODES = 4
#: Attempts (ticks on which a step is tried) before a plan is abandoned.
PATIENCE = 60

PLANS = ("add", "add", "promote", "remove", "remove_leader", "replace", "replace")


class MembershipDriver:
    """Draws membership plans and proposes their steps (module docstring)."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.rng = sim.rng
        self.plans: list[list] = []          # [steps, attempts]; steps: [(kind, node id)]
        self.new_nodes = 0
        self.gone: set[int] = set()         # ids whose removal was proposed
        self.proposed = 0                   # conf changes appended
        self.refused = 0                    # refused with Busy (retried later)

    def tick(self) -> None:
        """One tick of the membership fault: maybe start a plan, try the plans' next steps."""
        rng = self.rng
        if len(self.plans) < 2 and rng.random() < 0.02:
            steps = self._draw()
            if steps:
                self.plans.append([steps, 0])
        for plan in list(self.plans):
            if rng.random() < 0.3:
                self._try(plan)

    def _draw(self) -> list:
        sim = self.sim
        rng = self.rng
        lead = sim.leader()
        if lead is None:
            return []
        cs = lead.node.conf_state()
        kind = rng.choice(PLANS)
        voters = sorted(cs.voters | cs.outgoing)
        if kind == "add" and self.new_nodes < MAX_NEW_NODES:
            nid = self._new_id()
            return [("add", nid)] + ([("promote", nid)] if rng.random() < 0.7 else [])
        if kind == "promote" and cs.learners:
            return [("promote", rng.choice(sorted(cs.learners)))]
        if kind == "remove":
            pick = [v for v in voters if v != lead.id] + sorted(cs.learners)
            return [("remove", rng.choice(pick))] if pick else []
        if kind == "remove_leader":
            return [("remove", lead.id)]
        if kind == "replace" and self.new_nodes < MAX_NEW_NODES:
            nid = self._new_id()
            return [("remove", rng.choice(voters)), ("add", nid), ("promote", nid)]
        return []

    def _new_id(self) -> int:
        self.new_nodes += 1
        return self.sim.next_id()

    def _try(self, plan: list) -> None:
        steps = plan[0]
        plan[1] += 1
        if plan[1] > PATIENCE:
            self.plans.remove(plan)
            return
        kind, nid = steps[0]
        lead = self.sim.leader()
        if kind == "add" and nid not in self.sim.nodes:
            self.sim.add_node(nid)            # it runs (and waits) before it is added
        if lead is None:
            return
        if kind != "remove" and (nid in self.gone or (
                kind == "promote" and nid not in lead.node.conf_state().learners)):
            steps.pop(0)                      # a removed id is never added again (as etcd)
            if not steps:
                self.plans.remove(plan)
            return
        change = {"add": ADD_LEARNER, "promote": ADD_VOTER, "remove": REMOVE_NODE}[kind]
        try:
            lead.node.propose_conf_change(ConfChange((Change(change, nid),)))
        except (NotLeader, Busy):
            self.refused += 1
            return
        except BadConfChange:
            pass                              # does not apply (any more): skip the step
        else:
            self.proposed += 1
            if kind == "remove":
                self.gone.add(nid)
        steps.pop(0)
        if not steps:
            self.plans.remove(plan)
