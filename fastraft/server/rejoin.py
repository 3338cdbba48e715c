"""The rejoin marker: a node that lost its data does not vote until a leader has caught it up,
across restarts too.

Place in the architecture: part of the runtime (``fastraft.server``); ``wiring`` arms it at
start-up (``fastraft node --rejoin``) and reads it into the engine's
``RaftConfig.rejoining``; ``node.Node`` clears it once the engine says the node caught up.
The marker is the file ``REJOINING`` in the node's data directory, written and removed durably
(``fastraft.datadir``), so a crash cannot lose it before it matters or revive it after.
"""

from __future__ import annotations

import logging
import os

from ..datadir import remove_durable, write_file_durable

__all__ = ["RejoinMarker", "MARKER_NAME"]

log = logging.getLogger("fastraft.node")

MARKER_NAME = "REJOINING"


class RejoinMarker:
    """The ``REJOINING`` file of one data directory. ``active``: the node must not vote or
    campaign yet (the file exists); it stays true until ``clear``."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, MARKER_NAME)
        self.active = os.path.exists(self.path)

    def arm(self) -> None:
        """``--rejoin``: this node lost its data. Durable (file and directory fsynced)
        before the node takes part in anything."""
        write_file_durable(self.path, b"this node lost its data; it does not vote until a "
                           b"leader caught it up\n")
        self.active = True

    def clear(self) -> None:
        """The engine caught up after the data loss: remove the marker (best effort: if
        the removal fails, the next start waits for a leader again, which is safe)."""
        self.active = False
        try:
            remove_durable(self.path)
        except OSError:
            pass
        log.info("caught up after the data loss: voting again")
