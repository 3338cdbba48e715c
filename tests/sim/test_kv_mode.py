"""The simulator's kv mode (``fastraft/sim/kvmachine.py``): the real state machine on every
simulated node, fed sessions, leases, renewals, revocations, revision cas and clock ticks
from leaders whose clocks disagree. The state-machine safety invariant then says every node
gave the same answers and made the same changes (lease expiries included) at every index,
across crashes, restarts, partitions, membership changes and snapshot installs.

Place in the architecture: tests of fastraft/sim with fastraft/statemachine; the mutants are
state-machine bugs injected with monkeypatch, each one a way for nodes to diverge that the
simulator must catch.
"""

from __future__ import annotations

import os

import pytest

from fastraft.sim import FAULT_KINDS
from fastraft.sim.runner import SimConfig, Simulation, replay_command, run_scenario, run_seeds
from fastraft.statemachine import restorer as restorer_mod

WORKERS = min(2, os.cpu_count() or 1)


def _failures(summary):
    return "\n".join(f"seed {f['seed']}: {f['violations'][:1] or 'liveness'}\n  replay: "
                     f"{f['replay']}" for f in summary["failures"])


def test_kv_scenarios_are_safe_and_live_and_exercise_leases():
    summary = run_seeds(range(1, 301), [3, 5], 300, FAULT_KINDS, workers=WORKERS, kv=True)
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0, \
        _failures(summary)
    assert summary["acked_writes"] > 3000 and summary["crashes"] > 300


def test_a_kv_run_grants_renews_and_expires_leases_identically():
    sim = Simulation(SimConfig(seed=3, kv=True, steps=600))
    for _ in range(600):
        sim.tick()
    assert not sim.checker.violations
    cmds = sim.workload.make_payload
    assert len(cmds.sessions) >= 3 and len(cmds.leases) >= 2
    states = {(n.sm.index, n.sm.digest, n.sm.m.lease_term, tuple(sorted(n.sm.m.kv.items())))
              for n in sim.nodes.values() if n.node is not None
              and n.sm.index == max(x.sm.index for x in sim.nodes.values())}
    assert len(states) == 1
    assert " --kv" in replay_command(SimConfig(seed=3, kv=True)).split("#")[0]


def test_a_kv_seed_replays_exactly():
    assert run_scenario(SimConfig(seed=77, kv=True)) == run_scenario(SimConfig(seed=77, kv=True))


def _lease_term_not_restored(monkeypatch):
    """A snapshot that forgets the lease term: a restored node refreshes the leases again at
    the next command of the current term, and its expiries drift from the others'."""
    header = restorer_mod.Restorer._header

    def bad(self, v):
        header(self, v)
        self.lease_term = 0
    monkeypatch.setattr(restorer_mod.Restorer, "_header", bad)


@pytest.mark.parametrize("mutant", [_lease_term_not_restored])
def test_the_kv_mode_catches_a_divergent_state_machine(monkeypatch, mutant):
    mutant(monkeypatch)
    summary = run_seeds(range(1, 201), [3], 300, FAULT_KINDS, workers=1, kv=True)
    assert summary["safety_violations"] > 0
