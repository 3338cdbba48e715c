"""fastraft: a Raft-replicated key-value store with a Cython core and a uvloop runtime.

Place in the architecture: the public face of the package. It re-exports public names only;
everything else is reached through its own module (``fastraft.core``, ``fastraft.errors``...).
"""

from .errors import (
    Busy,
    CompactedError,
    ConnectionLost,
    CorruptRecordError,
    FastraftError,
    InvalidRequest,
    LeadershipLost,
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
    "CompactedError",
    "UnavailableError",
    "CorruptRecordError",
]
