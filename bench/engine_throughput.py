"""Engine CPU cost: entries committed per second through a 3-node cluster of RawNodes with
no network or disk delay (messages delivered at once, every Ready "persisted" instantly).

    python bench/engine_throughput.py [--entries N] [--json-only]

Runs each core implementation in its own subprocess (FASTRAFT_NO_EXTENSIONS selects the
twin), proposals in batches of 1, 16 and 256 entries of 100 bytes, and prints one JSON line
per (implementation, batch): entries committed per second, measured as the time for N
entries to be committed on the leader and applied on every node. Single process, one core.
Issue #3's target: >= 100,000 entries/s with batches of 256.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BATCHES = (1, 16, 256)


def run_child(entries: int) -> None:
    import random

    import fastraft.core
    from fastraft.raft import LEADER, RaftConfig, RawNode

    ids = [1, 2, 3]
    for batch in BATCHES:
        nodes = {i: RawNode(RaftConfig(i, ids, max_uncommitted=1 << 20), random.Random(i))
                 for i in ids}
        applied = {i: 0 for i in ids}
        queue = []

        def pump():
            while True:
                for i, n in nodes.items():
                    while n.has_ready():
                        rd = n.ready()
                        queue.extend(rd.messages)
                        queue.extend(rd.persisted_messages)
                        if rd.committed is not None:
                            applied[i] = rd.committed.last_index
                        n.advance(rd)
                if not queue:
                    return
                q = queue[:]
                del queue[:]
                for m in q:
                    nodes[m.to].step(m)

        nodes[1].campaign()
        pump()
        assert nodes[1].raft.role == LEADER
        lead = nodes[1]
        payloads = [b"v" * 100] * batch
        start_index = lead.raft.log.last_index
        n_batches = max(1, entries // batch)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            lead.propose(payloads)
            pump()
        target = start_index + n_batches * batch
        assert all(a >= target for a in applied.values()), applied
        dt = time.perf_counter() - t0
        print(json.dumps({"impl": fastraft.core.IMPLEMENTATION, "batch": batch,
                          "entries": n_batches * batch, "seconds": round(dt, 4),
                          "entries_per_s": round(n_batches * batch / dt)}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    if args.child:
        run_child(args.entries)
        return 0
    results = []
    for impl in ("cython", "python"):
        env = dict(os.environ)
        env.pop("FASTRAFT_NO_EXTENSIONS", None)
        if impl == "python":
            env["FASTRAFT_NO_EXTENSIONS"] = "1"
        out = subprocess.run([sys.executable, __file__, "--child", "--entries",
                              str(args.entries)], env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        for line in out.stdout.splitlines():
            print(line)
            results.append(json.loads(line))
    best = max((r["entries_per_s"] for r in results if r["batch"] == 256
                and r["impl"] == "cython"), default=0)
    if not args.json_only:
        print(json.dumps({"target": "batch 256 >= 100000 entries/s", "measured": best,
                          "met": best >= 100_000}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
