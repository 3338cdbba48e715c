"""Messages, hard state, snapshot metadata and read states of the Raft engine.

Place in the architecture: the vocabulary of ``fastraft.raft``. Pure data, no IO; the codec
(``fastraft/codec/peer.py``) maps these objects to msgpack arrays by the integer codes defined
here.

Messages are NamedTuples rather than frozen dataclasses: they are immutable and typed like
dataclasses but cost one tuple allocation to build, which matters on the replication path
(a frozen dataclass pays an ``object.__setattr__`` per field). Validation of anything that
arrives from outside happens once, in the codec, before a message reaches the engine.

Entries travel as ``(term, payload)`` pairs: a message's entries are contiguous and start at
``index + 1`` (``index`` is the log position just before them), so no per-entry index is
carried. An empty payload is the no-op a leader appends at the start of its term.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

__all__ = [
    "MsgType",
    "Message",
    "HardState",
    "SnapshotMeta",
    "Snapshot",
    "ReadState",
    "EntryBatch",
    "RESPONSE_TYPES",
    "LEADER_TYPES",
    "VOTE_TYPES",
    "NO_NODE",
]

#: Node id meaning "nobody" (no vote, no known leader). Real node ids are >= 1.
NO_NODE = 0


class MsgType(IntEnum):
    """Wire message types between peers. Append only: never renumber or reuse a code, and
    update the tables below (RESPONSE_TYPES, LEADER_TYPES, VOTE_TYPES) when adding one."""

    APP = 1             # AppendEntries (also the probe)       leader -> follower
    APP_RESP = 2        # its answer, success or reject+hint   follower -> leader
    VOTE = 3            # RequestVote                          candidate -> voter
    VOTE_RESP = 4
    PRE_VOTE = 5        # pre-vote (thesis §9.6)               pre-candidate -> voter
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7       # carries commit and a read context    leader -> follower
    HEARTBEAT_RESP = 8
    SNAP = 9            # InstallSnapshot (metadata + handle)  leader -> follower
    TIMEOUT_NOW = 10    # leadership transfer: campaign now    leader -> transferee


#: Responses: sent back to the message's sender.
RESPONSE_TYPES = frozenset({MsgType.APP_RESP, MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP,
                            MsgType.HEARTBEAT_RESP})
#: Messages only a leader sends; receiving one names the sender as the term's leader.
LEADER_TYPES = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW})
#: Vote requests.
VOTE_TYPES = frozenset({MsgType.VOTE, MsgType.PRE_VOTE})


class SnapshotMeta(NamedTuple):
    """What a snapshot covers: the log up to ``index`` (whose term is ``term``) and the
    configuration at that point (``outgoing`` non-empty during a joint configuration;
    ``learners`` receive the log but never vote nor count). ``context`` is opaque to the
    engine: the runtime records there what it must know of the configuration at ``index``
    (the members' addresses, ``fastraft.codec.encode_member_book``); it travels and is
    stored with the rest of the meta."""

    index: int
    term: int
    voters: frozenset
    outgoing: frozenset = frozenset()
    learners: frozenset = frozenset()
    context: bytes = b""


class Snapshot(NamedTuple):
    """Snapshot metadata plus an opaque handle to its data. The engine never looks inside
    ``data``: the runtime streams the bytes, the simulator carries its state in it."""

    meta: SnapshotMeta
    data: Any = None


class Message(NamedTuple):
    """A message between peers. Field codes for the wire are the positions, in order.

    ``index``/``log_term`` mean: for APP, the position just before ``entries``; for an
    APP_RESP, the last index the follower now matches (or, when ``reject``, the rejected
    ``index``); for votes, the candidate's last index and term. ``hint_index``/``hint_term``
    are the conflict hint of a rejected APP (fast backtracking, thesis §5.3 / etcd).
    ``context`` is the ReadIndex round of a heartbeat (0 = none). ``transfer`` marks a
    campaign started by TIMEOUT_NOW, which voters must not refuse for a live leader lease.
    """

    type: MsgType
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple | list = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: int = 0
    snapshot: Snapshot | None = None
    transfer: bool = False


class HardState(NamedTuple):
    """What must be durable before a vote or an append acknowledgement leaves the node."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


class ReadState(NamedTuple):
    """A linearizable read that became safe: once ``applied >= index`` the read identified by
    ``context`` may be served from local state (thesis §6.4)."""

    context: Any
    index: int


class EntryBatch(NamedTuple):
    """Contiguous entries ``first_index ..`` as ``(term, payload)`` pairs."""

    first_index: int
    entries: list

    @property
    def last_index(self) -> int:
        """The index of the last entry (``first_index - 1`` for an empty batch)."""
        return self.first_index + len(self.entries) - 1
