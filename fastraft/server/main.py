"""Process entry of a node: choose the event loop, lock the data directory, run until a signal.

Place in the architecture: the top of ``fastraft.server``, called by ``fastraft node`` (cli).
It picks the node's event loop with ``fastraft.loops`` (uvloop when installed). SIGHUP
re-reads the ``[tls]`` certificate files (``Node.reload_tls``). Exit codes: 0 after a clean
stop (SIGTERM/SIGINT), 2 for a configuration or start-up problem (bad config, port in use,
data directory locked, data directory owned by another storage backend), 3 when the node
stopped itself on a storage failure or unrecoverable state.

A node added at runtime (``bootstrap`` False) records its identity file first and, at its
first start with ``--join``, waits until the cluster lists it (``joining``). Before a backend
opens anything, the data directory is locked (``datadir.lock_data_dir``) and
claimed for the configured backend (``datadir.claim_backend``: its BACKEND marker, written at
the first start, must name the same backend; there is no migration between backends). Then,
in the running loop, ``wiring.build_node`` recovers the storage and builds the node with its
parts, and the node runs until a signal or a fatal error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from typing import Callable

from .. import loops
from ..datadir import claim_backend, lock_data_dir
from ..errors import ConfigError, FatalError
from .backends import backends_present
from .joining import is_joined, mark_joined, wait_until_added, write_identity
from .logs import setup_logging
from .node import Node
from .wiring import build_node

__all__ = ["run_node", "pick_loop"]

log = logging.getLogger("fastraft.node")


def pick_loop(choice: str = "auto"):
    """``(loop_factory, name)`` (``fastraft.loops.pick_loop``); ConfigError when uvloop is
    asked for and not installed."""
    try:
        return loops.pick_loop(choice)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _serve(build: Callable[[], Node]) -> int:
    """Build the node in the running loop, start it, wait until it stops; the exit code."""
    loop = asyncio.get_running_loop()
    node: Node | None = None

    def on_signal(name: str) -> None:
        log.info("%s received: stopping", name)
        if node is not None:        # always built by then: the build does not yield
            loop.create_task(node.shutdown())

    def on_hup() -> None:
        if node is not None:
            node.reload_tls()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        node = build()
        await node.start()
    except (OSError, ConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    await node.stopped
    return node.exit_code


def run_node(cfg, node_id: int, *, loop: str = "auto", log_json: bool = False,
             log_level: str = "INFO", rejoin: bool = False, bootstrap: bool = True,
             join: list | None = None) -> int:
    """Run node ``node_id`` of ``cfg`` in this process until it stops; returns the exit code
    (module docstring). ``rejoin``: this node lost its data (``fastraft node --rejoin``).
    ``bootstrap``: ``cfg`` names the bootstrap members (False: a node added later, whose
    ``cfg`` names itself only, ``joining``); ``join``: client addresses of members to ask
    until this node is listed (a first start with ``--join``)."""
    setup_logging(node_id, log_json, log_level)
    cfg.node(node_id)          # ConfigError for an unknown id, before anything is touched
    node_dir = cfg.node_dir(node_id)
    factory, loop_name = pick_loop(loop)
    try:
        lock_fd = lock_data_dir(node_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        storage = cfg.tuning.storage
        try:
            how = claim_backend(node_dir, storage, backends_present(node_dir))
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        except OSError as exc:
            log.error("cannot record the storage backend of %s: %s", node_dir, exc)
            return 2
        if how == "recognised":
            log.info("data directory %s holds %s data from before the backend marker: "
                     "marked as the %s backend's", node_dir, storage, storage)
        if not bootstrap:
            try:
                write_identity(cfg, node_id)
            except (ConfigError, OSError) as exc:
                log.error("%s", exc)
                return 2
        with asyncio.Runner(loop_factory=factory) as runner:
            hints = None
            if join and not is_joined(node_dir):
                try:
                    hints = runner.run(wait_until_added(join, cfg.node(node_id),
                                                        tls=cfg.tls))
                    mark_joined(node_dir)
                except ConfigError as exc:
                    log.error("cannot join: %s", exc)
                    return 2
            build = functools.partial(build_node, cfg, node_id, node_dir, loop_name=loop_name,
                                      rejoin=rejoin, bootstrap=bootstrap, hints=hints)
            return runner.run(_serve(build))
    except FatalError as exc:
        log.critical("cannot run: %s", exc)
        return 3
    finally:
        os.close(lock_fd)
