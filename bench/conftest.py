"""Fixtures for the core benchmarks (bench/test_core_bench.py).

``core_impl`` runs every benchmark once per core implementation, imported directly (never via
``fastraft.core``, which would silently fall back to the twin): ``"python"`` is
``fastraft._core_py``, ``"cython"`` is the compiled ``fastraft._core``. When the extension is
not built, the ``cython`` cases are skipped with the ImportError as the reason.

Under ``--import-mode=importlib`` bench modules cannot import one another, so the shared
data and builders live here as fixtures.
"""

from __future__ import annotations

import importlib

import pytest

IMPLEMENTATIONS = {"python": "fastraft._core_py", "cython": "fastraft._core"}

PAYLOAD_SIZE = 100  # every payload in the benchmarks is 100 bytes (a small KV command)
BATCH = 1000  # size of the batched operations


def _load(name: str):
    try:
        return importlib.import_module(IMPLEMENTATIONS[name]), None
    except ImportError as exc:
        return None, (f"{IMPLEMENTATIONS[name]} is not built ({exc}); build it with "
                      "`pip install -e .` or `python setup.py build_ext --inplace`")


@pytest.fixture(params=list(IMPLEMENTATIONS))
def core_impl(request, benchmark):
    """The core module under test; also tags the benchmark's JSON with ``impl``."""
    mod, reason = _load(request.param)
    if mod is None:
        pytest.skip(reason)
    benchmark.extra_info["impl"] = request.param
    return mod


@pytest.fixture(scope="session")
def payloads():
    """BATCH distinct 100-byte payloads (distinct objects, like entries decoded off the
    wire)."""
    return [(b"%010d" % i) * (PAYLOAD_SIZE // 10) for i in range(BATCH)]


#: Shape of the ring built by ``wrapped_ring``: 12,000 live entries after index 7,000 in a
#: 16,384-slot buffer whose live region wraps around the end of the buffer, between indexes
#: 16,384 and 16,385 (both implementations follow the same capacity policy, so the shape is
#: the same in each).
RING_LIVE = 12_000
RING_OFFSET = 7_000
RING_CAPACITY = 16_384


@pytest.fixture
def wrapped_ring(payloads):
    """``wrapped_ring(mod)``: a LogRing of the shape above, payloads cycling through
    ``payloads``, terms rising every 1,000 entries. Built by filling 12,000 entries,
    compacting 7,000 (no shrink: 5,000 > 16,384 / 4) and appending 7,000 more."""

    def fill(ring, count):
        while count:
            chunk = min(count, len(payloads))
            ring.extend_term(ring.last_term + 1, payloads[:chunk])
            count -= chunk

    def build(mod):
        ring = mod.LogRing()
        fill(ring, RING_LIVE)
        ring.compact(RING_OFFSET)
        fill(ring, RING_OFFSET)
        assert (len(ring), ring.offset, ring.capacity) == (RING_LIVE, RING_OFFSET,
                                                           RING_CAPACITY)
        return ring

    return build
