"""The client commands of the ``fastraft`` command line: put, get, del, cas, scan, status, bench,
and member (whose commands live in ``cli_members``).

Place in the architecture: called by ``fastraft.cli`` (which owns the parser and dispatch):
``add_client_parsers(subparsers)`` adds the sub-commands and ``run_client_command(args)``
runs one and returns the exit code. Each command runs one ``AsyncClient`` on a fresh event
loop (no keep-alive: a command lives for one call).

Addresses: ``--endpoints a:1,b:2`` or ``--config cluster.toml`` (its nodes' client addresses);
by default the built-in local cluster (``fastraft cluster``).

TLS: ``--cacert FILE`` (the CA that signed the nodes' certificates), ``--cert FILE --key FILE``
(this client's certificate, when the cluster requires one); defaults FASTRAFT_CACERT,
FASTRAFT_CERT, FASTRAFT_KEY; any of them turns TLS on (``client_tls``). An unusable file is
exit 2 with one line naming it; a node whose certificate is not trusted (or does not name the
endpoint's host), or that refuses this client's, fails the command at once (exit 2, not
applied).

Keys and values: ``--encoding utf8`` (the default) takes KEY, PREFIX and value arguments as
text; an argument that is not valid UTF-8 is taken as its raw bytes. ``--encoding hex`` and
``--encoding base64`` take them, and print them in text output, in that encoding (for binary
keys). A value argument ``-`` is read from standard input, as raw bytes whatever the
encoding. A KEY that starts with ``-`` goes after ``--``. Output: text for people, or one
JSON document with ``--json`` (exact: UTF-8 text, or base64 in ``*_b64`` fields). ``get``
adds a newline to the value unless ``--raw``; ``scan`` prints ``key<TAB>value`` lines with
backslash escapes (``\\n \\t \\r \\\\ \\xNN``) for characters that would break them.

Exit codes, for scripts::

    0  success
    1  not found (get, del) or compare failed (cas);
       status: a leader answered but some node did not (degraded)
    2  error: one line ``fastraft CMD: message`` on stderr, which for a write says whether it
       was certainly not applied or its outcome is unknown (with --json also
       {"error": ..., "message": ..., "outcome": ...} on stdout); usage errors;
       status: no leader answered, or fewer than a quorum of the nodes answered
    141 standard output was closed early (a pipe into ``head``): nothing more is printed

``status`` exits 0 only when a leader answered and every node answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import math
import os
import sys

from ..errors import FastraftError, NotApplied, NotLeader, OutcomeUnknown

__all__ = ["CLIENT_COMMANDS", "add_client_parsers", "run_client_command", "resolve_endpoints",
           "positive_float", "positive_int", "non_negative_int", "escape", "NO_CLUSTER_HINT",
           "ParagraphFormatter", "status_summary", "uses_default_endpoints", "client_tls"]

CLIENT_COMMANDS = ("put", "get", "del", "cas", "scan", "status", "bench", "member")
ENCODINGS = ("utf8", "hex", "base64")
WRITES = ("put", "del", "cas")
NO_CLUSTER_HINT = "is a cluster running? start one with `fastraft cluster`"

_ENCODING_HELP = (
    "how KEY, PREFIX and values are given as arguments and printed in text output: utf8 "
    "(default; an argument that is not valid UTF-8 is taken as its raw bytes), hex or "
    "base64. A value '-' (stdin) is raw bytes whatever the encoding. --json output is "
    "always exact (text, or base64 in *_b64 fields)")

_STATUS_DESCRIPTION = """\
Ask every node for its status and print a table, then one summary line: the leader (id,
endpoint, term), how many of the nodes answered, and whether a quorum (more than half of
the nodes asked) answered. Usable as a health check:

exit status:
  0  a leader answered and every node answered (healthy)
  1  a leader and a quorum answered, but some node did not (degraded)
  2  no leader, or fewer than a quorum of the nodes answered (unavailable)

--json prints the list of the nodes' status objects (one per endpoint, with "reachable");
the exit status carries the verdict."""


# -- argument types (argparse prints a usage error, exit 2) -----------------------------------

def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        v = low - 1
    if v < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return v


def _endpoint_list(text: str) -> list[str]:
    """An argparse type: ``host:port,...`` as a list (each address checked)."""
    from ..config import parse_address

    eps = [e.strip() for e in text.split(",") if e.strip()]
    if not eps:
        raise argparse.ArgumentTypeError("expected HOST:PORT[,HOST:PORT...]")
    for e in eps:
        try:
            parse_address(e)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad endpoint {e!r}: {exc}") from None
    return eps


# -- the parsers --------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, timeout: bool = True, data: bool = False) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--endpoints", metavar="HOST:PORT,...", type=_endpoint_list,
                       help="comma-separated client addresses of the nodes "
                            "(default: the built-in local cluster, 127.0.0.1:7001-7003)")
    where.add_argument("--config", metavar="FILE",
                       help="cluster configuration file (TOML): use its client addresses")
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON "
                                                       "document on stdout)")
    if data:
        p.add_argument("--encoding", choices=ENCODINGS, default="utf8", help=_ENCODING_HELP)
    if timeout:
        p.add_argument("--timeout", type=positive_float, default=5.0, metavar="S",
                       help="seconds to wait for one answer (default 5; the whole command "
                            "may retry for 3x that)")
    tls = p.add_argument_group("TLS (any of these turns it on)")
    tls.add_argument("--cacert", metavar="FILE", dest="tls_cacert",
                     help="CA certificate the nodes' certificates must be signed by (PEM; "
                          "default $FASTRAFT_CACERT; with --cert only: the system's CAs)")
    tls.add_argument("--cert", metavar="FILE", dest="tls_cert",
                     help="this client's certificate, for a cluster that requires one "
                          "(PEM; default $FASTRAFT_CERT; needs --key)")
    tls.add_argument("--key", metavar="FILE", dest="tls_key",
                     help="the private key of --cert (PEM; default $FASTRAFT_KEY)")


#: The TLS options of a client command and the environment variables that give defaults.
TLS_OPTIONS = (("cacert", "FASTRAFT_CACERT"), ("cert", "FASTRAFT_CERT"),
               ("key", "FASTRAFT_KEY"))


def client_tls(args):
    """The ``ssl.SSLContext`` of a client command (``--cacert``/``--cert``/``--key``, else
    the FASTRAFT_CACERT/FASTRAFT_CERT/FASTRAFT_KEY environment variables), or None for plain
    TCP. An unusable file raises TLSFileError (a ConfigError) naming it."""
    paths = {name: getattr(args, "tls_" + name, None) or os.environ.get(env) or None
             for name, env in TLS_OPTIONS}
    if not any(paths.values()):
        return None
    from ..tls import client_context

    return client_context(**paths)


class ParagraphFormatter(argparse.HelpFormatter):
    """argparse's formatter, but a description keeps its paragraphs (blank lines) and its
    indented lines (tables such as the exit codes); the other lines are wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out: list[str] = []
        para: list[str] = []

        def flush() -> None:
            if para:
                out.append(textwrap.fill(" ".join(para), width, initial_indent=indent,
                                         subsequent_indent=indent))
                para.clear()

        for line in text.splitlines():
            if not line.strip() or line[0].isspace():
                flush()
                out.append(indent + line if line.strip() else "")
            else:
                para.append(line.strip())
        flush()
        return "\n".join(out)


def _sub(subparsers, name: str, **kw) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, formatter_class=ParagraphFormatter, **kw)


def add_client_parsers(subparsers) -> None:
    """Add put/get/del/cas/scan/status/bench/member to ``subparsers`` (from
    ``add_subparsers``)."""
    p = _sub(subparsers, "put", help="set a key",
             description="Set KEY to VALUE (exactly once, even across retries). VALUE '-' "
                         "reads stdin. Prints OK. With --lease ID the key is attached to "
                         "that lease (`fastraft lease grant`) and deleted when it expires "
                         "or is revoked; a lease that is gone is refused (exit 2, nothing "
                         "written).")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--lease", type=positive_int, metavar="ID",
                   help="attach KEY to this lease (without it: to no lease)")
    _common(p, data=True)

    p = _sub(subparsers, "get", help="read a key",
             description="Print the value of KEY, with a newline added (--raw: exactly the "
                         "stored bytes). Exit 1 when it is absent.")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--stale", action="store_true",
                   help="read any node's local state (may lag; default: linearizable)")
    p.add_argument("--raw", action="store_true",
                   help="write the value's exact bytes, no newline added (--encoding then "
                        "applies to KEY only)")
    _common(p, data=True)

    p = _sub(subparsers, "del", help="delete a key",
             description="Delete KEY. Prints 'deleted', or 'not found' and exits 1 when it "
                         "did not exist.")
    p.add_argument("key", metavar="KEY")
    _common(p, data=True)

    p = _sub(subparsers, "cas", help="compare and swap",
             usage="%(prog)s [options] KEY EXPECTED NEW\n"
                   "       %(prog)s --absent [options] KEY NEW",
             description="Set KEY to NEW if its value is EXPECTED, or with --absent if KEY "
                         "does not exist. Prints 'swapped', or 'compare failed' and exits 1. "
                         "'-' reads one of the values from stdin.")
    p.add_argument("key", metavar="KEY")
    p.add_argument("values", nargs="+", metavar="VALUE",
                   help="EXPECTED NEW, or only NEW with --absent")
    p.add_argument("--absent", action="store_true", help="expect KEY to be absent")
    _common(p, data=True)
    p.set_defaults(usage_error=p.error)

    p = _sub(subparsers, "scan", help="list keys by prefix",
             description="Print the keys starting with PREFIX and their values, in key "
                         "order, one 'key<TAB>value' a line. In text output (utf8) a "
                         "backslash, newline, tab, carriage return and any other unprintable "
                         "character or invalid UTF-8 byte is escaped as in Python (\\\\ \\n "
                         "\\t \\r \\xNN \\uNNNN), so each pair is one line; --json and "
                         "--encoding hex/base64 give the exact bytes.")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    p.add_argument("--limit", type=non_negative_int, default=0, metavar="N",
                   help="at most this many pairs (0: the node's maximum, 10,000 by default)")
    p.add_argument("--stale", action="store_true", help="read any node's local state")
    _common(p, data=True)

    p = _sub(subparsers, "status", help="show every node's role, term and log position",
             description=_STATUS_DESCRIPTION)
    _common(p)

    from .bench import BENCH_DESCRIPTION, add_bench_arguments

    p = _sub(subparsers, "bench",
             help="drive a running cluster with load and report throughput and latency",
             description=BENCH_DESCRIPTION)
    _common(p)
    add_bench_arguments(p)

    from .cli_members import add_member_parser

    add_member_parser(subparsers)


# -- endpoints, arguments and output ------------------------------------------------------------

def resolve_endpoints(args) -> list[str]:
    """The endpoints a command talks to (ConfigError for a bad --config)."""
    from ..config import default_config, load_config

    eps = getattr(args, "endpoints", None)
    if eps:
        if isinstance(eps, str):
            eps = eps.split(",")
        return [e.strip() for e in eps if e.strip()]
    if getattr(args, "config", None):
        return load_config(args.config).client_endpoints()
    return default_config().client_endpoints()


def uses_default_endpoints(args) -> bool:
    """True when neither --endpoints nor --config was given (the built-in local cluster)."""
    return not getattr(args, "endpoints", None) and not getattr(args, "config", None)


class _ArgError(FastraftError):
    """A command-line argument that cannot be used (exit 2, nothing was sent)."""


def _arg_bytes(text: str, encoding: str, what: str, stdin_used: list | None = None) -> bytes:
    """An argument as bytes: '-' (when ``stdin_used`` is given) reads stdin; else decoded
    by ``encoding`` (utf8: the raw bytes of the argument, even when not valid UTF-8)."""
    if text == "-" and stdin_used is not None:
        if stdin_used:
            raise _ArgError("only one value may be read from stdin ('-')")
        stdin_used.append(True)
        return sys.stdin.buffer.read()
    if encoding == "hex":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise _ArgError(f"{what} {text!r} is not hex (--encoding hex)") from None
    if encoding == "base64":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            raise _ArgError(f"{what} {text!r} is not base64 (--encoding base64)") from None
    return os.fsencode(text)


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape(b: bytes) -> str:
    """``b`` as one line of printable text: UTF-8 with Python-style backslash escapes for
    backslash, newline, tab, carriage return, other unprintable characters (``\\xNN``,
    ``\\uNNNN``) and bytes that are not valid UTF-8 (``\\xNN``). Unambiguous."""
    s = b.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        e = _ESCAPES.get(ch)
        if e is not None:
            out.append(e)
        elif ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            if 0xDC80 <= o <= 0xDCFF:           # a byte that is not valid UTF-8
                out.append(f"\\x{o - 0xDC00:02x}")
            elif o < 0x100:
                out.append(f"\\x{o:02x}")
            elif o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:
                out.append(f"\\U{o:08x}")
    return "".join(out)


def _text(b: bytes, encoding: str) -> str:
    """Bytes for text output: escaped (utf8), hex or base64."""
    if encoding == "hex":
        return b.hex()
    if encoding == "base64":
        return base64.b64encode(b).decode("ascii")
    return escape(b)


def _json_value(b: bytes | None) -> dict:
    """The fields of a value in a JSON answer: {"value": text} when it is UTF-8 (or null),
    else {"value_b64": ...}."""
    if b is None:
        return {"value": None}
    try:
        return {"value": b.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_b64": base64.b64encode(b).decode("ascii")}


def _json_key(k: bytes) -> dict:
    """The fields of a key in a JSON answer: {"key": text}, or {"key": null, "key_b64": ...}
    when it is not UTF-8."""
    try:
        return {"key": k.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": None, "key_b64": base64.b64encode(k).decode("ascii")}


def _print_json(obj) -> None:
    print(json.dumps(obj))


def _out(b: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(b)
    sys.stdout.buffer.flush()


# -- running a command --------------------------------------------------------------------------

def run_client_command(args) -> int:
    """Run the client command named by ``args.command``; return the exit code."""
    cmd = args.command
    if cmd == "member":
        from .cli_members import run_member_command

        return run_member_command(args)
    if cmd == "bench":
        from .bench import run_bench

        try:
            eps = resolve_endpoints(args)
            tls = client_tls(args)
        except (FastraftError, ValueError, OSError) as exc:
            print(f"fastraft bench: {exc}", file=sys.stderr)
            return 2
        return run_bench(args, eps, hint=NO_CLUSTER_HINT if uses_default_endpoints(args)
                         else "", tls=tls)
    try:
        eps = resolve_endpoints(args)
        tls = client_tls(args)
        return asyncio.run(_run(cmd, args, eps, tls))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise                       # fastraft.cli.main: quiet exit
    except _ArgError as exc:
        print(f"fastraft {cmd}: {exc}", file=sys.stderr)
        return 2
    except (FastraftError, ValueError, OSError) as exc:
        return _report_error(cmd, args, exc)


#: The notes _report_error appends to a write's error: not applied; outcome unknown (the
#: message says so already / it does not).
_WRITE_NOTES = (" (not applied)", " (the write may or may not have been applied)",
                " (outcome unknown: the write may or may not have been applied)")


def _report_error(cmd: str, args, exc: BaseException,
                  notes: tuple[str, str, str] | None = None) -> int:
    """One line on stderr (and the JSON error object with --json); exit code 2. ``notes``
    (as ``_WRITE_NOTES``, the default for a write) say whether the command's change was
    certainly not made or may have been."""
    msg = " ".join(str(exc).splitlines()) or type(exc).__name__
    note = ""
    if notes is None and cmd in WRITES:
        notes = _WRITE_NOTES
    if isinstance(exc, NotApplied):
        outcome = "not_applied"
        if notes:
            note = notes[0]
    elif isinstance(exc, OutcomeUnknown):
        outcome = "unknown"
        if notes:
            note = notes[1] if "outcome unknown" in msg else notes[2]
    else:
        outcome = "error"
    hint = ""
    if isinstance(exc, NotLeader) and uses_default_endpoints(args) and (
            getattr(exc, "answered", None) == () or "no node reachable" in msg):
        hint = NO_CLUSTER_HINT
    print(f"fastraft {cmd}: {msg}{note}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    if getattr(args, "json", False):
        err = {"error": type(exc).__name__, "message": msg, "outcome": outcome}
        if hint:
            err["hint"] = hint
        _print_json(err)
    return 2


async def _run(cmd: str, args, eps: list[str], tls=None) -> int:
    from .aio import AsyncClient

    enc = getattr(args, "encoding", "utf8")
    key = _arg_bytes(args.key, enc, "KEY") if hasattr(args, "key") else b""
    values = None
    if cmd == "cas":
        values = _cas_values(args, enc)
    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None,
                           tls=tls) as c:
        if cmd == "put":
            await c.put(key, _arg_bytes(args.value, enc, "VALUE", []), lease=args.lease)
            if args.json:
                _print_json({"ok": True, **_json_key(key)})
            else:
                print("OK")
            return 0
        if cmd == "get":
            return _get_output(args, key, await c.get(key, stale=args.stale))
        if cmd == "del":
            return _yes_no_output(args, key, "deleted", await c.delete(key),
                                  "deleted", "not found")
        if cmd == "cas":
            return _yes_no_output(args, key, "swapped", await c.cas(key, *values),
                                  "swapped", "compare failed")
        if cmd == "scan":
            prefix = _arg_bytes(args.prefix, enc, "PREFIX")
            _scan_output(args, await c.scan(prefix, limit=args.limit, stale=args.stale))
            return 0
        if cmd == "status":
            nodes = await c.status()
            summary = status_summary(nodes)
            if args.json:
                _print_json(nodes)
            else:
                _print_status(nodes)
                print(summary["line"])
            if not summary["answered"] and uses_default_endpoints(args):
                print(f"fastraft status: no node answered; {NO_CLUSTER_HINT}",
                      file=sys.stderr)
            return summary["exit"]
    raise ValueError(f"unknown client command {cmd!r}")


def _cas_values(args, enc: str) -> tuple:
    vals = args.values
    stdin_used: list = []
    if vals.count("-") > 1:
        raise _ArgError("only one value may be read from stdin ('-')")
    if args.absent:
        if len(vals) != 1:
            _usage(args, "cas --absent takes KEY NEW")
        return None, _arg_bytes(vals[0], enc, "NEW", stdin_used)
    if len(vals) != 2:
        _usage(args, "cas takes KEY EXPECTED NEW (or --absent KEY NEW)")
    return (_arg_bytes(vals[0], enc, "EXPECTED", stdin_used),
            _arg_bytes(vals[1], enc, "NEW", stdin_used))


def _usage(args, message: str) -> None:
    """A usage error: the parser's (usage line, exit 2) when it left one, else _ArgError."""
    err = getattr(args, "usage_error", None)
    if err is not None:
        err(message)
    raise _ArgError(message)


def _get_output(args, key: bytes, v: bytes | None) -> int:
    if args.json:
        _print_json({**_json_key(key), "found": v is not None, **_json_value(v)})
    elif v is None:
        print(f"fastraft get: {_text(key, args.encoding)}: not found", file=sys.stderr)
    elif args.raw or args.encoding == "utf8":
        _out(v if args.raw else v + b"\n")
    else:
        print(_text(v, args.encoding))
    return 0 if v is not None else 1


def _yes_no_output(args, key: bytes, field: str, yes: bool, yes_text: str,
                   no_text: str) -> int:
    """Print the outcome of del or cas: JSON ``{"key": ..., field: yes}``, or ``yes_text`` /
    ``no_text``; exit code 0 when ``yes``, else 1."""
    if args.json:
        _print_json({**_json_key(key), field: yes})
    else:
        print(yes_text if yes else no_text)
    return 0 if yes else 1


def _scan_output(args, pairs: list) -> None:
    if args.json:
        items = [{**_json_key(k), **_json_value(v)} for k, v in pairs]
        _print_json({"count": len(pairs), "items": items})
        return
    enc = args.encoding
    _out("".join(f"{_text(k, enc)}\t{_text(v, enc)}\n" for k, v in pairs).encode("utf-8"))


# -- status -------------------------------------------------------------------------------------

def status_summary(nodes: list[dict]) -> dict:
    """The verdict on a cluster from its nodes' status dicts: ``exit`` (0 healthy, 1
    degraded, 2 unavailable), ``leader`` (the answering leader of the highest term, or None),
    ``answered``, ``total``, ``quorum`` (nodes needed) and ``line`` (for people)."""
    answered = [n for n in nodes if n.get("reachable")]
    leaders = [n for n in answered if n.get("role") == "leader"]
    leader = max(leaders, key=lambda n: n.get("term", 0)) if leaders else None
    total = len(nodes)
    quorum = total // 2 + 1
    has_quorum = len(answered) >= quorum
    if leader is not None and has_quorum:
        code = 0 if len(answered) == total else 1
    else:
        code = 2
    verdict = ("healthy", "degraded", "unavailable")[code]
    if leader is not None:
        who = f"leader node {leader['id']} at {leader['endpoint']}, term {leader['term']}"
    else:
        terms = [n["term"] for n in answered if isinstance(n.get("term"), int)]
        who = "no leader" + (f" (highest term {max(terms)})" if terms else "")
    line = f"{verdict}: {who}; {len(answered)} of {total} nodes answered " \
           f"(a quorum is {quorum})"
    missing = [n["endpoint"] for n in nodes if not n.get("reachable")]
    if missing and answered:
        line += "; no answer from " + ", ".join(missing)
    return {"exit": code, "leader": leader, "answered": len(answered), "total": total,
            "quorum": quorum, "line": line}


_COLS = (("ID", "id"), ("ENDPOINT", "endpoint"), ("ROLE", "role"), ("TERM", "term"),
         ("LEADER", "leader"), ("LAST INDEX", "last_index"), ("COMMIT", "commit"),
         ("APPLIED", "applied"))


def _print_status(nodes: list[dict]) -> None:
    rows = [[h for h, _ in _COLS] + ["REACHABLE"]]
    for n in nodes:
        if n["reachable"]:
            rows.append([str(n.get(k, "-")) for _, k in _COLS] + ["yes"])
        else:
            rows.append(["-", n["endpoint"]] + ["-"] * (len(_COLS) - 2)
                        + [f"no ({n.get('error', 'no answer')})"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
