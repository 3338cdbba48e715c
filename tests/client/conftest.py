"""Fixtures of the client tests (tests/client).

Place in the architecture: test infrastructure only. pytest runs with ``--import-mode=
importlib`` (no test directory on sys.path), so helper modules are loaded by path and handed
out as fixtures:

- ``fake``: the scripted fake node module (``fakenode.py``: ``FakeCluster`` ...), for the
  unit tests of retries and sessions. Those tests run their own event loop (``asyncio.run``).
- ``asynchelp.py`` (``run``, ``client``, ``until``, ``FAST``) is loaded as the module
  ``fastraft_client_asynchelp``: test modules import from it by that name.
- ``real_cluster``: ONE real 3-node cluster (``tests/integration/harness.py``) shared by the
  end-to-end tests of a module (module scope: starting nodes is the slow part); tests that
  kill or pause nodes use ``cluster_factory`` for a cluster of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def _load(modname: str, path: Path):
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


_fake = _load("fastraft_client_fakenode", _HERE / "fakenode.py")
_load("fastraft_client_asynchelp", _HERE / "asynchelp.py")     # imported by name in tests
_harness = _load("fastraft_itest_harness", _HERE.parent / "integration" / "harness.py")


@pytest.fixture(scope="session")
def fake():
    return _fake


@pytest.fixture(scope="session")
def harness():
    return _harness


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    c = _harness.Cluster(tmp_path_factory.mktemp("client-e2e"))
    try:
        c.start()
        c.leader()
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster_factory(tmp_path):
    made = []

    def make(size: int = 3, tuning: dict | None = None):
        c = _harness.Cluster(tmp_path / f"cluster{len(made) + 1}", size=size, tuning=tuning)
        made.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
