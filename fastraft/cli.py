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


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _cmd_info(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
