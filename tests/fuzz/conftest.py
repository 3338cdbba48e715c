"""Fixtures of the fuzzers (tests/fuzz): budgets, per-target input counts, live clusters.

Place in the architecture: test infrastructure only; no fastraft module imports it.

Budget. CI runs every fuzzer briefly (one batch of hypothesis examples per target, about
15 s of live fuzzing). ``FASTRAFT_FUZZ_SECONDS=N`` turns on the long run: N seconds in all for
the whole directory, split between the targets by the weights in ``WEIGHTS`` (the live-node
fuzzer takes the largest share); each hypothesis target then runs batch after batch of fresh
random examples (no example database) until its share is spent.

Counts. Every target counts the inputs it fuzzed (``fuzz.count(target, n)``). At the end of
the session the counts are printed in the terminal summary ("fuzz counts") and written as
JSON to ``<pytest basetemp>/fuzz-counts.json`` (the path is printed with them).

Fixtures handed out here (pytest's importlib mode lets test modules import nothing else):
``fuzz`` (budget and counters), and ``cluster_factory`` / ``harness`` / ``wire`` re-exported
from tests/integration/conftest.py (real node processes, SIGKILLed when the test ends).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

#: Share of FASTRAFT_FUZZ_SECONDS given to each target (the rest of a target's name is free).
WEIGHTS = {
    "frames": 0.04,
    "peer": 0.06,
    "request": 0.06,
    "command": 0.03,
    "snapshot_stream": 0.03,
    "wal": 0.10,
    "snapshot_file": 0.06,
    "config": 0.05,
    "sqlite": 0.07,
    "live": 0.50,
}
#: Live fuzzing in the short (CI) run, in seconds.
SHORT_LIVE_SECONDS = 12.0

_counts: Counter = Counter()
_seconds: Counter = Counter()


def total_budget() -> float:
    """FASTRAFT_FUZZ_SECONDS as a number (0: the short CI run)."""
    raw = os.environ.get("FASTRAFT_FUZZ_SECONDS", "").strip()
    if not raw:
        return 0.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise pytest.UsageError(f"FASTRAFT_FUZZ_SECONDS={raw!r}: expected a number of seconds")


class Fuzz:
    """Budget and counters of one fuzz target run."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.long = total > 0

    def seconds(self, target: str) -> float:
        """This target's share of the long budget (0 in the short run)."""
        return self.total * WEIGHTS.get(target, 0.03)

    def live_seconds(self) -> float:
        return self.seconds("live") if self.long else SHORT_LIVE_SECONDS

    def count(self, target: str, n: int = 1) -> None:
        _counts[target] += n

    def run(self, target: str, batch) -> int:
        """Call ``batch()`` (a hypothesis test running one batch of examples) once, or, in the
        long run, until ``target``'s share of the budget is spent. Returns the batches run."""
        start = time.monotonic()
        deadline = start + self.seconds(target)
        n = 0
        while True:
            batch()
            n += 1
            if time.monotonic() >= deadline:
                break
        _seconds[target] += time.monotonic() - start
        return n


@pytest.fixture(scope="session")
def fuzz() -> Fuzz:
    return Fuzz(total_budget())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _counts:
        return
    base = Path(str(config._tmp_path_factory.getbasetemp())) \
        if hasattr(config, "_tmp_path_factory") else Path(".")
    path = base / "fuzz-counts.json"
    data = {"budget_seconds": total_budget(), "counts": dict(sorted(_counts.items())),
            "seconds": {k: round(v, 2) for k, v in sorted(_seconds.items())}}
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
        where = str(path)
    except OSError as exc:  # pragma: no cover
        where = f"(not written: {exc})"
    tr = terminalreporter
    tr.section("fuzz counts")
    tr.write_line(f"budget: FASTRAFT_FUZZ_SECONDS={total_budget():g} "
                  f"({'long' if total_budget() else 'short CI'} run); written to {where}")
    for k, v in sorted(_counts.items()):
        tr.write_line(f"  {k:<32} {v:>10}")


# -- the integration fixtures, re-exported ---------------------------------------------------

def _load_integration_conftest():
    name = "fastraft_fuzz_integration_conftest"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "integration" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


_itest = _load_integration_conftest()
cluster_factory = _itest.cluster_factory
harness = _itest.harness
wire = _itest.wire
