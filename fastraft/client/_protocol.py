"""The client's side of the wire protocol: arguments to bytes, answers to values or errors.

Place in the architecture: shared by ``aio`` (the asyncio client; ``sync`` through it),
``_connection`` and ``_attempts``. It builds request frames with ``fastraft.codec`` (the one
package that speaks msgpack) and the core's frame codec, and it states what each answer status
means for the caller. It does no IO and imports no event loop.

The status split (docs/architecture.md, "The client's error split") is stated here, and
applied in one place, ``_attempts.Attempts.judge``:

    ST_OK               the value
    ST_NOT_LEADER       not applied; retry on the hinted leader (NotLeader once retries end)
    ST_BUSY             not applied; retry after a backoff (Busy once retries end)
    ST_INVALID          not applied; never retried (InvalidRequest)
    ST_SESSION_EXPIRED  not applied; the write moves to a new session, unless an earlier
                        attempt of it may have been applied (then: Timeout, outcome unknown)
    ST_UNKNOWN          may have been applied; retried with the same session and seq
    ST_ERROR            the server failed internally: OutcomeUnknown, not retried

Pseudo-statuses stand for what the connection saw instead of an answer: ``LOST`` (the
connection broke after the request was written) and ``TIMED_OUT`` (no answer within the
per-request timeout) leave the outcome unknown; ``TOO_LARGE`` (the answer is over the
client's frame limit: skipped, the connection kept) is InvalidRequest for a read;
``TLS_REFUSED`` (the node refused this client's certificate: its handshake never completed,
so it read no request) is TLSError, not applied; ``SILENT`` (the node answered nothing for
``hedge_after`` seconds while another node says it leads: the client gave up on it, values
``[why, new leader's address]``) leaves the outcome unknown, as a timeout does. A notice
(request id 0, fastraft.codec) resolves the requests the node did not read with its status
(ST_BUSY or ST_NOT_LEADER: not applied) and the others with LOST.

The client refuses locally (InvalidRequest, nothing sent) a request over the limits it learned
from a status answer (``check_limits``).
"""

from __future__ import annotations

from .. import codec
from ..config import parse_address
from ..core import encode_frame
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "LOST", "TIMED_OUT", "TOO_LARGE", "TLS_REFUSED", "SILENT", "to_bytes", "to_opt_bytes",
    "frame", "split_address",
    "status_dict", "STATUS_FIELDS", "LIMIT_FIELDS", "check_get", "check_scan", "check_bool",
    "payload_size", "check_limits", "notice",
]

#: Pseudo-statuses set by the connection (never sent by a node).
LOST = -1
TIMED_OUT = -2
TOO_LARGE = -3
TLS_REFUSED = -4
SILENT = -5

_pack = codec.pack


def to_bytes(v, what: str = "key") -> bytes:
    """``bytes`` as is; ``str`` encoded as UTF-8; bytearray/memoryview copied."""
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode("utf-8")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes or str, not {t.__name__}")


def to_opt_bytes(v, what: str) -> bytes | None:
    return None if v is None else to_bytes(v, what)


def frame(body: list) -> bytes:
    """One request frame: u32-LE length prefix, then the msgpack array ``body``."""
    return encode_frame(_pack(body))


def split_address(text: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; LocalProtocolError for a malformed endpoint."""
    try:
        return parse_address(text)
    except ValueError as exc:           # ConfigError is a ValueError
        raise LocalProtocolError(f"bad endpoint {text!r}: {exc}") from None


#: The fields of an OP_STATUS answer, in wire order.
STATUS_FIELDS = ("id", "role", "term", "leader", "last_index", "commit", "applied", "core",
                 "loop", "version")
#: The fields that follow them when the request asks ``with_limits`` (fastraft.codec).
LIMIT_FIELDS = codec.STATUS_LIMIT_FIELDS


def status_dict(values: list) -> dict:
    """An OP_STATUS answer's values as a dict keyed by STATUS_FIELDS, then LIMIT_FIELDS when
    the node sent them (positive integers); fields past those are ignored (a newer node)."""
    n = len(STATUS_FIELDS)
    if len(values) != 1 or type(values[0]) is not list or len(values[0]) < n:
        raise RemoteProtocolError(f"malformed status answer: {values!r:.100}")
    fields = values[0]
    out = dict(zip(STATUS_FIELDS, fields))
    if len(fields) >= n + len(LIMIT_FIELDS):
        lim = fields[n:n + len(LIMIT_FIELDS)]
        if any(type(v) is not int or v < 0 for v in lim):
            raise RemoteProtocolError(f"malformed limits in a status answer: {lim!r:.100}")
        out.update(zip(LIMIT_FIELDS, lim))
    return out


def payload_size(args) -> int:
    """Bytes of the keys and values among a request's arguments (its frame is at most a few
    dozen bytes longer)."""
    n = 0
    for a in args:
        if type(a) is bytes:
            n += len(a)
    return n


#: Frame bytes of a request beyond its keys and values, at most: the array, a request id,
#: op, session, seq and first_unacked (9 bytes each), three bin headers, a bool.
FRAME_OVERHEAD = 64


def check_limits(op: int, args, limits: dict) -> str | None:
    """Why a request is over the cluster's ``limits`` (a status dict with LIMIT_FIELDS), or
    None. ``args`` are the operation's own arguments (without session fields). The frame
    check here refuses only what is over even without its framing; the connection checks the
    exact frame (``NodeConnection.request``)."""
    if op in (codec.OP_GET, codec.OP_DELETE, codec.OP_PUT, codec.OP_CAS, codec.OP_SCAN,
              codec.OP_CAS_REV):
        what = "prefix" if op == codec.OP_SCAN else "key"
        k = args[0]
        if len(k) > limits["max_key_bytes"]:
            return (f"{what} of {len(k)} bytes is over the cluster's limit of "
                    f"{limits['max_key_bytes']} bytes (max_key_bytes)")
        values = ()
        if op == codec.OP_PUT:
            values = (("value", args[1]),)
        elif op == codec.OP_CAS:
            values = (("expected", args[1]), ("new", args[2]))
        elif op == codec.OP_CAS_REV:
            values = (("new", args[2]),)
        for name, v in values:
            if v is not None and len(v) > limits["max_value_bytes"]:
                return (f"{name} of {len(v)} bytes is over the cluster's limit of "
                        f"{limits['max_value_bytes']} bytes (max_value_bytes)")
    size = payload_size(args)
    if size > limits["max_frame_bytes"]:
        return (f"{codec.OP_NAMES.get(op, 'request')} of more than {size} bytes is over the "
                f"cluster's frame limit of {limits['max_frame_bytes']} bytes (max_frame_bytes)")
    return None


def notice(values: list) -> tuple[str, int | None]:
    """``(message, last_req_id)`` of a notice's values (last_req_id None when missing)."""
    msg = values[0] if values and type(values[0]) is str else "the node closed the connection"
    last = values[1] if len(values) > 1 and type(values[1]) is int else None
    return msg[:300], last


def check_get(values: list):
    if len(values) != 1 or (values[0] is not None and type(values[0]) is not bytes):
        raise RemoteProtocolError(f"malformed get answer: {values!r:.100}")
    return values[0]


def check_bool(values: list) -> bool:
    if len(values) != 1 or type(values[0]) is not bool:
        raise RemoteProtocolError(f"malformed answer (expected a boolean): {values!r:.100}")
    return values[0]


def check_scan(values: list) -> list:
    if len(values) != 1 or type(values[0]) is not list:
        raise RemoteProtocolError(f"malformed scan answer: {values!r:.100}")
    out = []
    for kv in values[0]:
        if type(kv) is not list or len(kv) != 2 or type(kv[0]) is not bytes \
                or type(kv[1]) is not bytes:
            raise RemoteProtocolError(f"malformed scan pair: {kv!r:.100}")
        out.append((kv[0], kv[1]))
    return out


def message(values: list) -> str:
    """The message of an error answer (a str), whatever the node sent."""
    if values and type(values[0]) is str:
        return values[0]
    return repr(values)[:200]
