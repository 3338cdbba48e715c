"""Membership at runtime: who the members are, where they listen, and the member requests.

Place in the architecture: part of the runtime (``fastraft.server``), beside ``requests``. The
engine (``fastraft.raft``) knows the configuration as node ids only; this module keeps what the
runtime needs besides: every member's peer and client addresses, and the ids removed for ever.
Both are a pure function of the engine's state: the snapshot's meta ``context`` (the member
book as of the snapshot, ``codec.encode_member_book``) folded with the conf-change entries the
log holds after it (each adding change carries ``[raft, client]``). So the membership is as
durable as the log and the snapshots, travels with them, and is recomputed (``refresh``)
whenever the engine's configuration changes: when a change is appended, committed, rolled
back or replaced by a snapshot.

Addresses the log does not know (a data directory from before the membership was kept in the
log; a joining node that has not yet received the entries naming its peers) fall back on
``hints``: the config file's nodes, or the member list a joining node read from the cluster.

``MemberRequests`` serves OP_MEMBERS and OP_MEMBER (``codec`` docstring) on the leader: it
checks a change (unknown or duplicate id, a removed id reused, an address in use), proposes
it (``RawNode.propose_conf_change``), and answers once the change is committed and applied and
the joint configuration it began, if any, is left; ST_UNKNOWN if leadership is lost first.
"""

from __future__ import annotations

import logging
from typing import Callable

from .. import codec
from ..config import format_address, parse_address
from ..errors import Busy, ConfigError, LogError, NotLeader, RemoteProtocolError
from ..raft import LEADER
from ..raft.confchange import (ADD_LEARNER, ADD_VOTER, REMOVE_NODE, BadConfChange, Change,
                               ConfChange, decode_conf_change)
from ..raft.messages import SnapshotMeta

__all__ = ["fold_book", "Members", "MemberRequests", "REMOVED_PREFIX"]

log = logging.getLogger("fastraft.node")

#: How a peer's refusal says the dialler was removed from the cluster (``peers``).
REMOVED_PREFIX = "removed: "


def _fold(context: bytes, changes, upto: int | None) -> tuple[dict, dict]:
    """``(addrs, removed_at)``: every address the book ``context`` and the conf-change
    entries ``changes`` (``(index, term, payload)``, those the engine accepted, up to index
    ``upto`` when given) name, removed nodes' included, and the index at which each removed
    id was removed (0: before the snapshot)."""
    try:
        addrs, removed = codec.decode_member_book(context)
    except RemoteProtocolError as exc:
        log.error("the snapshot's member book is unreadable (%s): addresses come from the "
                  "log and the hints only", exc)
        addrs, removed = {}, frozenset()
    removed_at = dict.fromkeys(removed, 0)
    for index, _term, payload in changes:
        if upto is not None and index > upto:
            break
        try:
            cc = decode_conf_change(payload)
        except BadConfChange:
            continue
        for kind, nid, ctx in cc.changes:
            if kind == REMOVE_NODE:
                removed_at[nid] = index
                continue
            try:
                pair = codec.decode_member_context(ctx)
            except RemoteProtocolError as exc:
                log.error("conf change at %d: unreadable addresses of node %d: %s", index,
                          nid, exc)
                pair = None
            if pair is not None:
                addrs[nid] = pair
    return addrs, removed_at


def fold_book(context: bytes, changes, upto: int | None = None) -> tuple[dict, set]:
    """``(addrs, removed)``: the member book ``context`` with the conf-change entries
    ``changes`` (``(index, term, payload)``, those the engine accepted) applied in log order,
    up to index ``upto`` when given. ``addrs`` maps id -> (raft, client) strings of the
    members not removed."""
    every, removed_at = _fold(context, changes, upto)
    return {nid: a for nid, a in every.items() if nid not in removed_at}, set(removed_at)


class Members:
    """The membership as the runtime sees it (module docstring). ``hints`` maps id ->
    (raft, client) for addresses the log may not know."""

    def __init__(self, node_id: int, hints: dict | None = None) -> None:
        self.id = node_id
        self.hints = dict(hints or {})
        self.learned: dict = {}             # id -> (raft, "") told by a peer's hello
        self.departing: dict = {}           # id -> (raft, client) of nodes being removed
        self.addrs: dict = {}               # id -> (raft, client), from the log
        self.removed: set = set()           # ids removed by an appended change
        self.removed_committed: set = set()  # ... by a committed one, and out of the
                                            # committed configuration
        self.conf = None                    # the engine's ConfState at the last refresh
        self.version = -1                   # ... and its conf_version then
        self.last_conf_index = 0            # index of the newest conf-change entry
        self.seen_committed = 0             # committed index up to it at the last refresh
        self.client_addrs: dict = {}        # id -> client "host:port" (NotLeader hints);
                                            # updated in place

    def refresh(self, raw) -> None:
        """Recompute from the engine (after its configuration changed)."""
        meta, changes = raw.conf_entries()
        every, removed_at = _fold(meta.context, changes, None)
        self.addrs = {nid: a for nid, a in every.items() if nid not in removed_at}
        self.removed = set(removed_at)
        # Gone for good: removed by a committed change and out of the committed configuration
        # (a removed voter stays in the outgoing half of the joint configuration, and
        # counts there, until "leave joint" commits).
        committed = raw.committed
        cs = raw.conf_state_at(committed)
        in_committed = cs.voters | cs.outgoing | cs.learners
        self.removed_committed = {nid for nid, at in removed_at.items()
                                  if at <= committed and nid not in in_committed}
        # A node being removed (a leader among them) is still spoken to until its removal
        # is committed and the joint configuration left: keep its address until then.
        self.departing = {nid: every[nid] for nid in removed_at
                          if nid not in self.removed_committed and nid in every}
        self.conf = raw.conf_state()
        self.version = raw.conf_version
        self.last_conf_index = changes[-1][0] if changes else meta.index
        cl = self.client_addrs
        cl.clear()
        for nid, (_raft, client) in {**self.hints, **self.addrs}.items():
            cl[nid] = client

    def ids(self) -> frozenset:
        """Every member of the configuration in effect (voters, outgoing, learners)."""
        c = self.conf
        return c.voters | c.outgoing | c.learners

    def address(self, nid: int) -> tuple[str, str] | None:
        """``(raft, client)`` of node ``nid``: from the log (a node being removed too,
        until it is gone), else the hints, else what its hello said (client address
        unknown then: "")."""
        a = self.addrs.get(nid)
        if a is None:
            a = self.departing.get(nid)
            if a is None:
                a = self.hints.get(nid)
                if a is None:
                    a = self.learned.get(nid)
        return a

    def dial_address(self, nid: int) -> tuple[str, int] | None:
        """Where to dial node ``nid`` (``address``'s peer address), or None."""
        a = self.address(nid)
        if a is None or nid in self.removed_committed:
            return None
        try:
            return parse_address(a[0])
        except ConfigError:
            return None

    def peer_addrs(self) -> dict:
        """id -> (host, port) of every other member this node can dial."""
        out = {}
        for nid in self.ids():
            if nid == self.id:
                continue
            a = self.dial_address(nid)
            if a is None:
                log.warning("no peer address known for member %d", nid)
                continue
            out[nid] = a
        return out

    def meta_at(self, raw, index: int, term: int) -> SnapshotMeta:
        """The meta of a snapshot at ``index`` (of ``term``): the engine's configuration
        there and the member book as of ``index``."""
        cs = raw.conf_state_at(index)
        meta, changes = raw.conf_entries()
        addrs, removed = fold_book(meta.context, changes, index)
        return SnapshotMeta(index, term, cs.voters, cs.outgoing, cs.learners,
                            codec.encode_member_book(addrs, removed))

    def refused(self, nid: int, addr: str = "") -> str | None:
        """Why a peer connection from ``nid`` (listening at ``addr``, "" when not said) is
        refused, or None. Ids this node does not know are welcome (a member added by a
        change it has not received yet may lead already); their address is remembered as a
        last resort (``address``)."""
        if nid == self.id:
            return f"node {nid} is this node"
        if nid in self.removed_committed:
            return f"{REMOVED_PREFIX}node {nid} was removed from the cluster"
        if addr and self.address(nid) is None:
            try:
                parse_address(addr)
            except ConfigError:
                return f"node {nid} gave an invalid peer address {addr!r}"
            self.learned[nid] = (addr, "")
        return None

    def self_removed(self) -> bool:
        """Whether a committed configuration change removed this node."""
        return self.id in self.removed_committed

    def listing(self, raw) -> list:
        """The OP_MEMBERS answer (leader): ``[id, role, raft, client, is_leader, match]``."""
        st = raw.status()
        voters = set(st.voters) | set(st.outgoing)
        out = []
        for nid in sorted(voters | set(st.learners)):
            a = self.address(nid) or ("", "")
            if nid == self.id:
                match = st.last_index
            else:
                pr = st.progress.get(nid)
                match = pr.match if pr is not None else 0
            out.append([nid, "voter" if nid in voters else "learner", a[0], a[1],
                        nid == st.lead, match])
        return out

    def compare_config(self, cfg) -> None:
        """Log where the config file disagrees with the membership the log holds (the log
        is obeyed; the file only bootstraps a new cluster)."""
        if not self.addrs:
            return
        listed = {n.id: (format_address(n.raft), n.client_addr) for n in cfg.nodes}
        mine = {nid: self.address(nid) for nid in self.ids()}
        if listed != mine:
            log.warning("the config file lists nodes %s; the cluster's membership (from the "
                        "log) is %s: the log is obeyed (the file only bootstraps a new "
                        "cluster; change members with `fastraft member`)",
                        _show(listed), _show(mine))


def _show(members: dict) -> str:
    return ", ".join(f"{nid}@{a[0] if a else '?'}" for nid, a in sorted(members.items()))


_KIND = {codec.MEMBER_PROMOTE: ADD_VOTER, codec.MEMBER_ADD_LEARNER: ADD_LEARNER,
         codec.MEMBER_REMOVE: REMOVE_NODE}


class MemberRequests:
    """OP_MEMBERS and OP_MEMBER on the leader (module docstring). ``not_leader(conn,
    req_id)`` answers a redirect; ``kick`` schedules the node's next pass."""

    def __init__(self, raw, members: Members, *, not_leader: Callable, kick: Callable) -> None:
        self.raw = raw
        self.members = members
        self._not_leader = not_leader
        self._kick = kick
        self.pending: dict = {}         # index -> (term, conn, req_id)

    def on_request(self, conn, req) -> None:
        raw = self.raw
        if raw.role != LEADER:
            self._not_leader(conn, req.req_id)
            return
        if req.op == codec.OP_MEMBERS:
            conn.respond(req.req_id, codec.ST_OK, self.members.listing(raw))
            return
        try:
            cc = self._change(req.member)
            index, term = raw.propose_conf_change(cc)
        except NotLeader:
            self._not_leader(conn, req.req_id)
            return
        except Busy as exc:
            conn.respond(req.req_id, codec.ST_BUSY, str(exc))
            return
        except BadConfChange as exc:
            conn.respond(req.req_id, codec.ST_INVALID, str(exc))
            return
        kind, nid = req.member[0], req.member[1]
        log.info("member change proposed at %d: %s node %d", index,
                 codec.MEMBER_KIND_NAMES[kind], nid)
        self.pending[index] = (term, conn, req.req_id)
        self._kick()

    def _change(self, member: tuple) -> ConfChange:
        """The conf change a request asks for; BadConfChange when it cannot be made."""
        kind, nid, raft, client = member
        m = self.members
        ids = m.ids()
        if kind == codec.MEMBER_ADD_LEARNER:
            if nid in m.removed:
                raise BadConfChange(f"node {nid} was removed from the cluster and its id is "
                                    "never reused: add the node under a new id")
            if nid in ids:
                raise BadConfChange(f"node {nid} is already a member")
            for what, a in (("raft", raft), ("client", client)):
                try:
                    parse_address(a)
                except ConfigError as exc:
                    raise BadConfChange(f"{what} address: {exc}") from None
            for other in ids:
                oa = m.address(other)
                if oa is None:
                    continue
                for a in (raft, client):
                    if a in oa:
                        raise BadConfChange(f"address {a} is already used by node {other}")
            if raft == client:
                raise BadConfChange(f"the raft and client addresses are the same ({raft})")
            ctx = codec.encode_member_context(raft, client)
            return ConfChange((Change(ADD_LEARNER, nid, ctx),))
        if nid not in ids:
            raise BadConfChange(f"node {nid} is not a member of the cluster")
        if kind == codec.MEMBER_PROMOTE:
            if nid not in m.conf.learners:
                raise BadConfChange(f"node {nid} is already a voter")
            self._check_ready(nid)
        return ConfChange((Change(_KIND[kind], nid),))

    def _check_ready(self, nid: int) -> None:
        """Busy unless learner ``nid`` has acknowledged the log at least once (the engine
        then refuses one lagging more than ``promote_lag`` entries): a learner never heard
        from is not promoted, however short the log."""
        st = self.raw.status()
        pr = st.progress.get(nid)
        if pr is None or pr.match == 0:
            raise Busy(f"learner {nid} has not caught up: it has acknowledged nothing yet "
                       f"(the leader's last index is {st.last_index}); try again once it "
                       "runs and `fastraft member list` shows its match")

    def progress(self) -> None:
        """After a Ready cycle: answer the changes now committed and applied, once no change
        is in flight (the joint configuration a change began is left and that committed)."""
        if not self.pending:
            return
        raw = self.raw
        if raw.conf_state().outgoing or raw.committed < self.members.last_conf_index:
            return
        applied = raw.applied
        for index in sorted(self.pending):
            if index > applied:
                break
            self._answer(index, *self.pending.pop(index))

    def _answer(self, index: int, term: int, conn, req_id: int) -> None:
        try:
            same = self.raw.term_at(index) == term
        except LogError:        # compacted: it was committed, so it is the entry we proposed
            same = True
        if same:
            conn.respond(req_id, codec.ST_OK, index)
        else:
            conn.respond(req_id, codec.ST_UNKNOWN,
                         "the change was overwritten by another leader's entry")

    def abandon(self) -> None:
        """Leadership lost (a removed leader steps down once its removal commits): a change
        already committed is done; the others may or may not commit (outcome unknown)."""
        pending, self.pending = self.pending, {}
        committed = self.raw.committed
        for index, (term, conn, req_id) in sorted(pending.items()):
            if index <= committed:
                self._answer(index, term, conn, req_id)
            else:
                conn.respond(req_id, codec.ST_UNKNOWN,
                             "leadership lost before the member change committed: outcome "
                             "unknown")
