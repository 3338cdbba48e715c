"""The parts of a node, each alone: the request side (``server/requests.py``), the choice of a
successor at shutdown (``server/shutdown.py``), the rejoin marker (``server/rejoin.py``) and the
wiring of a node from its configuration (``server/wiring.py``).

Place in the architecture: tests of the runtime's parts without processes or sockets (the
engine is a fake where the part only calls it; the state machine is the real one). The
end-to-end behaviour of the same code is in test_node.py and test_refusals.py.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from fastraft import codec
from fastraft.config import NodeSpec, Config, Tuning
from fastraft.errors import Busy, FatalError, NotLeader, RecoveryError
from fastraft.raft import FOLLOWER, LEADER, EntryBatch, ReadState, SnapshotMeta
from fastraft.raft.rawnode import PeerProgress
from fastraft.server.rejoin import MARKER_NAME, RejoinMarker
from fastraft.server.requests import PendingWrite, Requests
from fastraft.server.shutdown import choose_successor
from fastraft.statemachine import KVStateMachine

ADDRS = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}


class Conn:
    def __init__(self) -> None:
        self.answers: list = []

    def respond(self, req_id, status, *values) -> None:
        self.answers.append((req_id, status, *values))


class Raw:
    """The engine as Requests uses it: propose and read_index."""

    def __init__(self) -> None:
        self.last = 0
        self.term = 3
        self.proposed: list = []
        self.reads: list = []
        self.refuse = None

    def propose(self, payloads):
        if self.refuse is not None:
            raise self.refuse
        self.proposed.append(list(payloads))
        first = self.last + 1
        self.last += len(payloads)
        return first, self.term

    def read_index(self, ctx) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.reads.append(ctx)


def _requests(max_pending=100):
    kicks = []
    raw = Raw()
    r = Requests(1, raw, KVStateMachine(), limits=codec.Limits(), max_frame=1 << 20,
                 max_pending=max_pending, addr_of=ADDRS, kick=lambda: kicks.append(1),
                 status=lambda: ["status"])
    r.on_role(LEADER, 1)
    return r, raw, kicks


def _register(req_id):
    return codec.Request(req_id, codec.OP_REGISTER)


def _get(req_id, key=b"k"):
    return codec.Request(req_id, codec.OP_GET, key=key)


def test_writes_of_a_turn_are_one_proposal_answered_once_applied():
    r, raw, kicks = _requests()
    conn = Conn()
    for i in (1, 2, 3):
        r.on_request(conn, _register(i))
    assert kicks and not raw.proposed and not conn.answers
    r.flush()
    assert len(raw.proposed) == 1 and len(raw.proposed[0]) == 3
    assert r._pending[2] == PendingWrite(3, conn, 2)
    # entry 2 was replaced by another leader's entry (term 4): outcome unknown
    r.apply(EntryBatch(1, [(3, raw.proposed[0][0]), (4, raw.proposed[0][1]),
                           (3, raw.proposed[0][2])]))
    assert [a[:2] for a in conn.answers] == [(1, codec.ST_OK), (2, codec.ST_UNKNOWN),
                                             (3, codec.ST_OK)]
    assert not r._pending


def test_pending_write_limit_answers_busy_per_write_before_proposing():
    r, raw, _ = _requests(max_pending=2)
    conn = Conn()
    for i in (1, 2, 3):
        r.on_request(conn, _register(i))
    assert conn.answers == [(3, codec.ST_BUSY, "0 writes are waiting for commitment")]
    r.flush()
    r.on_request(conn, _register(4))
    assert conn.answers[-1] == (4, codec.ST_BUSY, "2 writes are waiting for commitment")
    assert [len(p) for p in raw.proposed] == [2]


def test_engine_refusals_refuse_the_whole_batch_definitely():
    r, raw, _ = _requests()
    conn = Conn()
    r.on_request(conn, _register(1))
    raw.refuse = Busy("leadership transfer to 2 in progress")
    r.flush()
    assert conn.answers == [(1, codec.ST_BUSY, "leadership transfer to 2 in progress")]
    r.on_role(LEADER, 1)
    r.on_request(conn, _register(2))
    r.lead = 2
    raw.refuse = NotLeader(2)
    r.flush()
    assert conn.answers[-1] == (2, codec.ST_NOT_LEADER, 2, ADDRS[2])


def test_followers_refuse_with_a_hint_and_serve_stale_reads_and_status():
    r, _raw, _ = _requests()
    r.on_role(FOLLOWER, 2)
    conn = Conn()
    r.on_request(conn, _register(1))
    r.on_request(conn, _get(2))
    r.on_request(conn, codec.Request(3, codec.OP_GET, key=b"k", stale=True))
    r.on_request(conn, codec.Request(4, codec.OP_STATUS, with_limits=True))
    assert conn.answers == [(1, codec.ST_NOT_LEADER, 2, ADDRS[2]),
                            (2, codec.ST_NOT_LEADER, 2, ADDRS[2]),
                            (3, codec.ST_OK, None),
                            (4, codec.ST_OK, ["status", 1 << 20, 4096, 1 << 20, 10_000])]


def test_reads_are_batched_into_one_round_and_served_once_applied():
    r, raw, _ = _requests()
    conn = Conn()
    r.on_request(conn, _get(1))
    r.on_request(conn, _get(2))
    r.flush()
    assert raw.reads == [1]
    r.reads_ready([ReadState(1, 1)])            # safe once index 1 is applied
    assert conn.answers == []
    r.on_request(conn, _register(3))
    r.flush()
    r.apply(EntryBatch(1, [(3, raw.proposed[0][0])]))
    assert [a[:2] for a in conn.answers] == [(3, codec.ST_OK), (1, codec.ST_OK),
                                             (2, codec.ST_OK)]
    r.on_request(conn, _get(4))
    r.flush()
    r.reads_dropped([2])            # this node led: no other leader to name
    assert conn.answers[-1] == (4, codec.ST_NOT_LEADER, 0, None)


def test_losing_leadership_abandons_writes_and_reads():
    r, raw, _ = _requests()
    conn = Conn()
    r.on_request(conn, _register(1))
    r.on_request(conn, _get(2))
    r.flush()
    r.on_role(FOLLOWER, 2)
    assert conn.answers == [
        (1, codec.ST_UNKNOWN, "leadership lost before the write committed: outcome unknown"),
        (2, codec.ST_NOT_LEADER, 2, ADDRS[2])]
    assert not r._pending and not r._reads


def test_shutdown_refuses_what_was_gathered_and_fatal_answers_nothing():
    r, _raw, _ = _requests()
    conn = Conn()
    r.on_request(conn, _register(1))
    r.on_request(conn, _get(2))
    r.stopping = True
    r.refuse_gathered()
    assert conn.answers == [(1, codec.ST_NOT_LEADER, 0, None), (2, codec.ST_NOT_LEADER, 0, None)]
    r.on_request(conn, _register(3))
    assert conn.answers[-1] == (3, codec.ST_NOT_LEADER, 0, None)
    r, raw, _ = _requests()
    conn = Conn()
    r.on_request(conn, _register(1))
    r.flush()
    r.drop_all()
    r.on_request(conn, _register(2))
    r.apply(EntryBatch(1, [(3, raw.proposed[0][0])]))
    assert conn.answers == []


class _Status:
    def __init__(self, progress, voters=(1, 2, 3, 4)) -> None:
        self.progress = progress
        self.voters = voters


def test_the_successor_is_the_connected_voter_furthest_ahead():
    st = _Status({1: PeerProgress(9, 10, 1), 2: PeerProgress(5, 6, 1),
                  3: PeerProgress(8, 9, 1), 4: PeerProgress(8, 9, 1)})
    assert choose_successor(st, 1, lambda pid: True) == 3
    assert choose_successor(st, 1, lambda pid: pid != 3) == 4
    assert choose_successor(st, 1, lambda pid: pid == 2) == 2
    assert choose_successor(st, 1, lambda pid: False) is None


def test_a_learner_never_takes_over_leadership():
    st = _Status({1: PeerProgress(9, 10, 1), 2: PeerProgress(5, 6, 1),
                  3: PeerProgress(9, 10, 1)}, voters=(1, 2))
    assert choose_successor(st, 1, lambda pid: True) == 2
    assert choose_successor(st, 1, lambda pid: pid == 3) is None


def test_the_rejoin_marker_is_armed_and_cleared(tmp_path):
    m = RejoinMarker(str(tmp_path))
    assert not m.active
    m.arm()
    assert m.active and (tmp_path / MARKER_NAME).exists()
    assert RejoinMarker(str(tmp_path)).active       # a restart still sees it
    m.clear()
    assert not m.active and not (tmp_path / MARKER_NAME).exists()
    assert not RejoinMarker(str(tmp_path)).active


def _config(tmp_path, **tuning) -> Config:
    nodes = (NodeSpec(1, ("127.0.0.1", 1), ("127.0.0.1", 2)),
             NodeSpec(2, ("127.0.0.1", 3), ("127.0.0.1", 4)))
    return Config("parts", nodes, Tuning(**tuning), str(tmp_path))


def test_wiring_hands_the_parts_to_the_node_and_the_tuning_to_the_engine(tmp_path):
    from fastraft.server.wiring import build_node

    async def build():
        return build_node(_config(tmp_path, leader_sync_first=True, max_pending=5), 1,
                          str(tmp_path / "1"), rejoin=True)

    node = asyncio.run(build())
    try:
        assert node.peers.node is node and node.clients.node is node.requests
        assert node.requests.max_pending == 5 and node.early_send is False
        assert node.raw.rejoining and node.rejoin.active
        assert node.requests.machine is node.backend.machine
        assert os.path.exists(tmp_path / "1" / MARKER_NAME)
    finally:
        node.backend.close()
    node = asyncio.run(build())
    node.backend.close()


def test_an_unrecoverable_data_directory_is_a_fatal_error(tmp_path):
    from fastraft.server.wiring import build_node
    from fastraft.storage.wal import WalStore

    store = WalStore.open(str(tmp_path / "1" / "wal"))
    store.save_snapshot_mark(SnapshotMeta(5, 1, frozenset({1, 2})))
    store.sync()
    store.close()
    with pytest.raises(FatalError, match="wipe") as info:
        build_node(_config(tmp_path), 1, str(tmp_path / "1"))
    assert isinstance(info.value, RecoveryError)


def test_the_member_book_folds_the_snapshot_and_the_conf_entries_in_log_order():
    from fastraft import codec
    from fastraft.raft.confchange import (ADD_LEARNER, ADD_VOTER, REMOVE_NODE, Change,
                                          ConfChange, encode_conf_change)
    from fastraft.server.members import fold_book

    def cc(*changes):
        return encode_conf_change(ConfChange(tuple(changes)))

    ctx = codec.encode_member_context
    base = codec.encode_member_book({1: ("h:1", "h:2"), 2: ("h:3", "h:4")}, [7])
    changes = [(5, 2, cc(Change(ADD_LEARNER, 3, ctx("h:5", "h:6")))),
               (8, 2, cc(Change(ADD_VOTER, 3))),           # a promotion names no address
               (9, 3, cc(Change(REMOVE_NODE, 1))),
               (12, 3, b"\xc1garbage")]                    # never accepted: ignored
    addrs, removed = fold_book(base, changes)
    assert addrs == {2: ("h:3", "h:4"), 3: ("h:5", "h:6")} and removed == {1, 7}
    assert fold_book(base, changes, upto=8) == ({1: ("h:1", "h:2"), 2: ("h:3", "h:4"),
                                                 3: ("h:5", "h:6")}, {7})
    assert fold_book(b"", []) == ({}, set())
    # An unreadable book (a damaged snapshot) leaves the log's changes usable.
    assert fold_book(b"\x93\x01", changes[:1]) == ({3: ("h:5", "h:6")}, set())


# -- the proposal counters the metrics read ---------------------------------------------------


def test_proposal_counters_follow_the_answers():
    r, raw, _ = _requests()
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
    r.on_request(conn, codec.Request(4, codec.OP_PUT, 99, 1, 1, key=b"k", value=b"v"))
    r.flush()
    r.apply(EntryBatch(4, [(3, raw.proposed[1][0])]))
    assert conn.answers[-1][:2] == (4, codec.ST_SESSION_EXPIRED)
    assert (r.proposals_committed, r.proposals_failed) == (2, 2)


def test_refused_proposals_and_lost_leadership_count_as_failed():
    r, raw, _ = _requests()
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
    assert [a[:2] for a in conn.answers[-2:]] == [(3, codec.ST_UNKNOWN),
                                                  (4, codec.ST_UNKNOWN)]
    assert (r.proposals_committed, r.proposals_failed, r.proposals_pending) == (0, 4, 0)
