#!/usr/bin/env python
"""Speed-up of the Cython core (fastraft._core) over its pure-Python twin (fastraft._core_py),
both measured in the same run.

    python bench/core_speedup.py [--quick] [--json-only] [--only TEXT ...]

stdout gets JSON lines only (one object per line); a human-readable table and progress go to
stderr unless --json-only. The lines, in order:

    {"meta": {...}}                                 machine, settings, loop overhead
    {"op": ..., "python_ns": ..., "cython_ns": ..., "speedup": ...}     one per operation
    {"metric": "wal_encode" | "wal_decode", "impl": ..., "payload_MBps": ..., ...}
    {"metric": "ring_memory", "impl": ..., "bytes_per_entry": ..., ...}
    {"target": ..., "met": true | false | null, ...}                    one per target

How the times are taken: each (operation, implementation) gets its own loop count, chosen so
one sample lasts about --sample-ms; then --repeats rounds each take one sample of every
operation in both implementations, the order of the two flipping from one operation and round
to the next, so slow phases of a shared, noisy machine hit both alike. The figure is the
minimum over the rounds (timeit's advice); the median is shown next to it. The garbage
collector is off while timing (as in timeit). Times are per call, or per batch for batched
operations ("unit"), and include the loop that calls the function from Python (about
"loop_overhead_ns" in the meta line: the price any Python caller pays). Operations that change
their object (append, extend, truncate_from, compact) get fresh objects built before the clock
starts. ``speedup = python_ns / cython_ns``; cython figures are null when the extension is not
built. Memory is measured in fresh subprocesses (see ``probe_memory``).

These are figures, not tests: the exit status does not depend on the targets.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import timeit
import tracemalloc
from time import perf_counter

MODULES = {"python": "fastraft._core_py", "cython": "fastraft._core"}
IMPLS = tuple(MODULES)

PAYLOAD_SIZE = 100
BATCH = 1000
VOTERS = (1, 3, 5, 7, 9)
SEED = 20240611  # fixed seed of the random match indexes
MB = 1e6  # throughput is in MB of 10**6 bytes

MEMORY_ENTRIES = 1_000_000

TARGET_BATCHED = 5.0
TARGET_SINGLE = 2.0
TARGET_WAL_MBPS = 300.0
TARGET_MEMORY = 64.0


def load(impl):
    """(module, None) or (None, why it is missing)."""
    try:
        return importlib.import_module(MODULES[impl]), None
    except ImportError as exc:
        return None, f"{MODULES[impl]} is not built ({exc})"


def sig(x, digits=3):
    """Round to ``digits`` significant digits (None stays None)."""
    if x is None:
        return None
    if x == 0:
        return 0
    r = round(x, max(0, digits - 1 - int(f"{abs(x):e}".split("e")[1])))
    return int(r) if r == int(r) and abs(r) >= 10 ** (digits - 1) else r


# --------------------------------------------------------------------------------------------
# Data shared by both implementations
# --------------------------------------------------------------------------------------------

PAYLOADS = [(b"%010d" % i) * (PAYLOAD_SIZE // 10) for i in range(BATCH)]
PAIRS = [(1 + i // 100, p) for i, p in enumerate(PAYLOADS)]
RECORDS = [(1, 1_000_001 + i, 7, p) for i, p in enumerate(PAYLOADS)]
BIG_FRAME = bytes(range(256)) * 256  # one 64 KiB frame payload
BIG_RECORD = [(1, 1_000_001, 7, BIG_FRAME)]  # one WAL record with a 64 KiB payload
WAL_BATCH = 256  # entries per append in storage_bench.py's largest batch
ENTRIES = [(7, p) for p in PAYLOADS[:WAL_BATCH]]
READ_SIZE = 4096  # bytes per read in the chunked decoder case


def wrapped_ring(mod):
    """12,000 live entries after index 7,000 in 16,384 slots, wrapping between indexes 16,384
    and 16,385 (the same shape as bench/conftest.py's ``wrapped_ring``)."""
    ring = mod.LogRing()

    def fill(count):
        while count:
            chunk = min(count, BATCH)
            ring.extend_term(ring.last_term + 1, PAYLOADS[:chunk])
            count -= chunk

    fill(12_000)
    ring.compact(7_000)
    fill(7_000)
    assert (len(ring), ring.offset, ring.capacity) == (12_000, 7_000, 16_384)
    return ring


def filled_ring(mod):
    ring = mod.LogRing()
    ring.extend_term(1, PAYLOADS)
    return ring


# --------------------------------------------------------------------------------------------
# Timers: each case builds, per implementation, ``timer(number) -> seconds for number calls``
# --------------------------------------------------------------------------------------------


def stmt_timer(stmt, **env):
    """timeit.Timer over ``stmt`` with ``env`` bound to local names (fast lookups); timeit
    switches the garbage collector off while timing."""
    g = {f"_env_{k}": v for k, v in env.items()}
    setup = "; ".join(f"{k} = _env_{k}" for k in env) or "pass"
    return timeit.Timer(stmt, setup, globals=g).timeit


def call_timer(fn, *args):
    names = [f"a{i}" for i in range(len(args))]
    return stmt_timer(f"fn({', '.join(names)})", fn=fn, **dict(zip(names, args)))


def no_gc(timer):
    def timed(number):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return timer(number)
        finally:
            if enabled:
                gc.enable()

    return timed


class Case:
    def __init__(self, op, unit, what, prepare, group=None, max_number=None):
        self.op = op
        self.unit = unit  # "ns/call" or "ns/batch"
        self.what = what
        self.prepare = prepare  # prepare(mod) -> timer
        self.group = group  # "batched" / "single" (targets) or None
        self.max_number = max_number  # cap on calls per sample (fresh objects cost memory)


def prep_append(mod):
    payload = PAYLOADS[0]

    def timer(n):
        ring = mod.LogRing(capacity=n)  # pre-sized: no doubling timed
        append = ring.append
        it = [None] * n
        t0 = perf_counter()
        for _ in it:
            append(1, payload)
        return perf_counter() - t0

    return no_gc(timer)


def prep_extend_term(mod):
    payloads = PAYLOADS
    ring0 = mod.LogRing()
    ring0.extend_term(1, payloads)
    assert len(ring0) == BATCH

    def timer(n):
        rings = [mod.LogRing() for _ in range(n)]
        t0 = perf_counter()
        for r in rings:
            r.extend_term(1, payloads)
        return perf_counter() - t0

    return no_gc(timer)


def prep_extend(mod):
    pairs = PAIRS

    def timer(n):
        rings = [mod.LogRing() for _ in range(n)]
        t0 = perf_counter()
        for r in rings:
            r.extend(pairs)
        return perf_counter() - t0

    return no_gc(timer)


def prep_lookup(method):
    def prepare(mod):
        ring = wrapped_ring(mod)
        index = ring.offset + len(ring) // 2
        getattr(ring, method)(index)
        return call_timer(getattr(ring, method), index)

    return prepare


def prep_slice(mod):
    ring = wrapped_ring(mod)
    out = ring.slice(16_000, 17_000, 65536)
    assert len(out) == 655
    return call_timer(ring.slice, 16_000, 17_000, 65536)


def prep_truncate(mod):
    def timer(n):
        rings = [filled_ring(mod) for _ in range(n)]
        t0 = perf_counter()
        for r in rings:
            r.truncate_from(901)
        return perf_counter() - t0

    return no_gc(timer)


def prep_compact(mod):
    def timer(n):
        rings = [filled_ring(mod) for _ in range(n)]
        t0 = perf_counter()
        for r in rings:
            r.compact(900)
        return perf_counter() - t0

    return no_gc(timer)


def matches(n, salt=0):
    rng = random.Random(SEED + 100 * salt + n)
    return [rng.randrange(1, 1_000_000) for _ in range(n)]


def votes_for(ids):
    """Every voter but the last has voted; two of every three granted."""
    return {v: i % 3 != 2 for i, v in enumerate(ids[:-1])}


def prep_committed(n):
    return lambda mod: call_timer(mod.committed_index, matches(n))


def prep_joint_committed(n):
    return lambda mod: call_timer(mod.joint_committed_index, matches(n), matches(n, 1))


def prep_vote(n):
    ids = list(range(1, n + 1))
    return lambda mod: call_timer(mod.vote_result, ids, votes_for(ids))


def prep_joint_vote(n):
    incoming, outgoing = list(range(1, n + 1)), list(range(2, n + 2))
    votes = votes_for(list(range(1, n + 2)))
    return lambda mod: call_timer(mod.joint_vote_result, incoming, outgoing, votes)


def prep_encode_record(mod):
    return call_timer(mod.encode_record, 1, 1_000_001, 7, PAYLOADS[0])


def prep_encode_records(mod):
    assert len(mod.encode_records(RECORDS)) == BATCH * (mod.RECORD_HEADER_SIZE + PAYLOAD_SIZE)
    return call_timer(mod.encode_records, RECORDS)


def prep_decode_records(mod):
    buf = mod.encode_records(RECORDS)
    recs, end, status, _ = mod.decode_records(buf)
    assert len(recs) == BATCH and end == len(buf) and status == mod.WAL_CLEAN
    return call_timer(mod.decode_records, buf)


def prep_encode_entries(mod):
    buf = mod.encode_entries(1, 1_000_001, 7, ENTRIES)
    assert len(buf) == WAL_BATCH * (mod.RECORD_HEADER_SIZE + PAYLOAD_SIZE)
    return call_timer(mod.encode_entries, 1, 1_000_001, 7, ENTRIES)


def prep_encode_big_record(mod):
    assert mod.encode_records(BIG_RECORD) == mod.encode_record(*BIG_RECORD[0])
    return call_timer(mod.encode_record, *BIG_RECORD[0])


def prep_decode_big_record(mod):
    buf = mod.encode_records(BIG_RECORD)
    recs, end, status, _ = mod.decode_records(buf)
    assert recs == BIG_RECORD and end == len(buf) and status == mod.WAL_CLEAN
    return call_timer(mod.decode_records, buf)


def prep_encode_frames(mod):
    return call_timer(mod.encode_frames, PAYLOADS)


def prep_feed_many(mod):
    dec = mod.FrameDecoder()
    buf = mod.encode_frames(PAYLOADS)
    assert dec.feed(buf) == PAYLOADS and dec.pending == 0
    return call_timer(dec.feed, buf)


def prep_feed_split(mod):
    dec = mod.FrameDecoder()
    wire = mod.encode_frames([BIG_FRAME])
    first, second = wire[: len(wire) // 2], wire[len(wire) // 2:]
    assert dec.feed(first) == [] and dec.feed(second) == [BIG_FRAME]
    return stmt_timer("feed(a); feed(b)", feed=dec.feed, a=first, b=second)


def prep_feed_split_fresh(mod):
    wire = mod.encode_frames([BIG_FRAME])
    first, second = wire[: len(wire) // 2], wire[len(wire) // 2:]
    dec = mod.FrameDecoder()
    assert dec.feed(first) == [] and dec.feed(second) == [BIG_FRAME]
    return stmt_timer("d = new(); d.feed(a); d.feed(b)", new=mod.FrameDecoder, a=first,
                      b=second)


def prep_feed_chunked(mod):
    dec = mod.FrameDecoder()
    buf = mod.encode_frames(PAYLOADS)
    reads = [buf[i:i + READ_SIZE] for i in range(0, len(buf), READ_SIZE)]
    assert [f for r in reads for f in dec.feed(r)] == PAYLOADS and dec.pending == 0
    return stmt_timer("for r in reads: feed(r)", feed=dec.feed, reads=reads)


CASES = [
    Case("ring.append", "ns/call", "1 entry into a pre-sized ring", prep_append),
    Case("ring.extend_term", "ns/batch", "1,000 x 100 B payloads into a fresh ring",
         prep_extend_term, "batched", max_number=2000),
    Case("ring.extend", "ns/batch", "1,000 (term, payload) pairs into a fresh ring",
         prep_extend, "batched", max_number=2000),
    Case("ring.term", "ns/call", "term(index) in a 12,000-entry wrapped ring",
         prep_lookup("term"), "single"),
    Case("ring.payload", "ns/call", "payload(index)", prep_lookup("payload"), "single"),
    Case("ring.entry", "ns/call", "entry(index)", prep_lookup("entry"), "single"),
    Case("ring.slice_64KiB", "ns/batch",
         "slice(lo, lo+1000, max_bytes=65536) -> 655 x 100 B, across the wrap",
         prep_slice, "batched"),
    Case("ring.truncate_from", "ns/batch", "drop the last 100 of 1,000 entries",
         prep_truncate, max_number=2000),
    Case("ring.compact", "ns/batch", "release 900 of 1,000 entries (shrink 1,024 -> 256)",
         prep_compact, max_number=2000),
    *[Case(f"committed_index[voters={n}]", "ns/call", f"{n} match indexes",
           prep_committed(n)) for n in VOTERS],
    *[Case(f"joint_committed_index[voters={n}+{n}]", "ns/call", "two configurations",
           prep_joint_committed(n)) for n in VOTERS],
    *[Case(f"vote_result[voters={n}]", "ns/call", "votes dict, one voter silent",
           prep_vote(n)) for n in VOTERS],
    *[Case(f"joint_vote_result[voters={n}+{n}]", "ns/call", "two configurations",
           prep_joint_vote(n)) for n in VOTERS],
    Case("encode_record", "ns/call", "one record, 100 B payload", prep_encode_record),
    Case("encode_records", "ns/batch", "1,000 records of 100 B", prep_encode_records,
         "batched"),
    Case("decode_records", "ns/batch", "1,000 records of 100 B (132,000 B buffer)",
         prep_decode_records, "batched"),
    Case(f"encode_entries[{WAL_BATCH}]", "ns/batch",
         f"{WAL_BATCH} (term, 100 B payload) entries: the WAL's append of one batch",
         prep_encode_entries),
    Case("encode_record[64KiB]", "ns/call", "one record, 64 KiB payload (CRC-bound)",
         prep_encode_big_record),
    Case("decode_records[64KiB]", "ns/call", "one record, 64 KiB payload (CRC-bound)",
         prep_decode_big_record),
    Case("encode_frames", "ns/batch", "1,000 frames of 100 B", prep_encode_frames),
    Case("FrameDecoder.feed_many", "ns/batch", "one buffer of 1,000 frames of 100 B",
         prep_feed_many),
    Case("FrameDecoder.feed_split", "ns/batch", "one 64 KiB frame fed in 2 halves",
         prep_feed_split),
    Case("FrameDecoder.feed_split_fresh", "ns/batch",
         "a fresh decoder, then one 64 KiB frame fed in 2 halves", prep_feed_split_fresh),
    Case("FrameDecoder.feed_chunked", "ns/batch",
         f"1,000 frames of 100 B in {READ_SIZE:,} B reads (most end inside a frame)",
         prep_feed_chunked),
]


def calibrate(timer, target, max_number=None):
    """timeit.autorange's 1, 2, 5, 10, ... up to a sample of at least ``target`` seconds."""
    number = 1
    while True:
        for m in (1, 2, 5):
            n = number * m
            if max_number and n >= max_number:
                return max_number
            if timer(n) >= target:
                return n
        number *= 10


def measure(mods, cases, repeats, target, log):
    timers, numbers = {}, {}
    for case in cases:
        for impl, mod in mods.items():
            timer = case.prepare(mod)
            timers[case.op, impl] = timer
            numbers[case.op, impl] = calibrate(timer, target, case.max_number)
    samples = {key: [] for key in timers}
    for r in range(repeats):
        log(f"round {r + 1}/{repeats}")
        for k, case in enumerate(cases):
            order = list(mods) if (r + k) % 2 == 0 else list(mods)[::-1]
            for impl in order:
                n = numbers[case.op, impl]
                samples[case.op, impl].append(timers[case.op, impl](n) / n * 1e9)
    return samples, numbers


# --------------------------------------------------------------------------------------------
# Memory per retained entry (run in a fresh interpreter per figure)
# --------------------------------------------------------------------------------------------


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def probe_memory(impl, mode, variant):
    """Child process: build a LogRing of MEMORY_ENTRIES entries that all reference ONE shared
    100-byte payload, so the payload's own memory is not counted, and print the growth of
    RSS (mode "rss") or of tracemalloc's traced memory (mode "tracemalloc"; run apart from
    the RSS figure because tracing costs memory itself). variant "shared_term": one term
    object for every entry (extend_term); "distinct_terms": every entry's term is its own
    int object above 256 (as terms decoded one by one are), which costs the twin 32 B more."""
    mod, reason = load(impl)
    if mod is None:
        return {"error": reason}
    n = MEMORY_ENTRIES
    payload = b"x" * PAYLOAD_SIZE
    chunk = [payload] * BATCH
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
    base = rss_bytes() if mode == "rss" else tracemalloc.get_traced_memory()[0]
    ring = mod.LogRing()
    if variant == "shared_term":
        for _ in range(n // BATCH):
            ring.extend_term(1, chunk)
    else:
        append = ring.append
        for i in range(n):
            append(1000 + (i >> 10), payload)
    gc.collect()
    if mode == "rss":
        delta = rss_bytes() - base
        peak = None
    else:
        cur, peak = tracemalloc.get_traced_memory()
        delta = cur - base
        peak -= base
    assert len(ring) == n and ring.nbytes == n * PAYLOAD_SIZE
    return {"delta": delta, "peak": peak, "len": len(ring), "capacity": ring.capacity}


def run_probe(impl, mode, variant):
    cmd = [sys.executable, os.path.abspath(__file__), "--probe-memory", impl, mode, variant]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


REASONING = {
    "python": "two Python lists of `capacity` object pointers (terms, payloads): 16 B per "
              "slot; terms <= 256 are cached small ints and a batch from extend_term shares "
              "one term object, but a term int of its own (> 256) costs 32 B more per entry",
    "cython": "one PyMem_Malloc'ed C array of `capacity` 16-byte Slot structs (int64 term, "
              "PyObject* payload) per fastraft/_core.pyx: 16 B per slot; terms are C ints, "
              "so no per-entry objects. PyMem_Malloc is visible to tracemalloc",
}


PROBES = [(mode, variant) for variant in ("shared_term", "distinct_terms")
          for mode in ("rss", "tracemalloc")]


def run_probes(impls, quick):
    """All memory probes, as many at a time as there are CPUs (each is its own process, and
    the timing is over by now). --quick skips the tracemalloc run with distinct terms, the
    slowest (tracing a million int objects); its figure is then null."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(impl, mode, variant) for impl in impls for mode, variant in PROBES
            if not (quick and (mode, variant) == ("tracemalloc", "distinct_terms"))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda job: run_probe(*job), jobs)
        return dict(zip(jobs, results))


def memory_figures(impl, available, all_probes):
    """One ``ring_memory`` line for ``impl``."""
    line = {"metric": "ring_memory", "impl": impl, "entries": MEMORY_ENTRIES,
            "measured_as": "growth of process RSS (/proc/self/statm) and of tracemalloc's "
                           "traced memory while a fresh interpreter builds a LogRing of "
                           f"{MEMORY_ENTRIES:,} entries all referencing one shared 100 B "
                           "payload (payload memory excluded); bytes_per_entry = "
                           "max(rss, tracemalloc) / entries",
            "reasoning": REASONING[impl]}
    header = sys.getsizeof(b"x" * PAYLOAD_SIZE) - PAYLOAD_SIZE
    allocated = -(-(PAYLOAD_SIZE + header) // 16) * 16 - PAYLOAD_SIZE  # pymalloc: 16 B steps
    line["own_bytes_object_header"] = header
    line["own_bytes_object_header_allocated"] = allocated
    if not available:
        line.update(bytes_per_entry=None, reason=f"{MODULES[impl]} is not built")
        return line
    probes = {(mode, variant): all_probes.get((impl, mode, variant), {"skipped": True})
              for mode, variant in PROBES}
    errors = [p["error"] for p in probes.values() if "error" in p]
    if errors:
        line.update(bytes_per_entry=None, reason="; ".join(errors))
        return line

    def probe_per_entry(mode, variant):
        p = probes[mode, variant]
        return None if "skipped" in p else sig(p["delta"] / p["len"])

    rss = probes["rss", "shared_term"]
    tm = probes["tracemalloc", "shared_term"]
    n, cap = rss["len"], rss["capacity"]
    per_entry = max(rss["delta"], tm["delta"]) / n
    line.update(
        capacity=cap,
        capacity_per_len=sig(cap / n, 4),
        rss_bytes_per_entry=sig(rss["delta"] / n),
        tracemalloc_bytes_per_entry=sig(tm["delta"] / n),
        tracemalloc_bytes_per_slot=sig(tm["delta"] / cap),
        tracemalloc_peak_bytes_per_entry=sig(tm["peak"] / n),
        bytes_per_entry=sig(per_entry),
        worst_case_bytes_per_entry_after_doubling=sig(2 * tm["delta"] / cap),
        distinct_terms_rss_bytes_per_entry=probe_per_entry("rss", "distinct_terms"),
        distinct_terms_tracemalloc_bytes_per_entry=probe_per_entry("tracemalloc",
                                                                   "distinct_terms"),
        with_own_bytes_object_bytes_per_entry=sig(per_entry + allocated),
        note="each entry holding its own bytes object adds own_bytes_object_header "
             "(sys.getsizeof(b'x'*100) - 100) bytes, or own_bytes_object_header_allocated "
             "after pymalloc's 16-byte rounding; right after a doubling the ring is only half "
             "full, hence worst_case_bytes_per_entry_after_doubling",
    )
    return line


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer, shorter samples (about half a minute in all)")
    ap.add_argument("--json-only", action="store_true",
                    help="print only the JSON lines (no table or progress on stderr)")
    ap.add_argument("--repeats", type=int, help="rounds of samples (default 15, quick 5)")
    ap.add_argument("--sample-ms", type=float,
                    help="target length of one sample in ms (default 20, quick 5)")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="time only the operations whose name contains TEXT (repeatable); "
                         "skips the memory probes and the targets")
    ap.add_argument("--probe-memory", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory)))
        return 0

    def log(msg):
        if not args.json_only:
            print(msg, file=sys.stderr, flush=True)

    def emit(obj):
        print(json.dumps(obj), flush=True)

    repeats = args.repeats or (5 if args.quick else 15)
    target = (args.sample_ms or (5 if args.quick else 20)) / 1000

    mods, missing = {}, {}
    for impl in IMPLS:
        mod, reason = load(impl)
        if mod is None:
            missing[impl] = reason
            log(f"{impl}: {reason}; its figures are null")
        else:
            mods[impl] = mod

    loop_ns = min(timeit.Timer("pass").repeat(5, 1_000_000)) / 1_000_000 * 1e9
    emit({"meta": {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "quick": args.quick, "repeats": repeats,
        "sample_ms": target * 1000,
        "cython": getattr(mods.get("cython"), "__file__", None),
        "cython_missing_reason": missing.get("cython"),
        "stat": "min over repeats (median shown as *_median_ns)",
        "loop_overhead_ns": sig(loop_ns), "gc": "disabled while timing",
        "MB": "10**6 bytes"}})

    cases = [c for c in CASES if not args.only or any(t in c.op for t in args.only)]
    samples, numbers = measure(mods, cases, repeats, target, log)

    results = {}
    for case in cases:
        row = {"op": case.op}
        for impl in IMPLS:
            s = samples.get((case.op, impl))
            row[f"{impl}_ns"] = sig(min(s)) if s else None
        py, cy = row["python_ns"], row["cython_ns"]
        row["speedup"] = sig(py / cy) if py and cy else None
        row["unit"] = case.unit
        row["what"] = case.what
        for impl in IMPLS:
            s = samples.get((case.op, impl))
            row[f"{impl}_median_ns"] = sig(statistics.median(s)) if s else None
            row[f"{impl}_calls_per_sample"] = numbers.get((case.op, impl))
        results[case.op] = row
        emit(row)

    if args.only:
        if not args.json_only:
            table(results, None, None, [])
        return 0

    wal = {}
    for metric, op in (("wal_encode", "encode_records"), ("wal_decode", "decode_records")):
        for impl in IMPLS:
            ns = results[op][f"{impl}_ns"]
            payload = sig(BATCH * PAYLOAD_SIZE / (ns * 1e-9) / MB) if ns else None
            encoded = sig(BATCH * (PAYLOAD_SIZE + 32) / (ns * 1e-9) / MB) if ns else None
            wal[metric, impl] = payload
            line = {"metric": metric, "impl": impl, "payload_MBps": payload,
                    "encoded_MBps": encoded, "record_payload_bytes": PAYLOAD_SIZE,
                    "records_per_batch": BATCH,
                    "note": f"from the {op} figure; payload_MBps counts payload bytes only, "
                            "encoded_MBps counts the encoded records (32 B header + 100 B "
                            "payload = 132 B each); MB = 10**6 bytes"}
            if not ns:
                line["reason"] = missing.get(impl)
            emit(line)

    log("measuring memory per entry in subprocesses ...")
    probes = run_probes(list(mods), args.quick)
    memory = {}
    for impl in IMPLS:
        memory[impl] = memory_figures(impl, impl in mods, probes)
        emit(memory[impl])

    have_cython = "cython" in mods
    why_null = None if have_cython else missing.get("cython")

    def speed_target(name, group, need):
        ops = {c.op: results[c.op]["speedup"] for c in CASES if c.group == group}
        line = {"target": name, "threshold": need,
                "ops": {op: {"speedup": s, "met": None if s is None else s >= need}
                        for op, s in ops.items()}}
        line["met"] = all(s >= need for s in ops.values()) if have_cython else None
        if not have_cython:
            line["reason"] = why_null
        return line

    summary = [
        speed_target("batched ops >= 5x faster in Cython (extend_term / extend of 1,000 "
                     "entries, encode_records / decode_records of 1,000 x 100 B, 64 KiB "
                     "slice)", "batched", TARGET_BATCHED),
        speed_target("single lookups (term, payload, entry) >= 2x faster in Cython",
                     "single", TARGET_SINGLE),
    ]
    wal_line = {"target": "WAL encode and decode of 100-byte records >= 300 MB/s in Cython "
                          "(judged on payload MB/s; encoded MB/s is 1.32x that)",
                "threshold": TARGET_WAL_MBPS,
                "encode_payload_MBps": wal["wal_encode", "cython"],
                "decode_payload_MBps": wal["wal_decode", "cython"]}
    wal_line["met"] = (min(wal["wal_encode", "cython"], wal["wal_decode", "cython"])
                       >= TARGET_WAL_MBPS) if have_cython else None
    if not have_cython:
        wal_line["reason"] = why_null
    summary.append(wal_line)
    mem_line = {"target": "<= 64 bytes of LogRing memory per retained entry beyond the "
                          "payload (judged on the Cython ring; python shown)",
                "threshold": TARGET_MEMORY}
    for impl in IMPLS:
        m = memory[impl]
        mem_line[f"{impl}_bytes_per_entry"] = m.get("bytes_per_entry")
        mem_line[f"{impl}_with_own_bytes_object"] = m.get("with_own_bytes_object_bytes_per_entry")
    cy_mem = memory["cython"].get("bytes_per_entry")
    mem_line["met"] = None if cy_mem is None else cy_mem <= TARGET_MEMORY
    cy_own = memory["cython"].get("with_own_bytes_object_bytes_per_entry")
    mem_line["met_with_own_bytes_object"] = None if cy_own is None else cy_own <= TARGET_MEMORY
    if cy_mem is None:
        mem_line["reason"] = memory["cython"].get("reason")
    summary.append(mem_line)
    for line in summary:
        emit(line)

    if not args.json_only:
        table(results, wal, memory, summary)
    return 0


def table(results, wal, memory, summary):
    def fmt(x):
        return "-" if x is None else f"{x:,}"

    w = max(len(op) for op in results)
    out = [f"\n{'operation':<{w}}  {'unit':<8} {'python':>12} {'cython':>12} {'speedup':>8}"]
    for op, r in results.items():
        out.append(f"{op:<{w}}  {r['unit']:<8} {fmt(r['python_ns']):>12} "
                   f"{fmt(r['cython_ns']):>12} {fmt(r['speedup']):>8}")
    if wal is None:  # --only: operations alone
        print("\n".join(out), file=sys.stderr)
        return
    out.append("\nWAL payload MB/s (encode / decode): "
               + ", ".join(f"{impl} {fmt(wal['wal_encode', impl])} / "
                           f"{fmt(wal['wal_decode', impl])}" for impl in IMPLS))
    out.append("LogRing bytes per entry beyond the payload: "
               + ", ".join(f"{impl} {fmt(memory[impl].get('bytes_per_entry'))}"
                           for impl in IMPLS))
    for line in summary:
        met = {True: "MET", False: "NOT MET", None: "n/a"}[line["met"]]
        out.append(f"[{met}] {line['target']}")
    print("\n".join(out), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
