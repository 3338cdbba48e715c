"""``fastraft snapshot save | status | restore`` on real processes (issue 15, backup and
restore): a backup taken while writes go on holds every write acknowledged before it began;
restored into a new cluster on other ports, that cluster elects, serves those keys and takes
new writes, and refuses the old cluster's nodes; damaged and truncated backups are refused
with the offset of the damage; a restore never overwrites data; a TLS cluster is backed up
with the client TLS flags.

Place in the architecture: integration tests (tests/integration): real node processes from
the harness, the real command line in its own process, the real client library for the load.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from fastraft import Client, codec
from fastraft.core import encode_frame

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}


def _registered() -> bool:
    from fastraft.cli import _build_parser

    return "snapshot" in _build_parser().format_help()


#: How the command runs: ``fastraft snapshot`` once ``fastraft.cli`` registers it, else the
#: module's own entry point (the same code).
_CMD = ([sys.executable, "-P", "-m", "fastraft", "snapshot"] if _registered() else
        [sys.executable, "-P", "-c",
         "import sys; from fastraft.client.cli_snapshot import main; sys.exit(main())"])


def snapshot(*args, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``fastraft snapshot ARGS`` in its own process."""
    return subprocess.run(_CMD + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


class Writer(threading.Thread):
    """Puts unique keys through the client library as fast as they are acknowledged and
    records when each was acknowledged (``acked``: key -> (value, monotonic time))."""

    def __init__(self, endpoints, prefix: str = "w", **tls) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.prefix = prefix
        self.tls = tls
        self.acked: dict = {}
        self.halt = threading.Event()
        self.errors: list = []

    def run(self) -> None:
        with Client(self.endpoints, timeout=2.0, **self.tls) as c:
            i = 0
            while not self.halt.is_set():
                k, v = f"{self.prefix}{i:07d}".encode(), f"value-{i}-{'x' * (i % 50)}".encode()
                try:
                    c.put(k, v)
                except Exception as exc:        # noqa: BLE001 - counted, the test decides
                    self.errors.append(exc)
                    continue
                self.acked[k] = (v, time.monotonic())
                i += 1

    def acked_before(self, t: float) -> dict:
        return {k: v for k, (v, at) in list(self.acked.items()) if at < t}

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def _wait_writes(cl, w: Writer, n: int) -> None:
    cl.wait_for(lambda: len(w.acked) >= n, 30, f"{n} acknowledged writes")


def _check_keys(endpoints, keys: dict, **tls) -> None:
    with Client(endpoints, timeout=5.0, **tls) as c:
        missing = [k for k, v in keys.items() if c.get(k) != v]
    assert not missing, f"{len(missing)} of {len(keys)} keys missing or wrong: {missing[:5]}"


def _hello_reply(raft_addr: str, cluster: str, frm: int, to: int) -> bytes:
    host, port = raft_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(encode_frame(codec.encode_hello(cluster, frm, to, raft_addr)))
        s.settimeout(5)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


def test_save_under_load_restore_into_a_new_cluster(cluster_factory, tmp_path):
    # The nodes take their own snapshots often meanwhile: a backup must not disturb them.
    old = cluster_factory(3, tuning={**FAST, "snapshot_threshold": 100,
                                     "snapshot_keep_entries": 10})
    lead = old.leader()
    # A follower first: the command follows the redirect to the leader.
    eps = [old.node(i).client_addr for i in old.ids if i != lead] + [old.node(lead).client_addr]
    w = Writer(old.endpoints())
    w.start()
    _wait_writes(old, w, 300)
    began = time.monotonic()
    path = tmp_path / "backup.frb"
    r = snapshot("save", path, "--endpoints", ",".join(eps), "--json")
    done = time.monotonic()
    _wait_writes(old, w, len(w.acked) + 50)     # writes went on during and after the save
    w.stop()
    assert r.returncode == 0, r.stderr
    saved = json.loads(r.stdout)
    before = w.acked_before(began)
    during = len(w.acked_before(done)) - len(before)
    assert len(before) >= 300 and saved["keys"] >= len(before)
    assert saved["cluster"] == old.config.cluster_name and saved["node_id"] == lead
    assert not os.path.exists(str(path) + ".part")

    from fastraft.backup import BackupReader
    from fastraft.statemachine import KVStateMachine

    with BackupReader(path) as b:               # in the file itself: each with its value
        state = KVStateMachine.restore(b.data())
    assert state.applied_index == saved["index"]
    assert {k: state.get(k) for k in before} == before

    st = snapshot("status", path, "--json")
    assert st.returncode == 0, st.stderr
    info = json.loads(st.stdout)
    assert info["valid"] and info["index"] == saved["index"] and info["keys"] == saved["keys"]
    assert {m["id"] for m in info["members"]} == set(old.ids)
    text = snapshot("status", path).stdout
    assert "checksums" in text and "valid" in text and f"{saved['keys']}" in text

    # Restore into a new cluster on other ports, under its own name.
    new = cluster_factory(3, tuning=FAST, start=False)
    r = snapshot("restore", path, "--config", new.config_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "restored" in r.stdout
    new.start()
    new_lead = new.leader()
    _check_keys(new.endpoints(), before)
    with Client(new.endpoints(), timeout=5.0) as c:
        assert len(c.scan(b"w", limit=10_000)) == saved["keys"]
        c.put(b"after-restore", b"yes")
        assert c.get(b"after-restore") == b"yes"
        members = {m.id: m.client for m in c.members()}
    assert members == {i: new.node(i).client_addr for i in new.ids}
    st = new.status(new_lead)
    assert st["applied"] > saved["index"]
    print(f"save under load: {len(before)} writes acknowledged before, {during} during the "
          f"save ({done - began:.2f} s); backup at index {saved['index']}, {saved['keys']} "
          f"keys, {saved['size']} bytes")

    for i in old.ids:
        text = old.node(i).log_text()
        assert "snapshot at" in text and " failed" not in text, old.node(i).log_tail()

    # The old cluster's nodes cannot join it: its peers refuse their hello (whatever the id).
    for frm in (1, lead, 9):
        reply = _hello_reply(new.node(new_lead).raft_addr, old.config.cluster_name, frm,
                             new_lead)
        frame = codec.decode_peer(reply[4:], 1 << 16)
        assert frame.kind == codec.P_REFUSE and "belongs to" in frame.reason, frame
    # and the new cluster keeps its leader and its term
    assert new.current_leader() == new_lead

    # A second restore into the same directories is refused (exit 2), nothing touched.
    listing = sorted(os.listdir(new.node(1).data_dir))
    r = snapshot("restore", path, "--config", new.config_path)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr, r.stderr
    assert sorted(os.listdir(new.node(1).data_dir)) == listing
    # NEWCFG with the old cluster's name is refused (a new cluster needs a new identity).
    r = snapshot("restore", path, "--config", old.config_path, "--data-dir",
                 tmp_path / "elsewhere")
    assert r.returncode == 2 and "new name" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "elsewhere" / "1")


def test_damaged_and_truncated_backups_are_refused(cluster_factory, tmp_path):
    cl = cluster_factory(3, tuning=FAST)
    with Client(cl.endpoints()) as c:
        for i in range(2000):
            c.put(f"k{i:05d}", "v" * 2000)
    path = tmp_path / "good.frb"
    r = snapshot("save", path, "--endpoints", ",".join(cl.endpoints()))
    assert r.returncode == 0, r.stderr
    assert "saved" in r.stdout and "2000 keys" in r.stdout
    good = path.read_bytes()
    assert len(good) > 3 << 20              # several blocks of 1 MiB

    bad = tmp_path / "bad.frb"
    at = len(good) // 2
    raw = bytearray(good)
    raw[at] ^= 0x40
    bad.write_bytes(bytes(raw))
    st = snapshot("status", bad, "--json")
    assert st.returncode == 1
    info = json.loads(st.stdout)
    assert not info["valid"] and 0 < info["damage_offset"] <= at < info["damage_offset"] + (
        1 << 20) + 4
    assert "INVALID at byte offset" in snapshot("status", bad).stdout
    new = cluster_factory(3, tuning=FAST, start=False)
    r = snapshot("restore", bad, "--config", new.config_path)
    assert r.returncode == 2 and f"byte offset {info['damage_offset']}" in r.stderr, r.stderr
    assert not any(os.path.exists(new.node(i).data_dir) for i in new.ids)

    short = tmp_path / "short.frb"
    for cut in (len(good) - 1, len(good) // 3, 20):
        short.write_bytes(good[:cut])
        st = snapshot("status", short, "--json")
        assert st.returncode == 1 and json.loads(st.stdout)["damage_offset"] == cut
        r = snapshot("restore", short, "--config", new.config_path)
        assert r.returncode == 2 and f"byte offset {cut}" in r.stderr, r.stderr
        assert not any(os.path.exists(new.node(i).data_dir) for i in new.ids)
    r = snapshot("status", tmp_path / "missing.frb")
    assert r.returncode == 2 and "cannot read" in r.stderr

    # The good one restores (into the directories the refusals left alone).
    r = snapshot("restore", path, "--config", new.config_path)
    assert r.returncode == 0, r.stderr
    new.start()
    new.leader()
    _check_keys(new.endpoints(), {f"k{i:05d}".encode(): b"v" * 2000 for i in range(0, 2000, 7)})


def test_sqlite_cluster_backed_up_and_restored_under_either_backend(cluster_factory,
                                                                    tmp_path):
    cl = cluster_factory(3, tuning=FAST, storage="sqlite")
    w = Writer(cl.endpoints(), prefix="s")
    w.start()
    _wait_writes(cl, w, 200)
    began = time.monotonic()
    path = tmp_path / "sqlite.frb"
    r = snapshot("save", path, "--endpoints", ",".join(cl.endpoints()), "--json")
    w.stop()
    assert r.returncode == 0, r.stderr
    before = w.acked_before(began)
    for storage in ("sqlite", "wal"):
        new = cluster_factory(3, tuning=FAST, storage=storage, start=False)
        r = snapshot("restore", path, "--config", new.config_path, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["storage"] == storage
        new.start()
        new.leader()
        _check_keys(new.endpoints(), before)


def test_save_busy_while_another_backup_is_served(cluster_factory, wire):
    cl = cluster_factory(1, tuning=FAST)
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    assert c.put(sid, 1, b"k", b"v").ok
    first = c.call(codec.OP_BACKUP)
    token = first.expect_ok()
    dlen = first.values[7]
    assert cl.client(lead).call(codec.OP_BACKUP).status == codec.ST_BUSY
    piece = c.call(codec.OP_BACKUP_READ, token, 0, codec.BACKUP_READ_MAX)
    assert piece.ok and len(piece.value) == dlen
    assert c.call(codec.OP_BACKUP_READ, token + 2, 0, 10).status == codec.ST_INVALID
    assert c.call(codec.OP_BACKUP_READ, token, dlen + 1, 10).status == codec.ST_INVALID
    assert c.call(codec.OP_BACKUP_READ, token, 0, 0).status == codec.ST_INVALID
    assert c.call(codec.OP_BACKUP_END, token).ok
    assert c.call(codec.OP_BACKUP_READ, token, 0, 10).status == codec.ST_INVALID
    gone = cl.client(lead)                      # released: a new one is taken
    assert gone.call(codec.OP_BACKUP).ok
    gone.close()                                # a client that goes away without an END:
    cl.wait_for(lambda: cl.client(lead).call(codec.OP_BACKUP).ok, 15,   # its backup is
                "the backup of a closed connection to be released")     # released
    backup_dir = os.path.join(cl.node(lead).data_dir, "backup")
    assert len(os.listdir(backup_dir)) == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography")
    from fastraft.certs import init_certs

    d = tmp_path_factory.mktemp("pki")
    init_certs(str(d), nodes=3, hosts=["127.0.0.1", "localhost"])
    return d


def test_save_from_a_tls_cluster_with_the_tls_flags(cluster_factory, pki, tmp_path):
    from fastraft import tls
    from fastraft.config import TLSConfig

    cfg = TLSConfig(str(pki / "peer-ca.pem"), str(pki / "node{id}.pem"),
                    str(pki / "node{id}.key"), str(pki / "client-ca.pem"))
    flags = {"cacert": str(pki / "peer-ca.pem"), "cert": str(pki / "client.pem"),
             "key": str(pki / "client.key")}
    ctx = tls.client_context(**flags)
    cl = cluster_factory(3, tuning=FAST, tls=cfg, client_tls=ctx)
    cl.leader()
    with Client(cl.endpoints(), **flags) as c:
        for i in range(100):
            c.put(f"t{i}", f"v{i}")
    path = tmp_path / "tls.frb"
    args = ["save", path, "--endpoints", ",".join(cl.endpoints())]
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    # Without the client certificate the cluster requires: refused at once, nothing saved.
    r = subprocess.run(_CMD + [str(a) for a in args] + ["--cacert", flags["cacert"]],
                       capture_output=True, text=True, timeout=60, env=env_free)
    assert r.returncode == 2 and "TLS" in r.stderr, r.stderr
    assert not os.path.exists(path)
    r = snapshot(*args, "--cacert", flags["cacert"], "--cert", flags["cert"], "--key",
                 flags["key"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["keys"] == 100
    assert snapshot("status", path).returncode == 0


def test_a_node_of_the_old_cluster_is_refused_by_the_new_one(cluster_factory, harness,
                                                             tmp_path):
    """The new cluster is restored where the old one ran (the same addresses, a new name),
    and a node of the old cluster comes back with its data (a longer log, a term at least as
    high): each side refuses the other's hello, and the new cluster carries on unchanged."""
    import dataclasses

    from fastraft.config import render_config

    old = cluster_factory(3, tuning=FAST)
    with Client(old.endpoints()) as c:
        for i in range(100):
            c.put(f"o{i}", "old")
    path = tmp_path / "old.frb"
    assert snapshot("save", path, "--config", old.config_path).returncode == 0
    with Client(old.endpoints()) as c:          # the old cluster goes on after the backup
        for i in range(300):
            c.put(f"later{i}", "old")
    old.stop()
    new = cluster_factory(3, tuning=FAST, start=False)
    new.config = dataclasses.replace(new.config, nodes=old.config.nodes)
    with open(new.config_path, "w") as f:
        f.write(render_config(new.config))
    new.nodes = {s.id: harness.NodeProc(new, s) for s in new.config.nodes}
    assert snapshot("restore", path, "--config", new.config_path).returncode == 0
    new.start([1, 2])                           # node 3's host: the old node comes back
    lead = new.leader()
    term = new.status(lead)["term"]
    old.start([3])
    who, now = old.config.cluster_name, new.config.cluster_name
    new.wait_for(lambda: all(f"cluster {who!r}, this node belongs to {now!r}"
                             in new.node(i).log_text() for i in (1, 2)), 15,
                 "the new nodes to refuse the old node's hello")
    old.wait_for(lambda: f"cluster {now!r}, this node belongs to {who!r}"
                 in old.node(3).log_text(), 15, "the old node to refuse the new nodes' hello")
    # The new cluster: same leader, same term, the backed-up state only, its own members.
    assert new.current_leader() == lead and new.status(lead)["term"] == term
    with Client([new.node(i).client_addr for i in (1, 2)], learn_members=False) as c:
        assert c.get("o5") == b"old" and c.get("later5") is None
        c.put("new-write", "ok")
    st = old.status(3)
    assert st["role"] != "leader" and st["leader"] == 0
    with old.client(3) as c:
        assert c.get(b"new-write", stale=True).value is None
