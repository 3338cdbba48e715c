"""Property tests (hypothesis) of the core: each implementation against a naive reference, and
the two implementations against each other.

Place in the architecture: tests only. The reference models below are deliberately dumb (a
Python list for the log, counting loops for quorums, ``struct`` + ``zlib`` for the WAL layout)
so that they share no code with ``fastraft._core_py`` or ``fastraft._core``.

(a) ``RuleBasedStateMachine`` over LogRing, one TestCase per implementation, against RingModel.
(b) Quorum arithmetic against brute-force counting.
(c) WAL codec: round trips, every truncation, single bit flips and short bursts.
(d) Frame codec: random payloads fed in random chunks, with and without a size limit.
(e) Cross-implementation equality (needs the extension; skipped under FASTRAFT_NO_EXTENSIONS).

Settings come from the ``ci`` profile in tests/conftest.py; the ``slow`` tests (--run-slow)
repeat the main properties with many more examples. Failures print hypothesis'
reproduction blob; ``--hypothesis-seed=N`` replays a whole run.
"""

from __future__ import annotations

import importlib
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fastraft.errors import (
    CompactedError,
    FrameTooLarge,
    LocalProtocolError,
    UnavailableError,
)

MAX = 2**63 - 1
MIN_CAPACITY = 16

PYTHON_CORE = "fastraft._core_py"
CYTHON_CORE = "fastraft._core"

SLOW = settings(max_examples=2000, deadline=None)


def outcome(fn, *args, **kwargs):
    """``("ok", result)`` or ``("raised", exception type)``: comparable across twins."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the type is the observable result
        return ("raised", type(exc))


# =============================================================================================
# (a) LogRing against a naive list model
# =============================================================================================


def capacity_for(n: int) -> int:
    cap = MIN_CAPACITY
    while cap < n:
        cap *= 2
    return cap


class RingModel:
    """The log as a plain list of ``(term, payload)`` for indexes ``offset+1 ..``, with the
    capacity policy of the LogRing docstring tracked as a number. Every check runs before any
    change, so a failed call leaves the model as it was (the all-or-nothing rule)."""

    def __init__(self, offset: int, offset_term: int, capacity: int) -> None:
        self.offset = offset
        self.offset_term = offset_term
        self.entries: list[tuple[int, bytes]] = []
        self.capacity = capacity_for(capacity)

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1][0] if self.entries else self.offset_term

    @property
    def nbytes(self) -> int:
        return sum(len(p) for _, p in self.entries)

    @staticmethod
    def _out_of_range(index: int, lowest: int) -> Exception:
        """The error for an index outside the log whose lowest valid value is ``lowest``."""
        if index < -(2**63) or index > MAX:
            return OverflowError(index)
        if index < lowest:
            return CompactedError(index)
        return UnavailableError(index)

    @staticmethod
    def _check_term(term: int, previous: int) -> None:
        if term < previous:
            raise ValueError("term decreases")
        if term > MAX:
            raise OverflowError("term over 63 bits")

    def _grow_for(self, extra: int) -> None:
        while self.capacity < len(self.entries) + extra:
            self.capacity *= 2

    def _shrink(self) -> None:
        while self.capacity > MIN_CAPACITY and len(self.entries) <= self.capacity // 4:
            self.capacity //= 2

    # lookups

    def term(self, index):
        if index == self.offset:
            return self.offset_term
        if index < self.offset:
            raise self._out_of_range(index, self.offset)
        return self.entry(index)[0]

    def payload(self, index):
        return self.entry(index)[1]

    def entry(self, index):
        if index <= self.offset or index > self.last_index:
            raise self._out_of_range(index, self.offset + 1)
        return self.entries[index - self.offset - 1]

    def slice(self, lo, hi, max_bytes=None):
        if lo > hi:
            raise ValueError("reversed")
        if lo <= self.offset:
            raise self._out_of_range(lo, self.offset + 1)
        if hi > self.last_index + 1:
            raise self._out_of_range(hi - 1, self.offset + 1)
        wanted = self.entries[lo - self.offset - 1:hi - self.offset - 1]
        if max_bytes is None:
            return wanted
        out, total = [], 0
        for term, payload in wanted:
            total += len(payload)
            if out and total > max_bytes:
                break
            out.append((term, payload))
        return out

    # mutations

    def _check_room(self, n: int) -> None:
        if n > MAX - self.last_index:
            raise OverflowError("an index would pass MAX_INDEX")

    def append(self, term, payload):
        if not isinstance(payload, bytes):
            raise TypeError("payload")
        self._check_term(term, self.last_term)
        self._check_room(1)
        self._grow_for(1)
        self.entries.append((term, payload))

    def extend(self, entries):
        entries = list(entries)
        previous = self.last_term
        for term, payload in entries:
            if not isinstance(payload, bytes):
                raise TypeError("payload")
            self._check_term(term, previous)
            previous = term
        self._check_room(len(entries))
        self._grow_for(len(entries))
        self.entries.extend(entries)

    def extend_term(self, term, payloads):
        payloads = list(payloads)
        self._check_term(term, self.last_term)
        if not all(isinstance(p, bytes) for p in payloads):
            raise TypeError("payload")
        self._check_room(len(payloads))
        self._grow_for(len(payloads))
        self.entries.extend((term, p) for p in payloads)

    def truncate_from(self, index):
        if index <= self.offset or index > self.last_index + 1:
            raise self._out_of_range(index, self.offset + 1)
        keep = index - self.offset - 1
        removed = len(self.entries) - keep
        del self.entries[keep:]
        self._shrink()
        return removed

    def compact(self, index):
        if index < self.offset or index > self.last_index:
            raise self._out_of_range(index, self.offset)
        n = index - self.offset
        if n == 0:
            return 0
        self.offset_term = self.term(index)
        del self.entries[:n]
        self.offset = index
        self._shrink()
        return n

    def reset(self, offset, offset_term):
        if offset < 0 or offset_term < 0:
            raise ValueError("negative")
        if offset > MAX or offset_term > MAX:
            raise OverflowError("over 63 bits")
        self.offset = offset
        self.offset_term = offset_term
        self.entries = []
        self.capacity = MIN_CAPACITY


# -- strategies over the current state of a log ------------------------------------------------
#
# The machine below makes calls with at most one fault each (one bad argument, one bad entry in
# a batch), because the docstrings do not say which error wins when there are two; the twin
# test in section (e) compares those cases between the implementations instead.

SPECIAL_INDEXES = [-1, -(2**63), -(2**63) - 1, MAX, 2**63, 2**64, 2**80]
BAD_PAYLOADS = [bytearray(b"ba"), memoryview(b"mv"), "str", None, 7]

payloads = st.binary(max_size=12)
bad_payloads = st.sampled_from(BAD_PAYLOADS)


def index_near(model: RingModel, specials=SPECIAL_INDEXES):
    """Mostly indexes around the retained range, sometimes far outside it."""
    near = st.integers(model.offset - 3, model.last_index + 3)
    return st.one_of(near, near, near, st.sampled_from(specials))


def valid_term(last: int):
    return st.integers(last, min(MAX, last + 3))


def bad_term(last: int):
    """A term that must be refused after ``last``: lower (ValueError) or over 63 bits."""
    return st.one_of(st.integers(last - 3, last - 1), st.sampled_from([2**63, 2**64]))


def next_term(last: int):
    """A term for an append after ``last``: usually valid, sometimes lower or over 63 bits."""
    valid = valid_term(last)
    return st.one_of(valid, valid, valid, valid, bad_term(last))


def retained(model: RingModel):
    """An index of a retained entry, or last_index + 1 (an empty log gives offset + 1)."""
    return st.integers(model.offset + 1, model.last_index + 1)


@st.composite
def batches(draw, last: int, max_size: int = 40):
    """``(term, payload)`` pairs with non-decreasing terms from ``last``, sometimes with one
    fault injected: a lower term, a bad payload, or a term over 63 bits in the last pair."""
    steps = draw(st.lists(st.integers(0, 2), max_size=max_size))
    terms, t = [], last
    for s in steps:
        t = min(MAX, t + s)
        terms.append(t)
    items = [[term, draw(payloads)] for term in terms]
    fault = draw(st.sampled_from(["none", "none", "none", "none", "lower", "payload", "over"]))
    if items and fault != "none":
        i = draw(st.integers(0, len(items) - 1))
        previous = last if i == 0 else items[i - 1][0]
        if fault == "lower":
            items[i][0] = previous - draw(st.integers(1, 3))
        elif fault == "payload":
            items[i][1] = draw(bad_payloads)
        else:
            # Only last: after a term over 63 bits every later term would also be "lower".
            items[-1][0] = 2**63 + draw(st.integers(0, 3))
    return [tuple(item) for item in items]


ring_starts = st.tuples(
    # MAX - 40: a few appends reach the last index that fits in 63 bits.
    st.one_of(st.just(0), st.integers(0, 50), st.just(2**62), st.just(MAX - 40)),
    st.one_of(st.just(0), st.integers(0, 5)),
    st.one_of(st.just(MIN_CAPACITY), st.integers(0, 300)),
)


def logring_machine(load_core):
    """A state machine class checking the LogRing of ``load_core()`` against RingModel."""

    class LogRingMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.core = load_core()
            self.ring = None
            self.model = None

        @initialize(start=ring_starts)
        def start(self, start):
            offset, offset_term, capacity = start
            self.ring = self.core.LogRing(offset, offset_term, capacity)
            self.model = RingModel(offset, offset_term, capacity)

        def same(self, method, *args):
            expected = outcome(getattr(self.model, method), *args)
            got = outcome(getattr(self.ring, method), *args)
            assert got == expected, f"{method}{args!r}: ring {got!r}, model {expected!r}"
            return got

        # -- mutations --

        @rule(data=st.data())
        def append(self, data):
            last = self.model.last_term
            kind = data.draw(st.sampled_from(["ok", "ok", "ok", "ok", "term", "payload"]),
                             label="fault")
            term = data.draw(bad_term(last) if kind == "term" else valid_term(last),
                             label="term")
            payload = data.draw(bad_payloads if kind == "payload" else payloads,
                                label="payload")
            self.same("append", term, payload)

        @rule(data=st.data())
        def extend(self, data):
            self.same("extend", data.draw(batches(self.model.last_term), label="entries"))

        @rule(data=st.data())
        def extend_term(self, data):
            last = self.model.last_term
            kind = data.draw(st.sampled_from(["ok", "ok", "ok", "ok", "term", "payload"]),
                             label="fault")
            term = data.draw(bad_term(last) if kind == "term" else valid_term(last),
                             label="term")
            batch = data.draw(st.lists(payloads, max_size=24), label="payloads")
            if kind == "payload":
                i = data.draw(st.integers(0, len(batch)), label="at")
                batch.insert(i, data.draw(bad_payloads, label="bad payload"))
            self.same("extend_term", term, batch)

        @rule(data=st.data())
        def truncate_from(self, data):
            # Mostly a short suffix, so the log can grow past a few capacities.
            model = self.model
            short = st.integers(0, 5).map(lambda k: model.last_index + 1 - k)
            index = data.draw(st.one_of(short, short, index_near(model)), label="index")
            self.same("truncate_from", index)

        @rule(data=st.data())
        def compact(self, data):
            model = self.model
            short = st.integers(0, 8).map(lambda k: model.offset + k)
            index = data.draw(st.one_of(short, short, index_near(model)), label="index")
            self.same("compact", index)

        @rule(data=st.data())
        def reset(self, data):
            if data.draw(st.integers(0, 3), label="reset?") != 0:
                return  # rarely: a reset empties the log
            offset = st.one_of(st.integers(0, 100), st.sampled_from([MAX - 40, MAX]))
            term = st.integers(0, 6)
            kind = data.draw(st.sampled_from(["ok", "ok", "offset", "term"]), label="fault")
            bad = st.sampled_from([-1, -(2**63), 2**63, 2**64])
            self.same("reset", data.draw(bad if kind == "offset" else offset, label="offset"),
                      data.draw(bad if kind == "term" else term, label="offset_term"))

        # -- lookups --

        @rule(method=st.sampled_from(["term", "payload", "entry"]), data=st.data())
        def lookup(self, method, data):
            model = self.model
            index = data.draw(st.one_of(retained(model), index_near(model)), label="index")
            self.same(method, index)

        @rule(data=st.data())
        def slice(self, data):
            model = self.model
            lo = data.draw(st.one_of(retained(model), retained(model), index_near(model)),
                           label="lo")
            hi = data.draw(st.one_of(
                st.integers(lo, max(lo, model.last_index + 1)),
                st.integers(lo, max(lo, model.last_index + 1)),
                st.just(lo),
                index_near(model, [-1, -(2**63), MAX, 2**64, 2**80])), label="hi")
            # hi is exclusive: 2**63 is a valid bound when the log ends at MAX_INDEX.
            lo_fits, hi_fits = -(2**63) <= lo <= MAX, -(2**63) <= hi <= MAX + 1
            faults = ((lo > hi) + (not lo_fits) + (not hi_fits)
                      + (lo_fits and lo <= model.offset)
                      + (hi_fits and hi > model.last_index + 1))
            if faults > 1:
                return
            max_bytes = data.draw(st.one_of(st.none(), st.integers(0, 60)), label="max_bytes")
            if max_bytes is None and data.draw(st.booleans(), label="positional"):
                self.same("slice", lo, hi)
            else:
                self.same("slice", lo, hi, max_bytes)

        # -- invariants --

        @invariant()
        def agrees_with_model(self):
            ring, model = self.ring, self.model
            if ring is None:
                return
            assert len(ring) == len(model.entries)
            assert (ring.offset, ring.offset_term) == (model.offset, model.offset_term)
            assert ring.first_index == model.offset + 1
            assert ring.last_index == model.last_index
            assert ring.last_term == model.last_term
            assert ring.nbytes == model.nbytes
            assert ring.term(model.offset) == model.offset_term
            first, end = model.offset + 1, model.last_index + 1
            assert ring.slice(first, end) == model.entries
            # Byte budgets around the interesting points: nothing, one byte, part, all.
            total = model.nbytes
            mid = first + len(model.entries) // 2
            for budget in {0, 1, total // 3, total // 2, total - 1, total}:
                if budget >= 0:
                    assert ring.slice(first, end, budget) == model.slice(first, end, budget)
                    assert ring.slice(mid, end, budget) == model.slice(mid, end, budget)

        @invariant()
        def capacity_policy(self):
            if self.ring is None:
                return
            cap = self.ring.capacity
            assert cap >= MIN_CAPACITY
            assert cap & (cap - 1) == 0
            assert cap >= len(self.ring)
            assert cap == self.model.capacity

        @invariant()
        def terms_never_decrease(self):
            if self.model is None:
                return
            terms = [self.model.offset_term] + [t for t, _ in self.model.entries]
            assert terms == sorted(terms)

    return LogRingMachine


def _import(name):
    return lambda: importlib.import_module(name)


LogRingPython = logring_machine(_import(PYTHON_CORE))
LogRingCython = logring_machine(_import(CYTHON_CORE))


@pytest.mark.requires_core("python")
class TestLogRingPython(LogRingPython.TestCase):
    settings = settings(stateful_step_count=40, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.requires_core("cython")
class TestLogRingCython(LogRingCython.TestCase):
    settings = settings(stateful_step_count=40, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
def test_logring_machine_long_runs(core_impl):
    run_state_machine_as_test(
        logring_machine(lambda: core_impl),
        settings=settings(max_examples=1000, stateful_step_count=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]))


# =============================================================================================
# (b) Quorum arithmetic against brute force
# =============================================================================================


def naive_committed(matches):
    """The largest index that at least a majority of voters has, by counting."""
    majority = len(matches) // 2 + 1
    return max(c for c in set(matches) if sum(1 for m in matches if m >= c) >= majority)


def naive_vote(core, voters, votes):
    voters = set(voters)
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    majority = len(voters) // 2 + 1
    if granted >= majority:
        return core.VOTE_WON
    if len(voters) - rejected < majority:
        return core.VOTE_LOST
    return core.VOTE_PENDING


match_index = st.one_of(st.integers(0, 12), st.integers(0, MAX))
match_lists = st.lists(match_index, min_size=1, max_size=15)
voter_sets = st.frozensets(st.integers(0, 20), min_size=1, max_size=11)
vote_maps = st.dictionaries(st.integers(0, 25), st.booleans(), max_size=26)


@given(matches=match_lists)
def test_committed_index_is_the_majority_index(core_impl, matches):
    assert core_impl.quorum_size(len(matches)) == len(matches) // 2 + 1
    assert core_impl.committed_index(matches) == naive_committed(matches)
    assert core_impl.committed_index(list(reversed(matches))) == naive_committed(matches)


@given(matches=match_lists, i=st.integers(0, 14), bump=st.integers(1, 10))
def test_committed_index_is_monotonic(core_impl, matches, i, bump):
    i %= len(matches)
    more = list(matches)
    more[i] = min(MAX, more[i] + bump)
    assert core_impl.committed_index(more) >= core_impl.committed_index(matches)


@given(incoming=match_lists, outgoing=st.one_of(st.just([]), match_lists))
def test_joint_committed_index_is_the_smaller_majority_index(core_impl, incoming, outgoing):
    expected = naive_committed(incoming)
    if outgoing:
        expected = min(expected, naive_committed(outgoing))
    assert core_impl.joint_committed_index(incoming, outgoing) == expected


@given(good=st.lists(match_index, max_size=8), negative=st.booleans(), data=st.data())
def test_committed_index_rejects_out_of_range_matches(core_impl, good, negative, data):
    # One kind of bad value per call: which error wins when both occur is not specified.
    bad = st.integers(-(2**63), -1) if negative else st.integers(2**63, 2**70)
    matches = good + data.draw(st.lists(bad, min_size=1, max_size=3), label="bad")
    matches = data.draw(st.permutations(matches), label="order")
    with pytest.raises(ValueError if negative else OverflowError):
        core_impl.committed_index(matches)


@given(voters=voter_sets, votes=vote_maps)
def test_vote_result_counts_a_majority(core_impl, voters, votes):
    expected = naive_vote(core_impl, voters, votes)
    assert core_impl.vote_result(voters, votes) == expected
    assert core_impl.vote_result(sorted(voters), votes) == expected


@given(incoming=voter_sets, outgoing=st.one_of(st.just(frozenset()), voter_sets),
       votes=vote_maps)
def test_joint_vote_result_needs_both_majorities(core_impl, incoming, outgoing, votes):
    r_in = naive_vote(core_impl, incoming, votes)
    if not outgoing:
        expected = r_in
    else:
        r_out = naive_vote(core_impl, outgoing, votes)
        if core_impl.VOTE_LOST in (r_in, r_out):
            expected = core_impl.VOTE_LOST
        elif r_in == r_out == core_impl.VOTE_WON:
            expected = core_impl.VOTE_WON
        else:
            expected = core_impl.VOTE_PENDING
    assert core_impl.joint_vote_result(incoming, outgoing, votes) == expected


# =============================================================================================
# (c) The WAL record codec
# =============================================================================================


def raw_record(rtype, index, term, payload):
    """The record layout, written independently of the core."""
    head = struct.pack("<IIBBHQQ", zlib.crc32(bytes([rtype]) + payload), len(payload),
                       rtype, 0, 0, index, term)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


records = st.tuples(
    st.integers(1, 255),
    st.one_of(st.integers(0, 1000), st.integers(0, MAX)),
    st.one_of(st.integers(0, 1000), st.integers(0, MAX)),
    st.binary(max_size=64),
)
record_lists = st.lists(records, max_size=8)
nonempty_record_lists = st.lists(records, min_size=1, max_size=8)
buffer_kinds = st.sampled_from([bytes, bytearray, memoryview])


def boundaries(recs):
    """Start offset of each record, then the end of the last one."""
    out = [0]
    for r in recs:
        out.append(out[-1] + 32 + len(r[3]))
    return out


@given(recs=record_lists, prefix=st.binary(max_size=40), kind=buffer_kinds)
def test_wal_round_trip(core_impl, recs, prefix, kind):
    buf = core_impl.encode_records(recs)
    assert buf == b"".join(core_impl.encode_record(*r) for r in recs)
    assert buf == b"".join(raw_record(*r) for r in recs)
    assert core_impl.decode_records(kind(buf)) == (recs, len(buf), core_impl.WAL_CLEAN, None)
    assert core_impl.decode_records(kind(prefix + buf), len(prefix)) == (
        recs, len(prefix) + len(buf), core_impl.WAL_CLEAN, None)


@given(recs=nonempty_record_lists, data=st.data())
def test_wal_truncation_is_clean_prefix_or_torn(core_impl, recs, data):
    buf = core_impl.encode_records(recs)
    bounds = boundaries(recs)
    cut = data.draw(st.integers(0, len(buf)), label="cut")
    got_records, end, status, reason = core_impl.decode_records(buf[:cut])
    complete = max(k for k, b in enumerate(bounds) if b <= cut)
    assert got_records == recs[:complete]
    assert end == bounds[complete]
    if cut == end:
        assert (status, reason) == (core_impl.WAL_CLEAN, None)
    else:
        assert status == core_impl.WAL_TORN
        assert str(end) in reason


def record_at(bounds, pos):
    """The number of the record that holds byte ``pos``."""
    return max(k for k, b in enumerate(bounds[:-1]) if b <= pos)


@given(recs=nonempty_record_lists, data=st.data())
def test_wal_single_bit_flip_is_always_detected(core_impl, recs, data):
    buf = bytearray(core_impl.encode_records(recs))
    bounds = boundaries(recs)
    bit = data.draw(st.integers(0, 8 * len(buf) - 1), label="bit")
    buf[bit // 8] ^= 1 << (bit % 8)
    k = record_at(bounds, bit // 8)
    got_records, end, status, reason = core_impl.decode_records(bytes(buf))
    assert got_records == recs[:k]
    assert end == bounds[k]
    assert status == core_impl.WAL_CORRUPT
    assert str(end) in reason


@given(recs=nonempty_record_lists, data=st.data())
def test_wal_burst_errors_up_to_32_bits_are_detected(core_impl, recs, data):
    # CRC-32 detects every burst of at most 32 bits (bits in the LSB-first order in which
    # the reflected CRC reads them); the header CRC guards the header, the content CRC the
    # type byte and payload.
    buf = bytearray(core_impl.encode_records(recs))
    bounds = boundaries(recs)
    nbits = 8 * len(buf)
    start = data.draw(st.integers(0, nbits - 1), label="start bit")
    length = data.draw(st.integers(1, min(32, nbits - start)), label="burst length")
    pattern = data.draw(st.integers(0, 2**32 - 1), label="pattern")
    pattern = (pattern & ((1 << length) - 1)) | 1 | (1 << (length - 1))
    for j in range(length):
        if pattern >> j & 1:
            bit = start + j
            buf[bit // 8] ^= 1 << (bit % 8)
    k = record_at(bounds, start // 8)
    got_records, end, status, _ = core_impl.decode_records(bytes(buf))
    assert got_records == recs[:k]
    assert end == bounds[k]
    assert status == core_impl.WAL_CORRUPT


@given(recs=record_lists, data=st.data())
def test_wal_random_damage_never_yields_wrong_records(core_impl, recs, data):
    # Arbitrary overwrites may occasionally be undetectable in theory (2**-32), but the decoder
    # must never raise and must never return anything but a prefix of what was written.
    buf = bytearray(core_impl.encode_records(recs))
    if buf:
        for _ in range(data.draw(st.integers(1, 4), label="writes")):
            pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
            buf[pos] = data.draw(st.integers(0, 255), label="value")
    buf += data.draw(st.binary(max_size=40), label="tail")
    got_records, end, status, reason = core_impl.decode_records(bytes(buf))
    assert got_records == recs[:len(got_records)]
    assert end == boundaries(recs)[len(got_records)]
    assert status in (core_impl.WAL_CLEAN, core_impl.WAL_TORN, core_impl.WAL_CORRUPT)
    assert (reason is None) == (status == core_impl.WAL_CLEAN)


@given(recs=record_lists, zeros=st.integers(1, 200))
def test_wal_zero_filled_tail_is_torn(core_impl, recs, zeros):
    buf = core_impl.encode_records(recs)
    got_records, end, status, _ = core_impl.decode_records(buf + bytes(zeros))
    assert (got_records, end, status) == (recs, len(buf), core_impl.WAL_TORN)


@given(recs=record_lists, garbage=st.binary(min_size=1, max_size=31))
def test_wal_short_tail_is_torn(core_impl, recs, garbage):
    buf = core_impl.encode_records(recs)
    got_records, end, status, _ = core_impl.decode_records(buf + garbage)
    assert (got_records, end, status) == (recs, len(buf), core_impl.WAL_TORN)


@given(recs=nonempty_record_lists, limit=st.integers(0, 70))
def test_wal_max_record_size(core_impl, recs, limit):
    buf = core_impl.encode_records(recs)
    bounds = boundaries(recs)
    too_big = [k for k, r in enumerate(recs) if len(r[3]) > limit]
    got = core_impl.decode_records(buf, 0, limit)
    if not too_big:
        assert got == (recs, len(buf), core_impl.WAL_CLEAN, None)
    else:
        k = too_big[0]
        assert got[:3] == (recs[:k], bounds[k], core_impl.WAL_CORRUPT)


@pytest.mark.slow
@given(recs=nonempty_record_lists, data=st.data())
@SLOW
def test_wal_damage_long_run(core_impl, recs, data):
    test_wal_single_bit_flip_is_always_detected.hypothesis.inner_test(core_impl, recs, data)
    test_wal_burst_errors_up_to_32_bits_are_detected.hypothesis.inner_test(
        core_impl, recs, data)


# =============================================================================================
# (d) The frame codec
# =============================================================================================


@st.composite
def chunked(draw, stream: bytes):
    """``stream`` split at random points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:])]


frame_payloads = st.lists(st.binary(max_size=100), max_size=10)


def frame_ends(items):
    """The stream offset just past each frame."""
    out, pos = [], 0
    for p in items:
        pos += 4 + len(p)
        out.append(pos)
    return out


@given(items=frame_payloads, data=st.data())
def test_frames_round_trip_in_random_chunks(core_impl, items, data):
    stream = core_impl.encode_frames(items)
    assert stream == b"".join(core_impl.encode_frame(p) for p in items)
    assert stream == b"".join(struct.pack("<I", len(p)) + p for p in items)
    ends = frame_ends(items)
    dec = core_impl.FrameDecoder()
    fed = done = 0
    got = []
    for chunk in data.draw(chunked(stream), label="chunks"):
        out = dec.feed(chunk)
        before = fed
        fed += len(chunk)
        assert out == [p for p, e in zip(items, ends) if before < e <= fed]
        done = max([done] + [e for e in ends if e <= fed])
        assert dec.pending == fed - done
        got += out
    assert got == items
    assert dec.pending == 0


@given(items=st.lists(st.binary(max_size=60), max_size=8), limit=st.integers(0, 50),
       data=st.data())
def test_frame_limit_in_random_chunks(core_impl, items, limit, data):
    stream = b"".join(struct.pack("<I", len(p)) + p for p in items)
    ends = frame_ends(items)
    too_big = [k for k, p in enumerate(items) if len(p) > limit]
    # The decoder must fail when the header of the first oversized frame is complete.
    fail_at = ends[too_big[0]] - len(items[too_big[0]]) if too_big else None
    dec = core_impl.FrameDecoder(limit)
    fed = 0
    dead = False
    for chunk in data.draw(chunked(stream), label="chunks"):
        before = fed
        fed += len(chunk)
        if dead:
            with pytest.raises(LocalProtocolError):
                dec.feed(chunk)
        elif fail_at is not None and fed >= fail_at:
            with pytest.raises(FrameTooLarge) as info:
                dec.feed(chunk)
            assert (info.value.size, info.value.limit) == (len(items[too_big[0]]), limit)
            dead = True
        else:
            out = dec.feed(chunk)
            assert out == [p for p, e in zip(items, ends) if before < e <= fed]
    assert dead == (fail_at is not None)


# =============================================================================================
# (e) The two implementations agree
# =============================================================================================


def same_outcome(py, cy, fn_name, *args, **kwargs):
    a = outcome(getattr(py, fn_name), *args, **kwargs)
    b = outcome(getattr(cy, fn_name), *args, **kwargs)
    assert a == b, f"{fn_name}{args!r}: python {a!r}, cython {b!r}"
    return a


wide_ints = st.one_of(
    st.integers(-5, 300), st.integers(-(2**63), 2**64 + 5),
    st.sampled_from([-(2**63), -1, 0, MAX, 2**63, 2**64 - 1, 2**64]))
any_payload = st.one_of(st.binary(max_size=40), st.sampled_from(BAD_PAYLOADS))


@given(recs=st.lists(st.tuples(wide_ints, wide_ints, wide_ints, any_payload), max_size=5))
def test_twins_encode_identically(core_twins, recs):
    py, cy = core_twins
    for r in recs:
        same_outcome(py, cy, "encode_record", *r)
    same_outcome(py, cy, "encode_records", recs)


@st.composite
def wal_buffers(draw):
    """Valid encodings with random damage, forged fields, zero and garbage tails."""
    recs = draw(record_lists)
    buf = bytearray(b"".join(raw_record(*r) for r in recs))
    choice = draw(st.sampled_from(["clean", "flip", "overwrite", "cut", "zeros", "garbage",
                                   "forge", "random"]))
    if choice == "flip" and buf:
        bit = draw(st.integers(0, 8 * len(buf) - 1))
        buf[bit // 8] ^= 1 << (bit % 8)
    elif choice == "overwrite" and buf:
        pos = draw(st.integers(0, len(buf) - 1))
        buf[pos:pos + 4] = draw(st.binary(min_size=1, max_size=4))
    elif choice == "cut":
        del buf[draw(st.integers(0, len(buf))):]
    elif choice == "zeros":
        buf += bytes(draw(st.integers(1, 80)))
    elif choice == "garbage":
        buf += draw(st.binary(min_size=1, max_size=80))
    elif choice == "forge":
        # A header with a valid header CRC but arbitrary fields.
        fields = draw(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 200),
                                st.integers(0, 255), st.integers(0, 255),
                                st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1),
                                st.integers(0, 2**64 - 1)))
        head = struct.pack("<IIBBHQQ", *fields)
        buf += head + struct.pack("<I", zlib.crc32(head)) + draw(st.binary(max_size=60))
    elif choice == "random":
        buf = bytearray(draw(st.binary(max_size=200)))
    return bytes(buf)


@given(buf=wal_buffers(), data=st.data())
def test_twins_decode_identically(core_twins, buf, data):
    py, cy = core_twins
    kind = data.draw(buffer_kinds, label="kind")
    offset = data.draw(st.one_of(st.just(0), st.integers(-2, len(buf) + 2)), label="offset")
    limit = data.draw(st.one_of(st.just(py.DEFAULT_MAX_RECORD_SIZE), st.integers(0, 70),
                                st.just(2**32 - 1)), label="max_record_size")
    a = outcome(py.decode_records, kind(buf), offset, limit)
    b = outcome(cy.decode_records, kind(buf), offset, limit)
    note(f"python: {a!r}")
    note(f"cython: {b!r}")
    if a[0] == "ok" and b[0] == "ok":
        (ra, ea, sa, why_a), (rb, eb, sb, why_b) = a[1], b[1]
        # Equal records, end and status; the reason is free text but present iff not clean.
        assert (ra, ea, sa) == (rb, eb, sb)
        assert (why_a is None) == (why_b is None)
        assert why_b is None or str(eb) in why_b
    else:
        assert a == b


@given(header=st.one_of(
    st.binary(max_size=20),
    st.builds(lambda b, i, x: (b[:i] + bytes([b[i] ^ x]) + b[i + 1:]) if b else b,
              st.just(bytes.fromhex("465241465457414c0100000068870c8e")),
              st.integers(0, 15), st.integers(1, 255)),
    st.tuples(st.binary(min_size=8, max_size=8), st.integers(0, 2**32 - 1)).map(
        lambda t: t[0] + struct.pack("<I", t[1]) +
        struct.pack("<I", zlib.crc32(t[0] + struct.pack("<I", t[1])))),
))
def test_twins_check_segment_headers_identically(core_twins, header):
    py, cy = core_twins
    same_outcome(py, cy, "decode_segment_header", header)


@given(items=st.lists(st.one_of(st.binary(max_size=50), st.sampled_from(BAD_PAYLOADS)),
                          max_size=6))
def test_twins_encode_frames_identically(core_twins, items):
    py, cy = core_twins
    for p in items:
        same_outcome(py, cy, "encode_frame", p)
    same_outcome(py, cy, "encode_frames", items)


@given(stream=st.binary(max_size=300), limit=st.one_of(st.integers(0, 60),
       st.just(2**32 - 1), st.integers(-3, 2**32 + 3)), data=st.data())
def test_twins_decode_frames_identically(core_twins, stream, limit, data):
    py, cy = core_twins
    a = outcome(py.FrameDecoder, limit)
    b = outcome(cy.FrameDecoder, limit)
    assert (a[0], a[1] if a[0] == "raised" else None) == (
        b[0], b[1] if b[0] == "raised" else None)
    if a[0] == "raised":
        return
    dec_py, dec_cy = a[1], b[1]
    assert dec_py.max_frame_size == dec_cy.max_frame_size
    for chunk in data.draw(chunked(stream), label="chunks"):
        assert outcome(dec_py.feed, chunk) == outcome(dec_cy.feed, chunk)
        assert dec_py.pending == dec_cy.pending


quorum_ints = st.one_of(st.integers(0, 20), st.integers(-3, 2**64), st.sampled_from(
    [-1, -(2**63), -(2**64), MAX, 2**63, 2**64]))


@given(incoming=st.lists(quorum_ints, max_size=9), outgoing=st.lists(quorum_ints, max_size=9),
       voters=st.frozensets(st.integers(0, 12), max_size=9),
       outgoing_voters=st.frozensets(st.integers(0, 12), max_size=9),
       votes=st.dictionaries(st.integers(0, 14), st.booleans()), n=st.integers(-2, 20))
def test_twins_agree_on_quorums(core_twins, incoming, outgoing, voters, outgoing_voters, votes,
                                n):
    py, cy = core_twins
    same_outcome(py, cy, "quorum_size", n)
    same_outcome(py, cy, "committed_index", incoming)
    same_outcome(py, cy, "joint_committed_index", incoming, outgoing)
    same_outcome(py, cy, "vote_result", voters, votes)
    same_outcome(py, cy, "joint_vote_result", voters, outgoing_voters, votes)


def observe(ring):
    return (ring.offset, ring.offset_term, len(ring), ring.first_index, ring.last_index,
            ring.last_term, ring.nbytes, ring.capacity,
            outcome(ring.slice, ring.first_index, ring.last_index + 1))


ring_ops = st.sampled_from(["append", "extend", "extend_term", "truncate_from", "compact",
                            "reset", "term", "payload", "entry", "slice"])


@given(start=ring_starts, data=st.data())
def test_twins_logring_identical_under_random_operations(core_twins, start, data):
    """Wider inputs than the model machine: arbitrary ints and several faults per batch."""
    py, cy = core_twins
    rings = py.LogRing(*start), cy.LogRing(*start)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        op = data.draw(ring_ops, label="op")
        last, lo, hi = rings[0].last_term, rings[0].offset - 2, rings[0].last_index + 2
        index = st.one_of(st.integers(lo, hi), wide_ints)
        if op == "append":
            args = (data.draw(st.one_of(next_term(last), wide_ints)), data.draw(any_payload))
        elif op == "extend":
            args = (data.draw(st.lists(st.tuples(st.one_of(next_term(last), wide_ints),
                                                 any_payload), max_size=20)),)
        elif op == "extend_term":
            args = (data.draw(st.one_of(next_term(last), wide_ints)),
                    data.draw(st.lists(any_payload, max_size=20)))
        elif op == "reset":
            args = (data.draw(wide_ints), data.draw(wide_ints))
        elif op == "slice":
            args = (data.draw(index), data.draw(index),
                    data.draw(st.one_of(st.none(), st.integers(0, 50))))
        else:
            args = (data.draw(index),)
        a, b = (outcome(getattr(r, op), *args) for r in rings)
        assert a == b, f"{op}{args!r}: python {a!r}, cython {b!r}"
        assert observe(rings[0]) == observe(rings[1]), f"after {op}{args!r}"
