"""Process entry of a node: choose the event loop, lock the data directory, run until a signal.

Place in the architecture: the top of ``fastraft.server``, called by ``fastraft node`` (cli).
The only place that chooses uvloop. Exit codes: 0 after a clean stop (SIGTERM/SIGINT),
2 for a configuration or start-up problem (bad config, port in use, data directory locked),
3 when the node stopped itself on a storage failure or unrecoverable state.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import signal

from ..errors import ConfigError
from .logs import setup_logging
from .node import FatalError, Node

__all__ = ["run_node", "pick_loop"]

log = logging.getLogger("fastraft.node")


def pick_loop(choice: str = "auto"):
    """``(loop_factory, name)``: uvloop when installed (or asked for), else asyncio's."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def _lock(node_dir: str) -> int:
    os.makedirs(node_dir, exist_ok=True)
    fd = os.open(os.path.join(node_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"data directory {node_dir} is in use by another fastraft "
                              f"node (locked)") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def _serve(node: Node) -> int:
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        log.info("%s received: stopping", name)
        loop.create_task(node.shutdown())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await node.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 2
    await node.stopped
    return node.exit_code


def run_node(cfg, node_id: int, *, loop: str = "auto", log_json: bool = False,
             log_level: str = "INFO", rejoin: bool = False) -> int:
    setup_logging(node_id, log_json, log_level)
    cfg.node(node_id)          # ConfigError for an unknown id, before anything is touched
    node_dir = cfg.node_dir(node_id)
    factory, loop_name = pick_loop(loop)
    try:
        lock_fd = _lock(node_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        node = Node(cfg, node_id, node_dir, loop_name=loop_name, rejoin=rejoin)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_serve(node))
    except FatalError as exc:
        log.critical("cannot run: %s", exc)
        return 3
    finally:
        os.close(lock_fd)
