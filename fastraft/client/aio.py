"""``AsyncClient``: the asyncio client of fastraft (``Client`` in ``sync`` wraps it).

Place in the architecture: the client layer (pure Python: it needs no compiled extension;
``fastraft.core`` falls back on its twin for the frame codec). It talks to nodes through one
``_connection.NodeConnection`` per node (opened on first use, reopened after a loss; many calls
pipeline on it), speaks the wire protocol with ``_protocol``, judges failed attempts with
``_attempts``, keeps its session with ``_session`` and paces retries with ``retry``. It never
imports the server.

Time: the public ``deadline`` (of the client and of each call) is a number of SECONDS the
whole call may take, retries included. Inside, the moment a call must end is a loop time named
``expires_at`` (``loop.time() + deadline``), never ``deadline``.

A call (``_call``) is a loop of attempts, bounded by the retry policy (attempt count) and the
call's deadline (time)::

    pick a node: the believed leader; else the next endpoint in turn (skipping nodes that
        refused a connection recently); any node for a stale read
    send; wait for the answer or the per-request timeout
    OK        -> done
    otherwise -> update the believed leader (a hint, or forget a node that timed out or lost
                 its leadership), then ``Attempts.judge``: raise, or retry at once / after a
                 backoff / with the write moved to a new session (``_attempts`` docstring:
                 the verdict on each status, the OutcomeUnknown rule, the no-leader error)

Hedging (``hedge_after``, default HEDGE_AFTER seconds; None: off): a node that answers nothing
for that long while calls wait on it (paused, partitioned, stuck) need not cost the whole
request timeout. Its connection tells the client (``NodeConnection.on_silent``), and the
client asks the other nodes for their status; when one of them says it leads, the client gives
up on the silent node: its waiting attempts end with the pseudo-status SILENT (outcome unknown,
as a timeout) and are sent again at once to the new leader, writes with the same session and
seq, so a write the silent node did apply is answered from the new leader's session cache
instead of being applied twice. Until a node says it leads, the calls keep waiting (asked
again at each sweep of the connection, one probe at a time). The first lost connection of a
call is retried at once, without a backoff: if its node died, the attempt finds the connection
refused and moves on to the next node at once.

When the attempts or the time run out the call raises ``Attempts.final_error``: a write that
any attempt may have applied raises an ``OutcomeUnknown`` error, never a ``NotApplied`` one.

Limits: the client learns the cluster's request limits from any status answer (``limits``) and
then refuses, with InvalidRequest and without sending anything, a request over them. A request
whose keys and values may not fit the smallest frame limit a node can have (1 MiB) while the
limits are unknown first asks one node for its status (once; the answer is kept). A node
refuses an oversized frame with ST_INVALID too, and a connection it closes with a notice
(request id 0: too many connections, shutting down) fails the requests it did not read as
Busy / NotLeader (not applied); the others as ConnectionLost.

The session is registered on the first write and kept alive by a background task that sends
OP_KEEPALIVE when no write of the session has been sent for ``keepalive_interval`` seconds.

Membership (``_members``): ``members()`` asks the leader for the member list;
``add_learner``, ``promote`` and ``remove_member`` ask it for one change each, never re-sent
blindly (an attempt whose outcome is unknown is settled by asking the members first). The
client learns the membership (``learn_members``): every member list it gets replaces the
endpoints with the members' client addresses (``_members.merge_endpoints``: new members added,
removed ones dropped). After a NOT_LEADER answer, a timeout or a connection failure the list is
marked stale, and the next time a leader answers OK a background refresh asks that leader for
it, on the connection already open (at most once every REFRESH_EVERY seconds; it tries no
other node, so it changes nothing of the calls' own node choice). The endpoints given are kept
until a member list says otherwise, and whenever a refresh fails.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from ..codec import (MEMBER_ADD_LEARNER, MEMBER_PROMOTE, MEMBER_REMOVE, OP_CAS, OP_CAS_REV,
                     OP_DELETE,
                     OP_GET, OP_KEEPALIVE, OP_MEMBERS, OP_PUT, OP_REGISTER, OP_SCAN, OP_STATUS,
                     ST_INVALID, ST_NOT_LEADER, ST_OK, ST_UNKNOWN)
from ..errors import FastraftError, InvalidRequest, LocalProtocolError, RemoteProtocolError
from ..tls import client_context
from . import _members as M
from . import _protocol as P
from ._attempts import NEW_SESSION, PLAIN, READ, STALE, WRITE, Attempts
from ._connection import NO_LIMIT, NodeConnection
from ._coord import Coordination, lease_id
from ._members import Member
from ._protocol import LOST, SILENT, TIMED_OUT
from ._session import ClientSession
from .retry import RetryPolicy

__all__ = ["AsyncClient", "DEFAULT_TIMEOUT", "DEFAULT_KEEPALIVE_INTERVAL"]

log = logging.getLogger("fastraft.client")

DEFAULT_TIMEOUT = 5.0
#: Seconds a connection with calls waiting may stay silent before the client asks the other
#: nodes whether one of them leads now (hedging, module docstring).
HEDGE_AFTER = 0.3
#: Seconds each node has to answer that question.
PROBE_TIMEOUT = 1.0
DEFAULT_KEEPALIVE_INTERVAL = 10.0
#: How long a node that refused a connection is skipped when choosing where to send.
DOWN_FOR = 1.0
#: Seconds between two background refreshes of the member list, at least.
REFRESH_EVERY = 1.0
DEFAULT_MAX_FRAME = 256 << 20
#: The smallest frame limit a node can have (config.Tuning.max_frame_bytes): a request that
#: fits under it needs no knowledge of the cluster's limits.
MIN_NODE_FRAME = 1 << 20

#: Operations whose keys and values count against the limits.
_SIZED = frozenset({OP_GET, OP_PUT, OP_DELETE, OP_CAS, OP_SCAN, OP_CAS_REV})


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


def _tls_context(tls, cacert, cert, key) -> ssl.SSLContext | None:
    """The client's TLS context: ``tls`` as given, or one made of the three paths; None for
    plain TCP."""
    paths = cacert is not None or cert is not None or key is not None
    if tls is not None:
        if paths:
            raise TypeError("give either tls= (an ssl.SSLContext) or cacert=/cert=/key=, "
                            "not both")
        if not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls must be an ssl.SSLContext, not {type(tls).__name__}")
        return tls
    if not paths:
        return None
    return client_context(cacert, cert, key)


class AsyncClient(Coordination):
    """The asyncio client: ``await c.put(k, v)``, ``await c.get(k)``...; ``async with``.
    Finds the leader, retries and reconnects by itself; writes apply exactly once.

    ``endpoints``: ``"host:port"`` strings (a list, or one comma-separated string); default
    the built-in local cluster. ``timeout``: seconds to wait for the answer to one request.
    ``deadline``: seconds one call may take in all, retries included (default 3 x timeout).
    ``retry``: a ``RetryPolicy`` (attempt bound and backoff). ``keepalive_interval``: seconds
    between session keep-alives (None or 0: none). ``connect_timeout``: seconds to open a
    connection (default min(timeout, 2)). ``max_frame``: the largest answer frame accepted
    (a larger answer fails its call, the connection stays). ``learn_members``: follow the
    cluster's membership (module docstring; default True): ``endpoints`` then changes as
    members are added and removed. ``hedge_after``: seconds of silence from a node with calls
    waiting after which the client looks for another leader (module docstring; None: never).
    The client binds to the event loop of its first call.

    TLS: ``tls`` an ``ssl.SSLContext``, or ``cacert`` (the CA that signed the nodes'
    certificates; without it the system's CAs), ``cert`` and ``key`` (this client's
    certificate, for a cluster that requires one) turned into one by
    ``fastraft.tls.client_context`` (an unusable file: ``TLSFileError`` naming it). Each
    node's certificate must be trusted and name the endpoint's host; otherwise a call fails
    at once with ``TLSError`` (not applied). Neither given: plain TCP.

    Errors: an operation raises only ``FastraftError`` subclasses (TypeError / ValueError for
    bad arguments). For a write, a ``NotApplied`` error means it was certainly not applied,
    an ``OutcomeUnknown`` one that it may have been."""

    def __init__(self, endpoints=None, *, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float | None = None, retry: RetryPolicy | None = None,
                 keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL,
                 connect_timeout: float | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME, learn_members: bool = True,
                 tls: ssl.SSLContext | None = None, cacert=None, cert=None,
                 key=None, hedge_after: float | None = HEDGE_AFTER) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if hedge_after is not None and not hedge_after > 0:
            raise ValueError("hedge_after must be positive (or None: no hedging)")
        self.hedge_after = float(hedge_after) if hedge_after is not None else None
        self._hedges: set = set()            # probes in flight (module docstring, hedging)
        self.tls = _tls_context(tls, cacert, cert, key)
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
        self._conns: dict[str, NodeConnection] = {}
        self._leader: str | None = None      # believed leader's address (maybe a hint)
        self._lconn: NodeConnection | None = None   # the leader's, when connected (fast path)
        self._rr = 0                         # next endpoint to try without a leader
        self._stale_rr = 0
        self._down: dict[str, float] = {}    # address -> loop time until which it is skipped
        self._revived: dict[str, float] = {}  # address -> when a hint overrode its down mark
        self._session: ClientSession | None = None
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
        self.learn_members = bool(learn_members)
        self._refresh_task: asyncio.Task | None = None
        self._refreshed_at = float("-inf")   # loop time of the last refresh's start
        self._members_stale = False          # refresh the member list at the next leader OK
        self._members_absent = False         # a node refused OP_MEMBERS (older): do not ask
        self._watches: set = set()           # the watches open (closed with the client)
        self._keepers: set = set()           # the lease keep-alive tasks of its locks

    # -- public API ---------------------------------------------------------------------------

    # Every operation takes ``deadline=`` (seconds for the whole call, retries included),
    # overriding the client's for that call.

    async def get(self, key, stale: bool = False, *, deadline: float | None = None
                  ) -> bytes | None:
        """The value of ``key`` or None. Linearizable (on the leader, after a ReadIndex
        round) unless ``stale``: then any node answers from its local state."""
        k = P.to_bytes(key)
        return P.check_get(await self._call(STALE if stale else READ, OP_GET,
                                            (k, bool(stale)), deadline=deadline))

    async def put(self, key, value, *, lease: int | None = None,
                  deadline: float | None = None) -> None:
        """Set ``key`` to ``value``; applied exactly once, even across retries. ``lease``:
        attach the key to that lease (deleted with it; LeaseNotFound when it is gone, and
        nothing is written); without one, the key belongs to no lease."""
        args = (P.to_bytes(key), P.to_bytes(value, "value"))
        if lease is not None:
            args += (lease_id(lease),)
        await self._call(WRITE, OP_PUT, args, deadline=deadline)

    async def delete(self, key, *, deadline: float | None = None) -> bool:
        """Remove ``key`` (exactly once); True when it existed."""
        return P.check_bool(await self._call(WRITE, OP_DELETE, (P.to_bytes(key),),
                                             deadline=deadline))

    async def cas(self, key, expected, new, *, lease: int | None = None,
                  deadline: float | None = None) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: if it is absent), as
        one atomic write applied exactly once; True when swapped. ``lease`` as for ``put``;
        ``cas_revision`` compares revisions instead."""
        args = (P.to_bytes(key), P.to_opt_bytes(expected, "expected"), P.to_bytes(new, "new"))
        if lease is not None:
            args += (lease_id(lease),)
        return P.check_bool(await self._call(WRITE, OP_CAS, args, deadline=deadline))

    async def scan(self, prefix=b"", limit: int = 0, stale: bool = False, *,
                   deadline: float | None = None) -> list:
        """``[(key, value), ...]`` of the keys starting with ``prefix``, in key order, at
        most ``limit`` of them (0: the node's maximum, 10,000 by default). Linearizable
        unless ``stale``, as ``get``."""
        if type(limit) is not int or limit < 0:
            raise ValueError("limit must be a non-negative integer")
        return P.check_scan(await self._call(STALE if stale else READ, OP_SCAN,
                                             (P.to_bytes(prefix, "prefix"), limit,
                                              bool(stale)), deadline=deadline))

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
        """The address of the node believed to be the leader (asks the nodes if unknown);
        None when no node says it is the leader."""
        if self._leader is None:
            for st in await self.status():
                if st["reachable"] and st["role"] == "leader":
                    self._leader = st["endpoint"]
        return self._leader

    @property
    def session_id(self) -> int | None:
        """The current session's id (None before the first write, or after it expired)."""
        s = self._session
        return None if s is None or s.expired else s.id

    # -- membership (``_members``) --------------------------------------------------------------

    async def members(self, *, deadline: float | None = None) -> list[Member]:
        """The cluster's members as its leader sees them, by id: ``Member(id, role, raft,
        client, is_leader, match)`` (role "voter" or "learner"; raft and client: the peer and
        client addresses; match: the highest log index the leader knows it holds)."""
        self._check_open()
        return (await self._ask_members(
            self._loop.time() + (self.deadline if deadline is None else deadline)))[0]

    async def add_learner(self, node_id: int, raft: str, client: str, *,
                          deadline: float | None = None) -> int | None:
        """Add node ``node_id`` as a learner (it receives the log, never votes) reachable by
        its peers at ``raft`` and by clients at ``client`` ("host:port"). Returns the change's
        log index once it is committed and applied, or None when an attempt's outcome was
        unknown and the cluster then showed the node added. Refused with InvalidRequest
        (unknown or duplicate id, an id removed before, an address in use) or Busy (another
        change in flight): nothing changed. An OutcomeUnknown error only when the deadline
        passed before the cluster told whether it was done."""
        return await M.change(self, MEMBER_ADD_LEARNER, M.check_node_id(node_id),
                              M.check_address(raft, "raft"),
                              M.check_address(client, "client"), deadline)

    async def promote(self, node_id: int, *, deadline: float | None = None) -> int | None:
        """Make learner ``node_id`` a voter (``add_learner`` for the answer and the errors);
        refused with Busy while it is not caught up with the leader."""
        return await M.change(self, MEMBER_PROMOTE, M.check_node_id(node_id), None, None,
                              deadline)

    async def remove_member(self, node_id: int, *, deadline: float | None = None
                            ) -> int | None:
        """Remove voter or learner ``node_id``, the leader included (``add_learner`` for the
        answer and the errors; InvalidRequest for the last voter). Its id is never reused."""
        return await M.change(self, MEMBER_REMOVE, M.check_node_id(node_id), None, None,
                              deadline)

    async def close(self) -> None:
        """Close every connection and stop the keep-alive; calls in flight fail (a write in
        flight with ConnectionLost: its outcome is unknown)."""
        if self._closed:
            return
        await self._close_watches()
        self._closed = True
        for task in (self._keepalive, self._registering, self._limits_task,
                     self._refresh_task, *self._hedges):
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
        if kind == STALE:
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

    async def _connect(self, addr: str) -> NodeConnection:
        """A connected NodeConnection to ``addr``, or one with ``closed`` set and ``error``
        saying why."""
        conn = self._conns.get(addr)
        if conn is None or conn.closed:
            conn = NodeConnection(addr, self._loop, self._max_frame, self._sweep_every,
                                  self.tls)
            if self._limits is not None:
                conn.max_body = self._limits["max_frame_bytes"]
            if self.hedge_after is not None:
                conn.on_silent = self._on_silent
                conn.silent_after = self.hedge_after
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

    def _leader_news(self, addr: str, status: int, values: list) -> bool:
        """Update the believed leader after a failed answer from ``addr``: forget ``addr``
        when it timed out, lost its leadership or is not the leader; adopt the leader a
        NOT_LEADER names. True when that names another node worth trying at once. A leader
        change, a timeout or a lost connection also asks for a refresh of the members."""
        if status == ST_NOT_LEADER or status == TIMED_OUT or status == LOST:
            self._want_members()
        if status == ST_NOT_LEADER or status == SILENT:
            hint = values[1] if len(values) >= 2 and type(values[1]) is str else None
            self._forget_leader(addr)
            if hint and hint != addr and self._may_try(hint):
                self._leader = hint
                self._lconn = None
                return True
        elif status == TIMED_OUT or status == ST_UNKNOWN:
            self._forget_leader(addr)
        return False

    def _may_try(self, hint: str) -> bool:
        """Whether a node named leader by a hint may be tried now: yes unless it refused a
        connection within DOWN_FOR seconds; but a hint is fresher news than a refusal (the
        node may have restarted and won an election), so once per DOWN_FOR it is tried
        anyway."""
        now = self._loop.time()
        if self._down.get(hint, 0.0) <= now:
            return True
        if self._revived.get(hint, float("-inf")) > now - DOWN_FOR:
            return False
        self._revived[hint] = now
        del self._down[hint]
        return True

    # -- hedging ----------------------------------------------------------------------------------

    def _on_silent(self, conn: NodeConnection, quiet: float) -> None:
        """``conn`` has calls waiting and heard nothing for ``quiet`` seconds: ask the other
        nodes who leads (one probe at a time per connection)."""
        if conn.probing or self._closed or len(self.endpoints) < 2:
            return
        conn.probing = True
        task = self._loop.create_task(self._hedge(conn, quiet))
        self._hedges.add(task)
        task.add_done_callback(self._hedges.discard)

    async def _hedge(self, conn: NodeConnection, quiet: float) -> None:
        rx = conn.rx
        try:
            found = await asyncio.gather(*(self._claims_lead(a) for a in self.endpoints
                                           if a != conn.addr))
        finally:
            conn.probing = False
        claims = [f for f in found if f is not None]
        if not claims or conn.closed or conn.rx != rx or not conn.pending:
            return              # nobody else leads, or the silent node spoke meanwhile
        term, addr = max(claims)
        self._leader = addr
        self._lconn = None
        self._down[conn.addr] = self._loop.time() + DOWN_FOR
        self._want_members()
        conn.give_up(f"no answer from {conn.addr} for {quiet:.1f} s while {addr} leads "
                     f"(term {term}): its {len(conn.pending)} request(s) go there", SILENT,
                     (addr,))

    async def _claims_lead(self, addr: str) -> tuple[int, str] | None:
        """``(term, addr)`` when the node at ``addr`` says it leads, else None."""
        try:
            st = await asyncio.wait_for(self._status_one(addr), PROBE_TIMEOUT)
        except (asyncio.TimeoutError, FastraftError, OSError):
            return None
        if st["reachable"] and st["role"] == "leader" and type(st["term"]) is int:
            return st["term"], addr
        return None

    # -- learning the membership ----------------------------------------------------------------

    async def _ask_members(self, expires_at: float) -> tuple[list[Member], str]:
        """The leader's member list (adopted as the endpoints) and the address that answered
        it (the call loop makes the node that answers OK the believed leader)."""
        values = await self._call(READ, OP_MEMBERS, (), expires_at=expires_at)
        addr = self._leader
        got = M.parse_members(values)
        self._adopt_members(got)
        return got, addr

    def _want_members(self) -> None:
        """The member list may have changed (a leader change, a node unreachable): ask the
        leader for it once one answers (module docstring)."""
        if self.learn_members and not self._members_absent:
            self._members_stale = True

    def _refresh_members(self) -> None:
        """Ask the leader just heard from for the member list, in the background, unless a
        refresh began within REFRESH_EVERY seconds."""
        now = self._loop.time()
        task = self._refresh_task
        conn = self._lconn
        if (now - self._refreshed_at < REFRESH_EVERY or (task is not None and not task.done())
                or conn is None or self._closed):
            return
        self._refreshed_at = now
        self._refresh_task = self._loop.create_task(self._refresh(conn))

    async def _learn_members_now(self) -> None:
        """Ask the leader for the member list and adopt it, unless a refresh began within
        REFRESH_EVERY seconds; errors are only logged. For a watch that found no node to
        stream from, or streams a long while (``_watch``): a client that only watches makes
        no call that would otherwise learn of nodes added or removed."""
        now = self._loop.time()
        if (not self.learn_members or self._members_absent or self._closed
                or now - self._refreshed_at < REFRESH_EVERY):
            return
        self._refreshed_at = now
        try:
            await self._ask_members(now + min(self.timeout, PROBE_TIMEOUT * 2))
        except FastraftError as exc:
            log.debug("refreshing the member list: %s", exc)

    async def _refresh(self, conn: NodeConnection) -> None:
        if not conn.ready:
            return
        status, values = await conn.request(OP_MEMBERS, (), self.timeout)
        if status == ST_OK:
            try:
                members = M.parse_members(values)
            except RemoteProtocolError as exc:
                log.warning("member list from %s: %s", conn.addr, exc)
                return
            self._adopt_members(members)
        elif status == ST_INVALID:          # an older node: it has no OP_MEMBERS
            log.debug("no member list from %s (%s): the endpoints stay as given", conn.addr,
                      P.message(values))
            self._members_absent = True
            self._members_stale = False
        else:
            log.debug("refreshing the member list at %s: %s", conn.addr, P.message(values))

    def _adopt_members(self, members: list[Member]) -> None:
        """Make the members' client addresses the endpoints (``_members.merge_endpoints``);
        close the idle connections to the endpoints dropped."""
        self._members_stale = False
        if not self.learn_members:
            return
        old = self.endpoints
        new = M.merge_endpoints(old, members)
        if new is None:
            return
        gone = [a for a in old if a not in new]
        log.info("endpoints from the member list: %s%s", ", ".join(new),
                 f" (no longer members: {', '.join(gone)})" if gone else "")
        self.endpoints = new
        for a in gone:
            self._forget_leader(a)
            self._down.pop(a, None)
            conn = self._conns.get(a)
            if conn is not None and conn.ready and not conn.pending:
                del self._conns[a]
                conn.close()

    # -- sessions -----------------------------------------------------------------------------

    async def _session_for_write(self, expires_at: float) -> ClientSession:
        """The session for a new write: the current one, or a new one registered (once for
        all the writes that need it at the same time) by loop time ``expires_at``."""
        s = self._session
        if s is not None and not s.expired:
            return s
        task = self._registering
        if task is None or task.done():
            task = self._registering = self._loop.create_task(self._register(expires_at))
        return await asyncio.shield(task)

    async def _register(self, expires_at: float) -> ClientSession:
        values = await self._call(PLAIN, OP_REGISTER, (), expires_at=expires_at)
        if len(values) != 1 or type(values[0]) is not int or values[0] <= 0:
            raise RemoteProtocolError(f"malformed register answer: {values!r:.100}")
        s = ClientSession(values[0], self._loop.time())
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
                await self._call(PLAIN, OP_KEEPALIVE, (s.id, s.first_unacked), session=s)
            except asyncio.CancelledError:
                raise
            except FastraftError as exc:
                log.debug("keep-alive of session %d failed: %s", s.id, exc)

    # -- the call loop ------------------------------------------------------------------------

    async def _call(self, kind: int, op: int, args: tuple, *, deadline: float | None = None,
                    expires_at: float | None = None,
                    session: ClientSession | None = None) -> list:
        """Run one operation to its end; return the OK values or raise (module docstring).
        ``deadline``: seconds for the whole call (default ``self.deadline``); ``expires_at``:
        the loop time at which it ends instead (wins over ``deadline``). ``session``: the
        session a PLAIN call (a keep-alive) is about."""
        if self._closed or self._loop is None:
            self._check_open()
        loop = self._loop
        now = loop.time()
        if expires_at is None:
            expires_at = now + (self.deadline if deadline is None else deadline)
        if op in _SIZED and P.payload_size(args) > self._small:
            await self._check_limits(op, args, expires_at)
        sess = seq = None
        if kind == WRITE:
            sess = self._session
            if sess is None or sess.expired:
                sess = await self._session_for_write(expires_at)
            seq = sess.begin()
            sess.last_sent = now
        at = None           # Attempts, from the first failed attempt on
        attempts = 0
        try:
            while True:
                # -- one attempt --------------------------------------------------------------
                conn = self._lconn if kind != STALE else None
                if conn is None or not conn.ready:
                    addr = self._pick(kind)
                    conn = self._conns.get(addr)
                    if conn is None or not conn.ready:
                        conn = await self._connect(addr)
                    if kind != STALE and conn.ready and addr == self._leader:
                        self._lconn = conn
                attempts += 1
                if not conn.ready and conn.notice is None:
                    at = at or Attempts(self.endpoints)
                    if conn.tls_error is not None:      # nothing sent; retrying is futile
                        raise at.tls_failure(conn.tls_error)
                    at.unreachable(conn.addr, conn.why or conn.error or "unreachable",
                                   conn.refused, loop.time())
                    self._want_members()
                    # Try the next node at once unless every node was tried already.
                    backoff = attempts % len(self.endpoints) == 0
                else:
                    if not conn.ready:      # closed by a notice before anything was sent
                        status, values = conn.notice
                    else:
                        timeout = expires_at - loop.time()
                        if timeout > self.timeout:
                            timeout = self.timeout
                        elif timeout < 0.001:
                            timeout = 0.001
                        if kind == WRITE:
                            fut = conn.request(op, (sess.id, seq, sess.first_unacked, *args),
                                               timeout)
                        else:
                            fut = conn.request(op, args, timeout)
                        status, values = await fut
                    if status == ST_OK:
                        if kind != STALE and self._lconn is not conn:
                            self._leader = conn.addr     # it answered as the leader
                            self._lconn = conn
                        if self._members_stale and kind != STALE:
                            self._refresh_members()
                        return values
                    at = at or Attempts(self.endpoints)
                    follow = self._leader_news(conn.addr, status, values)
                    backoff = at.judge(kind, conn.addr, status, values, follow,
                                       session if session is not None else sess, seq)
                    if backoff is NEW_SESSION:
                        # The session expired and no attempt may have applied the write: move
                        # it to a new session (a new seq) and try again at once.
                        sess.done(seq)
                        sess = seq = None
                        sess = await self._session_for_write(expires_at)
                        seq = sess.begin()
                        sess.last_sent = loop.time()
                        backoff = False
                # -- retry? -------------------------------------------------------------------
                delay = self._retry_delay(at, attempts, backoff, expires_at)
                if delay is None:
                    break
                if backoff:
                    await asyncio.sleep(delay)
                if self._closed:
                    break
            raise at.final_error(attempts, self._closed)
        finally:
            if seq is not None:
                sess.done(seq)

    def _retry_delay(self, at: Attempts, attempts: int, backoff: bool,
                     expires_at: float) -> float | None:
        """After a failed attempt: None when the call gives up (the retry policy's attempts,
        the time, or every endpoint refusing); else the seconds to wait first when
        ``backoff`` (counted as a failure by the policy), 0.0 when not."""
        now = self._loop.time()
        if (not self.retry.should_retry(attempts) or now >= expires_at
                or at.hopeless(now)):
            return None
        self.retries += 1
        if not backoff:
            return 0.0
        at.hops = 0
        at.failures += 1
        delay = self.retry.delay(at.failures)
        return None if now + delay >= expires_at else delay

    # -- limits -------------------------------------------------------------------------------

    async def _check_limits(self, op: int, args: tuple, expires_at: float) -> None:
        """InvalidRequest (nothing sent) when the request is over the cluster's limits;
        learn them first (its keys and values are over ``_small``: it may be over the
        smallest frame limit a node can have)."""
        lim = self._limits
        if lim is None:
            if self._limits_absent:
                return
            await self._fetch_limits(expires_at)
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
                self._small = NO_LIMIT
            return
        lim = {k: st[k] for k in P.LIMIT_FIELDS}
        self._limits = lim
        self._limits_absent = False
        self._small = min(lim["max_key_bytes"], lim["max_value_bytes"])
        for conn in self._conns.values():
            conn.max_body = lim["max_frame_bytes"]

    async def _fetch_limits(self, expires_at: float) -> None:
        """Ask one node (the first that answers) for its status, once for all the callers
        that need it at the same time; wait at most until loop time ``expires_at``."""
        task = self._limits_task
        if task is None or task.done():
            task = self._limits_task = self._loop.create_task(self._ask_limits())
        wait = expires_at - self._loop.time()
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

