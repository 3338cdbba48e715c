"""fastraft.sim: the deterministic cluster simulator.

Place in the architecture: beside the runtime, above the engine. It runs many
``fastraft.raft.RawNode`` engines against a simulated network (``network.py``) and disk
(``cluster.py``) under a seeded fault plan (``runner.py``) and checks Raft's safety
properties after every step (``invariants.py``). Everything is a function of the seed.
"""

from .runner import FAULT_KINDS, SimConfig, Simulation, parse_seeds, run_scenario, run_seeds

__all__ = ["FAULT_KINDS", "SimConfig", "Simulation", "parse_seeds", "run_scenario",
           "run_seeds"]
