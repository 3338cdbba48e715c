"""The log commands (CMD_*: the payloads of client entries) and the membership formats (a
conf change's member context, a snapshot's member book).

Place in the architecture: part of ``fastraft.codec``, between the server (which turns a
decoded write ``Request`` into a command: ``command_tuple``, ``command_for``) and the state
machine (which applies ``decode_command``'s tuples). The formats are described in the package
docstring (``fastraft/codec/__init__.py``, "Commands" and the member book). ``decode_command``
runs for every applied entry: its fast path binds module globals only. It uses msgpack only
through ``._msgpack``.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, short_repr
from ._msgpack import MAX_ADDRESS, _U64, _bad, _ids, _uint, _unpackb, pack
from .client import (OP_CAS, OP_CAS_REV, OP_DELETE, OP_KEEPALIVE, OP_LEASE_GRANT,
                     OP_LEASE_KEEPALIVE, OP_LEASE_REVOKE, OP_NAMES, OP_PUT, OP_REGISTER,
                     Request)

CMD_REGISTER = 1
CMD_PUT = 2
CMD_DELETE = 3
CMD_CAS = 4
CMD_KEEPALIVE = 5
CMD_CAS_REV = 6
CMD_LEASE_GRANT = 7
CMD_LEASE_REVOKE = 8
CMD_LEASE_KEEPALIVE = 9
CMD_TICK = 10


# -- membership: conf-change contexts and the member book ----------------------------------

def encode_member_context(raft: str, client: str) -> bytes:
    """The context of a conf change adding a node: its peer and client addresses."""
    return pack([raft, client])


def decode_member_context(ctx: bytes) -> tuple[str, str] | None:
    """``(raft, client)`` of a conf change's context, or None when it carries none (a
    removal, a promotion). RemoteProtocolError on anything else."""
    if not ctx:
        return None
    v = _unpackb(ctx, len(ctx))
    if (type(v) is not list or len(v) != 2 or
            not all(type(a) is str and 0 < len(a) <= MAX_ADDRESS for a in v)):
        raise _bad(f"member context is not [raft, client]: {short_repr(v)}")
    return v[0], v[1]


def encode_member_book(addrs: dict, removed=()) -> bytes:
    """The member book (package docstring): ``addrs`` maps id -> (raft, client)."""
    return pack([1, [[nid, a[0], a[1]] for nid, a in sorted(addrs.items())], sorted(removed)])


def decode_member_book(b: bytes) -> tuple[dict, frozenset]:
    """``(addrs, removed)`` of an ``encode_member_book`` value (empty bytes: nothing known).
    RemoteProtocolError on anything else."""
    if not b:
        return {}, frozenset()
    v = _unpackb(b, len(b))
    if type(v) is not list or len(v) != 3 or v[0] != 1 or type(v[1]) is not list:
        raise _bad(f"member book is not [1, members, removed]: {short_repr(v)}")
    addrs = {}
    for m in v[1]:
        if (type(m) is not list or len(m) != 3 or
                not all(type(a) is str and 0 < len(a) <= MAX_ADDRESS for a in m[1:])):
            raise _bad(f"member book entry is not [id, raft, client]: {short_repr(m)}")
        addrs[_uint(m[0], "member id")] = (m[1], m[2])
    return addrs, _ids(v[2], "removed ids")


def encode_command(cmd: tuple | list) -> bytes:
    """A log command's payload from its fields (``[CMD_*, ts, ...]``, shapes in the package
    docstring); the node builds its commands with ``command_for``."""
    return pack(cmd)


def command_tuple(req: Request, ts: int) -> tuple:
    """The log command's fields for a decoded write request ``req``, stamped with the
    leader's wall clock ``ts`` in milliseconds: exactly what ``decode_command`` gives back
    for its payload (``encode_command``), so the leader need not decode its own commands."""
    op = req.op
    if op == OP_PUT:
        if req.lease:
            return (CMD_PUT, ts, req.session, req.seq, req.first_unacked, req.key, req.value,
                    req.lease)
        return (CMD_PUT, ts, req.session, req.seq, req.first_unacked, req.key, req.value)
    if op == OP_DELETE:
        return (CMD_DELETE, ts, req.session, req.seq, req.first_unacked, req.key)
    if op == OP_CAS:
        if req.lease:
            return (CMD_CAS, ts, req.session, req.seq, req.first_unacked, req.key,
                    req.expected, req.value, req.lease)
        return (CMD_CAS, ts, req.session, req.seq, req.first_unacked, req.key, req.expected,
                req.value)
    if op == OP_CAS_REV:
        return (CMD_CAS_REV, ts, req.session, req.seq, req.first_unacked, req.key, req.rev,
                req.value, req.lease)
    if op == OP_LEASE_GRANT:
        return (CMD_LEASE_GRANT, ts, req.session, req.seq, req.first_unacked, req.rev)
    if op == OP_LEASE_REVOKE:
        return (CMD_LEASE_REVOKE, ts, req.session, req.seq, req.first_unacked, req.lease)
    if op == OP_LEASE_KEEPALIVE:
        return (CMD_LEASE_KEEPALIVE, ts, req.lease)
    if op == OP_REGISTER:
        return (CMD_REGISTER, ts)
    if op == OP_KEEPALIVE:
        return (CMD_KEEPALIVE, ts, req.session, req.first_unacked)
    raise LocalProtocolError(f"{OP_NAMES.get(op, op)} is not a write")


def command_for(req: Request, ts: int) -> bytes:
    """The log command (its encoded payload) for a decoded write request ``req``, stamped
    with the leader's wall clock ``ts`` in milliseconds."""
    return pack(command_tuple(req, ts))


#: command kind -> (fewest, most) fields
_CMD_SHAPE = {CMD_REGISTER: (2, 2), CMD_PUT: (7, 8), CMD_DELETE: (6, 6), CMD_CAS: (8, 9),
              CMD_KEEPALIVE: (4, 4), CMD_CAS_REV: (9, 9), CMD_LEASE_GRANT: (6, 6),
              CMD_LEASE_REVOKE: (6, 6), CMD_LEASE_KEEPALIVE: (3, 3), CMD_TICK: (2, 2)}

# Builtins bound as module globals for decode_command's fast path.
_int, _bytes, _list = int, bytes, list


def decode_command(payload: bytes) -> tuple:
    """A committed command as a tuple (shapes in the package docstring). Raises
    RemoteProtocolError for a payload that is not a valid command: the leader validates
    before proposing, so this only happens to a log written by something else. A valid put
    (the hot shape) is checked in one expression; anything else goes the general way."""
    v = _unpackb(payload, max(len(payload), 1))
    if type(v) is _list and len(v) == 7:
        kind, ts, s, q, f, key, value = v
        if (kind == CMD_PUT and type(kind) is _int and type(ts) is _int and type(s) is _int
                and type(q) is _int and type(f) is _int and type(key) is _bytes
                and type(value) is _bytes and 0 <= ts <= _U64 and 0 <= s <= _U64
                and 0 <= q <= _U64 and 0 <= f <= _U64):
            return tuple(v)
    return _decode_command(v)


def _decode_command(v) -> tuple:
    if type(v) is not list or not v or type(v[0]) is not int or v[0] not in _CMD_SHAPE:
        raise _bad(f"not a command: {short_repr(v)}")
    kind = v[0]
    fewest, most = _CMD_SHAPE[kind]
    if not fewest <= len(v) <= most:
        raise _bad(f"command {kind} has {len(v)} fields")
    _uint(v[1], "timestamp")
    if kind == CMD_REGISTER or kind == CMD_TICK:
        return tuple(v)
    if kind == CMD_LEASE_KEEPALIVE:
        _uint(v[2], "lease")
        return tuple(v)
    _uint(v[2], "session")
    _uint(v[3], "seq" if kind != CMD_KEEPALIVE else "first_unacked")
    if kind == CMD_KEEPALIVE:
        return tuple(v)
    _uint(v[4], "first_unacked")
    if kind == CMD_LEASE_GRANT:
        _uint(v[5], "ttl")
        return tuple(v)
    if kind == CMD_LEASE_REVOKE:
        _uint(v[5], "lease")
        return tuple(v)
    if type(v[5]) is not bytes:
        raise _bad("command key must be bytes")
    if kind == CMD_PUT and type(v[6]) is not bytes:
        raise _bad("command value must be bytes")
    if kind == CMD_CAS and ((v[6] is not None and type(v[6]) is not bytes)
                            or type(v[7]) is not bytes):
        raise _bad("cas expected/new must be bytes (expected may be nil)")
    if kind == CMD_CAS_REV:
        _uint(v[6], "expected revision")
        if type(v[7]) is not bytes:
            raise _bad("cas new value must be bytes")
    if len(v) == most and kind != CMD_DELETE:
        _uint(v[-1], "lease")
    return tuple(v)

