"""The simulated network: per-link latency, loss, duplication and reordering, and partitions.

Place in the architecture: part of the deterministic simulator (``fastraft.sim``). Pure Python,
no IO, no clocks: time is the simulator's tick counter and every random choice comes from the
``random.Random`` it is given, so a seed replays a run exactly.

A message sent at tick ``t`` on link (a, b) is delivered at ``t + latency`` where latency is
drawn from the link's range (different draws reorder messages), unless it is lost on the way
or the link is cut *when it would arrive* (a partition also swallows messages in flight).
A duplicated message is delivered twice, with independent latencies.
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
    [min_latency, max_latency], loss and duplication rates."""
    min_latency: int = 1
    max_latency: int = 1
    loss: float = 0.0
    duplicate: float = 0.0


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

    def pending(self) -> int:
        """Messages in flight."""
        return len(self._queue)

    # -- partitions -------------------------------------------------------------------------

    def heal(self) -> None:
        """Remove every partition and cut (link latencies and loss stay)."""
        self.blocked.clear()

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
