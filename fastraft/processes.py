"""Node processes: the command that starts a node, free ports, start and stop.

Place in the architecture: a leaf beside ``config.py``, used by everything that runs real
``fastraft node`` processes — the launcher (``fastraft cluster``), the verification runs
(``fastraft.verify``) and the integration harness of the test suite — so they start and stop
nodes the same way. Standard library only: it never imports the server, the engine or the
stores (a node is a separate process, exactly what a user starts by hand).

What it promises:

- ``node_argv``: ``python -P -m fastraft node --id N --config F --data-dir D [...]``. ``-P``
  keeps the current directory off the node's ``sys.path``: run from a source checkout, a node
  imports the installed package (with its compiled core), not the checkout's sources.
- ``free_port``: a port that was free on the host a moment ago and that this process has not
  handed out before (the operating system may offer the same port twice in a row; a cluster
  given one port twice would not start).
- ``spawn``: a child in its own process group (a terminal's Ctrl-C reaches only the parent,
  which stops its nodes in order), which on Linux receives ``death_signal`` if the thread
  that started it dies (PR_SET_PDEATHSIG); optionally under RLIMIT_FSIZE. Everything the
  child runs between fork and exec is resolved in the parent first: nothing there imports a
  module or takes a lock another thread may hold.
- ``stop``: SIGTERM, a grace period, then SIGKILL for those still running; ``kill``: SIGKILL
  and reap one.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable

__all__ = ["node_argv", "free_port", "spawn", "stop", "kill"]

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05

_ports_lock = threading.Lock()
_ports_given: set[tuple[str, int]] = set()


def node_argv(node_id: int, config_path: str, data_dir: str, *extra: str,
              storage: str | None = None) -> list[str]:
    """The argv that starts node ``node_id`` of the cluster in ``config_path`` with its data
    under ``data_dir`` (``--storage`` when given, then ``extra``). ``-P`` keeps the current
    directory off the node's ``sys.path``, so it imports the installed fastraft."""
    argv = [sys.executable, "-P", "-m", "fastraft", "node",
            "--id", str(node_id), "--config", config_path, "--data-dir", data_dir]
    if storage:
        argv += ["--storage", storage]
    return argv + list(extra)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago and was never handed out before by
    this process (thread-safe)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if (host, port) not in _ports_given:
                _ports_given.add((host, port))
                return port
    raise RuntimeError(f"no free port found on {host}")  # pragma: no cover


def _find_prctl():
    """libc's prctl on Linux (None elsewhere), found in the parent: a child must not load a
    library between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None


_prctl = _find_prctl()


def _child_setup(prctl, death_signal: int | None, setrlimit=None, rlimit: int = 0,
                fsize_limit: int | None = None) -> Callable[[], None] | None:
    """The function the child runs between fork and exec (None when it has nothing to do):
    only calls to what the parent resolved (``prctl``, ``setrlimit`` and the ``rlimit``
    constant), no import, no lock."""
    if (prctl is None or death_signal is None) and fsize_limit is None:
        return None

    def setup() -> None:  # pragma: no cover - runs in the child
        if prctl is not None and death_signal is not None:
            prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if fsize_limit is not None:
            setrlimit(rlimit, (fsize_limit, fsize_limit))

    return setup


def spawn(argv: list[str], *, stdout=None, stderr=subprocess.STDOUT, cwd=None,
          death_signal: int | None = signal.SIGKILL,
          fsize_limit: int | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own process group, stdin from /dev/null, stderr into ``stdout``
    unless told otherwise. On Linux it gets ``death_signal`` (None: nothing) when the thread
    that started it dies; ``fsize_limit``: it runs under RLIMIT_FSIZE (a write past it fails
    with EFBIG; Python ignores SIGXFSZ). Raises OSError when ``argv`` cannot be run."""
    setrlimit, rlimit = None, 0
    if fsize_limit is not None:
        import resource

        setrlimit, rlimit = resource.setrlimit, resource.RLIMIT_FSIZE
    setup = _child_setup(_prctl, None if death_signal is None else int(death_signal),
                        setrlimit, rlimit, fsize_limit)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            cwd=cwd, process_group=0, preexec_fn=setup)


def kill(proc: subprocess.Popen) -> int:
    """SIGKILL ``proc`` unless it has exited (a stopped process dies too), reap it, and
    return its exit code."""
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


def stop(procs: Iterable[subprocess.Popen], grace: float, *, resume: bool = False,
         interrupted: Callable[[], bool] | None = None) -> list[subprocess.Popen]:
    """SIGTERM every running process of ``procs`` (then SIGCONT when ``resume``: a stopped
    process acts on SIGTERM only once continued) and wait until all have exited, ``grace``
    seconds have passed or ``interrupted()`` says to give up; then SIGKILL and reap the
    rest. Returns the processes that had to be killed."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                if resume:
                    p.send_signal(signal.SIGCONT)
            except ProcessLookupError:  # pragma: no cover - exited in between
                pass
    deadline = time.monotonic() + grace
    _wait_all(procs, deadline, interrupted)
    killed = [p for p in procs if p.poll() is None]
    for p in killed:
        kill(p)
    return killed


def _wait_all(procs: list, deadline: float, interrupted) -> None:
    for p in procs:
        while p.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0 or (interrupted is not None and interrupted()):
                return
            try:
                p.wait(left if interrupted is None else min(left, _POLL_S))
            except subprocess.TimeoutExpired:
                pass
