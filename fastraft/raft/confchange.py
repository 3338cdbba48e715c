"""Configuration changes: the ConfChange value, its binary log encoding, and the pure
arithmetic that turns one configuration into the next (Raft thesis §4.3, etcd's ConfChangeV2).

Place in the architecture: part of the sans-IO engine (``fastraft.raft``); pure functions and
data, no IO (``struct`` only). ``raft.py`` applies conf-change entries when they are appended;
the runtime recognises committed ones with ``is_conf_change`` and decodes them with
``decode_conf_change`` to learn peers' addresses from each change's ``context``.

A log entry's payload is bytes: ``b""`` is a leader's no-op, client commands are msgpack
(whose first byte is never 0xc1, the code msgpack reserves as "never used"), and a payload
whose first byte is 0xc1 is a configuration change::

    offset  size  field
    0       1     marker 0xc1
    1       1     version (1)
    2       1     flags: bit 0 = leave joint; other bits must be 0
    3       2     n, the number of changes (big-endian; 0 <= n <= MAX_CHANGES)
    5       ...   n changes, each:
                    1 byte  kind (ADD_VOTER=1, ADD_LEARNER=2, REMOVE_NODE=3)
                    8 bytes node id (big-endian, >= 1)
                    2 bytes context length (<= MAX_CONTEXT)
                    context bytes (opaque to the engine: the runtime puts addresses there)

A "leave joint" change has the flag and no changes. Decoding is strict: unknown versions,
kinds or flags, ids of 0, truncated or trailing bytes raise ``BadConfChange``.

Semantics (``next_config``): changes that touch the voters always go through a joint
configuration (incoming = the new voters, outgoing = the old ones) which the leader leaves
automatically once the joint entry commits; changes that touch only learners take effect
directly (no joint phase, since learners never count). Not supported: demoting a voter to a
learner in one change (remove it, then add it as a learner), any change while joint except
leaving it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..errors import LocalProtocolError

__all__ = ["ADD_VOTER", "ADD_LEARNER", "REMOVE_NODE", "Change", "ConfChange", "ConfState",
           "BadConfChange", "CONF_MARKER", "is_conf_change", "encode_conf_change",
           "decode_conf_change", "next_config"]

ADD_VOTER = 1
ADD_LEARNER = 2
REMOVE_NODE = 3
KIND_NAMES = {ADD_VOTER: "add-voter", ADD_LEARNER: "add-learner", REMOVE_NODE: "remove"}

CONF_MARKER = 0xc1
VERSION = 1
FLAG_LEAVE_JOINT = 1
MAX_CHANGES = 64
MAX_CONTEXT = 4096
_HEAD = struct.Struct(">BBBH")
_CHANGE = struct.Struct(">BQH")


class BadConfChange(LocalProtocolError):
    """A configuration change that cannot be encoded, decoded or applied (certainly not
    appended to the log)."""


class Change(NamedTuple):
    """One change: ``kind`` (ADD_VOTER, ADD_LEARNER, REMOVE_NODE) of node ``node_id``, with an
    opaque ``context`` for the runtime (e.g. the node's addresses)."""

    kind: int
    node_id: int
    context: bytes = b""


class ConfChange(NamedTuple):
    """A list of changes applied together, or ``leave_joint`` (with no changes)."""

    changes: tuple = ()
    leave_joint: bool = False

    @classmethod
    def leave(cls) -> "ConfChange":
        """The change that leaves a joint configuration."""
        return cls((), True)


class ConfState(NamedTuple):
    """A configuration: ``voters`` (the incoming ones while joint), ``outgoing`` (non-empty
    only while joint) and ``learners`` (replicated to, never counted)."""

    voters: frozenset
    outgoing: frozenset = frozenset()
    learners: frozenset = frozenset()


def is_conf_change(payload) -> bool:
    """Whether a log entry's payload is a configuration change (first byte 0xc1)."""
    return len(payload) > 0 and payload[0] == CONF_MARKER


def encode_conf_change(cc: ConfChange) -> bytes:
    """The log payload of ``cc`` (module docstring). BadConfChange on an invalid value."""
    changes = tuple(cc.changes)
    if cc.leave_joint and changes:
        raise BadConfChange("a leave-joint change carries no other changes")
    if not cc.leave_joint and not changes:
        raise BadConfChange("empty configuration change")
    if len(changes) > MAX_CHANGES:
        raise BadConfChange(f"{len(changes)} changes, at most {MAX_CHANGES}")
    parts = [_HEAD.pack(CONF_MARKER, VERSION, FLAG_LEAVE_JOINT if cc.leave_joint else 0,
                        len(changes))]
    for ch in changes:
        kind, node_id, context = ch
        if kind not in KIND_NAMES:
            raise BadConfChange(f"unknown change kind {kind!r}")
        if not isinstance(node_id, int) or not 1 <= node_id < (1 << 64):
            raise BadConfChange(f"node ids are integers >= 1, not {node_id!r}")
        context = bytes(context)
        if len(context) > MAX_CONTEXT:
            raise BadConfChange(f"context of {len(context)} bytes, at most {MAX_CONTEXT}")
        parts.append(_CHANGE.pack(kind, node_id, len(context)))
        parts.append(context)
    return b"".join(parts)


def decode_conf_change(payload) -> ConfChange:
    """The ConfChange encoded in ``payload``; BadConfChange on anything else."""
    data = bytes(payload)
    if len(data) < _HEAD.size:
        raise BadConfChange(f"conf change of {len(data)} bytes is truncated")
    marker, version, flags, n = _HEAD.unpack_from(data, 0)
    if marker != CONF_MARKER:
        raise BadConfChange(f"not a conf change (first byte {marker:#x})")
    if version != VERSION:
        raise BadConfChange(f"unknown conf change version {version}")
    if flags & ~FLAG_LEAVE_JOINT:
        raise BadConfChange(f"unknown conf change flags {flags:#x}")
    if n > MAX_CHANGES:
        raise BadConfChange(f"{n} changes, at most {MAX_CHANGES}")
    leave = bool(flags & FLAG_LEAVE_JOINT)
    if leave == (n > 0):
        raise BadConfChange("a conf change is either leave-joint or carries changes")
    pos = _HEAD.size
    changes = []
    for _ in range(n):
        if pos + _CHANGE.size > len(data):
            raise BadConfChange("conf change truncated in a change header")
        kind, node_id, clen = _CHANGE.unpack_from(data, pos)
        pos += _CHANGE.size
        if kind not in KIND_NAMES:
            raise BadConfChange(f"unknown change kind {kind}")
        if node_id == 0:
            raise BadConfChange("node id 0 in a conf change")
        if clen > MAX_CONTEXT or pos + clen > len(data):
            raise BadConfChange("conf change truncated in a context")
        changes.append(Change(kind, node_id, data[pos:pos + clen]))
        pos += clen
    if pos != len(data):
        raise BadConfChange(f"{len(data) - pos} trailing bytes after a conf change")
    return ConfChange(tuple(changes), leave)


def next_config(cur: ConfState, cc: ConfChange) -> ConfState:
    """The configuration ``cc`` turns ``cur`` into (module docstring); BadConfChange when it
    does not apply (unknown or duplicated ids, removing the last voter, a change while joint,
    a demotion)."""
    if cc.leave_joint:
        if not cur.outgoing:
            raise BadConfChange("not in a joint configuration: nothing to leave")
        return ConfState(cur.voters, frozenset(), cur.learners)
    if cur.outgoing:
        raise BadConfChange("a joint configuration must be left before another change")
    voters = set(cur.voters)
    learners = set(cur.learners)
    seen = set()
    for kind, nid, _ctx in cc.changes:
        if nid in seen:
            raise BadConfChange(f"node {nid} appears twice in one conf change")
        seen.add(nid)
        if kind == ADD_VOTER:
            if nid in voters:
                raise BadConfChange(f"node {nid} is already a voter")
            learners.discard(nid)
            voters.add(nid)
        elif kind == ADD_LEARNER:
            if nid in cur.voters:
                raise BadConfChange(f"node {nid} is a voter: remove it before adding it as a "
                                    "learner")
            if nid in learners:
                raise BadConfChange(f"node {nid} is already a learner")
            learners.add(nid)
        else:
            if nid in voters:
                voters.discard(nid)
            elif nid in learners:
                learners.discard(nid)
            else:
                raise BadConfChange(f"cannot remove unknown node {nid}")
    if not voters:
        raise BadConfChange("a configuration needs at least one voter")
    voters = frozenset(voters)
    if voters == cur.voters:
        return ConfState(voters, frozenset(), frozenset(learners))
    return ConfState(voters, cur.voters, frozenset(learners))
