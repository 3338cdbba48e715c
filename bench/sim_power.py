"""The simulator's power: for each engine mutant, how many seeds until the simulator catches it.

Place in the architecture: a benchmark script (not collected by pytest, no fastraft module
imports it). The mutants live in tests/sim/mutants.py (one rule of the Raft paper or thesis
broken each, applied by monkeypatching the engine from the outside); this script runs the
simulator over seeds ``A-B`` for each mutant, stopping at the first seed with a safety
violation, under the old fault model (``--model old``: the eight base fault kinds, one engine
tuning for every seed) or the current one (``--model new``: every fault kind, the tuning drawn
per seed, leaders deposed mid-replication, reads at deposed leaders, membership changes, late
messages), or both. ``--checks all`` (the default) counts every invariant of
fastraft/sim/invariants.py; ``--checks end-to-end`` only the end-to-end properties (1-8:
elections, logs, commits, applied states, reads, membership), not the rule checks (9-12:
commitment and votes against the durable state, configurations in log order, one change at
a time), to show what the fault model alone brings to light.

    python bench/sim_power.py --seeds 1-2000 --nodes 3,5,7 --model both
    python bench/sim_power.py --seeds 1-300 --every      # also the catch rate per mutant
    python bench/sim_power.py --seeds 1-1000 --model new --checks both

Seed ``s`` runs ``nodes[(s - A) % len(nodes)]`` nodes, as ``fastraft sim`` does; the reported
replay command (with the mutant applied) reproduces the catch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fastraft.sim import FAULT_KINDS, SimConfig, parse_seeds, run_scenario
from fastraft.sim.invariants import Checker
from fastraft.sim.runner import BASE_FAULT_KINDS

MODELS = {"old": frozenset(BASE_FAULT_KINDS), "new": frozenset(FAULT_KINDS)}
CHECKS = ("all", "end-to-end")


def load_mutants():
    """The mutant catalogue, tests/sim/mutants.py, loaded by path."""
    path = Path(__file__).resolve().parent.parent / "tests" / "sim" / "mutants.py"
    spec = importlib.util.spec_from_file_location("fastraft_sim_mutants", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MUTANTS


def seeds_to_catch(mutant: str, model: str, seeds, nodes, steps: int = 300,
                   every: bool = False, checks: str = "all") -> dict:
    """Apply ``mutant``, run seeds in order until one violates safety (with ``every``: run
    them all and count the catching seeds too); undo the mutant."""
    undo = []

    def patch(obj, name, value):
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    load_mutants()[mutant](patch)
    patch(Checker, "rules", checks == "all")
    try:
        t0 = time.monotonic()
        first = None
        caught = 0
        for n, seed in enumerate(seeds, 1):
            r = run_scenario(SimConfig(seed=seed, nodes=nodes[(n - 1) % len(nodes)],
                                       steps=steps, faults=MODELS[model]))
            if r["violations"]:
                caught += 1
                if first is None:
                    first = {"mutant": mutant, "model": model, "checks": checks,
                             "seed": seed, "seeds": n,
                             "violation": r["violations"][0].splitlines()[0][:100],
                             "replay": r["replay"]}
                if not every:
                    break
        out = first or {"mutant": mutant, "model": model, "checks": checks, "seed": None,
                        "seeds": None, "violation": "", "replay": ""}
        out["caught"] = caught if every else None
        out["seconds"] = round(time.monotonic() - t0, 1)
        return out
    finally:
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)


def _job(args):
    return seeds_to_catch(*args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1-2000", help="inclusive range A-B, run in order")
    p.add_argument("--nodes", default="3,5,7")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--model", choices=("old", "new", "both"), default="both")
    p.add_argument("--checks", choices=CHECKS + ("both",), default="all",
                   help="every invariant, or the end-to-end properties only (module docstring)")
    p.add_argument("--mutants", default="all", help="comma-separated names, or all")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--every", action="store_true",
                   help="run every seed and also report how many catch the mutant (a rate, "
                        "less noisy than the first catch)")
    args = p.parse_args(argv)
    seeds = list(parse_seeds(args.seeds))
    nodes = [int(n) for n in args.nodes.split(",")]
    names = list(load_mutants()) if args.mutants == "all" else args.mutants.split(",")
    models = ["old", "new"] if args.model == "both" else [args.model]
    checks = list(CHECKS) if args.checks == "both" else [args.checks]
    columns = [(mod, c) for mod in models for c in checks]
    jobs = [(m, mod, seeds, nodes, args.steps, args.every, c)
            for m in names for mod, c in columns]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_job, jobs))
    by = {(r["mutant"], r["model"], r["checks"]): r for r in results}
    print(f"seeds {args.seeds}, nodes {args.nodes}, steps {args.steps}: "
          "seeds needed to catch each mutant (first failing seed), '-' = never"
          + ("; then seeds that catch it / seeds run" if args.every else ""))
    head = f"{'mutant':30}" + "".join(f"{mod + ' model, ' + c + ' checks':>34}"
                                      for mod, c in columns)
    print(head)
    for name in names:
        row = f"{name:30}"
        for mod, c in columns:
            r = by[(name, mod, c)]
            cell = "-" if r["seeds"] is None else f"{r['seeds']} (seed {r['seed']})"
            if r["caught"] is not None:
                cell = f"{cell}, {r['caught']}/{len(seeds)}"
            row += f"{cell:>34}"
        print(row)
    print()
    for r in results:
        if r["seeds"] is not None:
            print(f"{r['mutant']} [{r['model']} model, {r['checks']} checks]: "
                  f"{r['violation']}\n  {r['replay']}")
    missed = [r for r in results if r["seeds"] is None and r["model"] == models[-1]
              and r["checks"] == checks[0]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
