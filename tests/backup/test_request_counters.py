"""The proposal counters of the request side (``server/requests.py``) that the metrics read:
``proposals_committed``, ``proposals_failed`` and ``proposals_pending``.

Place in the architecture: a test of one runtime part without processes or sockets (the engine
is a fake that only proposes; the state machine is the real one).
"""

from __future__ import annotations

from fastraft import codec
from fastraft.errors import Busy, NotLeader
from fastraft.raft import FOLLOWER, LEADER, EntryBatch
from fastraft.server.requests import Requests
from fastraft.statemachine import KVStateMachine


class Conn:
    def __init__(self) -> None:
        self.answers: list = []

    def respond(self, req_id, status, *values) -> None:
        self.answers.append((req_id, status))


class Raw:
    def __init__(self) -> None:
        self.last = 0
        self.term = 3
        self.proposed: list = []
        self.refuse = None

    def propose(self, payloads):
        if self.refuse is not None:
            raise self.refuse
        self.proposed.append(list(payloads))
        first = self.last + 1
        self.last += len(payloads)
        return first, self.term


def _requests():
    raw = Raw()
    r = Requests(1, raw, KVStateMachine(), limits=codec.Limits(), max_frame=1 << 20,
                 max_pending=100, addr_of={}, kick=lambda: None, status=lambda: [])
    r.on_role(LEADER, 1)
    return r, raw


def _register(req_id):
    return codec.Request(req_id, codec.OP_REGISTER)


def _put(req_id, session, seq):
    return codec.Request(req_id, codec.OP_PUT, session, seq, 1, key=b"k", value=b"v")


def test_committed_failed_and_pending_follow_the_answers():
    r, raw = _requests()
    conn = Conn()
    assert (r.proposals_committed, r.proposals_failed, r.proposals_pending) == (0, 0, 0)
    for i in (1, 2, 3):
        r.on_request(conn, _register(i))
    assert r.proposals_pending == 3                 # gathered, not yet proposed
    r.flush()
    assert r.proposals_pending == 3                 # proposed, waiting
    # entry 2 was replaced by another leader's entry (term 4): a failure
    r.apply(EntryBatch(1, [(3, raw.proposed[0][0]), (4, raw.proposed[0][1]),
                           (3, raw.proposed[0][2])]))
    assert (r.proposals_committed, r.proposals_failed, r.proposals_pending) == (2, 1, 0)
    # a put from a session that does not exist: committed, but answered SESSION_EXPIRED
    r.on_request(conn, _put(4, 99, 1))
    r.flush()
    r.apply(EntryBatch(4, [(3, raw.proposed[1][0])]))
    assert conn.answers[-1] == (4, codec.ST_SESSION_EXPIRED)
    assert (r.proposals_committed, r.proposals_failed) == (2, 2)


def test_refused_proposals_and_lost_leadership_count_as_failed():
    r, raw = _requests()
    conn = Conn()
    r.on_request(conn, _register(1))
    raw.refuse = Busy("transfer")
    r.flush()
    raw.refuse = NotLeader("no")
    r.on_request(conn, _register(2))
    r.flush()
    assert (r.proposals_committed, r.proposals_failed, r.proposals_pending) == (0, 2, 0)
    raw.refuse = None
    for i in (3, 4):
        r.on_request(conn, _register(i))
    r.flush()
    assert r.proposals_pending == 2
    r.on_role(FOLLOWER, 2)                      # leadership lost: outcome unknown
    assert conn.answers[-2:] == [(3, codec.ST_UNKNOWN), (4, codec.ST_UNKNOWN)]
    assert (r.proposals_committed, r.proposals_failed, r.proposals_pending) == (0, 4, 0)
