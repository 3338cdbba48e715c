"""Event-loop pause while a state-machine snapshot is taken: fork (copy-on-write) vs in process.

Place in the architecture: a benchmark script (bench/), outside the package. It drives
``fastraft.statemachine`` (KVStateMachine, snapshotter) and ``fastraft.storage.snapshot``
(SnapshotStore) the way the server will: a state built through committed PUT commands, then a
snapshot taken from inside a running event loop (uvloop when importable).

A ticker task measures the gap between consecutive wake-ups of ``await asyncio.sleep(0.001)``;
the longest gap while the snapshot is taken is the loop's longest pause. Reported for (a) the
fork snapshot, (a') the fork snapshot while the loop keeps applying ~20,000 writes/s, and (b)
the in-process snapshot: longest loop pause (ms), fork() call time, total time until the file
is durable, file size, and the time to restore the file into a fresh machine; plus the idle
loop's longest gap as a baseline.

    python bench/snapshot_pause.py                 # 1,000,000 keys (16-byte keys, 100-byte values)
    python bench/snapshot_pause.py --keys 100000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

from fastraft import codec
from fastraft.raft.messages import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.snapshotter import fork_available, take_snapshot, take_snapshot_sync
from fastraft.storage.snapshot import SnapshotStore


def build(n_keys: int) -> KVStateMachine:
    """A machine with ``n_keys`` keys (16 bytes) of 100-byte values, written through PUT
    commands of one session, applied in batches of 1,000 entries."""
    m = KVStateMachine()
    m.apply(1, codec.encode_command([codec.CMD_REGISTER, 1]))
    value = b"v" * 100
    index = 2
    seq = 1
    batch = []
    for i in range(n_keys):
        key = b"key-%012d" % ((i * 7919) % n_keys)      # 16 bytes, inserted out of order
        batch.append((1, codec.encode_command(
            [codec.CMD_PUT, 1 + i // 1000, 1, seq, seq, key, value])))
        seq += 1
        if len(batch) == 1000:
            m.apply_entries(index, batch)
            index += len(batch)
            batch = []
    if batch:
        m.apply_entries(index, batch)
    assert len(m.kv) == n_keys, (len(m.kv), n_keys)
    return m


async def measure(coro_fn) -> dict:
    """Run ``coro_fn()`` while a ticker measures the loop's wake-up gaps."""
    gaps = []
    stop = False

    async def ticker():
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)           # let the ticker settle
    gaps.clear()
    t0 = time.perf_counter()
    result = await coro_fn()
    total = time.perf_counter() - t0
    await asyncio.sleep(0.01)
    stop = True
    await task
    return {"result": result, "total_s": total,
            "max_pause_ms": max(gaps) * 1e3 if gaps else None, "ticks": len(gaps)}


def restore_time(store: SnapshotStore, path: str, machine: KVStateMachine) -> float:
    t0 = time.perf_counter()
    m2 = KVStateMachine.restore(store.read_chunks(path))
    dt = time.perf_counter() - t0
    assert m2.stats() == machine.stats(), (m2.stats(), machine.stats())
    return dt


async def under_load(m: KVStateMachine, store: SnapshotStore, term: int, n_keys: int) -> dict:
    """The fork snapshot while the loop keeps applying writes: 200 PUTs (overwrites of
    existing keys) every 10 ms, ~20,000 writes/s, until the child is done. The parent's
    writes fault in copies of the pages they touch (copy on write)."""
    stats: dict = {}
    at = m.applied_index
    meta = SnapshotMeta(at, term, frozenset({1, 2, 3}))
    value = b"w" * 100
    seq0 = m.sessions.get(1).floor + 1_000_000
    applied = 0

    async def forked():
        nonlocal applied
        task = asyncio.ensure_future(take_snapshot(m, store, meta, stats))
        await asyncio.sleep(0)                  # forked now
        while not task.done():
            first = m.applied_index + 1
            entries = []
            for j in range(200):
                seq = seq0 + applied + j
                key = b"key-%012d" % ((seq * 104729) % n_keys)
                entries.append((term, codec.encode_command(
                    [codec.CMD_PUT, m.clock, 1, seq, seq, key, value])))
            m.apply_entries(first, entries)
            applied += len(entries)
            await asyncio.sleep(0.01)
        return await task
    r = await measure(forked)
    path = r["result"]
    t0 = time.perf_counter()
    m2 = KVStateMachine.restore(store.read_chunks(path))
    restore_s = time.perf_counter() - t0
    assert m2.applied_index == at and len(m2.kv) == n_keys
    return {"max_pause_ms": r["max_pause_ms"], "fork_call_ms": stats["fork_s"] * 1e3,
            "durable_s": r["total_s"], "file_bytes": os.path.getsize(path),
            "restore_s": restore_s, "writes_applied_meanwhile": applied}


async def run(n_keys: int, directory: str) -> dict:
    out: dict = {"keys": n_keys}
    t0 = time.perf_counter()
    m = build(n_keys)
    out["build_s"] = time.perf_counter() - t0
    gc.collect()
    out["rss_mb_after_build"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = SnapshotStore(directory, keep=2)

    async def idle():
        await asyncio.sleep(0.3)
    out["idle"] = {"max_pause_ms": (await measure(idle))["max_pause_ms"]}

    term = 1
    if fork_available():
        stats: dict = {}
        meta = SnapshotMeta(m.applied_index, term, frozenset({1, 2, 3}))

        async def forked():
            return await take_snapshot(m, store, meta, stats)
        r = await measure(forked)
        path = r["result"]
        out["fork"] = {"max_pause_ms": r["max_pause_ms"], "fork_call_ms": stats["fork_s"] * 1e3,
                       "durable_s": r["total_s"], "file_bytes": os.path.getsize(path),
                       "restore_s": restore_time(store, path, m)}
    else:
        out["fork"] = None
    term += 1
    if fork_available():
        out["fork_under_load"] = await under_load(m, store, term, n_keys)
    term += 1
    meta = SnapshotMeta(m.applied_index, term, frozenset({1, 2, 3}))

    async def in_process():
        return take_snapshot_sync(m, store, meta)
    r = await measure(in_process)
    path = r["result"]
    out["in_process"] = {"max_pause_ms": r["max_pause_ms"], "fork_call_ms": None,
                         "durable_s": r["total_s"], "file_bytes": os.path.getsize(path),
                         "restore_s": restore_time(store, path, m)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="number of keys (1,000,000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--dir", default=None, help="directory for the snapshot files (a fresh "
                    "temporary directory by default, removed afterwards)")
    args = ap.parse_args(argv)
    try:
        import uvloop
        loop_name = f"uvloop {uvloop.__version__}"
        runner = uvloop.run if hasattr(uvloop, "run") else None
    except ImportError:
        uvloop = None
        loop_name = "asyncio"
        runner = None
    directory = args.dir or tempfile.mkdtemp(prefix="fastraft-snapbench-")
    try:
        coro = run(args.keys, directory)
        result = runner(coro) if runner is not None else asyncio.run(coro)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    result["meta"] = {"python": platform.python_version(), "loop": loop_name,
                      "cpus": os.cpu_count(), "platform": sys.platform}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.keys:,} keys (16-byte keys, 100-byte values); {loop_name}, Python "
          f"{platform.python_version()}; build {result['build_s']:.1f} s, max RSS "
          f"{result['rss_mb_after_build']:.0f} MB; idle loop max gap "
          f"{result['idle']['max_pause_ms']:.2f} ms")
    print(f"{'':16} {'max pause ms':>13} {'fork() ms':>10} {'durable s':>10} "
          f"{'file MB':>8} {'restore s':>10}")
    for name in ("fork", "fork_under_load", "in_process"):
        r = result.get(name)
        if r is None:
            print(f"{name:16} (fork not available)")
            continue
        fork_ms = f"{r['fork_call_ms']:.1f}" if r["fork_call_ms"] is not None else "-"
        print(f"{name:16} {r['max_pause_ms']:13.1f} {fork_ms:>10} {r['durable_s']:10.2f} "
              f"{r['file_bytes'] / 1e6:8.1f} {r['restore_s']:10.2f}")
    if result.get("fork_under_load"):
        print(f"fork_under_load: {result['fork_under_load']['writes_applied_meanwhile']:,} "
              f"writes applied by the loop while the child wrote the snapshot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
