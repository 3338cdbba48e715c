"""The ``fastraft snapshot`` commands: ``save`` a backup of a running cluster, ``status`` of a
backup file, ``restore`` a backup into the data directories of a new cluster.

Place in the architecture: beside ``cli_cmds`` (whose addresses, TLS options and error
reporting ``save`` shares); ``fastraft.cli`` registers it (``add_snapshot_parser``) and hands
over (``run_snapshot_command``); ``main(argv)`` runs it alone. ``save`` is a client command
(``_backup.save_backup`` over an ``AsyncClient``); ``status`` reads a file
(``fastraft.backup.inspect``); ``restore`` writes data directories
(``fastraft.backup_restore``, imported only there: the client never imports the server).

Exit codes::

    save     0 saved (FILE complete and verified); 2 error (nothing at FILE but what was
             there before)
    status   0 the backup is whole; 1 it is damaged or truncated (the byte offset is
             printed); 2 the file cannot be read
    restore  0 every node's directory written; 2 refused or failed: a damaged backup (with
             the byte offset), existing data in a node's directory, NEWCFG naming the
             backed-up cluster, a bad NEWCFG (nothing is written, or what was is removed)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys

from ..errors import FastraftError
from .cli_cmds import (ParagraphFormatter, _common, _print_json, _report_error, client_tls,
                       positive_float, resolve_endpoints)

__all__ = ["add_snapshot_parser", "run_snapshot_command", "main", "SNAPSHOT_COMMANDS"]

SNAPSHOT_COMMANDS = ("save", "status", "restore")
#: ``save``'s default seconds to wait for one answer (the node writes the whole snapshot
#: before it answers the first request).
SAVE_TIMEOUT = 120.0

_DESCRIPTION = """\
Back up a running cluster and restore it as a new cluster:

  fastraft snapshot save backup.frb --config cluster.toml
  fastraft snapshot status backup.frb
  fastraft snapshot restore backup.frb --config new-cluster.toml
  fastraft cluster --config new-cluster.toml

A backup holds the whole replicated state (keys, client sessions), the log index and term it
reflects and the membership it was taken with, with checksums over every part."""

_SAVE = """\
Save a backup of the cluster's state to FILE. The leader takes a snapshot of its state
machine without stalling (a forked writer, as for its own snapshots) once every write
acknowledged before this command has been applied, and the command downloads it while
writes go on. FILE is written as FILE.part, fsynced, read back and checked, then renamed:
it is only ever replaced by a complete, verified backup.

exit status:
  0  saved
  2  failed (one line on stderr); FILE is unchanged"""

_STATUS = """\
Check FILE completely and print what it holds: index, term, keys, client sessions, size,
the cluster and node it came from, when, the members then, and whether every checksum is
valid. For a damaged or truncated file: the byte offset of the damage.

exit status:
  0  the backup is whole
  1  it is damaged or truncated
  2  it cannot be read"""

_RESTORE = """\
Write the data directory of every node of NEWCFG (DIR/<id>, DIR from --data-dir or NEWCFG's
data_dir) so that they start as a NEW cluster with the state of backup FILE: its keys and
client sessions, at its index and term; the membership is NEWCFG's (every node a voter).
Then start the nodes with NEWCFG as usual (fastraft cluster --config NEWCFG, or fastraft node
--config NEWCFG --id N, with the same --data-dir).

NEWCFG must name a new cluster ([cluster] name): nodes check the name when they connect, so
nodes of the old cluster can never join the new one. Nothing is overwritten: every node
directory must be missing or empty.

exit status:
  0  restored
  2  refused or failed (one line on stderr): a damaged backup (with the byte offset),
     existing data, NEWCFG naming the old cluster, a bad NEWCFG"""


def add_snapshot_parser(subparsers) -> None:
    """Add ``snapshot`` and its commands to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser("snapshot", formatter_class=ParagraphFormatter,
                              help="save a backup of a cluster, check one, restore one",
                              description=_DESCRIPTION)
    sub = p.add_subparsers(dest="snapshot_command", metavar="COMMAND", title="commands")
    sub.required = True

    def cmd(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=ParagraphFormatter, **kw)

    q = cmd("save", help="save a backup of a running cluster to FILE", description=_SAVE)
    q.add_argument("file", metavar="FILE")
    _common(q, timeout=False)
    q.add_argument("--timeout", type=positive_float, default=SAVE_TIMEOUT, metavar="S",
                   help=f"seconds to wait for one answer, the first one included (the "
                        f"leader answers it once its snapshot is written; default "
                        f"{SAVE_TIMEOUT:g})")
    q = cmd("status", help="check a backup file and show what it holds", description=_STATUS)
    q.add_argument("file", metavar="FILE")
    q.add_argument("--json", action="store_true", help="machine-readable output (one JSON "
                                                       "document on stdout)")
    q = cmd("restore", help="write the data directories of a new cluster from a backup",
            description=_RESTORE)
    q.add_argument("file", metavar="FILE")
    q.add_argument("--config", metavar="NEWCFG", required=True,
                   help="the new cluster's configuration file (TOML): its name, nodes, "
                        "tuning and data_dir")
    q.add_argument("--data-dir", metavar="DIR",
                   help="base data directory of the new nodes (default: NEWCFG's data_dir)")
    q.add_argument("--storage", choices=("wal", "sqlite"),
                   help="storage backend to write (default: NEWCFG's tuning.storage; give "
                        "the nodes the same)")
    q.add_argument("--json", action="store_true", help="machine-readable output (one JSON "
                                                       "document on stdout)")


def run_snapshot_command(args) -> int:
    """Run ``fastraft snapshot ...`` (``args.snapshot_command``); return the exit code."""
    what = args.snapshot_command
    try:
        if what == "save":
            return _save(args)
        if what == "status":
            return _status(args)
        if what == "restore":
            return _restore(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise                       # fastraft.cli.main: quiet exit
    raise ValueError(f"unknown snapshot command {what!r}")


def main(argv: list[str] | None = None) -> int:
    """``fastraft snapshot`` alone (``argv``: what follows ``snapshot``)."""
    parser = argparse.ArgumentParser(prog="fastraft")
    add_snapshot_parser(parser.add_subparsers(dest="command"))
    return run_snapshot_command(parser.parse_args(["snapshot", *(
        sys.argv[1:] if argv is None else argv)]))


def _n(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


# -- save -------------------------------------------------------------------------------------

def _save(args) -> int:
    name = "snapshot save"
    try:
        eps = resolve_endpoints(args)
        meta, counts = asyncio.run(_save_async(args, eps, client_tls(args)))
    except (FastraftError, ValueError, OSError) as exc:
        return _report_error(name, args, exc, ("", "", ""))
    size = os.stat(args.file).st_size
    out = {"ok": True, "file": args.file, "index": meta.index, "term": meta.term,
           "keys": counts["keys"], "sessions": counts["sessions"], "size": size,
           "data_bytes": meta.data_len, "data_crc": f"{meta.data_crc:08x}",
           "cluster": meta.cluster, "node_id": meta.node_id}
    if args.json:
        _print_json(out)
    else:
        print(f"saved {args.file}: index {meta.index}, term {meta.term}, "
              f"{_n(counts['keys'], 'key')}, {_n(counts['sessions'], 'client session')}, "
              f"{size} bytes, from node {meta.node_id} of cluster {meta.cluster!r}")
    return 0


async def _save_async(args, eps: list[str], tls):
    from ._backup import save_backup
    from .aio import AsyncClient

    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None,
                           learn_members=False, tls=tls) as c:
        return await save_backup(c, args.file)


# -- status -----------------------------------------------------------------------------------

def _when(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _status(args) -> int:
    from ..backup import inspect

    try:
        info = inspect(args.file)
    except OSError as exc:
        print(f"fastraft snapshot status: cannot read {args.file}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        if args.json:
            _print_json({"error": "OSError", "message": str(exc), "file": args.file})
        return 2
    if "created_ms" in info:
        info["created"] = _when(info["created_ms"])
    if args.json:
        _print_json(info)
    else:
        _print_status(info)
    return 0 if info["valid"] else 1


def _print_status(info: dict) -> None:
    rows = [("file", info["file"])]
    if info["valid"]:
        rows.append(("checksums", "valid"))
    else:
        rows.append(("checksums", f"INVALID at byte offset {info['damage_offset']}: "
                                  f"{info['error']}"))
    for key, label in (("index", "index"), ("term", "term"), ("keys", "keys"),
                       ("sessions", "client sessions")):
        if key in info:
            rows.append((label, str(info[key])))
    size = f"{info['size']} bytes"
    if "data_bytes" in info:
        size += f" (state machine data {info['data_bytes']} bytes, CRC-32 {info['data_crc']})"
    rows.append(("size", size))
    if "cluster" in info:
        rows.append(("taken from", f"node {info['node_id']} of cluster {info['cluster']!r}, "
                                   f"{info['created']} (fastraft {info['version']})"))
        members = "; ".join(f"{m['id']} raft {m['raft']} client {m['client']}"
                            for m in info["members"]) or "-"
        rows.append(("members then", members))
    width = max(len(k) for k, _ in rows)
    sys.stdout.write("".join(f"{k.ljust(width)}  {v}\n" for k, v in rows))


# -- restore ----------------------------------------------------------------------------------

def _restore(args) -> int:
    import dataclasses

    from ..backup_restore import restore
    from ..config import load_config

    name = "snapshot restore"
    try:
        cfg = load_config(args.config)
        if args.data_dir:
            cfg = dataclasses.replace(cfg, data_dir=args.data_dir)
        done = restore(args.file, cfg, storage=args.storage)
    except (FastraftError, ValueError, OSError) as exc:
        return _report_error(name, args, exc, ("", "", ""))
    if args.json:
        _print_json({"ok": True, **{k: v for k, v in done.items() if k != "dirs"},
                     "dirs": {str(k): v for k, v in done["dirs"].items()}})
        return 0
    print(f"restored {args.file} (index {done['index']}, term {done['term']}, "
          f"{_n(done['keys'], 'key')}, {_n(done['sessions'], 'client session')}; from cluster "
          f"{done['from_cluster']!r}) as the new cluster {done['cluster']!r} "
          f"({done['storage']} storage):")
    for nid, d in done["dirs"].items():
        print(f"  node {nid}: {d}")
    dd = f" --data-dir {args.data_dir}" if args.data_dir else ""
    print(f"next: start the nodes with `fastraft cluster --config {args.config}{dd}`, or "
          f"one by one with `fastraft node --config {args.config} --id N{dd}`")
    return 0
