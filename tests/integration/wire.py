"""A minimal blocking client of the client protocol, for tests only.

Place in the architecture: test infrastructure (tests/integration). It speaks the client
protocol exactly as ``fastraft.codec``'s docstring describes it — frames from the core's
frame codec (``fastraft.core.encode_frame`` / ``FrameDecoder``), bodies from
``fastraft.codec.encode_request`` / ``decode_response`` — and nothing more: no leader
discovery, no retries, no session bookkeeping. Tests use it to drive real nodes one request at
a time and to send hostile bytes (``send_raw``). The real client library is
``fastraft.client``; this module must not import it, so a bug there cannot hide one here.

Every call returns a ``Reply(status, values)`` (a named tuple, so ``status, values =
c.get(b"k")`` works); the status codes are ``fastraft.codec.ST_*``. A closed connection raises
ConnectionError, a missing answer TimeoutError.
"""

from __future__ import annotations

import socket
import time
from typing import NamedTuple

from fastraft import codec
from fastraft.config import parse_address
from fastraft.core import FrameDecoder, encode_frame

__all__ = ["Reply", "WireClient", "STATUS_FIELDS", "STATUS_NAMES", "parse_status"]

#: The positional fields of an OP_STATUS answer (fastraft.codec's docstring).
STATUS_FIELDS = ("id", "role", "term", "leader", "last_index", "commit", "applied", "core",
                 "loop", "version")

STATUS_NAMES = {codec.ST_OK: "OK", codec.ST_NOT_LEADER: "NOT_LEADER", codec.ST_BUSY: "BUSY",
                codec.ST_INVALID: "INVALID", codec.ST_SESSION_EXPIRED: "SESSION_EXPIRED",
                codec.ST_UNKNOWN: "UNKNOWN", codec.ST_ERROR: "ERROR"}


class Reply(NamedTuple):
    status: int
    values: list

    @property
    def ok(self) -> bool:
        return self.status == codec.ST_OK

    @property
    def value(self):
        """The first value (the answer of most operations), or None."""
        return self.values[0] if self.values else None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, str(self.status))

    def expect_ok(self):
        """The first value; AssertionError naming the status otherwise."""
        assert self.ok, f"expected OK, got {self.status_name} {self.values!r}"
        return self.value


def parse_status(values: list) -> dict:
    """An OP_STATUS answer's values (one value: the array of STATUS_FIELDS) as a dict."""
    if len(values) != 1 or type(values[0]) is not list or len(values[0]) != len(
            STATUS_FIELDS):
        raise ValueError(f"a status answer is one array of {len(STATUS_FIELDS)} fields "
                         f"{STATUS_FIELDS}, got {values!r}")
    return dict(zip(STATUS_FIELDS, values[0]))


def _b(v) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else v


class WireClient:
    """One blocking TCP connection to a node's client port.

    ``addr`` is ``"host:port"`` or ``(host, port)``; ``timeout`` bounds the connect and
    every answer."""

    def __init__(self, addr, timeout: float = 5.0, max_frame: int = 64 << 20,
                 tls=None) -> None:
        self.addr = parse_address(addr) if isinstance(addr, str) else tuple(addr)
        self.timeout = timeout
        self.sock = socket.create_connection(self.addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:             # an ssl.SSLContext: the node's client port is TLS
            self.sock = tls.wrap_socket(self.sock, server_hostname=self.addr[0])
        self.decoder = FrameDecoder(max_frame)
        self._frames: list[bytes] = []
        self._next_id = 1
        #: Answers that arrived for other request ids, by id.
        self.stray: dict[int, Reply] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (hostile-input tests)."""
        self.sock.sendall(data)

    def send_request(self, req_id: int, op: int, *args) -> None:
        self.sock.sendall(encode_frame(codec.encode_request(req_id, op, *args)))

    def recv_frame(self, timeout: float | None = None) -> bytes:
        """The next complete frame body; ConnectionError on EOF, TimeoutError on silence."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from {self.addr[0]}:{self.addr[1]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no answer from {self.addr[0]}:{self.addr[1]}") from None
            if not data:
                raise ConnectionError(
                    f"{self.addr[0]}:{self.addr[1]} closed the connection")
            self._frames.extend(self.decoder.feed(data))
        return self._frames.pop(0)

    def recv_reply(self, timeout: float | None = None) -> tuple[int, Reply]:
        """``(req_id, reply)`` of the next answer."""
        body = self.recv_frame(timeout)
        req_id, status, values = codec.decode_response(body, max(len(body), 1))
        return req_id, Reply(status, values)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """True when the node closes the connection within ``timeout`` (frames that arrive
        first are ignored); False when it stays open."""
        try:
            while True:
                self.recv_frame(timeout)
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def call(self, op: int, *args, timeout: float | None = None) -> Reply:
        """Send one request and wait for its answer (answers to other ids are kept in
        ``stray``)."""
        rid = self.next_id()
        self.send_request(rid, op, *args)
        if rid in self.stray:  # pragma: no cover - ids are never reused
            return self.stray.pop(rid)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            got, reply = self.recv_reply(max(0.0, deadline - time.monotonic()))
            if got == rid:
                return reply
            self.stray[got] = reply

    # -- operations -------------------------------------------------------------------------

    def register(self) -> Reply:
        """OK value: the new session id."""
        return self.call(codec.OP_REGISTER)

    def put(self, session: int, seq: int, key, value, first_unacked: int | None = None
            ) -> Reply:
        return self.call(codec.OP_PUT, session, seq,
                         seq if first_unacked is None else first_unacked, _b(key), _b(value))

    def get(self, key, stale: bool = False) -> Reply:
        """OK value: the value, or None when absent."""
        return self.call(codec.OP_GET, _b(key), stale)

    def delete(self, session: int, seq: int, key, first_unacked: int | None = None) -> Reply:
        """OK value: True when the key existed."""
        return self.call(codec.OP_DELETE, session, seq,
                         seq if first_unacked is None else first_unacked, _b(key))

    def cas(self, session: int, seq: int, key, expected, new,
            first_unacked: int | None = None) -> Reply:
        """OK value: True when swapped; ``expected=None`` means "absent"."""
        return self.call(codec.OP_CAS, session, seq,
                         seq if first_unacked is None else first_unacked, _b(key),
                         None if expected is None else _b(expected), _b(new))

    def scan(self, prefix=b"", limit: int = 100, stale: bool = False) -> Reply:
        """OK value: ``[[key, value], ...]`` in key order."""
        return self.call(codec.OP_SCAN, _b(prefix), limit, stale)

    def keepalive(self, session: int, first_unacked: int) -> Reply:
        return self.call(codec.OP_KEEPALIVE, session, first_unacked)

    def status(self) -> Reply:
        """OK value: the array of STATUS_FIELDS (see ``parse_status``)."""
        return self.call(codec.OP_STATUS)

    def status_dict(self) -> dict:
        return parse_status(self.status().values)
