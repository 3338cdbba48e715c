"""The peer protocol: the frames nodes exchange (hello, welcome, refuse, engine messages,
snapshot chunks), encoded and strictly validated.

Place in the architecture: part of ``fastraft.codec``, below the runtime's peer transport
(``fastraft/server/peers.py``), beside the engine whose ``Message`` it carries. The formats are
described in the package docstring (``fastraft/codec/__init__.py``, "Peer connections"). It
uses msgpack only through ``._msgpack``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import short_repr
from ..raft.messages import Message, MsgType, Snapshot, SnapshotMeta
from ._msgpack import MAX_ADDRESS, _bad, _ids, _uint, _unpackb, pack

#: 2: the coordination commands (leases, revision cas, ticks) and snapshot stream format 2
PROTOCOL_VERSION = 2

P_HELLO = 1
P_WELCOME = 2
P_REFUSE = 3
P_MSG = 4
P_SNAP_CHUNK = 5

#: wire code -> MsgType (a lookup where ``MsgType(code)`` costs an enum call per message)
_MSG_TYPES = {int(t): t for t in MsgType}


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


def _snap_meta(snap) -> SnapMeta:
    """A SNAP message's snapshot description (5 fields from before learners, or 7)."""
    if type(snap) is not list or len(snap) not in (5, 7):
        raise _bad("snapshot description must have 7 fields")
    s_index, s_term, voters, outgoing, nbytes = snap[:5]
    learners, context = snap[5:] if len(snap) == 7 else ([], b"")
    _log_uint(s_index, "snapshot index")
    _log_uint(s_term, "snapshot term")
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


#: The largest term or log index a peer may send: the WAL stores them in 63 bits, and a node
#: must still be able to count up from there (a vote, a term of its own) without
#: overflowing; anything above is a malformed message, not a state to persist.
MAX_LOG_NUMBER = 1 << 62


def _log_uint(v, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_LOG_NUMBER:
        raise _bad(f"{what}: expected an integer 0..2**62, got {short_repr(v)}")
    return v


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
        for val, what in ((to, "to"), (frm, "from"), (context, "context")):
            _uint(val, what)
        for val, what in ((term, "term"), (log_term, "log_term"), (index, "index"),
                          (commit, "commit"), (hint_index, "hint_index"),
                          (hint_term, "hint_term")):
            _log_uint(val, what)
        if type(reject) is not bool or type(transfer) is not bool:
            raise _bad("reject/transfer must be booleans")
        if type(flat) is not list or len(flat) % 2:
            raise _bad("entries must be a flat list of term, payload pairs")
        entries = []
        it = iter(flat)
        prev = 0
        for t, p in zip(it, it):
            if type(t) is not int or not prev <= t <= MAX_LOG_NUMBER or type(p) is not bytes:
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
        _log_uint(st, "snapshot term")
        _log_uint(si, "snapshot index")
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
