"""Watches of one node: the recent changes it applied, and the watchers they stream to.

Place in the architecture: part of the runtime (``fastraft.server``), beside ``requests``
(which hands it OP_WATCH / OP_WATCH_CANCEL and, after each applied batch, the state machine's
change events: ``KVStateMachine.events``). It never touches storage or sockets: frames go out
through ``conn.push`` (``clients.ClientConn``), encoded by ``codec``.

Any node serves watches, at its own applied index (a follower's stream may lag the leader's
by its replication delay, never differ from it: the events come from the same log). The rules
(docs/architecture.md, "Coordination"):

- History: the last ``watch_history`` events (at least), whole applied batches (so whole
  revisions) only, are kept in order, as a deque of the batches' event lists (trimming drops
  a batch at a time: no per-event work on the write path); ``oldest`` is the lowest start
  revision this node can serve without a gap. It is the applied index + 1 when the node
  starts or installs a snapshot (``reset``), and moves up as old batches fall out.
- A watch from ``start`` (0: "from now", the applied index + 1) older than ``oldest`` is
  refused with ST_COMPACTED and ``oldest``; otherwise its first frames (about FRAME_BYTES
  each) carry the history's matching events from ``start`` on, the last with the progress
  (the applied index), and every later batch applied brings a frame with the matching events
  of that batch, in revision order.
- The events of a batch are packed once per distinct watched prefix, not per watcher.
- A watcher whose connection has more than ``buffer_bytes`` unwritten (a reader that does not
  keep up) is cancelled with ST_BUSY: memory stays bounded, and the client knows it missed
  events from its last delivered revision on (it may resume from there, the history
  permitting).
- Watchers of closed connections are dropped when next met (lazily: a close costs nothing).
- Every ``PROGRESS_EVERY`` seconds each watcher gets a frame with no event and the applied
  index (``beat``): its client learns this node's progress even when nothing it watches
  changes, so it can tell a quiet prefix from a node that stopped (paused, cut off, removed
  without knowing it) and resume elsewhere (``client/_watch.py``).
"""

from __future__ import annotations

from collections import deque

from .. import codec

__all__ = ["WatchHub", "PROGRESS_EVERY"]

#: Seconds between two progress frames to every watcher (``WatchHub.beat``).
PROGRESS_EVERY = 1.0
#: About the most bytes of events a frame of a watch's history carries (``WatchHub.watch``):
#: a watch from far back gets many frames, never one over a client's frame limit.
FRAME_BYTES = 1 << 20
_EVENT_BYTES = 16                       # an event's bytes besides its key and value, about


def _frames(events: list, applied: int):
    """``(events, progress)`` of the frames that carry ``events`` (a watch's history, in
    revision order) up to ``applied``: about FRAME_BYTES each, cut only between revisions
    (a frame's progress is the revision before the next frame's first); at least one."""
    start = size = 0
    for i, ev in enumerate(events):
        if size >= FRAME_BYTES and ev[0] != events[i - 1][0]:
            yield events[start:i], ev[0] - 1
            start, size = i, 0
        size += _EVENT_BYTES + len(ev[2]) + (len(ev[3]) if ev[3] is not None else 0)
    yield events[start:], applied


class _Watcher:
    __slots__ = ("conn", "watch_id", "prefix", "start")

    def __init__(self, conn, watch_id: int, prefix: bytes, start: int) -> None:
        self.conn = conn
        self.watch_id = watch_id
        self.prefix = prefix
        self.start = start              # events below it are not this watcher's


class WatchHub:
    """The watch side of a node (module docstring)."""

    def __init__(self, history: int, buffer_bytes: int) -> None:
        self.max_history = history
        self.buffer_bytes = buffer_bytes
        #: the applied batches' events, oldest first: lists of (revision, type, key,
        #: value | None), none empty; ``size`` events in all
        self.history: deque = deque()
        self.size = 0
        self.oldest = 1
        self.applied = 0
        #: prefix -> {(conn id, watch id): _Watcher}
        self._by_prefix: dict[bytes, dict] = {}
        self.watchers = 0
        #: counters for the metrics: watchers cancelled for reading too slowly
        self.cancelled_slow = 0
        self._next_beat = 0.0

    def reset(self, applied: int) -> None:
        """The state machine is now at ``applied`` with no history before it (start-up, a
        snapshot installed): the history restarts there. Watchers stay: they get every
        change after ``applied``; a watcher whose stream had not reached it yet misses what
        lies between, so it is ended with ST_COMPACTED (it resumes from there, or reads
        the state afresh)."""
        self.history.clear()
        self.size = 0
        if applied > self.applied and self.watchers:
            for group in self._by_prefix.values():
                for w in list(group.values()):
                    self._end(w, codec.ST_COMPACTED, applied + 1,
                              f"this node installed a snapshot at revision {applied}: the "
                              f"changes before it are not available here")
            self._by_prefix.clear()
            self.watchers = 0
        self.applied = applied
        self.oldest = applied + 1

    # -- requests ----------------------------------------------------------------------------

    def watch(self, conn, req) -> None:
        """OP_WATCH: refuse a compacted start, else send the history from it and register."""
        start = req.rev or self.applied + 1
        if start < self.oldest:
            conn.respond(req.req_id, codec.ST_COMPACTED, self.oldest,
                         f"revision {start} is compacted on this node: its history starts "
                         f"at {self.oldest}")
            return
        prefix = req.key
        past = [ev for batch in self.history if batch[-1][0] >= start for ev in batch
                if ev[0] >= start and ev[2].startswith(prefix)]
        for events, progress in _frames(past, self.applied):
            conn.push(codec.encode_watch_frame(req.req_id, codec.encode_events(events),
                                               progress))
        group = self._by_prefix.get(prefix)
        if group is None:
            group = self._by_prefix[prefix] = {}
        else:
            self._prune(group)
        group[(id(conn), req.req_id)] = _Watcher(conn, req.req_id, prefix, start)
        self.watchers += 1

    def cancel(self, conn, req) -> None:
        """OP_WATCH_CANCEL: stop the watch ``req.rev`` of this connection (answered OK even
        when it is already gone)."""
        key = (id(conn), req.rev)
        for prefix, group in self._by_prefix.items():
            if group.pop(key, None) is not None:
                self.watchers -= 1
                if not group:
                    del self._by_prefix[prefix]
                break
        conn.respond(req.req_id, codec.ST_OK, None)

    # -- what the node applied ---------------------------------------------------------------

    def publish(self, events: list, applied: int) -> None:
        """The changes of one applied batch (``events``, in order, maybe none) and the applied
        index after it: keep them, and send each watcher its part."""
        self.applied = applied
        if not events:
            return
        self.history.append(events)
        self.size += len(events)
        if self.size > self.max_history:
            self._trim()
        if not self.watchers:
            return
        for prefix, group in list(self._by_prefix.items()):
            if prefix:
                matching = [ev for ev in events if ev[2].startswith(prefix)]
                if not matching:
                    continue
            else:
                matching = events
            self._send(group, matching, applied)
            if not group:
                del self._by_prefix[prefix]

    def _send(self, group: dict, matching: list, applied: int) -> None:
        packed = codec.encode_events(matching)
        first = matching[0][0]
        limit = self.buffer_bytes
        for key, w in list(group.items()):
            conn = w.conn
            if conn.closed:
                del group[key]
                self.watchers -= 1
                continue
            if conn.unwritten() > limit:
                del group[key]
                self.watchers -= 1
                self.cancelled_slow += 1
                self._end(w, codec.ST_BUSY,
                          f"the watcher read too slowly: more than {limit} bytes were "
                          f"waiting for it (resume from the last revision received)")
                continue
            if first >= w.start:
                conn.push(codec.encode_watch_frame(w.watch_id, packed, applied))
            else:                       # a watch that starts inside this batch
                mine = [ev for ev in matching if ev[0] >= w.start]
                if mine:
                    conn.push(codec.encode_watch_frame(w.watch_id, codec.encode_events(mine),
                                                       applied))

    def beat(self, now: float) -> None:
        """Called often (each pass of the node): every PROGRESS_EVERY seconds of ``now`` (a
        monotonic clock), a progress frame (no event, the applied index) to every watcher."""
        if not self.watchers or now < self._next_beat:
            return
        self._next_beat = now + PROGRESS_EVERY
        empty = codec.encode_events(())
        applied = self.applied
        for group in self._by_prefix.values():
            for w in group.values():
                if not w.conn.closed:
                    w.conn.push(codec.encode_watch_frame(w.watch_id, empty, applied))

    def _trim(self) -> None:
        """Drop the oldest batches, whole, while more than ``max_history`` events remain
        without them (the newest batch is always kept, however large)."""
        history = self.history
        while len(history) > 1 and self.size - len(history[0]) >= self.max_history:
            batch = history.popleft()
            self.size -= len(batch)
            self.oldest = batch[-1][0] + 1

    def _prune(self, group: dict) -> None:
        for key in [k for k, w in group.items() if w.conn.closed]:
            del group[key]
            self.watchers -= 1

    @staticmethod
    def _end(w: _Watcher, status: int, *values) -> None:
        if not w.conn.closed:
            w.conn.respond(w.watch_id, status, *values)
