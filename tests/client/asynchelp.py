"""Shared helpers of the client unit tests that drive an ``AsyncClient`` against the fake
nodes: ``run`` (one event loop, bounded), ``client`` (fast retries) and ``until`` (poll a
condition against a deadline, never a bare sleep).

Place in the architecture: test infrastructure of tests/client only; ``conftest.py`` loads it
as the module ``fastraft_client_asynchelp`` (pytest runs with ``--import-mode=importlib``),
so test modules write ``from fastraft_client_asynchelp import run, client, until``.
"""

from __future__ import annotations

import asyncio
import time

from fastraft.client import AsyncClient, ExponentialBackoff, RetryPolicy

#: Retries that give up fast: the fake nodes answer at once.
FAST = RetryPolicy(max_attempts=6, backoff=ExponentialBackoff(0.001, 0.01))


def run(coro, timeout: float = 60):
    """Run ``coro`` in a new event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(cluster, endpoints=None, **kw) -> AsyncClient:
    """An AsyncClient of ``cluster`` (a fake cluster) with 1 s requests and FAST retries."""
    kw.setdefault("timeout", 1.0)
    kw.setdefault("retry", FAST)
    return AsyncClient(endpoints or cluster.endpoints(), **kw)


async def until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    """Yield to the loop until ``pred()`` holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
