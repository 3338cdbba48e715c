"""OP_BACKUP, OP_BACKUP_READ and OP_BACKUP_END: decoded strictly (``codec``), and routed by the
request side of a node (``server/requests.py``): the backup waits for a ReadIndex round on
the leader, as a linearizable read; reads and the end go to the node's backups whatever its
role.

Place in the architecture: tests of two parts without processes or sockets (the engine and
the backups are fakes; the state machine is the real one).
"""

from __future__ import annotations

import pytest

from fastraft import codec
from fastraft.errors import InvalidRequest
from fastraft.raft import FOLLOWER, LEADER, ReadState
from fastraft.server.requests import Requests
from fastraft.statemachine import KVStateMachine

LIMITS = codec.Limits()


def _decode(*body):
    return codec.decode_request(codec.encode_request(*body), LIMITS, 1 << 20)


def test_backup_requests_decode_strictly():
    assert _decode(1, codec.OP_BACKUP) == codec.Request(1, codec.OP_BACKUP)
    assert _decode(2, codec.OP_BACKUP_READ, 7, 0, 100).backup == (7, 0, 100)
    assert _decode(3, codec.OP_BACKUP_READ, 7, 1 << 40, codec.BACKUP_READ_MAX).backup == (
        7, 1 << 40, codec.BACKUP_READ_MAX)
    assert _decode(4, codec.OP_BACKUP_END, 7).backup == (7,)
    for body, why in (((5, codec.OP_BACKUP, 1), "takes 0 arguments"),
                      ((6, codec.OP_BACKUP_READ, 7, 0), "takes 3 arguments"),
                      ((7, codec.OP_BACKUP_READ, 7, 0, 0), "length"),
                      ((8, codec.OP_BACKUP_READ, 7, 0, codec.BACKUP_READ_MAX + 1), "length"),
                      ((9, codec.OP_BACKUP_READ, 0, 0, 10), "token 0"),
                      ((10, codec.OP_BACKUP_READ, 7, -1, 10), "offset"),
                      ((11, codec.OP_BACKUP_END, b"7"), "token"),
                      ((12, codec.OP_BACKUP_END), "takes 1 arguments")):
        with pytest.raises(InvalidRequest, match=why) as e:
            _decode(*body)
        assert e.value.req_id == body[0]
    assert codec.OP_NAMES[codec.OP_BACKUP] == "backup"


class Conn:
    def __init__(self) -> None:
        self.answers: list = []
        self.closed = False

    def respond(self, req_id, status, *values) -> None:
        self.answers.append((req_id, status, *values))


class Raw:
    def __init__(self) -> None:
        self.reads: list = []

    def read_index(self, ctx) -> None:
        self.reads.append(ctx)


class FakeBackups:
    def __init__(self) -> None:
        self.calls: list = []

    def begin(self, conn, req_id) -> None:
        self.calls.append(("begin", req_id))

    def read(self, conn, req) -> None:
        self.calls.append(("read", req.req_id, req.backup))

    def end(self, conn, req) -> None:
        self.calls.append(("end", req.req_id, req.backup))


def _requests():
    raw = Raw()
    r = Requests(1, raw, KVStateMachine(), limits=LIMITS, max_frame=1 << 20, max_pending=10,
                 addr_of={2: "127.0.0.1:7002"}, kick=lambda: None, status=lambda: [])
    return r, raw


def test_a_backup_waits_for_a_read_round_on_the_leader():
    r, raw = _requests()
    r.backups = b = FakeBackups()
    conn = Conn()
    r.on_role(FOLLOWER, 2)
    r.on_request(conn, codec.Request(1, codec.OP_BACKUP))
    assert conn.answers == [(1, codec.ST_NOT_LEADER, 2, "127.0.0.1:7002")] and not b.calls
    r.on_role(LEADER, 1)
    r.on_request(conn, codec.Request(2, codec.OP_BACKUP))
    assert not b.calls
    r.flush()
    assert raw.reads == [1] and not b.calls
    r.reads_ready([ReadState(1, 0)])            # safe at index 0: applied already
    assert b.calls == [("begin", 2)]
    # reads and the end go to the backups whatever the role
    r.on_role(FOLLOWER, 2)
    r.on_request(conn, codec.Request(3, codec.OP_BACKUP_READ, backup=(9, 0, 10)))
    r.on_request(conn, codec.Request(4, codec.OP_BACKUP_END, backup=(9,)))
    assert b.calls[1:] == [("read", 3, (9, 0, 10)), ("end", 4, (9,))]


def test_without_backups_the_answer_is_invalid():
    r, _raw = _requests()                       # no node behind ``kick``: no backups
    conn = Conn()
    r.on_request(conn, codec.Request(1, codec.OP_BACKUP_READ, backup=(9, 0, 10)))
    assert conn.answers == [(1, codec.ST_INVALID, "this node takes no backups")]
