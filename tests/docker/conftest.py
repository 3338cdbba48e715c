"""Fixtures of the container image tests (Dockerfile, compose.yaml, docker/).

Place in the architecture: test infrastructure only; no fastraft module imports it. pytest runs
with ``--import-mode=importlib`` (no test directory on sys.path), so the helpers are handed out
as fixtures:

- ``repo``: the checkout's root (a ``Path``).
- ``docker_helper(name)``: the module docker/<name>.py (the image's helper scripts are not
  part of the fastraft package), imported once.

The ``image`` marker tags the tests that build and run the image with buildah (they need root;
``pytest -m "not image"`` leaves them out).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "image: builds the container image with buildah and runs it (needs root)")


def load_docker_module(name: str):
    """Import docker/<name>.py once, as ``fastraft_docker_<name>``."""
    modname = f"fastraft_docker_{name}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname, REPO / "docker" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def docker_helper():
    return load_docker_module
