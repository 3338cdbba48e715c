"""Directory-entry durability: a power failure right after a node's first start must not take
its data directory (or anything in it) away.

Uses tests/crashfs.py: a process records every name it creates, renames or removes and every
directory fsync; after a kill -9, ``crash()`` undoes each name no later fsync of its directory
covered (what POSIX allows a file system to lose at a power failure). First the layer itself,
then the durable-creation helpers and stores, then a real 3-node cluster: started fresh,
written to, every node killed, the crash simulated, restarted: every acknowledged write, every
term and the leader's vote must still be there. Linux only.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parents[1])


def _load(name: str, path: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


crashfs = _load("fastraft_tests_crashfs", os.path.join(TESTS, "crashfs.py"))

pytestmark = pytest.mark.skipif(not crashfs.supported(),
                                reason="the crash layer needs Linux (/proc/self/fd)")

PRELUDE = (f"import sys; sys.path.append({TESTS!r}); import crashfs; "
           "crashfs.install(sys.argv[1]); sys.argv[1:2] = []\n")


def run_crashfs(journal, code: str, *args) -> str:
    """Run ``code`` in a new process with the crash layer installed; returns its stdout."""
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(journal),
                          *map(str, args)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def tree(root) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out += [os.path.normpath(os.path.join(rel, n)) + "/" for n in dirnames]
        out += [os.path.normpath(os.path.join(rel, n)) for n in filenames]
    return sorted(out)


# -- the crash layer itself -------------------------------------------------------------------

def test_a_file_created_without_a_directory_fsync_disappears(tmp_path):
    root = tmp_path / "root"
    root.mkdir()            # made by this (unrecorded) process: durable
    run_crashfs(tmp_path / "j", """
        import os
        root = sys.argv[1]
        fd = os.open(os.path.join(root, "kept"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        d = os.open(root, os.O_RDONLY); os.fsync(d); os.close(d)
        with open(os.path.join(root, "lost"), "w") as f:        # after the directory fsync:
            f.write("x"); f.flush(); os.fsync(f.fileno())     # a file fsync is not enough
        open(os.path.join(root, "after"), "w").close()
        """, root)
    assert tree(root) == ["after", "kept", "lost"]
    undone = crashfs.crash(str(tmp_path / "j"), str(root))
    assert tree(root) == ["kept"]
    assert sorted(os.path.basename(e["path"]) for e in undone) == ["after", "lost"]


def test_an_unsynced_directory_takes_everything_in_it_along(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    run_crashfs(tmp_path / "j", """
        import os
        root = sys.argv[1]
        os.makedirs(os.path.join(root, "a", "b"))
        open(os.path.join(root, "a", "b", "f"), "w").close()
        for d in ("a", "a/b"):          # the insides synced, root (holding "a") not
            fd = os.open(os.path.join(root, d), os.O_RDONLY); os.fsync(fd); os.close(fd)
        """, root)
    crashfs.crash(str(tmp_path / "j"), str(root))
    assert tree(root) == []


def test_renames_and_removals_without_a_fsync_are_undone(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "target").write_text("old")
    (root / "doomed").write_text("keep me")
    (root / "gone").write_text("really")
    run_crashfs(tmp_path / "j", """
        import os
        root = sys.argv[1]
        p = lambda n: os.path.join(root, n)
        with open(p("target.tmp"), "w") as f:
            f.write("new")
        d = os.open(root, os.O_RDONLY); os.fsync(d); os.close(d)   # target.tmp durable
        os.replace(p("target.tmp"), p("target"))
        os.unlink(p("gone"))
        d = os.open(root, os.O_RDONLY); os.fdatasync(d); os.close(d)
        os.unlink(p("doomed"))
        """, root)
    assert tree(root) == ["target"]
    crashfs.crash(str(tmp_path / "j"), str(root))
    # The replace was synced; the last removal was not.
    assert tree(root) == ["doomed", "target"]
    assert (root / "target").read_text() == "new"
    assert (root / "doomed").read_text() == "keep me"


def test_an_unsynced_replace_brings_the_old_file_back(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "target").write_text("old")
    run_crashfs(tmp_path / "j", """
        import os
        root = sys.argv[1]
        with open(os.path.join(root, "target.tmp"), "w") as f:
            f.write("new")
        os.replace(os.path.join(root, "target.tmp"), os.path.join(root, "target"))
        """, root)
    crashfs.crash(str(tmp_path / "j"), str(root))
    assert tree(root) == ["target"]
    assert (root / "target").read_text() == "old"


def test_forked_children_are_recorded_too(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    run_crashfs(tmp_path / "j", """
        import os
        root = sys.argv[1]
        pid = os.fork()
        if pid == 0:
            open(os.path.join(root, "child"), "w").close()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
        """, root)
    events = crashfs.read_journal(str(tmp_path / "j"))
    assert any(e["op"] == "create" and e["path"].endswith("child") and e["pid"] != os.getpid()
               for e in events)
    crashfs.crash(str(tmp_path / "j"), str(root))
    assert tree(root) == []


# -- the durable-creation helpers and the stores ----------------------------------------------

def test_helpers_make_every_name_durable(tmp_path):
    """makedirs_durable, write_file_durable, remove_durable and lock_data_dir: nothing they
    made is undone by the crash; plain os.makedirs (the old way) loses everything."""
    root = tmp_path / "root"
    root.mkdir()
    run_crashfs(tmp_path / "j", """
        import os
        from fastraft.datadir import (lock_data_dir, makedirs_durable, remove_durable,
                                      write_file_durable)
        root = sys.argv[1]
        assert makedirs_durable(os.path.join(root, "a", "b", "c")) == [
            os.path.join(root, "a"), os.path.join(root, "a", "b"),
            os.path.join(root, "a", "b", "c")]
        assert makedirs_durable(os.path.join(root, "a", "b", "c")) == []
        write_file_durable(os.path.join(root, "a", "MARK"), b"one")
        write_file_durable(os.path.join(root, "a", "MARK"), b"two")
        write_file_durable(os.path.join(root, "a", "GONE"), b"x")
        assert remove_durable(os.path.join(root, "a", "GONE"))
        assert not remove_durable(os.path.join(root, "a", "GONE"))
        lock_data_dir(os.path.join(root, "data", "1"))
        os.makedirs(os.path.join(root, "plain", "x"))
        """, root)
    crashfs.crash(str(tmp_path / "j"), str(root))
    assert tree(root) == ["a/", "a/MARK", "a/b/", "a/b/c/", "data/", "data/1/", "data/1/LOCK"]
    assert (root / "a" / "MARK").read_bytes() == b"two"


@pytest.mark.parametrize("backend", ["wal", "sqlite"])
def test_a_backend_directory_survives_the_crash(tmp_path, backend):
    """A node's backend opened in a fresh DATA/1 (the node's lock first, as run_node does):
    its directories and (for the WAL) its segment and snapshot directory stay."""
    root = tmp_path / "data"
    run_crashfs(tmp_path / "j", """
        import os
        from fastraft.config import Tuning
        from fastraft.datadir import claim_backend, lock_data_dir
        from fastraft.raft.messages import EntryBatch, HardState
        from fastraft.server.backends import open_backend
        node_dir, kind = sys.argv[1], sys.argv[2]
        lock_data_dir(node_dir)
        claim_backend(node_dir, kind)
        b = open_backend(kind, node_dir, frozenset({1}), Tuning(storage=kind))
        b.open()
        b.store.append(EntryBatch(1, [(1, b"e1")]))
        b.store.save_hard_state(HardState(1, 1, 1))
        b.store.sync()
        b.close()
        """, root / "1", backend)
    crashfs.crash(str(tmp_path / "j"), str(root))
    names = tree(root)
    assert {"1/", "1/BACKEND", "1/LOCK", "1/snap/"} <= set(names), names
    if backend == "wal":
        assert "1/wal/" in names and any(re.fullmatch(r"1/wal/wal-.*\.log", n) for n in names)
        from fastraft.storage.wal import WalStore
        store = WalStore.open(str(root / "1" / "wal"))
        assert store.last_index == 1 and store.recovered().hard_state.term == 1
        store.close()
    else:
        assert "1/fastraft.db" in names


# -- a real cluster through a power failure ---------------------------------------------------

def _harness():
    return _load("fastraft_itest_harness", os.path.join(TESTS, "integration", "harness.py"))


def _crashfs_node_cmd(journal: str):
    harness = _harness()

    def cmd(i, cfg, data):
        argv = harness.default_node_cmd(i, cfg, data)
        assert argv[argv.index("-m") + 1] == "fastraft", argv
        code = (f"import sys; sys.path.append({TESTS!r}); import crashfs; "
                f"crashfs.install({journal!r}); from fastraft.cli import main; "
                f"raise SystemExit(main({argv[argv.index('-m') + 2:]!r} + sys.argv[1:]))")
        return [sys.executable, "-P", "-c", code]
    return cmd


def _recovered(node) -> tuple[int, int, int]:
    """(term, vote, last index) from the node's last 'recovered:' log line."""
    lines = re.findall(r"recovered: log \d+\.\.(\d+), term (\d+), vote (\d+)", node.log_text())
    assert lines, node.log_tail()
    last, term, vote = map(int, lines[-1])
    return term, vote, last


def test_power_failure_after_the_first_start_loses_nothing_acknowledged(tmp_path):
    """A fresh 3-node WAL cluster (every node creates its data directory), some writes (and
    a snapshot, taken by a forked child), kill -9 of every node, the power failure, a normal
    restart: every acknowledged write is there, no node forgot its term, the leader its vote.
    (Before the fix every node's directory vanished: all three came back at term 0.)"""
    harness = _harness()
    journal = str(tmp_path / "journal")
    cl = harness.Cluster(tmp_path / "cluster", 3,
                         tuning={"tick_ms": 10, "heartbeat_ms": 30, "election_timeout_ms": 300,
                                 "snapshot_threshold": 60, "snapshot_keep_entries": 10},
                         node_cmd=_crashfs_node_cmd(journal))
    try:
        cl.start()
        lead = cl.leader()
        acked = {}
        with cl.client(lead) as c:
            sid = c.register().expect_ok()
            for seq in range(1, 101):
                key, value = b"k%03d" % seq, b"v%d" % seq
                assert c.put(sid, seq, key, value, first_unacked=seq).ok
                acked[key] = value
        cl.wait_for(lambda: re.search(r"snapshot at \d+ written", cl.node(lead).log_text()),
                    15, "a snapshot on the leader")
        cl.wait_applied(cl.status(lead)["commit"])
        before = {i: cl.status(i)["term"] for i in cl.ids}
        for i in cl.ids:
            cl.kill(i)
        undone = crashfs.crash(journal, cl.config.data_dir)
        lost = [e["path"] for e in undone]
        cl.node_cmd = harness.default_node_cmd
        cl.start()
        for i in cl.ids:
            term, vote, last = _recovered(cl.node(i))
            assert term >= before[i], (f"node {i} came back at term {term} (was {before[i]}); "
                                       f"the crash undid {lost[:8]}")
            assert last > 0, f"node {i} came back with an empty log"
        term, vote, _ = _recovered(cl.node(lead))
        assert vote == lead, f"the leader forgot its vote ({vote}); undone: {lost[:8]}"
        new_lead = cl.leader()
        cl.wait_applied(cl.status(new_lead)["commit"])
        for i in cl.ids:
            with cl.client(i) as c:
                got = dict((k, v) for k, v in
                           c.scan(b"k", limit=1000, stale=True).expect_ok())
            missing = [k for k in acked if got.get(k) != acked[k]]
            assert not missing, f"node {i} lost {len(missing)} acknowledged writes"
    finally:
        cl.close()


def test_the_rejoining_marker_survives_a_power_failure(tmp_path):
    """A wiped node started with --rejoin must not vote until caught up, across restarts:
    its REJOINING marker must outlive a power failure (else it comes back, without the
    marker, as a voter with an empty log)."""
    harness = _harness()
    journal = str(tmp_path / "journal")
    cl = harness.Cluster(tmp_path / "cluster", 3, node_cmd=_crashfs_node_cmd(journal))
    try:
        n = cl.node(3)      # alone: nobody can catch it up
        n.next_args = ["--rejoin"]
        cl.start([3])
        cl.wait_for(lambda: "rejoining after a data loss" in n.log_text(), 10,
                    "node 3 to start rejoining")
        cl.kill(3)
        undone = crashfs.crash(journal, cl.config.data_dir)
        cl.node_cmd = harness.default_node_cmd
        starts = n.log_text().count("rejoining after a data loss")
        cl.start([3])
        assert n.log_text().count("rejoining after a data loss") == starts + 1, (
            f"node 3 forgot it is rejoining; the crash undid {[e['path'] for e in undone]}")
    finally:
        cl.close()
