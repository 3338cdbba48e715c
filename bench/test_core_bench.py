"""Benchmarks of every core operation, once per implementation (``core_impl``: "python" is
fastraft._core_py, "cython" the compiled fastraft._core) and, for the quorum functions, per
voter count (1, 3, 5, 7, 9, as etcd's quorum/bench_test.go).

Run: ``pytest bench/ --benchmark-only``. Each case sets ``benchmark.group`` to its operation,
so the report puts the two implementations of one operation side by side. Times are per call;
for the batched operations a call is the whole batch (1,000 entries, records or frames, or one
64 KiB slice).
These are figures, never assertions on speed: the asserts below only check that each case
does the work it claims to (the same result in both implementations).

For ratios measured fairly in one process see bench/core_speedup.py.
"""

from __future__ import annotations

import random

import pytest

BATCH = 1000
VOTERS = [1, 3, 5, 7, 9]
SEED = 20240611  # fixed seed of the random match indexes; printed in each case's extra_info

# --------------------------------------------------------------------------------------------
# LogRing
# --------------------------------------------------------------------------------------------

APPEND_ROUNDS = 100
APPEND_ITERATIONS = 1000
APPEND_WARMUP = 5


def test_ring_append(benchmark, core_impl, payloads):
    """One append, amortised over 1,000 calls per round into a ring pre-sized for the whole
    run (so no doubling is timed; extend_term below includes growth)."""
    benchmark.group = "ring.append (1 entry)"
    total = (APPEND_ROUNDS + APPEND_WARMUP) * APPEND_ITERATIONS
    ring = core_impl.LogRing(capacity=total + 16)  # pedantic makes one extra call
    capacity = ring.capacity
    benchmark.pedantic(ring.append, args=(1, payloads[0]), rounds=APPEND_ROUNDS,
                       iterations=APPEND_ITERATIONS, warmup_rounds=APPEND_WARMUP)
    assert ring.capacity == capacity  # (--benchmark-disable makes a single call)


def test_ring_extend_term(benchmark, core_impl, payloads):
    """extend_term of 1,000 payloads into a fresh ring (growth 16 -> 1,024 included)."""
    benchmark.group = "ring.extend_term (1,000 entries, fresh ring)"

    def run(ring):
        ring.extend_term(1, payloads)
        return ring

    ring = benchmark.pedantic(run, setup=lambda: ((core_impl.LogRing(),), {}),
                              rounds=200, warmup_rounds=5)
    assert len(ring) == BATCH


def test_ring_extend(benchmark, core_impl, payloads):
    """extend with 1,000 (term, payload) pairs into a fresh ring."""
    benchmark.group = "ring.extend (1,000 pairs, fresh ring)"
    pairs = [(1 + i // 100, p) for i, p in enumerate(payloads)]

    def run(ring):
        ring.extend(pairs)
        return ring

    ring = benchmark.pedantic(run, setup=lambda: ((core_impl.LogRing(),), {}),
                              rounds=200, warmup_rounds=5)
    assert len(ring) == BATCH and ring.last_term == pairs[-1][0]


def _lookup_index(ring):
    return ring.offset + len(ring) // 2


def test_ring_term(benchmark, core_impl, wrapped_ring):
    benchmark.group = "ring.term(index)"
    ring = wrapped_ring(core_impl)
    assert benchmark(ring.term, _lookup_index(ring)) >= 1


def test_ring_payload(benchmark, core_impl, wrapped_ring):
    benchmark.group = "ring.payload(index)"
    ring = wrapped_ring(core_impl)
    assert len(benchmark(ring.payload, _lookup_index(ring))) == 100


def test_ring_entry(benchmark, core_impl, wrapped_ring):
    benchmark.group = "ring.entry(index)"
    ring = wrapped_ring(core_impl)
    term, payload = benchmark(ring.entry, _lookup_index(ring))
    assert term >= 1 and len(payload) == 100


def test_ring_slice_64k(benchmark, core_impl, wrapped_ring):
    """A replication batch: slice(lo, lo + 1000, max_bytes=65536) over 100-byte payloads
    gives 655 entries. lo = 16,000 makes the batch cross the wrap of the buffer."""
    benchmark.group = "ring.slice (64 KiB batch, 655 x 100 B)"
    ring = wrapped_ring(core_impl)
    out = benchmark(ring.slice, 16_000, 17_000, 65536)
    assert len(out) == 655 and sum(len(p) for _, p in out) == 65_500


def test_ring_truncate_from(benchmark, core_impl, payloads):
    """Drop a conflicting suffix of 100 entries from a ring of 1,000 (no shrink)."""
    benchmark.group = "ring.truncate_from (100 of 1,000)"

    def setup():
        ring = core_impl.LogRing()
        ring.extend_term(1, payloads)
        return (ring,), {}

    def run(ring):
        return ring.truncate_from(901)

    assert benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5) == 100


def test_ring_compact(benchmark, core_impl, payloads):
    """Release 900 of 1,000 entries after a snapshot; includes the shrink from 1,024 to 256
    slots (the ring halves while it is at most a quarter full)."""
    benchmark.group = "ring.compact (900 of 1,000)"

    def setup():
        ring = core_impl.LogRing()
        ring.extend_term(1, payloads)
        return (ring,), {}

    def run(ring):
        ring.compact(900)
        return ring

    ring = benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5)
    assert (len(ring), ring.offset, ring.capacity) == (100, 900, 256)


# --------------------------------------------------------------------------------------------
# Quorum arithmetic
# --------------------------------------------------------------------------------------------


def _matches(n, salt=0):
    rng = random.Random(SEED + 100 * salt + n)
    return [rng.randrange(1, 1_000_000) for _ in range(n)]


def _votes(voters):
    """Every voter but the last has voted; two of every three granted."""
    return {v: i % 3 != 2 for i, v in enumerate(voters[:-1])}


@pytest.mark.parametrize("voters", VOTERS)
def test_committed_index(benchmark, core_impl, voters):
    benchmark.group = f"committed_index voters={voters}"
    benchmark.extra_info["seed"] = SEED
    matches = _matches(voters)
    assert benchmark(core_impl.committed_index, matches) == sorted(matches)[(voters - 1) // 2]


@pytest.mark.parametrize("voters", VOTERS)
def test_joint_committed_index(benchmark, core_impl, voters):
    benchmark.group = f"joint_committed_index voters={voters}+{voters}"
    benchmark.extra_info["seed"] = SEED
    incoming, outgoing = _matches(voters), _matches(voters, salt=1)
    expect = min(sorted(incoming)[(voters - 1) // 2], sorted(outgoing)[(voters - 1) // 2])
    assert benchmark(core_impl.joint_committed_index, incoming, outgoing) == expect


@pytest.mark.parametrize("voters", VOTERS)
def test_vote_result(benchmark, core_impl, voters):
    benchmark.group = f"vote_result voters={voters}"
    ids = list(range(1, voters + 1))
    votes = _votes(ids)
    result = benchmark(core_impl.vote_result, ids, votes)
    assert result in (core_impl.VOTE_PENDING, core_impl.VOTE_WON, core_impl.VOTE_LOST)


@pytest.mark.parametrize("voters", VOTERS)
def test_joint_vote_result(benchmark, core_impl, voters):
    """Incoming ids 1..n, outgoing ids 2..n+1 (a one-voter replacement)."""
    benchmark.group = f"joint_vote_result voters={voters}+{voters}"
    incoming = list(range(1, voters + 1))
    outgoing = list(range(2, voters + 2))
    votes = _votes(list(range(1, voters + 2)))
    result = benchmark(core_impl.joint_vote_result, incoming, outgoing, votes)
    assert result in (core_impl.VOTE_PENDING, core_impl.VOTE_WON, core_impl.VOTE_LOST)


# --------------------------------------------------------------------------------------------
# WAL record codec
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(payloads):
    """1,000 entry records (type 1) of 100-byte payloads, indexes 1_000_001.., term 7."""
    return [(1, 1_000_001 + i, 7, p) for i, p in enumerate(payloads)]


def test_encode_record(benchmark, core_impl, payloads):
    benchmark.group = "encode_record (1 x 100 B)"
    out = benchmark(core_impl.encode_record, 1, 1_000_001, 7, payloads[0])
    assert len(out) == core_impl.RECORD_HEADER_SIZE + 100


def test_encode_records(benchmark, core_impl, records):
    benchmark.group = "encode_records (1,000 x 100 B)"
    out = benchmark(core_impl.encode_records, records)
    benchmark.extra_info.update(payload_bytes=100 * BATCH, encoded_bytes=len(out))
    assert len(out) == BATCH * (core_impl.RECORD_HEADER_SIZE + 100)


def test_decode_records(benchmark, core_impl, records):
    benchmark.group = "decode_records (1,000 x 100 B)"
    buf = core_impl.encode_records(records)
    benchmark.extra_info.update(payload_bytes=100 * BATCH, encoded_bytes=len(buf))
    out, end, status, reason = benchmark(core_impl.decode_records, buf)
    assert (len(out), end, status, reason) == (BATCH, len(buf), core_impl.WAL_CLEAN, None)
    assert out[-1] == records[-1]


# --------------------------------------------------------------------------------------------
# Frame codec
# --------------------------------------------------------------------------------------------


def test_encode_frames(benchmark, core_impl, payloads):
    benchmark.group = "encode_frames (1,000 x 100 B)"
    out = benchmark(core_impl.encode_frames, payloads)
    assert len(out) == BATCH * (core_impl.FRAME_HEADER_SIZE + 100)


def test_frame_decoder_feed_many(benchmark, core_impl, payloads):
    """One feed of a buffer holding 1,000 complete 100-byte frames (decoder reused: each
    feed leaves nothing pending)."""
    benchmark.group = "FrameDecoder.feed (1,000 small frames)"
    buf = core_impl.encode_frames(payloads)
    dec = core_impl.FrameDecoder()
    frames = benchmark(dec.feed, buf)
    assert frames == payloads and dec.pending == 0


def test_frame_decoder_feed_split(benchmark, core_impl):
    """One 64 KiB frame arriving in two reads split in the middle: two feeds, the first
    buffers, the second completes the frame."""
    benchmark.group = "FrameDecoder.feed (one 64 KiB frame in 2 parts)"
    payload = bytes(range(256)) * 256
    wire = core_impl.encode_frames([payload])
    half = len(wire) // 2
    first, second = wire[:half], wire[half:]
    dec = core_impl.FrameDecoder()
    feed = dec.feed

    def run():
        feed(first)
        return feed(second)

    assert benchmark(run) == [payload] and dec.pending == 0
