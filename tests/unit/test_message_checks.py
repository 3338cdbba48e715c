"""RawNode.check_message: messages no correct peer could send are refused before ``step``,
and every message it lets through is handled without an exception (seeded fuzz)."""

import random

import pytest

from fastraft.raft import Message, MsgType, RaftConfig, RawNode, Snapshot, SnapshotMeta


def _leader():
    n = RawNode(RaftConfig(id=1, voters={1}), random.Random(1))
    n.campaign()
    while n.has_ready():
        n.advance(n.ready())
    return n


def test_refuses_wrong_addressing():
    n = RawNode(RaftConfig(id=1, voters={1, 2, 3}), random.Random(1))
    assert "delivered to node 1" in n.check_message(Message(MsgType.HEARTBEAT, 2, 3, 1))
    assert "this node" in n.check_message(Message(MsgType.HEARTBEAT, 1, 1, 1))
    assert n.check_message(Message(MsgType.HEARTBEAT, 1, 2, 1)) is None


def test_refuses_entries_older_than_their_position():
    n = RawNode(RaftConfig(id=1, voters={1, 2, 3}), random.Random(1))
    m = Message(MsgType.APP, 1, 2, 5, log_term=4, index=3, entries=[(3, b"x")])
    assert "follow a position of term 4" in n.check_message(m)
    m = Message(MsgType.APP, 1, 2, 5, log_term=4, index=3, entries=[(6, b"x")])
    assert "above the message's term" in n.check_message(m)


def test_refuses_acknowledgement_beyond_the_leaders_log():
    n = _leader()
    last = n.status().last_index
    term = n.term
    bad = Message(MsgType.APP_RESP, 1, 2, term, index=last + 5)
    assert "beyond this leader's last index" in n.check_message(bad)
    ok = Message(MsgType.APP_RESP, 1, 2, term, index=last)
    assert n.check_message(ok) is None


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_messages_never_raise_once_checked(seed):
    rng = random.Random(seed)
    for trial in range(300):
        n = RawNode(RaftConfig(id=1, voters={1, 2, 3}), random.Random(trial))
        for _ in range(60):
            r = rng.random()
            if r < 0.2:
                n.tick()
            elif r < 0.25:
                n.campaign()
            elif r < 0.3:
                try:
                    n.propose([b"x"])
                except Exception:   # NotLeader / Busy: not the point here
                    pass
            else:
                t = rng.choice(list(MsgType))
                term = rng.randint(0, 6)
                ents = []
                if t == MsgType.APP:
                    base = rng.randint(0, 6)
                    ents = sorted((base + rng.randint(0, 2), b"p")
                                  for _ in range(rng.randint(0, 3)))
                    ents = [e for e in ents if e[0] <= term]
                snap = None
                if t == MsgType.SNAP:
                    snap = Snapshot(SnapshotMeta(rng.randint(0, 20), rng.randint(0, 5),
                                                 frozenset({1, 2, 3})), "data")
                m = Message(t, 1, rng.choice([2, 3]), term, rng.randint(0, 6),
                            rng.randint(0, 20), ents, rng.randint(0, 25), rng.random() < 0.3,
                            rng.randint(0, 20), rng.randint(0, 6), rng.randint(0, 3), snap,
                            rng.random() < 0.1)
                if n.check_message(m) is None:
                    try:
                        n.step(m)
                    except Exception as exc:   # pragma: no cover - the failure report
                        pytest.fail(f"seed {seed} trial {trial}: {m} raised {exc!r}")
            if n.has_ready():
                n.advance(n.ready())
