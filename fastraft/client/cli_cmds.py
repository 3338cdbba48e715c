"""The client commands of the ``fastraft`` command line: put, get, del, cas, scan, status, bench.

Place in the architecture: called by ``fastraft.cli`` (which owns the parser and dispatch):
``add_client_parsers(subparsers)`` adds the sub-commands and ``run_client_command(args)``
runs one and returns the exit code. Each command runs one ``AsyncClient`` on a fresh event
loop (no keep-alive: a command lives for one call).

Addresses: ``--endpoints a:1,b:2`` or ``--config cluster.toml`` (its nodes' client addresses);
by default the built-in local cluster (``fastraft cluster``). Output: text for people, or one
JSON document with ``--json``. A value argument ``-`` is read from standard input (bytes,
as is). Exit codes, for scripts::

    0  success (status: at least one node reachable)
    1  not found (get, del) or compare failed (cas)
    2  error (the message on stderr says whether the write was certainly not applied or
       its outcome is unknown; with --json also as {"error": ..., "outcome": ...} on stdout)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys

from ..errors import FastraftError, NotApplied, OutcomeUnknown

__all__ = ["CLIENT_COMMANDS", "add_client_parsers", "run_client_command", "resolve_endpoints"]

CLIENT_COMMANDS = ("put", "get", "del", "cas", "scan", "status", "bench")


def _common(p: argparse.ArgumentParser, timeout: bool = True) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--endpoints", metavar="HOST:PORT,...",
                       help="comma-separated client addresses of the nodes "
                            "(default: the built-in local cluster)")
    where.add_argument("--config", metavar="FILE",
                       help="cluster configuration file (TOML): use its client addresses")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    if timeout:
        p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                       help="seconds to wait for one answer (default 5; the whole command "
                            "may retry for 3x that)")


def add_client_parsers(subparsers) -> None:
    """Add put/get/del/cas/scan/status/bench to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser("put", help="set a key", description="Set KEY to VALUE "
                              "(exactly once, even across retries). VALUE '-' reads stdin.")
    p.add_argument("key")
    p.add_argument("value")
    _common(p)

    p = subparsers.add_parser("get", help="read a key", description="Print the value of KEY. "
                              "Exit 1 when it is absent.")
    p.add_argument("key")
    p.add_argument("--stale", action="store_true",
                   help="read any node's local state (may lag; default: linearizable)")
    _common(p)

    p = subparsers.add_parser("del", help="delete a key",
                              description="Delete KEY. Exit 1 when it did not exist.")
    p.add_argument("key")
    _common(p)

    p = subparsers.add_parser(
        "cas", help="compare and swap",
        description="Set KEY to NEW if its value is EXPECTED (with --absent: if KEY does not "
                    "exist; then give only NEW). Exit 1 when the comparison failed. "
                    "'-' reads a value from stdin.")
    p.add_argument("key")
    p.add_argument("values", nargs="+", metavar="EXPECTED NEW")
    p.add_argument("--absent", action="store_true", help="expect KEY to be absent")
    _common(p)

    p = subparsers.add_parser("scan", help="list keys by prefix",
                              description="Print the keys starting with PREFIX and their "
                                          "values, in key order, one 'key<TAB>value' a line.")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=0,
                   help="at most this many pairs (0: the node's maximum, 10,000 by default)")
    p.add_argument("--stale", action="store_true", help="read any node's local state")
    _common(p)

    p = subparsers.add_parser(
        "status", help="show every node's role, term and log position",
        description="Ask every node for its status. Exit 0 when at least one answers.")
    _common(p)

    from .bench import add_bench_arguments

    p = subparsers.add_parser(
        "bench", help="drive a running cluster with load and report throughput and latency",
        description="A load generator: pipelined AsyncClients in one process (uvloop when "
                    "installed) send reads and writes of 16-byte keys for DURATION seconds, "
                    "with a progress line once a second on stderr and a summary at the end.")
    _common(p)
    add_bench_arguments(p)


def resolve_endpoints(args) -> list[str]:
    """The endpoints a command talks to (ConfigError for a bad --config)."""
    from ..config import default_config, load_config

    if getattr(args, "endpoints", None):
        return [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if getattr(args, "config", None):
        return load_config(args.config).client_endpoints()
    return default_config().client_endpoints()


def _arg_bytes(text: str, stdin_used: list) -> bytes:
    if text == "-":
        if stdin_used:
            raise ValueError("only one value may be read from stdin ('-')")
        stdin_used.append(True)
        return sys.stdin.buffer.read()
    return text.encode("utf-8")


def _show(b: bytes | None) -> dict:
    """A value for JSON: text when it is UTF-8, else base64."""
    if b is None:
        return {"value": None}
    try:
        return {"value": b.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_b64": base64.b64encode(b).decode("ascii")}


def _print_json(obj) -> None:
    print(json.dumps(obj))


def _out(b: bytes) -> None:
    sys.stdout.buffer.write(b + b"\n")
    sys.stdout.flush()


def run_client_command(args) -> int:
    """Run the client command named by ``args.command``; return the exit code."""
    cmd = args.command
    if cmd == "bench":
        from .bench import run_bench

        try:
            eps = resolve_endpoints(args)
        except (FastraftError, ValueError, OSError) as exc:
            print(f"fastraft bench: {exc}", file=sys.stderr)
            return 2
        return run_bench(args, eps)
    try:
        eps = resolve_endpoints(args)
        return asyncio.run(_run(cmd, args, eps))
    except KeyboardInterrupt:
        return 130
    except (FastraftError, ValueError, OSError) as exc:
        if isinstance(exc, NotApplied):
            outcome = "not_applied"
            note = " (not applied)" if cmd in ("put", "del", "cas") else ""
        elif isinstance(exc, OutcomeUnknown):
            outcome = "unknown"
            note = " (outcome unknown: the write may or may not have been applied)" \
                if cmd in ("put", "del", "cas") else ""
        else:
            outcome, note = "error", ""
        print(f"fastraft {cmd}: {type(exc).__name__}: {exc}{note}", file=sys.stderr)
        if getattr(args, "json", False):
            _print_json({"error": type(exc).__name__, "message": str(exc), "outcome": outcome})
        return 2


async def _run(cmd: str, args, eps: list[str]) -> int:
    from .aio import AsyncClient

    stdin_used: list = []
    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None) as c:
        if cmd == "put":
            key = args.key.encode("utf-8")
            await c.put(key, _arg_bytes(args.value, stdin_used))
            if args.json:
                _print_json({"ok": True, "key": args.key})
            else:
                print("OK")
            return 0
        if cmd == "get":
            v = await c.get(args.key.encode("utf-8"), stale=args.stale)
            if args.json:
                _print_json({"key": args.key, "found": v is not None, **_show(v)})
            elif v is not None:
                _out(v)
            else:
                print(f"fastraft get: {args.key}: not found", file=sys.stderr)
            return 0 if v is not None else 1
        if cmd == "del":
            existed = await c.delete(args.key.encode("utf-8"))
            if args.json:
                _print_json({"key": args.key, "deleted": existed})
            else:
                print("deleted" if existed else "not found")
            return 0 if existed else 1
        if cmd == "cas":
            vals = args.values
            if args.absent:
                if len(vals) != 1:
                    raise ValueError("cas --absent takes KEY NEW")
                expected, new = None, _arg_bytes(vals[0], stdin_used)
            else:
                if len(vals) != 2:
                    raise ValueError("cas takes KEY EXPECTED NEW (or KEY NEW with --absent)")
                expected = _arg_bytes(vals[0], stdin_used)
                new = _arg_bytes(vals[1], stdin_used)
            swapped = await c.cas(args.key.encode("utf-8"), expected, new)
            if args.json:
                _print_json({"key": args.key, "swapped": swapped})
            else:
                print("swapped" if swapped else "compare failed")
            return 0 if swapped else 1
        if cmd == "scan":
            pairs = await c.scan(args.prefix.encode("utf-8"), limit=args.limit,
                                 stale=args.stale)
            if args.json:
                items = []
                for k, v in pairs:
                    kk = _show(k)
                    items.append({"key": kk.get("value"), **({"key_b64": kk["value_b64"]}
                                                            if "value_b64" in kk else {}),
                                  **_show(v)})
                _print_json({"count": len(pairs), "items": items})
            else:
                for k, v in pairs:
                    _out(k + b"\t" + v)
            return 0
        if cmd == "status":
            nodes = await c.status()
            if args.json:
                _print_json(nodes)
            else:
                _print_status(nodes)
            return 0 if any(n["reachable"] for n in nodes) else 2
    raise ValueError(f"unknown client command {cmd!r}")


_COLS = (("ID", "id"), ("ENDPOINT", "endpoint"), ("ROLE", "role"), ("TERM", "term"),
         ("LEADER", "leader"), ("LAST INDEX", "last_index"), ("COMMIT", "commit"),
         ("APPLIED", "applied"))


def _print_status(nodes: list[dict]) -> None:
    rows = [[h for h, _ in _COLS] + ["REACHABLE"]]
    for n in nodes:
        if n["reachable"]:
            rows.append([str(n[k]) for _, k in _COLS] + ["yes"])
        else:
            rows.append(["-", n["endpoint"]] + ["-"] * (len(_COLS) - 2)
                        + [f"no ({n.get('error', 'no answer')})"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
