"""The client's side of the wire protocol: arguments to bytes, answers to values or errors.

Place in the architecture: shared by ``aio`` (the asyncio client) and, through it, ``sync``.
It builds request frames with ``fastraft.codec`` (the one module that speaks msgpack) and the
core's frame codec, and it decides what each answer status means for the caller. It does no IO
and imports no event loop.

The status split (DESIGN.md, "Public contract") is decided here and nowhere else:

    ST_OK               the value
    ST_NOT_LEADER       not applied; retry on the hinted leader (NotLeader once retries end)
    ST_BUSY             not applied; retry after a backoff (Busy once retries end)
    ST_INVALID          not applied; never retried (InvalidRequest)
    ST_SESSION_EXPIRED  not applied; the write moves to a new session, unless an earlier
                        attempt of it may have been applied (then: Timeout, outcome unknown)
    ST_UNKNOWN          may have been applied; retried with the same session and seq
    ST_ERROR            the server failed internally: OutcomeUnknown, not retried

Two pseudo-statuses stand for what the connection saw instead of an answer: ``LOST`` (the
connection broke after the request was written) and ``TIMED_OUT`` (no answer within the
per-request timeout). Both leave the outcome unknown.
"""

from __future__ import annotations

from .. import codec
from ..config import parse_address
from ..core import encode_frame
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "LOST", "TIMED_OUT", "to_bytes", "to_opt_bytes", "frame", "split_address",
    "status_dict", "STATUS_FIELDS", "check_get", "check_scan", "check_bool",
]

#: Pseudo-statuses set by the connection (never sent by a node).
LOST = -1
TIMED_OUT = -2

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


def status_dict(values: list) -> dict:
    """An OP_STATUS answer's values as a dict keyed by STATUS_FIELDS."""
    if len(values) != 1 or type(values[0]) is not list or len(values[0]) != len(STATUS_FIELDS):
        raise RemoteProtocolError(f"malformed status answer: {values!r:.100}")
    return dict(zip(STATUS_FIELDS, values[0]))


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
