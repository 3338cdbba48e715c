"""The fault schedule of a verification run, planned before the run starts.

Place in the architecture: part of the verification framework (``fastraft.verify``); a pure
function of the run's options and a seed (no IO, no clock). ``nemesis.Nemesis`` follows the
plan; ``report.py`` says what was planned, what ran and what was skipped, and why.

How a plan is made (``plan_faults``): a step is a quiet (healthy) period, then one fault, then
the heal. Its quiet time is drawn from ``--quiet``, its fault time from ``--fault`` with the
kind's floor (``pause`` lasts at least two election timeouts; ``wipe`` and ``disk`` at least
3 s: time to catch up / to hit the write limit), plus a small allowance for setting the fault
up (``SETUP``: a ``transfer`` waits for the leader to hand over and exit; a ``member`` change
starts a node and waits for it to catch up).

- The first round runs every kind once, in a seeded shuffled order. If even the shortest
  times (the low ends of the ranges) of every kind do not fit in ``--duration``, the kinds
  that fit are kept (the cheapest first, so as many kinds as possible run) and the others are
  skipped, each with the reason. If the drawn times do not fit but the shortest do, the times
  of the round are squeezed towards the low ends of their ranges (never below them) until the
  round fits (``compressed``).
- Later rounds deal every kind again in a fresh seeded order, with the times as drawn, for as
  long as they fit (the step that would overrun is squeezed to fit, or left out when even its
  shortest times do not fit). So every planned fault ends before ``--duration``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["FAULT_KINDS", "SETUP", "Step", "FaultPlan", "plan_faults", "fault_range",
           "min_step"]

FAULT_KINDS = ("partition", "kill", "pause", "degrade", "wipe", "transfer", "disk", "member")
# seconds allowed for setting a fault up (default 0.1): a transfer waits for the leader to
# hand over and exit; a member change starts a node, waits for it to catch up, restarts it
# behind its proxy and promotes it
SETUP = {"transfer": 0.5, "member": 4.0}
_SETUP_DEFAULT = 0.1
_SLOW_FLOOR = 3.0                  # wipe, disk: time to catch up / to hit the write limit


def fault_range(kind: str, fault: tuple, election_timeout: float) -> tuple[float, float]:
    """The (lo, hi) seconds a fault of ``kind`` lasts, from ``--fault`` and the kind's floor."""
    lo, hi = fault
    if kind == "pause":
        lo = max(lo, 2 * election_timeout)       # longer than an election timeout
        hi = max(hi, lo)
    elif kind in ("disk", "wipe"):
        lo = max(lo, _SLOW_FLOOR)
        hi = max(hi, lo + 1.0)
    return lo, hi


def _setup(kind: str) -> float:
    return SETUP.get(kind, _SETUP_DEFAULT)


def min_step(kind: str, quiet: tuple, fault: tuple, election_timeout: float) -> float:
    """The fewest seconds one step of ``kind`` takes: shortest quiet + shortest fault +
    set-up allowance."""
    return quiet[0] + fault_range(kind, fault, election_timeout)[0] + _setup(kind)


@dataclass(frozen=True)
class Step:
    """One planned fault: ``quiet`` seconds healthy, then ``fault`` seconds of ``kind``."""

    kind: str
    quiet: float
    fault: float

    def to_json(self) -> dict:
        """The step as the plan in ``summary.json`` lists it."""
        return {"kind": self.kind, "quiet": self.quiet, "fault": self.fault}


@dataclass
class FaultPlan:
    """What ``plan_faults`` decided. ``skipped``: kind -> why it is not in the plan (in the
    order of ``kinds``); ``compressed``: the first round's times were squeezed to fit;
    ``every_kind_needs``: seconds of ``--duration`` a first round of every kind needs at
    least."""

    kinds: tuple
    duration: float
    steps: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    compressed: bool = False
    every_kind_needs: float = 0.0

    @property
    def planned(self) -> list:
        """The planned kinds, in the order of their first step."""
        return list(dict.fromkeys(s.kind for s in self.steps))

    def counts(self) -> dict:
        """Kind -> planned faults of that kind."""
        out: dict = {}
        for s in self.steps:
            out[s.kind] = out.get(s.kind, 0) + 1
        return out

    def seconds(self) -> float:
        """The seconds the plan takes, set-up allowances included."""
        return sum(s.quiet + s.fault + _setup(s.kind) for s in self.steps)

    def to_json(self) -> dict:
        """The ``plan`` object of ``summary.json``'s ``fault_coverage``."""
        return {"kinds": list(self.kinds), "duration": self.duration,
                "planned": self.planned, "planned_counts": self.counts(),
                "skipped": dict(self.skipped), "compressed": self.compressed,
                "every_kind_needs": self.every_kind_needs,
                "steps": [s.to_json() for s in self.steps]}


def _floor3(x: float) -> float:
    return math.floor(x * 1000 + 1e-6) / 1000


def _squeeze(steps: list, avail: float, quiet: tuple, fault: tuple,
             election_timeout: float) -> list:
    """``steps`` with the part of each time above its range's low end scaled down by one
    factor so that the steps (with their set-up allowances) take at most ``avail`` seconds.
    The caller made sure the low ends fit."""
    lows = [(quiet[0], fault_range(s.kind, fault, election_timeout)[0]) for s in steps]
    base = sum(q + f + _setup(s.kind) for s, (q, f) in zip(steps, lows))
    total = sum(s.quiet + s.fault + _setup(s.kind) for s in steps)
    if total <= avail:
        return steps
    k = max(0.0, avail - base) / (total - base)
    return [Step(s.kind, _floor3(q + (s.quiet - q) * k), _floor3(f + (s.fault - f) * k))
            for s, (q, f) in zip(steps, lows)]


def _draw(kind: str, rng: random.Random, quiet: tuple, fault: tuple,
          election_timeout: float) -> Step:
    lo, hi = fault_range(kind, fault, election_timeout)
    return Step(kind, _floor3(rng.uniform(*quiet)), _floor3(rng.uniform(lo, hi)))


def plan_faults(kinds, duration: float, quiet: tuple = (1.0, 3.0), fault: tuple = (1.0, 4.0),
                election_timeout: float = 0.3, seed=0) -> FaultPlan:
    """The fault schedule of a run of ``duration`` seconds (see the module docstring).
    Deterministic: the same arguments give the same plan."""
    rng = random.Random(seed)
    kinds = tuple(dict.fromkeys(kinds))
    plan = FaultPlan(kinds, duration)
    if not kinds:
        return plan
    need = {k: min_step(k, quiet, fault, election_timeout) for k in kinds}
    plan.every_kind_needs = round(sum(need.values()), 3)
    deck = list(kinds)
    rng.shuffle(deck)
    used, chosen = 0.0, set()
    for k in sorted(deck, key=lambda k: need[k]):        # stable: ties in deck order
        if used + need[k] <= duration + 1e-9:
            chosen.add(k)
            used += need[k]
    left = duration - used
    for k in kinds:
        if k not in chosen:
            plan.skipped[k] = (
                f"not enough time: one {k} fault needs at least {need[k]:.1f} s ({quiet[0]:g} s "
                f"quiet + {fault_range(k, fault, election_timeout)[0]:g} s of fault + "
                f"{_setup(k):g} s to set it up) and only {max(0.0, left):.1f} s of the "
                f"{duration:g} s run were left after the other kinds; --duration "
                f"{math.ceil(plan.every_kind_needs)} or more runs every kind")
    first = [_draw(k, rng, quiet, fault, election_timeout) for k in deck if k in chosen]
    squeezed = _squeeze(first, duration, quiet, fault, election_timeout)
    plan.compressed = squeezed != first
    plan.steps = squeezed
    t = plan.seconds()
    while True:                                           # later rounds, while they fit
        deck = list(kinds)
        rng.shuffle(deck)
        for k in deck:
            s = _draw(k, rng, quiet, fault, election_timeout)
            if t + need[k] > duration + 1e-9:
                return plan
            s = _squeeze([s], duration - t, quiet, fault, election_timeout)[0]
            plan.steps.append(s)
            t += s.quiet + s.fault + _setup(k)
