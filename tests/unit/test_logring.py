"""Unit tests of LogRing, the in-memory Raft log of the core, run on both implementations.

The specification is the docstring of ``fastraft._core_py.LogRing``: index arithmetic after a
compaction point, CompactedError below / UnavailableError above the retained entries,
OverflowError for numbers over 63 bits, the byte budget of ``slice``, all-or-nothing batches,
the exact capacity policy and the release of payload references.
"""

from __future__ import annotations

import sys

import pytest

from fastraft.errors import CompactedError, LogError, UnavailableError

MAX = 2**63 - 1


def fresh(n: int) -> bytes:
    """A new bytes object of ``n`` bytes that nothing else references (for refcounts)."""
    return bytes(bytearray(b"p" * n))


def make_ring(core, entries=(), offset=0, offset_term=0, capacity=None):
    ring = (core.LogRing(offset, offset_term) if capacity is None
            else core.LogRing(offset, offset_term, capacity))
    for term, payload in entries:
        ring.append(term, payload)
    return ring


def contents(ring):
    """Every retained entry, read one by one with ``entry``."""
    return [ring.entry(i) for i in range(ring.first_index, ring.last_index + 1)]


def snapshot(ring):
    """Everything observable about a ring, to check that a failed call changed nothing."""
    return (ring.offset, ring.offset_term, len(ring), ring.first_index, ring.last_index,
            ring.last_term, ring.nbytes, ring.capacity, contents(ring))


def expected_capacity_for(n: int) -> int:
    cap = 16
    while cap < n:
        cap *= 2
    return cap


# -- construction and properties ----------------------------------------------------------


def test_fresh_ring(core_impl):
    ring = core_impl.LogRing()
    assert ring.offset == 0
    assert ring.offset_term == 0
    assert ring.first_index == 1
    assert ring.last_index == 0
    assert ring.last_term == 0
    assert len(ring) == 0
    assert ring.nbytes == 0
    assert ring.capacity == core_impl.MIN_CAPACITY == 16
    assert ring.term(0) == 0


def test_ring_after_a_snapshot_point(core_impl):
    ring = core_impl.LogRing(offset=10, offset_term=3)
    assert (ring.offset, ring.offset_term) == (10, 3)
    assert ring.first_index == 11
    assert ring.last_index == 10
    assert ring.last_term == 3
    assert ring.term(10) == 3
    assert len(ring) == 0
    ring.append(3, b"a")
    assert (ring.first_index, ring.last_index, ring.last_term) == (11, 11, 3)
    assert ring.entry(11) == (3, b"a")


def test_positional_constructor_arguments(core_impl):
    ring = core_impl.LogRing(7, 2, 40)
    assert (ring.offset, ring.offset_term, ring.capacity) == (7, 2, 64)


@pytest.mark.parametrize("requested, capacity", [
    (0, 16), (1, 16), (15, 16), (16, 16), (17, 32), (32, 32), (33, 64), (100, 128),
    (1024, 1024), (1025, 2048),
])
def test_initial_capacity_is_a_power_of_two_at_least_min(core_impl, requested, capacity):
    assert core_impl.LogRing(capacity=requested).capacity == capacity


@pytest.mark.parametrize("offset, offset_term", [(-1, 0), (0, -1), (-5, -5), (-(2**63), 0)])
def test_constructor_rejects_negative_numbers(core_impl, offset, offset_term):
    with pytest.raises(ValueError):
        core_impl.LogRing(offset, offset_term)


@pytest.mark.parametrize("offset, offset_term", [(2**63, 0), (0, 2**63), (2**64, 1)])
def test_constructor_rejects_numbers_over_63_bits(core_impl, offset, offset_term):
    with pytest.raises(OverflowError):
        core_impl.LogRing(offset, offset_term)


def test_constructor_accepts_max_index(core_impl):
    ring = core_impl.LogRing(MAX, MAX)
    assert (ring.offset, ring.offset_term, ring.last_term) == (MAX, MAX, MAX)
    assert ring.term(MAX) == MAX
    # first_index is offset + 1 even at the top of the index space (never a wrapped number).
    assert ring.first_index == MAX + 1
    assert ring.last_index == MAX
    ring.reset(MAX, 3)
    assert (ring.first_index, ring.last_index, ring.last_term) == (MAX + 1, MAX, 3)


def test_len_nbytes_and_bounds_follow_appends(core_impl):
    ring = core_impl.LogRing(5, 1)
    payloads = [b"", b"x", b"yy", b"zzz", bytes(100)]
    for k, p in enumerate(payloads, start=1):
        assert ring.append(k, p) is None
        assert len(ring) == k
        assert ring.last_index == 5 + k
        assert ring.first_index == 6
        assert ring.last_term == k
        assert ring.nbytes == sum(len(q) for q in payloads[:k])


# -- lookups ------------------------------------------------------------------------------


def test_term_payload_entry_of_every_retained_index(core_impl):
    entries = [(1, b"a"), (1, b"bb"), (2, b""), (3, b"dddd"), (3, b"e")]
    ring = make_ring(core_impl, entries)
    for index, (term, payload) in enumerate(entries, start=1):
        assert ring.term(index) == term
        assert ring.payload(index) == payload
        assert type(ring.payload(index)) is bytes
        assert ring.entry(index) == (term, payload)
        assert type(ring.entry(index)) is tuple


def test_term_of_offset_is_offset_term_but_its_payload_is_gone(core_impl):
    ring = make_ring(core_impl, [(4, b"a"), (5, b"b")], offset=10, offset_term=4)
    assert ring.term(10) == 4
    with pytest.raises(CompactedError):
        ring.payload(10)
    with pytest.raises(CompactedError):
        ring.entry(10)
    with pytest.raises(CompactedError):
        ring.term(9)


@pytest.mark.parametrize("method", ["term", "payload", "entry"])
@pytest.mark.parametrize("index", [9, 0, -1, -(2**63)])
def test_lookup_below_the_log_is_compacted(core_impl, method, index):
    ring = make_ring(core_impl, [(4, b"a"), (5, b"b")], offset=10, offset_term=4)
    with pytest.raises(CompactedError) as info:
        getattr(ring, method)(index)
    assert isinstance(info.value, LogError)
    assert isinstance(info.value, IndexError)
    assert not isinstance(info.value, UnavailableError)


@pytest.mark.parametrize("method", ["term", "payload", "entry"])
@pytest.mark.parametrize("index", [13, 14, 1000, MAX])
def test_lookup_above_the_log_is_unavailable(core_impl, method, index):
    ring = make_ring(core_impl, [(4, b"a"), (5, b"b")], offset=10, offset_term=4)
    with pytest.raises(UnavailableError) as info:
        getattr(ring, method)(index)
    assert isinstance(info.value, LogError)
    assert isinstance(info.value, IndexError)
    assert not isinstance(info.value, CompactedError)


@pytest.mark.parametrize("method", ["term", "payload", "entry"])
@pytest.mark.parametrize("index", [2**63, 2**64, 2**100, -(2**63) - 1, -(2**100)])
def test_lookup_over_63_bits_overflows(core_impl, method, index):
    ring = make_ring(core_impl, [(1, b"a")])
    with pytest.raises(OverflowError):
        getattr(ring, method)(index)


def test_lookups_on_an_empty_ring(core_impl):
    ring = core_impl.LogRing(3, 2)
    assert ring.term(3) == 2
    for method in ("term", "payload", "entry"):
        with pytest.raises(UnavailableError):
            getattr(ring, method)(4)
        with pytest.raises(CompactedError):
            getattr(ring, method)(2)
    with pytest.raises(CompactedError):
        ring.payload(3)


# -- slice --------------------------------------------------------------------------------


ENTRIES = [(1, b"aaa"), (1, b"bbb"), (2, b"ccc"), (2, b"ddd"), (3, b"eee")]


def test_slice_without_budget(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.slice(1, 6) == ENTRIES
    assert ring.slice(2, 4) == ENTRIES[1:3]
    assert ring.slice(5, 6) == ENTRIES[4:]
    assert ring.slice(1, 6, None) == ENTRIES
    out = ring.slice(1, 3)
    assert type(out) is list
    assert all(type(e) is tuple for e in out)


def test_slice_after_offset(core_impl):
    ring = make_ring(core_impl, ENTRIES, offset=100, offset_term=1)
    assert ring.slice(101, 106) == ENTRIES
    assert ring.slice(103, 105) == ENTRIES[2:4]


@pytest.mark.parametrize("lo", [1, 3, 6])
def test_slice_lo_equal_hi_is_empty(core_impl, lo):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.slice(lo, lo) == []
    assert ring.slice(lo, lo, 0) == []


def test_slice_of_an_empty_ring(core_impl):
    ring = core_impl.LogRing(7, 2)
    assert ring.slice(8, 8) == []
    with pytest.raises(UnavailableError):
        ring.slice(8, 9)


@pytest.mark.parametrize("lo, hi", [(3, 2), (6, 1), (2, 1)])
def test_slice_reversed_bounds_is_value_error(core_impl, lo, hi):
    ring = make_ring(core_impl, ENTRIES)
    with pytest.raises(ValueError) as info:
        ring.slice(lo, hi)
    assert not isinstance(info.value, LogError)


@pytest.mark.parametrize("lo, hi", [(10, 12), (11, 12), (11, 11), (0, 12), (-1, 12)])
def test_slice_starting_at_or_below_offset_is_compacted(core_impl, lo, hi):
    # lo == hi == offset is below the log too: the range check wins over "empty".
    ring = make_ring(core_impl, [(1, b"a"), (1, b"b")], offset=11, offset_term=1)
    with pytest.raises(CompactedError):
        ring.slice(lo, hi)


@pytest.mark.parametrize("lo, hi", [(1, 7), (6, 7), (7, 7 + 1), (1, 1000), (8, 8), (1, MAX)])
def test_slice_past_the_end_is_unavailable(core_impl, lo, hi):
    ring = make_ring(core_impl, ENTRIES)
    with pytest.raises(UnavailableError):
        ring.slice(lo, hi)


@pytest.mark.parametrize("hi", [2**63 + 1, 2**64])
def test_slice_bound_over_63_bits_overflows(core_impl, hi):
    ring = make_ring(core_impl, ENTRIES)
    with pytest.raises(OverflowError):
        ring.slice(1, hi)


@pytest.mark.parametrize("max_bytes, count", [
    (0, 1),      # the first entry is always included
    (1, 1),
    (5, 1),
    (6, 2),      # exactly reaching the budget is allowed
    (8, 2),
    (9, 3),
    (14, 4),
    (15, 5),
    (10**9, 5),
])
def test_slice_byte_budget(core_impl, max_bytes, count):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.slice(1, 6, max_bytes) == ENTRIES[:count]
    assert ring.slice(1, 6, max_bytes=max_bytes) == ENTRIES[:count]


def test_slice_budget_counts_from_lo(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.slice(3, 6, 6) == ENTRIES[2:4]
    assert ring.slice(3, 4, 0) == ENTRIES[2:3]


def test_slice_budget_includes_one_oversized_first_entry(core_impl):
    entries = [(1, bytes(1000)), (1, b"a"), (1, b"b")]
    ring = make_ring(core_impl, entries)
    assert ring.slice(1, 4, 10) == entries[:1]
    assert ring.slice(2, 4, 10) == entries[1:]


def test_slice_budget_with_empty_payloads(core_impl):
    entries = [(1, b"12345"), (1, b""), (1, b""), (1, b"x"), (1, b"")]
    ring = make_ring(core_impl, entries)
    # 5 + 0 + 0 == 5 fits; the next byte would pass the budget.
    assert ring.slice(1, 6, 5) == entries[:3]
    assert ring.slice(1, 6, 6) == entries
    zeros = make_ring(core_impl, [(1, b"")] * 4)
    assert zeros.slice(1, 5, 0) == [(1, b"")] * 4


def test_slice_budget_stops_at_the_first_entry_that_does_not_fit(core_impl):
    # The budget is a prefix rule: a later small entry that would fit is not taken.
    entries = [(1, b"aa"), (1, b"bbbbbb"), (1, b"c")]
    ring = make_ring(core_impl, entries)
    assert ring.slice(1, 4, 3) == entries[:1]


def test_slice_up_to_max_index(core_impl):
    # hi is exclusive, so the slice that ends with the entry at MAX_INDEX has hi == 2**63.
    entries = [(1, b"a"), (2, b"b"), (2, b"c")]
    ring = make_ring(core_impl, entries, offset=MAX - 3, offset_term=1)
    assert ring.last_index == MAX
    assert ring.slice(MAX - 2, MAX + 1) == entries
    assert ring.slice(MAX, MAX + 1) == entries[2:]
    assert ring.slice(MAX - 2, MAX + 1, 1) == entries[:1]
    assert ring.slice(MAX - 2, MAX) == entries[:2]
    assert ring.slice(MAX + 1, MAX + 1) == []
    with pytest.raises(OverflowError):
        ring.slice(MAX, MAX + 2)
    assert ring.truncate_from(MAX + 1) == 0
    assert ring.truncate_from(MAX) == 1
    assert ring.slice(MAX - 2, MAX) == entries[:2]


# -- append -------------------------------------------------------------------------------


def test_append_equal_and_higher_terms(core_impl):
    ring = core_impl.LogRing()
    ring.append(0, b"zero-term")
    ring.append(0, b"again")
    ring.append(7, b"jump")
    ring.append(7, b"same")
    ring.append(MAX, b"max")
    assert [t for t, _ in contents(ring)] == [0, 0, 7, 7, MAX]
    assert ring.last_term == MAX


@pytest.mark.parametrize("term", [4, 0, -1, -(2**63)])
def test_append_lower_term_is_value_error_and_changes_nothing(core_impl, term):
    ring = make_ring(core_impl, [(3, b"a"), (5, b"b")])
    before = snapshot(ring)
    with pytest.raises(ValueError):
        ring.append(term, b"x")
    assert snapshot(ring) == before


def test_append_below_offset_term_on_empty_ring(core_impl):
    ring = core_impl.LogRing(10, 5)
    with pytest.raises(ValueError):
        ring.append(4, b"x")
    ring.append(5, b"x")
    assert ring.entry(11) == (5, b"x")


@pytest.mark.parametrize("term", [2**63, 2**64, 2**200])
def test_append_term_over_63_bits_overflows_and_changes_nothing(core_impl, term):
    ring = make_ring(core_impl, [(3, b"a")])
    before = snapshot(ring)
    with pytest.raises(OverflowError):
        ring.append(term, b"x")
    assert snapshot(ring) == before


@pytest.mark.parametrize("payload", [
    bytearray(b"x"), memoryview(b"x"), "x", None, 1, [b"x"],
], ids=["bytearray", "memoryview", "str", "None", "int", "list"])
def test_append_non_bytes_payload_is_type_error_and_changes_nothing(core_impl, payload):
    ring = make_ring(core_impl, [(3, b"a")])
    before = snapshot(ring)
    with pytest.raises(TypeError):
        ring.append(3, payload)
    assert snapshot(ring) == before


def test_appends_stop_at_max_index(core_impl):
    ring = core_impl.LogRing(MAX - 2, 1)
    ring.append(1, b"a")
    ring.extend_term(1, [b"b"])
    assert ring.last_index == MAX
    before = snapshot(ring)
    with pytest.raises(OverflowError):
        ring.append(1, b"c")
    with pytest.raises(OverflowError):
        ring.extend([(1, b"c")])
    with pytest.raises(OverflowError):
        ring.extend_term(1, [b"c"])
    ring.extend([])
    ring.extend_term(1, [])
    assert snapshot(ring) == before


def test_batch_passing_max_index_changes_nothing(core_impl):
    ring = core_impl.LogRing(MAX - 3, 1)
    before = snapshot(ring)
    with pytest.raises(OverflowError):
        ring.extend([(1, b"x")] * 4)
    with pytest.raises(OverflowError):
        ring.extend_term(1, [b"x"] * 4)
    assert snapshot(ring) == before
    ring.extend([(1, b"x")] * 3)
    assert ring.last_index == MAX


# -- extend / extend_term -----------------------------------------------------------------


def test_extend_appends_in_order(core_impl):
    ring = make_ring(core_impl, [(1, b"a")])
    batch = [(1, b"b"), (2, b"cc"), (2, b""), (9, b"d")]
    assert ring.extend(batch) is None
    assert contents(ring) == [(1, b"a")] + batch
    assert ring.nbytes == 1 + 1 + 2 + 0 + 1
    assert ring.last_term == 9


def test_extend_accepts_any_iterable(core_impl):
    ring = core_impl.LogRing()
    ring.extend((t, bytes([t])) for t in range(5))
    ring.extend(iter([(5, b"\x05")]))
    ring.extend(((6, b"\x06"),))
    assert contents(ring) == [(t, bytes([t])) for t in range(7)]


def test_extend_empty_batch_is_a_no_op(core_impl):
    ring = make_ring(core_impl, [(4, b"a")])
    before = snapshot(ring)
    ring.extend([])
    ring.extend(iter(()))
    assert snapshot(ring) == before


BAD_BATCHES = {
    # name: (batch appended to a ring whose last term is 3, exception)
    "first-term-below-last": ([(2, b"x")], ValueError),
    "term-decreases-inside": ([(3, b"x"), (5, b"y"), (4, b"z")], ValueError),
    "negative-term": ([(3, b"x"), (-1, b"y")], ValueError),
    "bad-payload-last": ([(3, b"x"), (4, b"y"), (4, "z")], TypeError),
    "bytearray-payload": ([(4, bytearray(b"y"))], TypeError),
    "none-payload-first": ([(4, None), (4, b"y")], TypeError),
    "overflow-term-last": ([(3, b"x"), (2**63, b"y")], OverflowError),
}


@pytest.mark.parametrize("name", list(BAD_BATCHES))
def test_extend_bad_batch_changes_nothing(core_impl, name):
    batch, exc = BAD_BATCHES[name]
    ring = make_ring(core_impl, [(3, b"a")] * 3)
    before = snapshot(ring)
    with pytest.raises(exc):
        ring.extend(batch)
    assert snapshot(ring) == before


@pytest.mark.parametrize("entry", [(1, b"x", 5), (1,), 7, None],
                         ids=["triple", "single", "int", "None"])
def test_extend_malformed_entry_changes_nothing(core_impl, entry):
    ring = make_ring(core_impl, [(1, b"a")])
    before = snapshot(ring)
    with pytest.raises((TypeError, ValueError)):
        ring.extend([(1, b"ok"), entry])
    assert snapshot(ring) == before


def test_failed_extend_that_would_have_grown_the_ring_changes_nothing(core_impl):
    ring = make_ring(core_impl, [(1, b"a")] * 15)
    assert ring.capacity == 16
    before = snapshot(ring)
    with pytest.raises(ValueError):
        ring.extend([(2, b"x")] * 40 + [(1, b"late")])
    assert snapshot(ring) == before
    with pytest.raises(TypeError):
        ring.extend([(2, b"x")] * 40 + [(2, "late")])
    assert snapshot(ring) == before


def test_extend_term(core_impl):
    ring = make_ring(core_impl, [(2, b"a")])
    assert ring.extend_term(2, [b"b", b"cc"]) is None
    ring.extend_term(5, (p for p in [b"d", b""]))
    assert contents(ring) == [(2, b"a"), (2, b"b"), (2, b"cc"), (5, b"d"), (5, b"")]
    assert ring.nbytes == 5
    assert ring.last_term == 5


def test_extend_term_empty_batch(core_impl):
    ring = make_ring(core_impl, [(2, b"a")])
    before = snapshot(ring)
    ring.extend_term(2, [])
    ring.extend_term(3, [])
    assert snapshot(ring) == before


def test_extend_term_below_last_term_even_when_empty(core_impl):
    ring = make_ring(core_impl, [(2, b"a")])
    before = snapshot(ring)
    with pytest.raises(ValueError):
        ring.extend_term(1, [b"x"])
    with pytest.raises(ValueError):
        ring.extend_term(1, [])
    with pytest.raises(ValueError):
        ring.extend_term(-1, [b"x"])
    assert snapshot(ring) == before


def test_extend_term_below_offset_term(core_impl):
    ring = core_impl.LogRing(4, 3)
    with pytest.raises(ValueError):
        ring.extend_term(2, [b"x"])
    assert len(ring) == 0


@pytest.mark.parametrize("payloads", [
    [b"a", b"b", "c"], [None], [b"a"] * 40 + [bytearray(b"z")], [b"a", memoryview(b"b")],
], ids=["str-last", "None", "bytearray-after-40", "memoryview"])
def test_extend_term_bad_payload_changes_nothing(core_impl, payloads):
    ring = make_ring(core_impl, [(2, b"a")] * 10)
    before = snapshot(ring)
    with pytest.raises(TypeError):
        ring.extend_term(2, payloads)
    assert snapshot(ring) == before


def test_extend_term_overflow_changes_nothing(core_impl):
    ring = make_ring(core_impl, [(2, b"a")])
    before = snapshot(ring)
    with pytest.raises(OverflowError):
        ring.extend_term(2**63, [b"x"])
    assert snapshot(ring) == before
    ring.extend_term(MAX, [b"x"])
    assert ring.last_term == MAX


# -- truncate_from ------------------------------------------------------------------------


def test_truncate_from_removes_the_suffix(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.truncate_from(4) == 2
    assert contents(ring) == ENTRIES[:3]
    assert ring.last_index == 3
    assert ring.last_term == 2
    assert ring.nbytes == 9
    with pytest.raises(UnavailableError):
        ring.term(4)
    # The conflicting suffix may be replaced by entries of a lower term than it had.
    ring.append(2, b"new")
    assert ring.entry(4) == (2, b"new")


def test_truncate_from_last_plus_one_removes_nothing(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.truncate_from(6) == 0
    assert contents(ring) == ENTRIES


def test_truncate_from_first_index_empties_the_ring(core_impl):
    ring = make_ring(core_impl, [(3, b"a"), (4, b"b")], offset=20, offset_term=3)
    assert ring.truncate_from(21) == 2
    assert len(ring) == 0
    assert (ring.offset, ring.offset_term, ring.last_index, ring.last_term) == (20, 3, 20, 3)
    assert ring.nbytes == 0
    with pytest.raises(ValueError):
        ring.append(2, b"x")
    ring.append(3, b"x")
    assert ring.entry(21) == (3, b"x")


@pytest.mark.parametrize("index", [20, 19, 0, -1])
def test_truncate_from_at_or_below_offset_is_compacted(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a"), (4, b"b")], offset=20, offset_term=3)
    before = snapshot(ring)
    with pytest.raises(CompactedError):
        ring.truncate_from(index)
    assert snapshot(ring) == before


@pytest.mark.parametrize("index", [24, 100, MAX])
def test_truncate_from_past_last_plus_one_is_unavailable(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a"), (4, b"b")], offset=20, offset_term=3)
    before = snapshot(ring)
    with pytest.raises(UnavailableError):
        ring.truncate_from(index)
    assert snapshot(ring) == before


@pytest.mark.parametrize("index", [2**63, 2**64])
def test_truncate_from_over_63_bits_overflows(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a")])
    with pytest.raises(OverflowError):
        ring.truncate_from(index)
    assert len(ring) == 1


# -- compact ------------------------------------------------------------------------------


def test_compact_releases_the_prefix(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.compact(3) == 3
    assert (ring.offset, ring.offset_term) == (3, 2)
    assert (ring.first_index, ring.last_index, len(ring)) == (4, 5, 2)
    assert ring.nbytes == 6
    assert ring.term(3) == 2
    assert contents(ring) == ENTRIES[3:]
    with pytest.raises(CompactedError):
        ring.payload(3)
    with pytest.raises(CompactedError):
        ring.term(2)
    with pytest.raises(CompactedError):
        ring.slice(3, 5)


def test_compact_at_offset_releases_nothing(core_impl):
    ring = make_ring(core_impl, ENTRIES, offset=9, offset_term=1)
    before = snapshot(ring)
    assert ring.compact(9) == 0
    assert snapshot(ring) == before


def test_compact_everything(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.compact(5) == 5
    assert len(ring) == 0
    assert (ring.offset, ring.offset_term, ring.last_index, ring.last_term) == (5, 3, 5, 3)
    assert ring.nbytes == 0
    assert ring.term(5) == 3
    with pytest.raises(ValueError):
        ring.append(2, b"x")
    ring.append(3, b"x")
    assert ring.entry(6) == (3, b"x")


def test_compact_twice(core_impl):
    ring = make_ring(core_impl, ENTRIES)
    assert ring.compact(2) == 2
    assert ring.compact(4) == 2
    assert (ring.offset, ring.offset_term) == (4, 2)
    assert contents(ring) == ENTRIES[4:]


@pytest.mark.parametrize("index", [8, 0, -1])
def test_compact_below_offset_is_compacted(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a"), (4, b"b")], offset=9, offset_term=3)
    before = snapshot(ring)
    with pytest.raises(CompactedError):
        ring.compact(index)
    assert snapshot(ring) == before


@pytest.mark.parametrize("index", [12, 13, MAX])
def test_compact_past_last_index_is_unavailable(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a"), (4, b"b")], offset=9, offset_term=3)
    before = snapshot(ring)
    with pytest.raises(UnavailableError):
        ring.compact(index)
    assert snapshot(ring) == before


@pytest.mark.parametrize("index", [2**63, 2**64])
def test_compact_over_63_bits_overflows(core_impl, index):
    ring = make_ring(core_impl, [(3, b"a")])
    with pytest.raises(OverflowError):
        ring.compact(index)
    assert len(ring) == 1


# -- reset --------------------------------------------------------------------------------


def test_reset_installs_a_snapshot_point(core_impl):
    ring = make_ring(core_impl, [(1, b"x" * 10)] * 100, offset=5, offset_term=1)
    ring.reset(50, 7)
    assert (ring.offset, ring.offset_term) == (50, 7)
    assert (len(ring), ring.first_index, ring.last_index, ring.last_term) == (0, 51, 50, 7)
    assert ring.nbytes == 0
    assert ring.capacity == 16
    assert ring.term(50) == 7
    with pytest.raises(CompactedError):
        ring.term(49)
    with pytest.raises(UnavailableError):
        ring.payload(51)
    with pytest.raises(ValueError):
        ring.append(6, b"y")
    ring.append(7, b"y")
    assert ring.entry(51) == (7, b"y")


def test_reset_may_move_backwards(core_impl):
    ring = make_ring(core_impl, [(4, b"a")], offset=100, offset_term=4)
    ring.reset(0, 0)
    assert (ring.offset, ring.offset_term, ring.last_index) == (0, 0, 0)
    ring.append(0, b"z")
    assert ring.entry(1) == (0, b"z")


def test_reset_returns_to_min_capacity_even_from_a_large_initial_capacity(core_impl):
    ring = core_impl.LogRing(capacity=4096)
    ring.reset(1, 1)
    assert ring.capacity == 16


@pytest.mark.parametrize("offset, offset_term, exc", [
    (-1, 0, ValueError), (0, -1, ValueError), (2**63, 0, OverflowError),
    (0, 2**63, OverflowError),
])
def test_reset_bad_arguments_change_nothing(core_impl, offset, offset_term, exc):
    ring = make_ring(core_impl, [(2, b"a"), (3, b"b")], offset=4, offset_term=2)
    before = snapshot(ring)
    with pytest.raises(exc):
        ring.reset(offset, offset_term)
    assert snapshot(ring) == before


# -- capacity policy ----------------------------------------------------------------------


def test_append_doubles_exactly_when_full(core_impl):
    ring = core_impl.LogRing()
    for n in range(1, 300):
        ring.append(1, b"e")
        assert ring.capacity == expected_capacity_for(n), n
    assert ring.capacity == 512


@pytest.mark.parametrize("start, batch, capacity", [
    (0, 16, 16), (0, 17, 32), (0, 100, 128), (10, 6, 16), (10, 7, 32), (16, 1, 32),
    (20, 200, 256), (0, 0, 16),
])
def test_extend_grows_to_the_next_power_of_two(core_impl, start, batch, capacity):
    a = make_ring(core_impl, [(1, b"s")] * start)
    a.extend([(1, b"b")] * batch)
    assert a.capacity == capacity
    b = make_ring(core_impl, [(1, b"s")] * start)
    b.extend_term(1, [b"b"] * batch)
    assert b.capacity == capacity
    assert len(a) == len(b) == start + batch


@pytest.mark.parametrize("size, keep, capacity", [
    (100, 100, 128),   # nothing removed: 100 > 128/4
    (100, 33, 128),    # 33 > 32: no halving
    (100, 32, 64),     # 32 <= 128/4: halve once; 32 > 16: stop
    (100, 16, 32),
    (100, 9, 32),      # 9 > 8: stop at 32
    (100, 8, 16),
    (100, 0, 16),      # never below MIN_CAPACITY
    (1000, 1, 16),
    (1000, 257, 1024),
    (1000, 256, 512),
    (1000, 255, 512),
])
def test_truncate_from_halves_while_a_quarter_full(core_impl, size, keep, capacity):
    ring = make_ring(core_impl, [(1, b"e")] * size)
    ring.truncate_from(keep + 1)
    assert ring.capacity == capacity
    assert len(ring) == keep


@pytest.mark.parametrize("size, keep, capacity", [
    (100, 33, 128), (100, 32, 64), (100, 16, 32), (100, 8, 16), (100, 0, 16),
    (1000, 255, 512), (1000, 64, 128), (1000, 65, 256),
])
def test_compact_halves_while_a_quarter_full(core_impl, size, keep, capacity):
    ring = make_ring(core_impl, [(1, b"e")] * size)
    ring.compact(size - keep)
    assert ring.capacity == capacity
    assert len(ring) == keep
    assert contents(ring) == [(1, b"e")] * keep


def test_shrink_policy_applies_to_a_large_initial_capacity(core_impl):
    # compact(offset) releases nothing and leaves the ring alone; truncate_from(last + 1) is
    # a truncation (of nothing) and applies the shrink rule, as in the reference.
    ring = core_impl.LogRing(capacity=1024)
    ring.extend([(1, b"e")] * 10)
    assert ring.compact(0) == 0
    assert ring.capacity == 1024
    assert ring.truncate_from(11) == 0
    assert ring.capacity == 32  # 1024 -> ... -> 32: 10 entries are more than 32/4
    assert contents(ring) == [(1, b"e")] * 10


def test_appending_does_not_shrink_a_large_initial_capacity(core_impl):
    ring = core_impl.LogRing(capacity=256)
    ring.extend([(1, b"e")] * 3)
    ring.append(1, b"f")
    ring.extend_term(2, [b"g"])
    assert ring.capacity == 256


def test_growth_after_shrink(core_impl):
    ring = make_ring(core_impl, [(1, bytes([i % 256])) for i in range(200)])
    assert ring.capacity == 256
    ring.compact(190)  # 10 left: 256 -> 128 -> 64 -> 32 (10 > 32/4)
    assert ring.capacity == 32
    ring.compact(194)  # 6 left: 32 -> 16
    assert ring.capacity == 16
    ring.extend([(2, b"x")] * 11)  # 17 entries
    assert ring.capacity == 32
    assert contents(ring) == [(1, bytes([i % 256])) for i in range(194, 200)] + [(2, b"x")] * 11


# -- payload references -------------------------------------------------------------------


def test_compaction_releases_payload_references(core_impl):
    ring = core_impl.LogRing()
    p = fresh(64)
    base = sys.getrefcount(p)
    for _ in range(100):  # 16 -> 32 -> 64 -> 128 on the way: resizes must not leak
        ring.append(1, p)
    held = sys.getrefcount(p) - base
    assert held == 100
    assert ring.nbytes == 6400
    ring.compact(90)  # shrinks 128 -> 64 -> 32
    held = sys.getrefcount(p) - base
    assert held == 10
    assert ring.capacity == 32
    assert ring.nbytes == 640
    ring.compact(100)
    held = sys.getrefcount(p) - base
    assert held == 0
    assert ring.nbytes == 0


def test_truncation_releases_payload_references(core_impl):
    ring = core_impl.LogRing()
    kept, dropped = fresh(8), fresh(9)
    base_kept, base_dropped = sys.getrefcount(kept), sys.getrefcount(dropped)
    ring.extend([(1, kept)] * 5)
    ring.extend_term(2, [dropped] * 50)
    assert sys.getrefcount(dropped) - base_dropped == 50
    assert ring.truncate_from(6) == 50
    held_dropped = sys.getrefcount(dropped) - base_dropped
    held_kept = sys.getrefcount(kept) - base_kept
    assert (held_dropped, held_kept) == (0, 5)
    assert ring.nbytes == 40


def test_release_without_a_resize(core_impl):
    # At MIN_CAPACITY no shrink happens, so the released slots themselves must let go.
    ring = core_impl.LogRing()
    p, q = fresh(3), fresh(4)
    base_p, base_q = sys.getrefcount(p), sys.getrefcount(q)
    ring.extend([(1, p)] * 6 + [(1, q)] * 6)
    assert ring.compact(6) == 6
    assert ring.capacity == 16
    held_p = sys.getrefcount(p) - base_p
    assert held_p == 0
    assert ring.truncate_from(10) == 3
    assert ring.capacity == 16
    held_q = sys.getrefcount(q) - base_q
    assert held_q == 3
    assert ring.nbytes == 12


def test_reset_and_deletion_release_payload_references(core_impl):
    p = fresh(5)
    base = sys.getrefcount(p)
    ring = core_impl.LogRing()
    ring.extend([(1, p)] * 20)
    ring.reset(100, 2)
    held = sys.getrefcount(p) - base
    assert held == 0
    ring.extend([(2, p)] * 20)
    del ring
    held = sys.getrefcount(p) - base
    assert held == 0


def test_failed_batches_keep_no_payload_references(core_impl):
    p = fresh(5)
    base = sys.getrefcount(p)
    ring = make_ring(core_impl, [(3, b"a")])
    with pytest.raises(ValueError):
        ring.extend([(3, p)] * 30 + [(1, p)])
    with pytest.raises(TypeError):
        ring.extend_term(3, [p] * 30 + ["x"])
    with pytest.raises(TypeError):
        ring.extend([(3, p)] * 30 + [(3, None)])
    held = sys.getrefcount(p) - base
    assert held == 0


# -- wraparound ---------------------------------------------------------------------------


def test_wraparound_keeps_index_order(core_impl):
    ring = core_impl.LogRing()
    model = []
    ring.extend([(1, b"%d" % i) for i in range(1, 11)])
    model += [(1, b"%d" % i) for i in range(1, 11)]
    ring.compact(8)  # head moves to slot 8; 2 entries left, capacity stays 16
    del model[:8]
    ring.extend([(2, b"%d" % i) for i in range(11, 25)])  # 16 entries, wrapping past slot 15
    model += [(2, b"%d" % i) for i in range(11, 25)]
    assert ring.capacity == 16
    assert len(ring) == 16
    assert contents(ring) == model
    assert ring.slice(9, 25) == model
    assert ring.slice(14, 20, 6) == model[5:8]
    assert [ring.term(i) for i in range(8, 25)] == [1] + [t for t, _ in model]
    # Growing while wrapped must unwrap in index order.
    ring.append(3, b"25")
    model.append((3, b"25"))
    assert ring.capacity == 32
    assert contents(ring) == model
    assert ring.slice(9, 26) == model


def test_truncate_across_the_wrap(core_impl):
    ring = core_impl.LogRing()
    ring.extend([(1, b"a")] * 12)
    ring.compact(12)
    ring.extend([(2, bytes([i])) for i in range(14)])  # slots 12..15, 0..9
    assert ring.capacity == 16
    assert ring.truncate_from(15) == 12  # removes the wrapped part
    assert contents(ring) == [(2, b"\x00"), (2, b"\x01")]
    ring.extend([(3, bytes([i])) for i in range(14)])
    assert contents(ring) == [(2, b"\x00"), (2, b"\x01")] + [(3, bytes([i])) for i in range(14)]
    assert ring.nbytes == 16


def test_many_laps_around_the_ring(core_impl):
    ring = core_impl.LogRing()
    model = []  # (index, term, payload)
    offset = 0
    term = 1
    next_index = 1
    for lap in range(300):
        k = 1 + lap % 7
        batch = [b"%d" % (next_index + j) for j in range(k)]
        if lap % 5 == 0:
            term += 1
        ring.extend_term(term, batch)
        model += [(next_index + j, term, batch[j]) for j in range(k)]
        next_index += k
        # Keep at most 9 entries (+ a batch of up to 7) so the ring never grows past 16 and
        # the head keeps lapping.
        while len(model) > 9:
            index, t, _ = model.pop(0)
            offset = index
            ring.compact(index)
            assert ring.offset_term == t
        assert ring.capacity == 16
        assert ring.offset == offset
        assert contents(ring) == [(t, p) for _, t, p in model]
        assert ring.nbytes == sum(len(p) for _, _, p in model)
    assert ring.last_index == next_index - 1
    assert next_index > 16 * 50  # the head went around the 16 slots many times
