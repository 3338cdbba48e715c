"""The storage semantics of base.py on every backend, and WAL round trips across restarts.

Specification: the module docstrings of fastraft/storage/base.py and fastraft/storage/wal.py.
Real files in tmp_path, real fsync.
"""

from __future__ import annotations

import os

import pytest

from fastraft import core
from fastraft.errors import CompactedError, LocalProtocolError, UnavailableError
from fastraft.storage import LogStore, RecoveredState, WalStore, recover


def test_backends_satisfy_the_protocol(any_store):
    assert isinstance(any_store, LogStore)


def test_empty_store(any_store):
    s = any_store
    assert (s.first_index, s.last_index) == (1, 0)
    assert s.term(0) == 0
    assert s.hard_state == (0, 0, 0)
    assert s.snapshot_mark is None
    assert s.recovered() == RecoveredState(None, [], (0, 0, 0))
    with pytest.raises(UnavailableError):
        s.term(1)


def test_append_read_and_overwrite_suffix(any_store, sh):
    s = any_store
    s.append(sh.batch(1, [1, 1, 2, 2, 2]))
    assert s.last_index == 5
    assert s.entries(2, 5) == sh.batch(2, [1, 2, 2]).entries
    assert [s.term(i) for i in range(6)] == [0, 1, 1, 2, 2, 2]
    s.append(sh.batch(4, [3]))                     # discards 4, 5
    assert s.last_index == 4
    assert s.entries(1, 5) == sh.batch(1, [1, 1, 2, 3]).entries
    s.truncate(3)
    assert s.last_index == 2
    s.append(sh.batch(3, [3, 3]))
    assert s.entries(1, 5) == sh.batch(1, [1, 1, 3, 3]).entries


@pytest.mark.parametrize("bad", [
    lambda sh: sh.batch(5, [1]),                   # gap after last index 3
    lambda sh: sh.batch(2, [0]),                   # term below the previous one
    lambda sh: sh.EntryBatch(4, [(1, "str")]),     # payload not bytes
])
def test_append_refuses_invalid_batches_without_writing(any_store, sh, bad):
    s = any_store
    s.append(sh.batch(1, [1, 1, 1]))
    with pytest.raises((LocalProtocolError, TypeError)):
        s.append(bad(sh))
    assert s.entries(1, 4) == sh.batch(1, [1, 1, 1]).entries


def test_hard_state_last_wins(any_store, sh):
    s = any_store
    for k in range(1, 6):
        s.save_hard_state(sh.HardState(k, k % 3, k - 1))
    assert s.hard_state == (5, 2, 4)


def test_snapshot_mark_keeps_a_matching_log_and_resets_otherwise(any_store, sh):
    s = any_store
    s.append(sh.batch(1, [1, 1, 2, 2]))
    s.save_snapshot_mark(sh.meta(3, 2))            # matches: a local snapshot
    assert (s.first_index, s.last_index) == (1, 4)
    assert s.recovered().entries == sh.batch(4, [2]).entries
    with pytest.raises(LocalProtocolError):
        s.append(sh.batch(3, [2]))                 # at or below the mark
    with pytest.raises(LocalProtocolError):
        s.save_snapshot_mark(sh.meta(2, 1))        # backwards
    s.save_snapshot_mark(sh.meta(4, 5))            # term differs: an installed snapshot
    assert (s.first_index, s.last_index, s.term(4)) == (5, 4, 5)
    s.save_snapshot_mark(sh.meta(10, 6, voters=(1, 2), outgoing=(3,)))   # beyond the log
    assert (s.first_index, s.last_index, s.term(10)) == (11, 10, 6)
    assert s.snapshot_mark == sh.meta(10, 6, voters=(1, 2), outgoing=(3,))
    s.append(sh.batch(11, [6]))
    assert s.recovered().entries == sh.batch(11, [6]).entries


def test_compact_up_to_the_mark(any_store, sh):
    s = any_store
    s.append(sh.batch(1, [1] * 10))
    with pytest.raises(LocalProtocolError):
        s.compact(1)                               # no mark yet
    s.save_snapshot_mark(sh.meta(6, 1))
    with pytest.raises(LocalProtocolError):
        s.compact(7)
    s.compact(4)
    assert (s.first_index, s.last_index, s.term(4)) == (5, 10, 1)
    with pytest.raises(CompactedError):
        s.entries(4, 6)
    s.compact(2)                                   # below: nothing to do
    assert s.first_index == 5


def test_closed_store_refuses(any_store, sh):
    any_store.close()
    with pytest.raises(LocalProtocolError):
        any_store.append(sh.batch(1, [1]))


# -- WAL restarts ------------------------------------------------------------------------------

def test_round_trip_across_many_segments_and_restarts(wal_dir, sh):
    model = sh.Model()
    s = WalStore.open(wal_dir, segment_size=300)
    index, term = 1, 1
    for restart in range(6):
        for k in range(15):
            if k % 5 == 4:
                term += 1
            b = sh.batch(index, [term] * (1 + k % 4), size=k * 7)
            s.append(b)
            model.append(b)
            index = b.last_index + 1
            hs = sh.HardState(term, 1 + k % 3, max(0, index - 3))
            s.save_hard_state(hs)
            model.save_hard_state(hs)
            if k % 3 == 0:
                s.sync()
        s.close()
        assert len(s.segment_names()) > 3 * (restart + 1)
        s = WalStore.open(wal_dir, segment_size=300)
        assert s.recovered() == model.recovered()
        assert (s.first_index, s.last_index) == (1, model.last_index)
        assert s.recovery_notes == []
    store, state = recover(wal_dir, segment_size=300)
    assert state == model.recovered()
    store.close()
    s.close()


def test_overwritten_entries_stay_gone_after_restart(wal_dir, sh):
    s = WalStore.open(wal_dir, segment_size=200)
    s.append(sh.batch(1, [1] * 12, size=20))
    s.sync()
    s.append(sh.batch(5, [2, 2]))                  # markers cancel 5..12 across segments
    s.append(sh.batch(7, [3]))
    s.truncate(8)                                  # nothing to cancel: no record
    s.sync()
    expect = sh.batch(1, [1] * 4, size=20).entries + sh.batch(5, [2, 2]).entries \
        + sh.batch(7, [3]).entries
    s.close()
    s = WalStore.open(wal_dir, segment_size=200)
    assert s.entries(1, s.last_index + 1) == expect
    s.append(sh.batch(8, [3]))
    s.close()
    s = WalStore.open(wal_dir, segment_size=200)
    assert s.entries(1, 9) == expect + sh.batch(8, [3]).entries
    s.close()


def test_snapshot_mark_and_hard_state_survive_restart(wal_dir, sh):
    s = WalStore.open(wal_dir)
    s.append(sh.batch(1, [1, 1, 2]))
    s.save_snapshot_mark(sh.meta(2, 1, voters=(1, 2, 3), outgoing=(4, 5)))
    s.save_hard_state(sh.HardState(2, 3, 3))
    s.close()
    s, st = recover(wal_dir)
    assert st == RecoveredState(sh.meta(2, 1, voters=(1, 2, 3), outgoing=(4, 5)),
                                sh.batch(3, [2]).entries, sh.HardState(2, 3, 3))
    assert (s.first_index, s.term(2)) == (3, 1)   # a restart starts after the mark
    s.save_snapshot_mark(sh.meta(7, 4))            # installed: log reset
    s.close()
    s, st = recover(wal_dir)
    assert st == RecoveredState(sh.meta(7, 4), [], sh.HardState(2, 3, 3))
    assert (s.first_index, s.last_index, s.term(7)) == (8, 7, 4)
    s.close()


def test_compaction_deletes_whole_segments_only(wal_dir, sh):
    s = WalStore.open(wal_dir, segment_size=400)
    for i in range(1, 101, 5):
        s.append(sh.batch(i, [1] * 5, size=30))
    s.save_hard_state(sh.HardState(1, 1, 100))
    s.sync()
    names = s.segment_names()
    assert len(names) > 5
    sizes = {n: os.path.getsize(os.path.join(wal_dir, n)) for n in names}
    s.save_snapshot_mark(sh.meta(60, 1))
    s.compact(50)
    kept = s.segment_names()
    assert kept == names[len(names) - len(kept):] and len(kept) < len(names)
    assert sorted(os.listdir(wal_dir)) == kept
    for n in kept[:-1]:                            # never rewritten in place
        assert os.path.getsize(os.path.join(wal_dir, n)) == sizes[n]
    assert s.first_index == 51
    s.compact(60)
    s.append(sh.batch(101, [2]))
    model_entries = s.recovered().entries
    s.close()
    s, st = recover(wal_dir, segment_size=400)
    assert st.snapshot == sh.meta(60, 1)
    assert st.entries == model_entries
    assert st.hard_state == (1, 1, 100)
    assert len(st.entries) == 41
    s.close()


def test_compaction_never_deletes_the_open_segment(wal_dir, sh):
    s = WalStore.open(wal_dir)
    s.append(sh.batch(1, [1] * 10))
    s.save_snapshot_mark(sh.meta(10, 1))
    s.compact(10)
    assert len(s.segment_names()) == 1 and s.first_index == 11
    s.close()
    s, st = recover(wal_dir)
    assert st == RecoveredState(sh.meta(10, 1), [], (0, 0, 0))
    s.close()


def test_segments_start_with_header_and_state_copies(wal_dir, sh):
    s = WalStore.open(wal_dir, segment_size=100)
    s.save_hard_state(sh.HardState(3, 2, 0))
    s.append(sh.batch(1, [3] * 3, size=80))
    s.save_snapshot_mark(sh.meta(1, 3))
    s.append(sh.batch(4, [3], size=80))
    s.close()
    last = sh.segment_paths(wal_dir)[-1]
    with open(last, "rb") as f:
        data = f.read()
    recs, _end, status, _ = core.decode_records(data, core.SEGMENT_HEADER_SIZE)
    assert status == core.WAL_CLEAN
    types = [r[0] for r in recs]
    assert types[:2] == [sh.wal.SNAPSHOT, sh.wal.HARD_STATE]
    assert sh.wal.decode_hard_state(recs[1][3]) == (3, 2, 0)
    assert os.path.basename(last).startswith("wal-")
