"""The fastraft client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Place in the architecture: the client layer (docs/architecture.md, "Layers"). Pure Python: it
uses ``codec`` for msgpack, ``core`` for the frame codec (the pure-Python twin when the
extension is absent), ``errors`` and ``config``; it never imports the server. Layout::

    _protocol.py   request frames, answer validation, the status table
    _connection.py NodeConnection: one pipelined connection to one node, per-request timeouts
    _attempts.py   the verdict on each failed attempt (the NotApplied / OutcomeUnknown split)
                   and the error of a call that gives up
    _session.py    ClientSession: session id, sequence numbers, first_unacked
    _members.py    Member, member changes settled when their outcome is unknown, the
                   endpoints learned from the member list
    retry.py       RetryPolicy and its backoff (replaceable)
    aio.py         AsyncClient: node choice, leader discovery, the call loop, limits, session
    _coord.py      AsyncClient's coordination half: revisions, leases, watch, lock, election
    _watch.py      Watch: a prefix's changes, resumed across nodes without gap or repeat
    _lock.py       Lock and Election: recipes on leases, revision cas and watches
    sync.py        Client: AsyncClient on a private loop in a background thread
    cli_cmds.py    fastraft put/get/del/cas/scan/status/bench
    cli_coord.py   fastraft watch/lease/lock
    cli_members.py fastraft member list/add/promote/remove
    bench.py       the load generator behind ``fastraft bench``
"""

from ._members import Member
from .aio import AsyncClient
from .retry import ExponentialBackoff, NoBackoff, RetryPolicy
from .sync import Client

__all__ = ["Client", "AsyncClient", "Member", "RetryPolicy", "ExponentialBackoff", "NoBackoff"]
