"""The verdict on each failed attempt of a call, and the error a call that gives up raises.

Place in the architecture: the client layer, used by ``aio``'s call loop (``AsyncClient._call``)
for the attempts that did not answer OK. Pure: no IO, no event loop, no client state (the loop
keeps the believed leader itself and tells ``judge`` whether a leader hint is worth
following). This is where the status table of ``_protocol`` (its docstring) is applied:

    NOT_LEADER + hint -> follow the hint at once (no backoff), but not around a circle of
                         stale hints (more hops than endpoints: back off)
    NOT_LEADER, BUSY  -> back off, try again (NotLeader / Busy when the attempts run out)
    UNKNOWN, timeout, lost connection -> the write MAY have been applied: try again with the
                         same session and seq (the node answers a duplicate from its cache);
                         the first lost connection of a call is retried at once (elsewhere:
                         the node may have died), later ones after a backoff
    SILENT               (the client gave up on a node that answered nothing while another
                         leads: ``aio`` hedging) -> as a timeout, retried at once at the
                         new leader
    SESSION_EXPIRED   -> never sent before with a chance of applying: the write moves to a new
                         session (new seq); otherwise Timeout (outcome unknown)
    INVALID           -> InvalidRequest (or the OutcomeUnknown kind of an earlier attempt that
                         may have applied)
    NO_LEASE          -> LeaseNotFound (the state machine's one answer to that write, cached
                         in its session: a retry gets the same one; nothing was written)
    COMPACTED         -> Compacted(oldest) (a watch's start revision, never a write)
    ERROR             -> OutcomeUnknown for a write, RemoteProtocolError for a read
    TLS_REFUSED, or a handshake that failed on connecting (the node's certificate not
                         trusted) -> TLSError at once, not retried (or the OutcomeUnknown
                         kind of an earlier attempt that may have applied: ``tls_failure``)

A membership change (kind MEMBER, ``_members``) is never re-sent by the call loop: only a
NOT_LEADER (nothing done) is retried; BUSY raises Busy and INVALID InvalidRequest at once (the
user must see "learner not caught up" promptly), and an outcome-unknown failure (timeout, lost
connection, UNKNOWN, ERROR) raises its OutcomeUnknown error at once, so that ``_members`` can
ask the cluster whether the change was made before trying it again.

When the attempts or the time run out (``final_error``), a write that any attempt may have
applied raises the ``OutcomeUnknown`` kind of that attempt (Timeout, ConnectionLost or
LeadershipLost), never a ``NotApplied`` one: a later NotLeader or Busy answer does not undo an
earlier ambiguous attempt (its entry may still be in the log and commit). Only writes no
attempt could have applied raise ``NotLeader`` / ``Busy`` / ``InvalidRequest``.

A call that ends without a leader raises one NotLeader that says what each node's last attempt
saw (``no_leader``): the nodes that answered and what they said, the ones that could not be
reached and why (``answered`` / ``unreachable``); "no node reachable at ..." when none
answered. A call gives up early (``hopeless``) when every endpoint refused the connection for
REFUSED_ROUNDS full rounds spanning REFUSED_FOR seconds (nothing listens there; a starting
cluster listens before it has elected).
"""

from __future__ import annotations

from ..codec import (ST_BUSY, ST_COMPACTED, ST_INVALID, ST_NO_LEASE, ST_NOT_LEADER,
                     ST_SESSION_EXPIRED, ST_UNKNOWN)
from ..errors import (
    Busy,
    Compacted,
    ConnectionLost,
    FastraftError,
    InvalidRequest,
    LeadershipLost,
    LeaseNotFound,
    LocalProtocolError,
    NotLeader,
    OutcomeUnknown,
    RemoteProtocolError,
    SessionExpired,
    Timeout,
    TLSError,
)
from . import _protocol as P
from ._protocol import LOST, SILENT, TIMED_OUT, TLS_REFUSED, TOO_LARGE

__all__ = ["Attempts", "no_leader", "READ", "STALE", "WRITE", "PLAIN", "MEMBER", "NEW_SESSION",
           "REFUSED_ROUNDS", "REFUSED_FOR"]

# Kinds of call (how the attempts are sent and what a failure means).
READ = 0        # linearizable read: on the leader, idempotent
STALE = 1       # stale read: any node, idempotent
WRITE = 2       # session write: (session, seq, first_unacked) prepended to the arguments
PLAIN = 3       # a write without a seq (register, keepalive): args sent as they are
MEMBER = 4      # a membership change: leader only, sent as is, never re-sent (_members)

#: ``Attempts.judge``'s answer when the session expired and the write must move to a new one.
NEW_SESSION = None

#: A call gives up when every endpoint refused the connection on this many consecutive full
#: rounds of attempts spanning at least REFUSED_FOR seconds (the deadline still bounds it).
REFUSED_ROUNDS = 3
REFUSED_FOR = 2.0


class Attempts:
    """What the failed attempts of one call left behind (made at the first failure, so a
    call that succeeds at once allocates nothing):

    ``last``     the error of the last attempt (the call raises it, or a summary of it)
    ``unknown``  the OutcomeUnknown class of the last attempt that may have applied a write
    ``said``     address -> what its last attempt saw (``_what_it_said``), for no_leader
    ``hops``     leader hints followed since the last backoff (the call loop resets it)
    ``failures`` backoffs so far (the retry policy's delay grows with it)
    ``losses``   lost connections so far (only the first is retried without a backoff)
    refusals     a streak of consecutive refused connections (any other outcome ends it): the
                 call is hopeless once every endpoint refused for REFUSED_ROUNDS full rounds
                 spanning REFUSED_FOR seconds
    """

    __slots__ = ("endpoints", "last", "unknown", "said", "hops", "failures", "losses",
                 "_start", "_count", "_addrs")

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.last: FastraftError | None = None
        self.unknown = None
        self.said: dict[str, tuple] = {}
        self.hops = 0
        self.failures = 0
        self.losses = 0
        self._answered()

    def unreachable(self, addr: str, why: str, refused: bool, now: float) -> None:
        """An attempt that found no connection to ``addr`` (``why``; ``refused``: nothing
        listens there)."""
        self.said[addr] = (False, why, None)
        self.last = NotLeader(None, "no node reachable")     # detailed by no_leader
        if refused:
            if self._start is None:
                self._start = now
            self._count += 1
            self._addrs.add(addr)
        else:
            self._answered()

    def _answered(self) -> None:
        """An attempt that was not a refused connection: the streak ends."""
        self._start = None
        self._count = 0
        self._addrs: set[str] = set()

    def hopeless(self, now: float) -> bool:
        """Has every endpoint refused the connection long enough to stop trying?"""
        eps = self.endpoints
        return (self._start is not None and self._count >= REFUSED_ROUNDS * len(eps)
                and now - self._start >= REFUSED_FOR and self._addrs.issuperset(eps))

    def judge(self, kind: int, addr: str, status: int, values: list, follow: bool,
              sess, seq: int | None) -> bool | None:
        """Take in an attempt's failed answer ``(status, values)`` from ``addr`` (module
        docstring): raise when the call ends here; else note it and return whether to back
        off before the next attempt, or NEW_SESSION (the session expired: the write moves to
        a new one). ``follow``: a NOT_LEADER named a leader worth trying at once. ``sess``
        (a ClientSession or None) is marked expired on SESSION_EXPIRED."""
        self._answered()
        self.said[addr] = _what_it_said(status, values)
        if status == TLS_REFUSED:
            raise self.tls_failure(P.message(values))
        if kind == MEMBER and status != ST_NOT_LEADER:
            raise _member_error(addr, status, values)
        if status == ST_NOT_LEADER:
            self.hops += 1
            hint = values[0] if values and type(values[0]) is int else 0
            self.last = NotLeader(hint or None, f"{addr} is not the leader "
                                  f"(hint: {values[1] if len(values) > 1 else None})")
            return not follow or self.hops > len(self.endpoints)
        if status == TIMED_OUT or status == SILENT:
            self.last = Timeout(P.message(values))
            if kind >= WRITE:
                self.unknown = Timeout
            return False                # a whole timeout was waited already, or hedged
        if status == LOST or (status == TOO_LARGE and kind >= WRITE):
            self.last = ConnectionLost(P.message(values))
            if kind >= WRITE:
                self.unknown = ConnectionLost
            self.losses += 1
            return status != LOST or self.losses > 1
        if status == ST_UNKNOWN:
            self.last = LeadershipLost(f"{addr}: {P.message(values)}")
            self.unknown = LeadershipLost
            return True
        if status == ST_BUSY:
            self.last = Busy(f"{addr}: {P.message(values)}")
            return True
        if status == ST_INVALID or status == TOO_LARGE:
            if self.unknown is not None:
                raise self.unknown(f"outcome unknown: an earlier attempt may have been "
                                   f"applied; the retry was refused: {P.message(values)}")
            raise InvalidRequest(P.message(values))
        if status == ST_SESSION_EXPIRED:
            if sess is not None:
                sess.expired = True
            if kind != WRITE:           # keepalive (or an odd answer to a read)
                raise SessionExpired(P.message(values))
            if self.unknown is not None:
                raise Timeout(f"outcome unknown: session {sess.id} expired while write "
                              f"{seq} was in doubt ({P.message(values)})")
            self.last = SessionExpired(P.message(values))
            return NEW_SESSION
        if status == ST_NO_LEASE:       # the session's one, definite answer: nothing written
            raise LeaseNotFound(P.message(values))
        if status == ST_COMPACTED:
            oldest = values[0] if values and type(values[0]) is int else 0
            raise Compacted(oldest, values[1] if len(values) > 1 else None)
        # ST_ERROR
        if kind >= WRITE:
            raise OutcomeUnknown(f"server error at {addr}: {P.message(values)}")
        raise RemoteProtocolError(f"server error at {addr}: {P.message(values)}")

    def tls_failure(self, why: str) -> FastraftError:
        """The error of a call ended by a failed TLS handshake (``why``): TLSError (nothing
        was processed there), unless an earlier attempt may have applied the write."""
        if self.unknown is not None:
            return self.unknown(f"outcome unknown: an earlier attempt may have been applied; "
                                f"the retry failed: {why}")
        return TLSError(why)

    def final_error(self, attempts: int, closed: bool) -> FastraftError:
        """The error of a call that ran out of attempts or time after ``attempts`` attempts
        (``closed``: the client was closed meanwhile)."""
        last = self.last
        if isinstance(last, NotLeader):
            last = no_leader(self.said, last.leader_hint, self.endpoints)
        if self.unknown is not None:
            return self.unknown(f"outcome unknown after {attempts} attempts: {last}")
        if closed:
            return LocalProtocolError("the client was closed during the call")
        return last


def _member_error(addr: str, status: int, values: list) -> FastraftError:
    """The error a membership change's failed attempt raises at once (module docstring)."""
    if status == ST_BUSY:
        return Busy(f"{addr}: {P.message(values)}")
    if status == ST_INVALID:
        return InvalidRequest(f"{addr}: {P.message(values)}")
    if status == TIMED_OUT or status == SILENT:
        return Timeout(P.message(values))
    if status == LOST or status == TOO_LARGE:
        return ConnectionLost(P.message(values))
    if status == ST_UNKNOWN:
        return LeadershipLost(f"{addr}: {P.message(values)}")
    return OutcomeUnknown(f"unexpected answer from {addr}: {P.message(values)}")


def _what_it_said(status: int, values: list) -> tuple[bool, str, str | None]:
    """``(answered?, a short account, the leader address it named)`` of one attempt's
    outcome, for no_leader."""
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
    if status == SILENT:
        return False, "no answer while another node leads", None
    if status == LOST:
        return False, "connection lost", None
    if status == ST_BUSY:
        return True, f"busy ({P.message(values)})", None
    if status == ST_UNKNOWN:
        return True, "lost its leadership", None
    return True, P.message(values), None


def no_leader(said: dict, hint: int | None, endpoints: list[str]) -> NotLeader:
    """One NotLeader that says why no leader took the call: what each node's last attempt
    saw (``said``, from ``_what_it_said``), the nodes not tried, and a verdict (no quorum
    reachable, election in progress, the named leader unreachable)."""
    eps = endpoints
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
