"""The choice of event loop: uvloop when it is installed (or asked for), else asyncio's.

Place in the architecture: a leaf used by the two programs that run an event loop of their own,
the node (``fastraft.server.main``) and the load generator (``fastraft.client.bench``). Standard
library only; uvloop is imported here and nowhere else.
"""

from __future__ import annotations

import asyncio

__all__ = ["LOOP_CHOICES", "pick_loop"]

#: The values of the ``--loop`` options: ``auto`` takes uvloop when it is installed.
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


def pick_loop(choice: str = "auto"):
    """``(loop_factory, name)`` for ``choice`` (one of LOOP_CHOICES). ValueError when uvloop
    is asked for and not installed."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"
