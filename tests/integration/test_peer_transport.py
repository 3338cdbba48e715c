"""The receiving side of the peer transport (``server/peers.py``): a snapshot's file work runs
off the event loop, in order, and what the sender sends after its SNAP waits for it (except
heartbeats of its term).

Place in the architecture: tests of one runtime part without processes or sockets: a real
``PeerTransport`` and a real ``SnapshotStore``, a fake node (records what it is handed) and a
fake socket transport fed frames by hand. The end-to-end snapshot transfers are in
test_node.py (a wiped node rejoining, mixed backends). Nothing here waits on the clock for
a result: the file worker is held by events, and the tests poll with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading

import pytest

from fastraft import codec
from fastraft.core import encode_frame
from fastraft.raft.messages import Message, MsgType, Snapshot, SnapshotMeta
from fastraft.server import peers
from fastraft.storage.snapshot import SnapshotStore, verify
from fastraft_test_waiting import until  # tests/conftest.py loads it

TERM = 3
META = SnapshotMeta(40, 2, frozenset({1, 2, 3}))


class Node:
    """The node as the transport calls it: records the messages and a fatal stop."""

    def __init__(self) -> None:
        self.got: list = []
        self.fatal_reason = None

    def on_peer_message(self, m):
        self.got.append(m)
        return None

    def on_unreachable(self, pid) -> None:
        pass

    def on_snapshot_sent(self, pid, ok) -> None:
        pass

    def on_peer_closed(self, pid) -> None:
        self.closed_peers = getattr(self, "closed_peers", []) + [pid]

    def fatal(self, reason: str) -> None:
        self.fatal_reason = reason

    def peer_refused(self, pid, addr=""):
        return None

    def peer_address(self, pid):
        return None

    def removed(self, why: str) -> None:
        self.removed_why = why


class Transport:
    """A socket transport that records what is written and whether it is read."""

    def __init__(self) -> None:
        self.written: list = []
        self.closing = False
        self.reading = True

    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.closing = True

    close = abort

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class GatedStore(SnapshotStore):
    """A snapshot store whose ``adopt`` waits for ``gate`` (and says it started)."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.thread = None

    def adopt(self, src, meta):
        self.thread = threading.current_thread()
        self.entered.set()
        if not self.gate.wait(5):
            raise AssertionError("adopt was never released (did it block the loop?)")
        return super().adopt(src, meta)


def _snapshot_bytes(tmp_path) -> bytes:
    path = SnapshotStore(tmp_path / "src").save(META, b"the state " * 1000)
    with open(path, "rb") as f:
        return f.read()


def _frames(*bodies) -> bytes:
    return b"".join(encode_frame(b) for b in bodies)


def _transport(node, store) -> "peers.PeerTransport":
    """Node 1's transport of cluster "c", with node 2 as its one peer (never dialled here)."""
    return peers.PeerTransport(node, 1, "c", ("127.0.0.1", 0), {2: ("127.0.0.1", 1)}, store,
                               1 << 20)


def _connect(tr) -> tuple:
    conn = peers._Inbound(tr)
    t = Transport()
    conn.connection_made(t)
    conn.data_received(_frames(codec.encode_hello("c", 2, 1)))
    assert conn.peer_id == 2 and not t.closing
    return conn, t


def _chunks(data: bytes, size: int = 4096) -> list:
    return [codec.encode_snap_chunk(META.term, META.index, off, data[off:off + size])
            for off in range(0, len(data), size)]


def _snap_msg(nbytes: int) -> bytes:
    return codec.encode_message(Message(MsgType.SNAP, 1, 2, TERM, snapshot=Snapshot(META)),
                                nbytes)


def _heartbeat(term: int = TERM) -> bytes:
    return codec.encode_message(Message(MsgType.HEARTBEAT, 1, 2, term, commit=5))


def _append() -> bytes:
    return codec.encode_message(Message(MsgType.APP, 1, 2, TERM, log_term=META.term,
                                        index=META.index, entries=[(TERM, b"x")]))


def _until(cond, what: str, timeout: float = 5.0):
    return until(cond, what, timeout)


def _types(node) -> list:
    return [m.type for m in node.got]


def test_adopting_runs_off_the_loop_and_holds_what_follows_the_snap(tmp_path):
    """While the received snapshot is verified and adopted (held here), the loop runs: a
    heartbeat of the SNAP's term is stepped at once, an append after the SNAP waits and is
    stepped after it, in order."""
    data = _snapshot_bytes(tmp_path)
    store = GatedStore(tmp_path / "snaps")

    async def main():
        node = Node()
        tr = _transport(node, store)
        conn, t = _connect(tr)
        conn.data_received(_frames(*_chunks(data), _snap_msg(len(data)), _append(),
                                   _heartbeat()))
        await _until(store.entered.is_set, "the adoption to start")
        assert store.thread is not threading.current_thread()
        assert _types(node) == [MsgType.HEARTBEAT]       # the append waits for the SNAP
        store.gate.set()
        await _until(lambda: len(node.got) == 3, "the SNAP and the append")
        assert _types(node) == [MsgType.HEARTBEAT, MsgType.SNAP, MsgType.APP]
        snap = node.got[1].snapshot
        assert snap.meta == META and verify(snap.data) == META
        assert os.path.dirname(snap.data) == store.directory
        assert not [n for n in os.listdir(store.directory) if n.startswith(peers.PART_PREFIX)]
        assert not t.closing and node.fatal_reason is None
        await tr.close()

    asyncio.run(main())


def test_a_slow_chunk_write_does_not_hold_heartbeats_and_keeps_chunk_order(tmp_path,
                                                                          monkeypatch):
    data = _snapshot_bytes(tmp_path)
    store = SnapshotStore(tmp_path / "snaps")
    gate = threading.Event()
    entered = threading.Event()
    write = peers._write_part

    def slow_write(part, chunk):
        entered.set()
        if not gate.wait(5):
            raise AssertionError("the write was never released")
        write(part, chunk)

    monkeypatch.setattr(peers, "_write_part", slow_write)

    async def main():
        node = Node()
        tr = _transport(node, store)
        conn, _t = _connect(tr)
        chunks = _chunks(data, 1000)
        conn.data_received(_frames(chunks[0], _heartbeat(), *chunks[1:]))
        conn.data_received(_frames(_append()))      # not after a SNAP: stepped at once
        await _until(entered.is_set, "the first write")
        assert _types(node) == [MsgType.HEARTBEAT, MsgType.APP]
        conn.data_received(_frames(_snap_msg(len(data))))
        gate.set()
        await _until(lambda: len(node.got) == 3, "the SNAP")
        assert verify(node.got[2].snapshot.data) == META    # the bytes, in order, CRC checked
        await tr.close()

    asyncio.run(main())


def test_frames_of_the_same_peer_on_a_new_connection_wait_too(tmp_path, monkeypatch):
    """The peer reconnects while its snapshot is adopted: what it sends on the new
    connection waits as well (its order is the peer's, not the connection's); past
    HELD_BYTES the connections stop being read until the SNAP is stepped."""
    monkeypatch.setattr(peers, "HELD_BYTES", 10)
    data = _snapshot_bytes(tmp_path)
    store = GatedStore(tmp_path / "snaps")

    async def main():
        node = Node()
        tr = _transport(node, store)
        old, t_old = _connect(tr)
        old.data_received(_frames(*_chunks(data), _snap_msg(len(data))))
        old.connection_lost(None)
        new, t_new = _connect(tr)
        new.data_received(_frames(_append(), _heartbeat(TERM + 1)))
        await _until(store.entered.is_set, "the adoption to start")
        assert node.got == [] and not t_new.reading
        store.gate.set()
        await _until(lambda: len(node.got) == 3, "the held frames")
        assert _types(node) == [MsgType.SNAP, MsgType.APP, MsgType.HEARTBEAT]
        assert t_new.reading
        await tr.close()

    asyncio.run(main())


def test_a_damaged_snapshot_closes_the_connection_and_drops_what_it_held(tmp_path):
    data = bytearray(_snapshot_bytes(tmp_path))
    data[100] ^= 0xff
    store = SnapshotStore(tmp_path / "snaps")

    async def main():
        node = Node()
        tr = _transport(node, store)
        conn, t = _connect(tr)
        conn.data_received(_frames(*_chunks(bytes(data)), _snap_msg(len(data)), _append()))
        await _until(lambda: t.closing, "the connection to close")
        await _until(lambda: not tr._held, "the held frames to be released")
        assert node.got == [] and node.fatal_reason is None
        assert os.listdir(store.directory) == []
        await tr.close()

    asyncio.run(main())


@pytest.mark.parametrize("when", ["open", "fsync"])
def test_a_snapshot_that_cannot_be_stored_stops_the_node(tmp_path, monkeypatch, when):
    data = _snapshot_bytes(tmp_path)
    store = SnapshotStore(tmp_path / "snaps")

    async def main():
        node = Node()
        tr = _transport(node, store)
        conn, t = _connect(tr)
        if when == "open":
            shutil.rmtree(store.directory)
            conn.data_received(_frames(*_chunks(data)))
        else:
            def no_fsync(fd):
                raise OSError(5, "Input/output error")
            monkeypatch.setattr(peers.os, "fsync", no_fsync)
            conn.data_received(_frames(*_chunks(data), _snap_msg(len(data))))
        await _until(lambda: node.fatal_reason is not None, "the node to stop")
        assert node.fatal_reason.startswith("cannot store a snapshot from node 2: ")
        assert t.closing and node.got == []
        monkeypatch.undo()
        await tr.close()

    asyncio.run(main())
