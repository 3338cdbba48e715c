"""The membership commands of the ``fastraft`` command line: ``fastraft member list``, ``add``,
``promote`` and ``remove``.

Place in the architecture: beside ``cli_cmds``, which registers ``member`` among the client
commands (``add_member_parser``) and hands it over (``run_member_command``). Each command runs
one ``AsyncClient`` (``members``, ``add_learner``, ``promote``, ``remove_member``) on a fresh
event loop, with the addresses and options of the other client commands (``--endpoints`` or
``--config``, ``--json``, ``--timeout``).

Output: ``list`` prints a table (id, role, peer and client addresses, a ``*`` for the leader,
match index) or, with ``--json``, exactly ``{"members": [{"id", "role", "raft", "client",
"leader", "match"}, ...]}``. A change prints one line saying what was done and at which log
index (``--json``: ``{"ok": true, "change": ..., "id": ..., "index": ...}``; the index is null
when an attempt's outcome was unknown and the member list then showed the change made).

Exit codes, as the other client commands: 0 done; 2 refused or failed, with one line
``fastraft member CMD: message (...)`` on stderr that says whether the membership is certainly
unchanged (a refusal: invalid, busy, no leader) or the outcome is unknown (and with --json the
error object of ``cli_cmds`` on stdout); usage errors, and addresses that are not HOST:PORT
(checked before anything is sent), exit 2 too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..errors import FastraftError
from .cli_cmds import (ParagraphFormatter, _common, _print_json, _report_error, client_tls,
                       positive_int, resolve_endpoints)

__all__ = ["add_member_parser", "run_member_command", "MEMBER_COMMANDS"]

MEMBER_COMMANDS = ("list", "add", "promote", "remove")

#: The notes _report_error appends to a change's error: not done; outcome unknown (the message
#: says so already / it does not).
_NOTES = (" (not done: the membership is unchanged)",
          " (the change may or may not have been made: see `fastraft member list`)",
          " (outcome unknown: the change may or may not have been made: see "
          "`fastraft member list`)")

_DESCRIPTION = """\
List the members of the cluster, or change them, one change at a time, through the leader.
A new node joins as a learner (it receives the log but does not vote), is started with
--join, and is promoted to voter once it has caught up:

  fastraft member add --id 4 --raft 10.0.0.4:7104 --client 10.0.0.4:7004
  fastraft node --id 4 --raft 10.0.0.4:7104 --client 10.0.0.4:7004 \\
      --join 10.0.0.1:7001 --data-dir DIR
  fastraft member promote 4

exit status:
  0  done
  2  refused (the membership is unchanged), or failed (the message says whether the change
     may have been made)"""


def _address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` (``fastraft.config.parse_address``)."""
    from ..config import parse_address

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_member_parser(subparsers) -> None:
    """Add ``member`` and its commands to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "member", formatter_class=ParagraphFormatter,
        help="list the cluster's members, add a learner, promote it, remove a member",
        description=_DESCRIPTION)
    sub = p.add_subparsers(dest="member_command", metavar="COMMAND", title="commands")
    sub.required = True

    def cmd(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=ParagraphFormatter, **kw)

    q = cmd("list", help="show every member",
            description="Show every member as the leader sees it: id, role (voter or "
                        "learner), peer (raft) and client addresses, the leader (*), and "
                        "match: the highest log index the leader knows the member holds "
                        "(a learner is caught up when it is close to the leader's).")
    _common(q)
    q = cmd("add", help="add a node as a learner",
            description="Add node N as a learner: it receives the log and snapshots but does "
                        "not vote. Start it with `fastraft node ... --join`, then promote "
                        "it. A removed id is never reused: give a new node a new id.")
    q.add_argument("--id", type=positive_int, required=True, metavar="N", dest="node_id",
                   help="the new node's id (not used by any member, now or before)")
    q.add_argument("--raft", type=_address, required=True, metavar="HOST:PORT",
                   help="the address the new node listens on for its peers")
    q.add_argument("--client", type=_address, required=True, metavar="HOST:PORT",
                   help="the address the new node listens on for clients")
    _common(q)
    q = cmd("promote", help="make a learner a voter",
            description="Make learner N a voter. Refused (exit 2, nothing changed) until it "
                        "has caught up with the leader's log: try again later.")
    q.add_argument("node_id", type=positive_int, metavar="N")
    _common(q)
    q = cmd("remove", help="remove a voter or a learner",
            description="Remove member N, a voter or a learner, the leader included (it "
                        "steps down once the removal commits). Its id is never used again. "
                        "Refused for the last voter.")
    q.add_argument("node_id", type=positive_int, metavar="N")
    _common(q)


def run_member_command(args) -> int:
    """Run ``fastraft member ...`` (``args.member_command``); return the exit code."""
    name = f"member {args.member_command}"
    try:
        eps = resolve_endpoints(args)
        return asyncio.run(_run(args, eps, client_tls(args)))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise                       # fastraft.cli.main: quiet exit
    except (FastraftError, ValueError, OSError) as exc:
        notes = None if args.member_command == "list" else _NOTES
        return _report_error(name, args, exc, notes)


async def _run(args, eps: list[str], tls=None) -> int:
    from .aio import AsyncClient

    what = args.member_command
    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None,
                           learn_members=False, tls=tls) as c:
        if what == "list":
            _print_members(args, await c.members())
            return 0
        nid = args.node_id
        if what == "add":
            index = await c.add_learner(nid, args.raft, args.client)
            text = f"node {nid} added as a learner"
        elif what == "promote":
            index = await c.promote(nid)
            text = f"node {nid} promoted to voter"
        elif what == "remove":
            index = await c.remove_member(nid)
            text = f"node {nid} removed"
        else:
            raise ValueError(f"unknown member command {what!r}")
    if args.json:
        _print_json({"ok": True, "change": what, "id": nid, "index": index})
        return 0
    if index is None:
        text += (" (an attempt's outcome was unknown; the member list then showed it done, "
                 "at an index not known)")
    else:
        text += f" (log index {index})"
    print(text)
    if what == "add":
        print(f"next: start it with `fastraft node --id {nid} --raft {args.raft} --client "
              f"{args.client} --join {','.join(eps)} --data-dir DIR`, and once it has caught "
              f"up: `fastraft member promote {nid}`")
    return 0


def _print_members(args, members: list) -> None:
    if args.json:
        _print_json({"members": [
            {"id": m.id, "role": m.role, "raft": m.raft, "client": m.client,
             "leader": m.is_leader, "match": m.match} for m in members]})
        return
    rows = [["ID", "ROLE", "RAFT", "CLIENT", "LEADER", "MATCH"]]
    for m in members:
        rows.append([str(m.id), m.role, m.raft or "-", m.client or "-",
                     "*" if m.is_leader else "", str(m.match)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    sys.stdout.write("\n".join(out) + "\n")
