"""``AsyncClient``: the asyncio client of fastraft (``Client`` in ``sync`` wraps it).

Place in the architecture: the client layer (pure Python: it needs no compiled extension;
``fastraft.core`` falls back on its twin for the frame codec). It talks to nodes over their
client port with ``_protocol`` (requests, answers, the status split), keeps its session with
``_session`` and paces retries with ``retry``. It never imports the server.

Connections: one per node, opened on first use and reopened after a loss. Many calls share a
connection (pipelining): each request carries an id, the answer is paired with its future by
ONE dict lookup, and the requests issued during one event-loop turn leave in ONE write. No task
is created per request; per-request timeouts are enforced by one sweeper timer per connection
(``_Conn._sweep``), which resolves overdue futures with the TIMED_OUT pseudo-status.

A call (``_call``) is a loop of attempts, bounded by the retry policy (attempt count) and the
call's deadline (time)::

    pick a node: the believed leader; else the next endpoint in turn (skipping nodes that
        refused a connection recently); any node for a stale read
    send; wait for the answer or the per-request timeout
    OK                -> done
    NOT_LEADER + hint -> follow the hint at once (no backoff)
    NOT_LEADER, BUSY  -> back off, try again (the next node when there is no leader hint)
    UNKNOWN, timeout, lost connection -> the write MAY have been applied: try again with the
                         same session and seq (the node answers a duplicate from its cache)
    SESSION_EXPIRED   -> never sent before with a chance of applying: move the write to a new
                         session (new seq) and try again; otherwise: Timeout (unknown)
    INVALID           -> InvalidRequest (or Timeout if an earlier attempt may have applied)

When the attempts or the time run out, a write that any attempt may have applied raises the
``OutcomeUnknown`` kind of that attempt (Timeout, ConnectionLost or LeadershipLost), never a
``NotApplied`` one: a later NotLeader or Busy answer does not undo an earlier ambiguous attempt
(its entry may still be in the log and commit). Only writes no attempt could have applied raise
``NotLeader`` / ``Busy`` / ``InvalidRequest``.

A call that ends without a leader raises one NotLeader that says what each node's last attempt
saw (``_no_leader``): the nodes that answered and what they said, the ones that could not be
reached and why (``answered`` / ``unreachable``); "no node reachable at ..." when none
answered. A call gives up early when every endpoint refused the connection for REFUSED_ROUNDS
full rounds spanning REFUSED_FOR seconds (nothing listens there; a starting cluster listens
before it has elected).

Limits: the client learns the cluster's request limits from any status answer (``limits``) and
then refuses, with InvalidRequest and without sending anything, a request over them. A request
whose keys and values may not fit the smallest frame limit a node can have (1 MiB) while the
limits are unknown first asks one node for its status (once; the answer is kept). A node
refuses an oversized frame with ST_INVALID too, and a connection it closes with a notice
(request id 0: too many connections, shutting down) fails the requests it did not read as
Busy / NotLeader (not applied); the others as ConnectionLost.

The session is registered on the first write and kept alive by a background task that sends
OP_KEEPALIVE when no write of the session has been sent for ``keepalive_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re

from .. import codec
from ..core import FrameDecoder
from ..errors import (
    Busy,
    ConnectionLost,
    FastraftError,
    InvalidRequest,
    LeadershipLost,
    LocalProtocolError,
    NotLeader,
    OutcomeUnknown,
    RemoteProtocolError,
    SessionExpired,
    Timeout,
)
from . import _protocol as P
from ._session import Session
from .retry import RetryPolicy

__all__ = ["AsyncClient", "DEFAULT_TIMEOUT", "DEFAULT_KEEPALIVE_INTERVAL"]

log = logging.getLogger("fastraft.client")

DEFAULT_TIMEOUT = 5.0
DEFAULT_KEEPALIVE_INTERVAL = 10.0
#: How long a node that refused a connection is skipped when choosing where to send.
DOWN_FOR = 1.0
DEFAULT_MAX_FRAME = 256 << 20
#: A call gives up when every endpoint refused the connection on this many consecutive full
#: rounds of attempts spanning at least REFUSED_FOR seconds (the deadline still bounds it).
REFUSED_ROUNDS = 3
REFUSED_FOR = 2.0
#: The smallest frame limit a node can have (config.Tuning.max_frame_bytes): a request that
#: fits under it needs no knowledge of the cluster's limits.
MIN_NODE_FRAME = 1 << 20
_NO_LIMIT = 0xFFFFFFFF

ST_OK = codec.ST_OK
ST_NOT_LEADER = codec.ST_NOT_LEADER
ST_BUSY = codec.ST_BUSY
ST_INVALID = codec.ST_INVALID
ST_SESSION_EXPIRED = codec.ST_SESSION_EXPIRED
ST_UNKNOWN = codec.ST_UNKNOWN
ST_ERROR = codec.ST_ERROR
LOST = P.LOST
TIMED_OUT = P.TIMED_OUT
TOO_LARGE = P.TOO_LARGE
OP_GET = codec.OP_GET
OP_PUT = codec.OP_PUT
OP_DELETE = codec.OP_DELETE
OP_CAS = codec.OP_CAS
OP_SCAN = codec.OP_SCAN
OP_REGISTER = codec.OP_REGISTER
OP_KEEPALIVE = codec.OP_KEEPALIVE
OP_STATUS = codec.OP_STATUS

# Kinds of call (how the attempts are sent and what a failure means).
_READ = 0        # linearizable read: on the leader, idempotent
_STALE = 1       # stale read: any node, idempotent
_WRITE = 2       # session write: (session, seq, first_unacked) prepended to the arguments
_PLAIN = 3       # a write without a seq (register, keepalive): args sent as they are

_decode_response = codec.decode_response
_pack = codec.pack
#: Operations whose keys and values count against the limits.
_SIZED = frozenset({OP_GET, OP_PUT, OP_DELETE, OP_CAS, OP_SCAN})
_REFUSED_TEXT = re.compile(r"\[Errno (\d+)\]")


def _connect_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short reason for a failed connection attempt, and whether it was refused (nothing
    listens there: every address tried answered ECONNREFUSED)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no connection within {timeout:g} s", False
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    # Several addresses (localhost: ::1 and 127.0.0.1) fail as one OSError listing them all.
    codes = {int(c) for c in _REFUSED_TEXT.findall(str(exc))}
    if codes == {errno.ECONNREFUSED}:
        return "connection refused", True
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:200], False


class _Conn(asyncio.Protocol):
    """One TCP connection to one node, shared by every call that goes there.

    ``pending`` maps req_id -> (future, deadline); the future's result is ``(status,
    values)``, where status may be the pseudo-status LOST or TIMED_OUT. Invariant: a future in
    ``pending`` is not done; whoever pops it resolves it."""

    __slots__ = ("addr", "loop", "transport", "pending", "ready", "closed", "error", "waiter",
                 "why", "refused", "notice", "max_body",
                 "_decoder", "_max", "_out", "_flush", "_sweeper", "_sweep_every", "_rid")

    def __init__(self, addr: str, loop, max_frame: int, sweep_every: float) -> None:
        self.addr = addr
        self.loop = loop
        self.transport = None
        self.pending: dict[int, tuple] = {}
        self.ready = False          # connected and usable
        self.closed = False         # lost or closed for good (a new _Conn replaces it)
        self.error: str | None = None
        self.why: str | None = None         # short reason of a failure ("connection refused")
        self.refused = False                # the connection attempt was refused
        self.notice: tuple | None = None    # (status, values) for what the node did not read
        self.max_body = _NO_LIMIT           # the cluster's frame limit, once learned
        self.waiter: asyncio.Future | None = None
        self._decoder = FrameDecoder(max_frame, skip_oversized=True)
        self._max = max_frame
        self._out: list[bytes] = []
        self._flush = None
        self._sweeper = None
        self._sweep_every = sweep_every
        self._rid = 0

    async def open(self, timeout: float) -> None:
        host, port = P.split_address(self.addr)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self, host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.closed = True
            self.why, self.refused = _connect_failure(exc, timeout)
            self.error = f"cannot connect to {self.addr}: {self.why}"

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:             # closed while connecting
            transport.abort()
            return
        self.ready = True

    def connection_lost(self, exc) -> None:
        self._fail(f"connection to {self.addr} lost" + (f": {exc}" if exc else ""))

    def data_received(self, data) -> None:
        frames = self._decoder.feed(data)       # skip mode: an oversized answer is skipped
        pending = self.pending
        for body in frames:
            if type(body) is not bytes:
                if not self._too_large(body.size, body.head):
                    return
                continue
            try:
                rid, status, values = _decode_response(body, self._max)
            except RemoteProtocolError as exc:
                self.abort(f"bad answer from {self.addr}: {exc}")
                return
            if rid == 0:
                self._notice(status, values)
                return
            ent = pending.pop(rid, None)
            if ent is not None:
                ent[0].set_result((status, values))

    def _too_large(self, size: int, head: bytes) -> bool:
        """An answer over ``max_frame``: its request gets TOO_LARGE, the connection stays.
        False (and the connection is aborted) when its head is not an answer."""
        got = codec.request_head(head)          # [req_id, status, ...] starts like a request
        if type(got) is not tuple:
            self.abort(f"bad answer from {self.addr}: a frame of {size} bytes, over the "
                       f"limit of {self._max}, that is not an answer")
            return False
        ent = self.pending.pop(got[0], None)
        if ent is not None:
            ent[0].set_result((TOO_LARGE, [
                f"the answer of {size} bytes from {self.addr} is over this client's frame "
                f"limit of {self._max} bytes (max_frame)"]))
        return True

    def _notice(self, status: int, values: list) -> None:
        """The node closes the connection and read no request after the one it names: those
        after it get the notice's status (not applied), the others LOST when it closes."""
        msg, last = P.notice(values)
        if last is not None and status in (ST_BUSY, ST_NOT_LEADER):
            ans = (ST_BUSY, [msg]) if status == ST_BUSY else (ST_NOT_LEADER, [0, None, msg])
            self.notice = ans
            pending = self.pending
            for rid in [r for r in pending if r > last]:
                fut = pending.pop(rid)[0]
                if not fut.done():
                    fut.set_result(ans)
        reason = f"{self.addr} closed the connection: {msg}"
        log.debug("%s", reason)
        self.why = msg
        self.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._fail(reason)

    # -- requests -----------------------------------------------------------------------------

    def request(self, op: int, args, timeout: float) -> asyncio.Future:
        """Queue ``[req_id, op, *args]``; the future resolves to ``(status, values)``."""
        rid = self._rid = self._rid + 1
        loop = self.loop
        fut = loop.create_future()
        frame = P.frame([rid, op, *args])
        if len(frame) - 4 > self.max_body:      # the node would refuse it: do not send it
            fut.set_result((ST_INVALID, [
                f"{codec.OP_NAMES.get(op, 'request')} of {len(frame) - 4} bytes is over the "
                f"cluster's frame limit of {self.max_body} bytes (max_frame_bytes); refused "
                f"by the client, nothing sent"]))
            return fut
        self.pending[rid] = (fut, loop.time() + timeout)
        self._out.append(frame)
        if self._flush is None:
            self._flush = loop.call_soon(self._write)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return fut

    def _write(self) -> None:
        self._flush = None
        out = self._out
        self._out = []
        if self.ready and out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _sweep(self) -> None:
        self._sweeper = None
        pending = self.pending
        if not pending:
            return
        now = self.loop.time()
        late = [rid for rid, ent in pending.items() if ent[1] <= now]
        for rid in late:
            fut = pending.pop(rid)[0]
            if not fut.done():
                fut.set_result((TIMED_OUT, [f"no answer from {self.addr} in time"]))
        if pending:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _fail(self, reason: str) -> None:
        self.ready = False
        self.closed = True
        if self.error is None:
            self.error = reason
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pending = self.pending
        self.pending = {}
        for fut, _dl in pending.values():
            if not fut.done():
                fut.set_result((LOST, [reason]))

    def abort(self, reason: str) -> None:
        log.warning("closing the connection to %s: %s", self.addr, reason)
        self.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._fail(reason)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._fail(f"connection to {self.addr} closed by the client")


class _Attempts:
    """What the failed attempts of one call left behind (made at the first failure, so a
    call that succeeds at once allocates nothing):

    ``last``     the error of the last attempt (the call raises it, or a summary of it)
    ``unknown``  the OutcomeUnknown class of the last attempt that may have applied a write
    ``said``     address -> what its last attempt saw (``_what_it_said``), for _no_leader
    ``hops``     leader hints followed since the last backoff
    refusals     a streak of consecutive refused connections (any other outcome ends it): the
                 call is hopeless once every endpoint refused for REFUSED_ROUNDS full rounds
                 spanning REFUSED_FOR seconds
    """

    __slots__ = ("last", "unknown", "said", "hops", "_start", "_count", "_addrs")

    def __init__(self) -> None:
        self.last: FastraftError | None = None
        self.unknown = None
        self.said: dict[str, tuple] = {}
        self.hops = 0
        self.answered()

    def refused(self, addr: str, now: float) -> None:
        if self._start is None:
            self._start = now
        self._count += 1
        self._addrs.add(addr)

    def answered(self) -> None:
        """An attempt that was not a refused connection: the streak ends."""
        self._start = None
        self._count = 0
        self._addrs: set[str] = set()

    def hopeless(self, endpoints: list[str], now: float) -> bool:
        return (self._start is not None and self._count >= REFUSED_ROUNDS * len(endpoints)
                and now - self._start >= REFUSED_FOR and self._addrs.issuperset(endpoints))


def _what_it_said(status: int, values: list) -> tuple[bool, str, str | None]:
    """``(answered?, a short account, the leader address it named)`` of one attempt's
    outcome, for _no_leader."""
    if status == ST_NOT_LEADER:
        if len(values) > 2 and type(values[2]) is str:         # a notice: shutting down
            return True, values[2], None
        lid = values[0] if values and type(values[0]) is int else 0
        addr = values[1] if len(values) > 1 and type(values[1]) is str else None
        if addr:
            return True, f"not the leader, points to node {lid} at {addr}", addr
        if lid:
            return True, f"not the leader, points to node {lid}", None
        return True, "not the leader, no leader known", None
    if status == TIMED_OUT:
        return False, "no answer in time", None
    if status == LOST:
        return False, "connection lost", None
    if status == ST_BUSY:
        return True, f"busy ({P.message(values)})", None
    if status == ST_UNKNOWN:
        return True, "lost its leadership", None
    return True, P.message(values), None


def _endpoints(endpoints) -> list[str]:
    if endpoints is None:
        from ..config import default_config

        return default_config().client_endpoints()
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    out = []
    for e in endpoints:
        if isinstance(e, tuple):
            e = f"{e[0]}:{e[1]}"
        e = e.strip()
        P.split_address(e)          # LocalProtocolError now rather than at the first call
        out.append(e)
    if not out:
        raise LocalProtocolError("no endpoints given")
    return out


class AsyncClient:
    """The asyncio client: ``await c.put(k, v)``, ``await c.get(k)``...; ``async with``.

    ``endpoints``: ``"host:port"`` strings (a list, or one comma-separated string); default
    the built-in local cluster. ``timeout``: seconds to wait for the answer to one request.
    ``deadline``: seconds one call may take in all, retries included (default 3 x timeout).
    ``retry``: a ``RetryPolicy`` (attempt bound and backoff). ``keepalive_interval``: seconds
    between session keep-alives (None or 0: none). The client binds to the event loop of its
    first call."""

    def __init__(self, endpoints=None, *, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float | None = None, retry: RetryPolicy | None = None,
                 keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL,
                 connect_timeout: float | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoints = _endpoints(endpoints)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else 3 * self.timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.keepalive_interval = keepalive_interval or None
        self.connect_timeout = connect_timeout if connect_timeout is not None \
            else min(self.timeout, 2.0)
        self._max_frame = max_frame
        self._sweep_every = min(max(self.timeout / 20, 0.005), 0.1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[str, _Conn] = {}
        self._leader: str | None = None      # believed leader's address (maybe a hint)
        self._lconn: _Conn | None = None     # connected _Conn of the leader (fast path)
        self._rr = 0                         # next endpoint to try without a leader
        self._stale_rr = 0
        self._down: dict[str, float] = {}    # address -> loop time until which it is skipped
        self._session: Session | None = None
        self._registering: asyncio.Task | None = None
        self._keepalive: asyncio.Task | None = None
        self._closed = False
        self._limits: dict | None = None     # the cluster's limits (LIMIT_FIELDS), once known
        self._limits_task: asyncio.Task | None = None
        self._limits_absent = False          # a node answered status without limits (older)
        #: Keys and values of at most this many bytes in all cannot be over any limit.
        self._small = MIN_NODE_FRAME - P.FRAME_OVERHEAD
        #: Attempts made after a failed one, over the client's life (for tests and tools).
        self.retries = 0

    # -- public API ---------------------------------------------------------------------------

    # Every operation takes ``deadline=`` (seconds for the whole call, retries included),
    # overriding the client's for that call.

    async def get(self, key, stale: bool = False, *, deadline: float | None = None
                  ) -> bytes | None:
        """The value of ``key`` or None. Linearizable (on the leader, after a ReadIndex
        round) unless ``stale``: then any node answers from its local state."""
        k = P.to_bytes(key)
        return P.check_get(await self._call(_STALE if stale else _READ, OP_GET,
                                            (k, bool(stale)), budget=deadline))

    async def put(self, key, value, *, deadline: float | None = None) -> None:
        """Set ``key`` to ``value`` (exactly once, even across retries)."""
        await self._call(_WRITE, OP_PUT, (P.to_bytes(key), P.to_bytes(value, "value")),
                         budget=deadline)

    async def delete(self, key, *, deadline: float | None = None) -> bool:
        """Remove ``key``; True when it existed."""
        return P.check_bool(await self._call(_WRITE, OP_DELETE, (P.to_bytes(key),),
                                             budget=deadline))

    async def cas(self, key, expected, new, *, deadline: float | None = None) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: if it is absent);
        True when swapped."""
        return P.check_bool(await self._call(
            _WRITE, OP_CAS, (P.to_bytes(key), P.to_opt_bytes(expected, "expected"),
                             P.to_bytes(new, "new")), budget=deadline))

    async def scan(self, prefix=b"", limit: int = 0, stale: bool = False, *,
                   deadline: float | None = None) -> list:
        """``[(key, value), ...]`` of the keys starting with ``prefix``, in key order, at
        most ``limit`` of them (0: the node's maximum, 10,000 by default)."""
        if type(limit) is not int or limit < 0:
            raise ValueError("limit must be a non-negative integer")
        return P.check_scan(await self._call(_STALE if stale else _READ, OP_SCAN,
                                             (P.to_bytes(prefix, "prefix"), limit,
                                              bool(stale)), budget=deadline))

    async def status(self) -> list[dict]:
        """One dict per endpoint, in endpoint order: ``endpoint``, ``reachable`` and, when
        reachable, the node's ``id, role, term, leader, last_index, commit, applied, core,
        loop, version`` and its request limits ``max_frame_bytes, max_key_bytes,
        max_value_bytes, max_scan`` (absent from an older node); when not, ``error``."""
        self._check_open()
        return list(await asyncio.gather(*(self._status_one(a) for a in self.endpoints)))

    @property
    def limits(self) -> dict | None:
        """The cluster's request limits learned from a status answer (``max_frame_bytes``,
        ``max_key_bytes``, ``max_value_bytes``, ``max_scan``), or None before."""
        return None if self._limits is None else dict(self._limits)

    async def leader(self) -> str | None:
        """The address of the node believed to be the leader (asks the nodes if unknown)."""
        if self._leader is None:
            for st in await self.status():
                if st["reachable"] and st["role"] == "leader":
                    self._leader = st["endpoint"]
        return self._leader

    @property
    def session_id(self) -> int | None:
        """The current session's id (None before the first write)."""
        s = self._session
        return None if s is None or s.expired else s.id

    async def close(self) -> None:
        """Close every connection and stop the keep-alive; calls in flight fail (a write in
        flight with ConnectionLost: its outcome is unknown)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._keepalive, self._registering, self._limits_task):
            if task is not None and not task.done():
                task.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        self._lconn = None
        # Let the transports run their close callbacks before the loop may stop.
        await asyncio.sleep(0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- node selection and connections -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the client is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def _pick(self, kind: int) -> str:
        """Where the next attempt goes."""
        now = self._loop.time()
        down = self._down
        eps = self.endpoints
        n = len(eps)
        if kind == _STALE:
            for _ in range(n):
                a = eps[self._stale_rr % n]
                self._stale_rr += 1
                if down.get(a, 0.0) <= now:
                    return a
            return eps[self._stale_rr % n]
        lead = self._leader
        if lead is not None and down.get(lead, 0.0) <= now:
            return lead
        for _ in range(n):
            a = eps[self._rr % n]
            self._rr += 1
            if down.get(a, 0.0) <= now:
                return a
        a = eps[self._rr % n]            # every node is down: try them in turn anyway
        self._rr += 1
        return a

    async def _connect(self, addr: str) -> _Conn:
        """A connected _Conn to ``addr``, or one with ``closed`` set and ``error`` saying why."""
        conn = self._conns.get(addr)
        if conn is None or conn.closed:
            conn = _Conn(addr, self._loop, self._max_frame, self._sweep_every)
            if self._limits is not None:
                conn.max_body = self._limits["max_frame_bytes"]
            self._conns[addr] = conn
            conn.waiter = self._loop.create_task(conn.open(self.connect_timeout))
        if not conn.ready and not conn.closed:
            await asyncio.shield(conn.waiter)
            if self._closed:            # the client was closed while this one connected
                conn.close()
        if conn.closed:
            if self._conns.get(addr) is conn:
                del self._conns[addr]
            self._down[addr] = self._loop.time() + DOWN_FOR
        else:
            self._down.pop(addr, None)
        return conn

    def _forget_leader(self, addr: str) -> None:
        if self._leader == addr:
            self._leader = None
            self._lconn = None

    def _on_not_leader(self, addr: str, values: list) -> bool:
        """Take in a NOT_LEADER answer from ``addr``; True when it names another node that is
        worth trying at once."""
        hint = values[1] if len(values) >= 2 and type(values[1]) is str else None
        self._forget_leader(addr)
        if hint and hint != addr and self._down.get(hint, 0.0) <= self._loop.time():
            self._leader = hint
            self._lconn = None
            return True
        return False

    # -- sessions -----------------------------------------------------------------------------

    async def _session_for_write(self, deadline: float) -> Session:
        s = self._session
        if s is not None and not s.expired:
            return s
        task = self._registering
        if task is None or task.done():
            task = self._registering = self._loop.create_task(self._register(deadline))
        return await asyncio.shield(task)

    async def _register(self, deadline: float) -> Session:
        values = await self._call(_PLAIN, OP_REGISTER, (), deadline=deadline)
        if len(values) != 1 or type(values[0]) is not int or values[0] <= 0:
            raise RemoteProtocolError(f"malformed register answer: {values!r:.100}")
        s = Session(values[0], self._loop.time())
        self._session = s
        log.debug("registered session %d", s.id)
        if self.keepalive_interval and (self._keepalive is None or self._keepalive.done()):
            self._keepalive = self._loop.create_task(self._keep_alive())
        return s

    async def _keep_alive(self) -> None:
        """Send OP_KEEPALIVE when the session has sent no write for ``keepalive_interval``."""
        interval = self.keepalive_interval
        loop = self._loop
        while not self._closed:
            s = self._session
            wait = interval if s is None else s.last_sent + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if s.expired:
                await asyncio.sleep(interval)
                continue
            s.last_sent = loop.time()
            try:
                await self._call(_PLAIN, OP_KEEPALIVE, (s.id, s.first_unacked), session=s)
            except asyncio.CancelledError:
                raise
            except FastraftError as exc:
                log.debug("keep-alive of session %d failed: %s", s.id, exc)

    # -- the call loop ------------------------------------------------------------------------

    async def _call(self, kind: int, op: int, args: tuple, *, budget: float | None = None,
                    deadline: float | None = None, session: Session | None = None) -> list:
        """Run one operation to its end; return the OK values or raise (module docstring).
        ``budget``: seconds for the call (default ``self.deadline``); ``deadline``: the same
        as a loop time (wins over ``budget``)."""
        if self._closed or self._loop is None:
            self._check_open()
        loop = self._loop
        now = loop.time()
        if deadline is None:
            deadline = now + (self.deadline if budget is None else budget)
        if op in _SIZED and P.payload_size(args) > self._small:
            await self._check_limits(op, args, deadline)
        sess = seq = None
        if kind == _WRITE:
            sess = self._session
            if sess is None or sess.expired:
                sess = await self._session_for_write(deadline)
            seq = sess.begin()
            sess.last_sent = now
        at = None           # _Attempts, from the first failed attempt on
        attempts = 0
        failures = 0
        retry = self.retry
        try:
            while True:
                # -- one attempt --------------------------------------------------------------
                conn = self._lconn if kind != _STALE else None
                if conn is None or not conn.ready:
                    addr = self._pick(kind)
                    conn = self._conns.get(addr)
                    if conn is None or not conn.ready:
                        conn = await self._connect(addr)
                    if kind != _STALE and conn.ready and addr == self._leader:
                        self._lconn = conn
                attempts += 1
                if not conn.ready and conn.notice is None:
                    at = at or _Attempts()
                    at.said[conn.addr] = (False, conn.why or conn.error or "unreachable", None)
                    at.last = NotLeader(None, "no node reachable")   # detailed by _no_leader
                    if conn.refused:
                        at.refused(conn.addr, loop.time())
                    else:
                        at.answered()
                    # Try the next node at once unless every node was tried already.
                    backoff = attempts % len(self.endpoints) == 0
                else:
                    if not conn.ready:      # closed by a notice before anything was sent
                        status, values = conn.notice
                    else:
                        timeout = deadline - loop.time()
                        if timeout > self.timeout:
                            timeout = self.timeout
                        elif timeout < 0.001:
                            timeout = 0.001
                        if kind == _WRITE:
                            fut = conn.request(op, (sess.id, seq, sess.first_unacked, *args),
                                               timeout)
                        else:
                            fut = conn.request(op, args, timeout)
                        status, values = await fut
                    if status == ST_OK:
                        if kind != _STALE and self._lconn is not conn:
                            self._leader = conn.addr     # it answered as the leader
                            self._lconn = conn
                        return values
                    at = at or _Attempts()
                    backoff = self._judge(at, kind, conn.addr, status, values,
                                          session if session is not None else sess, seq)
                    if backoff is None:
                        # SESSION_EXPIRED, never possibly applied: move the write to a new
                        # session (a new seq) and try again at once.
                        sess.done(seq)
                        sess = seq = None
                        sess = await self._session_for_write(deadline)
                        seq = sess.begin()
                        sess.last_sent = loop.time()
                        backoff = False
                # -- retry? -------------------------------------------------------------------
                now = loop.time()
                if (not retry.should_retry(attempts) or now >= deadline
                        or at.hopeless(self.endpoints, now)):
                    break
                self.retries += 1
                if backoff:
                    at.hops = 0
                    failures += 1
                    delay = retry.delay(failures)
                    if now + delay >= deadline:
                        break
                    await asyncio.sleep(delay)
                if self._closed:
                    break
            raise self._final_error(at, attempts)
        finally:
            if seq is not None:
                sess.done(seq)

    def _judge(self, at: _Attempts, kind: int, addr: str, status: int, values: list,
               sess: Session | None, seq: int | None) -> bool | None:
        """Take in a failed attempt's answer: raise when the call ends here; else note it in
        ``at`` and return whether to back off before the next attempt (None: the session
        expired and the write must move to a new one)."""
        at.answered()
        at.said[addr] = _what_it_said(status, values)
        if status == ST_NOT_LEADER:
            # Follow a hint at once, but not around a circle of stale hints.
            at.hops += 1
            backoff = not self._on_not_leader(addr, values) or at.hops > len(self.endpoints)
            hint = values[0] if values and type(values[0]) is int else 0
            at.last = NotLeader(hint or None, f"{addr} is not the leader "
                                f"(hint: {values[1] if len(values) > 1 else None})")
            return backoff
        if status == TIMED_OUT:
            self._forget_leader(addr)
            at.last = Timeout(P.message(values))
            if kind >= _WRITE:
                at.unknown = Timeout
            return False                # a whole timeout was waited already
        if status == LOST or (status == TOO_LARGE and kind >= _WRITE):
            at.last = ConnectionLost(P.message(values))
            if kind >= _WRITE:
                at.unknown = ConnectionLost
            return True
        if status == ST_UNKNOWN:
            self._forget_leader(addr)
            at.last = LeadershipLost(f"{addr}: {P.message(values)}")
            at.unknown = LeadershipLost
            return True
        if status == ST_BUSY:
            at.last = Busy(f"{addr}: {P.message(values)}")
            return True
        if status == ST_INVALID or status == TOO_LARGE:
            if at.unknown is not None:
                raise at.unknown(f"outcome unknown: an earlier attempt may have been applied; "
                                 f"the retry was refused: {P.message(values)}")
            raise InvalidRequest(P.message(values))
        if status == ST_SESSION_EXPIRED:
            if sess is not None:
                sess.expired = True
            if kind != _WRITE:          # keepalive (or an odd answer to a read)
                raise SessionExpired(P.message(values))
            if at.unknown is not None:
                raise Timeout(f"outcome unknown: session {sess.id} expired while write "
                              f"{seq} was in doubt ({P.message(values)})")
            at.last = SessionExpired(P.message(values))
            return None
        # ST_ERROR
        if kind >= _WRITE:
            raise OutcomeUnknown(f"server error at {addr}: {P.message(values)}")
        raise RemoteProtocolError(f"server error at {addr}: {P.message(values)}")

    def _final_error(self, at: _Attempts, attempts: int) -> FastraftError:
        """The error a call that ran out of attempts or time raises."""
        last = at.last
        if isinstance(last, NotLeader):
            last = self._no_leader(at.said, last.leader_hint)
        if at.unknown is not None:
            return at.unknown(f"outcome unknown after {attempts} attempts: {last}")
        if self._closed:
            return LocalProtocolError("the client was closed during the call")
        return last

    def _no_leader(self, said: dict, hint: int | None) -> NotLeader:
        """One line on why no leader took the call: what each node's last attempt saw."""
        eps = self.endpoints
        order = list(eps) + [a for a in said if a not in eps]
        answered = tuple(a for a in order if a in said and said[a][0])
        unreachable = tuple(a for a in order if a in said and not said[a][0])
        untried = [a for a in eps if a not in said]
        if not answered:
            whys = [said[a][1] for a in unreachable]
            if len(set(whys)) == 1:
                text = f"no node reachable at {', '.join(unreachable)} ({whys[0]})"
            else:
                text = "no node reachable: " + "; ".join(
                    f"{a}: {why}" for a, why in zip(unreachable, whys))
        else:
            n_ok, n = len(answered), len(answered) + len(unreachable)
            named = [said[a][2] for a in answered if said[a][2] in unreachable]
            if named:
                why = f"{n_ok} of {n} nodes reachable; the leader they name, {named[0]}, is not"
            elif not unreachable:
                why = (f"all {n} nodes answered but none is the leader (an election may be "
                       f"in progress)")
            elif 2 * n_ok <= n:
                why = f"no quorum: only {n_ok} of {n} nodes reachable"
            else:
                why = (f"{n_ok} of {n} nodes reachable but none is the leader (an election "
                       f"may be in progress)")
            parts = [f"{a} answered: {said[a][1]}" for a in answered]
            parts += [f"{a}: {said[a][1]}" for a in unreachable]
            text = f"no leader ({why}): " + "; ".join(parts)
        if untried:
            text += f"; not tried: {', '.join(untried)}"
        return NotLeader(hint, text, answered=answered, unreachable=unreachable)

    # -- limits -------------------------------------------------------------------------------

    async def _check_limits(self, op: int, args: tuple, deadline: float) -> None:
        """InvalidRequest (nothing sent) when the request is over the cluster's limits;
        learn them first (its keys and values are over ``_small``: it may be over the
        smallest frame limit a node can have)."""
        lim = self._limits
        if lim is None:
            if self._limits_absent:
                return
            await self._fetch_limits(deadline)
            lim = self._limits
            if lim is None:
                return          # no node told: send it; a node refuses it with ST_INVALID
        why = P.check_limits(op, args, lim)
        if why is not None:
            raise InvalidRequest(f"{why}; refused by the client, nothing sent")

    def _learn_limits(self, st: dict) -> None:
        if "max_frame_bytes" not in st:
            if self._limits is None:            # an older node: it refuses by itself
                self._limits_absent = True
                self._small = _NO_LIMIT
            return
        lim = {k: st[k] for k in P.LIMIT_FIELDS}
        self._limits = lim
        self._limits_absent = False
        self._small = min(lim["max_key_bytes"], lim["max_value_bytes"])
        for conn in self._conns.values():
            conn.max_body = lim["max_frame_bytes"]

    async def _fetch_limits(self, deadline: float) -> None:
        """Ask one node (the first that answers) for its status, once for all the callers
        that need it at the same time; wait at most until ``deadline``."""
        task = self._limits_task
        if task is None or task.done():
            task = self._limits_task = self._loop.create_task(self._ask_limits())
        wait = deadline - self._loop.time()
        if wait > 0:
            try:
                await asyncio.wait_for(asyncio.shield(task), wait)
            except asyncio.TimeoutError:
                pass

    async def _ask_limits(self) -> None:
        now = self._loop.time()
        order = sorted(self.endpoints, key=lambda a: (a != self._leader,
                                                      self._down.get(a, 0.0) > now))
        for addr in order:
            try:
                st = await self._status_one(addr)
            except (FastraftError, OSError) as exc:
                log.debug("status of %s failed: %s", addr, exc)
                continue
            if st["reachable"]:
                return

    async def _status_one(self, addr: str) -> dict:
        out = {"endpoint": addr, "reachable": False}
        conn = await self._connect(addr)
        if not conn.ready:
            out["error"] = conn.error
            return out
        status, values = await conn.request(OP_STATUS, (True,), self.timeout)
        if status == ST_INVALID and conn.ready:     # an older node: no with_limits argument
            status, values = await conn.request(OP_STATUS, (), self.timeout)
        if status != ST_OK:
            out["error"] = P.message(values)
            return out
        try:
            out.update(P.status_dict(values))
        except RemoteProtocolError as exc:
            out["error"] = str(exc)
            return out
        out["reachable"] = True
        self._learn_limits(out)
        if out["role"] == "leader" and self._leader != addr:
            self._leader = addr
            self._lconn = None
        return out

