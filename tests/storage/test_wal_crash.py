"""The crash model: a crash keeps the synced writes and some prefix of the later ones, cut at
an arbitrary byte. Recovery must return exactly the state after the last whole record that
survived — never less than what was synced, never garbage.

Seeded random runs (the seed is in every assertion message, so a failure replays exactly):
random operations, a sync, more operations without sync, then the open segment is cut at a
random offset at or past its synced length and the WAL reopened; a few rounds per seed.
Earlier segments are whole: a rotation fsyncs a segment before the next one is created.
"""

from __future__ import annotations

import os
import random

import pytest

from fastraft.core import RECORD_HEADER_SIZE
from fastraft.errors import CorruptRecordError
from fastraft.raft.messages import EntryBatch
from fastraft.storage import WalStore

SEEDS = range(40)


def run_ops(rng, s, model, n, history, sh):
    """``n`` random ops; appends ``(segment name, end offset, recovered state, model)`` for
    every record boundary: records, not whole writes, are the unit a crash keeps (a batch is
    one write of several records, and a prefix of a batch is a valid log)."""
    for _ in range(n):
        before = model.copy()
        _, b = sh.random_op(rng, s, model)
        name = s.segment_names()[-1]
        if b is not None:
            sizes = ([RECORD_HEADER_SIZE] if b.first_index <= before.last_index else []) \
                + [RECORD_HEADER_SIZE + len(p) for _, p in b.entries]
            off = s._size - sum(sizes)
            m = before
            if b.first_index <= before.last_index:
                m = m.copy()
                m.append(EntryBatch(b.first_index, []))
                off += sizes.pop(0)
                history.append((name, off, m.recovered(), m))
            for k, e in enumerate(b.entries):
                m = m.copy()
                m.append(EntryBatch(b.first_index + k, [e]))
                off += sizes[k]
                history.append((name, off, m.recovered(), m))
            assert off == s._size
        history.append((name, s._size, model.recovered(), model.copy()))


@pytest.mark.parametrize("segment_size", [150, 1000, 10**6])
@pytest.mark.parametrize("seed", SEEDS)
def test_crash_at_any_byte_recovers_a_prefix_of_whole_records(wal_dir, sh, seed, segment_size):
    rng = random.Random(seed)
    model = sh.Model()
    s = WalStore.open(wal_dir, segment_size=segment_size)
    for rnd in range(4):
        why = f"seed={seed} segment_size={segment_size} round={rnd}"
        history = [(s.segment_names()[-1], s._size, model.recovered(), model.copy())]
        run_ops(rng, s, model, rng.randint(0, 12), history, sh)
        s.sync()
        history = history[-1:]                     # everything before is durable now
        run_ops(rng, s, model, rng.randint(1, 12), history, sh)
        last = s.segment_names()[-1]
        path = os.path.join(wal_dir, last)
        synced, size = s._synced_size, s._size
        sh.crash(s)
        cut = rng.randint(synced, size)
        with open(path, "r+b") as f:
            f.truncate(cut)
        # the expected survivor: the last record that ended at or before the cut
        expect = None
        for name, end, state, m in history:
            if name != last or end <= cut:
                expect = (state, m)
        assert expect is not None, why
        s = WalStore.open(wal_dir, segment_size=segment_size)
        assert s.recovered() == expect[0], why
        model = expect[1]
        model.restart()
        assert (s.first_index, s.last_index) == (model.first_index, model.last_index), why
        assert s.entries(s.first_index, s.last_index + 1) == model.log, why
    s.close()


@pytest.mark.parametrize("seed", range(20))
def test_damage_in_the_unsynced_tail_is_never_taken_for_data(wal_dir, sh, seed):
    """A bit flipped in what was not yet synced: either recovery stops with an error naming
    the file, or (the flip was cut away with the tail) it returns a whole-record prefix."""
    rng = random.Random(seed)
    model = sh.Model()
    s = WalStore.open(wal_dir, segment_size=10**6)
    history = [(None, 0, model.recovered(), None)]
    run_ops(rng, s, model, rng.randint(0, 10), history, sh)
    s.sync()
    history = history[-1:]
    run_ops(rng, s, model, rng.randint(1, 10), history, sh)
    path = sh.segment_paths(wal_dir)[-1]
    synced, size = s._synced_size, s._size
    sh.crash(s)
    if size == synced:
        return
    pos = rng.randrange(synced, size)
    cut = rng.randint(pos, size)
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << rng.randrange(8))]))
        f.truncate(cut)
    try:
        s = WalStore.open(wal_dir, segment_size=10**6)
    except CorruptRecordError as err:
        assert err.path == path and synced <= err.offset <= pos, f"seed={seed}"
        return
    states = [h[2] for h in history]
    assert s.recovered() in states, f"seed={seed}"
    s.close()
