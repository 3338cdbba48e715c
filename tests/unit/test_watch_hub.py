"""The node's watch hub alone (``server/watches.py``): the bounded history (whole revisions,
``oldest``), compacted starts, frames per prefix, a watch starting inside a batch, the slow
watcher's cancellation, closed connections dropped, and the reset of a snapshot install.

Place in the architecture: unit tests of a runtime part without sockets; the connection is a
recorder with the two methods the hub uses (``push``, ``respond``) and the two facts it reads
(``closed``, ``unwritten``).
"""

from __future__ import annotations

from fastraft import codec
from fastraft.server.watches import WatchHub

PUT, DEL = 0, 1


class Conn:
    def __init__(self) -> None:
        self.frames: list = []          # (watch id, events, progress)
        self.answers: list = []         # (req id, status, values)
        self.closed = False
        self.backlog = 0

    def push(self, body: bytes) -> None:
        rid, status, values = codec.decode_response(body, 1 << 20)
        assert status == codec.ST_OK
        events, progress = codec.decode_watch_frame(values)
        self.frames.append((rid, events, progress))

    def respond(self, req_id, status, *values) -> None:
        self.answers.append((req_id, status, *values))

    def unwritten(self) -> int:
        return self.backlog


def watch(hub, conn, rid, prefix=b"", start=0):
    hub.watch(conn, codec.Request(rid, codec.OP_WATCH, key=prefix, rev=start))


def test_history_keeps_whole_revisions_and_refuses_what_fell_out():
    hub = WatchHub(history=3, buffer_bytes=1 << 20)
    hub.reset(10)
    assert hub.oldest == 11
    hub.publish([(11, PUT, b"a", b"1")], 11)
    hub.publish([(12, DEL, b"a", None), (12, DEL, b"b", None)], 12)   # one revision, two events
    hub.publish([(13, PUT, b"c", b"3")], 13)
    assert hub.size == 3 and hub.oldest == 12     # 11 fell out whole
    c = Conn()
    watch(hub, c, 5, start=11)
    assert c.answers == [(5, codec.ST_COMPACTED, 12, c.answers[0][3])]
    assert "compacted" in c.answers[0][3]
    watch(hub, c, 6, start=12)
    assert c.frames == [(6, [(12, DEL, b"a", None), (12, DEL, b"b", None),
                             (13, PUT, b"c", b"3")], 13)]
    hub.publish([(14, PUT, b"d", b"4"), (14, PUT, b"e", b"5"), (14, PUT, b"f", b"6"),
                 (14, PUT, b"g", b"7")], 14)           # one revision over the bound: kept whole
    assert [e[0] for b in hub.history for e in b] == [14] * 4 and hub.oldest == 14


def test_frames_go_to_matching_prefixes_from_each_start():
    hub = WatchHub(history=100, buffer_bytes=1 << 20)
    hub.reset(0)
    a, b = Conn(), Conn()
    watch(hub, a, 1, b"x/")                  # from now: 1
    watch(hub, b, 2, b"", start=3)           # a future start
    assert a.frames == [(1, [], 0)] and b.frames == [(2, [], 0)]
    hub.publish([(1, PUT, b"x/1", b"a"), (2, PUT, b"y", b"b")], 2)
    hub.publish([(3, PUT, b"x/2", b"c"), (3, DEL, b"y", None)], 3)
    assert a.frames[1:] == [(1, [(1, PUT, b"x/1", b"a")], 2), (1, [(3, PUT, b"x/2", b"c")], 3)]
    assert b.frames[1:] == [(2, [(3, PUT, b"x/2", b"c"), (3, DEL, b"y", None)], 3)]
    hub.cancel(a, codec.Request(9, codec.OP_WATCH_CANCEL, rev=1))
    assert a.answers == [(9, codec.ST_OK, None)] and hub.watchers == 1
    hub.publish([(4, PUT, b"x/3", b"d")], 4)
    assert len(a.frames) == 3 and b.frames[-1] == (2, [(4, PUT, b"x/3", b"d")], 4)


def test_a_slow_watcher_is_cancelled_and_a_closed_one_dropped():
    hub = WatchHub(history=100, buffer_bytes=1000)
    hub.reset(0)
    slow, gone, fine = Conn(), Conn(), Conn()
    for i, c in enumerate((slow, gone, fine), 1):
        watch(hub, c, i)
    slow.backlog = 1001
    gone.closed = True
    hub.publish([(1, PUT, b"k", b"v")], 1)
    assert slow.answers[0][:2] == (1, codec.ST_BUSY) and "too slowly" in slow.answers[0][2]
    assert len(slow.frames) == 1 and gone.answers == [] and len(gone.frames) == 1
    assert len(fine.frames) == 2 and hub.watchers == 1 and hub.cancelled_slow == 1


def test_a_snapshot_install_restarts_the_history_and_ends_the_watchers_behind_it():
    hub = WatchHub(history=100, buffer_bytes=1 << 20)
    hub.reset(0)
    c = Conn()
    watch(hub, c, 1)
    hub.publish([(1, PUT, b"k", b"v")], 1)
    hub.reset(50)                            # a snapshot at 50 jumped over 2..50
    assert c.answers[0][:3] == (1, codec.ST_COMPACTED, 51)
    assert hub.watchers == 0 and hub.oldest == 51 and not hub.history
    hub.publish([(51, PUT, b"k", b"w")], 51)
    assert len(c.frames) == 2                # nothing more for the ended watch


def test_every_watcher_gets_a_progress_frame_every_second():
    hub = WatchHub(history=100, buffer_bytes=1 << 20)
    hub.reset(7)
    hub.beat(100.0)                          # no watcher: nothing to do
    a, b = Conn(), Conn()
    watch(hub, a, 1, b"x/")
    watch(hub, b, 2, b"y/")
    hub.beat(100.5)
    assert a.frames[1:] == [(1, [], 7)] and b.frames[1:] == [(2, [], 7)]
    hub.beat(101.0)                          # less than a second later: none
    assert len(a.frames) == 2
    hub.publish([(8, PUT, b"z", b"v")], 8)   # a change neither watches
    hub.beat(101.6)
    assert a.frames[-1] == (1, [], 8) and b.frames[-1] == (2, [], 8)


def test_a_long_history_goes_out_in_frames_cut_between_revisions():
    """A watch from far back: its history comes in frames of about FRAME_BYTES (never one
    frame a client's limit would refuse), each cut between two revisions, the progress of
    each the revision before the next frame's first, the last one the applied index."""
    from fastraft.server import watches
    hub = WatchHub(history=10_000, buffer_bytes=1 << 30)
    hub.reset(0)
    big = b"v" * 10_000
    for r in range(1, 301):                   # 3 events a revision, ~30 kB each revision
        hub.publish([(r, PUT, b"k/%d/%d" % (r, j), big) for j in range(3)], r)
    c = Conn()
    c.push = lambda body: c.frames.append(codec.decode_response(body, 64 << 20))
    watch(hub, c, 7, start=2)
    frames = [(rid, *codec.decode_watch_frame(values)) for rid, _st, values in c.frames]
    assert len(frames) >= 8
    events = [ev for _rid, evs, _p in frames for ev in evs]
    assert [ev[0] for ev in events] == [r for r in range(2, 301) for _ in range(3)]
    for (_r, evs, progress), (_r2, nxt, _p2) in zip(frames, frames[1:]):
        assert progress == nxt[0][0] - 1 and evs[-1][0] == progress
        assert sum(len(e[3]) for e in evs) < watches.FRAME_BYTES + 40_000
    assert frames[-1][2] == 300
    c2 = Conn()
    watch(hub, c2, 8, start=301)              # nothing to send: one frame, the progress
    assert c2.frames == [(8, [], 300)]
