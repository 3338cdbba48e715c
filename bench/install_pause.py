"""Event-loop pause while a follower installs a snapshot from its leader: restored on the loop
(as before issue 16) vs built on the peer transport's worker thread and swapped in.

Place in the architecture: a benchmark script (bench/), outside the package. It drives a real
storage backend of the runtime (``fastraft.server.backends``) the way a follower does: a
snapshot file of ``--keys`` keys in the backend's snapshot store, then, inside a running
event loop (uvloop when importable), either

- ``on_loop``: ``backend.persist_snapshot`` + ``backend.install`` with nothing prepared: the
  file is restored on the loop (what every install did before), or
- ``off_loop``: ``backend.snaps.prepare(path, meta)`` on a worker thread (what the peer
  transport does once the received file is adopted, before it steps the SNAP), then
  ``persist_snapshot`` + ``install``, which swap the prepared state in.

A ticker task measures the gap between consecutive wake-ups of ``await asyncio.sleep(0.001)``
(as bench/snapshot_pause.py does); the longest gap is the loop's longest stall. Python
threads share the GIL, so the loop runs slower while the worker builds the state, but runs.
With ``--storage sqlite`` the install still writes every row into the database on the loop
(only the decoding moves off it).

    python bench/install_pause.py                    # 1,000,000 keys, WAL backend, ~15 s
    python bench/install_pause.py --keys 200000 --storage sqlite --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from fastraft.config import Tuning
from fastraft.raft.messages import Snapshot, SnapshotMeta
from fastraft.server.backends import open_backend
from fastraft.statemachine import KVStateMachine, KVStore

VOTERS = frozenset({1, 2, 3})


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
    await asyncio.sleep(0.05)
    gaps.clear()
    t0 = time.perf_counter()
    result = await coro_fn()
    total = time.perf_counter() - t0
    await asyncio.sleep(0.01)
    stop = True
    await task
    gaps.sort()
    return {"result": result, "total_s": total, "ticks": len(gaps),
            "max_pause_ms": gaps[-1] * 1e3 if gaps else None,
            "p99_pause_ms": gaps[int(len(gaps) * 0.99)] * 1e3 if gaps else None}


def make_file(backend, n_keys: int, index: int) -> Snapshot:
    """A snapshot of ``n_keys`` keys (16 bytes) of 100-byte values at ``index``, saved in the
    backend's store."""
    names = [b"key-%012d" % i for i in range(n_keys)]
    m = KVStateMachine()
    m._kv = KVStore.from_sorted(names, [b"v" * 100] * n_keys)
    m.applied_index = index
    meta = SnapshotMeta(index, 2, VOTERS)
    return Snapshot(meta, backend.snaps.save(meta, m.snapshot_chunks()))


async def one_install(kind: str, directory: str, n_keys: int, index: int,
                      off_loop: bool) -> dict:
    backend = open_backend(kind, directory, VOTERS, Tuning(storage=kind, fsync=False))
    backend.open()
    snap = make_file(backend, n_keys, index)
    size = os.path.getsize(snap.data)
    gc.collect()
    worker = ThreadPoolExecutor(1)
    out: dict = {}

    async def install():
        if off_loop:
            t0 = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(
                worker, backend.snaps.prepare, snap.data, snap.meta)
            out["prepare_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend.persist_snapshot(snap)
        backend.store.sync()
        backend.install(snap)
        out["install_call_s"] = time.perf_counter() - t0
    r = await measure(install)
    assert backend.machine.applied_index == index
    worker.shutdown()
    backend.close()
    out.update(max_pause_ms=r["max_pause_ms"], p99_pause_ms=r["p99_pause_ms"],
               total_s=r["total_s"], file_bytes=size)
    return out


async def run(kind: str, n_keys: int, base: str) -> dict:
    out: dict = {"keys": n_keys, "storage": kind}

    async def idle():
        await asyncio.sleep(0.3)
    out["idle"] = {"max_pause_ms": (await measure(idle))["max_pause_ms"]}
    for i, (name, off) in enumerate((("on_loop", False), ("off_loop", True))):
        d = os.path.join(base, f"{name}-{i}")
        out[name] = await one_install(kind, d, n_keys, 1000 + n_keys, off)
        shutil.rmtree(d, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="number of keys (1,000,000)")
    ap.add_argument("--storage", choices=("wal", "sqlite"), default="wal")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args(argv)
    try:
        import uvloop
        loop_name = f"uvloop {uvloop.__version__}"
        runner = uvloop.run if hasattr(uvloop, "run") else None
    except ImportError:
        loop_name = "asyncio"
        runner = None
    base = tempfile.mkdtemp(prefix="fastraft-installbench-")
    try:
        coro = run(args.storage, args.keys, base)
        result = runner(coro) if runner is not None else asyncio.run(coro)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["meta"] = {"python": platform.python_version(), "loop": loop_name,
                      "cpus": os.cpu_count(), "platform": sys.platform}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.keys:,} keys (16-byte keys, 100-byte values), {args.storage} backend; "
          f"{loop_name}, Python {platform.python_version()}; idle loop max gap "
          f"{result['idle']['max_pause_ms']:.2f} ms")
    print(f"{'':10} {'max pause ms':>13} {'p99 pause ms':>13} {'install call s':>15} "
          f"{'built off loop s':>17} {'file MB':>8}")
    for name in ("on_loop", "off_loop"):
        r = result[name]
        prep = f"{r['prepare_s']:.2f}" if "prepare_s" in r else "-"
        print(f"{name:10} {r['max_pause_ms']:13.1f} {r['p99_pause_ms']:13.2f} "
              f"{r['install_call_s']:15.3f} {prep:>17} {r['file_bytes'] / 1e6:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
