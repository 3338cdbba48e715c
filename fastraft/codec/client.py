"""The client protocol: operations (OP_*), answer statuses (ST_*), request decoding with its
limits (``Limits``, ``Request``, ``decode_request``), responses, the node's notices, the head of
a request too large to read (``request_head``) and watch frames.

Place in the architecture: part of ``fastraft.codec``, below the server's client port
(``fastraft/server/clients.py``, ``requests.py``) and the client library
(``fastraft/client/``). The formats are described in the package docstring
(``fastraft/codec/__init__.py``, "Client connections"). ``decode_request`` is on the hot path
of every client request: its fast path binds module globals only (no package attribute
lookups). It uses msgpack only through ``._msgpack``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InvalidRequest, short_repr
from ._msgpack import MAX_ADDRESS, _U64, _bad, _unpackb, pack

OP_GET = 1
OP_PUT = 2
OP_DELETE = 3
OP_CAS = 4
OP_SCAN = 5
OP_REGISTER = 6
OP_KEEPALIVE = 7
OP_STATUS = 8
OP_MEMBERS = 9
OP_MEMBER = 10
OP_BACKUP = 11
OP_BACKUP_READ = 12
OP_BACKUP_END = 13
OP_CAS_REV = 14
OP_LEASE_GRANT = 15
OP_LEASE_REVOKE = 16
OP_LEASE_KEEPALIVE = 17
OP_REVISION = 18
OP_WATCH = 19
OP_WATCH_CANCEL = 20
OP_NAMES = {OP_GET: "get", OP_PUT: "put", OP_DELETE: "delete", OP_CAS: "cas", OP_SCAN: "scan",
            OP_REGISTER: "register", OP_KEEPALIVE: "keepalive", OP_STATUS: "status",
            OP_MEMBERS: "members", OP_MEMBER: "member", OP_BACKUP: "backup",
            OP_BACKUP_READ: "backup_read", OP_BACKUP_END: "backup_end",
            OP_CAS_REV: "cas_rev", OP_LEASE_GRANT: "lease_grant",
            OP_LEASE_REVOKE: "lease_revoke", OP_LEASE_KEEPALIVE: "lease_keepalive",
            OP_REVISION: "revision", OP_WATCH: "watch", OP_WATCH_CANCEL: "watch_cancel"}
#: The most bytes one OP_BACKUP_READ may ask for.
BACKUP_READ_MAX = 4 << 20
#: OP_MEMBER kinds (the same codes as ``fastraft.raft.confchange``'s change kinds).
MEMBER_PROMOTE = 1
MEMBER_ADD_LEARNER = 2
MEMBER_REMOVE = 3
MEMBER_KIND_NAMES = {MEMBER_PROMOTE: "promote", MEMBER_ADD_LEARNER: "add-learner",
                     MEMBER_REMOVE: "remove"}
#: Operations that become log entries (and carry a session, except register and the
#: keepalives).
WRITE_OPS = frozenset({OP_PUT, OP_DELETE, OP_CAS, OP_REGISTER, OP_KEEPALIVE, OP_CAS_REV,
                       OP_LEASE_GRANT, OP_LEASE_REVOKE, OP_LEASE_KEEPALIVE})
#: The shortest and longest TTL of a lease a client may ask for (ms).
MIN_LEASE_TTL_MS = 1000
MAX_LEASE_TTL_MS = 10 * 366 * 86_400_000

ST_OK = 0
ST_NOT_LEADER = 1
ST_BUSY = 2
ST_INVALID = 3
ST_SESSION_EXPIRED = 4
ST_UNKNOWN = 5
ST_ERROR = 6
ST_NO_LEASE = 7
ST_COMPACTED = 8
_STATUSES = frozenset(range(ST_OK, ST_COMPACTED + 1))


class Limits(NamedTuple):
    """Bounds on client requests (InvalidRequest above them)."""

    max_key: int = 4096
    max_value: int = 1 << 20
    max_scan: int = 10_000


class Request(NamedTuple):
    """A decoded client request. Unused fields are None / 0."""

    req_id: int
    op: int
    session: int = 0
    seq: int = 0
    first_unacked: int = 0
    key: bytes = b""
    value: bytes | None = None
    expected: bytes | None = None
    stale: bool = False
    limit: int = 0
    with_limits: bool = False       # OP_STATUS: append the limits to the answer
    member: tuple | None = None     # OP_MEMBER: (kind, node_id, raft | None, client | None)
    backup: tuple | None = None     # OP_BACKUP_READ: (token, offset, length); _END: (token,)
    lease: int = 0                  # put/cas/cas_rev: attach to it; the lease ops: which one
    rev: int = 0                    # OP_CAS_REV: expected revision; OP_WATCH: start (0: now);
                                    # OP_LEASE_GRANT: TTL (ms); OP_WATCH_CANCEL: watch's id
    with_rev: bool = False          # OP_GET, OP_SCAN: answer the revisions too


#: The fields OP_STATUS appends when asked ``with_limits`` (what ``Limits`` and the node's
#: frame limit hold), in wire order.
STATUS_LIMIT_FIELDS = ("max_frame_bytes", "max_key_bytes", "max_value_bytes", "max_scan")


def encode_request(req_id: int, op: int, *args) -> bytes:
    """The body of request ``req_id``: operation ``op`` with its ``args`` in wire order (the
    package docstring's table; ``decode_request`` is its strict inverse). Nothing is
    validated here."""
    return pack([req_id, op, *args])


def _key(v, limits: Limits, what: str = "key") -> bytes:
    if type(v) is not bytes:
        raise InvalidRequest(f"{what} must be bytes, got {type(v).__name__}")
    if len(v) > limits.max_key:
        raise InvalidRequest(f"{what} of {len(v)} bytes is over the limit of {limits.max_key}")
    return v


def _value(v, limits: Limits, what: str = "value") -> bytes:
    if type(v) is not bytes:
        raise InvalidRequest(f"{what} must be bytes, got {type(v).__name__}")
    if len(v) > limits.max_value:
        raise InvalidRequest(
            f"{what} of {len(v)} bytes is over the limit of {limits.max_value}")
    return v


def _rint(v, what: str) -> int:
    if type(v) is not int or not 0 <= v <= _U64:
        raise InvalidRequest(f"{what} must be an unsigned integer, got {short_repr(v)}")
    return v


def _session(args) -> tuple[int, int, int]:
    session = _rint(args[0], "session")
    seq = _rint(args[1], "seq")
    first = _rint(args[2], "first_unacked")
    if session == 0:
        raise InvalidRequest("writes need a session (register first)")
    if seq == 0 or first > seq:
        raise InvalidRequest("need 1 <= seq and first_unacked <= seq")
    return session, seq, first


_ARITY = {OP_GET: 2, OP_PUT: 5, OP_DELETE: 4, OP_CAS: 6, OP_SCAN: 3, OP_REGISTER: 0,
          OP_KEEPALIVE: 2, OP_STATUS: 0, OP_MEMBERS: 0, OP_MEMBER: 4, OP_BACKUP: 0,
          OP_BACKUP_READ: 3, OP_BACKUP_END: 1, OP_CAS_REV: 7, OP_LEASE_GRANT: 4,
          OP_LEASE_REVOKE: 4, OP_LEASE_KEEPALIVE: 1, OP_REVISION: 1, OP_WATCH: 2,
          OP_WATCH_CANCEL: 1}
_MAX_ARITY = {**_ARITY, OP_STATUS: 1, OP_GET: 3, OP_PUT: 6, OP_CAS: 7, OP_SCAN: 4}


def _address(v, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_ADDRESS:
        raise InvalidRequest(f"{what} must be a \"host:port\" string, got {short_repr(v)}")
    return v


def _member_change(args) -> tuple:
    kind, node_id, raft, client = args
    if type(kind) is not int or kind not in MEMBER_KIND_NAMES:
        raise InvalidRequest(f"unknown member change kind {short_repr(kind)}")
    if type(node_id) is not int or not 1 <= node_id <= _U64:
        raise InvalidRequest(f"node ids are integers >= 1, not {short_repr(node_id)}")
    if kind == MEMBER_ADD_LEARNER:
        return (kind, node_id, _address(raft, "raft address"), _address(client, "client address"))
    if raft is not None or client is not None:
        raise InvalidRequest(f"{MEMBER_KIND_NAMES[kind]} takes no addresses")
    return (kind, node_id, None, None)


def _backup_args(op: int, args) -> tuple:
    token = _rint(args[0], "backup token")
    if token == 0:
        raise InvalidRequest("backup token 0 is not valid")
    if op == OP_BACKUP_END:
        return (token,)
    offset = _rint(args[1], "backup offset")
    length = _rint(args[2], "backup read length")
    if not 1 <= length <= BACKUP_READ_MAX:
        raise InvalidRequest(f"backup read length must be 1..{BACKUP_READ_MAX}, got {length}")
    return (token, offset, length)


def _lease_arg(args, i: int) -> int:
    """The optional lease id at ``args[i]`` (0: none)."""
    return _rint(args[i], "lease") if len(args) > i else 0


def _coordination_request(req_id: int, op: int, args, limits: Limits) -> Request:
    """The requests of revisions, leases and watches (their arity is checked)."""
    if op == OP_CAS_REV:
        s, q, f = _session(args)
        return Request(req_id, op, s, q, f, key=_key(args[3], limits),
                       rev=_rint(args[4], "expected revision"),
                       value=_value(args[5], limits, "new"), lease=_rint(args[6], "lease"))
    if op == OP_LEASE_GRANT:
        s, q, f = _session(args)
        ttl = _rint(args[3], "ttl")
        if not MIN_LEASE_TTL_MS <= ttl <= MAX_LEASE_TTL_MS:
            raise InvalidRequest(f"a lease's TTL must be {MIN_LEASE_TTL_MS} to "
                                 f"{MAX_LEASE_TTL_MS} ms, got {ttl}")
        return Request(req_id, op, s, q, f, rev=ttl)
    if op == OP_LEASE_REVOKE:
        s, q, f = _session(args)
        return Request(req_id, op, s, q, f, lease=_lease_id(args[3]))
    if op == OP_LEASE_KEEPALIVE:
        return Request(req_id, op, lease=_lease_id(args[0]))
    if op == OP_REVISION:
        if type(args[0]) is not bool:
            raise InvalidRequest("stale must be a boolean")
        return Request(req_id, op, stale=args[0])
    if op == OP_WATCH:
        return Request(req_id, op, key=_key(args[0], limits, "prefix"),
                       rev=_rint(args[1], "start revision"))
    return Request(req_id, op, rev=_rint(args[0], "watch id"))     # OP_WATCH_CANCEL


def _lease_id(v) -> int:
    lid = _rint(v, "lease")
    if lid == 0:
        raise InvalidRequest("lease 0 is not valid")
    return lid


_new = tuple.__new__
_int, _bytes, _bool, _list = int, bytes, bool, list


def decode_request(body, limits: Limits, max_bytes: int) -> Request:
    """Decode a client request.

    Raises RemoteProtocolError when the body is not even ``[req_id, op, ...]`` (the
    connection is closed: there is nobody to answer), and InvalidRequest carrying
    ``req_id`` as an attribute when the request can be answered with ST_INVALID.

    The two hot shapes (a valid put, a valid get) take a fast path that checks everything
    the general path checks in one expression and builds the Request without its
    Python-level ``__new__``; anything else (any doubt) goes the general way, which gives
    the precise error."""
    v = _unpackb(body, max_bytes)
    if type(v) is _list:
        n = len(v)
        if n == 7:
            rid, op, s, q, f, key, value = v
            if (op == OP_PUT and type(op) is _int and type(rid) is _int and type(s) is _int
                    and type(q) is _int and type(f) is _int and type(key) is _bytes
                    and type(value) is _bytes and 0 <= rid <= _U64 and 0 < s <= _U64
                    and 0 < q <= _U64 and 0 <= f <= q and len(key) <= limits.max_key
                    and len(value) <= limits.max_value):
                return _new(Request, (rid, op, s, q, f, key, value, None, False, 0, False,
                                      None, None, 0, 0, False))
        elif n == 4:
            rid, op, key, stale = v
            if (op == OP_GET and type(op) is _int and type(rid) is _int
                    and type(key) is _bytes and type(stale) is _bool and 0 <= rid <= _U64
                    and len(key) <= limits.max_key):
                return _new(Request, (rid, op, 0, 0, 0, key, None, None, stale, 0, False,
                                      None, None, 0, 0, False))
    return _decode_request(v, limits)


def _decode_request(v, limits: Limits) -> Request:
    if type(v) is not list or len(v) < 2 or type(v[0]) is not int or not 0 <= v[0] <= _U64:
        raise _bad(f"request is not [req_id, op, ...]: {short_repr(v)}")
    req_id, op = v[0], v[1]
    try:
        args = v[2:]
        if type(op) is not int or op not in _ARITY:
            raise InvalidRequest(f"unknown operation {short_repr(op)}")
        if not _ARITY[op] <= len(args) <= _MAX_ARITY[op]:
            many = _ARITY[op] if _ARITY[op] == _MAX_ARITY[op] \
                else f"{_ARITY[op]} to {_MAX_ARITY[op]}"
            raise InvalidRequest(f"{OP_NAMES[op]} takes {many} arguments, got {len(args)}")
        if op >= OP_CAS_REV:
            return _coordination_request(req_id, op, args, limits)
        if op == OP_GET:
            if type(args[1]) is not bool or (len(args) == 3 and type(args[2]) is not bool):
                raise InvalidRequest("stale and with_revision must be booleans")
            return Request(req_id, op, key=_key(args[0], limits), stale=args[1],
                           with_rev=len(args) == 3 and args[2])
        if op == OP_PUT:
            s, q, f = _session(args)
            return Request(req_id, op, s, q, f, key=_key(args[3], limits),
                           value=_value(args[4], limits), lease=_lease_arg(args, 5))
        if op == OP_DELETE:
            s, q, f = _session(args)
            return Request(req_id, op, s, q, f, key=_key(args[3], limits))
        if op == OP_CAS:
            s, q, f = _session(args)
            exp = args[4]
            if exp is not None:
                exp = _value(exp, limits, "expected")
            return Request(req_id, op, s, q, f, key=_key(args[3], limits), expected=exp,
                           value=_value(args[5], limits, "new"), lease=_lease_arg(args, 6))
        if op == OP_SCAN:
            limit = _rint(args[1], "limit")
            if type(args[2]) is not bool or (len(args) == 4 and type(args[3]) is not bool):
                raise InvalidRequest("stale and with_revision must be booleans")
            if limit == 0 or limit > limits.max_scan:
                limit = limits.max_scan
            return Request(req_id, op, key=_key(args[0], limits, "prefix"), limit=limit,
                           stale=args[2], with_rev=len(args) == 4 and args[3])
        if op == OP_KEEPALIVE:
            s = _rint(args[0], "session")
            if s == 0:
                raise InvalidRequest("keepalive needs a session")
            return Request(req_id, op, s, first_unacked=_rint(args[1], "first_unacked"))
        if op == OP_MEMBER:
            return Request(req_id, op, member=_member_change(args))
        if op == OP_BACKUP_READ or op == OP_BACKUP_END:
            return Request(req_id, op, backup=_backup_args(op, args))
        if op == OP_STATUS and args:
            if type(args[0]) is not bool:
                raise InvalidRequest("status's with_limits must be a boolean")
            return Request(req_id, op, with_limits=args[0])
        return Request(req_id, op)
    except InvalidRequest as exc:
        exc.req_id = req_id
        raise


def encode_response(req_id: int, status: int, *values) -> bytes:
    """The answer to request ``req_id``: a status (ST_*) and its values (package docstring)."""
    return pack([req_id, status, *values])


def encode_events(events) -> bytes:
    """A watch frame's events, packed once for every watcher they go to: ``events`` are
    ``(revision, type, key, value | None)`` tuples."""
    flat = []
    for ev in events:
        flat += ev
    return pack(flat)


def encode_watch_frame(watch_id: int, packed_events: bytes, progress: int) -> bytes:
    """``[watch_id, ST_OK, events, progress]`` around events packed by ``encode_events``."""
    return b"\x94" + pack(watch_id) + b"\x00" + packed_events + pack(progress)


def decode_watch_frame(values) -> tuple[list, int]:
    """``(events, progress)`` of a watch frame's values (after the id and ST_OK); events as
    ``(revision, type, key, value | None)``. RemoteProtocolError when malformed."""
    if type(values) is not list or len(values) != 2 or type(values[0]) is not list \
            or len(values[0]) % 4 or type(values[1]) is not int:
        raise _bad(f"malformed watch frame {short_repr(values)}")
    flat = values[0]
    events = []
    for i in range(0, len(flat), 4):
        rev, kind, key, value = flat[i:i + 4]
        if (type(rev) is not int or rev < 1 or kind not in (0, 1) or type(key) is not bytes
                or (type(value) is not bytes if kind == 0 else value is not None)):
            raise _bad(f"malformed watch event {short_repr(flat[i:i + 4])}")
        events.append((rev, kind, key, value))
    return events, values[1]


def encode_notice(status: int, message: str, last_req_id: int) -> bytes:
    """The node's notice before it closes a connection (package docstring)."""
    return pack([0, status, message, last_req_id])


_FIXED_UINT = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}
_FIXED_INT = {0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}


def _head_int(b, pos: int):
    """``(value, next_pos)`` of the msgpack integer at ``pos``; None when the bytes there are
    not an integer; ... (Ellipsis) when they are cut short."""
    if pos >= len(b):
        return ...
    t = b[pos]
    if t <= 0x7f:
        return t, pos + 1
    if t >= 0xe0:
        return t - 0x100, pos + 1
    n = _FIXED_UINT.get(t) or _FIXED_INT.get(t)
    if n is None:
        return None
    if pos + 1 + n > len(b):
        return ...
    return int.from_bytes(b[pos + 1:pos + 1 + n], "big", signed=t in _FIXED_INT), pos + 1 + n


def request_head(head) -> tuple[int, int | None] | None:
    """``(req_id, op)`` read from the first bytes of a request body (``op`` None when it is
    not an integer), without the rest of it: how the client port answers a request too large
    to read. None when these bytes cannot begin a request ``[req_id, op, ...]``; ``...``
    (Ellipsis) when they are a valid beginning cut too short to tell (23 bytes always do)."""
    b = bytes(head[:32])
    if not b:
        return ...
    t = b[0]
    if 0x90 <= t <= 0x9f:
        n, pos = t & 0x0f, 1
    elif t in (0xdc, 0xdd):
        w = 2 if t == 0xdc else 4
        if len(b) < 1 + w:
            return ...
        n, pos = int.from_bytes(b[1:1 + w], "big"), 1 + w
    else:
        return None
    if n < 2:
        return None
    got = _head_int(b, pos)
    if got is None or got is ...:
        return got
    req_id, pos = got
    if not 0 <= req_id <= _U64:
        return None
    got = _head_int(b, pos)
    if got is ...:
        return ...
    return req_id, (None if got is None else got[0])


def decode_response(body, max_bytes: int) -> tuple[int, int, list]:
    """``(req_id, status, values)``; RemoteProtocolError when malformed (the client side
    validates per operation)."""
    v = _unpackb(body, max_bytes)
    if (type(v) is not list or len(v) < 2 or type(v[0]) is not int or type(v[1]) is not int
            or v[1] not in _STATUSES):
        raise _bad(f"response is not [req_id, status, ...]: {short_repr(v)}")
    return v[0], v[1], v[2:]
