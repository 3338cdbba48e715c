"""The peer port under a flood: the per-source token bucket, the plaintext listener's
probation of connections over it, the TLS listener's refusal, and the least work a
connection gets before its hello.

Place in the architecture: tests of runtime parts (``fastraft/server/accept.py``,
``fastraft/server/tlsport.py``, ``fastraft/server/peers.py``) without node processes: a real
``PlainListener`` on a loopback port with raw client sockets, and a real ``PeerTransport``
fed by hand through a fake socket transport. The end-to-end flood is
tests/integration/test_peer_flood.py. Nothing waits on the clock for a result: the tests
poll with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from fastraft import codec
from fastraft.core import encode_frame
from fastraft.server import peers
from fastraft.server.accept import PlainListener, SourceLimiter
from fastraft.server.tlsport import TLSListener
from fastraft.storage.snapshot import SnapshotStore
from fastraft_test_waiting import until  # tests/conftest.py loads it

HELLO = encode_frame(codec.encode_hello("c", 2, 1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the token bucket -------------------------------------------------------------------------

def test_the_bucket_gives_a_burst_then_its_rate():
    clock = Clock()
    lim = SourceLimiter(burst=4, rate=2.0, clock=clock)
    assert [lim.take("a") for _ in range(5)] == [True] * 4 + [False]
    assert lim.take("b")                        # another source has its own bucket
    clock.now += 0.5                            # one token back
    assert lim.take("a") and not lim.take("a")
    clock.now += 100                            # never above the burst
    assert [lim.take("a") for _ in range(5)] == [True] * 4 + [False]


def test_a_token_given_back_is_spent_again_but_never_above_the_burst():
    lim = SourceLimiter(burst=2, rate=0.001, clock=Clock())
    assert lim.take("a") and lim.take("a") and not lim.take("a")
    lim.give_back("a")
    assert lim.take("a") and not lim.take("a")
    for _ in range(10):
        lim.give_back("a")
    assert lim.tokens("a") == 2
    lim.give_back("unknown")                    # nothing to give back to: no entry made
    assert "unknown" not in lim._buckets


def test_the_buckets_are_bounded():
    clock = Clock()
    lim = SourceLimiter(burst=2, rate=1.0, clock=clock, max_sources=10)
    for i in range(10):
        lim.take(f"h{i}")
    clock.now += 10                             # every bucket full again: forgotten
    lim.take("new")
    assert set(lim._buckets) == {"new"}
    for i in range(20):                         # none full: all forgotten when over
        lim.take(f"x{i}")
        lim.take(f"x{i}")
    assert len(lim._buckets) <= 10


# -- what a hello looks like to the probe ----------------------------------------------------

def test_the_probe_knows_a_hello_from_anything_else():
    probe = peers._probe_hello
    assert probe(HELLO) is True
    assert probe(HELLO + b"more") is True
    assert probe(HELLO[:3]) is None and probe(HELLO[:-1]) is None
    assert probe(struct.pack("<I", peers.HELLO_MAX + 1)) is False
    assert probe(encode_frame(codec.encode_welcome(1))) is False
    assert probe(encode_frame(b"\xc1garbage")) is False
    assert probe(b"GET / HTTP/1.1\r\n\r\n") is False


# -- the plaintext listener -------------------------------------------------------------------

class Recorder(asyncio.Protocol):
    made: list = []

    def __init__(self) -> None:
        self.data = b""
        Recorder.made.append(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        self.data += data


_until = until


async def _connect(port: int, send: bytes = b"") -> socket.socket:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    await loop.sock_connect(s, ("127.0.0.1", port))
    if send:
        await loop.sock_sendall(s, send)
    return s


async def _closed_by_node(s: socket.socket, timeout: float = 10.0) -> bool:
    """True when the other side closes ``s`` (EOF or reset) within ``timeout``."""
    loop = asyncio.get_running_loop()
    try:
        while await asyncio.wait_for(loop.sock_recv(s, 4096), timeout):
            pass
        return True
    except ConnectionError:
        return True
    except asyncio.TimeoutError:
        return False


def _listener(burst: int = 2, **kw) -> PlainListener:
    Recorder.made = []
    return PlainListener("peer", Recorder, SourceLimiter(burst=burst, rate=0.001),
                         peers._probe_hello, backlog=128, **kw)


def test_connections_within_the_limit_are_handed_over_at_once_even_silent():
    async def main():
        lst = _listener(burst=2)
        await lst.start("127.0.0.1", 0)
        port = lst.sockets[0].getsockname()[1]
        socks = [await _connect(port), await _connect(port)]
        await _until(lambda: len(Recorder.made) == 2, "two connections handed over")
        assert lst.limited == 0
        for s in socks:
            s.close()
        lst.close()
        await lst.wait_closed()

    asyncio.run(main())


def test_over_the_limit_only_a_hello_gets_in_and_the_source_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, "fastraft.peers")

    async def main():
        lst = _listener(burst=1, probation=0.3)
        await lst.start("127.0.0.1", 0)
        port = lst.sockets[0].getsockname()[1]
        first = await _connect(port)                      # the token
        await _until(lambda: len(Recorder.made) == 1, "the first connection")
        garbage = await _connect(port, b"\x00\x00\x10\x00 garbage")
        huge = await _connect(port, struct.pack("<I", 1 << 30))
        silent = await _connect(port)
        assert await _closed_by_node(garbage) and await _closed_by_node(huge)
        assert await _closed_by_node(silent)              # after the probation
        assert len(Recorder.made) == 1                   # none of them handed over
        peer = await _connect(port, HELLO)               # a peer of the same address
        await _until(lambda: len(Recorder.made) == 2, "the peer's connection")
        await _until(lambda: Recorder.made[1].data == HELLO, "its hello, read again")
        split = await _connect(port, HELLO[:5])          # a hello in two pieces
        await asyncio.sleep(0.05)
        await asyncio.get_running_loop().sock_sendall(split, HELLO[5:])
        await _until(lambda: len(Recorder.made) == 3, "the split hello's connection")
        assert lst.limited == 5 and lst.refused == 3
        for s in (first, garbage, huge, silent, peer, split):
            s.close()
        lst.close()
        await lst.wait_closed()

    asyncio.run(main())
    lines = [r for r in caplog.records if "rate-limiting peer connections" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0].getMessage()


def test_a_new_connection_on_probation_closes_the_oldest_waiting():
    async def main():
        lst = _listener(burst=1, probation=30.0, max_probation=3)
        await lst.start("127.0.0.1", 0)
        port = lst.sockets[0].getsockname()[1]
        first = await _connect(port)
        silent = [await _connect(port) for _ in range(4)]
        assert await _closed_by_node(silent[0])          # the oldest made room
        await _until(lambda: len(lst._probing) == 3, "three on probation")
        assert not await _closed_by_node(silent[3], timeout=0.2)
        peer = await _connect(port, HELLO)               # still gets in
        await _until(lambda: len(Recorder.made) == 2, "the peer's connection")
        for s in (first, peer, *silent):
            s.close()
        lst.close()
        await lst.wait_closed()

    asyncio.run(main())


# -- the TLS listener -------------------------------------------------------------------------

def test_the_tls_listener_closes_at_once_what_is_over_the_limit(caplog):
    caplog.set_level(logging.WARNING, "fastraft.tls")
    lst = TLSListener("peer", Recorder, None, 5.0, 128,
                      limiter=SourceLimiter(burst=2, rate=0.001))
    assert lst._within_limit(("10.0.0.1", 1)) and lst._within_limit(("10.0.0.1", 2))
    assert not lst._within_limit(("10.0.0.1", 3)) and not lst._within_limit(("10.0.0.1", 4))
    assert lst._within_limit(("10.0.0.2", 1))
    assert lst.limited == 2
    lines = [r for r in caplog.records if "rate-limiting TLS connections" in r.getMessage()]
    assert len(lines) == 1 and "10.0.0.1" in lines[0].getMessage()


# -- the least work before a hello ------------------------------------------------------------

class Node:
    def __init__(self) -> None:
        self.got: list = []

    def on_peer_message(self, m):
        self.got.append(m)

    def peer_refused(self, pid, addr=""):
        return None

    def on_peer_closed(self, pid) -> None:
        pass


class Transport:
    def __init__(self, port: int = 40000) -> None:
        self.port = port
        self.closing = False
        self.written: list = []

    def get_extra_info(self, name):
        return ("127.0.0.1", self.port) if name == "peername" else None

    def write(self, data) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.closing = True

    close = abort

    def is_closing(self) -> bool:
        return self.closing


@pytest.fixture
def transport(tmp_path):
    tr = peers.PeerTransport(Node(), 1, "c", ("127.0.0.1", 0), {2: ("127.0.0.1", 1)},
                             SnapshotStore(tmp_path / "snaps"), 1 << 20)
    yield tr


def _open(tr, port: int = 40000):
    conn = peers._Inbound(tr)
    t = Transport(port)
    conn.connection_made(t)
    return conn, t


def _lost(conn) -> None:
    conn.connection_lost(None)


def test_a_first_frame_larger_than_a_hello_closes_before_anything_is_buffered(transport):
    async def main():
        conn, t = _open(transport)
        conn.data_received(struct.pack("<I", peers.HELLO_MAX + 1)[:2])
        assert not t.closing
        conn.data_received(struct.pack("<I", peers.HELLO_MAX + 1)[2:] + b"x" * 1000)
        assert t.closing and conn._decoder.pending < 4     # the body was never buffered
        ok, t2 = _open(transport, 40001)
        ok.data_received(HELLO[:2])
        ok.data_received(HELLO[2:])
        assert ok.peer_id == 2 and not t2.closing

    asyncio.run(main())


def test_silent_connections_never_keep_a_peer_out(transport):
    """The oldest connection without a hello makes room for a new one; the cap on open
    connections counts only those past their hello."""
    async def main():
        tr = transport
        tr.max_waiting = 3
        tr.max_inbound = 1
        silent = [_open(tr, 41000 + i) for i in range(5)]
        assert [t.closing for _c, t in silent] == [True, True, False, False, False]
        for c, t in silent[:2]:
            _lost(c)
        peer, tp = _open(tr, 42000)
        peer.data_received(HELLO)
        assert peer.peer_id == 2 and not tp.closing and tp.written   # welcomed
        assert silent[2][1].closing                     # it made room for the peer
        assert peer not in tr._waiting and len(tr._waiting) == 2
        other, to = _open(tr, 42001)                     # past the cap once welcomed
        other.data_received(encode_frame(codec.encode_hello("c", 3, 1)))
        assert to.closing and other.peer_id is None

    asyncio.run(main())


def test_a_peer_gives_its_token_back(transport):
    async def main():
        tr = transport
        lim = tr.limiter
        for _ in range(lim.burst):
            assert lim.take("127.0.0.1")
        assert not lim.take("127.0.0.1")
        conn, t = _open(tr)
        conn.data_received(HELLO)
        assert conn.peer_id == 2
        assert lim.take("127.0.0.1")                    # the peer's token came back
        bad, tb = _open(tr, 40001)
        bad.data_received(encode_frame(codec.encode_hello("other", 3, 1)))
        assert tb.closing and not lim.take("127.0.0.1")  # a refused hello keeps it

    asyncio.run(main())
