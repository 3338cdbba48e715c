"""The simulated network: per-link latency, loss, duplication and reordering, and partitions.

Place in the architecture: part of the deterministic simulator (``fastraft.sim``). Pure Python,
no IO, no clocks: time is the simulator's tick counter and every random choice comes from the
``random.Random`` it is given, so a seed replays a run exactly.

A message sent at tick ``t`` on link (a, b) is delivered at ``t + latency`` where latency is
drawn from the link's range (different draws reorder messages), unless it is lost on the way
or the link is cut *when it would arrive* (a partition also swallows messages in flight).
A duplicated message is delivered twice, with independent latencies. A late message (rate
``late`` per link) takes a latency drawn from ``late_latency`` instead, typically several
election timeouts: it reaches a node whose term, role or log moved on meanwhile.

Parked messages are late at the worst moment (an adversarial scheduler, as in the
asynchronous model Raft assumes, where any delay is possible): ``park`` takes the messages in
flight to a node, ``echo`` parks a copy of those sent to it for a while (a late duplicate:
the original is delivered as usual), and they stay parked until the simulator releases them
(``release``: when their destination leads a term above theirs, say) or their deadline
passes.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from ..raft import MsgType

__all__ = ["LinkConfig", "Network"]


@dataclass
class LinkConfig:
    """One directed link's behaviour, in ticks and probabilities: latency drawn in
    [min_latency, max_latency], loss and duplication rates, and the rate of late messages
    with their latency range."""
    min_latency: int = 1
    max_latency: int = 1
    loss: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0
    late_latency: tuple = (0, 0)


class Network:
    """The simulated network: every message sent is queued with a seeded latency and
    delivered by ``due(now)`` in delivery order, unless lost, or cut by a partition."""
    def __init__(self, rng: random.Random, default: LinkConfig | None = None) -> None:
        self.rng = rng
        self.default = default or LinkConfig()
        self.links: dict[tuple[int, int], LinkConfig] = {}
        self.blocked: set[tuple[int, int]] = set()
        self._queue: list = []     # heap of (deliver_at, seq, msg)
        self._seq = 0
        self.sent = 0
        self.dropped = 0
        self.dropped_snapshots: list = []   # lost SNAP messages: the sender hears "failed"
        self.echoes: dict[int, tuple[int, int]] = {}   # node -> (send until, parked until)
        self.parked: list = []              # (deadline, msg)

    def link(self, frm: int, to: int) -> LinkConfig:
        """The behaviour of the link from ``frm`` to ``to`` (the default unless set)."""
        return self.links.get((frm, to), self.default)

    def send(self, now: int, msg) -> None:
        """Queue ``msg`` for delivery after its link's latency (maybe lost or duplicated)."""
        self.sent += 1
        cfg = self.links.get((msg.frm, msg.to), self.default)
        rng = self.rng
        if cfg.loss and rng.random() < cfg.loss:
            self._drop(msg)
            return
        copies = 2 if cfg.duplicate and rng.random() < cfg.duplicate else 1
        for _ in range(copies):
            lat = cfg.min_latency
            if cfg.max_latency > lat:
                lat = rng.randint(lat, cfg.max_latency)
            if cfg.late and rng.random() < cfg.late:
                lat = rng.randint(*cfg.late_latency)
            echo = self.echoes.get(msg.to) if self.echoes else None
            if echo is not None and now < echo[0]:
                self.parked.append((echo[1], msg))
            self._seq += 1
            heapq.heappush(self._queue, (now + lat, self._seq, msg))

    def due(self, now: int) -> list:
        """Pop the messages whose delivery time has come, in delivery order, dropping those
        whose link is cut right now."""
        q = self._queue
        out = []
        blocked = self.blocked
        while q and q[0][0] <= now:
            msg = heapq.heappop(q)[2]
            if blocked and (msg.frm, msg.to) in blocked:
                self._drop(msg)
                continue
            out.append(msg)
        return out

    def _drop(self, msg) -> None:
        self.dropped += 1
        if msg.type == MsgType.SNAP:
            self.dropped_snapshots.append(msg)

    def park(self, pred, deadline: int) -> None:
        """Park the messages in flight for which ``pred(msg)`` holds, until ``release``
        or ``deadline``."""
        q = self._queue
        keep = [e for e in q if not pred(e[2])]
        if len(keep) != len(q):
            self.parked.extend((deadline, e[2]) for e in q if pred(e[2]))
            heapq.heapify(keep)
            self._queue = keep

    def echo(self, node: int, until: int, deadline: int) -> None:
        """Until tick ``until``, park a copy of every message sent to ``node`` (until
        ``deadline``)."""
        self.echoes[node] = (until, deadline)

    def release(self, now: int, pred) -> None:
        """Deliver at the next tick the parked messages for which ``pred(msg)`` holds or whose
        deadline has come."""
        keep = []
        for deadline, msg in self.parked:
            if deadline <= now or pred(msg):
                self._seq += 1
                heapq.heappush(self._queue, (now + 1, self._seq, msg))
            else:
                keep.append((deadline, msg))
        self.parked = keep

    def pending(self) -> int:
        """Messages in flight (parked ones included)."""
        return len(self._queue) + len(self.parked)

    # -- partitions -------------------------------------------------------------------------

    def heal(self) -> None:
        """Remove every partition, cut and echo (link latencies and loss stay)."""
        self.blocked.clear()
        self.echoes.clear()

    def cut(self, frm: int, to: int) -> None:
        """One-way cut: messages from ``frm`` to ``to`` are lost."""
        self.blocked.add((frm, to))

    def split(self, *groups) -> None:
        """Symmetric partition into groups: no message crosses between different groups."""
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def isolate(self, node: int, others) -> None:
        """Cut ``node`` off from every other node, both ways."""
        self.split([node], [o for o in others if o != node])

    def bridge(self, left, bridge: int, right) -> None:
        """``left`` and ``right`` cannot talk to each other; ``bridge`` talks to both."""
        self.split([x for x in left if x != bridge], [y for y in right if y != bridge])
