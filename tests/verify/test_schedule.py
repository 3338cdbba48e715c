"""The fault schedule of a verification run (fastraft.verify.schedule.plan_faults, and the
Nemesis following it): a short run plans every fault kind once before any repeats when the
duration allows, else it names each kind it skips with the reason; plans are seeded and
deterministic; every planned fault ends within the duration; the nemesis runs the plan and
reports a fault the end of the run cut short and a planned kind that never got its turn."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from fastraft.verify.history import HistoryWriter
from fastraft.verify.report import fault_coverage
from fastraft.verify.schedule import FAULT_KINDS, fault_range, min_step, plan_faults

Q, F, ET = (1.0, 3.0), (1.0, 4.0), 0.3        # the command line's defaults


def _check_times(plan, quiet=Q, fault=F, et=ET):
    for s in plan.steps:
        lo, hi = fault_range(s.kind, fault, et)
        assert quiet[0] - 1e-9 <= s.quiet <= quiet[1] + 1e-9, s
        assert lo - 1e-9 <= s.fault <= hi + 1e-9, s
    assert plan.seconds() <= plan.duration + 1e-6


@pytest.mark.parametrize("seed", range(20))
def test_twenty_six_seconds_plan_every_kind_once_before_any_repeats(seed):
    plan = plan_faults(FAULT_KINDS, 26, Q, F, ET, seed=seed)
    assert plan.skipped == {}
    first = [s.kind for s in plan.steps[:len(FAULT_KINDS)]]
    assert sorted(first) == sorted(FAULT_KINDS), first
    assert plan.planned == first
    _check_times(plan)
    # the drawn times (quiet 1-3 s, faults 1-4 s) do not fit 8 kinds into 26 s: squeezed
    assert plan.compressed


def test_floors_of_the_slow_kinds():
    assert fault_range("pause", (0.1, 0.2), 0.3) == (0.6, 0.6)
    assert fault_range("wipe", (1.0, 2.0), 0.3) == (3.0, 4.0)
    assert fault_range("disk", (1.0, 8.0), 0.3) == (3.0, 8.0)
    assert fault_range("kill", (1.0, 2.0), 0.3) == (1.0, 2.0)
    assert min_step("transfer", Q, F, ET) == pytest.approx(2.5)
    # a member change starts a node and waits for it to catch up: 4 s to set it up
    assert min_step("member", Q, F, ET) == pytest.approx(6.0)


def test_seeded_and_deterministic():
    a = plan_faults(FAULT_KINDS, 60, Q, F, ET, seed=42)
    b = plan_faults(FAULT_KINDS, 60, Q, F, ET, seed=42)
    assert a == b and a.to_json() == b.to_json()
    orders = {tuple(plan_faults(FAULT_KINDS, 60, Q, F, ET, seed=s).planned) for s in range(10)}
    assert len(orders) > 1


def test_too_short_for_every_kind_names_the_skipped_ones_with_the_reason():
    plan = plan_faults(FAULT_KINDS, 10, Q, F, ET, seed=3)
    assert set(plan.planned) | set(plan.skipped) == set(FAULT_KINDS)
    assert not set(plan.planned) & set(plan.skipped)
    # the cheapest kinds are kept, so as many kinds as possible run
    assert set(plan.skipped) >= {"wipe", "disk"}
    assert len(plan.planned) >= 4
    for kind, reason in plan.skipped.items():
        assert reason.startswith("not enough time: one %s fault needs at least" % kind)
        assert "--duration 26 or more runs every kind" in reason, reason
    assert list(plan.skipped) == [k for k in FAULT_KINDS if k in plan.skipped]
    _check_times(plan)
    # a kind skipped in the first round never comes back later
    assert {s.kind for s in plan.steps} == set(plan.planned)


def test_nothing_fits():
    plan = plan_faults(("wipe", "disk"), 2, Q, F, ET, seed=1)
    assert plan.steps == [] and list(plan.skipped) == ["wipe", "disk"]
    assert plan_faults((), 60, seed=1).steps == []


@pytest.mark.parametrize("seed", range(5))
def test_long_run_deals_every_kind_once_per_round(seed):
    plan = plan_faults(FAULT_KINDS, 600, Q, F, ET, seed=seed)
    kinds = [s.kind for s in plan.steps]
    n = len(FAULT_KINDS)
    assert len(kinds) > 10 * n
    for r in range(len(kinds) // n):
        assert sorted(kinds[r * n:(r + 1) * n]) == sorted(FAULT_KINDS), r
    assert not plan.compressed
    _check_times(plan)
    assert plan.seconds() > 600 - max(min_step(k, Q, F, ET) for k in FAULT_KINDS)


# -- the nemesis following a plan -------------------------------------------------------------

class _Procs:
    ids = [1, 2, 3]
    base = None

    def exited(self, i):
        return None


class _Nemesis:
    """A Nemesis whose faults only record themselves."""

    @staticmethod
    def make(kinds, duration, quiet, fault):
        from fastraft.verify.nemesis import Nemesis

        class Recording(Nemesis):
            async def start_fault(self, kind):
                return f"{kind} (fake)"

            def heal(self):
                pass

        return Recording(kinds, _Procs(), None, None, HistoryWriter(None), random.Random(7),
                         quiet=quiet, fault=fault, election_timeout=0.005,
                         node_dir=lambda i: "", duration=duration)


def test_nemesis_runs_the_plan():
    nem = _Nemesis.make(("partition", "kill", "pause"), 0.6, (0.01, 0.02), (0.01, 0.02))
    asyncio.run(nem.run(asyncio.Event()))
    assert nem.counts == nem.plan.counts() and nem.cut_short == {}
    assert set(nem.counts) == {"partition", "kill", "pause"}
    starts = [e["fault"] for e in nem.log if e["action"] == "start"]
    assert starts == [s.kind for s in nem.plan.steps]
    cov = fault_coverage(nem.plan, nem.counts, nem.cut_short, {})
    assert cov["all_ran"] and cov["skipped"] == {}


def test_nemesis_reports_a_fault_cut_short_and_a_kind_that_never_got_its_turn():
    nem = _Nemesis.make(("partition", "kill", "wipe"), 4.0, (0.05, 0.05), (1.0, 1.0))
    assert nem.plan.skipped == {"wipe": nem.plan.skipped["wipe"]}   # 3 s wipe does not fit

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(nem.run(stop))
        deadline = time.monotonic() + 5
        while not any(e["action"] == "start" for e in nem.log):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    first, second = nem.plan.planned
    assert nem.counts == {first: 1} and nem.cut_short == {first: 1}
    assert [e["action"] for e in nem.log] == ["skip", "start", "heal"]
    cov = fault_coverage(nem.plan, nem.counts, nem.cut_short, {})
    assert not cov["all_ran"] and cov["ran"] == {"partition": int(first == "partition"),
                                                  "kill": int(first == "kill"), "wipe": 0}
    assert cov["skipped"][second].startswith("planned, but the run ended before its turn")
    assert cov["skipped"]["wipe"].startswith("not enough time")
    assert cov["cut_short"] == {first: 1}
