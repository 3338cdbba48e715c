"""A received snapshot's state is built off the loop and swapped in by the install.

Place in the architecture: tests of the runtime's storage backends (``fastraft/server/
backends.py``: ``prepare`` on a worker thread, ``install`` on the loop, ``drop_prepared``) and
of the peer transport's call to ``prepare`` (``fastraft/server/peers.py``), without processes:
real backends in a temporary directory, the peer transport fed frames by hand. The end-to-end
test (a follower installing a million keys while it keeps answering) is
tests/integration/test_snapshot_install.py.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from fastraft import codec
from fastraft.config import Tuning
from fastraft.core import encode_frame
from fastraft.errors import StorageError
from fastraft.raft.messages import Message, MsgType, Snapshot, SnapshotMeta
from fastraft.server import peers
from fastraft.server.backends import open_backend
from fastraft.statemachine import KVStateMachine, KVStore
from fastraft_test_waiting import until  # tests/conftest.py loads it

VOTERS = frozenset({1, 2, 3})
META = SnapshotMeta(40, 2, VOTERS)
OTHER = SnapshotMeta(50, 3, VOTERS)


def _machine(index: int, keys: int = 3000, tag: bytes = b"v") -> KVStateMachine:
    names = [b"k%06d" % i for i in range(keys)]
    m = KVStateMachine()
    m._kv = KVStore.from_sorted(names, [tag + n for n in names])
    m.applied_index = index
    return m


def _backend(tmp_path, kind: str = "wal"):
    b = open_backend(kind, str(tmp_path / f"node-{kind}"), VOTERS, Tuning(storage=kind))
    b.open()
    return b


def _save(b, meta: SnapshotMeta, tag: bytes = b"v") -> Snapshot:
    return Snapshot(meta, b.snaps.save(meta, _machine(meta.index, tag=tag).snapshot_chunks()))


def _in_thread(fn, *args) -> None:
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join(30)
    assert not t.is_alive()


def _kv(machine) -> list:
    return machine.scan(b"", 1 << 30)


@pytest.mark.parametrize("kind", ["wal", "sqlite"])
def test_the_install_swaps_in_the_state_prepared_for_that_snapshot(tmp_path, kind):
    b = _backend(tmp_path, kind)
    snap = _save(b, META)
    expected = _kv(_machine(META.index))
    _in_thread(b.snaps.prepare, snap.data, META)
    os.unlink(snap.data)            # the install must not read the file again
    b.persist_snapshot(snap)
    b.store.sync()
    took = b.install(snap)
    assert took is not None and took >= 0
    assert b.machine.applied_index == META.index and _kv(b.machine) == expected
    assert b._prepared is None
    b.close()


def test_the_wal_install_takes_the_very_machine_built_off_the_loop(tmp_path):
    b = _backend(tmp_path)
    snap = _save(b, META)
    _in_thread(b.prepare, snap.data, META)
    built = b._prepared.machine
    assert b.install(snap) is not None and b.machine is built
    b.close()


@pytest.mark.parametrize("kind", ["wal", "sqlite"])
def test_a_state_prepared_for_another_snapshot_is_dropped_and_the_file_restored(tmp_path,
                                                                                kind):
    b = _backend(tmp_path, kind)
    first = _save(b, META, tag=b"old")
    _in_thread(b.prepare, first.data, META)
    snap = _save(b, OTHER, tag=b"new")
    b.persist_snapshot(snap)
    b.store.sync()
    assert b.install(snap) is None         # restored here, from the file
    assert b.machine.applied_index == OTHER.index
    assert _kv(b.machine) == _kv(_machine(OTHER.index, tag=b"new"))
    assert b._prepared is None
    b.close()


def test_a_same_index_of_another_term_is_another_snapshot(tmp_path):
    b = _backend(tmp_path)
    first = _save(b, META, tag=b"old")
    _in_thread(b.prepare, first.data, META)
    other_term = META._replace(term=META.term + 1)
    snap = _save(b, other_term, tag=b"new")
    assert b.install(snap) is None
    assert _kv(b.machine) == _kv(_machine(META.index, tag=b"new"))
    b.close()


@pytest.mark.parametrize("kind", ["wal", "sqlite"])
def test_a_damaged_stream_fails_the_install_as_a_storage_error_as_before(tmp_path, kind):
    """A file whose checksum holds but whose state stream is garbage: building it off the
    loop fails quietly; the install raises the StorageError it raised before (and leaves
    the state alone)."""
    b = _backend(tmp_path, kind)
    path = b.snaps.save(META, b"\x93 not a state machine stream")
    snap = Snapshot(META, path)
    with pytest.raises(StorageError, match="cannot install snapshot") as before:
        b.install(snap)                     # without a prepared state: restored here
    _in_thread(b.prepare, path, META)
    assert b._prepared is not None and b._prepared.error is not None
    with pytest.raises(StorageError, match="cannot install snapshot") as after:
        b.install(snap)
    assert type(after.value.__cause__) is type(before.value.__cause__)
    assert str(after.value) == str(before.value)
    assert b.machine.applied_index == 0
    b.close()


def test_a_file_gone_before_the_build_fails_the_install_as_a_storage_error(tmp_path):
    b = _backend(tmp_path)
    snap = _save(b, META)
    os.unlink(snap.data)
    _in_thread(b.prepare, snap.data, META)
    with pytest.raises(StorageError, match="cannot install snapshot"):
        b.install(snap)
    b.close()


def test_a_prepared_state_the_log_has_passed_is_dropped(tmp_path):
    """The engine refused the SNAP (it had that much already): once the log is applied up
    to the snapshot, its prepared state is freed."""
    b = _backend(tmp_path)
    snap = _save(b, META)
    _in_thread(b.prepare, snap.data, META)
    b.drop_prepared(META.index - 1)
    assert b._prepared is not None
    b.drop_prepared(META.index)
    assert b._prepared is None
    assert b.install(snap) is None          # still installable: restored from the file
    b.close()


def test_nothing_is_built_for_a_snapshot_already_applied(tmp_path):
    b = _backend(tmp_path)
    snap = _save(b, META)
    b.machine.applied_index = META.index
    _in_thread(b.prepare, snap.data, META)
    assert b._prepared is None
    b.close()


def test_closing_abandons_a_state_being_built(tmp_path):
    b = _backend(tmp_path)
    snap = _save(b, META)
    pieces = b._pieces

    def pieces_then_close(path):
        it = pieces(path)
        yield next(it)
        b.close()                   # the node stops while the state is being built
        yield from it

    b._pieces = pieces_then_close
    _in_thread(b.prepare, snap.data, META)
    assert b._prepared is None


# -- the peer transport calls prepare after adopting, before stepping the SNAP ---------------

class _Node:
    def __init__(self) -> None:
        self.got: list = []
        self.fatal_reason = None

    def on_peer_message(self, m):
        self.got.append(m)
        return None

    def fatal(self, reason: str) -> None:
        self.fatal_reason = reason

    def peer_refused(self, pid, addr=""):
        return None

    def on_peer_closed(self, pid) -> None:
        pass


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data) -> None:
        pass

    def abort(self) -> None:
        self.closing = True

    close = abort

    def is_closing(self) -> bool:
        return self.closing


_until = until


def test_the_transport_prepares_the_state_before_stepping_the_snap(tmp_path):
    b = _backend(tmp_path)
    data_path = _save(b, META).data
    with open(data_path, "rb") as f:
        data = f.read()
    os.unlink(data_path)
    node = _Node()
    calls = []
    gate = threading.Event()
    real_prepare = b.prepare

    def prepare(path, meta):
        calls.append((path, meta, threading.current_thread(), list(node.got)))
        assert gate.wait(10)
        real_prepare(path, meta)

    b.prepare = prepare
    term = 3
    chunks = [codec.encode_snap_chunk(META.term, META.index, off, data[off:off + 8192])
              for off in range(0, len(data), 8192)]
    snap_msg = codec.encode_message(Message(MsgType.SNAP, 2, 1, term,
                                            snapshot=Snapshot(META)), len(data))
    append = codec.encode_message(Message(MsgType.APP, 2, 1, term, log_term=META.term,
                                          index=META.index, entries=[(term, b"x")]))
    heartbeat = codec.encode_message(Message(MsgType.HEARTBEAT, 2, 1, term, commit=5))

    async def main():
        tr = peers.PeerTransport(node, 2, "c", ("127.0.0.1", 0), {1: ("127.0.0.1", 1)},
                                 b.snaps, 1 << 20)
        conn = peers._Inbound(tr)
        conn.connection_made(_Transport())
        frames = [codec.encode_hello("c", 1, 2), *chunks, snap_msg, append, heartbeat]
        conn.data_received(b"".join(encode_frame(f) for f in frames))
        await _until(lambda: calls, "prepare to be called")
        path, meta, thread, stepped = calls[0]
        assert meta == META and os.path.dirname(path) == b.snaps.directory
        assert os.path.exists(path)             # adopted first
        assert thread is not threading.current_thread()
        assert MsgType.SNAP not in [m.type for m in stepped]
        await _until(lambda: len(node.got) == 1, "the heartbeat")
        assert [m.type for m in node.got] == [MsgType.HEARTBEAT]    # the SNAP waits
        gate.set()
        await _until(lambda: len(node.got) == 3, "the SNAP and the append")
        assert [m.type for m in node.got] == [MsgType.HEARTBEAT, MsgType.SNAP, MsgType.APP]
        assert b._prepared is not None and b._prepared.index == META.index
        snap = node.got[1].snapshot
        assert b.install(snap) is not None and b.machine.applied_index == META.index
        assert node.fatal_reason is None
        await tr.close()

    asyncio.run(main())
    b.close()
