"""The ``fastraft`` command line.

Place in the architecture: the top layer. It parses arguments and hands off to the server,
client and tools; later it is also the only place that chooses uvloop. It offers ``--version``,
``info`` (which core implementation is in use, the peer protocol and on-disk format
versions), ``sim`` (the deterministic simulator), ``wal-dump`` and ``wal-repair`` (the WAL
inspector and the explicit repair; both refuse segments of a later release's format),
``node`` (one server process, ``fastraft.server``) and ``cluster`` (a local cluster of child
processes,
``fastraft.launcher``), ``certs init`` (a development PKI, ``fastraft.certs``), and the
client commands ``put``, ``get``, ``del``, ``cas``, ``scan``,
``status``, ``member`` and ``bench`` (``fastraft.client.cli_cmds`` and ``cli_members``, where
their exit codes are listed), ``watch``, ``lease grant|keepalive|revoke`` and ``lock``
(coordination, ``fastraft.client.cli_coord``), and ``snapshot save|status|restore`` (backups,
``fastraft.client.cli_snapshot``). ``node`` also starts a node added at runtime (``--raft``,
``--client``, ``--join``; ``fastraft.server.joining``).

Unix conventions kept here for every command: an error is one line ``fastraft CMD: message``
on stderr (no traceback) and a usage error is argparse's (exit 2); when standard output is
closed early (``fastraft wal-dump DIR | head``) the command stops quietly with exit status 141
(128 + SIGPIPE, what a shell reports for a program killed by SIGPIPE); Ctrl-C exits 130.

Exit codes: 0 success; 1 a negative answer (get/del: not found, cas: compare failed, status:
degraded, wal-dump: a damaged segment, sim: a failed run); 2 an error or usage error (status:
unavailable); 130 interrupted; 141 output pipe closed.

``wal-dump DIR`` and ``wal-repair DIR ...`` take a node's data directory (``DATA_DIR/<id>``,
whose WAL is in ``wal/``) or the WAL directory itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from . import __version__
from .loops import LOOP_CHOICES
from .datadir import SQLITE_FILE as NODE_SQLITE_FILE
from .datadir import WAL_DIR as NODE_WAL_SUBDIR


_EPILOG = """\
exit status:
  0    success
  1    a negative answer: get/del not found, cas compare failed, status degraded,
       wal-dump found a corrupt segment, sim had a failing run, snapshot status
       found a damaged backup, lease revoke of a lease that did not exist
  2    an error (one line "fastraft COMMAND: message" on stderr) or a usage error;
       status: no leader or no quorum answered; lock: the lock was lost
  130  interrupted (Ctrl-C; the end of watch and lease keepalive --forever)
  141  standard output was closed early (e.g. piped into head)
  lock NAME -- COMMAND exits with COMMAND's status (fastraft lock -h)

Run "fastraft COMMAND -h" for a command's options."""


def _build_parser() -> argparse.ArgumentParser:
    from .client.cli_cmds import ParagraphFormatter

    parser = argparse.ArgumentParser(
        prog="fastraft", description="fastraft: a Raft-replicated key-value store",
        formatter_class=ParagraphFormatter, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"fastraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show the version, which core implementation is used, "
                                       "and the protocol and on-disk format versions")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    _add_sim_parser(sub)
    _add_wal_parsers(sub)
    _add_node_parser(sub)
    _add_certs_parser(sub)

    from .launcher import add_cluster_parser

    add_cluster_parser(sub)

    from .client.cli_cmds import add_client_parsers
    from .client.cli_coord import add_coord_parsers
    from .client.cli_snapshot import add_snapshot_parser

    add_client_parsers(sub)
    add_coord_parsers(sub)
    add_snapshot_parser(sub)
    return parser


def _add_sim_parser(sub) -> None:
    from .client.cli_cmds import non_negative_int, positive_int
    from .sim import FAULT_KINDS

    sim = sub.add_parser(
        "sim", help="run seeded scenarios of the deterministic cluster simulator",
        description="Run Raft engines against a simulated network and disk under seeded "
                    "faults, checking the safety invariants after every step and liveness "
                    "after healing. Exit status 1 when any run fails.")
    sim.add_argument("--seeds", default="1-100", help="a seed or an inclusive range A-B")
    sim.add_argument("--nodes", default="3",
                     help="cluster size 1-9, or a comma list cycled over the seeds (3,5,7)")
    sim.add_argument("--steps", type=positive_int, default=300,
                     help="ticks of the fault phase")
    sim.add_argument("--faults", default="all",
                     help=f"comma list of {','.join(FAULT_KINDS)}, or 'all' or 'none'")
    sim.add_argument("--workers", type=non_negative_int, default=0,
                     help="worker processes (default: one per CPU)")
    sim.add_argument("--kv", action="store_true",
                     help="run the real state machine on every node, fed real commands "
                          "(sessions, leases, revision cas, clock ticks from skewed "
                          "clocks), and check that every node gives the same answers and "
                          "changes at every index")
    sim.add_argument("--json", action="store_true", help="print the JSON summary only")


def _add_wal_parsers(sub) -> None:
    from .client.cli_cmds import non_negative_int

    dump = sub.add_parser(
        "wal-dump", help="print the records of a node's write-ahead log (read-only)",
        description="List every record of the WAL segments in DIR: file, offset, type, "
                    "index, term and payload size, and where each segment stops being valid. "
                    "Changes nothing (a torn tail is reported, not cut). Exit 1 when a "
                    "segment is corrupt, 2 when DIR holds no WAL.")
    dump.add_argument("dir", metavar="DIR",
                      help="a node's data directory (DATA_DIR/<id>) or its wal/ directory")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")

    rep = sub.add_parser(
        "wal-repair", help="truncate a damaged WAL at the offset a recovery error named",
        description="Give up the WAL from FILE at byte OFFSET on (as named by the error that "
                    "stopped the node). The cut bytes and later segments are kept aside as "
                    "*.damaged files. Only for a replica whose peers can catch it up.")
    rep.add_argument("dir", metavar="DIR",
                     help="a node's data directory (DATA_DIR/<id>) or its wal/ directory")
    rep.add_argument("file", metavar="FILE", help="the segment file named by the error")
    rep.add_argument("offset", type=non_negative_int, metavar="OFFSET",
                     help="the byte offset named by the error")


def _add_node_parser(sub) -> None:
    node = sub.add_parser(
        "node", help="run one node of a cluster",
        description="Run one fastraft node. A bootstrap member is named by the cluster's "
                    "config file (--config; without it, the built-in local 3-node cluster: "
                    "node N serves clients on 127.0.0.1:700N and peers on 127.0.0.1:710N, data "
                    "in ./fastraft-data/N). A node added at runtime starts with its addresses "
                    "and --join; once it has data, --id and --data-dir alone restart it.")
    node.add_argument("--id", type=int, required=True, help="this node's id")
    node.add_argument("--config", help="cluster configuration file (TOML); with --join, "
                                       "only its cluster name, tuning and data_dir are used")
    node.add_argument("--raft", metavar="HOST:PORT",
                      help="with --join: this node's peer address")
    node.add_argument("--client", metavar="HOST:PORT",
                      help="with --join: this node's client address")
    node.add_argument("--join", metavar="HOST:PORT[,HOST:PORT...]",
                      help="start a node added with `fastraft member add`: ask the members at "
                           "these client addresses until it is listed, then receive the "
                           "state from the leader")
    node.add_argument("--cluster", metavar="NAME",
                      help="with --join: the cluster's name (default: the config's)")
    node.add_argument("--raft-listen", metavar="HOST:PORT",
                      help="with --join: listen for peers here instead of on --raft (e.g. "
                           "0.0.0.0:PORT, or a node behind a proxy or NAT; the config file's "
                           "raft_listen)")
    node.add_argument("--client-listen", metavar="HOST:PORT",
                      help="with --join: listen for clients here instead of on --client (e.g. "
                           "0.0.0.0:PORT; the config file's client_listen)")
    node.add_argument("--metrics", metavar="HOST:PORT",
                      help="with --join: serve HTTP /metrics, /health and /ready here (the "
                           "config file's metrics)")
    node.add_argument("--data-dir", help="base data directory (the node uses DIR/<id>)")
    node.add_argument("--storage", choices=("wal", "sqlite"),
                      help="storage backend (overrides the config's tuning.storage)")
    node.add_argument("--loop", choices=LOOP_CHOICES, default="auto",
                      help="event loop (auto: uvloop when installed)")
    node.add_argument("--rejoin", action="store_true",
                      help="this node lost its data (a wiped or replaced disk): do not vote or "
                           "campaign until a leader has caught it up (remembered across "
                           "restarts until then)")
    node.add_argument("--log-json", action="store_true", help="log JSON lines")
    node.add_argument("--log-level", default="INFO",
                      choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                      help="least severe log messages shown (default INFO; logs go to "
                           "stderr)")


def _add_certs_parser(sub) -> None:
    certs = sub.add_parser("certs", help="development TLS certificates (a quick start)")
    csub = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    cinit = csub.add_parser(
        "init", help="write a development CA pair, node and client certificates",
        description="Write a development PKI into DIR: a peer CA and a client CA, one "
                    "certificate per node (node1.pem ...) naming every --hosts entry, and one "
                    "client certificate; print the [tls] table to use. A quick start, not a "
                    "production PKI. Needs the cryptography package (pip install "
                    "'fastraft[tls]').")
    cinit.add_argument("dir", metavar="DIR")
    cinit.add_argument("--nodes", type=int, default=3, help="node certificates (default 3)")
    cinit.add_argument("--hosts", default="127.0.0.1,localhost",
                       help="comma list of IP addresses and DNS names in every node "
                            "certificate (default 127.0.0.1,localhost)")
    cinit.add_argument("--days", type=int, default=365, help="validity (default 365)")
    renew = csub.add_parser(
        "renew", help="replace node or client certificates, signed by the same CAs",
        description="Issue new certificates and keys for the given nodes (and the client "
                    "certificate with --client), signed by the CAs that fastraft certs init "
                    "wrote in DIR, and replace the old files atomically. Then send SIGHUP to "
                    "each node: it re-reads its certificate files, keeps its open "
                    "connections, and serves the new certificate to new ones.")
    renew.add_argument("dir", metavar="DIR")
    renew.add_argument("--nodes", default="", metavar="IDS",
                       help="comma list of node ids whose certificates to renew")
    renew.add_argument("--client", action="store_true", help="renew client.pem too")
    renew.add_argument("--hosts", default="127.0.0.1,localhost",
                       help="comma list of IP addresses and DNS names in every node "
                            "certificate (default 127.0.0.1,localhost)")
    renew.add_argument("--days", type=int, default=365, help="validity (default 365)")


def format_versions() -> dict:
    """The peer protocol version and the newest on-disk format versions this release reads
    and writes (docs/architecture.md, "Versions and compatibility"): what an operator compares
    before a rolling upgrade."""
    from . import codec
    from .server.joining import IDENTITY_FORMAT
    from .storage import snapshot, sqlite, wal

    return {"peer_protocol": codec.PROTOCOL_VERSION, "wal_format": wal.WAL_VERSION,
            "wal_mark_layout": wal.MARK_LAYOUT, "snapshot_format": snapshot.VERSION,
            "sqlite_schema": sqlite.SCHEMA_VERSION, "identity_format": IDENTITY_FORMAT}


def _cmd_info(args: argparse.Namespace) -> int:
    from . import core

    facts = {"version": __version__, "core": core.IMPLEMENTATION,
             "python": sys.version.split()[0], **format_versions()}
    if args.json:
        print(json.dumps(facts))
    else:
        for k, v in facts.items():
            print(f"{k}: {v}")
    return 0


def _cmd_sim(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
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
    summary = run_seeds(seeds, nodes, args.steps, faults, workers=workers, kv=args.kv)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    if args.json:
        print(json.dumps(summary))
    else:
        for f in summary["failures"]:
            what = "; ".join(v.splitlines()[0] for v in f["violations"]) or "no leader committed a proposal after healing (liveness)"
            print(f"FAIL seed {f['seed']} ({f['nodes']} nodes): {what}\n  replay: {f['replay']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    return 1 if summary["safety_violations"] or summary["liveness_failures"] else 0


def _has_segments(path: str) -> bool:
    from .storage.wal import parse_segment_name

    try:
        return any(parse_segment_name(n) for n in os.listdir(path))
    except OSError:
        return False


def _no_wal_message(path: str) -> str:
    """Why ``path`` holds no WAL, and what to give instead."""
    if os.path.isfile(os.path.join(path, NODE_SQLITE_FILE)):
        return (f"{path} is the data directory of a node that uses the SQLite backend "
                f"({NODE_SQLITE_FILE}): it has no WAL")
    try:
        nodes = sorted((n for n in os.listdir(path) if n.isdigit()
                        and os.path.isdir(os.path.join(path, n, NODE_WAL_SUBDIR))), key=int)
    except OSError:
        nodes = []
    if nodes:
        return (f"no WAL segments in {path}: it looks like a cluster's data directory; give "
                f"one node's directory, e.g. {os.path.join(path, nodes[0])}")
    return (f"no WAL segments in {path}: give a node's data directory (DATA_DIR/<id>) "
            f"or its {NODE_WAL_SUBDIR}/ directory")


def find_wal_dir(path: str, file: str | None = None) -> str:
    """The WAL directory meant by ``path``: itself when it holds WAL segments (or ``file``),
    else its ``wal/`` subdirectory (a node's data directory). ValueError saying what to give
    instead when neither holds a WAL."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a directory")
    sub = os.path.join(path, NODE_WAL_SUBDIR)
    if file is not None:
        for d in (path, sub):
            if os.path.isfile(os.path.join(d, file)):
                return d
        if _has_segments(path) or _has_segments(sub):
            where = path if _has_segments(path) else sub
            raise ValueError(f"{file} is not a file in {where}")
    elif _has_segments(path):
        return path
    elif _has_segments(sub):
        return sub
    raise ValueError(_no_wal_message(path))


def _cmd_wal_dump(args: argparse.Namespace) -> int:
    from .storage.wal import scan

    try:
        wal_dir = find_wal_dir(args.dir)
    except ValueError as e:
        print(f"fastraft wal-dump: {e}", file=sys.stderr)
        return 2
    damaged = newer = False
    for seg in scan(wal_dir):
        damaged = damaged or seg.status == "corrupt"
        newer = newer or seg.status == "newer"
        if args.json:
            for r in seg.records:
                print(json.dumps(r._asdict()))
            print(json.dumps({"file": seg.file, "size": seg.size, "records": len(seg.records),
                              "status": seg.status, "reason": seg.reason}))
            continue
        print(f"== {seg.file} ({seg.size} bytes, {len(seg.records)} records, {seg.status})")
        for r in seg.records:
            print(f"  {r.offset:>10}  {r.type:<10} index={r.index:<10} term={r.term:<6} "
                  f"size={r.size}" + (f"  {r.detail}" if r.detail else ""))
        if seg.reason:
            print(f"  ! {seg.reason}")
    if newer:
        print(f"fastraft wal-dump: {wal_dir} holds segments of a later fastraft release's "
              f"format: use that release's wal-dump", file=sys.stderr)
        return 2
    return 1 if damaged else 0


def _cmd_wal_repair(args: argparse.Namespace) -> int:
    from .storage.wal import repair

    try:
        wal_dir = find_wal_dir(args.dir, args.file)
        for line in repair(wal_dir, args.file, args.offset):
            print(line)
    except (OSError, ValueError) as e:
        print(f"fastraft wal-repair: {e}", file=sys.stderr)
        return 2
    return 0


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


def _node_config(args: argparse.Namespace):
    """``(cfg, bootstrap, join)`` of ``fastraft node`` (server.joining). ConfigError."""
    import os

    from .config import DEFAULT_DATA_DIR, load_config
    from .errors import ConfigError
    from .server.joining import check_join_list, identity_config, joining_config

    if (args.join or args.raft or args.client or args.cluster or args.raft_listen
            or args.client_listen or args.metrics):
        if not (args.join and args.raft and args.client):
            raise ConfigError("a node added at runtime needs --raft, --client and --join "
                              "(--cluster, --raft-listen, --client-listen and --metrics go "
                              "with them; a bootstrap member takes its addresses from "
                              "--config)")
        cfg = joining_config(_load_cluster_config(args), args.id, args.raft, args.client,
                             args.cluster, args.raft_listen, args.client_listen,
                             args.metrics)
        return cfg, False, check_join_list(args.join)
    data_dir = args.data_dir or (load_config(args.config).data_dir if args.config
                                 else DEFAULT_DATA_DIR)
    own = identity_config(os.path.join(data_dir, str(args.id)), args.data_dir)
    if own is not None:
        if args.storage:
            import dataclasses
            own = dataclasses.replace(own, tuning=dataclasses.replace(own.tuning,
                                                                      storage=args.storage))
        return own, False, None
    cfg = _load_cluster_config(args)
    cfg.node(args.id)
    return cfg, True, None


def _cmd_node(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .server.main import run_node

    try:
        cfg, bootstrap, join = _node_config(args)
    except ConfigError as e:
        print(f"fastraft node: {e}", file=sys.stderr)
        return 2
    return run_node(cfg, args.id, loop=args.loop, log_json=args.log_json,
                    log_level=args.log_level, rejoin=args.rejoin, bootstrap=bootstrap,
                    join=join)


def _cmd_certs(args: argparse.Namespace) -> int:
    from .certs import init_certs, renew_certs, tls_table
    from .errors import ConfigError

    try:
        if args.certs_command == "renew":
            try:
                ids = [int(x) for x in args.nodes.split(",") if x.strip()]
            except ValueError:
                raise ConfigError(f"--nodes: expected a comma list of node ids, got "
                                  f"{args.nodes!r}") from None
            names = renew_certs(args.dir, ids, args.client, args.hosts.split(","), args.days)
        else:
            names = init_certs(args.dir, args.nodes, args.hosts.split(","), args.days)
    except (ConfigError, OSError) as e:
        print(f"fastraft certs: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} files in {args.dir}: {', '.join(names)}")
    if args.certs_command == "renew":
        print("send SIGHUP to each node using them (kill -HUP PID): it re-reads its "
              "certificate files without a restart")
        return 0
    print(f"development certificates only (keys unencrypted, valid {args.days} days); the "
          "[tls] table for a config file beside them:\n")
    print(tls_table(), end="")
    return 0


def _to_devnull(stream) -> None:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_broken_pipe() -> int:
    """Standard output was closed by its reader: point it (and standard error, when that is
    closed too) at /dev/null so that nothing more is written, not even by the interpreter's
    final flush (which would print "Exception ignored ... BrokenPipeError"); 128 + SIGPIPE."""
    _to_devnull(sys.stdout)
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        _to_devnull(sys.stderr)
    return 128 + getattr(signal, "SIGPIPE", 13)


def main(argv: list[str] | None = None) -> int:
    """The ``fastraft`` command: run the command named by ``argv`` and return its exit code."""
    try:
        rc = _dispatch(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130


def _dispatch(argv: list[str] | None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _cmd_info(args)
    if args.command == "sim":
        return _cmd_sim(args, parser)
    if args.command == "wal-dump":
        return _cmd_wal_dump(args)
    if args.command == "wal-repair":
        return _cmd_wal_repair(args)
    if args.command == "node":
        return _cmd_node(args)
    if args.command == "certs":
        return _cmd_certs(args)
    if args.command == "cluster":
        from .launcher import run_cluster

        return run_cluster(args)
    if args.command == "snapshot":
        from .client.cli_snapshot import run_snapshot_command

        return run_snapshot_command(args)
    from .client.cli_coord import COORD_COMMANDS, run_coord_command

    if args.command in COORD_COMMANDS:
        return run_coord_command(args)
    from .client.cli_cmds import CLIENT_COMMANDS, run_client_command

    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
