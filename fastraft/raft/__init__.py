"""fastraft.raft: the Raft consensus protocol as a deterministic, sans-IO state machine.

Place in the architecture: above the core, below the runtime and the simulator. It imports
only ``fastraft.core``, ``fastraft.errors`` and pure standard-library modules — never asyncio,
socket, os, time or msgpack (tests/unit/test_sourcecode.py enforces it).

Modules: ``messages`` (the vocabulary), ``progress`` (per-follower replication state),
``log`` (RaftLog over the core's LogRing), ``confchange`` (configuration changes),
``membership`` (the configuration methods of Raft), ``raft`` (the protocol), ``rawnode``
(Ready/advance).
"""

from .confchange import (
    ADD_LEARNER,
    ADD_VOTER,
    REMOVE_NODE,
    BadConfChange,
    Change,
    ConfChange,
    ConfState,
    decode_conf_change,
    encode_conf_change,
    is_conf_change,
)
from .log import RaftLog, initial_snapshot
from .messages import (
    NO_NODE,
    EntryBatch,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
    SnapshotMeta,
)
from .raft import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, ROLE_NAMES, Raft, RaftConfig
from .rawnode import RawNode, Ready, SoftState

__all__ = [
    "RawNode", "Ready", "SoftState", "Raft", "RaftConfig", "RaftLog", "initial_snapshot",
    "Message", "MsgType", "HardState", "Snapshot", "SnapshotMeta", "ReadState", "EntryBatch",
    "NO_NODE", "FOLLOWER", "PRE_CANDIDATE", "CANDIDATE", "LEADER", "ROLE_NAMES",
    "ConfChange", "Change", "ConfState", "BadConfChange", "ADD_VOTER", "ADD_LEARNER",
    "REMOVE_NODE", "is_conf_change", "encode_conf_change", "decode_conf_change",
]
