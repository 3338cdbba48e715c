"""MemoryStore's crash model (storage/memory.py): a crash keeps what was synced plus a prefix
of the later writes in order, the last of them possibly a torn append — the promise the
simulator's disk relies on."""

import random

import pytest

from fastraft.errors import LocalProtocolError
from fastraft.storage import MemoryStore


def test_a_crash_without_rng_keeps_exactly_what_was_synced(sh):
    s = MemoryStore()
    s.append(sh.batch(1, [1, 1, 2]))
    s.save_hard_state(sh.HardState(2, 1, 2))
    s.sync()
    synced = s.recovered()
    s.append(sh.batch(3, [3, 3]))                  # truncates 3, then extends
    s.save_hard_state(sh.HardState(3, 1, 3))
    s.save_snapshot_mark(sh.meta(4, 3))
    assert s.recovered() != synced, "writes are visible before the sync"
    s.crash()
    assert s.recovered() == synced
    assert (s.first_index, s.last_index, s.snapshot_mark) == (1, 3, None)
    s.append(sh.batch(4, [2]))                      # the store goes on from there
    s.crash()
    assert s.recovered() == synced


def test_compaction_is_not_lost_or_replayed_by_a_crash(sh):
    s = MemoryStore()
    s.append(sh.batch(1, [1] * 6))
    s.sync()
    s.save_snapshot_mark(sh.meta(4, 1))
    s.compact(4)                                    # the mark is not synced yet
    s.append(sh.batch(7, [2]))
    s.crash()                                       # the mark and entry 7 are lost
    assert s.snapshot_mark is None and s.last_index == 6
    s.save_snapshot_mark(sh.meta(4, 1))
    s.sync()
    s.compact(4)
    s.crash()
    st = s.recovered()
    assert st.snapshot == sh.meta(4, 1) and st.first_index == 5 and st.last_index == 6


@pytest.mark.parametrize("seed", range(40))
def test_a_crash_keeps_a_prefix_of_the_writes_since_the_last_sync(sh, seed):
    """Every crash recovers the state after some prefix of the writes made since the last
    sync, or that prefix plus the first entries of the next append (a torn write)."""
    rng = random.Random(seed)
    s, model = MemoryStore(), sh.Model()
    for _round in range(6):
        states = [model.recovered()]                # after 0, 1, 2 ... pending writes
        torn = []                                   # the torn variants of pending appends
        for _ in range(rng.randint(0, 12)):
            before = model.copy()
            what, batch = sh.random_op(rng, s, model)
            if what == "sync":
                states, torn = [model.recovered()], []
                continue
            if what.startswith("compact"):
                continue                            # not a write: nothing to lose
            if batch is not None:
                for cut in range(1, len(batch.entries)):
                    part = before.copy()
                    part.append(sh.EntryBatch(batch.first_index, batch.entries[:cut]))
                    torn.append(part.recovered())
            states.append(model.recovered())
        s.crash(rng)
        got = s.recovered()
        assert got in states or got in torn, f"seed {seed}: {got} is no prefix of the writes"
        # The model restarts from what the store kept.
        k = states.index(got) if got in states else None
        model = sh.Model()
        if got.snapshot is not None:
            model.save_snapshot_mark(got.snapshot)
        model.append(sh.EntryBatch(model.last_index + 1, list(got.entries)))
        model.save_hard_state(got.hard_state)
        assert model.recovered() == got, k


def test_a_closed_memory_store_refuses_everything(sh):
    s = MemoryStore()
    with s:
        s.append(sh.batch(1, [1]))
    assert s.syncs == 1, "close syncs"
    for call in (lambda: s.last_index, lambda: s.term(1), lambda: s.crash(), s.sync):
        with pytest.raises(LocalProtocolError):
            call()
