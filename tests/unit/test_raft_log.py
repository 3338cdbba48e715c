"""Unit tests of RaftLog (fastraft/raft/log.py): positions, the AppendEntries receiver rules
(maybe_append, §5.3), the fast-backtracking search (find_conflict_by_term), the stable /
unstable boundary, commit and apply, snapshot restore and compaction.

Every test runs on both core implementations (the ``raft_core`` fixture re-points the
engine's ``LogRing``). The model is etcd-io/raft's log_test.go, rewritten for this API.
"""

from __future__ import annotations

import pytest

from fastraft.errors import CompactedError, UnavailableError
from fastraft.raft import EntryBatch, RaftLog, Snapshot, SnapshotMeta, initial_snapshot

pytestmark = pytest.mark.usefixtures("raft_core")

VOTERS = frozenset({1, 2, 3})


def ents(terms, start=1):
    return [(t, f"{start + k}@{t}".encode()) for k, t in enumerate(terms)]


def snap(index, term, data=None):
    return Snapshot(SnapshotMeta(index, term, VOTERS), data)


def make_log(terms=(), snap_index=0, snap_term=0, committed=0, applied=None):
    s = snap(snap_index, snap_term) if snap_index else initial_snapshot(VOTERS)
    return RaftLog(s, ents(terms, snap_index + 1), committed=committed, applied=applied)


def terms_of(log):
    return [log.term(i) for i in range(log.first_index, log.last_index + 1)]


# -- positions --------------------------------------------------------------------------------


def test_fresh_log_is_empty_and_stable():
    log = RaftLog(initial_snapshot(VOTERS))
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert (log.committed, log.applied, log.stable) == (0, 0, 0)
    assert log.unstable_entries() is None
    assert log.next_committed() is None
    assert log.term(0) == 0


def test_restored_log_positions():
    log = make_log([2, 2, 3], snap_index=5, snap_term=2, committed=6)
    assert (log.first_index, log.last_index, log.last_term) == (6, 8, 3)
    assert log.stable == 8, "everything restored from storage is stable"
    assert log.committed == 6
    assert log.applied == 5, "applied defaults to the snapshot index"
    assert log.term(5) == 2, "the snapshot's own term stays known"
    # commit below the snapshot is lifted to it
    assert make_log([2], snap_index=5, snap_term=2, committed=0).committed == 5


def test_restore_rejects_commit_beyond_log():
    with pytest.raises(AssertionError):
        make_log([1, 1], committed=3)


def test_term_outside_the_log_raises():
    log = make_log([1, 2], snap_index=3, snap_term=1)
    with pytest.raises(CompactedError):
        log.term(2)
    with pytest.raises(UnavailableError):
        log.term(6)
    assert log.match_term(3, 1) and log.match_term(5, 2)
    assert not log.match_term(2, 1), "compacted: no match"
    assert not log.match_term(6, 2), "beyond the log: no match"
    assert not log.match_term(5, 1)


@pytest.mark.parametrize("last_index,last_term,expected", [
    (2, 3, True),    # higher last term wins even when shorter
    (9, 1, False),   # lower last term loses even when longer
    (3, 2, True),    # same last term, same length
    (4, 2, True),    # same last term, longer
    (2, 2, False),   # same last term, shorter
])
def test_is_up_to_date(last_index, last_term, expected):
    # §5.4.1: compare last terms first, then lengths. Our log ends at 3@2.
    log = make_log([1, 2, 2])
    assert log.is_up_to_date(last_index, last_term) is expected


# -- find_conflict_by_term --------------------------------------------------------------------


@pytest.mark.parametrize("terms,snap_index,snap_term,index,term,want", [
    # log: 1..6 with terms 2,2,5,5,5,6
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 6, (6, 6)),   # matches at the index itself
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 5, (5, 5)),   # skip the term-6 entry
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 4, (2, 2)),   # skip the whole term 5
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 3, (2, 2)),
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 2, (2, 2)),
    ([2, 2, 5, 5, 5, 6], 0, 0, 6, 1, (0, 0)),   # nothing at or below term 1: the start
    ([2, 2, 5, 5, 5, 6], 0, 0, 4, 4, (2, 2)),   # search starts at the given index
    ([2, 2, 5, 5, 5, 6], 0, 0, 1, 7, (1, 2)),
    ([2, 2, 5, 5, 5, 6], 0, 0, 9, 7, (6, 6)),   # index beyond the log is clipped
    ([2, 2, 5, 5, 5, 6], 0, 0, 9, 5, (5, 5)),
    # compacted at 10 (term 3): log 11..16 with terms 3,3,5,5,5,6
    ([3, 3, 5, 5, 5, 6], 10, 3, 16, 4, (12, 3)),
    ([3, 3, 5, 5, 5, 6], 10, 3, 16, 3, (12, 3)),
    ([3, 3, 5, 5, 5, 6], 10, 3, 16, 2, (10, 3)),  # even the compaction point is higher
    ([3, 3, 5, 5, 5, 6], 10, 3, 5, 2, (10, 3)),   # below the compaction point
    ([], 10, 3, 20, 9, (10, 3)),                  # only a snapshot
])
def test_find_conflict_by_term(terms, snap_index, snap_term, index, term, want):
    log = make_log(terms, snap_index, snap_term)
    got = log.find_conflict_by_term(index, term)
    assert tuple(got) == want
    # the answer's term is the log's term there, and it is the largest such index
    i, t = got
    assert log.term(i) == t


def test_find_conflict_by_term_matches_linear_search():
    # Property against a naive scan, over a log with many term changes.
    terms = [1, 1, 2, 4, 4, 4, 7, 8, 8, 9, 12, 12, 12, 12, 15]
    log = make_log(terms)
    for index in range(0, len(terms) + 3):
        for term in range(0, 17):
            want = 0
            for i in range(1, min(index, len(terms)) + 1):
                if terms[i - 1] <= term:
                    want = i
            assert log.find_conflict_by_term(index, term)[0] == want, (index, term)


# -- maybe_append (§5.3 receiver rules) -------------------------------------------------------


def test_maybe_append_rejects_on_mismatch_and_changes_nothing():
    log = make_log([1, 2, 3], committed=1)
    before = (terms_of(log), log.committed, log.stable)
    assert log.maybe_append(3, 2, 3, ents([4], 4)) is None       # term at 3 is 3, not 2
    assert log.maybe_append(4, 3, 3, ents([4], 5)) is None       # beyond our last index
    assert (terms_of(log), log.committed, log.stable) == before


def test_maybe_append_appends_new_entries_and_commits_to_min():
    log = make_log([1, 2, 3], committed=1)
    assert log.maybe_append(3, 3, 10, ents([3, 4], 4)) == 5
    assert terms_of(log) == [1, 2, 3, 3, 4]
    assert log.committed == 5, "leader commit 10 clipped to the last new entry"
    assert log.stable == 3
    assert log.unstable_entries() == EntryBatch(4, ents([3, 4], 4))


def test_maybe_append_commit_is_clipped_to_what_the_message_covers():
    # The follower may hold extra (possibly stale) entries after the message: the leader's
    # commit index must not commit them (etcd: commitTo(min(committed, lastnewi))).
    log = make_log([1, 1, 1, 1, 1])
    assert log.maybe_append(1, 1, 5, []) == 1
    assert log.committed == 1
    assert log.last_index == 5, "matching entries after the message are kept"


def test_maybe_append_never_lowers_commit():
    log = make_log([1, 1, 1], committed=3)
    assert log.maybe_append(3, 1, 1, []) == 3
    assert log.committed == 3


def test_maybe_append_already_present_entries_are_ignored():
    # §5.3: an AppendEntries carrying entries already in the log changes nothing.
    log = make_log([1, 2, 2, 3])
    assert log.maybe_append(1, 1, 0, ents([2, 2], 2)) == 3
    assert terms_of(log) == [1, 2, 2, 3], "no truncation of the matching tail"
    assert log.stable == 4 and log.unstable_entries() is None


def test_maybe_append_truncates_conflicting_suffix():
    # §5.3: "If an existing entry conflicts with a new one (same index but different terms),
    # delete the existing entry and all that follow it."
    log = make_log([1, 1, 2, 2, 2], committed=2)
    new = ents([3, 3], 3)
    assert log.maybe_append(2, 1, 2, new) == 4
    assert terms_of(log) == [1, 1, 3, 3]
    assert log.ring.slice(3, 5) == new
    assert log.stable == 2, "the truncation pulls the stable index back"
    assert log.unstable_entries() == EntryBatch(3, new)


def test_maybe_append_conflict_in_the_middle_of_the_batch():
    log = make_log([1, 1, 2, 2])
    new = ents([1, 2, 3, 3], 2)   # 2@1 matches, 3@2 matches, 4@3 conflicts with 4@2
    assert log.maybe_append(1, 1, 0, new) == 5
    assert terms_of(log) == [1, 1, 2, 3, 3]
    assert log.stable == 3
    assert log.unstable_entries().first_index == 4


def test_maybe_append_never_truncates_committed_entries():
    log = make_log([1, 1, 2], committed=3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, ents([3, 3], 2))
    assert terms_of(log) == [1, 1, 2]


def test_maybe_append_after_snapshot_point():
    log = make_log([], snap_index=10, snap_term=4, committed=10)
    assert log.maybe_append(10, 4, 11, ents([4, 5], 11)) == 12
    assert log.committed == 11
    assert log.maybe_append(9, 4, 12, ents([4], 10)) is None, "compacted: no match"


# -- append / commit / apply / stable ---------------------------------------------------------


def test_leader_append():
    log = make_log([1])
    assert log.append(2, [b"a", b"b"]) == 3
    assert terms_of(log) == [1, 2, 2]
    assert log.unstable_entries() == EntryBatch(2, [(2, b"a"), (2, b"b")])


def test_commit_to_never_decreases_and_stays_in_the_log():
    log = make_log([1, 1, 1])
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.commit_to(4)


def test_applied_to_never_passes_commit():
    log = make_log([1, 1, 1], committed=2)
    log.applied_to(1)
    log.applied_to(0)
    assert log.applied == 1
    with pytest.raises(AssertionError):
        log.applied_to(3)


def test_next_committed_hands_out_committed_unapplied_entries():
    log = make_log([1, 1, 1, 2], committed=3, applied=1)
    assert log.has_next_committed()
    assert log.next_committed() == EntryBatch(2, ents([1, 1], 2))
    log.applied_to(3)
    assert not log.has_next_committed() and log.next_committed() is None


def test_next_committed_respects_byte_budget_but_makes_progress():
    log = RaftLog(initial_snapshot(VOTERS), [(1, b"x" * 10)] * 4, committed=4)
    batch = log.next_committed(max_bytes=25)
    assert batch.first_index == 1 and len(batch.entries) == 2
    one = log.next_committed(max_bytes=1)
    assert len(one.entries) == 1, "an entry over the budget still goes out alone"


def test_stable_to():
    log = make_log([1])
    log.append(2, [b"a", b"b", b"c"])
    log.stable_to(3, 2)
    assert log.stable == 3
    assert log.unstable_entries() == EntryBatch(4, [(2, b"c")])
    log.stable_to(2, 2)
    assert log.stable == 3, "never moves back"
    log.stable_to(4, 1)
    assert log.stable == 3, "wrong term: a stale acknowledgement"
    log.stable_to(9, 2)
    assert log.stable == 3, "beyond the log: ignored"
    log.stable_to(4, 2)
    assert log.stable == 4 and log.unstable_entries() is None


def test_stable_to_after_truncation_is_ignored():
    # A Ready handed out 2..4 at term 1; before advance, a new leader replaced 3.. with term 2.
    log = make_log([1])
    log.maybe_append(1, 1, 0, ents([1, 1, 1], 2))
    pending = log.unstable_entries()
    assert log.maybe_append(2, 1, 0, ents([2], 3)) == 3
    log.stable_to(pending.last_index, pending.entries[-1][0])
    assert log.stable == 1, "the acknowledged entries are gone; nothing new is stable"
    assert log.unstable_entries() == EntryBatch(2, [(1, b"2@1"), (2, b"3@2")])


# -- snapshots --------------------------------------------------------------------------------


def test_restore_replaces_the_log():
    log = make_log([1, 1, 2, 2], committed=2, applied=2)
    s = snap(10, 3, data="state@10")
    log.restore(s)
    assert (log.first_index, log.last_index, log.last_term) == (11, 10, 3)
    assert log.committed == 10 and log.stable == 10
    assert log.snapshot is s and log.pending_snapshot is s
    assert log.next_committed() is None, "the snapshot, not entries, covers up to 10"
    assert log.unstable_entries() is None
    # entries after the snapshot are accepted
    assert log.maybe_append(10, 3, 11, ents([3], 11)) == 11
    assert log.next_committed() == EntryBatch(11, ents([3], 11))


def test_restore_at_or_below_commit_is_refused():
    log = make_log([1, 1, 1], committed=3)
    with pytest.raises(AssertionError):
        log.restore(snap(3, 1))


def test_compact_releases_prefix_and_keeps_term():
    log = make_log([1, 1, 2, 2, 3], committed=4, applied=4)
    s = snap(3, 2)
    log.compact(s)
    assert log.first_index == 4 and log.snapshot is s
    assert log.term(3) == 2
    with pytest.raises(CompactedError):
        log.term(2)
    assert terms_of(log) == [2, 3]
    assert log.committed == 4 and log.applied == 4


def test_compact_keep_from_retains_a_tail():
    log = make_log([1, 1, 2, 2, 3], committed=5, applied=5)
    s = snap(5, 3)
    log.compact(s, keep_from=3)
    assert log.snapshot is s
    assert log.first_index == 3, "entries from keep_from stay for slow followers"
    assert terms_of(log) == [2, 2, 3]


def test_compact_ignores_older_snapshot_and_refuses_unapplied():
    log = make_log([1, 1, 2, 2, 3], committed=5, applied=4)
    log.compact(snap(3, 2))
    log.compact(snap(2, 1))
    assert log.first_index == 4 and log.snapshot.meta.index == 3
    with pytest.raises(AssertionError):
        log.compact(snap(5, 3))
