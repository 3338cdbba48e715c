"""``python -m fastraft.verify``: one verification run from the command line.

Place in the architecture: the entry point of the verification framework; it parses options
and hands them to ``nemesis.run`` (see there for what a run does and writes). Exit status: 0
when every check passed (linearizable history, stale reads keep their promise, no lost
insert, no duplicated or lost session operation, every watch stream complete and in order,
no two valid lock holders at once and no lower fence accepted, no lease key outliving its
lease or lost while it lives, the membership the nemesis made, every member holding the
leader's state, no node behaving against its contract), 1 on a violation, 3 when a check
could not conclude (checker budget, final state unreadable), 2
for a usage error or a cluster that would not start.

    python -m fastraft.verify --nemesis partition,kill,pause --duration 300 --nodes 5 \\
        --seed 42 --out verify-out
    python -m fastraft.verify --tls --duration 60      # the same over TLS (fastraft[tls])
    python -m fastraft.verify --workload watch,lock,lease --duration 60
"""

from __future__ import annotations

import argparse
import sys
import time

from .linearizability import OK, VIOLATION
from .nemesis import FAULT_KINDS, WORKLOADS, RunOptions, run_sync


def _range(text: str) -> tuple:
    lo, _, hi = text.partition(",")
    lo = float(lo)
    hi = float(hi) if hi else lo
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError("expected LO[,HI] with 0 <= LO <= HI")
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    ap = argparse.ArgumentParser(
        prog="python -m fastraft.verify",
        description="Run real fastraft nodes behind fault proxies under register, set, "
                    "session, watch, lock and lease workloads and a nemesis, then check the "
                    "history for linearizability, lost inserts, duplicated session "
                    "operations, gaps and repeats in watch streams, lock holders at once "
                    "and stale fences accepted, and lease keys outliving their leases.")
    ap.add_argument("--nemesis", default=",".join(FAULT_KINDS),
                    help=f"comma-separated fault kinds among {', '.join(FAULT_KINDS)}, or "
                         "'none' (default: all)")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="seconds of load under faults (then --recover seconds without); "
                         "the fault plan fits in it: every kind once first, the kinds that "
                         "do not fit skipped and named with the reason")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None, help="default: random, printed")
    ap.add_argument("--out", default=None, help="output directory (default: "
                                                "./verify-<time>-<seed>)")
    ap.add_argument("--workers", type=int, default=6, help="concurrent clients")
    ap.add_argument("--keys", type=int, default=3, help="registers")
    ap.add_argument("--quiet", type=_range, default=(1.0, 3.0),
                    help="healthy seconds between faults, LO,HI (default 1,3)")
    ap.add_argument("--fault", type=_range, default=(1.0, 4.0),
                    help="seconds a fault lasts, LO,HI (default 1,4)")
    ap.add_argument("--recover", type=float, default=5.0,
                    help="seconds of load after the final heal")
    ap.add_argument("--op-timeout", type=float, default=1.0,
                    help="seconds per request (the client's timeout)")
    ap.add_argument("--op-deadline", type=float, default=3.0,
                    help="seconds per operation, retries included (after it: info)")
    ap.add_argument("--check-budget", type=float, default=600.0,
                    help="seconds the linearizability checker may spend")
    ap.add_argument("--storage", choices=("wal", "sqlite"), default="wal")
    ap.add_argument("--workload", default=",".join(WORKLOADS),
                    help=f"comma-separated workloads among {', '.join(WORKLOADS)} "
                         "(default: all)")
    ap.add_argument("--set-workers", type=int, default=2, help="clients inserting keys")
    ap.add_argument("--session-workers", type=int, default=3,
                    help="clients doing cas-loop increments and appends")
    ap.add_argument("--watch-writers", type=int, default=2,
                    help="watch: clients putting unique values under verify/watch/")
    ap.add_argument("--watchers", type=int, default=4,
                    help="watch: watchers, each with its own client (half from revision 1, "
                         "half from now; each pair a quarter of the run after the last)")
    ap.add_argument("--lock-workers", type=int, default=4,
                    help="lock: clients taking the lock in turn (at least 2; worker 0 "
                         "sometimes pauses past its TTL inside the critical section)")
    ap.add_argument("--lock-ttl", type=float, default=2.0,
                    help="lock: the TTL of each holder's lease, seconds (at least 1)")
    ap.add_argument("--lock-pause-every", type=float, default=5.0,
                    help="lock: worker 0 pauses inside its critical section past its TTL at "
                         "most once in this many seconds (default 5)")
    ap.add_argument("--lease-workers", type=int, default=2,
                    help="lease: clients granting leases and attaching keys")
    ap.add_argument("--lease-ttl", type=_range, default=(1.0, 2.0),
                    help="lease: TTLs drawn from LO,HI seconds (at least 1; default 1,2)")
    ap.add_argument("--watch-history", type=int, default=None,
                    help="the nodes' watch_history (default 2000000: the whole run stays "
                         "watchable from revision 1)")
    ap.add_argument("--snapshot-threshold", type=int, default=2000,
                    help="the cluster's snapshot_threshold (low, so wiped nodes need a "
                         "snapshot; default 2000)")
    ap.add_argument("--no-plot", action="store_true", help="do not draw latency.png")
    ap.add_argument("--tls", action="store_true",
                    help="TLS on both ports of every node, with a PKI made for the run in "
                         "OUT/pki (needs pip install 'fastraft[tls]'); clients present a "
                         "client certificate; the fault proxies terminate TLS, so every "
                         "fault works as without it")
    return ap


def main(argv=None) -> int:
    """Parse ``argv``, run, print the summary; returns the exit status (see above)."""
    ap = _parser()
    args = ap.parse_args(argv)
    workloads = tuple(w.strip() for w in args.workload.split(",") if w.strip())
    kinds = () if args.nemesis in ("", "none") else tuple(
        k.strip() for k in args.nemesis.split(",") if k.strip())
    try:
        opts = RunOptions(out=args.out or "", nodes=args.nodes, duration=args.duration,
                          nemesis=kinds, seed=args.seed, workers=args.workers, keys=args.keys,
                          quiet=args.quiet, fault=args.fault, recover=args.recover,
                          check_budget=args.check_budget, storage=args.storage,
                          op_timeout=args.op_timeout, op_deadline=args.op_deadline,
                          workloads=workloads, set_workers=args.set_workers,
                          session_workers=args.session_workers, plot=not args.no_plot,
                          tls=args.tls, watch_writers=args.watch_writers,
                          watchers=args.watchers, lock_workers=args.lock_workers,
                          lock_ttl=args.lock_ttl, lock_pause_every=args.lock_pause_every,
                          lease_workers=args.lease_workers,
                          lease_ttl=args.lease_ttl)
        opts.tuning["snapshot_threshold"] = args.snapshot_threshold
        if args.watch_history is not None:
            opts.tuning["watch_history"] = args.watch_history
    except ValueError as exc:
        ap.error(str(exc))
    if not opts.out:
        opts.out = f"verify-{time.strftime('%Y%m%d-%H%M%S')}-{opts.seed}"
    print(f"fastraft verify: seed {opts.seed}, output in {opts.out}", flush=True)
    try:
        result = run_sync(opts, progress=lambda s: print(f"  {s}", flush=True))
    except RuntimeError as exc:
        print(f"fastraft verify: {exc}", file=sys.stderr)
        return 2
    print(result.text())
    if result.verdict == OK:
        return 0
    return 1 if result.verdict == VIOLATION else 3


if __name__ == "__main__":
    sys.exit(main())
