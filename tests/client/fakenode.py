"""A scripted fake cluster for the client's unit tests: asyncio TCP servers that speak the
client protocol (fastraft.codec + the core's frame codec) and misbehave on request.

Place in the architecture: test infrastructure of tests/client only (loaded by its conftest).
It imports nothing of the server: it is a small model of a node's client port with a §6.3
session table (exactly-once by (session, seq), first_unacked drops cached answers), enough to
check what the client sends and what it concludes.

Every node records each decoded request (``node.requests``) and counts the bytes it received
(``node.bytes_in``). ``node.plan(op, *actions)`` queues actions consumed by the next requests
of that op (None = any op but OP_MEMBERS); without a plan a node answers as a leader
(``cluster.leader``) or NOT_LEADER with a hint (``cluster.hint``).

Membership (OP_MEMBERS, OP_MEMBER; fastraft.codec): the cluster keeps a member table
(``cluster.members``: id -> [role, raft, client]; at start every node is a voter with its
address as client address and a made-up raft address) and the removed ids. The leader answers
OP_MEMBERS with it (``match``: ``cluster.match`` per id, else ``cluster.last_index``) and
makes an OP_MEMBER change as a node does: INVALID for an unknown, duplicate or removed id, an
address in use, the last voter; BUSY for another change in flight (``cluster.commit`` below
``cluster.last_index``) or promoting a learner in ``cluster.lagging``. A change takes one
index (``cluster.last_index`` grows; ``cluster.commit`` with it) and is answered with it.
OP_STATUS says ``cluster.term``, ``last_index`` and ``commit``. OP_MEMBERS requests (the
client's background refreshes) are kept apart, in ``node.member_asks`` (``node.ops`` and
``cluster.requests`` give them when asked for OP_MEMBERS), so the counts of the other requests
do not depend on when a refresh ran. ``node.knows_members = False`` plays a node from before
membership (OP_MEMBERS and OP_MEMBER refused ST_INVALID, unknown operation).
``await cluster.add_node()`` starts one more node, not a member until it is added.

Like a node, it answers OP_STATUS with its limits when asked (``node.limits``:
``codec.STATUS_LIMIT_FIELDS`` values; ``node.old = True`` plays a node that predates them)
and answers a frame over ``limits["max_frame_bytes"]`` ST_INVALID without reading it.
``node.refuse_connections = "message"`` refuses every new connection with a notice (request
id 0, ST_BUSY, last request read 0), as a node over max_client_connections does.
``FakeCluster(size, ssl=context)`` serves TLS with that ``ssl.SSLContext`` (default: plain).

Actions:
    "ok"            behave normally
    "apply_drop"    apply the write, then close the connection without answering
    "drop"          close the connection, nothing applied
    "apply_silent"  apply, never answer;   "silent": never answer, nothing applied
    "apply_unknown" apply, answer ST_UNKNOWN
    "apply_vanish"  apply, then stop listening and drop every connection (later connection
                    attempts are refused)
    "apply_uncommitted"  (OP_MEMBER) append the change (it shows in OP_MEMBERS) without
                    committing it (``cluster.commit`` stays; ``cluster.commit_all()``), never
                    answer
    "expire"        forget the session, answer ST_SESSION_EXPIRED
    ("status", st, *values)   answer exactly that, nothing applied
    ("delay", s)    behave normally after ``s`` seconds
    ("notice", st, message)   send a notice that this request was not read (last request
                    read: the one before), nothing applied, and close the connection
"""

from __future__ import annotations

import asyncio

from fastraft import codec
from fastraft.core import FrameDecoder, encode_frame

LIMITS = codec.Limits()
#: What a node with the default tuning says (config.Tuning.max_frame_bytes and codec.Limits).
DEFAULT_NODE_LIMITS = {"max_frame_bytes": 4096 + (1 << 20) + 65536, "max_key_bytes": 4096,
                       "max_value_bytes": 1 << 20, "max_scan": 10_000}


class FakeState:
    """The replicated state all fake nodes share: KV, sessions, the log of applied writes."""

    def __init__(self) -> None:
        self.kv: dict[bytes, bytes] = {}
        self.sessions: dict[int, dict] = {}     # sid -> {"cache": {seq: ans}, "floor": int}
        self.next_sid = 100
        self.applied: list[tuple] = []          # (sid, seq, op, key) per applied write
        self.keepalives: list[tuple] = []       # (sid, first_unacked)

    def register(self) -> tuple:
        self.next_sid += 1
        self.sessions[self.next_sid] = {"cache": {}, "floor": 0}
        return codec.ST_OK, self.next_sid

    def write(self, req: codec.Request) -> tuple:
        op = req.op
        if op == codec.OP_REGISTER:
            return self.register()
        s = self.sessions.get(req.session)
        if s is None:
            return codec.ST_SESSION_EXPIRED, f"session {req.session} is unknown or expired"
        if req.first_unacked > s["floor"]:
            s["floor"] = req.first_unacked
            for q in [q for q in s["cache"] if q < req.first_unacked]:
                del s["cache"][q]
        if op == codec.OP_KEEPALIVE:
            self.keepalives.append((req.session, req.first_unacked))
            return codec.ST_OK, None
        if req.seq in s["cache"]:
            return s["cache"][req.seq]
        if req.seq < s["floor"]:
            return codec.ST_INVALID, f"sequence {req.seq} already acknowledged"
        kv = self.kv
        if op == codec.OP_PUT:
            kv[req.key] = req.value
            ans = (codec.ST_OK, None)
        elif op == codec.OP_DELETE:
            ans = (codec.ST_OK, kv.pop(req.key, None) is not None)
        else:  # CAS
            ok = kv.get(req.key) == req.expected
            if ok:
                kv[req.key] = req.value
            ans = (codec.ST_OK, ok)
        s["cache"][req.seq] = ans
        self.applied.append((req.session, req.seq, op, req.key))
        return ans

    def read(self, req: codec.Request) -> tuple:
        if req.op == codec.OP_GET:
            return codec.ST_OK, self.kv.get(req.key)
        pairs = sorted((k, v) for k, v in self.kv.items() if k.startswith(req.key))
        return codec.ST_OK, [[k, v] for k, v in pairs[:req.limit]]


class FakeNode:
    def __init__(self, cluster: FakeCluster, nid: int) -> None:
        self.cluster = cluster
        self.id = nid
        self.requests: list[codec.Request] = []
        self.plans: list[tuple] = []
        self.connections = 0
        self.bytes_in = 0
        self.limits = dict(DEFAULT_NODE_LIMITS)
        self.old = False                      # answer status without limits
        self.refuse_connections: str | None = None
        self.oversized: list[int] = []        # sizes of the frames refused as oversized
        self.member_asks: list[codec.Request] = []  # the OP_MEMBERS requests
        self.knows_members = True
        self.hint: FakeNode | None = None     # overrides the cluster's hint when set
        self.server = None
        self.addr = ""
        self._writers: set = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                 ssl=self.cluster.ssl)
        port = self.server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{port}"

    def plan(self, op, *actions) -> None:
        for a in actions:
            self.plans.append((op, a))

    def ops(self, op) -> list[codec.Request]:
        if op == codec.OP_MEMBERS:
            return list(self.member_asks)
        return [r for r in self.requests if r.op == op]

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.refuse_connections is not None:
            await self._go_away(reader, writer, codec.ST_BUSY, self.refuse_connections, 0)
            return
        max_frame = self.limits["max_frame_bytes"]
        dec = FrameDecoder(max_frame, skip_oversized=True)
        limits = codec.Limits(self.limits["max_key_bytes"], self.limits["max_value_bytes"],
                              self.limits["max_scan"])
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.bytes_in += len(data)
                for body in dec.feed(data):
                    if type(body) is not bytes:          # over the frame limit: refused
                        rid, _op = codec.request_head(body.head)
                        self.oversized.append(body.size)
                        writer.write(encode_frame(codec.encode_response(
                            rid, codec.ST_INVALID, f"frame of {body.size} bytes is over "
                            f"the limit of {max_frame}")))
                        continue
                    try:
                        req = codec.decode_request(body, limits, max_frame)
                    except codec.InvalidRequest as exc:
                        writer.write(encode_frame(codec.encode_response(
                            exc.req_id, codec.ST_INVALID, str(exc))))
                        continue
                    if req.op == codec.OP_MEMBERS:
                        self.member_asks.append(req)
                    else:
                        self.requests.append(req)
                    done = await self._handle(req, writer)
                    if done == "linger":            # a notice went out: read no more
                        while await reader.read(65536):
                            pass
                        writer.close()
                        return
                    if not done:
                        writer.transport.abort()
                        return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)

    async def _go_away(self, reader, writer, status: int, message: str, last: int) -> None:
        """A notice, then half-close and drop what arrives until the client closes (as the
        node does, so the notice is not lost to a reset)."""
        writer.write(encode_frame(codec.encode_notice(status, message, last)))
        writer.write_eof()
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def _take(self, op):
        for i, (pop, action) in enumerate(self.plans):
            if pop == op or (pop is None and op != codec.OP_MEMBERS):
                del self.plans[i]
                return action
        return "ok"

    async def _handle(self, req: codec.Request, writer):
        """Answer ``req``; False to drop the connection, "linger" after a notice."""
        action = self._take(req.op)
        st = self.cluster.state

        def send(status, *values):
            writer.write(encode_frame(codec.encode_response(req.req_id, status, *values)))

        if isinstance(action, tuple) and action[0] == "delay":
            asyncio.get_running_loop().call_later(
                action[1], lambda: send(*self._normal(req)) if not writer.is_closing()
                else None)
            return True
        if isinstance(action, tuple) and action[0] == "status":
            send(action[1], *action[2:])
            return True
        if isinstance(action, tuple) and action[0] == "notice":
            writer.write(encode_frame(codec.encode_notice(action[1], action[2],
                                                          req.req_id - 1)))
            writer.write_eof()
            return "linger"
        if action == "drop":
            return False
        if action == "silent":
            return True
        if action == "expire":
            st.sessions.pop(req.session, None)
            send(codec.ST_SESSION_EXPIRED, f"session {req.session} is unknown or expired")
            return True
        if action == "apply_vanish":
            self._apply(req)
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
            return False
        if action == "apply_uncommitted":
            self.cluster.member_change(req.member, commit=False)
            return True
        if action in ("apply_drop", "apply_silent", "apply_unknown"):
            self._apply(req)
            if action == "apply_unknown":
                send(codec.ST_UNKNOWN, "leadership lost: outcome unknown")
            return action != "apply_drop"
        send(*self._normal(req))
        return True

    def _apply(self, req: codec.Request) -> tuple:
        if req.op == codec.OP_MEMBER:
            return self.cluster.member_change(req.member)
        return self.cluster.state.write(req)

    def _normal(self, req: codec.Request) -> tuple:
        c = self.cluster
        if req.op == codec.OP_STATUS:
            if req.with_limits and self.old:
                return codec.ST_INVALID, "status takes 0 arguments, got 1"
            lead = c.leader.id if c.leader else 0
            role = "leader" if c.leader is self else "follower"
            fields = [self.id, role, c.term, lead, c.last_index, c.commit, c.commit, "python",
                      "asyncio", "0.1.0"]
            if req.with_limits:
                fields += [self.limits[k] for k in codec.STATUS_LIMIT_FIELDS]
            return codec.ST_OK, fields
        if req.op in (codec.OP_GET, codec.OP_SCAN):
            if req.stale or c.leader is self:
                return c.state.read(req)
            return self._not_leader()
        if req.op in (codec.OP_MEMBERS, codec.OP_MEMBER) and not self.knows_members:
            return codec.ST_INVALID, f"unknown operation {req.op}"
        if c.leader is not self:
            return self._not_leader()
        if req.op == codec.OP_MEMBERS:
            return codec.ST_OK, c.member_listing()
        if req.op == codec.OP_MEMBER:
            return c.member_change(req.member)
        return c.state.write(req)

    def _not_leader(self) -> tuple:
        hint = self.hint or self.cluster.hint
        if hint is None:
            return codec.ST_NOT_LEADER, 0, None
        return codec.ST_NOT_LEADER, hint.id, hint.addr

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self.server.wait_closed()


class FakeCluster:
    """``size`` fake nodes; node 1 leads and every follower hints at it unless changed."""

    def __init__(self, size: int = 3, ssl=None) -> None:
        self.ssl = ssl                          # an ssl.SSLContext: the nodes serve TLS
        self.state = FakeState()
        self.nodes = [FakeNode(self, i + 1) for i in range(size)]
        self.leader: FakeNode | None = self.nodes[0]
        self.hint: FakeNode | None = self.nodes[0]
        self.term = 1
        self.last_index = 10
        self.commit = 10
        self.members: dict[int, list] = {}      # id -> [role, raft, client]
        self.removed: set[int] = set()
        self.match: dict[int, int] = {}         # a member's match, when not last_index
        self.lagging: set[int] = set()          # learners whose promotion is refused BUSY
        self.changes: list[tuple] = []          # (index, kind, id, raft, client) made

    async def __aenter__(self) -> FakeCluster:
        for n in self.nodes:
            await n.start()
            self.members[n.id] = ["voter", fake_raft(n.id), n.addr]
        return self

    async def add_node(self) -> FakeNode:
        """Start one more node (id: the next one); it is not a member until added."""
        n = FakeNode(self, len(self.nodes) + 1)
        self.nodes.append(n)
        await n.start()
        return n

    def member_listing(self) -> list:
        """The OP_MEMBERS answer: ``[[id, role, raft, client, is_leader, match], ...]``."""
        lead = self.leader.id if self.leader else 0
        return [[nid, role, raft, client, nid == lead, self.match.get(nid, self.last_index)]
                for nid, (role, raft, client) in sorted(self.members.items())]

    def member_change(self, member: tuple, commit: bool = True) -> tuple:
        """Make an OP_MEMBER change ``(kind, id, raft, client)`` as a node does (module
        docstring): ``(status, *values)``."""
        kind, nid, raft, client = member
        if self.commit < self.last_index:
            return codec.ST_BUSY, "another member change is in flight"
        m = self.members
        if kind == codec.MEMBER_ADD_LEARNER:
            if nid in self.removed:
                return codec.ST_INVALID, f"node {nid} was removed: its id is never reused"
            if nid in m:
                return codec.ST_INVALID, f"node {nid} is already a member"
            for other, (_role, r, c) in m.items():
                if raft in (r, c) or client in (r, c):
                    return codec.ST_INVALID, f"an address is already used by node {other}"
            m[nid] = ["learner", raft, client]
        elif nid not in m:
            return codec.ST_INVALID, f"node {nid} is not a member of the cluster"
        elif kind == codec.MEMBER_PROMOTE:
            if m[nid][0] == "voter":
                return codec.ST_INVALID, f"node {nid} is already a voter"
            if nid in self.lagging:
                return codec.ST_BUSY, f"learner {nid} is not caught up with the leader"
            m[nid][0] = "voter"
        else:
            if m[nid][0] == "voter" and sum(v[0] == "voter" for v in m.values()) == 1:
                return codec.ST_INVALID, "cannot remove the last voter"
            del m[nid]
            self.removed.add(nid)
        self.last_index += 1
        if commit:
            self.commit = self.last_index
        self.changes.append((self.last_index, kind, nid, raft, client))
        return codec.ST_OK, self.last_index

    def commit_all(self) -> None:
        self.commit = self.last_index

    async def __aexit__(self, *exc) -> None:
        for n in self.nodes:
            await n.close()

    def node(self, i: int) -> FakeNode:
        return self.nodes[i - 1]

    def endpoints(self) -> list[str]:
        return [n.addr for n in self.nodes]

    def set_leader(self, i: int | None, hint: int | None = -1) -> None:
        self.leader = self.node(i) if i else None
        h = i if hint == -1 else hint
        self.hint = self.node(h) if h else None

    def requests(self, op=None) -> list[codec.Request]:
        out = []
        for n in self.nodes:
            if op == codec.OP_MEMBERS:
                out.extend(n.member_asks)
            else:
                out.extend(r for r in n.requests if op is None or r.op == op)
        return out


def fake_raft(nid: int) -> str:
    """The made-up peer address of fake node ``nid`` (nothing listens there)."""
    return f"raft{nid}.fake:7100"
