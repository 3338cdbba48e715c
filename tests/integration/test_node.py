"""End-to-end tests of `fastraft node`: real processes, real sockets, real fsync.

Election, replication, every KV operation and the session rules through the client protocol;
kill -9 of the leader under writes, of every node at once, a rolling restart, a wiped node
that rejoins through a snapshot, a graceful stop that hands leadership over, and bad input on
both ports. The storage-sensitive ones run on both backends (WAL and SQLite), and one cluster
mixes them (their snapshots share one format). The writers here speak the wire protocol directly (tests/integration/wire.py);
an acknowledged write is one whose OK answer was received.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from fastraft import codec
from fastraft.core import encode_frame

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}


class Writer:
    """Puts unique keys in one session, following the leader; a retry re-sends the same
    (session, seq) so each put applies once. Records the acknowledged ones."""

    def __init__(self, cluster, wire, prefix: bytes = b"w") -> None:
        self.cluster = cluster
        self.wire = wire
        self.prefix = prefix
        self.acked: dict = {}
        self.session = 0
        self.seq = 0
        self.conn = None
        self.stop = threading.Event()
        self.errors: list = []
        self.thread = None

    def _connect(self):
        lead = self.cluster.current_leader()
        if lead is None:
            return None
        try:
            return self.wire.WireClient(self.cluster.node(lead).client_addr, 2.0)
        except OSError:
            return None

    def _call(self, fn):
        """Run ``fn(conn)`` until it gets a definite answer (retrying through leader
        changes); returns the Reply."""
        while not self.stop.is_set() or self.conn is not None:
            if self.conn is None:
                self.conn = self._connect()
                if self.conn is None:
                    self.stop.wait(0.05)
                    if self.stop.is_set():
                        return None
                    continue
            try:
                r = fn(self.conn)
            except (OSError, ConnectionError, TimeoutError, EOFError):
                self.conn.close()
                self.conn = None
                continue
            if r.status in (codec.ST_NOT_LEADER, codec.ST_UNKNOWN, codec.ST_BUSY):
                self.conn.close()
                self.conn = None
                self.stop.wait(0.02)
                continue
            return r
        return None

    def put_one(self) -> bool:
        if not self.session:
            r = self._call(lambda c: c.register())
            if r is None:
                return False
            self.session = r.expect_ok()
        self.seq += 1
        seq = self.seq
        key = self.prefix + b"%08d" % seq
        value = b"v%d" % seq
        r = self._call(lambda c: c.put(self.session, seq, key, value, first_unacked=seq))
        if r is None:
            return False
        if not r.ok:
            self.errors.append((seq, r))
            return False
        self.acked[key] = value
        return True

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.put_one()
        except Exception as exc:   # pragma: no cover - reported by join()
            self.errors.append(exc)

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def join(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "writer did not stop"
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        assert not self.errors, f"writer errors: {self.errors[:5]}"
        return self.acked


def _wait_count(cluster, writer, n: int, what: str):
    cluster.wait_for(lambda: len(writer.acked) >= n, 30, f"{n} acknowledged writes ({what})")


def _check_all_present(cluster, acked: dict, node_ids=None):
    """Every acknowledged key, on every given node (stale reads of local state once the
    node applied everything the leader committed)."""
    lead = cluster.leader()
    commit = cluster.status(lead)["commit"]
    cluster.wait_applied(commit, ids=node_ids)
    for i in node_ids or cluster.ids:
        with cluster.client(i) as c:
            got = dict((k, v) for k, v in c.scan(b"", limit=10_000, stale=True).expect_ok())
        missing = [k for k in acked if got.get(k) != acked[k]]
        assert not missing, f"node {i} lost {len(missing)} acknowledged writes: {missing[:5]}"


def test_kv_operations_sessions_and_leader_hints(cluster_factory):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    follower = next(i for i in cl.ids if i != lead)
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"a/1", b"one").ok
    assert c.put(sid, 2, b"a/2", b"two").ok
    assert c.put(sid, 3, b"b/1", b"three").ok
    assert c.get(b"a/1").expect_ok() == b"one"
    assert c.get(b"zz").expect_ok() is None
    assert c.scan(b"a/", limit=10).expect_ok() == [[b"a/1", b"one"], [b"a/2", b"two"]]
    assert c.scan(b"", limit=2).expect_ok() == [[b"a/1", b"one"], [b"a/2", b"two"]]
    assert c.cas(sid, 4, b"a/1", b"one", b"uno").expect_ok() is True
    # A duplicate is answered from the session's cache, not applied again.
    assert c.cas(sid, 4, b"a/1", b"one", b"uno", first_unacked=4).expect_ok() is True
    assert c.cas(sid, 5, b"a/1", b"one", b"eins").expect_ok() is False
    assert c.cas(sid, 6, b"new", None, b"fresh").expect_ok() is True
    assert c.delete(sid, 7, b"a/2").expect_ok() is True
    assert c.delete(sid, 8, b"a/2").expect_ok() is False
    assert c.get(b"a/1").expect_ok() == b"uno"
    # An acknowledged (dropped) sequence number is refused, not re-applied.
    assert c.put(sid, 9, b"k", b"v", first_unacked=9).ok
    r = c.put(sid, 3, b"b/1", b"again", first_unacked=3)
    assert r.status == codec.ST_INVALID, r
    assert c.get(b"b/1").expect_ok() == b"three"
    # Unknown session, oversized key, wrong types: refused with a reason, nothing applied.
    assert c.put(sid + 1000, 1, b"x", b"y").status == codec.ST_SESSION_EXPIRED
    assert c.put(sid, 10, b"k" * 5000, b"y").status == codec.ST_INVALID
    assert c.call(codec.OP_PUT, sid, 10, 10, "str-key", b"y").status == codec.ST_INVALID
    assert c.call(99).status == codec.ST_INVALID
    # Followers refuse writes and linearizable reads with the leader's client address,
    # and serve stale reads from their own state.
    f = cl.client(follower)
    cl.wait_for(lambda: f.status_dict()["leader"] == lead, 10, "the follower to know its leader")
    r = f.put(sid, 10, b"x", b"y")
    assert r.status == codec.ST_NOT_LEADER
    assert r.values == [lead, cl.node(lead).client_addr]
    assert f.get(b"a/1").status == codec.ST_NOT_LEADER
    cl.wait_for(lambda: f.get(b"a/1", stale=True).value == b"uno", 10,
                "the follower's stale read to catch up")
    st = f.status_dict()
    assert st["id"] == follower and st["role"] == "follower" and st["leader"] == lead


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_kill_leader_under_writes_then_kill_every_node(cluster_factory, wire, storage):
    cl = cluster_factory(3, tuning=FAST, storage=storage)
    w = Writer(cl, wire).start()
    _wait_count(cl, w, 50, "before the kill")
    old = cl.leader()
    cl.kill(old)
    cl.wait_for(lambda: (cl.current_leader() or old) != old, 15, "a new leader")
    _wait_count(cl, w, len(w.acked) + 50, "after the kill")
    cl.start([old])
    _wait_count(cl, w, len(w.acked) + 20, "after the restart")
    acked = w.join()
    _check_all_present(cl, acked)
    # kill -9 of every node at once: nothing acknowledged is lost.
    for i in cl.ids:
        cl.kill(i)
    cl.start()
    _check_all_present(cl, acked)


def test_rolling_restart_under_writes_loses_nothing(cluster_factory, wire):
    cl = cluster_factory(3, tuning=FAST)
    w = Writer(cl, wire).start()
    _wait_count(cl, w, 30, "before the restarts")
    for i in cl.ids:
        code = cl.terminate(i)
        assert code == 0, f"node {i} exited {code} on SIGTERM\n{cl.report()}"
        cl.start([i])
        _wait_count(cl, w, len(w.acked) + 30, f"after restarting node {i}")
    acked = w.join()
    _check_all_present(cl, acked)


def test_graceful_stop_of_the_leader_hands_leadership_over(cluster_factory):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    assert cl.terminate(lead) == 0
    assert "handing leadership to node" in cl.node(lead).log_text()
    new = cl.leader()
    assert new != lead
    # The session survives the change of leader (it is replicated state).
    with cl.client(new) as c2:
        assert c2.put(sid, 2, b"k2", b"v2").ok
        assert c2.get(b"k").expect_ok() == b"v"


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_session_duplicate_across_leader_change_is_not_applied_twice(cluster_factory,
                                                                      storage):
    cl = cluster_factory(3, tuning=FAST, storage=storage)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v1").ok
    assert c.cas(sid, 2, b"k", b"v1", b"v2", first_unacked=1).expect_ok() is True
    index = cl.status(lead)["commit"]
    cl.wait_applied(index)
    cl.kill(lead)
    new = cl.leader()
    with cl.client(new) as c2:
        # The retry of seq 2 (its answer "never arrived") gets the original answer even
        # though applying it again now would fail the comparison.
        assert c2.cas(sid, 2, b"k", b"v1", b"v2", first_unacked=1).expect_ok() is True
        assert c2.put(sid, 3, b"k", b"v3", first_unacked=3).ok
        assert c2.get(b"k").expect_ok() == b"v3"


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_wiped_node_rejoins_through_a_snapshot(cluster_factory, wire, storage):
    cl = cluster_factory(3, tuning=dict(FAST, snapshot_threshold=200,
                                        snapshot_keep_entries=20, segment_size=65536),
                         storage=storage)
    lead = cl.leader()
    victim = next(i for i in cl.ids if i != lead)
    w = Writer(cl, wire)
    for _ in range(600):
        assert w.put_one()
    cl.wipe(victim)
    for _ in range(50):
        assert w.put_one()
    w.stop.set()
    if w.conn is not None:
        w.conn.close()
    _check_all_present(cl, w.acked, node_ids=[victim])
    log = cl.node(victim).log_text()
    assert "installed snapshot" in log, log[-3000:]
    assert "rejoining after a data loss" in log
    cl.wait_for(lambda: "voting again" in cl.node(victim).log_text(), 15,
                "the wiped node to vote again")
    assert "snapshot at" in cl.node(lead).log_text()


def _hp(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def _raw(addr: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and return whatever comes back until the node closes the socket."""
    with socket.create_connection(_hp(addr), timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
        except TimeoutError:
            raise AssertionError(f"the node kept a connection open after {data[:40]!r}")


def test_bad_input_on_both_ports(cluster_factory, wire):
    cl = cluster_factory(3, tuning=FAST)
    lead = cl.leader()
    n = cl.node(lead)
    # Client port: garbage, an oversized length, msgpack of the wrong shape: each closes
    # that connection only.
    _raw(n.client_addr, b"\x00\x00\x00\x05garbage-and-more")
    _raw(n.client_addr, struct.pack("<I", 0xFFFFFFF0) + b"x")
    _raw(n.client_addr, encode_frame(codec.pack({"op": "put"})))
    _raw(n.client_addr, encode_frame(b"\xc1"))
    # A half-sent frame and a silent connection do not disturb anyone.
    half = socket.create_connection(_hp(n.client_addr), 5)
    half.sendall(struct.pack("<I", 100) + b"abc")
    # Peer port: garbage, a wrong cluster, an unknown node id (welcome: a member added by a
    # change this node has not seen may lead already), a message before the hello.
    _raw(n.raft_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = _raw(n.raft_addr, encode_frame(codec.encode_hello("other-cluster", 2, lead)))
    assert b"belongs to" in reply
    with socket.create_connection(_hp(n.raft_addr), 5) as s:
        s.sendall(encode_frame(codec.encode_hello(cl.config.cluster_name, 77, lead)))
        reply = s.recv(65536)
    assert codec.decode_peer(reply[4:], 1 << 16) == codec.Welcome(codec.P_WELCOME,
                                                                  codec.PROTOCOL_VERSION, lead)
    from fastraft.raft import Message, MsgType
    _raw(n.raft_addr, encode_frame(codec.encode_message(
        Message(MsgType.HEARTBEAT, lead, 2, 99))))
    # A flood of connections on the client port.
    flood = []
    for _ in range(200):
        try:
            flood.append(socket.create_connection(_hp(n.client_addr), 5))
        except OSError:
            break
    # The cluster carries on: same leader, writes and reads work.
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    assert c.get(b"k").expect_ok() == b"v"
    assert cl.current_leader() == lead
    for s in flood:
        s.close()
    half.close()
    log = n.log_text()
    assert "closing client connection" in log
    assert "refusing peer connection" in log
    assert log.count("belongs to") == 1


@pytest.mark.parametrize("size", [1])
def test_single_node_cluster_elects_itself(cluster_factory, size):
    cl = cluster_factory(size, tuning=FAST)
    assert cl.leader() == 1
    c = cl.client(1)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"solo", b"yes").ok
    assert c.get(b"solo").expect_ok() == b"yes"


def test_mixed_backends_share_snapshots(cluster_factory, wire):
    """A WAL leader's snapshot installs on a SQLite follower and the other way round."""
    cl = cluster_factory(3, tuning=dict(FAST, snapshot_threshold=100,
                                        snapshot_keep_entries=10), start=False)
    import shutil
    # Node 3 runs on SQLite, the others on the WAL (a per-node --storage override).
    orig = cl.node_cmd
    cl.node_cmd = lambda i, cfg, data: orig(i, cfg, data) + (
        ["--storage", "sqlite"] if i == 3 else [])
    cl.start()
    w = Writer(cl, wire)
    for _ in range(300):
        assert w.put_one()
    lead = cl.leader()
    for victim in [i for i in cl.ids if i != lead]:
        cl.kill(victim)
        shutil.rmtree(cl.node(victim).data_dir)
        for _ in range(150):
            assert w.put_one()
        cl.node(victim).next_args = ["--rejoin"]
        cl.start([victim])
        _check_all_present(cl, w.acked, node_ids=[victim])
        assert "installed snapshot" in cl.node(victim).log_text()
    w.stop.set()
    if w.conn is not None:
        w.conn.close()


def _with_file_size_limit(limit: int, orig):
    """A node command whose process may not write files past ``limit`` bytes (writes fail
    with EFBIG, as on a full disk; Python ignores SIGXFSZ)."""
    import sys

    def cmd(i, cfg, data):
        argv = orig(i, cfg, data)
        code = ("import resource, runpy, sys; "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
                f"sys.argv = {['fastraft'] + argv[argv.index('-m') + 2:]!r}; "
                "runpy.run_module('fastraft', run_name='__main__')")
        return [sys.executable, "-P", "-c", code]
    return cmd


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_full_disk_on_the_leader_stops_it_and_loses_nothing(cluster_factory, wire, storage):
    """The leader's writes start failing: it stops (exit 3, with the reason logged) without
    acknowledging anything not durable; the others carry on with every acknowledged write."""
    cl = cluster_factory(3, tuning=dict(FAST, segment_size=1 << 20), storage=storage,
                         start=False)
    orig = cl.node_cmd
    limited = {1}
    cl.node_cmd = lambda i, cfg, data: (
        _with_file_size_limit(300_000, orig)(i, cfg, data) if i in limited
        else orig(i, cfg, data))
    cl.start()
    w = Writer(cl, wire)
    # Make node 1 the leader: stop the others' elections by waiting until it wins one.
    cl.wait_for(lambda: cl.current_leader() is not None, 15, "a leader")
    while cl.current_leader() != 1:
        other = cl.current_leader()
        cl.terminate(other)
        cl.start([other])
        cl.wait_for(lambda: cl.current_leader() is not None, 15, "a leader")
    n = cl.node(1)
    for _ in range(20_000):
        if not n.running or n.proc.poll() is not None:
            break
        w.put_one()
        if len(w.acked) % 200 == 0 and n.proc.poll() is not None:
            break
    cl.wait_for(lambda: n.proc.poll() is not None, 30, "node 1 to stop on the full disk")
    assert n._reap() == 3, n.log_text()[-2000:]
    assert "storage failure" in n.log_text() or "cannot" in n.log_text()
    for _ in range(20):
        assert w.put_one()
    w.stop.set()
    if w.conn is not None:
        w.conn.close()
    _check_all_present(cl, w.acked, node_ids=[2, 3])


def test_snapshots_release_wal_segments(cluster_factory, wire):
    """With small segments and a low threshold, old segments are deleted as snapshots are
    taken: the WAL stays bounded while the data keeps growing."""
    import os
    cl = cluster_factory(3, tuning=dict(FAST, snapshot_threshold=100, snapshot_keep_entries=10,
                                        segment_size=65536))
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    big = b"x" * 2000
    for seq in range(1, 801):
        assert c.put(sid, seq, b"k%04d" % (seq % 50), big, first_unacked=seq).ok
    wal = os.path.join(cl.node(lead).data_dir, "wal")
    segs = [n for n in os.listdir(wal) if n.endswith(".log")]
    # 800 x 2 KB = 1.6 MB of entries = ~25 segments written; far fewer remain.
    assert len(segs) <= 8, sorted(segs)
    cl.wait_for(lambda: "WAL segments deleted" in cl.node(lead).log_text(), 10, "a snapshot")
    deleted = [line for line in cl.node(lead).log_text().splitlines()
               if "WAL segments deleted" in line and " 0 WAL segments" not in line]
    assert deleted, "no snapshot deleted a segment"
    # Everything is still there after a restart of every node from the compacted WAL.
    for i in cl.ids:
        cl.kill(i)
    cl.start()
    lead = cl.leader()
    with cl.client(lead) as c2:
        got = c2.scan(b"k", limit=100).expect_ok()
    assert len(got) == 50 and all(v == big for _k, v in got)


def test_a_second_node_on_the_same_data_directory_is_refused(cluster_factory):
    import subprocess
    import sys
    cl = cluster_factory(1, tuning=FAST)
    cl.leader()
    out = subprocess.run([sys.executable, "-m", "fastraft", "node", "--id", "1", "--config",
                          cl.config_path, "--data-dir", cl.config.data_dir],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "in use by another fastraft node" in out.stderr
    c = cl.client(1)
    assert c.status().ok


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_unsafe_no_fsync_mode_runs_and_says_so(cluster_factory, storage):
    cl = cluster_factory(3, tuning=dict(FAST, fsync=False), storage=storage)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    for seq in range(1, 51):
        assert c.put(sid, seq, b"k%d" % seq, b"v", first_unacked=seq).ok
    assert "fsync OFF (unsafe: benchmarking only)" in cl.node(lead).log_text()
    cl.terminate(lead)          # a clean stop hands everything to the kernel
    cl.start([lead])
    cl.wait_applied(cl.status(cl.leader())["commit"])
    with cl.client(lead) as c2:
        assert len(c2.scan(b"k", limit=100, stale=True).expect_ok()) == 50
