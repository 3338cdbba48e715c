"""Shared helpers of the client unit tests that drive an ``AsyncClient`` against the fake
nodes: ``run`` (one event loop, bounded), ``client`` (fast retries) and ``until`` (poll a
condition against a deadline, never a bare sleep).

Place in the architecture: test infrastructure of tests/client only; ``conftest.py`` loads it
as the module ``fastraft_client_asynchelp`` (pytest runs with ``--import-mode=importlib``),
so test modules write ``from fastraft_client_asynchelp import run, client, until``.
"""

from __future__ import annotations

import asyncio

from fastraft.client import AsyncClient, ExponentialBackoff, RetryPolicy
from fastraft_test_waiting import until as _until  # tests/conftest.py loads it

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


def until(pred, timeout: float = 10.0, what: str = "condition"):
    """Yield to the loop until ``pred()`` holds; AssertionError after ``timeout`` s (the
    shared ``fastraft_test_waiting.until``, with this module's argument order)."""
    return _until(pred, what, timeout)
