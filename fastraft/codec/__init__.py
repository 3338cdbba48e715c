"""The wire and command formats: the one package of fastraft that uses msgpack.

Place in the architecture: below the server, the client and the state machine, beside the core
(whose frame codec carries these bodies: a u32-LE length prefix, then one msgpack value).
This docstring is the reference for every format; the code lives in submodules by concern,
and every name is offered here (``fastraft.codec.X``), as when this package was one module:

- ``_msgpack``: the one module of fastraft that imports msgpack (``pack``, ``new_packer``,
  strict ``unpack``, ``SnapshotDecoder``, the shared validation helpers);
- ``peer``: the peer protocol (P_* frames, ``decode_peer``, ``PROTOCOL_VERSION``);
- ``client``: the client protocol (OP_*, ST_*, ``Limits``, ``Request``, ``decode_request``,
  responses, notices, ``request_head``, watch frames);
- ``commands``: the log commands (CMD_*, ``command_for``, ``decode_command``) and the
  member context and book.

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
history from the start revision, possibly empty), then one per applied batch with matching
events and one every second with none (progress only). The stream ends with one non-OK frame:
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

# Besides __all__, the names this module offered before it became a package stay offered
# (the errors and engine types it used, MAX_ADDRESS).
from ..errors import (InvalidRequest, LocalProtocolError,  # noqa: F401
                      RemoteProtocolError, short_repr)
from ..raft.messages import Message, MsgType, Snapshot, SnapshotMeta  # noqa: F401
from ._msgpack import MAX_ADDRESS, SnapshotDecoder, new_packer, pack, unpack  # noqa: F401
from .client import (
    BACKUP_READ_MAX, MAX_LEASE_TTL_MS, MEMBER_ADD_LEARNER, MEMBER_KIND_NAMES, MEMBER_PROMOTE,
    MEMBER_REMOVE, MIN_LEASE_TTL_MS, OP_BACKUP, OP_BACKUP_END, OP_BACKUP_READ, OP_CAS,
    OP_CAS_REV, OP_DELETE, OP_GET, OP_KEEPALIVE, OP_LEASE_GRANT, OP_LEASE_KEEPALIVE,
    OP_LEASE_REVOKE, OP_MEMBER, OP_MEMBERS, OP_NAMES, OP_PUT, OP_REGISTER, OP_REVISION,
    OP_SCAN, OP_STATUS, OP_WATCH, OP_WATCH_CANCEL, ST_BUSY, ST_COMPACTED, ST_ERROR,
    ST_INVALID, ST_NO_LEASE, ST_NOT_LEADER, ST_OK, ST_SESSION_EXPIRED, ST_UNKNOWN,
    STATUS_LIMIT_FIELDS, WRITE_OPS, Limits, Request, decode_request, decode_response,
    decode_watch_frame, encode_events, encode_notice, encode_request, encode_response,
    encode_watch_frame, request_head)
from .commands import (
    CMD_CAS, CMD_CAS_REV, CMD_DELETE, CMD_KEEPALIVE, CMD_LEASE_GRANT, CMD_LEASE_KEEPALIVE,
    CMD_LEASE_REVOKE, CMD_PUT, CMD_REGISTER, CMD_TICK, command_for, command_tuple,
    decode_command, decode_member_book, decode_member_context, encode_command,
    encode_member_book, encode_member_context)
from .peer import (
    P_HELLO, P_MSG, P_REFUSE, P_SNAP_CHUNK, P_WELCOME, PROTOCOL_VERSION, Hello, PeerFrame,
    PeerMessage, Refuse, SnapMeta, SnapshotChunk, Welcome, decode_peer, encode_hello,
    encode_message, encode_refuse, encode_snap_chunk, encode_welcome)

# Private names the tests use (the general decoding paths, compared with the fast paths, and
# strict unpacking): kept here as when this package was one module.
from ._msgpack import _unpackb  # noqa: F401,E402
from .client import _decode_request  # noqa: F401,E402
from .commands import _decode_command  # noqa: F401,E402

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

