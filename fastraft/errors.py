"""The exception tree of fastraft: every error the project raises on purpose derives from
FastraftError.

Place in the architecture: a leaf module. Every layer (core, raft, storage, server, client)
imports it; it imports nothing of fastraft. Keep it free of IO and of third-party imports.

The tree (h11's protocol-error split, etcd's storage errors, hashicorp's not-leader versus
leadership-lost distinction)::

    FastraftError
    ├── LocalProtocolError          the caller misused an API
    ├── RemoteProtocolError         a peer or client sent something invalid
    │   └── FrameTooLarge           a frame's length prefix is over the configured limit
    ├── CorruptRecordError          (also ValueError) a WAL record or file failed its checks
    ├── StorageError                a write or fsync failed: the store refuses every later call
    ├── ConfigError                 (also ValueError) a configuration file or option is invalid
    ├── LogError                    (also IndexError) an index outside the retained log
    │   ├── CompactedError          ... below the first retained index (compacted away)
    │   └── UnavailableError        ... above the last index (not there yet)
    ├── FatalError                  a node must stop (storage failure, unrecoverable state)
    │   └── RecoveryError           ... its data directory cannot be recovered as it is
    ├── NotApplied                  the command was certainly NOT applied: safe to retry anywhere
    │   ├── NotLeader(leader_hint, answered, unreachable)
    │   ├── Busy
    │   ├── InvalidRequest
    │   ├── SessionExpired
    │   ├── LeaseNotFound           the lease named does not exist (expired, revoked)
    │   ├── Compacted(oldest)       a watch's start revision is older than the history kept
    │   └── TLSError                a TLS handshake failed (node not trusted, or it refused us)
    ├── OutcomeUnknown              the command MAY have been applied: retry only in a session
    │   ├── Timeout
    │   ├── ConnectionLost
    │   └── LeadershipLost
    └── LockLost                    a held lock's lease may have expired: another may hold it

A broken internal invariant is an AssertionError, never one of these: it must crash the node.
``tests/unit/test_exception_tree.py`` checks that every exception class defined in fastraft
sits in this tree.
"""

from __future__ import annotations

__all__ = [
    "short_repr",
    "FastraftError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "FrameTooLarge",
    "CorruptRecordError",
    "StorageError",
    "ConfigError",
    "LogError",
    "CompactedError",
    "UnavailableError",
    "FatalError",
    "RecoveryError",
    "NotApplied",
    "NotLeader",
    "Busy",
    "InvalidRequest",
    "SessionExpired",
    "LeaseNotFound",
    "Compacted",
    "TLSError",
    "OutcomeUnknown",
    "Timeout",
    "ConnectionLost",
    "LeadershipLost",
    "LockLost",
]


def short_repr(v, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters, for naming a bad value in an error message."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


class FastraftError(Exception):
    """Base class of every error fastraft raises on purpose."""


class LocalProtocolError(FastraftError):
    """The caller used an API in a way it does not allow."""


class RemoteProtocolError(FastraftError):
    """A peer or a client sent bytes or a message that fails validation."""


class FrameTooLarge(RemoteProtocolError):
    """A frame announced a length above the configured maximum frame size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class CorruptRecordError(FastraftError, ValueError):
    """A WAL record, segment header or durable file failed its format or checksum checks."""


class StorageError(FastraftError):
    """A write or fsync of durable state failed (disk full, IO error). The store that raised
    it is failed for good: it refuses every later call, so nothing that is not durable can be
    acknowledged; the node must stop and recover from what is on disk."""


class ConfigError(FastraftError, ValueError):
    """A configuration file or command-line option is invalid; the message names the file,
    the key and what is expected."""


class LogError(FastraftError, IndexError):
    """An index outside the part of the log that is retained in memory."""


class CompactedError(LogError):
    """The index is at or below the compaction point: its entry was released after a snapshot."""


class UnavailableError(LogError):
    """The index is above the last index of the log."""


class FatalError(FastraftError):
    """A node must stop: its storage failed or its state cannot be recovered. The message says
    why; ``fastraft node`` logs it and exits with status 3."""


class RecoveryError(FatalError):
    """A node's data directory cannot be recovered as it is (a log without the snapshot that
    precedes it, ...); the message tells the operator what to do (wipe it and rejoin)."""


class NotApplied(FastraftError):
    """The command was certainly not applied: retrying it anywhere is safe."""


class NotLeader(NotApplied):
    """No leader took the command; ``leader_hint`` names the one a node believes in, or None.

    Raised by the client when a call ends without a leader: ``answered`` are the endpoints
    that answered (none as the leader), ``unreachable`` the ones it could not reach (both
    empty tuples unless the client set them); the message says what each one said or why."""

    def __init__(self, leader_hint: int | None = None, message: str | None = None, *,
                 answered: tuple[str, ...] = (), unreachable: tuple[str, ...] = ()) -> None:
        super().__init__(message or f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint
        self.answered = tuple(answered)
        self.unreachable = tuple(unreachable)


class Busy(NotApplied):
    """The node refused the request because a bounded queue is full."""


class InvalidRequest(NotApplied):
    """The request is malformed or over a configured limit."""


class SessionExpired(NotApplied):
    """The client session is unknown or expired; the command was rejected, not applied."""


class LeaseNotFound(NotApplied):
    """The lease named does not exist (it expired, was revoked or never granted): nothing was
    written."""


class Compacted(NotApplied):
    """A watch asked for changes from a revision older than the history the nodes keep;
    ``oldest`` is the oldest revision still available (read the current state instead, or
    watch from ``oldest``)."""

    def __init__(self, oldest: int, message: str | None = None) -> None:
        super().__init__(message or f"revisions before {oldest} are compacted")
        self.oldest = oldest


class TLSError(NotApplied):
    """The TLS handshake with a node failed, so no request was processed there: the node's
    certificate was not trusted (not signed by the CA given, or not naming the address
    dialled), or the node refused this client's certificate. The message says which and why.
    Retrying does not help until the certificates are fixed."""


class OutcomeUnknown(FastraftError):
    """The command may or may not have been applied."""


class Timeout(OutcomeUnknown):
    """No answer arrived before the deadline."""


class ConnectionLost(OutcomeUnknown):
    """The connection broke after the request was sent."""


class LeadershipLost(OutcomeUnknown):
    """The leader stepped down after accepting the command and before it committed."""


class LockLost(FastraftError):
    """A lock's lease could not be renewed within its TTL (the holder was paused or cut off
    from the cluster): the lease may have expired and another client may hold the lock now.
    The honest limit of any lease-based lock: the protected resource must check the fence."""
