"""kill -9 of a real process in the middle of appends and syncs, for both backends: a restart
holds every entry whose sync had returned (the child reports each one on a pipe before it can
be killed), and nothing but a prefix of what was written."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import sys
from fastraft.raft.messages import EntryBatch, HardState
kind, path = sys.argv[1], sys.argv[2]
if kind == "wal":
    from fastraft.storage.wal import WalStore
    store = WalStore.open(path, segment_size=64 * 1024)
else:
    from fastraft.storage.sqlite import SqliteStore
    store = SqliteStore(path)
i = store.last_index + 1
term = 1
while True:
    n = (i * 7) % 23 + 1
    store.append(EntryBatch(i, [(term, b"e%d" % j) for j in range(i, i + n)]))
    store.save_hard_state(HardState(term, 1, i + n - 1))
    store.sync()
    i += n
    sys.stdout.write(f"{i - 1}\n")
    sys.stdout.flush()
"""


def _open(kind, path):
    if kind == "wal":
        from fastraft.storage.wal import WalStore
        return WalStore.open(path, segment_size=64 * 1024)
    from fastraft.storage.sqlite import SqliteStore
    return SqliteStore(path)


@pytest.mark.parametrize("kind", ["wal", "sqlite"])
@pytest.mark.parametrize("seed", range(4))
def test_kill9_keeps_every_synced_entry(tmp_path, kind, seed):
    rng = random.Random(seed)
    path = str(tmp_path / ("wal" if kind == "wal" else "db.sqlite"))
    synced = 0
    for round_ in range(3):
        p = subprocess.Popen([sys.executable, "-c", CHILD, kind, path],
                             stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        target = rng.randint(5, 60)
        seen = 0
        while seen < target and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            synced = int(line)
            seen += 1
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        for line in p.stdout.read().split():   # reported before the kill landed
            synced = int(line)
        store = _open(kind, path)
        try:
            st = store.recovered()
            assert store.last_index >= synced, (
                f"seed {seed} round {round_}: synced up to {synced}, recovered "
                f"{store.last_index}")
            for k, (term, payload) in enumerate(st.entries, st.first_index):
                assert (term, payload) == (1, b"e%d" % k), f"seed {seed}: entry {k} is wrong"
        finally:
            store.close()
