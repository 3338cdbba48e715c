"""Storage figures for issue 4: append + sync throughput and recovery time, WAL and SQLite.

    python bench/storage_bench.py [--dir DIR] [--seconds S] [--recovery-entries N] [--quick]

Prints one JSON line per figure, all measured in the same run on the same disk (by default a
temporary directory under the current one, so the disk under test is the project's):

- raw_fsync: write 4 KiB + fsync in a loop: the physical floor for group commit;
- seq_write: MB/s of 1 MiB writes followed by one fsync (the disk's sequential bandwidth);
- append_sync per backend and batch size (1, 16, 256 entries of 100 B): entries/s when every
  batch is appended, a hard state saved, and synced (one fsync per batch), beside the target
  min(0.8 x raw fsyncs/s x batch, sequential bandwidth / 132 B per record);
- recovery per backend: seconds to reopen a store holding N entries of 100 B (target < 3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from fastraft import core
from fastraft.raft import EntryBatch, HardState
from fastraft.storage.sqlite import SqliteStore
from fastraft.storage.wal import WalStore

PAYLOAD = b"v" * 100


def raw_fsync(d: str, seconds: float) -> float:
    path = os.path.join(d, "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block = b"\0" * 4096
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n / (time.perf_counter() - t0)


def seq_write(d: str, mib: int) -> float:
    path = os.path.join(d, "seq")
    block = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    os.unlink(path)
    return mib * 1.048576 / dt


def open_store(kind: str, d: str):
    if kind == "wal":
        return WalStore.open(os.path.join(d, "wal"))
    return SqliteStore(os.path.join(d, "log.db"))


def append_sync(kind: str, d: str, batch: int, seconds: float) -> float:
    sub = tempfile.mkdtemp(dir=d)
    store = open_store(kind, sub)
    entries = [(1, PAYLOAD)] * batch
    idx = 1
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            store.append(EntryBatch(idx, entries))
            store.save_hard_state(HardState(1, 1, idx - 1))
            store.sync()
            idx += batch
            n += batch
        dt = time.perf_counter() - t0
    finally:
        store.close()
        shutil.rmtree(sub)
    return n / dt


def recovery(kind: str, d: str, entries: int) -> float:
    sub = tempfile.mkdtemp(dir=d)
    try:
        store = open_store(kind, sub)
        chunk = [(1, PAYLOAD)] * 4096
        idx = 1
        while idx <= entries:
            k = min(len(chunk), entries - idx + 1)
            store.append(EntryBatch(idx, chunk[:k]))
            idx += k
        store.save_hard_state(HardState(1, 1, entries))
        store.sync()
        store.close()
        t0 = time.perf_counter()
        store = open_store(kind, sub)
        st = store.recovered()
        dt = time.perf_counter() - t0
        assert len(st.entries) == entries, (len(st.entries), entries)
        store.close()
        return dt
    finally:
        shutil.rmtree(sub)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to measure (default: ./ on this disk)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput figure")
    ap.add_argument("--recovery-entries", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="short runs, 100,000-entry recovery")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.recovery_entries = 0.5, 100_000
    d = tempfile.mkdtemp(prefix="fastraft-bench-", dir=args.dir or os.getcwd())
    try:
        fs = raw_fsync(d, args.seconds)
        bw = seq_write(d, 64 if not args.quick else 16)
        print(json.dumps({"metric": "raw_fsync", "per_s": round(fs)}))
        print(json.dumps({"metric": "seq_write", "MBps": round(bw)}))
        for kind in ("wal", "sqlite"):
            for batch in (1, 16, 256):
                rate = append_sync(kind, d, batch, args.seconds)
                target = min(0.8 * fs * batch, bw * 1e6 / 132)
                print(json.dumps({"metric": "append_sync", "backend": kind, "batch": batch,
                                  "entries_per_s": round(rate), "target": round(target),
                                  "ratio_to_target": round(rate / target, 3),
                                  "core": core.IMPLEMENTATION}), flush=True)
            secs = recovery(kind, d, args.recovery_entries)
            print(json.dumps({"metric": "recovery", "backend": kind,
                              "entries": args.recovery_entries, "seconds": round(secs, 3),
                              "target_s": 3.0, "met": secs < 3.0, "core": core.IMPLEMENTATION}),
                  flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
