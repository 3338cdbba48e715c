"""A flood of bad connections on the leader's peer port: rate-limited per source, logged once,
no leader change, and a peer from the same address still gets in.

Place in the architecture: an end-to-end test of real node processes (tests/integration,
``cluster_factory``) for the peer port's accept path (``fastraft/server/accept.py``: the
per-source token bucket and the probation of connections over it; ``fastraft/server/
peers.py``: the least work before a hello, the oldest waiting connection closed for a new
one). The unit tests of the pieces are in tests/unit/test_accept_limits.py.

Threads of the test open thousands of connections to the leader's peer port from 127.0.0.1
(connect and close, garbage, an absurd length prefix, silent connections held open) while a
writer keeps writing. Meanwhile a follower is killed and restarted: it dials the leader
from 127.0.0.1 too, and must get in while the flood goes on. Afterwards: the same leader in
the same term on every node, writes acknowledged during the flood, and one rate-limit line
in the leader's log. Nothing is timed.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

#: Elections slow enough not to start for CPU contention alone (three nodes, a writer and
#: the flooding threads share the machine): the test is about the flood's work on the node.
TUNING = {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 1000}
FLOOD_THREADS = 3
HELD = 60                   # silent connections each flooding thread keeps open
MIN_FLOOD = 3000            # connections opened before the flood may stop


def _hp(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


class Flood:
    """Threads opening bad connections to ``addr`` until ``stop``; ``opened`` counts them."""

    def __init__(self, addr) -> None:
        self.addr = addr
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.opened = 0
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(FLOOD_THREADS)]

    def start(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a flooding thread is stuck"

    def _run(self, k: int) -> None:
        held: list[socket.socket] = []
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                try:
                    s = socket.create_connection(self.addr, 2.0)
                except OSError:
                    continue            # the backlog is full: the node sheds load
                with self.lock:
                    self.opened += 1
                kind = (n + k) % 4
                try:
                    if kind == 0:
                        held.append(s)          # silent, held open
                        if len(held) > HELD:
                            held.pop(0).close()
                        continue
                    if kind == 1:
                        s.sendall(os.urandom(64))
                    elif kind == 2:
                        s.sendall(struct.pack("<I", 0x7FFFFFFF) + b"x" * 16)
                except OSError:
                    pass
                s.close()
        finally:
            for s in held:
                s.close()


def _writer(cl, wire, lead: int, stop: threading.Event, acked: list) -> None:
    c = wire.WireClient(cl.node(lead).client_addr, 10.0)
    try:
        sid = c.register().expect_ok()
        seq = 0
        while not stop.is_set():
            seq += 1
            if c.put(sid, seq, b"k%d" % seq, b"v").ok:
                acked.append(seq)
    finally:
        c.close()


def test_a_flood_on_the_peer_port_is_rate_limited_and_a_peer_still_gets_in(cluster_factory,
                                                                            wire):
    cl = cluster_factory(3, tuning=TUNING)
    lead = cl.leader()
    terms = {i: s["term"] for i, s in cl.statuses().items()}
    assert len(terms) == 3 and len(set(terms.values())) == 1, terms
    follower = next(i for i in cl.ids if i != lead)
    stop_writes = threading.Event()
    acked: list = []
    writer = threading.Thread(target=_writer, args=(cl, wire, lead, stop_writes, acked),
                              daemon=True)
    writer.start()
    flood = Flood(_hp(cl.node(lead).raft_addr)).start()
    try:
        cl.wait_for(lambda: flood.opened >= MIN_FLOOD // 3, 60, "the flood to get going")
        # A peer of the same address reconnects in the middle of the flood.
        node = cl.node(follower)
        before = len(node.log_text())
        cl.restart(follower, clean=False)
        cl.wait_for(lambda: f"connected to node {lead}" in node.log_text()[before:], 30,
                    f"the restarted node {follower} to connect to the leader during the flood")
        at_reconnect = flood.opened
        cl.wait_for(lambda: flood.opened >= max(MIN_FLOOD, at_reconnect + 100), 60,
                    f"{MIN_FLOOD} flood connections")
        with cl.client(lead) as c:
            commit = wire.parse_status(c.status().values)["commit"]
        cl.wait_applied(commit, ids=[follower], timeout=30)
        during = len(acked)
    finally:
        flood.join()
        stop_writes.set()
        writer.join(30)
    print(f"flood: {flood.opened} connections; {during} writes acknowledged meanwhile")
    assert during > 0, "no write was acknowledged during the flood"
    assert not writer.is_alive(), "the writer is stuck"
    after = {i: s["term"] for i, s in cl.statuses().items()}
    assert after == terms, (terms, after)
    assert cl.current_leader() == lead
    log = cl.node(lead).log_text()
    assert log.count("rate-limiting peer connections from 127.0.0.1") == 1, log[-3000:]
