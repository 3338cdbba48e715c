"""The wire and command formats: the one module of fastraft that uses msgpack.

Place in the architecture: below the server, the client and the state machine, beside the core
(whose frame codec carries these bodies: a u32-LE length prefix, then one msgpack value).
Everything that crosses a socket or enters the log is encoded and, above all, validated here:
decoding is strict (exact array lengths, exact types, bounded sizes), so nothing malformed
reaches the consensus engine or the state machine. Every body is a msgpack array whose first
element is an integer code and whose fields are positional (never string keys).

Peer connections (node -> node; one-directional: a node sends on the connection it dialled
and receives on the ones it accepted; replies travel on the reverse connection)::

    [P_HELLO, version, cluster, from_id, to_id(, from_raft)]
                                                     dialler's first frame; from_raft:
                                                     its peer address "host:port" (so a
                                                     node that does not know it yet can
                                                     answer; optional)
    [P_WELCOME, version, node_id]                    acceptor's answer; or
    [P_REFUSE, reason]                               ... and the acceptor closes
    [P_MSG, type, to, frm, term, log_term, index, entries, commit, reject,
            hint_index, hint_term, context, snap, transfer]
        entries: flat [term1, payload1, term2, payload2, ...]
        snap:    nil, or [index, term, voters, outgoing, nbytes, learners, context]
                 (SNAP messages only; context: the meta's opaque bytes, the member book)
    [P_SNAP_CHUNK, snap_term, snap_index, offset, data]
        a snapshot file's bytes, sent in order before the SNAP message that names it

``decode_peer`` returns them as NamedTuples led by their kind code: ``Hello``, ``Welcome``,
``Refuse``, ``PeerMessage`` (the engine's ``Message``, and the SNAP's ``SnapMeta``) and
``SnapshotChunk``.

Client connections (requests carry an id; many may be outstanding; answers may come back in
any order)::

    request:  [req_id, op, *args]          response: [req_id, status, *values]

    op            args                                          OK values
    OP_GET        key, stale(, with_revision)                   value | nil; with_revision
                                                                true: [value, revision] | nil
    OP_PUT        session, seq, first_unacked, key, value(, lease)        nil
    OP_DELETE     session, seq, first_unacked, key              existed (bool)
    OP_CAS        session, seq, first_unacked, key, expected|nil, new(, lease)
                                                                swapped (bool)
    OP_SCAN       prefix, limit, stale(, with_revision)         [[key, value], ...];
                                                                with_revision true:
                                                                [[key, value, revision], ...]
    OP_REGISTER   -                                             session id
    OP_KEEPALIVE  session, first_unacked                        nil
    OP_STATUS     [with_limits]                                 [id, role, term, leader,
                                                                 last_index, commit, applied,
                                                                 core, loop, version]
                                                                then, with_limits true:
                                                                [..., max_frame, max_key,
                                                                 max_value, max_scan]
    OP_MEMBERS    -                                             [[id, role, raft, client,
                                                                  is_leader, match], ...]
    OP_MEMBER     kind, node_id, raft|nil, client|nil           index of the change
    OP_BACKUP     -                                             [token, index, term, voters,
                                                                 outgoing, learners, context,
                                                                 data_len, data_crc, cluster,
                                                                 node_id]
    OP_BACKUP_READ  token, offset, length                       data (bytes)
    OP_BACKUP_END   token                                       nil
    OP_CAS_REV    session, seq, first_unacked, key, expected_rev, new, lease
                                                                [swapped, revision]
    OP_LEASE_GRANT      session, seq, first_unacked, ttl_ms     lease id
    OP_LEASE_REVOKE     session, seq, first_unacked, lease      existed (bool)
    OP_LEASE_KEEPALIVE  lease                                   ttl_ms
    OP_REVISION   stale                                         revision (the applied index)
    OP_WATCH      prefix, start_revision (0: from now)          a stream of frames (below)
    OP_WATCH_CANCEL     watch's request id                      nil

    status        values
    ST_OK         as above
    ST_NOT_LEADER leader_id | 0, leader client address "host:port" | nil
    ST_BUSY / ST_INVALID / ST_SESSION_EXPIRED / ST_ERROR           message
    ST_UNKNOWN    message: the outcome is unknown (leadership lost after proposing)
    ST_NO_LEASE   message: the lease does not exist (expired, revoked, never granted)
    ST_COMPACTED  oldest revision still available, message

Revisions and leases (docs/architecture.md, "Coordination"): a revision is the index of the
entry that wrote it; ``expected_rev`` 0 means "the key is absent", ``lease`` 0 "no lease";
a TTL is MIN_LEASE_TTL_MS to MAX_LEASE_TTL_MS. A watch is answered by a stream of frames
under its request id, each::

    [watch_id, ST_OK, [revision, type, key, value|nil, ...], progress]

(type 0 put, 1 delete; events in revision order, all of one revision in one frame; progress:
the node has sent every matching event up to this revision), the first one at once (the
history from the start revision, possibly empty). The stream ends with one non-OK frame:
ST_COMPACTED (the start revision is older than the node's history), ST_BUSY (the watcher read
too slowly), ST_INVALID, or a notice when the node shuts down; OP_WATCH_CANCEL ends it
silently (frames already sent may still arrive).

OP_STATUS's optional boolean asks for the node's request limits (bytes of a frame body, a key,
a value; entries of a scan) after the ten fields; without it the answer keeps its ten fields,
so clients that parse exactly ten keep working (and an older node refuses the argument with
ST_INVALID). Clients number their requests from 1: request id 0 is the node's::

    notice:   [0, status, message, last_req_id]

A notice says the node closes this connection and read no request after ``last_req_id``
(request ids grow along a connection): every request sent after it was NOT applied. ST_BUSY:
refused at accept (too many connections; last_req_id 0); ST_NOT_LEADER: the node is shutting
down. Requests up to ``last_req_id`` got their answers before the notice, or none (outcome
unknown). A request frame over the node's frame limit is answered ST_INVALID (its id is read
from the first bytes of its body, ``request_head``) and skipped; the connection stays open.

Commands (log entry payloads; ``ts`` is the leader's wall clock in milliseconds)::

    [CMD_REGISTER, ts]
    [CMD_PUT, ts, session, seq, first_unacked, key, value(, lease)]
    [CMD_DELETE, ts, session, seq, first_unacked, key]
    [CMD_CAS, ts, session, seq, first_unacked, key, expected|nil, new(, lease)]
    [CMD_KEEPALIVE, ts, session, first_unacked]
    [CMD_CAS_REV, ts, session, seq, first_unacked, key, expected_rev, new, lease]
    [CMD_LEASE_GRANT, ts, session, seq, first_unacked, ttl_ms]
    [CMD_LEASE_REVOKE, ts, session, seq, first_unacked, lease]
    [CMD_LEASE_KEEPALIVE, ts, lease]
    [CMD_TICK, ts]                   the leader's clock, when a lease's deadline has passed

``lease`` 0 is no lease; ``expected_rev`` 0 is "the key is absent". A put or cas without the
optional lease field is the same as one with lease 0 (the shape of earlier releases).

OP_MEMBERS is answered by the leader only (others answer ST_NOT_LEADER): ``role`` is
"voter" or "learner", ``match`` the highest index the leader knows the member holds.
OP_MEMBER asks the leader for one configuration change: ``kind`` is MEMBER_ADD_LEARNER (with
the new node's peer and client addresses, "host:port"), MEMBER_PROMOTE or MEMBER_REMOVE (no
addresses); the answer comes once the change is committed and applied (and the joint
configuration it started, if any, left). A change that cannot be made (unknown or duplicate
id, an address in use, the last voter, a learner not caught up, another change in flight) is
ST_INVALID or ST_BUSY with the reason: certainly not made.

OP_BACKUP (``fastraft snapshot save``) is served by the leader only, after a ReadIndex round
(as a linearizable read: every write acknowledged before it is in the snapshot): the node
writes a snapshot of its state machine at its applied index (at least the read index) into a
file of its own, without stalling (a forked writer, or a database copy in a thread), checks
it, and answers with a ``token`` naming that file, the snapshot's meta (index, term, the
configuration's ids and the member book ``context``), the length and CRC-32 of its data (the
state machine's snapshot stream) and the node's cluster name and id. OP_BACKUP_READ returns
``length`` (1..BACKUP_READ_MAX) bytes of that data at ``offset`` (fewer only at its end),
from any role, on the node that answered OP_BACKUP; OP_BACKUP_END releases the file (a file
not read for a minute is released anyway). One backup at a time per node: another is Busy.
An unknown or released token is ST_INVALID.

A configuration-change entry (payload starting 0xc1, ``fastraft.raft.confchange``) carries,
per change, a context: ``encode_member_context`` ``[raft, client]``. A snapshot's meta
carries the member book as of its index (``encode_member_book``)::

    [1, [[id, raft, client], ...], [removed_id, ...]]

The empty payload is the leader's no-op and is never a command. State-machine snapshots are a
stream of msgpack values (``pack`` / ``SnapshotDecoder``); their shapes are the state
machine's business.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from .errors import InvalidRequest, LocalProtocolError, RemoteProtocolError, short_repr
from .raft.messages import Message, MsgType, Snapshot, SnapshotMeta

__all__ = [
    "PROTOCOL_VERSION",
    "P_HELLO", "P_WELCOME", "P_REFUSE", "P_MSG", "P_SNAP_CHUNK",
    "OP_GET", "OP_PUT", "OP_DELETE", "OP_CAS", "OP_SCAN", "OP_REGISTER", "OP_KEEPALIVE",
    "OP_STATUS", "OP_MEMBERS", "OP_MEMBER", "OP_BACKUP", "OP_BACKUP_READ", "OP_BACKUP_END",
    "OP_CAS_REV", "OP_LEASE_GRANT", "OP_LEASE_REVOKE", "OP_LEASE_KEEPALIVE", "OP_REVISION",
    "OP_WATCH", "OP_WATCH_CANCEL", "MIN_LEASE_TTL_MS", "MAX_LEASE_TTL_MS",
    "BACKUP_READ_MAX", "OP_NAMES", "WRITE_OPS",
    "MEMBER_PROMOTE", "MEMBER_ADD_LEARNER", "MEMBER_REMOVE", "MEMBER_KIND_NAMES",
    "ST_OK", "ST_NOT_LEADER", "ST_BUSY", "ST_INVALID", "ST_SESSION_EXPIRED", "ST_UNKNOWN",
    "ST_ERROR",
    "ST_NO_LEASE", "ST_COMPACTED",
    "CMD_REGISTER", "CMD_PUT", "CMD_DELETE", "CMD_CAS", "CMD_KEEPALIVE", "CMD_CAS_REV",
    "CMD_LEASE_GRANT", "CMD_LEASE_REVOKE", "CMD_LEASE_KEEPALIVE", "CMD_TICK",
    "Limits", "Request",
    "encode_hello", "encode_welcome", "encode_refuse", "encode_message", "encode_snap_chunk",
    "decode_peer", "Hello", "Welcome", "Refuse", "PeerMessage", "SnapshotChunk", "PeerFrame",
    "SnapMeta",
    "encode_request", "decode_request", "encode_response", "decode_response",
    "encode_notice", "request_head", "STATUS_LIMIT_FIELDS", "encode_events",
    "encode_watch_frame", "decode_watch_frame",
    "encode_command", "command_tuple", "command_for", "decode_command",
    "encode_member_context", "decode_member_context", "encode_member_book",
    "decode_member_book",
    "pack", "new_packer", "unpack", "SnapshotDecoder",
]

#: 2: the coordination commands (leases, revision cas, ticks) and snapshot stream format 2
PROTOCOL_VERSION = 2

P_HELLO = 1
P_WELCOME = 2
P_REFUSE = 3
P_MSG = 4
P_SNAP_CHUNK = 5

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
#: Longest "host:port" accepted in a member change or context.
MAX_ADDRESS = 300
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

_U64 = (1 << 64) - 1
#: wire code -> MsgType (a lookup where ``MsgType(code)`` costs an enum call per message)
_MSG_TYPES = {int(t): t for t in MsgType}
_MAX_VOTERS = 4096

# One packer per process: msgpack's Packer reuses its buffer (autoreset returns bytes).
_packer = msgpack.Packer(use_bin_type=True)
pack = _packer.pack


def new_packer():
    """A private ``pack`` function (for a forked child or another thread: msgpack's Packer
    keeps a buffer and must not be shared across threads or used mid-write after a fork)."""
    return msgpack.Packer(use_bin_type=True).pack


def _unpackb(body, max_bytes: int):
    """Strict msgpack decoding of one value: bin/str kept apart, no maps with non-str keys,
    no ext types, and no container or string longer than the body could honestly hold."""
    try:
        return msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True,
            max_bin_len=max_bytes, max_str_len=max_bytes,
            max_array_len=max_bytes, max_map_len=max_bytes, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise RemoteProtocolError(
            f"undecodable msgpack body ({type(exc).__name__}: {exc})") from None


def unpack(body) -> Any:
    """Decode one msgpack value (strictly; see ``_unpackb``)."""
    return _unpackb(body, max(len(body), 1))


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(what)


def _uint(v, what: str) -> int:
    if type(v) is not int or not 0 <= v <= _U64:
        raise _bad(f"{what}: expected an unsigned integer, got {short_repr(v)}")
    return v


# -- peer frames ----------------------------------------------------------------------------

class SnapMeta(NamedTuple):
    """A SNAP message's snapshot description on the wire: its meta and the data's length."""

    meta: SnapshotMeta
    nbytes: int


# What ``decode_peer`` returns: one NamedTuple per frame kind, each led by its kind code (so
# ``frame.kind`` tells them apart, and they still compare and unpack as the plain tuples
# ``(kind, field, ...)`` they replace).

class Hello(NamedTuple):
    """The dialler's first frame: who it is (``frm``), whom it dialled (``to``)."""

    kind: int               # P_HELLO
    version: int
    cluster: str
    frm: int
    to: int
    addr: str = ""          # the dialler's peer address, "" when not given


class Welcome(NamedTuple):
    """The acceptor's yes to a hello: its protocol version and node id."""

    kind: int               # P_WELCOME
    version: int
    node_id: int


class Refuse(NamedTuple):
    """The acceptor's no to a hello (it closes the connection after it)."""

    kind: int               # P_REFUSE
    reason: str             # at most 500 characters


class PeerMessage(NamedTuple):
    """A validated engine message. ``message.snapshot`` is None; a SNAP message's
    ``snap`` describes the snapshot file sent before it (None for every other type)."""

    kind: int               # P_MSG
    message: Message
    snap: SnapMeta | None

    def with_snapshot(self, data: Any) -> Message:
        """The SNAP message with its received snapshot attached (``data``: the runtime's
        handle on the file, as ``Snapshot.data``)."""
        return self.message._replace(snapshot=Snapshot(self.snap.meta, data))


class SnapshotChunk(NamedTuple):
    """``data``: the bytes at ``offset`` of the file of snapshot ``index``@``term``."""

    kind: int               # P_SNAP_CHUNK
    term: int
    index: int
    offset: int
    data: bytes


PeerFrame = Hello | Welcome | Refuse | PeerMessage | SnapshotChunk

# ``tuple.__new__(PeerMessage, (...))`` builds the NamedTuple without its Python-level
# ``__new__`` (about a third of the time of ``PeerMessage(...)``): the per-message path.
_tuple_new = tuple.__new__


def encode_hello(cluster: str, frm: int, to: int, addr: str = "") -> bytes:
    """The dialler's hello: node ``frm`` of ``cluster`` (reachable for peers at ``addr``,
    "host:port", when given) asks to send to node ``to``."""
    if addr:
        return pack([P_HELLO, PROTOCOL_VERSION, cluster, frm, to, addr])
    return pack([P_HELLO, PROTOCOL_VERSION, cluster, frm, to])


def encode_welcome(node_id: int) -> bytes:
    """The acceptor's welcome (it is node ``node_id``, speaking PROTOCOL_VERSION)."""
    return pack([P_WELCOME, PROTOCOL_VERSION, node_id])


def encode_refuse(reason: str) -> bytes:
    """The acceptor's refusal of a hello, saying why."""
    return pack([P_REFUSE, reason])


def encode_snap_chunk(snap_term: int, snap_index: int, offset: int, data: bytes) -> bytes:
    """The bytes ``data`` at ``offset`` of the file of snapshot ``snap_index``@``snap_term``
    (chunks travel in order, from offset 0, before the SNAP message)."""
    return pack([P_SNAP_CHUNK, snap_term, snap_index, offset, data])


def encode_message(m: Message, nbytes: int = 0) -> bytes:
    """A peer message; for SNAP, ``nbytes`` is the length of the snapshot file sent before."""
    flat = []
    for term, payload in m.entries:
        flat.append(term)
        flat.append(payload)
    snap = None
    if m.snapshot is not None:
        meta = m.snapshot.meta
        snap = [meta.index, meta.term, sorted(meta.voters), sorted(meta.outgoing), nbytes,
                sorted(meta.learners), meta.context]
    return pack([P_MSG, int(m.type), m.to, m.frm, m.term, m.log_term, m.index, flat, m.commit,
                 m.reject, m.hint_index, m.hint_term, m.context, snap, m.transfer])


def _ids(v, what: str) -> frozenset:
    if type(v) is not list or len(v) > _MAX_VOTERS:
        raise _bad(f"{what}: expected a list of node ids")
    out = frozenset(_uint(x, what) for x in v)
    if 0 in out:
        raise _bad(f"{what}: node id 0 is not valid")
    return out


def _snap_meta(snap) -> SnapMeta:
    """A SNAP message's snapshot description (5 fields from before learners, or 7)."""
    if type(snap) is not list or len(snap) not in (5, 7):
        raise _bad("snapshot description must have 7 fields")
    s_index, s_term, voters, outgoing, nbytes = snap[:5]
    learners, context = snap[5:] if len(snap) == 7 else ([], b"")
    _uint(s_index, "snapshot index")
    _uint(s_term, "snapshot term")
    _uint(nbytes, "snapshot size")
    vs = _ids(voters, "snapshot voters")
    if not vs:
        raise _bad("snapshot has no voters")
    out = _ids(outgoing, "outgoing")
    ls = _ids(learners, "learners")
    if ls & (vs | out):
        raise _bad("snapshot learners overlap its voters")
    if type(context) is not bytes:
        raise _bad("snapshot context must be bytes")
    return SnapMeta(SnapshotMeta(s_index, s_term, vs, out, ls, context), nbytes)


def decode_peer(body, max_bytes: int) -> PeerFrame:
    """Decode and validate one peer frame: a Hello, Welcome, Refuse, PeerMessage or
    SnapshotChunk (``.kind`` is its P_ code). A PeerMessage's message has no snapshot
    attached: the runtime attaches the received file (``PeerMessage.with_snapshot``) once
    the SNAP is complete. Raises RemoteProtocolError for anything else."""
    v = _unpackb(body, max_bytes)
    if type(v) is not list or not v or type(v[0]) is not int:
        raise _bad(f"peer frame is not an array with an integer kind: {short_repr(v)}")
    kind = v[0]
    n = len(v)
    if kind == P_MSG:
        if n != 15:
            raise _bad(f"peer message has {n} fields, expected 15")
        (_, mtype, to, frm, term, log_term, index, flat, commit, reject, hint_index,
         hint_term, context, snap, transfer) = v
        if type(mtype) is not int or mtype not in _MSG_TYPES:
            raise _bad(f"unknown message type {short_repr(mtype)}")
        for val, what in ((to, "to"), (frm, "from"), (term, "term"), (log_term, "log_term"),
                          (index, "index"), (commit, "commit"), (hint_index, "hint_index"),
                          (hint_term, "hint_term"), (context, "context")):
            _uint(val, what)
        if type(reject) is not bool or type(transfer) is not bool:
            raise _bad("reject/transfer must be booleans")
        if type(flat) is not list or len(flat) % 2:
            raise _bad("entries must be a flat list of term, payload pairs")
        entries = []
        it = iter(flat)
        prev = 0
        for t, p in zip(it, it):
            if type(t) is not int or not prev <= t <= _U64 or type(p) is not bytes:
                raise _bad("bad entry: terms must be non-decreasing integers, payloads bytes")
            if t > term:
                raise _bad(f"entry term {t} above the message term {term}")
            prev = t
            entries.append((t, p))
        sm = None
        if snap is not None:
            if mtype != MsgType.SNAP:
                raise _bad("only SNAP messages carry a snapshot")
            sm = _snap_meta(snap)
        elif mtype == MsgType.SNAP:
            raise _bad("SNAP message without a snapshot description")
        if entries and mtype != MsgType.APP:
            raise _bad("only APP messages carry entries")
        m = Message(_MSG_TYPES[mtype], to, frm, term, log_term, index, entries, commit, reject,
                    hint_index, hint_term, context, None, transfer)
        return _tuple_new(PeerMessage, (P_MSG, m, sm))
    if kind == P_SNAP_CHUNK:
        if n != 5:
            raise _bad("snapshot chunk must have 5 fields")
        _, st, si, off, data = v
        _uint(st, "snapshot term")
        _uint(si, "snapshot index")
        _uint(off, "chunk offset")
        if type(data) is not bytes:
            raise _bad("chunk data must be bytes")
        return SnapshotChunk(P_SNAP_CHUNK, st, si, off, data)
    if kind == P_HELLO:
        if n not in (5, 6):
            raise _bad("hello must have 5 or 6 fields")
        _, version, cluster, frm, to = v[:5]
        addr = v[5] if n == 6 else ""
        _uint(version, "version")
        if type(cluster) is not str or len(cluster) > 256:
            raise _bad("cluster name must be a string")
        _uint(frm, "from id")
        _uint(to, "to id")
        if type(addr) is not str or len(addr) > MAX_ADDRESS:
            raise _bad("hello's peer address must be a short string")
        return Hello(P_HELLO, version, cluster, frm, to, addr)
    if kind == P_WELCOME:
        if n != 3:
            raise _bad("welcome must have 3 fields")
        _uint(v[1], "version")
        _uint(v[2], "node id")
        return Welcome(P_WELCOME, v[1], v[2])
    if kind == P_REFUSE:
        if n != 2 or type(v[1]) is not str:
            raise _bad("refuse must carry a reason")
        return Refuse(P_REFUSE, v[1][:500])
    raise _bad(f"unknown peer frame kind {kind}")


# -- client requests and responses ----------------------------------------------------------

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
    table above; ``decode_request`` is its strict inverse). Nothing is validated here."""
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
    """The answer to request ``req_id``: a status (ST_*) and its values (module docstring)."""
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
    """The node's notice before it closes a connection (module docstring)."""
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


# -- commands (log entry payloads) ----------------------------------------------------------

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
    """The member book (module docstring): ``addrs`` maps id -> (raft, client)."""
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
    """A log command's payload from its fields (``[CMD_*, ts, ...]``, shapes above); the
    node builds its commands with ``command_for``."""
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


def decode_command(payload: bytes) -> tuple:
    """A committed command as a tuple (shapes in the module docstring). Raises
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


# -- snapshot streams -----------------------------------------------------------------------

class SnapshotDecoder:
    """Decode a stream of msgpack values fed in arbitrary chunks (a state machine snapshot).
    Values are decoded strictly; ``max_bytes`` bounds any single string or container (the
    default holds the largest value a cluster may be configured for, 256 MiB, with room)."""

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self._u = msgpack.Unpacker(
            raw=False, use_list=True, strict_map_key=True, max_buffer_size=max_bytes * 2,
            max_bin_len=max_bytes, max_str_len=max_bytes, max_array_len=max_bytes,
            max_map_len=max_bytes, max_ext_len=0)

    def feed(self, data) -> list:
        """The values completed by ``data`` (bytes-like), in order; a value cut at the end
        waits for the next feed. RemoteProtocolError for a stream that is not valid."""
        try:
            self._u.feed(data)
            return list(self._u)
        except (ValueError, msgpack.FormatError, msgpack.StackError, TypeError,
                UnicodeDecodeError, msgpack.BufferFull, OverflowError) as exc:
            raise RemoteProtocolError(f"undecodable snapshot stream: {exc}") from None
