"""Fixtures of the integration tests (tests/integration): real node processes on free ports.

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib`` (no test directory on sys.path), so the helpers are handed out
as fixtures:

- ``cluster_factory(size=3, tuning=None, storage=None, start=True, **kw)`` -> a started
  ``harness.Cluster`` in a fresh directory under ``tmp_path`` (its own cluster name and
  ports). Every cluster is SIGKILLed and reaped when the test ends, whatever happened, and
  when a test fails the last lines of every node's log are attached to its report
  ("cluster logs" section).
- ``harness`` and ``wire``: the modules (``harness.wait_for``, ``wire.WireClient``, ...).
"""

from __future__ import annotations

import atexit
import importlib.util
import sys
from pathlib import Path

import pytest


def _load(name: str):
    modname = f"fastraft_itest_{name}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            modname, Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


_harness = _load("harness")
_wire = _load("wire")

#: Every cluster made in this process and not yet closed (the atexit net for Ctrl-C).
_live: list = []


@atexit.register
def _close_leftovers() -> None:  # pragma: no cover - only after an interrupted run
    for c in _live:
        c.close()


@pytest.fixture(scope="session")
def harness():
    return _harness


@pytest.fixture(scope="session")
def wire():
    return _wire


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    clusters = getattr(item, "_fastraft_clusters", None)
    if clusters and rep.failed and call.when in ("call", "setup"):
        shown = str(rep.longrepr)
        for c in clusters:
            # a harness timeout already carries the log tails in its message
            if c.nodes and str(c.node(c.ids[0]).log_path) in shown:
                continue
            rep.sections.append((f"cluster logs ({c.config.cluster_name})", c.report()))


@pytest.fixture
def cluster_factory(request, tmp_path):
    made: list = []
    request.node._fastraft_clusters = made

    def make(size: int = 3, tuning: dict | None = None, storage: str | None = None,
             start: bool = True, **kw):
        c = _harness.Cluster(tmp_path / f"cluster{len(made) + 1}", size=size, tuning=tuning,
                             storage=storage, **kw)
        made.append(c)
        _live.append(c)
        if start:
            c.start()
        return c

    try:
        yield make
    finally:
        for c in made:
            try:
                c.close()
            finally:
                if c in _live:
                    _live.remove(c)
