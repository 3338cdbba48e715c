"""Live-node fuzzer: seeded hostile input on BOTH ports of every node of a real 3-node
cluster, while a normal client keeps writing and reading.

For the budget (about 12 s in CI; half of FASTRAFT_FUZZ_SECONDS in a long run) a few attacker
threads, each with its own ``random.Random(seed + k)`` (the seed is printed), pick a node, a
port and an attack:

    random bytes · a frame cut short · an oversized length prefix · valid msgpack of a wrong
    shape · a structurally mutated valid request / peer frame · a request with an absurd key
    or value size or an absurd declared length · several frames, valid and not, on one
    connection · a half-open connection (part of a frame, then silence, left hanging) · a
    flood of connections · hellos from the wrong cluster, an unknown node, the wrong target,
    a message before the hello, garbage after a valid hello

Meanwhile a writer registers a session and puts unique keys on the leader (following it and
retrying the same (session, seq) after a failure), reading some back. Afterwards:

- every node still runs;
- a leader answers (the test reports whether it is the same one);
- every acknowledged write is readable on the leader (linearizable read) and, once applied,
  on every node (stale read);
- no node logged an unhandled exception (a traceback);
- each node logged few rejection lines ("closing ... connection" / "refusing ..."): far fewer
  than the bad inputs it received (LogOnce logs a repeated reason once).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from fastraft import codec
from fastraft.core import encode_frame
from fastraft.raft import Message, MsgType


def _sibling(name: str):
    modname = f"fastraft_fuzz_{name}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname,
                                                      Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


mut = _sibling("mutate")

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}
ATTACKERS = 3
MAX_HANGING = 40            # half-open connections kept at once (all attackers)
REJECTION = re.compile(r"closing (client|peer) connection|refusing (client|peer)")


def _hp(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def _valid_requests(rnd: random.Random) -> bytes:
    rid = rnd.randrange(1, 1000)
    k = b"fz" + bytes([rnd.randrange(256)])
    return rnd.choice([
        codec.encode_request(rid, codec.OP_GET, k, rnd.random() < 0.5),
        codec.encode_request(rid, codec.OP_PUT, 1, 1, 1, k, b"v"),       # no such session
        codec.encode_request(rid, codec.OP_DELETE, 1, 2, 1, k),
        codec.encode_request(rid, codec.OP_CAS, 1, 3, 1, k, None, b"n"),
        codec.encode_request(rid, codec.OP_SCAN, b"fz", 5, True),
        codec.encode_request(rid, codec.OP_KEEPALIVE, 1, 1),
        codec.encode_request(rid, codec.OP_STATUS),
    ])


def _valid_peer(rnd: random.Random, cluster: str, to: int) -> bytes:
    frm = rnd.choice([1, 2, 3, 77])
    m = Message(rnd.choice(list(MsgType)), to, frm, rnd.randrange(0, 5), index=3,
                entries=[(0, b"e")] if rnd.random() < 0.3 else [])
    return rnd.choice([
        codec.encode_hello(cluster, frm, to),
        codec.encode_hello(cluster + "x", frm, to),
        codec.encode_hello(cluster, frm, to + 1),
        codec.encode_welcome(frm),
        codec.encode_refuse("go away"),
        codec.encode_snap_chunk(1, 2, 0, b"data"),
        codec.encode_message(m._replace(type=MsgType.HEARTBEAT, entries=[])),
    ])


class Attack:
    """The attacker side: shared counters and the hanging sockets."""

    def __init__(self, cluster, seed: int, deadline: float) -> None:
        self.cl = cluster
        self.seed = seed
        self.deadline = deadline
        self.lock = threading.Lock()
        self.kinds: dict[str, int] = {}
        self.per_node: dict[int, int] = {i: 0 for i in cluster.ids}
        #: bad inputs that are not bare flood connections (those may go unlogged)
        self.bad_per_node: dict[int, int] = {i: 0 for i in cluster.ids}
        self.hanging: list[socket.socket] = []
        self.errors: list[str] = []

    def note(self, node: int, kind: str, n: int = 1) -> None:
        with self.lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + n
            self.per_node[node] += n
            if "flood" not in kind:
                self.bad_per_node[node] += n

    def hang(self, s: socket.socket) -> None:
        with self.lock:
            self.hanging.append(s)
            if len(self.hanging) > MAX_HANGING:
                old = self.hanging.pop(0)
                old.close()

    @staticmethod
    def _exchange(addr, data: bytes, read: float = 0.05) -> None:
        """Connect, send, read a little (answers or the close), close."""
        with socket.create_connection(addr, 2.0) as s:
            try:
                s.sendall(data)
                s.settimeout(read)
                while s.recv(65536):
                    pass
            except (OSError, TimeoutError):
                pass

    def run(self, k: int) -> None:
        rnd = random.Random(self.seed * 1000 + k)
        cluster = self.cl.config.cluster_name
        try:
            while time.monotonic() < self.deadline:
                node = rnd.choice(self.cl.ids)
                n = self.cl.node(node)
                peer_port = rnd.random() < 0.5
                addr = _hp(n.raft_addr if peer_port else n.client_addr)
                port = "peer" if peer_port else "client"
                try:
                    self._one(rnd, node, addr, port, cluster)
                except OSError:
                    pass        # refused / reset while the node sheds load: fine
        except Exception as exc:  # pragma: no cover - reported by the test
            self.errors.append(f"attacker {k}: {exc!r}")

    def _valid(self, rnd, port, cluster, node) -> bytes:
        return (_valid_peer(rnd, cluster, node) if port == "peer" else _valid_requests(rnd))

    def _one(self, rnd: random.Random, node: int, addr, port: str, cluster: str) -> None:
        kind = rnd.randrange(12)
        if kind == 0:
            data = os.urandom(rnd.randrange(1, 300))
            self._exchange(addr, data)
            self.note(node, f"{port}/random-bytes")
        elif kind == 1:
            frame = encode_frame(self._valid(rnd, port, cluster, node))
            self._exchange(addr, frame[:rnd.randrange(1, len(frame))])
            self.note(node, f"{port}/truncated-frame")
        elif kind == 2:
            size = rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, (64 << 20) + 1, (1 << 24) + 7])
            self._exchange(addr, struct.pack("<I", size) + os.urandom(rnd.randrange(0, 64)))
            self.note(node, f"{port}/oversized-length")
        elif kind == 3:
            self._exchange(addr, encode_frame(mut.pack(mut._weird(rnd))))
            self.note(node, f"{port}/wrong-shape")
        elif kind in (4, 5):
            body = mut.mutate_body(rnd, self._valid(rnd, port, cluster, node))
            self._exchange(addr, encode_frame(body))
            self.note(node, f"{port}/mutated-valid")
        elif kind == 6:
            if port == "client":
                body = rnd.choice([
                    codec.encode_request(7, codec.OP_GET, b"k" * 100_000, False),
                    codec.encode_request(7, codec.OP_PUT, 1, 1, 1, b"k", b"v" * (2 << 20)),
                    codec.encode_request(7, codec.OP_SCAN, b"", 2**64 - 1, False),
                    codec.encode_request(2**64 - 1, codec.OP_PUT, 2**64 - 1, 2**64 - 1,
                                         2**64 - 1, b"k" * 5000, b"v"),
                ])
                data = encode_frame(body)
            else:
                data = encode_frame(codec.encode_snap_chunk(1, 1, 0, b"x" * (2 << 20)))
            if rnd.random() < 0.5:    # an absurd declared length inside a small frame
                data = encode_frame(rnd.choice(mut.HUGE_HEADERS) + b"\x00" * 8)
            self._exchange(addr, data, read=0.2)
            self.note(node, f"{port}/absurd-size")
        elif kind == 7:
            frames = []
            for _ in range(rnd.randrange(2, 8)):
                b = self._valid(rnd, port, cluster, node)
                if rnd.random() < 0.4:
                    b = mut.mutate_body(rnd, b)
                frames.append(encode_frame(b))
            if port == "peer" and rnd.random() < 0.5:    # garbage after a valid hello
                frames.insert(0, encode_frame(codec.encode_hello(
                    cluster, rnd.choice([i for i in self.cl.ids if i != node]), node)))
                frames = frames[:1] + [encode_frame(mut.pack(mut._weird(rnd)))]
            self._exchange(addr, b"".join(frames), read=0.1)
            self.note(node, f"{port}/frame-sequence", len(frames))
        elif kind == 8:
            s = socket.create_connection(addr, 2.0)
            frame = encode_frame(self._valid(rnd, port, cluster, node))
            s.sendall(frame[:rnd.randrange(0, len(frame))])
            self.hang(s)
            self.note(node, f"{port}/half-open")
        elif kind == 9:
            socks = []
            for _ in range(rnd.randrange(10, 60 if port == "client" else 20)):
                try:
                    socks.append(socket.create_connection(addr, 2.0))
                except OSError:
                    break
            for s in socks:
                s.close()
            self.note(node, f"{port}/flood-connection", len(socks))
        elif kind == 10 and port == "peer":
            hello = rnd.choice([
                codec.encode_hello("wrong-" + cluster, 2, node),
                codec.encode_hello(cluster, 77, node),
                codec.encode_hello(cluster, 1 if node != 1 else 2, node + 10),
                codec.encode_message(Message(MsgType.HEARTBEAT, node, 2, 99)),
            ])
            self._exchange(addr, encode_frame(hello), read=0.1)
            self.note(node, "peer/bad-handshake")
        else:
            self._exchange(addr, encode_frame(os.urandom(rnd.randrange(0, 50))))
            self.note(node, f"{port}/random-frame")


class Writer:
    """The normal client: unique puts in one session on the leader, some reads back."""

    def __init__(self, cl, wire) -> None:
        self.cl = cl
        self.wire = wire
        self.acked: dict[bytes, bytes] = {}
        self.reads = 0
        self.failures = 0
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.conn = None
        self.session = 0
        self.seq = 0

    def _connect(self):
        if self.conn is None:
            lead = self.cl.leader(timeout=10)
            self.conn = self.wire.WireClient(self.cl.node(lead).client_addr, 2.0)
            if not self.session:
                self.session = self.conn.register().expect_ok()
        return self.conn

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.failures += 1
        time.sleep(0.05)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.seq += 1
                key = b"acked-%d" % self.seq
                value = b"value-%d-" % self.seq + os.urandom(8).hex().encode()
                while not self.stop.is_set():
                    try:
                        c = self._connect()
                        r = c.put(self.session, self.seq, key, value)
                    except (OSError, AssertionError, ValueError):
                        self._drop()
                        continue
                    if r.ok:
                        self.acked[key] = value
                        break
                    self._drop()        # not leader / busy / unknown: retry the same seq
                if self.seq % 5 == 0 and self.acked and self.conn is not None:
                    k = random.choice(list(self.acked))
                    try:
                        r = self.conn.get(k)
                    except OSError:
                        self._drop()
                        continue
                    if r.ok:
                        self.reads += 1
                        if r.value != self.acked[k]:
                            self.errors.append(f"read {k!r} -> {r.value!r}, "
                                               f"acked {self.acked[k]!r}")
        except Exception as exc:  # pragma: no cover - reported by the test
            self.errors.append(repr(exc))


def test_live_nodes_survive_hostile_input(cluster_factory, wire, fuzz):
    seed = int(os.environ.get("FASTRAFT_FUZZ_SEED", random.randrange(1 << 30)))
    seconds = fuzz.live_seconds()
    print(f"\nlive fuzz: seed {seed} (FASTRAFT_FUZZ_SEED={seed} replays the choices), "
          f"{seconds:g} s")
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    writer = Writer(cl, wire)
    wt = threading.Thread(target=writer.run, daemon=True)
    wt.start()
    attack = Attack(cl, seed, time.monotonic() + seconds)
    threads = [threading.Thread(target=attack.run, args=(k,), daemon=True)
               for k in range(ATTACKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    for s in attack.hanging:
        s.close()
    acked_during_attack = len(writer.acked)
    # The writer keeps going after the attack: wait (deadline) for one more acknowledged write.
    cl.wait_for(lambda: len(writer.acked) > acked_during_attack, 15,
                "a write acknowledged after the attack")
    writer.stop.set()
    wt.join(15)
    if writer.conn is not None:
        writer.conn.close()
    bad_total = sum(attack.per_node.values())
    for kind, n in sorted(attack.kinds.items()):
        fuzz.count(f"live/{kind}", n)
    fuzz.count("live/writes-acked", len(writer.acked))
    fuzz.count("live/reads-checked", writer.reads)
    print(f"live fuzz: {bad_total} bad inputs {attack.per_node}, {len(writer.acked)} writes "
          f"acked ({acked_during_attack} during the attack), {writer.reads} reads, "
          f"{writer.failures} client retries")

    assert not attack.errors, attack.errors
    assert not wt.is_alive(), "the writer is stuck"
    assert not writer.errors, writer.errors
    # every node still runs
    for i in cl.ids:
        assert cl.node(i).running, f"node {i} died\n{cl.report()}"
    # a leader answers
    now = cl.leader(timeout=15)
    print(f"live fuzz: leader before {lead}, after {now}")
    fuzz.count("live/same-leader" if now == lead else "live/leader-changed")
    assert acked_during_attack > 0, "no write was acknowledged during the attack"
    # every acknowledged write is readable: on the leader, then on every node once applied
    c = cl.client(now, timeout=5.0)
    for k, v in writer.acked.items():
        assert c.get(k).expect_ok() == v, k
    commit = wire.parse_status(c.status().values)["commit"]
    cl.wait_applied(commit, timeout=20)
    for i in cl.ids:
        ci = cl.client(i, timeout=5.0)
        for k, v in writer.acked.items():
            assert ci.get(k, stale=True).expect_ok() == v, (i, k)
    # no unhandled exception in any node
    for i in cl.ids:
        text = cl.node(i).log_text()
        assert "Traceback" not in text and "Exception in callback" not in text, (
            f"node {i} logged an unhandled exception:\n{cl.node(i).log_tail(80)}")
    # rejections are logged once per reason, not once per input
    for i in cl.ids:
        lines = [ln for ln in cl.node(i).log_text().splitlines() if REJECTION.search(ln)]
        got = attack.bad_per_node[i]
        fuzz.count(f"live/log-rejection-lines/node{i}", len(lines))
        print(f"live fuzz: node {i}: {got} bad inputs, {len(lines)} rejection log lines")
        assert len(lines) <= 150 and (got < 200 or len(lines) * 10 <= got), (
            f"node {i} logged {len(lines)} rejection lines for {got} bad inputs:\n"
            + "\n".join(lines[:80]))
