"""A node that lost its data (``RaftConfig.rejoining``) neither votes nor campaigns until a
leader has brought it up to the leader's commit index in the leader's term: its empty log
would otherwise let a candidate without a committed entry win an election."""

import random

from fastraft.raft import HardState, Message, MsgType, RaftConfig, RawNode


def _node(rejoining=True):
    return RawNode(RaftConfig(id=3, voters={1, 2, 3}, rejoining=rejoining), random.Random(3))


def _drain(n):
    out = []
    while n.has_ready():
        rd = n.ready()
        out += rd.messages + rd.persisted_messages
        n.advance(rd)
    return out


def test_a_rejoining_node_refuses_votes_and_does_not_campaign():
    n = _node()
    n.step(Message(MsgType.VOTE, 3, 2, 5, log_term=1, index=1))
    (resp,) = [m for m in _drain(n) if m.type == MsgType.VOTE_RESP]
    assert resp.reject
    for _ in range(100):
        n.tick()
    assert not any(m.type in (MsgType.VOTE, MsgType.PRE_VOTE) for m in _drain(n))
    n.campaign()
    assert n.role == 0 and not _drain(n)
    # A normal node grants the same vote.
    m = _node(rejoining=False)
    m.step(Message(MsgType.VOTE, 3, 2, 5, log_term=1, index=1))
    (ok,) = [x for x in _drain(m) if x.type == MsgType.VOTE_RESP]
    assert not ok.reject


def test_heartbeats_alone_do_not_end_rejoining():
    n = _node()
    n.step(Message(MsgType.APP, 3, 1, 2, log_term=0, index=0, entries=[(2, b"")], commit=0))
    n.step(Message(MsgType.HEARTBEAT, 3, 1, 2, commit=1))
    _drain(n)
    assert n.rejoining


def test_rejoining_ends_when_it_holds_the_leaders_commit_of_the_leaders_term():
    n = _node()
    # The leader (term 2) has committed 3 entries; an append bringing only 2 is not enough.
    n.step(Message(MsgType.APP, 3, 1, 2, log_term=0, index=0, entries=[(1, b"a"), (2, b"")],
                   commit=3))
    _drain(n)
    assert n.rejoining
    # ... one whose commit is of an older term is not enough either.
    m = _node()
    m.step(Message(MsgType.APP, 3, 1, 2, log_term=0, index=0, entries=[(1, b"a"), (2, b"")],
                   commit=1))
    _drain(m)
    assert m.rejoining
    n.step(Message(MsgType.APP, 3, 1, 2, log_term=2, index=2, entries=[(2, b"b")], commit=3))
    _drain(n)
    assert not n.rejoining
    n.step(Message(MsgType.VOTE, 3, 2, 3, log_term=2, index=3, transfer=True))
    (resp,) = [x for x in _drain(n) if x.type == MsgType.VOTE_RESP]
    assert not resp.reject


def test_rejoining_survives_a_restart_only_if_asked_again():
    n = RawNode(RaftConfig(id=3, voters={1, 2, 3}, rejoining=False), random.Random(1),
                hard_state=HardState(4, 0, 0))
    assert not n.rejoining
