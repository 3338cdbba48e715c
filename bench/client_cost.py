"""What the client costs per operation, alone: ``fastraft bench``'s load against a fake node
that answers every request at once (issue 16: "the client's per-operation cost ... measure it
alone against a fake server that answers instantly").

Place in the architecture: a benchmark script (bench/), outside the package. The fake node is
another process (``--serve``: this file run as a server): a plain asyncio TCP server (uvloop
when installed) that speaks the client protocol with ``fastraft.codec`` and the core's frame
codec and answers at once: status as the leader, register with a session id, put / delete /
cas OK, get with a fixed value, members refused as an unknown operation (so the client keeps
its endpoints). It never touches a disk, so the figure is the client's own CPU: the process
time of the benchmarking process divided by the operations it completed (the fake node's CPU
is in another process and not counted).

    python bench/client_cost.py                       # writes and reads at 1, 64, 256 in flight
    python bench/client_cost.py --duration 10 --json client.json
    python bench/client_cost.py --quick               # smoke run

Markdown to stdout, progress to stderr; exit 1 when the fake node cannot start or the load
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from fastraft import codec
from fastraft.client.bench import bench
from fastraft.core import FrameDecoder, encode_frame
from fastraft.loops import pick_loop

WORKLOADS = (("writes", 0.0), ("reads", 1.0))
CONCURRENCY = (1, 64, 256)
VALUE = b"v" * 100


class _FakeNode(asyncio.Protocol):
    """One client connection to the fake node: answer each request at once."""

    sessions = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.decoder = FrameDecoder(1 << 24)
        self.limits = codec.Limits()

    def data_received(self, data) -> None:
        out = []
        for body in self.decoder.feed(data):
            try:
                req = codec.decode_request(body, self.limits, 1 << 24)
            except Exception as exc:                    # noqa: BLE001 - answered, not fatal
                out.append(encode_frame(codec.encode_response(0, codec.ST_INVALID, str(exc))))
                continue
            out.append(encode_frame(self.answer(req)))
        if out:
            self.transport.write(b"".join(out))

    def answer(self, req) -> bytes:
        op, rid = req.op, req.req_id
        if op == codec.OP_STATUS:
            fields = [1, "leader", 1, 1, 1, 1, 1, "fake", "fake", "0"]
            return codec.encode_response(rid, codec.ST_OK, fields)
        if op == codec.OP_REGISTER:
            _FakeNode.sessions += 1
            return codec.encode_response(rid, codec.ST_OK, _FakeNode.sessions)
        if op == codec.OP_GET:
            return codec.encode_response(rid, codec.ST_OK, VALUE)
        if op in (codec.OP_PUT, codec.OP_KEEPALIVE):
            return codec.encode_response(rid, codec.ST_OK)
        if op in (codec.OP_DELETE, codec.OP_CAS):
            return codec.encode_response(rid, codec.ST_OK, True)
        return codec.encode_response(rid, codec.ST_INVALID, f"unknown operation {op}")


async def _serve(port_file: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FakeNode, "127.0.0.1", 0)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


def _start_fake(tmp: Path) -> tuple[subprocess.Popen, str]:
    port_file = tmp / "port"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the fake node did not start")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text()}"


async def _run(endpoint: str, args) -> list[dict]:
    rows = []
    for name, reads in WORKLOADS:
        for conc in args.concurrency:
            await bench([endpoint], concurrency=conc, duration=min(1.0, args.duration),
                        read_fraction=reads)              # warm-up, not measured
            c0 = time.process_time()
            s = await bench([endpoint], concurrency=conc, duration=args.duration,
                            read_fraction=reads)
            cpu = time.process_time() - c0
            us = cpu / s["ops"] * 1e6 if s["ops"] else float("nan")
            print(f"{name:<6} {conc:>4} in flight: {s['throughput_ops_s']:>9,.0f} ops/s  "
                  f"client CPU {us:.1f} us/op", file=sys.stderr, flush=True)
            rows.append({"workload": name, "concurrency": conc, "ops": s["ops"],
                         "ops_s": s["throughput_ops_s"], "client_cpu_us_per_op": us,
                         "p50_ms": s["latency_ms"]["p50"]})
    return rows


def render(rows: list[dict], meta: dict) -> str:
    lines = [f"Python {meta['python']}, {meta['cpus']} CPUs, loop {meta['loop']}, core "
             f"{meta['core']}; {meta['duration']:g} s per measurement; the fake node answers "
             f"at once in another process.", "",
             "| workload | in flight | ops/s | client CPU µs/op | p50 ms |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['concurrency']} | {r['ops_s']:,.0f} | "
                     f"**{r['client_cpu_us_per_op']:.1f}** | {r['p50_ms']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=5.0, metavar="S")
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                    help="in-flight counts, comma-separated (default 1,64,256)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s, 1 and 64 in flight")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    factory, loop_name = pick_loop("auto")

    def run(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    if args.serve:
        run(_serve(args.serve))
        return 0
    if args.quick:
        args.duration, args.concurrency = 1.0, "1,64"
    args.concurrency = [int(x) for x in args.concurrency.split(",")]
    import tempfile

    from fastraft.core import IMPLEMENTATION
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoint = _start_fake(Path(tmp))
        try:
            rows = run(_run(endpoint, args))
        finally:
            proc.kill()
            proc.wait()
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "loop": loop_name,
            "core": IMPLEMENTATION, "duration": args.duration}
    print(render(rows, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
