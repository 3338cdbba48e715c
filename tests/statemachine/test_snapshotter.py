"""Snapshots written by a forked child (and in process): durable files that SnapshotStore finds
and that restore to the state at the snapshot's index; failures, misuse and cancellation.

Place in the architecture: tests of fastraft/statemachine/snapshotter.py with
fastraft/storage/snapshot.py.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from fastraft.errors import LocalProtocolError, StorageError
from fastraft.raft.messages import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine import snapshotter
from fastraft.storage.snapshot import SnapshotStore, snapshot_name

needs_fork = pytest.mark.skipif(not snapshotter.fork_available(), reason="no os.fork here")


def meta(m: KVStateMachine, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(m.applied_index, term, frozenset({1, 2, 3}))


def machine(smh, n: int = 3000) -> KVStateMachine:
    m = KVStateMachine()
    m.apply(1, smh.register(1))
    m.apply_entries(2, [(1, smh.put(2, 1, i + 1, i + 1, b"k%05d" % i, b"v%d" % i))
                        for i in range(n)])
    return m


def children() -> set[int]:
    """Our own child processes, zombies included (Linux /proc)."""
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            out.add(int(pid))
    return out



async def _until_running(timeout: float = 10.0) -> None:
    """Yield to the loop until a snapshot has started (polled against a deadline)."""
    deadline = time.monotonic() + timeout
    while not snapshotter.snapshot_running():
        assert time.monotonic() < deadline, "the snapshot never started"
        await asyncio.sleep(0)

@needs_fork
def test_fork_snapshot_is_found_and_restores(smh, tmp_path):
    m = machine(smh)
    store = SnapshotStore(tmp_path / "snaps")
    stats: dict = {}
    path = asyncio.run(snapshotter.take_snapshot(m, store, meta(m), stats))
    assert path == os.path.join(store.directory, snapshot_name(1, m.applied_index))
    assert set(stats) == {"fork_s", "total_s"}
    found = store.latest()
    assert found is not None and found[1] == path and found[0] == meta(m)
    r = KVStateMachine.restore(store.read_chunks(path))
    assert smh.state(r) == smh.state(m)
    assert not snapshotter.snapshot_running()


@needs_fork
def test_the_parent_goes_on_applying_while_the_child_writes(smh, tmp_path):
    m = machine(smh)
    frozen = smh.state(m)
    at = meta(m)
    store = SnapshotStore(tmp_path)

    async def main():
        task = asyncio.ensure_future(snapshotter.take_snapshot(m, store, at))
        await _until_running()                  # the task has forked by now
        assert snapshotter.snapshot_running()
        with pytest.raises(LocalProtocolError, match="already"):
            await snapshotter.take_snapshot(m, store, at)
        with pytest.raises(LocalProtocolError, match="already"):
            snapshotter.take_snapshot_sync(m, store, at)
        i = m.applied_index
        m.apply(i + 1, smh.put(3, 1, 99_999, 99_999, b"k00001", b"changed"))
        m.apply(i + 2, smh.delete(3, 1, 100_000, 100_000, b"k00002"))
        return await task

    path = asyncio.run(main())
    r = KVStateMachine.restore(store.read_chunks(path))
    assert smh.state(r) == frozen
    assert m.get(b"k00001") == b"changed" and r.get(b"k00001") == b"v1"


@needs_fork
def test_child_failure_raises_storage_error_with_its_reason(smh, tmp_path):
    m = machine(smh, 10)
    store = SnapshotStore(tmp_path)
    bad = SnapshotMeta(m.applied_index, 1, frozenset({1 << 64}))   # header cannot encode it
    with pytest.raises(StorageError, match="ValueError"):
        asyncio.run(snapshotter.take_snapshot(m, store, bad))
    assert store.names() == [] and os.listdir(tmp_path) == []
    assert not snapshotter.snapshot_running()
    # the store is still usable, in the parent and for the next child
    path = asyncio.run(snapshotter.take_snapshot(m, store, meta(m)))
    assert store.latest()[1] == path


@needs_fork
def test_cancelled_snapshot_kills_and_reaps_the_child(smh, tmp_path):
    m = machine(smh)
    store = SnapshotStore(tmp_path)
    before = children()

    async def main():
        task = asyncio.ensure_future(snapshotter.take_snapshot(m, store, meta(m)))
        await _until_running()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert children() == before                 # no zombie left behind
    assert not snapshotter.snapshot_running()
    SnapshotStore(tmp_path)                     # removes a .tmp the child may have left
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


@needs_fork
def test_old_snapshots_are_pruned_and_the_parent_store_sees_it(smh, tmp_path):
    m = machine(smh, 50)
    store = SnapshotStore(tmp_path, keep=2)
    paths = []
    for term in (1, 2, 3):
        paths.append(asyncio.run(snapshotter.take_snapshot(m, store, meta(m, term))))
    assert store.paths() == paths[1:]
    assert store.latest()[1] == paths[-1]


def test_in_process_snapshot(smh, tmp_path):
    m = machine(smh, 500)
    store = SnapshotStore(tmp_path)
    path = snapshotter.take_snapshot_sync(m, store, meta(m))
    assert store.latest()[1] == path
    assert smh.state(KVStateMachine.restore(store.read_chunks(path))) == smh.state(m)


def test_misuse_is_refused_before_anything_runs(smh, tmp_path):
    m = machine(smh, 10)
    store = SnapshotStore(tmp_path)
    wrong = SnapshotMeta(m.applied_index - 1, 1, frozenset({1}))
    with pytest.raises(LocalProtocolError, match="applied index"):
        snapshotter.take_snapshot_sync(m, store, wrong)
    snapshotter.take_snapshot_sync(m, store, meta(m, 5))
    with pytest.raises(LocalProtocolError, match="older"):
        snapshotter.take_snapshot_sync(m, store, meta(m, 4))
    if snapshotter.fork_available():
        with pytest.raises(LocalProtocolError, match="older"):
            asyncio.run(snapshotter.take_snapshot(m, store, meta(m, 4)))
        with pytest.raises(LocalProtocolError, match="applied index"):
            asyncio.run(snapshotter.take_snapshot(m, store, wrong))
    assert not snapshotter.snapshot_running()


CHILD_SCRIPT = r"""
import asyncio, atexit, sys
from fastraft import codec
from fastraft.raft.messages import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.snapshotter import take_snapshot
from fastraft.storage.snapshot import SnapshotStore

atexit.register(lambda: print("atexit ran"))
m = KVStateMachine()
m.apply(1, codec.encode_command([codec.CMD_REGISTER, 1]))
sys.stdout.write("buffered before the fork\n")        # stdout is a pipe: not flushed yet
path = asyncio.run(take_snapshot(m, SnapshotStore(sys.argv[1]),
                                 SnapshotMeta(1, 1, frozenset({1}))))
print("done", path)
"""


@needs_fork
def test_child_runs_no_atexit_handler_and_flushes_no_parent_buffer(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "buffered before the fork"
    assert lines.count("buffered before the fork") == 1
    assert lines.count("atexit ran") == 1
    assert lines[1].startswith("done ") and len(lines) == 3


ORPHAN_SCRIPT = r"""
import asyncio, os, signal, sys, time
from fastraft import codec
from fastraft.raft.messages import SnapshotMeta
from fastraft.statemachine import KVStateMachine
from fastraft.statemachine.snapshotter import take_snapshot
from fastraft.storage.snapshot import SnapshotStore

SnapshotStore.save = lambda self, meta, chunks: time.sleep(120)    # a child that takes long
m = KVStateMachine()
m.apply(1, codec.encode_command([codec.CMD_REGISTER, 1]))

async def main():
    task = asyncio.ensure_future(take_snapshot(m, SnapshotStore(sys.argv[1]),
                                               SnapshotMeta(1, 1, frozenset({1}))))
    me = str(os.getpid())
    deadline = time.monotonic() + 10
    found = []
    while not found and time.monotonic() < deadline:     # poll until the child exists
        await asyncio.sleep(0.01)
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[1] == me:
                            found.append(pid)
                except OSError:
                    pass
    for pid in found:
        print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _running_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_killed_parent_takes_its_snapshot_child_with_it(tmp_path):
    import subprocess
    import sys
    import time
    proc = subprocess.run([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    pids = [int(x) for x in proc.stdout.split()]
    assert len(pids) == 1
    # PR_SET_PDEATHSIG: the child is SIGKILLed with its parent (then reaped by init). Wait
    # for that with a generous deadline: the assertion is on the outcome, not on the time.
    deadline = time.monotonic() + 30
    while _running_state(pids[0]) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _running_state(pids[0]) in (None, "Z")
