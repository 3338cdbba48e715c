"""The coordination commands of the ``fastraft`` command line: ``fastraft watch``, ``lease
grant|keepalive|revoke`` and ``lock`` (``put --lease`` is in ``cli_cmds``).

Place in the architecture: beside ``cli_cmds``, whose options (``--endpoints`` or
``--config``, ``--timeout``, the TLS flags, ``--json``, ``--encoding``), argument decoding,
output helpers and error report it reuses; ``fastraft.cli`` registers the commands
(``add_coord_parsers``) and hands them over (``run_coord_command``). Each command runs one
``AsyncClient`` (``watch``, ``lease_grant``, ``lease_keepalive``, ``lease_revoke``,
``lock``) on a fresh event loop.

Output:

- ``watch [PREFIX] [--rev N]``: one line per change, flushed at once, until interrupted:
  ``put<TAB>KEY<TAB>VALUE<TAB>(rev N)`` or ``delete<TAB>KEY<TAB>(rev N)``, keys and values
  shown as ``scan`` shows them (escaped text, or ``--encoding hex|base64``); ``--json``: one
  object per line, ``{"type", "key", "value", "revision"}`` (``value`` null for a delete;
  ``key_b64`` / ``value_b64`` for bytes that are not UTF-8, as the other commands). No node
  answering at the start is an error (exit 2); once started, the watch resumes on another
  node by itself (``_watch``) and never ends on its own but with a definite error.
- ``lease grant TTL``: the lease id (``--json``: ``{"lease": ID, "ttl": SECONDS}``);
  ``lease keepalive ID``: its TTL in seconds (``{"lease": ID, "ttl": SECONDS}``), renewed
  once, or with ``--forever`` every third of the TTL until interrupted; ``lease revoke ID``:
  ``revoked``, or ``not found`` and exit 1 (``{"lease": ID, "revoked": BOOL}``).
- ``lock NAME [--ttl S] -- COMMAND [ARG...]``: waits for the lock (its lease renewed every
  third of the TTL), runs COMMAND with FASTRAFT_FENCE set to the lock's fence (standard
  input, output and error are the command's), releases the lock when it ends, and exits
  with its status (128 + N when it was killed by signal N). If the lock is lost while it
  runs (its lease could not be renewed within the TTL: another process may hold the lock
  now), the command gets SIGTERM (SIGKILL if it has not ended TERM_GRACE seconds later),
  one line on stderr says so, and the exit status is 2. Interrupted (Ctrl-C, SIGTERM), it
  stops the command the same way before it releases the lock, and exits 130 (143 for
  SIGTERM). A COMMAND that cannot be found is exit 127, one that cannot be run 126 (as a
  shell), both without taking the lock.

Exit codes, as the other client commands: 0 done; 1 ``lease revoke`` of a lease that did not
exist; 2 an error, with one line ``fastraft CMD: message`` on stderr (refusals: an unknown
lease, ``Compacted`` for a ``--rev`` older than the nodes' history, a TTL out of range,
usage errors), and for ``lock`` a lock lost; 130 interrupted (the normal end of ``watch``
and ``keepalive --forever``); ``lock`` otherwise exits with its command's status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys

from ..codec import MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS
from ..errors import FastraftError, LeaseNotFound
from .cli_cmds import (ParagraphFormatter, _ArgError, _arg_bytes, _common, _json_key,
                       _json_value, _out, _print_json, _report_error, _text, client_tls,
                       positive_int, resolve_endpoints)

__all__ = ["COORD_COMMANDS", "add_coord_parsers", "run_coord_command", "lease_ttl",
           "TERM_GRACE"]

COORD_COMMANDS = ("watch", "lease", "lock")
#: Seconds a command stopped by ``fastraft lock`` has between SIGTERM and SIGKILL.
TERM_GRACE = 10.0

#: The notes ``_report_error`` appends to an error of these commands (cli_cmds._WRITE_NOTES):
#: certainly not done; outcome unknown (the message says so already / it does not).
_NOTES = {
    "lease grant": (" (no lease was granted)",
                    " (a lease may have been granted: it expires after its TTL)",
                    " (outcome unknown: a lease may have been granted: it expires after its "
                    "TTL)"),
    "lease revoke": (" (not revoked)", " (the lease may or may not have been revoked)",
                     " (outcome unknown: the lease may or may not have been revoked)"),
    "lock": (" (the command was not run)",) * 3,
}

_WATCH_DESCRIPTION = """\
Print every change to the keys starting with PREFIX (all keys when omitted) as it happens,
one line each, in revision order, without a gap or a repeat across reconnects and leader
changes, until interrupted (Ctrl-C: exit 130). Each line is flushed at once:

  put<TAB>KEY<TAB>VALUE<TAB>(rev N)
  delete<TAB>KEY<TAB>(rev N)

Keys and values are shown as scan shows them; --json prints one object per line:
{"type": "put"|"delete", "key": ..., "value": ...|null, "revision": N}. By default the
watch starts now (after every write acknowledged before it); --rev N starts at revision N
(inclusive) instead, refused (exit 2) when the nodes no longer keep changes that old."""

_LEASE_DESCRIPTION = """\
A lease lives for its TTL unless renewed; when it expires or is revoked, every key put with
it (fastraft put KEY VALUE --lease ID) is deleted.

  fastraft lease grant 10          prints the new lease's id
  fastraft lease keepalive ID      renews it once; prints its TTL
  fastraft lease revoke ID         ends it now: its keys are deleted

exit status: 0 done; 1 revoke: the lease did not exist; 2 an error (an unknown lease, a TTL
out of range, ...); 130 interrupted."""

_LOCK_DESCRIPTION = f"""\
Wait until this process holds the lock NAME, run COMMAND with the environment variable
FASTRAFT_FENCE set to the lock's fencing token (higher for each later holder: give it to
what COMMAND writes to, so that it can refuse a writer with a lower fence), and release the
lock when COMMAND ends. The lock's lease (--ttl) is renewed every third of its TTL while
COMMAND runs; if this process dies the lock is free again after the TTL.

exit status:
  N    COMMAND's exit status (128 + S when it was killed by signal S)
  2    the lock could not be taken; or it was lost while COMMAND ran (its lease
       could not be renewed in time: another process may hold it now), and
       COMMAND got SIGTERM (SIGKILL {TERM_GRACE:g} s later)
  126  COMMAND cannot be run; 127: not found (the lock is not taken)
  130  interrupted (Ctrl-C; 143: SIGTERM): COMMAND is stopped as for a lost
       lock, then the lock is released"""


def lease_ttl(text: str) -> float:
    """An argparse type: a lease's TTL in seconds, from the smallest a node accepts to the
    largest."""
    low, high = MIN_LEASE_TTL_MS / 1000, MAX_LEASE_TTL_MS / 1000
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not low <= v <= high:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds from {low:g} to {high:.0f}, got {text!r}")
    return v


def _sub(subparsers, name: str, **kw) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, formatter_class=ParagraphFormatter, **kw)


def _lock_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ttl", type=lease_ttl, default=10.0, metavar="S",
                   help="seconds the lock outlives this process if it dies or is cut off "
                        "(its lease's TTL; default 10, at least 1)")
    _common(p)


def add_coord_parsers(subparsers) -> None:
    """Add ``watch``, ``lease`` and ``lock`` to ``subparsers`` (from ``add_subparsers``)."""
    p = _sub(subparsers, "watch", help="print the changes under a key prefix as they happen",
             description=_WATCH_DESCRIPTION)
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    p.add_argument("--rev", type=positive_int, metavar="N",
                   help="start at revision N, inclusive (default: from now)")
    _common(p, data=True)

    p = _sub(subparsers, "lease", help="grant, renew or revoke a lease",
             description=_LEASE_DESCRIPTION)
    sub = p.add_subparsers(dest="lease_command", metavar="ACTION", title="actions")
    sub.required = True
    q = _sub(sub, "grant", help="grant a new lease; prints its id",
             description="Grant a lease of TTL seconds and print its id. Keys put with it "
                         "are deleted when it is not renewed for TTL seconds, or revoked.")
    q.add_argument("ttl", type=lease_ttl, metavar="TTL",
                   help=f"seconds ({MIN_LEASE_TTL_MS / 1000:g} or more)")
    _common(q)
    q = _sub(sub, "keepalive", help="renew a lease; prints its TTL",
             description="Renew lease ID for its whole TTL from now and print the TTL "
                         "(seconds). --forever: go on renewing it every third of its TTL "
                         "until interrupted (Ctrl-C: exit 130), or until it is gone (exit "
                         "2). An unknown, expired or revoked lease is exit 2.")
    q.add_argument("lease_id", type=positive_int, metavar="ID")
    q.add_argument("--forever", action="store_true",
                   help="keep renewing it every TTL/3 until interrupted (prints the TTL once)")
    _common(q)
    q = _sub(sub, "revoke", help="end a lease now, deleting its keys",
             description="End lease ID now: every key put with it is deleted (exactly "
                         "once). Prints 'revoked', or 'not found' and exits 1 when it did not "
                         "exist (expired, revoked, never granted).")
    q.add_argument("lease_id", type=positive_int, metavar="ID")
    _common(q)

    p = _sub(subparsers, "lock", help="run a command while holding a lock",
             usage="%(prog)s NAME [--ttl S] [options] -- COMMAND [ARG...]",
             description=_LOCK_DESCRIPTION)
    p.add_argument("name", metavar="NAME", help="the lock's name")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]",
                   help="the command to run while holding the lock")
    _lock_options(p)
    p.set_defaults(usage_error=p.error, lock_parser=p)


# -- running a command --------------------------------------------------------------------------

def _name(args) -> str:
    if args.command == "lease":
        return f"lease {args.lease_command}"
    return args.command


def run_coord_command(args) -> int:
    """Run ``fastraft watch|lease|lock`` (``args.command``); return the exit code."""
    name = _name(args)
    try:
        argv = _lock_argv(args) if args.command == "lock" else None
        eps = resolve_endpoints(args)
        tls = client_tls(args)
        if args.command == "watch":
            return asyncio.run(_watch(args, eps, tls))
        if args.command == "lease":
            return asyncio.run(_lease(args, eps, tls))
        return asyncio.run(_lock(args, eps, tls, argv))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise                       # fastraft.cli.main: quiet exit
    except _ArgError as exc:
        print(f"fastraft {name}: {exc}", file=sys.stderr)
        return 2
    except (FastraftError, ValueError, OSError) as exc:
        return _report_error(name, args, exc, _NOTES.get(name))


async def _watch(args, eps: list[str], tls) -> int:
    from .aio import AsyncClient

    enc = args.encoding
    prefix = _arg_bytes(args.prefix, enc, "PREFIX")
    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None,
                           tls=tls) as c:
        if args.rev is not None:
            # fail now (exit 2) when no node answers, as without --rev (whose start asks for
            # the revision); once started, the watch rides out outages and leader changes
            await c.revision(stale=True)
        async with c.watch(prefix, args.rev) as w:
            async for ev in w:
                _out((event_line(ev, enc, args.json) + "\n").encode("utf-8"))
    return 0


def event_line(ev, encoding: str = "utf8", as_json: bool = False) -> str:
    """One change as ``fastraft watch`` prints it (module docstring), without the newline."""
    if as_json:
        return json.dumps({"type": ev.type, **_json_key(ev.key), **_json_value(ev.value),
                           "revision": ev.revision})
    if ev.value is None:
        return f"{ev.type}\t{_text(ev.key, encoding)}\t(rev {ev.revision})"
    return (f"{ev.type}\t{_text(ev.key, encoding)}\t{_text(ev.value, encoding)}"
            f"\t(rev {ev.revision})")


async def _lease(args, eps: list[str], tls) -> int:
    from .aio import AsyncClient

    what = args.lease_command
    async with AsyncClient(eps, timeout=args.timeout, keepalive_interval=None,
                           tls=tls) as c:
        if what == "grant":
            lid = await c.lease_grant(args.ttl)
            if args.json:
                _print_json({"lease": lid, "ttl": args.ttl})
            else:
                print(lid, flush=True)
            return 0
        lid = args.lease_id
        if what == "revoke":
            existed = await c.lease_revoke(lid)
            if args.json:
                _print_json({"lease": lid, "revoked": existed})
            else:
                print("revoked" if existed else "not found")
            return 0 if existed else 1
        loop = asyncio.get_running_loop()
        sent = loop.time()
        ttl = await c.lease_keepalive(lid)
        if args.json:
            _print_json({"lease": lid, "ttl": ttl})
        else:
            print(f"{ttl:g}")
        sys.stdout.flush()
        if args.forever:
            await _renew_forever(c, lid, ttl, sent)
    return 0


async def _renew_forever(c, lid: int, ttl: float, last_ok: float) -> None:
    """Renew lease ``lid`` every third of its TTL until cancelled; raise when it is gone
    (LeaseNotFound) or could not be renewed within its TTL (``last_ok``: the loop time at
    which the last acknowledged renewal was sent)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(max(0.0, last_ok + ttl / 3 - loop.time()))
        sent = loop.time()
        left = last_ok + ttl - sent
        try:
            ttl = await c.lease_keepalive(lid, deadline=max(left, 0.001))
            last_ok = sent
            continue
        except LeaseNotFound:
            raise
        except FastraftError as exc:
            left = last_ok + ttl - loop.time()
            if left <= 0:
                raise FastraftError(f"lease {lid} could not be renewed within its TTL "
                                    f"({ttl:g} s): it may have expired ({exc})") from None
            print(f"fastraft lease keepalive: renewing lease {lid} failed, trying again: "
                  f"{exc}", file=sys.stderr)
            await asyncio.sleep(min(0.5, left / 4))


# -- lock -----------------------------------------------------------------------------------------

def _lock_argv(args) -> list[str]:
    """COMMAND of ``fastraft lock NAME [options] -- COMMAND...``: argparse leaves the options
    given after NAME in the remainder; they are parsed here, into ``args``."""
    rest = list(args.argv)
    if rest and rest[0].startswith("-"):
        cut = rest.index("--") if "--" in rest else len(rest)
        opts, rest = rest[:cut], rest[cut + 1:]
        if "-h" in opts or "--help" in opts:
            args.lock_parser.print_help()
            raise SystemExit(0)
        given = (args.endpoints, args.config)
        q = argparse.ArgumentParser(prog="fastraft lock", add_help=False)
        _lock_options(q)
        q.error = args.usage_error
        extra = q.parse_known_args(opts, namespace=args)[1]
        if extra:
            hint = "" if all(x.startswith("-") for x in extra) else (
                " (COMMAND goes after --: fastraft lock NAME [options] -- COMMAND [ARG...])")
            args.usage_error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        if (args.endpoints or given[0]) and (args.config or given[1]):
            args.usage_error("argument --config: not allowed with argument --endpoints")
    if not rest:
        args.usage_error("no COMMAND given: fastraft lock NAME [options] -- COMMAND [ARG...]")
    if not args.name:
        args.usage_error("NAME must not be empty")
    return rest


async def _lock(args, eps: list[str], tls, argv: list[str]) -> int:
    from .aio import AsyncClient

    if shutil.which(argv[0]) is None:
        missing = os.sep not in argv[0] or not os.path.exists(argv[0])
        print(f"fastraft lock: {argv[0]}: "
              + ("command not found" if missing else "cannot be run (not an executable "
                                                    "file)"), file=sys.stderr)
        return 127 if missing else 126
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    termed: list = []

    def on_sigterm() -> None:
        termed.append(True)
        main.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        async with AsyncClient(eps, timeout=args.timeout, tls=tls) as c:
            async with c.lock(os.fsencode(args.name), args.ttl) as held:
                return await _run_holding(args.name, argv, held)
    except asyncio.CancelledError:
        if termed:
            return 128 + signal.SIGTERM
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _run_holding(name: str, argv: list[str], held) -> int:
    """Run ``argv`` while ``held``; its exit status, or 2 when the lock is lost first."""
    env = dict(os.environ, FASTRAFT_FENCE=str(held.fence))
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env)
    except OSError as exc:
        print(f"fastraft lock: {argv[0]}: cannot be run: {exc.strerror or exc}",
              file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    loop = asyncio.get_running_loop()
    ended = loop.create_task(proc.wait())
    lost = loop.create_task(held.lost.wait())
    try:
        await asyncio.wait((ended, lost), return_when=asyncio.FIRST_COMPLETED)
        if ended.done():
            rc = ended.result()
            return rc if rc >= 0 else 128 - rc
        print(f"fastraft lock: lost the lock {name!r}: its lease {held.lease} could not be "
              f"renewed in time, so another process may hold it now (fence {held.fence}); "
              f"stopping the command (SIGTERM)", file=sys.stderr)
        await _stop(proc)
        return 2
    except BaseException:
        await _stop(proc)           # interrupted: the command ends before the lock goes
        raise
    finally:
        ended.cancel()
        lost.cancel()


async def _stop(proc) -> None:
    """SIGTERM ``proc``, SIGKILL it TERM_GRACE seconds later if it is still running; wait
    for its end."""
    if proc.returncode is not None:
        return
    try:
        proc.terminate()
    except ProcessLookupError:
        pass
    waiter = asyncio.get_running_loop().create_task(proc.wait())
    done, _ = await asyncio.wait((waiter,), timeout=TERM_GRACE)
    if not done:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await waiter
