"""fastraft: a Raft-replicated key-value store with a Cython core and a uvloop runtime.

Place in the architecture: the public face of the package. It re-exports public names only;
everything else is reached through its own module (``fastraft.core``, ``fastraft.errors``...).
"""

from .errors import (
    Busy,
    Compacted,
    CompactedError,
    ConnectionLost,
    CorruptRecordError,
    FastraftError,
    InvalidRequest,
    LeadershipLost,
    LeaseNotFound,
    LockLost,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    Timeout,
    UnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "FastraftError",
    "NotApplied",
    "OutcomeUnknown",
    "NotLeader",
    "Busy",
    "InvalidRequest",
    "SessionExpired",
    "Timeout",
    "ConnectionLost",
    "LeadershipLost",
    "LeaseNotFound",
    "Compacted",
    "LockLost",
    "CompactedError",
    "UnavailableError",
    "CorruptRecordError",
]


def __getattr__(name: str):
    # The clients are imported on first use, so ``import fastraft`` stays light for the
    # server and the tools (PEP 562).
    if name == "Client":
        from .client import Client

        return Client
    if name == "AsyncClient":
        from .client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'fastraft' has no attribute {name!r}")
