"""``fastraft cluster``: run a whole local cluster, one ``fastraft node`` process per node.

Place in the architecture: the top layer, beside ``cli.py`` (which adds this subcommand with
``add_cluster_parser`` and calls ``run_cluster``). It reads the configuration
(``fastraft.config``), checks the data directory locks (``fastraft.datadir``) and manages
child processes (started and stopped through ``fastraft.processes``, as the verification
runs and the test harness do); it never imports the server, the engine or the stores —
each node is a separate ``python -P -m fastraft node`` process, exactly what a user would
start by hand, so the launcher cannot hide a bug that only real processes show.

What it does:

1. Finds the configuration. With ``--config FILE`` that file is used. Otherwise the cluster
   lives in ``--data-dir`` (default ``./fastraft-data``) as ``DIR/cluster.toml``: an existing
   file is kept and used as is (the user may have edited it: ports, tuning, name, nodes), and
   its ``data_dir`` key is not used (the nodes keep their data in DIR, next to the file; a
   note on stderr says so when the key names another directory). ``--size N`` with an
   existing file of another number of nodes is refused (exit 2, one line naming the file,
   what it says, what the option says and how to resolve it: edit the file, or remove it to
   regenerate). Without a file, the built-in local cluster of ``--size`` nodes (default 3) is
   written there (``render_config``). Every node gets the same file, so nodes and launcher
   agree on one configuration. An invalid file is a ConfigError naming it (exit 2).
2. Before anything is started, written or printed, checks every node's data directory lock
   (``DIR/N/LOCK``, see ``fastraft.datadir``): when another process holds one (a running
   cluster or node on the same directory) it exits 2 with one line naming the locked
   directories and the pids holding them. This is a check, not a reservation: each node
   takes its own lock, and one that loses a race for it exits 2 like any failed node.
3. Starts ``[sys.executable, "-P", "-m", "fastraft", "node", "--id", N, "--config", CFG,
   "--data-dir", DIR]`` (plus ``--storage`` when given) per node. ``-P`` keeps the current
   directory off the node's ``sys.path``: run from a source checkout, the nodes import the
   installed package (with its compiled core), not the checkout's sources, so fastraft must
   be installed (``pip install .``). ``-I`` would also drop PYTHONPATH and the user site
   directory, which some installs need (``pip install --user``). Each node runs in
   its own process group so a terminal's Ctrl-C reaches only the launcher, which then stops
   the nodes in order. On Linux a node also receives SIGTERM if the launcher dies without
   cleaning up.
4. Copies every node's output (stdout and stderr) to its own stderr, one line at a time,
   prefixed ``[node N]``; its stdout carries only the summary: the configuration file and
   whether it was kept, written or given, the client endpoints and a command to paste.
5. On SIGINT or SIGTERM it sends SIGTERM to every node, waits up to 10 s in all, SIGKILLs any
   that are left (a second Ctrl-C does that at once), and exits 0 when every node exited
   with status 0, 1 otherwise (2 for a usage, configuration or start-up error found before
   any node started). A node that exits on its own is reported (id, exit code) and the
   others keep running until all have exited.

For tests only: ``FASTRAFT_LAUNCHER_NODE_CMD`` replaces the node command with a JSON list of
strings in which ``{id}``, ``{config}``, ``{data_dir}`` and ``{storage}`` are substituted, and
``FASTRAFT_LAUNCHER_STOP_GRACE`` replaces the 10 s grace period (seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

from .config import (
    DEFAULT_DATA_DIR,
    MAX_DEFAULT_SIZE,
    STORAGE_BACKENDS,
    Config,
    default_config,
    load_config,
    render_config,
)
from .datadir import lock_holder, makedirs_durable, write_file_durable
from .errors import ConfigError
from .processes import kill, node_argv, spawn, stop

__all__ = ["add_cluster_parser", "run_cluster", "node_command", "main", "STOP_GRACE_S"]

#: Seconds between the SIGTERM sent to the nodes and the SIGKILL of those still running.
STOP_GRACE_S = 10.0
_POLL_S = 0.1

_PROG = "fastraft cluster"


def add_cluster_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``cluster`` subcommand to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "cluster", help="run a whole local cluster (one node process per member)",
        description="Start every node of a cluster as a child process and stop them all "
                    "cleanly on Ctrl-C. Without --config, the built-in local cluster of "
                    "--size nodes is used (node N: clients on 127.0.0.1:7000+N, peers on "
                    "127.0.0.1:7100+N, so 7001 and 7101 for node 1) and written to "
                    "DATA_DIR/cluster.toml; an existing DATA_DIR/cluster.toml is kept and "
                    "used as is (edit it to change the cluster, remove it to regenerate).")
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--size", type=int, default=None, metavar="N",
                       help=f"nodes of the built-in local cluster, 1-{MAX_DEFAULT_SIZE} "
                            f"(default 3)")
    which.add_argument("--config", default=None, metavar="FILE",
                       help="a cluster configuration file (TOML) instead of --size")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"where the nodes keep their data, node N in DIR/N (default: the "
                        f"config's data_dir, else {DEFAULT_DATA_DIR})")
    p.add_argument("--storage", choices=STORAGE_BACKENDS, default=None,
                   help="storage backend, passed to every node (default: the config's)")


def node_command(node_id: int, config_path: str, data_dir: str,
                 storage: str | None = None) -> list[str]:
    """The argv that starts node ``node_id``: ``processes.node_argv`` (``python -P -m
    fastraft node ...``), or FASTRAFT_LAUNCHER_NODE_CMD's template when set."""
    template = os.environ.get("FASTRAFT_LAUNCHER_NODE_CMD")
    if template:
        subst = {"id": str(node_id), "config": config_path, "data_dir": data_dir,
                 "storage": storage or ""}
        return [part.format(**subst) for part in json.loads(template)]
    return node_argv(node_id, config_path, data_dir, storage=storage)


def _err(msg: str) -> None:
    print(f"{_PROG}: {msg}", file=sys.stderr, flush=True)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    def __init__(self, node_id: int, proc: subprocess.Popen) -> None:
        self.id = node_id
        self.proc = proc
        self.code: int | None = None
        self.reported = False
        self.reader: threading.Thread | None = None


def _pump(child: _Child, lock: threading.Lock) -> None:
    """Copy a node's output to our stderr line by line, prefixed with its id."""
    prefix = f"[node {child.id}] ".encode()
    out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    stream = child.proc.stdout
    assert stream is not None
    for line in iter(stream.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        with lock:
            try:
                if out is not None:
                    out.write(prefix + line)
                    out.flush()
                else:  # pragma: no cover - stderr replaced by a text-only object
                    sys.stderr.write((prefix + line).decode("utf-8", "replace"))
            except (OSError, ValueError):
                pass
    stream.close()


#: How the summary describes the configuration file, by where it came from.
_ORIGINS = {
    "given": "given with --config",
    "kept": "kept: the existing file, used as is; remove it to regenerate",
    "written": "written: the built-in local cluster; edit it to change the cluster",
}


def _load(args) -> tuple[Config, str, str, str, str | None]:
    """``(config, config_path, data_dir, origin, text_to_write)`` for the arguments, where
    origin is "given", "kept" or "written" (then ``text_to_write`` is the file's text; it is
    written only once nothing stands in the way of the start). Raises ConfigError."""
    if args.config is not None:
        cfg = load_config(args.config)
        data_dir = args.data_dir if args.data_dir is not None else cfg.data_dir
        return cfg, args.config, data_dir, "given", None
    if args.size is not None and not 1 <= args.size <= MAX_DEFAULT_SIZE:
        raise ConfigError(f"--size takes 1 to {MAX_DEFAULT_SIZE} nodes, got {args.size}")
    data_dir = args.data_dir if args.data_dir is not None else DEFAULT_DATA_DIR
    path = os.path.join(data_dir, "cluster.toml")
    if os.path.lexists(path):
        cfg = load_config(path)
        if args.size is not None and args.size != len(cfg.nodes):
            raise ConfigError(
                f"{path} describes {len(cfg.nodes)} node(s) but --size asks for {args.size}: "
                f"edit {path}, or remove it to have --size {args.size} write a new one (or "
                f"leave out --size to use it as is)")
        return cfg, path, data_dir, "kept", None
    cfg = default_config(3 if args.size is None else args.size, data_dir=data_dir)
    return cfg, path, data_dir, "written", render_config(cfg)


def _check_locks(cfg: Config, data_dir: str) -> None:
    """ConfigError naming every node directory whose lock another process holds."""
    in_dir = dataclasses.replace(cfg, data_dir=data_dir)  # as the node computes it
    held = []
    for spec in cfg.nodes:
        node_dir = in_dir.node_dir(spec.id)
        pid = lock_holder(node_dir)
        if pid is not None:
            held.append(f"{node_dir} (pid {pid if pid else 'unknown'})")
    if held:
        raise ConfigError(
            f"data directory in use: {', '.join(held)} locked by another fastraft process; "
            f"stop it first, or use another --data-dir; nothing was started")


def _prepare(args) -> tuple[Config, str, str, str]:
    """Everything before the first node starts: the configuration, the lock check, then the
    data directory and the default file. ``(config, config_path, data_dir, origin)``."""
    cfg, config_path, data_dir, origin, text = _load(args)
    _check_locks(cfg, data_dir)
    if origin == "kept" and os.path.realpath(cfg.data_dir) != os.path.realpath(data_dir):
        _err(f"note: {config_path} sets data_dir = {cfg.data_dir!r}; the nodes keep their "
             f"data in {data_dir}, where the file is (use --config {config_path} to follow "
             f"its data_dir)")
    makedirs_durable(data_dir)  # the nodes' directories live in it: its name must survive a crash
    if text is not None:
        write_file_durable(config_path, text.encode("utf-8"))
    return cfg, config_path, data_dir, origin


def run_cluster(args) -> int:
    """Run the cluster described by ``args`` (from ``add_cluster_parser``) until a signal
    stops it or every node has exited; returns the exit status."""
    try:
        cfg, config_path, data_dir, origin = _prepare(args)
    except ConfigError as e:
        _err(str(e))
        return 2
    except OSError as e:
        _err(f"cannot prepare the data directory: {e}")
        return 2
    storage = getattr(args, "storage", None)
    grace = float(os.environ.get("FASTRAFT_LAUNCHER_STOP_GRACE", STOP_GRACE_S))

    # The handler only records the signal: the loops below poll this list (a handler that
    # took a lock, like threading.Event.set, could deadlock against the interrupted code).
    signals_seen: list[int] = []

    def on_signal(signum, frame):
        signals_seen.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[_Child] = []
    try:
        # Start every node before any output thread exists (fork with threads is unsafe).
        # A node gets SIGTERM if the launcher dies without stopping it (Linux).
        for spec in cfg.nodes:
            argv = node_command(spec.id, config_path, data_dir, storage)
            try:
                proc = spawn(argv, stdout=subprocess.PIPE, death_signal=signal.SIGTERM)
            except OSError as e:
                _err(f"cannot start node {spec.id} ({argv[0]}): {e}")
                _stop_all(children, grace, signals_seen)
                return 1
            children.append(_Child(spec.id, proc))
        lock = threading.Lock()
        for child in children:
            child.reader = threading.Thread(target=_pump, args=(child, lock),
                                            name=f"node-{child.id}-output", daemon=True)
            child.reader.start()
        _print_summary(cfg, config_path, origin, data_dir, children)

        while not signals_seen:
            for child in children:
                if child.code is None:
                    child.code = child.proc.poll()
                if child.code is not None and not child.reported:
                    child.reported = True
                    left = sum(c.code is None for c in children)
                    _err(f"node {child.id} (pid {child.proc.pid}) exited on its own with "
                         f"{_describe(child.code)}"
                         + (f"; {left} node(s) keep running" if left else ""))
            if all(c.code is not None for c in children):
                _err("every node has exited")
                _join_readers(children)
                return 0 if all(c.code == 0 for c in children) else 1
            time.sleep(_POLL_S)

        name = signal.Signals(signals_seen[0]).name
        _err(f"{name} received: stopping {sum(c.code is None for c in children)} node(s)")
        clean = _stop_all(children, grace, signals_seen)
        _join_readers(children)
        return 0 if clean else 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for child in children:  # never leave a node behind, whatever happened above
            kill(child.proc)


def _stop_all(children: list[_Child], grace: float, signals_seen: list[int]) -> bool:
    """SIGTERM every running node, wait up to ``grace`` seconds (less if another signal
    arrives), SIGKILL the rest. True when every node exited with status 0."""
    first_signals = len(signals_seen)
    killed = stop([c.proc for c in children], grace,
                  interrupted=lambda: len(signals_seen) > first_signals)
    if len(signals_seen) > first_signals:
        _err("second signal: killing the remaining nodes now")
    clean = True
    for child in children:
        if child.proc in killed:
            _err(f"node {child.id} (pid {child.proc.pid}) did not stop within "
                 f"{grace:g} s: SIGKILL")
            clean = False
        code = child.proc.returncode
        if not child.reported:
            child.reported = True
            _err(f"node {child.id} stopped ({_describe(code)})")
        if code != 0:
            clean = False
    return clean


def _join_readers(children: list[_Child]) -> None:
    for child in children:
        if child.reader is not None:
            child.reader.join(timeout=2.0)


def _client_tls_flags(cfg: Config) -> str:
    """The TLS flags a client command needs for this cluster ('' without ``[tls]``): the CA
    of the nodes' certificates and, when the nodes require one, a client certificate (the
    ``client.pem``/``client.key`` that ``fastraft certs init`` writes beside the client CA,
    else placeholders)."""
    t = cfg.tls
    if t is None:
        return ""
    flags = f" --cacert {t.peer_ca}"
    if t.client_ca:
        d = os.path.dirname(t.client_ca)
        cert, key = os.path.join(d, "client.pem"), os.path.join(d, "client.key")
        if not (os.path.exists(cert) and os.path.exists(key)):
            cert, key = "CLIENT.pem", "CLIENT.key"
        flags += f" --cert {cert} --key {key}"
    return flags


def _print_summary(cfg: Config, config_path: str, origin: str, data_dir: str,
                   children: list[_Child]) -> None:
    endpoints = ",".join(cfg.client_endpoints())
    lines = [f"fastraft cluster {cfg.cluster_name!r}: {len(cfg.nodes)} node(s), "
             f"data in {data_dir}",
             f"config {config_path} ({_ORIGINS[origin]})"]
    for spec, child in zip(cfg.nodes, children):
        metrics = f"  metrics http://{spec.metrics_addr}/metrics" if spec.metrics else ""
        lines.append(f"  node {spec.id}  client {spec.client_addr}  peer {spec.raft_addr}"
                     f"{metrics}  pid {child.proc.pid}")
    flags = _client_tls_flags(cfg)
    lines += [f"client endpoints: {endpoints}",
              f"try:  fastraft put hello world --endpoints {endpoints}{flags}",
              f"      fastraft get hello --endpoints {endpoints}{flags}",
              "Ctrl-C stops every node."]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m fastraft.launcher``: the same as ``fastraft cluster``."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    if args.size is not None and not 1 <= args.size <= MAX_DEFAULT_SIZE:
        parser.error(f"--size takes 1 to {MAX_DEFAULT_SIZE} nodes")
    return run_cluster(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
