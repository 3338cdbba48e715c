"""A data directory belongs to the storage backend that first opened it.

`fastraft node --storage sqlite` on a directory holding WAL data used to start an empty node
(term 0, no vote, no log: a node that forgot its vote breaks Raft's safety), and switching back
resurrected the old state. Now the directory's BACKEND marker (written durably at the first
start; recognised from the contents for a directory from before the marker) must name the
backend asked for, else the node exits with code 2 and a one-line message naming both
backends and what to do. Real node processes (the harness) plus unit tests of the functions
(``fastraft.datadir.claim_backend``, ``read_backend_marker``,
``fastraft.server.backends.backends_present``).
"""

from __future__ import annotations

import os

import pytest

from fastraft.datadir import BACKEND_NAME, claim_backend, read_backend_marker
from fastraft.errors import ConfigError
from fastraft.server.backends import SQLITE_FILE, WAL_DIR, backends_present

FAST = {"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300}
OTHER = {"wal": "sqlite", "sqlite": "wal"}


def _write(cl, n: int, prefix: bytes = b"k") -> dict:
    lead = cl.leader()
    acked = {}
    with cl.client(lead) as c:
        sid = c.register().expect_ok()
        for seq in range(1, n + 1):
            key, value = prefix + b"%03d" % seq, b"v%d" % seq
            assert c.put(sid, seq, key, value, first_unacked=seq).ok
            acked[key] = value
    return acked


def _refused(cl, i: int, storage: str) -> str:
    """Start node ``i`` with ``--storage storage``; it must exit with code 2. Returns the
    log lines of that start."""
    n = cl.node(i)
    before = len(n.log_text())
    n.next_args = ["--storage", storage]
    cl.start([i], wait=False)
    cl.wait_for(lambda: n.proc.poll() is not None, 20, f"node {i} to refuse --storage {storage}")
    code = n._reap()
    out = n.log_text()[before:]
    assert code == 2, out
    return out


def _check_data(cl, acked: dict, term_before: int) -> None:
    lead = cl.leader()
    st = cl.status(lead)
    assert st["term"] >= term_before
    cl.wait_applied(st["commit"], ids=[lead])
    with cl.client(lead) as c:
        got = dict((k, v) for k, v in c.scan(b"", limit=1000, stale=True).expect_ok())
    assert got == acked


@pytest.mark.parametrize("storage", ["wal", "sqlite"])
def test_another_backend_is_refused_and_the_data_stays(cluster_factory, storage):
    cl = cluster_factory(1, tuning=FAST, storage=storage)
    acked = _write(cl, 30)
    term = cl.status(1)["term"]
    node_dir = cl.node(1).data_dir
    assert read_backend_marker(node_dir) == storage
    assert cl.terminate(1) == 0
    other = OTHER[storage]
    out = _refused(cl, 1, other)
    line = next(ln for ln in out.splitlines() if "storage backend" in ln)
    assert f"belongs to the {storage!r} storage backend" in line
    assert f"asked to use {other!r}" in line
    assert "no migration between backends" in line and "--rejoin" in line
    assert "recovered:" not in out          # refused before the backend opened anything
    assert backends_present(node_dir) == {storage}
    # Back with its own backend: everything is there, nothing was reset.
    cl.start([1])
    _check_data(cl, acked, term)


def test_a_directory_from_before_the_marker_is_recognised(cluster_factory):
    cl = cluster_factory(1, tuning=FAST)
    acked = _write(cl, 20)
    term = cl.status(1)["term"]
    node_dir = cl.node(1).data_dir
    marker = os.path.join(node_dir, BACKEND_NAME)
    assert cl.terminate(1) == 0
    os.unlink(marker)           # as a fastraft from before the marker left it
    out = _refused(cl, 1, "sqlite")
    assert "belongs to the 'wal' storage backend" in out
    assert read_backend_marker(node_dir) == "wal"           # rewritten from the contents
    assert not os.path.exists(os.path.join(node_dir, SQLITE_FILE))
    os.unlink(marker)
    cl.start([1])
    assert "holds wal data from before the backend marker" in cl.node(1).log_text()
    assert read_backend_marker(node_dir) == "wal"
    _check_data(cl, acked, term)


def test_a_cluster_member_is_refused_too(cluster_factory):
    """In a 3-node cluster: the refused node exits 2; the others go on; back on its own
    backend it has everything."""
    cl = cluster_factory(3, tuning=FAST)
    acked = _write(cl, 20)
    victim = next(i for i in cl.ids if i != cl.leader())
    assert cl.terminate(victim) == 0
    _refused(cl, victim, "sqlite")
    acked.update(_write(cl, 20, b"m"))     # written while it was down
    cl.start([victim])
    cl.wait_applied(cl.status(cl.leader())["commit"], ids=[victim])
    with cl.client(victim) as c:
        got = dict((k, v) for k, v in c.scan(b"", limit=1000, stale=True).expect_ok())
    assert got == acked


# -- the functions ----------------------------------------------------------------------------

def test_claim_backend_on_a_new_directory_writes_the_marker(tmp_path):
    d = str(tmp_path)
    assert read_backend_marker(d) is None
    assert claim_backend(d, "sqlite", backends_present(d)) == "new"
    assert (tmp_path / BACKEND_NAME).read_text() == "sqlite\n"
    assert claim_backend(d, "sqlite") == "marker"
    with pytest.raises(ConfigError) as e:
        claim_backend(d, "wal")
    msg = str(e.value)
    assert "\n" not in msg
    assert "'sqlite'" in msg and "'wal'" in msg and "--rejoin" in msg
    assert "no migration" in msg
    assert not (tmp_path / (BACKEND_NAME + ".tmp")).exists()


def test_backends_present_and_legacy_recognition(tmp_path):
    d = str(tmp_path)
    assert backends_present(d) == set()
    os.mkdir(os.path.join(d, WAL_DIR))
    (tmp_path / WAL_DIR / "not-a-segment.log").write_bytes(b"")
    assert backends_present(d) == set()         # an empty wal/ holds no data
    (tmp_path / WAL_DIR / "wal-0000000000000000-0000000000000001.log").write_bytes(b"x")
    assert backends_present(d) == {"wal"}
    with pytest.raises(ConfigError, match="belongs to the 'wal'"):
        claim_backend(d, "sqlite", backends_present(d))
    assert read_backend_marker(d) == "wal"      # the contents decided, and it is recorded
    os.unlink(os.path.join(d, BACKEND_NAME))
    assert claim_backend(d, "wal", backends_present(d)) == "recognised"
    (tmp_path / SQLITE_FILE).write_bytes(b"")
    assert backends_present(d) == {"wal", "sqlite"}
    assert claim_backend(d, "wal", backends_present(d)) == "marker"   # the marker wins
    os.unlink(os.path.join(d, BACKEND_NAME))
    with pytest.raises(ConfigError, match="several storage backends"):
        claim_backend(d, "wal", backends_present(d))
    assert read_backend_marker(d) is None       # nothing guessed


@pytest.mark.parametrize("content", [b"", b"\n", b"wal sqlite\n", b"\xff\xfe", b"../x"])
def test_a_damaged_marker_is_refused(tmp_path, content):
    (tmp_path / BACKEND_NAME).write_bytes(content)
    with pytest.raises(ConfigError, match="damaged"):
        claim_backend(str(tmp_path), "wal")
