"""Membership, the client's side: the member list, member changes whose outcome is settled by
asking the cluster, and the endpoint list learned from the members.

Place in the architecture: the client layer, beside ``aio``. ``AsyncClient``'s membership
methods call ``change``, which drives the client's own call loop and connections
(``AsyncClient._call``, ``_connect``, ``_ask_members``); the rest (``Member``,
``parse_members``, ``merge_endpoints``, ``is_made``, the argument checks) is pure.

A member change (OP_MEMBER, codec/) is sent to the leader, following NOT_LEADER redirects like
any leader-only call (nothing was done). A refusal, BUSY ("learner not caught up", "another
change in flight") or INVALID, raises Busy / InvalidRequest at once: nothing changed, and the
call loop does not retry it (``_attempts``, kind MEMBER). A change is not idempotent (sent
twice it is refused: "already a member"), so an attempt whose outcome is unknown (timeout,
lost connection, ST_UNKNOWN) is never simply re-sent; ``change`` settles it first:

    ask a leader for the members (``settle``): is the wanted state there (the learner with
        those addresses / the id a voter / the id absent)?
    made     -> success (the change's index is then not known: None)
    not made -> try the change again (after a backoff); its refusal now may mean that the
                change was made and undone since: InvalidRequest becomes the OutcomeUnknown
                error, Busy is waited out
    no answer before the deadline -> the OutcomeUnknown error of the attempt

A leader's member list shows its configuration as appended to its log (a configuration takes
effect when appended), which a newly elected leader may not have committed yet. So ``settle``
trusts an answer only from a leader that stays the leader of the same term while its commit
index reaches the last index it had after answering (``_settle_at``): then everything the list
was built from is committed, and an entry it lacks can never commit.

Learning the membership (``merge_endpoints``): a member list adds the members' client addresses
the client did not know and drops the endpoints that are no longer members, but only when
every member has a usable client address (not empty, not a wildcard such as 0.0.0.0):
otherwise it only adds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, NamedTuple

from ..codec import (MAX_ADDRESS, MEMBER_ADD_LEARNER, MEMBER_PROMOTE, OP_MEMBER, OP_MEMBERS,
                     OP_STATUS, ST_OK)
from ..config import format_address, parse_address
from ..errors import (
    Busy,
    FastraftError,
    InvalidRequest,
    NotLeader,
    OutcomeUnknown,
    RemoteProtocolError,
)
from . import _protocol as P
from ._attempts import MEMBER

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["Member", "ROLES", "parse_members", "check_index", "check_node_id",
           "check_address", "merge_endpoints", "is_made", "describe", "change", "settle"]

log = logging.getLogger("fastraft.client")

ROLES = ("voter", "learner")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*"})


class Member(NamedTuple):
    """One member of the cluster as its leader sees it (``AsyncClient.members``)."""

    id: int
    role: str           #: "voter" or "learner"
    raft: str           #: peer address "host:port" ("" when the leader does not know it)
    client: str         #: client address "host:port" ("" when the leader does not know it)
    is_leader: bool
    match: int          #: the highest log index the leader knows the member holds


# -- answers and arguments ----------------------------------------------------------------------

def parse_members(values: list) -> list[Member]:
    """An OP_MEMBERS answer's values as Members (fields past the sixth are ignored: a newer
    node); RemoteProtocolError when malformed."""
    if len(values) != 1 or type(values[0]) is not list:
        raise RemoteProtocolError(f"malformed members answer: {values!r:.100}")
    out = []
    for row in values[0]:
        if (type(row) is not list or len(row) < 6 or type(row[0]) is not int or row[0] < 1
                or row[1] not in ROLES or type(row[2]) is not str or type(row[3]) is not str
                or type(row[4]) is not bool or type(row[5]) is not int or row[5] < 0):
            raise RemoteProtocolError(f"malformed member in a members answer: {row!r:.100}")
        out.append(Member(*row[:6]))
    return out


def check_index(values: list) -> int:
    """An OP_MEMBER answer's values: the change's log index."""
    if len(values) != 1 or type(values[0]) is not int or values[0] < 1:
        raise RemoteProtocolError(f"malformed member change answer: {values!r:.100}")
    return values[0]


def check_node_id(node_id) -> int:
    """A node id argument: an int >= 1 (TypeError / ValueError otherwise)."""
    if type(node_id) is not int:
        raise TypeError(f"a node id is an int, not {type(node_id).__name__}")
    if not 1 <= node_id < 1 << 64:
        raise ValueError(f"node ids are integers >= 1, not {node_id}")
    return node_id


def check_address(addr, what: str) -> str:
    """A ``"host:port"`` argument (or a ``(host, port)`` tuple); InvalidRequest (nothing sent)
    when it is not one."""
    if isinstance(addr, tuple):
        addr = format_address(addr)
    if not isinstance(addr, str):
        raise TypeError(f"the {what} address is a \"host:port\" string, not "
                        f"{type(addr).__name__}")
    try:
        parse_address(addr)
    except ValueError as exc:
        raise InvalidRequest(f"{what} address: {exc}; refused by the client, nothing sent"
                             ) from None
    if len(addr) > MAX_ADDRESS:
        raise InvalidRequest(f"{what} address is longer than {MAX_ADDRESS} characters; "
                             f"refused by the client, nothing sent")
    return addr


def describe(kind: int, node_id: int) -> str:
    """The change in words: "add node 4 as a learner"."""
    if kind == MEMBER_ADD_LEARNER:
        return f"add node {node_id} as a learner"
    if kind == MEMBER_PROMOTE:
        return f"promote node {node_id} to voter"
    return f"remove node {node_id}"


def is_made(kind: int, node_id: int, raft: str | None, client: str | None,
            members: list[Member]) -> bool:
    """Does ``members`` show the change made: the node present with these addresses (in any
    role: it may have been promoted since), a voter, or absent?"""
    m = next((m for m in members if m.id == node_id), None)
    if kind == MEMBER_ADD_LEARNER:
        return m is not None and m.raft == raft and m.client == client
    if kind == MEMBER_PROMOTE:
        return m is not None and m.role == "voter"
    return m is None


def _usable(addr: str) -> bool:
    """Can a client connect to this advertised client address?"""
    try:
        host, _port = parse_address(addr)
    except ValueError:
        return False
    return host not in _WILDCARD_HOSTS


def merge_endpoints(current: list[str], members: list[Member]) -> list[str] | None:
    """The endpoint list after a member list (module docstring): the current endpoints that
    are still members, in their order, then the members' client addresses not among them;
    None when nothing changes. Nothing is dropped unless every member has a usable client
    address, and the list never becomes empty."""
    usable: list[str] = []
    complete = True
    for m in members:
        if m.client and _usable(m.client):
            if m.client not in usable:
                usable.append(m.client)
        else:
            complete = False
    if not usable:
        return None
    keep = [a for a in current if a in usable] if complete else list(current)
    new = keep + [a for a in usable if a not in keep]
    return None if new == current else new


# -- a change, settled when its outcome is unknown ----------------------------------------------

async def change(c: AsyncClient, kind: int, node_id: int, raft: str | None,
                 client: str | None, deadline: float | None) -> int | None:
    """Make one member change through client ``c`` (module docstring): its log index, or None
    when an attempt's outcome was unknown and the cluster then showed the change made. Raises
    NotLeader / Busy / InvalidRequest (not made), or an OutcomeUnknown error when the deadline
    passed before the cluster told."""
    c._check_open()
    loop = c._loop
    expires_at = loop.time() + (c.deadline if deadline is None else deadline)
    args = (kind, node_id, raft, client)
    what = describe(kind, node_id)
    unknown: OutcomeUnknown | None = None
    failures = 0
    while True:
        refused = None
        try:
            return check_index(await c._call(MEMBER, OP_MEMBER, args, expires_at=expires_at))
        except OutcomeUnknown as exc:
            if unknown is None:
                log.info("%s: outcome unknown (%s); asking the cluster", what, exc)
            unknown = exc
        except (NotLeader, Busy, InvalidRequest) as exc:
            if unknown is None:
                raise
            refused = exc
        except FastraftError as exc:            # the client was closed, a malformed answer
            if unknown is None:
                raise
            raise type(unknown)(f"outcome unknown: {what}: {unknown}; then: {exc}") from None
        made = await settle(c, kind, node_id, raft, client, expires_at)
        if made:
            log.info("%s: done (the cluster shows it)", what)
            return None
        if made is None:
            raise type(unknown)(
                f"outcome unknown: {what}: {unknown}; the cluster did not tell whether it "
                f"was done before the deadline")
        if isinstance(refused, InvalidRequest):
            raise type(unknown)(
                f"outcome unknown: {what}: an earlier attempt ({unknown}) may have been done "
                f"and undone since; the retry was refused: {refused}")
        failures += 1
        delay = c.retry.delay(failures)
        if loop.time() + delay >= expires_at:
            raise type(unknown)(f"outcome unknown: {what}: {unknown}; not done yet when the "
                                f"deadline passed" + (f" ({refused})" if refused else ""))
        await asyncio.sleep(delay)


async def settle(c: AsyncClient, kind: int, node_id: int, raft: str | None,
                 client: str | None, expires_at: float) -> bool | None:
    """Is the change made, as a committed member list of the leader says? None when the
    cluster did not tell by loop time ``expires_at``."""
    loop = c._loop
    failures = 0
    while loop.time() < expires_at:
        try:
            _members, addr = await c._ask_members(expires_at)
        except FastraftError as exc:
            log.debug("member list: %s", exc)
        else:
            got = None if addr is None else \
                await _settle_at(c, addr, kind, node_id, raft, client, expires_at)
            if got is not None:
                return got
        failures += 1
        delay = c.retry.delay(failures)
        if loop.time() + delay >= expires_at:
            break
        await asyncio.sleep(delay)
    return None


async def _settle_at(c: AsyncClient, addr: str, kind: int, node_id: int, raft: str | None,
                     client: str | None, expires_at: float) -> bool | None:
    """``is_made`` by the member list of the leader at ``addr``, once it is known committed:
    that node answers as the leader before the list and stays the leader of the same term
    until its commit index reaches its last index after the list (module docstring). None
    when it does not (lost its leadership, no answer, the deadline)."""
    loop = c._loop
    st0 = await _status(c, addr, expires_at)
    if st0 is None or st0["role"] != "leader":
        return None
    got = await _ask(c, addr, OP_MEMBERS, (), expires_at)
    if got is None:
        return None
    try:
        made = is_made(kind, node_id, raft, client, parse_members(got))
    except RemoteProtocolError as exc:
        log.warning("member list from %s: %s", addr, exc)
        return None
    mark = None
    delay = 0.005
    while True:
        st = await _status(c, addr, expires_at)
        if st is None or st["role"] != "leader" or st["term"] != st0["term"]:
            return None
        if mark is None:
            mark = st["last_index"]
        if st["commit"] >= mark:
            return made
        if loop.time() + delay >= expires_at:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def _ask(c: AsyncClient, addr: str, op: int, args: tuple,
               expires_at: float) -> list | None:
    """The OK values of one request to ``addr``; None when it did not answer OK in time."""
    loop = c._loop
    conn = await c._connect(addr)
    if not conn.ready:
        return None
    timeout = min(c.timeout, expires_at - loop.time())
    if timeout <= 0:
        return None
    status, values = await conn.request(op, args, timeout)
    return values if status == ST_OK else None


async def _status(c: AsyncClient, addr: str, expires_at: float) -> dict | None:
    values = await _ask(c, addr, OP_STATUS, (), expires_at)
    if values is None:
        return None
    try:
        st = P.status_dict(values)
    except RemoteProtocolError as exc:
        log.warning("status of %s: %s", addr, exc)
        return None
    for k in ("term", "last_index", "commit"):
        if type(st[k]) is not int:
            log.warning("status of %s: %s is not an integer", addr, k)
            return None
    return st

