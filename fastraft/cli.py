"""The ``fastraft`` command line.

Place in the architecture: the top layer. It parses arguments and hands off to the server,
client and tools; later it is also the only place that chooses uvloop. For now it offers
``--version`` and ``info`` (which core implementation is in use); the node, cluster and client
commands arrive with their issues.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastraft", description="fastraft: a Raft-replicated key-value store")
    parser.add_argument("--version", action="version", version=f"fastraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show the version and which core implementation is used")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    from .sim import FAULT_KINDS

    sim = sub.add_parser(
        "sim", help="run seeded scenarios of the deterministic cluster simulator",
        description="Run Raft engines against a simulated network and disk under seeded "
                    "faults, checking the safety invariants after every step and liveness "
                    "after healing. Exit status 1 when any run fails.")
    sim.add_argument("--seeds", default="1-100", help="a seed or an inclusive range A-B")
    sim.add_argument("--nodes", default="3",
                     help="cluster size 1-9, or a comma list cycled over the seeds (3,5,7)")
    sim.add_argument("--steps", type=int, default=300, help="ticks of the fault phase")
    sim.add_argument("--faults", default="all",
                     help=f"comma list of {','.join(FAULT_KINDS)}, or 'all' or 'none'")
    sim.add_argument("--workers", type=int, default=0,
                     help="worker processes (default: one per CPU)")
    sim.add_argument("--json", action="store_true", help="print the JSON summary only")
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    from . import core

    facts = {"version": __version__, "core": core.IMPLEMENTATION,
             "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps(facts))
    else:
        for k, v in facts.items():
            print(f"{k}: {v}")
    return 0


def _cmd_sim(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import os
    import time

    from .sim import FAULT_KINDS, parse_seeds, run_seeds

    try:
        seeds = parse_seeds(args.seeds)
        nodes = [int(n) for n in args.nodes.split(",")]
    except ValueError as e:
        parser.error(f"sim: {e}")
    if any(not 1 <= n <= 9 for n in nodes):
        parser.error("sim: --nodes takes cluster sizes from 1 to 9")
    if args.faults == "all":
        faults = set(FAULT_KINDS)
    elif args.faults == "none":
        faults = set()
    else:
        faults = {f.strip() for f in args.faults.split(",") if f.strip()}
        unknown = faults - set(FAULT_KINDS)
        if unknown:
            parser.error(f"sim: unknown fault kinds {sorted(unknown)}; "
                         f"known: {','.join(FAULT_KINDS)}")
    workers = args.workers or os.cpu_count() or 1
    t0 = time.monotonic()
    summary = run_seeds(seeds, nodes, args.steps, faults, workers=workers)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    if args.json:
        print(json.dumps(summary))
    else:
        for f in summary["failures"]:
            what = "; ".join(v.splitlines()[0] for v in f["violations"]) or "no leader committed a proposal after healing (liveness)"
            print(f"FAIL seed {f['seed']} ({f['nodes']} nodes): {what}\n  replay: {f['replay']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    return 1 if summary["safety_violations"] or summary["liveness_failures"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _cmd_info(args)
    if args.command == "sim":
        return _cmd_sim(args, parser)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
