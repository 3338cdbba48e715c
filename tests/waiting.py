"""Polling with a deadline, for every test directory: ``wait_until`` (blocking) and ``until``
(in an event loop). A test waits for a condition with these, never with a bare sleep.

Place in the architecture: test infrastructure only. pytest runs with ``--import-mode=
importlib`` (test directories are not on sys.path), so ``tests/conftest.py`` loads this file
as the module ``fastraft_test_waiting``; test modules write
``from fastraft_test_waiting import until, wait_until``.
"""

from __future__ import annotations

import asyncio
import inspect
import time

__all__ = ["until", "wait_until"]


def wait_until(pred, timeout: float = 10.0, what: str = "the condition", interval=0.01):
    """Call ``pred()`` until it returns something true and return that; AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


async def until(pred, what: str = "the condition", timeout: float = 10.0):
    """Yield to the running loop until ``pred()`` holds (a coroutine function too: its
    result is awaited) and return what it gave; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
