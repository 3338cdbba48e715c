"""The deterministic simulator: thousands of seeded fault scenarios per CI run, exact replay,
and proof that its checker catches real bugs (mutations of the engine).

Every failure message carries the seed and the `fastraft sim ...` command that replays it.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from fastraft.sim import FAULT_KINDS, SimConfig, run_scenario, run_seeds

WORKERS = min(2, os.cpu_count() or 1)


def _failures(summary):
    return "\n".join(f"seed {f['seed']} ({f['nodes']} nodes): {f['violations'][:1] or 'liveness'}"
                     f"\n  replay: {f['replay']}" for f in summary["failures"])


def test_two_thousand_seeded_scenarios_are_safe_and_live():
    """Thousands of seeded scenarios per CI run; 3, 5 and 7 nodes, every fault
    (docs/architecture.md, "How it is tested")."""
    summary = run_seeds(range(1, 2001), [3, 5, 7], 300, FAULT_KINDS, workers=WORKERS)
    assert summary["runs"] == 2000
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0, \
        _failures(summary)
    # The runs did exercise the system: faults happened and work got done under them.
    assert summary["crashes"] > 1000
    assert summary["elections"] > 2000
    assert summary["acked_writes"] > 50_000
    assert summary["reads"] > 10_000


@pytest.mark.parametrize("nodes", [1, 2, 4, 6])
def test_other_cluster_sizes(nodes):
    summary = run_seeds(range(1, 101), [nodes], 200, FAULT_KINDS, workers=WORKERS)
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0, \
        _failures(summary)


def test_a_seed_replays_exactly():
    a = run_scenario(SimConfig(seed=4242, nodes=5))
    b = run_scenario(SimConfig(seed=4242, nodes=5))
    assert a == b
    c = run_scenario(SimConfig(seed=4243, nodes=5))
    assert (c["messages"], c["commits"]) != (a["messages"], a["commits"])


def test_fault_kinds_switch_on_and_off():
    quiet = run_seeds(range(1, 21), [3], 300, set(), workers=1)
    assert quiet["crashes"] == 0 and quiet["elections"] == 20   # one election per run
    crashy = run_seeds(range(1, 21), [3], 300, {"crash"}, workers=1)
    assert crashy["crashes"] > 0


# -- the checker catches bugs ---------------------------------------------------------------
# Each mutant (tests/sim/mutants.py) breaks one safety rule of the engine; the simulator must
# report a safety violation within a few hundred seeds. A checker that cannot fail is worth
# nothing, and a change to the fault model that hides a mutant fails here.
# bench/sim_power.py measures the seeds each mutant needs (old and new fault model).

def _load_mutants():
    path = Path(__file__).resolve().parent / "mutants.py"
    spec = importlib.util.spec_from_file_location("fastraft_sim_mutants", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MUTANTS


MUTANTS = _load_mutants()
#: Mutants the current fault model catches within CI_SEEDS seeds (seeds 1.., nodes 3, 5, 7
#: in turn; bench/sim_power.py: the first catch is at seed 1 to 141).
CAUGHT = ["up_to_date", "commit_previous_term", "commit_quorum_minus_one",
          "election_quorum_minus_one", "no_log_matching", "vote_twice", "ack_before_fsync",
          "heartbeat_commit_uncapped", "read_before_noop", "read_without_quorum"]
#: Not yet caught within 2,000 seeds: measured by the slow sweep only.
RARE = ["vote_before_fsync", "stale_term_acks"]
CI_SEEDS = 300


def _first_catch(seeds, faults=FAULT_KINDS, nodes=(3, 5, 7)):
    """The first seed in ``seeds`` (in order) whose run violates safety, or None."""
    for n, seed in enumerate(seeds):
        r = run_scenario(SimConfig(seed=seed, nodes=nodes[n % len(nodes)],
                                   faults=frozenset(faults)))
        if r["violations"]:
            return seed
    return None


def test_the_mutant_catalogue_is_complete():
    assert sorted(CAUGHT + RARE) == sorted(MUTANTS)


@pytest.mark.parametrize("name", CAUGHT)
def test_the_simulator_catches_each_mutant(monkeypatch, name):
    MUTANTS[name](monkeypatch.setattr)
    seed = _first_catch(range(1, CI_SEEDS + 1))
    assert seed is not None, f"mutant {name} survived seeds 1-{CI_SEEDS}"


@pytest.mark.slow
@pytest.mark.xfail(reason="not caught within seeds 1-2000 by either fault model yet (issue 13): "
                          "they need a crash between a vote and its fsync followed by a second "
                          "candidate of the same term, or an ack held back across two terms",
                   strict=False)
@pytest.mark.parametrize("name", RARE)
def test_the_simulator_catches_rare_mutants(monkeypatch, name):
    MUTANTS[name](monkeypatch.setattr)
    assert _first_catch(range(1, 4001)) is not None


def test_mutants_leave_the_engine_intact_after_the_test():
    # monkeypatch undid every mutant: the plain engine passes the seeds that caught them.
    assert _first_catch(range(1, 31)) is None


@pytest.mark.slow
def test_twenty_thousand_seeded_scenarios():
    summary = run_seeds(range(10_001, 30_001), [3, 5, 7], 400, FAULT_KINDS, workers=WORKERS)
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0, \
        _failures(summary)


def test_no_snapshot_is_taken_at_an_index_a_pending_restore_compacted():
    """A snapshot from the leader restored while a Ready awaited its fsync compacts the log
    past what the node has applied so far: the simulated runtime skips taking its own
    snapshot then (found by the churn faults: an unexpected CompactedError)."""
    from fastraft.raft import Snapshot, SnapshotMeta
    from fastraft.sim.runner import Simulation

    sim = Simulation(SimConfig(seed=3, nodes=1, faults=frozenset()))
    for _ in range(60):
        sim.tick()
    sn = sim.nodes[1]
    applied = sn.sm.index
    assert applied > 3
    snap = Snapshot(SnapshotMeta(applied, sn.node.term_at(applied), frozenset({1})),
                    (applied, sn.sm.digest))
    sn.node.compact(snap, keep_from=applied + 1)   # the log now starts after ``applied``
    sn.sm.index = applied - 2                       # what was applied before the restore
    sn.snapshot_every = 1
    sn._maybe_snapshot()                            # no CompactedError
    assert sn.storage.snapshot_index < applied - 2
