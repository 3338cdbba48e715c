"""A graceful stop's first step: a leader hands its leadership to an up-to-date follower, so
the cluster does not wait an election timeout for a new one.

Place in the architecture: part of the runtime (``fastraft.server``), used by
``node.Node.shutdown`` (which then answers what waits and closes the transports and the
storage, in that order). ``choose_successor`` is pure; ``hand_over_leadership`` drives the
engine (``RawNode.transfer_leadership``) and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from ..raft import LEADER

__all__ = ["choose_successor", "hand_over_leadership"]

log = logging.getLogger("fastraft.node")


def choose_successor(status, self_id: int, connected: Callable[[int], bool]) -> int | None:
    """The connected voter with the highest match index in ``status`` (a ``raft.Status`` of
    a leader), the first one in progress order on a tie; None when no other voter is
    connected. Learners and outgoing-only voters never take over."""
    best = None
    progress = status.progress
    voters = status.voters
    for vid, pr in progress.items():
        if vid != self_id and vid in voters and connected(vid):
            if best is None or pr.match > progress[best].match:
                best = vid
    return best


async def hand_over_leadership(raw, peers, self_id: int, kick: Callable[[], None],
                               grace: float) -> None:
    """If this node leads a cluster of several voters, start a leadership transfer to the
    best successor and wait (up to ``grace`` seconds) until this node is no longer leader.
    Best effort: a transfer that cannot start is logged and the stop goes on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    st = raw.status()
    if st.role != LEADER or len(st.voters) <= 1:
        return
    best = choose_successor(st, self_id, peers.connected)
    if best is None:
        return
    log.info("handing leadership to node %d before stopping", best)
    try:
        raw.transfer_leadership(best)
        kick()
    except Exception as exc:      # noqa: BLE001 - best effort
        log.info("leadership transfer not started: %s", exc)
    while loop.time() < deadline and raw.role == LEADER:
        await asyncio.sleep(0.01)
