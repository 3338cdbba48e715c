"""The ``fastraft`` command line.

Place in the architecture: the top layer. It parses arguments and hands off to the server,
client and tools; later it is also the only place that chooses uvloop. It offers ``--version``,
``info`` (which core implementation is in use), ``sim`` (the deterministic simulator),
``wal-dump`` and ``wal-repair`` (the WAL inspector and the explicit repair), ``node`` (one
server process, ``fastraft.server``) and ``cluster`` (a local cluster of child processes,
``fastraft.launcher``), and the client commands ``put``, ``get``, ``del``, ``cas``, ``scan``,
``status`` and ``bench`` (``fastraft.client.cli_cmds``).
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

    dump = sub.add_parser(
        "wal-dump", help="print the records of a node's write-ahead log (read-only)",
        description="List every record of the WAL segments in DIR: file, offset, type, "
                    "index, term and payload size, and where each segment stops being valid. "
                    "Changes nothing (a torn tail is reported, not cut).")
    dump.add_argument("dir", help="the WAL directory of a node")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")

    rep = sub.add_parser(
        "wal-repair", help="truncate a damaged WAL at the offset a recovery error named",
        description="Give up the WAL from FILE at byte OFFSET on (as named by the error that "
                    "stopped the node). The cut bytes and later segments are kept aside as "
                    "*.damaged files. Only for a replica whose peers can catch it up.")
    rep.add_argument("dir")
    rep.add_argument("file")
    rep.add_argument("offset", type=int)

    node = sub.add_parser(
        "node", help="run one node of a cluster",
        description="Run one fastraft node. Without --config, the built-in local 3-node "
                    "cluster is used: node N serves clients on 127.0.0.1:700N and peers on "
                    "127.0.0.1:710N, data in ./fastraft-data/N.")
    node.add_argument("--id", type=int, required=True, help="this node's id in the config")
    node.add_argument("--config", help="cluster configuration file (TOML)")
    node.add_argument("--data-dir", help="base data directory (the node uses DIR/<id>)")
    node.add_argument("--storage", choices=("wal", "sqlite"),
                      help="storage backend (overrides the config's tuning.storage)")
    node.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                      help="event loop (auto: uvloop when installed)")
    node.add_argument("--rejoin", action="store_true",
                      help="this node lost its data (a wiped or replaced disk): do not vote or "
                           "campaign until a leader has caught it up (remembered across "
                           "restarts until then)")
    node.add_argument("--log-json", action="store_true", help="log JSON lines")
    node.add_argument("--log-level", default="INFO",
                      choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    from .launcher import add_cluster_parser

    add_cluster_parser(sub)

    from .client.cli_cmds import add_client_parsers

    add_client_parsers(sub)
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


def _cmd_wal_dump(args: argparse.Namespace) -> int:
    import os

    from .storage.wal import scan

    if not os.path.isdir(args.dir):
        print(f"fastraft wal-dump: {args.dir} is not a directory", file=sys.stderr)
        return 2
    segments = scan(args.dir)
    damaged = False
    for seg in segments:
        damaged = damaged or seg.status == "corrupt"
        if args.json:
            for r in seg.records:
                print(json.dumps(r._asdict()))
            print(json.dumps({"file": seg.file, "size": seg.size, "records": len(seg.records),
                              "status": seg.status, "reason": seg.reason}))
            continue
        print(f"== {seg.file} ({seg.size} bytes, {len(seg.records)} records, {seg.status})")
        for r in seg.records:
            print(f"  {r.offset:>10}  {r.type:<10} index={r.index:<10} term={r.term:<6} "
                  f"size={r.size}")
        if seg.reason:
            print(f"  ! {seg.reason}")
    if not segments:
        print(f"no WAL segments in {args.dir}", file=sys.stderr)
    return 1 if damaged else 0


def _load_cluster_config(args: argparse.Namespace):
    """The configuration a node or client command uses: --config, or the built-in cluster;
    --data-dir and --storage override it. Raises ConfigError."""
    import dataclasses

    from .config import default_config, load_config

    cfg = load_config(args.config) if args.config else default_config()
    if getattr(args, "data_dir", None):
        cfg = dataclasses.replace(cfg, data_dir=args.data_dir)
    if getattr(args, "storage", None):
        cfg = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning,
                                                                  storage=args.storage))
    return cfg


def _cmd_node(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .server.main import run_node

    try:
        cfg = _load_cluster_config(args)
        cfg.node(args.id)
    except ConfigError as e:
        print(f"fastraft node: {e}", file=sys.stderr)
        return 2
    return run_node(cfg, args.id, loop=args.loop, log_json=args.log_json,
                    log_level=args.log_level, rejoin=args.rejoin)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _cmd_info(args)
    if args.command == "sim":
        return _cmd_sim(args, parser)
    if args.command == "wal-dump":
        return _cmd_wal_dump(args)
    if args.command == "node":
        return _cmd_node(args)
    if args.command == "cluster":
        from .launcher import run_cluster

        return run_cluster(args)
    from .client.cli_cmds import CLIENT_COMMANDS, run_client_command

    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    if args.command == "wal-repair":
        from .storage.wal import repair

        try:
            for line in repair(args.dir, args.file, args.offset):
                print(line)
        except (OSError, ValueError) as e:
            print(f"fastraft wal-repair: {e}", file=sys.stderr)
            return 2
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
