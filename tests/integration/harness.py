"""A cluster of real ``fastraft node`` processes for integration and fault tests.

Place in the architecture: test infrastructure (tests/integration; the ``cluster_factory``
fixture in ``conftest.py`` hands it out). It starts the very command a user runs —
``python -m fastraft node --id N --config F --data-dir D`` — on free ports, with every node's
stdout and stderr in its own log file, and drives the nodes with signals only (SIGTERM,
SIGKILL, SIGSTOP/SIGCONT); starting, stopping and the free ports are ``fastraft.processes``'s,
as for the launcher and the verification runs. It talks to them through ``wire.py`` (the
protocol as fastraft.codec describes it), never through fastraft.client, and imports nothing of
the server.

Rules it keeps:

- Nothing waits by sleeping: ``wait_for`` polls a predicate against a deadline and, on
  timeout, raises AssertionError naming what it waited for, with the last lines of every
  node's log.
- Nothing outlives the test: ``close()`` SIGKILLs every node (paused ones included) and
  waits for it; the fixture calls it in a finalizer, and on Linux each node also gets SIGKILL
  if the test process dies (PR_SET_PDEATHSIG). Each node runs in its own process group.
- Ports come from binding port 0 on 127.0.0.1 and are never handed out twice in a run.
- ``node(i).data_dir`` is the node's own directory, ``<base>/data/<i>`` (the config's
  data_dir is ``<base>/data``, passed as ``--data-dir``); logs are ``<base>/node<i>.log``
  (appended to across restarts, each start marked with a line).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from fastraft import processes
from fastraft.config import Config, NodeSpec, Tuning, render_config
from fastraft.processes import free_port


def _sibling(name: str):
    """Import tests/integration/<name>.py once (pytest's importlib mode puts no test
    directory on sys.path)."""
    modname = f"fastraft_itest_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname,
                                                  Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


wire = _sibling("wire")

__all__ = ["Cluster", "NodeProc", "free_port", "wait_for", "wire", "LOG_TAIL_LINES"]

LOG_TAIL_LINES = 40
_names = itertools.count(1)

#: ``node_cmd(node_id, config_path, data_dir) -> argv``: how a node is started.
NodeCmd = Callable[[int, str, str], list]


def default_node_cmd(node_id: int, config_path: str, data_dir: str) -> list:
    """``python -P -m fastraft node --id N --config F --data-dir D`` (``processes.node_argv``)."""
    return processes.node_argv(node_id, config_path, data_dir)


def wait_for(predicate, timeout: float = 10.0, what: str = "the condition",
             report: Callable[[], str] | None = None, interval: float = 0.02):
    """Poll ``predicate()`` until it returns something truthy (which is returned) or
    ``timeout`` seconds pass: then AssertionError naming ``what`` (plus ``report()``)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
        except (OSError, ValueError) as exc:  # a node down mid-poll counts as "not yet"
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    msg = f"timed out after {timeout:g} s waiting for {what}"
    if last_exc is not None:
        msg += f" (last error: {last_exc!r})"
    if report is not None:
        msg += "\n" + report()
    raise AssertionError(msg)


class NodeProc:
    """One member of a harness cluster and its process (None while not running)."""

    def __init__(self, cluster: Cluster, spec: NodeSpec) -> None:
        self.cluster = cluster
        self.spec = spec
        self.id = spec.id
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.next_args: list[str] = []      # extra arguments for the next start only
        #: A node added at runtime: its argv after ``fastraft node`` (None: a bootstrap
        #: member, started by the cluster's ``node_cmd``).
        self.join_argv: list[str] | None = None
        #: Exit codes of this node's past processes, oldest first.
        self.exit_codes: list[int] = []
        self.log_path = cluster.base / f"node{spec.id}.log"

    @property
    def client_addr(self) -> str:
        """``host:port`` of the node's client port."""
        return self.spec.client_addr

    @property
    def raft_addr(self) -> str:
        """``host:port`` the node advertises to its peers."""
        return self.spec.raft_addr

    @property
    def metrics_addr(self) -> str | None:
        """``host:port`` of the node's metrics listener (None without one)."""
        return self.spec.metrics_addr

    @property
    def data_dir(self) -> str:
        """The node's own data directory, ``<base>/data/<id>``."""
        return os.path.join(self.cluster.config.data_dir, str(self.id))

    @property
    def pid(self) -> int | None:
        """The pid of the node's process (None while not running)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the node's process is alive (a paused one is)."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the node's processes wrote so far (every start's output)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _reap(self) -> int:
        assert self.proc is not None
        code = self.proc.wait()
        self.exit_codes.append(code)
        self.proc = None
        self.paused = False
        return code

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "down"
        return f"<node {self.id} {state} pid={self.pid} client={self.client_addr}>"


class Cluster:
    """``size`` nodes on free ports under ``base`` (a fresh directory).

    ``tuning``: overrides of Tuning fields; ``storage``: "wal" or "sqlite" (written into the
    config); ``node_cmd``: how a node is started (tests of the harness use a stand-in);
    ``raft_listen``: give every node a separate free ``raft_listen`` port, so that a fault
    proxy (fastraft.verify) can serve each node's advertised ``raft`` address. ``metrics``:
    give every node a metrics listener on a free port (``NodeProc.metrics_addr``). ``tls``: a
    ``config.TLSConfig`` written into the config (the nodes then speak TLS on both ports),
    ``client_tls``: the ssl context the harness's clients use then."""

    def __init__(self, base, size: int = 3, tuning: dict | None = None,
                 storage: str | None = None, name: str | None = None,
                 node_cmd: NodeCmd | None = None, start_timeout: float = 15.0,
                 raft_listen: bool = False, tls=None, client_tls=None,
                 metrics: bool = False) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        tuning = dict(tuning or {})
        if storage is not None:
            tuning["storage"] = storage
        specs = tuple(NodeSpec(i, ("127.0.0.1", free_port()), ("127.0.0.1", free_port()),
                               ("127.0.0.1", free_port()) if raft_listen else None,
                               metrics=("127.0.0.1", free_port()) if metrics else None)
                      for i in range(1, size + 1))
        name = name or f"itest-{os.getpid()}-{next(_names)}"
        self.config = Config(name, specs, Tuning(**tuning), data_dir=str(self.base / "data"),
                             tls=tls)
        #: ([tls] clusters) the ssl.SSLContext the harness's own clients connect with
        self.client_tls = client_tls
        self.config_path = str(self.base / "cluster.toml")
        Path(self.config_path).write_text(render_config(self.config))
        self.node_cmd = node_cmd or default_node_cmd
        self.start_timeout = start_timeout
        self.nodes = {s.id: NodeProc(self, s) for s in self.config.nodes}
        self._clients: list = []
        self.closed = False

    # -- membership and processes ---------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """The node ids, sorted."""
        return sorted(self.nodes)

    def node(self, i: int) -> NodeProc:
        """Node ``i``."""
        return self.nodes[i]

    def endpoints(self) -> list[str]:
        """Every node's client address, as the client takes them."""
        return self.config.client_endpoints()

    def start(self, ids=None, wait: bool = True) -> Cluster:
        """Start the given nodes (default: all that are not running); with ``wait``, until
        each answers a status request."""
        ids = self.ids if ids is None else list(ids)
        for i in ids:
            if not self.nodes[i].running:
                self._spawn(i)
        if wait:
            for i in ids:
                self.wait_for(lambda i=i: self._answers(i), self.start_timeout,
                              f"node {i} to answer on {self.nodes[i].client_addr}")
        return self

    def _answers(self, i: int) -> bool:
        n = self.nodes[i]
        if n.proc is not None and n.proc.poll() is not None:
            code = n._reap()
            raise AssertionError(f"node {i} exited with code {code} while starting\n"
                                 + self.report())
        return self.status(i) is not None

    def _spawn(self, i: int) -> None:
        n = self.nodes[i]
        assert not self.closed, "the cluster is closed"
        if n.join_argv is not None:
            argv = [sys.executable, "-P", "-m", "fastraft", "node"] + n.join_argv + n.next_args
        else:
            argv = self.node_cmd(i, self.config_path, self.config.data_dir) + n.next_args
        n.next_args = []
        with open(n.log_path, "ab") as log:
            log.write(f"=== harness: starting node {i}: {' '.join(argv)}\n".encode())
            log.flush()
            n.proc = processes.spawn(argv, stdout=log, cwd=self.base,
                                     death_signal=signal.SIGKILL)
        n.paused = False

    def _signal(self, i: int, sig: int) -> None:
        n = self.nodes[i]
        assert n.running, f"node {i} is not running ({n!r})"
        n.proc.send_signal(sig)

    def kill(self, i: int) -> int:
        """SIGKILL node ``i`` and wait; returns its exit code (-9)."""
        n = self.nodes[i]
        if n.proc is None:
            return n.exit_codes[-1] if n.exit_codes else 0
        processes.kill(n.proc)
        return n._reap()

    def terminate(self, i: int, timeout: float = 10.0) -> int:
        """SIGTERM node ``i`` (SIGCONT first if paused) and return its exit code;
        AssertionError (after a SIGKILL) when it does not exit within ``timeout``."""
        n = self.nodes[i]
        assert n.proc is not None, f"node {i} is not running"
        if processes.stop([n.proc], timeout, resume=n.paused):
            n._reap()
            raise AssertionError(
                f"node {i} did not exit within {timeout:g} s of SIGTERM (killed)\n"
                + self.report())
        return n._reap()

    def stop(self, timeout: float = 10.0) -> dict[int, int]:
        """SIGTERM every running node, wait, and return ``{id: exit code}`` (nodes that
        outlive ``timeout`` are SIGKILLed and report -9)."""
        running = [n for n in self.nodes.values() if n.proc is not None]
        processes.stop([n.proc for n in running], timeout,
                       resume=any(n.paused for n in running))
        return {n.id: n._reap() for n in running}

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i`` (it keeps its sockets but answers nothing); on Linux, returns
        once the kernel reports the process stopped (signal delivery is asynchronous)."""
        self._signal(i, signal.SIGSTOP)
        self.nodes[i].paused = True
        stat = f"/proc/{self.nodes[i].pid}/stat"
        if os.path.exists(stat):
            def stopped():
                with open(stat) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
            self.wait_for(stopped, 5.0, f"node {i} to stop on SIGSTOP")

    def resume(self, i: int) -> None:
        """SIGCONT node ``i``."""
        self._signal(i, signal.SIGCONT)
        self.nodes[i].paused = False

    def restart(self, i: int, clean: bool = True, wait: bool = True) -> None:
        """Stop node ``i`` (SIGTERM when ``clean``, else SIGKILL) if running, start it again."""
        if self.nodes[i].proc is not None:
            if clean:
                self.terminate(i)
            else:
                self.kill(i)
        self.start([i], wait=wait)

    def wait_exit(self, i: int, timeout: float = 15.0) -> int:
        """Wait until node ``i``'s process exits by itself; its exit code."""
        n = self.nodes[i]
        self.wait_for(lambda: n.proc is not None and n.proc.poll() is not None, timeout,
                      f"node {i} to exit")
        return n._reap()

    def new_node(self, join: bool = True) -> NodeProc:
        """A node that is not a bootstrap member (not in cluster.toml), on free ports, with
        the next unused id; not started. Its argv (``join_argv``) is ``--id N --raft ..
        --client .. --join <every bootstrap member's client address> --config cluster.toml
        --data-dir <data>`` (the file gives the cluster name and tuning only); with
        ``join`` False, just ``--id N --data-dir <data>`` (a restart from its own data)."""
        nid = max(self.nodes) + 1
        spec = NodeSpec(nid, ("127.0.0.1", free_port()), ("127.0.0.1", free_port()))
        n = NodeProc(self, spec)
        self.nodes[nid] = n
        n.join_argv = ["--id", str(nid), "--raft", spec.raft_addr, "--client",
                       spec.client_addr, "--join", ",".join(self.config.client_endpoints()),
                       "--config", self.config_path, "--data-dir", self.config.data_dir]
        if not join:
            n.join_argv = ["--id", str(nid), "--data-dir", self.config.data_dir]
        return n

    def wipe(self, i: int, wait: bool = True, rejoin: bool = True) -> None:
        """SIGKILL node ``i``, delete its data directory, start it again empty (with
        ``--rejoin``, as an operator must: it does not vote until it has caught up)."""
        self.kill(i)
        shutil.rmtree(self.nodes[i].data_dir, ignore_errors=True)
        if rejoin:
            self.nodes[i].next_args = ["--rejoin"]
        self.start([i], wait=wait)

    def close(self) -> None:
        """SIGKILL every node and wait for it; close every client. Safe to call twice."""
        for c in self._clients:
            c.close()
        self._clients.clear()
        for n in self.nodes.values():
            if n.proc is None:
                continue
            try:
                processes.kill(n.proc)  # works on a stopped process too
                n._reap()
            except Exception:  # pragma: no cover - keep killing the others
                pass
        self.closed = True

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- observation ----------------------------------------------------------------------

    def report(self, lines: int = LOG_TAIL_LINES) -> str:
        """The state and the last ``lines`` log lines of every node."""
        out = []
        for n in self.nodes.values():
            out.append(f"--- {n!r} exit codes {n.exit_codes}; last {lines} lines of "
                       f"{n.log_path}:")
            out.append(n.log_tail(lines) or "(empty)")
        return "\n".join(out)

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "the condition"):
        """``wait_for`` with every node's state and log tail in the timeout's message."""
        return wait_for(predicate, timeout, what, report=self.report)

    def client(self, i: int, timeout: float = 5.0):
        """A new WireClient to node ``i`` (closed by ``close()``)."""
        c = wire.WireClient(self.nodes[i].client_addr, timeout, tls=self.client_tls)
        self._clients.append(c)
        return c

    def status(self, i: int, timeout: float = 1.0) -> dict | None:
        """Node ``i``'s status as a dict (wire.STATUS_FIELDS), or None when it does not
        answer (down, paused, not listening yet, or a malformed answer)."""
        n = self.nodes[i]
        if not n.running or n.paused:
            return None
        try:
            with wire.WireClient(n.client_addr, timeout, tls=self.client_tls) as c:
                reply = c.status()
                if not reply.ok:
                    return None
                return wire.parse_status(reply.values)
        except Exception:
            return None

    def statuses(self) -> dict[int, dict]:
        """``{id: status}`` of the nodes that answer."""
        return {i: s for i in self.ids if (s := self.status(i)) is not None}

    def current_leader(self) -> int | None:
        """The node that reports role leader for the highest term among the answering
        nodes, when exactly one does; else None."""
        st = self.statuses()
        if not st:
            return None
        top = max(s["term"] for s in st.values())
        leaders = [i for i, s in st.items() if s["role"] == "leader" and s["term"] == top]
        return leaders[0] if len(leaders) == 1 else None

    def leader(self, timeout: float = 15.0, exclude=()) -> int:
        """Wait until exactly one node is leader of the highest term (and is not one of
        ``exclude``, e.g. the leader just killed); return its id."""
        exclude = set(exclude)

        def found():
            lead = self.current_leader()
            return lead if lead is not None and lead not in exclude else None

        what = "exactly one leader of the highest term"
        if exclude:
            what += f" other than node(s) {sorted(exclude)}"
        return self.wait_for(found, timeout, what)

    def wait_applied(self, index: int, ids=None, timeout: float = 15.0) -> None:
        """Wait until every given node (default: every running, unpaused one) has applied
        at least ``index``."""
        def done():
            targets = ids if ids is not None else [
                i for i, n in self.nodes.items() if n.running and not n.paused]
            for i in targets:
                s = self.status(i)
                if s is None or s["applied"] < index:
                    return False
            return True
        which = "every running node" if ids is None else f"nodes {sorted(ids)}"
        self.wait_for(done, timeout, f"{which} to apply index {index}")
