"""Unit tests of the quorum arithmetic of the core, run on both implementations.

Specification: ``quorum_size``, ``committed_index``, ``joint_committed_index``, ``vote_result``
and ``joint_vote_result`` in ``fastraft._core_py`` (joint consensus: thesis §4.3). Every voter
count from 1 to 9 is covered, even counts included, and the vote tallies are checked
exhaustively for up to 9 voters against a counting rule written out independently here.
"""

from __future__ import annotations

import itertools

import pytest

MAX = 2**63 - 1

QUORUM = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 5, 9: 5}


@pytest.mark.parametrize("n", sorted(QUORUM))
def test_quorum_size(core_impl, n):
    assert core_impl.quorum_size(n) == QUORUM[n]


def test_quorum_size_of_large_clusters(core_impl):
    assert core_impl.quorum_size(100) == 51
    assert core_impl.quorum_size(101) == 51


@pytest.mark.parametrize("n", [0, -1, -100])
def test_quorum_size_needs_a_voter(core_impl, n):
    with pytest.raises(ValueError):
        core_impl.quorum_size(n)


def test_vote_constants_are_distinct(core_impl):
    assert len({core_impl.VOTE_PENDING, core_impl.VOTE_LOST, core_impl.VOTE_WON}) == 3


# -- committed_index ----------------------------------------------------------------------

# With matches 1..n the committed index is the quorum-th largest: n - quorum + 1.
COMMITTED_1_TO_N = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4, 9: 5}


@pytest.mark.parametrize("n", sorted(COMMITTED_1_TO_N))
def test_committed_index_of_distinct_matches_in_any_order(core_impl, n):
    matches = list(range(1, n + 1))
    expected = COMMITTED_1_TO_N[n]
    orders = list(itertools.permutations(matches)) if n <= 5 else [
        matches, matches[::-1], matches[1::2] + matches[::2], matches[n // 2:] + matches[:n // 2]]
    for order in orders:
        assert core_impl.committed_index(list(order)) == expected, order


@pytest.mark.parametrize("matches, expected", [
    ([0], 0),
    ([7], 7),
    ([5, 5], 5),
    ([5, 9], 5),          # two voters: both must have it
    ([9, 5, 9], 9),
    ([0, 0, 9], 0),
    ([10, 10, 0, 0], 0),  # 2 of 4 is not a majority
    ([10, 10, 10, 0], 10),
    ([3, 8, 8, 3, 8], 8),
    ([3, 8, 3, 3, 8], 3),
    ([1, 2, 3, 4, 5, 6], 3),
    ([6, 6, 6, 1, 1, 1], 1),
    ([6, 6, 6, 6, 1, 1], 6),
    ([0, 0, 0, 0, 0, 0, 0, 0, 100], 0),
    ([100, 100, 100, 100, 100, 0, 0, 0, 0], 100),
    ([100, 100, 100, 100, 0, 0, 0, 0, 0], 0),
    ([MAX, MAX, 0], MAX),
])
def test_committed_index(core_impl, matches, expected):
    assert core_impl.committed_index(matches) == expected
    assert core_impl.committed_index(tuple(matches)) == expected


def test_committed_index_does_not_modify_its_argument(core_impl):
    matches = [5, 1, 9, 3]
    core_impl.committed_index(matches)
    assert matches == [5, 1, 9, 3]


def test_committed_index_of_no_voters(core_impl):
    with pytest.raises(ValueError):
        core_impl.committed_index([])


@pytest.mark.parametrize("matches", [[-1], [5, -1, 7], [-(2**63), 1]])
def test_committed_index_rejects_negative_matches(core_impl, matches):
    with pytest.raises(ValueError):
        core_impl.committed_index(matches)


@pytest.mark.parametrize("matches", [[2**63], [1, 2**64, 3]])
def test_committed_index_rejects_matches_over_63_bits(core_impl, matches):
    with pytest.raises(OverflowError):
        core_impl.committed_index(matches)


@pytest.mark.parametrize("incoming, outgoing, expected", [
    ([5, 5, 1], [], 5),               # empty outgoing: not joint
    ([5, 5, 1], [1, 1, 5], 1),        # the outgoing majority lags
    ([1, 1, 5], [5, 5, 1], 1),        # the incoming majority lags
    ([7, 7, 7], [7, 7, 0], 7),
    ([9, 8], [4, 4, 4, 4, 4], 4),
    ([9], [3, 9], 3),
    ([2, 9, 9, 9], [9], 9),
    ([2, 9, 9, 9], [8], 8),
    ([0], [MAX], 0),
])
def test_joint_committed_index(core_impl, incoming, outgoing, expected):
    assert core_impl.joint_committed_index(incoming, outgoing) == expected
    assert core_impl.joint_committed_index(tuple(incoming), tuple(outgoing)) == expected


def test_joint_committed_index_is_the_minimum_of_both_majorities(core_impl):
    for n_in in range(1, 6):
        for n_out in range(0, 6):
            incoming = [10 * i for i in range(n_in)]
            outgoing = [7 * i + 3 for i in range(n_out)][::-1]
            ci = core_impl.committed_index(incoming)
            expected = ci if not outgoing else min(ci, core_impl.committed_index(outgoing))
            assert core_impl.joint_committed_index(incoming, outgoing) == expected


def test_joint_committed_index_errors(core_impl):
    with pytest.raises(ValueError):
        core_impl.joint_committed_index([], [1, 2, 3])
    with pytest.raises(ValueError):
        core_impl.joint_committed_index([], [])
    with pytest.raises(ValueError):
        core_impl.joint_committed_index([1, 2], [3, -1])
    with pytest.raises(OverflowError):
        core_impl.joint_committed_index([1, 2], [2**63])


# -- vote_result --------------------------------------------------------------------------


def naive_tally(core, n_voters, granted, rejected):
    """The outcome of an election from counts, written independently of the core."""
    missing = n_voters - granted - rejected
    majority = n_voters // 2 + 1
    if granted >= majority:
        return core.VOTE_WON
    if granted + missing < majority:
        return core.VOTE_LOST
    return core.VOTE_PENDING


@pytest.mark.parametrize("n", range(1, 10))
def test_vote_result_exhaustive(core_impl, n):
    """Every assignment of granted / rejected / no answer to n voters (3**n cases)."""
    voters = list(range(1, n + 1))
    for states in itertools.product((None, True, False), repeat=n):
        votes = {v: s for v, s in zip(voters, states) if s is not None}
        granted = sum(1 for s in states if s is True)
        rejected = sum(1 for s in states if s is False)
        expected = naive_tally(core_impl, n, granted, rejected)
        assert core_impl.vote_result(voters, votes) == expected, votes


@pytest.mark.parametrize("n, granted, rejected, outcome", [
    (1, 0, 0, "pending"), (1, 1, 0, "won"), (1, 0, 1, "lost"),
    (2, 1, 0, "pending"), (2, 1, 1, "lost"), (2, 2, 0, "won"), (2, 0, 1, "lost"),
    (3, 2, 0, "won"), (3, 1, 1, "pending"), (3, 0, 2, "lost"), (3, 1, 0, "pending"),
    (4, 2, 2, "lost"), (4, 2, 1, "pending"), (4, 3, 0, "won"), (4, 0, 2, "lost"),
    (4, 1, 1, "pending"),
    (5, 3, 2, "won"), (5, 2, 2, "pending"), (5, 2, 3, "lost"),
    (6, 3, 3, "lost"), (6, 3, 2, "pending"), (6, 4, 0, "won"),
    (7, 4, 3, "won"), (7, 3, 3, "pending"), (7, 3, 4, "lost"),
    (8, 4, 4, "lost"), (8, 4, 3, "pending"), (8, 5, 0, "won"),
    (9, 5, 0, "won"), (9, 4, 4, "pending"), (9, 4, 5, "lost"),
])
def test_vote_result_examples(core_impl, n, granted, rejected, outcome):
    voters = set(range(10, 10 + n))
    ids = sorted(voters)
    votes = {v: True for v in ids[:granted]}
    votes.update({v: False for v in ids[granted:granted + rejected]})
    expected = {"pending": core_impl.VOTE_PENDING, "won": core_impl.VOTE_WON,
                "lost": core_impl.VOTE_LOST}[outcome]
    assert core_impl.vote_result(voters, votes) == expected
    assert core_impl.vote_result(ids, votes) == expected
    assert core_impl.vote_result(frozenset(voters), votes) == expected


def test_vote_result_ignores_votes_from_non_voters(core_impl):
    voters = {1, 2, 3}
    vr = core_impl.vote_result
    assert vr(voters, {4: True, 5: True, 6: True}) == core_impl.VOTE_PENDING
    assert vr(voters, {1: True, 4: True, 5: True}) == core_impl.VOTE_PENDING
    assert vr(voters, {4: False, 5: False, 6: False}) == core_impl.VOTE_PENDING
    assert vr(voters, {1: True, 2: True, 9: False}) == core_impl.VOTE_WON
    assert vr(voters, {1: False, 2: False, 9: True, 8: True}) == core_impl.VOTE_LOST


def test_vote_result_with_no_votes_at_all(core_impl):
    for n in range(1, 10):
        assert core_impl.vote_result(list(range(n)), {}) == core_impl.VOTE_PENDING


def test_vote_result_of_no_voters(core_impl):
    with pytest.raises(ValueError):
        core_impl.vote_result([], {})
    with pytest.raises(ValueError):
        core_impl.vote_result(set(), {1: True})


# -- joint_vote_result --------------------------------------------------------------------


def votes_for(core, voters, outcome):
    """Votes that give ``outcome`` among ``voters`` (3 of them)."""
    a, b, c = voters
    return {core.VOTE_WON: {a: True, b: True},
            core.VOTE_LOST: {a: False, b: False},
            core.VOTE_PENDING: {a: True, b: False}}[outcome]


def test_joint_vote_result_combinations(core_impl):
    won, lost, pending = core_impl.VOTE_WON, core_impl.VOTE_LOST, core_impl.VOTE_PENDING
    expected = {
        (won, won): won, (won, pending): pending, (won, lost): lost,
        (pending, won): pending, (pending, pending): pending, (pending, lost): lost,
        (lost, won): lost, (lost, pending): lost, (lost, lost): lost,
    }
    incoming, outgoing = {1, 2, 3}, {4, 5, 6}
    for (r_in, r_out), result in expected.items():
        votes = {**votes_for(core_impl, sorted(incoming), r_in),
                 **votes_for(core_impl, sorted(outgoing), r_out)}
        assert core_impl.vote_result(incoming, votes) == r_in
        assert core_impl.vote_result(outgoing, votes) == r_out
        assert core_impl.joint_vote_result(incoming, outgoing, votes) == result, (r_in, r_out)


def test_joint_vote_result_with_overlapping_configurations(core_impl):
    # Moving from {1, 2, 3} to {2, 3, 4}: the shared voters count in both halves.
    incoming, outgoing = {2, 3, 4}, {1, 2, 3}
    jvr = core_impl.joint_vote_result
    assert jvr(incoming, outgoing, {2: True, 3: True}) == core_impl.VOTE_WON
    assert jvr(incoming, outgoing, {2: True, 4: True}) == core_impl.VOTE_PENDING
    assert jvr(incoming, outgoing, {2: True, 4: True, 1: True}) == core_impl.VOTE_WON
    assert jvr(incoming, outgoing, {2: True, 4: True, 1: False, 3: False}) == core_impl.VOTE_LOST


def test_joint_vote_result_empty_outgoing_is_not_joint(core_impl):
    incoming = {1, 2, 3}
    for votes in ({}, {1: True}, {1: True, 2: True}, {1: False, 3: False}, {9: True}):
        assert (core_impl.joint_vote_result(incoming, set(), votes)
                == core_impl.joint_vote_result(incoming, [], votes)
                == core_impl.vote_result(incoming, votes))
    assert core_impl.joint_vote_result(incoming, (), {1: True, 2: True}) == core_impl.VOTE_WON


def test_joint_vote_result_needs_incoming_voters(core_impl):
    with pytest.raises(ValueError):
        core_impl.joint_vote_result(set(), {1, 2, 3}, {1: True, 2: True})
    with pytest.raises(ValueError):
        core_impl.joint_vote_result([], [], {})


def test_joint_vote_result_even_halves(core_impl):
    incoming, outgoing = {1, 2}, {3, 4, 5, 6}
    jvr = core_impl.joint_vote_result
    assert jvr(incoming, outgoing, {1: True, 2: True, 3: True, 4: True}) == core_impl.VOTE_PENDING
    assert jvr(incoming, outgoing,
               {1: True, 2: True, 3: True, 4: True, 5: True}) == core_impl.VOTE_WON
    assert jvr(incoming, outgoing, {1: True, 2: True, 3: False, 4: False}) == core_impl.VOTE_LOST
    assert jvr(incoming, outgoing, {1: False, 3: True, 4: True, 5: True}) == core_impl.VOTE_LOST
